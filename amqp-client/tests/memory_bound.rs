//! Memory stays within the bound the crate documents (`amqp_client` docs, "Memory"): a
//! publisher far faster than its peer, with confirms, never holds more than the high-water
//! mark plus one message plus the fixed slack, and the confirm bookkeeping shrinks again once
//! the window drains. Measured with a counting global allocator (live bytes, not RSS), in its
//! own test binary so nothing else allocates meanwhile (`dhat`'s heap statistics).

use std::collections::VecDeque;

use amqp_client::{
    BasicProperties, BasicPublishOptions, ConfirmSelectOptions, ConnectionConfig, PublishConfirm,
};
use amqp_conformance::client::{ClientPair, Task};
use amqp_proto::{BasicAck, ConfirmSelectOk, Frame, Method};
use bytes::Bytes;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

const KIB: usize = 1024;
const HIGH_WATER_MARK: usize = 1024 * KIB;
const WINDOW: usize = 2000;
const PIPE: usize = 16 * KIB;

/// The peer acks, in one `multiple` ack, every publish it has received so far.
fn ack_received(pair: &mut ClientPair, received: &mut u64, acked: &mut u64) {
    while let Some(frame) = pair.inbox.pop_front() {
        if let Frame::Method(_, Method::BasicPublish(_)) = frame {
            *received += 1;
        }
    }
    if *received > *acked + 50 {
        *acked = *received;
        pair.peer.send(&Frame::Method(
            1,
            BasicAck {
                delivery_tag: *acked,
                multiple: true,
            }
            .into(),
        ));
    }
}

/// Publishes `count` messages of `body` through a peer that takes `PIPE` bytes per turn,
/// keeping at most `WINDOW` confirms outstanding; returns the peak live bytes above the
/// starting point.
fn publish_through_a_slow_peer(body: &Bytes, count: usize) -> usize {
    let config = ConnectionConfig {
        high_water_mark: HIGH_WATER_MARK,
        ..ConnectionConfig::default()
    };
    let (mut pair, conn) = ClientPair::connected_with(config);
    let ch = pair.open_channel(&conn);
    let mut select = Task::spawn(ch.confirm_select(ConfirmSelectOptions::default()));
    assert!(matches!(pair.expect_method(1), Method::ConfirmSelect(_)));
    pair.send_method(1, ConfirmSelectOk {});
    select.expect_ready().unwrap();
    pair.set_pipe_capacity(Some(PIPE));
    pair.peer_read_limit = Some(PIPE);
    let properties = BasicProperties::default();
    let mut confirms: VecDeque<PublishConfirm> = VecDeque::with_capacity(WINDOW);
    let (mut received, mut acked) = (0, 0);
    // The script's own inbox (frames are 392 bytes) is sized before counting starts.
    pair.inbox.reserve(4096);

    // Counts only what is allocated from here on: live bytes now are the baseline, 0.
    let profiler = dhat::Profiler::builder().testing().build();
    let mut published = 0;
    while published < count {
        if confirms.len() == WINDOW {
            let mut oldest = Task::spawn(confirms.pop_front().unwrap());
            while oldest.poll().is_pending() {
                pair.step();
                ack_received(&mut pair, &mut received, &mut acked);
            }
            continue;
        }
        let mut publish = Task::spawn(ch.basic_publish(
            "",
            "q",
            BasicPublishOptions::default(),
            &properties,
            body.clone(),
        ));
        loop {
            match publish.poll() {
                std::task::Poll::Ready(confirm) => {
                    confirms.push_back(confirm.unwrap());
                    published += 1;
                    break;
                }
                std::task::Poll::Pending => {
                    pair.step();
                    ack_received(&mut pair, &mut received, &mut acked);
                }
            }
        }
    }
    let peak = dhat::HeapStats::get().max_bytes;
    drop(confirms);
    // Drain at the same slow pace (so that the harness's own buffers stay small).
    for _ in 0..count {
        pair.step();
        ack_received(&mut pair, &mut received, &mut acked);
    }
    pair.peer.send(&Frame::Method(
        1,
        BasicAck {
            delivery_tag: 0,
            multiple: true,
        }
        .into(),
    ));
    pair.run();
    // Drained: what publishing took is given back (the confirm slots shrink, the output
    // blocks are freed) except the current output block and the read buffer.
    let left = dhat::HeapStats::get().curr_bytes;
    drop(profiler);
    assert!(
        left <= HARNESS_AFTER,
        "{left} bytes still held after draining"
    );
    peak
}

/// The documented bound (see the crate docs, "Memory"): high-water mark + one message
/// (encoded) + 128 KiB for the output queue, 128 bytes per confirm in the window.
fn documented_bound(message: usize) -> usize {
    HIGH_WATER_MARK + message + 128 * KIB + WINDOW * 128
}

/// What the test's own side holds beyond the client: its window of `PublishConfirm`s, the
/// pipe, and the scripted peer's decode buffer and frames.
const HARNESS: usize = WINDOW * 16 + 8 * PIPE;

/// What may stay allocated once everything drained: the core's current output block (64
/// KiB), its read buffer (64 KiB), the fixed minimum of confirm slots, the harness's
/// buffers, and the capacity of the core's event queue:
/// The core's event queue keeps the capacity it needed for one confirm per publish of the
/// window, resolved by one `multiple` ack.
const HARNESS_AFTER: usize = 256 * KIB + WINDOW * 64;

#[test]
fn a_fast_publisher_never_holds_more_than_the_documented_bound() {
    // Small bodies are copied into the output queue; large ones are queued by reference, so
    // the queue holds only their frame headers while the application keeps the body.
    for (size, count) in [(KIB, 10_000), (200, 20_000), (128 * KIB, 200)] {
        let body = Bytes::from(vec![7u8; size]);
        let peak = publish_through_a_slow_peer(&body, count);
        let bound = documented_bound(size + 200) + HARNESS;
        println!("body {size} B x {count}: peak {peak} B above baseline, bound {bound} B");
        assert!(
            peak <= bound,
            "body {size}: peak {peak} B above the bound {bound} B"
        );
    }
}
