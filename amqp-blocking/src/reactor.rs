//! The `amqp-io` thread's event loop: one `mio` poller, the deadlines of the futures it runs,
//! and a waker that interrupts the poller. It runs a single future (a connection's connect
//! sequence, then its driver) and re-polls all of it on any readiness event, expired deadline
//! or wake: with one connection per thread there is nothing to dispatch.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use amqp_client::adapter::Timer;
use mio::{Events, Interest, Poll as Poller, Registry, Token};

use crate::lock;

/// The token of every socket: any event means "poll the future again".
const SOCKET: Token = Token(0);
/// The token of the waker.
const WAKE: Token = Token(1);
/// Readiness events taken per wait.
const EVENTS: usize = 16;

/// The poller and what wakes it; lives on the `amqp-io` thread.
pub(crate) struct Reactor {
    poller: Poller,
    events: Events,
    waker: Arc<IoWaker>,
    handle: Handle,
}

/// What the futures on the I/O thread use to reach its poller and timers; cheap to clone and
/// `Send`, so dial closures and the timer can hold it.
#[derive(Clone, Debug)]
pub(crate) struct Handle {
    registry: Arc<Registry>,
    timers: Arc<Timers>,
}

impl Handle {
    /// Registers a socket for read and write readiness (edge-triggered: the transports read
    /// and write until `WouldBlock` before they return `Pending`).
    pub(crate) fn register(&self, source: &mut impl mio::event::Source) -> io::Result<()> {
        self.registry
            .register(source, SOCKET, Interest::READABLE | Interest::WRITABLE)
    }

    /// The timer the driver and the connect sequence read the time from.
    pub(crate) fn timer(&self) -> IoTimer {
        IoTimer {
            timers: self.timers.clone(),
        }
    }
}

impl Reactor {
    pub(crate) fn new() -> io::Result<Self> {
        let poller = Poller::new()?;
        let registry = poller.registry().try_clone()?;
        let waker = Arc::new(IoWaker {
            waker: mio::Waker::new(&registry, WAKE)?,
            notified: AtomicBool::new(false),
            polling: AtomicBool::new(false),
        });
        Ok(Reactor {
            poller,
            events: Events::with_capacity(EVENTS),
            waker,
            handle: Handle {
                registry: Arc::new(registry),
                timers: Arc::default(),
            },
        })
    }

    pub(crate) fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Runs `future` to completion on this thread: poll it, then wait for a socket, the
    /// earliest deadline or a wake, and poll it again. A poller that fails (which epoll does
    /// not, short of a bug) ends the loop with the error.
    pub(crate) fn block_on<F: Future>(mut self, future: F) -> io::Result<F::Output> {
        let waker = Waker::from(self.waker.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        loop {
            // Cleared before polling, so a wake during the poll is seen below (and costs no
            // system call: see `IoWaker`).
            self.waker.polling.store(true, Ordering::SeqCst);
            self.waker.notified.store(false, Ordering::SeqCst);
            let polled = future.as_mut().poll(&mut cx);
            self.waker.polling.store(false, Ordering::SeqCst);
            if let Poll::Ready(output) = polled {
                return Ok(output);
            }
            if self.waker.notified.load(Ordering::SeqCst) {
                continue;
            }
            let timeout = self
                .handle
                .timers
                .earliest()
                .map(|at| at.saturating_duration_since(Instant::now()));
            match self.poller.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.handle.timers.expire(Instant::now());
        }
    }
}

/// Wakes the poller; several wakes before the loop polls again cost one system call, and a
/// wake while the loop is polling (the driver's own, or a user thread's while the driver
/// works) costs none: the loop checks `notified` after the poll. `SeqCst` on both flags makes
/// that check and the waker's check of `polling` see each other.
struct IoWaker {
    waker: mio::Waker,
    notified: AtomicBool,
    /// The loop is polling the future (set before `notified` is cleared).
    polling: AtomicBool,
}

impl Wake for IoWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.notified.swap(true, Ordering::SeqCst) && !self.polling.load(Ordering::SeqCst) {
            // Fails only if the eventfd is gone, i.e. the loop has ended: nothing to wake.
            let _ = self.waker.wake();
        }
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
    use std::time::Duration;

    #[test]
    fn a_sleep_ends_the_wait_at_its_deadline() {
        let reactor = Reactor::new().unwrap();
        let timer = reactor.handle().timer();
        let start = Instant::now();
        reactor
            .block_on(timer.sleep_until(start + Duration::from_millis(30)))
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_wake_from_another_thread_ends_the_wait() {
        let reactor = Reactor::new().unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let seen = flag.clone();
        let mut spawned = false;
        reactor
            .block_on(std::future::poll_fn(|cx| {
                if seen.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                if !spawned {
                    spawned = true;
                    let (flag, waker) = (flag.clone(), cx.waker().clone());
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(10));
                        flag.store(true, Ordering::Release);
                        waker.wake();
                    });
                }
                Poll::Pending
            }))
            .unwrap();
    }

    #[test]
    fn a_dropped_sleep_leaves_no_deadline() {
        let reactor = Reactor::new().unwrap();
        let timer = reactor.handle().timer();
        let mut sleep = timer.sleep_until(Instant::now() + Duration::from_secs(60));
        let waker = Waker::from(reactor.waker.clone());
        assert!(
            sleep
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        assert!(reactor.handle.timers.earliest().is_some());
        drop(sleep);
        assert!(reactor.handle.timers.earliest().is_none());
    }
}
