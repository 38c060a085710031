//! The real-broker conformance suite ([`amqp_conformance::conformance`]) through
//! `amqp-async-std`, with the scenarios driven by async-std's executor and, in `smol`, by
//! smol's: one test per scenario and executor, against `$AMQP_URI` (default: the shared
//! broker on 127.0.0.1:5672), and the TLS scenarios (in `tls`, `smol::tls`) against
//! dedicated nodes. Fails, never skips, without a broker or node.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use amqp_async_std::{ConnectError, ConnectOptions};
use amqp_client::Connection;
use amqp_conformance::conformance::asynchronous::{BoxFuture, Runtime};

fn connect(options: ConnectOptions) -> BoxFuture<'static, Result<Connection, ConnectError>> {
    Box::pin(async move {
        amqp_async_std::connect_with(options)
            .await
            .map(Connection::from)
    })
}

/// amqp-async-std, scenarios on async-std's executor.
struct AsyncStd;

impl Runtime for AsyncStd {
    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        async_std::task::block_on(future);
    }

    fn spawn(&self, future: BoxFuture<'static, ()>) {
        drop(async_std::task::spawn(future));
    }

    fn connect(
        &self,
        options: ConnectOptions,
    ) -> BoxFuture<'static, Result<Connection, ConnectError>> {
        connect(options)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async_std::task::sleep(duration))
    }
}

amqp_conformance::async_broker_tests!(AsyncStd);

/// Automatic recovery through close_connection, stop_app/start_app, a killed node and a
/// stalled then cut link, on a dedicated node ([`amqp_conformance::conformance::recovery`]).
#[test]
fn recovery_through_faults() {
    amqp_conformance::conformance::asynchronous::recovery_through_faults(AsyncStd);
}

/// The TLS scenarios on async-std's executor, against this binary's dedicated nodes (shared
/// with `smol::tls`).
mod tls {
    use super::AsyncStd;

    amqp_conformance::async_tls_tests!(AsyncStd);
}

mod smol {
    use super::*;

    /// amqp-async-std, scenarios on smol's executor.
    struct Smol;

    impl Runtime for Smol {
        fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
            ::smol::block_on(future);
        }

        fn spawn(&self, future: BoxFuture<'static, ()>) {
            ::smol::spawn(future).detach();
        }

        fn connect(
            &self,
            options: ConnectOptions,
        ) -> BoxFuture<'static, Result<Connection, ConnectError>> {
            connect(options)
        }

        fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
            Box::pin(async move {
                ::smol::Timer::after(duration).await;
            })
        }
    }

    amqp_conformance::async_broker_tests!(Smol);

    /// The TLS scenarios on smol's executor.
    mod tls {
        use super::Smol;

        amqp_conformance::async_tls_tests!(Smol);
    }
}
