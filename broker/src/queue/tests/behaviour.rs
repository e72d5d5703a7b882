//! One behaviour per test, checked by exact effects and counters.

use super::*;
use crate::queue::{CloseReason, DeadLetterReason, Overflow, RejectReason};

fn dead_lettered(from: &str, seq: Seq, to: Option<&str>, reason: DeadLetterReason) -> Effect {
    Effect::DeadLettered {
        from: from.into(),
        seq,
        to: to.map(Into::into),
        reason,
    }
}

/// A queue `q` dead-lettering to a declared `dlq`, which has consumer 9
/// with plenty of credit.
fn with_dead_letter_queue(config: QueueConfig) -> Bench {
    let mut bench = Bench::new();
    bench.declare("dlq", durable_queue());
    bench.declare(
        "q",
        QueueConfig {
            dead_letter_queue: Some("dlq".into()),
            ..config
        },
    );
    bench.attach(9, "dlq");
    bench.credit(9, 100);
    bench
}

#[test]
fn consumers_share_a_queue_round_robin() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    bench.attach(1, "q");
    bench.attach(2, "q");
    bench.credit(1, 10);
    bench.credit(2, 10);
    let mut all = Vec::new();
    for body in ["a", "b", "c", "d"] {
        let (_, effects) = bench.publish("q", durable(body));
        all.extend(delivered(&effects));
    }
    assert_eq!(all, [(1, 1), (2, 2), (1, 3), (2, 4)]);
    assert_eq!(bench.info("q"), (0, 4));
}

#[test]
fn waiting_messages_go_round_robin_as_credit_allows() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    for body in ["a", "b", "c", "d", "e"] {
        bench.send("q", body);
    }
    bench.attach(1, "q");
    bench.attach(2, "q");
    assert_eq!(delivered(&bench.credit(1, 1)), [(1, 1)]);
    assert_eq!(delivered(&bench.credit(2, 3)), [(2, 2), (2, 3), (2, 4)]);
    assert_eq!(delivered(&bench.credit(1, 5)), [(1, 5)]);
}

#[test]
fn credit_is_absolute_and_each_delivery_uses_one() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    for body in ["a", "b", "c", "d", "e"] {
        bench.send("q", body);
    }
    bench.attach(1, "q");
    assert_eq!(delivered(&bench.credit(1, 2)), [(1, 1), (1, 2)]);
    // Credit 2 again is two more, not four: it replaces what was left (0).
    assert_eq!(delivered(&bench.credit(1, 2)), [(1, 3), (1, 4)]);
    assert_eq!(bench.credit(1, 0), []);
    assert_eq!(bench.info("q"), (1, 4));
    let (seq, effects) = bench.publish("q", durable("f"));
    assert_eq!(delivered(&effects), [], "no credit left");
    assert_eq!(delivered(&bench.credit(1, 9)), [(1, 5), (1, seq)]);
}

#[test]
fn drain_delivers_what_it_can_then_gives_the_rest_back() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    bench.send("q", "a");
    bench.attach(1, "q");
    let effects = bench.apply(Command::Credit {
        consumer: 1,
        credit: 5,
        drain: true,
    });
    assert_eq!(delivered(&effects), [(1, 1)]);
    assert_eq!(effects.last(), Some(&Effect::DrainComplete { consumer: 1 }));
    let (_, effects) = bench.publish("q", durable("b"));
    assert_eq!(delivered(&effects), [], "drained credit is gone");
}

#[test]
fn drain_with_nothing_to_deliver_completes_at_once() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    bench.attach(1, "q");
    let effects = bench.apply(Command::Credit {
        consumer: 1,
        credit: 3,
        drain: true,
    });
    assert_eq!(effects, [Effect::DrainComplete { consumer: 1 }]);
}

#[test]
fn released_message_goes_back_to_its_place_uncounted() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    let first = bench.send("q", "a");
    bench.send("q", "b");
    bench.attach(1, "q");
    let delivery = only_delivery(&bench.credit(1, 1)).clone();
    assert!(delivery.first_acquirer);
    assert!(!delivery.settled);
    assert_eq!(bench.settle("q", first, Outcome::Released), []);
    let effects = bench.credit(1, 2);
    assert_eq!(delivered(&effects), [(1, first), (1, first + 1)]);
    let again = deliveries(&effects).next().expect("delivered").1;
    assert_eq!(again.delivery_count, 0);
    assert!(!again.first_acquirer, "acquired before");
}

#[test]
fn modified_delivery_failed_counts_and_merges_annotations() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    let seq = bench.send("q", "a");
    bench.attach(1, "q");
    bench.credit(1, 1);
    let annotate = |value: u32| Outcome::Modified {
        delivery_failed: true,
        undeliverable_here: false,
        annotations: vec![(symbol("x-note"), Value::Uint(value))],
    };
    assert_eq!(bench.settle("q", seq, annotate(1)), []);
    let effects = bench.credit(1, 1);
    let delivery = only_delivery(&effects);
    assert_eq!(delivery.delivery_count, 1);
    assert_eq!(delivery.annotations, [(symbol("x-note"), Value::Uint(1))]);
    // The same key is replaced.
    let effects = [bench.settle("q", seq, annotate(2)), bench.credit(1, 1)].concat();
    let delivery = only_delivery(&effects);
    assert_eq!(delivery.delivery_count, 2);
    assert_eq!(delivery.annotations, [(symbol("x-note"), Value::Uint(2))]);
}

#[test]
fn modified_without_failure_does_not_count() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    let seq = bench.send("q", "a");
    bench.attach(1, "q");
    bench.credit(1, 1);
    bench.settle("q", seq, modified(false, false));
    assert_eq!(only_delivery(&bench.credit(1, 1)).delivery_count, 0);
}

#[test]
fn undeliverable_here_keeps_a_message_from_that_consumer() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    let seq = bench.send("q", "a");
    bench.attach(1, "q");
    bench.attach(2, "q");
    bench.credit(1, 5);
    assert_eq!(bench.settle("q", seq, modified(false, true)), []);
    assert_eq!(bench.info("q"), (1, 0));
    let (later, effects) = bench.publish("q", durable("b"));
    assert_eq!(delivered(&effects), [(1, later)]);
    assert_eq!(delivered(&bench.credit(2, 5)), [(2, seq)]);
}

#[test]
fn rejected_message_moves_to_the_dead_letter_queue_annotated() {
    let mut bench = with_dead_letter_queue(durable_queue());
    let seq = bench.send("q", "a");
    bench.attach(1, "q");
    bench.credit(1, 1);
    bench.settle("q", seq, modified(true, false));
    bench.credit(1, 1);
    let effects = bench.settle("q", seq, Outcome::Rejected);
    assert_eq!(
        effects[0],
        dead_lettered("q", seq, Some("dlq"), DeadLetterReason::Rejected)
    );
    let delivery = only_delivery(&effects);
    assert_eq!((delivery.queue.as_str(), delivery.seq), ("dlq", seq));
    assert_eq!(delivery.delivery_count, 0, "counts start afresh");
    assert!(!delivery.first_acquirer);
    assert_eq!(
        delivery.annotations,
        [
            (symbol("x-opt-deadletter-reason"), symbol("rejected")),
            (symbol("x-opt-deadletter-queue"), Value::from("q")),
        ]
    );
    assert_eq!(bench.info("q"), (0, 0));
}

#[test]
fn dead_letters_without_a_declared_queue_are_dropped() {
    let mut bench = Bench::new();
    bench.declare("none", durable_queue());
    let missing = QueueConfig {
        dead_letter_queue: Some("missing".into()),
        ..durable_queue()
    };
    bench.declare("missing-dlq", missing);
    for queue in ["none", "missing-dlq"] {
        let seq = bench.send(queue, "a");
        let effects = bench.settle(queue, seq, Outcome::Rejected);
        assert_eq!(
            effects,
            [dead_lettered(queue, seq, None, DeadLetterReason::Rejected)]
        );
        assert_eq!(bench.info(queue), (0, 0));
    }
}

#[test]
fn reaching_the_delivery_limit_dead_letters() {
    let mut bench = with_dead_letter_queue(QueueConfig {
        delivery_limit: Some(2),
        ..durable_queue()
    });
    let seq = bench.send("q", "a");
    bench.attach(1, "q");
    bench.credit(1, 1);
    bench.settle("q", seq, modified(true, false));
    assert_eq!(only_delivery(&bench.credit(1, 1)).delivery_count, 1);
    let effects = bench.settle("q", seq, modified(true, false));
    assert_eq!(
        effects[0],
        dead_lettered("q", seq, Some("dlq"), DeadLetterReason::DeliveryLimit)
    );
    let delivery = only_delivery(&effects);
    assert_eq!(delivery.queue, "dlq");
    assert_eq!(
        delivery.annotations[0],
        (symbol("x-opt-deadletter-reason"), symbol("delivery-limit"))
    );
}

#[test]
fn expired_messages_are_never_delivered_and_dead_letter_on_expire() {
    let mut bench = with_dead_letter_queue(durable_queue());
    let (seq, _) = bench.publish(
        "q",
        NewMessage {
            ttl_ms: Some(100),
            ..durable("a")
        },
    );
    assert_eq!(bench.queues.next_expiry(), Some(1_100));
    bench.now_ms = 1_100;
    bench.attach(1, "q");
    assert_eq!(bench.credit(1, 5), [], "due messages are not delivered");
    let effects = bench.apply(Command::Expire);
    assert_eq!(
        effects[0],
        dead_lettered("q", seq, Some("dlq"), DeadLetterReason::Expired)
    );
    assert_eq!(only_delivery(&effects).queue, "dlq");
    assert_eq!(
        bench.queues.next_expiry(),
        None,
        "its expiry does not follow it"
    );
}

#[test]
fn a_dead_letter_that_would_arrive_expired_is_dropped() {
    let mut bench = Bench::new();
    // Two queues with a default TTL of 0, dead-lettering to each other:
    // passing the message back and forth would never end.
    for (queue, dlq) in [("a", "b"), ("b", "a")] {
        let config = QueueConfig {
            dead_letter_queue: Some(dlq.into()),
            default_ttl_ms: Some(0),
            ..durable_queue()
        };
        bench.declare(queue, config);
    }
    let seq = bench.send("a", "m");
    assert_eq!(bench.queues.next_expiry(), Some(bench.now_ms));
    assert_eq!(
        bench.apply(Command::Expire),
        [dead_lettered("a", seq, None, DeadLetterReason::Expired)]
    );
    assert_eq!(bench.queues.next_expiry(), None);
}

#[test]
fn expire_before_the_deadline_changes_nothing() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    bench.publish(
        "q",
        NewMessage {
            ttl_ms: Some(100),
            ..durable("a")
        },
    );
    bench.now_ms += 99;
    assert_eq!(bench.apply(Command::Expire), []);
    assert_eq!(bench.info("q"), (1, 0));
}

#[test]
fn expiry_takes_messages_a_consumer_holds() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    let (seq, _) = bench.publish(
        "q",
        NewMessage {
            ttl_ms: Some(10),
            ..durable("a")
        },
    );
    bench.attach(1, "q");
    bench.credit(1, 1);
    bench.now_ms += 10;
    assert_eq!(
        bench.apply(Command::Expire),
        [dead_lettered("q", seq, None, DeadLetterReason::Expired)]
    );
    assert_eq!(bench.info("q"), (0, 0));
    assert_eq!(bench.settle("q", seq, Outcome::Accepted), [], "gone");
}

#[test]
fn default_ttl_applies_when_the_header_has_none() {
    let mut bench = Bench::new();
    bench.declare(
        "q",
        QueueConfig {
            default_ttl_ms: Some(50),
            ..durable_queue()
        },
    );
    bench.send("q", "a");
    assert_eq!(bench.queues.next_expiry(), Some(1_050));
    bench.publish(
        "q",
        NewMessage {
            ttl_ms: Some(10),
            ..durable("b")
        },
    );
    assert_eq!(bench.queues.next_expiry(), Some(1_010), "header.ttl wins");
}

#[test]
fn absolute_expiry_counts_when_earlier_than_the_ttl() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    let message = |ttl_ms, absolute_expiry_ms| NewMessage {
        ttl_ms: Some(ttl_ms),
        absolute_expiry_ms: Some(absolute_expiry_ms),
        ..durable("a")
    };
    bench.publish("q", message(500, 1_300));
    assert_eq!(bench.queues.next_expiry(), Some(1_300));
    bench.publish("q", message(100, 5_000));
    assert_eq!(bench.queues.next_expiry(), Some(1_100));
    bench.now_ms = 1_100;
    let effects = bench.apply(Command::Expire);
    assert_eq!(effects.len(), 1);
    assert_eq!(bench.queues.next_expiry(), Some(1_300));
}

#[test]
fn reject_publish_refuses_at_max_length() {
    let mut bench = Bench::new();
    bench.declare(
        "q",
        QueueConfig {
            max_length: Some(2),
            ..durable_queue()
        },
    );
    assert_eq!(bench.queues.room("q"), Some(2));
    bench.send("q", "a");
    bench.send("q", "b");
    assert_eq!(bench.queues.room("q"), Some(0));
    let (seq, effects) = bench.publish("q", durable("c"));
    assert_eq!(
        effects,
        [Effect::EnqueueRejected {
            queue: "q".into(),
            seq,
            reason: RejectReason::Overflow
        }]
    );
    // Unsettled messages count too.
    bench.attach(1, "q");
    bench.credit(1, 1);
    let (_, effects) = bench.publish("q", durable("c"));
    assert!(matches!(effects[..], [Effect::EnqueueRejected { .. }]));
    bench.settle("q", 1, Outcome::Accepted);
    bench.send("q", "c");
}

#[test]
fn reject_publish_refuses_at_max_bytes() {
    let mut bench = Bench::new();
    bench.declare(
        "q",
        QueueConfig {
            max_bytes: Some(5),
            ..durable_queue()
        },
    );
    bench.send("q", "abc");
    assert_eq!(bench.queues.room("q"), Some(2));
    let (_, effects) = bench.publish("q", durable("def"));
    assert!(matches!(
        effects[..],
        [Effect::EnqueueRejected {
            reason: RejectReason::Overflow,
            ..
        }]
    ));
    bench.send("q", "de");
    assert_eq!(bench.queues.room("q"), Some(0));
}

#[test]
fn drop_head_dead_letters_the_oldest_to_make_room() {
    let mut bench = with_dead_letter_queue(QueueConfig {
        max_length: Some(2),
        overflow: Overflow::DropHead,
        ..durable_queue()
    });
    let first = bench.send("q", "a");
    bench.send("q", "b");
    assert_eq!(bench.queues.room("q"), Some(u64::MAX), "never refuses");
    let (third, effects) = bench.publish("q", durable("c"));
    assert_eq!(
        effects[0],
        Effect::Enqueued {
            queue: "q".into(),
            seq: third
        }
    );
    assert_eq!(
        effects[1],
        dead_lettered("q", first, Some("dlq"), DeadLetterReason::MaxLen)
    );
    assert_eq!(only_delivery(&effects).seq, first);
    assert_eq!(bench.info("q"), (2, 0));
}

#[test]
fn drop_head_refuses_a_message_that_can_never_fit() {
    let mut bench = Bench::new();
    bench.declare(
        "q",
        QueueConfig {
            max_bytes: Some(2),
            overflow: Overflow::DropHead,
            ..durable_queue()
        },
    );
    bench.send("q", "a");
    let (_, effects) = bench.publish("q", durable("abc"));
    assert!(matches!(
        effects[..],
        [Effect::EnqueueRejected {
            reason: RejectReason::Overflow,
            ..
        }]
    ));
    assert_eq!(bench.info("q"), (1, 0), "nothing dropped in vain");
}

#[test]
fn persistent_messages_displace_transient_ones_but_not_the_reverse() {
    let mut bench = Bench::new();
    bench.declare(
        "q",
        QueueConfig {
            max_length: Some(2),
            ..durable_queue()
        },
    );
    let (old, _) = bench.publish("q", transient("t"));
    bench.send("q", "p1");
    // Full, but a persistent message counts only persistent ones.
    let (seq, effects) = bench.publish("q", durable("p2"));
    assert_eq!(
        effects,
        [
            Effect::Enqueued {
                queue: "q".into(),
                seq
            },
            dead_lettered("q", old, None, DeadLetterReason::MaxLen),
        ]
    );
    let (_, effects) = bench.publish("q", transient("t2"));
    assert!(matches!(
        effects[..],
        [Effect::EnqueueRejected {
            reason: RejectReason::Overflow,
            ..
        }]
    ));
}

#[test]
fn browsers_see_every_message_once_without_taking_it() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    bench.attach(1, "q");
    bench.credit(1, 10);
    bench.apply(Command::Attach {
        consumer: 2,
        queue: "q".into(),
        browse: true,
        filter: None,
    });
    bench.credit(2, 2);
    let mut all = Vec::new();
    for body in ["a", "b", "c"] {
        let (_, effects) = bench.publish("q", durable(body));
        for (consumer, delivery) in deliveries(&effects) {
            assert_eq!(delivery.settled, consumer == 2);
            assert_eq!(delivery.first_acquirer, consumer == 1);
        }
        all.extend(delivered(&effects));
    }
    assert_eq!(all, [(1, 1), (2, 1), (1, 2), (2, 2), (1, 3)]);
    assert_eq!(bench.info("q"), (0, 3), "browsing acquires nothing");
    assert_eq!(delivered(&bench.credit(2, 5)), [(2, 3)], "once each");
    bench.settle("q", 1, Outcome::Released);
    assert_eq!(delivered(&bench.credit(2, 5)), [], "no second copy");
}

#[test]
fn detach_puts_held_messages_back_uncounted() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    bench.send("q", "a");
    bench.send("q", "b");
    bench.attach(1, "q");
    bench.credit(1, 2);
    bench.attach(2, "q");
    assert_eq!(bench.apply(Command::Detach { consumer: 1 }), []);
    assert_eq!(bench.info("q"), (2, 0));
    let effects = bench.credit(2, 5);
    assert_eq!(delivered(&effects), [(2, 1), (2, 2)]);
    assert!(deliveries(&effects).all(|(_, d)| d.delivery_count == 0));
}

#[test]
fn detach_commands_count_a_failed_delivery_for_what_the_consumer_held() {
    let mut bench = with_dead_letter_queue(QueueConfig {
        delivery_limit: Some(2),
        ..durable_queue()
    });
    let first = bench.send("q", "a");
    let second = bench.send("q", "b");
    bench.attach(1, "q");
    bench.credit(1, 1);
    bench.settle("q", first, modified(true, false));
    bench.credit(1, 2);
    let commands = bench.queues.detach_commands(1);
    assert_eq!(commands.len(), 4, "{commands:#?}");
    let effects: Vec<Effect> = commands.into_iter().flat_map(|c| bench.apply(c)).collect();
    assert_eq!(delivered(&effects), [(9, first)], "none back to consumer 1");
    assert!(effects.contains(&dead_lettered(
        "q",
        first,
        Some("dlq"),
        DeadLetterReason::DeliveryLimit
    )));
    bench.attach(2, "q");
    let effects = bench.credit(2, 5);
    assert_eq!(only_delivery(&effects).seq, second);
    assert_eq!(only_delivery(&effects).delivery_count, 1);
    assert_eq!(
        bench.queues.detach_commands(7),
        [Command::Detach { consumer: 7 }]
    );
}

#[test]
fn deleting_a_queue_closes_its_consumers_and_drops_its_messages() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    let seq = bench.send("q", "a");
    bench.attach(1, "q");
    bench.attach(2, "q");
    bench.credit(1, 1);
    let effects = bench.apply(Command::Delete { queue: "q".into() });
    assert_eq!(
        effects,
        [
            Effect::ConsumerClosed {
                consumer: 1,
                reason: CloseReason::QueueDeleted
            },
            Effect::ConsumerClosed {
                consumer: 2,
                reason: CloseReason::QueueDeleted
            },
            Effect::Deleted { queue: "q".into() },
        ]
    );
    assert_eq!(bench.queues.info("q"), None);
    assert_eq!(bench.settle("q", seq, Outcome::Accepted), []);
    assert_eq!(bench.credit(1, 1), [], "consumer 1 is gone");
    assert_eq!(bench.apply(Command::Delete { queue: "q".into() }), []);
}

#[test]
fn declare_is_idempotent_and_keeps_the_first_config() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    bench.declare("q", durable_queue());
    let other = QueueConfig {
        max_length: Some(1),
        ..durable_queue()
    };
    let effects = bench.apply(Command::Declare {
        queue: "q".into(),
        config: Box::new(other),
    });
    assert_eq!(
        effects,
        [Effect::DeclareConflict {
            queue: "q".into(),
            existing: durable_queue()
        }]
    );
    assert_eq!(bench.queues.room("q"), Some(u64::MAX));
}

#[test]
fn enqueue_rejects_unknown_queues_and_stale_seqs() {
    let mut bench = Bench::new();
    let rejected = |queue: &str, seq, reason| Effect::EnqueueRejected {
        queue: queue.into(),
        seq,
        reason,
    };
    let (seq, effects) = bench.publish("nowhere", durable("a"));
    assert_eq!(effects, [rejected("nowhere", seq, RejectReason::NotFound)]);
    bench.declare("q", durable_queue());
    let seq = bench.send("q", "a");
    assert_eq!(bench.queues.last_seq(), seq);
    let effects = bench.apply(Command::Enqueue {
        queue: "q".into(),
        seq,
        message: durable("b"),
    });
    assert_eq!(
        effects,
        [rejected("q", seq, RejectReason::SeqNotIncreasing)]
    );
}

#[test]
fn settle_works_wherever_the_message_is() {
    let mut bench = Bench::new();
    bench.declare("q", durable_queue());
    let first = bench.send("q", "a");
    let second = bench.send("q", "b");
    // Ready messages, as on replay.
    assert_eq!(bench.settle("q", first, Outcome::Released), []);
    bench.settle("q", first, modified(true, false));
    bench.settle("q", second, Outcome::Accepted);
    assert_eq!(bench.info("q"), (1, 0));
    assert_eq!(bench.settle("q", 99, Outcome::Accepted), [], "unknown seq");
    assert_eq!(
        bench.settle("other", first, Outcome::Accepted),
        [],
        "unknown queue"
    );
    bench.attach(1, "q");
    assert_eq!(only_delivery(&bench.credit(1, 1)).delivery_count, 1);
}

#[test]
fn attaching_to_an_unknown_queue_closes_the_consumer() {
    let mut bench = Bench::new();
    let effects = bench.apply(Command::Attach {
        consumer: 1,
        queue: "nowhere".into(),
        browse: false,
        filter: None,
    });
    assert_eq!(
        effects,
        [Effect::ConsumerClosed {
            consumer: 1,
            reason: CloseReason::QueueNotFound
        }]
    );
    assert_eq!(bench.credit(1, 1), [], "never attached");
}

/// A snapshot is the whole state: a machine restored from it goes on
/// exactly as the live one does, with what each consumer holds, the
/// failed deliveries counted, the annotations and expiries.
#[test]
fn a_machine_restored_from_its_whole_state_goes_on_as_the_live_one() {
    let mut bench = Bench::new();
    bench.declare("durable", durable_queue());
    bench.declare("transient", QueueConfig::default());
    let kept = bench.send("durable", "p");
    bench.publish("durable", transient("t"));
    bench.send("transient", "p");
    bench.publish(
        "durable",
        NewMessage {
            ttl_ms: Some(500),
            ..durable("e")
        },
    );
    bench.attach(1, "durable");
    bench.credit(1, 1);
    bench.settle(
        "durable",
        kept,
        Outcome::Modified {
            delivery_failed: true,
            undeliverable_here: true,
            annotations: vec![(symbol("x-k"), Value::Uint(7))],
        },
    );
    bench.credit(1, 1);

    let encoded = whole(&bench.queues);
    let mut restored = Bench {
        queues: from_whole(encoded.clone()),
        now_ms: bench.now_ms,
        next_seq: bench.next_seq,
    };
    assert_eq!(whole(&restored.queues), encoded);
    assert_eq!(restored.queues.next_expiry(), Some(1_500));
    bench.attach(2, "durable");
    restored.attach(2, "durable");
    let effects = restored.credit(2, 5);
    assert_eq!(effects, bench.credit(2, 5));
    let delivery = deliveries(&effects).next().expect("delivered").1;
    assert_eq!(delivery.delivery_count, 1);
    assert!(
        !delivery.first_acquirer,
        "a failed delivery implies an acquisition"
    );
    assert_eq!(delivery.annotations, [(symbol("x-k"), Value::Uint(7))]);
}

/// A durable queue that remembers `message-id`s for 1 s, at most 3.
fn dedup_queue() -> QueueConfig {
    QueueConfig {
        dedup_window_ms: Some(1_000),
        dedup_window_ids: Some(3),
        ..durable_queue()
    }
}

fn with_id(body: &'static str, id: &'static str) -> NewMessage {
    NewMessage {
        message_id: Some(Bytes::from_static(id.as_bytes())),
        ..durable(body)
    }
}

#[test]
fn a_message_id_seen_within_the_window_is_taken_but_not_enqueued_again() {
    let mut bench = Bench::new();
    bench.declare("q", dedup_queue());
    let (_, first) = bench.publish("q", with_id("a", "order-1"));
    assert!(matches!(first[..], [Effect::Enqueued { .. }]), "{first:?}");
    // The resend: no effect at all, which the node answers `accepted`.
    let (_, again) = bench.publish("q", with_id("a", "order-1"));
    assert_eq!(again, []);
    assert_eq!(bench.info("q"), (1, 0));
    // Another id, and a message without one, are enqueued.
    bench.publish("q", with_id("b", "order-2"));
    bench.send("q", "no id");
    assert_eq!(bench.info("q"), (3, 0));
    // Once the window has passed, the id is new again.
    bench.now_ms += 1_000;
    bench.publish("q", with_id("a", "order-1"));
    assert_eq!(bench.info("q"), (4, 0));
}

#[test]
fn dedup_is_off_without_a_window_and_for_transient_messages_of_a_durable_queue() {
    let mut bench = Bench::new();
    bench.declare("plain", durable_queue());
    bench.publish("plain", with_id("a", "x"));
    bench.publish("plain", with_id("a", "x"));
    assert_eq!(bench.info("plain"), (2, 0));

    // A transient message is not logged, so its id is not remembered
    // either: a restart could not rebuild it.
    bench.declare("q", dedup_queue());
    let transient = |body| NewMessage {
        durable: false,
        ..with_id(body, "t")
    };
    bench.publish("q", transient("a"));
    bench.publish("q", transient("a"));
    assert_eq!(bench.info("q"), (2, 0));
}

#[test]
fn the_dedup_window_survives_a_snapshot() {
    let mut bench = Bench::new();
    bench.declare("q", dedup_queue());
    for (body, id) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")] {
        bench.publish("q", with_id(body, id));
    }
    let mut bench = Bench {
        queues: from_whole(whole(&bench.queues)),
        ..bench
    };
    // At most 3 ids: "2" to "4" are remembered, "1" was forgotten.
    bench.publish("q", with_id("b", "2"));
    bench.publish("q", with_id("d", "4"));
    assert_eq!(bench.info("q"), (4, 0));
    bench.publish("q", with_id("a", "1"));
    assert_eq!(bench.info("q"), (5, 0));
}

/// A dynamic node's queue goes with its last consumer, with what it holds.
#[test]
fn an_auto_delete_queue_goes_with_its_last_consumer() {
    let mut bench = Bench::new();
    let config = QueueConfig {
        auto_delete: true,
        ..QueueConfig::default()
    };
    bench.declare("temp", config);
    bench.send("temp", "a");
    bench.attach(1, "temp");
    bench.attach(2, "temp");
    bench.credit(1, 1);
    assert!(bench.apply(Command::Detach { consumer: 1 }).is_empty());
    assert_eq!(bench.info("temp"), (1, 0), "one consumer is left");
    let effects = bench.apply(Command::Detach { consumer: 2 });
    assert_eq!(
        effects,
        [Effect::Deleted {
            queue: "temp".into()
        }]
    );
    assert_eq!(bench.queues.info("temp"), None);
}

/// With thousands of consumers on one queue, most without credit, a
/// message still goes round robin among those with credit only, and each
/// consumer detaches on its own: the queue keeps its consumers with credit
/// apart rather than looking through all of them for each delivery.
#[test]
fn many_idle_consumers_leave_round_robin_to_those_with_credit() {
    let mut bench = Bench::new();
    bench.declare("q", QueueConfig::default());
    for consumer in 1..=2_000 {
        bench.attach(consumer, "q");
    }
    bench.credit(700, 2);
    bench.credit(1_300, 2);
    let mut got = Vec::new();
    for body in ["a", "b", "c", "d"] {
        let (_, effects) = bench.publish("q", transient(body));
        got.extend(
            delivered(&effects)
                .into_iter()
                .map(|(consumer, _)| consumer),
        );
    }
    assert_eq!(got, [700, 1_300, 700, 1_300]);
    let (_, effects) = bench.publish("q", transient("e"));
    assert!(delivered(&effects).is_empty(), "no credit left");
    for consumer in (1..=2_000).rev() {
        bench.apply(Command::Detach { consumer });
    }
    let info = bench.queues.info("q").expect("queue exists");
    assert_eq!((info.depth, info.unsettled, info.consumers), (5, 0, 0));
}
