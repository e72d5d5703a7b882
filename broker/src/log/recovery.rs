//! Recovery at open: load the newest snapshot, replay the segments after it,
//! cut a torn tail, and refuse (or, with `repair`, cut at) anything else.
//!
//! Recovery first reads and checks everything, deciding what to change, and
//! only then changes it: an open that fails leaves the directory as it found
//! it, and one that crashes half-way through its changes makes the same
//! decisions when run again.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tracing::{info, warn};

use super::error::Context;
use super::files::{self, Listing};
use super::segment::{self, Damage, HEADER_BYTES};
use super::writer::ActiveSegment;
use super::{Corruption, LogError, LogOptions, Lsn, Recovered, RepairReport, snapshot};
use crate::io::{File, Io, OpenMode};

/// A recovered log: what to hand the broker, and where the writer goes on.
pub(super) struct Opened<F> {
    /// The snapshot and records to replay.
    pub(super) recovered: Recovered,
    /// The last segment, open for appending; `None` when there is none yet
    /// and the writer creates one for its first batch.
    pub(super) active: Option<ActiveSegment<F>>,
}

/// The changes recovery decided on.
#[derive(Debug, Default)]
struct Plan {
    /// Files to remove: half-written snapshots, files a snapshot made
    /// redundant, and what `repair` cuts off.
    remove: Vec<PathBuf>,
    /// What `repair` cut, in the order found.
    repairs: Vec<RepairReport>,
}

/// The last segment kept, where the writer goes on appending.
#[derive(Debug)]
struct Tail {
    first: Lsn,
    path: PathBuf,
    /// The length of its good prefix.
    len_bytes: usize,
    /// Whether the file is longer than that and must be cut back.
    truncate: bool,
}

/// What replaying the segments produced.
#[derive(Debug)]
struct Replayed {
    /// Records after the snapshot, in LSN order.
    records: Vec<(Lsn, Bytes)>,
    /// The LSN after the last record the segments hold.
    end: Lsn,
    /// The segments kept, with their good lengths, oldest first.
    kept: Vec<(PathBuf, usize)>,
    tail: Option<Tail>,
}

/// Opens the log in `dir`, creating the directory if needed.
pub(super) async fn recover<I: Io>(
    io: &I,
    dir: &Path,
    options: &LogOptions,
) -> Result<Opened<I::File>, LogError> {
    files::ensure_dir(io, dir).await?;
    let listing = files::list(io, dir).await?;
    let mut plan = Plan {
        remove: listing.temps.clone(),
        ..Plan::default()
    };
    let snapshot = load_snapshot(io, &listing, options.repair, &mut plan).await?;
    let snapshot_lsn = snapshot.as_ref().map_or(Lsn(0), |(lsn, _)| *lsn);
    plan.remove.extend(listing.redundant(snapshot_lsn));
    let live = listing.live_segments(snapshot_lsn);
    let mut replayed = replay(io, live, snapshot_lsn, options.repair, &mut plan).await?;
    check_against_snapshot(&mut replayed, snapshot_lsn, options.repair, &mut plan)?;

    files::remove_all(io, dir, &plan.remove).await?;
    let active = match replayed.tail {
        Some(tail) => Some(open_tail(io, tail).await?),
        None => None,
    };
    let next_lsn = replayed.end.max(snapshot_lsn.next());
    info!(
        snapshot_lsn = %snapshot_lsn,
        records = replayed.records.len(),
        next_lsn = %next_lsn,
        repairs = plan.repairs.len(),
        "log recovered"
    );
    let recovered = Recovered {
        snapshot,
        records: replayed.records,
        repair: plan.repairs,
        next_lsn,
    };
    Ok(Opened { recovered, active })
}

/// Loads the newest snapshot. A damaged one is corruption; with `repair`,
/// recovery falls back to the next older one, if there is one.
async fn load_snapshot<I: Io>(
    io: &I,
    listing: &Listing,
    repair: bool,
    plan: &mut Plan,
) -> Result<Option<(Lsn, Bytes)>, LogError> {
    for (index, (lsn, path)) in listing.snapshots.iter().enumerate().rev() {
        let contents = Bytes::from(io.read_file(path).await.during("read", path)?);
        let (offset, reason) = match snapshot::decode(&contents, *lsn) {
            Ok(state) => return Ok(Some((*lsn, state))),
            Err(damage) => damage,
        };
        let has_older = index > 0;
        if !(repair && has_older) {
            return Err(corrupt(path, offset, reason));
        }
        warn!(file = %path.display(), offset, %reason, "repair: discarding a damaged snapshot");
        plan.remove.push(path.clone());
        plan.repairs.push(RepairReport {
            file: path.clone(),
            offset,
            records_lost: 0,
            bytes_lost: contents.len() as u64,
        });
    }
    Ok(None)
}

/// Reads the live segments in order, checking every record and that each
/// segment starts where the previous one ended.
async fn replay<I: Io>(
    io: &I,
    segments: &[(Lsn, PathBuf)],
    snapshot_lsn: Lsn,
    repair: bool,
    plan: &mut Plan,
) -> Result<Replayed, LogError> {
    let mut replayed = Replayed {
        records: Vec::new(),
        end: snapshot_lsn.next(),
        kept: Vec::new(),
        tail: None,
    };
    for (index, (first, path)) in segments.iter().enumerate() {
        let later = segments.get(index + 1..).unwrap_or_default();
        let contents = Bytes::from(io.read_file(path).await.during("read", path)?);
        // The first live segment may start at or before the snapshot's end
        // (its records up to the snapshot are skipped); every later one
        // starts where the previous one ended.
        let in_sequence = if index == 0 {
            *first <= replayed.end
        } else {
            *first == replayed.end
        };
        if !in_sequence {
            let reason = Corruption::LsnGap {
                expected: replayed.end,
                found: *first,
            };
            let damage = Damage {
                offset: 0,
                reason,
                torn: false,
            };
            cut(io, path, &contents, damage, later, repair, plan).await?;
            break;
        }
        let scan = segment::scan(&contents, *first);
        replayed.end = Lsn(first.0 + scan.records.len() as u64);
        let numbered = (first.0..).map(Lsn).zip(scan.records);
        replayed
            .records
            .extend(numbered.filter(|(lsn, _)| *lsn > snapshot_lsn));
        if let Some(damage) = scan.damage {
            if damage.torn && later.is_empty() {
                plan_torn_tail(path, &contents, damage, plan);
            } else {
                cut(io, path, &contents, damage, later, repair, plan).await?;
            }
        }
        if scan.valid_bytes >= HEADER_BYTES {
            replayed.kept.push((path.clone(), scan.valid_bytes));
            replayed.tail = Some(Tail {
                first: *first,
                path: path.clone(),
                len_bytes: scan.valid_bytes,
                truncate: scan.damage.is_some(),
            });
        }
        if scan.damage.is_some() {
            break;
        }
    }
    Ok(replayed)
}

/// A torn tail holds only what an interrupted write left, which was never
/// acknowledged: cut it off. A segment whose header was torn holds no record
/// and goes altogether.
fn plan_torn_tail(path: &Path, contents: &[u8], damage: Damage, plan: &mut Plan) {
    warn!(
        file = %path.display(),
        offset = damage.offset,
        bytes = contents.len() - damage.offset,
        reason = %damage.reason,
        "cutting a torn tail off the log"
    );
    if damage.offset < HEADER_BYTES {
        plan.remove.push(path.to_path_buf());
    }
}

/// Damage a torn write cannot explain: refuse to open or, with `repair`, cut
/// the log there, dropping the rest of this segment and every later one.
async fn cut<I: Io>(
    io: &I,
    path: &Path,
    contents: &[u8],
    damage: Damage,
    later: &[(Lsn, PathBuf)],
    repair: bool,
    plan: &mut Plan,
) -> Result<(), LogError> {
    let offset = damage.offset as u64;
    if !repair {
        return Err(corrupt(path, offset, damage.reason));
    }
    let mut records_lost = segment::count_frames(contents, damage.offset.max(HEADER_BYTES));
    let mut bytes_lost = (contents.len() - damage.offset) as u64;
    if damage.offset < HEADER_BYTES {
        plan.remove.push(path.to_path_buf());
    }
    for (_, later_path) in later {
        let later_contents = io.read_file(later_path).await.during("read", later_path)?;
        records_lost += segment::count_frames(&later_contents, HEADER_BYTES);
        bytes_lost += later_contents.len() as u64;
        plan.remove.push(later_path.clone());
    }
    warn!(
        file = %path.display(),
        offset,
        reason = %damage.reason,
        records_lost,
        bytes_lost,
        "repair: cutting the log at damage"
    );
    plan.repairs.push(RepairReport {
        file: path.to_path_buf(),
        offset,
        records_lost,
        bytes_lost,
    });
    Ok(())
}

/// A snapshot only ever covers durable records, so a log ending before it
/// has lost durable records. With `repair`, the segments go (the snapshot
/// holds everything in them) and the log goes on after the snapshot.
fn check_against_snapshot(
    replayed: &mut Replayed,
    snapshot_lsn: Lsn,
    repair: bool,
    plan: &mut Plan,
) -> Result<(), LogError> {
    let Some(tail) = replayed
        .tail
        .as_ref()
        .filter(|_| replayed.end <= snapshot_lsn)
    else {
        return Ok(());
    };
    let offset = tail.len_bytes as u64;
    let reason = Corruption::BehindSnapshot {
        snapshot: snapshot_lsn,
        log_end: Lsn(replayed.end.0 - 1),
    };
    if !repair {
        return Err(corrupt(&tail.path, offset, reason));
    }
    warn!(file = %tail.path.display(), %reason, "repair: removing segments the snapshot covers");
    plan.repairs.push(RepairReport {
        file: tail.path.clone(),
        offset,
        records_lost: 0,
        bytes_lost: replayed.kept.iter().map(|(_, len)| *len as u64).sum(),
    });
    plan.remove
        .extend(replayed.kept.drain(..).map(|(path, _)| path));
    replayed.tail = None;
    Ok(())
}

/// Opens the last segment for appending, cutting it back to its good prefix
/// first if recovery found a torn tail or a repair point there.
async fn open_tail<I: Io>(io: &I, tail: Tail) -> Result<ActiveSegment<I::File>, LogError> {
    let path = tail.path;
    let mut file = io
        .open(&path, OpenMode::Append)
        .await
        .during("open", &path)?;
    let len_bytes = tail.len_bytes as u64;
    if tail.truncate {
        file.set_len(len_bytes).await.during("truncate", &path)?;
    }
    // Always synced, even when nothing was cut: what recovery just read may
    // have been written by a process whose fsync failed, and still sit
    // unsynced in the page cache. Records appended after it (or a new
    // segment after this one) must not outlive it, or a later crash would
    // leave a hole in the middle of the log.
    file.sync_all().await.during("fsync", &path)?;
    Ok(ActiveSegment {
        file,
        path,
        first: tail.first,
        len_bytes,
    })
}

/// The error for damage that recovery will not cut.
fn corrupt(path: &Path, offset: u64, reason: Corruption) -> LogError {
    LogError::Corrupt {
        file: path.to_path_buf(),
        offset,
        reason,
    }
}
