//! Where queues live: which of a node's groups holds each queue. A pure
//! function of the queue's name (and of its dead-letter chain, which must
//! live in the same group), so every node computes the same group for a
//! queue without asking anyone. A single node has one group.

use std::sync::Arc;

use crate::config::Config;
use crate::node::TOPIC_PREFIX;
use crate::node::address::topic_of_subscription;

/// Where queues live: `groups` data groups, numbered from 1.
#[derive(Debug, Clone)]
pub(super) struct Placement {
    groups: u32,
    config: Arc<Config>,
    /// Whether any queue dead-letters: if none does, a queue's group
    /// depends on its name alone, which is all most brokers need to look at
    /// on every command.
    dead_letters: bool,
}

impl Placement {
    pub(super) fn new(groups: u32, config: &Config) -> Self {
        let dead_letters = !config.queues.dead_letter_queue.is_empty()
            || config.queue_overrides.iter().any(|entry| {
                entry
                    .dead_letter_queue
                    .as_ref()
                    .is_some_and(|q| !q.is_empty())
            });
        Self {
            groups,
            config: Arc::new(config.clone()),
            dead_letters,
        }
    }

    /// The group of `queue`: for a topic's address and its subscriptions,
    /// the topic's (a publish to the topic is fanned out inside it); for
    /// another queue, that of the last queue of its dead-letter chain, so
    /// that a message is dead-lettered inside its group.
    pub(super) fn group_of(&self, queue: &str) -> u32 {
        if queue.starts_with(TOPIC_PREFIX) {
            return match topic_of_subscription(queue) {
                Some(topic) => self.group_of_name(&format!("{TOPIC_PREFIX}{topic}")),
                None => self.group_of_name(queue),
            };
        }
        if !self.dead_letters {
            return self.group_of_name(queue);
        }
        let mut key = queue.to_owned();
        for _ in 0..DEAD_LETTER_CHAIN_MAX {
            match self.config.queue_settings(&key).dead_letter_queue {
                Some(next) if next != key && next != queue => key = next,
                _ => break,
            }
        }
        self.group_of_name(&key)
    }

    /// A group from a name's hash. CRC is linear, so names that differ in a
    /// few characters (`queue-1`, `queue-2`) share bit patterns: murmur3's
    /// finaliser mixes them before the modulo spreads them.
    fn group_of_name(&self, name: &str) -> u32 {
        let mut hash = crc32c::crc32c(name.as_bytes());
        hash ^= hash >> 16;
        hash = hash.wrapping_mul(0x85eb_ca6b);
        hash ^= hash >> 13;
        hash = hash.wrapping_mul(0xc2b2_ae35);
        hash ^= hash >> 16;
        1 + hash % self.groups
    }
}

/// How far [`Placement::group_of`] follows a dead-letter chain (which may
/// loop).
const DEAD_LETTER_CHAIN_MAX: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueOverride;

    fn dead_lettering(queue: &str, into: &str) -> QueueOverride {
        QueueOverride {
            name: queue.into(),
            dead_letter_queue: Some(into.into()),
            ..QueueOverride::default()
        }
    }

    #[test]
    fn a_dead_letter_chain_lives_in_one_group_and_a_loop_ends() {
        let config = Config {
            queue_overrides: vec![
                dead_lettering("orders", "orders.dlq"),
                dead_lettering("orders.dlq", "parked"),
                dead_lettering("ping", "pong"),
                dead_lettering("pong", "ping"),
            ],
            ..Config::default()
        };
        let placement = Placement::new(64, &config);
        let parked = placement.group_of("parked");
        assert_eq!(placement.group_of("orders"), parked);
        assert_eq!(placement.group_of("orders.dlq"), parked);
        assert!((1..=64).contains(&placement.group_of("ping")));
        let spread: std::collections::BTreeSet<u32> = (0..100)
            .map(|i| placement.group_of(&format!("queue-{i}")))
            .collect();
        assert!(
            spread.len() > 32,
            "queues spread over the groups: {spread:?}"
        );
    }
}
