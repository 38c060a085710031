//! What runtime adapters share for connecting: where to connect and why it failed.

use std::fmt;

use amqp_proto::uri::{AmqpUri, UriError};
use amqp_proto::{ConnectionConfig, Error, ErrorKind};

/// Where and how to connect: the parsed URI (host, port, scheme) and the connection
/// settings derived from it, which can be adjusted before connecting.
///
/// ```
/// use amqp_client::ConnectOptions;
/// let mut options = ConnectOptions::parse("amqp://app:secret@rabbit:5673/orders").unwrap();
/// options.config.connection_name = Some("billing".into());
/// assert_eq!((options.uri.host.as_str(), options.uri.port), ("rabbit", 5673));
/// assert_eq!(options.config.vhost, "orders");
/// ```
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The broker's address (and TLS settings, for `amqps://`).
    pub uri: AmqpUri,
    /// What the core needs: vhost, credentials, heartbeat, timeouts, limits.
    pub config: ConnectionConfig,
}

impl ConnectOptions {
    /// Options from a parsed URI.
    pub fn from_uri(uri: AmqpUri) -> Self {
        let config = ConnectionConfig::from_uri(&uri);
        ConnectOptions { uri, config }
    }

    /// Options from a URI string.
    pub fn parse(uri: &str) -> Result<Self, ConnectError> {
        Ok(Self::from_uri(
            AmqpUri::parse(uri).map_err(ConnectError::InvalidUri)?,
        ))
    }

    /// Replaces the connection settings (keeping the URI's host and port).
    #[must_use]
    pub fn with_config(mut self, config: ConnectionConfig) -> Self {
        self.config = config;
        self
    }
}

/// Anything `connect_with` accepts: a URI string, a parsed [`AmqpUri`], or
/// [`ConnectOptions`].
pub trait IntoConnectOptions {
    /// Converts, parsing if needed.
    fn into_connect_options(self) -> Result<ConnectOptions, ConnectError>;
}

impl IntoConnectOptions for ConnectOptions {
    fn into_connect_options(self) -> Result<ConnectOptions, ConnectError> {
        Ok(self)
    }
}

impl IntoConnectOptions for AmqpUri {
    fn into_connect_options(self) -> Result<ConnectOptions, ConnectError> {
        Ok(ConnectOptions::from_uri(self))
    }
}

impl IntoConnectOptions for &AmqpUri {
    fn into_connect_options(self) -> Result<ConnectOptions, ConnectError> {
        Ok(ConnectOptions::from_uri(self.clone()))
    }
}

impl IntoConnectOptions for &str {
    fn into_connect_options(self) -> Result<ConnectOptions, ConnectError> {
        ConnectOptions::parse(self)
    }
}

impl IntoConnectOptions for String {
    fn into_connect_options(self) -> Result<ConnectOptions, ConnectError> {
        ConnectOptions::parse(&self)
    }
}

impl IntoConnectOptions for &String {
    fn into_connect_options(self) -> Result<ConnectOptions, ConnectError> {
        ConnectOptions::parse(self)
    }
}

/// Why connecting failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URI does not parse.
    InvalidUri(UriError),
    /// `amqps://` was asked for; this adapter has no TLS yet.
    TlsNotSupported,
    /// The TCP connection could not be made (refused, unreachable, name not resolved).
    Io(std::io::Error),
    /// The TCP connection was not made within `connection_timeout`.
    Timeout,
    /// The AMQP handshake failed: [`Error::Authentication`] for refused credentials,
    /// [`Error::VhostAccessRefused`] for the virtual host, [`Error::HandshakeTimeout`], …
    Amqp(Error),
}

impl ConnectError {
    /// The named kind: `Authentication`, `AccessRefused`, `Timeout`, `ConnectionBroken`
    /// (TCP), `Usage` (bad URI, TLS not supported), ….
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectError::InvalidUri(_) | ConnectError::TlsNotSupported => ErrorKind::Usage,
            ConnectError::Io(_) => ErrorKind::ConnectionBroken,
            ConnectError::Timeout => ErrorKind::Timeout,
            ConnectError::Amqp(e) => e.kind(),
        }
    }

    /// The AMQP error, when the handshake is what failed.
    pub fn as_amqp(&self) -> Option<&Error> {
        match self {
            ConnectError::Amqp(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::InvalidUri(e) => write!(f, "invalid AMQP URI: {e}"),
            ConnectError::TlsNotSupported => f.write_str(
                "TLS (amqps://) is not supported yet by this adapter; use amqp:// or a TLS proxy",
            ),
            ConnectError::Io(e) => write!(f, "cannot connect: {e}"),
            ConnectError::Timeout => f.write_str("timed out connecting to the broker"),
            ConnectError::Amqp(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::InvalidUri(e) => Some(e),
            ConnectError::Io(e) => Some(e),
            ConnectError::Amqp(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for ConnectError {
    fn from(e: Error) -> Self {
        ConnectError::Amqp(e)
    }
}

impl From<UriError> for ConnectError {
    fn from(e: UriError) -> Self {
        ConnectError::InvalidUri(e)
    }
}
