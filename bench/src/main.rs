//! `bench`: side-by-side AMQP 0-9-1 client benchmark: lapin, amqprs and ours
//! (amqp-tokio, amqp-async-std, amqp-blocking); see `clients/mod.rs`.
//!
//! The parent process only orchestrates: for every (rep, scenario, size,
//! client) it re-executes itself as `bench --one CLIENT SCENARIO SIZE ...`.
//! The child runs exactly one measurement on a fresh 2-worker tokio runtime
//! and prints one `BENCH_RESULT {json}` line, including its own ru_maxrss, so
//! peak RSS is per (client, scenario, size). The parent interleaves clients,
//! takes the median over the repetitions and prints a table.
//!
//! See README.md for the exact definition of every scenario.

mod clients;
mod fake_broker;
mod floor;
mod harness;
mod perfstat;
mod raw;
mod table;
mod wire;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use clients::ClientKind;
use harness::{
    Broker, DEFAULT_SIZES, Measurement, Params, RESULT_PREFIX, Scenario, fmt_size, make_payload,
    parse_size,
};
use table::render_table;

const USAGE: &str = "\
bench: AMQP 0-9-1 client benchmark: lapin, amqprs vs ours (amqp-tokio, amqp-async-std, amqp-blocking)

USAGE:
  bench [OPTIONS]

OPTIONS:
  --quick               smoke run: N = 2000 (sizes < 64 KiB) / 100 (larger), R = 1
  --reps R              repetitions per cell, median reported (default 3)
  --count N             N for every size (overrides the two below)
  --count-small N       N for sizes < 64 KiB (default 200000)
  --count-large N       N for sizes >= 64 KiB (default 5000)
  --clients LIST        comma-separated (default: all =
                        floor,lapin,amqprs,amqp-tokio,amqp-async-std,amqp-blocking;
                        `floor` is the kernel floor: the same bytes, no AMQP)
  --fake                clients talk to the fake broker (a separate process on
                        loopback, started by the parent) instead of RabbitMQ
  --no-perf             don't run children under `perf stat` (no syscall columns)
  --scenarios LIST      publish,publish_confirms,consume,e2e (default: all)
  --sizes LIST          e.g. 16,1k,128k (default: 16,1k,128k)
  --prefetch N          consumer prefetch (default 1000)
  --window N            max unconfirmed publishes (default 1000)
  --host H --port P --user U --pass P --vhost V   broker (default 127.0.0.1:5672 guest/guest /)
  --timeout SECS        kill a measurement after this long (default 900)
  --pause-ms MS         pause between measurements (default 500)
  --out FILE            also append every raw result (JSON lines) to FILE
  --markdown FILE       also write the final table (+ run info) as markdown to FILE
  -h, --help

INTERNAL (used by the parent):
  --one CLIENT SCENARIO SIZE --count N --queue NAME    run one measurement
  --cleanup QUEUE                                      delete a queue (lapin)
  --serve-fake                                         run the fake broker
  --fake-addr HOST:PORT                                the fake broker (floor)
";

#[derive(Debug)]
struct Opts {
    reps: u32,
    count_small: u64,
    count_large: u64,
    clients: Vec<ClientKind>,
    scenarios: Vec<Scenario>,
    sizes: Vec<usize>,
    prefetch: u16,
    window: u64,
    broker: Broker,
    timeout: Duration,
    pause: Duration,
    out: Option<String>,
    markdown: Option<String>,
    one: Option<(ClientKind, Scenario, usize)>,
    queue: Option<String>,
    cleanup: Option<String>,
    fake: bool,
    perf: bool,
    serve_fake: bool,
    fake_addr: Option<String>,
}

/// Sizes at or above this use `count_large`.
const LARGE: usize = 64 * 1024;

fn parse_list<T>(s: &str, f: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| f(x.trim()))
        .collect()
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        reps: 3,
        count_small: 200_000,
        count_large: 5_000,
        clients: ClientKind::ALL.to_vec(),
        scenarios: Scenario::ALL.to_vec(),
        sizes: DEFAULT_SIZES.to_vec(),
        prefetch: 1000,
        window: 1000,
        broker: Broker::default(),
        timeout: Duration::from_secs(900),
        pause: Duration::from_millis(500),
        out: None,
        markdown: None,
        one: None,
        queue: None,
        cleanup: None,
        fake: false,
        perf: true,
        serve_fake: false,
        fake_addr: None,
    };
    let mut count_all: Option<u64> = None;
    let mut quick = false;
    let mut args = std::env::args().skip(1);
    let next = |args: &mut dyn Iterator<Item = String>, flag: &str| -> Result<String> {
        args.next().with_context(|| format!("{flag} needs a value"))
    };
    while let Some(a) = args.next() {
        let a = a.as_str();
        match a {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--quick" => quick = true,
            "--fake" => o.fake = true,
            "--no-perf" => o.perf = false,
            "--serve-fake" => o.serve_fake = true,
            "--fake-addr" => o.fake_addr = Some(next(&mut args, a)?),
            "--reps" => o.reps = next(&mut args, a)?.parse()?,
            "--count" => count_all = Some(next(&mut args, a)?.parse()?),
            "--count-small" => o.count_small = next(&mut args, a)?.parse()?,
            "--count-large" => o.count_large = next(&mut args, a)?.parse()?,
            "--clients" => o.clients = parse_list(&next(&mut args, a)?, ClientKind::parse)?,
            "--scenarios" => o.scenarios = parse_list(&next(&mut args, a)?, Scenario::parse)?,
            "--sizes" => o.sizes = parse_list(&next(&mut args, a)?, parse_size)?,
            "--prefetch" => o.prefetch = next(&mut args, a)?.parse()?,
            "--window" => o.window = next(&mut args, a)?.parse()?,
            "--host" => o.broker.host = next(&mut args, a)?,
            "--port" => o.broker.port = next(&mut args, a)?.parse()?,
            "--user" => o.broker.user = next(&mut args, a)?,
            "--pass" => o.broker.pass = next(&mut args, a)?,
            "--vhost" => o.broker.vhost = next(&mut args, a)?,
            "--timeout" => o.timeout = Duration::from_secs(next(&mut args, a)?.parse()?),
            "--pause-ms" => o.pause = Duration::from_millis(next(&mut args, a)?.parse()?),
            "--out" => o.out = Some(next(&mut args, a)?),
            "--markdown" => o.markdown = Some(next(&mut args, a)?),
            "--queue" => o.queue = Some(next(&mut args, a)?),
            "--cleanup" => o.cleanup = Some(next(&mut args, a)?),
            "--one" => {
                let c = ClientKind::parse(&next(&mut args, a)?)?;
                let s = Scenario::parse(&next(&mut args, a)?)?;
                let z = parse_size(&next(&mut args, a)?)?;
                o.one = Some((c, s, z));
            }
            _ => bail!("unknown argument {a:?}\n\n{USAGE}"),
        }
    }
    if quick {
        o.count_small = 2_000;
        o.count_large = 100;
        o.reps = 1;
    }
    if let Some(n) = count_all {
        o.count_small = n;
        o.count_large = n;
    }
    if o.reps == 0 || o.clients.is_empty() || o.scenarios.is_empty() || o.sizes.is_empty() {
        bail!("nothing to run");
    }
    if o.window == 0 || o.prefetch == 0 {
        bail!("--window and --prefetch must be > 0");
    }
    Ok(o)
}

impl Opts {
    fn count_for(&self, size: usize) -> u64 {
        if size >= LARGE {
            self.count_large
        } else {
            self.count_small
        }
    }

    fn params(&self, queue: String, size: usize, count: u64) -> Params {
        Params {
            broker: self.broker.clone(),
            queue,
            payload: make_payload(size),
            count,
            prefetch: self.prefetch,
            confirm_window: self.window,
        }
    }

    /// Flags a child needs to reproduce our broker/tuning settings.
    fn child_args(&self) -> Vec<String> {
        let b = &self.broker;
        let mut args = vec![
            "--host".into(),
            b.host.clone(),
            "--port".into(),
            b.port.to_string(),
            "--user".into(),
            b.user.clone(),
            "--pass".into(),
            b.pass.clone(),
            "--vhost".into(),
            b.vhost.clone(),
            "--prefetch".into(),
            self.prefetch.to_string(),
            "--window".into(),
            self.window.to_string(),
        ];
        if let Some(a) = &self.fake_addr {
            args.extend(["--fake-addr".into(), a.clone()]);
        }
        // So that the child's result line names the broker it measured against.
        if self.fake {
            args.push("--fake".into());
        }
        args
    }
}

/// Same runtime for every client: multi-thread, 2 workers.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn main() {
    let res = parse_args().and_then(|mut o| {
        if o.serve_fake {
            serve_fake_main()
        } else if let Some(one) = o.one {
            child_main(&o, one)
        } else if let Some(q) = &o.cleanup {
            cleanup_main(&o, q)
        } else {
            parent_main(&mut o)
        }
    });
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- child ---

fn child_main(o: &Opts, (client, scenario, size): (ClientKind, Scenario, usize)) -> Result<()> {
    let queue = o.queue.clone().context("--one needs --queue")?;
    let count = o.count_for(size);
    let params = o.params(queue, size, count);
    let timer = if client == ClientKind::Floor {
        let addr = o
            .fake_addr
            .as_deref()
            .context("the floor needs --fake-addr")?;
        floor::run(scenario, &params, addr)?
    } else if client == ClientKind::Raw {
        raw::run(scenario, &params)?
    } else if client == ClientKind::AmqpAsyncStd {
        // As its users run it: on async-std's executor (whose 2 threads, one
        // per CPU, also poll async-io's reactor), spawned like the others.
        async_std::task::block_on(async_std::task::spawn(async move {
            client.run(scenario, &params).await
        }))?
    } else {
        let rt = runtime()?;
        // Spawned (not block_on'd) so that the whole scenario, like the client
        // libraries' own tasks, runs on the 2 runtime workers.
        rt.block_on(async move {
            tokio::spawn(async move { client.run(scenario, &params).await })
                .await
                .context("scenario task panicked")?
        })?
    };
    let (wall, u) = timer.elapsed()?;
    let per = |x: u64| x as f64 / count as f64;
    let m = Measurement {
        client: client.name().into(),
        scenario: scenario.name().into(),
        size,
        count,
        secs: wall.as_secs_f64(),
        msgs_per_sec: count as f64 / wall.as_secs_f64(),
        cpu_us_per_msg: u.cpu.as_secs_f64() * 1e6 / count as f64,
        peak_rss_kib: timer.process_peak_kib(),
        timed_peak_rss_kib: timer.timed_peak_kib(),
        faults_per_msg: per(u.minflt + u.majflt),
        vcsw_per_msg: per(u.nvcsw),
        ivcsw_per_msg: per(u.nivcsw),
        syscalls_per_msg: None,
        reads_per_msg: None,
        writes_per_msg: None,
        futex_per_msg: None,
        broker: if o.fake { "fake" } else { "rabbitmq" }.into(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{RESULT_PREFIX}{}", serde_json::to_string(&m)?)?;
    out.flush()?;
    // Don't wait for lingering library threads/tasks on the way out.
    std::process::exit(0);
}

/// `--serve-fake`: the fake broker, on an ephemeral loopback port.
fn serve_fake_main() -> Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("{}{}", fake_broker::READY_PREFIX, listener.local_addr()?);
    std::io::stdout().flush()?;
    fake_broker::serve(listener)
}

/// Starts the fake broker process; returns it and its address.
fn start_fake_broker() -> Result<(std::process::Child, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve-fake")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the fake broker")?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )?;
    let addr = line
        .trim()
        .strip_prefix(fake_broker::READY_PREFIX)
        .context("the fake broker did not start")?
        .to_string();
    Ok((child, addr))
}

fn cleanup_main(o: &Opts, queue: &str) -> Result<()> {
    let p = o.params(queue.to_string(), 0, 0);
    let rt = runtime()?;
    rt.block_on(async move {
        tokio::spawn(async move { ClientKind::Lapin.delete_queue(&p).await })
            .await
            .context("cleanup task panicked")?
    })?;
    std::process::exit(0);
}

// --------------------------------------------------------------- parent ---

enum ChildOutcome {
    Ok(Measurement),
    Failed(String),
}

fn run_child(o: &Opts, args: &[String]) -> Result<ChildOutcome> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("current_exe")?;
    let mut all: Vec<String> = args.to_vec();
    all.extend(o.child_args());
    let (wrapped, mut cmd) = if o.perf {
        let dir = std::env::temp_dir().join(format!("amqp-bench-perf-{}", std::process::id()));
        let (w, c) = perfstat::Wrapped::new(dir, &exe, &all)?;
        (Some(w), c)
    } else {
        let mut c = Command::new(exe);
        c.args(&all);
        (None, c)
    };
    // Its own process group, so that a timeout kills perf and the child.
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning child")?;
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + o.timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() >= deadline {
            // SAFETY: signals the process group we created above.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Ok(ChildOutcome::Failed(format!(
            "timed out after {}s",
            o.timeout.as_secs()
        )));
    };
    if !status.success() {
        return Ok(ChildOutcome::Failed(format!("child exited with {status}")));
    }
    for line in out.lines() {
        if let Some(json) = line.strip_prefix(RESULT_PREFIX) {
            let mut m: Measurement = serde_json::from_str(json)?;
            if let Some(w) = &wrapped {
                let counts = w.counts();
                let per = |k: &str| counts.get(k).map(|&v| v as f64 / m.count as f64);
                m.syscalls_per_msg = per("syscalls");
                m.reads_per_msg = per("reads");
                m.writes_per_msg = per("writes");
                m.futex_per_msg = per("futex");
            }
            return Ok(ChildOutcome::Ok(m));
        }
    }
    Ok(ChildOutcome::Failed("child printed no result".into()))
}

fn parent_main(o: &mut Opts) -> Result<()> {
    if o.perf && !perfstat::available() {
        eprintln!("bench: `perf stat` cannot count syscalls here; syscall columns stay empty");
        o.perf = false;
    }
    let needs_fake = o.fake || o.clients.contains(&ClientKind::Floor);
    let mut fake = None;
    if needs_fake {
        let (child, addr) = start_fake_broker()?;
        eprintln!("bench: fake broker at {addr}");
        if o.fake {
            let (host, port) = addr.rsplit_once(':').context("fake broker address")?;
            o.broker.host = host.into();
            o.broker.port = port.parse()?;
        }
        o.fake_addr = Some(addr);
        fake = Some(child);
    }
    let res = run_all(o);
    if let Some(mut child) = fake {
        let _ = child.kill();
        let _ = child.wait();
    }
    res
}

fn run_all(o: &Opts) -> Result<()> {
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
    );
    let mut out_file = match &o.out {
        Some(f) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .with_context(|| format!("opening {f}"))?,
        ),
        None => None,
    };
    let total = o.reps as usize * o.scenarios.len() * o.sizes.len() * o.clients.len();
    eprintln!(
        "bench: {} measurements (reps={}, N={} for <64 KiB, N={} for >=64 KiB), broker {}:{}",
        total, o.reps, o.count_small, o.count_large, o.broker.host, o.broker.port
    );
    let load_start = loadavg();
    let utc_start = utc_now();
    eprintln!("bench: started {utc_start} UTC, load average at start: {load_start}");
    let started = Instant::now();
    let mut results: BTreeMap<(Scenario, usize, ClientKind), Vec<Measurement>> = BTreeMap::new();
    let mut failures = 0usize;
    let mut i = 0usize;
    for rep in 1..=o.reps {
        for &scenario in &o.scenarios {
            for &size in &o.sizes {
                for &client in &o.clients {
                    i += 1;
                    let queue = format!(
                        "amqp-bench-{run_id}-r{rep}-{}-{}-{size}",
                        client.name(),
                        scenario.name()
                    );
                    let count = o.count_for(size);
                    let args: Vec<String> = vec![
                        "--one".into(),
                        client.name().into(),
                        scenario.name().into(),
                        size.to_string(),
                        "--count".into(),
                        count.to_string(),
                        "--queue".into(),
                        queue.clone(),
                    ];
                    let t0 = Instant::now();
                    let label = format!(
                        "[{i}/{total}] rep {rep} {:<16} {:>7} {:<14}",
                        scenario.name(),
                        fmt_size(size),
                        client.name()
                    );
                    match run_child(o, &args)? {
                        ChildOutcome::Ok(m) => {
                            eprintln!(
                                "{label} {:>10.0} msg/s {:>7.2} us/msg {:>7.1} MiB peak {:>6.2} flt/msg {:>6.2} csw/msg {:>6} sys/msg  ({:.1}s)",
                                m.msgs_per_sec,
                                m.cpu_us_per_msg,
                                m.peak_rss_kib as f64 / 1024.0,
                                m.faults_per_msg,
                                m.vcsw_per_msg + m.ivcsw_per_msg,
                                m.syscalls_per_msg.map_or("-".into(), |v| format!("{v:.2}")),
                                t0.elapsed().as_secs_f64()
                            );
                            if let Some(f) = out_file.as_mut() {
                                writeln!(f, "{}", serde_json::to_string(&m)?)?;
                            }
                            results.entry((scenario, size, client)).or_default().push(m);
                        }
                        ChildOutcome::Failed(why) => {
                            failures += 1;
                            eprintln!("{label} FAILED: {why}; deleting queue {queue}");
                            let mut cargs = vec!["--cleanup".to_string(), queue.clone()];
                            cargs.extend(o.child_args());
                            let ok = Command::new(std::env::current_exe()?)
                                .args(&cargs)
                                .stdout(Stdio::null())
                                .status()
                                .map(|s| s.success())
                                .unwrap_or(false);
                            if !ok {
                                eprintln!(
                                    "  cleanup of {queue} failed (it expires by itself after 30 min unused)"
                                );
                            }
                            results.entry((scenario, size, client)).or_default();
                        }
                    }
                    std::thread::sleep(o.pause);
                }
            }
        }
    }
    let load_end = loadavg();
    let took = started.elapsed().as_secs_f64();
    eprintln!("bench: done in {took:.0}s, {failures} failed; load average at end: {load_end}");

    let cells = table::medians(&results);
    let view = table::View {
        reps: o.reps,
        count_small: o.count_small,
        count_large: o.count_large,
        scenarios: &o.scenarios,
        sizes: &o.sizes,
        clients: &o.clients,
        broker: if o.fake { "fake broker" } else { "RabbitMQ" },
    };
    let (text, md) = render_table(&view, &results, &cells);
    print!("{text}");
    if let Some(path) = &o.markdown {
        let info = format!(
            "Run: started {utc_start} UTC, took {took:.0} s, {failures} failed; load average \
             (1/5/15 min) at start {load_start}, at end {load_end}; {} CPUs.\n\n",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
        std::fs::write(path, format!("{info}{md}")).with_context(|| format!("writing {path}"))?;
    }
    if failures > 0 {
        bail!("{failures} measurement(s) failed");
    }
    Ok(())
}

/// `/proc/loadavg`'s three load averages ("?" where unavailable).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// Current time as `YYYY-MM-DD HH:MM` (UTC), without a date crate.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil-from-days (H. Hinnant).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}
