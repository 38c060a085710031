//! The driver: the one task that moves bytes between the transport and the core, and keeps
//! the core's time.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use smallvec::SmallVec;

use amqp_proto::recovery::Endpoint;

use crate::io::{Timer, Transport};
use crate::shared::SharedRef;
use crate::util::lock;

/// Room made in the read buffer before a read, when less than [`READ_MIN`] is left.
const READ_RESERVE: usize = 64 * 1024;
const READ_MIN: usize = 8 * 1024;
/// Chunks and bytes taken from the core for one vectored write batch.
const MAX_IOVECS: usize = 64;
const MAX_BATCH_BYTES: usize = 1 << 20;
/// How long the driver keeps writing what is left once the connection is over.
const FLUSH_AFTER_CLOSE: Duration = Duration::from_secs(1);
/// Loop iterations per poll before yielding to other tasks.
const SPIN_LIMIT: usize = 32;

type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A transport being opened.
pub(crate) type Dialing<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;

/// Opens a fresh transport for automatic recovery: to an endpoint, or (`None`) to the address
/// the connection was first opened with. Built by the connect sequence from the adapter's own
/// dial (and TLS handshake), so adapters only ever dial.
pub(crate) type Dialer<T> = Arc<dyn Fn(Option<&Endpoint>) -> Dialing<T> + Send + Sync>;

/// Bounds a redial whose endpoint names no connect timeout.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Drives one connection: spawn it on the runtime (see [`crate::start_connection`]). It
/// finishes after the connection is over and what was left to write is flushed (bounded by
/// one second). Dropping it early ends the connection with a transport error.
#[must_use = "the connection does nothing unless its driver is spawned"]
pub struct Driver<T, R> {
    shared: SharedRef,
    io: T,
    timer: Arc<R>,
    /// The core's read buffer, lent out while a read is pending.
    rbuf: BytesMut,
    /// The buffer a body is joined in, lent by the core for the next read (see
    /// [`amqp_proto::Connection::take_body_buffer`]); kept across polls until bytes come.
    body: Option<BytesMut>,
    /// The most bytes the next read into `rbuf` should take, from the core.
    read_limit: Option<usize>,
    /// Chunks taken from the core, being written.
    out: VecDeque<Bytes>,
    /// Bytes in `out`.
    out_bytes: usize,
    /// Tasks the last dispatch found items for, woken once the lock is released.
    wakes: Vec<Waker>,
    /// Writes and polls not yet added to the shared counters.
    writes: u64,
    polls: u64,
    need_flush: bool,
    read_done: bool,
    write_failed: bool,
    sleep: Option<(Instant, Sleep)>,
    /// When the connection closed: flush until then.
    flush_deadline: Option<(Instant, Sleep)>,
    finished: bool,
    /// The connection's span, entered while the driver runs.
    span: tracing::Span,
    /// How to reconnect, when automatic recovery is on.
    dialer: Option<Dialer<T>>,
    /// A reconnection under way, with its connect deadline.
    dialing: Option<(Dialing<T>, Sleep)>,
}

impl<T, R> fmt::Debug for Driver<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("queued_chunks", &self.out.len())
            .field("read_done", &self.read_done)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

enum Step {
    Progress,
    Idle,
    Finished,
}

impl<T: Transport, R: Timer> Driver<T, R> {
    pub(crate) fn new(shared: SharedRef, io: T, timer: Arc<R>, span: tracing::Span) -> Self {
        Driver {
            span,
            shared,
            io,
            timer,
            rbuf: BytesMut::new(),
            body: None,
            read_limit: None,
            out: VecDeque::new(),
            out_bytes: 0,
            wakes: Vec::new(),
            writes: 0,
            polls: 0,
            need_flush: false,
            read_done: false,
            write_failed: false,
            sleep: None,
            flush_deadline: None,
            finished: false,
            dialer: None,
            dialing: None,
        }
    }

    /// Lets the driver reconnect when the core asks ([`amqp_proto::Event::Dial`]).
    pub(crate) fn set_dialer(&mut self, dialer: Dialer<T>) {
        self.dialer = Some(dialer);
    }

    /// Automatic recovery: when the core asks to dial, opens a fresh transport in place of the
    /// old one and hands it over. `None` when there is nothing to do, so the normal step runs.
    fn redial(&mut self, cx: &mut Context<'_>) -> Option<Step> {
        if self.dialing.is_none() {
            let endpoint = lock(&self.shared).dial_request.take()?;
            let now = self.timer.now();
            let Some(dialer) = &self.dialer else {
                let mut s = lock(&self.shared);
                s.core.handle_transport_error(
                    io::ErrorKind::Unsupported,
                    "this connection was started without a way to redial".into(),
                    now,
                );
                s.dispatch();
                return Some(Step::Progress);
            };
            let limit = endpoint
                .as_ref()
                .map_or(DIAL_TIMEOUT, |e| e.connect_timeout);
            tracing::info!(endpoint = ?endpoint.as_ref().map(ToString::to_string), "amqp: reconnecting");
            self.dialing = Some((
                dialer(endpoint.as_ref()),
                self.timer.sleep_until(now + limit),
            ));
            // What was left for the old transport is dropped with it.
            self.out.clear();
            self.need_flush = false;
            self.read_done = true;
            self.write_failed = false;
            self.rbuf.clear();
            self.body = None;
            self.read_limit = None;
        }
        if lock(&self.shared).core.is_closed() {
            // Closed while dialling: stop, and let the normal step finish the driver.
            self.dialing = None;
            return None;
        }
        let (dial, deadline) = self.dialing.as_mut()?;
        let result = match dial.as_mut().poll(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
                }
                Poll::Pending => return Some(Step::Idle),
            },
        };
        self.dialing = None;
        let now = self.timer.now();
        let mut s = lock(&self.shared);
        match result {
            Ok(io) => {
                self.io = io;
                self.read_done = false;
                let _ = s.core.transport_ready(now);
            }
            Err(e) => s.core.handle_transport_error(e.kind(), e.to_string(), now),
        }
        s.dispatch();
        Some(Step::Progress)
    }

    fn fail_transport(&mut self, e: &io::Error) {
        tracing::debug!(error = %e, "amqp: transport write failed");
        self.write_failed = true;
        self.read_done = true;
        self.out.clear();
        self.out_bytes = 0;
        let mut s = lock(&self.shared);
        s.core
            .handle_transport_error(e.kind(), e.to_string(), self.timer.now());
        s.dispatch();
    }

    /// One read, where the core wants it: into the body it lent, or into the read buffer.
    fn read(&mut self, cx: &mut Context<'_>) -> bool {
        let (result, lent) = if let Some(mut body) = self.body.take() {
            // Its spare capacity is the payload still to come: the read takes no more.
            let max = body.capacity() - body.len();
            match self.io.poll_read_buf(cx, &mut body, max) {
                Poll::Pending => {
                    self.body = Some(body);
                    return false;
                }
                Poll::Ready(result) => (result, Some(body)),
            }
        } else {
            if self.rbuf.capacity() - self.rbuf.len() < READ_MIN {
                self.rbuf.reserve(READ_RESERVE);
            }
            let room = self.rbuf.capacity() - self.rbuf.len();
            let max = self.read_limit.map_or(room, |limit| limit.clamp(1, room));
            match self.io.poll_read_buf(cx, &mut self.rbuf, max) {
                Poll::Pending => return false,
                Poll::Ready(result) => (result, None),
            }
        };
        let mut s = lock(&self.shared);
        let now = self.timer.now();
        match lent {
            // Given back whatever the read did, so that the core never waits for it.
            Some(body) => s.core.process_body(body, &mut self.rbuf, now),
            None => {
                if let Ok(n @ 1..) = &result {
                    tracing::trace!(bytes = n, "amqp: read");
                    // The core decodes in place: received bodies stay slices of this buffer.
                    s.core.process_input(&mut self.rbuf, now);
                }
            }
        }
        match result {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(0) => {
                s.counters.reads += 1;
                self.read_done = true;
                s.core.handle_eof(now);
            }
            Ok(_) => s.counters.reads += 1,
            Err(e) => {
                s.counters.reads += 1;
                self.read_done = true;
                s.core.handle_transport_error(e.kind(), e.to_string(), now);
            }
        }
        if !self.read_done {
            // Where the next read goes, decided now that the lock is held anyway.
            self.body = s.core.take_body_buffer(&mut self.rbuf);
            self.read_limit = s.core.input_read_limit();
        }
        s.dispatch_deferred(&mut self.wakes);
        drop(s);
        for w in self.wakes.drain(..) {
            w.wake();
        }
        true
    }

    fn write(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while !self.out.is_empty() {
            let result = {
                let iov: SmallVec<[IoSlice<'_>; MAX_IOVECS]> =
                    self.out.iter().map(|b| IoSlice::new(b)).collect();
                self.io.poll_write_vectored(cx, &iov)
            };
            match result {
                Poll::Pending => break,
                Poll::Ready(Ok(0)) => {
                    self.fail_transport(&io::ErrorKind::WriteZero.into());
                    return true;
                }
                Poll::Ready(Ok(mut n)) => {
                    tracing::trace!(bytes = n, "amqp: wrote");
                    progress = true;
                    self.writes += 1;
                    self.need_flush = true;
                    self.out_bytes -= n.min(self.out_bytes);
                    while n > 0 {
                        let Some(front) = self.out.front_mut() else {
                            break;
                        };
                        if front.len() > n {
                            front.advance(n);
                            break;
                        }
                        n -= front.len();
                        self.out.pop_front();
                    }
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => {
                    self.fail_transport(&e);
                    return true;
                }
            }
        }
        if self.need_flush && self.out.is_empty() {
            match self.io.poll_flush(cx) {
                Poll::Ready(Ok(())) => self.need_flush = false,
                Poll::Ready(Err(e)) => {
                    self.fail_transport(&e);
                    return true;
                }
                Poll::Pending => {}
            }
        }
        progress
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Step {
        if let Some(step) = self.redial(cx) {
            return step;
        }
        let mut progress = false;
        if !self.read_done {
            progress |= self.read(cx);
        }

        // Take output, note the state and the next deadline: one lock.
        let (closed, pending_output, deadline) = {
            let mut s = lock(&self.shared);
            if self.write_failed {
                let now = self.timer.now();
                while s.core.poll_transmit(now).is_some() {}
            } else if self.out.is_empty() {
                let now = self.timer.now();
                while self.out.len() < MAX_IOVECS && self.out_bytes < MAX_BATCH_BYTES {
                    match s.core.poll_transmit(now) {
                        Some(chunk) => {
                            self.out_bytes += chunk.len();
                            self.out.push_back(chunk);
                        }
                        None => break,
                    }
                }
            }
            s.writer_holds(self.out_bytes);
            s.counters.writes += std::mem::take(&mut self.writes);
            s.counters.driver_polls += std::mem::take(&mut self.polls);
            s.park_driver(cx.waker(), self.out.is_empty());
            (s.core.is_closed(), s.core.wants_write(), s.next_deadline())
        };

        if !self.out.is_empty() || self.need_flush {
            progress |= self.write(cx);
        }

        if closed {
            self.read_done = true;
            self.sleep = None;
            let now = self.timer.now();
            let (until, sleep) = self.flush_deadline.get_or_insert_with(|| {
                (
                    now + FLUSH_AFTER_CLOSE,
                    self.timer.sleep_until(now + FLUSH_AFTER_CLOSE),
                )
            });
            let out_of_time = now >= *until || sleep.as_mut().poll(cx).is_ready();
            let flushed = self.out.is_empty() && !self.need_flush && !pending_output;
            if flushed || self.write_failed || out_of_time {
                if self.write_failed || out_of_time {
                    return Step::Finished;
                }
                return match self.io.poll_shutdown(cx) {
                    Poll::Ready(_) => Step::Finished,
                    Poll::Pending => Step::Idle,
                };
            }
            return if progress { Step::Progress } else { Step::Idle };
        }

        match deadline {
            None => self.sleep = None,
            Some(t) => {
                if self.sleep.as_ref().is_none_or(|(armed, _)| t < *armed) {
                    self.sleep = Some((t, self.timer.sleep_until(t)));
                }
            }
        }
        if let Some((_, sleep)) = &mut self.sleep {
            if sleep.as_mut().poll(cx).is_ready() {
                self.sleep = None;
                lock(&self.shared).handle_timeout(self.timer.now());
                progress = true;
            }
        }

        if progress { Step::Progress } else { Step::Idle }
    }

    fn finish(&mut self) {
        self.finished = true;
        let mut s = lock(&self.shared);
        s.driver_done = true;
    }
}

impl<T: Transport, R: Timer> Future for Driver<T, R> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let _span = this.span.clone().entered();
        if this.finished {
            return Poll::Ready(());
        }
        this.polls += 1;
        for _ in 0..SPIN_LIMIT {
            match this.step(cx) {
                Step::Progress => {}
                Step::Idle => return Poll::Pending,
                Step::Finished => {
                    this.finish();
                    return Poll::Ready(());
                }
            }
        }
        // Busy: let other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T, R> Drop for Driver<T, R> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut s = lock(&self.shared);
        s.driver_done = true;
        if !s.core.is_closed() {
            let now = s.now();
            s.core.handle_transport_error(
                io::ErrorKind::Other,
                "the connection's driver task was stopped".into(),
                now,
            );
            s.dispatch();
        }
    }
}
