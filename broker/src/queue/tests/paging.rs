//! Paging (`queue::paging`): a deep queue holds a bounded part of its
//! messages in memory, and does exactly what a queue that never pages
//! does. The random runs of `replay.rs` compare the two on every command;
//! these cases make sure each path that reads past memory is taken.

use super::*;
use crate::queue::{
    DeadLetterReason, MESSAGE_INDEX_BYTES, MemoryPages, Overflow, Paging, PublishTraits,
};

/// Pages every arrival once a queue holds `queue_bytes` in memory.
fn paged(queue_bytes: u64) -> Bench {
    let mut bench = Bench::new();
    let paging = Paging {
        group_bytes: 0,
        queue_bytes,
    };
    bench
        .queues
        .page_to(paging, Box::new(MemoryPages::default()));
    bench
}

/// The same commands to a machine that pages at every arrival and one
/// that never pages: they must answer alike.
struct Twin {
    paged: Bench,
    plain: Bench,
}

impl Twin {
    fn new() -> Self {
        Self {
            paged: paged(0),
            plain: Bench::new(),
        }
    }

    fn apply(&mut self, command: Command) -> Vec<Effect> {
        let effects = self.plain.apply(command.clone());
        assert_eq!(
            self.paged.apply(command),
            effects,
            "paging changed the outcome"
        );
        effects
    }

    fn declare(&mut self, queue: &str, config: QueueConfig) {
        self.paged.declare(queue, config.clone());
        self.plain.declare(queue, config);
    }

    fn publish(&mut self, queue: &str, message: NewMessage) -> Seq {
        let (seq, effects) = self.plain.publish(queue, message.clone());
        let (paged_seq, paged_effects) = self.paged.publish(queue, message);
        assert_eq!((paged_seq, paged_effects), (seq, effects));
        seq
    }

    fn attach(&mut self, consumer: ConsumerId, queue: &str, browse: bool) -> Vec<Effect> {
        self.apply(Command::Attach {
            consumer,
            queue: queue.into(),
            browse,
            filter: None,
        })
    }

    fn credit(&mut self, consumer: ConsumerId, credit: u32) -> Vec<Effect> {
        self.apply(Command::Credit {
            consumer,
            credit,
            drain: false,
        })
    }

    fn wait(&mut self, ms: u64) {
        self.paged.now_ms += ms;
        self.plain.now_ms += ms;
    }
}

/// A message whose header sets `priority`, as a client's would: a paged
/// message's traits are read again from its bytes, as a snapshot's are.
fn with_priority(body: &'static str, priority: u8) -> NewMessage {
    use crate::amqp::types::{Header, Message, Section};
    let sections = vec![
        Section::Header(Header {
            durable: true,
            priority,
            ..Header::default()
        }),
        Section::Data(Bytes::from_static(body.as_bytes())),
    ];
    NewMessage {
        body: Message { sections }.encode(),
        traits: PublishTraits {
            priority,
            ..PublishTraits::default()
        }
        .boxed(),
        ..durable(body)
    }
}

#[test]
fn a_deep_queue_holds_a_bounded_part_in_memory_and_delivers_all_in_order() {
    let mut bench = paged(1_024);
    bench.declare("q", durable_queue());
    let body =
        "a hundred bytes of body, give or take: the size of a small market data event here...";
    let seqs: Vec<Seq> = (0..2_000).map(|_| bench.send("q", body)).collect();
    let size = body.len() as u64;
    assert!(
        bench.queues.pager().hot_bytes() <= 1_024 + size,
        "{} bytes in memory",
        bench.queues.pager().hot_bytes()
    );
    assert_eq!(bench.info("q"), (2_000, 0));
    // A snapshot holds what is in memory, and names the runs.
    let estimate = bench.queues.snapshot_bytes_estimate();
    assert!(estimate >= whole(&bench.queues).len() as u64, "{estimate}");
    assert!(estimate < 10 * 1_024, "{estimate}");

    bench.attach(1, "q");
    let mut got = Vec::new();
    for _ in 0..20 {
        let effects = bench.credit(1, 100);
        for (_, seq) in delivered(&effects) {
            got.push(seq);
            bench.settle("q", seq, Outcome::Accepted);
        }
        // In memory: what was paged in for the next deliveries, about a
        // queue's share at a time.
        assert!(bench.queues.pager().hot_bytes() <= 2 * (1_024 + size));
    }
    assert_eq!(got, seqs);
    assert_eq!(bench.info("q"), (0, 0));
    assert_eq!(bench.queues.pager().hot_bytes(), 0);
}

#[test]
fn a_priority_queue_pages_each_priority_behind_its_own_and_delivers_by_rank() {
    let mut twin = Twin::new();
    let config = QueueConfig {
        priority_levels: Some(10),
        ..durable_queue()
    };
    twin.declare("q", config);
    for (i, priority) in [1, 9, 1, 5, 9, 1, 5, 9].into_iter().enumerate() {
        let body = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
        twin.publish("q", with_priority(body, priority));
    }
    twin.attach(1, "q", false);
    let effects = twin.credit(1, 8);
    // The highest priority first, each in arrival order.
    assert_eq!(
        delivered(&effects)
            .into_iter()
            .map(|(_, seq)| seq)
            .collect::<Vec<_>>(),
        [2, 5, 8, 4, 7, 1, 3, 6]
    );
}

#[test]
fn a_browser_reads_paged_messages_in_seq_order_among_those_in_memory() {
    let mut twin = Twin::new();
    let config = QueueConfig {
        priority_levels: Some(10),
        ..durable_queue()
    };
    twin.declare("q", config);
    for priority in [1, 9, 1, 5, 9, 1] {
        twin.publish("q", with_priority("m", priority));
    }
    // A consumer takes some into memory, so memory and runs interleave.
    twin.attach(1, "q", false);
    twin.credit(1, 2);
    twin.attach(2, "q", true);
    let mut browsed = Vec::new();
    for _ in 0..3 {
        let effects = twin.credit(2, 2);
        browsed.extend(delivered(&effects).into_iter().map(|(_, seq)| seq));
    }
    assert_eq!(browsed, [1, 2, 3, 4, 5, 6]);
}

#[test]
fn a_paged_message_expires_on_time_and_is_dead_lettered_whole() {
    let mut twin = Twin::new();
    twin.declare("dlq", durable_queue());
    let config = QueueConfig {
        dead_letter_queue: Some("dlq".into()),
        ..durable_queue()
    };
    twin.declare("q", config);
    twin.publish("q", durable("kept"));
    let short = twin.publish(
        "q",
        NewMessage {
            ttl_ms: Some(10),
            ..durable("short-lived")
        },
    );
    twin.publish("q", durable("kept too"));
    twin.wait(10);
    let effects = twin.apply(Command::Expire);
    assert!(
        effects.contains(&Effect::DeadLettered {
            from: "q".into(),
            seq: short,
            to: Some("dlq".into()),
            reason: DeadLetterReason::Expired,
        }),
        "{effects:#?}"
    );
    twin.attach(1, "dlq", false);
    let effects = twin.credit(1, 1);
    assert!(only_delivery(&effects).body.ends_with(b"short-lived"));
}

#[test]
fn drop_head_takes_the_oldest_even_when_it_is_paged() {
    let mut twin = Twin::new();
    let config = QueueConfig {
        max_length: Some(3),
        overflow: Overflow::DropHead,
        priority_levels: Some(10),
        ..durable_queue()
    };
    twin.declare("q", config);
    let first = twin.publish("q", with_priority("low", 1));
    twin.publish("q", with_priority("high", 9));
    twin.publish("q", with_priority("low again", 1));
    // Full: the oldest (paged, of a lower priority) makes room.
    let (_, effects) = twin.paged.publish("q", with_priority("high again", 9));
    let (_, plain) = twin.plain.publish("q", with_priority("high again", 9));
    assert_eq!(effects, plain);
    assert!(
        effects.iter().any(|e| matches!(e, Effect::DeadLettered { seq, reason: DeadLetterReason::MaxLen, .. } if *seq == first)),
        "{effects:#?}"
    );
}

#[test]
fn a_settle_replayed_without_its_delivery_pages_its_message_in() {
    let mut twin = Twin::new();
    twin.declare("q", durable_queue());
    let seqs: Vec<Seq> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|body| twin.publish("q", durable(body)))
        .collect();
    // A single node's replay: no credit, so nothing was delivered, yet
    // the log settles the third and fails the second.
    twin.apply(Command::Settle {
        queue: "q".into(),
        seq: seqs[2],
        outcome: Outcome::Accepted,
    });
    twin.apply(Command::Settle {
        queue: "q".into(),
        seq: seqs[1],
        outcome: Outcome::Modified {
            delivery_failed: true,
            undeliverable_here: false,
            annotations: Vec::new(),
        },
    });
    assert_eq!(twin.paged.info("q"), (3, 0));
    // Its failed delivery counted.
    twin.attach(1, "q", false);
    let effects = twin.credit(1, 3);
    let counts: Vec<(Seq, u32)> = deliveries(&effects)
        .map(|(_, d)| (d.seq, d.delivery_count))
        .collect();
    assert_eq!(counts, [(seqs[0], 0), (seqs[1], 1), (seqs[3], 0)]);
}

/// The snapshot of a queue with a run, and the run's records in the
/// store: both are on disk, so both are pinned.
#[test]
fn the_paged_encodings_are_stable() {
    let pages = MemoryPages::default();
    let mut bench = Bench::new();
    let paging = Paging {
        group_bytes: 0,
        queue_bytes: 4,
    };
    bench.queues.page_to(paging, Box::new(pages.clone()));
    bench.declare("q", durable_queue());
    bench.send("q", "in memory");
    let (_, effects) = bench.publish(
        "q",
        NewMessage {
            ttl_ms: Some(60_000),
            ..durable("paged")
        },
    );
    assert_eq!(effects.len(), 1, "{effects:#?}");
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    let mut store = pages.clone();
    let records = crate::queue::PageStore::read(&mut store, 1, 0, 1 << 20).expect("in memory");
    insta::assert_snapshot!(format!(
        "whole: {}\nrun 1: {}",
        hex(&whole(&bench.queues)),
        hex(&records)
    ));
    assert_eq!(
        from_whole(whole(&bench.queues)).info("q"),
        bench.queues.info("q")
    );
}

/// Copies of one publish (a topic's, one per subscription) hold one body
/// between them: counted once while any is in memory, shared again by a
/// copy paged in while another is still in memory (the machine's
/// invariants check after every command that each copy in memory holds
/// the one body, counted once).
#[test]
fn copies_hold_one_body_whether_or_not_their_queues_page() {
    let mut bench = paged(100);
    for queue in ["a", "b", "c"] {
        bench.declare(queue, durable_queue());
    }
    // `c` holds 150 bytes: it pages what arrives next.
    let deep = NewMessage {
        body: Bytes::from(vec![b'x'; 150]),
        ..durable("")
    };
    bench.publish("c", deep);
    let body = "a tick of a price, sent to every subscription of its topic";
    let first = bench.next_seq;
    let copy = || NewMessage {
        copy_of: Some(first),
        ..durable(body)
    };
    bench.publish("c", copy());
    assert_eq!(bench.queues.pager().hot_bytes(), 150, "c paged its copy");
    bench.publish("a", copy());
    bench.publish("b", copy());
    let size = body.len() as u64;
    assert_eq!(bench.queues.pager().hot_bytes(), 150 + size, "one body");

    // `c`'s copy comes back into memory, ahead of delivery, and takes the
    // body `a` and `b` hold.
    bench.attach(1, "c");
    let effects = bench.credit(1, 2);
    let got = delivered(&effects);
    assert_eq!(got.len(), 2);
    assert_eq!(bench.queues.pager().hot_bytes(), 150 + size);
    for (_, seq) in got {
        bench.settle("c", seq, Outcome::Accepted);
    }
    assert_eq!(
        bench.queues.pager().hot_bytes(),
        size,
        "still held by a and b"
    );
    for (consumer, queue) in [(2, "a"), (3, "b")] {
        bench.attach(consumer, queue);
        for (_, seq) in delivered(&bench.credit(consumer, 1)) {
            bench.settle(queue, seq, Outcome::Accepted);
        }
    }
    assert_eq!(bench.queues.pager().hot_bytes(), 0);
}

/// The group's budget counts what a message in memory costs besides its
/// body (its index entry): small messages page once their entries fill
/// it, as large ones do once their bodies do. A topic's copies share one
/// body, and paged each would write its own: they page only once the
/// bodies fill it.
#[test]
fn the_group_budget_counts_index_entries_but_copies_page_on_their_bodies() {
    const ENTRIES: u64 = 20;
    let mut bench = Bench::new();
    let paging = Paging {
        group_bytes: ENTRIES * MESSAGE_INDEX_BYTES,
        queue_bytes: 0,
    };
    bench
        .queues
        .page_to(paging, Box::new(MemoryPages::default()));
    bench.declare("small", durable_queue());
    for queue in ["a", "b", "c"] {
        bench.declare(queue, durable_queue());
    }
    let body = "tick";
    for _ in 0..3 * ENTRIES {
        bench.send("small", body);
    }
    let pager = bench.queues.pager();
    let in_memory = (pager.memory_bytes() - pager.hot_bytes()) / MESSAGE_INDEX_BYTES;
    assert_eq!(in_memory, ENTRIES, "the rest paged");
    assert_eq!(bench.info("small"), (3 * ENTRIES, 0));

    // The group is over its budget, but not on bodies alone: copies stay
    // in memory, each an index entry over one shared body.
    for _ in 0..ENTRIES {
        let first = bench.next_seq;
        for queue in ["a", "b", "c"] {
            bench.publish(
                queue,
                NewMessage {
                    copy_of: Some(first),
                    ..durable(body)
                },
            );
        }
    }
    let pager = bench.queues.pager();
    let in_memory = (pager.memory_bytes() - pager.hot_bytes()) / MESSAGE_INDEX_BYTES;
    assert_eq!(in_memory, 4 * ENTRIES, "no copy paged");
}
