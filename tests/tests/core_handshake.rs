//! The connection handshake: start-ok contents, SASL, tune negotiation, open, and every way
//! the handshake can fail.

use std::time::Duration;

use amqp_conformance::peer::{Pair, rabbitmq_start};
use amqp_proto::sasl::SaslMechanism;
use amqp_proto::{
    ConnectionClose, ConnectionCloseOk, ConnectionConfig, ConnectionOpenOk, ConnectionSecure,
    ConnectionStart, ConnectionTune, Error, ErrorKind, Event, FieldValue, HandshakeStep,
    LongString, Method, ReplyCode, State, Tuning,
};
use bytes::Bytes;

/// Runs the handshake up to the client's `start-ok` and returns it.
fn start_ok(pair: &mut Pair) -> amqp_proto::ConnectionStartOk {
    pair.send_method(0, rabbitmq_start());
    match pair.expect_method(0) {
        Method::ConnectionStartOk(m) => m,
        other => panic!("expected start-ok, got {other:?}"),
    }
}

#[test]
fn protocol_header_goes_first_and_nothing_else_before_start() {
    let mut pair = Pair::new(ConnectionConfig::default());
    pair.expect_silence();
    assert!(pair.peer.header_seen());
    assert_eq!(pair.client.state(), State::AwaitingStart);
    pair.expect_no_event();
    // Commands are refused until the handshake is over.
    assert!(matches!(pair.client.open_channel(), Err(Error::Usage(_))));
}

#[test]
fn start_ok_carries_client_properties_mechanism_and_response() {
    let mut pair = Pair::new(ConnectionConfig::default().with_connection_name("billing"));
    let ok = start_ok(&mut pair);
    let props = &ok.client_properties;
    assert_eq!(
        props.get("product").and_then(FieldValue::as_str),
        Some("amqp-rs")
    );
    assert_eq!(
        props.get("version").and_then(FieldValue::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        props.get("platform").and_then(FieldValue::as_str),
        Some("Rust")
    );
    assert_eq!(
        props.get("connection_name").and_then(FieldValue::as_str),
        Some("billing")
    );
    let Some(FieldValue::Table(caps)) = props.get("capabilities") else {
        panic!("capabilities is not a table: {props:?}");
    };
    let expected = [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ];
    assert_eq!(caps.len(), expected.len(), "{caps:?}");
    for name in expected {
        assert_eq!(
            caps.get(name),
            Some(&FieldValue::Bool(true)),
            "capability {name}"
        );
    }
    assert_eq!(ok.mechanism.as_str(), "PLAIN");
    assert_eq!(&ok.response[..], b"\0guest\0guest");
    assert_eq!(ok.locale.as_str(), "en_US");
    // The broker's properties are kept.
    assert_eq!(
        pair.client
            .server_properties()
            .get("product")
            .and_then(FieldValue::as_str),
        Some("RabbitMQ")
    );
}

#[test]
fn start_ok_without_connection_name_and_with_extra_properties() {
    let mut config = ConnectionConfig::default();
    config.client_properties = config
        .client_properties
        .with("team", "payments")
        .with("product", "mine");
    let mut pair = Pair::new(config);
    let ok = start_ok(&mut pair);
    let props = &ok.client_properties;
    assert!(props.get("connection_name").is_none());
    assert_eq!(
        props.get("team").and_then(FieldValue::as_str),
        Some("payments")
    );
    // The caller's entries win over the defaults.
    assert_eq!(
        props.get("product").and_then(FieldValue::as_str),
        Some("mine")
    );
}

/// Negotiates `ours` against the server's `theirs`; returns what tune-ok carried, after
/// checking that `tuning()` agrees.
fn negotiate(ours: (u16, u32, u16), theirs: (u16, u32, u16)) -> Tuning {
    let config = ConnectionConfig {
        channel_max: ours.0,
        frame_max: ours.1,
        heartbeat: ours.2,
        ..Default::default()
    };
    let mut pair = Pair::new(config);
    start_ok(&mut pair);
    pair.send_method(
        0,
        ConnectionTune {
            channel_max: theirs.0,
            frame_max: theirs.1,
            heartbeat: theirs.2,
        },
    );
    let Method::ConnectionTuneOk(ok) = pair.expect_method(0) else {
        panic!("expected tune-ok");
    };
    let tuning = Tuning {
        channel_max: ok.channel_max,
        frame_max: ok.frame_max,
        heartbeat: ok.heartbeat,
    };
    assert_eq!(pair.client.tuning(), tuning);
    tuning
}

#[test]
fn tune_takes_the_lower_non_zero_value() {
    let t = |channel_max, frame_max, heartbeat| Tuning {
        channel_max,
        frame_max,
        heartbeat,
    };
    // The broker lower on everything.
    assert_eq!(
        negotiate((2047, 131_072, 60), (100, 8192, 30)),
        t(100, 8192, 30)
    );
    // We are lower on everything.
    assert_eq!(
        negotiate((10, 4096, 10), (2047, 131_072, 60)),
        t(10, 4096, 10)
    );
    // Broker 0 means no limit: ours stands.
    assert_eq!(
        negotiate((2047, 131_072, 60), (0, 0, 0)),
        t(2047, 131_072, 60)
    );
    // Our 0 (channel_max, frame_max) means no limit: the broker's stands.
    assert_eq!(
        negotiate((0, 0, 60), (2047, 131_072, 120)),
        t(2047, 131_072, 60)
    );
    // Both 0: no limit at all.
    assert_eq!(negotiate((0, 0, 0), (0, 0, 0)), t(0, 0, 0));
    // Mixed.
    assert_eq!(negotiate((500, 0, 30), (0, 65_536, 60)), t(500, 65_536, 30));
}

#[test]
fn our_heartbeat_zero_disables_heartbeats_whatever_the_broker_wants() {
    assert_eq!(
        negotiate((2047, 131_072, 0), (2047, 131_072, 60)).heartbeat,
        0
    );
    assert_eq!(
        negotiate((2047, 131_072, 0), (2047, 131_072, 0)).heartbeat,
        0
    );
}

#[test]
fn our_frame_max_below_the_protocol_minimum_is_raised_to_it() {
    assert_eq!(
        negotiate((2047, 1000, 60), (2047, 131_072, 60)).frame_max,
        4096
    );
}

#[test]
fn server_frame_max_below_4096_closes_the_connection_with_an_error() {
    let mut pair = Pair::new(ConnectionConfig::default());
    start_ok(&mut pair);
    pair.send_method(
        0,
        ConnectionTune {
            channel_max: 2047,
            frame_max: 4095,
            heartbeat: 60,
        },
    );
    let Method::ConnectionClose(close) = pair.expect_method(0) else {
        panic!("expected connection.close");
    };
    assert_eq!(close.reply_code, ReplyCode::SYNTAX_ERROR.0);
    pair.expect_silence(); // no tune-ok, no open
    pair.send_method(0, ConnectionCloseOk {});
    match pair.expect_closed() {
        Some(Error::Protocol { code, text }) => {
            assert_eq!(code, ReplyCode::SYNTAX_ERROR);
            assert!(text.contains("4095"), "{text}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(pair.client.is_closed());
}

#[test]
fn open_names_the_vhost_and_open_ok_connects() {
    let config = ConnectionConfig {
        vhost: "orders".into(),
        ..Default::default()
    };
    let mut pair = Pair::new(config);
    start_ok(&mut pair);
    pair.send_method(
        0,
        ConnectionTune {
            channel_max: 100,
            frame_max: 65_536,
            heartbeat: 20,
        },
    );
    assert!(matches!(pair.expect_method(0), Method::ConnectionTuneOk(_)));
    let Method::ConnectionOpen(open) = pair.expect_method(0) else {
        panic!("expected open");
    };
    assert_eq!(open.virtual_host.as_str(), "orders");
    assert_eq!(pair.client.state(), State::Opening);
    pair.expect_no_event();
    pair.send_method(0, ConnectionOpenOk::default());
    match pair.expect_event() {
        Event::Connected {
            server_properties,
            tuning,
        } => {
            assert_eq!(server_properties, rabbitmq_start().server_properties);
            assert_eq!(
                tuning,
                Tuning {
                    channel_max: 100,
                    frame_max: 65_536,
                    heartbeat: 20
                }
            );
        }
        other => panic!("expected Connected, got {other:?}"),
    }
    assert!(pair.client.is_open());
}

/// A mechanism whose server sends challenges; every answer echoes the challenge.
#[derive(Debug)]
struct Token;

impl SaslMechanism for Token {
    fn name(&self) -> &str {
        "X-TOKEN"
    }
    fn initial_response(&self) -> Result<Bytes, String> {
        Ok(Bytes::from_static(b"hello"))
    }
    fn challenge(&self, challenge: &[u8]) -> Result<Bytes, String> {
        if challenge == b"fail" {
            return Err("refusing this challenge".into());
        }
        Ok(Bytes::from([b"answer:", challenge].concat()))
    }
}

#[test]
fn sasl_challenges_are_answered_by_the_mechanism() {
    let mut pair = Pair::new(ConnectionConfig::default().with_sasl(Token));
    let start = ConnectionStart {
        mechanisms: LongString::from("PLAIN X-TOKEN"),
        ..rabbitmq_start()
    };
    pair.send_method(0, start);
    let Method::ConnectionStartOk(ok) = pair.expect_method(0) else {
        panic!("expected start-ok");
    };
    assert_eq!(ok.mechanism.as_str(), "X-TOKEN");
    assert_eq!(&ok.response[..], b"hello");
    for nonce in [&b"n1"[..], b"n2"] {
        pair.send_method(
            0,
            ConnectionSecure {
                challenge: LongString::from(nonce),
            },
        );
        let Method::ConnectionSecureOk(answer) = pair.expect_method(0) else {
            panic!("expected secure-ok");
        };
        assert_eq!(
            &answer.response[..],
            [b"answer:", nonce].concat().as_slice()
        );
    }
    pair.send_method(
        0,
        ConnectionTune {
            channel_max: 0,
            frame_max: 0,
            heartbeat: 0,
        },
    );
    assert!(matches!(pair.expect_method(0), Method::ConnectionTuneOk(_)));
    assert!(matches!(pair.expect_method(0), Method::ConnectionOpen(_)));
    pair.send_method(0, ConnectionOpenOk::default());
    assert!(matches!(pair.expect_event(), Event::Connected { .. }));
}

#[test]
fn a_challenge_the_mechanism_refuses_is_an_authentication_error() {
    let mut pair = Pair::new(ConnectionConfig::default().with_sasl(Token));
    pair.send_method(
        0,
        ConnectionStart {
            mechanisms: LongString::from("X-TOKEN"),
            ..rabbitmq_start()
        },
    );
    assert!(matches!(
        pair.expect_method(0),
        Method::ConnectionStartOk(_)
    ));
    pair.send_method(
        0,
        ConnectionSecure {
            challenge: LongString::from("fail"),
        },
    );
    match pair.expect_closed() {
        Some(Error::Authentication(text)) => assert!(text.contains("refusing"), "{text}"),
        other => panic!("expected an authentication error, got {other:?}"),
    }
}

#[test]
fn plain_answering_a_challenge_is_an_authentication_error() {
    let mut pair = Pair::new(ConnectionConfig::default());
    start_ok(&mut pair);
    pair.send_method(
        0,
        ConnectionSecure {
            challenge: LongString::from("?"),
        },
    );
    assert!(matches!(
        pair.expect_closed(),
        Some(Error::Authentication(_))
    ));
}

#[test]
fn a_mechanism_the_server_does_not_offer_is_an_authentication_error() {
    let mut pair = Pair::new(ConnectionConfig::default());
    pair.send_method(
        0,
        ConnectionStart {
            mechanisms: LongString::from("AMQPLAIN EXTERNAL"),
            ..rabbitmq_start()
        },
    );
    match pair.expect_closed() {
        Some(Error::Authentication(text)) => {
            assert!(
                text.contains("PLAIN") && text.contains("AMQPLAIN EXTERNAL"),
                "{text}"
            );
        }
        other => panic!("expected an authentication error, got {other:?}"),
    }
    // No start-ok went out.
    pair.expect_silence();
    assert!(pair.client.is_closed());
}

#[test]
fn mechanism_names_match_whole_words_only() {
    // "PLAINISH" does not offer "PLAIN".
    let mut pair = Pair::new(ConnectionConfig::default());
    pair.send_method(
        0,
        ConnectionStart {
            mechanisms: LongString::from("PLAINISH"),
            ..rabbitmq_start()
        },
    );
    assert!(matches!(
        pair.expect_closed(),
        Some(Error::Authentication(_))
    ));
}

#[test]
fn close_403_during_login_is_an_authentication_error() {
    let mut pair = Pair::new(ConnectionConfig::default());
    start_ok(&mut pair);
    pair.send_method(
        0,
        ConnectionClose {
            reply_code: 403,
            reply_text: Pair::s(
                "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN",
            ),
            class_id: 0,
            method_id: 0,
        },
    );
    assert!(matches!(
        pair.expect_method(0),
        Method::ConnectionCloseOk(_)
    ));
    match pair.expect_closed() {
        Some(e @ Error::Authentication(_)) => {
            assert!(e.to_string().contains("Login was refused"), "{e}");
            assert_eq!(e.kind(), amqp_proto::ErrorKind::Authentication);
        }
        other => panic!("expected an authentication error, got {other:?}"),
    }
}

/// The scripted peer announces `authentication_failure_close`, as RabbitMQ does: such a broker
/// refuses a login with `connection.close`, so an EOF during login is a broken connection (a
/// crash or a restart), not wrong credentials, and recovery may retry it.
#[test]
fn eof_during_login_after_auth_failure_close_is_an_unexpected_eof() {
    let mut pair = Pair::new(ConnectionConfig::default());
    start_ok(&mut pair);
    pair.client.handle_eof(pair.now);
    assert!(matches!(
        pair.expect_closed(),
        Some(Error::UnexpectedEof { .. })
    ));
}

/// A broker that does not announce `authentication_failure_close` (older RabbitMQ) refuses a
/// login by hanging up: then the EOF is reported as an authentication failure.
#[test]
fn eof_during_login_without_auth_failure_close_is_an_authentication_error() {
    let mut pair = Pair::new(ConnectionConfig::default());
    pair.send_method(
        0,
        ConnectionStart {
            server_properties: amqp_proto::FieldTable::new().with("product", "RabbitMQ"),
            ..rabbitmq_start()
        },
    );
    assert!(matches!(
        pair.expect_method(0),
        Method::ConnectionStartOk(_)
    ));
    pair.client.handle_eof(pair.now);
    assert!(matches!(
        pair.expect_closed(),
        Some(Error::Authentication(_))
    ));
}

#[test]
fn eof_before_start_is_an_unexpected_eof() {
    let mut pair = Pair::new(ConnectionConfig::default());
    pair.pump();
    pair.client.handle_eof(pair.now);
    assert_eq!(
        pair.expect_closed(),
        Some(Error::UnexpectedEof { mid_frame: false })
    );
}

#[test]
fn close_530_after_open_is_vhost_access_refused() {
    let config = ConnectionConfig {
        vhost: "secret-vhost".into(),
        ..Default::default()
    };
    let mut pair = Pair::new(config);
    start_ok(&mut pair);
    pair.send_method(
        0,
        ConnectionTune {
            channel_max: 0,
            frame_max: 0,
            heartbeat: 60,
        },
    );
    assert!(matches!(pair.expect_method(0), Method::ConnectionTuneOk(_)));
    assert!(matches!(pair.expect_method(0), Method::ConnectionOpen(_)));
    pair.send_method(
        0,
        ConnectionClose {
            reply_code: 530,
            reply_text: Pair::s("NOT_ALLOWED - vhost secret-vhost not found"),
            class_id: 10,
            method_id: 40,
        },
    );
    assert!(matches!(
        pair.expect_method(0),
        Method::ConnectionCloseOk(_)
    ));
    match pair.expect_closed() {
        Some(Error::VhostAccessRefused { vhost, text }) => {
            assert_eq!(vhost, "secret-vhost");
            assert!(text.contains("not found"), "{text}");
        }
        other => panic!("expected VhostAccessRefused, got {other:?}"),
    }
}

#[test]
fn other_close_during_handshake_is_connection_closed_with_the_reason() {
    let mut pair = Pair::new(ConnectionConfig::default());
    start_ok(&mut pair);
    pair.send_method(
        0,
        ConnectionClose {
            reply_code: 320,
            reply_text: Pair::s("shutting down"),
            class_id: 0,
            method_id: 0,
        },
    );
    assert!(matches!(
        pair.expect_method(0),
        Method::ConnectionCloseOk(_)
    ));
    match pair.expect_closed() {
        Some(Error::ConnectionClosed(reason)) => {
            assert_eq!(reason.code, ReplyCode::CONNECTION_FORCED);
            assert_eq!(reason.text.as_str(), "shutting down");
        }
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
}

#[test]
fn handshake_times_out_under_fake_time() {
    let config = ConnectionConfig {
        handshake_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let mut pair = Pair::new(config);
    let started = pair.now;
    start_ok(&mut pair);
    assert_eq!(
        pair.client.poll_timeout(),
        Some(started + Duration::from_secs(5))
    );
    pair.advance(Duration::from_millis(4999));
    pair.expect_no_event();
    assert_eq!(pair.client.state(), State::Authenticating);
    pair.advance(Duration::from_millis(1));
    let err = pair.expect_closed().expect("an error");
    assert_eq!(err, Error::HandshakeTimeout(HandshakeStep::Authenticating));
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(
        err.to_string(),
        "connection handshake timed out waiting for connection.secure or connection.tune"
    );
    assert_eq!(pair.client.poll_timeout(), None);
    // Late frames from the broker are ignored.
    pair.send_method(0, ConnectionTune::default());
    pair.expect_no_event();
    pair.expect_silence();
}

#[test]
fn handshake_timeout_counts_from_the_start_even_while_opening() {
    let config = ConnectionConfig {
        handshake_timeout: Some(Duration::from_secs(5)),
        heartbeat: 0,
        ..Default::default()
    };
    let mut pair = Pair::new(config);
    start_ok(&mut pair);
    pair.advance(Duration::from_secs(3));
    pair.send_method(
        0,
        ConnectionTune {
            channel_max: 0,
            frame_max: 0,
            heartbeat: 0,
        },
    );
    assert!(matches!(pair.expect_method(0), Method::ConnectionTuneOk(_)));
    assert!(matches!(pair.expect_method(0), Method::ConnectionOpen(_)));
    pair.advance(Duration::from_secs(2));
    assert_eq!(
        pair.expect_closed(),
        Some(Error::HandshakeTimeout(HandshakeStep::Opening))
    );
}

#[test]
fn handshake_timeout_defaults_to_ten_seconds_apart_from_the_connect_timeout() {
    // The connect timeout bounds opening the transport (the glue's business); a broker that
    // accepts TCP and then says nothing is given up on after 10 s, naming the stalled step.
    let config = ConnectionConfig {
        connection_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    assert_eq!(config.handshake_timeout, Some(Duration::from_secs(10)));
    let mut pair = Pair::new(config);
    let started = pair.now;
    assert_eq!(
        pair.client.poll_timeout(),
        Some(started + Duration::from_secs(10))
    );
    pair.advance(Duration::from_secs(10));
    let err = pair.expect_closed().expect("an error");
    assert_eq!(err, Error::HandshakeTimeout(HandshakeStep::AwaitingStart));
    assert_eq!(
        err.to_string(),
        "connection handshake timed out waiting for connection.start"
    );
}

#[test]
fn no_handshake_timeout_when_none() {
    let config = ConnectionConfig {
        handshake_timeout: None,
        heartbeat: 0,
        ..Default::default()
    };
    let mut pair = Pair::new(config);
    assert_eq!(pair.client.poll_timeout(), None);
    pair.advance(Duration::from_secs(3600));
    pair.expect_no_event();
    assert_eq!(pair.client.state(), State::AwaitingStart);
}

#[test]
fn no_handshake_timeout_once_open() {
    let config = ConnectionConfig {
        handshake_timeout: Some(Duration::from_secs(5)),
        heartbeat: 0,
        ..Default::default()
    };
    let mut pair = Pair::connected_with(config, 2047, 131_072, 0);
    assert_eq!(pair.client.poll_timeout(), None);
    pair.advance(Duration::from_secs(3600));
    pair.expect_no_event();
    assert!(pair.client.is_open());
}

#[test]
fn server_speaking_another_version_is_refused_with_540() {
    let mut pair = Pair::new(ConnectionConfig::default());
    pair.send_method(
        0,
        ConnectionStart {
            version_major: 0,
            version_minor: 8,
            ..rabbitmq_start()
        },
    );
    let Method::ConnectionClose(close) = pair.expect_method(0) else {
        panic!("expected connection.close");
    };
    assert_eq!(close.reply_code, ReplyCode::NOT_IMPLEMENTED.0);
    pair.send_method(0, ConnectionCloseOk {});
    assert!(matches!(
        pair.expect_closed(),
        Some(Error::Protocol {
            code: ReplyCode::NOT_IMPLEMENTED,
            ..
        })
    ));
}

#[test]
fn a_method_out_of_order_during_the_handshake_is_503() {
    let mut pair = Pair::new(ConnectionConfig::default());
    // tune before start
    pair.send_method(0, ConnectionTune::default());
    let Method::ConnectionClose(close) = pair.expect_method(0) else {
        panic!("expected connection.close");
    };
    assert_eq!(close.reply_code, ReplyCode::COMMAND_INVALID.0);
    pair.send_method(0, ConnectionCloseOk {});
    assert!(matches!(
        pair.expect_closed(),
        Some(Error::Protocol {
            code: ReplyCode::COMMAND_INVALID,
            ..
        })
    ));
}

#[test]
fn close_before_the_broker_answered_ends_at_once() {
    let mut pair = Pair::new(ConnectionConfig::default());
    pair.pump();
    let id = pair.client.close(pair.now, "bye").expect("close");
    assert_eq!(
        pair.expect_completed(id),
        Ok(amqp_proto::Reply::ConnectionClosed)
    );
    assert_eq!(pair.expect_closed(), None);
    assert!(pair.client.is_closed());
}
