//! RabbitMQ tutorial 6, "RPC": the server answers Fibonacci requests from `rpc_queue`; the
//! client sends each request with a `reply_to` queue of its own and a `correlation_id`, and
//! waits for the reply that carries the same id.
//!
//! ```text
//! cargo run -p amqp-blocking --example blocking_rpc -- server        # add a count to stop after N calls
//! cargo run -p amqp-blocking --example blocking_rpc -- client 30
//! ```

use amqp_blocking::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, BasicQosOptions, Channel,
    Connection, QueueDeclareOptions,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn fib(n: u64) -> u64 {
    (0..n)
        .fold((0u64, 1u64), |(a, b), _| (b, a.saturating_add(b)))
        .0
}

/// Declares `queue` and starts answering: call [`serve`] next. Split in two so that a caller
/// knows when the server is ready.
pub fn listen(channel: &Channel, queue: &str) -> Result<amqp_blocking::Consumer, Error> {
    channel.queue_declare(queue, QueueDeclareOptions::default())?;
    channel.basic_qos(1, BasicQosOptions::default())?;
    let consumer = channel.basic_consume(queue, "", BasicConsumeOptions::default())?;
    println!(" [x] Awaiting RPC requests");
    Ok(consumer)
}

/// Answers requests: the reply goes to the request's `reply_to`, with its `correlation_id`.
pub fn serve(mut requests: amqp_blocking::Consumer, limit: Option<usize>) -> Result<(), Error> {
    let mut served = 0;
    while limit.is_none_or(|n| served < n) {
        let Some(request) = requests.next() else {
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
            channel.basic_publish(
                "",
                reply_to,
                BasicPublishOptions::default(),
                &reply,
                fib(n).to_string(),
            )?;
        }
        request.ack()?;
        served += 1;
    }
    Ok(())
}

/// Calls the server listening on `queue`: `fib(n)`.
pub fn call(channel: &Channel, queue: &str, n: u64) -> Result<u64, Error> {
    // An exclusive, server-named callback queue, gone when this connection closes.
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let callback = channel.queue_declare("", exclusive)?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let replies = channel.basic_consume(&callback.name, "", no_ack)?;

    let correlation_id = format!("{n}-{:?}", std::time::SystemTime::now());
    let props = BasicProperties::default()
        .with_reply_to(callback.name.clone())
        .with_correlation_id(correlation_id.as_str());
    channel.basic_publish(
        "",
        queue,
        BasicPublishOptions::default(),
        &props,
        n.to_string(),
    )?;
    for reply in replies {
        let reply = reply?;
        if reply.properties.correlation_id() == Some(correlation_id.as_str()) {
            return Ok(std::str::from_utf8(&reply.body)?.parse()?);
        }
    }
    Err("the reply consumer ended before the answer came".into())
}

fn main() -> Result<(), Error> {
    let uri = std::env::var("AMQP_URI").unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let conn = Connection::connect(&uri)?;
    let channel = conn.open_channel()?;
    match args.first().map(String::as_str) {
        Some("server") => {
            let limit = args.get(1).map(|n| n.parse()).transpose()?;
            serve(listen(&channel, "rpc_queue")?, limit)?;
        }
        Some("client") => {
            let n = args.get(1).map_or(Ok(30), |n| n.parse())?;
            println!(" [x] Requesting fib({n})");
            println!(" [.] Got {}", call(&channel, "rpc_queue", n)?);
        }
        _ => return Err("usage: rpc server [COUNT] | client [N]".into()),
    }
    Ok(conn.close()?)
}
