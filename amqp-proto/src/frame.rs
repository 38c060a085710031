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
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_u32(0);
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
    out.put_u8(FRAME_BODY);
    out.put_u16(channel);
    out.put_u32(len);
}

/// The most [`FrameDecoder::decode`] reserves ahead for a frame that has not fully arrived.
const MAX_RESERVE: usize = 1 << 20;

/// Streaming frame decoder with a frame size limit.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    frame_max: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder {
            frame_max: PRE_TUNE_FRAME_MAX,
        }
    }
}

impl FrameDecoder {
    /// A decoder that accepts frames of up to `frame_max` bytes in all (0 means no limit).
    pub fn new(frame_max: u32) -> Self {
        FrameDecoder { frame_max }
    }

    /// The limit in force.
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// Changes the limit, e.g. once tune negotiated it.
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max;
    }

    /// Takes one whole frame off the front of `buf`, or returns `Ok(None)` if it has not all
    /// arrived. Body payloads are slices of `buf`'s allocation.
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
        let Some(head) = buf.get(..7) else {
            // A peer refusing our protocol version answers with its own header; recognise it
            // from the first bytes rather than misreading it as a frame.
            return check_protocol_header(buf).map(|()| None);
        };
        if head.starts_with(b"AMQP") {
            check_protocol_header(buf)?;
            return Ok(None);
        }
        let kind = head[0];
        let channel = u16::from_be_bytes([head[1], head[2]]);
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);
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
        if buf.len() < total {
            // Make room for the rest up front, but never more than a bounded amount on the
            // word of a frame header alone: without a frame_max the header may claim 4 GiB.
            buf.reserve((total - buf.len()).min(MAX_RESERVE));
            return Ok(None);
        }
        let end = buf.get(total - 1).copied().unwrap_or(0);
        if end != FRAME_END {
            return Err(CodecError::BadFrameEnd(end));
        }
        buf.advance(7);
        let payload = buf.split_to(size as usize).freeze();
        buf.advance(1);
        // Each arm returns on its own so that only the content header, by far the largest
        // variant, is built in a local and copied out; it is decoded in place.
        match kind {
            FRAME_METHOD => Ok(Some(Frame::Method(channel, Method::decode(&payload)?))),
            FRAME_HEADER => {
                let mut frame = Frame::Header(channel, ContentHeader::default());
                if let Frame::Header(_, header) = &mut frame {
                    header.read_into(&mut Reader::new(&payload))?;
                }
                Ok(Some(frame))
            }
            FRAME_BODY => Ok(Some(Frame::Body(channel, payload))),
            _ if channel != 0 || size != 0 => Err(CodecError::BadHeartbeat { channel, size }),
            _ => Ok(Some(Frame::Heartbeat)),
        }
    }
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
