//! Shared vocabulary of the benchmark: scenarios, sizes, connection/run
//! parameters, the measured section (`Timer`) and the `Client` interface that
//! every client adapter implements.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// The scenarios. Every client implements every scenario with the same
/// protocol-level behaviour (see the doc comment on each `Client` method).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    Publish,
    PublishConfirms,
    Consume,
    E2e,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::Publish,
        Scenario::PublishConfirms,
        Scenario::Consume,
        Scenario::E2e,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Publish => "publish",
            Scenario::PublishConfirms => "publish_confirms",
            Scenario::Consume => "consume",
            Scenario::E2e => "e2e",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "publish" => Scenario::Publish,
            "publish_confirms" | "confirms" => Scenario::PublishConfirms,
            "consume" => Scenario::Consume,
            "e2e" => Scenario::E2e,
            _ => bail!("unknown scenario {s:?} (publish, publish_confirms, consume, e2e)"),
        })
    }
}

/// Payload sizes in bytes used by default: 16 B, 1 KiB, 128 KiB.
pub const DEFAULT_SIZES: [usize; 3] = [16, 1024, 128 * 1024];

/// Parses `16`, `1k`, `1KiB`, `128k`, `131072`, ...
pub fn parse_size(s: &str) -> Result<usize> {
    let l = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = l.strip_suffix("kib").or_else(|| l.strip_suffix('k')) {
        (n, 1024)
    } else if let Some(n) = l.strip_suffix("mib").or_else(|| l.strip_suffix('m')) {
        (n, 1024 * 1024)
    } else {
        (l.strip_suffix('b').unwrap_or(&l), 1)
    };
    Ok(num.trim().parse::<usize>()? * mult)
}

pub fn fmt_size(n: usize) -> String {
    if n >= 1024 * 1024 && n.is_multiple_of(1024 * 1024) {
        format!("{} MiB", n / (1024 * 1024))
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

/// Broker address and credentials (plain AMQP, no TLS).
#[derive(Clone, Debug)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub pass: String,
    /// Virtual host, unescaped (e.g. "/").
    pub vhost: String,
}

impl Default for Broker {
    fn default() -> Self {
        Broker {
            host: "127.0.0.1".into(),
            port: 5672,
            user: "guest".into(),
            pass: "guest".into(),
            vhost: "/".into(),
        }
    }
}

impl Broker {
    /// `amqp://user:pass@host:port/vhost` with the vhost percent-encoded.
    pub fn uri(&self) -> String {
        let mut vhost = String::new();
        for b in self.vhost.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                vhost.push(b as char);
            } else {
                vhost.push_str(&format!("%{b:02X}"));
            }
        }
        format!(
            "amqp://{}:{}@{}:{}/{}",
            self.user, self.pass, self.host, self.port, vhost
        )
    }
}

/// Everything a scenario run needs. Identical for all clients.
#[derive(Clone, Debug)]
pub struct Params {
    pub broker: Broker,
    /// Unique per run, chosen by the parent process. The scenario declares it
    /// (non-durable, `x-expires` as a crash safety net); the harness deletes it
    /// afterwards via `Client::delete_queue`, whatever the scenario's outcome.
    pub queue: String,
    /// Message payload (`size` bytes).
    pub payload: Vec<u8>,
    /// Number of messages N.
    pub count: u64,
    /// basic.qos prefetch for consumers.
    pub prefetch: u16,
    /// Maximum number of unconfirmed publishes in `publish_confirms`.
    pub confirm_window: u64,
}

/// `x-expires` (ms) given to every benchmark queue: if a child crashes or is
/// killed before its cleanup, the broker drops the queue once it has been
/// unused for this long.
pub const QUEUE_EXPIRES_MS: i32 = 30 * 60 * 1000;

/// Fixed, recognisable payload bytes.
pub fn make_payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// Peak resident set size of this process in KiB (ru_maxrss, Linux units).
pub fn peak_rss_kib() -> u64 {
    rusage().ru_maxrss as u64
}

/// Resets the kernel's peak-RSS mark (VmHWM, also what ru_maxrss reports for
/// a process none of whose threads exited) to the current RSS. Linux >= 4.0;
/// returns false if not possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Current VmHWM (peak RSS since start or since `reset_peak_rss`) in KiB.
pub fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rusage() -> libc::rusage {
    // SAFETY: getrusage only writes into the zeroed struct we pass it.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        let rc = libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        assert_eq!(rc, 0, "getrusage failed");
        ru
    }
}

/// The process' counters from getrusage(RUSAGE_SELF), all threads (live and
/// exited): CPU time, page faults, context switches.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu: Duration,
    /// Minor page faults (a fresh page mapped, no I/O).
    pub minflt: u64,
    pub majflt: u64,
    /// Voluntary context switches: a thread blocked (read, futex, poll).
    pub nvcsw: u64,
    /// Involuntary ones: a thread preempted.
    pub nivcsw: u64,
}

impl Usage {
    pub fn now() -> Self {
        let ru = rusage();
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
        Usage {
            cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
            minflt: ru.ru_minflt as u64,
            majflt: ru.ru_majflt as u64,
            nvcsw: ru.ru_nvcsw as u64,
            nivcsw: ru.ru_nivcsw as u64,
        }
    }

    fn since(self, earlier: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            minflt: self.minflt.saturating_sub(earlier.minflt),
            majflt: self.majflt.saturating_sub(earlier.majflt),
            nvcsw: self.nvcsw.saturating_sub(earlier.nvcsw),
            nivcsw: self.nivcsw.saturating_sub(earlier.nivcsw),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Mark {
    wall: Instant,
    usage: Usage,
}

impl Mark {
    fn now() -> Self {
        Mark {
            wall: Instant::now(),
            usage: Usage::now(),
        }
    }
}

/// The timed section of a scenario. Each scenario calls `start()` exactly once
/// right before its first timed operation and `stop()` once its completion
/// condition holds; set-up (connect, declare, prefill) and tear-down stay
/// outside.
///
/// Peak RSS: `start()` remembers the peak so far (set-up, prefill) and then
/// resets the kernel's high-water mark, `stop()` reads it again, giving the
/// peak of the timed section alone; the whole-process peak stays available
/// as the max of both.
///
/// Syscall counts: when the parent runs the child under `perf stat`
/// (`crate::perfstat`), `start()` enables its counters and `stop()` disables
/// them, so they cover the timed section only.
#[derive(Debug, Default)]
pub struct Timer {
    start: Option<Mark>,
    stop: Option<Mark>,
    peak_before_kib: u64,
    timed_peak_kib: Option<u64>,
    reset_ok: bool,
}

impl Timer {
    pub fn start(&mut self) {
        assert!(self.start.is_none(), "Timer::start called twice");
        self.peak_before_kib = peak_rss_kib();
        self.reset_ok = reset_peak_rss();
        crate::perfstat::control("enable");
        self.start = Some(Mark::now());
    }

    pub fn stop(&mut self) {
        assert!(self.start.is_some(), "Timer::stop before start");
        assert!(self.stop.is_none(), "Timer::stop called twice");
        self.stop = Some(Mark::now());
        crate::perfstat::control("disable");
        if self.reset_ok {
            self.timed_peak_kib = vm_hwm_kib();
        }
    }

    /// Peak RSS (KiB) of the timed section, if the platform allows measuring it.
    pub fn timed_peak_kib(&self) -> Option<u64> {
        self.timed_peak_kib
    }

    /// Peak RSS (KiB) over the whole process so far.
    pub fn process_peak_kib(&self) -> u64 {
        // (kernel RSS counters are approximate; keep it >= the timed peak)
        self.peak_before_kib
            .max(peak_rss_kib())
            .max(self.timed_peak_kib.unwrap_or(0))
    }

    /// (wall time, process counters) of the timed section.
    pub fn elapsed(&self) -> Result<(Duration, Usage)> {
        match (self.start, self.stop) {
            (Some(a), Some(b)) => Ok((b.wall - a.wall, b.usage.since(a.usage))),
            _ => bail!("scenario did not call Timer::start/stop"),
        }
    }
}

/// One measurement, printed by the child as a single JSON line prefixed with
/// `RESULT_PREFIX`, parsed by the parent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    pub client: String,
    pub scenario: String,
    pub size: usize,
    pub count: u64,
    pub secs: f64,
    pub msgs_per_sec: f64,
    pub cpu_us_per_msg: f64,
    /// Peak RSS of the child process over its whole life (incl. set-up and
    /// prefill), KiB: ru_maxrss, combined with the value saved before the
    /// high-water mark was reset at the start of the timed section.
    pub peak_rss_kib: u64,
    /// Peak RSS during the timed section only (VmHWM after resetting it via
    /// /proc/self/clear_refs at `Timer::start`), KiB; None if unsupported.
    #[serde(default)]
    pub timed_peak_rss_kib: Option<u64>,
    /// Per message, over the timed section, from getrusage: minor + major
    /// page faults, voluntary and involuntary context switches.
    #[serde(default)]
    pub faults_per_msg: f64,
    #[serde(default)]
    pub vcsw_per_msg: f64,
    #[serde(default)]
    pub ivcsw_per_msg: f64,
    /// Per message, over the timed section, counted by `perf stat` (filled
    /// in by the parent; None without perf): all syscalls, the socket
    /// reads (read, readv, recvfrom, recvmsg), writes (write, writev, sendto,
    /// sendmsg) and futex calls (lock hand-offs and thread wake-ups).
    #[serde(default)]
    pub syscalls_per_msg: Option<f64>,
    #[serde(default)]
    pub reads_per_msg: Option<f64>,
    #[serde(default)]
    pub writes_per_msg: Option<f64>,
    #[serde(default)]
    pub futex_per_msg: Option<f64>,
    /// Which broker: "rabbitmq" or "fake".
    #[serde(default)]
    pub broker: String,
}

pub const RESULT_PREFIX: &str = "BENCH_RESULT ";

/// A client library under test. One implementation per library, in
/// `src/clients/`. All functions are associated (no `self`): each scenario
/// opens its own connection(s) and closes them when done.
///
/// Rules shared by every implementation, so the numbers are comparable:
/// * Use the library the way its docs suggest for a tokio application; no
///   private tuning beyond what is listed here.
/// * Queue: `p.queue`, declared non-durable, non-exclusive, non-auto-delete,
///   with `x-expires = QUEUE_EXPIRES_MS`. Default exchange, routing key = queue.
/// * Messages: `p.payload`, default (empty) basic properties, not mandatory.
/// * Everything, including set-up that is not timed, goes through this client.
///
/// The futures must be `Send`: the harness spawns them on the 2-worker tokio
/// runtime so that every client runs on exactly the same runtime.
pub trait Client {
    /// `publish`: declare the queue, then timed: publish N messages without
    /// confirms, one after the other, each awaited as the library's API
    /// returns it; then, still timed, repeat queue.declare(passive) on the
    /// publishing channel until it reports message_count == N (first reply
    /// normally suffices since the broker handles a channel's frames in order;
    /// retries sleep 1 ms).
    fn publish(p: &Params, t: &mut Timer) -> impl Future<Output = Result<()>> + Send;

    /// `publish_confirms`: declare the queue, confirm.select, then timed:
    /// publish N messages while keeping at most `p.confirm_window`
    /// unconfirmed; stop when all N are confirmed. Any nack is an error.
    fn publish_confirms(p: &Params, t: &mut Timer) -> impl Future<Output = Result<()>> + Send;

    /// `consume`: declare the queue and prefill it with N messages (as in
    /// `publish`, untimed, waiting until message_count == N), basic.qos
    /// (prefetch `p.prefetch`), then timed: basic.consume (manual ack),
    /// receive N deliveries and basic.ack each one individually, then one
    /// synchronous queue.declare(passive) on the consuming channel, whose
    /// reply proves that the broker has processed all acks.
    fn consume(p: &Params, t: &mut Timer) -> impl Future<Output = Result<()>> + Send;

    /// `e2e`: two connections. Declare the queue; the consumer connection
    /// does basic.qos(prefetch) + basic.consume (manual ack) and a task
    /// receives and acks deliveries one by one. Timed: from the first
    /// publish (no confirms) on the publisher connection until the consumer
    /// task has received (and sent the ack for) all N messages.
    fn e2e(p: &Params, t: &mut Timer) -> impl Future<Output = Result<()>> + Send;

    /// Delete `p.queue` (idempotent). Called by the harness after every
    /// scenario, on a fresh connection, also when the scenario failed.
    fn delete_queue(p: &Params) -> impl Future<Output = Result<()>> + Send;
}

/// Runs one scenario of client `C`, always deleting the queue afterwards.
pub async fn run_scenario<C: Client>(scenario: Scenario, p: &Params) -> Result<Timer> {
    let mut t = Timer::default();
    let res = match scenario {
        Scenario::Publish => C::publish(p, &mut t).await,
        Scenario::PublishConfirms => C::publish_confirms(p, &mut t).await,
        Scenario::Consume => C::consume(p, &mut t).await,
        Scenario::E2e => C::e2e(p, &mut t).await,
    };
    let cleanup = C::delete_queue(p).await;
    res?;
    if let Err(e) = cleanup {
        eprintln!("warning: deleting queue {} failed: {e:#}", p.queue);
    }
    Ok(t)
}
