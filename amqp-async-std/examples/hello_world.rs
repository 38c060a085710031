//! RabbitMQ tutorial 1, "Hello World!": a producer sends one message to the queue `hello`; a
//! consumer prints what arrives there.
//!
//! ```text
//! cargo run -p amqp-async-std --example async_std_hello_world -- receive     # Ctrl-C to stop
//! cargo run -p amqp-async-std --example async_std_hello_world -- send
//! cargo run -p amqp-async-std --example async_std_hello_world -- receive 1   # stop after one message
//! ```
//!
//! The broker is `$AMQP_URI`, else `amqp://guest:guest@127.0.0.1:5672/%2f`.

use amqp_async_std::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, Connection, QueueDeclareOptions,
};
use futures_lite::StreamExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Sends "Hello World!" to `queue` (declared first: declaring is idempotent).
pub async fn send(uri: &str, queue: &str) -> Result<(), Error> {
    let conn = Connection::connect(uri).await?;
    let channel = conn.open_channel().await?;
    channel
        .queue_declare(queue, QueueDeclareOptions::default())
        .await?;
    let props = BasicProperties::default();
    channel
        .basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            &props,
            "Hello World!",
        )
        .await?;
    println!(" [x] Sent 'Hello World!'");
    conn.close().await?;
    Ok(())
}

/// Prints messages from `queue`; stops after `limit` of them if given.
pub async fn receive(uri: &str, queue: &str, limit: Option<usize>) -> Result<Vec<String>, Error> {
    let conn = Connection::connect(uri).await?;
    let channel = conn.open_channel().await?;
    channel
        .queue_declare(queue, QueueDeclareOptions::default())
        .await?;
    // no_ack: the broker forgets a message as soon as it is delivered.
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = channel.basic_consume(queue, "", options).await?;
    println!(" [*] Waiting for messages. To exit press CTRL+C");
    let mut received = Vec::new();
    while limit.is_none_or(|n| received.len() < n) {
        let Some(delivery) = consumer.next().await else {
            break;
        };
        let text = String::from_utf8_lossy(&delivery?.body).into_owned();
        println!(" [x] Received {text:?}");
        received.push(text);
    }
    conn.close().await?;
    Ok(received)
}

// smol here; `async_std::task::block_on` or `#[async_std::main]` work the same way.
fn main() -> Result<(), Error> {
    smol::block_on(run())
}

async fn run() -> Result<(), Error> {
    let uri = std::env::var("AMQP_URI").unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("send") => send(&uri, "hello").await,
        Some("receive") => {
            let limit = args.get(1).map(|n| n.parse()).transpose()?;
            receive(&uri, "hello", limit).await.map(drop)
        }
        _ => Err("usage: hello_world send | receive [COUNT]".into()),
    }
}
