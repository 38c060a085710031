//! The commands: each checks the state, queues its method and returns at once; a request's
//! outcome comes back later as [`Event::Completed`].

use std::time::Instant;

use bytes::Bytes;

use super::channel::{Channel, Confirms, Pending, Unconfirmed};
use super::options::*;
use super::{
    ChannelId, CloseCause, CloseReason, Connection, ConsumerEnd, DeliveryTag, Error, Event,
    HandshakeStep, Initiator, Lifecycle, Misuse, Reply, RequestId, WouldBlock, short,
};
use crate::error::ReplyCode;
use crate::properties::BasicProperties;
use crate::spec::*;
use crate::types::{LongString, ShortString};

impl Connection {
    /// Sends a synchronous method on an open channel and registers it for its reply; no-wait
    /// requests complete at once.
    fn request(&mut self, ch: ChannelId, method: Method, nowait: bool) -> Result<RequestId, Error> {
        self.open_channel_mut(ch)?;
        self.send_method(ch.0, &method)?;
        let id = self.next_id();
        let (Some(Channel::Open(open)), mut cx) = split!(self, ch.0) else {
            return Ok(id);
        };
        if !nowait {
            let timeout = open.request_timeout;
            open.pending.push_back(Pending {
                id,
                request: method,
            });
            self.deadlines.note(id, ch.0, timeout);
            return Ok(id);
        }
        let reply = match &method {
            Method::BasicConsume(m) => {
                open.consumers.insert(m.consumer_tag.clone());
                if m.no_ack {
                    open.no_ack.insert(m.consumer_tag.clone());
                }
                Reply::Consuming {
                    consumer_tag: m.consumer_tag.clone(),
                }
            }
            Method::BasicCancel(m) => {
                // Without a cancel-ok to wait for, deliveries may still be in flight: the
                // no-ack mark outlives the consumer so they are not rejected.
                let no_ack = open.no_ack.contains(&m.consumer_tag);
                open.end_consumer(&m.consumer_tag, ConsumerEnd::Cancelled, &mut cx);
                if no_ack {
                    open.no_ack.insert(m.consumer_tag.clone());
                }
                Reply::Sent
            }
            _ => Reply::Sent,
        };
        cx.topology.record(ch, &method, None);
        cx.events.push_back(Event::Completed {
            id,
            result: Ok(reply),
        });
        Ok(id)
    }

    /// Opens a channel on the lowest free number. Completes with [`Reply::ChannelOpened`].
    /// Its `channel.open` is bounded by [`ConnectionConfig::request_timeout`](crate::ConnectionConfig::request_timeout).
    pub fn open_channel(&mut self) -> Result<(ChannelId, RequestId), Error> {
        self.open_channel_with_timeout(self.config.request_timeout)
    }

    /// [`open_channel`](Self::open_channel) with its own bound on the `channel.open` reply
    /// (`None`: no limit). The channel's later requests start with the connection's default,
    /// as with `open_channel`.
    pub fn open_channel_with_timeout(
        &mut self,
        timeout: Option<std::time::Duration>,
    ) -> Result<(ChannelId, RequestId), Error> {
        self.check_open()?;
        let max = match self.tuning.channel_max {
            0 => u16::MAX,
            m => m,
        };
        let id = (1..=max)
            .find(|n| !self.channels.contains_key(n))
            .ok_or(Error::Usage(Misuse::ChannelsExhausted))?;
        self.send_method(id, &ChannelOpen::default().into())?;
        let rid = self.next_id();
        self.channels.insert(id, Channel::Opening(rid));
        self.deadlines.note(rid, id, timeout);
        Ok((ChannelId(id), rid))
    }

    /// Sets the time allowed for the reply to each request on `ch` from now on (`None`: no
    /// limit); a channel starts with [`ConnectionConfig::request_timeout`](crate::ConnectionConfig::request_timeout).
    /// Allowed while a recovery is under way: the channel keeps it.
    pub fn set_request_timeout(
        &mut self,
        ch: ChannelId,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), Error> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        match self.channels.get_mut(&ch.0) {
            Some(Channel::Open(c)) => {
                c.request_timeout = timeout;
                Ok(())
            }
            Some(Channel::Opening(_)) => Err(Error::Usage(Misuse::ChannelOpening)),
            Some(Channel::Closing(_)) => Err(Error::Usage(Misuse::ChannelClosing)),
            None => Err(Error::Usage(Misuse::NoSuchChannel)),
        }
    }

    /// The time allowed for the reply to a request on `ch`: its own setting if it is open,
    /// else (also for channel 0) the connection's default.
    pub fn request_timeout(&self, ch: ChannelId) -> Option<std::time::Duration> {
        match self.channels.get(&ch.0) {
            Some(Channel::Open(c)) => c.request_timeout,
            _ => self.config.request_timeout,
        }
    }

    /// Closes a channel (reply 200). Everything pending on it fails at once with that reason;
    /// completes with [`Reply::ChannelClosed`] when the broker confirms.
    pub fn close_channel(&mut self, ch: ChannelId) -> Result<RequestId, Error> {
        self.check_open()?;
        match self.channels.get(&ch.0) {
            None => return Err(Error::Usage(Misuse::NoSuchChannel)),
            Some(Channel::Closing(_)) => {
                return Err(Error::Usage(Misuse::ChannelClosing));
            }
            Some(_) => {}
        }
        let close = ChannelClose {
            reply_code: ReplyCode::REPLY_SUCCESS.0,
            reply_text: ShortString::from_static("closed by client"),
            class_id: 0,
            method_id: 0,
        };
        self.send_method(ch.0, &close.clone().into())?;
        let reason = CloseReason {
            initiator: Initiator::Client,
            code: ReplyCode::REPLY_SUCCESS,
            text: close.reply_text.clone(),
            class_id: 0,
            method_id: 0,
        };
        let error = Error::ChannelClosed {
            channel: ch,
            reason,
        };
        let id = self.next_id();
        let timeout = self.request_timeout(ch);
        self.deadlines.note(id, ch.0, timeout);
        if let (Some(channel), mut cx) = split!(self, ch.0) {
            std::mem::replace(channel, Channel::Closing(Some(id))).fail(&error, &mut cx);
            // Its consumers ended just now; recovery must not bring them back.
            cx.topology.forget_channel(ch);
        }
        Ok(id)
    }

    /// Asks the broker to pause (`false`) or resume (`true`) deliveries on the channel.
    pub fn channel_flow(&mut self, ch: ChannelId, active: bool) -> Result<RequestId, Error> {
        self.request(ch, ChannelFlow { active }.into(), false)
    }

    /// Declares an exchange of `kind` (`direct`, `fanout`, `topic`, `headers`, …).
    pub fn exchange_declare(
        &mut self,
        ch: ChannelId,
        exchange: &str,
        kind: &str,
        options: ExchangeDeclareOptions,
    ) -> Result<RequestId, Error> {
        let m = ExchangeDeclare {
            reserved_1: 0,
            exchange: short(exchange)?,
            kind: short(kind)?,
            passive: options.passive,
            durable: options.durable,
            auto_delete: options.auto_delete,
            internal: options.internal,
            no_wait: options.nowait,
            arguments: options.arguments,
        };
        self.request(ch, m.into(), options.nowait)
    }

    /// Deletes an exchange.
    pub fn exchange_delete(
        &mut self,
        ch: ChannelId,
        exchange: &str,
        options: ExchangeDeleteOptions,
    ) -> Result<RequestId, Error> {
        let m = ExchangeDelete {
            reserved_1: 0,
            exchange: short(exchange)?,
            if_unused: options.if_unused,
            no_wait: options.nowait,
        };
        self.request(ch, m.into(), options.nowait)
    }

    /// Binds exchange `destination` to `source` (a RabbitMQ extension).
    pub fn exchange_bind(
        &mut self,
        ch: ChannelId,
        destination: &str,
        source: &str,
        routing_key: &str,
        options: ExchangeBindOptions,
    ) -> Result<RequestId, Error> {
        let m = ExchangeBind {
            reserved_1: 0,
            destination: short(destination)?,
            source: short(source)?,
            routing_key: short(routing_key)?,
            no_wait: options.nowait,
            arguments: options.arguments,
        };
        self.request(ch, m.into(), options.nowait)
    }

    /// Removes an exchange-to-exchange binding.
    pub fn exchange_unbind(
        &mut self,
        ch: ChannelId,
        destination: &str,
        source: &str,
        routing_key: &str,
        options: ExchangeBindOptions,
    ) -> Result<RequestId, Error> {
        let m = ExchangeUnbind {
            reserved_1: 0,
            destination: short(destination)?,
            source: short(source)?,
            routing_key: short(routing_key)?,
            no_wait: options.nowait,
            arguments: options.arguments,
        };
        self.request(ch, m.into(), options.nowait)
    }

    /// Declares a queue (an empty name lets the broker choose). Completes with
    /// [`Reply::QueueDeclared`].
    pub fn queue_declare(
        &mut self,
        ch: ChannelId,
        queue: &str,
        options: QueueDeclareOptions,
    ) -> Result<RequestId, Error> {
        let m = QueueDeclare {
            reserved_1: 0,
            queue: short(queue)?,
            passive: options.passive,
            durable: options.durable,
            exclusive: options.exclusive,
            auto_delete: options.auto_delete,
            no_wait: options.nowait,
            arguments: options.arguments,
        };
        self.request(ch, m.into(), options.nowait)
    }

    /// Binds a queue to an exchange.
    pub fn queue_bind(
        &mut self,
        ch: ChannelId,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        options: QueueBindOptions,
    ) -> Result<RequestId, Error> {
        let m = QueueBind {
            reserved_1: 0,
            queue: short(queue)?,
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            no_wait: options.nowait,
            arguments: options.arguments,
        };
        self.request(ch, m.into(), options.nowait)
    }

    /// Removes a queue binding.
    pub fn queue_unbind(
        &mut self,
        ch: ChannelId,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        options: QueueUnbindOptions,
    ) -> Result<RequestId, Error> {
        let m = QueueUnbind {
            reserved_1: 0,
            queue: short(queue)?,
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            arguments: options.arguments,
        };
        self.request(ch, m.into(), false)
    }

    /// Removes all ready messages from a queue. Completes with [`Reply::QueuePurged`].
    pub fn queue_purge(
        &mut self,
        ch: ChannelId,
        queue: &str,
        options: QueuePurgeOptions,
    ) -> Result<RequestId, Error> {
        let m = QueuePurge {
            reserved_1: 0,
            queue: short(queue)?,
            no_wait: options.nowait,
        };
        self.request(ch, m.into(), options.nowait)
    }

    /// Deletes a queue. Completes with [`Reply::QueueDeleted`].
    pub fn queue_delete(
        &mut self,
        ch: ChannelId,
        queue: &str,
        options: QueueDeleteOptions,
    ) -> Result<RequestId, Error> {
        let m = QueueDelete {
            reserved_1: 0,
            queue: short(queue)?,
            if_unused: options.if_unused,
            if_empty: options.if_empty,
            no_wait: options.nowait,
        };
        self.request(ch, m.into(), options.nowait)
    }

    /// Limits unacknowledged deliveries to `prefetch_count` (per consumer, or per channel
    /// with `global`).
    pub fn basic_qos(
        &mut self,
        ch: ChannelId,
        prefetch_count: u16,
        options: BasicQosOptions,
    ) -> Result<RequestId, Error> {
        let m = BasicQos {
            prefetch_size: options.prefetch_size,
            prefetch_count,
            global: options.global,
        };
        self.request(ch, m.into(), false)
    }

    /// Starts a consumer (an empty tag lets the broker choose). Completes with
    /// [`Reply::Consuming`]; deliveries then arrive as [`Event::Delivery`] and the end as
    /// [`Event::ConsumerEnded`].
    pub fn basic_consume(
        &mut self,
        ch: ChannelId,
        queue: &str,
        consumer_tag: &str,
        options: BasicConsumeOptions,
    ) -> Result<RequestId, Error> {
        if options.nowait && consumer_tag.is_empty() {
            return Err(Error::Usage(Misuse::NowaitConsumeWithoutTag));
        }
        if !consumer_tag.is_empty() && self.open_channel_mut(ch)?.tag_in_use(consumer_tag) {
            return Err(Error::Usage(Misuse::ConsumerTagInUse));
        }
        let m = BasicConsume {
            reserved_1: 0,
            queue: short(queue)?,
            consumer_tag: short(consumer_tag)?,
            no_local: options.no_local,
            no_ack: options.no_ack,
            exclusive: options.exclusive,
            no_wait: options.nowait,
            arguments: options.arguments,
        };
        self.request(ch, m.into(), options.nowait)
    }

    /// Cancels a consumer. Completes with [`Reply::Cancelled`]; deliveries already sent may
    /// still arrive before that.
    pub fn basic_cancel(
        &mut self,
        ch: ChannelId,
        consumer_tag: &str,
        options: BasicCancelOptions,
    ) -> Result<RequestId, Error> {
        let m = BasicCancel {
            consumer_tag: short(consumer_tag)?,
            no_wait: options.nowait,
        };
        self.request(ch, m.into(), options.nowait)
    }

    /// Fetches one message. Completes with [`Reply::Get`].
    pub fn basic_get(
        &mut self,
        ch: ChannelId,
        queue: &str,
        options: BasicGetOptions,
    ) -> Result<RequestId, Error> {
        let m = BasicGet {
            reserved_1: 0,
            queue: short(queue)?,
            no_ack: options.no_ack,
        };
        self.request(ch, m.into(), false)
    }

    /// Asks the broker to redeliver unacknowledged messages. Completes with
    /// [`Reply::Recovered`].
    pub fn basic_recover(&mut self, ch: ChannelId, requeue: bool) -> Result<RequestId, Error> {
        self.request(ch, BasicRecover { requeue }.into(), false)
    }

    /// Like [`Connection::basic_recover`] without an answer (deprecated in the spec).
    pub fn basic_recover_async(&mut self, ch: ChannelId, requeue: bool) -> Result<(), Error> {
        self.open_channel_mut(ch)?;
        self.send_method(ch.0, &BasicRecoverAsync { requeue }.into())
    }

    /// Turns on publisher confirms. Completes with [`Reply::ConfirmSelected`]; from then on
    /// every publish returns a tag and gets one [`Event::Confirmed`].
    pub fn confirm_select(
        &mut self,
        ch: ChannelId,
        options: ConfirmSelectOptions,
    ) -> Result<RequestId, Error> {
        let c = self.open_channel_mut(ch)?;
        if c.confirms.is_none() {
            c.confirms = Some(Confirms::default());
        }
        let nowait = options.nowait;
        self.request(ch, ConfirmSelect { nowait }.into(), nowait)
    }

    /// Turns on transactions. Completes with [`Reply::TxSelected`].
    pub fn tx_select(&mut self, ch: ChannelId) -> Result<RequestId, Error> {
        self.request(ch, TxSelect {}.into(), false)
    }

    /// Commits the current transaction. Completes with [`Reply::TxCommitted`].
    pub fn tx_commit(&mut self, ch: ChannelId) -> Result<RequestId, Error> {
        self.request(ch, TxCommit {}.into(), false)
    }

    /// Abandons the current transaction. Completes with [`Reply::TxRolledBack`].
    pub fn tx_rollback(&mut self, ch: ChannelId) -> Result<RequestId, Error> {
        self.request(ch, TxRollback {}.into(), false)
    }

    /// Publishes a message. In confirm mode returns the tag its [`Event::Confirmed`] will
    /// carry.
    ///
    /// Refused with [`Error::WouldBlock`] while the broker blocks the connection, pauses the
    /// channel, or the output queue is above its high-water mark; acks, heartbeats and other
    /// commands are never held back. The body is borrowed, so a refused publish can simply be
    /// retried with it; large bodies are queued by reference (a `Bytes` clone), not copied.
    pub fn basic_publish(
        &mut self,
        ch: ChannelId,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        properties: &BasicProperties,
        body: &Bytes,
    ) -> Result<Option<DeliveryTag>, Error> {
        let blocked = self.blocked.is_some();
        let backpressured = self.is_backpressured();
        let frame_max = self.tuning.frame_max;
        let at_least_once =
            (self.config.recovery.as_ref()).is_some_and(|r| r.republish_unconfirmed);
        let c = self.open_channel_mut(ch)?;
        if blocked {
            return Err(Error::WouldBlock(WouldBlock::ConnectionBlocked));
        }
        if !c.flow_active {
            return Err(Error::WouldBlock(WouldBlock::ChannelFlow));
        }
        if backpressured {
            return Err(Error::WouldBlock(WouldBlock::Backpressure));
        }
        let m = BasicPublish {
            reserved_1: 0,
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            mandatory: options.mandatory,
            immediate: options.immediate,
        };
        let keep = at_least_once && c.confirms.is_some();
        let kept = keep.then(|| m.clone());
        self.transmit
            .push_content(ch.0, &m.into(), properties, body, frame_max)?;
        let tag = match self.channels.get_mut(&ch.0) {
            Some(Channel::Open(c)) => {
                let tag = c.confirms.as_mut().map(|c| c.publish(options.mandatory));
                if let (Some(publish), Some(tag)) = (kept, tag) {
                    c.kept.push_back(Unconfirmed {
                        tag: tag.0,
                        publish,
                        properties: properties.clone(),
                        body: body.clone(),
                    });
                }
                tag
            }
            _ => None,
        };
        self.counters.m.publishes += 1;
        Ok(tag)
    }

    /// The broker's number for the application's delivery `tag` on `ch`, or `None` for a
    /// delivery of a connection lost since (a stale tag: the ack is dropped with a warning,
    /// the broker redelivers that message anyway).
    fn broker_tag(
        &mut self,
        ch: ChannelId,
        tag: DeliveryTag,
        multiple: bool,
    ) -> Result<Option<u64>, Error> {
        if let Some(Channel::Open(c)) = self.channels.get(&ch.0) {
            if c.tags.is_shifted() && c.tags.outbound(tag.0, multiple).is_none() {
                self.events
                    .push_back(Event::Warning(Error::Usage(Misuse::StaleDeliveryTag)));
                return Ok(None);
            }
        }
        let c = self.open_channel_mut(ch)?;
        Ok(c.tags.outbound(tag.0, multiple))
    }

    /// Acknowledges a delivery (and all before it with `multiple`).
    pub fn basic_ack(
        &mut self,
        ch: ChannelId,
        tag: DeliveryTag,
        multiple: bool,
    ) -> Result<(), Error> {
        let Some(tag) = self.broker_tag(ch, tag, multiple)? else {
            return Ok(());
        };
        self.send_method(
            ch.0,
            &BasicAck {
                delivery_tag: tag,
                multiple,
            }
            .into(),
        )?;
        self.counters.m.acks_sent += 1;
        Ok(())
    }

    /// Rejects deliveries, optionally requeueing them (a RabbitMQ extension).
    pub fn basic_nack(
        &mut self,
        ch: ChannelId,
        tag: DeliveryTag,
        multiple: bool,
        requeue: bool,
    ) -> Result<(), Error> {
        let Some(tag) = self.broker_tag(ch, tag, multiple)? else {
            return Ok(());
        };
        self.send_method(
            ch.0,
            &BasicNack {
                delivery_tag: tag,
                multiple,
                requeue,
            }
            .into(),
        )?;
        self.counters.m.nacks_sent += 1;
        Ok(())
    }

    /// Rejects one delivery, optionally requeueing it.
    pub fn basic_reject(
        &mut self,
        ch: ChannelId,
        tag: DeliveryTag,
        requeue: bool,
    ) -> Result<(), Error> {
        let Some(tag) = self.broker_tag(ch, tag, false)? else {
            return Ok(());
        };
        self.send_method(
            ch.0,
            &BasicReject {
                delivery_tag: tag,
                requeue,
            }
            .into(),
        )?;
        self.counters.m.rejects_sent += 1;
        Ok(())
    }

    /// Replaces the connection's secret (e.g. a refreshed OAuth2 token). Completes with
    /// [`Reply::SecretUpdated`]; a broker that refuses closes the connection, which then
    /// fails this request with its reason.
    ///
    /// From now on the connection's SASL mechanism carries the new secret (see
    /// [`SaslMechanism::with_secret`](crate::sasl::SaslMechanism::with_secret)), so an
    /// automatic recovery logs in with it. It is taken as sent, not on `update-secret-ok`: a
    /// refusal closes the connection without recovery, and if the link fails before the
    /// answer the new secret is still the one the application means to use.
    pub fn update_secret(&mut self, new_secret: &[u8], reason: &str) -> Result<RequestId, Error> {
        self.check_open()?;
        let m = ConnectionUpdateSecret {
            new_secret: LongString::from(new_secret).into(),
            reason: short(reason)?,
        };
        self.send_method(0, &m.into())?;
        if let Some(sasl) = self.config.sasl.with_secret(new_secret) {
            self.config.sasl = sasl;
        }
        let id = self.next_id();
        self.conn_pending
            .push_back((id, ConnectionUpdateSecretOk::ID));
        Ok(id)
    }

    /// Starts an orderly close (reply 200) at time `now`. Everything pending fails at once
    /// with this reason; [`Event::Closed`]`(None)` follows the broker's `close-ok`, or the
    /// close timeout, which runs from `now`.
    pub fn close(&mut self, now: Instant, text: &str) -> Result<RequestId, Error> {
        // Closing ends a recovery in progress; the close is ours, not a recovery given up.
        self.recovery = None;
        match self.lifecycle {
            Lifecycle::Closing { .. } | Lifecycle::Closed { .. } => return Err(self.closed_error()),
            Lifecycle::Recovering
            | Lifecycle::Handshake {
                step: HandshakeStep::AwaitingStart | HandshakeStep::Authenticating,
                ..
            } => {
                // Nothing to close politely before the broker has opened: just stop.
                let id = self.next_id();
                self.conn_pending.push_back((id, ConnectionCloseOk::ID));
                self.finish(None);
                return Ok(id);
            }
            _ => {}
        }
        let close = ConnectionClose {
            reply_code: ReplyCode::REPLY_SUCCESS.0,
            reply_text: short(text)?,
            class_id: 0,
            method_id: 0,
        };
        self.send_method(0, &close.clone().into())?;
        let reason = CloseReason {
            initiator: Initiator::Client,
            code: ReplyCode::REPLY_SUCCESS,
            text: close.reply_text,
            class_id: 0,
            method_id: 0,
        };
        let error = Error::ConnectionClosed(reason);
        self.fail_everything(&error);
        self.lifecycle = Lifecycle::Closing {
            deadline: now + self.config.close_timeout,
            cause: CloseCause::Client(error),
        };
        let id = self.next_id();
        self.conn_pending.push_back((id, ConnectionCloseOk::ID));
        Ok(id)
    }
}
