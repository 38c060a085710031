//! Request timeouts under fake time: a request without a reply fails at its exact deadline
//! with `Error::RequestTimeout`, its channel is closed (reply 200, naming the request) and
//! everything else on it fails with the same cause; a late reply is dropped without a
//! violation; the deadline runs from a fresh `now`, never from a stale one.

use std::time::Duration;

use amqp_conformance::peer::Pair;
use amqp_proto::{
    BasicProperties, ChannelCloseOk, ChannelId, ChannelOpenOk, Confirmation, ConnectionConfig,
    ConsumerEnd, Error, ErrorKind, Event, Method, QueueBindOptions, QueueDeclareOk,
    QueueDeclareOptions, Reply, State,
};

const MS: Duration = Duration::from_millis(1);
const TIMEOUT: Duration = Duration::from_secs(5);

/// Connected, heartbeats off (so no heartbeat frame or timer gets in the way), requests
/// timed out after [`TIMEOUT`].
fn pair() -> Pair {
    let config = ConnectionConfig {
        heartbeat: 0,
        ..ConnectionConfig::default().with_request_timeout(Some(TIMEOUT))
    };
    Pair::connected_with(config, 2047, 131_072, 0)
}

fn timeout(ch: ChannelId, request: &'static str, after: Duration) -> Error {
    Error::RequestTimeout {
        channel: ch,
        request,
        after,
    }
}

fn declare(pair: &mut Pair, ch: ChannelId, queue: &str) -> amqp_proto::RequestId {
    let id = pair
        .client
        .queue_declare(ch, queue, QueueDeclareOptions::default())
        .unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::QueueDeclare(_)));
    id
}

/// The number of `ch`, closed for a timeout, stays taken until the broker's close-ok: a new
/// channel gets another one, and the close-ok then ends `ch` quietly. Returns the new channel.
#[track_caller]
fn number_kept_until_close_ok(pair: &mut Pair, ch: ChannelId) -> ChannelId {
    let (next, _) = pair.client.open_channel().unwrap();
    assert_ne!(next, ch);
    assert!(matches!(pair.expect_method(next.0), Method::ChannelOpen(_)));
    pair.send_method(ch.0, ChannelCloseOk {});
    pair.expect_no_event();
    assert_eq!(pair.client.state(), State::Open);
    next
}

/// The channel.close the client sent on `ch` for a timed-out request: reply 200, the
/// request's class and method.
#[track_caller]
fn expect_timeout_close(pair: &mut Pair, ch: ChannelId, class_id: u16, method_id: u16) {
    match pair.expect_method(ch.0) {
        Method::ChannelClose(c) => {
            assert_eq!(c.reply_code, 200);
            assert_eq!(c.reply_text.as_str(), "request timed out");
            assert_eq!((c.class_id, c.method_id), (class_id, method_id));
        }
        other => panic!("expected channel.close, got {other:?}"),
    }
}

#[test]
fn the_default_is_sixty_seconds_and_a_uri_sets_it() {
    assert_eq!(
        ConnectionConfig::default().request_timeout,
        Some(Duration::from_secs(60))
    );
    // From a URI, in milliseconds; 0 means no limit.
    let config = |uri: &str| ConnectionConfig::from_uri(&uri.parse().unwrap()).request_timeout;
    assert_eq!(config("amqp://h"), Some(Duration::from_secs(60)));
    assert_eq!(
        config("amqp://h?request_timeout=1500"),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(config("amqp://h?request_timeout=0"), None);
    let e = timeout(ChannelId(1), "queue.declare", TIMEOUT);
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(
        e.to_string(),
        "queue.declare on channel 1 got no reply within 5s; the channel was closed"
    );
}

#[test]
fn a_declare_fails_at_its_exact_deadline_and_everything_on_its_channel_with_it() {
    let mut pair = pair();
    let ch = pair.open_channel();
    let consumer = pair.start_consumer(ch, "q", "c1");
    pair.select_confirms(ch);
    let tag = pair.publish(ch, b"m", false).unwrap();
    let t0 = pair.now;
    let first = declare(&mut pair, ch, "q1");
    pair.now += Duration::from_secs(1);
    let second = pair
        .client
        .queue_bind(ch, "q1", "amq.direct", "k", QueueBindOptions::default())
        .unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::QueueBind(_)));
    // The earliest deadline is the declare's.
    assert_eq!(pair.client.poll_timeout(), Some(t0 + TIMEOUT));
    pair.now = t0;
    pair.advance(TIMEOUT - MS);
    pair.expect_silence();
    pair.expect_no_event();
    pair.advance(MS);
    expect_timeout_close(&mut pair, ch, 50, 10);
    let cause = timeout(ch, "queue.declare", TIMEOUT);
    assert_eq!(pair.expect_completed(first), Err(cause.clone()));
    assert_eq!(pair.expect_completed(second), Err(cause.clone()));
    let mut rest = pair.drain_events();
    assert_eq!(
        rest.pop(),
        Some(Event::ChannelClosed {
            channel: ch,
            error: cause.clone()
        })
    );
    assert!(rest.contains(&Event::ConsumerEnded {
        channel: ch,
        consumer_tag: consumer,
        reason: ConsumerEnd::Closed(cause.clone()),
    }));
    assert!(rest.contains(&Event::Confirmed {
        channel: ch,
        tag,
        outcome: Confirmation::Lost(cause.clone()),
    }));
    assert_eq!(rest.len(), 2, "{rest:?}");
    // The bind's own deadline (a second later) fires nothing: it failed already.
    pair.advance(Duration::from_secs(1));
    pair.expect_silence();
    pair.expect_no_event();
    // The late replies are dropped: no violation, no event, the connection stays open.
    pair.send_method(
        ch.0,
        QueueDeclareOk {
            queue: Pair::s("q1"),
            message_count: 0,
            consumer_count: 0,
        },
    );
    pair.expect_silence();
    pair.expect_no_event();
    assert_eq!(pair.client.state(), State::Open);
    assert!(
        pair.client
            .queue_declare(ch, "x", Default::default())
            .is_err()
    );
    // close-ok frees the number for the next channel.
    pair.send_method(ch.0, ChannelCloseOk {});
    pair.expect_no_event();
    assert_eq!(pair.open_channel(), ch);
    assert_eq!(pair.client.poll_timeout(), None);
}

#[test]
fn channel_open_times_out_and_a_late_open_ok_is_dropped() {
    let mut pair = pair();
    let (ch, id) = pair.client.open_channel().unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::ChannelOpen(_)));
    pair.advance(TIMEOUT);
    expect_timeout_close(&mut pair, ch, 20, 10);
    let cause = timeout(ch, "channel.open", TIMEOUT);
    assert_eq!(pair.expect_completed(id), Err(cause.clone()));
    assert_eq!(
        pair.expect_event(),
        Event::ChannelClosed {
            channel: ch,
            error: cause
        }
    );
    pair.send_method(ch.0, ChannelOpenOk::default());
    pair.expect_silence();
    pair.expect_no_event();
    assert_eq!(
        number_kept_until_close_ok(&mut pair, ch),
        ChannelId(ch.0 + 1)
    );
}

#[test]
fn a_channel_open_takes_its_own_timeout_and_the_channel_then_the_default() {
    let mut pair = pair();
    let after = Duration::from_secs(1);
    let (quick, id) = pair.client.open_channel_with_timeout(Some(after)).unwrap();
    let (patient, open) = pair.client.open_channel_with_timeout(None).unwrap();
    pair.expect_method(quick.0);
    pair.expect_method(patient.0);
    pair.advance(after - MS);
    pair.expect_silence();
    pair.advance(MS);
    expect_timeout_close(&mut pair, quick, 20, 10);
    assert_eq!(
        pair.expect_completed(id),
        Err(timeout(quick, "channel.open", after))
    );
    assert!(matches!(pair.expect_event(), Event::ChannelClosed { .. }));
    // No limit on the other open; once open, its requests get the connection's default.
    pair.advance(Duration::from_secs(3600));
    pair.expect_silence();
    pair.send_method(patient.0, ChannelOpenOk::default());
    assert!(pair.expect_completed(open).is_ok());
    assert_eq!(pair.client.request_timeout(patient), Some(TIMEOUT));
}

#[test]
fn a_reply_in_time_disarms_the_deadline() {
    let mut pair = pair();
    let ch = pair.open_channel();
    assert_eq!(pair.client.poll_timeout(), None);
    let id = declare(&mut pair, ch, "q1");
    assert_eq!(pair.client.poll_timeout(), Some(pair.now + TIMEOUT));
    pair.advance(TIMEOUT - MS);
    pair.send_method(
        ch.0,
        QueueDeclareOk {
            queue: Pair::s("q1"),
            message_count: 0,
            consumer_count: 0,
        },
    );
    assert!(matches!(
        pair.expect_completed(id),
        Ok(Reply::QueueDeclared { .. })
    ));
    assert_eq!(pair.client.poll_timeout(), None);
    pair.advance(Duration::from_secs(3600));
    pair.expect_silence();
    pair.expect_no_event();
}

#[test]
fn nowait_requests_are_not_timed() {
    let mut pair = pair();
    let ch = pair.open_channel();
    let options = QueueDeclareOptions {
        nowait: true,
        ..Default::default()
    };
    let id = pair.client.queue_declare(ch, "q1", options).unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::QueueDeclare(_)));
    assert_eq!(pair.expect_completed(id), Ok(Reply::Sent));
    assert_eq!(pair.client.poll_timeout(), None);
}

/// The core last heard the time long ago (nothing happened for 100 s); the request's
/// deadline runs from the `now` of the `poll_transmit` that hands it out, not from then.
#[test]
fn the_deadline_runs_from_a_fresh_now_never_a_stale_one() {
    let mut pair = pair();
    let ch = pair.open_channel();
    pair.now += Duration::from_secs(100);
    let t1 = pair.now;
    let id = declare(&mut pair, ch, "q1");
    assert_eq!(pair.client.poll_timeout(), Some(t1 + TIMEOUT));
    pair.advance(TIMEOUT - MS);
    pair.expect_no_event();
    pair.advance(MS);
    expect_timeout_close(&mut pair, ch, 50, 10);
    assert_eq!(
        pair.expect_completed(id),
        Err(timeout(ch, "queue.declare", TIMEOUT))
    );
}

/// A loop that calls `handle_timeout` late: the request fails once, naming the timeout it
/// was given, not the time that passed.
#[test]
fn a_late_handle_timeout_fails_the_request_once() {
    let mut pair = pair();
    let ch = pair.open_channel();
    let id = declare(&mut pair, ch, "q1");
    pair.advance(Duration::from_secs(500));
    expect_timeout_close(&mut pair, ch, 50, 10);
    assert_eq!(
        pair.expect_completed(id),
        Err(timeout(ch, "queue.declare", TIMEOUT))
    );
    assert!(matches!(pair.expect_event(), Event::ChannelClosed { .. }));
    pair.advance(Duration::from_secs(500));
    pair.expect_silence();
    pair.expect_no_event();
}

#[test]
fn a_channel_sets_its_own_timeout_and_none_waits_for_ever() {
    let mut pair = pair();
    let short = pair.open_channel();
    let forever = pair.open_channel();
    pair.client
        .set_request_timeout(short, Some(Duration::from_secs(1)))
        .unwrap();
    pair.client.set_request_timeout(forever, None).unwrap();
    assert_eq!(pair.client.request_timeout(forever), None);
    assert_eq!(
        pair.client.request_timeout(ChannelId(99)),
        Some(TIMEOUT),
        "a channel that is not open reports the connection's default"
    );
    let a = declare(&mut pair, short, "a");
    let b = declare(&mut pair, forever, "b");
    pair.advance(Duration::from_secs(1));
    expect_timeout_close(&mut pair, short, 50, 10);
    assert_eq!(
        pair.expect_completed(a),
        Err(timeout(short, "queue.declare", Duration::from_secs(1)))
    );
    assert!(matches!(pair.expect_event(), Event::ChannelClosed { .. }));
    pair.advance(Duration::from_secs(24 * 3600));
    pair.expect_silence();
    pair.expect_no_event();
    pair.send_method(
        forever.0,
        QueueDeclareOk {
            queue: Pair::s("b"),
            message_count: 0,
            consumer_count: 0,
        },
    );
    assert!(pair.expect_completed(b).is_ok());
    assert_eq!(
        pair.client
            .set_request_timeout(ChannelId(99), None)
            .unwrap_err(),
        Error::Usage(amqp_proto::Misuse::NoSuchChannel)
    );
}

/// A close that gets no close-ok fails its request; nothing more is sent and the number
/// stays taken until close-ok, so it is never reopened while the broker may still hold it.
#[test]
fn a_channel_close_times_out_and_keeps_its_number() {
    let mut pair = pair();
    let ch = pair.open_channel();
    let id = pair.client.close_channel(ch).unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::ChannelClose(_)));
    pair.advance(TIMEOUT);
    assert_eq!(
        pair.expect_completed(id),
        Err(timeout(ch, "channel.close", TIMEOUT))
    );
    pair.expect_silence();
    pair.expect_no_event();
    number_kept_until_close_ok(&mut pair, ch);
}

/// A get whose get-ok arrived in time completes when its content does, however long that
/// takes: the broker answered, the reply is matched.
#[test]
fn a_get_answered_in_time_is_not_timed_out_while_its_content_arrives() {
    let mut pair = pair();
    let ch = pair.open_channel();
    let id = pair.client.basic_get(ch, "q", Default::default()).unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::BasicGet(_)));
    pair.advance(TIMEOUT - MS);
    pair.send_content(
        ch.0,
        amqp_proto::BasicGetOk {
            delivery_tag: 1,
            redelivered: false,
            exchange: Pair::s(""),
            routing_key: Pair::s("q"),
            message_count: 0,
        },
        &BasicProperties::default(),
        b"body",
    );
    match pair.expect_completed(id) {
        Ok(Reply::Get(Some(m))) => assert_eq!(&m.delivery.body[..], b"body"),
        other => panic!("expected a message, got {other:?}"),
    }
    pair.advance(TIMEOUT);
    pair.expect_silence();
}

/// A lost connection fails the request with the loss, not later with a timeout; its deadline
/// goes with it, and after the recovery the channel's own timeout still applies.
#[test]
fn a_loss_fails_the_request_and_drops_its_deadline_across_a_recovery() {
    use amqp_conformance::peer::play_handshake;
    use amqp_proto::ConnectionTune;
    use amqp_proto::recovery::{Backoff, RecoveryConfig};

    let recovery = RecoveryConfig {
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(1),
            multiplier: 1.0,
            jitter: 0.0,
        },
        ..RecoveryConfig::default()
    };
    let config = ConnectionConfig {
        heartbeat: 0,
        ..ConnectionConfig::default()
            .with_request_timeout(Some(TIMEOUT))
            .with_recovery(recovery)
    };
    let mut pair = Pair::connected_with(config, 2047, 131_072, 0);
    let ch = pair.open_channel();
    pair.client
        .set_request_timeout(ch, Some(Duration::from_secs(3)))
        .unwrap();
    let id = declare(&mut pair, ch, "q1");
    let now = pair.now;
    pair.client.handle_eof(now);
    assert_eq!(
        pair.expect_completed(id),
        Err(Error::UnexpectedEof { mid_frame: false })
    );
    assert!(matches!(pair.expect_event(), Event::RecoveryStarted { .. }));
    // Only the reconnection is timed now.
    assert_eq!(
        pair.client.poll_timeout(),
        Some(now + Duration::from_secs(1))
    );
    pair.advance(Duration::from_secs(1));
    assert!(matches!(pair.expect_event(), Event::Dial { .. }));
    pair.fresh_transport();
    let tune = ConnectionTune {
        channel_max: 2047,
        frame_max: 131_072,
        heartbeat: 0,
    };
    play_handshake(&mut pair, tune);
    assert!(matches!(pair.expect_method(ch.0), Method::ChannelOpen(_)));
    pair.send_method(ch.0, ChannelOpenOk::default());
    let events = pair.drain_events();
    assert!(
        events.iter().any(|e| matches!(e, Event::Recovered { .. })),
        "{events:?}"
    );
    // Nothing left of the lost request's deadline; the channel keeps its own timeout.
    assert_eq!(pair.client.poll_timeout(), None);
    assert_eq!(
        pair.client.request_timeout(ch),
        Some(Duration::from_secs(3))
    );
    let id = declare(&mut pair, ch, "q2");
    assert_eq!(
        pair.client.poll_timeout(),
        Some(pair.now + Duration::from_secs(3))
    );
    pair.advance(Duration::from_secs(3));
    expect_timeout_close(&mut pair, ch, 50, 10);
    assert_eq!(
        pair.expect_completed(id),
        Err(timeout(ch, "queue.declare", Duration::from_secs(3)))
    );
}
