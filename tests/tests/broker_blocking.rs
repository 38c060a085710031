//! The real-broker conformance suite ([`amqp_conformance::conformance`]) through
//! `amqp-blocking`: the same scenario text as the async adapters, expanded without
//! `async`/`.await` (see `amqp_conformance::conformance::blocking`), one test per scenario,
//! against `$AMQP_URI` (default: the shared broker on 127.0.0.1:5672), and the TLS scenarios
//! (in `tls`) and the recovery scenario against dedicated nodes. Fails, never skips, without
//! a broker or node.

amqp_conformance::blocking_broker_tests!();

/// Automatic recovery through close_connection, stop_app/start_app, a killed node and a
/// stalled then cut link, on a dedicated node ([`amqp_conformance::conformance::recovery`]):
/// the async adapters' scenario text, without `async`/`.await`.
#[test]
fn recovery_through_faults() {
    amqp_conformance::conformance::blocking::recovery_through_faults();
}

/// The TLS scenarios, against this binary's dedicated nodes.
mod tls {
    amqp_conformance::blocking_tls_tests!();
}
