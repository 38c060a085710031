//! Automatic recovery against a real broker, one text for every adapter: a confirming
//! publisher and a consumer keep running on one recovering connection while the test, in
//! turn, closes the connection with `rabbitmqctl close_connection`, restarts the app
//! (`stop_app`/`start_app`), kills and restarts the node, and stalls then cuts the link
//! through the test [`Proxy`]. Afterwards every message the publisher was told is confirmed
//! has been consumed at least once; duplicates are counted and printed. Every wait is
//! bounded, so a hang fails the test.
//!
//! The scenario has two sides. The *fault side* ([`faults_are_recovered`]) is plain
//! blocking code on the test thread, the same for every adapter: it starts the node and the
//! proxy, injects the faults and checks the tally. The *client side* is written once, as
//! the `recovery_scenario!` text below, under the same rules as the other conformance
//! scenarios (see the [module docs](super)): it is expanded as `async fn recovery_client`
//! in [`super::asynchronous::recovery_scenario`] and, without `async`/`.await`, in
//! [`super::blocking::recovery_scenario`]. The flavours' `recovery_through_faults` run it
//! on a thread of its own and hand it to the fault side.
//!
//! The node is the test's own ([`BrokerNode`]), never the shared broker. The connection runs
//! in at-least-once mode (unconfirmed publishes are published again by the client); should a
//! confirm still resolve as lost or nacked, the publisher sends that message again itself.
//! Only confirmed messages count.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use amqp_client::ConnectOptions;
use amqp_proto::recovery::{Backoff, RecoveryConfig};

use super::support::{Task, WAIT};
use crate::node::{BrokerNode, NodeOptions};
use crate::proxy::Proxy;

/// Longest wait for one fault to be recovered from, for one confirm, and for the confirmed
/// messages to arrive once publishing stops.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
const QUEUE: &str = "amqp-rs.recovery";
const NAME: &str = "amqp-rs-recovery-scenario";

/// What the client side tells the fault side while it runs.
#[derive(Debug)]
enum Report {
    /// The connection was lost and recovery began.
    Started,
    Recovered(Duration),
}

/// The client side's link to the fault side: what to connect with, when to stop publishing,
/// and where the recovery events go.
#[derive(Debug, Clone)]
pub struct FaultSide {
    options: ConnectOptions,
    stop: Arc<AtomicBool>,
    reports: mpsc::Sender<Report>,
}

impl FaultSide {
    /// Connect options: through the proxy, 2 s heartbeats, recovery in at-least-once mode.
    pub fn options(&self) -> ConnectOptions {
        self.options.clone()
    }

    /// The durable queue the publisher fills and the consumer drains.
    pub fn queue(&self) -> &'static str {
        QUEUE
    }

    /// Whether the faults are over and the publisher should stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Reports a `RecoveryStarted` event.
    pub fn started(&self) {
        let _ = self.reports.send(Report::Started);
    }

    /// Reports a `Recovered` event and how long recovery took.
    pub fn recovered(&self, took: Duration) {
        let _ = self.reports.send(Report::Recovered(took));
    }
}

/// What the client side counted.
#[derive(Debug, Default)]
pub struct Tally {
    /// The ids the broker confirmed (acked).
    pub confirmed: BTreeSet<u64>,
    /// How many times each id was consumed.
    pub received: BTreeMap<u64, u32>,
    /// Confirms that resolved as lost or nacked (the id was published again).
    pub not_acked: u32,
}

/// The client side, running on a thread of its own, as the fault side sees it.
struct Client {
    reports: mpsc::Receiver<Report>,
    task: Option<Task<Tally>>,
}

impl Client {
    /// The next report within `limit`; if the client side ended instead, its panic is
    /// re-raised (or the early end reported).
    fn next_report(&mut self, limit: Duration, waiting_for: &str) -> Report {
        let deadline = Instant::now() + limit;
        loop {
            let slice = Duration::from_millis(200);
            match self.reports.recv_timeout(slice) {
                Ok(report) => return report,
                Err(RecvTimeoutError::Timeout) if !self.task().is_finished() => {}
                Err(_) => self.ended_early(waiting_for),
            }
            assert!(
                Instant::now() < deadline,
                "{waiting_for}: nothing within {limit:?} (the client hangs?)"
            );
        }
    }

    fn wait_recovered(&mut self, fault: &str) {
        let what = format!("recovery from {fault}");
        loop {
            match self.next_report(RECOVERY_LIMIT, &what) {
                Report::Started => {}
                Report::Recovered(took) => break eprintln!("recovered from {fault} in {took:?}"),
            }
        }
    }

    fn task(&self) -> &Task<Tally> {
        self.task.as_ref().expect("the client is running")
    }

    fn ended_early(&mut self, waiting_for: &str) -> ! {
        let task = self.task.take().expect("the client is running");
        match task.try_wait(WAIT) {
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            Some(Ok(_)) => panic!("{waiting_for}: the client stopped before it was asked to"),
            None => panic!("{waiting_for}: the client stopped reporting but did not end"),
        }
    }

    /// The tally, once the client side has drained and closed (bounded).
    fn finish(&mut self) -> Tally {
        let task = self.task.take().expect("the client is running");
        // Draining is bounded by RECOVERY_LIMIT, closing and joining by a few WAITs.
        let limit = RECOVERY_LIMIT + 6 * WAIT;
        match task.try_wait(limit) {
            Some(Ok(tally)) => tally,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => panic!("the client did not finish within {limit:?} of being stopped"),
        }
    }
}

/// Runs the fault side against `client` (the client side, called on a thread of its own
/// with its [`FaultSide`]) on a dedicated node; `flavour` names the adapter in the output.
/// Panics on failure: a fault not recovered from in time, a confirmed message never
/// consumed, or the client side's own panic.
pub fn faults_are_recovered(
    flavour: &str,
    client: impl FnOnce(FaultSide) -> Tally + Send + 'static,
) {
    let began = Instant::now();
    let mut node = BrokerNode::start(NodeOptions::plain()).expect("start a dedicated node");
    let proxy = Proxy::start(node.amqp_addr()).expect("start the test proxy");
    let uri = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat=2",
        proxy.addr().port()
    );
    let mut options = ConnectOptions::parse(&uri).expect("a valid URI");
    options.config.connection_name = Some(NAME.into());
    options.config.recovery = Some(RecoveryConfig {
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            ..Backoff::default()
        },
        republish_unconfirmed: true,
        ..RecoveryConfig::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (reports, rx) = mpsc::channel();
    let side = FaultSide {
        options,
        stop: stop.clone(),
        reports,
    };
    let mut client = Client {
        reports: rx,
        task: Some(Task::thread("recovery-client", move || client(side))),
    };
    // Let traffic flow first.
    std::thread::sleep(Duration::from_millis(500));

    let pid = node
        .rabbitmqctl(["list_connections", "-q", "pid", "client_properties"])
        .expect("list connections")
        .lines()
        .find(|l| l.contains(NAME))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .expect("the scenario's connection is listed");
    node.rabbitmqctl(["close_connection", &pid, "closed by the recovery test"])
        .expect("close_connection");
    client.wait_recovered("close_connection");

    node.rabbitmqctl(["stop_app"]).expect("stop_app");
    node.rabbitmqctl(["start_app"]).expect("start_app");
    client.wait_recovered("stop_app/start_app");

    node.kill().expect("kill the node");
    node.restart().expect("restart the node");
    client.wait_recovered("a killed and restarted node");

    // A silent link: missed heartbeats (2 s) end it, then the proxy cuts it for good.
    proxy.stall();
    match client.next_report(RECOVERY_LIMIT, "noticing a stalled link") {
        Report::Started => {}
        other => panic!("a stalled link went unnoticed: {other:?}"),
    }
    proxy.cut();
    client.wait_recovered("a stalled then cut link");

    stop.store(true, Ordering::SeqCst);
    let tally = client.finish();
    let lost: Vec<_> = tally
        .confirmed
        .iter()
        .filter(|id| !tally.received.contains_key(id))
        .collect();
    let duplicates: u32 = tally.received.values().map(|n| n - 1).sum();
    eprintln!(
        "[recovery/{flavour}] confirmed {}, consumed {} distinct, {duplicates} duplicates, \
         {} lost, {} confirms not acked (lost or nacked, published again); {:.1?} in all",
        tally.confirmed.len(),
        tally.received.len(),
        lost.len(),
        tally.not_acked,
        began.elapsed()
    );
    assert!(!tally.confirmed.is_empty(), "nothing was confirmed");
    assert!(lost.is_empty(), "confirmed but never consumed: {lost:?}");
}

/// The client side's text, expanded by the flavours through `$mode!` (`keep_async!` or
/// `strip_await!`) in a module that provides the flavour's API and `Env`, [`FaultSide`],
/// [`Tally`], [`RECOVERY_LIMIT`], `Event`, `Arc`, `Mutex`, `AtomicBool`, `Ordering` and
/// `BTreeMap` (and, for async, `StreamExt`: consumers and events are streams there and
/// iterators in the blocking API, `next()` either way).
///
/// rustfmt does not format macro bodies: keep the code formatted as rustfmt would
/// (`max_width = 88` for the body, which sits 12 columns in).
macro_rules! recovery_scenario {
    ($mode:ident) => {
        $mode! {
            /// The client side of [`faults_are_recovered`](crate::conformance::recovery):
            /// a confirming publisher, a consumer and an event watcher on one recovering
            /// connection until the fault side says stop; then it waits (bounded) for every
            /// confirmed message to be consumed, closes, and returns what it counted.
            pub async fn recovery_client(env: Env, side: FaultSide) -> Tally {
                let conn = env
                    .try_connect(side.options())
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect through the proxy: {e}"));
                let publisher = conn.open_channel().await.expect("open a channel");
                let durable = QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                publisher
                    .queue_declare(side.queue(), durable)
                    .await
                    .expect("declare the queue");
                publisher
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm mode");
                let consumer_channel = conn.open_channel().await.expect("open a channel");
                let mut consumer = consumer_channel
                    .basic_consume(side.queue(), "recovery-consumer", Default::default())
                    .await
                    .expect("start the consumer");

                // Set just before our own close, which ends the streams.
                let closing = Arc::new(AtomicBool::new(false));
                let received: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
                let consuming = {
                    let (received, closing) = (received.clone(), closing.clone());
                    // Why the consumer stopped early (`None`: it ran until our close).
                    env.spawn(move || async move {
                        loop {
                            let delivery = match consumer.next().await {
                                Some(Ok(delivery)) => delivery,
                                _ if closing.load(Ordering::SeqCst) => return None,
                                Some(Err(e)) => return Some(format!("it failed: {e}")),
                                None => return Some("it ended".to_owned()),
                            };
                            let id = std::str::from_utf8(&delivery.body)
                                .ok()
                                .and_then(|s| s.parse::<u64>().ok());
                            if let Some(id) = id {
                                *received
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .entry(id)
                                    .or_default() += 1;
                            }
                            // A stale ack (from before a recovery) is dropped by the client.
                            let _ = delivery.ack();
                        }
                    })
                };
                let watching = {
                    let (mut events, side) = (conn.events(), side.clone());
                    env.spawn(move || async move {
                        while let Some(event) = events.next().await {
                            match event {
                                ConnectionEvent::Recovery(Event::RecoveryStarted {
                                    ..
                                }) => side.started(),
                                ConnectionEvent::Recovery(Event::Recovered {
                                    took, ..
                                }) => side.recovered(took),
                                _ => {}
                            }
                        }
                    })
                };

                let props = BasicProperties::default().with_delivery_mode(2);
                let mut tally = Tally::default();
                let mut id = 0u64;
                while !side.stopping() {
                    let confirm = publisher
                        .basic_publish(
                            "",
                            side.queue(),
                            BasicPublishOptions::default(),
                            &props,
                            id.to_string(),
                        )
                        .await
                        .unwrap_or_else(|e| panic!("publish {id} failed: {e}"));
                    // Lost with the connection (or nacked): the same id is published again.
                    match env.confirm_within(confirm, RECOVERY_LIMIT).await {
                        Some(Confirmation::Ack(_)) => {
                            tally.confirmed.insert(id);
                            id += 1;
                        }
                        Some(_) => tally.not_acked += 1,
                        None => panic!("no confirm for {id} within {RECOVERY_LIMIT:?}"),
                    }
                }

                // Everything confirmed must arrive; bounded.
                let deadline = Instant::now() + RECOVERY_LIMIT;
                while Instant::now() < deadline && !consuming.is_finished() {
                    let got = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if tally.confirmed.iter().all(|id| got.contains_key(id)) {
                        break;
                    }
                    env.sleep(ms(100)).await;
                }
                closing.store(true, Ordering::SeqCst);
                let closed = conn.close().await;
                if let Some(why) = env.join(consuming).await {
                    panic!("the consumer stopped before our close: {why}");
                }
                env.join(watching).await;
                closed.expect("close the connection");
                tally.received = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
                tally
            }
        }
    };
}
