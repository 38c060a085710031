//! Connection settings and per-command options.

use std::sync::Arc;
use std::time::Duration;

use crate::sasl::{AmqPlain, External, Plain, SaslMechanism};
use crate::types::{FieldTable, FieldValue, LongString};
use crate::uri::{AmqpUri, Secret};

/// Everything the core needs to open a connection. Transport settings (host, port, TLS) are
/// the adapter's; they live in [`AmqpUri`].
///
/// ```
/// use amqp_proto::ConnectionConfig;
/// let uri = "amqp://app:secret@rabbit:5672/orders?heartbeat=30&request_timeout=5000"
///     .parse()
///     .unwrap();
/// let config = ConnectionConfig::from_uri(&uri).with_connection_name("billing");
/// assert_eq!(config.vhost, "orders");
/// assert_eq!(config.heartbeat, 30);
/// assert_eq!(config.request_timeout, Some(std::time::Duration::from_secs(5)));
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Virtual host to open.
    pub vhost: String,
    /// How to log in.
    pub sasl: Arc<dyn SaslMechanism>,
    /// Highest channel number wanted (0: whatever the broker allows).
    pub channel_max: u16,
    /// Largest frame wanted (0: whatever the broker allows).
    pub frame_max: u32,
    /// Heartbeat interval wanted in seconds (0: disabled).
    pub heartbeat: u16,
    /// Shown in the management UI and `rabbitmqctl list_connections`.
    pub connection_name: Option<String>,
    /// Extra client properties, merged over the defaults.
    pub client_properties: FieldTable,
    /// Locale for the broker's messages.
    pub locale: String,
    /// Time allowed to open the transport (TCP, and TLS for `amqps://`); the runtime glue
    /// applies it, the core does not read it.
    pub connection_timeout: Option<Duration>,
    /// Time allowed from the protocol header to `connection.open-ok` (10 s by default, as
    /// RabbitMQ's own handshake timeout); on expiry the connection ends with
    /// [`crate::Error::HandshakeTimeout`] naming the step it stalled at.
    pub handshake_timeout: Option<Duration>,
    /// Time allowed for the reply to each request (`channel.open`, declares, binds, `basic.get`,
    /// `basic.qos`, `channel.close`, …), 60 s by default; `None` waits for ever. A channel can
    /// set its own ([`crate::Connection::set_request_timeout`]); a URI sets it with
    /// `?request_timeout=MILLISECONDS` (0: no limit). On expiry the request fails
    /// with [`crate::Error::RequestTimeout`] and its channel is closed, since replies on a
    /// channel come in order and a late one could not be matched. The deadline runs from the
    /// first call after the command that passes the time (`poll_transmit`, input, timeout),
    /// so a clock the core last saw long ago never shortens it.
    pub request_timeout: Option<Duration>,
    /// Time allowed for the broker's `close-ok` before the connection is dropped anyway.
    pub close_timeout: Duration,
    /// Queued outbound bytes above which publishes are refused with
    /// [`crate::WouldBlock::Backpressure`].
    pub high_water_mark: usize,
    /// Largest message body accepted from the broker; bigger declared sizes close the
    /// connection before anything is buffered.
    pub max_body_size: u64,
    /// Automatic recovery after a lost connection (`None`: off, the default); see
    /// [`crate::recovery`].
    pub recovery: Option<crate::recovery::RecoveryConfig>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            vhost: "/".into(),
            sasl: Arc::new(Plain {
                username: "guest".into(),
                password: Secret::new("guest"),
            }),
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
            connection_name: None,
            client_properties: FieldTable::new(),
            locale: "en_US".into(),
            connection_timeout: Some(Duration::from_secs(60)),
            handshake_timeout: Some(Duration::from_secs(10)),
            close_timeout: Duration::from_secs(10),
            // Long enough for a slow broker (a quorum queue declared under load, a large
            // queue deleted), short enough that a stalled link or a resource alarm shows as an
            // error instead of a hang. Java's client waits 10 min, amqp091-go for ever.
            request_timeout: Some(Duration::from_secs(60)),
            high_water_mark: 4 << 20,
            max_body_size: 512 << 20,
            recovery: None,
        }
    }
}

impl ConnectionConfig {
    /// Settings from a parsed `amqp://` or `amqps://` URI.
    pub fn from_uri(uri: &AmqpUri) -> Self {
        let mut c = ConnectionConfig {
            vhost: uri.vhost.clone(),
            ..Default::default()
        };
        let username = uri.username().to_owned();
        let password = Secret::new(uri.expose_password());
        c.sasl = match uri.auth_mechanisms.first().map(String::as_str) {
            Some("external") => Arc::new(External),
            Some("amqplain") => Arc::new(AmqPlain { username, password }),
            _ => Arc::new(Plain { username, password }),
        };
        if let Some(h) = uri.heartbeat {
            c.heartbeat = h;
        }
        if let Some(f) = uri.frame_max {
            c.frame_max = f;
        }
        if let Some(ch) = uri.channel_max {
            c.channel_max = ch;
        }
        if uri.connection_timeout.is_some() {
            c.connection_timeout = uri.connection_timeout;
        }
        if let Some(t) = uri.request_timeout {
            // `request_timeout=0` in the URI: no limit.
            c.request_timeout = (!t.is_zero()).then_some(t);
        }
        c
    }

    /// Sets the connection name shown by the broker.
    #[must_use]
    pub fn with_connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// Sets the time allowed for each request's reply (`None`: wait for ever); see
    /// [`ConnectionConfig::request_timeout`].
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Turns automatic recovery on.
    #[must_use]
    pub fn with_recovery(mut self, recovery: crate::recovery::RecoveryConfig) -> Self {
        self.recovery = Some(recovery);
        self
    }

    /// Sets the SASL mechanism.
    #[must_use]
    pub fn with_sasl(mut self, sasl: impl SaslMechanism + 'static) -> Self {
        self.sasl = Arc::new(sasl);
        self
    }

    /// The `client-properties` table sent in `connection.start-ok`: product, version,
    /// platform, capabilities (the broker only sends cancel notifications, blocked notices and
    /// auth-failure closes to clients that announce them), the connection name, then the
    /// caller's own entries.
    pub fn client_properties_table(&self) -> FieldTable {
        let caps: FieldTable = [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
        ]
        .into_iter()
        .map(|name| (crate::ShortString::from_static(name), true))
        .collect();
        let mut t = FieldTable::new()
            .with("product", "amqp-rs")
            .with("version", env!("CARGO_PKG_VERSION"))
            .with("platform", "Rust")
            .with("information", "sans-IO AMQP 0-9-1 client")
            .with("capabilities", caps);
        if let Some(name) = &self.connection_name {
            t = t.with(
                "connection_name",
                FieldValue::LongString(LongString::from(name.as_str())),
            );
        }
        for (k, v) in self.client_properties.iter() {
            t.set(k.clone(), v.clone());
        }
        t
    }
}
