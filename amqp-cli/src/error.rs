//! The CLI's error: a message for stderr and an exit code per class of failure.

use amqp_client::{ConnectError, Error, ErrorKind};

/// Exit codes, one per class of failure (listed in `amqp --help`).
pub mod exit {
    /// Anything not classed below (I/O on a local file, a task that failed, ...).
    pub const OTHER: u8 = 1;
    /// Bad arguments (clap's own code).
    pub const USAGE: u8 = 2;
    /// Cannot reach the broker: refused, unreachable, timed out, TLS failed, connection lost.
    pub const CONNECTION: u8 = 3;
    /// Login or access refused (bad credentials, 403, no access to the virtual host).
    pub const ACCESS: u8 = 4;
    /// 404: no such queue or exchange.
    pub const NOT_FOUND: u8 = 5;
    /// 405/406: resource locked, precondition failed (e.g. redeclared with other settings).
    pub const PRECONDITION: u8 = 6;
    /// Any other refusal by the broker (its reply code and text are printed).
    pub const BROKER: u8 = 7;
    /// `get` found the queue empty; `consume --count N` timed out before N messages.
    pub const NO_MESSAGE: u8 = 8;
}

/// The help text that lists the exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other failure (local I/O, internal)
  2  bad arguments
  3  cannot reach the broker (refused, unreachable, timeout, TLS, connection lost)
  4  login or access refused (bad credentials, 403, virtual host)
  5  not found (404: no such queue or exchange)
  6  precondition failed or resource locked (405, 406)
  7  other refusal by the broker (its reply code and text are printed)
  8  no message: `get` on an empty queue, `consume --count` timed out";

/// A failure to report: printed as `amqp: MESSAGE`, then the process exits with `code`.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn other(message: impl Into<String>) -> Self {
        CliError {
            code: exit::OTHER,
            message: message.into(),
        }
    }

    pub fn no_message(message: impl Into<String>) -> Self {
        CliError {
            code: exit::NO_MESSAGE,
            message: message.into(),
        }
    }
}

/// The exit code for an error of `kind`.
pub fn code_for(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Authentication | ErrorKind::AccessRefused | ErrorKind::NotAllowed => {
            exit::ACCESS
        }
        ErrorKind::NotFound => exit::NOT_FOUND,
        ErrorKind::PreconditionFailed | ErrorKind::ResourceLocked => exit::PRECONDITION,
        ErrorKind::ConnectionBroken
        | ErrorKind::Timeout
        | ErrorKind::Tls
        | ErrorKind::HeartbeatTimeout => exit::CONNECTION,
        ErrorKind::Usage => exit::USAGE,
        _ => exit::BROKER,
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError {
            code: code_for(e.kind()),
            message: e.to_string(),
        }
    }
}

impl From<ConnectError> for CliError {
    fn from(e: ConnectError) -> Self {
        CliError {
            code: code_for(e.kind()),
            message: e.to_string(),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::other(e.to_string())
    }
}
