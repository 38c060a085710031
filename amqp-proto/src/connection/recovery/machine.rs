//! One recovery from start to end, as a state machine of its own: the connection feeds it
//! what happened (lost, dial failed, transport ready, replay step answered or refused) and it
//! answers with what to do next. It holds no sockets and reads no clock.
//!
//! ```text
//!  lost ──► Waiting ──(deadline)──► Dialing ──(transport ready)──► Handshake ──(open-ok)──► Replaying ──► done
//!              ▲                      │                                │                      │
//!              └──────── attempt failed (next endpoint, longer wait) ◄─┴──────────────────────┘
//!                         or, past the attempt limit / on a refusal: given up
//! ```

use std::time::{Duration, Instant};

use super::{
    Attempt, Endpoint, RecoveryConfig, ReplayPlan, ReplayStep, Schedule, attempt_may_retry,
};
use crate::connection::error::Error;
use crate::types::ShortString;

/// Where a recovery is.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Waiting for the attempt's time.
    Waiting(Attempt),
    /// The caller was told to dial; waiting for a transport.
    Dialing(Attempt),
    /// A fresh transport carries the handshake.
    Handshake(Attempt),
    /// The broker opened the connection; the topology is being replayed.
    Replaying {
        /// The attempt that got through.
        attempt: Attempt,
        /// What is left to replay (boxed: it is much larger than the other phases).
        plan: Box<ReplayPlan>,
        /// The step sent and not yet answered.
        current: Option<ReplayStep>,
    },
}

/// What the connection must do after feeding the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Wait; nothing to send.
    Wait,
    /// Send this replay step and wait for its answer.
    Send(ReplayStep),
    /// The replay is over: the connection is back.
    Recovered {
        /// Where it is connected (`None`: the address it was opened with).
        endpoint: Option<Endpoint>,
        /// Server-named queues that came back under a new name: `(old, new)`.
        renamed: Vec<(ShortString, ShortString)>,
        /// From the loss to the end of the replay.
        took: Duration,
    },
    /// No more attempts: end the connection with this error.
    GiveUp(Error),
}

/// A recovery in progress.
#[derive(Debug, Clone)]
pub struct Recovery {
    schedule: Schedule,
    /// What ended the connection that is being recovered.
    cause: Error,
    started: Instant,
    phase: Phase,
}

impl Recovery {
    /// Starts recovering from `cause` at `now`, or `Err(cause)` when no attempt is allowed.
    /// The schedule carries over from recovery to recovery (its endpoint rotation and seed).
    pub fn start(mut schedule: Schedule, cause: Error, now: Instant) -> Result<Self, Error> {
        match schedule.failed(now) {
            Some(attempt) => Ok(Recovery {
                schedule,
                cause,
                started: now,
                phase: Phase::Waiting(attempt),
            }),
            None => Err(cause),
        }
    }

    /// A fresh schedule for `config`.
    pub fn schedule(config: &RecoveryConfig) -> Schedule {
        Schedule::new(config)
    }

    /// The schedule, to keep for the next recovery once this one is over.
    pub fn into_schedule(mut self) -> Schedule {
        self.schedule.recovered();
        self.schedule
    }

    /// What ended the connection being recovered.
    pub fn cause(&self) -> &Error {
        &self.cause
    }

    /// Where the recovery is.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The attempt under way or next.
    pub fn attempt(&self) -> &Attempt {
        match &self.phase {
            Phase::Waiting(a) | Phase::Dialing(a) | Phase::Handshake(a) => a,
            Phase::Replaying { attempt, .. } => attempt,
        }
    }

    /// When the next attempt is due, while waiting for it.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Waiting(a) => Some(a.at),
            _ => None,
        }
    }

    /// The attempt's time has come: returns the attempt, whose endpoint the caller dials.
    pub fn dial(&mut self) -> Option<Attempt> {
        match &self.phase {
            Phase::Waiting(a) => {
                let a = a.clone();
                self.phase = Phase::Dialing(a.clone());
                Some(a)
            }
            _ => None,
        }
    }

    /// The caller has a fresh transport: the handshake starts. `false` if no dial was asked.
    pub fn transport_ready(&mut self) -> bool {
        match &self.phase {
            Phase::Dialing(a) => {
                self.phase = Phase::Handshake(a.clone());
                true
            }
            _ => false,
        }
    }

    /// The attempt failed at `now` (dial, handshake, or the new connection itself during the
    /// replay): wait for the next one, or give up if `error` is a refusal or no attempt is
    /// left.
    pub fn attempt_failed(&mut self, error: Error, now: Instant) -> Next {
        if !attempt_may_retry(&error) {
            return Next::GiveUp(error);
        }
        match self.schedule.failed(now) {
            Some(next) => {
                self.phase = Phase::Waiting(next);
                Next::Wait
            }
            None => Next::GiveUp(error),
        }
    }

    /// The broker opened the new connection: replay `plan`.
    pub fn opened(&mut self, plan: ReplayPlan, now: Instant) -> Next {
        let attempt = self.attempt().clone();
        self.phase = Phase::Replaying {
            attempt,
            plan: Box::new(plan),
            current: None,
        };
        self.advance(now)
    }

    /// The step in flight, while replaying.
    pub fn current_step(&self) -> Option<&ReplayStep> {
        match &self.phase {
            Phase::Replaying { current, .. } => current.as_ref(),
            _ => None,
        }
    }

    /// The step in flight was answered (with the queue name, for a `queue.declare`).
    pub fn step_done(&mut self, queue: Option<&ShortString>, now: Instant) -> Next {
        if let (Phase::Replaying { plan, .. }, Some(name)) = (&mut self.phase, queue) {
            plan.queue_declared(name);
        }
        self.advance(now)
    }

    /// The broker closed the step's channel: steps still planned on an application channel
    /// are returned (they will not happen); the declarations channel is reopened.
    pub fn step_refused(&mut self, now: Instant) -> (Vec<ReplayStep>, Next) {
        let dropped = match &mut self.phase {
            Phase::Replaying { plan, current, .. } => match current.take() {
                Some(step) => plan.channel_closed(step.channel),
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        (dropped, self.advance(now))
    }

    fn advance(&mut self, now: Instant) -> Next {
        let Phase::Replaying {
            attempt,
            plan,
            current,
        } = &mut self.phase
        else {
            return Next::Wait;
        };
        match plan.next_step() {
            Some(step) => {
                *current = Some(step.clone());
                Next::Send(step)
            }
            None => Next::Recovered {
                endpoint: attempt.endpoint.clone(),
                renamed: plan.take_renamed(),
                took: now.saturating_duration_since(self.started),
            },
        }
    }
}
