//! RabbitMQ tutorial 3, "Publish/Subscribe": `emit_log` publishes to the fanout exchange
//! `logs`; every `receive_logs` binds a fresh, exclusive queue to it and so gets every message.
//!
//! ```text
//! cargo run -p amqp-async-std --example async_std_publish_subscribe -- receive_logs     # one or more
//! cargo run -p amqp-async-std --example async_std_publish_subscribe -- emit_log info: Hello World!
//! ```

use amqp_async_std::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, Channel, Connection, Consumer,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use futures_lite::StreamExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Publishes `message` to the fanout `exchange` (routing key ignored by fanouts).
pub async fn emit_log(uri: &str, exchange: &str, message: &str) -> Result<(), Error> {
    let conn = Connection::connect(uri).await?;
    let channel = conn.open_channel().await?;
    channel
        .exchange_declare(exchange, "fanout", ExchangeDeclareOptions::default())
        .await?;
    let props = BasicProperties::default();
    channel
        .basic_publish(
            exchange,
            "",
            BasicPublishOptions::default(),
            &props,
            message,
        )
        .await?;
    println!(" [x] Sent {message:?}");
    conn.close().await?;
    Ok(())
}

/// Binds a new server-named, exclusive queue to `exchange` and consumes from it.
pub async fn subscribe(channel: &Channel, exchange: &str) -> Result<Consumer, Error> {
    channel
        .exchange_declare(exchange, "fanout", ExchangeDeclareOptions::default())
        .await?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare("", exclusive).await?;
    channel
        .queue_bind(&queue.name, exchange, "", QueueBindOptions::default())
        .await?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    Ok(channel.basic_consume(&queue.name, "", no_ack).await?)
}

/// Prints what `consumer` receives; stops after `limit` messages if given.
pub async fn print_logs(
    mut consumer: Consumer,
    limit: Option<usize>,
) -> Result<Vec<String>, Error> {
    println!(" [*] Waiting for logs. To exit press CTRL+C");
    let mut logs = Vec::new();
    while limit.is_none_or(|n| logs.len() < n) {
        let Some(delivery) = consumer.next().await else {
            break;
        };
        let text = String::from_utf8_lossy(&delivery?.body).into_owned();
        println!(" [x] {text}");
        logs.push(text);
    }
    Ok(logs)
}

// smol here; `async_std::task::block_on` or `#[async_std::main]` work the same way.
fn main() -> Result<(), Error> {
    smol::block_on(run())
}

async fn run() -> Result<(), Error> {
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
            emit_log(&uri, "logs", &message).await
        }
        Some("receive_logs") => {
            let limit = args.get(1).map(|n| n.parse()).transpose()?;
            let conn = Connection::connect(&uri).await?;
            let consumer = subscribe(&conn.open_channel().await?, "logs").await?;
            print_logs(consumer, limit).await?;
            Ok(conn.close().await?)
        }
        _ => Err("usage: publish_subscribe emit_log [WORDS...] | receive_logs [COUNT]".into()),
    }
}
