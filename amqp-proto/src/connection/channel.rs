//! Per-channel state: pending requests, content being assembled, consumers, confirms.

use std::collections::{BTreeMap, HashSet, VecDeque};

use bytes::{Bytes, BytesMut};

use super::event::{DeliveryTag, ReturnedMessage};
use crate::properties::BasicProperties;
use crate::spec::{BasicDeliver, BasicGetOk, BasicReturn, Method};
use crate::types::ShortString;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChannelState {
    Opening,
    Open,
    /// This client sent `channel.close` and waits for `close-ok`.
    Closing,
}

/// A synchronous request waiting for its reply.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) id: super::RequestId,
    pub(super) request: Method,
}

/// The method that content frames belong to.
#[derive(Debug)]
pub(super) enum ContentMethod {
    Deliver(BasicDeliver),
    /// With the `basic.get` request it answers.
    GetOk(BasicGetOk, super::RequestId),
    Return(BasicReturn),
}

/// Most bytes reserved at once for joining a multi-frame body (see [`Body::push`]).
const JOIN_PREALLOC_MAX: usize = 1 << 20;

/// Body frames collected so far. One frame stays a zero-copy slice; several are joined.
#[derive(Debug, Default)]
pub(super) enum Body {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Body {
    pub(super) fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(b) => b.len(),
            Body::Many(b) => b.len(),
        }
    }

    /// Adds a frame; `size` (already checked against max_body_size) hints the join buffer.
    pub(super) fn push(&mut self, chunk: Bytes, size: u64) {
        *self = match std::mem::take(self) {
            Body::Empty => Body::One(chunk),
            Body::One(first) => {
                // The declared size is the peer's word, not bytes that arrived: reserving all
                // of it up front would let two tiny frames claim max_body_size of memory.
                // Reserve at most JOIN_PREALLOC_MAX and let the buffer grow as bytes come.
                let want = usize::try_from(size).unwrap_or(usize::MAX);
                let mut joined = BytesMut::with_capacity(want.min(JOIN_PREALLOC_MAX));
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&chunk);
                Body::Many(joined)
            }
            Body::Many(mut joined) => {
                joined.extend_from_slice(&chunk);
                Body::Many(joined)
            }
        };
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::One(b) => b,
            Body::Many(b) => b.freeze(),
        }
    }
}

/// A content-carrying method whose header and body are still arriving.
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) method: ContentMethod,
    /// Declared body size and properties, once the header arrived.
    pub(super) header: Option<(u64, BasicProperties)>,
    pub(super) body: Body,
}

impl Incoming {
    pub(super) fn new(method: ContentMethod) -> Self {
        Incoming {
            method,
            header: None,
            body: Body::Empty,
        }
    }

    pub(super) fn into_parts(self) -> (ContentMethod, BasicProperties, Bytes) {
        let properties = self.header.map(|(_, p)| p).unwrap_or_default();
        (self.method, properties, self.body.into_bytes())
    }
}

/// Publisher-confirm bookkeeping for a channel in confirm mode.
#[derive(Debug, Default)]
pub(super) struct Confirms {
    /// Tag of the last publish (the first gets 1).
    last: u64,
    /// Unconfirmed publishes by tag, with whether they were mandatory.
    pub(super) outstanding: BTreeMap<u64, bool>,
    /// Returns waiting for the confirm of the publish they belong to.
    pub(super) returns: VecDeque<ReturnedMessage>,
}

impl Confirms {
    pub(super) fn publish(&mut self, mandatory: bool) -> DeliveryTag {
        self.last += 1;
        self.outstanding.insert(self.last, mandatory);
        DeliveryTag(self.last)
    }

    /// Removes the publishes a confirm covers and pairs held returns with them.
    ///
    /// RabbitMQ sends a return immediately before the confirm of the same publish, and only
    /// for mandatory publishes, so the held returns belong, in order, to the newest mandatory
    /// publishes the confirm covers.
    pub(super) fn resolve(
        &mut self,
        tag: u64,
        multiple: bool,
    ) -> Vec<(u64, Option<ReturnedMessage>)> {
        let covered: Vec<(u64, bool)> = if multiple && tag == 0 {
            // The spec (basic.ack): "If the multiple field is 1, and the delivery tag is
            // zero, this indicates acknowledgement of all outstanding messages."
            std::mem::take(&mut self.outstanding).into_iter().collect()
        } else if multiple {
            let rest = self.outstanding.split_off(&(tag.saturating_add(1)));
            let done = std::mem::replace(&mut self.outstanding, rest);
            done.into_iter().collect()
        } else {
            self.outstanding
                .remove(&tag)
                .map(|m| vec![(tag, m)])
                .unwrap_or_default()
        };
        let mandatory: Vec<usize> = covered
            .iter()
            .enumerate()
            .filter(|(_, (_, m))| *m)
            .map(|(i, _)| i)
            .collect();
        let k = mandatory.len().min(self.returns.len());
        let mut out: Vec<(u64, Option<ReturnedMessage>)> =
            covered.iter().map(|(seq, _)| (*seq, None)).collect();
        for &i in mandatory.iter().skip(mandatory.len() - k) {
            if let Some(slot) = out.get_mut(i) {
                slot.1 = self.returns.pop_front();
            }
        }
        out
    }
}

#[derive(Debug)]
pub(super) struct Channel {
    pub(super) state: ChannelState,
    pub(super) pending: VecDeque<Pending>,
    pub(super) incoming: Option<Incoming>,
    pub(super) consumers: HashSet<ShortString>,
    pub(super) confirms: Option<Confirms>,
    /// False while the broker has paused publishing with `channel.flow`.
    pub(super) flow_active: bool,
    /// Set when a handler finished the channel, so it is not put back in the table.
    pub(super) removed: bool,
}

impl Channel {
    pub(super) fn new() -> Self {
        Channel {
            state: ChannelState::Opening,
            pending: VecDeque::new(),
            incoming: None,
            consumers: HashSet::new(),
            confirms: None,
            flow_active: true,
            removed: false,
        }
    }
}
