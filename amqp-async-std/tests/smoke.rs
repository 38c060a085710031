//! What is particular to amqp-async-std, against the RabbitMQ broker at 127.0.0.1:5672
//! (guest/guest), or `$AMQP_URI`: the connection driver spawned on the application's executor
//! (async-std's, smol's) instead of the adapter's I/O thread. The protocol through this
//! adapter (on both executors, `amqps://` included) is the conformance suite,
//! `tests/tests/broker_async_std.rs`. They fail, not skip, when no broker answers.

use std::future::Future;
use std::time::Duration;

use amqp_async_std::{
    BasicGetOptions, BasicProperties, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use futures_lite::FutureExt;

fn uri() -> String {
    std::env::var("AMQP_URI").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Bounds every test: a hang is a failure.
async fn within<T>(f: impl Future<Output = T>) -> T {
    f.or(async {
        async_io::Timer::after(Duration::from_secs(30)).await;
        panic!("timed out")
    })
    .await
}

/// Connects with the driver handed to `spawn`, then publishes (confirmed) and gets back one
/// message.
async fn round_trip_with_spawner(spawn: fn(amqp_async_std::ConnectionDriver)) {
    let conn = amqp_async_std::connect_with_spawner(uri(), |driver| {
        spawn(driver);
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("cannot connect to the broker at {}: {e}", uri()));
    let ch = conn.open_channel().await.unwrap();
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let q = ch.queue_declare("", exclusive).await;
    let q = q.unwrap().name.to_string();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let props = BasicProperties::default();
    let publish = ch.basic_publish("", &q, BasicPublishOptions::default(), &props, "spawned");
    assert!(publish.await.unwrap().await.is_ack());
    let d = ch
        .basic_get(&q, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message is there");
    assert_eq!(&d.body[..], b"spawned");
    conn.close().await.unwrap();
}

#[async_std::test]
async fn driver_spawned_on_async_std() {
    within(round_trip_with_spawner(|d| drop(async_std::task::spawn(d)))).await;
}

#[test]
fn driver_spawned_on_smol() {
    smol::block_on(within(round_trip_with_spawner(|d| smol::spawn(d).detach())));
}

/// Without the `tls` feature `amqps://` is refused up front (with it, the conformance suite
/// covers `amqps://`).
#[cfg(not(feature = "tls"))]
#[test]
fn amqps_is_refused_clearly() {
    let err =
        smol::block_on(amqp_async_std::connect("amqps://guest:guest@127.0.0.1:1/")).unwrap_err();
    assert!(matches!(err, amqp_async_std::ConnectError::TlsNotSupported));
    assert!(err.to_string().contains("TLS"));
}
