//! The node with the log's disk failing under it: a full disk rejects what
//! it cannot log and recovers by itself; a failed fsync stops the node
//! without acknowledging anything it could not store.

use std::io::ErrorKind;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;
use crate::amqp::engine::SessionId;
use crate::amqp::types::{Header, Message, Section, condition};
use crate::config::Config;
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
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new(TokioIo);
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
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
            _dir: dir,
        };
        harness.attach_producer().await;
        harness
    }

    async fn attach_producer(&mut self) {
        self.node
            .send(Request::AttachProducer {
                conn: CONN,
                link: PRODUCER,
                node: ProducerNode::Queue("orders".into()),
            })
            .unwrap();
        assert!(matches!(
            self.next().await,
            ToConnection::ProducerAttached { result: Ok(()), .. }
        ));
        assert!(matches!(
            self.next().await,
            ToConnection::ProducerCredit { .. }
        ));
    }

    async fn next(&mut self) -> ToConnection {
        timeout(WAIT, self.inbox.recv()).await.unwrap().unwrap()
    }

    /// Publishes durable message `id` and returns its outcome.
    async fn publish(&mut self, id: u32) -> DeliveryState {
        let delivery = DeliveryId { link: PRODUCER, id };
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
        self.node
            .send(Request::Publish {
                conn: CONN,
                delivery,
                message,
                settled: false,
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
    let mut harness = Harness::start().await;
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

    // Consumers are still served from what is stored.
    harness
        .node
        .send(Request::AttachConsumer {
            conn: CONN,
            link: CONSUMER,
            node: ConsumerNode::Queue {
                name: "orders".into(),
                browse: false,
            },
            link_name: "c".into(),
            container_id: "test".into(),
        })
        .unwrap();
    harness
        .node
        .send(Request::Credit {
            conn: CONN,
            link: CONSUMER,
            credit: 10,
            drain: false,
        })
        .unwrap();
    loop {
        if let ToConnection::Deliver { seq, .. } = harness.next().await {
            assert_eq!(seq, 1, "the message stored before the disk filled");
            break;
        }
    }

    // Space returns: publishing resumes by itself.
    harness.io.faults.fail_writes(None);
    assert!(matches!(
        harness.publish(2).await,
        DeliveryState::Accepted(_)
    ));
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

#[tokio::test]
async fn an_accepting_settle_shares_the_next_fsync_or_is_written_a_moment_later() {
    let mut harness = Harness::start().await;
    for id in 0..2 {
        assert!(matches!(
            harness.publish(id).await,
            DeliveryState::Accepted(_)
        ));
    }
    harness
        .node
        .send(Request::AttachConsumer {
            conn: CONN,
            link: CONSUMER,
            node: ConsumerNode::Queue {
                name: "orders".into(),
                browse: false,
            },
            link_name: "c".into(),
            container_id: "test".into(),
        })
        .unwrap();
    harness
        .node
        .send(Request::Credit {
            conn: CONN,
            link: CONSUMER,
            credit: 2,
            drain: false,
        })
        .unwrap();
    let mut delivered = Vec::new();
    while delivered.len() < 2 {
        if let ToConnection::Deliver { seq, .. } = harness.next().await {
            delivered.push(seq);
        }
    }
    let settle = |seq| Request::Settle {
        queue: "orders".into(),
        seq,
        outcome: Outcome::Accepted,
    };

    // A settle followed by a publish: both are made durable by one fsync.
    let syncs = harness.io.faults.syncs();
    harness.node.send(settle(delivered[0])).unwrap();
    assert!(matches!(
        harness.publish(2).await,
        DeliveryState::Accepted(_)
    ));
    assert_eq!(harness.io.faults.syncs() - syncs, 1);

    // A settle alone is written all the same, once it has waited a moment.
    let syncs = harness.io.faults.syncs();
    harness.node.send(settle(delivered[1])).unwrap();
    timeout(WAIT, async {
        while harness.io.faults.syncs() == syncs {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
}
