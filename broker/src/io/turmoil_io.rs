//! The simulated seam: turmoil's network, per-host file system and virtual
//! clock. Only compiled with the `sim` feature.
//!
//! Every method must run inside a turmoil host or client: turmoil finds the
//! current host through its thread-local world and panics elsewhere, which
//! is a bug in the caller, not a condition to handle.

use std::future::Future;
use std::io::{self, ErrorKind, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::task::JoinHandle;
use turmoil::fs::shim::tokio::fs as sim_fs;

use super::pages::{FilePages, SyncFs};
use super::{File, Io, Listener, OpenMode};
use crate::queue::PageStore;

/// The wall clock's reading when a simulation starts: 2024-01-01T00:00:00Z.
/// Fixed, so that timestamps replay with the seed.
pub(super) const SIM_EPOCH_UNIX_MS: u64 = 1_704_067_200_000;

/// Simulated I/O for software running in a turmoil host.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurmoilIo;

impl Io for TurmoilIo {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;
    type File = SimFile;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        turmoil::net::TcpListener::bind(addr).await
    }

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(addr).await
    }

    async fn resolve(&self, addr: &str) -> io::Result<Vec<SocketAddr>> {
        Ok(turmoil::net::lookup_host(addr).await?.collect())
    }

    fn now(&self) -> Instant {
        super::tokio_now()
    }

    fn unix_time_ms(&self) -> u64 {
        // The simulation's elapsed time, not the runtime's clock: turmoil
        // builds a fresh runtime when it restarts a host, which restarts its
        // `Instant`s, but the wall clock must keep going.
        let elapsed = turmoil::sim_elapsed().expect("TurmoilIo used outside a turmoil host");
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        SIM_EPOCH_UNIX_MS.saturating_add(elapsed_ms)
    }

    async fn run_blocking<F, R>(&self, work: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        work()
    }

    fn entropy(&self) -> [u8; 32] {
        [0; 32]
    }

    // The seam: tasks go onto the host's `LocalSet`, where turmoil runs the
    // host's software, so that they are scheduled in the seeded order and are
    // dropped with the host on `crash` and `bounce`.
    #[allow(clippy::disallowed_methods)]
    fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::task::spawn_local(task)
    }

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File> {
        let mut options = sim_fs::OpenOptions::new();
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
        options.open(path).await.map(|inner| SimFile { inner })
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        sim_fs::create_dir_all(path).await
    }

    async fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let paths = sim_fs::read_dir(path)
            .await?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(super::sorted(paths))
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        sim_fs::rename(from, to).await
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        sim_fs::remove_file(path).await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        sim_fs::sync_dir(path).await
    }

    /// turmoil does not say how much of its disk's capacity is used.
    async fn available_bytes(&self, _path: &Path) -> io::Result<Option<u64>> {
        Ok(None)
    }

    fn page_store(&self, dir: &Path) -> Box<dyn PageStore> {
        Box::new(FilePages::open(SimFs, dir.to_path_buf(), SIM_SEGMENT_BYTES))
    }
}

/// Page segments in the simulator: small, so that short runs delete some.
const SIM_SEGMENT_BYTES: u64 = 64 << 10;

/// turmoil's simulated file system, for the page store's blocking calls.
#[derive(Clone)]
struct SimFs;

impl SyncFs for SimFs {
    type File = turmoil::fs::shim::std::fs::File;

    fn open(&self, path: &Path) -> io::Result<Self::File> {
        turmoil::fs::shim::std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .open(path)
            .map_err(storage_full)
    }

    fn sync(&self, file: &Self::File) -> io::Result<()> {
        file.sync_all().map_err(storage_full)
    }

    fn set_len(&self, file: &Self::File, len: u64) -> io::Result<()> {
        file.set_len(len).map_err(storage_full)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        turmoil::fs::shim::std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        turmoil::fs::shim::std::fs::sync_dir(dir)
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        turmoil::fs::shim::std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in turmoil::fs::shim::std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}

impl Listener for turmoil::net::TcpListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        turmoil::net::TcpListener::accept(self).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        turmoil::net::TcpListener::local_addr(self)
    }
}

/// turmoil's simulated file, with its disk-full error made recognisable.
///
/// turmoil reports a write past `FsConfig::capacity` as `ErrorKind::Other`
/// with the message "No space left on device"; the log tells a full disk
/// (refuse the batch, go on) from a failed one (stop) by
/// `ErrorKind::StorageFull`, as the real `ENOSPC` maps to. Everything else
/// is delegated untouched.
#[derive(Debug)]
pub struct SimFile {
    inner: sim_fs::File,
}

/// turmoil's message for ENOSPC (`Fs::check_space`).
const NO_SPACE_MESSAGE: &str = "No space left on device";

/// Maps turmoil's ENOSPC to `ErrorKind::StorageFull`; any other error is
/// returned as it is.
fn storage_full(error: io::Error) -> io::Error {
    if error.kind() == ErrorKind::Other && error.to_string() == NO_SPACE_MESSAGE {
        io::Error::new(ErrorKind::StorageFull, error)
    } else {
        error
    }
}

impl AsyncRead for SimFile {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimFile {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_write(cx, buf)
            .map_err(storage_full)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_flush(cx)
            .map_err(storage_full)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_shutdown(cx)
            .map_err(storage_full)
    }
}

impl AsyncSeek for SimFile {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.get_mut().inner).start_seek(position)
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.get_mut().inner).poll_complete(cx)
    }
}

impl File for SimFile {
    async fn sync_all(&mut self) -> io::Result<()> {
        self.inner.flush().await.map_err(storage_full)?;
        self.inner.sync_all().await.map_err(storage_full)
    }

    async fn set_len(&mut self, len_bytes: u64) -> io::Result<()> {
        self.inner.set_len(len_bytes).await.map_err(storage_full)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A write past turmoil's `capacity` fails with `StorageFull`, and the
    /// file takes writes again once cut back and synced.
    #[test]
    fn a_full_disk_is_storage_full() {
        let mut builder = turmoil::Builder::new();
        builder.simulation_duration(Duration::from_secs(10));
        builder.fs().capacity(100);
        let mut sim = builder.build();
        sim.client("host", async {
            let io = TurmoilIo;
            let mut file = io.open(Path::new("/f"), OpenMode::Append).await?;
            file.write_all(&[1; 60]).await?;
            let error = file
                .write_all(&[2; 60])
                .await
                .expect_err("the disk holds 100 bytes");
            assert_eq!(error.kind(), ErrorKind::StorageFull, "{error}");
            // turmoil counts unsynced writes against the capacity until a
            // sync applies the cut, as the log's cut-back does.
            file.set_len(0).await?;
            file.sync_all().await?;
            file.write_all(&[3; 60]).await?;
            file.sync_all().await?;
            Ok(())
        });
        sim.run().expect("the client passes");
    }

    #[test]
    fn other_errors_keep_their_kind() {
        let error = storage_full(io::Error::other("something else"));
        assert_eq!(error.kind(), ErrorKind::Other);
        let error = storage_full(io::Error::from(ErrorKind::NotFound));
        assert_eq!(error.kind(), ErrorKind::NotFound);
    }
}
