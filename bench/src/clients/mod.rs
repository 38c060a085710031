//! The client adapters and the enum the driver uses to pick one.
//!
//! ------------------------------------------------------------------------
//! HOW TO ADD OUR CLIENT (`amqp-tokio`) — it plugs in here:
//!   1. `bench/Cargo.toml`: `amqp-tokio = { path = "../amqp-tokio" }`.
//!   2. New module `src/clients/amqp_tokio_client.rs` with
//!      `pub struct AmqpTokio;` and `impl Client for AmqpTokio { ... }`
//!      following the rules documented on `harness::Client`.
//!   3. Below: `mod amqp_tokio_client;`, a variant `ClientKind::AmqpTokio`,
//!      add it to `ALL`, give it a `name()` ("amqp-tokio"), make `is_ours()`
//!      return true for it, and add its arms in `run()` and `delete_queue()`.
//!
//! The driver then interleaves it with the others and, because `is_ours()`
//! is true, prints ratio columns against the better of lapin/amqprs.
//! ------------------------------------------------------------------------

mod amqprs_client;
mod lapin_client;

use anyhow::{Result, bail};

use crate::harness::{Client, Params, Scenario, Timer, run_scenario};

pub use amqprs_client::Amqprs;
pub use lapin_client::Lapin;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientKind {
    Lapin,
    Amqprs,
    // AmqpTokio,  <- our client goes here (see module docs).
}

impl ClientKind {
    pub const ALL: [ClientKind; 2] = [ClientKind::Lapin, ClientKind::Amqprs];

    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Lapin => "lapin",
            ClientKind::Amqprs => "amqprs",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        for k in Self::ALL {
            if k.name() == s {
                return Ok(k);
            }
        }
        let known: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
        bail!("unknown client {s:?} (known: {})", known.join(", "))
    }

    /// True for the project's own client. Ratio columns (vs the better of the
    /// reference clients) are printed only when such a client took part.
    pub fn is_ours(self) -> bool {
        match self {
            ClientKind::Lapin | ClientKind::Amqprs => false,
        }
    }

    /// Runs `scenario` with this client; queue cleanup included.
    pub async fn run(self, scenario: Scenario, p: &Params) -> Result<Timer> {
        match self {
            ClientKind::Lapin => run_scenario::<Lapin>(scenario, p).await,
            ClientKind::Amqprs => run_scenario::<Amqprs>(scenario, p).await,
        }
    }

    /// Best-effort queue deletion (used by the parent when a child died).
    pub async fn delete_queue(self, p: &Params) -> Result<()> {
        match self {
            ClientKind::Lapin => Lapin::delete_queue(p).await,
            ClientKind::Amqprs => Amqprs::delete_queue(p).await,
        }
    }
}
