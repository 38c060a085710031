//! The outbound byte queue: small frames are packed into one buffer, large bodies are queued as
//! their own chunks so that they reach the socket without being copied (vectored writes).

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::CodecError;
use crate::frame::{
    FRAME_END, FRAME_HEADER, FRAME_OVERHEAD, Frame, write_body_frame_header, write_frame,
};
use crate::properties::{BASIC_CLASS_ID, BasicProperties, ContentHeader};
use crate::spec::Method;

/// Bodies at least this large are queued by reference instead of copied next to their frame
/// headers; below it a copy is cheaper than an extra iovec.
pub const BODY_COPY_THRESHOLD: usize = 4096;

/// The packed buffer is allocated in blocks of at most this size, and a block with less than
/// [`TAIL_ROOM`] left is sealed (its bytes become a chunk) before a new one is started. So
/// the buffer never grows by doubling past what is queued: the queue holds what is queued
/// plus at most one block and `TAIL_ROOM` per sealed block.
const TAIL_BLOCK: usize = 64 * 1024;
const TAIL_ROOM: usize = 4 * 1024;
/// The first block's size; each new block doubles it up to [`TAIL_BLOCK`], so a connection
/// that has sent only its handshake holds a few KiB, not a whole block.
const FIRST_BLOCK: usize = 2 * TAIL_ROOM;

/// Bytes waiting to be written, in order, as a list of chunks ready for a vectored write.
///
/// Like [`Frame`], it takes the wire's bare `u16` channel numbers: it is
/// codec level, below the connection's [`ChannelId`](crate::ChannelId).
///
/// ```
/// use amqp_proto::{BasicProperties, Transmit, BasicPublish};
/// use bytes::Bytes;
/// let mut out = Transmit::default();
/// let body = Bytes::from(vec![7u8; 100_000]);
/// out.push_content(1, &BasicPublish::default().into(), &BasicProperties::default(), &body, 131_072)
///     .unwrap();
/// let mut slices = [std::io::IoSlice::new(&[]); 8];
/// let n = out.io_slices(&mut slices);
/// assert!(n >= 2); // frames, then the body by reference, then the frame end
/// let total: usize = slices[..n].iter().map(|s| s.len()).sum();
/// assert_eq!(total, out.len());
/// ```
#[derive(Debug, Default)]
pub struct Transmit {
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    /// Size of the last block started (0 before the first).
    block: usize,
    len: usize,
    /// Frames queued since creation (for the connection's metrics).
    frames: u64,
}

impl Transmit {
    /// Total bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many frames were ever queued (raw bytes such as the protocol header excluded).
    pub fn frames_queued(&self) -> u64 {
        self.frames
    }

    /// Appends raw bytes (the protocol header).
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.make_room();
        self.tail.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends one frame.
    pub fn push_frame(&mut self, frame: &Frame) -> Result<(), CodecError> {
        self.make_room();
        let before = self.tail.len();
        frame.encode(&mut self.tail)?;
        self.len += self.tail.len() - before;
        self.frames += 1;
        Ok(())
    }

    /// Appends a method frame, refusing (with nothing queued) one larger than `frame_max`
    /// (0: no limit), which the spec forbids sending.
    pub fn push_method(
        &mut self,
        channel: u16,
        method: &Method,
        frame_max: u32,
    ) -> Result<(), CodecError> {
        self.make_room();
        let before = self.tail.len();
        write_frame(&mut self.tail, crate::frame::FRAME_METHOD, channel, |o| {
            method.encode(o)
        })?;
        let size = self.tail.len() - before;
        if frame_max != 0 && size > frame_max as usize {
            self.tail.truncate(before);
            return Err(CodecError::FrameTooLarge {
                size: size as u64,
                max: frame_max,
            });
        }
        self.frames += 1;
        self.len += size;
        Ok(())
    }

    /// Appends a content-carrying method with its header and body frames, splitting the body
    /// at `frame_max`. Either all of it is queued or, on error, none of it.
    ///
    /// Fails with [`CodecError::HeaderTooLarge`] if the properties cannot fit one frame.
    pub fn push_content(
        &mut self,
        channel: u16,
        method: &Method,
        properties: &BasicProperties,
        body: &Bytes,
        frame_max: u32,
    ) -> Result<(), CodecError> {
        self.make_room();
        let start = self.tail.len();
        let result = self.push_content_frames(channel, method, properties, body, frame_max);
        if result.is_err() {
            self.tail.truncate(start);
            return result;
        }
        self.len += self.tail.len() - start;
        // The method and header frames; push_body counts the body frames.
        self.frames += 2;
        self.push_body(channel, body, frame_max);
        Ok(())
    }

    fn push_content_frames(
        &mut self,
        channel: u16,
        method: &Method,
        properties: &BasicProperties,
        body: &Bytes,
        frame_max: u32,
    ) -> Result<(), CodecError> {
        write_frame(&mut self.tail, crate::frame::FRAME_METHOD, channel, |o| {
            method.encode(o)
        })?;
        let header_start = self.tail.len();
        let body_size = body.len() as u64;
        write_frame(&mut self.tail, FRAME_HEADER, channel, |o| {
            ContentHeader::encode_parts(BASIC_CLASS_ID, body_size, properties, o)
        })?;
        let size = self.tail.len() - header_start;
        if frame_max != 0 && size > frame_max as usize {
            return Err(CodecError::HeaderTooLarge {
                size,
                max: frame_max,
            });
        }
        Ok(())
    }

    /// Appends body frames for `body`, each at most `frame_max` bytes in all. Large pieces are
    /// queued as slices of `body`, not copied.
    fn push_body(&mut self, channel: u16, body: &Bytes, frame_max: u32) {
        let piece = if frame_max == 0 {
            body.len().max(1)
        } else {
            (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1)
        };
        let mut offset = 0;
        while offset < body.len() {
            let end = (offset + piece).min(body.len());
            let len = end - offset;
            self.make_room();
            // `piece` never exceeds frame_max, a u32.
            write_body_frame_header(&mut self.tail, channel, len as u32);
            if len < BODY_COPY_THRESHOLD {
                self.tail.extend_from_slice(&body[offset..end]);
            } else {
                self.flush_tail();
                self.chunks.push_back(body.slice(offset..end));
            }
            self.tail.put_u8(FRAME_END);
            self.len += len + FRAME_OVERHEAD;
            self.frames += 1;
            offset = end;
        }
    }

    /// Seals the current block when it is nearly full and starts a new one (or reuses the
    /// old one in place once everything carved from it was written).
    #[inline]
    fn make_room(&mut self) {
        if self.tail.capacity() - self.tail.len() < TAIL_ROOM {
            self.flush_tail();
            self.block = (self.block * 2).clamp(FIRST_BLOCK, TAIL_BLOCK);
            self.tail.reserve(self.block);
        }
    }

    fn flush_tail(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }

    /// Fills `dst` with the queued chunks, front first, and returns how many it filled.
    pub fn io_slices<'a>(&'a mut self, dst: &mut [IoSlice<'a>]) -> usize {
        self.flush_tail();
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(self.chunks.iter()) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    /// Takes the next chunk to write, for callers that write one buffer at a time.
    pub fn pop_chunk(&mut self) -> Option<Bytes> {
        self.flush_tail();
        let chunk = self.chunks.pop_front()?;
        self.len -= chunk.len();
        Some(chunk)
    }

    /// Drops `n` bytes from the front, after they were written.
    pub fn advance(&mut self, mut n: usize) {
        self.flush_tail();
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() > n {
                front.advance(n);
                break;
            }
            n -= front.len();
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_start_small_and_grow_to_the_full_size() {
        let mut out = Transmit::default();
        out.push_raw(b"AMQP\x00\x00\x09\x01");
        assert!(out.tail.capacity() < TAIL_BLOCK, "{}", out.tail.capacity());
        let mut sizes = Vec::new();
        for _ in 0..20_000 {
            out.push_frame(&Frame::Heartbeat).unwrap();
            sizes.push(out.block);
        }
        sizes.dedup();
        assert_eq!(sizes, [FIRST_BLOCK, 16 * 1024, 32 * 1024, TAIL_BLOCK]);
        assert_eq!(out.len(), 8 + 20_000 * 8);
        let mut written = 0;
        while let Some(chunk) = out.pop_chunk() {
            written += chunk.len();
        }
        assert_eq!(written, 8 + 20_000 * 8);
    }
}
