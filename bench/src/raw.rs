//! The broker-paced floor (`raw`): the least a client must do against a real
//! broker, at the pace that broker sends.
//!
//! The kernel floor (`floor.rs`) moves a scenario's bytes at full speed, with
//! the fake broker writing 128 KiB at a time; a client talking to RabbitMQ
//! cannot get its deliveries or confirms in batches that large, because
//! RabbitMQ sends them as it produces them. `raw` is a minimal AMQP 0-9-1
//! client that talks to the same broker as the clients (RabbitMQ, or the fake
//! one with `--fake`) and does only what the scenario's protocol requires:
//! * one thread per connection on a blocking `std::net::TcpStream` (no
//!   runtime, no reactor, no locks), reads of up to 128 KiB;
//! * publishes are pre-encoded once and written as many per write as fit in
//!   128 KiB;
//! * received frames are scanned for what the scenario needs (delivery tags,
//!   body sizes, confirms) and bodies are skipped, never copied;
//! * a consumer sends one `multiple` basic.ack per read (not one per
//!   delivery, as the scenarios ask of the clients: this is a floor).
//!
//! The scenarios are otherwise those of `harness::Client` (same queue
//! arguments, prefill, window, prefetch, timed section), so its CPU per
//! message is what the broker's pacing alone costs: a read and a write per
//! batch the broker sends, with nothing else. Written with `wire.rs`, not
//! amqp-proto, so that it favours no client.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::floor::write_messages;
use crate::harness::{Params, QUEUE_EXPIRES_MS, Scenario, Timer};
use crate::wire::{self, Args, FRAME_BODY, FRAME_HEADER, FRAME_MAX, FRAME_METHOD};

const CHUNK: usize = 128 * 1024;
const CH: u16 = 1;

/// Runs `scenario` with the minimal client; the queue is deleted afterwards.
pub fn run(scenario: Scenario, p: &Params) -> Result<Timer> {
    let mut t = Timer::default();
    let mut c = Conn::open(p)?;
    c.declare(p)?;
    let res = match scenario {
        Scenario::Publish => publish(&mut c, p, &mut t),
        Scenario::PublishConfirms => publish_confirms(&mut c, p, &mut t),
        Scenario::Consume => consume(&mut c, p, &mut t),
        Scenario::E2e => e2e(&mut c, p, &mut t),
    };
    let cleanup = c.rpc(
        &wire_method(50, 40, |a| {
            a.extend_from_slice(&0u16.to_be_bytes());
            wire::shortstr(a, &p.queue);
            a.push(0);
        }),
        (50, 41),
    );
    res?;
    if let Err(e) = cleanup {
        eprintln!("warning: deleting queue {} failed: {e:#}", p.queue);
    }
    Ok(t)
}

fn publish(c: &mut Conn, p: &Params, t: &mut Timer) -> Result<()> {
    let msg = wire::publish_message(&p.queue, &p.payload);
    t.start();
    write_messages(&mut c.s, &msg, p.count)?;
    c.wait_for_count(p, p.count)?;
    t.stop();
    Ok(())
}

fn publish_confirms(c: &mut Conn, p: &Params, t: &mut Timer) -> Result<()> {
    c.rpc(&wire_method(85, 10, |a| a.push(0)), (85, 11))?;
    let msg = wire::publish_message(&p.queue, &p.payload);
    let (mut published, mut confirmed) = (0u64, 0u64);
    // Single (non-multiple) acks that arrived ahead of an earlier tag.
    let mut ahead = BTreeSet::new();
    t.start();
    while confirmed < p.count {
        let room = p.confirm_window - (published - confirmed);
        let n = room.min(p.count - published);
        if n > 0 {
            write_messages(&mut c.s, &msg, n)?;
            published += n;
        }
        c.read_some()?;
        while let Some(f) = c.frame() {
            match f {
                Frame::Method(wire::BASIC, wire::BASIC_ACK, mut a) => {
                    let (tag, multiple) = (a.u64(), a.u8() & 1 == 1);
                    if multiple {
                        confirmed = confirmed.max(tag);
                        ahead.retain(|&t| t > confirmed);
                    } else {
                        ahead.insert(tag);
                    }
                    while ahead.remove(&(confirmed + 1)) {
                        confirmed += 1;
                    }
                }
                Frame::Method(60, 120, _) => bail!("raw: a publish was nacked"),
                other => other.check()?,
            }
        }
    }
    t.stop();
    Ok(())
}

fn consume(c: &mut Conn, p: &Params, t: &mut Timer) -> Result<()> {
    // Prefill, untimed.
    let msg = wire::publish_message(&p.queue, &p.payload);
    write_messages(&mut c.s, &msg, p.count)?;
    c.wait_for_count(p, p.count)?;
    c.qos(p)?;
    t.start();
    c.send(&consume_method(p))?;
    receive(c, p.count)?;
    let left = c.message_count(p)?;
    t.stop();
    ensure!(
        left == 0,
        "raw: {left} messages left in queue after consume"
    );
    Ok(())
}

fn e2e(publisher: &mut Conn, p: &Params, t: &mut Timer) -> Result<()> {
    let mut c = Conn::open(p)?;
    c.qos(p)?;
    c.rpc(&consume_method(p), (60, 21))?;
    let msg = wire::publish_message(&p.queue, &p.payload);
    let mut w = publisher.s.try_clone()?;
    let count = p.count;
    t.start();
    let writer = std::thread::spawn(move || write_messages(&mut w, &msg, count));
    receive(&mut c, p.count)?;
    writer.join().expect("raw publisher panicked")?;
    t.stop();
    Ok(())
}

/// Reads deliveries until `count` are complete, acking (`multiple`) the last
/// complete one after every read that completed any.
fn receive(c: &mut Conn, count: u64) -> Result<()> {
    let (mut done, mut tag, mut last, mut acked) = (0u64, 0u64, 0u64, 0u64);
    let mut body_left = 0u64;
    let mut ack = Vec::with_capacity(32);
    while done < count {
        c.read_some()?;
        while let Some(f) = c.frame() {
            match f {
                Frame::Method(wire::BASIC, wire::BASIC_DELIVER, mut a) => {
                    a.skip_shortstr(); // the consumer tag
                    tag = a.u64();
                }
                Frame::Header(size) => {
                    body_left = size;
                    if size == 0 {
                        done += 1;
                        last = tag;
                    }
                }
                Frame::Body(n) => {
                    body_left = body_left.saturating_sub(n as u64);
                    if body_left == 0 {
                        done += 1;
                        last = tag;
                    }
                }
                Frame::Method(60, 21, _) => {}
                other => other.check()?,
            }
        }
        if last > acked {
            ack.clear();
            wire::ack(&mut ack, CH, last, true);
            c.send(&ack)?;
            acked = last;
        }
    }
    Ok(())
}

fn consume_method(p: &Params) -> Vec<u8> {
    wire_method(60, 20, |a| {
        a.extend_from_slice(&0u16.to_be_bytes());
        wire::shortstr(a, &p.queue);
        wire::shortstr(a, "");
        a.push(0); // manual ack
        a.extend_from_slice(&0u32.to_be_bytes());
    })
}

fn wire_method(class: u16, method: u16, args: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    wire::method(&mut out, CH, class, method, args);
    out
}

/// A received frame, as much of it as the scenarios look at.
enum Frame<'a> {
    Method(u16, u16, Args<'a>),
    /// A content header: the body size.
    Header(u64),
    /// Body bytes (skipped).
    Body(usize),
    Other,
}

impl Frame<'_> {
    /// Fails on a close from the broker; anything else unexpected is ignored.
    fn check(self) -> Result<()> {
        match self {
            Frame::Method(10, 50, mut a) | Frame::Method(20, 40, mut a) => {
                let code = a.u16();
                let text = a.shortstr();
                bail!("raw: the broker closed the connection or channel: {code} {text}")
            }
            _ => Ok(()),
        }
    }
}

/// One connection with channel 1 open.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    /// Parsed up to `pos`; bytes up to `have` are read.
    pos: usize,
    have: usize,
    /// Bytes of the current body frame (and its end byte) still to skip.
    skip: usize,
    /// The current body frame's size.
    body_len: usize,
}

impl Conn {
    fn open(p: &Params) -> Result<Conn> {
        let b = &p.broker;
        let s = TcpStream::connect((b.host.as_str(), b.port))
            .with_context(|| format!("raw: connect {}:{}", b.host, b.port))?;
        s.set_nodelay(true)?;
        let mut c = Conn {
            s,
            buf: vec![0; CHUNK + FRAME_MAX + 16],
            pos: 0,
            have: 0,
            skip: 0,
            body_len: 0,
        };
        c.send(b"AMQP\x00\x00\x09\x01")?;
        c.wait_method(10, 10)?;
        let mut out = Vec::new();
        wire::method(&mut out, 0, 10, 11, |a| {
            a.extend_from_slice(&0u32.to_be_bytes()); // no client properties
            wire::shortstr(a, "PLAIN");
            wire::longstr(a, format!("\0{}\0{}", b.user, b.pass).as_bytes());
            wire::shortstr(a, "en_US");
        });
        c.send(&out)?;
        let tune = c.wait_method(10, 30)?;
        let mut a = Args(&tune);
        let channel_max = a.u16();
        out.clear();
        wire::method(&mut out, 0, 10, 31, |a| {
            a.extend_from_slice(&channel_max.to_be_bytes());
            a.extend_from_slice(&(FRAME_MAX as u32).to_be_bytes());
            a.extend_from_slice(&0u16.to_be_bytes()); // no heartbeats
        });
        wire::method(&mut out, 0, 10, 40, |a| {
            wire::shortstr(a, &b.vhost);
            wire::shortstr(a, "");
            a.push(0);
        });
        c.send(&out)?;
        c.wait_method(10, 41)?;
        c.rpc(&wire_method(20, 10, |a| wire::shortstr(a, "")), (20, 11))?;
        Ok(c)
    }

    /// Declares the queue as every client does (non-durable, `x-expires`).
    fn declare(&mut self, p: &Params) -> Result<()> {
        let req = wire_method(50, 10, |a| {
            a.extend_from_slice(&0u16.to_be_bytes());
            wire::shortstr(a, &p.queue);
            a.push(0);
            let mut table = Vec::new();
            wire::shortstr(&mut table, "x-expires");
            table.push(b'I');
            table.extend_from_slice(&QUEUE_EXPIRES_MS.to_be_bytes());
            wire::longstr(a, &table);
        });
        self.rpc(&req, (50, 11)).map(drop)
    }

    fn qos(&mut self, p: &Params) -> Result<()> {
        let req = wire_method(60, 10, |a| {
            a.extend_from_slice(&0u32.to_be_bytes());
            a.extend_from_slice(&p.prefetch.to_be_bytes());
            a.push(0);
        });
        self.rpc(&req, (60, 11)).map(drop)
    }

    /// queue.declare(passive): the queue's message count.
    fn message_count(&mut self, p: &Params) -> Result<u32> {
        let req = wire_method(50, 10, |a| {
            a.extend_from_slice(&0u16.to_be_bytes());
            wire::shortstr(a, &p.queue);
            a.push(1); // passive
            a.extend_from_slice(&0u32.to_be_bytes());
        });
        let ok = self.rpc(&req, (50, 11))?;
        let mut a = Args(&ok);
        a.skip_shortstr();
        let b = a.0;
        ensure!(b.len() >= 4, "raw: short queue.declare-ok");
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn wait_for_count(&mut self, p: &Params, count: u64) -> Result<()> {
        while u64::from(self.message_count(p)?) < count {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.s.write_all(bytes).context("raw: write")
    }

    /// Sends `req` on channel 1 and waits for the reply `(class, method)`.
    fn rpc(&mut self, req: &[u8], (class, method): (u16, u16)) -> Result<Vec<u8>> {
        self.send(req)?;
        self.wait_method(class, method)
    }

    /// Reads until method `class.method` arrives (one channel is in use: no
    /// need to tell them apart); its arguments.
    fn wait_method(&mut self, class: u16, method: u16) -> Result<Vec<u8>> {
        loop {
            while let Some(f) = self.frame() {
                match f {
                    Frame::Method(c, m, a) if (c, m) == (class, method) => {
                        return Ok(a.0.to_vec());
                    }
                    other => other.check()?,
                }
            }
            self.read_some()?;
        }
    }

    /// One read (blocking) after making room.
    fn read_some(&mut self) -> Result<()> {
        if self.pos == self.have {
            (self.pos, self.have) = (0, 0);
        } else if self.buf.len() - self.have < CHUNK {
            self.buf.copy_within(self.pos..self.have, 0);
            (self.have, self.pos) = (self.have - self.pos, 0);
        }
        let end = (self.have + CHUNK).min(self.buf.len());
        let n = self
            .s
            .read(&mut self.buf[self.have..end])
            .context("raw: read")?;
        ensure!(n > 0, "raw: the broker closed the connection");
        self.have += n;
        Ok(())
    }

    /// The next frame in what was read, if complete. Body bytes are skipped
    /// as they come, never held: a body frame is returned once its last byte
    /// has been read.
    fn frame(&mut self) -> Option<Frame<'_>> {
        if self.skip > 0 {
            let n = self.skip.min(self.have - self.pos);
            self.pos += n;
            self.skip -= n;
            return (self.skip == 0).then_some(Frame::Body(self.body_len));
        }
        let b = &self.buf[self.pos..self.have];
        if b.len() < 7 {
            return None;
        }
        let kind = b[0];
        let size = u32::from_be_bytes([b[3], b[4], b[5], b[6]]) as usize;
        if kind == FRAME_BODY {
            self.pos += 7;
            (self.skip, self.body_len) = (size + 1, size);
            return self.frame();
        }
        if b.len() < 7 + size + 1 {
            return None;
        }
        let start = self.pos + 7;
        self.pos += 7 + size + 1;
        let payload = &self.buf[start..start + size];
        Some(match kind {
            FRAME_METHOD if size >= 4 => Frame::Method(
                u16::from_be_bytes([payload[0], payload[1]]),
                u16::from_be_bytes([payload[2], payload[3]]),
                Args(&payload[4..]),
            ),
            FRAME_HEADER if size >= 12 => Frame::Header(u64::from_be_bytes(
                payload[4..12].try_into().expect("8 bytes"),
            )),
            _ => Frame::Other,
        })
    }
}
