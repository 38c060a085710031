//! A broker-side peer built on the same codec, and a [`Pair`] that wires it to a client
//! [`Connection`] in memory with a fake clock.
//!
//! A test reads as the conversation does: the client does X, the peer expects frames Y, the
//! peer sends Z, the client emits events W.
//!
//! ```
//! use amqp_conformance::peer::Pair;
//! use amqp_proto::{Event, Method, QueueDeclareOk, QueueDeclareOptions, Reply, FieldTable};
//!
//! let mut pair = Pair::connected();
//! let ch = pair.open_channel();
//! let id = pair.client.queue_declare(ch, "jobs", QueueDeclareOptions::default()).unwrap();
//! let Method::QueueDeclare(declare) = pair.expect_method(ch.0) else { panic!("not a declare") };
//! assert_eq!(declare.queue.as_str(), "jobs");
//! pair.send_method(ch.0, QueueDeclareOk { queue: declare.queue, message_count: 3, consumer_count: 0 });
//! let reply = pair.expect_completed(id).unwrap();
//! assert!(matches!(reply, Reply::QueueDeclared { message_count: 3, .. }));
//! ```
//!
//! Helpers run the common exchanges in one call ([`Pair::start_consumer`],
//! [`Pair::select_confirms`], [`Pair::publish`], [`Pair::deliver`]) and assert what must
//! happen next ([`Pair::expect_published`], [`Pair::expect_delivery`],
//! [`Pair::expect_closed`], [`Pair::expect_violation`], …):
//!
//! ```
//! use amqp_conformance::peer::Pair;
//! use amqp_proto::{BasicAck, Confirmation, DeliveryTag, Event};
//!
//! let mut pair = Pair::connected();
//! let ch = pair.open_channel();
//! pair.select_confirms(ch);
//! assert_eq!(pair.publish(ch, b"hello", false), Some(DeliveryTag(1)));
//! pair.send_method(ch.0, BasicAck { delivery_tag: 1, multiple: false });
//! assert!(matches!(
//!     pair.expect_event(),
//!     Event::Confirmed { tag: DeliveryTag(1), outcome: Confirmation::Ack(None), .. }
//! ));
//! pair.start_consumer(ch, "jobs", "c1");
//! pair.deliver(ch.0, "c1", 1, b"work");
//! assert_eq!(&pair.expect_delivery().body[..], b"work");
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use amqp_proto::frame::decode_protocol_header;
use amqp_proto::{
    BasicConsumeOk, BasicConsumeOptions, BasicDeliver, BasicProperties, BasicPublish,
    BasicPublishOptions, ChannelId, ChannelOpenOk, ConfirmSelectOk, ConfirmSelectOptions,
    Connection, ConnectionClose, ConnectionCloseOk, ConnectionConfig, ConnectionOpenOk,
    ConnectionStart, ConnectionTune, ContentHeader, Delivery, DeliveryTag, Error, Event,
    FieldTable, Frame, FrameDecoder, LongString, Method, Reply, ReplyCode, RequestId, ShortString,
    Transmit,
};
use bytes::{Bytes, BytesMut};

/// The broker side: decodes what the client sent and encodes what the script says.
#[derive(Debug)]
pub struct ScriptedPeer {
    decoder: FrameDecoder,
    inbound: BytesMut,
    header_seen: bool,
    outbound: Transmit,
    /// frame_max the peer uses to split bodies it sends.
    pub frame_max: u32,
}

impl Default for ScriptedPeer {
    fn default() -> Self {
        ScriptedPeer {
            decoder: FrameDecoder::new(0),
            inbound: BytesMut::new(),
            header_seen: false,
            outbound: Transmit::default(),
            frame_max: 131_072,
        }
    }
}

impl ScriptedPeer {
    /// Feeds bytes the client wrote; returns the frames that completed.
    ///
    /// # Panics
    /// If the client sent something the codec cannot decode (a client bug).
    pub fn receive(&mut self, bytes: &[u8]) -> Vec<Frame> {
        self.inbound.extend_from_slice(bytes);
        if !self.header_seen {
            match decode_protocol_header(&mut self.inbound) {
                Ok(true) => self.header_seen = true,
                Ok(false) => return Vec::new(),
                Err(e) => panic!("client sent a bad protocol header: {e}"),
            }
        }
        let mut frames = Vec::new();
        loop {
            match self.decoder.decode(&mut self.inbound) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return frames,
                Err(e) => panic!("client sent an undecodable frame: {e}"),
            }
        }
    }

    /// Whether the client's protocol header has arrived.
    pub fn header_seen(&self) -> bool {
        self.header_seen
    }

    /// Queues a frame for the client.
    pub fn send(&mut self, frame: &Frame) {
        self.outbound.push_frame(frame).expect("peer frame encodes");
    }

    /// Queues a content-carrying method with its header and body.
    pub fn send_content(
        &mut self,
        channel: u16,
        method: impl Into<Method>,
        properties: &BasicProperties,
        body: &[u8],
    ) {
        let body = Bytes::copy_from_slice(body);
        self.outbound
            .push_content(channel, &method.into(), properties, &body, self.frame_max)
            .expect("peer content encodes");
    }

    /// Queues a `basic.deliver` of `body` to consumer `consumer_tag` (split at `frame_max`).
    pub fn deliver(&mut self, channel: u16, consumer_tag: &str, delivery_tag: u64, body: &[u8]) {
        let deliver = BasicDeliver {
            consumer_tag: Pair::s(consumer_tag),
            delivery_tag,
            redelivered: false,
            exchange: ShortString::empty(),
            routing_key: Pair::s("q"),
        };
        self.send_content(channel, deliver, &BasicProperties::default(), body);
    }

    /// Queues raw bytes (for malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.outbound.push_raw(bytes);
    }

    /// Takes everything queued for the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.outbound.len());
        while let Some(chunk) = self.outbound.pop_chunk() {
            out.extend_from_slice(&chunk);
        }
        out
    }
}

/// A message the client published, as the peer received it: the `basic.publish` method, its
/// content header and the body re-assembled from its body frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The channel it was published on.
    pub channel: u16,
    /// The method frame.
    pub method: BasicPublish,
    /// The content header frame.
    pub header: ContentHeader,
    /// The body frames joined.
    pub body: Vec<u8>,
    /// How many body frames carried it.
    pub body_frames: usize,
}

impl Published {
    /// Reads one whole published message on `channel` from the frames `next` yields.
    ///
    /// # Panics
    /// If the frames are anything else or stop mid-message.
    #[track_caller]
    pub fn read(channel: u16, mut next: impl FnMut() -> Option<Frame>) -> Published {
        let method = match next() {
            Some(Frame::Method(ch, Method::BasicPublish(m))) if ch == channel => m,
            other => panic!("expected basic.publish on channel {channel}, got {other:?}"),
        };
        let header = match next() {
            Some(Frame::Header(ch, h)) if ch == channel => h,
            other => panic!("expected a content header on channel {channel}, got {other:?}"),
        };
        let mut body = Vec::new();
        let mut body_frames = 0;
        while (body.len() as u64) < header.body_size {
            match next() {
                Some(Frame::Body(ch, b)) if ch == channel => {
                    body.extend_from_slice(&b);
                    body_frames += 1;
                }
                other => panic!("expected a body frame on channel {channel}, got {other:?}"),
            }
        }
        assert_eq!(
            body.len() as u64,
            header.body_size,
            "body longer than its header says"
        );
        Published {
            channel,
            method,
            header,
            body,
            body_frames,
        }
    }
}

/// The broker's side of a conversation, as [`Pair`] and [`crate::client::ClientPair`] both
/// script it.
pub trait Script {
    /// Sends a method to the client and lets it handle it.
    fn send(&mut self, channel: u16, method: Method);
    /// The next frame the client sent, which must be a method on `channel`.
    fn expect(&mut self, channel: u16) -> Method;
}

impl Script for Pair {
    fn send(&mut self, channel: u16, method: Method) {
        self.send_method(channel, method);
    }

    fn expect(&mut self, channel: u16) -> Method {
        self.expect_method(channel)
    }
}

/// Plays the broker's side of the handshake: RabbitMQ's `connection.start`, `tune`, and
/// `open-ok`, checking the client's answers.
///
/// # Panics
/// If the client answers anything else.
#[track_caller]
pub fn play_handshake(script: &mut impl Script, tune: ConnectionTune) {
    script.send(0, rabbitmq_start().into());
    match script.expect(0) {
        Method::ConnectionStartOk(_) => {}
        other => panic!("expected start-ok, got {other:?}"),
    }
    script.send(0, tune.into());
    match script.expect(0) {
        Method::ConnectionTuneOk(_) => {}
        other => panic!("expected tune-ok, got {other:?}"),
    }
    match script.expect(0) {
        Method::ConnectionOpen(_) => {}
        other => panic!("expected open, got {other:?}"),
    }
    script.send(0, ConnectionOpenOk::default().into());
}

/// A client [`Connection`] and a [`ScriptedPeer`] wired together in memory, with a fake clock.
#[derive(Debug)]
pub struct Pair {
    /// The client under test.
    pub client: Connection,
    /// The broker side.
    pub peer: ScriptedPeer,
    /// The fake current time; only [`Pair::advance`] moves it.
    pub now: Instant,
    /// Frames the client sent that the script has not looked at yet.
    pub inbox: VecDeque<Frame>,
    /// Events the client emitted that the script has not looked at yet.
    pub events: VecDeque<Event>,
    /// When set, bytes travel to the client in pieces of this size (to test re-assembly).
    pub chunk_size: Option<usize>,
}

/// The `connection.start` a RabbitMQ 3.10 broker sends, trimmed to what clients look at.
pub fn rabbitmq_start() -> ConnectionStart {
    let caps = FieldTable::new()
        .with("publisher_confirms", true)
        .with("exchange_exchange_bindings", true)
        .with("basic.nack", true)
        .with("consumer_cancel_notify", true)
        .with("connection.blocked", true)
        .with("authentication_failure_close", true)
        .with("per_consumer_qos", true)
        .with("direct_reply_to", true);
    ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: FieldTable::new()
            .with("product", "RabbitMQ")
            .with("version", "3.10.8")
            .with("capabilities", caps),
        mechanisms: LongString::from("AMQPLAIN PLAIN"),
        locales: LongString::from("en_US"),
    }
}

impl Pair {
    /// A client that has sent its protocol header, with nothing answered yet.
    pub fn new(config: ConnectionConfig) -> Self {
        let now = Instant::now();
        Pair {
            client: Connection::new(config, now),
            peer: ScriptedPeer::default(),
            now,
            inbox: VecDeque::new(),
            events: VecDeque::new(),
            chunk_size: None,
        }
    }

    /// A client with default settings that completed the handshake (heartbeat 60 s,
    /// frame_max 131072, channel_max 2047), with the `Connected` event consumed.
    pub fn connected() -> Self {
        Self::connected_with(ConnectionConfig::default(), 2047, 131_072, 60)
    }

    /// A client that completed the handshake against the given tune values.
    pub fn connected_with(
        config: ConnectionConfig,
        channel_max: u16,
        frame_max: u32,
        heartbeat: u16,
    ) -> Self {
        let mut pair = Pair::new(config);
        play_handshake(
            &mut pair,
            ConnectionTune {
                channel_max,
                frame_max,
                heartbeat,
            },
        );
        match pair.next_event() {
            Some(Event::Connected { .. }) => {}
            other => panic!("expected Connected, got {other:?}"),
        }
        pair
    }

    /// Moves the client's output to the peer and the peer's output to the client, until
    /// neither has anything left; collects frames and events.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(chunk) = self.client.poll_transmit(self.now) {
                moved = true;
                let frames = self.peer.receive(&chunk);
                self.inbox.extend(frames);
            }
            let out = self.peer.take_output();
            if !out.is_empty() {
                moved = true;
                match self.chunk_size {
                    Some(n) => {
                        for piece in out.chunks(n.max(1)) {
                            self.client.handle_input(piece, self.now);
                        }
                    }
                    None => self.client.handle_input(&out, self.now),
                }
            }
            while let Some(e) = self.client.poll_event() {
                self.events.push_back(e);
            }
            if !moved {
                break;
            }
        }
    }

    /// Sends a method from the peer to the client.
    pub fn send_method(&mut self, channel: u16, method: impl Into<Method>) {
        self.peer.send(&Frame::Method(channel, method.into()));
        self.pump();
    }

    /// Sends any frame from the peer to the client.
    pub fn send_frame(&mut self, frame: Frame) {
        self.peer.send(&frame);
        self.pump();
    }

    /// Sends raw bytes from the peer to the client.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.peer.send_raw(bytes);
        self.pump();
    }

    /// Sends a content-carrying method with header and body from the peer.
    pub fn send_content(
        &mut self,
        channel: u16,
        method: impl Into<Method>,
        properties: &BasicProperties,
        body: &[u8],
    ) {
        self.peer.send_content(channel, method, properties, body);
        self.pump();
    }

    /// The next frame the client sent.
    pub fn next_frame(&mut self) -> Option<Frame> {
        self.pump();
        self.inbox.pop_front()
    }

    /// The next frame the client sent, which must be a method on `channel`.
    ///
    /// # Panics
    /// If the client sent nothing, or something else.
    #[track_caller]
    pub fn expect_method(&mut self, channel: u16) -> Method {
        match self.next_frame() {
            Some(Frame::Method(ch, m)) if ch == channel => m,
            other => panic!("expected a method on channel {channel}, got {other:?}"),
        }
    }

    /// Asserts the client sent nothing more.
    #[track_caller]
    pub fn expect_silence(&mut self) {
        if let Some(f) = self.next_frame() {
            panic!("expected no frame from the client, got {f:?}");
        }
    }

    /// The next event the client emitted.
    pub fn next_event(&mut self) -> Option<Event> {
        self.pump();
        self.events.pop_front()
    }

    /// All events emitted so far.
    pub fn drain_events(&mut self) -> Vec<Event> {
        self.pump();
        self.events.drain(..).collect()
    }

    /// The next event, which must complete request `id`; returns its result.
    #[track_caller]
    pub fn expect_completed(&mut self, id: RequestId) -> Result<Reply, amqp_proto::Error> {
        match self.next_event() {
            Some(Event::Completed { id: got, result }) if got == id => result,
            other => panic!("expected completion of {id:?}, got {other:?}"),
        }
    }

    /// Opens a channel through the whole exchange and returns its id.
    #[track_caller]
    pub fn open_channel(&mut self) -> ChannelId {
        let (ch, id) = self.client.open_channel().expect("open_channel");
        match self.expect_method(ch.0) {
            Method::ChannelOpen(_) => {}
            other => panic!("expected channel.open, got {other:?}"),
        }
        self.send_method(ch.0, ChannelOpenOk::default());
        match self.expect_completed(id) {
            Ok(Reply::ChannelOpened(got)) if got == ch => ch,
            other => panic!("expected ChannelOpened, got {other:?}"),
        }
    }

    /// Moves the fake clock forward and lets the client act on it.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.client.handle_timeout(self.now);
        self.pump();
    }

    /// The next event, which must exist.
    ///
    /// # Panics
    /// If the client emitted no event.
    #[track_caller]
    pub fn expect_event(&mut self) -> Event {
        match self.next_event() {
            Some(e) => e,
            None => panic!("expected an event, got none"),
        }
    }

    /// Asserts the client emitted no event.
    #[track_caller]
    pub fn expect_no_event(&mut self) {
        if let Some(e) = self.next_event() {
            panic!("expected no event, got {e:?}");
        }
    }

    /// The next event, which must be [`Event::Closed`]; returns its error (`None` for an
    /// orderly close this client asked for).
    ///
    /// # Panics
    /// If the next event is anything else.
    #[track_caller]
    pub fn expect_closed(&mut self) -> Option<Error> {
        match self.next_event() {
            Some(Event::Closed(e)) => e,
            other => panic!("expected Closed, got {other:?}"),
        }
    }

    /// Skips events until [`Event::Closed`] and returns its error together with the events
    /// that came before it.
    ///
    /// # Panics
    /// If the client never emits `Closed`.
    #[track_caller]
    pub fn events_until_closed(&mut self) -> (Vec<Event>, Option<Error>) {
        let mut before = Vec::new();
        loop {
            match self.next_event() {
                Some(Event::Closed(e)) => return (before, e),
                Some(e) => before.push(e),
                None => panic!("expected Closed after {before:?}"),
            }
        }
    }

    /// The next thing the client sent, which must be a whole published message on `channel`
    /// (method, header and as many body frames as the header announces).
    ///
    /// # Panics
    /// If the client sent anything else or stopped mid-message.
    #[track_caller]
    pub fn expect_published(&mut self, channel: u16) -> Published {
        Published::read(channel, || self.next_frame())
    }

    /// Starts a consumer with tag `tag` on `queue` through the whole exchange
    /// (`basic.consume` / `consume-ok`) and returns the tag.
    ///
    /// # Panics
    /// If the client does not behave as expected.
    #[track_caller]
    pub fn start_consumer(&mut self, ch: ChannelId, queue: &str, tag: &str) -> ShortString {
        let id = self
            .client
            .basic_consume(ch, queue, tag, BasicConsumeOptions::default())
            .expect("basic_consume");
        match self.expect_method(ch.0) {
            Method::BasicConsume(m) => assert_eq!(m.queue.as_str(), queue),
            other => panic!("expected basic.consume, got {other:?}"),
        }
        self.send_method(
            ch.0,
            BasicConsumeOk {
                consumer_tag: Pair::s(tag),
            },
        );
        match self.expect_completed(id) {
            Ok(Reply::Consuming { consumer_tag }) => consumer_tag,
            other => panic!("expected Consuming, got {other:?}"),
        }
    }

    /// Puts `ch` in confirm mode through the whole exchange (`confirm.select` / `select-ok`).
    ///
    /// # Panics
    /// If the client does not behave as expected.
    #[track_caller]
    pub fn select_confirms(&mut self, ch: ChannelId) {
        let id = self
            .client
            .confirm_select(ch, ConfirmSelectOptions::default())
            .expect("confirm_select");
        match self.expect_method(ch.0) {
            Method::ConfirmSelect(_) => {}
            other => panic!("expected confirm.select, got {other:?}"),
        }
        self.send_method(ch.0, ConfirmSelectOk {});
        match self.expect_completed(id) {
            Ok(Reply::ConfirmSelected) => {}
            other => panic!("expected ConfirmSelected, got {other:?}"),
        }
    }

    /// Publishes `body` to exchange `""` with routing key `"q"` (optionally mandatory) and
    /// checks the peer received it whole; returns the confirm tag, if in confirm mode.
    ///
    /// # Panics
    /// If the publish is refused or arrives wrong.
    #[track_caller]
    pub fn publish(&mut self, ch: ChannelId, body: &[u8], mandatory: bool) -> Option<DeliveryTag> {
        let options = BasicPublishOptions {
            mandatory,
            ..Default::default()
        };
        let tag = self
            .client
            .basic_publish(
                ch,
                "",
                "q",
                options,
                &BasicProperties::default(),
                &Bytes::copy_from_slice(body),
            )
            .expect("basic_publish");
        let got = self.expect_published(ch.0);
        assert_eq!(got.body, body);
        assert_eq!(got.method.mandatory, mandatory);
        tag
    }

    /// Sends a `basic.deliver` with `body` from the peer (split at the peer's frame_max).
    pub fn deliver(&mut self, channel: u16, consumer_tag: &str, delivery_tag: u64, body: &[u8]) {
        self.peer.deliver(channel, consumer_tag, delivery_tag, body);
        self.pump();
    }

    /// The next event, which must be a delivery.
    ///
    /// # Panics
    /// If the next event is anything else.
    #[track_caller]
    pub fn expect_delivery(&mut self) -> Delivery {
        match self.next_event() {
            Some(Event::Delivery(d)) => *d,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    /// The next frame the client sent, which must be `connection.close`; returns it.
    ///
    /// # Panics
    /// If the client sent anything else.
    #[track_caller]
    pub fn expect_connection_close(&mut self) -> ConnectionClose {
        match self.expect_method(0) {
            Method::ConnectionClose(c) => c,
            other => panic!("expected connection.close, got {other:?}"),
        }
    }

    /// Asserts that the client closed the connection for a protocol violation with `code`:
    /// it sent `connection.close` with that code and, once the peer answered `close-ok` (if
    /// the stream was still usable), ended with [`Error::Protocol`] carrying the same code.
    /// Returns the events emitted before [`Event::Closed`] (the failures of everything that
    /// was pending).
    ///
    /// # Panics
    /// If the client did anything else.
    #[track_caller]
    pub fn expect_violation(&mut self, code: ReplyCode) -> Vec<Event> {
        let close = self.expect_connection_close();
        assert_eq!(ReplyCode(close.reply_code), code, "close sent: {close:?}");
        if !self.client.is_closed() {
            self.send_method(0, ConnectionCloseOk {});
        }
        let (before, error) = self.events_until_closed();
        match error {
            Some(Error::Protocol { code: got, .. }) => assert_eq!(got, code),
            other => panic!("expected a protocol error {code:?}, got {other:?}"),
        }
        assert!(self.client.is_closed());
        before
    }

    /// After an [`Event::Dial`]: a fresh broker on a fresh transport (nothing of the old one's
    /// frames is left), handed to the client at the current time.
    ///
    /// # Panics
    /// If the client asked for no dial.
    #[track_caller]
    pub fn fresh_transport(&mut self) {
        self.peer = ScriptedPeer::default();
        self.inbox.clear();
        let now = self.now;
        self.client.transport_ready(now).expect("transport_ready");
    }

    /// Short-string helper for scripts.
    pub fn s(text: &str) -> ShortString {
        ShortString::try_from(text).expect("short string")
    }
}

/// The pieces of a stream of phases (e.g. what a peer sends before each of the client's
/// replies) cut at `cuts`: positions in the whole stream, in any order, duplicates and
/// out-of-range values allowed. A phase's end is always a cut, so no piece spans two phases.
/// Feeding the pieces one read each checks that a client handles every split of its input.
pub fn cut_phases<'a>(phases: &'a [Vec<u8>], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut offset = 0;
    for phase in phases {
        let mut inner: Vec<usize> = cuts
            .iter()
            .filter(|&&c| c > offset && c < offset + phase.len())
            .map(|&c| c - offset)
            .collect();
        inner.sort_unstable();
        inner.dedup();
        let mut start = 0;
        for end in inner.into_iter().chain([phase.len()]) {
            pieces.push(&phase[start..end]);
            start = end;
        }
        offset += phase.len();
    }
    pieces
}
