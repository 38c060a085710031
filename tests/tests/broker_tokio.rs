//! The real-broker conformance suite ([`amqp_conformance::conformance`]) through
//! `amqp-tokio`: one test per scenario, each on a tokio runtime of its own, against
//! `$AMQP_URI` (default: the shared broker on 127.0.0.1:5672), and the TLS scenarios (in
//! `tls`) against dedicated nodes. Fails, never skips, without a broker or node.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use amqp_client::Connection;
use amqp_conformance::conformance::asynchronous::{BoxFuture, Runtime};
use amqp_tokio::{ConnectError, ConnectOptions};

/// amqp-tokio on a two-worker tokio runtime per test.
struct Tokio;

impl Runtime for Tokio {
    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build a tokio runtime")
            .block_on(future);
    }

    fn spawn(&self, future: BoxFuture<'static, ()>) {
        drop(tokio::spawn(future));
    }

    fn connect(
        &self,
        options: ConnectOptions,
    ) -> BoxFuture<'static, Result<Connection, ConnectError>> {
        Box::pin(async move {
            amqp_tokio::connect_with(options)
                .await
                .map(Connection::from)
        })
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

amqp_conformance::async_broker_tests!(Tokio);

/// The TLS scenarios, against this binary's dedicated nodes.
mod tls {
    use super::Tokio;

    amqp_conformance::async_tls_tests!(Tokio);
}

/// Automatic recovery through close_connection, stop_app/start_app, a killed node and a
/// stalled then cut link, on a dedicated node ([`amqp_conformance::conformance::recovery`]).
#[test]
fn recovery_through_faults() {
    amqp_conformance::conformance::asynchronous::recovery_through_faults(Tokio);
}
