//! The real-broker conformance suite: the scenarios every adapter must pass against RabbitMQ,
//! written once and run through each adapter — `tests/tests/broker_tokio.rs` (amqp-tokio),
//! `broker_async_std.rs` (amqp-async-std, on async-std's and on smol's executor) and
//! `broker_blocking.rs` (amqp-blocking).
//!
//! # What is tested
//!
//! The six RabbitMQ tutorials (hello world, work queues with fair dispatch, publish/subscribe,
//! routing, topics, RPC over direct reply-to), 100,000 confirmed publishes consumed intact,
//! mandatory returns, the soft errors 404/405/406 and what they close, a queue deleted under
//! its consumer, `basic.get`, transactions, nack/reject, exchange-to-exchange bindings,
//! headers exchanges, priority queues, TTL with dead-lettering, a 10 MiB body, 500 channels,
//! heartbeats (as `rabbitmqctl` reports them, and keeping an idle connection up), a
//! connection killed by the broker, a client-side close ending every stream, refused logins
//! and unreachable ports. The list, with each scenario's time
//! limit, is in [`crate::async_broker_tests!`]'s source (`__conformance_scenario_list!`).
//!
//! The broker is `$AMQP_URI` (default `amqp://guest:guest@127.0.0.1:5672/%2f`, the shared
//! broker). Two scenarios use `rabbitmqctl` (`$AMQP_TEST_RABBITMQCTL`, default
//! `rabbitmqctl`) on it: one lists connections, one closes *its own* connection, found by a
//! unique `connection_name`; nothing else touches broker configuration. Without a broker
//! every scenario fails (never skips).
//!
//! # Structure
//!
//! * The scenario text (the private `scenarios.rs` beside this module) is a `macro_rules!`
//!   body, `scenarios!(mode)`, that hands each scenario's tokens to `mode!`. A *flavour* is a
//!   module that provides the names the text uses — the client API (`Connection`,
//!   `FieldTable`, …), an `Env` and the [`support`] helpers — and expands the text in it:
//!   [`asynchronous`] as written, [`blocking`] through [`strip_await!`](crate::strip_await).
//! * Every scenario is `pub async fn name(env: Env)`; it fails by panicking. `Env` gives it
//!   unique names (`env.queue("x")` → `amqp-conformance.<scenario>.<pid>-<n>-<t>.x`, recorded
//!   for cleanup), connections, and helpers that are *bounded*: `env.recv(&mut consumer)`,
//!   `env.try_recv(..)`, `env.drain_to_end(..)`, `env.confirm(publish_confirm)`,
//!   `env.next_return(..)`, `env.next_event(..)`, `env.spawn(move || async move { … })` and
//!   `env.join(task)`, `env.rabbitmqctl(..)`.
//! * The runners ([`asynchronous::run`], [`blocking::run`]) run one scenario bounded by its
//!   time limit (a hang fails the test, it never blocks CI), then the `cleanup` scenario,
//!   which deletes every queue and exchange the run named, whether the scenario passed or
//!   not. The async runner gives each test a runtime of its own.
//! * Tests are generated per adapter by [`crate::async_broker_tests!`] and
//!   [`crate::blocking_broker_tests!`]: one `#[test]` per scenario, so cargo runs them in
//!   parallel threads.
//!
//! # An async adapter
//!
//! The async adapters re-export `amqp_client`'s types unchanged, so the async flavour serves
//! all of them. A test file implements [`asynchronous::Runtime`] (`block_on`, `spawn`,
//! `connect`, `sleep`: about 20 lines) and invokes the macro:
//!
//! ```text
//! struct AsyncStd;
//! impl amqp_conformance::conformance::asynchronous::Runtime for AsyncStd { /* … */ }
//! amqp_conformance::async_broker_tests!(AsyncStd);
//! ```
//!
//! # The blocking adapter: the same text without `async`
//!
//! The blocking API has the same method names without `.await`, and its consumers, events
//! and returns are iterators. The same text serves it through a second expansion that
//! removes `async` and `.await` token by token ([`strip_await!`](crate::strip_await)):
//! `async fn` becomes `fn`, `x.await` becomes `x`, and `move || async move { … }` becomes
//! `move || { … }` (spans are kept, so errors point at the scenario text). So the text
//! follows three rules:
//!
//! 1. Whatever the two APIs spell differently goes through `Env`, whose methods have the
//!    same names in both flavours: `env.confirm(c)` (`c.await` / `c.wait_timeout(..)`),
//!    `env.recv(&mut consumer)` (stream / iterator, both bounded),
//!    `env.spawn(move || async move { … })` (a runtime task / a thread), `env.join(task)`.
//! 2. No other `async` block, no `select!`/`join!`: concurrency is `env.spawn` plus
//!    `env.join`, which a thread does as well as a task.
//! 3. Only names both crates export (the blocking crate re-exports the option structs,
//!    `Error`, `ErrorKind`, `Confirmation`, … of `amqp_client`).
//!
//! A new scenario is therefore one function in `scenarios.rs` and one line (name, time
//! limit) in `__conformance_scenario_list!`; every adapter runs it.
//!
//! # Recovery
//!
//! The automatic-recovery scenario ([`recovery`]: close_connection, stop_app/start_app, a
//! killed node, a stalled then cut link, on a node of its own) is a third text,
//! `recovery_scenario!`, for its client side only (publisher, consumer, event watcher); the
//! faults are plain blocking code shared by every adapter. Each flavour expands the text in
//! its `recovery_scenario` module and runs it with `recovery_through_faults`
//! ([`asynchronous::recovery_through_faults`], [`blocking::recovery_through_faults`]), one
//! test per binary.
//!
//! # TLS
//!
//! The TLS scenarios (`amqps://`, settings from the URI and from code, SASL EXTERNAL with a
//! client certificate, `verify_none`, `connection.update-secret`, and each way a TLS
//! connection must fail promptly with a typed error) are a second text, `tls_scenarios.rs`,
//! with the same rules, expanded beside the main text (in `asynchronous::scenarios`,
//! `blocking::scenarios`, whose helpers it uses) and listed in a list of its own,
//! `__conformance_tls_scenario_list!`, so that a binary can run them or not; tests come
//! from [`crate::async_tls_tests!`] and [`crate::blocking_tls_tests!`]. They run against
//! dedicated nodes ([`crate::node`], needs the `rabbitmq-server` package; fails without it):
//! the test binary's shared TLS node and, for the expired-certificate scenario, its shared
//! node with an expired certificate, reached through `env.tls_node()` and
//! `env.expired_cert_node()` (started off the runtime).

#[macro_use]
mod scenarios;
#[macro_use]
mod tls_scenarios;

/// The async flavour's expansion of the scenario text: the text as written.
macro_rules! keep_async {
    ($($text:tt)*) => { $($text)* };
}

// Before the flavours, which expand its `recovery_scenario!` text.
#[macro_use]
pub mod recovery;

pub mod asynchronous;
pub mod support;

/// Removes `async` and `.await` from Rust code, token by token (including inside
/// parentheses, brackets and braces), to turn the async scenario text into blocking code:
/// `async fn f()` → `fn f()`, `x.await` → `x`, `async move { … }` and `async { … }` →
/// `{ … }`. Spans are kept, so compile errors point at the scenario text.
///
/// It is a tt-muncher: each step moves one token, so expand one scenario per invocation
/// (as `scenarios!` does) and raise `recursion_limit` for long ones.
#[macro_export]
macro_rules! strip_await {
    ($($code:tt)*) => { $crate::__strip_await! { @out [] @stack [] @in $($code)* } };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __strip_await {
    // Done.
    (@out [$($out:tt)*] @stack [] @in) => { $($out)* };
    // End of a group: wrap it, go on with what followed it.
    (@out [$($out:tt)*] @stack [[( ) [$($pout:tt)*] [$($prest:tt)*]] $($stack:tt)*] @in) => {
        $crate::__strip_await! { @out [$($pout)* ($($out)*)] @stack [$($stack)*] @in $($prest)* }
    };
    (@out [$($out:tt)*] @stack [[[ ] [$($pout:tt)*] [$($prest:tt)*]] $($stack:tt)*] @in) => {
        $crate::__strip_await! { @out [$($pout)* [$($out)*]] @stack [$($stack)*] @in $($prest)* }
    };
    (@out [$($out:tt)*] @stack [[{ } [$($pout:tt)*] [$($prest:tt)*]] $($stack:tt)*] @in) => {
        $crate::__strip_await! { @out [$($pout)* {$($out)*}] @stack [$($stack)*] @in $($prest)* }
    };
    // The tokens that go.
    (@out $out:tt @stack $stack:tt @in . await $($rest:tt)*) => {
        $crate::__strip_await! { @out $out @stack $stack @in $($rest)* }
    };
    (@out $out:tt @stack $stack:tt @in async move $($rest:tt)*) => {
        $crate::__strip_await! { @out $out @stack $stack @in $($rest)* }
    };
    (@out $out:tt @stack $stack:tt @in async $($rest:tt)*) => {
        $crate::__strip_await! { @out $out @stack $stack @in $($rest)* }
    };
    // A group: process its contents first.
    (@out $out:tt @stack [$($stack:tt)*] @in ( $($inner:tt)* ) $($rest:tt)*) => {
        $crate::__strip_await! { @out [] @stack [[( ) $out [$($rest)*]] $($stack)*] @in $($inner)* }
    };
    (@out $out:tt @stack [$($stack:tt)*] @in [ $($inner:tt)* ] $($rest:tt)*) => {
        $crate::__strip_await! { @out [] @stack [[[ ] $out [$($rest)*]] $($stack)*] @in $($inner)* }
    };
    (@out $out:tt @stack [$($stack:tt)*] @in { $($inner:tt)* } $($rest:tt)*) => {
        $crate::__strip_await! { @out [] @stack [[{ } $out [$($rest)*]] $($stack)*] @in $($inner)* }
    };
    // Any other token stays.
    (@out [$($out:tt)*] @stack $stack:tt @in $token:tt $($rest:tt)*) => {
        $crate::__strip_await! { @out [$($out)* $token] @stack $stack @in $($rest)* }
    };
}

// After `strip_await!`, which it expands the text with.
pub mod blocking;

/// Generates one `#[test]` per scenario, running it through an async adapter: pass a value
/// implementing [`conformance::asynchronous::Runtime`](crate::conformance::asynchronous::Runtime).
///
/// ```text
/// amqp_conformance::async_broker_tests!(Tokio);
/// ```
#[macro_export]
macro_rules! async_broker_tests {
    ($runtime:expr) => {
        $crate::__conformance_scenario_list!(__conformance_async_test, $runtime);
    };
}

/// Generates one `#[test]` per scenario, running it through `amqp-blocking`.
///
/// ```text
/// amqp_conformance::blocking_broker_tests!();
/// ```
#[macro_export]
macro_rules! blocking_broker_tests {
    () => {
        $crate::__conformance_scenario_list!(__conformance_blocking_test,);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_blocking_test {
    (() $name:ident $seconds:literal) => {
        #[test]
        fn $name() {
            $crate::conformance::blocking::run(
                stringify!($name),
                ::std::time::Duration::from_secs($seconds),
                $crate::conformance::blocking::scenarios::$name,
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_async_test {
    (($runtime:expr) $name:ident $seconds:literal) => {
        #[test]
        fn $name() {
            $crate::conformance::asynchronous::run(
                $runtime,
                stringify!($name),
                ::std::time::Duration::from_secs($seconds),
                $crate::conformance::asynchronous::scenarios::$name,
            );
        }
    };
}

/// Generates one `#[test]` per TLS scenario (the private `tls_scenarios.rs`), running it
/// through an async adapter against the binary's shared dedicated nodes; see
/// [`async_broker_tests!`](crate::async_broker_tests).
///
/// ```text
/// mod tls { use super::*; amqp_conformance::async_tls_tests!(Tokio); }
/// ```
#[macro_export]
macro_rules! async_tls_tests {
    ($runtime:expr) => {
        $crate::__conformance_tls_scenario_list!(__conformance_async_test, $runtime);
    };
}

/// Generates one `#[test]` per TLS scenario, running it through `amqp-blocking`.
#[macro_export]
macro_rules! blocking_tls_tests {
    () => {
        $crate::__conformance_tls_scenario_list!(__conformance_blocking_test,);
    };
}

/// Every TLS scenario with its time limit in seconds (starting the binary's shared node
/// included), handed to `$each!` along with `$ctx`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tls_scenario_list {
    ($each:ident, $($ctx:tt)*) => {
        $crate::$each! { ($($ctx)*) tls_publish_consume_and_update_secret 120 }
        $crate::$each! { ($($ctx)*) tls_settings_in_code 120 }
        $crate::$each! { ($($ctx)*) tls_external_login_with_a_client_certificate 120 }
        $crate::$each! { ($($ctx)*) tls_expired_certificate_unless_verification_is_off 120 }
        $crate::$each! { ($($ctx)*) tls_unknown_ca_is_rejected 120 }
        $crate::$each! { ($($ctx)*) tls_wrong_host_name_is_rejected 120 }
        $crate::$each! { ($($ctx)*) tls_plain_amqp_to_the_tls_port_fails_promptly 120 }
        $crate::$each! { ($($ctx)*) tls_to_the_plain_port_fails_promptly 120 }
        $crate::$each! { ($($ctx)*) tls_external_without_a_client_certificate 120 }
        $crate::$each! { ($($ctx)*) tls_client_certificate_from_an_unknown_ca 120 }
        $crate::$each! { ($($ctx)*) tls_unusable_settings_fail_before_dialling 30 }
    };
}

/// Every scenario with its time limit in seconds, handed to `$each!` along with `$ctx`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_scenario_list {
    ($each:ident, $($ctx:tt)*) => {
        $crate::$each! { ($($ctx)*) tutorial_hello_world 30 }
        $crate::$each! { ($($ctx)*) tutorial_work_queues 30 }
        $crate::$each! { ($($ctx)*) tutorial_publish_subscribe 30 }
        $crate::$each! { ($($ctx)*) tutorial_routing 30 }
        $crate::$each! { ($($ctx)*) tutorial_topics 30 }
        $crate::$each! { ($($ctx)*) tutorial_rpc 30 }
        $crate::$each! { ($($ctx)*) publish_confirm_100k 75 }
        $crate::$each! { ($($ctx)*) mandatory_returns_no_route 30 }
        $crate::$each! { ($($ctx)*) passive_declare_missing_queue_404 30 }
        $crate::$each! { ($($ctx)*) exclusive_queue_locked_405 30 }
        $crate::$each! { ($($ctx)*) redeclare_mismatch_406 30 }
        $crate::$each! { ($($ctx)*) conditional_deletes_406 30 }
        $crate::$each! { ($($ctx)*) queue_deleted_under_consumer 30 }
        $crate::$each! { ($($ctx)*) basic_get_and_get_empty 30 }
        $crate::$each! { ($($ctx)*) tx_commit_and_rollback 30 }
        $crate::$each! { ($($ctx)*) nack_and_reject 30 }
        $crate::$each! { ($($ctx)*) exchange_to_exchange_bindings 30 }
        $crate::$each! { ($($ctx)*) headers_exchange_all_any 30 }
        $crate::$each! { ($($ctx)*) priority_queue_ordering 30 }
        $crate::$each! { ($($ctx)*) message_ttl_dead_lettering 30 }
        $crate::$each! { ($($ctx)*) large_body_10mib 45 }
        $crate::$each! { ($($ctx)*) five_hundred_channels 45 }
        $crate::$each! { ($($ctx)*) heartbeat_in_rabbitmqctl 60 }
        $crate::$each! { ($($ctx)*) heartbeats_keep_idle_connection_alive 30 }
        $crate::$each! { ($($ctx)*) request_timeout_on_a_stalled_link 30 }
        $crate::$each! { ($($ctx)*) commands_held_by_a_recovery_time_out 30 }
        $crate::$each! { ($($ctx)*) connection_killed_by_broker 60 }
        $crate::$each! { ($($ctx)*) client_close_ends_streams_and_fails_later_calls 30 }
        $crate::$each! { ($($ctx)*) nothing_listening_and_host_names 30 }
        $crate::$each! { ($($ctx)*) wrong_password_fails_promptly 30 }
        $crate::$each! { ($($ctx)*) unknown_vhost_fails_promptly 30 }
    };
}

#[cfg(test)]
mod tests {
    // A miniature blocking API with the async one's method names, to show the blocking
    // expansion of async-style text compiles and runs.
    struct Channel;
    impl Channel {
        fn get(&self, n: u32) -> Option<u32> {
            Some(n + 1)
        }
    }
    struct Env;
    impl Env {
        fn spawn<T>(&self, work: impl FnOnce() -> T) -> T {
            work()
        }
        fn join<T>(&self, t: T) -> T {
            t
        }
    }

    crate::strip_await! {
        async fn helper(ch: &Channel) -> u32 {
            ch.get(1).await.expect("some") + [ch.get(2).await.unwrap_or(0)][0]
        }

        async fn scenario(env: Env) -> u32 {
            let ch = Channel;
            let task = env.spawn(move || async move { ch.get(10).await.unwrap_or(0) });
            let block = async { 5 }.await;
            let nested = vec![(1, { helper(&Channel).await })];
            env.join(task).await + block + nested[0].1
        }
    }

    #[test]
    fn strip_await_turns_async_text_into_blocking_code() {
        // helper = 2 + 3; task = 11; block = 5.
        assert_eq!(scenario(Env), 11 + 5 + 5);
    }
}
