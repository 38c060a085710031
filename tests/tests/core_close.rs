//! Every close path, each with a pending request, a consumer and an unconfirmed publish that
//! must all fail with the real reason; and what commands return afterwards.

use std::io::ErrorKind as IoKind;
use std::time::Duration;

use amqp_conformance::peer::Pair;
use amqp_proto::{
    BasicQosOk, BasicQosOptions, ChannelClose, ChannelCloseOk, ChannelId, Confirmation,
    ConnectionClose, ConnectionCloseOk, ConnectionConfig, ConsumerEnd, Error, Event, Frame,
    Initiator, Method, Misuse, QueueDeclareOk, QueueDeclareOptions, Reply, ReplyCode, RequestId,
    State,
};
use bytes::Bytes;

/// A channel in confirm mode with consumer `c1`, publish tag 1 unconfirmed and a queue.declare
/// waiting for its answer.
fn busy(pair: &mut Pair) -> (ChannelId, RequestId) {
    let ch = pair.open_channel();
    pair.select_confirms(ch);
    pair.start_consumer(ch, "q", "c1");
    pair.publish(ch, b"m", false);
    let id = pair
        .client
        .queue_declare(ch, "q", QueueDeclareOptions::default())
        .unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::QueueDeclare(_)));
    (ch, id)
}

/// Checks that `events` fail the request, the consumer and the publish of `busy` on `ch`, each
/// with `error`, and nothing else on that channel.
#[track_caller]
fn assert_all_failed(events: &[Event], ch: ChannelId, request: RequestId, error: &Error) {
    let mine: Vec<&Event> = events
        .iter()
        .filter(|e| match e {
            Event::Completed { id, .. } => *id == request,
            Event::ConsumerEnded { channel, .. } | Event::Confirmed { channel, .. } => {
                *channel == ch
            }
            _ => false,
        })
        .collect();
    let expected = [
        Event::Completed {
            id: request,
            result: Err(error.clone()),
        },
        Event::ConsumerEnded {
            channel: ch,
            consumer_tag: Pair::s("c1"),
            reason: ConsumerEnd::Closed(error.clone()),
        },
        Event::Confirmed {
            channel: ch,
            tag: amqp_proto::DeliveryTag(1),
            outcome: Confirmation::Lost(error.clone()),
        },
    ];
    assert_eq!(
        mine,
        expected.iter().collect::<Vec<_>>(),
        "all events: {events:?}"
    );
}

/// Checks that a channel set up by `busy` still works: its request completes, its consumer
/// gets deliveries and its publish is confirmed.
#[track_caller]
fn assert_still_works(pair: &mut Pair, ch: ChannelId, request: RequestId) {
    pair.send_method(
        ch.0,
        QueueDeclareOk {
            queue: Pair::s("q"),
            message_count: 0,
            consumer_count: 1,
        },
    );
    assert!(matches!(
        pair.expect_completed(request),
        Ok(Reply::QueueDeclared { .. })
    ));
    pair.deliver(ch.0, "c1", 1, b"still here");
    assert_eq!(&pair.expect_delivery().body[..], b"still here");
    pair.send_method(
        ch.0,
        amqp_proto::BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    );
    assert!(matches!(
        pair.expect_event(),
        Event::Confirmed {
            outcome: Confirmation::Ack(None),
            ..
        }
    ));
}

#[test]
fn client_channel_close() {
    let mut pair = Pair::connected();
    let (ch, request) = busy(&mut pair);
    let (other, other_request) = busy(&mut pair);
    let id = pair.client.close_channel(ch).unwrap();
    let Method::ChannelClose(close) = pair.expect_method(ch.0) else {
        panic!("channel.close")
    };
    assert_eq!(
        (close.reply_code, close.class_id, close.method_id),
        (200, 0, 0)
    );
    // Everything on the channel fails at once.
    let events = pair.drain_events();
    let Event::Completed {
        result: Err(error), ..
    } = &events[0]
    else {
        panic!("{events:?}")
    };
    assert!(
        matches!(error, Error::ChannelClosed { channel, reason } if *channel == ch && reason.initiator == Initiator::Client && reason.code == ReplyCode::REPLY_SUCCESS),
        "{error:?}"
    );
    assert_all_failed(&events, ch, request, error);
    assert_eq!(events.len(), 3);
    // Commands on the closing channel are refused; closing again too.
    assert!(matches!(
        pair.client.basic_qos(ch, 1, BasicQosOptions::default()),
        Err(Error::Usage(Misuse::ChannelClosing))
    ));
    assert!(matches!(
        pair.client.close_channel(ch),
        Err(Error::Usage(Misuse::ChannelClosing))
    ));
    // What the broker sends before close-ok is discarded.
    pair.deliver(ch.0, "c1", 2, b"late");
    pair.send_method(ch.0, QueueDeclareOk::default());
    pair.expect_no_event();
    pair.send_method(ch.0, ChannelCloseOk {});
    assert_eq!(pair.expect_completed(id), Ok(Reply::ChannelClosed));
    pair.expect_silence();
    assert_still_works(&mut pair, other, other_request);
    assert!(
        pair.client
            .topology()
            .consumers
            .iter()
            .all(|c| c.channel != ch)
    );
}

#[test]
fn client_channel_close_crossing_a_server_close() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let id = pair.client.close_channel(ch).unwrap();
    pair.next_frame();
    pair.send_method(
        ch.0,
        ChannelClose {
            reply_code: 406,
            reply_text: Pair::s("x"),
            class_id: 0,
            method_id: 0,
        },
    );
    assert!(matches!(
        pair.expect_method(ch.0),
        Method::ChannelCloseOk(_)
    ));
    assert_eq!(pair.expect_completed(id), Ok(Reply::ChannelClosed));
    // A close-ok from the broker after that would be for a channel that no longer exists.
    assert_eq!(pair.open_channel(), ch);
}

#[test]
fn server_channel_close() {
    let mut pair = Pair::connected();
    let (ch, request) = busy(&mut pair);
    let (other, other_request) = busy(&mut pair);
    pair.send_method(
        ch.0,
        ChannelClose {
            reply_code: 404,
            reply_text: Pair::s("NOT_FOUND - no queue 'q'"),
            class_id: 50,
            method_id: 10,
        },
    );
    assert!(matches!(
        pair.expect_method(ch.0),
        Method::ChannelCloseOk(_)
    ));
    let events = pair.drain_events();
    let Some(Event::ChannelClosed { channel, error }) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(*channel, ch);
    let Error::ChannelClosed { channel: n, reason } = error else {
        panic!("{error:?}")
    };
    assert_eq!(*n, ch);
    assert_eq!(reason.initiator, Initiator::Server);
    assert_eq!(reason.code, ReplyCode::NOT_FOUND);
    assert_eq!(reason.text.as_str(), "NOT_FOUND - no queue 'q'");
    assert_eq!((reason.class_id, reason.method_id), (50, 10));
    assert_eq!(error.kind(), amqp_proto::ErrorKind::NotFound);
    assert!(error.to_string().contains("queue.declare"), "{error}");
    assert_all_failed(&events, ch, request, error);
    assert_eq!(events.len(), 4);
    // The channel is gone; its number is free.
    assert!(matches!(
        pair.client.basic_qos(ch, 1, BasicQosOptions::default()),
        Err(Error::Usage(_))
    ));
    assert!(pair.client.is_open());
    assert_still_works(&mut pair, other, other_request);
    assert_eq!(pair.open_channel(), ch);
}

#[test]
fn client_connection_close() {
    let mut pair = Pair::connected();
    let (ch, request) = busy(&mut pair);
    let secret = pair.client.update_secret(b"t", "r").unwrap();
    pair.next_frame();
    let id = pair.client.close(pair.now, "shutting down").unwrap();
    let close = pair.expect_connection_close();
    assert_eq!(
        (close.reply_code, close.reply_text.as_str()),
        (200, "shutting down")
    );
    assert_eq!(pair.client.state(), State::Closing);
    let events = pair.drain_events();
    let Event::Completed {
        result: Err(error), ..
    } = &events[0]
    else {
        panic!("{events:?}")
    };
    let Error::ConnectionClosed(reason) = error else {
        panic!("{error:?}")
    };
    assert_eq!(
        (reason.initiator, reason.code, reason.text.as_str()),
        (Initiator::Client, ReplyCode::REPLY_SUCCESS, "shutting down")
    );
    assert_all_failed(&events, ch, request, error);
    assert!(
        events.contains(&Event::Completed {
            id: secret,
            result: Err(error.clone())
        }),
        "{events:?}"
    );
    assert_eq!(events.len(), 4);

    // Commands while closing return the close reason.
    assert_eq!(pair.client.open_channel().unwrap_err(), *error);
    assert_eq!(pair.client.close(pair.now, "again").unwrap_err(), *error);

    // Until close-ok, what the broker sends is ignored.
    pair.deliver(ch.0, "c1", 1, b"late");
    pair.send_method(ch.0, BasicQosOk {});
    pair.expect_no_event();
    pair.expect_silence();
    pair.send_method(0, ConnectionCloseOk {});
    assert_eq!(pair.expect_completed(id), Ok(Reply::ConnectionClosed));
    assert_eq!(pair.expect_closed(), None);
    assert!(pair.client.is_closed());
    assert_eq!(pair.client.poll_timeout(), None);
    // And afterwards, still with the reason we gave.
    assert_eq!(pair.client.open_channel().unwrap_err(), *error);
    assert_eq!(pair.client.update_secret(b"x", "y").unwrap_err(), *error);
}

#[test]
fn server_connection_close() {
    let mut pair = Pair::connected();
    let (ch, request) = busy(&mut pair);
    let (ch2, request2) = busy(&mut pair);
    pair.send_method(
        0,
        ConnectionClose {
            reply_code: 320,
            reply_text: Pair::s("CONNECTION_FORCED - broker shutdown"),
            class_id: 0,
            method_id: 0,
        },
    );
    assert!(matches!(
        pair.expect_method(0),
        Method::ConnectionCloseOk(_)
    ));
    pair.expect_silence();
    let (events, error) = pair.events_until_closed();
    let error = error.expect("an error");
    let Error::ConnectionClosed(reason) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(
        (reason.initiator, reason.code),
        (Initiator::Server, ReplyCode::CONNECTION_FORCED)
    );
    assert_eq!(reason.text.as_str(), "CONNECTION_FORCED - broker shutdown");
    assert_all_failed(&events, ch, request, &error);
    assert_all_failed(&events, ch2, request2, &error);
    assert_eq!(events.len(), 6);
    // Commands afterwards return the same error.
    assert_eq!(pair.client.open_channel().unwrap_err(), error);
    assert_eq!(
        pair.client
            .basic_qos(ch, 1, BasicQosOptions::default())
            .unwrap_err(),
        error
    );
    assert_eq!(pair.client.close(pair.now, "x").unwrap_err(), error);
    assert_eq!(
        pair.client
            .basic_publish(
                ch,
                "",
                "q",
                Default::default(),
                &Default::default(),
                &Bytes::new()
            )
            .unwrap_err(),
        error
    );
    // More input is ignored.
    pair.send_method(0, ConnectionCloseOk {});
    pair.expect_no_event();
    pair.expect_silence();
}

#[test]
fn both_sides_close_at_once() {
    let mut pair = Pair::connected();
    let id = pair.client.close(pair.now, "bye").unwrap();
    pair.expect_connection_close();
    pair.send_method(
        0,
        ConnectionClose {
            reply_code: 320,
            reply_text: Pair::s("x"),
            class_id: 0,
            method_id: 0,
        },
    );
    assert!(matches!(
        pair.expect_method(0),
        Method::ConnectionCloseOk(_)
    ));
    assert_eq!(pair.expect_completed(id), Ok(Reply::ConnectionClosed));
    assert_eq!(pair.expect_closed(), None);
}

#[test]
fn heartbeat_death() {
    let mut pair = Pair::connected();
    let (ch, request) = busy(&mut pair);
    pair.advance(Duration::from_secs(120));
    let (events, error) = pair.events_until_closed();
    let error = error.expect("an error");
    assert_eq!(error, Error::HeartbeatTimeout(120));
    assert_eq!(error.kind(), amqp_proto::ErrorKind::HeartbeatTimeout);
    assert_all_failed(&events, ch, request, &error);
    assert_eq!(pair.client.open_channel().unwrap_err(), error);
}

#[test]
fn transport_error() {
    let mut pair = Pair::connected();
    let (ch, request) = busy(&mut pair);
    pair.client
        .handle_transport_error(IoKind::ConnectionReset, "reset by peer".into(), pair.now);
    let (events, error) = pair.events_until_closed();
    let error = error.expect("an error");
    assert_eq!(
        error,
        Error::Transport {
            kind: IoKind::ConnectionReset,
            message: "reset by peer".into()
        }
    );
    assert_all_failed(&events, ch, request, &error);
    assert_eq!(pair.client.open_channel().unwrap_err(), error);
    // A second report changes nothing.
    pair.client
        .handle_transport_error(IoKind::BrokenPipe, "again".into(), pair.now);
    pair.client.handle_eof(pair.now);
    pair.expect_no_event();
}

#[test]
fn transport_error_during_our_close_is_an_orderly_end() {
    let mut pair = Pair::connected();
    let id = pair.client.close(pair.now, "bye").unwrap();
    pair.expect_connection_close();
    pair.client
        .handle_transport_error(IoKind::ConnectionReset, "reset".into(), pair.now);
    assert_eq!(pair.expect_completed(id), Ok(Reply::ConnectionClosed));
    assert_eq!(pair.expect_closed(), None);
}

#[test]
fn eof_mid_frame() {
    let mut pair = Pair::connected();
    let (ch, request) = busy(&mut pair);
    let mut wire = bytes::BytesMut::new();
    Frame::Method(ch.0, QueueDeclareOk::default().into())
        .encode(&mut wire)
        .unwrap();
    pair.send_raw(&wire[..wire.len() - 3]);
    pair.expect_no_event();
    pair.client.handle_eof(pair.now);
    let (events, error) = pair.events_until_closed();
    let error = error.expect("an error");
    assert_eq!(error, Error::UnexpectedEof { mid_frame: true });
    assert_all_failed(&events, ch, request, &error);
}

#[test]
fn eof_between_frames() {
    let mut pair = Pair::connected();
    let (ch, request) = busy(&mut pair);
    pair.client.handle_eof(pair.now);
    let (events, error) = pair.events_until_closed();
    let error = error.expect("an error");
    assert_eq!(error, Error::UnexpectedEof { mid_frame: false });
    assert_eq!(error.kind(), amqp_proto::ErrorKind::ConnectionBroken);
    assert_all_failed(&events, ch, request, &error);
}

#[test]
fn eof_after_our_close_is_an_orderly_end() {
    let mut pair = Pair::connected();
    let id = pair.client.close(pair.now, "bye").unwrap();
    pair.expect_connection_close();
    pair.client.handle_eof(pair.now);
    assert_eq!(pair.expect_completed(id), Ok(Reply::ConnectionClosed));
    assert_eq!(pair.expect_closed(), None);
}

#[test]
fn close_timeout_when_the_broker_never_answers() {
    let config = ConnectionConfig {
        close_timeout: Duration::from_secs(5),
        heartbeat: 0,
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 2047, 131_072, 0);
    let (ch, request) = busy(&mut pair);
    let id = pair.client.close(pair.now, "bye").unwrap();
    pair.expect_connection_close();
    let events = pair.drain_events();
    let Event::Completed {
        result: Err(error), ..
    } = &events[0]
    else {
        panic!("{events:?}")
    };
    assert_all_failed(&events, ch, request, error);
    assert_eq!(
        pair.client.poll_timeout(),
        Some(pair.now + Duration::from_secs(5))
    );
    pair.advance(Duration::from_millis(4999));
    pair.expect_no_event();
    assert_eq!(pair.client.state(), State::Closing);
    pair.advance(Duration::from_millis(1));
    assert_eq!(pair.expect_completed(id), Ok(Reply::ConnectionClosed));
    assert_eq!(pair.expect_closed(), None);
    assert_eq!(pair.client.poll_timeout(), None);
}

#[test]
fn close_timeout_after_a_violation_keeps_the_violation() {
    let config = ConnectionConfig {
        close_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 2047, 131_072, 60);
    let (ch, request) = busy(&mut pair);
    // A reply that answers nothing: 505, but the stream is still in step.
    pair.send_method(ch.0, BasicQosOk {});
    let close = pair.expect_connection_close();
    assert_eq!(close.reply_code, 505);
    let events = pair.drain_events();
    let Event::Completed {
        result: Err(error), ..
    } = &events[0]
    else {
        panic!("{events:?}")
    };
    assert!(matches!(
        error,
        Error::Protocol {
            code: ReplyCode::UNEXPECTED_FRAME,
            ..
        }
    ));
    assert_all_failed(&events, ch, request, error);
    // Commands now return that error.
    assert_eq!(pair.client.open_channel().unwrap_err(), *error);
    pair.advance(Duration::from_secs(5));
    assert_eq!(pair.expect_closed(), Some(error.clone()));
}

#[test]
fn server_close_while_we_wait_for_close_ok_after_a_violation() {
    let mut pair = Pair::connected();
    pair.send_method(1, BasicQosOk {});
    pair.expect_connection_close();
    // The broker closes too instead of answering: it gets close-ok, our reason stands.
    pair.send_method(
        0,
        ConnectionClose {
            reply_code: 541,
            reply_text: Pair::s("x"),
            class_id: 0,
            method_id: 0,
        },
    );
    assert!(matches!(
        pair.expect_method(0),
        Method::ConnectionCloseOk(_)
    ));
    assert!(matches!(
        pair.expect_closed(),
        Some(Error::Protocol {
            code: ReplyCode::CHANNEL_ERROR,
            ..
        })
    ));
}

#[test]
fn transport_error_while_closing_after_a_violation_keeps_the_violation() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    // A reply that answers nothing: 505, and we wait for close-ok.
    pair.send_method(ch.0, BasicQosOk {});
    pair.expect_connection_close();
    pair.client
        .handle_transport_error(IoKind::ConnectionReset, "reset".into(), pair.now);
    let error = pair.expect_closed();
    assert!(
        matches!(
            error,
            Some(Error::Protocol {
                code: ReplyCode::UNEXPECTED_FRAME,
                ..
            })
        ),
        "{error:?}"
    );
    assert_eq!(pair.client.open_channel().unwrap_err(), error.unwrap());
}

#[test]
fn peer_going_silent_during_our_close_ends_it_like_the_close_timeout() {
    // Heartbeat 1 s: the peer counts as dead after 2 s, before the 10 s close timeout.
    let config = ConnectionConfig {
        heartbeat: 1,
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 2047, 131_072, 1);
    let id = pair.client.close(pair.now, "bye").unwrap();
    pair.expect_connection_close();
    pair.advance(Duration::from_secs(2));
    assert_eq!(pair.expect_completed(id), Ok(Reply::ConnectionClosed));
    assert_eq!(pair.expect_closed(), None);
}
