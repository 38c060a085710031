//! In-memory codec throughput on a realistic delivery stream, ours against `amq-protocol` (the
//! codec lapin uses), in the same run.
//!
//! A message is `basic.deliver` + a content header (content_type, delivery_mode and a
//! three-entry headers table) + the body, split at frame_max 131072. Each benchmark handles a
//! batch of messages and reports messages per second:
//!
//! - decode: the batch pre-encoded in one buffer, decoded frame by frame (ours: `FrameDecoder`
//!   on a fresh `BytesMut` copy made outside the timed section, as a socket read would leave
//!   it, and freed outside it too, as a connection keeps its read buffer; theirs: `parse_frame`
//!   in a loop over the slice);
//! - encode: ours `Transmit::push_content` then draining the chunks; theirs `gen_frame` of the
//!   pre-built frames into a reused `Vec`. Each delivery has its own properties and body on
//!   both sides (see [`Delivery`]).
//!
//! Those batches (about 250 KB) stay in cache. `large_stream` (after the criterion groups) also
//! decodes and encodes one 32 MiB stream of the same deliveries at 16 B and 1 KiB, the two
//! codecs interleaved round by round (alternating which goes first), as a busy consumer's read
//! buffer looks; it prints the median of each and the ratio, by wall clock and by the thread's
//! on-CPU time (which a loaded machine disturbs less), and for each direction a floor (decode:
//! the frames walked by their size fields, end octets checked, every cache line read once;
//! encode: the bodies copied with no framing, and again with the inputs any encoder must read
//! read too), our share of it and the ratio that floor would reach; and our decoding once more
//! with each delivery's content type and one header read, as a consumer would.
//!
//! Run: `cargo bench -p amqp-proto --bench codec -- --warm-up-time 1 --measurement-time 3`
//! (`-- large` for the large stream alone, `-- profile` for one pass of each codec to profile).

use std::hint::black_box;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, basic as their_basic};
use amq_protocol::types as their;
use amqp_proto::{
    BasicDeliver, BasicProperties, FieldTable, Frame, FrameDecoder, Method, ShortString, Transmit,
};
use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group};

const FRAME_MAX: u32 = 131_072;
const CHANNEL: u16 = 1;
const CONSUMER_TAG: &str = "amq.ctag-Y3bX8kqQZr2mW7n1Tf9v0A";
const EXCHANGE: &str = "orders";
const ROUTING_KEY: &str = "orders.created.eu-west";
const CONTENT_TYPE: &str = "application/json";
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// (label, body size, messages per batch)
const SIZES: &[(&str, usize, usize)] = &[
    ("16B", 16, 1000),
    ("1KiB", 1024, 1000),
    ("128KiB", 128 * 1024, 64),
];

fn body(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

// --- ours -------------------------------------------------------------------------------------

fn our_deliver(tag: u64) -> Method {
    BasicDeliver {
        consumer_tag: ShortString::from_static(CONSUMER_TAG),
        delivery_tag: tag,
        redelivered: false,
        exchange: ShortString::from_static(EXCHANGE),
        routing_key: ShortString::from_static(ROUTING_KEY),
    }
    .into()
}

fn our_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type(CONTENT_TYPE)
        .with_delivery_mode(2)
        .with_headers(
            // In key order, as amq-protocol (a BTreeMap) writes them, so both streams agree.
            FieldTable::new()
                .with("x-retry", 3i32)
                .with("x-source", "billing")
                .with("x-trace-id", TRACE_ID),
        )
}

/// One delivery as our encoder is handed it: each has its own properties and body, as a
/// publisher's messages do and as amq-protocol's pre-built frames (`their_frames`) do. With
/// one shared body and properties ours would read them from cache while amq-protocol reads
/// every message's own copy from memory (on the large stream, tens of MiB of it).
struct Delivery {
    method: Method,
    properties: BasicProperties,
    body: Bytes,
}

fn our_deliveries(size: usize, n: usize) -> Vec<Delivery> {
    let properties = our_properties();
    let body = body(size);
    (0..n)
        .map(|i| Delivery {
            method: our_deliver(i as u64 + 1),
            properties: properties.clone(),
            body: Bytes::copy_from_slice(&body),
        })
        .collect()
}

fn our_stream(size: usize, n: usize) -> Bytes {
    let props = our_properties();
    let body = body(size);
    let mut out = Transmit::default();
    for i in 0..n {
        out.push_content(
            CHANNEL,
            &our_deliver(i as u64 + 1),
            &props,
            &body,
            FRAME_MAX,
        )
        .expect("encodes");
    }
    let mut wire = BytesMut::with_capacity(out.len());
    while let Some(chunk) = out.pop_chunk() {
        wire.extend_from_slice(&chunk);
    }
    wire.freeze()
}

/// Decodes the whole buffer; returns the number of frames and the (now empty) read buffer,
/// which a connection would keep for the next read: freeing it is not part of decoding.
// Never inlined, here and in the other three codec loops, so that a profile (`-- profile`)
// can attribute each codec's cost to one function.
#[inline(never)]
fn our_decode(mut buf: BytesMut) -> (usize, BytesMut) {
    let mut dec = FrameDecoder::new(FRAME_MAX);
    let mut frames = 0;
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(frame)) => {
                black_box(&frame);
                frames += 1;
            }
            Ok(None) => return (frames, buf),
            Err(e) => panic!("invalid stream: {e}"),
        }
    }
}

/// What a consumer reads of a delivery's properties: the content type and one header.
fn read_properties(p: &BasicProperties) -> usize {
    let content_type = p.content_type().map_or(0, str::len);
    let trace = p
        .headers()
        .and_then(|h| h.get("x-trace-id").map(|v| v.tag()));
    content_type + usize::from(trace.unwrap_or(0))
}

/// [`our_decode`] with the properties of each content header read as a consumer would
/// ([`read_properties`]), since they are kept encoded until read.
#[inline(never)]
fn our_decode_read(mut buf: BytesMut) -> (usize, BytesMut) {
    let mut dec = FrameDecoder::new(FRAME_MAX);
    let mut frames = 0;
    let mut folded = 0;
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(frame)) => {
                if let Frame::Header(_, h) = &frame {
                    folded ^= read_properties(&h.properties);
                }
                black_box(&frame);
                frames += 1;
            }
            Ok(None) => {
                black_box(folded);
                return (frames, buf);
            }
            Err(e) => panic!("invalid stream: {e}"),
        }
    }
}

#[inline(never)]
fn our_encode(out: &mut Transmit, deliveries: &[Delivery]) {
    for d in deliveries {
        out.push_content(CHANNEL, &d.method, &d.properties, &d.body, FRAME_MAX)
            .expect("encodes");
    }
    while let Some(chunk) = out.pop_chunk() {
        black_box(chunk);
    }
}

// --- amq-protocol -----------------------------------------------------------------------------

fn their_frames(size: usize, n: usize) -> Vec<AMQPFrame> {
    let mut headers = their::FieldTable::default();
    headers.insert(
        "x-trace-id".into(),
        their::AMQPValue::LongString(TRACE_ID.into()),
    );
    headers.insert("x-retry".into(), their::AMQPValue::LongInt(3));
    headers.insert(
        "x-source".into(),
        their::AMQPValue::LongString("billing".into()),
    );
    let properties = their_basic::AMQPProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_headers(headers);
    let body = body(size);
    let piece = FRAME_MAX as usize - 8;
    let mut frames = Vec::new();
    for i in 0..n {
        frames.push(AMQPFrame::Method(
            CHANNEL,
            AMQPClass::Basic(their_basic::AMQPMethod::Deliver(their_basic::Deliver {
                consumer_tag: CONSUMER_TAG.into(),
                delivery_tag: i as u64 + 1,
                redelivered: false,
                exchange: EXCHANGE.into(),
                routing_key: ROUTING_KEY.into(),
            })),
        ));
        frames.push(AMQPFrame::Header(
            CHANNEL,
            AMQPContentHeader {
                class_id: 60,
                body_size: size as u64,
                properties: properties.clone(),
            },
        ));
        for chunk in body.chunks(piece) {
            frames.push(AMQPFrame::Body(CHANNEL, chunk.to_vec()));
        }
    }
    frames
}

#[inline(never)]
fn their_encode(buf: Vec<u8>, frames: &[AMQPFrame]) -> Vec<u8> {
    let mut ctx = WriteContext::from(buf);
    for f in frames {
        ctx = gen_frame(f)(ctx).expect("encodes");
    }
    ctx.into_inner().0
}

/// The floor under any encoder of these deliveries: their bodies copied one after the other
/// into a reused buffer, with no framing at all. On the large stream this is memory traffic
/// both codecs pay too (each reads every message's own body and writes it out).
#[inline(never)]
fn floor_encode(buf: &mut Vec<u8>, deliveries: &[Delivery]) -> usize {
    buf.clear();
    for d in deliveries {
        buf.extend_from_slice(&d.body);
    }
    buf.len()
}

/// A floor that also reads the inputs: [`floor_encode`]'s body copies plus the loads any
/// encoder of these deliveries makes before writing a byte of framing: the method's fields,
/// the properties' flags and the start of their encoded list (shared by the clones, as a
/// clone of `BasicProperties` shares its bytes). Nothing is written but the bodies. This, not
/// the body copy alone, is what an encoder's memory traffic cannot go below. (Until
/// 2026-11-30 the properties were a 416-byte struct with a headers vector of its own per
/// clone, about as many cache lines again as a 1 KiB body.)
#[inline(never)]
fn floor_encode_inputs(buf: &mut Vec<u8>, deliveries: &[Delivery]) -> usize {
    buf.clear();
    let mut folded = 0usize;
    for d in deliveries {
        if let Method::BasicDeliver(m) = &d.method {
            folded ^= m.delivery_tag as usize
                ^ m.consumer_tag.len()
                ^ m.exchange.len()
                ^ m.routing_key.len()
                ^ usize::from(m.redelivered);
        }
        folded ^= usize::from(d.properties.flags());
        folded ^= d.properties.content_type().map_or(0, str::len);
        buf.extend_from_slice(&d.body);
    }
    black_box(folded);
    buf.len()
}

/// The floor under any decoder of this stream: each frame's header read, its size followed
/// to its end octet, which is checked, and on to the next frame; no parsing. With only those
/// reads each frame's end waits for memory after its header did (one wait after another), so
/// the floor also reads one byte of every cache line of each frame in order, which lets the
/// hardware prefetcher stream the buffer in ahead: that is faster, and what our decoder does
/// for large frames. With `DECODE_FLOOR=walk` in the environment, the walk alone. Returns the
/// number of frames, like the decoders; it runs on a fresh copy of the stream, as ours does.
#[inline(never)]
fn floor_decode(buf: &[u8], lines: bool) -> usize {
    let mut frames = 0;
    let mut at = 0;
    let mut folded = 0u8;
    while let Some(&[_, _, _, s0, s1, s2, s3]) = buf.get(at..at + 7) {
        let end = at + 7 + u32::from_be_bytes([s0, s1, s2, s3]) as usize;
        if lines {
            let frame = buf.get(at..end).expect("whole frame");
            folded = frame.iter().step_by(64).fold(folded, |x, &b| x ^ b);
        }
        assert_eq!(buf.get(end), Some(&0xCE), "frame end");
        at = end + 1;
        frames += 1;
    }
    black_box(folded);
    frames
}

/// Whether the decode floor reads every cache line (see [`floor_decode`]).
fn floor_reads_lines() -> bool {
    std::env::var_os("DECODE_FLOOR").is_none_or(|v| v != "walk")
}

#[inline(never)]
fn their_decode(mut input: &[u8]) -> usize {
    let mut frames = 0;
    while !input.is_empty() {
        match parse_frame(input) {
            Ok((rest, frame)) => {
                black_box(&frame);
                input = rest;
                frames += 1;
            }
            Err(e) => panic!("invalid stream: {e}"),
        }
    }
    frames
}

// --- benchmarks -------------------------------------------------------------------------------

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for &(label, size, n) in SIZES {
        let wire = our_stream(size, n);
        let frames_per_msg = 2 + size.div_ceil(FRAME_MAX as usize - 8);
        // Both sides agree on the stream, and amq-protocol encodes it to the same bytes.
        assert_eq!(their_encode(Vec::new(), &their_frames(size, n)), wire);
        assert_eq!(our_decode(BytesMut::from(&wire[..])).0, n * frames_per_msg);
        assert_eq!(their_decode(&wire), n * frames_per_msg);
        check_body_is_sliced(&wire, size);

        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("amqp-proto", label), &wire, |b, wire| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                our_decode,
                BatchSize::LargeInput,
            )
        });
        group.bench_with_input(BenchmarkId::new("amq-protocol", label), &wire, |b, wire| {
            b.iter(|| their_decode(wire))
        });
    }
    group.finish();
}

/// Our decoded body frames point into the read buffer: the body bytes are never copied.
fn check_body_is_sliced(wire: &Bytes, size: usize) {
    let mut buf = BytesMut::from(&wire[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let mut dec = FrameDecoder::new(FRAME_MAX);
    let mut seen = 0;
    while let Some(frame) = dec.decode(&mut buf).unwrap() {
        if let Frame::Body(_, b) = frame {
            assert!(range.contains(&(b.as_ptr() as usize)), "body was copied");
            seen += b.len();
        }
    }
    assert_eq!(seen % size, 0);
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for &(label, size, n) in SIZES {
        group.throughput(Throughput::Elements(n as u64));

        let deliveries = our_deliveries(size, n);
        let mut out = Transmit::default();
        group.bench_function(BenchmarkId::new("amqp-proto", label), |b| {
            b.iter(|| our_encode(&mut out, &deliveries))
        });

        let frames = their_frames(size, n);
        let mut buf = Vec::new();
        group.bench_function(BenchmarkId::new("amq-protocol", label), |b| {
            b.iter(|| {
                buf.clear();
                buf = their_encode(std::mem::take(&mut buf), &frames);
                black_box(buf.len());
            })
        });
    }
    group.finish();
}

/// Bytes in the large stream.
const LARGE_STREAM: usize = 32 << 20;
/// Rounds of the large stream; each round runs every codec once.
const LARGE_ROUNDS: usize = 11;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Nanoseconds this thread has spent on a CPU, so that time spent preempted by other
/// processes on a loaded machine is not counted.
///
/// `CLOCK_THREAD_CPUTIME_ID`, which adds the running slice: `/proc/thread-self/schedstat`
/// (used before) only advances at scheduler ticks (4 ms apart at HZ=250), as long as one
/// whole pass of our encoder over the large stream at 1 KiB.
fn on_cpu_nanos() -> Option<u64> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(t.tv_sec)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(u64::try_from(t.tv_nsec).ok()?)
}

/// Seconds `f` takes: (wall clock, on-CPU time if the system tells it).
fn timed<T>(f: impl FnOnce() -> T) -> (f64, Option<f64>) {
    let cpu = on_cpu_nanos();
    let t = std::time::Instant::now();
    black_box(f());
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu.zip(on_cpu_nanos()).map(|(a, b)| (b - a) as f64 / 1e9);
    (wall, cpu)
}

fn large_stream() {
    for (label, size) in [("16B", 16), ("1KiB", 1024)] {
        let one = our_stream(size, 1).len();
        let n = LARGE_STREAM / one;
        let wire = our_stream(size, n);
        let frames = n * 3;
        assert_eq!(our_decode(BytesMut::from(&wire[..])).0, frames);
        assert_eq!(their_decode(&wire), frames);
        assert_eq!(our_decode_read(BytesMut::from(&wire[..])).0, frames);
        assert_eq!(floor_decode(&wire, floor_reads_lines()), frames);

        let deliveries = our_deliveries(size, n);
        let their = their_frames(size, n);
        let mut out = Transmit::default();
        let mut their_buf = Vec::new();
        let mut floor_buf = Vec::new();
        let lines = floor_reads_lines();

        let mut inputs_buf = Vec::new();

        // Messages per second by wall clock and by on-CPU time: our decode, their decode, our
        // encode, their encode, the encode floor, the decode floor, the encode floor with the
        // inputs read, our decode with the properties read.
        let mut t: [Vec<f64>; 8] = Default::default();
        let mut c: [Vec<f64>; 8] = Default::default();
        for round in 0..LARGE_ROUNDS {
            // Alternate who goes first, so neither always runs on a cache the other warmed.
            let order: [usize; 8] = if round % 2 == 0 {
                [0, 1, 7, 5, 2, 3, 4, 6]
            } else {
                [7, 1, 0, 5, 3, 2, 6, 4]
            };
            for which in order {
                let (wall, cpu) = match which {
                    0 => {
                        let buf = BytesMut::from(&wire[..]);
                        let mut kept = None;
                        let secs = timed(|| kept = Some(our_decode(buf)));
                        drop(kept);
                        secs
                    }
                    1 => timed(|| their_decode(&wire)),
                    2 => timed(|| our_encode(&mut out, &deliveries)),
                    3 => timed(|| {
                        their_buf.clear();
                        their_buf = their_encode(std::mem::take(&mut their_buf), &their);
                        their_buf.len()
                    }),
                    4 => timed(|| floor_encode(&mut floor_buf, &deliveries)),
                    6 => timed(|| floor_encode_inputs(&mut inputs_buf, &deliveries)),
                    7 => {
                        let buf = BytesMut::from(&wire[..]);
                        let mut kept = None;
                        let secs = timed(|| kept = Some(our_decode_read(buf)));
                        drop(kept);
                        secs
                    }
                    _ => {
                        // The same fresh copy as our decoder gets, so the same memory state.
                        let buf = BytesMut::from(&wire[..]);
                        let secs = timed(|| floor_decode(&buf, lines));
                        drop(buf);
                        secs
                    }
                };
                t[which].push(n as f64 / wall);
                if let Some(cpu) = cpu {
                    c[which].push(n as f64 / cpu);
                }
            }
        }
        for (clock, t) in [("wall clock", t), ("on-CPU time", c)] {
            if t.iter().any(Vec::is_empty) {
                continue;
            }
            let [od, td, oe, te, fe, fd, fi, or] = t.map(median);
            println!(
                "large stream {label} ({clock}): decode and read content type and a header: \
                 amqp-proto {:.2} M msg/s, ratio {:.2}x to amq-protocol's decode",
                or / 1e6,
                or / td,
            );
            println!(
                "large stream {label} ({} MiB, {n} deliveries, median of {LARGE_ROUNDS}, {clock}): \
                 decode amqp-proto {:.2} M msg/s, amq-protocol {:.2} M msg/s, ratio {:.2}x \
                 (floor {:.2} M msg/s: ours at {:.0} % of it, at most {:.2}x); \
                 encode amqp-proto {:.2} M msg/s, amq-protocol {:.2} M msg/s, ratio {:.2}x \
                 (floor {:.2} M msg/s: at most {:.2}x; with the inputs read {:.2} M msg/s: \
                 ours at {:.0} % of it, at most {:.2}x)",
                wire.len() >> 20,
                od / 1e6,
                td / 1e6,
                od / td,
                fd / 1e6,
                100.0 * od / fd,
                fd / td,
                oe / 1e6,
                te / 1e6,
                oe / te,
                fe / 1e6,
                fe / te,
                fi / 1e6,
                100.0 * oe / fi,
                fi / te,
            );
        }
    }
}

/// One pass of each codec over an 8 MiB stream of `size`-byte bodies, for a profiler (e.g.
/// `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='codec::our_decode'`).
fn profile(size: usize) {
    {
        let n = (8 << 20) / our_stream(size, 1).len();
        let wire = our_stream(size, n);
        let deliveries = our_deliveries(size, n);
        let their = their_frames(size, n);
        black_box(our_decode(BytesMut::from(&wire[..])));
        black_box(their_decode(&wire));
        black_box(floor_decode(
            &BytesMut::from(&wire[..]),
            floor_reads_lines(),
        ));
        our_encode(&mut Transmit::default(), &deliveries);
        black_box(floor_encode_inputs(&mut Vec::new(), &deliveries));
        black_box(their_encode(Vec::with_capacity(wire.len()), &their));
    }
}

criterion_group!(benches, decode, encode);

fn main() {
    // The first free argument is a filter, as for criterion's own groups.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.as_deref() == Some("profile") {
        // `profile SIZE`: the body size in bytes (16 unless given).
        let size = std::env::args().skip(2).find_map(|a| a.parse().ok());
        return profile(size.unwrap_or(16));
    }
    if filter.as_deref().is_none_or(|f| f != "large") {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    if filter.as_deref().is_none_or(|f| "large stream".contains(f)) {
        large_stream();
    }
}
