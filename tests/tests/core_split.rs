//! One scripted inbound byte stream, fed to the client split at arbitrary points (down to one
//! byte at a time, through either input API), produces the same events and the same output.
//!
//! The stream has phases: the client must act between them (open a channel once connected,
//! then consume, select confirms and publish once the channel is open), as it would against a
//! real broker, which never answers a request before it was made. Cuts fall anywhere inside a
//! phase; phase boundaries are always cuts.

use amqp_conformance::peer::{ScriptedPeer, cut_phases, rabbitmq_start};
use amqp_proto::{
    BasicAck, BasicConsumeOk, BasicConsumeOptions, BasicDeliver, BasicGetOk, BasicGetOptions,
    BasicNack, BasicProperties, BasicPublishOptions, BasicReturn, ChannelFlow, ChannelOpenOk,
    ConfirmSelectOk, ConfirmSelectOptions, Confirmation, Connection, ConnectionBlocked,
    ConnectionClose, ConnectionConfig, ConnectionOpenOk, ConnectionTune, ConnectionUnblocked,
    ContentHeader, Error, Event, FieldTable, Frame, Reply, ShortString,
};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use std::time::Instant;

const FRAME_MAX: u32 = 4096;

fn s(text: &str) -> ShortString {
    ShortString::try_from(text).unwrap()
}

fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn deliver(tag: u64) -> BasicDeliver {
    BasicDeliver {
        consumer_tag: s("c1"),
        delivery_tag: tag,
        redelivered: tag % 2 == 0,
        exchange: s("ex"),
        routing_key: s("rk"),
    }
}

/// The broker's bytes, phase by phase.
fn script() -> Vec<Vec<u8>> {
    let mut peer = ScriptedPeer::default();
    peer.frame_max = FRAME_MAX;
    let mut phases = Vec::new();

    // Phase 0: the handshake.
    peer.send(&Frame::Method(0, rabbitmq_start().into()));
    peer.send(&Frame::Method(
        0,
        ConnectionTune {
            channel_max: 2047,
            frame_max: FRAME_MAX,
            heartbeat: 60,
        }
        .into(),
    ));
    peer.send(&Frame::Method(0, ConnectionOpenOk::default().into()));
    phases.push(peer.take_output());

    // Phase 1: the channel opens.
    peer.send(&Frame::Heartbeat);
    peer.send(&Frame::Method(1, ChannelOpenOk::default().into()));
    phases.push(peer.take_output());

    // Phase 2: everything else.
    peer.send(&Frame::Method(1, ConfirmSelectOk {}.into()));
    peer.send(&Frame::Method(
        1,
        BasicConsumeOk {
            consumer_tag: s("c1"),
        }
        .into(),
    ));
    let props = BasicProperties::default()
        .with_content_type("application/octet-stream")
        .with_headers(FieldTable::new().with("n", 1i32));
    peer.send_content(1, deliver(1), &props, b"");
    peer.send_content(1, deliver(2), &props, &body(100, 2));
    peer.send_content(1, deliver(3), &BasicProperties::default(), &body(10_000, 3));
    // Frames interleaved by hand: a heartbeat in the middle of a multi-frame body.
    peer.send(&Frame::Method(1, deliver(4).into()));
    peer.send(&Frame::Header(
        1,
        ContentHeader {
            class_id: 60,
            body_size: 5000,
            properties: BasicProperties::default(),
        },
    ));
    peer.send(&Frame::Body(1, Bytes::from(body(4000, 4))));
    peer.send(&Frame::Heartbeat);
    peer.send(&Frame::Body(1, Bytes::from(body(1000, 5))));
    // Confirms: a return attached to publish 2, single ack, multiple ack, nack.
    let ret = BasicReturn {
        reply_code: 312,
        reply_text: s("NO_ROUTE"),
        exchange: s(""),
        routing_key: s("nowhere"),
    };
    peer.send_content(1, ret, &BasicProperties::default(), &body(6000, 6));
    peer.send(&Frame::Method(
        1,
        BasicAck {
            delivery_tag: 2,
            multiple: false,
        }
        .into(),
    ));
    peer.send(&Frame::Method(
        1,
        BasicAck {
            delivery_tag: 3,
            multiple: true,
        }
        .into(),
    ));
    peer.send(&Frame::Method(
        1,
        BasicNack {
            delivery_tag: 4,
            multiple: false,
            requeue: false,
        }
        .into(),
    ));
    peer.send(&Frame::Method(
        1,
        BasicAck {
            delivery_tag: 99,
            multiple: false,
        }
        .into(),
    ));
    // The get the client asked for, with a two-frame body.
    peer.send_content(
        1,
        BasicGetOk {
            delivery_tag: 5,
            redelivered: false,
            exchange: s(""),
            routing_key: s("q"),
            message_count: 0,
        },
        &BasicProperties::default(),
        &body(4500, 7),
    );
    peer.send(&Frame::Method(1, ChannelFlow { active: false }.into()));
    peer.send(&Frame::Method(
        0,
        ConnectionBlocked {
            reason: s("memory"),
        }
        .into(),
    ));
    peer.send(&Frame::Method(0, ConnectionUnblocked {}.into()));
    peer.send_content(1, deliver(5), &props, &body(8177, 8));
    // The close: publish 5 is still unconfirmed and gets Lost.
    peer.send(&Frame::Method(
        0,
        ConnectionClose {
            reply_code: 320,
            reply_text: s("CONNECTION_FORCED"),
            class_id: 0,
            method_id: 0,
        }
        .into(),
    ));
    phases.push(peer.take_output());
    phases
}

/// A client and everything it did: its events and the bytes it wrote.
struct Run {
    client: Connection,
    now: Instant,
    events: Vec<Event>,
    output: Vec<u8>,
    use_read_buf: bool,
    read_buf: BytesMut,
}

impl Run {
    fn new(now: Instant, use_read_buf: bool) -> Self {
        let config = ConnectionConfig {
            frame_max: FRAME_MAX,
            ..Default::default()
        };
        Run {
            client: Connection::new(config, now),
            now,
            events: Vec::new(),
            output: Vec::new(),
            use_read_buf,
            read_buf: BytesMut::new(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if self.use_read_buf {
            self.read_buf.extend_from_slice(bytes);
            self.client.process_input(&mut self.read_buf, self.now);
        } else {
            self.client.handle_input(bytes, self.now);
        }
        self.react();
    }

    /// Takes events and output; issues the commands the script expects at each step.
    fn react(&mut self) {
        while let Some(event) = self.client.poll_event() {
            match &event {
                Event::Connected { .. } => {
                    self.client.open_channel().unwrap();
                }
                Event::Completed {
                    result: Ok(Reply::ChannelOpened(ch)),
                    ..
                } => {
                    let ch = *ch;
                    self.client
                        .confirm_select(ch, ConfirmSelectOptions::default())
                        .unwrap();
                    self.client
                        .basic_consume(ch, "q", "c1", BasicConsumeOptions::default())
                        .unwrap();
                    for (i, mandatory) in [false, true, false, false, false].into_iter().enumerate()
                    {
                        let options = BasicPublishOptions {
                            mandatory,
                            ..Default::default()
                        };
                        let payload = Bytes::from(body(1000 * i, i as u8));
                        self.client
                            .basic_publish(
                                ch,
                                "",
                                "q",
                                options,
                                &BasicProperties::default(),
                                &payload,
                            )
                            .unwrap();
                    }
                    self.client
                        .basic_get(ch, "q", BasicGetOptions::default())
                        .unwrap();
                }
                _ => {}
            }
            self.events.push(event);
        }
        while let Some(chunk) = self.client.poll_transmit(self.now) {
            self.output.extend_from_slice(&chunk);
        }
    }
}

/// Feeds the script cut at `cuts` (positions in the whole stream, any order, duplicates and
/// out-of-range values allowed).
fn run(phases: &[Vec<u8>], cuts: &[usize], use_read_buf: bool, now: Instant) -> Run {
    let mut r = Run::new(now, use_read_buf);
    r.react();
    for piece in cut_phases(phases, cuts) {
        r.feed(piece);
    }
    r
}

fn reference() -> (Vec<Vec<u8>>, Run) {
    let phases = script();
    let r = run(&phases, &[], false, Instant::now());
    (phases, r)
}

/// The whole-phase run is what the script means: checks it once, in detail, so that the
/// comparisons below compare something worth comparing.
#[test]
fn reference_run_is_the_intended_conversation() {
    let (_, r) = reference();
    let deliveries: Vec<(u64, usize)> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Delivery(d) => Some((d.delivery_tag.0, d.body.len())),
            _ => None,
        })
        .collect();
    assert_eq!(
        deliveries,
        [(1, 0), (2, 100), (3, 10_000), (4, 5000), (5, 8177)]
    );
    let four = r.events.iter().find_map(|e| match e {
        Event::Delivery(d) if d.delivery_tag.0 == 4 => Some(d.body.clone()),
        _ => None,
    });
    assert_eq!(four.unwrap(), [body(4000, 4), body(1000, 5)].concat());
    let confirms: Vec<(u64, &str)> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Confirmed { tag, outcome, .. } => Some((
                tag.0,
                match outcome {
                    Confirmation::Ack(None) => "ack",
                    Confirmation::Ack(Some(_)) => "ack+return",
                    Confirmation::Nack(_) => "nack",
                    Confirmation::Lost(_) => "lost",
                },
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        confirms,
        [
            (2, "ack+return"),
            (1, "ack"),
            (3, "ack"),
            (4, "nack"),
            (5, "lost")
        ]
    );
    assert!(r.events.iter().any(|e| matches!(e, Event::Warning(_))));
    assert!(r.events.iter().any(|e| matches!(
        e,
        Event::Completed { result: Ok(Reply::Get(Some(m))), .. } if m.delivery.body.len() == 4500
    )));
    assert!(
        r.events
            .iter()
            .any(|e| matches!(e, Event::ChannelFlow { active: false, .. }))
    );
    assert!(r.events.contains(&Event::Unblocked));
    assert!(matches!(
        r.events.last(),
        Some(Event::Closed(Some(Error::ConnectionClosed(reason)))) if reason.code.0 == 320
    ));
    assert_eq!(
        r.events
            .iter()
            .filter(|e| matches!(e, Event::Closed(_)))
            .count(),
        1
    );
    assert!(r.client.is_closed());
    // The client wrote its whole side: header, handshake, commands, publishes, flow-ok, close-ok.
    let mut peer = ScriptedPeer::default();
    let frames = peer.receive(&r.output);
    assert!(matches!(
        frames.last(),
        Some(Frame::Method(0, amqp_proto::Method::ConnectionCloseOk(_)))
    ));
}

#[test]
fn one_byte_at_a_time_through_both_apis() {
    let (phases, reference) = reference();
    let total: usize = phases.iter().map(Vec::len).sum();
    let every: Vec<usize> = (0..total).collect();
    for use_read_buf in [false, true] {
        let r = run(&phases, &every, use_read_buf, reference.now);
        assert_eq!(r.events, reference.events, "read_buf: {use_read_buf}");
        assert_eq!(r.output, reference.output, "read_buf: {use_read_buf}");
    }
}

#[test]
fn every_fixed_chunk_size_up_to_64() {
    let (phases, reference) = reference();
    let total: usize = phases.iter().map(Vec::len).sum();
    for size in 2..=64 {
        let cuts: Vec<usize> = (0..total).step_by(size).collect();
        let r = run(&phases, &cuts, size % 2 == 0, reference.now);
        assert_eq!(r.events, reference.events, "chunk size {size}");
        assert_eq!(r.output, reference.output, "chunk size {size}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_splits_produce_identical_events(
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..200),
        use_read_buf in any::<bool>(),
    ) {
        let (phases, reference) = reference();
        let total: usize = phases.iter().map(Vec::len).sum();
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(total)).collect();
        let r = run(&phases, &cuts, use_read_buf, reference.now);
        prop_assert_eq!(&r.events, &reference.events);
        prop_assert_eq!(&r.output, &reference.output);
    }
}
