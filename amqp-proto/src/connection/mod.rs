//! The sans-IO client connection: handshake to close, channels, every operation, events.
//!
//! See [`Connection`] for the contract between the core and the loop that drives it.

/// Borrows channel `$ch` of `$conn` mutably together with the [`inbound::ChannelContext`] its
/// handlers write through (disjoint fields of the connection, so both can be held at once).
macro_rules! split {
    ($conn:expr, $ch:expr) => {{
        let conn = &mut *$conn;
        let ch: u16 = $ch;
        (
            conn.channels.get_mut(&ch),
            $crate::connection::inbound::ChannelContext {
                channel: ch,
                transmit: &mut conn.transmit,
                events: &mut conn.events,
                topology: &mut conn.topology,
                join_slabs: &mut conn.join_slabs,
                frame_max: conn.tuning.frame_max,
                max_body_size: conn.config.max_body_size,
                request_timeout: conn.config.request_timeout,
            },
        )
    }};
}

mod body_read;
mod channel;
mod commands;
mod config;
mod deadlines;
mod error;
mod event;
mod handshake;
mod inbound;
mod options;
mod recovering;
pub mod recovery;
mod timer;
mod topology;

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

pub use config::ConnectionConfig;
pub use error::{CloseReason, Error, ErrorKind, Initiator, Misuse, WouldBlock};
pub use event::{
    ChannelId, Confirmation, ConsumerEnd, ConsumerTag, Delivery, DeliveryTag, Event, GetMessage,
    Reply, RequestId, ReturnedMessage, Tuning,
};
pub use options::{
    BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
    QueueUnbindOptions,
};
pub use topology::{RecordedChannel, RecordedConsumer, RecordedQueue, Topology};

use crate::error::ReplyCode;
use crate::frame::{Frame, FrameDecoder, PROTOCOL_HEADER};
use crate::metrics::{Counters, Metrics};
use crate::spec::*;
use crate::transmit::Transmit;
use crate::types::{FieldTable, ShortString};
use channel::{Channel, ChannelTable, OpenChannel};
use inbound::{Retain, server_reason};
use timer::Timer;

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
    /// The connection was lost and is between transports: waiting for the next attempt or for
    /// the caller to dial ([`Event::Dial`]). The handshake and replay that follow show as
    /// `AwaitingStart` … `Open`; commands are refused with [`WouldBlock::Recovering`] until
    /// [`Event::Recovered`].
    Recovering,
}

/// The steps of the handshake, each named by what the client is waiting for; a
/// [`Error::HandshakeTimeout`] names the one that stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeStep {
    /// The protocol header is sent; waiting for `connection.start`.
    AwaitingStart,
    /// `start-ok` is sent; waiting for `connection.secure` or `connection.tune`.
    Authenticating,
    /// `tune-ok` and `open` are sent; waiting for `connection.open-ok`.
    Opening,
}

impl std::fmt::Display for HandshakeStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HandshakeStep::AwaitingStart => "waiting for connection.start",
            HandshakeStep::Authenticating => "waiting for connection.secure or connection.tune",
            HandshakeStep::Opening => "waiting for connection.open-ok",
        })
    }
}

/// Why a close this side sent is under way.
#[derive(Debug)]
enum CloseCause {
    /// The client asked for it; the connection ends in order (`Closed(None)`), and commands
    /// issued meanwhile fail with this reason.
    Client(Error),
    /// The peer broke the protocol; the connection ends with this error.
    Violation(Error),
}

impl CloseCause {
    fn error(&self) -> &Error {
        match self {
            CloseCause::Client(e) | CloseCause::Violation(e) => e,
        }
    }

    /// What [`Event::Closed`] carries once the close is over.
    fn outcome(&self) -> Option<Error> {
        match self {
            CloseCause::Client(_) => None,
            CloseCause::Violation(e) => Some(e.clone()),
        }
    }
}

/// The connection's life, each state with what belongs to it.
#[derive(Debug)]
enum Lifecycle {
    /// Before `open-ok`; the handshake must finish by `deadline` (no limit if `None`).
    Handshake {
        step: HandshakeStep,
        deadline: Option<Instant>,
    },
    Open,
    /// This side sent `connection.close` and waits for `close-ok` until `deadline`.
    Closing {
        deadline: Instant,
        cause: CloseCause,
    },
    /// Over; commands fail with `error`.
    Closed {
        error: Error,
    },
    /// Lost, between transports; the episode is in `Connection::recovery`.
    Recovering,
}

fn short(s: &str) -> Result<ShortString, Error> {
    ShortString::try_from(s).map_err(Error::Encode)
}

/// The client side of one AMQP connection, without I/O.
///
/// The connection is a state machine that the caller's loop drives. Its methods come in
/// four kinds:
///
/// - **input**: [`process_input`](Self::process_input) (bytes the caller read, in a buffer
///   the caller owns; [`handle_input`](Self::handle_input) copies a slice in), optionally
///   with [`take_body_buffer`](Self::take_body_buffer) and
///   [`process_body`](Self::process_body) (large bodies read straight into their buffer),
///   [`handle_eof`](Self::handle_eof), [`handle_transport_error`](Self::handle_transport_error)
///   and [`handle_timeout`](Self::handle_timeout);
/// - **commands**: [`open_channel`](Self::open_channel), [`queue_declare`](Self::queue_declare),
///   [`basic_publish`](Self::basic_publish), [`close`](Self::close), … They queue output and
///   return at once: a [`RequestId`] whose outcome arrives later as [`Event::Completed`], or
///   an [`Error`] when the command does not fit the current state;
/// - **output**: [`poll_transmit`](Self::poll_transmit) (bytes to write),
///   [`poll_event`](Self::poll_event) (what happened) and
///   [`poll_timeout`](Self::poll_timeout) (when to call `handle_timeout` next);
/// - **queries**: [`state`](Self::state), [`tuning`](Self::tuning),
///   [`topology`](Self::topology), …
///
/// A read goes where the core says: before each read, `take_body_buffer(&mut input)`; if it
/// lends a buffer, read into its spare capacity and give it back with `process_body`, else
/// read into `input` (at most [`input_read_limit`](Self::input_read_limit) bytes, a hint)
/// and call `process_input`. Without those calls every byte goes through `process_input`.
///
/// After any input or command, the loop
/// 1. writes out everything `poll_transmit` returns,
/// 2. drains `poll_event` until it returns `None`,
/// 3. re-reads `poll_timeout`, whose answer may have changed, and sleeps until that instant
///    or until the transport has bytes.
///
/// The core never reads a clock: every method that can arm or move a timer takes `now`
/// (input, [`close`](Self::close), `poll_transmit`), and `now` never goes backwards from one
/// call to the next. Commands that only queue output take no time: queued output counts as
/// traffic for the heartbeat when `poll_transmit` hands it out.
///
/// After [`Event::Closed`] (also [`is_closed`](Self::is_closed)) the connection is over:
/// finish writing what `poll_transmit` still returns (a last `close-ok`), then drop it. Every
/// command fails with the reason it ended, and `poll_timeout` returns `None`.
///
/// ```
/// use amqp_proto::{Connection, ConnectionConfig, PROTOCOL_HEADER};
/// use std::time::Instant;
///
/// let now = Instant::now();
/// let mut conn = Connection::new(ConnectionConfig::default(), now);
/// // The first bytes to send are the protocol header.
/// let chunk = conn.poll_transmit(now).unwrap();
/// assert_eq!(&chunk[..], &PROTOCOL_HEADER);
/// assert!(conn.poll_event().is_none());
/// ```
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    lifecycle: Lifecycle,
    decoder: FrameDecoder,
    /// Bytes given to [`Connection::handle_input`] that do not make a whole frame yet.
    read_buf: BytesMut,
    /// Input-buffer length after the last decode, to tell whether new bytes arrived.
    read_seen: usize,
    /// The body frame whose payload is being read straight into its body, if any.
    body_read: Option<body_read::BodyRead>,
    /// Whether a large body of several frames was arriving when the start of a body frame
    /// was last looked for (see [`Connection::input_read_limit`]).
    reading_bodies: bool,
    transmit: Transmit,
    events: VecDeque<Event>,
    channels: ChannelTable,
    tuning: Tuning,
    server_properties: FieldTable,
    next_request: u64,
    last_recv: Instant,
    /// When output was last handed to the caller.
    last_sent: Instant,
    blocked: Option<ShortString>,
    /// Connection-level requests (update-secret, close), answered in order.
    conn_pending: VecDeque<(RequestId, MethodId)>,
    topology: Topology,
    /// Where bodies that arrive in several frames are joined, for the whole connection, so
    /// memory kept for joining does not grow with the channel count; empty until a body
    /// needs joining.
    join_slabs: channel::JoinSlabs,
    /// Attempts, waits and endpoints of automatic recovery, when it is on and idle.
    schedule: Option<recovery::Schedule>,
    /// The recovery in progress. It lives beside the lifecycle because it spans three of its
    /// states: `Recovering` (between transports), `Handshake` and `Open` (while replaying).
    recovery: Option<Box<recovery::Recovery>>,
    /// What [`Connection::metrics`] reports.
    counters: Counters,
    /// When each request must have its reply.
    deadlines: deadlines::Deadlines,
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
            lifecycle: Lifecycle::Handshake {
                step: HandshakeStep::AwaitingStart,
                deadline: config.handshake_timeout.map(|t| now + t),
            },
            decoder: FrameDecoder::default(),
            read_buf: BytesMut::new(),
            read_seen: 0,
            body_read: None,
            reading_bodies: false,
            transmit,
            events: VecDeque::new(),
            channels: ChannelTable::default(),
            server_properties: FieldTable::new(),
            next_request: 0,
            last_recv: now,
            last_sent: now,
            blocked: None,
            conn_pending: VecDeque::new(),
            topology: Topology::default(),
            join_slabs: channel::JoinSlabs::default(),
            schedule: config.recovery.as_ref().map(recovery::Schedule::new),
            recovery: None,
            config,
            counters: Counters::default(),
            deadlines: deadlines::Deadlines::default(),
        }
    }

    // ----- queries -----

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        match self.lifecycle {
            Lifecycle::Handshake { step, .. } => match step {
                HandshakeStep::AwaitingStart => State::AwaitingStart,
                HandshakeStep::Authenticating => State::Authenticating,
                HandshakeStep::Opening => State::Opening,
            },
            Lifecycle::Open => State::Open,
            Lifecycle::Closing { .. } => State::Closing,
            Lifecycle::Closed { .. } => State::Closed,
            Lifecycle::Recovering => State::Recovering,
        }
    }

    /// Whether commands can be sent.
    pub fn is_open(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Open)
    }

    /// Whether the connection is over (after [`Event::Closed`]).
    pub fn is_closed(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Closed { .. })
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
        match &self.lifecycle {
            Lifecycle::Closing { cause, .. } => Some(cause.error()),
            Lifecycle::Closed { error } => Some(error),
            _ => None,
        }
    }

    /// Whether publishing on the channel is allowed by `channel.flow` (`None`: no such
    /// open channel).
    pub fn channel_flow_active(&self, ch: ChannelId) -> Option<bool> {
        match self.channels.get(&ch.0) {
            Some(Channel::Open(c)) => Some(c.flow_active),
            _ => None,
        }
    }

    /// Whether the broker has blocked publishing (`connection.blocked`).
    pub fn is_blocked(&self) -> bool {
        self.blocked.is_some()
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

    // ----- input -----

    /// Copies `data` in and handles every whole frame; a partial frame waits for the next
    /// call. The convenience form of [`Connection::process_input`]; use one or the other.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        let mut buf = std::mem::take(&mut self.read_buf);
        buf.extend_from_slice(data);
        self.process_input(&mut buf, now);
        self.read_buf = buf;
    }

    /// Decodes and handles every whole frame at the front of `buf`, the caller's read buffer,
    /// which the caller reads into (no copy); what is left is a partial frame for the next
    /// call. Received bodies are slices of `buf`'s memory, so keep reading into the same
    /// buffer: it is reused in place once those bodies are dropped.
    pub fn process_input(&mut self, buf: &mut BytesMut, now: Instant) {
        self.deadlines.arm(now);
        if buf.len() != self.read_seen {
            self.last_recv = now;
            self.counters.m.bytes_in += buf.len().saturating_sub(self.read_seen) as u64;
        }
        if self.is_closed() || self.between_transports() {
            // Over, or bytes of a transport that recovery has given up on.
            buf.clear();
            self.read_seen = 0;
            return;
        }
        if self.state() == State::AwaitingStart && looks_like_tls_record(buf) {
            // A TLS server answering our plaintext protocol header with an alert record.
            buf.clear();
            self.read_seen = 0;
            return self.finish(Some(Error::Protocol {
                code: ReplyCode::FRAME_ERROR,
                text: "the server answered with a TLS record: this port expects TLS, \
                       connect with amqps://"
                    .into(),
            }));
        }
        if !self.continue_body_read(buf, now) {
            self.read_seen = buf.len();
            return;
        }
        loop {
            match self.decoder.decode(buf) {
                Ok(Some(frame)) => {
                    self.on_frame(frame, now);
                    if self.is_closed() || self.between_transports() {
                        buf.clear();
                        self.decoder.discard_pending();
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // The stream is out of step: nothing more can be read from it, so the
                    // close we send cannot be answered either.
                    self.violation(e.reply_code(), e.to_string(), now);
                    self.end_close();
                    buf.clear();
                    self.decoder.discard_pending();
                    break;
                }
            }
        }
        self.read_seen = buf.len();
    }

    /// The transport reached end of stream.
    pub fn handle_eof(&mut self, now: Instant) {
        let error = match &self.lifecycle {
            Lifecycle::Closed { .. } => return,
            Lifecycle::Closing { .. } => return self.end_close(),
            // A broker that announced `authentication_failure_close` says why it refuses a
            // login with connection.close; hanging up without one is a crash or a restart.
            Lifecycle::Handshake {
                step: HandshakeStep::Authenticating,
                ..
            } if !self.announces_auth_failure_close() => Error::Authentication(
                "the broker closed the connection during login (wrong credentials or mechanism?)"
                    .into(),
            ),
            _ => Error::UnexpectedEof {
                mid_frame: self.read_seen != 0 || self.body_read.is_some(),
            },
        };
        self.lost(error, now);
    }

    /// Whether the broker's `connection.start` announced the `authentication_failure_close`
    /// capability.
    fn announces_auth_failure_close(&self) -> bool {
        use crate::types::FieldValue;
        match self.server_properties.get("capabilities") {
            Some(FieldValue::Table(caps)) => matches!(
                caps.get("authentication_failure_close"),
                Some(FieldValue::Bool(true))
            ),
            _ => false,
        }
    }

    /// The transport failed; everything pending fails with this error.
    pub fn handle_transport_error(
        &mut self,
        kind: std::io::ErrorKind,
        message: String,
        now: Instant,
    ) {
        match self.lifecycle {
            Lifecycle::Closed { .. } => {}
            // A close was under way: ours (the broker may just have hung up early), or one
            // for a protocol violation, which stays the real reason (as on EOF).
            Lifecycle::Closing { .. } => self.end_close(),
            _ => self.lost(Error::Transport { kind, message }, now),
        }
    }

    /// Handles the passage of time: every timer whose deadline is at or before `now` fires
    /// (heartbeats, a dead peer, handshake, close and request timeouts).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.deadlines.arm(now);
        for timer in Timer::ALL {
            if self.deadline(timer).is_some_and(|t| t <= now) {
                self.expire(timer, now);
            }
        }
    }

    // ----- output -----

    /// The next piece of output to write, if any, written at time `now`. Call it until it
    /// returns `None` and write the pieces in order (a vectored write can take several at
    /// once); large bodies come as their own pieces, by reference, never copied.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        self.deadlines.arm(now);
        let chunk = self.transmit.pop_chunk()?;
        self.last_sent = now;
        self.counters.m.bytes_out += chunk.len() as u64;
        Some(chunk)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        if let Event::Completed { id, .. } = &event {
            self.deadlines.done(*id);
        }
        // Every event passes here once, so counting here counts each exactly once.
        count_event(&mut self.counters.m, &event);
        Some(event)
    }

    /// The connection's counters (see [`crate::metrics`]); a blocked period in progress is
    /// counted up to `now`.
    pub fn metrics(&self, now: Instant) -> Metrics {
        let mut m = self.counters.snapshot(now);
        m.frames_out = self.transmit.frames_queued();
        for channel in self.channels.values() {
            if let Channel::Open(c) = channel {
                m.channels_open += 1;
                m.consumers += c.consumers.len() as u64;
            }
        }
        m
    }

    /// When [`Connection::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Timer::ALL.iter().filter_map(|&t| self.deadline(t)).min()
    }

    // ----- plumbing for the commands -----

    fn next_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    /// What a command fails with when the connection is not open.
    fn closed_error(&self) -> Error {
        self.close_error()
            .cloned()
            .unwrap_or(Error::Usage(Misuse::ConnectionNotOpen))
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.recovery.is_some() {
            return Err(Error::WouldBlock(WouldBlock::Recovering));
        }
        match self.lifecycle {
            Lifecycle::Open => Ok(()),
            _ => Err(self.closed_error()),
        }
    }

    /// Whether the connection is lost and waiting for a new transport.
    fn between_transports(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Recovering)
    }

    fn open_channel_mut(&mut self, ch: ChannelId) -> Result<&mut OpenChannel, Error> {
        self.check_open()?;
        match self.channels.get_mut(&ch.0) {
            Some(Channel::Open(c)) => Ok(c),
            Some(Channel::Opening(_)) => Err(Error::Usage(Misuse::ChannelOpening)),
            Some(Channel::Closing(_)) => Err(Error::Usage(Misuse::ChannelClosing)),
            None => Err(Error::Usage(Misuse::NoSuchChannel)),
        }
    }

    fn send_method(&mut self, channel: u16, method: &Method) -> Result<(), Error> {
        // Once tuned, a method frame over frame_max is refused rather than sent (the broker
        // would close the connection with 501).
        let frame_max = match self.lifecycle {
            Lifecycle::Open => self.tuning.frame_max,
            _ => 0,
        };
        self.transmit.push_method(channel, method, frame_max)?;
        Ok(())
    }

    fn set_step(&mut self, next: HandshakeStep) {
        if let Lifecycle::Handshake { step, .. } = &mut self.lifecycle {
            *step = next;
        }
    }

    // ----- inbound -----

    fn on_frame(&mut self, frame: Frame, now: Instant) {
        self.counters.m.frames_in += 1;
        match self.lifecycle {
            Lifecycle::Handshake { step, .. } => self.on_handshake_frame(step, frame, now),
            // After our close only close and close-ok matter.
            Lifecycle::Closing { .. } => {
                if let Frame::Method(0, m) = frame {
                    self.on_connection_method(m, now);
                }
            }
            Lifecycle::Open => match frame {
                Frame::Heartbeat => {}
                Frame::Method(0, m) => self.on_connection_method(m, now),
                Frame::Header(0, _) | Frame::Body(0, _) => self.violation(
                    ReplyCode::UNEXPECTED_FRAME,
                    "content frame on channel 0".into(),
                    now,
                ),
                Frame::Method(ch, m) if self.is_replay_reply(ch, &m) => {
                    self.on_replay_reply(ch, m, now)
                }
                frame => self.on_channel_frame(frame, now),
            },
            Lifecycle::Closed { .. } | Lifecycle::Recovering => {}
        }
    }

    fn on_connection_method(&mut self, m: Method, now: Instant) {
        let closing = matches!(self.lifecycle, Lifecycle::Closing { .. });
        match m {
            Method::ConnectionClose(close) => {
                let _ = self.send_method(0, &ConnectionCloseOk {}.into());
                if closing {
                    // Both sides closed at once: ours stands.
                    return self.end_close();
                }
                let reason = server_reason(
                    close.reply_code,
                    &close.reply_text,
                    close.class_id,
                    close.method_id,
                );
                self.lost(Error::ConnectionClosed(reason), now);
            }
            Method::ConnectionCloseOk(_) if closing => self.end_close(),
            _ if closing => {}
            Method::ConnectionBlocked(b) => {
                self.blocked = Some(b.reason.clone());
                self.counters.blocked(now);
                self.events.push_back(Event::Blocked { reason: b.reason });
            }
            Method::ConnectionUnblocked(_) => {
                self.blocked = None;
                self.counters.unblocked(now);
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
                    now,
                ),
            },
            other => self.violation(
                ReplyCode::COMMAND_INVALID,
                format!("{} is not valid on channel 0", other.name()),
                now,
            ),
        }
    }

    /// Hands a frame on a channel other than 0 to its channel, and acts on what it returns.
    fn on_channel_frame(&mut self, frame: Frame, now: Instant) {
        let ch = frame.channel();
        if let Frame::Method(_, m) = &frame {
            let info = m.info();
            if info.id.class_id == ConnectionStart::ID.class_id {
                return self.violation(
                    ReplyCode::COMMAND_INVALID,
                    format!("{} on channel {ch}", info.name),
                    now,
                );
            }
        }
        let (Some(channel), mut cx) = split!(self, ch) else {
            return self.violation(
                ReplyCode::CHANNEL_ERROR,
                format!("frame on channel {ch}, which is not open"),
                now,
            );
        };
        let handled = match frame {
            Frame::Method(_, m) => channel.on_method(m, &mut cx),
            Frame::Header(_, h) => channel.on_header(h, &mut cx).map(|()| Retain::Keep),
            Frame::Body(_, b) => channel.on_body(b, &mut cx).map(|()| Retain::Keep),
            Frame::Heartbeat => Ok(Retain::Keep),
        };
        match handled {
            Ok(Retain::Keep) => {}
            Ok(Retain::Remove) => {
                self.channels.remove(&ch);
            }
            Err(v) => self.violation(v.code, v.text, now),
        }
    }

    // ----- failure paths -----

    /// Fails every channel and connection-level request with `error`.
    fn fail_everything(&mut self, error: &Error) {
        self.deadlines.clear();
        let channels = std::mem::take(&mut self.channels);
        for (ch, channel) in channels {
            let (_, mut cx) = split!(self, ch);
            channel.fail(error, &mut cx);
        }
        for (id, _) in self.conn_pending.drain(..) {
            self.events.push_back(Event::Completed {
                id,
                result: Err(error.clone()),
            });
        }
    }

    /// Ends a close this side started, with its cause.
    fn end_close(&mut self) {
        if let Lifecycle::Closing { cause, .. } = &self.lifecycle {
            let outcome = cause.outcome();
            self.finish(outcome);
        }
    }

    /// Ends the connection for good and reports why (`None`: an orderly close we asked for).
    fn finish(&mut self, error: Option<Error>) {
        let own = match &self.lifecycle {
            Lifecycle::Closed { .. } => return,
            Lifecycle::Closing {
                cause: CloseCause::Client(own),
                ..
            } => Some(own.clone()),
            _ => None,
        };
        if self.recovery.take().is_some() {
            if let Some(error) = &error {
                self.events.push_back(Event::RecoveryGivenUp(error.clone()));
            }
        }
        // An orderly end keeps the reason the client gave when it asked to close.
        let failure = error.clone().or(own).unwrap_or_else(|| {
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
        self.body_read = None;
        // A block ends with the connection; the peer was last heard from at `last_recv`.
        self.counters.unblocked(self.last_recv);
        self.lifecycle = Lifecycle::Closed { error: failure };
        self.events.push_back(Event::Closed(error));
    }

    /// The peer broke the protocol: send `connection.close` with the code the spec names,
    /// fail everything, and wait (bounded by the close timeout from `now`) for `close-ok`.
    fn violation(&mut self, code: ReplyCode, text: String, now: Instant) {
        let error = Error::Protocol {
            code,
            text: text.clone(),
        };
        match self.lifecycle {
            Lifecycle::Closed { .. } => return,
            Lifecycle::Closing { .. } => return self.finish(Some(error)),
            _ => {}
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
        self.lifecycle = Lifecycle::Closing {
            deadline: now + self.config.close_timeout,
            cause: CloseCause::Violation(error),
        };
    }
}

/// Counts what an event reports: deliveries (consumed or fetched), confirms by outcome,
/// returns (alone or attached to their confirm) and completed recoveries.
fn count_event(m: &mut Metrics, event: &Event) {
    match event {
        Event::Delivery(_) => m.deliveries += 1,
        Event::Completed {
            result: Ok(Reply::Get(Some(_))),
            ..
        } => m.deliveries += 1,
        Event::Returned(_) => m.returns += 1,
        Event::Recovered { .. } => m.recoveries += 1,
        Event::Confirmed { outcome, .. } => match outcome {
            Confirmation::Ack(returned) => {
                m.confirms_acked += 1;
                m.returns += u64::from(returned.is_some());
            }
            Confirmation::Nack(returned) => {
                m.confirms_nacked += 1;
                m.returns += u64::from(returned.is_some());
            }
            Confirmation::Lost(_) => m.confirms_lost += 1,
        },
        _ => {}
    }
}

/// Whether `buf` starts like a TLS record (alert or handshake, version 3.x), which no AMQP
/// frame does: frame types are 1, 2, 3 and 8.
fn looks_like_tls_record(buf: &[u8]) -> bool {
    matches!(buf, [0x15 | 0x16, 0x03, 0x00..=0x04, ..])
}
