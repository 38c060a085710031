//! Feature `metrics`: each connection's [`Metrics`] go to the `metrics` crate's recorder (so
//! a Prometheus or StatsD exporter picks them up), labelled `connection` with the
//! `connection_name` (empty when unset). Counters end in `_total`; `amqp_consumers` and
//! `amqp_channels_open` are gauges, `amqp_blocked_seconds_total` a gauge of seconds. The
//! core stays free of the dependency: this reads its snapshot, at most once a second.

use std::time::{Duration, Instant};

use amqp_proto::Metrics;

/// How often a busy connection refreshes its figures.
const EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Exporter {
    labels: [(&'static str, String); 1],
    last: Option<Instant>,
}

impl Exporter {
    pub(crate) fn new(connection_name: &str) -> Self {
        Exporter {
            labels: [("connection", connection_name.to_owned())],
            last: None,
        }
    }

    /// Records `metrics()` if a second has passed since the last time (or `force`).
    pub(crate) fn tick(&mut self, now: Instant, force: bool, metrics: impl FnOnce() -> Metrics) {
        if !force
            && self
                .last
                .is_some_and(|t| now.saturating_duration_since(t) < EVERY)
        {
            return;
        }
        self.last = Some(now);
        self.record(&metrics());
    }

    fn record(&self, m: &Metrics) {
        let labels = &self.labels;
        macro_rules! counters {
            ($($field:ident)*) => {$(
                metrics::counter!(concat!("amqp_", stringify!($field), "_total"), labels)
                    .absolute(m.$field);
            )*};
        }
        counters!(frames_in frames_out bytes_in bytes_out publishes confirms_acked
            confirms_nacked confirms_lost returns deliveries acks_sent nacks_sent rejects_sent
            heartbeats_missed recoveries);
        metrics::gauge!("amqp_consumers", labels).set(m.consumers as f64);
        metrics::gauge!("amqp_channels_open", labels).set(m.channels_open as f64);
        metrics::gauge!("amqp_blocked_seconds_total", labels).set(m.blocked.as_secs_f64());
    }
}
