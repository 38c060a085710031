//! What the TLS scenarios of the conformance suite (`amqp_conformance::conformance`, run
//! through every adapter) cannot see, because it is about logs: secrets never appear in logs,
//! `Debug`/`Display` output or errors, and turning verification off is logged as a warning.
//! The code under test is shared by the adapters (`amqp-client`), so tokio alone runs it:
//! a current-thread runtime (the `#[tokio::test]` default) runs the driver on the test's
//! thread, where a thread-local subscriber sees every event, rustls' `log` records included.
//!
//! Uses the shared TLS node (`amqp_conformance::node`); needs the Debian `rabbitmq-server`
//! package and fails (never skips) without it.
#![cfg(feature = "tls")]

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

#[path = "common/capture.rs"]
mod capture;

use amqp_conformance::node::{BrokerNode, shared_tls_node};
use amqp_tokio::{
    BasicGetOptions, BasicProperties, BasicPublishOptions, ConfirmSelectOptions, ConnectOptions,
    Connection, ErrorKind, QueueDeclareOptions, TlsOptions,
};
use capture::Capture;

/// Every test is bounded: a hang is a failure.
const LIMIT: Duration = Duration::from_secs(60);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

/// Starts the node off the runtime thread (it takes seconds).
async fn tls_node() -> &'static BrokerNode {
    tokio::task::spawn_blocking(shared_tls_node).await.unwrap()
}

fn path(p: std::path::PathBuf) -> String {
    p.to_str().expect("UTF-8 path").to_owned()
}

/// Publishes one confirmed message to an exclusive queue and gets it back.
async fn round_trip(conn: &Connection, body: &'static str) {
    let ch = conn.open_channel().await.unwrap();
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let q = ch.queue_declare("", options).await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let props = BasicProperties::default();
    let publish = BasicPublishOptions::default();
    let confirm = ch.basic_publish("", &q.name, publish, &props, body).await;
    assert!(confirm.unwrap().await.is_ack());
    let get = BasicGetOptions { no_ack: true };
    let got = ch
        .basic_get(&q.name, get)
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(&got.body[..], body.as_bytes());
}

/// `verify=verify_none` (URI) and `danger_accept_invalid_certs` (code) each log a warning.
/// (That they accept an expired certificate is a conformance scenario.)
#[tokio::test]
async fn disabled_verification_is_logged_as_a_warning() {
    let node = tls_node().await;
    let in_code = ConnectOptions::parse(&node.tls_uri())
        .unwrap()
        .with_tls(TlsOptions::new().danger_accept_invalid_certs());
    let in_uri = ConnectOptions::parse(&format!("{}?verify=verify_none", node.tls_uri())).unwrap();
    for options in [in_uri, in_code] {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(capture.clone())
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        let conn = within(Connection::connect_with(options)).await.unwrap();
        drop(guard);
        let logs = capture.text();
        assert!(
            logs.contains("WARN") && logs.contains("verification is DISABLED"),
            "{logs}"
        );
        within(conn.close()).await.unwrap();
    }
}

fn assert_hidden(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} reveals a secret:\n{text}");
    }
}

fn assert_debug_display_hidden(what: &str, value: &(impl Debug + std::fmt::Display), s: &[&str]) {
    assert_hidden(what, &format!("{value:?}"), s);
    assert_hidden(what, &format!("{value}"), s);
}

/// A current-thread runtime (the `#[tokio::test]` default) runs the driver on the test's
/// thread, so a thread-local subscriber sees every event, including rustls' `log` records.
#[tokio::test]
async fn secrets_never_appear_in_logs_debug_or_errors() {
    const USER: &str = "leak-check";
    const PASSWORD: &str = "Pw-d1st1nct1ve-7c3f9a";
    const NEW_SECRET: &str = "Rotated-s3cr3t-41e8b2";
    const WRONG: &str = "Wr0ng-pa55-9d2c71";
    let secrets = [PASSWORD, NEW_SECRET, WRONG];

    let node = tls_node().await;
    tokio::task::spawn_blocking(move || {
        node.rabbitmqctl(["add_user", USER, PASSWORD]).unwrap();
        node.rabbitmqctl(["set_permissions", "-p", "/", USER, ".*", ".*", ".*"])
            .unwrap();
    })
    .await
    .unwrap();

    let _ = tracing_log::LogTracer::init();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);

    let uri = format!(
        "amqps://{USER}:{PASSWORD}@localhost:{}/%2f?cacertfile={}",
        node.tls_port(),
        path(node.ca_cert_path())
    );
    let options = ConnectOptions::parse(&uri).unwrap();
    assert_debug_display_hidden("the URI", &options.uri, &secrets);
    assert_hidden("ConnectOptions", &format!("{options:?}"), &secrets);
    assert_hidden(
        "ConnectionConfig",
        &format!("{:?}", options.config),
        &secrets,
    );
    tracing::info!(?options, uri = %options.uri, "test: connecting with");

    within(async {
        let conn = Connection::connect_with(options).await.unwrap();
        assert_hidden("Connection", &format!("{conn:?}"), &secrets);
        round_trip(&conn, "secret-free payload").await;
        conn.update_secret(NEW_SECRET.as_bytes(), "rotation")
            .await
            .unwrap();
        conn.close().await.unwrap();

        // A refused login: neither the error nor the logs show the wrong password.
        let bad = uri.replace(PASSWORD, WRONG);
        let err = Connection::connect(&bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
        assert_debug_display_hidden("the login error", &err, &secrets);
        // Invalid URIs neither.
        let err = Connection::connect(&format!("amqps://{USER}:{WRONG}@localhost:0/"))
            .await
            .unwrap_err();
        assert_debug_display_hidden("the URI error", &err, &secrets);
    })
    .await;
    drop(guard);

    let logs = capture.text();
    for expected in [
        "amqp: connecting",
        "amqp: TLS session established",
        "amqp: connection established",
        "amqp: updating the connection secret",
        "amqp: connection closed",
    ] {
        assert!(
            logs.contains(expected),
            "no {expected:?} in the logs:\n{logs}"
        );
    }
    // rustls' own (log crate) records came through as well.
    assert!(
        logs.contains("rustls"),
        "no rustls records in the logs:\n{logs}"
    );
    assert_hidden("the TRACE-level logs", &logs, &secrets);
}
