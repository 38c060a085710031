//! The options of every command that has any, one struct per method (`exchange.bind` and
//! `exchange.unbind` share theirs). All default to the protocol's defaults, argument tables
//! to empty, so a command without special needs takes `Default::default()`.

use crate::types::FieldTable;

/// Options of `exchange.declare`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExchangeDeclareOptions {
    /// Only check that it exists.
    pub passive: bool,
    /// Survive a broker restart.
    pub durable: bool,
    /// Delete when the last binding goes.
    pub auto_delete: bool,
    /// Not publishable directly, only via exchange bindings.
    pub internal: bool,
    /// Do not wait for the broker's answer.
    pub nowait: bool,
    /// Extra arguments (e.g. `alternate-exchange`); empty by default.
    pub arguments: FieldTable,
}

/// Options of `exchange.delete`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeDeleteOptions {
    /// Only if it has no bindings.
    pub if_unused: bool,
    /// Do not wait for the broker's answer.
    pub nowait: bool,
}

/// Options of `exchange.bind` and `exchange.unbind`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExchangeBindOptions {
    /// Do not wait for the broker's answer.
    pub nowait: bool,
    /// Binding arguments (e.g. for a headers exchange); empty by default.
    pub arguments: FieldTable,
}

/// Options of `queue.declare`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueDeclareOptions {
    /// Only check that it exists.
    pub passive: bool,
    /// Survive a broker restart.
    pub durable: bool,
    /// Only this connection may use it; deleted when it closes.
    pub exclusive: bool,
    /// Delete when the last consumer goes.
    pub auto_delete: bool,
    /// Do not wait for the broker's answer.
    pub nowait: bool,
    /// Extra arguments (`x-message-ttl`, `x-queue-type`, …); empty by default.
    pub arguments: FieldTable,
}

/// Options of `queue.bind`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueBindOptions {
    /// Do not wait for the broker's answer.
    pub nowait: bool,
    /// Binding arguments (e.g. for a headers exchange); empty by default.
    pub arguments: FieldTable,
}

/// Options of `queue.unbind` (which has no no-wait form).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueUnbindOptions {
    /// The arguments of the binding to remove; empty by default.
    pub arguments: FieldTable,
}

/// Options of `queue.purge`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueuePurgeOptions {
    /// Do not wait for the broker's answer.
    pub nowait: bool,
}

/// Options of `queue.delete`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDeleteOptions {
    /// Only if it has no consumers.
    pub if_unused: bool,
    /// Only if it has no messages.
    pub if_empty: bool,
    /// Do not wait for the broker's answer.
    pub nowait: bool,
}

/// Options of `basic.qos` (the prefetch count is the command's own argument).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicQosOptions {
    /// Limit in bytes of unacknowledged content (0: none; RabbitMQ supports only 0).
    pub prefetch_size: u32,
    /// Apply the limit to the whole channel rather than each consumer (RabbitMQ's meaning).
    pub global: bool,
}

/// Options of `basic.consume`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BasicConsumeOptions {
    /// Do not deliver messages published on this connection (RabbitMQ ignores it).
    pub no_local: bool,
    /// Deliveries need no acknowledgement.
    pub no_ack: bool,
    /// The only consumer of the queue.
    pub exclusive: bool,
    /// Do not wait for the broker's answer (needs a consumer tag).
    pub nowait: bool,
    /// Extra arguments (e.g. `x-priority`); empty by default.
    pub arguments: FieldTable,
}

/// Options of `basic.cancel`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicCancelOptions {
    /// Do not wait for the broker's answer.
    pub nowait: bool,
}

/// Options of `basic.get`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicGetOptions {
    /// The message needs no acknowledgement.
    pub no_ack: bool,
}

/// Options of `basic.publish`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicPublishOptions {
    /// Return the message if no queue takes it.
    pub mandatory: bool,
    /// Not supported by RabbitMQ (it closes the connection); kept for completeness.
    pub immediate: bool,
}

/// Options of `confirm.select`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfirmSelectOptions {
    /// Do not wait for the broker's answer.
    pub nowait: bool,
}
