//! # amqp-async-std
//!
//! An AMQP 0-9-1 client for async-std, smol and any other executor, built on the
//! `futures-io` / `async-io` primitives (no runtime of its own). open a channel,
//! declare, publish with confirms, consume with acks:
//!
//! ```no_run
//! use amqp_async_std::{
//!     BasicConsumeOptions, BasicProperties, BasicPublishOptions, ConfirmSelectOptions,
//!     Connection, FieldTable, QueueDeclareOptions,
//! };
//! use futures_lite::StreamExt;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // `async_std::task::block_on` or `#[async_std::main]` work the same way.
//!     smol::block_on(async {
//!         let conn = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//!         let channel = conn.open_channel().await?;
//!
//!         let queue = channel
//!             .queue_declare("", QueueDeclareOptions { exclusive: true, ..Default::default() })
//!             .await?;
//!
//!         channel.confirm_select(ConfirmSelectOptions::default()).await?;
//!         let confirm = channel
//!             .basic_publish("", &queue.name, BasicPublishOptions::default(),
//!                 &BasicProperties::default().with_content_type("text/plain"), "hello")
//!             .await?;
//!         assert!(confirm.await.is_ack());
//!
//!         let mut consumer = channel
//!             .basic_consume(&queue.name, "", BasicConsumeOptions::default())
//!             .await?;
//!         if let Some(delivery) = consumer.next().await {
//!             let delivery = delivery?;
//!             println!("got {:?}", delivery.body);
//!             delivery.ack()?;
//!         }
//!
//!         conn.close().await?;
//!         Ok(())
//!     })
//! }
//! ```
//!
//! [`Connection::connect`] (or the free function [`connect`]) parses an
//! `amqp://` URI, opens a TCP connection (`TCP_NODELAY` on) within the URI's
//! `connection_timeout`, and returns once the broker has accepted the login and opened the
//! virtual host — or fails promptly with why: [`ErrorKind::Authentication`] for refused
//! credentials, [`ErrorKind::AccessRefused`] for the virtual host. Use [`connect_with`] and
//! [`ConnectOptions`] to adjust settings.
//!
//! With the `tls` feature (on by default) `amqps://` URIs connect through rustls
//! (`futures-rustls`, `ring` provider), with the same settings and errors as every adapter:
//! `cacertfile` (else the `webpki-roots` CAs), host name verification, `certfile`/`keyfile`
//! for a client certificate and `auth_mechanism=external` to log in with it; in code,
//! [`ConnectOptions::with_tls`] and [`TlsOptions`] (see the `amqp_client::tls` module). A
//! failed handshake is a prompt [`ConnectError::Tls`]. Without the feature, `amqps://` is
//! refused with [`ConnectError::TlsNotSupported`].
//!
//! The connection's driver (socket I/O, heartbeats) runs as a task on async-std's executor
//! (`async-global-executor`, the one `async_std::task::spawn` uses, whose threads also poll
//! async-io's reactor), next to the application's tasks: a batch of deliveries or confirms
//! read by the driver wakes the consumer on the same pool, and the consumer's acks wake the
//! driver without a hand-off to a thread of its own. `connect` works from any executor (the
//! global executor starts its threads on first use); the driver must not be starved, so do
//! not block those threads. Against RabbitMQ, with the application on async-std's executor
//! (`bench/results/2026-11-29-asyncstd-executor.md`: 20 000 messages, medians of 6
//! interleaved runs), this took the CPU per message of consume 1 KiB from 8.1 to 6.2 µs
//! (context switches 0.76 -> 0.29, futex calls 0.72 -> 0.22 per message), e2e 1 KiB from
//! 11.5 to 7.4 and consume 16 B from 3.2 to 2.5, against the former dedicated `amqp-io`
//! thread with a `mio` poll of its own; plain publishes stayed at 0.3-1.0 µs. The task makes
//! more system calls (async-io re-arms the socket before each wait) but fewer hand-offs
//! between threads, which cost more. Plain TCP reads ([`transport::TcpTransport`]) ask for
//! readiness once a read drained the socket instead of reading into EAGAIN first.
//!
//! Most of what a connection costs on async-std's executor is the executor's own work:
//! async-executor notifies a sleeping thread each time it starts a task, so every batch the
//! broker sends wakes both of its threads, and each wait on async-io's reactor costs about
//! five system calls. A process whose work is mostly its AMQP connections spends less CPU per
//! message on one executor thread (`ASYNC_STD_THREAD_COUNT=1`): against RabbitMQ on a 2-CPU
//! machine, 0.56-0.70 of the CPU per message of the default two threads in consume, e2e and
//! publish-confirm at 16 B and 1 KiB, with a quarter of the context switches
//! (`bench/results/2026-11-30-session3.md`).
//!
//! To run the driver on another executor (smol's, your own), use [`connect_with_spawner`]:
//!
//! ```no_run
//! use amqp_async_std::{BasicGetOptions, ErrorKind};
//!
//! smol::block_on(async {
//!     let conn = amqp_async_std::connect_with_spawner("amqp://127.0.0.1:5672/%2f", |driver| {
//!         smol::spawn(driver).detach(); // keeps running while the executor does
//!         Ok(())
//!     })
//!     .await?;
//!     let channel = conn.open_channel().await?;
//!     match channel.basic_get("jobs", BasicGetOptions::default()).await {
//!         Ok(Some(job)) => job.ack()?,
//!         Ok(None) => println!("the queue is empty"),
//!         Err(e) if e.kind() == ErrorKind::NotFound => println!("no queue named jobs"),
//!         Err(e) => return Err(e.into()),
//!     }
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Everything else — [`Channel`], [`Consumer`], [`Delivery`], [`PublishConfirm`] — is the
//! runtime-agnostic API of `amqp-client`, re-exported here; [`Connection`] derefs to
//! `amqp_client::Connection`. The examples by topic in `amqp-tokio`'s documentation apply
//! here unchanged (with `futures_lite::StreamExt` for consumers), and the RabbitMQ tutorials
//! are in this crate's `examples/`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io::{self, IoSlice, Read};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use async_io::Async;
use bytes::BytesMut;
use futures_lite::io::{AsyncRead, AsyncWrite};
#[cfg(feature = "tls")]
use transport::TlsTransport;
use transport::{AsyncIoTimer, TcpTransport};

pub use amqp_client::amqp_proto;
pub use amqp_client::api::*;

#[cfg(not(feature = "tls"))]
use amqp_client::adapter::connect_with_transport;
use amqp_client::adapter::{Driver, Timer, Transport};
#[cfg(feature = "tls")]
use amqp_client::adapter::{MaybeTls, TlsClient, connect_with_tls_transport};

amqp_client::adapter_connect_api!("async-std, smol or any executor");

/// The driver of a connection made by this adapter, as handed to [`connect_with_spawner`].
#[cfg(not(feature = "tls"))]
pub type ConnectionDriver = Driver<TcpTransport, AsyncIoTimer>;

/// The driver of a connection made by this adapter, as handed to [`connect_with_spawner`]:
/// over plain TCP or TLS.
#[cfg(feature = "tls")]
pub type ConnectionDriver = Driver<MaybeTls<TcpTransport, TlsTransport>, AsyncIoTimer>;

/// Dials, spawns the driver on async-std's executor (see the crate docs for why) and runs
/// the handshake.
async fn dial_and_start(
    options: impl IntoConnectOptions,
) -> Result<amqp_client::Connection, ConnectError> {
    spawn_and_start(options, |driver| {
        async_global_executor::spawn(driver).detach();
        Ok(())
    })
    .await
}

/// Like [`connect_with`], but hands the connection's driver to `spawn` instead of starting a
/// thread for it, e.g. `|d| { smol::spawn(d).detach(); Ok(()) }` or
/// `|d| { async_std::task::spawn(d); Ok(()) }`. The driver must keep being polled for the
/// connection to work (heartbeats included): spawn it on an executor that keeps running.
pub async fn connect_with_spawner(
    options: impl IntoConnectOptions,
    spawn: impl FnOnce(ConnectionDriver) -> io::Result<()>,
) -> Result<Connection, ConnectError> {
    spawn_and_start(options, spawn).await.map(Connection::from)
}

async fn spawn_and_start(
    options: impl IntoConnectOptions,
    spawn: impl FnOnce(ConnectionDriver) -> io::Result<()>,
) -> Result<amqp_client::Connection, ConnectError> {
    let dial = |uri: &AmqpUri| dial(uri.host.clone(), uri.port);
    #[cfg(feature = "tls")]
    {
        let handshake = |client: TlsClient, tcp: TcpTransport| async move {
            let stream = futures_rustls::TlsConnector::from(client.config)
                .connect(client.server_name, tcp.into_inner())
                .await?;
            let (_, session) = stream.get_ref();
            tracing::debug!(
                protocol = ?session.protocol_version(),
                cipher_suite = ?session.negotiated_cipher_suite().map(|s| s.suite()),
                "amqp: TLS session established"
            );
            Ok(TlsTransport::new(stream))
        };
        connect_with_tls_transport(options, dial, handshake, AsyncIoTimer, spawn).await
    }
    #[cfg(not(feature = "tls"))]
    connect_with_transport(options, dial, AsyncIoTimer, spawn).await
}

/// Resolves `host` (off the executor, unless it is an IP address) and connects to the first
/// address that answers.
async fn dial(host: String, port: u16) -> io::Result<TcpTransport> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            blocking::unblock(move || Ok::<_, io::Error>((host, port).to_socket_addrs()?.collect()))
                .await?
        }
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host resolved to no address");
    for addr in addrs {
        match Async::<TcpStream>::connect(addr).await {
            Ok(stream) => {
                stream.get_ref().set_nodelay(true)?;
                return Ok(TcpTransport::new(stream));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The transport and timer this adapter's driver runs on: named by [`ConnectionDriver`], and
/// reusable by adapters built on `futures-io`.
pub mod transport {
    use super::*;

    /// A TLS stream (futures-rustls over `async-io` TCP) as the driver's [`Transport`].
    /// Feature `tls`.
    #[cfg(feature = "tls")]
    pub type TlsTransport = FuturesIoTransport<futures_rustls::client::TlsStream<Async<TcpStream>>>;

    /// Bytes read at most per call through the scratch buffer.
    const READ_CHUNK: usize = 64 * 1024;
    /// Bytes read at most per call straight into the caller's buffer (see
    /// [`TcpTransport`]).
    const DIRECT_MAX: usize = 1024 * 1024;

    /// Any `futures-io` stream (TLS by default) as the driver's [`Transport`]. Reads go
    /// through a reused scratch buffer (the stream API wants initialized memory), writes are
    /// vectored. Plain TCP uses [`TcpTransport`], which saves system calls.
    pub struct FuturesIoTransport<S> {
        stream: S,
        scratch: Box<[u8]>,
    }

    impl<S> FuturesIoTransport<S> {
        /// Wraps a connected stream.
        pub fn new(stream: S) -> Self {
            FuturesIoTransport {
                stream,
                scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            }
        }

        /// The stream.
        pub fn get_ref(&self) -> &S {
            &self.stream
        }

        /// Unwraps the stream.
        pub fn into_inner(self) -> S {
            self.stream
        }
    }

    impl<S: std::fmt::Debug> std::fmt::Debug for FuturesIoTransport<S> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_tuple("FuturesIoTransport")
                .field(&self.stream)
                .finish()
        }
    }

    impl<S> Transport for FuturesIoTransport<S>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        fn poll_read_buf(
            &mut self,
            cx: &mut Context<'_>,
            buf: &mut BytesMut,
            max: usize,
        ) -> Poll<io::Result<usize>> {
            let want = max.clamp(1, self.scratch.len());
            let polled = Pin::new(&mut self.stream).poll_read(cx, &mut self.scratch[..want]);
            if let Poll::Ready(Ok(n)) = polled {
                buf.extend_from_slice(&self.scratch[..n]);
            }
            polled
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
            Pin::new(&mut self.stream).poll_close(cx)
        }
    }

    /// A plain `async-io` TCP stream as the driver's [`Transport`].
    ///
    /// Reads wait for readiness before reading again once a read came back short (it
    /// drained the socket). `async-io` arms the socket for one event at a time and keeps the
    /// event it delivered until it is asked for readiness again, so reading first, as
    /// `AsyncRead` does, costs two reads that find nothing (EAGAIN) per wait besides the one
    /// re-arming `epoll_ctl`; asking first costs none. While the socket holds a lot (the last
    /// read filled its room), a read for more than 64 KiB (the rest of a large body, into the
    /// buffer the core lent for it) goes straight into that buffer after zeroing the room it
    /// reads into: one read instead of several through the scratch buffer, and zeroing is
    /// cheaper than the copy it saves.
    pub struct TcpTransport {
        /// The stream and the scratch buffer; writes go through it as they are.
        inner: FuturesIoTransport<Async<TcpStream>>,
        /// The last read drained the socket (came back short, or found nothing): ask for
        /// readiness before the next one.
        wait_first: bool,
        /// The last read filled all the room it was given: the socket holds a lot.
        last_full: bool,
    }

    impl TcpTransport {
        /// Wraps a connected stream.
        pub fn new(stream: Async<TcpStream>) -> Self {
            TcpTransport {
                inner: FuturesIoTransport::new(stream),
                wait_first: false,
                last_full: false,
            }
        }

        /// The stream.
        pub fn get_ref(&self) -> &Async<TcpStream> {
            self.inner.get_ref()
        }

        /// Unwraps the stream.
        pub fn into_inner(self) -> Async<TcpStream> {
            self.inner.into_inner()
        }

        /// One non-blocking read of at most `max` bytes appended to `buf`.
        fn read_once(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<(usize, usize)> {
            let FuturesIoTransport { stream, scratch } = &mut self.inner;
            let mut stream = stream.get_ref();
            // Only while the socket holds a lot: zeroing room that a short read leaves unused
            // (the read buffer's room can exceed 64 KiB too) would cost more than the copy.
            if max > READ_CHUNK && self.last_full {
                let want = max.min(DIRECT_MAX);
                let start = buf.len();
                buf.resize(start + want, 0);
                let read = stream.read(&mut buf[start..]);
                buf.truncate(start + *read.as_ref().unwrap_or(&0));
                read.map(|n| (n, want))
            } else {
                let want = max.clamp(1, READ_CHUNK);
                let n = stream.read(&mut scratch[..want])?;
                buf.extend_from_slice(&scratch[..n]);
                Ok((n, want))
            }
        }
    }

    impl std::fmt::Debug for TcpTransport {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_tuple("TcpTransport")
                .field(self.inner.get_ref())
                .finish()
        }
    }

    impl Transport for TcpTransport {
        fn poll_read_buf(
            &mut self,
            cx: &mut Context<'_>,
            buf: &mut BytesMut,
            max: usize,
        ) -> Poll<io::Result<usize>> {
            loop {
                if self.wait_first {
                    // Takes the event that woke us (if one did), or arms the socket.
                    ready!(self.inner.stream.poll_readable(cx))?;
                    self.wait_first = false;
                }
                match self.read_once(buf, max) {
                    Ok((n, want)) => {
                        self.wait_first = n > 0 && n < want;
                        self.last_full = n == want;
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_first = true,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }

        fn poll_write_vectored(
            &mut self,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.inner.poll_write_vectored(cx, bufs)
        }

        fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.inner.poll_flush(cx)
        }

        fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.inner.poll_shutdown(cx)
        }
    }

    /// `async-io`'s timer as the driver's [`Timer`]; works under any executor.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct AsyncIoTimer;

    impl Timer for AsyncIoTimer {
        fn now(&self) -> Instant {
            Instant::now()
        }

        fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>> {
            let timer = async_io::Timer::at(deadline);
            Box::pin(async move {
                timer.await;
            })
        }
    }
}
