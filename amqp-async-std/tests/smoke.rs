//! Smoke tests against the RabbitMQ broker at 127.0.0.1:5672 (guest/guest), or `$AMQP_URI`,
//! each run on async-std and on smol. They fail, not skip, when no broker answers.

use std::future::Future;
use std::time::{Duration, Instant};

use amqp_async_std::{
    BasicConsumeOptions, BasicGetOptions, BasicProperties, BasicPublishOptions, Channel,
    ConfirmSelectOptions, Confirmation, Connect, ConnectError, ConnectOptions, Connection,
    ConsumerEnd, DeliveryTag, Error, ErrorKind, FieldTable, PublishConfirm, QueueDeclareOptions,
    QueueDeleteOptions,
};
use bytes::Bytes;
use futures_lite::{FutureExt, StreamExt};

fn uri() -> String {
    std::env::var("AMQP_URI").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn connect() -> Connection {
    Connection::connect(&uri())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the broker at {}: {e}", uri()))
}

/// Bounds every test: a hang is a failure.
async fn within<T>(f: impl Future<Output = T>) -> T {
    f.or(async {
        async_io::Timer::after(Duration::from_secs(30)).await;
        panic!("timed out")
    })
    .await
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

/// Runs each test body on async-std and on smol.
macro_rules! on_both_runtimes {
    ($($name:ident),* $(,)?) => {
        mod on_async_std {
            $(#[test] fn $name() { async_std::task::block_on(super::within(super::$name())) })*
        }
        mod on_smol {
            $(#[test] fn $name() { smol::block_on(super::within(super::$name())) })*
        }
    };
}

on_both_runtimes!(
    declare_publish_get_consume_ack_close,
    publish_with_confirms,
    passive_declare_404_closes_only_the_channel,
    wrong_password_is_an_authentication_error_promptly,
    amqps_is_refused_clearly,
    nothing_listening_fails_fast,
    connects_by_host_name,
);

/// Publishes `body` to `queue` through the default exchange.
async fn send(ch: &Channel, queue: &str, body: impl Into<Bytes>) -> PublishConfirm {
    let props = BasicProperties::default().with_content_type("text/plain");
    let options = BasicPublishOptions::default();
    ch.basic_publish("", queue, options, &props, body)
        .await
        .unwrap()
}

async fn publish(ch: &Channel, queue: &str, body: &str) -> Confirmation {
    send(ch, queue, body.to_owned()).await.await
}

/// A channel in confirm mode and an exclusive queue on it.
async fn confirming_queue(conn: &Connection) -> (Channel, String) {
    let ch = conn.open_channel().await.unwrap();
    let info = ch.queue_declare("", exclusive(), FieldTable::new());
    let name = info.await.unwrap().name.to_string();
    let confirming = ch.confirm_select(ConfirmSelectOptions::default());
    confirming.await.unwrap();
    (ch, name)
}

async fn declare_publish_get_consume_ack_close() {
    let conn = connect().await;
    assert!(conn.is_open());
    let ch = conn.open_channel().await.unwrap();
    let q = ch
        .queue_declare("", exclusive(), FieldTable::new())
        .await
        .unwrap();
    assert!(q.name.starts_with("amq.gen-"));
    for i in 0..3 {
        assert_eq!(
            publish(&ch, &q.name, &format!("msg {i}")).await,
            Confirmation::NotRequested
        );
    }

    let got = loop {
        match ch.basic_get(&q.name, BasicGetOptions::default()).await {
            Ok(Some(d)) => break d,
            Ok(None) => async_io::Timer::after(Duration::from_millis(10)).await,
            Err(e) => panic!("basic_get: {e}"),
        };
    };
    assert_eq!(&got.body[..], b"msg 0");
    assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
    got.ack().unwrap();

    let mut consumer = ch
        .basic_consume(
            &q.name,
            "c",
            BasicConsumeOptions::default(),
            FieldTable::new(),
        )
        .await
        .unwrap();
    for i in 1..3 {
        let d = consumer.next().await.unwrap().unwrap();
        assert_eq!(d.body, format!("msg {i}").as_bytes());
        d.ack().unwrap();
    }
    consumer.cancel().await.unwrap();
    assert!(consumer.next().await.is_none());
    assert_eq!(consumer.end_reason(), Some(&ConsumerEnd::Cancelled));

    let left = ch
        .queue_delete(&q.name, QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(left, 0);
    ch.close().await.unwrap();
    conn.close().await.unwrap();
    assert!(!conn.is_open());
}

async fn publish_with_confirms() {
    let conn = connect().await;
    let (ch, q) = confirming_queue(&conn).await;
    let mut confirms = Vec::new();
    for i in 1..=300u64 {
        let c = send(&ch, &q, i.to_le_bytes().to_vec()).await;
        assert_eq!(c.delivery_tag(), Some(DeliveryTag(i)));
        confirms.push(c);
    }
    for c in confirms {
        assert!(c.await.is_ack());
    }
    assert!(publish(&ch, &q, "one more").await.is_ack());
    assert!(ch.wait_for_confirms().await.unwrap());
    let left = ch
        .queue_delete(&q, QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(left, 301);
    conn.close().await.unwrap();
}

async fn passive_declare_404_closes_only_the_channel() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let err = ch
        .queue_declare("amqp-async-std-smoke-missing", passive, FieldTable::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(matches!(err, Error::ChannelClosed { .. }));
    assert!(!ch.is_open());
    assert_eq!(ch.closed().await, err);

    assert!(conn.is_open());
    let ch2 = conn.open_channel().await.unwrap();
    ch2.queue_declare("", exclusive(), FieldTable::new())
        .await
        .unwrap();
    conn.close().await.unwrap();
}

async fn wrong_password_is_an_authentication_error_promptly() {
    let t = Instant::now();
    let mut options = ConnectOptions::parse(&uri()).unwrap();
    options.uri.password = Some("definitely-wrong".into());
    let err = Connection::connect_with(ConnectOptions::from_uri(options.uri))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(matches!(err, ConnectError::Amqp(Error::Authentication(_))));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// Without the `tls` feature `amqps://` is refused up front; with it (the default; see
/// `tls.rs`) it dials, and port 1 has nothing listening.
async fn amqps_is_refused_clearly() {
    let err = amqp_async_std::connect("amqps://guest:guest@127.0.0.1:1/")
        .await
        .unwrap_err();
    #[cfg(not(feature = "tls"))]
    {
        assert!(matches!(err, ConnectError::TlsNotSupported));
        assert!(err.to_string().contains("TLS"));
    }
    #[cfg(feature = "tls")]
    assert!(matches!(err, ConnectError::Io(_)), "{err}");
}

async fn nothing_listening_fails_fast() {
    let err = amqp_async_std::connect("amqp://guest:guest@127.0.0.1:1/")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionBroken, "{err}");
}

async fn connects_by_host_name() {
    let mut options = ConnectOptions::parse(&uri()).unwrap();
    options.uri.host = "localhost".into();
    let conn = amqp_async_std::connect_with(options.uri).await.unwrap();
    conn.open_channel().await.unwrap();
    conn.close().await.unwrap();
}

/// The driver can run on the application's executor instead of its own thread.
async fn round_trip_with_spawner(spawn: fn(amqp_async_std::ConnectionDriver)) {
    let conn = amqp_async_std::connect_with_spawner(uri(), |driver| {
        spawn(driver);
        Ok(())
    })
    .await
    .unwrap();
    let (ch, q) = confirming_queue(&conn).await;
    assert!(publish(&ch, &q, "spawned").await.is_ack());
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
