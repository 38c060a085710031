//! What runtime adapters share for connecting: where to connect, why it failed, and the
//! connect sequence itself ([`connect_with_transport`]).

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;

use amqp_proto::ConnectionConfig;
use amqp_proto::recovery::Endpoint;
use amqp_proto::uri::AmqpUri;
use tracing::Instrument;

use crate::connection::{Connection, connection_span, start_connection};
use crate::driver::{Dialer, Dialing, Driver};
use crate::error::ConnectError;
#[cfg(feature = "tls")]
use crate::error::TlsError;
use crate::io::{Timer, Transport};
#[cfg(feature = "tls")]
use crate::tls::{MaybeTls, TlsClient};

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

/// The connect sequence every runtime adapter shares: takes the options apart, refuses
/// `amqps://` ([`ConnectError::TlsNotSupported`]), runs `dial` (which opens the transport to
/// `uri.host:uri.port`) within the URI's `connection_timeout` measured on `timer`, starts the
/// connection, hands its [`Driver`] to `spawn` and waits for the handshake (bounded by the
/// core's `handshake_timeout`, from the moment the transport is open).
///
/// For runtime adapters; applications use their adapter's `connect`.
pub async fn connect_with_transport<T, R, D>(
    options: impl IntoConnectOptions,
    dial: impl Fn(&AmqpUri) -> D + Send + Sync + 'static,
    timer: R,
    spawn: impl FnOnce(Driver<T, R>) -> io::Result<()>,
) -> Result<Connection, ConnectError>
where
    T: Transport,
    R: Timer,
    D: Future<Output = io::Result<T>> + Send + 'static,
{
    let ConnectOptions {
        uri, mut config, ..
    } = options.into_connect_options()?;
    let dial = Arc::new(dial);
    let dialer = recovery_dialer(&mut config, &uri, {
        let dial = dial.clone();
        move |uri: AmqpUri| {
            let dial = dial.clone();
            async move { dial(&uri).await }
        }
    });
    let span = connection_span(&config, Some(&uri));
    async move {
        if uri.scheme.is_tls() {
            return Err(ConnectError::TlsNotSupported);
        }
        let started = timer.now();
        let mut expired = config
            .connection_timeout
            .map(|limit| timer.sleep_until(started + limit));
        let transport = within(&mut expired, dial(&uri))
            .await?
            .map_err(ConnectError::Io)?;
        // The handshake timeout runs from here: the connect timeout covered the dial.
        let connected = timer.now();
        let (connecting, mut driver) = start_connection(config, connected, transport, timer);
        if let Some(dialer) = dialer {
            driver.set_dialer(dialer);
        }
        spawn(driver).map_err(ConnectError::Io)?;
        Ok(connecting.await?)
    }
    .instrument(span)
    .await
}

/// With automatic recovery on, gives it a seed (unless the caller fixed one) and builds the
/// driver's [`Dialer`] from `open`, which opens a transport to a URI: every endpoint shares
/// the URI's credentials, vhost and TLS settings, with its own host and port.
fn recovery_dialer<T, F>(
    config: &mut ConnectionConfig,
    uri: &AmqpUri,
    open: impl Fn(AmqpUri) -> F + Send + Sync + 'static,
) -> Option<Dialer<T>>
where
    F: Future<Output = io::Result<T>> + Send + 'static,
{
    let recovery = config.recovery.as_mut()?;
    if recovery.seed == 0 {
        use std::hash::BuildHasher;
        recovery.seed = std::collections::hash_map::RandomState::new().hash_one(0u8);
    }
    let uri = uri.clone();
    Some(Arc::new(move |endpoint: Option<&Endpoint>| -> Dialing<T> {
        let mut uri = uri.clone();
        if let Some(e) = endpoint {
            uri.host.clone_from(&e.host);
            uri.port = e.port;
        }
        Box::pin(open(uri))
    }))
}

/// [`crate::connect_with_transport`] with TLS: for `amqps://` the TLS settings
/// ([`ConnectOptions::tls`]) are turned into a [`TlsClient`] first (bad settings fail before
/// anything is dialled), then `dial` opens the TCP connection and `handshake` runs the TLS
/// handshake over it (e.g. `tokio_rustls::TlsConnector::from(client.config)
/// .connect(client.server_name, tcp)`). `connection_timeout` bounds dial and TLS handshake
/// together, `handshake_timeout` the AMQP handshake after them; a failed handshake is a [`ConnectError::Tls`] classified by
/// [`TlsError::from_handshake`]. `amqp://` skips the handshake.
///
/// For runtime adapters; applications use their adapter's `connect`.
#[cfg(feature = "tls")]
pub async fn connect_with_tls_transport<P, S, R, D, H>(
    options: impl IntoConnectOptions,
    dial: impl Fn(&AmqpUri) -> D + Send + Sync + 'static,
    handshake: impl Fn(TlsClient, P) -> H + Send + Sync + 'static,
    timer: R,
    spawn: impl FnOnce(Driver<MaybeTls<P, S>, R>) -> io::Result<()>,
) -> Result<Connection, ConnectError>
where
    P: Transport,
    S: Transport,
    R: Timer,
    D: Future<Output = io::Result<P>> + Send + 'static,
    H: Future<Output = io::Result<S>> + Send + 'static,
{
    let ConnectOptions {
        uri,
        mut config,
        tls,
    } = options.into_connect_options()?;
    let (dial, handshake) = (Arc::new(dial), Arc::new(handshake));
    let dialer = recovery_dialer(&mut config, &uri, {
        let (dial, handshake, tls) = (dial.clone(), handshake.clone(), tls.clone());
        move |uri: AmqpUri| {
            let (dial, handshake, tls) = (dial.clone(), handshake.clone(), tls.clone());
            async move {
                let tcp = dial(&uri).await?;
                if !uri.scheme.is_tls() {
                    return Ok(MaybeTls::plain(tcp));
                }
                let client = tls.client_for(&uri.host).map_err(io::Error::other)?;
                Ok(MaybeTls::tls(handshake(client, tcp).await?))
            }
        }
    });
    let span = connection_span(&config, Some(&uri));
    async move {
        let started = timer.now();
        tracing::debug!(
            host = %uri.host,
            port = uri.port,
            tls = uri.scheme.is_tls(),
            vhost = %config.vhost,
            mechanism = config.sasl.name(),
            "amqp: connecting"
        );
        let client = if uri.scheme.is_tls() {
            Some(tls.client_for(&uri.host)?)
        } else {
            None
        };
        let mut expired = config
            .connection_timeout
            .map(|limit| timer.sleep_until(started + limit));
        let tcp = within(&mut expired, dial(&uri))
            .await?
            .map_err(ConnectError::Io)?;
        let transport = match client {
            None => MaybeTls::plain(tcp),
            Some(client) => {
                let name = format!("{:?}", client.server_name);
                let stream = within(&mut expired, handshake(client, tcp))
                    .await?
                    .map_err(|e| {
                        let e = TlsError::from_handshake(e);
                        tracing::debug!(server_name = %name, error = %e, "amqp: TLS handshake failed");
                        ConnectError::Tls(e)
                    })?;
                tracing::debug!(server_name = %name, "amqp: TLS handshake done");
                MaybeTls::tls(stream)
            }
        };
        // The handshake timeout runs from here: the connect timeout covered the dial.
        let connected = timer.now();
        let (connecting, mut driver) = start_connection(config, connected, transport, timer);
        if let Some(dialer) = dialer {
            driver.set_dialer(dialer);
        }
        spawn(driver).map_err(ConnectError::Io)?;
        Ok(connecting.await?)
    }
    .instrument(span)
    .await
}

type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs `f` unless `expired` (the connect deadline) comes first.
async fn within<F: Future>(expired: &mut Option<Sleep>, f: F) -> Result<F::Output, ConnectError> {
    let mut f = pin!(f);
    poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match expired {
            Some(sleep) => sleep.as_mut().poll(cx).map(|()| Err(ConnectError::Timeout)),
            None => Poll::Pending,
        }
    })
    .await
}
