//! The async glue (handles, waiters, consumer queues, confirms, the driver) in conversation
//! with a scripted broker, in memory and on a fake clock: deterministic, no broker, no
//! socket, no sleep.

use std::io;
use std::time::Duration;

use amqp_client::{
    BasicProperties, BasicPublishOptions, Channel, ConfirmSelectOptions, Confirmation, Connection,
    ConnectionConfig, ConnectionEvent, Error, ErrorKind, HandshakeStep, PublishConfirm,
    QueueDeclareOptions,
};
use amqp_conformance::client::{ClientPair, Task};
use amqp_proto::{
    BasicAck, BasicNack, ChannelClose, ChannelCloseOk, ConfirmSelectOk, ConnectionBlocked,
    ConnectionClose, ConnectionCloseOk, ConnectionUnblocked, Frame, Method, QueueDeclareOk,
    ShortString,
};
use futures_util::StreamExt;

fn s(text: &str) -> ShortString {
    ShortString::try_from(text).unwrap()
}

fn declare_ok(queue: &str) -> QueueDeclareOk {
    QueueDeclareOk {
        queue: s(queue),
        message_count: 0,
        consumer_count: 0,
    }
}

fn select_confirms(pair: &mut ClientPair, ch: &Channel) {
    let mut select = Task::spawn(ch.confirm_select(ConfirmSelectOptions::default()));
    assert!(matches!(
        pair.expect_method(ch.id().0),
        Method::ConfirmSelect(_)
    ));
    pair.send_method(ch.id().0, ConfirmSelectOk {});
    select.expect_ready().unwrap();
}

fn publish<'a>(
    ch: &'a Channel,
    body: &'static [u8],
) -> Task<'a, Result<amqp_client::PublishConfirm, Error>> {
    Task::spawn(async move {
        let properties = BasicProperties::default();
        ch.basic_publish("", "q", BasicPublishOptions::default(), &properties, body)
            .await
    })
}

#[test]
fn a_request_completes_and_its_waiter_is_woken_once() {
    let (mut pair, conn) = ClientPair::connected();
    let ch = pair.open_channel(&conn);
    let mut declare = Task::spawn(ch.queue_declare("jobs", QueueDeclareOptions::default()));
    let Method::QueueDeclare(m) = pair.expect_method(1) else {
        panic!("expected queue.declare")
    };
    assert_eq!(m.queue.as_str(), "jobs");
    declare.expect_pending();
    assert_eq!(declare.wakes(), 0);
    pair.send_method(1, declare_ok("jobs"));
    assert_eq!(declare.wakes(), 1);
    assert_eq!(declare.expect_ready().unwrap().name.as_str(), "jobs");
    pair.expect_silence();
}

#[test]
fn a_dropped_request_future_leaves_nothing_behind() {
    let (mut pair, conn) = ClientPair::connected();
    let ch = pair.open_channel(&conn);
    drop(Task::spawn(
        ch.queue_declare("jobs", QueueDeclareOptions::default()),
    ));
    assert!(matches!(pair.expect_method(1), Method::QueueDeclare(_)));
    pair.send_method(1, declare_ok("jobs"));
    // The channel still works: the next request gets the next reply.
    let mut again = Task::spawn(ch.queue_declare("other", QueueDeclareOptions::default()));
    assert!(matches!(pair.expect_method(1), Method::QueueDeclare(_)));
    pair.send_method(1, declare_ok("other"));
    assert_eq!(again.expect_ready().unwrap().name.as_str(), "other");
}

#[test]
fn deliveries_arriving_together_wake_the_consumer_once() {
    let (mut pair, conn) = ClientPair::connected();
    let ch = pair.open_channel(&conn);
    let mut consumer = pair.start_consumer(&ch, "c1");
    let mut next = Task::spawn(consumer.next());
    next.expect_pending();
    for tag in 1..=3 {
        pair.peer.deliver(1, "c1", tag, b"work");
    }
    pair.run();
    assert_eq!(next.wakes(), 1);
    let first = next.expect_ready().unwrap().unwrap();
    assert_eq!(first.delivery_tag.0, 1);
    drop(next);
    // The other two were taken in the same batch: no more waiting.
    let mut rest = Vec::new();
    for _ in 0..2 {
        let mut next = Task::spawn(consumer.next());
        rest.push(next.expect_ready().unwrap().unwrap());
    }
    assert_eq!(rest[1].delivery_tag.0, 3);
    first.ack().unwrap();
    rest[1].ack_multiple().unwrap();
    let Method::BasicAck(a) = pair.expect_method(1) else {
        panic!("expected an ack")
    };
    assert_eq!((a.delivery_tag, a.multiple), (1, false));
    let Method::BasicAck(a) = pair.expect_method(1) else {
        panic!("expected an ack")
    };
    assert_eq!((a.delivery_tag, a.multiple), (3, true));
}

#[test]
fn acks_made_together_go_out_in_one_write() {
    let (mut pair, conn) = ClientPair::connected();
    let ch = pair.open_channel(&conn);
    let mut consumer = pair.start_consumer(&ch, "c1");
    for tag in 1..=10 {
        pair.peer.deliver(1, "c1", tag, b"work");
    }
    pair.run();
    let before = pair.driver_counts();
    for _ in 0..10 {
        Task::spawn(consumer.next())
            .expect_ready()
            .unwrap()
            .unwrap()
            .ack()
            .unwrap();
    }
    pair.run();
    let after = pair.driver_counts();
    assert_eq!(after.writes - before.writes, 1, "{before:?} -> {after:?}");
    for tag in 1..=10 {
        let Method::BasicAck(a) = pair.expect_method(1) else {
            panic!("expected an ack")
        };
        assert_eq!(a.delivery_tag, tag);
    }
}

#[test]
fn confirms_resolve_their_futures_and_wait_for_confirms() {
    let (mut pair, conn) = ClientPair::connected();
    let ch = pair.open_channel(&conn);
    select_confirms(&mut pair, &ch);
    let mut confirms: Vec<_> = (0..3)
        .map(|_| publish(&ch, b"m").expect_ready().unwrap())
        .map(Task::spawn)
        .collect();
    for _ in 0..3 {
        pair.expect_published(1);
    }
    let mut all = Task::spawn(ch.wait_for_confirms());
    confirms.iter_mut().for_each(Task::expect_pending);
    pair.send_method(
        1,
        BasicAck {
            delivery_tag: 2,
            multiple: true,
        },
    );
    assert!(confirms[0].expect_ready().is_ack());
    assert!(confirms[1].expect_ready().is_ack());
    confirms[2].expect_pending();
    all.expect_pending();
    pair.send_method(
        1,
        BasicNack {
            delivery_tag: 3,
            multiple: false,
            requeue: false,
        },
    );
    assert!(confirms[2].expect_ready().is_nack());
    assert_eq!(all.expect_ready(), Ok(false));
}

#[test]
fn publishing_parks_on_backpressure_and_resumes_when_output_drains() {
    let config = ConnectionConfig {
        high_water_mark: 4096,
        ..ConnectionConfig::default()
    };
    let (mut pair, conn) = ClientPair::connected_with(config);
    let ch = pair.open_channel(&conn);
    // A peer that takes nothing: the client's output piles up.
    pair.set_pipe_capacity(Some(0));
    let mut published = 0;
    let mut parked = loop {
        let mut p = publish(&ch, &[7; 1000]);
        match p.poll() {
            std::task::Poll::Ready(r) => {
                r.unwrap();
                published += 1;
                pair.run();
            }
            std::task::Poll::Pending => break p,
        }
        assert!(published < 100, "publishing never waited");
    };
    assert!(published >= 4, "only {published} publishes before waiting");
    assert!(!parked.is_woken());
    pair.set_pipe_capacity(None);
    pair.run();
    assert!(parked.is_woken());
    parked.expect_ready().unwrap();
    for _ in 0..=published {
        pair.expect_published(1);
    }
}

#[test]
fn publishing_waits_while_the_broker_blocks_the_connection_but_acks_go_out() {
    let (mut pair, conn) = ClientPair::connected();
    let ch = pair.open_channel(&conn);
    let mut consumer = pair.start_consumer(&ch, "c1");
    pair.deliver(1, "c1", 1, b"work");
    let delivery = Task::spawn(consumer.next())
        .expect_ready()
        .unwrap()
        .unwrap();
    let mut events = conn.events();
    pair.send_method(
        0,
        ConnectionBlocked {
            reason: s("low on memory"),
        },
    );
    assert_eq!(
        Task::spawn(events.next()).expect_ready(),
        Some(ConnectionEvent::Blocked {
            reason: s("low on memory")
        })
    );
    let mut parked = publish(&ch, b"m");
    parked.expect_pending();
    delivery.ack().unwrap();
    assert!(matches!(pair.expect_method(1), Method::BasicAck(_)));
    pair.expect_silence();
    pair.send_method(0, ConnectionUnblocked {});
    assert!(parked.is_woken());
    parked.expect_ready().unwrap();
    pair.expect_published(1);
}

/// A handle of every kind, each with something pending.
struct Everything {
    conn: Connection,
    ch: Channel,
    request: Task<'static, Result<amqp_client::QueueInfo, Error>>,
    confirm: Task<'static, Confirmation>,
    all_confirms: Task<'static, Result<bool, Error>>,
    next_delivery: Task<'static, Option<Result<amqp_client::Delivery, Error>>>,
    channel_closed: Task<'static, Error>,
    conn_closed: Task<'static, Option<Error>>,
    events: Task<'static, Vec<ConnectionEvent>>,
    returns: Task<'static, Option<amqp_client::ReturnedMessage>>,
}

fn everything() -> (ClientPair, Everything) {
    let (mut pair, conn) = ClientPair::connected();
    let ch = pair.open_channel(&conn);
    select_confirms(&mut pair, &ch);
    let mut consumer = pair.start_consumer(&ch, "c1");
    let confirm = publish(&ch, b"m").expect_ready().unwrap();
    pair.expect_published(1);
    let request = Task::spawn({
        let ch = ch.clone();
        async move {
            ch.queue_declare("jobs", QueueDeclareOptions::default())
                .await
        }
    });
    assert!(matches!(pair.expect_method(1), Method::QueueDeclare(_)));
    let all_confirms = Task::spawn({
        let ch = ch.clone();
        async move { ch.wait_for_confirms().await }
    });
    let next_delivery = Task::spawn(async move { consumer.next().await });
    let channel_closed = Task::spawn({
        let ch = ch.clone();
        async move { ch.closed().await }
    });
    let conn_closed = Task::spawn({
        let conn = conn.clone();
        async move { conn.closed().await }
    });
    let events = Task::spawn(conn.events().collect());
    let returns = Task::spawn({
        let mut returns = ch.on_return();
        async move { returns.next().await }
    });
    let mut all = Everything {
        conn,
        ch,
        request,
        confirm: Task::spawn(confirm),
        all_confirms,
        next_delivery,
        channel_closed,
        conn_closed,
        events,
        returns,
    };
    all.request.expect_pending();
    all.confirm.expect_pending();
    all.all_confirms.expect_pending();
    all.next_delivery.expect_pending();
    all.channel_closed.expect_pending();
    all.conn_closed.expect_pending();
    all.events.expect_pending();
    all.returns.expect_pending();
    (pair, all)
}

impl Everything {
    /// Every channel-level waiter failed with `why`.
    #[track_caller]
    fn channel_failed(&mut self, why: &Error) {
        assert_eq!(self.request.expect_ready().unwrap_err(), *why);
        assert_eq!(self.confirm.expect_ready(), Confirmation::Lost(why.clone()));
        assert_eq!(self.all_confirms.expect_ready(), Err(why.clone()));
        assert_eq!(
            self.next_delivery.expect_ready().unwrap().unwrap_err(),
            *why
        );
        assert_eq!(self.channel_closed.expect_ready(), *why);
        assert_eq!(self.returns.expect_ready(), None);
        assert!(!self.ch.is_open());
        // Asking again fails at once with the same reason.
        let mut again = Task::spawn(self.ch.queue_declare("", QueueDeclareOptions::default()));
        assert_eq!(again.expect_ready().unwrap_err(), *why);
    }

    /// The pending request failed with an error of `kind`, and so did every other waiter;
    /// the connection reports it as why it ended.
    #[track_caller]
    fn all_failed_as_the_request(&mut self, kind: ErrorKind) {
        let why = self.request.expect_ready().unwrap_err();
        assert_eq!(why.kind(), kind, "{why}");
        self.request = Task::spawn(std::future::ready(Err(why.clone())));
        self.all_failed(&why, Some(why.clone()));
    }

    /// Every waiter, channel and connection, failed with `why`; the connection reports `closed`.
    #[track_caller]
    fn all_failed(&mut self, why: &Error, closed: Option<Error>) {
        self.channel_failed(why);
        assert_eq!(self.conn_closed.expect_ready(), closed);
        assert_eq!(
            self.events.expect_ready(),
            vec![ConnectionEvent::Closed(closed)]
        );
        assert!(!self.conn.is_open());
        let mut open = Task::spawn(self.conn.open_channel());
        assert_eq!(open.expect_ready().unwrap_err(), *why);
    }
}

#[test]
fn the_broker_closing_the_channel_fails_everything_on_it() {
    let (mut pair, mut all) = everything();
    pair.send_method(
        1,
        ChannelClose {
            reply_code: 406,
            reply_text: s("PRECONDITION_FAILED - inequivalent arg"),
            class_id: 50,
            method_id: 10,
        },
    );
    assert!(matches!(pair.expect_method(1), Method::ChannelCloseOk(_)));
    let why = all.channel_closed.expect_ready();
    assert_eq!(why.kind(), ErrorKind::PreconditionFailed);
    all.channel_closed = Task::spawn(std::future::ready(why.clone()));
    all.channel_failed(&why);
    // The connection lives on.
    all.conn_closed.expect_pending();
    assert!(all.conn.is_open());
    let ch2 = pair.open_channel(&all.conn);
    assert!(ch2.is_open());
}

#[test]
fn the_broker_closing_the_connection_fails_every_handle() {
    let (mut pair, mut all) = everything();
    pair.send_method(
        0,
        ConnectionClose {
            reply_code: 320,
            reply_text: s("CONNECTION_FORCED - shutdown"),
            class_id: 0,
            method_id: 0,
        },
    );
    assert!(matches!(
        pair.expect_method(0),
        Method::ConnectionCloseOk(_)
    ));
    let why = all.conn_closed.expect_ready().expect("a reason");
    assert_eq!(why.kind(), ErrorKind::ConnectionForced);
    all.conn_closed = Task::spawn(std::future::ready(Some(why.clone())));
    all.all_failed(&why, Some(why.clone()));
    assert!(pair.driver_finished());
}

#[test]
fn end_of_stream_fails_every_handle() {
    let (mut pair, mut all) = everything();
    pair.peer_eof();
    all.all_failed_as_the_request(ErrorKind::ConnectionBroken);
    assert!(pair.driver_finished());
}

#[test]
fn a_transport_error_fails_every_handle() {
    let (mut pair, mut all) = everything();
    pair.fail_stream(io::ErrorKind::ConnectionReset);
    all.all_failed_as_the_request(ErrorKind::ConnectionBroken);
    assert!(pair.driver_finished());
}

#[test]
fn a_silent_broker_is_declared_dead_on_the_fake_clock() {
    let (mut pair, mut all) = everything();
    // Heartbeat 60 s: the client sends its own at half that, and gives up after two
    // intervals of silence.
    pair.advance(Duration::from_secs(31));
    assert!(matches!(pair.next_frame(), Some(Frame::Heartbeat)));
    all.request.expect_pending();
    pair.advance(Duration::from_secs(120));
    all.all_failed_as_the_request(ErrorKind::HeartbeatTimeout);
}

#[test]
fn a_broker_that_never_sends_connection_start_fails_the_connect_after_the_handshake_timeout() {
    let config = ConnectionConfig {
        handshake_timeout: Some(Duration::from_secs(10)),
        ..ConnectionConfig::default()
    };
    let (mut pair, mut connecting) = ClientPair::start(config);
    assert_eq!(pair.next_frame(), None, "only the protocol header was sent");
    pair.advance(Duration::from_millis(9_999));
    connecting.expect_pending();
    pair.advance(Duration::from_millis(1));
    let err = connecting
        .expect_ready()
        .expect_err("the handshake stalled");
    assert_eq!(err, Error::HandshakeTimeout(HandshakeStep::AwaitingStart));
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(pair.driver_finished());
}

#[test]
fn closing_the_connection_fails_every_handle_and_finishes_the_driver() {
    let (mut pair, mut all) = everything();
    let mut close = Task::spawn({
        let conn = all.conn.clone();
        async move { conn.close().await }
    });
    assert!(matches!(pair.expect_method(0), Method::ConnectionClose(_)));
    close.expect_pending();
    let why = all.request.expect_ready().unwrap_err();
    all.request = Task::spawn(std::future::ready(Err(why.clone())));
    pair.send_method(0, ConnectionCloseOk {});
    assert_eq!(close.expect_ready(), Ok(()));
    all.all_failed(&why, None);
    assert!(pair.driver_finished());
    assert!(pair.client_shut_down());
}

#[test]
fn a_stopped_driver_fails_every_handle() {
    let (mut pair, mut all) = everything();
    pair.drop_driver();
    all.all_failed_as_the_request(ErrorKind::ConnectionBroken);
}

#[test]
fn closing_a_channel_fails_what_waits_on_it() {
    let (mut pair, mut all) = everything();
    let mut close = Task::spawn({
        let ch = all.ch.clone();
        async move { ch.close().await }
    });
    assert!(matches!(pair.expect_method(1), Method::ChannelClose(_)));
    // What was pending on the channel fails at once with the client's own close (200).
    let why = all.request.expect_ready().unwrap_err();
    assert_eq!(why.kind(), ErrorKind::Success);
    all.request = Task::spawn(std::future::ready(Err(why.clone())));
    pair.send_method(1, ChannelCloseOk {});
    assert_eq!(close.expect_ready(), Ok(()));
    assert!(!all.ch.is_open());
    assert!(all.all_confirms.expect_ready().is_err());
    assert!(all.conn.is_open());
}

#[test]
fn dropping_handles_closes_what_they_held() {
    let (mut pair, conn) = ClientPair::connected();
    let ch = pair.open_channel(&conn);
    let consumer = pair.start_consumer(&ch, "c1");
    pair.deliver(1, "c1", 1, b"unseen");
    // A dropped consumer hands back what it never yielded, then cancels.
    drop(consumer);
    let Method::BasicReject(r) = pair.expect_method(1) else {
        panic!("expected basic.reject")
    };
    assert!(r.requeue);
    assert!(matches!(pair.expect_method(1), Method::BasicCancel(_)));
    // The last channel handle closes the channel.
    drop(ch);
    assert!(matches!(pair.expect_method(1), Method::ChannelClose(_)));
    // The last connection handle closes the connection.
    drop(conn);
    assert!(matches!(pair.expect_method(0), Method::ConnectionClose(_)));
    pair.send_method(0, ConnectionCloseOk {});
    assert!(pair.driver_finished());
}

#[test]
fn the_driver_reads_time_from_its_timer_only() {
    let (mut pair, conn) = ClientPair::connected();
    // No time passes on the fake clock: no heartbeat, however long the test takes.
    pair.run();
    pair.expect_silence();
    pair.advance(Duration::from_secs(29));
    pair.expect_silence();
    pair.advance(Duration::from_secs(2));
    assert!(matches!(pair.next_frame(), Some(Frame::Heartbeat)));
    assert!(conn.is_open());
}

#[test]
fn a_confirm_window_waiter_wakes_once_per_batch_not_per_confirm() {
    let (mut pair, conn) = ClientPair::connected();
    let ch = pair.open_channel(&conn);
    select_confirms(&mut pair, &ch);
    let mut pending: Vec<_> = (0..10)
        .map(|_| publish(&ch, b"m").expect_ready().unwrap())
        .collect();
    for _ in 0..10 {
        pair.expect_published(1);
    }
    assert_eq!(ch.confirms_outstanding(), 10);
    let mut window = Task::spawn(ch.wait_confirm_window(4));
    window.expect_pending();
    // Confirms trickling in one read at a time do not wake it until the window is down to 4.
    for tag in 1..=5 {
        pair.send_method(
            1,
            BasicAck {
                delivery_tag: tag,
                multiple: false,
            },
        );
    }
    assert_eq!(window.wakes(), 0);
    pair.send_method(
        1,
        BasicAck {
            delivery_tag: 6,
            multiple: false,
        },
    );
    assert_eq!(window.wakes(), 1);
    window.expect_ready().unwrap();
    // The confirms that arrived are collected without waiting; the rest come back pending.
    let mut resolved = 0;
    pending = pending
        .into_iter()
        .filter_map(|c| match PublishConfirm::try_resolve(c) {
            Ok(outcome) => {
                assert!(outcome.is_ack());
                resolved += 1;
                None
            }
            Err(still) => Some(still),
        })
        .collect();
    assert_eq!((resolved, pending.len()), (6, 4));
    // A batch of confirms in one read wakes the next window waiter once.
    let mut window = Task::spawn(ch.wait_confirm_window(0));
    for tag in 7..=10 {
        pair.peer.send(&Frame::Method(
            1,
            BasicAck {
                delivery_tag: tag,
                multiple: false,
            }
            .into(),
        ));
    }
    pair.run();
    assert_eq!(window.wakes(), 1);
    window.expect_ready().unwrap();
}

#[test]
fn io_counters_count_reads_writes_and_wake_ups() {
    let (mut pair, conn) = ClientPair::connected();
    let ch = pair.open_channel(&conn);
    let mut consumer = pair.start_consumer(&ch, "c1");
    let before = conn.io_counters();
    let mut next = Task::spawn(consumer.next());
    for tag in 1..=100 {
        pair.peer.deliver(1, "c1", tag, b"work");
    }
    pair.run();
    let after = conn.io_counters();
    // One read brought all of them, and woke the consumer once.
    assert_eq!(after.reads - before.reads, 1, "{before:?} -> {after:?}");
    assert_eq!(after.task_wakes - before.task_wakes, 1);
    next.expect_ready().unwrap().unwrap().ack().unwrap();
    pair.run();
    let acked = conn.io_counters();
    assert_eq!(acked.writes - after.writes, 1, "{after:?} -> {acked:?}");
    assert_eq!(acked.driver_wakes - after.driver_wakes, 1);
    assert_eq!(pair.driver_counts().writes as u64, acked.writes);
}
