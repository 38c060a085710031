//! Automatic recovery: what triggers it, when and where to reconnect, what to replay.
//!
//! The core cannot dial, so it says when and where: after a recoverable failure the
//! connection waits out a backoff ([`Backoff`], drawn with a [`Rng`] the caller seeds), names
//! the [`Endpoint`] to dial next ([`Endpoints`] rotate on failure), and once handed a fresh
//! transport runs the handshake and replays the recorded [`Topology`]
//! ([`ReplayPlan`]). Delivery tags stay unique across reconnects ([`TagEpoch`]).
//!
//! What triggers recovery ([`triggers_recovery`]): a transport error, end of stream, missed
//! heartbeats, or the broker closing the connection with 320 CONNECTION_FORCED (node shutdown,
//! operator close). What does not: this client's own close, a refused login or vhost, and a
//! protocol violation (retrying a bug loops). A channel closed by a soft error is not
//! recovered; its error goes to the application as without recovery.
//!
//! These pieces are pure and tested on their own; each takes the time or the seed it needs.

mod backoff;
mod endpoint;
mod machine;
mod replay;
mod tags;

use std::time::{Duration, Instant};

pub use backoff::{Backoff, Rng};
pub use endpoint::{Endpoint, EndpointOrder, Endpoints};
pub use machine::{Next, Phase, Recovery};
pub use replay::{ReplayPlan, ReplayStep};
pub use tags::TagEpoch;

pub use super::topology::Topology;

use super::error::{Error, Initiator};
use crate::error::ReplyCode;

/// How a connection recovers.
///
/// ```
/// use amqp_proto::recovery::{Endpoint, RecoveryConfig};
/// use std::time::Duration;
///
/// let config = RecoveryConfig {
///     endpoints: vec![Endpoint::new("rabbit-1", 5672), Endpoint::new("rabbit-2", 5672)],
///     max_attempts: Some(20),
///     ..RecoveryConfig::default()
/// };
/// assert_eq!(config.backoff.initial, Duration::from_millis(500));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryConfig {
    /// Waits between attempts.
    pub backoff: Backoff,
    /// Attempts before giving up (`None`: never give up).
    pub max_attempts: Option<u32>,
    /// Brokers to connect to, sharing the connection's credentials and TLS settings, the one
    /// the connection was opened with first (empty: only the address it was opened with).
    pub endpoints: Vec<Endpoint>,
    /// The order endpoints are tried in.
    pub order: EndpointOrder,
    /// At-least-once publishing: keep each unconfirmed publish (its body by reference, as many
    /// as the confirm window holds) and publish it again, in order, once the connection is
    /// back, so its confirmation comes from the new broker instead of resolving as lost.
    /// Messages can then arrive twice.
    pub republish_unconfirmed: bool,
    /// Seed of the jitter and shuffling (adapters pass a random one; tests a fixed one).
    pub seed: u64,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            backoff: Backoff::default(),
            max_attempts: None,
            endpoints: Vec::new(),
            order: EndpointOrder::InOrder,
            republish_unconfirmed: false,
            seed: 0,
        }
    }
}

/// Whether losing the connection to `error` starts a recovery.
///
/// ```
/// use amqp_proto::Error;
/// use amqp_proto::recovery::triggers_recovery;
///
/// assert!(triggers_recovery(&Error::UnexpectedEof { mid_frame: false }));
/// assert!(!triggers_recovery(&Error::Authentication("refused".into())));
/// ```
pub fn triggers_recovery(error: &Error) -> bool {
    match error {
        Error::Transport { .. } | Error::UnexpectedEof { .. } | Error::HeartbeatTimeout(_) => true,
        Error::ConnectionClosed(reason) => {
            reason.initiator == Initiator::Server && reason.code == ReplyCode::CONNECTION_FORCED
        }
        _ => false,
    }
}

/// Whether a failed reconnection attempt is worth another: anything that says the broker was
/// not (yet) reachable or ready, but not a refusal of who we are.
pub fn attempt_may_retry(error: &Error) -> bool {
    triggers_recovery(error) || matches!(error, Error::HandshakeTimeout(_))
}

/// The next reconnection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Its number, from 1.
    pub number: u32,
    /// When to dial.
    pub at: Instant,
    /// Where to dial (`None`: the address the connection was opened with).
    pub endpoint: Option<Endpoint>,
}

/// Attempts, backoff and endpoint rotation of one recovery.
///
/// ```
/// use amqp_proto::recovery::{Backoff, Endpoint, RecoveryConfig, Schedule};
/// use std::time::{Duration, Instant};
///
/// let config = RecoveryConfig {
///     backoff: Backoff { jitter: 0.0, ..Backoff::default() },
///     endpoints: vec![Endpoint::new("a", 5672), Endpoint::new("b", 5672)],
///     max_attempts: Some(2),
///     ..RecoveryConfig::default()
/// };
/// let mut schedule = Schedule::new(&config);
/// let t0 = Instant::now();
/// // Connected to "a", which failed: the first attempt goes to "b".
/// let first = schedule.failed(t0).unwrap();
/// assert_eq!((first.number, first.endpoint.unwrap().host.as_str()), (1, "b"));
/// assert_eq!(first.at, t0 + Duration::from_millis(500));
/// let second = schedule.failed(first.at).unwrap();
/// assert_eq!((second.number, second.endpoint.unwrap().host.as_str()), (2, "a"));
/// assert!(schedule.failed(second.at).is_none()); // given up
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    backoff: Backoff,
    max_attempts: Option<u32>,
    rng: Rng,
    endpoints: Option<Endpoints>,
    attempts: u32,
}

impl Schedule {
    /// A schedule over the configured endpoints.
    pub fn new(config: &RecoveryConfig) -> Self {
        let mut rng = Rng::new(config.seed);
        let endpoints = Endpoints::new(config.endpoints.clone(), config.order, &mut rng);
        Schedule {
            backoff: config.backoff,
            max_attempts: config.max_attempts,
            rng,
            endpoints,
            attempts: 0,
        }
    }

    /// The endpoint in use, or to be dialled next (`None`: the address the connection was
    /// opened with).
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoints.as_ref().map(Endpoints::current)
    }

    /// Attempts made in the current recovery.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The endpoint in use failed at `now` (the connection dropped, or an attempt failed):
    /// the next attempt, on the next endpoint, or `None` once the attempt limit is reached.
    pub fn failed(&mut self, now: Instant) -> Option<Attempt> {
        if self.max_attempts.is_some_and(|max| self.attempts >= max) {
            return None;
        }
        self.attempts += 1;
        if let Some(e) = self.endpoints.as_mut() {
            e.rotate(&mut self.rng);
        }
        let delay: Duration = self.backoff.delay(self.attempts, &mut self.rng);
        Some(Attempt {
            number: self.attempts,
            at: now + delay,
            endpoint: self.endpoint().cloned(),
        })
    }

    /// The connection is back: the next failure starts again from the first wait.
    pub fn recovered(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::error::CloseReason;
    use crate::types::ShortString;

    fn server_close(code: u16) -> Error {
        Error::ConnectionClosed(CloseReason {
            initiator: Initiator::Server,
            code: ReplyCode(code),
            text: ShortString::from_static("x"),
            class_id: 0,
            method_id: 0,
        })
    }

    #[test]
    fn what_triggers_recovery() {
        let io = Error::Transport {
            kind: std::io::ErrorKind::ConnectionReset,
            message: "reset".into(),
        };
        for yes in [
            io,
            Error::UnexpectedEof { mid_frame: true },
            Error::HeartbeatTimeout(60),
            server_close(320),
        ] {
            assert!(triggers_recovery(&yes), "{yes}");
        }
        let mut ours = CloseReason {
            initiator: Initiator::Client,
            code: ReplyCode(320),
            text: ShortString::from_static("x"),
            class_id: 0,
            method_id: 0,
        };
        let own = Error::ConnectionClosed(ours.clone());
        ours.code = ReplyCode(200);
        for no in [
            own,
            Error::ConnectionClosed(ours),
            server_close(530),
            server_close(541),
            Error::Authentication("no".into()),
            Error::VhostAccessRefused {
                vhost: "/".into(),
                text: "no".into(),
            },
            Error::Protocol {
                code: ReplyCode(505),
                text: "bad".into(),
            },
            Error::HandshakeTimeout(crate::HandshakeStep::Opening),
        ] {
            assert!(!triggers_recovery(&no), "{no}");
        }
        assert!(attempt_may_retry(&Error::HandshakeTimeout(
            crate::HandshakeStep::AwaitingStart
        )));
        assert!(!attempt_may_retry(&Error::Authentication("no".into())));
    }
}
