//! The live line each second (indicatif on a terminal, plain lines otherwise, JSON with
//! `--json`) and the final summary.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::{Counts, Latency, Plan, Stats};
use crate::sink;

#[derive(Debug, Serialize)]
struct Tick {
    #[serde(rename = "type")]
    kind: &'static str,
    elapsed_s: f64,
    #[serde(flatten)]
    counts: Counts,
    sent_rate: f64,
    confirmed_rate: f64,
    received_rate: f64,
    latency_us: Option<Latency>,
}

/// The end-of-run record (see the module docs of `perf` for the schema).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    #[serde(rename = "type")]
    kind: &'static str,
    pub runtime: &'static str,
    pub target: &'static str,
    pub producers: usize,
    pub consumers: usize,
    pub size: usize,
    pub confirm_window: Option<usize>,
    pub elapsed_s: f64,
    #[serde(flatten)]
    pub counts: Counts,
    pub sent_rate: f64,
    pub confirmed_rate: f64,
    pub received_rate: f64,
    pub latency_us: Option<Latency>,
    pub cpu_s: Option<f64>,
    pub sink_cpu_s: Option<f64>,
    pub msgs_per_client_cpu_s: Option<f64>,
    pub interrupted: bool,
}

pub struct Reporter {
    plan: Arc<Plan>,
    stats: Arc<Stats>,
    done: Arc<AtomicBool>,
    thread: JoinHandle<Option<ProgressBar>>,
}

fn rate(delta: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        (delta as f64 / secs * 10.0).round() / 10.0
    } else {
        0.0
    }
}

fn latency_text(l: Option<Latency>) -> String {
    match l {
        Some(l) => format!(
            "latency p50/p95/p99 {:.2}/{:.2}/{:.2} ms",
            l.p50 as f64 / 1000.0,
            l.p95 as f64 / 1000.0,
            l.p99 as f64 / 1000.0
        ),
        None => "latency -".to_owned(),
    }
}

impl Reporter {
    pub fn start(plan: Arc<Plan>, stats: Arc<Stats>) -> Reporter {
        let done = Arc::new(AtomicBool::new(false));
        let json = plan.args.json;
        let (s2, d2) = (stats.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let bar = (!json && std::io::stderr().is_terminal()).then(|| {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                        .expect("valid template"),
                );
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            });
            let mut last = Counts::default();
            let mut last_at = Instant::now();
            let mut next = s2.epoch + Duration::from_secs(1);
            while !d2.load(Relaxed) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(50)));
                    continue;
                }
                next += Duration::from_secs(1);
                let counts = s2.counts();
                let secs = now.duration_since(last_at).as_secs_f64();
                let tick = Tick {
                    kind: "tick",
                    elapsed_s: (now - s2.epoch).as_secs_f64(),
                    counts,
                    sent_rate: rate(counts.sent - last.sent, secs),
                    confirmed_rate: rate(counts.confirmed - last.confirmed, secs),
                    received_rate: rate(counts.received - last.received, secs),
                    latency_us: s2.take_interval_latency(),
                };
                last = counts;
                last_at = now;
                emit_tick(&tick, json, bar.as_ref());
            }
            bar
        });
        Reporter {
            plan,
            stats,
            done,
            thread,
        }
    }

    /// Stops the live output and prints the summary.
    pub fn finish(self, sink_cpu: Option<Duration>) -> Summary {
        self.done.store(true, Relaxed);
        let bar = self.thread.join().ok().flatten();
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let stats = &self.stats;
        let _ = stats.take_interval_latency();
        let elapsed = stats.epoch.elapsed().as_secs_f64();
        let counts = stats.counts();
        let process_cpu = sink::process_cpu_time();
        let cpu = process_cpu.map(|p| p.saturating_sub(sink_cpu.unwrap_or_default()));
        let args = &self.plan.args;
        let summary = Summary {
            kind: "summary",
            runtime: args.runtime.name(),
            target: if args.sink { "sink" } else { "broker" },
            producers: args.producers,
            consumers: args.consumers,
            size: args.size,
            confirm_window: args.confirm,
            elapsed_s: (elapsed * 1000.0).round() / 1000.0,
            counts,
            sent_rate: rate(counts.sent, elapsed),
            confirmed_rate: rate(counts.confirmed, elapsed),
            received_rate: rate(counts.received, elapsed),
            latency_us: stats.total_latency(),
            cpu_s: cpu.map(|c| c.as_secs_f64()),
            sink_cpu_s: sink_cpu.map(|c| c.as_secs_f64()),
            msgs_per_client_cpu_s: cpu
                .filter(|c| !c.is_zero())
                .map(|c| rate(counts.sent + counts.received, c.as_secs_f64())),
            interrupted: stats.interrupted.load(Relaxed),
        };
        if args.json {
            println_json(&summary);
        } else {
            print_summary(&summary);
        }
        summary
    }
}

fn println_json(value: &impl Serialize) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, value);
    let _ = writeln!(out);
    let _ = out.flush();
}

fn emit_tick(tick: &Tick, json: bool, bar: Option<&ProgressBar>) {
    if json {
        println_json(tick);
        return;
    }
    let line = format!(
        "sent {:>9.0}/s  confirmed {:>9.0}/s  received {:>9.0}/s  returned {}  nacked {}  {}",
        tick.sent_rate,
        tick.confirmed_rate,
        tick.received_rate,
        tick.counts.returned,
        tick.counts.nacked,
        latency_text(tick.latency_us)
    );
    match bar {
        Some(bar) => {
            bar.println(format!("{:>5.1}s {line}", tick.elapsed_s));
            bar.set_message(format!(
                "total sent {} received {}",
                tick.counts.sent, tick.counts.received
            ));
        }
        None => println!("{:>5.1}s {line}", tick.elapsed_s),
    }
}

fn print_summary(s: &Summary) {
    println!(
        "summary: {} via {} ({}), {} producer(s), {} consumer(s), {} B messages, {:.1} s{}",
        s.target,
        s.runtime,
        match s.confirm_window {
            Some(w) => format!("confirms, window {w}"),
            None => "no confirms".to_owned(),
        },
        s.producers,
        s.consumers,
        s.size,
        s.elapsed_s,
        if s.interrupted { " (interrupted)" } else { "" }
    );
    println!(
        "  sent {} ({:.0}/s), confirmed {} ({:.0}/s), nacked {}, returned {}, received {} ({:.0}/s)",
        s.counts.sent,
        s.sent_rate,
        s.counts.confirmed,
        s.confirmed_rate,
        s.counts.nacked,
        s.counts.returned,
        s.counts.received,
        s.received_rate
    );
    match s.latency_us {
        Some(l) => println!(
            "  latency p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            l.p50 as f64 / 1000.0,
            l.p95 as f64 / 1000.0,
            l.p99 as f64 / 1000.0,
            l.max as f64 / 1000.0
        ),
        None => println!("  latency: no timed deliveries"),
    }
    if let Some(cpu) = s.cpu_s {
        print!("  client CPU {cpu:.2} s");
        if let Some(m) = s.msgs_per_client_cpu_s {
            print!(" ({m:.0} msgs moved per CPU-second)");
        }
        if let Some(sink) = s.sink_cpu_s {
            print!(", sink CPU {sink:.2} s");
        }
        println!();
    }
}
