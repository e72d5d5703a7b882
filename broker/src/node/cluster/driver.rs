//! The clustered node's task: a thin driver around its sans-IO core
//! ([`ClusterCore`]). It owns everything the core must not: the channels
//! from connections and from the Raft groups, the groups' handle, the
//! connections' channels, the clock and the timer.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::info;

use super::core::{ClusterCore, ToGroups};
use super::{RAFT_DIR, TICK, TIMING, VOTES_FILE, next_origin};
use crate::io::{self as seam, Io};
use crate::node::{Inboxes, NodeError, NodeHandle, NodeSettings, Now, Request};
use crate::raft::group::{self, Committed, GroupsConfig, GroupsHandle, Status};
use crate::raft::replica::NodeId;
use crate::raft::transport::TransportConfig;
use crate::raft::wal::GroupId;

/// The most requests, or committed entries, handled per wake-up, so that a
/// flood of one cannot hold back the other.
const PER_WAKE: usize = 256;

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
    let groups: Vec<GroupId> = (1..=cluster.groups_or_default()).collect();
    let groups_config = GroupsConfig {
        node_id,
        groups: groups.clone(),
        voters,
        timing: TIMING,
        tick: TICK,
        seed: config.seed,
        votes: config.data_dir.join(VOTES_FILE),
        plants: config.plants,
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
    let core = ClusterCore::new(settings, origin, &groups, Now::read(&io));
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
    Ok((NodeHandle { requests }, run))
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
    core: ClusterCore,
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
        loop {
            let timeout = self.core.poll_timeout();
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => {
                        // One reading of the clocks for the whole burst.
                        let now = Now::read(&self.io);
                        self.on_request(now, request);
                        for _ in 1..PER_WAKE {
                            let Ok(request) = requests.try_recv() else { break };
                            self.on_request(now, request);
                        }
                    }
                    // Every handle is gone: the broker is stopping. What is
                    // not applied yet gets no outcome; its connections have
                    // closed. It is dropped, settles included, where the
                    // single node finishes its pipeline first (issue 12).
                    None => return Ok(()),
                },
                Some(first) = committed.recv() => {
                    let mut burst = vec![first];
                    while burst.len() < PER_WAKE {
                        let Ok(next) = committed.try_recv() else { break };
                        burst.push(next);
                    }
                    self.core.handle_committed(Now::read(&self.io), burst)?;
                }
                Ok(()) = self.status.changed() => {
                    let status = self.status.borrow_and_update().clone();
                    self.core.handle_status(Now::read(&self.io), status);
                }
                () = seam::sleep_until(timeout) => self.core.handle_timeout(Now::read(&self.io)),
            }
            self.carry_out();
        }
    }

    /// Hands a request to the core, but for what it cannot take: a
    /// connection's channel, and the queries, answered from the core.
    fn on_request(&mut self, now: Now, request: Request) {
        match request {
            Request::Register { conn, inbox } => self.inboxes.register(conn, inbox),
            // The asker may have given up waiting: nothing to do then.
            Request::QueueInfo { reply } => {
                let _ = reply.send(self.core.queue_info());
            }
            Request::ReplicaStatuses { reply } => {
                let _ = reply.send(self.core.replica_status());
            }
            Request::Disconnect { conn } => {
                self.core.handle_request(now, Request::Disconnect { conn });
                self.inboxes.forget(conn);
            }
            request => self.core.handle_request(now, request),
        }
    }

    /// Sends what the core has for connections and for the groups.
    fn carry_out(&mut self) {
        while let Some((conn, message)) = self.core.poll_to_connection() {
            self.inboxes.send(conn, message);
        }
        while let Some(ask) = self.core.poll_to_groups() {
            match ask {
                ToGroups::Propose(group, entry) => {
                    self.groups.propose(group, entry);
                }
                ToGroups::Compact {
                    group,
                    index,
                    state,
                    keep,
                } => {
                    self.groups.compact(group, index, state, keep);
                }
            }
        }
    }
}
