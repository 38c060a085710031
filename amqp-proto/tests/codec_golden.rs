//! Golden captures of real AMQP sessions against RabbitMQ 3.10 (see `tests/fixtures/README.md`):
//! every frame must decode and re-encode to exactly the bytes on the wire, the frame boundaries
//! must match the capture tool's independent listing, and the decoded content must be what the
//! peers actually said.

use std::path::PathBuf;

use amqp_proto::frame::decode_protocol_header;
use amqp_proto::{
    BasicProperties, Decimal, FieldArray, FieldTable, FieldValue, Frame, FrameDecoder, LongString,
    Method, ReplyCode,
};
use bytes::{Bytes, BytesMut};

/// The sessions the fixture README lists; each has `.client.bin`, `.server.bin`, `.frames.txt`.
const SESSIONS: &[&str] = &[
    "pika_session",
    "raw_all_types",
    "server_close",
    "server_conn_close",
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "golden fixture {} is missing ({e}); see tests/fixtures/README.md",
            path.display()
        )
    })
}

/// One decoded frame with where it was in the file and its exact bytes.
struct Captured {
    offset: usize,
    raw: Bytes,
    frame: Frame,
}

impl Captured {
    fn method(&self) -> Option<&Method> {
        match &self.frame {
            Frame::Method(_, m) => Some(m),
            _ => None,
        }
    }
    fn properties(&self) -> &BasicProperties {
        match &self.frame {
            Frame::Header(_, h) => &h.properties,
            other => panic!(
                "frame at {} is not a content header: {other:?}",
                self.offset
            ),
        }
    }
}

/// Splits a capture into frames as a client would: pre-tune limit first, then the negotiated
/// frame_max once tune / tune-ok has gone by. The client side starts with the protocol header.
fn split(file: &str) -> Vec<Captured> {
    let bytes = Bytes::from(read(file));
    let mut buf = BytesMut::from(&bytes[..]);
    let mut offset = 0;
    if file.ends_with(".client.bin") {
        assert!(
            decode_protocol_header(&mut buf).expect("AMQP 0-9-1 protocol header"),
            "{file}: no protocol header"
        );
        offset = 8;
    }
    let mut dec = FrameDecoder::default();
    let mut out = Vec::new();
    // The decoder may take several frames off `buf` at once, so each frame's extent is read
    // from its own header: 7 bytes, the payload, the end octet.
    while let Some(frame) = dec
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("{file} at byte {offset}: {e}"))
    {
        let size = bytes.get(offset + 3..offset + 7).expect("frame header");
        let used = u32::from_be_bytes(size.try_into().expect("4 bytes")) as usize + 8;
        if let Frame::Method(_, Method::ConnectionTune(t)) = &frame {
            dec.set_frame_max(t.frame_max);
        }
        if let Frame::Method(_, Method::ConnectionTuneOk(t)) = &frame {
            dec.set_frame_max(t.frame_max);
        }
        out.push(Captured {
            offset,
            raw: bytes.slice(offset..offset + used),
            frame,
        });
        offset += used;
    }
    assert!(buf.is_empty(), "{file}: incomplete frame at byte {offset}");
    assert_eq!(offset, bytes.len(), "{file}");
    out
}

fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame.encode(&mut out).expect("re-encodes");
    out.to_vec()
}

/// The capture tool's listing of one file: (offset, kind, channel, size, method name).
fn listing(session: &str, file: &str) -> Vec<(usize, String, u16, u32, Option<String>)> {
    let text = String::from_utf8(read(&format!("{session}.frames.txt"))).unwrap();
    let section = format!("## {file} (");
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&section));
    assert!(lines.next().is_some(), "{session}.frames.txt has no {file}");
    lines
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("protocol-header"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let num = |p: &str, s: &str| -> u64 {
                s.strip_prefix(p)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("bad listing line {l:?}"))
            };
            (
                w[0].parse().expect("offset"),
                w[1].to_owned(),
                num("ch=", w[2]) as u16,
                num("size=", w[3]) as u32,
                (w[1] == "method").then(|| w[4].to_owned()),
            )
        })
        .collect()
}

#[test]
fn every_frame_reencodes_byte_for_byte() {
    let mut frames = 0;
    for session in SESSIONS {
        for side in ["client", "server"] {
            let file = format!("{session}.{side}.bin");
            let captured = split(&file);
            assert!(!captured.is_empty(), "{file}: no frames");
            for c in &captured {
                let again = encode(&c.frame);
                assert!(
                    again == c.raw[..],
                    "{file} at byte {}: {:?}\n  wire:       {:02x?}\n  re-encoded: {:02x?}",
                    c.offset,
                    c.frame,
                    &c.raw[..],
                    again
                );
            }
            frames += captured.len();
        }
    }
    assert!(frames > 100, "only {frames} frames in all fixtures");
}

#[test]
fn frame_boundaries_match_the_capture_listing() {
    for session in SESSIONS {
        for side in ["client", "server"] {
            let file = format!("{session}.{side}.bin");
            let want = listing(session, &file);
            let got: Vec<_> = split(&file)
                .iter()
                .map(|c| {
                    let (kind, name) = match &c.frame {
                        Frame::Method(_, m) => ("method", Some(m.name().to_owned())),
                        Frame::Header(..) => ("header", None),
                        Frame::Body(..) => ("body", None),
                        Frame::Heartbeat => ("heartbeat", None),
                    };
                    let size = (c.raw.len() - 8) as u32;
                    (c.offset, kind.to_owned(), c.frame.channel(), size, name)
                })
                .collect();
            assert_eq!(got, want, "{file}");
        }
    }
}

#[test]
fn byte_at_a_time_gives_the_same_frames() {
    for file in ["server_close.server.bin", "raw_all_types.server.bin"] {
        let whole: Vec<Frame> = split(file).into_iter().map(|c| c.frame).collect();
        let mut dec = FrameDecoder::new(131_072);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in read(file) {
            buf.extend_from_slice(&[b]);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got, whole, "{file}");
    }
}

#[test]
fn server_announces_publisher_confirms() {
    for session in SESSIONS {
        let server = split(&format!("{session}.server.bin"));
        let Some(Method::ConnectionStart(start)) = server[0].method() else {
            panic!("{session}: server did not start with connection.start")
        };
        assert_eq!((start.version_major, start.version_minor), (0, 9));
        assert_eq!(start.mechanisms.as_str(), Some("PLAIN AMQPLAIN"));
        let Some(FieldValue::Table(caps)) = start.server_properties.get("capabilities") else {
            panic!("{session}: no capabilities table")
        };
        for cap in [
            "publisher_confirms",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
        ] {
            assert_eq!(caps.get(cap), Some(&FieldValue::Bool(true)), "{cap}");
        }
        assert_eq!(
            start
                .server_properties
                .get("product")
                .and_then(|p| p.as_str()),
            Some("RabbitMQ")
        );
    }
}

/// The raw client's headers table, one entry per RabbitMQ tag (fixtures README).
fn all_types_table() -> FieldTable {
    let s = |v: &str| FieldValue::LongString(LongString::from(v));
    let kv = FieldTable::new().with("k", s("v"));
    FieldTable::new()
        .with("t-bool", true)
        .with("b-i8", i8::MIN)
        .with("B-u8", u8::MAX)
        .with("s-i16", i16::MIN)
        .with("u-u16", u16::MAX)
        .with("I-i32", i32::MIN)
        .with("i-u32", u32::MAX)
        .with("l-i64", i64::MIN)
        .with("f-f32", 1.5f32)
        .with("d-f64", -std::f64::consts::E)
        .with(
            "D-decimal",
            Decimal {
                scale: 2,
                value: -12345,
            },
        )
        .with("S-longstr", "héllo ✓")
        .with(
            "x-bytes",
            FieldValue::ByteArray(Bytes::from_static(&[0x00, 0x01, 0x7f, 0x80, 0xce, 0xff])),
        )
        .with("T-timestamp", FieldValue::Timestamp(1_700_000_000))
        .with(
            "F-table",
            FieldTable::new()
                .with("inner", 7i32)
                .with("deeper", kv.clone()),
        )
        .with(
            "A-array",
            FieldArray(vec![
                FieldValue::Bool(false),
                FieldValue::I8(-1),
                FieldValue::I32(42),
                s("two"),
                FieldValue::Table(kv),
                FieldValue::Void,
                FieldValue::Array(FieldArray(vec![FieldValue::I64(1)])),
                FieldValue::F64(0.25),
            ]),
        )
        .with("V-void", FieldValue::Void)
        .with("L-i64-spec", FieldValue::I64L(-3))
}

fn headers(c: &Captured) -> FieldTable {
    c.properties().headers().expect("headers")
}

#[test]
fn raw_client_headers_come_back_with_every_tag() {
    let client = split("raw_all_types.client.bin");
    let server = split("raw_all_types.server.bin");
    let client_headers: Vec<&Captured> = client
        .iter()
        .filter(|c| matches!(c.frame, Frame::Header(..)))
        .collect();
    let server_headers: Vec<&Captured> = server
        .iter()
        .filter(|c| matches!(c.frame, Frame::Header(..)))
        .collect();
    assert_eq!((client_headers.len(), server_headers.len()), (2, 2));

    let want = all_types_table();
    let tags: Vec<u8> = want.iter().map(|(_, v)| v.tag()).collect();
    assert_eq!(tags, b"tbBsuIilfdDSxTFAVL");
    assert_eq!(headers(client_headers[0]), want);
    assert_eq!(
        client_headers[0].properties().content_type(),
        Some("text/plain")
    );

    // First get-ok: RabbitMQ forwarded the header bytes untouched, `L` included.
    assert_eq!(headers(server_headers[0]), want);
    assert_eq!(client_headers[0].raw, server_headers[0].raw);

    // Second publish adds BCC, which RabbitMQ strips; it then re-encodes the table itself,
    // writing `L` as `l`.
    let mut sent = want.clone();
    sent.insert("BCC", FieldArray(vec!["amqp-rs.fixture.raw".into()]));
    assert_eq!(headers(client_headers[1]), sent);
    let mut echoed = want;
    echoed.insert("L-i64-spec", FieldValue::I64(-3));
    assert_eq!(headers(server_headers[1]), echoed);
}

#[test]
fn pika_all_properties_round_trip_through_the_broker() {
    let client = split("pika_session.client.bin");
    let server = split("pika_session.server.bin");
    let full = client
        .iter()
        .find(|c| matches!(&c.frame, Frame::Header(_, h) if h.properties.flags() == 0xfffc))
        .expect("pika's all-properties header");
    let p = full.properties();
    assert_eq!(p.content_type(), Some("application/json"));
    assert_eq!(p.delivery_mode(), Some(2));
    assert_eq!(p.priority(), Some(5));
    assert_eq!(p.timestamp(), Some(1_700_000_000));
    assert_eq!(p.user_id(), Some("guest"));
    assert_eq!(p.cluster_id(), Some("cluster-1"));
    let h = p.headers().unwrap();
    assert_eq!(h.get("int-large"), Some(&FieldValue::I64(1 << 40)));
    assert_eq!(h.get("int-small"), Some(&FieldValue::I32(42)));
    assert_eq!(h.get("none"), Some(&FieldValue::Void));
    assert_eq!(
        h.get("bytes"),
        Some(&FieldValue::ByteArray(Bytes::from_static(&[
            0, 1, 0xce, 0xff
        ])))
    );
    assert_eq!(
        h.get("decimal-negative"),
        Some(&FieldValue::Decimal(Decimal {
            scale: 1,
            value: -5
        }))
    );
    assert_eq!(
        h.get("datetime"),
        Some(&FieldValue::Timestamp(1_704_164_645))
    );

    // basic.get-ok carries the same header frame, byte for byte.
    let echoed = server
        .iter()
        .find(|c| matches!(&c.frame, Frame::Header(_, h) if h.properties.flags() == 0xfffc))
        .expect("get-ok header");
    assert_eq!(echoed.raw, full.raw);
}

#[test]
fn pika_large_body_is_split_at_frame_max_both_ways() {
    for file in ["pika_session.client.bin", "pika_session.server.bin"] {
        let frames = split(file);
        let at = frames
            .iter()
            .position(|c| matches!(&c.frame, Frame::Header(_, h) if h.body_size == 307_200))
            .expect("large message header");
        let sizes: Vec<usize> = frames[at + 1..at + 4]
            .iter()
            .map(|c| match &c.frame {
                Frame::Body(1, b) => b.len(),
                other => panic!("{file}: expected body, got {other:?}"),
            })
            .collect();
        assert_eq!(sizes, [131_064, 131_064, 45_072], "{file}");
        assert!(frames[at + 1].raw.len() == 131_072);
    }
    let server = split("pika_session.server.bin");
    let ret = server
        .iter()
        .find_map(|c| match c.method() {
            Some(Method::BasicReturn(r)) => Some(r),
            _ => None,
        })
        .expect("basic.return");
    assert_eq!(ReplyCode(ret.reply_code), ReplyCode::NO_ROUTE);
    assert_eq!(ret.reply_text.as_str(), "NO_ROUTE");
}

#[test]
fn server_closes_carry_codes_and_failing_method() {
    let server = split("server_close.server.bin");
    let close = server
        .iter()
        .find_map(|c| match c.method() {
            Some(Method::ChannelClose(m)) => Some(m),
            _ => None,
        })
        .expect("channel.close");
    assert_eq!(ReplyCode(close.reply_code), ReplyCode::NOT_FOUND);
    assert!(ReplyCode(close.reply_code).is_soft());
    assert!(close.reply_text.starts_with("NOT_FOUND - no queue"));
    assert_eq!((close.class_id, close.method_id), (50, 10));

    let server = split("server_conn_close.server.bin");
    let Some(Method::ConnectionClose(close)) = server.last().and_then(|c| c.method()) else {
        panic!("server_conn_close does not end with connection.close")
    };
    assert_eq!(ReplyCode(close.reply_code), ReplyCode::CHANNEL_ERROR);
    assert_eq!(
        Method::info_for(amqp_proto::MethodId {
            class_id: close.class_id,
            method_id: close.method_id
        })
        .map(|i| i.name),
        Some("channel.open")
    );
}
