//! A real three-node cluster on this machine: a quorum queue replicated across it, and a
//! recovering client (endpoints for all three nodes) whose node is stopped under a confirming
//! publisher and a consumer: it fails over, no confirmed message is lost, and the test prints
//! how long traffic stopped. One cluster for the binary (forming it is most of the cost).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_client::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, ConfirmSelectOptions, Confirmation,
    ConnectOptions, ConnectionEvent, FieldTable, QueueDeclareOptions,
};
use amqp_conformance::cluster::Cluster;
use amqp_proto::Event;
use amqp_proto::recovery::{Backoff, Endpoint, RecoveryConfig};
use futures_util::StreamExt;

const QUEUE: &str = "failover";

#[test]
fn a_stopped_node_fails_over_without_losing_confirmed_messages() {
    let mut cluster = Cluster::start(3).expect("start a three-node cluster");
    let status = cluster.status().unwrap();
    for node in cluster.nodes() {
        assert!(status.contains(node.node_name()), "{status}");
    }
    let endpoints: Vec<Endpoint> = cluster
        .nodes()
        .iter()
        .map(|n| Endpoint::new("127.0.0.1", n.amqp_port()))
        .collect();
    let mut options = ConnectOptions::parse(&cluster.nodes()[0].uri()).unwrap();
    options.config.recovery = Some(RecoveryConfig {
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            ..Backoff::default()
        },
        endpoints,
        republish_unconfirmed: true,
        ..RecoveryConfig::default()
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let confirmed_at: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let received: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let (conn, publisher) = runtime.block_on(async {
        let conn = amqp_tokio::connect_with(options).await.expect("connect");
        let ch = conn.open_channel().await.unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let args = FieldTable::new().with("x-queue-type", "quorum");
        ch.queue_declare(
            QUEUE,
            QueueDeclareOptions {
                arguments: args,
                ..durable
            },
        )
        .await
        .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let consumer_channel = conn.open_channel().await.unwrap();
        let mut consumer = consumer_channel
            .basic_consume(QUEUE, "failover-consumer", BasicConsumeOptions::default())
            .await
            .unwrap();
        let got = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                if let Some(id) = std::str::from_utf8(&d.body)
                    .ok()
                    .and_then(|s| s.parse().ok())
                {
                    got.lock().unwrap().insert(id);
                }
                let _ = d.ack();
            }
        });
        let confirmed = confirmed_at.clone();
        let publisher = tokio::spawn(async move {
            let props = BasicProperties::default().with_delivery_mode(2);
            let mut id = 0u64;
            loop {
                let Ok(confirm) = ch
                    .basic_publish(
                        "",
                        QUEUE,
                        BasicPublishOptions::default(),
                        &props,
                        id.to_string(),
                    )
                    .await
                else {
                    return;
                };
                if let Confirmation::Ack(_) = confirm.await {
                    confirmed.lock().unwrap().push((id, Instant::now()));
                    id += 1;
                }
            }
        });
        (conn, publisher)
    });
    let members = cluster.nodes()[1]
        .cli(
            "rabbitmq-queues",
            ["quorum_status", QUEUE],
            Duration::from_secs(60),
        )
        .unwrap();
    for node in cluster.nodes() {
        assert!(members.contains(node.node_name()), "{members}");
    }

    // Stop the node the client is on (the first endpoint) under traffic.
    let mut events = conn.events();
    let before = confirmed_at.lock().unwrap().len();
    assert!(before > 0, "traffic flows before the failover");
    let stopped_at = Instant::now();
    cluster.node_mut(0).stop().expect("stop the client's node");
    let recovered = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(event) = events.next().await {
                if let ConnectionEvent::Recovery(Event::Recovered { endpoint, took, .. }) = event {
                    return (endpoint, took);
                }
            }
            panic!("the connection ended instead of failing over");
        })
        .await
        .expect("failed over within a minute")
    });
    let since_stop = stopped_at.elapsed();
    let (endpoint, took) = recovered;
    let endpoint = endpoint.expect("an endpoint");
    assert_ne!(endpoint.port, cluster.nodes()[0].amqp_port());
    // Traffic goes on through the new node.
    runtime.block_on(async {
        let target = confirmed_at.lock().unwrap().len() + 100;
        tokio::time::timeout(Duration::from_secs(60), async {
            while confirmed_at.lock().unwrap().len() < target {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "publishing did not go on after the failover: {} confirmed, publisher {}, \
                 connection {:?}",
                confirmed_at.lock().unwrap().len(),
                if publisher.is_finished() {
                    "ended (a publish failed)"
                } else {
                    "waiting"
                },
                conn.state()
            )
        })
    });
    publisher.abort();
    let confirmed = confirmed_at.lock().unwrap().clone();
    let gap = confirmed
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .max()
        .unwrap_or_default();
    eprintln!(
        "failed over to {endpoint}: recovered {took:?} after the loss, {since_stop:?} after \
         `rabbitmqctl stop` began; traffic stopped for {gap:?} (longest pause between confirms)"
    );
    // Every confirmed message is consumed, none lost.
    runtime.block_on(async {
        let all: BTreeSet<u64> = confirmed.iter().map(|(id, _)| *id).collect();
        let waited = tokio::time::timeout(Duration::from_secs(60), async {
            while !all.is_subset(&received.lock().unwrap()) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let got = received.lock().unwrap();
        let lost: Vec<_> = all.difference(&got).collect();
        eprintln!(
            "confirmed {}, consumed {}, lost {}",
            all.len(),
            got.len(),
            lost.len()
        );
        assert!(waited.is_ok() && lost.is_empty(), "lost: {lost:?}");
    });
    let _ = runtime.block_on(conn.close());
}
