//! What the node core's harnesses share: one connection with a producer
//! and a consumer link, the requests they make, and a message to the
//! connection told in a line, so that a test states exactly what a core
//! said.

use bytes::Bytes;

use super::{ConnId, ConsumerNode, Now, ProducerNode, Request, Subscription, ToConnection};
use crate::amqp::engine::{DeliveryId, LinkId, SessionId};
use crate::amqp::types::{ControlMessage, DeliveryState, Header, Message, Section};
use crate::queue::Seq;

/// A message to the connection, in a line.
pub(super) fn describe(message: &ToConnection) -> String {
    match message {
        ToConnection::ConsumerAttached { result, .. } => match result {
            Ok((_, address)) => format!("consumer attached to {address}"),
            Err(refusal) => format!("consumer refused: {}", refusal.condition),
        },
        ToConnection::ProducerAttached { result, .. } => match result {
            Ok(None) => "producer attached".into(),
            Ok(Some(address)) => format!("producer attached to {address}"),
            Err(refusal) => format!("producer refused: {}", refusal.condition),
        },
        ToConnection::ProducerCredit { credit, .. } => format!("credit {credit}"),
        ToConnection::Deliver {
            queue,
            seq,
            message,
            ..
        } => {
            let failed = Message::decode(message.clone())
                .ok()
                .and_then(|message| Some(message.header()?.delivery_count))
                .unwrap_or(0);
            match failed {
                0 => format!("deliver {queue} {}", seq_of(*seq)),
                failed => format!("deliver {queue} {} (failed {failed})", seq_of(*seq)),
            }
        }
        ToConnection::DrainComplete { .. } => "drain complete".into(),
        ToConnection::CloseConnection { refusal } => {
            format!("connection closed: {}", refusal.condition)
        }
        ToConnection::EndSession { session, refusal } => {
            format!("session {} ended: {}", session.0, refusal.condition)
        }
        ToConnection::Outcome { delivery, state } => match state {
            DeliveryState::Accepted(_) => format!("accepted {}", delivery.id),
            DeliveryState::Rejected(rejected) => {
                let error = rejected.error.as_ref();
                let why = error.and_then(|error| error.description.as_deref());
                format!("rejected {}: {}", delivery.id, why.unwrap_or_default())
            }
            DeliveryState::Declared(declared) => {
                format!("declared {:x} {}", declared.txn_id, delivery.id)
            }
            DeliveryState::Transactional(state) => {
                let outcome = state.outcome.as_deref().map(|outcome| {
                    describe(&ToConnection::Outcome {
                        delivery: *delivery,
                        state: outcome.clone(),
                    })
                });
                format!("in {:x}: {}", state.txn_id, outcome.unwrap_or_default())
            }
            other => format!("{other:?} {}", delivery.id),
        },
        ToConnection::CloseLink { refusal, .. } => format!("close link: {}", refusal.condition),
    }
}

/// A seq as `index.place`: a group numbers a message by the entry that
/// enqueued it and its place among that entry's enqueues.
fn seq_of(seq: Seq) -> String {
    format!("{}.{}", seq >> 24, seq & 0xff_ffff)
}

/// The one connection of a harness.
pub(super) const CONN: ConnId = 7;

/// Its producer link.
pub(super) const PRODUCER: LinkId = LinkId {
    session: SessionId(0),
    handle: 0,
};

/// Its consumer link.
pub(super) const CONSUMER: LinkId = LinkId {
    session: SessionId(0),
    handle: 1,
};

/// The producer attaches to queue `queue`.
pub(super) fn attach_producer(queue: &str) -> Request {
    Request::AttachProducer {
        options: None,
        conn: CONN,
        link: PRODUCER,
        node: ProducerNode::Queue(queue.into()),
    }
}

/// The consumer attaches to queue `queue`.
pub(super) fn attach_consumer(queue: &str) -> Request {
    Request::AttachConsumer {
        options: None,
        conn: CONN,
        link: CONSUMER,
        node: ConsumerNode::Queue {
            name: queue.into(),
            browse: false,
        }
        .into(),
        container_id: "client".into(),
        filter: None,
    }
}

/// Link `link` subscribes to topic `topic` as subscription `name`, alone
/// on it (not shared).
pub(super) fn subscribe(link: LinkId, topic: &str, name: &str, durable: bool) -> Request {
    Request::AttachConsumer {
        options: None,
        conn: CONN,
        link,
        node: ConsumerNode::Topic {
            topic: topic.into(),
            subscription: Subscription {
                name: name.into(),
                durable,
                shared: false,
                global: false,
            },
        }
        .into(),
        container_id: "client".into(),
        filter: None,
    }
}

/// The consumer's credit becomes `credit`.
pub(super) fn credit(credit: u32) -> Request {
    Request::Credit {
        conn: CONN,
        link: CONSUMER,
        credit,
        drain: false,
    }
}

/// The producer sends delivery `id`, a durable message of `body`,
/// unsettled.
pub(super) fn publish(id: u32, body: &'static str) -> Request {
    let message = Message {
        sections: vec![
            Section::Header(Header {
                durable: true,
                ..Header::default()
            }),
            Section::Data(Bytes::from_static(body.as_bytes())),
        ],
    };
    Request::Publish {
        conn: CONN,
        delivery: DeliveryId { link: PRODUCER, id },
        message: message.encode(),
        settled: false,
        txn: None,
    }
}

/// The connection's coordinator link.
pub(super) const COORDINATOR: LinkId = LinkId {
    session: SessionId(0),
    handle: 2,
};

/// The coordinator receives delivery `id`, carrying `control`.
pub(super) fn coordinate(id: u32, control: ControlMessage) -> Request {
    Request::Coordinate {
        conn: CONN,
        delivery: DeliveryId {
            link: COORDINATOR,
            id,
        },
        control,
    }
}

/// The id of the `n`th transaction a core declares (from 0).
pub(super) fn txn_id(n: u64) -> Bytes {
    Bytes::copy_from_slice(&n.to_be_bytes())
}

/// The node cores and what they are built from are sans-IO: no runtime, no
/// channel, no clock, no I/O seam. Clippy's lists of disallowed methods
/// apply to the whole crate, so this check holds the line for these files.
#[test]
fn the_cores_do_no_io() {
    let sources = [
        ("node/core.rs", include_str!("core.rs")),
        ("node/core/apply.rs", include_str!("core/apply.rs")),
        (
            "node/core/transactions.rs",
            include_str!("core/transactions.rs"),
        ),
        ("node/clients.rs", include_str!("clients.rs")),
        ("node/state.rs", include_str!("state.rs")),
        ("node/proposer.rs", include_str!("proposer.rs")),
        ("node/batch.rs", include_str!("batch.rs")),
        ("node/placement.rs", include_str!("placement.rs")),
    ];
    let banned = [
        "tokio",
        "async ",
        ".await",
        "mpsc",
        "oneshot",
        "watch::",
        "Instant::now",
        "SystemTime",
        "crate::io",
    ];
    for (file, source) in sources {
        for word in banned {
            assert!(!source.contains(word), "{file} uses {word:?}");
        }
    }
}

/// A producer's window with the default configuration: the credit it is
/// granted first.
pub(super) fn window() -> u32 {
    crate::config::Config::default().limits.producer_credit
}

/// An arbitrary start for a harness's virtual time.
// The clock is read once, for an instant to count from, never again.
#[allow(clippy::disallowed_methods)]
pub(super) fn start_time() -> Now {
    Now {
        instant: std::time::Instant::now(),
        unix_ms: 1_700_000_000_000,
    }
}

/// `now` once `elapsed` has passed, on both clocks.
pub(super) fn later(now: Now, elapsed: std::time::Duration) -> Now {
    Now {
        instant: now.instant + elapsed,
        unix_ms: now.unix_ms + u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
    }
}

/// What a core told the harness's connection since last asked, in order:
/// `poll` is its `poll_to_connection`.
pub(super) fn said(mut poll: impl FnMut() -> Option<(ConnId, ToConnection)>) -> Vec<String> {
    let mut said = Vec::new();
    while let Some((conn, message)) = poll() {
        assert_eq!(conn, CONN, "a harness has one connection");
        said.push(describe(&message));
    }
    said
}
