//! The workload's typed queues: a last-value queue and a priority queue,
//! each drawn in about a third of the seeds, each with a producer and a
//! consumer of its own; and a queue with message groups, drawn in about a
//! third of the seeds too, with a producer and 2 or 3 consumers (all
//! numbered after the other producers and consumers: see
//! [`WorkloadParams::typed_queues`]).
//!
//! The broker learns their types from its configuration (`[[queue]]`
//! entries, as docs/amqp-conformance.md describes); the producers mark
//! their messages with the key or the priority (see
//! [`crate::history::MessageKind`]), so the checker reads both from the
//! history.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sluice::config::{QueueOverride, QueueType};

use crate::workload::WorkloadParams;

/// The last-value queue's name.
pub const LAST_VALUE_QUEUE: &str = "lvq";
/// The priority queue's name.
pub const PRIORITY_QUEUE: &str = "pq";
/// The grouped queue's name: a queue with message groups.
pub const GROUPED_QUEUE: &str = "gq";
/// The application property a last-value queue keys its messages by.
pub const LAST_VALUE_KEY: &str = "key";
/// The priority queue's levels: the broker's default, so every priority
/// a producer sends (0 to 9) is a level of its own.
pub const PRIORITY_LEVELS: u8 = 10;

/// Which typed queues a run has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueTypes {
    /// The last-value queue's number of distinct keys, if it has one: few,
    /// so that values of one key often wait together.
    pub last_value_keys: Option<u8>,
    /// Whether it has the priority queue.
    pub priority: bool,
}

impl QueueTypes {
    /// Draws them from the workload's `rng` (after everything else it
    /// draws, so that the rest of every seed's draw stays as it was).
    pub fn draw(rng: &mut ChaCha8Rng) -> Self {
        let last_value = rng.gen_bool(1.0 / 3.0);
        let keys = rng.gen_range(2..=5u8);
        Self {
            last_value_keys: last_value.then_some(keys),
            priority: rng.gen_bool(1.0 / 3.0),
        }
    }

    /// The typed queues, in the order their clients are numbered.
    pub fn queues(&self) -> Vec<&'static str> {
        let last_value = self.last_value_keys.map(|_| LAST_VALUE_QUEUE);
        let priority = self.priority.then_some(PRIORITY_QUEUE);
        last_value.into_iter().chain(priority).collect()
    }

    /// The broker's `[[queue]]` entries that make them what they are.
    pub fn overrides(&self) -> Vec<QueueOverride> {
        let last_value = self.last_value_keys.map(|_| QueueOverride {
            name: LAST_VALUE_QUEUE.to_owned(),
            queue_type: Some(QueueType::LastValue),
            last_value_key: Some(LAST_VALUE_KEY.to_owned()),
            ..QueueOverride::default()
        });
        let priority = self.priority.then(|| QueueOverride {
            name: PRIORITY_QUEUE.to_owned(),
            queue_type: Some(QueueType::Priority),
            priority_levels: Some(PRIORITY_LEVELS),
            ..QueueOverride::default()
        });
        last_value.into_iter().chain(priority).collect()
    }
}

/// The grouped queue, when a run has it: its messages carry one of a few
/// `group-id`s, and several consumers compete for them, so that the broker
/// must keep each group to one consumer at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouped {
    /// How many group ids its producer spreads its messages over: few, so
    /// that a group's messages often wait while another consumer holds
    /// one of them.
    pub groups: u8,
    /// Its consumers: at least two, or no group would ever have to wait.
    pub consumers: u32,
}

impl Grouped {
    /// Draws it from the workload's `rng`, in about a third of the seeds
    /// (after everything else the workload draws, so that the rest of
    /// every seed's draw stays as it was).
    pub fn draw(rng: &mut ChaCha8Rng) -> Option<Self> {
        let grouped = rng.gen_bool(1.0 / 3.0);
        let groups = rng.gen_range(3..=5u8);
        let consumers = rng.gen_range(2..=3u32);
        grouped.then_some(Self { groups, consumers })
    }

    /// The broker's `[[queue]]` entry that gives the queue its groups.
    pub fn queue_override() -> QueueOverride {
        QueueOverride {
            name: GROUPED_QUEUE.to_owned(),
            message_groups: Some(true),
            ..QueueOverride::default()
        }
    }
}

/// The `group-id` a message of group `group` carries.
pub fn group_id(group: u8) -> String {
    format!("g{group}")
}

/// What a typed queue's producer marks each message with, drawn per
/// message from its RNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marking {
    /// A key out of this many.
    Key(u8),
    /// A priority, 0 to 9.
    Priority,
    /// A group out of this many.
    Group(u8),
}

/// What a typed queue's producer marked a message with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    /// Its last-value key.
    pub key: Option<u8>,
    /// Its priority.
    pub priority: Option<u8>,
    /// Its group.
    pub group: Option<u8>,
}

impl Marking {
    /// How producer `n` of `params` marks its messages: `None` for a
    /// producer to a plain queue or the topic.
    pub fn of(params: &WorkloadParams, producer: u32) -> Option<Self> {
        match params.typed_queue_of_producer(producer)? {
            LAST_VALUE_QUEUE => params.queue_types.last_value_keys.map(Marking::Key),
            GROUPED_QUEUE => params.grouped.map(|grouped| Marking::Group(grouped.groups)),
            _ => Some(Marking::Priority),
        }
    }

    /// The marks of the next message.
    pub fn draw(self, rng: &mut ChaCha8Rng) -> Marks {
        match self {
            Marking::Key(keys) => Marks {
                key: Some(rng.gen_range(0..keys)),
                ..Marks::default()
            },
            Marking::Priority => Marks {
                priority: Some(rng.gen_range(0..PRIORITY_LEVELS)),
                ..Marks::default()
            },
            Marking::Group(groups) => Marks {
                group: Some(rng.gen_range(0..groups)),
                ..Marks::default()
            },
        }
    }
}

/// How a consumer paces the credit it gives and its settles: a typed
/// queue's consumer now and then holds back its credit for a while, so
/// that messages wait in the queue together (values of one key replace
/// each other, higher priorities overtake lower ones); the grouped queue's
/// holds a delivery for a while before it settles it, so that its group
/// stays its own meanwhile (a broker that ignored groups would hand the
/// group's next messages to another consumer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Its credit is always 1 (the priority rule reasons about one
    /// delivery at a time), in the drain too.
    pub single_credit: bool,
    /// Of the credit top-ups in the fault phase, the percentage deferred.
    pub pause_pct: u32,
    /// How long a deferred top-up waits at most, in milliseconds.
    pub pause_ms_max: u64,
    /// Of the deliveries it settles in the fault phase, the percentage
    /// whose settle it defers.
    pub hold_pct: u32,
    /// How long a deferred settle waits at most, in milliseconds.
    pub hold_ms_max: u64,
}

impl Pace {
    /// A plain consumer's: credit as drawn, never held back.
    pub const EAGER: Pace = Pace {
        single_credit: false,
        pause_pct: 0,
        pause_ms_max: 0,
        hold_pct: 0,
        hold_ms_max: 0,
    };

    /// The grouped queue's consumers': credit as drawn (a group's rule
    /// reasons about what each consumer holds, not about its credit), and
    /// a third of the settles deferred by up to half a second.
    pub const HOLDING: Pace = Pace {
        hold_pct: 30,
        hold_ms_max: 500,
        ..Pace::EAGER
    };

    /// The consumer of typed queue `queue`'s: the grouped queue's
    /// [`Pace::HOLDING`]; the others' credit is 1: with more,
    /// the broker may assign it messages beyond the credit its link has
    /// left on the wire (the bridge's credit reaches the node late), which
    /// then wait in the broker until the consumer grants more; a deferred
    /// top-up would make those arrive long after the queue replaced them
    /// (a last value) or a higher priority arrived, which the rules could
    /// not tell from a late dispatch.
    pub fn of(queue: &str) -> Pace {
        match queue {
            GROUPED_QUEUE => Pace::HOLDING,
            PRIORITY_QUEUE => Pace {
                single_credit: true,
                pause_pct: 30,
                pause_ms_max: 300,
                ..Pace::EAGER
            },
            _ => Pace {
                single_credit: true,
                pause_pct: 20,
                pause_ms_max: 500,
                ..Pace::EAGER
            },
        }
    }
}
