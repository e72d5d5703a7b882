//! The log directory: file names, listing, and durable creation and removal.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::error::{Context, classify};
use super::{LogError, Lsn};
use crate::io::Io;

/// Digits in the zero-padded LSNs of file names: enough for any `u64`, so
/// names sort in LSN order.
const LSN_DIGITS: usize = 20;

/// The name of the disk reserve (see [`super::reserve`]).
pub(super) const RESERVE_NAME: &str = "reserve";

/// The name of the segment whose first record is `first`.
pub(super) fn segment_name(first: Lsn) -> String {
    format!("{:0width$}.seg", first.0, width = LSN_DIGITS)
}

/// The name of the snapshot that covers every record up to `upto`.
pub(super) fn snapshot_name(upto: Lsn) -> String {
    format!("snapshot-{:0width$}.snap", upto.0, width = LSN_DIGITS)
}

/// The name a snapshot is written under before it is renamed into place.
pub(super) fn snapshot_temp_name(upto: Lsn) -> String {
    format!("{}.tmp", snapshot_name(upto))
}

/// The log's files, each kind sorted by LSN.
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// Segments and their first LSNs.
    pub(super) segments: Vec<(Lsn, PathBuf)>,
    /// Snapshots and the LSNs they cover up to.
    pub(super) snapshots: Vec<(Lsn, PathBuf)>,
    /// Snapshots that a crash left half-written.
    pub(super) temps: Vec<PathBuf>,
    /// The disk reserve, if there is one. Recovery leaves it alone: the
    /// writer checks or remakes it at open.
    pub(super) reserve: Option<PathBuf>,
}

impl Listing {
    /// The segments not made redundant by a snapshot at `upto`.
    pub(super) fn live_segments(&self, upto: Lsn) -> &[(Lsn, PathBuf)] {
        self.segments.get(self.covered_count(upto)..).unwrap_or(&[])
    }

    /// What a snapshot at `upto` makes redundant: the segments holding only
    /// records up to `upto`, and the older snapshots.
    pub(super) fn redundant(&self, upto: Lsn) -> Vec<PathBuf> {
        let covered = self.segments.iter().take(self.covered_count(upto));
        let older = self.snapshots.iter().filter(|(lsn, _)| *lsn < upto);
        covered.chain(older).map(|(_, path)| path.clone()).collect()
    }

    /// How many leading segments hold only records up to `upto`: those that
    /// the next segment follows at or before `upto + 1`. The last segment
    /// never counts, since the writer may still be appending to it.
    fn covered_count(&self, upto: Lsn) -> usize {
        self.segments
            .windows(2)
            .take_while(|pair| pair.get(1).is_some_and(|(next, _)| *next <= upto.next()))
            .count()
    }
}

/// Lists the log directory. Files the log does not own are left alone.
pub(super) async fn list<I: Io>(io: &I, dir: &Path) -> Result<Listing, LogError> {
    let mut listing = Listing::default();
    for path in io.read_dir(dir).await.during("read_dir", dir)? {
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            tracing::warn!(file = %path.display(), "ignoring a file the log does not own");
            continue;
        };
        if let Some(first) = parse_lsn(name, "", ".seg") {
            listing.segments.push((first, path));
        } else if let Some(upto) = parse_lsn(name, "snapshot-", ".snap") {
            listing.snapshots.push((upto, path));
        } else if parse_lsn(name, "snapshot-", ".snap.tmp").is_some() {
            listing.temps.push(path);
        } else if name == RESERVE_NAME {
            listing.reserve = Some(path);
        } else {
            tracing::warn!(file = %path.display(), "ignoring a file the log does not own");
        }
    }
    listing.segments.sort_unstable();
    listing.snapshots.sort_unstable();
    Ok(listing)
}

/// The LSN in `name` if it is `prefix`, 20 digits, then `suffix`. LSN 0
/// names nothing: records are numbered from 1.
fn parse_lsn(name: &str, prefix: &str, suffix: &str) -> Option<Lsn> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    let all_digits = digits.len() == LSN_DIGITS && digits.bytes().all(|b| b.is_ascii_digit());
    let lsn = digits.parse().ok().filter(|_| all_digits).map(Lsn)?;
    (lsn.0 > 0).then_some(lsn)
}

/// Creates `dir` durably. Each directory that `create_dir_all` makes is
/// durable only once its parent is synced, so this syncs `dir` and its
/// ancestors up to the deepest one that already existed.
pub(super) async fn ensure_dir<I: Io>(io: &I, dir: &Path) -> Result<(), LogError> {
    let mut existing = None;
    for ancestor in ancestors(dir) {
        if io.read_dir(&ancestor).await.is_ok() {
            existing = Some(ancestor);
            break;
        }
    }
    io.create_dir_all(dir).await.during("create_dir", dir)?;
    for ancestor in ancestors(dir) {
        io.sync_dir(&ancestor).await.during("sync_dir", &ancestor)?;
        if Some(&ancestor) == existing.as_ref() {
            break;
        }
    }
    Ok(())
}

/// `dir` and its ancestors, innermost first, with the current directory
/// standing for the empty parent of a relative path.
fn ancestors(dir: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    dir.ancestors().map(|ancestor| {
        if ancestor.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            ancestor.to_path_buf()
        }
    })
}

/// Removes `paths` from `dir`, then syncs `dir` once so that the removals
/// are durable. A file already gone is fine: a concurrent snapshot may have
/// removed it first.
pub(super) async fn remove_all<I: Io>(
    io: &I,
    dir: &Path,
    paths: &[PathBuf],
) -> Result<(), LogError> {
    if paths.is_empty() {
        return Ok(());
    }
    for path in paths {
        match io.remove_file(path).await {
            Err(error) if error.kind() != ErrorKind::NotFound => {
                return Err(classify("remove", path, error));
            }
            _ => tracing::debug!(file = %path.display(), "log file removed"),
        }
    }
    io.sync_dir(dir).await.during("sync_dir", dir)
}
