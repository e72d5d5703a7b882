//! Queue tests: behaviour by behaviour, the encodings, and the replay of a
//! log against a live machine.

use bytes::Bytes;

use super::{
    Command, ConsumerId, Delivery, Effect, MessageFilter, NewMessage, Outcome, QueueConfig, Queues,
    Seq,
};
use crate::amqp::codec::{Symbol, Value};

mod behaviour;
mod codec;
mod paging;
#[cfg(feature = "planted-bugs")]
mod planted;
mod replay;
mod stats;
mod transaction;
mod types;

/// The whole state's encoding (see [`Queues::encode_whole`]).
fn whole(queues: &Queues) -> Bytes {
    let mut out = bytes::BytesMut::new();
    queues.encode_whole(&mut out);
    out.freeze()
}

/// The machine of a [`whole`] encoding.
fn from_whole(mut encoded: Bytes) -> Queues {
    let queues = Queues::decode_whole(&mut encoded).expect("a whole state decodes");
    assert!(encoded.is_empty(), "a whole state is decoded to its end");
    queues
}

/// A machine with a clock and a seq counter, applying commands one by one
/// and checking every invariant after each (`apply` does in debug builds).
struct Bench {
    queues: Queues,
    now_ms: u64,
    next_seq: Seq,
}

impl Bench {
    fn new() -> Self {
        Self {
            queues: Queues::new(),
            now_ms: 1_000,
            next_seq: 1,
        }
    }

    fn apply(&mut self, command: Command) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.queues.apply(self.now_ms, command, &mut effects);
        effects
    }

    fn declare(&mut self, queue: &str, config: QueueConfig) {
        let effects = self.apply(Command::Declare {
            queue: queue.into(),
            config: Box::new(config),
        });
        assert_eq!(
            effects,
            [Effect::Declared {
                queue: queue.into()
            }]
        );
    }

    /// Publishes with the next seq, returning it and the effects.
    fn publish(&mut self, queue: &str, message: NewMessage) -> (Seq, Vec<Effect>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let effects = self.apply(Command::Enqueue {
            queue: queue.into(),
            seq,
            message,
        });
        (seq, effects)
    }

    /// Publishes a durable message that must be accepted.
    fn send(&mut self, queue: &str, body: &'static str) -> Seq {
        let (seq, effects) = self.publish(queue, durable(body));
        assert!(
            effects.contains(&Effect::Enqueued {
                queue: queue.into(),
                seq
            }),
            "{effects:#?}"
        );
        seq
    }

    fn attach(&mut self, consumer: ConsumerId, queue: &str) {
        let effects = self.apply(Command::Attach {
            consumer,
            queue: queue.into(),
            browse: false,
            filter: None,
        });
        assert_eq!(effects, []);
    }

    fn credit(&mut self, consumer: ConsumerId, credit: u32) -> Vec<Effect> {
        self.apply(Command::Credit {
            consumer,
            credit,
            drain: false,
        })
    }

    fn settle(&mut self, queue: &str, seq: Seq, outcome: Outcome) -> Vec<Effect> {
        self.apply(Command::Settle {
            queue: queue.into(),
            seq,
            outcome,
        })
    }

    fn info(&self, queue: &str) -> (u64, u64) {
        let info = self.queues.info(queue).expect("queue exists");
        (info.depth, info.unsettled)
    }
}

/// A durable message with no expiry.
fn durable(body: &'static str) -> NewMessage {
    NewMessage {
        body: Bytes::from_static(body.as_bytes()),
        durable: true,
        ttl_ms: None,
        absolute_expiry_ms: None,
        message_id: None,
        traits: None,
        copy_of: None,
    }
}

/// A transient message with no expiry.
fn transient(body: &'static str) -> NewMessage {
    NewMessage {
        durable: false,
        ..durable(body)
    }
}

/// A durable queue's config, otherwise the default.
fn durable_queue() -> QueueConfig {
    QueueConfig {
        durable: true,
        ..QueueConfig::default()
    }
}

/// The `(consumer, seq)` of every delivery among `effects`, in order.
fn delivered(effects: &[Effect]) -> Vec<(ConsumerId, Seq)> {
    deliveries(effects)
        .map(|(consumer, d)| (consumer, d.seq))
        .collect()
}

fn deliveries(effects: &[Effect]) -> impl Iterator<Item = (ConsumerId, &Delivery)> {
    effects.iter().filter_map(|e| match e {
        Effect::Deliver { consumer, delivery } => Some((*consumer, delivery)),
        _ => None,
    })
}

/// The only delivery among `effects`.
fn only_delivery(effects: &[Effect]) -> &Delivery {
    let all: Vec<_> = deliveries(effects).collect();
    assert_eq!(all.len(), 1, "{effects:#?}");
    all[0].1
}

fn symbol(s: &'static str) -> Value {
    Value::Symbol(Symbol::from_static(s))
}

/// A filter of one JMS selector.
fn selector(text: &str) -> Box<MessageFilter> {
    use crate::amqp::codec::{Described, Descriptor};
    let selector = Described {
        descriptor: Descriptor::Name(Symbol::from_static("apache.org:selector-filter:string")),
        value: Value::from(text),
    };
    let entry = (symbol("jms-selector"), Value::from(selector));
    let filter = MessageFilter::new(&[entry]).expect("the selector parses");
    Box::new(filter.expect("a selector is a filter in effect"))
}

/// A `modified` outcome.
fn modified(delivery_failed: bool, undeliverable_here: bool) -> Outcome {
    Outcome::Modified {
        delivery_failed,
        undeliverable_here,
        annotations: Vec::new(),
    }
}
