//! Delivery tags that stay unique across recoveries.
//!
//! After a reconnect the broker numbers deliveries on a channel from 1 again. Like the Java
//! client, the application sees the broker's tags shifted by the highest tag it saw before,
//! so tags only ever grow; an ack for a tag from before the failure is recognised as stale
//! and dropped instead of acknowledging the new delivery that has the same broker number (the
//! broker redelivers the old message anyway, with `redelivered` set).

/// The tag offset of one channel.
///
/// ```
/// use amqp_proto::recovery::TagEpoch;
///
/// let mut tags = TagEpoch::default();
/// assert_eq!(tags.inbound(1), 1);
/// assert_eq!(tags.inbound(2), 2);
/// tags.reconnected();
/// assert_eq!(tags.inbound(1), 3); // the broker's 1 of the new connection
/// assert_eq!(tags.outbound(2, false), None); // stale: from before the failure
/// assert_eq!(tags.outbound(3, false), Some(1));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TagEpoch {
    offset: u64,
    highest: u64,
}

impl TagEpoch {
    /// The tag to show the application for the broker's `tag`.
    pub fn inbound(&mut self, tag: u64) -> u64 {
        let shown = tag.saturating_add(self.offset);
        self.highest = self.highest.max(shown);
        shown
    }

    /// The broker's tag for the application's `tag`, or `None` if it names a delivery of an
    /// earlier connection. With `multiple`, tag 0 means "everything outstanding" and stays 0.
    pub fn outbound(&self, tag: u64, multiple: bool) -> Option<u64> {
        if tag == 0 && multiple {
            return Some(0);
        }
        tag.checked_sub(self.offset).filter(|&t| t > 0)
    }

    /// The channel was reopened on a new connection: tags so far are stale.
    pub fn reconnected(&mut self) {
        self.offset = self.highest;
    }

    /// Whether any recovery has shifted tags.
    pub fn is_shifted(&self) -> bool {
        self.offset > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiple_acks_cover_only_the_new_connection() {
        let mut tags = TagEpoch::default();
        for t in 1..=5 {
            tags.inbound(t);
        }
        tags.reconnected();
        assert_eq!(tags.inbound(1), 6);
        // An ack-multiple of 7 after recovery acks the broker's 1..=2 only.
        assert_eq!(tags.outbound(7, true), Some(2));
        assert_eq!(tags.outbound(5, true), None);
        assert_eq!(tags.outbound(0, true), Some(0));
        assert_eq!(tags.outbound(0, false), None);
        // Two recoveries in a row without deliveries in between keep the same offset.
        tags.reconnected();
        tags.reconnected();
        assert_eq!(tags.inbound(1), 7);
    }
}
