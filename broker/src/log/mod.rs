//! The durable log: the broker's queue commands, appended, fsynced in
//! groups, and replayed at start-up. An append resolves only once its
//! record is durable, and recovery never serves damaged data.
//!
//! Records are opaque [`Bytes`]; the log numbers them with [`Lsn`]s from 1,
//! without holes, across segments, snapshots and restarts. All I/O goes
//! through the [`Io`] seam, so the same code runs on tokio and on turmoil's
//! simulated disk.
//!
//! # On-disk format
//!
//! One directory holds two kinds of file. Integers are big-endian; checksums
//! are CRC-32C.
//!
//! ```text
//! 00000000000000000001.seg            segment whose first record is LSN 1
//!   header (24 bytes)   magic "SLUICSEG" | version u32 = 1 | first LSN u64
//!                       | crc32c u32 of the 20 bytes before it
//!   record, repeated    len u32 (1..=RECORD_BYTES_MAX) | crc32c u32 of payload
//!                       | payload
//!
//! snapshot-00000000000000000500.snap  the broker's state after LSN 500
//!   header (32 bytes)   magic "SLUICSNP" | version u32 = 1 | LSN u64
//!                       | state length u64 | crc32c u32 of the 28 bytes
//!                       before it and of the state
//!   state
//! ```
//!
//! A record's LSN is its segment's first LSN plus its index in the segment,
//! so each file's LSN range is known from that file alone, and a missing
//! file shows up as a gap. LSNs in file names are zero-padded to 20 digits,
//! so names sort in LSN order. A snapshot is written as `….snap.tmp`, then
//! renamed. Other files in the directory are left alone.
//!
//! # Fault model
//!
//! Like the header of TigerBeetle's simulated storage, this lists each fault
//! the log expects, what it does about it, and why recovery stays possible.
//! The invariant behind every answer: **an append is acknowledged only after
//! the fsync covering its bytes returned Ok, and only into a segment whose
//! header and directory entry were fsynced before any record went in.**
//!
//! - **Crash or power loss mid-batch.** At most one batch is unsynced at a
//!   time, and none of it was acknowledged. It may survive whole, in part, or
//!   not at all, so the last segment may end inside a record, with a last
//!   record that fails its checksum, or with zeros (blocks allocated, never
//!   written). Recovery cuts such a *torn tail* (`set_len`, then `sync_all`)
//!   and goes on. It is only believed of the last segment and within one
//!   batch (`BATCH_BYTES_MAX` plus one record) of its end: earlier segments
//!   were fsynced whole before the next was created.
//! - **Crash while creating a segment.** The new last segment may be shorter
//!   than its header, or all zeros. It holds no record, so recovery removes
//!   it.
//! - **Crash during a snapshot.** The state is written to a temporary file,
//!   fsynced, renamed into place and the directory fsynced; only then are the
//!   segments it covers and older snapshots removed. A crash leaves either
//!   the old snapshot with all its segments or the new one, plus files that
//!   recovery recognises as redundant (covered segments, older snapshots,
//!   temporary files) and removes.
//! - **Media corruption** (a flipped bit, a misdirected or lost write)
//!   anywhere else: every record, header and snapshot is checksummed and
//!   every length bounded, so damage is found, never served.
//!   [`open`] fails with [`LogError::Corrupt`] naming the file and offset.
//!   With [`LogOptions::repair`], it cuts the log at the first damage
//!   instead, removes every later segment, and reports what was lost in
//!   [`Recovered::repair`]; a damaged newest snapshot falls back to an older
//!   one if there is one. A damaged length that now runs past the end of
//!   the file looks like a torn write, but a torn write leaves nothing whole
//!   after it: a checksummed record found further on shows it is
//!   corruption. Limits: damage to the very last record of the last segment
//!   cannot be told from a torn write, and is cut without a report (a
//!   single node has no second copy to tell it by); and a torn write whose
//!   later blocks reached the disk while earlier ones did not is reported
//!   as corruption (its records were never acknowledged, so `repair` loses
//!   nothing acknowledged there).
//! - **A missing segment.** Segments must follow each other without a gap
//!   in LSNs, and the log must reach the newest snapshot: otherwise
//!   [`LogError::Corrupt`].
//! - **A failed write or fsync (EIO).** After a failed fsync the kernel may
//!   have dropped the dirty pages and marked them clean, so a retry could
//!   report success for data that is gone ("fsyncgate"). The writer fails
//!   that batch and every later one with [`LogError::Io`], logs an error
//!   naming the file, and never touches the file again. The broker must stop;
//!   recovery at the next start reads what really is on disk.
//! - **A full disk (ENOSPC)** on write, fsync or segment creation: the batch
//!   fails with [`LogError::NoSpace`]; the writer cuts the segment back to
//!   its last durable length and fsyncs that, so no partial record remains
//!   and the file's state is known again, then keeps serving. Only
//!   [`std::io::ErrorKind::StorageFull`] counts as ENOSPC. If cutting back
//!   fails, that failure is fatal like EIO.
//! - **The writer task dies** (its runtime shuts down, its simulated host
//!   crashes): appends fail with [`LogError::Closed`]; nothing unsynced was
//!   acknowledged.
//!
//! Memory is bounded: the command queue holds `COMMAND_QUEUE_CAPACITY`
//! commands (appends wait for room), a batch stops growing at
//! `BATCH_BYTES_MAX` bytes, and a record holds at most [`RECORD_BYTES_MAX`].
//! Recovery reads the segments after the newest snapshot into memory, which
//! the broker bounds by snapshotting every so many bytes of log.

#![warn(missing_docs)]

mod error;
mod files;
mod record;
mod recovery;
mod segment;
mod snapshot;
mod writer;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, info_span};

pub use error::{Corruption, LogError};

use crate::io::Io;
use writer::{Append, Command, SnapshotRequest, Writer};

/// The largest record the log accepts, in bytes. Recovery treats a larger
/// length as damage, so this is part of the on-disk format.
pub const RECORD_BYTES_MAX: usize = 16 << 20;

/// A batch stops taking queued records once it holds this many bytes, so
/// that one fsync never waits for an unbounded write.
const BATCH_BYTES_MAX: usize = 4 << 20;

/// How many commands may wait for the writer; appends beyond wait for room.
const COMMAND_QUEUE_CAPACITY: usize = 1024;

/// How [`open`] opens the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is sealed, and the next one created, before a batch would
    /// take it past this many bytes. A single batch larger than this still
    /// goes into one segment. Default: 64 MiB.
    pub segment_bytes_max: u64,
    /// Cut the log at the first damage instead of refusing to open (the
    /// `--repair` flag). What was dropped is reported in
    /// [`Recovered::repair`]. Default: off.
    pub repair: bool,
    /// A planted bug for the simulator (feature `planted-bugs`): with
    /// [`Plant::SkipDirFsync`](crate::planted::Plant::SkipDirFsync) the
    /// writer never fsyncs the directory after creating a segment. Default:
    /// `None`.
    #[cfg(feature = "planted-bugs")]
    pub plant: Option<crate::planted::Plant>,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes_max: 64 << 20,
            repair: false,
            #[cfg(feature = "planted-bugs")]
            plant: None,
        }
    }
}

/// A log sequence number: a record's position in the log, from 1, strictly
/// increasing across segments, snapshots and restarts. `Lsn(0)` comes before
/// every record.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The LSN after this one.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What [`open`] found on disk: replay `snapshot`, then `records`, to rebuild
/// the broker's state.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The newest valid snapshot and the last LSN it covers.
    pub snapshot: Option<(Lsn, Bytes)>,
    /// Every record after the snapshot, in LSN order, without holes.
    pub records: Vec<(Lsn, Bytes)>,
    /// What [`LogOptions::repair`] cut, in the order found; empty when the
    /// log was whole (cutting a torn tail is not a repair).
    pub repair: Vec<RepairReport>,
    /// The LSN the next append will get.
    pub next_lsn: Lsn,
}

/// One cut that [`LogOptions::repair`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The damaged segment or snapshot.
    pub file: PathBuf,
    /// Where in `file` the damage starts.
    pub offset: u64,
    /// How many records were dropped: the frames from the damage on (this
    /// file's rest and every later segment) whose lengths still made sense.
    /// A lower bound where a damaged length hides what follows. Zero for a
    /// discarded snapshot or segments a snapshot covers: nothing is lost.
    pub records_lost: u64,
    /// How many bytes of log files were cut off or removed.
    pub bytes_lost: u64,
}

/// A handle to the log's writer task: cheap to clone, `Send` and `Sync`.
///
/// The writer stops once every handle is dropped (after answering what was
/// already queued).
#[derive(Debug, Clone)]
pub struct Log {
    commands: mpsc::Sender<Command>,
}

impl Log {
    /// Appends one record; resolves once it is durable (written and
    /// fsynced), with its LSN.
    ///
    /// The record is queued when the future is first polled, so appends get
    /// LSNs in the order they are first polled. Dropping the future after
    /// that does not withdraw the record.
    ///
    /// # Errors
    ///
    /// - [`LogError::RecordSize`] for an empty record or one larger than
    ///   [`RECORD_BYTES_MAX`]; nothing is written.
    /// - [`LogError::NoSpace`]: the disk is full. The record was not
    ///   appended; later appends may succeed.
    /// - [`LogError::Io`]: a write or fsync failed. Fatal: this and every
    ///   later append fail; stop the broker.
    /// - [`LogError::Closed`]: the writer task is gone. The record may or may
    ///   not be durable (it was never acknowledged).
    pub fn append(
        &self,
        record: Bytes,
    ) -> impl Future<Output = Result<Lsn, LogError>> + Send + 'static {
        let commands = self.commands.clone();
        async move {
            if !record::size_ok(record.len()) {
                return Err(LogError::RecordSize { len: record.len() });
            }
            let (reply, answer) = oneshot::channel();
            let append = Command::Append(Append { record, reply });
            commands.send(append).await.map_err(|_| LogError::Closed)?;
            answer.await.map_err(|_| LogError::Closed)?
        }
    }

    /// Durably writes a snapshot that covers every record up to `upto`, then
    /// deletes the segments (and older snapshots) it makes redundant.
    ///
    /// `state` must be the broker's state after applying exactly the records
    /// up to `upto`. Appends go on while the snapshot is written. The segment
    /// being appended to is never deleted, so records up to `upto` may remain
    /// in it; recovery skips them.
    ///
    /// # Errors
    ///
    /// - [`LogError::SnapshotRange`] if `upto` is 0 or beyond the last durable
    ///   record (appends queued before this call count as durable by then).
    /// - [`LogError::NoSpace`] or [`LogError::Io`] if writing it failed; the
    ///   previous snapshot and the segments stay as they were. A failed
    ///   snapshot does not stop appends.
    /// - [`LogError::Closed`]: the writer task is gone.
    pub async fn snapshot(&self, upto: Lsn, state: Bytes) -> Result<(), LogError> {
        let (reply, answer) = oneshot::channel();
        let request = Command::Snapshot(SnapshotRequest { upto, state, reply });
        self.commands
            .send(request)
            .await
            .map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
    }
}

/// Opens (creating if needed) the log in `dir`, recovers it, and starts its
/// writer task with [`Io::spawn`].
///
/// # Errors
///
/// - [`LogError::Corrupt`] if the log is damaged beyond a torn tail and
///   `options.repair` is off, or if repair cannot help (the only snapshot
///   is damaged). The directory is left as it was.
/// - [`LogError::Io`] or [`LogError::NoSpace`] if reading, cutting or
///   removing files failed.
pub async fn open<I: Io>(
    io: I,
    dir: &Path,
    options: LogOptions,
) -> Result<(Log, Recovered), LogError> {
    let span = info_span!("log", dir = %dir.display());
    let opened = recovery::recover(&io, dir, &options)
        .instrument(span.clone())
        .await?;
    let (commands, queue) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
    let next_lsn = opened.recovered.next_lsn;
    #[cfg_attr(not(feature = "planted-bugs"), allow(unused_mut))]
    let mut writer = Writer::new(
        io.clone(),
        dir.to_path_buf(),
        options.segment_bytes_max,
        opened.active,
        next_lsn,
    );
    #[cfg(feature = "planted-bugs")]
    writer.plant(options.plant);
    io.spawn(writer.run(queue).instrument(span));
    Ok((Log { commands }, opened.recovered))
}

#[cfg(test)]
mod tests;
