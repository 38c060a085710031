//! The recorded topology: what the broker accepted is recorded (with server-chosen names),
//! deletes, unbinds and cancels remove it, and nothing refused or merely checked is kept.

use amqp_conformance::peer::Pair;
use amqp_proto::{
    BasicCancel, BasicCancelOk, BasicCancelOptions, BasicConsumeOk, BasicConsumeOptions,
    BasicQosOk, BasicQosOptions, ChannelClose, ChannelCloseOk, ChannelId, ExchangeBindOk,
    ExchangeBindOptions, ExchangeDeclareOk, ExchangeDeclareOptions, ExchangeDeleteOk,
    ExchangeDeleteOptions, ExchangeUnbindOk, Method, QueueBindOk, QueueBindOptions, QueueDeclareOk,
    QueueDeclareOptions, QueueDeleteOk, QueueDeleteOptions, QueueUnbindOk, QueueUnbindOptions,
    Reply, RequestId, Topology, TxSelectOk,
};

#[track_caller]
fn ok(pair: &mut Pair, ch: ChannelId, id: RequestId, reply: impl Into<Method>) -> Reply {
    pair.next_frame().expect("request sent");
    pair.send_method(ch.0, reply);
    pair.expect_completed(id).expect("success")
}

fn exchange_names(t: &Topology) -> Vec<&str> {
    t.exchanges.iter().map(|e| e.exchange.as_str()).collect()
}

fn queue_names(t: &Topology) -> Vec<&str> {
    t.queues.iter().map(|q| q.name.as_str()).collect()
}

fn binding_keys(t: &Topology) -> Vec<(&str, &str, &str)> {
    t.queue_bindings
        .iter()
        .map(|b| {
            (
                b.queue.as_str(),
                b.exchange.as_str(),
                b.routing_key.as_str(),
            )
        })
        .collect()
}

fn consumer_tags(t: &Topology) -> Vec<(u16, &str)> {
    t.consumers
        .iter()
        .map(|c| (c.channel.0, c.consume.consumer_tag.as_str()))
        .collect()
}

#[test]
fn declarations_are_recorded_once_accepted() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    assert_eq!(*pair.client.topology(), Topology::default());

    let options = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let id = pair
        .client
        .exchange_declare(ch, "logs", "topic", options)
        .unwrap();
    // Not before the broker said yes.
    assert!(pair.client.topology().exchanges.is_empty());
    ok(&mut pair, ch, id, ExchangeDeclareOk {});
    assert_eq!(exchange_names(pair.client.topology()), ["logs"]);
    assert!(pair.client.topology().exchanges[0].durable);

    // A server-named queue is recorded under the name the broker gave it.
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let id = pair.client.queue_declare(ch, "", options).unwrap();
    ok(
        &mut pair,
        ch,
        id,
        QueueDeclareOk {
            queue: Pair::s("amq.gen-xyz"),
            message_count: 0,
            consumer_count: 0,
        },
    );
    let t = pair.client.topology();
    assert_eq!(queue_names(t), ["amq.gen-xyz"]);
    assert_eq!(t.queues[0].declare.queue.as_str(), "");
    assert!(t.queues[0].declare.exclusive);

    let id = pair
        .client
        .queue_declare(ch, "jobs", QueueDeclareOptions::default())
        .unwrap();
    ok(
        &mut pair,
        ch,
        id,
        QueueDeclareOk {
            queue: Pair::s("jobs"),
            message_count: 0,
            consumer_count: 0,
        },
    );

    let id = pair
        .client
        .queue_bind(ch, "jobs", "logs", "a.*", QueueBindOptions::default())
        .unwrap();
    ok(&mut pair, ch, id, QueueBindOk {});
    let id = pair
        .client
        .queue_bind(ch, "amq.gen-xyz", "logs", "#", QueueBindOptions::default())
        .unwrap();
    ok(&mut pair, ch, id, QueueBindOk {});
    let id = pair
        .client
        .exchange_bind(ch, "dst", "logs", "x", ExchangeBindOptions::default())
        .unwrap();
    ok(&mut pair, ch, id, ExchangeBindOk {});

    let id = pair
        .client
        .basic_qos(ch, 10, BasicQosOptions::default())
        .unwrap();
    ok(&mut pair, ch, id, BasicQosOk {});
    let id = pair
        .client
        .basic_qos(
            ch,
            100,
            BasicQosOptions {
                global: true,
                ..Default::default()
            },
        )
        .unwrap();
    ok(&mut pair, ch, id, BasicQosOk {});
    let id = pair
        .client
        .basic_qos(ch, 20, BasicQosOptions::default())
        .unwrap();
    ok(&mut pair, ch, id, BasicQosOk {});
    pair.select_confirms(ch);
    let tx = pair.open_channel();
    let id = pair.client.tx_select(tx).unwrap();
    ok(&mut pair, tx, id, TxSelectOk {});

    // A broker-named consumer is recorded with its tag.
    let id = pair
        .client
        .basic_consume(ch, "jobs", "", BasicConsumeOptions::default())
        .unwrap();
    ok(
        &mut pair,
        ch,
        id,
        BasicConsumeOk {
            consumer_tag: Pair::s("amq.ctag-1"),
        },
    );
    pair.drain_events();

    let t = pair.client.topology();
    assert_eq!(
        binding_keys(t),
        [("jobs", "logs", "a.*"), ("amq.gen-xyz", "logs", "#")]
    );
    assert_eq!(t.exchange_bindings.len(), 1);
    assert_eq!(
        (
            t.exchange_bindings[0].destination.as_str(),
            t.exchange_bindings[0].source.as_str()
        ),
        ("dst", "logs")
    );
    assert_eq!(consumer_tags(t), [(ch.0, "amq.ctag-1")]);
    assert_eq!(t.consumers[0].consume.queue.as_str(), "jobs");
    let settings = &t.channels[&ch];
    assert!(settings.confirm && !settings.tx);
    // The last qos per global flag.
    let mut qos: Vec<(bool, u16)> = settings
        .qos
        .iter()
        .map(|q| (q.global, q.prefetch_count))
        .collect();
    qos.sort();
    assert_eq!(qos, [(false, 20), (true, 100)]);
    assert!(t.channels[&tx].tx);
}

#[test]
fn passive_declares_are_not_recorded() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    let id = pair
        .client
        .exchange_declare(
            ch,
            "e",
            "direct",
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
        )
        .unwrap();
    ok(&mut pair, ch, id, ExchangeDeclareOk {});
    let id = pair
        .client
        .queue_declare(
            ch,
            "q",
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
        )
        .unwrap();
    ok(
        &mut pair,
        ch,
        id,
        QueueDeclareOk {
            queue: Pair::s("q"),
            message_count: 0,
            consumer_count: 0,
        },
    );
    assert_eq!(*pair.client.topology(), Topology::default());
}

#[test]
fn refused_declarations_are_not_recorded() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    pair.client
        .queue_declare(ch, "q", QueueDeclareOptions::default())
        .unwrap();
    pair.next_frame();
    pair.send_method(
        ch.0,
        ChannelClose {
            reply_code: 406,
            reply_text: Pair::s("PRECONDITION_FAILED"),
            class_id: 50,
            method_id: 10,
        },
    );
    pair.drain_events();
    assert!(pair.client.topology().queues.is_empty());
}

#[test]
fn nowait_declarations_are_recorded_at_once() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    pair.client
        .exchange_declare(
            ch,
            "e",
            "fanout",
            ExchangeDeclareOptions {
                nowait: true,
                ..Default::default()
            },
        )
        .unwrap();
    pair.client
        .queue_declare(
            ch,
            "q",
            QueueDeclareOptions {
                nowait: true,
                ..Default::default()
            },
        )
        .unwrap();
    pair.client
        .queue_bind(
            ch,
            "q",
            "e",
            "",
            QueueBindOptions {
                nowait: true,
                ..Default::default()
            },
        )
        .unwrap();
    pair.client
        .basic_consume(
            ch,
            "q",
            "c1",
            BasicConsumeOptions {
                nowait: true,
                ..Default::default()
            },
        )
        .unwrap();
    let t = pair.client.topology();
    assert_eq!(exchange_names(t), ["e"]);
    assert_eq!(queue_names(t), ["q"]);
    assert_eq!(binding_keys(t), [("q", "e", "")]);
    assert_eq!(consumer_tags(t), [(ch.0, "c1")]);
}

#[test]
fn deletes_unbinds_and_cancels_remove_what_they_undo() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    for name in ["a", "b"] {
        let id = pair
            .client
            .exchange_declare(ch, name, "direct", Default::default())
            .unwrap();
        ok(&mut pair, ch, id, ExchangeDeclareOk {});
        let id = pair
            .client
            .queue_declare(ch, name, Default::default())
            .unwrap();
        ok(
            &mut pair,
            ch,
            id,
            QueueDeclareOk {
                queue: Pair::s(name),
                message_count: 0,
                consumer_count: 0,
            },
        );
    }
    for (q, e, k) in [("a", "a", "1"), ("a", "b", "2"), ("b", "b", "3")] {
        let id = pair
            .client
            .queue_bind(ch, q, e, k, QueueBindOptions::default())
            .unwrap();
        ok(&mut pair, ch, id, QueueBindOk {});
    }
    let id = pair
        .client
        .exchange_bind(ch, "a", "b", "x", ExchangeBindOptions::default())
        .unwrap();
    ok(&mut pair, ch, id, ExchangeBindOk {});
    let id = pair
        .client
        .exchange_bind(ch, "b", "a", "y", ExchangeBindOptions::default())
        .unwrap();
    ok(&mut pair, ch, id, ExchangeBindOk {});
    let ca = pair.start_consumer(ch, "a", "ca");
    pair.start_consumer(ch, "b", "cb");
    pair.start_consumer(ch, "b", "cb2");

    // Unbind one queue binding and one exchange binding.
    let id = pair
        .client
        .queue_unbind(ch, "a", "b", "2", QueueUnbindOptions::default())
        .unwrap();
    ok(&mut pair, ch, id, QueueUnbindOk {});
    assert_eq!(
        binding_keys(pair.client.topology()),
        [("a", "a", "1"), ("b", "b", "3")]
    );
    let id = pair
        .client
        .exchange_unbind(ch, "b", "a", "y", ExchangeBindOptions::default())
        .unwrap();
    ok(&mut pair, ch, id, ExchangeUnbindOk {});
    assert_eq!(pair.client.topology().exchange_bindings.len(), 1);

    // Client cancel.
    let id = pair
        .client
        .basic_cancel(ch, &ca, BasicCancelOptions::default())
        .unwrap();
    pair.next_frame();
    pair.send_method(
        ch.0,
        BasicCancelOk {
            consumer_tag: ca.clone(),
        },
    );
    assert!(matches!(
        pair.expect_event(),
        amqp_proto::Event::ConsumerEnded { .. }
    ));
    assert_eq!(
        pair.expect_completed(id),
        Ok(Reply::Cancelled { consumer_tag: ca })
    );
    assert_eq!(
        consumer_tags(pair.client.topology()),
        [(ch.0, "cb"), (ch.0, "cb2")]
    );
    // Server cancel.
    pair.send_method(
        ch.0,
        BasicCancel {
            consumer_tag: Pair::s("cb2"),
            no_wait: true,
        },
    );
    pair.drain_events();
    assert_eq!(consumer_tags(pair.client.topology()), [(ch.0, "cb")]);

    // Deleting queue b takes its bindings and consumers with it.
    let id = pair
        .client
        .queue_delete(ch, "b", QueueDeleteOptions::default())
        .unwrap();
    ok(&mut pair, ch, id, QueueDeleteOk { message_count: 0 });
    let t = pair.client.topology();
    assert_eq!(queue_names(t), ["a"]);
    assert_eq!(binding_keys(t), [("a", "a", "1")]);
    assert!(t.consumers.is_empty());

    // Deleting exchange a takes the bindings to and from it.
    let id = pair
        .client
        .exchange_delete(ch, "a", ExchangeDeleteOptions::default())
        .unwrap();
    ok(&mut pair, ch, id, ExchangeDeleteOk {});
    let t = pair.client.topology();
    assert_eq!(exchange_names(t), ["b"]);
    assert!(t.queue_bindings.is_empty());
    assert!(t.exchange_bindings.is_empty());
}

#[test]
fn redeclaring_replaces_rather_than_duplicates() {
    let mut pair = Pair::connected();
    let ch = pair.open_channel();
    for durable in [false, true] {
        let options = ExchangeDeclareOptions {
            durable,
            ..Default::default()
        };
        let id = pair
            .client
            .exchange_declare(ch, "e", "direct", options)
            .unwrap();
        ok(&mut pair, ch, id, ExchangeDeclareOk {});
        let id = pair
            .client
            .queue_bind(ch, "q", "e", "k", QueueBindOptions::default())
            .unwrap();
        ok(&mut pair, ch, id, QueueBindOk {});
    }
    let t = pair.client.topology();
    assert_eq!(t.exchanges.len(), 1);
    assert!(t.exchanges[0].durable);
    assert_eq!(t.queue_bindings.len(), 1);
}

#[test]
fn closing_a_channel_forgets_its_consumers_and_settings() {
    let mut pair = Pair::connected();
    let a = pair.open_channel();
    let b = pair.open_channel();
    for ch in [a, b] {
        pair.select_confirms(ch);
        pair.start_consumer(ch, "q", &format!("c{}", ch.0));
    }
    let id = pair
        .client
        .queue_declare(a, "q", Default::default())
        .unwrap();
    ok(
        &mut pair,
        a,
        id,
        QueueDeclareOk {
            queue: Pair::s("q"),
            message_count: 0,
            consumer_count: 0,
        },
    );

    // Client close of a.
    let id = pair.client.close_channel(a).unwrap();
    pair.next_frame();
    pair.drain_events();
    pair.send_method(a.0, ChannelCloseOk {});
    pair.expect_completed(id).unwrap();
    let t = pair.client.topology();
    assert_eq!(consumer_tags(t), [(b.0, "c2")]);
    assert!(!t.channels.contains_key(&a));
    // Queues and exchanges belong to the connection, not the channel.
    assert_eq!(queue_names(t), ["q"]);

    // Server close of b.
    pair.send_method(
        b.0,
        ChannelClose {
            reply_code: 404,
            reply_text: Pair::s("x"),
            class_id: 0,
            method_id: 0,
        },
    );
    pair.drain_events();
    let t = pair.client.topology();
    assert!(t.consumers.is_empty());
    assert!(t.channels.is_empty());
    assert_eq!(queue_names(t), ["q"]);
}
