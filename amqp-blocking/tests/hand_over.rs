//! The hand-over of the connection between the threads that wait on it (the thread that waits
//! runs the event loop; others follow; the `amqp-io` thread takes over when nobody waits),
//! against the RabbitMQ broker at 127.0.0.1:5672 (guest/guest), or `$AMQP_URI`. They fail,
//! not skip, when no broker answers.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use amqp_blocking::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, BasicQosOptions, Channel,
    ConfirmSelectOptions, Connection, ConnectionEvent, QueueDeclareOptions,
};

fn uri() -> String {
    std::env::var("AMQP_URI").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn connect_to(uri: &str) -> Connection {
    Connection::connect(uri)
        .unwrap_or_else(|e| panic!("cannot connect to the broker at {uri}: {e}"))
}

/// Runs a test body on its own thread and fails it if it takes more than 60 s (a hang).
fn within(body: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let runner = thread::spawn(move || {
        body();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(60)) {
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("timed out"),
        _ => {
            if let Err(panic) = runner.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

fn declare(ch: &Channel) -> String {
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare("", exclusive).unwrap().name.to_string()
}

fn publish(ch: &Channel, queue: &str, body: String) -> amqp_blocking::PublishConfirm {
    ch.basic_publish(
        "",
        queue,
        BasicPublishOptions::default(),
        &BasicProperties::default(),
        body,
    )
    .unwrap()
}

/// A consumer thread and a publisher thread that waits for each confirm take turns driving
/// one connection; both get all of theirs.
#[test]
fn a_consumer_and_a_confirm_waiting_publisher_share_a_connection() {
    within(|| {
        const N: usize = 2000;
        let conn = connect_to(&uri());
        let consuming = conn.open_channel().unwrap();
        let q = declare(&consuming);
        consuming.basic_qos(10, BasicQosOptions::default()).unwrap();
        let consumer = consuming
            .basic_consume(&q, "", BasicConsumeOptions::default())
            .unwrap();
        let receiver = thread::spawn(move || {
            let mut got = Vec::with_capacity(N);
            for delivery in consumer.take(N) {
                let delivery = delivery.unwrap();
                got.push(String::from_utf8(delivery.body.to_vec()).unwrap());
                delivery.ack().unwrap();
            }
            got
        });
        let publishing = conn.open_channel().unwrap();
        publishing
            .confirm_select(ConfirmSelectOptions::default())
            .unwrap();
        let publisher = thread::spawn(move || {
            for n in 0..N {
                assert!(publish(&publishing, &q, n.to_string()).wait().is_ack());
            }
        });
        publisher.join().unwrap();
        let got = receiver.join().unwrap();
        let sent: Vec<String> = (0..N).map(|n| n.to_string()).collect();
        assert_eq!(got, sent);
        conn.close().unwrap();
    });
}

/// Two threads wait with a timeout for deliveries that never come: one drives the loop, the
/// other follows; both return at their deadline, not before.
#[test]
fn waits_with_a_timeout_end_while_driving_and_while_following() {
    within(|| {
        let conn = connect_to(&uri());
        let waiters: Vec<_> = [300u64, 600]
            .into_iter()
            .map(|ms| {
                let ch = conn.open_channel().unwrap();
                let q = declare(&ch);
                let consumer = ch
                    .basic_consume(&q, "", BasicConsumeOptions::default())
                    .unwrap();
                thread::spawn(move || {
                    let timeout = Duration::from_millis(ms);
                    for _ in 0..3 {
                        let start = Instant::now();
                        assert!(consumer.recv_timeout(timeout).unwrap().is_none());
                        assert!(start.elapsed() >= timeout);
                    }
                })
            })
            .collect();
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert!(conn.is_open());
        conn.close().unwrap();
    });
}

/// A consumer busy in user code for three heartbeat intervals between two receives: the loop,
/// unattended, goes back to the `amqp-io` thread, which keeps the heartbeats going.
#[test]
fn heartbeats_go_on_while_a_consumer_is_busy_between_receives() {
    within(|| {
        let base = uri();
        let sep = if base.contains('?') { '&' } else { '?' };
        let conn = connect_to(&format!("{base}{sep}heartbeat=1"));
        assert_eq!(conn.tuning().heartbeat, 1);
        let events = conn.events();
        let ch = conn.open_channel().unwrap();
        let q = declare(&ch);
        ch.confirm_select(ConfirmSelectOptions::default()).unwrap();
        for n in 0..3 {
            assert!(publish(&ch, &q, n.to_string()).wait().is_ack());
        }
        let consumer = ch
            .basic_consume(&q, "", BasicConsumeOptions::default())
            .unwrap();
        for n in 0..3 {
            let delivery = consumer.recv().unwrap().unwrap();
            assert_eq!(&delivery.body[..], n.to_string().as_bytes());
            delivery.ack().unwrap();
            // Busy in user code: the broker closes a connection that misses two heartbeats.
            thread::sleep(Duration::from_secs(3));
            assert!(conn.is_open(), "{:?}", conn.state());
        }
        assert!(events.try_next().is_none(), "the connection had an event");
        conn.close().unwrap();
    });
}

/// The last handles go while another thread waits on the connection's events (driving the
/// loop): the connection closes and that thread sees it, with no deadlock.
#[test]
fn dropping_the_connection_while_another_thread_waits() {
    within(|| {
        let conn = connect_to(&uri());
        let ch = conn.open_channel().unwrap();
        declare(&ch);
        let events = conn.events();
        let (waiting, started) = mpsc::channel();
        let watcher = thread::spawn(move || {
            waiting.send(()).unwrap();
            events.last()
        });
        started.recv().unwrap();
        // Let the watcher block in its wait (either way the test must pass).
        thread::sleep(Duration::from_millis(50));
        drop(ch);
        drop(conn);
        let last = watcher.join().unwrap();
        assert!(matches!(last, Some(ConnectionEvent::Closed(_))), "{last:?}");
    });
}

/// A thread blocked in a receive while another closes the connection: the receive ends, the
/// close returns.
#[test]
fn closing_while_a_consumer_thread_waits() {
    within(|| {
        let conn = connect_to(&uri());
        let ch = conn.open_channel().unwrap();
        let q = declare(&ch);
        let consumer = ch
            .basic_consume(&q, "", BasicConsumeOptions::default())
            .unwrap();
        let receiver = thread::spawn(move || consumer.recv().map(|r| r.is_ok()));
        thread::sleep(Duration::from_millis(50));
        conn.close().unwrap();
        // The consumer ends (after one Err, or at once).
        assert_ne!(receiver.join().unwrap(), Some(true));
    });
}
