//! The page store on disk (see `queue::paging`): each run a chain of
//! segment files, `RUN.SEGMENT` in the group's page directory, written at
//! the end and read from anywhere with blocking positioned I/O.
//!
//! The queue machine calls it while it applies a command, so its calls
//! block: a write lands in the page cache (no fsync: the message is in the
//! log already), and a page-in reads a few hundred kilobytes, ahead of the
//! consumers that wait for them. Files are synced only at a checkpoint,
//! just before a snapshot that names the runs is taken, and a segment the
//! state no longer needs is deleted only once a snapshot taken after it
//! was forgotten is durable: until then, a recovery may start from a
//! snapshot that still names it.
//!
//! A write that fails (a full disk) is kept in memory and tried again
//! before the next write and at the next checkpoint, which fails while it
//! is still unwritten: no snapshot may name bytes that are not on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::{error, warn};

use crate::queue::{Checkpoint, PageError, PageStore, PageSync, RunId};

/// A segment file holds this much of a run at most.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Segment files kept open at once: a run being written and one being
/// read each keep one, and a few hundred deep queues at once is plenty.
/// Past it a file is closed, written or not: a checkpoint syncs each
/// segment written since the last through a handle of its own, one at a
/// time, and a sync covers what any handle wrote. So the store holds at
/// most [`PAGE_FILES_MAX`] descriptors, however many queues page.
const OPEN_FILES_MAX: usize = 256;

/// The most descriptors a page store holds at once: its open segments and
/// the one its checkpoint's sync opens.
pub const PAGE_FILES_MAX: u64 = OPEN_FILES_MAX as u64 + 1;

/// The blocking file operations a page store makes: the real file system's,
/// or turmoil's simulated one.
pub trait SyncFs: Clone + Send + 'static {
    type File: FileExt + Send;
    fn open(&self, path: &Path) -> io::Result<Self::File>;
    fn sync(&self, file: &Self::File) -> io::Result<()>;
    fn set_len(&self, file: &Self::File, len: u64) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's new entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes `dir` if it is missing.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// The names of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
}

/// Where a segment is.
type Segment = (RunId, u64);

/// A group's page store in a directory.
pub struct FilePages<F: SyncFs> {
    fs: F,
    dir: PathBuf,
    segment_bytes: u64,
    open: BTreeMap<Segment, F::File>,
    /// Segments written since the last checkpoint.
    dirty: BTreeSet<Segment>,
    /// Whether a segment file was opened (perhaps made) since the last
    /// checkpoint: its name is durable only once the directory is synced.
    opened: bool,
    /// Whether the directory is made, and durable in its parent.
    made: bool,
    /// Writes that failed, in order, to be tried again.
    unwritten: Vec<(RunId, u64, Vec<u8>)>,
    /// Segments the state no longer needs, since the last checkpoint.
    forgotten: BTreeSet<Segment>,
    /// Each run's extent: the start of its first segment not forgotten,
    /// and its end.
    runs: BTreeMap<RunId, (u64, u64)>,
    /// Segments to delete once the checkpoint they were forgotten before
    /// is durable.
    releasable: BTreeMap<u64, Vec<Segment>>,
    checkpoints: u64,
}

impl<F: SyncFs> std::fmt::Debug for FilePages<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilePages")
            .field("dir", &self.dir)
            .field("open", &self.open.len())
            .field("unwritten", &self.unwritten.len())
            .finish_non_exhaustive()
    }
}

impl<F: SyncFs> FilePages<F> {
    /// The store in `dir`, which [`PageStore::retain`] then cleans.
    pub fn open(fs: F, dir: PathBuf, segment_bytes: u64) -> Self {
        Self {
            fs,
            dir,
            segment_bytes,
            open: BTreeMap::new(),
            dirty: BTreeSet::new(),
            opened: false,
            made: false,
            unwritten: Vec::new(),
            forgotten: BTreeSet::new(),
            runs: BTreeMap::new(),
            releasable: BTreeMap::new(),
            checkpoints: 0,
        }
    }

    /// Makes the directory, once, durably: a snapshot may name what it
    /// holds, and a crash must not take it.
    fn make_dir(&mut self) -> io::Result<()> {
        if !self.made {
            self.fs.create_dir(&self.dir)?;
            if let Some(parent) = self.dir.parent() {
                self.fs.sync_dir(parent)?;
            }
            self.made = true;
        }
        Ok(())
    }

    fn retain_live(&mut self, live: &[(RunId, u64, u64)]) -> io::Result<()> {
        self.make_dir()?;
        let live: BTreeMap<RunId, (u64, u64)> = live
            .iter()
            .map(|&(run, front, end)| (run, (front, end)))
            .collect();
        self.open.clear();
        self.dirty.clear();
        for name in self.fs.list(&self.dir)? {
            let Some((run, segment)) = parse_name(&name) else {
                warn!(file = name, "not a page file: left alone");
                continue;
            };
            let start = segment * self.segment_bytes;
            match live.get(&run) {
                Some(&(front, end)) if start < end && start + self.segment_bytes > front => {
                    if start + self.segment_bytes > end {
                        // The run's last segment: what lies past its end
                        // was written after the snapshot.
                        self.open_file((run, segment))?;
                        self.fs.set_len(&self.open[&(run, segment)], end - start)?;
                    }
                }
                _ => self.fs.remove(&self.dir.join(name))?,
            }
        }
        // The replay may make files of the same names again: the old ones
        // must not come back after a crash.
        self.fs.sync_dir(&self.dir)?;
        self.runs = live
            .into_iter()
            .map(|(run, (front, end))| (run, (front - front % self.segment_bytes, end)))
            .collect();
        Ok(())
    }

    fn path(&self, (run, segment): Segment) -> PathBuf {
        self.dir.join(format!("{run}.{segment}"))
    }

    /// Opens (makes) a segment's file if it is not open: then it is in
    /// `open`.
    fn open_file(&mut self, segment: Segment) -> io::Result<()> {
        if !self.open.contains_key(&segment) {
            self.make_dir()?;
            if self.open.len() >= OPEN_FILES_MAX {
                // A clean one if any: a dirty one is opened again to sync.
                let clean = self.open.keys().find(|s| !self.dirty.contains(s));
                let closed = clean.or(self.open.keys().next()).copied();
                self.open.retain(|segment, _| Some(*segment) != closed);
            }
            let file = self.fs.open(&self.path(segment))?;
            self.open.insert(segment, file);
            self.opened = true;
        }
        Ok(())
    }

    /// The pieces of `[offset, offset + len)` of a run, one per segment:
    /// `(segment, offset in it, offset in the range, length)`.
    fn pieces(&self, run: RunId, offset: u64, len: usize) -> Vec<(Segment, u64, usize, usize)> {
        let mut pieces = Vec::new();
        let mut done = 0;
        while done < len {
            let at = offset + done as u64;
            let segment = at / self.segment_bytes;
            let within = at % self.segment_bytes;
            let room = usize::try_from(self.segment_bytes - within).unwrap_or(usize::MAX);
            let take = room.min(len - done);
            pieces.push(((run, segment), within, done, take));
            done += take;
        }
        pieces
    }

    fn write_now(&mut self, run: RunId, offset: u64, record: &[u8]) -> io::Result<()> {
        for (segment, within, from, len) in self.pieces(run, offset, record.len()) {
            self.open_file(segment)?;
            self.open[&segment].write_all_at(&record[from..from + len], within)?;
            self.dirty.insert(segment);
        }
        Ok(())
    }

    /// Tries the failed writes again, in order; true once none is left.
    fn write_unwritten(&mut self) -> bool {
        while let Some((run, offset, record)) = self.unwritten.first() {
            let (run, offset) = (*run, *offset);
            let record = record.clone();
            if self.write_now(run, offset, &record).is_err() {
                return false;
            }
            self.unwritten.remove(0);
        }
        true
    }

    fn read_now(&mut self, run: RunId, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut out = vec![0; len];
        for (segment, within, from, len) in self.pieces(run, offset, len) {
            self.open_file(segment)?;
            self.open[&segment].read_exact_at(&mut out[from..from + len], within)?;
        }
        // What failed to reach the disk is still here, and newer.
        for (unwritten_run, at, record) in &self.unwritten {
            if *unwritten_run != run {
                continue;
            }
            let start = offset.max(*at);
            let end = (offset + len as u64).min(at + record.len() as u64);
            if start < end {
                let (a, b) = ((start - offset) as usize, (end - offset) as usize);
                let (c, d) = ((start - at) as usize, (end - at) as usize);
                out[a..b].copy_from_slice(&record[c..d]);
            }
        }
        Ok(out)
    }
}

impl<F: SyncFs> PageStore for FilePages<F> {
    fn retain(&mut self, live: &[(RunId, u64, u64)]) -> Result<(), PageError> {
        self.retain_live(live).map_err(|source| {
            error!(dir = %self.dir.display(), %source, "the page store could not be cleaned");
            PageError::Io { run: 0, source }
        })
    }

    fn write(&mut self, run: RunId, offset: u64, record: &[u8]) {
        let extent = self.runs.entry(run).or_insert((0, 0));
        extent.1 = extent.1.max(offset + record.len() as u64);
        if self.write_unwritten() {
            match self.write_now(run, offset, record) {
                Ok(()) => return,
                Err(error) => {
                    warn!(run, %error, "a page write failed: kept in memory until it succeeds")
                }
            }
        }
        self.unwritten.push((run, offset, record.to_vec()));
    }

    fn read(&mut self, run: RunId, offset: u64, len: usize) -> Result<Vec<u8>, PageError> {
        self.read_now(run, offset, len).map_err(|source| {
            error!(run, offset, %source, "a page read failed");
            PageError::Io { run, source }
        })
    }

    fn forget(&mut self, run: RunId, before: u64) {
        // A failed write the state no longer needs is not tried again: a
        // full disk must not keep a consumed message from a snapshot.
        self.unwritten
            .retain(|(of, at, record)| *of != run || at + record.len() as u64 > before);
        let Some(&(from, end)) = self.runs.get(&run) else {
            return;
        };
        // Whole segments only, but the last of a run forgotten whole.
        let upto = if before >= end {
            end.div_ceil(self.segment_bytes) * self.segment_bytes
        } else {
            before - before % self.segment_bytes
        };
        for segment in from / self.segment_bytes..upto / self.segment_bytes {
            self.forgotten.insert((run, segment));
        }
        if before >= end {
            self.runs.remove(&run);
        } else {
            self.runs.insert(run, (upto.max(from), end));
        }
    }

    fn checkpoint(&mut self) -> Result<Checkpoint, PageError> {
        if !self.write_unwritten() {
            let (run, ..) = self.unwritten[0];
            let source = io::Error::new(io::ErrorKind::StorageFull, "pages still unwritten");
            return Err(PageError::Io { run, source });
        }
        // The files to sync, by name: the sync runs elsewhere, each file
        // through a handle of its own, while this store goes on writing.
        let files: Vec<(RunId, PathBuf)> = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|segment| (segment.0, self.path(segment)))
            .collect();
        let dir = std::mem::take(&mut self.opened).then(|| self.dir.clone());
        let fs = self.fs.clone();
        let sync = PageSync::new(move || {
            for (run, path) in files {
                let failed = |source| PageError::Io { run, source };
                fs.sync(&fs.open(&path).map_err(failed)?).map_err(failed)?;
            }
            if let Some(dir) = dir {
                fs.sync_dir(&dir)
                    .map_err(|source| PageError::Io { run: 0, source })?;
            }
            Ok(())
        });
        self.checkpoints += 1;
        let forgotten: Vec<Segment> = std::mem::take(&mut self.forgotten).into_iter().collect();
        self.releasable.insert(self.checkpoints, forgotten);
        Ok(Checkpoint {
            number: self.checkpoints,
            sync,
        })
    }

    fn release(&mut self, checkpoint: u64) {
        let later = self.releasable.split_off(&(checkpoint + 1));
        for segment in std::mem::replace(&mut self.releasable, later)
            .into_values()
            .flatten()
        {
            self.open.remove(&segment);
            self.dirty.remove(&segment);
            let path = self.path(segment);
            if let Err(error) = self.fs.remove(&path)
                && error.kind() != io::ErrorKind::NotFound
            {
                warn!(path = %path.display(), %error, "a page file could not be deleted");
            }
        }
    }
}

/// `RUN.SEGMENT`.
fn parse_name(name: &str) -> Option<Segment> {
    let (run, segment) = name.split_once('.')?;
    Some((run.parse().ok()?, segment.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::super::tokio_io::StdFs;
    use super::*;

    /// A store of 16-byte segments in a fresh directory.
    fn store() -> (tempfile::TempDir, FilePages<StdFs>) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FilePages::open(StdFs, dir.path().join("pages"), 16);
        store.retain(&[]).unwrap();
        (dir, store)
    }

    /// Takes a checkpoint and makes it durable; its number.
    fn checkpoint(store: &mut FilePages<StdFs>) -> u64 {
        let checkpoint = store.checkpoint().unwrap();
        checkpoint.sync.run().unwrap();
        checkpoint.number
    }

    fn files(store: &FilePages<StdFs>) -> Vec<String> {
        store.fs.list(&store.dir).unwrap()
    }

    #[test]
    fn a_run_spans_segments_and_reads_back_from_anywhere() {
        let (_dir, mut store) = store();
        store.write(7, 0, b"0123456789");
        store.write(7, 10, b"abcdefghijklmnopqrstuvwxyz");
        assert_eq!(files(&store), ["7.0", "7.1", "7.2"]);
        assert_eq!(store.read(7, 8, 12).unwrap(), b"89abcdefghij");
        assert_eq!(store.read(7, 30, 6).unwrap(), b"uvwxyz");
    }

    /// However many runs are written between checkpoints (a thousand
    /// subscriptions paging at once), the store keeps at most
    /// `OPEN_FILES_MAX` files open: written ones too, which the checkpoint
    /// opens again to sync.
    #[test]
    fn many_runs_written_at_once_keep_a_bounded_number_of_files_open() {
        let (_dir, mut store) = store();
        let runs = OPEN_FILES_MAX as u64 + 50;
        for run in 1..=runs {
            store.write(run, 0, &run.to_be_bytes());
            assert!(
                store.open.len() <= OPEN_FILES_MAX,
                "{} open",
                store.open.len()
            );
        }
        assert_eq!(store.dirty.len() as u64, runs);
        checkpoint(&mut store);
        assert!(store.dirty.is_empty());
        for run in 1..=runs {
            assert_eq!(store.read(run, 0, 8).unwrap(), run.to_be_bytes());
        }
    }

    #[test]
    fn a_forgotten_segment_goes_only_once_a_later_checkpoint_is_durable() {
        let (_dir, mut store) = store();
        store.write(7, 0, &[1; 40]);
        let before = checkpoint(&mut store);
        store.forget(7, 33);
        // A snapshot from before the forgetting may still be recovered from.
        store.release(before);
        assert_eq!(files(&store), ["7.0", "7.1", "7.2"]);
        let after = checkpoint(&mut store);
        store.release(after);
        // Whole segments only: the third holds bytes still needed.
        assert_eq!(files(&store), ["7.2"]);
        store.forget(7, 40);
        let all = checkpoint(&mut store);
        store.release(all);
        assert_eq!(files(&store), Vec::<String>::new());
    }

    #[test]
    fn recovery_keeps_the_runs_the_snapshot_names_as_far_as_it_names_them() {
        let (dir, mut store) = store();
        store.write(7, 0, &[7; 40]);
        store.write(8, 0, &[8; 10]);
        store.write(9, 0, &[9; 10]);
        checkpoint(&mut store);
        drop(store);
        // The snapshot knew run 7 up to 36, from 20, and run 8; not run 9.
        let mut store = FilePages::open(StdFs, dir.path().join("pages"), 16);
        store.retain(&[(7, 20, 36), (8, 0, 10)]).unwrap();
        assert_eq!(files(&store), ["7.1", "7.2", "8.0"]);
        let last = store.open[&(7, 2)].metadata().unwrap();
        assert_eq!(last.len(), 4, "what followed the snapshot's end is cut");
        assert_eq!(store.read(7, 20, 16).unwrap(), [7; 16]);
    }
}
