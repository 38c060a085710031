//! What a perf run counts and measures, shared by its producers, consumers and reporter.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use amqp_client::Metrics;
use hdrhistogram::Histogram;
use serde::Serialize;

/// What one run measures. Message counts are the connections' own counters
/// (`Connection::metrics`), summed: publishes, confirms and returns from the producers'
/// connections, deliveries from the consumers'. Latency is measured here, from the send time
/// stamped in each body.
pub struct Stats {
    /// Time zero of the run; bodies carry nanoseconds since it.
    pub epoch: Instant,
    /// The connections' metrics, by role.
    sources: Mutex<Vec<(Role, MetricsSource)>>,
    /// Set by Ctrl-C or the end of the run's duration: producers stop publishing.
    pub stop: AtomicBool,
    /// Set by a second Ctrl-C: consumers stop without draining.
    pub abort: AtomicBool,
    /// Set by Ctrl-C.
    pub interrupted: AtomicBool,
    /// Producers still publishing or waiting for confirms.
    pub producers_running: AtomicUsize,
    /// Nanoseconds since `epoch` of the last delivery (for the drain's idle timeout).
    pub last_delivery: AtomicU64,
    interval: Mutex<Histogram<u64>>,
    total: Mutex<Histogram<u64>>,
}

/// How long consumers keep waiting for the last messages once producers are done.
pub const DRAIN_IDLE: Duration = Duration::from_secs(3);

fn histogram() -> Histogram<u64> {
    // Microseconds, up to one hour, 3 significant figures.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Stats {
    pub fn new(producers: usize) -> Self {
        Stats {
            epoch: Instant::now(),
            sources: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
            producers_running: AtomicUsize::new(producers),
            last_delivery: AtomicU64::new(0),
            interval: Mutex::new(histogram()),
            total: Mutex::new(histogram()),
        }
    }

    pub fn now_nanos(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Records a delivery whose body starts with the send time (nanoseconds since `epoch`).
    pub fn record_delivery(&self, body: &[u8]) {
        let now = self.now_nanos();
        self.last_delivery.store(now, Relaxed);
        if let Some(stamp) = body.get(..8) {
            let sent = u64::from_be_bytes(stamp.try_into().expect("8 bytes"));
            let micros = now.saturating_sub(sent) / 1000;
            let _ = lock(&self.interval).record(micros.max(1));
        }
    }

    /// Whether consumers are done: aborted, or producers finished and everything that could
    /// arrive has (or nothing arrived for [`DRAIN_IDLE`]).
    pub fn consumers_done(&self, has_producers: bool) -> bool {
        if self.abort.load(Relaxed) {
            return true;
        }
        if !has_producers {
            return self.stop.load(Relaxed);
        }
        // Producers end on a stop, a message count or an error.
        if self.producers_running.load(Relaxed) > 0 {
            return false;
        }
        let c = self.counts();
        let expected = c.sent.saturating_sub(c.nacked).saturating_sub(c.returned);
        if c.received >= expected {
            return true;
        }
        let idle = self.now_nanos() - self.last_delivery.load(Relaxed);
        idle > DRAIN_IDLE.as_nanos() as u64
    }

    /// Moves the last interval's latencies into the total; returns the interval's percentiles.
    pub fn take_interval_latency(&self) -> Option<Latency> {
        let mut interval = lock(&self.interval);
        let latency = Latency::of(&interval);
        let _ = lock(&self.total).add(&*interval);
        interval.reset();
        latency
    }

    /// Percentiles over the whole run (call after the last `take_interval_latency`).
    pub fn total_latency(&self) -> Option<Latency> {
        Latency::of(&lock(&self.total))
    }

    /// Registers connections whose counters make up the run's figures, read with `metrics`.
    pub fn add_sources<C: Clone + Send + Sync + 'static>(
        &self,
        role: Role,
        connections: &[C],
        metrics: fn(&C) -> Metrics,
    ) {
        let mut sources = lock(&self.sources);
        for conn in connections {
            let conn = conn.clone();
            sources.push((role, Box::new(move || metrics(&conn))));
        }
    }

    /// The run's counts so far, from its connections' metrics.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for (role, source) in lock(&self.sources).iter() {
            let m = source();
            match role {
                Role::Producer => {
                    c.sent += m.publishes;
                    c.confirmed += m.confirms_acked;
                    c.nacked += m.confirms_nacked;
                    c.returned += m.returns;
                }
                Role::Consumer => c.received += m.deliveries,
            }
        }
        c
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which figures a connection contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Producer,
    Consumer,
}

/// Reads one connection's counters.
pub type MetricsSource = Box<dyn Fn() -> Metrics + Send + Sync>;

/// Message counts since the start of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Messages published.
    pub sent: u64,
    /// Publishes the broker acked (confirm mode only).
    pub confirmed: u64,
    /// Publishes the broker nacked.
    pub nacked: u64,
    /// Mandatory publishes returned unroutable.
    pub returned: u64,
    /// Messages delivered to consumers.
    pub received: u64,
}

/// End-to-end latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Option<Latency> {
        (!h.is_empty()).then(|| Latency {
            p50: h.value_at_quantile(0.50),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        })
    }
}
