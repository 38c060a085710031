//! What the scenarios need that does not touch the client API, shared by every flavour
//! (async and blocking): where the broker is, unique names and their cleanup list, the
//! `rabbitmqctl` bridge, background tasks, test data.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{fmt, thread};

use amqp_client::{ConnectError, TlsErrorKind};
use amqp_proto::{FieldTable, FieldValue};

/// Environment variable naming the broker (default [`DEFAULT_URI`]).
pub const URI_ENV: &str = "AMQP_URI";

/// The shared broker every scenario runs against unless `AMQP_URI` says otherwise.
pub const DEFAULT_URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Environment variable naming the `rabbitmqctl` to use (default: `rabbitmqctl` on `PATH`,
/// falling back to `/usr/sbin/rabbitmqctl`). It must control the broker of [`URI_ENV`].
pub const RABBITMQCTL_ENV: &str = "AMQP_TEST_RABBITMQCTL";

/// How long one `rabbitmqctl` call may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the scenario helpers wait for one delivery, return or event before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long starting a dedicated node ([`crate::node`]) for the TLS scenarios may take.
pub const NODE_START_LIMIT: Duration = Duration::from_secs(90);

/// What "prompt" means for a connection failure that needs no broker-side timeout.
pub const PROMPT: Duration = Duration::from_secs(10);

pub use crate::node::BrokerNode;

/// A path as a URI query value.
pub fn path_str(path: PathBuf) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// `amqps://guest:guest@localhost:TLSPORT/%2f?cacertfile=CA` (trusting the node's CA) plus
/// `extra` (`&name=value...`).
pub fn tls_uri(node: &BrokerNode, extra: &str) -> String {
    format!(
        "{}?cacertfile={}{extra}",
        node.tls_uri(),
        path_str(node.ca_cert_path())
    )
}

/// The TLS error kind of a failed connect; panics if it is not a TLS error.
pub fn tls_kind(err: &ConnectError) -> TlsErrorKind {
    match err {
        ConnectError::Tls(e) => e.kind(),
        other => panic!("expected a TLS error, got {other:?} ({other})"),
    }
}

/// The broker URI the scenarios connect to.
pub fn broker_uri() -> String {
    std::env::var(URI_ENV).unwrap_or_else(|_| DEFAULT_URI.to_owned())
}

/// `uri` with `query` (`name=value&...`) appended to its query string.
pub fn with_query(uri: &str, query: &str) -> String {
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{query}")
}

/// Starts the test proxy in front of the broker `options` names (on loopback) and points
/// `options` at the proxy.
pub fn via_proxy(options: &mut amqp_client::ConnectOptions) -> crate::proxy::Proxy {
    let target = format!("{}:{}", options.uri.host, options.uri.port);
    let target = std::net::ToSocketAddrs::to_socket_addrs(&target)
        .expect("resolve the broker's address")
        .find(|a| a.ip().is_loopback())
        .expect("the broker on a loopback address (the proxy serves only those)");
    let proxy = crate::proxy::Proxy::start(target).expect("start the test proxy");
    options.uri.host = proxy.addr().ip().to_string();
    options.uri.port = proxy.addr().port();
    proxy
}

/// Shorthand for a number of milliseconds.
pub fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// A body as text (lossy), for comparisons and messages.
pub fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// The n-th Fibonacci number (the RPC tutorial's service).
pub fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a.wrapping_add(b));
    }
    a
}

// ---------------------------------------------------------------------------------------------
// Names and cleanup
// ---------------------------------------------------------------------------------------------

static SCOPE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// One scenario run's names: everything it declares is called `<prefix>.<name>`, where the
/// prefix holds the scenario name, the process id and a counter, so runs never collide (not
/// with each other, not with other adapters' runs against the same broker). Queues and
/// exchanges named through [`Scope::queue`] and [`Scope::exchange`] are deleted by the
/// runner's cleanup pass after the scenario, whether it passed or not.
#[derive(Debug)]
pub struct Scope {
    scenario: &'static str,
    prefix: String,
    queues: Mutex<BTreeSet<String>>,
    exchanges: Mutex<BTreeSet<String>>,
    connections: AtomicU64,
}

impl Scope {
    /// A fresh scope for `scenario`.
    pub fn new(scenario: &'static str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let prefix = format!(
            "amqp-conformance.{scenario}.{}-{}-{nanos:x}",
            std::process::id(),
            SCOPE_COUNTER.fetch_add(1, Ordering::Relaxed),
        );
        Scope {
            scenario,
            prefix,
            queues: Mutex::default(),
            exchanges: Mutex::default(),
            connections: AtomicU64::new(0),
        }
    }

    /// The scenario's name.
    pub fn scenario(&self) -> &'static str {
        self.scenario
    }

    /// The unique prefix of everything this run names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A unique name that is not cleaned up (for things that must not exist, tags, ids).
    pub fn name(&self, base: &str) -> String {
        format!("{}.{base}", self.prefix)
    }

    /// A unique queue name, deleted after the scenario.
    pub fn queue(&self, base: &str) -> String {
        let name = self.name(base);
        lock(&self.queues).insert(name.clone());
        name
    }

    /// A unique exchange name, deleted after the scenario.
    pub fn exchange(&self, base: &str) -> String {
        let name = self.name(base);
        lock(&self.exchanges).insert(name.clone());
        name
    }

    /// A unique `connection_name` client property, to find the connection with `rabbitmqctl`.
    pub fn connection_name(&self) -> String {
        let n = self.connections.fetch_add(1, Ordering::Relaxed);
        format!("{}.conn-{n}", self.prefix)
    }

    /// The queues to delete after the scenario.
    pub fn tracked_queues(&self) -> Vec<String> {
        lock(&self.queues).iter().cloned().collect()
    }

    /// The exchanges to delete after the scenario.
    pub fn tracked_exchanges(&self) -> Vec<String> {
        lock(&self.exchanges).iter().cloned().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------------------

/// A seed for [`random_bytes`] that differs between runs (printed by the scenarios that use
/// it, so a failure can be replayed).
pub fn fresh_seed() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (t ^ (u64::from(std::process::id()) << 32)) | 1
}

/// `len` pseudo-random bytes from `seed` (xorshift64*): incompressible, reproducible.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The body of message `seq` in sequence tests: the number, then bytes derived from it, so
/// that a reordered, duplicated or corrupted message is caught.
pub fn seq_body(seq: u64) -> Vec<u8> {
    let mut body = seq.to_be_bytes().to_vec();
    body.extend_from_slice(&random_bytes(
        24,
        seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
    ));
    body
}

/// Panics unless `body` is exactly [`seq_body`]`(seq)`.
pub fn check_seq_body(seq: u64, body: &[u8]) {
    if body != seq_body(seq).as_slice() {
        let got = body
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes);
        panic!(
            "message {seq}: wrong body ({} bytes, sequence number {got:?}): {body:02x?}",
            body.len()
        );
    }
}

/// Panics unless `got` equals `expected`, reporting the first differing offset (for bodies
/// too large to print).
pub fn assert_same_bytes(got: &[u8], expected: &[u8], what: &str) {
    if got.len() != expected.len() {
        panic!(
            "{what}: {} bytes received, {} sent",
            got.len(),
            expected.len()
        );
    }
    if let Some(at) = got.iter().zip(expected).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {at} of {}", got.len());
    }
}

/// The `x-death` entries of a dead-lettered message's headers, newest first.
pub fn x_death(headers: Option<&FieldTable>) -> Vec<FieldTable> {
    match headers.and_then(|h| h.get("x-death")) {
        Some(FieldValue::Array(entries)) => entries
            .0
            .iter()
            .filter_map(|v| match v {
                FieldValue::Table(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A string-valued entry of a table (`longstr` or UTF-8 byte array).
pub fn table_str(table: &FieldTable, key: &str) -> Option<String> {
    match table.get(key)? {
        FieldValue::LongString(s) => Some(text(s)),
        FieldValue::ByteArray(b) => Some(text(b)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// rabbitmqctl
// ---------------------------------------------------------------------------------------------

fn rabbitmqctl_program() -> String {
    if let Ok(p) = std::env::var(RABBITMQCTL_ENV) {
        return p;
    }
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("rabbitmqctl").is_file())
    });
    if on_path {
        "rabbitmqctl".to_owned()
    } else {
        "/usr/sbin/rabbitmqctl".to_owned()
    }
}

/// Runs `rabbitmqctl ARGS...` against the broker the scenarios use (blocking, bounded by
/// [`CLI_TIMEOUT`]) and returns its standard output. Read-only listings, and closing this
/// process's own connections, are all the scenarios ask of the shared broker.
pub fn rabbitmqctl(args: &[String]) -> Result<String, String> {
    let program = rabbitmqctl_program();
    let shown = format!("{program} {}", args.join(" "));
    let mut child = Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || read_all(&mut stdout));
    let err = thread::spawn(move || read_all(&mut stderr));
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(ms(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Err(e) => return Err(format!("waiting for `{shown}`: {e}")),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(stdout),
        Some(s) => Err(format!("`{shown}` failed ({s}):\n{stdout}{stderr}")),
        None => Err(format!("`{shown}` timed out after {CLI_TIMEOUT:?}")),
    }
}

fn read_all(r: &mut impl std::io::Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// One row of `rabbitmqctl -q list_connections pid timeout client_properties`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRow {
    /// The connection process id, what `close_connection` takes.
    pub pid: String,
    /// The negotiated heartbeat timeout in seconds.
    pub timeout: u32,
}

/// The arguments that list connections in the format [`find_connection`] reads.
pub fn list_connections_args() -> Vec<String> {
    [
        "-q",
        "list_connections",
        "--no-table-headers",
        "pid",
        "timeout",
        "client_properties",
    ]
    .map(String::from)
    .to_vec()
}

/// Finds the connection whose client properties contain `connection_name` in the output of
/// [`list_connections_args`].
pub fn find_connection(listing: &str, connection_name: &str) -> Option<ConnectionRow> {
    let quoted = format!("\"{connection_name}\"");
    listing
        .lines()
        .filter(|line| line.contains(&quoted))
        .find_map(|line| {
            let mut cols = line.split('\t');
            let pid = cols.next()?.trim().to_owned();
            let timeout = cols.next()?.trim().parse().ok()?;
            pid.starts_with('<')
                .then_some(ConnectionRow { pid, timeout })
        })
}

// ---------------------------------------------------------------------------------------------
// Background work
// ---------------------------------------------------------------------------------------------

struct Slot<T> {
    result: Option<thread::Result<T>>,
    waker: Option<Waker>,
}

/// Work running beside the scenario (a thread, or a task of the async runtime), whose result
/// the scenario collects later: in async flavours by awaiting [`Task::poll_join`] (through
/// `env.join(task).await`), in blocking ones with [`Task::wait`]. A panic in the work is
/// re-raised where it is collected.
pub struct Task<T> {
    shared: Arc<(Mutex<Slot<T>>, Condvar)>,
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task").finish_non_exhaustive()
    }
}

/// The sending side of a [`Task`].
pub struct Completer<T> {
    shared: Arc<(Mutex<Slot<T>>, Condvar)>,
}

impl<T> fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completer").finish_non_exhaustive()
    }
}

impl<T> Completer<T> {
    /// Hands over the result (or the panic) of the work.
    pub fn complete(self, result: thread::Result<T>) {
        let (slot, ready) = &*self.shared;
        let waker = {
            let mut s = lock(slot);
            s.result = Some(result);
            s.waker.take()
        };
        ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Task<T> {
    /// A task and the handle that completes it.
    pub fn pair() -> (Task<T>, Completer<T>) {
        let shared = Arc::new((
            Mutex::new(Slot {
                result: None,
                waker: None,
            }),
            Condvar::new(),
        ));
        (
            Task {
                shared: shared.clone(),
            },
            Completer { shared },
        )
    }

    /// Runs `f` on a new OS thread.
    pub fn thread(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Task<T>
    where
        T: Send + 'static,
    {
        let (task, completer) = Task::pair();
        thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                completer.complete(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
            })
            .expect("spawn a thread");
        task
    }

    /// Whether the result is in.
    pub fn is_finished(&self) -> bool {
        lock(&self.shared.0).result.is_some()
    }

    /// The result once it is in; re-raises the work's panic.
    pub fn poll_join(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = lock(&self.shared.0);
        match s.result.take() {
            Some(Ok(v)) => Poll::Ready(v),
            Some(Err(panic)) => {
                drop(s);
                std::panic::resume_unwind(panic)
            }
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Blocks until the result is in (at most `limit`, then panics); re-raises the work's
    /// panic.
    pub fn wait(self, limit: Duration) -> T {
        match self.try_wait(limit) {
            Some(Ok(v)) => v,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => panic!("background work did not finish within {limit:?}"),
        }
    }

    /// Blocks until the result (or the work's panic) is in, at most `limit` (`None`).
    pub fn try_wait(self, limit: Duration) -> Option<thread::Result<T>> {
        let (slot, ready) = &*self.shared;
        let deadline = Instant::now() + limit;
        let mut s = lock(slot);
        loop {
            if let Some(result) = s.result.take() {
                return Some(result);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            s = ready
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_connection_in_a_listing() {
        let listing = concat!(
            "<rabbit@host.1.2.3>\t60\t[{\"product\",\"other\"}]\n",
            "<rabbit@host.1.9.0>\t13\t[{\"connection_name\",\"amqp-conformance.x.1-2.conn-0\"},",
            "{\"product\",\"amqp-rs\"}]\n",
        );
        let row = find_connection(listing, "amqp-conformance.x.1-2.conn-0").unwrap();
        assert_eq!(row.pid, "<rabbit@host.1.9.0>");
        assert_eq!(row.timeout, 13);
        assert!(find_connection(listing, "amqp-conformance.x.1-2.conn-1").is_none());
        // A name that is a prefix of another does not match it.
        assert!(find_connection(listing, "amqp-conformance.x.1-2.conn").is_none());
    }

    #[test]
    fn sequence_bodies_check_themselves() {
        check_seq_body(7, &seq_body(7));
        assert_ne!(seq_body(7), seq_body(8));
        let bad = std::panic::catch_unwind(|| check_seq_body(7, &seq_body(8)));
        assert!(bad.is_err());
        assert_eq!(random_bytes(1000, 5), random_bytes(1000, 5));
        assert_ne!(random_bytes(1000, 5), random_bytes(1000, 6));
        assert_eq!(fib(10), 55);
    }

    #[test]
    fn scopes_are_unique_and_track_names() {
        let a = Scope::new("s");
        let b = Scope::new("s");
        assert_ne!(a.prefix(), b.prefix());
        let q = a.queue("q");
        let x = a.exchange("x");
        let _untracked = a.name("n");
        assert_eq!(a.tracked_queues(), vec![q]);
        assert_eq!(a.tracked_exchanges(), vec![x]);
        assert_ne!(a.connection_name(), a.connection_name());
    }

    #[test]
    fn tasks_hand_over_results_and_panics() {
        assert_eq!(Task::thread("t", || 41 + 1).wait(WAIT), 42);
        let t = Task::thread("p", || -> u8 { panic!("boom") });
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.wait(WAIT)));
        assert!(caught.is_err());
    }
}
