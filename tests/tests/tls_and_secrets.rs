//! Core behaviour behind issue 6 (TLS, EXTERNAL, secrets), in memory, no broker needed:
//! plain AMQP answered by a TLS server, EXTERNAL refused, and a refused
//! `connection.update-secret`.
//!
//! RabbitMQ answers `update-secret-ok` when its auth backend accepts the new secret (3.10's
//! internal backend always does: it has no expiring credentials; see the TLS scenarios of
//! `conformance`, against a real node) and refuses by closing the connection with 530
//! NOT_ALLOWED ("Secret update was refused for user ..."), as its OAuth 2.0 backend does for a
//! bad token. The pending request must then fail with that reason, not hang.

use amqp_conformance::peer::Pair;
use amqp_proto::sasl::External;
use amqp_proto::{
    ConnectionClose, ConnectionCloseOk, ConnectionConfig, Error, ErrorKind, Method, ReplyCode,
};

#[test]
fn a_tls_alert_instead_of_connection_start_says_to_use_amqps() {
    // What a TLS listener sends back for a plaintext protocol header: an alert record
    // (here split to check that three bytes are enough to tell).
    let mut pair = Pair::new(ConnectionConfig::default());
    pair.send_raw(&[0x15, 0x03]);
    assert!(pair.next_event().is_none());
    pair.send_raw(&[0x03, 0x00, 0x02, 0x02, 0x46]);
    let error = pair.expect_closed().expect("an error");
    assert!(error.to_string().contains("amqps://"), "{error}");
    assert_eq!(error.kind(), ErrorKind::FrameError);
    // Nothing is sent to a TLS server in response.
    assert!(pair.next_frame().is_none());
}

#[test]
fn a_refused_external_login_hints_at_the_client_certificate() {
    let mut pair = Pair::new(ConnectionConfig::default().with_sasl(External));
    let mut start = amqp_conformance::peer::rabbitmq_start();
    start.mechanisms = amqp_proto::LongString::from("PLAIN AMQPLAIN EXTERNAL");
    pair.send_method(0, start);
    let Method::ConnectionStartOk(start_ok) = pair.expect_method(0) else {
        panic!("start-ok")
    };
    assert_eq!(start_ok.mechanism.as_str(), "EXTERNAL");
    pair.send_method(
        0,
        ConnectionClose {
            reply_code: ReplyCode::ACCESS_REFUSED.0,
            reply_text: Pair::s(
                "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL",
            ),
            class_id: 0,
            method_id: 0,
        },
    );
    let error = pair.events_until_closed().1.expect("an error");
    assert_eq!(error.kind(), ErrorKind::Authentication);
    assert!(error.to_string().contains("client certificate"), "{error}");
}

#[test]
fn a_refused_update_secret_fails_with_the_brokers_530() {
    let mut pair = Pair::connected();
    let id = pair
        .client
        .update_secret(b"expired-token", "refresh")
        .unwrap();
    let Method::ConnectionUpdateSecret(_) = pair.expect_method(0) else {
        panic!("update-secret")
    };
    pair.send_method(
        0,
        ConnectionClose {
            reply_code: ReplyCode::NOT_ALLOWED.0,
            reply_text: Pair::s("NOT_ALLOWED - Secret update was refused for user 'app'"),
            class_id: 10,
            method_id: 70,
        },
    );
    let error = pair.expect_completed(id).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotAllowed, "{error}");
    assert!(
        error.to_string().contains("Secret update was refused"),
        "{error}"
    );
    assert!(matches!(error, Error::ConnectionClosed(_)), "{error:?}");
    // The client acknowledged the close, and the connection is over.
    let Method::ConnectionCloseOk(ConnectionCloseOk {}) = pair.expect_method(0) else {
        panic!("close-ok")
    };
    assert!(!pair.client.is_open());
}
