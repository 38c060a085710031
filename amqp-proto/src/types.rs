//! AMQP field values: short and long strings, field tables and arrays, with RabbitMQ's type tags.
//!
//! RabbitMQ's tags differ from the 0-9-1 spec's table (for example `s` is a signed 16-bit integer
//! and `x` a byte array); these follow RabbitMQ, which is what every peer we meet speaks.

use std::fmt;
use std::ops::Deref;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::CodecError;
use crate::wire::{Reader, Writer};

/// How deeply field tables and arrays may nest before decoding or encoding fails. Bounded so
/// that hostile input cannot exhaust the stack.
pub const MAX_TABLE_DEPTH: usize = 64;

/// An AMQP short string: at most 255 bytes of UTF-8, checked when built.
///
/// Decoded short strings share the frame's buffer rather than copying it.
///
/// ```
/// use amqp_proto::ShortString;
/// let q = ShortString::try_from("orders").unwrap();
/// assert_eq!(q.as_str(), "orders");
/// assert!(ShortString::try_from("x".repeat(256)).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortString(Bytes);

impl ShortString {
    /// The empty short string.
    pub const fn empty() -> Self {
        ShortString(Bytes::new())
    }

    /// A short string from a `'static` literal, checked at compile time when used in a const.
    pub const fn from_static(s: &'static str) -> Self {
        assert!(s.len() <= 255, "short strings hold at most 255 bytes");
        ShortString(Bytes::from_static(s.as_bytes()))
    }

    /// The string itself.
    pub fn as_str(&self) -> &str {
        // Invariant: the bytes are UTF-8 (checked or converted when built).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The underlying bytes, shared rather than copied.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    fn from_utf8_bytes(b: Bytes) -> Self {
        // Names, tags and keys are nearly always ASCII, which is checked a word at a time.
        if b.is_ascii() {
            return ShortString(b);
        }
        match std::str::from_utf8(&b) {
            Ok(_) => ShortString(b),
            // Peers may send bytes that are not UTF-8; keep the connection usable and show them
            // with replacement characters, as the Java client does.
            Err(_) => {
                let mut s = String::from_utf8_lossy(&b).into_owned();
                while s.len() > 255 {
                    s.pop();
                }
                ShortString(Bytes::from(s))
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let len = r.u8("short string length")?;
        Ok(Self::from_utf8_bytes(
            r.take_bytes(len as usize, "short string")?,
        ))
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        // The invariant keeps the length within one octet.
        out.put_u8(self.0.len() as u8);
        out.put_slice(&self.0);
    }
}

impl TryFrom<&str> for ShortString {
    type Error = CodecError;
    fn try_from(s: &str) -> Result<Self, CodecError> {
        if s.len() > 255 {
            return Err(CodecError::ShortStringTooLong(s.len()));
        }
        Ok(ShortString(Bytes::copy_from_slice(s.as_bytes())))
    }
}

impl TryFrom<String> for ShortString {
    type Error = CodecError;
    fn try_from(s: String) -> Result<Self, CodecError> {
        if s.len() > 255 {
            return Err(CodecError::ShortStringTooLong(s.len()));
        }
        Ok(ShortString(Bytes::from(s)))
    }
}

impl TryFrom<&String> for ShortString {
    type Error = CodecError;
    fn try_from(s: &String) -> Result<Self, CodecError> {
        Self::try_from(s.as_str())
    }
}

impl Deref for ShortString {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ShortString {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for ShortString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortString {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for ShortString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An AMQP long string: arbitrary bytes with a 32-bit length, shared rather than copied.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LongString(pub Bytes);

impl LongString {
    /// The bytes, as UTF-8 if they are.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let len = r.u32("long string length")?;
        Ok(LongString(r.take_bytes(len as usize, "long string")?))
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), CodecError> {
        put_len(out, self.0.len(), "long string")?;
        out.put_slice(&self.0);
        Ok(())
    }
}

impl Deref for LongString {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for LongString {
    fn from(s: &str) -> Self {
        LongString(Bytes::copy_from_slice(s.as_bytes()))
    }
}
impl From<String> for LongString {
    fn from(s: String) -> Self {
        LongString(Bytes::from(s))
    }
}
impl From<Vec<u8>> for LongString {
    fn from(v: Vec<u8>) -> Self {
        LongString(Bytes::from(v))
    }
}
impl From<&[u8]> for LongString {
    fn from(v: &[u8]) -> Self {
        LongString(Bytes::copy_from_slice(v))
    }
}
impl From<Bytes> for LongString {
    fn from(v: Bytes) -> Self {
        LongString(v)
    }
}

impl fmt::Debug for LongString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => fmt::Debug::fmt(s, f),
            None => write!(
                f,
                "b{:?}",
                bytes::Bytes::as_ref(&self.0).escape_ascii().to_string()
            ),
        }
    }
}

/// A long string carrying credentials (a SASL response, a refreshed secret): on the wire a
/// plain long string, but its Debug never shows the bytes, so logging a decoded method cannot
/// leak a password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(pub LongString);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl Deref for SecretBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<LongString> for SecretBytes {
    fn from(v: LongString) -> Self {
        SecretBytes(v)
    }
}

impl From<Bytes> for SecretBytes {
    fn from(v: Bytes) -> Self {
        SecretBytes(LongString(v))
    }
}

/// Appends a field value's tag and its fixed-size big-endian payload (at most 8 bytes) at once.
fn put_tagged<const N: usize>(out: &mut BytesMut, tag: u8, payload: [u8; N]) {
    const { assert!(N <= 8, "field value payloads are at most 8 bytes") };
    let mut run = [tag; 9];
    run[1..=N].copy_from_slice(&payload);
    out.put_slice(&run[..=N]);
}

/// Appends a tag, a 32-bit length and the bytes (a long string or a byte array).
fn put_tagged_bytes(
    out: &mut BytesMut,
    tag: u8,
    bytes: &[u8],
    what: &'static str,
) -> Result<(), CodecError> {
    let len = u32::try_from(bytes.len()).map_err(|_| CodecError::TooLong {
        what,
        len: bytes.len(),
    })?;
    put_tagged(out, tag, len.to_be_bytes());
    out.put_slice(bytes);
    Ok(())
}

fn put_len(out: &mut BytesMut, len: usize, what: &'static str) -> Result<(), CodecError> {
    let len32 = u32::try_from(len).map_err(|_| CodecError::TooLong { what, len })?;
    out.put_u32(len32);
    Ok(())
}

/// A decimal value: `value` × 10^-`scale`.
///
/// The unscaled `value` is signed (two's complement on the wire), as the Java client, pika
/// and RabbitMQ itself read it, so `-3.14` is `Decimal::new(-314, 2)`.
///
/// ```
/// use amqp_proto::Decimal;
/// let price = Decimal::new(-314, 2);
/// assert_eq!(price.to_string(), "-3.14");
/// assert_eq!(Decimal::new(5, 3).to_string(), "0.005");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Decimal {
    /// Number of decimal digits after the point.
    pub scale: u8,
    /// The unscaled value, signed.
    pub value: i32,
}

impl Decimal {
    /// `value` × 10^-`scale`.
    pub const fn new(value: i32, scale: u8) -> Self {
        Decimal { scale, value }
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Exact: the digits of the integer with a point placed `scale` from the right.
        let digits = self.value.unsigned_abs().to_string();
        let sign = if self.value < 0 { "-" } else { "" };
        let scale = usize::from(self.scale);
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        if digits.len() > scale {
            let (int, frac) = digits.split_at(digits.len() - scale);
            write!(f, "{sign}{int}.{frac}")
        } else {
            write!(f, "{sign}0.{}{digits}", "0".repeat(scale - digits.len()))
        }
    }
}

/// One value in a field table or array, tagged as RabbitMQ tags it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FieldValue {
    /// `t`
    Bool(bool),
    /// `b`
    I8(i8),
    /// `B`
    U8(u8),
    /// `s` (RabbitMQ; the 0-9-1 spec says `U`)
    I16(i16),
    /// `u`
    U16(u16),
    /// `I`
    I32(i32),
    /// `i`
    U32(u32),
    /// `l` (RabbitMQ; the 0-9-1 spec says `L`)
    I64(i64),
    /// `L`: not in RabbitMQ's table, but RabbitMQ reads it as a signed 64-bit integer and
    /// passes it through from other clients. Kept apart from [`FieldValue::I64`] so that
    /// re-encoding reproduces the received bytes.
    I64L(i64),
    /// `f`
    F32(f32),
    /// `d`
    F64(f64),
    /// `D`
    Decimal(Decimal),
    /// `S`
    LongString(LongString),
    /// `x`
    ByteArray(Bytes),
    /// `T`: seconds since the Unix epoch.
    Timestamp(u64),
    /// `F`
    Table(FieldTable),
    /// `A`
    Array(FieldArray),
    /// `V`
    Void,
}

impl FieldValue {
    /// The type tag written before this value.
    pub fn tag(&self) -> u8 {
        match self {
            FieldValue::Bool(_) => b't',
            FieldValue::I8(_) => b'b',
            FieldValue::U8(_) => b'B',
            FieldValue::I16(_) => b's',
            FieldValue::U16(_) => b'u',
            FieldValue::I32(_) => b'I',
            FieldValue::U32(_) => b'i',
            FieldValue::I64(_) => b'l',
            FieldValue::I64L(_) => b'L',
            FieldValue::F32(_) => b'f',
            FieldValue::F64(_) => b'd',
            FieldValue::Decimal(_) => b'D',
            FieldValue::LongString(_) => b'S',
            FieldValue::ByteArray(_) => b'x',
            FieldValue::Timestamp(_) => b'T',
            FieldValue::Table(_) => b'F',
            FieldValue::Array(_) => b'A',
            FieldValue::Void => b'V',
        }
    }

    /// The value as a string, for long strings that are UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongString(s) => s.as_str(),
            _ => None,
        }
    }

    /// The value as a boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            FieldValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Any integer variant widened to `i64` (u64 does not occur: RabbitMQ has no unsigned 64).
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            FieldValue::I8(v) => v.into(),
            FieldValue::U8(v) => v.into(),
            FieldValue::I16(v) => v.into(),
            FieldValue::U16(v) => v.into(),
            FieldValue::I32(v) => v.into(),
            FieldValue::U32(v) => v.into(),
            FieldValue::I64(v) | FieldValue::I64L(v) => v,
            _ => return None,
        })
    }

    /// A copy that shares no buffer with the frame it was decoded from. Recursion follows
    /// the value's nesting, which decoding bounded.
    fn detach(&self) -> Self {
        match self {
            FieldValue::LongString(v) => FieldValue::LongString(v.detach()),
            FieldValue::ByteArray(v) => FieldValue::ByteArray(Bytes::copy_from_slice(v)),
            FieldValue::Table(t) => FieldValue::Table(t.detach()),
            FieldValue::Array(a) => {
                FieldValue::Array(FieldArray(a.0.iter().map(Self::detach).collect()))
            }
            other => other.clone(),
        }
    }

    fn decode(r: &mut Reader<'_>, depth: usize) -> Result<Self, CodecError> {
        let tag = r.u8("field value tag")?;
        Ok(match tag {
            b't' => FieldValue::Bool(r.u8("bool")? != 0),
            b'b' => FieldValue::I8(r.u8("i8")? as i8),
            b'B' => FieldValue::U8(r.u8("u8")?),
            b's' => FieldValue::I16(r.u16("i16")? as i16),
            b'u' => FieldValue::U16(r.u16("u16")?),
            b'I' => FieldValue::I32(r.u32("i32")? as i32),
            b'i' => FieldValue::U32(r.u32("u32")?),
            b'l' => FieldValue::I64(r.u64("i64")? as i64),
            b'L' => FieldValue::I64L(r.u64("i64")? as i64),
            b'f' => FieldValue::F32(f32::from_bits(r.u32("f32")?)),
            b'd' => FieldValue::F64(f64::from_bits(r.u64("f64")?)),
            b'D' => FieldValue::Decimal(Decimal {
                scale: r.u8("decimal scale")?,
                value: r.u32("decimal value")? as i32,
            }),
            b'S' => FieldValue::LongString(LongString::decode(r)?),
            b'x' => {
                let len = r.u32("byte array length")?;
                FieldValue::ByteArray(r.take_bytes(len as usize, "byte array")?)
            }
            b'T' => FieldValue::Timestamp(r.u64("timestamp")?),
            b'F' => FieldValue::Table(FieldTable::decode_at(r, depth + 1)?),
            b'A' => FieldValue::Array(FieldArray::decode_at(r, depth + 1)?),
            b'V' => FieldValue::Void,
            other => return Err(CodecError::UnknownFieldTag(other)),
        })
    }

    fn encode(&self, out: &mut BytesMut, depth: usize) -> Result<(), CodecError> {
        let tag = self.tag();
        // The tag and a fixed-size payload (or a length prefix) are appended together: one
        // capacity check per value instead of two or three.
        match self {
            FieldValue::Bool(v) => put_tagged(out, tag, [u8::from(*v)]),
            FieldValue::I8(v) => put_tagged(out, tag, v.to_be_bytes()),
            FieldValue::U8(v) => put_tagged(out, tag, [*v]),
            FieldValue::I16(v) => put_tagged(out, tag, v.to_be_bytes()),
            FieldValue::U16(v) => put_tagged(out, tag, v.to_be_bytes()),
            FieldValue::I32(v) => put_tagged(out, tag, v.to_be_bytes()),
            FieldValue::U32(v) => put_tagged(out, tag, v.to_be_bytes()),
            FieldValue::I64(v) | FieldValue::I64L(v) => put_tagged(out, tag, v.to_be_bytes()),
            FieldValue::F32(v) => put_tagged(out, tag, v.to_bits().to_be_bytes()),
            FieldValue::F64(v) => put_tagged(out, tag, v.to_bits().to_be_bytes()),
            FieldValue::Decimal(d) => {
                let [v0, v1, v2, v3] = d.value.to_be_bytes();
                out.put_slice(&[tag, d.scale, v0, v1, v2, v3]);
            }
            FieldValue::LongString(s) => put_tagged_bytes(out, tag, &s.0, "long string")?,
            FieldValue::ByteArray(b) => put_tagged_bytes(out, tag, b, "byte array")?,
            FieldValue::Timestamp(t) => put_tagged(out, tag, t.to_be_bytes()),
            FieldValue::Table(t) => {
                out.put_u8(tag);
                t.encode_at(out, depth + 1)?
            }
            FieldValue::Array(a) => {
                out.put_u8(tag);
                a.encode_at(out, depth + 1)?
            }
            FieldValue::Void => out.put_u8(tag),
        }
        Ok(())
    }
}

macro_rules! field_value_from {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl From<$t> for FieldValue {
            fn from(v: $t) -> Self { FieldValue::$v(v.into()) }
        })*
    };
}
field_value_from! {
    bool => Bool, i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32, i64 => I64,
    f32 => F32, f64 => F64, Decimal => Decimal, LongString => LongString, &str => LongString,
    String => LongString, FieldTable => Table, FieldArray => Array,
    // Raw bytes are a byte array (`x`), as in the Java client; text is a long string (`S`).
    Bytes => ByteArray, Vec<u8> => ByteArray,
}

/// A long string (`S`), copied.
impl From<&String> for FieldValue {
    fn from(v: &String) -> Self {
        FieldValue::LongString(v.as_str().into())
    }
}

/// An array (`A`).
impl From<Vec<FieldValue>> for FieldValue {
    fn from(v: Vec<FieldValue>) -> Self {
        FieldValue::Array(FieldArray(v))
    }
}

/// A byte array (`x`), copied.
impl From<&[u8]> for FieldValue {
    fn from(v: &[u8]) -> Self {
        FieldValue::ByteArray(Bytes::copy_from_slice(v))
    }
}

/// A byte array (`x`), copied.
impl<const N: usize> From<&[u8; N]> for FieldValue {
    fn from(v: &[u8; N]) -> Self {
        FieldValue::ByteArray(Bytes::copy_from_slice(v))
    }
}

/// A timestamp (`T`): whole seconds since the Unix epoch, the protocol's resolution (the
/// fraction is dropped; times before 1970 become 0).
impl From<std::time::SystemTime> for FieldValue {
    fn from(t: std::time::SystemTime) -> Self {
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        FieldValue::Timestamp(secs)
    }
}

/// Void (`V`), the protocol's "no value".
impl From<()> for FieldValue {
    fn from((): ()) -> Self {
        FieldValue::Void
    }
}

/// The value, or void (`V`) for `None`.
impl<T: Into<FieldValue>> From<Option<T>> for FieldValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(FieldValue::Void, Into::into)
    }
}

/// Runs `body` between a 32-bit length prefix and patches the prefix afterwards.
fn with_len_prefix(
    out: &mut BytesMut,
    what: &'static str,
    body: impl FnOnce(&mut BytesMut) -> Result<(), CodecError>,
) -> Result<(), CodecError> {
    let at = out.len();
    out.put_u32(0);
    body(out)?;
    let len = out.len() - at - 4;
    let len32 = u32::try_from(len).map_err(|_| CodecError::TooLong { what, len })?;
    if let Some(slot) = out.get_mut(at..at + 4) {
        slot.copy_from_slice(&len32.to_be_bytes());
    }
    Ok(())
}

/// Reads a 32-bit length and hands a reader over exactly that many bytes to `body`.
fn within_len_prefix<T>(
    r: &mut Reader<'_>,
    what: &'static str,
    body: impl FnOnce(&mut Reader<'_>) -> Result<T, CodecError>,
) -> Result<T, CodecError> {
    let len = r.u32(what)?;
    let mut ir = r.sub(len as usize, what)?;
    let v = body(&mut ir)?;
    ir.finish(what)?;
    Ok(v)
}

/// A field table: named values in the order they were inserted or received.
///
/// Order is kept so that decoding and re-encoding reproduces the same bytes.
///
/// Keys are short strings (at most 255 bytes): [`insert`](Self::insert) and
/// [`with`](Self::with) panic on a longer key, as on any other programming error;
/// [`try_insert`](Self::try_insert) and [`try_with`](Self::try_with) return the error instead,
/// for keys that come from input. Values convert from the usual Rust types:
///
/// ```
/// use std::time::SystemTime;
/// use amqp_proto::{Decimal, FieldTable, FieldValue};
///
/// let mut args = FieldTable::new();
/// args.insert("x-max-priority", 10u8);
/// args.insert("x-dead-letter-exchange", "dlx");
/// assert_eq!(args.get("x-max-priority"), Some(&FieldValue::U8(10)));
///
/// let headers = FieldTable::new()
///     .with("attempt", 3i32)                      // I (signed 32-bit)
///     .with("price", Decimal::new(-314, 2))       // D (-3.14)
///     .with("checksum", &[0xde, 0xad][..])        // x (byte array; Vec<u8> and Bytes too)
///     .with("sent-at", SystemTime::now())         // T (seconds since the epoch)
///     .with("reply-hint", ())                     // V (void); Option::None is void too
///     .with("tags", vec![FieldValue::from("a"), FieldValue::from("b")]); // A (array)
/// assert_eq!(headers.get("reply-hint"), Some(&FieldValue::Void));
///
/// let long_key = "k".repeat(256);
/// assert!(FieldTable::new().try_with(long_key.as_str(), 1u8).is_err());
/// ```
///
/// A table decoded from a frame is checked when the frame is decoded (a malformed one is an
/// error then), but its entries are only built when first read: a consumer that never looks
/// at a delivery's headers pays for one check of the bytes, not for an allocation and a
/// reference per entry. Re-encoding a table that was not changed writes the received bytes.
#[derive(Clone, Default)]
pub struct FieldTable {
    /// The entries as received (without the length prefix), checked; `None` for a table built
    /// or changed in code. When set, `entries` is either empty or their decoding.
    raw: Option<Bytes>,
    entries: OnceLock<Vec<(ShortString, FieldValue)>>,
}

impl FieldTable {
    /// An empty table.
    pub const fn new() -> Self {
        FieldTable {
            raw: None,
            entries: OnceLock::new(),
        }
    }

    fn from_entries(entries: Vec<(ShortString, FieldValue)>) -> Self {
        FieldTable {
            raw: None,
            entries: OnceLock::from(entries),
        }
    }

    /// The entries, decoded from the received bytes on first use.
    fn entries(&self) -> &[(ShortString, FieldValue)] {
        self.entries.get_or_init(|| match &self.raw {
            Some(raw) => decode_checked_entries(raw),
            None => Vec::new(),
        })
    }

    /// Runs `f` on the entries, which stop being the received bytes.
    fn change<R>(&mut self, f: impl FnOnce(&mut Vec<(ShortString, FieldValue)>) -> R) -> R {
        let mut entries = match (self.entries.take(), self.raw.take()) {
            (Some(entries), _) => entries,
            (None, Some(raw)) => decode_checked_entries(&raw),
            (None, None) => Vec::new(),
        };
        let r = f(&mut entries);
        self.entries = OnceLock::from(entries);
        r
    }

    /// Sets `key` to `value`, replacing an earlier value of the same key in place.
    ///
    /// # Panics
    /// If `key` is longer than 255 bytes, the protocol's limit. Keys written in code are
    /// checked this way, like an index; for keys that come from input use
    /// [`FieldTable::try_insert`].
    pub fn insert(&mut self, key: &str, value: impl Into<FieldValue>) -> &mut Self {
        self.try_insert(key, value)
            .expect("field table key longer than 255 bytes")
    }

    /// [`FieldTable::insert`] as a builder: the same rule, the same panic.
    pub fn with(mut self, key: &str, value: impl Into<FieldValue>) -> Self {
        self.insert(key, value);
        self
    }

    /// Sets `key` to `value`, or fails if `key` is longer than 255 bytes.
    pub fn try_insert(
        &mut self,
        key: impl TryInto<ShortString, Error = CodecError>,
        value: impl Into<FieldValue>,
    ) -> Result<&mut Self, CodecError> {
        self.set(key.try_into()?, value);
        Ok(self)
    }

    /// [`FieldTable::try_insert`] as a builder.
    pub fn try_with(
        mut self,
        key: impl TryInto<ShortString, Error = CodecError>,
        value: impl Into<FieldValue>,
    ) -> Result<Self, CodecError> {
        self.try_insert(key, value)?;
        Ok(self)
    }

    /// Sets `key` to `value`, replacing an earlier value of the same key in place.
    pub fn set(&mut self, key: ShortString, value: impl Into<FieldValue>) {
        let value = value.into();
        self.change(
            |entries| match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => entries.push((key, value)),
            },
        )
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.entries()
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    }

    /// Removes and returns the value stored under `key`.
    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let i = self.entries().iter().position(|(k, _)| k.as_str() == key)?;
        Some(self.change(|entries| entries.remove(i).1))
    }

    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&ShortString, &FieldValue)> {
        self.entries().iter().map(|(k, v)| (k, v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        match &self.raw {
            Some(raw) => raw.is_empty(),
            None => self.entries().is_empty(),
        }
    }

    /// Decodes a length-prefixed table from `bytes` (the form it takes inside a frame).
    ///
    /// The whole table is checked now; its entries are built when first read.
    pub fn decode(bytes: &Bytes) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let t = Self::read_checked(&mut r)?;
        r.finish("field table")?;
        Ok(t)
    }

    /// Appends the length-prefixed encoding of this table.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_at(out, 0)
    }

    /// Reads a top-level table: checks it and keeps its bytes, to be decoded on first use.
    pub(crate) fn read_checked(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let start = r.position();
        check_table(r)?;
        // The entries, without the 4-byte length prefix.
        Ok(FieldTable::from_checked(r.bytes_since(start + 4)))
    }

    /// A table of received entries that passed [`check_table`], decoded on first read.
    pub(crate) fn from_checked(raw: Bytes) -> Self {
        FieldTable {
            raw: Some(raw),
            entries: OnceLock::new(),
        }
    }

    /// Reads a nested table, decoding its entries at once.
    pub(crate) fn decode_at(r: &mut Reader<'_>, depth: usize) -> Result<Self, CodecError> {
        if depth >= MAX_TABLE_DEPTH {
            return Err(CodecError::NestingTooDeep(MAX_TABLE_DEPTH));
        }
        within_len_prefix(r, "field table", |ir| {
            decode_entries(ir, depth).map(FieldTable::from_entries)
        })
    }

    pub(crate) fn encode_at(&self, out: &mut BytesMut, depth: usize) -> Result<(), CodecError> {
        if depth >= MAX_TABLE_DEPTH {
            return Err(CodecError::NestingTooDeep(MAX_TABLE_DEPTH));
        }
        // Received bytes were checked as a top-level table: written at the top level they
        // keep within the nesting limit. Nested in another table they are re-encoded, so
        // that the limit is checked.
        if let (Some(raw), 0) = (&self.raw, depth) {
            put_len(out, raw.len(), "field table")?;
            out.put_slice(raw);
            return Ok(());
        }
        with_len_prefix(out, "field table", |out| {
            for (k, v) in self.entries() {
                k.encode(out);
                v.encode(out, depth)?;
            }
            Ok(())
        })
    }
}

fn decode_entries(
    r: &mut Reader<'_>,
    depth: usize,
) -> Result<Vec<(ShortString, FieldValue)>, CodecError> {
    // Most tables are small; starting at 4 spares the first growth steps.
    let mut entries = Vec::with_capacity(if r.remaining() > 0 { 4 } else { 0 });
    while r.remaining() > 0 {
        let key = ShortString::decode(r)?;
        entries.push((key, FieldValue::decode(r, depth)?));
    }
    Ok(entries)
}

/// Decodes entries that [`FieldTable::read_checked`] accepted, which cannot fail: the check
/// and the decoding read the same layout with the same limits (a test holds them together).
/// Should they ever disagree, the entries read up to the disagreement are kept.
fn decode_checked_entries(raw: &Bytes) -> Vec<(ShortString, FieldValue)> {
    let mut r = Reader::new(raw);
    let mut entries = Vec::with_capacity(4);
    while r.remaining() > 0 {
        let Ok(key) = ShortString::decode(&mut r) else {
            break;
        };
        let Ok(value) = FieldValue::decode(&mut r, 0) else {
            break;
        };
        entries.push((key, value));
    }
    entries
}

/// Checks a top-level, length-prefixed table (entries as [`FieldValue::decode`] reads them,
/// with the same errors) and steps over it.
pub(crate) fn check_table(r: &mut Reader<'_>) -> Result<(), CodecError> {
    let len = r.u32("field table")?;
    let mut ir = r.sub(len as usize, "field table")?;
    while ir.remaining() > 0 {
        check_short_string(&mut ir)?;
        check_value(&mut ir, 0)?;
    }
    Ok(())
}

/// Checks a short string's layout (its bytes are made UTF-8 when decoded, never refused).
fn check_short_string(r: &mut Reader<'_>) -> Result<(), CodecError> {
    let len = r.u8("short string length")?;
    r.take(len as usize, "short string").map(drop)
}

/// Checks one field value as [`FieldValue::decode`] reads it, with the same errors, without
/// building it.
fn check_value(r: &mut Reader<'_>, depth: usize) -> Result<(), CodecError> {
    let (len, what) = match r.u8("field value tag")? {
        b't' => (1, "bool"),
        b'b' => (1, "i8"),
        b'B' => (1, "u8"),
        b's' => (2, "i16"),
        b'u' => (2, "u16"),
        b'I' => (4, "i32"),
        b'i' => (4, "u32"),
        b'l' | b'L' => (8, "i64"),
        b'f' => (4, "f32"),
        b'd' => (8, "f64"),
        b'D' => {
            r.u8("decimal scale")?;
            (4, "decimal value")
        }
        b'S' => (r.u32("long string length")? as usize, "long string"),
        b'x' => (r.u32("byte array length")? as usize, "byte array"),
        b'T' => (8, "timestamp"),
        b'F' => return check_nested(r, depth + 1, "field table", true),
        b'A' => return check_nested(r, depth + 1, "field array", false),
        b'V' => return Ok(()),
        other => return Err(CodecError::UnknownFieldTag(other)),
    };
    r.take(len, what).map(drop)
}

/// Checks a nested table (`keyed`) or array at `depth`.
fn check_nested(
    r: &mut Reader<'_>,
    depth: usize,
    what: &'static str,
    keyed: bool,
) -> Result<(), CodecError> {
    if depth >= MAX_TABLE_DEPTH {
        return Err(CodecError::NestingTooDeep(MAX_TABLE_DEPTH));
    }
    within_len_prefix(r, what, |ir| {
        while ir.remaining() > 0 {
            if keyed {
                check_short_string(ir)?;
            }
            check_value(ir, depth)?;
        }
        Ok(())
    })
}

impl PartialEq for FieldTable {
    fn eq(&self, other: &Self) -> bool {
        match (&self.raw, &other.raw) {
            (Some(a), Some(b)) if a == b => true,
            _ => self.entries() == other.entries(),
        }
    }
}

impl fmt::Debug for FieldTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FieldTable").field(&self.entries()).finish()
    }
}

impl<V: Into<FieldValue>> FromIterator<(ShortString, V)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (ShortString, V)>>(iter: I) -> Self {
        let mut t = FieldTable::new();
        for (k, v) in iter {
            t.set(k, v);
        }
        t
    }
}

/// A field array: values of any type, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldArray(pub Vec<FieldValue>);

impl FieldArray {
    pub(crate) fn decode_at(r: &mut Reader<'_>, depth: usize) -> Result<Self, CodecError> {
        if depth >= MAX_TABLE_DEPTH {
            return Err(CodecError::NestingTooDeep(MAX_TABLE_DEPTH));
        }
        within_len_prefix(r, "field array", |ir| {
            let mut values = Vec::new();
            while ir.remaining() > 0 {
                values.push(FieldValue::decode(ir, depth)?);
            }
            Ok(FieldArray(values))
        })
    }

    pub(crate) fn encode_at(&self, out: &mut BytesMut, depth: usize) -> Result<(), CodecError> {
        if depth >= MAX_TABLE_DEPTH {
            return Err(CodecError::NestingTooDeep(MAX_TABLE_DEPTH));
        }
        with_len_prefix(out, "field array", |out| {
            for v in &self.0 {
                v.encode(out, depth)?;
            }
            Ok(())
        })
    }
}

impl<V: Into<FieldValue>> FromIterator<V> for FieldArray {
    fn from_iter<I: IntoIterator<Item = V>>(iter: I) -> Self {
        FieldArray(iter.into_iter().map(Into::into).collect())
    }
}

/// The wire shape of one method or property field. Implemented once per AMQP domain type; the
/// method and property tables derive all encoding and decoding from it.
pub(crate) trait WireField: Sized + Clone {
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError>;
    fn write(&self, w: &mut Writer<'_>) -> Result<(), CodecError>;
    /// A copy that shares no buffer with the frame it was decoded from.
    fn detach(&self) -> Self {
        self.clone()
    }
}

impl WireField for bool {
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.bit("bit")
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.bit(*self);
        Ok(())
    }
}

macro_rules! wire_int {
    ($($t:ty, $get:ident, $put:ident;)*) => {$(
        impl WireField for $t {
            fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
                r.$get(stringify!($t))
            }
            fn write(&self, w: &mut Writer<'_>) -> Result<(), CodecError> {
                w.plain().$put(*self);
                Ok(())
            }
        }
    )*};
}
wire_int! { u8, u8, put_u8; u16, u16, put_u16; u32, u32, put_u32; u64, u64, put_u64; }

impl WireField for ShortString {
    fn detach(&self) -> Self {
        ShortString(Bytes::copy_from_slice(&self.0))
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        ShortString::decode(r)
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<(), CodecError> {
        self.encode(w.plain());
        Ok(())
    }
}

impl WireField for LongString {
    fn detach(&self) -> Self {
        LongString(Bytes::copy_from_slice(&self.0))
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        LongString::decode(r)
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<(), CodecError> {
        self.encode(w.plain())
    }
}

impl WireField for FieldTable {
    fn detach(&self) -> Self {
        if let Some(raw) = &self.raw {
            // Entries decoded so far point into the frame; the copied bytes stand for them.
            return FieldTable {
                raw: Some(Bytes::copy_from_slice(raw)),
                entries: OnceLock::new(),
            };
        }
        FieldTable::from_entries(
            self.entries()
                .iter()
                .map(|(k, v)| (k.detach(), v.detach()))
                .collect(),
        )
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        FieldTable::read_checked(r)
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<(), CodecError> {
        self.encode_at(w.plain(), 0)
    }
}

impl WireField for SecretBytes {
    fn detach(&self) -> Self {
        SecretBytes(self.0.detach())
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        LongString::decode(r).map(SecretBytes)
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<(), CodecError> {
        self.0.encode(w.plain())
    }
}

/// `Display` for the id newtypes: the bare number, as logs and the management UI show them.
macro_rules! display_as_number {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
display_as_number!(crate::ChannelId, crate::DeliveryTag, crate::RequestId);

#[cfg(test)]
mod conversion_tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn common_rust_types_convert_to_the_field_value_rabbitmq_expects() {
        let bytes = vec![1u8, 2, 3];
        assert_eq!(
            FieldValue::from(bytes.as_slice()),
            FieldValue::ByteArray(Bytes::from_static(&[1, 2, 3]))
        );
        assert_eq!(FieldValue::from(bytes.clone()).tag(), b'x');
        assert_eq!(FieldValue::from(Bytes::from(bytes)).tag(), b'x');
        assert_eq!(FieldValue::from(b"ab").tag(), b'x');
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
        assert_eq!(FieldValue::from(t), FieldValue::Timestamp(1_700_000_000));
        assert_eq!(
            FieldValue::from(UNIX_EPOCH - Duration::from_secs(1)),
            FieldValue::Timestamp(0)
        );
        assert_eq!(FieldValue::from(()), FieldValue::Void);
        assert_eq!(FieldValue::from(None::<i32>), FieldValue::Void);
        assert_eq!(FieldValue::from(Some(7i32)), FieldValue::I32(7));
        assert_eq!(FieldValue::from(&String::from("s")).tag(), b'S');
    }

    #[test]
    fn decimals_are_signed_on_the_wire() {
        let d = Decimal::new(-314, 2);
        let mut out = BytesMut::new();
        FieldValue::from(d).encode(&mut out, 0).unwrap();
        assert_eq!(&out[..], &[b'D', 2, 0xff, 0xff, 0xfe, 0xc6]);
        let out = out.freeze();
        let mut r = Reader::new(&out);
        assert_eq!(
            FieldValue::decode(&mut r, 0).unwrap(),
            FieldValue::Decimal(d)
        );
        assert_eq!(d.to_string(), "-3.14");
        assert_eq!(Decimal::new(i32::MIN, 0).to_string(), "-2147483648");
        assert_eq!(Decimal::new(-5, 1).to_string(), "-0.5");
        assert_eq!(Decimal::new(42, 0).to_string(), "42");
    }

    #[test]
    fn insert_and_with_share_one_rule() {
        let mut t = FieldTable::new();
        t.insert("a", 1u8).insert("a", 2u8);
        assert_eq!(t, FieldTable::new().with("a", 2u8));
        let long = "k".repeat(256);
        assert!(t.try_insert(long.as_str(), 1u8).is_err());
        assert!(FieldTable::new().try_with(long, 1u8).is_err());
        let panicked = std::panic::catch_unwind(|| FieldTable::new().with(&"k".repeat(256), 1u8));
        assert!(panicked.is_err());
    }

    #[test]
    fn ids_display_as_their_number() {
        assert_eq!(crate::DeliveryTag(42).to_string(), "42");
        assert_eq!(crate::ChannelId(7).to_string(), "7");
        assert_eq!(crate::RequestId(9).to_string(), "9");
    }
}

#[cfg(test)]
mod lazy_table_tests {
    use super::*;
    use proptest::prelude::*;

    /// A table using every tag, nested tables and arrays included, as the wire carries it.
    fn sample() -> Vec<u8> {
        let inner = FieldTable::new()
            .with(
                "n",
                FieldValue::from(vec![FieldValue::I16(-2), FieldValue::Void]),
            )
            .with("d", Decimal::new(-314, 2));
        let t = FieldTable::new()
            .with("t", true)
            .with("b", -1i8)
            .with("B", 2u8)
            .with("u", 3u16)
            .with("I", -4i32)
            .with("i", 5u32)
            .with("l", -6i64)
            .with("f", 1.5f32)
            .with("d", 2.5f64)
            .with("S", "long")
            .with("x", &[1u8, 2][..])
            .with("T", FieldValue::Timestamp(7))
            .with("F", inner)
            .with("L", FieldValue::I64L(8));
        let mut out = BytesMut::new();
        t.encode(&mut out).unwrap();
        out.to_vec()
    }

    /// The check at frame decoding and the decoding on first read accept the same tables,
    /// refuse the others with the same error, and decode the same entries.
    fn check_agrees_with_decode(bytes: Vec<u8>) {
        let bytes = Bytes::from(bytes);
        let checked = FieldTable::read_checked(&mut Reader::new(&bytes));
        let eager = FieldTable::decode_at(&mut Reader::new(&bytes), 0);
        match (checked, eager) {
            (Ok(lazy), Ok(eager)) => {
                assert_eq!(lazy.entries(), eager.entries());
                let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
                lazy.encode(&mut a).unwrap();
                eager.encode(&mut b).unwrap();
                // The received bytes are written back unchanged. Eager decoding normalises
                // what it reads (a key that is not UTF-8, a boolean octet other than 0 or 1),
                // so its encoding may differ in bytes, never in entries.
                assert_eq!(&a[..], &bytes[..a.len()]);
                let again = |x: BytesMut| FieldTable::decode(&x.freeze()).unwrap();
                assert_eq!(again(a).entries(), again(b).entries());
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("check {a:?} but decode {b:?}"),
        }
    }

    #[test]
    fn every_truncation_of_a_table_is_judged_alike() {
        let full = sample();
        for n in 0..=full.len() {
            check_agrees_with_decode(full[..n].to_vec());
        }
    }

    proptest! {
        #[test]
        fn check_and_decode_agree_on_damaged_tables(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let mut bytes = sample();
            for (at, value) in edits {
                let i = at % bytes.len();
                bytes[i] = value;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            check_agrees_with_decode(bytes);
        }

        #[test]
        fn check_and_decode_agree_on_arbitrary_bytes(
            body in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
            bytes.extend(body);
            check_agrees_with_decode(bytes);
        }
    }

    #[test]
    fn a_received_table_reads_and_changes_like_a_built_one() {
        let wire = Bytes::from(sample());
        let mut t = FieldTable::decode(&wire).unwrap();
        assert_eq!(t.get("S").and_then(FieldValue::as_str), Some("long"));
        assert_eq!(t.len(), 14);
        t.insert("S", "changed");
        let mut out = BytesMut::new();
        t.encode(&mut out).unwrap();
        let back = FieldTable::decode(&out.freeze()).unwrap();
        assert_eq!(back.get("S").and_then(FieldValue::as_str), Some("changed"));
        assert_eq!(back.len(), 14);
        assert_eq!(
            t.remove("S")
                .and_then(|v| v.as_str().map(str::to_owned))
                .as_deref(),
            Some("changed")
        );
        assert_eq!(t.len(), 13);
    }
}
