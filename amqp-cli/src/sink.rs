//! A minimal in-process broker on loopback for `amqp perf --sink`: it accepts any login,
//! opens channels, declares queues, confirms every publish and delivers it to a consumer,
//! with nothing persisted and no limits of its own, so a run against it measures the
//! client's own ceiling. Written with the core's codec (`FrameDecoder`, `Transmit`).
//!
//! It runs on one dedicated thread (a current-thread tokio runtime), so the CPU time it used
//! can be told apart from the client's ([`SinkHandle::stop`] returns it).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqp_proto::frame::decode_protocol_header;
use amqp_proto::{
    BasicAck, BasicCancelOk, BasicConsumeOk, BasicDeliver, BasicGetEmpty, BasicGetOk,
    BasicProperties, BasicPublish, BasicQosOk, BasicReturn, ChannelCloseOk, ChannelOpenOk,
    ConfirmSelectOk, ConnectionCloseOk, ConnectionOpenOk, ConnectionStart, ConnectionTune,
    ExchangeBindOk, ExchangeDeclareOk, ExchangeDeleteOk, ExchangeUnbindOk, FieldTable, Frame,
    FrameDecoder, LongString, Method, QueueBindOk, QueueDeclareOk, QueueDeleteOk, QueuePurgeOk,
    QueueUnbindOk, ShortString, Transmit,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const FRAME_MAX: u32 = 131_072;
/// Deliveries written per turn before the connection reads again (keeps acks flowing).
const DELIVERY_BATCH: usize = 512;
/// Messages queued (all queues) above which publishing connections stop being read, and
/// below which they are read again: RabbitMQ's credit flow in miniature, so that publishers
/// cannot outrun consumers without bound and a run measures the whole loop.
const BACKLOG_HIGH: usize = 20_000;
const BACKLOG_LOW: usize = 10_000;

/// A running sink; [`SinkHandle::stop`] ends it.
#[derive(Debug)]
pub struct SinkHandle {
    /// Where it listens (127.0.0.1, an ephemeral port).
    pub addr: SocketAddr,
    stop: Arc<Notify>,
    thread: std::thread::JoinHandle<Option<Duration>>,
}

impl SinkHandle {
    /// Stops the sink; returns the CPU time its thread used, where the OS tells (Linux).
    pub fn stop(self) -> Option<Duration> {
        self.stop.notify_one();
        self.thread.join().ok().flatten()
    }
}

/// Starts a sink on 127.0.0.1 with an ephemeral port.
pub fn start() -> io::Result<SinkHandle> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(Notify::new());
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("amqp-sink".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("sink runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("sink listener");
                let broker = Arc::new(Broker::default());
                loop {
                    tokio::select! {
                        _ = stop2.notified() => break,
                        accepted = listener.accept() => {
                            if let Ok((socket, _)) = accepted {
                                let _ = socket.set_nodelay(true);
                                tokio::spawn(serve(socket, broker.clone()));
                            }
                        }
                    }
                }
            });
            drop(rt);
            thread_cpu_time()
        })?;
    Ok(SinkHandle { addr, stop, thread })
}

/// CPU time (user + system) of the calling thread, from `/proc/thread-self/stat`.
pub fn thread_cpu_time() -> Option<Duration> {
    proc_cpu_time("/proc/thread-self/stat")
}

/// CPU time (user + system) of the whole process, from `/proc/self/stat`.
pub fn process_cpu_time() -> Option<Duration> {
    proc_cpu_time("/proc/self/stat")
}

fn proc_cpu_time(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th
    // fields of the line, in clock ticks (100 per second on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

#[derive(Debug, Clone)]
struct Message {
    exchange: ShortString,
    routing_key: ShortString,
    properties: BasicProperties,
    body: Bytes,
}

/// Queues and bindings, shared by every connection of the sink.
#[derive(Debug, Default)]
struct Broker {
    state: Mutex<BrokerState>,
    /// Wakes consumer connections when a message is queued.
    published: Notify,
    /// Wakes throttled publishers when the backlog falls below [`BACKLOG_LOW`].
    drained: Notify,
}

#[derive(Debug, Default)]
struct BrokerState {
    queues: HashMap<String, VecDeque<Message>>,
    /// Messages in all queues.
    backlog: usize,
    /// (exchange, routing key) -> queues.
    bindings: HashMap<(String, String), Vec<String>>,
    next_name: u64,
}

impl BrokerState {
    fn route(&mut self, exchange: &str, routing_key: &str, message: Message) -> bool {
        if exchange.is_empty() {
            return match self.queues.get_mut(routing_key) {
                Some(q) => {
                    q.push_back(message);
                    self.backlog += 1;
                    true
                }
                None => false,
            };
        }
        let Some(targets) = self
            .bindings
            .get(&(exchange.to_owned(), routing_key.to_owned()))
        else {
            return false;
        };
        let mut routed = false;
        for name in targets {
            if let Some(q) = self.queues.get_mut(name) {
                q.push_back(message.clone());
                self.backlog += 1;
                routed = true;
            }
        }
        routed
    }
}

#[derive(Debug, Default)]
struct ChannelState {
    confirms: bool,
    published: u64,
    prefetch: u16,
    next_delivery: u64,
    unacked: BTreeSet<u64>,
    /// (consumer tag, queue, no_ack)
    consumers: Vec<(ShortString, String, bool)>,
    incoming: Option<Incoming>,
}

#[derive(Debug)]
struct Incoming {
    publish: BasicPublish,
    properties: BasicProperties,
    size: u64,
    body: BytesMut,
}

struct Session {
    broker: Arc<Broker>,
    out: Transmit,
    channels: HashMap<u16, ChannelState>,
    closing: bool,
    /// This connection has published: it is throttled while the backlog is high.
    publisher: bool,
}

async fn serve(mut socket: TcpStream, broker: Arc<Broker>) {
    let mut session = Session {
        broker,
        out: Transmit::default(),
        channels: HashMap::new(),
        closing: false,
        publisher: false,
    };
    let mut input = BytesMut::with_capacity(256 * 1024);
    let mut decoder = FrameDecoder::new(FRAME_MAX);
    // Protocol header first.
    loop {
        match decode_protocol_header(&mut input) {
            Ok(true) => break,
            Ok(false) => {}
            Err(_) => return,
        }
        match socket.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    session.send(0, start_method());
    let broker = session.broker.clone();
    loop {
        let notified = broker.published.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let drained = broker.drained.notified();
        tokio::pin!(drained);
        drained.as_mut().enable();
        let delivered_all = session.deliver();
        let throttled =
            session.publisher && broker.state.lock().expect("sink state").backlog >= BACKLOG_HIGH;
        if flush(&mut socket, &mut session.out).await.is_err() || session.closing {
            return;
        }
        tokio::select! {
            read = socket.read_buf(&mut input), if !throttled => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => loop {
                    match decoder.decode(&mut input) {
                        Ok(Some(frame)) => session.handle(frame),
                        Ok(None) => break,
                        Err(_) => return,
                    }
                },
            },
            _ = &mut notified, if delivered_all => {}
            _ = &mut drained, if throttled => {}
            // More deliveries were waiting than one batch: go round again.
            _ = std::future::ready(()), if !delivered_all => {}
        }
    }
}

async fn flush(socket: &mut TcpStream, out: &mut Transmit) -> io::Result<()> {
    while let Some(chunk) = out.pop_chunk() {
        socket.write_all(&chunk).await?;
    }
    Ok(())
}

fn start_method() -> ConnectionStart {
    let caps = FieldTable::new()
        .with("publisher_confirms", true)
        .with("basic.nack", true)
        .with("consumer_cancel_notify", true)
        .with("connection.blocked", true)
        .with("per_consumer_qos", true);
    ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: FieldTable::new()
            .with("product", "amqp perf sink")
            .with("capabilities", caps),
        mechanisms: LongString::from("PLAIN AMQPLAIN"),
        locales: LongString::from("en_US"),
    }
}

fn short(s: &str) -> ShortString {
    ShortString::try_from(s).unwrap_or_else(|_| ShortString::empty())
}

impl Session {
    fn send(&mut self, channel: u16, method: impl Into<Method>) {
        let _ = self.out.push_frame(&Frame::Method(channel, method.into()));
    }

    fn send_content(&mut self, channel: u16, method: Method, message: &Message) {
        let _ = self.out.push_content(
            channel,
            &method,
            &message.properties,
            &message.body,
            FRAME_MAX,
        );
    }

    fn handle(&mut self, frame: Frame) {
        match frame {
            Frame::Method(ch, method) => self.method(ch, method),
            Frame::Header(ch, header) => {
                if let Some(incoming) = self.channels.get_mut(&ch).and_then(|c| c.incoming.as_mut())
                {
                    incoming.properties = header.properties;
                    incoming.size = header.body_size;
                    incoming
                        .body
                        .reserve(header.body_size.min(1 << 20) as usize);
                }
                self.maybe_complete(ch);
            }
            Frame::Body(ch, bytes) => {
                if let Some(incoming) = self.channels.get_mut(&ch).and_then(|c| c.incoming.as_mut())
                {
                    incoming.body.extend_from_slice(&bytes);
                }
                self.maybe_complete(ch);
            }
            Frame::Heartbeat => {}
        }
    }

    fn maybe_complete(&mut self, ch: u16) {
        let Some(state) = self.channels.get_mut(&ch) else {
            return;
        };
        let done = matches!(&state.incoming, Some(i) if i.body.len() as u64 >= i.size);
        if !done {
            return;
        }
        let Some(incoming) = state.incoming.take() else {
            return;
        };
        state.published += 1;
        let tag = state.published;
        self.publisher = true;
        let confirms = state.confirms;
        let message = Message {
            exchange: incoming.publish.exchange.clone(),
            routing_key: incoming.publish.routing_key.clone(),
            properties: incoming.properties,
            body: incoming.body.freeze(),
        };
        let routed = {
            let mut broker = self.broker.state.lock().expect("sink state");
            broker.route(
                incoming.publish.exchange.as_str(),
                incoming.publish.routing_key.as_str(),
                message.clone(),
            )
        };
        if routed {
            self.broker.published.notify_waiters();
        } else if incoming.publish.mandatory {
            let ret = BasicReturn {
                reply_code: 312,
                reply_text: short("NO_ROUTE"),
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
            };
            self.send_content(ch, ret.into(), &message);
        }
        if confirms {
            self.send(
                ch,
                BasicAck {
                    delivery_tag: tag,
                    multiple: false,
                },
            );
        }
    }

    fn method(&mut self, ch: u16, method: Method) {
        match method {
            Method::ConnectionStartOk(_) => self.send(
                0,
                ConnectionTune {
                    channel_max: 2047,
                    frame_max: FRAME_MAX,
                    heartbeat: 0,
                },
            ),
            Method::ConnectionOpen(_) => self.send(0, ConnectionOpenOk::default()),
            Method::ConnectionClose(_) => {
                self.send(0, ConnectionCloseOk {});
                self.closing = true;
            }
            Method::ChannelOpen(_) => {
                self.channels.insert(ch, ChannelState::default());
                self.send(ch, ChannelOpenOk::default());
            }
            Method::ChannelClose(_) => {
                self.channels.remove(&ch);
                self.send(ch, ChannelCloseOk {});
            }
            Method::ConfirmSelect(m) => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.confirms = true;
                }
                if !m.nowait {
                    self.send(ch, ConfirmSelectOk {});
                }
            }
            Method::ExchangeDeclare(m) if !m.no_wait => self.send(ch, ExchangeDeclareOk {}),
            Method::ExchangeDelete(m) if !m.no_wait => self.send(ch, ExchangeDeleteOk {}),
            Method::ExchangeBind(m) if !m.no_wait => self.send(ch, ExchangeBindOk {}),
            Method::ExchangeUnbind(m) if !m.no_wait => self.send(ch, ExchangeUnbindOk {}),
            Method::QueueDeclare(m) => {
                let mut broker = self.broker.state.lock().expect("sink state");
                let name = if m.queue.as_str().is_empty() {
                    broker.next_name += 1;
                    format!("amq.gen-sink-{}", broker.next_name)
                } else {
                    m.queue.as_str().to_owned()
                };
                let count = broker.queues.entry(name.clone()).or_default().len();
                drop(broker);
                if !m.no_wait {
                    self.send(
                        ch,
                        QueueDeclareOk {
                            queue: short(&name),
                            message_count: count as u32,
                            consumer_count: 0,
                        },
                    );
                }
            }
            Method::QueueBind(m) => {
                let mut broker = self.broker.state.lock().expect("sink state");
                let key = (
                    m.exchange.as_str().to_owned(),
                    m.routing_key.as_str().to_owned(),
                );
                let targets = broker.bindings.entry(key).or_default();
                if !targets.iter().any(|q| q == m.queue.as_str()) {
                    targets.push(m.queue.as_str().to_owned());
                }
                drop(broker);
                if !m.no_wait {
                    self.send(ch, QueueBindOk {});
                }
            }
            Method::QueueUnbind(m) => {
                let mut broker = self.broker.state.lock().expect("sink state");
                let key = (
                    m.exchange.as_str().to_owned(),
                    m.routing_key.as_str().to_owned(),
                );
                if let Some(targets) = broker.bindings.get_mut(&key) {
                    targets.retain(|q| q != m.queue.as_str());
                }
                drop(broker);
                self.send(ch, QueueUnbindOk {});
            }
            Method::QueuePurge(m) => {
                let mut broker = self.broker.state.lock().expect("sink state");
                let n = broker
                    .queues
                    .get_mut(m.queue.as_str())
                    .map_or(0, |q| std::mem::take(q).len());
                broker.backlog -= n;
                drop(broker);
                if !m.no_wait {
                    self.send(
                        ch,
                        QueuePurgeOk {
                            message_count: n as u32,
                        },
                    );
                }
            }
            Method::QueueDelete(m) => {
                let mut broker = self.broker.state.lock().expect("sink state");
                let n = broker
                    .queues
                    .remove(m.queue.as_str())
                    .map_or(0, |q| q.len());
                broker.backlog -= n;
                drop(broker);
                if !m.no_wait {
                    self.send(
                        ch,
                        QueueDeleteOk {
                            message_count: n as u32,
                        },
                    );
                }
            }
            Method::BasicQos(m) => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.prefetch = m.prefetch_count;
                }
                self.send(ch, BasicQosOk {});
            }
            Method::BasicConsume(m) => {
                let tag = if m.consumer_tag.as_str().is_empty() {
                    short(&format!("amq.ctag-sink-{ch}"))
                } else {
                    m.consumer_tag.clone()
                };
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.consumers
                        .push((tag.clone(), m.queue.as_str().to_owned(), m.no_ack));
                }
                if !m.no_wait {
                    self.send(ch, BasicConsumeOk { consumer_tag: tag });
                }
            }
            Method::BasicCancel(m) => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.consumers.retain(|(t, _, _)| *t != m.consumer_tag);
                }
                if !m.no_wait {
                    self.send(
                        ch,
                        BasicCancelOk {
                            consumer_tag: m.consumer_tag,
                        },
                    );
                }
            }
            Method::BasicPublish(publish) => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.incoming = Some(Incoming {
                        publish,
                        properties: BasicProperties::default(),
                        size: u64::MAX,
                        body: BytesMut::new(),
                    });
                }
            }
            Method::BasicGet(m) => self.get(ch, m.queue.as_str(), m.no_ack),
            Method::BasicAck(m) => self.settle(ch, m.delivery_tag, m.multiple),
            Method::BasicNack(m) => self.settle(ch, m.delivery_tag, m.multiple),
            Method::BasicReject(m) => self.settle(ch, m.delivery_tag, false),
            _ => {}
        }
    }

    fn get(&mut self, ch: u16, queue: &str, no_ack: bool) {
        let message = {
            let mut broker = self.broker.state.lock().expect("sink state");
            let popped = broker.queues.get_mut(queue).map(|q| {
                let m = q.pop_front();
                (m, q.len())
            });
            if let Some((Some(_), _)) = &popped {
                broker.backlog -= 1;
            }
            popped
        };
        match message {
            Some((Some(message), left)) => {
                let Some(c) = self.channels.get_mut(&ch) else {
                    return;
                };
                c.next_delivery += 1;
                let tag = c.next_delivery;
                if !no_ack {
                    c.unacked.insert(tag);
                }
                let ok = BasicGetOk {
                    delivery_tag: tag,
                    redelivered: false,
                    exchange: message.exchange.clone(),
                    routing_key: message.routing_key.clone(),
                    message_count: left as u32,
                };
                self.send_content(ch, ok.into(), &message);
            }
            _ => self.send(ch, BasicGetEmpty::default()),
        }
    }

    fn settle(&mut self, ch: u16, tag: u64, multiple: bool) {
        if let Some(c) = self.channels.get_mut(&ch) {
            if multiple {
                c.unacked = c.unacked.split_off(&(tag + 1));
            } else {
                c.unacked.remove(&tag);
            }
        }
    }

    /// Delivers queued messages to this connection's consumers within their prefetch; returns
    /// false if it stopped at the batch limit with more to send.
    fn deliver(&mut self) -> bool {
        let mut budget = DELIVERY_BATCH;
        let broker = self.broker.clone();
        let mut guard = broker.state.lock().expect("sink state");
        let state = &mut *guard;
        for (&ch, c) in self.channels.iter_mut() {
            for (tag, queue, no_ack) in &c.consumers {
                let Some(q) = state.queues.get_mut(queue) else {
                    continue;
                };
                while budget > 0 {
                    if !*no_ack && c.prefetch != 0 && c.unacked.len() >= c.prefetch as usize {
                        break;
                    }
                    let Some(message) = q.pop_front() else {
                        break;
                    };
                    state.backlog -= 1;
                    budget -= 1;
                    c.next_delivery += 1;
                    if !*no_ack {
                        c.unacked.insert(c.next_delivery);
                    }
                    let deliver = BasicDeliver {
                        consumer_tag: tag.clone(),
                        delivery_tag: c.next_delivery,
                        redelivered: false,
                        exchange: message.exchange.clone(),
                        routing_key: message.routing_key.clone(),
                    };
                    let _ = self.out.push_content(
                        ch,
                        &deliver.into(),
                        &message.properties,
                        &message.body,
                        FRAME_MAX,
                    );
                }
            }
        }
        if state.backlog < BACKLOG_LOW {
            self.broker.drained.notify_waiters();
        }
        budget > 0
    }
}
