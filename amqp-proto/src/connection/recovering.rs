//! Automatic recovery wired into the connection: a recoverable loss suspends the channels
//! instead of ending them, the backoff timer says when to dial ([`Event::Dial`]), the caller
//! hands over a fresh transport ([`Connection::transport_ready`]), the handshake runs again,
//! and the recorded topology is replayed one step at a time before commands go through again.
//!
//! The episode ([`Recovery`]) lives beside the lifecycle rather than in it because it spans
//! three lifecycle states: `Recovering` (between transports), `Handshake` and `Open` (while
//! the replay runs, when commands are still refused with [`WouldBlock::Recovering`]).

use std::time::Instant;

use super::channel::Channel;
use super::recovery::{Next, Recovery, ReplayPlan, ReplayStep, triggers_recovery};
use super::{Connection, Error, Event, HandshakeStep, Lifecycle, Misuse, inbound::server_reason};
use crate::ChannelId;
use crate::frame::{FrameDecoder, PROTOCOL_HEADER};
use crate::spec::*;
use crate::transmit::Transmit;

impl Connection {
    /// The transport is gone (or an attempt failed) because of `error`: recover if the loss
    /// allows it and recovery is on, otherwise end the connection.
    pub(super) fn lost(&mut self, error: Error, now: Instant) {
        let dialing = matches!(
            self.recovery.as_ref().map(|r| r.phase()),
            Some(super::recovery::Phase::Dialing(_))
        );
        if matches!(self.lifecycle, Lifecycle::Recovering) && !dialing {
            // The old transport's last word, after recovery already took over.
            return;
        }
        if let Some(mut recovery) = self.recovery.take() {
            let attempt = recovery.attempt().number;
            return match recovery.attempt_failed(error.clone(), now) {
                Next::GiveUp(error) => self.give_up(error),
                _ => {
                    self.suspend(&error);
                    self.events
                        .push_back(Event::AttemptFailed { attempt, error });
                    self.lifecycle = Lifecycle::Recovering;
                    self.recovery = Some(recovery);
                }
            };
        }
        let open = matches!(self.lifecycle, Lifecycle::Open);
        if let (true, true, Some(schedule)) =
            (open, triggers_recovery(&error), self.schedule.take())
        {
            match Recovery::start(schedule, error.clone(), now) {
                Ok(recovery) => {
                    self.suspend(&error);
                    let attempt = recovery.attempt();
                    self.events.push_back(Event::RecoveryStarted {
                        cause: error,
                        attempt: attempt.number,
                        endpoint: attempt.endpoint.clone(),
                    });
                    self.lifecycle = Lifecycle::Recovering;
                    self.recovery = Some(Box::new(recovery));
                    return;
                }
                Err(error) => return self.finish(Some(error)),
            }
        }
        self.finish(Some(error));
    }

    /// Recovery stops: everything ends with `error` as after any failure.
    pub(super) fn give_up(&mut self, error: Error) {
        self.recovery = None;
        self.events.push_back(Event::RecoveryGivenUp(error.clone()));
        self.finish(Some(error));
    }

    /// What a lost transport takes with it: requests in flight fail with `error`, half-received
    /// content is dropped (the broker redelivers it), unconfirmed publishes resolve as lost,
    /// and the channels wait for the new connection with their consumers. Input not yet
    /// decoded belonged to the old transport; output not yet written may still go to it (a
    /// `close-ok` for the broker's close) until the caller dials anew.
    fn suspend(&mut self, error: &Error) {
        self.deadlines.clear();
        self.decoder = FrameDecoder::default();
        self.read_buf.clear();
        self.read_seen = 0;
        self.body_read = None;
        self.tuning = super::Tuning {
            channel_max: self.config.channel_max,
            frame_max: crate::frame::PRE_TUNE_FRAME_MAX,
            heartbeat: 0,
        };
        if self.blocked.take().is_some() {
            self.events.push_back(Event::Unblocked);
        }
        for (id, _) in self.conn_pending.drain(..) {
            self.events.push_back(Event::Completed {
                id,
                result: Err(error.clone()),
            });
        }
        let numbers: Vec<u16> = self.channels.numbers().collect();
        for ch in numbers {
            let (Some(channel), mut cx) = split!(self, ch) else {
                continue;
            };
            let Channel::Open(open) = channel else {
                // Opening or closing when the transport went: that request ends here.
                if let Some(channel) = self.channels.remove(&ch) {
                    let (_, mut cx) = split!(self, ch);
                    channel.fail(error, &mut cx);
                }
                continue;
            };
            open.suspend(error, &mut cx);
        }
    }

    /// The caller connected a fresh transport after [`Event::Dial`], at `now`: the protocol
    /// header is queued and the handshake starts again with the same settings.
    pub fn transport_ready(&mut self, now: Instant) -> Result<(), Error> {
        let ready = matches!(self.lifecycle, Lifecycle::Recovering)
            && self.recovery.as_mut().is_some_and(|r| r.transport_ready());
        if !ready {
            return Err(Error::Usage(Misuse::NoDialPending));
        }
        // Nothing queued for the old transport belongs on the new one.
        self.transmit = Transmit::default();
        self.transmit.push_raw(&PROTOCOL_HEADER);
        self.last_recv = now;
        self.last_sent = now;
        self.lifecycle = Lifecycle::Handshake {
            step: HandshakeStep::AwaitingStart,
            deadline: self.config.handshake_timeout.map(|t| now + t),
        };
        Ok(())
    }

    /// Whether a recovery is under way (commands are refused with
    /// [`WouldBlock::Recovering`](crate::WouldBlock::Recovering) until [`Event::Recovered`]).
    pub fn is_recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// The backoff timer expired: tell the caller to dial.
    pub(super) fn dial(&mut self) {
        if let Some(attempt) = self.recovery.as_mut().and_then(|r| r.dial()) {
            self.events.push_back(Event::Dial {
                attempt: attempt.number,
                endpoint: attempt.endpoint,
            });
        }
    }

    /// The new connection is open: replay the topology onto it.
    pub(super) fn begin_replay(&mut self, now: Instant) {
        let channels: Vec<ChannelId> = self.channels.numbers().map(ChannelId).collect();
        let max = match self.tuning.channel_max {
            0 => u16::MAX,
            m => m,
        };
        // The declarations go on a channel of their own, the lowest number not in use.
        let spare = (1..=max)
            .find(|n| !self.channels.contains_key(n))
            .unwrap_or(max);
        let plan = ReplayPlan::new(&self.topology, &channels, ChannelId(spare));
        let next = match self.recovery.as_mut() {
            Some(r) => r.opened(plan, now),
            None => return,
        };
        self.act(next, now);
    }

    /// Whether `method` on `ch` answers the replay step in flight (then it is the replay's).
    pub(super) fn is_replay_reply(&self, ch: u16, method: &Method) -> bool {
        let Some(step) = self.recovery.as_ref().and_then(|r| r.current_step()) else {
            return false;
        };
        step.channel == ChannelId(ch)
            && (matches!(method, Method::ChannelClose(_))
                || step.method.info().expects_reply(method.id()))
    }

    /// Handles the answer to the replay step in flight.
    pub(super) fn on_replay_reply(&mut self, ch: u16, method: Method, now: Instant) {
        let Some(step) = self
            .recovery
            .as_ref()
            .and_then(|r| r.current_step())
            .cloned()
        else {
            return;
        };
        let next = match method {
            Method::ChannelClose(close) => {
                let _ = self.send_method(ch, &ChannelCloseOk {}.into());
                let error = Error::ChannelClosed {
                    channel: ChannelId(ch),
                    reason: server_reason(
                        close.reply_code,
                        &close.reply_text,
                        close.class_id,
                        close.method_id,
                    ),
                };
                self.events.push_back(Event::ReplayFailed {
                    channel: ChannelId(ch),
                    method: step.method.name(),
                    error: error.clone(),
                });
                let Some(recovery) = self.recovery.as_mut() else {
                    return;
                };
                let (_dropped, next) = recovery.step_refused(now);
                // An application channel that the broker closed is gone, as after any soft
                // error: its consumers end and the application is told.
                if let Some(channel) = self.channels.remove(&ch) {
                    let (_, mut cx) = split!(self, ch);
                    channel.fail(&error, &mut cx);
                    cx.topology.forget_channel(ChannelId(ch));
                    self.events.push_back(Event::ChannelClosed {
                        channel: ChannelId(ch),
                        error,
                    });
                }
                next
            }
            Method::QueueDeclareOk(ok) => match self.recovery.as_mut() {
                Some(r) => r.step_done(Some(&ok.queue), now),
                None => return,
            },
            _ => match self.recovery.as_mut() {
                Some(r) => r.step_done(None, now),
                None => return,
            },
        };
        self.act(next, now);
    }

    fn act(&mut self, next: Next, now: Instant) {
        match next {
            Next::Wait => {}
            Next::Send(ReplayStep { channel, method }) => {
                if let Err(error) = self.send_method(channel.0, &method) {
                    // Cannot happen for recorded methods (they were sent once already), but a
                    // step that cannot be encoded is reported and skipped, not retried.
                    self.events.push_back(Event::ReplayFailed {
                        channel,
                        method: method.name(),
                        error,
                    });
                    let next = match self.recovery.as_mut() {
                        Some(r) => r.step_done(None, now),
                        None => return,
                    };
                    self.act(next, now);
                }
            }
            Next::Recovered {
                endpoint,
                renamed,
                took,
            } => {
                for (old, new) in &renamed {
                    self.topology.rename_queue(old, new);
                }
                if let Some(recovery) = self.recovery.take() {
                    self.schedule = Some(recovery.into_schedule());
                }
                self.republish();
                self.events.push_back(Event::Recovered {
                    endpoint,
                    renamed,
                    took,
                });
            }
            Next::GiveUp(error) => self.give_up(error),
        }
    }

    /// At-least-once mode, once the connection is back: publishes that were not confirmed
    /// go out again, in order, before any new one; the new broker's confirms resolve their
    /// original tags.
    fn republish(&mut self) {
        let frame_max = self.tuning.frame_max;
        let numbers: Vec<u16> = self.channels.numbers().collect();
        for ch in numbers {
            let Some(Channel::Open(c)) = self.channels.get_mut(&ch) else {
                continue;
            };
            let Some(confirms) = c.confirms.as_mut() else {
                continue;
            };
            for message in std::mem::take(&mut c.kept) {
                let sent = self.transmit.push_content(
                    ch,
                    &message.publish.clone().into(),
                    &message.properties,
                    &message.body,
                    frame_max,
                );
                match sent {
                    Ok(()) => {
                        confirms.republish(message.tag, message.publish.mandatory);
                        c.kept.push_back(message);
                    }
                    Err(e) => self.events.push_back(Event::Confirmed {
                        channel: ChannelId(ch),
                        tag: crate::DeliveryTag(message.tag),
                        outcome: crate::Confirmation::Lost(e.into()),
                    }),
                }
            }
        }
    }
}
