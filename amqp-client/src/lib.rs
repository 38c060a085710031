//! # amqp-client
//!
//! The runtime-agnostic async layer of the AMQP 0-9-1 client: [`Connection`], [`Channel`],
//! [`Consumer`], [`Delivery`] and [`PublishConfirm`] handles over the sans-IO
//! [`amqp_proto`] core, plus the [`Driver`] future that moves the bytes. It holds no protocol
//! knowledge: it calls the core and routes the core's events to whoever waits for them.
//!
//! Applications use a runtime adapter (`amqp-tokio`, `amqp-async-std`, `amqp-blocking`),
//! which connects the transport, spawns the driver and re-exports [`api`], the user's API.
//! An adapter implements [`Transport`] and [`Timer`] and calls [`start_connection`]: the
//! [`adapter`] module gathers what it needs.
//!
//! ## Design
//!
//! * One `std::sync::Mutex` guards the core and the waiter tables; it is never held across
//!   an `.await`. Handles call the core directly under it (no task hop per publish or ack)
//!   and register their waiter under the same lock, so a completion can never be routed
//!   before its waiter exists.
//! * The driver reads straight into the core's buffer, dispatches events right after every
//!   input and timeout, and writes the core's output with vectored writes, many frames per
//!   system call. Handles wake it only when output appears while it is idle.
//! * Publishing waits (it does not fail) while the broker blocks the connection, pauses the
//!   channel, or more than `high_water_mark` bytes are queued; acks never wait.
//! * Every waiter fails with the core's real error on every close path.
//! * The driver reads the time only from its [`Timer`], so the whole glue runs on a fake
//!   clock over an in-memory transport: `amqp_conformance::client::ClientPair` wires it to a
//!   scripted broker (see this crate's `tests/glue.rs`).
//! * Modules stand on each other in one direction: `shared` (the core and the waiter tables)
//!   at the bottom, then `handle` (request plumbing), `driver`, and the handles above them.
//!
//! ## Memory
//!
//! What a connection holds is bounded by its settings (`ConnectionConfig`) and by what the
//! application keeps outstanding:
//!
//! * **Outgoing**: at most `high_water_mark` + one message + 128 KiB. Bytes the driver has
//!   taken to write count against the mark as much as bytes still queued, so publishers wait
//!   once the two together reach it; the queue packs small frames into 64 KiB blocks (large
//!   bodies are queued by reference, costing only their frame headers).
//! * **Confirms**: at most 128 bytes per publish awaiting its confirm (the window the
//!   application keeps; the bookkeeping shrinks again as the window drains).
//! * **Incoming**: a read buffer of 64 KiB (more only while a larger frame arrives, up to
//!   `frame_max`), plus the deliveries not yet taken or still held by the application: at
//!   most `prefetch_count` per consumer, each its body plus about 200 bytes, and a small
//!   delivery can keep the read block it arrived in (at most `frame_max` + 64 KiB) alive while
//!   the application holds it.
//!
//! So a publisher with confirm window `W` holds at most `high_water_mark + message + 128 KiB +
//! 128 B × W`, and a consumer at most `prefetch × (frame_max + 64 KiB)` on top of the read
//! buffer. `tests/memory_bound.rs` checks the publisher's bound with a counting allocator
//! against a peer that reads far slower than the client publishes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adapter;
pub mod api;
mod body;
mod channel;
mod confirms;
mod connect;
mod connection;
mod consumer;
mod driver;
mod error;
mod handle;
mod io;
#[cfg(feature = "metrics")]
mod metrics_export;
mod options;
mod shared;
#[cfg(feature = "tls")]
pub mod tls;
mod util;

pub use body::IntoBody;
pub use channel::{Channel, Confirmation, PublishConfirm, Returns};
#[cfg(feature = "tls")]
pub use connect::connect_with_tls_transport;
pub use connect::{ConnectOptions, IntoConnectOptions, connect_with_transport};
pub use connection::{Connecting, Connection, Events, start_connection};
pub use consumer::{Consumer, Delivery};
pub use driver::Driver;
pub use error::{ConnectError, TlsError, TlsErrorKind};
pub use io::{Timer, Transport};
pub use options::QueueInfo;
pub use shared::{ConnectionEvent, IoCounters};
#[cfg(feature = "tls")]
pub use tls::{MaybeTls, TlsClient, TlsOptions};

pub use amqp_proto;
pub use amqp_proto::Decimal;
pub use amqp_proto::uri::{AmqpUri, UriError};
pub use amqp_proto::{
    BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicProperties, BasicPublishOptions,
    BasicQosOptions, ChannelId, CloseReason, ConfirmSelectOptions, ConnectionConfig, ConsumerEnd,
    ConsumerTag, DeliveryTag, Error, ErrorKind, ExchangeBindOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, FieldArray, FieldTable, FieldValue, HandshakeStep, Initiator,
    LongString, Metrics, Misuse, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions, QueueUnbindOptions, ReplyCode, ReturnedMessage, ShortString, State, Tuning,
};
pub use bytes::Bytes;
