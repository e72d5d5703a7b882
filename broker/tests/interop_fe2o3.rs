//! Cross-implementation check: fe2o3-amqp, an independent AMQP 1.0 client,
//! completes SASL, open, begin, end and close against the real server entry
//! point on loopback TCP, then runs the messaging scenarios that the Proton
//! and rhea scripts run: queue, topic, request/reply, browse.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Broker, WAIT};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition, SenderSettleMode};
use fe2o3_amqp::types::messaging::{
    AmqpValue, DistributionMode, Header, Message, MessageId, Outcome, Properties, Source, Target,
    TerminusDurability, TerminusExpiryPolicy,
};
use fe2o3_amqp::types::primitives::Symbol;
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use tokio::time::timeout;

#[tokio::test]
async fn fe2o3_opens_begins_ends_and_closes_with_sasl_anonymous() {
    let broker = Broker::start().await;

    let mut connection = timeout(
        WAIT,
        Connection::builder()
            .container_id("fe2o3-interop")
            .sasl_profile(SaslProfile::Anonymous)
            .open(broker.url().as_str()),
    )
    .await
    .unwrap()
    .expect("fe2o3 completes SASL ANONYMOUS and open");
    let mut session = timeout(WAIT, Session::begin(&mut connection))
        .await
        .unwrap()
        .expect("the broker answers begin");
    timeout(WAIT, session.end())
        .await
        .unwrap()
        .expect("the broker answers end");
    timeout(WAIT, connection.close())
        .await
        .unwrap()
        .expect("the broker answers close");

    broker.stop().await;
}

#[tokio::test]
async fn fe2o3_without_sasl_is_admitted_anonymously() {
    let broker = Broker::start().await;

    let mut connection = timeout(
        WAIT,
        Connection::open("fe2o3-no-sasl", broker.url().as_str()),
    )
    .await
    .unwrap()
    .expect("fe2o3 opens without a SASL layer");
    timeout(WAIT, connection.close())
        .await
        .unwrap()
        .expect("the broker answers close");

    broker.stop().await;
}

// ---------------------------------------------------------------------------
// Messaging scenarios: the same four the Proton and rhea scripts run (queue,
// topic, request/reply over a dynamic queue and anonymous relay, browse).
// ---------------------------------------------------------------------------

/// How long a receiver waits to be sure nothing more is coming.
const QUIET: Duration = Duration::from_millis(500);

async fn connect(broker: &Broker, id: &str) -> (ConnectionHandle<()>, SessionHandle<()>) {
    let mut connection = timeout(
        WAIT,
        Connection::builder()
            .container_id(id)
            .sasl_profile(SaslProfile::Anonymous)
            .open(broker.url().as_str()),
    )
    .await
    .unwrap()
    .expect("fe2o3 opens a connection");
    let session = timeout(WAIT, Session::begin(&mut connection))
        .await
        .unwrap()
        .expect("the broker answers begin");
    (connection, session)
}

async fn disconnect(mut connection: ConnectionHandle<()>, mut session: SessionHandle<()>) {
    timeout(WAIT, session.end())
        .await
        .unwrap()
        .expect("the broker answers end");
    timeout(WAIT, connection.close())
        .await
        .unwrap()
        .expect("the broker answers close");
}

fn durable_message(body: &str) -> Message<AmqpValue<String>> {
    Message::builder()
        .header(Header::builder().durable(true).build())
        .value(body.to_owned())
        .build()
}

/// Sends unsettled and returns the broker's outcome.
async fn send(sender: &mut Sender, message: Message<AmqpValue<String>>) -> Outcome {
    timeout(WAIT, sender.send(message))
        .await
        .unwrap()
        .expect("the broker settles the delivery")
}

/// Sends each body durable and unsettled; every one must be accepted.
async fn send_all_accepted(sender: &mut Sender, bodies: &[String]) {
    for body in bodies {
        let outcome = send(sender, durable_message(body)).await;
        assert!(
            matches!(outcome, Outcome::Accepted(_)),
            "{body:?} was not accepted: {outcome:?}"
        );
    }
}

/// Receives and accepts `count` messages, then checks that nothing more
/// arrives. Returns their bodies in arrival order.
async fn receive_all(receiver: &mut Receiver, count: usize) -> Vec<String> {
    let mut bodies = Vec::with_capacity(count);
    for _ in 0..count {
        let delivery = timeout(WAIT, receiver.recv::<String>())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {count} messages", bodies.len()))
            .expect("a delivery");
        bodies.push(delivery.body().clone());
        timeout(WAIT, receiver.accept(&delivery))
            .await
            .unwrap()
            .expect("the accept is sent");
    }
    if let Ok(extra) = timeout(QUIET, receiver.recv::<String>()).await {
        panic!("a message beyond the {count} expected: {extra:?}");
    }
    bodies
}

fn bodies(label: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{label} {i}")).collect()
}

fn rejected_with(outcome: &Outcome) -> Option<ErrorCondition> {
    match outcome {
        Outcome::Rejected(rejected) => rejected.error.as_ref().map(|e| e.condition.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn fe2o3_sends_and_receives_on_a_queue() {
    let broker = Broker::start().await;
    let (connection, mut session) = connect(&broker, "fe2o3-queue").await;

    let mut sender = timeout(WAIT, Sender::attach(&mut session, "orders-in", "orders"))
        .await
        .unwrap()
        .expect("the broker creates the queue on attach");
    let unsettled = bodies("unsettled", 50);
    send_all_accepted(&mut sender, &unsettled).await;

    let mut presettled = timeout(
        WAIT,
        Sender::builder()
            .name("orders-presettled")
            .target("orders")
            .sender_settle_mode(SenderSettleMode::Settled)
            .attach(&mut session),
    )
    .await
    .unwrap()
    .expect("a pre-settled sender attaches");
    let settled = bodies("pre-settled", 10);
    for body in &settled {
        // A pre-settled send returns at once, without an outcome from the broker.
        timeout(WAIT, presettled.send(durable_message(body)))
            .await
            .unwrap()
            .expect("the transfer is written");
    }

    let mut receiver = timeout(WAIT, Receiver::attach(&mut session, "orders-out", "orders"))
        .await
        .unwrap()
        .expect("a receiver attaches to the queue");
    let expected: Vec<String> = unsettled.iter().chain(&settled).cloned().collect();
    assert_eq!(receive_all(&mut receiver, expected.len()).await, expected);
    timeout(WAIT, receiver.close()).await.unwrap().unwrap();
    timeout(WAIT, presettled.close()).await.unwrap().unwrap();
    timeout(WAIT, sender.close()).await.unwrap().unwrap();
    disconnect(connection, session).await;

    // The accepts consumed every message.
    let (connection, mut session) = connect(&broker, "fe2o3-queue-again").await;
    let mut receiver = timeout(WAIT, Receiver::attach(&mut session, "orders-out", "orders"))
        .await
        .unwrap()
        .unwrap();
    assert!(receive_all(&mut receiver, 0).await.is_empty());
    timeout(WAIT, receiver.close()).await.unwrap().unwrap();
    disconnect(connection, session).await;

    broker.stop().await;
}

/// Two subscribers on `source`/`target`, both get every message; a late
/// subscriber gets only what comes after it.
async fn topic_round(broker: &Broker, source: Source, target: Target, label: &str) {
    let mut subscribers = Vec::new();
    for name in ["a", "b"] {
        let (connection, mut session) = connect(broker, &format!("fe2o3-{label}-{name}")).await;
        let receiver = timeout(
            WAIT,
            Receiver::builder()
                .name(format!("{label}-subscriber-{name}"))
                .source(source.clone())
                .attach(&mut session),
        )
        .await
        .unwrap()
        .expect("a subscriber attaches to the topic");
        subscribers.push((connection, session, receiver));
    }
    let (publisher, mut session) = connect(broker, &format!("fe2o3-{label}-publisher")).await;
    let mut sender = timeout(
        WAIT,
        Sender::builder()
            .name(format!("{label}-publisher"))
            .target(target)
            .attach(&mut session),
    )
    .await
    .unwrap()
    .expect("a publisher attaches to the topic");

    let first = bodies(&format!("{label} first"), 20);
    send_all_accepted(&mut sender, &first).await;
    for (_, _, receiver) in &mut subscribers {
        assert_eq!(receive_all(receiver, first.len()).await, first);
    }

    let (late_connection, mut late_session) = connect(broker, &format!("fe2o3-{label}-late")).await;
    let mut late = timeout(
        WAIT,
        Receiver::builder()
            .name(format!("{label}-late"))
            .source(source.clone())
            .attach(&mut late_session),
    )
    .await
    .unwrap()
    .unwrap();
    let second = bodies(&format!("{label} second"), 3);
    send_all_accepted(&mut sender, &second).await;
    assert_eq!(
        receive_all(&mut late, second.len()).await,
        second,
        "a late subscriber gets only what was published after it attached"
    );
    for (_, _, receiver) in &mut subscribers {
        assert_eq!(receive_all(receiver, second.len()).await, second);
    }

    timeout(WAIT, late.close()).await.unwrap().unwrap();
    disconnect(late_connection, late_session).await;
    for (connection, session, receiver) in subscribers {
        timeout(WAIT, receiver.close()).await.unwrap().unwrap();
        disconnect(connection, session).await;
    }
    timeout(WAIT, sender.close()).await.unwrap().unwrap();
    disconnect(publisher, session).await;
}

#[tokio::test]
async fn fe2o3_topic_delivers_to_every_subscriber() {
    let broker = Broker::start().await;

    let address = "topic://prices";
    topic_round(
        &broker,
        Source::builder().address(address).build(),
        Target::builder().address(address).build(),
        "prefix",
    )
    .await;

    // As Qpid JMS addresses a topic: a plain name with the `topic` capability.
    let topic = || vec![Symbol::from("topic")];
    topic_round(
        &broker,
        Source::builder()
            .address("jms-prices")
            .capabilities(topic())
            .build(),
        Target::builder()
            .address("jms-prices")
            .capabilities(topic())
            .build(),
        "capability",
    )
    .await;

    broker.stop().await;
}

#[tokio::test]
async fn fe2o3_request_reply_over_dynamic_queue_and_relay() {
    let broker = Broker::start().await;

    let (responder, mut responder_session) = connect(&broker, "fe2o3-responder").await;
    let mut incoming = timeout(
        WAIT,
        Receiver::attach(&mut responder_session, "requests-in", "requests"),
    )
    .await
    .unwrap()
    .expect("the responder attaches to the request queue");
    let mut relay = timeout(
        WAIT,
        Sender::builder()
            .name("relay")
            .target(Target::builder().build())
            .attach(&mut responder_session),
    )
    .await
    .unwrap()
    .expect("an anonymous-relay sender (null target address) attaches");

    let (requester, mut requester_session) = connect(&broker, "fe2o3-requester").await;
    let mut replies = timeout(
        WAIT,
        Receiver::builder()
            .name("replies")
            .source(Source::builder().dynamic(true).build())
            .attach(&mut requester_session),
    )
    .await
    .unwrap()
    .expect("a dynamic receiver attaches");
    let reply_to = replies
        .source()
        .as_ref()
        .and_then(|source| source.address.clone())
        .expect("the broker names the dynamic queue in its attach");
    let mut outgoing = timeout(
        WAIT,
        Sender::attach(&mut requester_session, "requests-out", "requests"),
    )
    .await
    .unwrap()
    .unwrap();

    for i in 0..5 {
        let request = Message::builder()
            .header(Header::builder().durable(true).build())
            .properties(
                Properties::builder()
                    .reply_to(reply_to.clone())
                    .correlation_id(format!("corr-{i}"))
                    .build(),
            )
            .value(format!("request {i}"))
            .build();
        let outcome = send(&mut outgoing, request).await;
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");

        let got = timeout(WAIT, incoming.recv::<String>())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.body(), &format!("request {i}"));
        let properties = got
            .message()
            .properties
            .clone()
            .expect("request properties");
        assert_eq!(properties.reply_to.as_deref(), Some(reply_to.as_str()));
        let reply = Message::builder()
            .properties(
                Properties::builder()
                    .to(properties.reply_to.clone().unwrap())
                    .correlation_id(properties.correlation_id.clone().unwrap())
                    .build(),
            )
            .value(format!("reply to {}", got.body()))
            .build();
        let outcome = send(&mut relay, reply).await;
        assert!(
            matches!(outcome, Outcome::Accepted(_)),
            "reply {i} through the relay: {outcome:?}"
        );
        timeout(WAIT, incoming.accept(&got)).await.unwrap().unwrap();

        let answer = timeout(WAIT, replies.recv::<String>())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer.body(), &format!("reply to request {i}"));
        assert_eq!(
            answer
                .message()
                .properties
                .as_ref()
                .and_then(|p| p.correlation_id.clone()),
            Some(MessageId::from(format!("corr-{i}")))
        );
        timeout(WAIT, replies.accept(&answer))
            .await
            .unwrap()
            .unwrap();
    }

    let not_found = Some(ErrorCondition::AmqpError(AmqpError::NotFound));
    let nowhere = Message::builder()
        .properties(Properties::builder().to("nowhere").build())
        .value("lost".to_owned())
        .build();
    let outcome = send(&mut relay, nowhere).await;
    assert_eq!(
        rejected_with(&outcome),
        not_found,
        "relay to a missing node: {outcome:?}"
    );

    // Closing the dynamic receiver deletes its queue.
    timeout(WAIT, replies.close()).await.unwrap().unwrap();
    let late = Message::builder()
        .properties(Properties::builder().to(reply_to.clone()).build())
        .value("too late".to_owned())
        .build();
    let outcome = send(&mut relay, late).await;
    assert_eq!(
        rejected_with(&outcome),
        not_found,
        "relay to the closed dynamic queue {reply_to:?}: {outcome:?}"
    );

    timeout(WAIT, outgoing.close()).await.unwrap().unwrap();
    disconnect(requester, requester_session).await;
    timeout(WAIT, relay.close()).await.unwrap().unwrap();
    timeout(WAIT, incoming.close()).await.unwrap().unwrap();
    disconnect(responder, responder_session).await;
    broker.stop().await;
}

async fn browse(session: &mut SessionHandle<()>, name: &str, expected: &[String]) {
    let mut browser = timeout(
        WAIT,
        Receiver::builder()
            .name(name)
            .source(
                Source::builder()
                    .address("browsed")
                    .distribution_mode(DistributionMode::Copy)
                    .build(),
            )
            .attach(session),
    )
    .await
    .unwrap()
    .expect("a browser attaches");
    assert_eq!(
        browser
            .source()
            .as_ref()
            .and_then(|s| s.distribution_mode.clone()),
        Some(DistributionMode::Copy),
        "{name}: the broker's source says copy"
    );
    assert_eq!(
        receive_all(&mut browser, expected.len()).await,
        expected,
        "{name}"
    );
    timeout(WAIT, browser.close()).await.unwrap().unwrap();
}

#[tokio::test]
async fn fe2o3_browses_without_consuming() {
    let broker = Broker::start().await;
    let (connection, mut session) = connect(&broker, "fe2o3-browse").await;

    let mut sender = timeout(WAIT, Sender::attach(&mut session, "browsed-in", "browsed"))
        .await
        .unwrap()
        .unwrap();
    let expected = bodies("browsed", 20);
    send_all_accepted(&mut sender, &expected).await;

    browse(&mut session, "browser-1", &expected).await;
    browse(&mut session, "browser-2", &expected).await;

    let mut consumer = timeout(WAIT, Receiver::attach(&mut session, "consumer", "browsed"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(receive_all(&mut consumer, expected.len()).await, expected);
    timeout(WAIT, consumer.close()).await.unwrap().unwrap();

    browse(&mut session, "browser-3", &[]).await;
    timeout(WAIT, sender.close()).await.unwrap().unwrap();
    disconnect(connection, session).await;
    broker.stop().await;
}

async fn subscribe(
    session: &mut SessionHandle<()>,
    name: &str,
    topic: &str,
    durable: bool,
) -> Receiver {
    let mut source = Source::builder().address(topic);
    if durable {
        source = source
            .durable(TerminusDurability::UnsettledState)
            .expiry_policy(TerminusExpiryPolicy::Never);
    }
    timeout(
        WAIT,
        Receiver::builder()
            .name(name)
            .source(source.build())
            .attach(session),
    )
    .await
    .unwrap()
    .expect("a subscriber attaches")
}

/// Publishes three messages; with no subscription the outcome is left open.
async fn publish(sender: &mut Sender, label: &str, subscribed: bool) -> Vec<String> {
    let batch = bodies(label, 3);
    if subscribed {
        send_all_accepted(sender, &batch).await;
    } else {
        for body in &batch {
            send(sender, durable_message(body)).await;
        }
    }
    batch
}

#[tokio::test]
async fn fe2o3_durable_subscription_outlives_detach_until_closed() {
    let broker = Broker::start().await;
    let topic = "topic://news";
    let (publisher, mut publisher_session) = connect(&broker, "fe2o3-publisher").await;
    let mut sender = timeout(
        WAIT,
        Sender::attach(&mut publisher_session, "news-publisher", topic),
    )
    .await
    .unwrap()
    .unwrap();

    // A durable subscription survives a detach (closed=false) and the end of
    // the connection: what is published meanwhile waits for it.
    let (connection, mut session) = connect(&broker, "fe2o3-durable-client").await;
    let mut receiver = subscribe(&mut session, "news-subscription", topic, true).await;
    let first = publish(&mut sender, "first", true).await;
    assert_eq!(receive_all(&mut receiver, first.len()).await, first);
    timeout(WAIT, receiver.detach())
        .await
        .unwrap()
        .map_err(|(_, error)| error)
        .expect("the broker answers the detach without closing");
    disconnect(connection, session).await;

    let second = publish(&mut sender, "while away", true).await;
    let (connection, mut session) = connect(&broker, "fe2o3-durable-client").await;
    let mut receiver = subscribe(&mut session, "news-subscription", topic, true).await;
    assert_eq!(
        receive_all(&mut receiver, second.len()).await,
        second,
        "the durable subscription kept what was published while detached"
    );

    // Closing the link ends the subscription.
    timeout(WAIT, receiver.close()).await.unwrap().unwrap();
    disconnect(connection, session).await;
    publish(&mut sender, "after unsubscribe", false).await;
    let (connection, mut session) = connect(&broker, "fe2o3-durable-client").await;
    let mut receiver = subscribe(&mut session, "news-subscription", topic, true).await;
    assert!(
        receive_all(&mut receiver, 0).await.is_empty(),
        "a closed durable subscription is gone"
    );
    timeout(WAIT, receiver.close()).await.unwrap().unwrap();
    disconnect(connection, session).await;

    // A non-durable subscription ends with its detach.
    let (connection, mut session) = connect(&broker, "fe2o3-durable-client").await;
    let mut receiver = subscribe(&mut session, "volatile", topic, false).await;
    let batch = publish(&mut sender, "volatile", true).await;
    assert_eq!(receive_all(&mut receiver, batch.len()).await, batch);
    timeout(WAIT, receiver.detach())
        .await
        .unwrap()
        .map_err(|(_, error)| error)
        .expect("the broker answers the detach");
    disconnect(connection, session).await;
    publish(&mut sender, "after volatile detach", false).await;
    let (connection, mut session) = connect(&broker, "fe2o3-durable-client").await;
    let mut receiver = subscribe(&mut session, "volatile", topic, false).await;
    assert!(
        receive_all(&mut receiver, 0).await.is_empty(),
        "a non-durable subscription ends with its detach"
    );
    timeout(WAIT, receiver.close()).await.unwrap().unwrap();
    disconnect(connection, session).await;

    timeout(WAIT, sender.close()).await.unwrap().unwrap();
    disconnect(publisher, publisher_session).await;
    broker.stop().await;
}
