//! Fuzz target: arbitrary bytes as the votes file (`sluice::raft::votes`),
//! which a node reads at start to learn the terms and votes it cast.
//!
//! Properties:
//! - parsing never panics, whatever the bytes;
//! - what parses came from one whole copy, byte for byte the record its
//!   ballots encode to (one state, one encoding: nothing silently dropped);
//! - the file written for those ballots parses back to them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::raft::votes;

fuzz_target!(|data: &[u8]| {
    let Some(ballots) = votes::parse(data) else {
        return;
    };
    let record = votes::encode(&ballots);
    let (first, second) = data.split_at(data.len() / 2);
    assert!(
        first == record.as_slice() || second == record.as_slice(),
        "a parsed copy re-encodes to its bytes"
    );
    assert_eq!(votes::parse(&votes::contents(&ballots)), Some(ballots));
});
