//! Addressing: what node a link's terminus names (a queue, a topic, a
//! broker-named temporary queue, or "route each message by its `to`"),
//! how a topic's subscription queues are named, and where a message goes.

use bytes::Bytes;

use super::message::{Inspected, inspect};
use crate::amqp::codec::Symbol;
use crate::amqp::types::{
    DistributionMode, Error, ExpiryPolicy, Source, Target, TerminusDurability, condition,
};

/// The prefix that makes an address a topic, as in `topic://prices`.
pub const TOPIC_PREFIX: &str = "topic://";

/// The terminus capability that makes an address a topic (Qpid JMS sends it).
const TOPIC_CAPABILITY: &str = "topic";

/// Separates a topic's name from a subscription's in a subscription
/// queue's name: `topic://prices::client-1:prices-sub`.
const SUBSCRIPTION_SEPARATOR: &str = "::";

/// Where a consumer (a link on which the broker sends) takes messages from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerNode {
    /// An anycast queue; `browse` reads without consuming (distribution-mode copy).
    Queue { name: String, browse: bool },
    /// A topic subscription. A durable one outlives the link and is named by
    /// the link; any other is deleted when the link detaches.
    Topic { topic: String, durable: bool },
    /// A temporary queue the broker names, deleted when the link closes.
    Dynamic,
}

/// Where a producer (a link on which the broker receives) sends messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProducerNode {
    /// An anycast queue.
    Queue(String),
    /// A topic: every subscription gets a copy.
    Topic(String),
    /// No target address: each message goes where its `properties.to` says.
    AnonymousRelay,
}

/// A terminus the broker cannot serve, with the condition to refuse it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The AMQP error condition.
    pub condition: &'static str,
    /// Why, for the client.
    pub description: String,
}

impl Refusal {
    fn new(condition: &'static str, description: impl Into<String>) -> Self {
        Self {
            condition,
            description: description.into(),
        }
    }
}

/// A message's destination as named by `properties.to` (anonymous relay).
pub fn relay_destination(to: &str) -> ProducerNode {
    match to.strip_prefix(TOPIC_PREFIX) {
        Some(topic) => ProducerNode::Topic(topic.to_owned()),
        None => ProducerNode::Queue(to.to_owned()),
    }
}

/// What a consumer's source names.
pub fn consumer_node(source: Option<&Source>) -> Result<ConsumerNode, Refusal> {
    let source = source
        .ok_or_else(|| Refusal::new(condition::INVALID_FIELD, "a receiver needs a source"))?;
    if source.dynamic {
        return Ok(ConsumerNode::Dynamic);
    }
    let address = non_empty(source.address.as_deref())
        .ok_or_else(|| Refusal::new(condition::INVALID_FIELD, "the source has no address"))?;
    if let Some(topic) = topic_name(address, &source.capabilities) {
        let durable = source.durable == Some(TerminusDurability::UnsettledState)
            && source.expiry_policy == Some(ExpiryPolicy::Never);
        return Ok(ConsumerNode::Topic {
            topic: topic.to_owned(),
            durable,
        });
    }
    Ok(ConsumerNode::Queue {
        name: address.to_owned(),
        browse: source.distribution_mode == Some(DistributionMode::Copy),
    })
}

/// What a producer's target names.
pub fn producer_node(target: Option<&Target>) -> Result<ProducerNode, Refusal> {
    let Some(target) = target else {
        return Err(Refusal::new(
            condition::INVALID_FIELD,
            "a sender needs a target",
        ));
    };
    if target.dynamic {
        return Err(Refusal::new(
            condition::NOT_IMPLEMENTED,
            "dynamic targets are not supported; use a dynamic source for replies",
        ));
    }
    let Some(address) = non_empty(target.address.as_deref()) else {
        return Ok(ProducerNode::AnonymousRelay);
    };
    Ok(match topic_name(address, &target.capabilities) {
        Some(topic) => ProducerNode::Topic(topic.to_owned()),
        None => ProducerNode::Queue(address.to_owned()),
    })
}

/// The topic an address names, if it names one: by prefix, or by the
/// `topic` capability on the terminus.
fn topic_name<'a>(address: &'a str, capabilities: &[Symbol]) -> Option<&'a str> {
    if let Some(topic) = address.strip_prefix(TOPIC_PREFIX) {
        return Some(topic);
    }
    capabilities
        .iter()
        .any(|c| c == TOPIC_CAPABILITY)
        .then_some(address)
}

fn non_empty(address: Option<&str>) -> Option<&str> {
    address.filter(|a| !a.is_empty())
}

/// The queue of subscription `subscription` to `topic`.
pub(in crate::node) fn subscription_queue(topic: &str, subscription: &str) -> String {
    format!("{TOPIC_PREFIX}{topic}{SUBSCRIPTION_SEPARATOR}{subscription}")
}

/// The topic a subscription queue subscribes to; `None` for other queues.
pub(in crate::node) fn topic_of_subscription(queue: &str) -> Option<&str> {
    let (topic, _) = queue
        .strip_prefix(TOPIC_PREFIX)?
        .split_once(SUBSCRIPTION_SEPARATOR)?;
    Some(topic)
}

/// The queues a message goes to, and what it says about itself. `exists`
/// says whether a queue is declared; `subscriptions` gives where a topic's
/// messages go.
pub(in crate::node) fn destinations(
    node: &ProducerNode,
    message: &Bytes,
    exists: impl Fn(&str) -> bool,
    subscriptions: impl Fn(&str) -> Vec<String>,
) -> Result<(Vec<String>, Inspected), Error> {
    let inspected = inspect(message).map_err(|e| {
        Error::new(
            condition::DECODE_ERROR,
            format!("the message does not decode: {e}"),
        )
    })?;
    let destination = match node {
        ProducerNode::AnonymousRelay => match &inspected.to {
            Some(to) => relay_destination(to),
            None => {
                return Err(Error::new(
                    condition::NOT_FOUND,
                    "a message on an anonymous-relay link needs properties.to",
                ));
            }
        },
        other => other.clone(),
    };
    let queues = match destination {
        ProducerNode::Queue(queue) if exists(&queue) => vec![queue],
        ProducerNode::Queue(queue) => {
            return Err(Error::new(
                condition::NOT_FOUND,
                format!("no queue named {queue:?}"),
            ));
        }
        ProducerNode::Topic(topic) => subscriptions(&topic),
        ProducerNode::AnonymousRelay => unreachable!("resolved above"),
    };
    Ok((queues, inspected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(address: &str) -> Source {
        Source {
            address: Some(address.to_owned()),
            ..Source::default()
        }
    }

    #[test]
    fn a_plain_address_is_a_queue() {
        assert_eq!(
            consumer_node(Some(&source("orders"))),
            Ok(ConsumerNode::Queue {
                name: "orders".into(),
                browse: false
            })
        );
        let target = Target {
            address: Some("orders".into()),
            ..Target::default()
        };
        assert_eq!(
            producer_node(Some(&target)),
            Ok(ProducerNode::Queue("orders".into()))
        );
    }

    #[test]
    fn distribution_mode_copy_browses() {
        let browse = Source {
            distribution_mode: Some(DistributionMode::Copy),
            ..source("orders")
        };
        assert_eq!(
            consumer_node(Some(&browse)),
            Ok(ConsumerNode::Queue {
                name: "orders".into(),
                browse: true
            })
        );
    }

    #[test]
    fn topics_by_prefix_or_capability() {
        assert_eq!(
            consumer_node(Some(&source("topic://prices"))),
            Ok(ConsumerNode::Topic {
                topic: "prices".into(),
                durable: false
            })
        );
        let jms = Source {
            capabilities: vec![Symbol::from_static("topic")],
            durable: Some(TerminusDurability::UnsettledState),
            expiry_policy: Some(ExpiryPolicy::Never),
            ..source("prices")
        };
        assert_eq!(
            consumer_node(Some(&jms)),
            Ok(ConsumerNode::Topic {
                topic: "prices".into(),
                durable: true
            })
        );
        assert_eq!(
            relay_destination("topic://prices"),
            ProducerNode::Topic("prices".into())
        );
    }

    #[test]
    fn a_durable_subscription_needs_both_unsettled_state_and_never_expiring() {
        let half = Source {
            durable: Some(TerminusDurability::UnsettledState),
            ..source("topic://prices")
        };
        assert!(matches!(
            consumer_node(Some(&half)),
            Ok(ConsumerNode::Topic { durable: false, .. })
        ));
    }

    #[test]
    fn dynamic_sources_and_null_targets() {
        let dynamic = Source {
            dynamic: true,
            ..Source::default()
        };
        assert_eq!(consumer_node(Some(&dynamic)), Ok(ConsumerNode::Dynamic));
        assert_eq!(
            producer_node(Some(&Target::default())),
            Ok(ProducerNode::AnonymousRelay)
        );
    }

    #[test]
    fn missing_termini_are_refused() {
        assert_eq!(
            consumer_node(None).unwrap_err().condition,
            condition::INVALID_FIELD
        );
        assert_eq!(
            consumer_node(Some(&Source::default()))
                .unwrap_err()
                .condition,
            condition::INVALID_FIELD
        );
        assert_eq!(
            producer_node(None).unwrap_err().condition,
            condition::INVALID_FIELD
        );
    }
}
