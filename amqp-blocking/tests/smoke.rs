//! What is particular to amqp-blocking, against the RabbitMQ broker at 127.0.0.1:5672
//! (guest/guest), or `$AMQP_URI`: `Send + Sync` handles used from several threads, waits with
//! timeouts and iterators, heartbeats kept by the driver while the user's thread sleeps. The
//! protocol through this adapter (`amqps://` included) is the conformance suite,
//! `tests/tests/broker_blocking.rs`. They fail, not skip, when no broker answers.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use amqp_blocking::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, BasicQosOptions, Channel,
    ConfirmSelectOptions, Confirmation, Connection, ConnectionEvent, Consumer, ConsumerEnd,
    ErrorKind, Events, PublishConfirm, QueueDeclareOptions,
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
    ch.queue_declare("", exclusive()).unwrap().name.to_string()
}

fn publish(ch: &Channel, queue: &str, body: impl amqp_blocking::IntoBody) -> PublishConfirm {
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

/// The blocking API's own waits: `PublishConfirm::wait_timeout` (the answer stays),
/// `Consumer::recv_timeout`, and the consumer as an iterator that ends on cancel.
#[test]
fn timeouts_and_iterators() {
    within(|| {
        let conn = connect();
        let ch = conn.open_channel().unwrap();
        let q = declare(&ch);
        ch.confirm_select(ConfirmSelectOptions::default()).unwrap();
        let mut confirm = publish(&ch, &q, "first");
        let outcome = confirm.wait_timeout(Duration::from_secs(10));
        assert!(
            outcome.as_ref().is_some_and(Confirmation::is_ack),
            "{outcome:?}"
        );
        assert_eq!(confirm.wait_timeout(Duration::ZERO), outcome);
        assert!(confirm.wait().is_ack());

        let mut consumer = ch
            .basic_consume(&q, "", BasicConsumeOptions::default())
            .unwrap();
        let first = consumer.next().expect("a delivery").unwrap();
        assert_eq!(&first.body[..], b"first");
        first.ack().unwrap();
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

/// Without the `tls` feature `amqps://` is refused up front (with it, the conformance suite
/// covers `amqps://`).
#[cfg(not(feature = "tls"))]
#[test]
fn amqps_is_refused_clearly() {
    let err = amqp_blocking::connect("amqps://guest:guest@127.0.0.1:1/").unwrap_err();
    assert!(
        matches!(err, amqp_blocking::ConnectError::TlsNotSupported),
        "{err}"
    );
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
            .basic_consume(&q, "", BasicConsumeOptions::default())
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
