//! A record of what this connection declared, kept so that automatic recovery can later replay
//! it after a reconnect without the adapters knowing the protocol.

use crate::spec::{
    BasicConsume, BasicQos, ExchangeBind, ExchangeDeclare, Method, QueueBind, QueueDeclare,
};
use crate::types::ShortString;

/// A queue as declared, with the name the broker gave it (which differs for server-named
/// queues, declared with an empty name).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedQueue {
    /// The declaration as sent.
    pub declare: QueueDeclare,
    /// The queue's actual name.
    pub name: ShortString,
}

/// A consumer as started, with its channel and actual tag.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedConsumer {
    /// Its channel.
    pub channel: u16,
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
    pub channels: std::collections::BTreeMap<u16, RecordedChannel>,
}

impl Topology {
    /// Records the effect of `request` on `channel`, which the broker accepted; `name` is the
    /// queue name or consumer tag from the reply where the broker chooses it.
    pub(crate) fn record(&mut self, channel: u16, request: &Method, name: Option<&ShortString>) {
        match request {
            Method::ExchangeDeclare(m) if !m.passive => {
                self.exchanges.retain(|e| e.exchange != m.exchange);
                self.exchanges.push(m.clone());
            }
            Method::ExchangeDelete(m) => {
                self.exchanges.retain(|e| e.exchange != m.exchange);
                self.exchange_bindings
                    .retain(|b| b.source != m.exchange && b.destination != m.exchange);
                self.queue_bindings.retain(|b| b.exchange != m.exchange);
            }
            Method::QueueDeclare(m) if !m.passive => {
                let name = name.cloned().unwrap_or_else(|| m.queue.clone());
                self.queues.retain(|q| q.name != name);
                self.queues.push(RecordedQueue {
                    declare: m.clone(),
                    name,
                });
            }
            Method::QueueDelete(m) => {
                self.queues.retain(|q| q.name != m.queue);
                self.queue_bindings.retain(|b| b.queue != m.queue);
                self.consumers.retain(|c| c.consume.queue != m.queue);
            }
            Method::QueueBind(m) => {
                self.queue_bindings.retain(|b| !same_queue_binding(b, m));
                self.queue_bindings.push(m.clone());
            }
            Method::QueueUnbind(m) => self.queue_bindings.retain(|b| {
                !(b.queue == m.queue
                    && b.exchange == m.exchange
                    && b.routing_key == m.routing_key
                    && b.arguments == m.arguments)
            }),
            Method::ExchangeBind(m) => {
                self.exchange_bindings.retain(|b| b != m);
                self.exchange_bindings.push(m.clone());
            }
            Method::ExchangeUnbind(m) => self.exchange_bindings.retain(|b| {
                !(b.destination == m.destination
                    && b.source == m.source
                    && b.routing_key == m.routing_key
                    && b.arguments == m.arguments)
            }),
            Method::BasicConsume(m) => {
                let mut consume = m.clone();
                if let Some(tag) = name {
                    consume.consumer_tag = tag.clone();
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
            _ => {}
        }
    }

    pub(crate) fn forget_consumer(&mut self, channel: u16, tag: &ShortString) {
        self.consumers
            .retain(|c| !(c.channel == channel && c.consume.consumer_tag == *tag));
    }

    pub(crate) fn forget_channel(&mut self, channel: u16) {
        self.channels.remove(&channel);
        self.consumers.retain(|c| c.channel != channel);
    }
}

fn same_queue_binding(a: &QueueBind, b: &QueueBind) -> bool {
    a.queue == b.queue
        && a.exchange == b.exchange
        && a.routing_key == b.routing_key
        && a.arguments == b.arguments
}
