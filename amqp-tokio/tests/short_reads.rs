//! The tokio transport's reads over a real socket, against a scripted broker on loopback:
//! bytes that trickle in (every read short of the buffer, so each one is taken as having
//! drained the socket) and a burst larger than the read buffer (reads that fill it, so the
//! transport must read again before waiting) both reach the consumer whole. A read path that
//! lost a readiness event would leave deliveries unread: the test then times out.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use amqp_conformance::peer::{Script, ScriptedPeer, play_handshake};
use amqp_proto::{
    BasicConsumeOk, ChannelOpenOk, ConnectionTune, DeliveryTag, Frame, Method, ShortString,
};
use amqp_tokio::{BasicConsumeOptions, Connection};
use futures_util::StreamExt;

/// The broker's side over a blocking socket, on a thread of its own.
struct Broker {
    stream: TcpStream,
    peer: ScriptedPeer,
    inbox: VecDeque<Frame>,
}

impl Broker {
    fn flush(&mut self) {
        let bytes = self.peer.take_output();
        self.stream.write_all(&bytes).expect("broker write");
    }

    fn next_frame(&mut self) -> Frame {
        let mut buf = [0u8; 4096];
        while self.inbox.is_empty() {
            let n = self.stream.read(&mut buf).expect("broker read");
            assert!(n > 0, "the client closed the socket");
            let frames = self.peer.receive(&buf[..n]);
            self.inbox.extend(frames);
        }
        self.inbox.pop_front().expect("a frame")
    }
}

impl Script for Broker {
    fn send(&mut self, channel: u16, method: Method) {
        self.peer.send(&Frame::Method(channel, method));
        self.flush();
    }

    fn expect(&mut self, channel: u16) -> Method {
        match self.next_frame() {
            Frame::Method(ch, m) if ch == channel => m,
            other => panic!("expected a method on channel {channel}, got {other:?}"),
        }
    }
}

const TAG: &str = "c1";

/// Accepts one client, plays the handshake, opens its channel and starts its consumer;
/// `deliver` then sends what the test is about.
fn serve(listener: TcpListener, deliver: impl FnOnce(&mut Broker) + Send + 'static) {
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        let mut broker = Broker {
            stream,
            peer: ScriptedPeer::default(),
            inbox: VecDeque::new(),
        };
        play_handshake(
            &mut broker,
            ConnectionTune {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 0,
            },
        );
        assert!(matches!(broker.expect(1), Method::ChannelOpen(_)));
        broker.send(1, ChannelOpenOk::default().into());
        assert!(matches!(broker.expect(1), Method::BasicConsume(_)));
        let ok = BasicConsumeOk {
            consumer_tag: ShortString::try_from(TAG).expect("tag"),
        };
        broker.send(1, ok.into());
        deliver(&mut broker);
        // Hold the socket open until the client hangs up.
        let mut rest = [0u8; 4096];
        while matches!(broker.stream.read(&mut rest), Ok(n) if n > 0) {}
    });
}

/// Connects to a scripted broker, consumes `bodies.len()` deliveries and checks each body.
async fn consume_all(deliver: impl FnOnce(&mut Broker) + Send + 'static, bodies: Vec<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    serve(listener, deliver);
    let run = async {
        let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f?heartbeat=0");
        let conn = Connection::connect(&uri).await.expect("connect");
        let channel = conn.open_channel().await.expect("channel");
        let options = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut consumer = channel
            .basic_consume("q", TAG, options)
            .await
            .expect("consume");
        for (i, body) in bodies.iter().enumerate() {
            let delivery = consumer
                .next()
                .await
                .expect("consumer ended")
                .expect("delivery");
            assert_eq!(delivery.delivery_tag, DeliveryTag(i as u64 + 1));
            assert_eq!(&delivery.body[..], &body[..], "body of delivery {}", i + 1);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("deliveries stopped arriving: a read went missing");
}

fn bodies(count: usize, size: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| (0..size).map(|j| (i * 31 + j) as u8).collect())
        .collect()
}

/// Every delivery written in pieces of 7 bytes with a pause between them: each read the
/// client makes returns less than its buffer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_that_trickle_in_arrive() {
    let sent = bodies(20, 100);
    let expected = sent.clone();
    let deliver = move |broker: &mut Broker| {
        for (i, body) in sent.iter().enumerate() {
            broker.peer.deliver(1, TAG, i as u64 + 1, body);
            for piece in broker.peer.take_output().chunks(7) {
                broker.stream.write_all(piece).expect("broker write");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    consume_all(deliver, expected).await;
}

/// Many deliveries written at once, far more than one read takes: reads that fill the
/// buffer must be followed by more reads, not by a wait for readiness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_read_buffer_arrives() {
    let sent = bodies(400, 2000);
    let expected = sent.clone();
    let deliver = move |broker: &mut Broker| {
        for (i, body) in sent.iter().enumerate() {
            broker.peer.deliver(1, TAG, i as u64 + 1, body);
        }
        broker.flush();
    };
    consume_all(deliver, expected).await;
}
