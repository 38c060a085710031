//! Producers and consumers as threads over amqp-blocking: the same loop as the async run,
//! in plain blocking calls.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use amqp_blocking::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, Channel, ConfirmSelectOptions,
    Connection, Consumer, Error, PublishConfirm, QueueDeclareOptions, QueueDeleteOptions,
};

use super::{Plan, Role, Stats};
use crate::error::CliError;

pub fn run(plan: Arc<Plan>, stats: Arc<Stats>) -> Result<(), CliError> {
    let setup = Connection::connect(plan.uri(0))?;
    declare(&setup, &plan)?;
    let args = &plan.args;
    let consumer_conns = connect_n(&plan, args.consumer_connections, args.consumers)?;
    let producer_conns = connect_n(&plan, args.producer_connections, args.producers)?;
    stats.add_sources(Role::Consumer, &consumer_conns, Connection::metrics);
    stats.add_sources(Role::Producer, &producer_conns, Connection::metrics);
    let mut threads = Vec::new();
    for i in 0..args.consumers {
        let channel = consumer_conns[i % consumer_conns.len()].open_channel()?;
        let consumer = start_consumer(&channel, &plan)?;
        let (plan, stats) = (plan.clone(), stats.clone());
        threads.push(std::thread::spawn(move || consume(consumer, &plan, &stats)));
    }
    for i in 0..args.producers {
        let channel = producer_conns[i % producer_conns.len()].open_channel()?;
        let (plan, stats) = (plan.clone(), stats.clone());
        threads.push(std::thread::spawn(move || {
            let result = produce(&channel, &plan, &stats);
            stats.producers_running.fetch_sub(1, Relaxed);
            if result.is_err() {
                stats.stop.store(true, Relaxed);
            }
            result
        }));
    }
    let mut first_error = None;
    for thread in threads {
        let result = thread.join().unwrap_or(Err(Error::Transport {
            kind: std::io::ErrorKind::Other,
            message: "a perf thread panicked".into(),
        }));
        if let Err(e) = result {
            stats.stop.store(true, Relaxed);
            stats.abort.store(true, Relaxed);
            first_error.get_or_insert(e);
        }
    }
    if plan.owns_queue {
        setup
            .open_channel()?
            .queue_delete(&plan.queue, QueueDeleteOptions::default())?;
    }
    for conn in producer_conns.iter().chain(&consumer_conns).chain([&setup]) {
        let _ = conn.close();
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn connect_n(plan: &Plan, connections: usize, roles: usize) -> Result<Vec<Connection>, CliError> {
    (0..connections.max(1).min(roles))
        .map(|i| Connection::connect(plan.uri(i)).map_err(CliError::from))
        .collect()
}

fn declare(conn: &Connection, plan: &Plan) -> Result<(), Error> {
    let channel = conn.open_channel()?;
    let (options, arguments) = super::queue_declare(plan);
    channel.queue_declare(
        &plan.queue,
        QueueDeclareOptions {
            arguments,
            ..options
        },
    )?;
    if !plan.args.exchange.is_empty() {
        channel.exchange_declare(&plan.args.exchange, "direct", super::exchange_declare(plan))?;
        channel.queue_bind(
            &plan.queue,
            &plan.args.exchange,
            &plan.routing_key,
            Default::default(),
        )?;
    }
    channel.close()
}

fn start_consumer(channel: &Channel, plan: &Plan) -> Result<Consumer, Error> {
    if !plan.args.autoack {
        channel.basic_qos(plan.args.prefetch, BasicQosOptions::default())?;
    }
    let options = BasicConsumeOptions {
        no_ack: plan.args.autoack,
        ..Default::default()
    };
    channel.basic_consume(&plan.queue, "", options)
}

fn produce(channel: &Channel, plan: &Plan, stats: &Stats) -> Result<(), Error> {
    let window = plan.args.confirm;
    if window.is_some() {
        channel.confirm_select(ConfirmSelectOptions::default())?;
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
            std::thread::sleep(wait);
            continue;
        }
        let confirm = channel.basic_publish(
            &plan.args.exchange,
            &plan.routing_key,
            options,
            &plan.properties,
            plan.body(stats),
        )?;
        n += 1;
        if let Some(window) = window {
            pending.push_back(confirm);
            while pending.len() >= window.max(1) {
                let front = pending.pop_front().expect("not empty");
                super::check_confirmation(&front.wait())?;
            }
        }
    }
    while let Some(confirm) = pending.pop_front() {
        super::check_confirmation(&confirm.wait())?;
    }
    Ok(())
}

fn consume(consumer: Consumer, plan: &Plan, stats: &Stats) -> Result<(), Error> {
    let ack_every = plan.ack_every();
    let mut unacked = 0u32;
    let mut last = None;
    let has_producers = plan.args.producers > 0;
    while !stats.consumers_done(has_producers) {
        match consumer.recv_timeout(Duration::from_millis(100))? {
            Some(delivery) => {
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
            None => {
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
