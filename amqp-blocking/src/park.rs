//! Blocking the calling thread on a future of `amqp-client`: poll it, park until its waker
//! unparks the thread, poll again. The I/O thread does the work; user threads only wait.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Unparks the waiting thread; several wakes before it polls again cost one unpark.
struct Parker {
    thread: Thread,
    notified: AtomicBool,
}

impl Wake for Parker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            self.thread.unpark();
        }
    }
}

thread_local! {
    /// This thread's parker, made once; `in_use` guards against a nested wait sharing it.
    static PARKER: (Arc<Parker>, Cell<bool>) = (
        Arc::new(Parker { thread: thread::current(), notified: AtomicBool::new(false) }),
        Cell::new(false),
    );
}

/// Runs `f` with a parker for the current thread.
fn with_parker<T>(f: impl FnOnce(&Arc<Parker>) -> T) -> T {
    PARKER.with(|(parker, in_use)| {
        if in_use.replace(true) {
            let fresh = Arc::new(Parker {
                thread: thread::current(),
                notified: AtomicBool::new(false),
            });
            return f(&fresh);
        }
        let out = f(parker);
        in_use.set(false);
        out
    })
}

/// Polls `future` until it is ready or `deadline` passes (`None`).
fn wait<F: Future>(future: F, deadline: Option<Instant>) -> Option<F::Output> {
    with_parker(|parker| {
        let waker = Waker::from(parker.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        loop {
            // Cleared before polling, so a wake during the poll is seen below.
            parker.notified.store(false, Ordering::Release);
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return Some(output);
            }
            if parker.notified.load(Ordering::Acquire) {
                continue;
            }
            match deadline {
                None => thread::park(),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    thread::park_timeout(deadline - now);
                }
            }
        }
    })
}

/// Blocks the calling thread until `future` completes.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    loop {
        // Without a deadline `wait` only returns with the output; the loop keeps the types
        // honest without an unwrap.
        if let Some(output) = wait(future.as_mut(), None) {
            return output;
        }
    }
}

/// Blocks on `future` for at most `timeout`; `None` when the time ran out first.
pub(crate) fn block_on_timeout<F: Future>(future: F, timeout: Duration) -> Option<F::Output> {
    // A timeout too large for the clock waits without one.
    let deadline = Instant::now().checked_add(timeout);
    if deadline.is_none() {
        return Some(block_on(future));
    }
    wait(future, deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_timeout_ends_a_future_that_never_completes() {
        let start = Instant::now();
        let out = block_on_timeout(std::future::pending::<()>(), Duration::from_millis(20));
        assert_eq!(out, None);
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn a_wake_from_another_thread_completes_the_wait() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = polls.clone();
        let mut spawned = false;
        let done = Arc::new(AtomicBool::new(false));
        let out = block_on(std::future::poll_fn(|cx| {
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
        }));
        assert_eq!(out, 7);
        assert!(polls.load(Ordering::Relaxed) >= 2);
    }

    #[test]
    fn a_nested_wait_gets_its_own_parker() {
        let out = block_on(async { block_on(async { 3 }) + 1 });
        assert_eq!(out, 4);
    }
}
