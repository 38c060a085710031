//! The kernel floor: the bytes of a scenario moved over loopback with no AMQP
//! work, so that a client's CPU per message can be compared with the least
//! any client could pay for the same traffic.
//!
//! The floor "client" (`bench --one floor SCENARIO SIZE`) talks to the fake
//! broker process, which recognises it by the 8-byte opening `FLOR` + kind +
//! 3 zero bytes, followed by two u64 arguments:
//! * `c` (consume) size, count: the broker writes the u64 total length, then
//!   `count` pre-encoded deliveries (basic.deliver + header + body frames,
//!   the same template it uses for real consumers) at full speed; the floor
//!   reads and discards them.
//! * `p` (publish) total, 0: the floor writes `total` bytes of pre-encoded
//!   publishes (basic.publish + header + body frames, as a client sends them)
//!   and waits for the broker's one-byte reply that it has read them all.
//! * `k` (confirms) message length, count: as `p`, and the broker answers
//!   each read with one `multiple` basic.ack for the messages it has read
//!   completely; the floor reads those until the last is confirmed.
//!
//! `e2e` is `p` and `c` at once on two connections. Reads and writes move
//! up to 128 KiB (or one message, if larger) per call.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use anyhow::{Context, Result, ensure};

use crate::harness::{Params, Scenario, Timer};
use crate::wire::{self, DeliverTemplate, FRAME_MAX};

const CHUNK: usize = 128 * 1024;

// ------------------------------------------------------------- client ---

/// Runs the floor of `scenario` against the fake broker at `addr`.
pub fn run(scenario: Scenario, p: &Params, addr: &str) -> Result<Timer> {
    let mut t = Timer::default();
    let msg = wire::publish_message(&p.queue, &p.payload);
    let size = p.payload.len() as u64;
    match scenario {
        Scenario::Publish => {
            let mut s = open(addr, b'p', msg.len() as u64 * p.count, 0)?;
            t.start();
            write_messages(&mut s, &msg, p.count)?;
            let mut done = [0u8; 1];
            s.read_exact(&mut done)?;
            t.stop();
        }
        Scenario::PublishConfirms => {
            let s = open(addr, b'k', msg.len() as u64, p.count)?;
            let mut w = s.try_clone()?;
            t.start();
            let (count, msg2) = (p.count, msg.clone());
            let writer = std::thread::spawn(move || write_messages(&mut w, &msg2, count));
            read_confirms(s, p.count)?;
            writer.join().expect("floor writer panicked")?;
            t.stop();
        }
        Scenario::Consume => {
            let mut s = open(addr, b'c', size, p.count)?;
            t.start();
            read_deliveries(&mut s)?;
            t.stop();
        }
        Scenario::E2e => {
            let mut w = open(addr, b'p', msg.len() as u64 * p.count, 0)?;
            t.start();
            let count = p.count;
            let writer = std::thread::spawn(move || -> io::Result<()> {
                write_messages(&mut w, &msg, count)?;
                w.read_exact(&mut [0u8; 1])
            });
            let mut r = open(addr, b'c', size, p.count)?;
            read_deliveries(&mut r)?;
            writer.join().expect("floor writer panicked")?;
            t.stop();
        }
    }
    Ok(t)
}

fn open(addr: &str, kind: u8, a: u64, b: u64) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("floor: connect {addr}"))?;
    s.set_nodelay(true)?;
    let mut head = Vec::with_capacity(24);
    head.extend_from_slice(b"FLOR");
    head.extend_from_slice(&[kind, 0, 0, 0]);
    head.extend_from_slice(&a.to_be_bytes());
    head.extend_from_slice(&b.to_be_bytes());
    s.write_all(&head)?;
    Ok(s)
}

/// `count` copies of `msg`, as many whole messages per write as fit in CHUNK
/// (also `raw`'s way to publish).
pub fn write_messages(s: &mut TcpStream, msg: &[u8], count: u64) -> io::Result<()> {
    let per = (CHUNK / msg.len()).max(1) as u64;
    let batch = msg.repeat(per.min(count) as usize);
    let mut left = count;
    while left > 0 {
        let n = left.min(per);
        s.write_all(&batch[..n as usize * msg.len()])?;
        left -= n;
    }
    Ok(())
}

fn read_deliveries(s: &mut TcpStream) -> Result<()> {
    let mut total = [0u8; 8];
    s.read_exact(&mut total)?;
    let mut left = u64::from_be_bytes(total);
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let n = s.read(&mut buf)?;
        ensure!(n > 0, "floor: stream ended with {left} bytes to go");
        left = left.saturating_sub(n as u64);
    }
    Ok(())
}

/// Reads basic.ack frames until the one for `count`.
fn read_confirms(mut s: TcpStream, count: u64) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut have = 0;
    loop {
        let n = s.read(&mut buf[have..])?;
        ensure!(n > 0, "floor: confirm stream ended");
        have += n;
        let whole = have / wire::ACK_LEN * wire::ACK_LEN;
        if whole > 0 {
            let last = &buf[whole - wire::ACK_LEN..whole];
            let tag = u64::from_be_bytes(last[11..19].try_into().unwrap());
            if tag >= count {
                return Ok(());
            }
            buf.copy_within(whole..have, 0);
            have -= whole;
        }
    }
}

// ------------------------------------------------------------- broker ---

/// The broker side of a floor connection (`kind` from the opening).
pub fn serve(mut s: TcpStream, kind: u8) -> io::Result<()> {
    let mut args = [0u8; 16];
    s.read_exact(&mut args)?;
    let a = u64::from_be_bytes(args[..8].try_into().unwrap());
    let b = u64::from_be_bytes(args[8..].try_into().unwrap());
    match kind {
        b'c' => {
            let body = vec![0u8; a as usize];
            let t = DeliverTemplate::new(1, "floor-consumer", "floor", &body, FRAME_MAX);
            s.write_all(&(t.len() as u64 * b).to_be_bytes())?;
            let per = (CHUNK / t.len()).max(1) as u64;
            let mut buf = Vec::with_capacity(per as usize * t.len());
            let mut tag = 0;
            while tag < b {
                buf.clear();
                for _ in 0..per.min(b - tag) {
                    tag += 1;
                    t.append(&mut buf, tag);
                }
                s.write_all(&buf)?;
            }
        }
        b'p' => {
            sink(&mut s, a, |_| Ok(()))?;
            s.write_all(&[1])?;
        }
        b'k' => {
            let (len, mut confirmed) = (a, 0);
            let mut out = Vec::with_capacity(wire::ACK_LEN);
            sink(&mut s.try_clone()?, len * b, |read| {
                let whole = read / len;
                if whole > confirmed {
                    out.clear();
                    wire::ack(&mut out, 1, whole, true);
                    confirmed = whole;
                    s.write_all(&out)?;
                }
                Ok(())
            })?;
        }
        _ => return Err(io::Error::other("unknown floor kind")),
    }
    Ok(())
}

/// Reads and discards `total` bytes, calling `each` with the running count.
fn sink(
    s: &mut TcpStream,
    total: u64,
    mut each: impl FnMut(u64) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut read = 0;
    while read < total {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        read += n as u64;
        each(read)?;
    }
    Ok(())
}
