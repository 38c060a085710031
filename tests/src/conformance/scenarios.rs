//! The scenario text, written once. `scenarios!(mode)` expands it through `mode!`, one
//! invocation per scenario (plus one for the shared helpers and `cleanup`), inside the
//! flavour module that supplies the names it uses: `Env`, the client API, the
//! [`support`](super::support) helpers. See the [module docs](super) for the rules the text
//! follows so that it also reads as blocking code once `async`/`.await` are stripped.
//!
//! rustfmt does not format macro bodies: keep the code formatted as rustfmt would
//! (`max_width = 88` for the body, which sits 12 columns in).

macro_rules! scenarios {
    ($mode:ident) => {
        $mode! {
            /// Deletes the queues and exchanges the scenario named through
            /// `env.queue`/`env.exchange`. The runner calls it after every scenario, passed or
            /// failed.
            pub async fn cleanup(env: Env) {
                let queues = env.tracked_queues();
                let exchanges = env.tracked_exchanges();
                if queues.is_empty() && exchanges.is_empty() {
                    return;
                }
                let conn = match env.try_connect(env.options()).await {
                    Ok(conn) => conn,
                    // The scenario has failed already (it needs the broker too).
                    Err(e) => {
                        return eprintln!("cleanup after {}: cannot connect: {e}", env.scenario());
                    }
                };
                let mut ch = conn.open_channel().await.expect("open the cleanup channel");
                for queue in &queues {
                    match ch.queue_delete(queue, QueueDeleteOptions::default()).await {
                        Ok(_) => {}
                        // Exclusive to a connection that is still closing: it goes with it.
                        Err(e)
                            if e.kind() == ErrorKind::ResourceLocked
                                || e.kind() == ErrorKind::NotFound =>
                        {
                            ch = conn
                                .open_channel()
                                .await
                                .expect("reopen the cleanup channel");
                        }
                        Err(e) => panic!("cleanup: deleting queue {queue}: {e}"),
                    }
                }
                for exchange in &exchanges {
                    match ch
                        .exchange_delete(exchange, ExchangeDeleteOptions::default())
                        .await
                    {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            ch = conn
                                .open_channel()
                                .await
                                .expect("reopen the cleanup channel");
                        }
                        Err(e) => panic!("cleanup: deleting exchange {exchange}: {e}"),
                    }
                }
                conn.close().await.expect("close the cleanup connection");
            }

            /// Publishes a text message with no properties.
            async fn publish(ch: &Channel, exchange: &str, routing_key: &str, body: &str) {
                ch.basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions::default(),
                    &BasicProperties::default(),
                    body.as_bytes().to_vec(),
                )
                .await
                .expect("basic.publish");
            }

            /// Starts a consumer with a broker-chosen tag.
            async fn consume(ch: &Channel, queue: &str, no_ack: bool) -> Consumer {
                let options = BasicConsumeOptions {
                    no_ack,
                    ..Default::default()
                };
                ch.basic_consume(queue, "", options)
                    .await
                    .expect("basic.consume")
            }

            /// Declares a (non-durable, shared) queue.
            async fn declare_queue(ch: &Channel, queue: &str, arguments: FieldTable) {
                ch.queue_declare(queue, QueueDeclareOptions { arguments, ..Default::default() })
                    .await
                    .expect("queue.declare");
            }

            /// Declares a broker-named exclusive queue and returns its name.
            async fn declare_private_queue(ch: &Channel) -> String {
                let options = QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                };
                let info = ch
                    .queue_declare("", options)
                    .await
                    .expect("queue.declare (server-named)");
                assert!(info.name.starts_with("amq.gen-"), "{:?}", info.name);
                info.name.to_string()
            }

            /// Ready messages in `queue`, from a passive declare.
            async fn ready_count(ch: &Channel, queue: &str) -> u32 {
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                ch.queue_declare(queue, passive)
                    .await
                    .expect("passive queue.declare")
                    .message_count
            }

            /// Bodies received (no-ack consumer) up to, not including, `sentinel`. Publishing a
            /// sentinel last proves that nothing else is coming without waiting for a timeout.
            async fn collect_until(
                env: &Env,
                consumer: &mut Consumer,
                sentinel: &str,
            ) -> Vec<String> {
                let mut bodies = Vec::new();
                loop {
                    let d = env.recv(consumer).await;
                    let body = text(&d.body);
                    if body == sentinel {
                        return bodies;
                    }
                    bodies.push(body);
                }
            }

            /// Fetches one message with `basic.get`, which must find one.
            async fn get(ch: &Channel, queue: &str) -> Delivery {
                ch.basic_get(queue, BasicGetOptions::default())
                    .await
                    .expect("basic.get")
                    .expect("basic.get found the queue empty")
            }

            /// Asserts `err` is a channel closed by the broker with `kind` and `code`.
            fn assert_channel_error(err: &Error, kind: ErrorKind, code: u16) {
                assert_eq!(err.kind(), kind, "{err}");
                assert_eq!(err.reply_code(), Some(ReplyCode(code)), "{err}");
                match err {
                    Error::ChannelClosed { reason, .. } => {
                        assert_eq!(reason.initiator, Initiator::Server)
                    }
                    other => panic!("expected a channel closed by the broker, got {other}"),
                }
            }

            /// The reason of a connection forcibly closed with `explanation` (320
            /// CONNECTION_FORCED).
            fn assert_forced_close(err: &Error, explanation: &str, what: &str) {
                match err {
                    Error::ConnectionClosed(reason) => {
                        assert_eq!(reason.code, ReplyCode::CONNECTION_FORCED, "{what}: {err}");
                        assert_eq!(reason.initiator, Initiator::Server, "{what}: {err}");
                        assert!(
                            reason.text.contains(explanation),
                            "{what}: the reason {:?} lacks {explanation:?}",
                            reason.text
                        );
                    }
                    other => panic!("{what}: expected the forced connection close, got {other}"),
                }
            }
        }

        $mode! {
            /// Tutorial 1, "Hello World!": one producer, one consumer, the default exchange.
            pub async fn tutorial_hello_world(env: Env) {
                let queue = env.queue("hello");

                let sender = env.connect().await;
                let ch = sender.open_channel().await.expect("open channel");
                declare_queue(&ch, &queue, FieldTable::new()).await;
                publish(&ch, "", &queue, "Hello World!").await;
                sender.close().await.expect("close the sender");

                let receiver = env.connect().await;
                let ch = receiver.open_channel().await.expect("open channel");
                // Declaring again is idempotent; whoever starts first creates the queue.
                declare_queue(&ch, &queue, FieldTable::new()).await;
                let mut consumer = consume(&ch, &queue, true).await;
                let d = env.recv(&mut consumer).await;
                assert_eq!(text(&d.body), "Hello World!");
                assert_eq!(d.exchange.as_str(), "");
                assert_eq!(d.routing_key.as_str(), queue);
                assert_eq!(d.consumer_tag, *consumer.tag());
                assert!(!d.redelivered);
                receiver.close().await.expect("close the receiver");
            }
        }

        $mode! {
            /// Tutorial 2, work queues: a durable queue, persistent tasks, two workers with
            /// prefetch 1 and manual acks. Fair dispatch is observable: a worker holding an unacked
            /// task gets nothing more, while the other, acking, takes the rest.
            pub async fn tutorial_work_queues(env: Env) {
                let queue = env.queue("task_queue");
                let durable = QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };

                let producer = env.connect().await;
                let pch = producer.open_channel().await.expect("open channel");
                pch.queue_declare(&queue, durable.clone())
                    .await
                    .expect("declare the task queue");
                pch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm.select");

                let mut workers = Vec::new();
                for _ in 0..2 {
                    let conn = env.connect().await;
                    let ch = conn.open_channel().await.expect("open channel");
                    ch.queue_declare(&queue, durable.clone())
                        .await
                        .expect("declare the task queue");
                    ch.basic_qos(1, BasicQosOptions::default())
                        .await
                        .expect("basic.qos");
                    let consumer = consume(&ch, &queue, false).await;
                    workers.push((conn, consumer));
                }

                let persistent = BasicProperties::default().with_delivery_mode(2);
                for i in 0..6 {
                    pch.basic_publish(
                        "",
                        &queue,
                        BasicPublishOptions::default(),
                        &persistent,
                        format!("task {i}"),
                    )
                    .await
                    .expect("publish a task");
                }
                assert!(
                    pch.wait_for_confirms().await.expect("confirms"),
                    "a task was nacked"
                );

                let (conn_b, mut busy) = workers.pop().expect("worker b");
                let (conn_a, mut fast) = workers.pop().expect("worker a");
                // Each worker gets one task, and no second one while it holds the first.
                let a1 = env.recv(&mut fast).await;
                let b1 = env.recv(&mut busy).await;
                assert!(
                    env.try_recv(&mut fast, ms(300)).await.is_none(),
                    "prefetch 1 exceeded"
                );
                assert!(
                    env.try_recv(&mut busy, ms(50)).await.is_none(),
                    "prefetch 1 exceeded"
                );

                // The fast worker acks and gets the next task each time; the busy one gets nothing.
                let mut by_fast = vec![text(&a1.body)];
                a1.ack().expect("ack");
                for _ in 0..2 {
                    let d = env.recv(&mut fast).await;
                    by_fast.push(text(&d.body));
                    d.ack().expect("ack");
                }
                let a4 = env.recv(&mut fast).await;
                by_fast.push(text(&a4.body));
                assert!(
                    env.try_recv(&mut busy, ms(200)).await.is_none(),
                    "a busy worker (one unacked task, prefetch 1) was given another"
                );

                // Both are now full; the last task goes to the busy worker once it acks.
                let mut by_busy = vec![text(&b1.body)];
                b1.ack().expect("ack");
                let b2 = env.recv(&mut busy).await;
                by_busy.push(text(&b2.body));
                assert_eq!(b2.properties.delivery_mode(), Some(2), "persistent");
                assert!(!b2.redelivered);
                b2.ack().expect("ack");
                a4.ack().expect("ack");

                assert_eq!((by_fast.len(), by_busy.len()), (4, 2));
                let mut all: Vec<String> = by_fast.into_iter().chain(by_busy).collect();
                all.sort();
                let expected: Vec<String> = (0..6).map(|i| format!("task {i}")).collect();
                assert_eq!(all, expected, "every task exactly once");
                assert_eq!(ready_count(&pch, &queue).await, 0);
                for conn in [producer, conn_a, conn_b] {
                    conn.close().await.expect("close");
                }
            }
        }

        $mode! {
            /// Tutorial 3, publish/subscribe: a fanout exchange copies every message to each bound
            /// queue (server-named, exclusive); an unbound queue gets nothing.
            pub async fn tutorial_publish_subscribe(env: Env) {
                let logs = env.exchange("logs");
                let conn = env.connect().await;
                let ch = conn.open_channel().await.expect("open channel");
                ch.exchange_declare(&logs, "fanout", ExchangeDeclareOptions::default())
                .await
                .expect("declare the fanout exchange");

                let mut subscribers = Vec::new();
                for _ in 0..2 {
                    let sub = env.connect().await;
                    let sch = sub.open_channel().await.expect("open channel");
                    let queue = declare_private_queue(&sch).await;
                    sch.queue_bind(&queue, &logs, "", QueueBindOptions::default())
                    .await
                    .expect("queue.bind");
                    let consumer = consume(&sch, &queue, true).await;
                    subscribers.push((sub, consumer));
                }
                let unbound = declare_private_queue(&ch).await;

                for line in ["log 1", "log 2", "log 3", "END"] {
                    publish(&ch, &logs, "any key", line).await;
                }
                for (sub, consumer) in &mut subscribers {
                    assert_eq!(
                        collect_until(&env, consumer, "END").await,
                        ["log 1", "log 2", "log 3"]
                    );
                    sub.close().await.expect("close");
                }
                assert_eq!(ready_count(&ch, &unbound).await, 0);
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// Tutorial 4, routing: a direct exchange delivers by exact routing key; a queue bound
            /// with several keys gets each matching message once; unmatched keys are dropped.
            pub async fn tutorial_routing(env: Env) {
                let exchange = env.exchange("direct_logs");
                let conn = env.connect().await;
                let ch = conn.open_channel().await.expect("open channel");
                ch.exchange_declare(&exchange, "direct", ExchangeDeclareOptions::default())
                .await
                .expect("declare the direct exchange");

                let errors_only = declare_private_queue(&ch).await;
                let everything = declare_private_queue(&ch).await;
                let bindings = [
                    (&errors_only, "error"),
                    (&everything, "info"),
                    (&everything, "warning"),
                    (&everything, "error"),
                ];
                for (queue, key) in bindings {
                    ch.queue_bind(queue, &exchange, key, QueueBindOptions::default())
                    .await
                    .expect("queue.bind");
                }
                let mut errors_consumer = consume(&ch, &errors_only, true).await;
                let mut all_consumer = consume(&ch, &everything, true).await;

                for (key, body) in [
                    ("info", "an info"),
                    ("warning", "a warning"),
                    ("error", "an error"),
                    ("debug", "a debug line nobody wants"),
                    ("error", "END"),
                ] {
                    publish(&ch, &exchange, key, body).await;
                }
                assert_eq!(
                    collect_until(&env, &mut errors_consumer, "END").await,
                    ["an error"]
                );
                assert_eq!(
                    collect_until(&env, &mut all_consumer, "END").await,
                    ["an info", "a warning", "an error"]
                );

                // Unbinding one key stops only that key.
                ch.queue_unbind(&everything, &exchange, "info", QueueUnbindOptions::default())
                    .await
                    .expect("queue.unbind");
                publish(&ch, &exchange, "info", "a late info").await;
                publish(&ch, &exchange, "warning", "a late warning").await;
                publish(&ch, &exchange, "error", "END").await;
                assert_eq!(
                    collect_until(&env, &mut all_consumer, "END").await,
                    ["a late warning"]
                );
                assert_eq!(
                    collect_until(&env, &mut errors_consumer, "END").await,
                    Vec::<String>::new()
                );
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// Tutorial 5, topics: `*` matches exactly one word, `#` zero or more; a message
            /// matching two bindings of one queue arrives there once.
            pub async fn tutorial_topics(env: Env) {
                let exchange = env.exchange("topic_logs");
                let conn = env.connect().await;
                let ch = conn.open_channel().await.expect("open channel");
                ch.exchange_declare(&exchange, "topic", ExchangeDeclareOptions::default())
                .await
                .expect("declare the topic exchange");

                let q1 = declare_private_queue(&ch).await;
                let q2 = declare_private_queue(&ch).await;
                let q3 = declare_private_queue(&ch).await;
                for (queue, pattern) in [
                    (&q1, "*.orange.*"),
                    (&q2, "*.*.rabbit"),
                    (&q2, "lazy.#"),
                    (&q3, "#"),
                ] {
                    ch.queue_bind(queue, &exchange, pattern, QueueBindOptions::default())
                    .await
                    .expect("queue.bind");
                }
                let mut c1 = consume(&ch, &q1, true).await;
                let mut c2 = consume(&ch, &q2, true).await;
                let mut c3 = consume(&ch, &q3, true).await;

                let keys = [
                    "quick.orange.rabbit",
                    "lazy.orange.elephant",
                    "quick.orange.fox",
                    "lazy.brown.fox",
                    "lazy.pink.rabbit",
                    "quick.brown.fox",
                    "quick.orange.male.rabbit",
                    "lazy.orange.male.rabbit",
                    "lazy",
                    "orange",
                ];
                for key in keys {
                    publish(&ch, &exchange, key, key).await;
                }
                // Matches all three queues.
                publish(&ch, &exchange, "lazy.orange.end", "END").await;

                assert_eq!(
                    collect_until(&env, &mut c1, "END").await,
                    [
                        "quick.orange.rabbit",
                        "lazy.orange.elephant",
                        "quick.orange.fox"
                    ]
                );
                assert_eq!(
                    collect_until(&env, &mut c2, "END").await,
                    [
                        "quick.orange.rabbit",
                        "lazy.orange.elephant",
                        "lazy.brown.fox",
                        "lazy.pink.rabbit",
                        "lazy.orange.male.rabbit",
                        "lazy",
                    ]
                );
                assert_eq!(collect_until(&env, &mut c3, "END").await, keys);
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// Tutorial 6, RPC: requests carry a correlation id and `reply_to` =
            /// `amq.rabbitmq.reply-to` (direct reply-to: the client consumes that pseudo-queue,
            /// no-ack, before publishing); the server replies to the name the broker substituted,
            /// and the client matches replies by correlation id, also when several requests are in
            /// flight.
            pub async fn tutorial_rpc(env: Env) {
                let rpc_queue = env.queue("rpc_queue");

                let server = env.connect().await;
                let sch = server.open_channel().await.expect("open channel");
                declare_queue(&sch, &rpc_queue, FieldTable::new()).await;
                sch.basic_qos(1, BasicQosOptions::default())
                    .await
                    .expect("basic.qos");
                let mut requests = consume(&sch, &rpc_queue, false).await;

                let client = env.connect().await;
                let cch = client.open_channel().await.expect("open channel");
                let no_ack = BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                };
                let mut replies = cch
                    .basic_consume("amq.rabbitmq.reply-to", "", no_ack)
                    .await
                    .expect("consume amq.rabbitmq.reply-to");

                // The server's loop body: answer one request.
                async fn serve_one(env: &Env, ch: &Channel, requests: &mut Consumer) {
                    let request = env.recv(requests).await;
                    let reply_to = request.properties.reply_to().expect("reply_to");
                    assert!(
                        reply_to.starts_with("amq.rabbitmq.reply-to."),
                        "the broker substitutes a routable name, got {reply_to:?}"
                    );
                    let correlation_id = request
                        .properties
                        .correlation_id()
                        .expect("correlation_id");
                    let n: u64 = text(&request.body).parse().expect("a number");
                    let props = BasicProperties::default().with_correlation_id(correlation_id);
                    ch.basic_publish(
                        "",
                        &reply_to,
                        BasicPublishOptions::default(),
                        &props,
                        fib(n).to_string(),
                    )
                    .await
                    .expect("publish the reply");
                    request.ack().expect("ack the request");
                }

                let call = |n: u64, id: &str| {
                    let props = BasicProperties::default()
                        .with_reply_to("amq.rabbitmq.reply-to")
                        .with_correlation_id(id);
                    (props, n.to_string())
                };

                // One call at a time.
                for n in [0u64, 1, 2, 10, 30] {
                    let id = env.name(&format!("call-{n}"));
                    let (props, body) = call(n, &id);
                    cch.basic_publish("", &rpc_queue, BasicPublishOptions::default(), &props, body)
                        .await
                        .expect("publish the request");
                    serve_one(&env, &sch, &mut requests).await;
                    let reply = env.recv(&mut replies).await;
                    assert_eq!(
                        reply.properties.correlation_id(),
                        Some(id.as_str())
                    );
                    assert_eq!(text(&reply.body), fib(n).to_string());
                }

                // Several in flight: replies are told apart by correlation id alone.
                let mut expected = HashMap::new();
                for n in [5u64, 20, 40, 50] {
                    let id = env.name(&format!("pipelined-{n}"));
                    let (props, body) = call(n, &id);
                    cch.basic_publish("", &rpc_queue, BasicPublishOptions::default(), &props, body)
                        .await
                        .expect("publish the request");
                    expected.insert(id, fib(n).to_string());
                }
                for _ in 0..expected.len() {
                    serve_one(&env, &sch, &mut requests).await;
                }
                for _ in 0..expected.len() {
                    let reply = env.recv(&mut replies).await;
                    let id = reply
                        .properties
                        .correlation_id()
                        .expect("correlation_id");
                    let want = expected
                        .remove(id)
                        .expect("a reply to a call made once");
                    assert_eq!(text(&reply.body), want);
                }
                client.close().await.expect("close");
                server.close().await.expect("close");
            }
        }

        $mode! {
            /// 100,000 messages published in confirm mode: every confirm is an ack for the right
            /// tag, and every message is then consumed intact and in order.
            pub async fn publish_confirm_100k(env: Env) {
                const COUNT: u64 = 100_000;
                const WINDOW: usize = 5_000;
                let queue = env.queue("bulk");
                let conn = env.connect().await;
                let ch = conn.open_channel().await.expect("open channel");
                declare_queue(&ch, &queue, FieldTable::new()).await;
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm.select");

                let props = BasicProperties::default();
                let mut in_flight = VecDeque::new();
                let mut acked = 0u64;
                for seq in 0..COUNT {
                    let confirm = ch
                        .basic_publish(
                            "",
                            &queue,
                            BasicPublishOptions::default(),
                            &props,
                            seq_body(seq),
                        )
                        .await
                        .expect("publish");
                    assert_eq!(confirm.delivery_tag(), Some(DeliveryTag(seq + 1)));
                    in_flight.push_back(confirm);
                    while in_flight.len() > WINDOW || (seq + 1 == COUNT && !in_flight.is_empty()) {
                        let confirm = in_flight.pop_front().expect("non-empty");
                        match env.confirm(confirm).await {
                            Confirmation::Ack(None) => acked += 1,
                            other => panic!("publish {acked}: {other:?}"),
                        }
                    }
                }
                assert_eq!(acked, COUNT);
                assert!(ch.wait_for_confirms().await.expect("wait_for_confirms"));
                assert_eq!(u64::from(ready_count(&ch, &queue).await), COUNT);

                let cch = conn.open_channel().await.expect("open channel");
                cch.basic_qos(2_000, BasicQosOptions::default())
                    .await
                    .expect("basic.qos");
                let mut consumer = consume(&cch, &queue, false).await;
                for seq in 0..COUNT {
                    let d = env.recv(&mut consumer).await;
                    check_seq_body(seq, &d.body);
                    assert!(!d.redelivered, "message {seq} redelivered");
                    if seq % 1_000 == 999 {
                        d.ack_multiple().expect("ack");
                    }
                }
                consumer.cancel().await.expect("basic.cancel");
                assert_eq!(
                    env.drain_to_end(&mut consumer).await,
                    (0, None),
                    "a message too many"
                );
                assert_eq!(ready_count(&ch, &queue).await, 0);
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// A mandatory message nobody can take comes back with 312 NO_ROUTE: through
            /// `on_return` outside confirm mode, attached to its confirmation (an ack) in confirm
            /// mode. Routable or non-mandatory messages produce no return.
            pub async fn mandatory_returns_no_route(env: Env) {
                let nowhere = env.name("no-such-queue");
                let unbound = env.exchange("unbound");
                let mandatory = BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                };
                let conn = env.connect().await;

                let ch = conn.open_channel().await.expect("open channel");
                ch.exchange_declare(&unbound, "direct", ExchangeDeclareOptions::default())
                .await
                .expect("exchange.declare");
                let mut returns = ch.on_return();
                publish(&ch, "", &nowhere, "dropped silently").await;
                let props = BasicProperties::default().with_message_id("m-1");
                ch.basic_publish("", &nowhere, mandatory, &props, "back 1")
                    .await
                    .expect("publish");
                ch.basic_publish(
                    &unbound,
                    "some-key",
                    mandatory,
                    &BasicProperties::default(),
                    "back 2",
                )
                .await
                .expect("publish");

                let r = env.next_return(&mut returns).await;
                assert_eq!(r.reply_code, ReplyCode::NO_ROUTE);
                assert_eq!(r.reply_text.as_str(), "NO_ROUTE");
                assert_eq!(
                    (r.exchange.as_str(), r.routing_key.as_str()),
                    ("", nowhere.as_str())
                );
                assert_eq!(&r.body[..], b"back 1");
                assert_eq!(r.properties.message_id(), Some("m-1"));
                let r = env.next_return(&mut returns).await;
                assert_eq!(r.reply_code.0, 312);
                assert_eq!(
                    (r.exchange.as_str(), r.routing_key.as_str()),
                    (unbound.as_str(), "some-key")
                );
                assert_eq!(&r.body[..], b"back 2");

                let cch = conn.open_channel().await.expect("open channel");
                cch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm.select");
                let confirm = cch
                    .basic_publish(
                        "",
                        &nowhere,
                        mandatory,
                        &BasicProperties::default(),
                        "attached",
                    )
                    .await
                    .expect("publish");
                let outcome = env.confirm(confirm).await;
                assert!(outcome.is_ack(), "{outcome:?}");
                let r = outcome
                    .returned()
                    .expect("the return is attached to the ack");
                assert_eq!(r.reply_code, ReplyCode::NO_ROUTE);
                assert_eq!(r.routing_key.as_str(), nowhere);
                assert_eq!(&r.body[..], b"attached");

                let queue = declare_private_queue(&cch).await;
                let confirm = cch
                    .basic_publish("", &queue, mandatory, &BasicProperties::default(), "routed")
                    .await
                    .expect("publish");
                assert_eq!(env.confirm(confirm).await, Confirmation::Ack(None));
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// A passive declare of a missing queue fails with 404 NOT_FOUND and closes that
            /// channel only (its consumer ends with that error): the connection, its other channels
            /// and their consumers carry on.
            pub async fn passive_declare_missing_queue_404(env: Env) {
                let missing = env.name("missing");
                let queue = env.queue("survivor");
                let conn = env.connect().await;
                let doomed = conn.open_channel().await.expect("open channel");
                let other = conn.open_channel().await.expect("open channel");
                declare_queue(&other, &queue, FieldTable::new()).await;
                let mut consumer = consume(&other, &queue, false).await;
                let mut doomed_consumer = consume(&doomed, &queue, false).await;

                let passive = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                let err = doomed
                    .queue_declare(&missing, passive)
                    .await
                    .expect_err("a passive declare of a missing queue must fail");
                assert_channel_error(&err, ErrorKind::NotFound, 404);
                match &err {
                    Error::ChannelClosed { channel, reason } => {
                        assert_eq!(*channel, doomed.id());
                        assert!(reason.text.contains(&missing), "{err}");
                    }
                    other => panic!("expected a channel error, got {other}"),
                }
                assert!(!doomed.is_open());
                assert_eq!(doomed.closed().await, err);
                // Its consumer ends with the channel's error.
                assert_eq!(
                    env.drain_to_end(&mut doomed_consumer).await,
                    (0, Some(err.clone()))
                );
                assert_eq!(
                    doomed_consumer.end_reason(),
                    Some(&ConsumerEnd::Closed(err.clone()))
                );
                let again = doomed
                    .basic_get(&queue, BasicGetOptions::default())
                    .await
                    .expect_err("the channel is closed");
                assert_eq!(again.kind(), ErrorKind::NotFound, "{again}");

                assert!(conn.is_open());
                assert!(other.is_open());
                publish(&other, "", &queue, "still alive").await;
                let d = env.recv(&mut consumer).await;
                assert_eq!(text(&d.body), "still alive");
                d.ack().expect("ack");
                let fresh = conn.open_channel().await.expect("open a new channel");
                assert_eq!(ready_count(&fresh, &queue).await, 0);
                // The closed channel's handle cannot touch a channel reusing its number.
                assert!(doomed.basic_ack(DeliveryTag(1), false).is_err());
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// An exclusive queue belongs to its connection: declaring, consuming from or fetching
            /// from it on another connection fails with 405 RESOURCE_LOCKED (closing that channel
            /// only).
            pub async fn exclusive_queue_locked_405(env: Env) {
                let queue = env.queue("exclusive");
                let exclusive = QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                };
                let owner = env.connect().await;
                let och = owner.open_channel().await.expect("open channel");
                och.queue_declare(&queue, exclusive.clone())
                    .await
                    .expect("declare the exclusive queue");

                let intruder = env.connect().await;
                for attempt in ["declare", "consume", "get"] {
                    let ch = intruder.open_channel().await.expect("open channel");
                    let err = match attempt {
                        "declare" => ch
                            .queue_declare(&queue, exclusive.clone())
                            .await
                            .map(drop),
                        "consume" => ch
                            .basic_consume(&queue, "", BasicConsumeOptions::default())
                            .await
                            .map(drop),
                        _ => ch
                            .basic_get(&queue, BasicGetOptions::default())
                            .await
                            .map(drop),
                    }
                    .expect_err("another connection used the exclusive queue");
                    assert_channel_error(&err, ErrorKind::ResourceLocked, 405);
                    assert!(!ch.is_open(), "{attempt}: the channel is closed");
                }
                assert!(intruder.is_open());

                // The owner is unaffected.
                publish(&och, "", &queue, "mine").await;
                let d = get(&och, &queue).await;
                assert_eq!(text(&d.body), "mine");
                d.ack().expect("ack");
                intruder.close().await.expect("close");
                owner.close().await.expect("close");
            }
        }

        $mode! {
            /// Redeclaring with other arguments or flags fails with 406 PRECONDITION_FAILED (for
            /// queues and exchanges); an identical redeclare, or a passive one, succeeds.
            pub async fn redeclare_mismatch_406(env: Env) {
                let queue = env.queue("limited");
                let exchange = env.exchange("typed");
                let limit = |n: i32| FieldTable::new().with("x-max-length", n);
                let conn = env.connect().await;
                let ch = conn.open_channel().await.expect("open channel");
                declare_queue(&ch, &queue, limit(10)).await;
                declare_queue(&ch, &queue, limit(10)).await;

                let err = ch
                    .queue_declare(&queue, QueueDeclareOptions { arguments: limit(20), ..Default::default() })
                    .await
                    .expect_err("other arguments");
                assert_channel_error(&err, ErrorKind::PreconditionFailed, 406);
                assert!(err.to_string().contains("x-max-length"), "{err}");
                assert!(!ch.is_open());

                let ch = conn.open_channel().await.expect("open channel");
                let durable = QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                let err = ch
                    .queue_declare(&queue, QueueDeclareOptions { arguments: limit(10), ..durable })
                    .await
                    .expect_err("other durability");
                assert_channel_error(&err, ErrorKind::PreconditionFailed, 406);

                let ch = conn.open_channel().await.expect("open channel");
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                ch.queue_declare(&queue, QueueDeclareOptions { arguments: limit(99), ..passive })
                    .await
                    .expect("a passive declare ignores arguments");
                ch.exchange_declare(&exchange, "direct", ExchangeDeclareOptions::default())
                .await
                .expect("exchange.declare");
                let err = ch
                    .exchange_declare(&exchange, "fanout", ExchangeDeclareOptions::default())
                    .await
                    .expect_err("another exchange type");
                assert_channel_error(&err, ErrorKind::PreconditionFailed, 406);
                assert!(conn.is_open());
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// Conditional deletes fail with 406 PRECONDITION_FAILED while their condition does not
            /// hold: `if_unused` on a queue with a consumer or an exchange with a binding,
            /// `if_empty` on a queue with messages; they succeed once it holds.
            pub async fn conditional_deletes_406(env: Env) {
                let busy = env.queue("busy");
                let full = env.queue("full");
                let bound = env.exchange("bound");
                let conn = env.connect().await;
                let ch = conn.open_channel().await.expect("open channel");
                declare_queue(&ch, &busy, FieldTable::new()).await;
                declare_queue(&ch, &full, FieldTable::new()).await;
                ch.exchange_declare(&bound, "fanout", ExchangeDeclareOptions::default())
                .await
                .expect("exchange.declare");
                ch.queue_bind(&full, &bound, "", QueueBindOptions::default())
                .await
                .expect("queue.bind");
                let consumer = consume(&ch, &busy, true).await;
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm.select");
                publish(&ch, "", &full, "keep me").await;
                assert!(ch.wait_for_confirms().await.expect("confirms"));

                let if_unused = QueueDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                };
                let if_empty = QueueDeleteOptions {
                    if_empty: true,
                    ..Default::default()
                };
                let tries = conn.open_channel().await.expect("open channel");
                let err = tries
                    .queue_delete(&busy, if_unused)
                    .await
                    .expect_err("if_unused with a consumer");
                assert_channel_error(&err, ErrorKind::PreconditionFailed, 406);
                let tries = conn.open_channel().await.expect("open channel");
                let err = tries
                    .queue_delete(&full, if_empty)
                    .await
                    .expect_err("if_empty with a message");
                assert_channel_error(&err, ErrorKind::PreconditionFailed, 406);
                let tries = conn.open_channel().await.expect("open channel");
                let only_unused = ExchangeDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                };
                let err = tries
                    .exchange_delete(&bound, only_unused)
                    .await
                    .expect_err("if_unused with a binding");
                assert_channel_error(&err, ErrorKind::PreconditionFailed, 406);

                // Once the conditions hold, the same deletes go through.
                consumer.cancel().await.expect("basic.cancel");
                let tries = conn.open_channel().await.expect("open channel");
                tries
                    .queue_delete(&busy, if_unused)
                    .await
                    .expect("if_unused without consumers");
                tries
                    .queue_unbind(&full, &bound, "", QueueUnbindOptions::default())
                    .await
                    .expect("queue.unbind");
                tries
                    .exchange_delete(&bound, only_unused)
                    .await
                    .expect("if_unused without bindings");
                assert_eq!(
                    tries
                        .queue_purge(&full, QueuePurgeOptions::default())
                        .await
                        .expect("purge"),
                    1
                );
                assert_eq!(
                    tries
                        .queue_delete(&full, if_empty)
                        .await
                        .expect("if_empty when empty"),
                    0
                );
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// Deleting a queue under a consumer makes the broker cancel it: the stream yields what
            /// was already delivered, then ends cleanly with `ConsumerEnd::CancelledByServer`; the
            /// channel stays open.
            pub async fn queue_deleted_under_consumer(env: Env) {
                let queue = env.queue("doomed");
                let conn = env.connect().await;
                let ch = conn.open_channel().await.expect("open channel");
                declare_queue(&ch, &queue, FieldTable::new()).await;
                let mut consumer = consume(&ch, &queue, true).await;

                let admin = conn.open_channel().await.expect("open channel");
                admin
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm.select");
                publish(&admin, "", &queue, "before 1").await;
                publish(&admin, "", &queue, "before 2").await;
                assert!(admin.wait_for_confirms().await.expect("confirms"));
                admin
                    .queue_delete(&queue, QueueDeleteOptions::default())
                    .await
                    .expect("queue.delete");

                assert_eq!(text(&env.recv(&mut consumer).await.body), "before 1");
                assert_eq!(text(&env.recv(&mut consumer).await.body), "before 2");
                assert_eq!(env.drain_to_end(&mut consumer).await, (0, None));
                assert_eq!(consumer.end_reason(), Some(&ConsumerEnd::CancelledByServer));
                assert!(ch.is_open());
                declare_private_queue(&ch).await;
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// `basic.get` on an empty queue answers get-empty; on a non-empty one a message with
            /// the count left behind it, acked or no-ack.
            pub async fn basic_get_and_get_empty(env: Env) {
                let queue = env.queue("get");
                let conn = env.connect().await;
                let ch = conn.open_channel().await.expect("open channel");
                declare_queue(&ch, &queue, FieldTable::new()).await;
                let empty = ch
                    .basic_get(&queue, BasicGetOptions::default())
                    .await
                    .expect("basic.get");
                assert!(empty.is_none(), "get-empty expected");

                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm.select");
                for i in 0..3 {
                    publish(&ch, "", &queue, &format!("get {i}")).await;
                }
                assert!(ch.wait_for_confirms().await.expect("confirms"));

                let first = get(&ch, &queue).await;
                assert_eq!(text(&first.body), "get 0");
                assert_eq!(first.message_count(), Some(2));
                assert_eq!(first.routing_key.as_str(), queue);
                assert!(!first.redelivered);
                first.ack().expect("ack");
                let no_ack = BasicGetOptions { no_ack: true };
                let second = ch
                    .basic_get(&queue, no_ack)
                    .await
                    .expect("basic.get")
                    .expect("a message");
                assert_eq!(text(&second.body), "get 1");
                assert_eq!(second.message_count(), Some(1));
                let third = get(&ch, &queue).await;
                assert_eq!(
                    (text(&third.body), third.message_count()),
                    ("get 2".to_owned(), Some(0))
                );
                third.ack().expect("ack");

                let empty = ch
                    .basic_get(&queue, BasicGetOptions::default())
                    .await
                    .expect("basic.get");
                assert!(empty.is_none(), "get-empty expected");
                assert_eq!(ready_count(&ch, &queue).await, 0);

                // queue.purge reports what it removed.
                for i in 0..4 {
                    publish(&ch, "", &queue, &format!("purged {i}")).await;
                }
                assert!(ch.wait_for_confirms().await.expect("confirms"));
                let purged = ch
                    .queue_purge(&queue, QueuePurgeOptions::default())
                    .await
                    .expect("queue.purge");
                assert_eq!(purged, 4);
                let empty = ch
                    .basic_get(&queue, BasicGetOptions::default())
                    .await
                    .expect("basic.get");
                assert!(empty.is_none(), "a purged message came back");
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// Transactions: published messages appear only at commit, a rollback discards them,
            /// and acks are transactional too (a rolled-back ack leaves the message unacked, so it
            /// is requeued when the channel closes).
            pub async fn tx_commit_and_rollback(env: Env) {
                let queue = env.queue("tx");
                let conn = env.connect().await;
                let observer = conn.open_channel().await.expect("open channel");
                declare_queue(&observer, &queue, FieldTable::new()).await;
                let tx = conn.open_channel().await.expect("open channel");
                tx.tx_select().await.expect("tx.select");

                for i in 0..3 {
                    publish(&tx, "", &queue, &format!("committed {i}")).await;
                }
                assert_eq!(
                    ready_count(&observer, &queue).await,
                    0,
                    "visible before the commit"
                );
                let none = observer
                    .basic_get(&queue, BasicGetOptions::default())
                    .await
                    .expect("basic.get");
                assert!(none.is_none(), "visible before the commit");
                tx.tx_commit().await.expect("tx.commit");
                assert_eq!(ready_count(&observer, &queue).await, 3);

                for i in 0..2 {
                    publish(&tx, "", &queue, &format!("rolled back {i}")).await;
                }
                tx.tx_rollback().await.expect("tx.rollback");
                tx.tx_commit().await.expect("an empty commit");
                assert_eq!(
                    ready_count(&observer, &queue).await,
                    3,
                    "the rollback did not discard"
                );

                // A rolled-back ack: the message stays unacked and comes back when the channel
                // closes.
                let d = get(&tx, &queue).await;
                assert_eq!(text(&d.body), "committed 0");
                d.ack().expect("ack");
                tx.tx_rollback().await.expect("tx.rollback");
                tx.close().await.expect("close the tx channel");
                assert_eq!(
                    ready_count(&observer, &queue).await,
                    3,
                    "the ack was not rolled back"
                );

                // A committed ack removes it.
                let tx = conn.open_channel().await.expect("open channel");
                tx.tx_select().await.expect("tx.select");
                let d = get(&tx, &queue).await;
                assert_eq!(text(&d.body), "committed 0");
                assert!(d.redelivered);
                d.ack().expect("ack");
                tx.tx_commit().await.expect("tx.commit");
                tx.close().await.expect("close the tx channel");
                assert_eq!(ready_count(&observer, &queue).await, 2);
                let d = get(&observer, &queue).await;
                assert_eq!(text(&d.body), "committed 1");
                d.ack().expect("ack");
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// nack and reject, with and without requeue: requeued messages come back flagged
            /// `redelivered`; the others are gone. Also through a consumer, and `nack` of several.
            pub async fn nack_and_reject(env: Env) {
                let queue = env.queue("rejects");
                let conn = env.connect().await;
                let ch = conn.open_channel().await.expect("open channel");
                declare_queue(&ch, &queue, FieldTable::new()).await;
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm.select");
                for i in 0..4 {
                    publish(&ch, "", &queue, &format!("m{i}")).await;
                }
                assert!(ch.wait_for_confirms().await.expect("confirms"));

                let d = get(&ch, &queue).await;
                assert_eq!((text(&d.body), d.redelivered), ("m0".to_owned(), false));
                d.nack(true).expect("nack, requeue");
                let d = get(&ch, &queue).await;
                assert_eq!((text(&d.body), d.redelivered), ("m0".to_owned(), true));
                d.ack().expect("ack");

                let d = get(&ch, &queue).await;
                assert_eq!((text(&d.body), d.redelivered), ("m1".to_owned(), false));
                d.reject(true).expect("reject, requeue");
                let d = get(&ch, &queue).await;
                assert_eq!((text(&d.body), d.redelivered), ("m1".to_owned(), true));
                d.ack().expect("ack");

                let d = get(&ch, &queue).await;
                assert_eq!(text(&d.body), "m2");
                d.nack(false).expect("nack, drop");
                let d = get(&ch, &queue).await;
                assert_eq!(text(&d.body), "m3", "a nacked message came back");
                d.reject(false).expect("reject, drop");
                let empty = ch
                    .basic_get(&queue, BasicGetOptions::default())
                    .await
                    .expect("basic.get");
                assert!(empty.is_none(), "a rejected message came back");

                // The same through a consumer.
                let cch = conn.open_channel().await.expect("open channel");
                let mut consumer = consume(&cch, &queue, false).await;
                publish(&ch, "", &queue, "c0").await;
                let d = env.recv(&mut consumer).await;
                assert_eq!((text(&d.body), d.redelivered), ("c0".to_owned(), false));
                d.nack(true).expect("nack, requeue");
                let d = env.recv(&mut consumer).await;
                assert_eq!((text(&d.body), d.redelivered), ("c0".to_owned(), true));
                d.reject(false).expect("reject, drop");
                publish(&ch, "", &queue, "c1").await;
                publish(&ch, "", &queue, "c2").await;
                let d1 = env.recv(&mut consumer).await;
                let d2 = env.recv(&mut consumer).await;
                assert_eq!(
                    (text(&d1.body), text(&d2.body)),
                    ("c1".to_owned(), "c2".to_owned())
                );
                d2.nack_multiple(false).expect("nack both, drop");
                publish(&ch, "", &queue, "c3").await;
                let d = env.recv(&mut consumer).await;
                assert_eq!(
                    (text(&d.body), d.redelivered),
                    ("c3".to_owned(), false),
                    "a dropped message came back"
                );
                d.ack().expect("ack");
                // basic.recover with requeue: unacked deliveries come back, flagged redelivered.
                publish(&ch, "", &queue, "r0").await;
                let d = env.recv(&mut consumer).await;
                assert_eq!((text(&d.body), d.redelivered), ("r0".to_owned(), false));
                cch.basic_recover(true).await.expect("basic.recover");
                let d = env.recv(&mut consumer).await;
                assert_eq!((text(&d.body), d.redelivered), ("r0".to_owned(), true));
                d.ack().expect("ack");
                assert_eq!(ready_count(&ch, &queue).await, 0);
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// Exchange-to-exchange bindings: messages flow from the source through the binding's
            /// pattern into the destination (keeping their original exchange and key), until
            /// unbound.
            pub async fn exchange_to_exchange_bindings(env: Env) {
                let source = env.exchange("e2e-source");
                let destination = env.exchange("e2e-destination");
                let conn = env.connect().await;
                let ch = conn.open_channel().await.expect("open channel");
                ch.exchange_declare(&source, "topic", ExchangeDeclareOptions::default())
                .await
                .expect("exchange.declare");
                ch.exchange_declare(&destination, "fanout", ExchangeDeclareOptions::default())
                .await
                .expect("exchange.declare");
                ch.exchange_bind(&destination, &source, "orders.*", ExchangeBindOptions::default())
                .await
                .expect("exchange.bind");
                let queue = declare_private_queue(&ch).await;
                ch.queue_bind(&queue, &destination, "", QueueBindOptions::default())
                .await
                .expect("queue.bind");
                let mut consumer = consume(&ch, &queue, true).await;

                publish(&ch, &source, "orders.created", "orders.created").await;
                publish(&ch, &source, "invoices.created", "invoices.created").await;
                publish(&ch, &destination, "", "END").await;
                let d = env.recv(&mut consumer).await;
                assert_eq!(text(&d.body), "orders.created");
                assert_eq!(
                    (d.exchange.as_str(), d.routing_key.as_str()),
                    (source.as_str(), "orders.created")
                );
                assert_eq!(
                    collect_until(&env, &mut consumer, "END").await,
                    Vec::<String>::new()
                );

                // The source is in use by the binding.
                let err = conn
                    .open_channel()
                    .await
                    .expect("open channel")
                    .exchange_delete(
                        &source,
                        ExchangeDeleteOptions {
                            if_unused: true,
                            ..Default::default()
                        },
                    )
                    .await
                    .expect_err("exchange.delete if_unused of a bound source");
                assert_channel_error(&err, ErrorKind::PreconditionFailed, 406);

                ch.exchange_unbind(&destination, &source, "orders.*", ExchangeBindOptions::default())
                .await
                .expect("exchange.unbind");
                publish(&ch, &source, "orders.late", "orders.late").await;
                publish(&ch, &destination, "", "END").await;
                assert_eq!(
                    collect_until(&env, &mut consumer, "END").await,
                    Vec::<String>::new()
                );
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// A headers exchange routes on message headers: `x-match: all` needs every bound
            /// header, `x-match: any` one of them; extra headers do not matter.
            pub async fn headers_exchange_all_any(env: Env) {
                let exchange = env.exchange("headers");
                let conn = env.connect().await;
                let ch = conn.open_channel().await.expect("open channel");
                ch.exchange_declare(&exchange, "headers", ExchangeDeclareOptions::default())
                .await
                .expect("exchange.declare");
                let all = declare_private_queue(&ch).await;
                let any = declare_private_queue(&ch).await;
                let all_args = FieldTable::new()
                    .with("x-match", "all")
                    .with("format", "pdf")
                    .with("type", "report");
                let any_args = FieldTable::new()
                    .with("x-match", "any")
                    .with("format", "pdf")
                    .with("type", "log");
                ch.queue_bind(&all, &exchange, "", QueueBindOptions { arguments: all_args, ..Default::default() })
                    .await
                    .expect("queue.bind");
                ch.queue_bind(&any, &exchange, "", QueueBindOptions { arguments: any_args, ..Default::default() })
                    .await
                    .expect("queue.bind");
                let mut all_consumer = consume(&ch, &all, true).await;
                let mut any_consumer = consume(&ch, &any, true).await;

                let messages = [
                    ("pdf report", vec![("format", "pdf"), ("type", "report")]),
                    ("pdf", vec![("format", "pdf")]),
                    ("log", vec![("type", "log")]),
                    ("zip report", vec![("format", "zip"), ("type", "report")]),
                    ("no headers", vec![]),
                    (
                        "pdf report extra",
                        vec![("format", "pdf"), ("type", "report"), ("extra", "x")],
                    ),
                    ("END", vec![("format", "pdf"), ("type", "report")]),
                ];
                for (body, headers) in messages {
                    let table = headers
                        .into_iter()
                        .fold(FieldTable::new(), |t, (k, v)| t.with(k, v));
                    let props = BasicProperties::default().with_headers(table);
                    ch.basic_publish(&exchange, "", BasicPublishOptions::default(), &props, body)
                        .await
                        .expect("publish");
                }
                assert_eq!(
                    collect_until(&env, &mut all_consumer, "END").await,
                    ["pdf report", "pdf report extra"]
                );
                assert_eq!(
                    collect_until(&env, &mut any_consumer, "END").await,
                    ["pdf report", "pdf", "log", "pdf report extra"]
                );
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// A priority queue (`x-max-priority`) hands out what waits in it highest priority
            /// first, in publish order within a priority (no priority counts as 0).
            pub async fn priority_queue_ordering(env: Env) {
                let queue = env.queue("priority");
                let conn = env.connect().await;
                let ch = conn.open_channel().await.expect("open channel");
                declare_queue(&ch, &queue, FieldTable::new().with("x-max-priority", 10i32)).await;
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm.select");
                let published = [
                    (Some(1u8), "p1 first"),
                    (Some(1), "p1 second"),
                    (Some(5), "p5 first"),
                    (Some(9), "p9"),
                    (Some(0), "p0"),
                    (None, "none"),
                    (Some(5), "p5 second"),
                ];
                for (priority, body) in published {
                    let props = match priority {
                        Some(p) => BasicProperties::default().with_priority(p),
                        None => BasicProperties::default(),
                    };
                    ch.basic_publish("", &queue, BasicPublishOptions::default(), &props, body)
                        .await
                        .expect("publish");
                }
                assert!(ch.wait_for_confirms().await.expect("confirms"));

                let cch = conn.open_channel().await.expect("open channel");
                cch.basic_qos(1, BasicQosOptions::default())
                    .await
                    .expect("basic.qos");
                let mut consumer = consume(&cch, &queue, false).await;
                let mut order = Vec::new();
                for _ in 0..published.len() {
                    let d = env.recv(&mut consumer).await;
                    order.push(text(&d.body));
                    d.ack().expect("ack");
                }
                assert_eq!(
                    order,
                    [
                        "p9",
                        "p5 first",
                        "p5 second",
                        "p1 first",
                        "p1 second",
                        "p0",
                        "none"
                    ]
                );
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// Per-message TTL (`expiration`) with dead-lettering: an expired message moves to the
            /// queue bound to the dead-letter exchange, with an `x-death` record; a message without
            /// TTL stays where it was.
            pub async fn message_ttl_dead_lettering(env: Env) {
                let dlx = env.exchange("dlx");
                let dead = env.queue("dead-letters");
                let work = env.queue("work");
                let conn = env.connect().await;
                let ch = conn.open_channel().await.expect("open channel");
                ch.exchange_declare(&dlx, "fanout", ExchangeDeclareOptions::default())
                .await
                .expect("exchange.declare");
                declare_queue(&ch, &dead, FieldTable::new()).await;
                ch.queue_bind(&dead, &dlx, "", QueueBindOptions::default())
                .await
                .expect("queue.bind");
                declare_queue(
                    &ch,
                    &work,
                    FieldTable::new().with("x-dead-letter-exchange", dlx.as_str()),
                )
                .await;
                let mut dead_letters = consume(&ch, &dead, false).await;

                let started = Instant::now();
                let short_lived = BasicProperties::default().with_expiration("100");
                ch.basic_publish(
                    "",
                    &work,
                    BasicPublishOptions::default(),
                    &short_lived,
                    "short-lived",
                )
                .await
                .expect("publish");
                publish(&ch, "", &work, "kept").await;

                let d = env.recv(&mut dead_letters).await;
                assert!(
                    started.elapsed() >= ms(90),
                    "dead-lettered before its TTL: {:?}",
                    started.elapsed()
                );
                assert_eq!(text(&d.body), "short-lived");
                assert_eq!(d.exchange.as_str(), dlx);
                assert_eq!(d.routing_key.as_str(), work);
                assert_eq!(
                    d.properties.expiration(), None,
                    "the broker removes the expiration"
                );
                let deaths = x_death(d.properties.headers().as_ref());
                assert_eq!(deaths.len(), 1, "{:?}", d.properties.headers());
                assert_eq!(table_str(&deaths[0], "reason").as_deref(), Some("expired"));
                assert_eq!(
                    table_str(&deaths[0], "queue").as_deref(),
                    Some(work.as_str())
                );
                assert_eq!(
                    table_str(&deaths[0], "original-expiration").as_deref(),
                    Some("100")
                );
                assert_eq!(deaths[0].get("count").and_then(FieldValue::as_i64), Some(1));
                d.ack().expect("ack");

                assert_eq!(
                    ready_count(&ch, &work).await,
                    1,
                    "the message without TTL stays"
                );
                let kept = get(&ch, &work).await;
                assert_eq!(text(&kept.body), "kept");
                kept.ack().expect("ack");
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// A 10 MiB body of random bytes (many frames) arrives byte-exact, consumed and
            /// fetched.
            pub async fn large_body_10mib(env: Env) {
                let seed = fresh_seed();
                eprintln!("large_body_10mib: seed {seed}");
                let body = random_bytes(10 << 20, seed);
                let queue = env.queue("large");
                let conn = env.connect().await;
                assert!(
                    conn.tuning().frame_max < 1 << 20,
                    "the body must span many frames"
                );
                let ch = conn.open_channel().await.expect("open channel");
                declare_queue(&ch, &queue, FieldTable::new()).await;
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm.select");
                for _ in 0..2 {
                    let confirm = ch
                        .basic_publish(
                            "",
                            &queue,
                            BasicPublishOptions::default(),
                            &BasicProperties::default(),
                            body.clone(),
                        )
                        .await
                        .expect("publish");
                    assert_eq!(env.confirm(confirm).await, Confirmation::Ack(None));
                }

                let fetched = get(&ch, &queue).await;
                assert_same_bytes(&fetched.body, &body, "10 MiB body via basic.get");
                fetched.ack().expect("ack");
                let mut consumer = consume(&ch, &queue, false).await;
                let d = env.recv(&mut consumer).await;
                assert_same_bytes(&d.body, &body, "10 MiB body via basic.consume");
                d.ack().expect("ack");
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// 500 channels on one connection: open them all, make each do a round trip and
            /// publish, then close them all; the connection is still fine afterwards.
            pub async fn five_hundred_channels(env: Env) {
                const CHANNELS: usize = 500;
                let queue = env.queue("many-channels");
                let conn = env.connect().await;
                let setup = conn.open_channel().await.expect("open channel");
                declare_queue(&setup, &queue, FieldTable::new()).await;

                let mut channels = Vec::new();
                for _ in 0..CHANNELS {
                    channels.push(conn.open_channel().await.expect("open channel"));
                }
                let ids: BTreeSet<u16> = channels.iter().map(|ch| ch.id().0).collect();
                assert_eq!(ids.len(), CHANNELS, "channel numbers are distinct");
                let max = conn.tuning().channel_max;
                assert!(
                    ids.iter().all(|&id| id >= 1 && (max == 0 || id <= max)),
                    "{ids:?}"
                );

                for ch in &channels {
                    publish(ch, "", &queue, &format!("from {}", ch.id().0)).await;
                    // A round trip on every channel, after its publish.
                    ready_count(ch, &queue).await;
                }
                assert_eq!(ready_count(&setup, &queue).await, CHANNELS as u32);
                let mut consumer = consume(&setup, &queue, true).await;
                let mut seen = BTreeSet::new();
                for _ in 0..CHANNELS {
                    let d = env.recv(&mut consumer).await;
                    assert!(seen.insert(text(&d.body)), "duplicate {:?}", d.body);
                }
                let expected: BTreeSet<String> =
                    ids.iter().map(|id| format!("from {id}")).collect();
                assert_eq!(seen, expected);

                for ch in &channels {
                    ch.close().await.expect("channel.close");
                }
                assert!(channels.iter().all(|ch| !ch.is_open()));
                assert!(conn.is_open());
                let again = conn
                    .open_channel()
                    .await
                    .expect("open a channel afterwards");
                assert_eq!(ready_count(&again, &queue).await, 0);
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// The heartbeat asked for in the URI (`?heartbeat=13`) is what the broker uses: it
            /// shows in `rabbitmqctl list_connections timeout` for this connection (found by its
            /// unique `connection_name`).
            pub async fn heartbeat_in_rabbitmqctl(env: Env) {
                let options = env.options_with_query("heartbeat=13");
                let name = options
                    .config
                    .connection_name
                    .clone()
                    .expect("a connection name");
                let conn = env.try_connect(options).await.expect("connect");
                assert_eq!(conn.tuning().heartbeat, 13);
                let args = list_connections_args();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let listing = env.rabbitmqctl(&args).await;
                let row = find_connection(&listing, &name).unwrap_or_else(|| {
                    panic!("connection {name} not in rabbitmqctl's list:\n{listing}")
                });
                assert_eq!(row.timeout, 13, "{row:?}");
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// With `?heartbeat=1` an idle connection stays up for several intervals: the client
            /// sends heartbeats (the broker drops a client silent for two) and takes the broker's.
            pub async fn heartbeats_keep_idle_connection_alive(env: Env) {
                let conn = env
                    .try_connect(env.options_with_query("heartbeat=1"))
                    .await
                    .expect("connect");
                assert_eq!(conn.tuning().heartbeat, 1);
                let ch = conn.open_channel().await.expect("open channel");
                env.sleep(ms(4_500)).await;
                assert!(
                    conn.is_open(),
                    "the idle connection died: {:?}",
                    conn.closed().await
                );
                declare_private_queue(&ch).await;
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// A request on a link that stalls (through the test proxy: bytes stop both ways,
            /// the sockets stay open) fails with a `Timeout` after the request timeout instead
            /// of waiting for ever, and closes only its channel; `open_channel` likewise. Once
            /// the link flows again the late replies are dropped (no protocol violation) and
            /// the same connection serves a new channel.
            pub async fn request_timeout_on_a_stalled_link(env: Env) {
                let mut options = env.options();
                let proxy = via_proxy(&mut options);
                options.config.request_timeout = Some(ms(1_500));
                let conn = env.try_connect(options).await.expect("connect");
                let ch = conn.open_channel().await.expect("open channel");
                let queue = declare_private_queue(&ch).await;
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                proxy.stall();
                let err = ch
                    .queue_declare(&queue, passive.clone())
                    .await
                    .expect_err("a declare on a stalled link times out");
                assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
                assert!(!ch.is_open(), "the channel of the timed-out request is closed");
                let err = conn
                    .open_channel()
                    .await
                    .expect_err("open_channel on a stalled link times out");
                assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
                assert!(conn.is_open(), "{:?}", conn.closed().await);
                proxy.resume();
                // The late declare-ok, open-ok and close-oks come first on the wire, then the
                // answers for the new channel.
                let ch = conn.open_channel().await.expect("a new channel after the stall");
                ch.queue_declare(&queue, passive)
                    .await
                    .expect("the queue is still there");
                assert!(conn.is_open(), "{:?}", conn.closed().await);
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// Commands issued while a recovery cannot get through (the test proxy now leads
            /// to a closed port) wait at most their request timeout, then fail with a
            /// `Timeout` unsent; once the broker is reachable again the recovery completes and
            /// the same channel handle works.
            pub async fn commands_held_by_a_recovery_time_out(env: Env) {
                let mut options = env.options();
                let proxy = via_proxy(&mut options);
                options.config.request_timeout = Some(ms(1_500));
                options.config.recovery = Some(amqp_proto::recovery::RecoveryConfig {
                    backoff: amqp_proto::recovery::Backoff {
                        initial: ms(100),
                        max: ms(100),
                        multiplier: 1.0,
                        jitter: 0.0,
                    },
                    ..Default::default()
                });
                let target = proxy.target().expect("the proxy's target");
                let conn = env.try_connect(options).await.expect("connect");
                let ch = conn.open_channel().await.expect("open channel");
                let closed = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("a loopback port nobody listens on once dropped");
                proxy.retarget(closed);
                proxy.cut();
                let mut polls = 0;
                while conn.state() != State::Recovering && polls < 200 {
                    env.sleep(ms(10)).await;
                    polls += 1;
                }
                assert_eq!(conn.state(), State::Recovering);
                let err = conn
                    .open_channel()
                    .await
                    .expect_err("open_channel while recovering times out");
                assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
                // Bounded by its own 300 ms, not the connection's 1.5 s.
                let err = conn
                    .open_channel_with_timeout(Some(ms(300)))
                    .await
                    .expect_err("open_channel_with_timeout while recovering times out");
                assert_eq!(err, Error::RecoveryTimeout(ms(300)));
                ch.set_request_timeout(Some(ms(500))).expect("set the channel's timeout");
                let err = ch
                    .queue_declare("", QueueDeclareOptions::default())
                    .await
                    .expect_err("a declare while recovering times out");
                assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
                proxy.retarget(target);
                let mut polls = 0;
                while conn.state() != State::Open && polls < 1_000 {
                    env.sleep(ms(10)).await;
                    polls += 1;
                }
                assert_eq!(conn.state(), State::Open, "{:?}", conn.closed().await);
                declare_private_queue(&ch).await;
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// `rabbitmqctl close_connection` on this connection (320 CONNECTION_FORCED) promptly
            /// fails everything pending with that reason: in-flight publisher confirms, requests in
            /// flight, `wait_for_confirms`; ends every consumer stream with it, and the events
            /// stream with `Closed`.
            pub async fn connection_killed_by_broker(env: Env) {
                let explanation = env.name("killed");
                let options = env.options();
                let name = options
                    .config
                    .connection_name
                    .clone()
                    .expect("a connection name");
                let conn = env.try_connect(options).await.expect("connect");
                let mut events = conn.events();
                let queue_a = env.queue("victim-a");
                let queue_b = env.queue("victim-b");

                let publisher = conn.open_channel().await.expect("open channel");
                declare_queue(&publisher, &queue_a, FieldTable::new()).await;
                declare_queue(&publisher, &queue_b, FieldTable::new()).await;
                publisher
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm.select");
                let cch = conn.open_channel().await.expect("open channel");
                cch.basic_qos(10, BasicQosOptions::default())
                    .await
                    .expect("basic.qos");
                let mut consumer_a = consume(&cch, &queue_a, false).await;
                let mut consumer_b = consume(&cch, &queue_b, true).await;

                let args = list_connections_args();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let listing = env.rabbitmqctl(&args).await;
                let row = find_connection(&listing, &name).unwrap_or_else(|| {
                    panic!("connection {name} not in rabbitmqctl's list:\n{listing}")
                });

                // Requests kept in flight on two more channels until the connection dies.
                let getter = conn.open_channel().await.expect("open channel");
                let declarer = conn.open_channel().await.expect("open channel");
                let queue = queue_b.clone();
                let gets = env.spawn(move || async move {
                    let mut done = 0u64;
                    loop {
                        match getter.basic_get(&queue, BasicGetOptions::default()).await {
                            Ok(_) => done += 1,
                            Err(e) => return (done, e),
                        }
                    }
                });
                let queue = queue_b.clone();
                let declares = env.spawn(move || async move {
                    let mut done = 0u64;
                    loop {
                        match declarer
                            .queue_declare(&queue, QueueDeclareOptions::default())
                            .await
                        {
                            Ok(_) => done += 1,
                            Err(e) => return (done, e),
                        }
                    }
                });

                // Publish with confirms outstanding until the broker kills the connection.
                let kill =
                    env.rabbitmqctl_in_background(&["close_connection", &row.pid, &explanation]);
                let started = Instant::now();
                let props = BasicProperties::default();
                let mut in_flight = VecDeque::new();
                let mut acked = 0u64;
                let mut lost = Vec::new();
                let publish_error = loop {
                    let body = acked.to_be_bytes().to_vec();
                    match publisher
                        .basic_publish("", &queue_a, BasicPublishOptions::default(), &props, body)
                        .await
                    {
                        Ok(confirm) => in_flight.push_back(confirm),
                        Err(e) => break e,
                    }
                    if in_flight.len() > 200 {
                        match env.confirm(in_flight.pop_front().expect("non-empty")).await {
                            Confirmation::Ack(None) => acked += 1,
                            Confirmation::Lost(e) => lost.push(e),
                            other => panic!("unexpected confirmation {other:?}"),
                        }
                    }
                    assert!(
                        started.elapsed() < WAIT * 3,
                        "the broker never closed the connection"
                    );
                };
                let (_, killed_at) = env.join(kill).await;
                assert_forced_close(&publish_error, &explanation, "basic.publish after the kill");
                for confirm in in_flight {
                    match env.confirm(confirm).await {
                        Confirmation::Ack(None) => acked += 1,
                        Confirmation::Lost(e) => lost.push(e),
                        other => panic!("unexpected confirmation {other:?}"),
                    }
                }
                eprintln!(
                    "connection_killed_by_broker: {acked} publishes acked, {} lost in flight",
                    lost.len()
                );
                assert!(acked > 0, "nothing was confirmed before the kill");
                assert!(
                    !lost.is_empty(),
                    "no confirm was in flight when the connection was killed"
                );
                for e in &lost {
                    assert_forced_close(e, &explanation, "an in-flight confirm");
                }
                let err = publisher
                    .wait_for_confirms()
                    .await
                    .expect_err("wait_for_confirms after lost confirms");
                assert_forced_close(&err, &explanation, "wait_for_confirms");

                let (gets_done, err) = env.join(gets).await;
                assert_forced_close(&err, &explanation, "basic.get in flight");
                let (declares_done, err) = env.join(declares).await;
                assert_forced_close(&err, &explanation, "queue.declare in flight");
                eprintln!(
                    "connection_killed_by_broker: {gets_done} gets, {declares_done} declares"
                );
                assert!(
                    gets_done > 0 && declares_done > 0,
                    "the request loops never ran"
                );

                for consumer in [&mut consumer_a, &mut consumer_b] {
                    let (_, err) = env.drain_to_end(consumer).await;
                    let err = err.expect("the stream ends with the close reason");
                    assert_forced_close(&err, &explanation, "a consumer stream");
                    assert_eq!(consumer.end_reason(), Some(&ConsumerEnd::Closed(err)));
                }
                let closed = loop {
                    match env.next_event(&mut events).await {
                        Some(ConnectionEvent::Closed(reason)) => break reason,
                        Some(_) => {}
                        None => panic!("the events stream ended without Closed"),
                    }
                };
                let closed = closed.expect("a close by the broker carries its reason");
                assert_forced_close(&closed, &explanation, "the events stream");
                assert_eq!(conn.closed().await, Some(closed));
                assert!(!conn.is_open());
                let err = conn
                    .open_channel()
                    .await
                    .expect_err("the connection is over");
                assert_forced_close(&err, &explanation, "open_channel after the kill");
                assert_forced_close(&publisher.closed().await, &explanation, "Channel::closed");
                let err = conn
                    .close()
                    .await
                    .expect_err("close reports why the connection ended");
                assert_forced_close(&err, &explanation, "Connection::close after the kill");
                assert!(
                    killed_at.elapsed() < ms(5_000),
                    "took {:?} after close_connection returned",
                    killed_at.elapsed()
                );

                // Every acked publish is in the queue (the unacked deliveries of the dead consumer
                // are requeued as the broker cleans up); the lost ones may or may not be.
                let observer = env.connect().await;
                let och = observer.open_channel().await.expect("open channel");
                let deadline = Instant::now() + WAIT;
                let total = acked + lost.len() as u64;
                loop {
                    let count = u64::from(ready_count(&och, &queue_a).await);
                    assert!(count <= total, "{count} messages from {total} publishes");
                    if count >= acked {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{count} messages queued, {acked} acked"
                    );
                    env.sleep(ms(50)).await;
                }
                observer.close().await.expect("close");
            }
        }

        $mode! {
            /// A client-side close: a consumer (with a tag of its own, publishes outside confirm
            /// mode, a cancel) ends with `ConnectionClosed`, the events stream reports
            /// `Closed(None)`, later calls fail at once, and closing again is fine.
            pub async fn client_close_ends_streams_and_fails_later_calls(env: Env) {
                let conn = env.connect().await;
                assert!(conn.server_properties().get("product").is_some());
                let mut events = conn.events();
                let ch = conn.open_channel().await.expect("open channel");
                let queue = declare_private_queue(&ch).await;
                let confirm = ch
                    .basic_publish(
                        "",
                        &queue,
                        BasicPublishOptions::default(),
                        &BasicProperties::default(),
                        "unconfirmed",
                    )
                    .await
                    .expect("publish");
                assert!(!confirm.is_requested());
                assert_eq!(env.confirm(confirm).await, Confirmation::NotRequested);
                let options = BasicConsumeOptions::default();
                let mut tagged = ch
                    .basic_consume(&queue, "my-tag", options)
                    .await
                    .expect("basic.consume");
                assert_eq!(tagged.tag().as_str(), "my-tag");
                let d = env.recv(&mut tagged).await;
                assert_eq!(d.consumer_tag.as_str(), "my-tag");
                d.ack().expect("ack");
                tagged.cancel().await.expect("basic.cancel");
                assert_eq!(env.drain_to_end(&mut tagged).await, (0, None));
                assert_eq!(tagged.end_reason(), Some(&ConsumerEnd::Cancelled));

                let mut consumer = consume(&ch, &queue, false).await;
                conn.close().await.expect("close");
                let (skipped, err) = env.drain_to_end(&mut consumer).await;
                assert_eq!(skipped, 0);
                let err = err.expect("the consumer ends with the close");
                assert!(matches!(err, Error::ConnectionClosed(_)), "{err}");
                assert_eq!(
                    env.next_event(&mut events).await,
                    Some(ConnectionEvent::Closed(None))
                );
                let err = ch
                    .queue_declare("", QueueDeclareOptions::default())
                    .await
                    .expect_err("the connection is closed");
                assert!(matches!(err, Error::ConnectionClosed(_)), "{err}");
                assert!(conn.open_channel().await.is_err());
                assert!(!conn.is_open());
                conn.close().await.expect("closing again");
            }
        }

        $mode! {
            /// Nothing listening fails promptly with `ConnectionBroken` (`amqp://` and
            /// `amqps://`); a host name (`localhost`) works as well as an address.
            pub async fn nothing_listening_and_host_names(env: Env) {
                let uris = [
                    "amqp://guest:guest@127.0.0.1:1/",
                    "amqps://guest:guest@127.0.0.1:1/",
                ];
                for uri in uris {
                    let options = ConnectOptions::parse(uri).expect("a valid URI");
                    let started = Instant::now();
                    let err = env
                        .try_connect(options)
                        .await
                        .expect_err("nothing listens on port 1");
                    assert_eq!(err.kind(), ErrorKind::ConnectionBroken, "{uri}: {err}");
                    assert!(matches!(err, ConnectError::Io(_)), "{uri}: {err:?}");
                    assert!(started.elapsed() < ms(5_000), "took {:?}", started.elapsed());
                }

                let mut options = env.options();
                options.uri.host = "localhost".into();
                let conn = env.try_connect(options).await.expect("connect to localhost");
                conn.open_channel().await.expect("open channel");
                conn.close().await.expect("close");
            }
        }

        $mode! {
            /// A wrong password is an authentication error, promptly (never a hang).
            pub async fn wrong_password_fails_promptly(env: Env) {
                let mut options = env.options();
                options.uri.password = Some("definitely-not-the-password".into());
                let mut options = ConnectOptions::from_uri(options.uri);
                options.config.connection_name = Some(env.connection_name());
                let started = Instant::now();
                let err = env
                    .try_connect(options)
                    .await
                    .expect_err("a wrong password must be refused");
                assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
                assert!(
                    started.elapsed() < ms(5_000),
                    "took {:?}",
                    started.elapsed()
                );
            }
        }

        $mode! {
            /// An unknown virtual host is an access error, promptly (never a hang).
            pub async fn unknown_vhost_fails_promptly(env: Env) {
                let mut options = env.options();
                options.config.vhost = env.name("no-such-vhost");
                let started = Instant::now();
                let err = env
                    .try_connect(options)
                    .await
                    .expect_err("an unknown vhost must be refused");
                assert_eq!(err.kind(), ErrorKind::AccessRefused, "{err}");
                assert!(
                    started.elapsed() < ms(5_000),
                    "took {:?}",
                    started.elapsed()
                );
            }
        }
    };
}
