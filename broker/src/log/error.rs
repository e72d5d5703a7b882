//! The log's errors, and the one place where an `io::Error` is classified.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Lsn;

/// Why the log failed an operation.
///
/// `Clone`, because one failed write or fsync fails every append of its batch
/// (and, for [`LogError::Io`], every later append) with the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A read, write, fsync or directory operation failed with anything but
    /// "no space". From an append, fatal: after a failed write or fsync the
    /// writer cannot know what the page cache still holds, so it fails this
    /// and every later append; the broker must stop and recover from disk.
    /// From a snapshot, only that snapshot failed (its file is discarded),
    /// but the disk is failing: stopping is the safe answer there too.
    #[error("log {op} failed on {}", path.display())]
    Io {
        /// The operation: `"write"`, `"fsync"`, `"sync_dir"`, …
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// What the operating system (or simulator) said.
        #[source]
        source: Arc<io::Error>,
    },
    /// The device is full (ENOSPC). Retryable: the batch was cut off the
    /// log again, so later appends succeed once space returns.
    #[error("no space left on the log's device")]
    NoSpace,
    /// The files on disk are damaged somewhere other than a torn tail. Only
    /// [`open`](super::open) returns it, and it refuses to serve the log;
    /// [`LogOptions::repair`](super::LogOptions::repair) cuts the log there.
    #[error("log corrupt: {} at byte {offset}: {reason}", file.display())]
    Corrupt {
        /// The damaged segment or snapshot.
        file: PathBuf,
        /// Where in `file` the damage starts.
        offset: u64,
        /// What is wrong there.
        reason: Corruption,
    },
    /// The writer task is gone: every [`Log`](super::Log) handle's
    /// appends fail with this once the task has stopped (its runtime shut
    /// down, or its simulated host crashed).
    #[error("log writer stopped")]
    Closed,
    /// A record must hold 1 to [`RECORD_BYTES_MAX`](super::RECORD_BYTES_MAX)
    /// bytes. Nothing was written.
    #[error("log record of {len} bytes is empty or too large")]
    RecordSize {
        /// The rejected record's length.
        len: usize,
    },
    /// [`Log::snapshot`](super::Log::snapshot) was asked to cover records
    /// that are not durable yet (or `upto` was zero).
    #[error("cannot snapshot up to LSN {upto}: the last durable record is {last}")]
    SnapshotRange {
        /// The requested snapshot LSN.
        upto: Lsn,
        /// The last durable record's LSN (0 when the log is empty).
        last: Lsn,
    },
}

/// What is wrong with a damaged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The file does not start with the segment or snapshot magic.
    #[error("bad magic number")]
    BadMagic,
    /// A format version this build cannot read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u32),
    /// A segment header's checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// The LSN in the header differs from the one in the file name.
    #[error("file name says LSN {named}, header says {found}")]
    NameMismatch {
        /// The LSN the file name carries.
        named: Lsn,
        /// The LSN the header carries.
        found: Lsn,
    },
    /// A record length of zero or above
    /// [`RECORD_BYTES_MAX`](super::RECORD_BYTES_MAX).
    #[error("record length {0} out of range")]
    BadLength(u32),
    /// A record's or snapshot's checksum does not match its contents.
    #[error("checksum mismatch")]
    Checksum,
    /// The file ends inside a header, record or snapshot.
    #[error("file ends inside a record")]
    Truncated,
    /// A snapshot has bytes after its declared state.
    #[error("trailing bytes after the snapshot")]
    TrailingBytes,
    /// Records are missing: a segment does not start where the previous one
    /// (or the snapshot) ended.
    #[error("expected LSN {expected}, found {found}")]
    LsnGap {
        /// The LSN that should come next.
        expected: Lsn,
        /// The segment's first LSN.
        found: Lsn,
    },
    /// The log ends before the newest snapshot, which only ever covers
    /// records that were durable: durable records have vanished.
    #[error("log ends at LSN {log_end}, before the snapshot at {snapshot}")]
    BehindSnapshot {
        /// The newest snapshot's LSN.
        snapshot: Lsn,
        /// The last LSN the log holds.
        log_end: Lsn,
    },
}

/// Attaches the operation and path to an `io::Error`, classifying it: ENOSPC
/// becomes [`LogError::NoSpace`], everything else [`LogError::Io`].
pub(super) trait Context<T> {
    /// Classifies the error of `op` applied to `path`.
    fn during(self, op: &'static str, path: &Path) -> Result<T, LogError>;
}

impl<T> Context<T> for io::Result<T> {
    fn during(self, op: &'static str, path: &Path) -> Result<T, LogError> {
        self.map_err(|source| classify(op, path, source))
    }
}

/// ENOSPC is the one retryable failure: the disk refused the bytes, so
/// nothing is in an unknown state once the writer has cut them off again.
pub(super) fn classify(op: &'static str, path: &Path, source: io::Error) -> LogError {
    if source.kind() == io::ErrorKind::StorageFull {
        return LogError::NoSpace;
    }
    LogError::Io {
        op,
        path: path.to_path_buf(),
        source: Arc::new(source),
    }
}
