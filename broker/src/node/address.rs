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

/// The terminus capabilities that make an address a topic (Qpid JMS sends
/// them).
const TOPIC_CAPABILITIES: [&str; 2] = ["topic", "temporary-topic"];

/// The capability that asks for a temporary topic rather than a temporary
/// queue on a dynamic target.
const TEMPORARY_TOPIC_CAPABILITY: &str = "temporary-topic";

/// The source capability that lets several links consume one subscription.
const SHARED_CAPABILITY: &str = "shared";

/// The source capability that names a subscription independently of the
/// client's container id.
const GLOBAL_CAPABILITY: &str = "global";

/// What a subscription's link name carries after its name: Qpid JMS adds
/// `|global`, `|volatile1`, … to keep its links' names apart.
const LINK_NAME_SUFFIX: char = '|';

/// Separates a topic's name from a subscription's in a subscription
/// queue's name: `topic://prices::client-1:prices-sub`.
const SUBSCRIPTION_SEPARATOR: &str = "::";

/// Where a consumer (a link on which the broker sends) takes messages from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerNode {
    /// An anycast queue; `browse` reads without consuming (distribution-mode copy).
    Queue { name: String, browse: bool },
    /// A topic subscription, named by the link (see [`Subscription`]).
    Topic {
        topic: String,
        subscription: Subscription,
    },
    /// A temporary queue the broker names, deleted when the link closes.
    Dynamic,
    /// The durable subscription the link's name names, whichever topic it
    /// is of: a receiver with no source looks one up (how a JMS client
    /// finds a subscription to unsubscribe it).
    Lookup(Subscription),
}

/// How a topic subscription is named and shared, from its link (the
/// extended subscription semantics Qpid JMS and Artemis follow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Its name: the link name up to a `|`.
    pub name: String,
    /// It outlives its links (source durable `unsettled-state`, expiry
    /// `never`), until a link to it closes.
    pub durable: bool,
    /// Several links may consume it (capability `shared`); otherwise a
    /// non-durable one is the link's own.
    pub shared: bool,
    /// Its name is global (capability `global`, or a `|global` link name
    /// suffix) rather than scoped to the client's container id.
    pub global: bool,
}

impl Subscription {
    /// The subscription a link named `link_name` with `capabilities` names.
    fn of(link_name: &str, durable: bool, capabilities: &[Symbol]) -> Self {
        let (name, suffixes) = link_name
            .split_once(LINK_NAME_SUFFIX)
            .unwrap_or((link_name, ""));
        let has = |capability| capabilities.iter().any(|c| c == capability);
        Self {
            name: name.to_owned(),
            durable,
            shared: has(SHARED_CAPABILITY),
            global: has(GLOBAL_CAPABILITY) || suffixes.starts_with(GLOBAL_CAPABILITY),
        }
    }
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
    /// A temporary queue, or with `topic` a temporary topic, that the broker
    /// names and deletes when the link detaches (a JMS temporary
    /// destination).
    Dynamic { topic: bool },
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

/// What the source of a consumer's link `link_name` names.
pub fn consumer_node(source: Option<&Source>, link_name: &str) -> Result<ConsumerNode, Refusal> {
    let Some(source) = source else {
        return Ok(ConsumerNode::Lookup(Subscription::of(link_name, true, &[])));
    };
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
            subscription: Subscription::of(link_name, durable, &source.capabilities),
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
        let topic = target
            .capabilities
            .iter()
            .any(|c| c == TEMPORARY_TOPIC_CAPABILITY);
        return Ok(ProducerNode::Dynamic { topic });
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
        .any(|c| TOPIC_CAPABILITIES.contains(&c.as_str()))
        .then_some(address)
}

fn non_empty(address: Option<&str>) -> Option<&str> {
    address.filter(|a| !a.is_empty())
}

/// The queue of subscription `subscription` to `topic`.
pub(in crate::node) fn subscription_queue(topic: &str, subscription: &str) -> String {
    format!("{TOPIC_PREFIX}{topic}{SUBSCRIPTION_SEPARATOR}{subscription}")
}

/// What scopes a global subscription's name instead of a container id.
const GLOBAL_SCOPE: &str = "|global";

/// The part of a subscription's queue name after the topic's: whose it is
/// and its name. A non-shared, non-durable subscription is its link's own,
/// named by `unique`.
pub(in crate::node) fn subscription_id(
    subscription: &Subscription,
    container_id: &str,
    unique: impl FnOnce() -> String,
) -> String {
    let scope = if subscription.global {
        GLOBAL_SCOPE
    } else {
        container_id
    };
    let name = &subscription.name;
    match (subscription.durable, subscription.shared) {
        (true, _) => format!("{scope}:{name}"),
        (false, true) => format!("~{scope}:{name}"),
        (false, false) => format!("~{}", unique()),
    }
}

/// Whether `queue` is the subscription queue of subscription `id` (of
/// [`subscription_id`]), whatever its topic.
pub(in crate::node) fn is_subscription(queue: &str, id: &str) -> bool {
    topic_of_subscription(queue).is_some()
        && queue
            .strip_suffix(id)
            .is_some_and(|rest| rest.ends_with(SUBSCRIPTION_SEPARATOR))
}

/// The subscription id (of [`subscription_id`]) of a subscription queue;
/// `None` for other queues.
pub(in crate::node) fn subscription_of(queue: &str) -> Option<&str> {
    let (_, id) = queue
        .strip_prefix(TOPIC_PREFIX)?
        .split_once(SUBSCRIPTION_SEPARATOR)?;
    Some(id)
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
/// messages go; `may_relay` whether the producer may send to the address
/// (a queue's name, or `topic://NAME`) a message on the anonymous relay
/// names, asked before anything else is said of it.
pub(in crate::node) fn destinations(
    node: &ProducerNode,
    message: &Bytes,
    exists: impl Fn(&str) -> bool,
    subscriptions: impl Fn(&str) -> Vec<String>,
    may_relay: impl Fn(&str) -> Result<(), Error>,
) -> Result<(Vec<String>, Inspected), Error> {
    let inspected = inspect(message).map_err(|e| {
        Error::new(
            condition::DECODE_ERROR,
            format!("the message does not decode: {e}"),
        )
    })?;
    let destination = match node {
        ProducerNode::AnonymousRelay => match &inspected.to {
            Some(to) => {
                let destination = relay_destination(to);
                match &destination {
                    ProducerNode::Topic(topic) => may_relay(&format!("{TOPIC_PREFIX}{topic}"))?,
                    _ => may_relay(to)?,
                }
                destination
            }
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
        ProducerNode::AnonymousRelay | ProducerNode::Dynamic { .. } => {
            unreachable!("resolved above and at attach")
        }
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
            consumer_node(Some(&source("orders")), "c"),
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
            consumer_node(Some(&browse), "c"),
            Ok(ConsumerNode::Queue {
                name: "orders".into(),
                browse: true
            })
        );
    }

    fn subscription(name: &str, durable: bool, shared: bool, global: bool) -> Subscription {
        Subscription {
            name: name.into(),
            durable,
            shared,
            global,
        }
    }

    fn durable_jms(address: &str, capabilities: &[&'static str]) -> Source {
        Source {
            capabilities: capabilities
                .iter()
                .copied()
                .map(Symbol::from_static)
                .collect(),
            durable: Some(TerminusDurability::UnsettledState),
            expiry_policy: Some(ExpiryPolicy::Never),
            ..source(address)
        }
    }

    #[test]
    fn topics_by_prefix_or_capability() {
        assert_eq!(
            consumer_node(Some(&source("topic://prices")), "sub"),
            Ok(ConsumerNode::Topic {
                topic: "prices".into(),
                subscription: subscription("sub", false, false, false),
            })
        );
        assert_eq!(
            consumer_node(Some(&durable_jms("prices", &["topic"])), "sub"),
            Ok(ConsumerNode::Topic {
                topic: "prices".into(),
                subscription: subscription("sub", true, false, false),
            })
        );
        assert_eq!(
            relay_destination("topic://prices"),
            ProducerNode::Topic("prices".into())
        );
    }

    /// Qpid JMS's shared subscriptions: the name is the link's up to a `|`,
    /// `shared` lets links share it, and `global` (or a `|global` suffix)
    /// takes the container id out of its name.
    #[test]
    fn shared_and_global_subscriptions_by_capability_and_link_name() {
        let shared = durable_jms("prices", &["topic", "shared", "global"]);
        assert_eq!(
            consumer_node(Some(&shared), "sub|global"),
            Ok(ConsumerNode::Topic {
                topic: "prices".into(),
                subscription: subscription("sub", true, true, true),
            })
        );
        let volatile = Source {
            capabilities: vec![Symbol::from_static("topic"), Symbol::from_static("shared")],
            ..source("prices")
        };
        assert_eq!(
            consumer_node(Some(&volatile), "sub|volatile1"),
            Ok(ConsumerNode::Topic {
                topic: "prices".into(),
                subscription: subscription("sub", false, true, false),
            })
        );
        let unique = || "1.1.1".to_owned();
        let id = |s: &Subscription| subscription_id(s, "client", unique);
        assert_eq!(id(&subscription("sub", true, false, false)), "client:sub");
        assert_eq!(id(&subscription("sub", true, true, true)), "|global:sub");
        assert_eq!(id(&subscription("sub", false, true, false)), "~client:sub");
        assert_eq!(id(&subscription("sub", false, false, false)), "~1.1.1");
        let queue = subscription_queue("prices", "client:sub");
        assert!(is_subscription(&queue, "client:sub"));
        assert!(
            !is_subscription(&queue, "ent:sub"),
            "a whole id, not its tail"
        );
        assert!(
            !is_subscription("client:sub", "client:sub"),
            "not a subscription"
        );
    }

    #[test]
    fn a_durable_subscription_needs_both_unsettled_state_and_never_expiring() {
        let half = Source {
            durable: Some(TerminusDurability::UnsettledState),
            ..source("topic://prices")
        };
        assert!(matches!(
            consumer_node(Some(&half), "sub"),
            Ok(ConsumerNode::Topic {
                subscription: Subscription { durable: false, .. },
                ..
            })
        ));
    }

    #[test]
    fn dynamic_termini_and_null_targets() {
        let dynamic = Source {
            dynamic: true,
            ..Source::default()
        };
        assert_eq!(
            consumer_node(Some(&dynamic), "c"),
            Ok(ConsumerNode::Dynamic)
        );
        assert_eq!(
            producer_node(Some(&Target::default())),
            Ok(ProducerNode::AnonymousRelay)
        );
        let temporary = |capability| Target {
            dynamic: true,
            capabilities: vec![Symbol::from_static(capability)],
            ..Target::default()
        };
        assert_eq!(
            producer_node(Some(&temporary("temporary-queue"))),
            Ok(ProducerNode::Dynamic { topic: false })
        );
        assert_eq!(
            producer_node(Some(&temporary("temporary-topic"))),
            Ok(ProducerNode::Dynamic { topic: true })
        );
    }

    /// A receiver with no source looks up the durable subscription its
    /// link names (a JMS unsubscribe).
    #[test]
    fn a_receiver_without_a_source_looks_up_a_subscription() {
        assert_eq!(
            consumer_node(None, "sub|global"),
            Ok(ConsumerNode::Lookup(subscription("sub", true, false, true)))
        );
    }

    #[test]
    fn missing_termini_are_refused() {
        assert_eq!(
            consumer_node(Some(&Source::default()), "c")
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
