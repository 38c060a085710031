//! Consumers (a stream of deliveries) and deliveries (a message plus the means to ack it).

use std::collections::VecDeque;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};

use amqp_proto as proto;
use futures_core::Stream;
use proto::{BasicConsumeOptions, ConsumerEnd, ConsumerTag, Error, Reply};

use crate::channel::Channel;
use crate::handle::{WaitReply, recovered, unexpected};
use crate::shared::ReqKind;
use crate::util::{lock, set_waker};
use proto::{BasicCancelOptions, BasicGetOptions};

/// The deliveries of one consumer, as a [`Stream`] of `Result<Delivery, Error>`.
///
/// It ends cleanly once the consumer is cancelled (by [`Consumer::cancel`],
/// [`Channel::basic_cancel`] or the broker, e.g. when its queue is deleted), after the
/// deliveries already received. When its channel or connection closes it yields one `Err`
/// with the reason, then ends. [`Consumer::end_reason`] tells which.
///
/// Dropping it cancels the consumer and hands back (requeues) the deliveries it had received
/// but not yielded.
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Consumer {
    channel: Channel,
    key: u64,
    tag: ConsumerTag,
    local: VecDeque<Box<proto::Delivery>>,
    end: Option<ConsumerEnd>,
    done: bool,
}

impl Consumer {
    pub(crate) fn new(channel: Channel, key: u64, tag: ConsumerTag) -> Self {
        Consumer {
            channel,
            key,
            tag,
            local: VecDeque::new(),
            end: None,
            done: false,
        }
    }

    /// The consumer tag.
    pub fn tag(&self) -> &ConsumerTag {
        &self.tag
    }

    /// The channel it consumes on.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Why the stream ended, once it has.
    pub fn end_reason(&self) -> Option<&ConsumerEnd> {
        self.end.as_ref()
    }

    /// Cancels the consumer; the stream yields what had already arrived, then ends.
    pub async fn cancel(&self) -> Result<(), Error> {
        self.channel
            .basic_cancel(&self.tag, BasicCancelOptions::default())
            .await
    }

    fn wrap(&self, d: Box<proto::Delivery>) -> Delivery {
        Delivery::new(d, self.channel.clone(), None)
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(d) = self.local.pop_front() {
            return Poll::Ready(Some(Ok(self.wrap(d))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let end = {
            let mut s = lock(this.channel.shared());
            let Some(q) = s.consumers.get_mut(&this.key) else {
                this.done = true;
                return Poll::Ready(None);
            };
            // Take everything queued in one go: one lock per batch, not per message.
            std::mem::swap(&mut q.items, &mut this.local);
            if !this.local.is_empty() {
                None
            } else if let Some(end) = q.end.take() {
                s.consumers.remove(&this.key);
                Some(end)
            } else {
                set_waker(&mut q.waker, cx.waker());
                return Poll::Pending;
            }
        };
        match end {
            None => {
                let d = this.local.pop_front().expect("checked non-empty");
                Poll::Ready(Some(Ok(this.wrap(d))))
            }
            Some(end) => {
                this.done = true;
                let item = match &end {
                    ConsumerEnd::Closed(e) => Some(Err(e.clone())),
                    _ => None,
                };
                this.end = Some(end);
                Poll::Ready(item)
            }
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let local = std::mem::take(&mut self.local);
        let mut s = lock(self.channel.shared());
        if let Some(q) = s.consumers.get_mut(&self.key) {
            // Unseen deliveries go back to the broker with those still queued.
            let mut local = local;
            local.append(&mut q.items);
            q.items = local;
            s.drop_consumer(self.key);
        } else if !local.is_empty() {
            // Already ended: hand back what was never yielded.
            for d in local {
                let _ = s.core.basic_reject(d.channel, d.delivery_tag, true);
            }
            s.after_command();
        }
    }
}

/// A message delivered to a consumer (or fetched with [`Channel::basic_get`]), with the
/// means to acknowledge it. Its fields (`body`, `properties`, `delivery_tag`, `redelivered`,
/// `exchange`, `routing_key`, `consumer_tag`, `channel`) are those of
/// [`amqp_proto::Delivery`], reached through `Deref`.
///
/// Acks never wait: they are not held back by publishing backpressure. A delivery dropped
/// without an ack stays unacknowledged until its channel closes.
#[derive(Debug)]
pub struct Delivery {
    inner: Box<proto::Delivery>,
    channel: Channel,
    message_count: Option<u32>,
}

impl Delivery {
    pub(crate) fn new(
        inner: Box<proto::Delivery>,
        channel: Channel,
        message_count: Option<u32>,
    ) -> Self {
        Delivery {
            inner,
            channel,
            message_count,
        }
    }

    /// Acknowledges this delivery.
    pub fn ack(&self) -> Result<(), Error> {
        self.channel.basic_ack(self.inner.delivery_tag, false)
    }

    /// Acknowledges this delivery and every earlier one on its channel.
    pub fn ack_multiple(&self) -> Result<(), Error> {
        self.channel.basic_ack(self.inner.delivery_tag, true)
    }

    /// Rejects this delivery, requeueing it or not (`basic.nack`).
    pub fn nack(&self, requeue: bool) -> Result<(), Error> {
        self.channel
            .basic_nack(self.inner.delivery_tag, false, requeue)
    }

    /// Rejects this delivery and every earlier unacknowledged one on its channel.
    pub fn nack_multiple(&self, requeue: bool) -> Result<(), Error> {
        self.channel
            .basic_nack(self.inner.delivery_tag, true, requeue)
    }

    /// Rejects this delivery, requeueing it or not (`basic.reject`).
    pub fn reject(&self, requeue: bool) -> Result<(), Error> {
        self.channel.basic_reject(self.inner.delivery_tag, requeue)
    }

    /// The channel it arrived on.
    pub fn channel_handle(&self) -> &Channel {
        &self.channel
    }

    /// For [`Channel::basic_get`]: messages left in the queue.
    pub fn message_count(&self) -> Option<u32> {
        self.message_count
    }

    /// The message itself, without the handle.
    pub fn into_inner(self) -> proto::Delivery {
        *self.inner
    }
}

/// The channel operations that hand out consumers and deliveries.
impl Channel {
    /// Starts a consumer (an empty tag lets the broker choose one). Its deliveries come out of
    /// the returned [`Consumer`] stream.
    pub async fn basic_consume(
        &self,
        queue: &str,
        consumer_tag: &str,
        options: BasicConsumeOptions,
    ) -> Result<Consumer, Error> {
        let mut consumer = 0;
        let no_ack = options.no_ack;
        recovered(self.shared(), Some(self.inner.id)).await?;
        let id = self.start(|s, ch| {
            let id = s.core.basic_consume(ch, queue, consumer_tag, options)?;
            consumer = s.next_key();
            let kind = ReqKind::Consume {
                channel: ch,
                consumer,
                no_ack,
            };
            Ok((id, kind))
        })?;
        match WaitReply::new(self.shared(), id).await? {
            Reply::Consuming { consumer_tag } => {
                Ok(Consumer::new(self.clone(), consumer, consumer_tag))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Fetches one message, if the queue has one.
    pub async fn basic_get(
        &self,
        queue: &str,
        options: BasicGetOptions,
    ) -> Result<Option<Delivery>, Error> {
        recovered(self.shared(), Some(self.inner.id)).await?;
        let id = self.start(|s, ch| {
            let id = s.core.basic_get(ch, queue, options)?;
            let kind = ReqKind::Get {
                channel: ch,
                no_ack: options.no_ack,
            };
            Ok((id, kind))
        })?;
        match WaitReply::new(self.shared(), id).await? {
            Reply::Get(None) => Ok(None),
            Reply::Get(Some(message)) => {
                let proto::GetMessage {
                    delivery,
                    message_count,
                } = *message;
                Ok(Some(Delivery::new(
                    Box::new(delivery),
                    self.clone(),
                    Some(message_count),
                )))
            }
            other => Err(unexpected(other)),
        }
    }
}

impl Deref for Delivery {
    type Target = proto::Delivery;

    fn deref(&self) -> &proto::Delivery {
        &self.inner
    }
}
