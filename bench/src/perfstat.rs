//! Syscall counts of the timed section, from `perf stat`.
//!
//! getrusage gives page faults and context switches but no syscall counts,
//! and `/proc/self/io` (syscr/syscw) misses socket `recv`/`send`, which std
//! and mio use. So the parent runs each child under
//! `perf stat -D -1 --control fifo:CTL,ACK` (counters created disabled,
//! inherited by every thread); the child's `Timer::start` writes `enable` to
//! the control fifo and `Timer::stop` writes `disable`, each waiting for
//! perf's `ack`, so the counts cover exactly the timed section. The parent
//! reads perf's CSV output once the child has exited.
//!
//! Counting tracepoints costs a little per syscall in the child, about the
//! same for every client per syscall; `--no-perf` turns it off.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// (column name, tracepoints summed into it)
pub const GROUPS: [(&str, &[&str]); 4] = [
    ("syscalls", &["raw_syscalls:sys_enter"]),
    (
        "reads",
        &[
            "syscalls:sys_enter_read",
            "syscalls:sys_enter_readv",
            "syscalls:sys_enter_recvfrom",
            "syscalls:sys_enter_recvmsg",
        ],
    ),
    (
        "writes",
        &[
            "syscalls:sys_enter_write",
            "syscalls:sys_enter_writev",
            "syscalls:sys_enter_sendto",
            "syscalls:sys_enter_sendmsg",
        ],
    ),
    ("futex", &["syscalls:sys_enter_futex"]),
];

const ENV_CTL: &str = "BENCH_PERF_CTL";
const ENV_ACK: &str = "BENCH_PERF_ACK";

/// Whether `perf stat` can count syscall tracepoints here.
pub fn available() -> bool {
    let out = Command::new("perf")
        .args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "true"])
        .stdout(Stdio::null())
        .output();
    match out {
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            o.status.success() && !err.contains("<not") && err.contains("raw_syscalls")
        }
        Err(_) => false,
    }
}

/// One child run under perf: its fifos and output file live in `dir`.
pub struct Wrapped {
    dir: PathBuf,
}

impl Wrapped {
    /// A command that runs `exe args` under perf stat, counters disabled
    /// until the child enables them.
    pub fn new(dir: PathBuf, exe: &Path, args: &[String]) -> std::io::Result<(Self, Command)> {
        std::fs::create_dir_all(&dir)?;
        for f in ["ctl", "ack"] {
            let p = dir.join(f);
            let _ = std::fs::remove_file(&p);
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: mkfifo reads a NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let events: Vec<&str> = GROUPS.iter().flat_map(|g| g.1.iter().copied()).collect();
        let mut cmd = Command::new("perf");
        cmd.arg("stat")
            .args(["-x", ","])
            .arg("-o")
            .arg(dir.join("out"))
            .arg("--control")
            .arg(format!(
                "fifo:{},{}",
                dir.join("ctl").display(),
                dir.join("ack").display()
            ))
            .args(["-D", "-1", "-e", &events.join(","), "--"])
            .arg(exe)
            .args(args)
            .env(ENV_CTL, dir.join("ctl"))
            .env(ENV_ACK, dir.join("ack"));
        Ok((Wrapped { dir }, cmd))
    }

    /// The counts per group, once the child has exited.
    pub fn counts(&self) -> HashMap<&'static str, u64> {
        let mut by_event = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(self.dir.join("out")) {
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let f: Vec<&str> = line.split(',').collect();
                if f.len() > 2
                    && let Ok(v) = f[0].parse::<u64>()
                {
                    by_event.insert(f[2].to_string(), v);
                }
            }
        }
        let mut out = HashMap::new();
        for (name, events) in GROUPS {
            if events.iter().all(|e| by_event.contains_key(*e)) {
                out.insert(name, events.iter().map(|e| by_event[*e]).sum());
            }
        }
        out
    }
}

impl Drop for Wrapped {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static CONTROL: Mutex<Option<(std::fs::File, BufReader<std::fs::File>)>> = Mutex::new(None);

/// In the child: sends `enable` / `disable` to perf and waits for its ack.
/// Does nothing when not run under perf.
pub fn control(command: &str) {
    let (Some(ctl), Some(ack)) = (std::env::var_os(ENV_CTL), std::env::var_os(ENV_ACK)) else {
        return;
    };
    let mut guard = CONTROL.lock().unwrap();
    if guard.is_none() {
        let c = std::fs::OpenOptions::new().write(true).open(&ctl);
        let a = std::fs::File::open(&ack);
        match (c, a) {
            (Ok(c), Ok(a)) => *guard = Some((c, BufReader::new(a))),
            _ => {
                eprintln!("warning: cannot open the perf control fifos");
                return;
            }
        }
    }
    let (c, a) = guard.as_mut().unwrap();
    let mut line = String::new();
    if writeln!(c, "{command}").is_err() || a.read_line(&mut line).is_err() {
        eprintln!("warning: perf did not acknowledge {command:?}");
    }
}
