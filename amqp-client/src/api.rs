//! The application's API, re-exported at the top level of each adapter: handles, options,
//! messages, field values, errors, and every type that appears in their signatures. The
//! adapter adds its own `Connection` (and `connect`); adapter-author items are in [`adapter`](crate::adapter).

pub use crate::{
    AmqpUri, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicProperties,
    BasicPublishOptions, BasicQosOptions, Bytes, Channel, ChannelId, CloseReason,
    ConfirmSelectOptions, Confirmation, ConnectError, ConnectOptions, ConnectionConfig,
    ConnectionEvent, Consumer, ConsumerEnd, ConsumerTag, Decimal, Delivery, DeliveryTag, Error,
    ErrorKind, Events, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    FieldArray, FieldTable, FieldValue, Initiator, IntoBody, IntoConnectOptions, IoCounters,
    LongString, Metrics, Misuse, PublishConfirm, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueueInfo, QueuePurgeOptions, QueueUnbindOptions, ReplyCode,
    ReturnedMessage, Returns, ShortString, State, TlsError, TlsErrorKind, Tuning, UriError,
};
#[cfg(feature = "tls")]
pub use crate::{TlsOptions, tls};
pub use amqp_proto::properties::IntoProperty;
pub use amqp_proto::sasl::SaslMechanism;
pub use amqp_proto::uri::Secret;
