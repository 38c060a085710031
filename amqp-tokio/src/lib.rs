//! # amqp-tokio
//!
//! An AMQP 0-9-1 client on tokio. Connect, open a channel, declare, publish with confirms,
//! consume with acks:
//!
//! ```no_run
//! use amqp_tokio::{
//!     BasicConsumeOptions, BasicProperties, BasicPublishOptions, ConfirmSelectOptions,
//!     Connect, Connection, FieldTable, QueueDeclareOptions,
//! };
//! use futures_util::StreamExt;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let conn = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//!     let channel = conn.open_channel().await?;
//!
//!     let queue = channel
//!         .queue_declare("", QueueDeclareOptions { exclusive: true, ..Default::default() },
//!             FieldTable::new())
//!         .await?;
//!
//!     channel.confirm_select(ConfirmSelectOptions::default()).await?;
//!     let confirm = channel
//!         .basic_publish("", &queue.name, BasicPublishOptions::default(),
//!             &BasicProperties::default().with_content_type("text/plain"), "hello")
//!         .await?;
//!     assert!(confirm.await.is_ack());
//!
//!     let mut consumer = channel
//!         .basic_consume(&queue.name, "", BasicConsumeOptions::default(), FieldTable::new())
//!         .await?;
//!     if let Some(delivery) = consumer.next().await {
//!         let delivery = delivery?;
//!         println!("got {:?}", delivery.body);
//!         delivery.ack()?;
//!     }
//!
//!     conn.close().await?;
//!     Ok(())
//! }
//! ```
//!
//! [`connect`] (or `Connection::connect` with the [`Connect`] trait in scope) parses an
//! `amqp://` URI, opens a TCP connection (`TCP_NODELAY` on) within the URI's
//! `connection_timeout`, spawns the connection's driver task with `tokio::spawn`, and
//! returns once the broker has accepted the login and opened the virtual host — or fails
//! promptly with why: [`ErrorKind::Authentication`] for refused credentials,
//! [`ErrorKind::AccessRefused`] for the virtual host. Use [`connect_with`] and
//! [`ConnectOptions`] to adjust settings. `amqps://` (TLS) is not supported yet and is
//! refused with [`ConnectError::TlsNotSupported`].
//!
//! Everything else — [`Connection`], [`Channel`], [`Consumer`], [`Delivery`],
//! [`PublishConfirm`] — is the runtime-agnostic API of `amqp-client`, re-exported here. Needs
//! a tokio runtime with the `net` and `time` drivers enabled.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

pub use amqp_client::*;

/// `Connection::connect(uri)`: connect on tokio. In scope with `use amqp_tokio::Connect`.
pub trait Connect: Sized {
    /// Connects to the broker at `uri` (`amqp://user:pass@host:port/vhost?options`).
    fn connect(uri: &str) -> impl Future<Output = Result<Self, ConnectError>> + Send;

    /// Connects with a URI string, a parsed [`AmqpUri`] or [`ConnectOptions`].
    fn connect_with(
        options: impl IntoConnectOptions + Send,
    ) -> impl Future<Output = Result<Self, ConnectError>> + Send;
}

impl Connect for Connection {
    fn connect(uri: &str) -> impl Future<Output = Result<Self, ConnectError>> + Send {
        let options = ConnectOptions::parse(uri);
        async move { connect_with(options?).await }
    }

    fn connect_with(
        options: impl IntoConnectOptions + Send,
    ) -> impl Future<Output = Result<Self, ConnectError>> + Send {
        connect_with(options)
    }
}

/// Connects to the broker at `uri` (`amqp://user:pass@host:port/vhost?options`).
pub async fn connect(uri: &str) -> Result<Connection, ConnectError> {
    connect_with(ConnectOptions::parse(uri)?).await
}

/// Connects with a URI string, a parsed [`AmqpUri`] or [`ConnectOptions`].
pub async fn connect_with(options: impl IntoConnectOptions) -> Result<Connection, ConnectError> {
    let ConnectOptions { uri, config } = options.into_connect_options()?;
    if uri.scheme.is_tls() {
        return Err(ConnectError::TlsNotSupported);
    }
    let started = Instant::now();
    let tcp = TcpStream::connect((uri.host.as_str(), uri.port));
    let stream = match config.connection_timeout {
        Some(limit) => tokio::time::timeout(limit, tcp)
            .await
            .map_err(|_| ConnectError::Timeout)?,
        None => tcp.await,
    }
    .map_err(ConnectError::Io)?;
    stream.set_nodelay(true).map_err(ConnectError::Io)?;
    let (connecting, driver) =
        start_connection(config, started, TokioTransport(stream), TokioTimer);
    tokio::spawn(driver);
    Ok(connecting.await?)
}

/// A tokio TCP stream as the driver's [`Transport`]: readiness plus `try_read_buf` reads
/// straight into the core's buffer, writes are vectored.
#[derive(Debug)]
pub struct TokioTransport(pub TcpStream);

impl Transport for TokioTransport {
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// tokio's timer as the driver's [`Timer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioTimer;

impl Timer for TokioTimer {
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}
