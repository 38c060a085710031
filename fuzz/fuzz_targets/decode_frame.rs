//! Arbitrary bytes into the streaming frame decoder.
//!
//! The first two bytes pick the frame_max (none, pre-tune, negotiated, or small and odd) and how
//! the rest is cut into reads. Checks: no panic; decoding the whole input at once and in pieces
//! yields the same frames and the same error; every decoded frame re-encodes, and that encoding
//! decodes to the same frame and encodes to the same bytes again.
#![no_main]

use amqp_proto::frame::PRE_TUNE_FRAME_MAX;
use amqp_proto::{CodecError, Frame, FrameDecoder};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// Frames decoded until the decoder wants more input, then that error or `None`.
type Outcome = (Vec<Frame>, Option<CodecError>);

fn decode_in_pieces(data: &[u8], frame_max: u32, piece: usize) -> Outcome {
    let mut dec = FrameDecoder::new(frame_max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in data.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn encode(frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    frame
        .encode(&mut out)
        .unwrap_or_else(|e| panic!("decoded frame does not re-encode: {e}: {frame:?}"));
    out
}

fuzz_target!(|data: &[u8]| {
    let [sel, cut, rest @ ..] = data else {
        return;
    };
    let frame_max = match sel & 3 {
        0 => 0,
        1 => PRE_TUNE_FRAME_MAX,
        2 => 131_072,
        _ => 8 + u32::from(sel >> 2) * 16,
    };
    let (frames, err) = decode_in_pieces(rest, frame_max, rest.len().max(1));
    let pieces = decode_in_pieces(rest, frame_max, usize::from(*cut).max(1));
    // Debug output compares floats in tables sensibly (NaN prints as NaN on both sides).
    assert_eq!(format!("{:?}", (&frames, &err)), format!("{pieces:?}"));

    for frame in &frames {
        let wire = encode(frame);
        let mut again = wire.clone();
        let back = FrameDecoder::new(0)
            .decode(&mut again)
            .unwrap_or_else(|e| panic!("re-encoded frame does not decode: {e}: {frame:?}"))
            .expect("a whole frame");
        assert!(again.is_empty(), "re-encoded frame left bytes behind");
        assert_eq!(format!("{frame:?}"), format!("{back:?}"));
        assert_eq!(wire, encode(&back));
    }
});
