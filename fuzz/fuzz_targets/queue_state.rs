//! Fuzz target: arbitrary bytes as the queues' part of a group's state
//! (`sluice::queue::Queues::decode_whole`), which a node reads back from a
//! snapshot file at start and a Raft member takes from its leader.
//!
//! Properties:
//! - decoding never panics, whatever the bytes;
//! - what decodes re-encodes to bytes that decode again and re-encode to
//!   the same bytes (one state, one encoding).

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sluice::queue::Queues;

/// The encoding of `queues`.
fn encode(queues: &Queues) -> Bytes {
    let mut out = BytesMut::new();
    queues.encode_whole(&mut out);
    out.freeze()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::copy_from_slice(data);
    let Ok(queues) = Queues::decode_whole(&mut input) else {
        return;
    };
    let encoded = encode(&queues);
    let mut again = encoded.clone();
    let decoded = Queues::decode_whole(&mut again).expect("a re-encoded state decodes");
    assert!(again.is_empty(), "a re-encoded state decodes whole");
    assert_eq!(encode(&decoded), encoded, "a state has one encoding");
});
