//! Paging: a deep queue keeps the tail of its ready messages in a page
//! store, beside the log, instead of in memory.
//!
//! A queue's messages in memory are its *hot* ones; each rank of its ready
//! messages (see `Queue::rank`) may also have a *run* of paged ones, in
//! seq order, of which memory holds only the counts (and, for those that
//! expire, their expiry). The rules that keep the machine exact, so that
//! what a queue delivers, drops or dead-letters never depends on what is
//! paged:
//!
//! - Only an arrival is paged out, and only behind its rank's run: a run's
//!   seqs ascend, so a run's first seq bounds what memory may hold of its
//!   rank ahead of it.
//! - Whatever reads the messages in order (dispatch, browsing, drop-head,
//!   a move) reads memory only up to that bound, and pages the run in when
//!   it reaches it; whatever names a paged message (a settle replayed
//!   without the credit that delivered it, an expiry) pages its run in up
//!   to it first.
//! - What is paged out is decided from replicated state alone (the
//!   group's budget, each queue's tallies), and a run's offsets follow
//!   from what was written to it, so every member of a group pages the
//!   same messages at the same commands, and encodes the same snapshot.
//!
//! A paged message is written to the store without an fsync: it is in the
//! log already. The store is synced before a snapshot that names its runs
//! is written (see [`Pager::sync`]), and a recovery writes again whatever
//! the log holds after that snapshot.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::Seq;
use super::message::{Message, Tally};
use crate::planted::Plants;

/// Names a run in its group's page store: never reused, even across
/// restarts (the counter is in the snapshot).
pub type RunId = u64;

/// A record's header: `len u32 | crc32c u32`, then `len` bytes.
const RECORD_HEADER: usize = 8;

/// Where paged messages are kept: a byte stream per run, written at its
/// end and read from anywhere.
///
/// A store must read back what was written; one that cannot stops the
/// process (see [`PageError`]): the machine cannot go on exactly without
/// the messages it paged out.
pub trait PageStore: fmt::Debug + Send {
    /// Keeps of what the store holds only the runs `live` names, `(run,
    /// front, end)`: those of the state just recovered from a snapshot.
    /// Anything else is a run the snapshot does not know (dropped since,
    /// or written after it and about to be written again from the log).
    fn retain(&mut self, live: &[(RunId, u64, u64)]) -> Result<(), PageError>;

    /// Writes `record` at `offset` of run `run`. Writes come in order; one
    /// at an offset before the run's end replaces what was there and
    /// everything after it (a recovery writing again what a lost run
    /// wrote past the snapshot).
    fn write(&mut self, run: RunId, offset: u64, record: &[u8]);

    /// Up to `len` bytes of run `run` from `offset`: fewer at its end.
    fn read(&mut self, run: RunId, offset: u64, len: usize) -> Result<Vec<u8>, PageError>;

    /// The state no longer needs run `run`'s bytes before `offset` (any
    /// offset at or past its end: the whole run). The store may free them
    /// once a snapshot taken after this is durable (see
    /// [`PageStore::release`]): until then a recovery may need them.
    fn forget(&mut self, run: RunId, before: u64);

    /// Everything written so far, for a snapshot of the state about to be
    /// taken: the checkpoint's number, and the work that makes it durable,
    /// which must be done before the snapshot is written (off the thread
    /// that applies commands: it may wait on the disk).
    fn checkpoint(&mut self) -> Result<Checkpoint, PageError>;

    /// The snapshot taken at `checkpoint` is durable: what was forgotten
    /// before it may go.
    fn release(&mut self, checkpoint: u64);
}

/// What a snapshot must wait for: see [`PageStore::checkpoint`].
pub struct Checkpoint {
    pub number: u64,
    pub sync: PageSync,
}

/// Makes a checkpoint's pages durable.
pub struct PageSync(Box<dyn FnOnce() -> Result<(), PageError> + Send>);

impl PageSync {
    pub fn new(sync: impl FnOnce() -> Result<(), PageError> + Send + 'static) -> Self {
        Self(Box::new(sync))
    }

    /// Nothing to wait for.
    pub fn done() -> Self {
        Self::new(|| Ok(()))
    }

    /// Does it: blocks on the disk.
    pub fn run(self) -> Result<(), PageError> {
        (self.0)()
    }
}

impl fmt::Debug for PageSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PageSync")
    }
}

/// A page store could not give back what was paged out.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("page store I/O on run {run}: {source}")]
    Io {
        run: RunId,
        #[source]
        source: std::io::Error,
    },
    #[error("run {run} is damaged at offset {offset}")]
    Damaged { run: RunId, offset: u64 },
}

/// What a message held in memory costs besides its body: its entry in its
/// queue's map, its key in the ready order, and the allocator's share of
/// both. Measured on a release build (`docs/performance.md`, "Memory per
/// queued message"): 1,000,000 messages of 24 body bytes held 350 bytes
/// each, about 100 of them the encoded message. Counted so that many small
/// messages (or the copies of a topic's, which share one body) page, as
/// large ones do, rather than fill memory that no limit sees.
pub const MESSAGE_INDEX_BYTES: u64 = 256;

/// When a group pages its queues' arrivals out. The same on every member
/// of a group, as any setting that decides what its state holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// What the group's queues may hold in memory
    /// ([`Pager::memory_bytes`]) before their arrivals are paged out.
    pub group_bytes: u64,
    /// Body bytes a queue holds in memory before its own arrivals are
    /// paged out, whatever the group holds: a shallow queue never pages.
    /// Also about what a page-in reads at a time (at least a message): a
    /// queue holds about as much again of what it paged in.
    pub queue_bytes: u64,
}

impl Paging {
    /// Never pages.
    pub const OFF: Paging = Paging {
        group_bytes: u64::MAX,
        queue_bytes: u64::MAX,
    };
}

impl Default for Paging {
    fn default() -> Self {
        Self::OFF
    }
}

/// A group's paging: its store, its budget, and what its queues hold in
/// memory.
#[derive(Debug)]
pub struct Pager {
    store: Box<dyn PageStore>,
    paging: Paging,
    /// Body bytes of the messages the group's queues hold in memory, a
    /// body that copies share counted once.
    hot_bytes: u64,
    /// The messages the group's queues hold in memory, each copy counted.
    hot_messages: u64,
    /// The bodies of the copies in memory, by their first copy's seq.
    copies: BTreeMap<Seq, Held>,
    /// The id the next run takes.
    next_run: RunId,
    /// Planted bugs: `page-in-drops`. Volatile.
    plants: Plants,
}

impl Default for Pager {
    fn default() -> Self {
        Self::new(Paging::OFF, Box::new(MemoryPages::default()))
    }
}

impl Pager {
    pub fn new(paging: Paging, store: Box<dyn PageStore>) -> Self {
        Self {
            store,
            paging,
            hot_bytes: 0,
            hot_messages: 0,
            copies: BTreeMap::new(),
            next_run: 1,
            plants: Plants::NONE,
        }
    }

    pub(super) fn plant(&mut self, plants: Plants) {
        self.plants = plants;
    }

    /// Its planted bugs.
    pub(super) fn plants(&self) -> Plants {
        self.plants
    }

    /// Goes on with `store` under `paging`, counts kept.
    pub(super) fn use_store(&mut self, paging: Paging, store: Box<dyn PageStore>) {
        self.paging = paging;
        self.store = store;
    }

    /// The id the next run takes, for the snapshot.
    pub(super) fn next_run(&self) -> RunId {
        self.next_run
    }

    /// Restores the run counter from a snapshot.
    pub(super) fn set_next_run(&mut self, next_run: RunId) {
        self.next_run = next_run;
    }

    /// Body bytes held in memory across the group's queues.
    pub fn hot_bytes(&self) -> u64 {
        self.hot_bytes
    }

    /// What the group's queues hold in memory: the bodies, and each
    /// message's index entry ([`MESSAGE_INDEX_BYTES`]).
    pub fn memory_bytes(&self) -> u64 {
        self.hot_messages
            .saturating_mul(MESSAGE_INDEX_BYTES)
            .saturating_add(self.hot_bytes)
    }

    /// Whether a queue holding `queue_hot_bytes` of bodies in memory pages
    /// its next arrival out (if the arrival may be paged at all), `copy` if
    /// it is one of a topic's copies. The group pages once what it holds
    /// in memory reaches its budget; a copy, only once the bodies alone
    /// do: paged, a copy writes a body of its own, while in memory it
    /// shares one. A fan-out whose subscribers fall behind then costs
    /// index entries, which count against the memory watermark, rather
    /// than a body written per subscription (1,000 subscriptions of 2,000
    /// messages wrote 6.5 GB of pages and slowed delivery tenfold).
    pub(super) fn pages_out(&self, queue_hot_bytes: u64, copy: bool) -> bool {
        let held = match copy {
            true => self.hot_bytes,
            false => self.memory_bytes(),
        };
        held >= self.paging.group_bytes && queue_hot_bytes >= self.paging.queue_bytes
    }

    /// Counts in a message a queue now holds in memory. A copy takes the
    /// body that another copy in memory holds, if any: the body is then
    /// held, and counted, once.
    pub(super) fn count_in(&mut self, message: &mut Message) {
        self.hot_messages += 1;
        let Some(first) = message.copy_of else {
            self.hot_bytes += message.size();
            return;
        };
        match self.copies.entry(first) {
            Entry::Occupied(mut held) => {
                let held = held.get_mut();
                debug_assert_eq!(held.body, message.body, "the copies of {first} differ");
                message.body = held.body.clone();
                held.copies += 1;
            }
            Entry::Vacant(vacant) => {
                self.hot_bytes += message.size();
                let body = message.body.clone();
                vacant.insert(Held { body, copies: 1 });
            }
        }
    }

    /// Counts out a message a queue no longer holds in memory: a copy's
    /// body once the last copy goes.
    pub(super) fn count_out(&mut self, message: &Message) {
        assert!(self.hot_messages >= 1, "hot messages underflow");
        self.hot_messages -= 1;
        if let Some(first) = message.copy_of {
            let held = self.copies.get_mut(&first).expect("a copy counted in");
            held.copies -= 1;
            if held.copies > 0 {
                return;
            }
            self.copies.remove(&first);
        }
        assert!(self.hot_bytes >= message.size(), "hot bytes underflow");
        self.hot_bytes -= message.size();
    }

    /// Checks its counts against the messages `in_memory`: every copy
    /// holds its body, and each body counts once.
    pub(super) fn check_counts<'a>(&self, in_memory: impl Iterator<Item = &'a Message>) {
        let mut hot_bytes = 0;
        let mut hot_messages = 0;
        let mut copies: BTreeMap<Seq, u32> = BTreeMap::new();
        for message in in_memory {
            hot_messages += 1;
            let Some(first) = message.copy_of else {
                hot_bytes += message.size();
                continue;
            };
            let held = &self.copies.get(&first).expect("a copy counted in").body;
            assert_eq!(
                held.as_ptr(),
                message.body.as_ptr(),
                "copy of {first} holds its own body"
            );
            let count = copies.entry(first).or_default();
            if *count == 0 {
                hot_bytes += message.size();
            }
            *count += 1;
        }
        assert_eq!(self.hot_bytes, hot_bytes, "bytes in memory");
        assert_eq!(self.hot_messages, hot_messages, "messages in memory");
        let counted: BTreeMap<Seq, u32> = self
            .copies
            .iter()
            .map(|(&first, held)| (first, held.copies))
            .collect();
        assert_eq!(counted, copies, "copies in memory");
    }

    /// Starts a run for a queue's rank.
    pub(super) fn start_run(&mut self, first_seq: Seq) -> Run {
        let id = self.next_run;
        self.next_run += 1;
        Run {
            id,
            front: 0,
            end: 0,
            first_seq,
            last_seq: first_seq,
            all: Tally::ZERO,
            persistent: Tally::ZERO,
            expiring: 0,
        }
    }

    /// Appends a message's encoding (`payload`, which starts with its seq)
    /// to `run`.
    pub(super) fn page_out(&mut self, run: &mut Run, seq: Seq, payload: &[u8], counted: Paged) {
        assert!(
            run.all.count == 0 || seq > run.last_seq,
            "run {} takes seq {seq} after {}",
            run.id,
            run.last_seq
        );
        let mut record = BytesMut::with_capacity(RECORD_HEADER + payload.len());
        record.put_u32(u32::try_from(payload.len()).expect("a message is under 4 GiB"));
        record.put_u32(crc32c::crc32c(payload));
        record.put_slice(payload);
        self.store.write(run.id, run.end, &record);
        if run.all.count == 0 {
            run.first_seq = seq;
        }
        run.end += record.len() as u64;
        run.last_seq = seq;
        run.all.add(counted.size);
        if counted.persistent {
            run.persistent.add(counted.size);
        }
        run.expiring += u64::from(counted.expires);
    }

    /// Reads the records at the front of `run`, about the queue's share
    /// ([`Paging::queue_bytes`]) and at least one, and moves the run's front past them. Each comes
    /// as its payload; the caller counts each out of the run with
    /// [`Run::took`].
    pub(super) fn page_in(&mut self, run: &mut Run) -> Vec<Bytes> {
        assert!(run.front < run.end, "run {} is empty", run.id);
        let mut records = Vec::new();
        let mut offset = run.front;
        let batch = usize::try_from(self.paging.queue_bytes).unwrap_or(usize::MAX);
        let mut read = self.read(run, offset, batch.max(RECORD_HEADER));
        loop {
            if read.len() < RECORD_HEADER {
                break;
            }
            let len = (&read[..4]).get_u32() as usize;
            if read.len() < RECORD_HEADER + len {
                if records.is_empty() {
                    // A single record larger than a page-in: read it whole.
                    read = self.read(run, offset, RECORD_HEADER + len);
                    continue;
                }
                break;
            }
            let crc = (&read[4..8]).get_u32();
            let payload = read.slice(RECORD_HEADER..RECORD_HEADER + len);
            if crc32c::crc32c(&payload) != crc {
                panic!(
                    "{}",
                    PageError::Damaged {
                        run: run.id,
                        offset
                    }
                );
            }
            records.push(payload);
            read.advance(RECORD_HEADER + len);
            offset += (RECORD_HEADER + len) as u64;
            if offset == run.end {
                break;
            }
        }
        assert!(!records.is_empty(), "run {} gave no record", run.id);
        run.front = offset;
        if offset < run.end {
            // The next record's seq, which bounds what memory may hold of
            // the rank (its payload starts with it).
            if read.len() < RECORD_HEADER + 8 {
                read = self.read(run, offset, RECORD_HEADER + 8);
            }
            run.first_seq = (&read[RECORD_HEADER..]).get_u64();
        }
        self.store.forget(run.id, offset);
        records
    }

    fn read(&mut self, run: &Run, offset: u64, len: usize) -> Bytes {
        let len = len.min(usize::try_from(run.end - offset).unwrap_or(usize::MAX));
        match self.store.read(run.id, offset, len) {
            Ok(bytes) if bytes.len() == len => Bytes::from(bytes),
            Ok(_) => panic!(
                "{}",
                PageError::Damaged {
                    run: run.id,
                    offset
                }
            ),
            Err(error) => panic!("{error}"),
        }
    }

    /// A run's messages are gone (purged, paged in, or their queue
    /// deleted).
    pub(super) fn drop_run(&mut self, run: &Run) {
        self.store.forget(run.id, run.end);
    }

    /// See [`PageStore::retain`].
    pub fn retain(&mut self, live: &[(RunId, u64, u64)]) -> Result<(), PageError> {
        self.store.retain(live)
    }

    /// See [`PageStore::checkpoint`].
    pub fn checkpoint(&mut self) -> Result<Checkpoint, PageError> {
        self.store.checkpoint()
    }

    /// See [`PageStore::release`].
    pub fn release(&mut self, checkpoint: u64) {
        self.store.release(checkpoint);
    }
}

/// A body that copies in memory share.
#[derive(Debug)]
struct Held {
    body: Bytes,
    /// How many copies in memory hold it.
    copies: u32,
}

/// What a run counts of a message paged out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Paged {
    pub size: u64,
    pub persistent: bool,
    pub expires: bool,
}

/// A rank's paged messages: the records in `[front, end)` of its stream,
/// in seq order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Run {
    pub id: RunId,
    pub front: u64,
    pub end: u64,
    /// The seq of the record at `front`.
    pub first_seq: Seq,
    /// The seq of the last record.
    pub last_seq: Seq,
    pub all: Tally,
    pub persistent: Tally,
    /// How many of its messages expire: their expiries stay in memory.
    pub expiring: u64,
}

impl Run {
    /// Counts out a message paged in.
    pub fn took(&mut self, counted: Paged) {
        self.all.remove(counted.size);
        if counted.persistent {
            self.persistent.remove(counted.size);
        }
        self.expiring -= u64::from(counted.expires);
    }

    pub fn is_empty(&self) -> bool {
        self.all.count == 0
    }

    /// Whether it may hold message `seq`.
    pub fn spans(&self, seq: Seq) -> bool {
        !self.is_empty() && self.first_seq <= seq && seq <= self.last_seq
    }

    /// Whether it holds any message of this kind.
    pub fn holds(&self, persistent: bool) -> bool {
        if persistent {
            self.persistent.count > 0
        } else {
            self.all.count > self.persistent.count
        }
    }
}

/// A page store in memory, shared by its clones: for tests, and for a
/// group whose budget never pages.
#[derive(Debug, Clone, Default)]
pub struct MemoryPages {
    runs: Arc<Mutex<BTreeMap<RunId, Vec<u8>>>>,
}

impl MemoryPages {
    /// A store that starts with a copy of this one's contents, and goes
    /// its own way.
    pub fn copy(&self) -> Self {
        let runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        Self {
            runs: Arc::new(Mutex::new(runs.clone())),
        }
    }
}

impl PageStore for MemoryPages {
    // Kept whole: a test recovers from any snapshot it took.
    fn retain(&mut self, _live: &[(RunId, u64, u64)]) -> Result<(), PageError> {
        Ok(())
    }

    fn write(&mut self, run: RunId, offset: u64, record: &[u8]) {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = runs.entry(run).or_default();
        let offset = usize::try_from(offset).expect("memory runs fit in memory");
        assert!(offset <= bytes.len(), "run {run} written past its end");
        bytes.truncate(offset);
        bytes.extend_from_slice(record);
    }

    fn read(&mut self, run: RunId, offset: u64, len: usize) -> Result<Vec<u8>, PageError> {
        let runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = runs.get(&run).map_or(&[][..], Vec::as_slice);
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = start.saturating_add(len).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }

    // Kept whole: a test recovers from any snapshot it took.
    fn forget(&mut self, _run: RunId, _before: u64) {}

    fn checkpoint(&mut self) -> Result<Checkpoint, PageError> {
        Ok(Checkpoint {
            number: 0,
            sync: PageSync::done(),
        })
    }

    fn release(&mut self, _checkpoint: u64) {}
}
