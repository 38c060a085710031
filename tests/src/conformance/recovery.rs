//! Automatic recovery against a real broker, written once for every async adapter: a
//! confirming publisher and a consumer keep running on one recovering connection while the
//! test, in turn, closes the connection with `rabbitmqctl close_connection`, restarts the app
//! (`stop_app`/`start_app`), kills and restarts the node, and stalls then cuts the link
//! through the test [`Proxy`]. Afterwards every message the publisher was told is confirmed
//! has been consumed at least once; duplicates are counted and printed. Every wait is
//! bounded, so a hang fails the test.
//!
//! The node is the test's own ([`BrokerNode`]), never the shared broker. The connection runs
//! in at-least-once mode (unconfirmed publishes are published again by the client); should a
//! confirm still resolve as lost or nacked, the publisher sends that message again itself.
//! Only confirmed messages count.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_client::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, ConfirmSelectOptions, Confirmation,
    ConnectOptions, ConnectionEvent, QueueDeclareOptions,
};
use amqp_proto::Event;
use amqp_proto::recovery::{Backoff, RecoveryConfig};
use futures_util::StreamExt;

use super::asynchronous::Runtime;
use crate::node::{BrokerNode, NodeOptions};
use crate::proxy::Proxy;

/// Longest wait for one fault to be recovered from.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
const QUEUE: &str = "amqp-rs.recovery";
const NAME: &str = "amqp-rs-recovery-scenario";

/// What the client side reports to the test thread.
#[derive(Debug)]
enum Report {
    /// The connection was lost and recovery began.
    Started,
    Recovered(Duration),
    Done {
        confirmed: BTreeSet<u64>,
        received: BTreeMap<u64, u32>,
    },
    /// The client side failed; why.
    Failed(#[allow(dead_code)] String),
}

/// Runs the scenario through `runtime`'s adapter. Panics on failure.
pub fn faults_are_recovered(runtime: Arc<dyn Runtime>) {
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
    let (tx, rx) = mpsc::channel();
    let client = {
        let (stop, runtime) = (stop.clone(), runtime.clone());
        std::thread::spawn(move || {
            let rt = runtime.clone();
            rt.block_on(Box::pin(async move {
                let report = match client(runtime, options, stop, tx.clone()).await {
                    Ok(done) => done,
                    Err(e) => Report::Failed(e),
                };
                let _ = tx.send(report);
            }));
        })
    };
    let wait_recovered = |what: &str| loop {
        match rx.recv_timeout(RECOVERY_LIMIT) {
            Ok(Report::Started) => {}
            Ok(Report::Recovered(took)) => break eprintln!("recovered from {what} in {took:?}"),
            other => panic!("no recovery from {what}: {other:?}"),
        }
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
    wait_recovered("close_connection");

    node.rabbitmqctl(["stop_app"]).expect("stop_app");
    node.rabbitmqctl(["start_app"]).expect("start_app");
    wait_recovered("stop_app/start_app");

    node.kill().expect("kill the node");
    node.restart().expect("restart the node");
    wait_recovered("a killed and restarted node");

    // A silent link: missed heartbeats (2 s) end it, then the proxy cuts it for good.
    proxy.stall();
    match rx.recv_timeout(RECOVERY_LIMIT) {
        Ok(Report::Started) => {}
        other => panic!("a stalled link went unnoticed: {other:?}"),
    }
    proxy.cut();
    wait_recovered("a stalled then cut link");

    stop.store(true, Ordering::SeqCst);
    let (confirmed, received) = match rx.recv_timeout(RECOVERY_LIMIT) {
        Ok(Report::Done {
            confirmed,
            received,
        }) => (confirmed, received),
        other => panic!("the client did not finish: {other:?}"),
    };
    client.join().expect("client thread");
    let lost: Vec<_> = confirmed
        .iter()
        .filter(|id| !received.contains_key(id))
        .collect();
    let duplicates: u32 = received.values().map(|n| n - 1).sum();
    eprintln!(
        "confirmed {}, consumed {} distinct, {duplicates} duplicates, {} lost",
        confirmed.len(),
        received.len(),
        lost.len()
    );
    assert!(!confirmed.is_empty());
    assert!(lost.is_empty(), "confirmed but never consumed: {lost:?}");
}

/// The client: publisher, consumer and event watcher on one recovering connection.
async fn client(
    runtime: Arc<dyn Runtime>,
    options: ConnectOptions,
    stop: Arc<AtomicBool>,
    tx: mpsc::Sender<Report>,
) -> Result<Report, String> {
    let conn = runtime.connect(options).await.map_err(|e| e.to_string())?;
    let publisher = conn.open_channel().await.map_err(|e| e.to_string())?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    publisher
        .queue_declare(QUEUE, durable)
        .await
        .map_err(|e| e.to_string())?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let consumer_channel = conn.open_channel().await.map_err(|e| e.to_string())?;
    let mut consumer = consumer_channel
        .basic_consume(QUEUE, "recovery-consumer", BasicConsumeOptions::default())
        .await
        .map_err(|e| e.to_string())?;

    let received: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    {
        let received = received.clone();
        runtime.spawn(Box::pin(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
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
        }));
    }
    {
        let mut events = conn.events();
        let tx = tx.clone();
        runtime.spawn(Box::pin(async move {
            while let Some(event) = events.next().await {
                let report = match event {
                    ConnectionEvent::Recovery(Event::RecoveryStarted { .. }) => Report::Started,
                    ConnectionEvent::Recovery(Event::Recovered { took, .. }) => {
                        Report::Recovered(took)
                    }
                    _ => continue,
                };
                let _ = tx.send(report);
            }
        }));
    }

    let props = BasicProperties::default().with_delivery_mode(2);
    let mut confirmed = BTreeSet::new();
    let mut id = 0u64;
    let mut not_acked = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let publish = publisher
            .basic_publish(
                "",
                QUEUE,
                BasicPublishOptions::default(),
                &props,
                id.to_string(),
            )
            .await;
        let confirm = publish.map_err(|e| format!("publish {id} failed: {e}"))?;
        // Lost with the connection (or nacked): the same id is published again.
        match confirm.await {
            Confirmation::Ack(_) => {
                confirmed.insert(id);
                id += 1;
            }
            _ => not_acked += 1,
        }
    }

    // Everything confirmed must arrive; bounded.
    let deadline = Instant::now() + RECOVERY_LIMIT;
    loop {
        let missing = {
            let got = received.lock().unwrap_or_else(|p| p.into_inner());
            confirmed.iter().any(|id| !got.contains_key(id))
        };
        if !missing || Instant::now() > deadline {
            break;
        }
        runtime.sleep(Duration::from_millis(100)).await;
    }
    let received = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // At-least-once mode: the client republished, the publisher never saw a loss.
    eprintln!("confirms not acked (lost or nacked): {not_acked}");
    let _ = conn.close().await;
    Ok(Report::Done {
        confirmed,
        received,
    })
}
