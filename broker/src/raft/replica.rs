//! One member of a Raft group: raft-rs's `RawNode`, driven sans-IO.
//!
//! Like raft-rs's own examples, the owner calls [`Replica::tick`] on a
//! timer, [`Replica::step`] for each message from a peer and
//! [`Replica::propose`] for new entries, then [`Replica::advance`], which
//! runs one ready cycle and hands back what to do: messages to send now,
//! entries now committed (in log order), and what to make durable. Once
//! that is durable the owner calls [`Replica::persisted`], which releases
//! the messages that vouch for it: acknowledgements and votes. So the owner
//! can batch the writes of many cycles, and of many groups, into one fsync,
//! and nothing is acknowledged or voted on before it is on disk. The replica
//! never touches a socket, a clock or a file itself.
//!
//! raft-rs draws each term's election timeout from `thread_rng`, which a
//! simulation cannot replay. After every input the replica pins that timeout
//! to a value derived from (seed, node id, term): still spread over
//! `[election_tick, 2 × election_tick)` and different per node and per term
//! (which is what breaks split votes), but the same on every run.
//!
//! raft-rs reads its log from a cache ([`storage`]); the owner's durable
//! log is the truth, and [`Replica::recover`] rebuilds the cache from what
//! it holds ([`Durable`]).
//!
//! Snapshots keep the log bounded: the owner hands [`Replica::compact`] its
//! state machine's state at an applied index, the replica drops the entries
//! before it (keeping a margin for followers a little behind), and a leader
//! sends that snapshot to a follower that needs what was dropped. A
//! follower that installs one hands it to its owner in
//! [`Output::snapshot`] (and to the disk in [`Persist::snapshot`]).
//!
//! A member whose log was damaged and cut back ([`Replica::rejoin`]) may
//! have acknowledged entries it no longer holds, so until it has caught up
//! it must neither vote nor campaign, and its leader must stop counting the
//! acknowledgements it sent before. It asks the leader, with a ReadIndex
//! request that carries its own commit index, for a catch-up target: the
//! leader lowers what it believes the member holds to that index and
//! answers with its commit index. Every entry the member could have
//! vouched for is committed by then or never will be on its word, so once
//! its log holds that index the member votes again.

mod storage;

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use raft::eraftpb::{Entry, HardState, Message, MessageType, Snapshot};
use raft::{Config, RawNode, StateRole, Storage};
use tracing::{debug, info};

use self::storage::ReplicaStorage;
use crate::planted::Plants;

pub use raft::eraftpb;

/// A Raft node id. 0 is reserved (raft-rs's "none").
pub type NodeId = u64;

/// How many ticks make an election timeout and a heartbeat. The owner
/// chooses how long a tick is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Ticks without hearing from a leader before a follower campaigns (the
    /// minimum; each term's actual timeout is in `[this, 2 × this)`).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Ticks without a message from a peer before it counts as unreachable
    /// (see [`super::group::Status`]).
    pub peer_timeout_ticks: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            election_ticks: 10,
            heartbeat_ticks: 2,
            peer_timeout_ticks: 30,
        }
    }
}

/// Why the replica refused an input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// raft-rs refused it: a bad configuration, a message for another node,
    /// or a proposal it dropped (no leader known, or a leadership transfer
    /// in progress). The caller retries a dropped proposal or fails it;
    /// nothing is committed in its name.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
}

/// What a ready cycle asks the owner to do: send `messages`, apply
/// `committed`, and make `persist` durable (then call
/// [`Replica::persisted`]).
#[derive(Debug, Default)]
pub struct Output {
    /// Messages for peers that may leave now.
    pub messages: Vec<Message>,
    /// Entries now committed, in log order; empty entries (each new
    /// leader's first) included, since they take an index too.
    pub committed: Vec<Entry>,
    /// What to write durably, in order after every earlier `persist`.
    pub persist: Option<Persist>,
    /// A snapshot installed from the leader: the owner's state machine
    /// becomes its data, as of its index, before the `committed` entries
    /// (which follow it) are applied.
    pub snapshot: Option<(u64, Bytes)>,
}

/// Entries and hard state to make durable.
#[derive(Debug)]
pub struct Persist {
    /// Pass to [`Replica::persisted`] once this and everything before it
    /// is durable.
    pub number: u64,
    /// New log entries. The first may replace entries from its index on
    /// (a new leader overwrote an uncommitted suffix): on recovery, a later
    /// entry at an index replaces an earlier one and everything after it.
    pub entries: Vec<Entry>,
    /// A snapshot installed from the leader, written before `entries`: it
    /// replaces every entry before it.
    pub snapshot: Option<Snapshot>,
    /// The new term, vote and commit index, if they changed.
    pub hard_state: Option<HardState>,
}

/// What the durable log holds for a replica: its last hard state, its
/// newest snapshot and the entries after it, with replacements already
/// resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Durable {
    /// The last hard state written.
    pub hard_state: HardState,
    /// The newest snapshot written, if any.
    pub snapshot: Option<Snapshot>,
    /// The entries after the snapshot, in index order, without holes.
    pub entries: Vec<Entry>,
}

impl Durable {
    /// The index the snapshot covers up to; 0 without one.
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot
            .as_ref()
            .map_or(0, |snapshot| snapshot.get_metadata().index)
    }

    /// Takes a snapshot written to the log, unless a newer one was: it
    /// replaces every entry (the entries after it follow in the same
    /// record).
    pub fn install(&mut self, snapshot: Snapshot) {
        if snapshot.get_metadata().index > self.snapshot_index() {
            self.entries.clear();
            self.snapshot = Some(snapshot);
        }
    }

    /// Adds what a [`Persist`] wrote, as recovery replays the log. Entries
    /// a snapshot covers are dropped.
    pub fn apply(&mut self, entries: &[Entry], hard_state: Option<&HardState>) {
        let covered = entries.partition_point(|entry| entry.index <= self.snapshot_index());
        let entries = &entries[covered..];
        if let Some(first) = entries.first() {
            // Entries from index i on are replaced by a write starting at i:
            // by index, not position, since a log need not start at 1.
            let keep = self
                .entries
                .partition_point(|entry| entry.index < first.index);
            self.entries.truncate(keep);
            self.entries.extend_from_slice(entries);
        }
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state.clone();
        }
    }
}

/// Where a member rejoining after damage to its log stands.
#[derive(Debug, Default)]
struct Rejoin {
    /// The leader's commit index when it heard of the damage, once it
    /// answered: the log must hold it before this member votes again.
    target: Option<u64>,
    /// The leader last asked for it.
    asked_of: Option<NodeId>,
    /// Ticks since then.
    since_asked: usize,
    /// Requests made: each carries its number, since raft-rs ignores a
    /// request whose context equals one still pending.
    asked: u64,
}

/// One member of a Raft group.
pub struct Replica {
    node: RawNode<ReplicaStorage>,
    seed: u64,
    /// Readies not yet released, in order: their number, whether they had
    /// anything to persist, and the messages that vouch for them, which
    /// leave only once they (and every ready before them) are durable.
    held: VecDeque<(u64, bool, Vec<Message>)>,
    /// The highest ready number the owner said is durable.
    durable_upto: u64,
    /// The ready that installed a snapshot, until it is durable: raft-rs
    /// counts nothing as applied past what is persisted, and the snapshot
    /// moves what it would apply to its index.
    snapshot_unpersisted: Option<u64>,
    /// Set while rejoining after damage to the log.
    rejoin: Option<Rejoin>,
    /// Planted bugs (`vote-without-persist`: votes and acknowledgements
    /// leave at once).
    plants: Plants,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id())
            .field("term", &self.term())
            .field("role", &self.node.raft.state)
            .field("leader", &self.leader())
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// A fresh member `id` of the group `voters` (which includes `id`),
    /// with no log yet. `seed` is the run's seed: it fixes the election
    /// timeouts.
    ///
    /// # Errors
    ///
    /// [`ReplicaError::Raft`] if raft-rs rejects the configuration (an id of
    /// 0, or heartbeats no more frequent than elections).
    pub fn new(
        id: NodeId,
        voters: &[NodeId],
        timing: Timing,
        seed: u64,
    ) -> Result<Self, ReplicaError> {
        Self::recover(id, voters, timing, seed, &Durable::default())
    }

    /// Member `id` of the group `voters`, restarted from what its durable
    /// log holds.
    ///
    /// # Errors
    ///
    /// As [`Replica::new`]; or [`ReplicaError::Raft`] if `durable` is not a
    /// log raft-rs can continue (entries with holes).
    pub fn recover(
        id: NodeId,
        voters: &[NodeId],
        timing: Timing,
        seed: u64,
        durable: &Durable,
    ) -> Result<Self, ReplicaError> {
        let config = Config {
            id,
            election_tick: timing.election_ticks,
            heartbeat_tick: timing.heartbeat_ticks,
            // A leader that no longer hears from a quorum steps down, so a
            // partitioned minority stops acting as leader (issue 6, item 4),
            // and a node back from a partition cannot depose a working leader
            // (pre-vote).
            check_quorum: true,
            pre_vote: true,
            ..Config::default()
        };
        let storage = ReplicaStorage::default();
        let snapshot_index = durable.snapshot_index();
        {
            let mut cache = storage.memory.wl();
            cache.set_conf_state(raft::eraftpb::ConfState::from((
                voters.to_vec(),
                Vec::new(),
            )));
            if let Some(snapshot) = &durable.snapshot {
                cache.apply_snapshot(snapshot.clone())?;
            }
            cache.append(&durable.entries)?;
            let mut hard_state = durable.hard_state.clone();
            // A log cut back after damage may have lost entries its hard
            // state had seen committed: raft-rs refuses a commit index past
            // the log's end.
            let last_index = durable.entries.last().map_or(snapshot_index, |e| e.index);
            hard_state.commit = hard_state.commit.max(snapshot_index).min(last_index);
            cache.set_hardstate(hard_state);
        }
        let mut storage = storage;
        if let Some(snapshot) = &durable.snapshot {
            storage.snapshot = snapshot.clone();
        }
        // What the snapshot covers is applied: the owner restores its state
        // machine from the snapshot's data.
        let config = Config {
            applied: snapshot_index,
            ..config
        };
        // Committed entries are applied again after a restart: the owner's
        // state machine starts from nothing (or its own snapshot) too.
        let node = RawNode::new(&config, storage, &super::raft_log::logger())?;
        let mut replica = Self {
            node,
            seed,
            held: VecDeque::new(),
            durable_upto: 0,
            snapshot_unpersisted: None,
            rejoin: None,
            plants: Plants::NONE,
        };
        replica.pin_election_timeout();
        Ok(replica)
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.node.raft.id
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// Who this member voted for in the current term; 0 for nobody.
    pub fn vote(&self) -> NodeId {
        self.node.raft.vote
    }

    /// The leader this member knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        Some(self.node.raft.leader_id).filter(|&id| id != raft::INVALID_ID)
    }

    /// Whether this member leads its group.
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The index of the last committed entry.
    pub fn committed_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// The index of the last entry in this member's log.
    pub fn last_index(&self) -> u64 {
        self.node.raft.raft_log.last_index()
    }

    /// While this member leads, each other member's matched index: the
    /// last entry known to be in its log as in the leader's. Empty on a
    /// follower, which does not track the others.
    pub fn matched(&self) -> BTreeMap<NodeId, u64> {
        if !self.is_leader() {
            return BTreeMap::new();
        }
        let me = self.id();
        self.node
            .raft
            .prs()
            .iter()
            .filter(|&(&id, _)| id != me)
            .map(|(&id, progress)| (id, progress.matched))
            .collect()
    }

    /// Plants bugs: only `vote-without-persist` concerns a replica.
    pub fn plant(&mut self, plants: Plants) {
        self.plants = plants;
    }

    /// Marks this member as rejoining after damage to its durable log: it
    /// may have acknowledged entries it no longer holds (see the module
    /// documentation). Until it has caught up it neither votes nor
    /// campaigns. Its term and vote must still be the ones it last made
    /// durable: a member that forgot a vote could vote twice in a term.
    pub fn rejoin(&mut self) {
        info!(
            committed = self.committed_index(),
            "rejoining after damage to the log: no votes until caught up"
        );
        self.rejoin = Some(Rejoin::default());
    }

    /// Whether this member is still rejoining (see [`Replica::rejoin`]).
    pub fn is_rejoining(&self) -> bool {
        self.rejoin.is_some()
    }

    /// One tick of the owner's clock. A rejoining member's election clock
    /// stands still (it must not campaign); it asks for its catch-up target
    /// instead: of each new leader it hears of, and again every election
    /// timeout until one answers.
    pub fn tick(&mut self) {
        let committed = self.committed_index();
        let leader = self.leader();
        let election_timeout = self.node.raft.election_timeout();
        let Some(rejoin) = &mut self.rejoin else {
            self.node.tick();
            self.pin_election_timeout();
            return;
        };
        if rejoin.target.is_some() || leader.is_none() {
            return;
        }
        rejoin.since_asked += 1;
        if leader == rejoin.asked_of && rejoin.since_asked < election_timeout {
            return;
        }
        rejoin.since_asked = 0;
        rejoin.asked_of = leader;
        rejoin.asked += 1;
        let mut context = committed.to_be_bytes().to_vec();
        context.extend_from_slice(&rejoin.asked.to_be_bytes());
        self.node.read_index(context);
    }

    /// Takes a message from a peer.
    ///
    /// # Errors
    ///
    /// [`ReplicaError::Raft`] if raft-rs refuses it (for instance, it is
    /// addressed to another node); the message is dropped, which Raft
    /// tolerates.
    pub fn step(&mut self, mut message: Message) -> Result<(), ReplicaError> {
        if self.rejoin.is_some() {
            match message.get_msg_type() {
                MessageType::MsgRequestVote
                | MessageType::MsgRequestPreVote
                | MessageType::MsgTimeoutNow => {
                    debug!(from = message.from, "rejoining: no vote, no campaign");
                    return Ok(());
                }
                // A leader that still counts acknowledgements from before the
                // damage sends a commit index this log may not hold, or holds
                // other entries at: only appends, which carry the entries they
                // commit, may move it.
                MessageType::MsgHeartbeat => {
                    message.commit = message.commit.min(self.committed_index());
                }
                _ => {}
            }
        }
        if message.get_msg_type() == MessageType::MsgReadIndex && self.is_leader() {
            self.forget_acknowledgements(&message);
        }
        let result = self.node.step(message);
        self.pin_election_timeout();
        Ok(result?)
    }

    /// Proposes an entry. A leader appends it; a follower forwards it to
    /// the leader it knows (in its next [`Output::messages`]). It is
    /// committed once a quorum has it, and comes back in
    /// [`Output::committed`], on every member.
    ///
    /// # Errors
    ///
    /// [`ReplicaError::Raft`] with `ProposalDropped` if this member cannot
    /// take it now (no leader known, or leadership is moving).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), ReplicaError> {
        Ok(self.node.propose(Vec::new(), data)?)
    }

    /// Runs one ready cycle, if raft-rs has anything ready: hands out what
    /// may be sent and applied now, and what to persist. The cache raft-rs
    /// reads from is updated at once; raft-rs counts the entries as its own
    /// only once [`Replica::persisted`] says they are durable.
    pub fn advance(&mut self) -> Output {
        let mut output = Output::default();
        if !self.node.has_ready() {
            return output;
        }
        let mut ready = self.node.ready();
        if let Some(rejoin) = &mut self.rejoin {
            let answered = ready
                .take_read_states()
                .into_iter()
                .map(|state| state.index);
            rejoin.target = rejoin.target.into_iter().chain(answered).max();
        }
        // A leader's appends to its followers need not wait for its own
        // disk: Raft counts the leader's copy only once it is durable.
        output.messages = ready.take_messages();
        let mut installed = None;
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            let store = self.node.mut_store();
            // MemStorage only refuses a snapshot older than what it has,
            // which raft-rs never hands out.
            match store.memory.wl().apply_snapshot(snapshot.clone()) {
                Ok(()) => {
                    let index = snapshot.get_metadata().index;
                    output.snapshot = Some((index, snapshot.data.clone()));
                    store.snapshot = snapshot.clone();
                    installed = Some(snapshot);
                }
                Err(error) => debug!(%error, "stale snapshot ignored"),
            }
        }
        output.committed = ready.take_committed_entries();
        let entries = ready.entries().clone();
        let hard_state = ready.hs().cloned();
        self.cache(&entries, hard_state.as_ref());
        let number = ready.number();
        let mut vouching = ready.take_persisted_messages();
        // PLANTED BUG (`vote-without-persist`): what must wait for the disk
        // leaves now.
        if self.plants.vote_without_persist() {
            output.messages.append(&mut vouching);
        }
        self.node.advance_append_async(ready);
        if installed.is_some() {
            self.snapshot_unpersisted = Some(number);
        }
        if self.snapshot_unpersisted.is_none() {
            self.node.advance_apply();
        }
        let needs_disk = !entries.is_empty() || hard_state.is_some() || installed.is_some();
        self.held.push_back((number, needs_disk, vouching));
        if needs_disk {
            output.persist = Some(Persist {
                number,
                entries,
                hard_state,
                snapshot: installed,
            });
        } else {
            // Nothing of its own to wait for, but it may still wait for the
            // readies before it.
            output.messages.extend(self.release());
        }
        self.end_rejoin_if_caught_up();
        output
    }

    /// A rejoining member whose log durably holds its catch-up target,
    /// with the leader's entries up to it (its commit index vouches for
    /// that), has everything it could have acknowledged: it votes again.
    fn end_rejoin_if_caught_up(&mut self) {
        let Some(Rejoin {
            target: Some(target),
            ..
        }) = self.rejoin
        else {
            return;
        };
        let log = &self.node.raft.raft_log;
        if log.committed >= target && log.persisted >= target {
            info!(target, "caught up after damage to the log: voting again");
            self.rejoin = None;
        }
    }

    /// On a leader: a member asking for a read index is rejoining after
    /// damage to its log, and names its commit index. Entries past it it
    /// may have lost, or hold from another leader, so its earlier
    /// acknowledgements no longer count: what it holds is probed again
    /// from there.
    fn forget_acknowledgements(&mut self, message: &Message) {
        let committed = message
            .entries
            .first()
            .and_then(|entry| entry.data.get(..8))
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            .map(u64::from_be_bytes);
        let Some(committed) = committed else {
            return;
        };
        let progress = self.node.raft.mut_prs().get_mut(message.from);
        if let Some(progress) = progress.filter(|progress| progress.matched > committed) {
            debug!(
                member = message.from,
                matched = progress.matched,
                committed,
                "a member lost entries: probing it again"
            );
            progress.matched = committed;
            progress.become_probe();
        }
    }

    /// Everything up to the [`Persist`] numbered `number` is durable:
    /// releases the messages that vouch for it, and runs the ready cycle
    /// for what that unblocked (commits, more messages).
    pub fn persisted(&mut self, number: u64) -> Output {
        self.durable_upto = self.durable_upto.max(number);
        let released = self.release();
        let mut output = self.advance();
        output.messages.splice(0..0, released);
        output
    }

    /// Releases, in order, the readies that are durable (or had nothing to
    /// persist and follow only durable ones), tells raft-rs, and returns the
    /// messages they held back.
    fn release(&mut self) -> Vec<Message> {
        let mut released = Vec::new();
        let mut last = None;
        while let Some(&(number, needs_disk, _)) = self.held.front() {
            if needs_disk && number > self.durable_upto {
                break;
            }
            if let Some((_, _, messages)) = self.held.pop_front() {
                released.extend(messages);
            }
            last = Some(number);
        }
        if let Some(number) = last {
            self.node.on_persist_ready(number);
            if self
                .snapshot_unpersisted
                .is_some_and(|snapshot| snapshot <= number)
            {
                self.snapshot_unpersisted = None;
                self.node.advance_apply();
            }
        }
        released
    }

    /// Puts new entries and hard state where raft-rs reads them.
    fn cache(&mut self, entries: &[Entry], hard_state: Option<&HardState>) {
        let store = &mut self.node.mut_store().memory;
        if !entries.is_empty()
            && let Err(error) = store.wl().append(entries)
        {
            // MemStorage refuses only entries that leave a gap, which a
            // ready cycle never produces.
            unreachable!("raft handed out entries that do not follow the log: {error}");
        }
        if let Some(hard_state) = hard_state {
            store.wl().set_hardstate(hard_state.clone());
        }
    }

    /// If this member leads and `preferred` is another member that has
    /// every entry, hands leadership to it. Owners call this now and then,
    /// for a member they hear from, so that each group ends up led by its
    /// preferred member, which spreads the groups' leaders (and their work)
    /// over the nodes. (raft-rs's own `recent_active` will not do as the
    /// sign of life: check-quorum clears it every election timeout, and a
    /// caller on a fixed period can land on that moment every time.)
    pub fn prefer_leader(&mut self, preferred: NodeId) {
        if !self.is_leader() || preferred == self.id() {
            return;
        }
        let last = self.node.raft.raft_log.last_index();
        let caught_up = self
            .node
            .raft
            .prs()
            .get(preferred)
            .is_some_and(|progress| progress.matched == last);
        if caught_up {
            debug!(
                preferred,
                "handing leadership to the group's preferred member"
            );
            self.node.transfer_leader(preferred);
        }
    }

    /// On a leader: the snapshot for `member` in [`Output::messages`] was
    /// handed to the transport (`handed_over`), or dropped. raft-rs sends a
    /// member it gave a snapshot nothing but heartbeats until told; a member
    /// that installed it and crashed before acknowledging would otherwise
    /// wait forever. The transport cannot know whether it arrived, so
    /// handed over counts as sent: if it was lost after all, the member
    /// refuses the appends that follow it, and the leader probes back to a
    /// new snapshot.
    pub fn snapshot_sent(&mut self, member: NodeId, handed_over: bool) {
        let status = if handed_over {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.node.report_snapshot(member, status);
    }

    /// Takes a snapshot: `data` is the owner's state machine after applying
    /// every entry up to `index` (which must have been handed out as
    /// committed). The entries before it are dropped from the cache, except
    /// the last `keep`, so that a follower a little behind catches up from
    /// entries rather than from the whole state; the owner drops them from
    /// its disk by writing [`Replica::durable_image`] as its log's snapshot.
    pub fn compact(&mut self, index: u64, data: Bytes, keep: u64) -> Result<(), ReplicaError> {
        let store = self.node.mut_store();
        let term = store.term(index)?;
        let conf_state = store.initial_state()?.conf_state;
        let mut snapshot = Snapshot {
            data,
            ..Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = term;
        metadata.set_conf_state(conf_state);
        store.snapshot = snapshot;
        let first = store.first_index()?;
        let keep_from = index.saturating_sub(keep);
        if keep_from > first {
            store.memory.wl().compact(keep_from)?;
        }
        Ok(())
    }

    /// Everything this replica's durable log must hold, as one [`Persist`]
    /// (numbered 0, not to be passed to [`Replica::persisted`]): the
    /// latest snapshot, the entries after it and the hard state. Written
    /// as the log's snapshot, it replaces every record before it.
    pub fn durable_image(&self) -> Result<Persist, ReplicaError> {
        let store = self.node.store();
        let snapshot = Some(store.snapshot.clone()).filter(|s| s.get_metadata().index > 0);
        let after = snapshot.as_ref().map_or(0, |s| s.get_metadata().index) + 1;
        let last = store.last_index()?;
        let entries = if after <= last {
            store.entries(after, last + 1, None, raft::GetEntriesContext::empty(false))?
        } else {
            Vec::new()
        };
        Ok(Persist {
            number: 0,
            entries,
            hard_state: Some(store.initial_state()?.hard_state),
            snapshot,
        })
    }

    /// Replaces raft-rs's `thread_rng` election timeout for this term with
    /// one derived from (seed, id, term).
    fn pin_election_timeout(&mut self) {
        let raft = &mut self.node.raft;
        let min = raft.election_timeout();
        let spread = min.max(1) as u64;
        let draw = mix(self.seed ^ mix(raft.id) ^ mix(raft.term).rotate_left(17));
        let offset = (draw % spread) as usize;
        raft.set_randomized_election_timeout(min + offset);
    }
}

/// SplitMix64's finaliser: a fixed, portable bit mixer, so that the same
/// (seed, id, term) gives the same timeout on every machine.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests;
