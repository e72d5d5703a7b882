//! What a broker user relies on, checked on the wire with Sluice's own
//! client engine against the real server: settlement outcomes and
//! redelivery, dead-lettering, flow control at a full queue, round robin,
//! routing errors, durability across a restart, and a source that lists no
//! filter it does not apply.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{Broker, WAIT, test_config};
use sluice::amqp::codec::{Described, Descriptor, Symbol, Value};
use sluice::amqp::engine::{
    ClientSasl, ConnectionConfig, DeliveryId, Event, LinkId, LinkOptions, SessionId,
};
use sluice::amqp::types::{
    Accepted, Annotations, DeliveryState, Header, Message, MessageId, Modified, Properties,
    ReceiverSettleMode, Rejected, Released, Role, Section, SenderSettleMode, Source, Target,
    condition,
};
use sluice::client::{Client, ClientError};
use sluice::config::Config;
use sluice::io::{Io, TokioIo};
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

async fn broker_with(toml: &str) -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        listen: test_config().listen,
        ..Config::from_toml(toml).unwrap()
    };
    (Broker::start_with(config).await, dir)
}

#[tokio::test]
async fn released_messages_come_back_at_their_place_uncounted() {
    let broker = Broker::start().await;
    let (mut client, session) = connect(&broker).await;
    let sender = client
        .attach_sender(session, "p", Some("work"))
        .await
        .unwrap();
    for body in ["a", "b"] {
        assert_eq!(publish(&mut client, sender, body, true).await, accepted());
    }
    let receiver = client
        .attach_receiver(session, "c", queue("work"), 1)
        .await
        .unwrap();
    let (first, message) = receive(&mut client, receiver).await;
    assert_eq!(body_of(&message), "a");
    client
        .settle(first, DeliveryState::Released(Released))
        .await
        .unwrap();
    client.connection().flow(receiver, 1, false).unwrap();

    let (again, message) = receive(&mut client, receiver).await;
    assert_eq!(body_of(&message), "a", "a released message keeps its place");
    assert_eq!(message.header().map_or(0, |h| h.delivery_count), 0);
    client.settle(again, accepted()).await.unwrap();
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn a_failed_delivery_is_redelivered_with_its_count() {
    let broker = Broker::start().await;
    let (mut client, session) = connect(&broker).await;
    let sender = client
        .attach_sender(session, "p", Some("work"))
        .await
        .unwrap();
    publish(&mut client, sender, "flaky", true).await;
    let receiver = client
        .attach_receiver(session, "c", queue("work"), 10)
        .await
        .unwrap();
    let (first, _) = receive(&mut client, receiver).await;
    let failed = Modified {
        delivery_failed: true,
        ..Modified::default()
    };
    client
        .settle(first, DeliveryState::Modified(failed))
        .await
        .unwrap();

    let (again, message) = receive(&mut client, receiver).await;
    let header = message.header().unwrap();
    assert_eq!(header.delivery_count, 1);
    assert!(!header.first_acquirer);
    client.settle(again, accepted()).await.unwrap();
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn a_detached_consumer_returns_what_it_had_not_settled() {
    let broker = Broker::start().await;
    let (mut client, session) = connect(&broker).await;
    let sender = client
        .attach_sender(session, "p", Some("work"))
        .await
        .unwrap();
    publish(&mut client, sender, "held", true).await;
    let receiver = client
        .attach_receiver(session, "c1", queue("work"), 10)
        .await
        .unwrap();
    receive(&mut client, receiver).await;
    client.connection().detach(receiver, true, None).unwrap();

    let next = client
        .attach_receiver(session, "c2", queue("work"), 10)
        .await
        .unwrap();
    let (delivery, message) = receive(&mut client, next).await;
    assert_eq!(body_of(&message), "held");
    assert_eq!(message.header().unwrap().delivery_count, 1);
    client.settle(delivery, accepted()).await.unwrap();
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn rejected_messages_are_dead_lettered_with_the_reason() {
    let (broker, _dir) = broker_with(
        r#"
        [[queue]]
        name = "work"
        dead_letter_queue = "work.dlq"
        "#,
    )
    .await;
    let (mut client, session) = connect(&broker).await;
    // The dead-letter queue must exist to receive anything.
    let dead = client
        .attach_receiver(session, "dlq", queue("work.dlq"), 10)
        .await
        .unwrap();
    let sender = client
        .attach_sender(session, "p", Some("work"))
        .await
        .unwrap();
    publish(&mut client, sender, "poison", true).await;
    let receiver = client
        .attach_receiver(session, "c", queue("work"), 10)
        .await
        .unwrap();
    let (delivery, _) = receive(&mut client, receiver).await;
    client
        .settle(delivery, DeliveryState::Rejected(Rejected::default()))
        .await
        .unwrap();

    let (dead_letter, message) = receive(&mut client, dead).await;
    assert_eq!(body_of(&message), "poison");
    let reason = deadletter_reason(&message);
    assert_eq!(reason, Some(Value::Symbol(Symbol::from_static("rejected"))));
    client.settle(dead_letter, accepted()).await.unwrap();
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn a_full_queue_stops_producer_credit_until_a_consumer_makes_room() {
    let (broker, _dir) = broker_with(
        r#"
        [[queue]]
        name = "small"
        max_length = 3
        "#,
    )
    .await;
    let (mut client, session) = connect(&broker).await;
    let sender = client
        .attach_sender(session, "p", Some("small"))
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(
            publish(&mut client, sender, &format!("m{i}"), true).await,
            accepted()
        );
    }
    assert_eq!(
        client.connection().credit(sender),
        0,
        "no credit beyond the queue's room"
    );

    let receiver = client
        .attach_receiver(session, "c", queue("small"), 1)
        .await
        .unwrap();
    let (delivery, _) = receive(&mut client, receiver).await;
    client.settle(delivery, accepted()).await.unwrap();
    // Room for one: the producer gets credit again.
    loop {
        if let Event::Credit { link, credit, .. } =
            timeout(WAIT, client.next_event()).await.unwrap().unwrap()
            && link == sender
            && credit > 0
        {
            break;
        }
    }
    assert_eq!(publish(&mut client, sender, "m3", true).await, accepted());
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn consumers_of_one_queue_share_it_round_robin() {
    let broker = Broker::start().await;
    let (mut client, session) = connect(&broker).await;
    let first = client
        .attach_receiver(session, "c1", queue("shared"), 100)
        .await
        .unwrap();
    let second = client
        .attach_receiver(session, "c2", queue("shared"), 100)
        .await
        .unwrap();
    let sender = client
        .attach_sender(session, "p", Some("shared"))
        .await
        .unwrap();
    for i in 0..6 {
        publish(&mut client, sender, &format!("m{i}"), false).await;
    }
    let mut per_link = [0, 0];
    while per_link[0] + per_link[1] < 6 {
        if let Event::Delivery { delivery, .. } =
            timeout(WAIT, client.next_event()).await.unwrap().unwrap()
        {
            per_link[usize::from(delivery.link == second)] += 1;
            assert!(delivery.link == first || delivery.link == second);
            client.settle(delivery, accepted()).await.unwrap();
        }
    }
    assert_eq!(per_link, [3, 3]);
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn the_relay_rejects_a_message_with_nowhere_to_go() {
    let broker = Broker::start().await;
    let (mut client, session) = connect(&broker).await;
    let relay = client.attach_sender(session, "relay", None).await.unwrap();
    // No `to` at all, then a `to` naming no queue.
    let outcome = publish(&mut client, relay, "lost", true).await;
    let DeliveryState::Rejected(Rejected { error: Some(error) }) = outcome else {
        panic!("expected a rejection, got {outcome:?}");
    };
    assert_eq!(error.condition, condition::NOT_FOUND);
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn without_auto_create_unknown_addresses_are_refused() {
    let (broker, _dir) = broker_with(
        r#"
        [queues]
        auto_create = false
        "#,
    )
    .await;
    let (mut client, session) = connect(&broker).await;
    let refused = client.attach_sender(session, "p", Some("nowhere")).await;
    let Err(ClientError::LinkRefused(Some(error))) = refused else {
        panic!("expected a refusal, got {:?}", refused.map(|_| ()));
    };
    assert_eq!(error.condition, condition::NOT_FOUND);
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn durable_messages_survive_a_restart_and_transient_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..test_config()
    };
    let broker = Broker::start_with(config.clone()).await;
    let (mut client, session) = connect(&broker).await;
    let sender = client
        .attach_sender(session, "p", Some("orders"))
        .await
        .unwrap();
    for (body, durable) in [("d1", true), ("t1", false), ("d2", true), ("t2", false)] {
        assert_eq!(
            publish(&mut client, sender, body, durable).await,
            accepted()
        );
    }
    client.close().await.unwrap();
    broker.stop().await;

    let broker = Broker::start_with(config).await;
    let (mut client, session) = connect(&broker).await;
    let receiver = client
        .attach_receiver(session, "c", queue("orders"), 10)
        .await
        .unwrap();
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let (delivery, message) = receive(&mut client, receiver).await;
        bodies.push(body_of(&message));
        client.settle(delivery, accepted()).await.unwrap();
    }
    assert_eq!(bodies, ["d1", "d2"]);
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn recovery_from_a_snapshot_keeps_exactly_what_was_not_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        listen: test_config().listen,
        ..Config::from_toml("[storage]\nsnapshot_every_records = 10\n").unwrap()
    };
    let broker = Broker::start_with(config.clone()).await;
    let (mut client, session) = connect(&broker).await;
    let sender = client
        .attach_sender(session, "p", Some("orders"))
        .await
        .unwrap();
    for i in 0..50 {
        assert_eq!(
            publish(&mut client, sender, &format!("m{i}"), true).await,
            accepted()
        );
    }
    let receiver = client
        .attach_receiver(session, "c", queue("orders"), 20)
        .await
        .unwrap();
    for i in 0..20 {
        let (delivery, message) = receive(&mut client, receiver).await;
        assert_eq!(body_of(&message), format!("m{i}"));
        client.settle(delivery, accepted()).await.unwrap();
    }
    client.close().await.unwrap();
    broker.stop().await;
    let snapshots = TokioIo
        .read_dir(&dir.path().join("log"))
        .await
        .unwrap()
        .iter()
        .filter(|path| path.extension().is_some_and(|e| e == "snap"))
        .count();
    assert!(snapshots >= 1, "no snapshot after 70+ logged commands");

    let broker = Broker::start_with(config).await;
    let (mut client, session) = connect(&broker).await;
    let receiver = client
        .attach_receiver(session, "c", queue("orders"), 100)
        .await
        .unwrap();
    for i in 20..50 {
        let (delivery, message) = receive(&mut client, receiver).await;
        assert_eq!(body_of(&message), format!("m{i}"));
        client.settle(delivery, accepted()).await.unwrap();
    }
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn credit_sent_with_the_attach_is_honoured() {
    let broker = Broker::start().await;
    let (mut client, session) = connect(&broker).await;
    let sender = client
        .attach_sender(session, "p", Some("early"))
        .await
        .unwrap();
    for i in 0..3 {
        publish(&mut client, sender, &format!("m{i}"), true).await;
    }
    // Attach and grant credit in one burst, before the broker answers, as
    // event-driven Proton clients do.
    let options = LinkOptions {
        name: "eager".into(),
        role: Role::Receiver,
        source: Some(queue("early")),
        target: Some(Target::default()),
        snd_settle_mode: SenderSettleMode::Unsettled,
        rcv_settle_mode: ReceiverSettleMode::First,
    };
    let receiver = client.connection().attach(session, options).unwrap();
    client.connection().flow(receiver, 10, false).unwrap();
    for i in 0..3 {
        let (delivery, message) = receive(&mut client, receiver).await;
        assert_eq!(body_of(&message), format!("m{i}"));
        client.settle(delivery, accepted()).await.unwrap();
    }
    client.close().await.unwrap();
    broker.stop().await;
}

/// A JMS selector, and a filter type no broker knows: neither is applied.
fn unapplied_filters() -> Annotations {
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

#[tokio::test]
async fn filters_the_broker_does_not_apply_are_not_echoed() {
    let broker = Broker::start().await;
    let (mut client, session) = connect(&broker).await;
    let sender = client
        .attach_sender(session, "p", Some("filtered"))
        .await
        .unwrap();
    for body in ["red", "blue"] {
        publish(&mut client, sender, body, true).await;
    }
    let source = Source {
        filter: unapplied_filters(),
        ..queue("filtered")
    };
    let options = LinkOptions {
        rcv_settle_mode: ReceiverSettleMode::First,
        ..link_options("c", Role::Receiver, Some(source), Some(Target::default()))
    };
    let receiver = client.connection().attach(session, options).unwrap();
    let attached = client
        .wait_for(|e| matches!(e, Event::LinkAttached { link, .. } if *link == receiver))
        .await
        .unwrap();
    let Event::LinkAttached { remote, .. } = attached else {
        unreachable!("wait_for returns the event it matched");
    };
    // The broker's source lists the filters in effect (spec part 3
    // §3.5.3): none, so a client can tell its selector is not applied.
    let answered = remote.source.expect("the broker accepted the link");
    assert_eq!(answered.address.as_deref(), Some("filtered"));
    assert!(answered.filter.is_empty(), "{:?}", answered.filter);

    // The link still works, unfiltered: every message arrives.
    client.connection().flow(receiver, 10, false).unwrap();
    for expected in ["red", "blue"] {
        let (delivery, message) = receive(&mut client, receiver).await;
        assert_eq!(body_of(&message), expected);
        client.settle(delivery, accepted()).await.unwrap();
    }
    client.close().await.unwrap();
    broker.stop().await;
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
        source,
        target,
        snd_settle_mode: SenderSettleMode::Unsettled,
        rcv_settle_mode: ReceiverSettleMode::Second,
    }
}

#[tokio::test]
async fn receiver_settle_mode_second_settles_after_the_peer() {
    let broker = Broker::start().await;
    let (mut client, session) = connect(&broker).await;
    // A producer asking for `second`: the broker's outcome comes unsettled,
    // and the producer settles it.
    let target = Target {
        address: Some("twice".into()),
        ..Target::default()
    };
    let sender = client
        .connection()
        .attach(
            session,
            link_options("p", Role::Sender, Some(Source::default()), Some(target)),
        )
        .unwrap();
    client
        .wait_for(
            |e| matches!(e, Event::Credit { link, credit, .. } if *link == sender && *credit > 0),
        )
        .await
        .unwrap();
    let delivery = client
        .send(
            sender,
            Bytes::from_static(b"t"),
            message("once", true),
            false,
        )
        .await
        .unwrap();
    let outcome = client
        .wait_for(|e| matches!(e, Event::Disposition { delivery: d, .. } if *d == delivery))
        .await
        .unwrap();
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
    client.settle(delivery, accepted()).await.unwrap();

    // A consumer asking for `second`: it answers unsettled, the broker
    // settles, then the consumer does.
    let receiver = client
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
    client.connection().flow(receiver, 10, false).unwrap();
    let (delivery, message) = receive(&mut client, receiver).await;
    assert_eq!(body_of(&message), "once");
    client
        .connection()
        .disposition(delivery, Some(accepted()), false)
        .unwrap();
    let settled = client
        .wait_for(|e| matches!(e, Event::Disposition { delivery: d, .. } if *d == delivery))
        .await
        .unwrap();
    assert!(
        matches!(settled, Event::Disposition { settled: true, .. }),
        "{settled:?}"
    );
    client.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn expired_messages_are_dead_lettered_as_expired() {
    let (broker, _dir) = broker_with(
        r#"
        [[queue]]
        name = "perishable"
        dead_letter_queue = "perishable.expired"
        "#,
    )
    .await;
    let (mut client, session) = connect(&broker).await;
    let expired = client
        .attach_receiver(session, "dlq", queue("perishable.expired"), 10)
        .await
        .unwrap();
    let sender = client
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
    client
        .send(sender, Bytes::from_static(b"t"), short_lived, false)
        .await
        .unwrap();
    // Nobody consumes "perishable": the broker's expiry timer moves the
    // message once its 20 ms are up; the wait is for that event, bounded.
    let (delivery, message) = receive(&mut client, expired).await;
    assert_eq!(body_of(&message), "milk");
    let reason = deadletter_reason(&message);
    assert_eq!(reason, Some(Value::Symbol(Symbol::from_static("expired"))));
    client.settle(delivery, accepted()).await.unwrap();
    client.close().await.unwrap();
    broker.stop().await;
}

/// A producer that resends after losing its connection repeats the
/// `message-id`: the queue takes the copy (`accepted`) without enqueuing it
/// again.
#[tokio::test]
async fn a_resent_message_id_is_accepted_once_and_delivered_once() {
    let broker = Broker::start().await;
    let (mut client, session) = connect(&broker).await;
    let sender = client
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
        let state = publish_encoded(&mut client, sender, body, with_id(body, id)).await;
        assert_eq!(state, accepted(), "{body}");
    }
    let consumer = client
        .attach_receiver(session, "c", queue("orders"), 10)
        .await
        .unwrap();
    // In order: had the resend been enqueued, it would come second.
    for expected in ["first", "other", "no id"] {
        let (delivery, message) = receive(&mut client, consumer).await;
        assert_eq!(body_of(&message), expected);
        client.settle(delivery, accepted()).await.unwrap();
    }
    client.close().await.unwrap();
    broker.stop().await;
}
