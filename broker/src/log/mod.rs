//! The durable log: the broker's queue commands, appended, fsynced in
//! groups, and replayed at start-up. A record is reported durable only once
//! it is, and recovery never serves damaged data.
//!
//! One owner [`Log::submit`]s records without waiting; the writer task makes
//! them durable in batches and reports each batch once, as a
//! [`Completion`], in submission order. So a record costs no future, no
//! channel message and no wake-up of its own, and the owner learns of a
//! whole batch at once.
//!
//! Records are opaque bytes; the log numbers them with [`Lsn`]s from 1,
//! without holes, across segments, snapshots and restarts. All I/O goes
//! through the [`Io`] seam, so the same code runs on tokio and on turmoil's
//! simulated disk.
//!
//! # On-disk format
//!
//! One directory holds two kinds of file, and the disk reserve. Integers are
//! big-endian; checksums are CRC-32C.
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
//!
//! reserve                             LogOptions::reserve_bytes of filler,
//!                                     never read (see "A full disk" below)
//! ```
//!
//! A record's LSN is its segment's first LSN plus its index in the segment,
//! so each file's LSN range is known from that file alone, and a missing
//! file shows up as a gap. LSNs in file names are zero-padded to 20 digits,
//! so names sort in LSN order. A snapshot is written as `….snap.tmp`, then
//! renamed. The reserve is written whole at open if it is missing or of
//! another size, and recovery never reads it. Other files in the directory
//! are left alone.
//!
//! # Fault model
//!
//! Like the header of TigerBeetle's simulated storage, this lists each fault
//! the log expects, what it does about it, and why recovery stays possible.
//! The invariant behind every answer: **a record is reported durable (its
//! batch's [`Completion`] is `Ok`) only after the fsync covering its bytes
//! returned Ok, and only into a segment whose header and directory entry
//! were fsynced before any record went in.**
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
//!   one if there is one. Damage near the end of the last segment looks
//!   like a torn write whatever it hit (a checksum, or a length that now
//!   frames too much or too little), but a torn write leaves nothing whole
//!   after it: a checksummed record found further on shows it is
//!   corruption. Limits: damage to the last whole record of the last
//!   segment (with at most a torn write after it) cannot be told from a
//!   torn write, and is cut without a report (a single node has no second
//!   copy to tell it by); and a torn write whose later blocks reached the
//!   disk while earlier ones did not, leaving a whole record after the gap,
//!   is reported as corruption (its records were never acknowledged, so
//!   `repair` loses nothing acknowledged there).
//! - **A missing segment.** Segments must follow each other without a gap
//!   in LSNs, and the log must reach the newest snapshot: otherwise
//!   [`LogError::Corrupt`].
//! - **A failed write or fsync (EIO).** After a failed fsync the kernel may
//!   have dropped the dirty pages and marked them clean, so a retry could
//!   report success for data that is gone ("fsyncgate"). The writer fails
//!   that batch and every later one with [`LogError::Io`], logs an error
//!   naming the file, and never touches the file again. The broker must stop;
//!   recovery at the next start reads what really is on disk. The failed
//!   batch is then the newest thing in the log and was never acknowledged:
//!   whatever it left (all of it, part, or a record garbled by a disk that
//!   reports the failure only at the fsync), recovery cuts as a torn tail.
//! - **A full disk (ENOSPC)** on write, fsync or segment creation: the batch
//!   fails with [`LogError::NoSpace`]; the writer cuts the segment back to
//!   its last durable length and fsyncs that, so no partial record remains
//!   and the file's state is known again, then keeps serving. Only
//!   [`std::io::ErrorKind::StorageFull`] counts as ENOSPC. If cutting back
//!   fails, that failure is fatal like EIO. So that the disk can always be
//!   freed again, the writer keeps a reserve file
//!   ([`LogOptions::reserve_bytes`]): it gives that space up for the records
//!   that let the owner free space ([`Log::submit_reserved`]) and for the
//!   snapshot that frees it, and refuses other records until a snapshot has
//!   given space back and the reserve is made again (module `reserve`). A
//!   crash while it is given up leaves it missing or short, and the next
//!   open makes it again.
//! - **The writer task dies** (its runtime shuts down, its simulated host
//!   crashes): outstanding records complete with [`LogError::Closed`];
//!   nothing unsynced was reported durable.
//!
//! Memory: a batch stops growing at `BATCH_BYTES_MAX` bytes, and a record
//! holds at most [`RECORD_BYTES_MAX`]. Submitting never waits, so the owner
//! bounds how much waits for the writer (the broker node holds at most what
//! producers' credit and consumers' prefetch let in, and keeps each of those
//! messages in memory anyway).
//! Recovery reads the segments after the newest snapshot into memory, which
//! the broker bounds by snapshotting every so many bytes of log.

#![warn(missing_docs)]

mod error;
mod files;
mod handoff;
mod record;
mod recovery;
mod reserve;
mod segment;
mod snapshot;
mod writer;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, info_span};

pub use error::{Corruption, LogError};

use crate::io::Io;
use error::Context as _;
use handoff::Handoff;
use reserve::{Reserve, Shared};
use writer::{SnapshotRequest, Writer};

/// The largest record the log accepts, in bytes. Recovery treats a larger
/// length as damage, so this is part of the on-disk format.
pub const RECORD_BYTES_MAX: usize = 16 << 20;

/// A batch stops taking queued records once it holds this many bytes, so
/// that one fsync never waits for an unbounded write.
const BATCH_BYTES_MAX: usize = 4 << 20;

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
    /// Refuse every batch after one the full disk refused, as after a
    /// failed write. For a log whose records depend on each other (Raft's:
    /// a later record may commit what a refused one held), where a hole
    /// must never form. Default: off (a later batch may succeed).
    pub stop_at_no_space: bool,
    /// Bytes of disk held back, in a file named `reserve`, for the records
    /// submitted with [`Log::submit_reserved`] and the snapshots that free
    /// space once the disk is full: without it a disk filled by ordinary
    /// records could never be freed. 0: no reserve. Default: 0.
    pub reserve_bytes: u64,
    /// Planted bugs for the simulator: with `skip-dir-fsync` the writer
    /// never fsyncs the directory after creating a segment. Default: none.
    pub plants: crate::planted::Plants,
    /// Where each batch's fsync time and size are counted. Default: a
    /// [`Metrics`](crate::metrics::Metrics) of its own, which nobody reads.
    pub metrics: crate::metrics::Metrics,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes_max: 64 << 20,
            repair: false,
            stop_at_no_space: false,
            reserve_bytes: 0,
            plants: crate::planted::Plants::NONE,
            metrics: crate::metrics::Metrics::default(),
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

/// A submitted record's place in submission order, from 1: what a
/// [`Completion`] refers to. Unlike an [`Lsn`], it is known at submission;
/// a record refused for lack of space gets no LSN but keeps its ticket.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// What became of one batch: the records with tickets `first` to
/// `first + records - 1`, all made durable by one fsync, or all refused.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The batch's first record.
    pub first: Ticket,
    /// How many records the batch holds.
    pub records: u64,
    /// The LSN of the batch's first record (the others follow it without a
    /// hole), or why the whole batch failed:
    /// - [`LogError::NoSpace`]: the disk is full. None of the batch was
    ///   appended; later records may succeed.
    /// - [`LogError::Io`]: a write or fsync failed. Fatal: this and every
    ///   later batch fail; stop the broker.
    /// - [`LogError::Closed`]: the writer task is gone. The records may or
    ///   may not be durable (they were never acknowledged).
    pub outcome: Result<Lsn, LogError>,
}

impl Completion {
    /// The ticket after the batch's last record.
    #[must_use]
    pub fn end(&self) -> Ticket {
        Ticket(self.first.0 + self.records)
    }

    /// What became of the record with `ticket`, if it is in this batch.
    #[must_use]
    pub fn outcome_of(&self, ticket: Ticket) -> Option<Result<Lsn, LogError>> {
        let index = ticket.0.checked_sub(self.first.0)?;
        if index >= self.records {
            return None;
        }
        Some(match &self.outcome {
            Ok(first) => Ok(Lsn(first.0 + index)),
            Err(error) => Err(error.clone()),
        })
    }
}

/// The log's appending end, with a single owner: it submits records without
/// waiting, and learns what became of them from one [`Completion`] per
/// batch, in submission order. A record is durable (written and fsynced)
/// once a completion says so, never before.
///
/// The writer task stops once the `Log` is dropped and every
/// [`Log::snapshot`] future is done, after writing what was submitted.
#[derive(Debug)]
pub struct Log {
    handoff: Arc<Handoff>,
    /// What the writer says about its disk reserve.
    space: Arc<Shared>,
    snapshots: mpsc::UnboundedSender<SnapshotRequest>,
    completions: mpsc::UnboundedReceiver<Completion>,
    /// Records submitted so far: the last ticket handed out.
    submitted: u64,
    /// Records whose completion was received so far.
    completed: u64,
}

impl Log {
    /// Submits one record, which `write` appends to the buffer it is given
    /// (the log frames it in place, in the batch the writer takes next).
    /// Returns the record's ticket; its [`Completion`] says when it is
    /// durable, with which LSN. Records get LSNs in submission order.
    ///
    /// # Errors
    ///
    /// - [`LogError::RecordSize`] for an empty record or one larger than
    ///   [`RECORD_BYTES_MAX`]; nothing is submitted, no ticket used.
    /// - [`LogError::Closed`] if an earlier `write` panicked: the batch it
    ///   left behind is never written.
    pub fn submit(&mut self, write: impl FnOnce(&mut BytesMut)) -> Result<Ticket, LogError> {
        self.handoff.push(false, write)?;
        self.submitted += 1;
        Ok(Ticket(self.submitted))
    }

    /// Submits a record, as [`Log::submit`] does, that may use the disk
    /// reserve ([`LogOptions::reserve_bytes`]): one that makes the owner's
    /// state smaller (a settle, a deletion, an expiry), or that is tiny and
    /// needed for that, so that once the disk is full it can still be
    /// logged, and a snapshot can then free the space. A record that adds
    /// data must use [`Log::submit`], or it could take the space the
    /// snapshot needs.
    ///
    /// # Errors
    ///
    /// As [`Log::submit`].
    pub fn submit_reserved(
        &mut self,
        write: impl FnOnce(&mut BytesMut),
    ) -> Result<Ticket, LogError> {
        self.handoff.push(true, write)?;
        self.submitted += 1;
        Ok(Ticket(self.submitted))
    }

    /// While the disk is full and the log has given up its reserve, a
    /// snapshot is what gets space back: this is then `Some(bytes)`, the
    /// size of state that fits, with a margin of half for an estimate. The
    /// owner should snapshot (as soon as its state is that small) without
    /// waiting for its usual count of records; until space is back, records
    /// submitted with [`Log::submit`] are refused with
    /// [`LogError::NoSpace`]. `None` otherwise, and while a snapshot is in
    /// progress.
    #[must_use]
    pub fn snapshot_room(&self) -> Option<u64> {
        self.space.snapshot_room()
    }

    /// How many submitted records have no completion yet.
    #[must_use]
    pub fn outstanding(&self) -> u64 {
        self.submitted - self.completed
    }

    /// Waits for the next batch's completion; batches complete in
    /// submission order. Cancel-safe. Once the writer task is gone, every
    /// outstanding record completes with [`LogError::Closed`]; with nothing
    /// outstanding, that completion is empty (`records` 0), so only wait
    /// while [`Log::outstanding`] is not 0.
    pub async fn completion(&mut self) -> Completion {
        let completion = match self.completions.recv().await {
            Some(completion) => completion,
            None => Completion {
                first: Ticket(self.completed + 1),
                records: self.outstanding(),
                outcome: Err(LogError::Closed),
            },
        };
        self.completed += completion.records;
        completion
    }

    /// Appends one record and waits until it is durable: a [`Log::submit`]
    /// then [`Log::completion`]s until the record's own, for tests and
    /// tools that append one record at a time. The completions of records
    /// submitted earlier are consumed and dropped.
    ///
    /// # Errors
    ///
    /// As [`Log::submit`] and [`Completion::outcome`] say.
    pub async fn append(&mut self, record: Bytes) -> Result<Lsn, LogError> {
        let ticket = self.submit(|buf| buf.extend_from_slice(&record))?;
        loop {
            let completion = self.completion().await;
            if let Some(outcome) = completion.outcome_of(ticket) {
                return outcome;
            }
            if completion.records == 0 {
                return Err(LogError::Closed);
            }
        }
    }

    /// Durably writes a snapshot that covers every record up to `upto`, then
    /// deletes the segments (and older snapshots) it makes redundant. The
    /// future does not borrow the log, so it can run in a task of its own.
    ///
    /// `state` must be the broker's state after applying exactly the records
    /// up to `upto`. Appends go on while the snapshot is written. The segment
    /// being appended to is never deleted, so records up to `upto` may remain
    /// in it; recovery skips them.
    ///
    /// # Errors
    ///
    /// - [`LogError::SnapshotRange`] if `upto` is 0 or beyond the last durable
    ///   record (records submitted before this call count as durable by
    ///   then).
    /// - [`LogError::NoSpace`] or [`LogError::Io`] if writing it failed; the
    ///   previous snapshot and the segments stay as they were. A failed
    ///   snapshot does not stop appends.
    /// - [`LogError::Closed`]: the writer task is gone.
    pub fn snapshot(
        &self,
        upto: Lsn,
        state: Bytes,
    ) -> impl Future<Output = Result<(), LogError>> + Send + 'static {
        let snapshots = self.snapshots.clone();
        let pending = self.space.snapshot_pending();
        async move {
            let _pending = pending;
            let (reply, answer) = oneshot::channel();
            let request = SnapshotRequest { upto, state, reply };
            snapshots.send(request).map_err(|_| LogError::Closed)?;
            answer.await.map_err(|_| LogError::Closed)?
        }
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
    let space = Arc::new(Shared::default());
    let reserve = Reserve::open(io.clone(), dir, options.reserve_bytes, Arc::clone(&space))
        .instrument(span.clone())
        .await?;
    let handoff = Arc::new(Handoff::default());
    let (snapshots, snapshot_requests) = mpsc::unbounded_channel();
    let (completed, completions) = mpsc::unbounded_channel();
    let next_lsn = opened.recovered.next_lsn;
    let mut writer = Writer::new(
        io.clone(),
        dir.to_path_buf(),
        options.segment_bytes_max,
        opened.active,
        next_lsn,
        reserve,
    );
    writer.plants = options.plants;
    writer.metrics = options.metrics.clone();
    writer.stop_at_no_space = options.stop_at_no_space;
    let run = writer.run(Arc::clone(&handoff), snapshot_requests, completed);
    io.spawn(run.instrument(span));
    let log = Log {
        handoff,
        space,
        snapshots,
        completions,
        submitted: 0,
        completed: 0,
    };
    Ok((log, opened.recovered))
}

/// Removes every file of the log in `dir`, durably: for a log that cannot
/// be repaired (its only snapshot is damaged) and whose owner has another
/// copy of what it held, as a Raft member has in its peers. Files the log
/// does not own stay.
///
/// # Errors
///
/// [`LogError::Io`] or [`LogError::NoSpace`] if listing, removing or
/// syncing failed.
pub async fn discard<I: Io>(io: &I, dir: &Path) -> Result<(), LogError> {
    let listing = files::list(io, dir).await?;
    let owned = listing.segments.iter().chain(&listing.snapshots);
    let others = listing.temps.iter().chain(&listing.reserve);
    for path in owned.map(|(_, path)| path).chain(others) {
        io.remove_file(path).await.during("remove", path)?;
    }
    io.sync_dir(dir).await.during("sync_dir", dir)
}

#[cfg(test)]
mod tests;
