//! The history: what the workload's clients did and saw, each with the
//! simulated time it happened at. The checker reads only this.
//!
//! Clients see the broker only through AMQP, so the history is the broker's
//! behaviour as a client can observe it — exactly what its guarantees are
//! stated in terms of.

use std::fmt;
use std::time::Duration;

use sluice::node::ReplicaStatus;

use crate::nemesis::FaultEvent;

/// A broker host: `None` for the single-node world's only broker, or a
/// cluster node's id.
pub type NodeId = Option<u64>;

/// The host name of broker `node`: `broker`, or `node1`, `node2`, …
pub fn broker_name(node: NodeId) -> String {
    match node {
        None => "broker".to_owned(),
        Some(id) => format!("node{id}"),
    }
}

/// A message's identity, carried in its body: who sent it and its number in
/// that producer's stream. Resends carry the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId {
    /// The producer's number.
    pub producer: u32,
    /// The producer's sequence number, from 0.
    pub seq: u64,
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}#{}", self.producer, self.seq)
    }
}

/// How a producer sent a message: what it asked the broker to promise.
/// Resends of a message keep its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MessageKind {
    /// The header's `durable`: a transient message may be lost when its
    /// broker restarts, even once accepted.
    pub durable: bool,
    /// Sent settled: the producer learns no outcome, and the message may
    /// be lost on the way.
    pub presettled: bool,
    /// The header's `ttl`: the broker must not deliver it once this long
    /// has passed since it took it, and may drop it then.
    pub ttl: Option<Duration>,
    /// Carries a `message-id` (its [`MsgId`]): the broker de-duplicates a
    /// durable one, so its resends make no second copy.
    pub message_id: bool,
    /// `x-opt-delivery-delay`: the broker must not deliver it sooner than
    /// this after it took it.
    pub delay: Option<Duration>,
    /// Sent in its producer's transaction of this number (see
    /// [`TxnId`]): it counts only if that commits, and is never resent.
    pub txn: Option<u32>,
    /// The value of its last-value key (application property
    /// [`crate::workload::LAST_VALUE_KEY`]), sent to the last-value queue.
    pub key: Option<u8>,
    /// Its `header.priority`, sent to the priority queue.
    pub priority: Option<u8>,
    /// Its group (`properties.group-id`, see
    /// [`crate::queue_types::group_id`]), sent to the grouped queue.
    pub group: Option<u8>,
}

impl MessageKind {
    /// What the workload sent before it drew kinds: durable, unsettled,
    /// no TTL, no `message-id`.
    pub const PLAIN: MessageKind = MessageKind {
        durable: true,
        presettled: false,
        ttl: None,
        message_id: false,
        delay: None,
        txn: None,
        key: None,
        priority: None,
        group: None,
    };

    /// Whether the broker de-duplicates it: a durable message with a
    /// `message-id` (transient ones are not remembered).
    pub fn deduplicated(self) -> bool {
        self.message_id && self.durable
    }
}

/// Only what differs from [`MessageKind::PLAIN`], each word after a space.
impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.durable {
            f.write_str(" transient")?;
        }
        if self.presettled {
            f.write_str(" presettled")?;
        }
        if let Some(ttl) = self.ttl {
            write!(f, " ttl {}ms", ttl.as_millis())?;
        }
        if self.message_id {
            f.write_str(" id")?;
        }
        if let Some(delay) = self.delay {
            write!(f, " delay {}ms", delay.as_millis())?;
        }
        if let Some(txn) = self.txn {
            write!(f, " txn {txn}")?;
        }
        if let Some(key) = self.key {
            write!(f, " key {key}")?;
        }
        if let Some(priority) = self.priority {
            write!(f, " priority {priority}")?;
        }
        if let Some(group) = self.group {
            write!(f, " group {group}")?;
        }
        Ok(())
    }
}

/// A transaction: its producer, and its number in that producer's
/// transactions, from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId {
    /// The producer's number.
    pub producer: u32,
    /// The producer's transaction number.
    pub n: u32,
}

impl TxnId {
    /// The transaction `msg` was sent in, if it was sent as `kind` in one.
    pub fn of(msg: MsgId, kind: MessageKind) -> Option<TxnId> {
        kind.txn.map(|n| TxnId {
            producer: msg.producer,
            n,
        })
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}/txn{}", self.producer, self.n)
    }
}

/// A delivery outcome, as a producer received it or a consumer chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Processed: the message is the receiver's now.
    Accepted,
    /// Refused for good.
    Rejected,
    /// Not processed; may be delivered again.
    Released,
    /// Not processed, counted as a failed delivery; may be delivered again.
    Modified,
    /// Settled by the broker without an outcome (producer side only).
    None,
}

impl Outcome {
    /// Whether a consumer settling with this outcome consumes the message
    /// (it must not be delivered again).
    pub fn consumes(self) -> bool {
        matches!(self, Outcome::Accepted | Outcome::Rejected)
    }
}

/// Which client: each kind is numbered separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientId {
    /// A producer, to a queue or to the topic.
    Producer(u32),
    /// A consumer of a queue.
    Consumer(u32),
    /// A durable subscriber to the topic.
    Subscriber(u32),
    /// The consumer of the dead-letter queue.
    DeadLetters(u32),
    /// A browser of a queue: it sees messages without taking them.
    Browser(u32),
    /// A requester: sends requests through the anonymous relay and reads
    /// the replies on a temporary queue the broker names.
    Requester(u32),
    /// A responder: consumes requests and answers each through the
    /// anonymous relay to its `reply-to`.
    Responder(u32),
    /// An intruder: tries what its user may not, and logs in with a wrong
    /// password (see [`crate::intruder`]).
    Intruder(u32),
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientId::Producer(n) => write!(f, "producer{n}"),
            ClientId::Consumer(n) => write!(f, "consumer{n}"),
            ClientId::Subscriber(n) => write!(f, "subscriber{n}"),
            ClientId::DeadLetters(n) => write!(f, "deadletters{n}"),
            ClientId::Browser(n) => write!(f, "browser{n}"),
            ClientId::Requester(n) => write!(f, "requester{n}"),
            ClientId::Responder(n) => write!(f, "responder{n}"),
            ClientId::Intruder(n) => write!(f, "intruder{n}"),
        }
    }
}

/// A connection: its client, and the client's count of connections so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnId {
    /// The client.
    pub client: ClientId,
    /// 1 for the client's first connection, 2 for the next, …
    pub n: u32,
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/c{}", self.client, self.n)
    }
}

/// Something a client did or saw (or the broker host starting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A broker host's software started (first start or restart).
    BrokerStart {
        /// Which broker.
        node: NodeId,
    },
    /// The nemesis injected, ended or healed a fault, or a broker flipped
    /// a bit of its log at rest.
    Fault(FaultEvent),
    /// A broker's server returned (e.g. after a failed fsync).
    BrokerStopped {
        /// Which broker.
        node: NodeId,
        /// What `server::run` returned.
        result: String,
    },
    /// A client connected and attached its link.
    Connected {
        /// The connection.
        conn: ConnId,
        /// The address the link is attached to.
        address: String,
        /// The broker it connected to.
        node: NodeId,
    },
    /// A connection was lost or refused (not a close the client asked for).
    ConnectionLost {
        /// The connection.
        conn: ConnId,
        /// Why.
        why: String,
    },
    /// A client closed its connection and the broker answered.
    Closed {
        /// The connection.
        conn: ConnId,
    },
    /// A consumer detached its link and attached a new one on the same
    /// connection (churn); what the old link held went back to the broker.
    Relinked {
        /// The connection.
        conn: ConnId,
    },
    /// A producer sent a message, unsettled.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: MsgId,
        /// True if it was sent before (a resend after a lost connection or a
        /// `released` outcome).
        resend: bool,
        /// What the producer asked of the broker for it.
        kind: MessageKind,
    },
    /// A producer's coordinator declared a transaction.
    TxnDeclared {
        /// The connection.
        conn: ConnId,
        /// The transaction.
        txn: TxnId,
    },
    /// A producer is about to discharge a transaction: recorded before the
    /// discharge goes out, so that a connection lost while sending it
    /// leaves the transaction's fate unknown, not "never discharged".
    Discharge {
        /// The connection.
        conn: ConnId,
        /// The transaction.
        txn: TxnId,
        /// Commit (rather than roll back).
        commit: bool,
    },
    /// The coordinator answered a discharge: `Accepted` (committed, or
    /// rolled back as asked) or `Rejected` (rolled back).
    Discharged {
        /// The connection.
        conn: ConnId,
        /// The transaction.
        txn: TxnId,
        /// The answer.
        outcome: Outcome,
    },
    /// A producer received the broker's outcome for a message (for a
    /// message sent in a transaction, a provisional one: see
    /// [`Op::Discharged`]).
    ProducerOutcome {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: MsgId,
        /// The outcome.
        outcome: Outcome,
    },
    /// A browser saw a message (a copy: the queue keeps it).
    Browsed {
        /// The connection.
        conn: ConnId,
        /// The queue browsed.
        queue: String,
        /// The message.
        msg: MsgId,
    },
    /// A consumer received a message.
    Delivered {
        /// The connection.
        conn: ConnId,
        /// The queue it came from: a queue's name, or a subscription's
        /// queue (see [`crate::workload::WorkloadParams::subscription`]).
        queue: String,
        /// The message.
        msg: MsgId,
        /// The header's delivery-count (failed deliveries so far).
        delivery_count: u32,
        /// The header's first-acquirer flag.
        first_acquirer: bool,
    },
    /// Once every client has gone, the broker's own account of its queues.
    BrokerState {
        /// Every queue the broker has, in name order.
        queues: Vec<QueueState>,
    },
    /// The simulation stopped early: a host panicked (an assertion of the
    /// broker, or of a library it uses, failed).
    Aborted {
        /// The panic.
        why: String,
    },
    /// Once every client has gone and the replicas had time to converge,
    /// each cluster node's account of its replicated groups.
    Replicas {
        /// Every node, in id order.
        nodes: Vec<NodeReplicas>,
    },
    /// A consumer settled a received message: in settle mode first, with
    /// no confirmation from the broker; in mode second, it sent its outcome
    /// and waits for the broker's settle ([`Op::SettleConfirmed`]).
    Settled {
        /// The connection.
        conn: ConnId,
        /// The queue the message came from.
        queue: String,
        /// The message.
        msg: MsgId,
        /// The outcome it chose.
        outcome: Outcome,
    },
    /// Under rcv-settle-mode `second`, the broker settled a delivery the
    /// consumer had sent its outcome for ([`Op::Settled`]): the outcome
    /// has taken effect, and the broker has forgotten the delivery.
    SettleConfirmed {
        /// The connection.
        conn: ConnId,
        /// The queue the message came from.
        queue: String,
        /// The message.
        msg: MsgId,
        /// The outcome the consumer chose.
        outcome: Outcome,
    },
    /// A receiver asked for rcv-settle-mode `second` and the broker's
    /// attach answered `first`; the client dropped the connection.
    SettleModeRefused {
        /// The connection.
        conn: ConnId,
    },
    /// A requester attached a receiving link from a dynamic source: the
    /// broker made a temporary queue for it, named `address`, which lives
    /// as long as that link.
    TempQueue {
        /// The connection.
        conn: ConnId,
        /// The name the broker gave it.
        address: String,
    },
    /// A requester closed the link of its temporary queue `address` and
    /// the broker answered: the queue is deleted.
    TempQueueDeleted {
        /// The connection.
        conn: ConnId,
        /// The queue.
        address: String,
    },
    /// A requester sent a request through the anonymous relay, unsettled,
    /// never to be resent (its reply queue goes with its connection).
    Request {
        /// The connection.
        conn: ConnId,
        /// The request (its requester's number and sequence).
        msg: MsgId,
        /// Its `to`: the requests' queue, or an address that does not
        /// exist.
        to: String,
        /// Its `reply-to`: the requester's temporary queue.
        reply_to: String,
    },
    /// The broker's outcome for a request.
    RequestOutcome {
        /// The connection.
        conn: ConnId,
        /// The request.
        msg: MsgId,
        /// The outcome.
        outcome: Outcome,
    },
    /// A responder received a request.
    RequestDelivered {
        /// The connection.
        conn: ConnId,
        /// The request.
        msg: MsgId,
        /// Its `reply-to`, as delivered.
        reply_to: String,
    },
    /// A responder sent a reply through the anonymous relay.
    Reply {
        /// The connection.
        conn: ConnId,
        /// The request it answers (the reply carries its id).
        msg: MsgId,
        /// Its `to`: the request's `reply-to`.
        to: String,
    },
    /// The broker's outcome for a reply.
    ReplyOutcome {
        /// The connection.
        conn: ConnId,
        /// The request it answers.
        msg: MsgId,
        /// The outcome.
        outcome: Outcome,
    },
    /// A requester received a reply on its temporary queue.
    ReplyDelivered {
        /// The connection.
        conn: ConnId,
        /// The request it answers.
        msg: MsgId,
        /// Its `to`, as delivered: the queue it was routed to.
        to: String,
        /// The temporary queue the requester's link reads now.
        queue: String,
    },
    /// In a cluster's fault phase, the leader most nodes name for a group
    /// changed (as the nemesis finds leaders: see
    /// [`crate::cluster::Replicas::leader_of`]); `None` when no node names
    /// one. Kept out of the trace (see [`Op::in_trace`]).
    LeaderObserved {
        /// The Raft group.
        group: u32,
        /// Its leader now.
        leader: Option<u64>,
    },
    /// The liveness phase is over: clients close now, and what reaches them
    /// from here on was not waited for. Kept out of the trace, which says
    /// `phase: finished` already.
    LivenessEnded,
    /// An intruder's attempt at what it may not do, and the broker's
    /// answer.
    Intrusion {
        /// The connection.
        conn: ConnId,
        /// The broker it went to.
        node: NodeId,
        /// What it tried.
        attempt: Attempt,
        /// What it got.
        answer: Answer,
    },
}

impl Op {
    /// Whether the op goes into the run's trace too. Leader observations do
    /// not: they were added after replay files pinned their trace hashes,
    /// and they add nothing the trace's determinism check needs (they are
    /// a function of the nodes' states, which the trace's other events
    /// already follow).
    pub fn in_trace(&self) -> bool {
        !matches!(self, Op::LeaderObserved { .. } | Op::LivenessEnded)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::BrokerStart { node } => write!(f, "{} start", broker_name(*node)),
            Op::Fault(event) => write!(f, "nemesis: {event}"),
            Op::BrokerStopped { node, result } => {
                write!(f, "{} stopped: {result}", broker_name(*node))
            }
            Op::Connected {
                conn,
                address,
                node: None,
            } => write!(f, "{conn} connected to {address}"),
            Op::Connected {
                conn,
                address,
                node: Some(id),
            } => write!(f, "{conn} connected to {address} on node{id}"),
            Op::ConnectionLost { conn, why } => write!(f, "{conn} lost: {why}"),
            Op::Closed { conn } => write!(f, "{conn} closed"),
            Op::Relinked { conn } => write!(f, "{conn} relinked"),
            Op::Send {
                conn,
                msg,
                resend,
                kind,
            } => {
                let again = if *resend { " (resend)" } else { "" };
                write!(f, "{conn} send {msg}{kind}{again}")
            }
            Op::TxnDeclared { conn, txn } => write!(f, "{conn} declared {txn}"),
            Op::Discharge { conn, txn, commit } => {
                let how = if *commit { "commit" } else { "roll back" };
                write!(f, "{conn} discharge {txn}: {how}")
            }
            Op::Discharged { conn, txn, outcome } => {
                write!(f, "{conn} discharged {txn} -> {outcome:?}")
            }
            Op::ProducerOutcome { conn, msg, outcome } => write!(f, "{conn} {msg} -> {outcome:?}"),
            Op::Delivered {
                conn,
                queue,
                msg,
                delivery_count,
                first_acquirer,
            } => write!(
                f,
                "{conn} delivered {msg} from {queue} (count {delivery_count}, first {first_acquirer})"
            ),
            Op::Settled {
                conn,
                queue,
                msg,
                outcome,
            } => write!(f, "{conn} settle {msg} from {queue} {outcome:?}"),
            Op::SettleConfirmed {
                conn,
                queue,
                msg,
                outcome,
            } => write!(f, "{conn} broker settled {msg} from {queue} {outcome:?}"),
            Op::TempQueue { conn, address } => write!(f, "{conn} temporary queue {address}"),
            Op::TempQueueDeleted { conn, address } => {
                write!(f, "{conn} deleted temporary queue {address}")
            }
            Op::Request {
                conn,
                msg,
                to,
                reply_to,
            } => write!(f, "{conn} request {msg} to {to} reply-to {reply_to}"),
            Op::RequestOutcome { conn, msg, outcome } => {
                write!(f, "{conn} request {msg} -> {outcome:?}")
            }
            Op::RequestDelivered {
                conn,
                msg,
                reply_to,
            } => write!(f, "{conn} got request {msg} reply-to {reply_to}"),
            Op::Reply { conn, msg, to } => write!(f, "{conn} reply {msg} to {to}"),
            Op::ReplyOutcome { conn, msg, outcome } => {
                write!(f, "{conn} reply {msg} -> {outcome:?}")
            }
            Op::ReplyDelivered {
                conn,
                msg,
                to,
                queue,
            } => write!(f, "{conn} got reply {msg} to {to} on {queue}"),
            Op::SettleModeRefused { conn } => {
                write!(f, "{conn} asked for rcv-settle-mode second, got first")
            }
            Op::Browsed { conn, queue, msg } => write!(f, "{conn} browsed {msg} in {queue}"),
            Op::LeaderObserved {
                group,
                leader: Some(id),
            } => write!(f, "group {group} leader node{id}"),
            Op::LeaderObserved {
                group,
                leader: None,
            } => write!(f, "group {group} has no leader"),
            Op::LivenessEnded => write!(f, "liveness phase ended"),
            Op::BrokerState { queues } => {
                f.write_str("broker state:")?;
                for queue in queues {
                    write!(f, " [{queue}]")?;
                }
                Ok(())
            }
            Op::Aborted { why } => write!(f, "run aborted: {why}"),
            Op::Intrusion {
                conn,
                node,
                attempt,
                answer,
            } => write!(
                f,
                "{conn} on {} tried {attempt}: {answer}",
                broker_name(*node)
            ),
            Op::Replicas { nodes } => {
                f.write_str("replicas:")?;
                for node in nodes {
                    write!(f, " [{node}]")?;
                }
                Ok(())
            }
        }
    }
}

/// What an intruder tries (see [`crate::intruder`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A login as the workload's user with a wrong password.
    WrongPassword,
    /// Attaching a consuming receiver to the queue.
    Receive(String),
    /// Attaching a sender to the queue.
    Send(String),
    /// Sending a message through the anonymous relay with `to` the queue.
    Relay(String),
    /// Trickling the protocol header, a byte at a time under the idle
    /// timeout, past the broker's handshake deadline.
    StallHandshake,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attempt::WrongPassword => f.write_str("a wrong password"),
            Attempt::Receive(queue) => write!(f, "to receive from {queue}"),
            Attempt::Send(queue) => write!(f, "to send to {queue}"),
            Attempt::Relay(queue) => write!(f, "to relay to {queue}"),
            Attempt::StallHandshake => f.write_str("to stall its handshake past the deadline"),
        }
    }
}

/// What the broker answered an intruder's attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Refused, with this error condition (or SASL outcome).
    Refused(String),
    /// Served: what the broker granted, which it must never.
    Served(String),
    /// Neither: the connection failed or went unanswered (a fault).
    Failed(String),
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Refused(why) => write!(f, "refused ({why})"),
            Answer::Served(what) => write!(f, "served ({what})"),
            Answer::Failed(why) => write!(f, "failed ({why})"),
        }
    }
}

/// One cluster node's replicated groups as it reported them at the end of
/// a run; `None` if it did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReplicas {
    /// The node's id.
    pub node: u64,
    /// Its groups, in group order.
    pub groups: Option<Vec<ReplicaStatus>>,
}

impl fmt::Display for NodeReplicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}:", self.node)?;
        let Some(groups) = &self.groups else {
            return f.write_str(" no answer");
        };
        for g in groups {
            let leader = g
                .leader
                .map_or_else(|| "none".to_owned(), |id| format!("node{id}"));
            write!(
                f,
                " group {} leader {leader} applied {} digest {:#010x};",
                g.group, g.applied, g.digest
            )?;
        }
        Ok(())
    }
}

/// One queue as the broker reported it at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueState {
    /// The queue's name.
    pub name: String,
    /// Messages ready for delivery.
    pub depth: u64,
    /// Messages delivered and not yet settled.
    pub unsettled: u64,
    /// Attached consumers.
    pub consumers: u64,
}

impl fmt::Display for QueueState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} depth {} unsettled {} consumers {}",
            self.name, self.depth, self.unsettled, self.consumers
        )
    }
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Simulated time since the start of the run.
    pub time: Duration,
    /// What happened.
    pub op: Op,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:.3}s] {}", self.time.as_secs_f64(), self.op)
    }
}

/// The whole history of a run, in the order events happened.
#[derive(Debug, Clone, Default)]
pub struct History {
    events: Vec<Event>,
}

impl History {
    /// Appends an event.
    pub fn push(&mut self, time: Duration, op: Op) {
        // Not asserted monotonic: within one step each host runs its own
        // tick, so a host ticked later may record a time a little before
        // one recorded by a host ticked earlier.
        self.events.push(Event { time, op });
    }

    /// Every event, in order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }
}
