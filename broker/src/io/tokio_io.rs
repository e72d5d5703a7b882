//! The production seam: tokio's sockets, files, timer and scheduler.
//!
//! Each item that names a type or function `clippy.toml` forbids carries its
//! own `allow`: this file is where those calls are supposed to live.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use super::pages::{FilePages, SEGMENT_BYTES, SyncFs};
use super::{File, Io, Listener, OpenMode};
use crate::queue::PageStore;

/// Real I/O on the tokio runtime the caller runs in.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioIo;

// The seam: tokio's sockets and files are the production implementation.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
impl Io for TokioIo {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;
    type File = tokio::fs::File;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn resolve(&self, addr: &str) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host(addr).await?.collect())
    }

    fn now(&self) -> Instant {
        super::tokio_now()
    }

    fn unix_time_ms(&self) -> u64 {
        // A clock set before 1970 reads as the epoch rather than failing:
        // timestamps are informational, and ordering uses `now`.
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
    }

    async fn run_blocking<F, R>(&self, work: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => result,
            // The work panicked: so does its waiter, as if it had run here.
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }

    fn entropy(&self) -> [u8; 32] {
        use rand::RngCore;
        let mut bytes = [0; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        bytes
    }

    fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(task)
    }

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File> {
        let mut options = tokio::fs::OpenOptions::new();
        options.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::Append => {
                options.append(true).create(true);
            }
            OpenMode::Truncate => {
                options.write(true).create(true).truncate(true);
            }
        }
        options.open(path).await
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        tokio::fs::create_dir_all(path).await
    }

    async fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut entries = tokio::fs::read_dir(path).await?;
        let mut paths = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            paths.push(entry.path());
        }
        Ok(super::sorted(paths))
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        tokio::fs::rename(from, to).await
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        tokio::fs::remove_file(path).await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // On Unix a directory opens read-only like a file, and fsync on it
        // persists its entries.
        tokio::fs::File::open(path).await?.sync_all().await
    }

    async fn available_bytes(&self, path: &Path) -> io::Result<Option<u64>> {
        available_bytes(path.to_path_buf()).await
    }

    fn page_store(&self, dir: &Path) -> Box<dyn PageStore> {
        Box::new(FilePages::open(StdFs, dir.to_path_buf(), SEGMENT_BYTES))
    }
}

/// The real file system, for the page store's blocking calls (and its
/// tests).
#[derive(Clone)]
pub(super) struct StdFs;

// The seam: the page store's blocking file operations.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
impl SyncFs for StdFs {
    type File = std::fs::File;

    fn open(&self, path: &Path) -> io::Result<Self::File> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    }

    fn sync(&self, file: &Self::File) -> io::Result<()> {
        file.sync_data()
    }

    fn set_len(&self, file: &Self::File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}

/// `statvfs` on a blocking thread, as tokio runs its own file operations:
/// on a network file system it can wait on the server.
#[cfg(unix)]
#[allow(clippy::disallowed_methods)] // The seam: tokio's blocking pool.
async fn available_bytes(path: PathBuf) -> io::Result<Option<u64>> {
    let stat = tokio::task::spawn_blocking(move || rustix::fs::statvfs(&path))
        .await
        .map_err(io::Error::other)??;
    // The field types differ between platforms; on Linux they are u64.
    #[allow(clippy::useless_conversion)]
    let (blocks, block_bytes) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Ok(Some(blocks.saturating_mul(block_bytes)))
}

/// Elsewhere the free space is not known.
#[cfg(not(unix))]
async fn available_bytes(_path: PathBuf) -> io::Result<Option<u64>> {
    Ok(None)
}

// The seam: the production listener.
#[allow(clippy::disallowed_types)]
impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // AMQP exchanges many small frames and waits for answers (open,
        // attach, flow, disposition); Nagle's algorithm would hold each one
        // back for a round trip.
        stream.set_nodelay(true)?;
        Ok((stream, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

// The seam: the production file.
#[allow(clippy::disallowed_types)]
impl File for tokio::fs::File {
    async fn sync_all(&mut self) -> io::Result<()> {
        self.flush().await?;
        tokio::fs::File::sync_all(self).await
    }

    async fn set_len(&mut self, len_bytes: u64) -> io::Result<()> {
        tokio::fs::File::set_len(self, len_bytes).await
    }
}
