//! The state every handle and the driver share under one lock: the core connection and the
//! tables that route its events to whoever waits for them.
//!
//! Rules that keep anything from hanging:
//! * a waiter is registered under the same lock acquisition as the core call it waits for,
//!   and events are dispatched right after (after every command, every input, every timeout);
//! * dispatch never blocks: it only fills queues and wakes tasks;
//! * on `Event::Closed` every table is swept and every waiter is woken with the core's error,
//!   and everything registered later finds the connection closed at once.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use amqp_proto as proto;
use proto::{
    ChannelId, ConsumerEnd, ConsumerTag, Error, Event, Misuse, Reply, RequestId, ReturnedMessage,
    ShortString,
};
use smallvec::SmallVec;

use crate::confirms::Confirms;
use crate::io::Timer;
use crate::util::{Map, set_waker, wake_all};

/// What happens to the connection as a whole, as seen by [`Connection::events`](crate::Connection::events).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The broker stopped reading from publishers (a resource alarm); publishes now wait.
    Blocked {
        /// The broker's reason.
        reason: ShortString,
    },
    /// The alarm cleared; publishes go on.
    Unblocked,
    /// The broker paused (`active: false`) or resumed publishing on a channel.
    ChannelFlow {
        /// The channel.
        channel: ChannelId,
        /// Whether publishing may go on.
        active: bool,
    },
    /// The broker did something wrong but not fatal.
    Warning(Error),
    /// Automatic recovery at work: the core's [`Event::RecoveryStarted`],
    /// [`Event::AttemptFailed`], [`Event::ReplayFailed`], [`Event::Recovered`] or
    /// [`Event::RecoveryGivenUp`], as it reported it. Handles stay usable throughout.
    Recovery(Event),
    /// The connection is over: `None` after a close this client asked for. Always the last
    /// event.
    Closed(Option<Error>),
}

/// How often a connection's machinery woke up and made system calls, since it started: the
/// figures to divide by a message count to see the cost per message that in-memory
/// benchmarks cannot show (see [`crate::Connection::io_counters`]). Plain integers, updated
/// under the lock the driver and handles take anyway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoCounters {
    /// Times the driver task ran (each run handles whatever is ready).
    pub driver_polls: u64,
    /// Reads from the transport that returned bytes (or end of stream).
    pub reads: u64,
    /// Writes to the transport (vectored; each carries many frames).
    pub writes: u64,
    /// Times a handle woke the idle driver because it queued output.
    pub driver_wakes: u64,
    /// Application tasks woken by the driver: a request completed, deliveries arrived for an
    /// idle consumer, a confirm arrived for a waiting publisher, a confirm window drained.
    pub task_wakes: u64,
}

/// The lock every handle and the driver share.
pub(crate) type SharedRef = Arc<Mutex<Shared>>;

/// Where a command's completion goes.
pub(crate) enum ReqState {
    /// Not completed; the waiting task's waker once it has polled.
    Waiting(Option<Waker>),
    /// Completed, not yet picked up.
    Done(Result<Reply, Error>),
    /// The waiting future was dropped; the completion only needs cleaning up after.
    Abandoned,
}

/// What a completion means beyond its reply, for the bookkeeping it needs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReqKind {
    /// Nothing beyond the reply.
    Plain,
    /// `open_channel`: the channel entry already exists under `key`.
    OpenChannel { key: u64 },
    /// `basic_consume`: the consumer queue is created, under `consumer`, when it completes,
    /// before any delivery for it can be routed.
    Consume {
        channel: ChannelId,
        consumer: u64,
        no_ack: bool,
    },
    /// `basic_get`: a message nobody waits for any more is handed back to the broker.
    Get { channel: ChannelId, no_ack: bool },
}

pub(crate) struct Request {
    pub(crate) state: ReqState,
    pub(crate) kind: ReqKind,
}

/// Returned messages for a channel's [`crate::Returns`] stream.
#[derive(Default)]
pub(crate) struct ReturnQueue {
    pub(crate) subscribed: bool,
    pub(crate) items: VecDeque<Box<ReturnedMessage>>,
    pub(crate) waker: Option<Waker>,
}

/// What the client keeps per channel handle.
pub(crate) struct ChannelEntry {
    pub(crate) id: ChannelId,
    /// `channel.open-ok` arrived.
    pub(crate) open: bool,
    /// Why it is no longer usable (set once).
    pub(crate) closed: Option<Error>,
    /// This client closed it.
    pub(crate) closed_by_us: bool,
    pub(crate) confirms: Confirms,
    pub(crate) returns: ReturnQueue,
    pub(crate) close_wakers: Vec<Waker>,
    /// `amqp.channel` span (child of the connection's), carrying the channel number.
    pub(crate) span: tracing::Span,
}

/// Deliveries for one consumer, waiting for its [`crate::Consumer`] stream.
pub(crate) struct ConsumerQueue {
    pub(crate) channel: ChannelId,
    pub(crate) tag: ConsumerTag,
    pub(crate) no_ack: bool,
    pub(crate) items: VecDeque<Box<proto::Delivery>>,
    pub(crate) end: Option<ConsumerEnd>,
    pub(crate) waker: Option<Waker>,
    /// A `Consumer` stream exists for it; without one deliveries are handed back.
    pub(crate) owned: bool,
}

/// One [`crate::Events`] stream's queue.
#[derive(Default)]
pub(crate) struct Subscriber {
    pub(crate) items: VecDeque<ConnectionEvent>,
    pub(crate) waker: Option<Waker>,
}

/// Everything behind the lock.
pub(crate) struct Shared {
    pub(crate) core: proto::Connection,
    /// The runtime's clock (the driver's timer): the only clock the client reads.
    clock: Arc<dyn Timer>,
    driver_waker: Option<Waker>,
    /// The driver found no output and waits to be woken when there is some.
    driver_idle: bool,
    pub(crate) requests: Map<RequestId, Request>,
    pub(crate) channels: Map<u64, ChannelEntry>,
    /// Channel number → key of the entry currently using it.
    channel_keys: Map<u16, u64>,
    pub(crate) consumers: Map<u64, ConsumerQueue>,
    /// Channel number → (consumer tag, consumer key) of its active consumers.
    consumer_keys: Map<u16, SmallVec<[(ConsumerTag, u64); 2]>>,
    pub(crate) subscribers: Map<u64, Subscriber>,
    /// Wake-ups and system calls so far.
    pub(crate) counters: IoCounters,
    /// Outbound bytes the driver took from the core and has not written yet: they count
    /// against `high_water_mark` as much as the bytes still queued in the core.
    writer_holds: usize,
    high_water_mark: usize,
    /// Publishers waiting for backpressure, a broker block or channel flow to clear.
    pub(crate) publish_waiters: Vec<Waker>,
    /// Consumers that dispatch found deliveries for: woken at the end of the dispatch, or by
    /// the driver once it has released the lock (see [`Shared::dispatch_deferred`]).
    woken: Vec<Waker>,
    /// Waiting for the handshake to finish, a recovery to end, or the connection to close.
    pub(crate) state_waiters: Vec<Waker>,
    /// Deadlines of the commands held back by a recovery (`handle::recovered`), earliest
    /// first: the driver sleeps until the first and then wakes `state_waiters`.
    held: BTreeSet<(Instant, u64)>,
    /// The core asked to dial (automatic recovery): where, for the driver.
    pub(crate) dial_request: Option<Option<amqp_proto::recovery::Endpoint>>,
    next_key: u64,
    pub(crate) connected: bool,
    /// `Some` after `Event::Closed`, holding what it carried.
    pub(crate) closed: Option<Option<Error>>,
    /// After `Event::Closed`: the error everything still waiting fails with.
    pub(crate) close_error: Option<Error>,
    /// The driver has stopped.
    pub(crate) driver_done: bool,
    /// `amqp.connection` span: connection name, endpoint and virtual host.
    pub(crate) span: tracing::Span,
    #[cfg(feature = "metrics")]
    pub(crate) exporter: Option<crate::metrics_export::Exporter>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("state", &self.core.state())
            .field("channels", &self.channels.len())
            .field("consumers", &self.consumers.len())
            .field("requests", &self.requests.len())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        core: proto::Connection,
        high_water_mark: usize,
        clock: Arc<dyn Timer>,
        span: tracing::Span,
    ) -> Self {
        Shared {
            span,
            counters: IoCounters::default(),
            writer_holds: 0,
            high_water_mark,
            #[cfg(feature = "metrics")]
            exporter: None,
            core,
            clock,
            driver_waker: None,
            driver_idle: false,
            requests: Map::default(),
            channels: Map::default(),
            channel_keys: Map::default(),
            consumers: Map::default(),
            consumer_keys: Map::default(),
            subscribers: Map::default(),
            publish_waiters: Vec::new(),
            woken: Vec::new(),
            state_waiters: Vec::new(),
            held: BTreeSet::new(),
            dial_request: None,
            next_key: 0,
            connected: false,
            closed: None,
            close_error: None,
            driver_done: false,
        }
    }

    /// The current time, from the runtime's clock.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Registers the deadline of a command held back by a recovery and wakes the driver, so
    /// that it sleeps until that deadline at the latest; returns the key to release it with.
    pub(crate) fn hold_until(&mut self, deadline: Instant) -> u64 {
        let key = self.next_key();
        self.held.insert((deadline, key));
        if let Some(w) = &self.driver_waker {
            w.wake_by_ref();
        }
        key
    }

    /// The held command's wait is over.
    pub(crate) fn release_hold(&mut self, deadline: Instant, key: u64) {
        self.held.remove(&(deadline, key));
    }

    /// The driver's next deadline: the core's, or a held command's if earlier.
    #[inline]
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let core = self.core.poll_timeout();
        match self.held.first() {
            Some(&(held, _)) => Some(core.map_or(held, |c| c.min(held))),
            None => core,
        }
    }

    /// The driver's timer fired at `now`: the core's timers run, and commands held back by a
    /// recovery whose deadline passed are woken to fail.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
        // Leaving the set, so the driver does not fire again for them before the waiters
        // run; each waiter reads its own deadline.
        let mut due = false;
        while self.held.first().is_some_and(|&(at, _)| at <= now) {
            self.held.pop_first();
            due = true;
        }
        if due {
            wake_all(&mut self.state_waiters);
        }
        self.dispatch();
    }

    pub(crate) fn next_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    // ----- the driver's side -----

    /// Records the driver's waker; `idle` says it has nothing to write and must be woken
    /// when output appears.
    pub(crate) fn park_driver(&mut self, waker: &Waker, idle: bool) {
        set_waker(&mut self.driver_waker, waker);
        self.driver_idle = idle;
    }

    /// Wakes the driver if it sleeps while there is output (or the connection just closed).
    #[inline]
    pub(crate) fn wake_driver(&mut self) {
        if self.driver_idle && (self.core.wants_write() || self.core.is_closed()) {
            self.driver_idle = false;
            if let Some(w) = &self.driver_waker {
                self.counters.driver_wakes += 1;
                w.wake_by_ref();
            }
        }
    }

    /// To call after every core command: routes what it emitted, wakes the driver if needed.
    #[inline]
    pub(crate) fn after_command(&mut self) {
        self.dispatch();
        self.wake_driver();
    }

    /// The driver now holds `bytes` taken from the core and not yet written; publishers
    /// waiting on backpressure go on once the total is below the mark.
    pub(crate) fn writer_holds(&mut self, bytes: usize) {
        self.writer_holds = bytes;
        if !self.publish_waiters.is_empty() && !self.backpressured() {
            wake_all(&mut self.publish_waiters);
        }
    }

    /// Whether a publish must wait for output to drain: the bytes queued in the core and the
    /// bytes the writer holds reach the high-water mark. (With nothing in the writer the
    /// core's own check decides, so the two never disagree.)
    #[inline]
    pub(crate) fn backpressured(&self) -> bool {
        self.writer_holds > 0
            && self.core.transmit_len() + self.writer_holds >= self.high_water_mark
    }

    // ----- lookups for handles -----

    /// The entry of an open channel handle, or why it cannot be used.
    pub(crate) fn channel(&mut self, key: u64) -> Result<&mut ChannelEntry, Error> {
        match self.channels.get_mut(&key) {
            Some(entry) => match &entry.closed {
                None => Ok(entry),
                Some(e) => Err(e.clone()),
            },
            None => Err(Error::Usage(Misuse::NoSuchChannel)),
        }
    }

    /// Creates the entry for a channel being opened on number `id`.
    pub(crate) fn add_channel(&mut self, id: ChannelId) -> u64 {
        let key = self.next_key();
        self.channels.insert(
            key,
            ChannelEntry {
                id,
                open: false,
                closed: None,
                closed_by_us: false,
                confirms: Confirms::default(),
                returns: ReturnQueue::default(),
                close_wakers: Vec::new(),
                span: tracing::info_span!(parent: &self.span, "amqp.channel", channel = id.0),
            },
        );
        self.channel_keys.insert(id.0, key);
        key
    }

    /// Marks a channel closed by this client (after the core call and its dispatch).
    pub(crate) fn closed_by_us(&mut self, key: u64, error: Error) {
        if let Some(entry) = self.channels.get_mut(&key) {
            if self.channel_keys.get(&entry.id.0) == Some(&key) {
                self.channel_keys.remove(&entry.id.0);
            }
            entry.closed_by_us = true;
            Self::end_channel(entry, error, &mut self.publish_waiters);
        }
    }

    /// Forgets a channel handle's entry (the last handle was dropped).
    pub(crate) fn remove_channel(&mut self, key: u64) {
        if let Some(entry) = self.channels.remove(&key) {
            if self.channel_keys.get(&entry.id.0) == Some(&key) {
                self.channel_keys.remove(&entry.id.0);
            }
        }
    }

    fn end_channel(entry: &mut ChannelEntry, error: Error, publish_waiters: &mut Vec<Waker>) {
        if entry.closed.is_none() {
            entry.closed = Some(error);
        }
        wake_all(&mut entry.close_wakers);
        entry.confirms.wake_waiters();
        if let Some(w) = entry.returns.waker.take() {
            w.wake();
        }
        // A publisher of this channel may be parked on backpressure.
        wake_all(publish_waiters);
    }

    fn entry_by_number(&mut self, ch: ChannelId) -> Option<&mut ChannelEntry> {
        let key = self.channel_keys.get(&ch.0)?;
        self.channels.get_mut(key)
    }

    /// Registers a command's waiter (call right after the core accepted the command).
    pub(crate) fn add_request(&mut self, id: RequestId, kind: ReqKind) {
        self.requests.insert(
            id,
            Request {
                state: ReqState::Waiting(None),
                kind,
            },
        );
    }

    /// Polls a command's completion.
    pub(crate) fn poll_request(
        &mut self,
        id: RequestId,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Reply, Error>> {
        let Some(req) = self.requests.get_mut(&id) else {
            return Poll::Ready(Err(self
                .close_error
                .clone()
                .unwrap_or(Error::Usage(Misuse::OutcomeTaken))));
        };
        match &mut req.state {
            ReqState::Waiting(w) => {
                set_waker(w, cx.waker());
                Poll::Pending
            }
            ReqState::Done(_) | ReqState::Abandoned => {
                let Some(Request {
                    state: ReqState::Done(result),
                    ..
                }) = self.requests.remove(&id)
                else {
                    return Poll::Ready(Err(Error::Usage(Misuse::OutcomeTaken)));
                };
                Poll::Ready(result)
            }
        }
    }

    /// The future waiting for `id` was dropped before it took the result.
    pub(crate) fn abandon_request(&mut self, id: RequestId) {
        let Some(req) = self.requests.remove(&id) else {
            return;
        };
        match req.state {
            ReqState::Waiting(_) => {
                if !matches!(req.kind, ReqKind::Plain) {
                    self.requests.insert(
                        id,
                        Request {
                            state: ReqState::Abandoned,
                            kind: req.kind,
                        },
                    );
                }
            }
            ReqState::Done(result) => self.cleanup_abandoned(req.kind, result),
            ReqState::Abandoned => {}
        }
        self.after_command();
    }

    // ----- dispatch -----

    /// Routes every event the core has queued, then wakes the consumers it found deliveries
    /// for. Never blocks.
    pub(crate) fn dispatch(&mut self) {
        self.route();
        wake_all(&mut self.woken);
    }

    /// Like [`Shared::dispatch`], but hands the wakers of consumers to `wakes` instead of
    /// waking them, for the driver to wake once it has released the lock: a consumer woken
    /// under the lock runs on another thread at once (async-executor), takes only the
    /// deliveries routed so far and then blocks on the lock the driver still holds.
    pub(crate) fn dispatch_deferred(&mut self, wakes: &mut Vec<Waker>) {
        self.route();
        wakes.append(&mut self.woken);
    }

    /// Routes every event the core has queued; consumers to wake go to `self.woken`.
    fn route(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Delivery(d) => self.deliver(d),
                Event::Confirmed {
                    channel,
                    tag,
                    outcome,
                } => {
                    // Woken at once, unlike consumers: a publisher that then blocks on the
                    // lock until the driver is done publishes while the driver still runs,
                    // and its messages join the driver's next write (waking it after the
                    // lock tripled reads + writes per confirm against the fake broker).
                    if let Some(entry) = self.entry_by_number(channel) {
                        let woken = entry.confirms.resolve(tag, outcome);
                        self.counters.task_wakes += woken as u64;
                    }
                }
                Event::Completed { id, result } => self.complete(id, result),
                Event::Connected {
                    server_properties,
                    tuning,
                } => {
                    let text = |key: &str| {
                        server_properties
                            .get(key)
                            .and_then(|v| match v {
                                amqp_proto::FieldValue::LongString(s) => {
                                    Some(String::from_utf8_lossy(s).into_owned())
                                }
                                _ => None,
                            })
                            .unwrap_or_default()
                    };
                    tracing::info!(
                        parent: &self.span,
                        product = %text("product"),
                        version = %text("version"),
                        channel_max = tuning.channel_max,
                        frame_max = tuning.frame_max,
                        heartbeat = tuning.heartbeat,
                        "amqp: connection established"
                    );
                    self.connected = true;
                    wake_all(&mut self.state_waiters);
                }
                Event::Returned(r) => self.returned(r),
                Event::ConsumerEnded {
                    channel,
                    consumer_tag,
                    reason,
                } => self.consumer_ended(channel, &consumer_tag, reason),
                Event::ChannelClosed { channel, error } => {
                    if let Some(key) = self.channel_keys.remove(&channel.0) {
                        if let Some(entry) = self.channels.get_mut(&key) {
                            if entry.closed_by_us {
                                tracing::debug!(parent: &entry.span, reason = %error, "amqp: channel closed");
                            } else {
                                tracing::warn!(parent: &entry.span, kind = ?error.kind(), reason = %error, "amqp: channel closed");
                            }
                            Self::end_channel(entry, error, &mut self.publish_waiters);
                        }
                    }
                }
                Event::ChannelFlow { channel, active } => {
                    let span = self.entry_by_number(channel).map(|e| e.span.clone());
                    tracing::info!(parent: span.as_ref().unwrap_or(&self.span), active, "amqp: channel flow");
                    if active {
                        wake_all(&mut self.publish_waiters);
                    }
                    self.broadcast(ConnectionEvent::ChannelFlow { channel, active });
                }
                Event::Blocked { reason } => {
                    tracing::warn!(parent: &self.span, reason = %reason.as_str(), "amqp: connection blocked by the broker; publishes wait");
                    self.broadcast(ConnectionEvent::Blocked { reason });
                }
                Event::Unblocked => {
                    tracing::info!(parent: &self.span, "amqp: connection unblocked");
                    wake_all(&mut self.publish_waiters);
                    self.broadcast(ConnectionEvent::Unblocked);
                }
                Event::Warning(e) => {
                    tracing::warn!(parent: &self.span, error = %e, "amqp: the broker did something wrong");
                    self.broadcast(ConnectionEvent::Warning(e));
                }
                Event::Dial { attempt, endpoint } => {
                    tracing::debug!(parent: &self.span, attempt, "amqp: dialling to recover");
                    // The driver dispatched this itself and picks it up next.
                    self.dial_request = Some(endpoint);
                }
                event @ (Event::RecoveryStarted { .. }
                | Event::AttemptFailed { .. }
                | Event::ReplayFailed { .. }
                | Event::RecoveryGivenUp(_)) => {
                    tracing::warn!(parent: &self.span, ?event, "amqp: recovery");
                    self.broadcast(ConnectionEvent::Recovery(event));
                }
                event @ Event::Recovered { .. } => {
                    tracing::info!(parent: &self.span, ?event, "amqp: recovered");
                    // Commands and publishes held back during the recovery go on.
                    wake_all(&mut self.state_waiters);
                    wake_all(&mut self.publish_waiters);
                    self.broadcast(ConnectionEvent::Recovery(event));
                }
                Event::Closed(error) => self.on_closed(error),
                other => tracing::debug!(event = ?other, "amqp: unhandled event"),
            }
        }
        #[cfg(feature = "metrics")]
        if let Some(exporter) = &mut self.exporter {
            let now = self.clock.now();
            let core = &self.core;
            exporter.tick(now, self.closed.is_some(), || core.metrics(now));
        }
    }

    fn broadcast(&mut self, event: ConnectionEvent) {
        for sub in self.subscribers.values_mut() {
            sub.items.push_back(event.clone());
            if let Some(w) = sub.waker.take() {
                w.wake();
            }
        }
    }

    fn complete(&mut self, id: RequestId, result: Result<Reply, Error>) {
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        let kind = req.kind;
        let abandoned = matches!(req.state, ReqState::Abandoned);
        // Bookkeeping that must be in place before later events are routed.
        match (kind, &result) {
            (
                ReqKind::Consume {
                    channel,
                    consumer,
                    no_ack,
                },
                Ok(Reply::Consuming { consumer_tag }),
            ) => {
                self.consumers.insert(
                    consumer,
                    ConsumerQueue {
                        channel,
                        tag: consumer_tag.clone(),
                        no_ack,
                        items: VecDeque::new(),
                        end: None,
                        waker: None,
                        owned: !abandoned,
                    },
                );
                self.consumer_keys
                    .entry(channel.0)
                    .or_default()
                    .push((consumer_tag.clone(), consumer));
            }
            (ReqKind::OpenChannel { key }, Ok(_)) => {
                if let Some(entry) = self.channels.get_mut(&key) {
                    entry.open = true;
                }
            }
            (ReqKind::OpenChannel { key }, Err(e)) => {
                if let Some(entry) = self.channels.get_mut(&key) {
                    Self::end_channel(entry, e.clone(), &mut self.publish_waiters);
                }
            }
            _ => {}
        }
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        match &mut req.state {
            ReqState::Waiting(waker) => {
                let waker = waker.take();
                req.state = ReqState::Done(result);
                if let Some(w) = waker {
                    self.counters.task_wakes += 1;
                    w.wake();
                }
            }
            ReqState::Abandoned => {
                self.requests.remove(&id);
                self.cleanup_abandoned(kind, result);
            }
            ReqState::Done(_) => {}
        }
    }

    /// Undoes what a command nobody waits for any more left behind.
    fn cleanup_abandoned(&mut self, kind: ReqKind, result: Result<Reply, Error>) {
        match (kind, result) {
            (ReqKind::OpenChannel { key }, result) => {
                if let (Ok(_), Some(entry)) = (result, self.channels.get(&key)) {
                    let id = entry.id;
                    let _ = self.core.close_channel(id);
                }
                self.remove_channel(key);
            }
            (ReqKind::Consume { consumer, .. }, Ok(_)) => self.drop_consumer(consumer),
            (ReqKind::Get { channel, no_ack }, Ok(Reply::Get(Some(message)))) if !no_ack => {
                let tag = message.delivery.delivery_tag;
                let _ = self.core.basic_reject(channel, tag, true);
            }
            _ => {}
        }
    }

    fn deliver(&mut self, d: Box<proto::Delivery>) {
        let key = self.consumer_keys.get(&d.channel.0).and_then(|list| {
            list.iter()
                .find(|(tag, _)| *tag == d.consumer_tag)
                .map(|(_, key)| *key)
        });
        let Some(q) = key.and_then(|key| self.consumers.get_mut(&key)) else {
            tracing::debug!(channel = d.channel.0, consumer = %&*d.consumer_tag,
                "amqp: delivery for no consumer dropped");
            return;
        };
        if q.owned {
            q.items.push_back(d);
            if let Some(w) = q.waker.take() {
                self.counters.task_wakes += 1;
                self.woken.push(w);
            }
        } else if !q.no_ack {
            // Its Consumer was dropped and the cancel is on its way: hand it back.
            let _ = self.core.basic_reject(d.channel, d.delivery_tag, true);
        }
    }

    fn returned(&mut self, r: Box<ReturnedMessage>) {
        match self.entry_by_number(r.channel) {
            Some(entry) if entry.returns.subscribed => {
                entry.returns.items.push_back(r);
                if let Some(w) = entry.returns.waker.take() {
                    w.wake();
                }
            }
            _ => tracing::debug!(
                channel = r.channel.0,
                "amqp: returned message dropped (no on_return listener)"
            ),
        }
    }

    fn consumer_ended(&mut self, channel: ChannelId, tag: &ConsumerTag, reason: ConsumerEnd) {
        let mut key = None;
        if let Some(list) = self.consumer_keys.get_mut(&channel.0) {
            if let Some(i) = list.iter().position(|(t, _)| t == tag) {
                key = Some(list.remove(i).1);
            }
            if list.is_empty() {
                self.consumer_keys.remove(&channel.0);
            }
        }
        let Some(key) = key else {
            return;
        };
        let Some(q) = self.consumers.get_mut(&key) else {
            return;
        };
        if !q.owned {
            self.consumers.remove(&key);
            return;
        }
        q.end = Some(reason);
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }

    /// A `Consumer` stream went away: hand back what it never saw and cancel it.
    pub(crate) fn drop_consumer(&mut self, key: u64) {
        let Some(q) = self.consumers.get_mut(&key) else {
            return;
        };
        q.owned = false;
        let items = std::mem::take(&mut q.items);
        let (channel, no_ack, ended) = (q.channel, q.no_ack, q.end.is_some());
        let tag = q.tag.clone();
        if !no_ack {
            for d in items {
                let _ = self.core.basic_reject(channel, d.delivery_tag, true);
            }
        }
        if ended
            || self
                .core
                .basic_cancel(channel, &tag, proto::BasicCancelOptions::default())
                .is_err()
        {
            // Over already, or the channel is going away: nothing more will come for it.
            self.consumers.remove(&key);
            if let Some(list) = self.consumer_keys.get_mut(&channel.0) {
                list.retain(|(_, k)| *k != key);
            }
        }
        self.after_command();
    }

    fn on_closed(&mut self, error: Option<Error>) {
        match &error {
            None => tracing::info!(parent: &self.span, "amqp: connection closed by the client"),
            Some(e) => {
                tracing::warn!(parent: &self.span, kind = ?e.kind(), reason = %e, "amqp: connection closed")
            }
        }
        let failure = match &error {
            Some(e) => e.clone(),
            // The core hands out the real reason from any command once it is closed; opening
            // a channel does nothing else in that state.
            None => match self.core.open_channel() {
                Err(e) => e,
                Ok(_) => Error::Usage(Misuse::ConnectionNotOpen),
            },
        };
        self.closed = Some(error.clone());
        self.close_error = Some(failure.clone());
        for req in self.requests.values_mut() {
            if let ReqState::Waiting(waker) = &mut req.state {
                let waker = waker.take();
                req.state = ReqState::Done(Err(failure.clone()));
                if let Some(w) = waker {
                    w.wake();
                }
            }
        }
        self.requests
            .retain(|_, r| !matches!(r.state, ReqState::Abandoned));
        self.channel_keys.clear();
        for entry in self.channels.values_mut() {
            Self::end_channel(entry, failure.clone(), &mut self.publish_waiters);
        }
        self.consumer_keys.clear();
        self.consumers.retain(|_, q| q.owned);
        for q in self.consumers.values_mut() {
            if q.end.is_none() {
                q.end = Some(ConsumerEnd::Closed(failure.clone()));
            }
            if let Some(w) = q.waker.take() {
                w.wake();
            }
        }
        self.broadcast(ConnectionEvent::Closed(error));
        wake_all(&mut self.publish_waiters);
        wake_all(&mut self.state_waiters);
        // The driver flushes what is left and stops.
        if let Some(w) = &self.driver_waker {
            w.wake_by_ref();
        }
    }
}
