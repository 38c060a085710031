//! RabbitMQ tutorial 2, "Work Queues": `new_task` puts durable, persistent tasks on
//! `task_queue`; each `worker` takes one task at a time (prefetch 1), "works" one second per
//! dot in the message, and acks only when done, so a worker that dies loses nothing.
//!
//! ```text
//! cargo run -p amqp-blocking --example blocking_work_queues -- worker        # start two or three of these
//! cargo run -p amqp-blocking --example blocking_work_queues -- new_task First message.
//! cargo run -p amqp-blocking --example blocking_work_queues -- new_task Third message...
//! cargo run -p amqp-blocking --example blocking_work_queues -- worker 2      # stop after two tasks
//! ```

use std::time::Duration;

use amqp_blocking::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, BasicQosOptions, Connection,
    QueueDeclareOptions,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Queues one task, persistent (delivery mode 2) on a durable queue: it survives a restart.
pub fn new_task(uri: &str, queue: &str, task: &str) -> Result<(), Error> {
    let conn = Connection::connect(uri)?;
    let channel = conn.open_channel()?;
    channel.queue_declare(queue, durable())?;
    let props = BasicProperties::default().with_delivery_mode(2);
    channel.basic_publish("", queue, BasicPublishOptions::default(), &props, task)?;
    println!(" [x] Sent {task:?}");
    conn.close()?;
    Ok(())
}

/// Works through tasks one at a time, acking each when done; stops after `limit` if given.
pub fn worker(uri: &str, queue: &str, limit: Option<usize>) -> Result<Vec<String>, Error> {
    let conn = Connection::connect(uri)?;
    let channel = conn.open_channel()?;
    channel.queue_declare(queue, durable())?;
    // Fair dispatch: no new task for this worker until it has acked the last one.
    channel.basic_qos(1, BasicQosOptions::default())?;
    let mut consumer = channel.basic_consume(queue, "", BasicConsumeOptions::default())?;
    println!(" [*] Waiting for messages. To exit press CTRL+C");
    let mut done = Vec::new();
    while limit.is_none_or(|n| done.len() < n) {
        let Some(delivery) = consumer.next() else {
            break;
        };
        let delivery = delivery?;
        let task = String::from_utf8_lossy(&delivery.body).into_owned();
        println!(" [x] Received {task:?}");
        let dots = task.matches('.').count() as u64;
        std::thread::sleep(Duration::from_secs(dots));
        println!(" [x] Done");
        delivery.ack()?;
        done.push(task);
    }
    conn.close()?;
    Ok(done)
}

fn main() -> Result<(), Error> {
    let uri = std::env::var("AMQP_URI").unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("new_task") => {
            let task = args[1..].join(" ");
            let task = if task.is_empty() {
                "Hello World!".into()
            } else {
                task
            };
            new_task(&uri, "task_queue", &task)
        }
        Some("worker") => {
            let limit = args.get(1).map(|n| n.parse()).transpose()?;
            worker(&uri, "task_queue", limit).map(drop)
        }
        _ => Err("usage: work_queues new_task [WORDS...] | worker [COUNT]".into()),
    }
}
