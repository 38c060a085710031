//! Smoke tests against the RabbitMQ broker at 127.0.0.1:5672 (guest/guest), or `$AMQP_URI`.
//! They fail, not skip, when no broker answers.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use amqp_blocking::{
    BasicConsumeOptions, BasicGetOptions, BasicProperties, BasicPublishOptions, BasicQosOptions,
    Channel, ConfirmSelectOptions, Confirmation, ConnectError, ConnectOptions, Connection,
    ConnectionEvent, Consumer, ConsumerEnd, Error, ErrorKind, Events, FieldTable, PublishConfirm,
    QueueDeclareOptions, QueueDeleteOptions,
};

fn uri() -> String {
    std::env::var("AMQP_URI").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn connect_to(uri: &str) -> Connection {
    Connection::connect(uri)
        .unwrap_or_else(|e| panic!("cannot connect to the broker at {uri}: {e}"))
}

fn connect() -> Connection {
    connect_to(&uri())
}

/// Runs a test body on its own thread and fails it if it takes more than 30 s.
fn within(body: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let runner = thread::spawn(move || {
        body();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(30)) {
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("timed out"),
        _ => {
            if let Err(panic) = runner.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

fn declare(ch: &Channel) -> String {
    ch.queue_declare("", exclusive(), FieldTable::new())
        .unwrap()
        .name
        .to_string()
}

fn publish(ch: &Channel, queue: &str, body: impl Into<bytes::Bytes>) -> PublishConfirm {
    ch.basic_publish(
        "",
        queue,
        BasicPublishOptions::default(),
        &BasicProperties::default().with_content_type("text/plain"),
        body,
    )
    .unwrap()
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Connection>();
    check::<Channel>();
    check::<Consumer>();
    check::<PublishConfirm>();
    check::<Events>();
}

#[test]
fn declare_publish_confirm_get_consume_ack_close() {
    within(|| {
        let conn = connect();
        assert!(conn.is_open());
        assert!(conn.server_properties().get("product").is_some());
        let ch = conn.open_channel().unwrap();
        let q = declare(&ch);
        ch.confirm_select(ConfirmSelectOptions::default()).unwrap();

        let first = publish(&ch, &q, "msg 0");
        assert!(first.is_requested());
        assert_eq!(first.delivery_tag().unwrap().0, 1);
        assert!(first.wait().is_ack());
        let mut second = publish(&ch, &q, "msg 1");
        let outcome = second.wait_timeout(Duration::from_secs(10));
        assert!(
            outcome.as_ref().is_some_and(Confirmation::is_ack),
            "{outcome:?}"
        );
        // The answer stays there.
        assert_eq!(second.wait_timeout(Duration::ZERO), outcome);
        assert!(second.wait().is_ack());
        for i in 2..4 {
            drop(publish(&ch, &q, format!("msg {i}")));
        }
        assert!(ch.wait_for_confirms().unwrap());

        let got = ch
            .basic_get(&q, BasicGetOptions::default())
            .unwrap()
            .expect("a message is ready");
        assert_eq!(&got.body[..], b"msg 0");
        assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(got.message_count(), Some(3));
        got.ack().unwrap();

        let consumer = ch
            .basic_consume(
                &q,
                "blocking",
                BasicConsumeOptions::default(),
                FieldTable::new(),
            )
            .unwrap();
        assert_eq!(consumer.tag().as_str(), "blocking");
        let mut seen = 1;
        for delivery in consumer {
            let delivery = delivery.unwrap();
            assert_eq!(delivery.body, format!("msg {seen}").as_bytes());
            delivery.ack().unwrap();
            seen += 1;
            if seen == 4 {
                break;
            }
        }

        assert_eq!(
            ch.queue_delete(&q, QueueDeleteOptions::default()).unwrap(),
            0
        );
        ch.close().unwrap();
        assert!(!ch.is_open());
        conn.close().unwrap();
        assert!(!conn.is_open());
    });
}

#[test]
fn consumer_recv_timeout_and_cancel() {
    within(|| {
        let conn = connect();
        let ch = conn.open_channel().unwrap();
        let q = declare(&ch);
        let mut consumer = ch
            .basic_consume(&q, "", BasicConsumeOptions::default(), FieldTable::new())
            .unwrap();
        let t = Instant::now();
        assert!(
            consumer
                .recv_timeout(Duration::from_millis(200))
                .unwrap()
                .is_none()
        );
        assert!(t.elapsed() >= Duration::from_millis(200));

        publish(&ch, &q, "late");
        let d = consumer
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("delivered");
        assert_eq!(&d.body[..], b"late");
        d.ack().unwrap();

        consumer.cancel().unwrap();
        assert!(consumer.next().is_none());
        assert_eq!(consumer.end_reason(), Some(&ConsumerEnd::Cancelled));
        let ended = consumer.recv_timeout(Duration::from_secs(1)).unwrap_err();
        assert_eq!(ended.kind(), ErrorKind::Usage);
        conn.close().unwrap();
    });
}

#[test]
fn returns_and_events() {
    within(|| {
        let conn = connect();
        let mut events = conn.events();
        let ch = conn.open_channel().unwrap();
        let mut returns = ch.on_return();
        ch.basic_publish(
            "",
            "amqp-blocking-smoke-no-such-queue",
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &BasicProperties::default(),
            "back",
        )
        .unwrap();
        let r = returns
            .recv_timeout(Duration::from_secs(10))
            .expect("returned");
        assert_eq!(r.reply_code.0, 312);
        assert_eq!(&r.body[..], b"back");
        assert!(events.try_next().is_none());
        conn.close().unwrap();
        assert_eq!(events.next(), Some(ConnectionEvent::Closed(None)));
        assert!(events.next().is_none());
        assert!(returns.next().is_none());
    });
}

#[test]
fn passive_declare_404_closes_only_the_channel() {
    within(|| {
        let conn = connect();
        let ch = conn.open_channel().unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let err = ch
            .queue_declare("amqp-blocking-smoke-missing", passive, FieldTable::new())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(matches!(err, Error::ChannelClosed { .. }));
        assert!(!ch.is_open());
        assert_eq!(ch.closed(), err);

        assert!(conn.is_open());
        let ch2 = conn.open_channel().unwrap();
        declare(&ch2);
        conn.close().unwrap();
    });
}

#[test]
fn wrong_password_is_an_authentication_error_promptly() {
    within(|| {
        let t = Instant::now();
        let mut options = ConnectOptions::parse(&uri()).unwrap();
        options.uri.password = Some("definitely-wrong".into());
        let err = Connection::connect_with(options.uri).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
        assert!(matches!(err, ConnectError::Amqp(Error::Authentication(_))));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

        // Without the `tls` feature `amqps://` is refused up front; with it (the default; see
        // tls.rs) it dials, and port 1 has nothing listening.
        let err = amqp_blocking::connect("amqps://guest:guest@127.0.0.1:1/").unwrap_err();
        #[cfg(not(feature = "tls"))]
        assert!(matches!(err, ConnectError::TlsNotSupported), "{err}");
        #[cfg(feature = "tls")]
        assert!(matches!(err, ConnectError::Io(_)), "{err}");
    });
}

#[test]
fn heartbeats_survive_a_sleeping_user_thread() {
    within(|| {
        let base = uri();
        let sep = if base.contains('?') { '&' } else { '?' };
        let conn = connect_to(&format!("{base}{sep}heartbeat=1"));
        assert_eq!(conn.tuning().heartbeat, 1);
        let mut events = conn.events();
        let ch = conn.open_channel().unwrap();

        // Three heartbeat intervals and a half without touching the connection: the broker
        // closes a connection that misses two.
        thread::sleep(Duration::from_millis(3500));

        assert!(conn.is_open(), "{:?}", conn.state());
        assert!(events.try_next().is_none(), "the connection had an event");
        let q = declare(&ch);
        ch.confirm_select(ConfirmSelectOptions::default()).unwrap();
        assert!(publish(&ch, &q, "still here").wait().is_ack());
        conn.close().unwrap();
        assert_eq!(events.next(), Some(ConnectionEvent::Closed(None)));
    });
}

#[test]
fn used_from_several_threads() {
    within(|| {
        const PUBLISHERS: usize = 4;
        const EACH: usize = 500;
        let conn = connect();
        let setup = conn.open_channel().unwrap();
        let q = declare(&setup);

        let consuming = conn.open_channel().unwrap();
        consuming
            .basic_qos(100, BasicQosOptions::default())
            .unwrap();
        let consumer = consuming
            .basic_consume(&q, "", BasicConsumeOptions::default(), FieldTable::new())
            .unwrap();
        let receiver = thread::spawn(move || {
            consumer
                .take(PUBLISHERS * EACH)
                .map(|d| d.unwrap().ack().unwrap())
                .count()
        });

        // Two threads share one channel; two more open their own on the shared connection.
        let shared = conn.open_channel().unwrap();
        shared
            .confirm_select(ConfirmSelectOptions::default())
            .unwrap();
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|i| {
                let (conn, shared, q) = (conn.clone(), shared.clone(), q.clone());
                thread::spawn(move || {
                    let ch = if i < 2 {
                        shared
                    } else {
                        let ch = conn.open_channel().unwrap();
                        ch.confirm_select(ConfirmSelectOptions::default()).unwrap();
                        ch
                    };
                    for n in 0..EACH {
                        let confirm = publish(&ch, &q, format!("{i}-{n}"));
                        if n % 100 == 0 {
                            assert!(confirm.wait().is_ack());
                        }
                    }
                    assert!(ch.wait_for_confirms().unwrap());
                })
            })
            .collect();
        for p in publishers {
            p.join().unwrap();
        }
        assert_eq!(receiver.join().unwrap(), PUBLISHERS * EACH);
        conn.close().unwrap();
    });
}
