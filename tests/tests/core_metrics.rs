//! `Connection::metrics` after a known conversation with the scripted peer: every counter
//! checked exactly. Frames and bytes are counted independently on the wire between the two.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use amqp_conformance::peer::{ScriptedPeer, rabbitmq_start};
use amqp_proto::{
    BasicAck, BasicConsumeOk, BasicConsumeOptions, BasicDeliver, BasicGetOk, BasicGetOptions,
    BasicNack, BasicProperties, BasicPublishOptions, BasicReturn, ChannelId, ChannelOpenOk,
    ConfirmSelectOk, ConfirmSelectOptions, Connection, ConnectionBlocked, ConnectionConfig,
    ConnectionOpenOk, ConnectionTune, ConnectionUnblocked, DeliveryTag, Frame, FrameDecoder,
    Method, Metrics, ShortString,
};
use bytes::{Bytes, BytesMut};

/// A client and a scripted peer on an in-memory wire that counts what crosses it.
struct Wire {
    client: Connection,
    peer: ScriptedPeer,
    now: Instant,
    inbox: VecDeque<Frame>,
    /// Bytes and frames client -> peer (the protocol header is bytes, not a frame).
    up_bytes: u64,
    up_frames: u64,
    /// Bytes and frames peer -> client.
    down_bytes: u64,
    down_frames: u64,
}

impl Wire {
    fn new() -> Self {
        let now = Instant::now();
        Wire {
            client: Connection::new(ConnectionConfig::default(), now),
            peer: ScriptedPeer::default(),
            now,
            inbox: VecDeque::new(),
            up_bytes: 0,
            up_frames: 0,
            down_bytes: 0,
            down_frames: 0,
        }
    }

    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(chunk) = self.client.poll_transmit(self.now) {
                moved = true;
                self.up_bytes += chunk.len() as u64;
                let frames = self.peer.receive(&chunk);
                self.up_frames += frames.len() as u64;
                self.inbox.extend(frames);
            }
            let out = self.peer.take_output();
            if !out.is_empty() {
                moved = true;
                self.down_bytes += out.len() as u64;
                let mut copy = BytesMut::from(&out[..]);
                let mut decoder = FrameDecoder::new(0);
                while decoder
                    .decode(&mut copy)
                    .expect("peer output decodes")
                    .is_some()
                {
                    self.down_frames += 1;
                }
                self.client.handle_input(&out, self.now);
            }
            if !moved {
                break;
            }
        }
    }

    fn send(&mut self, ch: u16, m: impl Into<Method>) {
        self.peer.send(&Frame::Method(ch, m.into()));
        self.pump();
    }

    fn send_content(&mut self, ch: u16, m: impl Into<Method>, body: &[u8]) {
        self.peer
            .send_content(ch, m, &BasicProperties::default(), body);
        self.pump();
    }

    fn drain(&mut self) {
        self.pump();
        while self.client.poll_event().is_some() {}
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.client.handle_timeout(self.now);
        self.drain();
    }

    fn metrics(&self) -> Metrics {
        self.client.metrics(self.now)
    }

    fn publish(&mut self, ch: ChannelId, body: &'static [u8], mandatory: bool) {
        let options = BasicPublishOptions {
            mandatory,
            ..Default::default()
        };
        let props = BasicProperties::default();
        self.client
            .basic_publish(ch, "", "q", options, &props, &Bytes::from_static(body))
            .expect("publish");
        self.drain();
    }
}

fn s(text: &str) -> ShortString {
    ShortString::try_from(text).unwrap()
}

#[test]
fn every_counter_after_a_known_conversation() {
    let mut w = Wire::new();
    assert_eq!(w.metrics(), Metrics::default());

    // Handshake, heartbeat 60 s.
    w.send(0, rabbitmq_start());
    let tune = ConnectionTune {
        channel_max: 2047,
        frame_max: 131_072,
        heartbeat: 60,
    };
    w.send(0, tune);
    w.send(0, ConnectionOpenOk::default());
    w.drain();

    let (ch, _) = w.client.open_channel().unwrap();
    w.drain();
    w.send(ch.0, ChannelOpenOk::default());
    w.client
        .confirm_select(ch, ConfirmSelectOptions::default())
        .unwrap();
    w.drain();
    w.send(ch.0, ConfirmSelectOk {});
    w.drain();

    // Five publishes: 1-2 acked together, 3 (mandatory) returned then acked, 4 nacked, 5
    // never confirmed (lost when the connection dies).
    w.publish(ch, b"one", false);
    w.publish(ch, b"two", false);
    w.publish(ch, b"three", true);
    w.publish(ch, b"four", false);
    w.publish(ch, b"five", false);
    w.send(
        ch.0,
        BasicAck {
            delivery_tag: 2,
            multiple: true,
        },
    );
    let ret = BasicReturn {
        reply_code: 312,
        reply_text: s("NO_ROUTE"),
        exchange: ShortString::empty(),
        routing_key: s("q"),
    };
    w.send_content(ch.0, ret, b"three");
    w.send(
        ch.0,
        BasicAck {
            delivery_tag: 3,
            multiple: false,
        },
    );
    w.send(
        ch.0,
        BasicNack {
            delivery_tag: 4,
            multiple: false,
            requeue: false,
        },
    );

    // A consumer with three deliveries: one acked, one nacked, one rejected; then a get.
    w.client
        .basic_consume(ch, "q", "c1", BasicConsumeOptions::default())
        .unwrap();
    w.drain();
    w.send(
        ch.0,
        BasicConsumeOk {
            consumer_tag: s("c1"),
        },
    );
    w.drain();
    for tag in 1..=3 {
        let deliver = BasicDeliver {
            consumer_tag: s("c1"),
            delivery_tag: tag,
            redelivered: false,
            exchange: ShortString::empty(),
            routing_key: s("q"),
        };
        w.send_content(ch.0, deliver, b"work");
    }
    w.drain();
    w.client.basic_ack(ch, DeliveryTag(1), false).unwrap();
    w.client
        .basic_nack(ch, DeliveryTag(2), false, true)
        .unwrap();
    w.client.basic_reject(ch, DeliveryTag(3), false).unwrap();
    w.client
        .basic_get(ch, "q", BasicGetOptions::default())
        .unwrap();
    w.drain();
    let get_ok = BasicGetOk {
        delivery_tag: 4,
        redelivered: false,
        exchange: ShortString::empty(),
        routing_key: s("q"),
        message_count: 0,
    };
    w.send_content(ch.0, get_ok, b"fetched");
    w.drain();

    // A second channel.
    let (ch2, _) = w.client.open_channel().unwrap();
    w.drain();
    w.send(ch2.0, ChannelOpenOk::default());
    w.drain();

    // Blocked for 5 s, unblocked; blocked again and read 2 s into it.
    w.send(
        0,
        ConnectionBlocked {
            reason: s("low on memory"),
        },
    );
    w.now += Duration::from_secs(5);
    w.send(0, ConnectionUnblocked {});
    w.send(
        0,
        ConnectionBlocked {
            reason: s("low on disk"),
        },
    );
    w.drain();
    let at_block = w.now;
    let during = w.client.metrics(at_block + Duration::from_secs(2));
    assert_eq!(during.blocked, Duration::from_secs(7));
    w.send(0, ConnectionUnblocked {});
    w.drain();

    let m = w.metrics();
    // Every field set (the struct is non-exhaustive, so it is built from a copy).
    let mut expected = m;
    expected.frames_in = w.down_frames;
    expected.frames_out = w.up_frames;
    expected.bytes_in = w.down_bytes;
    expected.bytes_out = w.up_bytes;
    expected.publishes = 5;
    expected.confirms_acked = 3;
    expected.confirms_nacked = 1;
    expected.confirms_lost = 0;
    expected.returns = 1;
    expected.deliveries = 4;
    expected.acks_sent = 1;
    expected.nacks_sent = 1;
    expected.rejects_sent = 1;
    expected.consumers = 1;
    expected.channels_open = 2;
    expected.blocked = Duration::from_secs(5);
    expected.heartbeats_missed = 0;
    expected.recoveries = 0;
    assert_eq!(m, expected);
    // The wire counts themselves, from the conversation above: 3 handshake + 2 open-ok +
    // select-ok + 3 acks/nack + 3 return frames + consume-ok + 9 delivery frames + 3 get-ok
    // frames + 4 blocked/unblocked = 29 frames in; 3 handshake + 2 channel.open + select +
    // 15 publish frames + consume + ack, nack, reject + get = 26 frames out, after the
    // 8-byte protocol header.
    assert_eq!((m.frames_in, m.frames_out), (29, 26));
    assert!(m.bytes_out > 8 && m.bytes_in > 0);

    // Silence: the client sends heartbeats, then declares the peer dead after 120 s; the
    // unconfirmed publish is lost, and nothing stays open.
    w.advance(Duration::from_secs(30));
    w.advance(Duration::from_secs(30));
    w.advance(Duration::from_secs(30));
    w.advance(Duration::from_secs(31));
    assert!(w.client.is_closed());
    let end = w.metrics();
    assert_eq!(end.heartbeats_missed, 1);
    assert_eq!(end.confirms_lost, 1);
    assert_eq!((end.channels_open, end.consumers), (0, 0));
    assert_eq!(end.frames_out, w.up_frames);
    assert!(end.frames_out > m.frames_out, "heartbeats were sent");
    assert_eq!(end.bytes_out, w.up_bytes);
    assert_eq!(end.blocked, Duration::from_secs(5));
}
