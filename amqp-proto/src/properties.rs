//! The content header: body size and the 14 basic properties with their flag bits.

use bytes::{BufMut, BytesMut};

use crate::error::CodecError;
use crate::types::{FieldTable, ShortString, WireField};
use crate::wire::{Reader, Writer};

/// The only content class in AMQP 0-9-1.
pub const BASIC_CLASS_ID: u16 = 60;

macro_rules! properties {
    ($($(#[doc = $doc:literal])* $field:ident, $with:ident : $ty:ty = $bit:literal;)*) => {
        /// The basic class's content properties; each is optional and flagged when present.
        ///
        /// ```
        /// use amqp_proto::{BasicProperties, FieldTable};
        /// let props = BasicProperties::default()
        ///     .with_content_type("application/json")
        ///     .with_delivery_mode(2)
        ///     .with_headers(FieldTable::new().with("attempt", 1i32));
        /// assert_eq!(props.content_type.as_deref(), Some("application/json"));
        /// ```
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct BasicProperties {
            $($(#[doc = $doc])* pub $field: Option<$ty>,)*
        }

        impl BasicProperties {
            $(
                #[doc = concat!("Sets `", stringify!($field), "`.")]
                ///
                /// # Panics
                /// For a string property, if it is longer than 255 bytes; use the field
                /// directly with `ShortString::try_from` to handle that as an error.
                #[must_use]
                pub fn $with(mut self, value: impl IntoProperty<$ty>) -> Self {
                    self.$field = Some(value.into_property());
                    self
                }
            )*

            /// A copy that shares no buffer with the frame it was decoded from, so keeping
            /// it does not keep that frame's read buffer alive.
            pub fn detach(&self) -> Self {
                BasicProperties {
                    $($field: self.$field.as_ref().map(WireField::detach),)*
                }
            }

            /// The property-flags word: one bit per present property, highest bit first.
            pub fn flags(&self) -> u16 {
                let mut flags = 0;
                $(if self.$field.is_some() { flags |= 1 << $bit; })*
                flags
            }

            /// Reads the flags and the properties they announce into `self`, which must be
            /// all `None` (decoding in place spares copying this large struct around).
            pub(crate) fn read_into(&mut self, r: &mut Reader<'_>) -> Result<(), CodecError> {
                let flags = r.u16("property flags")?;
                // Bit 0 would announce a second flags word; no 0-9-1 class has one, and bit 1 is
                // unassigned.
                if flags & 0b11 != 0 {
                    return Err(CodecError::BadPropertyFlags(flags));
                }
                $(if flags & (1 << $bit) != 0 {
                    self.$field = Some(<$ty as WireField>::read(r)?);
                })*
                Ok(())
            }

            /// Appends the properties that are present, in flag order, and returns the
            /// flags word announcing them (the caller writes it before them, see
            /// [`ContentHeader::encode_parts`]): one pass over the fields instead of one to
            /// compute the flags and one to write them.
            fn encode_fields(&self, out: &mut BytesMut) -> Result<u16, CodecError> {
                let mut w = Writer::new(out);
                let mut flags = 0;
                $(if let Some(v) = &self.$field {
                    flags |= 1 << $bit;
                    v.write(&mut w)?;
                })*
                Ok(flags)
            }
        }
    };
}

properties! {
    /// MIME type of the body, e.g. `application/json`.
    content_type, with_content_type: ShortString = 15;
    /// MIME content encoding, e.g. `gzip`.
    content_encoding, with_content_encoding: ShortString = 14;
    /// Application headers; also read by headers exchanges.
    headers, with_headers: FieldTable = 13;
    /// 1 transient, 2 persistent.
    delivery_mode, with_delivery_mode: u8 = 12;
    /// 0 to 9.
    priority, with_priority: u8 = 11;
    /// Correlates an RPC reply with its request.
    correlation_id, with_correlation_id: ShortString = 10;
    /// Queue to reply to, e.g. `amq.rabbitmq.reply-to`.
    reply_to, with_reply_to: ShortString = 9;
    /// Per-message TTL in milliseconds, as a decimal string.
    expiration, with_expiration: ShortString = 8;
    /// Application message id.
    message_id, with_message_id: ShortString = 7;
    /// Seconds since the Unix epoch.
    timestamp, with_timestamp: u64 = 6;
    /// Application message type name.
    kind, with_kind: ShortString = 5;
    /// Must equal the connection's user when set (RabbitMQ validates it).
    user_id, with_user_id: ShortString = 4;
    /// Publishing application.
    app_id, with_app_id: ShortString = 3;
    /// Reserved by the spec; RabbitMQ passes it through.
    cluster_id, with_cluster_id: ShortString = 2;
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
    /// Decodes a content header payload into `self`, which must be the default (decoding in
    /// place spares copying this large struct around).
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
        // appended at once rather than field by field; the flags are patched in once the
        // fields are written.
        let [c0, c1] = class_id.to_be_bytes();
        let [s0, s1, s2, s3, s4, s5, s6, s7] = body_size.to_be_bytes();
        let flags_at = out.len() + 12;
        out.put_slice(&[c0, c1, 0, 0, s0, s1, s2, s3, s4, s5, s6, s7, 0, 0]);
        let flags = properties.encode_fields(out)?;
        if let Some(slot) = out.get_mut(flags_at..flags_at + 2) {
            slot.copy_from_slice(&flags.to_be_bytes());
        }
        Ok(())
    }
}
