//! A record of what this connection declared, kept so that automatic recovery can replay it
//! after a reconnect without the adapters knowing the protocol.
//!
//! It follows the broker's own rules for what disappears: entities the application deleted,
//! an auto-delete queue once its last consumer is gone, an auto-delete exchange once the last
//! binding from it is gone (cascading through exchange-to-exchange bindings). Exclusive
//! queues stay: they die with the connection and recovery declares them again.

use crate::spec::{
    BasicConsume, BasicQos, ExchangeBind, ExchangeDeclare, Method, QueueBind, QueueDeclare,
};
use crate::types::ShortString;

use super::event::ChannelId;

/// A queue as declared, with the name the broker gave it (which differs for server-named
/// queues, declared with an empty name).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedQueue {
    /// The declaration as sent.
    pub declare: QueueDeclare,
    /// The queue's actual name.
    pub name: ShortString,
    /// Whether a consumer of this connection ever consumed from it (an auto-delete queue is
    /// only deleted by the broker once it had a consumer and the last one went away).
    pub consumed: bool,
}

impl RecordedQueue {
    /// Whether the broker chose the name (recovery asks for a new one).
    pub fn is_server_named(&self) -> bool {
        self.declare.queue.is_empty()
    }
}

/// A consumer as started, with its channel and actual tag.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedConsumer {
    /// Its channel.
    pub channel: ChannelId,
    /// The consume request as sent, with `consumer_tag` set to the actual tag.
    pub consume: BasicConsume,
}

/// Per-channel modes and settings to restore.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordedChannel {
    /// Last `basic.qos` that succeeded, per `global` flag.
    pub qos: Vec<BasicQos>,
    /// Whether confirm mode is on.
    pub confirm: bool,
    /// Whether tx mode is on.
    pub tx: bool,
    /// Whether the application paused deliveries with `channel.flow`.
    pub paused: bool,
}

/// Everything declared on the connection that still stands, in declaration order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Topology {
    /// Exchanges declared (not passively) and not deleted.
    pub exchanges: Vec<ExchangeDeclare>,
    /// Queues declared (not passively) and not deleted.
    pub queues: Vec<RecordedQueue>,
    /// Queue bindings in force.
    pub queue_bindings: Vec<QueueBind>,
    /// Exchange-to-exchange bindings in force.
    pub exchange_bindings: Vec<ExchangeBind>,
    /// Consumers running.
    pub consumers: Vec<RecordedConsumer>,
    /// Channel settings, by channel id.
    pub channels: std::collections::BTreeMap<ChannelId, RecordedChannel>,
}

impl Topology {
    /// Records the effect of `request` on `channel`, which the broker accepted; `name` is the
    /// queue name or consumer tag from the reply where the broker chooses it.
    pub(crate) fn record(
        &mut self,
        channel: ChannelId,
        request: &Method,
        name: Option<&ShortString>,
    ) {
        match request {
            Method::ExchangeDeclare(m) if !m.passive => {
                self.exchanges.retain(|e| e.exchange != m.exchange);
                self.exchanges.push(m.clone());
            }
            Method::ExchangeDelete(m) => {
                self.exchanges.retain(|e| e.exchange != m.exchange);
                let mut sources = Vec::new();
                self.exchange_bindings.retain(|b| {
                    let gone = b.source == m.exchange || b.destination == m.exchange;
                    if gone {
                        sources.push(b.source.clone());
                    }
                    !gone
                });
                self.queue_bindings.retain(|b| b.exchange != m.exchange);
                self.sweep_exchanges(sources);
            }
            Method::QueueDeclare(m) if !m.passive => {
                let name = name.cloned().unwrap_or_else(|| m.queue.clone());
                let consumed = self.consumers.iter().any(|c| c.consume.queue == name);
                self.queues.retain(|q| q.name != name);
                self.queues.push(RecordedQueue {
                    declare: m.clone(),
                    name,
                    consumed,
                });
            }
            Method::QueueDelete(m) => self.forget_queue(&m.queue),
            Method::QueueBind(m) => {
                self.queue_bindings.retain(|b| !same_queue_binding(b, m));
                self.queue_bindings.push(m.clone());
            }
            Method::QueueUnbind(m) => {
                self.queue_bindings.retain(|b| {
                    !(b.queue == m.queue
                        && b.exchange == m.exchange
                        && b.routing_key == m.routing_key
                        && b.arguments == m.arguments)
                });
                self.sweep_exchanges([m.exchange.clone()]);
            }
            Method::ExchangeBind(m) => {
                self.exchange_bindings.retain(|b| b != m);
                self.exchange_bindings.push(m.clone());
            }
            Method::ExchangeUnbind(m) => {
                self.exchange_bindings.retain(|b| {
                    !(b.destination == m.destination
                        && b.source == m.source
                        && b.routing_key == m.routing_key
                        && b.arguments == m.arguments)
                });
                self.sweep_exchanges([m.source.clone()]);
            }
            Method::BasicConsume(m) => {
                let mut consume = m.clone();
                if let Some(tag) = name {
                    consume.consumer_tag = tag.clone();
                }
                for q in self.queues.iter_mut().filter(|q| q.name == m.queue) {
                    q.consumed = true;
                }
                self.consumers.push(RecordedConsumer { channel, consume });
            }
            Method::BasicQos(m) => {
                let ch = self.channels.entry(channel).or_default();
                ch.qos.retain(|q| q.global != m.global);
                ch.qos.push(m.clone());
            }
            Method::ConfirmSelect(_) => self.channels.entry(channel).or_default().confirm = true,
            Method::TxSelect(_) => self.channels.entry(channel).or_default().tx = true,
            Method::ChannelFlow(m) => self.channels.entry(channel).or_default().paused = !m.active,
            _ => {}
        }
    }

    pub(crate) fn forget_consumer(&mut self, channel: ChannelId, tag: &ShortString) {
        let mut queues = Vec::new();
        self.consumers.retain(|c| {
            let gone = c.channel == channel && c.consume.consumer_tag == *tag;
            if gone {
                queues.push(c.consume.queue.clone());
            }
            !gone
        });
        self.sweep_queues(queues);
    }

    pub(crate) fn forget_channel(&mut self, channel: ChannelId) {
        self.channels.remove(&channel);
        let mut queues = Vec::new();
        self.consumers.retain(|c| {
            if c.channel == channel {
                queues.push(c.consume.queue.clone());
            }
            c.channel != channel
        });
        self.sweep_queues(queues);
    }

    /// A server-named queue came back from recovery as `new`: bindings and consumers follow.
    pub(crate) fn rename_queue(&mut self, old: &ShortString, new: &ShortString) {
        for q in self.queues.iter_mut().filter(|q| q.name == *old) {
            q.name = new.clone();
        }
        for b in self.queue_bindings.iter_mut().filter(|b| b.queue == *old) {
            b.queue = new.clone();
        }
        for c in self
            .consumers
            .iter_mut()
            .filter(|c| c.consume.queue == *old)
        {
            c.consume.queue = new.clone();
        }
    }

    /// A queue is gone: its bindings and consumers go with it.
    fn forget_queue(&mut self, queue: &ShortString) {
        self.queues.retain(|q| q.name != *queue);
        let mut sources = Vec::new();
        self.queue_bindings.retain(|b| {
            if b.queue == *queue {
                sources.push(b.exchange.clone());
            }
            b.queue != *queue
        });
        self.consumers.retain(|c| c.consume.queue != *queue);
        self.sweep_exchanges(sources);
    }

    /// The broker deletes an auto-delete queue when its last consumer goes.
    fn sweep_queues(&mut self, candidates: Vec<ShortString>) {
        for name in candidates {
            let orphaned = self
                .queues
                .iter()
                .any(|q| q.name == name && q.declare.auto_delete && q.consumed)
                && !self.consumers.iter().any(|c| c.consume.queue == name);
            if orphaned {
                self.forget_queue(&name);
            }
        }
    }

    /// The broker deletes an auto-delete exchange when the last binding from it goes; that
    /// removes its own exchange-to-exchange bindings, which may orphan more.
    fn sweep_exchanges(&mut self, candidates: impl IntoIterator<Item = ShortString>) {
        let mut work: Vec<ShortString> = candidates.into_iter().collect();
        while let Some(name) = work.pop() {
            let auto_delete = self
                .exchanges
                .iter()
                .any(|e| e.exchange == name && e.auto_delete);
            let bound = self.queue_bindings.iter().any(|b| b.exchange == name)
                || self.exchange_bindings.iter().any(|b| b.source == name);
            if !auto_delete || bound {
                continue;
            }
            self.exchanges.retain(|e| e.exchange != name);
            self.exchange_bindings.retain(|b| {
                if b.destination == name {
                    work.push(b.source.clone());
                }
                b.destination != name
            });
        }
    }
}

fn same_queue_binding(a: &QueueBind, b: &QueueBind) -> bool {
    a.queue == b.queue
        && a.exchange == b.exchange
        && a.routing_key == b.routing_key
        && a.arguments == b.arguments
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ExchangeDelete, ExchangeUnbind, QueueUnbind};

    fn s(x: &str) -> ShortString {
        ShortString::try_from(x).unwrap()
    }

    fn exchange(name: &str, auto_delete: bool) -> Method {
        ExchangeDeclare {
            exchange: s(name),
            kind: s("direct"),
            auto_delete,
            ..Default::default()
        }
        .into()
    }

    fn queue(name: &str, auto_delete: bool) -> Method {
        QueueDeclare {
            queue: s(name),
            auto_delete,
            ..Default::default()
        }
        .into()
    }

    fn consume(queue: &str, tag: &str) -> Method {
        BasicConsume {
            queue: s(queue),
            consumer_tag: s(tag),
            ..Default::default()
        }
        .into()
    }

    fn bind(queue: &str, exchange: &str) -> Method {
        QueueBind {
            queue: s(queue),
            exchange: s(exchange),
            ..Default::default()
        }
        .into()
    }

    fn e2e(destination: &str, source: &str) -> Method {
        ExchangeBind {
            destination: s(destination),
            source: s(source),
            ..Default::default()
        }
        .into()
    }

    fn names(t: &Topology) -> (Vec<&str>, Vec<&str>) {
        (
            t.exchanges.iter().map(|e| e.exchange.as_str()).collect(),
            t.queues.iter().map(|q| q.name.as_str()).collect(),
        )
    }

    #[test]
    fn auto_delete_queue_goes_with_its_last_consumer_only_once_consumed() {
        let mut t = Topology::default();
        t.record(ChannelId(1), &queue("auto", true), None);
        t.record(ChannelId(1), &queue("kept", false), None);
        // Never consumed: the broker keeps it.
        t.forget_channel(ChannelId(2));
        assert_eq!(names(&t).1, ["auto", "kept"]);
        t.record(ChannelId(1), &consume("auto", "a"), None);
        t.record(ChannelId(2), &consume("auto", "b"), None);
        t.record(ChannelId(1), &consume("kept", "k"), None);
        t.forget_consumer(ChannelId(1), &s("a"));
        assert_eq!(names(&t).1, ["auto", "kept"], "one consumer is left");
        t.forget_channel(ChannelId(2));
        assert_eq!(names(&t).1, ["kept"]);
        t.forget_consumer(ChannelId(1), &s("k"));
        assert_eq!(names(&t).1, ["kept"], "not auto-delete");
    }

    #[test]
    fn auto_delete_exchange_goes_with_its_last_binding_cascading() {
        let mut t = Topology::default();
        t.record(ChannelId(1), &exchange("top", true), None);
        t.record(ChannelId(1), &exchange("mid", true), None);
        t.record(ChannelId(1), &exchange("plain", false), None);
        t.record(ChannelId(1), &queue("q", false), None);
        t.record(ChannelId(1), &e2e("mid", "top"), None);
        t.record(ChannelId(1), &bind("q", "mid"), None);
        t.record(ChannelId(1), &bind("q", "plain"), None);
        // Unbinding q from mid orphans mid, whose removal orphans top.
        t.record(
            ChannelId(1),
            &QueueUnbind {
                queue: s("q"),
                exchange: s("mid"),
                ..Default::default()
            }
            .into(),
            None,
        );
        assert_eq!(names(&t).0, ["plain"]);
        assert!(t.exchange_bindings.is_empty());
        assert_eq!(t.queue_bindings.len(), 1);
    }

    #[test]
    fn deleting_a_queue_can_orphan_an_auto_delete_exchange() {
        let mut t = Topology::default();
        t.record(ChannelId(1), &exchange("x", true), None);
        t.record(ChannelId(1), &queue("q", true), None);
        t.record(ChannelId(1), &bind("q", "x"), None);
        t.record(ChannelId(1), &consume("q", "c"), None);
        t.forget_consumer(ChannelId(1), &s("c"));
        assert_eq!(names(&t), (vec![], vec![]));
        assert!(t.queue_bindings.is_empty());
    }

    #[test]
    fn exchange_delete_and_unbind_sweep_sources() {
        let mut t = Topology::default();
        t.record(ChannelId(1), &exchange("src", true), None);
        t.record(ChannelId(1), &exchange("dst", false), None);
        t.record(ChannelId(1), &e2e("dst", "src"), None);
        t.record(
            ChannelId(1),
            &ExchangeDelete {
                exchange: s("dst"),
                ..Default::default()
            }
            .into(),
            None,
        );
        assert!(names(&t).0.is_empty(), "src lost its only binding");
        t.record(ChannelId(1), &exchange("src", true), None);
        t.record(ChannelId(1), &exchange("dst", false), None);
        t.record(ChannelId(1), &e2e("dst", "src"), None);
        t.record(
            ChannelId(1),
            &ExchangeUnbind {
                destination: s("dst"),
                source: s("src"),
                ..Default::default()
            }
            .into(),
            None,
        );
        assert_eq!(names(&t).0, ["dst"]);
    }

    #[test]
    fn flow_and_server_named_queues_are_recorded() {
        let mut t = Topology::default();
        t.record(
            ChannelId(3),
            &crate::spec::ChannelFlow { active: false }.into(),
            None,
        );
        assert!(t.channels[&ChannelId(3)].paused);
        t.record(
            ChannelId(3),
            &crate::spec::ChannelFlow { active: true }.into(),
            None,
        );
        assert!(!t.channels[&ChannelId(3)].paused);
        t.record(ChannelId(1), &queue("", false), Some(&s("amq.gen-1")));
        assert!(t.queues[0].is_server_named());
        assert_eq!(t.queues[0].name.as_str(), "amq.gen-1");
    }
}
