//! Request timeouts through the async glue, in memory on a fake clock: a request without a
//! reply fails with `RequestTimeout` and leaves its channel handle closed with that cause; a
//! command held back while the connection recovers fails with `RecoveryTimeout`, unsent,
//! after the timeout of its channel (the connection's default for `open_channel`, or the one
//! `open_channel_with_timeout` names).

use std::time::Duration;

use amqp_client::{ConnectionConfig, Error, ErrorKind, QueueDeclareOptions, State};
use amqp_conformance::client::{ClientPair, Task};
use amqp_proto::recovery::{Backoff, RecoveryConfig};
use amqp_proto::{ChannelCloseOk, ChannelId, Method};

const MS: Duration = Duration::from_millis(1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_request_without_a_reply_fails_and_closes_its_channel_handle() {
    let config = ConnectionConfig::default().with_request_timeout(Some(secs(10)));
    let (mut pair, conn) = ClientPair::connected_with(config);
    let ch = pair.open_channel(&conn);
    assert_eq!(ch.request_timeout(), Some(secs(10)));
    ch.set_request_timeout(Some(secs(3))).unwrap();
    assert_eq!(ch.request_timeout(), Some(secs(3)));
    let mut declare = Task::spawn(ch.queue_declare("jobs", QueueDeclareOptions::default()));
    assert!(matches!(pair.expect_method(1), Method::QueueDeclare(_)));
    declare.expect_pending();
    pair.advance(secs(3) - MS);
    declare.expect_pending();
    pair.advance(MS);
    let cause = Error::RequestTimeout {
        channel: ChannelId(1),
        request: "queue.declare",
        after: secs(3),
    };
    assert_eq!(declare.expect_ready().unwrap_err(), cause);
    match pair.expect_method(1) {
        Method::ChannelClose(c) => assert_eq!(c.reply_code, 200),
        other => panic!("expected channel.close, got {other:?}"),
    }
    // The handle reports why it closed; the connection goes on.
    assert!(!ch.is_open());
    let mut again = Task::spawn(ch.queue_declare("jobs", QueueDeclareOptions::default()));
    assert_eq!(again.expect_ready().unwrap_err(), cause);
    assert_eq!(cause.kind(), ErrorKind::Timeout);
    pair.send_method(1, ChannelCloseOk {});
    assert!(conn.is_open());
    let ch2 = pair.open_channel(&conn);
    assert_eq!(ch2.id(), ChannelId(1));
    assert_eq!(ch2.request_timeout(), Some(secs(10)));
}

#[test]
fn open_channel_without_an_answer_fails_with_the_timeout() {
    let config = ConnectionConfig::default().with_request_timeout(Some(secs(4)));
    let (mut pair, conn) = ClientPair::connected_with(config);
    let mut open = Task::spawn(conn.open_channel());
    assert!(matches!(pair.expect_method(1), Method::ChannelOpen(_)));
    pair.advance(secs(4));
    let err = open.expect_ready().unwrap_err();
    assert_eq!(
        err,
        Error::RequestTimeout {
            channel: ChannelId(1),
            request: "channel.open",
            after: secs(4),
        }
    );
    assert!(matches!(pair.expect_method(1), Method::ChannelClose(_)));
    assert!(conn.is_open());
}

#[test]
fn open_channel_with_timeout_takes_its_own_bound() {
    let config = ConnectionConfig::default().with_request_timeout(Some(secs(4)));
    let (mut pair, conn) = ClientPair::connected_with(config);
    let mut open = Task::spawn(conn.open_channel_with_timeout(Some(secs(1))));
    assert!(matches!(pair.expect_method(1), Method::ChannelOpen(_)));
    pair.advance(secs(1) - MS);
    open.expect_pending();
    pair.advance(MS);
    assert_eq!(
        open.expect_ready().unwrap_err(),
        Error::RequestTimeout {
            channel: ChannelId(1),
            request: "channel.open",
            after: secs(1),
        }
    );
}

/// Recovery on, and no way to redial in memory: every attempt fails and the connection stays
/// recovering, so commands are held back until their timeout.
#[test]
fn commands_held_back_by_a_recovery_fail_after_their_timeout_unsent() {
    let recovery = RecoveryConfig {
        backoff: Backoff {
            initial: secs(1),
            max: secs(1),
            multiplier: 1.0,
            jitter: 0.0,
        },
        ..RecoveryConfig::default()
    };
    let config = ConnectionConfig::default()
        .with_request_timeout(Some(secs(5)))
        .with_recovery(recovery);
    let (mut pair, conn) = ClientPair::connected_with(config);
    let ch = pair.open_channel(&conn);
    ch.set_request_timeout(Some(secs(2))).unwrap();
    pair.peer_eof();
    assert_eq!(conn.state(), State::Recovering);
    let mut declare = Task::spawn(ch.queue_declare("jobs", QueueDeclareOptions::default()));
    let mut open = Task::spawn(conn.open_channel());
    let mut quick = Task::spawn(conn.open_channel_with_timeout(Some(secs(1))));
    declare.expect_pending();
    open.expect_pending();
    quick.expect_pending();
    pair.advance(secs(1));
    assert_eq!(
        quick.expect_ready().unwrap_err(),
        Error::RecoveryTimeout(secs(1))
    );
    pair.advance(secs(1) - MS);
    declare.expect_pending();
    pair.advance(MS);
    assert_eq!(
        declare.expect_ready().unwrap_err(),
        Error::RecoveryTimeout(secs(2))
    );
    open.expect_pending();
    pair.advance(secs(3));
    assert_eq!(
        open.expect_ready().unwrap_err(),
        Error::RecoveryTimeout(secs(5))
    );
    assert_eq!(Error::RecoveryTimeout(secs(5)).kind(), ErrorKind::Timeout);
    // The channel handle is still usable once the connection is back: nothing closed it.
    assert!(ch.is_open());
    assert!(pair.next_frame().is_none());
}
