//! amqprs 2.x adapter.
//!
//! amqprs spawns its reader/writer and per-channel dispatcher tasks on the
//! ambient tokio runtime (our 2-worker runtime). Publisher confirms are only
//! exposed through `ChannelCallback::publish_ack/publish_nack`, so the
//! confirm window is tracked here with a small tracker fed by that callback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqprs::callbacks::{ChannelCallback, DefaultChannelCallback, DefaultConnectionCallback};
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, QueueDeclareArguments, QueueDeleteArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, FieldTable, FieldValue, Nack, Return};
use anyhow::{Context, Result, anyhow, bail, ensure};
use async_trait::async_trait;
use tokio::sync::watch;

use crate::harness::{Client, Params, QUEUE_EXPIRES_MS, Timer};

pub struct Amqprs;

/// amqprs' error type is not `std::error::Error + Send + Sync` in every
/// position, so errors are converted via their Display.
fn e<E: std::fmt::Display>(ctx: &'static str) -> impl FnOnce(E) -> anyhow::Error {
    move |err| anyhow!("{ctx}: {err}")
}

async fn connect(p: &Params) -> Result<Connection> {
    let b = &p.broker;
    let args = OpenConnectionArguments::new(&b.host, b.port, &b.user, &b.pass)
        .virtual_host(&b.vhost)
        .finish();
    let conn = Connection::open(&args).await.map_err(e("amqprs connect"))?;
    conn.register_callback(DefaultConnectionCallback)
        .await
        .map_err(e("register connection callback"))?;
    Ok(conn)
}

async fn open_channel(conn: &Connection) -> Result<Channel> {
    let ch = conn.open_channel(None).await.map_err(e("open channel"))?;
    Ok(ch)
}

async fn close(conn: Connection) -> Result<()> {
    conn.close().await.map_err(e("amqprs close"))
}

fn queue_args() -> FieldTable {
    let mut t = FieldTable::new();
    t.insert(
        "x-expires".try_into().expect("valid field name"),
        FieldValue::I(QUEUE_EXPIRES_MS),
    );
    t
}

async fn declare(ch: &Channel, p: &Params) -> Result<()> {
    ch.queue_declare(
        QueueDeclareArguments::new(&p.queue)
            .arguments(queue_args())
            .finish(),
    )
    .await
    .map_err(e("queue.declare"))?;
    Ok(())
}

async fn message_count(ch: &Channel, p: &Params) -> Result<u64> {
    let (_, count, _) = ch
        .queue_declare(QueueDeclareArguments::new(&p.queue).passive(true).finish())
        .await
        .map_err(e("queue.declare passive"))?
        .context("queue.declare passive: no reply")?;
    Ok(count as u64)
}

/// queue.declare(passive) until the queue holds `n` messages.
async fn wait_for_count(ch: &Channel, p: &Params, n: u64) -> Result<()> {
    loop {
        let c = message_count(ch, p).await?;
        if c >= n {
            ensure!(c == n, "queue has {c} messages, expected {n}");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// amqprs takes the body as an owned `Vec<u8>`, so each publish gets its copy.
async fn publish_one(ch: &Channel, p: &Params, args: &BasicPublishArguments) -> Result<()> {
    ch.basic_publish(BasicProperties::default(), p.payload.clone(), args.clone())
        .await
        .map_err(e("basic.publish"))
}

async fn publish_n(ch: &Channel, p: &Params) -> Result<()> {
    let args = BasicPublishArguments::new("", &p.queue);
    for _ in 0..p.count {
        publish_one(ch, p, &args).await?;
    }
    Ok(())
}

/// Counts settled (acked or nacked) publishes by delivery tag 1..=n, handling
/// both single and `multiple` confirms.
struct ConfirmTracker {
    state: Mutex<TrackState>,
    /// (settled, nacked)
    tx: watch::Sender<(u64, u64)>,
}

struct TrackState {
    settled: Vec<bool>,
    /// All tags <= low are settled.
    low: u64,
    count: u64,
    nacks: u64,
}

impl ConfirmTracker {
    fn new(n: u64) -> Arc<Self> {
        Arc::new(ConfirmTracker {
            state: Mutex::new(TrackState {
                settled: vec![false; n as usize + 1],
                low: 0,
                count: 0,
                nacks: 0,
            }),
            tx: watch::channel((0, 0)).0,
        })
    }

    fn settle(&self, tag: u64, multiple: bool, nack: bool) {
        let mut s = self.state.lock().unwrap();
        let max = s.settled.len() as u64 - 1;
        let tag = tag.min(max);
        let from = if multiple { s.low + 1 } else { tag };
        for t in from..=tag {
            if t > 0 && !s.settled[t as usize] {
                s.settled[t as usize] = true;
                s.count += 1;
                if nack {
                    s.nacks += 1;
                }
            }
        }
        while s.low < max && s.settled[s.low as usize + 1] {
            s.low += 1;
        }
        self.tx.send_replace((s.count, s.nacks));
    }
}

struct ConfirmCallback(Arc<ConfirmTracker>);

#[async_trait]
impl ChannelCallback for ConfirmCallback {
    async fn close(&mut self, _: &Channel, _: CloseChannel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        self.0.settle(ack.delivery_tag(), ack.mutiple(), false);
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        self.0.settle(nack.delivery_tag(), nack.multiple(), true);
    }
    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
}

/// basic.qos + basic.consume (manual ack); returns the delivery receiver.
async fn start_consumer(
    ch: &Channel,
    p: &Params,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<amqprs::channel::ConsumerMessage>> {
    ch.basic_qos(BasicQosArguments::new(0, p.prefetch, false))
        .await
        .map_err(e("basic.qos"))?;
    let (_tag, rx) = ch
        .basic_consume_rx(
            BasicConsumeArguments::new(&p.queue, "bench-consumer")
                .manual_ack(true)
                .finish(),
        )
        .await
        .map_err(e("basic.consume"))?;
    Ok(rx)
}

/// Receive `count` deliveries and ack each one.
async fn consume_n(
    ch: &Channel,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<amqprs::channel::ConsumerMessage>,
    count: u64,
    size: usize,
) -> Result<()> {
    let mut got = 0u64;
    while got < count {
        let msg = rx.recv().await.context("consumer channel closed early")?;
        let deliver = msg.deliver.context("delivery without deliver method")?;
        debug_assert_eq!(msg.content.as_ref().map(Vec::len), Some(size));
        ch.basic_ack(BasicAckArguments::new(deliver.delivery_tag(), false))
            .await
            .map_err(e("basic.ack"))?;
        got += 1;
    }
    Ok(())
}

impl Client for Amqprs {
    async fn publish(p: &Params, t: &mut Timer) -> Result<()> {
        let conn = connect(p).await?;
        let ch = open_channel(&conn).await?;
        ch.register_callback(DefaultChannelCallback)
            .await
            .map_err(e("register channel callback"))?;
        declare(&ch, p).await?;

        t.start();
        publish_n(&ch, p).await?;
        wait_for_count(&ch, p, p.count).await?;
        t.stop();

        close(conn).await
    }

    async fn publish_confirms(p: &Params, t: &mut Timer) -> Result<()> {
        let conn = connect(p).await?;
        let ch = open_channel(&conn).await?;
        let tracker = ConfirmTracker::new(p.count);
        ch.register_callback(ConfirmCallback(tracker.clone()))
            .await
            .map_err(e("register channel callback"))?;
        declare(&ch, p).await?;
        ch.confirm_select(ConfirmSelectArguments::default())
            .await
            .map_err(e("confirm.select"))?;
        let mut rx = tracker.tx.subscribe();
        let args = BasicPublishArguments::new("", &p.queue);
        let window = p.confirm_window;
        let mut settled = 0u64;

        t.start();
        for published in 0..p.count {
            if published - settled >= window {
                let v = *rx
                    .wait_for(|(c, _)| published - *c < window)
                    .await
                    .context("confirm tracker gone")?;
                settled = v.0;
            }
            publish_one(&ch, p, &args).await?;
        }
        let (_, nacks) = *rx
            .wait_for(|(c, _)| *c == p.count)
            .await
            .context("confirm tracker gone")?;
        t.stop();

        if nacks > 0 {
            bail!("{nacks} publishes nacked by broker");
        }
        close(conn).await
    }

    async fn consume(p: &Params, t: &mut Timer) -> Result<()> {
        let conn = connect(p).await?;
        let ch = open_channel(&conn).await?;
        ch.register_callback(DefaultChannelCallback)
            .await
            .map_err(e("register channel callback"))?;
        declare(&ch, p).await?;
        // Prefill (untimed).
        publish_n(&ch, p).await?;
        wait_for_count(&ch, p, p.count).await?;

        // basic.qos is set up untimed, as for lapin; basic.consume is timed.
        ch.basic_qos(BasicQosArguments::new(0, p.prefetch, false))
            .await
            .map_err(e("basic.qos"))?;
        t.start();
        let (_tag, mut rx) = ch
            .basic_consume_rx(
                BasicConsumeArguments::new(&p.queue, "bench-consumer")
                    .manual_ack(true)
                    .finish(),
            )
            .await
            .map_err(e("basic.consume"))?;
        consume_n(&ch, &mut rx, p.count, p.payload.len()).await?;
        // Round-trip after the last ack: the broker has processed all acks.
        let left = message_count(&ch, p).await?;
        t.stop();
        ensure!(left == 0, "{left} messages left in queue after consume");

        close(conn).await
    }

    async fn e2e(p: &Params, t: &mut Timer) -> Result<()> {
        let pub_conn = connect(p).await?;
        let cons_conn = connect(p).await?;
        let pub_ch = open_channel(&pub_conn).await?;
        let cons_ch = open_channel(&cons_conn).await?;
        for ch in [&pub_ch, &cons_ch] {
            ch.register_callback(DefaultChannelCallback)
                .await
                .map_err(e("register channel callback"))?;
        }
        declare(&pub_ch, p).await?;
        let mut rx = start_consumer(&cons_ch, p).await?;

        let count = p.count;
        let size = p.payload.len();
        let consumer_task = tokio::spawn(async move {
            consume_n(&cons_ch, &mut rx, count, size).await?;
            anyhow::Ok((cons_ch, rx))
        });

        t.start();
        publish_n(&pub_ch, p).await?;
        let (_cons_ch, _rx) = consumer_task.await.context("consumer task panicked")??;
        t.stop();

        close(pub_conn).await?;
        close(cons_conn).await
    }

    async fn delete_queue(p: &Params) -> Result<()> {
        let conn = connect(p).await?;
        let ch = open_channel(&conn).await?;
        ch.queue_delete(QueueDeleteArguments::new(&p.queue))
            .await
            .map_err(e("queue.delete"))?;
        close(conn).await
    }
}
