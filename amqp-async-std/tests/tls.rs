//! TLS (`amqps://`), client certificates and SASL EXTERNAL, and `connection.update-secret`
//! through amqp-async-std, against dedicated RabbitMQ nodes (`amqp_conformance::node`).
//!
//! Starts two nodes: the shared TLS node and one presenting an expired certificate. (The
//! host-name check is exercised with `server_name_indication` on the shared node.) Needs the
//! Debian `rabbitmq-server` package; fails (never skips) without it.
#![cfg(feature = "tls")]

use std::future::Future;
use std::time::{Duration, Instant};

use amqp_async_std::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, ConfirmSelectOptions, Connect,
    ConnectError, ConnectOptions, Connection, ErrorKind, FieldTable, QueueDeclareOptions,
    TlsErrorKind, TlsOptions,
};
use amqp_conformance::node::{BrokerNode, NodeOptions, ServerCertKind, shared_tls_node};
use futures_lite::StreamExt;

const LIMIT: Duration = Duration::from_secs(60);
const PROMPT: Duration = Duration::from_secs(10);

/// Runs `f` on the current thread, failing if it takes longer than [`LIMIT`].
fn run<T>(f: impl Future<Output = T>) -> T {
    smol::block_on(futures_lite::future::or(async { Some(f.await) }, async {
        async_io::Timer::after(LIMIT).await;
        None
    }))
    .expect("timed out")
}

fn path(p: std::path::PathBuf) -> String {
    p.to_str().expect("UTF-8 path").to_owned()
}

fn tls_uri(node: &BrokerNode, extra: &str) -> String {
    format!(
        "{}?cacertfile={}{extra}",
        node.tls_uri(),
        path(node.ca_cert_path())
    )
}

fn connect_err(options: impl amqp_async_std::IntoConnectOptions + Send) -> ConnectError {
    let started = Instant::now();
    let err = match run(Connection::connect_with(options)) {
        Ok(_) => panic!("connected, but a failure was expected"),
        Err(e) => e,
    };
    let elapsed = started.elapsed();
    assert!(elapsed < PROMPT, "took {elapsed:?} to fail with: {err}");
    eprintln!("failed as expected after {elapsed:?}: {err}");
    err
}

fn tls_kind(err: &ConnectError) -> TlsErrorKind {
    match err {
        ConnectError::Tls(e) => e.kind(),
        other => panic!("expected a TLS error, got {other:?} ({other})"),
    }
}

async fn round_trip(conn: &Connection, body: &str) {
    let ch = conn.open_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::new(),
        )
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            "",
            &q.name,
            BasicPublishOptions::default(),
            &BasicProperties::default(),
            body.as_bytes().to_vec(),
        )
        .await
        .unwrap();
    assert!(confirm.await.is_ack());
    let mut consumer = ch
        .basic_consume(
            &q.name,
            "",
            BasicConsumeOptions::default(),
            FieldTable::new(),
        )
        .await
        .unwrap();
    let delivery = consumer.next().await.expect("a delivery").unwrap();
    assert_eq!(&delivery.body[..], body.as_bytes());
    delivery.ack().unwrap();
}

#[test]
fn publish_and_consume_over_amqps() {
    let node = shared_tls_node();
    run(async {
        let conn = Connection::connect(&tls_uri(node, "")).await.unwrap();
        round_trip(&conn, "over TLS").await;
        conn.close().await.unwrap();
    });
}

#[test]
fn publish_and_consume_over_amqps_on_async_std_with_options_in_code() {
    let node = shared_tls_node();
    async_std::task::block_on(async {
        let options = ConnectOptions::parse(&format!(
            "amqps://guest:guest@127.0.0.1:{}/%2f",
            node.tls_port()
        ))
        .unwrap()
        .with_tls(TlsOptions::new().with_ca_file(node.ca_cert_path()));
        // The driver on the application's executor instead of the I/O thread.
        let conn = amqp_async_std::connect_with_spawner(options, |driver| {
            async_std::task::spawn(driver);
            Ok(())
        })
        .await
        .unwrap();
        round_trip(&conn, "on async-std").await;
        conn.close().await.unwrap();
    });
}

#[test]
fn external_login_with_a_client_certificate() {
    let node = shared_tls_node();
    let uri = format!(
        "amqps://localhost:{}/%2f?cacertfile={}&certfile={}&keyfile={}&auth_mechanism=external",
        node.tls_port(),
        path(node.ca_cert_path()),
        path(node.client_cert_path()),
        path(node.client_key_path()),
    );
    run(async {
        let conn = Connection::connect(&uri).await.unwrap();
        round_trip(&conn, "EXTERNAL").await;
        conn.close().await.unwrap();
    });
}

#[test]
fn update_secret_with_the_internal_backend() {
    let node = shared_tls_node();
    run(async {
        let conn = Connection::connect(&tls_uri(node, "")).await.unwrap();
        // RabbitMQ 3.10's internal backend accepts it; the connection stays usable.
        conn.update_secret(b"guest", "rotation").await.unwrap();
        round_trip(&conn, "after update-secret").await;
        conn.close().await.unwrap();
    });
}

#[test]
fn expired_certificate_is_rejected_unless_verification_is_off() {
    let node = BrokerNode::start(NodeOptions::tls().server_cert(ServerCertKind::Expired))
        .expect("start a node with an expired certificate");
    let err = connect_err(tls_uri(&node, ""));
    assert_eq!(tls_kind(&err), TlsErrorKind::CertificateRejected, "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    run(async {
        let conn = Connection::connect(&format!("{}?verify=verify_none", node.tls_uri()))
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
}

#[test]
fn unknown_ca_is_rejected() {
    let node = shared_tls_node();
    let err = connect_err(format!(
        "{}?cacertfile={}",
        node.tls_uri(),
        path(node.other_ca_path())
    ));
    assert_eq!(tls_kind(&err), TlsErrorKind::CertificateRejected, "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[test]
fn wrong_host_name_is_rejected() {
    let node = shared_tls_node();
    let err = connect_err(tls_uri(node, "&server_name_indication=wrong-host.invalid"));
    assert_eq!(tls_kind(&err), TlsErrorKind::CertificateRejected, "{err}");
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[test]
fn plain_amqp_to_the_tls_port_fails_promptly() {
    let node = shared_tls_node();
    let err = connect_err(format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f",
        node.tls_port()
    ));
    assert!(err.to_string().contains("amqps://"), "{err}");
}

#[test]
fn tls_to_the_plain_port_fails_promptly() {
    let node = shared_tls_node();
    let err = connect_err(format!(
        "amqps://guest:guest@localhost:{}/%2f?cacertfile={}",
        node.amqp_port(),
        path(node.ca_cert_path())
    ));
    assert_eq!(tls_kind(&err), TlsErrorKind::NotTls, "{err}");
}

#[test]
fn external_without_a_client_certificate_is_refused() {
    let node = shared_tls_node();
    let err = connect_err(tls_uri(node, "&auth_mechanism=external"));
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(err.to_string().contains("client certificate"), "{err}");
}
