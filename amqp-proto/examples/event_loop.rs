//! Embedding the sans-IO core in your own event loop: a non-blocking socket driven by mio.
//!
//! The loop does four things and nothing else: write what the core wants written, read what
//! arrives into the core, sleep until the core's next deadline, and act on the core's events.
//! All protocol behaviour (handshake, heartbeats, confirms, closing) is the core's.
//!
//! Run against a local broker: `cargo run -p amqp-proto --example event_loop [amqp-uri]`.

use std::io::{self, IoSlice, Read, Write};
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use amqp_proto::uri::AmqpUri;
use amqp_proto::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, ChannelId, Confirmation, Connection,
    ConnectionConfig, Event, FieldTable, QueueDeclareOptions, Reply, RequestId,
};
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

    while !conn.is_closed() {
        // 1. Write: hand the queued chunks to one vectored write.
        while conn.wants_write() {
            let mut slices = [IoSlice::new(&[]); 64];
            let n = conn.io_slices(&mut slices);
            match socket.write_vectored(&slices[..n]) {
                Ok(written) => conn.advance_transmit(written),
                // Also "not connected" while the non-blocking connect is still under way.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                    ) =>
                {
                    break;
                }
                Err(e) => conn.handle_transport_error(e.kind(), e.to_string(), Instant::now()),
            }
        }
        // 2. Sleep until the socket is ready or the core's next deadline.
        let timeout = conn
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()));
        poll.poll(&mut events, timeout.or(Some(Duration::from_secs(1))))?;
        // 3. Read everything available straight into the core's buffer.
        loop {
            let mut chunk = [0u8; 64 * 1024];
            match socket.read(&mut chunk) {
                Ok(0) => {
                    conn.handle_eof(Instant::now());
                    break;
                }
                Ok(n) => conn.handle_input(&chunk[..n], Instant::now()),
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
                    step =
                        Step::Declaring(ch, conn.queue_declare(ch, "", opts, FieldTable::new())?);
                }
                (Step::Declaring(ch, id), Event::Completed { id: got, result }) if *id == got => {
                    let Reply::QueueDeclared { queue, .. } = result? else {
                        unreachable!()
                    };
                    println!("declared {queue}");
                    let ch = *ch;
                    conn.basic_consume(
                        ch,
                        &queue,
                        "c1",
                        BasicConsumeOptions::default(),
                        FieldTable::new(),
                    )?;
                    step = Step::Selecting(ch, conn.confirm_select(ch, false)?);
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
                        conn.close("done")?;
                        step = Step::Closing;
                    }
                }
                (_, Event::Closed(reason)) => println!("closed: {reason:?}"),
                (_, Event::Completed { result: Err(e), .. }) => return Err(e.into()),
                _ => {}
            }
        }
    }
    // Flush the close-ok or close we may still owe the broker.
    while let Some(chunk) = conn.pop_transmit() {
        let _ = socket.write_all(&chunk);
    }
    Ok(())
}
