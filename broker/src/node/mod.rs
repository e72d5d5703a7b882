//! The broker node: the one task that owns the queues, and the messages
//! connections exchange with it.
//!
//! Connections run their AMQP engines in their own tasks; everything that
//! touches shared state — queues, topics, durability — is a [`Request`] to
//! the node task, which answers with [`ToConnection`] messages. Funnelling
//! every change through one task gives one order of commands per group:
//! the order they are committed and applied in.
//!
//! There is one node core (`core`), a sans-IO state machine, over one of
//! two commit steps, each carried out by a thin driver task that owns the
//! channels, the clock and the timers: a single node's own log (`single`)
//! or Raft groups that every cluster node is a member of (`cluster`). The
//! core turns requests into commands of a group's queue state machine
//! (`state`), numbered in this node's session with the group (`origin`,
//! `proposer`) and proposed as batches (`batch`) to the group that
//! `placement` gives the queue; what the step commits is applied to the
//! group's state in commit order, by every member alike. `clients` is what
//! the core keeps about clients' links, and `testing` what its harnesses
//! share.
//!
//! Durability rule: a command is applied only once its entry is committed
//! (fsynced in the single node's log, or on a majority's disks), and a
//! producer's `accepted` is sent only after its message's enqueue was
//! applied. The one exception is a consumer's credit on a single node,
//! which is never logged: it overtakes enqueues and accepting settles that
//! wait for their fsync, since it cannot change what they do (see
//! `Core::credit`).

mod address;
mod batch;
mod clients;
mod cluster;
mod core;
mod disk_free;
mod error;
mod message;
mod node_properties;
mod origin;
mod placement;
mod proposer;
mod settings;
mod single;
mod state;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use address::{
    ConsumerNode, ProducerNode, Refusal, Subscription, TOPIC_PREFIX, consumer_node, producer_node,
};
pub use cluster::start as start_clustered;
pub use disk_free::{DISK_FREE_INTERVAL, watch_disk_free};
pub use error::NodeError;
pub use settings::{NodeSettings, PageStores};
pub use single::start;

pub use message::{Inspected, inspect, render};
pub use node_properties::QueueOptions;

use crate::amqp::engine::{DeliveryId, LinkId, SessionId};
use crate::amqp::types::{ControlMessage, DeliveryState};
use crate::queue::{ConsumerId, MessageFilter, Outcome, QueueInfo, QueueReport, Seq};
use crate::raft::group::{GroupsProbe, Progress};

/// A connection, as the node knows it.
pub type ConnId = u64;

/// The time, as a node core is told it with each input: an instant for its
/// timers, and the wall clock (Unix milliseconds) that the commands it makes
/// carry, so that replicas and replays compute the same expiries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// The monotonic clock.
    pub instant: std::time::Instant,
    /// The wall clock, in Unix milliseconds.
    pub unix_ms: u64,
}

impl Now {
    /// Reads both clocks from the I/O seam.
    pub fn read<I: crate::io::Io>(io: &I) -> Self {
        Self {
            instant: io.now(),
            unix_ms: io.unix_time_ms(),
        }
    }
}

/// The most requests a node's driver hands its core per wake-up.
const REQUESTS_PER_WAKE: usize = 256;

/// Each connection's channel, as a node task's driver keeps it: the core
/// only says what to tell which connection (`poll_to_connection`), and the
/// driver sends it.
#[derive(Debug, Default)]
struct Inboxes {
    inboxes: BTreeMap<ConnId, mpsc::UnboundedSender<ToConnection>>,
    /// Where to answer each operator's command the core is carrying out,
    /// by the number the core knows it by.
    answers: BTreeMap<u64, oneshot::Sender<Result<Managed, ManageError>>>,
    /// The number of the next operator's command.
    next_answer: u64,
}

impl Inboxes {
    /// A new connection and its channel.
    fn register(&mut self, conn: ConnId, inbox: mpsc::UnboundedSender<ToConnection>) {
        self.inboxes.insert(conn, inbox);
    }

    /// Forgets the channel of a connection that has ended.
    fn forget(&mut self, conn: ConnId) {
        self.inboxes.remove(&conn);
    }

    /// Hands a request to a driver's core, but for what the core cannot
    /// take: a connection's channel, kept here, and the queries, answered
    /// from the core.
    fn hand_over(&mut self, core: &mut core::Core, now: Now, request: Request) {
        match request {
            Request::Register { conn, inbox } => self.register(conn, inbox),
            // The asker may have given up waiting: nothing to do then.
            Request::QueueInfo { reply } => {
                let _ = reply.send(core.queue_info());
            }
            Request::ReplicaStatuses { reply } => {
                let _ = reply.send(core.replica_status());
            }
            Request::Report { reply } => {
                let _ = reply.send(core.report());
            }
            // Only the driver knows which connections are open.
            Request::Manage {
                command: Manage::Close { conn, .. },
                reply,
            } if !self.inboxes.contains_key(&conn) => {
                let _ = reply.send(Err(ManageError::NotFound("connection")));
            }
            Request::Manage { command, reply } => {
                let id = self.next_answer;
                self.next_answer += 1;
                self.answers.insert(id, reply);
                core.handle_manage(now, id, command);
            }
            // What the core tells a connection that has gone is dropped.
            Request::Disconnect { conn } => {
                core.handle_request(now, Request::Disconnect { conn });
                self.forget(conn);
            }
            request => core.handle_request(now, request),
        }
    }

    /// Hands the core `first` and the requests already waiting behind it,
    /// [`REQUESTS_PER_WAKE`] at the most, at one reading of the clocks: a
    /// burst shares one entry, and a flood of requests cannot hold back
    /// what the node's other inputs bring.
    fn hand_over_burst(
        &mut self,
        core: &mut core::Core,
        now: Now,
        first: Request,
        requests: &mut mpsc::UnboundedReceiver<Request>,
    ) {
        self.hand_over(core, now, first);
        for _ in 1..REQUESTS_PER_WAKE {
            // Empty, or closed: `recv` sees the close next.
            let Ok(request) = requests.try_recv() else {
                break;
            };
            self.hand_over(core, now, request);
        }
    }

    /// Sends `message` to `conn`; one that has gone no longer needs to
    /// know.
    fn send(&self, conn: ConnId, message: ToConnection) {
        if let Some(inbox) = self.inboxes.get(&conn) {
            let _ = inbox.send(message);
        }
    }

    /// Answers operator's command `id`; the asker may have given up.
    fn answer(&mut self, id: u64, answer: Result<Managed, ManageError>) {
        if let Some(reply) = self.answers.remove(&id) {
            let _ = reply.send(answer);
        }
    }

    /// Sends what the core has for connections and operators.
    fn deliver(&mut self, core: &mut core::Core) {
        while let Some((conn, message)) = core.poll_to_connection() {
            self.send(conn, message);
        }
        while let Some((id, answer)) = core.poll_answer() {
            self.answer(id, answer);
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => crate::io::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A cheap handle for sending requests to the node task.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    requests: mpsc::UnboundedSender<Request>,
    /// In a cluster, asks the Raft groups how far they have come, beside
    /// the node task: its core knows leaders and applied indexes, not
    /// terms or followers' progress.
    groups: Option<GroupsProbe>,
}

impl NodeHandle {
    /// Sends a request. Fails only if the node task has stopped, which ends
    /// the broker; callers then close their connection.
    pub fn send(&self, request: Request) -> Result<(), NodeStopped> {
        self.requests.send(request).map_err(|_| NodeStopped)
    }

    /// Every queue's counters (depth, unsettled, bytes, consumers), in name
    /// order, as the node has applied its commands so far.
    ///
    /// # Errors
    ///
    /// [`NodeStopped`] if the node task has stopped.
    pub async fn queue_info(&self) -> Result<Vec<(String, QueueInfo)>, NodeStopped> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::QueueInfo { reply })?;
        answer.await.map_err(|_| NodeStopped)
    }

    /// What the node knows of its queues and groups, for metrics and the
    /// management API: read only, so asking changes nothing it decides.
    ///
    /// # Errors
    ///
    /// [`NodeStopped`] if the node task has stopped.
    pub async fn report(&self) -> Result<NodeReport, NodeStopped> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Report { reply })?;
        answer.await.map_err(|_| NodeStopped)
    }

    /// Carries out an operator's `command` (the management API's write
    /// side): answered once it is applied (committed, in a cluster), or
    /// once it is known that it cannot be.
    ///
    /// # Errors
    ///
    /// [`NodeStopped`] if the node task has stopped.
    pub async fn manage(
        &self,
        command: Manage,
    ) -> Result<Result<Managed, ManageError>, NodeStopped> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Manage { command, reply })?;
        answer.await.map_err(|_| NodeStopped)
    }

    /// Every Raft group's [`Progress`] on this node, in group order; empty
    /// on a single node, or once the node has stopped.
    pub async fn raft_progress(&self) -> Vec<Progress> {
        match &self.groups {
            Some(groups) => groups.progress().await,
            None => Vec::new(),
        }
    }

    /// Every replicated group's [`ReplicaStatus`], in group order; empty on
    /// a single node. The simulator finds leaders, and checks that replicas
    /// converge, with it.
    ///
    /// # Errors
    ///
    /// [`NodeStopped`] if the node task has stopped.
    pub async fn replica_status(&self) -> Result<Vec<ReplicaStatus>, NodeStopped> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::ReplicaStatuses { reply })?;
        answer.await.map_err(|_| NodeStopped)
    }
}

/// One replicated group as a node sees it: its leader, how far the node has
/// applied it, and a digest of the state that gave. Two nodes that applied
/// a group as far must agree on the digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The group.
    pub group: u32,
    /// Its leader as this node knows it.
    pub leader: Option<u64>,
    /// The index of the last entry applied.
    pub applied: u64,
    /// A digest of the group's whole state (queues, consumers, what they
    /// hold, sessions).
    pub digest: u32,
    /// This node's member is rejoining after damage to its log, and does
    /// not vote until it has caught up.
    pub rejoining: bool,
}

/// What a node knows of its queues and groups ([`NodeHandle::report`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// This node's id (1 on a single node).
    pub node_id: u64,
    /// It is a member of a replicated cluster.
    pub clustered: bool,
    /// Every queue, in name order, as this node has applied its group.
    pub queues: Vec<GroupQueue>,
    /// Every group, in group order (on a single node, its one group,
    /// which it leads).
    pub groups: Vec<ReplicaStatus>,
    /// Snapshots this node has asked its groups to take since it started.
    pub snapshots: u64,
    /// Why producers get no credit now, if they get none.
    pub blocked: Option<Blocked>,
    /// The bytes its queues hold in memory (not paged), counted against
    /// the memory watermark.
    pub memory_held_bytes: u64,
    /// The bytes producers may have in flight (received and not yet
    /// answered, or expected from the credit they hold).
    pub in_flight_bytes: u64,
    /// The data directory's free space, as last read, if it can be told.
    pub disk_free_bytes: Option<u64>,
}

/// Why no producer gets credit, whatever its destination's room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// Queued messages hold `limits.memory_high_watermark_bytes`.
    Memory,
    /// The data directory has less than `limits.disk_free_min_bytes` free.
    Disk,
}

impl Blocked {
    /// The reason as a metric's label says it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Disk => "disk",
        }
    }
}

/// A queue and the group that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupQueue {
    /// The group.
    pub group: u32,
    /// The queue's counters.
    pub report: QueueReport,
}

/// What an operator asks of the node (the management API's write side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manage {
    /// Drop the queue's ready messages.
    Purge {
        /// The queue.
        queue: String,
    },
    /// Delete the queue: its messages are dropped, its consumers detached
    /// with `amqp:resource-deleted`.
    Delete {
        /// The queue.
        queue: String,
    },
    /// Move up to `max` ready messages, oldest first, from one queue to
    /// another of the same group, in one command: all of them or none.
    Move {
        /// The queue they leave.
        from: String,
        /// The queue they join.
        to: String,
        /// At most this many.
        max: u64,
    },
    /// Close a connection of this node with `amqp:connection:forced`.
    Close {
        /// The connection.
        conn: ConnId,
        /// Who asks, named in the close's description.
        operator: String,
    },
}

/// What a [`Manage`] command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Managed {
    /// This many ready messages were dropped.
    Purged(u64),
    /// The queue is gone.
    Deleted,
    /// This many messages were moved.
    Moved(u64),
    /// The connection is being closed.
    Closed,
}

/// Why a [`Manage`] command did nothing, or may have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManageError {
    /// No queue has this name (or no connection this id).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// A move within one queue.
    #[error("a queue cannot move messages to itself")]
    SameQueue,
    /// The queues of a move live in different replicated groups: a move
    /// is one command of one group, so that it happens whole or not at all.
    #[error(
        "the queues live in different replica groups ({from_group} and {to_group}): \
         a move is atomic only within one group"
    )]
    DifferentGroups {
        /// The group of the queue messages would leave.
        from_group: u32,
        /// The group of the queue they would join.
        to_group: u32,
    },
    /// The command was applied out of this node's sight (it caught up from
    /// a snapshot): whether it took effect is not known.
    #[error("whether the command took effect is unknown: this node caught up from a snapshot")]
    Unknown,
}

/// The node task has stopped (the broker is shutting down or failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the broker node has stopped")]
pub struct NodeStopped;

/// How to answer a consumer that waits for the broker's settle: the
/// delivery to settle on its connection, with the outcome it sent.
#[derive(Debug, Clone, PartialEq)]
pub struct SettleAnswer {
    /// The connection.
    pub conn: ConnId,
    /// The delivery.
    pub delivery: DeliveryId,
    /// The outcome, as the client sent it.
    pub state: DeliveryState,
}

/// What a connection asks of the node.
#[derive(Debug)]
pub enum Request {
    /// A new connection, and where to send its [`ToConnection`] messages.
    Register {
        /// The connection.
        conn: ConnId,
        /// Its inbox.
        inbox: mpsc::UnboundedSender<ToConnection>,
    },
    /// The connection's client authenticated as `user` (its SASL identity):
    /// what it may do from now on, and what it holds, is the user's.
    Authenticated {
        /// The connection.
        conn: ConnId,
        /// Who the client is.
        user: String,
    },
    /// A session of the connection began: counted against its user's
    /// `max_sessions`.
    SessionBegun {
        /// The connection.
        conn: ConnId,
        /// The session.
        session: SessionId,
    },
    /// A session of the connection ended.
    SessionEnded {
        /// The connection.
        conn: ConnId,
        /// The session.
        session: SessionId,
    },
    /// A client attached a receiving link: make it a consumer of `node`.
    AttachConsumer {
        /// The connection.
        conn: ConnId,
        /// The link.
        link: LinkId,
        /// What its source names (with the link's name, a subscription).
        node: Box<ConsumerNode>,
        /// The source's filters the broker applies, if any (boxed: every
        /// request takes the room of the largest, and publishes go by most).
        filter: Option<Box<MessageFilter>>,
        /// What its source asks of a queue the attach creates.
        options: Option<Box<QueueOptions>>,
        /// The client's container id (scopes a subscription's name).
        container_id: String,
    },
    /// A client attached a sending link towards `node`.
    AttachProducer {
        /// The connection.
        conn: ConnId,
        /// The link.
        link: LinkId,
        /// What its target names.
        node: ProducerNode,
        /// What its target asks of a queue the attach creates.
        options: Option<Box<QueueOptions>>,
    },
    /// A message arrived on a producer link.
    Publish {
        /// The connection.
        conn: ConnId,
        /// The delivery (its link is the producer).
        delivery: DeliveryId,
        /// The message bytes.
        message: Bytes,
        /// True if the client sent it settled: no outcome is expected.
        settled: bool,
        /// The transaction it is published in: enqueued only when that
        /// commits.
        txn: Option<Bytes>,
    },
    /// A message on a link to the transaction coordinator: a `declare` or
    /// a `discharge`.
    Coordinate {
        /// The connection.
        conn: ConnId,
        /// The delivery that carried it, which the answer settles.
        delivery: DeliveryId,
        /// What it asks.
        control: ControlMessage,
    },
    /// A consumer's link credit changed.
    Credit {
        /// The connection.
        conn: ConnId,
        /// The consumer's link.
        link: LinkId,
        /// Deliveries it may receive now.
        credit: u32,
        /// Use the credit up, or give it back.
        drain: bool,
    },
    /// A consumer settled a delivery.
    Settle {
        /// The consumer the message was delivered to. A settle whose
        /// consumer has detached is stale (the detach already returned what
        /// it held) and is dropped: the message may be someone else's now.
        consumer: ConsumerId,
        /// Which queue the message is in.
        queue: String,
        /// Which message.
        seq: Seq,
        /// What the consumer concluded.
        outcome: Outcome,
        /// The transaction the outcome belongs to: it takes effect when
        /// that commits.
        txn: Option<Bytes>,
        /// The client sent the outcome unsettled (rcv-settle-mode second)
        /// and waits for the broker's settle, which says the outcome has
        /// taken effect: the node answers it once the settle is applied
        /// (durable), never before, and not at all if it is dropped.
        answer: Option<SettleAnswer>,
    },
    /// A message was sent to a consumer whose link acquires in transaction
    /// `txn` (AMQP 1.0 §4.4.3): if that rolls back, the message goes back
    /// to its queue.
    AcquiredInTransaction {
        /// The consumer it was sent to.
        consumer: ConsumerId,
        /// Which queue the message is in.
        queue: String,
        /// Which message.
        seq: Seq,
        /// The transaction.
        txn: Bytes,
    },
    /// A link detached.
    Detach {
        /// The connection.
        conn: ConnId,
        /// The link.
        link: LinkId,
        /// The link was closed, not only detached: a durable subscription
        /// ends with it.
        closed: bool,
    },
    /// The connection ended: every link of it is gone.
    Disconnect {
        /// The connection.
        conn: ConnId,
    },
    /// An operator's command.
    Manage {
        /// What to do.
        command: Manage,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Managed, ManageError>>,
    },
    /// Report each replicated group's [`ReplicaStatus`] (none on a single
    /// node).
    ReplicaStatuses {
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<ReplicaStatus>>,
    },
    /// Report the node's [`NodeReport`].
    Report {
        /// Where the answer goes.
        reply: oneshot::Sender<NodeReport>,
    },
    /// The data directory's free space, as just read (`None`: the file
    /// system cannot tell).
    DiskFree {
        /// The bytes free.
        free_bytes: Option<u64>,
    },
    /// Report every queue's counters, in name order.
    QueueInfo {
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<(String, QueueInfo)>>,
    },
}

/// What the node tells a connection.
#[derive(Debug)]
pub enum ToConnection {
    /// The answer to [`Request::AttachConsumer`]: the address the consumer
    /// reads from (a dynamic node's name is chosen here), or a refusal.
    ConsumerAttached {
        /// The link.
        link: LinkId,
        /// The consumer the link now is, and the resolved address; or why
        /// not.
        result: Result<(ConsumerId, String), Refusal>,
    },
    /// The answer to [`Request::AttachProducer`].
    ProducerAttached {
        /// The link.
        link: LinkId,
        /// The address of the node the broker made for a dynamic target,
        /// if it made one; or why the link is refused.
        result: Result<Option<String>, Refusal>,
    },
    /// Grant a producer this much link credit, counted from the messages
    /// the node has had from it. It never lowers the producer's limit
    /// (messages had plus credit).
    ProducerCredit {
        /// The producer's link.
        link: LinkId,
        /// The credit to grant.
        credit: u32,
    },
    /// Send a message to a consumer.
    Deliver {
        /// The consumer's link.
        link: LinkId,
        /// The consumer: what a settle of this message names.
        consumer: ConsumerId,
        /// The queue it comes from.
        queue: String,
        /// The message in that queue.
        seq: Seq,
        /// The message bytes as the consumer receives them.
        message: Bytes,
        /// True if sent settled (browsing): no outcome is expected.
        settled: bool,
    },
    /// A consumer's drain is done: give its remaining credit back.
    DrainComplete {
        /// The consumer's link.
        link: LinkId,
    },
    /// The outcome of a publish: send it to the producer.
    Outcome {
        /// The producer's delivery.
        delivery: DeliveryId,
        /// `accepted`, or `rejected` with why; or a coordinator's answer.
        state: DeliveryState,
    },
    /// Close the connection: its user holds `max_connections` already.
    CloseConnection {
        /// Why.
        refusal: Refusal,
    },
    /// End a session: its user holds `max_sessions` already.
    EndSession {
        /// The session.
        session: SessionId,
        /// Why.
        refusal: Refusal,
    },
    /// Close a link (its queue was deleted).
    CloseLink {
        /// The link.
        link: LinkId,
        /// Why.
        refusal: Refusal,
    },
}
