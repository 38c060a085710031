//! The blocking flavour: the same scenario text over [`amqp_blocking`], expanded through
//! [`strip_await!`](crate::strip_await) (no `async`, no `.await`; consumers, events and
//! returns are iterators). [`Env`] has the async flavour's methods, minus `async`. Tests
//! come from [`crate::blocking_broker_tests!`].

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_blocking::{
    Confirmation, ConnectError, ConnectOptions, Connection, ConnectionEvent, Consumer, ConsumerEnd,
    Delivery, Error, Events, PublishConfirm, ReturnedMessage, Returns,
};

use super::support::{self, BrokerNode, NODE_START_LIMIT, Scope, Task, WAIT};
use crate::node;

/// What every scenario receives; see [`super::asynchronous::Env`], whose methods these are
/// without `async`.
#[derive(Debug, Clone)]
pub struct Env {
    scope: Arc<Scope>,
}

impl Deref for Env {
    type Target = Scope;

    fn deref(&self) -> &Scope {
        &self.scope
    }
}

/// How long the cleanup pass after a scenario may take.
const CLEANUP_LIMIT: Duration = Duration::from_secs(30);

/// One item of a consumer, told apart from the blocking API's `recv_timeout`, which reports
/// the end of the iterator as an error.
enum Item {
    Delivery(Delivery),
    Failed(Error),
    Ended,
    TimedOut,
}

fn next_item(consumer: &mut Consumer, limit: Duration) -> Item {
    match consumer.recv_timeout(limit) {
        Ok(Some(d)) => Item::Delivery(d),
        Ok(None) => Item::TimedOut,
        // The error item carries the reason the stream ends with; after it (or a clean end)
        // `recv_timeout` reports the end itself as a usage error.
        Err(e) => match consumer.end_reason() {
            Some(ConsumerEnd::Closed(reason)) if *reason == e => Item::Failed(e),
            Some(_) => Item::Ended,
            None => Item::Failed(e),
        },
    }
}

impl Env {
    /// An environment for one run of `scenario`.
    pub fn new(scenario: &'static str) -> Env {
        Env {
            scope: Arc::new(Scope::new(scenario)),
        }
    }

    /// Connect options for the broker, with a fresh unique `connection_name`.
    pub fn options(&self) -> ConnectOptions {
        self.options_with_query("")
    }

    /// Like [`Env::options`], with `query` (e.g. `heartbeat=13`) added to the URI.
    pub fn options_with_query(&self, query: &str) -> ConnectOptions {
        let uri = support::broker_uri();
        let uri = if query.is_empty() {
            uri
        } else {
            support::with_query(&uri, query)
        };
        let mut options =
            ConnectOptions::parse(&uri).unwrap_or_else(|e| panic!("bad broker URI {uri}: {e}"));
        options.config.connection_name = Some(self.connection_name());
        options
    }

    /// Connects to the broker; panics (the scenario fails) when it does not answer.
    pub fn connect(&self) -> Connection {
        let options = self.options();
        let shown = options.uri.to_string();
        self.try_connect(options).unwrap_or_else(|e| {
            panic!("cannot connect to the broker at {shown}: {e} (broker tests fail without one)")
        })
    }

    /// Connects with `options`, returning the failure.
    pub fn try_connect(&self, options: ConnectOptions) -> Result<Connection, ConnectError> {
        amqp_blocking::connect_with(options)
    }

    /// Sleeps.
    pub fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }

    /// The consumer's next delivery; panics if the stream ends or fails, or nothing comes
    /// within [`WAIT`].
    pub fn recv(&self, consumer: &mut Consumer) -> Delivery {
        match next_item(consumer, WAIT) {
            Item::Delivery(d) => d,
            Item::Failed(e) => panic!("consumer {} failed: {e}", consumer.tag()),
            Item::Ended => panic!(
                "consumer {} ended ({:?}) while a delivery was expected",
                consumer.tag(),
                consumer.end_reason()
            ),
            Item::TimedOut => panic!("consumer {}: no delivery within {WAIT:?}", consumer.tag()),
        }
    }

    /// The next delivery if one comes within `limit`; panics if the stream ends or fails.
    pub fn try_recv(&self, consumer: &mut Consumer, limit: Duration) -> Option<Delivery> {
        match next_item(consumer, limit) {
            Item::Delivery(d) => Some(d),
            Item::Failed(e) => panic!("consumer {} failed: {e}", consumer.tag()),
            Item::Ended => panic!(
                "consumer {} ended ({:?}) while a delivery was possible",
                consumer.tag(),
                consumer.end_reason()
            ),
            Item::TimedOut => None,
        }
    }

    /// Waits (within [`WAIT`]) for the consumer's stream to end, skipping deliveries still
    /// queued; returns how many were skipped and the error it ended with (`None` for a
    /// clean end). Checks that nothing follows the end.
    pub fn drain_to_end(&self, consumer: &mut Consumer) -> (usize, Option<Error>) {
        let deadline = Instant::now() + WAIT;
        let mut skipped = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match next_item(consumer, left) {
                Item::Delivery(_) => skipped += 1,
                Item::Failed(e) => {
                    assert!(
                        matches!(next_item(consumer, WAIT), Item::Ended),
                        "consumer {}: the stream went on after its error",
                        consumer.tag()
                    );
                    return (skipped, Some(e));
                }
                Item::Ended => return (skipped, None),
                Item::TimedOut => panic!(
                    "consumer {}: the stream did not end within {WAIT:?}",
                    consumer.tag()
                ),
            }
        }
    }

    /// The broker's answer to one publish (bounded by [`WAIT`]).
    pub fn confirm(&self, mut confirm: PublishConfirm) -> Confirmation {
        confirm
            .wait_timeout(WAIT)
            .unwrap_or_else(|| panic!("no publisher confirm within {WAIT:?}"))
    }

    /// The broker's answer to one publish, or `None` if `limit` passes first.
    pub fn confirm_within(
        &self,
        mut confirm: PublishConfirm,
        limit: Duration,
    ) -> Option<Confirmation> {
        confirm.wait_timeout(limit)
    }

    /// The next returned message (bounded by [`WAIT`]).
    pub fn next_return(&self, returns: &mut Returns) -> ReturnedMessage {
        returns
            .recv_timeout(WAIT)
            .unwrap_or_else(|| panic!("no returned message within {WAIT:?} (or the stream ended)"))
    }

    /// The next connection event (bounded by [`WAIT`]).
    pub fn next_event(&self, events: &mut Events) -> Option<ConnectionEvent> {
        let event = events.recv_timeout(WAIT);
        assert!(
            event.is_some(),
            "no connection event within {WAIT:?} (or the stream ended)"
        );
        event
    }

    /// Runs `work()` on a thread beside the scenario.
    pub fn spawn<F, T>(&self, work: F) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Task::thread(self.scenario(), work)
    }

    /// The result of a [`Env::spawn`]ed or background task (bounded by 3 × [`WAIT`]).
    pub fn join<T>(&self, task: Task<T>) -> T {
        task.wait(3 * WAIT)
    }

    /// Starts `rabbitmqctl ARGS...` on a thread; the task yields its output and the moment it
    /// returned. Panics (when joined) if the command fails.
    pub fn rabbitmqctl_in_background(&self, args: &[&str]) -> Task<(String, Instant)> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        Task::thread("rabbitmqctl", move || {
            let out = support::rabbitmqctl(&args).unwrap_or_else(|e| panic!("{e}"));
            (out, Instant::now())
        })
    }

    /// Runs `rabbitmqctl ARGS...` and returns its output.
    pub fn rabbitmqctl(&self, args: &[&str]) -> String {
        self.join(self.rabbitmqctl_in_background(args)).0
    }

    /// The TLS node shared by this test binary ([`node::shared_tls_node`]), started on first
    /// use.
    pub fn tls_node(&self) -> &'static BrokerNode {
        Task::thread("tls-node", node::shared_tls_node).wait(NODE_START_LIMIT)
    }

    /// The node with an expired server certificate shared by this test binary
    /// ([`node::shared_expired_cert_node`]).
    pub fn expired_cert_node(&self) -> &'static BrokerNode {
        Task::thread("expired-node", node::shared_expired_cert_node).wait(NODE_START_LIMIT)
    }

    /// Runs `rabbitmqctl ARGS...` on `node`; panics if it fails.
    pub fn node_rabbitmqctl(&self, node: &'static BrokerNode, args: &[&str]) -> String {
        node.rabbitmqctl(args).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Runs `work(env)` on a thread, bounded by `limit`: `None` if it did not finish in time
/// (the thread is abandoned), else its result or panic.
fn bounded(env: &Env, limit: Duration, work: fn(Env)) -> Option<std::thread::Result<()>> {
    let env = env.clone();
    Task::thread(env.scenario(), move || work(env)).try_wait(limit)
}

/// Runs one scenario through the blocking adapter, bounded by `limit` (a hang is a failure),
/// then the cleanup pass; fails the calling test if either failed. See
/// [`super::asynchronous::run`].
pub fn run(scenario: &'static str, limit: Duration, body: fn(Env)) {
    let env = Env::new(scenario);
    let started = Instant::now();
    let outcome = bounded(&env, limit, body);
    let cleaned = bounded(&env, CLEANUP_LIMIT, scenarios::cleanup);
    let elapsed = started.elapsed();
    let verdict = match &outcome {
        Some(Ok(())) => "passed",
        None => "TIMED OUT",
        Some(Err(_)) => "FAILED",
    };
    eprintln!("[conformance/blocking] {scenario}: {verdict} in {elapsed:.2?}");
    match outcome {
        Some(Ok(())) => {}
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        None => panic!("scenario `{scenario}` did not finish within {limit:?}"),
    }
    match cleaned {
        Some(Ok(())) => {}
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        None => panic!("cleanup after `{scenario}` did not finish within {CLEANUP_LIMIT:?}"),
    }
}

/// Runs the recovery scenario ([`super::recovery`]) through the blocking adapter: the
/// client side, [`recovery_scenario::recovery_client`], on a thread of its own, the faults
/// from the calling thread. Panics on failure.
pub fn recovery_through_faults() {
    super::recovery::faults_are_recovered("blocking", |side| {
        recovery_scenario::recovery_client(Env::new("recovery_through_faults"), side)
    });
}

/// What the scenario text sees: the blocking client API, [`Env`], the support helpers and
/// the std collections it uses.
pub mod prelude {
    pub use super::super::support::*;
    pub use super::Env;
    pub use amqp_blocking::*;
    pub use std::collections::{BTreeSet, HashMap, VecDeque};
    pub use std::time::{Duration, Instant};
}

/// The scenarios (the main text and the TLS text), expanded without `async`/`.await`.
pub mod scenarios {
    use super::prelude::*;

    scenarios!(strip_await);
    tls_scenarios!(strip_await);
}

/// The client side of the recovery scenario ([`super::recovery`]), expanded without
/// `async`/`.await` over [`amqp_blocking`].
pub mod recovery_scenario {
    use super::prelude::*;
    use crate::conformance::recovery::{FaultSide, RECOVERY_LIMIT, Tally};
    use amqp_blocking::amqp_proto::Event;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    recovery_scenario!(strip_await);
}
