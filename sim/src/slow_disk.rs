//! A slow disk on demand: an [`Io`] wrapper whose fsyncs wait an extra,
//! switchable delay before they make anything durable.
//!
//! The broker's own fault seam ([`sluice::io::faulty`]) fixes its fsync
//! latency for the whole run; the cluster world's nemesis makes one node's
//! disk slow for a while (the leader's, typically), so this wrapper sits in
//! front of it and the nemesis holds the switch. With no extra delay it
//! forwards every call unchanged, adding no await point: a world that never
//! slows a disk runs exactly as it would without it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use sluice::io::{File, Io, OpenMode};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

/// The switch: how much longer than usual each fsync takes, shared by the
/// nemesis and every incarnation of one host.
#[derive(Debug, Default)]
pub struct SlowDisk {
    extra_us: AtomicU64,
}

impl SlowDisk {
    /// Every fsync waits `extra` more before it makes anything durable;
    /// `Duration::ZERO` makes the disk normal again.
    pub fn set(&self, extra: Duration) {
        let micros = u64::try_from(extra.as_micros()).unwrap_or(u64::MAX);
        self.extra_us.store(micros, Ordering::SeqCst);
    }

    /// The extra delay now.
    pub fn extra(&self) -> Duration {
        Duration::from_micros(self.extra_us.load(Ordering::SeqCst))
    }
}

/// `inner`, with fsyncs slowed as [`SlowDisk`] says.
#[derive(Debug, Clone)]
pub struct SlowDiskIo<I> {
    inner: I,
    slow: Arc<SlowDisk>,
}

impl<I> SlowDiskIo<I> {
    /// `inner` behind the switch `slow`.
    pub fn new(inner: I, slow: Arc<SlowDisk>) -> Self {
        Self { inner, slow }
    }
}

impl<I: Io> Io for SlowDiskIo<I> {
    type Stream = I::Stream;
    type Listener = I::Listener;
    type File = SlowFile<I::File>;

    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send {
        self.inner.bind(addr)
    }

    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        self.inner.connect(addr)
    }

    fn now(&self) -> std::time::Instant {
        self.inner.now()
    }

    fn unix_time_ms(&self) -> u64 {
        self.inner.unix_time_ms()
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
        Ok(SlowFile {
            inner,
            slow: Arc::clone(&self.slow),
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
}

/// A file whose fsyncs obey [`SlowDisk`].
#[derive(Debug)]
pub struct SlowFile<F> {
    inner: F,
    slow: Arc<SlowDisk>,
}

impl<F: File> AsyncRead for SlowFile<F> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<F: File> AsyncWrite for SlowFile<F> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<F: File> AsyncSeek for SlowFile<F> {
    fn start_seek(self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.get_mut().inner).start_seek(position)
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.get_mut().inner).poll_complete(cx)
    }
}

impl<F: File> File for SlowFile<F> {
    async fn sync_all(&mut self) -> io::Result<()> {
        let extra = self.slow.extra();
        if !extra.is_zero() {
            tokio::time::sleep(extra).await;
        }
        self.inner.sync_all().await
    }

    fn set_len(&mut self, len_bytes: u64) -> impl Future<Output = io::Result<()>> + Send {
        self.inner.set_len(len_bytes)
    }
}
