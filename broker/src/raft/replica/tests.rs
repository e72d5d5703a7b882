//! Replicas wired together by an in-memory network that shuffles (from a
//! seed) and can cut nodes off, each with an in-memory "disk" that keeps
//! only what was persisted: elections, commits, determinism, a leader cut
//! off from its group, and crashes that lose what was not yet durable.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::raft::wal;

/// The one group these tests run, as its records name it.
const GROUP: wal::GroupId = 1;

/// At most this many message exchanges per round: enough for any election
/// or commit to settle, bounded so that a livelock fails instead of hanging.
const EXCHANGES_PER_ROUND_MAX: usize = 20;

/// A group of replicas and the network between them.
struct Group {
    ids: Vec<NodeId>,
    seed: u64,
    replicas: BTreeMap<NodeId, Replica>,
    /// Per replica: the write-ahead log records its disk holds.
    disks: BTreeMap<NodeId, Vec<Bytes>>,
    /// Per replica: writes handed out and not yet durable.
    pending: BTreeMap<NodeId, Vec<Persist>>,
    /// Per replica: the (index, term, data) of every entry it applied.
    applied: BTreeMap<NodeId, Vec<(u64, u64, Vec<u8>)>>,
    /// Nodes whose messages, both ways, are dropped.
    isolated: BTreeSet<NodeId>,
    rng: ChaCha8Rng,
    /// The bugs planted in every replica.
    plants: Plants,
}

impl Group {
    fn new(size: u64, seed: u64) -> Self {
        let ids: Vec<NodeId> = (1..=size).collect();
        let replicas = ids
            .iter()
            .map(|&id| (id, Replica::new(id, &ids, Timing::default(), seed).unwrap()))
            .collect();
        Self {
            replicas,
            disks: ids.iter().map(|&id| (id, Vec::new())).collect(),
            pending: ids.iter().map(|&id| (id, Vec::new())).collect(),
            applied: ids.iter().map(|&id| (id, Vec::new())).collect(),
            isolated: BTreeSet::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            ids,
            seed,
            plants: Plants::NONE,
        }
    }

    /// Takes in one output of `id`: its messages join `outbox`, its
    /// committed entries are applied, its writes wait for the disk.
    fn absorb(&mut self, id: NodeId, output: Output, outbox: &mut Vec<Message>) {
        outbox.extend(output.messages);
        let applied = self.applied.get_mut(&id).unwrap();
        for entry in output.committed {
            applied.push((entry.index, entry.term, entry.data.to_vec()));
        }
        self.pending.get_mut(&id).unwrap().extend(output.persist);
    }

    /// About half the disks (drawn from the seed) complete their pending
    /// writes, and their replicas hear so; the others lag, so that a crash
    /// can find writes not yet durable.
    fn sync_disks(&mut self, outbox: &mut Vec<Message>) {
        for id in self.ids.clone() {
            if !self.rng.gen_bool(0.5) {
                continue;
            }
            let writes = std::mem::take(self.pending.get_mut(&id).unwrap());
            let Some(last) = writes.last().map(|write| write.number) else {
                continue;
            };
            let disk = self.disks.get_mut(&id).unwrap();
            for write in &writes {
                let mut record = BytesMut::new();
                wal::encode(GROUP, write, &mut record);
                disk.push(record.freeze());
            }
            let output = self.replicas.get_mut(&id).unwrap().persisted(last);
            self.absorb(id, output, outbox);
        }
    }

    /// Plants `plants` in every replica, and in every restarted one.
    fn plant(&mut self, plants: Plants) {
        self.plants = plants;
        for replica in self.replicas.values_mut() {
            replica.plant(plants);
        }
    }

    /// `id` crashes and restarts: what was not durable is gone, and it
    /// starts over from its disk (applying committed entries again).
    fn crash(&mut self, id: NodeId) {
        self.pending.get_mut(&id).unwrap().clear();
        let mut groups = wal::recover(self.disks[&id].clone()).unwrap();
        let durable = groups.remove(&GROUP).unwrap_or_default();
        let mut replica =
            Replica::recover(id, &self.ids, Timing::default(), self.seed, &durable).unwrap();
        replica.plant(self.plants);
        self.replicas.insert(id, replica);
        self.applied.get_mut(&id).unwrap().clear();
    }

    /// `id` crashes and its log is found damaged: recovery cuts it back to
    /// its first `keep` records. Its term and vote survive (the node keeps
    /// them apart from the log); with `rejoin` it rejoins as the node does.
    fn crash_with_damage(&mut self, id: NodeId, keep: usize, rejoin: bool) {
        let mut whole = wal::recover(self.disks[&id].clone()).unwrap();
        let hard_state = whole.remove(&GROUP).unwrap_or_default().hard_state;
        self.pending.get_mut(&id).unwrap().clear();
        self.disks.get_mut(&id).unwrap().truncate(keep);
        let mut cut = wal::recover(self.disks[&id].clone()).unwrap();
        let mut durable = cut.remove(&GROUP).unwrap_or_default();
        durable.hard_state.term = hard_state.term;
        durable.hard_state.vote = hard_state.vote;
        let mut replica =
            Replica::recover(id, &self.ids, Timing::default(), self.seed, &durable).unwrap();
        if rejoin {
            replica.rejoin();
        }
        self.replicas.insert(id, replica);
        self.applied.get_mut(&id).unwrap().clear();
    }

    /// One tick for everyone, then messages until the group is quiet.
    fn round(&mut self) {
        for replica in self.replicas.values_mut() {
            replica.tick();
        }
        for _ in 0..EXCHANGES_PER_ROUND_MAX {
            let mut messages = Vec::new();
            for id in self.ids.clone() {
                let output = self.replicas.get_mut(&id).unwrap().advance();
                self.absorb(id, output, &mut messages);
            }
            self.sync_disks(&mut messages);
            if messages.is_empty() {
                break;
            }
            messages.shuffle(&mut self.rng);
            for message in messages {
                if self.isolated.contains(&message.from) || self.isolated.contains(&message.to) {
                    continue;
                }
                let to = self.replicas.get_mut(&message.to).unwrap();
                // A stale message refused by raft-rs is a dropped message.
                let _ = to.step(message);
            }
        }
        self.assert_committed_logs_agree();
    }

    /// Rounds until `done` holds, at most `max`; the rounds it took.
    fn run_until(&mut self, max: usize, done: impl Fn(&Self) -> bool) -> Option<usize> {
        (1..=max).find(|_| {
            self.round();
            done(self)
        })
    }

    /// The leader, if exactly one replica leads among those not cut off.
    fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<NodeId> = self
            .replicas
            .values()
            .filter(|r| r.is_leader() && !self.isolated.contains(&r.id()))
            .map(Replica::id)
            .collect();
        match leaders[..] {
            [leader] => Some(leader),
            _ => None,
        }
    }

    fn propose(&mut self, data: &[u8]) {
        let leader = self.leader().expect("a leader to propose to");
        self.replicas
            .get_mut(&leader)
            .unwrap()
            .propose(data.to_vec())
            .unwrap();
    }

    /// The data of the non-empty entries `id` applied, in order.
    fn applied_data(&self, id: NodeId) -> Vec<Vec<u8>> {
        self.applied[&id]
            .iter()
            .filter(|(_, _, data)| !data.is_empty())
            .map(|(_, _, data)| data.clone())
            .collect()
    }

    /// Raft's safety: two replicas never apply different entries at one
    /// index, and each applies indexes in order without holes.
    fn assert_committed_logs_agree(&self) {
        let mut at_index: BTreeMap<u64, (u64, &[u8])> = BTreeMap::new();
        for (id, applied) in &self.applied {
            for (position, (index, term, data)) in applied.iter().enumerate() {
                assert_eq!(
                    *index,
                    position as u64 + 1,
                    "node {id} applied out of order"
                );
                let first = at_index.entry(*index).or_insert((*term, data));
                assert_eq!(
                    *first,
                    (*term, data.as_slice()),
                    "node {id} applied another entry at index {index}"
                );
            }
        }
    }
}

#[test]
fn one_leader_is_elected_and_every_replica_knows_it() {
    let mut group = Group::new(3, 1);
    let rounds = group.run_until(100, |g| {
        g.leader()
            .is_some_and(|leader| g.replicas.values().all(|r| r.leader() == Some(leader)))
    });
    assert!(
        rounds.is_some(),
        "no agreed leader in 100 rounds: {group:?}"
    );
    let terms: BTreeSet<u64> = group.replicas.values().map(Replica::term).collect();
    assert_eq!(terms.len(), 1, "{group:?}");
}

#[test]
fn proposals_commit_on_every_replica_in_the_same_order() {
    let mut group = Group::new(5, 7);
    group.run_until(100, |g| g.leader().is_some()).unwrap();
    let proposed: Vec<Vec<u8>> = (0..20u8).map(|n| vec![n; 3]).collect();
    for data in &proposed {
        group.propose(data);
    }
    group
        .run_until(20, |g| {
            g.replicas.keys().all(|&id| g.applied_data(id) == proposed)
        })
        .unwrap_or_else(|| panic!("not applied everywhere: {:?}", group.applied));
}

#[test]
fn a_seed_replays_the_same_elections() {
    let history = |seed| {
        let mut group = Group::new(3, seed);
        let mut history = Vec::new();
        for round in 0..60 {
            group.round();
            if round == 30 {
                // Force a second election.
                group.isolated.insert(group.leader().unwrap_or(1));
            }
            history.push((group.leader(), group.replicas[&1].term()));
        }
        history
    };
    for seed in [1, 2, 3] {
        assert_eq!(history(seed), history(seed), "seed {seed}");
    }
    assert!(
        (1..6).map(history).collect::<BTreeSet<_>>().len() > 1,
        "the seed should matter"
    );
}

#[test]
fn a_leader_cut_off_is_replaced_and_steps_down() {
    let mut group = Group::new(3, 11);
    group.run_until(100, |g| g.leader().is_some()).unwrap();
    group.propose(b"before");
    group
        .run_until(10, |g| g.applied_data(1) == [b"before"])
        .unwrap();
    let old = group.leader().unwrap();
    let old_term = group.replicas[&old].term();

    group.isolated.insert(old);
    group
        .run_until(100, |g| g.leader().is_some_and(|l| l != old))
        .expect("the others elect a new leader");
    let new = group.leader().unwrap();
    assert!(group.replicas[&new].term() > old_term);
    // check_quorum: without a quorum the old leader stops leading.
    group
        .run_until(100, |g| !g.replicas[&old].is_leader())
        .expect("the cut-off leader steps down");

    group.propose(b"after");
    group.isolated.clear();
    group
        .run_until(50, |g| {
            g.replicas
                .keys()
                .all(|&id| g.applied_data(id) == [b"before".to_vec(), b"after".to_vec()])
        })
        .unwrap_or_else(|| panic!("the old leader did not catch up: {:?}", group.applied));
}

#[test]
fn crashes_lose_only_what_was_not_durable() {
    let mut group = Group::new(3, 5);
    group.run_until(100, |g| g.leader().is_some()).unwrap();
    let mut proposed = Vec::new();
    for n in 0..30u8 {
        if n % 10 == 5 {
            // A follower, then the leader, then everyone in turn.
            let victim = match n {
                5 => group
                    .ids
                    .iter()
                    .copied()
                    .find(|&id| Some(id) != group.leader())
                    .unwrap(),
                15 => group.leader().unwrap(),
                _ => group.ids[usize::from(n) % 3],
            };
            group.crash(victim);
            group.run_until(100, |g| g.leader().is_some()).unwrap();
        }
        proposed.push(vec![n]);
        group.propose(&[n]);
        group.round();
    }
    // A proposal may be lost with a crashed leader (never acknowledged);
    // what was committed is never lost, and everyone agrees on it.
    group
        .run_until(100, |g| {
            let first = g.applied_data(g.ids[0]);
            g.ids.iter().all(|&id| g.applied_data(id) == first)
        })
        .expect("the replicas converge");
    let applied = group.applied_data(group.ids[0]);
    assert!(applied.len() >= 25, "most proposals commit: {applied:?}");
    assert!(applied.iter().all(|data| proposed.contains(data)));
}

/// Random crashes (which lose what was not durable) and partitions from
/// `seed`, with `plants` in every replica: panics if two leaders share a
/// term (a vote forgotten in a crash could elect a second one) or committed
/// logs disagree (checked every round).
fn storm(seed: u64, plants: Plants) {
    let mut group = Group::new(3, seed);
    group.plant(plants);
    let mut leaders: BTreeMap<u64, NodeId> = BTreeMap::new();
    for round in 0..300u32 {
        let roll = group.rng.gen_range(0..100);
        let victim = group.ids[group.rng.gen_range(0..group.ids.len())];
        match roll {
            0..4 => group.crash(victim),
            4..7 if group.isolated.contains(&victim) => {
                group.isolated.remove(&victim);
            }
            4..7 => {
                group.isolated.insert(victim);
            }
            _ => {}
        }
        if let Some(leader) = group.leader() {
            let leader = group.replicas.get_mut(&leader).unwrap();
            let _ = leader.propose(round.to_be_bytes().to_vec());
        }
        group.round();
        for replica in group.replicas.values().filter(|r| r.is_leader()) {
            let first = *leaders.entry(replica.term()).or_insert(replica.id());
            assert_eq!(
                first,
                replica.id(),
                "seed {seed}: two leaders in term {}",
                replica.term()
            );
        }
    }
}

#[test]
fn storms_of_crashes_and_partitions_keep_raft_safe() {
    for seed in 0..40 {
        storm(seed, Plants::NONE);
    }
}

/// The storm catches a member that votes and acknowledges before its disk
/// has what it vouches for.
#[cfg(feature = "planted-bugs")]
#[test]
fn storms_catch_votes_sent_before_they_are_durable() {
    let caught = (0..40).find(|&seed| {
        let plants = Plants::new(Some(crate::planted::Plant::VoteWithoutPersist));
        std::panic::catch_unwind(|| storm(seed, plants)).is_err()
    });
    assert!(
        caught.is_some(),
        "vote-without-persist not caught in 40 seeds"
    );
}

/// Entries committed on the leader and one follower only, then lost from
/// that follower's damaged log; the leader then goes away. Returns the
/// group, the entries, and the (old leader, damaged member, other member).
fn commit_then_lose_on_a_member(rejoin: bool) -> (Group, Vec<Vec<u8>>, [NodeId; 3]) {
    let mut group = Group::new(3, 21);
    group.run_until(100, |g| g.leader().is_some()).unwrap();
    let leader = group.leader().unwrap();
    let others: Vec<NodeId> = group
        .ids
        .iter()
        .copied()
        .filter(|&id| id != leader)
        .collect();
    let (damaged, behind) = (others[0], others[1]);
    group.isolated.insert(behind);
    let keep = group.disks[&damaged].len();
    let committed: Vec<Vec<u8>> = (0..3u8).map(|n| vec![n]).collect();
    for data in &committed {
        group.propose(data);
    }
    group
        .run_until(20, |g| {
            g.applied_data(leader) == committed && g.applied_data(damaged) == committed
        })
        .expect("committed on the leader and one follower");
    group.crash_with_damage(damaged, keep, rejoin);
    group.isolated = BTreeSet::from([leader]);
    (group, committed, [leader, damaged, behind])
}

/// Without rejoining, the damaged member votes for the member that never
/// had the committed entries, which then overwrites them: the check that
/// committed logs agree catches it. This is what the next test prevents.
#[test]
#[should_panic(expected = "applied another entry")]
fn a_damaged_member_that_votes_loses_committed_entries() {
    let (mut group, ..) = commit_then_lose_on_a_member(false);
    group.run_until(200, |_| false);
}

#[test]
fn a_damaged_member_rejoins_without_voting_until_it_caught_up() {
    let (mut group, committed, [leader, damaged, behind]) = commit_then_lose_on_a_member(true);
    assert!(
        group.run_until(200, |g| g.leader().is_some()).is_none(),
        "a leader elected by the damaged member's vote: {group:?}"
    );
    assert!(group.replicas[&damaged].is_rejoining());

    group.isolated.clear();
    group
        .run_until(200, |g| {
            !g.replicas[&damaged].is_rejoining()
                && g.ids.iter().all(|&id| g.applied_data(id) == committed)
        })
        .unwrap_or_else(|| panic!("no catch-up: {group:?} {:?}", group.applied));
    assert_eq!(
        group.leader(),
        Some(leader),
        "only the old leader had it all"
    );

    // Caught up, it votes again: with the leader gone, the two others elect.
    group.isolated.insert(leader);
    group
        .run_until(200, |g| g.leader().is_some_and(|id| id != leader))
        .expect("a new leader with the rejoined member's vote");
    group.propose(b"after");
    group
        .run_until(20, |g| g.applied_data(behind).len() == committed.len() + 1)
        .expect("the new leader commits");
}

/// The leader stays: it counted the damaged member's lost entries as held,
/// and must probe it again rather than ignore its refusals (or send it a
/// commit index past its log's end).
#[test]
fn a_damaged_member_catches_up_from_the_leader_that_counted_its_lost_entries() {
    let (mut group, committed, [leader, damaged, behind]) = commit_then_lose_on_a_member(true);
    group.isolated = BTreeSet::from([behind]);
    group
        .run_until(200, |g| {
            !g.replicas[&damaged].is_rejoining() && g.applied_data(damaged) == committed
        })
        .unwrap_or_else(|| panic!("no catch-up: {group:?} {:?}", group.applied));
    assert_eq!(group.leader(), Some(leader));
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.replicas.values()).finish()
    }
}
