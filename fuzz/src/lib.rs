//! What the fuzz targets share: the bookkeeping of what a client connection promised.

use std::collections::{BTreeMap, BTreeSet};

use amqp_proto::{Event, Reply, RequestId};

/// What the client promised and must keep.
#[derive(Default)]
pub struct Books {
    /// Requests issued and not completed, with their channel (0 for the connection).
    pub pending: BTreeMap<RequestId, u16>,
    /// Publishes in confirm mode without an outcome yet.
    pub unconfirmed: BTreeSet<(u16, u64)>,
    /// Consumers running.
    pub consumers: BTreeSet<(u16, Vec<u8>)>,
    /// `Closed` was seen.
    pub closed: bool,
}

impl Books {
    /// Records a request just issued (an `Err` issued nothing).
    pub fn issued(&mut self, id: Result<RequestId, amqp_proto::Error>, channel: u16) {
        if let Ok(id) = id {
            assert!(
                self.pending.insert(id, channel).is_none(),
                "request id {id:?} reused"
            );
        }
    }

    /// Checks one event against the books and updates them.
    pub fn check(&mut self, event: &Event) {
        assert!(!self.closed, "event after Closed: {event:?}");
        match event {
            Event::Completed { id, result } => {
                let channel = self
                    .pending
                    .remove(id)
                    .unwrap_or_else(|| panic!("completion of unknown or finished request {id:?}"));
                if let Ok(Reply::Consuming { consumer_tag }) = result {
                    let fresh = self
                        .consumers
                        .insert((channel, consumer_tag.as_bytes().to_vec()));
                    assert!(fresh, "consumer {consumer_tag:?} started twice");
                }
            }
            Event::Confirmed { channel, tag, .. } => {
                assert!(
                    self.unconfirmed.remove(&(channel.0, tag.0)),
                    "outcome for a publish that has none pending: {event:?}"
                );
            }
            Event::ConsumerEnded {
                channel,
                consumer_tag,
                ..
            } => {
                assert!(
                    self.consumers
                        .remove(&(channel.0, consumer_tag.as_bytes().to_vec())),
                    "end of a consumer that was not running: {event:?}"
                );
            }
            Event::Closed(_) => self.closed = true,
            _ => {}
        }
    }

    /// After the end: `Closed` was seen and nothing is left pending.
    pub fn check_all_ended(&self) {
        assert!(self.closed, "no Closed event");
        assert!(
            self.pending.is_empty(),
            "requests never completed: {:?}",
            self.pending
        );
        assert!(
            self.unconfirmed.is_empty(),
            "publishes without outcome: {:?}",
            self.unconfirmed
        );
        assert!(
            self.consumers.is_empty(),
            "consumers never ended: {:?}",
            self.consumers
        );
    }
}
