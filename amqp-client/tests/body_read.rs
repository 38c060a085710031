//! Through the driver: bodies of several frames, whose payload the driver reads straight into
//! the buffer the core lends, reach the consumer whole and in order, between small ones,
//! whether the broker's bytes arrive at once or in pieces that cut frames anywhere. In
//! memory, on a fake clock.

use amqp_client::Consumer;
use amqp_conformance::client::{ClientPair, Task};
use amqp_conformance::peer::ScriptedPeer;
use futures_util::StreamExt;

/// Bodies of one frame, of a full frame plus a few bytes (RabbitMQ's 128 KiB case), of
/// several frames, and past the 1 MiB the core reserves for joining.
fn bodies() -> Vec<Vec<u8>> {
    [10, 131_072, 300_000, 5, 131_064 * 2, (1 << 20) + 4099]
        .iter()
        .enumerate()
        .map(|(seed, &len)| (0..len).map(|i| (i / 3 + seed * 7) as u8).collect())
        .collect()
}

/// The broker's bytes for `bodies`, delivered to `c1` on channel 1 with tags 1, 2, ...
fn wire(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut peer = ScriptedPeer::default();
    for (i, body) in bodies.iter().enumerate() {
        peer.deliver(1, "c1", i as u64 + 1, body);
    }
    peer.take_output()
}

fn received(pair: &mut ClientPair, consumer: &mut Consumer, want: &[Vec<u8>]) {
    pair.run();
    for (i, body) in want.iter().enumerate() {
        let delivery = Task::spawn(consumer.next())
            .expect_ready()
            .expect("a delivery")
            .expect("not an error");
        assert_eq!(delivery.delivery_tag.0, i as u64 + 1);
        assert!(
            delivery.body == body[..],
            "body {i} of {} bytes",
            body.len()
        );
    }
    Task::spawn(consumer.next()).expect_pending();
}

#[test]
fn bodies_of_several_frames_arrive_whole_when_sent_at_once() {
    let (mut pair, conn) = ClientPair::connected();
    let ch = pair.open_channel(&conn);
    let mut consumer = pair.start_consumer(&ch, "c1");
    let bodies = bodies();
    pair.peer.send_raw(&wire(&bodies));
    received(&mut pair, &mut consumer, &bodies);
}

#[test]
fn bodies_of_several_frames_arrive_whole_when_the_bytes_trickle_in() {
    let bodies = bodies();
    let wire = wire(&bodies);
    for piece in [1000, 4096, 4097, 65_536, 131_080] {
        let (mut pair, conn) = ClientPair::connected();
        let ch = pair.open_channel(&conn);
        let mut consumer = pair.start_consumer(&ch, "c1");
        for chunk in wire.chunks(piece) {
            pair.peer.send_raw(chunk);
            pair.run();
        }
        received(&mut pair, &mut consumer, &bodies);
    }
}
