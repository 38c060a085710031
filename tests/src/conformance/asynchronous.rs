//! The async flavour: the scenarios over [`amqp_client`]'s API, which every async adapter
//! (`amqp-tokio`, `amqp-async-std`, …) re-exports unchanged. An adapter plugs in by
//! implementing [`Runtime`] (connect, sleep, spawn, block on) and invoking
//! [`crate::async_broker_tests!`]; see the [module docs](super) and
//! `tests/tests/broker_tokio.rs`, `broker_async_std.rs`.

use std::future::Future;
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_client::{
    Confirmation, ConnectError, ConnectOptions, Connection, ConnectionEvent, Consumer, Delivery,
    Error, Events, PublishConfirm, ReturnedMessage, Returns,
};
use futures_util::StreamExt;
use futures_util::future::{self, Either, FutureExt};

use super::support::{self, BrokerNode, NODE_START_LIMIT, Scope, Task, WAIT};
use crate::node;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the scenarios need from an async runtime. Implementations are a handful of lines;
/// for tokio:
///
/// ```text
/// struct Tokio;
/// impl Runtime for Tokio {
///     fn block_on(&self, f: Pin<Box<dyn Future<Output = ()> + '_>>) {
///         tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all()
///             .build().unwrap().block_on(f)
///     }
///     fn spawn(&self, f: BoxFuture<'static, ()>) { drop(tokio::spawn(f)); }
///     fn connect(&self, o: ConnectOptions)
///     -> BoxFuture<'static, Result<Connection, ConnectError>> {
///         Box::pin(amqp_tokio::connect_with(o))
///     }
///     fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> { Box::pin(tokio::time::sleep(d)) }
/// }
/// ```
pub trait Runtime: Send + Sync + 'static {
    /// Runs `future` to completion on a runtime of its own (one per test, so tests run in
    /// parallel threads without sharing anything). Everything else is called from inside it.
    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>);
    /// Runs `future` as a task of the current runtime, beside the scenario.
    fn spawn(&self, future: BoxFuture<'static, ()>);
    /// Connects with the adapter under test.
    fn connect(
        &self,
        options: ConnectOptions,
    ) -> BoxFuture<'static, Result<Connection, ConnectError>>;
    /// The runtime's timer.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// What every scenario receives: the runtime, its unique names ([`Scope`], reached through
/// `Deref`) and bounded helpers, so a missing delivery fails the scenario instead of hanging
/// it. The blocking flavour's `Env` has the same methods without `async`.
#[derive(Clone)]
pub struct Env {
    runtime: Arc<dyn Runtime>,
    scope: Arc<Scope>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("scope", &self.scope).finish()
    }
}

impl Deref for Env {
    type Target = Scope;

    fn deref(&self) -> &Scope {
        &self.scope
    }
}

/// How long the cleanup pass after a scenario may take.
const CLEANUP_LIMIT: Duration = Duration::from_secs(30);

impl Env {
    /// An environment for one run of `scenario`.
    pub fn new(runtime: Arc<dyn Runtime>, scenario: &'static str) -> Env {
        Env {
            runtime,
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
    pub async fn connect(&self) -> Connection {
        let options = self.options();
        let shown = options.uri.to_string();
        self.try_connect(options).await.unwrap_or_else(|e| {
            panic!("cannot connect to the broker at {shown}: {e} (broker tests fail without one)")
        })
    }

    /// Connects with `options`, returning the failure.
    pub async fn try_connect(&self, options: ConnectOptions) -> Result<Connection, ConnectError> {
        self.runtime.connect(options).await
    }

    /// Sleeps on the runtime's timer.
    pub async fn sleep(&self, duration: Duration) {
        self.runtime.sleep(duration).await;
    }

    /// `future`'s output, or `None` if `limit` passes first.
    pub async fn within<F: Future>(&self, limit: Duration, future: F) -> Option<F::Output> {
        let future = pin!(future);
        match future::select(future, self.runtime.sleep(limit)).await {
            Either::Left((output, _)) => Some(output),
            Either::Right(_) => None,
        }
    }

    async fn next_item(
        &self,
        consumer: &mut Consumer,
        limit: Duration,
    ) -> Option<Option<Result<Delivery, Error>>> {
        // Most deliveries are already queued: take them without arming a timer.
        if let Some(item) = consumer.next().now_or_never() {
            return Some(item);
        }
        self.within(limit, consumer.next()).await
    }

    /// The consumer's next delivery; panics if the stream ends or fails, or nothing comes
    /// within [`WAIT`].
    pub async fn recv(&self, consumer: &mut Consumer) -> Delivery {
        match self.next_item(consumer, WAIT).await {
            Some(Some(Ok(d))) => d,
            Some(Some(Err(e))) => panic!("consumer {} failed: {e}", consumer.tag()),
            Some(None) => panic!(
                "consumer {} ended ({:?}) while a delivery was expected",
                consumer.tag(),
                consumer.end_reason()
            ),
            None => panic!("consumer {}: no delivery within {WAIT:?}", consumer.tag()),
        }
    }

    /// The next delivery if one comes within `limit`; panics if the stream ends or fails.
    pub async fn try_recv(&self, consumer: &mut Consumer, limit: Duration) -> Option<Delivery> {
        match self.next_item(consumer, limit).await {
            Some(Some(Ok(d))) => Some(d),
            Some(Some(Err(e))) => panic!("consumer {} failed: {e}", consumer.tag()),
            Some(None) => panic!(
                "consumer {} ended ({:?}) while a delivery was possible",
                consumer.tag(),
                consumer.end_reason()
            ),
            None => None,
        }
    }

    /// Waits (within [`WAIT`]) for the consumer's stream to end, skipping deliveries still
    /// queued; returns how many were skipped and the error it ended with (`None` for a
    /// clean end). Checks that nothing follows the end.
    pub async fn drain_to_end(&self, consumer: &mut Consumer) -> (usize, Option<Error>) {
        let deadline = Instant::now() + WAIT;
        let mut skipped = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(consumer, left).await {
                Some(Some(Ok(_))) => skipped += 1,
                Some(Some(Err(e))) => {
                    let after = self.next_item(consumer, WAIT).await;
                    assert!(
                        matches!(after, Some(None)),
                        "consumer {}: the stream went on after its error",
                        consumer.tag()
                    );
                    return (skipped, Some(e));
                }
                Some(None) => return (skipped, None),
                None => panic!(
                    "consumer {}: the stream did not end within {WAIT:?}",
                    consumer.tag()
                ),
            }
        }
    }

    /// The broker's answer to one publish (bounded by [`WAIT`]).
    pub async fn confirm(&self, confirm: PublishConfirm) -> Confirmation {
        self.within(WAIT, confirm)
            .await
            .unwrap_or_else(|| panic!("no publisher confirm within {WAIT:?}"))
    }

    /// The broker's answer to one publish, or `None` if `limit` passes first.
    pub async fn confirm_within(
        &self,
        confirm: PublishConfirm,
        limit: Duration,
    ) -> Option<Confirmation> {
        self.within(limit, confirm).await
    }

    /// The next returned message (bounded by [`WAIT`]).
    pub async fn next_return(&self, returns: &mut Returns) -> ReturnedMessage {
        match self.within(WAIT, returns.next()).await {
            Some(Some(r)) => r,
            Some(None) => panic!("the returns stream ended while a return was expected"),
            None => panic!("no returned message within {WAIT:?}"),
        }
    }

    /// The next connection event (bounded by [`WAIT`]); `None` once the stream is over.
    pub async fn next_event(&self, events: &mut Events) -> Option<ConnectionEvent> {
        self.within(WAIT, events.next())
            .await
            .unwrap_or_else(|| panic!("no connection event within {WAIT:?}"))
    }

    /// Runs `work()` beside the scenario as a task of the runtime. Written
    /// `env.spawn(move || async move { … })` so that the blocking flavour, where the same
    /// text loses `async`/`.await`, runs the closure on a thread.
    pub fn spawn<F, Fut, T>(&self, work: F) -> Task<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (task, completer) = Task::pair();
        self.runtime.spawn(Box::pin(async move {
            let result = AssertUnwindSafe(async move { work().await })
                .catch_unwind()
                .await;
            completer.complete(result);
        }));
        task
    }

    /// The result of a [`Env::spawn`]ed or background task (bounded by 3 × [`WAIT`]).
    pub async fn join<T>(&self, mut task: Task<T>) -> T {
        let limit = 3 * WAIT;
        self.within(limit, std::future::poll_fn(|cx| task.poll_join(cx)))
            .await
            .unwrap_or_else(|| panic!("background work did not finish within {limit:?}"))
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

    /// Runs `rabbitmqctl ARGS...` without blocking the runtime and returns its output.
    pub async fn rabbitmqctl(&self, args: &[&str]) -> String {
        self.join(self.rabbitmqctl_in_background(args)).await.0
    }

    /// Runs blocking `work` on a thread without blocking the runtime, bounded by `limit`.
    async fn off_thread<T: Send + 'static>(
        &self,
        what: &'static str,
        limit: Duration,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let mut task = Task::thread(what, work);
        self.within(limit, std::future::poll_fn(|cx| task.poll_join(cx)))
            .await
            .unwrap_or_else(|| panic!("{what} did not finish within {limit:?}"))
    }

    /// The TLS node shared by this test binary ([`node::shared_tls_node`]), started on first
    /// use (off the runtime).
    pub async fn tls_node(&self) -> &'static BrokerNode {
        self.off_thread("tls-node", NODE_START_LIMIT, node::shared_tls_node)
            .await
    }

    /// The node with an expired server certificate shared by this test binary
    /// ([`node::shared_expired_cert_node`]).
    pub async fn expired_cert_node(&self) -> &'static BrokerNode {
        self.off_thread(
            "expired-node",
            NODE_START_LIMIT,
            node::shared_expired_cert_node,
        )
        .await
    }

    /// Runs `rabbitmqctl ARGS...` on `node` without blocking the runtime; panics if it fails.
    pub async fn node_rabbitmqctl(&self, node: &'static BrokerNode, args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        self.off_thread("rabbitmqctl", support::CLI_TIMEOUT, move || {
            node.rabbitmqctl(&args).unwrap_or_else(|e| panic!("{e}"))
        })
        .await
    }
}

/// Runs one scenario on `runtime`: builds its [`Env`], runs it bounded by `limit` (a hang is
/// a failure, not a stuck CI job), then the cleanup pass (deleting the queues and exchanges
/// it named, whether it passed or not), and fails the calling test if either failed.
pub fn run<R, F, Fut>(runtime: R, scenario: &'static str, limit: Duration, body: F)
where
    R: Runtime,
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime: Arc<dyn Runtime> = Arc::new(runtime);
    let env = Env::new(runtime.clone(), scenario);
    let started = Instant::now();
    let mut outcome = None;
    let mut cleaned = None;
    runtime.block_on(Box::pin(async {
        let scenario = AssertUnwindSafe(body(env.clone())).catch_unwind();
        outcome = Some(env.within(limit, scenario).await);
        let cleanup = AssertUnwindSafe(scenarios::cleanup(env.clone())).catch_unwind();
        cleaned = Some(env.within(CLEANUP_LIMIT, cleanup).await);
    }));
    let elapsed = started.elapsed();
    let verdict = match &outcome {
        Some(Some(Ok(()))) => "passed",
        Some(None) => "TIMED OUT",
        _ => "FAILED",
    };
    let flavour = flavour_name::<R>();
    eprintln!("[conformance/{flavour}] {scenario}: {verdict} in {elapsed:.2?}");
    match outcome {
        Some(Some(Ok(()))) => {}
        Some(Some(Err(panic))) => std::panic::resume_unwind(panic),
        Some(None) => panic!("scenario `{scenario}` did not finish within {limit:?}"),
        None => panic!("the runtime returned without running scenario `{scenario}`"),
    }
    match cleaned {
        Some(Some(Ok(()))) => {}
        Some(Some(Err(panic))) => std::panic::resume_unwind(panic),
        _ => panic!("cleanup after `{scenario}` did not finish within {CLEANUP_LIMIT:?}"),
    }
}

/// Runs the recovery scenario ([`super::recovery`]) through `runtime`'s adapter: the client
/// side, [`recovery_scenario::recovery_client`], on a runtime of its own on a thread of its
/// own, the faults from the calling thread. Panics on failure.
pub fn recovery_through_faults<R: Runtime>(runtime: R) {
    let flavour = flavour_name::<R>();
    let runtime: Arc<dyn Runtime> = Arc::new(runtime);
    super::recovery::faults_are_recovered(flavour, move |side| {
        let env = Env::new(runtime.clone(), "recovery_through_faults");
        let mut tally = None;
        runtime.block_on(Box::pin(async {
            tally = Some(recovery_scenario::recovery_client(env, side).await);
        }));
        tally.expect("the runtime returned without running the recovery client")
    });
}

/// The adapter's name for the output: the `Runtime` type's name.
fn flavour_name<R>() -> &'static str {
    std::any::type_name::<R>()
        .rsplit("::")
        .next()
        .unwrap_or("async")
}

/// What the scenario text sees: the client API, [`Env`], the support helpers and the std
/// collections it uses.
pub mod prelude {
    pub use super::super::support::*;
    pub use super::Env;
    pub use amqp_client::*;
    pub use std::collections::{BTreeSet, HashMap, VecDeque};
    pub use std::time::{Duration, Instant};
}

/// The scenarios (the main text and the TLS text), expanded as async functions over
/// [`amqp_client`].
pub mod scenarios {
    use super::prelude::*;

    scenarios!(keep_async);
    tls_scenarios!(keep_async);
}

/// The client side of the recovery scenario ([`super::recovery`]), expanded as an async
/// function over [`amqp_client`].
pub mod recovery_scenario {
    use super::prelude::*;
    use crate::conformance::recovery::{FaultSide, RECOVERY_LIMIT, Tally};
    use amqp_client::amqp_proto::Event;
    use futures_util::StreamExt;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    recovery_scenario!(keep_async);
}
