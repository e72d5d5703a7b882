//! Transactions through the core: what a client sees at each step of a
//! transaction's life, over both commit steps alike.

use super::*;
use crate::amqp::types::{ControlMessage, Declare, Discharge};
use crate::config::ClusterConfig;
use crate::node::testing::{COORDINATOR, coordinate, txn_id};

/// The delivered harness with transaction 0 declared (by delivery 0 of the
/// coordinator link).
fn declared(step: Step) -> Harness {
    let mut harness = Harness::delivered(step);
    harness.request(coordinate(0, ControlMessage::Declare(Declare::default())));
    assert_eq!(harness.said(), ["declared 0000000000000000 0"], "{step:?}");
    harness
}

/// The producer publishes `body` as delivery `id` in transaction `txn`.
fn publish_in(harness: &mut Harness, txn: u64, id: u32, body: &'static str) {
    let mut request = testing::publish(id, body);
    if let Request::Publish { txn: in_txn, .. } = &mut request {
        *in_txn = Some(txn_id(txn));
    }
    harness.request(request);
}

fn discharge(harness: &mut Harness, id: u32, txn: u64, fail: bool) {
    let discharge = Discharge {
        txn_id: txn_id(txn),
        fail,
    };
    harness.request(coordinate(id, ControlMessage::Discharge(discharge)));
}

/// The consume-transform-produce cycle: a message published and one
/// accepted in a transaction take effect together, in one entry, only
/// once it commits; the producer's outcome names the transaction at once.
#[test]
fn a_commit_applies_the_transactions_publishes_and_settles_in_one_entry() {
    for step in STEPS {
        let mut harness = declared(step);
        publish_in(&mut harness, 0, 1, "b");
        harness.settle_in(Some(txn_id(0)), Outcome::Accepted);
        assert_eq!(
            harness.said(),
            ["in 0000000000000000: accepted 1"],
            "{step:?}: provisionally accepted, nothing delivered"
        );
        assert_eq!(harness.uncommitted(), 0, "{step:?}: nothing proposed yet");
        discharge(&mut harness, 1, 0, false);
        assert_eq!(harness.uncommitted(), 1, "{step:?}: one entry");
        assert_eq!(harness.said(), Vec::<String>::new(), "{step:?}: not before");
        harness.commit();
        assert_eq!(
            harness.said(),
            ["deliver q 3.0", "accepted 1"],
            "{step:?}: \"b\" enqueued, the discharge answered"
        );
        harness.restart();
        let q = harness
            .core
            .queue_info()
            .into_iter()
            .find(|(name, _)| name == "q");
        let q = q.expect("q is declared").1;
        assert_eq!(
            q.depth + q.unsettled,
            1,
            "{step:?}: \"a\" gone, \"b\" kept (held, over Raft, by the old consumer)"
        );
    }
}

/// A rollback enqueues nothing, and what the transaction accepted comes
/// back to the queue as a failed delivery, to be delivered again.
#[test]
fn a_rollback_drops_the_publishes_and_redelivers_what_was_settled() {
    for step in STEPS {
        let mut harness = declared(step);
        publish_in(&mut harness, 0, 1, "b");
        harness.settle_in(Some(txn_id(0)), Outcome::Accepted);
        harness.said();
        discharge(&mut harness, 1, 0, true);
        assert_eq!(harness.said(), ["accepted 1"], "{step:?}");
        harness.commit();
        assert_eq!(
            harness.said(),
            ["deliver q 2.0 (failed 1)"],
            "{step:?}: \"a\" again, never \"b\""
        );
        discharge(&mut harness, 2, 0, false);
        assert_eq!(
            harness.said(),
            ["rejected 2: no such transaction on this connection"],
            "{step:?}: a transaction is discharged once"
        );
    }
}

/// A transaction commits whole or not at all: if one of its settles no
/// longer holds (its consumer detached, and the message went back), its
/// publishes are not enqueued either. Over Raft the group finds out when
/// it applies the commit; the local step knows before it logs it; the
/// client hears the same.
#[test]
fn a_transaction_that_cannot_apply_whole_is_rolled_back_whole() {
    for step in STEPS {
        let mut harness = declared(step);
        publish_in(&mut harness, 0, 1, "b");
        harness.settle_in(Some(txn_id(0)), Outcome::Accepted);
        harness.request(Request::Detach {
            conn: testing::CONN,
            link: testing::CONSUMER,
            closed: false,
        });
        harness.commit();
        harness.said();
        discharge(&mut harness, 1, 0, false);
        harness.commit();
        assert_eq!(
            harness.said(),
            [
                "rejected 1: the transaction was rolled back: message 33554432 of queue \"q\" \
                 went back to its queue before the commit (its consumer detached)"
            ],
            "{step:?}"
        );
        assert_eq!(
            harness.depth(),
            1,
            "{step:?}: \"a\" is back, \"b\" never came"
        );
    }
}

/// A controller that goes away leaves its transactions to roll back.
#[test]
fn a_detached_coordinator_rolls_back_its_transactions() {
    for step in STEPS {
        let mut harness = declared(step);
        harness.settle_in(Some(txn_id(0)), Outcome::Accepted);
        harness.request(Request::Detach {
            conn: testing::CONN,
            link: COORDINATOR,
            closed: true,
        });
        harness.commit();
        assert_eq!(harness.said(), ["deliver q 2.0 (failed 1)"], "{step:?}");
    }
}

/// The local step refuses a commit's entry when the disk is full: the
/// transaction rolls back, saying why.
#[test]
fn a_commit_refused_for_a_full_disk_rolls_back() {
    let mut harness = declared(Step::Local);
    publish_in(&mut harness, 0, 1, "b");
    harness.settle_in(Some(txn_id(0)), Outcome::Accepted);
    harness.said();
    discharge(&mut harness, 1, 0, false);
    harness.refuse();
    assert_eq!(
        harness.said(),
        ["rejected 1: the transaction was rolled back: the broker's disk is full"]
    );
    harness.commit();
    assert_eq!(harness.said(), ["deliver q 2.0 (failed 1)"]);
}

/// Distributed transactions, and transactions other connections declared,
/// are refused on the delivery that names them; the link stays.
#[test]
fn distributed_and_unknown_transactions_are_refused() {
    for step in STEPS {
        let mut harness = Harness::delivered(step);
        let global = Declare {
            global_id: Some(crate::amqp::codec::Value::from("xid-1")),
        };
        harness.request(coordinate(0, ControlMessage::Declare(global)));
        publish_in(&mut harness, 7, 1, "b");
        assert_eq!(
            harness.said(),
            [
                "rejected 0: distributed transactions are not supported",
                "rejected 1: no such transaction on this connection",
            ],
            "{step:?}"
        );
        harness.settle_in(Some(txn_id(7)), Outcome::Accepted);
        assert_eq!(
            harness.said(),
            ["close link: amqp:transaction:unknown-id"],
            "{step:?}: the consumer's link ends, and gives back what it held"
        );
    }
}

/// A commit is one entry of one group: a transaction whose queues live in
/// two groups of a cluster is rolled back at its discharge.
#[test]
fn a_transaction_across_groups_is_rolled_back() {
    let config = Config {
        cluster: ClusterConfig {
            groups: 3,
            ..ClusterConfig::default()
        },
        ..Config::default()
    };
    let mut harness = Harness::with_config(Step::Raft, config);
    let group_of = |queue: &str| harness.core.placement.group_of(queue);
    let other = (0..)
        .map(|n| format!("q{n}"))
        .find(|queue| group_of(queue) != group_of("q"))
        .expect("some name lands in another group");
    harness.request(testing::attach_producer("q"));
    harness.commit();
    harness.said();
    harness.request(coordinate(0, ControlMessage::Declare(Declare::default())));
    publish_in(&mut harness, 0, 1, "b");
    let mut other_publish = testing::attach_producer(&other);
    if let Request::AttachProducer { link, .. } = &mut other_publish {
        link.handle = 5;
    }
    harness.request(other_publish);
    harness.commit();
    harness.said();
    let mut request = testing::publish(2, "c");
    if let Request::Publish { txn, delivery, .. } = &mut request {
        *txn = Some(txn_id(0));
        delivery.link.handle = 5;
    }
    harness.request(request);
    discharge(&mut harness, 1, 0, false);
    let said = harness.said();
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(
        said[1].starts_with("rejected 1: the transaction was rolled back: its queues live in 2"),
        "{said:?}"
    );
    assert_eq!(harness.uncommitted(), 0, "nothing proposed");
}

/// Each open transaction holds what it publishes: a connection may have
/// only so many open, and a transaction only so much in it.
#[test]
fn open_transactions_and_what_they_hold_are_bounded() {
    let mut harness = Harness::delivered(Step::Local);
    for id in 0..16 {
        harness.request(coordinate(id, ControlMessage::Declare(Declare::default())));
    }
    assert_eq!(harness.said().len(), 16);
    harness.request(coordinate(16, ControlMessage::Declare(Declare::default())));
    assert_eq!(
        harness.said(),
        ["rejected 16: a connection may have at most 16 transactions open"]
    );
    for id in 0..4096 {
        publish_in(&mut harness, 0, id, "m");
    }
    // What the producer hears, without the credit it is topped up with.
    let answers = |harness: &mut Harness| -> Vec<String> {
        let said = harness.said().into_iter();
        said.filter(|s| !s.starts_with("credit")).collect()
    };
    let said = answers(&mut harness);
    assert_eq!(said.len(), 4096);
    let refused: Vec<_> = said.iter().filter(|s| !s.contains(": accepted ")).collect();
    assert_eq!(refused, Vec::<&String>::new());
    publish_in(&mut harness, 0, 4096, "one too many");
    let said = answers(&mut harness);
    assert!(said[0].contains("at most 4096 publishes"), "{said:?}");
    discharge(&mut harness, 17, 0, false);
    let said = harness.said();
    assert!(
        said[0].starts_with("rejected 17: the transaction was rolled back: a transaction holds"),
        "{said:?}"
    );
    assert_eq!(harness.uncommitted(), 0, "nothing of it proposed");
}

/// The delivered message acquired in transaction 0 (the consumer's flow
/// named it, AMQP 1.0 §4.4.3).
fn acquire_in(harness: &mut Harness, txn: u64) {
    harness.request(Request::AcquiredInTransaction {
        consumer: ORIGIN.first_consumer(),
        queue: "q".into(),
        seq: 2 << 24,
        txn: txn_id(txn),
    });
}

/// What a consumer acquired in a transaction goes back to its queue if
/// the transaction rolls back, once, even if the transaction also accepted
/// it; a commit leaves it with the consumer, to settle as it likes.
#[test]
fn a_transactional_acquisition_is_undone_by_a_rollback_only() {
    for (step, accepted_too) in STEPS.into_iter().flat_map(|s| [(s, false), (s, true)]) {
        let mut harness = declared(step);
        acquire_in(&mut harness, 0);
        if accepted_too {
            harness.settle_in(Some(txn_id(0)), Outcome::Accepted);
            harness.said();
        }
        discharge(&mut harness, 1, 0, true);
        harness.commit();
        assert_eq!(
            harness.said(),
            ["accepted 1", "deliver q 2.0 (failed 1)"],
            "{step:?}, accepted in it too: {accepted_too}: \"a\" back, once"
        );
    }
    for step in STEPS {
        let mut harness = declared(step);
        acquire_in(&mut harness, 0);
        discharge(&mut harness, 1, 0, false);
        harness.commit();
        assert_eq!(harness.said(), ["accepted 1"], "{step:?}");
        harness.settle(Outcome::Accepted);
        harness.commit();
        assert_eq!(
            harness.depth(),
            0,
            "{step:?}: \"a\" stayed with its consumer"
        );
    }
}

/// An acquisition in a transaction the connection does not have ends the
/// consumer's link, as a transactional settle would.
#[test]
fn an_acquisition_in_an_unknown_transaction_closes_the_consumer() {
    for step in STEPS {
        let mut harness = declared(step);
        acquire_in(&mut harness, 9);
        assert_eq!(
            harness.said(),
            ["close link: amqp:transaction:unknown-id"],
            "{step:?}"
        );
    }
}
