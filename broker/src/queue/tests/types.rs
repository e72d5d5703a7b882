//! The queue types: priority, last-value, message groups, a single active
//! consumer, and scheduled delivery (any queue).

use super::*;
use crate::amqp::types::{Message, Section};
use crate::queue::{DeadLetterReason, PublishTraits};

/// A durable message of `body` with `traits`.
fn with(body: &'static str, traits: PublishTraits) -> NewMessage {
    NewMessage {
        traits: traits.boxed(),
        ..durable(body)
    }
}

fn with_priority(body: &'static str, priority: u8) -> NewMessage {
    let traits = PublishTraits {
        priority,
        ..PublishTraits::default()
    };
    with(body, traits)
}

fn in_group(body: &'static str, group: &str) -> NewMessage {
    let traits = PublishTraits {
        group: Some(group.into()),
        ..PublishTraits::default()
    };
    with(body, traits)
}

/// A message whose application property `instrument` is `key`.
fn priced(key: &str) -> NewMessage {
    let sections = vec![
        Section::ApplicationProperties(vec![("instrument".into(), Value::from(key))]),
        Section::Data(Bytes::from_static(b"price")),
    ];
    NewMessage {
        body: Message { sections }.encode(),
        ..durable("")
    }
}

fn queue(config: QueueConfig) -> Bench {
    let mut bench = Bench::new();
    bench.declare("q", config);
    bench
}

#[test]
fn a_priority_queue_delivers_higher_priorities_first_and_fifo_within_one() {
    let mut bench = queue(QueueConfig {
        priority_levels: Some(10),
        ..durable_queue()
    });
    let mut seqs = Vec::new();
    for (body, priority) in [
        ("low", 1),
        ("high", 9),
        ("mid", 5),
        ("high-2", 9),
        ("none", 4),
    ] {
        seqs.push(bench.publish("q", with_priority(body, priority)).0);
    }
    bench.attach(1, "q");
    let order: Vec<Seq> = delivered(&bench.credit(1, 10))
        .into_iter()
        .map(|(_, seq)| seq)
        .collect();
    assert_eq!(order, [seqs[1], seqs[3], seqs[2], seqs[4], seqs[0]]);
}

#[test]
fn priorities_above_the_levels_count_as_the_highest() {
    let mut bench = queue(QueueConfig {
        priority_levels: Some(2),
        ..durable_queue()
    });
    let zero = bench.publish("q", with_priority("zero", 0)).0;
    let one = bench.publish("q", with_priority("one", 1)).0;
    let nine = bench.publish("q", with_priority("nine", 9)).0;
    bench.attach(1, "q");
    let order: Vec<Seq> = delivered(&bench.credit(1, 10))
        .into_iter()
        .map(|(_, seq)| seq)
        .collect();
    assert_eq!(order, [one, nine, zero], "1 and 9 share the top level");
}

#[test]
fn a_released_message_goes_back_to_its_place_among_its_priority() {
    let mut bench = queue(QueueConfig {
        priority_levels: Some(10),
        ..durable_queue()
    });
    let high = bench.publish("q", with_priority("high", 9)).0;
    bench.attach(1, "q");
    assert_eq!(delivered(&bench.credit(1, 1)), [(1, high)]);
    let low = bench.publish("q", with_priority("low", 0)).0;
    bench.settle("q", high, Outcome::Released);
    assert_eq!(delivered(&bench.credit(1, 2)), [(1, high), (1, low)]);
}

#[test]
fn a_last_value_queue_keeps_one_message_per_key() {
    let mut bench = queue(QueueConfig {
        last_value_key: Some("instrument".into()),
        ..durable_queue()
    });
    let first = bench.publish("q", priced("EURUSD")).0;
    let other = bench.publish("q", priced("GBPUSD")).0;
    let (latest, effects) = bench.publish("q", priced("EURUSD"));
    assert!(
        effects.contains(&Effect::DeadLettered {
            from: "q".into(),
            seq: first,
            to: None,
            reason: DeadLetterReason::Replaced,
        }),
        "{effects:#?}"
    );
    assert_eq!(bench.info("q"), (2, 0));
    bench.attach(1, "q");
    assert_eq!(delivered(&bench.credit(1, 10)), [(1, other), (1, latest)]);
    // A held price is replaced too; its settle then finds nothing.
    let newest = bench.publish("q", priced("GBPUSD")).0;
    assert_eq!(bench.settle("q", other, Outcome::Accepted), []);
    assert_eq!(
        bench.info("q"),
        (0, 2),
        "the latest EURUSD and GBPUSD, held"
    );
    assert_eq!(
        delivered(&bench.credit(1, 10)),
        [],
        "{newest} was delivered"
    );
}

#[test]
fn a_message_without_the_key_is_kept_as_in_any_queue() {
    let mut bench = queue(QueueConfig {
        last_value_key: Some("instrument".into()),
        ..durable_queue()
    });
    bench.send("q", "a");
    bench.send("q", "b");
    assert_eq!(bench.info("q"), (2, 0));
}

/// Per-instrument ordering across competing consumers: a group's messages
/// go to the consumer that holds messages of the group, and only once it
/// holds none may the group go elsewhere.
#[test]
fn a_group_goes_to_one_consumer_at_a_time() {
    let mut bench = queue(QueueConfig {
        message_groups: true,
        ..durable_queue()
    });
    let a1 = bench.publish("q", in_group("a1", "EURUSD")).0;
    let a2 = bench.publish("q", in_group("a2", "EURUSD")).0;
    let b1 = bench.publish("q", in_group("b1", "GBPUSD")).0;
    bench.attach(1, "q");
    bench.attach(2, "q");
    assert_eq!(delivered(&bench.credit(1, 1)), [(1, a1)]);
    assert_eq!(
        delivered(&bench.credit(2, 5)),
        [(2, b1)],
        "EURUSD is consumer 1's while it holds a1"
    );
    assert_eq!(delivered(&bench.credit(1, 5)), [(1, a2)]);
    bench.settle("q", a1, Outcome::Accepted);
    bench.settle("q", a2, Outcome::Accepted);
    let (a3, effects) = bench.publish("q", in_group("a3", "EURUSD"));
    assert_eq!(
        delivered(&effects),
        [(2, a3)],
        "EURUSD is free again: it goes round robin"
    );
}

#[test]
fn a_detached_group_holder_hands_the_group_on_with_what_it_held_first() {
    let mut bench = queue(QueueConfig {
        message_groups: true,
        ..durable_queue()
    });
    let a1 = bench.publish("q", in_group("a1", "EURUSD")).0;
    let a2 = bench.publish("q", in_group("a2", "EURUSD")).0;
    bench.attach(1, "q");
    bench.attach(2, "q");
    assert_eq!(delivered(&bench.credit(1, 1)), [(1, a1)]);
    assert_eq!(delivered(&bench.credit(2, 5)), []);
    let effects = bench.apply(Command::Detach { consumer: 1 });
    assert_eq!(delivered(&effects), [(2, a1), (2, a2)]);
}

#[test]
fn one_consumer_is_active_and_the_next_takes_over_in_attach_order() {
    let mut bench = queue(QueueConfig {
        single_active_consumer: true,
        ..durable_queue()
    });
    bench.attach(3, "q");
    bench.attach(1, "q");
    bench.attach(2, "q");
    for consumer in [1, 2] {
        assert_eq!(bench.credit(consumer, 10), []);
    }
    bench.credit(3, 1);
    let a = bench.send("q", "a");
    let b = bench.send("q", "b");
    assert_eq!(
        bench.info("q"),
        (1, 1),
        "only consumer 3 received, as credit allowed"
    );
    let effects = bench.apply(Command::Detach { consumer: 3 });
    assert_eq!(
        delivered(&effects),
        [(1, a), (1, b)],
        "consumer 1, attached next, takes over with what 3 held first"
    );
}

#[test]
fn a_scheduled_message_waits_until_its_time() {
    let mut bench = queue(durable_queue());
    bench.attach(1, "q");
    bench.credit(1, 10);
    let at = bench.now_ms + 500;
    let (seq, effects) = bench.publish(
        "q",
        with(
            "later",
            PublishTraits {
                deliver_at_ms: Some(at),
                ..PublishTraits::default()
            },
        ),
    );
    assert_eq!(delivered(&effects), []);
    bench.send("q", "now");
    assert_eq!(bench.info("q"), (1, 1), "the unscheduled one went at once");
    assert_eq!(bench.queues.next_expiry(), Some(at));
    bench.now_ms = at - 1;
    assert_eq!(delivered(&bench.apply(Command::Expire)), []);
    bench.now_ms = at;
    assert_eq!(delivered(&bench.apply(Command::Expire)), [(1, seq)]);
    assert_eq!(bench.queues.next_expiry(), None);
}

/// A message whose application property `k` is `value`.
fn keyed(value: i32) -> NewMessage {
    let sections = vec![
        Section::ApplicationProperties(vec![("k".into(), Value::Int(value))]),
        Section::Data(Bytes::from_static(b"m")),
    ];
    NewMessage {
        body: Message { sections }.encode(),
        ..durable("")
    }
}

/// A filtered consumer takes only what passes its filter; what it skips
/// keeps its place for the others.
#[test]
fn a_filtered_consumer_skips_what_it_does_not_select_without_reordering() {
    let mut bench = queue(durable_queue());
    let seqs: Vec<Seq> = [1, 2, 1, 3]
        .into_iter()
        .map(|k| bench.publish("q", keyed(k)).0)
        .collect();
    bench.apply(Command::Attach {
        consumer: 1,
        queue: "q".into(),
        browse: false,
        filter: Some(selector("k = 1")),
    });
    assert_eq!(
        delivered(&bench.credit(1, 10)),
        [(1, seqs[0]), (1, seqs[2])]
    );
    bench.attach(2, "q");
    assert_eq!(
        delivered(&bench.credit(2, 10)),
        [(2, seqs[1]), (2, seqs[3])]
    );
    let later = bench.publish("q", keyed(1));
    assert_eq!(
        delivered(&later.1),
        [(1, later.0)],
        "a new match goes to the filtered consumer, whose turn it is"
    );
}

#[test]
fn a_filtered_browser_sees_only_what_it_selects() {
    let mut bench = queue(durable_queue());
    let seqs: Vec<Seq> = [1, 2, 1]
        .into_iter()
        .map(|k| bench.publish("q", keyed(k)).0)
        .collect();
    bench.apply(Command::Attach {
        consumer: 1,
        queue: "q".into(),
        browse: true,
        filter: Some(selector("k > 1")),
    });
    assert_eq!(delivered(&bench.credit(1, 10)), [(1, seqs[1])]);
    assert_eq!(bench.info("q"), (3, 0), "browsing takes nothing");
}
