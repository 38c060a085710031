//! Request deadlines: when each request the connection waits a reply for must have it.
//!
//! Commands take no time, so a request is first noted with its timeout alone; the next call
//! that passes the time (`poll_transmit`, input, timeout) arms it from that `now`. The loop
//! calls `poll_transmit` right after a command, so the deadline runs from about when the
//! request is written, and never from a clock the core last saw long before the command.
//!
//! Entries are dropped when their completion is handed out (`poll_event`); an entry whose
//! request has completed but not been handed out yet is checked against the channel when it
//! expires, so a stale entry never fails anything.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::channel::Channel;
use super::event::{ChannelId, Event, RequestId};
use super::{Connection, Error, Lifecycle};
use crate::error::ReplyCode;
use crate::spec::{ChannelClose, ChannelOpen, MethodInfo};
use crate::types::ShortString;

/// An armed request: its channel and the timeout it was given.
#[derive(Debug, Clone, Copy)]
struct Armed {
    deadline: Instant,
    channel: u16,
    timeout: Duration,
}

/// The requests being timed, by deadline.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    /// Noted since the time last passed: `(request, channel, timeout)`.
    unarmed: Vec<(RequestId, u16, Duration)>,
    /// Armed requests, earliest deadline first.
    armed: BTreeSet<(Instant, RequestId)>,
    by_request: HashMap<RequestId, Armed>,
}

impl Deadlines {
    /// Times request `id` on channel `ch` (`None`: no limit, nothing to time).
    pub(super) fn note(&mut self, id: RequestId, ch: u16, timeout: Option<Duration>) {
        if let Some(timeout) = timeout {
            self.unarmed.push((id, ch, timeout));
        }
    }

    /// Arms the requests noted since the last call, from `now`.
    #[inline]
    pub(super) fn arm(&mut self, now: Instant) {
        if self.unarmed.is_empty() {
            return;
        }
        for (id, channel, timeout) in self.unarmed.drain(..) {
            // A timeout too large to add is as good as none.
            if let Some(deadline) = now.checked_add(timeout) {
                self.armed.insert((deadline, id));
                let armed = Armed {
                    deadline,
                    channel,
                    timeout,
                };
                self.by_request.insert(id, armed);
            }
        }
    }

    /// Stops timing request `id` (it completed).
    #[inline]
    pub(super) fn done(&mut self, id: RequestId) {
        if self.by_request.is_empty() && self.unarmed.is_empty() {
            return;
        }
        match self.by_request.remove(&id) {
            Some(armed) => {
                self.armed.remove(&(armed.deadline, id));
            }
            None => self.unarmed.retain(|(r, _, _)| *r != id),
        }
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.armed.first().map(|(deadline, _)| *deadline)
    }

    /// Takes the earliest request whose deadline is at or before `now`.
    fn pop_expired(&mut self, now: Instant) -> Option<(RequestId, Armed)> {
        let &(deadline, id) = self.armed.first()?;
        if deadline > now {
            return None;
        }
        self.armed.pop_first();
        Some((id, self.by_request.remove(&id)?))
    }

    /// Forgets everything (the connection is over or lost; what was pending failed with it).
    pub(super) fn clear(&mut self) {
        self.unarmed.clear();
        self.armed.clear();
        self.by_request.clear();
    }
}

impl Connection {
    /// Fails every request whose deadline is at or before `now`.
    pub(super) fn expire_requests(&mut self, now: Instant) {
        while let Some((id, armed)) = self.deadlines.pop_expired(now) {
            if !matches!(self.lifecycle, Lifecycle::Open) {
                return;
            }
            self.request_timed_out(id, armed);
        }
    }

    /// Request `id` got no reply in time. A later reply on its channel could not be told
    /// apart from the replies to the requests after it, so the channel is closed (reply 200,
    /// naming the request): everything pending on it fails with the timeout, and whatever
    /// arrives on it until `close-ok` is dropped. A close that timed out only fails its
    /// request; the number stays taken until `close-ok`.
    fn request_timed_out(&mut self, id: RequestId, armed: Armed) {
        let ch = armed.channel;
        let info: &'static MethodInfo = match self.channels.get_mut(&ch) {
            Some(Channel::Opening(rid)) if *rid == id => &ChannelOpen::INFO,
            Some(Channel::Open(open)) => match open.pending.iter().find(|p| p.id == id) {
                Some(p) => p.request.info(),
                // Answered already; its completion is not handed out yet.
                None => return,
            },
            Some(Channel::Closing(pending @ Some(_))) if *pending == Some(id) => {
                *pending = None;
                let error = Error::RequestTimeout {
                    channel: ChannelId(ch),
                    request: "channel.close",
                    after: armed.timeout,
                };
                self.events.push_back(Event::Completed {
                    id,
                    result: Err(error),
                });
                return;
            }
            _ => return,
        };
        let error = Error::RequestTimeout {
            channel: ChannelId(ch),
            request: info.name,
            after: armed.timeout,
        };
        let close = ChannelClose {
            reply_code: ReplyCode::REPLY_SUCCESS.0,
            reply_text: ShortString::from_static("request timed out"),
            class_id: info.id.class_id,
            method_id: info.id.method_id,
        };
        let _ = self.send_method(ch, &close.into());
        let (Some(channel), mut cx) = split!(self, ch) else {
            return;
        };
        std::mem::replace(channel, Channel::Closing(None)).fail(&error, &mut cx);
        cx.topology.forget_channel(ChannelId(ch));
        cx.events.push_back(Event::ChannelClosed {
            channel: ChannelId(ch),
            error,
        });
    }
}
