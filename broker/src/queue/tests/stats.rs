//! The counters and the oldest message's arrival that metrics read
//! ([`Queues::reports`]): counted where each thing happens, and volatile.

use super::*;
use crate::queue::{QueueStats, Seqs};

/// The report of `queue`.
fn report(bench: &Bench, queue: &str) -> crate::queue::QueueReport {
    bench
        .queues
        .reports()
        .find(|report| report.name == queue)
        .expect("the queue exists")
}

#[test]
fn each_counter_counts_its_own_event() {
    let mut bench = Bench::new();
    bench.declare("dlq", durable_queue());
    bench.declare(
        "q",
        QueueConfig {
            dead_letter_queue: Some("dlq".into()),
            ..durable_queue()
        },
    );
    let accepted = bench.send("q", "a");
    let rejected = bench.send("q", "b");
    let released = bench.send("q", "c");
    bench.publish(
        "q",
        NewMessage {
            ttl_ms: Some(100),
            ..durable("d")
        },
    );
    bench.attach(1, "q");
    assert_eq!(delivered(&bench.credit(1, 3)).len(), 3);
    bench.settle("q", accepted, Outcome::Accepted);
    bench.settle("q", rejected, Outcome::Rejected);
    bench.settle("q", released, Outcome::Released);
    assert_eq!(delivered(&bench.credit(1, 1)), [(1, released)]);
    bench.now_ms += 100;
    bench.apply(Command::Expire);

    assert_eq!(
        report(&bench, "q").stats,
        QueueStats {
            published: 4,
            delivered: 4,
            redelivered: 1,
            acked: 1,
            dead_lettered: 1,
            expired: 1,
        }
    );
    // What a dead-letter queue receives is not published to it.
    assert_eq!(report(&bench, "dlq").stats, QueueStats::default());
    assert_eq!(report(&bench, "dlq").info.depth, 2);
}

#[test]
fn the_oldest_message_arrived_at_its_second_and_the_record_is_volatile() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    assert_eq!(report(&bench, "q").oldest_arrival_ms, None, "empty");
    let first = bench.send("q", "a");
    bench.now_ms += 400;
    bench.send("q", "b");
    bench.now_ms += 2_000;
    bench.send("q", "c");
    assert_eq!(report(&bench, "q").oldest_arrival_ms, Some(1_000));
    bench.attach(1, "q");
    bench.credit(1, 2);
    bench.settle("q", first, Outcome::Accepted);
    // `b` arrived within the second of `a`'s step: no later than it.
    assert_eq!(report(&bench, "q").oldest_arrival_ms, Some(1_000));
    bench.settle("q", first + 1, Outcome::Accepted);
    assert_eq!(report(&bench, "q").oldest_arrival_ms, Some(3_400));

    // Neither the counters nor the arrivals are in the state's encoding.
    let restored = from_whole(whole(&bench.queues));
    let restored = restored.reports().next().expect("q is restored");
    assert_eq!(restored.stats, QueueStats::default());
    assert_eq!(restored.oldest_arrival_ms, None);
}

#[test]
fn the_arrival_record_stays_bounded_and_keeps_the_oldest_message() {
    let mut bench = Bench::new();
    bench.declare("old", durable_queue());
    bench.declare("q", durable_queue());
    bench.send("old", "kept");
    bench.attach(1, "q");
    for _ in 0..3_000 {
        bench.now_ms += 1_000;
        let seq = bench.send("q", "gone");
        assert_eq!(delivered(&bench.credit(1, 1)), [(1, seq)]);
        bench.settle("q", seq, Outcome::Accepted);
    }
    let steps = bench.queues.arrival_steps();
    assert!(steps <= 1_025, "{steps} steps");
    assert_eq!(report(&bench, "q").stats.acked, 3_000);
    assert_eq!(report(&bench, "q").oldest_arrival_ms, None);
    assert_eq!(
        report(&bench, "old").oldest_arrival_ms,
        Some(1_000),
        "the oldest message's step survives every trim"
    );
}

/// A purge drops the ready messages, not those a consumer holds nor those
/// it is told to keep, and counts them as dropped.
#[test]
fn a_purge_drops_only_ready_messages_not_excepted() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    let held = bench.send("q", "a");
    let kept = bench.send("q", "b");
    bench.send("q", "c");
    bench.attach(1, "q");
    assert_eq!(delivered(&bench.credit(1, 1)), [(1, held)]);
    let except = Seqs([kept].into_iter().collect());
    let effects = bench.apply(Command::Purge {
        queue: "q".into(),
        except,
    });
    assert!(effects.contains(&Effect::Purged {
        queue: "q".into(),
        count: 1
    }));
    assert_eq!(bench.info("q"), (1, 1));
    assert_eq!(report(&bench, "q").stats.dead_lettered, 1);
    // The held message comes back when released; it was not purged.
    bench.settle("q", held, Outcome::Released);
    assert_eq!(bench.info("q"), (2, 0));
    // A purge of no queue does nothing, and says nothing.
    let effects = bench.apply(Command::Purge {
        queue: "none".into(),
        except: Seqs::default(),
    });
    assert_eq!(effects, []);
}

/// A move takes up to `max` ready messages, oldest first, keeping their
/// seqs, stops where the target is full, and delivers them from there.
#[test]
fn a_move_takes_the_oldest_ready_messages_while_they_fit() {
    let mut bench = Bench::new();
    bench.declare("from", durable_queue());
    bench.declare(
        "to",
        QueueConfig {
            max_length: Some(2),
            ..durable_queue()
        },
    );
    let seqs: Vec<Seq> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|body| bench.send("from", body))
        .collect();
    let mv = |max| Command::Move {
        from: "from".into(),
        to: "to".into(),
        max,
        except: Seqs::default(),
    };
    let effects = bench.apply(mv(1));
    assert!(effects.contains(&Effect::Moved {
        from: "from".into(),
        to: "to".into(),
        count: 1
    }));
    assert_eq!((bench.info("from"), bench.info("to")), ((3, 0), (1, 0)));
    // Room for one more only: the rest stays, in its place.
    let effects = bench.apply(mv(u64::MAX));
    assert!(effects.contains(&Effect::Moved {
        from: "from".into(),
        to: "to".into(),
        count: 1
    }));
    assert_eq!((bench.info("from"), bench.info("to")), ((2, 0), (2, 0)));
    bench.attach(1, "to");
    assert_eq!(delivered(&bench.credit(1, 5)), [(1, seqs[0]), (1, seqs[1])]);
    bench.attach(2, "from");
    assert_eq!(delivered(&bench.credit(2, 5)), [(2, seqs[2]), (2, seqs[3])]);
}
