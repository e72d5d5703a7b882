//! A message as a queue holds it, and the tallies that limits are checked
//! against.

use bytes::Bytes;

use super::{
    ConsumerId, DEFAULT_PRIORITY, DeadLetterReason, Delivery, NewMessage, QueueConfig, Seq,
};
use crate::amqp::codec::{Symbol, Value, to_bytes};
use crate::amqp::types::{Message as AmqpMessage, Section};

/// Annotation naming why a message was dead-lettered.
const DEAD_LETTER_REASON: &str = "x-opt-deadletter-reason";
/// Annotation naming the queue a message was dead-lettered from.
const DEAD_LETTER_QUEUE: &str = "x-opt-deadletter-queue";
/// Annotation of a scheduled message's delivery time (as Qpid JMS and
/// Artemis name it).
const DELIVERY_TIME: &str = "x-opt-delivery-time";

/// A message in a queue.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Message {
    /// The encoded message as received.
    pub body: Bytes,
    /// Part of the durable state: published durable into a durable queue.
    pub persistent: bool,
    /// When it expires, Unix milliseconds.
    pub expiry_ms: Option<u64>,
    /// Failed deliveries (durable).
    pub delivery_count: u32,
    /// Merged from `modified` outcomes and dead-lettering (durable).
    pub annotations: Vec<(Value, Value)>,
    /// A consumer acquired it before (volatile).
    pub acquired_before: bool,
    /// The consumer holding it unsettled; `None` while it is ready
    /// (volatile).
    pub holder: Option<ConsumerId>,
    /// What the queue types read of it, if it is not a plain message (as
    /// most are): boxed, so that a plain one costs a pointer.
    pub traits: Option<Box<Traits>>,
    /// One of several copies of a publish, by the first copy's seq (see
    /// [`NewMessage::copy_of`]): its body is shared with the others.
    pub copy_of: Option<Seq>,
}

/// What a queue type orders a message by, keeps together or holds back:
/// taken from the publish when it arrives, and read again from the message
/// (its bytes and annotations) when a snapshot restores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Traits {
    /// `header.priority`.
    pub priority: u8,
    /// `properties.group-id`.
    pub group: Option<String>,
    /// Not delivered before this time, Unix milliseconds.
    pub deliver_at_ms: Option<u64>,
    /// In a last-value queue, the encoded value of its key property.
    pub last_value: Option<Bytes>,
}

impl Traits {
    /// Those of a message that sets none.
    const PLAIN: Traits = Traits {
        priority: DEFAULT_PRIORITY,
        group: None,
        deliver_at_ms: None,
        last_value: None,
    };

    /// The box a message keeps them in: none for a plain message.
    pub fn boxed(self) -> Option<Box<Traits>> {
        (self != Self::PLAIN).then(|| Box::new(self))
    }

    /// The traits of a message restored from its bytes and annotations, in
    /// a queue configured by `config`.
    pub fn read(body: &Bytes, annotations: &[(Value, Value)], config: &QueueConfig) -> Self {
        let message = AmqpMessage::decode(body.clone()).ok();
        let sections = message.as_ref().map_or(&[][..], |m| &m.sections[..]);
        let priority = sections.iter().find_map(|section| match section {
            Section::Header(header) => Some(header.priority),
            _ => None,
        });
        let group = sections.iter().find_map(|section| match section {
            Section::Properties(properties) => properties.group_id.clone(),
            _ => None,
        });
        let deliver_at_ms = annotations
            .iter()
            .find_map(|(key, value)| match (key, value) {
                (Value::Symbol(key), Value::Timestamp(at)) if key == DELIVERY_TIME => {
                    u64::try_from(*at).ok()
                }
                _ => None,
            });
        Self {
            priority: priority.unwrap_or(DEFAULT_PRIORITY),
            group,
            deliver_at_ms,
            last_value: last_value(sections, config),
        }
    }
}

/// The encoded value of a last-value queue's key property in the message
/// `body`, if the queue is one and the message has it. Only a last-value
/// queue decodes the message for it.
fn keyed_value(body: &Bytes, config: &QueueConfig) -> Option<Bytes> {
    config.last_value_key.as_ref()?;
    let decoded = AmqpMessage::decode(body.clone()).ok()?;
    last_value(&decoded.sections, config)
}

/// The encoded value of a last-value queue's key property, if the queue is
/// one and the message has it.
fn last_value(sections: &[Section], config: &QueueConfig) -> Option<Bytes> {
    let key = config.last_value_key.as_deref()?;
    sections.iter().find_map(|section| match section {
        Section::ApplicationProperties(properties) => properties
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| to_bytes(value)),
        _ => None,
    })
}

impl Message {
    /// A message published at `now_ms` into a queue configured by `config`.
    pub fn published(now_ms: u64, message: NewMessage, config: &QueueConfig) -> Self {
        let ttl_ms = message.ttl_ms.or(config.default_ttl_ms);
        let last_value = keyed_value(&message.body, config);
        // A scheduled message carries its time as an annotation, which a
        // snapshot keeps (a delay is relative to an arrival it does not).
        let published = message.traits.map(|traits| *traits).unwrap_or_default();
        let annotations = match published.deliver_at_ms {
            Some(at_ms) => vec![(
                Value::Symbol(Symbol::from_static(DELIVERY_TIME)),
                Value::Timestamp(i64::try_from(at_ms).unwrap_or(i64::MAX)),
            )],
            None => Vec::new(),
        };
        Self {
            persistent: message.durable && config.durable,
            expiry_ms: expiry_ms(now_ms, ttl_ms, message.absolute_expiry_ms),
            body: message.body,
            delivery_count: 0,
            annotations,
            acquired_before: false,
            holder: None,
            traits: Traits {
                priority: published.priority,
                group: published.group,
                deliver_at_ms: published.deliver_at_ms,
                last_value,
            }
            .boxed(),
            copy_of: message.copy_of,
        }
    }

    /// It delivered from `queue` as message `seq`: to its first acquirer
    /// or not, and `settled` (a browser's copy) or held until settled.
    pub fn delivery(&self, queue: &str, seq: Seq, first_acquirer: bool, settled: bool) -> Delivery {
        Delivery {
            queue: queue.to_owned(),
            seq,
            body: self.body.clone(),
            delivery_count: self.delivery_count,
            first_acquirer,
            settled,
            annotations: self.annotations.clone(),
        }
    }

    fn traits(&self) -> &Traits {
        self.traits.as_deref().unwrap_or(&Traits::PLAIN)
    }

    /// Its `header.priority`.
    pub fn priority(&self) -> u8 {
        self.traits().priority
    }

    /// Its `group-id`.
    pub fn group(&self) -> Option<&String> {
        self.traits().group.as_ref()
    }

    /// When it may be delivered, if scheduled.
    pub fn deliver_at_ms(&self) -> Option<u64> {
        self.traits().deliver_at_ms
    }

    /// The encoded value of its last-value queue's key property.
    pub fn last_value(&self) -> Option<&Bytes> {
        self.traits().last_value.as_ref()
    }

    /// True while it is scheduled for later than `now_ms`.
    pub fn is_scheduled(&self, now_ms: u64) -> bool {
        self.deliver_at_ms().is_some_and(|at| at > now_ms)
    }

    /// Body bytes, as counted against `max_bytes`.
    pub fn size(&self) -> u64 {
        self.body.len() as u64
    }

    /// True once its time to live has run out.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expiry_ms.is_some_and(|expiry| expiry <= now_ms)
    }

    /// Merges annotations in, replacing the values of keys already present
    /// and appending new keys in order.
    pub fn merge_annotations(&mut self, annotations: Vec<(Value, Value)>) {
        for (key, value) in annotations {
            match self.annotations.iter_mut().find(|(k, _)| *k == key) {
                Some((_, existing)) => *existing = value,
                None => self.annotations.push((key, value)),
            }
        }
    }

    /// Prepares a message taken from queue `from` for the dead-letter queue
    /// configured by `target`, at `now_ms`.
    ///
    /// It starts afresh there: ready, no failed deliveries (so a message
    /// dead-lettered for its delivery limit is not dead-lettered again at the
    /// first failure), and, as in RabbitMQ, without its own expiry, which
    /// would otherwise expire it again at once; the target's default TTL
    /// applies. It stays persistent only if the target is durable.
    pub fn dead_lettered(
        &mut self,
        now_ms: u64,
        from: &str,
        reason: DeadLetterReason,
        target: &QueueConfig,
    ) {
        debug_assert!(self.holder.is_none(), "a message leaves its queue first");
        self.merge_annotations(vec![
            (
                Value::Symbol(Symbol::from_static(DEAD_LETTER_REASON)),
                Value::Symbol(Symbol::from_static(reason.as_str())),
            ),
            // A string, not a symbol: queue names need not be ASCII.
            (
                Value::Symbol(Symbol::from_static(DEAD_LETTER_QUEUE)),
                Value::String(from.to_owned()),
            ),
        ]);
        self.delivery_count = 0;
        self.expiry_ms = expiry_ms(now_ms, target.default_ttl_ms, None);
        self.persistent &= target.durable;
        // Its key is the target's to name.
        let traits = Traits {
            last_value: keyed_value(&self.body, target),
            ..self.traits().clone()
        };
        self.traits = traits.boxed();
    }
}

impl Message {
    /// The message, out of its queue, joins `target` by the management
    /// API's move: it keeps its annotations, expiry and delivery count, is
    /// persistent only in a durable queue, and takes the key `target`
    /// names, as a dead-lettered message does.
    pub fn moved(&mut self, target: &QueueConfig) {
        debug_assert!(self.holder.is_none(), "a message leaves its queue first");
        self.persistent &= target.durable;
        let traits = Traits {
            last_value: keyed_value(&self.body, target),
            ..self.traits().clone()
        };
        self.traits = traits.boxed();
    }
}

/// The expiry of a message arriving at `now_ms`: the earlier of its time to
/// live and its absolute expiry time.
fn expiry_ms(now_ms: u64, ttl_ms: Option<u64>, absolute_expiry_ms: Option<u64>) -> Option<u64> {
    let relative = ttl_ms.map(|ttl| now_ms.saturating_add(ttl));
    match (relative, absolute_expiry_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How many messages, and how many body bytes, a set of messages holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Tally {
    /// Messages.
    pub count: u64,
    /// Body bytes.
    pub bytes: u64,
}

impl Tally {
    /// Nothing.
    pub const ZERO: Tally = Tally { count: 0, bytes: 0 };

    /// Counts a message of `size` bytes in.
    pub fn add(&mut self, size: u64) {
        self.count += 1;
        self.bytes += size;
    }

    /// Counts a message of `size` bytes out.
    pub fn remove(&mut self, size: u64) {
        assert!(self.count >= 1, "tally count underflow");
        assert!(self.bytes >= size, "tally bytes underflow");
        self.count -= 1;
        self.bytes -= size;
    }

    /// Counts another tally's messages in.
    pub fn merge(&mut self, other: Tally) {
        self.count += other.count;
        self.bytes += other.bytes;
    }

    /// Counts another tally's messages out.
    pub fn deduct(&mut self, other: Tally) {
        assert!(self.count >= other.count, "tally count underflow");
        assert!(self.bytes >= other.bytes, "tally bytes underflow");
        self.count -= other.count;
        self.bytes -= other.bytes;
    }

    /// True if one more message of `size` bytes stays within `config`'s
    /// limits.
    pub fn fits(self, size: u64, config: &QueueConfig) -> bool {
        let count_fits = config
            .max_length
            .is_none_or(|max| self.count.checked_add(1).is_some_and(|c| c <= max));
        let bytes_fit = config
            .max_bytes
            .is_none_or(|max| self.bytes.checked_add(size).is_some_and(|b| b <= max));
        count_fits && bytes_fit
    }

    /// True if the tally is within `config`'s limits.
    pub fn within(self, config: &QueueConfig) -> bool {
        config.max_length.is_none_or(|max| self.count <= max)
            && config.max_bytes.is_none_or(|max| self.bytes <= max)
    }
}
