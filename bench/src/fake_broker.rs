//! A minimal AMQP 0-9-1 broker on loopback, run as its own process
//! (`bench --serve-fake`), so that a client can be measured without RabbitMQ
//! sharing the two cores: its CPU per message is then the client's own cost.
//!
//! It keeps no message bodies. A queue is a count of ready messages plus the
//! size of the last body published to it; a consumer gets pre-encoded
//! deliveries of that size (one template, the delivery tag patched per
//! message), respecting basic.qos prefetch and tracking acks. Publishes on a
//! confirm channel are confirmed with one `multiple` basic.ack per read from
//! the socket, as RabbitMQ batches them. One consumer per queue. Enough for
//! the benchmark's scenarios, nothing more: other methods close the
//! connection with 540 (not-implemented).
//!
//! It also serves the kernel floor (`floor.rs`): a connection that starts
//! with `FLOR` instead of the AMQP header gets raw byte streams, no AMQP.
//!
//! Threads: one reader per connection (parses frames, answers, collects acks
//! and publishes and applies them once per drained read buffer), one
//! deliverer per consumer, one heartbeat sender if heartbeats were agreed.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::wire::{self, Args, DeliverTemplate, FRAME_MAX};

/// Printed on stdout by `bench --serve-fake`, followed by `host:port`.
pub const READY_PREFIX: &str = "FAKE_BROKER ";

/// Accepts connections forever, a thread each.
pub fn serve(listener: TcpListener) -> ! {
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            if let Err(e) = handle(stream)
                && e.kind() != io::ErrorKind::UnexpectedEof
                && e.kind() != io::ErrorKind::ConnectionReset
                && e.kind() != io::ErrorKind::BrokenPipe
            {
                eprintln!("fake broker: connection ended: {e}");
            }
        });
    }
    unreachable!("TcpListener::incoming never ends")
}

fn handle(mut stream: TcpStream) -> io::Result<()> {
    let mut head = [0u8; 8];
    stream.read_exact(&mut head)?;
    if &head[..4] == b"FLOR" {
        return crate::floor::serve(stream, head[4]);
    }
    if head != *b"AMQP\x00\x00\x09\x01" {
        stream.write_all(b"AMQP\x00\x00\x09\x01")?;
        return Ok(());
    }
    Conn::new(stream)?.run()
}

// ------------------------------------------------------------ queues ---

struct Queue {
    st: Mutex<QState>,
    cv: Condvar,
}

struct QState {
    ready: u64,
    body_size: usize,
    consumer: Option<CState>,
}

/// Delivery bookkeeping of the queue's consumer.
struct CState {
    no_ack: bool,
    prefetch: u64,
    /// Tag of the last delivery.
    last_tag: u64,
    /// Tag of `window[0]`.
    base: u64,
    /// Acked flags of the tags from `base` on.
    window: VecDeque<bool>,
    unacked: u64,
    stop: bool,
}

impl CState {
    fn room(&self) -> u64 {
        if self.no_ack || self.prefetch == 0 {
            u64::MAX
        } else {
            self.prefetch.saturating_sub(self.unacked)
        }
    }

    fn ack(&mut self, tag: u64, multiple: bool) {
        let from = if multiple { self.base } else { tag };
        for t in from.max(self.base)..=tag {
            if let Some(f) = self.window.get_mut((t - self.base) as usize)
                && !*f
            {
                *f = true;
                self.unacked -= 1;
            }
        }
        while self.window.front() == Some(&true) {
            self.window.pop_front();
            self.base += 1;
        }
    }
}

static QUEUES: LazyLock<Mutex<HashMap<String, Arc<Queue>>>> = LazyLock::new(Default::default);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn lookup(name: &str) -> Option<Arc<Queue>> {
    QUEUES.lock().unwrap().get(name).cloned()
}

// -------------------------------------------------------- connection ---

struct Chan {
    confirm: bool,
    published: u64,
    confirmed: u64,
    prefetch: u64,
    /// Routing key of the last publish and its queue (None: unroutable).
    route: Option<(String, Option<Arc<Queue>>)>,
    /// Messages routed to `route`'s queue, not yet added to it.
    routed: u64,
    body_size: usize,
    /// Body bytes still expected for the message being received.
    remaining: Option<u64>,
    /// Acks received, not yet applied to the consumer's queue.
    acks: Vec<(u64, bool)>,
    consumer: Option<Consumer>,
}

struct Consumer {
    queue: Arc<Queue>,
    thread: JoinHandle<()>,
}

impl Chan {
    fn new() -> Self {
        Chan {
            confirm: false,
            published: 0,
            confirmed: 0,
            prefetch: 0,
            route: None,
            routed: 0,
            body_size: 0,
            remaining: None,
            acks: Vec::new(),
            consumer: None,
        }
    }

    /// Applies what was batched: routed messages and acks.
    fn settle(&mut self) {
        if self.routed > 0 {
            if let Some((_, Some(q))) = &self.route {
                let mut st = q.st.lock().unwrap();
                st.ready += self.routed;
                st.body_size = self.body_size;
                q.cv.notify_all();
            }
            self.routed = 0;
        }
        if !self.acks.is_empty() {
            if let Some(c) = &self.consumer {
                let mut st = c.queue.st.lock().unwrap();
                if let Some(cs) = st.consumer.as_mut() {
                    for &(tag, multiple) in &self.acks {
                        cs.ack(tag, multiple);
                    }
                }
                c.queue.cv.notify_all();
            }
            self.acks.clear();
        }
    }

    fn stop_consumer(&mut self) {
        self.settle();
        if let Some(c) = self.consumer.take() {
            {
                let mut st = c.queue.st.lock().unwrap();
                if let Some(cs) = st.consumer.as_mut() {
                    cs.stop = true;
                }
                c.queue.cv.notify_all();
            }
            let _ = c.thread.join();
            let mut st = c.queue.st.lock().unwrap();
            if let Some(cs) = st.consumer.take() {
                st.ready += cs.unacked; // requeued
            }
        }
    }
}

struct Conn {
    rd: BufReader<TcpStream>,
    wr: Arc<Mutex<TcpStream>>,
    frame_max: usize,
    channels: HashMap<u16, Chan>,
    payload: Vec<u8>,
    /// Replies, written once the read buffer is drained.
    out: Vec<u8>,
    closed: Arc<AtomicBool>,
}

enum Next {
    Continue,
    Close,
}

impl Conn {
    fn new(stream: TcpStream) -> io::Result<Self> {
        let wr = Arc::new(Mutex::new(stream.try_clone()?));
        Ok(Conn {
            rd: BufReader::with_capacity(256 * 1024, stream),
            wr,
            frame_max: FRAME_MAX,
            channels: HashMap::new(),
            payload: Vec::new(),
            out: Vec::new(),
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    fn run(mut self) -> io::Result<()> {
        send_start(&mut self.out);
        self.flush()?;
        let res = self.serve();
        self.closed.store(true, Ordering::Relaxed);
        for ch in self.channels.values_mut() {
            ch.stop_consumer();
        }
        res
    }

    fn serve(&mut self) -> io::Result<()> {
        loop {
            let mut header = [0u8; 7];
            self.rd.read_exact(&mut header)?;
            let size = u32::from_be_bytes(header[3..7].try_into().unwrap()) as usize;
            if size > 16 << 20 {
                return Err(io::Error::other(format!("frame of {size} bytes")));
            }
            self.payload.resize(size + 1, 0);
            self.rd.read_exact(&mut self.payload)?;
            if self.payload[size] != wire::FRAME_END {
                return Err(io::Error::other("bad frame end"));
            }
            let channel = u16::from_be_bytes([header[1], header[2]]);
            let payload = std::mem::take(&mut self.payload);
            let next = match header[0] {
                wire::FRAME_METHOD => self.on_method(channel, &payload[..size]),
                wire::FRAME_HEADER => {
                    let mut a = Args(&payload[..size]);
                    let (_class, _weight) = (a.u16(), a.u16());
                    let body_size = a.u64();
                    self.on_body(channel, Some(body_size), 0);
                    Next::Continue
                }
                wire::FRAME_BODY => {
                    self.on_body(channel, None, size as u64);
                    Next::Continue
                }
                _ => Next::Continue, // heartbeats
            };
            self.payload = payload;
            if self.rd.buffer().is_empty() || matches!(next, Next::Close) {
                self.drained();
                self.flush()?;
            }
            if matches!(next, Next::Close) {
                return Ok(());
            }
        }
    }

    /// Once per drained read: apply batched publishes and acks, confirm.
    fn drained(&mut self) {
        for (&id, ch) in self.channels.iter_mut() {
            ch.settle();
            if ch.confirm && ch.published > ch.confirmed {
                let multiple = ch.published - ch.confirmed > 1;
                wire::ack(&mut self.out, id, ch.published, multiple);
                ch.confirmed = ch.published;
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.wr.lock().unwrap().write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    fn on_body(&mut self, channel: u16, header: Option<u64>, len: u64) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let remaining = match header {
            Some(size) => {
                ch.body_size = size as usize;
                size
            }
            None => ch.remaining.unwrap_or(0).saturating_sub(len),
        };
        if remaining == 0 {
            ch.remaining = None;
            if matches!(ch.route, Some((_, Some(_)))) {
                ch.routed += 1;
            }
        } else {
            ch.remaining = Some(remaining);
        }
    }

    fn reply(&mut self, channel: u16, class: u16, method: u16, args: impl FnOnce(&mut Vec<u8>)) {
        wire::method(&mut self.out, channel, class, method, args);
    }

    fn on_method(&mut self, channel: u16, payload: &[u8]) -> Next {
        let mut a = Args(payload);
        let (class, method) = (a.u16(), a.u16());
        match (class, method) {
            (10, 11) => self.reply(0, 10, 30, |p| {
                // connection.tune: channel-max, frame-max, heartbeat (RabbitMQ's)
                p.extend_from_slice(&2047u16.to_be_bytes());
                p.extend_from_slice(&(FRAME_MAX as u32).to_be_bytes());
                p.extend_from_slice(&60u16.to_be_bytes());
            }),
            (10, 31) => {
                let _channel_max = a.u16();
                let frame_max = {
                    let hi = a.u16() as usize;
                    (hi << 16) | a.u16() as usize
                };
                let heartbeat = a.u16();
                if frame_max >= 4096 {
                    self.frame_max = frame_max.min(FRAME_MAX);
                }
                if heartbeat > 0 {
                    self.start_heartbeats(heartbeat);
                }
            }
            (10, 40) => self.reply(0, 10, 41, |p| wire::shortstr(p, "")),
            (10, 50) => {
                for ch in self.channels.values_mut() {
                    ch.stop_consumer();
                }
                self.reply(0, 10, 51, |_| {});
                return Next::Close;
            }
            (10, 51) => return Next::Close,
            (20, 10) => {
                self.channels.insert(channel, Chan::new());
                self.reply(channel, 20, 11, |p| wire::longstr(p, b""));
            }
            (20, 40) => {
                if let Some(mut ch) = self.channels.remove(&channel) {
                    ch.stop_consumer();
                }
                self.reply(channel, 20, 41, |_| {});
            }
            (20, 41) => {}
            (40, 10) => self.reply(channel, 40, 11, |_| {}),
            (50, 20) => self.reply(channel, 50, 21, |_| {}),
            (50, 10) => return self.queue_declare(channel, a),
            (50, 40) => {
                let _reserved = a.u16();
                let name = a.shortstr();
                let no_wait = a.u8() & 4 != 0;
                self.settle_all();
                let q = QUEUES.lock().unwrap().remove(&name);
                let count = q.map_or(0, |q| q.st.lock().unwrap().ready as u32);
                if !no_wait {
                    self.reply(channel, 50, 41, |p| {
                        p.extend_from_slice(&count.to_be_bytes())
                    });
                }
            }
            (60, 10) => {
                let (_size_hi, _size_lo) = (a.u16(), a.u16());
                let prefetch = a.u16();
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.prefetch = u64::from(prefetch);
                }
                self.reply(channel, 60, 11, |_| {});
            }
            (60, 20) => return self.basic_consume(channel, a),
            (60, 30) => {
                let tag = a.shortstr();
                let no_wait = a.u8() & 1 != 0;
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.stop_consumer();
                }
                if !no_wait {
                    self.reply(channel, 60, 31, |p| wire::shortstr(p, &tag));
                }
            }
            (60, 40) => {
                let _reserved = a.u16();
                let exchange = a.shortstr();
                let key = a.shortstr();
                let Some(ch) = self.channels.get_mut(&channel) else {
                    return Next::Continue;
                };
                if ch.route.as_ref().is_none_or(|(k, _)| *k != key) {
                    ch.settle();
                    let q = if exchange.is_empty() {
                        lookup(&key)
                    } else {
                        None
                    };
                    ch.route = Some((key, q));
                }
                if ch.confirm {
                    ch.published += 1;
                }
            }
            // ack, reject, nack: all settle the delivery
            (60, 80) | (60, 90) | (60, 120) => {
                let tag = a.u64();
                let multiple = method != 90 && a.u8() & 1 != 0;
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.acks.push((tag, multiple));
                }
            }
            (85, 10) => {
                let no_wait = a.u8() & 1 != 0;
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.confirm = true;
                }
                if !no_wait {
                    self.reply(channel, 85, 11, |_| {});
                }
            }
            _ => {
                eprintln!("fake broker: method {class}.{method} not implemented");
                self.reply(0, 10, 50, |p| {
                    p.extend_from_slice(&540u16.to_be_bytes());
                    wire::shortstr(p, "NOT_IMPLEMENTED - fake broker");
                    p.extend_from_slice(&class.to_be_bytes());
                    p.extend_from_slice(&method.to_be_bytes());
                });
            }
        }
        Next::Continue
    }

    fn settle_all(&mut self) {
        for ch in self.channels.values_mut() {
            ch.settle();
        }
    }

    fn queue_declare(&mut self, channel: u16, mut a: Args) -> Next {
        let _reserved = a.u16();
        let mut name = a.shortstr();
        let bits = a.u8();
        let (passive, no_wait) = (bits & 1 != 0, bits & 16 != 0);
        self.settle_all();
        if name.is_empty() {
            name = format!("amq.gen-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        }
        let q = {
            let mut queues = QUEUES.lock().unwrap();
            match queues.get(&name) {
                Some(q) => Some(q.clone()),
                None if passive => None,
                None => {
                    let q = Arc::new(Queue {
                        st: Mutex::new(QState {
                            ready: 0,
                            body_size: 0,
                            consumer: None,
                        }),
                        cv: Condvar::new(),
                    });
                    queues.insert(name.clone(), q.clone());
                    Some(q)
                }
            }
        };
        let Some(q) = q else {
            self.channels.remove(&channel);
            self.reply(channel, 20, 40, |p| {
                p.extend_from_slice(&404u16.to_be_bytes());
                wire::shortstr(p, &format!("NOT_FOUND - no queue '{name}'"));
                p.extend_from_slice(&50u16.to_be_bytes());
                p.extend_from_slice(&10u16.to_be_bytes());
            });
            return Next::Continue;
        };
        let (ready, consumers) = {
            let st = q.st.lock().unwrap();
            (st.ready as u32, u32::from(st.consumer.is_some()))
        };
        if !no_wait {
            self.reply(channel, 50, 11, |p| {
                wire::shortstr(p, &name);
                p.extend_from_slice(&ready.to_be_bytes());
                p.extend_from_slice(&consumers.to_be_bytes());
            });
        }
        Next::Continue
    }

    fn basic_consume(&mut self, channel: u16, mut a: Args) -> Next {
        let _reserved = a.u16();
        let name = a.shortstr();
        let mut tag = a.shortstr();
        let bits = a.u8();
        let (no_ack, no_wait) = (bits & 2 != 0, bits & 8 != 0);
        if tag.is_empty() {
            tag = format!("amq.ctag-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        }
        let Some(q) = lookup(&name) else {
            eprintln!("fake broker: consume from unknown queue {name}");
            return Next::Close;
        };
        let Some(ch) = self.channels.get_mut(&channel) else {
            return Next::Continue;
        };
        {
            let mut st = q.st.lock().unwrap();
            if st.consumer.is_some() {
                eprintln!("fake broker: a second consumer on {name} (one per queue)");
                return Next::Close;
            }
            st.consumer = Some(CState {
                no_ack,
                prefetch: ch.prefetch,
                last_tag: 0,
                base: 1,
                window: VecDeque::new(),
                unacked: 0,
                stop: false,
            });
        }
        if !no_wait {
            self.reply(channel, 60, 21, |p| wire::shortstr(p, &tag));
        }
        // consume-ok goes out before the first delivery
        if self.flush().is_err() {
            return Next::Close;
        }
        let thread = {
            let (q, wr) = (q.clone(), self.wr.clone());
            let frame_max = self.frame_max;
            std::thread::spawn(move || deliver(q, wr, channel, tag, name, frame_max))
        };
        if let Some(ch) = self.channels.get_mut(&channel) {
            ch.consumer = Some(Consumer { queue: q, thread });
        }
        Next::Continue
    }

    fn start_heartbeats(&self, seconds: u16) {
        let (wr, closed) = (self.wr.clone(), self.closed.clone());
        let every = Duration::from_millis(u64::from(seconds) * 500);
        std::thread::spawn(move || {
            let frame = [wire::FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, wire::FRAME_END];
            while !closed.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                if closed.load(Ordering::Relaxed) || wr.lock().unwrap().write_all(&frame).is_err() {
                    return;
                }
            }
        });
    }
}

/// The consumer's deliverer: waits for ready messages and prefetch room,
/// then writes up to 256 deliveries in one write.
fn deliver(
    q: Arc<Queue>,
    wr: Arc<Mutex<TcpStream>>,
    channel: u16,
    tag: String,
    queue: String,
    frame_max: usize,
) {
    let mut template: Option<(usize, DeliverTemplate)> = None;
    let mut buf = Vec::new();
    loop {
        let (first, n, size) = {
            let mut st = q.st.lock().unwrap();
            loop {
                let ready = st.ready;
                let Some(cs) = st.consumer.as_mut() else {
                    return;
                };
                if cs.stop {
                    return;
                }
                let n = ready.min(cs.room()).min(256);
                if n > 0 {
                    let first = cs.last_tag + 1;
                    cs.last_tag += n;
                    if !cs.no_ack {
                        cs.window.extend(std::iter::repeat_n(false, n as usize));
                        cs.unacked += n;
                    }
                    st.ready -= n;
                    break (first, n, st.body_size);
                }
                st = q.cv.wait(st).unwrap();
            }
        };
        if template.as_ref().is_none_or(|(s, _)| *s != size) {
            let body = vec![0u8; size];
            template = Some((
                size,
                DeliverTemplate::new(channel, &tag, &queue, &body, frame_max),
            ));
        }
        let t = &template.as_ref().unwrap().1;
        buf.clear();
        for tag in first..first + n {
            t.append(&mut buf, tag);
        }
        if wr.lock().unwrap().write_all(&buf).is_err() {
            return;
        }
    }
}

/// connection.start with RabbitMQ-like server properties.
fn send_start(out: &mut Vec<u8>) {
    fn entry(t: &mut Vec<u8>, name: &str, kind: u8, value: impl FnOnce(&mut Vec<u8>)) {
        wire::shortstr(t, name);
        t.push(kind);
        value(t);
    }
    fn table(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
        let mut t = Vec::new();
        fill(&mut t);
        wire::longstr(out, &t);
    }
    wire::method(out, 0, 10, 10, |p| {
        p.extend_from_slice(&[0, 9]);
        table(p, |t| {
            entry(t, "product", b'S', |v| {
                wire::longstr(v, b"amqp-bench fake broker")
            });
            entry(t, "version", b'S', |v| wire::longstr(v, b"3.10.0"));
            entry(t, "capabilities", b'F', |v| {
                table(v, |c| {
                    for cap in [
                        "publisher_confirms",
                        "exchange_exchange_bindings",
                        "basic.nack",
                        "consumer_cancel_notify",
                        "connection.blocked",
                        "consumer_priorities",
                        "authentication_failure_close",
                        "per_consumer_qos",
                        "direct_reply_to",
                    ] {
                        entry(c, cap, b't', |b| b.push(1));
                    }
                })
            });
        });
        wire::longstr(p, b"PLAIN AMQPLAIN");
        wire::longstr(p, b"en_US");
    });
}
