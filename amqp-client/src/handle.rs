//! What every handle stands on: the connection's keep-alive ([`ConnHandle`]) and the
//! request/reply plumbing (start a core command and register its waiter under one lock,
//! then wait for its completion).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use std::time::{Duration, Instant};

use amqp_proto::{ChannelId, Error, Misuse, Reply, RequestId};

use crate::shared::{ReqKind, Shared, SharedRef};
use crate::util::lock;

/// Closes the connection when the last handle (connection, channel, consumer, delivery) goes.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) shared: SharedRef,
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        if !s.core.is_closed() {
            // Refused (and harmless) when a close is already under way.
            let _ = {
                let now = s.now();
                s.core.close(now, "client dropped the connection")
            };
        }
        s.after_command();
    }
}

/// Waits for a command's completion; forgets (and cleans up after) it when dropped.
pub(crate) struct WaitReply<'a> {
    shared: &'a Mutex<Shared>,
    id: RequestId,
    finished: bool,
}

impl<'a> WaitReply<'a> {
    pub(crate) fn new(shared: &'a Mutex<Shared>, id: RequestId) -> Self {
        WaitReply {
            shared,
            id,
            finished: false,
        }
    }
}

impl Future for WaitReply<'_> {
    type Output = Result<Reply, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = lock(self.shared).poll_request(self.id, cx);
        if result.is_ready() {
            self.finished = true;
        }
        result
    }
}

impl Drop for WaitReply<'_> {
    fn drop(&mut self) {
        if !self.finished {
            lock(self.shared).abandon_request(self.id);
        }
    }
}

/// Waits while the connection is being recovered: commands issued meanwhile go out once it
/// is back (or fail with the reason it ended), instead of failing with `WouldBlock`. The
/// wait is bounded by the request timeout of channel `ch` (the connection's default for
/// `None`): past it the command fails with [`Error::RecoveryTimeout`] unsent. The deadline is
/// kept in [`Shared`] and the driver wakes the waiters when it passes, on its own timer: a
/// user thread of the blocking adapter has none. The driver does not look at it while a
/// redial is under way, so that can add up to the dial's connect timeout.
pub(crate) async fn recovered(shared: &Mutex<Shared>, ch: Option<ChannelId>) -> Result<(), Error> {
    let ch = ch.unwrap_or(ChannelId(0));
    held_back(shared, |s| s.core.request_timeout(ch)).await
}

/// [`recovered`], bounded by `timeout` (`None`: no limit).
pub(crate) async fn recovered_within(
    shared: &Mutex<Shared>,
    timeout: Option<Duration>,
) -> Result<(), Error> {
    held_back(shared, |_| timeout).await
}

/// Waits out a recovery under way, bounded by what `timeout` reads (only once one is found,
/// so the common case takes the lock once).
async fn held_back(
    shared: &Mutex<Shared>,
    timeout: impl Fn(&Shared) -> Option<Duration>,
) -> Result<(), Error> {
    // Armed on the first poll that finds a recovery under way, so the common case (no
    // recovery) costs one check.
    let mut held: Option<Held<'_>> = None;
    std::future::poll_fn(|cx| {
        let mut s = lock(shared);
        if !s.core.is_recovering() {
            return Poll::Ready(Ok(()));
        }
        let now = s.now();
        if held.is_none() {
            let deadline = timeout(&s).and_then(|t| Some((now.checked_add(t)?, t)));
            let key = deadline.map(|(at, _)| s.hold_until(at));
            held = Some(Held {
                shared,
                deadline,
                key,
            });
        }
        if let Some(Held {
            deadline: Some((at, after)),
            ..
        }) = &held
        {
            if now >= *at {
                return Poll::Ready(Err(Error::RecoveryTimeout(*after)));
            }
        }
        crate::util::register(&mut s.state_waiters, cx.waker());
        Poll::Pending
    })
    .await
}

/// A command held back by a recovery, with its deadline registered in [`Shared`] until the
/// wait ends.
struct Held<'a> {
    shared: &'a Mutex<Shared>,
    deadline: Option<(Instant, Duration)>,
    key: Option<u64>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let (Some((at, _)), Some(key)) = (self.deadline, self.key) {
            lock(self.shared).release_hold(at, key);
        }
    }
}

/// Runs one command under the lock and registers its waiter in the same critical section.
pub(crate) fn start_request(
    shared: &Mutex<Shared>,
    command: impl FnOnce(&mut Shared) -> Result<(RequestId, ReqKind), Error>,
) -> Result<RequestId, Error> {
    let mut s = lock(shared);
    let result = command(&mut s);
    if let Ok((id, kind)) = result {
        s.add_request(id, kind);
    }
    s.after_command();
    result.map(|(id, _)| id)
}

/// A reply the core should never give to this command.
pub(crate) fn unexpected(reply: Reply) -> Error {
    tracing::error!(?reply, "amqp: unexpected reply from the core");
    Error::Usage(Misuse::UnexpectedReply)
}
