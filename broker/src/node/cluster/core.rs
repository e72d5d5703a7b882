//! The clustered node task (see the [module](super) documentation): what
//! it does for connections' requests, and what it proposes; [`apply`] is
//! what it does with what the groups commit.

mod apply;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use super::batch::Origin;
use super::proposer::Outbox;
use super::state::{Applied, GroupState};
use super::{
    HOUSEKEEPING_EVERY, Placement, RAFT_DIR, RETRY_AFTER, TICK, TIMING, VOTES_FILE, next_origin,
};
use crate::amqp::engine::{DeliveryId, LinkId};
use crate::amqp::types::condition;
use crate::io::Io;
use crate::node::address::destinations;
use crate::node::clients::{Clients, Consumer, ConsumerTarget};
use crate::node::{
    ConnId, ConsumerNode, NodeHandle, ProducerNode, Refusal, ReplicaStatus, Request, TOPIC_PREFIX,
    ToConnection,
};
use crate::node::{NodeError, NodeSettings};
use crate::queue::{Command, ConsumerId, Effect, QueueConfig};
use crate::raft::group::{self, Committed, GroupsConfig, GroupsHandle, Status};
use crate::raft::replica::NodeId;
use crate::raft::transport::TransportConfig;
use crate::raft::wal::GroupId;

/// The most requests, or committed entries, handled per wake-up, so that a
/// flood of one cannot hold back the other.
const PER_WAKE: usize = 256;

/// What the node does once one of its items is applied.
#[derive(Debug, Clone)]
enum Reply {
    None,
    /// A consumer's attach: answer its link, with the address it reads.
    /// Answered only once applied, so that a message published anywhere
    /// after the client saw its subscription is routed to it.
    Attached {
        conn: ConnId,
        link: LinkId,
        consumer: ConsumerId,
        address: String,
    },
    /// One of a publish's enqueues.
    Publish(u64),
    /// The group's `Expire`: another may be proposed.
    Expire,
}

/// Opens the Raft log, starts the groups and the transport, and returns a
/// handle to the node plus the task to run it.
///
/// # Errors
///
/// [`NodeError`] if the incarnation cannot be counted, or the groups cannot
/// start.
pub async fn start<I: Io>(
    io: I,
    settings: NodeSettings,
) -> Result<
    (
        NodeHandle,
        impl Future<Output = Result<(), NodeError>> + Send,
    ),
    NodeError,
> {
    let config = &settings.config;
    let cluster = &config.cluster;
    let node_id = cluster.node_id;
    let origin = next_origin(&io, &config.data_dir, node_id)
        .await
        .map_err(NodeError::Incarnation)?;
    let mut voters: Vec<NodeId> = cluster.peers.iter().map(|peer| peer.id).collect();
    voters.push(node_id);
    voters.sort_unstable();
    let groups: Vec<GroupId> = (1..=cluster.groups_or_default()).collect();
    let groups_config = GroupsConfig {
        node_id,
        groups: groups.clone(),
        voters,
        timing: TIMING,
        tick: TICK,
        seed: config.seed,
        votes: config.data_dir.join(VOTES_FILE),
        plants: config.plants,
    };
    let transport = TransportConfig {
        node_id,
        listen: cluster.listen,
        peers: cluster
            .peers
            .iter()
            .map(|peer| (peer.id, peer.address.clone()))
            .collect(),
        secret: Arc::from(cluster.secret.as_bytes()),
        seed: config.seed,
    };
    let raft_dir = config.data_dir.join(RAFT_DIR);
    let (handle, committed, task) = group::start(io.clone(), &raft_dir, groups_config, transport)
        .await
        .map_err(NodeError::Groups)?;
    info!(node_id, %origin, groups = groups.len(), "joined the cluster");
    let (requests, inbox) = mpsc::unbounded_channel();
    let core = ClusterCore::new(io, settings, origin, &groups, handle);
    let run = async move {
        let mut task = task;
        let result = tokio::select! {
            result = core.run(inbox, committed) => result,
            ended = &mut task => return groups_ended(ended),
        };
        // The core is gone, and with it the groups' last handle: they stop
        // too, and the node has stopped only once they have.
        result.and(groups_ended(task.await))
    };
    Ok((NodeHandle { requests }, run))
}

/// The node's result for how the groups' task ended.
fn groups_ended(
    ended: Result<Result<(), group::GroupError>, tokio::task::JoinError>,
) -> Result<(), NodeError> {
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(NodeError::Groups(error)),
        Err(_) => Err(NodeError::GroupsPanicked),
    }
}

/// One group, as this node sees it.
struct Group {
    state: GroupState,
    outbox: Outbox<Reply>,
    /// When the outbox last proposed what is waiting.
    proposed_at: std::time::Instant,
    /// The leader as last known; `None` while there is none.
    leader: Option<NodeId>,
    /// An `Expire` of ours is waiting to be applied.
    expiring: bool,
    /// The index of the last entry applied.
    applied: u64,
    /// Entries, and their bytes, applied since the last snapshot.
    since_snapshot: (u64, usize),
}

struct ClusterCore<I: Io> {
    io: I,
    settings: NodeSettings,
    node_id: NodeId,
    origin: Origin,
    placement: Placement,
    handle: GroupsHandle,
    status: watch::Receiver<Status>,
    groups: BTreeMap<GroupId, Group>,
    /// Subscription queues, by topic, as applied.
    topics: BTreeMap<String, BTreeSet<String>>,
    clients: Clients,
    /// Enqueues proposed and not yet applied, by queue: room they will take.
    pending_enqueues: BTreeMap<String, u64>,
    /// Consumers this node has asked to detach; forgotten once gone from
    /// every group.
    detaching: BTreeSet<ConsumerId>,
    next_consumer: u64,
    next_dynamic: u64,
    now_ms: u64,
    applied: Vec<Applied>,
    effects: Vec<Effect>,
}

impl<I: Io> ClusterCore<I> {
    fn new(
        io: I,
        settings: NodeSettings,
        origin: Origin,
        groups: &[GroupId],
        handle: GroupsHandle,
    ) -> Self {
        let now = io.now();
        let groups = groups
            .iter()
            .map(|&id| {
                let mut state = GroupState::default();
                state.plant(settings.config.plants);
                let group = Group {
                    state,
                    outbox: Outbox::new(origin),
                    proposed_at: now,
                    leader: None,
                    expiring: false,
                    applied: 0,
                    since_snapshot: (0, 0),
                };
                (id, group)
            })
            .collect();
        let window = settings.config.limits.producer_credit;
        let placement = Placement::new(
            settings.config.cluster.groups_or_default(),
            &settings.config,
        );
        Self {
            node_id: settings.config.cluster.node_id,
            status: handle.status(),
            io,
            settings,
            origin,
            placement,
            handle,
            groups,
            topics: BTreeMap::new(),
            clients: Clients::new(window),
            pending_enqueues: BTreeMap::new(),
            detaching: BTreeSet::new(),
            next_consumer: origin.first_consumer(),
            next_dynamic: 0,
            now_ms: 0,
            applied: Vec::new(),
            effects: Vec::new(),
        }
    }

    async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Request>,
        mut committed: mpsc::UnboundedReceiver<(GroupId, Committed)>,
    ) -> Result<(), NodeError> {
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_EVERY);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.now_ms = self.io.unix_time_ms();
            tokio::select! {
                request = inbox.recv() => match request {
                    Some(request) => {
                        self.handle(request);
                        for _ in 1..PER_WAKE {
                            let Ok(request) = inbox.try_recv() else { break };
                            self.handle(request);
                        }
                    }
                    // Every handle is gone: the broker is stopping. What is
                    // not applied yet gets no outcome; its connections have
                    // closed. It is dropped, settles included, where the
                    // single node finishes its pipeline first (issue 12).
                    None => return Ok(()),
                },
                Some((group, committed_item)) = committed.recv() => {
                    self.on_committed(group, committed_item)?;
                    for _ in 1..PER_WAKE {
                        let Ok((group, committed_item)) = committed.try_recv() else { break };
                        self.on_committed(group, committed_item)?;
                    }
                    self.snapshot_if_due();
                    self.unblock_producers();
                }
                Ok(()) = self.status.changed() => self.on_status(),
                _ = housekeeping.tick() => self.housekeeping(),
            }
            self.propose_fresh();
        }
    }

    // ---- requests -------------------------------------------------------

    fn handle(&mut self, request: Request) {
        match request {
            Request::Register { conn, inbox } => self.clients.register(conn, inbox),
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
                if let Some(consumer) = self.clients.consumer_on(conn, link)
                    && let Some(queue) = self.clients.consumer(consumer).map(|c| c.queue.clone())
                {
                    let command = Command::Credit {
                        consumer,
                        credit,
                        drain,
                    };
                    self.propose(&queue, command, None, Reply::None);
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
                let command = Command::Settle {
                    queue: queue.clone(),
                    seq,
                    outcome,
                };
                self.propose(&queue, command, Some(consumer), Reply::None);
            }
            Request::Detach { conn, link, closed } => self.detach(conn, link, closed),
            Request::ReplicaStatuses { reply } => {
                let rejoining = self.status.borrow().rejoining.clone();
                let digests = self
                    .groups
                    .iter()
                    .map(|(&group, state)| ReplicaStatus {
                        group,
                        leader: state.leader,
                        applied: state.applied,
                        digest: state.state.digest(),
                        rejoining: rejoining.contains(&group),
                    })
                    .collect();
                let _ = reply.send(digests);
            }
            Request::QueueInfo { reply } => {
                let mut info: Vec<_> = self
                    .groups
                    .values()
                    .flat_map(|group| {
                        let queues = group.state.queues();
                        queues
                            .declared()
                            .filter_map(|(name, _)| Some((name.to_owned(), queues.info(name)?)))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                info.sort_by(|a, b| a.0.cmp(&b.0));
                let _ = reply.send(info);
            }
            Request::Disconnect { conn } => {
                for link in self.clients.links_of(conn) {
                    self.detach(conn, link, false);
                }
                self.clients.forget_connection(conn);
            }
        }
    }

    /// Queues a command for the group of `queue`.
    fn propose(&mut self, queue: &str, command: Command, guard: Option<ConsumerId>, reply: Reply) {
        let group = self.placement.group_of(queue);
        self.propose_to(group, command, guard, reply);
    }

    fn propose_to(
        &mut self,
        group: GroupId,
        command: Command,
        guard: Option<ConsumerId>,
        reply: Reply,
    ) {
        if let Some(group) = self.groups.get_mut(&group) {
            if group.outbox.is_idle() {
                group.proposed_at = self.io.now();
            }
            group.outbox.push(command, guard, reply);
        }
    }

    /// Whether the queue is declared in its group, as applied here.
    fn exists(&self, queue: &str) -> bool {
        let group = self.placement.group_of(queue);
        self.groups
            .get(&group)
            .is_some_and(|group| group.state.queues().info(queue).is_some())
    }

    fn attach_consumer(
        &mut self,
        conn: ConnId,
        link: LinkId,
        node: ConsumerNode,
        link_name: &str,
        container_id: &str,
    ) -> Result<(), Refusal> {
        let (node_id, start) = (self.origin.node(), self.origin.start());
        let next_dynamic = &mut self.next_dynamic;
        // A name no other node, and no earlier start of this one, uses.
        let unique = || {
            *next_dynamic += 1;
            format!("{node_id}.{start}.{next_dynamic}")
        };
        let ConsumerTarget {
            queue,
            address,
            browse,
            lifetime,
            declare,
            ..
        } = ConsumerTarget::of(node, link_name, container_id, &self.settings, unique);
        match declare {
            Some(config) => self.declare(&queue, config),
            None => self.ensure_queue_for_attach(&queue)?,
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
        let attach = Command::Attach {
            consumer,
            queue: queue.clone(),
            browse,
        };
        let reply = Reply::Attached {
            conn,
            link,
            consumer,
            address,
        };
        self.propose(&queue, attach, None, reply);
        Ok(())
    }

    /// Declares the queue an attach names if it does not exist and the
    /// configuration allows it. A declaration still on its way is
    /// proposed again; the group keeps the first.
    fn ensure_queue_for_attach(&mut self, name: &str) -> Result<(), Refusal> {
        if self.exists(name) {
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
        if self.exists(queue) {
            return;
        }
        let group = self.placement.group_of(queue);
        info!(queue, group, "declaring a queue");
        let command = Command::Declare {
            queue: queue.to_owned(),
            config,
        };
        self.propose_to(group, command, None, Reply::None);
    }

    fn attach_producer(&mut self, conn: ConnId, link: LinkId, node: ProducerNode) {
        let result = match &node {
            ProducerNode::Queue(name) => self.ensure_queue_for_attach(name),
            ProducerNode::Topic(_) | ProducerNode::AnonymousRelay => Ok(()),
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
        self.detaching.insert(consumer);
        self.propose(&info.queue, Command::Detach { consumer }, None, Reply::None);
        if info.lifetime.ends_with(closed) {
            let delete = Command::Delete {
                queue: info.queue.clone(),
            };
            self.propose(&info.queue, delete, None, Reply::None);
        }
    }

    // ---- publishing and producer credit ---------------------------------

    fn publish(&mut self, conn: ConnId, delivery: DeliveryId, message: Bytes, settled: bool) {
        let Some(node) = self.clients.producer_node(conn, delivery.link) else {
            return;
        };
        // Whether a queue exists, and which subscriptions a topic has, is
        // the group's to say when it applies the enqueue: a declaration may
        // still be on its way, and a topic's enqueue goes to the topic's
        // group, which fans it out to the subscriptions it has then.
        let topic_address = |topic: &str| vec![format!("{TOPIC_PREFIX}{topic}")];
        let routed = destinations(node, &message, |_| true, topic_address);
        match routed {
            Ok((queues, inspected)) => {
                let publish =
                    self.clients
                        .start_publish(conn, delivery, settled, queues.len(), None);
                for queue in queues {
                    let persist_always = self.settings.persist_always(&queue);
                    let message = inspected.new_message(message.clone(), persist_always);
                    *self.pending_enqueues.entry(queue.clone()).or_default() += 1;
                    let command = Command::Enqueue {
                        queue: queue.clone(),
                        // The group numbers it (see `GroupState::apply`).
                        seq: 0,
                        message,
                    };
                    self.propose(&queue, command, None, Reply::Publish(publish));
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
        self.clients.producer_sent(conn, delivery.link);
        self.top_up_credit(conn, delivery.link);
    }

    fn top_up_credit(&mut self, conn: ConnId, link: LinkId) {
        if self.clients.wants_top_up(conn, link) {
            self.grant_credit(conn, link);
        }
    }

    fn grant_credit(&mut self, conn: ConnId, link: LinkId) {
        let Some(node) = self.clients.producer_node(conn, link) else {
            return;
        };
        let room = self.room_for(node);
        self.clients.grant_credit(conn, link, room);
    }

    /// How many more messages `node` can take: none while a group it
    /// writes to has no leader (a partitioned minority takes nothing), or
    /// above the memory watermark; else the smallest room among its queues,
    /// counting enqueues on their way as taken.
    fn room_for(&self, node: &ProducerNode) -> u64 {
        if self.above_memory_watermark() {
            return 0;
        }
        let room = |queue: &String| {
            let group = &self.groups[&self.placement.group_of(queue)];
            if group.leader.is_none() {
                return 0;
            }
            let pending = self.pending_enqueues.get(queue).copied().unwrap_or(0);
            let configured = || {
                self.settings
                    .queue_config(queue)
                    .max_length
                    .unwrap_or(u64::MAX)
            };
            let room = group.state.queues().room(queue).unwrap_or_else(configured);
            room.saturating_sub(pending)
        };
        match node {
            ProducerNode::Queue(queue) => room(queue),
            // One enqueue of the topic's address, in the topic's group,
            // whatever its subscriptions.
            ProducerNode::Topic(topic) => {
                let address = format!("{TOPIC_PREFIX}{topic}");
                let subscriptions = self.topics.get(topic).into_iter().flatten();
                let fullest = subscriptions.map(room).min().unwrap_or(u64::MAX);
                room(&address).min(fullest)
            }
            ProducerNode::AnonymousRelay => u64::MAX,
        }
    }

    fn above_memory_watermark(&self) -> bool {
        let Some(watermark) = self.settings.config.limits.memory_high_watermark() else {
            return false;
        };
        let held: u64 = self
            .groups
            .values()
            .flat_map(|group| {
                let queues = group.state.queues();
                queues
                    .declared()
                    .filter_map(|(name, _)| queues.info(name))
                    .map(|info| info.bytes)
                    .collect::<Vec<_>>()
            })
            .sum();
        held >= watermark
    }

    fn unblock_producers(&mut self) {
        for (conn, link) in self.clients.blocked() {
            self.grant_credit(conn, link);
        }
    }

    fn finish_publish_if_done(&mut self, publish: u64) {
        if let Some((conn, link)) = self.clients.finish_publish_if_done(publish) {
            self.top_up_credit(conn, link);
        }
    }

    // ---- proposing --------------------------------------------------------

    /// Sends what this wake-up queued, one entry per group (or a few, for a
    /// large batch).
    fn propose_fresh(&mut self) {
        for (&id, group) in &mut self.groups {
            for entry in group.outbox.take_fresh(self.now_ms) {
                self.handle.propose(id, entry);
            }
        }
    }

    /// Proposes again everything of `group` not applied yet.
    fn retry(&mut self, id: GroupId) {
        let now = self.io.now();
        if let Some(group) = self.groups.get_mut(&id) {
            group.proposed_at = now;
            for entry in group.outbox.take_all(self.now_ms) {
                self.handle.propose(id, entry);
            }
        }
    }

    fn on_status(&mut self) {
        let status = self.status.borrow_and_update().clone();
        let mut elected = Vec::new();
        for (id, group) in &mut self.groups {
            let leader = status.leaders.get(id).copied().flatten();
            if leader != group.leader {
                if leader.is_some() {
                    elected.push(*id);
                }
                group.leader = leader;
            }
        }
        // A new leader may never have seen what the old one was sent.
        for id in elected {
            debug!(
                group = id,
                "new leader: proposing again what is not applied"
            );
            self.retry(id);
        }
        self.unblock_producers();
    }

    fn housekeeping(&mut self) {
        let now = self.io.now();
        let stale: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, group)| {
                !group.outbox.is_idle() && now.duration_since(group.proposed_at) >= RETRY_AFTER
            })
            .map(|(&id, _)| id)
            .collect();
        for id in stale {
            debug!(
                group = id,
                "proposals not applied in time: proposing them again"
            );
            self.retry(id);
        }
        self.propose_expiries();
        self.detach_orphans();
    }

    /// Proposes an `Expire` to each group this node leads once its earliest
    /// expiry is due. Only the leader does, so that the members do not all
    /// propose one.
    fn propose_expiries(&mut self) {
        let due: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, group)| {
                group.leader == Some(self.node_id)
                    && !group.expiring
                    && group
                        .state
                        .queues()
                        .next_expiry()
                        .is_some_and(|due_ms| due_ms <= self.now_ms)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            if let Some(group) = self.groups.get_mut(&id) {
                group.expiring = true;
            }
            self.propose_to(id, Command::Expire, None, Reply::Expire);
        }
    }

    /// Detaches the consumers nobody serves: those this node registered
    /// before it restarted, and, in the groups it leads, those of nodes it
    /// has not heard from for a while. What they hold returns to the queue.
    fn detach_orphans(&mut self) {
        let unreachable = self.status.borrow().unreachable.clone();
        let mut orphans = Vec::new();
        let mut present = BTreeSet::new();
        for (&id, group) in &self.groups {
            let leading = group.leader == Some(self.node_id);
            for consumer in group.state.queues().consumer_ids() {
                present.insert(consumer);
                let owner = Origin::of_consumer(consumer).node();
                let orphan = if owner == self.node_id {
                    self.clients.consumer(consumer).is_none()
                } else {
                    leading && unreachable.contains(&owner)
                };
                if orphan && !self.detaching.contains(&consumer) {
                    orphans.push((id, consumer));
                }
            }
        }
        self.detaching.retain(|consumer| present.contains(consumer));
        for (id, consumer) in orphans {
            info!(
                consumer,
                node = Origin::of_consumer(consumer).node(),
                "detaching an orphaned consumer"
            );
            self.detaching.insert(consumer);
            self.propose_to(id, Command::Detach { consumer }, None, Reply::None);
        }
    }
}
