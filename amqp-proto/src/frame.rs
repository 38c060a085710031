//! Frames: the protocol header, method, content header, body and heartbeat frames.
//!
//! Decoding is streaming: [`FrameDecoder::decode`] takes what has arrived so far and returns
//! `Ok(None)` until a whole frame is there. The size announced in the 7-byte frame header is
//! checked against frame_max before anything else happens, so a peer cannot make us buffer or
//! allocate more than the limit.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::CodecError;
use crate::properties::ContentHeader;
use crate::spec::Method;
use crate::wire::Reader;

/// The header a 0-9-1 client sends first: `AMQP` 0 0 9 1.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";
/// Frame type octet of method frames.
pub const FRAME_METHOD: u8 = 1;
/// Frame type octet of content header frames.
pub const FRAME_HEADER: u8 = 2;
/// Frame type octet of body frames.
pub const FRAME_BODY: u8 = 3;
/// Frame type octet of heartbeat frames.
pub const FRAME_HEARTBEAT: u8 = 8;
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Bytes a frame adds around its payload: 7 of header, 1 end octet.
pub const FRAME_OVERHEAD: usize = 8;
/// The smallest frame_max the spec lets a peer negotiate.
pub const MIN_FRAME_MAX: u32 = 4096;
/// The frame size limit before tune: RabbitMQ 4.1 raised its minimum to 8192, so accept that
/// much from the start.
pub const PRE_TUNE_FRAME_MAX: u32 = 8192;

/// One decoded frame. Payloads share the read buffer's allocation; nothing is copied.
///
/// The channel numbers here are the wire's bare `u16`: the codec sits below the connection
/// and knows no channels, only frames; [`ChannelId`](crate::ChannelId) names a channel
/// from the connection up.
// Frames are decoded and consumed in place; boxing the method would cost an allocation on
// every delivery.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A method frame.
    Method(u16, Method),
    /// A content header frame.
    Header(u16, ContentHeader),
    /// A content body frame.
    Body(u16, Bytes),
    /// A heartbeat frame (always channel 0).
    Heartbeat,
}

impl Frame {
    /// The channel the frame travels on.
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method(ch, _) | Frame::Header(ch, _) | Frame::Body(ch, _) => *ch,
            Frame::Heartbeat => 0,
        }
    }

    /// Appends the whole frame (header, payload, end octet) to `out`.
    ///
    /// On error nothing is left appended.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            Frame::Method(ch, m) => write_frame(out, FRAME_METHOD, *ch, |o| m.encode(o)),
            Frame::Header(ch, h) => write_frame(out, FRAME_HEADER, *ch, |o| h.encode(o)),
            Frame::Body(ch, b) => write_frame(out, FRAME_BODY, *ch, |o| {
                o.put_slice(b);
                Ok(())
            }),
            Frame::Heartbeat => write_frame(out, FRAME_HEARTBEAT, 0, |_| Ok(())),
        }
    }
}

/// Writes a frame whose payload `body` appends, patching the size in afterwards.
pub(crate) fn write_frame(
    out: &mut BytesMut,
    kind: u8,
    channel: u16,
    body: impl FnOnce(&mut BytesMut) -> Result<(), CodecError>,
) -> Result<(), CodecError> {
    let start = out.len();
    // The size is patched in below, once the payload is written.
    out.put_slice(&frame_head(kind, channel, 0));
    if let Err(e) = body(out) {
        out.truncate(start);
        return Err(e);
    }
    let size = out.len() - start - 7;
    let Ok(size32) = u32::try_from(size) else {
        out.truncate(start);
        return Err(CodecError::TooLong {
            what: "frame",
            len: size,
        });
    };
    if let Some(slot) = out.get_mut(start + 3..start + 7) {
        slot.copy_from_slice(&size32.to_be_bytes());
    }
    out.put_u8(FRAME_END);
    Ok(())
}

/// Writes the 7-byte header of a body frame whose payload the caller supplies separately.
pub(crate) fn write_body_frame_header(out: &mut BytesMut, channel: u16, len: u32) {
    out.put_slice(&frame_head(FRAME_BODY, channel, len));
}

/// A frame header (type, channel, payload size) as one array, so that it is appended with one
/// capacity check instead of three: encoding a small message is mostly such checks.
fn frame_head(kind: u8, channel: u16, size: u32) -> [u8; 7] {
    let [c0, c1] = channel.to_be_bytes();
    let [s0, s1, s2, s3] = size.to_be_bytes();
    [kind, c0, c1, s0, s1, s2, s3]
}

/// The most [`FrameDecoder::decode`] reserves ahead for a frame that has not fully arrived.
const MAX_RESERVE: usize = 1 << 20;

/// About how many bytes of whole frames [`FrameDecoder::decode`] takes off the read buffer
/// at once: few enough that they are still in the CPU's first-level cache when decoded after
/// being checked.
const BATCH: usize = 16 * 1024;
/// A batch ends after a frame larger than this (see [`FrameDecoder::whole_frames`]).
const SMALL_FRAME: usize = 512;

/// Streaming frame decoder with a frame size limit.
///
/// When it needs a frame it takes every whole, well-formed frame at the front of the read
/// buffer off it at once and decodes them one per call from there: the buffer's reference
/// count is then touched once per batch and once per field that shares its bytes, not
/// twice more per frame.
#[derive(Clone)]
pub struct FrameDecoder {
    frame_max: u32,
    /// Whole frames taken off the read buffer and not yet decoded (empty between batches,
    /// so that the read buffer's memory is not held once every frame was handed out).
    pending: Bytes,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(PRE_TUNE_FRAME_MAX)
    }
}

impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Lengths only: pending frames may carry credentials.
        f.debug_struct("FrameDecoder")
            .field("frame_max", &self.frame_max)
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// A frame header that passed the checks: type, channel, payload size, whole frame size.
struct Head {
    kind: u8,
    channel: u16,
    size: u32,
    total: usize,
}

impl FrameDecoder {
    /// A decoder that accepts frames of up to `frame_max` bytes in all (0 means no limit).
    pub fn new(frame_max: u32) -> Self {
        FrameDecoder {
            frame_max,
            pending: Bytes::new(),
        }
    }

    /// The limit in force.
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// Changes the limit, e.g. once tune negotiated it. Frames already taken off the read
    /// buffer are held to the new limit too.
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max;
    }

    /// Drops the frames taken off the read buffer and not decoded yet, with the stream they
    /// came from.
    pub(crate) fn discard_pending(&mut self) {
        self.pending = Bytes::new();
    }

    /// The channel and payload size of the body frame `buf` starts with, when that frame has
    /// not all arrived and no frames taken off earlier wait to be decoded: its payload may then
    /// go somewhere else than `buf` (see [`Connection::take_body_buffer`]). The header passes
    /// the same checks as in [`Self::decode`].
    ///
    /// [`Connection::take_body_buffer`]: crate::Connection::take_body_buffer
    pub(crate) fn partial_body(&self, buf: &[u8]) -> Option<(u16, usize)> {
        if !self.pending.is_empty() {
            return None;
        }
        let head = self.head(buf.get(..7)?).ok()?;
        if head.kind != FRAME_BODY || buf.len() >= head.total {
            return None;
        }
        Some((head.channel, usize::try_from(head.size).ok()?))
    }

    /// Takes one whole frame off the front of `buf`, or returns `Ok(None)` if it has not all
    /// arrived. Body payloads are slices of `buf`'s allocation.
    ///
    /// Several whole frames may be taken off `buf` at once and handed out by the following
    /// calls; `Ok(None)` comes only once they all were, and then `buf` holds exactly the
    /// bytes not yet decoded.
    ///
    /// ```
    /// use amqp_proto::{Frame, FrameDecoder};
    /// use bytes::BytesMut;
    /// let mut buf = BytesMut::new();
    /// Frame::Heartbeat.encode(&mut buf).unwrap();
    /// let mut half = buf.split_to(4);
    /// let mut dec = FrameDecoder::default();
    /// assert_eq!(dec.decode(&mut half).unwrap(), None);
    /// half.unsplit(buf);
    /// assert_eq!(dec.decode(&mut half).unwrap(), Some(Frame::Heartbeat));
    /// ```
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if self.pending.is_empty() {
            let whole = self.whole_frames(buf);
            if whole == 0 {
                return self.not_whole(buf);
            }
            self.pending = buf.split_to(whole).freeze();
        }
        self.decode_pending()
    }

    /// Checks a frame header: not a protocol header, within frame_max, a known type.
    fn head(&self, head: &[u8]) -> Result<Head, CodecError> {
        let &[kind, c0, c1, s0, s1, s2, s3, ..] = head else {
            return Err(CodecError::Truncated {
                what: "frame header",
            });
        };
        if head.starts_with(b"AMQP") {
            check_protocol_header(head)?;
        }
        let size = u32::from_be_bytes([s0, s1, s2, s3]);
        let total = u64::from(size) + FRAME_OVERHEAD as u64;
        if self.frame_max != 0 && total > u64::from(self.frame_max) {
            return Err(CodecError::FrameTooLarge {
                size: total,
                max: self.frame_max,
            });
        }
        if !matches!(
            kind,
            FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
        ) {
            return Err(CodecError::UnknownFrameType(kind));
        }
        // Checked above against frame_max (or u32 + 8 fits usize on every supported target).
        let total = usize::try_from(total).map_err(|_| CodecError::FrameTooLarge {
            size: total,
            max: self.frame_max,
        })?;
        Ok(Head {
            kind,
            channel: u16::from_be_bytes([c0, c1]),
            size,
            total,
        })
    }

    /// How many bytes at the front of `buf` are whole frames whose header and end octet pass
    /// the checks, [`BATCH`] or a little more, up to the first large frame included. The
    /// first frame that does not pass stays in
    /// `buf`, for [`Self::not_whole`].
    fn whole_frames(&self, buf: &[u8]) -> usize {
        let mut at = 0;
        while at < BATCH {
            let Some(head) = buf.get(at..at + 7) else {
                break;
            };
            let Ok(head) = self.head(head) else {
                break;
            };
            if head.total > SMALL_FRAME {
                if let Some(frame) = buf.get(at..at + head.total) {
                    read_ahead(frame);
                }
            }
            match buf.get(at + head.total - 1) {
                Some(&FRAME_END) => at += head.total,
                _ => break,
            }
            if head.total > SMALL_FRAME {
                // Past a large frame the next header is likely not in cache yet: checking
                // ahead would wait for memory with no decoding to overlap it.
                break;
            }
        }
        at
    }

    /// `buf` does not start with a whole, well-formed frame: says why, or makes room for the
    /// rest of a partial one.
    fn not_whole(&self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let Some(head) = buf.get(..7) else {
            // A peer refusing our protocol version answers with its own header; recognise it
            // from the first bytes rather than misreading it as a frame.
            return check_protocol_header(buf).map(|()| None);
        };
        if head.starts_with(b"AMQP") {
            check_protocol_header(buf)?;
            return Ok(None);
        }
        let head = self.head(head)?;
        if buf.len() < head.total {
            // Make room for the rest up front, but never more than a bounded amount on the
            // word of a frame header alone: without a frame_max the header may claim 4 GiB.
            buf.reserve((head.total - buf.len()).min(MAX_RESERVE));
            return Ok(None);
        }
        let end = buf.get(head.total - 1).copied().unwrap_or(0);
        Err(CodecError::BadFrameEnd(end))
    }

    /// Decodes the first of the pending frames (whole and checked by `whole_frames`; the
    /// header is checked again, as frame_max may have changed since).
    fn decode_pending(&mut self) -> Result<Option<Frame>, CodecError> {
        let head = self.head(self.pending.get(..7).unwrap_or_default())?;
        if self.pending.len() < head.total {
            return Err(CodecError::Truncated { what: "frame" });
        }
        let (start, end) = (7, 7 + head.size as usize);
        let channel = head.channel;
        // Each arm returns on its own, and the frame is built in the return value, so that
        // this large enum is not copied from one local to another (the content header is
        // decoded in place).
        match head.kind {
            FRAME_METHOD => {
                let method = Method::read(&mut Reader::range(&self.pending, start, end))?;
                self.taken(head.total);
                Ok(Some(Frame::Method(channel, method)))
            }
            FRAME_HEADER => {
                let mut frame = Frame::Header(channel, ContentHeader::default());
                if let Frame::Header(_, header) = &mut frame {
                    header.read_into(&mut Reader::range(&self.pending, start, end))?;
                }
                self.taken(head.total);
                Ok(Some(frame))
            }
            FRAME_BODY => {
                let body = self.pending.slice(start..end);
                self.taken(head.total);
                Ok(Some(Frame::Body(channel, body)))
            }
            _ if channel != 0 || head.size != 0 => Err(CodecError::BadHeartbeat {
                channel,
                size: head.size,
            }),
            _ => {
                self.taken(head.total);
                Ok(Some(Frame::Heartbeat))
            }
        }
    }

    /// Drops the first `n` pending bytes, a frame that was decoded.
    fn taken(&mut self, n: usize) {
        if n < self.pending.len() {
            self.pending.advance(n);
        } else {
            // Let go of the read buffer's memory, so that it can be reused in place.
            self.pending = Bytes::new();
        }
    }
}

/// How much of a large frame's end [`read_ahead`] reads.
const READ_AHEAD: usize = 2048;

/// Reads one byte of each cache line of the last [`READ_AHEAD`] bytes of `frame`, front to
/// back, and does nothing with them.
///
/// Checking a large frame reads its end octet, far from its header. On a stream that is not
/// in cache that read waits for memory, and then the next frame's header, right after it,
/// and its end octet again: one wait per frame, each after the one before. Reading the lines
/// in order instead starts those reads together and shows the hardware prefetcher a
/// sequential stream, which it then fetches ahead of the decoder. On a 32 MiB stream of
/// 1 KiB deliveries this made decoding about 1.6x faster
/// (`bench/results/2026-11-29-codec-large.md`). Only the end: reading
/// all of a 128 KiB frame that is already in cache made decoding it 7x slower.
fn read_ahead(frame: &[u8]) {
    const CACHE_LINE: usize = 64;
    let tail = frame
        .get(frame.len().saturating_sub(READ_AHEAD)..)
        .unwrap_or_default();
    let folded = tail.iter().step_by(CACHE_LINE).fold(0u8, |x, &b| x ^ b);
    // The reads are the point, not the value: keep them from being optimized away.
    std::hint::black_box(folded);
}

/// Fails if `buf` starts with (a prefix of) an AMQP protocol header.
fn check_protocol_header(buf: &[u8]) -> Result<(), CodecError> {
    let n = buf.len().min(4);
    if n == 0 || buf.get(..n) != b"AMQP".get(..n) {
        return Ok(());
    }
    match buf.get(..8) {
        Some(&[_, _, _, _, id, major, minor, revision]) => {
            Err(CodecError::ProtocolVersionRefused {
                id,
                major,
                minor,
                revision,
            })
        }
        _ => Ok(()),
    }
}

/// For a peer playing the server: takes the client's 8-byte protocol header off `buf`.
///
/// Returns `Ok(false)` while fewer than 8 bytes have arrived, and an error for anything but
/// AMQP 0-9-1 (a server then answers with its own header and closes).
pub fn decode_protocol_header(buf: &mut BytesMut) -> Result<bool, CodecError> {
    let Some(head) = buf.get(..8) else {
        return Ok(false);
    };
    let mut got = [0u8; 8];
    got.copy_from_slice(head);
    if got != PROTOCOL_HEADER {
        return Err(CodecError::BadProtocolHeader(got));
    }
    buf.advance(8);
    Ok(true)
}
