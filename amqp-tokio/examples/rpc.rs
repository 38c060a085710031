//! RabbitMQ tutorial 6, "RPC": the server answers Fibonacci requests from `rpc_queue`; the
//! client sends each request with a `reply_to` queue of its own and a `correlation_id`, and
//! waits for the reply that carries the same id.
//!
//! ```text
//! cargo run -p amqp-tokio --example rpc -- server        # add a count to stop after N calls
//! cargo run -p amqp-tokio --example rpc -- client 30
//! ```

use amqp_tokio::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, BasicQosOptions, Channel,
    Connection, QueueDeclareOptions,
};
use futures_util::StreamExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn fib(n: u64) -> u64 {
    (0..n)
        .fold((0u64, 1u64), |(a, b), _| (b, a.saturating_add(b)))
        .0
}

/// Declares `queue` and starts answering: call [`serve`] next. Split in two so that a caller
/// knows when the server is ready.
pub async fn listen(channel: &Channel, queue: &str) -> Result<amqp_tokio::Consumer, Error> {
    channel
        .queue_declare(queue, QueueDeclareOptions::default())
        .await?;
    channel.basic_qos(1, BasicQosOptions::default()).await?;
    let consumer = channel
        .basic_consume(queue, "", BasicConsumeOptions::default())
        .await?;
    println!(" [x] Awaiting RPC requests");
    Ok(consumer)
}

/// Answers requests: the reply goes to the request's `reply_to`, with its `correlation_id`.
pub async fn serve(mut requests: amqp_tokio::Consumer, limit: Option<usize>) -> Result<(), Error> {
    let mut served = 0;
    while limit.is_none_or(|n| served < n) {
        let Some(request) = requests.next().await else {
            break;
        };
        let request = request?;
        let n: u64 = std::str::from_utf8(&request.body)?.trim().parse()?;
        println!(" [.] fib({n})");
        let mut reply = BasicProperties::default();
        if let Some(id) = request.properties.correlation_id() {
            reply = reply.with_correlation_id(id);
        }
        if let Some(reply_to) = request.properties.reply_to() {
            let channel = requests.channel();
            channel
                .basic_publish(
                    "",
                    reply_to,
                    BasicPublishOptions::default(),
                    &reply,
                    fib(n).to_string(),
                )
                .await?;
        }
        request.ack()?;
        served += 1;
    }
    Ok(())
}

/// Calls the server listening on `queue`: `fib(n)`.
pub async fn call(channel: &Channel, queue: &str, n: u64) -> Result<u64, Error> {
    // An exclusive, server-named callback queue, gone when this connection closes.
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let callback = channel.queue_declare("", exclusive).await?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut replies = channel.basic_consume(&callback.name, "", no_ack).await?;

    let correlation_id = format!("{n}-{:?}", std::time::SystemTime::now());
    let props = BasicProperties::default()
        .with_reply_to(callback.name.clone())
        .with_correlation_id(correlation_id.as_str());
    channel
        .basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            &props,
            n.to_string(),
        )
        .await?;
    while let Some(reply) = replies.next().await {
        let reply = reply?;
        if reply.properties.correlation_id() == Some(correlation_id.as_str()) {
            return Ok(std::str::from_utf8(&reply.body)?.parse()?);
        }
    }
    Err("the reply consumer ended before the answer came".into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let uri = std::env::var("AMQP_URI").unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let conn = Connection::connect(&uri).await?;
    let channel = conn.open_channel().await?;
    match args.first().map(String::as_str) {
        Some("server") => {
            let limit = args.get(1).map(|n| n.parse()).transpose()?;
            serve(listen(&channel, "rpc_queue").await?, limit).await?;
        }
        Some("client") => {
            let n = args.get(1).map_or(Ok(30), |n| n.parse())?;
            println!(" [x] Requesting fib({n})");
            println!(" [.] Got {}", call(&channel, "rpc_queue", n).await?);
        }
        _ => return Err("usage: rpc server [COUNT] | client [N]".into()),
    }
    Ok(conn.close().await?)
}
