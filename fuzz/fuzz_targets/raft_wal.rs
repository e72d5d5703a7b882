//! Fuzz target: arbitrary bytes as a Raft record of the write-ahead log
//! (`sluice::raft::wal`).
//!
//! Properties:
//! - decoding never panics, whatever the bytes;
//! - a record that decodes is canonical: encoding it again gives exactly the
//!   input (so one state has one encoding, and nothing is silently dropped);
//! - recovery over the record, twice in a row, never panics, and the second
//!   copy changes nothing (a record replayed again is idempotent).

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sluice::raft::replica::Persist;
use sluice::raft::wal;

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    let Ok(record) = wal::decode(input.clone()) else {
        return;
    };
    let persist = Persist {
        number: 0,
        entries: record.entries.clone(),
        hard_state: record.hard_state.clone(),
        snapshot: record.snapshot.clone(),
    };
    let mut again = BytesMut::new();
    wal::encode(record.group, &persist, &mut again);
    assert_eq!(&again[..], &input[..], "a decoded record re-encodes to its bytes");

    let once = wal::recover([input.clone()]).expect("it decoded once");
    let twice = wal::recover([input.clone(), input]).expect("it decoded once");
    assert_eq!(once, twice, "replaying a record again changes nothing");
});
