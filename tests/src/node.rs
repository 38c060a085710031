//! A dedicated, throw-away RabbitMQ node for destructive and TLS tests.
//!
//! The shared broker on `127.0.0.1:5672` must never be reconfigured, stopped or restarted, so
//! tests that close connections from the server side, raise memory alarms, restart the broker
//! or need TLS/EXTERNAL authentication start their own node with [`BrokerNode::start`]:
//!
//! ```no_run
//! use amqp_conformance::node::{BrokerNode, NodeOptions};
//!
//! let node = BrokerNode::start(NodeOptions::tls()).expect("start a dedicated RabbitMQ node");
//! println!("plain: {}  tls: {}", node.uri(), node.tls_uri());
//! node.rabbitmqctl(["list_connections", "name", "user"]).unwrap();
//! // dropped here: the node is stopped and its directory removed
//! ```
//!
//! # What a node is
//!
//! * A unique Erlang node name (`amqp-rs-<pid>-<n>-<random>@localhost`), fresh loopback ports
//!   for AMQP, Erlang distribution and (optionally) AMQPS, all bound to `127.0.0.1` only.
//! * A temporary base directory holding `rabbitmq.conf` (new-style sysctl format), the
//!   enabled-plugins file, the Mnesia and log directories, an Erlang cookie and, for TLS nodes,
//!   the generated certificates ([`TestPki`]). It is `chown -R`-ed to the `rabbitmq` user.
//! * The Debian package's real scripts in `/usr/lib/rabbitmq/bin` (override with the
//!   `AMQP_TEST_RABBITMQ_BIN_DIR` environment variable). The `/usr/sbin` wrappers are *not*
//!   used: they `su` to `rabbitmq`, which resets `HOME` (and therefore the Erlang cookie) to
//!   `/var/lib/rabbitmq`, and they `cd` there.
//!
//! # Privileges and the Erlang cookie
//!
//! When the test runs as root (CI does), the node and every CLI call run as the `rabbitmq`
//! system user (uid/gid set on the child process, supplementary groups dropped), with
//! `HOME=<base>/home` containing a freshly generated `.erlang.cookie` (mode 0400). The server
//! and `rabbitmqctl` therefore always agree on the cookie, independently of
//! `/var/lib/rabbitmq/.erlang.cookie`, `/root/.erlang.cookie` or whether the shared broker ever
//! ran. As another user the node runs as that user, with the same private cookie. The Debian
//! `/etc/rabbitmq/rabbitmq-env.conf` and `rabbitmq.conf` are bypassed, and inherited
//! `RABBITMQ_*`/`ERL_*` variables are removed. A missing installation is an error
//! ([`NodeError::NotInstalled`]): tests fail loudly, they never skip.
//!
//! # Cost and sharing
//!
//! Starting a node takes about 4–10 s of wall time (most of a core; more while other builds run)
//! on the 2-core CI machine, stopping one about 1.5–3 s. Budget two or three nodes per binary:
//!
//! * Tests that change broker state (close connections, alarms, restarts) own their node:
//!   `let node = BrokerNode::start(..)?;` — it is stopped when dropped.
//! * Tests that only connect can share one node per test binary with [`shared_tls_node`] /
//!   [`shared_plain_node`]. Statics are never dropped, so such a node is stopped by its
//!   *watchdog*: every node gets a small `sh` process that notices when the test process is
//!   gone (normal exit, panic abort, Ctrl-C, kill) and then stops the node (SIGTERM, then
//!   SIGKILL after 30 s) and removes its directory. The same watchdog cleans up owned nodes
//!   whose `Drop` never ran.
//!
//! Set `AMQP_TEST_KEEP_NODE_DIR=1` to keep the base directory (logs, config) of nodes stopped
//! through [`BrokerNode::stop`]/`Drop`; its path is printed to stderr.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use tempfile::TempDir;

/// Where the Debian package installs the real (non-wrapper) RabbitMQ scripts.
pub const DEFAULT_RABBITMQ_BIN_DIR: &str = "/usr/lib/rabbitmq/bin";

/// Environment variable overriding [`DEFAULT_RABBITMQ_BIN_DIR`].
pub const BIN_DIR_ENV: &str = "AMQP_TEST_RABBITMQ_BIN_DIR";

/// Environment variable that, when set to a non-empty value other than `0`, keeps the node's
/// base directory after [`BrokerNode::stop`].
pub const KEEP_DIR_ENV: &str = "AMQP_TEST_KEEP_NODE_DIR";

/// The plugin that provides the `EXTERNAL` SASL mechanism (certificate login).
pub const AUTH_MECHANISM_SSL_PLUGIN: &str = "rabbitmq_auth_mechanism_ssl";

/// The default user that exists on every fresh node (loopback-only).
pub const DEFAULT_USER: &str = "guest";

/// Number of log lines included in errors.
const LOG_TAIL_LINES: usize = 40;
/// How long `stop` waits for the node to exit after `rabbitmqctl stop` / SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Default bound for a `rabbitmqctl` call made through [`BrokerNode::rabbitmqctl`].
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// Port range the RabbitMQ CLI tools use for their own distribution listener.
const CLI_DIST_PORTS: std::ops::RangeInclusive<u16> = 35672..=35682;
/// Attempts at starting a node when the chosen ports turn out to be taken.
const START_ATTEMPTS: usize = 3;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// What the harness could gather about a node when something went wrong.
#[derive(Debug, Clone, Default)]
pub struct NodeDiagnostics {
    /// The node's main log file.
    pub log_path: PathBuf,
    /// The last lines of that log (empty if the node never got far enough to write it).
    pub log_tail: String,
    /// The tail of what `rabbitmq-server` printed on stdout/stderr (configuration errors and
    /// early boot failures only show up here).
    pub startup_output: String,
    /// The "Slogan" line of `erl_crash.dump`, if the Erlang VM crashed.
    pub crash_slogan: Option<String>,
}

impl fmt::Display for NodeDiagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(slogan) = &self.crash_slogan {
            writeln!(f, "--- erl_crash.dump ---\n{slogan}")?;
        }
        if !self.startup_output.trim().is_empty() {
            writeln!(
                f,
                "--- rabbitmq-server output ---\n{}",
                self.startup_output.trim_end()
            )?;
        }
        if self.log_tail.trim().is_empty() {
            write!(f, "--- {} is empty or missing ---", self.log_path.display())
        } else {
            write!(
                f,
                "--- tail of {} ---\n{}",
                self.log_path.display(),
                self.log_tail.trim_end()
            )
        }
    }
}

/// Why a dedicated node could not be started, queried or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// RabbitMQ (the Debian package `rabbitmq-server`) is not installed here.
    #[error(
        "RabbitMQ is not installed: `{}` is missing; install the Debian package \
         `rabbitmq-server` (or set {BIN_DIR_ENV}). Broker tests never skip.",
        path.display()
    )]
    NotInstalled {
        /// The script that was looked for.
        path: PathBuf,
    },
    /// Running as root, but there is no `rabbitmq` system user to run the node as.
    #[error("running as root but the `rabbitmq` system user cannot be resolved: {detail}")]
    NoServiceUser {
        /// What the lookup said.
        detail: String,
    },
    /// The node user cannot reach the temporary directory (e.g. `TMPDIR` under `/root`).
    #[error(
        "the `rabbitmq` user cannot traverse {} (mode {mode:o}); point TMPDIR at a directory \
         such as /tmp",
        path.display()
    )]
    TempDirUnreachable {
        /// The ancestor directory lacking the search permission for others.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A filesystem or process operation of the harness failed.
    #[error("{action}: {source}")]
    Io {
        /// What the harness was doing.
        action: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Generating the test certificates failed.
    #[error("generating test certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    /// The node process exited, or its boot failed, before it was ready.
    #[error("RabbitMQ node {node} failed to start: {reason}\n{diagnostics}")]
    StartFailed {
        /// The node name.
        node: String,
        /// What was observed.
        reason: String,
        /// Log tail, boot output and crash slogan.
        diagnostics: Box<NodeDiagnostics>,
    },
    /// The node did not become ready in time.
    #[error("RabbitMQ node {node} was not ready within {timeout:?}: {reason}\n{diagnostics}")]
    StartTimeout {
        /// The node name.
        node: String,
        /// The bound given by [`NodeOptions::start_timeout`].
        timeout: Duration,
        /// What was still missing.
        reason: String,
        /// Log tail, boot output and crash slogan.
        diagnostics: Box<NodeDiagnostics>,
    },
    /// A CLI tool (`rabbitmqctl`, `rabbitmq-diagnostics`, ...) failed against the node.
    #[error("{0}")]
    Cli(Box<CliFailure>),
    /// The node could not be stopped, not even with SIGKILL.
    #[error("RabbitMQ node {node} did not stop: {reason}\n{diagnostics}")]
    StopFailed {
        /// The node name.
        node: String,
        /// What was observed.
        reason: String,
        /// Log tail of the node.
        diagnostics: Box<NodeDiagnostics>,
    },
}

/// Details of [`NodeError::Cli`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{tool} -n {node} {args}` failed ({status}):\n{output}\n{diagnostics}")]
#[non_exhaustive]
pub struct CliFailure {
    /// The tool.
    pub tool: String,
    /// The node name.
    pub node: String,
    /// The arguments, space-separated.
    pub args: String,
    /// Exit status, or "timed out after ...".
    pub status: String,
    /// What the tool printed (stdout then stderr).
    pub output: String,
    /// Log tail of the node.
    pub diagnostics: NodeDiagnostics,
}

impl NodeError {
    fn io(action: impl Into<String>, source: io::Error) -> Self {
        NodeError::Io {
            action: action.into(),
            source,
        }
    }

    /// Whether the failure was a listener/distribution port that someone else grabbed between
    /// picking it and the node binding it (the harness retries these).
    fn is_port_conflict(&self) -> bool {
        let diag = match self {
            NodeError::StartFailed { diagnostics, .. }
            | NodeError::StartTimeout { diagnostics, .. } => diagnostics,
            _ => return false,
        };
        let text = diag.to_string();
        ["eaddrinuse", "dist_port_already_used", "already in use"]
            .iter()
            .any(|needle| text.contains(needle))
    }
}

trait IoContext<T> {
    fn ctx(self, action: impl FnOnce() -> String) -> Result<T, NodeError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, action: impl FnOnce() -> String) -> Result<T, NodeError> {
        self.map_err(|e| NodeError::io(action(), e))
    }
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// Which server certificate a TLS node presents. Anything but [`ServerCertKind::Valid`] is for
/// negative client tests; every kind uses the same [`TestPki`] layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerCertKind {
    /// Issued by [`TestPki::ca_cert_path`] for `localhost`, `127.0.0.1` and `::1`.
    #[default]
    Valid,
    /// Like `Valid` but expired (valid 2000-01-01 .. 2001-01-01).
    Expired,
    /// Issued by the trusted CA but only for `wrong-host.invalid`.
    WrongHost,
    /// For `localhost`, but issued by the *other* CA ([`TestPki::other_ca_path`]).
    UntrustedIssuer,
}

/// How to configure a dedicated node. Start from [`NodeOptions::plain`] or [`NodeOptions::tls`].
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Open an AMQPS listener on a second port with generated certificates, enable the
    /// `rabbitmq_auth_mechanism_ssl` plugin and offer `PLAIN`, `AMQPLAIN` and `EXTERNAL`
    /// (`ssl_cert_login_from = common_name`).
    pub tls: bool,
    /// Which certificate the server presents.
    pub server_cert: ServerCertKind,
    /// `ssl_options.verify = verify_peer` (true) or `verify_none`.
    pub verify_peer: bool,
    /// `ssl_options.fail_if_no_peer_cert`: reject TLS clients without a certificate.
    pub fail_if_no_peer_cert: bool,
    /// Extra plugins for the enabled-plugins file.
    pub plugins: Vec<String>,
    /// Extra `rabbitmq.conf` lines (sysctl format), e.g. `"heartbeat = 5"` or
    /// `"vm_memory_high_watermark.relative = 0.0001"`. They come last, so they can override.
    pub extra_config: Vec<String>,
    /// Contents of an `advanced.config` (Erlang terms) for settings the sysctl format lacks.
    pub advanced_config: Option<String>,
    /// Upper bound for start (and restart) until the node answers on its ports.
    pub start_timeout: Duration,
    /// The Erlang cookie (default: a fresh random one). Nodes of one cluster share theirs.
    pub cookie: Option<String>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            tls: false,
            server_cert: ServerCertKind::Valid,
            verify_peer: true,
            fail_if_no_peer_cert: false,
            plugins: Vec::new(),
            extra_config: Vec::new(),
            advanced_config: None,
            start_timeout: Duration::from_secs(90),
            cookie: None,
        }
    }
}

impl NodeOptions {
    /// A node with a plain AMQP listener only.
    pub fn plain() -> Self {
        Self::default()
    }

    /// A node with a plain and a TLS listener, `verify_peer`, client certificates optional.
    pub fn tls() -> Self {
        NodeOptions {
            tls: true,
            ..Self::default()
        }
    }

    /// Adds one `rabbitmq.conf` line.
    pub fn config(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }

    /// Adds a plugin to the enabled-plugins file.
    pub fn plugin(mut self, name: impl Into<String>) -> Self {
        self.plugins.push(name.into());
        self
    }

    /// Sets [`NodeOptions::fail_if_no_peer_cert`].
    pub fn fail_if_no_peer_cert(mut self, on: bool) -> Self {
        self.fail_if_no_peer_cert = on;
        self
    }

    /// Sets [`NodeOptions::server_cert`].
    pub fn server_cert(mut self, kind: ServerCertKind) -> Self {
        self.server_cert = kind;
        self
    }

    /// Sets [`NodeOptions::cookie`].
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.cookie = Some(cookie.into());
        self
    }

    /// Sets [`NodeOptions::start_timeout`].
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// Certificates and keys generated for one TLS node, as PEM files in the node's `certs/`
/// directory. Keys are PKCS#8 ECDSA P-256, certificates are issued directly by a CA (no
/// intermediates).
///
/// | file | what |
/// | --- | --- |
/// | `ca.pem`, `ca.key` | the CA the server trusts for clients and that issued its certificate |
/// | `server.pem`, `server.key` | the server certificate of the chosen [`ServerCertKind`] |
/// | `client.pem`, `client.key` | `O=client, CN=guest`, issued by the CA (EXTERNAL logs in as `guest`) |
/// | `client-unknown-user.pem/.key` | `O=client, CN=no-such-user`, issued by the CA |
/// | `client-expired.pem/.key` | `CN=guest`, issued by the CA, expired in 2001 |
/// | `other-ca.pem`, `other-ca.key` | an unrelated CA |
/// | `other-client.pem/.key` | `CN=guest` issued by the unrelated CA |
#[derive(Debug, Clone)]
pub struct TestPki {
    dir: PathBuf,
}

impl TestPki {
    /// Generates everything into `dir` (which must exist).
    pub fn generate(dir: &Path, server: ServerCertKind) -> Result<Self, NodeError> {
        let (ca_cert, ca_key) = make_ca("amqp-rs test CA")?;
        let (other_ca_cert, other_ca_key) = make_ca("amqp-rs untrusted test CA")?;

        let mut files: Vec<(String, String)> = vec![
            ("ca.pem".into(), ca_cert.pem()),
            ("ca.key".into(), ca_key.serialize_pem()),
            ("other-ca.pem".into(), other_ca_cert.pem()),
            ("other-ca.key".into(), other_ca_key.serialize_pem()),
        ];

        // Server certificate.
        let (names, expired, untrusted): (&[&str], bool, bool) = match server {
            ServerCertKind::Valid => (&["localhost", "127.0.0.1", "::1"], false, false),
            ServerCertKind::Expired => (&["localhost", "127.0.0.1", "::1"], true, false),
            ServerCertKind::WrongHost => (&["wrong-host.invalid"], false, false),
            ServerCertKind::UntrustedIssuer => (&["localhost", "127.0.0.1", "::1"], false, true),
        };
        let mut params = leaf_params(names, names[0], None, ExtendedKeyUsagePurpose::ServerAuth)?;
        if expired {
            make_expired(&mut params);
        }
        let key = KeyPair::generate()?;
        let cert = if untrusted {
            params.signed_by(&key, &other_ca_cert, &other_ca_key)?
        } else {
            params.signed_by(&key, &ca_cert, &ca_key)?
        };
        files.push(("server.pem".into(), cert.pem()));
        files.push(("server.key".into(), key.serialize_pem()));

        // Client certificates.
        let clients: [(&str, &str, bool, bool); 4] = [
            ("client", DEFAULT_USER, false, false),
            ("client-unknown-user", "no-such-user", false, false),
            ("client-expired", DEFAULT_USER, true, false),
            ("other-client", DEFAULT_USER, false, true),
        ];
        for (stem, cn, expired, untrusted) in clients {
            let mut params =
                leaf_params(&[], cn, Some("client"), ExtendedKeyUsagePurpose::ClientAuth)?;
            if expired {
                make_expired(&mut params);
            }
            let key = KeyPair::generate()?;
            let cert = if untrusted {
                params.signed_by(&key, &other_ca_cert, &other_ca_key)?
            } else {
                params.signed_by(&key, &ca_cert, &ca_key)?
            };
            files.push((format!("{stem}.pem"), cert.pem()));
            files.push((format!("{stem}.key"), key.serialize_pem()));
        }

        for (name, contents) in files {
            let path = dir.join(&name);
            fs::write(&path, contents).ctx(|| format!("writing {}", path.display()))?;
            let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .ctx(|| format!("chmod {}", path.display()))?;
        }
        Ok(TestPki {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a file in [`TestPki::dir`], e.g. `"client-expired.pem"`.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The CA that issued the server and client certificates.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.path("ca.pem")
    }
    /// The server certificate.
    pub fn server_cert_path(&self) -> PathBuf {
        self.path("server.pem")
    }
    /// The server key.
    pub fn server_key_path(&self) -> PathBuf {
        self.path("server.key")
    }
    /// Client certificate `O=client, CN=guest` issued by the CA.
    pub fn client_cert_path(&self) -> PathBuf {
        self.path("client.pem")
    }
    /// Key of [`TestPki::client_cert_path`].
    pub fn client_key_path(&self) -> PathBuf {
        self.path("client.key")
    }
    /// An unrelated CA (neither the server nor the client certificates chain to it).
    pub fn other_ca_path(&self) -> PathBuf {
        self.path("other-ca.pem")
    }
    /// Client certificate `CN=guest` issued by the unrelated CA: the server rejects it.
    pub fn other_client_cert_path(&self) -> PathBuf {
        self.path("other-client.pem")
    }
    /// Key of [`TestPki::other_client_cert_path`].
    pub fn other_client_key_path(&self) -> PathBuf {
        self.path("other-client.key")
    }
    /// Client certificate for a user that does not exist (EXTERNAL login must fail).
    pub fn unknown_user_cert_path(&self) -> PathBuf {
        self.path("client-unknown-user.pem")
    }
    /// Key of [`TestPki::unknown_user_cert_path`].
    pub fn unknown_user_key_path(&self) -> PathBuf {
        self.path("client-unknown-user.key")
    }
    /// Expired client certificate `CN=guest`.
    pub fn expired_client_cert_path(&self) -> PathBuf {
        self.path("client-expired.pem")
    }
    /// Key of [`TestPki::expired_client_cert_path`].
    pub fn expired_client_key_path(&self) -> PathBuf {
        self.path("client-expired.key")
    }
}

fn make_ca(cn: &str) -> Result<(rcgen::Certificate, KeyPair), NodeError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "amqp-rs tests");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert, key))
}

fn leaf_params(
    names: &[&str],
    cn: &str,
    org: Option<&str>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, NodeError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*name).try_into()?),
        };
        params.subject_alt_names.push(san);
    }
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(org) = org {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn make_expired(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
}

// ---------------------------------------------------------------------------------------------
// The node
// ---------------------------------------------------------------------------------------------

/// Who the node and its CLI calls run as.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// A running dedicated RabbitMQ node. See the [module docs](self).
///
/// Dropping it stops the node (like [`BrokerNode::stop`]) and removes its directory.
#[derive(Debug)]
pub struct BrokerNode {
    name: String,
    amqp_port: u16,
    dist_port: u16,
    tls_port: Option<u16>,
    opts: NodeOptions,
    pki: Option<TestPki>,
    bin_dir: PathBuf,
    base: PathBuf,
    run_as: Option<RunAs>,
    /// The `rabbitmq-server` shell process; it leads the node's process group.
    server: Option<Child>,
    /// The `sh` watchdog that stops the node if this process goes away without `stop`.
    watchdog: Option<Child>,
    dir: Option<TempDir>,
}

static NODE_COUNTER: AtomicU32 = AtomicU32::new(0);

impl BrokerNode {
    /// Starts a dedicated node and waits until it is fully booted and its listeners answer.
    ///
    /// Takes about 4–10 s; bounded by [`NodeOptions::start_timeout`]. Retries with fresh ports
    /// if a chosen port was grabbed by someone else in the meantime.
    pub fn start(opts: NodeOptions) -> Result<BrokerNode, NodeError> {
        let mut attempt = 1;
        loop {
            match Self::start_once(opts.clone()) {
                Err(e) if attempt < START_ATTEMPTS && e.is_port_conflict() => attempt += 1,
                result => return result,
            }
        }
    }

    fn start_once(opts: NodeOptions) -> Result<BrokerNode, NodeError> {
        let bin_dir = std::env::var_os(BIN_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RABBITMQ_BIN_DIR));
        for tool in ["rabbitmq-server", "rabbitmqctl"] {
            let path = bin_dir.join(tool);
            if !path.is_file() {
                return Err(NodeError::NotInstalled { path });
            }
        }
        let run_as = resolve_run_as()?;

        let dir = tempfile::Builder::new()
            .prefix("amqp-rs-node-")
            .tempdir()
            .ctx(|| "creating the node's temporary directory".into())?;
        let base = dir.path().to_path_buf();
        // The node user must be able to reach its files through the directory.
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755))
            .ctx(|| format!("chmod {}", base.display()))?;
        if let Some(run_as) = run_as {
            check_traversable(&base, run_as)?;
        }
        for sub in ["home", "mnesia", "log", "certs"] {
            let path = base.join(sub);
            fs::create_dir(&path).ctx(|| format!("creating {}", path.display()))?;
        }
        let cookie = match &opts.cookie {
            Some(cookie) => cookie.clone(),
            None => random_token(32)?,
        };
        write_cookie(&base.join("home").join(".erlang.cookie"), &cookie)?;

        let ports = free_ports(if opts.tls { 3 } else { 2 })?;
        let name = format!(
            "amqp-rs-{}-{}-{}@localhost",
            std::process::id(),
            NODE_COUNTER.fetch_add(1, Ordering::Relaxed),
            random_token(4)?.to_ascii_lowercase()
        );
        let pki = if opts.tls {
            Some(TestPki::generate(&base.join("certs"), opts.server_cert)?)
        } else {
            None
        };

        let mut node = BrokerNode {
            name,
            amqp_port: ports[0],
            dist_port: ports[1],
            tls_port: ports.get(2).copied(),
            opts,
            pki,
            bin_dir,
            base,
            run_as,
            server: None,
            watchdog: None,
            dir: Some(dir),
        };
        node.write_config()?;
        if let Some(run_as) = node.run_as {
            chown_recursive(&node.base, run_as)?;
        }
        // On failure `node` is dropped, which kills whatever was started and removes the dir.
        node.launch()?;
        Ok(node)
    }

    /// The Erlang node name, `name@localhost`.
    pub fn node_name(&self) -> &str {
        &self.name
    }

    /// The plain AMQP port on 127.0.0.1.
    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    /// `127.0.0.1:amqp_port`.
    pub fn amqp_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.amqp_port))
    }

    /// The Erlang distribution port (what `rabbitmqctl` talks to).
    pub fn dist_port(&self) -> u16 {
        self.dist_port
    }

    /// The AMQPS port on 127.0.0.1.
    ///
    /// # Panics
    /// If the node was started without [`NodeOptions::tls`].
    pub fn tls_port(&self) -> u16 {
        self.tls_port
            .expect("this node was started without NodeOptions::tls")
    }

    /// `127.0.0.1:tls_port`.
    pub fn tls_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.tls_port()))
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// `amqps://guest:guest@localhost:TLSPORT/%2f`. The server certificate is valid for
    /// `localhost`, `127.0.0.1` and `::1`, but the listener is bound to 127.0.0.1 only: a
    /// client must fall back from `::1` to `127.0.0.1`, or connect to [`BrokerNode::tls_addr`]
    /// and verify the name `localhost`.
    ///
    /// # Panics
    /// If the node was started without [`NodeOptions::tls`].
    pub fn tls_uri(&self) -> String {
        format!("amqps://guest:guest@localhost:{}/%2f", self.tls_port())
    }

    /// The generated certificates.
    ///
    /// # Panics
    /// If the node was started without [`NodeOptions::tls`].
    pub fn pki(&self) -> &TestPki {
        self.pki
            .as_ref()
            .expect("this node was started without NodeOptions::tls")
    }

    /// Directory with the PEM files (see [`TestPki`]). Panics without TLS.
    pub fn cert_dir(&self) -> &Path {
        self.pki().dir()
    }
    /// See [`TestPki::ca_cert_path`]. Panics without TLS.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.pki().ca_cert_path()
    }
    /// See [`TestPki::client_cert_path`]. Panics without TLS.
    pub fn client_cert_path(&self) -> PathBuf {
        self.pki().client_cert_path()
    }
    /// See [`TestPki::client_key_path`]. Panics without TLS.
    pub fn client_key_path(&self) -> PathBuf {
        self.pki().client_key_path()
    }
    /// See [`TestPki::other_ca_path`]. Panics without TLS.
    pub fn other_ca_path(&self) -> PathBuf {
        self.pki().other_ca_path()
    }

    /// The options the node was started with.
    pub fn options(&self) -> &NodeOptions {
        &self.opts
    }

    /// The node's base directory (config, logs, Mnesia, certs).
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// The node's main log file.
    pub fn log_path(&self) -> PathBuf {
        self.base.join("log").join(format!("{}.log", self.name))
    }

    /// Log tail, boot output and crash slogan, as included in errors.
    pub fn diagnostics(&self) -> NodeDiagnostics {
        collect_diagnostics(&self.base, &self.log_path())
    }

    /// Whether the node's processes are still running (as far as this handle knows).
    pub fn is_running(&mut self) -> bool {
        match self.server.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Runs `rabbitmqctl -n NODE ARGS...` and returns its stdout. Bounded to 120 s.
    ///
    /// Examples: `["list_connections", "name", "user"]`,
    /// `["close_all_connections", "test"]`, `["set_vm_memory_high_watermark", "0.0001"]`,
    /// `["eval", "rabbit_plugins:active()."]`. Add `"-q"` to drop the banner line.
    pub fn rabbitmqctl<I, S>(&self, args: I) -> Result<String, NodeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cli("rabbitmqctl", args, CLI_TIMEOUT)
    }

    /// Runs `rabbitmq-diagnostics -n NODE ARGS...` (e.g. `["listeners"]`) and returns stdout.
    pub fn rabbitmq_diagnostics<I, S>(&self, args: I) -> Result<String, NodeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cli("rabbitmq-diagnostics", args, CLI_TIMEOUT)
    }

    /// Runs any RabbitMQ CLI tool from the bin dir (`rabbitmq-plugins`, `rabbitmq-queues`,
    /// ...) as `TOOL -n NODE ARGS...`, bounded by `timeout`, and returns stdout.
    pub fn cli<I, S>(&self, tool: &str, args: I, timeout: Duration) -> Result<String, NodeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut cmd = Command::new(self.bin_dir.join(tool));
        cmd.arg("-n").arg(&self.name).args(&args);
        self.prepare(&mut cmd);
        let shown = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let (status, stdout, stderr) = run_bounded(&mut cmd, timeout)
            .ctx(|| format!("running `{tool} -n {} {shown}`", self.name))?;
        match status {
            Some(status) if status.success() => Ok(stdout),
            other => Err(NodeError::Cli(Box::new(CliFailure {
                tool: tool.to_owned(),
                node: self.name.clone(),
                args: shown,
                status: match other {
                    Some(status) => status.to_string(),
                    None => format!("timed out after {timeout:?}"),
                },
                output: format!("{stdout}{stderr}").trim_end().to_owned(),
                diagnostics: self.diagnostics(),
            }))),
        }
    }

    /// Stops the node: `rabbitmqctl stop`, then waits for the processes to exit (SIGTERM and
    /// SIGKILL to its process group as fallbacks). Idempotent. The directory stays until the
    /// handle is dropped, so logs can still be read.
    pub fn stop(&mut self) -> Result<(), NodeError> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        let result = self.stop_child(&mut server, true);
        self.stop_watchdog();
        result
    }

    /// Kills the node at once, as a crash would: SIGKILL to its process group, no clean
    /// shutdown. [`BrokerNode::restart`] brings it back with the same data.
    pub fn kill(&mut self) -> Result<(), NodeError> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        kill_group(server.id(), "KILL");
        wait_child(&mut server, Duration::from_secs(10));
        self.stop_watchdog();
        Ok(())
    }

    /// Stops the node and starts it again with the same name, ports, data and certificates
    /// (e.g. to test client recovery after a broker restart).
    pub fn restart(&mut self) -> Result<(), NodeError> {
        self.stop()?;
        self.launch()
    }

    fn stop_child(&self, server: &mut Child, graceful: bool) -> Result<(), NodeError> {
        let pgid = server.id();
        if matches!(server.try_wait(), Ok(None)) {
            if graceful {
                // Errors are fine here (e.g. the node died on its own): the fallbacks follow.
                let _ = self.cli("rabbitmqctl", ["stop"], Duration::from_secs(60));
                if wait_child(server, STOP_GRACE) {
                    kill_group(pgid, "KILL"); // leftovers such as erl_child_setup
                    return Ok(());
                }
            }
            kill_group(pgid, "TERM");
            if !wait_child(
                server,
                if graceful {
                    STOP_GRACE
                } else {
                    Duration::from_secs(5)
                },
            ) {
                kill_group(pgid, "KILL");
                if !wait_child(server, Duration::from_secs(10)) {
                    return Err(NodeError::StopFailed {
                        node: self.name.clone(),
                        reason: format!("process group {pgid} survived SIGKILL"),
                        diagnostics: Box::new(self.diagnostics()),
                    });
                }
            }
        }
        kill_group(pgid, "KILL");
        Ok(())
    }

    fn stop_watchdog(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }

    /// Sets up environment, user and working directory shared by the server and CLI calls.
    fn prepare(&self, cmd: &mut Command) {
        for (key, _) in std::env::vars_os() {
            let key_str = key.to_string_lossy();
            if key_str.starts_with("RABBITMQ_") || key_str.starts_with("ERL_") {
                cmd.env_remove(&key);
            }
        }
        let base = &self.base;
        let mut env: BTreeMap<&str, OsString> = BTreeMap::new();
        env.insert("HOME", base.join("home").into());
        env.insert("LANG", "C.UTF-8".into());
        env.insert("LC_ALL", "C.UTF-8".into());
        env.insert("RABBITMQ_NODENAME", self.name.clone().into());
        env.insert("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into());
        env.insert("RABBITMQ_NODE_PORT", self.amqp_port.to_string().into());
        env.insert("RABBITMQ_DIST_PORT", self.dist_port.to_string().into());
        env.insert("RABBITMQ_MNESIA_BASE", base.join("mnesia").into());
        env.insert("RABBITMQ_LOG_BASE", base.join("log").into());
        // 3.10 accepts the path with the `.conf` extension (the log's "config file(s)" line
        // confirms it is read); without an extension it would look for `.conf` then `.config`.
        env.insert("RABBITMQ_CONFIG_FILE", base.join("rabbitmq.conf").into());
        env.insert(
            "RABBITMQ_ADVANCED_CONFIG_FILE",
            base.join("advanced.config").into(),
        );
        env.insert(
            "RABBITMQ_ENABLED_PLUGINS_FILE",
            base.join("enabled_plugins").into(),
        );
        env.insert(
            "RABBITMQ_CONF_ENV_FILE",
            base.join("rabbitmq-env.conf").into(),
        );
        env.insert("RABBITMQ_PID_FILE", base.join("node.pid").into());
        env.insert("ERL_EPMD_ADDRESS", "127.0.0.1".into());
        env.insert(
            "ERL_FLAGS",
            "-kernel inet_dist_use_interface {127,0,0,1}".into(),
        );
        cmd.envs(env).current_dir(base).stdin(Stdio::null());
        if let Some(run_as) = self.run_as {
            // std drops supplementary groups (setgroups(0)) when switching away from root.
            cmd.uid(run_as.uid).gid(run_as.gid);
        }
    }

    fn write_config(&self) -> Result<(), NodeError> {
        let base = &self.base;
        let opts = &self.opts;
        let mut conf = vec![
            "# Generated by amqp_conformance::node for a throw-away test node.".to_owned(),
            format!("listeners.tcp.1 = 127.0.0.1:{}", self.amqp_port),
            "loopback_users.guest = true".to_owned(),
            "log.console = false".to_owned(),
            "log.file.level = info".to_owned(),
        ];
        let mut plugins = opts.plugins.clone();
        if let (Some(tls_port), Some(pki)) = (self.tls_port, &self.pki) {
            conf.extend([
                format!("listeners.ssl.1 = 127.0.0.1:{tls_port}"),
                format!("ssl_options.cacertfile = {}", pki.ca_cert_path().display()),
                format!(
                    "ssl_options.certfile = {}",
                    pki.server_cert_path().display()
                ),
                format!("ssl_options.keyfile = {}", pki.server_key_path().display()),
                format!(
                    "ssl_options.verify = {}",
                    if opts.verify_peer {
                        "verify_peer"
                    } else {
                        "verify_none"
                    }
                ),
                format!(
                    "ssl_options.fail_if_no_peer_cert = {}",
                    opts.fail_if_no_peer_cert
                ),
                "auth_mechanisms.1 = PLAIN".to_owned(),
                "auth_mechanisms.2 = AMQPLAIN".to_owned(),
                "auth_mechanisms.3 = EXTERNAL".to_owned(),
                "ssl_cert_login_from = common_name".to_owned(),
            ]);
            plugins.insert(0, AUTH_MECHANISM_SSL_PLUGIN.to_owned());
        }
        conf.extend(opts.extra_config.iter().cloned());
        conf.push(String::new());
        write_file(&base.join("rabbitmq.conf"), &conf.join("\n"))?;

        plugins.dedup();
        write_file(
            &base.join("enabled_plugins"),
            &format!("[{}].\n", plugins.join(",")),
        )?;
        if let Some(advanced) = &opts.advanced_config {
            write_file(&base.join("advanced.config"), advanced)?;
        }
        // Replaces Debian's /etc/rabbitmq/rabbitmq-env.conf (which names the shared node).
        write_file(
            &base.join("rabbitmq-env.conf"),
            "# Intentionally empty: settings come from the environment.\n",
        )?;
        Ok(())
    }

    /// Spawns `rabbitmq-server` and the watchdog, then waits until the node is ready.
    fn launch(&mut self) -> Result<(), NodeError> {
        // Fresh boot output and crash dump for this run.
        let _ = fs::remove_file(self.base.join("erl_crash.dump"));
        let stdout = create_owned(&self.base.join("log").join("startup_log"), self.run_as)?;
        let stderr = create_owned(&self.base.join("log").join("startup_err"), self.run_as)?;

        // Foreground (not `-detached`): errors from before logging is set up (bad config) are
        // printed on stdout, which we keep; and the child handle tells us when the node exits.
        // Its own process group keeps terminal Ctrl-C away from it (the watchdog handles that)
        // and lets us signal the shell, the VM and erl_child_setup together.
        let mut cmd = Command::new(self.bin_dir.join("rabbitmq-server"));
        self.prepare(&mut cmd);
        cmd.stdout(stdout).stderr(stderr).process_group(0);
        let server = cmd.spawn().ctx(|| {
            format!(
                "spawning {}",
                self.bin_dir.join("rabbitmq-server").display()
            )
        })?;
        let pgid = server.id();
        self.server = Some(server);
        self.watchdog = Some(spawn_watchdog(pgid, &self.base)?);

        if let Err(e) = self.wait_ready() {
            if let Some(mut server) = self.server.take() {
                let _ = self.stop_child(&mut server, false);
            }
            self.stop_watchdog();
            return Err(e);
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<(), NodeError> {
        let timeout = self.opts.start_timeout;
        let deadline = Instant::now() + timeout;

        // 1. The distribution listener comes up early in boot; polling it is cheap, whereas
        //    `rabbitmqctl await_startup` fails at once while the node is not registered yet.
        self.poll_port(self.dist_port, deadline, "distribution port")?;

        // 2. The full boot (plugins, listeners) as seen by the node itself. Right after a
        //    killed node comes back, epmd can still answer "not running" for a moment, and
        //    while the node is still in prelaunch (the `rabbit` application not started
        //    yet) `await_startup` fails at once with "application not running" instead of
        //    waiting (seen under load on a restarted node): ask again while the node lives
        //    and time is left.
        let awaited = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let secs = remaining.as_secs().max(1).to_string();
            let result = self.cli(
                "rabbitmqctl",
                ["await_startup", "--timeout", &secs],
                remaining + Duration::from_secs(15),
            );
            match &result {
                Err(NodeError::Cli(f))
                    if (f.output.contains("not running at all")
                        || f.output.contains("application not running"))
                        && Instant::now() < deadline =>
                {
                    self.check_alive()?;
                    thread::sleep(Duration::from_millis(500));
                }
                _ => break result,
            }
        };
        if let Err(e) = awaited {
            self.check_alive()?;
            let reason = match e {
                NodeError::Cli(failure) => format!(
                    "`rabbitmqctl await_startup` failed ({}):\n{}",
                    failure.status, failure.output
                ),
                other => return Err(other),
            };
            return Err(NodeError::StartFailed {
                node: self.name.clone(),
                reason,
                diagnostics: Box::new(self.diagnostics()),
            });
        }

        // 3. The listeners answer.
        self.poll_port(self.amqp_port, deadline, "AMQP port")?;
        if let Some(tls_port) = self.tls_port {
            self.poll_port(tls_port, deadline, "TLS port")?;
        }
        Ok(())
    }

    fn poll_port(&mut self, port: u16, deadline: Instant, what: &str) -> Result<(), NodeError> {
        loop {
            self.check_alive()?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NodeError::StartTimeout {
                    node: self.name.clone(),
                    timeout: self.opts.start_timeout,
                    reason: format!("{what} 127.0.0.1:{port} does not accept connections"),
                    diagnostics: Box::new(self.diagnostics()),
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_alive(&mut self) -> Result<(), NodeError> {
        let status = match self.server.as_mut() {
            Some(child) => child
                .try_wait()
                .ctx(|| "polling the rabbitmq-server process".into())?,
            None => None,
        };
        match status {
            Some(status) => Err(NodeError::StartFailed {
                node: self.name.clone(),
                reason: format!("rabbitmq-server exited ({status})"),
                diagnostics: Box::new(self.diagnostics()),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for BrokerNode {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("amqp_conformance::node: {e}");
        }
        let keep = std::env::var_os(KEEP_DIR_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        if let Some(dir) = self.dir.take() {
            if keep {
                let path = dir.keep();
                eprintln!(
                    "amqp_conformance::node: kept {} for node {}",
                    path.display(),
                    self.name
                );
            } else if let Err(e) = dir.close() {
                eprintln!(
                    "amqp_conformance::node: removing {}: {e}",
                    self.base.display()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared nodes
// ---------------------------------------------------------------------------------------------

static SHARED_TLS: OnceLock<Result<BrokerNode, String>> = OnceLock::new();
static SHARED_PLAIN: OnceLock<Result<BrokerNode, String>> = OnceLock::new();
static SHARED_EXPIRED: OnceLock<Result<BrokerNode, String>> = OnceLock::new();

fn shared(
    cell: &'static OnceLock<Result<BrokerNode, String>>,
    opts: NodeOptions,
) -> &'static BrokerNode {
    match cell.get_or_init(|| BrokerNode::start(opts).map_err(|e| e.to_string())) {
        Ok(node) => node,
        Err(e) => panic!("the shared test node could not be started: {e}"),
    }
}

/// A TLS node ([`NodeOptions::tls`]) shared by all tests of this test binary, started on first
/// use. Use it only for tests that do not change broker-wide state. It cannot be stopped
/// through this reference; its watchdog stops it after the test process exits.
///
/// # Panics
/// If the node cannot be started (every caller panics with the same message).
pub fn shared_tls_node() -> &'static BrokerNode {
    shared(&SHARED_TLS, NodeOptions::tls())
}

/// Like [`shared_tls_node`], for a TLS node presenting an expired server certificate
/// ([`ServerCertKind::Expired`]): one per test binary, however many tests (or runtimes) use it.
///
/// # Panics
/// If the node cannot be started.
pub fn shared_expired_cert_node() -> &'static BrokerNode {
    shared(
        &SHARED_EXPIRED,
        NodeOptions::tls().server_cert(ServerCertKind::Expired),
    )
}

/// Like [`shared_tls_node`], for a plain node ([`NodeOptions::plain`]).
///
/// # Panics
/// If the node cannot be started.
pub fn shared_plain_node() -> &'static BrokerNode {
    shared(&SHARED_PLAIN, NodeOptions::plain())
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The user to run the node as: `rabbitmq` when we are root, ourselves otherwise.
fn resolve_run_as() -> Result<Option<RunAs>, NodeError> {
    // The owner of /proc/self is the effective uid (no libc needed).
    let euid = fs::metadata("/proc/self")
        .ctx(|| "reading /proc/self to find the effective uid".into())?
        .uid();
    if euid != 0 {
        return Ok(None);
    }
    let out = Command::new("getent")
        .args(["passwd", "rabbitmq"])
        .output()
        .ctx(|| "running `getent passwd rabbitmq`".into())?;
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let fields: Vec<&str> = line.trim().split(':').collect();
    match (fields.get(2), fields.get(3)) {
        (Some(uid), Some(gid)) if out.status.success() => match (uid.parse(), gid.parse()) {
            (Ok(uid), Ok(gid)) => Ok(Some(RunAs { uid, gid })),
            _ => Err(NodeError::NoServiceUser {
                detail: format!("unparsable passwd entry {line:?}"),
            }),
        },
        _ => Err(NodeError::NoServiceUser {
            detail: format!(
                "`getent passwd rabbitmq` said {:?} ({}); is the Debian package \
                 `rabbitmq-server` installed?",
                line.trim(),
                out.status
            ),
        }),
    }
}

/// `n` distinct free loopback ports, avoiding the ports RabbitMQ CLI tools and the shared
/// broker use. Held open together while choosing so they are distinct.
fn free_ports(n: usize) -> Result<Vec<u16>, NodeError> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .ctx(|| "binding 127.0.0.1:0 to find a free port".into())?;
        let port = listener
            .local_addr()
            .ctx(|| "reading the local address of a probe listener".into())?
            .port();
        held.push(listener);
        if CLI_DIST_PORTS.contains(&port) || [4369, 5671, 5672, 25672].contains(&port) {
            continue;
        }
        ports.push(port);
    }
    Ok(ports)
}

/// Every ancestor of `base` must be searchable by the node user.
fn check_traversable(base: &Path, run_as: RunAs) -> Result<(), NodeError> {
    for dir in base.ancestors().skip(1) {
        let meta = fs::metadata(dir).ctx(|| format!("stat {}", dir.display()))?;
        let mode = meta.mode() & 0o7777;
        let searchable = if meta.uid() == run_as.uid {
            mode & 0o100 != 0
        } else if meta.gid() == run_as.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !searchable {
            return Err(NodeError::TempDirUnreachable {
                path: dir.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

fn random_bytes(n: usize) -> Result<Vec<u8>, NodeError> {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .ctx(|| "reading /dev/urandom".into())?;
    Ok(buf)
}

/// `n` random upper-case letters.
fn random_token(n: usize) -> Result<String, NodeError> {
    Ok(random_bytes(n)?
        .into_iter()
        .map(|b| char::from(b'A' + b % 26))
        .collect())
}

/// A fresh random Erlang cookie, for nodes that must share one ([`NodeOptions::cookie`]).
pub fn random_cookie() -> Result<String, NodeError> {
    random_token(32)
}

fn write_cookie(path: &Path, cookie: &str) -> Result<(), NodeError> {
    write_file(path, cookie)?;
    // Erlang refuses cookie files readable by group or others.
    fs::set_permissions(path, fs::Permissions::from_mode(0o400))
        .ctx(|| format!("chmod 0400 {}", path.display()))
}

fn write_file(path: &Path, contents: &str) -> Result<(), NodeError> {
    fs::write(path, contents).ctx(|| format!("writing {}", path.display()))
}

fn create_owned(path: &Path, run_as: Option<RunAs>) -> Result<fs::File, NodeError> {
    let file = fs::File::create(path).ctx(|| format!("creating {}", path.display()))?;
    if let Some(run_as) = run_as {
        std::os::unix::fs::chown(path, Some(run_as.uid), Some(run_as.gid))
            .ctx(|| format!("chown {}", path.display()))?;
    }
    Ok(file)
}

/// `chown -R uid:gid path` (no symlinks are created by the harness).
fn chown_recursive(path: &Path, run_as: RunAs) -> Result<(), NodeError> {
    std::os::unix::fs::lchown(path, Some(run_as.uid), Some(run_as.gid))
        .ctx(|| format!("chown {}", path.display()))?;
    if fs::symlink_metadata(path)
        .ctx(|| format!("stat {}", path.display()))?
        .is_dir()
    {
        for entry in fs::read_dir(path).ctx(|| format!("listing {}", path.display()))? {
            let entry = entry.ctx(|| format!("listing {}", path.display()))?;
            chown_recursive(&entry.path(), run_as)?;
        }
    }
    Ok(())
}

/// Runs `cmd` with piped output, killing it after `timeout`. `None` status means timed out.
fn run_bounded(
    cmd: &mut Command,
    timeout: Duration,
) -> io::Result<(Option<ExitStatus>, String, String)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    Ok((
        status,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    ))
}

/// Waits up to `timeout` for `child` to exit; true if it did.
fn wait_child(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `kill -s SIG -- -PGID` (procps `kill`; the workspace forbids `unsafe`, so no libc).
fn kill_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A detached `sh` that waits for this process to exit and then stops the node's process
/// group and removes the base directory. Killed by [`BrokerNode::stop`].
fn spawn_watchdog(pgid: u32, base: &Path) -> Result<Child, NodeError> {
    const SCRIPT: &str = r#"
owner=$1; pgid=$2; base=$3
trap '' INT HUP
alive() { env kill -s 0 -- "-$pgid" 2>/dev/null; }
# A zombie owner counts as gone (its reaper may be slow).
owner_running() {
    state=$(sed -n 's/^.*) \([A-Za-z]\).*$/\1/p' "/proc/$owner/stat" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
while owner_running; do
    alive || exit 0
    sleep 1
done
if alive; then
    env kill -s TERM -- "-$pgid" 2>/dev/null
    i=0
    while [ "$i" -lt 30 ] && alive; do sleep 1; i=$((i + 1)); done
    env kill -s KILL -- "-$pgid" 2>/dev/null
fi
rm -rf -- "$base"
"#;
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("amqp-rs-node-watchdog")
        .arg(std::process::id().to_string())
        .arg(pgid.to_string())
        .arg(base)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ctx(|| "spawning the node watchdog".into())
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The first `head` and last `tail` lines: boot failures state their cause first (e.g.
/// "You've tried to set X, but there is no setting with that name") and then crash at length.
fn head_and_tail(text: &str, head: usize, tail: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= head + tail {
        return lines.join("\n");
    }
    format!(
        "{}\n[... {} lines ...]\n{}",
        lines[..head].join("\n"),
        lines.len() - head - tail,
        lines[lines.len() - tail..].join("\n")
    )
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn collect_diagnostics(base: &Path, log_path: &Path) -> NodeDiagnostics {
    let log_dir = base.join("log");
    let startup = format!(
        "{}{}",
        read_lossy(&log_dir.join("startup_log")),
        read_lossy(&log_dir.join("startup_err"))
    );
    let crash_slogan = fs::File::open(base.join("erl_crash.dump"))
        .ok()
        .and_then(|f| {
            let mut head = Vec::new();
            let _ = f.take(16 * 1024).read_to_end(&mut head);
            String::from_utf8_lossy(&head)
                .lines()
                .find(|l| l.starts_with("Slogan:"))
                .map(str::to_owned)
        });
    NodeDiagnostics {
        log_path: log_path.to_path_buf(),
        log_tail: tail_lines(&read_lossy(log_path), LOG_TAIL_LINES),
        startup_output: head_and_tail(&startup, LOG_TAIL_LINES / 2, LOG_TAIL_LINES / 2),
        crash_slogan,
    }
}
