//! Transactions: all of their commands, in order, or none.

use super::*;
use crate::queue::{Guarded, Overflow, TransactionRefusal};

/// `q` holding "a" (seq 1), delivered to consumer 1.
fn held(config: QueueConfig) -> Bench {
    let mut bench = Bench::new();
    bench.declare("q", config);
    bench.send("q", "a");
    bench.attach(1, "q");
    assert_eq!(delivered(&bench.credit(1, 10)), [(1, 1)]);
    bench
}

fn enqueue(seq: Seq, body: &'static str) -> Guarded {
    Guarded {
        guard: None,
        command: Command::Enqueue {
            queue: "q".into(),
            seq,
            message: durable(body),
        },
    }
}

fn accept(seq: Seq, guard: Option<ConsumerId>) -> Guarded {
    Guarded {
        guard,
        command: Command::Settle {
            queue: "q".into(),
            seq,
            outcome: Outcome::Accepted,
        },
    }
}

fn commit(bench: &mut Bench, work: Vec<Guarded>) -> Vec<Effect> {
    bench.apply(Command::Transaction { work })
}

fn refused(reason: TransactionRefusal) -> Vec<Effect> {
    vec![Effect::TransactionRefused { reason }]
}

#[test]
fn a_transaction_applies_its_commands_in_order() {
    let mut bench = held(durable_queue());
    let effects = commit(&mut bench, vec![accept(1, Some(1)), enqueue(2, "b")]);
    assert_eq!(
        effects[0],
        Effect::Enqueued {
            queue: "q".into(),
            seq: 2
        }
    );
    assert_eq!(delivered(&effects), [(1, 2)]);
    assert_eq!(bench.info("q"), (0, 1), "\"a\" settled, \"b\" delivered");
}

#[test]
fn a_transaction_that_would_overfill_a_queue_is_refused_whole() {
    let config = QueueConfig {
        max_length: Some(2),
        overflow: Overflow::RejectPublish,
        ..durable_queue()
    };
    let mut bench = held(config);
    // The settle would make room, but the check reads the queue as it is
    // before the transaction.
    let work = vec![accept(1, Some(1)), enqueue(2, "b"), enqueue(3, "c")];
    assert_eq!(
        commit(&mut bench, work),
        refused(TransactionRefusal::QueueFull { queue: "q".into() })
    );
    assert_eq!(bench.info("q"), (0, 1), "\"a\" still held, nothing added");
    let effects = commit(&mut bench, vec![enqueue(4, "b")]);
    assert_eq!(delivered(&effects), [(1, 4)], "one more fits");
}

#[test]
fn drop_head_makes_room_for_a_transaction_as_for_any_publish() {
    let config = QueueConfig {
        max_length: Some(1),
        overflow: Overflow::DropHead,
        ..durable_queue()
    };
    let mut bench = Bench::new();
    bench.declare("q", config);
    bench.send("q", "a");
    let effects = commit(&mut bench, vec![enqueue(2, "b"), enqueue(3, "c")]);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::TransactionRefused { .. })),
        "{effects:#?}"
    );
    assert_eq!(bench.info("q"), (1, 0), "only the newest kept");
}

#[test]
fn a_transaction_settling_a_message_its_consumer_lost_is_refused_whole() {
    let mut bench = held(durable_queue());
    let work = vec![enqueue(2, "b"), accept(1, Some(2))];
    assert_eq!(
        commit(&mut bench, work),
        refused(TransactionRefusal::NotHeld {
            queue: "q".into(),
            seq: 1
        })
    );
    assert_eq!(bench.info("q"), (0, 1));
    // Unguarded (the local step's), the settle takes whoever holds it.
    let effects = commit(&mut bench, vec![accept(1, None)]);
    assert_eq!(effects, []);
    assert_eq!(bench.info("q"), (0, 0));
}

#[test]
fn a_transaction_publishing_to_a_missing_queue_is_refused_whole() {
    let mut bench = held(durable_queue());
    let mut work = vec![accept(1, Some(1)), enqueue(2, "b")];
    if let Command::Enqueue { queue, .. } = &mut work[1].command {
        *queue = "gone".into();
    }
    assert_eq!(
        commit(&mut bench, work),
        refused(TransactionRefusal::QueueNotFound {
            queue: "gone".into()
        })
    );
    assert_eq!(bench.info("q"), (0, 1));
}
