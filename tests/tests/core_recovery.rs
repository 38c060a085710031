//! Automatic recovery in the core, against a scripted broker under fake time: what triggers
//! it, the backoff deadlines, endpoint rotation, the replay frame by frame, renames, failures
//! in the middle of the replay, stale acks, unconfirmed publishes, and giving up.

use std::time::{Duration, Instant};

use amqp_conformance::peer::{Pair, play_handshake, rabbitmq_start};
use amqp_proto::recovery::{
    Backoff, Endpoint, Next, Recovery, RecoveryConfig, ReplayPlan, Rng, Schedule, Topology,
};
use amqp_proto::{
    BasicAck, BasicConsumeOk, BasicQosOk, BasicQosOptions, ChannelClose, ChannelCloseOk, ChannelId,
    ChannelOpenOk, ConfirmSelectOk, Confirmation, ConnectionClose, ConnectionConfig,
    ConnectionTune, ConnectionUpdateSecretOk, DeliveryTag, Error, ErrorKind, Event,
    ExchangeDeclareOk, Frame, Method, QueueBindOk, QueueBindOptions, QueueDeclareOk,
    QueueDeclareOptions, WouldBlock,
};

/// Recovery with exact waits (no jitter): 1 s, 2 s, 4 s, ...; two endpoints.
fn recovery(max_attempts: Option<u32>) -> RecoveryConfig {
    RecoveryConfig {
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            multiplier: 2.0,
            jitter: 0.0,
        },
        max_attempts,
        endpoints: vec![Endpoint::new("node-a", 5672), Endpoint::new("node-b", 5672)],
        ..RecoveryConfig::default()
    }
}

fn recovering_pair(max_attempts: Option<u32>) -> Pair {
    let config = ConnectionConfig::default().with_recovery(recovery(max_attempts));
    Pair::connected_with(config, 2047, 131_072, 60)
}

/// The transport breaks; returns the events up to and including `RecoveryStarted`.
fn lose_transport(pair: &mut Pair) -> Vec<Event> {
    let now = pair.now;
    pair.client.handle_eof(now);
    pair.pump();
    pair.drain_events()
}

/// Waits for the `Dial` event, then plays a fresh broker through the handshake.
fn redial(pair: &mut Pair, wait: Duration, endpoint: &str) {
    pair.advance(wait - Duration::from_millis(1));
    assert!(
        !pair
            .drain_events()
            .iter()
            .any(|e| matches!(e, Event::Dial { .. })),
        "dialled before the backoff was over"
    );
    pair.advance(Duration::from_millis(1));
    match pair.expect_event() {
        Event::Dial {
            endpoint: Some(e), ..
        } => assert_eq!(e.host, endpoint),
        other => panic!("expected Dial, got {other:?}"),
    }
    pair.fresh_transport();
    let tune = ConnectionTune {
        channel_max: 2047,
        frame_max: 131_072,
        heartbeat: 60,
    };
    play_handshake(pair, tune);
}

fn s(x: &str) -> amqp_proto::ShortString {
    Pair::s(x)
}

#[test]
fn the_whole_replay_frame_by_frame_with_a_renamed_queue() {
    let mut pair = recovering_pair(None);
    let ch = pair.open_channel();
    let id = pair
        .client
        .basic_qos(ch, 10, BasicQosOptions::default())
        .unwrap();
    pair.expect_method(ch.0);
    pair.send_method(ch.0, BasicQosOk {});
    pair.expect_completed(id).unwrap();
    pair.select_confirms(ch);
    let id = pair
        .client
        .exchange_declare(ch, "logs", "fanout", Default::default())
        .unwrap();
    pair.expect_method(ch.0);
    pair.send_method(ch.0, ExchangeDeclareOk {});
    pair.expect_completed(id).unwrap();
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let id = pair.client.queue_declare(ch, "", options).unwrap();
    pair.expect_method(ch.0);
    pair.send_method(
        ch.0,
        QueueDeclareOk {
            queue: s("amq.gen-old"),
            message_count: 0,
            consumer_count: 0,
        },
    );
    pair.expect_completed(id).unwrap();
    let id = pair
        .client
        .queue_bind(ch, "amq.gen-old", "logs", "", QueueBindOptions::default())
        .unwrap();
    pair.expect_method(ch.0);
    pair.send_method(ch.0, QueueBindOk {});
    pair.expect_completed(id).unwrap();
    pair.start_consumer(ch, "amq.gen-old", "c1");
    pair.deliver(ch.0, "c1", 1, b"before");
    assert_eq!(pair.expect_delivery().delivery_tag, DeliveryTag(1));

    let t0 = pair.now;
    let events = lose_transport(&mut pair);
    assert!(
        matches!(&events[..], [Event::RecoveryStarted { attempt: 1, endpoint: Some(e), cause: Error::UnexpectedEof { .. } }] if e.host == "node-b"),
        "{events:?}"
    );
    assert_eq!(
        pair.client.poll_timeout(),
        Some(t0 + Duration::from_secs(1))
    );
    // Commands wait for the recovery.
    assert_eq!(
        pair.client.open_channel().unwrap_err(),
        Error::WouldBlock(WouldBlock::Recovering)
    );
    redial(&mut pair, Duration::from_secs(1), "node-b");

    // Channel 1 with its settings, then the declarations on channel 2, then the consumer.
    assert!(matches!(pair.expect_method(1), Method::ChannelOpen(_)));
    pair.send_method(1, ChannelOpenOk::default());
    match pair.expect_method(1) {
        Method::BasicQos(q) => assert_eq!(q.prefetch_count, 10),
        other => panic!("{other:?}"),
    }
    pair.send_method(1, BasicQosOk {});
    assert!(matches!(pair.expect_method(1), Method::ConfirmSelect(_)));
    pair.send_method(1, ConfirmSelectOk {});
    assert!(matches!(pair.expect_method(2), Method::ChannelOpen(_)));
    pair.send_method(2, ChannelOpenOk::default());
    match pair.expect_method(2) {
        Method::ExchangeDeclare(e) => assert_eq!(e.exchange.as_str(), "logs"),
        other => panic!("{other:?}"),
    }
    pair.send_method(2, ExchangeDeclareOk {});
    match pair.expect_method(2) {
        Method::QueueDeclare(q) => assert!(q.queue.is_empty() && q.exclusive),
        other => panic!("{other:?}"),
    }
    pair.send_method(
        2,
        QueueDeclareOk {
            queue: s("amq.gen-new"),
            message_count: 0,
            consumer_count: 0,
        },
    );
    match pair.expect_method(2) {
        Method::QueueBind(b) => assert_eq!(b.queue.as_str(), "amq.gen-new"),
        other => panic!("{other:?}"),
    }
    pair.send_method(2, QueueBindOk {});
    assert!(matches!(pair.expect_method(2), Method::ChannelClose(_)));
    pair.send_method(2, ChannelCloseOk {});
    match pair.expect_method(1) {
        Method::BasicConsume(c) => {
            assert_eq!(
                (c.queue.as_str(), c.consumer_tag.as_str()),
                ("amq.gen-new", "c1")
            );
        }
        other => panic!("{other:?}"),
    }
    pair.send_method(
        1,
        BasicConsumeOk {
            consumer_tag: s("c1"),
        },
    );
    match pair.expect_event() {
        Event::Recovered {
            endpoint: Some(e),
            renamed,
            took,
        } => {
            assert_eq!(e.host, "node-b");
            assert_eq!(renamed, [(s("amq.gen-old"), s("amq.gen-new"))]);
            assert_eq!(took, Duration::from_secs(1));
        }
        other => panic!("{other:?}"),
    }
    pair.expect_silence();
    assert_eq!(
        pair.client.topology().queues[0].name.as_str(),
        "amq.gen-new"
    );

    // The consumer goes on; the broker's tag 1 of the new connection is shown as 2, and the
    // ack of the delivery from before the failure is dropped as stale.
    pair.deliver(1, "c1", 1, b"after");
    let d = pair.expect_delivery();
    assert_eq!(
        (d.delivery_tag, &d.body[..]),
        (DeliveryTag(2), &b"after"[..])
    );
    pair.client.basic_ack(ch, DeliveryTag(1), false).unwrap();
    assert!(matches!(
        pair.expect_event(),
        Event::Warning(Error::Usage(_))
    ));
    pair.expect_silence();
    pair.client.basic_ack(ch, DeliveryTag(2), false).unwrap();
    match pair.expect_method(1) {
        Method::BasicAck(a) => assert_eq!(a.delivery_tag, 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn backoff_deadlines_and_endpoint_rotation_until_given_up() {
    let mut pair = recovering_pair(Some(3));
    let ch = pair.open_channel();
    pair.start_consumer(ch, "q", "c1");
    let events = lose_transport(&mut pair);
    assert!(matches!(events[..], [Event::RecoveryStarted { .. }]));
    let mut hosts = Vec::new();
    for (attempt, wait) in [(1u32, 1u64), (2, 2), (3, 4)] {
        let before = pair.now;
        assert_eq!(
            pair.client.poll_timeout(),
            Some(before + Duration::from_secs(wait)),
            "attempt {attempt}"
        );
        pair.advance(Duration::from_secs(wait));
        match pair.expect_event() {
            Event::Dial {
                attempt: n,
                endpoint: Some(e),
            } => {
                assert_eq!(n, attempt);
                hosts.push(e.host);
            }
            other => panic!("{other:?}"),
        }
        // The dial fails.
        let now = pair.now;
        pair.client.handle_transport_error(
            std::io::ErrorKind::ConnectionRefused,
            "refused".into(),
            now,
        );
        pair.pump();
        if attempt < 3 {
            assert!(
                matches!(pair.expect_event(), Event::AttemptFailed { attempt: n, .. } if n == attempt)
            );
        }
    }
    assert_eq!(hosts, ["node-b", "node-a", "node-b"]);
    // Past the limit: given up, and the consumer ends with the real reason.
    let events = pair.drain_events();
    assert!(
        matches!(&events[0], Event::RecoveryGivenUp(e) if e.kind() == ErrorKind::ConnectionBroken),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ConsumerEnded { .. }))
    );
    assert!(matches!(events.last(), Some(Event::Closed(Some(_)))));
    assert!(pair.client.is_closed());
}

#[test]
fn what_does_not_trigger_recovery() {
    // Our own close.
    let mut pair = recovering_pair(None);
    let now = pair.now;
    pair.client.close(now, "bye").unwrap();
    assert!(matches!(pair.expect_method(0), Method::ConnectionClose(_)));
    pair.send_method(0, amqp_proto::ConnectionCloseOk {});
    let events = pair.drain_events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::RecoveryStarted { .. }))
    );
    assert!(pair.client.is_closed());

    // A server close other than 320, and a protocol violation.
    for code in [541u16, 530] {
        let mut pair = recovering_pair(None);
        pair.send_method(
            0,
            ConnectionClose {
                reply_code: code,
                reply_text: s("no"),
                class_id: 0,
                method_id: 0,
            },
        );
        let events = pair.drain_events();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::RecoveryStarted { .. })),
            "{code}"
        );
        assert!(pair.client.is_closed());
    }
    let mut pair = recovering_pair(None);
    pair.send_frame(Frame::Method(0, ChannelOpenOk::default().into()));
    assert!(
        !pair
            .drain_events()
            .iter()
            .any(|e| matches!(e, Event::RecoveryStarted { .. }))
    );

    // 320 (node shutdown, operator close) does.
    let mut pair = recovering_pair(None);
    pair.send_method(
        0,
        ConnectionClose {
            reply_code: 320,
            reply_text: s("CONNECTION_FORCED - broker forced connection closure"),
            class_id: 0,
            method_id: 0,
        },
    );
    assert!(matches!(
        pair.expect_method(0),
        Method::ConnectionCloseOk(_)
    ));
    assert!(matches!(pair.expect_event(), Event::RecoveryStarted { .. }));
    assert!(!pair.client.is_closed());
}

/// The transport breaks; after the first backoff (1 s) a fresh broker sends
/// `connection.start`.
fn first_attempt_gets_start(pair: &mut Pair) {
    lose_transport(pair);
    pair.advance(Duration::from_secs(1));
    assert!(matches!(pair.expect_event(), Event::Dial { .. }));
    pair.fresh_transport();
    pair.send_method(0, rabbitmq_start());
}

#[test]
fn recovery_logs_in_with_the_latest_secret() {
    let mut pair = recovering_pair(None);
    let id = pair.client.update_secret(b"token-2", "refresh").unwrap();
    assert!(matches!(
        pair.expect_method(0),
        Method::ConnectionUpdateSecret(_)
    ));
    pair.send_method(0, ConnectionUpdateSecretOk {});
    assert!(matches!(pair.expect_event(), Event::Completed { id: done, .. } if done == id));
    first_attempt_gets_start(&mut pair);
    let Method::ConnectionStartOk(start_ok) = pair.expect_method(0) else {
        panic!("expected start-ok");
    };
    assert_eq!(start_ok.mechanism.as_str(), "PLAIN");
    assert_eq!(&start_ok.response[..], b"\0guest\0token-2");
}

#[test]
fn a_refused_login_while_recovering_gives_up() {
    let mut pair = recovering_pair(None);
    let ch = pair.open_channel();
    let _ = ch;
    first_attempt_gets_start(&mut pair);
    assert!(matches!(
        pair.expect_method(0),
        Method::ConnectionStartOk(_)
    ));
    pair.send_method(
        0,
        ConnectionClose {
            reply_code: 403,
            reply_text: s("ACCESS_REFUSED - Login was refused"),
            class_id: 0,
            method_id: 0,
        },
    );
    let events = pair.drain_events();
    assert!(
        matches!(&events[0], Event::RecoveryGivenUp(Error::Authentication(_))),
        "{events:?}"
    );
    assert!(matches!(
        events.last(),
        Some(Event::Closed(Some(Error::Authentication(_))))
    ));
}

#[test]
fn a_failure_mid_replay_is_reported_and_the_rest_goes_on() {
    let mut pair = recovering_pair(None);
    let ch = pair.open_channel();
    for name in ["taken", "fine"] {
        let id = pair
            .client
            .queue_declare(ch, name, QueueDeclareOptions::default())
            .unwrap();
        pair.expect_method(ch.0);
        pair.send_method(
            ch.0,
            QueueDeclareOk {
                queue: s(name),
                message_count: 0,
                consumer_count: 0,
            },
        );
        pair.expect_completed(id).unwrap();
    }
    lose_transport(&mut pair);
    redial(&mut pair, Duration::from_secs(1), "node-b");
    assert!(matches!(pair.expect_method(1), Method::ChannelOpen(_)));
    pair.send_method(1, ChannelOpenOk::default());
    assert!(matches!(pair.expect_method(2), Method::ChannelOpen(_)));
    pair.send_method(2, ChannelOpenOk::default());
    assert!(
        matches!(pair.expect_method(2), Method::QueueDeclare(q) if q.queue.as_str() == "taken")
    );
    pair.send_method(
        2,
        ChannelClose {
            reply_code: 405,
            reply_text: s("RESOURCE_LOCKED - cannot obtain exclusive access"),
            class_id: 50,
            method_id: 10,
        },
    );
    assert!(matches!(pair.expect_method(2), Method::ChannelCloseOk(_)));
    match pair.expect_event() {
        Event::ReplayFailed {
            channel,
            method,
            error,
        } => {
            assert_eq!((channel, method), (ChannelId(2), "queue.declare"));
            assert_eq!(error.kind(), ErrorKind::ResourceLocked);
        }
        other => panic!("{other:?}"),
    }
    // The declarations channel is reopened and the next queue declared.
    assert!(matches!(pair.expect_method(2), Method::ChannelOpen(_)));
    pair.send_method(2, ChannelOpenOk::default());
    assert!(matches!(pair.expect_method(2), Method::QueueDeclare(q) if q.queue.as_str() == "fine"));
    pair.send_method(
        2,
        QueueDeclareOk {
            queue: s("fine"),
            message_count: 0,
            consumer_count: 0,
        },
    );
    assert!(matches!(pair.expect_method(2), Method::ChannelClose(_)));
    pair.send_method(2, ChannelCloseOk {});
    assert!(matches!(pair.expect_event(), Event::Recovered { .. }));
    // Commands go through again.
    assert!(pair.client.open_channel().is_ok());
}

#[test]
fn unconfirmed_publishes_resolve_as_lost_and_requests_fail_with_the_cause() {
    let mut pair = recovering_pair(None);
    let ch = pair.open_channel();
    pair.select_confirms(ch);
    assert_eq!(pair.publish(ch, b"one", false), Some(DeliveryTag(1)));
    assert_eq!(pair.publish(ch, b"two", false), Some(DeliveryTag(2)));
    pair.send_method(
        ch.0,
        BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    );
    assert!(matches!(
        pair.expect_event(),
        Event::Confirmed {
            tag: DeliveryTag(1),
            outcome: Confirmation::Ack(_),
            ..
        }
    ));
    let id = pair
        .client
        .queue_declare(ch, "q", QueueDeclareOptions::default())
        .unwrap();
    pair.expect_method(ch.0);
    let events = lose_transport(&mut pair);
    let lost = events.iter().find_map(|e| match e {
        Event::Confirmed {
            tag,
            outcome: Confirmation::Lost(err),
            ..
        } => Some((*tag, err.kind())),
        _ => None,
    });
    assert_eq!(lost, Some((DeliveryTag(2), ErrorKind::ConnectionBroken)));
    let failed = events.iter().any(|e| matches!(e, Event::Completed { id: i, result: Err(Error::UnexpectedEof { .. }) } if *i == id));
    assert!(failed, "{events:?}");
    assert!(matches!(events.last(), Some(Event::RecoveryStarted { .. })));
    // The channel and its consumers are not ended.
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::ChannelClosed { .. } | Event::ConsumerEnded { .. }))
    );

    // After recovery the broker numbers publishes from 1 again; the tags handed out go on, and
    // the broker's 1 confirms tag 3.
    redial(&mut pair, Duration::from_secs(1), "node-b");
    assert!(matches!(pair.expect_method(1), Method::ChannelOpen(_)));
    pair.send_method(1, ChannelOpenOk::default());
    assert!(matches!(pair.expect_method(1), Method::ConfirmSelect(_)));
    pair.send_method(1, ConfirmSelectOk {});
    assert!(matches!(pair.expect_event(), Event::Recovered { .. }));
    assert_eq!(pair.publish(ch, b"three", false), Some(DeliveryTag(3)));
    pair.send_method(
        ch.0,
        BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    );
    assert!(matches!(
        pair.expect_event(),
        Event::Confirmed {
            tag: DeliveryTag(3),
            outcome: Confirmation::Ack(_),
            ..
        }
    ));
}

#[test]
fn at_least_once_republishes_in_order_and_resolves_with_the_new_acks() {
    let mut config = recovery(None);
    config.republish_unconfirmed = true;
    let mut pair = Pair::connected_with(
        ConnectionConfig::default().with_recovery(config),
        2047,
        131_072,
        60,
    );
    let ch = pair.open_channel();
    pair.select_confirms(ch);
    for (body, tag) in [(&b"one"[..], 1), (b"two", 2), (b"three", 3)] {
        assert_eq!(pair.publish(ch, body, false), Some(DeliveryTag(tag)));
    }
    pair.send_method(
        ch.0,
        BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    );
    assert!(matches!(
        pair.expect_event(),
        Event::Confirmed {
            tag: DeliveryTag(1),
            outcome: Confirmation::Ack(_),
            ..
        }
    ));

    let events = lose_transport(&mut pair);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Confirmed { .. })),
        "kept publishes are not lost: {events:?}"
    );
    redial(&mut pair, Duration::from_secs(1), "node-b");
    assert!(matches!(pair.expect_method(1), Method::ChannelOpen(_)));
    pair.send_method(1, ChannelOpenOk::default());
    assert!(matches!(pair.expect_method(1), Method::ConfirmSelect(_)));
    pair.send_method(1, ConfirmSelectOk {});
    assert!(matches!(pair.expect_event(), Event::Recovered { .. }));
    // The two unconfirmed publishes go out again, in order, before anything new.
    assert_eq!(pair.expect_published(1).body, b"two");
    assert_eq!(pair.expect_published(1).body, b"three");
    assert_eq!(pair.publish(ch, b"four", false), Some(DeliveryTag(4)));
    // The new broker numbers them 1, 2, 3: its acks resolve the original tags.
    pair.send_method(
        ch.0,
        BasicAck {
            delivery_tag: 2,
            multiple: true,
        },
    );
    let acked: Vec<_> = pair
        .drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Confirmed {
                tag,
                outcome: Confirmation::Ack(_),
                ..
            } => Some(tag.0),
            _ => None,
        })
        .collect();
    assert_eq!(acked, [2, 3]);
    pair.send_method(
        ch.0,
        BasicAck {
            delivery_tag: 3,
            multiple: false,
        },
    );
    assert!(matches!(
        pair.expect_event(),
        Event::Confirmed {
            tag: DeliveryTag(4),
            outcome: Confirmation::Ack(_),
            ..
        }
    ));

    // Kept publishes go when the channel does: a close fails them as lost, never left pending.
    assert_eq!(pair.publish(ch, b"five", false), Some(DeliveryTag(5)));
    let now = pair.now;
    pair.client.handle_eof(now);
    pair.pump();
    let _ = pair.drain_events();
    pair.advance(Duration::from_secs(1));
    assert!(matches!(pair.expect_event(), Event::Dial { .. }));
    let now = pair.now;
    pair.client.close(now, "bye").unwrap();
    let events = pair.drain_events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Confirmed {
                tag: DeliveryTag(5),
                outcome: Confirmation::Lost(_),
                ..
            }
        )),
        "{events:?}"
    );
}

// The recovery machine and its schedule on their own, driven by hand under fake time.

fn eof() -> Error {
    Error::UnexpectedEof { mid_frame: false }
}

#[test]
fn the_machine_waits_dials_fails_over_and_replays() {
    let t0 = Instant::now();
    let mut r = Recovery::start(Recovery::schedule(&recovery(None)), eof(), t0).unwrap();
    assert_eq!(r.deadline(), Some(t0 + Duration::from_secs(1)));
    let a = r.dial().unwrap();
    assert_eq!((a.number, a.endpoint.unwrap().host.as_str()), (1, "node-b"));
    assert!(r.transport_ready());
    // The handshake times out: the next attempt is on the other endpoint, later.
    let t1 = t0 + Duration::from_secs(3);
    assert_eq!(
        r.attempt_failed(
            Error::HandshakeTimeout(amqp_proto::HandshakeStep::AwaitingStart),
            t1
        ),
        Next::Wait
    );
    assert_eq!(r.deadline(), Some(t1 + Duration::from_secs(2)));
    let a = r.dial().unwrap();
    assert_eq!((a.number, a.endpoint.unwrap().host.as_str()), (2, "node-a"));
    assert!(r.transport_ready());
    let plan = ReplayPlan::new(&Topology::default(), &[ChannelId(1)], ChannelId(2));
    let Next::Send(step) = r.opened(plan, t1) else {
        panic!("a step")
    };
    assert!(matches!(step.method, Method::ChannelOpen(_)));
    let t2 = t1 + Duration::from_secs(1);
    match r.step_done(None, t2) {
        Next::Recovered { endpoint, took, .. } => {
            assert_eq!(endpoint.unwrap().host, "node-a");
            assert_eq!(took, Duration::from_secs(4));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_machine_gives_up_on_refusals_and_at_the_attempt_limit() {
    let t0 = Instant::now();
    let mut r = Recovery::start(Recovery::schedule(&recovery(Some(2))), eof(), t0).unwrap();
    assert!(matches!(
        r.attempt_failed(Error::Authentication("no".into()), t0),
        Next::GiveUp(Error::Authentication(_))
    ));
    assert_eq!(r.attempt_failed(eof(), t0), Next::Wait);
    assert_eq!(r.attempt().number, 2);
    assert_eq!(r.attempt_failed(eof(), t0), Next::GiveUp(eof()));
    assert!(Recovery::start(Recovery::schedule(&recovery(Some(0))), eof(), t0).is_err());
}

#[test]
fn a_refused_replay_step_drops_the_rest_of_its_channel() {
    let t0 = Instant::now();
    let mut r = Recovery::start(Recovery::schedule(&recovery(None)), eof(), t0).unwrap();
    r.dial();
    r.transport_ready();
    let plan = ReplayPlan::new(
        &Topology::default(),
        &[ChannelId(1), ChannelId(2)],
        ChannelId(3),
    );
    assert!(matches!(r.opened(plan, t0), Next::Send(s) if s.channel == ChannelId(1)));
    let (dropped, next) = r.step_refused(t0);
    assert!(
        dropped.is_empty(),
        "the refused step itself is not returned"
    );
    assert!(matches!(next, Next::Send(s) if s.channel == ChannelId(2)));
    assert_eq!(r.current_step().map(|s| s.channel), Some(ChannelId(2)));
}

#[test]
fn the_schedule_has_exact_deadlines_with_a_fixed_seed() {
    let config = RecoveryConfig {
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            multiplier: 2.0,
            jitter: 0.5,
        },
        seed: 42,
        ..RecoveryConfig::default()
    };
    let t0 = Instant::now();
    let mut s = Schedule::new(&config);
    let delays: Vec<Duration> = (0..5).map(|_| s.failed(t0).unwrap().at - t0).collect();
    // Recomputed from the same seed: the schedule is exactly reproducible.
    let mut rng = Rng::new(42);
    let expected: Vec<Duration> = (1..=5).map(|n| config.backoff.delay(n, &mut rng)).collect();
    assert_eq!(delays, expected);
    for (n, d) in (1u32..).zip(&delays) {
        let base = config.backoff.base_delay(n);
        assert!(*d <= base && *d >= base / 2);
    }
    s.recovered();
    assert_eq!(s.attempts(), 0);
    assert_eq!(s.failed(t0).unwrap().number, 1);
    assert_eq!(s.endpoint(), None);
}
