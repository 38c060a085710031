//! Errors of the wire codec, and the reply codes AMQP assigns to them.

use std::fmt;

/// An AMQP reply code, as carried by `connection.close` and `channel.close`.
///
/// ```
/// use amqp_proto::ReplyCode;
/// assert!(ReplyCode::NOT_FOUND.is_soft());
/// assert!(!ReplyCode::FRAME_ERROR.is_soft());
/// assert_eq!(ReplyCode::PRECONDITION_FAILED.name(), Some("PRECONDITION_FAILED"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyCode(pub u16);

/// The reply-code table: each row gives the spec's name, the code, whether it is soft, and the
/// [`ErrorKind`] it maps to, so the constants, their names, softness and the kinds are all
/// derived from one line per code.
macro_rules! reply_codes {
    ($($name:ident = $code:literal, $soft:literal, $kind:ident;)*) => {
        impl ReplyCode {
            $(#[allow(missing_docs)] pub const $name: ReplyCode = ReplyCode($code);)*

            /// The spec's name for this code, if it has one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 { $($code => Some(stringify!($name)),)* _ => None }
            }

            /// Soft errors close only the channel; hard ones (and unknown codes) the connection.
            pub fn is_soft(self) -> bool {
                match self.0 { $($code => $soft,)* _ => false }
            }
        }

        /// A named kind for every way things fail, derived from reply codes where there is
        /// one.
        ///
        /// ```
        /// use amqp_proto::{ErrorKind, ReplyCode};
        /// assert_eq!(ErrorKind::from_reply_code(ReplyCode(404)), ErrorKind::NotFound);
        /// assert_eq!(ErrorKind::NotFound.reply_code(), Some(ReplyCode::NOT_FOUND));
        /// assert_eq!(ErrorKind::from_reply_code(ReplyCode(999)), ErrorKind::Other);
        /// ```
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorKind {
            $(
                #[doc = concat!("Reply code ", stringify!($code), " (`", stringify!($name), "`).")]
                $kind,
            )*
            /// A reply code the spec does not name.
            Other,
            /// Login refused.
            Authentication,
            /// No inbound traffic for two heartbeat intervals.
            HeartbeatTimeout,
            /// The handshake did not finish in time.
            Timeout,
            /// The transport failed or reached end of stream.
            ConnectionBroken,
            /// The call is not valid in the current state or with these arguments.
            Usage,
            /// A publish would exceed a limit; retry after the matching event.
            WouldBlock,
            /// The TLS handshake failed: the broker's certificate was rejected (unknown issuer,
            /// wrong host name, expired), the broker rejected ours, or the port does not speak
            /// TLS. Only runtime adapters report it; the core never sees TLS.
            Tls,
        }

        impl ErrorKind {
            /// The kind for a reply code.
            pub fn from_reply_code(code: ReplyCode) -> ErrorKind {
                match code.0 { $($code => ErrorKind::$kind,)* _ => ErrorKind::Other }
            }

            /// The reply code this kind stands for, if it stands for one.
            pub fn reply_code(self) -> Option<ReplyCode> {
                match self { $(ErrorKind::$kind => Some(ReplyCode::$name),)* _ => None }
            }
        }
    };
}

reply_codes! {
    REPLY_SUCCESS = 200, false, Success;
    CONTENT_TOO_LARGE = 311, true, ContentTooLarge;
    NO_ROUTE = 312, true, NoRoute;
    NO_CONSUMERS = 313, true, NoConsumers;
    CONNECTION_FORCED = 320, false, ConnectionForced;
    INVALID_PATH = 402, false, InvalidPath;
    ACCESS_REFUSED = 403, true, AccessRefused;
    NOT_FOUND = 404, true, NotFound;
    RESOURCE_LOCKED = 405, true, ResourceLocked;
    PRECONDITION_FAILED = 406, true, PreconditionFailed;
    FRAME_ERROR = 501, false, FrameError;
    SYNTAX_ERROR = 502, false, SyntaxError;
    COMMAND_INVALID = 503, false, CommandInvalid;
    CHANNEL_ERROR = 504, false, ChannelError;
    UNEXPECTED_FRAME = 505, false, UnexpectedFrame;
    RESOURCE_ERROR = 506, false, ResourceError;
    NOT_ALLOWED = 530, false, NotAllowed;
    NOT_IMPLEMENTED = 540, false, NotImplemented;
    INTERNAL_ERROR = 541, false, InternalError;
}

impl fmt::Debug for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{}({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What was wrong with bytes being decoded, or with a value being encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The frame header announced a size above the negotiated (or pre-tune) frame_max.
    #[error("frame of {size} bytes exceeds frame_max {max}")]
    FrameTooLarge {
        /// Whole frame size: 7-byte header, payload and end octet.
        size: u64,
        /// The limit in force.
        max: u32,
    },
    /// The octet after the payload was not 0xCE.
    #[error("frame end octet is {0:#04x}, expected 0xce")]
    BadFrameEnd(u8),
    /// The frame type octet is none of method, header, body, heartbeat.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// A heartbeat frame arrived on a channel other than 0, or carried a payload.
    #[error("malformed heartbeat frame (channel {channel}, {size} payload bytes)")]
    BadHeartbeat {
        /// Channel it arrived on.
        channel: u16,
        /// Its payload size.
        size: u32,
    },
    /// The payload ended before a field was complete.
    #[error("payload truncated while reading {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// The payload had bytes left over after its last field.
    #[error("{extra} unexpected bytes after {what}")]
    TrailingBytes {
        /// What was decoded.
        what: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// A method frame named a class and method that do not exist.
    #[error("unknown method {class_id}.{method_id}")]
    UnknownMethod {
        /// Class id.
        class_id: u16,
        /// Method id.
        method_id: u16,
    },
    /// A content header named a class that carries no content.
    #[error("content header for class {0}, which has no content")]
    UnknownContentClass(u16),
    /// A content header set the property-flags continuation bit, which no class uses.
    #[error("property flags {0:#06x} use reserved bits")]
    BadPropertyFlags(u16),
    /// A field table or array value had a type tag RabbitMQ does not define.
    #[error("unknown field value tag {0:#04x}")]
    UnknownFieldTag(u8),
    /// Field tables and arrays nest deeper than [`crate::MAX_TABLE_DEPTH`].
    #[error("field tables nested deeper than {0} levels")]
    NestingTooDeep(usize),
    /// A short string longer than 255 bytes was built or encoded.
    #[error("short string of {0} bytes exceeds 255")]
    ShortStringTooLong(usize),
    /// A long string, table or array is larger than a 32-bit length can describe.
    #[error("{what} of {len} bytes exceeds the 32-bit length limit")]
    TooLong {
        /// What was being encoded.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A content header would not fit in one frame of the negotiated size.
    #[error("content header of {size} bytes does not fit frame_max {max}")]
    HeaderTooLarge {
        /// Whole header frame size.
        size: usize,
        /// The limit in force.
        max: u32,
    },
    /// The bytes were not a valid AMQP protocol header.
    #[error("invalid protocol header {0:?}")]
    BadProtocolHeader([u8; 8]),
    /// The peer answered with a protocol header: it does not speak our version and will close.
    #[error("peer refused protocol version and offers AMQP {major}-{minor}-{revision} (id {id})")]
    ProtocolVersionRefused {
        /// Protocol id octet.
        id: u8,
        /// Major version.
        major: u8,
        /// Minor version.
        minor: u8,
        /// Revision.
        revision: u8,
    },
}

impl CodecError {
    /// The reply code the spec assigns to this failure, used when closing the connection.
    pub fn reply_code(&self) -> ReplyCode {
        use CodecError::*;
        match self {
            FrameTooLarge { .. }
            | BadFrameEnd(_)
            | UnknownFrameType(_)
            | BadHeartbeat { .. }
            | Truncated { .. }
            | TrailingBytes { .. }
            | BadProtocolHeader(_)
            | ProtocolVersionRefused { .. }
            | HeaderTooLarge { .. }
            | BadPropertyFlags(_) => ReplyCode::FRAME_ERROR,
            UnknownFieldTag(_) | NestingTooDeep(_) | ShortStringTooLong(_) | TooLong { .. } => {
                ReplyCode::SYNTAX_ERROR
            }
            UnknownMethod { .. } | UnknownContentClass(_) => ReplyCode::COMMAND_INVALID,
        }
    }
}
