//! The connection handle, the handshake future and the connection event stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use amqp_proto as proto;
use futures_core::Stream;
use proto::uri::AmqpUri;
use proto::{ChannelId, ConnectionConfig, Error, FieldTable, Misuse, Tuning};

use crate::channel::Channel;
use crate::driver::Driver;
use crate::handle::{ConnHandle, WaitReply, recovered, recovered_within, start_request};
use crate::io::{Timer, Transport};
use crate::shared::{ConnectionEvent, IoCounters, ReqKind, Shared, SharedRef, Subscriber};
use crate::util::{lock, register};

/// A connection to a broker. Cheap to clone; every clone is the same connection.
///
/// The connection closes (politely, with `connection.close`) when the last handle to it goes:
/// every `Connection` clone, and every [`Channel`], [`crate::Consumer`], [`crate::Delivery`]
/// and pending [`crate::PublishConfirm`], since each of those keeps it alive.
#[derive(Debug, Clone)]
pub struct Connection {
    pub(crate) handle: Arc<ConnHandle>,
}

impl Channel {
    /// The connection this channel belongs to.
    pub fn connection(&self) -> Connection {
        Connection {
            handle: self.inner.conn.clone(),
        }
    }
}

impl Connection {
    fn shared(&self) -> &Mutex<Shared> {
        &self.handle.shared
    }

    /// Opens a channel on the lowest free number.
    pub async fn open_channel(&self) -> Result<Channel, Error> {
        let timeout = lock(self.shared()).core.request_timeout(ChannelId(0));
        self.open_channel_with_timeout(timeout).await
    }

    /// [`open_channel`](Self::open_channel) with its own bound (`None`: no limit) instead of
    /// the connection's [`request_timeout`](crate::ConnectionConfig::request_timeout): on
    /// the wait for a recovery under way, then on the broker's `channel.open-ok`. Past it the
    /// call fails with an error of kind [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    /// The channel's later requests start with the connection's default
    /// ([`Channel::set_request_timeout`] changes that).
    pub async fn open_channel_with_timeout(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Channel, Error> {
        let mut opened = None;
        recovered_within(self.shared(), timeout).await?;
        let id = start_request(self.shared(), |s| {
            let (ch, id) = s.core.open_channel_with_timeout(timeout)?;
            let key = s.add_channel(ch);
            opened = Some((ch, key));
            Ok((id, ReqKind::OpenChannel { key }))
        })?;
        let Some((ch, key)) = opened else {
            return Err(Error::Usage(Misuse::NoSuchChannel));
        };
        match WaitReply::new(self.shared(), id).await {
            Ok(_) => Ok(Channel::new(self.handle.clone(), ch, key)),
            Err(e) => {
                lock(self.shared()).remove_channel(key);
                Err(e)
            }
        }
    }

    /// A stream of what happens to the connection: blocked/unblocked, channel flow, warnings,
    /// and finally [`ConnectionEvent::Closed`], after which it ends. Subscribing after the
    /// close yields the close at once. The stream does not keep the connection open.
    pub fn events(&self) -> Events {
        let mut s = lock(self.shared());
        let key = s.next_key();
        let mut sub = Subscriber::default();
        if let Some(closed) = &s.closed {
            sub.items.push_back(ConnectionEvent::Closed(closed.clone()));
        }
        s.subscribers.insert(key, sub);
        Events {
            shared: self.handle.shared.clone(),
            key,
            done: false,
        }
    }

    /// Closes the connection and waits for the close handshake to finish. Everything pending
    /// fails at once with the close reason. Returns the error that ended the connection if it
    /// had already failed (or fails during the handshake).
    pub async fn close(&self) -> Result<(), Error> {
        {
            let mut s = lock(self.shared());
            if !s.core.is_closed() {
                let _ = {
                    let now = s.now();
                    s.core.close(now, "closed by client")
                };
            }
            s.after_command();
        }
        std::future::poll_fn(|cx| {
            let mut s = lock(self.shared());
            match &s.closed {
                Some(None) => Poll::Ready(Ok(())),
                Some(Some(e)) => Poll::Ready(Err(e.clone())),
                None => {
                    register(&mut s.state_waiters, cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Waits until the connection is over, and returns why (`None` after a close asked for
    /// by this client).
    pub async fn closed(&self) -> Option<Error> {
        std::future::poll_fn(|cx| {
            let mut s = lock(self.shared());
            match &s.closed {
                Some(reason) => Poll::Ready(reason.clone()),
                None => {
                    register(&mut s.state_waiters, cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Replaces the connection's secret (`connection.update-secret`), e.g. a refreshed OAuth2
    /// token, without reconnecting. The secret is sent as is and never logged.
    ///
    /// Returns `Ok(())` once the broker answers `update-secret-ok`. A broker that refuses
    /// closes the connection (RabbitMQ: 530 `NOT_ALLOWED`, [`amqp_proto::ErrorKind::NotAllowed`])
    /// and this fails with that reason. What "accepted" means is up to the broker's auth
    /// backend: RabbitMQ 3.10's internal (username/password) backend has no expiring state,
    /// so it answers `update-secret-ok` without checking the new secret; backends whose
    /// credentials expire (OAuth 2.0) validate it.
    pub async fn update_secret(&self, new_secret: &[u8], reason: &str) -> Result<(), Error> {
        tracing::debug!(reason, "amqp: updating the connection secret");
        recovered(self.shared(), None).await?;
        let id = start_request(self.shared(), |s| {
            Ok((s.core.update_secret(new_secret, reason)?, ReqKind::Plain))
        })?;
        WaitReply::new(self.shared(), id).await.map(|_| ())
    }

    /// What the broker said about itself when the connection opened.
    pub fn server_properties(&self) -> FieldTable {
        lock(self.shared()).core.server_properties().clone()
    }

    /// The limits agreed with the broker.
    pub fn tuning(&self) -> Tuning {
        lock(self.shared()).core.tuning()
    }

    /// Wake-ups and system calls of this connection so far ([`IoCounters`]): read them before
    /// and after a run and divide by the messages moved for the cost per message.
    pub fn io_counters(&self) -> IoCounters {
        lock(self.shared()).counters
    }

    /// Whether commands can be sent.
    pub fn is_open(&self) -> bool {
        lock(self.shared()).core.is_open()
    }

    /// The connection's counters, read from the core: frames and bytes in and out,
    /// publishes, confirms (acked, nacked, lost), returns, deliveries, acks/nacks/rejects
    /// sent, consumers and channels open, time blocked, heartbeats missed, recoveries. See
    /// [`Metrics`](proto::Metrics). With the `metrics` feature the same figures also go to the
    /// `metrics` crate's recorder, at most once a second.
    ///
    /// ```no_run
    /// # async fn f(conn: amqp_client::Connection) {
    /// let m = conn.metrics();
    /// println!("{} publishes, {} confirmed", m.publishes, m.confirms_acked);
    /// # }
    /// ```
    pub fn metrics(&self) -> proto::Metrics {
        let s = lock(self.shared());
        s.core.metrics(s.now())
    }

    /// Whether the broker currently blocks publishing (a resource alarm).
    pub fn is_blocked(&self) -> bool {
        lock(self.shared()).core.is_blocked()
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> proto::State {
        lock(self.shared()).core.state()
    }
}

/// Starts a connection over an already connected transport: returns the future that
/// finishes the handshake and the [`Driver`] the runtime must spawn. For runtime adapters
/// (`amqp-tokio` and friends); applications use their `connect`.
///
/// `started` is when the transport connected: the core's `handshake_timeout` runs from
/// there (the dial has `connection_timeout` of its own).
pub fn start_connection<T: Transport, R: Timer>(
    config: ConnectionConfig,
    started: Instant,
    transport: T,
    timer: R,
) -> (Connecting, Driver<T, R>) {
    // Inside `connect_with_*` the current span is the connection's (with its endpoint).
    let span = match tracing::Span::current() {
        s if s.metadata().is_some_and(|m| m.name() == CONNECTION_SPAN) => s,
        _ => connection_span(&config, None),
    };
    #[cfg(feature = "metrics")]
    let exporter =
        crate::metrics_export::Exporter::new(config.connection_name.as_deref().unwrap_or_default());
    let high_water_mark = config.high_water_mark;
    let core = proto::Connection::new(config, started);
    let timer = Arc::new(timer);
    let shared = Arc::new(Mutex::new(Shared::new(
        core,
        high_water_mark,
        timer.clone(),
        span.clone(),
    )));
    #[cfg(feature = "metrics")]
    {
        lock(&shared).exporter = Some(exporter);
    }
    let driver = Driver::new(shared.clone(), transport, timer, span);
    let connecting = Connecting {
        handle: Some(Arc::new(ConnHandle { shared })),
    };
    (connecting, driver)
}

const CONNECTION_SPAN: &str = "amqp.connection";

/// The `amqp.connection` span: the `connection_name` client property, the endpoint
/// (`host:port`, no credentials) and the virtual host.
pub(crate) fn connection_span(
    config: &ConnectionConfig,
    endpoint: Option<&AmqpUri>,
) -> tracing::Span {
    tracing::info_span!(
        "amqp.connection",
        name = config.connection_name.as_deref().unwrap_or(""),
        endpoint = %endpoint.map(|u| format!("{}:{}", u.host, u.port)).unwrap_or_default(),
        vhost = %config.vhost,
    )
}

/// Resolves when the handshake finished ([`proto::Event::Connected`]) or failed (wrong
/// credentials, vhost refused, timeout, broken transport). Dropping it abandons the
/// connection.
#[derive(Debug)]
#[must_use = "the connection is abandoned when this is dropped"]
pub struct Connecting {
    handle: Option<Arc<ConnHandle>>,
}

impl Future for Connecting {
    type Output = Result<Connection, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(handle) = self.handle.as_ref() else {
            return Poll::Ready(Err(Error::Usage(Misuse::PolledAfterCompletion)));
        };
        let ready = {
            let mut s = lock(&handle.shared);
            if s.connected && s.closed.is_none() {
                Some(Ok(()))
            } else if let Some(closed) = &s.closed {
                Some(Err(match closed {
                    Some(e) => e.clone(),
                    None => s
                        .close_error
                        .clone()
                        .unwrap_or(Error::Usage(Misuse::ConnectionNotOpen)),
                }))
            } else {
                register(&mut s.state_waiters, cx.waker());
                None
            }
        };
        match ready {
            None => Poll::Pending,
            Some(Ok(())) => Poll::Ready(Ok(Connection {
                handle: self.handle.take().expect("checked above"),
            })),
            Some(Err(e)) => {
                self.handle = None;
                Poll::Ready(Err(e))
            }
        }
    }
}

/// The stream returned by [`Connection::events`].
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Events {
    shared: SharedRef,
    key: u64,
    done: bool,
}

impl Stream for Events {
    type Item = ConnectionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut s = lock(&self.shared);
        let Some(sub) = s.subscribers.get_mut(&self.key) else {
            drop(s);
            self.done = true;
            return Poll::Ready(None);
        };
        match sub.items.pop_front() {
            Some(event) => {
                let last = matches!(event, ConnectionEvent::Closed(_));
                if last {
                    s.subscribers.remove(&self.key);
                    drop(s);
                    self.done = true;
                }
                Poll::Ready(Some(event))
            }
            None => {
                crate::util::set_waker(&mut sub.waker, cx.waker());
                Poll::Pending
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.shared).subscribers.remove(&self.key);
        }
    }
}

impl Events {
    /// Events already queued, without waiting (for polling loops).
    pub fn try_next(&mut self) -> Option<ConnectionEvent> {
        if self.done {
            return None;
        }
        let mut s = lock(&self.shared);
        let event = s.subscribers.get_mut(&self.key)?.items.pop_front()?;
        if matches!(event, ConnectionEvent::Closed(_)) {
            s.subscribers.remove(&self.key);
            self.done = true;
        }
        Some(event)
    }
}
