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
//! let id = pair.client.queue_declare(ch, "jobs", QueueDeclareOptions::default(), FieldTable::new()).unwrap();
//! let Method::QueueDeclare(declare) = pair.expect_method(ch.0) else { panic!("not a declare") };
//! assert_eq!(declare.queue.as_str(), "jobs");
//! pair.send_method(ch.0, QueueDeclareOk { queue: declare.queue, message_count: 3, consumer_count: 0 });
//! let reply = pair.expect_completed(id).unwrap();
//! assert!(matches!(reply, Reply::QueueDeclared { message_count: 3, .. }));
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use amqp_proto::frame::decode_protocol_header;
use amqp_proto::{
    BasicProperties, ChannelId, ChannelOpenOk, Connection, ConnectionConfig, ConnectionOpenOk,
    ConnectionStart, ConnectionTune, Event, FieldTable, Frame, FrameDecoder, LongString, Method,
    Reply, RequestId, ShortString, Transmit,
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
    pub fn connected_with(config: ConnectionConfig, channel_max: u16, frame_max: u32, heartbeat: u16) -> Self {
        let mut pair = Pair::new(config);
        pair.send_method(0, rabbitmq_start());
        match pair.expect_method(0) {
            Method::ConnectionStartOk(_) => {}
            other => panic!("expected start-ok, got {other:?}"),
        }
        pair.send_method(0, ConnectionTune { channel_max, frame_max, heartbeat });
        match pair.expect_method(0) {
            Method::ConnectionTuneOk(_) => {}
            other => panic!("expected tune-ok, got {other:?}"),
        }
        match pair.expect_method(0) {
            Method::ConnectionOpen(_) => {}
            other => panic!("expected open, got {other:?}"),
        }
        pair.send_method(0, ConnectionOpenOk::default());
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
            while let Some(chunk) = self.client.pop_transmit() {
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

    /// Short-string helper for scripts.
    pub fn s(text: &str) -> ShortString {
        ShortString::try_from(text).expect("short string")
    }
}
