//! The real-broker conformance suite ([`amqp_conformance::conformance`]) through
//! `amqp-blocking`: the same scenario text as the async adapters, expanded without
//! `async`/`.await` (see `amqp_conformance::conformance::blocking`), one test per scenario,
//! against `$AMQP_URI` (default: the shared broker on 127.0.0.1:5672), and the TLS scenarios
//! (in `tls`) against dedicated nodes. Fails, never skips, without a broker or node.

amqp_conformance::blocking_broker_tests!();

/// The TLS scenarios, against this binary's dedicated nodes.
mod tls {
    amqp_conformance::blocking_tls_tests!();
}
