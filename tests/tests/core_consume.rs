//! Content: deliveries of every body shape, published messages on the wire, and every way the
//! broker can get content wrong.

use amqp_conformance::peer::Pair;
use amqp_proto::{
    BasicCancelOptions, BasicConsumeOptions, BasicDeliver, BasicProperties, BasicPublishOptions,
    ChannelId, ConnectionConfig, ContentHeader, DeliveryTag, Error, Event, FieldTable, Frame,
    Method, QueueDeclareOptions, ReplyCode, ShortString,
};
use bytes::Bytes;

fn header(body_size: u64) -> Frame {
    Frame::Header(
        1,
        ContentHeader {
            class_id: 60,
            body_size,
            properties: BasicProperties::default(),
        },
    )
}

fn deliver(tag: u64) -> BasicDeliver {
    BasicDeliver {
        consumer_tag: Pair::s("c1"),
        delivery_tag: tag,
        redelivered: false,
        exchange: ShortString::empty(),
        routing_key: Pair::s("q"),
    }
}

/// A connection tuned to frame_max 4096 with one channel and consumer `c1` on it.
fn consuming(frame_max: u32) -> Pair {
    let config = ConnectionConfig {
        frame_max,
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 2047, frame_max, 60);
    pair.peer.frame_max = frame_max;
    let ch = pair.open_channel();
    pair.start_consumer(ch, "q", "c1");
    pair
}

fn body_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn empty_body_delivery() {
    let mut pair = consuming(4096);
    pair.deliver(1, "c1", 1, b"");
    let d = pair.expect_delivery();
    assert!(d.body.is_empty());
    assert_eq!(d.delivery_tag, DeliveryTag(1));
    pair.expect_no_event();
}

#[test]
fn one_frame_delivery_with_properties() {
    let mut pair = consuming(4096);
    let props = BasicProperties::default()
        .with_content_type("application/json")
        .with_delivery_mode(2)
        .with_headers(FieldTable::new().with("attempt", 3i32))
        .with_correlation_id("abc");
    let deliver = BasicDeliver {
        redelivered: true,
        exchange: Pair::s("ex"),
        ..deliver(7)
    };
    pair.send_content(1, deliver, &props, br#"{"a":1}"#);
    let d = pair.expect_delivery();
    assert_eq!(&d.body[..], br#"{"a":1}"#);
    assert_eq!(d.properties, props);
    assert!(d.redelivered);
    assert_eq!(d.exchange.as_str(), "ex");
    assert_eq!(d.routing_key.as_str(), "q");
    assert_eq!(d.consumer_tag.as_str(), "c1");
    assert_eq!(d.delivery_tag, DeliveryTag(7));
    assert_eq!(d.channel.0, 1);
}

#[test]
fn one_frame_body_is_a_slice_of_the_read_buffer() {
    let mut pair = consuming(4096);
    let body = body_of(3000);
    pair.peer
        .send_content(1, deliver(1), &BasicProperties::default(), &body);
    let wire = pair.peer.take_output();
    // Read into a buffer of our own, as an adapter does, and note where it lives.
    let mut buf = bytes::BytesMut::new();
    buf.extend_from_slice(&wire);
    let start = buf.as_ptr() as usize;
    let end = start + buf.capacity();
    pair.client.process_input(&mut buf, pair.now);
    let d = pair.expect_delivery();
    assert_eq!(&d.body[..], &body[..]);
    let at = d.body.as_ptr() as usize;
    assert!(
        (start..end).contains(&at),
        "body at {at:#x} was copied out of the read buffer {start:#x}..{end:#x}"
    );
}

#[test]
fn a_joined_delivery_keeps_nothing_of_the_read_buffer() {
    let mut pair = consuming(4096);
    let body = body_of(10_000);
    let props = BasicProperties::default()
        .with_content_type("application/octet-stream")
        .with_headers(FieldTable::new().with("k", "v"));
    pair.peer.send_content(1, deliver(1), &props, &body);
    let wire = pair.peer.take_output();
    let mut buf = bytes::BytesMut::new();
    buf.extend_from_slice(&wire);
    let inside = {
        let start = buf.as_ptr() as usize;
        start..start + buf.capacity()
    };
    pair.client.process_input(&mut buf, pair.now);
    let d = pair.expect_delivery();
    assert_eq!(&d.body[..], &body[..]);
    assert_eq!(d.properties, props);
    // The body was joined from three frames, so holding the delivery must not pin the read
    // buffer through its small fields either.
    for (what, at) in [
        ("body", d.body.as_ptr()),
        ("consumer tag", d.consumer_tag.as_bytes().as_ptr()),
        ("routing key", d.routing_key.as_bytes().as_ptr()),
        (
            "content type",
            d.properties
                .content_type()
                .map_or(std::ptr::null(), str::as_ptr),
        ),
    ] {
        assert!(
            !inside.contains(&(at as usize)),
            "{what} still points into the read buffer"
        );
    }
}

#[test]
fn multi_frame_bodies_are_reassembled() {
    let mut pair = consuming(4096);
    // 4088 payload bytes per frame: exactly one frame, one byte over, and many frames.
    for (tag, len) in [(1u64, 4088usize), (2, 4089), (3, 20_000), (4, 4088 * 3)] {
        let body = body_of(len);
        pair.deliver(1, "c1", tag, &body);
        let d = pair.expect_delivery();
        assert_eq!(d.body.len(), len);
        assert_eq!(&d.body[..], &body[..], "delivery {tag}");
    }
    pair.expect_no_event();
}

#[test]
fn multi_frame_bodies_fed_one_byte_at_a_time() {
    let mut pair = consuming(4096);
    pair.chunk_size = Some(1);
    let body = body_of(9000);
    pair.deliver(1, "c1", 1, &body);
    pair.deliver(1, "c1", 2, b"");
    pair.deliver(1, "c1", 3, b"z");
    assert_eq!(&pair.expect_delivery().body[..], &body[..]);
    assert!(pair.expect_delivery().body.is_empty());
    assert_eq!(&pair.expect_delivery().body[..], b"z");
}

#[test]
fn content_on_two_channels_may_interleave() {
    let mut pair = consuming(4096);
    let two = pair.open_channel();
    pair.start_consumer(two, "q2", "c2");
    let props = BasicProperties::default();
    let on = |ch: u16, size: u64| {
        Frame::Header(
            ch,
            ContentHeader {
                class_id: 60,
                body_size: size,
                properties: props.clone(),
            },
        )
    };
    pair.send_method(1, deliver(1));
    pair.send_method(
        two.0,
        BasicDeliver {
            consumer_tag: Pair::s("c2"),
            ..deliver(1)
        },
    );
    pair.send_frame(on(1, 4));
    pair.send_frame(on(two.0, 2));
    pair.send_frame(Frame::Body(1, Bytes::from_static(b"ab")));
    pair.send_frame(Frame::Heartbeat);
    pair.send_frame(Frame::Body(two.0, Bytes::from_static(b"xy")));
    pair.send_frame(Frame::Body(1, Bytes::from_static(b"cd")));
    let first = pair.expect_delivery();
    assert_eq!((first.channel, &first.body[..]), (two, &b"xy"[..]));
    let second = pair.expect_delivery();
    assert_eq!((second.channel.0, &second.body[..]), (1, &b"abcd"[..]));
}

fn expect_unknown_consumer_warning(pair: &mut Pair, tag: &str, outcome: &str) {
    match pair.expect_event() {
        Event::Warning(Error::Protocol { text, .. }) => {
            assert!(text.contains(tag) && text.ends_with(outcome), "{text}");
        }
        other => panic!("expected a warning, got {other:?}"),
    }
    pair.expect_no_event();
}

#[test]
fn a_delivery_for_an_unknown_consumer_is_rejected_with_requeue() {
    let mut pair = consuming(4096);
    pair.deliver(1, "nobody", 7, b"stray");
    // Not handed over (no consumer would ever settle it), and not left unacknowledged.
    expect_unknown_consumer_warning(&mut pair, "nobody", "rejected with requeue");
    match pair.expect_method(1) {
        Method::BasicReject(r) => assert_eq!((r.delivery_tag, r.requeue), (7, true)),
        other => panic!("expected basic.reject, got {other:?}"),
    }
    pair.expect_silence();
    assert!(pair.client.is_open());
}

#[test]
fn in_flight_deliveries_after_a_nowait_cancel_are_rejected_unless_no_ack() {
    let mut pair = consuming(4096);
    let ch = ChannelId(1);
    let nowait = BasicConsumeOptions {
        no_ack: true,
        nowait: true,
        ..Default::default()
    };
    pair.client.basic_consume(ch, "q", "auto", nowait).unwrap();
    assert!(matches!(pair.expect_method(1), Method::BasicConsume(_)));
    for tag in ["c1", "auto"] {
        pair.client
            .basic_cancel(ch, tag, BasicCancelOptions { nowait: true })
            .unwrap();
        assert!(matches!(pair.expect_method(1), Method::BasicCancel(_)));
    }
    pair.drain_events();
    // From the acknowledging consumer: back to the queue.
    pair.deliver(1, "c1", 1, b"in flight");
    expect_unknown_consumer_warning(&mut pair, "c1", "rejected with requeue");
    assert!(matches!(pair.expect_method(1), Method::BasicReject(_)));
    // From the no-ack one: the broker counts it as acknowledged; a reject would be a 406.
    pair.deliver(1, "auto", 2, b"in flight");
    expect_unknown_consumer_warning(&mut pair, "auto", "dropped (no-ack)");
    pair.expect_silence();
    assert!(pair.client.is_open());
}

#[test]
fn header_without_a_method_is_505() {
    let mut pair = consuming(4096);
    pair.send_frame(header(3));
    pair.expect_violation(ReplyCode::UNEXPECTED_FRAME);
}

#[test]
fn body_without_a_header_is_505() {
    let mut pair = consuming(4096);
    pair.send_method(1, deliver(1));
    pair.send_frame(Frame::Body(1, Bytes::from_static(b"abc")));
    pair.expect_violation(ReplyCode::UNEXPECTED_FRAME);
}

#[test]
fn body_without_anything_is_505() {
    let mut pair = consuming(4096);
    pair.send_frame(Frame::Body(1, Bytes::from_static(b"abc")));
    pair.expect_violation(ReplyCode::UNEXPECTED_FRAME);
}

#[test]
fn second_header_is_505() {
    let mut pair = consuming(4096);
    pair.send_method(1, deliver(1));
    pair.send_frame(header(3));
    pair.send_frame(header(3));
    pair.expect_violation(ReplyCode::UNEXPECTED_FRAME);
}

#[test]
fn body_longer_than_declared_is_501() {
    let mut pair = consuming(4096);
    pair.send_method(1, deliver(1));
    pair.send_frame(header(3));
    pair.send_frame(Frame::Body(1, Bytes::from_static(b"ab")));
    pair.send_frame(Frame::Body(1, Bytes::from_static(b"cd")));
    pair.expect_violation(ReplyCode::FRAME_ERROR);
    // The partial message was never delivered.
}

#[test]
fn body_frame_after_an_empty_body_is_505() {
    let mut pair = consuming(4096);
    pair.send_method(1, deliver(1));
    pair.send_frame(header(0));
    assert!(pair.expect_delivery().body.is_empty());
    pair.send_frame(Frame::Body(1, Bytes::from_static(b"x")));
    pair.expect_violation(ReplyCode::UNEXPECTED_FRAME);
}

#[test]
fn method_in_the_middle_of_content_is_505() {
    let mut pair = consuming(4096);
    pair.send_method(1, deliver(1));
    pair.send_frame(header(4));
    pair.send_frame(Frame::Body(1, Bytes::from_static(b"ab")));
    pair.send_method(1, deliver(2));
    let before = pair.expect_violation(ReplyCode::UNEXPECTED_FRAME);
    assert!(
        !before.iter().any(|e| matches!(e, Event::Delivery(_))),
        "{before:?}"
    );
}

#[test]
fn method_between_method_and_header_is_505() {
    let mut pair = consuming(4096);
    pair.send_method(1, deliver(1));
    pair.send_method(1, amqp_proto::BasicQosOk {});
    pair.expect_violation(ReplyCode::UNEXPECTED_FRAME);
}

#[test]
fn content_on_channel_zero_is_505() {
    let mut pair = consuming(4096);
    pair.send_frame(Frame::Header(
        0,
        ContentHeader {
            class_id: 60,
            body_size: 1,
            properties: BasicProperties::default(),
        },
    ));
    pair.expect_violation(ReplyCode::UNEXPECTED_FRAME);

    let mut pair = consuming(4096);
    pair.send_frame(Frame::Body(0, Bytes::from_static(b"x")));
    pair.expect_violation(ReplyCode::UNEXPECTED_FRAME);
}

#[test]
fn frame_on_an_unopened_channel_is_504() {
    let mut pair = consuming(4096);
    pair.send_method(9, deliver(1));
    pair.expect_violation(ReplyCode::CHANNEL_ERROR);

    let mut pair = consuming(4096);
    pair.send_frame(Frame::Body(9, Bytes::from_static(b"x")));
    pair.expect_violation(ReplyCode::CHANNEL_ERROR);
}

#[test]
fn header_announcing_more_than_max_body_size_is_501() {
    let config = ConnectionConfig {
        max_body_size: 1000,
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 2047, 131_072, 60);
    let ch = pair.open_channel();
    pair.start_consumer(ch, "q", "c1");
    // Exactly the limit is fine.
    pair.deliver(1, "c1", 1, &body_of(1000));
    assert_eq!(pair.expect_delivery().body.len(), 1000);
    pair.send_method(1, deliver(2));
    pair.send_frame(header(1001));
    pair.expect_violation(ReplyCode::FRAME_ERROR);

    // A huge announced size is refused before anything is buffered.
    let mut pair = consuming(4096);
    pair.send_method(1, deliver(1));
    pair.send_frame(header(u64::MAX));
    pair.expect_violation(ReplyCode::FRAME_ERROR);
}

#[test]
fn a_violation_fails_the_consumer_and_pending_requests() {
    let mut pair = consuming(4096);
    let pending = pair
        .client
        .queue_declare(
            amqp_proto::ChannelId(1),
            "x",
            QueueDeclareOptions::default(),
        )
        .unwrap();
    pair.next_frame();
    pair.send_frame(header(1));
    let before = pair.expect_violation(ReplyCode::UNEXPECTED_FRAME);
    let completed = before.iter().any(|e| {
        matches!(e, Event::Completed { id, result: Err(Error::Protocol { code: ReplyCode::UNEXPECTED_FRAME, .. }) } if *id == pending)
    });
    assert!(completed, "{before:?}");
    let ended = before.iter().any(|e| {
        matches!(
            e,
            Event::ConsumerEnded {
                reason: amqp_proto::ConsumerEnd::Closed(Error::Protocol { .. }),
                ..
            }
        )
    });
    assert!(ended, "{before:?}");
}

#[test]
fn published_bodies_are_split_at_frame_max() {
    let config = ConnectionConfig {
        frame_max: 4096,
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 2047, 4096, 60);
    let ch = pair.open_channel();
    for (len, frames) in [(0usize, 0usize), (1, 1), (4088, 1), (4089, 2), (10_000, 3)] {
        let body = body_of(len);
        let props = BasicProperties::default().with_message_id("m");
        pair.client
            .basic_publish(
                ch,
                "ex",
                "rk",
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &props,
                &Bytes::from(body.clone()),
            )
            .unwrap();
        let got = pair.expect_published(ch.0);
        assert_eq!(got.body, body);
        assert_eq!(got.body_frames, frames, "body of {len}");
        assert_eq!(got.header.body_size, len as u64);
        assert_eq!(got.header.properties, props);
        assert_eq!(
            (
                got.method.exchange.as_str(),
                got.method.routing_key.as_str()
            ),
            ("ex", "rk")
        );
        assert!(got.method.mandatory && !got.method.immediate);
    }
}

#[test]
fn large_published_bodies_are_queued_by_reference() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    pair.pump();
    let body = Bytes::from(body_of(50_000));
    let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
    pair.client
        .basic_publish(
            ch,
            "",
            "q",
            BasicPublishOptions::default(),
            &BasicProperties::default(),
            &body,
        )
        .unwrap();
    let mut by_reference = false;
    let mut wire = Vec::new();
    while let Some(chunk) = pair.client.poll_transmit(pair.now) {
        by_reference |= range.contains(&(chunk.as_ptr() as usize));
        wire.extend_from_slice(&chunk);
    }
    assert!(by_reference, "the body was copied into the output queue");
    let frames = pair.peer.receive(&wire);
    let joined: Vec<u8> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Body(_, b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(joined, &body[..]);
}

#[test]
fn a_header_too_large_for_frame_max_is_refused_and_nothing_is_sent() {
    let config = ConnectionConfig {
        frame_max: 4096,
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 2047, 4096, 60);
    let ch = pair.open_channel();
    let mut headers = FieldTable::new();
    for i in 0..100 {
        headers = headers.with(&format!("header-{i}"), "x".repeat(40).as_str());
    }
    let props = BasicProperties::default().with_headers(headers);
    let err = pair
        .client
        .basic_publish(
            ch,
            "",
            "q",
            BasicPublishOptions::default(),
            &props,
            &Bytes::from_static(b"x"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Encode(_)), "{err:?}");
    pair.expect_silence();
    // The connection is still fine.
    pair.publish(ch, b"small", false);
}
