//! RabbitMQ tutorial 1, "Hello World!": a producer sends one message to the queue `hello`; a
//! consumer prints what arrives there.
//!
//! ```text
//! cargo run -p amqp-blocking --example blocking_hello_world -- receive     # Ctrl-C to stop
//! cargo run -p amqp-blocking --example blocking_hello_world -- send
//! cargo run -p amqp-blocking --example blocking_hello_world -- receive 1   # stop after one message
//! ```
//!
//! The broker is `$AMQP_URI`, else `amqp://guest:guest@127.0.0.1:5672/%2f`.

use amqp_blocking::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, Connection, QueueDeclareOptions,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Sends "Hello World!" to `queue` (declared first: declaring is idempotent).
pub fn send(uri: &str, queue: &str) -> Result<(), Error> {
    let conn = Connection::connect(uri)?;
    let channel = conn.open_channel()?;
    channel.queue_declare(queue, QueueDeclareOptions::default())?;
    let props = BasicProperties::default();
    channel.basic_publish(
        "",
        queue,
        BasicPublishOptions::default(),
        &props,
        "Hello World!",
    )?;
    println!(" [x] Sent 'Hello World!'");
    conn.close()?;
    Ok(())
}

/// Prints messages from `queue`; stops after `limit` of them if given.
pub fn receive(uri: &str, queue: &str, limit: Option<usize>) -> Result<Vec<String>, Error> {
    let conn = Connection::connect(uri)?;
    let channel = conn.open_channel()?;
    channel.queue_declare(queue, QueueDeclareOptions::default())?;
    // no_ack: the broker forgets a message as soon as it is delivered.
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = channel.basic_consume(queue, "", options)?;
    println!(" [*] Waiting for messages. To exit press CTRL+C");
    let mut received = Vec::new();
    while limit.is_none_or(|n| received.len() < n) {
        let Some(delivery) = consumer.next() else {
            break;
        };
        let text = String::from_utf8_lossy(&delivery?.body).into_owned();
        println!(" [x] Received {text:?}");
        received.push(text);
    }
    conn.close()?;
    Ok(received)
}

fn main() -> Result<(), Error> {
    let uri = std::env::var("AMQP_URI").unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("send") => send(&uri, "hello"),
        Some("receive") => {
            let limit = args.get(1).map(|n| n.parse()).transpose()?;
            receive(&uri, "hello", limit).map(drop)
        }
        _ => Err("usage: hello_world send | receive [COUNT]".into()),
    }
}
