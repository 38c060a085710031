//! RabbitMQ tutorial 5, "Topics": `emit_log_topic` publishes to the topic exchange
//! `topic_logs` with a dotted routing key (`<facility>.<severity>`); `receive_logs_topic` binds
//! its queue with patterns, where `*` matches one word and `#` zero or more.
//!
//! ```text
//! cargo run -p amqp-blocking --example blocking_topics -- receive_logs_topic "kern.*" "*.critical"
//! cargo run -p amqp-blocking --example blocking_topics -- emit_log_topic kern.critical "A critical kernel error"
//! ```
//!
//! Add `--limit N` before the binding keys to stop after N messages.

use amqp_blocking::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, Channel, Connection, Consumer,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Publishes `message` to the topic `exchange` with routing key `routing_key`.
pub fn emit(uri: &str, exchange: &str, routing_key: &str, message: &str) -> Result<(), Error> {
    let conn = Connection::connect(uri)?;
    let channel = conn.open_channel()?;
    channel.exchange_declare(exchange, "topic", ExchangeDeclareOptions::default())?;
    let props = BasicProperties::default();
    channel.basic_publish(
        exchange,
        routing_key,
        BasicPublishOptions::default(),
        &props,
        message,
    )?;
    println!(" [x] Sent {routing_key}:{message:?}");
    conn.close()?;
    Ok(())
}

/// Binds a new exclusive queue to `exchange` once per binding key and consumes from it.
pub fn subscribe(
    channel: &Channel,
    exchange: &str,
    binding_keys: &[&str],
) -> Result<Consumer, Error> {
    channel.exchange_declare(exchange, "topic", ExchangeDeclareOptions::default())?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare("", exclusive)?;
    for key in binding_keys {
        channel.queue_bind(&queue.name, exchange, key, QueueBindOptions::default())?;
    }
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    Ok(channel.basic_consume(&queue.name, "", no_ack)?)
}

/// Prints `routing_key:body` for each message; stops after `limit` if given.
pub fn print_logs(mut consumer: Consumer, limit: Option<usize>) -> Result<Vec<String>, Error> {
    println!(" [*] Waiting for logs. To exit press CTRL+C");
    let mut logs = Vec::new();
    while limit.is_none_or(|n| logs.len() < n) {
        let Some(delivery) = consumer.next() else {
            break;
        };
        let delivery = delivery?;
        let line = format!(
            "{}:{}",
            delivery.routing_key,
            String::from_utf8_lossy(&delivery.body)
        );
        println!(" [x] {line}");
        logs.push(line);
    }
    Ok(logs)
}

fn main() -> Result<(), Error> {
    let uri = std::env::var("AMQP_URI").unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let command = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    match command.as_str() {
        "emit_log_topic" => {
            let routing_key = args.first().cloned().unwrap_or("anonymous.info".into());
            let message = args.get(1..).map(|w| w.join(" ")).unwrap_or_default();
            let message = if message.is_empty() { "Hello World!".into() } else { message };
            emit(&uri, "topic_logs", &routing_key, &message)
        }
        "receive_logs_topic" => {
            let mut limit = None;
            if args.first().map(String::as_str) == Some("--limit") && args.len() > 1 {
                limit = Some(args[1].parse()?);
                args.drain(..2);
            }
            let keys: Vec<&str> = args.iter().map(String::as_str).collect();
            if keys.is_empty() {
                return Err("usage: topics receive_logs_topic [--limit N] BINDING_KEY...".into());
            }
            let conn = Connection::connect(&uri)?;
            let consumer = subscribe(&conn.open_channel()?, "topic_logs", &keys)?;
            print_logs(consumer, limit)?;
            Ok(conn.close()?)
        }
        _ => Err("usage: topics emit_log_topic ROUTING_KEY [WORDS...] | receive_logs_topic [--limit N] BINDING_KEY...".into()),
    }
}
