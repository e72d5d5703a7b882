//! What a broker user relies on, checked on the wire with Sluice's own
//! client engine against the real server: settlement outcomes and
//! redelivery, dead-lettering, flow control at a full queue, round robin,
//! topic fan-out, routing errors, durability across a restart, and a source
//! that lists no filter it does not apply.
//!
//! Every test runs twice, from one body: on a single node
//! (`single::NAME`) and on a 3-node cluster of in-process brokers
//! (`cluster::NAME`, see `common::cluster`), where producers connect to
//! node 2 and consumers to node 3, so that what one client does reaches the
//! other through the cluster. Both run the one node core, so a client must
//! see the same on both.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use common::cluster::{Cluster, NODES};
use common::{Broker, WAIT, test_config};
use sluice::amqp::codec::{Described, Descriptor, Symbol, Value};
use sluice::amqp::engine::{
    ClientSasl, ConnectionConfig, DeliveryId, Event, LinkId, LinkOptions, SessionId,
};
use sluice::amqp::types::{
    Accepted, Annotations, AttachSource, AttachTarget, Coordinator, DeliveryState, Header, Message,
    MessageId, Modified, Properties, ReceiverSettleMode, Rejected, Released, Role, Section,
    SenderSettleMode, Source, Target, condition,
};
use sluice::client::{Client, ClientError};
use sluice::config::Config;
use sluice::io::{Io, TokioIo};
use sluice::queue::QueueInfo;
use tempfile::TempDir;
use tokio::time::timeout;

fn message(body: &str, durable: bool) -> Bytes {
    Message {
        sections: vec![
            Section::Header(Header {
                durable,
                ..Header::default()
            }),
            Section::Data(Bytes::from(body.to_owned())),
        ],
    }
    .encode()
}

fn body_of(message: &Message) -> String {
    message
        .sections
        .iter()
        .find_map(|s| match s {
            Section::Data(data) => Some(String::from_utf8(data.to_vec()).unwrap()),
            _ => None,
        })
        .unwrap()
}

/// The `x-opt-deadletter-reason` message annotation, if any.
fn deadletter_reason(message: &Message) -> Option<Value> {
    let key = Value::Symbol(Symbol::from_static("x-opt-deadletter-reason"));
    message.sections.iter().find_map(|s| match s {
        Section::MessageAnnotations(m) => m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()),
        _ => None,
    })
}

fn queue(address: &str) -> Source {
    Source {
        address: Some(address.to_owned()),
        ..Source::default()
    }
}

/// A connected client with one session.
async fn connect(broker: &Broker) -> (Client<TokioIo>, SessionId) {
    let mut client = timeout(
        WAIT,
        Client::connect(
            TokioIo,
            &broker.addr.to_string(),
            ConnectionConfig::new("semantics-test"),
            ClientSasl::Anonymous,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let session = client.begin().await.unwrap();
    (client, session)
}

/// Sends `body` as a message and waits for the broker's outcome.
async fn publish(
    client: &mut Client<TokioIo>,
    link: LinkId,
    body: &str,
    durable: bool,
) -> DeliveryState {
    publish_encoded(client, link, body, message(body, durable)).await
}

/// Sends an encoded message, tagged `tag`, and waits for the broker's
/// outcome.
async fn publish_encoded(
    client: &mut Client<TokioIo>,
    link: LinkId,
    tag: &str,
    message: Bytes,
) -> DeliveryState {
    let delivery = client
        .send(link, Bytes::from(tag.to_owned()), message, false)
        .await
        .unwrap();
    let outcome = client.wait_for(
        |e| matches!(e, Event::Disposition { delivery: d, state: Some(_), .. } if *d == delivery),
    );
    match timeout(WAIT, outcome).await.unwrap().unwrap() {
        Event::Disposition {
            state: Some(state), ..
        } => state,
        other => unreachable!("wait_for returned {other:?}"),
    }
}

/// The next message delivered on `link`.
async fn receive(client: &mut Client<TokioIo>, link: LinkId) -> (DeliveryId, Message) {
    let delivered =
        client.wait_for(|e| matches!(e, Event::Delivery { delivery, .. } if delivery.link == link));
    match timeout(WAIT, delivered).await.unwrap().unwrap() {
        Event::Delivery {
            delivery, message, ..
        } => (delivery, Message::decode(message).unwrap()),
        other => unreachable!("wait_for returned {other:?}"),
    }
}

fn accepted() -> DeliveryState {
    DeliveryState::Accepted(Accepted)
}

/// Where a test's brokers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    /// One broker.
    Single,
    /// Three brokers forming a cluster.
    Cluster,
}

/// The node producers connect to in a cluster, and the one consumers do.
const PRODUCERS_NODE: u64 = 2;
const CONSUMERS_NODE: u64 = 3;

/// How often [`Brokers::wait_for_queue`] asks the nodes again: they
/// announce their counters on no channel a test can wait on.
const QUEUE_POLL: Duration = Duration::from_millis(10);

/// The brokers one test runs against.
enum Brokers {
    Single {
        /// None while stopped, during a restart.
        broker: Option<Broker>,
        config: Box<Config>,
        data_dir: TempDir,
    },
    Cluster(Cluster),
}

impl Brokers {
    /// Brokers with the default configuration.
    async fn start(topology: Topology) -> Self {
        Self::start_with(topology, "").await
    }

    /// Brokers configured by `toml` (queue settings and the like: the
    /// addresses, data directories and cluster membership are the test's).
    async fn start_with(topology: Topology, toml: &str) -> Self {
        let base = Config::from_toml(toml).unwrap();
        match topology {
            Topology::Single => {
                let data_dir = tempfile::Builder::new()
                    .prefix("sluice-test-")
                    .tempdir()
                    .unwrap();
                let config = Config {
                    data_dir: data_dir.path().to_owned(),
                    listen: test_config().listen,
                    ..base
                };
                let broker = Some(Broker::start_with(config.clone()).await);
                Self::Single {
                    broker,
                    config: Box::new(config),
                    data_dir,
                }
            }
            Topology::Cluster => Self::Cluster(Cluster::start(&base).await),
        }
    }

    /// Where producers connect.
    fn producers(&self) -> &Broker {
        self.node(PRODUCERS_NODE)
    }

    /// Where consumers connect.
    fn consumers(&self) -> &Broker {
        self.node(CONSUMERS_NODE)
    }

    fn node(&self, id: u64) -> &Broker {
        match self {
            Self::Single { broker, .. } => broker.as_ref().unwrap(),
            Self::Cluster(cluster) => cluster.node(id),
        }
    }

    /// Stops the whole broker and starts it again from what it has on
    /// disk: the one node, or every node of the cluster.
    async fn restart(&mut self) {
        self.stop_all().await;
        self.start_again().await;
    }

    /// Stops the one node, or every node of the cluster.
    async fn stop_all(&mut self) {
        match self {
            Self::Single { broker, .. } => broker.take().unwrap().stop().await,
            Self::Cluster(cluster) => cluster.stop_all().await,
        }
    }

    /// Starts again what [`Brokers::stop_all`] stopped.
    async fn start_again(&mut self) {
        match self {
            Self::Single { broker, config, .. } => {
                *broker = Some(Broker::start_with(Config::clone(config)).await);
            }
            Self::Cluster(cluster) => cluster.start_all().await,
        }
    }

    /// Every running node.
    fn nodes(&self) -> Vec<&Broker> {
        match self {
            Self::Single { broker, .. } => broker.iter().collect(),
            Self::Cluster(cluster) => NODES.iter().map(|&id| cluster.node(id)).collect(),
        }
    }

    /// Waits until every node has applied what makes `queue`'s counters
    /// satisfy `wanted`. No client sees these counters; a test waits on
    /// them for what it needs settled before it goes on.
    async fn wait_for_queue(&self, queue: &str, wanted: impl Fn(&QueueInfo) -> bool) {
        let mut last = Vec::new();
        let applied = async {
            loop {
                let mut infos = Vec::new();
                for node in self.nodes() {
                    let queues = node.node.queue_info().await.unwrap();
                    let info = queues.into_iter().find(|(name, _)| name == queue);
                    infos.push(info.map(|(_, info)| info));
                }
                if infos.iter().all(|info| info.as_ref().is_some_and(&wanted)) {
                    return;
                }
                last = infos;
                tokio::time::sleep(QUEUE_POLL).await;
            }
        };
        let applied = timeout(WAIT, applied).await;
        assert!(
            applied.is_ok(),
            "{queue:?} never as wanted on every node in {WAIT:?}: {last:?}"
        );
    }

    /// Every node's log directory.
    fn log_dirs(&self) -> Vec<PathBuf> {
        match self {
            Self::Single { data_dir, .. } => vec![data_dir.path().join("log")],
            Self::Cluster(cluster) => NODES
                .iter()
                .map(|&id| cluster.data_dir(id).join("raft"))
                .collect(),
        }
    }

    async fn stop(self) {
        match self {
            Self::Single { broker, .. } => broker.unwrap().stop().await,
            Self::Cluster(cluster) => cluster.stop().await,
        }
    }
}

/// Runs each test body below once on a single node (`single::NAME`) and
/// once on a cluster (`cluster::NAME`).
macro_rules! on_each_topology {
    ($($name:ident;)*) => {
        mod single {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Topology::Single).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Topology::Cluster).await;
                }
            )*
        }
    };
}

on_each_topology! {
    released_messages_come_back_at_their_place_uncounted;
    a_failed_delivery_is_redelivered_with_its_count;
    a_detached_consumer_returns_what_it_had_not_settled;
    rejected_messages_are_dead_lettered_with_the_reason;
    a_full_queue_stops_producer_credit_until_a_consumer_makes_room;
    consumers_of_one_queue_share_it_round_robin;
    a_topic_copies_each_message_to_every_subscription;
    the_relay_rejects_a_message_with_nowhere_to_go;
    without_auto_create_unknown_addresses_are_refused;
    transient_messages_survive_a_restart_like_durable_ones;
    recovery_from_a_snapshot_keeps_exactly_what_was_not_consumed;
    settlements_received_before_a_stop_are_kept;
    credit_sent_with_the_attach_is_honoured;
    a_selector_filters_a_queue_and_unknown_filters_are_not_echoed;
    receiver_settle_mode_second_settles_after_the_peer;
    a_producer_asking_for_second_settle_mode_gets_first;
    expired_messages_are_dead_lettered_as_expired;
    a_resent_message_id_is_accepted_once_and_delivered_once;
    links_the_broker_cannot_serve_are_refused_alone;
    priority_and_last_value_queues_order_and_keep_as_configured;
    a_consumer_that_asks_for_settled_deliveries_consumes_them;
    a_transaction_publishes_at_commit_and_a_rollback_publishes_nothing;
}

async fn released_messages_come_back_at_their_place_uncounted(topology: Topology) {
    let brokers = Brokers::start(topology).await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("work"))
        .await
        .unwrap();
    for body in ["a", "b"] {
        assert_eq!(publish(&mut producer, sender, body, true).await, accepted());
    }
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let receiver = consumer
        .attach_receiver(session, "c", queue("work"), 1)
        .await
        .unwrap();
    let (first, message) = receive(&mut consumer, receiver).await;
    assert_eq!(body_of(&message), "a");
    consumer
        .settle(first, DeliveryState::Released(Released))
        .await
        .unwrap();
    consumer.connection().flow(receiver, 1, false).unwrap();

    let (again, message) = receive(&mut consumer, receiver).await;
    assert_eq!(body_of(&message), "a", "a released message keeps its place");
    assert_eq!(message.header().map_or(0, |h| h.delivery_count), 0);
    consumer.settle(again, accepted()).await.unwrap();
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}

async fn a_failed_delivery_is_redelivered_with_its_count(topology: Topology) {
    let brokers = Brokers::start(topology).await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("work"))
        .await
        .unwrap();
    publish(&mut producer, sender, "flaky", true).await;
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let receiver = consumer
        .attach_receiver(session, "c", queue("work"), 10)
        .await
        .unwrap();
    let (first, _) = receive(&mut consumer, receiver).await;
    let failed = Modified {
        delivery_failed: true,
        ..Modified::default()
    };
    consumer
        .settle(first, DeliveryState::Modified(failed))
        .await
        .unwrap();

    let (again, message) = receive(&mut consumer, receiver).await;
    let header = message.header().unwrap();
    assert_eq!(header.delivery_count, 1);
    assert!(!header.first_acquirer);
    consumer.settle(again, accepted()).await.unwrap();
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}

async fn a_detached_consumer_returns_what_it_had_not_settled(topology: Topology) {
    let brokers = Brokers::start(topology).await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("work"))
        .await
        .unwrap();
    publish(&mut producer, sender, "held", true).await;
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let receiver = consumer
        .attach_receiver(session, "c1", queue("work"), 10)
        .await
        .unwrap();
    receive(&mut consumer, receiver).await;
    consumer.connection().detach(receiver, true, None).unwrap();

    let next = consumer
        .attach_receiver(session, "c2", queue("work"), 10)
        .await
        .unwrap();
    let (delivery, message) = receive(&mut consumer, next).await;
    assert_eq!(body_of(&message), "held");
    assert_eq!(message.header().unwrap().delivery_count, 1);
    consumer.settle(delivery, accepted()).await.unwrap();
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}

async fn rejected_messages_are_dead_lettered_with_the_reason(topology: Topology) {
    let brokers = Brokers::start_with(
        topology,
        r#"
        [[queue]]
        name = "work"
        dead_letter_queue = "work.dlq"
        "#,
    )
    .await;
    let (mut consumer, consumer_session) = connect(brokers.consumers()).await;
    // The dead-letter queue must exist to receive anything.
    let dead = consumer
        .attach_receiver(consumer_session, "dlq", queue("work.dlq"), 10)
        .await
        .unwrap();
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("work"))
        .await
        .unwrap();
    publish(&mut producer, sender, "poison", true).await;
    let receiver = consumer
        .attach_receiver(consumer_session, "c", queue("work"), 10)
        .await
        .unwrap();
    let (delivery, _) = receive(&mut consumer, receiver).await;
    consumer
        .settle(delivery, DeliveryState::Rejected(Rejected::default()))
        .await
        .unwrap();

    let (dead_letter, message) = receive(&mut consumer, dead).await;
    assert_eq!(body_of(&message), "poison");
    let reason = deadletter_reason(&message);
    assert_eq!(reason, Some(Value::Symbol(Symbol::from_static("rejected"))));
    consumer.settle(dead_letter, accepted()).await.unwrap();
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}

async fn a_full_queue_stops_producer_credit_until_a_consumer_makes_room(topology: Topology) {
    let brokers = Brokers::start_with(
        topology,
        r#"
        [[queue]]
        name = "small"
        max_length = 3
        "#,
    )
    .await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("small"))
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(
            publish(&mut producer, sender, &format!("m{i}"), true).await,
            accepted()
        );
    }
    assert_eq!(
        producer.connection().credit(sender),
        0,
        "no credit beyond the queue's room"
    );

    let (mut consumer, session) = connect(brokers.consumers()).await;
    let receiver = consumer
        .attach_receiver(session, "c", queue("small"), 1)
        .await
        .unwrap();
    let (delivery, _) = receive(&mut consumer, receiver).await;
    consumer.settle(delivery, accepted()).await.unwrap();
    // Room for one: the producer gets credit again.
    loop {
        if let Event::Credit { link, credit, .. } =
            timeout(WAIT, producer.next_event()).await.unwrap().unwrap()
            && link == sender
            && credit > 0
        {
            break;
        }
    }
    assert_eq!(publish(&mut producer, sender, "m3", true).await, accepted());
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}

async fn consumers_of_one_queue_share_it_round_robin(topology: Topology) {
    let brokers = Brokers::start(topology).await;
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let first = consumer
        .attach_receiver(session, "c1", queue("shared"), 100)
        .await
        .unwrap();
    let second = consumer
        .attach_receiver(session, "c2", queue("shared"), 100)
        .await
        .unwrap();
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("shared"))
        .await
        .unwrap();
    for i in 0..6 {
        publish(&mut producer, sender, &format!("m{i}"), false).await;
    }
    let mut per_link = [0, 0];
    while per_link[0] + per_link[1] < 6 {
        if let Event::Delivery { delivery, .. } =
            timeout(WAIT, consumer.next_event()).await.unwrap().unwrap()
        {
            per_link[usize::from(delivery.link == second)] += 1;
            assert!(delivery.link == first || delivery.link == second);
            consumer.settle(delivery, accepted()).await.unwrap();
        }
    }
    assert_eq!(per_link, [3, 3]);
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}

/// Every subscription of a topic gets its own copy of each message
/// published after its attach was answered.
async fn a_topic_copies_each_message_to_every_subscription(topology: Topology) {
    let brokers = Brokers::start(topology).await;
    let (mut first, session) = connect(brokers.consumers()).await;
    let one = first
        .attach_receiver(session, "s1", queue("topic://prices"), 10)
        .await
        .unwrap();
    let (mut second, session) = connect(brokers.node(1)).await;
    let two = second
        .attach_receiver(session, "s2", queue("topic://prices"), 10)
        .await
        .unwrap();
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("topic://prices"))
        .await
        .unwrap();
    for tick in ["t1", "t2"] {
        assert_eq!(publish(&mut producer, sender, tick, true).await, accepted());
    }
    for (subscriber, link) in [(&mut first, one), (&mut second, two)] {
        for tick in ["t1", "t2"] {
            let (delivery, message) = receive(subscriber, link).await;
            assert_eq!(body_of(&message), tick);
            subscriber.settle(delivery, accepted()).await.unwrap();
        }
    }
    first.close().await.unwrap();
    second.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}

async fn the_relay_rejects_a_message_with_nowhere_to_go(topology: Topology) {
    let brokers = Brokers::start(topology).await;
    let (mut client, session) = connect(brokers.producers()).await;
    let relay = client.attach_sender(session, "relay", None).await.unwrap();
    // No `to` at all, then a `to` naming no queue.
    let addressed_to = |to: Option<&str>| {
        Message {
            sections: vec![
                Section::Properties(Box::new(Properties {
                    to: to.map(str::to_owned),
                    ..Properties::default()
                })),
                Section::Data(Bytes::from_static(b"lost")),
            ],
        }
        .encode()
    };
    for to in [None, Some("nowhere")] {
        let outcome = publish_encoded(&mut client, relay, "lost", addressed_to(to)).await;
        let DeliveryState::Rejected(Rejected { error: Some(error) }) = outcome else {
            panic!("to {to:?}: expected a rejection, got {outcome:?}");
        };
        assert_eq!(error.condition, condition::NOT_FOUND, "to {to:?}");
    }
    client.close().await.unwrap();
    brokers.stop().await;
}

async fn without_auto_create_unknown_addresses_are_refused(topology: Topology) {
    let brokers = Brokers::start_with(
        topology,
        r#"
        [queues]
        auto_create = false
        "#,
    )
    .await;
    let (mut client, session) = connect(brokers.producers()).await;
    let refused = client.attach_sender(session, "p", Some("nowhere")).await;
    let Err(ClientError::LinkRefused(Some(error))) = refused else {
        panic!("expected a refusal, got {:?}", refused.map(|_| ()));
    };
    assert_eq!(error.condition, condition::NOT_FOUND);
    client.close().await.unwrap();
    brokers.stop().await;
}

/// On a cluster the restart is of every node: the broker as a whole
/// restarts, as after a power loss.
/// A node logs a non-durable message like any other (a cluster's is a Raft
/// entry like any other), so it survives a restart too: AMQP lets a broker
/// lose a non-durable message, and Sluice does not.
async fn transient_messages_survive_a_restart_like_durable_ones(topology: Topology) {
    let mut brokers = Brokers::start(topology).await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("orders"))
        .await
        .unwrap();
    for (body, durable) in [("d1", true), ("t1", false), ("d2", true), ("t2", false)] {
        assert_eq!(
            publish(&mut producer, sender, body, durable).await,
            accepted()
        );
    }
    producer.close().await.unwrap();
    brokers.restart().await;

    let (mut consumer, session) = connect(brokers.consumers()).await;
    let receiver = consumer
        .attach_receiver(session, "c", queue("orders"), 10)
        .await
        .unwrap();
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let (delivery, message) = receive(&mut consumer, receiver).await;
        bodies.push(body_of(&message));
        consumer.settle(delivery, accepted()).await.unwrap();
    }
    assert_eq!(bodies, ["d1", "t1", "d2", "t2"]);
    consumer.close().await.unwrap();
    brokers.stop().await;
}

/// On a cluster every node snapshots its replicas and restarts from its
/// snapshot.
async fn recovery_from_a_snapshot_keeps_exactly_what_was_not_consumed(topology: Topology) {
    let toml = "[storage]\nsnapshot_every_records = 10\n";
    let mut brokers = Brokers::start_with(topology, toml).await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("orders"))
        .await
        .unwrap();
    for i in 0..50 {
        assert_eq!(
            publish(&mut producer, sender, &format!("m{i}"), true).await,
            accepted()
        );
    }
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let receiver = consumer
        .attach_receiver(session, "c", queue("orders"), 20)
        .await
        .unwrap();
    for i in 0..20 {
        let (delivery, message) = receive(&mut consumer, receiver).await;
        assert_eq!(body_of(&message), format!("m{i}"));
        consumer.settle(delivery, accepted()).await.unwrap();
    }
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    // This test is about recovery, not about the stop: it stops once the
    // settles and the detach are applied on every node, since a cluster
    // node's stop drops what it has not seen committed (see
    // `settlements_received_before_a_stop_are_kept`).
    let consumed =
        |info: &QueueInfo| info.depth == 30 && info.unsettled == 0 && info.consumers == 0;
    brokers.wait_for_queue("orders", consumed).await;
    brokers.stop_all().await;
    for log in brokers.log_dirs() {
        let snapshots = TokioIo
            .read_dir(&log)
            .await
            .unwrap()
            .iter()
            .filter(|path| path.extension().is_some_and(|e| e == "snap"))
            .count();
        assert!(
            snapshots >= 1,
            "no snapshot in {} after 70+ logged commands",
            log.display()
        );
    }

    brokers.start_again().await;
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let receiver = consumer
        .attach_receiver(session, "c", queue("orders"), 100)
        .await
        .unwrap();
    for i in 20..50 {
        let (delivery, message) = receive(&mut consumer, receiver).await;
        assert_eq!(body_of(&message), format!("m{i}"));
        consumer.settle(delivery, accepted()).await.unwrap();
    }
    consumer.close().await.unwrap();
    brokers.stop().await;
}

/// What a consumer settled before the broker stopped stays consumed: the
/// broker applies every settlement it received before it stops. On a
/// cluster the restart is of every node.
async fn settlements_received_before_a_stop_are_kept(topology: Topology) {
    let mut brokers = Brokers::start(topology).await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("orders"))
        .await
        .unwrap();
    for i in 0..10 {
        let body = format!("m{i}");
        assert_eq!(
            publish(&mut producer, sender, &body, true).await,
            accepted()
        );
    }
    producer.close().await.unwrap();
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let receiver = consumer
        .attach_receiver(session, "c", queue("orders"), 5)
        .await
        .unwrap();
    for i in 0..5 {
        let (delivery, message) = receive(&mut consumer, receiver).await;
        assert_eq!(body_of(&message), format!("m{i}"));
        consumer.settle(delivery, accepted()).await.unwrap();
    }
    consumer.close().await.unwrap();
    brokers.restart().await;

    let (mut consumer, session) = connect(brokers.consumers()).await;
    let receiver = consumer
        .attach_receiver(session, "c", queue("orders"), 10)
        .await
        .unwrap();
    for i in 5..10 {
        let (delivery, message) = receive(&mut consumer, receiver).await;
        assert_eq!(
            body_of(&message),
            format!("m{i}"),
            "settled before the stop"
        );
        consumer.settle(delivery, accepted()).await.unwrap();
    }
    consumer.close().await.unwrap();
    brokers.stop().await;
}

async fn credit_sent_with_the_attach_is_honoured(topology: Topology) {
    let brokers = Brokers::start(topology).await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("early"))
        .await
        .unwrap();
    for i in 0..3 {
        publish(&mut producer, sender, &format!("m{i}"), true).await;
    }
    // Attach and grant credit in one burst, before the broker answers, as
    // event-driven Proton clients do.
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let options = LinkOptions {
        name: "eager".into(),
        role: Role::Receiver,
        source: Some(queue("early").into()),
        target: Some(Target::default().into()),
        snd_settle_mode: SenderSettleMode::Unsettled,
        rcv_settle_mode: ReceiverSettleMode::First,
    };
    let receiver = consumer.connection().attach(session, options).unwrap();
    consumer.connection().flow(receiver, 10, false).unwrap();
    for i in 0..3 {
        let (delivery, message) = receive(&mut consumer, receiver).await;
        assert_eq!(body_of(&message), format!("m{i}"));
        consumer.settle(delivery, accepted()).await.unwrap();
    }
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}

/// A JMS selector on `color`, and a filter of a kind no broker knows.
fn selector_and_unknown_filter() -> Annotations {
    let filter = |descriptor: &'static str, value: &str| {
        Value::from(Described {
            descriptor: Descriptor::Name(Symbol::from_static(descriptor)),
            value: Value::from(value),
        })
    };
    vec![
        (
            Value::Symbol(Symbol::from_static("jms-selector")),
            filter("apache.org:selector-filter:string", "color = 'red'"),
        ),
        (
            Value::Symbol(Symbol::from_static("made-up")),
            filter("example.org:made-up-filter:string", "anything"),
        ),
    ]
}

/// A message of `body` whose application property `color` is `body`.
fn colored(body: &str) -> Bytes {
    Message {
        sections: vec![
            Section::Header(Header {
                durable: true,
                ..Header::default()
            }),
            Section::ApplicationProperties(vec![("color".into(), Value::from(body))]),
            Section::Data(Bytes::from(body.to_owned())),
        ],
    }
    .encode()
}

/// A consumer with a selector gets only the messages it selects; the
/// others stay in their order for the other consumers. The broker's
/// answer lists the filters in effect: the selector, not the filter it
/// does not know (spec part 3 §3.5.3).
async fn a_selector_filters_a_queue_and_unknown_filters_are_not_echoed(topology: Topology) {
    let brokers = Brokers::start(topology).await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("filtered"))
        .await
        .unwrap();
    for body in ["red", "blue", "red", "green"] {
        let state = publish_encoded(&mut producer, sender, body, colored(body)).await;
        assert_eq!(state, accepted(), "{body}");
    }
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let source = Source {
        filter: selector_and_unknown_filter(),
        ..queue("filtered")
    };
    let options = LinkOptions {
        rcv_settle_mode: ReceiverSettleMode::First,
        ..link_options("c", Role::Receiver, Some(source), Some(Target::default()))
    };
    let receiver = consumer.connection().attach(session, options).unwrap();
    let attached = consumer
        .wait_for(|e| matches!(e, Event::LinkAttached { link, .. } if *link == receiver))
        .await
        .unwrap();
    let Event::LinkAttached { remote, .. } = attached else {
        unreachable!("wait_for returns the event it matched");
    };
    let answered = remote.source.expect("the broker accepted the link");
    let answered = answered.node().expect("a node's source");
    assert_eq!(answered.address.as_deref(), Some("filtered"));
    assert_eq!(answered.filter, selector_and_unknown_filter()[..1]);

    consumer.connection().flow(receiver, 10, false).unwrap();
    for expected in ["red", "red"] {
        let (delivery, message) = receive(&mut consumer, receiver).await;
        assert_eq!(body_of(&message), expected);
        consumer.settle(delivery, accepted()).await.unwrap();
    }
    let plain = consumer
        .attach_receiver(session, "plain", queue("filtered"), 10)
        .await
        .unwrap();
    for expected in ["blue", "green"] {
        let (delivery, message) = receive(&mut consumer, plain).await;
        assert_eq!(body_of(&message), expected, "in their order");
        consumer.settle(delivery, accepted()).await.unwrap();
    }
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}

fn link_options(
    name: &str,
    role: Role,
    source: Option<Source>,
    target: Option<Target>,
) -> LinkOptions {
    LinkOptions {
        name: name.into(),
        role,
        source: source.map(AttachSource::Node),
        target: target.map(AttachTarget::Node),
        snd_settle_mode: SenderSettleMode::Unsettled,
        rcv_settle_mode: ReceiverSettleMode::Second,
    }
}

/// A producer that asks for rcv-settle-mode `second` publishes one message
/// to `twice`: the broker's receiver settle mode, from its attach, and the
/// outcome of the message.
async fn publish_asking_for_second(
    producer: &mut Client<TokioIo>,
    session: SessionId,
) -> (ReceiverSettleMode, DeliveryId, Event) {
    let target = Target {
        address: Some("twice".into()),
        ..Target::default()
    };
    let sender = producer
        .connection()
        .attach(
            session,
            link_options("p", Role::Sender, Some(Source::default()), Some(target)),
        )
        .unwrap();
    let answered = producer
        .wait_for(|e| matches!(e, Event::LinkAttached { link, .. } if *link == sender))
        .await
        .unwrap();
    let Event::LinkAttached { remote, .. } = answered else {
        unreachable!("waited for the attach");
    };
    producer
        .wait_for(
            |e| matches!(e, Event::Credit { link, credit, .. } if *link == sender && *credit > 0),
        )
        .await
        .unwrap();
    let delivery = producer
        .send(
            sender,
            Bytes::from_static(b"t"),
            message("once", true),
            false,
        )
        .await
        .unwrap();
    let outcome = producer
        .wait_for(|e| matches!(e, Event::Disposition { delivery: d, .. } if *d == delivery))
        .await
        .unwrap();
    (remote.rcv_settle_mode, delivery, outcome)
}

/// A producer asking for rcv-settle-mode `second` gets `first` unless the
/// broker is configured to honour it: the broker's attach says the mode it
/// uses, and its outcome comes settled.
async fn a_producer_asking_for_second_settle_mode_gets_first(topology: Topology) {
    let brokers = Brokers::start(topology).await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let (mode, _, outcome) = publish_asking_for_second(&mut producer, session).await;
    assert_eq!(mode, ReceiverSettleMode::First);
    assert!(
        matches!(
            outcome,
            Event::Disposition {
                state: Some(DeliveryState::Accepted(_)),
                settled: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    producer.close().await.unwrap();
    brokers.stop().await;
}

/// With `amqp.rcv_settle_mode_second`, a producer asking for `second` gets
/// it: the broker's outcome comes unsettled, and the producer settles it.
async fn receiver_settle_mode_second_settles_after_the_peer(topology: Topology) {
    let brokers = Brokers::start_with(topology, "[amqp]\nrcv_settle_mode_second = true\n").await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let (mode, delivery, outcome) = publish_asking_for_second(&mut producer, session).await;
    assert_eq!(mode, ReceiverSettleMode::Second);
    assert!(
        matches!(
            outcome,
            Event::Disposition {
                state: Some(DeliveryState::Accepted(_)),
                settled: false,
                ..
            }
        ),
        "{outcome:?}"
    );
    producer.settle(delivery, accepted()).await.unwrap();

    // A consumer asking for `second`: it answers unsettled, the broker
    // settles, then the consumer does.
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let receiver = consumer
        .connection()
        .attach(
            session,
            link_options(
                "c",
                Role::Receiver,
                Some(queue("twice")),
                Some(Target::default()),
            ),
        )
        .unwrap();
    consumer.connection().flow(receiver, 10, false).unwrap();
    let (delivery, message) = receive(&mut consumer, receiver).await;
    assert_eq!(body_of(&message), "once");
    consumer
        .connection()
        .disposition(delivery, Some(accepted()), false)
        .unwrap();
    let settled = consumer
        .wait_for(|e| matches!(e, Event::Disposition { delivery: d, .. } if *d == delivery))
        .await
        .unwrap();
    assert!(
        matches!(settled, Event::Disposition { settled: true, .. }),
        "{settled:?}"
    );
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}

async fn expired_messages_are_dead_lettered_as_expired(topology: Topology) {
    let brokers = Brokers::start_with(
        topology,
        r#"
        [[queue]]
        name = "perishable"
        dead_letter_queue = "perishable.expired"
        "#,
    )
    .await;
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let expired = consumer
        .attach_receiver(session, "dlq", queue("perishable.expired"), 10)
        .await
        .unwrap();
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("perishable"))
        .await
        .unwrap();
    let short_lived = Message {
        sections: vec![
            Section::Header(Header {
                durable: true,
                ttl: Some(20),
                ..Header::default()
            }),
            Section::Data(Bytes::from_static(b"milk")),
        ],
    }
    .encode();
    producer
        .send(sender, Bytes::from_static(b"t"), short_lived, false)
        .await
        .unwrap();
    // Nobody consumes "perishable": the broker's expiry timer moves the
    // message once its 20 ms are up; the wait is for that event, bounded.
    let (delivery, message) = receive(&mut consumer, expired).await;
    assert_eq!(body_of(&message), "milk");
    let reason = deadletter_reason(&message);
    assert_eq!(reason, Some(Value::Symbol(Symbol::from_static("expired"))));
    consumer.settle(delivery, accepted()).await.unwrap();
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}

/// A producer that resends after losing its connection repeats the
/// `message-id`: the queue takes the copy (`accepted`) without enqueuing it
/// again.
async fn a_resent_message_id_is_accepted_once_and_delivered_once(topology: Topology) {
    let brokers = Brokers::start(topology).await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("orders"))
        .await
        .unwrap();
    let with_id = |body: &str, id: Option<&str>| {
        Message {
            sections: vec![
                Section::Header(Header {
                    durable: true,
                    ..Header::default()
                }),
                Section::Properties(Box::new(Properties {
                    message_id: id.map(|id| MessageId::String(id.into())),
                    ..Properties::default()
                })),
                Section::Data(Bytes::from(body.to_owned())),
            ],
        }
        .encode()
    };
    for (body, id) in [
        ("first", Some("order-1")),
        ("resent", Some("order-1")),
        ("other", Some("order-2")),
        ("no id", None),
    ] {
        let state = publish_encoded(&mut producer, sender, body, with_id(body, id)).await;
        assert_eq!(state, accepted(), "{body}");
    }
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let consumer_link = consumer
        .attach_receiver(session, "c", queue("orders"), 10)
        .await
        .unwrap();
    // In order: had the resend been enqueued, it would come second.
    for expected in ["first", "other", "no id"] {
        let (delivery, message) = receive(&mut consumer, consumer_link).await;
        assert_eq!(body_of(&message), expected);
        consumer.settle(delivery, accepted()).await.unwrap();
    }
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}

/// An attach the broker cannot serve — a target or a source of a kind it
/// does not know, a coordinator for distributed transactions — is refused
/// on its link with `amqp:not-implemented`; the connection carries on.
async fn links_the_broker_cannot_serve_are_refused_alone(topology: Topology) {
    let brokers = Brokers::start(topology).await;
    let (mut client, session) = connect(brokers.producers()).await;
    let unknown = AttachTarget::Unsupported(Box::new(Described {
        descriptor: Descriptor::Name(Symbol::from_static("com.example:target:list")),
        value: Value::List(Vec::new()),
    }));
    let distributed = AttachTarget::Coordinator(Coordinator {
        capabilities: vec![Symbol::from_static("amqp:distributed-transactions")],
    });
    let unknown_source = LinkOptions {
        source: Some(AttachSource::Unsupported(Box::new(Described {
            descriptor: Descriptor::Name(Symbol::from_static("com.example:source:list")),
            value: Value::List(Vec::new()),
        }))),
        ..link_options(
            "unknown source",
            Role::Receiver,
            None,
            Some(Target::default()),
        )
    };
    let refusals =
        [("unknown", unknown), ("distributed", distributed)].map(|(name, target)| LinkOptions {
            target: Some(target),
            ..link_options(name, Role::Sender, Some(Source::default()), None)
        });
    for options in refusals.into_iter().chain([unknown_source]) {
        let name = options.name.clone();
        let refused = client.attach(session, options).await;
        let Err(ClientError::LinkRefused(Some(error))) = refused else {
            panic!("{name}: expected a refusal, got {:?}", refused.map(|_| ()));
        };
        assert_eq!(error.condition, condition::NOT_IMPLEMENTED, "{name}");
    }
    let sender = client
        .attach_sender(session, "p", Some("orders"))
        .await
        .unwrap();
    assert_eq!(
        publish(&mut client, sender, "still here", true).await,
        accepted()
    );
    client.close().await.unwrap();
    brokers.stop().await;
}

/// A message of `body` with header `priority` and application property
/// `instrument`.
fn price(body: &str, priority: u8, instrument: &str) -> Bytes {
    Message {
        sections: vec![
            Section::Header(Header {
                durable: true,
                priority,
                ..Header::default()
            }),
            Section::ApplicationProperties(vec![("instrument".into(), Value::from(instrument))]),
            Section::Data(Bytes::from(body.to_owned())),
        ],
    }
    .encode()
}

/// Queue types configured by `[[queue]]`, through the wire: a priority
/// queue delivers the highest priority first, a last-value queue keeps the
/// latest price per instrument.
async fn priority_and_last_value_queues_order_and_keep_as_configured(topology: Topology) {
    let brokers = Brokers::start_with(
        topology,
        r#"
        [[queue]]
        name = "orders"
        type = "priority"

        [[queue]]
        name = "prices"
        type = "last-value"
        last_value_key = "instrument"
        "#,
    )
    .await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let orders = producer
        .attach_sender(session, "o", Some("orders"))
        .await
        .unwrap();
    let prices = producer
        .attach_sender(session, "p", Some("prices"))
        .await
        .unwrap();
    for (body, priority) in [("low", 0), ("urgent", 9), ("normal", 4), ("urgent-2", 9)] {
        let state = publish_encoded(&mut producer, orders, body, price(body, priority, "x")).await;
        assert_eq!(state, accepted(), "{body}");
    }
    for (body, instrument) in [
        ("eur 1", "EURUSD"),
        ("gbp 1", "GBPUSD"),
        ("eur 2", "EURUSD"),
    ] {
        let state = publish_encoded(&mut producer, prices, body, price(body, 4, instrument)).await;
        assert_eq!(state, accepted(), "{body}");
    }
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let from_orders = consumer
        .attach_receiver(session, "c-o", queue("orders"), 10)
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let (delivery, message) = receive(&mut consumer, from_orders).await;
        got.push(body_of(&message));
        consumer.settle(delivery, accepted()).await.unwrap();
    }
    assert_eq!(got, ["urgent", "urgent-2", "normal", "low"]);
    let from_prices = consumer
        .attach_receiver(session, "c-p", queue("prices"), 10)
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let (delivery, message) = receive(&mut consumer, from_prices).await;
        got.push(body_of(&message));
        consumer.settle(delivery, accepted()).await.unwrap();
    }
    assert_eq!(got, ["gbp 1", "eur 2"], "the latest price per instrument");
    brokers
        .wait_for_queue("prices", |info| info.depth + info.unsettled == 0)
        .await;
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}

/// A consumer whose link asks for snd-settle-mode `settled` (at most once)
/// gets every delivery pre-settled: each is consumed as it is sent, not
/// held until the link detaches and then delivered again.
async fn a_consumer_that_asks_for_settled_deliveries_consumes_them(topology: Topology) {
    let brokers = Brokers::start(topology).await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let sender = producer
        .attach_sender(session, "p", Some("at-most-once"))
        .await
        .unwrap();
    for body in ["a", "b", "c"] {
        assert_eq!(publish(&mut producer, sender, body, true).await, accepted());
    }
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let options = LinkOptions {
        snd_settle_mode: SenderSettleMode::Settled,
        rcv_settle_mode: ReceiverSettleMode::First,
        ..link_options(
            "c",
            Role::Receiver,
            Some(queue("at-most-once")),
            Some(Target::default()),
        )
    };
    let receiver = consumer.attach(session, options).await.unwrap();
    consumer.connection().flow(receiver, 10, false).unwrap();
    for expected in ["a", "b", "c"] {
        let (_, message) = receive(&mut consumer, receiver).await;
        assert_eq!(body_of(&message), expected);
    }
    brokers
        .wait_for_queue("at-most-once", |info| info.depth + info.unsettled == 0)
        .await;
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}

/// A transactional producer, through the client's coordinator link: what
/// it publishes in a transaction reaches the queue only when the
/// transaction commits, all of it, in order; a rolled-back transaction
/// publishes nothing; a transaction discharged once is unknown after.
async fn a_transaction_publishes_at_commit_and_a_rollback_publishes_nothing(topology: Topology) {
    let brokers = Brokers::start(topology).await;
    let (mut producer, session) = connect(brokers.producers()).await;
    let coordinator = producer.attach_coordinator(session, "txn").await.unwrap();
    let sender = producer
        .attach_sender(session, "p", Some("orders"))
        .await
        .unwrap();
    let rolled_back = producer.declare(coordinator).await.unwrap();
    let committed = producer.declare(coordinator).await.unwrap();
    assert_ne!(rolled_back, committed);
    let sends = [
        ("gone 1", &rolled_back),
        ("kept 1", &committed),
        ("gone 2", &rolled_back),
        ("kept 2", &committed),
    ];
    for (body, txn_id) in sends {
        let tag = Bytes::from(body.to_owned());
        producer
            .send_in_transaction(sender, tag, message(body, true), txn_id.clone())
            .await
            .unwrap();
    }
    let discharge = producer.discharge(coordinator, rolled_back, true);
    timeout(WAIT, discharge).await.unwrap().unwrap();
    let discharge = producer.discharge(coordinator, committed.clone(), false);
    timeout(WAIT, discharge).await.unwrap().unwrap();
    let again = producer.discharge(coordinator, committed, false);
    let again = timeout(WAIT, again).await.unwrap();
    assert!(
        matches!(again, Err(ClientError::Transaction(Some(_)))),
        "{again:?}"
    );
    let (mut consumer, session) = connect(brokers.consumers()).await;
    let consumer_link = consumer
        .attach_receiver(session, "c", queue("orders"), 10)
        .await
        .unwrap();
    for expected in ["kept 1", "kept 2"] {
        let (delivery, message) = receive(&mut consumer, consumer_link).await;
        assert_eq!(body_of(&message), expected);
        consumer.settle(delivery, accepted()).await.unwrap();
    }
    // A rolled-back message would be delivered (and held) by now.
    brokers
        .wait_for_queue("orders", |q| q.depth == 0 && q.unsettled == 0)
        .await;
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    brokers.stop().await;
}
