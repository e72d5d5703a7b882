//! The log's behaviour, written once against [`Io`] and run on both seams:
//! real files in a temporary directory, and turmoil's simulated disk (with
//! the `sim` feature). Faults come from [`faulty::FaultyIo`]; crashes from
//! turmoil ([`crash`]).

#[cfg(feature = "sim")]
mod crash;
#[cfg(all(feature = "sim", feature = "planted-bugs"))]
mod planted;

use std::future::Future;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

use super::record::{self as framing, FRAME_HEADER_BYTES};
use super::segment::{self, HEADER_BYTES};
use super::snapshot::test_support as snapshot_file;
use super::*;
use crate::io::faulty::FaultyIo;
use crate::io::{File, OpenMode, TokioIo};

/// Every test record is 11 bytes, so 19 framed: offsets are easy to compute.
const FRAME_BYTES: u64 = 19;

/// A segment limit that fits exactly four test records.
const FOUR_RECORDS: u64 = HEADER_BYTES as u64 + 4 * FRAME_BYTES;

fn record(n: u64) -> Bytes {
    Bytes::from(format!("record-{n:04}"))
}

/// The expected recovery of records `from..=to`.
fn records(from: u64, to: u64) -> Vec<(Lsn, Bytes)> {
    (from..=to).map(|n| (Lsn(n), record(n))).collect()
}

/// The offset of the `index`th record (from 0) in a segment of test records.
fn record_offset(index: u64) -> u64 {
    HEADER_BYTES as u64 + index * FRAME_BYTES
}

fn segments_of(records_per_segment: u64) -> LogOptions {
    LogOptions {
        segment_bytes_max: HEADER_BYTES as u64 + records_per_segment * FRAME_BYTES,
        ..LogOptions::default()
    }
}

fn repairing(options: LogOptions) -> LogOptions {
    LogOptions {
        repair: true,
        ..options
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn snapshot_path(dir: &Path, upto: u64) -> PathBuf {
    dir.join(format!("snapshot-{upto:020}.snap"))
}

/// Appends records `from..=to` one at a time (one batch each).
async fn append_each(log: &mut Log, from: u64, to: u64) {
    for n in from..=to {
        assert_eq!(log.append(record(n)).await.unwrap(), Lsn(n));
    }
}

/// Opens, appends records `1..=count` one at a time, and closes.
async fn write_log<I: Io>(io: &I, dir: &Path, options: LogOptions, count: u64) {
    let (mut log, recovered) = open(io.clone(), dir, options).await.unwrap();
    assert_eq!(recovered.next_lsn, Lsn(1));
    append_each(&mut log, 1, count).await;
}

/// Reopens the log and returns what it recovered.
async fn reopen<I: Io>(io: &I, dir: &Path, options: LogOptions) -> (Log, Recovered) {
    open(io.clone(), dir, options).await.unwrap()
}

/// The names of the files in `dir`.
async fn file_names<I: Io>(io: &I, dir: &Path) -> Vec<String> {
    let paths = io.read_dir(dir).await.unwrap();
    let names = paths.iter().map(|path| path.file_name().unwrap());
    names
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

async fn file_len<I: Io>(io: &I, path: &Path) -> u64 {
    io.read_file(path).await.unwrap().len() as u64
}

/// Rewrites a file whole after `edit`, as damage would leave it.
async fn damage<I: Io>(io: &I, path: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut contents = io.read_file(path).await.unwrap();
    edit(&mut contents);
    let mut file = io.open(path, OpenMode::Truncate).await.unwrap();
    file.write_all(&contents).await.unwrap();
    file.sync_all().await.unwrap();
}

/// Flips the bits of the byte at `offset`.
fn flip(offset: u64) -> impl FnOnce(&mut Vec<u8>) {
    move |contents| contents[usize::try_from(offset).unwrap()] ^= 0xff
}

/// Appends raw bytes to a file, as an interrupted write would leave them.
async fn append_raw<I: Io>(io: &I, path: &Path, bytes: &[u8]) {
    let mut file = io.open(path, OpenMode::Append).await.unwrap();
    file.write_all(bytes).await.unwrap();
    file.sync_all().await.unwrap();
}

fn assert_corrupt(
    result: Result<(Log, Recovered), LogError>,
    at: &Path,
    at_offset: u64,
    why: Corruption,
) {
    match result {
        Err(LogError::Corrupt {
            file,
            offset,
            reason,
        }) => assert_eq!((file.as_path(), offset, reason), (at, at_offset, why)),
        other => panic!(
            "expected corruption at {}:{at_offset}, got {other:?}",
            at.display()
        ),
    }
}

async fn appended_records_come_back_in_order<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    let (mut log, recovered) = reopen(&io, &dir, LogOptions::default()).await;
    assert!(recovered.snapshot.is_none() && recovered.records.is_empty());
    assert!(recovered.repair.is_empty());
    assert_eq!(recovered.next_lsn, Lsn(1));
    append_each(&mut log, 1, 5).await;
    drop(log);

    let (_, recovered) = reopen(&io, &dir, LogOptions::default()).await;
    assert!(recovered.snapshot.is_none());
    assert_eq!(recovered.records, records(1, 5));
    assert!(recovered.repair.is_empty());
    assert_eq!(recovered.next_lsn, Lsn(6));
}

async fn lsns_continue_across_reopens<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    for reopening in 0..3 {
        let (mut log, recovered) = reopen(&io, &dir, LogOptions::default()).await;
        assert_eq!(recovered.records, records(1, reopening * 3));
        assert_eq!(recovered.next_lsn, Lsn(reopening * 3 + 1));
        append_each(&mut log, reopening * 3 + 1, reopening * 3 + 3).await;
    }
    let (_, recovered) = reopen(&io, &dir, LogOptions::default()).await;
    assert_eq!(recovered.records, records(1, 9));
}

async fn concurrent_appends_share_fsyncs<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    const APPENDS: u64 = 200;
    let (mut log, _) = reopen(&io, &dir, LogOptions::default()).await;
    let syncs_before = io.faults.syncs();
    // Submitted without waiting, as the broker node submits a burst.
    for n in 1..=APPENDS {
        let ticket = log.submit(|buf| buf.extend_from_slice(&record(n))).unwrap();
        assert_eq!(ticket, Ticket(n));
    }
    let mut acknowledged = Vec::new();
    while log.outstanding() > 0 {
        let completion = log.completion().await;
        // Batches complete in submission order, without gaps.
        assert_eq!(completion.first, Ticket(acknowledged.len() as u64 + 1));
        for n in completion.first.0..completion.end().0 {
            let lsn = completion.outcome_of(Ticket(n)).unwrap().unwrap();
            acknowledged.push((lsn, record(n)));
        }
    }
    let syncs = io.faults.syncs() - syncs_before;
    // One fsync for the new segment's header, then one per batch: the
    // records submitted while one batch was being synced share the next.
    assert!(
        syncs <= APPENDS / 20,
        "{APPENDS} appends took {syncs} fsyncs"
    );

    assert_eq!(acknowledged, records(1, APPENDS));
    drop(log);
    let (_, recovered) = reopen(&io, &dir, LogOptions::default()).await;
    assert_eq!(recovered.records, acknowledged);
}

async fn full_segments_rotate<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    write_log(&io, &dir, segments_of(4), 10).await;
    assert_eq!(
        file_names(&io, &dir).await,
        [
            "00000000000000000001.seg",
            "00000000000000000005.seg",
            "00000000000000000009.seg"
        ]
    );
    assert_eq!(file_len(&io, &segment_path(&dir, 1)).await, FOUR_RECORDS);

    let (mut log, recovered) = reopen(&io, &dir, segments_of(4)).await;
    assert_eq!(recovered.records, records(1, 10));
    append_each(&mut log, 11, 13).await;
    drop(log);
    let (_, recovered) = reopen(&io, &dir, segments_of(4)).await;
    assert_eq!(recovered.records, records(1, 13));
    assert_eq!(file_names(&io, &dir).await.len(), 4);
}

async fn torn_tails_are_cut<I: Io>(io: FaultyIo<I>, root: PathBuf) {
    let mut whole = Vec::new();
    framing::encode(&mut whole, &record(4));
    let mut bad_checksum = whole.clone();
    *bad_checksum.last_mut().unwrap() ^= 1;
    let tails: [&[u8]; 5] = [
        &whole[..3],                      // inside the length
        &whole[..FRAME_HEADER_BYTES + 4], // inside the payload
        &bad_checksum,                    // whole, but fails its checksum
        &[0; 64],                         // blocks allocated, never written
        &[0; 3],
    ];
    for (case, tail) in tails.iter().enumerate() {
        let dir = root.join(format!("case-{case}"));
        write_log(&io, &dir, LogOptions::default(), 3).await;
        let segment = segment_path(&dir, 1);
        append_raw(&io, &segment, tail).await;

        let (mut log, recovered) = reopen(&io, &dir, LogOptions::default()).await;
        assert_eq!(recovered.records, records(1, 3), "case {case}");
        assert!(recovered.repair.is_empty(), "case {case}");
        assert_eq!(
            file_len(&io, &segment).await,
            record_offset(3),
            "case {case}"
        );
        append_each(&mut log, 4, 4).await;
        drop(log);
        let (_, recovered) = reopen(&io, &dir, LogOptions::default()).await;
        assert_eq!(recovered.records, records(1, 4), "case {case}");
    }
}

async fn a_torn_segment_header_is_removed<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    write_log(&io, &dir, segments_of(4), 4).await;
    let torn = segment_path(&dir, 5);
    append_raw(&io, &torn, &segment::encode_header(Lsn(5))[..10]).await;

    let (mut log, recovered) = reopen(&io, &dir, segments_of(4)).await;
    assert_eq!(recovered.records, records(1, 4));
    assert_eq!(recovered.next_lsn, Lsn(5));
    assert_eq!(file_names(&io, &dir).await, ["00000000000000000001.seg"]);
    append_each(&mut log, 5, 5).await;
    drop(log);
    let (_, recovered) = reopen(&io, &dir, segments_of(4)).await;
    assert_eq!(recovered.records, records(1, 5));
}

async fn damage_before_the_tail_is_refused<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    write_log(&io, &dir, LogOptions::default(), 5).await;
    let segment = segment_path(&dir, 1);
    let payload = FRAME_HEADER_BYTES as u64 + 2;
    damage(&io, &segment, flip(record_offset(1) + payload)).await;
    let reopened = open(io.clone(), &dir, LogOptions::default()).await;
    assert_corrupt(reopened, &segment, record_offset(1), Corruption::Checksum);
    // Refusing changes nothing on disk.
    assert_eq!(file_len(&io, &segment).await, record_offset(5));

    damage(&io, &segment, flip(record_offset(1) + payload)).await;
    damage(&io, &segment, |contents| {
        let at = usize::try_from(record_offset(2)).unwrap();
        contents[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    })
    .await;
    let reopened = open(io.clone(), &dir, LogOptions::default()).await;
    assert_corrupt(
        reopened,
        &segment,
        record_offset(2),
        Corruption::BadLength(u32::MAX),
    );
}

async fn damage_at_the_end_of_a_sealed_segment_is_refused<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    write_log(&io, &dir, segments_of(4), 6).await;
    let sealed = segment_path(&dir, 1);
    damage(&io, &sealed, flip(FOUR_RECORDS - 1)).await;
    let reopened = open(io.clone(), &dir, segments_of(4)).await;
    assert_corrupt(reopened, &sealed, record_offset(3), Corruption::Checksum);
}

async fn a_missing_segment_is_a_gap<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    write_log(&io, &dir, segments_of(4), 10).await;
    io.remove_file(&segment_path(&dir, 5)).await.unwrap();
    let reopened = open(io.clone(), &dir, segments_of(4)).await;
    let gap = Corruption::LsnGap {
        expected: Lsn(5),
        found: Lsn(9),
    };
    assert_corrupt(reopened, &segment_path(&dir, 9), 0, gap);

    io.remove_file(&segment_path(&dir, 1)).await.unwrap();
    let reopened = open(io.clone(), &dir, segments_of(4)).await;
    let gap = Corruption::LsnGap {
        expected: Lsn(1),
        found: Lsn(9),
    };
    assert_corrupt(reopened, &segment_path(&dir, 9), 0, gap);
}

async fn repair_cuts_at_the_damage_and_reports_the_loss<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    write_log(&io, &dir, segments_of(4), 10).await;
    let damaged = segment_path(&dir, 5);
    damage(&io, &damaged, flip(record_offset(1) + 9)).await;

    let (mut log, recovered) = reopen(&io, &dir, repairing(segments_of(4))).await;
    assert_eq!(recovered.records, records(1, 5));
    assert_eq!(recovered.next_lsn, Lsn(6));
    let report = RepairReport {
        file: damaged.clone(),
        offset: record_offset(1),
        records_lost: 5, // LSNs 6 to 8 here, 9 and 10 in the next segment
        bytes_lost: (FOUR_RECORDS - record_offset(1)) + record_offset(2),
    };
    assert_eq!(recovered.repair, [report]);
    assert_eq!(file_len(&io, &damaged).await, record_offset(1));
    assert!(
        !file_names(&io, &dir)
            .await
            .contains(&"00000000000000000009.seg".into())
    );

    append_each(&mut log, 6, 7).await;
    drop(log);
    let (_, recovered) = reopen(&io, &dir, segments_of(4)).await;
    assert_eq!(recovered.records, records(1, 7));
    assert!(recovered.repair.is_empty());
}

async fn snapshots_replace_the_segments_they_cover<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    let (mut log, _) = reopen(&io, &dir, segments_of(4)).await;
    append_each(&mut log, 1, 10).await;
    // LSN 6 is inside the second segment, which must stay.
    log.snapshot(Lsn(6), Bytes::from_static(b"state-6"))
        .await
        .unwrap();
    assert_eq!(
        file_names(&io, &dir).await,
        [
            "00000000000000000005.seg",
            "00000000000000000009.seg",
            "snapshot-00000000000000000006.snap"
        ]
    );
    log.snapshot(Lsn(8), Bytes::from_static(b"state-8"))
        .await
        .unwrap();
    assert_eq!(
        file_names(&io, &dir).await,
        [
            "00000000000000000009.seg",
            "snapshot-00000000000000000008.snap"
        ]
    );
    drop(log);

    let (mut log, recovered) = reopen(&io, &dir, segments_of(4)).await;
    let snapshot = (Lsn(8), Bytes::from_static(b"state-8"));
    assert_eq!(recovered.snapshot, Some(snapshot));
    assert_eq!(recovered.records, records(9, 10));
    assert_eq!(recovered.next_lsn, Lsn(11));
    append_each(&mut log, 11, 11).await;
    // Everything up to the last record: the last segment stays all the same.
    log.snapshot(Lsn(11), Bytes::from_static(b"state-11"))
        .await
        .unwrap();
    drop(log);

    let (_, recovered) = reopen(&io, &dir, segments_of(4)).await;
    let snapshot = (Lsn(11), Bytes::from_static(b"state-11"));
    assert_eq!(recovered.snapshot, Some(snapshot));
    assert!(recovered.records.is_empty());
    assert_eq!(recovered.next_lsn, Lsn(12));
    assert_eq!(
        file_names(&io, &dir).await,
        [
            "00000000000000000009.seg",
            "snapshot-00000000000000000011.snap"
        ]
    );
}

async fn leftovers_of_an_interrupted_snapshot_are_removed<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    write_log(&io, &dir, segments_of(4), 10).await;
    // As a crash leaves them: a half-written snapshot, and a complete one
    // whose redundant segment and older snapshot were not removed yet.
    let temp = dir.join("snapshot-00000000000000000009.snap.tmp");
    append_raw(&io, &temp, b"half a snap").await;
    append_raw(
        &io,
        &snapshot_path(&dir, 2),
        &snapshot_file::encode(Lsn(2), b"old"),
    )
    .await;
    append_raw(
        &io,
        &snapshot_path(&dir, 4),
        &snapshot_file::encode(Lsn(4), b"new"),
    )
    .await;

    let (_, recovered) = reopen(&io, &dir, segments_of(4)).await;
    assert_eq!(
        recovered.snapshot,
        Some((Lsn(4), Bytes::from_static(b"new")))
    );
    assert_eq!(recovered.records, records(5, 10));
    assert_eq!(
        file_names(&io, &dir).await,
        [
            "00000000000000000005.seg",
            "00000000000000000009.seg",
            "snapshot-00000000000000000004.snap"
        ]
    );
}

async fn a_damaged_snapshot_is_refused_and_repair_falls_back<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    write_log(&io, &dir, segments_of(4), 10).await;
    let older = snapshot_path(&dir, 4);
    let newer = snapshot_path(&dir, 8);
    append_raw(&io, &older, &snapshot_file::encode(Lsn(4), b"older")).await;
    append_raw(&io, &newer, &snapshot_file::encode(Lsn(8), b"newer")).await;
    damage(&io, &newer, flip(33)).await;

    let reopened = open(io.clone(), &dir, segments_of(4)).await;
    assert_corrupt(reopened, &newer, 0, Corruption::Checksum);

    let (_, recovered) = reopen(&io, &dir, repairing(segments_of(4))).await;
    assert_eq!(
        recovered.snapshot,
        Some((Lsn(4), Bytes::from_static(b"older")))
    );
    assert_eq!(recovered.records, records(5, 10));
    let report = RepairReport {
        file: newer,
        offset: 0,
        records_lost: 0,
        bytes_lost: 32 + 5,
    };
    assert_eq!(recovered.repair, [report]);

    // With no older snapshot to fall back to, even repair refuses.
    damage(&io, &older, flip(34)).await;
    let reopened = open(io.clone(), &dir, repairing(segments_of(4))).await;
    assert_corrupt(reopened, &older, 0, Corruption::Checksum);
}

async fn snapshots_only_cover_durable_records<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    let (mut log, _) = reopen(&io, &dir, LogOptions::default()).await;
    let refused = log.snapshot(Lsn(1), Bytes::from_static(b"s")).await;
    assert!(matches!(
        refused,
        Err(LogError::SnapshotRange {
            upto: Lsn(1),
            last: Lsn(0)
        })
    ));
    append_each(&mut log, 1, 2).await;
    for upto in [0, 3] {
        let refused = log.snapshot(Lsn(upto), Bytes::from_static(b"s")).await;
        assert!(matches!(
            refused,
            Err(LogError::SnapshotRange { last: Lsn(2), .. })
        ));
    }
    log.snapshot(Lsn(2), Bytes::from_static(b"s"))
        .await
        .unwrap();
}

/// Under a steady stream of appends the writer finds a batch waiting each
/// time it finishes one; a snapshot must not wait for a moment without one,
/// or the log grows for good and a full disk is never freed (found by the
/// simulator: `replays/request-never-answered-0x4e.toml`).
async fn a_snapshot_is_taken_under_a_steady_stream_of_appends<I: Io>(
    io: FaultyIo<I>,
    dir: PathBuf,
) {
    const BATCHES_MAX: u64 = 8;
    // A record this large fills a batch: each one is a batch of its own.
    let submit_batch = |log: &mut Log| {
        log.submit(|buf| buf.resize(buf.len() + BATCH_BYTES_MAX, 7))
            .unwrap();
    };
    let (mut log, _) = reopen(&io, &dir, LogOptions::default()).await;
    append_each(&mut log, 1, 1).await;
    submit_batch(&mut log);
    submit_batch(&mut log);
    let snapshot = log.snapshot(Lsn(1), Bytes::from_static(b"s"));
    tokio::pin!(snapshot);
    let mut written = 0;
    loop {
        tokio::select! {
            taken = &mut snapshot => break taken.unwrap(),
            completion = log.completion() => {
                assert!(completion.outcome.is_ok());
                written += completion.records;
                assert!(
                    written < BATCHES_MAX,
                    "the snapshot waited through {written} batches"
                );
                submit_batch(&mut log);
            }
        }
    }
}

async fn no_space_fails_the_batch_and_appends_resume<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    let (mut log, _) = reopen(&io, &dir, LogOptions::default()).await;
    append_each(&mut log, 1, 2).await;
    let segment = segment_path(&dir, 1);

    io.faults.fail_writes(Some(ErrorKind::StorageFull));
    assert!(matches!(
        log.append(record(3)).await,
        Err(LogError::NoSpace)
    ));
    io.faults.fail_writes(None);
    io.faults.fail_next_sync(ErrorKind::StorageFull);
    assert!(matches!(
        log.append(record(3)).await,
        Err(LogError::NoSpace)
    ));
    // Neither failure left a partial record behind.
    assert_eq!(file_len(&io, &segment).await, record_offset(2));

    append_each(&mut log, 3, 4).await;
    drop(log);
    let (_, recovered) = reopen(&io, &dir, LogOptions::default()).await;
    assert_eq!(recovered.records, records(1, 4));
}

async fn a_refused_batch_keeps_its_tickets_but_takes_no_lsns<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    let (mut log, _) = reopen(&io, &dir, LogOptions::default()).await;
    append_each(&mut log, 1, 1).await;
    io.faults.fail_writes(Some(ErrorKind::StorageFull));
    let refused = log.submit(|buf| buf.extend_from_slice(b"refused")).unwrap();
    assert_eq!(refused, Ticket(2));
    let completion = log.completion().await;
    assert_eq!((completion.first, completion.records), (refused, 1));
    assert!(matches!(
        completion.outcome_of(refused),
        Some(Err(LogError::NoSpace))
    ));
    assert_eq!(log.outstanding(), 0);
    io.faults.fail_writes(None);

    // The next record has the next ticket, and the LSN the refused one
    // never took.
    let ticket = log.submit(|buf| buf.extend_from_slice(&record(2))).unwrap();
    assert_eq!(ticket, Ticket(3));
    let completion = log.completion().await;
    assert_eq!(completion.outcome_of(ticket).unwrap().unwrap(), Lsn(2));
    drop(log);
    let (_, recovered) = reopen(&io, &dir, LogOptions::default()).await;
    assert_eq!(recovered.records, records(1, 2));
}

async fn no_space_for_a_new_segment_is_retried<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    let (mut log, _) = reopen(&io, &dir, segments_of(4)).await;
    append_each(&mut log, 1, 4).await;
    io.faults.fail_writes(Some(ErrorKind::StorageFull));
    assert!(matches!(
        log.append(record(5)).await,
        Err(LogError::NoSpace)
    ));
    assert_eq!(file_names(&io, &dir).await, ["00000000000000000001.seg"]);
    io.faults.fail_writes(None);

    append_each(&mut log, 5, 6).await;
    drop(log);
    let (_, recovered) = reopen(&io, &dir, segments_of(4)).await;
    assert_eq!(recovered.records, records(1, 6));
}

async fn with_stop_at_no_space_later_batches_fail_too<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    let stopping = LogOptions {
        stop_at_no_space: true,
        ..LogOptions::default()
    };
    let (mut log, _) = reopen(&io, &dir, stopping.clone()).await;
    append_each(&mut log, 1, 2).await;
    io.faults.fail_writes(Some(ErrorKind::StorageFull));
    let refused = log.submit(|buf| buf.extend_from_slice(&record(3))).unwrap();
    let completion = log.completion().await;
    assert!(matches!(
        completion.outcome_of(refused),
        Some(Err(LogError::NoSpace))
    ));
    // Room again, but a record after the refused one would leave a hole.
    io.faults.fail_writes(None);
    assert!(matches!(
        log.append(record(4)).await,
        Err(LogError::NoSpace)
    ));
    drop(log);
    let (_, recovered) = reopen(&io, &dir, stopping).await;
    assert_eq!(recovered.records, records(1, 2));
}

async fn a_failed_write_or_fsync_is_fatal<I: Io>(io: FaultyIo<I>, root: PathBuf) {
    for (case, op) in ["fsync", "write"].into_iter().enumerate() {
        let dir = root.join(op);
        let (mut log, _) = reopen(&io, &dir, LogOptions::default()).await;
        append_each(&mut log, 1, 1).await;
        match op {
            "fsync" => io.faults.fail_next_sync(ErrorKind::Other),
            _ => io.faults.fail_writes(Some(ErrorKind::Other)),
        }
        let failed = log.append(record(2)).await;
        assert!(
            matches!(&failed, Err(LogError::Io { op: failed_op, .. }) if *failed_op == op),
            "case {case}: {failed:?}"
        );
        io.faults.fail_writes(None);
        // The disk works again, but the writer cannot know what the failed
        // batch left in the page cache: it refuses everything from now on.
        assert!(matches!(
            log.append(record(2)).await,
            Err(LogError::Io { .. })
        ));
        let snapshot = log.snapshot(Lsn(1), Bytes::from_static(b"s")).await;
        assert!(matches!(snapshot, Err(LogError::Io { .. })));
        drop(log);

        // A restart recovers what is on disk: the failed record was never
        // acknowledged, so it may or may not be there.
        let (_, recovered) = reopen(&io, &dir, LogOptions::default()).await;
        assert_eq!(recovered.records.first(), Some(&(Lsn(1), record(1))));
        assert!(recovered.records.len() <= 2);
    }
}

/// A write that lands with one bit of its record flipped, then fails its
/// fsync, was never acknowledged and is the newest thing in the log: the
/// restart cuts it as a torn tail wherever the bit landed. A flip in the
/// length makes it frame too much (past the end of the file, or past
/// [`RECORD_BYTES_MAX`]) or too little (a checksum over part of the
/// payload, the rest left over): none of that is corruption of anything
/// acknowledged.
async fn a_damaged_write_is_cut_wherever_its_bit_lands<I: Io>(io: FaultyIo<I>, root: PathBuf) {
    let bits = FRAME_BYTES * 8;
    for bit in 0..bits {
        let dir = root.join(format!("bit-{bit}"));
        let (mut log, _) = reopen(&io, &dir, LogOptions::default()).await;
        append_each(&mut log, 1, 3).await;
        // `Faults::damage` reads the byte from the rest and the bit from
        // the quotient.
        io.faults
            .damage_next_log_write(Some(bit / 8 + FRAME_BYTES * (bit % 8)));
        let failed = log.append(record(4)).await;
        assert!(
            matches!(&failed, Err(LogError::Io { op: "fsync", .. })),
            "bit {bit}: {failed:?}"
        );
        drop(log);
        let segment = segment_path(&dir, 1);
        assert_eq!(file_len(&io, &segment).await, record_offset(4), "bit {bit}");

        let (mut log, recovered) = reopen(&io, &dir, LogOptions::default()).await;
        assert_eq!(recovered.records, records(1, 3), "bit {bit}");
        assert!(recovered.repair.is_empty(), "bit {bit}");
        assert_eq!(file_len(&io, &segment).await, record_offset(3), "bit {bit}");
        append_each(&mut log, 4, 4).await;
        drop(log);
        let (_, recovered) = reopen(&io, &dir, LogOptions::default()).await;
        assert_eq!(recovered.records, records(1, 4), "bit {bit}");
    }
}

async fn record_sizes_are_checked<I: Io>(io: FaultyIo<I>, dir: PathBuf) {
    let (mut log, _) = reopen(&io, &dir, LogOptions::default()).await;
    let empty = log.append(Bytes::new()).await;
    assert!(matches!(empty, Err(LogError::RecordSize { len: 0 })));
    let huge = log.append(Bytes::from(vec![1; RECORD_BYTES_MAX + 1])).await;
    assert!(matches!(huge, Err(LogError::RecordSize { .. })));
    assert_eq!(log.append(record(1)).await.unwrap(), Lsn(1));
}

async fn the_reserve_is_kept_at_open_and_left_alone_by_recovery<I: Io>(
    io: FaultyIo<I>,
    dir: PathBuf,
) {
    let reserve = dir.join("reserve");
    let options = with_reserve(4096);
    let (mut log, _) = reopen(&io, &dir, options.clone()).await;
    assert_eq!(file_len(&io, &reserve).await, 4096);
    append_each(&mut log, 1, 3).await;
    drop(log);

    // Recovery neither reads nor removes it; a leftover of the right size
    // is kept, one cut short (a crash while it was made) is made again,
    // and a missing one too.
    let (_, recovered) = reopen(&io, &dir, options.clone()).await;
    assert_eq!(recovered.records, records(1, 3));
    assert_eq!(file_len(&io, &reserve).await, 4096);
    damage(&io, &reserve, |contents| contents.truncate(100)).await;
    let (_, recovered) = reopen(&io, &dir, options.clone()).await;
    assert_eq!(recovered.records, records(1, 3));
    assert_eq!(file_len(&io, &reserve).await, 4096);
    io.remove_file(&reserve).await.unwrap();
    let (_, recovered) = reopen(&io, &dir, options.clone()).await;
    assert_eq!(recovered.records, records(1, 3));
    assert_eq!(file_len(&io, &reserve).await, 4096);

    // Turned off, it gives its space back.
    let (_, recovered) = reopen(&io, &dir, LogOptions::default()).await;
    assert_eq!(recovered.records, records(1, 3));
    assert_eq!(file_names(&io, &dir).await, ["00000000000000000001.seg"]);

    // It is the log's own: discarding the log removes it too.
    drop(reopen(&io, &dir, options).await);
    discard(&io, &dir).await.unwrap();
    assert!(file_names(&io, &dir).await.is_empty());
}

/// A log with a disk reserve of `bytes`.
fn with_reserve(bytes: u64) -> LogOptions {
    LogOptions {
        reserve_bytes: bytes,
        ..LogOptions::default()
    }
}

/// Appends a reserved record and waits for it, as [`Log::append`] does for
/// an ordinary one.
#[cfg(feature = "sim")]
async fn append_reserved(log: &mut Log, record: Bytes) -> Result<Lsn, LogError> {
    let ticket = log
        .submit_reserved(|buf| buf.extend_from_slice(&record))
        .unwrap();
    loop {
        let completion = log.completion().await;
        if let Some(outcome) = completion.outcome_of(ticket) {
            return outcome;
        }
    }
}

/// Appends ordinary records, smaller and smaller, until not even a record
/// of one byte fits. Returns how many were appended.
#[cfg(feature = "sim")]
async fn fill(log: &mut Log) -> u64 {
    let mut appended = 0;
    for size in [1000, 100, 10, 1] {
        while log.append(Bytes::from(vec![7; size])).await.is_ok() {
            appended += 1;
        }
    }
    appended
}

/// Runs `test` as a turmoil client on a simulated disk of `capacity_bytes`.
#[cfg(feature = "sim")]
fn on_small_disk<Fut: Future<Output = ()> + 'static>(
    capacity_bytes: u64,
    test: impl FnOnce(FaultyIo<crate::io::TurmoilIo>, PathBuf) -> Fut,
) {
    let mut builder = ::turmoil::Builder::new();
    builder
        .rng_seed(1)
        .simulation_duration(std::time::Duration::from_secs(60));
    builder.fs().capacity(capacity_bytes);
    let mut sim = builder.build();
    let test = test(
        FaultyIo::new(crate::io::TurmoilIo),
        PathBuf::from("/data/log"),
    );
    sim.client("node", async move {
        test.await;
        Ok(())
    });
    sim.run().unwrap();
}

/// Issue 12, item 6, at the log: a disk filled by ordinary records is
/// freed by reserved ones (settles) and the snapshot they make possible,
/// after which ordinary records are written again, and a reopen finds the
/// snapshot and what followed it.
#[cfg(feature = "sim")]
#[test]
fn a_full_disk_is_freed_through_the_reserve() {
    const RESERVE: u64 = 16 << 10;
    on_small_disk(64 << 10, |io, dir| async move {
        let (mut log, _) = reopen(&io, &dir, with_reserve(RESERVE)).await;
        let reserve = dir.join("reserve");
        assert_eq!(file_len(&io, &reserve).await, RESERVE);
        assert_eq!(log.snapshot_room(), None);

        // Ordinary records fill what the reserve leaves, to the last byte
        // a record can take.
        let filled = fill(&mut log).await;
        assert!(filled > 30, "only {filled} records fit");
        assert_eq!(file_len(&io, &reserve).await, RESERVE);

        // Full: ordinary, reserved and ordinary records in one batch. The
        // batch is split; only the reserved record is written, into the
        // space the reserve gave up.
        for (n, reserved) in [(1, false), (2, true), (3, false)] {
            let record = record(n);
            let write = |buf: &mut bytes::BytesMut| buf.extend_from_slice(&record);
            if reserved {
                log.submit_reserved(write).unwrap();
            } else {
                log.submit(write).unwrap();
            }
        }
        let mut outcomes = Vec::new();
        while log.outstanding() > 0 {
            let completion = log.completion().await;
            outcomes.push((
                completion.records,
                completion.outcome.map_err(|e| e.to_string()),
            ));
        }
        let settled = Lsn(filled + 1);
        let no_space = Err(LogError::NoSpace.to_string());
        assert_eq!(
            outcomes,
            [(1, no_space.clone()), (1, Ok(settled)), (1, no_space)]
        );
        assert!(!file_names(&io, &dir).await.contains(&"reserve".to_owned()));

        // Producers stay refused although there is room now; the owner is
        // asked for a snapshot, and more settles may be logged meanwhile.
        assert!(matches!(
            log.append(record(4)).await,
            Err(LogError::NoSpace)
        ));
        let room = log.snapshot_room().expect("a snapshot is wanted");
        assert!(room > 0 && room < RESERVE, "{room}");
        let settled = append_reserved(&mut log, record(5)).await.unwrap();
        assert_eq!(settled, Lsn(filled + 2));

        // The snapshot deletes the full segment and the reserve comes back.
        log.snapshot(settled, Bytes::from_static(b"drained"))
            .await
            .unwrap();
        let next = format!("{:020}.seg", filled + 3);
        let snapshot = format!("snapshot-{:020}.snap", filled + 2);
        assert_eq!(
            file_names(&io, &dir).await,
            [next.as_str(), "reserve", &snapshot]
        );
        assert_eq!(file_len(&io, &reserve).await, RESERVE);
        assert_eq!(log.snapshot_room(), None);

        // Producers have space again.
        let after = log.append(record(6)).await.unwrap();
        assert_eq!(after, Lsn(filled + 3));
        drop(log);
        let (_, recovered) = reopen(&io, &dir, with_reserve(RESERVE)).await;
        assert_eq!(
            recovered.snapshot,
            Some((settled, Bytes::from_static(b"drained")))
        );
        assert_eq!(recovered.records, [(after, record(6))]);
    });
}

/// A disk filled by ordinary records, whose settles then fit in what is
/// left, never gives up its reserve by itself: the owner must still be
/// asked for the snapshot that frees the disk, and the snapshot must free
/// it (the 64 KiB messages on a 64 MiB disk stayed full forever).
#[cfg(feature = "sim")]
#[test]
fn a_full_disk_whose_settles_fit_is_freed_by_a_snapshot() {
    const RESERVE: u64 = 16 << 10;
    on_small_disk(64 << 10, |io, dir| async move {
        let (mut log, _) = reopen(&io, &dir, with_reserve(RESERVE)).await;
        let mut appended = 0;
        while log.append(Bytes::from(vec![7; 1000])).await.is_ok() {
            appended += 1;
        }
        assert!(appended > 30, "only {appended} records fit");
        let settled = append_reserved(&mut log, record(1)).await.unwrap();
        assert_eq!(settled, Lsn(appended + 1), "a settle fits");
        assert!(file_names(&io, &dir).await.contains(&"reserve".to_owned()));

        let room = log.snapshot_room().expect("a snapshot is wanted");
        assert!(room > 0 && room < RESERVE, "{room}");
        log.snapshot(settled, Bytes::from_static(b"drained"))
            .await
            .unwrap();
        let next = format!("{:020}.seg", appended + 2);
        let snapshot = format!("snapshot-{:020}.snap", appended + 1);
        assert_eq!(
            file_names(&io, &dir).await,
            [next.as_str(), "reserve", &snapshot]
        );
        assert_eq!(file_len(&io, &dir.join("reserve")).await, RESERVE);
        assert_eq!(log.snapshot_room(), None);
        assert_eq!(
            log.append(Bytes::from(vec![7; 1000])).await.unwrap(),
            Lsn(appended + 2)
        );
    });
}

/// On a disk that could not take another full segment, a snapshot seals
/// the segment being appended to and starts the next, so that it frees
/// what it covers: producers blocked for want of space (below
/// `limits.disk_free_min_bytes`) wrote all of the log into it, and only
/// consuming and a snapshot can give that space back.
#[test]
fn a_snapshot_on_a_disk_short_of_space_frees_the_segment_being_appended_to() {
    on_tokio(|io, dir| async move {
        let options = LogOptions {
            // No disk has this much free.
            segment_bytes_max: u64::MAX / 2,
            ..LogOptions::default()
        };
        let (mut log, _) = reopen(&io, &dir, options.clone()).await;
        append_each(&mut log, 1, 3).await;
        log.snapshot(Lsn(3), Bytes::from_static(b"state-3"))
            .await
            .unwrap();
        assert_eq!(
            file_names(&io, &dir).await,
            [
                "00000000000000000004.seg",
                "snapshot-00000000000000000003.snap"
            ]
        );
        append_each(&mut log, 4, 4).await;
        drop(log);
        let (_, recovered) = reopen(&io, &dir, options).await;
        assert_eq!(recovered.records, records(4, 4));
    });
}

/// A snapshot too large for what the given-up reserve has left is refused
/// without a write, and the owner is not asked again at once.
#[cfg(feature = "sim")]
#[test]
fn a_snapshot_too_large_for_the_reserve_is_refused() {
    on_small_disk(64 << 10, |io, dir| async move {
        let (mut log, _) = reopen(&io, &dir, with_reserve(16 << 10)).await;
        fill(&mut log).await;
        let settled = append_reserved(&mut log, record(1)).await.unwrap();
        assert!(log.snapshot_room().is_some());
        let refused = log.snapshot(settled, Bytes::from(vec![1; 20 << 10])).await;
        assert!(matches!(refused, Err(LogError::NoSpace)), "{refused:?}");
        assert_eq!(log.snapshot_room(), None);
        assert!(
            !file_names(&io, &dir)
                .await
                .iter()
                .any(|name| name.starts_with("snapshot"))
        );
    });
}

/// A reserve the disk has no room for at open leaves it given up: ordinary
/// records are refused, and once space returns the reserve is made again
/// by itself, at a record after the retry interval, which doubles with
/// each failed try.
#[cfg(feature = "sim")]
#[test]
fn a_reserve_missing_for_want_of_space_is_made_once_space_returns() {
    on_small_disk(64 << 10, |io, dir| async move {
        let interval = reserve::RETRY_INTERVAL_MIN;
        let refused = |outcome| matches!(outcome, Err(LogError::NoSpace));
        io.faults.fail_writes(Some(ErrorKind::StorageFull));
        let (mut log, _) = reopen(&io, &dir, with_reserve(16 << 10)).await;
        assert!(!file_names(&io, &dir).await.contains(&"reserve".to_owned()));
        assert!(log.snapshot_room().is_some());
        // Room again, but the reserve is not tried before the interval.
        io.faults.fail_writes(None);
        assert!(refused(log.append(record(1)).await));

        // Tried after one interval, still full: the next try is two later.
        io.faults.fail_writes(Some(ErrorKind::StorageFull));
        tokio::time::sleep(interval).await;
        assert!(refused(log.append(record(1)).await));
        io.faults.fail_writes(None);
        tokio::time::sleep(interval).await;
        assert!(refused(log.append(record(1)).await));
        assert!(!file_names(&io, &dir).await.contains(&"reserve".to_owned()));

        tokio::time::sleep(interval).await;
        assert_eq!(log.append(record(1)).await.unwrap(), Lsn(1));
        assert_eq!(file_len(&io, &dir.join("reserve")).await, 16 << 10);
        assert_eq!(log.snapshot_room(), None);
    });
}

/// Runs `test` on real files in a fresh temporary directory.
fn on_tokio<Fut: Future<Output = ()>>(test: impl FnOnce(FaultyIo<TokioIo>, PathBuf) -> Fut) {
    let root = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(test(FaultyIo::new(TokioIo), root.path().join("log")));
}

/// Runs `test` as a turmoil client, on the simulated disk.
#[cfg(feature = "sim")]
fn on_turmoil<Fut: Future<Output = ()> + 'static>(
    test: impl FnOnce(FaultyIo<crate::io::TurmoilIo>, PathBuf) -> Fut,
) {
    let mut sim = ::turmoil::Builder::new().rng_seed(1).build();
    let test = test(
        FaultyIo::new(crate::io::TurmoilIo),
        PathBuf::from("/data/log"),
    );
    sim.client("node", async move {
        test.await;
        Ok(())
    });
    sim.run().unwrap();
}

/// Declares each test once per seam.
macro_rules! on_both_seams {
    ($($test:ident),* $(,)?) => {
        mod tokio_seam {
            $( #[test] fn $test() { super::on_tokio(super::$test); } )*
        }
        #[cfg(feature = "sim")]
        mod turmoil_seam {
            $( #[test] fn $test() { super::on_turmoil(super::$test); } )*
        }
    };
}

on_both_seams!(
    appended_records_come_back_in_order,
    lsns_continue_across_reopens,
    concurrent_appends_share_fsyncs,
    full_segments_rotate,
    torn_tails_are_cut,
    a_torn_segment_header_is_removed,
    damage_before_the_tail_is_refused,
    damage_at_the_end_of_a_sealed_segment_is_refused,
    a_missing_segment_is_a_gap,
    repair_cuts_at_the_damage_and_reports_the_loss,
    snapshots_replace_the_segments_they_cover,
    leftovers_of_an_interrupted_snapshot_are_removed,
    a_damaged_snapshot_is_refused_and_repair_falls_back,
    snapshots_only_cover_durable_records,
    a_snapshot_is_taken_under_a_steady_stream_of_appends,
    no_space_fails_the_batch_and_appends_resume,
    a_refused_batch_keeps_its_tickets_but_takes_no_lsns,
    no_space_for_a_new_segment_is_retried,
    with_stop_at_no_space_later_batches_fail_too,
    a_failed_write_or_fsync_is_fatal,
    a_damaged_write_is_cut_wherever_its_bit_lands,
    record_sizes_are_checked,
    the_reserve_is_kept_at_open_and_left_alone_by_recovery,
);

#[test]
fn appends_fail_with_closed_once_the_writer_is_gone() {
    let root = tempfile::tempdir().unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    let (mut log, _) = first
        .block_on(open(TokioIo, root.path(), LogOptions::default()))
        .unwrap();
    // Shutting the runtime down drops the writer task with it.
    drop(first);
    let appended = runtime().block_on(log.append(record(1)));
    assert!(matches!(appended, Err(LogError::Closed)));
}

#[test]
fn the_log_and_its_snapshots_can_move_between_tasks() {
    fn movable<T: Send + Sync + 'static>(_: &T) {}
    let root = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (log, _) = runtime
        .block_on(open(TokioIo, root.path(), LogOptions::default()))
        .unwrap();
    movable(&log);
    fn spawnable<F: Future + Send + 'static>(_: &F) {}
    spawnable(&log.snapshot(Lsn(1), Bytes::new()));
}

/// Bytes that frame a plausible 1 MiB record at every fourth offset make
/// the search for a whole record after damage give up, and the damage then
/// counts as corruption rather than a torn tail: refusing to start is safe,
/// cutting is not.
#[test]
fn a_tail_too_costly_to_search_is_not_taken_for_torn() {
    let (contents, _) = segment_bytes(&[vec![7; 10]]);
    let mut damaged = contents.to_vec();
    // A last record whose length runs past the end, as a torn write's does.
    damaged.extend_from_slice(&(3u32 << 20).to_be_bytes());
    damaged.extend_from_slice(&[0; 4]);
    for _ in 0..(2 << 20) / 4 {
        damaged.extend_from_slice(&[0x00, 0x0f, 0xff, 0xff]);
    }
    let scan = segment::scan(&Bytes::from(damaged), Lsn(1));
    let damage = scan.damage.expect("damage is found");
    assert_eq!(damage.reason, Corruption::Truncated);
    assert!(!damage.torn, "{damage:?}");
}

/// A segment of `payloads`, framed, after a header for LSN 1.
fn segment_bytes(payloads: &[Vec<u8>]) -> (Bytes, Vec<usize>) {
    let mut contents = segment::encode_header(Lsn(1));
    let mut ends = vec![contents.len()];
    for payload in payloads {
        framing::encode(&mut contents, payload);
        ends.push(contents.len());
    }
    (Bytes::from(contents), ends)
}

fn payload_lists() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..12)
}

proptest! {
    /// Cutting a segment anywhere keeps exactly the records before the cut,
    /// and the rest reads as a torn tail.
    #[test]
    fn a_segment_cut_anywhere_is_a_torn_tail(payloads in payload_lists(), cut in any::<prop::sample::Index>()) {
        let (contents, ends) = segment_bytes(&payloads);
        let cut = HEADER_BYTES + cut.index(contents.len() - HEADER_BYTES + 1);
        let scan = segment::scan(&contents.slice(..cut), Lsn(1));
        let whole = ends.iter().filter(|&&end| end <= cut).count() - 1;
        prop_assert_eq!(&scan.records[..], &payloads[..whole]);
        prop_assert_eq!(scan.valid_bytes, ends[whole]);
        prop_assert_eq!(scan.damage.is_some(), cut != ends[whole]);
        prop_assert!(scan.damage.is_none_or(|damage| damage.torn));
    }

    /// A damaged payload byte anywhere but in the last record is corruption
    /// at that record, never a torn tail.
    #[test]
    fn damage_before_the_last_record_is_never_torn(
        payloads in payload_lists().prop_filter("two records", |p| p.len() >= 2),
        victim in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
    ) {
        let (contents, ends) = segment_bytes(&payloads);
        let victim = victim.index(payloads.len() - 1);
        let at = ends[victim] + FRAME_HEADER_BYTES + byte.index(payloads[victim].len());
        let mut damaged = contents.to_vec();
        damaged[at] ^= 0x5a;
        let scan = segment::scan(&Bytes::from(damaged), Lsn(1));
        let expected = segment::Damage { offset: ends[victim], reason: Corruption::Checksum, torn: false };
        prop_assert_eq!(scan.damage, Some(expected));
        prop_assert_eq!(&scan.records[..], &payloads[..victim]);
    }

    /// A flipped bit in the length of any record but the last is corruption
    /// at that record, even when the length now runs past the end of the
    /// file as a torn write's would: the whole records after it show it is
    /// not one.
    #[test]
    fn a_damaged_length_before_the_last_record_is_never_torn(
        payloads in payload_lists().prop_filter("two records", |p| p.len() >= 2),
        victim in any::<prop::sample::Index>(),
        bit in 0..32usize,
    ) {
        let (contents, ends) = segment_bytes(&payloads);
        let victim = victim.index(payloads.len() - 1);
        let mut damaged = contents.to_vec();
        damaged[ends[victim] + bit / 8] ^= 0x80 >> (bit % 8);
        let scan = segment::scan(&Bytes::from(damaged), Lsn(1));
        let damage = scan.damage.expect("a damaged length is found");
        prop_assert_eq!(damage.offset, ends[victim]);
        prop_assert!(!damage.torn, "{:?}", damage);
        prop_assert_eq!(&scan.records[..], &payloads[..victim]);
    }

    /// A flipped bit anywhere in the last record, its length included,
    /// reads as a torn tail: nothing whole follows it, so it cannot be
    /// told from a write that never finished, and the records before it
    /// are kept. A length flipped too large or too small frames no whole
    /// record either.
    #[test]
    fn a_damaged_last_record_is_a_torn_tail(
        payloads in payload_lists().prop_filter("a record", |p| !p.is_empty()),
        bit in any::<prop::sample::Index>(),
    ) {
        let (contents, ends) = segment_bytes(&payloads);
        let last = payloads.len() - 1;
        let bit = bit.index((contents.len() - ends[last]) * 8);
        let mut damaged = contents.to_vec();
        damaged[ends[last] + bit / 8] ^= 0x80 >> (bit % 8);
        let scan = segment::scan(&Bytes::from(damaged), Lsn(1));
        let damage = scan.damage.expect("a damaged record is found");
        prop_assert_eq!(damage.offset, ends[last]);
        prop_assert!(damage.torn, "{:?}", damage);
        prop_assert_eq!(&scan.records[..], &payloads[..last]);
    }

    /// Any bytes after a header scan without panicking, and never claim more
    /// than they hold.
    #[test]
    fn arbitrary_segments_scan_safely(tail in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut contents = segment::encode_header(Lsn(1));
        contents.extend_from_slice(&tail);
        let contents = Bytes::from(contents);
        let scan = segment::scan(&contents, Lsn(1));
        prop_assert!(scan.valid_bytes <= contents.len());
        let framed: usize = scan.records.iter().map(|r| framing::framed_len(r.len())).sum();
        prop_assert_eq!(HEADER_BYTES + framed, scan.valid_bytes);
    }
}
