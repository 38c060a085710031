//! The connection layer's error type: why a request, consumer, confirm, channel or connection
//! failed, with reply codes mapped to named kinds.

use super::event::ChannelId;
pub use crate::error::ErrorKind;
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

/// A call the API does not allow now or with these arguments. Each variant says what to do
/// instead; match on it rather than on the text.
///
/// ```
/// use amqp_proto::{Connection, ConnectionConfig, Error, Misuse};
/// use std::time::Instant;
///
/// let mut conn = Connection::new(ConnectionConfig::default(), Instant::now());
/// // Before `Event::Connected` nothing can be opened yet.
/// assert_eq!(conn.open_channel().unwrap_err(), Error::Usage(Misuse::ConnectionNotOpen));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Misuse {
    /// The connection is not open.
    #[error(
        "the connection is not open: wait for the Connected event, or connect again after Closed"
    )]
    ConnectionNotOpen,
    /// Every channel number up to `channel_max` is taken.
    #[error("all channel numbers up to channel_max are in use: close a channel first")]
    ChannelsExhausted,
    /// The channel was never opened on this connection, or is closed.
    #[error("no such channel (never opened, or closed): open a channel first")]
    NoSuchChannel,
    /// The channel has not finished opening.
    #[error("the channel is still opening: wait for its ChannelOpened reply")]
    ChannelOpening,
    /// The channel is closing.
    #[error("the channel is closing: use another channel")]
    ChannelClosing,
    /// The channel was closed by this client.
    #[error("the channel was closed by this client: open a new one")]
    ChannelClosedByClient,
    /// A no-wait `basic.consume` names its consumer by the tag the client chose.
    #[error("a no-wait consume needs a consumer tag: choose one, or let the broker answer")]
    NowaitConsumeWithoutTag,
    /// A consumer with this tag is active, or being started, on the channel (the broker would
    /// close the channel with 530).
    #[error("this consumer tag is in use on the channel: choose another, or let the broker choose")]
    ConsumerTagInUse,
    /// The configured SASL mechanism name or locale does not fit a short string.
    #[error("the mechanism name or locale is longer than 255 bytes: fix the ConnectionConfig")]
    ConfigTooLong,
    /// A future was polled again after it completed.
    #[error("polled after completion: await each future once")]
    PolledAfterCompletion,
    /// The outcome of a request or confirm was already handed out.
    #[error("the outcome was already taken: await each request or confirmation once")]
    OutcomeTaken,
    /// The consumer has ended; nothing more will arrive on it.
    #[error("the consumer has ended: start a new consumer")]
    ConsumerEnded,
    /// An ack, nack or reject named a delivery from before a recovery; it was dropped (the
    /// broker redelivers that message with a new tag).
    #[error(
        "ack, nack or reject of a delivery from before a recovery dropped (stale delivery tag; \
         the broker redelivers it): settle the redelivered message instead"
    )]
    StaleDeliveryTag,
    /// `transport_ready` was called without an [`Event::Dial`](crate::Event::Dial) asking
    /// for a connection.
    #[error("no reconnection was asked for: call transport_ready only after Event::Dial")]
    NoDialPending,
    /// A reply of the wrong kind reached a command: a bug in this library.
    #[error("unexpected reply to this command (a bug in this library: please report it)")]
    UnexpectedReply,
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
        channel: ChannelId,
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
    /// The handshake did not finish within the handshake timeout; the step it stalled at.
    #[error("connection handshake timed out {0}")]
    HandshakeTimeout(super::HandshakeStep),
    /// A request got no reply within its request timeout (see
    /// [`ConnectionConfig::request_timeout`](crate::ConnectionConfig::request_timeout)). A late
    /// reply could not be told apart from the replies to later requests, so the channel was
    /// closed (reply 200): everything else pending on it, its consumers and its unconfirmed
    /// publishes fail with this same error.
    #[error("{request} on channel {channel} got no reply within {after:?}; the channel was closed")]
    RequestTimeout {
        /// The channel the request went to.
        channel: ChannelId,
        /// The request, by method name (`channel.open`, `queue.declare`, …).
        request: &'static str,
        /// The timeout that ran out.
        after: std::time::Duration,
    },
    /// A command waited for a recovery in progress longer than its request timeout and was
    /// not sent (the runtime glue holds commands back while recovering).
    #[error("the connection was still recovering after {0:?}; the command was not sent")]
    RecoveryTimeout(std::time::Duration),
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
    /// The call does not fit the current state or its arguments; [`Misuse`] says what to do.
    #[error("invalid use: {0}")]
    Usage(Misuse),
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
            Error::HandshakeTimeout(_)
            | Error::RequestTimeout { .. }
            | Error::RecoveryTimeout(_) => ErrorKind::Timeout,
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
