//! Fuzz target: arbitrary bytes decoded as one AMQP [`Value`].
//!
//! Properties (rustls' "decode, re-encode, compare"):
//! - decoding never panics, whatever the input (a panic is a crash);
//! - a value that decodes re-encodes to bytes that decode again, and those
//!   re-encode to the very same bytes. Bytes are compared rather than values
//!   because `NaN != NaN`.
//!
//! The first encoding may differ from the input: the decoder accepts wider
//! constructors than the encoder's smallest ones.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::amqp::codec::{Value, from_bytes, to_bytes};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = from_bytes::<Value>(Bytes::copy_from_slice(data)) else {
        return;
    };
    let encoded = to_bytes(&value);
    let decoded = match from_bytes::<Value>(encoded.clone()) {
        Ok(decoded) => decoded,
        Err(e) => panic!("{value:?} encodes to {encoded:02x?}, which does not decode: {e}"),
    };
    assert_eq!(
        to_bytes(&decoded),
        encoded,
        "re-encoding {value:?} is not stable"
    );
});
