//! What a channel does with the frames that arrive for it: replies matched to requests,
//! content assembled into deliveries, gets and returns, confirms, consumer cancels, flow and
//! close. The handlers borrow what they write to through a [`ChannelContext`] and return a
//! protocol violation instead of acting on it, so the connection decides how to close.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::channel::{Body, Channel, Confirms, ContentMethod, Incoming, JoinSlabs, OpenChannel};
use super::error::{CloseReason, Error, Initiator};
use super::event::{
    ChannelId, Confirmation, ConsumerEnd, Delivery, DeliveryTag, Event, GetMessage, Reply,
    RequestId, ReturnedMessage,
};
use super::topology::Topology;
use crate::error::ReplyCode;
use crate::properties::ContentHeader;
use crate::spec::*;
use crate::transmit::Transmit;
use crate::types::ShortString;

/// What the peer did wrong, with the reply code the spec names; the connection closes with it.
#[derive(Debug)]
pub(super) struct Violation {
    pub(super) code: ReplyCode,
    pub(super) text: String,
}

impl Violation {
    fn new(code: ReplyCode, text: String) -> Self {
        Violation { code, text }
    }
}

/// Whether a channel stays in the table after a frame was handled.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Retain {
    Keep,
    /// The channel is finished (closed by either side) and leaves the table.
    Remove,
}

/// What a channel's handlers may touch while the connection lends it to them.
pub(super) struct ChannelContext<'a> {
    /// The channel's number.
    pub(super) channel: u16,
    pub(super) transmit: &'a mut Transmit,
    pub(super) events: &'a mut VecDeque<Event>,
    pub(super) topology: &'a mut Topology,
    /// Where bodies that arrive in several frames are joined (see `channel::JoinSlabs`).
    pub(super) join_slabs: &'a mut JoinSlabs,
    /// The agreed frame_max: a reply larger than this is not sent.
    pub(super) frame_max: u32,
    /// The largest body accepted from the broker.
    pub(super) max_body_size: u64,
    /// The connection's request timeout, which a channel starts with.
    pub(super) request_timeout: Option<std::time::Duration>,
}

impl ChannelContext<'_> {
    fn id(&self) -> ChannelId {
        ChannelId(self.channel)
    }

    /// Queues a method on this channel. Replies the client must send (close-ok, flow-ok,
    /// cancel-ok) are small; a failure to encode one leaves nothing queued.
    fn send(&mut self, method: Method) {
        let _ = self
            .transmit
            .push_method(self.channel, &method, self.frame_max);
    }

    fn complete(&mut self, id: RequestId, result: Result<Reply, Error>) {
        self.events.push_back(Event::Completed { id, result });
    }

    fn violation(&self, code: ReplyCode, what: impl std::fmt::Display) -> Violation {
        Violation::new(code, what.to_string())
    }
}

/// The reason a broker's `connection.close` or `channel.close` carries (the two have the same
/// fields).
pub(super) fn server_reason(
    reply_code: u16,
    reply_text: &ShortString,
    class_id: u16,
    method_id: u16,
) -> CloseReason {
    CloseReason {
        initiator: Initiator::Server,
        code: ReplyCode(reply_code),
        text: reply_text.clone(),
        class_id,
        method_id,
    }
}

impl Channel {
    /// Handles a method frame (never of the connection class) for this channel.
    pub(super) fn on_method(
        &mut self,
        m: Method,
        cx: &mut ChannelContext<'_>,
    ) -> Result<Retain, Violation> {
        match self {
            // After sending close only close and close-ok matter (the spec says to discard
            // the rest).
            Channel::Closing(id) => match m {
                Method::ChannelClose(_) => {
                    cx.send(ChannelCloseOk {}.into());
                    Ok(complete_client_close(*id, cx))
                }
                Method::ChannelCloseOk(_) => Ok(complete_client_close(*id, cx)),
                _ => Ok(Retain::Keep),
            },
            Channel::Opening(id) => match m {
                Method::ChannelOpenOk(_) => {
                    cx.complete(*id, Ok(Reply::ChannelOpened(cx.id())));
                    *self = Channel::Open(Box::new(OpenChannel {
                        request_timeout: cx.request_timeout,
                        ..OpenChannel::default()
                    }));
                    Ok(Retain::Keep)
                }
                Method::ChannelClose(close) => {
                    let id = *id;
                    let error = server_close(close, cx);
                    cx.complete(id, Err(error.clone()));
                    cx.events.push_back(Event::ChannelClosed {
                        channel: cx.id(),
                        error,
                    });
                    Ok(Retain::Remove)
                }
                other => Err(cx.violation(
                    ReplyCode::UNEXPECTED_FRAME,
                    format_args!(
                        "{} on channel {} does not answer channel.open",
                        other.name(),
                        cx.channel
                    ),
                )),
            },
            Channel::Open(open) => open.on_method(m, cx),
        }
    }

    /// Handles a content header frame.
    pub(super) fn on_header(
        &mut self,
        header: ContentHeader,
        cx: &mut ChannelContext<'_>,
    ) -> Result<(), Violation> {
        match self {
            Channel::Closing(_) => Ok(()),
            Channel::Opening(_) => Err(no_method("content header", cx)),
            Channel::Open(open) => open.on_header(header, cx),
        }
    }

    /// Handles a body frame.
    pub(super) fn on_body(
        &mut self,
        body: Bytes,
        cx: &mut ChannelContext<'_>,
    ) -> Result<(), Violation> {
        match self {
            Channel::Closing(_) => Ok(()),
            Channel::Opening(_) => Err(no_method("body frame", cx)),
            Channel::Open(open) => open.on_body(body, cx),
        }
    }

    /// Ends the channel because of `error`: every request, consumer and unconfirmed publish
    /// fails with it. A close this client asked for still completes: the channel is gone
    /// either way.
    pub(super) fn fail(self, error: &Error, cx: &mut ChannelContext<'_>) {
        match self {
            Channel::Opening(id) => cx.complete(id, Err(error.clone())),
            Channel::Open(open) => open.fail(error, cx),
            Channel::Closing(id) => {
                complete_client_close(id, cx);
            }
        }
    }
}

fn no_method(what: &str, cx: &ChannelContext<'_>) -> Violation {
    cx.violation(
        ReplyCode::UNEXPECTED_FRAME,
        format_args!("{what} on channel {} without a method", cx.channel),
    )
}

/// Answers the broker's `channel.close` and returns the error the channel ends with.
fn server_close(close: ChannelClose, cx: &mut ChannelContext<'_>) -> Error {
    cx.send(ChannelCloseOk {}.into());
    cx.topology.forget_channel(ChannelId(cx.channel));
    Error::ChannelClosed {
        channel: cx.id(),
        reason: server_reason(
            close.reply_code,
            &close.reply_text,
            close.class_id,
            close.method_id,
        ),
    }
}

fn complete_client_close(id: Option<RequestId>, cx: &mut ChannelContext<'_>) -> Retain {
    cx.topology.forget_channel(ChannelId(cx.channel));
    if let Some(id) = id {
        cx.complete(id, Ok(Reply::ChannelClosed));
    }
    Retain::Remove
}

impl OpenChannel {
    fn on_method(&mut self, m: Method, cx: &mut ChannelContext<'_>) -> Result<Retain, Violation> {
        let ch = cx.channel;
        if self.incoming.is_some() {
            return Err(cx.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format_args!(
                    "{} on channel {ch} before the previous content was complete",
                    m.name()
                ),
            ));
        }
        match m {
            Method::ChannelClose(close) => {
                let error = server_close(close, cx);
                std::mem::take(self).fail(&error, cx);
                cx.events.push_back(Event::ChannelClosed {
                    channel: cx.id(),
                    error,
                });
                return Ok(Retain::Remove);
            }
            Method::ChannelFlow(flow) => {
                self.flow_active = flow.active;
                cx.send(
                    ChannelFlowOk {
                        active: flow.active,
                    }
                    .into(),
                );
                cx.events.push_back(Event::ChannelFlow {
                    channel: cx.id(),
                    active: flow.active,
                });
            }
            Method::BasicCancel(cancel) => {
                if !cancel.no_wait {
                    cx.send(
                        BasicCancelOk {
                            consumer_tag: cancel.consumer_tag.clone(),
                        }
                        .into(),
                    );
                }
                self.end_consumer(&cancel.consumer_tag, ConsumerEnd::CancelledByServer, cx);
            }
            Method::BasicAck(ack) => self.on_confirm(ack.delivery_tag, ack.multiple, true, cx),
            Method::BasicNack(nack) => self.on_confirm(nack.delivery_tag, nack.multiple, false, cx),
            Method::BasicDeliver(d) => {
                self.incoming = Some(Incoming::new(ContentMethod::Deliver(d)));
            }
            Method::BasicReturn(r) => {
                self.incoming = Some(Incoming::new(ContentMethod::Return(r)));
            }
            reply => self.on_reply(reply, cx)?,
        }
        Ok(Retain::Keep)
    }

    /// Ends a consumer this channel knows, once, with `reason`.
    pub(super) fn end_consumer(
        &mut self,
        tag: &ShortString,
        reason: ConsumerEnd,
        cx: &mut ChannelContext<'_>,
    ) {
        if self.consumers.remove(tag) {
            self.no_ack.remove(tag);
            cx.topology.forget_consumer(cx.id(), tag);
            cx.events.push_back(Event::ConsumerEnded {
                channel: cx.id(),
                consumer_tag: tag.clone(),
                reason,
            });
        }
    }

    /// Matches a reply against the oldest pending request it answers.
    fn on_reply(&mut self, reply: Method, cx: &mut ChannelContext<'_>) -> Result<(), Violation> {
        let ch = cx.channel;
        let id = reply.id();
        // The oldest request this method answers. Not simply the oldest request: RabbitMQ
        // sends consume-ok (and cancel-ok) from the queue process, so they can overtake the
        // replies to later requests of other kinds on the same channel.
        let Some(pending) = self
            .pending
            .iter()
            .position(|p| p.request.info().expects_reply(id))
            .and_then(|pos| self.pending.remove(pos))
        else {
            let text = match self.pending.front() {
                Some(p) => format!(
                    "{} on channel {ch} does not answer {} or any other pending request",
                    reply.name(),
                    p.request.name()
                ),
                None => format!("{} on channel {ch} answers no request", reply.name()),
            };
            return Err(Violation::new(ReplyCode::UNEXPECTED_FRAME, text));
        };
        let result = match reply {
            Method::BasicGetOk(get_ok) => {
                // Completes when its content has arrived.
                self.incoming = Some(Incoming::new(ContentMethod::GetOk(get_ok, pending.id)));
                return Ok(());
            }
            Method::ChannelFlowOk(f) => Reply::Flow { active: f.active },
            Method::ExchangeDeclareOk(_) => Reply::ExchangeDeclared,
            Method::ExchangeDeleteOk(_) => Reply::ExchangeDeleted,
            Method::ExchangeBindOk(_) => Reply::ExchangeBound,
            Method::ExchangeUnbindOk(_) => Reply::ExchangeUnbound,
            Method::QueueDeclareOk(ok) => {
                cx.topology
                    .record(ChannelId(ch), &pending.request, Some(&ok.queue));
                Reply::QueueDeclared {
                    queue: ok.queue,
                    message_count: ok.message_count,
                    consumer_count: ok.consumer_count,
                }
            }
            Method::QueueBindOk(_) => Reply::QueueBound,
            Method::QueueUnbindOk(_) => Reply::QueueUnbound,
            Method::QueuePurgeOk(ok) => Reply::QueuePurged {
                message_count: ok.message_count,
            },
            Method::QueueDeleteOk(ok) => Reply::QueueDeleted {
                message_count: ok.message_count,
            },
            Method::BasicQosOk(_) => Reply::QosSet,
            Method::BasicConsumeOk(ok) => {
                // Deliveries are routed by tag: a tag given twice, or not the one asked for,
                // would hand one consumer's messages to another.
                let asked = match &pending.request {
                    Method::BasicConsume(m) => m.consumer_tag.as_str(),
                    _ => "",
                };
                if self.consumers.contains(&ok.consumer_tag)
                    || (!asked.is_empty() && asked != ok.consumer_tag.as_str())
                {
                    let violation = cx.violation(
                        ReplyCode::COMMAND_INVALID,
                        format_args!(
                            "basic.consume-ok on channel {ch} names consumer tag {:?}, which is \
                             already in use or not the tag asked for ({asked:?})",
                            ok.consumer_tag.as_str()
                        ),
                    );
                    // Still pending, so that it fails with the connection like the rest.
                    self.pending.push_front(pending);
                    return Err(violation);
                }
                self.consumers.insert(ok.consumer_tag.clone());
                if matches!(&pending.request, Method::BasicConsume(m) if m.no_ack) {
                    self.no_ack.insert(ok.consumer_tag.clone());
                }
                cx.topology
                    .record(ChannelId(ch), &pending.request, Some(&ok.consumer_tag));
                Reply::Consuming {
                    consumer_tag: ok.consumer_tag,
                }
            }
            Method::BasicCancelOk(ok) => {
                self.end_consumer(&ok.consumer_tag, ConsumerEnd::Cancelled, cx);
                Reply::Cancelled {
                    consumer_tag: ok.consumer_tag,
                }
            }
            Method::BasicGetEmpty(_) => Reply::Get(None),
            Method::BasicRecoverOk(_) => Reply::Recovered,
            Method::ConfirmSelectOk(_) => Reply::ConfirmSelected,
            Method::TxSelectOk(_) => Reply::TxSelected,
            Method::TxCommitOk(_) => Reply::TxCommitted,
            Method::TxRollbackOk(_) => Reply::TxRolledBack,
            other => {
                return Err(cx.violation(
                    ReplyCode::COMMAND_INVALID,
                    format_args!("{} is not valid from a server", other.name()),
                ));
            }
        };
        if !matches!(
            pending.request,
            Method::QueueDeclare(_) | Method::BasicConsume(_)
        ) {
            cx.topology.record(ChannelId(ch), &pending.request, None);
        }
        cx.complete(pending.id, Ok(result));
        Ok(())
    }

    fn on_header(
        &mut self,
        header: ContentHeader,
        cx: &mut ChannelContext<'_>,
    ) -> Result<(), Violation> {
        let ch = cx.channel;
        let Some(incoming) = self.incoming.as_mut() else {
            return Err(no_method("content header", cx));
        };
        if incoming.header.is_some() {
            return Err(cx.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format_args!("second content header on channel {ch}"),
            ));
        }
        if header.body_size > cx.max_body_size {
            return Err(cx.violation(
                ReplyCode::FRAME_ERROR,
                format_args!(
                    "body of {} bytes on channel {ch} exceeds max_body_size {}",
                    header.body_size, cx.max_body_size
                ),
            ));
        }
        let done = header.body_size == 0;
        incoming.header = Some((header.body_size, header.properties));
        if done {
            self.complete_content(cx);
        }
        Ok(())
    }

    fn on_body(&mut self, body: Bytes, cx: &mut ChannelContext<'_>) -> Result<(), Violation> {
        let ch = cx.channel;
        let Some(incoming) = self.incoming.as_mut() else {
            return Err(no_method("body frame", cx));
        };
        let Some((size, _)) = incoming.header else {
            return Err(cx.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format_args!("body frame on channel {ch} before its header"),
            ));
        };
        let received = incoming.body.len() as u64 + body.len() as u64;
        if received > size {
            return Err(cx.violation(
                ReplyCode::FRAME_ERROR,
                format_args!("body on channel {ch} is longer than the {size} bytes declared"),
            ));
        }
        incoming.body.push(body, size, cx.join_slabs);
        if received == size {
            self.complete_content(cx);
        }
        Ok(())
    }

    /// A body frame whose payload was read straight into `joined`, the body's buffer taken
    /// with `Body::take_joined` when the frame started (which checked that the frame fits the
    /// declared size, as [`Self::on_body`] does).
    pub(super) fn on_body_read(&mut self, joined: BytesMut, cx: &mut ChannelContext<'_>) {
        let Some(incoming) = self.incoming.as_mut() else {
            return;
        };
        let Some((size, _)) = incoming.header else {
            return;
        };
        incoming.body = Body::Many(joined);
        if incoming.body.len() as u64 == size {
            self.complete_content(cx);
        }
    }

    fn complete_content(&mut self, cx: &mut ChannelContext<'_>) {
        let Some(incoming) = self.incoming.take() else {
            return;
        };
        let channel = cx.id();
        let (method, properties, body) = incoming.into_parts();
        match method {
            ContentMethod::Deliver(d) if !self.consumers.contains(&d.consumer_tag) => {
                // No consumer to hand it to (cancelled without waiting, or never ours): left
                // unacknowledged it would sit with this client until the channel closes, so it
                // goes back to the queue, unless a no-ack consumer had it (already counted as
                // acknowledged by the broker; a reject would be a 406).
                let no_ack = self.no_ack.contains(&d.consumer_tag);
                if !no_ack {
                    cx.send(
                        BasicReject {
                            delivery_tag: d.delivery_tag,
                            requeue: true,
                        }
                        .into(),
                    );
                }
                cx.events.push_back(Event::Warning(Error::Protocol {
                    code: ReplyCode::COMMAND_INVALID,
                    text: format!(
                        "delivery {} on channel {} for unknown consumer {:?}: {}",
                        d.delivery_tag,
                        channel.0,
                        d.consumer_tag,
                        if no_ack {
                            "dropped (no-ack)"
                        } else {
                            "rejected with requeue"
                        }
                    ),
                }));
            }
            ContentMethod::Deliver(d) => {
                cx.events.push_back(Event::Delivery(Box::new(Delivery {
                    channel,
                    consumer_tag: d.consumer_tag,
                    delivery_tag: DeliveryTag(self.tags.inbound(d.delivery_tag)),
                    redelivered: d.redelivered,
                    exchange: d.exchange,
                    routing_key: d.routing_key,
                    properties,
                    body,
                })));
            }
            ContentMethod::GetOk(g, request) => {
                let message = GetMessage {
                    delivery: Delivery {
                        channel,
                        consumer_tag: ShortString::empty(),
                        delivery_tag: DeliveryTag(self.tags.inbound(g.delivery_tag)),
                        redelivered: g.redelivered,
                        exchange: g.exchange,
                        routing_key: g.routing_key,
                        properties,
                        body,
                    },
                    message_count: g.message_count,
                };
                cx.complete(request, Ok(Reply::Get(Some(Box::new(message)))));
            }
            ContentMethod::Return(r) => {
                let returned = ReturnedMessage {
                    channel,
                    reply_code: ReplyCode(r.reply_code),
                    reply_text: r.reply_text,
                    exchange: r.exchange,
                    routing_key: r.routing_key,
                    properties,
                    body,
                };
                match self.confirms.as_mut() {
                    // The broker sends the return just before the confirm of the same
                    // publish; hold it so the confirm can carry it.
                    Some(confirms) => confirms.returns.push_back(returned),
                    None => cx.events.push_back(Event::Returned(Box::new(returned))),
                }
            }
        }
    }

    fn on_confirm(&mut self, tag: u64, multiple: bool, ack: bool, cx: &mut ChannelContext<'_>) {
        let ch = cx.channel;
        let warn = |cx: &mut ChannelContext<'_>, text: String| {
            cx.events.push_back(Event::Warning(Error::Protocol {
                code: ReplyCode::COMMAND_INVALID,
                text,
            }));
        };
        let Some(confirms) = self.confirms.as_mut() else {
            return warn(
                cx,
                format!("basic.ack/nack from the broker on channel {ch}, not in confirm mode"),
            );
        };
        let resolved = confirms.resolve(tag, multiple);
        if resolved.is_empty() {
            return warn(
                cx,
                format!("confirm for unknown delivery tag {tag} on channel {ch}"),
            );
        }
        for (seq, returned) in resolved {
            // At-least-once mode: a confirmed publish need not be kept any longer.
            match self.kept.front() {
                Some(k) if k.tag == seq => {
                    self.kept.pop_front();
                }
                Some(_) => self.kept.retain(|k| k.tag != seq),
                None => {}
            }
            let returned = returned.map(Box::new);
            let outcome = if ack {
                Confirmation::Ack(returned)
            } else {
                Confirmation::Nack(returned)
            };
            cx.events.push_back(Event::Confirmed {
                channel: cx.id(),
                tag: DeliveryTag(seq),
                outcome,
            });
        }
    }

    /// Fails everything the channel had pending: requests, consumers, unconfirmed publishes.
    pub(super) fn fail(mut self, error: &Error, cx: &mut ChannelContext<'_>) {
        self.fail_requests(error, cx);
        let mut tags: Vec<_> = self.consumers.drain().collect();
        tags.sort();
        for consumer_tag in tags {
            cx.events.push_back(Event::ConsumerEnded {
                channel: cx.id(),
                consumer_tag,
                reason: ConsumerEnd::Closed(error.clone()),
            });
        }
        // The channel is gone for good: kept publishes are lost like the rest, including those
        // set aside by a recovery and not yet published again (older than the window).
        let kept = std::mem::take(&mut self.kept);
        if !kept.is_empty() {
            let in_window: std::collections::HashSet<u64> =
                self.confirms.iter().flat_map(|c| c.outstanding()).collect();
            for k in kept.iter().filter(|k| !in_window.contains(&k.tag)) {
                cx.events.push_back(Event::Confirmed {
                    channel: cx.id(),
                    tag: DeliveryTag(k.tag),
                    outcome: Confirmation::Lost(error.clone()),
                });
            }
        }
        self.fail_confirms(error, cx);
    }

    /// The transport went but the channel lives on for automatic recovery: what was in flight
    /// fails with `error` (requests, content half received, which the broker redelivers, and
    /// unconfirmed publishes, which resolve as lost); consumers stay. Delivery and publish tags
    /// of the new connection go on after those of the old one.
    pub(super) fn suspend(&mut self, error: &Error, cx: &mut ChannelContext<'_>) {
        self.fail_requests(error, cx);
        let next = self.confirms.as_ref().map(Confirms::next_connection);
        self.fail_confirms(error, cx);
        self.confirms = next;
        // Kept publishes (at-least-once mode) are not lost: they go out again once the
        // connection is back (see `republish`).
        self.flow_active = true;
        self.tags.reconnected();
    }

    /// Fails requests and content being received with `error`.
    fn fail_requests(&mut self, error: &Error, cx: &mut ChannelContext<'_>) {
        // A get-ok whose content was still arriving has left the pending queue already.
        if let Some(Incoming {
            method: ContentMethod::GetOk(_, id),
            ..
        }) = self.incoming.take()
        {
            cx.complete(id, Err(error.clone()));
        }
        for pending in self.pending.drain(..) {
            cx.complete(pending.id, Err(error.clone()));
        }
    }

    /// Resolves unconfirmed publishes as lost with `error`.
    fn fail_confirms(&mut self, error: &Error, cx: &mut ChannelContext<'_>) {
        let Some(mut confirms) = self.confirms.take() else {
            return;
        };
        // Returns whose confirm never came are still handed over, not dropped.
        for returned in confirms.returns.drain(..) {
            cx.events.push_back(Event::Returned(Box::new(returned)));
        }
        let kept: std::collections::HashSet<u64> = self.kept.iter().map(|k| k.tag).collect();
        for seq in confirms.outstanding() {
            if kept.contains(&seq) {
                continue;
            }
            cx.events.push_back(Event::Confirmed {
                channel: cx.id(),
                tag: DeliveryTag(seq),
                outcome: Confirmation::Lost(error.clone()),
            });
        }
    }
}
