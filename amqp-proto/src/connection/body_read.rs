//! Body frame payload read straight into the buffer its body is joined in, rather than into
//! the input buffer and copied from there: see [`Connection::take_body_buffer`].
//!
//! Only a body that is joined at all takes this path (one of several frames: the size from its
//! content header, checked against max_body_size, says so when its first frame starts); a body
//! of one frame stays a slice of the input buffer, which costs no copy either. The frame header
//! and the frame-end octet still come through the input buffer; the frame counts as received
//! once its end octet is checked, as on the normal path.

use std::time::Instant;

use bytes::{Buf, BytesMut};

use super::channel::{Channel, JOIN_PREALLOC_MAX};
use super::{Connection, Error, Lifecycle};
use crate::error::CodecError;
use crate::frame::FRAME_END;

/// Payload still to come below which a body frame is left to the input buffer: a read of its
/// own costs more than copying a few KiB.
const BODY_READ_MIN: usize = 4096;

/// The most bytes a read into the input buffer takes while bodies are read straight into
/// their buffers: enough for the frames before the next body's payload (method, content
/// header, body frame header), so that little of that payload lands in the input buffer.
const INPUT_READ_LIMIT: usize = 4096;

/// A body frame whose payload goes straight into its body.
#[derive(Debug)]
pub(super) struct BodyRead {
    /// The channel the frame travels on.
    channel: u16,
    /// Payload bytes of the frame not received yet.
    left: usize,
    /// Whether enough of the body is left after this frame for its next frame to be read
    /// straight in too.
    more: bool,
    /// The body so far (taken from the channel, given back when the frame ends); `None` while
    /// it is lent to the caller.
    body: Option<BytesMut>,
    /// The body's length when it was lent.
    lent_at: usize,
    /// The body's capacity beyond this frame's payload, split off while the payload arrives so
    /// that a read into the body cannot take more than the payload; joined back once the body
    /// is full (in O(1): the two are adjacent).
    rest: Option<BytesMut>,
}

/// Appends `bytes` to `body`, filling it before `rest` is joined back (joining is free only
/// once `body` is full).
fn append(body: &mut BytesMut, rest: &mut Option<BytesMut>, bytes: &[u8]) {
    let room = body.capacity() - body.len();
    let (first, then) = bytes.split_at(room.min(bytes.len()));
    body.extend_from_slice(first);
    if body.len() == body.capacity() {
        if let Some(rest) = rest.take() {
            body.unsplit(rest);
        }
    }
    body.extend_from_slice(then);
}

impl Connection {
    /// Before a read: when the next bytes of the stream are the payload of a body frame whose
    /// body is being joined (a body of several frames), lends the buffer the body is joined
    /// in, so that the read lands there and is not copied again. Its spare capacity is the
    /// number of payload bytes to read into it, never more than the rest of the frame's
    /// payload (and at least one). Read into that spare capacity, at most that much, then give
    /// the buffer back with [`process_body`](Self::process_body) before anything else reads
    /// input; `None`: read into `input` and call [`process_input`](Self::process_input) as
    /// usual.
    ///
    /// `input` is the buffer given to `process_input`: the frame header and whatever payload
    /// already arrived are taken off it into the body. Using this call is optional; without
    /// it every byte goes through `process_input`, with the same events.
    ///
    /// ```
    /// # use amqp_proto::Connection;
    /// # use bytes::BytesMut;
    /// # use std::io::Read;
    /// # fn one_read(conn: &mut Connection, input: &mut BytesMut, socket: &mut impl Read,
    /// #     now: std::time::Instant) -> std::io::Result<()> {
    /// if let Some(mut body) = conn.take_body_buffer(input) {
    ///     let at = body.len();
    ///     body.resize(body.capacity(), 0); // or read into the spare capacity directly
    ///     let n = socket.read(&mut body[at..])?;
    ///     body.truncate(at + n);
    ///     conn.process_body(body, input, now);
    /// } else {
    ///     let mut chunk = [0; 4096];
    ///     let n = socket.read(&mut chunk)?;
    ///     input.extend_from_slice(&chunk[..n]);
    ///     conn.process_input(input, now);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn take_body_buffer(&mut self, input: &mut BytesMut) -> Option<BytesMut> {
        if self.body_read.is_none() {
            self.start_body_read(input);
        }
        let read = self.body_read.as_mut()?;
        if read.left == 0 || !input.is_empty() {
            // The frame-end octet is next, or payload the caller read into `input` anyway
            // (`process_input` copies it into the body).
            return None;
        }
        let mut body = read.body.take()?;
        if body.capacity() == body.len() {
            // A body larger than was reserved for it grows as its bytes come, as on the normal
            // path, by a bounded step.
            body.reserve(read.left.min(JOIN_PREALLOC_MAX));
        }
        if read.rest.is_none() && body.capacity() - body.len() > read.left {
            read.rest = Some(body.split_off(body.len() + read.left));
        }
        read.lent_at = body.len();
        Some(body)
    }

    /// Gives back the buffer [`take_body_buffer`](Self::take_body_buffer) lent, with the bytes
    /// read into it (none is fine), and handles them at time `now`. `input` is the buffer given
    /// to [`process_input`](Self::process_input): should the read have taken more than the
    /// payload asked for, the surplus is moved there and decoded. A buffer returned when none
    /// was lent (the connection failed or recovered meanwhile) is dropped.
    pub fn process_body(&mut self, mut body: BytesMut, input: &mut BytesMut, now: Instant) {
        self.deadlines.arm(now);
        let Some(read) = self.body_read.as_mut().filter(|r| r.body.is_none()) else {
            return;
        };
        let end = read.lent_at + read.left;
        if body.len() > end {
            let surplus = body.split_off(end);
            let after = input.split();
            input.extend_from_slice(&surplus);
            input.extend_from_slice(&after);
        }
        let Some(n) = body.len().checked_sub(read.lent_at) else {
            return self.lost(
                Error::Transport {
                    kind: std::io::ErrorKind::InvalidInput,
                    message: "a body buffer came back shorter than it was lent".into(),
                },
                now,
            );
        };
        read.left -= n;
        if body.len() == body.capacity() {
            if let Some(rest) = read.rest.take() {
                body.unsplit(rest);
            }
        }
        read.body = Some(body);
        if n > 0 {
            self.last_recv = now;
            self.counters.m.bytes_in += n as u64;
        }
        if !input.is_empty() {
            self.process_input(input, now);
        }
    }

    /// While body frames are being read straight into their bodies, the most bytes the next
    /// read into the input buffer should take: about what the frames before the next body's
    /// payload need, so that most of that payload, too, is read straight into its body.
    /// `None`: no limit. A hint only; reading more costs a copy, not correctness.
    pub fn input_read_limit(&self) -> Option<usize> {
        match &self.body_read {
            // The frame-end octet and, most likely, the header of the body's next frame.
            Some(read) if read.left == 0 && read.more => Some(1 + 7),
            _ => self.reading_bodies.then_some(INPUT_READ_LIMIT),
        }
    }

    /// Starts reading a body frame straight into its body, if `input` holds the start of one
    /// that is worth it and fits its content (one that does not is left to the normal path,
    /// which reports it). Notes whether a large joined body is arriving, even when this frame
    /// is short or has almost all arrived already: the next read into `input` is then kept
    /// short, so that the next body's payload is not read there.
    fn start_body_read(&mut self, input: &mut BytesMut) {
        self.reading_bodies = false;
        if !matches!(self.lifecycle, Lifecycle::Open) {
            return;
        }
        let Some((ch, payload)) = self.decoder.partial_body(input) else {
            return;
        };
        let (Some(Channel::Open(open)), cx) = split!(self, ch) else {
            return;
        };
        let Some(incoming) = open.incoming.as_mut() else {
            return;
        };
        let Some((size, _)) = incoming.header else {
            return;
        };
        let received = incoming.body.len() as u64;
        let single = received == 0 && payload as u64 == size;
        if single || received + payload as u64 > size {
            return;
        }
        let left = payload - (input.len() - 7);
        let body = (left >= BODY_READ_MIN).then(|| incoming.body.take_joined(size, cx.join_slabs));
        self.reading_bodies = size >= BODY_READ_MIN as u64;
        let Some(mut body) = body else {
            return;
        };
        input.advance(7);
        body.extend_from_slice(input);
        input.clear();
        // Counted as received already; what comes next is new.
        self.read_seen = 0;
        self.body_read = Some(BodyRead {
            channel: ch,
            left,
            more: size - received - payload as u64 >= BODY_READ_MIN as u64,
            body: Some(body),
            lent_at: 0,
            rest: None,
        });
    }

    /// The body frame under way takes what it still needs from `input` (payload the caller
    /// read there after all, then the frame-end octet). False while the frame is not over, or
    /// when the connection ended: `input` has nothing more to decode then.
    pub(super) fn continue_body_read(&mut self, input: &mut BytesMut, now: Instant) -> bool {
        let Some(read) = self.body_read.as_mut() else {
            return true;
        };
        let Some(body) = read.body.as_mut() else {
            // The stream is out of step: what the caller reads into the lent buffer comes
            // before these bytes.
            self.lost(
                Error::Transport {
                    kind: std::io::ErrorKind::InvalidInput,
                    message: "input given while a body buffer was lent: give it back with \
                              process_body first"
                        .into(),
                },
                now,
            );
            input.clear();
            return false;
        };
        let n = read.left.min(input.len());
        if n > 0 {
            append(body, &mut read.rest, input.get(..n).unwrap_or_default());
            input.advance(n);
            read.left -= n;
        }
        if read.left > 0 {
            return false;
        }
        let Some(&end) = input.first() else {
            return false;
        };
        if end != FRAME_END {
            let e = CodecError::BadFrameEnd(end);
            // As on the normal path: the stream is out of step, the close cannot be answered.
            self.body_read = None;
            self.violation(e.reply_code(), e.to_string(), now);
            self.end_close();
            input.clear();
            return false;
        }
        input.advance(1);
        self.end_body_read();
        true
    }

    /// The body frame read straight into its body is over: the body goes back to its channel,
    /// which completes the content if this was its last frame.
    fn end_body_read(&mut self) {
        let Some(read) = self.body_read.take() else {
            return;
        };
        self.counters.m.frames_in += 1;
        let Some(mut body) = read.body else {
            return;
        };
        if let Some(rest) = read.rest {
            body.unsplit(rest);
        }
        // After a close was sent, content is dropped, as on the normal path.
        if !matches!(self.lifecycle, Lifecycle::Open) {
            return;
        }
        if let (Some(Channel::Open(open)), mut cx) = split!(self, read.channel) {
            open.on_body_read(body, &mut cx);
        }
    }
}
