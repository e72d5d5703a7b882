//! An [`Io`] wrapper that injects disk faults: counts file fsyncs, fails
//! writes, reads or fsyncs on demand, damages a log write, and can make
//! fsyncs slow, in front of either seam implementation. For tests and the simulator (feature `sim`); the
//! production binary never builds it.
//!
//! turmoil's own disk-full fault (`FsConfig::capacity`) reports ENOSPC as
//! `ErrorKind::Other`; [`TurmoilIo`](super::TurmoilIo)'s files map it to
//! `StorageFull`, so a capacity-limited turmoil disk is a real full disk.
//! This wrapper's `fail_writes(Some(StorageFull))` is for a disk full on
//! demand, which turmoil's fixed capacity cannot switch on and off.

use std::future::Future;
use std::io::{self, ErrorKind, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

use super::{File, Io, OpenMode};
use crate::queue::PageStore;

/// The faults to inject, shared by every clone of a [`FaultyIo`] and every
/// file it opened.
#[derive(Debug, Default)]
pub struct Faults {
    syncs: AtomicU64,
    write_error: Mutex<Option<ErrorKind>>,
    next_sync_error: Mutex<Option<ErrorKind>>,
    /// How long an fsync takes before it makes anything durable.
    sync_latency: Duration,
    /// How much longer than that it takes for now, in microseconds (see
    /// [`Faults::slow_syncs`]).
    extra_sync_latency_us: AtomicU64,
    /// How far the wall clock is off, in milliseconds (see
    /// [`Faults::set_clock_offset`]).
    clock_offset_ms: AtomicI64,
    /// File reads fail with this kind once this many more have passed (see
    /// [`Faults::fail_reads`]).
    read_error: Mutex<Option<(ErrorKind, u64)>>,
    /// The next write to a log segment lands damaged; the value picks the
    /// bit (see [`Faults::damage_next_log_write`]).
    damaged_write: Mutex<Option<u64>>,
}

impl Faults {
    /// No faults yet, and fsyncs that wait `latency` before they make
    /// anything durable. Share it (`Arc`) with [`FaultyIo::with_faults`] to
    /// switch faults on and off from outside the host, as a nemesis does.
    pub fn with_sync_latency(latency: Duration) -> Self {
        Self {
            sync_latency: latency,
            ..Self::default()
        }
    }

    /// How many times `File::sync_all` was called.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// Fails every file write with `kind` (after writing half of it, as a
    /// disk that fills up mid-write does), or stops failing with `None`.
    pub fn fail_writes(&self, kind: Option<ErrorKind>) {
        *self
            .write_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = kind;
    }

    /// Stops every fault: writes and reads succeed, and an fsync error armed
    /// with [`Faults::fail_next_sync`] or a damaged write that has not
    /// happened is disarmed.
    pub fn clear(&self) {
        self.fail_writes(None);
        self.fail_reads(None);
        self.damage_next_log_write(None);
        *self
            .next_sync_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Makes every fsync take `extra` longer before it makes anything
    /// durable, as a slow disk does; `Duration::ZERO` makes the disk normal
    /// again. With no extra delay an fsync adds no await point, so a run
    /// that never slows a disk is the same as one without the switch.
    pub fn slow_syncs(&self, extra: Duration) {
        let micros = u64::try_from(extra.as_micros()).unwrap_or(u64::MAX);
        self.extra_sync_latency_us.store(micros, Ordering::SeqCst);
    }

    /// How long an fsync waits before it makes anything durable.
    fn sync_delay(&self) -> Duration {
        let extra = self.extra_sync_latency_us.load(Ordering::SeqCst);
        self.sync_latency + Duration::from_micros(extra)
    }

    /// Sets the wall clock (`Io::unix_time_ms`) `offset_ms` off the true
    /// time, as a clock that NTP steps or that drifted does; 0 puts it
    /// right. The monotonic clock (`Io::now`) never jumps.
    pub fn set_clock_offset(&self, offset_ms: i64) {
        self.clock_offset_ms.store(offset_ms, Ordering::SeqCst);
    }

    /// Fails the next `File::sync_all` with `kind`, without syncing.
    pub fn fail_next_sync(&self, kind: ErrorKind) {
        *self
            .next_sync_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(kind);
    }

    /// Fails every file read with `kind` once `after` more reads have
    /// passed (a read here is one `poll_read` of a file), as a disk with a
    /// bad sector does; `None` makes reads succeed again. Counting lets a
    /// recovery read part of its files before the error, so that a broker
    /// that went on with what it had read would show.
    pub fn fail_reads(&self, error: Option<(ErrorKind, u64)>) {
        *self
            .read_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }

    /// Damages the next write to a log segment (a `.seg` file): one bit of
    /// the last record framed in it, `pick` choosing which, is flipped on
    /// its way to the disk, and the fsync that follows on that file fails
    /// with EIO, as a disk that garbles a write and then reports the
    /// failure does. So the damage is confined to the newest record, of a
    /// batch the broker never acknowledged. A write that does not hold
    /// whole records is left alone and the next one is tried.
    pub fn damage_next_log_write(&self, pick: Option<u64>) {
        *self
            .damaged_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = pick;
    }

    /// Whether a damaged log write is still armed (it has not happened).
    pub fn log_write_damage_armed(&self) -> bool {
        self.damaged_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The error for the next read, if reads fail now; counts the read.
    fn next_read_error(&self) -> Option<ErrorKind> {
        let mut error = self
            .read_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (kind, left) = error.as_mut()?;
        if *left == 0 {
            return Some(*kind);
        }
        *left -= 1;
        None
    }

    /// `frames` with one bit of its last record flipped, if a damaged write
    /// is armed and `frames` is a run of whole records.
    fn damage(&self, frames: &[u8]) -> Option<Vec<u8>> {
        let pick = (*self
            .damaged_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner))?;
        let (start, end) = last_record(frames)?;
        let span = (end - start) as u64;
        let offset = start + usize::try_from(pick % span).ok()?;
        let mask = 1u8 << ((pick / span) % 8);
        let mut damaged = frames.to_vec();
        *damaged.get_mut(offset)? ^= mask;
        Some(damaged)
    }

    fn write_error(&self) -> Option<ErrorKind> {
        *self
            .write_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn take_sync_error(&self) -> Option<ErrorKind> {
        self.next_sync_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// `inner`, with [`Faults`] in front of its files.
#[derive(Debug, Clone)]
pub struct FaultyIo<I> {
    inner: I,
    pub faults: Arc<Faults>,
}

impl<I> FaultyIo<I> {
    pub fn new(inner: I) -> Self {
        Self::with_sync_latency(inner, Duration::ZERO)
    }

    /// Fsyncs wait `latency` before they make anything durable. turmoil's
    /// own fsync is durable at once (its latency comes after), so without
    /// this a crash never finds a written, unsynced batch.
    pub fn with_sync_latency(inner: I, latency: Duration) -> Self {
        Self::with_faults(inner, Arc::new(Faults::with_sync_latency(latency)))
    }

    /// `inner` with `faults`, which the caller keeps a handle to: every
    /// restart of a host can share one set of faults.
    pub fn with_faults(inner: I, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }
}

impl<I: Io> Io for FaultyIo<I> {
    type Stream = I::Stream;
    type Listener = I::Listener;
    type File = FaultyFile<I::File>;

    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send {
        self.inner.bind(addr)
    }

    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        self.inner.connect(addr)
    }

    fn resolve(&self, addr: &str) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send {
        self.inner.resolve(addr)
    }

    fn now(&self) -> std::time::Instant {
        self.inner.now()
    }

    fn unix_time_ms(&self) -> u64 {
        let offset = self.faults.clock_offset_ms.load(Ordering::SeqCst);
        self.inner.unix_time_ms().saturating_add_signed(offset)
    }

    fn run_blocking<F, R>(&self, work: F) -> impl Future<Output = R> + Send
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.inner.run_blocking(work)
    }

    fn entropy(&self) -> [u8; 32] {
        self.inner.entropy()
    }

    fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.spawn(task)
    }

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File> {
        let inner = self.inner.open(path, mode).await?;
        let is_segment = path.extension().is_some_and(|ext| ext == "seg");
        Ok(FaultyFile {
            inner,
            faults: Arc::clone(&self.faults),
            is_segment,
            sync_fails: false,
        })
    }

    fn create_dir_all(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send {
        self.inner.create_dir_all(path)
    }

    fn read_dir(&self, path: &Path) -> impl Future<Output = io::Result<Vec<PathBuf>>> + Send {
        self.inner.read_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>> + Send {
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send {
        self.inner.remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send {
        self.inner.sync_dir(path)
    }

    /// A disk full on demand has nothing left, whatever the one below says.
    async fn available_bytes(&self, path: &Path) -> io::Result<Option<u64>> {
        if self.faults.write_error() == Some(ErrorKind::StorageFull) {
            return Ok(Some(0));
        }
        self.inner.available_bytes(path).await
    }

    // The page store's files take turmoil's disk faults (its capacity, a
    // crash's lost writes), not these.
    fn page_store(&self, dir: &Path) -> Box<dyn PageStore> {
        self.inner.page_store(dir)
    }
}

/// A file whose writes and fsyncs obey [`Faults`].
#[derive(Debug)]
pub struct FaultyFile<F> {
    inner: F,
    faults: Arc<Faults>,
    /// A log segment, whose writes [`Faults::damage_next_log_write`] aims at.
    is_segment: bool,
    /// A damaged write landed in this file: its next fsync fails.
    sync_fails: bool,
}

impl<F: File> AsyncRead for FaultyFile<F> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(kind) = this.faults.next_read_error() {
            return Poll::Ready(Err(io::Error::from(kind)));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<F: File> AsyncWrite for FaultyFile<F> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_segment
            && let Some(damaged) = this.faults.damage(buf)
        {
            // The whole write lands, damaged, or none of it: a write that
            // does not finish is tried again, and must then be damaged too.
            let written = ready!(Pin::new(&mut this.inner).poll_write(cx, &damaged))?;
            this.faults.damage_next_log_write(None);
            this.sync_fails = true;
            return Poll::Ready(Ok(written));
        }
        let Some(kind) = this.faults.write_error() else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        // Leave half a write behind, as a disk that fills up mid-write does,
        // so that the log has to cut it off again.
        let half = buf.get(..buf.len() / 2).unwrap_or_default();
        if !half.is_empty() {
            ready!(Pin::new(&mut this.inner).poll_write(cx, half))?;
        }
        Poll::Ready(Err(io::Error::from(kind)))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<F: File> AsyncSeek for FaultyFile<F> {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.get_mut().inner).start_seek(position)
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.get_mut().inner).poll_complete(cx)
    }
}

impl<F: File> File for FaultyFile<F> {
    async fn sync_all(&mut self) -> io::Result<()> {
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        if std::mem::take(&mut self.sync_fails) {
            return Err(io::Error::other("EIO after a damaged write"));
        }
        if let Some(kind) = self.faults.take_sync_error() {
            return Err(io::Error::from(kind));
        }
        let delay = self.faults.sync_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.inner.sync_all().await
    }

    fn set_len(&mut self, len_bytes: u64) -> impl Future<Output = io::Result<()>> + Send {
        self.inner.set_len(len_bytes)
    }
}

/// Where the last record framed in `frames` starts and ends, if `frames` is
/// a run of whole records (`len u32 | crc32c u32 | payload`, as
/// `crate::log` documents) and holds one at least.
fn last_record(frames: &[u8]) -> Option<(usize, usize)> {
    const FRAME_HEADER_BYTES: usize = 8;
    let mut start = 0;
    let mut last = None;
    while start < frames.len() {
        let len = frames.get(start..start + 4)?;
        let len = u32::from_be_bytes(<[u8; 4]>::try_from(len).ok()?) as usize;
        let end = start + FRAME_HEADER_BYTES + len;
        if len == 0 || end > frames.len() {
            return None;
        }
        last = Some((start, end));
        start = end;
    }
    last
}
