//! The Raft groups this node hosts, as one task: a [`Replica`] per group,
//! one write-ahead log for all of them, and the node-to-node transport.
//!
//! The task is every replica's owner in the sense of [`super::replica`]: it
//! ticks them on one timer, steps each with what peers send it, proposes
//! what the broker asks, and runs their ready cycles. What a cycle asks to
//! persist is submitted to the shared log without waiting, so one fsync
//! makes the writes of many cycles of every group durable (group commit
//! across groups), and only its completion releases the votes and
//! acknowledgements that vouch for them. Committed entries go to the broker,
//! in each group's log order, on a channel.
//!
//! On the wire a payload is `group u32 BE | raft message (protobuf)`; a
//! message whose claimed sender is not the node the transport authenticated
//! is dropped, except a forwarded proposal.
//!
//! Snapshots bound the log: when the broker hands a group's state at an
//! applied index to [`GroupsHandle::compact`], the replica drops the
//! entries before it, and the task writes the log's own snapshot — every
//! group's latest snapshot, entries after it and hard state, as WAL records
//! — which lets the log delete the segments before it.
//!
//! A failed log write stops the task (like a failed fsync stops the
//! single-node broker): what is on disk is then unknown, and a member that
//! acknowledged what it may not have would break Raft's guarantees.
//!
//! A log found damaged at start (a checksum that fails, not a torn tail) is
//! cut back at the damage, or emptied if even its snapshot is damaged, and
//! every group's member rejoins ([`Replica::rejoin`]): it may have
//! acknowledged entries it no longer holds, so it votes again only once it
//! has caught up from a leader. Each group's term and vote come from the
//! votes file ([`super::votes`]) as well as the log, so the cut cannot make
//! a member forget a vote; the file is written whenever they change, before
//! the messages that vouch for them leave.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use protobuf::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::replica::{NodeId, Output, Replica, ReplicaError, Timing};
use super::transport::{StartError, Transport, TransportConfig};
use super::votes::{self, Ballot, Ballots, VotesError};
use super::wal::{self, GroupId, WalError};
use crate::io::Io;
use crate::log::{self, Log, LogError, LogOptions, Lsn, Ticket};
use crate::metrics::{Metrics, SnapshotEvent};

/// What the groups need to start.
#[derive(Debug, Clone)]
pub struct GroupsConfig {
    /// This node.
    pub node_id: NodeId,
    /// The groups this node is a member of.
    pub groups: Vec<GroupId>,
    /// Every member of every group, this node included.
    pub voters: Vec<NodeId>,
    /// Election and heartbeat lengths, in ticks.
    pub timing: Timing,
    /// How long a tick is.
    pub tick: Duration,
    /// The run's seed: fixes election timeouts.
    pub seed: u64,
    /// The votes file ([`super::votes`]), outside the log's directory.
    pub votes: PathBuf,
    /// Planted bugs for the simulator.
    pub plants: crate::planted::Plants,
    /// Where the Raft log counts its fsyncs, and the groups their snapshots.
    pub metrics: Metrics,
}

/// Why the groups could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The log could not be opened, or a write to it failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A record in the log does not decode.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// raft-rs refused the configuration or the recovered log.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// The node-to-node transport could not start.
    #[error(transparent)]
    Transport(#[from] StartError),
    /// The votes file could not be read or written.
    #[error(transparent)]
    Votes(#[from] VotesError),
    /// The log is damaged and there is no votes file to say which votes
    /// the node cast, so it cannot rejoin safely.
    #[error("{damage}; and {} is missing, so this node's Raft votes are unknown", votes.display())]
    DamagedWithoutVotes {
        /// What is wrong with the log.
        damage: LogError,
        /// The missing votes file.
        votes: PathBuf,
    },
}

/// What this node knows of the groups and its peers, as of the last ready
/// cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Each group's leader, as far as this node knows.
    pub leaders: BTreeMap<GroupId, Option<NodeId>>,
    /// Peers this node has not heard from for
    /// [`Timing::peer_timeout_ticks`]. Only a leader hears from every
    /// member, so only a leader's view is complete.
    pub unreachable: BTreeSet<NodeId>,
    /// Groups whose member here is rejoining after damage to the log: it
    /// does not vote until it has caught up.
    pub rejoining: BTreeSet<GroupId>,
    /// Per peer, the connections this node has dialled to it so far. When
    /// the count grows, what went out on the connection before may have
    /// been lost with it: a proposal forwarded to that peer as leader, for
    /// one, which Raft itself never sends again.
    pub connections: BTreeMap<NodeId, u64>,
}

/// How far a group has come, as this node's member sees it: for metrics
/// and the management API, read at each request ([`GroupsProbe::progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The group.
    pub group: GroupId,
    /// The member's current term.
    pub term: u64,
    /// The last entry it knows committed.
    pub commit_index: u64,
    /// The last entry in its log.
    pub last_index: u64,
    /// While it leads, each other member's matched index (the last entry
    /// known to be in that member's log as in this one); empty otherwise.
    pub matched: BTreeMap<NodeId, u64>,
}

/// What the groups hand the broker, per group, in log order.
#[derive(Debug)]
pub enum Committed {
    /// An entry now committed.
    Entry(Entry),
    /// The group's state as of `index`, from a snapshot (recovered at start,
    /// or sent by the leader to a member that fell behind): the broker's
    /// state for the group becomes `data`, and the entries that follow come
    /// after `index`.
    Snapshot {
        /// The last entry the snapshot covers.
        index: u64,
        /// The broker's state, as it gave it to [`GroupsHandle::compact`].
        data: Bytes,
    },
}

/// What the broker asks of the task.
#[derive(Debug)]
enum Ask {
    Propose(GroupId, Bytes),
    Compact {
        group: GroupId,
        index: u64,
        data: Bytes,
        keep: u64,
    },
    Progress(oneshot::Sender<Vec<Progress>>),
}

/// The broker's side of the running groups.
#[derive(Debug)]
pub struct GroupsHandle {
    asks: mpsc::UnboundedSender<Ask>,
    status: watch::Receiver<Status>,
}

impl GroupsHandle {
    /// Proposes an entry to `group`. It comes back on the committed channel,
    /// on every member, once a quorum has it on disk. On a follower, raft-rs
    /// forwards it to the leader it knows; with no leader known, or if the
    /// forward is lost or leadership moves first, it is dropped and never
    /// committed: the proposer hears nothing, never a false commit. Returns
    /// false if the task has stopped.
    pub fn propose(&self, group: GroupId, data: Bytes) -> bool {
        self.asks.send(Ask::Propose(group, data)).is_ok()
    }

    /// Hands over `group`'s state after applying every entry up to `index`:
    /// the log before it can go (see the module documentation), except the
    /// last `keep` entries, for followers a little behind.
    pub fn compact(&self, group: GroupId, index: u64, data: Bytes, keep: u64) -> bool {
        let ask = Ask::Compact {
            group,
            index,
            data,
            keep,
        };
        self.asks.send(ask).is_ok()
    }

    /// The groups' leaders and the unreachable peers; `changed` on it
    /// wakes when they change.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// A handle that asks for the groups' [`Progress`] without keeping the
    /// task alive: the task stops once the broker's own handle is gone.
    pub fn probe(&self) -> GroupsProbe {
        GroupsProbe(self.asks.downgrade())
    }
}

/// Asks the running groups how far they have come ([`GroupsHandle::probe`]).
#[derive(Debug, Clone)]
pub struct GroupsProbe(mpsc::WeakUnboundedSender<Ask>);

impl GroupsProbe {
    /// Every group's [`Progress`], in group order; empty once the task has
    /// stopped.
    pub async fn progress(&self) -> Vec<Progress> {
        let (reply, answer) = oneshot::channel();
        let asked = self
            .0
            .upgrade()
            .is_some_and(|asks| asks.send(Ask::Progress(reply)).is_ok());
        if !asked {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }
}

/// Opens the node's log in `dir`, recovers every group's replica from it,
/// starts the transport to the other nodes, and starts the task with
/// [`Io::spawn`]. Returns the handle, the channel
/// of committed entries with their group (after a restart, each group starts
/// again from its first entry: the broker's state is rebuilt from them) and
/// the task's result.
///
/// # Errors
///
/// [`GroupError`] if the log cannot be opened or recovered, or the
/// transport cannot start.
pub async fn start<I: Io>(
    io: I,
    dir: &Path,
    config: GroupsConfig,
    transport: TransportConfig,
) -> Result<
    (
        GroupsHandle,
        mpsc::UnboundedReceiver<(GroupId, Committed)>,
        tokio::task::JoinHandle<Result<(), GroupError>>,
    ),
    GroupError,
> {
    let mut ballots = votes::load(&io, &config.votes).await?;
    let (log, recovered) = open_log(&io, dir, &config, &mut ballots).await?;
    let mut ballots = ballots.unwrap_or_default();
    let (transport, inbound) = Transport::start(io.clone(), transport).await?;
    let image = match recovered.snapshot {
        Some((_, image)) => decode_image(image)?,
        None => Vec::new(),
    };
    let records = recovered.records.into_iter().map(|(_, record)| record);
    let mut durable = wal::recover(image.into_iter().chain(records))?;
    let (committed, applied) = mpsc::unbounded_channel();
    let mut replicas = BTreeMap::new();
    for &group in &config.groups {
        // Each group its own election timeouts, so that leaders spread over
        // the nodes rather than all land where the seed favours.
        let seed = config.seed ^ u64::from(group).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut state = durable.remove(&group).unwrap_or_default();
        let ballot = ballots.get(&group).copied().unwrap_or_default();
        // The later of the log's and the file's: each is written before a
        // vote leaves, so either may be ahead after a crash between the two.
        let hard_state = &mut state.hard_state;
        if (ballot.term, ballot.vote) > (hard_state.term, hard_state.vote) {
            hard_state.term = ballot.term;
            hard_state.vote = ballot.vote;
        }
        if let Some(snapshot) = &state.snapshot {
            let recovered = Committed::Snapshot {
                index: snapshot.get_metadata().index,
                data: snapshot.data.clone(),
            };
            let _ = committed.send((group, recovered));
        }
        let mut replica =
            Replica::recover(config.node_id, &config.voters, config.timing, seed, &state)?;
        replica.plant(config.plants);
        // PLANTED BUG (`ignore-damage`): carry on as if nothing was lost.
        if ballot.rejoining && !config.plants.ignore_damage() {
            replica.rejoin();
        }
        ballots.insert(group, ballot_of(&replica));
        replicas.insert(group, replica);
    }
    votes::save(&io, &config.votes, &ballots).await?;
    let (asks, asked) = mpsc::unbounded_channel();
    let (status_tx, status) = watch::channel(Status::default());
    let span = info_span!("raft_groups", node = config.node_id);
    let silent_ticks = config
        .voters
        .iter()
        .filter(|&&voter| voter != config.node_id)
        .map(|&peer| (peer, 0))
        .collect();
    let preferred = config
        .groups
        .iter()
        .map(|&group| (group, preferred_leader(group, &config.voters)))
        .collect();
    let host = Host {
        io: io.clone(),
        last_lsn: None,
        replicas,
        log,
        transport,
        committed,
        persisting: VecDeque::new(),
        silent_ticks,
        preferred,
        ticks: 0,
        heartbeat_ticks: config.timing.heartbeat_ticks,
        peer_timeout_ticks: config.timing.peer_timeout_ticks,
        status: status_tx,
        ballots,
        votes: config.votes,
        ballots_changed: false,
        plants: config.plants,
        metrics: config.metrics,
    };
    let task = io.spawn(host.run(config.tick, inbound, asked).instrument(span));
    Ok((GroupsHandle { asks, status }, applied, task))
}

/// The task's state.
struct Host<I: Io> {
    io: I,
    replicas: BTreeMap<GroupId, Replica>,
    log: Log,
    /// The last record known durable.
    last_lsn: Option<Lsn>,
    transport: Transport,
    committed: mpsc::UnboundedSender<(GroupId, Committed)>,
    /// What was submitted to the log, in order: the record's ticket, its
    /// group and the ready number it persists.
    persisting: VecDeque<(Ticket, GroupId, u64)>,
    /// Ticks since each peer's last message.
    silent_ticks: BTreeMap<NodeId, usize>,
    /// Each group's preferred leader: the groups go round the voters.
    preferred: BTreeMap<GroupId, NodeId>,
    ticks: u64,
    heartbeat_ticks: usize,
    peer_timeout_ticks: usize,
    status: watch::Sender<Status>,
    /// Every group's ballot as the votes file should hold it.
    ballots: Ballots,
    /// The votes file.
    votes: PathBuf,
    /// `ballots` changed since the file was last written.
    ballots_changed: bool,
    /// Planted bugs (`commit-on-minority` concerns the host).
    plants: crate::planted::Plants,
    /// Where the snapshots are counted.
    metrics: Metrics,
}

impl<I: Io> Host<I> {
    async fn run(
        mut self,
        tick: Duration,
        mut inbound: mpsc::Receiver<(NodeId, Bytes)>,
        mut asked: mpsc::UnboundedReceiver<Ask>,
    ) -> Result<(), GroupError> {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick(),
                Some((from, payload)) = inbound.recv() => self.receive(from, payload),
                ask = asked.recv() => match ask {
                    Some(Ask::Propose(group, data)) => self.propose(group, data),
                    Some(Ask::Compact { group, index, data, keep }) => {
                        self.compact(group, index, data, keep)?;
                    }
                    // The asker may have given up waiting.
                    Some(Ask::Progress(reply)) => {
                        let _ = reply.send(self.progress());
                    }
                    // Every handle is gone: the broker has stopped, and a
                    // member left running would go on as this node beside
                    // the one a restart brings up, on the same log.
                    None => return self.finish_writes().await,
                },
                completion = self.log.completion(), if self.log.outstanding() > 0 => {
                    let end = completion.end();
                    let first = completion.outcome?;
                    self.last_lsn = Some(Lsn(first.0 + completion.records - 1));
                    self.on_durable(end)?;
                }
            }
            self.advance_all()?;
            // Before the next event, which may be the log's completion that
            // releases the votes this records.
            if self.ballots_changed {
                votes::save(&self.io, &self.votes, &self.ballots).await?;
                self.ballots_changed = false;
            }
            self.publish_status();
        }
    }

    /// Waits until the log has completed every record submitted to it, so
    /// that nothing of this node is still writing once the task has ended.
    /// What the records vouch for is not sent: the node is stopping.
    async fn finish_writes(mut self) -> Result<(), GroupError> {
        while self.log.outstanding() > 0 {
            self.log.completion().await.outcome?;
        }
        Ok(())
    }

    fn tick(&mut self) {
        self.replicas.values_mut().for_each(Replica::tick);
        self.ticks += 1;
        if self.ticks % PREFERENCE_EVERY_TICKS == 0 {
            for (&group, replica) in &mut self.replicas {
                let preferred = self.preferred[&group];
                // Heard from within a heartbeat or two: alive.
                let alive = self
                    .silent_ticks
                    .get(&preferred)
                    .is_some_and(|&silent| silent <= 2 * self.heartbeat_ticks);
                if alive {
                    replica.prefer_leader(preferred);
                }
            }
        }
        for silent in self.silent_ticks.values_mut() {
            *silent = silent.saturating_add(1);
        }
    }

    /// Tells the broker of leadership, reachability and connection
    /// changes. Updated in place: this runs after every event.
    fn publish_status(&self) {
        self.status.send_if_modified(|status| {
            let mut changed = false;
            for (&group, replica) in &self.replicas {
                let leader = replica.leader();
                if status.leaders.get(&group) != Some(&leader) {
                    match leader {
                        Some(leader) => info!(group, leader, "group leader known"),
                        None => info!(group, "group has no leader"),
                    }
                    status.leaders.insert(group, leader);
                    changed = true;
                }
            }
            let rejoining = || {
                (self.replicas.iter())
                    .filter(|(_, replica)| replica.is_rejoining())
                    .map(|(&group, _)| group)
            };
            if !rejoining().eq(status.rejoining.iter().copied()) {
                status.rejoining = rejoining().collect();
                changed = true;
            }
            for (&peer, &silent) in &self.silent_ticks {
                let dialled = self.transport.connections_to(peer);
                if status.connections.insert(peer, dialled) != Some(dialled) {
                    changed = true;
                }
                let unreachable = silent > self.peer_timeout_ticks;
                if unreachable != status.unreachable.contains(&peer) {
                    if unreachable {
                        status.unreachable.insert(peer);
                    } else {
                        status.unreachable.remove(&peer);
                    }
                    changed = true;
                }
            }
            changed
        });
    }

    fn progress(&self) -> Vec<Progress> {
        self.replicas
            .iter()
            .map(|(&group, replica)| Progress {
                group,
                term: replica.term(),
                commit_index: replica.committed_index(),
                last_index: replica.last_index(),
                matched: replica.matched(),
            })
            .collect()
    }

    fn propose(&mut self, group: GroupId, data: Bytes) {
        let Some(replica) = self.replicas.get_mut(&group) else {
            debug!(group, "proposal for a group this node is not in dropped");
            return;
        };
        if let Err(error) = replica.propose(data.to_vec()) {
            debug!(group, %error, "proposal dropped");
        }
    }

    /// Compacts `group` at `index`, then writes the log's snapshot, which
    /// covers every record known durable: each group's latest snapshot,
    /// entries after it and hard state (which also reflect the records
    /// still on their way, which recovery replays on top, harmlessly).
    fn compact(
        &mut self,
        group: GroupId,
        index: u64,
        data: Bytes,
        keep: u64,
    ) -> Result<(), GroupError> {
        let Some(replica) = self.replicas.get_mut(&group) else {
            return Ok(());
        };
        if let Err(error) = replica.compact(index, data, keep) {
            warn!(group, index, %error, "compaction refused");
            return Ok(());
        }
        self.metrics.group_snapshot(group, SnapshotEvent::Taken);
        let Some(upto) = self.last_lsn else {
            return Ok(());
        };
        let mut image = BytesMut::new();
        for (&group, replica) in &self.replicas {
            let persist = replica.durable_image()?;
            let mut record = BytesMut::new();
            wal::encode(group, &persist, &mut record);
            image.put_u32(u32::try_from(record.len()).map_err(|_| WalError::Invalid("image"))?);
            image.put_slice(&record);
        }
        let snapshot = self.log.snapshot(upto, image.freeze());
        self.io.spawn(async move {
            if let Err(error) = snapshot.await {
                error!(%error, "log snapshot failed; the log keeps growing until the next one");
            }
        });
        Ok(())
    }

    /// Everything submitted before ticket `end` is durable: tells each
    /// group the last of its ready numbers that this covers.
    fn on_durable(&mut self, end: Ticket) -> Result<(), GroupError> {
        let mut durable: BTreeMap<GroupId, u64> = BTreeMap::new();
        while self
            .persisting
            .front()
            .is_some_and(|(ticket, ..)| *ticket < end)
        {
            if let Some((_, group, number)) = self.persisting.pop_front() {
                durable.insert(group, number);
            }
        }
        for (group, number) in durable {
            if let Some(replica) = self.replicas.get_mut(&group) {
                let output = replica.persisted(number);
                self.handle(group, output)?;
            }
        }
        Ok(())
    }

    /// Runs every group's ready cycles until none has anything to do.
    fn advance_all(&mut self) -> Result<(), GroupError> {
        let groups: Vec<GroupId> = self.replicas.keys().copied().collect();
        for group in groups {
            while let Some(replica) = self.replicas.get_mut(&group) {
                let output = replica.advance();
                if output.messages.is_empty()
                    && output.committed.is_empty()
                    && output.persist.is_none()
                {
                    break;
                }
                self.handle(group, output)?;
            }
        }
        Ok(())
    }

    /// A payload from peer `from`: a Raft message for one of our groups,
    /// which must come from the node the transport authenticated.
    fn receive(&mut self, from: NodeId, mut payload: Bytes) {
        let Ok(group) = payload.try_get_u32() else {
            warn!(from, "raft payload without a group dropped");
            return;
        };
        let message = match Message::parse_from_bytes(&payload) {
            Ok(message) => message,
            Err(error) => {
                warn!(from, group, %error, "undecodable raft message dropped");
                return;
            }
        };
        if let Some(silent) = self.silent_ticks.get_mut(&from) {
            *silent = 0;
        }
        // A proposal keeps its proposer as sender while followers forward it
        // to the leader they know, so it may come through another node; it
        // is only data, which vouches for nothing. Any other message must
        // come from the node it names.
        if message.from != from && message.get_msg_type() != MessageType::MsgPropose {
            warn!(
                from,
                group,
                claimed = message.from,
                "raft message from an impostor dropped"
            );
            return;
        }
        let Some(replica) = self.replicas.get_mut(&group) else {
            debug!(
                from,
                group, "raft message for a group this node is not in dropped"
            );
            return;
        };
        if let Err(error) = replica.step(message) {
            debug!(from, group, %error, "raft message refused");
        }
    }

    fn handle(&mut self, group: GroupId, output: Output) -> Result<(), GroupError> {
        for message in output.messages {
            let handed_over = self.send(group, &message);
            if message.get_msg_type() == MessageType::MsgSnapshot
                && let Some(replica) = self.replicas.get_mut(&group)
            {
                replica.snapshot_sent(message.to, handed_over);
                if handed_over {
                    self.metrics.group_snapshot(group, SnapshotEvent::Sent);
                }
            }
        }
        // The broker has gone if these fail: nothing to apply to, and the
        // task ends with the runtime.
        if let Some((index, data)) = output.snapshot {
            self.metrics.group_snapshot(group, SnapshotEvent::Installed);
            let _ = self
                .committed
                .send((group, Committed::Snapshot { index, data }));
        }
        for entry in output.committed {
            let _ = self.committed.send((group, Committed::Entry(entry)));
        }
        if let Some(persist) = output.persist {
            // PLANTED BUG (`commit-on-minority`): a leader's new entries go
            // to the broker at once, before any other member has them.
            if self.plants.commit_on_minority()
                && self.replicas.get(&group).is_some_and(Replica::is_leader)
            {
                for entry in &persist.entries {
                    let _ = self
                        .committed
                        .send((group, Committed::Entry(entry.clone())));
                }
            }
            let ticket = self.log.submit(|buf| wal::encode(group, &persist, buf))?;
            self.persisting.push_back((ticket, group, persist.number));
        }
        if let Some(replica) = self.replicas.get(&group) {
            let ballot = ballot_of(replica);
            if self.ballots.insert(group, ballot) != Some(ballot) {
                self.ballots_changed = true;
            }
        }
        Ok(())
    }

    /// Hands `message` to the transport; false if it was dropped at once.
    fn send(&self, group: GroupId, message: &Message) -> bool {
        let mut payload = BytesMut::with_capacity(4 + message.compute_size() as usize);
        payload.put_u32(group);
        let mut writer = (&mut payload).writer();
        if let Err(error) = message.write_to_writer(&mut writer) {
            warn!(group, %error, "raft message not encodable");
            return false;
        }
        // Raft tolerates a lost message: it retries what matters.
        if let Err(error) = self.transport.send(message.to, payload.freeze()) {
            debug!(group, to = message.to, %error, "raft message dropped");
            return false;
        }
        true
    }
}

/// Opens the Raft log in `dir`. A damaged one is cut back at the damage, or
/// emptied if even its snapshot is, after marking every group rejoining in
/// `ballots` and the votes file (so that a crash during the repair still
/// rejoins).
async fn open_log<I: Io>(
    io: &I,
    dir: &Path,
    config: &GroupsConfig,
    ballots: &mut Option<Ballots>,
) -> Result<(Log, log::Recovered), GroupError> {
    // A refused batch must stop the log: the batches submitted after it
    // may commit what it held.
    let options = LogOptions {
        stop_at_no_space: true,
        metrics: config.metrics.clone(),
        ..LogOptions::default()
    };
    let damage = match log::open(io.clone(), dir, options.clone()).await {
        Ok(opened) => return Ok(opened),
        Err(damage @ LogError::Corrupt { .. }) => damage,
        Err(error) => return Err(error.into()),
    };
    let Some(ballots) = ballots else {
        let votes = config.votes.clone();
        return Err(GroupError::DamagedWithoutVotes { damage, votes });
    };
    error!(%damage, "the Raft log is damaged: cutting it back and rejoining every group");
    for &group in &config.groups {
        ballots.entry(group).or_default().rejoining = true;
    }
    votes::save(io, &config.votes, ballots).await?;
    let repair = LogOptions {
        repair: true,
        ..options.clone()
    };
    match log::open(io.clone(), dir, repair).await {
        Ok(opened) => Ok(opened),
        Err(damage @ LogError::Corrupt { .. }) => {
            error!(%damage, "the Raft log cannot be repaired: starting from an empty one");
            log::discard(io, dir).await?;
            Ok(log::open(io.clone(), dir, options).await?)
        }
        Err(error) => Err(error.into()),
    }
}

/// What the votes file should hold for `replica`.
fn ballot_of(replica: &Replica) -> Ballot {
    Ballot {
        term: replica.term(),
        vote: replica.vote(),
        rejoining: replica.is_rejoining(),
    }
}

/// How often, in ticks, a leader checks whether to hand its group to the
/// group's preferred leader: rarely enough that a leadership change after a
/// failure settles first.
const PREFERENCE_EVERY_TICKS: u64 = 100;

/// The member that should lead `group`: group 1 the first voter, group 2
/// the second, and so on round.
fn preferred_leader(group: GroupId, voters: &[NodeId]) -> NodeId {
    let mut sorted = voters.to_vec();
    sorted.sort_unstable();
    sorted[(group as usize).saturating_sub(1) % sorted.len()]
}

/// The WAL records of a log snapshot written by [`Host::compact`]: each
/// `len u32 | record`.
fn decode_image(mut image: Bytes) -> Result<Vec<Bytes>, WalError> {
    let mut records = Vec::new();
    while image.has_remaining() {
        let len = image
            .try_get_u32()
            .map_err(|_| WalError::Truncated("image record length"))? as usize;
        if image.remaining() < len {
            return Err(WalError::Truncated("image record"));
        }
        records.push(image.split_to(len));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::time::timeout;

    use super::*;
    use crate::io::TokioIo;

    /// Bounds each wait below; never slept out.
    const WAIT: Duration = Duration::from_secs(10);

    /// A server that stops drops the groups' last handle, and must then
    /// find them gone: a member left running would keep the cluster port,
    /// the log and its votes, and go on as this node next to the one a
    /// restart brings up.
    #[tokio::test]
    async fn the_task_ends_once_the_last_handle_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let config = GroupsConfig {
            node_id: 1,
            groups: vec![1],
            voters: vec![1],
            timing: Timing::default(),
            tick: Duration::from_millis(5),
            seed: 0,
            votes: dir.path().join("votes"),
            plants: crate::planted::Plants::NONE,
            metrics: crate::metrics::Metrics::default(),
        };
        let transport = TransportConfig {
            node_id: 1,
            listen: (std::net::Ipv4Addr::LOCALHOST, 0).into(),
            peers: BTreeMap::new(),
            secret: Arc::from(&b"sixteen bytes at least"[..]),
            seed: 0,
        };
        let raft_dir = dir.path().join("raft");
        let (handle, mut committed, task) =
            start(TokioIo, &raft_dir, config, transport).await.unwrap();
        // Once something is committed the log has been written to.
        let entry = Bytes::from_static(b"entry");
        let proposed = async {
            loop {
                handle.propose(1, entry.clone());
                let next = committed.recv().await;
                if let Some((1, Committed::Entry(e))) = next
                    && e.data == entry
                {
                    return;
                }
            }
        };
        timeout(WAIT, proposed).await.unwrap();

        drop(handle);
        let ended = timeout(WAIT, task).await;
        let result = ended.expect("the task ends without its handle").unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}
