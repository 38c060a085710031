//! Flow control: the broker pausing a channel, blocking the connection, and the output queue
//! filling past its high-water mark. Only publishes are held back, never acks, heartbeats or
//! other commands.

use std::time::Duration;

use amqp_conformance::peer::Pair;
use amqp_proto::{
    BasicProperties, BasicPublishOptions, BasicQosOptions, ChannelFlow, ChannelId,
    ConnectionBlocked, ConnectionConfig, ConnectionUnblocked, DeliveryTag, Error, Event, Frame,
    Method, QueueDeclareOptions, WouldBlock,
};
use bytes::Bytes;

fn try_publish(pair: &mut Pair, ch: ChannelId, body: &[u8]) -> Result<Option<DeliveryTag>, Error> {
    pair.client.basic_publish(
        ch,
        "",
        "q",
        BasicPublishOptions::default(),
        &BasicProperties::default(),
        &Bytes::copy_from_slice(body),
    )
}

/// Takes whole pieces of output into `out` until at least `max` bytes were taken (or none
/// are left), as a writer would.
fn write_some(pair: &mut Pair, max: usize, out: &mut Vec<u8>) {
    let mut taken = 0;
    while taken < max {
        let Some(chunk) = pair.client.poll_transmit(pair.now) else {
            break;
        };
        out.extend_from_slice(&chunk);
        taken += chunk.len();
    }
}

#[test]
fn server_channel_flow_pauses_publishing_on_that_channel_only() {
    let mut pair = Pair::connected();
    let paused = pair.open_channel();
    let other = pair.open_channel();
    pair.send_method(paused.0, ChannelFlow { active: false });
    let Method::ChannelFlowOk(ok) = pair.expect_method(paused.0) else {
        panic!("flow-ok")
    };
    assert!(!ok.active);
    assert_eq!(
        pair.expect_event(),
        Event::ChannelFlow {
            channel: paused,
            active: false
        }
    );

    assert_eq!(
        try_publish(&mut pair, paused, b"m"),
        Err(Error::WouldBlock(WouldBlock::ChannelFlow))
    );
    assert_eq!(
        Error::WouldBlock(WouldBlock::ChannelFlow).kind(),
        amqp_proto::ErrorKind::WouldBlock
    );
    pair.expect_silence();
    // Other channels publish; the paused one can still ack and run commands.
    pair.publish(other, b"fine", false);
    pair.client
        .basic_ack(paused, DeliveryTag(1), false)
        .unwrap();
    assert!(matches!(pair.expect_method(paused.0), Method::BasicAck(_)));
    pair.client
        .queue_declare(paused, "q", QueueDeclareOptions::default())
        .unwrap();
    assert!(matches!(
        pair.expect_method(paused.0),
        Method::QueueDeclare(_)
    ));

    pair.send_method(paused.0, ChannelFlow { active: true });
    assert!(matches!(pair.expect_method(paused.0), Method::ChannelFlowOk(ok) if ok.active));
    assert_eq!(
        pair.expect_event(),
        Event::ChannelFlow {
            channel: paused,
            active: true
        }
    );
    pair.publish(paused, b"resumed", false);
}

#[test]
fn connection_blocked_holds_back_publishes_only() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    pair.send_method(
        0,
        ConnectionBlocked {
            reason: Pair::s("low on memory"),
        },
    );
    assert_eq!(
        pair.expect_event(),
        Event::Blocked {
            reason: Pair::s("low on memory")
        }
    );
    assert!(pair.client.is_blocked());
    pair.expect_silence();

    assert_eq!(
        try_publish(&mut pair, ch, b"m"),
        Err(Error::WouldBlock(WouldBlock::ConnectionBlocked))
    );
    let other = pair.open_channel();
    assert_eq!(
        try_publish(&mut pair, other, b"m"),
        Err(Error::WouldBlock(WouldBlock::ConnectionBlocked))
    );
    pair.expect_silence();

    // Acks, other commands and heartbeats still go out.
    pair.client.basic_ack(ch, DeliveryTag(3), false).unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::BasicAck(_)));
    pair.client
        .basic_qos(ch, 5, BasicQosOptions::default())
        .unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::BasicQos(_)));
    pair.advance(Duration::from_secs(30));
    assert_eq!(pair.next_frame(), Some(Frame::Heartbeat));

    pair.send_method(0, ConnectionUnblocked {});
    assert_eq!(pair.expect_event(), Event::Unblocked);
    assert!(!pair.client.is_blocked());
    pair.publish(ch, b"resumed", false);
}

#[test]
fn blocked_takes_precedence_over_a_paused_channel_and_unblocked_leaves_it_paused() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    pair.send_method(ch.0, ChannelFlow { active: false });
    pair.send_method(
        0,
        ConnectionBlocked {
            reason: Pair::s("disk"),
        },
    );
    pair.drain_events();
    pair.inbox.clear();
    assert_eq!(
        try_publish(&mut pair, ch, b"m"),
        Err(Error::WouldBlock(WouldBlock::ConnectionBlocked))
    );
    pair.send_method(0, ConnectionUnblocked {});
    assert_eq!(
        try_publish(&mut pair, ch, b"m"),
        Err(Error::WouldBlock(WouldBlock::ChannelFlow))
    );
}

#[test]
fn output_past_the_high_water_mark_refuses_publishes_until_drained() {
    let config = ConnectionConfig {
        high_water_mark: 1000,
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 2047, 131_072, 60);
    let ch = pair.open_channel();
    assert!(!pair.client.is_backpressured());
    // Below the mark a publish is taken even if it goes past it. (A body this large is
    // queued as a piece of its own, so the first piece below is the frames before it.)
    try_publish(&mut pair, ch, &[1; 5000]).unwrap();
    assert!(pair.client.transmit_len() >= 5000);
    assert!(pair.client.is_backpressured());
    assert_eq!(
        try_publish(&mut pair, ch, b"m"),
        Err(Error::WouldBlock(WouldBlock::Backpressure))
    );
    // Acks and commands are never held back.
    pair.client.basic_ack(ch, DeliveryTag(1), false).unwrap();
    pair.client
        .basic_qos(ch, 1, BasicQosOptions::default())
        .unwrap();

    // A short write: still above the mark.
    let total = pair.client.transmit_len();
    let mut written = Vec::new();
    write_some(&mut pair, 1, &mut written);
    assert!(pair.client.transmit_len() >= 1000);
    assert_eq!(
        try_publish(&mut pair, ch, b"m"),
        Err(Error::WouldBlock(WouldBlock::Backpressure))
    );
    // Write out the rest: below it again.
    write_some(&mut pair, usize::MAX, &mut written);
    assert_eq!(written.len(), total);
    assert!(!pair.client.is_backpressured());
    try_publish(&mut pair, ch, b"again").unwrap();
    // The peer got everything, whole and in order.
    let frames = pair.peer.receive(&written);
    assert!(matches!(
        &frames[0],
        Frame::Method(_, Method::BasicPublish(_))
    ));
    assert!(matches!(
        frames.last(),
        Some(Frame::Method(_, Method::BasicQos(_)))
    ));
    let published = pair.expect_published(ch.0);
    assert_eq!(published.body, b"again");
}

#[test]
fn taking_output_drains_the_queue_piece_by_piece() {
    let config = ConnectionConfig {
        high_water_mark: 10_000,
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 2047, 131_072, 60);
    let ch = pair.open_channel();
    try_publish(&mut pair, ch, &vec![9; 20_000]).unwrap();
    assert_eq!(
        try_publish(&mut pair, ch, b"m"),
        Err(Error::WouldBlock(WouldBlock::Backpressure))
    );
    let mut wire = Vec::new();
    while let Some(chunk) = pair.client.poll_transmit(pair.now) {
        wire.extend_from_slice(&chunk);
        if pair.client.transmit_len() >= 10_000 {
            assert!(try_publish(&mut pair, ch, b"m").is_err());
        }
    }
    try_publish(&mut pair, ch, b"m").unwrap();
    let frames = pair.peer.receive(&wire);
    let body: usize = frames
        .iter()
        .map(|f| {
            if let Frame::Body(_, b) = f {
                b.len()
            } else {
                0
            }
        })
        .sum();
    assert_eq!(body, 20_000);
}
