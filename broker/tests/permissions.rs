//! Permissions and per-user limits on the wire, with Sluice's own client
//! against the real server: a matrix of user × address × operation
//! (sending, consuming, browsing, creating, the anonymous relay, temporary
//! queues), on a queue that exists and on one that does not, and the
//! limits on connections, sessions and links.
//!
//! The matrix runs twice, on a single node and on a 3-node cluster (where
//! the queues are made through node 2 and every check is made on node 3):
//! both run the one node core that enforces permissions.
// Test helpers panic on anything unexpected: the panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::cluster::{Cluster, NODES};
use common::{Broker, WAIT, test_config, user};
use sluice::amqp::engine::{ClientSasl, ConnectionConfig, Event, LinkId, SessionId};
use sluice::amqp::types::{
    DeliveryState, DistributionMode, Error, Message, Properties, Rejected, Section, Source,
    condition,
};
use sluice::client::{Client, ClientError};
use sluice::config::{Config, Permission, UserLimits};
use sluice::io::TokioIo;
use tokio::time::timeout;

/// How often a test asks the nodes again whether a queue is there.
const QUEUE_POLL: Duration = Duration::from_millis(10);

const PASSWORD: &str = "secret";

/// The users of the matrix and what they may do:
/// - `admin` everything everywhere (it makes the queues that exist);
/// - `alice` send, receive and manage on `orders.*`;
/// - `bob` send on `orders.*`, browse on `audit.**`, receive on the topics
///   `prices.*`;
/// - `carol` receive on `orders.*`, and may create nothing;
/// - `dave` nothing at all (a user, with no entry).
fn permissions() -> Vec<Permission> {
    let entry = |user: &str, pattern: &str| Permission {
        user: user.to_owned(),
        pattern: pattern.to_owned(),
        ..Permission::default()
    };
    vec![
        Permission {
            send: true,
            receive: true,
            manage: true,
            ..entry("admin", "**")
        },
        Permission {
            send: true,
            receive: true,
            manage: true,
            ..entry("alice", "orders.*")
        },
        Permission {
            send: true,
            ..entry("bob", "orders.*")
        },
        Permission {
            browse: true,
            ..entry("bob", "audit.**")
        },
        Permission {
            receive: true,
            ..entry("bob", "topic://prices.*")
        },
        Permission {
            receive: true,
            ..entry("carol", "orders.*")
        },
    ]
}

fn config(limits: &[(&str, UserLimits)], permissions: Vec<Permission>) -> Config {
    let users = ["admin", "alice", "bob", "carol", "dave"]
        .into_iter()
        .map(|name| {
            let mut user = user(name, PASSWORD);
            if let Some((_, limits)) = limits.iter().find(|(n, _)| *n == name) {
                user.limits = *limits;
            }
            user
        })
        .collect();
    Config {
        users,
        permissions,
        ..test_config()
    }
}

/// Where a test's brokers run.
#[derive(Debug, Clone, Copy)]
enum Topology {
    Single,
    Cluster,
}

enum Brokers {
    Single(Broker),
    Cluster(Cluster),
}

impl Brokers {
    async fn start(topology: Topology, config: Config) -> Self {
        match topology {
            Topology::Single => Self::Single(Broker::start_configured(config).await),
            Topology::Cluster => Self::Cluster(Cluster::start(&config).await),
        }
    }

    /// Where the queues that exist are made.
    fn setup(&self) -> &Broker {
        match self {
            Self::Single(broker) => broker,
            Self::Cluster(cluster) => cluster.node(2),
        }
    }

    /// Where every check is made.
    fn checked(&self) -> &Broker {
        match self {
            Self::Single(broker) => broker,
            Self::Cluster(cluster) => cluster.node(3),
        }
    }

    fn nodes(&self) -> Vec<&Broker> {
        match self {
            Self::Single(broker) => vec![broker],
            Self::Cluster(cluster) => NODES.iter().map(|&id| cluster.node(id)).collect(),
        }
    }

    /// Waits until every node has `queue`: a node judges whether an attach
    /// creates a queue by what it has applied.
    async fn wait_for_queue(&self, queue: &str) {
        let applied = async {
            loop {
                let mut everywhere = true;
                for node in self.nodes() {
                    let queues = node.node.queue_info().await.unwrap();
                    everywhere &= queues.iter().any(|(name, _)| name == queue);
                }
                if everywhere {
                    return;
                }
                tokio::time::sleep(QUEUE_POLL).await;
            }
        };
        timeout(WAIT, applied).await.unwrap();
    }

    async fn stop(self) {
        match self {
            Self::Single(broker) => broker.stop().await,
            Self::Cluster(cluster) => cluster.stop().await,
        }
    }
}

async fn connect_as(broker: &Broker, name: &str) -> Result<Client<TokioIo>, ClientError> {
    let sasl = ClientSasl::Scram {
        username: name.to_owned(),
        password: PASSWORD.to_owned(),
        nonce: format!("permissions-{name}"),
    };
    let config = ConnectionConfig::new(format!("permissions-{name}"));
    let addr = broker.addr.to_string();
    let connect = Client::connect(TokioIo, &addr, config, sasl);
    timeout(WAIT, connect).await.unwrap()
}

/// A client logged in as `name`, with one session.
async fn login(broker: &Broker, name: &str) -> (Client<TokioIo>, SessionId) {
    let mut client = connect_as(broker, name).await.unwrap();
    let session = timeout(WAIT, client.begin()).await.unwrap().unwrap();
    (client, session)
}

fn message(to: Option<&str>, body: &'static str) -> Bytes {
    Message {
        sections: vec![
            Section::Properties(Box::new(Properties {
                to: to.map(str::to_owned),
                ..Properties::default()
            })),
            Section::Data(Bytes::from_static(body.as_bytes())),
        ],
    }
    .encode()
}

/// Sends a message and waits for its outcome.
async fn publish(client: &mut Client<TokioIo>, link: LinkId, message: Bytes) -> DeliveryState {
    let delivery = client
        .send(link, Bytes::from_static(b"t"), message, false)
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

/// What a user asks of an address in the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Attach a sender to it.
    Send,
    /// Attach a consumer.
    Receive,
    /// Attach a browser (distribution-mode copy).
    Browse,
}

/// How the broker answered an attach: accepted, or refused with a
/// condition and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Attached,
    Refused(String, String),
}

async fn attach(client: &mut Client<TokioIo>, session: SessionId, address: &str, op: Op) -> Answer {
    let attached = match op {
        Op::Send => {
            let attaching = client.attach_sender(session, "s", Some(address));
            timeout(WAIT, attaching).await.unwrap()
        }
        Op::Receive | Op::Browse => {
            let source = Source {
                address: Some(address.to_owned()),
                distribution_mode: (op == Op::Browse).then_some(DistributionMode::Copy),
                ..Source::default()
            };
            let attaching = client.attach_receiver(session, "r", source, 10);
            timeout(WAIT, attaching).await.unwrap()
        }
    };
    match attached {
        Ok(link) => {
            timeout(WAIT, client.detach(link, true))
                .await
                .unwrap()
                .unwrap();
            Answer::Attached
        }
        Err(ClientError::LinkRefused(Some(Error {
            condition,
            description,
            ..
        }))) => Answer::Refused(
            condition.as_str().to_owned(),
            description.unwrap_or_default(),
        ),
        Err(error) => panic!("{op:?} {address:?}: {error}"),
    }
}

/// The queues that exist before the matrix runs.
const EXISTING: [&str; 4] = ["orders.eu", "invoices", "audit.log.2024", "orders.eu.paris"];

async fn the_permission_matrix(topology: Topology) {
    let brokers = Brokers::start(topology, config(&[], permissions())).await;
    let (mut admin, session) = login(brokers.setup(), "admin").await;
    for queue in EXISTING {
        let link = admin
            .attach_sender(session, queue, Some(queue))
            .await
            .unwrap();
        let outcome = publish(&mut admin, link, message(None, "held")).await;
        assert!(matches!(outcome, DeliveryState::Accepted(_)), "{outcome:?}");
    }
    for queue in EXISTING {
        brokers.wait_for_queue(queue).await;
    }
    use Op::{Browse, Receive, Send};
    let attached = || Answer::Attached;
    let denied = |user: &str, op: &str, address: &str| {
        Answer::Refused(
            condition::UNAUTHORIZED_ACCESS.to_owned(),
            format!("user {user:?} may not {op} on address {address:?}"),
        )
    };
    // (user, address, what, answer); `orders.us`, `orders.new`, `orders.zz`,
    // `nowhere` and `audit.none` do not exist. Each refusal that is not a
    // matter of creating the queue reads the same whether it exists or not.
    let matrix = [
        ("alice", "orders.eu", Send, attached()),
        ("alice", "orders.eu", Receive, attached()),
        ("alice", "orders.eu", Browse, attached()),
        ("alice", "orders.us", Send, attached()),
        (
            "alice",
            "orders.eu.paris",
            Send,
            denied("alice", "send", "orders.eu.paris"),
        ),
        (
            "alice",
            "invoices",
            Send,
            denied("alice", "send", "invoices"),
        ),
        ("alice", "nowhere", Send, denied("alice", "send", "nowhere")),
        (
            "alice",
            "invoices",
            Receive,
            denied("alice", "receive", "invoices"),
        ),
        (
            "alice",
            "nowhere",
            Receive,
            denied("alice", "receive", "nowhere"),
        ),
        ("bob", "orders.eu", Send, attached()),
        (
            "bob",
            "orders.new",
            Send,
            denied("bob", "manage", "orders.new"),
        ),
        (
            "bob",
            "orders.eu",
            Receive,
            denied("bob", "receive", "orders.eu"),
        ),
        (
            "bob",
            "orders.zz",
            Receive,
            denied("bob", "receive", "orders.zz"),
        ),
        (
            "bob",
            "orders.eu",
            Browse,
            denied("bob", "browse", "orders.eu"),
        ),
        ("bob", "audit.log.2024", Browse, attached()),
        (
            "bob",
            "audit.log.2024",
            Receive,
            denied("bob", "receive", "audit.log.2024"),
        ),
        (
            "bob",
            "audit.none",
            Browse,
            denied("bob", "manage", "audit.none"),
        ),
        ("bob", "topic://prices.eu", Receive, attached()),
        (
            "bob",
            "topic://prices.eu",
            Send,
            denied("bob", "send", "topic://prices.eu"),
        ),
        ("carol", "orders.eu", Receive, attached()),
        ("carol", "orders.eu", Browse, attached()),
        (
            "carol",
            "orders.eu",
            Send,
            denied("carol", "send", "orders.eu"),
        ),
        (
            "carol",
            "orders.zz",
            Receive,
            denied("carol", "manage", "orders.zz"),
        ),
        (
            "alice",
            "topic://prices.eu",
            Receive,
            denied("alice", "receive", "topic://prices.eu"),
        ),
        (
            "dave",
            "orders.eu",
            Send,
            denied("dave", "send", "orders.eu"),
        ),
        (
            "dave",
            "orders.zz",
            Send,
            denied("dave", "send", "orders.zz"),
        ),
        (
            "dave",
            "orders.eu",
            Receive,
            denied("dave", "receive", "orders.eu"),
        ),
        (
            "dave",
            "orders.zz",
            Receive,
            denied("dave", "receive", "orders.zz"),
        ),
        (
            "dave",
            "orders.eu",
            Browse,
            denied("dave", "browse", "orders.eu"),
        ),
    ];
    let mut clients = std::collections::BTreeMap::new();
    for name in ["alice", "bob", "carol", "dave"] {
        clients.insert(name, login(brokers.checked(), name).await);
    }
    let mut wrong = Vec::new();
    for (name, address, op, expected) in matrix {
        let (client, session) = clients.get_mut(name).unwrap();
        let answer = attach(client, *session, address, op).await;
        if answer != expected {
            wrong.push(format!(
                "{name} {op:?} {address:?}: {answer:?}, expected {expected:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    for (_, (client, _)) in clients {
        client.close().await.unwrap();
    }
    admin.close().await.unwrap();
    brokers.stop().await;
}

/// The anonymous relay checks `send` on every message's `to`: a message
/// the user may not send is rejected with `amqp:unauthorized-access`,
/// whether its queue exists or not, and the link stays for the next.
async fn the_relay_checks_every_message(topology: Topology) {
    let brokers = Brokers::start(topology, config(&[], permissions())).await;
    let (mut admin, session) = login(brokers.setup(), "admin").await;
    for queue in ["orders.eu", "invoices"] {
        admin
            .attach_sender(session, queue, Some(queue))
            .await
            .unwrap();
        brokers.wait_for_queue(queue).await;
    }
    let (mut alice, session) = login(brokers.checked(), "alice").await;
    let relay = alice.attach_sender(session, "relay", None).await.unwrap();
    let rejected = |state: DeliveryState| match state {
        DeliveryState::Rejected(Rejected { error: Some(error) }) => (
            error.condition.as_str().to_owned(),
            error.description.unwrap_or_default(),
        ),
        other => panic!("expected a rejection, got {other:?}"),
    };
    for to in ["invoices", "nowhere", "topic://prices.eu"] {
        let outcome = publish(&mut alice, relay, message(Some(to), "no")).await;
        assert_eq!(
            rejected(outcome),
            (
                condition::UNAUTHORIZED_ACCESS.to_owned(),
                format!("user \"alice\" may not send on address {to:?}")
            ),
        );
    }
    let outcome = publish(&mut alice, relay, message(Some("orders.eu"), "yes")).await;
    assert!(matches!(outcome, DeliveryState::Accepted(_)), "{outcome:?}");
    // Allowed, but there is no such queue: the relay makes none.
    let outcome = publish(&mut alice, relay, message(Some("orders.none"), "lost")).await;
    assert_eq!(rejected(outcome).0, condition::NOT_FOUND);
    alice.close().await.unwrap();
    admin.close().await.unwrap();
    brokers.stop().await;
}

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
    the_permission_matrix;
    the_relay_checks_every_message;
}

/// Temporary queues are made only for a user with `send` or `receive` and
/// `manage` on the name the broker gives them (`dynamic.…`).
#[tokio::test]
async fn a_temporary_queue_needs_manage_on_its_name() {
    let mut permissions = permissions();
    permissions.push(Permission {
        user: "carol".to_owned(),
        pattern: "dynamic.**".to_owned(),
        receive: true,
        manage: true,
        ..Permission::default()
    });
    let broker = Broker::start_configured(config(&[], permissions)).await;
    let (mut carol, session) = login(&broker, "carol").await;
    let (_, address) = carol
        .attach_dynamic_receiver(session, "t", 1)
        .await
        .unwrap();
    assert!(address.starts_with("dynamic."), "{address}");
    let (mut alice, session) = login(&broker, "alice").await;
    let refused = alice.attach_dynamic_receiver(session, "t", 1).await;
    let Err(ClientError::LinkRefused(Some(error))) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert_eq!(error.condition, condition::UNAUTHORIZED_ACCESS);
    carol.close().await.unwrap();
    alice.close().await.unwrap();
    broker.stop().await;
}

/// With users and no `[[permissions]]`, every user may do everything, as
/// before permissions existed.
#[tokio::test]
async fn without_permissions_every_user_may_do_everything() {
    let broker = Broker::start_configured(config(&[], Vec::new())).await;
    let (mut dave, session) = login(&broker, "dave").await;
    for op in [Op::Send, Op::Receive, Op::Browse] {
        assert_eq!(
            attach(&mut dave, session, "anything", op).await,
            Answer::Attached
        );
    }
    dave.close().await.unwrap();
    broker.stop().await;
}

fn limited(limits: UserLimits) -> Config {
    config(&[("alice", limits)], permissions())
}

fn resource_limit(error: Option<Error>) {
    let error = error.expect("an error");
    assert_eq!(
        error.condition,
        condition::RESOURCE_LIMIT_EXCEEDED,
        "{error:?}"
    );
}

/// A connection over the user's `max_connections` is closed with
/// `amqp:resource-limit-exceeded`; another user is not affected, and once
/// one closes the user may connect again.
#[tokio::test]
async fn max_connections_closes_the_connection_over_it() {
    let broker = Broker::start_configured(limited(UserLimits {
        max_connections: Some(1),
        ..UserLimits::default()
    }))
    .await;
    let (first, _) = login(&broker, "alice").await;
    let closed = match connect_as(&broker, "alice").await {
        Err(ClientError::Closed(error)) => error,
        // The broker answers the `open`, then closes.
        Ok(mut second) => loop {
            match timeout(WAIT, second.next_event()).await.unwrap() {
                Ok(Event::Closed { local, remote }) => break remote.or(local),
                Ok(_) => {}
                Err(error) => panic!("expected the connection closed, got {error}"),
            }
        },
        Err(error) => panic!("{error}"),
    };
    resource_limit(closed);
    let (bob, _) = login(&broker, "bob").await;
    first.close().await.unwrap();
    let (again, _) = login(&broker, "alice").await;
    again.close().await.unwrap();
    bob.close().await.unwrap();
    broker.stop().await;
}

/// A session over `max_sessions` (over all the user's connections) is
/// ended with `amqp:resource-limit-exceeded`; the connection stays.
#[tokio::test]
async fn max_sessions_ends_the_session_over_it() {
    let broker = Broker::start_configured(limited(UserLimits {
        max_sessions: Some(2),
        ..UserLimits::default()
    }))
    .await;
    let (mut first, one) = login(&broker, "alice").await;
    let (mut second, _) = login(&broker, "alice").await;
    let third = second.begin().await.unwrap();
    let ended =
        second.wait_for(|e| matches!(e, Event::SessionEnded { session, .. } if *session == third));
    let Event::SessionEnded { error, .. } = timeout(WAIT, ended).await.unwrap().unwrap() else {
        unreachable!("waited for the end");
    };
    resource_limit(error);
    // The connection and its other session still work.
    let link = first
        .attach_sender(one, "s", Some("orders.eu"))
        .await
        .unwrap();
    let outcome = publish(&mut first, link, message(None, "m")).await;
    assert!(matches!(outcome, DeliveryState::Accepted(_)), "{outcome:?}");
    first.close().await.unwrap();
    second.close().await.unwrap();
    broker.stop().await;
}

/// A link over `max_links` is refused with `amqp:resource-limit-exceeded`;
/// once one detaches, another may attach.
#[tokio::test]
async fn max_links_refuses_the_link_over_it() {
    let broker = Broker::start_configured(limited(UserLimits {
        max_links: Some(2),
        ..UserLimits::default()
    }))
    .await;
    let (mut alice, session) = login(&broker, "alice").await;
    let first = alice
        .attach_sender(session, "a", Some("orders.a"))
        .await
        .unwrap();
    let (mut other, other_session) = login(&broker, "alice").await;
    other
        .attach_sender(other_session, "b", Some("orders.b"))
        .await
        .unwrap();
    let refused = alice.attach_sender(session, "c", Some("orders.c")).await;
    let Err(ClientError::LinkRefused(error)) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    resource_limit(error);
    alice.detach(first, true).await.unwrap();
    alice
        .attach_sender(session, "c", Some("orders.c"))
        .await
        .unwrap();
    alice.close().await.unwrap();
    other.close().await.unwrap();
    broker.stop().await;
}
