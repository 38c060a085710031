//! Bounds-checked primitives for reading and writing the AMQP wire format.
//!
//! Every read checks what remains before touching the input, so no length taken from the peer
//! can cause a panic or an allocation larger than the frame that carries it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::CodecError;

/// A cursor over one frame payload. Slices handed out share the payload's allocation.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    /// Where this reader's part of `buf` ends (a sub-reader sees only a length-prefixed part).
    end: usize,
    /// The octet holding packed bit fields and how many of its bits were consumed.
    bits: Option<(u8, u8)>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes) -> Self {
        Reader {
            buf,
            pos: 0,
            end: buf.len(),
            bits: None,
        }
    }

    /// A reader over `buf[start..end]` alone (an empty one if that is not within `buf`).
    pub(crate) fn range(buf: &'a Bytes, start: usize, end: usize) -> Self {
        let end = end.min(buf.len());
        Reader {
            buf,
            pos: start.min(end),
            end,
            bits: None,
        }
    }

    /// The bytes from `start` (an earlier position of this reader) to the current position,
    /// sharing the buffer.
    pub(crate) fn bytes_since(&self, start: usize) -> Bytes {
        if start >= self.pos {
            return Bytes::new();
        }
        self.buf.slice(start..self.pos)
    }

    /// The current position in the buffer.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    /// Takes the next `n` bytes as a reader of their own (e.g. a table's entries) without
    /// slicing the buffer.
    pub(crate) fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, CodecError> {
        let start = self.pos;
        self.take(n, what)?;
        Ok(Reader {
            buf: self.buf,
            pos: start,
            end: self.pos,
            bits: None,
        })
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        self.bits = None;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.end)
            .ok_or(CodecError::Truncated { what })?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(CodecError::Truncated { what })?;
        self.pos = end;
        Ok(s)
    }

    /// Like [`Reader::take`] but returns a zero-copy slice of the underlying buffer.
    pub(crate) fn take_bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, CodecError> {
        let start = self.pos;
        self.take(n, what)?;
        Ok(self.buf.slice(start..self.pos))
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], CodecError> {
        let s = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// Reads one packed bit: consecutive bit fields share octets, eight to an octet, low bit first.
    pub(crate) fn bit(&mut self, what: &'static str) -> Result<bool, CodecError> {
        let (octet, used) = match self.bits {
            Some((octet, used)) if used < 8 => (octet, used),
            _ => (self.u8(what)?, 0),
        };
        self.bits = Some((octet, used + 1));
        Ok(octet & (1 << used) != 0)
    }

    /// Fails unless the whole payload was consumed: trailing bytes mean the peer and we disagree
    /// about the layout, which the spec treats as a malformed frame.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(CodecError::TrailingBytes { what, extra }),
        }
    }
}

/// Appends fields to an output buffer, packing consecutive bits into shared octets.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    pub(crate) buf: &'a mut BytesMut,
    /// Index in `buf` of the octet currently collecting bits and how many it holds.
    bits: Option<(usize, u8)>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut BytesMut) -> Self {
        Writer { buf, bits: None }
    }

    /// Ends a run of bit fields; any non-bit field does this first.
    pub(crate) fn plain(&mut self) -> &mut BytesMut {
        self.bits = None;
        self.buf
    }

    pub(crate) fn bit(&mut self, value: bool) {
        match self.bits {
            Some((idx, used)) if used < 8 => {
                if value {
                    if let Some(b) = self.buf.get_mut(idx) {
                        *b |= 1 << used;
                    }
                }
                self.bits = Some((idx, used + 1));
            }
            _ => {
                // The first bit of a new octet is its low bit: the octet is written as is.
                self.buf.put_u8(u8::from(value));
                self.bits = Some((self.buf.len() - 1, 1));
            }
        }
    }
}
