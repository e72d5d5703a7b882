//! The single node's core: routing, credit, durability, and the queue
//! state machine, as a sans-IO state machine in quinn's shape. Its driver
//! ([`super::single`]) hands it requests, the log's completions and
//! timeouts, each with the time, and carries out what it asks for:
//! messages to connections and snapshots. The core appends to the log
//! itself, through [`Appender`], since an append is a write into the log's
//! next batch, not I/O; a test hands it a fake.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tracing::{debug, error, warn};

use super::address::{ConsumerNode, ProducerNode, Refusal, destinations, topic_of_subscription};
use super::clients::{Clients, Consumer, ConsumerTarget};
use super::{ConnId, NodeError, NodeSettings, Now, Request, ToConnection};
use crate::amqp::codec::{DecodeError, Encode};
use crate::amqp::engine::{DeliveryId, LinkId};
use crate::amqp::types::{Error, condition};
use crate::log::{Completion, Log, LogError, Lsn, Ticket};
use crate::queue::{Command, ConsumerId, Effect, Outcome, QueueConfig, QueueInfo, Queues, Seq};

/// What the core needs of the log it appends to.
pub(super) trait Appender {
    /// Appends a record (see [`Log::submit`]).
    fn submit(&mut self, write: impl FnOnce(&mut BytesMut)) -> Result<Ticket, LogError>;
    /// Appends a record that may use the disk reserve (see
    /// [`Log::submit_reserved`]).
    fn submit_reserved(&mut self, write: impl FnOnce(&mut BytesMut)) -> Result<Ticket, LogError>;
    /// See [`Log::snapshot_room`].
    fn snapshot_room(&self) -> Option<u64>;
}

impl Appender for Log {
    fn submit(&mut self, write: impl FnOnce(&mut BytesMut)) -> Result<Ticket, LogError> {
        Log::submit(self, write)
    }

    fn submit_reserved(&mut self, write: impl FnOnce(&mut BytesMut)) -> Result<Ticket, LogError> {
        Log::submit_reserved(self, write)
    }

    fn snapshot_room(&self) -> Option<u64> {
        Log::snapshot_room(self)
    }
}

/// How long the record of an accepting settle may wait for company before
/// it is written on its own (see [`Core::defers`]).
const SETTLE_LINGER: Duration = Duration::from_millis(1);

/// A log record: the command and the time it was applied at, so that replay
/// computes the same expiries. Written straight into the log's batch.
fn encode_record(now_ms: u64, command: &Command, buf: &mut BytesMut) {
    buf.put_u64(now_ms);
    Encode::encode(command, buf);
}

pub(super) fn decode_record(mut record: Bytes) -> Result<(u64, Command), DecodeError> {
    if record.len() < 8 {
        return Err(crate::amqp::codec::DecodeErrorKind::Truncated.into());
    }
    let now_ms = u64::from_be_bytes(record[..8].try_into().expect("8 bytes"));
    let command = Command::decode(record.split_off(8))?;
    Ok((now_ms, command))
}

/// A command waiting for its turn to be applied.
struct Pending {
    now_ms: u64,
    command: Command,
    /// Its log record, if it must be durable before it is applied.
    logged: Logged,
    /// Whom to answer once applied.
    reply: Reply,
    /// A consumer's `Detach` that is expanded, once it reaches the head of
    /// the pipeline, into the commands that return what the consumer holds
    /// (see [`Core::expand_detach`]).
    expand_detach: bool,
}

/// Whether, and how, a pipeline entry went to the log.
enum Logged {
    /// It needs no log record.
    No,
    /// It needs one, not submitted yet: an accepting settle that waits to
    /// share the next batch (see [`Core::defers`]).
    Deferred,
    /// Its record was submitted: it is applied once the completion of the
    /// record's batch has arrived (see [`Core::claim`]).
    Submitted(Ticket),
    /// The log refused the record; the entry fails at the head of the
    /// pipeline as a failed append would.
    Refused(LogError),
}

/// A batch completion whose records are not all applied yet.
struct Durable {
    completion: Completion,
    /// Its records still waiting in the pipeline.
    unclaimed: u64,
}

/// What the node does once a command is applied.
#[derive(Debug)]
enum Reply {
    None,
    /// One of a publish's enqueues.
    Publish(u64),
    /// A consumer's attach: answer its link, with the address it reads.
    /// Answered once applied, as a cluster does, so that the answer never
    /// runs ahead of the queue's declaration becoming durable.
    Attached {
        conn: ConnId,
        link: LinkId,
        consumer: ConsumerId,
        address: String,
    },
}

pub(super) struct Core<L: Appender> {
    settings: NodeSettings,
    log: L,
    queues: Queues,
    /// The configuration of every queue, including those whose declaration
    /// is still waiting in the pipeline.
    registry: BTreeMap<String, QueueConfig>,
    /// Subscription queues, by topic.
    topics: BTreeMap<String, BTreeSet<String>>,
    clients: Clients,
    /// Snapshots to write, `(upto, state)`, until the driver takes them.
    snapshots: VecDeque<(Lsn, Bytes)>,
    /// Enqueues submitted and not yet applied, by queue: room they will take.
    pending_enqueues: BTreeMap<String, u64>,
    pipeline: VecDeque<Pending>,
    /// Pipeline entries whose record went (or will go) to the log.
    logged_in_pipeline: usize,
    /// Pipeline entries that a consumer's credit may not overtake (see
    /// [`overtakable`]).
    barriers: usize,
    /// How many entries at the tail of the pipeline are [`Logged::Deferred`]:
    /// anything queued behind them submits them first.
    deferred: usize,
    /// When the deferred records are submitted if nothing else comes.
    linger_deadline: Option<std::time::Instant>,
    /// Completions received, oldest first, while some of their records wait
    /// in the pipeline.
    durable: VecDeque<Durable>,
    /// Every ticket before this one has a completion.
    completed_before: Ticket,
    /// Planted bug `ack-before-fsync`: tickets of records nobody waits for,
    /// so that their completions are not kept forever.
    detached: VecDeque<Ticket>,
    effects: Vec<Effect>,
    next_seq: Seq,
    next_consumer: ConsumerId,
    next_dynamic: u64,
    last_lsn: Option<Lsn>,
    records_since_snapshot: u64,
    /// An `Expire` is in the pipeline: the timer must not add another.
    expire_pending: bool,
    /// The time of the input being handled: every command submitted now
    /// is applied (and logged) at its wall clock.
    now: Now,
}

impl<L: Appender> Core<L> {
    /// A core over `log`, whose records gave `queues`, at `now`.
    pub(super) fn new(settings: NodeSettings, log: L, queues: Queues, now: Now) -> Self {
        let registry: BTreeMap<String, QueueConfig> = queues
            .declared()
            .map(|(name, config)| (name.to_owned(), config.clone()))
            .collect();
        let mut topics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for name in registry.keys() {
            if let Some(topic) = topic_of_subscription(name) {
                topics
                    .entry(topic.to_owned())
                    .or_default()
                    .insert(name.clone());
            }
        }
        let next_seq = queues.last_seq() + 1;
        let window = settings.config.limits.producer_credit;
        let mut queues = queues;
        queues.plant(settings.config.plants);
        Self {
            settings,
            log,
            queues,
            registry,
            topics,
            clients: Clients::new(window),
            snapshots: VecDeque::new(),
            pending_enqueues: BTreeMap::new(),
            pipeline: VecDeque::new(),
            logged_in_pipeline: 0,
            barriers: 0,
            deferred: 0,
            linger_deadline: None,
            durable: VecDeque::new(),
            completed_before: Ticket(1),
            detached: VecDeque::new(),
            effects: Vec::new(),
            next_seq,
            next_consumer: 1,
            // Dynamic node names start past every sequence number in use,
            // so they are not reused across restarts.
            next_dynamic: next_seq,
            last_lsn: None,
            records_since_snapshot: 0,
            expire_pending: false,
            now,
        }
    }

    /// Connections' requests, at `now`, then what became durable. The
    /// driver keeps the channels a request may carry: it registers
    /// connections, and answers queries from [`Core::queue_info`]. A burst
    /// of requests handled at once shares the log's next batch.
    ///
    /// # Errors
    ///
    /// [`NodeError::Log`] if the log failed: the node must stop.
    pub(super) fn handle_requests(
        &mut self,
        now: Now,
        requests: impl IntoIterator<Item = Request>,
    ) -> Result<(), NodeError> {
        self.now = now;
        for request in requests {
            self.handle(request);
        }
        self.apply_ready()
    }

    /// A batch of the log's records is durable, or failed.
    ///
    /// # Errors
    ///
    /// [`NodeError::Log`] if the log failed: the node must stop.
    pub(super) fn handle_completion(&mut self, completion: Completion) -> Result<(), NodeError> {
        self.on_completion(completion);
        self.apply_ready()
    }

    /// Time passed: deferred records whose linger is over are submitted,
    /// and an `Expire` once a message's expiry is due.
    ///
    /// # Errors
    ///
    /// [`NodeError::Log`] if the log failed: the node must stop.
    pub(super) fn handle_timeout(&mut self, now: Now) -> Result<(), NodeError> {
        self.now = now;
        if self.linger_deadline.is_some_and(|due| due <= now.instant) {
            self.submit_deferred();
        }
        if self.expiry_due().is_some_and(|due| due <= now.instant) {
            self.expire_pending = true;
            self.submit(Command::Expire, Reply::None);
        }
        self.apply_ready()
    }

    /// No request will come any more: what waits to be written is written.
    ///
    /// # Errors
    ///
    /// [`NodeError::Log`] if the log failed: the node must stop.
    pub(super) fn handle_close(&mut self) -> Result<(), NodeError> {
        self.submit_deferred();
        self.apply_ready()
    }

    /// When [`Core::handle_timeout`] is due next, if a timer runs.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match (self.linger_deadline, self.expiry_due()) {
            (Some(linger), Some(expiry)) => Some(linger.min(expiry)),
            (linger, expiry) => linger.or(expiry),
        }
    }

    /// The next message for a connection.
    pub(super) fn poll_to_connection(&mut self) -> Option<(ConnId, ToConnection)> {
        self.clients.poll_to_connection()
    }

    /// The next snapshot to write: the durable state as of `upto`.
    pub(super) fn poll_snapshot(&mut self) -> Option<(Lsn, Bytes)> {
        self.snapshots.pop_front()
    }

    /// Whether every command submitted has been applied.
    pub(super) fn is_idle(&self) -> bool {
        self.pipeline.is_empty()
    }

    /// The log, for the driver to collect completions from and hand
    /// snapshots to.
    pub(super) fn log(&mut self) -> &mut L {
        &mut self.log
    }

    /// Every queue's counters, in name order.
    pub(super) fn queue_info(&self) -> Vec<(String, QueueInfo)> {
        self.queues
            .declared()
            .filter_map(|(name, _)| Some((name.to_owned(), self.queues.info(name)?)))
            .collect()
    }

    // ---- requests -------------------------------------------------------

    fn handle(&mut self, request: Request) {
        match request {
            Request::Register { .. }
            | Request::ReplicaStatuses { .. }
            | Request::QueueInfo { .. } => {}
            Request::AttachConsumer {
                conn,
                link,
                node,
                link_name,
                container_id,
            } => {
                let attached = self.attach_consumer(conn, link, node, &link_name, &container_id);
                if let Err(refusal) = attached {
                    let result = Err(refusal);
                    self.clients
                        .tell(conn, ToConnection::ConsumerAttached { link, result });
                }
            }
            Request::AttachProducer { conn, link, node } => self.attach_producer(conn, link, node),
            Request::Publish {
                conn,
                delivery,
                message,
                settled,
            } => self.publish(conn, delivery, message, settled),
            Request::Credit {
                conn,
                link,
                credit,
                drain,
            } => {
                if let Some(consumer) = self.clients.consumer_on(conn, link) {
                    self.credit(consumer, credit, drain);
                }
            }
            Request::Settle {
                consumer,
                queue,
                seq,
                outcome,
            } => {
                if self.clients.consumer(consumer).is_none() {
                    debug!(
                        consumer,
                        queue, seq, "stale settle from a detached consumer dropped"
                    );
                    return;
                }
                self.submit(
                    Command::Settle {
                        queue,
                        seq,
                        outcome,
                    },
                    Reply::None,
                );
            }
            Request::Detach { conn, link, closed } => self.detach(conn, link, closed),
            Request::Disconnect { conn } => {
                for link in self.clients.links_of(conn) {
                    self.detach(conn, link, false);
                }
            }
        }
    }

    /// Sets a consumer's credit. Credit is volatile state, never logged,
    /// and no durable outcome depends on it, so it need not wait in the
    /// pipeline for the publishes and accepting settles ahead of it to
    /// become durable: when only those are there, it is applied at once.
    /// That delivers what it would have delivered behind them, in the same
    /// order: publishes only add messages after every ready one (or drop
    /// the oldest from a drop-head queue, which a credit that came a moment
    /// earlier could have had delivered all the same), and accepting
    /// settles only remove held ones. Waiting would cost the
    /// consumer an fsync cycle per credit top-up, and a busy queue's
    /// consumers would fall behind its producers. Behind anything else (a
    /// settle that returns a message, this consumer's attach, an earlier
    /// credit) and for a drain, which looks at what is there now, it keeps
    /// its place.
    fn credit(&mut self, consumer: ConsumerId, credit: u32, drain: bool) {
        let command = Command::Credit {
            consumer,
            credit,
            drain,
        };
        if self.barriers == 0 && !drain {
            self.apply(self.now.unix_ms, command, Reply::None);
        } else {
            self.submit(command, Reply::None);
        }
    }

    fn attach_consumer(
        &mut self,
        conn: ConnId,
        link: LinkId,
        node: ConsumerNode,
        link_name: &str,
        container_id: &str,
    ) -> Result<(), Refusal> {
        let next_dynamic = &mut self.next_dynamic;
        let unique = || {
            *next_dynamic += 1;
            next_dynamic.to_string()
        };
        let ConsumerTarget {
            queue,
            address,
            topic,
            browse,
            lifetime,
            declare,
        } = ConsumerTarget::of(node, link_name, container_id, &self.settings, unique);
        match declare {
            Some(config) => self.declare(&queue, config),
            None => self.ensure_queue_for_attach(&queue)?,
        }
        if let Some(topic) = topic {
            let subscriptions = self.topics.entry(topic).or_default();
            subscriptions.insert(queue.clone());
        }
        let consumer = self.next_consumer;
        self.next_consumer += 1;
        let info = Consumer {
            conn,
            link,
            queue: queue.clone(),
            lifetime,
        };
        self.clients.add_consumer(consumer, info);
        let reply = Reply::Attached {
            conn,
            link,
            consumer,
            address,
        };
        self.submit(
            Command::Attach {
                consumer,
                queue,
                browse,
            },
            reply,
        );
        Ok(())
    }

    /// Creates a queue named by an attach if it does not exist and the
    /// configuration allows it.
    fn ensure_queue_for_attach(&mut self, name: &str) -> Result<(), Refusal> {
        if self.registry.contains_key(name) {
            return Ok(());
        }
        if !self.settings.auto_create(name) {
            return Err(Refusal {
                condition: condition::NOT_FOUND,
                description: format!("no queue named {name:?}"),
            });
        }
        let config = self.settings.queue_config(name);
        self.declare(name, config);
        Ok(())
    }

    fn declare(&mut self, queue: &str, config: QueueConfig) {
        if self.registry.contains_key(queue) {
            return;
        }
        self.registry.insert(queue.to_owned(), config.clone());
        self.submit(
            Command::Declare {
                queue: queue.to_owned(),
                config,
            },
            Reply::None,
        );
    }

    fn delete(&mut self, queue: &str) {
        if !self.forget_queue(queue) {
            return;
        }
        self.submit(
            Command::Delete {
                queue: queue.to_owned(),
            },
            Reply::None,
        );
    }

    /// Removes a queue from routing; false if it was not known.
    fn forget_queue(&mut self, queue: &str) -> bool {
        for subscriptions in self.topics.values_mut() {
            subscriptions.remove(queue);
        }
        self.registry.remove(queue).is_some()
    }

    fn attach_producer(&mut self, conn: ConnId, link: LinkId, node: ProducerNode) {
        let result = match &node {
            ProducerNode::Queue(name) => self.ensure_queue_for_attach(name),
            ProducerNode::Topic(topic) => {
                self.topics.entry(topic.clone()).or_default();
                Ok(())
            }
            ProducerNode::AnonymousRelay => Ok(()),
        };
        let accepted = result.is_ok();
        self.clients
            .tell(conn, ToConnection::ProducerAttached { link, result });
        if accepted {
            self.clients.add_producer(conn, link, node);
            self.grant_credit(conn, link);
        }
    }

    fn detach(&mut self, conn: ConnId, link: LinkId, closed: bool) {
        let Some((consumer, info)) = self.clients.remove_link(conn, link) else {
            return;
        };
        // The consumer's unsettled deliveries return counted as failed
        // (logged settles), then it goes.
        self.submit_detach(consumer);
        if info.lifetime.ends_with(closed) {
            self.delete(&info.queue);
        }
    }

    // ---- publishing and producer credit ---------------------------------

    fn publish(&mut self, conn: ConnId, delivery: DeliveryId, message: Bytes, settled: bool) {
        let Some(node) = self.clients.producer_node(conn, delivery.link) else {
            // The link is gone; the client learns from its detach.
            return;
        };
        let subscriptions = |topic: &str| {
            let queues = self.topics.get(topic).into_iter().flatten();
            queues.cloned().collect()
        };
        let routed = destinations(
            node,
            &message,
            |queue| self.registry.contains_key(queue),
            subscriptions,
        );
        match routed {
            Ok((queues, inspected)) => {
                let publish =
                    self.clients
                        .start_publish(conn, delivery, settled, queues.len(), None);
                for queue in queues {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    let persist_always = self.settings.persist_always(&queue);
                    let message = inspected.new_message(message.clone(), persist_always);
                    let command = Command::Enqueue {
                        queue,
                        seq,
                        message,
                    };
                    self.submit(command, Reply::Publish(publish));
                }
                self.finish_publish_if_done(publish);
            }
            Err(error) => {
                let publish = self
                    .clients
                    .start_publish(conn, delivery, settled, 0, Some(error));
                self.finish_publish_if_done(publish);
            }
        }
        // After the enqueues are submitted, so that the room they take is
        // counted when more credit is granted.
        self.clients.producer_sent(conn, delivery.link);
        self.top_up_credit(conn, delivery.link);
    }

    fn top_up_credit(&mut self, conn: ConnId, link: LinkId) {
        if self.clients.wants_top_up(conn, link) {
            self.grant_credit(conn, link);
        }
    }

    /// Grants a producer credit within its window and its destination's
    /// room, or parks it until room is made.
    fn grant_credit(&mut self, conn: ConnId, link: LinkId) {
        let Some(node) = self.clients.producer_node(conn, link) else {
            return;
        };
        let room = self.room_for(node);
        self.clients.grant_credit(conn, link, room);
    }

    /// How many more messages `node` can take: 0 above the memory
    /// watermark, else the smallest room among its queues, counting
    /// enqueues still in the pipeline as taken.
    fn room_for(&self, node: &ProducerNode) -> u64 {
        if self.above_memory_watermark() {
            return 0;
        }
        let room = |queue: &String| {
            let pending = self.pending_enqueues.get(queue).copied().unwrap_or(0);
            // A queue whose declaration is still in the pipeline is empty:
            // its configured length is all its room.
            let room = self.queues.room(queue).unwrap_or_else(|| {
                let config = self.registry.get(queue);
                config.and_then(|c| c.max_length).unwrap_or(u64::MAX)
            });
            room.saturating_sub(pending)
        };
        match node {
            ProducerNode::Queue(queue) => room(queue),
            ProducerNode::Topic(topic) => self
                .topics
                .get(topic)
                .and_then(|subscriptions| subscriptions.iter().map(room).min())
                .unwrap_or(u64::MAX),
            ProducerNode::AnonymousRelay => u64::MAX,
        }
    }

    fn above_memory_watermark(&self) -> bool {
        let Some(watermark) = self.settings.config.limits.memory_high_watermark() else {
            return false;
        };
        let held: u64 = self
            .registry
            .keys()
            .filter_map(|q| self.queues.info(q))
            .map(|info| info.bytes)
            .sum();
        held >= watermark
    }

    fn unblock_producers(&mut self) {
        for (conn, link) in self.clients.blocked() {
            self.grant_credit(conn, link);
        }
    }

    /// Answers a publish whose every enqueue is done, which frees a place
    /// in its producer's window.
    fn finish_publish_if_done(&mut self, publish: u64) {
        if let Some((conn, link)) = self.clients.finish_publish_if_done(publish) {
            self.top_up_credit(conn, link);
        }
    }

    // ---- the pipeline -----------------------------------------------------

    /// Queues a command; one that changes durable state is appended to the
    /// log first.
    fn submit(&mut self, command: Command, reply: Reply) {
        let now_ms = self.now.unix_ms;
        if self.defers(&command) {
            self.logged_in_pipeline += 1;
            self.deferred += 1;
            if self.linger_deadline.is_none() {
                self.linger_deadline = Some(self.now.instant + SETTLE_LINGER);
            }
            self.push_back(Pending {
                now_ms,
                command,
                logged: Logged::Deferred,
                reply,
                expand_detach: false,
            });
            return;
        }
        // The deferred records go first, so that log order stays pipeline
        // order.
        self.submit_deferred();
        let pending = self.pending(now_ms, command, reply);
        self.push_back(pending);
    }

    /// Queues an entry at the back of the pipeline.
    fn push_back(&mut self, pending: Pending) {
        if !overtakable(&pending.command) {
            self.barriers += 1;
        }
        self.pipeline.push_back(pending);
    }

    /// Whether a command's record may wait for the next one before it is
    /// written: only an accepting settle, which nobody waits for (its
    /// disposition is already answered, and the message only leaves the
    /// queue), is not worth an fsync of its own. At a low rate that halves
    /// the fsyncs per message (publish, then settle), and a publish no
    /// longer queues behind a settle's fsync; it is the publish that then
    /// makes both durable at once. It is still applied only once durable,
    /// in order; whatever is queued behind it submits it first, so it
    /// delays nothing, and it waits at most [`SETTLE_LINGER`] on its own.
    fn defers(&self, command: &Command) -> bool {
        // Under the planted bug every durable command is applied at once.
        if self.settings.config.plants.ack_before_fsync() {
            return false;
        }
        matches!(
            command,
            Command::Settle {
                outcome: Outcome::Accepted,
                ..
            }
        ) && self.is_durable(command)
    }

    /// Submits the deferred records at the tail of the pipeline, in order.
    fn submit_deferred(&mut self) {
        self.linger_deadline = None;
        let Self {
            pipeline,
            log,
            deferred,
            ..
        } = self;
        let start = pipeline.len() - *deferred;
        for pending in pipeline.range_mut(start..) {
            // Only settles defer: they may use the disk reserve.
            let written =
                log.submit_reserved(|buf| encode_record(pending.now_ms, &pending.command, buf));
            pending.logged = match written {
                Ok(ticket) => Logged::Submitted(ticket),
                Err(error) => Logged::Refused(error),
            };
        }
        *deferred = 0;
    }

    /// A pipeline entry for `command`, its log append started if it needs
    /// one.
    fn pending(&mut self, now_ms: u64, command: Command, reply: Reply) -> Pending {
        if let Command::Enqueue { queue, .. } = &command {
            match self.pending_enqueues.get_mut(queue) {
                Some(count) => *count += 1,
                None => {
                    self.pending_enqueues.insert(queue.clone(), 1);
                }
            }
        }
        // PLANTED BUG (`ack-before-fsync`): the record is submitted but
        // nobody waits for it, and the command is applied as if it needed
        // no log, so `accepted` can leave before the record is durable.
        if self.settings.config.plants.ack_before_fsync() && self.is_durable(&command) {
            match self.log.submit(|buf| encode_record(now_ms, &command, buf)) {
                Ok(ticket) => self.detached.push_back(ticket),
                Err(error) => error!(%error, "planted ack-before-fsync: a detached append failed"),
            }
            return Pending {
                now_ms,
                command,
                logged: Logged::No,
                reply,
                expand_detach: false,
            };
        }
        let logged = if self.is_durable(&command) {
            self.logged_in_pipeline += 1;
            let write = |buf: &mut BytesMut| encode_record(now_ms, &command, buf);
            let submitted = if may_use_reserve(&command) {
                self.log.submit_reserved(write)
            } else {
                self.log.submit(write)
            };
            match submitted {
                Ok(ticket) => Logged::Submitted(ticket),
                Err(error) => Logged::Refused(error),
            }
        } else {
            Logged::No
        };
        Pending {
            now_ms,
            command,
            logged,
            reply,
            expand_detach: false,
        }
    }

    /// Queues a consumer's detach. What it holds is known only once every
    /// command before the detach is applied — settles it sent may still be
    /// waiting for their fsync — so the commands that return its messages
    /// are made then, not now: made now, they could count a failed delivery
    /// against a message the consumer had released and another consumer
    /// now holds.
    fn submit_detach(&mut self, consumer: ConsumerId) {
        self.submit_deferred();
        self.push_back(Pending {
            now_ms: self.now.unix_ms,
            command: Command::Detach { consumer },
            logged: Logged::No,
            reply: Reply::None,
            expand_detach: true,
        });
    }

    /// Replaces a detach at the head of the pipeline by the commands that
    /// return what the consumer holds (its credit to 0, a failed-delivery
    /// settle per held message, logged, then the detach itself).
    fn expand_detach(&mut self, now_ms: u64, consumer: ConsumerId) {
        let commands = self.queues.detach_commands(consumer);
        let expanded: Vec<Pending> = commands
            .into_iter()
            .map(|command| self.pending(now_ms, command, Reply::None))
            .collect();
        for pending in expanded.into_iter().rev() {
            if !overtakable(&pending.command) {
                self.barriers += 1;
            }
            self.pipeline.push_front(pending);
        }
    }

    /// Whether a command must be durable before it is applied. Decided from
    /// the registry, which already knows queues whose declaration is still
    /// in the pipeline.
    fn is_durable(&self, command: &Command) -> bool {
        let durable_queue = |queue: &str| self.registry.get(queue).is_some_and(|c| c.durable);
        match command {
            Command::Declare { config, .. } => config.durable,
            Command::Delete { queue } => durable_queue(queue),
            Command::Enqueue { queue, message, .. } => message.durable && durable_queue(queue),
            Command::Settle { queue, .. } => durable_queue(queue),
            Command::Expire => true,
            Command::Attach { .. } | Command::Credit { .. } | Command::Detach { .. } => false,
        }
    }

    /// Keeps a batch's completion until the pipeline has applied its
    /// records.
    fn on_completion(&mut self, completion: Completion) {
        self.completed_before = completion.end();
        let mut unclaimed = completion.records;
        if self.settings.config.plants.ack_before_fsync() {
            unclaimed -= self.release_detached(&completion);
        }
        if unclaimed > 0 {
            self.durable.push_back(Durable {
                completion,
                unclaimed,
            });
        }
    }

    /// Planted bug `ack-before-fsync`: forgets the records of `completion`
    /// that nobody waits for; returns how many there were.
    fn release_detached(&mut self, completion: &Completion) -> u64 {
        let mut released = 0;
        while let Some(&ticket) = self.detached.front()
            && ticket < completion.end()
        {
            self.detached.pop_front();
            released += 1;
            if let Some(Err(error)) = completion.outcome_of(ticket) {
                error!(%error, "planted ack-before-fsync: a detached append failed");
            }
        }
        released
    }

    /// What became of the record with `ticket`, once its completion has
    /// arrived. Each ticket is claimed once, when its entry leaves the
    /// pipeline. Entries leave in ticket order except after a consumer's
    /// detach is expanded (its commands are submitted later but applied
    /// first), so the completion sought is nearly always the oldest.
    fn claim(&mut self, ticket: Ticket) -> Option<Result<Lsn, LogError>> {
        if ticket >= self.completed_before {
            return None;
        }
        let (outcome, durable) = self.durable.iter_mut().find_map(|durable| {
            let outcome = durable.completion.outcome_of(ticket)?;
            Some((outcome, durable))
        })?;
        durable.unclaimed -= 1;
        while self.durable.front().is_some_and(|d| d.unclaimed == 0) {
            self.durable.pop_front();
        }
        Some(outcome)
    }

    /// Applies commands from the head of the pipeline for as long as they
    /// are durable (or need not be).
    fn apply_ready(&mut self) -> Result<(), NodeError> {
        let mut applied_any = false;
        while let Some(front) = self.pipeline.front() {
            let appended = match &front.logged {
                Logged::No => None,
                Logged::Deferred => break,
                Logged::Submitted(ticket) => {
                    let ticket = *ticket;
                    match self.claim(ticket) {
                        Some(outcome) => Some(outcome),
                        None => break,
                    }
                }
                Logged::Refused(error) => Some(Err(error.clone())),
            };
            let Some(pending) = self.pipeline.pop_front() else {
                break;
            };
            if !overtakable(&pending.command) {
                self.barriers -= 1;
            }
            if appended.is_some() {
                self.logged_in_pipeline -= 1;
            }
            if let Command::Enqueue { queue, .. } = &pending.command
                && let Some(count) = self.pending_enqueues.get_mut(queue)
            {
                *count -= 1;
                if *count == 0 {
                    self.pending_enqueues.remove(queue);
                }
            }
            match appended {
                Some(Err(LogError::NoSpace)) => self.on_no_space(pending),
                Some(Err(error)) => {
                    error!(%error, "the log failed: stopping, since what is on disk is unknown");
                    return Err(NodeError::Log(error));
                }
                Some(Ok(lsn)) => {
                    self.last_lsn = Some(lsn);
                    self.records_since_snapshot += 1;
                    self.apply(pending.now_ms, pending.command, pending.reply);
                    applied_any = true;
                }
                None => match pending.command {
                    Command::Detach { consumer } if pending.expand_detach => {
                        self.expand_detach(pending.now_ms, consumer);
                    }
                    command => {
                        self.apply(pending.now_ms, command, pending.reply);
                        applied_any = true;
                    }
                },
            }
        }
        if applied_any {
            self.unblock_producers();
        }
        // Also after refusals: on a full disk the snapshot that frees space
        // may be due while nothing could be logged.
        self.maybe_snapshot();
        Ok(())
    }

    /// A command the full disk could not log. What must not be lost is
    /// refused; everything else is applied in memory only, since a restart
    /// that forgets it can redeliver or resurrect a message, never lose one:
    /// - an enqueue is not applied, and its message is rejected (the
    ///   producer may retry once space returns);
    /// - a declaration is not applied, and the queue is forgotten, so that no
    ///   message is ever accepted into a queue a restart would not know;
    /// - settles, expiry and deletion are applied. Dropping a settle instead
    ///   would leave its message held by a consumer that already let it go.
    fn on_no_space(&mut self, pending: Pending) {
        warn!(command = ?pending.command, "disk full: command not logged");
        match pending.command {
            Command::Enqueue { .. } => {
                let Reply::Publish(publish) = pending.reply else {
                    return;
                };
                let full = Error::new(
                    condition::RESOURCE_LIMIT_EXCEEDED,
                    "the broker's disk is full",
                );
                self.clients.reject_publish(publish, full);
                self.clients.enqueue_done(publish);
                self.finish_publish_if_done(publish);
            }
            Command::Declare { queue, .. } => {
                self.forget_queue(&queue);
            }
            command => self.apply(pending.now_ms, command, pending.reply),
        }
    }

    fn apply(&mut self, now_ms: u64, command: Command, reply: Reply) {
        if matches!(command, Command::Expire) {
            self.expire_pending = false;
        }
        let publish = match reply {
            Reply::Publish(publish) => Some(publish),
            Reply::Attached {
                conn,
                link,
                consumer,
                address,
            } => {
                self.clients.answer_attach(conn, link, consumer, address);
                None
            }
            Reply::None => None,
        };
        let mut effects = std::mem::take(&mut self.effects);
        self.queues.apply(now_ms, command, &mut effects);
        for effect in effects.drain(..) {
            self.on_effect(effect, publish);
        }
        self.effects = effects;
        if let Some(publish) = publish {
            self.clients.enqueue_done(publish);
            self.finish_publish_if_done(publish);
        }
    }

    fn on_effect(&mut self, effect: Effect, publish: Option<u64>) {
        match self.clients.act(effect, publish) {
            Some(Effect::DeadLettered {
                from,
                seq,
                to,
                reason,
            }) => debug!(from, seq, ?to, ?reason, "dead-lettered"),
            Some(other) => debug!(effect = ?other, "queue effect"),
            None => {}
        }
    }

    /// After enough logged commands, writes the durable state as a snapshot
    /// so that recovery starts from it and older segments can go.
    /// On a full disk, a snapshot is what frees space: it is due as soon as
    /// the state fits in what the log's reserve has left.
    fn maybe_snapshot(&mut self) {
        let frees_space = self
            .log
            .snapshot_room()
            .is_some_and(|room| self.queues.snapshot_bytes_estimate() <= room);
        let every = self.settings.config.storage.snapshot_every_records;
        if self.records_since_snapshot < every && !frees_space {
            return;
        }
        // The snapshot must cover exactly what is applied: wait until no
        // logged command is between its append and its application.
        if self.logged_in_pipeline > 0 {
            return;
        }
        let Some(upto) = self.last_lsn else {
            return;
        };
        self.records_since_snapshot = 0;
        let state = self.queues.snapshot();
        self.snapshots.push_back((upto, state));
    }

    /// When the earliest expiry is due, unless an `Expire` is on its way.
    fn expiry_due(&self) -> Option<Instant> {
        if self.expire_pending {
            return None;
        }
        let due_ms = self.queues.next_expiry()?;
        let wait = Duration::from_millis(due_ms.saturating_sub(self.now.unix_ms));
        Some(self.now.instant + wait)
    }
}

/// Whether a command's record may use the log's disk reserve, so that a
/// full disk can be freed by consuming: it makes the state smaller (a
/// settle, a deletion, an expiry), or it declares a queue, which takes next
/// to no space and without which a consumer could not attach to drain it
/// (nor a subscription keep what its topic is sent). Messages may not, or
/// they could take the space the freeing snapshot needs.
fn may_use_reserve(command: &Command) -> bool {
    matches!(
        command,
        Command::Settle { .. } | Command::Delete { .. } | Command::Expire | Command::Declare { .. }
    )
}

/// Whether a consumer's credit may be applied before this pipeline entry
/// without changing what it delivers (see [`Core::credit`]).
fn overtakable(command: &Command) -> bool {
    matches!(
        command,
        Command::Enqueue { .. }
            | Command::Settle {
                outcome: Outcome::Accepted,
                ..
            }
    )
}

#[cfg(test)]
impl<L: Appender> Core<L> {
    /// The pipeline's counters, against the pipeline itself: each counts
    /// what it says it counts, after every input.
    fn check_invariants(&self) {
        let pipeline = &self.pipeline;
        let count = |keep: &dyn Fn(&Pending) -> bool| pipeline.iter().filter(|p| keep(p)).count();
        assert_eq!(
            self.barriers,
            count(&|p| !overtakable(&p.command)),
            "barriers"
        );
        assert_eq!(
            self.logged_in_pipeline,
            count(&|p| !matches!(p.logged, Logged::No)),
            "logged in the pipeline"
        );
        let deferred_tail = pipeline
            .iter()
            .rev()
            .take_while(|p| matches!(p.logged, Logged::Deferred))
            .count();
        assert_eq!(
            self.deferred, deferred_tail,
            "deferred records, at the tail"
        );
        assert_eq!(
            count(&|p| matches!(p.logged, Logged::Deferred)),
            deferred_tail,
            "no deferred record before a submitted one"
        );
        assert_eq!(
            self.linger_deadline.is_some(),
            self.deferred > 0,
            "a linger runs while records are deferred"
        );
        let mut enqueues: BTreeMap<String, u64> = BTreeMap::new();
        for pending in pipeline {
            if let Command::Enqueue { queue, .. } = &pending.command {
                *enqueues.entry(queue.clone()).or_default() += 1;
            }
        }
        assert_eq!(self.pending_enqueues, enqueues, "pending enqueues");
        let completed_waiting = count(
            &|p| matches!(p.logged, Logged::Submitted(ticket) if ticket < self.completed_before),
        );
        let unclaimed: u64 = self.durable.iter().map(|d| d.unclaimed).sum();
        assert_eq!(
            unclaimed, completed_waiting as u64,
            "completions kept for the records still waiting"
        );
    }
}

#[cfg(test)]
mod tests;
