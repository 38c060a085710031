//! The options of the commands that have any, one struct per method.

/// Options of `exchange.declare`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
}

/// Options of `queue.declare`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

/// Options of `basic.consume`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicConsumeOptions {
    /// Do not deliver messages published on this connection (RabbitMQ ignores it).
    pub no_local: bool,
    /// Deliveries need no acknowledgement.
    pub no_ack: bool,
    /// The only consumer of the queue.
    pub exclusive: bool,
    /// Do not wait for the broker's answer (needs a consumer tag).
    pub nowait: bool,
}

/// Options of `basic.publish`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicPublishOptions {
    /// Return the message if no queue takes it.
    pub mandatory: bool,
    /// Not supported by RabbitMQ (it closes the connection); kept for completeness.
    pub immediate: bool,
}
