//! Publisher confirms: numbering, acks and nacks in every shape, returns attached to their
//! publish, and `Lost` (never a made-up nack) when the channel or connection goes away.

use std::time::Duration;

use amqp_conformance::peer::Pair;
use amqp_proto::{
    BasicAck, BasicNack, BasicProperties, BasicReturn, ChannelClose, ChannelId,
    ConfirmSelectOptions, Confirmation, ConnectionClose, DeliveryTag, Error, Event, Initiator,
    ReplyCode, ReturnedMessage,
};

fn confirming() -> (Pair, ChannelId) {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    pair.select_confirms(ch);
    (pair, ch)
}

fn ack(tag: u64, multiple: bool) -> BasicAck {
    BasicAck {
        delivery_tag: tag,
        multiple,
    }
}

fn nack(tag: u64, multiple: bool) -> BasicNack {
    BasicNack {
        delivery_tag: tag,
        multiple,
        requeue: false,
    }
}

/// The `(tag, outcome)` of every `Confirmed` event emitted so far, in order; fails on any
/// other event.
#[track_caller]
fn confirmations(pair: &mut Pair) -> Vec<(u64, Confirmation)> {
    pair.drain_events()
        .into_iter()
        .map(|e| match e {
            Event::Confirmed { tag, outcome, .. } => (tag.0, outcome),
            other => panic!("expected only confirms, got {other:?}"),
        })
        .collect()
}

fn acked(tags: &[u64]) -> Vec<(u64, Confirmation)> {
    tags.iter().map(|t| (*t, Confirmation::Ack(None))).collect()
}

fn send_return(pair: &mut Pair, ch: ChannelId, body: &[u8]) {
    let ret = BasicReturn {
        reply_code: 312,
        reply_text: Pair::s("NO_ROUTE"),
        exchange: Pair::s(""),
        routing_key: Pair::s("q"),
    };
    pair.send_content(ch.0, ret, &BasicProperties::default(), body);
}

#[test]
fn tags_start_at_one_and_count_per_channel() {
    let (mut pair, ch) = confirming();
    for want in 1..=3 {
        assert_eq!(pair.publish(ch, b"m", false), Some(DeliveryTag(want)));
    }
    let other = pair.open_channel();
    pair.select_confirms(other);
    assert_eq!(pair.publish(other, b"m", false), Some(DeliveryTag(1)));
    assert_eq!(pair.publish(ch, b"m", false), Some(DeliveryTag(4)));
    // Without confirm mode there is no tag.
    let plain = pair.open_channel();
    assert_eq!(pair.publish(plain, b"m", false), None);
}

#[test]
fn publishes_before_select_ok_are_numbered_too() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let id = pair
        .client
        .confirm_select(ch, ConfirmSelectOptions::default())
        .unwrap();
    pair.next_frame();
    assert_eq!(pair.publish(ch, b"m", false), Some(DeliveryTag(1)));
    pair.send_method(ch.0, amqp_proto::ConfirmSelectOk {});
    assert_eq!(
        pair.expect_completed(id),
        Ok(amqp_proto::Reply::ConfirmSelected)
    );
    pair.send_method(ch.0, ack(1, false));
    assert_eq!(confirmations(&mut pair), acked(&[1]));
}

#[test]
fn single_ack() {
    let (mut pair, ch) = confirming();
    for _ in 0..3 {
        pair.publish(ch, b"m", false);
    }
    pair.send_method(ch.0, ack(2, false));
    assert_eq!(
        pair.expect_event(),
        Event::Confirmed {
            channel: ch,
            tag: DeliveryTag(2),
            outcome: Confirmation::Ack(None)
        }
    );
    pair.expect_no_event();
}

#[test]
fn multiple_ack_covers_every_outstanding_tag_up_to_it() {
    let (mut pair, ch) = confirming();
    for _ in 0..5 {
        pair.publish(ch, b"m", false);
    }
    pair.send_method(ch.0, ack(2, false));
    pair.send_method(ch.0, ack(4, true));
    assert_eq!(confirmations(&mut pair), acked(&[2, 1, 3, 4]));
    pair.send_method(ch.0, ack(5, true));
    assert_eq!(confirmations(&mut pair), acked(&[5]));
}

#[test]
fn out_of_order_acks() {
    let (mut pair, ch) = confirming();
    for _ in 0..3 {
        pair.publish(ch, b"m", false);
    }
    pair.send_method(ch.0, ack(3, false));
    pair.send_method(ch.0, ack(1, false));
    pair.send_method(ch.0, nack(2, false));
    assert_eq!(
        confirmations(&mut pair),
        vec![
            (3, Confirmation::Ack(None)),
            (1, Confirmation::Ack(None)),
            (2, Confirmation::Nack(None)),
        ]
    );
}

#[test]
fn nack_single_and_multiple() {
    let (mut pair, ch) = confirming();
    for _ in 0..4 {
        pair.publish(ch, b"m", false);
    }
    pair.send_method(ch.0, nack(1, false));
    pair.send_method(ch.0, nack(3, true));
    pair.send_method(ch.0, ack(4, true));
    assert_eq!(
        confirmations(&mut pair),
        vec![
            (1, Confirmation::Nack(None)),
            (2, Confirmation::Nack(None)),
            (3, Confirmation::Nack(None)),
            (4, Confirmation::Ack(None)),
        ]
    );
}

#[test]
fn multiple_with_tag_zero_covers_everything_outstanding() {
    // The spec: "If the multiple field is 1, and the delivery tag is zero, this indicates
    // acknowledgement of all outstanding messages."
    let (mut pair, ch) = confirming();
    for _ in 0..3 {
        pair.publish(ch, b"m", false);
    }
    pair.send_method(ch.0, ack(0, true));
    assert_eq!(confirmations(&mut pair), acked(&[1, 2, 3]));
}

#[test]
fn a_return_before_the_ack_is_attached_to_that_publish() {
    let (mut pair, ch) = confirming();
    pair.publish(ch, b"routed", false);
    pair.publish(ch, b"unroutable", true);
    pair.publish(ch, b"routed too", false);
    send_return(&mut pair, ch, b"unroutable");
    pair.expect_no_event();
    pair.send_method(ch.0, ack(1, false));
    pair.send_method(ch.0, ack(2, false));
    pair.send_method(ch.0, ack(3, false));
    let got = confirmations(&mut pair);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], (1, Confirmation::Ack(None)));
    let (2, Confirmation::Ack(Some(returned))) = &got[1] else {
        panic!("expected the return on tag 2: {got:?}");
    };
    let ReturnedMessage {
        channel,
        reply_code,
        reply_text,
        body,
        ..
    } = returned.as_ref();
    assert_eq!(
        (*channel, *reply_code, reply_text.as_str()),
        (ch, ReplyCode::NO_ROUTE, "NO_ROUTE")
    );
    assert_eq!(&body[..], b"unroutable");
    assert_eq!(got[2], (3, Confirmation::Ack(None)));
}

#[test]
fn a_return_is_attached_under_a_multiple_ack_to_the_mandatory_publish() {
    let (mut pair, ch) = confirming();
    pair.publish(ch, b"a", false);
    pair.publish(ch, b"b", true);
    pair.publish(ch, b"c", false);
    send_return(&mut pair, ch, b"b");
    pair.send_method(ch.0, ack(3, true));
    let got = confirmations(&mut pair);
    let tags: Vec<u64> = got.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, [1, 2, 3]);
    assert!(matches!(&got[0].1, Confirmation::Ack(None)));
    assert!(matches!(&got[1].1, Confirmation::Ack(Some(r)) if &r.body[..] == b"b"));
    assert!(matches!(&got[2].1, Confirmation::Ack(None)));
}

#[test]
fn a_return_then_nack_is_attached_to_the_nack() {
    let (mut pair, ch) = confirming();
    pair.publish(ch, b"x", true);
    send_return(&mut pair, ch, b"x");
    pair.send_method(ch.0, nack(1, false));
    let got = confirmations(&mut pair);
    assert!(
        matches!(&got[..], [(1, Confirmation::Nack(Some(r)))] if &r.body[..] == b"x"),
        "{got:?}"
    );
}

#[test]
fn returns_outside_confirm_mode_are_events() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    pair.publish(ch, b"lost", true);
    send_return(&mut pair, ch, b"lost");
    match pair.expect_event() {
        Event::Returned(r) => {
            assert_eq!(&r.body[..], b"lost");
            assert_eq!(r.reply_code, ReplyCode::NO_ROUTE);
        }
        other => panic!("expected Returned, got {other:?}"),
    }
}

#[test]
fn ack_for_an_unknown_tag_is_a_warning() {
    let (mut pair, ch) = confirming();
    pair.publish(ch, b"m", false);
    pair.send_method(ch.0, ack(7, false));
    assert!(matches!(
        pair.expect_event(),
        Event::Warning(Error::Protocol { .. })
    ));
    // Acking the same tag twice: the second is unknown.
    pair.send_method(ch.0, ack(1, false));
    assert_eq!(confirmations(&mut pair), acked(&[1]));
    pair.send_method(ch.0, ack(1, false));
    assert!(matches!(pair.expect_event(), Event::Warning(_)));
    assert!(pair.client.is_open());
    pair.expect_silence();
}

#[test]
fn ack_outside_confirm_mode_is_a_warning() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    pair.send_method(ch.0, ack(1, false));
    assert!(matches!(pair.expect_event(), Event::Warning(_)));
    assert!(pair.client.is_open());
}

/// Publishes three messages, confirms the second, and returns the channel.
fn three_with_one_confirmed() -> (Pair, ChannelId) {
    let (mut pair, ch) = confirming();
    for _ in 0..3 {
        pair.publish(ch, b"m", false);
    }
    pair.send_method(ch.0, ack(2, false));
    assert_eq!(confirmations(&mut pair), acked(&[2]));
    (pair, ch)
}

/// The `Lost` outcomes among `events`, which must be exactly tags 1 and 3 with `error`;
/// no nack may appear.
#[track_caller]
fn assert_lost(events: &[Event], error: &Error) {
    let lost: Vec<(u64, &Error)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Confirmed {
                tag,
                outcome: Confirmation::Lost(err),
                ..
            } => Some((tag.0, err)),
            Event::Confirmed { outcome, .. } => panic!("unexpected outcome {outcome:?}"),
            _ => None,
        })
        .collect();
    assert_eq!(lost, vec![(1, error), (3, error)], "{events:?}");
}

#[test]
fn client_channel_close_loses_outstanding_publishes() {
    let (mut pair, ch) = three_with_one_confirmed();
    pair.client.close_channel(ch).unwrap();
    let events = pair.drain_events();
    let Some(Event::Confirmed {
        outcome: Confirmation::Lost(err),
        ..
    }) = events.first()
    else {
        panic!("{events:?}");
    };
    let Error::ChannelClosed { channel, reason } = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (*channel, reason.initiator, reason.code),
        (ch, Initiator::Client, ReplyCode::REPLY_SUCCESS)
    );
    assert_lost(&events, err);
}

#[test]
fn server_channel_close_loses_outstanding_publishes_with_its_reason() {
    let (mut pair, ch) = three_with_one_confirmed();
    pair.send_method(
        ch.0,
        ChannelClose {
            reply_code: 404,
            reply_text: Pair::s("NOT_FOUND - no exchange 'x'"),
            class_id: 60,
            method_id: 40,
        },
    );
    let events = pair.drain_events();
    let Some(Event::ChannelClosed { error, .. }) = events.last() else {
        panic!("{events:?}")
    };
    let Error::ChannelClosed { reason, .. } = error else {
        panic!("{error:?}")
    };
    assert_eq!(
        (reason.code, reason.initiator),
        (ReplyCode::NOT_FOUND, Initiator::Server)
    );
    assert_lost(&events, error);
}

#[test]
fn connection_close_loses_outstanding_publishes() {
    let (mut pair, _) = three_with_one_confirmed();
    pair.send_method(
        0,
        ConnectionClose {
            reply_code: 320,
            reply_text: Pair::s("CONNECTION_FORCED"),
            class_id: 0,
            method_id: 0,
        },
    );
    let (events, error) = pair.events_until_closed();
    let error = error.expect("an error");
    assert!(matches!(&error, Error::ConnectionClosed(r) if r.code == ReplyCode::CONNECTION_FORCED));
    assert_lost(&events, &error);
}

#[test]
fn client_connection_close_loses_outstanding_publishes() {
    let (mut pair, _) = three_with_one_confirmed();
    pair.client.close(pair.now, "bye").unwrap();
    let events = pair.drain_events();
    let Some(Event::Confirmed {
        outcome: Confirmation::Lost(err),
        ..
    }) = events.first()
    else {
        panic!("{events:?}");
    };
    assert!(
        matches!(err, Error::ConnectionClosed(r) if r.initiator == Initiator::Client && r.text.as_str() == "bye")
    );
    assert_lost(&events, err);
}

#[test]
fn heartbeat_death_loses_outstanding_publishes() {
    let (mut pair, _) = three_with_one_confirmed();
    pair.advance(Duration::from_secs(120));
    let (events, error) = pair.events_until_closed();
    let error = error.expect("an error");
    assert_eq!(error, Error::HeartbeatTimeout(120));
    assert_lost(&events, &error);
}

#[test]
fn a_held_return_is_handed_over_when_its_confirm_never_comes() {
    let (mut pair, ch) = confirming();
    pair.publish(ch, b"x", true);
    send_return(&mut pair, ch, b"x");
    pair.client.handle_eof(pair.now);
    let (events, error) = pair.events_until_closed();
    assert_eq!(error, Some(Error::UnexpectedEof { mid_frame: false }));
    assert!(
        matches!(&events[0], Event::Returned(r) if &r.body[..] == b"x"),
        "{events:?}"
    );
    assert!(matches!(
        &events[1],
        Event::Confirmed {
            tag: DeliveryTag(1),
            outcome: Confirmation::Lost(_),
            ..
        }
    ));
    assert_eq!(events.len(), 2);
}
