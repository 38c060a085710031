//! Runs every RabbitMQ tutorial example of this crate against the broker (`$AMQP_URI`, else
//! the shared one on 127.0.0.1:5672), each bounded, on queue and exchange names unique to the
//! run. The examples are compiled in as modules, so what runs is exactly what users read.
//! They name nothing from the other crates of this workspace: everything (publish with
//! headers and a `Decimal`, consume, ack, confirms, returns) comes from this adapter alone, so
//! this is also the compile-level check that a user's imports suffice.

#![allow(dead_code)] // each example's `main` is not called here

#[path = "../examples/hello_world.rs"]
mod hello_world;
#[path = "../examples/publish_subscribe.rs"]
mod publish_subscribe;
#[path = "../examples/publisher_confirms.rs"]
mod publisher_confirms;
#[path = "../examples/routing.rs"]
mod routing;
#[path = "../examples/rpc.rs"]
mod rpc;
#[path = "../examples/topics.rs"]
mod topics;
#[path = "../examples/work_queues.rs"]
mod work_queues;

use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amqp_blocking::{
    ConfirmSelectOptions, Connection, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions, ReplyCode,
};

fn uri() -> String {
    std::env::var("AMQP_URI").unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A name no other run or test uses.
fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("tutorial.blocking.{what}.{}.{nanos}", std::process::id())
}

/// Fails the whole run, loudly, if a tutorial waits for something that never comes (blocking
/// calls cannot be cancelled). Dropping the guard disarms it.
fn watchdog(test: &'static str) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(60)) == Err(mpsc::RecvTimeoutError::Timeout) {
            eprintln!("tutorial {test} did not finish within 60 s");
            std::process::exit(101);
        }
    });
    tx
}

fn delete_queue(name: &str) {
    let conn = Connection::connect(&uri()).unwrap();
    let channel = conn.open_channel().unwrap();
    channel
        .queue_delete(name, QueueDeleteOptions::default())
        .unwrap();
    conn.close().unwrap();
}

fn delete_exchange(name: &str) {
    let conn = Connection::connect(&uri()).unwrap();
    let channel = conn.open_channel().unwrap();
    channel
        .exchange_delete(name, ExchangeDeleteOptions::default())
        .unwrap();
    conn.close().unwrap();
}

#[test]
fn hello_world() {
    let _watchdog = watchdog("hello_world");
    let queue = unique("hello");
    hello_world::send(&uri(), &queue).unwrap();
    let got = hello_world::receive(&uri(), &queue, Some(1)).unwrap();
    assert_eq!(got, ["Hello World!"]);
    delete_queue(&queue);
}

#[test]
fn work_queues() {
    let _watchdog = watchdog("work_queues");
    let queue = unique("tasks");
    for task in ["first", "second", "third"] {
        work_queues::new_task(&uri(), &queue, task).unwrap();
    }
    let done = work_queues::worker(&uri(), &queue, Some(3)).unwrap();
    assert_eq!(done, ["first", "second", "third"]);
    delete_queue(&queue);
}

#[test]
fn publish_subscribe() {
    let _watchdog = watchdog("publish_subscribe");
    let exchange = unique("logs");
    let conn = Connection::connect(&uri()).unwrap();
    let (a, b) = (conn.open_channel().unwrap(), conn.open_channel().unwrap());
    let first = publish_subscribe::subscribe(&a, &exchange).unwrap();
    let second = publish_subscribe::subscribe(&b, &exchange).unwrap();
    publish_subscribe::emit_log(&uri(), &exchange, "info: hi").unwrap();
    for consumer in [first, second] {
        let logs = publish_subscribe::print_logs(consumer, Some(1)).unwrap();
        assert_eq!(logs, ["info: hi"]);
    }
    conn.close().unwrap();
    delete_exchange(&exchange);
}

#[test]
fn routing() {
    let _watchdog = watchdog("routing");
    let exchange = unique("direct");
    let conn = Connection::connect(&uri()).unwrap();
    let channel = conn.open_channel().unwrap();
    let errors = routing::subscribe(&channel, &exchange, &["error"]).unwrap();
    for (severity, text) in [("info", "ignored"), ("error", "boom")] {
        routing::emit(&uri(), &exchange, severity, text).unwrap();
    }
    let logs = routing::print_logs(errors, Some(1)).unwrap();
    assert_eq!(logs, ["error:boom"]);
    conn.close().unwrap();
    delete_exchange(&exchange);
}

#[test]
fn topics() {
    let _watchdog = watchdog("topics");
    let exchange = unique("topic");
    let conn = Connection::connect(&uri()).unwrap();
    let channel = conn.open_channel().unwrap();
    let consumer = topics::subscribe(&channel, &exchange, &["kern.*", "*.critical"]).unwrap();
    for key in ["kern.info", "user.info", "app.critical"] {
        topics::emit(&uri(), &exchange, key, "m").unwrap();
    }
    let logs = topics::print_logs(consumer, Some(2)).unwrap();
    assert_eq!(logs, ["kern.info:m", "app.critical:m"]);
    conn.close().unwrap();
    delete_exchange(&exchange);
}

#[test]
fn rpc() {
    let _watchdog = watchdog("rpc");
    let queue = unique("rpc");
    let server_conn = Connection::connect(&uri()).unwrap();
    let requests = rpc::listen(&server_conn.open_channel().unwrap(), &queue).unwrap();
    let server = std::thread::spawn(move || rpc::serve(requests, Some(2)));
    let client = Connection::connect(&uri()).unwrap();
    let channel = client.open_channel().unwrap();
    assert_eq!(rpc::call(&channel, &queue, 10).unwrap(), 55);
    assert_eq!(rpc::call(&channel, &queue, 30).unwrap(), 832_040);
    server.join().unwrap().unwrap();
    client.close().unwrap();
    server_conn.close().unwrap();
    delete_queue(&queue);
}

#[test]
fn publisher_confirms() {
    let _watchdog = watchdog("publisher_confirms");
    let conn = Connection::connect(&uri()).unwrap();
    let channel = conn.open_channel().unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .unwrap();
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare("", exclusive).unwrap();
    publisher_confirms::individually(&channel, &queue.name, 20).unwrap();
    publisher_confirms::in_batches(&channel, &queue.name, 50, 20).unwrap();
    publisher_confirms::asynchronously(&channel, &queue.name, 200, 64).unwrap();
    let outcome = publisher_confirms::unroutable(&channel).unwrap();
    assert!(
        outcome.is_ack(),
        "an unroutable mandatory message is still acked"
    );
    assert_eq!(
        outcome.returned().map(|r| r.reply_code),
        Some(ReplyCode::NO_ROUTE)
    );
    let declared = channel
        .queue_declare(
            &queue.name,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(declared.message_count, 270);
    conn.close().unwrap();
}
