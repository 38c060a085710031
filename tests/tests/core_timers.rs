//! Every timer of the connection under a fresh clock (the caller passes the time of each call)
//! and a stale one (the core last heard the time long ago): handshake, close, heartbeat send
//! and peer dead. A timer runs from the `now` of the call that armed or moved it, never from
//! an older time the core happened to see last.

use std::time::Duration;

use amqp_conformance::peer::Pair;
use amqp_proto::{
    BasicQosOptions, Connection, ConnectionCloseOk, ConnectionConfig, Error, Event, Frame,
    HandshakeStep, Method, PROTOCOL_HEADER, State,
};

const MS: Duration = Duration::from_millis(1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The scenario of issue 10: an idle connection (nothing told the core the time for 25 s)
/// closes, and the close waits for `close-ok` instead of ending at once.
#[test]
fn close_after_idling_waits_for_close_ok() {
    let mut pair = Pair::connected();
    pair.now += secs(25); // idle; heartbeat 60 s
    let id = pair.client.close(pair.now, "bye").unwrap();
    pair.client.handle_timeout(pair.now);
    assert!(!pair.client.is_closed());
    assert!(matches!(pair.expect_method(0), Method::ConnectionClose(_)));
    pair.send_method(0, ConnectionCloseOk {});
    pair.expect_completed(id).unwrap();
    assert_eq!(pair.expect_closed(), None);
}

#[test]
fn close_timeout_runs_from_the_close_call_under_a_stale_clock() {
    let mut pair = Pair::connected(); // close_timeout 10 s
    let t0 = pair.now;
    pair.now += secs(25);
    pair.client.close(pair.now, "bye").unwrap();
    pair.next_frame();
    // The next deadline is the close timeout (heartbeats run too, but later than it).
    assert_eq!(pair.client.poll_timeout(), Some(t0 + secs(35)));
    pair.advance(secs(10) - MS);
    assert_eq!(pair.client.state(), State::Closing);
    pair.advance(MS);
    pair.drain_events();
    assert!(pair.client.is_closed());
    assert_eq!(pair.client.poll_timeout(), None);
}

#[test]
fn close_timeout_under_a_fresh_clock() {
    let mut pair = Pair::connected();
    let t0 = pair.now;
    pair.client.close(pair.now, "bye").unwrap();
    pair.next_frame();
    assert_eq!(pair.client.poll_timeout(), Some(t0 + secs(10)));
    pair.advance(secs(10) - MS);
    assert_eq!(pair.client.state(), State::Closing);
    pair.advance(MS);
    assert!(pair.client.is_closed());
}

#[test]
fn handshake_timeout_runs_from_new_and_fires_once_when_called_late() {
    let config = ConnectionConfig {
        handshake_timeout: Some(secs(5)),
        ..Default::default()
    };
    let mut pair = Pair::new(config);
    let t0 = pair.now;
    assert_eq!(pair.client.poll_timeout(), Some(t0 + secs(5)));
    pair.advance(secs(5) - MS);
    assert!(!pair.client.is_closed());
    // Called long after the deadline (a stale loop): fires once, with the handshake error.
    pair.advance(secs(100));
    assert_eq!(
        pair.expect_closed(),
        Some(Error::HandshakeTimeout(HandshakeStep::AwaitingStart))
    );
    assert_eq!(pair.client.poll_timeout(), None);
    pair.advance(secs(100));
    pair.expect_no_event();
}

#[test]
fn heartbeat_runs_from_when_output_is_taken_not_from_the_last_input() {
    let mut pair = Pair::connected(); // heartbeat 60: send after 30 s of silence
    let ch = pair.open_channel();
    let t0 = pair.now;
    // Idle for 25 s with no call into the core, then a publish that goes out at t0 + 25.
    pair.now += secs(25);
    pair.publish(ch, b"m", false);
    assert_eq!(pair.client.poll_timeout(), Some(t0 + secs(55)));
    pair.advance(secs(30) - MS);
    pair.expect_silence();
    pair.advance(MS);
    assert_eq!(pair.next_frame(), Some(Frame::Heartbeat));
}

#[test]
fn no_heartbeat_is_armed_while_output_waits_to_be_taken() {
    let mut conn = Connection::new(ConnectionConfig::default(), std::time::Instant::now());
    // Only the protocol header is queued; nothing is tuned, so only the handshake timer runs.
    let t0 = std::time::Instant::now();
    assert!(conn.poll_timeout().is_some());
    assert_eq!(&conn.poll_transmit(t0).unwrap()[..], &PROTOCOL_HEADER);
    assert!(conn.poll_transmit(t0).is_none());

    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let t1 = pair.now;
    pair.client
        .basic_qos(ch, 1, BasicQosOptions::default())
        .unwrap();
    // Queued, not taken: the heartbeat timer is not armed, only the peer-dead one.
    assert_eq!(pair.client.poll_timeout(), Some(t1 + secs(120)));
    pair.now += secs(40);
    pair.next_frame(); // taken at t1 + 40
    assert_eq!(pair.client.poll_timeout(), Some(t1 + secs(70)));
}

#[test]
fn peer_dead_runs_from_the_last_input_under_a_stale_clock() {
    let mut pair = Pair::connected(); // dead after 120 s without input
    let t0 = pair.now;
    pair.now += secs(100);
    // Bytes arrive after 100 s in which the core heard no time at all.
    pair.send_frame(Frame::Heartbeat);
    pair.advance(secs(120) - MS);
    // Our own heartbeats went out meanwhile, but the peer is not dead yet.
    assert!(pair.events.iter().all(|e| !matches!(e, Event::Closed(_))));
    assert!(!pair.client.is_closed());
    pair.advance(MS);
    assert_eq!(pair.expect_closed(), Some(Error::HeartbeatTimeout(120)));
    assert_eq!(pair.now, t0 + secs(220));
}

#[test]
fn a_late_timeout_ends_a_dead_connection_without_queueing_a_heartbeat() {
    let mut pair = Pair::connected();
    // Both the heartbeat-send and the peer-dead deadlines have long passed.
    pair.advance(secs(500));
    assert_eq!(pair.expect_closed(), Some(Error::HeartbeatTimeout(120)));
    assert!(pair.inbox.iter().all(|f| *f != Frame::Heartbeat));
    assert!(pair.client.poll_transmit(pair.now).is_none());
}
