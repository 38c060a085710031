//! RabbitMQ tutorial 3, "Publish/Subscribe": `emit_log` publishes to the fanout exchange
//! `logs`; every `receive_logs` binds a fresh, exclusive queue to it and so gets every message.
//!
//! ```text
//! cargo run -p amqp-blocking --example blocking_publish_subscribe -- receive_logs     # one or more
//! cargo run -p amqp-blocking --example blocking_publish_subscribe -- emit_log info: Hello World!
//! ```

use amqp_blocking::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, Channel, Connection, Consumer,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Publishes `message` to the fanout `exchange` (routing key ignored by fanouts).
pub fn emit_log(uri: &str, exchange: &str, message: &str) -> Result<(), Error> {
    let conn = Connection::connect(uri)?;
    let channel = conn.open_channel()?;
    channel.exchange_declare(exchange, "fanout", ExchangeDeclareOptions::default())?;
    let props = BasicProperties::default();
    channel.basic_publish(
        exchange,
        "",
        BasicPublishOptions::default(),
        &props,
        message,
    )?;
    println!(" [x] Sent {message:?}");
    conn.close()?;
    Ok(())
}

/// Binds a new server-named, exclusive queue to `exchange` and consumes from it.
pub fn subscribe(channel: &Channel, exchange: &str) -> Result<Consumer, Error> {
    channel.exchange_declare(exchange, "fanout", ExchangeDeclareOptions::default())?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare("", exclusive)?;
    channel.queue_bind(&queue.name, exchange, "", QueueBindOptions::default())?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    Ok(channel.basic_consume(&queue.name, "", no_ack)?)
}

/// Prints what `consumer` receives; stops after `limit` messages if given.
pub fn print_logs(mut consumer: Consumer, limit: Option<usize>) -> Result<Vec<String>, Error> {
    println!(" [*] Waiting for logs. To exit press CTRL+C");
    let mut logs = Vec::new();
    while limit.is_none_or(|n| logs.len() < n) {
        let Some(delivery) = consumer.next() else {
            break;
        };
        let text = String::from_utf8_lossy(&delivery?.body).into_owned();
        println!(" [x] {text}");
        logs.push(text);
    }
    Ok(logs)
}

fn main() -> Result<(), Error> {
    let uri = std::env::var("AMQP_URI").unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("emit_log") => {
            let message = args[1..].join(" ");
            let message = if message.is_empty() {
                "info: Hello World!".into()
            } else {
                message
            };
            emit_log(&uri, "logs", &message)
        }
        Some("receive_logs") => {
            let limit = args.get(1).map(|n| n.parse()).transpose()?;
            let conn = Connection::connect(&uri)?;
            let consumer = subscribe(&conn.open_channel()?, "logs")?;
            print_logs(consumer, limit)?;
            Ok(conn.close()?)
        }
        _ => Err("usage: publish_subscribe emit_log [WORDS...] | receive_logs [COUNT]".into()),
    }
}
