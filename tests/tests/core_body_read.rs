//! Large bodies read straight into their buffer (`take_body_buffer` / `process_body`): the
//! same byte stream, cut anywhere and fed that way, gives the same events and output as fed
//! whole through `handle_input`; the payload really lands in the lent buffer; and the errors
//! (a body too large, a bad frame-end octet, the stream ending inside a frame) are the same.

use amqp_conformance::peer::{ScriptedPeer, cut_phases, rabbitmq_start};
use amqp_proto::{
    BasicConsumeOk, BasicConsumeOptions, BasicDeliver, BasicGetOk, BasicGetOptions,
    BasicProperties, ChannelOpenOk, Connection, ConnectionConfig, ConnectionOpenOk, ConnectionTune,
    ConsumerEnd, ContentHeader, Error, Event, Frame, Reply, ShortString,
};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use std::time::Instant;

const FRAME_MAX: u32 = 16_384;
/// Payload of a full body frame.
const PAYLOAD: usize = FRAME_MAX as usize - 8;

fn s(text: &str) -> ShortString {
    ShortString::try_from(text).unwrap()
}

fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 7) as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn deliver(tag: u64, consumer: &str) -> BasicDeliver {
    BasicDeliver {
        consumer_tag: s(consumer),
        delivery_tag: tag,
        redelivered: false,
        exchange: s("ex"),
        routing_key: s("rk"),
    }
}

fn header(size: usize) -> Frame {
    Frame::Header(
        1,
        ContentHeader {
            class_id: 60,
            body_size: size as u64,
            properties: BasicProperties::default(),
        },
    )
}

/// The handshake and two channels opening, then `content` (the broker's bytes after the
/// client consumed `c1` on channel 1 and `c2` on channel 2).
fn script(content: impl FnOnce(&mut ScriptedPeer)) -> Vec<Vec<u8>> {
    let mut peer = ScriptedPeer::default();
    peer.frame_max = FRAME_MAX;
    let mut phases = Vec::new();
    peer.send(&Frame::Method(0, rabbitmq_start().into()));
    let tune = ConnectionTune {
        channel_max: 2047,
        frame_max: FRAME_MAX,
        heartbeat: 60,
    };
    peer.send(&Frame::Method(0, tune.into()));
    peer.send(&Frame::Method(0, ConnectionOpenOk::default().into()));
    phases.push(peer.take_output());
    peer.send(&Frame::Method(1, ChannelOpenOk::default().into()));
    peer.send(&Frame::Method(2, ChannelOpenOk::default().into()));
    phases.push(peer.take_output());
    for (ch, tag) in [(1, "c1"), (2, "c2")] {
        peer.send(&Frame::Method(
            ch,
            BasicConsumeOk {
                consumer_tag: s(tag),
            }
            .into(),
        ));
    }
    content(&mut peer);
    phases.push(peer.take_output());
    phases
}

/// Bodies of one, two and many frames, a two-frame get, frames of channel 2 and heartbeats
/// between the body frames of channel 1, and a body whose last frame is a few bytes.
fn conversation(peer: &mut ScriptedPeer) {
    let props = BasicProperties::default().with_content_type("application/octet-stream");
    peer.send_content(1, deliver(1, "c1"), &props, &body(10_000, 1));
    peer.send_content(1, deliver(2, "c1"), &props, &body(PAYLOAD + 5000, 2));
    peer.send_content(1, deliver(3, "c1"), &props, &body(7 * PAYLOAD + 123, 3));
    peer.send_content(1, deliver(4, "c1"), &props, &body(2 * PAYLOAD + 8, 4));
    // By hand: channel 2's delivery and a heartbeat between channel 1's body frames.
    peer.send(&Frame::Method(1, deliver(5, "c1").into()));
    peer.send(&header(3 * PAYLOAD));
    peer.send(&Frame::Body(1, Bytes::from(body(PAYLOAD, 5))));
    peer.send_content(2, deliver(1, "c2"), &props, &body(PAYLOAD + 9000, 6));
    peer.send(&Frame::Body(1, Bytes::from(body(PAYLOAD, 7))));
    peer.send(&Frame::Heartbeat);
    peer.send(&Frame::Body(1, Bytes::from(body(PAYLOAD, 8))));
    let get = BasicGetOk {
        delivery_tag: 6,
        redelivered: false,
        exchange: s(""),
        routing_key: s("q"),
        message_count: 0,
    };
    peer.send_content(1, get, &props, &body(PAYLOAD + 4096, 9));
    peer.send_content(2, deliver(2, "c2"), &props, b"small");
}

/// How the bytes of one read are fed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Feed {
    /// `handle_input`, the reference.
    Copy,
    /// `take_body_buffer` / `process_body` where the core says, honouring
    /// `input_read_limit`.
    Direct,
    /// As `Direct`, but reads into a lent body take the whole read, past its spare capacity
    /// (a transport that ignores the room it was given).
    Overrun,
}

struct Run {
    client: Connection,
    now: Instant,
    events: Vec<Event>,
    output: Vec<u8>,
    feed: Feed,
    input: BytesMut,
    /// The address ranges of the buffers lent for reads, and bytes read into them.
    lent: Vec<(usize, usize)>,
    read_into_bodies: usize,
}

impl Run {
    fn new(config: ConnectionConfig, feed: Feed, now: Instant) -> Self {
        let mut r = Run {
            client: Connection::new(config, now),
            now,
            events: Vec::new(),
            output: Vec::new(),
            feed,
            input: BytesMut::new(),
            lent: Vec::new(),
            read_into_bodies: 0,
        };
        r.react();
        r
    }

    /// One read of `bytes`, where the core wants them (several reads when it says so).
    fn feed(&mut self, mut bytes: &[u8]) {
        if self.feed == Feed::Copy {
            self.client.handle_input(bytes, self.now);
            return self.react();
        }
        while !bytes.is_empty() {
            if let Some(mut lent) = self.client.take_body_buffer(&mut self.input) {
                let room = lent.capacity() - lent.len();
                assert!(room > 0, "a body buffer lent without room");
                let n = match self.feed {
                    Feed::Overrun => bytes.len(),
                    _ => room.min(bytes.len()),
                };
                let start = lent.as_ptr() as usize;
                self.lent.push((start, start + lent.capacity()));
                lent.extend_from_slice(&bytes[..n]);
                self.read_into_bodies += n.min(room);
                bytes = &bytes[n..];
                self.client.process_body(lent, &mut self.input, self.now);
            } else {
                let limit = self.client.input_read_limit().unwrap_or(usize::MAX);
                let n = limit.min(bytes.len());
                self.input.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                self.client.process_input(&mut self.input, self.now);
            }
            self.react();
        }
    }

    fn react(&mut self) {
        while let Some(event) = self.client.poll_event() {
            match &event {
                Event::Connected { .. } => {
                    self.client.open_channel().unwrap();
                    self.client.open_channel().unwrap();
                }
                Event::Completed {
                    result: Ok(Reply::ChannelOpened(ch)),
                    ..
                } => {
                    let tag = format!("c{}", ch.0);
                    self.client
                        .basic_consume(*ch, "q", &tag, BasicConsumeOptions::default())
                        .unwrap();
                    if ch.0 == 1 {
                        self.client
                            .basic_get(*ch, "q", BasicGetOptions::default())
                            .unwrap();
                    }
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

fn config() -> ConnectionConfig {
    ConnectionConfig {
        frame_max: FRAME_MAX,
        ..Default::default()
    }
}

/// Feeds the phases cut at `cuts` (positions in the whole stream; phase ends always cut).
fn run(phases: &[Vec<u8>], cuts: &[usize], feed: Feed, config: ConnectionConfig) -> Run {
    let mut r = Run::new(config, feed, reference_now());
    for piece in cut_phases(phases, cuts) {
        r.feed(piece);
    }
    r
}

fn reference_now() -> Instant {
    static NOW: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *NOW.get_or_init(Instant::now)
}

fn assert_same(r: &Run, reference: &Run, what: &str) {
    assert_eq!(
        r.events.len(),
        reference.events.len(),
        "{what}: event count"
    );
    for (i, (a, b)) in r.events.iter().zip(&reference.events).enumerate() {
        assert!(a == b, "{what}: event {i} differs:\n{a:?}\nvs\n{b:?}");
    }
    assert!(r.output == reference.output, "{what}: output differs");
    let (m, want) = (r.client.metrics(r.now), reference.client.metrics(r.now));
    assert_eq!(
        (m.bytes_in, m.frames_in),
        (want.bytes_in, want.frames_in),
        "{what}"
    );
}

/// Every frame boundary of the content phase, with the bytes either side of it: cuts in the
/// frame header, right after it, in the payload's first and last bytes, before and after
/// the frame-end octet.
fn boundary_cuts(phases: &[Vec<u8>]) -> Vec<usize> {
    let offset: usize = phases[..2].iter().map(Vec::len).sum();
    let mut peer = ScriptedPeer::default();
    peer.frame_max = 0;
    let content = &phases[2];
    let mut at = 0;
    let mut cuts = Vec::new();
    while at < content.len() {
        let size = u32::from_be_bytes(content[at + 3..at + 7].try_into().unwrap()) as usize;
        let end = at + size + 8;
        for c in [at + 1, at + 6, at + 7, at + 8, end - 2, end - 1, end] {
            cuts.push(offset + c);
        }
        at = end;
    }
    cuts
}

#[test]
fn the_reference_run_is_the_intended_conversation() {
    let r = run(&script(conversation), &[], Feed::Copy, config());
    let bodies: Vec<(u64, usize)> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Delivery(d) => Some((d.delivery_tag.0, d.body.len())),
            Event::Completed {
                result: Ok(Reply::Get(Some(m))),
                ..
            } => Some((m.delivery.delivery_tag.0, m.delivery.body.len())),
            _ => None,
        })
        .collect();
    let p = PAYLOAD;
    assert_eq!(
        bodies,
        [
            (1, 10_000),
            (2, p + 5000),
            (3, 7 * p + 123),
            (4, 2 * p + 8),
            (1, p + 9000),
            (5, 3 * p),
            (6, p + 4096),
            (2, 5)
        ]
    );
    let five = r.events.iter().find_map(|e| match e {
        Event::Delivery(d) if d.delivery_tag.0 == 5 => Some(d.body.clone()),
        _ => None,
    });
    assert_eq!(five.unwrap(), [body(p, 5), body(p, 7), body(p, 8)].concat());
    assert!(!r.client.is_closed());
}

#[test]
fn socket_sized_reads_land_in_the_body_and_give_the_same_events() {
    let phases = script(conversation);
    let reference = run(&phases, &[], Feed::Copy, config());
    let r = run(&phases, &reads_of(&phases, 65_536), Feed::Direct, config());
    assert_same(&r, &reference, "reads of 64 KiB");
    // Most of the large payloads were read into lent buffers, and the bodies delivered are
    // those buffers, not copies of them.
    // Delivery 3's six frames after its first, at least, go there whole.
    assert!(r.read_into_bodies > 6 * PAYLOAD, "{}", r.read_into_bodies);
    let three = r.events.iter().find_map(|e| match e {
        Event::Delivery(d) if d.delivery_tag.0 == 3 => Some(d.body.clone()),
        _ => None,
    });
    let at = three.unwrap().as_ptr() as usize;
    assert!(r.lent.iter().any(|&(start, end)| start <= at && at < end));
}

#[test]
fn reads_cut_at_every_frame_boundary() {
    let phases = script(conversation);
    let reference = run(&phases, &[], Feed::Copy, config());
    let cuts = boundary_cuts(&phases);
    for feed in [Feed::Direct, Feed::Overrun] {
        let r = run(&phases, &cuts, feed, config());
        assert_same(&r, &reference, &format!("{feed:?} cut at boundaries"));
        assert!(r.read_into_bodies > 0);
    }
}

#[test]
fn one_byte_at_a_time_and_fixed_read_sizes() {
    let phases = script(conversation);
    let reference = run(&phases, &[], Feed::Copy, config());
    let total: usize = phases.iter().map(Vec::len).sum();
    for size in [1, 7, 8, 9, 4095, 4097, 16_383, 16_384, 16_385, 65_536] {
        let cuts: Vec<usize> = (0..total).step_by(size).collect();
        for feed in [Feed::Direct, Feed::Overrun] {
            let r = run(&phases, &cuts, feed, config());
            assert_same(&r, &reference, &format!("{feed:?} reads of {size}"));
        }
    }
}

/// Runs `content` through both paths, whole and one byte at a time, and returns the reference
/// events, which must end with the connection closed.
fn same_failure(content: impl Fn(&mut ScriptedPeer), config: ConnectionConfig) -> Vec<Event> {
    let phases = script(content);
    let reference = run(&phases, &[], Feed::Copy, config.clone());
    let total: usize = phases.iter().map(Vec::len).sum();
    let every: Vec<usize> = (0..total).collect();
    let socket = reads_of(&phases, 65_536);
    for (cuts, what) in [(&socket[..], "reads of 64 KiB"), (&every[..], "bytewise")] {
        let r = run(&phases, cuts, Feed::Direct, config.clone());
        assert_same(&r, &reference, what);
    }
    reference.events
}

/// Cuts every `size` bytes.
fn reads_of(phases: &[Vec<u8>], size: usize) -> Vec<usize> {
    let total: usize = phases.iter().map(Vec::len).sum();
    (0..total).step_by(size).collect()
}

/// The protocol error the connection failed with (the consumers end with it).
fn closed_with(events: &[Event]) -> (u16, String) {
    let error = events.iter().find_map(|e| match e {
        Event::ConsumerEnded {
            reason: ConsumerEnd::Closed(error),
            ..
        } => Some(error),
        _ => None,
    });
    match error {
        Some(Error::Protocol { code, text }) => (code.0, text.clone()),
        other => panic!("not failed with a protocol error: {other:?}"),
    }
}

#[test]
fn a_body_larger_than_max_body_size_is_refused_as_before() {
    let config = ConnectionConfig {
        max_body_size: 3 * PAYLOAD as u64,
        ..config()
    };
    let events = same_failure(
        |peer| {
            peer.send_content(
                1,
                deliver(1, "c1"),
                &Default::default(),
                &body(3 * PAYLOAD, 1),
            );
            peer.send_content(
                1,
                deliver(2, "c1"),
                &Default::default(),
                &body(4 * PAYLOAD, 2),
            );
        },
        config,
    );
    let (code, text) = closed_with(&events);
    assert_eq!(code, 501);
    assert!(text.contains("exceeds max_body_size"), "{text}");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Delivery(_)))
            .count(),
        1
    );
}

#[test]
fn a_bad_frame_end_after_a_payload_read_straight_in_is_detected_as_before() {
    let events = same_failure(
        |peer| {
            peer.send(&Frame::Method(1, deliver(1, "c1").into()));
            peer.send(&header(2 * PAYLOAD));
            let mut frame = BytesMut::new();
            Frame::Body(1, Bytes::from(body(PAYLOAD, 1)))
                .encode(&mut frame)
                .unwrap();
            let last = frame.len() - 1;
            frame[last] = 0x00;
            peer.send_raw(&frame);
            peer.send(&Frame::Body(1, Bytes::from(body(PAYLOAD, 2))));
        },
        config(),
    );
    let (code, text) = closed_with(&events);
    assert_eq!(code, 501);
    assert!(text.contains("frame end"), "{text}");
}

#[test]
fn a_body_frame_longer_than_declared_is_refused_as_before() {
    let events = same_failure(
        |peer| {
            peer.send(&Frame::Method(1, deliver(1, "c1").into()));
            peer.send(&header(PAYLOAD + 100));
            peer.send(&Frame::Body(1, Bytes::from(body(PAYLOAD, 1))));
            peer.send(&Frame::Body(1, Bytes::from(body(PAYLOAD, 2))));
        },
        config(),
    );
    let (code, text) = closed_with(&events);
    assert_eq!(code, 501);
    assert!(text.contains("longer than"), "{text}");
}

#[test]
fn the_stream_ending_inside_a_payload_read_straight_in_is_mid_frame() {
    let phases = script(|peer| {
        peer.send(&Frame::Method(1, deliver(1, "c1").into()));
        peer.send(&header(2 * PAYLOAD));
        peer.send(&Frame::Body(1, Bytes::from(body(PAYLOAD, 1))));
    });
    let mut cut = phases.clone();
    let content = cut.last_mut().unwrap();
    content.truncate(content.len() - 100);
    let mut r = run(&cut, &reads_of(&cut, 4096), Feed::Direct, config());
    assert!(r.read_into_bodies > 0);
    r.client.handle_eof(r.now);
    r.react();
    assert!(matches!(
        r.events.last(),
        Some(Event::Closed(Some(Error::UnexpectedEof {
            mid_frame: true
        })))
    ));
}

#[test]
fn a_body_past_the_join_reservation_grows_and_arrives_whole() {
    let big = (1 << 20) + 3 * PAYLOAD + 17;
    let phases = script(|peer| {
        peer.send_content(1, deliver(1, "c1"), &Default::default(), &body(big, 1));
    });
    let reference = run(&phases, &[], Feed::Copy, config());
    let total: usize = phases.iter().map(Vec::len).sum();
    let cuts: Vec<usize> = (0..total).step_by(5000).collect();
    let r = run(&phases, &cuts, Feed::Direct, config());
    assert_same(&r, &reference, "large body");
    assert!(matches!(&r.events[..], [.., Event::Delivery(d)] if d.body.len() == big));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_reads_give_the_same_events(
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..300),
        overrun in any::<bool>(),
    ) {
        let phases = script(conversation);
        let reference = run(&phases, &[], Feed::Copy, config());
        let total: usize = phases.iter().map(Vec::len).sum();
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(total)).collect();
        let feed = if overrun { Feed::Overrun } else { Feed::Direct };
        let r = run(&phases, &cuts, feed, config());
        prop_assert!(r.events == reference.events);
        prop_assert!(r.output == reference.output);
    }
}
