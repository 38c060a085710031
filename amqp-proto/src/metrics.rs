//! What the connection counts as it works: plain integers, no locking, no dependency.
//!
//! [`crate::Connection::metrics`] returns a [`Metrics`] snapshot (time passed in, for a blocked
//! period in progress); adapters expose the same
//! snapshot on their connection handles, and `amqp-client`'s `metrics` feature feeds it to the
//! `metrics` crate facade. Counters only grow; `consumers` and `channels_open` are gauges.
//!
//! ```
//! use std::time::Instant;
//! use amqp_proto::{Connection, ConnectionConfig};
//!
//! let now = Instant::now();
//! let mut conn = Connection::new(ConnectionConfig::default(), now);
//! while let Some(bytes) = conn.poll_transmit(now) {
//!     assert_eq!(bytes.len(), 8); // the protocol header: bytes, not a frame
//! }
//! let m = conn.metrics(now);
//! assert_eq!((m.bytes_out, m.frames_out, m.frames_in), (8, 0, 0));
//! assert_eq!(m.channels_open, 0);
//! ```

use std::time::{Duration, Instant};

/// A snapshot of one connection's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Frames decoded from the peer (heartbeats included).
    pub frames_in: u64,
    /// Frames queued for the peer (heartbeats included).
    pub frames_out: u64,
    /// Bytes handed to the core by the caller.
    pub bytes_in: u64,
    /// Bytes handed to the caller for writing ([`crate::Connection::poll_transmit`]).
    pub bytes_out: u64,
    /// `basic.publish` calls accepted.
    pub publishes: u64,
    /// Publishes the broker acked (a multiple ack counts each publish it covers).
    pub confirms_acked: u64,
    /// Publishes the broker nacked.
    pub confirms_nacked: u64,
    /// Publishes whose confirm was lost: the channel or connection closed first.
    pub confirms_lost: u64,
    /// Messages the broker returned (`basic.return`).
    pub returns: u64,
    /// Messages delivered to consumers and fetched with `basic.get`.
    pub deliveries: u64,
    /// `basic.ack` frames sent (a multiple ack is one).
    pub acks_sent: u64,
    /// `basic.nack` frames sent.
    pub nacks_sent: u64,
    /// `basic.reject` frames sent.
    pub rejects_sent: u64,
    /// Consumers active now (gauge).
    pub consumers: u64,
    /// Channels open now (gauge).
    pub channels_open: u64,
    /// Total time the broker kept the connection blocked (`connection.blocked`), up to the
    /// last time the core was told the time.
    pub blocked: Duration,
    /// Heartbeat deadlines that passed with nothing received (the connection closes at the
    /// first).
    pub heartbeats_missed: u64,
    /// Automatic recoveries completed ([`crate::Event::Recovered`]).
    pub recoveries: u64,
}

/// The counters as the connection keeps them, with the start of a blocked period in
/// progress.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    pub(crate) m: Metrics,
    blocked_since: Option<Instant>,
}

impl Counters {
    /// The broker blocked the connection at `now`.
    pub(crate) fn blocked(&mut self, now: Instant) {
        self.blocked_since.get_or_insert(now);
    }

    /// The broker unblocked it (or the connection closed) at `now`.
    pub(crate) fn unblocked(&mut self, now: Instant) {
        if let Some(since) = self.blocked_since.take() {
            self.m.blocked += now.saturating_duration_since(since);
        }
    }

    /// The snapshot, with a blocked period in progress counted up to `now`.
    pub(crate) fn snapshot(&self, now: Instant) -> Metrics {
        let mut m = self.m;
        if let Some(since) = self.blocked_since {
            m.blocked += now.saturating_duration_since(since);
        }
        m
    }
}
