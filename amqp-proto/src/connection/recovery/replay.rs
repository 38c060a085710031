//! The replay after a reconnect, planned from the recorded [`Topology`] in the Java client's
//! order: channels with their numbers, then per channel qos, confirm, tx and flow; then
//! exchanges, queues, queue bindings, exchange bindings (on a channel of their own, so that a
//! refused declaration closes only that one); then consumers with their tags and arguments.
//!
//! Every step is a synchronous method sent without `nowait`, one at a time, so each outcome
//! is known and a failure is reported for the entity it concerns.

use std::collections::VecDeque;

use crate::spec::{
    BasicConsume, ChannelClose, ChannelFlow, ChannelOpen, ConfirmSelect, Method, TxSelect,
};
use crate::types::ShortString;

use super::super::event::ChannelId;
use super::super::topology::Topology;

/// One method of the replay and the channel it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayStep {
    /// The channel.
    pub channel: ChannelId,
    /// The method, always one with a reply.
    pub method: Method,
}

/// The replay still to do.
///
/// ```
/// use amqp_proto::recovery::ReplayPlan;
/// use amqp_proto::{ChannelId, Method, Topology};
///
/// let mut plan = ReplayPlan::new(&Topology::default(), &[ChannelId(1), ChannelId(2)], ChannelId(3));
/// let steps: Vec<_> = std::iter::from_fn(|| plan.next_step()).collect();
/// // Nothing declared: just the two channels, reopened with their numbers.
/// assert_eq!(steps.len(), 2);
/// assert!(matches!(steps[1].method, Method::ChannelOpen(_)) && steps[1].channel == ChannelId(2));
/// ```
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    steps: VecDeque<ReplayStep>,
    /// The channel exchanges, queues and bindings are declared on.
    topology_channel: ChannelId,
    /// Old names of the server-named queues, in the order of their declarations.
    server_named: VecDeque<ShortString>,
    /// The old name of the server-named queue whose declaration was handed out last.
    declaring: Option<ShortString>,
    renamed: Vec<(ShortString, ShortString)>,
}

impl ReplayPlan {
    /// Plans the replay of `topology` onto the channels `channels` (their numbers, in
    /// ascending order); declarations go on `topology_channel`, a number not among them,
    /// which is closed again at the end.
    pub fn new(topology: &Topology, channels: &[ChannelId], topology_channel: ChannelId) -> Self {
        let mut steps = VecDeque::new();
        let mut server_named = VecDeque::new();
        let mut push =
            |channel: ChannelId, method: Method| steps.push_back(ReplayStep { channel, method });
        for &ch in channels {
            push(ch, ChannelOpen::default().into());
            let Some(rec) = topology.channels.get(&ch) else {
                continue;
            };
            for qos in &rec.qos {
                push(ch, qos.clone().into());
            }
            if rec.confirm {
                push(ch, ConfirmSelect { nowait: false }.into());
            }
            if rec.tx {
                push(ch, TxSelect {}.into());
            }
            if rec.paused {
                push(ch, ChannelFlow { active: false }.into());
            }
        }
        let declares = !(topology.exchanges.is_empty()
            && topology.queues.is_empty()
            && topology.queue_bindings.is_empty()
            && topology.exchange_bindings.is_empty());
        if declares {
            push(topology_channel, ChannelOpen::default().into());
            for e in &topology.exchanges {
                let mut m = e.clone();
                m.no_wait = false;
                push(topology_channel, m.into());
            }
            for q in &topology.queues {
                let mut m = q.declare.clone();
                m.no_wait = false;
                // A server-named queue gets a new name (the broker refuses `amq.` names
                // from clients); `queue_declared` makes what follows use it.
                if q.is_server_named() {
                    server_named.push_back(q.name.clone());
                } else {
                    m.queue = q.name.clone();
                }
                push(topology_channel, m.into());
            }
            for b in &topology.queue_bindings {
                let mut m = b.clone();
                m.no_wait = false;
                push(topology_channel, m.into());
            }
            for b in &topology.exchange_bindings {
                let mut m = b.clone();
                m.no_wait = false;
                push(topology_channel, m.into());
            }
            push(topology_channel, close_recovery_channel().into());
        }
        for c in &topology.consumers {
            // Only onto channels that are being reopened.
            if channels.contains(&c.channel) {
                let mut m: BasicConsume = c.consume.clone();
                m.no_wait = false;
                push(c.channel, m.into());
            }
        }
        ReplayPlan {
            steps,
            topology_channel,
            server_named,
            declaring: None,
            renamed: Vec::new(),
        }
    }

    /// The next method to send, once the previous one was answered.
    pub fn next_step(&mut self) -> Option<ReplayStep> {
        let step = self.steps.pop_front()?;
        self.declaring = match &step.method {
            Method::QueueDeclare(m) if m.queue.is_empty() => self.server_named.pop_front(),
            _ => None,
        };
        Some(step)
    }

    /// Steps not yet handed out.
    pub fn remaining(&self) -> usize {
        self.steps.len()
    }

    /// The channel declarations go on.
    pub fn topology_channel(&self) -> ChannelId {
        self.topology_channel
    }

    /// The `queue.declare` handed out last was answered with the name `new`: if it was a
    /// server-named queue, the bindings and consumers still to replay follow the new name
    /// and the rename is remembered.
    pub fn queue_declared(&mut self, new: &ShortString) {
        let Some(old) = self.declaring.take() else {
            return;
        };
        if old == *new {
            return;
        }
        let old = &old;
        for step in &mut self.steps {
            match &mut step.method {
                Method::QueueBind(m) if m.queue == *old => m.queue = new.clone(),
                Method::BasicConsume(m) if m.queue == *old => m.queue = new.clone(),
                _ => {}
            }
        }
        self.renamed.push((old.clone(), new.clone()));
    }

    /// The broker closed `channel` while replaying (a step on it was refused). The channel
    /// of declarations is reopened and the rest goes on; an application channel is lost, and
    /// the steps still planned on it are returned so that their owners can be told.
    pub fn channel_closed(&mut self, channel: ChannelId) -> Vec<ReplayStep> {
        if channel == self.topology_channel {
            let more = self.steps.iter().any(|s| s.channel == channel);
            if more {
                self.steps.push_front(ReplayStep {
                    channel,
                    method: ChannelOpen::default().into(),
                });
            }
            return Vec::new();
        }
        let (dropped, kept) = std::mem::take(&mut self.steps)
            .into_iter()
            .partition(|s| s.channel == channel);
        self.steps = kept;
        dropped.into()
    }

    /// Queues that came back under another name: `(old, new)`.
    pub fn renamed(&self) -> &[(ShortString, ShortString)] {
        &self.renamed
    }

    /// Takes the renames, once the replay is done.
    pub fn take_renamed(&mut self) -> Vec<(ShortString, ShortString)> {
        std::mem::take(&mut self.renamed)
    }
}

/// The orderly close of the declarations channel at the end of the replay.
pub(crate) fn close_recovery_channel() -> ChannelClose {
    ChannelClose {
        reply_code: 200,
        reply_text: ShortString::from_static("topology recovered"),
        class_id: 0,
        method_id: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{BasicQos, ExchangeBind, ExchangeDeclare, QueueBind, QueueDeclare};

    fn s(x: &str) -> ShortString {
        ShortString::try_from(x).unwrap()
    }

    /// A topology as the connection would record it: two channels, a server-named exclusive
    /// queue bound and consumed, an exchange-to-exchange binding.
    fn topology() -> Topology {
        let mut t = Topology::default();
        let ops: Vec<(u16, Method, Option<&str>)> = vec![
            (
                1,
                BasicQos {
                    prefetch_count: 10,
                    ..Default::default()
                }
                .into(),
                None,
            ),
            (1, ConfirmSelect { nowait: false }.into(), None),
            (2, TxSelect {}.into(), None),
            (2, ChannelFlow { active: false }.into(), None),
            (
                1,
                ExchangeDeclare {
                    exchange: s("logs"),
                    kind: s("fanout"),
                    no_wait: true,
                    ..Default::default()
                }
                .into(),
                None,
            ),
            (
                1,
                ExchangeDeclare {
                    exchange: s("all"),
                    kind: s("fanout"),
                    ..Default::default()
                }
                .into(),
                None,
            ),
            (
                1,
                QueueDeclare {
                    exclusive: true,
                    ..Default::default()
                }
                .into(),
                Some("amq.gen-A"),
            ),
            (
                1,
                QueueDeclare {
                    queue: s("jobs"),
                    durable: true,
                    ..Default::default()
                }
                .into(),
                None,
            ),
            (
                1,
                QueueBind {
                    queue: s("amq.gen-A"),
                    exchange: s("logs"),
                    ..Default::default()
                }
                .into(),
                None,
            ),
            (
                1,
                ExchangeBind {
                    destination: s("logs"),
                    source: s("all"),
                    ..Default::default()
                }
                .into(),
                None,
            ),
            (
                2,
                BasicConsume {
                    queue: s("amq.gen-A"),
                    exclusive: true,
                    ..Default::default()
                }
                .into(),
                Some("amq.ctag-1"),
            ),
            (
                1,
                BasicConsume {
                    queue: s("jobs"),
                    consumer_tag: s("worker"),
                    ..Default::default()
                }
                .into(),
                None,
            ),
        ];
        for (ch, m, name) in ops {
            t.record(ChannelId(ch), &m, name.map(s).as_ref());
        }
        t
    }

    fn describe(step: &ReplayStep) -> String {
        let detail = match &step.method {
            Method::ExchangeDeclare(m) => format!(" {} nowait={}", m.exchange, m.no_wait),
            Method::QueueDeclare(m) => format!(" {:?}", m.queue.as_str()),
            Method::QueueBind(m) => format!(" {}<-{}", m.queue, m.exchange),
            Method::ExchangeBind(m) => format!(" {}<-{}", m.destination, m.source),
            Method::BasicConsume(m) => format!(" {} tag={}", m.queue, m.consumer_tag),
            Method::BasicQos(m) => format!(" {}", m.prefetch_count),
            Method::ChannelFlow(m) => format!(" {}", m.active),
            _ => String::new(),
        };
        format!("{} {}{}", step.channel, step.method.name(), detail)
    }

    fn run(plan: &mut ReplayPlan) -> Vec<String> {
        std::iter::from_fn(|| plan.next_step())
            .map(|s| describe(&s))
            .collect()
    }

    #[test]
    fn replays_in_java_order_without_nowait() {
        let mut plan = ReplayPlan::new(&topology(), &[ChannelId(1), ChannelId(2)], ChannelId(3));
        assert_eq!(
            run(&mut plan),
            [
                "1 channel.open",
                "1 basic.qos 10",
                "1 confirm.select",
                "2 channel.open",
                "2 tx.select",
                "2 channel.flow false",
                "3 channel.open",
                "3 exchange.declare logs nowait=false",
                "3 exchange.declare all nowait=false",
                "3 queue.declare \"\"",
                "3 queue.declare \"jobs\"",
                "3 queue.bind amq.gen-A<-logs",
                "3 exchange.bind logs<-all",
                "3 channel.close",
                "2 basic.consume amq.gen-A tag=amq.ctag-1",
                "1 basic.consume jobs tag=worker",
            ]
        );
    }

    #[test]
    fn a_renamed_queue_is_followed_by_its_bindings_and_consumers() {
        let mut plan = ReplayPlan::new(&topology(), &[ChannelId(1), ChannelId(2)], ChannelId(3));
        while let Some(step) = plan.next_step() {
            if let Method::QueueDeclare(m) = &step.method {
                if m.queue.is_empty() {
                    break;
                }
            }
        }
        plan.queue_declared(&s("amq.gen-B"));
        let rest = run(&mut plan);
        assert!(
            rest.contains(&"3 queue.bind amq.gen-B<-logs".to_string()),
            "{rest:?}"
        );
        assert!(rest.contains(&"2 basic.consume amq.gen-B tag=amq.ctag-1".to_string()));
        assert_eq!(plan.renamed(), [(s("amq.gen-A"), s("amq.gen-B"))]);
    }

    #[test]
    fn a_refused_declaration_reopens_the_declarations_channel() {
        let mut plan = ReplayPlan::new(&topology(), &[ChannelId(1), ChannelId(2)], ChannelId(3));
        let mut seen = Vec::new();
        while let Some(step) = plan.next_step() {
            seen.push(describe(&step));
            if matches!(step.method, Method::ExchangeDeclare(_)) {
                break;
            }
        }
        assert!(plan.channel_closed(ChannelId(3)).is_empty());
        assert_eq!(
            plan.next_step().map(|s| describe(&s)).as_deref(),
            Some("3 channel.open")
        );
        assert_eq!(
            plan.next_step().map(|s| describe(&s)).as_deref(),
            Some("3 exchange.declare all nowait=false")
        );
    }

    #[test]
    fn a_lost_application_channel_drops_its_steps() {
        let mut plan = ReplayPlan::new(&topology(), &[ChannelId(1), ChannelId(2)], ChannelId(3));
        let dropped = plan.channel_closed(ChannelId(2));
        let dropped: Vec<_> = dropped.iter().map(describe).collect();
        assert_eq!(
            dropped,
            [
                "2 channel.open",
                "2 tx.select",
                "2 channel.flow false",
                "2 basic.consume amq.gen-A tag=amq.ctag-1"
            ]
        );
        assert!(run(&mut plan).iter().all(|s| !s.starts_with("2 ")));
    }

    #[test]
    fn consumers_of_channels_not_reopened_are_left_out() {
        let plan = ReplayPlan::new(&topology(), &[ChannelId(1)], ChannelId(3));
        assert_eq!(plan.clone().remaining(), 12);
        let mut plan = plan;
        assert!(run(&mut plan).iter().all(|s| !s.starts_with("2 ")));
    }
}
