//! Medians per cell and the final table (aligned text and markdown, built
//! from the same rows).

use std::collections::BTreeMap;

use crate::clients::ClientKind;
use crate::harness::{Measurement, Scenario, fmt_size};

type Key = (Scenario, usize, ClientKind);

/// Medians of one (scenario, size, client) over the repetitions.
#[derive(Clone, Copy)]
pub struct Cell {
    msgs_per_sec: f64,
    cpu_us: f64,
    rss_mib: f64,
    faults: f64,
    csw: f64,
    syscalls: Option<f64>,
    rw: Option<f64>,
    futex: Option<f64>,
    ok: usize,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub fn medians(results: &BTreeMap<Key, Vec<Measurement>>) -> BTreeMap<Key, Cell> {
    let mut cells = BTreeMap::new();
    for (k, ms) in results {
        if ms.is_empty() {
            continue;
        }
        let all = |f: fn(&Measurement) -> f64| median(ms.iter().map(f).collect()).unwrap();
        let some = |f: fn(&Measurement) -> Option<f64>| median(ms.iter().filter_map(f).collect());
        cells.insert(
            *k,
            Cell {
                msgs_per_sec: all(|m| m.msgs_per_sec),
                cpu_us: all(|m| m.cpu_us_per_msg),
                rss_mib: all(|m| m.peak_rss_kib as f64 / 1024.0),
                faults: all(|m| m.faults_per_msg),
                csw: all(|m| m.vcsw_per_msg + m.ivcsw_per_msg),
                syscalls: some(|m| m.syscalls_per_msg),
                rw: some(|m| Some(m.reads_per_msg? + m.writes_per_msg?)),
                futex: some(|m| m.futex_per_msg),
                ok: ms.len(),
            },
        );
    }
    cells
}

/// What the table is about.
pub struct View<'a> {
    pub reps: u32,
    pub count_small: u64,
    pub count_large: u64,
    pub scenarios: &'a [Scenario],
    pub sizes: &'a [usize],
    pub clients: &'a [ClientKind],
    pub broker: &'a str,
}

const COLUMNS: [(&str, usize); 16] = [
    ("scenario", 16),
    ("size", 7),
    ("client", 14),
    ("msgs/s", 9),
    ("CPU us/msg", 10),
    ("RSS MiB", 8),
    ("faults/msg", 10),
    ("csw/msg", 8),
    ("syscalls/msg", 12),
    ("rd+wr/msg", 9),
    ("futex/msg", 9),
    ("thr/best", 8),
    ("cpu/best", 8),
    ("rss/best", 8),
    ("cpu/floor", 9),
    ("cpu/raw", 7),
];

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

fn ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}x")
    } else {
        "-".into()
    }
}

/// The final table: (aligned text for stdout, markdown).
pub fn render_table(
    v: &View,
    results: &BTreeMap<Key, Vec<Measurement>>,
    cells: &BTreeMap<Key, Cell>,
) -> (String, String) {
    let mut rows: Vec<[String; 16]> = Vec::new();
    for &scenario in v.scenarios {
        for &size in v.sizes {
            // Best of the anchors (lapin, amqprs), per metric.
            let anchors: Vec<Cell> = v
                .clients
                .iter()
                .filter(|c| c.is_anchor())
                .filter_map(|c| cells.get(&(scenario, size, *c)).copied())
                .collect();
            let best_thr = anchors
                .iter()
                .map(|c| c.msgs_per_sec)
                .fold(f64::NAN, f64::max);
            let best_cpu = anchors.iter().map(|c| c.cpu_us).fold(f64::NAN, f64::min);
            let best_rss = anchors.iter().map(|c| c.rss_mib).fold(f64::NAN, f64::min);
            let floor_cpu = cells
                .get(&(scenario, size, ClientKind::Floor))
                .map_or(f64::NAN, |c| c.cpu_us);
            let raw_cpu = cells
                .get(&(scenario, size, ClientKind::Raw))
                .map_or(f64::NAN, |c| c.cpu_us);
            for &client in v.clients {
                let key = (scenario, size, client);
                let mut name = client.name().to_string();
                let row = match cells.get(&key) {
                    Some(c) => {
                        if c.ok < v.reps as usize {
                            name.push_str(&format!(" ({}/{} ok)", c.ok, v.reps));
                        }
                        let ours = client.is_ours();
                        let vs_best = |x: f64, best: f64| {
                            if ours { ratio(x / best) } else { String::new() }
                        };
                        [
                            scenario.name().to_string(),
                            fmt_size(size),
                            name,
                            format!("{:.0}", c.msgs_per_sec),
                            format!("{:.2}", c.cpu_us),
                            format!("{:.1}", c.rss_mib),
                            format!("{:.2}", c.faults),
                            format!("{:.2}", c.csw),
                            opt(c.syscalls, 2),
                            opt(c.rw, 2),
                            opt(c.futex, 2),
                            vs_best(c.msgs_per_sec, best_thr),
                            vs_best(c.cpu_us, best_cpu),
                            vs_best(c.rss_mib, best_rss),
                            if client == ClientKind::Floor {
                                String::new()
                            } else {
                                ratio(c.cpu_us / floor_cpu)
                            },
                            if matches!(client, ClientKind::Floor | ClientKind::Raw) {
                                String::new()
                            } else {
                                ratio(c.cpu_us / raw_cpu)
                            },
                        ]
                    }
                    None => {
                        let runs = results.get(&key).map_or(0, Vec::len);
                        let mut r: [String; 16] = Default::default();
                        r[0] = scenario.name().to_string();
                        r[1] = fmt_size(size);
                        r[2] = format!("{name} (0/{} ok)", v.reps.max(runs as u32));
                        r[3] = "FAILED".into();
                        r
                    }
                };
                rows.push(row);
            }
        }
    }

    let title = format!(
        "{}: median of {} rep(s); N = {} (< 64 KiB), {} (>= 64 KiB); per message over the timed section",
        v.broker, v.reps, v.count_small, v.count_large
    );
    let notes = "RSS = peak of the whole child (ru_maxrss); faults = minor + major page faults and \
                 csw = voluntary + involuntary context switches (getrusage, all threads); \
                 syscalls, rd+wr (read/readv/recvfrom/recvmsg + write/writev/sendto/sendmsg) and \
                 futex counted by `perf stat` on syscall tracepoints (- without perf); \
                 x/best = ours / the better of lapin and amqprs per metric (thr > 1, cpu and rss \
                 < 1 are better); cpu/floor = CPU per message / the floor's (same bytes over \
                 loopback, no AMQP); cpu/raw = CPU per message / the broker-paced floor's (`raw`: a \
                 minimal client, one blocking thread per connection, at the broker's pace)";

    let mut text = format!("\n{title}\n");
    let line: Vec<String> = COLUMNS.iter().map(|(h, w)| format!("{h:>w$}")).collect();
    text.push_str(&line.join(" "));
    text.push('\n');
    text.push_str(&"-".repeat(line.join(" ").len()));
    text.push('\n');
    let mut md = format!("{title}\n\n| ");
    md.push_str(&COLUMNS.map(|c| c.0).join(" | "));
    md.push_str(" |\n|");
    for (i, _) in COLUMNS.iter().enumerate() {
        md.push_str(if i < 3 { " --- |" } else { " ---: |" });
    }
    md.push('\n');
    for r in &rows {
        let cols: Vec<String> = r
            .iter()
            .zip(COLUMNS)
            .enumerate()
            .map(|(i, (s, (_, w)))| {
                if i == 2 {
                    format!("{s:<w$}")
                } else {
                    format!("{s:>w$}")
                }
            })
            .collect();
        text.push_str(cols.join(" ").trim_end());
        text.push('\n');
        md.push_str("| ");
        md.push_str(&r.join(" | "));
        md.push_str(" |\n");
    }
    text.push_str(&format!("\n{notes}\n"));
    md.push_str(&format!("\n{notes}\n"));
    (text, md)
}
