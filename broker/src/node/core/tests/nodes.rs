//! Nodes the broker makes or finds for a link: temporary queues and
//! topics for a sender's dynamic target, and a durable subscription looked
//! up by its link's name.

use super::*;
use crate::amqp::codec::{Described, Descriptor, Symbol, Value};
use crate::amqp::types::{Header, Message, Section};
use crate::node::testing::{CONN, CONSUMER, PRODUCER};
use crate::node::{QueueOptions, Subscription};
use crate::queue::MessageFilter;
use crate::selector::JMS_SELECTOR_NAME;

/// The harness's producer attaches to a dynamic target.
fn attach_temporary(topic: bool) -> Request {
    Request::AttachProducer {
        options: None,
        conn: CONN,
        link: PRODUCER,
        node: ProducerNode::Dynamic { topic },
    }
}

fn detach(link: LinkId, closed: bool) -> Request {
    Request::Detach {
        conn: CONN,
        link,
        closed,
    }
}

/// A JMS temporary queue: the broker names it in its answer to the
/// sender's attach; anyone may consume from it; it goes when the link
/// that made it detaches, and its consumers hear why.
#[test]
fn a_temporary_queue_lives_as_long_as_the_link_that_made_it() {
    for step in STEPS {
        let mut harness = Harness::new(step);
        harness.request(attach_temporary(false));
        harness.commit();
        harness.request(testing::attach_consumer("dynamic.1.1.1"));
        harness.request(testing::credit(10));
        harness.commit();
        harness.publish("a");
        harness.commit();
        assert_eq!(
            harness.said(),
            [
                "producer attached to dynamic.1.1.1".to_owned(),
                format!("credit {}", testing::window()),
                "consumer attached to dynamic.1.1.1".to_owned(),
                "deliver dynamic.1.1.1 3.0".to_owned(),
                "accepted 0".to_owned(),
            ],
            "{step:?}"
        );
        harness.request(detach(PRODUCER, true));
        harness.commit();
        assert_eq!(
            harness.said(),
            ["close link: amqp:resource-deleted"],
            "{step:?}"
        );
        assert_eq!(harness.core.queue_info(), [], "{step:?}");
    }
}

/// A temporary topic is a name: its subscriptions go with their consumers.
#[test]
fn a_temporary_topic_is_named_by_the_broker() {
    let mut harness = Harness::new(Step::Local);
    harness.request(attach_temporary(true));
    assert_eq!(
        harness.said(),
        [
            "producer attached to topic://dynamic.1.1.1".to_owned(),
            format!("credit {}", testing::window()),
        ]
    );
    assert_eq!(harness.uncommitted(), 0, "nothing to declare");
}

/// A crash ends a temporary queue's link without a detach: the node's next
/// start deletes the queues its earlier starts named.
#[test]
fn a_temporary_queue_a_crash_orphaned_is_deleted_after_the_restart() {
    let mut harness = Harness::new(Step::Local);
    harness.request(attach_temporary(false));
    harness.commit();
    harness.restart();
    assert_eq!(harness.core.queue_info().len(), 1, "it survives the crash");
    harness.wait(HOUSEKEEPING_EVERY);
    harness.commit();
    assert_eq!(harness.core.queue_info(), []);
}

/// The durable subscription `sub` of the harness's client to `prices`.
fn subscribe(durable: bool) -> Request {
    testing::subscribe(CONSUMER, "prices", "sub", durable)
}

/// How a JMS client unsubscribes: a receiver with the subscription's link
/// name and no source finds it, and closing that link deletes it. With no
/// such subscription, the attach is refused.
#[test]
fn a_subscription_is_found_by_its_link_name_and_closed() {
    for step in STEPS {
        let mut harness = Harness::new(step);
        harness.request(subscribe(true));
        harness.commit();
        harness.request(detach(CONSUMER, false));
        harness.commit();
        let lookup = || Request::AttachConsumer {
            options: None,
            conn: CONN,
            link: CONSUMER,
            node: ConsumerNode::Lookup(Subscription {
                name: "sub".into(),
                durable: true,
                shared: false,
                global: false,
            })
            .into(),
            container_id: "client".into(),
            filter: None,
        };
        harness.request(lookup());
        harness.commit();
        harness.request(detach(CONSUMER, true));
        harness.commit();
        harness.request(lookup());
        harness.commit();
        assert_eq!(
            harness.said(),
            [
                "consumer attached to topic://prices",
                "consumer attached to topic://prices",
                "consumer refused: amqp:not-found",
            ],
            "{step:?}"
        );
        assert_eq!(harness.core.queue_info(), [], "{step:?}");
    }
}

/// Subscribing again under a name whose subscription is being deleted
/// makes a new subscription, after the deletion, rather than attaching to
/// the one about to go.
#[test]
fn a_subscription_made_while_its_namesake_is_deleted_is_new() {
    for step in STEPS {
        let mut harness = Harness::new(step);
        harness.request(subscribe(true));
        harness.commit();
        harness.request(detach(CONSUMER, true));
        harness.request(subscribe(true));
        harness.commit();
        assert_eq!(
            harness.said(),
            ["consumer attached to topic://prices"; 2],
            "{step:?}: no close link"
        );
        assert_eq!(harness.core.queue_info().len(), 1, "{step:?}");
    }
}

/// A link that creates its queue (by first use of an address, or as a
/// dynamic node) chooses its type in dynamic-node-properties; a queue that
/// exists keeps its own.
#[test]
fn a_link_that_creates_its_queue_chooses_its_type() {
    let last_value = |key: &str| {
        let key = Value::String(key.to_owned());
        let properties = vec![(Symbol::from_static("qpid.last_value_queue_key"), key)];
        QueueOptions::of(&properties).unwrap()
    };
    for step in STEPS {
        let mut harness = Harness::new(step);
        harness.request(Request::AttachProducer {
            conn: CONN,
            link: PRODUCER,
            node: ProducerNode::Queue("prices".into()),
            options: last_value("instrument"),
        });
        harness.commit();
        let prices = harness.declared("prices").expect("declared on first use");
        assert_eq!(prices.last_value_key.as_deref(), Some("instrument"));

        harness.request(Request::AttachConsumer {
            conn: CONN,
            link: CONSUMER,
            node: ConsumerNode::Queue {
                name: "prices".into(),
                browse: false,
            }
            .into(),
            filter: None,
            options: last_value("other"),
            container_id: "client".into(),
        });
        harness.request(Request::AttachProducer {
            conn: CONN,
            link: LinkId {
                handle: 7,
                ..PRODUCER
            },
            node: ProducerNode::Dynamic { topic: false },
            options: last_value("isin"),
        });
        harness.commit();
        let prices = harness.declared("prices").unwrap();
        assert_eq!(
            prices.last_value_key.as_deref(),
            Some("instrument"),
            "{step:?}: an existing queue keeps its type"
        );
        let temporary = harness
            .declared("dynamic.1.1.1")
            .expect("the temporary queue");
        assert_eq!(temporary.last_value_key.as_deref(), Some("isin"));
    }
}

/// The durable subscription `sub` of the harness's client to `topic`,
/// attached on link `handle`, selecting `a = {a}`.
fn subscribe_selecting(handle: u32, topic: &str, a: i32) -> Request {
    let selector = Value::from(Described {
        descriptor: Descriptor::Name(Symbol::from_static(JMS_SELECTOR_NAME)),
        value: Value::from(format!("a = {a}")),
    });
    let entries = [(Value::Symbol(Symbol::from_static("jms")), selector)];
    Request::AttachConsumer {
        conn: CONN,
        link: LinkId { handle, ..CONSUMER },
        node: ConsumerNode::Topic {
            topic: topic.into(),
            subscription: Subscription {
                name: "sub".into(),
                durable: true,
                shared: false,
                global: false,
            },
        }
        .into(),
        filter: MessageFilter::new(&entries).unwrap().map(Box::new),
        options: None,
        container_id: "client".into(),
    }
}

/// How many messages each queue holds, by name.
fn depths(harness: &Harness) -> Vec<(String, u64)> {
    let info = harness.core.queue_info().into_iter();
    info.map(|(name, info)| (name, info.depth + info.unsettled))
        .collect()
}

/// JMS: a durable subscription attached again under its name with another
/// selector or topic is a new one, and the old one goes with what it held;
/// with the same selector and topic it is the same. While a consumer is
/// attached to it, it cannot change: the new attach is refused.
#[test]
fn a_durable_subscription_attached_again_with_another_selector_is_new() {
    let a_is_1 = Message {
        sections: vec![
            Section::Header(Header {
                durable: true,
                ..Header::default()
            }),
            Section::ApplicationProperties(vec![("a".into(), Value::Int(1))]),
            Section::Data(Bytes::from_static(b"m")),
        ],
    };
    let publish = || Request::Publish {
        conn: CONN,
        delivery: DeliveryId {
            link: PRODUCER,
            id: 0,
        },
        message: a_is_1.encode(),
        settled: false,
        txn: None,
    };
    for step in STEPS {
        let mut harness = Harness::new(step);
        harness.request(Request::AttachProducer {
            conn: CONN,
            link: PRODUCER,
            node: ProducerNode::Topic("prices".into()),
            options: None,
        });
        harness.request(subscribe_selecting(1, "prices", 1));
        harness.commit();
        harness.request(publish());
        harness.commit();
        harness.request(subscribe_selecting(5, "prices", 2));
        harness.commit();
        let said = harness.said();
        assert_eq!(
            said.last().map(String::as_str),
            Some("consumer refused: amqp:resource-locked"),
            "{step:?}: in use"
        );
        harness.request(detach(
            LinkId {
                handle: 1,
                ..CONSUMER
            },
            false,
        ));
        harness.commit();
        let kept = [("topic://prices::client:sub".to_owned(), 1)];
        harness.request(subscribe_selecting(1, "prices", 1));
        harness.commit();
        harness.request(detach(
            LinkId {
                handle: 1,
                ..CONSUMER
            },
            false,
        ));
        harness.commit();
        assert_eq!(depths(&harness), kept, "{step:?}: the same subscription");

        harness.request(subscribe_selecting(1, "prices", 2));
        harness.commit();
        harness.request(detach(
            LinkId {
                handle: 1,
                ..CONSUMER
            },
            false,
        ));
        harness.commit();
        let renewed = [("topic://prices::client:sub".to_owned(), 0)];
        assert_eq!(depths(&harness), renewed, "{step:?}: another selector");

        harness.request(subscribe_selecting(1, "rates", 2));
        harness.commit();
        let moved = [("topic://rates::client:sub".to_owned(), 0)];
        assert_eq!(depths(&harness), moved, "{step:?}: another topic");
    }
}
