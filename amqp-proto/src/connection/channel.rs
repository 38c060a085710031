//! Per-channel state: pending requests, content being assembled, consumers, confirms.

use std::collections::{HashSet, VecDeque};

use smallvec::SmallVec;

use bytes::{Bytes, BytesMut};

use super::event::{DeliveryTag, RequestId, ReturnedMessage};
use super::recovery::TagEpoch;
use crate::properties::BasicProperties;
use crate::spec::{BasicDeliver, BasicGetOk, BasicPublish, BasicReturn, Method};
use crate::types::ShortString;

/// A synchronous request waiting for its reply.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) id: RequestId,
    pub(super) request: Method,
}

/// The method that content frames belong to.
#[derive(Debug)]
pub(super) enum ContentMethod {
    Deliver(BasicDeliver),
    /// With the `basic.get` request it answers.
    GetOk(BasicGetOk, RequestId),
    Return(BasicReturn),
}

/// Most bytes reserved at once for joining a multi-frame body (see [`Body::push`]).
pub(super) const JOIN_PREALLOC_MAX: usize = 1 << 20;

/// Size of the slabs that joined bodies are carved from.
const JOIN_SLAB: usize = 1 << 20;

/// Used-up slabs whose bodies are all gone kept for reuse, besides the one being carved.
const JOIN_SLABS_KEPT: usize = 4;

/// Used-up slabs remembered in all (most of them still holding live bodies, which keep their
/// memory allocated anyway): a bound on the list scanned once per slab, not on memory.
const JOIN_SLABS_TRACKED: usize = 16;

/// Where bodies that arrive in several frames are joined: slabs that each joined body gets a
/// region of, so that bodies joined on several channels at once never overlap.
///
/// Joined bodies share slabs rather than each getting an allocation of its own, and a slab is
/// reused in place once every body carved from it has been dropped. A consumer usually holds
/// some large deliveries at once (queued for the application, or being handled: tens of them
/// when its task runs behind the driver's), which keeps the slabs they came from alive; so
/// used-up slabs are remembered too, oldest first, and the first of them whose bodies are all
/// gone is reused before anything new is allocated. The allocator and the kernel then see the
/// same memory again instead of fresh pages to map and fault in for every message.
/// Remembering a slab whose bodies are alive costs no memory (they hold it anyway), so up to
/// `JOIN_SLABS_TRACKED` are, and whenever a slab is used up, those whose bodies are all gone
/// beyond `JOIN_SLABS_KEPT` are let go. A slab whose last body goes in between stays
/// remembered until then: at most `JOIN_SLABS_TRACKED + 1` slabs are kept beyond what live
/// bodies hold, and never more than were in use at once.
#[derive(Debug, Default)]
pub(super) struct JoinSlabs {
    current: Option<BytesMut>,
    spent: VecDeque<BytesMut>,
}

impl JoinSlabs {
    /// An empty buffer with room for `want` bytes.
    fn carve(&mut self, want: usize) -> BytesMut {
        let mut slab = match self.current.take() {
            Some(s) if s.capacity() >= want => s,
            old => self.refill(old, want),
        };
        let rest = slab.split_off(want.min(slab.capacity()));
        self.current = Some(rest);
        slab
    }

    /// A slab with room for `want`: `old` itself, or a remembered one, oldest first, once all
    /// the bodies carved from it are gone (`try_reclaim` never allocates); else a new one.
    /// Forgets the remembered slabs whose bodies are gone beyond `JOIN_SLABS_KEPT`, then the
    /// oldest beyond `JOIN_SLABS_TRACKED` (freed once their bodies are).
    fn refill(&mut self, old: Option<BytesMut>, want: usize) -> BytesMut {
        let need = want.max(JOIN_SLAB);
        let mut reused = None;
        if let Some(mut old) = old {
            if old.try_reclaim(need) {
                reused = Some(old);
            } else {
                self.spent.push_back(old);
            }
        }
        let mut free = 0;
        let mut i = 0;
        while let Some(slab) = self.spent.get_mut(i) {
            if slab.try_reclaim(need) {
                if reused.is_none() {
                    reused = self.spent.remove(i);
                    continue;
                }
                free += 1;
                if free > JOIN_SLABS_KEPT {
                    self.spent.remove(i);
                    continue;
                }
            }
            i += 1;
        }
        if self.spent.len() > JOIN_SLABS_TRACKED {
            self.spent.pop_front();
        }
        reused.unwrap_or_else(|| BytesMut::with_capacity(need))
    }
}

/// A buffer to join a body of `size` bytes in.
fn carve_join(size: u64, slabs: &mut JoinSlabs) -> BytesMut {
    // The declared size is the peer's word, not bytes that arrived: reserving all of it up
    // front would let two tiny frames claim max_body_size of memory. Reserve at most
    // JOIN_PREALLOC_MAX and let the buffer grow as bytes come.
    let want = usize::try_from(size)
        .unwrap_or(usize::MAX)
        .min(JOIN_PREALLOC_MAX);
    slabs.carve(want)
}

/// Body frames collected so far. One frame stays a zero-copy slice; several are joined.
#[derive(Debug, Default)]
pub(super) enum Body {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl ContentMethod {
    fn detach(self) -> Self {
        match self {
            ContentMethod::Deliver(m) => ContentMethod::Deliver(m.detach()),
            ContentMethod::GetOk(m, id) => ContentMethod::GetOk(m.detach(), id),
            ContentMethod::Return(m) => ContentMethod::Return(m.detach()),
        }
    }
}

impl Body {
    pub(super) fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(b) => b.len(),
            Body::Many(b) => b.len(),
        }
    }

    /// Adds a frame; `size` (already checked against max_body_size) hints the join buffer,
    /// which is carved out of the connection's `slabs`.
    pub(super) fn push(&mut self, chunk: Bytes, size: u64, slabs: &mut JoinSlabs) {
        *self = match std::mem::take(self) {
            Body::Empty => Body::One(chunk),
            Body::One(first) => {
                let mut joined = carve_join(size, slabs);
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

    /// Takes the buffer the body is joined in, the frames so far copied in, leaving the body
    /// empty until it is given back: a body frame's payload is read straight into it (see
    /// `Connection::take_body_buffer`). `size` as for [`Body::push`].
    pub(super) fn take_joined(&mut self, size: u64, slabs: &mut JoinSlabs) -> BytesMut {
        match std::mem::take(self) {
            Body::Empty => carve_join(size, slabs),
            Body::One(first) => {
                let mut joined = carve_join(size, slabs);
                joined.extend_from_slice(&first);
                joined
            }
            Body::Many(joined) => joined,
        }
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
        match self.body {
            // A joined body no longer refers to the read buffer; copy the few small fields
            // that still do, so that the buffer is free again and can be reused in place
            // instead of reallocated (large messages are the ones that get joined).
            Body::Many(_) => (
                self.method.detach(),
                properties.detach(),
                self.body.into_bytes(),
            ),
            body => (self.method, properties, body.into_bytes()),
        }
    }
}

/// Publisher-confirm bookkeeping for a channel in confirm mode.
///
/// Tags are handed out in order, so the unconfirmed ones live in a window starting at `base`:
/// a slot per tag, `None` once confirmed out of order. Publishing and confirming are O(1)
/// amortised, with no per-publish allocation.
#[derive(Debug)]
pub(super) struct Confirms {
    /// Tag of the first slot in `window`.
    base: u64,
    /// For each tag from `base` on: `Some(mandatory)` while unconfirmed.
    window: VecDeque<Option<bool>>,
    /// Returns waiting for the confirm of the publish they belong to.
    pub(super) returns: VecDeque<ReturnedMessage>,
    /// Added to the broker's sequence numbers: after a recovery the broker counts from 1
    /// again, while the tags this client hands out go on from where they were.
    offset: u64,
    /// After a recovery with at-least-once publishing: the tags of the messages published
    /// again, which the broker numbers 1, 2, ... on the new connection.
    republished: Vec<u64>,
}

impl Default for Confirms {
    fn default() -> Self {
        Confirms {
            base: 1,
            window: VecDeque::new(),
            returns: VecDeque::new(),
            offset: 0,
            republished: Vec::new(),
        }
    }
}

/// A publish kept until the broker confirms it, to be published again after a recovery
/// (at-least-once mode). The body is a reference, not a copy.
#[derive(Debug, Clone)]
pub(super) struct Unconfirmed {
    /// The tag its confirmation carries.
    pub(super) tag: u64,
    pub(super) publish: BasicPublish,
    pub(super) properties: BasicProperties,
    pub(super) body: Bytes,
}

/// The publishes one confirm covers, each with the return held for it, if any.
pub(super) type Resolved = SmallVec<[(u64, Option<ReturnedMessage>); 1]>;

impl Confirms {
    pub(super) fn publish(&mut self, mandatory: bool) -> DeliveryTag {
        let seq = self.base + self.window.len() as u64;
        self.window.push_back(Some(mandatory));
        DeliveryTag(self.client_tag(seq))
    }

    /// Publishes again, after a recovery, a message first published as `tag`: its
    /// confirmation from the new broker resolves `tag`. Only before any new publish.
    pub(super) fn republish(&mut self, tag: u64, mandatory: bool) {
        self.window.push_back(Some(mandatory));
        self.republished.push(tag);
        // New publishes still go on after the last tag handed out.
        self.offset = self.offset.saturating_sub(1);
    }

    /// The tag this client handed out for the broker's sequence number `seq`.
    fn client_tag(&self, seq: u64) -> u64 {
        let republished = usize::try_from(seq)
            .ok()
            .and_then(|s| s.checked_sub(1))
            .and_then(|i| self.republished.get(i));
        match republished {
            Some(&tag) => tag,
            None => self.offset + seq,
        }
    }

    /// Confirms for a new connection (after a recovery): the broker numbers from 1, the tags
    /// handed out go on after the last one of this window.
    pub(super) fn next_connection(&self) -> Self {
        Confirms {
            offset: self.offset + self.base + self.window.len() as u64 - 1,
            ..Confirms::default()
        }
    }

    /// Tags still waiting for a confirm, in order.
    pub(super) fn outstanding(&self) -> impl Iterator<Item = u64> + '_ {
        let base = self.base;
        self.window
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.is_some())
            .map(move |(i, _)| self.client_tag(base + i as u64))
    }

    /// Removes the publishes a confirm covers and pairs held returns with them.
    ///
    /// RabbitMQ sends a return immediately before the confirm of the same publish, and only
    /// for mandatory publishes, so the held returns belong, in order, to the newest mandatory
    /// publishes the confirm covers.
    pub(super) fn resolve(&mut self, tag: u64, multiple: bool) -> Resolved {
        let mut out: Resolved = SmallVec::new();
        // Positions in `out` of mandatory publishes, only tracked while returns are held.
        let mut mandatory: SmallVec<[usize; 4]> = SmallVec::new();
        let pairing = !self.returns.is_empty();
        if multiple {
            // The spec (basic.ack): multiple with tag 0 acknowledges everything outstanding.
            let last = if tag == 0 { u64::MAX } else { tag };
            while self.base <= last {
                let Some(slot) = self.window.pop_front() else {
                    break;
                };
                if let Some(is_mandatory) = slot {
                    if pairing && is_mandatory {
                        mandatory.push(out.len());
                    }
                    out.push((self.client_tag(self.base), None));
                }
                self.base += 1;
            }
        } else if let Some(offset) = tag.checked_sub(self.base) {
            let slot = usize::try_from(offset)
                .ok()
                .and_then(|i| self.window.get_mut(i));
            if let Some(is_mandatory) = slot.and_then(Option::take) {
                if pairing && is_mandatory {
                    mandatory.push(out.len());
                }
                out.push((self.client_tag(tag), None));
            }
        }
        // Slots confirmed out of order earlier may now lead the window.
        while let Some(None) = self.window.front() {
            self.window.pop_front();
            self.base += 1;
        }
        let k = mandatory.len().min(self.returns.len());
        for &i in mandatory.iter().skip(mandatory.len() - k) {
            if let Some(entry) = out.get_mut(i) {
                entry.1 = self.returns.pop_front();
            }
        }
        out
    }
}

/// A channel in its life: each state holds what belongs to it, so a channel that is still
/// opening cannot have consumers and a closing one keeps nothing but its close request.
#[derive(Debug)]
pub(super) enum Channel {
    /// `channel.open` sent; completes the request when `open-ok` arrives.
    Opening(RequestId),
    /// Ready for commands.
    Open(Box<OpenChannel>),
    /// This client sent `channel.close`; completes the request (if any: none after a request
    /// timeout, or once the close itself timed out) when `close-ok` arrives. The number stays
    /// taken until then, so it is never reopened while the broker may still hold it.
    Closing(Option<RequestId>),
}

/// What an open channel keeps.
#[derive(Debug)]
pub(super) struct OpenChannel {
    pub(super) pending: VecDeque<Pending>,
    pub(super) incoming: Option<Incoming>,
    pub(super) consumers: HashSet<ShortString>,
    /// Tags of no-ack consumers: the live ones, and those this client cancelled without
    /// waiting (deliveries may still be in flight). A delivery for a tag not in `consumers`
    /// is rejected with requeue unless its tag is here: the broker counts a no-ack delivery
    /// as acknowledged, and rejecting it would close the channel with 406. Kept until the
    /// channel closes: one tag per no-ack consumer cancelled with `nowait`.
    pub(super) no_ack: HashSet<ShortString>,
    pub(super) confirms: Option<Confirms>,
    /// False while the broker has paused publishing with `channel.flow`.
    pub(super) flow_active: bool,
    /// Time allowed for each request's reply on this channel (`None`: no limit).
    pub(super) request_timeout: Option<std::time::Duration>,
    /// Delivery tags as shown to the application, unique across recoveries.
    pub(super) tags: TagEpoch,
    /// At-least-once mode: publishes not yet confirmed, oldest first.
    pub(super) kept: VecDeque<Unconfirmed>,
}

impl Default for OpenChannel {
    fn default() -> Self {
        OpenChannel {
            pending: VecDeque::new(),
            incoming: None,
            consumers: HashSet::new(),
            no_ack: HashSet::new(),
            confirms: None,
            flow_active: true,
            request_timeout: None,
            tags: TagEpoch::default(),
            kept: VecDeque::new(),
        }
    }
}

impl OpenChannel {
    /// Whether a consumer with `tag` is active here, or a `basic.consume` for it is waiting for
    /// its `consume-ok`.
    pub(super) fn tag_in_use(&self, tag: &str) -> bool {
        self.consumers.iter().any(|c| c.as_str() == tag)
            || self.pending.iter().any(
                |p| matches!(&p.request, Method::BasicConsume(m) if m.consumer_tag.as_str() == tag),
            )
    }
}

/// Channels by number: a slot per number up to the highest in use, so the per-frame lookup is
/// an index, not a tree walk.
#[derive(Debug, Default)]
pub(super) struct ChannelTable {
    slots: Vec<Option<Channel>>,
}

impl ChannelTable {
    pub(super) fn get(&self, id: &u16) -> Option<&Channel> {
        self.slots.get(usize::from(*id))?.as_ref()
    }

    pub(super) fn get_mut(&mut self, id: &u16) -> Option<&mut Channel> {
        self.slots.get_mut(usize::from(*id))?.as_mut()
    }

    /// The channels, in ascending order of number.
    pub(super) fn values(&self) -> impl Iterator<Item = &Channel> {
        self.slots.iter().flatten()
    }

    pub(super) fn contains_key(&self, id: &u16) -> bool {
        self.get(id).is_some()
    }

    pub(super) fn remove(&mut self, id: &u16) -> Option<Channel> {
        self.slots.get_mut(usize::from(*id))?.take()
    }

    /// The numbers in use, ascending.
    pub(super) fn numbers(&self) -> impl Iterator<Item = u16> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .filter_map(|(i, _)| u16::try_from(i).ok())
    }

    pub(super) fn insert(&mut self, id: u16, channel: Channel) {
        let i = usize::from(id);
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Some(channel);
        }
    }
}

impl IntoIterator for ChannelTable {
    type Item = (u16, Channel);
    type IntoIter = std::vec::IntoIter<(u16, Channel)>;

    /// The channels in ascending order of number.
    fn into_iter(self) -> Self::IntoIter {
        self.slots
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| Some((u16::try_from(i).ok()?, c?)))
            .collect::<Vec<_>>()
            .into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: usize = 128 * 1024;

    /// Carves a body and fills it, as `Body::push` does.
    fn body(slabs: &mut JoinSlabs) -> Bytes {
        let mut b = slabs.carve(BODY);
        b.resize(BODY, 7);
        b.freeze()
    }

    #[test]
    fn a_slab_is_reused_once_its_bodies_are_gone_while_a_later_one_is_still_in_use() {
        let per_slab = JOIN_SLAB / BODY;
        let mut slabs = JoinSlabs::default();
        let first: Vec<Bytes> = (0..per_slab).map(|_| body(&mut slabs)).collect();
        let second: Vec<Bytes> = (0..per_slab).map(|_| body(&mut slabs)).collect();
        let first_start = first[0].as_ptr();
        assert_ne!(second[0].as_ptr(), first_start, "two slabs in use at once");
        drop(first);
        // `second` is still alive: the first slab is taken again, nothing new is allocated.
        let third = body(&mut slabs);
        assert_eq!(third.as_ptr(), first_start);
        assert!(second.iter().all(|b| b.iter().all(|&x| x == 7)));
    }

    #[test]
    fn slabs_whose_bodies_stay_alive_are_not_reused_and_at_most_tracked_are_remembered() {
        let mut slabs = JoinSlabs::default();
        let per_slab = JOIN_SLAB / BODY;
        let live: Vec<Bytes> = (0..per_slab * (JOIN_SLABS_TRACKED + 3))
            .map(|_| body(&mut slabs))
            .collect();
        let mut starts: Vec<*const u8> = live.iter().map(|b| b.as_ptr()).collect();
        starts.sort();
        starts.dedup();
        assert_eq!(starts.len(), live.len(), "no two live bodies share memory");
        assert_eq!(slabs.spent.len(), JOIN_SLABS_TRACKED);
    }

    #[test]
    fn a_slab_freed_behind_more_live_slabs_than_are_kept_free_is_still_reused() {
        // A consumer running behind: many slabs' worth of bodies alive, the oldest go first.
        let per_slab = JOIN_SLAB / BODY;
        let mut slabs = JoinSlabs::default();
        let mut live: VecDeque<Bytes> = (0..per_slab * (JOIN_SLABS_KEPT + 3))
            .map(|_| body(&mut slabs))
            .collect();
        let oldest = live[0].as_ptr();
        live.drain(..per_slab);
        // Fill the slab being carved, so that the next body needs another.
        let left = slabs.current.as_ref().map_or(0, |c| c.capacity() / BODY);
        live.extend((0..left).map(|_| body(&mut slabs)));
        assert_eq!(body(&mut slabs).as_ptr(), oldest);
    }

    #[test]
    fn at_most_kept_slabs_whose_bodies_are_gone_are_remembered() {
        let per_slab = JOIN_SLAB / BODY;
        let mut slabs = JoinSlabs::default();
        let live: Vec<Bytes> = (0..per_slab * (JOIN_SLABS_KEPT + 4))
            .map(|_| body(&mut slabs))
            .collect();
        drop(live);
        // The next slab taken (the one being carved, free again) lets go of the free ones
        // beyond JOIN_SLABS_KEPT.
        let next = body(&mut slabs);
        let free = slabs
            .spent
            .iter_mut()
            .map(|s| s.try_reclaim(JOIN_SLAB))
            .filter(|&reclaimed| reclaimed)
            .count();
        assert_eq!(free, JOIN_SLABS_KEPT);
        assert_eq!(slabs.spent.len(), JOIN_SLABS_KEPT);
        drop(next);
    }
}
