//! The content header: body size and the 14 basic properties with their flag bits.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::CodecError;
use crate::types::{FieldTable, ShortString, WireField, check_table};
use crate::wire::{Reader, Writer};

/// The only content class in AMQP 0-9-1.
pub const BASIC_CLASS_ID: u16 = 60;

macro_rules! properties {
    ($($(#[doc = $doc:literal])* $field:ident, $with:ident, $set:ident : $ty:ty => $out:ty = $bit:literal;)*) => {
        /// The basic class's content properties; each is optional and flagged when present.
        ///
        /// Kept in wire form: the flags word and the encoded property list, as received (one
        /// shared reference to the frame) or as the setters built it. Encoding copies the list;
        /// the getters read a property from it when asked. Equality compares the encoded form.
        ///
        /// ```
        /// use amqp_proto::{BasicProperties, FieldTable};
        /// let props = BasicProperties::default()
        ///     .with_content_type("application/json")
        ///     .with_delivery_mode(2)
        ///     .with_headers(FieldTable::new().with("attempt", 1i32));
        /// assert_eq!(props.content_type(), Some("application/json"));
        /// assert_eq!(props.delivery_mode(), Some(2));
        /// assert_eq!(props.headers().unwrap().get("attempt").and_then(|v| v.as_i64()), Some(1));
        /// assert_eq!(props.priority(), None);
        /// ```
        #[derive(Clone, PartialEq, Default)]
        pub struct BasicProperties {
            /// One bit per present property, highest bit first (bits 0 and 1 always clear).
            flags: u16,
            /// The present properties in flag order, each checked as decoding checks it, short
            /// strings UTF-8.
            wire: Bytes,
        }

        impl BasicProperties {
            $(
                $(#[doc = $doc])*
                #[doc = ""]
                #[doc = concat!("`None` when `", stringify!($field), "` is not set.")]
                pub fn $field(&self) -> Option<$out> {
                    if self.flags & (1 << $bit) == 0 {
                        return None;
                    }
                    Some(<$ty as Property>::value(&self.wire, self.offset($bit)))
                }

                #[doc = concat!("Sets `", stringify!($field), "`.")]
                ///
                /// # Panics
                /// For a string property, if it is longer than 255 bytes, and for headers, if
                /// the table cannot be encoded (nested too deep).
                #[doc = concat!("[`", stringify!($set), "`](Self::", stringify!($set), ")")]
                /// returns that as an error instead.
                #[must_use]
                pub fn $with(mut self, value: impl IntoProperty<$ty>) -> Self {
                    #[allow(clippy::expect_used)]
                    self.$set(Some(value.into_property()))
                        .expect("property cannot be encoded");
                    self
                }

                #[doc = concat!("Sets `", stringify!($field), "`, or clears it with `None`.")]
                ///
                /// Fails, leaving the properties as they were, if the value cannot be encoded.
                pub fn $set(&mut self, value: Option<$ty>) -> Result<&mut Self, CodecError> {
                    self.splice::<$ty>($bit, value.as_ref())?;
                    Ok(self)
                }
            )*

            /// Where the property of flag bit `bit` starts (or would start) in the list: after
            /// every present property of a higher bit.
            fn offset(&self, bit: u16) -> usize {
                let mut at = 0;
                $(if $bit > bit && self.flags & (1 << $bit) != 0 {
                    at += <$ty as Property>::size(self.wire.get(at..).unwrap_or_default());
                })*
                at
            }

            /// The size of the present property of flag bit `bit` at the start of `list`.
            fn size_of(bit: u16, list: &[u8]) -> usize {
                match bit {
                    $($bit => <$ty as Property>::size(list),)*
                    _ => 0,
                }
            }

            /// Reads the flags and the properties they announce into `self`, checking them with
            /// the same limits and errors as decoding each would, and keeps the list as a slice
            /// of the frame: one reference, where decoding each kept one per string and table.
            /// Short strings that are not UTF-8 are made so (as [`ShortString`] does), which
            /// re-encodes the list.
            pub(crate) fn read_into(&mut self, r: &mut Reader<'_>) -> Result<(), CodecError> {
                let flags = r.u16("property flags")?;
                // Bit 0 would announce a second flags word; no 0-9-1 class has one, and bit 1 is
                // unassigned.
                if flags & 0b11 != 0 {
                    return Err(CodecError::BadPropertyFlags(flags));
                }
                let start = r.position();
                let mut utf8 = true;
                $(if flags & (1 << $bit) != 0 {
                    utf8 &= <$ty as Property>::check(r)?;
                })*
                self.flags = flags;
                self.wire = r.bytes_since(start);
                if !utf8 {
                    self.reencode()?;
                }
                Ok(())
            }

            /// Reads the flags and each property they announce on its own, as decoding did
            /// before the list was kept whole: its error, or whether `self` holds the same.
            #[cfg(test)]
            fn matches_each(&self, r: &mut Reader<'_>) -> Result<bool, CodecError> {
                let flags = r.u16("property flags")?;
                if flags & 0b11 != 0 {
                    return Err(CodecError::BadPropertyFlags(flags));
                }
                let mut same = flags == self.flags;
                $(if flags & (1 << $bit) != 0 {
                    let v = <$ty as WireField>::read(r)?;
                    same &= self.$field().is_some_and(|got| v == got);
                })*
                Ok(same)
            }

            /// Decodes every property (short strings made UTF-8) and encodes them again.
            fn reencode(&mut self) -> Result<(), CodecError> {
                let mut r = Reader::new(&self.wire);
                let mut out = BytesMut::with_capacity(self.wire.len());
                let mut w = Writer::new(&mut out);
                $(if self.flags & (1 << $bit) != 0 {
                    <$ty as WireField>::read(&mut r)?.write(&mut w)?;
                })*
                self.wire = out.freeze();
                Ok(())
            }
        }

        impl fmt::Debug for BasicProperties {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut d = f.debug_struct("BasicProperties");
                $(if let Some(v) = self.$field() {
                    d.field(stringify!($field), &v);
                })*
                d.finish()
            }
        }
    };
}

properties! {
    /// MIME type of the body, e.g. `application/json`.
    content_type, with_content_type, set_content_type: ShortString => &str = 15;
    /// MIME content encoding, e.g. `gzip`.
    content_encoding, with_content_encoding, set_content_encoding: ShortString => &str = 14;
    /// Application headers; also read by headers exchanges.
    headers, with_headers, set_headers: FieldTable => FieldTable = 13;
    /// 1 transient, 2 persistent.
    delivery_mode, with_delivery_mode, set_delivery_mode: u8 => u8 = 12;
    /// 0 to 9.
    priority, with_priority, set_priority: u8 => u8 = 11;
    /// Correlates an RPC reply with its request.
    correlation_id, with_correlation_id, set_correlation_id: ShortString => &str = 10;
    /// Queue to reply to, e.g. `amq.rabbitmq.reply-to`.
    reply_to, with_reply_to, set_reply_to: ShortString => &str = 9;
    /// Per-message TTL in milliseconds, as a decimal string.
    expiration, with_expiration, set_expiration: ShortString => &str = 8;
    /// Application message id.
    message_id, with_message_id, set_message_id: ShortString => &str = 7;
    /// Seconds since the Unix epoch.
    timestamp, with_timestamp, set_timestamp: u64 => u64 = 6;
    /// Application message type name.
    kind, with_kind, set_kind: ShortString => &str = 5;
    /// Must equal the connection's user when set (RabbitMQ validates it).
    user_id, with_user_id, set_user_id: ShortString => &str = 4;
    /// Publishing application.
    app_id, with_app_id, set_app_id: ShortString => &str = 3;
    /// Reserved by the spec; RabbitMQ passes it through.
    cluster_id, with_cluster_id, set_cluster_id: ShortString => &str = 2;
}

impl BasicProperties {
    /// The property-flags word: one bit per present property, highest bit first.
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// A copy that shares no buffer with the frame it was decoded from, so keeping
    /// it does not keep that frame's read buffer alive.
    pub fn detach(&self) -> Self {
        BasicProperties {
            flags: self.flags,
            wire: if self.wire.is_empty() {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(&self.wire)
            },
        }
    }

    /// Replaces (or removes, or adds) the property of flag bit `bit` with `value`, building
    /// a new list: the bytes before it, the value, the bytes after it.
    fn splice<T: Property>(&mut self, bit: u16, value: Option<&T>) -> Result<(), CodecError> {
        let at = self.offset(bit);
        let rest = self.wire.get(at..).unwrap_or_default();
        let old = if self.flags & (1 << bit) != 0 {
            Self::size_of(bit, rest)
        } else {
            0
        };
        let mut out = BytesMut::with_capacity(self.wire.len() + 32);
        out.put_slice(self.wire.get(..at).unwrap_or_default());
        if let Some(v) = value {
            v.write(&mut Writer::new(&mut out))?;
        }
        out.put_slice(rest.get(old..).unwrap_or_default());
        self.wire = out.freeze();
        match value {
            Some(_) => self.flags |= 1 << bit,
            None => self.flags &= !(1 << bit),
        }
        Ok(())
    }
}

/// How a property's type lies in the checked property list of a [`BasicProperties`].
pub(crate) trait Property: WireField {
    /// What its getter returns: borrowed from the list where that is possible.
    type Value<'a>;
    /// Checks the value at `r` as decoding it would, with the same errors, and steps over it.
    /// `Ok(false)` for a short string that is not UTF-8 (decoding would change it).
    fn check(r: &mut Reader<'_>) -> Result<bool, CodecError>;
    /// The size of the checked value `list` starts with.
    fn size(list: &[u8]) -> usize;
    /// The checked value at `wire[at..]`.
    fn value(wire: &Bytes, at: usize) -> Self::Value<'_>;
}

impl Property for ShortString {
    type Value<'a> = &'a str;
    fn check(r: &mut Reader<'_>) -> Result<bool, CodecError> {
        let len = r.u8("short string length")?;
        let s = r.take(len as usize, "short string")?;
        Ok(s.is_ascii() || std::str::from_utf8(s).is_ok())
    }
    fn size(list: &[u8]) -> usize {
        1 + list.first().map_or(0, |&n| usize::from(n))
    }
    fn value(wire: &Bytes, at: usize) -> &str {
        let len = wire.get(at).map_or(0, |&n| usize::from(n));
        let s = wire.get(at + 1..at + 1 + len).unwrap_or_default();
        // Invariant: the list's short strings are UTF-8 (checked or made so when built).
        std::str::from_utf8(s).unwrap_or_default()
    }
}

impl Property for u8 {
    type Value<'a> = u8;
    fn check(r: &mut Reader<'_>) -> Result<bool, CodecError> {
        r.u8("u8").map(|_| true)
    }
    fn size(_: &[u8]) -> usize {
        1
    }
    fn value(wire: &Bytes, at: usize) -> u8 {
        wire.get(at).copied().unwrap_or_default()
    }
}

impl Property for u64 {
    type Value<'a> = u64;
    fn check(r: &mut Reader<'_>) -> Result<bool, CodecError> {
        r.u64("u64").map(|_| true)
    }
    fn size(_: &[u8]) -> usize {
        8
    }
    fn value(wire: &Bytes, at: usize) -> u64 {
        let mut b = [0; 8];
        if let Some(s) = wire.get(at..at + 8) {
            b.copy_from_slice(s);
        }
        u64::from_be_bytes(b)
    }
}

impl Property for FieldTable {
    /// A table sharing the list's bytes, whose entries are decoded when first read.
    type Value<'a> = FieldTable;
    fn check(r: &mut Reader<'_>) -> Result<bool, CodecError> {
        check_table(r).map(|()| true)
    }
    fn size(list: &[u8]) -> usize {
        4 + table_len(list)
    }
    fn value(wire: &Bytes, at: usize) -> FieldTable {
        let len = table_len(wire.get(at..).unwrap_or_default());
        let end = (at + 4 + len).min(wire.len());
        FieldTable::from_checked(wire.slice((at + 4).min(end)..end))
    }
}

/// The length prefix of the table `list` starts with.
fn table_len(list: &[u8]) -> usize {
    match list {
        &[a, b, c, d, ..] => u32::from_be_bytes([a, b, c, d]) as usize,
        _ => 0,
    }
}

/// Conversion used by the `with_*` setters of [`BasicProperties`].
pub trait IntoProperty<T> {
    /// Converts the value.
    fn into_property(self) -> T;
}

impl<T> IntoProperty<T> for T {
    fn into_property(self) -> T {
        self
    }
}

impl IntoProperty<ShortString> for &str {
    fn into_property(self) -> ShortString {
        #[allow(clippy::expect_used)]
        ShortString::try_from(self).expect("property longer than 255 bytes")
    }
}

impl IntoProperty<ShortString> for String {
    fn into_property(self) -> ShortString {
        #[allow(clippy::expect_used)]
        ShortString::try_from(self).expect("property longer than 255 bytes")
    }
}

/// A content header frame's payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContentHeader {
    /// Class of the method the content belongs to (always 60, basic, in 0-9-1).
    pub class_id: u16,
    /// Total size of the body frames that follow.
    pub body_size: u64,
    /// The message properties.
    pub properties: BasicProperties,
}

impl ContentHeader {
    /// Decodes a content header payload into `self`, which must be the default.
    pub(crate) fn read_into(&mut self, r: &mut Reader<'_>) -> Result<(), CodecError> {
        let class_id = r.u16("content class")?;
        if class_id != BASIC_CLASS_ID {
            return Err(CodecError::UnknownContentClass(class_id));
        }
        let _weight = r.u16("content weight")?;
        self.class_id = class_id;
        self.body_size = r.u64("body size")?;
        self.properties.read_into(r)?;
        r.finish("content header")
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), CodecError> {
        Self::encode_parts(self.class_id, self.body_size, &self.properties, out)
    }

    /// Encodes a content header payload from its parts, so that senders need not build (and
    /// clone properties into) a `ContentHeader`.
    pub(crate) fn encode_parts(
        class_id: u16,
        body_size: u64,
        properties: &BasicProperties,
        out: &mut BytesMut,
    ) -> Result<(), CodecError> {
        // Class, weight (always 0), body size and property flags: one fixed 14-byte run,
        // appended at once rather than field by field; then the property list as it is.
        let [c0, c1] = class_id.to_be_bytes();
        let [s0, s1, s2, s3, s4, s5, s6, s7] = body_size.to_be_bytes();
        let [f0, f1] = properties.flags.to_be_bytes();
        out.put_slice(&[c0, c1, 0, 0, s0, s1, s2, s3, s4, s5, s6, s7, f0, f1]);
        out.put_slice(&properties.wire);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::types::FieldValue;

    fn full() -> BasicProperties {
        BasicProperties::default()
            .with_content_type("application/json")
            .with_content_encoding("gzip")
            .with_headers(
                FieldTable::new()
                    .with("a", 1i32)
                    .with("t", FieldTable::new().with("b", "two")),
            )
            .with_delivery_mode(2)
            .with_priority(9)
            .with_correlation_id("corr")
            .with_reply_to("amq.rabbitmq.reply-to")
            .with_expiration("60000")
            .with_message_id("id-1")
            .with_timestamp(1_700_000_000)
            .with_kind("type")
            .with_user_id("guest")
            .with_app_id("app")
            .with_cluster_id("cluster")
    }

    /// The flags word and the list, as a content header carries them after the body size.
    fn wire(p: &BasicProperties) -> Vec<u8> {
        let mut out = p.flags().to_be_bytes().to_vec();
        out.extend_from_slice(&p.wire);
        out
    }

    /// Decodes `bytes` both ways (whole list, property by property) and checks that they
    /// agree: the same error, or the same values.
    fn check_agrees_with_each(bytes: Vec<u8>) {
        let bytes = Bytes::from(bytes);
        let mut p = BasicProperties::default();
        let mut r = Reader::new(&bytes);
        let whole = p
            .read_into(&mut r)
            .and_then(|()| r.finish("content header"));
        let mut r = Reader::new(&bytes);
        let each = p
            .matches_each(&mut r)
            .and_then(|same| r.finish("content header").map(|()| same));
        match (whole, each) {
            (Ok(()), Ok(same)) => assert!(same, "{p:?} from {bytes:?}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("whole list {a:?} but property by property {b:?}"),
        }
    }

    #[test]
    fn getters_read_what_the_setters_wrote() {
        let p = full();
        assert_eq!(p.flags(), 0xfffc);
        assert_eq!(p.content_type(), Some("application/json"));
        assert_eq!(p.content_encoding(), Some("gzip"));
        let h = p.headers().unwrap();
        assert_eq!(h.get("a").and_then(FieldValue::as_i64), Some(1));
        assert_eq!(p.delivery_mode(), Some(2));
        assert_eq!(p.priority(), Some(9));
        assert_eq!(p.reply_to(), Some("amq.rabbitmq.reply-to"));
        assert_eq!(p.timestamp(), Some(1_700_000_000));
        assert_eq!(p.cluster_id(), Some("cluster"));
        let empty = BasicProperties::default();
        assert_eq!(
            (empty.flags(), empty.content_type(), empty.headers()),
            (0, None, None)
        );
    }

    #[test]
    fn setters_give_the_same_list_in_any_order_and_replace_in_place() {
        let backwards = BasicProperties::default()
            .with_cluster_id("cluster")
            .with_app_id("app")
            .with_user_id("guest")
            .with_kind("type")
            .with_timestamp(1_700_000_000)
            .with_message_id("id-1")
            .with_expiration("60000")
            .with_reply_to("amq.rabbitmq.reply-to")
            .with_correlation_id("corr")
            .with_priority(9)
            .with_delivery_mode(2)
            .with_headers(full().headers().unwrap())
            .with_content_encoding("gzip")
            .with_content_type("application/json");
        assert_eq!(backwards, full());
        let mut p = full().with_priority(1).with_reply_to("r");
        assert_eq!((p.priority(), p.reply_to()), (Some(1), Some("r")));
        assert_eq!(p.correlation_id(), Some("corr"));
        p.set_priority(None).unwrap().set_reply_to(None).unwrap();
        assert_eq!(
            (p.priority(), p.reply_to(), p.flags()),
            (None, None, 0xf5fc)
        );
        assert_eq!(p.expiration(), Some("60000"));
    }

    #[test]
    fn a_table_too_deep_to_encode_is_an_error_and_changes_nothing() {
        let mut deep = FieldTable::new().with("x", 1u8);
        for _ in 0..crate::types::MAX_TABLE_DEPTH {
            deep = FieldTable::new().with("x", deep);
        }
        let mut p = full();
        let err = p.set_headers(Some(deep)).unwrap_err();
        assert!(matches!(err, CodecError::NestingTooDeep(_)), "{err:?}");
        assert_eq!(p, full());
    }

    #[test]
    fn decoding_keeps_the_list_and_detach_copies_it() {
        let bytes = Bytes::from(wire(&full()));
        let mut p = BasicProperties::default();
        p.read_into(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(p, full());
        assert_eq!(p.wire.as_ptr(), bytes[2..].as_ptr(), "a slice of the frame");
        let d = p.detach();
        assert_eq!(d, p);
        assert_ne!(d.wire.as_ptr(), p.wire.as_ptr());
        let shown = format!("{p:?}");
        assert!(shown.starts_with("BasicProperties { content_type: \"application/json\""));
        assert!(shown.contains("cluster_id: \"cluster\" }"), "{shown}");
    }

    #[test]
    fn short_strings_that_are_not_utf8_are_made_so() {
        // content_type "a\xff", delivery_mode 1.
        let bytes = Bytes::from_static(&[0x90, 0x00, 2, b'a', 0xff, 1]);
        let mut p = BasicProperties::default();
        p.read_into(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(p.content_type(), Some("a\u{fffd}"));
        assert_eq!(p.delivery_mode(), Some(1));
        check_agrees_with_each(bytes.to_vec());
    }

    #[test]
    fn damaged_lists_are_typed_errors() {
        let mut p = BasicProperties::default();
        let mut read = |b: &'static [u8]| p.read_into(&mut Reader::new(&Bytes::from_static(b)));
        assert!(matches!(
            read(&[0x00, 0x01]),
            Err(CodecError::BadPropertyFlags(1))
        ));
        assert!(matches!(
            read(&[0x80, 0x00, 5, b'a']),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            read(&[0x20, 0x00, 0, 0, 0, 3, 1, b'k', b'?']),
            Err(CodecError::UnknownFieldTag(b'?'))
        ));
    }

    proptest! {
        #[test]
        fn whole_and_each_agree_on_damaged_lists(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let mut bytes = wire(&full());
            for (at, value) in edits {
                let i = at % bytes.len();
                bytes[i] = value;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            check_agrees_with_each(bytes);
        }

        #[test]
        fn whole_and_each_agree_on_arbitrary_lists(
            flags in any::<u16>(),
            list in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let mut bytes = (flags & !0b11).to_be_bytes().to_vec();
            bytes.extend(list);
            check_agrees_with_each(bytes);
        }
    }
}
