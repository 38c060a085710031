//! # amqp-blocking
//!
//! A blocking AMQP 0-9-1 client: the operations and names of `amqp-tokio`, as plain calls
//! that return when the broker has answered, over a non-blocking socket driven by the
//! waiting threads and a background I/O thread: no async runtime, no reactor shared between
//! connections.
//!
//! ```no_run
//! use amqp_blocking::{
//!     BasicConsumeOptions, BasicProperties, BasicPublishOptions, ConfirmSelectOptions,
//!     Connection, QueueDeclareOptions,
//! };
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let conn = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f")?;
//!     let channel = conn.open_channel()?;
//!
//!     let queue = channel.queue_declare(
//!         "",
//!         QueueDeclareOptions { exclusive: true, ..Default::default() },
//!     )?;
//!
//!     channel.confirm_select(ConfirmSelectOptions::default())?;
//!     let confirm = channel.basic_publish(
//!         "",
//!         &queue.name,
//!         BasicPublishOptions::default(),
//!         &BasicProperties::default().with_content_type("text/plain"),
//!         "hello",
//!     )?;
//!     assert!(confirm.wait().is_ack());
//!
//!     let consumer =
//!         channel.basic_consume(&queue.name, "", BasicConsumeOptions::default())?;
//!     for delivery in consumer {
//!         let delivery = delivery?;
//!         println!("got {:?}", delivery.body);
//!         delivery.ack()?;
//!         break;
//!     }
//!
//!     conn.close()?;
//!     Ok(())
//! }
//! ```
//!
//! Each connection runs `amqp-client`'s connection driver (the same protocol glue as the
//! async adapters, so the same behaviour: recovery, heartbeats, metrics, tracing) over a
//! non-blocking TCP socket, on an event loop that waits on a `mio` poller for the socket, the
//! driver's next deadline or new work. A call that blocks runs that loop on the calling
//! thread while it waits (one thread at a time; others wait for it), so what the broker sends
//! is read and delivered on the thread that waits for it and no thread hands work to another.
//! A background I/O thread (`amqp-io`) runs the connect sequence (name resolution, TCP connect
//! within the URI's `connection_timeout`, TLS and AMQP handshakes) and takes the loop over
//! within a few milliseconds whenever no call waits, so heartbeats keep flowing and
//! fire-and-forget commands go out while the application's threads are busy.
//! [`Connection`] and [`Channel`] are cheap to clone, and every handle is `Send` and `Sync`:
//! share them between threads freely. Don't call these methods from inside an async task
//! (they would block its executor): use `amqp-async-std` or `amqp-tokio` there.
//!
//! With the `tls` feature (on by default) `amqps://` URIs connect through rustls, driven
//! directly over the socket by the connection's event loop: `cacertfile` (else the `webpki-roots`
//! CAs), host name verification, `certfile`/`keyfile` for a client certificate and
//! `auth_mechanism=external` to log in with it; in code, [`ConnectOptions::with_tls`] and
//! [`TlsOptions`] (see [`tls`]). A failed handshake is a prompt [`ConnectError::Tls`].
//! Without the feature, `amqps://` is refused with [`ConnectError::TlsNotSupported`].
//!
//! Connection and channel lifetimes follow `amqp-client`: the connection closes when its last
//! handle goes, a channel when its last handle goes. A [`Consumer`] is an iterator of
//! `Result<Delivery, Error>` that ends when the consumer is cancelled (after one `Err` if its
//! channel or connection closed); [`Consumer::recv_timeout`] waits a bounded time.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod io_thread;
mod lead;
mod net;
mod park;
mod reactor;
#[cfg(feature = "tls")]
mod tls_io;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use amqp_client as nb;
use futures_lite::StreamExt;

use lead::Loop;

/// The event loop of the connection a handle belongs to, which its blocking calls drive
/// while they wait (see `lead`). `None` for handles made from async ones (`From`): their
/// calls only park, and the connection's `amqp-io` thread drives.
#[derive(Clone)]
struct Link(Option<Arc<Loop>>);

impl Link {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        park::block_on(future, self.0.as_deref())
    }

    fn block_on_timeout<F: Future>(&self, future: F, timeout: Duration) -> Option<F::Output> {
        park::block_on_timeout(future, timeout, self.0.as_deref())
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Link" } else { "Unlinked" })
    }
}

pub use amqp_client::amqp_proto;
// The shared API; this crate's blocking `Connection`, `Channel`, `Consumer`, `PublishConfirm`,
// `Events` and `Returns` below take the place of the async ones of the same names.
pub use amqp_client::api::*;

/// Generates the blocking wrappers: `wait` methods block on the async method of the same
/// name, `now` methods call it directly; `=> f` maps the `Ok` value (`f(value, link)`).
macro_rules! methods {
    ($($(#[$doc:meta])* $kind:ident fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty
        $(=> $wrap:path)?;)*) => {$(
        $(#[$doc])*
        pub fn $name(&self $(, $arg: $ty)*) -> $ret {
            methods!(@$kind self, self.0.$name($($arg),*))
                $(.map(|value| $wrap(value, self.1.clone())))?
        }
    )*};
    (@wait $this:ident, $call:expr) => { $this.1.block_on($call) };
    (@now $this:ident, $call:expr) => { $call };
}

/// Connects to the broker at `uri` (`amqp://user:pass@host:port/vhost?options`).
pub fn connect(uri: &str) -> Result<Connection, ConnectError> {
    connect_with(uri)
}

/// Connects with a URI string, a parsed [`AmqpUri`] or [`ConnectOptions`].
pub fn connect_with(options: impl IntoConnectOptions) -> Result<Connection, ConnectError> {
    io_thread::connect(options.into_connect_options()?)
        .map(|(conn, event_loop)| Connection(conn, Link(Some(event_loop))))
}

/// A connection to a broker. Cheap to clone; every clone is the same connection. See
/// [`amqp_client::Connection`].
///
/// ```no_run
/// use amqp_blocking::{Connection, ConnectionEvent};
///
/// let conn = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f")?;
/// let events = conn.events();
/// std::thread::spawn(move || {
///     for event in events {
///         if let ConnectionEvent::Blocked { reason } = event {
///             eprintln!("publishing paused by the broker: {reason}");
///         }
///     }
/// });
/// let channel = conn.open_channel()?;
/// println!("channel {} on a connection tuned to {:?}", channel.id(), conn.tuning());
/// conn.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Connection(nb::Connection, Link);

impl Connection {
    /// Connects to the broker at `uri` (`amqp://user:pass@host:port/vhost?options`) and
    /// returns once the broker has accepted the login and opened the virtual host.
    pub fn connect(uri: &str) -> Result<Self, ConnectError> {
        connect(uri)
    }

    /// Connects with a URI string, a parsed [`AmqpUri`] or [`ConnectOptions`].
    pub fn connect_with(options: impl IntoConnectOptions) -> Result<Self, ConnectError> {
        connect_with(options)
    }

    methods! {
        /// Opens a channel on the lowest free number.
        wait fn open_channel(&self) -> Result<Channel, Error> => Channel;
        /// Opens a channel, bounded by `timeout` (`None`: no limit) instead of the
        /// connection's request timeout; past it, an error of kind [`ErrorKind::Timeout`].
        wait fn open_channel_with_timeout(&self, timeout: Option<std::time::Duration>)
            -> Result<Channel, Error> => Channel;
        /// Closes the connection and waits for the close handshake; returns the error that
        /// ended the connection if it had already failed.
        wait fn close(&self) -> Result<(), Error>;
        /// Blocks until the connection is over and returns why (`None` after a close asked
        /// for by this client).
        wait fn closed(&self) -> Option<Error>;
        /// Replaces the connection's secret (e.g. a refreshed OAuth2 token).
        wait fn update_secret(&self, new_secret: &[u8], reason: &str) -> Result<(), Error>;
        /// What the broker said about itself when the connection opened.
        now fn server_properties(&self) -> FieldTable;
        /// The limits agreed with the broker.
        now fn tuning(&self) -> Tuning;
        /// Whether commands can be sent.
        now fn is_open(&self) -> bool;
        /// Whether the broker currently blocks publishing (a resource alarm).
        now fn is_blocked(&self) -> bool;
        /// Where the connection is in its life.
        now fn state(&self) -> State;
        /// Wake-ups and system calls so far (divide by messages moved for the cost per
        /// message).
        now fn io_counters(&self) -> IoCounters;
        /// The connection's counters (frames, bytes, publishes, confirms, deliveries, ...):
        /// see [`amqp_client::Connection::metrics`].
        now fn metrics(&self) -> amqp_client::Metrics;
    }

    /// What happens to the connection: blocked/unblocked, channel flow, warnings, and
    /// finally [`ConnectionEvent::Closed`]. See [`amqp_client::Connection::events`].
    pub fn events(&self) -> Events {
        Events(Mutex::new(self.0.events()), self.1.clone())
    }

    /// The async handle, for code that mixes both styles.
    pub fn as_async(&self) -> &nb::Connection {
        &self.0
    }
}

impl From<nb::Connection> for Connection {
    fn from(conn: nb::Connection) -> Self {
        Connection(conn, Link(None))
    }
}

/// A channel. Cheap to clone; every clone is the same channel. See [`amqp_client::Channel`].
///
/// Declare, bind and publish with properties and headers:
///
/// ```no_run
/// use amqp_blocking::{
///     BasicProperties, BasicPublishOptions, Connection, Decimal, ExchangeDeclareOptions,
///     FieldTable, QueueBindOptions, QueueDeclareOptions,
/// };
///
/// let channel = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f")?.open_channel()?;
/// channel.exchange_declare("prices", "fanout", ExchangeDeclareOptions::default())?;
/// let exclusive = QueueDeclareOptions { exclusive: true, ..Default::default() };
/// let queue = channel.queue_declare("", exclusive)?;
/// channel.queue_bind(&queue.name, "prices", "", QueueBindOptions::default())?;
///
/// let props = BasicProperties::default()
///     .with_content_type("text/plain")
///     .with_headers(FieldTable::new().with("price", Decimal::new(-314, 2)).with("raw", vec![1u8, 2]));
/// let line = String::from("EURUSD -3.14");
/// channel.basic_publish("prices", "", BasicPublishOptions::default(), &props, line.as_bytes())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Channel(nb::Channel, Link);

impl Channel {
    methods! {
        /// Closes the channel and waits for the broker's answer.
        wait fn close(&self) -> Result<(), Error>;
        /// Blocks until the channel is closed and returns why.
        wait fn closed(&self) -> Error;
        /// Asks the broker to pause (`false`) or resume (`true`) deliveries; returns the flow
        /// state it reports.
        wait fn channel_flow(&self, active: bool) -> Result<bool, Error>;
        /// Declares an exchange of `kind` (`direct`, `fanout`, `topic`, `headers`, …).
        wait fn exchange_declare(&self, exchange: &str, kind: &str,
            options: ExchangeDeclareOptions) -> Result<(), Error>;
        /// Deletes an exchange.
        wait fn exchange_delete(&self, exchange: &str, options: ExchangeDeleteOptions)
            -> Result<(), Error>;
        /// Binds exchange `destination` to `source` (a RabbitMQ extension).
        wait fn exchange_bind(&self, destination: &str, source: &str, routing_key: &str,
            options: ExchangeBindOptions) -> Result<(), Error>;
        /// Removes an exchange-to-exchange binding.
        wait fn exchange_unbind(&self, destination: &str, source: &str, routing_key: &str,
            options: ExchangeBindOptions) -> Result<(), Error>;
        /// Declares a queue (an empty name lets the broker choose one).
        wait fn queue_declare(&self, queue: &str, options: QueueDeclareOptions)
            -> Result<QueueInfo, Error>;
        /// Binds a queue to an exchange.
        wait fn queue_bind(&self, queue: &str, exchange: &str, routing_key: &str,
            options: QueueBindOptions) -> Result<(), Error>;
        /// Removes a queue binding.
        wait fn queue_unbind(&self, queue: &str, exchange: &str, routing_key: &str,
            options: QueueUnbindOptions) -> Result<(), Error>;
        /// Removes all ready messages from a queue; returns how many.
        wait fn queue_purge(&self, queue: &str, options: QueuePurgeOptions) -> Result<u32, Error>;
        /// Deletes a queue; returns how many messages went with it.
        wait fn queue_delete(&self, queue: &str, options: QueueDeleteOptions)
            -> Result<u32, Error>;
        /// Limits unacknowledged deliveries (per consumer, or per channel with `global`).
        wait fn basic_qos(&self, prefetch_count: u16, options: BasicQosOptions)
            -> Result<(), Error>;
        /// Starts a consumer (an empty tag lets the broker choose one); iterate the returned
        /// [`Consumer`] for its deliveries.
        wait fn basic_consume(&self, queue: &str, consumer_tag: &str,
            options: BasicConsumeOptions) -> Result<Consumer, Error>
            => Consumer::new;
        /// Cancels a consumer; its iterator yields what had already arrived, then ends.
        wait fn basic_cancel(&self, consumer_tag: &str, options: BasicCancelOptions)
            -> Result<(), Error>;
        /// Fetches one message, if the queue has one.
        wait fn basic_get(&self, queue: &str, options: BasicGetOptions)
            -> Result<Option<Delivery>, Error>;
        /// Asks the broker to redeliver every unacknowledged message of this channel.
        wait fn basic_recover(&self, requeue: bool) -> Result<(), Error>;
        /// Publishes a message. Blocks while the broker blocks the connection, pauses the
        /// channel, or the output queue is above its high-water mark; returns once the message
        /// is queued for sending. In confirm mode, [`PublishConfirm::wait`] then gives the
        /// broker's answer. `body` is any [`IntoBody`]: `Bytes`, `Vec<u8>` or `String` as
        /// they are, borrowed `&[u8]` or `&str` copied once.
        wait fn basic_publish(&self, exchange: &str, routing_key: &str,
            options: BasicPublishOptions, properties: &BasicProperties, body: impl IntoBody)
            -> Result<PublishConfirm, Error> => PublishConfirm::new;
        /// Turns on publisher confirms for this channel.
        wait fn confirm_select(&self, options: ConfirmSelectOptions) -> Result<(), Error>;
        /// Blocks until every publish so far is confirmed: `true` if all were acked, `false`
        /// if any was nacked since the last call; fails if a confirm was lost.
        wait fn wait_for_confirms(&self) -> Result<bool, Error>;
        /// Blocks until at most `max_outstanding` publishes await their confirm, waking once
        /// per batch of arrived confirms rather than per confirm; then collect them with
        /// [`PublishConfirm::try_wait`]. See [`amqp_client::Channel::wait_confirm_window`].
        wait fn wait_confirm_window(&self, max_outstanding: usize) -> Result<(), Error>;
        /// How many publishes of this channel await their confirm.
        now fn confirms_outstanding(&self) -> usize;
        /// Starts transaction mode on this channel.
        wait fn tx_select(&self) -> Result<(), Error>;
        /// Commits the current transaction.
        wait fn tx_commit(&self) -> Result<(), Error>;
        /// Abandons the current transaction.
        wait fn tx_rollback(&self) -> Result<(), Error>;
        /// The channel number.
        now fn id(&self) -> ChannelId;
        /// Whether the channel can be used.
        now fn is_open(&self) -> bool;
        /// Sets the time allowed for each request's reply on this channel (`None`: no limit);
        /// see [`amqp_client::Channel::set_request_timeout`].
        now fn set_request_timeout(&self, timeout: Option<Duration>) -> Result<(), Error>;
        /// The time allowed for each request's reply on this channel (`None`: no limit).
        now fn request_timeout(&self) -> Option<Duration>;
        /// Acknowledges a delivery (and every earlier one with `multiple`). Never blocks.
        now fn basic_ack(&self, delivery_tag: DeliveryTag, multiple: bool) -> Result<(), Error>;
        /// Rejects deliveries, optionally requeueing them (a RabbitMQ extension).
        now fn basic_nack(&self, delivery_tag: DeliveryTag, multiple: bool, requeue: bool)
            -> Result<(), Error>;
        /// Rejects one delivery, optionally requeueing it.
        now fn basic_reject(&self, delivery_tag: DeliveryTag, requeue: bool)
            -> Result<(), Error>;
        /// Like [`Channel::basic_recover`] without waiting for an answer.
        now fn basic_recover_async(&self, requeue: bool) -> Result<(), Error>;
    }

    /// The connection this channel belongs to.
    pub fn connection(&self) -> Connection {
        Connection(self.0.connection(), self.1.clone())
    }

    /// The mandatory messages the broker returns on this channel outside confirm mode. See
    /// [`amqp_client::Channel::on_return`].
    pub fn on_return(&self) -> Returns {
        Returns(Mutex::new(self.0.on_return()), self.1.clone())
    }

    /// The async handle, for code that mixes both styles.
    pub fn as_async(&self) -> &nb::Channel {
        &self.0
    }
}

impl From<nb::Channel> for Channel {
    fn from(channel: nb::Channel) -> Self {
        Channel(channel, Link(None))
    }
}

/// The broker's answer to one publish, to [`wait`](Self::wait) for.
///
/// A `mandatory` message that no queue took is still acked; the returned message rides on
/// the confirm:
///
/// ```no_run
/// use std::time::Duration;
/// use amqp_blocking::{BasicProperties, BasicPublishOptions, ConfirmSelectOptions, Connection};
///
/// let channel = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f")?.open_channel()?;
/// channel.confirm_select(ConfirmSelectOptions::default())?;
/// let mandatory = BasicPublishOptions { mandatory: true, ..Default::default() };
/// let mut confirm =
///     channel.basic_publish("", "no-such-queue", mandatory, &BasicProperties::default(), "x")?;
/// match confirm.wait_timeout(Duration::from_secs(5)) {
///     None => println!("no answer within 5 s (ask again, or wait())"),
///     Some(outcome) => match outcome.returned() {
///         Some(returned) => println!("returned: {} (acked: {})", returned.reply_text, outcome.is_ack()),
///         None => println!("routed; acked: {}", outcome.is_ack()),
///     },
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct PublishConfirm {
    pending: nb::PublishConfirm,
    tag: Option<DeliveryTag>,
    outcome: Option<Confirmation>,
    link: Link,
}

impl PublishConfirm {
    fn new(pending: nb::PublishConfirm, link: Link) -> Self {
        let tag = pending.delivery_tag();
        PublishConfirm {
            pending,
            tag,
            outcome: None,
            link,
        }
    }

    /// Blocks until the broker answers ([`Confirmation::NotRequested`] at once outside
    /// confirm mode).
    pub fn wait(self) -> Confirmation {
        match self.outcome {
            Some(outcome) => outcome,
            None => self.link.block_on(self.pending),
        }
    }

    /// Blocks until the broker answers or `timeout` passes (`None`). Can be called again.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Confirmation> {
        if self.outcome.is_none() {
            self.outcome = self.link.block_on_timeout(&mut self.pending, timeout);
        }
        self.outcome.clone()
    }

    /// The broker's answer if it has arrived, without blocking; otherwise the still pending
    /// confirm back.
    pub fn try_wait(self) -> Result<Confirmation, Self> {
        if let Some(outcome) = self.outcome {
            return Ok(outcome);
        }
        let (tag, link) = (self.tag, self.link);
        nb::PublishConfirm::try_resolve(self.pending).map_err(|pending| PublishConfirm {
            pending,
            tag,
            outcome: None,
            link,
        })
    }

    /// The publish's delivery tag in confirm mode.
    pub fn delivery_tag(&self) -> Option<DeliveryTag> {
        self.tag
    }

    /// Whether a confirm was requested (the channel is in confirm mode).
    pub fn is_requested(&self) -> bool {
        self.tag.is_some()
    }
}

/// The deliveries of one consumer: an iterator of `Result<Delivery, Error>` that blocks for
/// the next one, or [`recv`](Self::recv) / [`recv_timeout`](Self::recv_timeout) through a
/// shared reference (a struct field, an `Arc`). One receive at a time: a receive called while
/// another thread's is blocked waits for that one to return first. See
/// [`amqp_client::Consumer`] for when it ends; dropping it cancels the consumer.
///
/// ```no_run
/// use std::time::Duration;
/// use amqp_blocking::{BasicConsumeOptions, Connection, ErrorKind, FieldTable};
///
/// let channel = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f")?.open_channel()?;
/// let consumer =
///     channel.basic_consume("orders", "", BasicConsumeOptions::default())?;
/// // Bounded waits through `&self` ...
/// while let Some(delivery) = consumer.recv_timeout(Duration::from_secs(1))? {
///     match delivery.body.first() {
///         Some(b'{') => delivery.ack()?,
///         Some(_) => delivery.nack(true)?,     // requeue
///         None => delivery.reject(false)?, // drop (or dead-letter)
///     }
/// }
/// // ... or a plain iterator that ends with the consumer, after one Err if the channel closed.
/// for delivery in consumer {
///     match delivery {
///         Ok(delivery) => delivery.ack()?,
///         Err(e) if e.kind() == ErrorKind::NotFound => eprintln!("the queue is gone: {e}"),
///         Err(e) => return Err(e.into()),
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Consumer {
    inner: Mutex<nb::Consumer>,
    tag: ConsumerTag,
    channel: Channel,
    /// Copied out of `inner` when the stream ends, so it can be lent without the lock.
    end: OnceLock<ConsumerEnd>,
}

impl Consumer {
    fn new(inner: nb::Consumer, link: Link) -> Self {
        Consumer {
            tag: inner.tag().clone(),
            channel: Channel(inner.channel().clone(), link),
            inner: Mutex::new(inner),
            end: OnceLock::new(),
        }
    }

    /// Waits for the next item, up to `timeout`; `None` when the time ran out.
    fn next_within(&self, timeout: Option<Duration>) -> Option<Option<Result<Delivery, Error>>> {
        let mut inner = lock(&self.inner);
        let item = match timeout {
            Some(t) => self.channel.1.block_on_timeout(inner.next(), t),
            None => Some(self.channel.1.block_on(inner.next())),
        };
        if let Some(end) = inner.end_reason() {
            let _ = self.end.set(end.clone());
        }
        item
    }

    /// Waits at most `timeout` for the next delivery: `Ok(None)` when none came in time.
    /// Fails with the reason when the channel or connection closed, and with
    /// [`Error::Usage`] once the consumer has ended ([`Consumer::end_reason`] says why).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Delivery>, Error> {
        match self.next_within(Some(timeout)) {
            None => Ok(None),
            Some(Some(delivery)) => delivery.map(Some),
            Some(None) => Err(Error::Usage(nb::Misuse::ConsumerEnded)),
        }
    }

    /// Blocks for the next delivery; `None` once the consumer has ended. The same as
    /// [`Iterator::next`], through a shared reference.
    pub fn recv(&self) -> Option<Result<Delivery, Error>> {
        self.next_within(None).flatten()
    }

    /// Cancels the consumer; the iterator yields what had already arrived, then ends.
    pub fn cancel(&self) -> Result<(), Error> {
        // Not under the lock: a thread blocked in `recv` holds it until a delivery or the end.
        self.channel.1.block_on(
            self.channel
                .0
                .basic_cancel(&self.tag, BasicCancelOptions::default()),
        )
    }

    /// The consumer tag.
    pub fn tag(&self) -> &ConsumerTag {
        &self.tag
    }

    /// The channel it consumes on.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Why the consumer ended, once it has.
    pub fn end_reason(&self) -> Option<&ConsumerEnd> {
        self.end.get()
    }
}

impl Iterator for Consumer {
    type Item = Result<Delivery, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.recv()
    }
}

/// What happens to a connection, as an iterator that blocks for the next event and ends
/// after [`ConnectionEvent::Closed`]. See [`Connection::events`].
#[derive(Debug)]
pub struct Events(Mutex<nb::Events>, Link);

impl Events {
    /// An event already queued, without waiting.
    pub fn try_next(&self) -> Option<ConnectionEvent> {
        lock(&self.0).try_next()
    }

    /// Waits at most `timeout` for the next event (`None`: none came, or the stream ended).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<ConnectionEvent> {
        self.1
            .block_on_timeout(lock(&self.0).next(), timeout)
            .flatten()
    }
}

impl Iterator for Events {
    type Item = ConnectionEvent;

    fn next(&mut self) -> Option<ConnectionEvent> {
        self.1.block_on(lock(&self.0).next())
    }
}

/// Returned mandatory messages, as an iterator that blocks for the next one and ends when
/// the channel closes. See [`Channel::on_return`].
#[derive(Debug)]
pub struct Returns(Mutex<nb::Returns>, Link);

impl Returns {
    /// Waits at most `timeout` for the next returned message (`None`: none came, or the
    /// channel closed).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<ReturnedMessage> {
        self.1
            .block_on_timeout(lock(&self.0).next(), timeout)
            .flatten()
    }
}

impl Iterator for Returns {
    type Item = ReturnedMessage;

    fn next(&mut self) -> Option<ReturnedMessage> {
        self.1.block_on(lock(&self.0).next())
    }
}

/// Locks, shrugging off poisoning: a panic elsewhere leaves the stream itself consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
