//! Not yet written: this adapter is filled by a later issue. It currently only re-exports the core.
pub use amqp_proto as proto;
