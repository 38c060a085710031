//! Heartbeats under fake time: when ours go out, when the peer is declared dead, and what
//! postpones each.

use std::time::Duration;

use amqp_conformance::peer::Pair;
use amqp_proto::{BasicQosOk, BasicQosOptions, ConnectionConfig, Error, Frame};

const MS: Duration = Duration::from_millis(1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn heartbeat_goes_out_half_an_interval_after_the_last_outbound_traffic() {
    let mut pair = Pair::connected(); // heartbeat 60
    let t0 = pair.now;
    assert_eq!(pair.client.poll_timeout(), Some(t0 + secs(30)));
    pair.advance(secs(30) - MS);
    pair.expect_silence();
    pair.advance(MS);
    assert_eq!(pair.next_frame(), Some(Frame::Heartbeat));
    pair.expect_silence();
    // Calling again at the same instant sends nothing more.
    pair.advance(Duration::ZERO);
    pair.expect_silence();
    // Then every 30 s of silence.
    assert_eq!(pair.client.poll_timeout(), Some(t0 + secs(60)));
    pair.advance(secs(30) - MS);
    pair.expect_silence();
    pair.advance(MS);
    assert_eq!(pair.next_frame(), Some(Frame::Heartbeat));
}

#[test]
fn outbound_traffic_postpones_the_heartbeat() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel(); // at t0
    let t0 = pair.now;
    pair.advance(secs(20));
    pair.expect_silence();
    pair.client
        .basic_qos(ch, 1, BasicQosOptions::default())
        .unwrap(); // at t0 + 20
    pair.next_frame();
    // The peer answering keeps it alive but does not count as our traffic.
    pair.send_method(ch.0, BasicQosOk {});
    pair.drain_events();
    assert_eq!(pair.client.poll_timeout(), Some(t0 + secs(50)));
    pair.advance(secs(30) - MS);
    pair.expect_silence();
    pair.advance(MS);
    assert_eq!(pair.next_frame(), Some(Frame::Heartbeat));
    // A publish counts as traffic too.
    pair.advance(secs(10));
    pair.publish(ch, b"m", false);
    pair.advance(secs(30) - MS);
    pair.expect_silence();
    pair.advance(MS);
    assert_eq!(pair.next_frame(), Some(Frame::Heartbeat));
}

#[test]
fn peer_is_dead_after_two_intervals_without_inbound_bytes() {
    let mut pair = Pair::connected();
    let t0 = pair.now;
    // Our own heartbeats keep going out meanwhile; they do not keep the peer alive.
    for _ in 0..3 {
        pair.advance(secs(30));
        assert_eq!(pair.next_frame(), Some(Frame::Heartbeat));
    }
    pair.advance(secs(30) - MS);
    pair.expect_no_event();
    assert!(pair.client.is_open());
    assert_eq!(pair.client.poll_timeout(), Some(t0 + secs(120)));
    pair.advance(MS);
    assert_eq!(pair.expect_closed(), Some(Error::HeartbeatTimeout(120)));
    assert_eq!(pair.client.poll_timeout(), None);
    pair.expect_silence();
}

#[test]
fn any_inbound_bytes_postpone_death() {
    let mut pair = Pair::connected();
    let t0 = pair.now;
    pair.advance(secs(100));
    pair.send_frame(Frame::Heartbeat); // at t0 + 100
    pair.advance(secs(119));
    pair.expect_no_event();
    // Even a single byte of a frame that has not finished arriving counts.
    pair.send_raw(&[1]); // at t0 + 219
    pair.advance(secs(119));
    pair.expect_no_event();
    assert!(pair.client.is_open());
    assert!(
        pair.client
            .poll_timeout()
            .is_some_and(|t| t <= t0 + secs(339))
    );
    pair.advance(secs(1));
    assert_eq!(pair.expect_closed(), Some(Error::HeartbeatTimeout(120)));
}

#[test]
fn feeding_no_new_bytes_does_not_count_as_traffic() {
    let mut pair = Pair::connected();
    let t0 = pair.now;
    pair.advance(secs(100));
    pair.client
        .process_input(&mut bytes::BytesMut::new(), pair.now);
    pair.client.handle_input(&[], pair.now);
    pair.advance(secs(20));
    assert_eq!(pair.expect_closed(), Some(Error::HeartbeatTimeout(120)));
    assert_eq!(pair.now, t0 + secs(120));
}

#[test]
fn a_late_wakeup_declares_death_once() {
    let mut pair = Pair::connected();
    pair.advance(secs(1000));
    assert_eq!(pair.expect_closed(), Some(Error::HeartbeatTimeout(120)));
    pair.expect_no_event();
    pair.advance(secs(1000));
    pair.expect_no_event();
}

#[test]
fn poll_timeout_is_the_earlier_of_heartbeat_and_death() {
    let mut pair = Pair::connected();
    let t0 = pair.now;
    pair.advance(secs(30));
    pair.next_frame();
    pair.advance(secs(30));
    pair.next_frame();
    pair.advance(secs(30));
    pair.next_frame();
    // Sent at 90: next send at 120, death at 120.
    assert_eq!(pair.client.poll_timeout(), Some(t0 + secs(120)));
    pair.send_frame(Frame::Heartbeat); // inbound at 90: death at 210
    assert_eq!(pair.client.poll_timeout(), Some(t0 + secs(120)));
}

#[test]
fn negotiated_interval_is_used_not_ours() {
    let config = ConnectionConfig {
        heartbeat: 60,
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 2047, 131_072, 5);
    let t0 = pair.now;
    assert_eq!(
        pair.client.poll_timeout(),
        Some(t0 + Duration::from_millis(2500))
    );
    pair.advance(Duration::from_millis(2499));
    pair.expect_silence();
    pair.advance(MS);
    assert_eq!(pair.next_frame(), Some(Frame::Heartbeat));
    pair.advance(Duration::from_millis(7500) - MS);
    pair.expect_no_event();
    pair.advance(MS);
    assert_eq!(pair.expect_closed(), Some(Error::HeartbeatTimeout(10)));
}

#[test]
fn heartbeat_zero_means_no_timer_once_open() {
    let config = ConnectionConfig {
        heartbeat: 0,
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 2047, 131_072, 60);
    assert_eq!(pair.client.tuning().heartbeat, 0);
    assert_eq!(pair.client.poll_timeout(), None);
    pair.advance(secs(24 * 3600));
    pair.expect_silence();
    pair.expect_no_event();
    assert!(pair.client.is_open());

    // The broker disabling them while we want them leaves ours in force.
    let pair = Pair::connected_with(ConnectionConfig::default(), 2047, 131_072, 0);
    assert_eq!(pair.client.tuning().heartbeat, 60);
    assert!(pair.client.poll_timeout().is_some());
}

#[test]
fn inbound_heartbeats_produce_no_events() {
    let mut pair = Pair::connected();
    for _ in 0..5 {
        pair.send_frame(Frame::Heartbeat);
    }
    pair.expect_no_event();
    pair.expect_silence();
}
