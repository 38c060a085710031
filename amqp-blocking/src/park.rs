//! Blocking the calling thread on a future of `amqp-client`: poll it; while it is pending,
//! run the connection's event loop on this thread if nobody else does (see [`crate::lead`]),
//! else park until its waker (or the thread that drives) unparks the thread; poll again.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::lead::{Lead, Loop, Signal};
use crate::lock;

/// Wakes the waiting thread; several wakes before it polls again cost one unpark. While the
/// thread waits in its connection's poller instead of parking, a wake from another thread
/// interrupts the poller.
pub(crate) struct Parker {
    thread: Thread,
    pub(crate) notified: AtomicBool,
    /// The thread is in (or about to enter) its connection's poller: ring `ring`.
    pub(crate) polling: AtomicBool,
    /// The loop this thread drives, set when it takes the loop.
    pub(crate) ring: Mutex<Option<Arc<Signal>>>,
}

impl Parker {
    fn new() -> Arc<Self> {
        Arc::new(Parker {
            thread: thread::current(),
            notified: AtomicBool::new(false),
            polling: AtomicBool::new(false),
            ring: Mutex::new(None),
        })
    }
}

impl Wake for Parker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.notified.swap(true, Ordering::SeqCst) {
            return;
        }
        // `SeqCst` pairs with the driving thread's "set `polling`, then check `notified`".
        if self.polling.load(Ordering::SeqCst) {
            if let Some(signal) = lock(&self.ring).as_ref() {
                signal.interrupt();
            }
        } else {
            self.thread.unpark();
        }
    }
}

thread_local! {
    /// This thread's parker, made once; `in_use` guards against a nested wait sharing it.
    static PARKER: (Arc<Parker>, Cell<bool>) = (Parker::new(), Cell::new(false));
}

/// Runs `f` with a parker for the current thread.
fn with_parker<T>(f: impl FnOnce(&Arc<Parker>) -> T) -> T {
    PARKER.with(|(parker, in_use)| {
        if in_use.replace(true) {
            return f(&Parker::new());
        }
        let out = f(parker);
        in_use.set(false);
        out
    })
}

/// Polls `future` until it is ready or `deadline` passes (`None`); drives `event_loop` in
/// between whenever it is free.
fn wait<F: Future>(
    future: F,
    deadline: Option<Instant>,
    event_loop: Option<&Loop>,
) -> Option<F::Output> {
    with_parker(|parker| {
        let waker = Waker::from(parker.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        let mut lead = event_loop.map(|l| Lead::new(l, parker));
        loop {
            // Cleared before polling, so a wake during the poll is seen below.
            parker.notified.store(false, Ordering::SeqCst);
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return Some(output);
            }
            if parker.notified.load(Ordering::SeqCst) {
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            // Drove until woken (poll the future again), or must park.
            if lead.as_mut().is_some_and(|l| l.turn(deadline)) {
                continue;
            }
            match deadline {
                None => thread::park(),
                Some(deadline) => {
                    thread::park_timeout(deadline.saturating_duration_since(Instant::now()))
                }
            }
        }
    })
}

/// Blocks the calling thread until `future` completes, driving `event_loop` while it waits.
pub(crate) fn block_on<F: Future>(future: F, event_loop: Option<&Loop>) -> F::Output {
    let mut future = pin!(future);
    loop {
        // Without a deadline `wait` only returns with the output; the loop keeps the types
        // honest without an unwrap.
        if let Some(output) = wait(future.as_mut(), None, event_loop) {
            return output;
        }
    }
}

/// Blocks on `future` for at most `timeout`; `None` when the time ran out first.
pub(crate) fn block_on_timeout<F: Future>(
    future: F,
    timeout: Duration,
    event_loop: Option<&Loop>,
) -> Option<F::Output> {
    // A timeout too large for the clock waits without one.
    let deadline = Instant::now().checked_add(timeout);
    if deadline.is_none() {
        return Some(block_on(future, event_loop));
    }
    wait(future, deadline, event_loop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_timeout_ends_a_future_that_never_completes() {
        let start = Instant::now();
        let out = block_on_timeout(
            std::future::pending::<()>(),
            Duration::from_millis(20),
            None,
        );
        assert_eq!(out, None);
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn a_wake_from_another_thread_completes_the_wait() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = polls.clone();
        let mut spawned = false;
        let done = Arc::new(AtomicBool::new(false));
        let out = block_on(
            std::future::poll_fn(|cx| {
                counted.fetch_add(1, Ordering::Relaxed);
                if done.load(Ordering::Acquire) {
                    return Poll::Ready(7);
                }
                if !spawned {
                    spawned = true;
                    let (done, waker) = (done.clone(), cx.waker().clone());
                    thread::spawn(move || {
                        thread::sleep(Duration::from_millis(10));
                        done.store(true, Ordering::Release);
                        waker.wake();
                    });
                }
                Poll::Pending
            }),
            None,
        );
        assert_eq!(out, 7);
        assert!(polls.load(Ordering::Relaxed) >= 2);
    }

    #[test]
    fn a_nested_wait_gets_its_own_parker() {
        let out = block_on(async { block_on(async { 3 }, None) + 1 }, None);
        assert_eq!(out, 4);
    }
}
