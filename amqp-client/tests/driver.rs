//! The runtime-agnostic layer driven by a transport defined here (tokio TCP with counters),
//! against the RabbitMQ broker at 127.0.0.1:5672 (guest/guest), or `$AMQP_URI`. These fail,
//! not skip, when no broker answers.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use amqp_client::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, ConfirmSelectOptions,
    ConnectOptions, Connection, Error, ErrorKind, QueueDeclareOptions, Timer, Transport,
    start_connection,
};
use bytes::{BufMut, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

struct Counting {
    stream: TcpStream,
    writes: Arc<AtomicUsize>,
}

impl Transport for Counting {
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read_buf(&mut buf.limit(max)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if r.is_ready() {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

struct Sleeper;

impl Timer for Sleeper {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

struct Client {
    conn: Connection,
    driver: JoinHandle<()>,
    writes: Arc<AtomicUsize>,
}

async fn connect(adjust: impl FnOnce(&mut ConnectOptions)) -> Client {
    let uri = std::env::var("AMQP_URI")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let mut options = ConnectOptions::parse(&uri).unwrap();
    adjust(&mut options);
    let started = Instant::now();
    let stream = TcpStream::connect((options.uri.host.as_str(), options.uri.port))
        .await
        .unwrap_or_else(|e| panic!("no broker at {uri}: {e}"));
    stream.set_nodelay(true).unwrap();
    let writes = Arc::new(AtomicUsize::new(0));
    let transport = Counting {
        stream,
        writes: writes.clone(),
    };
    let (connecting, driver) = start_connection(options.config, started, transport, Sleeper);
    let driver = tokio::spawn(driver);
    let conn = connecting.await.expect("handshake");
    Client {
        conn,
        driver,
        writes,
    }
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("timed out")
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn publishes_are_coalesced_into_few_writes() {
    within(async {
        let c = connect(|_| {}).await;
        let ch = c.conn.open_channel().await.unwrap();
        let q = ch.queue_declare("", exclusive()).await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let before = c.writes.load(Ordering::Relaxed);
        let props = BasicProperties::default();
        for _ in 0..10_000 {
            let confirm = ch
                .basic_publish(
                    "",
                    &q.name,
                    BasicPublishOptions::default(),
                    &props,
                    &b"0123456789abcdef"[..],
                )
                .await
                .unwrap();
            drop(confirm);
        }
        assert!(ch.wait_for_confirms().await.unwrap());
        let writes = c.writes.load(Ordering::Relaxed) - before;
        assert!(writes <= 50, "10000 publishes took {writes} writes");
        c.conn.close().await.unwrap();
        // The driver stops once the connection is over.
        within(c.driver).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn backpressure_makes_publishers_wait_not_fail() {
    within(async {
        let c = connect(|o| o.config.high_water_mark = 16 * 1024).await;
        let ch = c.conn.open_channel().await.unwrap();
        let q = ch.queue_declare("", exclusive()).await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let body = bytes::Bytes::from(vec![7u8; 1000]);
        let mut confirms = Vec::new();
        for _ in 0..5_000 {
            confirms.push(
                ch.basic_publish(
                    "",
                    &q.name,
                    BasicPublishOptions::default(),
                    &BasicProperties::default(),
                    body.clone(),
                )
                .await
                .unwrap(),
            );
        }
        for confirm in confirms {
            assert!(confirm.await.is_ack());
        }
        let info = ch
            .queue_declare(
                &q.name,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(info.message_count, 5_000);
        c.conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_stopped_driver_fails_every_waiter() {
    within(async {
        let c = connect(|_| {}).await;
        let ch = c.conn.open_channel().await.unwrap();
        let q = ch.queue_declare("", exclusive()).await.unwrap();
        let mut consumer = ch
            .basic_consume(&q.name, "", BasicConsumeOptions::default())
            .await
            .unwrap();
        let waiting = tokio::spawn(async move { consumer.next().await });
        tokio::task::yield_now().await;

        c.driver.abort();
        let err = waiting.await.unwrap().expect("an item").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionBroken, "{err}");
        let why = c.conn.closed().await.expect("an error");
        assert_eq!(why, err);
        // Asking afterwards fails at once with the same reason.
        let again = ch.queue_declare("", exclusive()).await.unwrap_err();
        assert_eq!(again, err);
        assert!(matches!(c.conn.close().await, Err(Error::Transport { .. })));
    })
    .await;
}

#[tokio::test]
async fn heartbeats_keep_an_idle_connection_alive() {
    within(async {
        let c = connect(|o| o.config.heartbeat = 1).await;
        assert_eq!(c.conn.tuning().heartbeat, 1);
        let before = c.writes.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(c.conn.is_open());
        // Heartbeats went out every half interval or so.
        let writes = c.writes.load(Ordering::Relaxed) - before;
        assert!(writes >= 3, "only {writes} writes while idle");
        let ch = c.conn.open_channel().await.unwrap();
        ch.queue_declare("", exclusive()).await.unwrap();
        c.conn.close().await.unwrap();
    })
    .await;
}
