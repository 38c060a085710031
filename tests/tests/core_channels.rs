//! Channel numbering and one scenario per method family: what goes on the wire, and the typed
//! reply the broker's answer completes the request with.

use amqp_conformance::peer::Pair;
use amqp_proto::{
    BasicCancel, BasicCancelOk, BasicCancelOptions, BasicConsumeOk, BasicConsumeOptions,
    BasicGetEmpty, BasicGetOk, BasicGetOptions, BasicProperties, BasicQosOk, BasicQosOptions,
    BasicRecoverOk, ChannelCloseOk, ChannelFlowOk, ChannelId, ChannelOpenOk, ConfirmSelectOk,
    ConfirmSelectOptions, ConnectionConfig, ConnectionUpdateSecretOk, ConsumerEnd, DeliveryTag,
    Error, Event, ExchangeBindOk, ExchangeBindOptions, ExchangeDeclareOk, ExchangeDeclareOptions,
    ExchangeDeleteOk, ExchangeDeleteOptions, ExchangeUnbindOk, FieldTable, FieldValue, Method,
    Misuse, QueueBindOk, QueueBindOptions, QueueDeclareOk, QueueDeclareOptions, QueueDeleteOk,
    QueueDeleteOptions, QueuePurgeOk, QueuePurgeOptions, QueueUnbindOk, QueueUnbindOptions, Reply,
    ReplyCode, RequestId, TxCommitOk, TxRollbackOk, TxSelectOk,
};

/// Sends `reply` from the peer on `ch` and returns what request `id` completed with.
#[track_caller]
fn answer(pair: &mut Pair, ch: ChannelId, id: RequestId, reply: impl Into<Method>) -> Reply {
    pair.send_method(ch.0, reply);
    pair.expect_completed(id).expect("request succeeds")
}

#[test]
fn channel_ids_are_allocated_lowest_free_and_reused_after_close_ok() {
    let mut pair = Pair::connected();
    let a = pair.open_channel();
    let b = pair.open_channel();
    let c = pair.open_channel();
    assert_eq!((a.0, b.0, c.0), (1, 2, 3));

    let id = pair.client.close_channel(b).unwrap();
    assert!(matches!(pair.expect_method(2), Method::ChannelClose(_)));
    // Until close-ok the number is still taken.
    let (d, open_d) = pair.client.open_channel().unwrap();
    assert_eq!(d.0, 4);
    assert!(matches!(pair.expect_method(4), Method::ChannelOpen(_)));
    pair.send_method(4, ChannelOpenOk::default());
    assert_eq!(pair.expect_completed(open_d), Ok(Reply::ChannelOpened(d)));

    pair.send_method(2, ChannelCloseOk {});
    assert_eq!(pair.expect_completed(id), Ok(Reply::ChannelClosed));
    // Now 2 is the lowest free number again.
    assert_eq!(pair.open_channel().0, 2);
    assert_eq!(pair.open_channel().0, 5);
}

#[test]
fn channels_up_to_channel_max_then_exhaustion_is_an_error() {
    let mut pair = Pair::connected_with(ConnectionConfig::default(), 3, 131_072, 60);
    for want in 1..=3 {
        assert_eq!(pair.open_channel().0, want);
    }
    assert_eq!(
        pair.client.open_channel(),
        Err(Error::Usage(Misuse::ChannelsExhausted))
    );
    pair.expect_silence();
    // Freeing one makes room again.
    let id = pair.client.close_channel(ChannelId(2)).unwrap();
    assert!(matches!(pair.expect_method(2), Method::ChannelClose(_)));
    pair.send_method(2, ChannelCloseOk {});
    assert_eq!(pair.expect_completed(id), Ok(Reply::ChannelClosed));
    assert_eq!(pair.open_channel().0, 2);
}

#[test]
fn channel_max_zero_means_no_limit() {
    let config = ConnectionConfig {
        channel_max: 0,
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 0, 131_072, 60);
    assert_eq!(pair.client.tuning().channel_max, 0);
    for want in 1..=5 {
        assert_eq!(pair.open_channel().0, want);
    }
}

#[test]
fn commands_on_a_channel_that_is_not_open_are_refused() {
    let mut pair = Pair::connected();
    assert!(matches!(
        pair.client
            .basic_qos(ChannelId(7), 1, BasicQosOptions::default()),
        Err(Error::Usage(Misuse::NoSuchChannel))
    ));
    let (ch, _) = pair.client.open_channel().unwrap();
    // Still opening.
    assert!(matches!(
        pair.client.basic_qos(ch, 1, BasicQosOptions::default()),
        Err(Error::Usage(Misuse::ChannelOpening))
    ));
    assert!(matches!(pair.expect_method(ch.0), Method::ChannelOpen(_)));
    pair.expect_silence();
}

#[test]
fn exchange_declare_delete_bind_unbind() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();

    let args = FieldTable::new().with("alternate-exchange", "ae");
    let options = ExchangeDeclareOptions {
        durable: true,
        auto_delete: true,
        internal: true,
        ..Default::default()
    };
    let id = pair
        .client
        .exchange_declare(
            ch,
            "logs",
            "topic",
            ExchangeDeclareOptions {
                arguments: args.clone(),
                ..options
            },
        )
        .unwrap();
    let Method::ExchangeDeclare(m) = pair.expect_method(ch.0) else {
        panic!("declare")
    };
    assert_eq!((m.exchange.as_str(), m.kind.as_str()), ("logs", "topic"));
    assert!(m.durable && m.auto_delete && m.internal && !m.passive && !m.no_wait);
    assert_eq!(m.arguments, args);
    assert_eq!(
        answer(&mut pair, ch, id, ExchangeDeclareOk {}),
        Reply::ExchangeDeclared
    );

    let id = pair
        .client
        .exchange_bind(ch, "dst", "logs", "a.#", ExchangeBindOptions::default())
        .unwrap();
    let Method::ExchangeBind(m) = pair.expect_method(ch.0) else {
        panic!("bind")
    };
    assert_eq!(
        (
            m.destination.as_str(),
            m.source.as_str(),
            m.routing_key.as_str()
        ),
        ("dst", "logs", "a.#")
    );
    assert_eq!(
        answer(&mut pair, ch, id, ExchangeBindOk {}),
        Reply::ExchangeBound
    );

    let id = pair
        .client
        .exchange_unbind(ch, "dst", "logs", "a.#", ExchangeBindOptions::default())
        .unwrap();
    let Method::ExchangeUnbind(m) = pair.expect_method(ch.0) else {
        panic!("unbind")
    };
    assert_eq!((m.destination.as_str(), m.source.as_str()), ("dst", "logs"));
    assert_eq!(
        answer(&mut pair, ch, id, ExchangeUnbindOk {}),
        Reply::ExchangeUnbound
    );

    let id = pair
        .client
        .exchange_delete(
            ch,
            "logs",
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .unwrap();
    let Method::ExchangeDelete(m) = pair.expect_method(ch.0) else {
        panic!("delete")
    };
    assert_eq!(m.exchange.as_str(), "logs");
    assert!(m.if_unused);
    assert_eq!(
        answer(&mut pair, ch, id, ExchangeDeleteOk {}),
        Reply::ExchangeDeleted
    );
    pair.expect_no_event();
}

#[test]
fn queue_declare_bind_unbind_purge_delete() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();

    let args = FieldTable::new().with("x-queue-type", "quorum");
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let id = pair
        .client
        .queue_declare(
            ch,
            "",
            QueueDeclareOptions {
                arguments: args.clone(),
                ..options
            },
        )
        .unwrap();
    let Method::QueueDeclare(m) = pair.expect_method(ch.0) else {
        panic!("declare")
    };
    assert_eq!(m.queue.as_str(), "");
    assert!(m.durable && !m.exclusive);
    assert_eq!(m.arguments, args);
    let ok = QueueDeclareOk {
        queue: Pair::s("amq.gen-123"),
        message_count: 4,
        consumer_count: 1,
    };
    assert_eq!(
        answer(&mut pair, ch, id, ok),
        Reply::QueueDeclared {
            queue: Pair::s("amq.gen-123"),
            message_count: 4,
            consumer_count: 1
        }
    );

    let id = pair
        .client
        .queue_bind(ch, "amq.gen-123", "logs", "k", QueueBindOptions::default())
        .unwrap();
    let Method::QueueBind(m) = pair.expect_method(ch.0) else {
        panic!("bind")
    };
    assert_eq!(
        (
            m.queue.as_str(),
            m.exchange.as_str(),
            m.routing_key.as_str()
        ),
        ("amq.gen-123", "logs", "k")
    );
    assert_eq!(answer(&mut pair, ch, id, QueueBindOk {}), Reply::QueueBound);

    let id = pair
        .client
        .queue_unbind(
            ch,
            "amq.gen-123",
            "logs",
            "k",
            QueueUnbindOptions::default(),
        )
        .unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::QueueUnbind(_)));
    assert_eq!(
        answer(&mut pair, ch, id, QueueUnbindOk {}),
        Reply::QueueUnbound
    );

    let id = pair
        .client
        .queue_purge(ch, "amq.gen-123", QueuePurgeOptions::default())
        .unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::QueuePurge(_)));
    assert_eq!(
        answer(&mut pair, ch, id, QueuePurgeOk { message_count: 9 }),
        Reply::QueuePurged { message_count: 9 }
    );

    let options = QueueDeleteOptions {
        if_empty: true,
        ..Default::default()
    };
    let id = pair
        .client
        .queue_delete(ch, "amq.gen-123", options)
        .unwrap();
    let Method::QueueDelete(m) = pair.expect_method(ch.0) else {
        panic!("delete")
    };
    assert!(m.if_empty && !m.if_unused);
    assert_eq!(
        answer(&mut pair, ch, id, QueueDeleteOk { message_count: 2 }),
        Reply::QueueDeleted { message_count: 2 }
    );
}

#[test]
fn qos_recover_and_recover_async() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let id = pair
        .client
        .basic_qos(
            ch,
            50,
            BasicQosOptions {
                global: true,
                ..Default::default()
            },
        )
        .unwrap();
    let Method::BasicQos(m) = pair.expect_method(ch.0) else {
        panic!("qos")
    };
    assert_eq!((m.prefetch_count, m.prefetch_size, m.global), (50, 0, true));
    assert_eq!(answer(&mut pair, ch, id, BasicQosOk {}), Reply::QosSet);

    let id = pair.client.basic_recover(ch, true).unwrap();
    let Method::BasicRecover(m) = pair.expect_method(ch.0) else {
        panic!("recover")
    };
    assert!(m.requeue);
    assert_eq!(
        answer(&mut pair, ch, id, BasicRecoverOk {}),
        Reply::Recovered
    );

    pair.client.basic_recover_async(ch, false).unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::BasicRecoverAsync(m) if !m.requeue));
    pair.expect_no_event();
}

#[test]
fn consume_then_client_cancel() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    // A broker-chosen tag.
    let id = pair
        .client
        .basic_consume(
            ch,
            "jobs",
            "",
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..Default::default()
            },
        )
        .unwrap();
    let Method::BasicConsume(m) = pair.expect_method(ch.0) else {
        panic!("consume")
    };
    assert_eq!((m.queue.as_str(), m.consumer_tag.as_str()), ("jobs", ""));
    assert!(m.no_ack && m.exclusive && !m.no_wait);
    let ok = amqp_proto::BasicConsumeOk {
        consumer_tag: Pair::s("amq.ctag-1"),
    };
    assert_eq!(
        answer(&mut pair, ch, id, ok),
        Reply::Consuming {
            consumer_tag: Pair::s("amq.ctag-1")
        }
    );

    pair.deliver(ch.0, "amq.ctag-1", 1, b"x");
    assert_eq!(pair.expect_delivery().consumer_tag.as_str(), "amq.ctag-1");

    let id = pair
        .client
        .basic_cancel(ch, "amq.ctag-1", BasicCancelOptions::default())
        .unwrap();
    let Method::BasicCancel(m) = pair.expect_method(ch.0) else {
        panic!("cancel")
    };
    assert_eq!(m.consumer_tag.as_str(), "amq.ctag-1");
    // A delivery already in flight still arrives before cancel-ok.
    pair.deliver(ch.0, "amq.ctag-1", 2, b"y");
    assert_eq!(pair.expect_delivery().delivery_tag, DeliveryTag(2));
    pair.send_method(
        ch.0,
        BasicCancelOk {
            consumer_tag: Pair::s("amq.ctag-1"),
        },
    );
    assert_eq!(
        pair.expect_event(),
        Event::ConsumerEnded {
            channel: ch,
            consumer_tag: Pair::s("amq.ctag-1"),
            reason: ConsumerEnd::Cancelled
        }
    );
    assert_eq!(
        pair.expect_completed(id),
        Ok(Reply::Cancelled {
            consumer_tag: Pair::s("amq.ctag-1")
        })
    );
}

#[test]
fn server_cancel_ends_the_consumer() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let tag = pair.start_consumer(ch, "jobs", "c1");
    // RabbitMQ sends it without waiting for an answer.
    pair.send_method(
        ch.0,
        BasicCancel {
            consumer_tag: tag.clone(),
            no_wait: true,
        },
    );
    assert_eq!(
        pair.expect_event(),
        Event::ConsumerEnded {
            channel: ch,
            consumer_tag: tag.clone(),
            reason: ConsumerEnd::CancelledByServer
        }
    );
    pair.expect_silence();
    // A server cancel that wants an answer gets cancel-ok.
    let tag2 = pair.start_consumer(ch, "jobs", "c2");
    pair.send_method(
        ch.0,
        BasicCancel {
            consumer_tag: tag2.clone(),
            no_wait: false,
        },
    );
    let Method::BasicCancelOk(ok) = pair.expect_method(ch.0) else {
        panic!("cancel-ok")
    };
    assert_eq!(ok.consumer_tag, tag2);
    assert!(matches!(
        pair.expect_event(),
        Event::ConsumerEnded {
            reason: ConsumerEnd::CancelledByServer,
            ..
        }
    ));
    assert!(pair.client.topology().consumers.is_empty());
}

#[test]
fn get_ok_and_get_empty() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let id = pair
        .client
        .basic_get(ch, "jobs", BasicGetOptions { no_ack: true })
        .unwrap();
    let Method::BasicGet(m) = pair.expect_method(ch.0) else {
        panic!("get")
    };
    assert!(m.no_ack && m.queue.as_str() == "jobs");
    let get_ok = BasicGetOk {
        delivery_tag: 5,
        redelivered: true,
        exchange: Pair::s("ex"),
        routing_key: Pair::s("rk"),
        message_count: 3,
    };
    let props = BasicProperties::default().with_content_type("text/plain");
    pair.send_content(ch.0, get_ok, &props, b"payload");
    let Ok(Reply::Get(Some(msg))) = pair.expect_completed(id) else {
        panic!("get-ok")
    };
    assert_eq!(msg.message_count, 3);
    assert_eq!(msg.delivery.delivery_tag, DeliveryTag(5));
    assert!(msg.delivery.redelivered);
    assert_eq!(msg.delivery.exchange.as_str(), "ex");
    assert_eq!(msg.delivery.routing_key.as_str(), "rk");
    assert_eq!(msg.delivery.properties, props);
    assert_eq!(&msg.delivery.body[..], b"payload");
    assert_eq!(msg.delivery.channel, ch);
    assert!(msg.delivery.consumer_tag.is_empty());

    let id = pair
        .client
        .basic_get(ch, "jobs", BasicGetOptions::default())
        .unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::BasicGet(_)));
    assert_eq!(
        answer(&mut pair, ch, id, BasicGetEmpty::default()),
        Reply::Get(None)
    );
}

#[test]
fn get_ok_completes_only_when_its_body_has_arrived() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let id = pair
        .client
        .basic_get(ch, "jobs", BasicGetOptions::default())
        .unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::BasicGet(_)));
    pair.send_method(
        ch.0,
        BasicGetOk {
            delivery_tag: 1,
            ..Default::default()
        },
    );
    pair.expect_no_event();
    pair.send_frame(amqp_proto::Frame::Header(
        ch.0,
        amqp_proto::ContentHeader {
            class_id: 60,
            body_size: 4,
            properties: BasicProperties::default(),
        },
    ));
    pair.expect_no_event();
    pair.send_frame(amqp_proto::Frame::Body(
        ch.0,
        bytes::Bytes::from_static(b"ab"),
    ));
    pair.expect_no_event();
    pair.send_frame(amqp_proto::Frame::Body(
        ch.0,
        bytes::Bytes::from_static(b"cd"),
    ));
    let Ok(Reply::Get(Some(msg))) = pair.expect_completed(id) else {
        panic!("get-ok")
    };
    assert_eq!(&msg.delivery.body[..], b"abcd");
}

#[test]
fn tx_select_commit_rollback() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let id = pair.client.tx_select(ch).unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::TxSelect(_)));
    assert_eq!(answer(&mut pair, ch, id, TxSelectOk {}), Reply::TxSelected);
    pair.publish(ch, b"in a tx", false);
    let id = pair.client.tx_commit(ch).unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::TxCommit(_)));
    assert_eq!(answer(&mut pair, ch, id, TxCommitOk {}), Reply::TxCommitted);
    let id = pair.client.tx_rollback(ch).unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::TxRollback(_)));
    assert_eq!(
        answer(&mut pair, ch, id, TxRollbackOk {}),
        Reply::TxRolledBack
    );
}

#[test]
fn confirm_select() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let id = pair
        .client
        .confirm_select(ch, ConfirmSelectOptions::default())
        .unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::ConfirmSelect(m) if !m.nowait));
    assert_eq!(
        answer(&mut pair, ch, id, ConfirmSelectOk {}),
        Reply::ConfirmSelected
    );
    assert_eq!(pair.publish(ch, b"m", false), Some(DeliveryTag(1)));
}

#[test]
fn client_channel_flow_is_answered_by_flow_ok() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let id = pair.client.channel_flow(ch, false).unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::ChannelFlow(m) if !m.active));
    assert_eq!(
        answer(&mut pair, ch, id, ChannelFlowOk { active: false }),
        Reply::Flow { active: false }
    );
    let id = pair.client.channel_flow(ch, true).unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::ChannelFlow(m) if m.active));
    assert_eq!(
        answer(&mut pair, ch, id, ChannelFlowOk { active: true }),
        Reply::Flow { active: true }
    );
    // Our own flow request does not stop our publishing.
    pair.publish(ch, b"still allowed", false);
}

#[test]
fn update_secret() {
    let mut pair = Pair::connected();
    let id = pair.client.update_secret(b"new-token", "refresh").unwrap();
    let Method::ConnectionUpdateSecret(m) = pair.expect_method(0) else {
        panic!("update-secret")
    };
    assert_eq!(&m.new_secret[..], b"new-token");
    assert_eq!(m.reason.as_str(), "refresh");
    pair.send_method(0, ConnectionUpdateSecretOk {});
    assert_eq!(pair.expect_completed(id), Ok(Reply::SecretUpdated));
}

#[test]
fn update_secret_ok_without_a_request_is_505() {
    let mut pair = Pair::connected();
    pair.send_method(0, ConnectionUpdateSecretOk {});
    let Method::ConnectionClose(close) = pair.expect_method(0) else {
        panic!("close")
    };
    assert_eq!(close.reply_code, ReplyCode::UNEXPECTED_FRAME.0);
}

#[test]
fn ack_nack_reject_go_out_as_sent() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    pair.client.basic_ack(ch, DeliveryTag(3), true).unwrap();
    assert!(
        matches!(pair.expect_method(ch.0), Method::BasicAck(m) if m.delivery_tag == 3 && m.multiple)
    );
    pair.client
        .basic_nack(ch, DeliveryTag(4), false, true)
        .unwrap();
    assert!(
        matches!(pair.expect_method(ch.0), Method::BasicNack(m) if m.delivery_tag == 4 && !m.multiple && m.requeue)
    );
    pair.client.basic_reject(ch, DeliveryTag(5), false).unwrap();
    assert!(
        matches!(pair.expect_method(ch.0), Method::BasicReject(m) if m.delivery_tag == 5 && !m.requeue)
    );
    pair.expect_no_event();
}

#[test]
fn nowait_variants_complete_at_once() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let nowait_declare = ExchangeDeclareOptions {
        nowait: true,
        ..Default::default()
    };
    let ids = [
        pair.client
            .exchange_declare(ch, "e", "direct", nowait_declare)
            .unwrap(),
        pair.client
            .exchange_bind(
                ch,
                "d",
                "e",
                "k",
                ExchangeBindOptions {
                    nowait: true,
                    ..Default::default()
                },
            )
            .unwrap(),
        pair.client
            .exchange_unbind(
                ch,
                "d",
                "e",
                "k",
                ExchangeBindOptions {
                    nowait: true,
                    ..Default::default()
                },
            )
            .unwrap(),
        pair.client
            .exchange_delete(
                ch,
                "e",
                ExchangeDeleteOptions {
                    nowait: true,
                    ..Default::default()
                },
            )
            .unwrap(),
        pair.client
            .queue_declare(
                ch,
                "q",
                QueueDeclareOptions {
                    nowait: true,
                    ..Default::default()
                },
            )
            .unwrap(),
        pair.client
            .queue_bind(
                ch,
                "q",
                "e",
                "k",
                QueueBindOptions {
                    nowait: true,
                    ..Default::default()
                },
            )
            .unwrap(),
        pair.client
            .queue_purge(ch, "q", QueuePurgeOptions { nowait: true })
            .unwrap(),
        pair.client
            .queue_delete(
                ch,
                "q",
                QueueDeleteOptions {
                    nowait: true,
                    ..Default::default()
                },
            )
            .unwrap(),
        pair.client
            .confirm_select(ch, ConfirmSelectOptions { nowait: true })
            .unwrap(),
    ];
    for id in ids {
        assert_eq!(pair.expect_completed(id), Ok(Reply::Sent));
    }
    let mut sent = Vec::new();
    while let Some(amqp_proto::Frame::Method(_, m)) = pair.next_frame() {
        sent.push(m);
    }
    assert_eq!(sent.len(), 9);
    let nowait = |m: &Method| match m {
        Method::ExchangeDeclare(m) => m.no_wait,
        Method::ExchangeBind(m) => m.no_wait,
        Method::ExchangeUnbind(m) => m.no_wait,
        Method::ExchangeDelete(m) => m.no_wait,
        Method::QueueDeclare(m) => m.no_wait,
        Method::QueueBind(m) => m.no_wait,
        Method::QueuePurge(m) => m.no_wait,
        Method::QueueDelete(m) => m.no_wait,
        Method::ConfirmSelect(m) => m.nowait,
        _ => false,
    };
    assert!(sent.iter().all(nowait), "{sent:?}");

    // Consume/cancel no-wait: the consumer is live at once and ends at once.
    let id = pair
        .client
        .basic_consume(
            ch,
            "q",
            "c1",
            BasicConsumeOptions {
                nowait: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        pair.expect_completed(id),
        Ok(Reply::Consuming {
            consumer_tag: Pair::s("c1")
        })
    );
    assert!(matches!(pair.expect_method(ch.0), Method::BasicConsume(m) if m.no_wait));
    pair.deliver(ch.0, "c1", 1, b"hi");
    assert_eq!(&pair.expect_delivery().body[..], b"hi");
    let id = pair
        .client
        .basic_cancel(ch, "c1", BasicCancelOptions { nowait: true })
        .unwrap();
    assert_eq!(
        pair.expect_event(),
        Event::ConsumerEnded {
            channel: ch,
            consumer_tag: Pair::s("c1"),
            reason: ConsumerEnd::Cancelled
        }
    );
    assert_eq!(pair.expect_completed(id), Ok(Reply::Sent));
    assert!(matches!(pair.expect_method(ch.0), Method::BasicCancel(m) if m.no_wait));

    // Nothing is left pending: a stray reply is a protocol error, not a completion.
    pair.send_method(ch.0, QueueDeclareOk::default());
    let Method::ConnectionClose(close) = pair.expect_method(0) else {
        panic!("close")
    };
    assert_eq!(close.reply_code, ReplyCode::UNEXPECTED_FRAME.0);
}

#[test]
fn nowait_consume_needs_a_tag() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let options = BasicConsumeOptions {
        nowait: true,
        ..Default::default()
    };
    assert!(matches!(
        pair.client.basic_consume(ch, "q", "", options),
        Err(Error::Usage(Misuse::NowaitConsumeWithoutTag))
    ));
    pair.expect_silence();
}

#[test]
fn a_consumer_tag_in_use_on_the_channel_is_refused() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    pair.start_consumer(ch, "q", "c1");
    let options = BasicConsumeOptions::default;
    assert!(matches!(
        pair.client.basic_consume(ch, "q2", "c1", options()),
        Err(Error::Usage(Misuse::ConsumerTagInUse))
    ));
    // Also while the first consume with that tag still waits for its consume-ok.
    pair.client.basic_consume(ch, "q", "c2", options()).unwrap();
    assert!(matches!(
        pair.client.basic_consume(ch, "q", "c2", options()),
        Err(Error::Usage(Misuse::ConsumerTagInUse))
    ));
    assert!(matches!(pair.expect_method(ch.0), Method::BasicConsume(_)));
    pair.expect_silence();
    // The same tag on another channel is a different consumer.
    let other = pair.open_channel();
    pair.start_consumer(other, "q", "c1");
    // An empty tag leaves the choice to the broker, every time.
    pair.client
        .basic_consume(other, "q", "", options())
        .unwrap();
    pair.client
        .basic_consume(other, "q", "", options())
        .unwrap();
}

/// Asks for a consumer tagged `asked` on `ch`, answers with a consume-ok naming `answered`, and
/// expects the client to close the connection with 503 and the consume to fail with it.
#[track_caller]
fn consume_ok_is_503(pair: &mut Pair, ch: ChannelId, asked: &str, answered: &str) {
    let id = pair
        .client
        .basic_consume(ch, "q", asked, BasicConsumeOptions::default())
        .unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::BasicConsume(_)));
    pair.send_method(
        ch.0,
        BasicConsumeOk {
            consumer_tag: Pair::s(answered),
        },
    );
    let failed = pair.expect_violation(ReplyCode::COMMAND_INVALID);
    assert!(
        failed
            .iter()
            .any(|e| matches!(e, Event::Completed { id: got, result: Err(_) } if *got == id)),
        "the consume the bad consume-ok answered never completed: {failed:?}"
    );
}

#[test]
fn a_consume_ok_for_a_tag_in_use_is_503() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    pair.start_consumer(ch, "q", "c1");
    consume_ok_is_503(&mut pair, ch, "", "c1");
}

#[test]
fn a_consume_ok_naming_another_tag_than_asked_is_503() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    consume_ok_is_503(&mut pair, ch, "mine", "theirs");
}

#[test]
fn several_outstanding_requests_on_one_channel_are_matched_in_order() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let a = pair
        .client
        .queue_declare(ch, "a", QueueDeclareOptions::default())
        .unwrap();
    let b = pair
        .client
        .queue_declare(ch, "b", QueueDeclareOptions::default())
        .unwrap();
    let c = pair
        .client
        .queue_purge(ch, "a", QueuePurgeOptions::default())
        .unwrap();
    let d = pair
        .client
        .basic_qos(ch, 10, BasicQosOptions::default())
        .unwrap();
    for _ in 0..4 {
        pair.next_frame().expect("request sent");
    }
    pair.send_method(
        ch.0,
        QueueDeclareOk {
            queue: Pair::s("a"),
            message_count: 1,
            consumer_count: 0,
        },
    );
    pair.send_method(
        ch.0,
        QueueDeclareOk {
            queue: Pair::s("b"),
            message_count: 2,
            consumer_count: 0,
        },
    );
    pair.send_method(ch.0, QueuePurgeOk { message_count: 1 });
    pair.send_method(ch.0, BasicQosOk {});
    assert_eq!(
        pair.expect_completed(a),
        Ok(Reply::QueueDeclared {
            queue: Pair::s("a"),
            message_count: 1,
            consumer_count: 0
        })
    );
    assert_eq!(
        pair.expect_completed(b),
        Ok(Reply::QueueDeclared {
            queue: Pair::s("b"),
            message_count: 2,
            consumer_count: 0
        })
    );
    assert_eq!(
        pair.expect_completed(c),
        Ok(Reply::QueuePurged { message_count: 1 })
    );
    assert_eq!(pair.expect_completed(d), Ok(Reply::QosSet));
}

#[test]
fn requests_on_different_channels_are_matched_per_channel() {
    let mut pair = Pair::connected();
    let one = pair.open_channel();
    let two = pair.open_channel();
    let a = pair
        .client
        .basic_qos(one, 1, BasicQosOptions::default())
        .unwrap();
    let b = pair.client.tx_select(two).unwrap();
    pair.next_frame();
    pair.next_frame();
    // Answered in the opposite order.
    pair.send_method(two.0, TxSelectOk {});
    pair.send_method(one.0, BasicQosOk {});
    assert_eq!(pair.expect_completed(b), Ok(Reply::TxSelected));
    assert_eq!(pair.expect_completed(a), Ok(Reply::QosSet));
}

#[test]
fn a_reply_that_does_not_answer_the_oldest_request_is_505() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let id = pair
        .client
        .basic_qos(ch, 1, BasicQosOptions::default())
        .unwrap();
    pair.next_frame();
    pair.send_method(ch.0, TxSelectOk {});
    let Method::ConnectionClose(close) = pair.expect_method(0) else {
        panic!("close")
    };
    assert_eq!(close.reply_code, ReplyCode::UNEXPECTED_FRAME.0);
    match pair.expect_completed(id) {
        Err(Error::Protocol { code, .. }) => assert_eq!(code, ReplyCode::UNEXPECTED_FRAME),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn channel_open_refused_by_the_broker_fails_the_open() {
    let mut pair = Pair::connected();
    let (ch, id) = pair.client.open_channel().unwrap();
    pair.next_frame();
    pair.send_method(
        ch.0,
        amqp_proto::ChannelClose {
            reply_code: 406,
            reply_text: Pair::s("no"),
            class_id: 20,
            method_id: 10,
        },
    );
    assert!(matches!(
        pair.expect_method(ch.0),
        Method::ChannelCloseOk(_)
    ));
    match pair.expect_completed(id) {
        Err(Error::ChannelClosed { channel, reason }) => {
            assert_eq!(channel, ch);
            assert_eq!(reason.code, ReplyCode::PRECONDITION_FAILED);
        }
        other => panic!("expected ChannelClosed, got {other:?}"),
    }
    assert!(matches!(pair.expect_event(), Event::ChannelClosed { .. }));
    // The number is free again.
    assert_eq!(pair.open_channel(), ch);
}

#[test]
fn field_table_arguments_survive_the_round_trip() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let args = FieldTable::new()
        .with("x-message-ttl", 60_000i32)
        .with("x-dead-letter-exchange", "dlx")
        .with("nested", FieldTable::new().with("flag", true));
    pair.client
        .queue_declare(
            ch,
            "q",
            QueueDeclareOptions {
                arguments: args.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    let Method::QueueDeclare(m) = pair.expect_method(ch.0) else {
        panic!("declare")
    };
    assert_eq!(m.arguments, args);
    assert_eq!(
        m.arguments.get("x-message-ttl"),
        Some(&FieldValue::I32(60_000))
    );
}

#[test]
fn a_method_larger_than_frame_max_is_refused_and_nothing_is_sent() {
    let config = ConnectionConfig {
        frame_max: 4096,
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 2047, 4096, 60);
    let ch = pair.open_channel();
    let big = FieldTable::new().with("x-big", "v".repeat(5000).as_str());
    let err = pair
        .client
        .queue_declare(
            ch,
            "q",
            QueueDeclareOptions {
                arguments: big.clone(),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Encode(amqp_proto::CodecError::FrameTooLarge { max: 4096, .. })
        ),
        "{err:?}"
    );
    let err = pair
        .client
        .update_secret(&[b'x'; 5000], "too big")
        .unwrap_err();
    assert!(matches!(err, Error::Encode(_)), "{err:?}");
    pair.expect_silence();
    pair.expect_no_event();
    // Nothing was left pending: the next request gets the next answer.
    let small = FieldTable::new().with("x-big", "v".repeat(3000).as_str());
    let id = pair
        .client
        .queue_declare(
            ch,
            "q",
            QueueDeclareOptions {
                arguments: small,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(pair.expect_method(ch.0), Method::QueueDeclare(_)));
    pair.send_method(
        ch.0,
        QueueDeclareOk {
            queue: Pair::s("q"),
            message_count: 0,
            consumer_count: 0,
        },
    );
    assert!(matches!(
        pair.expect_completed(id),
        Ok(Reply::QueueDeclared { .. })
    ));
}
