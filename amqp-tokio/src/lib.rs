//! # amqp-tokio
//!
//! An AMQP 0-9-1 client on tokio. open a channel, declare, publish with confirms,
//! consume with acks:
//!
//! ```no_run
//! use amqp_tokio::{
//!     BasicConsumeOptions, BasicProperties, BasicPublishOptions, ConfirmSelectOptions,
//!     Connection, FieldTable, QueueDeclareOptions,
//! };
//! use futures_util::StreamExt;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let conn = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//!     let channel = conn.open_channel().await?;
//!
//!     let queue = channel
//!         .queue_declare("", QueueDeclareOptions { exclusive: true, ..Default::default() })
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
//!         .basic_consume(&queue.name, "", BasicConsumeOptions::default())
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
//! [`Connection::connect`] (or the free function [`connect`]) parses an
//! `amqp://` URI, opens a TCP connection (`TCP_NODELAY` on) within the URI's
//! `connection_timeout`, spawns the connection's driver task with `tokio::spawn`, and
//! returns once the broker has accepted the login and opened the virtual host — or fails
//! promptly with why: [`ErrorKind::Authentication`] for refused credentials,
//! [`ErrorKind::AccessRefused`] for the virtual host. Use [`connect_with`] and
//! [`ConnectOptions`] to adjust settings.
//!
//! ## TLS (`amqps://`)
//!
//! With the `tls` feature (on by default) `amqps://` URIs connect through rustls
//! (`tokio-rustls`, `ring` provider). The broker's certificate is verified against
//! `cacertfile` (else the `webpki-roots` CAs) and the URI's host name; `certfile`/`keyfile`
//! present a client certificate, and `auth_mechanism=external` logs in with it (SASL
//! EXTERNAL). Settings can also be given in code with [`ConnectOptions::with_tls`] and
//! [`TlsOptions`]; see the `amqp_client::tls` module for every option. A failed handshake is
//! a prompt [`ConnectError::Tls`] ([`ErrorKind::Tls`]) whose [`TlsError::kind`] tells an
//! untrusted, wrong-host or expired certificate from a port that does not speak TLS.
//!
//! ```no_run
//! # async fn f() -> Result<(), amqp_tokio::ConnectError> {
//! use amqp_tokio::Connection;
//! let conn = Connection::connect(
//!     "amqps://rabbit.example:5671/%2f?cacertfile=/etc/amqp/ca.pem\
//!      &certfile=/etc/amqp/client.pem&keyfile=/etc/amqp/client.key&auth_mechanism=external",
//! )
//! .await?;
//! # Ok(()) }
//! ```
//!
//! Without the feature, `amqps://` is refused with [`ConnectError::TlsNotSupported`].
//!
//! Everything else — [`Channel`], [`Consumer`], [`Delivery`], [`PublishConfirm`] — is the
//! runtime-agnostic API of `amqp-client`, re-exported here; [`Connection`] derefs to
//! `amqp_client::Connection`. Needs a tokio runtime with the `net` and `time` drivers enabled.
//! The RabbitMQ tutorials are in this crate's `examples/`.
//!
//! # Examples by topic
//!
//! Each snippet runs inside an `async fn` returning `Result<_, Box<dyn Error>>`, with
//! `channel` an open [`Channel`].
//!
//! ## Connection and channels
//!
//! A connection is one TCP (or TLS) connection; open a channel per concurrent task. Watch the
//! connection's life with [`Connection::events`](amqp_client::Connection::events):
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use amqp_tokio::{ConnectOptions, Connection, ConnectionEvent};
//! use futures_util::StreamExt;
//!
//! let mut options = ConnectOptions::parse("amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=30")?;
//! options.config.connection_name = Some("billing-worker".into());
//! let conn = Connection::connect_with(options).await?;
//! let (publisher, consumer) = (conn.open_channel().await?, conn.open_channel().await?);
//! println!("channels {} and {}", publisher.id(), consumer.id());
//!
//! let mut events = conn.events();
//! tokio::spawn(async move {
//!     while let Some(event) = events.next().await {
//!         match event {
//!             ConnectionEvent::Blocked { reason } => eprintln!("broker blocked us: {reason}"),
//!             ConnectionEvent::Closed(why) => eprintln!("connection over: {why:?}"),
//!             other => eprintln!("{other:?}"),
//!         }
//!     }
//! });
//! conn.close().await?;
//! # Ok(()) }
//! ```
//!
//! ## Declare and bind
//!
//! ```no_run
//! # async fn f(channel: amqp_tokio::Channel) -> Result<(), Box<dyn std::error::Error>> {
//! use amqp_tokio::{ExchangeDeclareOptions, FieldTable, QueueBindOptions, QueueDeclareOptions};
//!
//! let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
//! channel.exchange_declare("orders", "topic", durable).await?;
//! // Queue arguments are a field table of the broker's x- settings.
//! let args = FieldTable::new().with("x-queue-type", "quorum").with("x-max-length", 10_000i32);
//! let options = QueueDeclareOptions { durable: true, ..Default::default() };
//! let queue = channel.queue_declare("orders.eu", QueueDeclareOptions { arguments: args, ..options }).await?;
//! channel
//!     .queue_bind(&queue.name, "orders", "eu.#", QueueBindOptions::default())
//!     .await?;
//! println!("{} holds {} messages", queue.name, queue.message_count);
//! # Ok(()) }
//! ```
//!
//! ## Publish with properties and headers
//!
//! ```no_run
//! # async fn f(channel: amqp_tokio::Channel) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::SystemTime;
//! use amqp_tokio::{BasicProperties, BasicPublishOptions, Bytes, Decimal, FieldTable};
//!
//! let headers = FieldTable::new()
//!     .with("attempt", 1i32)
//!     .with("amount", Decimal::new(-1999, 2)) // -19.99
//!     .with("signature", &b"\x01\x02"[..]) // a byte array
//!     .with("sent-at", SystemTime::now());
//! let props = BasicProperties::default()
//!     .with_content_type("application/json")
//!     .with_delivery_mode(2) // persistent
//!     .with_message_id("order-42")
//!     .with_headers(headers);
//! let body = Bytes::from_static(br#"{"order": 42}"#); // Bytes, Vec<u8>, String: no copy
//! channel.basic_publish("orders", "eu.new", BasicPublishOptions::default(), &props, body).await?;
//! let borrowed: &[u8] = b"copied once";
//! channel.basic_publish("orders", "eu.new", BasicPublishOptions::default(), &props, borrowed).await?;
//! # Ok(()) }
//! ```
//!
//! ## Confirms and returns
//!
//! In confirm mode each publish resolves to the broker's answer. A `mandatory` message that
//! no queue took comes back: in confirm mode it rides on the (positive) confirm; outside
//! confirm mode it arrives on [`Channel::on_return`](amqp_client::Channel::on_return).
//!
//! ```no_run
//! # async fn f(channel: amqp_tokio::Channel) -> Result<(), Box<dyn std::error::Error>> {
//! use amqp_tokio::{BasicProperties, BasicPublishOptions, ConfirmSelectOptions, Confirmation};
//!
//! channel.confirm_select(ConfirmSelectOptions::default()).await?;
//! let mandatory = BasicPublishOptions { mandatory: true, ..Default::default() };
//! let props = BasicProperties::default();
//! let confirm = channel.basic_publish("", "no-such-queue", mandatory, &props, "x").await?;
//! match confirm.await {
//!     Confirmation::Ack(Some(returned)) => {
//!         println!("unroutable: {} {}", returned.reply_code, returned.reply_text)
//!     }
//!     Confirmation::Ack(None) => println!("stored by the broker"),
//!     Confirmation::Nack(_) => println!("the broker could not take it"),
//!     Confirmation::Lost(e) => println!("unknown: the channel closed first ({e})"),
//!     Confirmation::NotRequested => unreachable!("the channel is in confirm mode"),
//! }
//! // Or wait for everything published so far: true when all were acked.
//! assert!(channel.wait_for_confirms().await?);
//! # Ok(()) }
//! ```
//!
//! ## Consumers: ack, nack, reject
//!
//! ```no_run
//! # async fn f(channel: amqp_tokio::Channel) -> Result<(), Box<dyn std::error::Error>> {
//! use amqp_tokio::{BasicConsumeOptions, BasicQosOptions, FieldTable};
//! use futures_util::StreamExt;
//!
//! channel.basic_qos(50, BasicQosOptions::default()).await?; // at most 50 unacked
//! let mut consumer = channel
//!     .basic_consume("orders.eu", "", BasicConsumeOptions::default())
//!     .await?;
//! while let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?; // Err: the channel or connection closed, with why
//!     match std::str::from_utf8(&delivery.body) {
//!         Ok(text) if text.starts_with('{') => delivery.ack()?,
//!         Ok(_) => delivery.nack(true)?, // back to the queue
//!         Err(_) => delivery.reject(false)?, // dropped, or dead-lettered
//!     }
//! }
//! println!("consumer ended: {:?}", consumer.end_reason());
//! # Ok(()) }
//! ```
//!
//! ## Errors and `kind()`
//!
//! Every error names its kind; broker refusals carry the reply code. A channel error closes
//! only that channel.
//!
//! ```no_run
//! # async fn f(conn: amqp_tokio::Connection) -> Result<(), Box<dyn std::error::Error>> {
//! use amqp_tokio::{ErrorKind, QueueDeclareOptions, FieldTable};
//!
//! let channel = conn.open_channel().await?;
//! let passive = QueueDeclareOptions { passive: true, ..Default::default() };
//! match channel.queue_declare("maybe-there", passive).await {
//!     Ok(queue) => println!("{} exists", queue.name),
//!     Err(e) if e.kind() == ErrorKind::NotFound => println!("no such queue: {e}"),
//!     Err(e) => return Err(e.into()),
//! }
//! assert!(!channel.is_open()); // the 404 closed this channel; the connection is fine
//! let _fresh = conn.open_channel().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;

pub use amqp_client::amqp_proto;
pub use amqp_client::api::*;

#[cfg(not(feature = "tls"))]
use amqp_client::adapter::connect_with_transport;
use amqp_client::adapter::{Timer, Transport};
#[cfg(feature = "tls")]
use amqp_client::adapter::{TlsClient, connect_with_tls_transport};

amqp_client::adapter_connect_api!("tokio");

/// Dials TCP (and TLS), spawns the driver with `tokio::spawn` and runs the handshake.
async fn dial_and_start(
    options: impl IntoConnectOptions,
) -> Result<amqp_client::Connection, ConnectError> {
    let dial = |uri: &AmqpUri| {
        let addr = (uri.host.clone(), uri.port);
        async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(TokioTransport::new(stream))
        }
    };
    let spawn = |driver| {
        tokio::spawn(driver);
        Ok(())
    };
    #[cfg(feature = "tls")]
    {
        let handshake = |client: TlsClient, tcp: TokioTransport| async move {
            let stream = tokio_rustls::TlsConnector::from(client.config)
                .connect(client.server_name, tcp.stream)
                .await?;
            let (_, session) = stream.get_ref();
            tracing::debug!(
                protocol = ?session.protocol_version(),
                cipher_suite = ?session.negotiated_cipher_suite().map(|s| s.suite()),
                "amqp: TLS session established"
            );
            Ok(TokioTlsTransport(stream))
        };
        connect_with_tls_transport(options, dial, handshake, TokioTimer, spawn).await
    }
    #[cfg(not(feature = "tls"))]
    connect_with_transport(options, dial, TokioTimer, spawn).await
}

/// A TLS stream (tokio-rustls over tokio TCP) as the driver's [`Transport`]. Feature `tls`.
#[cfg(feature = "tls")]
#[derive(Debug)]
struct TokioTlsTransport(tokio_rustls::client::TlsStream<TcpStream>);

#[cfg(feature = "tls")]
impl Transport for TokioTlsTransport {
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_read_buf(Pin::new(&mut self.0), cx, &mut buf.limit(max))
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

/// A tokio TCP stream as the driver's [`Transport`]: readiness plus `try_read_buf` reads
/// straight into the core's buffer, writes are vectored.
#[derive(Debug)]
struct TokioTransport {
    stream: TcpStream,
    reread: Reread,
}

impl TokioTransport {
    fn new(stream: TcpStream) -> Self {
        TokioTransport {
            stream,
            reread: Reread::default(),
        }
    }
}

/// Whether a read that did not fill the buffer is followed by another read.
///
/// Such a short read drained the socket (edge-triggered epoll), so reading again right away
/// usually costs a system call that returns EAGAIN. But while the broker streams (a consumer
/// of a busy queue) that second read often finds bytes that arrived meanwhile, and taking
/// them in the same batch saves a whole round of wake-ups, acks and writes, worth several
/// system calls. So the transport reads again while at least one second read in
/// [`Reread::WORTH`] has been finding bytes lately, and otherwise tries one now and then to
/// notice when they would.
#[derive(Debug, Default)]
struct Reread {
    /// The last read was short and readiness was kept: the next read is a second read.
    pending: bool,
    /// Recent second reads (halved now and then, with `hits`).
    tries: u16,
    /// How many of them found bytes.
    hits: u16,
    /// Short reads taken as draining since the last second read.
    skipped: u8,
}

impl Reread {
    /// Second reads are worth it while at least one in this many finds bytes.
    const WORTH: u16 = 8;
    /// While they are not, one short read in this many is still followed by one.
    const PROBE_EVERY: u8 = 8;
    /// The history is halved when this many second reads are in it.
    const WINDOW: u16 = 64;

    /// After a short read: whether to read again (else the read counts as draining).
    fn again(&mut self) -> bool {
        if self.hits * Self::WORTH >= self.tries {
            return true;
        }
        self.skipped += 1;
        if self.skipped >= Self::PROBE_EVERY {
            self.skipped = 0;
            return true;
        }
        false
    }

    /// What a second read found.
    fn found(&mut self, bytes: bool) {
        self.tries += 1;
        self.hits += u16::from(bytes);
        if self.tries >= Self::WINDOW {
            self.tries /= 2;
            self.hits /= 2;
        }
    }
}

impl Transport for TokioTransport {
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            let second = std::mem::take(&mut self.reread.pending);
            let room = max;
            let (stream, reread) = (&self.stream, &mut self.reread);
            let mut got = None;
            // Answering WouldBlock to `try_io` after a short read clears the readiness it saw
            // before the read (not a newer one), so the next read waits for the reactor.
            let result = stream.try_io(Interest::READABLE, || {
                let n = stream.try_read_buf(&mut (&mut *buf).limit(max))?;
                got = Some(n);
                if n > 0 && n < room && !reread.again() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            if second {
                reread.found(got.is_some_and(|n| n > 0));
            }
            match (result, got) {
                (Err(e), Some(n)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Poll::Ready(Ok(n));
                }
                (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
                (Ok(n), _) => {
                    reread.pending = n > 0 && n < room;
                    return Poll::Ready(Ok(n));
                }
                (result, _) => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// tokio's timer as the driver's [`Timer`].
#[derive(Debug, Clone, Copy, Default)]
struct TokioTimer;

impl Timer for TokioTimer {
    fn now(&self) -> Instant {
        // tokio's clock, so that a paused test runtime moves the connection's time too.
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::Reread;

    /// Short reads in a row, each followed by a second read when `again` says so, whose
    /// outcome `hit` decides; returns how many second reads were made.
    fn run(reread: &mut Reread, short_reads: usize, hit: impl Fn(usize) -> bool) -> usize {
        let mut seconds = 0;
        for _ in 0..short_reads {
            if reread.again() {
                reread.found(hit(seconds));
                seconds += 1;
            }
        }
        seconds
    }

    #[test]
    fn a_fresh_connection_reads_again() {
        assert!(Reread::default().again());
    }

    #[test]
    fn empty_second_reads_give_way_to_a_probe_now_and_then() {
        let mut reread = Reread::default();
        run(&mut reread, 200, |_| false);
        let seconds = run(&mut reread, 800, |_| false);
        assert_eq!(seconds, 800 / usize::from(Reread::PROBE_EVERY));
    }

    #[test]
    fn second_reads_go_on_while_one_in_four_finds_bytes() {
        let mut reread = Reread::default();
        assert_eq!(run(&mut reread, 1000, |n| n % 4 == 0), 1000);
    }

    #[test]
    fn probes_that_find_bytes_bring_second_reads_back() {
        let mut reread = Reread::default();
        assert!(run(&mut reread, 200, |_| false) < 200);
        // The broker starts streaming: every second read finds bytes again.
        run(&mut reread, 200, |_| true);
        assert_eq!(run(&mut reread, 100, |_| true), 100);
    }
}

/// The README's examples, compiled and run as doctests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
