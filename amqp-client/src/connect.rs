//! What runtime adapters share for connecting: where to connect, why it failed, and the
//! connect sequence itself ([`connect_with_transport`], [`adapter_connect_api!`]).

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::Instant;

use amqp_proto::uri::{AmqpUri, UriError};
use amqp_proto::{ConnectionConfig, Error, ErrorKind};

use crate::connection::{Connection, start_connection};
use crate::driver::{Driver, Timer, Transport};

/// Where and how to connect: the parsed URI (host, port, scheme) and the connection
/// settings derived from it, which can be adjusted before connecting. `Debug` never shows the
/// password or key material.
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
    /// TLS settings for `amqps://` (from the URI's TLS parameters unless replaced).
    #[cfg(feature = "tls")]
    pub tls: crate::tls::TlsOptions,
}

impl ConnectOptions {
    /// Options from a parsed URI.
    pub fn from_uri(uri: AmqpUri) -> Self {
        let config = ConnectionConfig::from_uri(&uri);
        ConnectOptions {
            #[cfg(feature = "tls")]
            tls: crate::tls::TlsOptions::from_uri(&uri),
            uri,
            config,
        }
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

    /// Replaces the TLS settings taken from the URI (they apply to `amqps://` only).
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn with_tls(mut self, tls: crate::tls::TlsOptions) -> Self {
        self.tls = tls;
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
    /// `amqps://` was asked for, but the adapter was built without its `tls` feature.
    TlsNotSupported,
    /// TLS failed: the settings are unusable (unreadable CA file or key, ...), or the
    /// handshake failed (the broker's certificate was rejected, the broker rejected ours, the
    /// port does not speak TLS). See [`TlsError::kind`].
    Tls(TlsError),
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
    /// (TCP), `Tls` (handshake), `Usage` (bad URI, unusable TLS settings, TLS not built in), ….
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectError::InvalidUri(_) | ConnectError::TlsNotSupported => ErrorKind::Usage,
            ConnectError::Tls(e) if e.kind() == TlsErrorKind::Config => ErrorKind::Usage,
            ConnectError::Tls(_) => ErrorKind::Tls,
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
                "TLS (amqps://) is not available: the adapter was built without its `tls` feature",
            ),
            ConnectError::Tls(e) => fmt::Display::fmt(e, f),
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
            ConnectError::Tls(e) => Some(e),
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

/// The connect sequence every runtime adapter shares: takes the options apart, refuses
/// `amqps://` ([`ConnectError::TlsNotSupported`]), runs `dial` (which opens the transport to
/// `uri.host:uri.port`) within the URI's `connection_timeout` measured on `timer`, starts the
/// connection, hands its [`Driver`] to `spawn` and waits for the handshake.
///
/// For runtime adapters; applications use their adapter's `connect`.
pub async fn connect_with_transport<T, R, D>(
    options: impl IntoConnectOptions,
    dial: impl FnOnce(&AmqpUri) -> D,
    timer: R,
    spawn: impl FnOnce(Driver<T, R>) -> io::Result<()>,
) -> Result<Connection, ConnectError>
where
    T: Transport,
    R: Timer,
    D: Future<Output = io::Result<T>>,
{
    let ConnectOptions { uri, config, .. } = options.into_connect_options()?;
    if uri.scheme.is_tls() {
        return Err(ConnectError::TlsNotSupported);
    }
    let started = Instant::now();
    let mut dialing = pin!(dial(&uri));
    let transport = match config.connection_timeout {
        Some(limit) => {
            let mut expired = timer.sleep_until(started + limit);
            poll_fn(|cx| match dialing.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(r.map_err(ConnectError::Io)),
                Poll::Pending => expired
                    .as_mut()
                    .poll(cx)
                    .map(|()| Err(ConnectError::Timeout)),
            })
            .await?
        }
        None => dialing.await.map_err(ConnectError::Io)?,
    };
    let (connecting, driver) = start_connection(config, started, transport, timer);
    spawn(driver).map_err(ConnectError::Io)?;
    Ok(connecting.await?)
}

/// Defines an async adapter's connect API in the calling crate, which must already have a
/// `pub async fn connect_with(options: impl IntoConnectOptions) -> Result<Connection,
/// ConnectError>` (usually a call to [`connect_with_transport`]): the free function
/// `connect(uri)` and the `Connect` trait that adds `Connection::connect(uri)` and
/// `Connection::connect_with(options)`. `$runtime` names the runtime in the docs.
#[macro_export]
macro_rules! adapter_connect_api {
    ($runtime:literal) => {
        #[doc = concat!("`Connection::connect(uri)`: connect on ", $runtime, ". Bring it in scope \
            with `use ", env!("CARGO_CRATE_NAME"), "::Connect`.")]
        pub trait Connect: Sized {
            /// Connects to the broker at `uri` (`amqp://user:pass@host:port/vhost?options`).
            fn connect(
                uri: &str,
            ) -> impl ::std::future::Future<Output = Result<Self, $crate::ConnectError>> + Send;

            /// Connects with a URI string, a parsed [`AmqpUri`] or [`ConnectOptions`].
            fn connect_with(
                options: impl $crate::IntoConnectOptions + Send,
            ) -> impl ::std::future::Future<Output = Result<Self, $crate::ConnectError>> + Send;
        }

        impl Connect for $crate::Connection {
            fn connect(
                uri: &str,
            ) -> impl ::std::future::Future<Output = Result<Self, $crate::ConnectError>> + Send
            {
                let options = $crate::ConnectOptions::parse(uri);
                async move { connect_with(options?).await }
            }

            fn connect_with(
                options: impl $crate::IntoConnectOptions + Send,
            ) -> impl ::std::future::Future<Output = Result<Self, $crate::ConnectError>> + Send
            {
                connect_with(options)
            }
        }

        /// Connects to the broker at `uri` (`amqp://user:pass@host:port/vhost?options`).
        pub async fn connect(uri: &str) -> Result<$crate::Connection, $crate::ConnectError> {
            connect_with($crate::ConnectOptions::parse(uri)?).await
        }
    };
}

impl From<TlsError> for ConnectError {
    fn from(e: TlsError) -> Self {
        ConnectError::Tls(e)
    }
}

/// What went wrong with TLS, as [`TlsError::kind`] tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The TLS settings cannot be used: a CA file, certificate or key that cannot be read or
    /// parsed, a certificate without its key, an invalid server name. Nothing was sent.
    Config,
    /// The broker's certificate was rejected: unknown issuer, not valid for the host name,
    /// expired or not yet valid, ….
    CertificateRejected,
    /// The broker refused the handshake with a TLS alert (for example because it requires a
    /// client certificate, or does not trust ours).
    RejectedByServer,
    /// The peer does not speak TLS on this port (a plain `amqp://` port?).
    NotTls,
    /// Any other handshake failure, including the connection closing during the handshake.
    Handshake,
}

/// Why TLS failed. The message names the problem (with rustls' own text for handshake
/// failures, e.g. `invalid peer certificate: UnknownIssuer`) and a hint; it never holds key
/// material.
#[derive(Debug)]
pub struct TlsError {
    kind: TlsErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl TlsError {
    /// An error of this kind with this message and underlying error (for adapters).
    pub fn new(
        kind: TlsErrorKind,
        message: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        TlsError {
            kind,
            message: message.into(),
            source,
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> TlsErrorKind {
        self.kind
    }

    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn source_ref(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TlsErrorKind::Config => write!(f, "invalid TLS settings: {}", self.message),
            _ => write!(f, "TLS handshake with the broker failed: {}", self.message),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
