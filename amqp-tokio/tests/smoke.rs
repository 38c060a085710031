//! Smoke tests against the RabbitMQ broker at 127.0.0.1:5672 (guest/guest), or `$AMQP_URI`.
//! They fail, not skip, when no broker answers.

use std::time::{Duration, Instant};

use amqp_tokio::{
    BasicConsumeOptions, BasicGetOptions, BasicProperties, BasicPublishOptions,
    ConfirmSelectOptions, Confirmation, Connect, ConnectError, ConnectOptions, Connection,
    ConnectionEvent, ConsumerEnd, Error, ErrorKind, FieldTable, QueueDeclareOptions,
    QueueDeleteOptions,
};
use futures_util::StreamExt;

fn uri() -> String {
    std::env::var("AMQP_URI").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn connect() -> Connection {
    Connection::connect(&uri())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the broker at {}: {e}", uri()))
}

/// Bounds every test: a hang is a failure.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("timed out")
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn declare_publish_get_consume_ack_close() {
    within(async {
        let conn = connect().await;
        assert!(conn.is_open());
        assert!(conn.server_properties().get("product").is_some());
        let ch = conn.open_channel().await.unwrap();
        let q = ch
            .queue_declare("", exclusive(), FieldTable::new())
            .await
            .unwrap();
        assert!(q.name.starts_with("amq.gen-"));
        assert_eq!(q.message_count, 0);

        let props = BasicProperties::default()
            .with_content_type("text/plain")
            .with_message_id("m-1");
        for i in 0..3 {
            let confirm = ch
                .basic_publish(
                    "",
                    &q.name,
                    BasicPublishOptions::default(),
                    &props,
                    format!("msg {i}"),
                )
                .await
                .unwrap();
            assert!(!confirm.is_requested());
            assert_eq!(confirm.await, Confirmation::NotRequested);
        }

        // basic.get takes the first one.
        let got = loop {
            if let Some(d) = ch
                .basic_get(&q.name, BasicGetOptions::default())
                .await
                .unwrap()
            {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(&got.body[..], b"msg 0");
        assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(got.routing_key.as_str(), q.name.as_str());
        assert!(!got.redelivered);
        got.ack().unwrap();

        // The consumer gets the other two, in order.
        let mut consumer = ch
            .basic_consume(
                &q.name,
                "smoke",
                BasicConsumeOptions::default(),
                FieldTable::new(),
            )
            .await
            .unwrap();
        assert_eq!(consumer.tag().as_str(), "smoke");
        for i in 1..3 {
            let d = consumer.next().await.unwrap().unwrap();
            assert_eq!(d.body, format!("msg {i}").as_bytes());
            assert_eq!(d.consumer_tag.as_str(), "smoke");
            d.ack().unwrap();
        }

        // Cancelling ends the stream cleanly.
        consumer.cancel().await.unwrap();
        assert!(consumer.next().await.is_none());
        assert_eq!(consumer.end_reason(), Some(&ConsumerEnd::Cancelled));

        // Everything was acked: the queue is empty.
        let left = ch
            .queue_delete(&q.name, QueueDeleteOptions::default())
            .await
            .unwrap();
        assert_eq!(left, 0);
        ch.close().await.unwrap();
        assert!(!ch.is_open());
        conn.close().await.unwrap();
        assert!(!conn.is_open());
    })
    .await;
}

#[tokio::test]
async fn confirm_mode() {
    within(async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = ch
            .queue_declare("", exclusive(), FieldTable::new())
            .await
            .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();

        let mut confirms = Vec::new();
        for i in 0..500u32 {
            let c = ch
                .basic_publish(
                    "",
                    &q.name,
                    BasicPublishOptions::default(),
                    &BasicProperties::default(),
                    i.to_be_bytes().to_vec(),
                )
                .await
                .unwrap();
            assert!(c.is_requested());
            assert_eq!(c.delivery_tag().unwrap().0, u64::from(i) + 1);
            confirms.push(c);
        }
        for c in confirms {
            assert!(c.await.is_ack());
        }

        // Fire and forget, then wait for all of them.
        for _ in 0..100 {
            drop(
                ch.basic_publish(
                    "",
                    &q.name,
                    BasicPublishOptions::default(),
                    &BasicProperties::default(),
                    "x",
                )
                .await
                .unwrap(),
            );
        }
        assert!(ch.wait_for_confirms().await.unwrap());

        // A mandatory message nobody takes comes back attached to its ack.
        let c = ch
            .basic_publish(
                "",
                "no-such-queue-amqp-tokio-smoke",
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &BasicProperties::default(),
                "lost",
            )
            .await
            .unwrap();
        let outcome = c.await;
        assert!(outcome.is_ack(), "{outcome:?}");
        let returned = outcome.returned().expect("the return is attached");
        assert_eq!(returned.reply_code.0, 312);
        assert_eq!(&returned.body[..], b"lost");

        let left = ch
            .queue_delete(&q.name, QueueDeleteOptions::default())
            .await
            .unwrap();
        assert_eq!(left, 600);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn returns_outside_confirm_mode() {
    within(async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let mut returns = ch.on_return();
        ch.basic_publish(
            "",
            "no-such-queue-amqp-tokio-smoke",
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &BasicProperties::default(),
            "back",
        )
        .await
        .unwrap();
        let r = returns.next().await.unwrap();
        assert_eq!(r.reply_code.0, 312);
        assert_eq!(&r.body[..], b"back");
        ch.close().await.unwrap();
        // The stream ends with its channel.
        assert!(returns.next().await.is_none());
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn passive_declare_404_closes_only_the_channel() {
    within(async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let err = ch
            .queue_declare(
                "amqp-tokio-smoke-does-not-exist",
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(matches!(err, Error::ChannelClosed { .. }));

        // The channel is gone, and says why.
        assert!(!ch.is_open());
        assert_eq!(ch.closed().await, err);
        let again = ch
            .queue_declare("", exclusive(), FieldTable::new())
            .await
            .unwrap_err();
        assert_eq!(again.kind(), ErrorKind::NotFound);

        // The connection is fine: a new channel works (it may reuse the number).
        assert!(conn.is_open());
        let ch2 = conn.open_channel().await.unwrap();
        let q = ch2
            .queue_declare("", exclusive(), FieldTable::new())
            .await
            .unwrap();
        ch2.basic_publish(
            "",
            &q.name,
            BasicPublishOptions::default(),
            &BasicProperties::default(),
            "ok",
        )
        .await
        .unwrap();
        // The old handle still cannot touch the new channel.
        assert!(ch.basic_ack(amqp_tokio::DeliveryTag(1), false).is_err());
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn wrong_password_is_an_authentication_error_promptly() {
    let t = Instant::now();
    let mut options = ConnectOptions::parse(&uri()).unwrap();
    options.uri.password = Some("definitely-wrong".into());
    let options = ConnectOptions::from_uri(options.uri);
    let err = within(Connection::connect_with(options)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(matches!(err, ConnectError::Amqp(Error::Authentication(_))));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn unknown_vhost_is_an_access_error() {
    let mut options = ConnectOptions::parse(&uri()).unwrap();
    options.config.vhost = "amqp-tokio-no-such-vhost".into();
    let err = within(amqp_tokio::connect_with(options)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessRefused, "{err}");
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn amqps_is_refused_clearly() {
    let err = Connection::connect("amqps://guest:guest@127.0.0.1/")
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::TlsNotSupported));
    assert!(err.to_string().contains("TLS"));
}

/// The TLS tests proper are in `tls.rs`; this one needs no broker.
#[cfg(feature = "tls")]
#[tokio::test]
async fn amqps_with_a_missing_ca_file_fails_before_dialling() {
    let err = Connection::connect("amqps://guest:guest@127.0.0.1:1/?cacertfile=/nonexistent.pem")
        .await
        .unwrap_err();
    assert!(matches!(&err, ConnectError::Tls(e) if e.kind() == amqp_tokio::TlsErrorKind::Config));
    assert!(err.to_string().contains("/nonexistent.pem"), "{err}");
}

#[tokio::test]
async fn nothing_listening_fails_fast() {
    // Port 1 on loopback: nothing listens there.
    let err = within(Connection::connect("amqp://guest:guest@127.0.0.1:1/"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionBroken, "{err}");
}

#[tokio::test]
async fn closing_fails_waiters_and_ends_streams() {
    within(async {
        let conn = connect().await;
        let mut events = conn.events();
        let ch = conn.open_channel().await.unwrap();
        let q = ch
            .queue_declare("", exclusive(), FieldTable::new())
            .await
            .unwrap();
        let mut consumer = ch
            .basic_consume(
                &q.name,
                "",
                BasicConsumeOptions::default(),
                FieldTable::new(),
            )
            .await
            .unwrap();
        conn.close().await.unwrap();

        // The consumer ends with the close reason.
        let err = consumer.next().await.unwrap().unwrap_err();
        assert!(matches!(err, Error::ConnectionClosed(_)), "{err}");
        assert!(consumer.next().await.is_none());
        // The events stream ends with Closed(None).
        assert_eq!(events.next().await, Some(ConnectionEvent::Closed(None)));
        assert!(events.next().await.is_none());
        // Anything asked afterwards fails at once.
        let err = ch
            .queue_declare("", exclusive(), FieldTable::new())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ConnectionClosed(_)), "{err}");
        assert!(conn.open_channel().await.is_err());
        // Closing again is fine.
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_connection() {
    within(async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = ch
            .queue_declare("", exclusive(), FieldTable::new())
            .await
            .unwrap();
        let name = q.name.to_string();
        drop(conn);
        // The channel keeps the connection alive.
        ch.queue_declare(
            &name,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::new(),
        )
        .await
        .unwrap();
        drop(ch);

        // Once the connection is gone, the broker deletes its exclusive queue.
        let other = connect().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let probe = other.open_channel().await.unwrap();
            let r = probe
                .queue_declare(
                    &name,
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::new(),
                )
                .await;
            match r {
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) if e.kind() == ErrorKind::ResourceLocked => {}
                Err(e) => panic!("unexpected: {e}"),
                Ok(_) => {}
            }
            assert!(Instant::now() < deadline, "the connection was not closed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        other.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn dropping_a_channel_closes_it() {
    within(async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let q = ch
            .queue_declare("", exclusive(), FieldTable::new())
            .await
            .unwrap();
        let only = BasicConsumeOptions {
            exclusive: true,
            ..Default::default()
        };
        let consumer = ch
            .basic_consume(&q.name, "", only, FieldTable::new())
            .await
            .unwrap();
        drop(consumer);
        drop(ch);

        // Once the channel is closed its exclusive consumer is gone, so another can start.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ch2 = conn.open_channel().await.unwrap();
            match ch2
                .basic_consume(&q.name, "", only, FieldTable::new())
                .await
            {
                Ok(_) => break,
                Err(e) => assert_eq!(e.kind(), ErrorKind::AccessRefused, "{e}"),
            }
            assert!(
                Instant::now() < deadline,
                "the dropped channel was not closed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_and_consumer_across_threads() {
    within(async {
        let conn = connect().await;
        let setup = conn.open_channel().await.unwrap();
        let q = setup
            .queue_declare("", exclusive(), FieldTable::new())
            .await
            .unwrap();
        let name = q.name.to_string();

        let consuming = conn.open_channel().await.unwrap();
        consuming
            .basic_qos(200, amqp_tokio::BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = consuming
            .basic_consume(&name, "", BasicConsumeOptions::default(), FieldTable::new())
            .await
            .unwrap();
        let receiver = tokio::spawn(async move {
            let mut seen = 0usize;
            while seen < 20_000 {
                let d = consumer.next().await.unwrap().unwrap();
                d.ack().unwrap();
                seen += 1;
            }
            seen
        });

        let mut publishers = Vec::new();
        for _ in 0..4 {
            let ch = conn.open_channel().await.unwrap();
            let name = name.clone();
            publishers.push(tokio::spawn(async move {
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .unwrap();
                for i in 0..5_000u32 {
                    ch.basic_publish(
                        "",
                        &name,
                        BasicPublishOptions::default(),
                        &BasicProperties::default(),
                        i.to_le_bytes().to_vec(),
                    )
                    .await
                    .unwrap();
                }
                assert!(ch.wait_for_confirms().await.unwrap());
            }));
        }
        for p in publishers {
            p.await.unwrap();
        }
        assert_eq!(receiver.await.unwrap(), 20_000);
        conn.close().await.unwrap();
    })
    .await;
}
