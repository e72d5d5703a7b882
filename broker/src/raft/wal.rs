//! The Raft records of a node's write-ahead log: what every group's
//! [`Persist`] writes, framed for the broker's log (`crate::log`), which
//! one node shares among all its groups so that one fsync covers them all.
//!
//! A record is `version u8 (2) | group u32 | hard state | snapshot |
//! entries`, all integers big-endian:
//!
//! ```text
//! hard state   present u8 (0 or 1) | term u64 | vote u64 | commit u64
//! snapshot     present u8 (0 or 1) | index u64 | term u64
//!              | voters count u32 | voter u64 * | data len u32 | data
//! entries      count u32, then per entry:
//!              index u64 | term u64 | type u8 | data len u32 | data
//!              | context len u32 | context
//! ```
//!
//! The log checksums every record, so decoding here is about a record
//! written by another version, or a bug: it is strict (every length checked
//! against what remains, entries consecutive from an index of at least 1,
//! nothing left over) and never panics.
//!
//! [`recover`] replays a node's records in log order into each group's
//! [`Durable`] state: the last hard state, the newest snapshot, and the
//! entries after it with every replacement applied (a write starting at
//! index i replaces i and after).

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use raft::eraftpb::{Entry, EntryType, HardState, Snapshot};

use super::replica::{Durable, Persist};

/// Which Raft group a record belongs to.
pub type GroupId = u32;

/// The record format this build writes and reads (version 1, from before
/// snapshots, never left a development build).
const VERSION: u8 = 2;

/// Why a record does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// Written by a format this build does not know.
    #[error("raft record version {0} is not supported")]
    Version(u8),
    /// Ends before a field it announces.
    #[error("raft record truncated in {0}")]
    Truncated(&'static str),
    /// A field holds a value no writer produces.
    #[error("raft record has an invalid {0}")]
    Invalid(&'static str),
    /// Bytes after the last field.
    #[error("raft record has {0} bytes after its last field")]
    Trailing(usize),
}

/// Appends `persist` of `group` to `out`, as one record.
pub fn encode(group: GroupId, persist: &Persist, out: &mut BytesMut) {
    out.put_u8(VERSION);
    out.put_u32(group);
    match &persist.hard_state {
        Some(hard_state) => {
            out.put_u8(1);
            out.put_u64(hard_state.term);
            out.put_u64(hard_state.vote);
            out.put_u64(hard_state.commit);
        }
        None => out.put_u8(0),
    }
    match &persist.snapshot {
        Some(snapshot) => {
            let metadata = snapshot.get_metadata();
            out.put_u8(1);
            out.put_u64(metadata.index);
            out.put_u64(metadata.term);
            let voters = &metadata.get_conf_state().voters;
            out.put_u32(u32::try_from(voters.len()).expect("few voters"));
            voters.iter().for_each(|&voter| out.put_u64(voter));
            put_bytes(out, &snapshot.data);
        }
        None => out.put_u8(0),
    }
    let count = u32::try_from(persist.entries.len()).expect("a ready holds far fewer entries");
    out.put_u32(count);
    for entry in &persist.entries {
        out.put_u64(entry.index);
        out.put_u64(entry.term);
        out.put_u8(entry_type_code(entry.entry_type));
        put_bytes(out, &entry.data);
        put_bytes(out, &entry.context);
    }
}

/// A decoded record: its group, entries and hard state.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The group it belongs to.
    pub group: GroupId,
    /// The hard state it wrote, if any.
    pub hard_state: Option<HardState>,
    /// The snapshot it wrote, if any: it replaces the entries it covers.
    pub snapshot: Option<Snapshot>,
    /// The entries it wrote.
    pub entries: Vec<Entry>,
}

/// Decodes one record (zero-copy for entry data).
///
/// # Errors
///
/// [`WalError`] for anything [`encode`] does not write.
pub fn decode(mut input: Bytes) -> Result<Record, WalError> {
    let version = get_u8(&mut input, "version")?;
    if version != VERSION {
        return Err(WalError::Version(version));
    }
    let group = get_u32(&mut input, "group")?;
    let hard_state = match get_u8(&mut input, "hard state flag")? {
        0 => None,
        1 => Some(HardState {
            term: get_u64(&mut input, "hard state")?,
            vote: get_u64(&mut input, "hard state")?,
            commit: get_u64(&mut input, "hard state")?,
            ..HardState::default()
        }),
        _ => return Err(WalError::Invalid("hard state flag")),
    };
    let snapshot = decode_snapshot(&mut input)?;
    let count = get_u32(&mut input, "entry count")?;
    // Each entry takes at least 25 bytes: no allocation a short record
    // could not back.
    if u64::from(count) * 25 > input.remaining() as u64 {
        return Err(WalError::Truncated("entries"));
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let entry = Entry {
            index: get_u64(&mut input, "entry index")?,
            term: get_u64(&mut input, "entry term")?,
            entry_type: entry_type(get_u8(&mut input, "entry type")?)?,
            data: get_bytes(&mut input, "entry data")?,
            context: get_bytes(&mut input, "entry context")?,
            ..Entry::default()
        };
        // A ready cycle writes consecutive entries, from index 1 on (after
        // the snapshot, if there is one).
        let expected = match (entries.last(), &snapshot) {
            (Some(last), _) => last.index.checked_add(1),
            (None, Some(snapshot)) => snapshot.get_metadata().index.checked_add(1),
            (None, None) => Some(entry.index.max(1)),
        };
        if Some(entry.index) != expected {
            return Err(WalError::Invalid("entry index"));
        }
        entries.push(entry);
    }
    if input.has_remaining() {
        return Err(WalError::Trailing(input.remaining()));
    }
    Ok(Record {
        group,
        hard_state,
        snapshot,
        entries,
    })
}

fn decode_snapshot(input: &mut Bytes) -> Result<Option<Snapshot>, WalError> {
    match get_u8(input, "snapshot flag")? {
        0 => return Ok(None),
        1 => {}
        _ => return Err(WalError::Invalid("snapshot flag")),
    }
    let index = get_u64(input, "snapshot index")?;
    let term = get_u64(input, "snapshot term")?;
    let voters = get_u32(input, "snapshot voters")?;
    if u64::from(voters) * 8 > input.remaining() as u64 {
        return Err(WalError::Truncated("snapshot voters"));
    }
    let voters = (0..voters)
        .map(|_| get_u64(input, "snapshot voter"))
        .collect::<Result<Vec<_>, _>>()?;
    let data = get_bytes(input, "snapshot data")?;
    if index == 0 || voters.is_empty() {
        return Err(WalError::Invalid("snapshot"));
    }
    let mut snapshot = Snapshot::default();
    snapshot.set_data(data);
    let metadata = snapshot.mut_metadata();
    metadata.index = index;
    metadata.term = term;
    metadata.mut_conf_state().voters = voters;
    Ok(Some(snapshot))
}

/// Replays a node's records, in log order, into each group's durable state.
///
/// # Errors
///
/// The first record that does not decode.
pub fn recover(
    records: impl IntoIterator<Item = Bytes>,
) -> Result<BTreeMap<GroupId, Durable>, WalError> {
    let mut groups: BTreeMap<GroupId, Durable> = BTreeMap::new();
    for record in records {
        let record = decode(record)?;
        let durable = groups.entry(record.group).or_default();
        if let Some(snapshot) = record.snapshot {
            durable.install(snapshot);
        }
        durable.apply(&record.entries, record.hard_state.as_ref());
    }
    Ok(groups)
}

fn entry_type_code(entry_type: EntryType) -> u8 {
    match entry_type {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

fn entry_type(code: u8) -> Result<EntryType, WalError> {
    match code {
        0 => Ok(EntryType::EntryNormal),
        1 => Ok(EntryType::EntryConfChange),
        2 => Ok(EntryType::EntryConfChangeV2),
        _ => Err(WalError::Invalid("entry type")),
    }
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("entries are bounded far below 4 GiB");
    out.put_u32(len);
    out.put_slice(bytes);
}

fn get_u8(input: &mut Bytes, field: &'static str) -> Result<u8, WalError> {
    input.try_get_u8().map_err(|_| WalError::Truncated(field))
}

fn get_u32(input: &mut Bytes, field: &'static str) -> Result<u32, WalError> {
    input.try_get_u32().map_err(|_| WalError::Truncated(field))
}

fn get_u64(input: &mut Bytes, field: &'static str) -> Result<u64, WalError> {
    input.try_get_u64().map_err(|_| WalError::Truncated(field))
}

fn get_bytes(input: &mut Bytes, field: &'static str) -> Result<Bytes, WalError> {
    let len = get_u32(input, field)? as usize;
    if len > input.remaining() {
        return Err(WalError::Truncated(field));
    }
    Ok(input.split_to(len))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry(index: u64, term: u64, data: &'static [u8]) -> Entry {
        Entry {
            index,
            term,
            data: Bytes::from_static(data),
            ..Entry::default()
        }
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..HardState::default()
        }
    }

    fn record(group: GroupId, entries: Vec<Entry>, hard_state: Option<HardState>) -> Bytes {
        with_snapshot(group, None, entries, hard_state)
    }

    fn with_snapshot(
        group: GroupId,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
    ) -> Bytes {
        let mut out = BytesMut::new();
        let persist = Persist {
            number: 1,
            entries,
            hard_state,
            snapshot,
        };
        encode(group, &persist, &mut out);
        out.freeze()
    }

    fn snapshot(index: u64, term: u64, data: &'static [u8]) -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.set_data(Bytes::from_static(data));
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = term;
        metadata.mut_conf_state().voters = vec![1, 2, 3];
        snapshot
    }

    #[test]
    fn a_snapshot_replaces_the_entries_it_covers_and_older_ones_are_ignored() {
        let records = [
            record(1, vec![entry(1, 1, b"a"), entry(2, 1, b"b")], None),
            with_snapshot(
                1,
                Some(snapshot(5, 2, b"state")),
                vec![entry(6, 2, b"f")],
                None,
            ),
            // Replayed after a log snapshot: older, and covered, so ignored.
            with_snapshot(
                1,
                Some(snapshot(3, 1, b"old")),
                vec![entry(4, 1, b"d")],
                None,
            ),
            record(1, vec![entry(6, 2, b"f"), entry(7, 2, b"g")], None),
        ];
        let recovered = recover(records).unwrap();
        let durable = &recovered[&1];
        assert_eq!(durable.snapshot, Some(snapshot(5, 2, b"state")));
        assert_eq!(durable.entries, [entry(6, 2, b"f"), entry(7, 2, b"g")]);
    }

    #[test]
    fn entries_after_a_snapshot_must_follow_it() {
        let bytes = with_snapshot(1, Some(snapshot(5, 2, b"s")), vec![entry(7, 2, b"g")], None);
        assert_eq!(decode(bytes), Err(WalError::Invalid("entry index")));
    }

    #[test]
    fn a_record_round_trips() {
        let conf = Entry {
            entry_type: EntryType::EntryConfChange,
            context: Bytes::from_static(b"ctx"),
            ..entry(2, 1, b"")
        };
        let entries = vec![entry(1, 1, b"enqueue"), conf];
        let bytes = record(7, entries.clone(), Some(hard_state(1, 2, 1)));
        assert_eq!(
            decode(bytes),
            Ok(Record {
                group: 7,
                hard_state: Some(hard_state(1, 2, 1)),
                snapshot: None,
                entries,
            })
        );
    }

    #[test]
    fn recovery_keeps_the_last_hard_state_and_applies_replacements() {
        let records = [
            record(
                1,
                vec![entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")],
                Some(hard_state(1, 1, 1)),
            ),
            record(2, vec![entry(1, 1, b"other group")], None),
            // A new leader in term 2 replaced the uncommitted 3 (and 4+).
            record(1, vec![entry(3, 2, b"C")], Some(hard_state(2, 3, 2))),
        ];
        let groups = recover(records).unwrap();
        let one = &groups[&1];
        assert_eq!(one.hard_state, hard_state(2, 3, 2));
        let data: Vec<&[u8]> = one.entries.iter().map(|e| &e.data[..]).collect();
        assert_eq!(data, [&b"a"[..], b"b", b"C"]);
        assert_eq!(groups[&2].entries.len(), 1);
    }

    #[test]
    fn damaged_records_are_refused() {
        let good = record(1, vec![entry(1, 1, b"data")], Some(hard_state(1, 1, 1)));
        assert_eq!(
            decode(good.slice(..good.len() - 1)),
            Err(WalError::Truncated("entry context"))
        );
        let mut trailing = BytesMut::from(&good[..]);
        trailing.put_u8(0);
        assert_eq!(decode(trailing.freeze()), Err(WalError::Trailing(1)));
        let mut version = BytesMut::from(&good[..]);
        version[0] = 9;
        assert_eq!(decode(version.freeze()), Err(WalError::Version(9)));
        let mut flag = BytesMut::from(&good[..]);
        flag[5] = 2;
        assert_eq!(
            decode(flag.freeze()),
            Err(WalError::Invalid("hard state flag"))
        );
    }

    /// Found by the `raft_wal` fuzz target: a record whose entries start
    /// past index 1 (as after log truncation), replayed twice, duplicated
    /// its entries, because replacement was by position, not by index.
    #[test]
    fn replaying_a_record_that_starts_past_index_1_twice_changes_nothing() {
        let seed = Bytes::from_static(include_bytes!(
            "../../../fuzz/corpus/raft_wal/seed-crash-replay-past-index-1"
        ));
        let once = recover([seed.clone()]).unwrap();
        assert_eq!(recover([seed.clone(), seed]).unwrap(), once);
        let indexes: Vec<u64> = once[&7].entries.iter().map(|e| e.index).collect();
        assert_eq!(indexes, [5, 6]);
    }

    /// Found by the `raft_wal` fuzz target: entries out of order within a
    /// record (which no writer produces) made replay ambiguous. Refused.
    #[test]
    fn a_record_whose_entries_do_not_follow_each_other_is_refused() {
        let seed = Bytes::from_static(include_bytes!(
            "../../../fuzz/corpus/raft_wal/seed-crash-entries-out-of-order"
        ));
        assert_eq!(decode(seed), Err(WalError::Invalid("entry index")));
        let gap = record(1, vec![entry(1, 1, b"a"), entry(3, 1, b"c")], None);
        assert_eq!(decode(gap), Err(WalError::Invalid("entry index")));
        let zero = record(1, vec![entry(0, 1, b"a")], None);
        assert_eq!(decode(zero), Err(WalError::Invalid("entry index")));
        // Found by the fuzz target too: the index after u64::MAX overflowed.
        let seed = Bytes::from_static(include_bytes!(
            "../../../fuzz/corpus/raft_wal/seed-crash-index-overflow"
        ));
        assert_eq!(decode(seed), Err(WalError::Invalid("entry index")));
    }

    proptest! {
        /// Any bytes decode or fail cleanly, never panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(Bytes::from(bytes));
        }
    }
}
