//! The node core without I/O, in the manner of the engine's `Pair`: a fake
//! commit step that commits (or loses, or refuses) what it was proposed
//! when the test says so, virtual time, and the exact messages the core
//! sends to its one connection, with the core's invariants checked after
//! every input. What a client sees must not depend on the step, so most
//! tests run over both.

use std::collections::BTreeMap;

mod flow;
mod nodes;
mod transactions;

use super::*;
use crate::config::Config;
use crate::node::settings::PageStores;
use crate::node::testing;
use crate::queue::MemoryPages;

const ORIGIN: Origin = Origin::new(1, 1);

const STEPS: [Step; 2] = [Step::Local, Step::Raft];

/// One core over a fake commit step.
struct Harness {
    core: Core,
    now: Now,
    /// Entries proposed and not yet committed, oldest first.
    proposed: VecDeque<(GroupId, Entry)>,
    /// The last index committed, per group.
    committed: BTreeMap<GroupId, u64>,
    /// Every entry committed, in order, with its index: the local step's
    /// log.
    log: Vec<(GroupId, u64, Bytes)>,
    /// Snapshots asked for and not yet written: group, index, state,
    /// number.
    snapshots_asked: Vec<(GroupId, u64, Bytes, u64)>,
    /// The newest snapshot written, per group: the state as of an index,
    /// from which a restart replays the log.
    snapshots: BTreeMap<GroupId, (u64, Bytes)>,
    /// How many of the next proposals the fake step loses.
    lose: usize,
    next_delivery: u32,
}

impl Harness {
    /// A node over `step`; over Raft, alone in its cluster and leading
    /// every group.
    fn new(step: Step) -> Self {
        Self::with_config(step, Config::default())
    }

    /// A node over `step` configured by `config`.
    fn with_config(step: Step, config: Config) -> Self {
        Self::with_settings(step, NodeSettings::new(config))
    }

    /// A node over `step` configured by `config` whose groups page their
    /// deep queues (to stores in memory).
    fn paging(step: Step, config: Config) -> Self {
        let mut settings = NodeSettings::new(config);
        settings.pages = PageStores::on_disk(|_| Box::new(MemoryPages::default()));
        Self::with_settings(step, settings)
    }

    fn with_settings(step: Step, settings: NodeSettings) -> Self {
        let now = testing::start_time();
        let groups = Core::group_count(step, &settings);
        let mut core = Core::new(settings, step, ORIGIN, now);
        if step == Step::Raft {
            let status = Status {
                leaders: (1..=groups).map(|group| (group, Some(1))).collect(),
                ..Status::default()
            };
            core.handle_status(now, status);
        }
        let mut harness = Self {
            core,
            now,
            proposed: VecDeque::new(),
            committed: BTreeMap::new(),
            log: Vec::new(),
            snapshots_asked: Vec::new(),
            snapshots: BTreeMap::new(),
            lose: 0,
            next_delivery: 0,
        };
        assert_eq!(harness.said(), Vec::<String>::new());
        harness
    }

    fn request(&mut self, request: Request) {
        self.core.handle_request(self.now, request);
    }

    /// A producer attaches to `q` and publishes "a", which the step loses.
    fn publish_lost(&mut self) {
        self.request(testing::attach_producer("q"));
        self.commit();
        self.said();
        self.lose = 1;
        self.publish("a");
        self.commit();
    }

    fn publish(&mut self, body: &'static str) {
        let id = self.next_delivery;
        self.next_delivery += 1;
        self.request(testing::publish(id, body));
    }

    /// Takes what the core proposes (losing as many as it was told to), and
    /// the snapshots it asks for.
    fn take_proposals(&mut self) {
        while let Some(ask) = self.core.poll_to_groups() {
            let (group, entry) = match ask {
                ToGroups::Propose(group, entry) => (group, entry),
                ToGroups::Compact {
                    group,
                    index,
                    state,
                    number,
                    ..
                } => {
                    self.snapshots_asked.push((group, index, state, number));
                    continue;
                }
            };
            if self.lose > 0 {
                self.lose -= 1;
                continue;
            }
            self.proposed.push_back((group, entry));
        }
    }

    /// Entries proposed and not committed yet.
    fn uncommitted(&mut self) -> usize {
        self.take_proposals();
        self.proposed.len()
    }

    /// Commits everything proposed so far, an entry per proposal, as one
    /// fsync of the log or one round of Raft would; then writes the
    /// snapshots asked for.
    fn commit(&mut self) {
        self.take_proposals();
        let commits: Vec<_> = self
            .proposed
            .drain(..)
            .map(|(group, entry)| {
                let index = self.committed.entry(group).or_default();
                *index += 1;
                let (index, data) = (*index, entry.data);
                self.log.push((group, index, data.clone()));
                (group, Commit::Entry { index, data })
            })
            .collect();
        self.hand_over(commits);
        for (group, index, state, number) in std::mem::take(&mut self.snapshots_asked) {
            self.snapshots.insert(group, (index, state));
            self.core.handle_snapshot(self.now, group, number, true);
        }
    }

    /// Hands the core what the fake step committed or refused.
    fn hand_over(&mut self, commits: Vec<(GroupId, Commit)>) {
        self.core
            .handle_committed(self.now, commits)
            .expect("what the step hands over is handled");
    }

    /// Refuses everything proposed so far, as the local step does when the
    /// disk is full.
    fn refuse(&mut self) {
        self.take_proposals();
        let refused: Vec<_> = self
            .proposed
            .drain(..)
            .map(|(group, entry)| (group, Commit::Refused(entry.data)))
            .collect();
        self.hand_over(refused);
    }

    /// The node restarts (its next incarnation) from its newest snapshots
    /// and the log after them, as the single node's driver does; what it
    /// had not committed is gone.
    fn restart(&mut self) {
        let settings = self.core.settings.clone();
        let origin = Origin::new(1, self.core.origin.start() + 1);
        self.core = Core::new(settings, self.core.step, origin, self.now);
        self.proposed.clear();
        self.snapshots_asked.clear();
        let snapshots = self.snapshots.iter().map(|(&group, (index, data))| {
            let (index, data) = (*index, data.clone());
            (group, Commit::Snapshot { index, data })
        });
        let snapshots: Vec<_> = snapshots.collect();
        let after = |group: &GroupId| self.snapshots.get(group).map_or(0, |(index, _)| *index);
        let log = self
            .log
            .iter()
            .filter(|(group, index, _)| *index > after(group));
        let log = log.map(|(group, index, data)| {
            let (index, data) = (*index, data.clone());
            (*group, Commit::Entry { index, data })
        });
        let recovered: Vec<_> = snapshots.into_iter().chain(log).collect();
        self.core
            .handle_committed(self.now, recovered)
            .expect("the log replays");
    }

    /// Lets `elapsed` pass, and the core's timer fire if it is due.
    fn wait(&mut self, elapsed: Duration) {
        self.now = testing::later(self.now, elapsed);
        if self.core.poll_timeout() <= self.now.instant {
            self.core.handle_timeout(self.now);
        }
    }

    /// What the core told the connection since last asked, in order.
    fn said(&mut self) -> Vec<String> {
        testing::said(|| self.core.poll_to_connection())
    }

    /// A consumer attached to `queue` with credit 10 and a producer that
    /// has published "a" to it, delivered; what was said is forgotten.
    fn delivered(step: Step) -> Self {
        let mut harness = Self::new(step);
        harness.request(testing::attach_producer("q"));
        harness.request(testing::attach_consumer("q"));
        harness.request(testing::credit(10));
        harness.commit();
        harness.publish("a");
        harness.commit();
        assert_eq!(
            harness.said(),
            [
                "producer attached".to_owned(),
                format!("credit {}", testing::window()),
                "consumer attached to q".to_owned(),
                "deliver q 2.0".to_owned(),
                "accepted 0".to_owned(),
            ],
            "{step:?}"
        );
        harness
    }

    /// The harness's consumer settles "a".
    fn settle(&mut self, outcome: Outcome) {
        self.settle_in(None, outcome);
    }

    /// The harness's consumer settles "a", in transaction `txn` if given.
    fn settle_in(&mut self, txn: Option<Bytes>, outcome: Outcome) {
        self.request(Request::Settle {
            consumer: ORIGIN.first_consumer(),
            queue: "q".into(),
            seq: 2 << 24,
            outcome,
            txn,
            answer: None,
        });
    }

    /// The harness's consumer settles "a" with `outcome` and waits for the
    /// broker's settle (rcv-settle-mode second), on its delivery 7.
    fn settle_answered(&mut self, outcome: Outcome) {
        self.request(Request::Settle {
            consumer: ORIGIN.first_consumer(),
            queue: "q".into(),
            seq: 2 << 24,
            outcome,
            txn: None,
            answer: Some(SettleAnswer {
                conn: testing::CONN,
                delivery: DeliveryId {
                    link: testing::CONSUMER,
                    id: 7,
                },
                state: crate::amqp::types::DeliveryState::Accepted(crate::amqp::types::Accepted),
            }),
        });
    }

    /// The configuration queue `name` was declared with, once committed.
    fn declared(&self, name: &str) -> Option<QueueConfig> {
        self.core
            .groups
            .values()
            .flat_map(|group| group.state.queues().declared())
            .find(|(queue, _)| *queue == name)
            .map(|(_, config)| config.clone())
    }

    fn depth(&self) -> u64 {
        let info = self.core.queue_info();
        info.iter()
            .find(|(name, _)| name == "q")
            .map_or(0, |q| q.1.depth)
    }
}

#[test]
fn a_publish_is_accepted_only_once_its_entry_is_committed() {
    for step in STEPS {
        let mut harness = Harness::new(step);
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
        assert_eq!(harness.said(), Vec::<String>::new(), "{step:?}");
        harness.commit();
        assert_eq!(harness.said(), ["accepted 0"], "{step:?}");
    }
}

/// A consumer hears that it is attached once its attach is applied: behind
/// the declaration of its queue, so a consumer is never told of a queue a
/// crash could forget. Its messages are numbered by the entry that
/// enqueued them, whatever the step.
#[test]
fn a_consumer_is_answered_once_its_attach_is_applied_and_gets_the_groups_seq() {
    for step in STEPS {
        let mut harness = Harness::new(step);
        harness.request(testing::attach_producer("q"));
        harness.commit();
        harness.publish("a");
        harness.commit();
        harness.said();
        harness.request(testing::attach_consumer("q"));
        assert_eq!(harness.said(), Vec::<String>::new(), "{step:?}");
        harness.request(testing::credit(10));
        harness.commit();
        // Entry 1 declared the queue, entry 2 enqueued "a" as its first
        // enqueue; the attach and the credit went in entry 3.
        assert_eq!(
            harness.said(),
            ["consumer attached to q", "deliver q 2.0"],
            "{step:?}: the attach is answered, then the message delivered"
        );
    }
}

/// Over the local step nobody else changes the group, so a consumer's
/// credit, which cannot change what the publishes ahead of it deliver,
/// does not wait for their fsync. Over Raft it is committed in its turn.
#[test]
fn a_consumers_credit_overtakes_publishes_only_over_the_local_step() {
    for step in STEPS {
        let mut harness = Harness::new(step);
        harness.request(testing::attach_producer("q"));
        harness.publish("a");
        harness.commit();
        harness.request(testing::attach_consumer("q"));
        harness.commit();
        harness.publish("b");
        harness.said();
        harness.request(testing::credit(10));
        // Entry 1 declared the queue and enqueued "a", entry 2 attached
        // the consumer, and entry 3 enqueues "b".
        let expected: &[&str] = match step {
            Step::Local => &["deliver q 1.0"],
            Step::Raft => &[],
        };
        assert_eq!(harness.said(), expected, "{step:?}");
        harness.commit();
        let expected: &[&str] = match step {
            // Applying the enqueue delivers it; then the producer hears.
            Step::Local => &["deliver q 3.0", "accepted 1"],
            // The credit is applied after "b", in the same entry.
            Step::Raft => &["accepted 1", "deliver q 1.0", "deliver q 3.0"],
        };
        assert_eq!(harness.said(), expected, "{step:?}");
    }
}

/// Behind a settle that returns a message, a credit waits for its turn:
/// ahead of it, it would have the message delivered before it is back.
#[test]
fn a_credit_behind_a_release_waits_for_it() {
    let mut harness = Harness::delivered(Step::Local);
    harness.request(testing::credit(0));
    harness.settle(Outcome::Released);
    harness.request(testing::credit(1));
    assert_eq!(harness.said(), Vec::<String>::new(), "the release waits");
    harness.commit();
    assert_eq!(
        harness.said(),
        ["deliver q 2.0"],
        "released, then redelivered"
    );
}

/// A restart replays the log, which holds neither consumers' credit nor
/// who held what: what a detach counted as failed deliveries is logged as
/// it is made, so the messages come back counted all the same.
#[test]
fn a_restart_keeps_what_a_detach_counted() {
    for step in STEPS {
        let mut harness = Harness::delivered(step);
        harness.publish("b");
        harness.commit();
        harness.said();
        harness.request(Request::Detach {
            conn: testing::CONN,
            link: testing::CONSUMER,
            closed: false,
        });
        harness.commit();
        harness.restart();
        harness.request(testing::attach_consumer("q"));
        harness.request(testing::credit(10));
        harness.commit();
        assert_eq!(
            harness.said(),
            [
                "consumer attached to q",
                "deliver q 2.0 (failed 1)",
                "deliver q 3.0 (failed 1)"
            ],
            "{step:?}"
        );
    }
}

/// The harness's consumer attaches to a dynamic node, which the broker
/// names `dynamic.1.1.1`.
fn attach_dynamic() -> Request {
    Request::AttachConsumer {
        options: None,
        conn: testing::CONN,
        link: testing::CONSUMER,
        node: ConsumerNode::Dynamic.into(),
        container_id: "client".into(),
        filter: None,
    }
}

/// A dynamic node's queue lives as long as its link. A crash ends the link
/// without a detach; once restarted, the node detaches the consumer it no
/// longer serves, and that takes the queue along.
#[test]
fn a_dynamic_nodes_queue_goes_once_its_consumer_is_detached_after_a_crash() {
    let mut harness = Harness::new(Step::Local);
    harness.request(attach_dynamic());
    harness.commit();
    assert_eq!(harness.said(), ["consumer attached to dynamic.1.1.1"]);
    harness.restart();
    assert_eq!(harness.core.queue_info().len(), 1, "it survives the crash");
    harness.wait(HOUSEKEEPING_EVERY);
    harness.commit();
    assert_eq!(harness.core.queue_info(), []);
}

/// An accepting settle waits for company (the next publish) for at most
/// the linger, rather than taking an fsync or a Raft entry of its own.
#[test]
fn an_accepting_settle_waits_for_company_at_most_the_linger() {
    for step in STEPS {
        let mut harness = Harness::delivered(step);
        harness.settle(Outcome::Accepted);
        assert_eq!(harness.uncommitted(), 0, "{step:?}: the settle waits");
        harness.wait(SETTLE_LINGER / 2);
        assert_eq!(harness.uncommitted(), 0, "{step:?}: within the linger");
        harness.wait(SETTLE_LINGER);
        assert_eq!(harness.uncommitted(), 1, "{step:?}: on its own at its end");
        harness.commit();
        assert_eq!(harness.depth(), 0, "{step:?}: settled and gone");

        let mut harness = Harness::delivered(step);
        harness.settle(Outcome::Accepted);
        harness.publish("b");
        assert_eq!(harness.uncommitted(), 1, "{step:?}: one entry for both");
    }
}

/// A consumer that waits for the broker's settle (rcv-settle-mode second)
/// hears that its outcome took effect once the settle is applied, not
/// before (a crash would forget it: replays/settle-second-confirmed-before-
/// durable-0x28-shrunk.toml); and never of one a full disk kept out of the
/// log, which is applied in memory only.
#[test]
fn a_settle_the_consumer_waits_for_is_answered_once_applied() {
    for step in STEPS {
        let mut harness = Harness::delivered(step);
        harness.settle_answered(Outcome::Accepted);
        assert_eq!(harness.uncommitted(), 0, "{step:?}: the settle lingers");
        harness.wait(SETTLE_LINGER);
        assert_eq!(harness.uncommitted(), 1, "{step:?}");
        assert_eq!(harness.said(), Vec::<String>::new(), "{step:?}");
        harness.commit();
        assert_eq!(harness.said(), ["accepted 7"], "{step:?}");
    }
    let mut harness = Harness::delivered(Step::Local);
    harness.settle_answered(Outcome::Accepted);
    harness.publish("b");
    harness.refuse();
    assert_eq!(harness.said(), ["rejected 1: the broker's disk is full"]);
    assert_eq!(harness.depth(), 0, "\"a\" settled in memory");
}

/// On a full disk the local step refuses an entry: its messages are
/// rejected, and what frees space (a settle) is applied all the same, in
/// memory only. Until a snapshot holds that, messages are refused.
#[test]
fn a_refused_entry_rejects_its_messages_and_applies_its_settles() {
    let mut harness = Harness::delivered(Step::Local);
    harness.settle(Outcome::Accepted);
    harness.publish("b");
    harness.refuse();
    assert_eq!(harness.said(), ["rejected 1: the broker's disk is full"]);
    assert_eq!(harness.depth(), 0, "\"a\" settled, \"b\" not enqueued");
    harness.publish("c");
    assert_eq!(harness.said(), [format!("rejected 2: {NOT_DURABLE}")]);
    assert_eq!(harness.uncommitted(), 0, "nothing to log");
    // The snapshot asked for is written: "d" is taken, as entry 3, since a
    // refused entry takes no place in the log.
    harness.commit();
    harness.publish("d");
    harness.commit();
    assert_eq!(harness.said(), ["deliver q 3.0", "accepted 3"]);
}

/// A publish proposed before the entry ahead of it was refused is applied
/// to a state ahead of its log: it is answered only once a snapshot holds
/// that state, since a replay of the log alone might decide it otherwise.
#[test]
fn a_publish_applied_after_a_refused_entry_is_answered_once_a_snapshot_holds_it() {
    let mut harness = Harness::delivered(Step::Local);
    harness.settle(Outcome::Accepted);
    harness.publish("b");
    harness.take_proposals();
    harness.publish("c");
    harness.take_proposals();
    // The entry of "b" and the settle is refused; that of "c" is logged.
    let (group, refused) = harness.proposed.pop_front().expect("b's entry");
    harness.hand_over(vec![(group, Commit::Refused(refused.data))]);
    let (group, logged) = harness.proposed.pop_front().expect("c's entry");
    harness.log.push((group, 3, logged.data.clone()));
    let index = 3;
    harness.hand_over(vec![(
        group,
        Commit::Entry {
            index,
            data: logged.data,
        },
    )]);
    assert_eq!(
        harness.said(),
        ["rejected 1: the broker's disk is full", "deliver q 3.0"],
        "\"c\" waits for the snapshot"
    );
    harness.commit();
    assert_eq!(harness.said(), ["accepted 2"]);
}

/// A settle the full disk refused is applied in memory only, so a replay
/// of the log brings its message back; in a queue with a length limit,
/// that message must not cost one accepted after it its place. Found by
/// the simulator (replays/recovery-lost-limited-queue-messages-0x93.toml:
/// after a crash, the replay of a queue limited to 41 messages refused an
/// enqueue that had been accepted).
#[test]
fn a_restart_keeps_what_was_accepted_after_a_settle_applied_in_memory_only() {
    let mut config = Config::default();
    config.queues.max_length = 1;
    let mut harness = Harness::with_config(Step::Local, config);
    harness.request(testing::attach_producer("q"));
    harness.request(testing::attach_consumer("q"));
    harness.request(testing::credit(10));
    harness.commit();
    harness.publish("a");
    harness.commit();
    harness.said();
    // "a" is settled in memory only; "b", in the same entry, is rejected.
    harness.settle(Outcome::Accepted);
    harness.publish("b");
    harness.refuse();
    // Space is back: what the node asks of its step now goes through.
    harness.commit();
    harness.publish("c");
    harness.commit();
    harness.publish("d");
    harness.commit();
    let said = harness.said();
    let accepted: Vec<&String> = said.iter().filter(|m| m.starts_with("accepted")).collect();
    assert_eq!(accepted, ["accepted 2"], "only \"c\" fits: {said:?}");
    harness.restart();
    // The consumer of before the restart, in the snapshot, goes first.
    harness.wait(HOUSEKEEPING_EVERY);
    harness.commit();
    harness.request(testing::attach_consumer("q"));
    harness.request(testing::credit(10));
    harness.commit();
    let said = harness.said();
    assert_eq!(said.len(), 2, "{said:?}");
    assert_eq!(said[0], "consumer attached to q");
    assert!(
        said[1].starts_with("deliver q 3.0"),
        "\"c\" was accepted, and \"a\" settled: {said:?}"
    );
}

#[test]
fn a_lost_proposal_is_proposed_again_once_the_retry_interval_has_passed() {
    let mut harness = Harness::new(Step::Raft);
    harness.publish_lost();
    harness.wait(RETRY_AFTER / 2);
    harness.commit();
    assert_eq!(harness.said(), Vec::<String>::new(), "too early to retry");
    harness.wait(RETRY_AFTER);
    harness.commit();
    assert_eq!(harness.said(), ["accepted 0"]);
}

/// What was forwarded to the leader on a connection that has since been
/// replaced is proposed again at once, not a `RETRY_AFTER` later. Found by
/// the simulator (3 nodes, seed 0x253): a transaction's commit forwarded as
/// a partition healed was lost with the old connection, and applied only
/// after its client had given up waiting.
#[test]
fn a_lost_proposal_is_proposed_again_once_the_connection_to_the_leader_is_new() {
    let mut harness = Harness::new(Step::Raft);
    let led_by_2 = |dialled: u64| Status {
        leaders: (harness.core.groups.keys())
            .map(|&group| (group, Some(2)))
            .collect(),
        connections: [(2, dialled)].into(),
        ..Status::default()
    };
    let (first, second) = (led_by_2(1), led_by_2(2));
    harness.core.handle_status(harness.now, first.clone());
    harness.publish_lost();
    harness.core.handle_status(harness.now, first);
    harness.commit();
    assert_eq!(harness.said(), Vec::<String>::new(), "the same connection");
    harness.core.handle_status(harness.now, second);
    harness.commit();
    assert_eq!(harness.said(), ["accepted 0"]);
}

#[test]
fn without_a_leader_a_producer_gets_no_credit_until_one_is_elected() {
    let mut harness = Harness::new(Step::Raft);
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

/// A retry proposes every item not applied, lingering ones included: the
/// linger ends with them. Found by the simulator (3 nodes, seed 0xbf): a
/// linger left due with nothing to wait for fired again at once, forever.
#[test]
fn a_retry_ends_the_linger_of_what_it_proposes() {
    let mut harness = Harness::delivered(Step::Raft);
    harness.settle(Outcome::Accepted);
    assert_eq!(harness.uncommitted(), 0, "the settle lingers");
    harness.wait(RETRY_AFTER);
    assert_eq!(harness.uncommitted(), 1, "the retry proposed it");
    assert!(harness.core.poll_timeout() > harness.now.instant);
}

/// A consumer's detach over the local step waits for what is before it;
/// what comes after it waits in turn, so that it is applied after the
/// detach, as it was sent. Found by the Proton interop test: a message
/// relayed to a dynamic node's queue just after its receiver closed was
/// accepted into the queue on its way out.
#[test]
fn what_follows_a_held_back_detach_is_applied_after_it() {
    let mut harness = Harness::new(Step::Local);
    harness.request(attach_dynamic());
    harness.request(testing::attach_producer("dynamic.1.1.1"));
    harness.commit();
    harness.said();
    harness.publish("a");
    harness.request(Request::Detach {
        conn: testing::CONN,
        link: testing::CONSUMER,
        closed: true,
    });
    harness.publish("b");
    harness.commit();
    harness.commit();
    assert_eq!(
        harness.said(),
        ["accepted 0", "rejected 1: no queue named \"dynamic.1.1.1\""]
    );
}

/// What is proposed after a held-back detach keeps its order, even once
/// the detach is carried out and a credit held behind it still waits.
/// Found by the simulator (one node, seed 0x6: a message published after
/// seven others was enqueued before them).
#[test]
fn proposals_held_behind_a_detach_keep_their_order() {
    let again = LinkId {
        session: crate::amqp::engine::SessionId(0),
        handle: 2,
    };
    let mut harness = Harness::delivered(Step::Local);
    harness.publish("b");
    harness.request(Request::Detach {
        conn: testing::CONN,
        link: testing::CONSUMER,
        closed: false,
    });
    harness.request(Request::AttachConsumer {
        options: None,
        conn: testing::CONN,
        link: again,
        node: ConsumerNode::Queue {
            name: "q".into(),
            browse: false,
        }
        .into(),
        container_id: "client".into(),
        filter: None,
    });
    harness.request(Request::Credit {
        conn: testing::CONN,
        link: again,
        credit: 10,
        drain: false,
    });
    harness.publish("c");
    // "b" is applied; the detach is carried out and the attach proposed,
    // while the credit waits for the attach.
    harness.commit();
    harness.publish("d");
    for _ in 0..3 {
        harness.commit();
    }
    let said = harness.said();
    let accepted: Vec<&String> = said.iter().filter(|m| m.starts_with("accepted")).collect();
    assert_eq!(
        accepted,
        ["accepted 1", "accepted 2", "accepted 3"],
        "{said:?}"
    );
}

/// A connection that drops with many consumers has them all detached in
/// one round of the log, not one round each, and a publish from another
/// connection waits for no more than that round. One at a time, a client
/// with 65,536 links held every other client up for as many fsyncs.
#[test]
fn a_dropped_connection_detaches_all_its_consumers_in_one_round() {
    const CONSUMERS: u32 = 50;
    let other = testing::CONN + 1;
    let link = |handle| LinkId {
        session: crate::amqp::engine::SessionId(0),
        handle,
    };
    let mut harness = Harness::new(Step::Local);
    harness.request(testing::attach_producer("q"));
    for handle in 0..CONSUMERS {
        harness.request(Request::AttachConsumer {
            options: None,
            conn: other,
            link: link(handle),
            node: ConsumerNode::Queue {
                name: "q".into(),
                browse: false,
            }
            .into(),
            container_id: "many".into(),
            filter: None,
        });
        harness.request(Request::Credit {
            conn: other,
            link: link(handle),
            credit: 1,
            drain: false,
        });
    }
    harness.commit();
    for _ in 0..CONSUMERS {
        harness.publish("a");
    }
    harness.commit();
    let info = |harness: &Harness| harness.core.queue_info()[0].1;
    assert_eq!(info(&harness).unsettled, u64::from(CONSUMERS), "one each");
    // What the producer's connection hears; the other one's is dropped.
    let said_to_producer = |harness: &mut Harness| {
        let mut said = Vec::new();
        while let Some((conn, message)) = harness.core.poll_to_connection() {
            if conn == testing::CONN {
                said.push(testing::describe(&message));
            }
        }
        said
    };
    said_to_producer(&mut harness);
    harness.request(Request::Disconnect { conn: other });
    harness.publish("b");
    harness.commit();
    let q = info(&harness);
    assert_eq!((q.consumers, q.unsettled), (0, 0), "all detached");
    assert_eq!(q.depth, u64::from(CONSUMERS) + 1, "what they held is back");
    assert_eq!(
        said_to_producer(&mut harness),
        [format!("accepted {CONSUMERS}")]
    );
}
