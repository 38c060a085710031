//! The channel handle: every channel-level operation of the core, as async methods.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use amqp_proto as proto;
use bytes::Bytes;
use futures_core::Stream;
use proto::{
    BasicProperties, BasicPublishOptions, ChannelId, DeliveryTag, Error, ExchangeDeclareOptions,
    Misuse, QueueDeclareOptions, QueueDeleteOptions, Reply, RequestId, ReturnedMessage,
};

use crate::body::IntoBody;
use crate::handle::{ConnHandle, WaitReply, recovered, start_request, unexpected};
use crate::options::QueueInfo;
use crate::shared::{ReqKind, Shared, SharedRef};
use crate::util::{lock, register, set_waker};
use proto::{
    BasicCancelOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeBindOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueuePurgeOptions, QueueUnbindOptions,
};

/// The error a channel handle reports after this client closed it.
const CLOSED_BY_US: Error = Error::Usage(Misuse::ChannelClosedByClient);

#[derive(Debug)]
pub(crate) struct ChannelInner {
    pub(crate) conn: Arc<ConnHandle>,
    pub(crate) id: ChannelId,
    pub(crate) key: u64,
}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        let mut s = lock(&self.conn.shared);
        let open = s
            .channels
            .get(&self.key)
            .is_some_and(|e| e.closed.is_none());
        if open && s.core.is_open() {
            let _ = s.core.close_channel(self.id);
        }
        s.after_command();
        s.remove_channel(self.key);
    }
}

/// A channel. Cheap to clone; every clone is the same channel.
///
/// The channel closes (best effort, without waiting) when the last handle to it goes: every
/// `Channel` clone and every [`Consumer`](crate::Consumer), [`Delivery`](crate::Delivery) and pending [`PublishConfirm`] of it.
/// Use [`Channel::close`] to close it and wait for the broker's answer.
#[derive(Debug, Clone)]
pub struct Channel {
    pub(crate) inner: Arc<ChannelInner>,
}

impl Channel {
    pub(crate) fn new(conn: Arc<ConnHandle>, id: ChannelId, key: u64) -> Self {
        Channel {
            inner: Arc::new(ChannelInner { conn, id, key }),
        }
    }

    #[inline]
    pub(crate) fn shared(&self) -> &Mutex<Shared> {
        &self.inner.conn.shared
    }

    /// The channel number.
    pub fn id(&self) -> ChannelId {
        self.inner.id
    }

    /// Sets the time allowed for the reply to each request on this channel from now on
    /// (`None`: wait for ever); a channel starts with the connection's
    /// [`ConnectionConfig::request_timeout`](proto::ConnectionConfig::request_timeout) (60 s
    /// by default). A request that runs out fails with [`Error::RequestTimeout`] and closes
    /// the channel; a command held back while the connection recovers fails with
    /// [`Error::RecoveryTimeout`] after the same time, unsent.
    pub fn set_request_timeout(&self, timeout: Option<Duration>) -> Result<(), Error> {
        self.now(|c, ch| c.set_request_timeout(ch, timeout))
    }

    /// The time allowed for the reply to each request on this channel (`None`: no limit).
    pub fn request_timeout(&self) -> Option<Duration> {
        lock(self.shared()).core.request_timeout(self.inner.id)
    }

    /// Whether the channel can be used (not closed by either side, connection not over).
    pub fn is_open(&self) -> bool {
        lock(self.shared()).channel(self.inner.key).is_ok()
    }

    /// Runs a command that completes later, registering its waiter under the same lock.
    pub(crate) fn start(
        &self,
        command: impl FnOnce(&mut Shared, ChannelId) -> Result<(RequestId, ReqKind), Error>,
    ) -> Result<RequestId, Error> {
        let (id, key) = (self.inner.id, self.inner.key);
        start_request(self.shared(), |s| {
            s.channel(key)?;
            command(s, id)
        })
    }

    async fn request(
        &self,
        command: impl FnOnce(&mut proto::Connection, ChannelId) -> Result<RequestId, Error>,
    ) -> Result<Reply, Error> {
        recovered(self.shared(), Some(self.inner.id)).await?;
        let id = self.start(|s, ch| Ok((command(&mut s.core, ch)?, ReqKind::Plain)))?;
        WaitReply::new(self.shared(), id).await
    }

    /// Runs a command that completes at once.
    #[inline]
    fn now<T>(
        &self,
        command: impl FnOnce(&mut proto::Connection, ChannelId) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut s = lock(self.shared());
        s.channel(self.inner.key)?;
        let result = command(&mut s.core, self.inner.id);
        s.after_command();
        result
    }

    /// Closes the channel and waits for the broker's answer. Everything pending on it fails
    /// at once. Closing twice is fine; closing a channel the broker closed returns why it did.
    pub async fn close(&self) -> Result<(), Error> {
        let key = self.inner.key;
        let id = {
            let mut s = lock(self.shared());
            if s.channels.get(&key).is_some_and(|e| e.closed_by_us) {
                return Ok(());
            }
            s.channel(key)?;
            let id = match s.core.close_channel(self.inner.id) {
                Ok(id) => id,
                Err(e) => {
                    s.after_command();
                    return Err(e);
                }
            };
            s.add_request(id, ReqKind::Plain);
            s.after_command();
            s.closed_by_us(key, CLOSED_BY_US);
            id
        };
        WaitReply::new(self.shared(), id).await.map(|_| ())
    }

    /// Waits until the channel is closed (by the broker, this client, or the end of the
    /// connection) and returns why.
    pub async fn closed(&self) -> Error {
        poll_fn(|cx| {
            let mut s = lock(self.shared());
            match s.channels.get_mut(&self.inner.key) {
                None => Poll::Ready(CLOSED_BY_US),
                Some(entry) => match &entry.closed {
                    Some(e) => Poll::Ready(e.clone()),
                    None => {
                        register(&mut entry.close_wakers, cx.waker());
                        Poll::Pending
                    }
                },
            }
        })
        .await
    }

    /// Asks the broker to pause (`false`) or resume (`true`) deliveries on this channel;
    /// returns the flow state it reports.
    pub async fn channel_flow(&self, active: bool) -> Result<bool, Error> {
        match self.request(|c, ch| c.channel_flow(ch, active)).await? {
            Reply::Flow { active } => Ok(active),
            other => Err(unexpected(other)),
        }
    }

    // ----- exchanges -----

    /// Declares an exchange of `kind` (`direct`, `fanout`, `topic`, `headers`, …).
    pub async fn exchange_declare(
        &self,
        exchange: &str,
        kind: &str,
        options: ExchangeDeclareOptions,
    ) -> Result<(), Error> {
        self.request(|c, ch| c.exchange_declare(ch, exchange, kind, options))
            .await
            .map(drop)
    }

    /// Deletes an exchange.
    pub async fn exchange_delete(
        &self,
        exchange: &str,
        options: ExchangeDeleteOptions,
    ) -> Result<(), Error> {
        self.request(|c, ch| c.exchange_delete(ch, exchange, options))
            .await
            .map(drop)
    }

    /// Binds exchange `destination` to `source` (a RabbitMQ extension).
    pub async fn exchange_bind(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        options: ExchangeBindOptions,
    ) -> Result<(), Error> {
        self.request(|c, ch| c.exchange_bind(ch, destination, source, routing_key, options))
            .await
            .map(drop)
    }

    /// Removes an exchange-to-exchange binding.
    pub async fn exchange_unbind(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        options: ExchangeBindOptions,
    ) -> Result<(), Error> {
        self.request(|c, ch| c.exchange_unbind(ch, destination, source, routing_key, options))
            .await
            .map(drop)
    }

    // ----- queues -----

    /// Declares a queue (an empty name lets the broker choose one).
    pub async fn queue_declare(
        &self,
        queue: &str,
        options: QueueDeclareOptions,
    ) -> Result<QueueInfo, Error> {
        match self
            .request(|c, ch| c.queue_declare(ch, queue, options))
            .await?
        {
            Reply::QueueDeclared {
                queue,
                message_count,
                consumer_count,
            } => Ok(QueueInfo {
                name: queue,
                message_count,
                consumer_count,
            }),
            Reply::Sent => Ok(QueueInfo {
                name: proto::ShortString::try_from(queue)?,
                message_count: 0,
                consumer_count: 0,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Binds a queue to an exchange.
    pub async fn queue_bind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        options: QueueBindOptions,
    ) -> Result<(), Error> {
        self.request(|c, ch| c.queue_bind(ch, queue, exchange, routing_key, options))
            .await
            .map(drop)
    }

    /// Removes a queue binding.
    pub async fn queue_unbind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        options: QueueUnbindOptions,
    ) -> Result<(), Error> {
        self.request(|c, ch| c.queue_unbind(ch, queue, exchange, routing_key, options))
            .await
            .map(drop)
    }

    /// Removes all ready messages from a queue; returns how many (0 after a no-wait purge).
    pub async fn queue_purge(&self, queue: &str, options: QueuePurgeOptions) -> Result<u32, Error> {
        match self
            .request(|c, ch| c.queue_purge(ch, queue, options))
            .await?
        {
            Reply::QueuePurged { message_count } => Ok(message_count),
            Reply::Sent => Ok(0),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a queue; returns how many messages went with it (0 after a no-wait delete).
    pub async fn queue_delete(
        &self,
        queue: &str,
        options: QueueDeleteOptions,
    ) -> Result<u32, Error> {
        match self
            .request(|c, ch| c.queue_delete(ch, queue, options))
            .await?
        {
            Reply::QueueDeleted { message_count } => Ok(message_count),
            Reply::Sent => Ok(0),
            other => Err(unexpected(other)),
        }
    }

    // ----- consuming -----

    /// Limits unacknowledged deliveries (per consumer by default, per channel with `global`).
    pub async fn basic_qos(
        &self,
        prefetch_count: u16,
        options: BasicQosOptions,
    ) -> Result<(), Error> {
        self.request(|c, ch| c.basic_qos(ch, prefetch_count, options))
            .await
            .map(drop)
    }

    /// Cancels a consumer. Its stream yields what was already delivered, then ends.
    pub async fn basic_cancel(
        &self,
        consumer_tag: &str,
        options: BasicCancelOptions,
    ) -> Result<(), Error> {
        self.request(|c, ch| c.basic_cancel(ch, consumer_tag, options))
            .await
            .map(drop)
    }

    /// Acknowledges a delivery (and every earlier one with `multiple`). Never waits: acks are
    /// not held back by publishing backpressure.
    pub fn basic_ack(&self, delivery_tag: DeliveryTag, multiple: bool) -> Result<(), Error> {
        self.now(|c, ch| c.basic_ack(ch, delivery_tag, multiple))
    }

    /// Rejects deliveries, optionally requeueing them (a RabbitMQ extension).
    pub fn basic_nack(
        &self,
        delivery_tag: DeliveryTag,
        multiple: bool,
        requeue: bool,
    ) -> Result<(), Error> {
        self.now(|c, ch| c.basic_nack(ch, delivery_tag, multiple, requeue))
    }

    /// Rejects one delivery, optionally requeueing it.
    pub fn basic_reject(&self, delivery_tag: DeliveryTag, requeue: bool) -> Result<(), Error> {
        self.now(|c, ch| c.basic_reject(ch, delivery_tag, requeue))
    }

    /// Asks the broker to redeliver every unacknowledged message of this channel.
    pub async fn basic_recover(&self, requeue: bool) -> Result<(), Error> {
        self.request(|c, ch| c.basic_recover(ch, requeue))
            .await
            .map(drop)
    }

    /// Like [`Channel::basic_recover`] but without waiting for an answer (deprecated in the
    /// spec).
    pub fn basic_recover_async(&self, requeue: bool) -> Result<(), Error> {
        self.now(|c, ch| c.basic_recover_async(ch, requeue))
    }

    // ----- publishing -----

    /// Publishes a message.
    ///
    /// Waits (does not fail) while the broker blocks the connection, pauses this channel with
    /// `channel.flow`, or the output queue is above its high-water mark. Returns once the
    /// message is queued for sending; in confirm mode the returned [`PublishConfirm`] then
    /// resolves to the broker's answer, otherwise to [`Confirmation::NotRequested`] at once.
    ///
    /// `body` is anything [`IntoBody`]: `Bytes`, `Vec<u8>` and `String` are taken as they are;
    /// borrowed bytes or text (`&[u8]`, `&str`) are copied once.
    pub async fn basic_publish(
        &self,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        properties: &BasicProperties,
        body: impl IntoBody,
    ) -> Result<PublishConfirm, Error> {
        let mut body = Some(body.into_body());
        poll_fn(|cx| self.poll_publish(cx, exchange, routing_key, options, properties, &mut body))
            .await
    }

    fn poll_publish(
        &self,
        cx: &mut Context<'_>,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        properties: &BasicProperties,
        body: &mut Option<Bytes>,
    ) -> Poll<Result<PublishConfirm, Error>> {
        let mut guard = lock(self.shared());
        let s = &mut *guard;
        let open = s
            .channels
            .get(&self.inner.key)
            .is_some_and(|e| e.closed.is_none());
        if open && s.backpressured() {
            // Output (queued or being written) is at the high-water mark: wait for it to drain.
            register(&mut s.publish_waiters, cx.waker());
            return Poll::Pending;
        }
        let Some(entry) = s.channels.get_mut(&self.inner.key) else {
            return Poll::Ready(Err(CLOSED_BY_US));
        };
        if let Some(e) = &entry.closed {
            return Poll::Ready(Err(e.clone()));
        }
        let Some(payload) = body.as_ref() else {
            return Poll::Ready(Err(Error::Usage(Misuse::PolledAfterCompletion)));
        };

        let tag = match s.core.basic_publish(
            self.inner.id,
            exchange,
            routing_key,
            options,
            properties,
            payload,
        ) {
            Ok(tag) => tag,
            // Blocked, paused by channel.flow or backpressured: park until the matching event
            // (output drained, unblocked, flow resumed, or close) and try again.
            Err(Error::WouldBlock(_)) => {
                register(&mut s.publish_waiters, cx.waker());
                return Poll::Pending;
            }
            Err(e) => return Poll::Ready(Err(e)),
        };
        *body = None;
        if let Some(tag) = tag {
            entry.confirms.push(tag);
        }
        s.wake_driver();
        Poll::Ready(Ok(PublishConfirm {
            pending: tag.map(|tag| (self.clone(), tag)),
        }))
    }

    /// Turns on publisher confirms for this channel.
    pub async fn confirm_select(&self, options: ConfirmSelectOptions) -> Result<(), Error> {
        self.request(|c, ch| c.confirm_select(ch, options))
            .await
            .map(drop)
    }

    /// Waits until every publish made so far on this channel is confirmed. Returns `true` if
    /// all were acked, `false` if any was nacked, since the last call; fails with the reason if
    /// a confirm was lost (the channel or connection closed first). Returns `Ok(true)` at once
    /// outside confirm mode.
    pub async fn wait_for_confirms(&self) -> Result<bool, Error> {
        poll_fn(|cx| {
            let mut s = lock(self.shared());
            let Some(entry) = s.channels.get_mut(&self.inner.key) else {
                return Poll::Ready(Err(CLOSED_BY_US));
            };
            let confirms = &mut entry.confirms;
            if confirms.poll_window(0, cx).is_pending() {
                return Poll::Pending;
            }
            let nacked = std::mem::take(&mut confirms.nacked);
            match confirms.lost.take() {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Ready(Ok(!nacked)),
            }
        })
        .await
    }

    /// Waits until at most `max_outstanding` publishes of this channel await their confirm.
    ///
    /// This is how a publisher keeps a confirm window without a wake-up per confirm: publish
    /// until `W` are outstanding, wait here for `W / 2`, then collect the confirms that
    /// arrived with [`PublishConfirm::try_resolve`]. The waiting task is woken once, when the
    /// confirms that arrived together bring the count down to the limit. Returns at once
    /// outside confirm mode; confirms lost to a close count as arrived.
    ///
    /// ```no_run
    /// # async fn f(ch: amqp_client::Channel) -> Result<(), amqp_client::Error> {
    /// use amqp_client::{BasicProperties, BasicPublishOptions};
    /// let mut window = std::collections::VecDeque::new();
    /// for _ in 0..10_000 {
    ///     if window.len() >= 1000 {
    ///         ch.wait_confirm_window(500).await?;
    ///         while let Some(confirm) = window.pop_front() {
    ///             match amqp_client::PublishConfirm::try_resolve(confirm) {
    ///                 Ok(outcome) => assert!(outcome.is_ack()),
    ///                 Err(pending) => { window.push_front(pending); break; }
    ///             }
    ///         }
    ///     }
    ///     let props = BasicProperties::default();
    ///     window.push_back(ch.basic_publish("", "q", BasicPublishOptions::default(), &props, "m").await?);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_confirm_window(&self, max_outstanding: usize) -> Result<(), Error> {
        poll_fn(|cx| {
            let mut s = lock(self.shared());
            match s.channels.get_mut(&self.inner.key) {
                None => Poll::Ready(Err(CLOSED_BY_US)),
                Some(entry) => entry.confirms.poll_window(max_outstanding, cx).map(Ok),
            }
        })
        .await
    }

    /// How many publishes of this channel await their confirm.
    pub fn confirms_outstanding(&self) -> usize {
        lock(self.shared())
            .channels
            .get(&self.inner.key)
            .map_or(0, |entry| entry.confirms.outstanding)
    }

    /// Starts a transaction mode on this channel.
    pub async fn tx_select(&self) -> Result<(), Error> {
        self.request(|c, ch| c.tx_select(ch)).await.map(drop)
    }

    /// Commits the current transaction.
    pub async fn tx_commit(&self) -> Result<(), Error> {
        self.request(|c, ch| c.tx_commit(ch)).await.map(drop)
    }

    /// Abandons the current transaction.
    pub async fn tx_rollback(&self) -> Result<(), Error> {
        self.request(|c, ch| c.tx_rollback(ch)).await.map(drop)
    }

    /// The mandatory messages the broker returns on this channel outside confirm mode (in
    /// confirm mode they come attached to their [`Confirmation`]), plus, when the channel
    /// closes, returns whose confirm never came. Returns arriving while no stream exists are
    /// dropped. The stream ends when the channel closes; it does not keep the channel open.
    pub fn on_return(&self) -> Returns {
        let mut s = lock(self.shared());
        if let Some(entry) = s.channels.get_mut(&self.inner.key) {
            entry.returns.subscribed = true;
        }
        Returns {
            shared: self.inner.conn.shared.clone(),
            key: self.inner.key,
        }
    }
}

/// The broker's answer to one publish. See [`PublishConfirm`].
#[derive(Debug, Clone, PartialEq)]
pub enum Confirmation {
    /// The broker took responsibility for the message. If it was mandatory and could not be
    /// routed, the returned message is attached.
    Ack(Option<Box<ReturnedMessage>>),
    /// The broker could not take it (e.g. a queue with `reject-publish` overflow was full).
    Nack(Option<Box<ReturnedMessage>>),
    /// The channel or connection closed before the broker answered: the outcome is unknown.
    Lost(Error),
    /// The channel is not in confirm mode: no answer was asked for.
    NotRequested,
}

impl Confirmation {
    /// Whether the broker acked the message.
    pub fn is_ack(&self) -> bool {
        matches!(self, Confirmation::Ack(_))
    }

    /// Whether the broker nacked the message.
    pub fn is_nack(&self) -> bool {
        matches!(self, Confirmation::Nack(_))
    }

    /// The message the broker returned (mandatory and unroutable), if any.
    pub fn returned(&self) -> Option<&ReturnedMessage> {
        match self {
            Confirmation::Ack(r) | Confirmation::Nack(r) => r.as_deref(),
            _ => None,
        }
    }
}

impl From<proto::Confirmation> for Confirmation {
    fn from(c: proto::Confirmation) -> Self {
        match c {
            proto::Confirmation::Ack(r) => Confirmation::Ack(r),
            proto::Confirmation::Nack(r) => Confirmation::Nack(r),
            proto::Confirmation::Lost(e) => Confirmation::Lost(e),
        }
    }
}

/// Resolves to the broker's answer to one publish ([`Confirmation`]). Dropping it is fine:
/// [`Channel::wait_for_confirms`] still counts the publish. While it is pending it keeps its
/// channel open.
#[derive(Debug)]
pub struct PublishConfirm {
    pending: Option<(Channel, DeliveryTag)>,
}

impl PublishConfirm {
    /// The publish's delivery tag in confirm mode.
    pub fn delivery_tag(&self) -> Option<DeliveryTag> {
        self.pending.as_ref().map(|(_, tag)| *tag)
    }

    /// Whether a confirm was requested (the channel is in confirm mode).
    pub fn is_requested(&self) -> bool {
        self.pending.is_some()
    }

    /// The broker's answer if it has arrived, without waiting; otherwise the still pending
    /// confirm back. (An associated function, so that it reads the same on the blocking
    /// adapter's handle.)
    pub fn try_resolve(mut this: Self) -> Result<Confirmation, Self> {
        let Some((channel, tag)) = &this.pending else {
            return Ok(Confirmation::NotRequested);
        };
        let taken = {
            let mut s = lock(channel.shared());
            match s.channels.get_mut(&channel.inner.key) {
                Some(entry) => entry.confirms.poll_take(*tag, None),
                None => Poll::Ready(None),
            }
        };
        match taken {
            Poll::Pending => Err(this),
            Poll::Ready(outcome) => {
                this.pending = None;
                Ok(Self::outcome(outcome))
            }
        }
    }

    fn outcome(taken: Option<proto::Confirmation>) -> Confirmation {
        match taken {
            Some(c) => c.into(),
            None => Confirmation::Lost(Error::Usage(Misuse::OutcomeTaken)),
        }
    }
}

impl Future for PublishConfirm {
    type Output = Confirmation;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Confirmation> {
        let Some((channel, tag)) = &self.pending else {
            return Poll::Ready(Confirmation::NotRequested);
        };
        let polled = {
            let mut s = lock(channel.shared());
            match s.channels.get_mut(&channel.inner.key) {
                Some(entry) => entry.confirms.poll_take(*tag, Some(cx.waker())),
                None => Poll::Ready(None),
            }
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(outcome) => {
                // Drop the channel handle outside the lock.
                let pending = self.pending.take();
                drop(pending);
                Poll::Ready(Self::outcome(outcome))
            }
        }
    }
}

impl Drop for PublishConfirm {
    fn drop(&mut self) {
        if let Some((channel, tag)) = &self.pending {
            let mut s = lock(channel.shared());
            if let Some(entry) = s.channels.get_mut(&channel.inner.key) {
                entry.confirms.detach(*tag);
            }
        }
    }
}

/// The stream returned by [`Channel::on_return`].
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Returns {
    shared: SharedRef,
    key: u64,
}

impl Stream for Returns {
    type Item = ReturnedMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ReturnedMessage>> {
        let mut s = lock(&self.shared);
        let Some(entry) = s.channels.get_mut(&self.key) else {
            return Poll::Ready(None);
        };
        if let Some(r) = entry.returns.items.pop_front() {
            return Poll::Ready(Some(*r));
        }
        if entry.closed.is_some() {
            return Poll::Ready(None);
        }
        set_waker(&mut entry.returns.waker, cx.waker());
        Poll::Pending
    }
}

impl Drop for Returns {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        if let Some(entry) = s.channels.get_mut(&self.key) {
            entry.returns = Default::default();
        }
    }
}
