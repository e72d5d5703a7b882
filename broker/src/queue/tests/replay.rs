//! A node's log: replaying it, from scratch or from a whole snapshot taken
//! at any point, rebuilds what the live machine holds. A Raft member logs
//! every command, and rebuilds the live machine exactly; the single node
//! does not log consumers' credit, and logs a detach as the settles that
//! fail what the consumer held (`Queues::detach_commands`): it rebuilds
//! every message, with its delivery count, annotations and expiry, but not
//! who holds what. That holds because no outcome for a message depends on
//! which consumer holds it: drop-head and expiry take a held message too,
//! and a settle names a message, not a consumer.
//!
//! Each run also drives a machine that pages its queues out
//! (`queue::paging`) as much as its budget makes it: it must do exactly
//! what the one that never pages does, command by command, and its own
//! log and snapshots must rebuild it as exactly.

use proptest::prelude::*;

use super::*;
use crate::queue::{MemoryPages, Overflow, Paging, PublishTraits};

/// What a replay of a log without credit must rebuild: every queue and
/// every message, but not who holds what.
fn messages(queues: &Queues) -> Vec<String> {
    queues
        .all_queues()
        .flat_map(|queue| {
            let name = &queue.name;
            let config = &queue.config;
            let header = format!("{name} {config:?} {:?}", queue.dedup);
            let messages = queue.seqs().filter_map(|seq| {
                let m = queue.message(seq)?;
                Some(format!(
                    "{name} {seq} {:?} {} {:?} {} {:?} {:?}",
                    m.body, m.persistent, m.expiry_ms, m.delivery_count, m.annotations, m.traits
                ))
            });
            std::iter::once(header).chain(messages).collect::<Vec<_>>()
        })
        .collect()
}

/// Three queue names, so that queues, dead-letter targets and cycles among
/// them all turn up.
const QUEUES: [&str; 3] = ["a", "b", "c"];

/// A step of a random run.
#[derive(Debug, Clone)]
enum Op {
    Wait(u64),
    Declare(usize, QueueConfig),
    Delete(usize),
    Publish {
        queue: usize,
        durable: bool,
        size: usize,
        ttl_ms: Option<u64>,
        absolute_in_ms: Option<u64>,
        traits: Drawn,
    },
    /// A consumer attaches to a queue, browsing or not, and with a filter
    /// or not (`k = 1`).
    Attach(ConsumerId, usize, bool, bool),
    Credit(ConsumerId, u32, bool),
    /// Settles the message `back` seqs before the next one.
    Settle(usize, u64, Outcome),
    Detach(ConsumerId),
    Expire,
    Snapshot,
}

/// What the queue types read of a published message.
#[derive(Debug, Clone)]
struct Drawn {
    priority: u8,
    group: Option<u8>,
    /// The value of application property `k`, a last-value queue's key.
    key: Option<u8>,
    delay_ms: Option<u64>,
}

fn drawn() -> impl Strategy<Value = Drawn> {
    (
        0..10_u8,
        prop::option::weighted(0.5, 0..2_u8),
        prop::option::weighted(0.5, 0..2_u8),
        prop::option::weighted(0.2, 0..50_u64),
    )
        .prop_map(|(priority, group, key, delay_ms)| Drawn {
            priority,
            group,
            key,
            delay_ms,
        })
}

/// A message of `size` data bytes carrying `traits` where the broker
/// finds them: the header's priority, the group-id, application property
/// `k`.
fn encoded(durable: bool, size: usize, traits: &Drawn) -> Bytes {
    use crate::amqp::types::{Header, Message, Properties, Section};
    let mut sections = vec![Section::Header(Header {
        durable,
        priority: traits.priority,
        ..Header::default()
    })];
    if let Some(group) = traits.group {
        sections.push(Section::Properties(Box::new(Properties {
            group_id: Some(format!("g{group}")),
            ..Properties::default()
        })));
    }
    if let Some(key) = traits.key {
        sections.push(Section::ApplicationProperties(vec![(
            "k".to_owned(),
            Value::Ubyte(key),
        )]));
    }
    sections.push(Section::Data(Bytes::from(vec![b'm'; size])));
    Message { sections }.encode()
}

/// The queue types, each on or off.
fn queue_type() -> impl Strategy<Value = (Option<u8>, Option<String>, bool, bool)> {
    (
        prop::option::weighted(0.3, 1..5_u8),
        prop::option::weighted(0.3, Just("k".to_owned())),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.3),
    )
}

fn config() -> impl Strategy<Value = QueueConfig> {
    (
        prop::bool::weighted(0.8),
        prop::option::weighted(0.5, 0..4_u64),
        prop::option::weighted(0.3, 0..12_u64),
        prop::bool::ANY,
        prop::option::of(0..QUEUES.len()),
        prop::option::weighted(0.7, 0..4_u32),
        prop::option::weighted(0.3, 0..60_u64),
        prop::bool::weighted(0.2),
        queue_type(),
    )
        .prop_map(
            |(
                durable,
                max_length,
                max_bytes,
                drop_head,
                dlq,
                delivery_limit,
                ttl,
                auto_delete,
                (priority_levels, last_value_key, message_groups, single_active_consumer),
            )| {
                QueueConfig {
                    durable,
                    max_length,
                    max_bytes,
                    overflow: if drop_head {
                        Overflow::DropHead
                    } else {
                        Overflow::RejectPublish
                    },
                    dead_letter_queue: dlq.map(|i| QUEUES[i].to_owned()),
                    delivery_limit,
                    default_ttl_ms: ttl,
                    dedup_window_ms: None,
                    dedup_window_ids: None,
                    auto_delete,
                    priority_levels,
                    last_value_key,
                    message_groups,
                    single_active_consumer,
                    filter: None,
                }
            },
        )
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Accepted),
        Just(Outcome::Released),
        Just(Outcome::Rejected),
        (any::<bool>(), any::<bool>(), prop::option::of(0..3_u32)).prop_map(
            |(delivery_failed, undeliverable_here, note)| Outcome::Modified {
                delivery_failed,
                undeliverable_here,
                annotations: note
                    .map(|n| (symbol("x-note"), Value::Uint(n)))
                    .into_iter()
                    .collect(),
            }
        ),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let queue = 0..QUEUES.len();
    let consumer = 1..5_u64;
    prop_oneof![
        3 => (0..40_u64).prop_map(Op::Wait),
        1 => (queue.clone(), config()).prop_map(|(q, c)| Op::Declare(q, c)),
        1 => queue.clone().prop_map(Op::Delete),
        8 => (
            queue.clone(),
            prop::bool::weighted(0.7),
            0..5_usize,
            prop::option::weighted(0.3, 0..60_u64),
            prop::option::weighted(0.2, 0..80_u64),
            drawn(),
        )
            .prop_map(|(queue, durable, size, ttl_ms, absolute_in_ms, traits)| Op::Publish {
                queue,
                durable,
                size,
                ttl_ms,
                absolute_in_ms,
                traits,
            }),
        2 => (consumer.clone(), queue.clone(), prop::bool::weighted(0.2), prop::bool::weighted(0.3))
            .prop_map(|(c, q, b, f)| Op::Attach(c, q, b, f)),
        3 => (consumer.clone(), 0..4_u32, prop::bool::weighted(0.2))
            .prop_map(|(c, n, d)| Op::Credit(c, n, d)),
        6 => (queue, 1..8_u64, outcome()).prop_map(|(q, back, o)| Op::Settle(q, back, o)),
        1 => consumer.prop_map(Op::Detach),
        2 => Just(Op::Expire),
        1 => Just(Op::Snapshot),
    ]
}

/// A live machine and the logs a node would keep for it.
struct Run {
    live: Queues,
    /// The same machine, paging under `paging` into `pages`.
    paged: Queues,
    paging: Paging,
    pages: MemoryPages,
    /// The paged machine's snapshots, each with a copy of its store.
    paged_snapshots: Vec<(Bytes, MemoryPages)>,
    now_ms: u64,
    next_seq: Seq,
    /// `(now_ms, encoded command)` of every command: a Raft member's log.
    log: Vec<(u64, Bytes)>,
    /// The same without consumers' credit: the single node's log.
    without_credit: Vec<(u64, Bytes)>,
    /// Snapshots, each with both logs' lengths when it was taken.
    snapshots: Vec<(Bytes, (usize, usize))>,
}

impl Run {
    /// What a node does with a command: log it, then apply it.
    fn submit(&mut self, command: Command) {
        let encoded = command.encode();
        assert_eq!(Command::decode(encoded.clone()).as_ref(), Ok(&command));
        if !matches!(command, Command::Credit { .. }) {
            self.without_credit.push((self.now_ms, encoded.clone()));
        }
        self.log.push((self.now_ms, encoded));
        let mut effects = Vec::new();
        self.live.apply(self.now_ms, command.clone(), &mut effects);
        let mut paged_effects = Vec::new();
        self.paged.apply(self.now_ms, command, &mut paged_effects);
        assert_eq!(
            paged_effects, effects,
            "paging changed what the machine did"
        );
    }

    fn step(&mut self, op: Op) {
        let name = |i: usize| QUEUES[i].to_owned();
        match op {
            Op::Wait(ms) => self.now_ms += ms,
            Op::Declare(queue, config) => self.submit(Command::Declare {
                queue: name(queue),
                config: Box::new(config),
            }),
            Op::Delete(queue) => self.submit(Command::Delete { queue: name(queue) }),
            Op::Publish {
                queue,
                durable,
                size,
                ttl_ms,
                absolute_in_ms,
                traits,
            } => {
                let seq = self.next_seq;
                self.next_seq += 1;
                let message = NewMessage {
                    body: encoded(durable, size, &traits),
                    durable,
                    ttl_ms,
                    absolute_expiry_ms: absolute_in_ms.map(|ms| self.now_ms + ms),
                    message_id: None,
                    traits: PublishTraits {
                        priority: traits.priority,
                        group: traits.group.map(|group| format!("g{group}")),
                        deliver_at_ms: traits.delay_ms.map(|ms| self.now_ms + ms),
                    }
                    .boxed(),
                    copy_of: None,
                };
                self.submit(Command::Enqueue {
                    queue: name(queue),
                    seq,
                    message,
                });
            }
            Op::Attach(consumer, queue, browse, filtered) => self.submit(Command::Attach {
                consumer,
                queue: name(queue),
                browse,
                filter: filtered.then(|| selector("k = 1")),
            }),
            Op::Credit(consumer, credit, drain) => self.submit(Command::Credit {
                consumer,
                credit,
                drain,
            }),
            Op::Settle(queue, back, outcome) => self.submit(Command::Settle {
                queue: name(queue),
                seq: self.next_seq.saturating_sub(back),
                outcome,
            }),
            Op::Detach(consumer) => self.detach(consumer),
            Op::Expire => self.submit(Command::Expire),
            Op::Snapshot => {
                let at = (self.log.len(), self.without_credit.len());
                self.snapshots.push((whole(&self.live), at));
                let copy = self.pages.copy();
                self.paged_snapshots.push((whole(&self.paged), copy));
            }
        }
    }

    fn detach(&mut self, consumer: ConsumerId) {
        for command in self.live.detach_commands(consumer) {
            self.submit(command);
        }
    }
}

/// A machine that pages into `pages` under `paging`.
fn paging(mut queues: Queues, paging: Paging, pages: &MemoryPages) -> Queues {
    queues.page_to(paging, Box::new(pages.clone()));
    queues
}

/// Everything a machine holds, paged in: what [`messages`] compares.
fn paged_in(mut queues: Queues) -> Queues {
    queues.page_in_all();
    queues
}

/// Applies logged commands, as a restarting broker does.
fn replay(mut queues: Queues, log: &[(u64, Bytes)]) -> Queues {
    for (now_ms, encoded) in log {
        let command = Command::decode(encoded.clone()).expect("logged commands decode");
        queues.apply(*now_ms, command, &mut Vec::new());
    }
    queues
}

proptest! {
    #[test]
    fn replaying_the_log_rebuilds_the_live_machine(
        configs in prop::array::uniform3(config()),
        ops in prop::collection::vec(op(), 1..120),
        group_bytes in prop_oneof![Just(0), 0..200_u64],
        queue_bytes in prop_oneof![Just(0), 0..120_u64],
    ) {
        let pages = MemoryPages::default();
        let budget = Paging { group_bytes, queue_bytes };
        let mut run = Run {
            live: Queues::new(),
            paged: paging(Queues::new(), budget, &pages),
            paging: budget,
            pages,
            paged_snapshots: Vec::new(),
            now_ms: 1_000,
            next_seq: 1,
            log: Vec::new(),
            without_credit: Vec::new(),
            snapshots: Vec::new(),
        };
        for (i, config) in configs.into_iter().enumerate() {
            run.step(Op::Declare(i, config));
        }
        for op in ops {
            run.step(op);
        }
        // Detaching everyone counts failed deliveries, and the logs keep up.
        for consumer in 1..5 {
            run.detach(consumer);
        }
        let exactly = whole(&run.live);
        let held = messages(&run.live);
        prop_assert_eq!(whole(&replay(Queues::new(), &run.log)), exactly.clone());
        let without_credit = replay(Queues::new(), &run.without_credit);
        prop_assert_eq!(messages(&without_credit), held.clone());
        for (snapshot, (at, at_without_credit)) in &run.snapshots {
            let replayed = replay(from_whole(snapshot.clone()), &run.log[*at..]);
            prop_assert_eq!(whole(&replayed), exactly.clone());
            let log = &run.without_credit[*at_without_credit..];
            let replayed = replay(from_whole(snapshot.clone()), log);
            prop_assert_eq!(messages(&replayed), held.clone());
        }
        // The paged machine: the same messages, and rebuilt as exactly.
        let paged_exactly = whole(&run.paged);
        let fresh = || paging(Queues::new(), run.paging, &MemoryPages::default());
        prop_assert_eq!(whole(&replay(fresh(), &run.log)), paged_exactly.clone());
        prop_assert_eq!(messages(&paged_in(replay(fresh(), &run.without_credit))), held.clone());
        let at = run.snapshots.iter().map(|(_, at)| at);
        for ((snapshot, pages), (at, at_without_credit)) in run.paged_snapshots.iter().zip(at) {
            let restored = || paging(from_whole(snapshot.clone()), run.paging, &pages.copy());
            prop_assert_eq!(whole(&replay(restored(), &run.log[*at..])), paged_exactly.clone());
            let log = &run.without_credit[*at_without_credit..];
            prop_assert_eq!(messages(&paged_in(replay(restored(), log))), held.clone());
        }
        prop_assert_eq!(messages(&paged_in(run.paged)), held);
    }
}
