//! Why connecting failed: [`ConnectError`], and [`TlsError`] for TLS.

use std::fmt;

use amqp_proto::uri::UriError;
use amqp_proto::{Error, ErrorKind};

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
    /// The TCP connection (and TLS handshake) was not made within `connection_timeout`; a
    /// stalled AMQP handshake is [`Error::HandshakeTimeout`] instead.
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
