//! The single node's task: a thin driver around the node core ([`Core`])
//! over the local commit step, the node's own log. It owns what the core
//! must not: the channel from connections and theirs, the log and its
//! completions, the clock, the timer, and the tasks that write snapshots.
//!
//! The node is one group that only this node proposes to. An entry the
//! core proposes is one log record; it is committed at its LSN once the
//! batch that holds it is fsynced, or refused if the disk is full. At
//! start, the log's snapshot and records are handed to the core as
//! commits, in order, before any request.

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::core::{Commit, Core, Step, ToGroups};
use super::origin::next_origin;
use super::proposer::Entry;
use super::{Inboxes, NodeError, NodeHandle, NodeSettings, Now, PageStores, Request};
use crate::io::{self as seam, Io};
use crate::log::{self, Completion, Log, LogError, Lsn, Ticket};
use crate::queue::{PageError, PageSync};
use crate::raft::wal::GroupId;

/// The log's directory inside the data directory.
const LOG_DIR: &str = "log";

/// Where the node pages deep queues out (see `queue::paging`), inside the
/// data directory.
const PAGES_DIR: &str = "pages";

/// The file inside the data directory that names the format of the log's
/// records, so that a log written by another version of the single node is
/// refused rather than misread.
const FORMAT_FILE: &str = "format";

/// The format: each record is one entry of the node's group, a batch of
/// commands (`node::batch`), and each snapshot a group's state
/// (`node::state`), which names the runs of paged messages in `pages/`.
/// The first format ([`FIRST_FORMAT`]: a record per command, before the
/// node had one core) had no file; the second's snapshots held every
/// message; the third's wrote a topic message's body once per
/// subscription.
const FORMAT: &[u8] = b"sluice single-node log 4\n";

/// How a log of the first format, which had no format file, is named.
const FIRST_FORMAT: &str = "sluice single-node log 1";

/// The single node's one group.
const GROUP: GroupId = 1;

/// Opens the log, recovers the queues from it, and returns a handle to the
/// node plus the task to run it (spawn it; it ends when every handle is
/// dropped, or with an error if the log fails).
pub async fn start<I: Io>(
    io: I,
    mut settings: NodeSettings,
) -> Result<
    (
        NodeHandle,
        impl Future<Output = Result<(), NodeError>> + Send,
    ),
    NodeError,
> {
    let data_dir = settings.config.data_dir.clone();
    let log_dir = data_dir.join(LOG_DIR);
    check_format(&io, &data_dir, &log_dir).await?;
    let origin = next_origin(&io, &data_dir, settings.config.cluster.node_id)
        .await
        .map_err(NodeError::Incarnation)?;
    let (log, recovered) = log::open(io.clone(), &log_dir, settings.log_options()).await?;
    for report in &recovered.repair {
        warn!(
            ?report,
            "log repaired: what followed the damage was dropped"
        );
    }
    let now = Now::read(&io);
    let plants = settings.config.plants;
    let pages_dir = data_dir.join(PAGES_DIR);
    let pages_io = io.clone();
    settings.pages = PageStores::on_disk(move |_| pages_io.page_store(&pages_dir));
    let mut core = Core::new(settings, Step::Local, origin, now);
    let mut last_lsn = 0;
    let snapshot = recovered.snapshot.map(|(Lsn(index), data)| {
        last_lsn = index;
        Commit::Snapshot { index, data }
    });
    let records = recovered.records.len();
    let entries = recovered.records.into_iter().map(|(Lsn(index), data)| {
        last_lsn = index;
        Commit::Entry { index, data }
    });
    let entries: Vec<_> = entries.collect();
    core.handle_committed(now, snapshot.map(|commit| (GROUP, commit)))?;
    // Before the entries are replayed: until a newer snapshot is durable,
    // a crash recovers from this one again, and needs all it names.
    core.keep_pages()?;
    core.handle_committed(now, entries.into_iter().map(|commit| (GROUP, commit)))?;
    info!(records, %origin, "recovered the queues from the log");
    let (requests, inbox) = mpsc::unbounded_channel();
    let (snapshots_done, snapshots) = mpsc::unbounded_channel();
    let (snapshot_jobs, jobs) = mpsc::unbounded_channel();
    io.spawn(write_snapshots(io.clone(), jobs, snapshots_done));
    let driver = Driver {
        io,
        core,
        log,
        in_flight: VecDeque::new(),
        ack_before_fsync: plants.ack_before_fsync().then_some(last_lsn),
        inboxes: Inboxes::default(),
        snapshot_jobs,
    };
    let handle = NodeHandle {
        requests,
        groups: None,
    };
    Ok((handle, driver.run(inbox, snapshots)))
}

/// Refuses a log of another format; names the format of a new one.
async fn check_format<I: Io>(io: &I, data_dir: &Path, log_dir: &Path) -> Result<(), NodeError> {
    let path = data_dir.join(FORMAT_FILE);
    let name = |format: &[u8]| String::from_utf8_lossy(format).trim().to_owned();
    let refuse = |found: String| NodeError::Format {
        data_dir: data_dir.to_owned(),
        found,
        expected: name(FORMAT),
    };
    match io
        .read_file(&path)
        .await
        .map_err(seam::naming("read", &path))
    {
        Ok(format) if format == FORMAT => Ok(()),
        Ok(other) => Err(refuse(name(&other))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let old_log = match io.read_dir(log_dir).await {
                Ok(files) => !files.is_empty(),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
                Err(error) => return Err(NodeError::DataDir(error)),
            };
            if old_log {
                return Err(refuse(FIRST_FORMAT.into()));
            }
            io.create_dir_all(data_dir)
                .await
                .map_err(NodeError::DataDir)?;
            seam::replace_file(io, &path, FORMAT)
                .await
                .map_err(NodeError::DataDir)
        }
        Err(error) => Err(NodeError::DataDir(error)),
    }
}

/// The task's state.
struct Driver<I: Io> {
    io: I,
    core: Core,
    log: Log,
    /// Entries submitted to the log, oldest first, until their batch's
    /// completion.
    in_flight: VecDeque<(Ticket, Bytes)>,
    /// Planted bug `ack-before-fsync`: the index of the last entry, each
    /// committed as soon as it is submitted.
    ack_before_fsync: Option<u64>,
    inboxes: Inboxes,
    /// The snapshots to write, in order (see [`write_snapshots`]).
    snapshot_jobs: mpsc::UnboundedSender<SnapshotJob>,
}

impl<I: Io> Driver<I> {
    /// Runs until every handle is gone and what was proposed is applied,
    /// or the log fails.
    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut snapshots: mpsc::UnboundedReceiver<(u64, Result<(), SnapshotError>)>,
    ) -> Result<(), NodeError> {
        let mut open = true;
        while open || !self.core.is_idle() {
            let timeout = self.core.poll_timeout();
            let outstanding = self.log.outstanding() > 0;
            tokio::select! {
                request = requests.recv(), if open => match request {
                    Some(request) => {
                        let now = Now::read(&self.io);
                        self.inboxes.hand_over_burst(&mut self.core, now, request, &mut requests);
                    }
                    // Every handle is gone: finish what was proposed.
                    None => {
                        open = false;
                        self.core.handle_close();
                    }
                },
                completion = self.log.completion(), if outstanding => {
                    self.on_completion(completion)?;
                }
                // The driver holds a sender: this never ends.
                Some((number, taken)) = snapshots.recv() => self.on_snapshot(number, taken)?,
                () = seam::sleep_until(timeout) => self.core.handle_timeout(Now::read(&self.io)),
            }
            self.carry_out()?;
        }
        Ok(())
    }

    /// Hands the core what a batch of the log's records came to.
    fn on_completion(&mut self, completion: Completion) -> Result<(), NodeError> {
        let mut commits = Vec::new();
        while let Some(&(ticket, _)) = self.in_flight.front()
            && ticket < completion.end()
        {
            let Some((ticket, data)) = self.in_flight.pop_front() else {
                break;
            };
            let commit = match completion.outcome_of(ticket) {
                Some(Ok(Lsn(index))) => Commit::Entry { index, data },
                Some(Err(LogError::NoSpace)) => Commit::Refused(data),
                Some(Err(error)) => return Err(log_failed(error)),
                None => return Err(log_failed(LogError::Closed)),
            };
            commits.push((GROUP, commit));
        }
        self.core.handle_committed(Now::read(&self.io), commits)
    }

    /// Tells the core how snapshot `number` went. Only a full disk may let
    /// a later one through; any other failure means the disk is failing,
    /// and the node stops as for a failed append: a core whose state is
    /// ahead of its log would otherwise refuse every message, waiting for a
    /// snapshot that cannot come.
    fn on_snapshot(
        &mut self,
        number: u64,
        taken: Result<(), SnapshotError>,
    ) -> Result<(), NodeError> {
        let durable = match taken {
            Ok(()) => true,
            Err(SnapshotError::Log(LogError::NoSpace)) => {
                warn!("snapshot refused: the disk is full; asked again later");
                false
            }
            Err(SnapshotError::Log(error)) => return Err(log_failed(error)),
            Err(SnapshotError::Pages(error)) => {
                error!(%error, "the pages could not be synced: stopping, since what is on disk is unknown");
                return Err(NodeError::Pages {
                    group: GROUP,
                    error,
                });
            }
        };
        self.core
            .handle_snapshot(Now::read(&self.io), GROUP, number, durable);
        Ok(())
    }

    /// Sends what the core has for connections, submits what it proposes,
    /// and writes the snapshots it asks for.
    fn carry_out(&mut self) -> Result<(), NodeError> {
        loop {
            if let Some(room) = self.log.snapshot_room() {
                self.core.handle_disk_full(room);
            }
            let mut commits = Vec::new();
            while let Some(ask) = self.core.poll_to_groups() {
                match ask {
                    ToGroups::Propose(_, entry) => {
                        if let Some(commit) = self.submit(entry)? {
                            commits.push((GROUP, commit));
                        }
                    }
                    ToGroups::Compact {
                        index,
                        state,
                        number,
                        pages,
                        ..
                    } => self.snapshot(index, state, number, pages),
                }
            }
            if commits.is_empty() {
                break;
            }
            self.core.handle_committed(Now::read(&self.io), commits)?;
        }
        self.inboxes.deliver(&mut self.core);
        Ok(())
    }

    /// Appends an entry to the log: what is committed at once, if anything.
    /// An entry that enqueues nothing helps free a full disk, so it may use
    /// the log's reserve.
    fn submit(&mut self, entry: Entry) -> Result<Option<Commit>, NodeError> {
        let write = |buf: &mut BytesMut| buf.extend_from_slice(&entry.data);
        let submitted = if entry.enqueues {
            self.log.submit(write)
        } else {
            self.log.submit_reserved(write)
        };
        match submitted {
            Ok(ticket) => match &mut self.ack_before_fsync {
                // PLANTED BUG (`ack-before-fsync`): the entry is committed
                // at the position it will take, before it is durable.
                Some(index) => {
                    *index += 1;
                    let (index, data) = (*index, entry.data);
                    Ok(Some(Commit::Entry { index, data }))
                }
                None => {
                    self.in_flight.push_back((ticket, entry.data));
                    Ok(None)
                }
            },
            Err(LogError::NoSpace) => Ok(Some(Commit::Refused(entry.data))),
            Err(error) => Err(log_failed(error)),
        }
    }

    /// Writes the state as of entry `index` as the log's snapshot, once
    /// the pages it names are durable, so that recovery starts from it and
    /// older segments can go; the core hears how it went, by its `number`.
    fn snapshot(&self, index: u64, state: Bytes, number: u64, pages: PageSync) {
        let write = Box::pin(self.log.snapshot(Lsn(index), state));
        // A driver that is gone no longer needs it written.
        let _ = self.snapshot_jobs.send(SnapshotJob {
            number,
            pages,
            write,
        });
    }
}

/// A snapshot to write: its pages to sync, then its state to the log.
struct SnapshotJob {
    number: u64,
    pages: PageSync,
    write: Pin<Box<dyn Future<Output = Result<(), LogError>> + Send>>,
}

/// Why a snapshot was not written.
enum SnapshotError {
    Log(LogError),
    Pages(PageError),
}

/// Writes snapshots one after another, in the order they were asked for:
/// each waits for its pages' fsyncs (off the node's task: they may take a
/// while), then for the log. Says how each went on `done`.
async fn write_snapshots<I: Io>(
    io: I,
    mut jobs: mpsc::UnboundedReceiver<SnapshotJob>,
    done: mpsc::UnboundedSender<(u64, Result<(), SnapshotError>)>,
) {
    while let Some(job) = jobs.recv().await {
        let pages = job.pages;
        let taken = match io.run_blocking(move || pages.run()).await {
            Ok(()) => job.write.await.map_err(SnapshotError::Log),
            Err(error) => Err(SnapshotError::Pages(error)),
        };
        if done.send((job.number, taken)).is_err() {
            return;
        }
    }
}

/// The node stops: what is on disk is unknown.
fn log_failed(error: LogError) -> NodeError {
    error!(%error, "the log failed: stopping, since what is on disk is unknown");
    NodeError::Log(error)
}
