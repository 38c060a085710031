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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amqp_tokio::{
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
    format!("tutorial.tokio.{what}.{}.{nanos}", std::process::id())
}

/// Fails the test instead of hanging if a tutorial waits for something that never comes.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("tutorial timed out")
}

async fn delete_queue(name: &str) {
    let conn = Connection::connect(&uri()).await.unwrap();
    let channel = conn.open_channel().await.unwrap();
    channel
        .queue_delete(name, QueueDeleteOptions::default())
        .await
        .unwrap();
    conn.close().await.unwrap();
}

async fn delete_exchange(name: &str) {
    let conn = Connection::connect(&uri()).await.unwrap();
    let channel = conn.open_channel().await.unwrap();
    channel
        .exchange_delete(name, ExchangeDeleteOptions::default())
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn hello_world() {
    let queue = unique("hello");
    bounded(hello_world::send(&uri(), &queue)).await.unwrap();
    let got = bounded(hello_world::receive(&uri(), &queue, Some(1)))
        .await
        .unwrap();
    assert_eq!(got, ["Hello World!"]);
    delete_queue(&queue).await;
}

#[tokio::test]
async fn work_queues() {
    let queue = unique("tasks");
    for task in ["first", "second", "third"] {
        bounded(work_queues::new_task(&uri(), &queue, task))
            .await
            .unwrap();
    }
    let done = bounded(work_queues::worker(&uri(), &queue, Some(3)))
        .await
        .unwrap();
    assert_eq!(done, ["first", "second", "third"]);
    delete_queue(&queue).await;
}

#[tokio::test]
async fn publish_subscribe() {
    let exchange = unique("logs");
    let conn = Connection::connect(&uri()).await.unwrap();
    let (a, b) = (
        conn.open_channel().await.unwrap(),
        conn.open_channel().await.unwrap(),
    );
    let first = publish_subscribe::subscribe(&a, &exchange).await.unwrap();
    let second = publish_subscribe::subscribe(&b, &exchange).await.unwrap();
    bounded(publish_subscribe::emit_log(&uri(), &exchange, "info: hi"))
        .await
        .unwrap();
    for consumer in [first, second] {
        let logs = bounded(publish_subscribe::print_logs(consumer, Some(1)))
            .await
            .unwrap();
        assert_eq!(logs, ["info: hi"]);
    }
    conn.close().await.unwrap();
    delete_exchange(&exchange).await;
}

#[tokio::test]
async fn routing() {
    let exchange = unique("direct");
    let conn = Connection::connect(&uri()).await.unwrap();
    let channel = conn.open_channel().await.unwrap();
    let errors = routing::subscribe(&channel, &exchange, &["error"])
        .await
        .unwrap();
    for (severity, text) in [("info", "ignored"), ("error", "boom")] {
        bounded(routing::emit(&uri(), &exchange, severity, text))
            .await
            .unwrap();
    }
    let logs = bounded(routing::print_logs(errors, Some(1))).await.unwrap();
    assert_eq!(logs, ["error:boom"]);
    conn.close().await.unwrap();
    delete_exchange(&exchange).await;
}

#[tokio::test]
async fn topics() {
    let exchange = unique("topic");
    let conn = Connection::connect(&uri()).await.unwrap();
    let channel = conn.open_channel().await.unwrap();
    let consumer = topics::subscribe(&channel, &exchange, &["kern.*", "*.critical"])
        .await
        .unwrap();
    for key in ["kern.info", "user.info", "app.critical"] {
        bounded(topics::emit(&uri(), &exchange, key, "m"))
            .await
            .unwrap();
    }
    let logs = bounded(topics::print_logs(consumer, Some(2)))
        .await
        .unwrap();
    assert_eq!(logs, ["kern.info:m", "app.critical:m"]);
    conn.close().await.unwrap();
    delete_exchange(&exchange).await;
}

#[tokio::test]
async fn rpc() {
    let queue = unique("rpc");
    let server_conn = Connection::connect(&uri()).await.unwrap();
    let requests = rpc::listen(&server_conn.open_channel().await.unwrap(), &queue)
        .await
        .unwrap();
    let server = tokio::spawn(rpc::serve(requests, Some(2)));
    let client = Connection::connect(&uri()).await.unwrap();
    let channel = client.open_channel().await.unwrap();
    assert_eq!(bounded(rpc::call(&channel, &queue, 10)).await.unwrap(), 55);
    assert_eq!(
        bounded(rpc::call(&channel, &queue, 30)).await.unwrap(),
        832_040
    );
    bounded(server).await.unwrap().unwrap();
    client.close().await.unwrap();
    server_conn.close().await.unwrap();
    delete_queue(&queue).await;
}

#[tokio::test]
async fn publisher_confirms() {
    let conn = Connection::connect(&uri()).await.unwrap();
    let channel = conn.open_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare("", exclusive).await.unwrap();
    bounded(publisher_confirms::individually(&channel, &queue.name, 20))
        .await
        .unwrap();
    bounded(publisher_confirms::in_batches(
        &channel,
        &queue.name,
        50,
        20,
    ))
    .await
    .unwrap();
    bounded(publisher_confirms::asynchronously(
        &channel,
        &queue.name,
        200,
        64,
    ))
    .await
    .unwrap();
    let outcome = bounded(publisher_confirms::unroutable(&channel))
        .await
        .unwrap();
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
        .await
        .unwrap();
    assert_eq!(declared.message_count, 270);
    conn.close().await.unwrap();
}
