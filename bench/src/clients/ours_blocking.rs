//! Our client, blocking: `amqp-blocking` (std::net API; each connection has a
//! background `amqp-io` I/O thread, the calls block the calling thread).
//!
//! A blocking client must not run on a tokio worker, so every scenario runs
//! on one `tokio::task::spawn_blocking` thread of the harness' runtime (the
//! e2e consumer on a second, plain `std::thread`). The `Timer` is moved into
//! that thread and back. Otherwise the scenarios are those of every client:
//! same queue, messages, window (a `VecDeque` of `PublishConfirm`s, the
//! oldest `wait()`ed when full), prefetch, acks and end conditions.

use std::collections::VecDeque;
use std::time::Duration;

use amqp_blocking::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, BasicQosOptions, Channel,
    ConfirmSelectOptions, Confirmation, Connection, Consumer, FieldTable, PublishConfirm,
    QueueDeclareOptions, QueueDeleteOptions,
};
use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;

use crate::harness::{Client, Params, QUEUE_EXPIRES_MS, Timer};

pub struct AmqpBlocking;

/// Runs `f(params, timer)` on a blocking thread, moving the timer there and back.
async fn on_blocking_thread(
    p: &Params,
    t: &mut Timer,
    f: fn(&Params, &mut Timer) -> Result<()>,
) -> Result<()> {
    let p = p.clone();
    let mut timer = std::mem::take(t);
    let (res, timer) = tokio::task::spawn_blocking(move || {
        let r = f(&p, &mut timer);
        (r, timer)
    })
    .await
    .context("blocking scenario panicked")?;
    *t = timer;
    res
}

fn connect(p: &Params) -> Result<Connection> {
    Connection::connect(&p.broker.uri()).context("amqp-blocking connect")
}

fn close(conn: Connection) -> Result<()> {
    conn.close().context("close")
}

fn declare(ch: &Channel, p: &Params) -> Result<()> {
    ch.queue_declare(
        &p.queue,
        QueueDeclareOptions {
            arguments: FieldTable::new().with("x-expires", QUEUE_EXPIRES_MS),
            ..Default::default()
        },
    )
    .context("queue.declare")?;
    Ok(())
}

fn message_count(ch: &Channel, p: &Params) -> Result<u64> {
    let q = ch
        .queue_declare(
            &p.queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
        )
        .context("queue.declare passive")?;
    Ok(q.message_count as u64)
}

fn wait_for_count(ch: &Channel, p: &Params, n: u64) -> Result<()> {
    loop {
        let c = message_count(ch, p)?;
        if c >= n {
            ensure!(c == n, "queue has {c} messages, expected {n}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn publish_one(
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
    .context("basic.publish")
}

fn publish_n(ch: &Channel, p: &Params) -> Result<()> {
    let body = Bytes::from(p.payload.clone());
    let props = BasicProperties::default();
    for _ in 0..p.count {
        drop(publish_one(ch, p, &props, &body)?);
    }
    Ok(())
}

fn settle(c: PublishConfirm) -> Result<()> {
    match c.wait() {
        Confirmation::Ack(_) => Ok(()),
        other => bail!("message not acked by broker: {other:?}"),
    }
}

fn consume_n(consumer: &mut Consumer, count: u64, size: usize) -> Result<()> {
    let mut got = 0u64;
    while got < count {
        let d = consumer
            .next()
            .context("consumer ended early")?
            .context("delivery")?;
        debug_assert_eq!(d.body.len(), size);
        d.ack().context("basic.ack")?;
        got += 1;
    }
    Ok(())
}

fn start_consumer(ch: &Channel, p: &Params) -> Result<Consumer> {
    ch.basic_consume(
        &p.queue,
        "bench-consumer",
        BasicConsumeOptions::default(), // manual ack
    )
    .context("basic.consume")
}

fn publish(p: &Params, t: &mut Timer) -> Result<()> {
    let conn = connect(p)?;
    let ch = conn.open_channel()?;
    declare(&ch, p)?;

    t.start();
    publish_n(&ch, p)?;
    wait_for_count(&ch, p, p.count)?;
    t.stop();

    close(conn)
}

fn publish_confirms(p: &Params, t: &mut Timer) -> Result<()> {
    let conn = connect(p)?;
    let ch = conn.open_channel()?;
    declare(&ch, p)?;
    ch.confirm_select(ConfirmSelectOptions::default())?;
    let body = Bytes::from(p.payload.clone());
    let props = BasicProperties::default();
    let window = p.confirm_window as usize;
    let mut pending: VecDeque<PublishConfirm> = VecDeque::with_capacity(window);

    t.start();
    for _ in 0..p.count {
        if pending.len() >= window {
            settle(pending.pop_front().unwrap())?;
        }
        pending.push_back(publish_one(&ch, p, &props, &body)?);
    }
    while let Some(c) = pending.pop_front() {
        settle(c)?;
    }
    t.stop();

    close(conn)
}

fn consume(p: &Params, t: &mut Timer) -> Result<()> {
    let conn = connect(p)?;
    let ch = conn.open_channel()?;
    declare(&ch, p)?;
    publish_n(&ch, p)?;
    wait_for_count(&ch, p, p.count)?;
    ch.basic_qos(p.prefetch, BasicQosOptions::default())?;

    t.start();
    let mut consumer = start_consumer(&ch, p)?;
    consume_n(&mut consumer, p.count, p.payload.len())?;
    let left = message_count(&ch, p)?;
    t.stop();
    ensure!(left == 0, "{left} messages left in queue after consume");

    drop(consumer);
    close(conn)
}

fn e2e(p: &Params, t: &mut Timer) -> Result<()> {
    let pub_conn = connect(p)?;
    let cons_conn = connect(p)?;
    let pub_ch = pub_conn.open_channel()?;
    let cons_ch = cons_conn.open_channel()?;
    declare(&pub_ch, p)?;
    cons_ch.basic_qos(p.prefetch, BasicQosOptions::default())?;
    let mut consumer = start_consumer(&cons_ch, p)?;

    let count = p.count;
    let size = p.payload.len();
    let consumer_thread = std::thread::Builder::new()
        .name("bench-consumer".into())
        .spawn(move || {
            consume_n(&mut consumer, count, size)?;
            anyhow::Ok(consumer)
        })?;

    t.start();
    publish_n(&pub_ch, p)?;
    let consumer = consumer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
    t.stop();

    drop(consumer);
    close(pub_conn)?;
    close(cons_conn)
}

fn delete_queue(p: &Params, _: &mut Timer) -> Result<()> {
    let conn = connect(p)?;
    let ch = conn.open_channel()?;
    ch.queue_delete(&p.queue, QueueDeleteOptions::default())
        .context("queue.delete")?;
    close(conn)
}

impl Client for AmqpBlocking {
    async fn publish(p: &Params, t: &mut Timer) -> Result<()> {
        on_blocking_thread(p, t, publish).await
    }

    async fn publish_confirms(p: &Params, t: &mut Timer) -> Result<()> {
        on_blocking_thread(p, t, publish_confirms).await
    }

    async fn consume(p: &Params, t: &mut Timer) -> Result<()> {
        on_blocking_thread(p, t, consume).await
    }

    async fn e2e(p: &Params, t: &mut Timer) -> Result<()> {
        on_blocking_thread(p, t, e2e).await
    }

    async fn delete_queue(p: &Params) -> Result<()> {
        on_blocking_thread(p, &mut Timer::default(), delete_queue).await
    }
}
