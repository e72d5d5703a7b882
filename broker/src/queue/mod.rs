//! The queue state machine: every queue's messages, consumers and limits,
//! fed [`Command`]s and answering with [`Effect`]s.
//!
//! Like TigerBeetle's state machine, [`Queues`] is pure and deterministic: no
//! I/O, no clock (time arrives as `now_ms`, Unix milliseconds, with every
//! command), no randomness, and only ordered collections, so the same
//! commands at the same times always produce the same state and effects.
//!
//! # Replay
//!
//! A node logs the commands it applies, with their `now_ms` (in its
//! group's entries, `node::state`). A Raft member logs every command, so
//! replaying its log into [`Queues::new`], or into [`Queues::decode_whole`]
//! of a snapshot taken at any point, rebuilds exactly the state that was
//! applied, volatile parts included. The single node does not log
//! consumers' credit, and logs a detach as [`Queues::detach_commands`]:
//! its replay rebuilds every message, with its delivery count, but not who
//! held what. That holds because of one rule, which the design below
//! follows: **no outcome for a message depends on which consumer holds
//! it.** Drop-head and expiry take a held message too; a settle names a
//! message, not a consumer; [`Command::Detach`] returns what the consumer
//! holds uncounted, and the failed deliveries it should count are the
//! settles of [`Queues::detach_commands`].
//!
//! # Persistent and transient messages
//!
//! A message is *persistent* if it was published durable into a durable
//! queue (a durable message in a transient queue, or a transient one in a
//! durable queue, is transient). Every message is logged, but the machine
//! still keeps persistent messages apart where a producer's marking should
//! count: a persistent message competes for room only with persistent
//! messages and, to fit, displaces transient ones first; a transient message
//! never displaces a persistent one (see [`Overflow`]); and only persistent
//! messages enter a durable queue's de-duplication window.
//!
//! A dead-lettered message keeps its seq, so settles in the log still name
//! it.

mod command;
mod consumer;
mod dedup;
mod detach;
mod filter;
mod machine;
mod message;
mod paging;
mod ready;
mod single;
mod transaction;
mod whole;

#[cfg(test)]
mod tests;

use bytes::Bytes;

use crate::amqp::codec::Value;

pub use filter::{LazyFields, MessageFilter};
pub use machine::{QueueReport, Queues};
pub use paging::{
    Checkpoint, MESSAGE_INDEX_BYTES, MemoryPages, PageError, PageStore, PageSync, Pager, Paging,
    RunId,
};

/// A message's sequence number, assigned by the caller on
/// [`Command::Enqueue`]: greater than every seq ever accepted. It names the
/// message for its whole life, through dead-lettering too, and orders the
/// messages of a queue.
pub type Seq = u64;

/// A set of seqs, as a command carries it (see [`Command::Purge`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seqs(pub std::collections::BTreeSet<Seq>);

/// The priority of a message whose header sets none (AMQP part 3 §3.2.1).
pub const DEFAULT_PRIORITY: u8 = 4;

/// A consumer, chosen by the caller and unique while it is attached.
pub type ConsumerId = u64;

/// What a full queue does with a publish.
///
/// Either way, a persistent message competes for room only with the
/// queue's persistent messages, and the transient messages it then does not
/// fit beside are dropped (dead-letter reason `maxlen`) to make way for it:
/// that keeps the producer's marking meaningful. A transient
/// message never displaces a persistent one, so it is rejected when only
/// persistent messages could make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Refuse the publish ([`RejectReason::Overflow`]).
    #[default]
    RejectPublish,
    /// Dead-letter the oldest messages (reason `maxlen`), whether ready or
    /// held by a consumer, to make room. Applies to publishes only: a
    /// dead-lettered message that does not fit is dropped instead, which
    /// keeps dead-letter chains finite.
    DropHead,
}

/// How a queue behaves; fixed when it is declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Messages published durable into it are persistent (see the module
    /// documentation).
    pub durable: bool,
    /// The most messages it holds, ready and unsettled.
    pub max_length: Option<u64>,
    /// The most body bytes it holds, ready and unsettled.
    pub max_bytes: Option<u64>,
    /// What a publish to a full queue does.
    pub overflow: Overflow,
    /// Where dead-lettered messages go. The message is dropped instead if
    /// this is `None`, names no existing queue, or names one that has no
    /// room for it or whose default TTL would expire it on arrival.
    pub dead_letter_queue: Option<String>,
    /// A message whose failed-delivery count reaches this is dead-lettered
    /// (reason `delivery-limit`). As in RabbitMQ 4, 20 by default.
    pub delivery_limit: Option<u32>,
    /// The time to live of messages that carry no `header.ttl`.
    pub default_ttl_ms: Option<u64>,
    /// How long a `message-id` is remembered: a message published again
    /// with it within this time is not enqueued again. `None`: no
    /// de-duplication.
    pub dedup_window_ms: Option<u64>,
    /// The most ids remembered at once; the oldest go first.
    pub dedup_window_ids: Option<u64>,
    /// It goes, with what it holds, when its last consumer detaches: the
    /// queue of a dynamic node or of a non-durable topic subscription,
    /// which lives as long as its link. Its consumer's detach takes it
    /// along however the consumer goes (its link, its connection, or its
    /// node's crash, once the consumer is detached as an orphan).
    pub auto_delete: bool,
    /// A priority queue's levels: higher `header.priority` first, first in
    /// first out within a level; priorities from this up count as the
    /// highest. `None`: not a priority queue.
    pub priority_levels: Option<u8>,
    /// A last-value queue's key: the application property of which it
    /// keeps one waiting message per value. `None`: not a last-value queue.
    pub last_value_key: Option<String>,
    /// Messages with the same `group-id` go to one consumer at a time: the
    /// one holding messages of the group, if any.
    pub message_groups: bool,
    /// Only the earliest attached acquiring consumer receives; the others
    /// take over in attach order.
    pub single_active_consumer: bool,
    /// What a topic subscription's queue takes of the topic's messages
    /// (its consumer's selector): the others are not copied into it.
    pub filter: Option<Box<MessageFilter>>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            durable: false,
            max_length: None,
            max_bytes: None,
            overflow: Overflow::RejectPublish,
            dead_letter_queue: None,
            delivery_limit: Some(20),
            default_ttl_ms: None,
            dedup_window_ms: None,
            dedup_window_ids: None,
            auto_delete: false,
            priority_levels: None,
            last_value_key: None,
            message_groups: false,
            single_active_consumer: false,
            filter: None,
        }
    }
}

/// A published message, as the queue needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The encoded message as received; its length counts against
    /// `max_bytes`.
    pub body: Bytes,
    /// `header.durable`.
    pub durable: bool,
    /// `header.ttl`, in milliseconds.
    pub ttl_ms: Option<u64>,
    /// `properties.absolute-expiry-time`, Unix milliseconds.
    pub absolute_expiry_ms: Option<u64>,
    /// `properties.message-id`, encoded (so that ids of different types
    /// differ): what de-duplication compares.
    pub message_id: Option<Bytes>,
    /// What the queue types read of it; `None` for a plain message, as
    /// most are. Boxed: every command takes the room of the largest, and a
    /// publish is the one that goes by most often.
    pub traits: Option<Box<PublishTraits>>,
    /// One of several copies of a publish (a topic's, one per
    /// subscription), by the seq of the first copy: the copies share one
    /// body, which the group's memory and snapshot count once.
    pub copy_of: Option<Seq>,
}

/// What a published message asks of the queue types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishTraits {
    /// `header.priority`: what a priority queue orders by.
    pub priority: u8,
    /// `properties.group-id`: what a queue with message groups keeps
    /// together.
    pub group: Option<String>,
    /// Not to be delivered before this time, Unix milliseconds (scheduled
    /// delivery: the `x-opt-delivery-time` and `x-opt-delivery-delay`
    /// annotations).
    pub deliver_at_ms: Option<u64>,
}

impl Default for PublishTraits {
    fn default() -> Self {
        Self {
            priority: DEFAULT_PRIORITY,
            group: None,
            deliver_at_ms: None,
        }
    }
}

impl PublishTraits {
    /// What a [`NewMessage`] keeps: nothing for a plain message.
    pub fn boxed(self) -> Option<Box<Self>> {
        (self != Self::default()).then(|| Box::new(self))
    }
}

impl NewMessage {
    /// What it asks of the queue types.
    pub fn traits(&self) -> PublishTraits {
        self.traits.as_deref().cloned().unwrap_or_default()
    }
}

/// How a consumer settled a delivery (spec part 3 §3.4).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Processed: the message leaves the queue.
    Accepted,
    /// Not processed: the message goes back to its place, uncounted.
    Released,
    /// Not processed, with changes.
    Modified {
        /// Count a failed delivery (and dead-letter at the delivery limit).
        delivery_failed: bool,
        /// Never deliver it to this consumer again.
        undeliverable_here: bool,
        /// Merged into the message's annotations, replacing equal keys.
        annotations: Vec<(Value, Value)>,
    },
    /// Invalid: the message is dead-lettered (reason `rejected`).
    Rejected,
}

/// An input to [`Queues::apply`].
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Creates a queue. Declaring an existing queue with the same config is
    /// a no-op; with another config it keeps the old one and answers
    /// [`Effect::DeclareConflict`].
    Declare {
        /// The queue's name.
        queue: String,
        /// How it behaves: boxed, since every command takes the room of
        /// the largest, and this rare one would be it.
        config: Box<QueueConfig>,
    },
    /// Deletes a queue and drops its messages; its consumers are closed.
    Delete {
        /// The queue's name.
        queue: String,
    },
    /// Drops every ready message of a queue (those no consumer holds),
    /// but for `except`: the management API's purge.
    Purge {
        /// The queue's name.
        queue: String,
        /// Messages kept even if ready. The node lists there what its
        /// consumers hold when it makes the command over its own log, which
        /// does not record consumers: a replay, in which nobody holds
        /// anything, then drops exactly what was dropped live.
        except: Seqs,
    },
    /// Moves up to `max` ready messages of `from`, oldest first, but for
    /// `except` (as [`Command::Purge`]'s), to `to` in the same group; each
    /// keeps its seq. It stops at the first that `to` has no room for.
    Move {
        /// The queue they leave.
        from: String,
        /// The queue they join.
        to: String,
        /// At most this many.
        max: u64,
        /// Messages left where they are even if ready.
        except: Seqs,
    },
    /// Publishes a message.
    Enqueue {
        /// The queue's name.
        queue: String,
        /// Greater than every seq accepted before.
        seq: Seq,
        /// The message.
        message: NewMessage,
    },
    /// Attaches a consumer, with no credit yet.
    Attach {
        /// The new consumer.
        consumer: ConsumerId,
        /// The queue it reads.
        queue: String,
        /// Distribution mode `copy`: receive every message once, settled,
        /// without acquiring it.
        browse: bool,
        /// The messages it takes, if not all; the others are left for other
        /// consumers, in their place (boxed, like a declaration's config).
        filter: Option<Box<MessageFilter>>,
    },
    /// Sets a consumer's link credit, as an AMQP flow does.
    Credit {
        /// The consumer.
        consumer: ConsumerId,
        /// The absolute link credit.
        credit: u32,
        /// Use the credit up now: what cannot be delivered is given back
        /// with [`Effect::DrainComplete`].
        drain: bool,
    },
    /// Settles a message by queue and seq, whoever holds it (on replay,
    /// nobody does). Unknown queues and seqs are ignored: the message may
    /// have been transient and not replayed, or already gone.
    Settle {
        /// The queue holding the message.
        queue: String,
        /// The message.
        seq: Seq,
        /// How it was settled.
        outcome: Outcome,
    },
    /// Forgets a consumer; what it still holds goes back to its place
    /// without counting a failed delivery (see [`Queues::detach_commands`]).
    Detach {
        /// The consumer.
        consumer: ConsumerId,
    },
    /// Dead-letters (reason `expired`) every message due at `now_ms`, held
    /// by a consumer or not.
    Expire,
    /// Commits a transaction: its enqueues and settles apply together, in
    /// order; or, if one of them could not (a queue is gone or would refuse
    /// a message, or a guarded settle's consumer no longer holds its
    /// message), none does, and [`Effect::TransactionRefused`] says why.
    Transaction {
        /// What it does, in order: enqueues and settles only.
        work: Vec<Guarded>,
    },
}

/// One command of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Guarded {
    /// For a settle, the consumer it must still be held by for the
    /// transaction to commit (`None`: by whoever holds it).
    pub guard: Option<ConsumerId>,
    /// An enqueue or a settle.
    pub command: Command,
}

/// An output of [`Queues::apply`], for the broker to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a message to a consumer.
    Deliver {
        /// The consumer.
        consumer: ConsumerId,
        /// What to send.
        delivery: Delivery,
    },
    /// A drain finished: the consumer's credit is now 0.
    DrainComplete {
        /// The consumer.
        consumer: ConsumerId,
    },
    /// A queue was declared (or already existed with this config).
    Declared {
        /// The queue.
        queue: String,
    },
    /// A queue exists with another config, which it keeps.
    DeclareConflict {
        /// The queue.
        queue: String,
        /// The config it keeps.
        existing: QueueConfig,
    },
    /// A queue was purged: `count` ready messages dropped.
    Purged {
        /// The queue.
        queue: String,
        /// How many.
        count: u64,
    },
    /// `count` messages moved from one queue to another.
    Moved {
        /// The queue they left.
        from: String,
        /// The queue they joined.
        to: String,
        /// How many.
        count: u64,
    },
    /// A queue was deleted.
    Deleted {
        /// The queue.
        queue: String,
    },
    /// A message was accepted into a queue.
    Enqueued {
        /// The queue.
        queue: String,
        /// The message.
        seq: Seq,
    },
    /// A message was refused.
    EnqueueRejected {
        /// The queue named by the publish.
        queue: String,
        /// The message.
        seq: Seq,
        /// Why.
        reason: RejectReason,
    },
    /// A message left a queue for its dead-letter queue, or was dropped.
    DeadLettered {
        /// The queue it left.
        from: String,
        /// The message, which keeps its seq.
        seq: Seq,
        /// Where it went; `None` if it was dropped.
        to: Option<String>,
        /// Why.
        reason: DeadLetterReason,
    },
    /// A transaction was refused as a whole: nothing of it was applied.
    TransactionRefused {
        /// Why.
        reason: TransactionRefusal,
    },
    /// A consumer is gone, or never attached.
    ConsumerClosed {
        /// The consumer.
        consumer: ConsumerId,
        /// Why.
        reason: CloseReason,
    },
}

/// Why a publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// No queue has that name.
    NotFound,
    /// The queue is full and rejects publishes, or the message can never
    /// fit.
    Overflow,
    /// The seq is not greater than every seq accepted before.
    SeqNotIncreasing,
}

/// Why a transaction was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionRefusal {
    /// It publishes to a queue that does not exist.
    QueueNotFound {
        /// The queue.
        queue: String,
    },
    /// A queue would refuse one of its messages (it is full, or the message
    /// can never fit).
    QueueFull {
        /// The queue.
        queue: String,
    },
    /// It settles a message its consumer no longer holds (the consumer
    /// detached, and the message went back to the queue).
    NotHeld {
        /// The queue.
        queue: String,
        /// The message.
        seq: Seq,
    },
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// A consumer rejected it.
    Rejected,
    /// It failed delivery `delivery_limit` times.
    DeliveryLimit,
    /// Its time to live ran out.
    Expired,
    /// It was dropped to make room.
    MaxLen,
    /// A newer message with its key replaced it in a last-value queue.
    Replaced,
}

impl DeadLetterReason {
    /// The value of the `x-opt-deadletter-reason` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::DeliveryLimit => "delivery-limit",
            Self::Expired => "expired",
            Self::MaxLen => "maxlen",
            Self::Replaced => "replaced",
        }
    }
}

/// Why a consumer was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its queue does not exist.
    QueueNotFound,
    /// Its queue was deleted.
    QueueDeleted,
}

/// A message sent to a consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The queue it comes from; settle it with this and `seq`.
    pub queue: String,
    /// The message.
    pub seq: Seq,
    /// The encoded message as it was received.
    pub body: Bytes,
    /// Failed deliveries so far (`header.delivery-count`).
    pub delivery_count: u32,
    /// No consumer acquired this message before (`header.first-acquirer`).
    /// Always false for a browse delivery, which acquires nothing.
    pub first_acquirer: bool,
    /// Sent settled: true for browse deliveries.
    pub settled: bool,
    /// Message annotations to add, replacing equal keys: those merged in by
    /// `modified` outcomes and the dead-letter annotations
    /// (`x-opt-deadletter-reason`, `x-opt-deadletter-queue`).
    pub annotations: Vec<(Value, Value)>,
}

/// A queue's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueInfo {
    /// Messages ready for delivery (including expired ones that
    /// [`Command::Expire`] has not removed yet).
    pub depth: u64,
    /// Messages delivered and not yet settled.
    pub unsettled: u64,
    /// Body bytes held, ready and unsettled.
    pub bytes: u64,
    /// Attached consumers, browsers included.
    pub consumers: u64,
}

/// What a queue has done since this node loaded it: counters for metrics.
/// Volatile: neither in snapshots nor in the state's digest, so they
/// change nothing a replica or a replay decides. Every member counts what
/// it applies, so the members of a group agree on them once they have
/// applied as far and started from the same snapshot; a restart counts
/// what recovery replays again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages published into it (dead-lettered arrivals not included).
    pub published: u64,
    /// Messages acquired by a consumer (browse copies not included).
    pub delivered: u64,
    /// Of those, messages some consumer had acquired before.
    pub redelivered: u64,
    /// Messages settled `accepted`: gone for good.
    pub acked: u64,
    /// Messages that left it for its dead-letter queue, or were dropped,
    /// for any reason but expiry: rejected, at the delivery limit, evicted
    /// for room, or replaced in a last-value queue.
    pub dead_lettered: u64,
    /// Messages whose time to live ran out in it.
    pub expired: u64,
}
