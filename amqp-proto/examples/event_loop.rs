//! Embedding the sans-IO core in your own event loop: a non-blocking socket driven by mio.
//!
//! The loop does four things and nothing else: write what the core wants written, read what
//! arrives into the core, sleep until the core's next deadline, and act on the core's events
//! (the order [`Connection`]'s documentation states).
//! All protocol behaviour (handshake, heartbeats, confirms, closing) is the core's.
//!
//! Automatic recovery is on: if the connection is lost, the core waits out its backoff and
//! asks for a fresh socket ([`Event::Dial`]); the loop connects one and says so
//! ([`Connection::transport_ready`]), and the core logs in again and replays channels, the
//! queue, the consumer and confirm mode. (Try `rabbitmqctl close_connection` during a run.)
//!
//! Run against a local broker: `cargo run -p amqp-proto --example event_loop [amqp-uri]`.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use amqp_proto::recovery::RecoveryConfig;
use amqp_proto::uri::AmqpUri;
use amqp_proto::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, ChannelId, ConfirmSelectOptions,
    Confirmation, Connection, ConnectionConfig, Event, QueueDeclareOptions, Reply, RequestId,
};
use bytes::{Buf, Bytes, BytesMut};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

const MESSAGES: u64 = 1000;

/// Where the script is; each step starts when the previous command completes.
#[derive(Debug, PartialEq)]
enum Step {
    Connecting,
    OpeningChannel(RequestId),
    Declaring(ChannelId, RequestId),
    Selecting(ChannelId, RequestId),
    Publishing(ChannelId, u64),
    Consuming(ChannelId, u64),
    Closing,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let uri: AmqpUri = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
        .parse()?;
    let addr = (uri.host.as_str(), uri.port)
        .to_socket_addrs()?
        .next()
        .ok_or("host did not resolve")?;
    let mut config = ConnectionConfig::from_uri(&uri);
    config.heartbeat = 5; // short, so heartbeats show up in a short run
    config.recovery = Some(RecoveryConfig {
        seed: u64::from(std::process::id()), // jitter differs between processes
        ..RecoveryConfig::default()
    });
    let mut conn = Connection::new(config, Instant::now());

    let mut socket = TcpStream::connect(addr)?;
    let mut poll = Poll::new()?;
    poll.registry().register(
        &mut socket,
        Token(0),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    let mut events = Events::with_capacity(8);
    let mut step = Step::Connecting;
    let mut confirmed = 0;
    // Output taken from the core but not yet accepted by the socket, and the read buffer.
    let mut out: VecDeque<Bytes> = VecDeque::new();
    let mut rbuf = BytesMut::with_capacity(64 * 1024);

    while !conn.is_closed() {
        // 1. Write: hand the queued chunks to vectored writes until the socket is full.
        if let Err(e) = write_out(&mut conn, &mut socket, &mut out) {
            conn.handle_transport_error(e.kind(), e.to_string(), Instant::now());
        }
        // 2. Sleep until the socket is ready or the core's next deadline.
        let timeout = conn
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()));
        poll.poll(&mut events, timeout.or(Some(Duration::from_secs(1))))?;
        // 3. Read everything available, each read where the core says: the payload of a
        //    large body straight into the buffer it is joined in (lent by the core), the
        //    rest into our buffer, which the core decodes in place (received bodies are
        //    slices of it, not copies).
        loop {
            let read = match conn.take_body_buffer(&mut rbuf) {
                Some(mut body) => {
                    let room = body.capacity() - body.len();
                    let read = read_into(&mut socket, &mut body, room);
                    // Given back whatever the read did.
                    conn.process_body(body, &mut rbuf, Instant::now());
                    read.map(|n| (n, false))
                }
                None => {
                    let limit = conn.input_read_limit().unwrap_or(64 * 1024);
                    read_into(&mut socket, &mut rbuf, limit).map(|n| (n, true))
                }
            };
            match read {
                Ok((0, _)) => {
                    conn.handle_eof(Instant::now());
                    break;
                }
                Ok((_, true)) => conn.process_input(&mut rbuf, Instant::now()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    conn.handle_transport_error(e.kind(), e.to_string(), Instant::now());
                    break;
                }
            }
        }
        conn.handle_timeout(Instant::now());
        // 4. Act on events: this is the whole application.
        while let Some(event) = conn.poll_event() {
            match (&step, event) {
                (Step::Connecting, Event::Connected { tuning, .. }) => {
                    println!("connected: {tuning:?}");
                    step = Step::OpeningChannel(conn.open_channel()?.1);
                }
                (Step::OpeningChannel(id), Event::Completed { id: got, result }) if *id == got => {
                    let Reply::ChannelOpened(ch) = result? else {
                        unreachable!()
                    };
                    let opts = QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    };
                    step = Step::Declaring(ch, conn.queue_declare(ch, "", opts)?);
                }
                (Step::Declaring(ch, id), Event::Completed { id: got, result }) if *id == got => {
                    let Reply::QueueDeclared { queue, .. } = result? else {
                        unreachable!()
                    };
                    println!("declared {queue}");
                    let ch = *ch;
                    conn.basic_consume(ch, &queue, "c1", BasicConsumeOptions::default())?;
                    step = Step::Selecting(
                        ch,
                        conn.confirm_select(ch, ConfirmSelectOptions::default())?,
                    );
                    for i in 0..MESSAGES {
                        let body = format!("message {i}").into_bytes().into();
                        let props = BasicProperties::default().with_delivery_mode(2);
                        conn.basic_publish(
                            ch,
                            "",
                            &queue,
                            BasicPublishOptions::default(),
                            &props,
                            &body,
                        )?;
                    }
                }
                (Step::Selecting(ch, id), Event::Completed { id: got, .. }) if *id == got => {
                    step = Step::Publishing(*ch, 0);
                }
                (
                    _,
                    Event::Confirmed {
                        outcome: Confirmation::Ack(_),
                        ..
                    },
                ) => confirmed += 1,
                (Step::Publishing(ch, n) | Step::Consuming(ch, n), Event::Delivery(d)) => {
                    let (ch, n) = (*ch, *n + 1);
                    conn.basic_ack(ch, d.delivery_tag, false)?;
                    step = Step::Consuming(ch, n);
                    if n == MESSAGES {
                        println!("consumed {MESSAGES}, {confirmed} publishes confirmed");
                        conn.close(Instant::now(), "done")?;
                        step = Step::Closing;
                    }
                }
                (_, Event::RecoveryStarted { cause, .. }) => println!("lost ({cause}), recovering"),
                (_, Event::Dial { endpoint, .. }) => {
                    // A fresh socket, to the endpoint named (none configured here: the same
                    // address); what the old one held is dropped with it.
                    let target = match endpoint {
                        Some(e) => (e.host.as_str(), e.port).to_socket_addrs()?.next(),
                        None => Some(addr),
                    };
                    let _ = poll.registry().deregister(&mut socket);
                    out.clear();
                    rbuf.clear();
                    match target.map(TcpStream::connect) {
                        Some(Ok(fresh)) => {
                            socket = fresh;
                            poll.registry().register(
                                &mut socket,
                                Token(0),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conn.transport_ready(Instant::now())?;
                        }
                        Some(Err(e)) => {
                            conn.handle_transport_error(e.kind(), e.to_string(), Instant::now());
                        }
                        None => conn.handle_transport_error(
                            io::ErrorKind::NotFound,
                            "endpoint did not resolve".into(),
                            Instant::now(),
                        ),
                    }
                }
                (_, Event::Recovered { took, .. }) => println!("recovered in {took:?}"),
                (_, Event::Closed(reason)) => println!("closed: {reason:?}"),
                (_, Event::Completed { result: Err(e), .. }) => return Err(e.into()),
                _ => {}
            }
        }
    }
    // Flush the close-ok or close we may still owe the broker.
    for chunk in out.drain(..) {
        let _ = socket.write_all(&chunk);
    }
    while let Some(chunk) = conn.poll_transmit(Instant::now()) {
        let _ = socket.write_all(&chunk);
    }
    Ok(())
}

/// Writes the core's output until it is all written or the socket would block; `out` keeps
/// what the socket did not take yet.
fn write_out(
    conn: &mut Connection,
    socket: &mut TcpStream,
    out: &mut VecDeque<Bytes>,
) -> io::Result<()> {
    loop {
        while out.len() < 64 {
            match conn.poll_transmit(Instant::now()) {
                Some(chunk) => out.push_back(chunk),
                None => break,
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        let slices: Vec<IoSlice<'_>> = out.iter().map(|c| IoSlice::new(c)).collect();
        match socket.write_vectored(&slices) {
            Ok(mut written) => {
                while let Some(front) = out.front_mut() {
                    if front.len() > written {
                        front.advance(written);
                        break;
                    }
                    written -= front.len();
                    out.pop_front();
                }
            }
            // Also "not connected" while the non-blocking connect is still under way.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                ) =>
            {
                return Ok(());
            }
            Err(e) => {
                out.clear();
                return Err(e);
            }
        }
    }
}

/// Reads at most `max` bytes from `socket`, appended to `buf`.
fn read_into(socket: &mut TcpStream, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    let start = buf.len();
    buf.resize(start + max, 0);
    let read = socket.read(&mut buf[start..]);
    buf.truncate(start + *read.as_ref().unwrap_or(&0));
    read
}
