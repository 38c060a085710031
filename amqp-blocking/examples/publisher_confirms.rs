//! RabbitMQ tutorial 7, "Publisher Confirms": the broker confirms every publish on a channel
//! in confirm mode. Three ways to wait for those confirms, slowest to fastest, then what a
//! confirm says about a `mandatory` message that no queue took.
//!
//! ```text
//! cargo run -p amqp-blocking --example blocking_publisher_confirms -- [MESSAGES]   # default 1000
//! ```

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use amqp_blocking::{
    BasicProperties, BasicPublishOptions, Channel, ConfirmSelectOptions, Confirmation, Connection,
    Decimal, FieldTable, PublishConfirm, QueueDeclareOptions,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Publishes `count` messages and waits for each confirm before the next publish.
pub fn individually(channel: &Channel, queue: &str, count: usize) -> Result<(), Error> {
    for i in 0..count {
        let confirm = publish(channel, queue, i)?;
        if !confirm.wait().is_ack() {
            return Err(format!("message {i} was not confirmed").into());
        }
    }
    Ok(())
}

/// Publishes in batches of `batch` messages and waits for a whole batch at once.
pub fn in_batches(channel: &Channel, queue: &str, count: usize, batch: usize) -> Result<(), Error> {
    let mut outstanding = Vec::with_capacity(batch);
    for i in 0..count {
        outstanding.push(publish(channel, queue, i)?);
        if outstanding.len() == batch || i + 1 == count {
            for confirm in outstanding.drain(..) {
                if !confirm.wait().is_ack() {
                    return Err("a message in the batch was not confirmed".into());
                }
            }
        }
    }
    Ok(())
}

/// Keeps publishing while confirms arrive; at most `window` unconfirmed at a time.
pub fn asynchronously(
    channel: &Channel,
    queue: &str,
    count: usize,
    window: usize,
) -> Result<(), Error> {
    let mut in_flight = VecDeque::with_capacity(window);
    for i in 0..count {
        if in_flight.len() == window {
            let oldest: amqp_blocking::PublishConfirm =
                in_flight.pop_front().unwrap_or_else(|| unreachable!());
            if !oldest.wait().is_ack() {
                return Err("a message was nacked".into());
            }
        }
        in_flight.push_back(publish(channel, queue, i)?);
    }
    for confirm in in_flight {
        if !confirm.wait().is_ack() {
            return Err("a message was nacked".into());
        }
    }
    Ok(())
}

fn publish(channel: &Channel, queue: &str, i: usize) -> Result<PublishConfirm, Error> {
    // Headers take Rust values: integers, text, bytes, decimals, timestamps.
    let headers = FieldTable::new()
        .with("sequence", i as i64)
        .with("price", Decimal::new(-314, 2))
        .with("sent-at", SystemTime::now());
    let props = BasicProperties::default().with_headers(headers);
    let body = format!("message {i}");
    Ok(channel.basic_publish(
        "",
        queue,
        BasicPublishOptions::default(),
        &props,
        body.as_bytes(),
    )?)
}

/// A `mandatory` message that no queue takes is returned, and its confirm is still an ack:
/// the broker did handle it. The return rides on the confirm; check it there.
pub fn unroutable(channel: &Channel) -> Result<Confirmation, Error> {
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = channel.basic_publish(
        "",
        "no-such-queue-anywhere",
        mandatory,
        &BasicProperties::default(),
        "lost?",
    )?;
    let outcome = confirm.wait();
    match outcome.returned() {
        Some(returned) => println!(
            " [x] returned: {} {} (and the confirm is an ack: {})",
            returned.reply_code,
            returned.reply_text,
            outcome.is_ack()
        ),
        None => println!(" [x] routed"),
    }
    Ok(outcome)
}

fn main() -> Result<(), Error> {
    let uri = std::env::var("AMQP_URI").unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let count: usize = std::env::args().nth(1).map_or(Ok(1000), |n| n.parse())?;
    let conn = Connection::connect(&uri)?;
    let channel = conn.open_channel()?;
    channel.confirm_select(ConfirmSelectOptions::default())?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare("", exclusive)?;

    let t = Instant::now();
    individually(&channel, &queue.name, count)?;
    println!(
        "Published {count} messages individually in {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    in_batches(&channel, &queue.name, count, 100)?;
    println!(
        "Published {count} messages in batches of 100 in {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    asynchronously(&channel, &queue.name, count, 1000)?;
    println!(
        "Published {count} messages asynchronously in {:?}",
        t.elapsed()
    );
    unroutable(&channel)?;
    Ok(conn.close()?)
}
