//! Bad input from the peer after the handshake: undecodable bytes, oversized frames, unknown
//! or misplaced methods. Each closes the connection with the code the spec names and ends with
//! `Error::Protocol`, failing everything pending.

use amqp_conformance::peer::Pair;
use amqp_proto::{
    BasicProperties, ConnectionConfig, ConnectionOpen, ConnectionStart, ContentHeader, Error,
    Event, Frame, QueueDeclareOptions, ReplyCode,
};
use bytes::{BufMut, BytesMut};

/// A method frame with an arbitrary payload, for methods the codec cannot build.
fn raw_frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.put_u8(0xCE);
    out.to_vec()
}

#[test]
fn garbage_after_the_handshake_closes_with_501_at_once() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let id = pair
        .client
        .queue_declare(ch, "q", QueueDeclareOptions::default())
        .unwrap();
    pair.next_frame();
    pair.send_raw(b"\x42this is not AMQP at all");
    let close = pair.expect_connection_close();
    assert_eq!(close.reply_code, ReplyCode::FRAME_ERROR.0);
    // The stream is out of step: no close-ok is awaited.
    assert!(pair.client.is_closed());
    let (events, error) = pair.events_until_closed();
    let Some(
        error @ Error::Protocol {
            code: ReplyCode::FRAME_ERROR,
            ..
        },
    ) = error
    else {
        panic!("expected a 501 protocol error, got {error:?}");
    };
    assert_eq!(
        events,
        vec![Event::Completed {
            id,
            result: Err(error.clone())
        }]
    );
    assert_eq!(error.kind(), amqp_proto::ErrorKind::FrameError);
    // Anything after is ignored.
    pair.send_raw(b"more garbage");
    pair.expect_no_event();
    pair.expect_silence();
}

#[test]
fn bad_frame_end_is_501() {
    let mut pair = Pair::connected();
    let mut wire = BytesMut::new();
    Frame::Heartbeat.encode(&mut wire).unwrap();
    let last = wire.len() - 1;
    wire[last] = 0xCD;
    pair.send_raw(&wire);
    pair.expect_violation(ReplyCode::FRAME_ERROR);
}

#[test]
fn unknown_frame_type_is_501() {
    let mut pair = Pair::connected();
    pair.send_raw(&raw_frame(9, 0, b""));
    pair.expect_violation(ReplyCode::FRAME_ERROR);
}

#[test]
fn malformed_heartbeat_is_501() {
    let mut pair = Pair::connected();
    pair.send_raw(&raw_frame(8, 1, b""));
    pair.expect_violation(ReplyCode::FRAME_ERROR);
}

#[test]
fn frame_larger_than_frame_max_is_501_before_it_is_buffered() {
    let config = ConnectionConfig {
        frame_max: 4096,
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 2047, 4096, 60);
    let ch = pair.open_channel();
    pair.start_consumer(ch, "q", "c");
    // Exactly frame_max (7 + 4088 + 1) is accepted.
    pair.send_frame(Frame::Method(
        1,
        amqp_proto::BasicDeliver {
            consumer_tag: Pair::s("c"),
            ..Default::default()
        }
        .into(),
    ));
    pair.send_frame(Frame::Header(
        1,
        ContentHeader {
            class_id: 60,
            body_size: 4088,
            properties: BasicProperties::default(),
        },
    ));
    pair.send_frame(Frame::Body(1, vec![0u8; 4088].into()));
    assert!(matches!(
        pair.drain_events().last(),
        Some(Event::Delivery(_))
    ));
    // One byte more is not, and the header alone is enough to tell.
    let mut head = BytesMut::new();
    head.put_u8(3);
    head.put_u16(1);
    head.put_u32(4089);
    pair.send_raw(&head);
    let before = pair.expect_violation(ReplyCode::FRAME_ERROR);
    assert!(before.iter().all(|e| !matches!(e, Event::Delivery(_))));
}

#[test]
fn frames_above_the_pre_tune_limit_are_refused_during_the_handshake() {
    let mut pair = Pair::new(ConnectionConfig::default());
    let mut head = BytesMut::new();
    head.put_u8(1);
    head.put_u16(0);
    head.put_u32(1 << 20);
    pair.send_raw(&head);
    let close = pair.expect_connection_close();
    assert_eq!(close.reply_code, ReplyCode::FRAME_ERROR.0);
    assert!(matches!(
        pair.expect_closed(),
        Some(Error::Protocol {
            code: ReplyCode::FRAME_ERROR,
            ..
        })
    ));
}

#[test]
fn unknown_method_is_503() {
    let mut pair = Pair::connected();
    pair.open_channel();
    // basic (60), method 999.
    pair.send_raw(&raw_frame(1, 1, &[0, 60, 0x03, 0xE7]));
    pair.expect_violation(ReplyCode::COMMAND_INVALID);
}

#[test]
fn unknown_class_is_503() {
    let mut pair = Pair::connected();
    pair.send_raw(&raw_frame(1, 0, &[0x12, 0x34, 0, 10]));
    pair.expect_violation(ReplyCode::COMMAND_INVALID);
}

#[test]
fn truncated_method_is_501() {
    let mut pair = Pair::connected();
    pair.open_channel();
    // queue.declare-ok (50.11) cut short after one byte of its queue name.
    pair.send_raw(&raw_frame(1, 1, &[0, 50, 0, 11, 3]));
    pair.expect_violation(ReplyCode::FRAME_ERROR);
}

#[test]
fn bad_field_table_is_502() {
    let mut pair = Pair::connected();
    pair.open_channel();
    // A content header whose `headers` table holds a value with the unknown tag '?'.
    let mut payload = BytesMut::new();
    payload.put_u16(60);
    payload.put_u16(0);
    payload.put_u64(0);
    payload.put_u16(1 << 13); // headers present
    let table = [b"\x01k?".as_slice()].concat();
    payload.put_u32(table.len() as u32);
    payload.put_slice(&table);
    pair.send_frame(Frame::Method(1, amqp_proto::BasicDeliver::default().into()));
    pair.drain_events();
    pair.send_raw(&raw_frame(2, 1, &payload));
    pair.expect_violation(ReplyCode::SYNTAX_ERROR);
}

#[test]
fn connection_method_on_a_channel_is_503() {
    let mut pair = Pair::connected();
    pair.open_channel();
    pair.send_frame(Frame::Method(1, ConnectionStart::default().into()));
    pair.expect_violation(ReplyCode::COMMAND_INVALID);
}

#[test]
fn a_client_only_method_from_the_server_is_503() {
    let mut pair = Pair::connected();
    pair.send_frame(Frame::Method(0, ConnectionOpen::default().into()));
    pair.expect_violation(ReplyCode::COMMAND_INVALID);
}

#[test]
fn the_peer_refusing_our_protocol_version_is_reported() {
    let mut pair = Pair::new(ConnectionConfig::default());
    pair.send_raw(b"AMQP\x00\x00\x09\x00");
    let (_, error) = pair.events_until_closed();
    match error {
        Some(Error::Protocol { text, .. }) => assert!(text.contains("0-9-0"), "{text}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn a_violation_found_inside_a_channel_fails_that_channel_too() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    pair.start_consumer(ch, "q", "c1");
    let other = pair.open_channel();
    pair.start_consumer(other, "q", "c2");
    pair.send_frame(Frame::Header(
        ch.0,
        ContentHeader {
            class_id: 60,
            body_size: 1,
            properties: BasicProperties::default(),
        },
    ));
    let before = pair.expect_violation(ReplyCode::UNEXPECTED_FRAME);
    let ended: Vec<&str> = before
        .iter()
        .filter_map(|e| match e {
            Event::ConsumerEnded { consumer_tag, .. } => Some(consumer_tag.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(ended, ["c1", "c2"]);
}
