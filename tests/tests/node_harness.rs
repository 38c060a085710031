//! Tests of the dedicated-node harness (`amqp_conformance::node`) against real RabbitMQ nodes.
//!
//! Starts three nodes in total: a plain one (owned, restarted once and stopped here), the
//! shared TLS node (stopped by its watchdog when this binary exits) and one that fails to boot
//! on purpose.
//! These tests need the Debian `rabbitmq-server` package and fail (never skip) without it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use amqp_conformance::node::{BrokerNode, NodeError, NodeOptions, shared_tls_node};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends the protocol header and reads one frame; returns `(type, channel, payload)`.
fn exchange_header(stream: &mut impl ReadWrite) -> io::Result<(u8, u16, Vec<u8>)> {
    stream.write_all(PROTOCOL_HEADER)?;
    stream.flush()?;
    let mut header = [0u8; 7];
    stream.read_exact(&mut header)?;
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
    let mut payload = vec![0u8; size + 1];
    stream.read_exact(&mut payload)?;
    assert_eq!(payload.pop(), Some(0xCE), "frame end octet");
    Ok((
        header[0],
        u16::from_be_bytes([header[1], header[2]]),
        payload,
    ))
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Asserts the frame is `connection.start` (class 10, method 10) on channel 0.
fn assert_connection_start((kind, channel, payload): &(u8, u16, Vec<u8>)) {
    assert_eq!((*kind, *channel), (1, 0), "a method frame on channel 0");
    assert_eq!(&payload[..4], &[0, 10, 0, 10], "connection.start");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    sock
}

fn tls_config(ca: &Path, client: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(cert.expect("parse CA")).expect("add CA");
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .expect("read client cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("parse client cert");
            let key = PrivateKeyDer::from_pem_file(key).expect("read client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Connects, completes the TLS handshake and returns the session (or the handshake error).
fn tls_connect(
    node: &BrokerNode,
    config: Arc<ClientConfig>,
) -> io::Result<rustls::StreamOwned<ClientConnection, TcpStream>> {
    let mut sock = connect(node.tls_addr());
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(rustls::StreamOwned::new(conn, sock))
}

#[test]
fn plain_node_starts_answers_restarts_and_stops() {
    let started = std::time::Instant::now();
    let mut node = BrokerNode::start(NodeOptions::plain().config("heartbeat = 7"))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "plain node {} started in {:?}",
        node.node_name(),
        started.elapsed()
    );
    assert_ne!(node.amqp_port(), 5672, "never the shared broker's port");
    assert!(node.uri().ends_with(&format!(":{}/%2f", node.amqp_port())));

    // The port speaks AMQP 0-9-1.
    let frame = exchange_header(&mut connect(node.amqp_addr())).expect("connection.start");
    assert_connection_start(&frame);

    // The CLI reaches this node (and not the shared one).
    let status = node
        .rabbitmqctl(["status"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        status.contains(node.node_name()),
        "status output:\n{status}"
    );
    let listeners = node
        .rabbitmq_diagnostics(["-q", "listeners"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        listeners.contains(&format!(
            "127.0.0.1, port: {}, protocol: amqp",
            node.amqp_port()
        )),
        "listeners:\n{listeners}"
    );
    // extra_config lines reach the node.
    let heartbeat = node
        .rabbitmqctl(["-q", "eval", "application:get_env(rabbit, heartbeat)."])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(heartbeat.trim(), "{ok,7}");

    // A failing CLI command is a typed error that carries the node's log.
    match node.rabbitmqctl(["no_such_command"]) {
        Err(NodeError::Cli(failure)) => {
            assert!(!failure.output.is_empty());
            assert!(
                failure
                    .diagnostics
                    .log_tail
                    .contains("Server startup complete")
            );
        }
        other => panic!("expected a CLI error, got {other:?}"),
    }

    // restart(): same name, ports and data.
    node.rabbitmqctl(["add_vhost", "survives-restart"])
        .unwrap_or_else(|e| panic!("{e}"));
    let restarting = std::time::Instant::now();
    node.restart().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("plain node restarted in {:?}", restarting.elapsed());
    assert_connection_start(
        &exchange_header(&mut connect(node.amqp_addr())).expect("after restart"),
    );
    let vhosts = node
        .rabbitmqctl(["-q", "list_vhosts"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        vhosts.contains("survives-restart"),
        "vhosts after restart:\n{vhosts}"
    );

    let stopping = std::time::Instant::now();
    node.stop().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("plain node stopped in {:?}", stopping.elapsed());
    assert!(!node.is_running());
    for port in [node.amqp_port(), node.dist_port()] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "port {port} still answers after stop"
        );
    }
    node.stop().expect("stop is idempotent");

    let base = node.base_dir().to_path_buf();
    assert!(base.join("rabbitmq.conf").is_file());
    drop(node);
    assert!(!base.exists(), "{} not removed", base.display());
}

#[test]
fn tls_node_verifies_with_generated_ca_and_offers_external() {
    let node = shared_tls_node();
    assert!(node.tls_uri().starts_with("amqps://"));

    // Trusting the generated CA and presenting the client certificate (CN=guest).
    let config = tls_config(
        &node.ca_cert_path(),
        Some((&node.client_cert_path(), &node.client_key_path())),
    );
    let mut tls = tls_connect(node, config).unwrap_or_else(|e| panic!("TLS handshake: {e}"));
    let frame = exchange_header(&mut tls).expect("connection.start over TLS");
    assert_connection_start(&frame);
    assert!(
        contains(&frame.2, b"EXTERNAL") && contains(&frame.2, b"PLAIN"),
        "mechanisms offered with a client certificate: {:?}",
        String::from_utf8_lossy(&frame.2)
    );

    // The plugin is running and the mechanisms are configured.
    let active = node
        .rabbitmqctl(["-q", "eval", "rabbit_plugins:active()."])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        active.contains("rabbitmq_auth_mechanism_ssl"),
        "active plugins: {active}"
    );
    let mechanisms = node
        .rabbitmqctl([
            "-q",
            "eval",
            "application:get_env(rabbit, auth_mechanisms).",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        mechanisms.contains("'EXTERNAL'"),
        "auth_mechanisms: {mechanisms}"
    );

    // Loopback only.
    let listeners = node
        .rabbitmq_diagnostics(["-q", "listeners"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        listeners.contains(&format!(
            "127.0.0.1, port: {}, protocol: amqp/ssl",
            node.tls_port()
        )),
        "listeners:\n{listeners}"
    );
}

#[test]
fn tls_node_rejects_what_it_should() {
    let node = shared_tls_node();

    // A client that trusts an unrelated CA refuses the server certificate.
    let err = tls_connect(node, tls_config(&node.other_ca_path(), None))
        .expect_err("handshake must fail with the other CA");
    let rustls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a rustls error: {err}"));
    assert!(
        matches!(
            rustls_err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{rustls_err:?}"
    );

    // Without a client certificate (fail_if_no_peer_cert = false): accepted. (RabbitMQ offers
    // EXTERNAL on every TLS connection, and only on TLS connections.)
    let mut tls = tls_connect(node, tls_config(&node.ca_cert_path(), None))
        .unwrap_or_else(|e| panic!("TLS handshake without client cert: {e}"));
    let frame = exchange_header(&mut tls).expect("connection.start over TLS");
    assert_connection_start(&frame);
    let frame = exchange_header(&mut connect(node.amqp_addr())).expect("connection.start");
    assert_connection_start(&frame);
    assert!(
        !contains(&frame.2, b"EXTERNAL"),
        "EXTERNAL offered on the plain port"
    );

    // A client certificate from the unrelated CA is refused by the server (verify_peer). With
    // TLS 1.3 the client finishes its side first, so the refusal arrives on the next read.
    let pki = node.pki();
    let config = tls_config(
        &pki.ca_cert_path(),
        Some((&pki.other_client_cert_path(), &pki.other_client_key_path())),
    );
    let refused = tls_connect(node, config).and_then(|mut tls| exchange_header(&mut tls));
    match refused {
        Err(e) => eprintln!("untrusted client certificate refused: {e}"),
        Ok(frame) => panic!("untrusted client certificate accepted: {frame:?}"),
    }
}

#[test]
fn bad_config_fails_loudly_with_diagnostics() {
    let err = BrokerNode::start(NodeOptions::plain().config("no_such.setting = 1"))
        .expect_err("a node with an unknown setting must not start");
    let text = err.to_string();
    assert!(
        matches!(err, NodeError::StartFailed { .. }),
        "expected StartFailed, got: {text}"
    );
    assert!(
        text.contains("no_such.setting"),
        "error lacks the cause:\n{text}"
    );
}
