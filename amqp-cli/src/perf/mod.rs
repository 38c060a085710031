//! `amqp perf`: producers and consumers against a broker (or the in-process sink), a live
//! line a second and a summary; `--json` for machines.
//!
//! # JSON schema (stable; one object per line on stdout)
//!
//! Every second: `{"type":"tick","elapsed_s":F,"sent":N,"confirmed":N,"nacked":N,
//! "returned":N,"received":N,"sent_rate":F,"confirmed_rate":F,"received_rate":F,
//! "latency_us":{"p50":N,"p95":N,"p99":N,"max":N}|null}` — counts are totals since the
//! start, rates are per second over the last interval, latency is over the last interval.
//!
//! At the end: `{"type":"summary","runtime":S,"target":"broker"|"sink","producers":N,
//! "consumers":N,"size":N,"confirm_window":N|null,"elapsed_s":F,"sent":N,"confirmed":N,
//! "nacked":N,"returned":N,"received":N,"sent_rate":F,"confirmed_rate":F,"received_rate":F,
//! "latency_us":{..}|null,"cpu_s":F|null,"sink_cpu_s":F|null,"msgs_per_client_cpu_s":F|null,
//! "interrupted":B}` — rates over the whole run, latency over the whole run, `cpu_s` the
//! client's CPU time (the process less the sink's thread), `msgs_per_client_cpu_s` the
//! messages moved (sent + received) per second of client CPU: the msgs/s per core.

mod async_run;
mod blocking_run;
mod report;
mod stats;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use amqp_client::{BasicProperties, FieldTable};
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Args, ValueEnum};

use crate::error::CliError;
use crate::sink;
pub use report::Summary;
pub use stats::{Counts, Latency, Role, Stats};

/// Which adapter the run goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Runtime {
    /// amqp-tokio on a multi-threaded tokio runtime.
    Tokio,
    /// amqp-async-std with async-std tasks.
    AsyncStd,
    /// amqp-blocking with one thread per producer and consumer.
    Blocking,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::AsyncStd => "async-std",
            Runtime::Blocking => "blocking",
        }
    }
}

/// Queue type for the declared queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueType {
    Classic,
    Quorum,
}

/// Options of `amqp perf`.
#[derive(Debug, Clone, Args)]
pub struct PerfArgs {
    /// Broker URI; repeat for a cluster (connections are spread over them in turn).
    #[arg(long = "uri", default_value = crate::DEFAULT_URI)]
    pub uris: Vec<String>,
    /// Run against an in-process fake broker on loopback (no RabbitMQ): the client's ceiling.
    #[arg(long)]
    pub sink: bool,
    /// The adapter to measure.
    #[arg(long, value_enum, default_value_t = Runtime::Tokio)]
    pub runtime: Runtime,
    /// Number of producers (one channel each).
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: usize,
    /// Number of consumers (one channel each).
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,
    /// Message size in bytes (the first 8 carry the send time, for latency).
    #[arg(short = 's', long, default_value_t = 12)]
    pub size: usize,
    /// Publish rate limit per producer, messages per second (0: unlimited).
    #[arg(short = 'r', long, default_value_t = 0)]
    pub rate: u32,
    /// Publisher confirms with at most this many unconfirmed messages per producer.
    #[arg(short = 'c', long = "confirm")]
    pub confirm: Option<usize>,
    /// Consumer prefetch (basic.qos; 0: unlimited).
    #[arg(short = 'q', long = "qos", default_value_t = 500)]
    pub prefetch: u16,
    /// Acknowledge every N messages with one multiple ack.
    #[arg(short = 'A', long = "multi-ack-every", default_value_t = 1)]
    pub multi_ack: u32,
    /// Consume with no_ack (the broker does not wait for acks).
    #[arg(short = 'a', long)]
    pub autoack: bool,
    /// Publish persistent messages (delivery_mode 2) to a durable queue.
    #[arg(short = 'f', long)]
    pub persistent: bool,
    /// Publish with the mandatory flag (unroutable messages come back as returns).
    #[arg(long)]
    pub mandatory: bool,
    /// Queue name (default: `amqp-perf-<pid>-<start time>`, deleted at the end).
    #[arg(short = 'u', long)]
    pub queue: Option<String>,
    /// Exchange to publish to (declared as direct if not the default exchange).
    #[arg(short = 'e', long, default_value = "")]
    pub exchange: String,
    /// Routing key (default: the queue name).
    #[arg(short = 'k', long)]
    pub routing_key: Option<String>,
    /// Queue type.
    #[arg(long, value_enum, default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,
    /// Run for this many seconds.
    #[arg(short = 'z', long = "time")]
    pub time: Option<u64>,
    /// Each producer publishes this many messages, then the run drains and ends.
    #[arg(short = 'C', long = "pmessages")]
    pub count: Option<u64>,
    /// Connections shared by the producers.
    #[arg(long, default_value_t = 1)]
    pub producer_connections: usize,
    /// Connections shared by the consumers.
    #[arg(long, default_value_t = 1)]
    pub consumer_connections: usize,
    /// Print one JSON object per second and a summary instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What every role needs, worked out once from the arguments.
#[derive(Debug)]
pub struct Plan {
    pub args: PerfArgs,
    pub uris: Vec<String>,
    pub queue: String,
    pub routing_key: String,
    /// Whether this run created the queue and deletes it at the end.
    pub owns_queue: bool,
    pub properties: BasicProperties,
    pub queue_arguments: FieldTable,
    template: Bytes,
}

impl Plan {
    /// A message body: the template with the current time stamped in its first 8 bytes.
    pub fn body(&self, stats: &Stats) -> Bytes {
        if self.template.len() < 8 {
            return self.template.clone();
        }
        let mut body = BytesMut::with_capacity(self.template.len());
        body.put_u64(stats.now_nanos());
        body.extend_from_slice(&self.template[8..]);
        body.freeze()
    }

    /// The URI of the `i`-th connection.
    pub fn uri(&self, i: usize) -> &str {
        &self.uris[i % self.uris.len()]
    }

    /// Messages between two multiple acks: never more than the prefetch allows.
    pub fn ack_every(&self) -> u32 {
        let every = self.args.multi_ack.max(1);
        match self.args.prefetch {
            0 => every,
            q => every.min(u32::from(q)),
        }
    }
}

/// Runs `amqp perf`; returns the summary (already printed).
pub fn run(args: PerfArgs) -> Result<Summary, CliError> {
    let sink = if args.sink {
        Some(sink::start().map_err(|e| CliError::other(format!("cannot start the sink: {e}")))?)
    } else {
        None
    };
    let uris = match &sink {
        Some(s) => vec![format!("amqp://guest:guest@{}/%2f", s.addr)],
        None => args.uris.clone(),
    };
    let owns_queue = args.queue.is_none();
    let queue = args.queue.clone().unwrap_or_else(default_queue_name);
    let routing_key = args.routing_key.clone().unwrap_or_else(|| queue.clone());
    let mut properties = BasicProperties::default();
    if args.persistent {
        properties = properties.with_delivery_mode(2);
    }
    let queue_arguments = match args.queue_type {
        QueueType::Classic => FieldTable::new(),
        QueueType::Quorum => FieldTable::new().with("x-queue-type", "quorum"),
    };
    let template = Bytes::from(vec![0u8; args.size]);
    let plan = Arc::new(Plan {
        args,
        uris,
        queue,
        routing_key,
        owns_queue,
        properties,
        queue_arguments,
        template,
    });
    let stats = Arc::new(Stats::new(plan.args.producers));
    install_ctrl_c(&stats);
    let reporter = report::Reporter::start(plan.clone(), stats.clone());
    let timer = plan.args.time.map(|secs| {
        let stats = stats.clone();
        std::thread::spawn(move || {
            let deadline = stats.epoch + Duration::from_secs(secs);
            while !stats.stop.load(Relaxed) {
                let now = std::time::Instant::now();
                if now >= deadline {
                    stats.stop.store(true, Relaxed);
                    break;
                }
                std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
            }
        })
    });
    let result = match plan.args.runtime {
        Runtime::Tokio => async_run::run_tokio(plan.clone(), stats.clone()),
        Runtime::AsyncStd => async_run::run_async_std(plan.clone(), stats.clone()),
        Runtime::Blocking => blocking_run::run(plan.clone(), stats.clone()),
    };
    stats.stop.store(true, Relaxed);
    if let Some(t) = timer {
        let _ = t.join();
    }
    let sink_cpu = sink.and_then(sink::SinkHandle::stop);
    let summary = reporter.finish(sink_cpu);
    result.map(|()| summary)
}

fn install_ctrl_c(stats: &Arc<Stats>) {
    let stats = stats.clone();
    // A second handler cannot be installed in the same process (tests call `run` once).
    let _ = ctrlc::set_handler(move || {
        stats.interrupted.store(true, Relaxed);
        if stats.stop.swap(true, Relaxed) {
            stats.abort.store(true, Relaxed);
        }
    });
}

/// A queue name no other run uses: the process id alone is not enough, because a run that was
/// killed leaves its queue (and messages) behind, and a later process may get the same id.
fn default_queue_name() -> String {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "amqp-perf-{}-{:x}",
        std::process::id(),
        since_epoch.as_nanos() & 0xffff_ffff_ffff
    )
}

/// The declare of the run's queue: durable when messages are persistent or the queue is a
/// quorum queue (which must be durable).
fn queue_declare(plan: &Plan) -> (amqp_client::QueueDeclareOptions, FieldTable) {
    let options = amqp_client::QueueDeclareOptions {
        durable: plan.args.persistent || plan.args.queue_type == QueueType::Quorum,
        ..Default::default()
    };
    (options, plan.queue_arguments.clone())
}

fn exchange_declare(plan: &Plan) -> amqp_client::ExchangeDeclareOptions {
    amqp_client::ExchangeDeclareOptions {
        durable: plan.args.persistent,
        ..Default::default()
    }
}

/// Keeps a producer at its rate limit: message `n` is due `n / rate` seconds after the start.
struct Pacer {
    start: std::time::Instant,
    rate: u32,
}

impl Pacer {
    fn new(rate: u32) -> Self {
        Pacer {
            start: std::time::Instant::now(),
            rate,
        }
    }

    /// How long to wait before message `n`, if it is not due yet (at most 100 ms at a time,
    /// so a stop is noticed).
    fn wait(&mut self, n: u64) -> Option<Duration> {
        if self.rate == 0 {
            return None;
        }
        let due = self.start + Duration::from_secs_f64(n as f64 / f64::from(self.rate));
        let now = std::time::Instant::now();
        (due > now).then(|| (due - now).min(Duration::from_millis(100)))
    }
}

/// Checks one publisher confirm: a lost confirm (the channel or connection closed) is the
/// run's error. (The connection counts acks, nacks and returns itself.)
fn check_confirmation(confirmation: &amqp_client::Confirmation) -> Result<(), amqp_client::Error> {
    match confirmation {
        amqp_client::Confirmation::Lost(e) => Err(e.clone()),
        _ => Ok(()),
    }
}
