//! What is particular to amqp-tokio, against the RabbitMQ broker at 127.0.0.1:5672
//! (guest/guest), or `$AMQP_URI`: dropping handles closes, and use from several runtime
//! threads. Everything else (the protocol through this adapter, `amqps://`) is in the
//! conformance suite, `tests/tests/broker_tokio.rs`. They fail, not skip, when no broker
//! answers.

use std::time::{Duration, Instant};

use amqp_tokio::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, Channel, ConfirmSelectOptions,
    Connection, ErrorKind, QueueDeclareOptions,
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

/// Declares a broker-named exclusive queue on `ch`.
async fn private_queue(ch: &Channel) -> String {
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let q = ch.queue_declare("", options).await;
    q.unwrap().name.to_string()
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

/// Retries `done` (every 20 ms, for up to 10 s) until it says the broker has caught up.
async fn eventually<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn amqps_is_refused_clearly() {
    let err = Connection::connect("amqps://guest:guest@127.0.0.1/")
        .await
        .unwrap_err();
    assert!(matches!(err, amqp_tokio::ConnectError::TlsNotSupported));
    assert!(err.to_string().contains("TLS"));
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_connection() {
    within(async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let name = private_queue(&ch).await;
        drop(conn);
        // The channel keeps the connection alive.
        ch.queue_declare(&name, passive()).await.unwrap();
        drop(ch);

        // Once the connection is gone, the broker deletes its exclusive queue.
        let other = connect().await;
        eventually("the connection was not closed", || async {
            let probe = other.open_channel().await.unwrap();
            match probe.queue_declare(&name, passive()).await {
                Err(e) if e.kind() == ErrorKind::NotFound => true,
                Err(e) if e.kind() == ErrorKind::ResourceLocked => false,
                Err(e) => panic!("unexpected: {e}"),
                Ok(_) => false,
            }
        })
        .await;
        other.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn dropping_a_channel_closes_it() {
    within(async {
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let queue = private_queue(&ch).await;
        let only = BasicConsumeOptions {
            exclusive: true,
            ..Default::default()
        };
        let consumer = ch.basic_consume(&queue, "", only.clone()).await.unwrap();
        drop(consumer);
        drop(ch);

        // Once the channel is closed its exclusive consumer is gone, so another can start.
        eventually("the dropped channel was not closed", || async {
            let only = only.clone();
            let ch2 = conn.open_channel().await.unwrap();
            match ch2.basic_consume(&queue, "", only).await {
                Ok(_) => true,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::AccessRefused, "{e}");
                    false
                }
            }
        })
        .await;
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_and_consumer_across_threads() {
    within(async {
        let conn = connect().await;
        let name = private_queue(&conn.open_channel().await.unwrap()).await;

        let consuming = conn.open_channel().await.unwrap();
        consuming
            .basic_qos(200, amqp_tokio::BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = consuming
            .basic_consume(&name, "", BasicConsumeOptions::default())
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
