//! The async client glue (`amqp-client`: handles, waiters, the driver) against a
//! [`ScriptedPeer`], in memory and on a fake clock: no socket, no runtime, no sleep.
//!
//! [`ClientPair`] owns the connection's [`Driver`] and polls it itself; the test holds the
//! handles and polls the futures it starts as [`Task`]s, whose wakers count their wake-ups.
//! A test reads as the conversation does:
//!
//! ```
//! use amqp_conformance::client::{ClientPair, Task};
//! use amqp_proto::{Method, QueueDeclareOk, QueueDeclareOptions, FieldTable};
//!
//! let (mut pair, conn) = ClientPair::connected();
//! let ch = pair.open_channel(&conn);
//! let mut declare = Task::spawn(ch.queue_declare("jobs", QueueDeclareOptions::default()));
//! let Method::QueueDeclare(m) = pair.expect_method(1) else { panic!("not a declare") };
//! assert!(declare.poll().is_pending());
//! pair.send_method(1, QueueDeclareOk { queue: m.queue, message_count: 3, consumer_count: 0 });
//! assert_eq!(declare.wakes(), 1);
//! assert_eq!(declare.expect_ready().unwrap().message_count, 3);
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use amqp_client::{Channel, Connection, Consumer, Driver, Timer, Transport, start_connection};
use amqp_proto::{
    BasicConsumeOk, ChannelOpenOk, ConnectionConfig, ConnectionTune, Frame, Method, ShortString,
};
use bytes::BytesMut;

use crate::peer::{Published, Script, ScriptedPeer, play_handshake};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A waker that counts how often it was woken.
#[derive(Debug, Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A future the test polls by hand, with a waker that counts its wake-ups.
pub struct Task<'a, T> {
    future: Option<Pin<Box<dyn Future<Output = T> + 'a>>>,
    output: Option<T>,
    count: Arc<CountingWaker>,
    waker: Waker,
    seen: usize,
}

impl<T> std::fmt::Debug for Task<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("done", &self.future.is_none())
            .field("wakes", &self.wakes())
            .finish()
    }
}

impl<'a, T> Task<'a, T> {
    /// Wraps `future` and polls it once (so that its command is sent).
    pub fn spawn(future: impl Future<Output = T> + 'a) -> Self {
        let count = Arc::new(CountingWaker::default());
        let mut task = Task {
            future: Some(Box::pin(future)),
            output: None,
            waker: Waker::from(count.clone()),
            count,
            seen: 0,
        };
        let _ = task.poll_ready();
        task
    }

    fn poll_ready(&mut self) -> bool {
        self.seen = self.wakes();
        if let Some(future) = &mut self.future {
            if let Poll::Ready(v) = future.as_mut().poll(&mut Context::from_waker(&self.waker)) {
                self.output = Some(v);
                self.future = None;
            }
        }
        self.output.is_some()
    }

    /// Polls it (again); `Ready` hands the output over.
    pub fn poll(&mut self) -> Poll<T> {
        if self.poll_ready() {
            Poll::Ready(self.output.take().expect("output present"))
        } else {
            Poll::Pending
        }
    }

    /// Polls it, which must finish now.
    ///
    /// # Panics
    /// If it is still pending.
    #[track_caller]
    pub fn expect_ready(&mut self) -> T {
        match self.poll() {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("the task is still pending"),
        }
    }

    /// Polls it, which must still be pending.
    ///
    /// # Panics
    /// If it finished.
    #[track_caller]
    pub fn expect_pending(&mut self) {
        assert!(!self.poll_ready(), "the task finished");
    }

    /// How many times its waker was woken, in all.
    pub fn wakes(&self) -> usize {
        self.count.0.load(Ordering::SeqCst)
    }

    /// Whether it was woken since it was last polled.
    pub fn is_woken(&self) -> bool {
        self.wakes() > self.seen
    }
}

/// The fake clock, as the driver's [`Timer`]: time moves only when the test says so.
#[derive(Debug, Clone)]
pub struct FakeClock(Arc<Mutex<ClockState>>);

#[derive(Debug)]
struct ClockState {
    now: Instant,
    sleepers: Vec<(Instant, Waker)>,
}

impl FakeClock {
    /// A clock standing at `now`.
    pub fn new(now: Instant) -> Self {
        FakeClock(Arc::new(Mutex::new(ClockState {
            now,
            sleepers: Vec::new(),
        })))
    }

    /// Moves time forward, waking the sleeps that are due.
    pub fn advance(&self, by: Duration) {
        let mut state = lock(&self.0);
        state.now += by;
        let now = state.now;
        let due: Vec<Waker> = {
            let (due, rest) = state.sleepers.drain(..).partition(|(at, _)| *at <= now);
            state.sleepers = rest;
            due.into_iter().map(|(_, w)| w).collect()
        };
        drop(state);
        due.into_iter().for_each(Waker::wake);
    }
}

impl Timer for FakeClock {
    fn now(&self) -> Instant {
        lock(&self.0).now
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let clock = self.clone();
        Box::pin(std::future::poll_fn(move |cx| {
            let mut state = lock(&clock.0);
            if state.now >= deadline {
                return Poll::Ready(());
            }
            let waker = cx.waker();
            if !state
                .sleepers
                .iter()
                .any(|(at, w)| *at == deadline && w.will_wake(waker))
            {
                state.sleepers.push((deadline, waker.clone()));
            }
            Poll::Pending
        }))
    }
}

/// The two ends of an in-memory byte stream, as the [`MemoryTransport`] and the peer see them.
#[derive(Debug, Default)]
struct Link {
    /// Bytes the peer sent that the client has not read.
    to_client: BytesMut,
    /// Bytes the client wrote that the peer has not taken.
    to_peer: Vec<u8>,
    /// How many unread bytes the client may have in flight before its writes wait.
    pipe_capacity: Option<usize>,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// The peer closed its side: reads see end of stream once `to_client` is empty.
    eof: bool,
    /// The stream failed: every read and write fails with this.
    failed: Option<io::ErrorKind>,
    /// The client shut its write side down.
    shut_down: bool,
    reads: usize,
    writes: usize,
}

/// The client's end of an in-memory byte stream, as the driver's [`Transport`].
#[derive(Debug)]
pub struct MemoryTransport(Arc<Mutex<Link>>);

impl Transport for MemoryTransport {
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let mut link = lock(&self.0);
        if let Some(kind) = link.failed {
            return Poll::Ready(Err(kind.into()));
        }
        if link.to_client.is_empty() {
            if link.eof {
                return Poll::Ready(Ok(0));
            }
            link.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = link.to_client.len().min(max).max(1);
        let n = n.min(link.to_client.len());
        buf.extend_from_slice(&link.to_client.split_to(n));
        link.reads += 1;
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut link = lock(&self.0);
        if let Some(kind) = link.failed {
            return Poll::Ready(Err(kind.into()));
        }
        let mut room = link
            .pipe_capacity
            .map_or(usize::MAX, |cap| cap.saturating_sub(link.to_peer.len()));
        if room == 0 {
            link.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut written = 0;
        for buf in bufs {
            let n = buf.len().min(room);
            link.to_peer.extend_from_slice(&buf[..n]);
            written += n;
            room -= n;
            if room == 0 {
                break;
            }
        }
        link.writes += 1;
        Poll::Ready(Ok(written))
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.0).shut_down = true;
        Poll::Ready(Ok(()))
    }
}

/// An `amqp-client` connection wired to a [`ScriptedPeer`] through a [`MemoryTransport`],
/// on a [`FakeClock`]. The pair owns the [`Driver`] and polls it in [`ClientPair::run`].
pub struct ClientPair {
    driver: Option<Pin<Box<Driver<MemoryTransport, FakeClock>>>>,
    driver_waker: Arc<CountingWaker>,
    driver_polls: usize,
    finished: bool,
    link: Arc<Mutex<Link>>,
    /// The fake clock the connection runs on.
    pub clock: FakeClock,
    /// The broker side.
    pub peer: ScriptedPeer,
    /// Frames the client sent that the script has not looked at yet.
    pub inbox: VecDeque<Frame>,
    /// When set, the peer takes at most this many bytes per [`ClientPair::run`] step (a
    /// slow reader).
    pub peer_read_limit: Option<usize>,
}

impl std::fmt::Debug for ClientPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPair")
            .field("finished", &self.finished)
            .field("inbox", &self.inbox.len())
            .finish_non_exhaustive()
    }
}

impl ClientPair {
    /// Starts a connection; returns the pair and the handshake still to be scripted.
    pub fn start(
        config: ConnectionConfig,
    ) -> (Self, Task<'static, Result<Connection, amqp_proto::Error>>) {
        let clock = FakeClock::new(Instant::now());
        let link = Arc::new(Mutex::new(Link::default()));
        let now = clock.now();
        let (connecting, driver) =
            start_connection(config, now, MemoryTransport(link.clone()), clock.clone());
        let mut pair = ClientPair {
            driver: Some(Box::pin(driver)),
            driver_waker: Arc::new(CountingWaker::default()),
            driver_polls: 0,
            finished: false,
            link,
            clock,
            peer: ScriptedPeer::default(),
            inbox: VecDeque::new(),
            peer_read_limit: None,
        };
        let connecting = Task::spawn(connecting);
        pair.run();
        (pair, connecting)
    }

    /// A connection through the whole handshake (RabbitMQ's `connection.start`, tune
    /// channel_max 2047, frame_max 131072, heartbeat 60 s).
    pub fn connected() -> (Self, Connection) {
        Self::connected_with(ConnectionConfig::default())
    }

    /// Like [`ClientPair::connected`], with `config`.
    ///
    /// # Panics
    /// If the handshake does not go as scripted.
    #[track_caller]
    pub fn connected_with(config: ConnectionConfig) -> (Self, Connection) {
        let (mut pair, mut connecting) = Self::start(config);
        play_handshake(
            &mut pair,
            ConnectionTune {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            },
        );
        let conn = connecting.expect_ready().expect("handshake");
        (pair, conn)
    }

    /// Polls the driver and moves bytes both ways until neither side has anything left to
    /// do.
    pub fn run(&mut self) {
        loop {
            let woken = self.driver_waker.0.load(Ordering::SeqCst);
            self.poll_driver();
            let moved = self.transfer();
            // The driver woke itself (it yields after a burst of work): poll it again.
            let busy = !self.finished && self.driver_waker.0.load(Ordering::SeqCst) != woken;
            if !moved && !busy {
                break;
            }
        }
    }

    /// Polls the driver once and moves bytes once (at most [`ClientPair::peer_read_limit`]
    /// toward the peer): one turn of a slow network.
    pub fn step(&mut self) {
        self.poll_driver();
        self.transfer();
    }

    fn poll_driver(&mut self) {
        if let Some(driver) = &mut self.driver {
            if self.finished {
                return;
            }
            self.driver_polls += 1;
            let waker = Waker::from(self.driver_waker.clone());
            if driver
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
            {
                self.finished = true;
            }
        }
    }

    /// Moves what the client wrote to the peer and what the peer queued to the client.
    fn transfer(&mut self) -> bool {
        let mut link = lock(&self.link);
        let mut moved = false;
        if !link.to_peer.is_empty() {
            let n = self
                .peer_read_limit
                .map_or(link.to_peer.len(), |limit| limit.min(link.to_peer.len()));
            let bytes: Vec<u8> = link.to_peer.drain(..n).collect();
            self.inbox.extend(self.peer.receive(&bytes));
            if let Some(w) = link.write_waker.take() {
                w.wake();
            }
            moved = true;
        }
        let out = self.peer.take_output();
        if !out.is_empty() {
            link.to_client.extend_from_slice(&out);
            moved = true;
        }
        if !link.to_client.is_empty() || link.eof || link.failed.is_some() {
            if let Some(w) = link.read_waker.take() {
                w.wake();
            }
        }
        moved
    }

    /// The next frame the client sent.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.inbox.is_empty() {
            self.run();
        }
        self.inbox.pop_front()
    }

    /// The next frame the client sent, which must be a method on `channel`.
    ///
    /// # Panics
    /// If the client sent nothing, or something else.
    #[track_caller]
    pub fn expect_method(&mut self, channel: u16) -> Method {
        match self.next_frame() {
            Some(Frame::Method(ch, m)) if ch == channel => m,
            other => panic!("expected a method on channel {channel}, got {other:?}"),
        }
    }

    /// The next thing the client sent, which must be a whole published message.
    ///
    /// # Panics
    /// If the client sent anything else.
    #[track_caller]
    pub fn expect_published(&mut self, channel: u16) -> Published {
        Published::read(channel, || self.next_frame())
    }

    /// Asserts the client sent nothing more.
    ///
    /// # Panics
    /// If it did.
    #[track_caller]
    pub fn expect_silence(&mut self) {
        if let Some(f) = self.next_frame() {
            panic!("expected no frame from the client, got {f:?}");
        }
    }

    /// Sends a method from the peer and lets the client handle it.
    pub fn send_method(&mut self, channel: u16, method: impl Into<Method>) {
        self.peer.send(&Frame::Method(channel, method.into()));
        self.run();
    }

    /// Sends a `basic.deliver` of `body` from the peer and lets the client handle it.
    pub fn deliver(&mut self, channel: u16, consumer_tag: &str, delivery_tag: u64, body: &[u8]) {
        self.peer.deliver(channel, consumer_tag, delivery_tag, body);
        self.run();
    }

    /// Opens a channel through the whole exchange.
    ///
    /// # Panics
    /// If the client does not behave as expected.
    #[track_caller]
    pub fn open_channel(&mut self, conn: &Connection) -> Channel {
        let mut open = Task::spawn(conn.open_channel());
        let ch = match self.next_frame() {
            Some(Frame::Method(ch, Method::ChannelOpen(_))) => ch,
            other => panic!("expected channel.open, got {other:?}"),
        };
        self.send_method(ch, ChannelOpenOk::default());
        open.expect_ready().expect("channel opened")
    }

    /// Starts a consumer of queue `q` with consumer tag `tag` on `ch` through the whole
    /// exchange (basic.consume, then basic.consume-ok).
    ///
    /// # Panics
    /// If the client does not behave as expected.
    #[track_caller]
    pub fn start_consumer(&mut self, ch: &Channel, tag: &str) -> Consumer {
        let mut start = Task::spawn(ch.basic_consume("q", tag, Default::default()));
        let method = self.expect_method(ch.id().0);
        assert!(
            matches!(method, Method::BasicConsume(_)),
            "expected basic.consume, got {method:?}"
        );
        let consumer_tag = ShortString::try_from(tag).expect("a short consumer tag");
        self.send_method(ch.id().0, BasicConsumeOk { consumer_tag });
        start.expect_ready().expect("consumer started")
    }

    /// Moves the fake clock forward and lets the client act on it.
    pub fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
        self.run();
    }

    /// The peer closes its side of the stream (the client reads end of stream).
    pub fn peer_eof(&mut self) {
        lock(&self.link).eof = true;
        self.run();
    }

    /// The stream fails with `kind` for both reads and writes.
    pub fn fail_stream(&mut self, kind: io::ErrorKind) {
        lock(&self.link).failed = Some(kind);
        self.run();
    }

    /// Limits the bytes the client may have written that the peer has not taken (`None`:
    /// no limit). With [`ClientPair::peer_read_limit`] this makes a slow peer.
    pub fn set_pipe_capacity(&mut self, capacity: Option<usize>) {
        lock(&self.link).pipe_capacity = capacity;
    }

    /// Drops the driver, as a runtime does when it stops the task.
    pub fn drop_driver(&mut self) {
        self.driver = None;
    }

    /// Whether the driver has finished.
    pub fn driver_finished(&self) -> bool {
        self.finished
    }

    /// Whether the client shut its write side down.
    pub fn client_shut_down(&self) -> bool {
        lock(&self.link).shut_down
    }

    /// How often the driver was polled, read and wrote so far, and how often it was woken.
    pub fn driver_counts(&self) -> DriverCounts {
        let link = lock(&self.link);
        DriverCounts {
            polls: self.driver_polls,
            wakes: self.driver_waker.0.load(Ordering::SeqCst),
            reads: link.reads,
            writes: link.writes,
        }
    }
}

impl Script for ClientPair {
    fn send(&mut self, channel: u16, method: Method) {
        self.send_method(channel, method);
    }

    fn expect(&mut self, channel: u16) -> Method {
        self.expect_method(channel)
    }
}

/// What [`ClientPair::driver_counts`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DriverCounts {
    /// Times the pair polled the driver.
    pub polls: usize,
    /// Times the driver's waker was woken.
    pub wakes: usize,
    /// Successful reads from the transport.
    pub reads: usize,
    /// Successful writes to the transport.
    pub writes: usize,
}
