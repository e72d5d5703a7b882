//! The writer task: group commit.
//!
//! One task owns the last segment. It takes the oldest batch of submitted
//! records (whatever arrived, up to [`BATCH_BYTES_MAX`](super::BATCH_BYTES_MAX),
//! see [`Handoff`]) and makes it durable with one write and one `sync_all`;
//! records submitted meanwhile fill the next batch. It reports each batch
//! with one [`Completion`], and only once that fsync has returned Ok.
//!
//! It also keeps the disk reserve ([`Reserve`]): when the disk is full, it
//! splits a batch into its runs of reserved and ordinary records, and
//! reports each run with a completion of its own.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use tracing::{Instrument, Span, debug, error, info, trace, warn};

use super::handoff::{Batch, Handoff};
use super::reserve::Reserve;
use super::segment::{self, HEADER_BYTES};
use super::{Completion, LogError, Lsn, Ticket, files, snapshot};
use crate::io::{File, Io, OpenMode};
use crate::planted::Plants;

/// A snapshot waiting to be written.
#[derive(Debug)]
pub(super) struct SnapshotRequest {
    /// The last LSN the state covers.
    pub(super) upto: Lsn,
    /// The broker's state as of `upto`.
    pub(super) state: Bytes,
    /// Where the outcome goes.
    pub(super) reply: oneshot::Sender<Result<(), LogError>>,
}

/// The segment the writer appends to.
#[derive(Debug)]
pub(super) struct ActiveSegment<F> {
    pub(super) file: F,
    pub(super) path: PathBuf,
    /// The LSN of its first record.
    pub(super) first: Lsn,
    /// Its durable length: everything up to here has been fsynced.
    pub(super) len_bytes: u64,
}

/// A failed file operation, before it is classified.
struct Failed {
    op: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl Failed {
    /// Tags an `io::Error` with what was being done, and to which file.
    fn at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self { op, path, source }
    }

    fn is_no_space(&self) -> bool {
        self.source.kind() == io::ErrorKind::StorageFull
    }
}

/// The group-commit writer. Runs as one task per open log.
pub(super) struct Writer<I: Io> {
    io: I,
    dir: PathBuf,
    segment_bytes_max: u64,
    /// `None` between sealing a full segment and creating the next, which
    /// happens just before the next batch is written.
    active: Option<ActiveSegment<I::File>>,
    /// The LSN the next record will get.
    next_lsn: Lsn,
    /// Set by the first failed write, fsync or truncation. After it, what
    /// the file holds is unknown (a failed fsync may have dropped dirty
    /// pages), so every later batch and snapshot fails with it.
    failure: Option<LogError>,
    /// See [`LogOptions::stop_at_no_space`](super::LogOptions).
    pub(super) stop_at_no_space: bool,
    /// The disk reserve.
    reserve: Reserve<I>,
    /// Planted bugs (`skip-dir-fsync` concerns the writer).
    pub(super) plants: Plants,
    /// Counts each batch's fsync time and size.
    pub(super) metrics: Metrics,
}

impl<I: Io> Writer<I> {
    /// A writer that goes on from `active` (if any) at `next_lsn`.
    pub(super) fn new(
        io: I,
        dir: PathBuf,
        segment_bytes_max: u64,
        active: Option<ActiveSegment<I::File>>,
        next_lsn: Lsn,
        reserve: Reserve<I>,
    ) -> Self {
        assert!(next_lsn.0 >= 1, "LSNs start at 1");
        Self {
            io,
            dir,
            segment_bytes_max,
            active,
            next_lsn,
            failure: None,
            stop_at_no_space: false,
            reserve,
            plants: Plants::NONE,
            metrics: Metrics::default(),
        }
    }

    /// Writes batches as they come, and serves snapshot requests, until the
    /// [`Log`](super::Log) and every snapshot request are gone; then writes
    /// what is still queued and stops.
    ///
    /// A snapshot request is served between two batches, not once none is
    /// waiting: under a steady stream of appends a batch is always waiting,
    /// and a snapshot left for a quiet moment would never be written (the
    /// log would grow for good, and a full disk never be freed).
    pub(super) async fn run(
        mut self,
        handoff: Arc<Handoff>,
        mut snapshots: mpsc::UnboundedReceiver<SnapshotRequest>,
        completions: mpsc::UnboundedSender<Completion>,
    ) {
        let mut completed = 0;
        loop {
            while snapshots.is_empty()
                && self
                    .write_next(&handoff, &completions, &mut completed)
                    .await
            {}
            tokio::select! {
                biased;
                request = snapshots.recv() => {
                    let Some(request) = request else { break };
                    // Records submitted before the request count as durable
                    // by the time it is validated; those submitted since wait.
                    for _ in 0..handoff.batches() {
                        self.write_next(&handoff, &completions, &mut completed).await;
                    }
                    self.snapshot(request).await;
                }
                () = handoff.arrival() => {}
            }
        }
        while self
            .write_next(&handoff, &completions, &mut completed)
            .await
        {}
        debug!("the log is gone: the writer stops");
    }

    /// Makes the oldest queued batch durable, if there is one, and reports
    /// it; whether there was. `completed` counts the records reported so far.
    async fn write_next(
        &mut self,
        handoff: &Handoff,
        completions: &mpsc::UnboundedSender<Completion>,
        completed: &mut u64,
    ) -> bool {
        let Some(batch) = handoff.take() else {
            return false;
        };
        let outcomes = match &self.failure {
            Some(failure) => vec![(batch.records, Err(failure.clone()))],
            None => self.write_batch(&batch).await,
        };
        handoff.recycle(batch.frames);
        for (records, outcome) in outcomes {
            let completion = Completion {
                first: Ticket(*completed + 1),
                records,
                outcome,
            };
            *completed += records;
            // An owner that is gone no longer needs to know; its records
            // were still appended, as they were submitted.
            let _ = completions.send(completion);
        }
        true
    }

    /// Writes a batch, whole while the disk has room. Returns the outcome
    /// of each of its consecutive parts (how many records, and the first
    /// one's LSN or why they were refused): one for the whole batch, or,
    /// once the disk is full, one per run of reserved or ordinary records.
    async fn write_batch(&mut self, batch: &Batch) -> Vec<(u64, Result<Lsn, LogError>)> {
        let now = self.io.now();
        if let Err(error) = self.reserve.retry_if_due(now).await {
            return vec![(batch.records, Err(self.fatal(error)))];
        }
        if self.reserve.admits_ordinary() {
            let outcome = self.append(&batch.frames, batch.records).await;
            let full = matches!(outcome, Err(LogError::NoSpace)) && self.failure.is_none();
            if batch.has_ordinary() {
                self.reserve.ordinary_written(outcome.is_ok(), full);
            }
            if !(full && batch.has_reserved()) {
                return vec![(batch.records, outcome)];
            }
            match self.reserve.release(now).await {
                Ok(true) => {}
                Ok(false) => return vec![(batch.records, outcome)],
                Err(error) => return vec![(batch.records, Err(self.fatal(error)))],
            }
        }
        self.append_runs(batch).await
    }

    /// With the reserve given up, writes a batch's runs of reserved records
    /// while they may use it, and refuses its ordinary records: producers
    /// must not take the space that the snapshot freeing the disk needs.
    async fn append_runs(&mut self, batch: &Batch) -> Vec<(u64, Result<Lsn, LogError>)> {
        let mut outcomes = Vec::with_capacity(batch.runs.len());
        let mut start = 0;
        for run in &batch.runs {
            let end = start + run.bytes;
            let frames = batch
                .frames
                .get(start..end)
                .expect("a batch's runs cover its frames");
            start = end;
            let outcome = match &self.failure {
                Some(failure) => Err(failure.clone()),
                None if run.reserved && self.reserve.may_spend(run.bytes) => {
                    let appended = self.append(frames, run.records).await;
                    if appended.is_ok() {
                        self.reserve.spend(run.bytes);
                    }
                    appended
                }
                None => {
                    trace!(records = run.records, "log device full: records refused");
                    Err(self.no_space())
                }
            };
            outcomes.push((run.records, outcome));
        }
        outcomes
    }

    /// Writes and fsyncs `records` framed records, returning the first
    /// one's LSN.
    async fn append(&mut self, frames: &[u8], records: u64) -> Result<Lsn, LogError> {
        self.seal_if_full(frames.len());
        if self.active.is_none() {
            self.active = Some(self.create_segment().await?);
        }
        let active = self
            .active
            .as_mut()
            .expect("a segment was just made active");
        let started = self.io.now();
        let written = write_and_sync(&mut active.file, &active.path, frames).await;
        match written {
            Ok(()) => {
                let took = self.io.now().saturating_duration_since(started);
                self.metrics.fsynced(took, records);
                active.len_bytes += frames.len() as u64;
                let first = self.next_lsn;
                self.next_lsn = Lsn(first.0 + records);
                trace!(records, bytes = frames.len(), first_lsn = %first, "log batch durable");
                Ok(first)
            }
            Err(failed) if failed.is_no_space() => {
                warn!(file = %failed.path.display(), op = failed.op, "log device full: batch refused");
                self.cut_back().await?;
                Err(self.no_space())
            }
            Err(failed) => Err(self.fail(failed)),
        }
    }

    /// Seals the active segment if it holds records and `incoming_bytes`
    /// would take it past `segment_bytes_max`. Its records are already
    /// durable, so sealing is only letting go of the file.
    fn seal_if_full(&mut self, incoming_bytes: usize) {
        let next_lsn = self.next_lsn;
        let segment_bytes_max = self.segment_bytes_max;
        let full = self.active.as_ref().is_some_and(|active| {
            active.first < next_lsn && active.len_bytes + incoming_bytes as u64 > segment_bytes_max
        });
        if full {
            debug!("log segment full: sealed");
            self.active = None;
        }
    }

    /// Creates the segment for `next_lsn`: header written and fsynced, then
    /// the directory fsynced, all before any record goes in, so that no
    /// acknowledged record can sit in a file whose name a crash may lose.
    async fn create_segment(&mut self) -> Result<ActiveSegment<I::File>, LogError> {
        let path = self.dir.join(files::segment_name(self.next_lsn));
        // PLANTED BUG (`skip-dir-fsync`): the new segment's name is never
        // made durable, so a crash may take the file and its records away.
        let sync_dir = !self.plants.skip_dir_fsync();
        match try_create(&self.io, &self.dir, &path, self.next_lsn, sync_dir).await {
            Ok(file) => {
                info!(segment = %path.display(), first_lsn = %self.next_lsn, "log segment created");
                Ok(ActiveSegment {
                    file,
                    path,
                    first: self.next_lsn,
                    len_bytes: HEADER_BYTES as u64,
                })
            }
            Err(failed) if failed.is_no_space() => {
                warn!(segment = %path.display(), op = failed.op, "log device full: cannot create a segment");
                self.discard_segment(path).await?;
                Err(self.no_space())
            }
            Err(failed) => Err(self.fail(failed)),
        }
    }

    /// Removes a segment whose creation ran out of space, so that the next
    /// batch creates it afresh instead of finding a partial header.
    async fn discard_segment(&mut self, path: PathBuf) -> Result<(), LogError> {
        let removed = match self.io.remove_file(&path).await {
            Err(source) if source.kind() != io::ErrorKind::NotFound => Err(Failed {
                op: "remove",
                path,
                source,
            }),
            _ => self
                .io
                .sync_dir(&self.dir)
                .await
                .map_err(Failed::at("sync_dir", &self.dir)),
        };
        removed.map_err(|failed| self.fail(failed))
    }

    /// After ENOSPC, cuts the active segment back to its durable length, so
    /// that no partial record stays behind, and fsyncs the cut. Everything up
    /// to that length was fsynced before, so once the cut is durable the
    /// file's state is known again and appends may go on.
    async fn cut_back(&mut self) -> Result<(), LogError> {
        let active = self
            .active
            .as_mut()
            .expect("only the active segment is cut back");
        let path = active.path.clone();
        let truncated = active
            .file
            .set_len(active.len_bytes)
            .await
            .map_err(Failed::at("truncate", &path));
        let cut = match truncated {
            Ok(()) => active
                .file
                .sync_all()
                .await
                .map_err(Failed::at("fsync", &path)),
            Err(failed) => Err(failed),
        };
        cut.map_err(|failed| self.fail(failed))
    }

    /// The refusal of a batch for want of space; with
    /// [`Writer::stop_at_no_space`], of every later one too.
    fn no_space(&mut self) -> LogError {
        if self.stop_at_no_space {
            error!("log device full: refusing every later append, so that no hole forms");
            self.failure = Some(LogError::NoSpace);
        }
        LogError::NoSpace
    }

    /// Records a fatal failure: this and every later batch and snapshot
    /// fail with it.
    fn fail(&mut self, failed: Failed) -> LogError {
        let Failed { op, path, source } = failed;
        error!(
            file = %path.display(),
            op,
            error = %source,
            "log {op} failed: refusing every later append; restart to recover from disk"
        );
        let failure = LogError::Io {
            op,
            path,
            source: Arc::new(source),
        };
        self.failure = Some(failure.clone());
        // Never touch the file again: its contents past the last good fsync
        // are unknown.
        self.active = None;
        failure
    }

    /// Records a failure of the disk reserve's file operations as fatal, as
    /// any other failing file operation is: the disk is failing.
    fn fatal(&mut self, failure: LogError) -> LogError {
        error!(error = %failure, "log reserve failed: refusing every later append; restart to recover from disk");
        self.failure = Some(failure.clone());
        self.active = None;
        failure
    }

    /// Validates a snapshot request and writes it beside the writer: a large
    /// state takes a while to write and fsync, and appends must not wait.
    /// With the reserve given up, or given up now because the disk is full,
    /// the snapshot is written now instead (see
    /// [`Writer::snapshot_in_reserve`]).
    async fn snapshot(&mut self, request: SnapshotRequest) {
        let SnapshotRequest { upto, state, reply } = request;
        let last = Lsn(self.next_lsn.0 - 1);
        let refusal = match &self.failure {
            Some(failure) => Some(failure.clone()),
            None if upto.0 == 0 || upto > last => Some(LogError::SnapshotRange { upto, last }),
            None => None,
        };
        if let Some(error) = refusal {
            let _ = reply.send(Err(error));
            return;
        }
        // A full disk whose settles all fitted never gave its reserve up,
        // yet only a snapshot that starts a new segment frees it.
        if self.reserve.snapshot_needs_it() {
            let now = self.io.now();
            if let Err(error) = self.reserve.release(now).await {
                let _ = reply.send(Err(self.fatal(error)));
                return;
            }
        }
        if !self.reserve.admits_ordinary() {
            let taken = self.snapshot_in_reserve(upto, &state).await;
            let _ = reply.send(taken);
            return;
        }
        if self.short_of_space().await
            && let Err(error) = self.start_segment_if_used().await
        {
            let _ = reply.send(Err(error));
            return;
        }
        let io = self.io.clone();
        let dir = self.dir.clone();
        let task = async move {
            let _ = reply.send(snapshot::take(&io, &dir, upto, state).await);
        };
        self.io.spawn(task.instrument(Span::current()));
    }

    /// Writes a snapshot into what the given-up reserve freed, which is how
    /// a full disk gets space back, then makes the reserve again if it can.
    /// A state too large for what is left is refused without a write.
    ///
    /// A new segment is started first: the segment being appended to is
    /// never deleted, and on a full disk it may hold nearly all of the log.
    /// Appends wait meanwhile, but the state is small and ordinary records
    /// are refused anyway.
    async fn snapshot_in_reserve(&mut self, upto: Lsn, state: &Bytes) -> Result<(), LogError> {
        let taken = if self.reserve.snapshot_fits(state.len()) {
            self.take_snapshot_in_reserve(upto, state).await
        } else {
            debug!(
                state_bytes = state.len(),
                "snapshot too large for the disk reserve: refused"
            );
            Err(LogError::NoSpace)
        };
        let now = self.io.now();
        let remade = match &taken {
            Ok(()) => self.reserve.snapshot_taken(now).await,
            Err(_) => {
                self.reserve.snapshot_failed();
                Ok(())
            }
        };
        match remade {
            Ok(()) => taken,
            Err(error) => Err(self.fatal(error)),
        }
    }

    /// Starts a new segment if the active one holds records, then writes
    /// the snapshot, which deletes the segments it covers.
    async fn take_snapshot_in_reserve(&mut self, upto: Lsn, state: &Bytes) -> Result<(), LogError> {
        if self.start_segment_if_used().await? {
            self.reserve.spend(HEADER_BYTES);
        }
        snapshot::take(&self.io, &self.dir, upto, state.clone()).await
    }

    /// Seals the active segment and starts the next at once if it holds
    /// records, so that a snapshot covering them deletes it (the last
    /// segment never is); returns whether it did.
    async fn start_segment_if_used(&mut self) -> Result<bool, LogError> {
        let holds_records = self
            .active
            .as_ref()
            .is_none_or(|active| active.first < self.next_lsn);
        if holds_records {
            self.active = None;
            self.active = Some(self.create_segment().await?);
        }
        Ok(holds_records)
    }

    /// Whether the disk could not take another full segment: a snapshot
    /// then frees the one being appended to as well (producers blocked for
    /// want of space may have written nearly all of the log into it).
    /// Never where the free space cannot be told.
    fn short_of_space(&self) -> impl Future<Output = bool> + Send + use<I> {
        let (io, dir, segment_bytes_max) =
            (self.io.clone(), self.dir.clone(), self.segment_bytes_max);
        async move {
            let free = io.available_bytes(&dir).await;
            matches!(free, Ok(Some(free)) if free < segment_bytes_max)
        }
    }
}

/// Creates the segment file at `path` for records from `first`: header
/// written and fsynced, then the directory fsynced.
/// `sync_dir` is false only under the planted bug `skip-dir-fsync`.
async fn try_create<I: Io>(
    io: &I,
    dir: &Path,
    path: &Path,
    first: Lsn,
    sync_dir: bool,
) -> Result<I::File, Failed> {
    let mut file = io
        .open(path, OpenMode::Append)
        .await
        .map_err(Failed::at("open", path))?;
    // A file by this name can only be what a creation that ran out of space
    // left behind. Start it empty so that the header lands at offset 0 (under
    // turmoil, a removed file's unsynced writes even return with its name).
    file.set_len(0)
        .await
        .map_err(Failed::at("truncate", path))?;
    let header = segment::encode_header(first);
    file.write_all(&header)
        .await
        .map_err(Failed::at("write", path))?;
    file.sync_all().await.map_err(Failed::at("fsync", path))?;
    if sync_dir {
        io.sync_dir(dir)
            .await
            .map_err(Failed::at("sync_dir", dir))?;
    }
    Ok(file)
}

/// One write, then one fsync. The fsync also surfaces errors of writes
/// that tokio finished in the background.
async fn write_and_sync<F: File>(file: &mut F, path: &Path, frames: &[u8]) -> Result<(), Failed> {
    file.write_all(frames)
        .await
        .map_err(Failed::at("write", path))?;
    file.sync_all().await.map_err(Failed::at("fsync", path))
}
