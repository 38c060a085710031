//! The demo: publish messages with publisher confirms, consume them with manual acks, and
//! report the throughput.
//!
//! ```text
//! cargo run --release -p amqp-demo -- [URI] [MESSAGES]      (what ./scripts/demo.sh runs)
//! ```
//!
//! URI defaults to `$AMQP_URI`, then `amqp://guest:guest@127.0.0.1:5672/%2f`; MESSAGES to
//! 100000 (bodies are 64 bytes).

use std::time::{Duration, Instant};

use amqp_tokio::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, Confirmation, Connection, QueueDeclareOptions, QueueDeleteOptions,
};
use futures_util::StreamExt;

const DEFAULT_URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const BODY_SIZE: usize = 64;
/// Publishes awaited in flight at most before waiting for the oldest confirm.
const CONFIRM_WINDOW: usize = 4096;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let uri = args
        .next()
        .or_else(|| std::env::var("AMQP_URI").ok())
        .filter(|uri| !uri.is_empty())
        .unwrap_or_else(|| DEFAULT_URI.to_owned());
    let count: usize = match args.next() {
        Some(n) => n.parse().map_err(|_| format!("not a message count: {n}"))?,
        None => 100_000,
    };

    let shown = amqp_tokio::AmqpUri::parse(&uri)?.to_string();
    println!("1. connecting to {shown}");
    let t = Instant::now();
    let conn = Connection::connect(&uri).await?;
    let product = conn
        .server_properties()
        .get("product")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let version = conn
        .server_properties()
        .get("version")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let tuning = conn.tuning();
    println!(
        "   connected in {:.1} ms to {product} {version} (frame_max {}, heartbeat {} s)",
        ms(t.elapsed()),
        tuning.frame_max,
        tuning.heartbeat
    );

    let channel = conn.open_channel().await?;
    let queue = channel
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
        )
        .await?;
    println!(
        "2. opened channel {} and declared temporary queue {}",
        channel.id().0,
        queue.name.as_str()
    );

    // ----- publish with confirms -----
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    println!("3. publishing {count} messages of {BODY_SIZE} bytes with publisher confirms");
    let body = bytes::Bytes::from(vec![b'x'; BODY_SIZE]);
    let properties = BasicProperties::default().with_content_type("application/octet-stream");
    let cpu = CpuClock::start();
    let t = Instant::now();
    let mut in_flight = std::collections::VecDeque::with_capacity(CONFIRM_WINDOW);
    let (mut acked, mut nacked, mut lost) = (0usize, 0usize, 0usize);
    let mut tally = |c: Confirmation| match c {
        Confirmation::Ack(_) => acked += 1,
        Confirmation::Nack(_) => nacked += 1,
        Confirmation::Lost(_) | Confirmation::NotRequested => lost += 1,
    };
    let mut progress = Progress::new("published", count);
    for _ in 0..count {
        progress.step();
        if in_flight.len() == CONFIRM_WINDOW {
            if let Some(confirm) = in_flight.pop_front() {
                tally(confirm.await);
            }
        }
        let confirm = channel
            .basic_publish(
                "",
                &queue.name,
                BasicPublishOptions::default(),
                &properties,
                body.clone(),
            )
            .await?;
        in_flight.push_back(confirm);
    }
    for confirm in in_flight {
        tally(confirm.await);
    }
    let publish_time = t.elapsed();
    let publish_cpu = cpu.elapsed();
    println!(
        "   {acked} acked, {nacked} nacked, {lost} lost in {:.0} ms: {:.0} msgs/s{}",
        ms(publish_time),
        rate(count, publish_time),
        per_message(publish_cpu, count)
    );
    if acked != count {
        return Err(format!("only {acked} of {count} publishes were acked").into());
    }

    // ----- consume with manual acks -----
    println!("4. consuming them with manual acks (prefetch 1000)");
    channel.basic_qos(1000, BasicQosOptions::default()).await?;
    let cpu = CpuClock::start();
    let t = Instant::now();
    let mut consumer = channel
        .basic_consume(&queue.name, "demo", BasicConsumeOptions::default())
        .await?;
    let mut received = 0usize;
    let mut bytes = 0usize;
    let mut progress = Progress::new("received", count);
    while received < count {
        progress.step();
        let delivery = match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
            Ok(Some(delivery)) => delivery?,
            Ok(None) => return Err("the consumer ended early".into()),
            Err(_) => return Err(format!("no delivery for 10 s after {received}").into()),
        };
        bytes += delivery.body.len();
        delivery.ack()?;
        received += 1;
    }
    let consume_time = t.elapsed();
    let consume_cpu = cpu.elapsed();
    println!(
        "   {received} received ({bytes} body bytes) and acked in {:.0} ms: {:.0} msgs/s{}",
        ms(consume_time),
        rate(count, consume_time),
        per_message(consume_cpu, count)
    );

    // ----- clean up -----
    consumer.cancel().await?;
    while let Some(rest) = consumer.next().await {
        rest?.ack()?;
    }
    let left = channel
        .queue_delete(&queue.name, QueueDeleteOptions::default())
        .await?;
    channel.close().await?;
    conn.close().await?;
    println!("5. cancelled the consumer, deleted the queue ({left} messages left), closed");
    println!(
        "summary: publish+confirm {:.0} msgs/s, consume+ack {:.0} msgs/s ({count} messages)",
        rate(count, publish_time),
        rate(count, consume_time)
    );
    Ok(())
}

/// A live count, printed about twice a second on one line.
struct Progress {
    what: &'static str,
    done: usize,
    total: usize,
    started: Instant,
    shown: Instant,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Self {
        let now = Instant::now();
        Progress {
            what,
            done: 0,
            total,
            started: now,
            shown: now,
        }
    }

    fn step(&mut self) {
        use std::io::Write;
        self.done += 1;
        // Checking the clock every 1024 messages keeps this off the measured path.
        if self.done % 1024 == 0 && self.shown.elapsed() >= Duration::from_millis(500) {
            self.shown = Instant::now();
            print!(
                "\r   {} {}/{} ({:.0} msgs/s)   ",
                self.what,
                self.done,
                self.total,
                rate(self.done, self.started.elapsed())
            );
            let _ = std::io::stdout().flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // Clear the live line so the summary starts clean.
        if self.shown != self.started {
            print!("\r{:60}\r", "");
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn rate(count: usize, d: Duration) -> f64 {
    count as f64 / d.as_secs_f64().max(1e-9)
}

fn per_message(cpu: Option<Duration>, count: usize) -> String {
    match cpu {
        Some(cpu) if count > 0 => format!(
            ", client CPU {:.2} µs/msg",
            cpu.as_secs_f64() * 1e6 / count as f64
        ),
        _ => String::new(),
    }
}

/// This process's CPU time (user + system, all threads), where `/proc` tells it.
struct CpuClock(Option<Duration>);

impl CpuClock {
    fn start() -> Self {
        CpuClock(process_cpu())
    }

    fn elapsed(&self) -> Option<Duration> {
        Some(process_cpu()?.saturating_sub(self.0?))
    }
}

fn process_cpu() -> Option<Duration> {
    // /proc/self/stat: fields 14 and 15 (utime, stime) in clock ticks, after the ")" that
    // closes the command name. Ticks are 1/100 s on Linux.
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}
