//! Hostile and malformed input: every bad frame must be an error with the right reply code,
//! never a panic, a stack overflow or an allocation the frame size does not justify.

use amqp_proto::frame::{FRAME_END, PRE_TUNE_FRAME_MAX};
use amqp_proto::{
    BasicDeliver, BasicProperties, CodecError, FieldArray, FieldTable, FieldValue, Frame,
    FrameDecoder, MAX_TABLE_DEPTH, Method, QueueDeclare, ReplyCode, ShortString, Transmit,
};
use bytes::{BufMut, Bytes, BytesMut};

fn frame(kind: u8, channel: u16, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.put_u8(FRAME_END);
    out
}

fn decode_err(mut buf: BytesMut) -> CodecError {
    match FrameDecoder::new(0).decode(&mut buf) {
        Err(e) => e,
        Ok(f) => panic!("expected an error, decoded {f:?}"),
    }
}

fn assert_code(e: &CodecError, code: ReplyCode) {
    assert_eq!(e.reply_code(), code, "{e}");
}

/// A field table whose single entry `a` holds a table, `levels` tables deep in all, built
/// front to back without recursion.
fn nested_tables(levels: usize) -> Vec<u8> {
    // Each level but the innermost is: length, key "a" (2 bytes), tag 'F' (1), inner table.
    let mut out = Vec::with_capacity(levels * 8);
    for i in 0..levels - 1 {
        let content = 7 * (levels - 1 - i);
        out.extend((content as u32).to_be_bytes());
        out.extend([1, b'a', b'F']);
    }
    out.extend(0u32.to_be_bytes());
    out
}

/// A table with one entry holding `levels` arrays nested inside each other.
fn nested_arrays(levels: usize) -> Vec<u8> {
    // Array i (0 outermost) holds tag 'A' + array i+1; the innermost is empty.
    let mut out = Vec::with_capacity(levels * 5 + 8);
    let arrays_len = 4 + 5 * (levels - 1); // length prefixes and tags of all arrays
    out.extend(((3 + arrays_len) as u32).to_be_bytes()); // table: key, tag 'A', arrays
    out.extend([1, b'a', b'A']);
    for i in 0..levels - 1 {
        let content = 5 * (levels - 1 - i);
        out.extend((content as u32).to_be_bytes());
        out.push(b'A');
    }
    out.extend(0u32.to_be_bytes());
    out
}

#[test]
fn fifteen_thousand_nested_tables_fail_cleanly() {
    let bytes = nested_tables(15_000);
    let e = FieldTable::decode(&Bytes::from(bytes.clone())).unwrap_err();
    assert_eq!(e, CodecError::NestingTooDeep(MAX_TABLE_DEPTH));
    assert_code(&e, ReplyCode::SYNTAX_ERROR);

    // The same inside a method frame: queue.declare's arguments.
    let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
    payload.extend(&bytes);
    let e = decode_err(frame(1, 1, &payload));
    assert_eq!(e, CodecError::NestingTooDeep(MAX_TABLE_DEPTH));

    // And as the headers property of a content header.
    let mut payload = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x20, 0x00];
    payload.extend(&bytes);
    let e = decode_err(frame(2, 1, &payload));
    assert_eq!(e, CodecError::NestingTooDeep(MAX_TABLE_DEPTH));
}

#[test]
fn fifteen_thousand_nested_arrays_fail_cleanly() {
    let e = FieldTable::decode(&Bytes::from(nested_arrays(15_000))).unwrap_err();
    assert_eq!(e, CodecError::NestingTooDeep(MAX_TABLE_DEPTH));
    assert_code(&e, ReplyCode::SYNTAX_ERROR);
}

#[test]
fn nesting_limit_is_exact() {
    // The top-level table counts as one level.
    let ok = FieldTable::decode(&Bytes::from(nested_tables(MAX_TABLE_DEPTH))).unwrap();
    let mut again = BytesMut::new();
    ok.encode(&mut again).unwrap();
    assert_eq!(&again[..], &nested_tables(MAX_TABLE_DEPTH)[..]);
    assert!(FieldTable::decode(&Bytes::from(nested_tables(MAX_TABLE_DEPTH + 1))).is_err());

    // A table holding arrays: MAX - 1 arrays fit under the top-level table.
    assert!(FieldTable::decode(&Bytes::from(nested_arrays(MAX_TABLE_DEPTH - 1))).is_ok());
    assert_eq!(
        FieldTable::decode(&Bytes::from(nested_arrays(MAX_TABLE_DEPTH))),
        Err(CodecError::NestingTooDeep(MAX_TABLE_DEPTH))
    );
}

#[test]
fn encoding_too_deep_a_table_fails_and_leaves_nothing_behind() {
    let mut t = FieldTable::new();
    for _ in 0..MAX_TABLE_DEPTH {
        t = FieldTable::new().with("a", t);
    }
    let mut out = BytesMut::new();
    assert_eq!(
        t.encode(&mut out),
        Err(CodecError::NestingTooDeep(MAX_TABLE_DEPTH))
    );
    let mut arr = FieldArray::default();
    for _ in 0..MAX_TABLE_DEPTH {
        arr = FieldArray(vec![FieldValue::Array(arr)]);
    }
    let t = FieldTable::new().with("a", arr);
    assert!(t.encode(&mut BytesMut::new()).is_err());

    let declare = QueueDeclare {
        arguments: t,
        ..Default::default()
    };
    let mut out = BytesMut::from(&b"keep"[..]);
    let e = Frame::Method(1, declare.into())
        .encode(&mut out)
        .unwrap_err();
    assert_eq!(e, CodecError::NestingTooDeep(MAX_TABLE_DEPTH));
    assert_eq!(&out[..], b"keep");
}

#[test]
fn frame_too_large_is_detected_from_the_header_alone() {
    // Pre-tune: the whole frame (7 + size + 1) may be 8192 bytes.
    let mut dec = FrameDecoder::default();
    assert_eq!(dec.frame_max(), PRE_TUNE_FRAME_MAX);
    let head = |size: u32| {
        let mut b = BytesMut::new();
        b.put_u8(1);
        b.put_u16(0);
        b.put_u32(size);
        b
    };
    assert_eq!(dec.decode(&mut head(8192 - 8)).unwrap(), None);
    let e = dec.decode(&mut head(8192 - 7)).unwrap_err();
    assert_eq!(
        e,
        CodecError::FrameTooLarge {
            size: 8193,
            max: 8192
        }
    );
    assert_code(&e, ReplyCode::FRAME_ERROR);
    assert!(dec.decode(&mut head(u32::MAX)).is_err());

    dec.set_frame_max(131_072);
    assert_eq!(dec.decode(&mut head(131_072 - 8)).unwrap(), None);
    assert_eq!(
        dec.decode(&mut head(131_072 - 7)).unwrap_err(),
        CodecError::FrameTooLarge {
            size: 131_073,
            max: 131_072
        }
    );
    // Without a limit a large frame is simply not all here yet, and the header's word alone
    // does not make the decoder reserve gigabytes (found by the decode_frame fuzz target).
    let mut dec = FrameDecoder::new(0);
    let mut buf = head(u32::MAX);
    assert_eq!(dec.decode(&mut buf).unwrap(), None);
    assert!(
        buf.capacity() <= 2 << 20,
        "reserved {} bytes",
        buf.capacity()
    );
}

#[test]
fn partial_header_waits() {
    let full = frame(1, 0, &[0, 10, 0, 51]);
    for n in 0..full.len() {
        let mut part = BytesMut::from(&full[..n]);
        assert_eq!(FrameDecoder::default().decode(&mut part).unwrap(), None);
        assert_eq!(part.len(), n, "nothing consumed before the frame is whole");
    }
}

#[test]
fn bad_frame_end() {
    let mut f = frame(1, 0, &[0, 10, 0, 51]);
    let last = f.len() - 1;
    f[last] = 0xCD;
    let e = decode_err(f);
    assert_eq!(e, CodecError::BadFrameEnd(0xCD));
    assert_code(&e, ReplyCode::FRAME_ERROR);
}

#[test]
fn unknown_frame_type() {
    for kind in [0u8, 4, 9, 0xFF] {
        let e = decode_err(frame(kind, 0, &[]));
        assert_eq!(e, CodecError::UnknownFrameType(kind));
        assert_code(&e, ReplyCode::FRAME_ERROR);
    }
}

#[test]
fn heartbeat_must_be_empty_on_channel_zero() {
    let e = decode_err(frame(8, 1, &[]));
    assert_eq!(
        e,
        CodecError::BadHeartbeat {
            channel: 1,
            size: 0
        }
    );
    assert_code(&e, ReplyCode::FRAME_ERROR);
    assert_eq!(
        decode_err(frame(8, 0, &[1])),
        CodecError::BadHeartbeat {
            channel: 0,
            size: 1
        }
    );
}

#[test]
fn truncated_method() {
    let mut full = BytesMut::new();
    let declare = QueueDeclare {
        queue: ShortString::try_from("tasks").unwrap(),
        ..Default::default()
    };
    Method::from(declare).encode(&mut full).unwrap();
    // Every proper prefix of the payload, framed as a whole frame, is truncated.
    for n in 0..full.len() {
        let e = decode_err(frame(1, 1, &full[..n]));
        assert!(
            matches!(e, CodecError::Truncated { .. }),
            "prefix {n}: {e:?}"
        );
        assert_code(&e, ReplyCode::FRAME_ERROR);
    }
}

#[test]
fn trailing_bytes() {
    let e = decode_err(frame(1, 0, &[0, 10, 0, 51, 0xAA]));
    assert_eq!(
        e,
        CodecError::TrailingBytes {
            what: "method fields",
            extra: 1
        }
    );
    assert_code(&e, ReplyCode::FRAME_ERROR);
    // In a content header too.
    let e = decode_err(frame(2, 1, &[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 7]));
    assert!(
        matches!(e, CodecError::TrailingBytes { extra: 1, .. }),
        "{e:?}"
    );
    // And inside a table whose entries do not fill its length: a key with no value.
    let e = FieldTable::decode(&Bytes::from_static(&[0, 0, 0, 2, 1, b'k'])).unwrap_err();
    assert!(matches!(e, CodecError::Truncated { .. }), "{e:?}");
}

#[test]
fn unknown_method_and_content_class() {
    let e = decode_err(frame(1, 1, &[0, 99, 0, 1]));
    assert_eq!(
        e,
        CodecError::UnknownMethod {
            class_id: 99,
            method_id: 1
        }
    );
    assert_code(&e, ReplyCode::COMMAND_INVALID);
    let e = decode_err(frame(1, 1, &[0, 60, 0, 61]));
    assert_code(&e, ReplyCode::COMMAND_INVALID);

    let e = decode_err(frame(2, 1, &[0, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    assert_eq!(e, CodecError::UnknownContentClass(50));
    assert_code(&e, ReplyCode::COMMAND_INVALID);
}

#[test]
fn reserved_property_flag_bits() {
    for flags in [0x0001u16, 0x0002, 0xFFFF] {
        let [hi, lo] = flags.to_be_bytes();
        let e = decode_err(frame(2, 1, &[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, hi, lo]));
        assert_eq!(e, CodecError::BadPropertyFlags(flags));
        assert_code(&e, ReplyCode::FRAME_ERROR);
    }
}

#[test]
fn unknown_field_tag() {
    // 'U' is the spec's signed 16, which RabbitMQ rejects; 'Z' is nothing at all.
    for tag in [b'U', b'Z', 0u8] {
        let t = [0, 0, 0, 4, 1, b'k', tag, 0];
        let e = FieldTable::decode(&Bytes::copy_from_slice(&t)).unwrap_err();
        assert_eq!(e, CodecError::UnknownFieldTag(tag));
        assert_code(&e, ReplyCode::SYNTAX_ERROR);
    }
}

#[test]
fn lengths_claiming_more_than_remains() {
    let big = u32::MAX.to_be_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Short string key longer than the table.
        ("short string", vec![0, 0, 0, 3, 200, b'a', b'b']),
        // Table longer than the input.
        ("table", [&big[..], &[1, b'k', b'V']].concat()),
        ("table", vec![0, 0, 0, 9, 1, b'k', b'V']),
        // Long string, byte array and array values longer than their table.
        (
            "long string",
            [&[0, 0, 0, 10, 1, b'k', b'S'][..], &big, &[1]].concat(),
        ),
        (
            "byte array",
            [&[0, 0, 0, 10, 1, b'k', b'x'][..], &big, &[1]].concat(),
        ),
        (
            "array",
            [&[0, 0, 0, 10, 1, b'k', b'A'][..], &big, &[1]].concat(),
        ),
        (
            "nested table",
            [&[0, 0, 0, 10, 1, b'k', b'F'][..], &big, &[1]].concat(),
        ),
        // Fixed-size values cut short.
        ("i64", vec![0, 0, 0, 5, 1, b'k', b'l', 0, 0]),
        ("decimal", vec![0, 0, 0, 5, 1, b'k', b'D', 2, 0]),
    ];
    for (what, bytes) in cases {
        let e = FieldTable::decode(&Bytes::from(bytes)).unwrap_err();
        assert!(matches!(e, CodecError::Truncated { .. }), "{what}: {e:?}");
        assert_code(&e, ReplyCode::FRAME_ERROR);
    }

    // The same in method fields: a long string and a short string beyond the payload.
    let e = decode_err(frame(1, 0, &[0, 10, 0, 20, 0xFF, 0xFF, 0xFF, 0xFF, 1]));
    assert!(matches!(e, CodecError::Truncated { .. }), "{e:?}");
    let e = decode_err(frame(1, 1, &[0, 60, 0, 21, 0xFF, b'c']));
    assert!(matches!(e, CodecError::Truncated { .. }), "{e:?}");
}

#[test]
fn short_strings_over_255_bytes_are_refused() {
    assert!(ShortString::try_from("é".repeat(127) + "x").is_ok()); // 255 bytes
    let e = ShortString::try_from("x".repeat(256)).unwrap_err();
    assert_eq!(e, CodecError::ShortStringTooLong(256));
    assert_code(&e, ReplyCode::SYNTAX_ERROR);
    assert_eq!(
        ShortString::try_from("é".repeat(128)).unwrap_err(),
        CodecError::ShortStringTooLong(256)
    );
    assert!(FieldTable::new().try_insert("k".repeat(256), 1u8).is_err());
}

#[test]
fn non_utf8_short_strings_decode_lossily() {
    let m = Method::decode(&Bytes::from_static(&[0, 60, 0, 21, 2, 0xFF, 0xFE])).unwrap();
    let Method::BasicConsumeOk(ok) = m else {
        panic!("{m:?}")
    };
    assert_eq!(ok.consumer_tag.as_str(), "\u{FFFD}\u{FFFD}");
    // 255 invalid bytes become 255 replacement characters, cut back to 255 bytes.
    let mut payload = vec![0, 60, 0, 21, 255];
    payload.extend([0xFF; 255]);
    let Method::BasicConsumeOk(ok) = Method::decode(&Bytes::from(payload)).unwrap() else {
        panic!()
    };
    assert!(ok.consumer_tag.len() <= 255);
    let mut out = BytesMut::new();
    Method::from(ok).encode(&mut out).unwrap();
}

#[test]
fn header_too_large_queues_nothing() {
    let mut headers = FieldTable::new();
    for i in 0..200 {
        headers.insert(&format!("header-{i}"), "v".repeat(40));
    }
    let props = BasicProperties::default().with_headers(headers);
    let deliver: Method = BasicDeliver::default().into();
    let body = Bytes::from(vec![1u8; 10_000]);

    let mut out = Transmit::default();
    let e = out
        .push_content(1, &deliver, &props, &body, 4096)
        .unwrap_err();
    assert!(
        matches!(e, CodecError::HeaderTooLarge { max: 4096, size } if size > 4096),
        "{e:?}"
    );
    assert_code(&e, ReplyCode::FRAME_ERROR);
    assert!(out.is_empty());
    assert_eq!(out.len(), 0);
    assert_eq!(out.pop_chunk(), None);

    // With something queued before, that stays and nothing is added.
    out.push_frame(&Frame::Heartbeat).unwrap();
    assert!(out.push_content(1, &deliver, &props, &body, 4096).is_err());
    assert_eq!(out.len(), 8);
    let mut all = Vec::new();
    while let Some(c) = out.pop_chunk() {
        all.extend_from_slice(&c);
    }
    assert_eq!(all, [8, 0, 0, 0, 0, 0, 0, 0xCE]);

    // Without a limit the same content is accepted.
    let mut out = Transmit::default();
    out.push_content(1, &deliver, &props, &body, 0).unwrap();
    assert!(out.len() > 10_000);
}

#[test]
fn errors_map_to_the_spec_reply_codes() {
    use CodecError::*;
    let frame_errors = [
        FrameTooLarge { size: 1, max: 0 },
        BadFrameEnd(0),
        UnknownFrameType(0),
        BadHeartbeat {
            channel: 1,
            size: 0,
        },
        Truncated { what: "x" },
        TrailingBytes {
            what: "x",
            extra: 1,
        },
        BadPropertyFlags(1),
        HeaderTooLarge { size: 1, max: 0 },
        BadProtocolHeader(*b"HTTP/1.1"),
    ];
    for e in frame_errors {
        assert_eq!(e.reply_code().0, 501, "{e}");
        assert!(!e.reply_code().is_soft());
    }
    for e in [
        UnknownFieldTag(b'Z'),
        NestingTooDeep(64),
        ShortStringTooLong(256),
        TooLong {
            what: "x",
            len: usize::MAX,
        },
    ] {
        assert_eq!(e.reply_code().0, 502, "{e}");
    }
    for e in [
        UnknownMethod {
            class_id: 1,
            method_id: 1,
        },
        UnknownContentClass(1),
    ] {
        assert_eq!(e.reply_code().0, 503, "{e}");
    }
}

#[test]
fn protocol_header_from_a_refusing_server() {
    let mut buf = BytesMut::from(&b"AMQP\x00\x00\x09"[..]);
    assert_eq!(FrameDecoder::default().decode(&mut buf).unwrap(), None);
    buf.put_u8(0);
    assert_eq!(
        FrameDecoder::default().decode(&mut buf).unwrap_err(),
        CodecError::ProtocolVersionRefused {
            id: 0,
            major: 0,
            minor: 9,
            revision: 0
        }
    );
    let mut buf = BytesMut::from(&b"AMQP\x01\x01\x00\x0a"[..]);
    assert!(amqp_proto::frame::decode_protocol_header(&mut buf).is_err());
    let mut buf = BytesMut::from(&b"AMQP\x00\x00\x09\x01rest"[..]);
    assert!(amqp_proto::frame::decode_protocol_header(&mut buf).unwrap());
    assert_eq!(&buf[..], b"rest");
}
