//! The single node on its real log: with the disk failing under it (a
//! full disk rejects what it cannot log and recovers by itself; a failed
//! fsync stops the node without acknowledging anything it could not
//! store), and with a data directory of another format.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;
use crate::amqp::engine::SessionId;
use crate::amqp::types::{Header, Message, Section, condition};
use crate::config::{Config, QueueOverride};
use crate::io::faulty::FaultyIo;
use crate::io::{Io, TokioIo};

const WAIT: Duration = Duration::from_secs(10);
const CONN: ConnId = 1;
const PRODUCER: LinkId = LinkId {
    session: SessionId(0),
    handle: 0,
};
const CONSUMER: LinkId = LinkId {
    session: SessionId(0),
    handle: 1,
};

struct Harness {
    io: FaultyIo<TokioIo>,
    node: NodeHandle,
    task: tokio::task::JoinHandle<Result<(), NodeError>>,
    inbox: mpsc::UnboundedReceiver<ToConnection>,
    /// The data directory, if the harness made it.
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    /// A node with `config`, in a fresh data directory.
    async fn start_with(config: Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..config
        };
        let mut harness = Self::start_in(config).await;
        harness._dir = Some(dir);
        harness
    }

    /// A node with `config`, in its data directory as it is.
    async fn start_in(config: Config) -> Self {
        let io = FaultyIo::new(TokioIo);
        let (node, task) = start(io.clone(), NodeSettings::new(config)).await.unwrap();
        let task = io.spawn(task);
        let (sender, inbox) = mpsc::unbounded_channel();
        node.send(Request::Register {
            conn: CONN,
            inbox: sender,
        })
        .unwrap();
        let mut harness = Self {
            io,
            node,
            task,
            inbox,
            _dir: None,
        };
        harness.attach_producer().await;
        harness
    }

    /// Stops the node: its handle goes, and its task finishes what was
    /// proposed.
    async fn stop(self) {
        drop(self.node);
        let stopped = timeout(WAIT, self.task).await.unwrap().unwrap();
        assert!(stopped.is_ok(), "{stopped:?}");
    }

    /// A node that accepted message 0, then, its disk full, refused
    /// message 1.
    async fn with_a_full_disk() -> Self {
        let mut harness = Self::start().await;
        assert!(matches!(
            harness.publish(0).await,
            DeliveryState::Accepted(_)
        ));
        harness.io.faults.fail_writes(Some(ErrorKind::StorageFull));
        let refused = harness.publish(1).await;
        assert_eq!(
            rejection(&refused),
            Some(condition::RESOURCE_LIMIT_EXCEEDED)
        );
        harness
    }

    async fn attach_producer(&mut self) {
        self.node
            .send(Request::AttachProducer {
                options: None,
                conn: CONN,
                link: PRODUCER,
                node: ProducerNode::Queue("orders".into()),
            })
            .unwrap();
        assert!(matches!(
            self.next().await,
            ToConnection::ProducerAttached {
                result: Ok(None),
                ..
            }
        ));
        assert!(matches!(
            self.next().await,
            ToConnection::ProducerCredit { .. }
        ));
    }

    async fn next(&mut self) -> ToConnection {
        timeout(WAIT, self.inbox.recv()).await.unwrap().unwrap()
    }

    /// Attaches the consumer link to `orders` and grants it `credit`.
    fn attach_consumer(&mut self, credit: u32) {
        self.node
            .send(Request::AttachConsumer {
                options: None,
                conn: CONN,
                link: CONSUMER,
                node: ConsumerNode::Queue {
                    name: "orders".into(),
                    browse: false,
                }
                .into(),
                container_id: "test".into(),
                filter: None,
            })
            .unwrap();
        self.node
            .send(Request::Credit {
                conn: CONN,
                link: CONSUMER,
                credit,
                drain: false,
            })
            .unwrap();
    }

    /// The next delivery: to which consumer, and which message.
    async fn next_delivery(&mut self) -> (ConsumerId, Seq) {
        let (consumer, seq, _) = self.next_message().await;
        (consumer, seq)
    }

    /// The next delivery, with the message's bytes.
    async fn next_message(&mut self) -> (ConsumerId, Seq, Bytes) {
        loop {
            if let ToConnection::Deliver {
                consumer,
                seq,
                message,
                ..
            } = self.next().await
            {
                return (consumer, seq, message);
            }
        }
    }

    /// Settles `seq`, delivered to `consumer`, with `outcome`.
    fn settle(&self, consumer: ConsumerId, seq: Seq, outcome: Outcome) {
        self.node
            .send(Request::Settle {
                consumer,
                queue: "orders".into(),
                seq,
                outcome,
                txn: None,
                answer: None,
            })
            .unwrap();
    }

    /// Publishes durable message `id` and returns its outcome.
    async fn publish(&mut self, id: u32) -> DeliveryState {
        self.publish_body(id, id.to_be_bytes().to_vec()).await
    }

    /// Publishes durable message `id` with `body` and returns its outcome.
    async fn publish_body(&mut self, id: u32, body: Vec<u8>) -> DeliveryState {
        let delivery = DeliveryId { link: PRODUCER, id };
        let message = Message {
            sections: vec![
                Section::Header(Header {
                    durable: true,
                    ..Header::default()
                }),
                Section::Data(Bytes::from(body)),
            ],
        }
        .encode();
        self.node
            .send(Request::Publish {
                conn: CONN,
                delivery,
                message,
                settled: false,
                txn: None,
            })
            .unwrap();
        loop {
            if let ToConnection::Outcome { delivery: d, state } = self.next().await {
                assert_eq!(d, delivery);
                return state;
            }
        }
    }
}

fn rejection(state: &DeliveryState) -> Option<&str> {
    match state {
        DeliveryState::Rejected(r) => r.error.as_ref().map(|e| e.condition.as_str()),
        _ => None,
    }
}

#[tokio::test]
async fn a_full_disk_rejects_new_messages_keeps_serving_consumers_and_recovers() {
    let mut harness = Harness::with_a_full_disk().await;

    // Consumers are still served from what is stored.
    harness.attach_consumer(10);
    let (_, seq) = harness.next_delivery().await;
    // Entry 1 declared the queue; entry 2 enqueued message 0.
    assert_eq!(seq, 2 << 24, "the message stored before the disk filled");

    // Space returns: publishing resumes by itself, once a snapshot holds
    // what the full disk kept from the log (the consumer's attach, applied
    // in memory only); until then, messages are refused.
    harness.io.faults.fail_writes(None);
    for id in 2.. {
        let outcome = harness.publish(id).await;
        if matches!(outcome, DeliveryState::Accepted(_)) {
            break;
        }
        assert_eq!(
            rejection(&outcome),
            Some(condition::RESOURCE_LIMIT_EXCEEDED)
        );
        assert!(id < 200, "still refused after {id} tries");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failed_fsync_stops_the_node_without_acknowledging() {
    let mut harness = Harness::start().await;
    harness.io.faults.fail_next_sync(ErrorKind::Other);
    let delivery = DeliveryId {
        link: PRODUCER,
        id: 7,
    };
    harness
        .node
        .send(Request::Publish {
            conn: CONN,
            delivery,
            message: Message::data(Bytes::from_static(b"x")).encode(),
            settled: false,
            txn: None,
        })
        .unwrap();
    let stopped = timeout(WAIT, &mut harness.task).await.unwrap().unwrap();
    assert!(
        matches!(
            stopped,
            Err(NodeError::Log(crate::log::LogError::Io { .. }))
        ),
        "{stopped:?}"
    );
    while let Ok(message) = harness.inbox.try_recv() {
        assert!(
            !matches!(message, ToConnection::Outcome { .. }),
            "an outcome after a failed fsync: {message:?}"
        );
    }
}

/// Once a full disk put the node's state ahead of its log, nothing is
/// appended until a snapshot holds that state; a snapshot that the failing
/// disk refuses stops the node, as a failed append does, rather than
/// leaving it to refuse every message while the disk stays failed (found by
/// the simulator on seed 0x7ca, with 2 ms ticks: the node refused messages
/// for 7 s, its log failed, and stopped only when an append was tried).
#[tokio::test]
async fn a_snapshot_refused_by_a_failing_disk_stops_the_node() {
    let mut harness = Harness::with_a_full_disk().await;
    // The consumer's attach is applied in memory only.
    harness.attach_consumer(10);
    harness.next_delivery().await;
    harness.io.faults.fail_writes(Some(ErrorKind::Other));
    let stopped = timeout(WAIT, &mut harness.task).await.unwrap().unwrap();
    assert!(
        matches!(
            stopped,
            Err(NodeError::Log(crate::log::LogError::Io { .. }))
        ),
        "{stopped:?}"
    );
}

#[tokio::test]
async fn an_accepting_settle_shares_the_next_fsync_or_is_written_a_moment_later() {
    let mut harness = Harness::start().await;
    for id in 0..2 {
        assert!(matches!(
            harness.publish(id).await,
            DeliveryState::Accepted(_)
        ));
    }
    harness.attach_consumer(2);
    let first = harness.next_delivery().await;
    let second = harness.next_delivery().await;

    // A settle followed by a publish: both are made durable by one fsync.
    let syncs = harness.io.faults.syncs();
    harness.settle(first.0, first.1, Outcome::Accepted);
    assert!(matches!(
        harness.publish(2).await,
        DeliveryState::Accepted(_)
    ));
    assert_eq!(harness.io.faults.syncs() - syncs, 1);

    // A settle alone is written all the same, once it has waited a moment.
    let syncs = harness.io.faults.syncs();
    harness.settle(second.0, second.1, Outcome::Accepted);
    timeout(WAIT, async {
        while harness.io.faults.syncs() == syncs {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
}

/// A settle that reaches the node after its consumer detached is stale: the
/// detach already returned the message, which may be another consumer's by
/// now. It must not release that consumer's delivery.
#[tokio::test]
async fn a_settle_from_a_detached_consumer_leaves_the_message_alone() {
    let mut harness = Harness::start().await;
    assert!(matches!(
        harness.publish(0).await,
        DeliveryState::Accepted(_)
    ));
    harness.attach_consumer(1);
    let (gone, seq) = harness.next_delivery().await;
    harness
        .node
        .send(Request::Detach {
            conn: CONN,
            link: CONSUMER,
            closed: true,
        })
        .unwrap();
    // A new consumer on the same link handle gets the returned message.
    harness.attach_consumer(1);
    let (holder, again) = harness.next_delivery().await;
    assert_ne!(holder, gone);
    assert_eq!(again, seq);

    harness.settle(gone, seq, Outcome::Released);
    // Applied after whatever the stale settle could have done.
    assert!(matches!(
        harness.publish(1).await,
        DeliveryState::Accepted(_)
    ));
    let queues = harness.node.queue_info().await.unwrap();
    let (_, orders) = queues.iter().find(|(name, _)| name == "orders").unwrap();
    assert_eq!((orders.depth, orders.unsettled), (1, 1), "{orders:?}");
}

/// A producer's messages count against its window until they are answered,
/// so credit comes back with the outcomes, not as soon as messages arrive:
/// that bounds how long a message waits behind the others under load.
#[tokio::test]
async fn producer_credit_returns_only_as_messages_are_answered() {
    let mut config = Config::default();
    config.limits.producer_credit = 2;
    let mut harness = Harness::start_with(config).await;
    for id in 0..2 {
        let message = Message::data(Bytes::from(vec![id])).encode();
        harness
            .node
            .send(Request::Publish {
                conn: CONN,
                delivery: DeliveryId {
                    link: PRODUCER,
                    id: u32::from(id),
                },
                message,
                settled: false,
                txn: None,
            })
            .unwrap();
    }
    let mut outcomes = 0;
    while outcomes < 2 {
        match harness.next().await {
            ToConnection::Outcome { .. } => outcomes += 1,
            ToConnection::ProducerCredit { credit, .. } => {
                assert!(outcomes > 0, "credit {credit} granted before any answer");
                assert!(credit <= 2);
            }
            _ => {}
        }
    }
    // Both answered: the whole window is free again.
    loop {
        if let ToConnection::ProducerCredit { credit, .. } = harness.next().await {
            assert_eq!(credit, 2);
            break;
        }
    }
}

/// Each producer's limit as the broker advertised it, in messages since its
/// attach: what it had sent when a grant was made plus the credit granted.
#[derive(Default)]
struct Limits {
    sent: BTreeMap<LinkId, u32>,
    limit: BTreeMap<LinkId, u32>,
}

impl Limits {
    /// Counts one more message sent on `link`.
    fn sent(&mut self, link: LinkId) {
        *self.sent.entry(link).or_default() += 1;
    }

    /// Checks that a grant never lowers its producer's limit.
    fn see(&mut self, message: &ToConnection) {
        let ToConnection::ProducerCredit { link, credit } = message else {
            return;
        };
        let limit = self.sent.get(link).copied().unwrap_or(0) + credit;
        if let Some(before) = self.limit.insert(*link, limit) {
            assert!(
                limit >= before,
                "{link:?}: credit {credit} lowered the limit from {before} to {limit}"
            );
        }
    }
}

impl Harness {
    /// Attaches a producer on `link` to `orders`, checking its first credit.
    async fn attach_producer_on(&mut self, link: LinkId, limits: &mut Limits) {
        self.node
            .send(Request::AttachProducer {
                options: None,
                conn: CONN,
                link,
                node: ProducerNode::Queue("orders".into()),
            })
            .unwrap();
        assert!(matches!(
            self.next().await,
            ToConnection::ProducerAttached {
                result: Ok(None),
                ..
            }
        ));
        let credit = self.next().await;
        assert!(matches!(credit, ToConnection::ProducerCredit { .. }));
        limits.see(&credit);
    }

    /// Takes what the node has said so far, checking its grants. The node
    /// says everything one step makes before the test runs again (the
    /// runtime has one thread), so a grant is counted against the messages
    /// sent before it.
    fn drain_checking(&mut self, limits: &mut Limits) {
        while let Ok(message) = self.inbox.try_recv() {
            limits.see(&message);
        }
    }

    /// Publishes durable message `id` on `link`, checking every grant until
    /// its outcome.
    async fn publish_checking(
        &mut self,
        link: LinkId,
        id: u32,
        limits: &mut Limits,
    ) -> DeliveryState {
        self.drain_checking(limits);
        let delivery = DeliveryId { link, id };
        let message = Message {
            sections: vec![
                Section::Header(Header {
                    durable: true,
                    ..Header::default()
                }),
                Section::Data(Bytes::from(id.to_be_bytes().to_vec())),
            ],
        }
        .encode();
        limits.sent(link);
        self.node
            .send(Request::Publish {
                conn: CONN,
                delivery,
                message,
                settled: false,
                txn: None,
            })
            .unwrap();
        loop {
            let message = self.next().await;
            limits.see(&message);
            if let ToConnection::Outcome { delivery: d, state } = message {
                assert_eq!(d, delivery);
                self.drain_checking(limits);
                return state;
            }
        }
    }
}

/// A flow sets link-credit afresh at the receiver's delivery-count, so a
/// grant below what a producer still holds takes back credit it may be using
/// already, and its transfers in flight then break the link. When its
/// destination's room shrinks under it, a producer keeps what it holds.
#[tokio::test]
async fn producer_credit_never_lowers_a_producers_limit() {
    let mut config = Config::default();
    config.limits.producer_credit = 4;
    config.queue_overrides.push(QueueOverride {
        name: "orders".into(),
        max_length: Some(4),
        ..QueueOverride::default()
    });
    let mut harness = Harness::start_with(config).await;
    let mut limits = Limits::default();
    let slow = LinkId {
        session: SessionId(0),
        handle: 2,
    };
    let fast = LinkId {
        session: SessionId(0),
        handle: 3,
    };
    // Both are granted the whole room of the empty queue.
    harness.attach_producer_on(slow, &mut limits).await;
    harness.attach_producer_on(fast, &mut limits).await;

    // `fast` fills the queue; `slow` is refused for want of room twice,
    // and is parked holding 2 credits.
    for id in 0..4 {
        let state = harness.publish_checking(fast, id, &mut limits).await;
        assert!(matches!(state, DeliveryState::Accepted(_)), "{state:?}");
    }
    for id in 0..2 {
        let state = harness.publish_checking(slow, id, &mut limits).await;
        assert_eq!(rejection(&state), Some(condition::RESOURCE_LIMIT_EXCEEDED));
    }

    // A consumer frees one place: the parked producers are offered it.
    harness.attach_consumer(1);
    let (consumer, seq) = loop {
        let message = harness.next().await;
        limits.see(&message);
        if let ToConnection::Deliver { consumer, seq, .. } = message {
            break (consumer, seq);
        }
    };
    harness.settle(consumer, seq, Outcome::Accepted);
    loop {
        let message = harness.next().await;
        limits.see(&message);
        if matches!(message, ToConnection::ProducerCredit { link, .. } if link == fast) {
            break;
        }
    }
    harness.drain_checking(&mut limits);
}

/// Starts a node on a data directory prepared by `prepare`; its error.
async fn start_error(prepare: impl AsyncFnOnce(&std::path::Path)) -> NodeError {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path()).await;
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    match start(TokioIo, NodeSettings::new(config)).await {
        Ok(_) => panic!("the node started"),
        Err(error) => error,
    }
}

/// The single node's first format wrote a record per command and named no
/// format: such a log would be misread, so it is refused, saying why.
#[tokio::test]
async fn a_log_of_the_first_format_is_refused() {
    let error = start_error(async |dir| {
        let log = dir.join("log");
        TokioIo.create_dir_all(&log).await.unwrap();
        let segment = log.join("00000000000000000001.seg");
        crate::io::replace_file(&TokioIo, &segment, b"SLUICSEG")
            .await
            .unwrap();
    })
    .await;
    assert!(matches!(error, NodeError::Format { .. }), "{error}");
    let said = error.to_string();
    assert!(
        said.contains("in format \"sluice single-node log 1\""),
        "{said}"
    );
    assert!(
        said.contains("reads only \"sluice single-node log 4\""),
        "{said}"
    );
}

#[tokio::test]
async fn a_log_of_an_unknown_format_is_refused() {
    let error = start_error(async |dir| {
        let format = dir.join("format");
        crate::io::replace_file(&TokioIo, &format, b"sluice single-node log 9\n")
            .await
            .unwrap();
    })
    .await;
    assert!(
        error.to_string().contains("\"sluice single-node log 9\""),
        "{error}"
    );
}

/// A consumer that is away lets a queue grow past memory: its messages
/// are paged to `pages/` rather than held (and rather than stopping the
/// producer), snapshots name them there, and a restart finds them all, in
/// order, without their bodies ever being in memory at once.
#[tokio::test]
async fn a_deep_queue_pages_to_disk_and_comes_back_whole_after_a_restart() {
    const MESSAGES: u32 = 1_500;
    const BODY: usize = 1_024;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    // A group pages past half of it; a queue past 64 KiB.
    config.limits.memory_high_watermark_bytes = 256 << 10;
    config.storage.snapshot_every_records = 400;
    let body = |id: u32| {
        let mut body = vec![0; BODY];
        body[..4].copy_from_slice(&id.to_be_bytes());
        body
    };

    let mut harness = Harness::start_in(config.clone()).await;
    for id in 0..MESSAGES {
        let outcome = harness.publish_body(id, body(id)).await;
        assert!(
            matches!(outcome, DeliveryState::Accepted(_)),
            "{id}: {outcome:?}"
        );
    }
    let paged = paged_bytes(&dir.path().join("pages"));
    let published = u64::from(MESSAGES) * BODY as u64;
    assert!(
        paged > published / 2,
        "{paged} of {published} bytes paged to disk"
    );
    harness.stop().await;

    let mut harness = Harness::start_in(config).await;
    harness.attach_consumer(MESSAGES);
    for id in 0..MESSAGES {
        let (consumer, seq, message) = harness.next_message().await;
        assert!(message.ends_with(&body(id)), "message {id} out of order");
        harness.settle(consumer, seq, Outcome::Accepted);
    }
    harness.stop().await;
}

/// The bytes of the files under `dir`.
#[allow(clippy::disallowed_methods)] // Counts what the seam wrote.
fn paged_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum()
}
