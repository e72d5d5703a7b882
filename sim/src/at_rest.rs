//! Corruption at rest: a bit flipped in a broker's log files while its host
//! is down, as a failing disk or a stray write would leave it.
//!
//! The nemesis arms a flip when it crashes the host; the host's factory
//! makes it just before the broker starts (turmoil's file system can only be
//! touched from inside the host). The broker must then refuse to start,
//! naming the damage, rather than serve or silently drop what it had
//! acknowledged. A single node has no second copy to repair from, so the
//! simulator then plays the operator who restores the disk from a backup: the
//! next start puts the byte back. Only if the broker started on the flipped
//! byte does it stay flipped, and the checker then sees whatever the broker
//! made of it (a lost or phantom message).
//!
//! The same switch flips a bit while the broker runs
//! ([`AtRest::arm_running`]), in data the broker has fsynced and never
//! writes again (a closed segment, a snapshot), which it reads back only at
//! its next start: the broker reads its log at start only (recovery), and
//! while it runs it only appends. The host's side line makes the flip
//! ([`AtRest::flips_while_running`]), from inside the host; what follows at
//! the next start is as for a flip at rest. And it can damage a cluster
//! node's votes file at rest ([`AtRest::arm_votes`]): one bit, so one of
//! its two copies, which the node must do without.
//!
//! A cluster node keeps its Raft write-ahead log in the same log format
//! under another directory; the flip lands in whichever the node has. A
//! cluster node does not refuse: it cuts its log back at the damage and
//! rejoins from its peers, which hold copies, voting again only once it has
//! caught up. So the flip stays, and the checker sees whether anything
//! accepted was lost and whether the rejoin ended.

use std::cell::{Cell, RefCell};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sluice::io::{File, Io, OpenMode, TurmoilIo};
use sluice::log::LogError;
use sluice::node::NodeError;
use sluice::server::ServerError;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use turmoil::fs::shim::std::fs as sync_fs;

/// Where a broker keeps its log, under its data directory: a single node's
/// log, or a cluster node's Raft log (each has one of them; the first that
/// exists is the one).
const LOG_DIRS: [&str; 2] = ["/data/log", "/data/raft"];
/// A cluster node's votes file (`sluice::node::cluster`'s `VOTES_FILE`
/// under its data directory).
const VOTES_FILE: &str = "/data/votes";

/// One flipped bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flip {
    /// The segment or snapshot.
    pub file: PathBuf,
    /// The byte.
    pub offset: u64,
    /// The bit's mask within it.
    pub mask: u8,
}

/// Where a host's corruption stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum State {
    /// Nothing to do.
    #[default]
    Idle,
    /// Flip a bit at the next start; `pick` chooses which, over every byte
    /// of every log file, or of the votes file.
    Armed { pick: u64, votes: bool },
    /// Flipped; the broker has not yet said whether it noticed.
    Flipped(Flip),
    /// Flipped while the broker ran (or started): the start under way may
    /// have read the file before the flip, so only the next start tells.
    FlippedRunning(Flip),
    /// The broker refused to start on the flip: the next start restores it.
    Detected(Flip),
}

/// A broker host's corruption-at-rest switch, shared by the nemesis (which
/// arms it) and the host's factory (which acts on it).
#[derive(Debug, Default)]
pub struct AtRest {
    state: RefCell<State>,
    /// A flip to make while the broker runs, `pick` choosing which.
    running: Cell<Option<u64>>,
    /// Wakes the host's side line when `running` is armed.
    wake: Notify,
}

impl AtRest {
    /// Arms a flip of the log for the host's next start.
    pub fn arm(&self, pick: u64) {
        *self.state.borrow_mut() = State::Armed { pick, votes: false };
    }

    /// Arms damage to the votes file for the host's next start: a flipped
    /// bit, or, if `pick`'s top bit is set, a valid file with no ballot.
    pub fn arm_votes(&self, pick: u64) {
        *self.state.borrow_mut() = State::Armed { pick, votes: true };
    }

    /// Arms a flip to make at once, while the broker runs (by
    /// [`AtRest::flips_while_running`], in the host).
    pub fn arm_running(&self, pick: u64) {
        self.running.set(Some(pick));
        self.wake.notify_one();
    }

    /// The host's side line: makes each flip armed while the broker runs,
    /// reporting what it did to `report`. Never returns. A flip makes no
    /// await point: the broker cannot remove or write the file half-way.
    pub async fn flips_while_running(&self, report: impl Fn(String)) {
        loop {
            self.wake.notified().await;
            let Some(pick) = self.running.take() else {
                continue;
            };
            report(match flip_running(pick) {
                Ok(Some(flip)) => {
                    let what = format!(
                        "corruption while running: flipped bit {:#04x} of byte {} of {}",
                        flip.mask,
                        flip.offset,
                        flip.file.display()
                    );
                    *self.state.borrow_mut() = State::FlippedRunning(flip);
                    what
                }
                Ok(None) => "corruption while running: no closed segment or snapshot".to_owned(),
                Err(error) => format!("corruption while running: failed: {error}"),
            });
        }
    }

    /// True if the broker refused to start on a flip that is still there:
    /// time for the operator to restore the disk and restart it.
    pub fn awaits_restore(&self) -> bool {
        matches!(*self.state.borrow(), State::Detected(_))
    }

    /// Called by the host's factory before the broker starts: makes an
    /// armed flip, or restores a detected one. Returns what it did, for the
    /// history.
    ///
    /// # Errors
    ///
    /// If the log files cannot be read or written back.
    pub async fn before_start(&self) -> std::io::Result<Option<String>> {
        let state = self.state.borrow().clone();
        match state {
            State::Idle => Ok(None),
            State::Armed { pick, votes: true } if pick >> 63 == 1 => {
                *self.state.borrow_mut() = State::Idle;
                stale_votes().await
            }
            State::Armed { pick, votes } => {
                let chosen = if votes {
                    choose_votes(pick).await?
                } else {
                    choose(pick).await?
                };
                let Some(flip) = chosen else {
                    *self.state.borrow_mut() = State::Idle;
                    return Ok(Some("corruption at rest: no log file to flip".to_owned()));
                };
                apply(&flip).await?;
                let what = format!(
                    "corruption at rest: flipped bit {:#04x} of byte {} of {}",
                    flip.mask,
                    flip.offset,
                    flip.file.display()
                );
                *self.state.borrow_mut() = State::Flipped(flip);
                Ok(Some(what))
            }
            // The last start ended before the broker either listened (which
            // would have made it Idle: it took the log as it was) or refused
            // the flip (Detected): it stopped for another reason, such as
            // an fsync that failed, before reading its log. This start
            // meets the flip again, and its fate is still to be seen.
            State::Flipped(_) => Ok(None),
            State::FlippedRunning(flip) => {
                *self.state.borrow_mut() = State::Flipped(flip);
                Ok(None)
            }
            State::Detected(flip) => {
                apply(&flip).await?;
                *self.state.borrow_mut() = State::Idle;
                Ok(Some(format!(
                    "restored byte {} of {} from a backup",
                    flip.offset,
                    flip.file.display()
                )))
            }
        }
    }

    /// Called when the broker listens (its recovery passed): a flip it
    /// started on went unnoticed or was cut off as a torn tail. A flip made
    /// while it started waits for the next start.
    pub fn on_ready(&self) -> Option<String> {
        let flip = match self.state.take() {
            State::Flipped(flip) => flip,
            other => {
                self.state.replace(other);
                return None;
            }
        };
        Some(format!(
            "corruption at rest: broker started on the flipped byte {} of {}",
            flip.offset,
            flip.file.display()
        ))
    }

    /// Called when the broker's server returned: a refusal to start on the
    /// flip is remembered, so that the next start restores the byte.
    pub fn on_stop(&self, result: &Result<(), ServerError>) {
        let detected = matches!(
            result,
            Err(ServerError::Node(NodeError::Log(LogError::Corrupt { .. })))
        );
        let mut state = self.state.borrow_mut();
        if let (true, State::Flipped(flip) | State::FlippedRunning(flip)) = (detected, &*state) {
            *state = State::Detected(flip.clone());
        }
    }
}

/// The bit `pick` names among the bytes of the segments and snapshots, in
/// name order; `None` if the log has no bytes yet.
///
/// The last record of the newest segment is left alone: damage there looks
/// exactly like a torn write, which recovery must cut, and a single node
/// has no second copy to tell the two apart by (the log's documented limit).
async fn choose(pick: u64) -> std::io::Result<Option<Flip>> {
    let mut paths = Vec::new();
    for dir in LOG_DIRS {
        match TurmoilIo.read_dir(Path::new(dir)).await {
            Ok(found) => {
                paths = found;
                break;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    let newest_segment = paths
        .iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .max()
        .cloned();
    let mut files = Vec::new();
    for path in paths {
        let is_log = path
            .extension()
            .is_some_and(|ext| ext == "seg" || ext == "snap");
        if !is_log {
            continue;
        }
        let contents = TurmoilIo.read_file(&path).await?;
        let len = if Some(&path) == newest_segment.as_ref() {
            last_record_start(&contents)
        } else {
            contents.len()
        } as u64;
        files.push((path, len));
    }
    Ok(pick_bit(files, pick))
}

/// The bit `pick` chooses among the first `len` bytes of each file, all
/// counted alike; `None` if there are no bytes.
fn pick_bit(files: Vec<(PathBuf, u64)>, pick: u64) -> Option<Flip> {
    let total: u64 = files.iter().map(|(_, len)| len).sum();
    if total == 0 {
        return None;
    }
    let mut offset = pick % total;
    let mask = 1u8 << ((pick / total) % 8);
    for (file, len) in files {
        if offset < len {
            return Some(Flip { file, offset, mask });
        }
        offset -= len;
    }
    unreachable!("offset < total, the sum of the lengths")
}

/// Replaces the votes file, if there is one, with a valid one that holds
/// no ballot: damage no checksum can see, as a file system that lost the
/// file's latest replacements would show at worst. The node must then go by
/// the hard state its Raft log holds, and vote no twice in a term.
async fn stale_votes() -> std::io::Result<Option<String>> {
    let path = Path::new(VOTES_FILE);
    match TurmoilIo.read_file(path).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some("corruption at rest: no votes file".to_owned()));
        }
        Err(error) => return Err(error),
    }
    let empty = sluice::raft::votes::contents(&sluice::raft::votes::Ballots::new());
    sluice::io::replace_file(&TurmoilIo, path, &empty).await?;
    Ok(Some(format!(
        "corruption at rest: {VOTES_FILE} replaced by a valid one with no ballot"
    )))
}

/// The bit `pick` names in the votes file; `None` if there is none yet.
/// One bit damages one of its two copies.
async fn choose_votes(pick: u64) -> std::io::Result<Option<Flip>> {
    let file = PathBuf::from(VOTES_FILE);
    let len = match TurmoilIo.read_file(&file).await {
        Ok(contents) => contents.len() as u64,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    if len == 0 {
        return Ok(None);
    }
    let offset = pick % len;
    let mask = 1u8 << ((pick / len) % 8);
    Ok(Some(Flip { file, offset, mask }))
}

/// Flips the bit `pick` names among the bytes the running broker has
/// fsynced and will not write again: its closed segments (every one but the
/// newest) and snapshots, in name order; `None` if it has none. Made with
/// turmoil's synchronous file calls, so that nothing of the broker runs in
/// between.
fn flip_running(pick: u64) -> std::io::Result<Option<Flip>> {
    let mut paths = Vec::new();
    for dir in LOG_DIRS {
        match sync_fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries {
                    paths.push(entry?.path());
                }
                break;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    paths.sort();
    let is = |path: &Path, ext: &str| path.extension().is_some_and(|e| e == ext);
    let newest_segment = paths.iter().filter(|p| is(p, "seg")).max().cloned();
    let mut files = Vec::new();
    for path in paths {
        let closed = is(&path, "seg") && Some(&path) != newest_segment.as_ref();
        if closed || is(&path, "snap") {
            let len = sync_fs::metadata(&path)?.len();
            files.push((path, len));
        }
    }
    let Some(flip) = pick_bit(files, pick) else {
        return Ok(None);
    };
    apply_now(&flip)?;
    Ok(Some(flip))
}

/// Flips the bit in place, durably, with no await point.
fn apply_now(flip: &Flip) -> std::io::Result<()> {
    let file = sync_fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&flip.file)?;
    let mut byte = [0u8];
    file.read_at(&mut byte, flip.offset)?;
    byte[0] ^= flip.mask;
    file.write_at(&byte, flip.offset)?;
    file.sync_all()
}

/// Where the last whole record of a segment starts, walking its frames
/// (`len u32 | crc32c u32 | payload` after a 24-byte header, as
/// `sluice::log` documents); the header's end if it holds none.
fn last_record_start(segment: &[u8]) -> usize {
    const HEADER_BYTES: usize = 24;
    const FRAME_HEADER_BYTES: usize = 8;
    let mut start = HEADER_BYTES.min(segment.len());
    let mut last = start;
    while let Some(len) = segment
        .get(start..start + 4)
        .and_then(|len| <[u8; 4]>::try_from(len).ok())
    {
        let len = u32::from_be_bytes(len) as usize;
        let end = start + FRAME_HEADER_BYTES + len;
        if len == 0 || end > segment.len() {
            break;
        }
        last = start;
        start = end;
    }
    last
}

/// Flips (or flips back) the bit, durably.
async fn apply(flip: &Flip) -> std::io::Result<()> {
    let mut contents = match TurmoilIo.read_file(&flip.file).await {
        Ok(contents) => contents,
        // Removed since (a snapshot made a flipped segment redundant).
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    let index = usize::try_from(flip.offset).map_err(std::io::Error::other)?;
    let Some(byte) = contents.get_mut(index) else {
        // The broker cut the file shorter since: nothing there to flip.
        return Ok(());
    };
    *byte ^= flip.mask;
    let mut file = TurmoilIo.open(&flip.file, OpenMode::Truncate).await?;
    file.write_all(&contents).await?;
    file.sync_all().await
}
