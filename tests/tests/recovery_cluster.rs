//! A real three-node cluster on this machine: formation and a quorum queue replicated across
//! it. (Client failover through it needs automatic recovery in the client, which is not
//! wired into the adapters yet.)

use amqp_blocking::{Connection, FieldTable, QueueDeclareOptions};
use amqp_conformance::cluster::Cluster;

#[test]
fn three_nodes_share_a_quorum_queue() {
    let mut cluster = Cluster::start(3).expect("start a three-node cluster");
    let status = cluster.status().unwrap();
    for node in cluster.nodes() {
        assert!(status.contains(node.node_name()), "{status}");
    }
    // Declared through the first node, usable through the last.
    let first = Connection::connect(&cluster.nodes()[0].uri()).unwrap();
    let ch = first.open_channel().unwrap();
    let args = FieldTable::new().with("x-queue-type", "quorum");
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("failover", options, args.clone()).unwrap();
    let last = Connection::connect(&cluster.nodes()[2].uri()).unwrap();
    let ch = last.open_channel().unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare("failover", passive, FieldTable::new())
        .unwrap();
    let members = cluster.nodes()[1]
        .cli(
            "rabbitmq-queues",
            ["quorum_status", "failover"],
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    for node in cluster.nodes() {
        assert!(members.contains(node.node_name()), "{members}");
    }
}
