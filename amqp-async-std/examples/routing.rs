//! RabbitMQ tutorial 4, "Routing": `emit_log_direct` publishes to the direct exchange
//! `direct_logs` with the severity as routing key; `receive_logs_direct` binds its queue once
//! per severity it wants, and gets only those.
//!
//! ```text
//! cargo run -p amqp-async-std --example async_std_routing -- receive_logs_direct warning error
//! cargo run -p amqp-async-std --example async_std_routing -- emit_log_direct error "Run. Run. Or it will explode."
//! ```
//!
//! Add `--limit N` before the severities to stop after N messages.

use amqp_async_std::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, Channel, Connection, Consumer,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use futures_lite::StreamExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Publishes `message` to the direct `exchange` with routing key `severity`.
pub async fn emit(uri: &str, exchange: &str, severity: &str, message: &str) -> Result<(), Error> {
    let conn = Connection::connect(uri).await?;
    let channel = conn.open_channel().await?;
    channel
        .exchange_declare(exchange, "direct", ExchangeDeclareOptions::default())
        .await?;
    let props = BasicProperties::default();
    channel
        .basic_publish(
            exchange,
            severity,
            BasicPublishOptions::default(),
            &props,
            message,
        )
        .await?;
    println!(" [x] Sent {severity}:{message:?}");
    conn.close().await?;
    Ok(())
}

/// Binds a new exclusive queue to `exchange` once per severity and consumes from it.
pub async fn subscribe(
    channel: &Channel,
    exchange: &str,
    severities: &[&str],
) -> Result<Consumer, Error> {
    channel
        .exchange_declare(exchange, "direct", ExchangeDeclareOptions::default())
        .await?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare("", exclusive).await?;
    for severity in severities {
        channel
            .queue_bind(&queue.name, exchange, severity, QueueBindOptions::default())
            .await?;
    }
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    Ok(channel.basic_consume(&queue.name, "", no_ack).await?)
}

/// Prints `routing_key:body` for each message; stops after `limit` if given.
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

// smol here; `async_std::task::block_on` or `#[async_std::main]` work the same way.
fn main() -> Result<(), Error> {
    smol::block_on(run())
}

async fn run() -> Result<(), Error> {
    let uri = std::env::var("AMQP_URI").unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let command = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    match command.as_str() {
        "emit_log_direct" => {
            let severity = args.first().cloned().unwrap_or("info".into());
            let message = args.get(1..).map(|w| w.join(" ")).unwrap_or_default();
            let message = if message.is_empty() { "Hello World!".into() } else { message };
            emit(&uri, "direct_logs", &severity, &message).await
        }
        "receive_logs_direct" => {
            let mut limit = None;
            if args.first().map(String::as_str) == Some("--limit") && args.len() > 1 {
                limit = Some(args[1].parse()?);
                args.drain(..2);
            }
            let severities: Vec<&str> = args.iter().map(String::as_str).collect();
            if severities.is_empty() {
                return Err("usage: routing receive_logs_direct [--limit N] [info] [warning] [error]".into());
            }
            let conn = Connection::connect(&uri).await?;
            let consumer = subscribe(&conn.open_channel().await?, "direct_logs", &severities).await?;
            print_logs(consumer, limit).await?;
            Ok(conn.close().await?)
        }
        _ => Err("usage: routing emit_log_direct SEVERITY [WORDS...] | receive_logs_direct [--limit N] SEVERITY...".into()),
    }
}
