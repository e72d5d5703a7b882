//! The disk reserve: space the log holds back from records that add data,
//! so that a full disk can always be freed.
//!
//! A log gives space back only through a snapshot, after which the
//! segments it covers are deleted; and what makes the broker's state
//! smaller (settles, deletions, expiries) is itself a record. On a disk that
//! producers filled, neither a settle nor a snapshot fits, so consuming
//! every message would free nothing. The reserve is a file of
//! [`LogOptions::reserve_bytes`](super::LogOptions) in the log directory,
//! written (not merely sized) and fsynced, so that its blocks really are
//! allocated:
//!
//! - **Held.** Every record is written as usual. When a batch meets ENOSPC
//!   and holds *reserved* records ([`Log::submit_reserved`](super::Log)),
//!   the writer deletes the file and retries those records in what that
//!   freed; the batch's ordinary records are refused.
//! - **Released.** Ordinary records are refused without touching the disk,
//!   so that producers cannot take what the reserve freed. Reserved records
//!   are written while they have used less than half of it; the rest is kept
//!   for a snapshot, which the owner is asked for (see
//!   [`Log::snapshot_room`](super::Log::snapshot_room)). The writer writes
//!   that snapshot itself, after starting a new segment so that the one the
//!   records went into is covered and deleted; then it makes the reserve
//!   again, and producers have space again.
//! - **Wanted while held.** Settles that fit in what producers left never
//!   meet ENOSPC, so the reserve is never given up, and the segment being
//!   appended to, holding what was consumed, is never deleted. So once
//!   ordinary records are refused for want of space, the owner is asked
//!   for a snapshot as if the reserve were released, and when it comes the
//!   reserve is given up for it, as above.
//!
//! If the reserve cannot be made again (or made at all at open), it stays
//! released. The writer makes it as soon as the file system reports room
//! for it ([`Io::available_bytes`]), and otherwise tries again when a batch
//! arrives, first after [`RETRY_INTERVAL_MIN`] and then less often, asking
//! for another snapshot each time, so that space freed by any means is
//! found.

use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand_chacha::rand_core::RngCore as _;
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};
use tracing::{debug, info, warn};

use super::error::Context as _;
use super::{LogError, files};
use crate::io::{File, Io, OpenMode, seeded_rng};

/// How long after being released (or found missing) the reserve is first
/// tried again without a snapshot prompting it.
pub(super) const RETRY_INTERVAL_MIN: Duration = Duration::from_secs(1);

/// The longest wait between such tries. Where the free space is unknown,
/// each may write up to the reserve's size before it finds the disk still
/// full; each may also ask for a snapshot.
const RETRY_INTERVAL_MAX: Duration = Duration::from_secs(8);

/// The reserve is written this many bytes at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// A snapshot file's bytes beyond its state, with a new segment's header: a
/// generous bound of what a snapshot in the reserve takes besides its state.
const SNAPSHOT_OVERHEAD_BYTES: u64 = 4096;

/// What the log's owner sees of the reserve, without asking the writer.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// While a snapshot would give space back: how large its state may be
    /// and still fit, halved so that the owner's estimate of its state may
    /// be short by a factor of two. Zero otherwise.
    snapshot_room: AtomicU64,
    /// Snapshots asked for and not finished: while one is, no other is
    /// wanted.
    snapshots_pending: AtomicU64,
}

impl Shared {
    /// See [`Log::snapshot_room`](super::Log::snapshot_room).
    pub(super) fn snapshot_room(&self) -> Option<u64> {
        if self.snapshots_pending.load(Ordering::Acquire) > 0 {
            return None;
        }
        let room = self.snapshot_room.load(Ordering::Acquire);
        (room > 0).then_some(room)
    }

    /// Counts a snapshot as pending until the returned guard is dropped.
    pub(super) fn snapshot_pending(self: &Arc<Self>) -> PendingSnapshot {
        self.snapshots_pending.fetch_add(1, Ordering::AcqRel);
        PendingSnapshot(Arc::clone(self))
    }
}

/// A snapshot in progress, counted in [`Shared`] while it lives.
#[derive(Debug)]
pub(super) struct PendingSnapshot(Arc<Shared>);

impl Drop for PendingSnapshot {
    fn drop(&mut self) {
        self.0.snapshots_pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where the reserve stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No reserve is configured.
    Off,
    /// The file is on disk, whole and synced.
    Held,
    /// The file is gone (or was never made): its space is for reserved
    /// records and snapshots only.
    Released(Released),
}

/// The state of a released reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Released {
    /// Bytes reserved records (and new segments' headers) took since.
    spent_bytes: u64,
    /// Whether the owner is asked for a snapshot.
    snapshot_wanted: bool,
    /// When the writer may next try to make the reserve unprompted.
    retry_at: Instant,
    /// The wait before that try: it doubles with each failed try, up to
    /// [`RETRY_INTERVAL_MAX`].
    retry_interval: Duration,
}

impl Released {
    /// Just released (or missing at open), at `now`.
    fn at(now: Instant) -> Self {
        Self {
            spent_bytes: 0,
            snapshot_wanted: true,
            retry_at: now + RETRY_INTERVAL_MIN,
            retry_interval: RETRY_INTERVAL_MIN,
        }
    }
}

/// The reserve file and its state, owned by the writer.
pub(super) struct Reserve<I: Io> {
    io: I,
    dir: PathBuf,
    path: PathBuf,
    bytes: u64,
    state: State,
    /// Ordinary records were refused for want of space while the reserve
    /// was held, and none written since. Settles small enough to fit in
    /// what was left never give the reserve up, so without this the owner
    /// would never be asked for the snapshot that frees the disk.
    space_wanted: bool,
    shared: Arc<Shared>,
}

impl<I: Io> Reserve<I> {
    /// Makes sure the reserve of `bytes` is on disk in `dir` (a leftover of
    /// the right size is kept; with `bytes` 0 a leftover is removed). A disk
    /// too full for it leaves it released rather than failing the open.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] if a file operation fails with anything but ENOSPC.
    pub(super) async fn open(
        io: I,
        dir: &Path,
        bytes: u64,
        shared: Arc<Shared>,
    ) -> Result<Self, LogError> {
        let mut reserve = Self {
            path: dir.join(files::RESERVE_NAME),
            dir: dir.to_path_buf(),
            io,
            bytes,
            state: State::Off,
            space_wanted: false,
            shared,
        };
        if bytes == 0 {
            reserve.remove().await?;
            return Ok(reserve);
        }
        let now = reserve.io.now();
        reserve.state = if reserve.kept().await? || reserve.make().await? {
            State::Held
        } else {
            warn!(
                reserve_bytes = bytes,
                "log device too full for the disk reserve: publishes are refused until it can be made"
            );
            State::Released(Released::at(now))
        };
        reserve.publish();
        Ok(reserve)
    }

    /// Whether records that are not reserved may be written: the reserve
    /// is held, or there is none.
    pub(super) fn admits_ordinary(&self) -> bool {
        !matches!(self.state, State::Released(_))
    }

    /// Whether reserved records of `bytes` may still be written in the
    /// released reserve: they may use half of it, the rest being kept for
    /// the snapshot that gives space back.
    pub(super) fn may_spend(&self, bytes: usize) -> bool {
        match self.state {
            State::Released(released) => {
                released.spent_bytes.saturating_add(bytes as u64) <= self.bytes / 2
            }
            State::Off | State::Held => true,
        }
    }

    /// After a batch with ordinary records was written (`written`), or
    /// refused for want of space (`full`), with the reserve held: while
    /// they are refused, a snapshot is wanted.
    pub(super) fn ordinary_written(&mut self, written: bool, full: bool) {
        let wanted = match self.state {
            State::Held => (self.space_wanted && !written) || full,
            State::Off | State::Released(_) => false,
        };
        if wanted != self.space_wanted {
            self.space_wanted = wanted;
            self.publish();
        }
    }

    /// Whether a snapshot must be written in the reserve, given up for it:
    /// producers are refused for want of space while the reserve is held.
    pub(super) fn snapshot_needs_it(&self) -> bool {
        self.state == State::Held && self.space_wanted
    }

    /// Counts `bytes` written into the released reserve.
    pub(super) fn spend(&mut self, bytes: usize) {
        if let State::Released(released) = &mut self.state {
            released.spent_bytes = released.spent_bytes.saturating_add(bytes as u64);
            self.publish();
        }
    }

    /// Whether a snapshot of `state_bytes` fits in what is left of the
    /// released reserve.
    pub(super) fn snapshot_fits(&self, state_bytes: usize) -> bool {
        match self.state {
            State::Released(released) => {
                let needed = (state_bytes as u64).saturating_add(SNAPSHOT_OVERHEAD_BYTES);
                needed <= self.bytes.saturating_sub(released.spent_bytes)
            }
            State::Off | State::Held => true,
        }
    }

    /// Deletes the held reserve, durably, for records that must get space.
    /// Returns whether there was one to delete.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] if removing it or syncing the directory fails.
    pub(super) async fn release(&mut self, now: Instant) -> Result<bool, LogError> {
        if self.state != State::Held {
            return Ok(false);
        }
        self.remove().await?;
        warn!(
            reserve_bytes = self.bytes,
            "log device full: disk reserve released for settles and a snapshot; publishes are refused until it is made again"
        );
        self.state = State::Released(Released::at(now));
        self.space_wanted = false;
        self.publish();
        Ok(true)
    }

    /// After a snapshot in the released reserve: makes the reserve again if
    /// the snapshot gave enough space back.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] as [`Reserve::open`].
    pub(super) async fn snapshot_taken(&mut self, now: Instant) -> Result<(), LogError> {
        self.remake(now, false).await
    }

    /// After a snapshot in the released reserve failed (or did not fit):
    /// no other is asked for until the next retry, which asks again, so that
    /// a snapshot that cannot succeed is not tried at every batch.
    pub(super) fn snapshot_failed(&mut self) {
        if let State::Released(released) = &mut self.state {
            released.snapshot_wanted = false;
            self.publish();
        }
    }

    /// Before each batch while released: makes the reserve again at once if
    /// the file system says it has room for it, and otherwise once its
    /// retry is due, asking for a snapshot again if that fails (the state
    /// may have shrunk since). The wait between retries doubles up to
    /// [`RETRY_INTERVAL_MAX`], so that a disk that stays full costs neither
    /// a write of the reserve nor a snapshot every second.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] as [`Reserve::open`].
    pub(super) async fn retry_if_due(&mut self, now: Instant) -> Result<(), LogError> {
        let State::Released(released) = self.state else {
            return Ok(());
        };
        let roomy = self
            .available()
            .await
            .is_some_and(|free| free >= self.bytes);
        if roomy || now >= released.retry_at {
            self.remake(now, true).await?;
        }
        Ok(())
    }

    /// Tries to make the released reserve again, unless the file system
    /// says it has no room for it. If it stays released, the next retry is
    /// scheduled and a snapshot is asked for if `want_snapshot`.
    async fn remake(&mut self, now: Instant, want_snapshot: bool) -> Result<(), LogError> {
        let State::Released(released) = self.state else {
            return Ok(());
        };
        let too_full = self.available().await.is_some_and(|free| free < self.bytes);
        if !too_full && self.make().await? {
            info!(
                reserve_bytes = self.bytes,
                "disk reserve made again: publishes are accepted"
            );
            self.state = State::Held;
        } else {
            let retry_interval = (released.retry_interval * 2).min(RETRY_INTERVAL_MAX);
            self.state = State::Released(Released {
                snapshot_wanted: want_snapshot,
                retry_at: now + retry_interval,
                retry_interval,
                ..released
            });
        }
        self.publish();
        Ok(())
    }

    /// What the file system says is free, if it can tell.
    async fn available(&self) -> Option<u64> {
        match self.io.available_bytes(&self.dir).await {
            Ok(free) => free,
            Err(error) => {
                debug!(%error, "cannot tell the log device's free space");
                None
            }
        }
    }

    /// Tells the owner how large a snapshot is wanted, if one is.
    fn publish(&self) {
        let left = match self.state {
            State::Released(Released {
                spent_bytes,
                snapshot_wanted: true,
                ..
            }) => self.bytes.saturating_sub(spent_bytes),
            State::Held if self.space_wanted => self.bytes,
            _ => 0,
        };
        let room = left.saturating_sub(SNAPSHOT_OVERHEAD_BYTES) / 2;
        self.shared.snapshot_room.store(room, Ordering::Release);
    }

    /// Whether a reserve of the right size is already on disk (left by an
    /// earlier run); if so it is synced, since that run may have stopped
    /// before it did.
    async fn kept(&self) -> Result<bool, LogError> {
        let path = &self.path;
        let mut file = match self.io.open(path, OpenMode::Read).await {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(error).during("open", path),
        };
        let len = file.seek(SeekFrom::End(0)).await.during("seek", path)?;
        if len != self.bytes {
            return Ok(false);
        }
        file.sync_all().await.during("fsync", path)?;
        self.io
            .sync_dir(&self.dir)
            .await
            .during("sync_dir", &self.dir)?;
        Ok(true)
    }

    /// Writes the reserve whole and makes it durable. Returns false, having
    /// removed what was written, if the disk has no room for it.
    async fn make(&self) -> Result<bool, LogError> {
        match self.write().await {
            Ok(()) => Ok(true),
            Err(LogError::NoSpace) => {
                self.remove().await?;
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// Writes `bytes` of the reserve and syncs it and the directory (a zero
    /// size never gets here: [`Reserve::open`] keeps none). The
    /// bytes are pseudo-random: a file system that compresses (btrfs, ZFS)
    /// would store zeros in next to no space, and the reserve must hold
    /// what it says.
    async fn write(&self) -> Result<(), LogError> {
        let path = &self.path;
        let mut file = self
            .io
            .open(path, OpenMode::Truncate)
            .await
            .during("open", path)?;
        let mut rng = seeded_rng(self.bytes);
        let mut chunk = vec![0; CHUNK_BYTES];
        let mut left = self.bytes;
        while left > 0 {
            let len = usize::try_from(left).map_or(CHUNK_BYTES, |left| left.min(CHUNK_BYTES));
            let chunk = chunk.get_mut(..len).unwrap_or_default();
            rng.fill_bytes(chunk);
            file.write_all(chunk).await.during("write", path)?;
            // Synced chunk by chunk: ENOSPC then comes early rather than
            // from a final fsync of many megabytes, and turmoil's disk
            // counts each unsynced write as extending the file's synced
            // length, so a whole unsynced reserve would count many times.
            file.sync_all().await.during("fsync", path)?;
            left -= len as u64;
        }
        self.io
            .sync_dir(&self.dir)
            .await
            .during("sync_dir", &self.dir)
    }

    /// Removes the reserve file if there is one, durably.
    async fn remove(&self) -> Result<(), LogError> {
        match self.io.remove_file(&self.path).await {
            Ok(()) => self
                .io
                .sync_dir(&self.dir)
                .await
                .during("sync_dir", &self.dir),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error).during("remove", &self.path),
        }
    }
}
