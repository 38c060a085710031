//! Producers and consumers as tasks over the async API that amqp-tokio and amqp-async-std
//! share (`amqp_client`); only connecting, spawning and sleeping differ by runtime.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use amqp_client::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, Channel, ConfirmSelectOptions,
    Confirmation, ConnectError, Connection, Error, PublishConfirm, QueueDeclareOptions,
    QueueDeleteOptions,
};
use futures_util::StreamExt;
use futures_util::future::{Either, select};

use super::{Plan, Role, Stats};
use crate::error::CliError;

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Task = BoxFut<Result<(), Error>>;

/// What differs between the async runtimes.
struct Rt {
    connect: fn(String) -> BoxFut<Result<Connection, ConnectError>>,
    spawn: fn(Task) -> Task,
    sleep: fn(Duration) -> BoxFut<()>,
}

pub fn run_tokio(plan: Arc<Plan>, stats: Arc<Stats>) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::other(format!("cannot start tokio: {e}")))?;
    let rt = Rt {
        connect: |uri| Box::pin(async move { amqp_tokio::connect(&uri).await.map(Into::into) }),
        spawn: |task| {
            let handle = tokio::spawn(task);
            Box::pin(async move {
                handle.await.unwrap_or(Err(Error::Transport {
                    kind: std::io::ErrorKind::Other,
                    message: "a perf task panicked".into(),
                }))
            })
        },
        sleep: |d| Box::pin(tokio::time::sleep(d)),
    };
    runtime.block_on(run(plan, stats, rt))
}

pub fn run_async_std(plan: Arc<Plan>, stats: Arc<Stats>) -> Result<(), CliError> {
    let rt = Rt {
        connect: |uri| Box::pin(async move { amqp_async_std::connect(&uri).await.map(Into::into) }),
        spawn: |task| Box::pin(async_std::task::spawn(task)),
        sleep: |d| Box::pin(async_std::task::sleep(d)),
    };
    async_std::task::block_on(run(plan, stats, rt))
}

async fn run(plan: Arc<Plan>, stats: Arc<Stats>, rt: Rt) -> Result<(), CliError> {
    let setup = (rt.connect)(plan.uri(0).to_owned()).await?;
    declare(&setup, &plan).await?;
    let args = &plan.args;
    let consumer_conns = connect_n(&rt, &plan, args.consumer_connections, args.consumers).await?;
    let producer_conns = connect_n(&rt, &plan, args.producer_connections, args.producers).await?;
    stats.add_sources(Role::Consumer, &consumer_conns, Connection::metrics);
    stats.add_sources(Role::Producer, &producer_conns, Connection::metrics);
    let mut tasks = Vec::new();
    for i in 0..args.consumers {
        let channel = consumer_conns[i % consumer_conns.len()]
            .open_channel()
            .await?;
        let consumer = start_consumer(&channel, &plan).await?;
        tasks.push((rt.spawn)(Box::pin(consume(
            consumer,
            plan.clone(),
            stats.clone(),
            rt.sleep,
        ))));
    }
    for i in 0..args.producers {
        let channel = producer_conns[i % producer_conns.len()]
            .open_channel()
            .await?;
        let (plan, stats) = (plan.clone(), stats.clone());
        let sleep = rt.sleep;
        tasks.push((rt.spawn)(Box::pin(async move {
            let result = produce(channel, &plan, &stats, sleep).await;
            stats.producers_running.fetch_sub(1, Relaxed);
            if result.is_err() {
                stats.stop.store(true, Relaxed);
            }
            result
        })));
    }
    let mut first_error = None;
    for task in tasks {
        if let Err(e) = task.await {
            stats.stop.store(true, Relaxed);
            stats.abort.store(true, Relaxed);
            first_error.get_or_insert(e);
        }
    }
    if plan.owns_queue {
        let channel = setup.open_channel().await?;
        channel
            .queue_delete(&plan.queue, QueueDeleteOptions::default())
            .await?;
    }
    for conn in producer_conns.iter().chain(&consumer_conns).chain([&setup]) {
        let _ = conn.close().await;
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

async fn connect_n(
    rt: &Rt,
    plan: &Plan,
    connections: usize,
    roles: usize,
) -> Result<Vec<Connection>, ConnectError> {
    let mut conns = Vec::new();
    for i in 0..connections.max(1).min(roles) {
        conns.push((rt.connect)(plan.uri(i).to_owned()).await?);
    }
    Ok(conns)
}

async fn declare(conn: &Connection, plan: &Plan) -> Result<(), Error> {
    let channel = conn.open_channel().await?;
    let (options, arguments) = super::queue_declare(plan);
    channel
        .queue_declare(
            &plan.queue,
            QueueDeclareOptions {
                arguments,
                ..options
            },
        )
        .await?;
    if !plan.args.exchange.is_empty() {
        channel
            .exchange_declare(&plan.args.exchange, "direct", super::exchange_declare(plan))
            .await?;
        channel
            .queue_bind(
                &plan.queue,
                &plan.args.exchange,
                &plan.routing_key,
                Default::default(),
            )
            .await?;
    }
    channel.close().await
}

async fn start_consumer(channel: &Channel, plan: &Plan) -> Result<amqp_client::Consumer, Error> {
    if !plan.args.autoack {
        channel
            .basic_qos(plan.args.prefetch, BasicQosOptions::default())
            .await?;
    }
    let options = BasicConsumeOptions {
        no_ack: plan.args.autoack,
        ..Default::default()
    };
    channel.basic_consume(&plan.queue, "", options).await
}

async fn produce(
    channel: Channel,
    plan: &Plan,
    stats: &Stats,
    sleep: fn(Duration) -> BoxFut<()>,
) -> Result<(), Error> {
    let window = plan.args.confirm;
    if window.is_some() {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }
    let options = BasicPublishOptions {
        mandatory: plan.args.mandatory,
        ..Default::default()
    };
    let mut pending: VecDeque<PublishConfirm> = VecDeque::new();
    let mut pacer = super::Pacer::new(plan.args.rate);
    let mut n = 0u64;
    while !stats.stop.load(Relaxed) && plan.args.count.is_none_or(|c| n < c) {
        if let Some(wait) = pacer.wait(n) {
            sleep(wait).await;
            continue;
        }
        let confirm = channel
            .basic_publish(
                &plan.args.exchange,
                &plan.routing_key,
                options,
                &plan.properties,
                plan.body(stats),
            )
            .await?;
        n += 1;
        if let Some(window) = window {
            pending.push_back(confirm);
            while pending.len() >= window.max(1) {
                let front = pending.pop_front().expect("not empty");
                settle(front.await, stats)?;
            }
        }
    }
    while let Some(confirm) = pending.pop_front() {
        settle(confirm.await, stats)?;
    }
    Ok(())
}

fn settle(confirmation: Confirmation, _stats: &Stats) -> Result<(), Error> {
    super::check_confirmation(&confirmation)
}

async fn consume(
    mut consumer: amqp_client::Consumer,
    plan: Arc<Plan>,
    stats: Arc<Stats>,
    sleep: fn(Duration) -> BoxFut<()>,
) -> Result<(), Error> {
    let ack_every = plan.ack_every();
    let mut unacked = 0u32;
    let mut last = None;
    let has_producers = plan.args.producers > 0;
    while !stats.consumers_done(has_producers) {
        let next = consumer.next();
        match select(next, sleep(Duration::from_millis(100))).await {
            Either::Left((Some(delivery), _)) => {
                let delivery = delivery?;
                stats.record_delivery(&delivery.body);
                if !plan.args.autoack {
                    unacked += 1;
                    if unacked >= ack_every {
                        delivery.ack_multiple()?;
                        unacked = 0;
                        last = None;
                    } else {
                        last = Some(delivery);
                    }
                }
            }
            Either::Left((None, _)) => break,
            Either::Right(_) => {
                // Idle: ack what a partial batch holds so the broker keeps delivering.
                if let Some(d) = last.take() {
                    d.ack_multiple()?;
                    unacked = 0;
                }
            }
        }
    }
    if let Some(d) = last.take() {
        d.ack_multiple()?;
    }
    Ok(())
}
