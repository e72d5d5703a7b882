//! A pinned workload shape: how many clients of each kind, and how many
//! messages each producer sends, in place of what the seed draws.
//!
//! A replay file may hold one (`[workload]`), so that the shrinker can drop
//! clients. It overrides only the counts it names, over the workload the
//! seed draws ([`WorkloadParams::draw`]): whatever else the workload draws
//! (and whatever is added to it later) still comes from the seed. Each
//! client keeps its own stream (seed and client id), so dropping producer 2
//! leaves producers 0 and 1 deciding as before.

use serde::{Deserialize, Serialize};

use sluice::config::Overflow;

use crate::queue_types::QueueTypes;
use crate::workload::WorkloadParams;

/// Counts that override the drawn workload's; `None` keeps the drawn one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkloadShape {
    /// Producers to queues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producers: Option<u32>,
    /// Consumers of queues (at least one per queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumers: Option<u32>,
    /// The most messages one producer sends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_per_producer: Option<u64>,
    /// Producers to the topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_producers: Option<u32>,
    /// Durable subscribers to the topic (at least one if it has producers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<u32>,
    /// Queue 1 refuses publishes beyond this many messages
    /// (`reject-publish`), whatever the seed draws for it; 0: queue 1 has
    /// no limit (as `max_length = 0` means to the broker), which keeps the
    /// runs of files recorded while the seed's draw of it went unused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_publish_limit: Option<u64>,
    /// `false` leaves out the typed queues (last-value, priority) and
    /// their clients, whatever the seed draws: a file written before they
    /// came keeps its run (and the bug it reproduces) with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typed_queues: Option<bool>,
    /// Whether receivers may settle in rcv-settle-mode `second`: `false`
    /// keeps a replay file whose seed now draws it on the run that
    /// reproduced its open bug.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcv_settle_second: Option<bool>,
    /// Requesters (and so a responder), for the same reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requesters: Option<u32>,
    /// `false` leaves out the grouped queue and its clients, whatever the
    /// seed draws, as `typed_queues` does the other typed queues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grouped_queue: Option<bool>,
    /// Of the subscribers, how many (the first ones) attach volatile
    /// subscriptions, for the same reason (at most `subscribers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volatile_subscribers: Option<u32>,
    /// Intruders (0 or 1): 0 keeps a replay file's run free of one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intruders: Option<u32>,
}

impl WorkloadShape {
    /// Every count of `params`, pinned.
    pub fn of(params: &WorkloadParams) -> Self {
        Self {
            producers: Some(params.producers),
            consumers: Some(params.consumers),
            messages_per_producer: Some(params.messages_per_producer),
            topic_producers: Some(params.topic_producers),
            subscribers: Some(params.subscribers),
            reject_publish_limit: match params.limit {
                Some((max_length, Overflow::RejectPublish)) => Some(max_length),
                _ => None,
            },
            typed_queues: None,
            rcv_settle_second: Some(params.rcv_settle_second),
            requesters: Some(params.requesters),
            grouped_queue: None,
            volatile_subscribers: Some(params.volatile_subscribers),
            intruders: Some(params.intruders),
        }
    }

    /// `drawn` with the pinned counts; an error if the result cannot
    /// finish: a queue without a consumer, topic messages without a
    /// subscriber, nothing sent at all.
    pub fn apply(&self, drawn: &WorkloadParams) -> Result<WorkloadParams, String> {
        let mut params = drawn.clone();
        params.producers = self.producers.unwrap_or(params.producers);
        params.consumers = self.consumers.unwrap_or(params.consumers);
        params.messages_per_producer =
            (self.messages_per_producer).unwrap_or(params.messages_per_producer);
        params.topic_producers = self.topic_producers.unwrap_or(params.topic_producers);
        params.subscribers = self.subscribers.unwrap_or(params.subscribers);
        params.rcv_settle_second = self.rcv_settle_second.unwrap_or(params.rcv_settle_second);
        params.requesters = self.requesters.unwrap_or(params.requesters);
        params.intruders = self.intruders.unwrap_or(params.intruders);
        params.volatile_subscribers = self
            .volatile_subscribers
            .unwrap_or(params.volatile_subscribers)
            .min(params.subscribers);
        if let Some(max_length) = self.reject_publish_limit {
            params.limit = (max_length > 0).then_some((max_length, Overflow::RejectPublish));
        }
        if self.typed_queues == Some(false) {
            params.queue_types = QueueTypes::default();
        }
        if self.grouped_queue == Some(false) {
            params.grouped = None;
        }
        let queues = u32::try_from(params.queues.len()).unwrap_or(u32::MAX);
        if params.consumers < queues {
            return Err(format!(
                "{} consumer(s) for {queues} queues: each queue needs one",
                params.consumers
            ));
        }
        if params.topic_producers > 0 && params.subscribers == 0 {
            return Err("topic producers without a subscriber".to_owned());
        }
        if params.producers + params.topic_producers == 0 || params.messages_per_producer == 0 {
            return Err("no producer, or no message to send".to_owned());
        }
        Ok(params)
    }
}

/// The host names of `params`'s clients.
pub fn client_names(params: &WorkloadParams) -> Vec<String> {
    params
        .clients()
        .into_iter()
        .map(|client| client.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn drawn() -> WorkloadParams {
        WorkloadParams::draw(&mut ChaCha8Rng::seed_from_u64(6))
    }

    #[test]
    fn pinned_counts_override_the_drawn_ones_and_nothing_else() {
        let drawn = drawn();
        assert_eq!(WorkloadShape::default().apply(&drawn), Ok(drawn.clone()));
        assert_eq!(WorkloadShape::of(&drawn).apply(&drawn), Ok(drawn.clone()));
        let shape = WorkloadShape {
            producers: Some(1),
            messages_per_producer: Some(10),
            topic_producers: Some(0),
            subscribers: Some(0),
            ..WorkloadShape::default()
        };
        let params = shape.apply(&drawn).expect("a valid shape");
        assert_eq!(params.producers, 1);
        assert_eq!(params.messages_per_producer, 10);
        assert_eq!(params.consumers, drawn.consumers);
        assert_eq!(params.queues, drawn.queues);
        // The typed queues' producers follow the pinned ones.
        let typed = params.typed_queues().len();
        let names = client_names(&params);
        assert_eq!(names[0], "producer0");
        assert_eq!(names[1 + typed], "consumer0");
        for (pinned, limit) in [(41, Some((41, Overflow::RejectPublish))), (0, None)] {
            let shape = WorkloadShape {
                reject_publish_limit: Some(pinned),
                ..WorkloadShape::default()
            };
            let params = shape.apply(&drawn).expect("a valid shape");
            assert_eq!(params.limit, limit, "pinned {pinned}");
        }
    }

    #[test]
    fn shapes_that_cannot_finish_are_refused() {
        let drawn = drawn();
        for shape in [
            WorkloadShape {
                consumers: Some(1),
                ..WorkloadShape::default()
            },
            WorkloadShape {
                topic_producers: Some(1),
                subscribers: Some(0),
                ..WorkloadShape::default()
            },
            WorkloadShape {
                producers: Some(0),
                topic_producers: Some(0),
                ..WorkloadShape::default()
            },
        ] {
            assert!(shape.apply(&drawn).is_err(), "{shape:?}");
        }
    }
}
