//! TLS (`amqps://`), client certificates and SASL EXTERNAL, `connection.update-secret`, and
//! secrets kept out of logs, against dedicated RabbitMQ nodes (`amqp_conformance::node`).
//!
//! Starts three nodes: the shared TLS node (valid certificate for `localhost`/`127.0.0.1`),
//! one presenting an expired certificate and one whose certificate is for another host name.
//! Needs the Debian `rabbitmq-server` package; fails (never skips) without it.
#![cfg(feature = "tls")]

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_conformance::node::{BrokerNode, NodeOptions, ServerCertKind, shared_tls_node};
use amqp_tokio::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, ConfirmSelectOptions, Connect,
    ConnectError, ConnectOptions, Connection, ErrorKind, FieldTable, QueueDeclareOptions,
    TlsErrorKind, TlsOptions,
};
use futures_util::StreamExt;

/// Every test is bounded: a hang is a failure.
const LIMIT: Duration = Duration::from_secs(60);
/// What "prompt" means for a failure that needs no broker-side timeout.
const PROMPT: Duration = Duration::from_secs(10);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

/// Starts the node off the runtime thread (it takes seconds).
async fn tls_node() -> &'static BrokerNode {
    tokio::task::spawn_blocking(shared_tls_node).await.unwrap()
}

async fn own_node(kind: ServerCertKind) -> BrokerNode {
    tokio::task::spawn_blocking(move || BrokerNode::start(NodeOptions::tls().server_cert(kind)))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot start a node with a {kind:?} certificate: {e}"))
}

fn path(p: std::path::PathBuf) -> String {
    p.to_str().expect("UTF-8 path").to_owned()
}

/// `amqps://guest:guest@localhost:TLSPORT/%2f?cacertfile=CA` plus `extra`.
fn tls_uri(node: &BrokerNode, extra: &str) -> String {
    format!(
        "{}?cacertfile={}{extra}",
        node.tls_uri(),
        path(node.ca_cert_path())
    )
}

/// Connects, expecting failure, and checks it came promptly.
async fn connect_err(options: impl amqp_tokio::IntoConnectOptions + Send) -> ConnectError {
    let started = Instant::now();
    let result = within(Connection::connect_with(options)).await;
    let elapsed = started.elapsed();
    let err = match result {
        Ok(_) => panic!("connected, but a failure was expected"),
        Err(e) => e,
    };
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

/// Declares an exclusive queue, publishes with confirms, consumes and acks one message.
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

// ---------------------------------------------------------------------------------------------
// Positive
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn publish_and_consume_over_amqps() {
    let node = tls_node().await;
    within(async {
        let conn = Connection::connect(&tls_uri(node, "")).await.unwrap();
        round_trip(&conn, "over TLS").await;
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn amqps_by_ip_address_and_with_options_in_code() {
    let node = tls_node().await;
    within(async {
        // 127.0.0.1 is an IP SAN of the server certificate; settings given in code.
        let options = ConnectOptions::parse(&format!(
            "amqps://guest:guest@127.0.0.1:{}/%2f",
            node.tls_port()
        ))
        .unwrap()
        .with_tls(TlsOptions::new().with_ca_pem(std::fs::read(node.ca_cert_path()).unwrap()));
        let conn = Connection::connect_with(options).await.unwrap();
        round_trip(&conn, "by IP").await;
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn external_login_with_a_client_certificate() {
    let node = tls_node().await;
    within(async {
        // No password anywhere: the broker takes the user name (CN=guest) from the cert.
        let uri = format!(
            "amqps://localhost:{}/%2f?cacertfile={}&certfile={}&keyfile={}\
             &auth_mechanism=external",
            node.tls_port(),
            path(node.ca_cert_path()),
            path(node.client_cert_path()),
            path(node.client_key_path()),
        );
        let mut options = ConnectOptions::parse(&uri).unwrap();
        assert_eq!(options.config.sasl.name(), "EXTERNAL");
        options.config.connection_name = Some("amqp-tokio-external".into());
        let conn = Connection::connect_with(options).await.unwrap();
        round_trip(&conn, "EXTERNAL").await;

        let listed = tokio::task::spawn_blocking(move || {
            node.rabbitmqctl([
                "list_connections",
                "client_properties",
                "user",
                "auth_mechanism",
                "ssl",
            ])
        })
        .await
        .unwrap()
        .unwrap();
        let line = listed
            .lines()
            .find(|l| l.contains("amqp-tokio-external"))
            .unwrap_or_else(|| panic!("connection not listed:\n{listed}"));
        assert!(line.contains("\tguest\tEXTERNAL\ttrue"), "{line}");
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn verify_none_accepts_an_expired_certificate() {
    let node = own_node(ServerCertKind::Expired).await;
    within(async {
        // Strict verification fails: the certificate expired in 2001.
        let err = connect_err(tls_uri(&node, "")).await;
        assert_eq!(tls_kind(&err), TlsErrorKind::CertificateRejected, "{err}");
        assert_eq!(err.kind(), ErrorKind::Tls);
        let text = err.to_string();
        assert!(text.contains("expired"), "{text}");

        // verify=verify_none (in the URI) and danger_accept_invalid_certs (in code) accept it,
        // with a warning (the driver runs on this thread: a thread-local subscriber sees it).
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(capture.clone())
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        let conn = Connection::connect(&format!("{}?verify=verify_none", node.tls_uri()))
            .await
            .unwrap();
        drop(guard);
        let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert!(
            logs.contains("WARN") && logs.contains("verification is DISABLED"),
            "{logs}"
        );
        round_trip(&conn, "unverified").await;
        conn.close().await.unwrap();
        let options = ConnectOptions::parse(&node.tls_uri())
            .unwrap()
            .with_tls(TlsOptions::new().danger_accept_invalid_certs());
        let conn = Connection::connect_with(options).await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Negative: each fails promptly with a clear error
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_ca_is_rejected() {
    let node = tls_node().await;
    // A CA file that did not issue the server's certificate.
    let uri = format!(
        "{}?cacertfile={}",
        node.tls_uri(),
        path(node.other_ca_path())
    );
    let err = connect_err(uri).await;
    assert_eq!(tls_kind(&err), TlsErrorKind::CertificateRejected, "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // No CA file: the webpki roots do not know the test CA either.
    let err = connect_err(node.tls_uri()).await;
    assert_eq!(tls_kind(&err), TlsErrorKind::CertificateRejected, "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn wrong_host_name_is_rejected() {
    let node = own_node(ServerCertKind::WrongHost).await;
    // Trusted CA, but the certificate is for wrong-host.invalid, not localhost.
    let err = connect_err(tls_uri(&node, "")).await;
    assert_eq!(tls_kind(&err), TlsErrorKind::CertificateRejected, "{err}");
    let text = err.to_string();
    assert!(text.contains("not valid for name"), "{text}");
    assert!(text.contains("localhost"), "{text}");

    // Verifying against the name the certificate has works (server_name_indication).
    let conn = within(Connection::connect(&tls_uri(
        &node,
        "&server_name_indication=wrong-host.invalid",
    )))
    .await
    .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn server_name_override_is_verified() {
    let node = tls_node().await;
    // The shared node's certificate is valid for localhost; insisting on another name fails.
    let err = connect_err(tls_uri(node, "&server_name_indication=other.example")).await;
    assert_eq!(tls_kind(&err), TlsErrorKind::CertificateRejected, "{err}");
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn plain_amqp_to_the_tls_port_fails_promptly() {
    let node = tls_node().await;
    let err = connect_err(format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f",
        node.tls_port()
    ))
    .await;
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ConnectionBroken | ErrorKind::FrameError | ErrorKind::Tls
        ),
        "{:?}: {err}",
        err.kind()
    );
    assert!(err.to_string().contains("TLS"), "{err}");
}

#[tokio::test]
async fn tls_to_the_plain_port_fails_promptly() {
    let node = tls_node().await;
    let uri = format!(
        "amqps://guest:guest@localhost:{}/%2f?cacertfile={}",
        node.amqp_port(),
        path(node.ca_cert_path())
    );
    let err = connect_err(uri).await;
    assert_eq!(tls_kind(&err), TlsErrorKind::NotTls, "{err}");
    assert!(err.to_string().contains("plain amqp:// port"), "{err}");
}

#[tokio::test]
async fn external_without_a_client_certificate_is_refused() {
    let node = tls_node().await;
    let err = connect_err(tls_uri(node, "&auth_mechanism=external")).await;
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    let text = err.to_string();
    assert!(text.contains("EXTERNAL"), "{text}");
    assert!(text.contains("client certificate"), "{text}");
}

#[tokio::test]
async fn client_certificate_from_an_unknown_ca_is_refused() {
    let node = tls_node().await;
    let pki = node.pki();
    let uri = tls_uri(
        node,
        &format!(
            "&certfile={}&keyfile={}&auth_mechanism=external",
            path(pki.other_client_cert_path()),
            path(pki.other_client_key_path())
        ),
    );
    // With TLS 1.3 the broker's verdict on our certificate comes after our side of the
    // handshake finished, so it can surface as a TLS error or as the broken AMQP handshake.
    let err = connect_err(uri).await;
    let text = err.to_string();
    assert!(
        matches!(err.kind(), ErrorKind::Tls | ErrorKind::ConnectionBroken),
        "{:?}: {text}",
        err.kind()
    );
    assert!(text.contains("certificate"), "{text}");
}

#[tokio::test]
async fn unusable_tls_settings_fail_before_dialling() {
    // Port 1: nothing listens, so only a settings error can explain a prompt TLS error.
    for (query, needle) in [
        ("cacertfile=/nonexistent/ca.pem", "/nonexistent/ca.pem"),
        ("certfile=/nonexistent/client.pem", "keyfile"),
        (
            "certfile=/nonexistent/c.pem&keyfile=/nonexistent/k.pem",
            "/nonexistent/c.pem",
        ),
    ] {
        let err = connect_err(format!("amqps://127.0.0.1:1/?{query}")).await;
        assert_eq!(tls_kind(&err), TlsErrorKind::Config, "{err}");
        assert_eq!(err.kind(), ErrorKind::Usage);
        assert!(err.to_string().contains(needle), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// update-secret
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn update_secret_with_the_internal_backend() {
    let node = tls_node().await;
    within(async {
        let conn = Connection::connect(&tls_uri(node, "")).await.unwrap();
        // RabbitMQ 3.10's internal backend has no expiring credentials: it accepts the
        // update (without checking the new secret) and the connection stays usable.
        conn.update_secret(b"guest", "rotation").await.unwrap();
        assert!(conn.is_open());
        round_trip(&conn, "after update-secret").await;
        conn.close().await.unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Secrets never leak
// ---------------------------------------------------------------------------------------------

/// A `MakeWriter` that appends everything to one buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
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

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
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
