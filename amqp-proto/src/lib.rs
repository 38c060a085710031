//! # amqp-proto
//!
//! The sans-IO core of an AMQP 0-9-1 client: it takes bytes in and hands bytes and events out,
//! and owns every piece of protocol knowledge. It has no sockets, no clock, no threads and no
//! async; the runtime adapters of this workspace, or your own event loop, move bytes between it
//! and a transport.
//!
//! Two layers:
//! - the client [`Connection`] state machine ([`connection`]): feed it received bytes, write
//!   out what it queues, take [`Event`]s, and tell it the time; commands return a
//!   [`RequestId`] whose completion comes back as [`Event::Completed`]
//!   (`examples/event_loop.rs` drives it from a hand-written mio loop);
//! - the wire codec under it: [`Frame`]s, every [`Method`] of the protocol (generated from
//!   one table, see [`spec`]), [`BasicProperties`], field tables ([`FieldTable`]), and the
//!   [`uri`] parser and [`sasl`] mechanisms.
//!
//! The codec on its own:
//!
//! ```
//! use amqp_proto::{Frame, FrameDecoder, Method, QueueDeclare, ShortString};
//! use bytes::BytesMut;
//!
//! let declare = QueueDeclare {
//!     queue: ShortString::try_from("tasks").unwrap(),
//!     durable: true,
//!     ..Default::default()
//! };
//! let mut wire = BytesMut::new();
//! Frame::Method(1, declare.clone().into()).encode(&mut wire).unwrap();
//!
//! let frame = FrameDecoder::default().decode(&mut wire).unwrap();
//! assert_eq!(frame, Some(Frame::Method(1, Method::QueueDeclare(declare))));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod connection;
pub use connection::recovery;
pub mod error;
pub mod frame;
pub mod metrics;
pub mod properties;
pub mod sasl;
pub mod spec;
pub mod transmit;
pub mod types;
pub mod uri;
mod wire;

pub use connection::{
    BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ChannelId, CloseReason, ConfirmSelectOptions, Confirmation, Connection, ConnectionConfig,
    ConsumerEnd, ConsumerTag, Delivery, DeliveryTag, Error, ErrorKind, Event, ExchangeBindOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, GetMessage, HandshakeStep, Initiator, Misuse,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
    QueueUnbindOptions, Reply, RequestId, ReturnedMessage, State, Topology, Tuning, WouldBlock,
};
pub use error::{CodecError, ReplyCode};
pub use frame::{Frame, FrameDecoder, PROTOCOL_HEADER};
pub use metrics::Metrics;
pub use properties::{BasicProperties, ContentHeader};
pub use spec::*;
pub use transmit::Transmit;
pub use types::{
    Decimal, FieldArray, FieldTable, FieldValue, LongString, MAX_TABLE_DEPTH, SecretBytes,
    ShortString,
};
