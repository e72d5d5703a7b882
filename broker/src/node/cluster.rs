//! The clustered node's task: a thin driver around the node core
//! ([`Core`]) over the Raft commit step, used when cluster peers are
//! configured. Clients see the same broker as on a single node;
//! underneath, every queue lives in one of K Raft data groups that every
//! node is a member of (`node::placement` says which).
//!
//! The driver owns what the core must not: the channels from connections
//! and from the Raft groups, the groups' handle, the clock and the timer.
//! It hands the groups the core's proposals and compactions, and the core
//! what the groups commit and who leads them.
//!
//! - **Application.** Every node applies the committed entries of every
//!   group in log order, and so computes the same effects; each acts on
//!   those that concern its own links: it sends a delivery assigned to one
//!   of its consumers, and answers a publish it proposed (`accepted` once
//!   the enqueue is committed, on a majority's disks, and applied here).
//! - **Failures.** Items that are not applied are proposed again, in order,
//!   when the group's leader changes or after a while; the group skips
//!   duplicates (`node::state`). A producer gets no credit for a queue
//!   whose group has no leader it knows of, so a partitioned minority stops
//!   taking messages. The leader of a group detaches the consumers of a
//!   node it has not heard from for a while, and a node detaches the
//!   consumers it registered before it restarted: their messages return to
//!   the queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raft::eraftpb::EntryType;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::core::{Commit, Core, Step, ToGroups};
use super::origin::next_origin;
use super::{Inboxes, NodeError, NodeHandle, NodeSettings, Now, Request};
use crate::io::{self as seam, Io};
use crate::raft::group::{self, Committed, GroupsConfig, GroupsHandle, Status};
use crate::raft::replica::{NodeId, Timing};
use crate::raft::transport::TransportConfig;
use crate::raft::wal::GroupId;

/// The Raft write-ahead log's directory inside the data directory.
const RAFT_DIR: &str = "raft";

/// Each Raft group's term and vote, kept apart from the Raft log
/// (`raft::votes`).
const VOTES_FILE: &str = "votes";

/// How long a Raft tick is. With [`TIMING`], a leader heartbeats every
/// 100 ms and a follower campaigns after 0.5–1 s without one.
const TICK: Duration = Duration::from_millis(50);

/// Election and heartbeat lengths in [`TICK`]s; a peer silent for 3 s is
/// unreachable, and its consumers are detached.
const TIMING: Timing = Timing {
    election_ticks: 10,
    heartbeat_ticks: 2,
    peer_timeout_ticks: 60,
};

/// How long a stopping node waits for what it proposed to be applied.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The most committed entries handled per wake-up, so that a flood of them
/// cannot hold back requests.
const COMMITS_PER_WAKE: usize = 256;

/// Opens the Raft log, starts the groups and the transport, and returns a
/// handle to the node plus the task to run it.
///
/// # Errors
///
/// [`NodeError`] if the incarnation cannot be counted, or the groups cannot
/// start.
pub async fn start<I: Io>(
    io: I,
    settings: NodeSettings,
) -> Result<
    (
        NodeHandle,
        impl Future<Output = Result<(), NodeError>> + Send,
    ),
    NodeError,
> {
    let config = &settings.config;
    let cluster = &config.cluster;
    let node_id = cluster.node_id;
    let origin = next_origin(&io, &config.data_dir, node_id)
        .await
        .map_err(NodeError::Incarnation)?;
    let mut voters: Vec<NodeId> = cluster.peers.iter().map(|peer| peer.id).collect();
    voters.push(node_id);
    voters.sort_unstable();
    let groups: Vec<GroupId> = (1..=Core::group_count(Step::Raft, &settings)).collect();
    let groups_config = GroupsConfig {
        node_id,
        groups: groups.clone(),
        voters,
        timing: TIMING,
        tick: TICK,
        seed: config.seed,
        votes: config.data_dir.join(VOTES_FILE),
        plants: config.plants,
        metrics: settings.metrics.clone(),
    };
    let transport = TransportConfig {
        node_id,
        listen: cluster.listen,
        peers: cluster
            .peers
            .iter()
            .map(|peer| (peer.id, peer.address.clone()))
            .collect(),
        secret: Arc::from(cluster.secret.as_bytes()),
        seed: config.seed,
    };
    let raft_dir = config.data_dir.join(RAFT_DIR);
    let (handle, committed, task) = group::start(io.clone(), &raft_dir, groups_config, transport)
        .await
        .map_err(NodeError::Groups)?;
    info!(node_id, %origin, groups = groups.len(), "joined the cluster");
    let (requests, inbox) = mpsc::unbounded_channel();
    let core = Core::new(settings, Step::Raft, origin, Now::read(&io));
    let node = NodeHandle {
        requests,
        groups: Some(handle.probe()),
    };
    let driver = Driver {
        status: handle.status(),
        io,
        core,
        groups: handle,
        inboxes: Inboxes::default(),
    };
    let run = async move {
        let mut task = task;
        let result = tokio::select! {
            result = driver.run(inbox, committed) => result,
            ended = &mut task => return groups_ended(ended),
        };
        // The driver is gone, and with it the groups' last handle: they
        // stop too, and the node has stopped only once they have.
        result.and(groups_ended(task.await))
    };
    Ok((node, run))
}

/// The node's result for how the groups' task ended.
fn groups_ended(
    ended: Result<Result<(), group::GroupError>, tokio::task::JoinError>,
) -> Result<(), NodeError> {
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(NodeError::Groups(error)),
        Err(_) => Err(NodeError::GroupsPanicked),
    }
}

/// The task's state.
struct Driver<I: Io> {
    io: I,
    core: Core,
    groups: GroupsHandle,
    status: watch::Receiver<Status>,
    inboxes: Inboxes,
}

impl<I: Io> Driver<I> {
    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut committed: mpsc::UnboundedReceiver<(GroupId, Committed)>,
    ) -> Result<(), NodeError> {
        let mut open = true;
        // Once every handle is gone, the node stops when what it proposed
        // is applied, or after this, whichever comes first: without a
        // leader it would never be.
        let mut stop_by = None;
        while open || !self.core.is_idle() {
            let timeout = self.core.poll_timeout();
            tokio::select! {
                request = requests.recv(), if open => match request {
                    Some(request) => {
                        let now = Now::read(&self.io);
                        self.inboxes.hand_over_burst(&mut self.core, now, request, &mut requests);
                    }
                    // Every handle is gone: the broker is stopping. Its
                    // connections have closed, but what they settled and
                    // detached still goes to the groups.
                    None => {
                        open = false;
                        stop_by = Some(self.io.now() + STOP_GRACE);
                        self.core.handle_close();
                    }
                },
                Some(first) = committed.recv() => {
                    let mut burst = vec![first];
                    while burst.len() < COMMITS_PER_WAKE {
                        let Ok(next) = committed.try_recv() else { break };
                        burst.push(next);
                    }
                    let commits = burst.into_iter().map(|(group, committed)| (group, commit(committed)));
                    self.core.handle_committed(Now::read(&self.io), commits)?;
                }
                Ok(()) = self.status.changed() => {
                    let status = self.status.borrow_and_update().clone();
                    self.core.handle_status(Now::read(&self.io), status);
                }
                () = seam::sleep_until(timeout) => self.core.handle_timeout(Now::read(&self.io)),
                () = super::sleep_until(stop_by) => {
                    info!("stopping with proposals not applied: no leader took them in time");
                    return Ok(());
                }
            }
            self.carry_out();
        }
        Ok(())
    }

    /// Sends what the core has for connections and for the groups.
    fn carry_out(&mut self) {
        self.inboxes.deliver(&mut self.core);
        while let Some(ask) = self.core.poll_to_groups() {
            match ask {
                ToGroups::Propose(group, entry) => {
                    self.groups.propose(group, entry.data);
                }
                ToGroups::Compact {
                    group,
                    index,
                    state,
                    keep,
                    pages,
                    ..
                } => {
                    // A cluster's groups keep their pages in memory (they
                    // do not page yet): nothing to wait for.
                    if let Err(error) = pages.run() {
                        warn!(group, %error, "no snapshot: its pages are not durable");
                        continue;
                    }
                    self.groups.compact(group, index, state, keep);
                }
            }
        }
    }
}

/// What the core makes of what a group committed: a Raft entry that is not
/// a normal one (a configuration change) carries no batch.
fn commit(committed: Committed) -> Commit {
    match committed {
        Committed::Entry(entry) => {
            let data = match entry.get_entry_type() {
                EntryType::EntryNormal => entry.data,
                _ => Bytes::new(),
            };
            Commit::Entry {
                index: entry.index,
                data,
            }
        }
        Committed::Snapshot { index, data } => Commit::Snapshot { index, data },
    }
}
