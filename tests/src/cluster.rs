//! A RabbitMQ cluster of dedicated nodes on this machine, for failover tests.
//!
//! ```no_run
//! use amqp_conformance::cluster::Cluster;
//!
//! let mut cluster = Cluster::start(3).expect("a three-node cluster");
//! let uris: Vec<String> = cluster.nodes().iter().map(|n| n.uri()).collect();
//! cluster.node_mut(0).stop().unwrap(); // the others carry on
//! ```
//!
//! Each node is a [`BrokerNode`] (own ports, own directory owned by the node user); they
//! share one Erlang cookie, and every node after the first joins the first with
//! `stop_app`, `join_cluster`, `start_app` (boots and joins run in parallel). Forming a
//! three-node cluster takes from about a minute to over three on a loaded 2-core machine: a
//! test binary should start one cluster and share it.

use std::time::Instant;

use crate::node::{BrokerNode, NodeError, NodeOptions, random_cookie};

/// Nodes joined into one cluster; dropping it stops them all.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<BrokerNode>,
}

impl Cluster {
    /// Starts `size` plain nodes and joins them into a cluster. Prints how long it took.
    pub fn start(size: usize) -> Result<Cluster, NodeError> {
        Self::start_with(size, NodeOptions::plain())
    }

    /// Like [`Cluster::start`] with `options` for every node (its cookie is replaced by the
    /// cluster's).
    pub fn start_with(size: usize, options: NodeOptions) -> Result<Cluster, NodeError> {
        let began = Instant::now();
        let options = options.cookie(random_cookie()?);
        // Boots and joins run side by side: each is mostly waiting on an Erlang VM.
        let nodes: Vec<BrokerNode> = std::thread::scope(|s| {
            let starting: Vec<_> = (0..size)
                .map(|_| s.spawn(|| BrokerNode::start(options.clone())))
                .collect();
            starting
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<Result<_, _>>()
        })?;
        if let Some((first, rest)) = nodes.split_first() {
            std::thread::scope(|s| {
                let joining: Vec<_> = rest
                    .iter()
                    .map(|node| {
                        s.spawn(move || -> Result<(), NodeError> {
                            node.rabbitmqctl(["stop_app"])?;
                            node.rabbitmqctl(["join_cluster", first.node_name()])?;
                            node.rabbitmqctl(["start_app"])?;
                            node.rabbitmqctl(["await_startup"])?;
                            Ok(())
                        })
                    })
                    .collect();
                joining
                    .into_iter()
                    .try_for_each(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            })?;
        }
        eprintln!(
            "cluster of {size} nodes formed in {:.1} s",
            began.elapsed().as_secs_f64()
        );
        Ok(Cluster { nodes })
    }

    /// The nodes, the first being the one the others joined.
    pub fn nodes(&self) -> &[BrokerNode] {
        &self.nodes
    }

    /// One node, to stop, restart or query.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn node_mut(&mut self, i: usize) -> &mut BrokerNode {
        &mut self.nodes[i]
    }

    /// The running members as the first running node sees them (`rabbitmqctl
    /// cluster_status`), for assertions and diagnostics.
    pub fn status(&mut self) -> Result<String, NodeError> {
        let node = self
            .nodes
            .iter_mut()
            .find_map(|n| n.is_running().then_some(&*n))
            .ok_or_else(|| NodeError::Io {
                action: "cluster_status: no node of the cluster is running".into(),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
        node.rabbitmqctl(["cluster_status"])
    }
}
