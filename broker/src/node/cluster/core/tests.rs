//! The clustered node's core without I/O, in the manner of the engine's
//! `Pair`: a fake Raft that commits what it is asked to propose, in order,
//! virtual time, and the exact messages the core sends to its one
//! connection, with the core's invariants checked after every input.

use std::collections::BTreeMap;
use std::time::Duration;

use raft::eraftpb::Entry;

use super::*;
use crate::config::Config;
use crate::node::testing;

const ORIGIN: Origin = Origin::new(1, 1);

/// One core over a Raft that commits what it is handed.
struct Harness {
    core: ClusterCore,
    now: Now,
    /// The last index committed, per group.
    committed: BTreeMap<GroupId, u64>,
    /// How many of the next proposals the fake Raft loses.
    lose: usize,
    next_delivery: u32,
}

impl Harness {
    /// A node alone in its cluster (one group), leading it.
    fn new() -> Self {
        let now = testing::start_time();
        let settings = NodeSettings::new(Config::default());
        let groups: Vec<GroupId> = (1..=settings.config.cluster.groups_or_default()).collect();
        let mut core = ClusterCore::new(settings, ORIGIN, &groups, now);
        let status = Status {
            leaders: groups.iter().map(|&group| (group, Some(1))).collect(),
            ..Status::default()
        };
        core.handle_status(now, status);
        let mut harness = Self {
            core,
            now,
            committed: BTreeMap::new(),
            lose: 0,
            next_delivery: 0,
        };
        harness.commit();
        assert_eq!(harness.said(), Vec::<String>::new());
        harness
    }

    fn request(&mut self, request: Request) {
        self.core.handle_request(self.now, request);
        self.core.check_invariants();
    }

    /// Commits, one entry each, everything the core proposes (but for the
    /// proposals the fake Raft was told to lose), until it proposes nothing
    /// more.
    fn commit(&mut self) {
        while let Some(ask) = self.core.poll_to_groups() {
            let ToGroups::Propose(group, data) = ask else {
                continue;
            };
            if self.lose > 0 {
                self.lose -= 1;
                continue;
            }
            let index = self.committed.entry(group).or_default();
            *index += 1;
            let entry = Entry {
                index: *index,
                term: 1,
                data,
                ..Entry::default()
            };
            self.core
                .handle_committed(self.now, [(group, Committed::Entry(entry))])
                .expect("a committed entry is applied");
            self.core.check_invariants();
        }
    }

    /// Lets `elapsed` pass, and the core's timer fire if it is due.
    fn wait(&mut self, elapsed: Duration) {
        self.now = testing::later(self.now, elapsed);
        if self.core.poll_timeout() <= self.now.instant {
            self.core.handle_timeout(self.now);
            self.core.check_invariants();
        }
    }

    /// What the core told the connection since last asked, in order.
    fn said(&mut self) -> Vec<String> {
        testing::said(|| self.core.poll_to_connection())
    }

    fn publish(&mut self, body: &'static str) {
        let id = self.next_delivery;
        self.next_delivery += 1;
        self.request(testing::publish(id, body));
    }
}

#[test]
fn a_publish_is_accepted_only_once_its_entry_is_committed() {
    let mut harness = Harness::new();
    harness.request(testing::attach_producer("q"));
    assert_eq!(
        harness.said(),
        [
            "producer attached".to_owned(),
            format!("credit {}", testing::window())
        ]
    );
    harness.commit();
    harness.publish("a");
    assert_eq!(
        harness.said(),
        Vec::<String>::new(),
        "not before the commit"
    );
    harness.commit();
    assert_eq!(harness.said(), ["accepted 0"]);
}

#[test]
fn a_consumer_is_answered_once_its_attach_is_applied_and_gets_the_groups_seq() {
    let mut harness = Harness::new();
    harness.request(testing::attach_producer("q"));
    harness.commit();
    harness.publish("a");
    harness.commit();
    harness.said();
    harness.request(testing::attach_consumer("q"));
    assert_eq!(
        harness.said(),
        Vec::<String>::new(),
        "not before the commit"
    );
    harness.request(testing::credit(10));
    harness.commit();
    // Entry 1 declared the queue, entry 2 enqueued "a" as its first
    // enqueue; the attach and the credit went in entry 3.
    assert_eq!(
        harness.said(),
        ["consumer attached to q", "deliver q 2.0"],
        "the attach is answered, then the message delivered"
    );
}

#[test]
fn a_lost_proposal_is_proposed_again_once_the_retry_interval_has_passed() {
    let mut harness = Harness::new();
    harness.request(testing::attach_producer("q"));
    harness.commit();
    harness.said();
    harness.lose = 1;
    harness.publish("a");
    harness.commit();
    harness.wait(RETRY_AFTER / 2);
    harness.commit();
    assert_eq!(harness.said(), Vec::<String>::new(), "too early to retry");
    harness.wait(RETRY_AFTER);
    harness.commit();
    assert_eq!(harness.said(), ["accepted 0"]);
}

#[test]
fn without_a_leader_a_producer_gets_no_credit_until_one_is_elected() {
    let mut harness = Harness::new();
    harness.core.handle_status(harness.now, Status::default());
    harness.request(testing::attach_producer("q"));
    assert_eq!(harness.said(), ["producer attached"]);
    let groups = harness.core.groups.keys().map(|&group| (group, Some(1)));
    let elected = Status {
        leaders: groups.collect(),
        ..Status::default()
    };
    harness.core.handle_status(harness.now, elected);
    assert_eq!(harness.said(), [format!("credit {}", testing::window())]);
}
