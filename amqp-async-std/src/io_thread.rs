//! The `amqp-io` thread of a plain-TCP connection: its driver polled by a loop of its own on
//! a private `mio` poll, with the socket registered once (edge-triggered).
//!
//! Why not `async_io::block_on`: its reactor is global, so each wait re-arms the socket
//! (`epoll_ctl`), connections' threads hand events to each other through the reactor lock,
//! and while any `block_on` runs async-io's helper thread wakes every 50 µs–10 ms. Measured
//! against RabbitMQ, those context switches were most of this adapter's cost per message
//! (bench/results/2026-11-29-asyncstd-wakeups.md). Here a wait costs one `epoll_wait`, a
//! handle wakes the thread with one `eventfd` write only when it sleeps, and a read that
//! does not fill the buffer proves the socket drained (no extra `read` to see `EAGAIN`).

use std::cell::{Cell, OnceCell};
use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use amqp_client::adapter::{Driver, Timer, Transport};
use bytes::BytesMut;
use mio::{Events, Interest, Token};

/// The driver of a connection run by this module.
pub(crate) type LoopDriver = Driver<LoopTransport, LoopTimer>;

const WAKE: Token = Token(0);
const SOCKET: Token = Token(1);
const READABLE: u8 = 1;
const WRITABLE: u8 = 2;
/// Bytes read at most per call (the read is copied into the core's buffer: no unsafe here).
const READ_CHUNK: usize = 64 * 1024;

/// What the loop shares with the transport and timer it polls: one connection per thread.
struct LoopState {
    registry: mio::Registry,
    /// Socket readiness seen and not yet used up (edge-triggered: cleared only when a call
    /// shows the socket has nothing more).
    ready: Cell<u8>,
    /// The earliest deadline a pending sleep asked for.
    deadline: Cell<Option<Instant>>,
}

thread_local! {
    static LOOP: OnceCell<LoopState> = const { OnceCell::new() };
}

/// Wakes the loop: an `eventfd` write, only when the loop sleeps or is about to.
struct LoopWaker {
    mio: mio::Waker,
    sleeping: AtomicBool,
    notified: AtomicBool,
}

impl Wake for LoopWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.notified.store(true, Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            if let Err(e) = self.mio.wake() {
                tracing::warn!(error = %e, "amqp: cannot wake the I/O thread");
            }
        }
    }
}

/// Starts the `amqp-io` thread running `driver` until it finishes.
pub(crate) fn spawn(driver: LoopDriver) -> io::Result<()> {
    let poll = mio::Poll::new()?;
    let registry = poll.registry().try_clone()?;
    let waker = Arc::new(LoopWaker {
        mio: mio::Waker::new(poll.registry(), WAKE)?,
        sleeping: AtomicBool::new(false),
        notified: AtomicBool::new(false),
    });
    std::thread::Builder::new()
        .name("amqp-io".into())
        .spawn(move || run(poll, registry, waker, driver))
        .map(drop)
}

fn run(mut poll: mio::Poll, registry: mio::Registry, wake: Arc<LoopWaker>, driver: LoopDriver) {
    LOOP.with(|state| {
        let state = state.get_or_init(|| LoopState {
            registry,
            ready: Cell::new(0),
            deadline: Cell::new(None),
        });
        let waker = Waker::from(wake.clone());
        let mut cx = Context::from_waker(&waker);
        let mut driver = pin!(driver);
        let mut events = Events::with_capacity(8);
        loop {
            wake.notified.store(false, Ordering::SeqCst);
            if driver.as_mut().poll(&mut cx).is_ready() {
                return;
            }
            let timeout = state
                .deadline
                .get()
                .map(|d| d.saturating_duration_since(Instant::now()));
            wake.sleeping.store(true, Ordering::SeqCst);
            // A wake between the poll and here found `sleeping` false: do not wait for it.
            if wake.notified.load(Ordering::SeqCst) {
                wake.sleeping.store(false, Ordering::SeqCst);
                continue;
            }
            let waited = poll.poll(&mut events, timeout);
            wake.sleeping.store(false, Ordering::SeqCst);
            match waited {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Dropping the driver ends the connection with a transport error.
                    tracing::error!(error = %e, "amqp: the I/O thread cannot wait for events");
                    return;
                }
            }
            for event in events.iter() {
                if event.token() == SOCKET {
                    let mut ready = state.ready.get();
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        ready |= READABLE;
                    }
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        ready |= WRITABLE;
                    }
                    state.ready.set(ready);
                }
            }
            if state.deadline.get().is_some_and(|d| Instant::now() >= d) {
                // Pending sleeps ask again when polled.
                state.deadline.set(None);
            }
        }
    });
}

/// A TCP stream on the loop of the thread that polls it (registered on first use).
#[derive(Debug)]
pub(crate) struct LoopTransport {
    stream: mio::net::TcpStream,
    registry: Option<mio::Registry>,
    scratch: Box<[u8]>,
}

impl LoopTransport {
    /// Wraps a connected stream (made non-blocking here).
    pub(crate) fn new(stream: TcpStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(LoopTransport {
            stream: mio::net::TcpStream::from_std(stream),
            registry: None,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
        })
    }

    /// Runs `f` with the socket's readiness, registering the socket on first use.
    fn with_ready<T>(
        &mut self,
        f: impl FnOnce(&mut Self, &Cell<u8>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        LOOP.with(|state| {
            let Some(state) = state.get() else {
                return Poll::Ready(Err(io::Error::other(
                    "amqp-async-std: a loop transport was polled outside its I/O thread",
                )));
            };
            if self.registry.is_none() {
                let registry = state.registry.try_clone()?;
                registry.register(
                    &mut self.stream,
                    SOCKET,
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                self.registry = Some(registry);
                state.ready.set(READABLE | WRITABLE);
            }
            f(self, &state.ready)
        })
    }
}

impl Drop for LoopTransport {
    fn drop(&mut self) {
        if let Some(registry) = &self.registry {
            let _ = registry.deregister(&mut self.stream);
        }
    }
}

impl Transport for LoopTransport {
    fn poll_read_buf(
        &mut self,
        _cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        self.with_ready(|this, ready| {
            if ready.get() & READABLE == 0 {
                return Poll::Pending;
            }
            // At most the spare capacity: the driver sizes it to what the next bytes are for (a
            // body's payload must not run into the next frame).
            let want = (buf.capacity() - buf.len()).clamp(1, this.scratch.len());
            loop {
                match (&this.stream).read(&mut this.scratch[..want]) {
                    Ok(n) => {
                        if n < want {
                            // Edge-triggered: a short read drained the socket; the next
                            // arrival raises a new event.
                            ready.set(ready.get() & !READABLE);
                        }
                        buf.extend_from_slice(&this.scratch[..n]);
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready.set(ready.get() & !READABLE);
                        return Poll::Pending;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        })
    }

    fn poll_write_vectored(
        &mut self,
        _cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.with_ready(|this, ready| {
            if ready.get() & WRITABLE == 0 {
                return Poll::Pending;
            }
            loop {
                match (&this.stream).write_vectored(bufs) {
                    Ok(n) => {
                        if n < bufs.iter().map(|b| b.len()).sum() {
                            // The send buffer is full; space freed later raises an event.
                            ready.set(ready.get() & !WRITABLE);
                        }
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready.set(ready.get() & !WRITABLE);
                        return Poll::Pending;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        })
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream.shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// The clock of a loop-driven connection: on its I/O thread a sleep only tells the loop how
/// long it may wait; anywhere else (the connect sequence runs on the caller's executor) it is
/// an `async-io` timer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LoopTimer;

impl Timer for LoopTimer {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(LoopSleep {
            deadline,
            fallback: None,
        })
    }
}

struct LoopSleep {
    deadline: Instant,
    fallback: Option<async_io::Timer>,
}

impl Future for LoopSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        let on_loop = LOOP.with(|state| match state.get() {
            Some(state) => {
                if state.deadline.get().is_none_or(|d| deadline < d) {
                    state.deadline.set(Some(deadline));
                }
                true
            }
            None => false,
        });
        if on_loop {
            // The loop polls the driver again once the deadline has passed.
            return Poll::Pending;
        }
        let timer = self
            .fallback
            .get_or_insert_with(|| async_io::Timer::at(deadline));
        Pin::new(timer).poll(cx).map(drop)
    }
}
