//! Arbitrary bytes as a length-prefixed field table. Checks: no panic; a table that decodes
//! re-encodes, and that encoding decodes to the same table and encodes to the same bytes.
#![no_main]

use amqp_proto::FieldTable;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

fn encode(t: &FieldTable) -> Bytes {
    let mut out = BytesMut::new();
    t.encode(&mut out)
        .unwrap_or_else(|e| panic!("decoded table does not re-encode: {e}: {t:?}"));
    out.freeze()
}

fuzz_target!(|data: &[u8]| {
    let Ok(table) = FieldTable::decode(&Bytes::copy_from_slice(data)) else {
        return;
    };
    let wire = encode(&table);
    let back = FieldTable::decode(&wire)
        .unwrap_or_else(|e| panic!("re-encoded table does not decode: {e}: {table:?}"));
    assert_eq!(format!("{table:?}"), format!("{back:?}"));
    assert_eq!(wire, encode(&back));
});
