//! Arbitrary bytes from the "broker" into a client connection that has finished its handshake.
//!
//! The handshake is completed in memory with frames built by the codec; then channel 1 is put in
//! confirm mode with consumer `c1` and unconfirmed publishes, channel 2 has a `basic.qos` waiting
//! for its answer, and an update-secret is pending. After that the fuzz bytes are fed in pieces,
//! with time moving on between pieces, the client acking deliveries and publishing as it goes,
//! and finally the stream ends.
//!
//! Input layout: `[selector, piece, tick, bytes...]`. The selector picks frame_max, heartbeat,
//! max_body_size and the input API (`handle_input`, `process_input`, or `process_input` with
//! large body payloads read straight into the buffer `take_body_buffer` lends); `piece` sizes the reads (but an input is cut into at most
//! 128 reads); `tick` is how far (in 10 ms steps) time moves between reads.
//!
//! Checks: no panic; per read, the output queued and the events emitted stay within a bound
//! proportional to the bytes read, and nothing at all after `Closed`; the read buffer (when
//! the harness owns it) never holds a whole frame's worth; `poll_timeout` is always in the
//! future; and the bookkeeping holds: every request completes exactly once, every confirm-mode publish gets
//! exactly one outcome, every consumer ends exactly once, `Closed` comes once and last.
#![no_main]

use std::time::{Duration, Instant};

use amqp_proto::{
    BasicConsumeOk, BasicConsumeOptions, BasicProperties, BasicPublishOptions, BasicQosOptions,
    ChannelId, ChannelOpenOk, ConfirmSelectOk, ConfirmSelectOptions, Connection, ConnectionConfig,
    ConnectionOpenOk, ConnectionStart, ConnectionTune, Event, FieldTable, Frame, LongString,
    Method,
};
use amqp_proto_fuzz::Books;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

/// The most reads one input is cut into (see the fuzz target's body).
const MAX_READS: usize = 128;

/// Every body the harness publishes is a prefix of this one.
static BODY: [u8; 5000] = [0x5a; 5000];

struct Harness {
    conn: Connection,
    now: Instant,
    books: Books,
    /// Feed through a read buffer owned here (`process_input`) rather than `handle_input`.
    use_read_buf: bool,
    /// With `use_read_buf`: each read goes where the core says (`take_body_buffer`).
    body_read: bool,
    rbuf: BytesMut,
    frame_max: u32,
}

impl Harness {
    fn feed(&mut self, mut bytes: &[u8]) {
        if self.body_read {
            while !bytes.is_empty() {
                if let Some(mut body) = self.conn.take_body_buffer(&mut self.rbuf) {
                    let room = body.capacity() - body.len();
                    assert!(room > 0, "a body buffer lent without room");
                    let n = room.min(bytes.len());
                    body.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.conn.process_body(body, &mut self.rbuf, self.now);
                } else {
                    let limit = self.conn.input_read_limit().unwrap_or(usize::MAX);
                    let n = limit.min(bytes.len());
                    self.rbuf.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.conn.process_input(&mut self.rbuf, self.now);
                }
            }
        } else if self.use_read_buf {
            self.rbuf.extend_from_slice(bytes);
            self.conn.process_input(&mut self.rbuf, self.now);
        } else {
            self.conn.handle_input(bytes, self.now);
        }
    }

    fn feed_frames(&mut self, frames: &[Frame]) {
        let mut wire = BytesMut::new();
        for f in frames {
            f.encode(&mut wire).expect("setup frame encodes");
        }
        self.feed(&wire);
    }

    /// Takes events (acking deliveries) and output; checks the bounds for a step that read
    /// `read` bytes.
    fn settle(&mut self, read: usize) {
        let outstanding =
            self.books.unconfirmed.len() + self.books.pending.len() + self.books.consumers.len();
        let queued = self.conn.transmit_len();
        assert!(
            !self.books.closed || queued == 0,
            "{queued} bytes queued after Closed"
        );
        assert!(
            queued <= 16_384 + 64 * read,
            "{queued} bytes queued after reading {read}"
        );
        let mut events = 0;
        while let Some(event) = self.conn.poll_event() {
            events += 1;
            self.books.check(&event);
            if let Event::Delivery(d) = &event {
                let _ = self.conn.basic_ack(d.channel, d.delivery_tag, false);
            }
        }
        assert!(
            events <= 64 + read + outstanding,
            "{events} events after reading {read} bytes with {outstanding} things outstanding"
        );
        while self.conn.poll_transmit(self.now).is_some() {}
        assert_eq!(self.conn.transmit_len(), 0);
        if !self.conn.is_closed() && self.frame_max != 0 {
            let held = self.rbuf.len();
            assert!(
                held < self.frame_max as usize,
                "read buffer holds {held} bytes"
            );
        }
    }

    fn publish(&mut self, channel: u16, mandatory: bool, len: usize) {
        let options = BasicPublishOptions {
            mandatory,
            ..Default::default()
        };
        // A slice of one static body: no allocation or fill per publish.
        let body = Bytes::from_static(&BODY[..len]);
        if let Ok(Some(tag)) = self.conn.basic_publish(
            ChannelId(channel),
            "",
            "q",
            options,
            &BasicProperties::default(),
            &body,
        ) {
            assert!(
                self.books.unconfirmed.insert((channel, tag.0)),
                "publish tag {tag:?} reused"
            );
        }
    }
}

fn setup(selector: u8) -> Harness {
    let frame_max = if selector & 1 == 0 { 4096 } else { 131_072 };
    let heartbeat = [0u16, 1, 60, 5][usize::from((selector >> 1) & 3)];
    let config = ConnectionConfig {
        frame_max,
        heartbeat,
        max_body_size: if selector & 8 == 0 { 1 << 20 } else { 100 },
        high_water_mark: 1 << 16,
        ..Default::default()
    };
    let now = Instant::now();
    let mut h = Harness {
        conn: Connection::new(config, now),
        now,
        books: Books::default(),
        use_read_buf: selector & 16 != 0,
        body_read: selector & 48 == 48,
        rbuf: BytesMut::new(),
        frame_max,
    };
    h.settle(0);
    let start = ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: FieldTable::new().with("product", "fuzz"),
        mechanisms: LongString::from("PLAIN"),
        locales: LongString::from("en_US"),
    };
    h.feed_frames(&[
        Frame::Method(0, start.into()),
        Frame::Method(
            0,
            ConnectionTune {
                channel_max: 16,
                frame_max,
                heartbeat: 60,
            }
            .into(),
        ),
        Frame::Method(0, ConnectionOpenOk::default().into()),
    ]);
    assert!(matches!(h.conn.poll_event(), Some(Event::Connected { .. })));
    let (one, id) = h.conn.open_channel().expect("open channel 1");
    h.books.issued(Ok(id), one.0);
    let (two, id) = h.conn.open_channel().expect("open channel 2");
    h.books.issued(Ok(id), two.0);
    h.feed_frames(&[
        Frame::Method(one.0, ChannelOpenOk::default().into()),
        Frame::Method(two.0, ChannelOpenOk::default().into()),
    ]);
    h.settle(0);
    let id = h.conn.confirm_select(one, ConfirmSelectOptions::default());
    h.books.issued(id, one.0);
    let id = h
        .conn
        .basic_consume(one, "q", "c1", BasicConsumeOptions::default());
    h.books.issued(id, one.0);
    h.feed_frames(&[
        Frame::Method(one.0, ConfirmSelectOk {}.into()),
        Frame::Method(
            one.0,
            Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: "c1".try_into().unwrap(),
            }),
        ),
    ]);
    h.settle(0);
    assert_eq!(h.books.consumers.len(), 1);
    h.publish(one.0, false, 10);
    h.publish(one.0, true, 5000);
    h.publish(one.0, false, 0);
    let id = h.conn.basic_qos(two, 10, BasicQosOptions::default());
    h.books.issued(id, two.0);
    let id = h.conn.update_secret(b"token", "fuzz");
    h.books.issued(id, 0);
    h.settle(0);
    assert_eq!(h.books.pending.len(), 2);
    assert_eq!(h.books.unconfirmed.len(), 3);
    h
}

fuzz_target!(|data: &[u8]| {
    let [selector, piece, tick, rest @ ..] = data else {
        return;
    };
    let mut h = setup(*selector);
    // At most MAX_READS reads: the work per read (settle, timers, publishes) would otherwise
    // dominate long inputs cut into one-byte reads, and one-byte reads of a short input
    // already split every frame everywhere.
    let piece = usize::from(*piece)
        .max(1)
        .max(rest.len().div_ceil(MAX_READS));
    let tick = Duration::from_millis(10 * u64::from(*tick));
    for (i, chunk) in rest.chunks(piece).enumerate() {
        let was_closed = h.conn.is_closed();
        h.feed(chunk);
        h.now += tick;
        h.conn.handle_timeout(h.now);
        if let Some(deadline) = h.conn.poll_timeout() {
            // Having just handled `now`, the core asks to be woken strictly later (anything
            // else would make a caller spin).
            assert!(
                deadline > h.now,
                "poll_timeout {deadline:?} is not after {:?}",
                h.now
            );
        }
        // Output and events of the read and of the timers, taken together as a loop would.
        h.settle(chunk.len());
        if i % 4 == 0 {
            h.publish(1, i % 8 == 0, i % 300);
        }
        if was_closed {
            // One piece after the end was fed and checked to be ignored; the rest would be too.
            break;
        }
    }
    // The stream ends: everything must be accounted for.
    h.conn.handle_eof(h.now);
    h.settle(0);
    assert!(h.conn.is_closed());
    h.books.check_all_ended();
    assert_eq!(h.conn.poll_timeout(), None);
});
