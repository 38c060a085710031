//! Runs the built `amqp` binary: `perf --json` through every runtime against the shared
//! broker (127.0.0.1:5672, guest/guest; these tests fail when it is missing), `perf --sink`
//! with no broker at all, publish → consume → delete round trips, and the exit codes of the
//! common failures.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

fn amqp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amqp"))
        .args(args)
        .output()
        .expect("run amqp")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "amqp failed ({:?}): {}{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Parses `--json` output: the tick records and the summary (which must come last).
#[track_caller]
fn records(out: &str) -> (Vec<Value>, Value) {
    let mut lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let summary = lines.pop().expect("a summary line");
    assert_eq!(summary["type"], "summary", "{out}");
    for tick in &lines {
        assert_eq!(tick["type"], "tick", "{out}");
    }
    (lines, summary)
}

#[track_caller]
fn check_drained(summary: &Value) {
    let n = |k: &str| {
        summary[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {summary}"))
    };
    assert!(n("sent") > 0, "{summary}");
    assert!(n("confirmed") <= n("sent"), "{summary}");
    assert_eq!(n("confirmed") + n("nacked"), n("sent"), "{summary}");
    assert_eq!(
        n("received"),
        n("sent"),
        "a drained run receives all: {summary}"
    );
    let l = &summary["latency_us"];
    let p = |k: &str| {
        l[k].as_u64()
            .unwrap_or_else(|| panic!("latency {k} in {summary}"))
    };
    assert!(p("p50") <= p("p95") && p("p95") <= p("p99") && p("p99") <= p("max"));
    assert_eq!(summary["interrupted"], false);
}

fn perf_against_broker(runtime: &str) {
    let out = ok(&amqp(&[
        "perf",
        "--runtime",
        runtime,
        "-z",
        "3",
        "--json",
        "-r",
        "2000",
        "-c",
        "100",
    ]));
    let (ticks, summary) = records(&out);
    assert!(ticks.len() >= 2, "a tick each second: {out}");
    assert!(
        ticks.iter().any(|t| t["latency_us"]["p99"].is_u64()),
        "{out}"
    );
    assert_eq!(summary["runtime"], runtime);
    assert_eq!(summary["target"], "broker");
    check_drained(&summary);
}

#[test]
fn perf_json_tokio() {
    perf_against_broker("tokio");
}

#[test]
fn perf_json_async_std() {
    perf_against_broker("async-std");
}

#[test]
fn perf_json_blocking() {
    perf_against_broker("blocking");
}

#[test]
fn perf_sink_needs_no_broker() {
    // The URI points at a port nothing listens on: only the sink is used.
    let out = ok(&amqp(&[
        "perf",
        "--sink",
        "--uri",
        "amqp://guest:guest@127.0.0.1:1/%2f",
        "-C",
        "3000",
        "-x",
        "2",
        "-y",
        "2",
        "-c",
        "50",
        "--json",
    ]));
    let (_, summary) = records(&out);
    assert_eq!(summary["target"], "sink");
    assert_eq!(summary["sent"], 6000);
    check_drained(&summary);
    assert!(
        summary["msgs_per_client_cpu_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{summary}"
    );
}

#[test]
fn perf_ctrl_c_stops_drains_and_summarises() {
    let child = Command::new(env!("CARGO_BIN_EXE_amqp"))
        .args(["perf", "--sink", "--json", "-c", "50", "-r", "1000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run amqp");
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let out = child.wait_with_output().expect("amqp output");
    assert!(out.status.success(), "{out:?}");
    let (_, summary) = records(&stdout(&out));
    assert_eq!(summary["interrupted"], true);
    let n = |k: &str| summary[k].as_u64().expect(k);
    assert!(n("sent") > 0);
    assert_eq!(n("received"), n("sent"), "drained after Ctrl-C: {summary}");
    assert_eq!(n("confirmed"), n("sent"), "{summary}");
}

#[test]
fn publish_consume_delete_round_trip() {
    let queue = format!("amqp-cli-test-{}", std::process::id());
    ok(&amqp(&["declare", "queue", &queue]));
    ok(&amqp(&[
        "publish",
        "-k",
        &queue,
        "first",
        "-H",
        "attempt=2",
        "--content-type",
        "text/plain",
        "--persistent",
    ]));
    let mut lines = Command::new(env!("CARGO_BIN_EXE_amqp"))
        .args(["publish", "-k", &queue, "--lines"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run amqp");
    lines
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"second\nthird\n")
        .expect("write stdin");
    assert!(lines.wait().expect("publish --lines").success());

    let out = ok(&amqp(&["consume", &queue, "--count", "2", "--json"]));
    let got: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(got.len(), 2, "{out}");
    assert_eq!(got[0]["body"], "first");
    assert_eq!(got[0]["properties"]["headers"]["attempt"], 2);
    assert_eq!(got[0]["properties"]["content_type"], "text/plain");
    assert_eq!(got[0]["properties"]["delivery_mode"], 2);
    assert_eq!(got[1]["body"], "second");

    let out = ok(&amqp(&["get", &queue]));
    assert!(out.contains("third"), "{out}");
    let empty = amqp(&["get", &queue]);
    assert_eq!(empty.status.code(), Some(8), "{}", stderr(&empty));

    let out = ok(&amqp(&["delete", "queue", &queue]));
    assert!(out.contains("deleted"), "{out}");
    let missing = amqp(&["get", &queue]);
    assert_eq!(missing.status.code(), Some(5), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("404"), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("NOT_FOUND"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn exchange_bind_unbind_and_returns() {
    let name = format!("amqp-cli-test-x-{}", std::process::id());
    ok(&amqp(&["declare", "exchange", &name, "--type", "fanout"]));
    ok(&amqp(&["declare", "queue", &name]));
    ok(&amqp(&["bind", "-e", &name, "-u", &name]));
    ok(&amqp(&["publish", "-e", &name, "routed", "--mandatory"]));
    ok(&amqp(&["unbind", "-e", &name, "-u", &name]));
    let returned = amqp(&["publish", "-e", &name, "lost", "--mandatory"]);
    assert_eq!(returned.status.code(), Some(7), "{}", stderr(&returned));
    assert!(stderr(&returned).contains("312"), "{}", stderr(&returned));
    let out = ok(&amqp(&["get", &name, "--json"]));
    assert!(out.contains("routed"), "{out}");
    ok(&amqp(&["delete", "exchange", &name]));
    ok(&amqp(&["delete", "queue", &name]));
}

#[test]
fn refused_login_and_unreachable_broker() {
    let refused = amqp(&["get", "q", "--uri", "amqp://guest:wrong@127.0.0.1:5672/%2f"]);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("ACCESS_REFUSED"),
        "{}",
        stderr(&refused)
    );
    assert!(
        !stderr(&refused).contains("wrong"),
        "the password stays secret"
    );

    let unreachable = amqp(&["get", "q", "--uri", "amqp://guest:guest@127.0.0.1:1/%2f"]);
    assert_eq!(
        unreachable.status.code(),
        Some(3),
        "{}",
        stderr(&unreachable)
    );
}

/// A header key longer than a short string allows is a usage error at parse time (clap's exit
/// code 2 and a message), never a panic inside the table builder; nothing is dialled.
#[test]
fn overlong_header_key_is_a_usage_error() {
    let key = "k".repeat(256);
    let o = amqp(&[
        "publish",
        "--uri",
        "amqp://guest:guest@127.0.0.1:1/%2f",
        "-H",
        &format!("{key}=1"),
        "body",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("at most 255 bytes"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}
