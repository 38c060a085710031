//! Who drives a connection: leader/follower over one event loop ([`Loop`]: the poller and
//! the driver behind a mutex). A user thread that blocks on this connection (every wait goes
//! through `park::wait`) takes the loop if it is free and runs it itself while it waits, so
//! that what the broker sends for it is read and delivered on the thread that needs it, and
//! its own acks and publishes are written by that thread: no hand-off between threads. The
//! `amqp-io` thread runs the connect sequence and keeps the connection going whenever no user
//! thread waits (heartbeats, fire-and-forget commands, reads for busy consumers).
//!
//! # States
//!
//! `Signal::phase` says what the holder of the loop does: `IDLE` (nobody holds it), `POLLING`
//! (the driver is being polled: a wake only sets `notified`, checked before waiting) or
//! `WAITING` (in the poller: a wake writes the eventfd). The holder sets `WAITING` and then
//! checks `notified`; a waker sets `notified` and then reads the phase (all `SeqCst`), so a
//! wake is never lost between the two.
//!
//! * **A user thread drives** while its future is pending: it polls the driver and waits in
//!   the poller until its own parker is woken (its future may be ready: it releases the loop
//!   and polls it) or its deadline passes. A wake of its parker from another thread while it
//!   is in the poller rings the eventfd (`Parker::polling`).
//! * **Followers**: a thread that finds the loop taken registers as a follower and parks; the
//!   holder's dispatch wakes it when its future is ready, and every release wakes the first
//!   follower so that it can take the loop. The `amqp-io` thread, when it drives, gives the
//!   loop up after the turn in which it finds a follower.
//! * **Unattended**: after a release nobody drives. Wakes only set `notified` (no system
//!   call): a user thread that waits again soon takes the loop and does the work, without any
//!   hand-over. The `amqp-io` thread looks every [`UNATTENDED`] (up to [`UNATTENDED_MAX`]
//!   while user threads keep taking the loop) and takes the loop back when it stayed free for
//!   a whole interval, so the connection is never left alone longer than about
//!   `UNATTENDED_MAX + UNATTENDED`: heartbeats and flow control are far coarser.
//! * **Held for long**: when the same user thread held the loop for a whole interval, the
//!   `amqp-io` thread stops looking and sleeps until kicked (`io_asleep`): the release and
//!   any wake while the loop is free kick it, and it starts looking again.
//! * **Over**: when the driver finishes (or the poller fails) the loop is empty; the `amqp-io`
//!   thread ends, and waiting threads only park.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use crate::lock;
use crate::park::Parker;
use crate::reactor::{Handle, Poller};

/// How often the `amqp-io` thread looks whether the loop is unattended, at first.
const UNATTENDED: Duration = Duration::from_millis(1);
/// The longest interval between two looks, reached while user threads keep taking the loop.
const UNATTENDED_MAX: Duration = Duration::from_millis(4);

/// Nobody holds the loop.
const IDLE: u8 = 0;
/// The holder polls the driver.
const POLLING: u8 = 1;
/// The holder waits in the poller.
const WAITING: u8 = 2;

/// The connection's driver (the `amqp-client` one, over this crate's transport and timer).
pub(crate) type DriverTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What only the thread that drives touches.
pub(crate) struct Engine {
    poller: Poller,
    driver: Option<DriverTask>,
}

/// The flags shared by the threads of one loop; it is also the driver's waker.
pub(crate) struct Signal {
    eventfd: mio::Waker,
    /// The driver was woken since it was last polled.
    notified: AtomicBool,
    phase: AtomicU8,
    /// How many times a user thread took the loop (the `amqp-io` thread compares them).
    takes: AtomicU64,
    followers: AtomicUsize,
    /// The `amqp-io` thread sleeps until kicked.
    io_asleep: AtomicBool,
    ctl: Mutex<Ctl>,
    /// Where the `amqp-io` thread sleeps while it does not drive.
    io_cv: Condvar,
}

#[derive(Default)]
struct Ctl {
    followers: Vec<Arc<Parker>>,
    /// The driver has finished: the `amqp-io` thread ends.
    over: bool,
}

impl Signal {
    /// Interrupts a wait in the poller (or the next one).
    pub(crate) fn interrupt(&self) {
        // Fails only if the eventfd is gone, i.e. the loop has ended: nothing to wake.
        let _ = self.eventfd.wake();
    }

    fn kick_io(&self) {
        let _ctl = lock(&self.ctl);
        self.io_cv.notify_one();
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    /// Several wakes before the driver is polled again cost at most one system call; a wake
    /// while it is polled or while the loop is unattended costs none (see the module doc).
    fn wake_by_ref(self: &Arc<Self>) {
        if self.notified.swap(true, Ordering::SeqCst) {
            return;
        }
        match self.phase.load(Ordering::SeqCst) {
            POLLING => {}
            WAITING => self.interrupt(),
            _ => {
                if self.io_asleep.load(Ordering::SeqCst) {
                    self.kick_io();
                }
            }
        }
    }
}

/// A connection's event loop, shared by its `amqp-io` thread and its blocking handles.
pub(crate) struct Loop {
    engine: Mutex<Engine>,
    signal: Arc<Signal>,
    /// `signal` as a waker, for the driver.
    waker: Waker,
    handle: Handle,
}

impl std::fmt::Debug for Loop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loop")
            .field("phase", &self.signal.phase.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The loop, held; releasing it (on drop) wakes whoever must take it next.
struct Lease<'a> {
    engine: Option<MutexGuard<'a, Engine>>,
    signal: &'a Signal,
}

impl Lease<'_> {
    fn engine(&mut self) -> &mut Engine {
        // Only `drop` takes it out.
        self.engine
            .as_mut()
            .expect("a lease holds the engine until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let s = self.signal;
        s.phase.store(IDLE, Ordering::SeqCst);
        drop(self.engine.take());
        // Pairs with a follower's "register, then try to take".
        fence(Ordering::SeqCst);
        let followers = s.followers.load(Ordering::SeqCst) > 0;
        let io_asleep = s.io_asleep.load(Ordering::SeqCst);
        if followers || io_asleep {
            let ctl = lock(&s.ctl);
            if let Some(first) = ctl.followers.first() {
                first.wake_by_ref();
            }
            if io_asleep {
                s.io_cv.notify_one();
            }
        }
    }
}

impl Loop {
    pub(crate) fn new(poller: Poller, handle: Handle, eventfd: mio::Waker) -> Arc<Self> {
        let signal = Arc::new(Signal {
            eventfd,
            notified: AtomicBool::new(false),
            phase: AtomicU8::new(IDLE),
            takes: AtomicU64::new(0),
            followers: AtomicUsize::new(0),
            io_asleep: AtomicBool::new(false),
            ctl: Mutex::default(),
            io_cv: Condvar::new(),
        });
        Arc::new(Loop {
            engine: Mutex::new(Engine {
                poller,
                driver: None,
            }),
            waker: Waker::from(signal.clone()),
            signal,
            handle,
        })
    }

    /// The loop if it is free.
    fn try_take(&self) -> Option<Lease<'_>> {
        let engine = match self.engine.try_lock() {
            Ok(engine) => engine,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(Lease {
            engine: Some(engine),
            signal: &self.signal,
        })
    }

    /// Runs the connect sequence (`connecting`, which installs the driver in its slot once
    /// it has one) on the calling thread, driving the loop, until it completes. `None` if
    /// the loop ended first (the driver finished or the poller failed).
    pub(crate) fn connect<T>(
        &self,
        mut connecting: impl FnMut(&mut Context<'_>, &mut Option<DriverTask>) -> Option<T>,
    ) -> Option<T> {
        let mut lease = Lease {
            engine: Some(lock(&self.engine)),
            signal: &self.signal,
        };
        let mut outcome = None;
        self.drive(lease.engine(), None, None, &mut |cx, driver| {
            outcome = connecting(cx, driver);
            outcome.is_some()
        });
        if outcome.is_none() {
            // The driver ended first: the sequence has seen it and reports why.
            let mut cx = Context::from_waker(Waker::noop());
            outcome = connecting(&mut cx, &mut lease.engine().driver);
        }
        outcome
    }

    /// The `amqp-io` thread's part after the connect sequence: drive while no user thread
    /// waits, look after the loop while one may come back. Returns when the driver is over.
    pub(crate) fn run_io(&self) {
        loop {
            if let Some(mut lease) = self.try_take() {
                let engine = lease.engine();
                if engine.driver.is_none() {
                    return;
                }
                self.drive(engine, None, None, &mut |_, _| false);
            }
            if !self.io_idle() {
                return;
            }
        }
    }

    /// Waits until the `amqp-io` thread should try to take the loop: `false` once it is over.
    ///
    /// It takes a loop that stayed free for a whole interval, not one found free with work
    /// pending: a user thread that drives often is then mostly between two waits (handling
    /// what it received, acking it), and taking the loop from it would make its next wait a
    /// hand-over (it parks as a follower, the deliveries are read and handed to it by this
    /// thread). For the same reason the interval doubles, up to [`UNATTENDED_MAX`], while user
    /// threads keep taking the loop, so that a busy consumer's connection costs this thread
    /// fewer wake-ups; it is back to [`UNATTENDED`] once a look finds nothing changed. Work
    /// left on a free loop waits at most about two intervals.
    fn io_idle(&self) -> bool {
        let s = &*self.signal;
        let mut ctl = lock(&s.ctl);
        // (takes, free) at the previous look: the same twice means one interval unchanged.
        let mut before: Option<(u64, bool)> = None;
        let mut interval = UNATTENDED;
        loop {
            if ctl.over {
                return false;
            }
            let free = s.phase.load(Ordering::SeqCst) == IDLE;
            let now = (s.takes.load(Ordering::SeqCst), free);
            if before != Some(now) {
                interval = match before {
                    Some((takes, _)) if takes != now.0 => (interval * 2).min(UNATTENDED_MAX),
                    _ => UNATTENDED,
                };
                before = Some(now);
                ctl = s
                    .io_cv
                    .wait_timeout(ctl, interval)
                    .map_or_else(|p| p.into_inner().0, |(guard, _)| guard);
                continue;
            }
            if free {
                return true;
            }
            // The same user thread has held it for a whole interval: sleep until kicked.
            s.io_asleep.store(true, Ordering::SeqCst);
            if s.phase.load(Ordering::SeqCst) != IDLE {
                ctl = s
                    .io_cv
                    .wait(ctl)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            s.io_asleep.store(false, Ordering::SeqCst);
            before = None;
        }
    }

    /// Polls the driver and waits in the poller, over and over, until `extra` (polled first
    /// on each turn) says to stop, `parker` is woken (a user thread) or a follower waits (the
    /// `amqp-io` thread), `deadline` passes, or the driver is over.
    fn drive(
        &self,
        engine: &mut Engine,
        parker: Option<&Parker>,
        deadline: Option<Instant>,
        extra: &mut dyn FnMut(&mut Context<'_>, &mut Option<DriverTask>) -> bool,
    ) {
        let s = &*self.signal;
        let mut cx = Context::from_waker(&self.waker);
        loop {
            s.phase.store(POLLING, Ordering::SeqCst);
            s.notified.store(false, Ordering::SeqCst);
            let stop = extra(&mut cx, &mut engine.driver);
            if let Some(driver) = engine.driver.as_mut() {
                if driver.as_mut().poll(&mut cx).is_ready() {
                    engine.driver = None;
                    self.over();
                    return;
                }
            }
            let yielded = match parker {
                Some(parker) => parker.notified.load(Ordering::SeqCst),
                None => s.followers.load(Ordering::SeqCst) > 0,
            };
            if stop || yielded || deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            s.phase.store(WAITING, Ordering::SeqCst);
            if s.notified.load(Ordering::SeqCst) {
                continue;
            }
            if let Some(parker) = parker {
                parker.polling.store(true, Ordering::SeqCst);
                if parker.notified.load(Ordering::SeqCst) {
                    parker.polling.store(false, Ordering::SeqCst);
                    return;
                }
            }
            let until = match (deadline, self.handle.earliest()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let waited = engine
                .poller
                .wait(until.map(|t| t.saturating_duration_since(Instant::now())));
            if let Some(parker) = parker {
                parker.polling.store(false, Ordering::SeqCst);
            }
            self.handle.expire(Instant::now());
            if let Err(e) = waited {
                // The driver goes with the loop, ending the connection.
                tracing::error!(error = %e, "amqp: the connection's poller failed");
                engine.driver = None;
                self.over();
                return;
            }
        }
    }

    /// The driver is over: the `amqp-io` thread ends, followers stop waiting for the loop.
    fn over(&self) {
        let mut ctl = lock(&self.signal.ctl);
        ctl.over = true;
        self.signal.io_cv.notify_all();
        for follower in &ctl.followers {
            follower.wake_by_ref();
        }
    }
}

/// A waiting thread's part in the loop: it drives when it can, else follows.
pub(crate) struct Lead<'a> {
    event_loop: &'a Loop,
    parker: &'a Arc<Parker>,
    following: bool,
}

impl<'a> Lead<'a> {
    pub(crate) fn new(event_loop: &'a Loop, parker: &'a Arc<Parker>) -> Self {
        Lead {
            event_loop,
            parker,
            following: false,
        }
    }

    /// If the loop is free, drives it until this thread's parker is woken or `deadline`
    /// passes, and returns `true` (poll the future again). Otherwise registers this thread as
    /// a follower and returns `false` (park).
    pub(crate) fn turn(&mut self, deadline: Option<Instant>) -> bool {
        let l = self.event_loop;
        loop {
            if let Some(mut lease) = l.try_take() {
                let engine = lease.engine();
                if engine.driver.is_none() {
                    // Over (or not yet started, which a handle never sees): only park.
                    return false;
                }
                self.unfollow(false);
                l.signal.takes.fetch_add(1, Ordering::SeqCst);
                *lock(&self.parker.ring) = Some(l.signal.clone());
                l.drive(engine, Some(self.parker), deadline, &mut |_, _| false);
                *lock(&self.parker.ring) = None;
                return true;
            }
            if self.following {
                return false;
            }
            // Registered before trying again: a release in between wakes this thread.
            self.following = true;
            lock(&l.signal.ctl).followers.push(self.parker.clone());
            l.signal.followers.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
        }
    }

    /// Leaves the followers; `pass_on`: this thread leaves without taking the loop, so a free
    /// loop goes to the next follower.
    fn unfollow(&mut self, pass_on: bool) {
        if !std::mem::take(&mut self.following) {
            return;
        }
        let s = &*self.event_loop.signal;
        let mut ctl = lock(&s.ctl);
        ctl.followers.retain(|f| !Arc::ptr_eq(f, self.parker));
        s.followers.fetch_sub(1, Ordering::SeqCst);
        // Woken to take a free loop but leaving instead: pass the turn on.
        if pass_on && s.phase.load(Ordering::SeqCst) == IDLE {
            if let Some(first) = ctl.followers.first() {
                first.wake_by_ref();
            }
        }
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.unfollow(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Poll;
    use std::thread::{self, ThreadId};

    use crate::park;

    /// A stand-in for the driver and the broker: a request is answered by whichever thread
    /// polls the driver next, which the answer names.
    #[derive(Default)]
    struct Exchange {
        asked: bool,
        answer: Option<ThreadId>,
        user: Option<Waker>,
        driver: Option<Waker>,
        over: bool,
    }

    fn test_loop() -> (Arc<Loop>, Arc<Mutex<Exchange>>) {
        let (poller, handle, eventfd) = Poller::new().unwrap();
        let event_loop = Loop::new(poller, handle, eventfd);
        let exchange = Arc::new(Mutex::new(Exchange::default()));
        let seen = exchange.clone();
        let mut driver: Option<DriverTask> = Some(Box::pin(poll_fn(move |cx| {
            let mut x = lock(&seen);
            x.driver = Some(cx.waker().clone());
            if x.over {
                return Poll::Ready(());
            }
            if x.asked && x.answer.is_none() {
                x.answer = Some(thread::current().id());
                if let Some(user) = x.user.take() {
                    user.wake();
                }
            }
            Poll::Pending
        })));
        event_loop
            .connect(|_, slot| {
                *slot = driver.take();
                Some(())
            })
            .unwrap();
        (event_loop, exchange)
    }

    /// Asks, and waits for the answer.
    fn ask(exchange: &Mutex<Exchange>) -> impl Future<Output = ThreadId> + '_ {
        poll_fn(move |cx| {
            let mut x = lock(exchange);
            if let Some(id) = x.answer {
                return Poll::Ready(id);
            }
            x.asked = true;
            x.user = Some(cx.waker().clone());
            if let Some(driver) = &x.driver {
                driver.wake_by_ref();
            }
            Poll::Pending
        })
    }

    #[test]
    fn the_thread_that_waits_drives() {
        let (event_loop, exchange) = test_loop();
        let answered_by = park::block_on(ask(&exchange), Some(&event_loop));
        assert_eq!(answered_by, thread::current().id());
    }

    #[test]
    fn a_timed_wait_ends_while_driving() {
        let (event_loop, _exchange) = test_loop();
        let start = Instant::now();
        let timeout = Duration::from_millis(30);
        let out = park::block_on_timeout(std::future::pending::<()>(), timeout, Some(&event_loop));
        assert_eq!(out, None);
        assert!(start.elapsed() >= timeout);
    }

    #[test]
    fn the_io_thread_drives_when_nobody_waits_and_ends_with_the_driver() {
        let (event_loop, exchange) = test_loop();
        let io_loop = event_loop.clone();
        let io = thread::spawn(move || {
            io_loop.run_io();
            thread::current().id()
        });
        // Asked without waiting: only the I/O thread can answer. The channel bounds a hang.
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut x = lock(&exchange);
            x.asked = true;
            x.user = Some(Waker::from(Arc::new(Notify(Mutex::new(tx)))));
            if let Some(driver) = &x.driver {
                driver.wake_by_ref();
            }
        }
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let answered_by = lock(&exchange).answer;
        {
            let mut x = lock(&exchange);
            x.over = true;
            if let Some(driver) = &x.driver {
                driver.wake_by_ref();
            }
        }
        let io_id = io.join().unwrap();
        assert_eq!(answered_by, Some(io_id));
        // Over: a wait finds nothing to drive and only parks, until its deadline here.
        let out = park::block_on_timeout(
            std::future::pending::<()>(),
            Duration::from_millis(10),
            Some(&event_loop),
        );
        assert_eq!(out, None);
        assert!(lock(&event_loop.engine).driver.is_none());
    }

    /// A stand-in for a driver serving many requests: each poll answers every request asked
    /// so far.
    #[derive(Default)]
    struct Desk {
        next: u64,
        waiting: Vec<(u64, Waker)>,
        answered: std::collections::HashSet<u64>,
        driver: Option<Waker>,
        over: bool,
    }

    fn desk_loop() -> (Arc<Loop>, Arc<Mutex<Desk>>) {
        let (poller, handle, eventfd) = Poller::new().unwrap();
        let event_loop = Loop::new(poller, handle, eventfd);
        let desk = Arc::new(Mutex::new(Desk::default()));
        let seen = desk.clone();
        let mut driver: Option<DriverTask> = Some(Box::pin(poll_fn(move |cx| {
            let mut d = lock(&seen);
            d.driver = Some(cx.waker().clone());
            if d.over {
                return Poll::Ready(());
            }
            for (id, waker) in std::mem::take(&mut d.waiting) {
                d.answered.insert(id);
                waker.wake();
            }
            Poll::Pending
        })));
        event_loop
            .connect(|_, slot| {
                *slot = driver.take();
                Some(())
            })
            .unwrap();
        (event_loop, desk)
    }

    /// Asks once and waits for the answer.
    async fn ask_desk(desk: &Mutex<Desk>) {
        let mut id = None;
        poll_fn(|cx| {
            let mut d = lock(desk);
            let id = *id.get_or_insert_with(|| {
                d.next += 1;
                d.next
            });
            if d.answered.remove(&id) {
                return Poll::Ready(());
            }
            d.waiting.retain(|(asked, _)| *asked != id);
            d.waiting.push((id, cx.waker().clone()));
            if let Some(driver) = &d.driver {
                driver.wake_by_ref();
            }
            Poll::Pending
        })
        .await;
    }

    #[test]
    fn many_threads_waiting_on_one_loop_all_get_their_answers() {
        const THREADS: usize = 4;
        const EACH: usize = 2000;
        let (event_loop, desk) = desk_loop();
        let io_loop = event_loop.clone();
        let io = thread::spawn(move || io_loop.run_io());
        let (done, finished) = std::sync::mpsc::channel();
        for t in 0..THREADS {
            let (event_loop, desk, done) = (event_loop.clone(), desk.clone(), done.clone());
            thread::spawn(move || {
                for n in 0..EACH {
                    // Mix plain and timed waits, and threads that wait without the loop.
                    let l = (t != 0).then_some(&*event_loop);
                    if n % 2 == 0 {
                        park::block_on(ask_desk(&desk), l);
                    } else {
                        let answer =
                            park::block_on_timeout(ask_desk(&desk), Duration::from_secs(60), l);
                        assert!(answer.is_some());
                    }
                }
                done.send(()).unwrap();
            });
        }
        for _ in 0..THREADS {
            // A lost wake-up is a hang: bounded here.
            finished.recv_timeout(Duration::from_secs(60)).unwrap();
        }
        assert_eq!(lock(&desk).next, (THREADS * EACH) as u64);
        {
            let mut d = lock(&desk);
            d.over = true;
            if let Some(driver) = &d.driver {
                driver.wake_by_ref();
            }
        }
        io.join().unwrap();
    }

    /// A waker that sends on a channel.
    struct Notify(Mutex<std::sync::mpsc::Sender<()>>);

    impl Wake for Notify {
        fn wake(self: Arc<Self>) {
            let _ = lock(&self.0).send(());
        }
    }
}
