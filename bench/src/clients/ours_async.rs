//! Our client, async: `amqp-tokio` and `amqp-async-std`.
//!
//! Both adapters re-export the same runtime-agnostic API of `amqp-client`
//! (`Connection`, `Channel`, `Consumer`, `PublishConfirm` are literally the
//! same types); they differ only in how they connect and where the
//! connection's driver runs:
//! * `amqp-tokio`: TCP via tokio, the driver is a `tokio::spawn`ed task on the
//!   harness' 2-worker runtime (like amqprs' reader/writer tasks).
//! * `amqp-async-std`: TCP via async-io, run as its users run it: the child
//!   runs the scenario on async-std's executor (`async_std::task::block_on`
//!   of a `spawn`ed task, see `main.rs`), not on tokio's, and the e2e
//!   consumer task is an `async_std::task::spawn`. The executor's threads
//!   (async-global-executor: one per CPU, 2 here, as many as the tokio
//!   workers the other clients get) poll async-io's reactor themselves. The
//!   driver runs where `amqp_async_std::connect` puts it; with
//!   `BENCH_ASYNC_STD_DRIVER=task` the bench uses `connect_with_spawner` with
//!   `async_std::task::spawn` instead (the A/B of the driver's placement).
//!
//! So the scenario code is shared (same work, same counts); `Dial` picks the
//! adapter and the executor's spawn and sleep.
//!
//! Idiomatic use, as in `amqp-tokio/examples/demo.rs`:
//! * the body is a `bytes::Bytes` made once; each publish clones it (a
//!   reference-count increment, no copy) — the API takes `impl Into<Bytes>`;
//! * publishing without confirms awaits `basic_publish` (returns once the
//!   message is queued for the driver; the client itself applies backpressure
//!   above its high-water mark) and drops the `PublishConfirm`, which resolves
//!   to `NotRequested` anyway;
//! * confirms: a FIFO (`VecDeque`) of at most `window` `PublishConfirm`
//!   futures, the oldest awaited when the window is full;
//! * consuming: the `Consumer` stream, `delivery.ack()` (synchronous: queues
//!   the ack for the driver, never waits).

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use amqp_tokio::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, BasicQosOptions, Channel,
    ConfirmSelectOptions, Confirmation, Connection, FieldTable, IoCounters, PublishConfirm,
    QueueDeclareOptions, QueueDeleteOptions,
};
use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::harness::{Client, Params, QUEUE_EXPIRES_MS, Timer};

/// How an adapter connects, and the executor its users run it on.
pub trait Dial: Send + Sync + 'static {
    fn connect(uri: String) -> impl Future<Output = Result<Connection>> + Send;

    /// Spawns a task on the adapter's executor, at once (not when the returned future is
    /// first polled: e2e's consumer must run while the publisher does); the future joins it.
    fn spawn<T: Send + 'static>(
        task: impl Future<Output = T> + Send + 'static,
    ) -> impl Future<Output = Result<T>> + Send;

    /// Sleeps on the adapter's executor's timer.
    fn sleep(d: Duration) -> impl Future<Output = ()> + Send;
}

pub struct TokioDial;
impl Dial for TokioDial {
    async fn connect(uri: String) -> Result<Connection> {
        amqp_tokio::connect(&uri)
            .await
            .context("amqp-tokio connect")
    }

    fn spawn<T: Send + 'static>(
        task: impl Future<Output = T> + Send + 'static,
    ) -> impl Future<Output = Result<T>> + Send {
        let handle = tokio::spawn(task);
        async move { handle.await.context("task panicked") }
    }

    async fn sleep(d: Duration) {
        tokio::time::sleep(d).await
    }
}

pub struct AsyncStdDial;
impl Dial for AsyncStdDial {
    async fn connect(uri: String) -> Result<Connection> {
        // Each adapter's `Connection` wraps amqp-client's, which both share.
        let conn = if std::env::var_os("BENCH_ASYNC_STD_DRIVER").is_some_and(|v| v == "task") {
            amqp_async_std::connect_with_spawner(&uri, |driver| {
                async_std::task::spawn(driver); // detached: dropping the handle does not cancel
                Ok(())
            })
            .await
        } else {
            amqp_async_std::connect(&uri).await
        };
        conn.map(|c| Connection::from(c.into_inner()))
            .context("amqp-async-std connect")
    }

    fn spawn<T: Send + 'static>(
        task: impl Future<Output = T> + Send + 'static,
    ) -> impl Future<Output = Result<T>> + Send {
        let handle = async_std::task::spawn(task);
        // async-std's join handle re-raises a task's panic instead of returning it.
        async move { Ok(handle.await) }
    }

    async fn sleep(d: Duration) {
        async_std::task::sleep(d).await
    }
}

pub struct Ours<D>(PhantomData<D>);
pub type AmqpTokio = Ours<TokioDial>;
pub type AmqpAsyncStd = Ours<AsyncStdDial>;

async fn connect<D: Dial>(p: &Params) -> Result<Connection> {
    D::connect(p.broker.uri()).await
}

/// With `BENCH_IO_COUNTERS` set, prints the connection's wake-ups and system calls per
/// message over the timed section to stderr (`Connection::io_counters`).
fn report_io(label: &str, conns: &[(&Connection, IoCounters)], count: u64) {
    if std::env::var_os("BENCH_IO_COUNTERS").is_none() {
        return;
    }
    for (i, (conn, before)) in conns.iter().enumerate() {
        let after = conn.io_counters();
        let per = |a: u64, b: u64| (a - b) as f64 / count.max(1) as f64;
        eprintln!(
            "io_counters {label} conn{i}: per msg driver_polls {:.3} reads {:.3} writes {:.3} driver_wakes {:.3} task_wakes {:.3}",
            per(after.driver_polls, before.driver_polls),
            per(after.reads, before.reads),
            per(after.writes, before.writes),
            per(after.driver_wakes, before.driver_wakes),
            per(after.task_wakes, before.task_wakes),
        );
    }
}

async fn close(conn: Connection) -> Result<()> {
    conn.close().await.context("close")
}

fn queue_args() -> FieldTable {
    FieldTable::new().with("x-expires", QUEUE_EXPIRES_MS)
}

async fn declare(ch: &Channel, p: &Params) -> Result<()> {
    ch.queue_declare(
        &p.queue,
        QueueDeclareOptions {
            arguments: queue_args(),
            ..Default::default()
        },
    )
    .await
    .context("queue.declare")?;
    Ok(())
}

async fn message_count(ch: &Channel, p: &Params) -> Result<u64> {
    let q = ch
        .queue_declare(
            &p.queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
        )
        .await
        .context("queue.declare passive")?;
    Ok(q.message_count as u64)
}

/// queue.declare(passive) until the queue holds `n` messages.
async fn wait_for_count<D: Dial>(ch: &Channel, p: &Params, n: u64) -> Result<()> {
    loop {
        let c = message_count(ch, p).await?;
        if c >= n {
            ensure!(c == n, "queue has {c} messages, expected {n}");
            return Ok(());
        }
        D::sleep(Duration::from_millis(1)).await;
    }
}

async fn publish_one(
    ch: &Channel,
    p: &Params,
    props: &BasicProperties,
    body: &Bytes,
) -> Result<PublishConfirm> {
    ch.basic_publish(
        "",
        &p.queue,
        BasicPublishOptions::default(),
        props,
        body.clone(),
    )
    .await
    .context("basic.publish")
}

/// N plain publishes; each `basic_publish` returns once the message is queued
/// for the driver. The (not requested) confirm is dropped.
async fn publish_n(ch: &Channel, p: &Params) -> Result<()> {
    let body = Bytes::from(p.payload.clone());
    let props = BasicProperties::default();
    for _ in 0..p.count {
        drop(publish_one(ch, p, &props, &body).await?);
    }
    Ok(())
}

async fn settle(c: PublishConfirm) -> Result<()> {
    match c.await {
        Confirmation::Ack(_) => Ok(()),
        other => bail!("message not acked by broker: {other:?}"),
    }
}

/// Receive `count` deliveries and ack each one.
async fn consume_n(consumer: &mut amqp_tokio::Consumer, count: u64, size: usize) -> Result<()> {
    let mut got = 0u64;
    while got < count {
        let d = consumer
            .next()
            .await
            .context("consumer stream ended early")?
            .context("delivery")?;
        debug_assert_eq!(d.body.len(), size);
        d.ack().context("basic.ack")?;
        got += 1;
    }
    Ok(())
}

impl<D: Dial> Client for Ours<D> {
    async fn publish(p: &Params, t: &mut Timer) -> Result<()> {
        let conn = connect::<D>(p).await?;
        let ch = conn.open_channel().await?;
        declare(&ch, p).await?;

        let io = conn.io_counters();
        t.start();
        publish_n(&ch, p).await?;
        wait_for_count::<D>(&ch, p, p.count).await?;
        t.stop();
        report_io("publish", &[(&conn, io)], p.count);

        close(conn).await
    }

    async fn publish_confirms(p: &Params, t: &mut Timer) -> Result<()> {
        let conn = connect::<D>(p).await?;
        let ch = conn.open_channel().await?;
        declare(&ch, p).await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let body = Bytes::from(p.payload.clone());
        let props = BasicProperties::default();
        let window = p.confirm_window as usize;
        let mut pending: VecDeque<PublishConfirm> = VecDeque::with_capacity(window);

        let io = conn.io_counters();
        t.start();
        for _ in 0..p.count {
            if pending.len() >= window {
                settle(pending.pop_front().unwrap()).await?;
            }
            pending.push_back(publish_one(&ch, p, &props, &body).await?);
        }
        while let Some(c) = pending.pop_front() {
            settle(c).await?;
        }
        t.stop();
        report_io("publish_confirms", &[(&conn, io)], p.count);

        close(conn).await
    }

    async fn consume(p: &Params, t: &mut Timer) -> Result<()> {
        let conn = connect::<D>(p).await?;
        let ch = conn.open_channel().await?;
        declare(&ch, p).await?;
        // Prefill (untimed).
        publish_n(&ch, p).await?;
        wait_for_count::<D>(&ch, p, p.count).await?;
        ch.basic_qos(p.prefetch, BasicQosOptions::default()).await?;

        let io = conn.io_counters();
        t.start();
        let mut consumer = ch
            .basic_consume(
                &p.queue,
                "bench-consumer",
                BasicConsumeOptions::default(), // no_ack = false: manual ack
            )
            .await
            .context("basic.consume")?;
        consume_n(&mut consumer, p.count, p.payload.len()).await?;
        // Round-trip after the last ack: the broker has processed all acks.
        let left = message_count(&ch, p).await?;
        t.stop();
        report_io("consume", &[(&conn, io)], p.count);
        ensure!(left == 0, "{left} messages left in queue after consume");

        drop(consumer);
        close(conn).await
    }

    async fn e2e(p: &Params, t: &mut Timer) -> Result<()> {
        let pub_conn = connect::<D>(p).await?;
        let cons_conn = connect::<D>(p).await?;
        let pub_ch = pub_conn.open_channel().await?;
        let cons_ch = cons_conn.open_channel().await?;
        declare(&pub_ch, p).await?;
        cons_ch
            .basic_qos(p.prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = cons_ch
            .basic_consume(&p.queue, "bench-consumer", BasicConsumeOptions::default())
            .await
            .context("basic.consume")?;

        let count = p.count;
        let size = p.payload.len();
        let consumer_task = D::spawn(async move {
            consume_n(&mut consumer, count, size).await?;
            anyhow::Ok(consumer)
        });

        let io = [
            (&pub_conn, pub_conn.io_counters()),
            (&cons_conn, cons_conn.io_counters()),
        ];
        t.start();
        publish_n(&pub_ch, p).await?;
        let consumer = consumer_task.await??;
        t.stop();
        report_io("e2e", &io, p.count);

        drop(consumer);
        close(pub_conn).await?;
        close(cons_conn).await
    }

    async fn delete_queue(p: &Params) -> Result<()> {
        let conn = connect::<D>(p).await?;
        let ch = conn.open_channel().await?;
        ch.queue_delete(&p.queue, QueueDeleteOptions::default())
            .await
            .context("queue.delete")?;
        close(conn).await
    }
}
