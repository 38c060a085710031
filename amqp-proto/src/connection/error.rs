//! The connection layer's error type: why a request, consumer, confirm, channel or connection
//! failed, with reply codes mapped to named kinds.

use crate::error::{CodecError, ReplyCode};
use crate::types::ShortString;

/// Who ended a channel or connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// The broker sent `close`.
    Server,
    /// This client asked for it.
    Client,
    /// This library closed it because the peer broke the protocol.
    Library,
}

/// The reason carried by a `channel.close` or `connection.close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// Who sent the close.
    pub initiator: Initiator,
    /// The reply code.
    pub code: ReplyCode,
    /// The reply text.
    pub text: ShortString,
    /// Class of the method that caused it (0 if none).
    pub class_id: u16,
    /// Method that caused it (0 if none).
    pub method_id: u16,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.code, self.text.as_str())?;
        if self.class_id != 0 {
            let id = crate::spec::MethodId {
                class_id: self.class_id,
                method_id: self.method_id,
            };
            match crate::spec::Method::info_for(id) {
                Some(info) => write!(f, " (caused by {})", info.name)?,
                None => write!(f, " (caused by {}.{})", self.class_id, self.method_id)?,
            }
        }
        write!(f, " [{:?}]", self.initiator)
    }
}

/// Why a publish cannot be sent right now; the adapter waits for the matching event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WouldBlock {
    /// The outbound queue is above its high-water mark: write some bytes out first.
    Backpressure,
    /// The broker sent `connection.blocked`: wait for [`crate::Event::Unblocked`].
    ConnectionBlocked,
    /// The broker paused this channel with `channel.flow`: wait for the flow event.
    ChannelFlow,
    /// The connection is being recovered: wait for [`crate::Event::Recovered`] (or the end,
    /// [`crate::Event::Closed`]).
    Recovering,
}

/// A named kind for every way things fail, derived from reply codes where there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 311
    ContentTooLarge,
    /// 312
    NoRoute,
    /// 313
    NoConsumers,
    /// 320
    ConnectionForced,
    /// 402
    InvalidPath,
    /// 403
    AccessRefused,
    /// 404
    NotFound,
    /// 405
    ResourceLocked,
    /// 406
    PreconditionFailed,
    /// 501
    FrameError,
    /// 502
    SyntaxError,
    /// 503
    CommandInvalid,
    /// 504
    ChannelError,
    /// 505
    UnexpectedFrame,
    /// 506
    ResourceError,
    /// 530
    NotAllowed,
    /// 540
    NotImplemented,
    /// 541
    InternalError,
    /// 200: an orderly close.
    Success,
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
    /// The TLS handshake failed: the broker's certificate was rejected (unknown issuer, wrong
    /// host name, expired), the broker rejected ours, or the port does not speak TLS. Only
    /// runtime adapters report it; the core never sees TLS.
    Tls,
}

impl ErrorKind {
    /// The kind for a reply code.
    pub fn from_reply_code(code: ReplyCode) -> ErrorKind {
        match code.0 {
            200 => ErrorKind::Success,
            311 => ErrorKind::ContentTooLarge,
            312 => ErrorKind::NoRoute,
            313 => ErrorKind::NoConsumers,
            320 => ErrorKind::ConnectionForced,
            402 => ErrorKind::InvalidPath,
            403 => ErrorKind::AccessRefused,
            404 => ErrorKind::NotFound,
            405 => ErrorKind::ResourceLocked,
            406 => ErrorKind::PreconditionFailed,
            501 => ErrorKind::FrameError,
            502 => ErrorKind::SyntaxError,
            503 => ErrorKind::CommandInvalid,
            504 => ErrorKind::ChannelError,
            505 => ErrorKind::UnexpectedFrame,
            506 => ErrorKind::ResourceError,
            530 => ErrorKind::NotAllowed,
            540 => ErrorKind::NotImplemented,
            541 => ErrorKind::InternalError,
            _ => ErrorKind::Other,
        }
    }
}

/// Everything that can go wrong on a connection. Cheap to clone: one close fails many waiters
/// with the same reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The channel was closed (by the broker with a soft error, or by this client).
    #[error("channel {channel} closed: {reason}")]
    ChannelClosed {
        /// The channel.
        channel: u16,
        /// Why.
        reason: CloseReason,
    },
    /// The connection was closed, by either side.
    #[error("connection closed: {0}")]
    ConnectionClosed(CloseReason),
    /// The broker refused the login (or closed the socket right after it).
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The broker refused access to the virtual host.
    #[error("access to virtual host {vhost:?} refused: {text}")]
    VhostAccessRefused {
        /// The virtual host asked for.
        vhost: String,
        /// The broker's text.
        text: String,
    },
    /// No bytes arrived for two heartbeat intervals.
    #[error("missed heartbeats: nothing received for {0} seconds")]
    HeartbeatTimeout(u32),
    /// The handshake did not finish within the connection timeout.
    #[error("connection handshake timed out")]
    HandshakeTimeout,
    /// The transport reported a failure.
    #[error("transport failed ({kind:?}): {message}")]
    Transport {
        /// The I/O error kind.
        kind: std::io::ErrorKind,
        /// Its message.
        message: String,
    },
    /// The peer closed the stream.
    #[error("connection closed by peer without close handshake{}", if *.mid_frame { " (in the middle of a frame)" } else { "" })]
    UnexpectedEof {
        /// Whether a partial frame was buffered.
        mid_frame: bool,
    },
    /// The peer sent something the protocol forbids; the connection is being closed with the
    /// code in the error.
    #[error("protocol violation by peer ({code}): {text}")]
    Protocol {
        /// Reply code the spec assigns.
        code: ReplyCode,
        /// What was wrong.
        text: String,
    },
    /// A value could not be encoded (e.g. a name over 255 bytes, a header over frame_max).
    #[error("cannot encode: {0}")]
    Encode(CodecError),
    /// The call does not fit the current state (e.g. the channel is not open).
    #[error("invalid use: {0}")]
    Usage(&'static str),
    /// A publish cannot go out right now; see [`WouldBlock`].
    #[error("publish would block: {0:?}")]
    WouldBlock(WouldBlock),
}

impl Error {
    /// The named kind of this error.
    ///
    /// ```
    /// use amqp_proto::{Error, ErrorKind};
    /// assert_eq!(Error::HeartbeatTimeout(60).kind(), ErrorKind::HeartbeatTimeout);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ChannelClosed { reason, .. } | Error::ConnectionClosed(reason) => {
                ErrorKind::from_reply_code(reason.code)
            }
            Error::Authentication(_) => ErrorKind::Authentication,
            Error::VhostAccessRefused { .. } => ErrorKind::AccessRefused,
            Error::HeartbeatTimeout(_) => ErrorKind::HeartbeatTimeout,
            Error::HandshakeTimeout => ErrorKind::Timeout,
            Error::Transport { .. } | Error::UnexpectedEof { .. } => ErrorKind::ConnectionBroken,
            Error::Protocol { code, .. } => ErrorKind::from_reply_code(*code),
            Error::Encode(_) | Error::Usage(_) => ErrorKind::Usage,
            Error::WouldBlock(_) => ErrorKind::WouldBlock,
        }
    }

    /// The reply code behind this error, if one was exchanged.
    pub fn reply_code(&self) -> Option<ReplyCode> {
        match self {
            Error::ChannelClosed { reason, .. } | Error::ConnectionClosed(reason) => {
                Some(reason.code)
            }
            Error::Protocol { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<CodecError> for Error {
    fn from(e: CodecError) -> Self {
        Error::Encode(e)
    }
}
