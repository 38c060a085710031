//! lapin 4.x adapter.
//!
//! Runtime: with the `tokio` feature (lapin's default runtime),
//! `Connection::connect` uses the ambient tokio runtime (async-rs
//! `Runtime::tokio_current()`), i.e. our 2-worker runtime. Note that lapin
//! additionally runs each connection's I/O loop on its own OS thread
//! ("lapin-io-loop"); its CPU time is part of the process' rusage.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, PublisherConfirm};

use crate::harness::{Client, Params, QUEUE_EXPIRES_MS, Timer};

pub struct Lapin;

async fn connect(p: &Params) -> Result<Connection> {
    Connection::connect(&p.broker.uri(), ConnectionProperties::default())
        .await
        .context("lapin connect")
}

async fn close(conn: Connection) -> Result<()> {
    conn.close(200, "bye".into()).await.context("lapin close")
}

fn queue_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-expires".into(), AMQPValue::LongInt(QUEUE_EXPIRES_MS));
    t
}

async fn declare(ch: &Channel, p: &Params) -> Result<()> {
    ch.queue_declare(
        p.queue.as_str().into(),
        QueueDeclareOptions::default(),
        queue_args(),
    )
    .await
    .context("queue.declare")?;
    Ok(())
}

async fn message_count(ch: &Channel, p: &Params) -> Result<u64> {
    let q = ch
        .queue_declare(
            p.queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .context("queue.declare passive")?;
    Ok(q.message_count() as u64)
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

/// N plain publishes (each `basic_publish` future resolves once lapin's I/O
/// loop has written the frames; the returned not-requested confirm resolves
/// immediately).
async fn publish_n(ch: &Channel, p: &Params) -> Result<()> {
    let rk = ShortString::from(p.queue.as_str());
    for _ in 0..p.count {
        ch.basic_publish(
            ShortString::from(""),
            rk.clone(),
            BasicPublishOptions::default(),
            &p.payload,
            BasicProperties::default(),
        )
        .await
        .context("basic.publish")?
        .await
        .context("basic.publish (confirm future)")?;
    }
    Ok(())
}

impl Client for Lapin {
    async fn publish(p: &Params, t: &mut Timer) -> Result<()> {
        let conn = connect(p).await?;
        let ch = conn.create_channel().await?;
        declare(&ch, p).await?;

        t.start();
        publish_n(&ch, p).await?;
        wait_for_count(&ch, p, p.count).await?;
        t.stop();

        close(conn).await
    }

    async fn publish_confirms(p: &Params, t: &mut Timer) -> Result<()> {
        let conn = connect(p).await?;
        let ch = conn.create_channel().await?;
        declare(&ch, p).await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let rk = ShortString::from(p.queue.as_str());
        let window = p.confirm_window as usize;
        let mut pending: VecDeque<PublisherConfirm> = VecDeque::with_capacity(window);

        async fn settle(c: PublisherConfirm) -> Result<()> {
            let conf = c.await.context("publisher confirm")?;
            if !conf.is_ack() {
                bail!("message not acked by broker: {conf:?}");
            }
            Ok(())
        }

        t.start();
        for _ in 0..p.count {
            if pending.len() >= window {
                settle(pending.pop_front().unwrap()).await?;
            }
            let c = ch
                .basic_publish(
                    ShortString::from(""),
                    rk.clone(),
                    BasicPublishOptions::default(),
                    &p.payload,
                    BasicProperties::default(),
                )
                .await
                .context("basic.publish")?;
            pending.push_back(c);
        }
        while let Some(c) = pending.pop_front() {
            settle(c).await?;
        }
        t.stop();

        close(conn).await
    }

    async fn consume(p: &Params, t: &mut Timer) -> Result<()> {
        let conn = connect(p).await?;
        let ch = conn.create_channel().await?;
        declare(&ch, p).await?;
        // Prefill (untimed).
        publish_n(&ch, p).await?;
        wait_for_count(&ch, p, p.count).await?;
        ch.basic_qos(p.prefetch, BasicQosOptions::default()).await?;

        t.start();
        let mut consumer = ch
            .basic_consume(
                p.queue.as_str().into(),
                "bench-consumer".into(),
                BasicConsumeOptions::default(), // no_ack = false: manual ack
                FieldTable::default(),
            )
            .await
            .context("basic.consume")?;
        let mut got = 0u64;
        while got < p.count {
            let d = consumer
                .next()
                .await
                .context("consumer stream ended early")?
                .context("delivery")?;
            debug_assert_eq!(d.data.len(), p.payload.len());
            d.ack(BasicAckOptions::default())
                .await
                .context("basic.ack")?;
            got += 1;
        }
        // Round-trip after the last ack: the broker has processed all acks.
        let left = message_count(&ch, p).await?;
        t.stop();
        ensure!(left == 0, "{left} messages left in queue after consume");

        close(conn).await
    }

    async fn e2e(p: &Params, t: &mut Timer) -> Result<()> {
        let pub_conn = connect(p).await?;
        let cons_conn = connect(p).await?;
        let pub_ch = pub_conn.create_channel().await?;
        let cons_ch = cons_conn.create_channel().await?;
        declare(&pub_ch, p).await?;
        cons_ch
            .basic_qos(p.prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = cons_ch
            .basic_consume(
                p.queue.as_str().into(),
                "bench-consumer".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("basic.consume")?;

        let count = p.count;
        let size = p.payload.len();
        let consumer_task = tokio::spawn(async move {
            let mut got = 0u64;
            while got < count {
                let d = consumer
                    .next()
                    .await
                    .context("consumer stream ended early")?
                    .context("delivery")?;
                debug_assert_eq!(d.data.len(), size);
                d.ack(BasicAckOptions::default())
                    .await
                    .context("basic.ack")?;
                got += 1;
            }
            anyhow::Ok(())
        });

        t.start();
        publish_n(&pub_ch, p).await?;
        consumer_task.await.context("consumer task panicked")??;
        t.stop();

        close(pub_conn).await?;
        close(cons_conn).await
    }

    async fn delete_queue(p: &Params) -> Result<()> {
        let conn = connect(p).await?;
        let ch = conn.create_channel().await?;
        ch.queue_delete(p.queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .context("queue.delete")?;
        close(conn).await
    }
}
