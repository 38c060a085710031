//! The client adapters and the enum the driver uses to pick one.
//!
//! ------------------------------------------------------------------------
//! HOW TO ADD A CLIENT — it plugs in here:
//!   1. `bench/Cargo.toml`: the dependency.
//!   2. A module `src/clients/<name>_client.rs` with a unit struct and
//!      `impl Client for It { ... }` following the rules documented on
//!      `harness::Client`.
//!   3. Below: the `mod`, a `ClientKind` variant, add it to `ALL`, give it a
//!      `name()`, decide `is_ours()`, and add its arms in `run()` and
//!      `delete_queue()`.
//!
//! Ours: `amqp-tokio` and `amqp-async-std` (`ours_async.rs`, one shared
//! implementation: both re-export the same amqp-client API), and
//! `amqp-blocking` (`ours_blocking.rs`). Because `is_ours()` is true for
//! them, the driver prints ratio columns against the better of the reference
//! clients (lapin, amqprs).
//! ------------------------------------------------------------------------

mod amqprs_client;
mod lapin_client;
mod ours_async;
mod ours_blocking;

use anyhow::{Result, bail};

use crate::harness::{Client, Params, Scenario, Timer, run_scenario};

pub use amqprs_client::Amqprs;
pub use lapin_client::Lapin;
pub use ours_async::{AmqpAsyncStd, AmqpTokio};
pub use ours_blocking::AmqpBlocking;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientKind {
    /// Not a client: the kernel floor (`floor.rs`), same bytes, no AMQP.
    Floor,
    /// Not a client library: the broker-paced floor (`raw.rs`), a minimal
    /// AMQP client that does only what the scenario requires.
    Raw,
    Lapin,
    Amqprs,
    AmqpTokio,
    AmqpAsyncStd,
    AmqpBlocking,
}

impl ClientKind {
    pub const ALL: [ClientKind; 7] = [
        ClientKind::Floor,
        ClientKind::Raw,
        ClientKind::Lapin,
        ClientKind::Amqprs,
        ClientKind::AmqpTokio,
        ClientKind::AmqpAsyncStd,
        ClientKind::AmqpBlocking,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Floor => "floor",
            ClientKind::Raw => "raw",
            ClientKind::Lapin => "lapin",
            ClientKind::Amqprs => "amqprs",
            ClientKind::AmqpTokio => "amqp-tokio",
            ClientKind::AmqpAsyncStd => "amqp-async-std",
            ClientKind::AmqpBlocking => "amqp-blocking",
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
            ClientKind::Floor | ClientKind::Raw | ClientKind::Lapin | ClientKind::Amqprs => false,
            ClientKind::AmqpTokio | ClientKind::AmqpAsyncStd | ClientKind::AmqpBlocking => true,
        }
    }

    /// The reference clients ours are compared with.
    pub fn is_anchor(self) -> bool {
        matches!(self, ClientKind::Lapin | ClientKind::Amqprs)
    }

    /// Runs `scenario` with this client; queue cleanup included.
    pub async fn run(self, scenario: Scenario, p: &Params) -> Result<Timer> {
        match self {
            ClientKind::Floor => bail!("the floor is run by floor::run, not as a client"),
            ClientKind::Raw => bail!("the raw floor is run by raw::run, not as a client"),
            ClientKind::Lapin => run_scenario::<Lapin>(scenario, p).await,
            ClientKind::Amqprs => run_scenario::<Amqprs>(scenario, p).await,
            ClientKind::AmqpTokio => run_scenario::<AmqpTokio>(scenario, p).await,
            ClientKind::AmqpAsyncStd => run_scenario::<AmqpAsyncStd>(scenario, p).await,
            ClientKind::AmqpBlocking => run_scenario::<AmqpBlocking>(scenario, p).await,
        }
    }

    /// Best-effort queue deletion (used by the parent when a child died).
    pub async fn delete_queue(self, p: &Params) -> Result<()> {
        match self {
            ClientKind::Floor => Ok(()),
            ClientKind::Raw => Lapin::delete_queue(p).await,
            ClientKind::Lapin => Lapin::delete_queue(p).await,
            ClientKind::Amqprs => Amqprs::delete_queue(p).await,
            ClientKind::AmqpTokio => AmqpTokio::delete_queue(p).await,
            ClientKind::AmqpAsyncStd => AmqpAsyncStd::delete_queue(p).await,
            ClientKind::AmqpBlocking => AmqpBlocking::delete_queue(p).await,
        }
    }
}
