//! The connection's timers, in one table: each is a variant, one function gives its deadline,
//! and both [`Connection::poll_timeout`] and [`Connection::handle_timeout`] read that table.
//! A new timer is one variant, one deadline arm and one expiry arm.

use std::time::{Duration, Instant};

use super::{Connection, Lifecycle};
use crate::frame::Frame;

/// Every timer the connection arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// The handshake must finish within `handshake_timeout` of the protocol header.
    Handshake,
    /// A close we sent must be answered with `close-ok` within `close_timeout`.
    Close,
    /// Nothing received for two heartbeat intervals: the peer is gone.
    PeerDead,
    /// Nothing written for half a heartbeat interval: send a heartbeat.
    HeartbeatSend,
    /// Recovery waits out its backoff: then the caller is told to dial.
    Reconnect,
    /// The earliest request deadline: that request fails and its channel is closed.
    Request,
}

impl Timer {
    /// In the order expiries are acted on: those that end the connection come first, so a
    /// heartbeat is never queued on a connection that is over.
    pub(super) const ALL: [Timer; 6] = [
        Timer::Handshake,
        Timer::Close,
        Timer::PeerDead,
        Timer::Request,
        Timer::HeartbeatSend,
        Timer::Reconnect,
    ];
}

impl Connection {
    /// When `timer` expires, if it is armed.
    pub(super) fn deadline(&self, timer: Timer) -> Option<Instant> {
        match timer {
            Timer::Handshake => match self.lifecycle {
                Lifecycle::Handshake { deadline, .. } => deadline,
                _ => None,
            },
            Timer::Close => match self.lifecycle {
                Lifecycle::Closing { deadline, .. } => Some(deadline),
                _ => None,
            },
            Timer::PeerDead => Some(self.last_recv + self.heartbeat_interval()? * 2),
            // Output waiting to be taken will count as traffic once it is written; a heartbeat
            // queued behind it would add nothing.
            Timer::HeartbeatSend if self.transmit.is_empty() => {
                Some(self.last_sent + self.heartbeat_interval()? / 2)
            }
            Timer::HeartbeatSend => None,
            Timer::Reconnect => match self.lifecycle {
                Lifecycle::Recovering => self.recovery.as_ref()?.deadline(),
                _ => None,
            },
            // Requests are only in flight while open; a loss or close fails them at once.
            Timer::Request => match self.lifecycle {
                Lifecycle::Open => self.deadlines.next(),
                _ => None,
            },
        }
    }

    /// Acts on an expired timer.
    pub(super) fn expire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Handshake => {
                let Lifecycle::Handshake { step, .. } = self.lifecycle else {
                    return;
                };
                self.lost(super::Error::HandshakeTimeout(step), now);
            }
            Timer::Close => self.end_close(),
            // While closing, a silent peer ends the close as the close timeout would: with the
            // reason of the close (none for ours), not a heartbeat failure.
            Timer::PeerDead => match self.lifecycle {
                Lifecycle::Closing { .. } => self.end_close(),
                _ => {
                    self.counters.m.heartbeats_missed += 1;
                    self.lost(
                        super::Error::HeartbeatTimeout(u32::from(self.tuning.heartbeat) * 2),
                        now,
                    );
                }
            },
            Timer::Reconnect => self.dial(),
            Timer::Request => self.expire_requests(now),
            Timer::HeartbeatSend => {
                let _ = self.transmit.push_frame(&Frame::Heartbeat);
                self.last_sent = now;
            }
        }
    }

    /// The negotiated heartbeat interval, once tuned and until closed.
    pub(super) fn heartbeat_interval(&self) -> Option<Duration> {
        let beating = match &self.lifecycle {
            Lifecycle::Handshake { step, .. } => *step == super::HandshakeStep::Opening,
            Lifecycle::Open | Lifecycle::Closing { .. } => true,
            Lifecycle::Closed { .. } | Lifecycle::Recovering => false,
        };
        (beating && self.tuning.heartbeat > 0)
            .then(|| Duration::from_secs(u64::from(self.tuning.heartbeat)))
    }
}
