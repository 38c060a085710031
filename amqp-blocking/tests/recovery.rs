//! Automatic recovery through amqp-blocking's own I/O thread: the link to the broker at
//! 127.0.0.1:5672 (or `$AMQP_URI`'s host and port) runs through the test proxy, which cuts
//! it; the I/O thread must redial through its own dial, and the same handles must work again.
//! Only the proxy's links are cut, never the broker. Fails, not skips, when no broker answers.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use amqp_blocking::amqp_proto::Event;
use amqp_blocking::amqp_proto::recovery::{Backoff, RecoveryConfig};
use amqp_blocking::{
    AmqpUri, BasicProperties, BasicPublishOptions, ConfirmSelectOptions, Confirmation,
    ConnectOptions, Connection, ConnectionEvent, Events,
};
use amqp_conformance::proxy::Proxy;

const LIMIT: Duration = Duration::from_secs(30);

fn broker() -> (AmqpUri, SocketAddr) {
    let uri = std::env::var("AMQP_URI")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let uri = AmqpUri::parse(&uri).expect("a valid AMQP_URI");
    let addr = (uri.host.as_str(), uri.port)
        .to_socket_addrs()
        .expect("the broker's host resolves")
        .next()
        .expect("the broker's host has an address");
    (uri, addr)
}

/// Waits for the next recovery event: `true` for `Recovered`, `false` for `RecoveryStarted`.
fn next_recovery_event(events: &Events) -> bool {
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Some(ConnectionEvent::Recovery(Event::RecoveryStarted { .. })) => return false,
            Some(ConnectionEvent::Recovery(Event::Recovered { .. })) => return true,
            Some(_) => {}
            None => panic!("no recovery event within {LIMIT:?}"),
        }
    }
}

#[test]
fn a_cut_link_is_redialled_and_the_handles_work_again() {
    let (mut uri, addr) = broker();
    let proxy = Proxy::start(addr).expect("start the test proxy");
    uri.host = proxy.addr().ip().to_string();
    uri.port = proxy.addr().port();
    let mut options = ConnectOptions::from_uri(uri);
    options.config.recovery = Some(RecoveryConfig {
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
            ..Backoff::default()
        },
        ..RecoveryConfig::default()
    });
    let conn = Connection::connect_with(options)
        .unwrap_or_else(|e| panic!("cannot connect through the proxy to {addr}: {e}"));
    let events = conn.events();
    let channel = conn.open_channel().unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .unwrap();
    let publish_confirmed = || {
        let mut confirm = channel
            .basic_publish(
                "",
                "amqp-rs.blocking-recovery.nowhere",
                BasicPublishOptions::default(),
                &BasicProperties::default(),
                "x",
            )
            .unwrap();
        match confirm.wait_timeout(LIMIT) {
            Some(Confirmation::Ack(_)) => {}
            other => panic!("publish not acked: {other:?}"),
        }
    };
    publish_confirmed();

    for round in 0..2 {
        proxy.cut();
        assert!(
            !next_recovery_event(&events),
            "round {round}: recovery began"
        );
        assert!(next_recovery_event(&events), "round {round}: recovered");
        assert!(conn.is_open());
        publish_confirmed();
    }
    conn.close().unwrap();
}
