//! Publisher-confirm bookkeeping for one channel: which publishes still wait for the
//! broker's answer, the answers not yet picked up, and who waits for them.
//!
//! Memory: one small slot (24 bytes) per publish from the oldest unresolved or not yet
//! picked-up one to the newest, so it is bounded by the confirm window the application keeps;
//! the slots' storage shrinks again when the window drains.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use amqp_proto as proto;
use proto::{DeliveryTag, Error, Misuse, ReturnedMessage};

use crate::util::set_waker;

/// Slots kept allocated however far the window drains.
const MIN_SLOTS: usize = 64;

/// One publish awaiting its confirm.
enum Slot {
    /// Its [`crate::PublishConfirm`] is alive and waits.
    Waiting(Option<Waker>),
    /// Its future was dropped; only counted.
    Detached,
    /// Resolved, not yet picked up.
    Ready(Outcome),
    /// Resolved and picked up (or dropped).
    Taken,
}

/// A resolved confirm, kept small: a lost one's reason is stored once per channel.
enum Outcome {
    Ack(Option<Box<ReturnedMessage>>),
    Nack(Option<Box<ReturnedMessage>>),
    Lost,
}

/// Confirm bookkeeping for one channel: publishes are numbered 1, 2, 3… so the slots form a
/// deque indexed by `tag - base`.
#[derive(Default)]
pub(crate) struct Confirms {
    base: u64,
    slots: VecDeque<Slot>,
    /// Publishes not yet resolved.
    pub(crate) outstanding: usize,
    /// A nack arrived since the last `wait_for_confirms`.
    pub(crate) nacked: bool,
    /// A confirm was lost (channel or connection closed) since the last `wait_for_confirms`.
    pub(crate) lost: Option<Error>,
    /// Why confirms were lost, for the slots that say so.
    lost_reason: Option<Error>,
    /// Tasks waiting until at most so many publishes are outstanding (`wait_for_confirms`
    /// waits for 0, `wait_confirm_window` for its limit): each is woken once, when the
    /// confirms that arrived together bring the count down to its limit, not per confirm.
    waiters: Vec<(usize, Waker)>,
}

impl Confirms {
    pub(crate) fn push(&mut self, tag: DeliveryTag) {
        let expected = self.base + self.slots.len() as u64;
        if self.slots.is_empty() {
            self.base = tag.0;
        } else if tag.0 > expected {
            // Tags are consecutive per channel; tolerate a gap rather than misroute.
            for _ in expected..tag.0 {
                self.slots.push_back(Slot::Taken);
            }
        } else if tag.0 < expected {
            return;
        }
        self.slots.push_back(Slot::Waiting(None));
        self.outstanding += 1;
    }

    fn index(&self, tag: DeliveryTag) -> Option<usize> {
        let i = tag.0.checked_sub(self.base)?;
        let i = usize::try_from(i).ok()?;
        (i < self.slots.len()).then_some(i)
    }

    /// Records the broker's answer for `tag`; returns how many tasks it woke.
    pub(crate) fn resolve(&mut self, tag: DeliveryTag, outcome: proto::Confirmation) -> usize {
        let Some(i) = self.index(tag) else {
            return 0;
        };
        let outcome = match outcome {
            proto::Confirmation::Ack(r) => Outcome::Ack(r),
            proto::Confirmation::Nack(r) => {
                self.nacked = true;
                Outcome::Nack(r)
            }
            proto::Confirmation::Lost(e) => {
                if self.lost.is_none() {
                    self.lost = Some(e.clone());
                }
                self.lost_reason.get_or_insert(e);
                Outcome::Lost
            }
        };
        let mut woken = 0;
        let slot = &mut self.slots[i];
        match std::mem::replace(slot, Slot::Taken) {
            Slot::Waiting(waker) => {
                *slot = Slot::Ready(outcome);
                if let Some(w) = waker {
                    w.wake();
                    woken += 1;
                }
            }
            Slot::Detached => {}
            other => {
                // Resolved twice: keep the first outcome.
                *slot = other;
                return 0;
            }
        }
        self.outstanding -= 1;
        if !self.waiters.is_empty() {
            let outstanding = self.outstanding;
            self.waiters.retain(|(limit, w)| {
                let done = outstanding <= *limit;
                if done {
                    w.wake_by_ref();
                    woken += 1;
                }
                !done
            });
        }
        self.trim();
        woken
    }

    /// Whether at most `limit` publishes are outstanding; registers the waker if not.
    pub(crate) fn poll_window(&mut self, limit: usize, cx: &mut Context<'_>) -> Poll<()> {
        if self.outstanding <= limit {
            return Poll::Ready(());
        }
        match self
            .waiters
            .iter_mut()
            .find(|(_, w)| w.will_wake(cx.waker()))
        {
            Some(entry) => entry.0 = limit,
            None => self.waiters.push((limit, cx.waker().clone())),
        }
        Poll::Pending
    }

    /// Wakes every window waiter (the channel is over).
    pub(crate) fn wake_waiters(&mut self) {
        for (_, w) in self.waiters.drain(..) {
            w.wake();
        }
    }

    fn confirmation(&self, outcome: Outcome) -> proto::Confirmation {
        match outcome {
            Outcome::Ack(r) => proto::Confirmation::Ack(r),
            Outcome::Nack(r) => proto::Confirmation::Nack(r),
            Outcome::Lost => proto::Confirmation::Lost(
                self.lost_reason
                    .clone()
                    .unwrap_or(Error::Usage(Misuse::ConnectionNotOpen)),
            ),
        }
    }

    /// Picks up the outcome of `tag`, or registers the waker (if any).
    pub(crate) fn poll_take(
        &mut self,
        tag: DeliveryTag,
        waker: Option<&Waker>,
    ) -> Poll<Option<proto::Confirmation>> {
        let Some(i) = self.index(tag) else {
            return Poll::Ready(None);
        };
        let slot = &mut self.slots[i];
        match slot {
            Slot::Waiting(w) => {
                if let Some(waker) = waker {
                    set_waker(w, waker);
                }
                Poll::Pending
            }
            Slot::Ready(_) => {
                let Slot::Ready(outcome) = std::mem::replace(slot, Slot::Taken) else {
                    unreachable!()
                };
                self.trim();
                Poll::Ready(Some(self.confirmation(outcome)))
            }
            Slot::Detached | Slot::Taken => Poll::Ready(None),
        }
    }

    /// The future for `tag` was dropped.
    pub(crate) fn detach(&mut self, tag: DeliveryTag) {
        let Some(i) = self.index(tag) else {
            return;
        };
        let slot = &mut self.slots[i];
        match slot {
            Slot::Waiting(_) => *slot = Slot::Detached,
            Slot::Ready(_) => *slot = Slot::Taken,
            _ => {}
        }
        self.trim();
    }

    fn trim(&mut self) {
        while let Some(Slot::Taken) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        // Give back what a drained window no longer needs.
        let capacity = self.slots.capacity();
        if capacity > MIN_SLOTS && self.slots.len() * 4 <= capacity {
            self.slots.shrink_to((self.slots.len() * 2).max(MIN_SLOTS));
        }
    }
}
