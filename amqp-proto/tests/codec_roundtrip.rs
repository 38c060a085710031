//! Round trips of every method, content header and field value through the codec.
//!
//! Expected bytes come from a small reference encoder written here from the spec (independent
//! of the codec's `Writer`, bit packing included): arbitrary values are encoded by it, decoded
//! by the codec, compared field by field, and re-encoded by the codec, which must reproduce the
//! reference bytes exactly. Methods are generated from `MethodInfo::fields`, so every variant
//! of the table is covered without a strategy written per method.

use std::fmt;

use amqp_proto::frame::{FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_METHOD};
use amqp_proto::{
    BasicNack, BasicProperties, ContentHeader, Decimal, ExchangeDeclare, FieldArray, FieldTable,
    FieldValue, Frame, FrameDecoder, LongString, METHODS, Method, MethodInfo, QueueDeclare,
    SecretBytes, ShortString,
};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

// ---------------------------------------------------------------------------------------------
// Reference encoder
// ---------------------------------------------------------------------------------------------

/// One method or property field value, by AMQP domain type.
#[derive(Clone)]
enum Val {
    Bit(bool),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    Short(ShortString),
    Long(LongString),
    Secret(SecretBytes),
    Table(FieldTable),
}

impl fmt::Debug for Val {
    /// Formats like the codec's derived `Debug` of the same field.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Bit(v) => fmt::Debug::fmt(v, f),
            Val::U8(v) => fmt::Debug::fmt(v, f),
            Val::U16(v) => fmt::Debug::fmt(v, f),
            Val::U32(v) => fmt::Debug::fmt(v, f),
            Val::U64(v) => fmt::Debug::fmt(v, f),
            Val::Short(v) => fmt::Debug::fmt(v, f),
            Val::Long(v) => fmt::Debug::fmt(v, f),
            Val::Secret(v) => fmt::Debug::fmt(v, f),
            Val::Table(v) => fmt::Debug::fmt(v, f),
        }
    }
}

fn put_short(out: &mut Vec<u8>, s: &[u8]) {
    out.push(u8::try_from(s.len()).expect("short string over 255 bytes"));
    out.extend_from_slice(s);
}

fn put_long(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
    out.extend_from_slice(s);
}

fn ref_table(t: &FieldTable, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    for (k, v) in t.iter() {
        put_short(&mut body, k.as_bytes());
        ref_value(v, &mut body);
    }
    put_long(out, &body);
}

fn ref_value(v: &FieldValue, out: &mut Vec<u8>) {
    match v {
        FieldValue::Bool(b) => out.extend([b't', u8::from(*b)]),
        FieldValue::I8(x) => out.extend([b'b', *x as u8]),
        FieldValue::U8(x) => out.extend([b'B', *x]),
        FieldValue::I16(x) => {
            out.push(b's');
            out.extend(x.to_be_bytes());
        }
        FieldValue::U16(x) => {
            out.push(b'u');
            out.extend(x.to_be_bytes());
        }
        FieldValue::I32(x) => {
            out.push(b'I');
            out.extend(x.to_be_bytes());
        }
        FieldValue::U32(x) => {
            out.push(b'i');
            out.extend(x.to_be_bytes());
        }
        FieldValue::I64(x) => {
            out.push(b'l');
            out.extend(x.to_be_bytes());
        }
        FieldValue::I64L(x) => {
            out.push(b'L');
            out.extend(x.to_be_bytes());
        }
        FieldValue::F32(x) => {
            out.push(b'f');
            out.extend(x.to_bits().to_be_bytes());
        }
        FieldValue::F64(x) => {
            out.push(b'd');
            out.extend(x.to_bits().to_be_bytes());
        }
        FieldValue::Decimal(d) => {
            out.extend([b'D', d.scale]);
            out.extend(d.value.to_be_bytes());
        }
        FieldValue::LongString(s) => {
            out.push(b'S');
            put_long(out, s);
        }
        FieldValue::ByteArray(b) => {
            out.push(b'x');
            put_long(out, b);
        }
        FieldValue::Timestamp(t) => {
            out.push(b'T');
            out.extend(t.to_be_bytes());
        }
        FieldValue::Table(t) => {
            out.push(b'F');
            ref_table(t, out);
        }
        FieldValue::Array(a) => {
            out.push(b'A');
            let mut body = Vec::new();
            for v in &a.0 {
                ref_value(v, &mut body);
            }
            put_long(out, &body);
        }
        FieldValue::Void => out.push(b'V'),
        other => panic!("the reference encoder does not know {other:?}: add it"),
    }
}

/// Encodes fields in wire order; consecutive bits share octets, low bit first.
fn ref_fields(vals: &[Val], out: &mut Vec<u8>) {
    let mut bits: Option<(usize, u8)> = None;
    for v in vals {
        if let Val::Bit(b) = v {
            match bits {
                Some((at, used)) if used < 8 => {
                    out[at] |= u8::from(*b) << used;
                    bits = Some((at, used + 1));
                }
                _ => {
                    out.push(u8::from(*b));
                    bits = Some((out.len() - 1, 1));
                }
            }
            continue;
        }
        bits = None;
        match v {
            Val::Bit(_) => unreachable!(),
            Val::U8(x) => out.push(*x),
            Val::U16(x) => out.extend(x.to_be_bytes()),
            Val::U32(x) => out.extend(x.to_be_bytes()),
            Val::U64(x) => out.extend(x.to_be_bytes()),
            Val::Short(s) => put_short(out, s.as_bytes()),
            Val::Long(s) => put_long(out, s),
            Val::Secret(s) => put_long(out, &s.0),
            Val::Table(t) => ref_table(t, out),
        }
    }
}

fn ref_frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend(channel.to_be_bytes());
    out.extend(u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
    out
}

fn ref_method_payload(info: &MethodInfo, vals: &[Val]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(info.id.class_id.to_be_bytes());
    out.extend(info.id.method_id.to_be_bytes());
    ref_fields(vals, &mut out);
    out
}

/// The properties as field values in flag order (bit 15 first), `None` where absent.
fn prop_vals(p: &BasicProperties) -> [Option<Val>; 14] {
    let s = |v: Option<&str>| v.map(|v| Val::Short(ShortString::try_from(v).unwrap()));
    [
        s(p.content_type()),
        s(p.content_encoding()),
        p.headers().map(Val::Table),
        p.delivery_mode().map(Val::U8),
        p.priority().map(Val::U8),
        s(p.correlation_id()),
        s(p.reply_to()),
        s(p.expiration()),
        s(p.message_id()),
        p.timestamp().map(Val::U64),
        s(p.kind()),
        s(p.user_id()),
        s(p.app_id()),
        s(p.cluster_id()),
    ]
}

fn ref_header_payload(body_size: u64, p: &BasicProperties) -> Vec<u8> {
    let vals = prop_vals(p);
    let mut flags = 0u16;
    for (i, v) in vals.iter().enumerate() {
        if v.is_some() {
            flags |= 1 << (15 - i);
        }
    }
    let mut out = Vec::new();
    out.extend(60u16.to_be_bytes());
    out.extend(0u16.to_be_bytes());
    out.extend(body_size.to_be_bytes());
    out.extend(flags.to_be_bytes());
    let present: Vec<Val> = vals.into_iter().flatten().collect();
    ref_fields(&present, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Comparison (floats by bits, so NaN payloads count)
// ---------------------------------------------------------------------------------------------

fn same_value(a: &FieldValue, b: &FieldValue) -> bool {
    use FieldValue as V;
    match (a, b) {
        (V::F32(x), V::F32(y)) => x.to_bits() == y.to_bits(),
        (V::F64(x), V::F64(y)) => x.to_bits() == y.to_bits(),
        (V::Table(x), V::Table(y)) => same_table(x, y),
        (V::Array(x), V::Array(y)) => {
            x.0.len() == y.0.len() && x.0.iter().zip(&y.0).all(|(a, b)| same_value(a, b))
        }
        (V::Bool(_), V::Bool(_))
        | (V::I8(_), V::I8(_))
        | (V::U8(_), V::U8(_))
        | (V::I16(_), V::I16(_))
        | (V::U16(_), V::U16(_))
        | (V::I32(_), V::I32(_))
        | (V::U32(_), V::U32(_))
        | (V::I64(_), V::I64(_))
        | (V::I64L(_), V::I64L(_))
        | (V::Decimal(_), V::Decimal(_))
        | (V::LongString(_), V::LongString(_))
        | (V::ByteArray(_), V::ByteArray(_))
        | (V::Timestamp(_), V::Timestamp(_))
        | (V::Void, V::Void) => a == b,
        _ => false,
    }
}

fn same_table(a: &FieldTable, b: &FieldTable) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

fn same_props(a: &BasicProperties, b: &BasicProperties) -> bool {
    let headers_same = match (&a.headers(), &b.headers()) {
        (Some(x), Some(y)) => same_table(x, y),
        (None, None) => true,
        _ => false,
    };
    let strip = |p: &BasicProperties| {
        let mut p = p.clone();
        p.set_headers(None).unwrap();
        p
    };
    headers_same && strip(a) == strip(b)
}

fn same_frame(a: &Frame, b: &Frame) -> bool {
    match (a, b) {
        (Frame::Header(ca, ha), Frame::Header(cb, hb)) => {
            ca == cb
                && ha.class_id == hb.class_id
                && ha.body_size == hb.body_size
                && same_props(&ha.properties, &hb.properties)
        }
        // Method fields hold no floats outside tables; compare tables by their bytes.
        (Frame::Method(..), Frame::Method(..)) => encode(a) == encode(b),
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Any UTF-8 of at most 255 bytes, often multi-byte, sometimes exactly at the limit.
fn short_string() -> impl Strategy<Value = ShortString> {
    prop_oneof![
        4 => "[a-z0-9._-]{0,20}".prop_map(String::from),
        4 => prop::collection::vec(any::<char>(), 0..=255).prop_map(|cs| {
            let mut s: String = cs.into_iter().collect();
            while s.len() > 255 {
                s.pop();
            }
            s
        }),
        1 => Just("x".repeat(255)),
    ]
    .prop_map(|s| ShortString::try_from(s).expect("at most 255 bytes"))
}

fn long_string() -> impl Strategy<Value = LongString> {
    prop::collection::vec(any::<u8>(), 0..300).prop_map(LongString::from)
}

fn leaf_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        any::<bool>().prop_map(FieldValue::Bool),
        any::<i8>().prop_map(FieldValue::I8),
        any::<u8>().prop_map(FieldValue::U8),
        any::<i16>().prop_map(FieldValue::I16),
        any::<u16>().prop_map(FieldValue::U16),
        any::<i32>().prop_map(FieldValue::I32),
        any::<u32>().prop_map(FieldValue::U32),
        any::<i64>().prop_map(FieldValue::I64),
        any::<i64>().prop_map(FieldValue::I64L),
        // From raw bits: NaNs with payloads, infinities, subnormals, -0.0.
        any::<u32>().prop_map(|b| FieldValue::F32(f32::from_bits(b))),
        any::<u64>().prop_map(|b| FieldValue::F64(f64::from_bits(b))),
        (any::<u8>(), any::<i32>())
            .prop_map(|(scale, value)| FieldValue::Decimal(Decimal { scale, value })),
        long_string().prop_map(FieldValue::LongString),
        prop::collection::vec(any::<u8>(), 0..100)
            .prop_map(|v| FieldValue::ByteArray(Bytes::from(v))),
        any::<u64>().prop_map(FieldValue::Timestamp),
        Just(FieldValue::Void),
    ]
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    leaf_value().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec((short_string(), inner.clone()), 0..8)
                .prop_map(|kv| FieldValue::Table(kv.into_iter().collect())),
            prop::collection::vec(inner, 0..8).prop_map(|vs| FieldValue::Array(FieldArray(vs))),
        ]
    })
}

fn field_table() -> impl Strategy<Value = FieldTable> {
    prop::collection::vec((short_string(), field_value()), 0..10)
        .prop_map(|kv| kv.into_iter().collect())
}

/// A strategy for one field, from its Rust type name in `MethodInfo::fields`.
fn field_strategy(ty: &str) -> BoxedStrategy<Val> {
    match ty {
        "bool" => any::<bool>().prop_map(Val::Bit).boxed(),
        "u8" => any::<u8>().prop_map(Val::U8).boxed(),
        "u16" => any::<u16>().prop_map(Val::U16).boxed(),
        "u32" => any::<u32>().prop_map(Val::U32).boxed(),
        "u64" => any::<u64>().prop_map(Val::U64).boxed(),
        "ShortString" => short_string().prop_map(Val::Short).boxed(),
        "LongString" => long_string().prop_map(Val::Long).boxed(),
        "SecretBytes" => long_string()
            .prop_map(|s| Val::Secret(SecretBytes(s)))
            .boxed(),
        "FieldTable" => field_table().prop_map(Val::Table).boxed(),
        other => panic!("no strategy for field type {other}: add one"),
    }
}

fn method_fields(info: &MethodInfo) -> Vec<BoxedStrategy<Val>> {
    info.fields
        .iter()
        .map(|(_, ty)| field_strategy(ty))
        .collect()
}

/// Any method of the table with arbitrary fields, as (table entry, values).
fn any_method() -> impl Strategy<Value = (&'static MethodInfo, Vec<Val>)> {
    (0..METHODS.len()).prop_flat_map(|i| (Just(&METHODS[i]), method_fields(&METHODS[i])))
}

fn properties() -> impl Strategy<Value = BasicProperties> {
    let s = || prop::option::of(short_string());
    (
        (
            s(),
            s(),
            prop::option::of(field_table()),
            any::<Option<u8>>(),
        ),
        (any::<Option<u8>>(), s(), s(), s(), s()),
        (any::<Option<u64>>(), s(), s(), s(), s()),
    )
        .prop_map(|(a, b, c)| {
            let mut p = BasicProperties::default();
            p.set_content_type(a.0).unwrap();
            p.set_content_encoding(a.1).unwrap();
            p.set_headers(a.2).unwrap();
            p.set_delivery_mode(a.3).unwrap();
            p.set_priority(b.0).unwrap();
            p.set_correlation_id(b.1).unwrap();
            p.set_reply_to(b.2).unwrap();
            p.set_expiration(b.3).unwrap();
            p.set_message_id(b.4).unwrap();
            p.set_timestamp(c.0).unwrap();
            p.set_kind(c.1).unwrap();
            p.set_user_id(c.2).unwrap();
            p.set_app_id(c.3).unwrap();
            p.set_cluster_id(c.4).unwrap();
            p
        })
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame.encode(&mut out).expect("encodes");
    out.to_vec()
}

/// Decodes exactly one frame that must use all of `bytes`.
fn decode_one(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = FrameDecoder::new(0)
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("decode failed: {e}"))
        .expect("a whole frame");
    assert!(buf.is_empty(), "{} bytes left after one frame", buf.len());
    frame
}

/// `queue.declare-ok` -> `QueueDeclareOk`.
fn struct_name(dotted: &str) -> String {
    dotted
        .split(['.', '-'])
        .map(|w| {
            let mut cs = w.chars();
            cs.next()
                .map(|c| c.to_ascii_uppercase().to_string() + cs.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// What `{:?}` of the decoded `Method` must print for these values.
fn expected_debug(info: &MethodInfo, vals: &[Val]) -> String {
    let name = struct_name(info.name);
    if vals.is_empty() {
        return format!("{name}({name})");
    }
    let fields: Vec<String> = info
        .fields
        .iter()
        .zip(vals)
        .map(|((n, _), v)| format!("{n}: {v:?}"))
        .collect();
    format!("{name}({name} {{ {} }})", fields.join(", "))
}

fn check_method(info: &'static MethodInfo, vals: &[Val], channel: u16) {
    let payload = ref_method_payload(info, vals);
    let wire = ref_frame(FRAME_METHOD, channel, &payload);
    let frame = decode_one(&wire);
    let Frame::Method(ch, method) = &frame else {
        panic!("{}: decoded as {frame:?}", info.name)
    };
    assert_eq!(*ch, channel);
    assert_eq!(method.info(), info);
    assert_eq!(format!("{method:?}"), expected_debug(info, vals));
    // The codec's own encoding is byte-identical to the reference.
    assert_eq!(encode(&frame), wire, "{}: re-encoding differs", info.name);
    // Payload-level API agrees too.
    let decoded = Method::decode(&Bytes::from(payload.clone())).expect("payload decodes");
    let mut again = BytesMut::new();
    decoded.encode(&mut again).expect("encodes");
    assert_eq!(&again[..], &payload[..]);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Every method variant, each with its own run of arbitrary field values.
#[test]
fn every_method_roundtrips_with_arbitrary_fields() {
    let mut runner = TestRunner::new(Config::with_cases(48));
    for info in METHODS {
        let strategy = (method_fields(info), any::<u16>());
        runner
            .run(&strategy, |(vals, channel)| {
                check_method(info, &vals, channel);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", info.name));
    }
}

#[test]
fn every_method_roundtrips_with_default_fields() {
    for info in METHODS {
        let vals: Vec<Val> = info
            .fields
            .iter()
            .map(|(_, ty)| match *ty {
                "bool" => Val::Bit(false),
                "u8" => Val::U8(0),
                "u16" => Val::U16(0),
                "u32" => Val::U32(0),
                "u64" => Val::U64(0),
                "ShortString" => Val::Short(ShortString::empty()),
                "LongString" => Val::Long(LongString::default()),
                "SecretBytes" => Val::Secret(SecretBytes::default()),
                "FieldTable" => Val::Table(FieldTable::new()),
                other => panic!("unknown field type {other}"),
            })
            .collect();
        check_method(info, &vals, 1);
    }
}

/// Every one of the 2^14 property combinations, with fixed values.
#[test]
fn every_property_combination_roundtrips() {
    let full = BasicProperties::default()
        .with_content_type("application/json")
        .with_content_encoding("gzip")
        .with_headers(FieldTable::new().with("a", 1i32).with("b", "two"))
        .with_delivery_mode(2)
        .with_priority(9)
        .with_correlation_id("corr")
        .with_reply_to("amq.rabbitmq.reply-to")
        .with_expiration("60000")
        .with_message_id("id-1")
        .with_timestamp(1_700_000_000)
        .with_kind("type")
        .with_user_id("guest")
        .with_app_id("app")
        .with_cluster_id("cluster");
    assert_eq!(full.flags(), 0xfffc);
    for mask in 0u16..(1 << 14) {
        let keep = |i: u16| mask & (1 << (13 - i)) != 0;
        // Cleared in an order that is neither the list's nor its reverse, so that the
        // setters' splicing is exercised at every position.
        let mut p = full.clone();
        for i in [6, 0, 13, 3, 9, 1, 12, 2, 7, 11, 4, 10, 5, 8] {
            if keep(i) {
                continue;
            }
            match i {
                0 => p.set_content_type(None),
                1 => p.set_content_encoding(None),
                2 => p.set_headers(None),
                3 => p.set_delivery_mode(None),
                4 => p.set_priority(None),
                5 => p.set_correlation_id(None),
                6 => p.set_reply_to(None),
                7 => p.set_expiration(None),
                8 => p.set_message_id(None),
                9 => p.set_timestamp(None),
                10 => p.set_kind(None),
                11 => p.set_user_id(None),
                12 => p.set_app_id(None),
                _ => p.set_cluster_id(None),
            }
            .unwrap();
        }
        assert_eq!(p.flags(), mask << 2, "flags of mask {mask:#06x}");
        let wire = ref_frame(FRAME_HEADER, 3, &ref_header_payload(42, &p));
        let frame = decode_one(&wire);
        let want = Frame::Header(
            3,
            ContentHeader {
                class_id: 60,
                body_size: 42,
                properties: p,
            },
        );
        assert_eq!(frame, want, "mask {mask:#06x}");
        assert_eq!(encode(&frame), wire, "mask {mask:#06x}");
    }
}

proptest! {
    #![proptest_config(Config::with_cases(256))]

    #[test]
    fn any_method_roundtrips((info, vals) in any_method(), channel in any::<u16>()) {
        check_method(info, &vals, channel);
    }

    #[test]
    fn content_header_roundtrips(p in properties(), body_size in any::<u64>(), channel in any::<u16>()) {
        let wire = ref_frame(FRAME_HEADER, channel, &ref_header_payload(body_size, &p));
        let frame = decode_one(&wire);
        let Frame::Header(ch, h) = &frame else { panic!("decoded as {frame:?}") };
        prop_assert_eq!(*ch, channel);
        prop_assert_eq!(h.class_id, 60);
        prop_assert_eq!(h.body_size, body_size);
        prop_assert!(same_props(&h.properties, &p), "{:?} != {:?}", h.properties, p);
        prop_assert_eq!(encode(&frame), wire);
    }

    #[test]
    fn field_tables_roundtrip(t in field_table()) {
        let mut want = Vec::new();
        ref_table(&t, &mut want);
        let decoded = FieldTable::decode(&Bytes::from(want.clone())).expect("decodes");
        prop_assert!(same_table(&decoded, &t), "{:?} != {:?}", decoded, t);
        let mut ours = BytesMut::new();
        t.encode(&mut ours).expect("encodes");
        prop_assert_eq!(&ours[..], &want[..]);
        let mut again = BytesMut::new();
        decoded.encode(&mut again).expect("encodes");
        prop_assert_eq!(&again[..], &want[..]);
    }

    /// A stream of frames cut into arbitrary pieces decodes to the same frames.
    #[test]
    fn split_stream_decodes_to_the_same_frames(
        frames in prop::collection::vec(any_frame(), 1..12),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(encode(f));
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();

        let mut dec = FrameDecoder::new(131_072);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut from = 0;
        for to in cuts {
            buf.extend_from_slice(&wire[from..to]);
            from = to;
            while let Some(f) = dec.decode(&mut buf).expect("valid stream") {
                got.push(f);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got.len(), frames.len());
        for (g, f) in got.iter().zip(&frames) {
            prop_assert!(same_frame(g, f), "{:?} != {:?}", g, f);
        }
    }
}

fn any_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any_method(), any::<u16>()).prop_map(|((info, vals), ch)| {
            let payload = ref_method_payload(info, &vals);
            Frame::Method(ch, Method::decode(&Bytes::from(payload)).expect("decodes"))
        }),
        (properties(), any::<u64>(), any::<u16>()).prop_map(|(properties, body_size, ch)| {
            Frame::Header(
                ch,
                ContentHeader {
                    class_id: 60,
                    body_size,
                    properties,
                },
            )
        }),
        (prop::collection::vec(any::<u8>(), 0..5000), any::<u16>())
            .prop_map(|(b, ch)| Frame::Body(ch, Bytes::from(b))),
        Just(Frame::Heartbeat),
    ]
}

// ---------------------------------------------------------------------------------------------
// Bit packing against hand-computed bytes
// ---------------------------------------------------------------------------------------------

fn method_payload(m: impl Into<Method>) -> Vec<u8> {
    let mut out = BytesMut::new();
    let m = m.into();
    m.encode(&mut out).unwrap();
    let back = Method::decode(&out.clone().freeze()).unwrap();
    assert_eq!(back, m);
    out.to_vec()
}

#[test]
fn queue_declare_bits() {
    // (passive, durable, exclusive, auto_delete, no_wait) -> octet
    let cases = [
        ([false, false, false, false, false], 0x00),
        ([true, false, false, false, false], 0x01),
        ([false, true, false, false, false], 0x02),
        ([false, false, true, false, false], 0x04),
        ([false, false, false, true, false], 0x08),
        ([false, false, false, false, true], 0x10),
        ([false, true, false, true, false], 0x0A),
        ([true, false, true, false, true], 0x15),
        ([true, true, true, true, true], 0x1F),
    ];
    for ([passive, durable, exclusive, auto_delete, no_wait], octet) in cases {
        let m = QueueDeclare {
            queue: ShortString::try_from("q").unwrap(),
            passive,
            durable,
            exclusive,
            auto_delete,
            no_wait,
            ..Default::default()
        };
        #[rustfmt::skip]
        let want = [
            0, 50, 0, 10, // queue.declare
            0, 0,         // reserved-1
            1, b'q',      // queue
            octet,        // the five bits
            0, 0, 0, 0,   // arguments: empty table
        ];
        assert_eq!(method_payload(m), want, "octet {octet:#04x}");
    }
}

#[test]
fn exchange_declare_bits() {
    // (passive, durable, auto_delete, internal, no_wait) -> octet
    let cases = [
        ([false; 5], 0x00),
        ([true, false, false, false, false], 0x01),
        ([false, true, false, false, false], 0x02),
        ([false, false, true, false, false], 0x04),
        ([false, false, false, true, false], 0x08),
        ([false, false, false, false, true], 0x10),
        ([false, true, false, true, false], 0x0A),
        ([true; 5], 0x1F),
    ];
    for ([passive, durable, auto_delete, internal, no_wait], octet) in cases {
        let m = ExchangeDeclare {
            exchange: ShortString::try_from("x").unwrap(),
            kind: ShortString::try_from("topic").unwrap(),
            passive,
            durable,
            auto_delete,
            internal,
            no_wait,
            ..Default::default()
        };
        #[rustfmt::skip]
        let want = [
            0, 40, 0, 10,
            0, 0,
            1, b'x',
            5, b't', b'o', b'p', b'i', b'c',
            octet,
            0, 0, 0, 0,
        ];
        assert_eq!(method_payload(m), want, "octet {octet:#04x}");
    }
}

#[test]
fn basic_nack_bits() {
    for (multiple, requeue, octet) in [
        (false, false, 0),
        (true, false, 1),
        (false, true, 2),
        (true, true, 3),
    ] {
        let m = BasicNack {
            delivery_tag: 0x0102_0304_0506_0708,
            multiple,
            requeue,
        };
        let want = [0, 60, 0, 120, 1, 2, 3, 4, 5, 6, 7, 8, octet];
        assert_eq!(method_payload(m), want);
    }
}

#[test]
fn bit_followed_by_other_fields_starts_a_new_octet() {
    // basic.deliver: consumer-tag, delivery-tag, redelivered (bit), exchange, routing-key.
    let m = amqp_proto::BasicDeliver {
        consumer_tag: ShortString::try_from("c").unwrap(),
        delivery_tag: 7,
        redelivered: true,
        exchange: ShortString::try_from("e").unwrap(),
        routing_key: ShortString::try_from("r").unwrap(),
    };
    #[rustfmt::skip]
    let want = [
        0, 60, 0, 60,
        1, b'c',
        0, 0, 0, 0, 0, 0, 0, 7,
        1,
        1, b'e',
        1, b'r',
    ];
    assert_eq!(method_payload(m), want);
    // connection.open: two short strings then a lone bit at the end.
    let m = amqp_proto::ConnectionOpen {
        virtual_host: ShortString::try_from("/").unwrap(),
        reserved_1: ShortString::empty(),
        reserved_2: true,
    };
    assert_eq!(method_payload(m), [0, 10, 0, 40, 1, b'/', 0, 1]);
}

#[test]
fn unused_high_bits_are_ignored_when_decoding() {
    let payload = Bytes::from_static(&[0, 60, 0, 120, 0, 0, 0, 0, 0, 0, 0, 1, 0xFE]);
    let Method::BasicNack(n) = Method::decode(&payload).unwrap() else {
        panic!("not a nack")
    };
    assert!(!n.multiple && n.requeue);
}

#[test]
fn body_frames_roundtrip_byte_for_byte() {
    for len in [0usize, 1, 4095, 4096, 70_000] {
        let body: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let wire = ref_frame(FRAME_BODY, 9, &body);
        let frame = decode_one(&wire);
        assert_eq!(frame, Frame::Body(9, Bytes::from(body)));
        assert_eq!(encode(&frame), wire);
    }
    assert_eq!(encode(&Frame::Heartbeat), [8, 0, 0, 0, 0, 0, 0, 0xCE]);
}

#[test]
fn decoded_bodies_and_strings_share_the_read_buffer() {
    let mut wire = BytesMut::new();
    let deliver = amqp_proto::BasicDeliver {
        consumer_tag: ShortString::try_from("ctag").unwrap(),
        ..Default::default()
    };
    Frame::Method(1, deliver.into()).encode(&mut wire).unwrap();
    Frame::Body(1, Bytes::from(vec![5u8; 100_000]))
        .encode(&mut wire)
        .unwrap();
    let range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
    let mut dec = FrameDecoder::new(0);
    let Some(Frame::Method(_, Method::BasicDeliver(d))) = dec.decode(&mut wire).unwrap() else {
        panic!("not a deliver")
    };
    assert!(range.contains(&(d.consumer_tag.as_bytes().as_ptr() as usize)));
    let Some(Frame::Body(_, body)) = dec.decode(&mut wire).unwrap() else {
        panic!("not a body")
    };
    assert!(range.contains(&(body.as_ptr() as usize)), "body was copied");
    assert_eq!(body.len(), 100_000);
}
