//! The simulated seam: turmoil's network, per-host file system and virtual
//! clock. Only compiled with the `sim` feature.
//!
//! Every method must run inside a turmoil host or client: turmoil finds the
//! current host through its thread-local world and panics elsewhere, which
//! is a bug in the caller, not a condition to handle.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use turmoil::fs::shim::tokio::fs as sim_fs;

use super::{File, Io, Listener, OpenMode};

/// The wall clock's reading when a simulation starts: 2024-01-01T00:00:00Z.
/// Fixed, so that timestamps replay with the seed.
pub(super) const SIM_EPOCH_UNIX_MS: u64 = 1_704_067_200_000;

/// Simulated I/O for software running in a turmoil host.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurmoilIo;

impl Io for TurmoilIo {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;
    type File = sim_fs::File;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        turmoil::net::TcpListener::bind(addr).await
    }

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(addr).await
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
        options.open(path).await
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

impl File for sim_fs::File {
    async fn sync_all(&mut self) -> io::Result<()> {
        self.flush().await?;
        sim_fs::File::sync_all(self).await
    }

    async fn set_len(&mut self, len_bytes: u64) -> io::Result<()> {
        sim_fs::File::set_len(self, len_bytes).await
    }
}
