//! The sans-IO client connection: handshake to close, channels, every operation, events.
//!
//! The caller owns the loop. It moves received bytes in ([`Connection::handle_input`], or
//! [`Connection::read_buf`] then [`Connection::process_input`]), writes out what
//! [`Connection::io_slices`] lends (then [`Connection::advance_transmit`]), takes
//! [`Event`]s from [`Connection::poll_event`], and wakes at [`Connection::poll_timeout`] to call
//! [`Connection::handle_timeout`]. Time is always passed in; the core never reads a clock.
//!
//! Commands return a [`RequestId`] at once; their outcome arrives later as
//! [`Event::Completed`]. Every pending request, consumer and confirm is failed with the real
//! reason on every close path.

mod channel;
mod config;
mod error;
mod event;
pub mod recovery;
mod topology;

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

pub use config::ConnectionConfig;
pub use error::{CloseReason, Error, ErrorKind, Initiator, WouldBlock};
pub use event::{
    ChannelId, Confirmation, ConsumerEnd, ConsumerTag, Delivery, DeliveryTag, Event, GetMessage,
    Reply, RequestId, ReturnedMessage, Tuning,
};
pub use topology::{RecordedChannel, RecordedConsumer, RecordedQueue, Topology};

use crate::error::ReplyCode;
use crate::frame::{Frame, FrameDecoder, MIN_FRAME_MAX, PROTOCOL_HEADER};
use crate::properties::BasicProperties;
use crate::spec::*;
use crate::transmit::Transmit;
use crate::types::{FieldTable, LongString, ShortString};
use channel::{Channel, ChannelState, ChannelTable, Pending};

/// The reason a broker's `connection.close` or `channel.close` carries (the two have the same
/// fields).
macro_rules! server_reason {
    ($close:expr) => {{
        let close = $close;
        CloseReason {
            initiator: Initiator::Server,
            code: ReplyCode(close.reply_code),
            text: close.reply_text.clone(),
            class_id: close.class_id,
            method_id: close.method_id,
        }
    }};
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Protocol header sent, waiting for `connection.start`.
    AwaitingStart,
    /// `start-ok` sent, waiting for `secure` or `tune`.
    Authenticating,
    /// `open` sent, waiting for `open-ok`.
    Opening,
    /// Ready for commands.
    Open,
    /// `close` sent, waiting for `close-ok`.
    Closing,
    /// Finished; [`Event::Closed`] was emitted.
    Closed,
}

/// Options of `exchange.declare`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeDeclareOptions {
    /// Only check that it exists.
    pub passive: bool,
    /// Survive a broker restart.
    pub durable: bool,
    /// Delete when the last binding goes.
    pub auto_delete: bool,
    /// Not publishable directly, only via exchange bindings.
    pub internal: bool,
    /// Do not wait for the broker's answer.
    pub nowait: bool,
}

/// Options of `queue.declare`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDeclareOptions {
    /// Only check that it exists.
    pub passive: bool,
    /// Survive a broker restart.
    pub durable: bool,
    /// Only this connection may use it; deleted when it closes.
    pub exclusive: bool,
    /// Delete when the last consumer goes.
    pub auto_delete: bool,
    /// Do not wait for the broker's answer.
    pub nowait: bool,
}

/// Options of `queue.delete`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDeleteOptions {
    /// Only if it has no consumers.
    pub if_unused: bool,
    /// Only if it has no messages.
    pub if_empty: bool,
    /// Do not wait for the broker's answer.
    pub nowait: bool,
}

/// Options of `basic.consume`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicConsumeOptions {
    /// Do not deliver messages published on this connection (RabbitMQ ignores it).
    pub no_local: bool,
    /// Deliveries need no acknowledgement.
    pub no_ack: bool,
    /// The only consumer of the queue.
    pub exclusive: bool,
    /// Do not wait for the broker's answer (needs a consumer tag).
    pub nowait: bool,
}

/// Options of `basic.publish`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicPublishOptions {
    /// Return the message if no queue takes it.
    pub mandatory: bool,
    /// Not supported by RabbitMQ (it closes the connection); kept for completeness.
    pub immediate: bool,
}

fn short(s: &str) -> Result<ShortString, Error> {
    ShortString::try_from(s).map_err(Error::Encode)
}

/// The client side of one AMQP connection, without I/O.
///
/// ```
/// use amqp_proto::{Connection, ConnectionConfig, PROTOCOL_HEADER};
/// use std::time::Instant;
///
/// let mut conn = Connection::new(ConnectionConfig::default(), Instant::now());
/// // The first bytes to send are the protocol header.
/// let chunk = conn.pop_transmit().unwrap();
/// assert_eq!(&chunk[..], &PROTOCOL_HEADER);
/// assert!(conn.poll_event().is_none());
/// ```
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    state: State,
    now: Instant,
    started: Instant,
    decoder: FrameDecoder,
    read_buf: BytesMut,
    /// Read-buffer length after the last decode, to tell whether new bytes arrived.
    read_seen: usize,
    /// Set after a decode error: the stream cannot be trusted any more.
    input_poisoned: bool,
    transmit: Transmit,
    events: VecDeque<Event>,
    channels: ChannelTable,
    tuning: Tuning,
    server_properties: FieldTable,
    next_request: u64,
    last_recv: Instant,
    last_sent: Instant,
    blocked: Option<ShortString>,
    /// Connection-level requests (update-secret, close), answered in order.
    conn_pending: VecDeque<(RequestId, MethodId)>,
    close_deadline: Option<Instant>,
    /// What ends the connection once the close handshake finishes.
    close_error: Option<Error>,
    /// The reason of a close this client asked for. `close_error` stays `None` then (the
    /// end is orderly), but commands issued while the close completes, and after, must still
    /// fail with this reason rather than a generic usage error.
    own_close: Option<Error>,
    topology: Topology,
    /// Set while a channel is out of the table being handled.
    in_channel: bool,
    /// Where bodies that arrive in several frames are joined, one slab for the connection
    /// (see `channel::carve`).
    join_slab: BytesMut,
    /// A violation found while a channel was out of the table, acted on once it is back.
    deferred_violation: Option<(ReplyCode, String)>,
}

impl Connection {
    /// Starts a connection at time `now`: the protocol header is queued for sending.
    pub fn new(config: ConnectionConfig, now: Instant) -> Self {
        let mut transmit = Transmit::default();
        transmit.push_raw(&PROTOCOL_HEADER);
        Connection {
            tuning: Tuning {
                channel_max: config.channel_max,
                frame_max: crate::frame::PRE_TUNE_FRAME_MAX,
                heartbeat: 0,
            },
            config,
            state: State::AwaitingStart,
            now,
            started: now,
            decoder: FrameDecoder::default(),
            read_buf: BytesMut::with_capacity(64 * 1024),
            read_seen: 0,
            input_poisoned: false,
            transmit,
            events: VecDeque::new(),
            channels: ChannelTable::default(),
            server_properties: FieldTable::new(),
            next_request: 0,
            last_recv: now,
            last_sent: now,
            blocked: None,
            conn_pending: VecDeque::new(),
            close_deadline: None,
            close_error: None,
            own_close: None,
            topology: Topology::default(),
            in_channel: false,
            join_slab: BytesMut::new(),
            deferred_violation: None,
        }
    }

    // ----- driving -----

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether commands can be sent.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the connection is over (after [`Event::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The limits agreed with the broker (pre-tune values before that).
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// What the broker said about itself in `connection.start`.
    pub fn server_properties(&self) -> &FieldTable {
        &self.server_properties
    }

    /// What this connection declared that still stands, for recovery.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Why the connection ended (or is ending), once it is closing or closed.
    pub fn close_error(&self) -> Option<&Error> {
        match self.state {
            State::Closing | State::Closed => self.close_error.as_ref().or(self.own_close.as_ref()),
            _ => None,
        }
    }

    /// Whether publishing on the channel is allowed by `channel.flow` (`None`: no such
    /// open channel).
    pub fn channel_flow_active(&self, ch: ChannelId) -> Option<bool> {
        self.channels.get(&ch.0).map(|c| c.flow_active)
    }

    /// Whether the broker has blocked publishing (`connection.blocked`).
    pub fn is_blocked(&self) -> bool {
        self.blocked.is_some()
    }

    /// The buffer received bytes go into, for callers that read straight into it (no copy);
    /// call [`Connection::process_input`] afterwards.
    pub fn read_buf(&mut self) -> &mut BytesMut {
        &mut self.read_buf
    }

    /// Copies `data` into the read buffer and processes it.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        self.read_buf.extend_from_slice(data);
        self.process_input(now);
    }

    /// Decodes and handles every whole frame in the read buffer.
    pub fn process_input(&mut self, now: Instant) {
        self.now = now;
        if self.read_buf.len() != self.read_seen {
            self.last_recv = now;
        }
        if self.input_poisoned || self.state == State::Closed {
            self.read_buf.clear();
            self.read_seen = 0;
            return;
        }
        if self.state == State::AwaitingStart && looks_like_tls_record(&self.read_buf) {
            // A TLS server answering our plaintext protocol header with an alert record.
            self.input_poisoned = true;
            self.read_buf.clear();
            self.read_seen = 0;
            return self.finish(Some(Error::Protocol {
                code: ReplyCode::FRAME_ERROR,
                text: "the server answered with a TLS record: this port expects TLS, \
                       connect with amqps://"
                    .into(),
            }));
        }
        loop {
            match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(frame)) => {
                    self.handle_frame(frame);
                    if self.input_poisoned || self.state == State::Closed {
                        self.read_buf.clear();
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.input_poisoned = true;
                    self.violation(e.reply_code(), e.to_string());
                    self.read_buf.clear();
                    break;
                }
            }
        }
        self.read_seen = self.read_buf.len();
    }

    /// The transport reached end of stream.
    pub fn handle_eof(&mut self, now: Instant) {
        self.now = now;
        let error = match self.state {
            State::Closed => return,
            State::Closing => self.close_error.take(),
            State::Authenticating => Some(Error::Authentication(
                "the broker closed the connection during login (wrong credentials or mechanism?)"
                    .into(),
            )),
            _ => Some(Error::UnexpectedEof {
                mid_frame: !self.read_buf.is_empty(),
            }),
        };
        self.finish(error);
    }

    /// The transport failed; everything pending fails with this error.
    pub fn handle_transport_error(
        &mut self,
        kind: std::io::ErrorKind,
        message: String,
        now: Instant,
    ) {
        self.now = now;
        if self.state == State::Closed {
            return;
        }
        if self.state == State::Closing {
            // A close was under way: ours (the broker may just have hung up early), or one
            // for a protocol violation, which stays the real reason (as on EOF).
            let error = self.close_error.take();
            self.finish(error);
            return;
        }
        self.finish(Some(Error::Transport { kind, message }));
    }

    /// When [`Connection::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        match self.state {
            State::Closed => return None,
            State::AwaitingStart | State::Authenticating | State::Opening => {
                if let Some(t) = self.config.connection_timeout {
                    consider(self.started + t);
                }
            }
            _ => {}
        }
        if let Some(t) = self.close_deadline {
            consider(t);
        }
        if let Some(h) = self.heartbeat_interval() {
            consider(self.last_sent + h / 2);
            consider(self.last_recv + h * 2);
        }
        next
    }

    /// Handles the passage of time: heartbeats, dead peers, handshake and close timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.state == State::Closed {
            return;
        }
        if let (State::AwaitingStart | State::Authenticating | State::Opening, Some(t)) =
            (self.state, self.config.connection_timeout)
        {
            if now >= self.started + t {
                self.finish(Some(Error::HandshakeTimeout));
                return;
            }
        }
        if let Some(deadline) = self.close_deadline {
            if now >= deadline {
                let error = self.close_error.take();
                self.finish(error);
                return;
            }
        }
        if let Some(h) = self.heartbeat_interval() {
            if now >= self.last_recv + h * 2 {
                // While closing, a silent peer ends the close as the close timeout would: with
                // the reason of the close (none for ours), not a heartbeat failure.
                let error = match self.state {
                    State::Closing => self.close_error.take(),
                    _ => Some(Error::HeartbeatTimeout(
                        u32::from(self.tuning.heartbeat) * 2,
                    )),
                };
                self.finish(error);
                return;
            }
            if now >= self.last_sent + h / 2 {
                let _ = self.transmit.push_frame(&Frame::Heartbeat);
                self.last_sent = now;
            }
        }
    }

    fn heartbeat_interval(&self) -> Option<Duration> {
        match self.state {
            State::Opening | State::Open | State::Closing if self.tuning.heartbeat > 0 => {
                Some(Duration::from_secs(u64::from(self.tuning.heartbeat)))
            }
            _ => None,
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether bytes are waiting to be written.
    pub fn wants_write(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// Bytes waiting to be written.
    pub fn transmit_len(&self) -> usize {
        self.transmit.len()
    }

    /// Whether publishes would be refused with [`WouldBlock::Backpressure`] now.
    pub fn is_backpressured(&self) -> bool {
        self.transmit.len() >= self.config.high_water_mark
    }

    /// Lends the queued output as slices for a vectored write; see [`Transmit::io_slices`].
    pub fn io_slices<'a>(&'a mut self, dst: &mut [IoSlice<'a>]) -> usize {
        self.transmit.io_slices(dst)
    }

    /// Drops `n` written bytes from the front of the output.
    pub fn advance_transmit(&mut self, n: usize) {
        self.transmit.advance(n);
    }

    /// Takes the next chunk of output, for callers that write one buffer at a time.
    pub fn pop_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_chunk()
    }

    // ----- commands -----

    fn next_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    fn closed_error(&self) -> Error {
        self.close_error
            .clone()
            .or_else(|| self.own_close.clone())
            .unwrap_or(Error::Usage("the connection is not open"))
    }

    fn check_open(&self) -> Result<(), Error> {
        match self.state {
            State::Open => Ok(()),
            _ => Err(self.closed_error()),
        }
    }

    fn open_channel_mut(&mut self, ch: ChannelId) -> Result<&mut Channel, Error> {
        self.check_open()?;
        match self.channels.get_mut(&ch.0) {
            Some(c) if c.state == ChannelState::Open => Ok(c),
            Some(_) => Err(Error::Usage("the channel is opening or closing")),
            None => Err(Error::Usage("no such channel (never opened, or closed)")),
        }
    }

    fn send_method(&mut self, channel: u16, method: &Method) -> Result<(), Error> {
        // Once tuned, a method frame over frame_max is refused rather than sent (the broker
        // would close the connection with 501).
        let frame_max = match self.state {
            State::Open => self.tuning.frame_max,
            _ => 0,
        };
        self.transmit.push_method(channel, method, frame_max)?;
        self.last_sent = self.now;
        Ok(())
    }

    /// Sends a synchronous method on an open channel and registers it for its reply; no-wait
    /// requests complete at once.
    fn request(&mut self, ch: ChannelId, method: Method, nowait: bool) -> Result<RequestId, Error> {
        self.open_channel_mut(ch)?;
        self.send_method(ch.0, &method)?;
        let id = self.next_id();
        if nowait {
            let reply = match &method {
                Method::BasicConsume(m) => {
                    if let Some(c) = self.channels.get_mut(&ch.0) {
                        c.consumers.insert(m.consumer_tag.clone());
                    }
                    Reply::Consuming {
                        consumer_tag: m.consumer_tag.clone(),
                    }
                }
                Method::BasicCancel(m) => {
                    self.end_consumer(ch.0, &m.consumer_tag, ConsumerEnd::Cancelled);
                    Reply::Sent
                }
                _ => Reply::Sent,
            };
            self.topology.record(ch.0, &method, None);
            self.events.push_back(Event::Completed {
                id,
                result: Ok(reply),
            });
        } else if let Some(c) = self.channels.get_mut(&ch.0) {
            c.pending.push_back(Pending {
                id,
                request: method,
            });
        }
        Ok(id)
    }

    /// Opens a channel on the lowest free number. Completes with [`Reply::ChannelOpened`].
    pub fn open_channel(&mut self) -> Result<(ChannelId, RequestId), Error> {
        self.check_open()?;
        let max = match self.tuning.channel_max {
            0 => u16::MAX,
            m => m,
        };
        let id = (1..=max)
            .find(|n| !self.channels.contains_key(n))
            .ok_or(Error::Usage(
                "all channel numbers up to channel_max are in use",
            ))?;
        self.send_method(id, &ChannelOpen::default().into())?;
        let rid = self.next_id();
        let mut channel = Channel::new();
        channel.pending.push_back(Pending {
            id: rid,
            request: ChannelOpen::default().into(),
        });
        self.channels.insert(id, channel);
        Ok((ChannelId(id), rid))
    }

    /// Closes a channel (reply 200). Everything pending on it fails at once with that reason;
    /// completes with [`Reply::ChannelClosed`] when the broker confirms.
    pub fn close_channel(&mut self, ch: ChannelId) -> Result<RequestId, Error> {
        self.check_open()?;
        let Some(channel) = self.channels.get(&ch.0) else {
            return Err(Error::Usage("no such channel (never opened, or closed)"));
        };
        if channel.state == ChannelState::Closing {
            return Err(Error::Usage("the channel is already closing"));
        }
        let close = ChannelClose {
            reply_code: ReplyCode::REPLY_SUCCESS.0,
            reply_text: ShortString::from_static("closed by client"),
            class_id: 0,
            method_id: 0,
        };
        self.send_method(ch.0, &close.clone().into())?;
        let reason = CloseReason {
            initiator: Initiator::Client,
            code: ReplyCode::REPLY_SUCCESS,
            text: close.reply_text.clone(),
            class_id: 0,
            method_id: 0,
        };
        let error = Error::ChannelClosed {
            channel: ch.0,
            reason,
        };
        if let Some(channel) = self.channels.remove(&ch.0) {
            self.fail_channel(ch.0, channel, &error);
        }
        // Its consumers ended just now; recovery must not bring them back.
        self.topology.forget_channel(ch.0);
        let id = self.next_id();
        let mut closing = Channel::new();
        closing.state = ChannelState::Closing;
        closing.pending.push_back(Pending {
            id,
            request: close.into(),
        });
        self.channels.insert(ch.0, closing);
        Ok(id)
    }

    /// Asks the broker to pause (`false`) or resume (`true`) deliveries on the channel.
    pub fn channel_flow(&mut self, ch: ChannelId, active: bool) -> Result<RequestId, Error> {
        self.request(ch, ChannelFlow { active }.into(), false)
    }

    /// Declares an exchange of `kind` (`direct`, `fanout`, `topic`, `headers`, …).
    pub fn exchange_declare(
        &mut self,
        ch: ChannelId,
        exchange: &str,
        kind: &str,
        options: ExchangeDeclareOptions,
        arguments: FieldTable,
    ) -> Result<RequestId, Error> {
        let m = ExchangeDeclare {
            reserved_1: 0,
            exchange: short(exchange)?,
            kind: short(kind)?,
            passive: options.passive,
            durable: options.durable,
            auto_delete: options.auto_delete,
            internal: options.internal,
            no_wait: options.nowait,
            arguments,
        };
        self.request(ch, m.into(), options.nowait)
    }

    /// Deletes an exchange.
    pub fn exchange_delete(
        &mut self,
        ch: ChannelId,
        exchange: &str,
        if_unused: bool,
        nowait: bool,
    ) -> Result<RequestId, Error> {
        let m = ExchangeDelete {
            reserved_1: 0,
            exchange: short(exchange)?,
            if_unused,
            no_wait: nowait,
        };
        self.request(ch, m.into(), nowait)
    }

    /// Binds exchange `destination` to `source` (a RabbitMQ extension).
    pub fn exchange_bind(
        &mut self,
        ch: ChannelId,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
        nowait: bool,
    ) -> Result<RequestId, Error> {
        let m = ExchangeBind {
            reserved_1: 0,
            destination: short(destination)?,
            source: short(source)?,
            routing_key: short(routing_key)?,
            no_wait: nowait,
            arguments,
        };
        self.request(ch, m.into(), nowait)
    }

    /// Removes an exchange-to-exchange binding.
    pub fn exchange_unbind(
        &mut self,
        ch: ChannelId,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
        nowait: bool,
    ) -> Result<RequestId, Error> {
        let m = ExchangeUnbind {
            reserved_1: 0,
            destination: short(destination)?,
            source: short(source)?,
            routing_key: short(routing_key)?,
            no_wait: nowait,
            arguments,
        };
        self.request(ch, m.into(), nowait)
    }

    /// Declares a queue (an empty name lets the broker choose). Completes with
    /// [`Reply::QueueDeclared`].
    pub fn queue_declare(
        &mut self,
        ch: ChannelId,
        queue: &str,
        options: QueueDeclareOptions,
        arguments: FieldTable,
    ) -> Result<RequestId, Error> {
        let m = QueueDeclare {
            reserved_1: 0,
            queue: short(queue)?,
            passive: options.passive,
            durable: options.durable,
            exclusive: options.exclusive,
            auto_delete: options.auto_delete,
            no_wait: options.nowait,
            arguments,
        };
        self.request(ch, m.into(), options.nowait)
    }

    /// Binds a queue to an exchange.
    pub fn queue_bind(
        &mut self,
        ch: ChannelId,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
        nowait: bool,
    ) -> Result<RequestId, Error> {
        let m = QueueBind {
            reserved_1: 0,
            queue: short(queue)?,
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            no_wait: nowait,
            arguments,
        };
        self.request(ch, m.into(), nowait)
    }

    /// Removes a queue binding.
    pub fn queue_unbind(
        &mut self,
        ch: ChannelId,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<RequestId, Error> {
        let m = QueueUnbind {
            reserved_1: 0,
            queue: short(queue)?,
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            arguments,
        };
        self.request(ch, m.into(), false)
    }

    /// Removes all ready messages from a queue. Completes with [`Reply::QueuePurged`].
    pub fn queue_purge(
        &mut self,
        ch: ChannelId,
        queue: &str,
        nowait: bool,
    ) -> Result<RequestId, Error> {
        let m = QueuePurge {
            reserved_1: 0,
            queue: short(queue)?,
            no_wait: nowait,
        };
        self.request(ch, m.into(), nowait)
    }

    /// Deletes a queue. Completes with [`Reply::QueueDeleted`].
    pub fn queue_delete(
        &mut self,
        ch: ChannelId,
        queue: &str,
        options: QueueDeleteOptions,
    ) -> Result<RequestId, Error> {
        let m = QueueDelete {
            reserved_1: 0,
            queue: short(queue)?,
            if_unused: options.if_unused,
            if_empty: options.if_empty,
            no_wait: options.nowait,
        };
        self.request(ch, m.into(), options.nowait)
    }

    /// Limits unacknowledged deliveries (per consumer, or per channel with `global`).
    pub fn basic_qos(
        &mut self,
        ch: ChannelId,
        prefetch_count: u16,
        prefetch_size: u32,
        global: bool,
    ) -> Result<RequestId, Error> {
        let m = BasicQos {
            prefetch_size,
            prefetch_count,
            global,
        };
        self.request(ch, m.into(), false)
    }

    /// Starts a consumer (an empty tag lets the broker choose). Completes with
    /// [`Reply::Consuming`]; deliveries then arrive as [`Event::Delivery`] and the end as
    /// [`Event::ConsumerEnded`].
    pub fn basic_consume(
        &mut self,
        ch: ChannelId,
        queue: &str,
        consumer_tag: &str,
        options: BasicConsumeOptions,
        arguments: FieldTable,
    ) -> Result<RequestId, Error> {
        if options.nowait && consumer_tag.is_empty() {
            return Err(Error::Usage("a no-wait consume needs a consumer tag"));
        }
        let m = BasicConsume {
            reserved_1: 0,
            queue: short(queue)?,
            consumer_tag: short(consumer_tag)?,
            no_local: options.no_local,
            no_ack: options.no_ack,
            exclusive: options.exclusive,
            no_wait: options.nowait,
            arguments,
        };
        self.request(ch, m.into(), options.nowait)
    }

    /// Cancels a consumer. Completes with [`Reply::Cancelled`]; deliveries already sent may
    /// still arrive before that.
    pub fn basic_cancel(
        &mut self,
        ch: ChannelId,
        consumer_tag: &str,
        nowait: bool,
    ) -> Result<RequestId, Error> {
        let m = BasicCancel {
            consumer_tag: short(consumer_tag)?,
            no_wait: nowait,
        };
        self.request(ch, m.into(), nowait)
    }

    /// Fetches one message. Completes with [`Reply::Get`].
    pub fn basic_get(
        &mut self,
        ch: ChannelId,
        queue: &str,
        no_ack: bool,
    ) -> Result<RequestId, Error> {
        let m = BasicGet {
            reserved_1: 0,
            queue: short(queue)?,
            no_ack,
        };
        self.request(ch, m.into(), false)
    }

    /// Asks the broker to redeliver unacknowledged messages. Completes with
    /// [`Reply::Recovered`].
    pub fn basic_recover(&mut self, ch: ChannelId, requeue: bool) -> Result<RequestId, Error> {
        self.request(ch, BasicRecover { requeue }.into(), false)
    }

    /// Like [`Connection::basic_recover`] without an answer (deprecated in the spec).
    pub fn basic_recover_async(&mut self, ch: ChannelId, requeue: bool) -> Result<(), Error> {
        self.open_channel_mut(ch)?;
        self.send_method(ch.0, &BasicRecoverAsync { requeue }.into())
    }

    /// Turns on publisher confirms. Completes with [`Reply::ConfirmSelected`]; from then on
    /// every publish returns a tag and gets one [`Event::Confirmed`].
    pub fn confirm_select(&mut self, ch: ChannelId, nowait: bool) -> Result<RequestId, Error> {
        let c = self.open_channel_mut(ch)?;
        if c.confirms.is_none() {
            c.confirms = Some(channel::Confirms::default());
        }
        self.request(ch, ConfirmSelect { nowait }.into(), nowait)
    }

    /// Turns on transactions. Completes with [`Reply::TxSelected`].
    pub fn tx_select(&mut self, ch: ChannelId) -> Result<RequestId, Error> {
        self.request(ch, TxSelect {}.into(), false)
    }

    /// Commits the current transaction. Completes with [`Reply::TxCommitted`].
    pub fn tx_commit(&mut self, ch: ChannelId) -> Result<RequestId, Error> {
        self.request(ch, TxCommit {}.into(), false)
    }

    /// Abandons the current transaction. Completes with [`Reply::TxRolledBack`].
    pub fn tx_rollback(&mut self, ch: ChannelId) -> Result<RequestId, Error> {
        self.request(ch, TxRollback {}.into(), false)
    }

    /// Publishes a message. In confirm mode returns the tag its [`Event::Confirmed`] will
    /// carry.
    ///
    /// Refused with [`Error::WouldBlock`] while the broker blocks the connection, pauses the
    /// channel, or the output queue is above its high-water mark; acks, heartbeats and other
    /// commands are never held back. The body is borrowed, so a refused publish can simply be
    /// retried with it; large bodies are queued by reference (a `Bytes` clone), not copied.
    pub fn basic_publish(
        &mut self,
        ch: ChannelId,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        properties: &BasicProperties,
        body: &Bytes,
    ) -> Result<Option<DeliveryTag>, Error> {
        let blocked = self.blocked.is_some();
        let backpressured = self.is_backpressured();
        let frame_max = self.tuning.frame_max;
        let c = self.open_channel_mut(ch)?;
        if blocked {
            return Err(Error::WouldBlock(WouldBlock::ConnectionBlocked));
        }
        if !c.flow_active {
            return Err(Error::WouldBlock(WouldBlock::ChannelFlow));
        }
        if backpressured {
            return Err(Error::WouldBlock(WouldBlock::Backpressure));
        }
        let m = BasicPublish {
            reserved_1: 0,
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            mandatory: options.mandatory,
            immediate: options.immediate,
        };
        self.transmit
            .push_content(ch.0, &m.into(), properties, body, frame_max)?;
        self.last_sent = self.now;
        let c = self.channels.get_mut(&ch.0);
        Ok(c.and_then(|c| c.confirms.as_mut())
            .map(|conf| conf.publish(options.mandatory)))
    }

    /// Acknowledges a delivery (and all before it with `multiple`).
    pub fn basic_ack(
        &mut self,
        ch: ChannelId,
        tag: DeliveryTag,
        multiple: bool,
    ) -> Result<(), Error> {
        self.open_channel_mut(ch)?;
        self.send_method(
            ch.0,
            &BasicAck {
                delivery_tag: tag.0,
                multiple,
            }
            .into(),
        )
    }

    /// Rejects deliveries, optionally requeueing them (a RabbitMQ extension).
    pub fn basic_nack(
        &mut self,
        ch: ChannelId,
        tag: DeliveryTag,
        multiple: bool,
        requeue: bool,
    ) -> Result<(), Error> {
        self.open_channel_mut(ch)?;
        self.send_method(
            ch.0,
            &BasicNack {
                delivery_tag: tag.0,
                multiple,
                requeue,
            }
            .into(),
        )
    }

    /// Rejects one delivery, optionally requeueing it.
    pub fn basic_reject(
        &mut self,
        ch: ChannelId,
        tag: DeliveryTag,
        requeue: bool,
    ) -> Result<(), Error> {
        self.open_channel_mut(ch)?;
        self.send_method(
            ch.0,
            &BasicReject {
                delivery_tag: tag.0,
                requeue,
            }
            .into(),
        )
    }

    /// Replaces the connection's secret (e.g. a refreshed OAuth2 token). Completes with
    /// [`Reply::SecretUpdated`]; a broker that refuses closes the connection, which then
    /// fails this request with its reason.
    pub fn update_secret(&mut self, new_secret: &[u8], reason: &str) -> Result<RequestId, Error> {
        self.check_open()?;
        let m = ConnectionUpdateSecret {
            new_secret: LongString::from(new_secret).into(),
            reason: short(reason)?,
        };
        self.send_method(0, &m.into())?;
        let id = self.next_id();
        self.conn_pending
            .push_back((id, ConnectionUpdateSecretOk::ID));
        Ok(id)
    }

    /// Starts an orderly close (reply 200). Everything pending fails at once with this
    /// reason; [`Event::Closed`]`(None)` follows the broker's `close-ok` (or the close
    /// timeout).
    pub fn close(&mut self, text: &str) -> Result<RequestId, Error> {
        match self.state {
            State::Closing | State::Closed => return Err(self.closed_error()),
            State::AwaitingStart | State::Authenticating => {
                // Nothing to close politely before the broker has opened: just stop.
                let id = self.next_id();
                self.conn_pending.push_back((id, ConnectionCloseOk::ID));
                self.finish(None);
                return Ok(id);
            }
            _ => {}
        }
        let close = ConnectionClose {
            reply_code: ReplyCode::REPLY_SUCCESS.0,
            reply_text: short(text)?,
            class_id: 0,
            method_id: 0,
        };
        self.send_method(0, &close.clone().into())?;
        let reason = CloseReason {
            initiator: Initiator::Client,
            code: ReplyCode::REPLY_SUCCESS,
            text: close.reply_text,
            class_id: 0,
            method_id: 0,
        };
        let error = Error::ConnectionClosed(reason);
        self.fail_everything(&error);
        self.own_close = Some(error);
        self.state = State::Closing;
        self.close_deadline = Some(self.now + self.config.close_timeout);
        self.close_error = None;
        let id = self.next_id();
        self.conn_pending.push_back((id, ConnectionCloseOk::ID));
        Ok(id)
    }

    // ----- inbound -----

    fn handle_frame(&mut self, frame: Frame) {
        match self.state {
            State::AwaitingStart | State::Authenticating | State::Opening => {
                self.handle_handshake(frame)
            }
            // After our close only close and close-ok matter.
            State::Closing => {
                if let Frame::Method(0, m) = frame {
                    self.handle_connection_method(m);
                }
            }
            State::Open => match frame {
                Frame::Heartbeat => {}
                Frame::Method(0, m) => self.handle_connection_method(m),
                Frame::Method(ch, m) => self.handle_channel_method(ch, m),
                Frame::Header(0, _) | Frame::Body(0, _) => self.violation(
                    ReplyCode::UNEXPECTED_FRAME,
                    "content frame on channel 0".into(),
                ),
                Frame::Header(ch, h) => self.with_channel(ch, |conn, c| conn.on_header(ch, c, h)),
                Frame::Body(ch, b) => self.with_channel(ch, |conn, c| conn.on_body(ch, c, b)),
            },
            State::Closed => {}
        }
    }

    fn handle_handshake(&mut self, frame: Frame) {
        let m = match frame {
            Frame::Heartbeat => return,
            Frame::Method(0, m) => m,
            other => {
                return self.violation(
                    ReplyCode::UNEXPECTED_FRAME,
                    format!(
                        "unexpected frame on channel {} during the handshake",
                        other.channel()
                    ),
                );
            }
        };
        match (self.state, m) {
            (State::AwaitingStart, Method::ConnectionStart(start)) => self.on_start(start),
            (State::Authenticating, Method::ConnectionSecure(secure)) => {
                match self.config.sasl.challenge(&secure.challenge) {
                    Ok(response) => {
                        let _ = self.send_method(
                            0,
                            &ConnectionSecureOk {
                                response: response.into(),
                            }
                            .into(),
                        );
                    }
                    Err(e) => self.finish(Some(Error::Authentication(e))),
                }
            }
            (State::Authenticating, Method::ConnectionTune(tune)) => self.on_tune(tune),
            (State::Opening, Method::ConnectionOpenOk(_)) => {
                self.state = State::Open;
                self.events.push_back(Event::Connected {
                    server_properties: self.server_properties.clone(),
                    tuning: self.tuning,
                });
            }
            (state, Method::ConnectionClose(close)) => {
                let _ = self.send_method(0, &ConnectionCloseOk {}.into());
                let reason = server_reason!(&close);
                let error = match (state, reason.code) {
                    (State::Authenticating, ReplyCode::ACCESS_REFUSED) => {
                        let mut text = reason.text.to_string();
                        if self.config.sasl.name() == "EXTERNAL" {
                            text.push_str(
                                " (EXTERNAL logs in with the TLS client certificate: connect \
                                 with amqps:// and a certfile/keyfile whose subject names an \
                                 existing user)",
                            );
                        }
                        Error::Authentication(text)
                    }
                    (State::Opening, ReplyCode::NOT_ALLOWED | ReplyCode::ACCESS_REFUSED) => {
                        Error::VhostAccessRefused {
                            vhost: self.config.vhost.clone(),
                            text: reason.text.to_string(),
                        }
                    }
                    _ => Error::ConnectionClosed(reason),
                };
                self.finish(Some(error));
            }
            (_, m) => self.violation(
                ReplyCode::COMMAND_INVALID,
                format!("unexpected {} during the handshake", m.name()),
            ),
        }
    }

    fn on_start(&mut self, start: ConnectionStart) {
        if (start.version_major, start.version_minor) != (0, 9) {
            return self.violation(
                ReplyCode::NOT_IMPLEMENTED,
                format!(
                    "server speaks AMQP {}-{}, not 0-9",
                    start.version_major, start.version_minor
                ),
            );
        }
        let mechanism = self.config.sasl.name().to_owned();
        let offered = start
            .mechanisms
            .as_str()
            .is_some_and(|list| list.split(' ').any(|m| m == mechanism));
        if !offered {
            let list = String::from_utf8_lossy(&start.mechanisms).into_owned();
            // RabbitMQ offers EXTERNAL only on TLS connections that presented a client
            // certificate it accepted (and with rabbitmq_auth_mechanism_ssl enabled).
            let hint = if mechanism == "EXTERNAL" {
                "; EXTERNAL needs an amqps:// connection with a client certificate \
                 (certfile/keyfile) that the broker accepted"
            } else {
                ""
            };
            return self.finish(Some(Error::Authentication(format!(
                "the broker does not offer mechanism {mechanism} (it offers: {list}){hint}"
            ))));
        }
        let response = match self.config.sasl.initial_response() {
            Ok(r) => r,
            Err(e) => return self.finish(Some(Error::Authentication(e))),
        };
        let (Ok(mechanism), Ok(locale)) = (short(&mechanism), short(&self.config.locale)) else {
            return self.finish(Some(Error::Usage(
                "mechanism or locale longer than 255 bytes",
            )));
        };
        self.server_properties = start.server_properties;
        let start_ok = ConnectionStartOk {
            client_properties: self.config.client_properties_table(),
            mechanism,
            response: response.into(),
            locale,
        };
        match self.send_method(0, &start_ok.into()) {
            Ok(()) => self.state = State::Authenticating,
            Err(e) => self.finish(Some(e)),
        }
    }

    fn on_tune(&mut self, tune: ConnectionTune) {
        if tune.frame_max != 0 && tune.frame_max < MIN_FRAME_MAX {
            return self.violation(
                ReplyCode::SYNTAX_ERROR,
                format!(
                    "frame_max {} is below the protocol minimum {MIN_FRAME_MAX}",
                    tune.frame_max
                ),
            );
        }
        // Lower of the two, where 0 means "no limit" and so yields to the other side.
        fn lower(ours: u32, theirs: u32) -> u32 {
            match (ours, theirs) {
                (0, t) => t,
                (o, 0) => o,
                (o, t) => o.min(t),
            }
        }
        let channel_max = lower(self.config.channel_max.into(), tune.channel_max.into()) as u16;
        // A configured limit below the protocol minimum is raised to it; 0 stays "no limit".
        let ours = match self.config.frame_max {
            0 => 0,
            n => n.max(MIN_FRAME_MAX),
        };
        let frame_max = lower(ours, tune.frame_max);
        // Heartbeat 0 from us means "disabled", not "no preference".
        let heartbeat = match self.config.heartbeat {
            0 => 0,
            ours => lower(ours.into(), tune.heartbeat.into()) as u16,
        };
        self.tuning = Tuning {
            channel_max,
            frame_max,
            heartbeat,
        };
        self.decoder.set_frame_max(frame_max);
        let tune_ok = ConnectionTuneOk {
            channel_max,
            frame_max,
            heartbeat,
        };
        let open = ConnectionOpen {
            virtual_host: match short(&self.config.vhost) {
                Ok(v) => v,
                Err(e) => return self.finish(Some(e)),
            },
            ..Default::default()
        };
        if let Err(e) = self
            .send_method(0, &tune_ok.into())
            .and_then(|()| self.send_method(0, &open.into()))
        {
            return self.finish(Some(e));
        }
        self.last_recv = self.now;
        self.state = State::Opening;
    }

    fn handle_connection_method(&mut self, m: Method) {
        match m {
            Method::ConnectionClose(close) => {
                let _ = self.send_method(0, &ConnectionCloseOk {}.into());
                if self.state == State::Closing {
                    // Both sides closed at once: ours stands.
                    let error = self.close_error.take();
                    return self.finish(error);
                }
                let error = Error::ConnectionClosed(server_reason!(&close));
                self.finish(Some(error));
            }
            Method::ConnectionCloseOk(_) if self.state == State::Closing => {
                let error = self.close_error.take();
                self.finish(error);
            }
            _ if self.state == State::Closing => {}
            Method::ConnectionBlocked(b) => {
                self.blocked = Some(b.reason.clone());
                self.events.push_back(Event::Blocked { reason: b.reason });
            }
            Method::ConnectionUnblocked(_) => {
                self.blocked = None;
                self.events.push_back(Event::Unblocked);
            }
            Method::ConnectionUpdateSecretOk(_) => match self.conn_pending.front() {
                Some((_, want)) if *want == ConnectionUpdateSecretOk::ID => {
                    if let Some((id, _)) = self.conn_pending.pop_front() {
                        self.events.push_back(Event::Completed {
                            id,
                            result: Ok(Reply::SecretUpdated),
                        });
                    }
                }
                _ => self.violation(
                    ReplyCode::UNEXPECTED_FRAME,
                    "update-secret-ok without a request".into(),
                ),
            },
            other => self.violation(
                ReplyCode::COMMAND_INVALID,
                format!("{} is not valid on channel 0", other.name()),
            ),
        }
    }

    /// Runs `f` on a channel taken out of the map, then puts it back (unless `f` finished
    /// it) before acting on any protocol violation `f` found, so that the violation fails
    /// this channel too.
    fn with_channel(&mut self, ch: u16, f: impl FnOnce(&mut Self, &mut Channel)) {
        let Some(mut channel) = self.channels.remove(&ch) else {
            return self.violation(
                ReplyCode::CHANNEL_ERROR,
                format!("frame on channel {ch}, which is not open"),
            );
        };
        self.in_channel = true;
        f(self, &mut channel);
        self.in_channel = false;
        if !channel.removed {
            self.channels.insert(ch, channel);
        }
        if let Some((code, text)) = self.deferred_violation.take() {
            self.violation(code, text);
        }
    }

    fn handle_channel_method(&mut self, ch: u16, m: Method) {
        let info = m.info();
        if info.id.class_id == 10 {
            return self.violation(
                ReplyCode::COMMAND_INVALID,
                format!("{} on channel {ch}", info.name),
            );
        }
        self.with_channel(ch, |conn, c| conn.on_channel_method(ch, c, m));
    }

    fn on_channel_method(&mut self, ch: u16, c: &mut Channel, m: Method) {
        if c.state == ChannelState::Closing {
            // After sending close only close and close-ok matter (the spec says to discard
            // the rest).
            match m {
                Method::ChannelClose(_) => {
                    let _ = self.send_method(ch, &ChannelCloseOk {}.into());
                    self.complete_client_close(ch, c);
                }
                Method::ChannelCloseOk(_) => self.complete_client_close(ch, c),
                _ => {}
            }
            return;
        }
        if c.incoming.is_some() {
            return self.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format!(
                    "{} on channel {ch} before the previous content was complete",
                    m.name()
                ),
            );
        }
        match m {
            Method::ChannelClose(close) => {
                let _ = self.send_method(ch, &ChannelCloseOk {}.into());
                let error = Error::ChannelClosed {
                    channel: ch,
                    reason: server_reason!(&close),
                };
                let channel = std::mem::replace(c, Channel::new());
                c.removed = true;
                self.fail_channel(ch, channel, &error);
                self.topology.forget_channel(ch);
                self.events.push_back(Event::ChannelClosed {
                    channel: ChannelId(ch),
                    error,
                });
            }
            Method::ChannelFlow(flow) => {
                c.flow_active = flow.active;
                let _ = self.send_method(
                    ch,
                    &ChannelFlowOk {
                        active: flow.active,
                    }
                    .into(),
                );
                self.events.push_back(Event::ChannelFlow {
                    channel: ChannelId(ch),
                    active: flow.active,
                });
            }
            Method::BasicCancel(cancel) => {
                if !cancel.no_wait {
                    let _ = self.send_method(
                        ch,
                        &BasicCancelOk {
                            consumer_tag: cancel.consumer_tag.clone(),
                        }
                        .into(),
                    );
                }
                if c.consumers.remove(&cancel.consumer_tag) {
                    self.topology.forget_consumer(ch, &cancel.consumer_tag);
                    self.events.push_back(Event::ConsumerEnded {
                        channel: ChannelId(ch),
                        consumer_tag: cancel.consumer_tag,
                        reason: ConsumerEnd::CancelledByServer,
                    });
                }
            }
            Method::BasicAck(ack) => self.on_confirm(ch, c, ack.delivery_tag, ack.multiple, true),
            Method::BasicNack(nack) => {
                self.on_confirm(ch, c, nack.delivery_tag, nack.multiple, false)
            }
            Method::BasicDeliver(d) => {
                if !c.consumers.contains(&d.consumer_tag) {
                    self.events.push_back(Event::Warning(Error::Protocol {
                        code: ReplyCode::COMMAND_INVALID,
                        text: format!(
                            "delivery {} on channel {ch} for unknown consumer {:?}",
                            d.delivery_tag, d.consumer_tag
                        ),
                    }));
                }
                c.incoming = Some(channel::Incoming::new(channel::ContentMethod::Deliver(d)));
            }
            Method::BasicReturn(r) => {
                c.incoming = Some(channel::Incoming::new(channel::ContentMethod::Return(r)));
            }
            reply => self.on_reply(ch, c, reply),
        }
    }

    /// Matches a reply against the oldest pending request on the channel.
    fn on_reply(&mut self, ch: u16, c: &mut Channel, reply: Method) {
        let id = reply.id();
        // The oldest request this method answers. Not simply the oldest request: RabbitMQ
        // sends consume-ok (and cancel-ok) from the queue process, so they can overtake the
        // replies to later requests of other kinds on the same channel.
        let Some(pos) = c
            .pending
            .iter()
            .position(|p| p.request.info().expects_reply(id))
        else {
            let text = match c.pending.front() {
                Some(p) => format!(
                    "{} on channel {ch} does not answer {} or any other pending request",
                    reply.name(),
                    p.request.name()
                ),
                None => format!("{} on channel {ch} answers no request", reply.name()),
            };
            return self.violation(ReplyCode::UNEXPECTED_FRAME, text);
        };
        let Some(pending) = c.pending.remove(pos) else {
            return;
        };
        if let Method::BasicGetOk(get_ok) = reply {
            // Completes when its content has arrived.
            c.incoming = Some(channel::Incoming::new(channel::ContentMethod::GetOk(
                get_ok, pending.id,
            )));
            return;
        }
        let result = match reply {
            Method::ChannelOpenOk(_) => {
                c.state = ChannelState::Open;
                Reply::ChannelOpened(ChannelId(ch))
            }
            Method::ChannelFlowOk(f) => Reply::Flow { active: f.active },
            Method::ExchangeDeclareOk(_) => Reply::ExchangeDeclared,
            Method::ExchangeDeleteOk(_) => Reply::ExchangeDeleted,
            Method::ExchangeBindOk(_) => Reply::ExchangeBound,
            Method::ExchangeUnbindOk(_) => Reply::ExchangeUnbound,
            Method::QueueDeclareOk(ok) => {
                self.topology.record(ch, &pending.request, Some(&ok.queue));
                Reply::QueueDeclared {
                    queue: ok.queue,
                    message_count: ok.message_count,
                    consumer_count: ok.consumer_count,
                }
            }
            Method::QueueBindOk(_) => Reply::QueueBound,
            Method::QueueUnbindOk(_) => Reply::QueueUnbound,
            Method::QueuePurgeOk(ok) => Reply::QueuePurged {
                message_count: ok.message_count,
            },
            Method::QueueDeleteOk(ok) => Reply::QueueDeleted {
                message_count: ok.message_count,
            },
            Method::BasicQosOk(_) => Reply::QosSet,
            Method::BasicConsumeOk(ok) => {
                c.consumers.insert(ok.consumer_tag.clone());
                self.topology
                    .record(ch, &pending.request, Some(&ok.consumer_tag));
                Reply::Consuming {
                    consumer_tag: ok.consumer_tag,
                }
            }
            Method::BasicCancelOk(ok) => {
                if c.consumers.remove(&ok.consumer_tag) {
                    self.topology.forget_consumer(ch, &ok.consumer_tag);
                    self.events.push_back(Event::ConsumerEnded {
                        channel: ChannelId(ch),
                        consumer_tag: ok.consumer_tag.clone(),
                        reason: ConsumerEnd::Cancelled,
                    });
                }
                Reply::Cancelled {
                    consumer_tag: ok.consumer_tag,
                }
            }
            Method::BasicGetEmpty(_) => Reply::Get(None),
            Method::BasicRecoverOk(_) => Reply::Recovered,
            Method::ConfirmSelectOk(_) => Reply::ConfirmSelected,
            Method::TxSelectOk(_) => Reply::TxSelected,
            Method::TxCommitOk(_) => Reply::TxCommitted,
            Method::TxRollbackOk(_) => Reply::TxRolledBack,
            other => {
                return self.violation(
                    ReplyCode::COMMAND_INVALID,
                    format!("{} is not valid from a server", other.name()),
                );
            }
        };
        if !matches!(
            pending.request,
            Method::QueueDeclare(_) | Method::BasicConsume(_)
        ) {
            self.topology.record(ch, &pending.request, None);
        }
        self.events.push_back(Event::Completed {
            id: pending.id,
            result: Ok(result),
        });
    }

    fn on_header(&mut self, ch: u16, c: &mut Channel, header: crate::ContentHeader) {
        if c.state == ChannelState::Closing {
            return;
        }
        let Some(incoming) = c.incoming.as_mut() else {
            return self.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format!("content header on channel {ch} without a method"),
            );
        };
        if incoming.header.is_some() {
            return self.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format!("second content header on channel {ch}"),
            );
        }
        if header.body_size > self.config.max_body_size {
            return self.violation(
                ReplyCode::FRAME_ERROR,
                format!(
                    "body of {} bytes on channel {ch} exceeds max_body_size {}",
                    header.body_size, self.config.max_body_size
                ),
            );
        }
        let done = header.body_size == 0;
        incoming.header = Some((header.body_size, header.properties));
        if done {
            self.complete_content(ch, c);
        }
    }

    fn on_body(&mut self, ch: u16, c: &mut Channel, body: Bytes) {
        if c.state == ChannelState::Closing {
            return;
        }
        let Some(incoming) = c.incoming.as_mut() else {
            return self.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format!("body frame on channel {ch} without a method"),
            );
        };
        let Some((size, _)) = incoming.header else {
            return self.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format!("body frame on channel {ch} before its header"),
            );
        };
        let received = incoming.body.len() as u64 + body.len() as u64;
        if received > size {
            return self.violation(
                ReplyCode::FRAME_ERROR,
                format!("body on channel {ch} is longer than the {size} bytes declared"),
            );
        }
        incoming.body.push(body, size, &mut self.join_slab);
        if received == size {
            self.complete_content(ch, c);
        }
    }

    fn complete_content(&mut self, ch: u16, c: &mut Channel) {
        let Some(incoming) = c.incoming.take() else {
            return;
        };
        let (method, properties, body) = incoming.into_parts();
        match method {
            channel::ContentMethod::Deliver(d) => {
                self.events.push_back(Event::Delivery(Box::new(Delivery {
                    channel: ChannelId(ch),
                    consumer_tag: d.consumer_tag,
                    delivery_tag: DeliveryTag(d.delivery_tag),
                    redelivered: d.redelivered,
                    exchange: d.exchange,
                    routing_key: d.routing_key,
                    properties,
                    body,
                })));
            }
            channel::ContentMethod::GetOk(g, request) => {
                let message = GetMessage {
                    delivery: Delivery {
                        channel: ChannelId(ch),
                        consumer_tag: ShortString::empty(),
                        delivery_tag: DeliveryTag(g.delivery_tag),
                        redelivered: g.redelivered,
                        exchange: g.exchange,
                        routing_key: g.routing_key,
                        properties,
                        body,
                    },
                    message_count: g.message_count,
                };
                self.events.push_back(Event::Completed {
                    id: request,
                    result: Ok(Reply::Get(Some(Box::new(message)))),
                });
            }
            channel::ContentMethod::Return(r) => {
                let returned = ReturnedMessage {
                    channel: ChannelId(ch),
                    reply_code: ReplyCode(r.reply_code),
                    reply_text: r.reply_text,
                    exchange: r.exchange,
                    routing_key: r.routing_key,
                    properties,
                    body,
                };
                match c.confirms.as_mut() {
                    // The broker sends the return just before the confirm of the same
                    // publish; hold it so the confirm can carry it.
                    Some(confirms) => confirms.returns.push_back(returned),
                    None => self.events.push_back(Event::Returned(Box::new(returned))),
                }
            }
        }
    }

    fn on_confirm(&mut self, ch: u16, c: &mut Channel, tag: u64, multiple: bool, ack: bool) {
        let Some(confirms) = c.confirms.as_mut() else {
            self.events.push_back(Event::Warning(Error::Protocol {
                code: ReplyCode::COMMAND_INVALID,
                text: format!(
                    "basic.ack/nack from the broker on channel {ch}, not in confirm mode"
                ),
            }));
            return;
        };
        let resolved = confirms.resolve(tag, multiple);
        if resolved.is_empty() {
            self.events.push_back(Event::Warning(Error::Protocol {
                code: ReplyCode::COMMAND_INVALID,
                text: format!("confirm for unknown delivery tag {tag} on channel {ch}"),
            }));
            return;
        }
        for (seq, returned) in resolved {
            let returned = returned.map(Box::new);
            let outcome = if ack {
                Confirmation::Ack(returned)
            } else {
                Confirmation::Nack(returned)
            };
            self.events.push_back(Event::Confirmed {
                channel: ChannelId(ch),
                tag: DeliveryTag(seq),
                outcome,
            });
        }
    }

    fn complete_client_close(&mut self, ch: u16, c: &mut Channel) {
        c.removed = true;
        self.topology.forget_channel(ch);
        for pending in c.pending.drain(..) {
            self.events.push_back(Event::Completed {
                id: pending.id,
                result: Ok(Reply::ChannelClosed),
            });
        }
    }

    // ----- failure paths -----

    fn end_consumer(&mut self, ch: u16, tag: &ShortString, reason: ConsumerEnd) {
        if let Some(c) = self.channels.get_mut(&ch) {
            if c.consumers.remove(tag) {
                self.topology.forget_consumer(ch, tag);
                self.events.push_back(Event::ConsumerEnded {
                    channel: ChannelId(ch),
                    consumer_tag: tag.clone(),
                    reason,
                });
            }
        }
    }

    /// Fails everything a channel had pending: requests, consumers, unconfirmed publishes.
    fn fail_channel(&mut self, ch: u16, mut channel: Channel, error: &Error) {
        // A get-ok whose content was still arriving has left the pending queue already.
        if let Some(channel::Incoming {
            method: channel::ContentMethod::GetOk(_, id),
            ..
        }) = channel.incoming.take()
        {
            self.events.push_back(Event::Completed {
                id,
                result: Err(error.clone()),
            });
        }
        for pending in channel.pending.drain(..) {
            self.events.push_back(Event::Completed {
                id: pending.id,
                result: Err(error.clone()),
            });
        }
        let mut tags: Vec<_> = channel.consumers.drain().collect();
        tags.sort();
        for consumer_tag in tags {
            self.events.push_back(Event::ConsumerEnded {
                channel: ChannelId(ch),
                consumer_tag,
                reason: ConsumerEnd::Closed(error.clone()),
            });
        }
        if let Some(mut confirms) = channel.confirms.take() {
            // Returns whose confirm never came are still handed over, not dropped.
            for returned in confirms.returns.drain(..) {
                self.events.push_back(Event::Returned(Box::new(returned)));
            }
            for seq in confirms.outstanding() {
                self.events.push_back(Event::Confirmed {
                    channel: ChannelId(ch),
                    tag: DeliveryTag(seq),
                    outcome: Confirmation::Lost(error.clone()),
                });
            }
        }
    }

    fn fail_everything(&mut self, error: &Error) {
        let channels = std::mem::take(&mut self.channels);
        for (ch, channel) in channels {
            // A client close in flight still completes: the channel is gone either way.
            let error = match channel.state {
                ChannelState::Closing => {
                    let mut channel = channel;
                    self.complete_client_close(ch, &mut channel);
                    continue;
                }
                _ => error,
            };
            self.fail_channel(ch, channel, error);
        }
        for (id, _) in self.conn_pending.drain(..) {
            self.events.push_back(Event::Completed {
                id,
                result: Err(error.clone()),
            });
        }
    }

    /// Ends the connection for good and reports why (`None`: an orderly close we asked for).
    fn finish(&mut self, error: Option<Error>) {
        if self.state == State::Closed {
            return;
        }
        // An orderly end keeps the reason the client gave when it asked to close.
        let failure = error
            .clone()
            .or_else(|| self.own_close.clone())
            .unwrap_or_else(|| {
                Error::ConnectionClosed(CloseReason {
                    initiator: Initiator::Client,
                    code: ReplyCode::REPLY_SUCCESS,
                    text: ShortString::from_static("connection closed"),
                    class_id: 0,
                    method_id: 0,
                })
            });
        // Our own close request succeeds when the connection ends the way it asked.
        let mut rest = VecDeque::new();
        for (id, want) in self.conn_pending.drain(..) {
            if want == ConnectionCloseOk::ID && error.is_none() {
                self.events.push_back(Event::Completed {
                    id,
                    result: Ok(Reply::ConnectionClosed),
                });
            } else {
                rest.push_back((id, want));
            }
        }
        self.conn_pending = rest;
        self.fail_everything(&failure);
        self.state = State::Closed;
        self.close_deadline = None;
        self.close_error = Some(failure);
        self.events.push_back(Event::Closed(error));
    }

    /// The peer broke the protocol: send `connection.close` with the code the spec names,
    /// fail everything, and wait (bounded by the close timeout) for `close-ok`.
    fn violation(&mut self, code: ReplyCode, text: String) {
        if matches!(self.state, State::Closed) {
            return;
        }
        if self.in_channel {
            if self.deferred_violation.is_none() {
                self.deferred_violation = Some((code, text));
            }
            return;
        }
        let error = Error::Protocol {
            code,
            text: text.clone(),
        };
        if self.state == State::Closing {
            return self.finish(Some(error));
        }
        let mut reply_text = text;
        while reply_text.len() > 255 {
            reply_text.pop();
        }
        let close = ConnectionClose {
            reply_code: code.0,
            reply_text: short(&reply_text).unwrap_or_default(),
            class_id: 0,
            method_id: 0,
        };
        let _ = self.send_method(0, &close.into());
        self.fail_everything(&error);
        self.state = State::Closing;
        self.close_error = Some(error);
        self.close_deadline = Some(self.now + self.config.close_timeout);
        if self.input_poisoned {
            // The stream is out of step; nothing more can be read from it.
            let error = self.close_error.take();
            self.finish(error);
        }
    }
}

/// Whether `buf` starts like a TLS record (alert or handshake, version 3.x), which no AMQP
/// frame does: frame types are 1, 2, 3 and 8.
fn looks_like_tls_record(buf: &[u8]) -> bool {
    matches!(buf, [0x15 | 0x16, 0x03, 0x00..=0x04, ..])
}
