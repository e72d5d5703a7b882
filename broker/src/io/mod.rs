//! The I/O seam: the one place where Sluice touches sockets, files, clocks,
//! task spawning and entropy.
//!
//! Everything above this module is written against the [`Io`] trait, so the
//! same server runs on real tokio I/O in production ([`TokioIo`]) and on
//! turmoil's simulated network, disk and clock in tests ([`TurmoilIo`], crate
//! feature `sim`). The choice is a type parameter, not a `cfg` switch: Cargo
//! unifies features across the workspace (the simulator enables `sim`), and
//! a feature must never change what the production binary runs on.
//!
//! Clippy's `disallowed-methods` and `disallowed-types` (see `clippy.toml`)
//! reject the nondeterministic calls everywhere else; the two implementation
//! files opt out item by item.
//!
//! Randomness that only has to vary (jitter, sampling) comes from one
//! [`SeededRng`] built from the configured seed with [`seeded_rng`] and
//! handed down, so a simulation seed replays bit for bit. Randomness that
//! must be unguessable (nonces, salts) comes from [`secret_rng`], which
//! mixes in [`Io::entropy`]: the operating system's in production, nothing
//! under turmoil, where the seed alone still replays the run.

pub mod descriptors;
#[cfg(any(test, feature = "sim"))]
pub mod faulty;
pub mod pages;
mod tokio_io;
#[cfg(feature = "sim")]
mod turmoil_io;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncWrite};
use tokio::task::JoinHandle;

use crate::queue::PageStore;

pub use tokio_io::TokioIo;
#[cfg(feature = "sim")]
pub use turmoil_io::{SimFile, TurmoilIo};

/// Sockets, files, clocks and tasks, as one environment.
///
/// Implementations are cheap handles (`Clone`) that can be moved into every
/// task. All returned futures are `Send` so that generic code can spawn them
/// on tokio's multi-threaded runtime.
pub trait Io: Clone + Send + Sync + 'static {
    /// A connected TCP stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A TCP listener that accepts [`Io::Stream`]s.
    type Listener: Listener<Stream = Self::Stream>;
    /// An open file.
    type File: File;

    /// Binds a TCP listener. Port 0 picks a free port: read it back with
    /// [`Listener::local_addr`].
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// Opens a TCP connection to `addr` (`host:port`). Host names are
    /// resolved by the environment: DNS in production, turmoil's host table
    /// in simulation.
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// The addresses `addr` (`host:port`) resolves to, as
    /// [`Io::connect`] would resolve it.
    fn resolve(&self, addr: &str) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;

    /// The monotonic clock. Under turmoil this is the host's virtual clock,
    /// which is why cores take `now` as an argument instead of reading it.
    fn now(&self) -> Instant;

    /// Wall-clock time in milliseconds since the Unix epoch, for timestamps
    /// that leave the process (message properties, logs). Never use it to
    /// measure durations: it can jump; use [`Io::now`].
    fn unix_time_ms(&self) -> u64;

    /// Runs `task` concurrently. Under turmoil the task belongs to the
    /// current host and dies with it on `crash` or `bounce`.
    fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;

    /// Runs `work`, which blocks (CPU-heavy hashing), off the threads that
    /// serve connections, and waits for its result. Under turmoil it runs
    /// in place, so that the simulation stays one deterministic thread.
    /// The caller bounds how much such work is in flight.
    fn run_blocking<F, R>(&self, work: F) -> impl Future<Output = R> + Send
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static;

    /// 32 bytes the environment guarantees unpredictable: the operating
    /// system's entropy in production; zeros under turmoil, where secrets
    /// need only be distinct per seed. Use it through [`secret_rng`].
    fn entropy(&self) -> [u8; 32];

    /// Opens the file at `path` as `mode` describes.
    fn open(
        &self,
        path: &Path,
        mode: OpenMode,
    ) -> impl Future<Output = io::Result<Self::File>> + Send;

    /// Creates `path` and any missing parents. Not durable until the parent
    /// directory is synced with [`Io::sync_dir`].
    fn create_dir_all(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send;

    /// The entries of directory `path` as full paths, sorted, so that
    /// iteration order never depends on the file system.
    fn read_dir(&self, path: &Path) -> impl Future<Output = io::Result<Vec<PathBuf>>> + Send;

    /// Atomically replaces `to` with `from`. Durable only once the parent
    /// directory is synced with [`Io::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>> + Send;

    /// Removes the file at `path`. Durable only once the parent directory is
    /// synced with [`Io::sync_dir`].
    fn remove_file(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send;

    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send;

    /// The bytes still free for this process on the file system holding
    /// `path` (`statvfs`'s available blocks), or `None` where the
    /// environment cannot tell, as on turmoil's simulated disk. For
    /// deciding whether a write is worth trying, never for promising that
    /// it succeeds: ENOSPC is still the answer that counts.
    fn available_bytes(&self, path: &Path) -> impl Future<Output = io::Result<Option<u64>>> + Send;

    /// The page store in directory `dir` (see [`pages`]). Its calls block.
    fn page_store(&self, dir: &Path) -> Box<dyn PageStore>;

    /// Reads the whole file at `path`.
    fn read_file(&self, path: &Path) -> impl Future<Output = io::Result<Vec<u8>>> + Send {
        async move {
            let mut file = self.open(path, OpenMode::Read).await?;
            let mut contents = Vec::new();
            file.read_to_end(&mut contents).await?;
            Ok(contents)
        }
    }
}

/// A bound TCP listener.
pub trait Listener: Send + Sync + 'static {
    /// The streams this listener accepts.
    type Stream;

    /// Waits for the next connection and returns it with the peer's address.
    /// Cancel-safe: dropping the future loses no connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    /// The address actually bound, with the real port when 0 was asked for.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// An open file: tokio's read, write and seek, plus durability.
pub trait File: AsyncRead + AsyncWrite + AsyncSeek + Unpin + Send + 'static {
    /// Makes every write so far durable, data and metadata.
    ///
    /// Writes are first flushed: tokio writes files in the background and
    /// reports a failed write only on the next operation, which must not be
    /// a sync that then claims durability.
    fn sync_all(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// Truncates or extends the file to `len_bytes`, for cutting a torn tail
    /// off a log. Durable after [`File::sync_all`].
    fn set_len(&mut self, len_bytes: u64) -> impl Future<Output = io::Result<()>> + Send;
}

/// How [`Io::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and append, creating the file if it is missing: every write goes
    /// to the end, whatever the read position. For logs.
    Append,
    /// Read and write from an empty file, creating it or truncating it. For
    /// writing a file whole (write, sync, then rename into place).
    Truncate,
}

/// The broker's one random number generator type. ChaCha8 is portable and
/// seedable: the same seed yields the same stream on every machine, which a
/// replayed simulation relies on.
pub type SeededRng = ChaCha8Rng;

/// Builds the RNG from the configured seed. Call it once and hand the RNG (or
/// RNGs seeded from it) down; never reach for OS entropy.
#[must_use]
pub fn seeded_rng(seed: u64) -> SeededRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// An RNG for secrets: [`Io::entropy`] mixed with `seed` (the configured
/// seed) and `purpose` (what it is for, and whose: so that two nodes or two
/// uses never share a stream). Unguessable in production; under turmoil it
/// depends on `seed` and `purpose` alone, and so replays.
pub fn secret_rng<I: Io>(io: &I, seed: u64, purpose: &[u8]) -> SeededRng {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(io.entropy())
        .chain_update(seed.to_be_bytes())
        .chain_update(purpose)
        .finalize();
    ChaCha8Rng::from_seed(digest.into())
}

/// Sleeps until `deadline` on tokio's timer, which turmoil drives in
/// simulation. Takes the `std` instants that [`Io::now`] and the cores use.
pub async fn sleep_until(deadline: Instant) {
    tokio::time::sleep_until(deadline.into()).await;
}

/// Reads the monotonic clock through tokio, whose clock is virtual when the
/// runtime is paused: turmoil pauses every host's runtime and advances it,
/// and `#[tokio::test(start_paused = true)]` does the same for unit tests.
#[allow(clippy::disallowed_methods)] // The seam: the one reader of the clock.
fn tokio_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Replaces `path` with `contents`, durably and whole: written beside it
/// (`<path>.new`), synced, renamed over it, then the directory synced. A
/// crash leaves the old file or the new one, never a mix.
///
/// # Errors
///
/// The first failing operation's error; `path` then still holds the old
/// contents, or the new ones if only the final directory sync failed.
pub async fn replace_file<I: Io>(io: &I, path: &Path, contents: &[u8]) -> io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    let mut file = io.open(&temporary, OpenMode::Truncate).await?;
    file.write_all(contents).await?;
    file.sync_all().await?;
    io.rename(&temporary, path).await?;
    io.sync_dir(path.parent().unwrap_or(Path::new("."))).await
}

/// `error`, with `op` and `path` in its message and its kind kept: for
/// errors that would otherwise not say which file failed.
pub(crate) fn naming(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> io::Error {
    let path = path.to_path_buf();
    move |error| io::Error::new(error.kind(), format!("{op} {}: {error}", path.display()))
}

/// Sorts directory entries so that listings are reproducible.
fn sorted(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort_unstable();
    paths
}

#[cfg(test)]
mod tests;
