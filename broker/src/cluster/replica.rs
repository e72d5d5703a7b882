//! One member of a Raft group: raft-rs's `RawNode`, driven sans-IO.
//!
//! Like raft-rs's own examples, the owner calls [`Replica::tick`] on a
//! timer, [`Replica::step`] for each message from a peer and
//! [`Replica::propose`] for new entries, then [`Replica::advance`], which
//! runs one ready cycle and hands back what to do: messages to send, in the
//! order the cycle allows, and entries now committed, in log order. The
//! replica never touches a socket, a clock or a file itself.
//!
//! raft-rs draws each term's election timeout from `thread_rng`, which a
//! simulation cannot replay. After every input the replica pins that timeout
//! to a value derived from (seed, node id, term): still spread over
//! `[election_tick, 2 × election_tick)` and different per node and per term
//! (which is what breaks split votes), but the same on every run.
//!
//! Storage is raft-rs's in-memory `MemStorage` for now: the durable,
//! shared write-ahead log of issue 6 replaces it, and with it the
//! persistence step of the ready cycle (entries and hard state durable
//! before the messages that depend on them leave).

use raft::eraftpb::{Entry, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};
use tracing::debug;

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
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            election_ticks: 10,
            heartbeat_ticks: 2,
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

/// What one ready cycle asks the owner to do, in this order: send
/// `messages`, then apply `committed`.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages for peers. Those that acknowledge or vote come after the
    /// entries and hard state they depend on were persisted.
    pub messages: Vec<Message>,
    /// Entries now committed, in log order; empty entries (each new
    /// leader's first) included, since they take an index too.
    pub committed: Vec<Entry>,
}

/// One member of a Raft group.
pub struct Replica {
    node: RawNode<MemStorage>,
    seed: u64,
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
        let storage = MemStorage::new_with_conf_state((voters.to_vec(), Vec::new()));
        let node = RawNode::new(&config, storage, &super::raft_log::logger())?;
        let mut replica = Self { node, seed };
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

    /// One tick of the owner's clock.
    pub fn tick(&mut self) {
        self.node.tick();
        self.pin_election_timeout();
    }

    /// Takes a message from a peer.
    ///
    /// # Errors
    ///
    /// [`ReplicaError::Raft`] if raft-rs refuses it (for instance, it is
    /// addressed to another node); the message is dropped, which Raft
    /// tolerates.
    pub fn step(&mut self, message: Message) -> Result<(), ReplicaError> {
        let result = self.node.step(message);
        self.pin_election_timeout();
        Ok(result?)
    }

    /// Proposes an entry. Only a leader accepts one; it is committed once a
    /// quorum has it, and comes back in [`Output::committed`].
    ///
    /// # Errors
    ///
    /// [`ReplicaError::Raft`] with `ProposalDropped` if this member cannot
    /// take it now (it is not the leader, or leadership is moving).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), ReplicaError> {
        Ok(self.node.propose(Vec::new(), data)?)
    }

    /// Runs one ready cycle, if raft-rs has anything ready: persists new
    /// entries and hard state, and returns the messages to send and the
    /// entries to apply.
    pub fn advance(&mut self) -> Output {
        let mut output = Output::default();
        if !self.node.has_ready() {
            return output;
        }
        let mut ready = self.node.ready();
        // Messages a leader may send before its own entries are persisted
        // (appends to followers): raft's correctness does not need them to
        // wait.
        output.messages.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            // MemStorage only refuses a snapshot older than what it has,
            // which raft-rs never hands out.
            if let Err(error) = self.node.mut_store().wl().apply_snapshot(snapshot) {
                debug!(%error, "stale snapshot ignored");
            }
        }
        output.committed.extend(ready.take_committed_entries());
        self.persist(ready.entries(), ready.hs().cloned());
        // Acknowledgements and votes leave only once what they vouch for is
        // persisted.
        output.messages.extend(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node
                .mut_store()
                .wl()
                .mut_hard_state()
                .set_commit(commit);
        }
        output.messages.extend(light.take_messages());
        output.committed.extend(light.take_committed_entries());
        self.node.advance_apply();
        output
    }

    fn persist(&mut self, entries: &[Entry], hard_state: Option<raft::eraftpb::HardState>) {
        let store = self.node.mut_store();
        if !entries.is_empty()
            && let Err(error) = store.wl().append(entries)
        {
            // MemStorage refuses only entries that leave a gap, which a
            // ready cycle never produces.
            unreachable!("raft handed out entries that do not follow the log: {error}");
        }
        if let Some(hard_state) = hard_state {
            store.wl().set_hardstate(hard_state);
        }
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
