//! A connection's event loop parts: one `mio` poller (with its waker's eventfd registered),
//! the deadlines of the sleeps of the futures it runs, and the [`Handle`] those futures use to
//! register sockets and read the time. Whichever thread drives the connection (see
//! [`crate::lead`]) waits on the poller; with one connection per poller any event means "poll
//! the driver again": there is nothing to dispatch.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use amqp_client::adapter::Timer;
use mio::{Events, Interest, Poll as MioPoll, Registry, Token};

use crate::lock;

/// The token of every socket: any event means "poll the driver again".
const SOCKET: Token = Token(0);
/// The token of the waker.
const WAKE: Token = Token(1);
/// Readiness events taken per wait.
const EVENTS: usize = 16;

/// The poller and its event buffer; used only by the thread that drives.
pub(crate) struct Poller {
    poll: MioPoll,
    events: Events,
    readable: Arc<Readable>,
}

/// Whether the socket may have something to read: set when the poller reports it readable
/// (or closed), cleared by the transport when a read finds it drained. The socket is
/// registered edge-triggered, so an event that arrives while nobody waits in the poller stays
/// queued there: a read skipped because of this flag loses nothing, and saves the system call
/// that would only have said `WouldBlock` (every turn of a thread that takes the loop starts
/// with one otherwise).
#[derive(Debug, Default)]
pub(crate) struct Readable(AtomicBool);

impl Readable {
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self, readable: bool) {
        self.0.store(readable, Ordering::Release);
    }
}

impl Poller {
    /// A poller, the handle for the futures it serves, and the waker that interrupts it.
    pub(crate) fn new() -> io::Result<(Poller, Handle, mio::Waker)> {
        let poll = MioPoll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(&registry, WAKE)?;
        let handle = Handle {
            registry: Arc::new(registry),
            timers: Arc::default(),
            readable: Arc::default(),
        };
        let poller = Poller {
            poll,
            events: Events::with_capacity(EVENTS),
            readable: handle.readable.clone(),
        };
        Ok((poller, handle, waker))
    }

    /// Waits for a socket event, a wake, or `timeout`. A poller that fails (which epoll does
    /// not, short of a bug) returns the error.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
            _ => {}
        }
        let socket_readable = self.events.iter().any(|e| {
            e.token() == SOCKET && (e.is_readable() || e.is_read_closed() || e.is_error())
        });
        if socket_readable {
            self.readable.set(true);
        }
        Ok(())
    }
}

/// What the futures of a connection use to reach its poller and timers; cheap to clone and
/// `Send`, so dial closures and the timer can hold it.
#[derive(Clone, Debug)]
pub(crate) struct Handle {
    registry: Arc<Registry>,
    timers: Arc<Timers>,
    readable: Arc<Readable>,
}

impl Handle {
    /// Registers a socket for read and write readiness (edge-triggered: the transports read
    /// and write until `WouldBlock` before they return `Pending`).
    pub(crate) fn register(&self, source: &mut impl mio::event::Source) -> io::Result<()> {
        self.registry
            .register(source, SOCKET, Interest::READABLE | Interest::WRITABLE)?;
        self.readable.set(true);
        Ok(())
    }

    /// The read readiness of the socket registered last.
    pub(crate) fn readable(&self) -> Arc<Readable> {
        self.readable.clone()
    }

    /// The timer the driver and the connect sequence read the time from.
    pub(crate) fn timer(&self) -> IoTimer {
        IoTimer {
            timers: self.timers.clone(),
        }
    }

    /// The earliest pending deadline.
    pub(crate) fn earliest(&self) -> Option<Instant> {
        self.timers.earliest()
    }

    /// Forgets the deadlines up to `now`: their sleeps are due.
    pub(crate) fn expire(&self, now: Instant) {
        self.timers.expire(now);
    }
}

/// The deadlines of the pending sleeps, earliest first. A deadline leaves the set when it
/// passes (so a sleep nobody polls any more cannot make the loop spin) or when its sleep is
/// dropped.
#[derive(Debug, Default)]
struct Timers {
    set: Mutex<BTreeSet<(Instant, u64)>>,
    next_id: AtomicU64,
}

impl Timers {
    fn earliest(&self) -> Option<Instant> {
        lock(&self.set).first().map(|&(at, _)| at)
    }

    fn expire(&self, now: Instant) {
        let mut set = lock(&self.set);
        while set.first().is_some_and(|&(at, _)| at <= now) {
            set.pop_first();
        }
    }
}

/// The I/O thread's clock and timer for the driver: sleeps are deadlines the event loop
/// waits on.
#[derive(Debug, Clone)]
pub(crate) struct IoTimer {
    timers: Arc<Timers>,
}

impl Timer for IoTimer {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(Sleep {
            deadline,
            id: None,
            timers: self.timers.clone(),
        })
    }
}

/// A sleep until `deadline`; registers its deadline when first polled early.
struct Sleep {
    deadline: Instant,
    id: Option<u64>,
    timers: Arc<Timers>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        if self.id.is_none() {
            let id = self.timers.next_id.fetch_add(1, Ordering::Relaxed);
            lock(&self.timers.set).insert((self.deadline, id));
            self.id = Some(id);
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            lock(&self.timers.set).remove(&(self.deadline, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn a_sleep_registers_its_deadline_and_a_wait_ends_at_it() {
        let (mut poller, handle, _waker) = Poller::new().unwrap();
        let timer = handle.timer();
        let start = Instant::now();
        let mut sleep = timer.sleep_until(start + Duration::from_millis(30));
        let mut cx = Context::from_waker(Waker::noop());
        while sleep.as_mut().poll(&mut cx).is_pending() {
            let earliest = handle.earliest().unwrap();
            poller
                .wait(Some(earliest.saturating_duration_since(Instant::now())))
                .unwrap();
            handle.expire(Instant::now());
        }
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert!(handle.earliest().is_none());
    }

    #[test]
    fn a_wake_from_another_thread_ends_the_wait() {
        let (mut poller, _handle, waker) = Poller::new().unwrap();
        let waker = Arc::new(waker);
        let ringer = waker.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            ringer.wake().unwrap();
        });
        // Without the wake this would wait forever.
        poller.wait(None).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn a_dropped_sleep_leaves_no_deadline() {
        let (_poller, handle, _waker) = Poller::new().unwrap();
        let timer = handle.timer();
        let mut sleep = timer.sleep_until(Instant::now() + Duration::from_secs(60));
        assert!(
            sleep
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
        assert!(handle.earliest().is_some());
        drop(sleep);
        assert!(handle.earliest().is_none());
    }
}
