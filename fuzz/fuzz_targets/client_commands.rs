//! The client side driven at random: a connection past its handshake takes commands (open
//! and close channels, declares, consume, cancel, publish, ack, qos, confirm mode, close)
//! interleaved with peer input, both from the fuzz input: well-formed replies the broker
//! could send on a channel the input picks, and raw bytes.
//!
//! Input layout: a sequence of operations, each an opcode byte followed by its operands
//! (a channel slot byte, a length byte, ...); see `step`. The input ends with the stream's
//! end.
//!
//! Checks: no panic, and the bookkeeping of `connection_input` ([`Books`]): every request
//! completes exactly once, every confirm-mode publish gets one outcome, every consumer ends
//! once, `Closed` comes once and last, nothing pending or queued after it.
#![no_main]

use std::time::{Duration, Instant};

use amqp_proto::{
    BasicAck, BasicCancelOk, BasicConsumeOk, BasicConsumeOptions, BasicDeliver, BasicProperties,
    BasicPublishOptions, BasicQosOk, BasicQosOptions, ChannelClose, ChannelCloseOk, ChannelId,
    ChannelOpenOk, ConfirmSelectOk, ConfirmSelectOptions, Connection, ConnectionClose,
    ConnectionConfig, ConnectionOpenOk, ConnectionStart, ConnectionTune, ContentHeader,
    DeliveryTag, Event, ExchangeDeclareOk, ExchangeDeclareOptions, FieldTable, Frame, LongString,
    Method, QueueDeclareOk, QueueDeclareOptions,
};
use amqp_proto_fuzz::Books;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

/// Bodies the client publishes are prefixes of this one (no allocation per publish).
static PUBLISH_BODY: [u8; 255 * 40] = [0x5a; 255 * 40];

/// Bodies the fake peer delivers are prefixes of this one.
static DELIVERY_BODY: [u8; 255] = [0xa5; 255];

struct Harness {
    conn: Connection,
    /// Where peer frames are encoded before they are fed in, reused.
    wire: BytesMut,
    now: Instant,
    books: Books,
    /// Channels the client opened (some may since have closed); operands pick among them.
    channels: Vec<ChannelId>,
    /// Delivery tags seen, per channel, for acks.
    deliveries: Vec<(ChannelId, DeliveryTag)>,
    /// Server delivery tags handed out by the fake peer.
    next_delivery: u64,
    /// The tag of the last consume the fake peer confirmed: deliveries and cancels go to it.
    last_consumer: String,
}

impl Harness {
    fn new() -> Self {
        let now = Instant::now();
        let config = ConnectionConfig {
            frame_max: 4096,
            heartbeat: 0,
            max_body_size: 1 << 16,
            high_water_mark: 1 << 16,
            ..Default::default()
        };
        let mut h = Harness {
            conn: Connection::new(config, now),
            wire: BytesMut::new(),
            now,
            books: Books::default(),
            channels: Vec::new(),
            deliveries: Vec::new(),
            next_delivery: 1,
            last_consumer: String::from("c1"),
        };
        let start = ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: FieldTable::new(),
            mechanisms: LongString::from("PLAIN"),
            locales: LongString::from("en_US"),
        };
        let tune = ConnectionTune {
            channel_max: 8,
            frame_max: 4096,
            heartbeat: 0,
        };
        h.feed_frames(&[
            Frame::Method(0, start.into()),
            Frame::Method(0, tune.into()),
            Frame::Method(0, ConnectionOpenOk::default().into()),
        ]);
        assert!(matches!(h.conn.poll_event(), Some(Event::Connected { .. })));
        h.settle();
        h
    }

    fn feed_frames(&mut self, frames: &[Frame]) {
        self.wire.clear();
        for f in frames {
            f.encode(&mut self.wire).expect("peer frame encodes");
        }
        self.conn.handle_input(&self.wire, self.now);
    }

    fn settle(&mut self) {
        while let Some(event) = self.conn.poll_event() {
            self.books.check(&event);
            if let Event::Delivery(d) = &event {
                self.deliveries.push((d.channel, d.delivery_tag));
            }
        }
        while self.conn.poll_transmit(self.now).is_some() {}
        assert!(
            !self.books.closed || self.conn.transmit_len() == 0,
            "bytes queued after Closed"
        );
    }

    fn channel(&self, slot: u8) -> ChannelId {
        if self.channels.is_empty() {
            // A channel never opened: the core must refuse commands on it.
            return ChannelId(u16::from(slot % 4) + 1);
        }
        self.channels[usize::from(slot) % self.channels.len()]
    }

    /// One operation; returns how many operand bytes it used.
    fn step(&mut self, op: u8, arg: &[u8]) -> usize {
        let a = arg.first().copied().unwrap_or(0);
        let b = arg.get(1).copied().unwrap_or(0);
        let ch = self.channel(a);
        let name = ["q", "", "jobs", "amq.x"][usize::from(b % 4)];
        match op % 20 {
            0 => {
                if let Ok((ch, id)) = self.conn.open_channel() {
                    self.books.issued(Ok(id), ch.0);
                    self.channels.push(ch);
                }
                0
            }
            1 => {
                let id = self.conn.close_channel(ch);
                self.books.issued(id, ch.0);
                1
            }
            2 => {
                let options = QueueDeclareOptions {
                    durable: b & 16 != 0,
                    exclusive: b & 32 != 0,
                    ..Default::default()
                };
                let id = self.conn.queue_declare(ch, name, options);
                self.books.issued(id, ch.0);
                2
            }
            3 => {
                let id = self.conn.exchange_declare(
                    ch,
                    name,
                    "direct",
                    ExchangeDeclareOptions::default(),
                );
                self.books.issued(id, ch.0);
                2
            }
            4 => {
                let tag = ["c1", "", "c2", "c1"][usize::from(b % 4)];
                let id = self
                    .conn
                    .basic_consume(ch, name, tag, BasicConsumeOptions::default());
                self.books.issued(id, ch.0);
                2
            }
            5 => {
                let tag = if b & 1 == 0 {
                    self.last_consumer.as_str()
                } else {
                    "c2"
                };
                let id = self.conn.basic_cancel(ch, tag, Default::default());
                self.books.issued(id, ch.0);
                2
            }
            6 => {
                let options = BasicPublishOptions {
                    mandatory: b & 1 != 0,
                    ..Default::default()
                };
                let body = Bytes::from_static(&PUBLISH_BODY[..usize::from(b) * 40]);
                if let Ok(Some(tag)) = self.conn.basic_publish(
                    ch,
                    "",
                    name,
                    options,
                    &BasicProperties::default(),
                    &body,
                ) {
                    assert!(
                        self.books.unconfirmed.insert((ch.0, tag.0)),
                        "publish tag {tag:?} reused"
                    );
                }
                2
            }
            7 => {
                if !self.deliveries.is_empty() {
                    let (ch, tag) = self.deliveries[usize::from(a) % self.deliveries.len()];
                    let _ = self.conn.basic_ack(ch, tag, b & 1 != 0);
                }
                2
            }
            8 => {
                let id = self
                    .conn
                    .confirm_select(ch, ConfirmSelectOptions::default());
                self.books.issued(id, ch.0);
                1
            }
            9 => {
                let id = self
                    .conn
                    .basic_qos(ch, u16::from(b), BasicQosOptions::default());
                self.books.issued(id, ch.0);
                2
            }
            10 => {
                let id = self.conn.close(self.now, "fuzz");
                self.books.issued(id, 0);
                0
            }
            11 => {
                // Raw peer bytes: a length and that many bytes.
                let len = usize::from(a).min(arg.len().saturating_sub(1));
                self.conn
                    .handle_input(arg.get(1..1 + len).unwrap_or(&[]), self.now);
                1 + len
            }
            12 => {
                self.now += Duration::from_millis(u64::from(a) * 100);
                self.conn.handle_timeout(self.now);
                1
            }
            _ => {
                // A well-formed peer frame on the picked channel.
                let method: Method = match op % 20 {
                    13 => ChannelOpenOk::default().into(),
                    14 => QueueDeclareOk {
                        queue: name.try_into().unwrap(),
                        message_count: 0,
                        consumer_count: 0,
                    }
                    .into(),
                    15 => [
                        Method::from(ExchangeDeclareOk {}),
                        ConfirmSelectOk {}.into(),
                        BasicQosOk {}.into(),
                        ChannelCloseOk {}.into(),
                    ][usize::from(b % 4)]
                    .clone(),
                    16 => {
                        // A fresh tag each time: a broker never confirms one tag twice on a
                        // channel (it refuses the second consume with 530), and the core
                        // takes the broker's word for it.
                        self.next_delivery += 1;
                        let tag = format!("amq.ctag-{}", self.next_delivery);
                        self.last_consumer = tag.clone();
                        BasicConsumeOk {
                            consumer_tag: tag.as_str().try_into().unwrap(),
                        }
                        .into()
                    }
                    17 => BasicAck {
                        delivery_tag: u64::from(b % 8),
                        multiple: b & 8 != 0,
                    }
                    .into(),
                    18 => {
                        if b & 1 == 0 {
                            BasicCancelOk {
                                consumer_tag: self.last_consumer.as_str().try_into().unwrap(),
                            }
                            .into()
                        } else {
                            let tag = self.next_delivery;
                            self.next_delivery += 1;
                            let body = Bytes::from_static(&DELIVERY_BODY[..usize::from(b)]);
                            let header = ContentHeader {
                                class_id: 60,
                                body_size: body.len() as u64,
                                properties: BasicProperties::default(),
                            };
                            self.feed_frames(&[
                                Frame::Method(
                                    ch.0,
                                    BasicDeliver {
                                        consumer_tag: self
                                            .last_consumer
                                            .as_str()
                                            .try_into()
                                            .unwrap(),
                                        delivery_tag: tag,
                                        redelivered: false,
                                        exchange: "".try_into().unwrap(),
                                        routing_key: "q".try_into().unwrap(),
                                    }
                                    .into(),
                                ),
                                Frame::Header(ch.0, header),
                                Frame::Body(ch.0, body),
                            ]);
                            return 2;
                        }
                    }
                    _ => {
                        if b & 1 == 0 {
                            ChannelClose {
                                reply_code: 404,
                                reply_text: "NOT_FOUND".try_into().unwrap(),
                                class_id: 50,
                                method_id: 10,
                            }
                            .into()
                        } else {
                            let close = ConnectionClose {
                                reply_code: 320,
                                reply_text: "CONNECTION_FORCED".try_into().unwrap(),
                                class_id: 0,
                                method_id: 0,
                            };
                            self.feed_frames(&[Frame::Method(0, close.into())]);
                            return 2;
                        }
                    }
                };
                self.feed_frames(&[Frame::Method(ch.0, method)]);
                2
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    let mut rest = data;
    while let [op, arg @ ..] = rest {
        let used = h.step(*op, arg).min(arg.len());
        h.settle();
        rest = &arg[used..];
    }
    h.conn.handle_eof(h.now);
    h.settle();
    assert!(h.conn.is_closed());
    h.books.check_all_ended();
    assert_eq!(h.conn.poll_timeout(), None);
});
