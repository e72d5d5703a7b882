//! The node core: what a node does for its connections' requests and with
//! what its commit step commits, as a sans-IO state machine in quinn's
//! shape: `handle_*` inputs, each with the time, and `poll_*` outputs. One
//! core serves a single node and a cluster node alike; they differ only in
//! their commit step ([`Step`]), which their drivers carry out: the single
//! node's own log (`super::single`) or Raft groups (`super::cluster`).
//!
//! Every command a node makes goes into its group's outbox as an item of
//! this node's session with the group ([`super::state`]); the outbox's new
//! items leave together as one entry per group at the end of each wake-up
//! ([`Core::poll_to_groups`]). Whatever the step commits is applied, in the
//! group's order, by [`apply`]: the same state-machine code for every step,
//! so a single node behaves as a client sees it like a one-member cluster.

mod access;
mod apply;
mod manage;
mod subscriptions;
mod temporary;
mod transactions;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::origin::Origin;
use super::placement::Placement;
use super::proposer::{Entry, Outbox};
use super::state::{Applied, GroupState};
use crate::amqp::engine::{DeliveryId, LinkId};
use crate::amqp::types::{Error, condition};
use crate::node::address::{destinations, is_subscription};
use crate::node::clients::{Clients, Consumer, ConsumerTarget, subscription_not_found};
use crate::node::{
    Blocked, ConnId, ConsumerNode, GroupQueue, ManageError, Managed, NodeError, NodeReport,
    NodeSettings, Now, ProducerNode, QueueOptions, Refusal, ReplicaStatus, Request, SettleAnswer,
    TOPIC_PREFIX, ToConnection,
};
use crate::permissions::Operation;
use crate::queue::{
    Command, ConsumerId, Effect, MessageFilter, Outcome, PageSync, QueueConfig, QueueInfo,
};
use crate::raft::group::Status;
use crate::raft::replica::NodeId;
use crate::raft::wal::GroupId;

/// How often the node looks for lost proposals, due expiries and consumers
/// to detach.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(100);

/// Items not applied this long after they were last proposed are proposed
/// again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// A gap in this node's applied items (a later item applied before an
/// earlier one, which was lost) has them proposed again at once, but not
/// sooner than this after the last time.
const GAP_RETRY_AFTER: Duration = Duration::from_millis(200);

/// A group's state is snapshotted, and its log compacted, after
/// `storage.snapshot_every_records` entries or this many bytes of entries,
/// whichever comes first.
const SNAPSHOT_EVERY_BYTES: usize = 64 << 20;

/// While producers are blocked for want of disk space, a group's log since
/// its last snapshot must be larger than this (besides twice its state)
/// for a snapshot to be worth it, unless its state halved since.
const DISK_SHORT_SNAPSHOT_MIN_BYTES: u64 = 1 << 20;

/// Entries kept before a snapshot's index when the log is compacted (at
/// most `storage.snapshot_every_records`), so that a follower a little
/// behind catches up from entries rather than from the whole state.
const COMPACTION_KEEP: u64 = 1024;

/// How long new items that are all accepting settles may wait for company
/// before they are proposed on their own (see [`lingers`]).
const SETTLE_LINGER: Duration = Duration::from_millis(1);

/// How long after a failed snapshot of a state ahead of its log (see
/// [`Unlogged`]) another is asked for: the disk may still be full, and each
/// encodes the whole state.
const SNAPSHOT_RETRY_AFTER: Duration = Duration::from_millis(500);

/// What a producer hears of a message refused while a group's state is
/// ahead of its log (see [`Unlogged`]).
const NOT_DURABLE: &str = "the broker's disk was full, and its state is not yet saved";

/// Why a queue that pages refuses a non-durable message, after its name.
const TRANSIENT_REFUSED: &str = "holds its backlog on disk, and this broker does not page \
     non-durable messages (limits.page_transient_messages = false): send it durable, or later";

/// The commit step: what makes a node's entries durable and orders them.
/// It is the one thing in which a single node and a cluster node differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// The node's own group-commit log: one group, led by this node and
    /// proposed to by nobody else; an entry is committed once fsynced, at
    /// its position in the log, exactly once and in order, or refused when
    /// the disk is full ([`Commit::Refused`]). So nothing is retried.
    Local,
    /// Raft groups that every node is a member of: an entry may be lost
    /// (proposed again), committed twice (the sessions skip it), or
    /// applied out of this node's sight (a snapshot installed).
    Raft,
}

/// What a commit step hands the core, per group, in the group's order.
#[derive(Debug)]
pub(super) enum Commit {
    /// The entry at `index` is committed; `data` is empty for an entry that
    /// carries no batch (one of Raft's own).
    Entry { index: u64, data: Bytes },
    /// The group's state is a snapshot's, as of `index`.
    Snapshot { index: u64, data: Bytes },
    /// The local step could not make one of this node's entries durable:
    /// the disk is full.
    Refused(Bytes),
}

/// What the core asks of its commit step.
#[derive(Debug)]
pub(super) enum ToGroups {
    /// Propose an entry to a group.
    Propose(GroupId, Entry),
    /// A group's state as of entry `index`: its log before may go, but for
    /// the `keep` entries before `index`. `number` counts the snapshots
    /// asked for, from 1: the local step reports it back once the snapshot
    /// is durable, or failed ([`Core::handle_snapshot`]). The state names
    /// paged messages that are durable only once `pages` is done: the
    /// snapshot must wait for it.
    Compact {
        group: GroupId,
        index: u64,
        state: Bytes,
        keep: u64,
        number: u64,
        pages: PageSync,
    },
}

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
    /// A transaction's commit: answers the discharge, counted as publish
    /// `publish`; if the group refused it, gives back what it settled.
    Discharge {
        publish: u64,
        unsettles: Vec<transactions::Unsettle>,
    },
    /// The group's `Expire`: another may be proposed.
    Expire,
    /// A consumer's settle whose client waits for the broker's: answered
    /// once applied, unless the group dropped it as stale.
    Settled(SettleAnswer),
    /// An operator's purge, move or deletion (see [`manage`]): answers
    /// command `id` with what the group did.
    Manage(u64),
    /// The planted `txn-partial-commit`'s first half of a commit: proposes
    /// the rest, which answers the discharge.
    PlantedRest {
        queue: String,
        rest: Vec<crate::queue::Guarded>,
        publish: u64,
        unsettles: Vec<transactions::Unsettle>,
    },
}

/// A change that the local step holds back until its turn: a consumer's
/// change that is not logged as it is, due once every item of ours up to
/// `after` is applied (see [`Core::credit`] and [`Core::detach_consumer`]),
/// or a command made after a held-back detach, due once the detach is
/// carried out.
#[derive(Debug)]
struct HeldBack {
    after: u64,
    change: Held,
}

#[derive(Debug)]
enum Held {
    /// Proposed once it is at the front.
    Propose {
        command: Box<Command>,
        guard: Option<ConsumerId>,
        reply: Reply,
    },
    /// Applied, not logged.
    Credit {
        consumer: ConsumerId,
        credit: u32,
        drain: bool,
    },
    /// Made into the logged commands that fail what the consumer holds,
    /// then detach it (and delete its queue, if its link closed that).
    Detach {
        consumer: ConsumerId,
        delete: Option<String>,
    },
    /// An operator's purge or move, made once what consumers hold is
    /// known (see [`manage`]), then proposed to answer command `id`.
    Manage { id: u64, command: Box<Command> },
}

/// Over the local step, a group whose state holds what its log does not:
/// the items of an entry the full disk refused, applied in memory only
/// (see `apply::refuse_entry`). A replay of the log would rebuild another
/// state, in which a message settled here is back, and there an enqueue
/// could be decided otherwise: a length limit reached sooner refuses a
/// message accepted here, which a restart would lose (found by the
/// simulator: replays/recovery-lost-limited-queue-messages-0x93.toml). So
/// until a snapshot of this state is durable, the group takes no new
/// message (its producers get no credit, and what they send regardless is
/// refused), and what it applies of messages already on their way to the
/// log is answered only then.
#[derive(Debug)]
struct Unlogged {
    /// The snapshot, by number, from which on every snapshot holds what was
    /// applied in memory only.
    snapshot: u64,
    /// When to ask for one again, after one failed.
    retry_at: Option<Instant>,
    /// The replies to publishes and discharges applied meanwhile, in order.
    answers: Vec<Reply>,
}

/// One group, as this node sees it.
struct Group {
    state: GroupState,
    outbox: Outbox<Reply>,
    /// When the outbox last proposed what is waiting.
    proposed_at: Instant,
    /// Until when new items that only settle may wait for company.
    linger_until: Option<Instant>,
    /// Over the local step, consumers' changes that are not logged as
    /// they are, each waiting for the items before it to be applied.
    held_back: VecDeque<HeldBack>,
    /// The newest item when a held-back change was last carried out: what
    /// was held back then comes after it too (see [`Group::turn_of`]).
    /// Kept here rather than raised in every change still held back, which
    /// cost a connection that dropped with 65,536 consumers quadratic time.
    held_floor: u64,
    /// What is not applied up to `held_floor` is only detaches' commands
    /// (see [`Core::carry_out_detaches`]).
    floor_by_detaches: bool,
    /// The leader as last known; `None` while there is none.
    leader: Option<NodeId>,
    /// An `Expire` of ours is waiting to be applied.
    expiring: bool,
    /// The index of the last entry applied.
    applied: u64,
    /// Entries, and their bytes, applied since the last snapshot.
    since_snapshot: (u64, usize),
    /// Over the local step, whether the state holds what the log does not.
    unlogged: Option<Unlogged>,
    /// The estimated size of its state at its last snapshot.
    snapshot_state_bytes: u64,
    /// Snapshots asked for, by number, with the page store's checkpoint
    /// each was taken at: once one is durable, what its group's pages
    /// forgot before it may go.
    checkpoints: VecDeque<(u64, u64)>,
}

impl Group {
    /// The item a held-back change waits for: its own `after`, or what
    /// a change carried out before it proposed, if later.
    fn turn_of(&self, held: &HeldBack) -> u64 {
        held.after.max(self.held_floor)
    }

    /// Whether a held-back change may be carried out now: a proposal at
    /// once, a detach behind nothing but other detaches' commands (see
    /// [`Core::carry_out_detaches`]), anything else once its turn is
    /// applied.
    fn is_due(&self, held: &HeldBack) -> bool {
        match held.change {
            Held::Propose { .. } => true,
            Held::Detach { .. } if self.floor_by_detaches && held.after <= self.held_floor => true,
            _ => self.outbox.applied_through(self.turn_of(held)),
        }
    }

    /// Whether proposals are held back: behind a consumer's detach, and
    /// behind the proposals held back after one, until they are proposed.
    fn holds_proposals(&self) -> bool {
        let proposes = |held: &HeldBack| !matches!(held.change, Held::Credit { .. });
        self.held_back.iter().any(proposes)
    }
}

/// The node core: what a node does for its connections' requests and with
/// what its groups commit, without I/O. Its driver feeds it requests,
/// commits, the groups' status and timeouts, each with the time, and
/// carries out what it asks for: proposals and compactions to its commit
/// step, messages to connections.
pub(super) struct Core {
    settings: NodeSettings,
    step: Step,
    node_id: NodeId,
    origin: Origin,
    placement: Placement,
    /// The groups' status as last reported.
    status: Status,
    /// What the groups are asked to do, oldest first.
    to_groups: VecDeque<ToGroups>,
    /// When housekeeping is due next.
    housekeeping_at: Instant,
    groups: BTreeMap<GroupId, Group>,
    /// Subscription queues, by topic, as applied.
    topics: BTreeMap<String, BTreeSet<String>>,
    clients: Clients,
    /// Enqueues proposed and not yet applied, by queue: room they will take.
    pending_enqueues: BTreeMap<String, u64>,
    /// Consumers this node has asked to detach; forgotten once gone from
    /// every group.
    detaching: BTreeSet<ConsumerId>,
    /// Queues this node is deleting, until their deletion is applied: a
    /// subscription looked up meanwhile is not found, and a declaration
    /// made meanwhile is proposed after the deletion, not skipped.
    deleting: BTreeSet<String>,
    next_consumer: u64,
    next_dynamic: u64,
    /// No request comes any more: nothing lingers.
    closing: bool,
    /// The time of the input being handled.
    now: Now,
    applied: Vec<Applied>,
    effects: Vec<Effect>,
    /// The replies of our items taken from the outbox ahead of their
    /// application, in token order (see `apply::own_batch`).
    taken_replies: VecDeque<(u64, Reply)>,
    /// The connections' open transactions.
    transactions: transactions::Transactions,
    /// How many snapshots were asked for: the number of the last one.
    snapshots_asked: u64,
    /// The temporary queues this node's producer links made (JMS temporary
    /// queues), each deleted when its link detaches.
    temporary: temporary::Temporary,
    /// Each connection's user: its permissions and limits.
    access: access::Access,
    /// The answers to operators' commands, by their number, oldest first.
    answers: VecDeque<(u64, Result<Managed, ManageError>)>,
    /// The data directory's free space, as last read, if it can be told.
    disk_free_bytes: Option<u64>,
    /// Why producers were blocked when that was last logged.
    blocked_since: Option<Blocked>,
}

impl Core {
    /// The core of incarnation `origin` over `step`, at `now`: a member of
    /// [`Core::groups`].
    pub(super) fn new(settings: NodeSettings, step: Step, origin: Origin, now: Now) -> Self {
        let node_id = settings.config.cluster.node_id;
        let group_count = Self::group_count(step, &settings);
        // The local step's one group is led by this node, always.
        let leader = (step == Step::Local).then_some(node_id);
        let groups = (1..=group_count)
            .map(|id| {
                let mut state = GroupState::default();
                state.plant(settings.config.plants);
                state.page_to(settings.paging(group_count), settings.pages.open(id));
                let group = Group {
                    state,
                    outbox: Outbox::new(origin),
                    proposed_at: now.instant,
                    linger_until: None,
                    held_back: VecDeque::new(),
                    held_floor: 0,
                    floor_by_detaches: false,
                    leader,
                    expiring: false,
                    applied: 0,
                    since_snapshot: (0, 0),
                    unlogged: None,
                    snapshot_state_bytes: 0,
                    checkpoints: VecDeque::new(),
                };
                (id, group)
            })
            .collect();
        let window = settings.config.limits.producer_credit;
        let placement = Placement::new(group_count, &settings.config);
        let access = access::Access::new(&settings.config);
        Self {
            step,
            node_id,
            status: Status::default(),
            to_groups: VecDeque::new(),
            housekeeping_at: now.instant,
            settings,
            origin,
            placement,
            groups,
            topics: BTreeMap::new(),
            clients: Clients::new(window),
            pending_enqueues: BTreeMap::new(),
            detaching: BTreeSet::new(),
            deleting: BTreeSet::new(),
            next_consumer: origin.first_consumer(),
            next_dynamic: 0,
            closing: false,
            now,
            applied: Vec::new(),
            effects: Vec::new(),
            taken_replies: VecDeque::new(),
            transactions: transactions::Transactions::default(),
            temporary: temporary::Temporary::default(),
            snapshots_asked: 0,
            access,
            answers: VecDeque::new(),
            disk_free_bytes: None,
            blocked_since: None,
        }
    }

    /// The groups a node over `step` is a member of: 1 to this.
    pub(super) fn group_count(step: Step, settings: &NodeSettings) -> u32 {
        match step {
            Step::Local => 1,
            Step::Raft => settings.config.cluster.groups_or_default(),
        }
    }

    // ---- requests -------------------------------------------------------

    /// A connection's request, at `now`. The driver keeps the channels a
    /// request may carry: it registers connections, and answers the queries
    /// from [`Core::queue_info`], [`Core::replica_status`] and
    /// [`Core::report`].
    pub(super) fn handle_request(&mut self, now: Now, request: Request) {
        self.now = now;
        self.request(request);
        self.check_invariants_if_on();
    }

    fn request(&mut self, request: Request) {
        match request {
            Request::Register { .. }
            | Request::Manage { .. }
            | Request::ReplicaStatuses { .. }
            | Request::QueueInfo { .. }
            | Request::Report { .. } => {}
            Request::Authenticated { conn, user } => {
                if let Err(refusal) = self.access.authenticated(conn, user) {
                    self.clients
                        .tell(conn, ToConnection::CloseConnection { refusal });
                }
            }
            Request::SessionBegun { conn, session } => {
                if let Err(refusal) = self.access.session_begun(conn, session) {
                    self.clients
                        .tell(conn, ToConnection::EndSession { session, refusal });
                }
            }
            Request::SessionEnded { conn, session } => self.access.session_ended(conn, session),
            Request::DiskFree { free_bytes } => {
                self.disk_free_bytes = free_bytes;
                self.unblock_producers();
            }
            Request::AttachConsumer {
                conn,
                link,
                node,
                filter,
                options,
                container_id,
            } => {
                let attached =
                    self.attach_consumer(conn, link, *node, filter, options, &container_id);
                if let Err(refusal) = attached {
                    let result = Err(refusal);
                    self.clients
                        .tell(conn, ToConnection::ConsumerAttached { link, result });
                }
            }
            Request::AttachProducer {
                conn,
                link,
                node,
                options,
            } => self.attach_producer(conn, link, node, options),
            Request::Publish {
                conn,
                delivery,
                message,
                settled,
                txn: None,
            } => self.publish(conn, delivery, message, settled),
            Request::Publish {
                conn,
                delivery,
                message,
                settled,
                txn: Some(txn),
            } => self.publish_in_transaction(conn, delivery, message, settled, txn),
            Request::Coordinate {
                conn,
                delivery,
                control,
            } => self.coordinate(conn, delivery, control),
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
            Request::AcquiredInTransaction {
                consumer,
                queue,
                seq,
                txn,
            } => self.acquire_in_transaction(consumer, queue, seq, &txn),
            Request::Settle {
                consumer,
                queue,
                seq,
                outcome,
                txn,
                answer,
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
                if let Some(txn) = txn {
                    return self.settle_in_transaction(consumer, command, &txn);
                }
                // Over Raft, another node may have detached the consumer and
                // handed its message on before the settle is committed: the
                // group applies it only while the consumer holds the
                // message. Over the local step nothing comes between, and a
                // replayed log, without credit, has nobody hold anything.
                let guard = (self.step == Step::Raft).then_some(consumer);
                let reply = match answer {
                    // PLANTED BUG (`settle-second-early`): the client
                    // hears its outcome took effect before it is applied.
                    Some(answer) if self.settings.config.plants.settle_second_early() => {
                        let SettleAnswer {
                            conn,
                            delivery,
                            state,
                        } = answer;
                        self.clients
                            .tell(conn, ToConnection::Outcome { delivery, state });
                        Reply::None
                    }
                    Some(answer) => Reply::Settled(answer),
                    None => Reply::None,
                };
                self.propose(&queue, command, guard, reply);
            }
            Request::Detach { conn, link, closed } => self.detach(conn, link, closed),
            Request::Disconnect { conn } => {
                self.end_transactions(conn, None);
                for link in self.clients.links_of(conn) {
                    self.detach(conn, link, false);
                }
                self.access.disconnected(conn);
            }
        }
    }

    /// Every queue's counters, in name order, as applied here.
    pub(super) fn queue_info(&self) -> Vec<(String, QueueInfo)> {
        let mut info: Vec<_> = self
            .queue_counters()
            .map(|(name, info)| (name.to_owned(), info))
            .collect();
        info.sort_by(|a, b| a.0.cmp(&b.0));
        info
    }

    /// Every queue's name and counters, group after group.
    fn queue_counters(&self) -> impl Iterator<Item = (&str, QueueInfo)> {
        self.groups.values().flat_map(|group| {
            let queues = group.state.queues();
            let counters = move |(name, _)| Some((name, queues.info(name)?));
            queues.declared().filter_map(counters)
        })
    }

    /// Every queue's counters and statistics, with its group, in name
    /// order, and how many snapshots this node has asked for.
    pub(super) fn report(&self) -> NodeReport {
        let mut queues: Vec<_> = self
            .groups
            .iter()
            .flat_map(|(&group, state)| {
                let reports = state.state.queues().reports();
                reports.map(move |report| GroupQueue { group, report })
            })
            .collect();
        queues.sort_by(|a, b| a.report.name.cmp(&b.report.name));
        NodeReport {
            node_id: self.node_id,
            clustered: self.step == Step::Raft,
            queues,
            groups: self.replica_status(),
            snapshots: self.snapshots_asked,
            blocked: self.blocked(self.memory_left()),
            memory_held_bytes: self.memory_held(),
            in_flight_bytes: self.clients.in_flight_bytes(),
            disk_free_bytes: self.disk_free_bytes,
        }
    }

    /// Every group's status, in group order.
    pub(super) fn replica_status(&self) -> Vec<ReplicaStatus> {
        self.groups
            .iter()
            .map(|(&group, state)| ReplicaStatus {
                group,
                leader: state.leader,
                applied: state.applied,
                digest: state.state.digest(),
                rejoining: self.status.rejoining.contains(&group),
            })
            .collect()
    }

    /// The next message for a connection.
    pub(super) fn poll_to_connection(&mut self) -> Option<(ConnId, ToConnection)> {
        self.clients.poll_to_connection()
    }

    /// The next thing the groups must do. What this node queued for them
    /// since the last call goes out first as fresh proposals, so that the
    /// commands of a burst of inputs share entries.
    pub(super) fn poll_to_groups(&mut self) -> Option<ToGroups> {
        if self.to_groups.is_empty() {
            self.propose_fresh();
        }
        self.to_groups.pop_front()
    }

    /// When [`Core::handle_timeout`] is due.
    pub(super) fn poll_timeout(&self) -> Instant {
        let lingers = self.groups.values().filter_map(|group| group.linger_until);
        lingers.fold(self.housekeeping_at, Instant::min)
    }

    /// No request will come any more: what waits is proposed at once.
    pub(super) fn handle_close(&mut self) {
        self.closing = true;
        self.check_invariants_if_on();
    }

    /// Whether everything this node proposed has been applied (or refused).
    pub(super) fn is_idle(&self) -> bool {
        let idle = |group: &Group| group.outbox.is_idle() && group.held_back.is_empty();
        self.groups.values().all(idle)
    }

    /// The local step's disk is full and gave up its reserve, of which
    /// `room` bytes are left: a snapshot that fits frees the log before it,
    /// so it is due at once.
    pub(super) fn handle_disk_full(&mut self, room: u64) {
        let fitting: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, group)| {
                group.applied > 0 && group.state.queues().snapshot_bytes_estimate() <= room
            })
            .map(|(&id, _)| id)
            .collect();
        for id in fitting {
            self.compact(id, 0);
        }
        self.check_invariants_if_on();
    }

    /// The local step wrote snapshot `number` of group `id` (`durable`), or
    /// failed to. One that holds what the state held beyond its log lets
    /// the group answer what waited for it and take messages again; one
    /// that failed is asked for again a little later.
    pub(super) fn handle_snapshot(&mut self, now: Now, id: GroupId, number: u64, durable: bool) {
        self.now = now;
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        if durable {
            while let Some(&(taken, checkpoint)) = group.checkpoints.front()
                && taken <= number
            {
                group.state.pager_mut().release(checkpoint);
                group.checkpoints.pop_front();
            }
        }
        match &mut group.unlogged {
            Some(unlogged) if number >= unlogged.snapshot && durable => {
                info!(
                    group = id,
                    number,
                    "what was applied in memory only is in a snapshot: taking messages again"
                );
                let answers = std::mem::take(&mut unlogged.answers);
                group.unlogged = None;
                for reply in answers {
                    self.on_own_applied(id, reply);
                }
                self.unblock_producers();
            }
            Some(unlogged) if number >= unlogged.snapshot && unlogged.retry_at.is_none() => {
                unlogged.retry_at = Some(now.instant + SNAPSHOT_RETRY_AFTER);
            }
            _ => {}
        }
        self.check_invariants_if_on();
    }

    /// Time passed: housekeeping, if due.
    pub(super) fn handle_timeout(&mut self, now: Now) {
        self.now = now;
        if now.instant >= self.housekeeping_at {
            self.housekeeping_at = now.instant + HOUSEKEEPING_EVERY;
            self.housekeeping();
        }
        self.check_invariants_if_on();
    }

    /// What the commit step committed (or refused), in each group's order.
    ///
    /// # Errors
    ///
    /// [`NodeError::Snapshot`] if a snapshot does not decode.
    pub(super) fn handle_committed(
        &mut self,
        now: Now,
        committed: impl IntoIterator<Item = (GroupId, Commit)>,
    ) -> Result<(), NodeError> {
        self.now = now;
        for (group, committed) in committed {
            self.on_committed(group, committed)?;
        }
        self.snapshot_if_due();
        self.unblock_producers();
        self.check_invariants_if_on();
        Ok(())
    }

    /// Queues a command for the group of `queue`.
    fn propose(&mut self, queue: &str, command: Command, guard: Option<ConsumerId>, reply: Reply) {
        let group = self.placement.group_of(queue);
        self.propose_to(group, command, guard, reply);
    }

    /// Queues a command for group `id`: in its outbox, or held back behind
    /// a consumer's held-back detach.
    fn propose_to(
        &mut self,
        id: GroupId,
        command: Command,
        guard: Option<ConsumerId>,
        reply: Reply,
    ) {
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        // Behind a held-back detach, whose commands are made only at its
        // turn, a command waits to be proposed after them.
        if group.holds_proposals() {
            let after = group.outbox.newest_token();
            let change = Held::Propose {
                command: Box::new(command),
                guard,
                reply,
            };
            return group.held_back.push_back(HeldBack { after, change });
        }
        self.push_to_outbox(id, command, guard, reply);
    }

    /// Queues a command in the outbox of group `id`, to be proposed.
    fn push_to_outbox(
        &mut self,
        id: GroupId,
        command: Command,
        guard: Option<ConsumerId>,
        reply: Reply,
    ) {
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        if group.outbox.is_idle() {
            group.proposed_at = self.now.instant;
        }
        group.outbox.push(command, guard, reply);
    }

    /// Sets a consumer's credit. Over Raft it is proposed like any command.
    /// Over the local step it is never logged (a replay has no consumers
    /// to deliver to; what a detach counts is logged as it is made, see
    /// [`Core::detach_consumer`]), and it is applied at once when only
    /// enqueues and accepting settles wait for their fsync: that delivers
    /// what it would have delivered behind them, in the same order (see
    /// [`super::proposer::overtakable`]). Waiting would cost the consumer
    /// an fsync per credit top-up: with a window of 10 (Proton Python's
    /// default) it received a quarter of the messages a second
    /// (`docs/performance.md`). Behind
    /// anything else (a settle that returns a message, this consumer's
    /// attach, an earlier held-back change) and for a drain, which looks
    /// at what is there now, it is held back until its turn.
    fn credit(&mut self, consumer: ConsumerId, credit: u32, drain: bool) {
        let Some(queue) = self.clients.consumer(consumer).map(|c| c.queue.clone()) else {
            return;
        };
        let id = self.placement.group_of(&queue);
        if self.step == Step::Raft {
            let command = Command::Credit {
                consumer,
                credit,
                drain,
            };
            return self.propose_to(id, command, None, Reply::None);
        }
        let change = Held::Credit {
            consumer,
            credit,
            drain,
        };
        let Some(group) = self.groups.get(&id) else {
            return;
        };
        if !drain && group.outbox.credit_may_overtake() && group.held_back.is_empty() {
            self.carry_out_held(id, change);
        } else {
            self.hold_back(id, change);
        }
    }

    /// Detaches `consumer` of group `id`, and then deletes `delete`. Over
    /// Raft the detach is proposed, and the group fails what the consumer
    /// holds when it applies it. Over the local step, what the consumer
    /// holds is known only once every item before the detach is applied
    /// (its settles may still wait for their fsync), and is not in the log:
    /// so the detach is held back until then, and made into the settles
    /// that fail what it holds, logged, and the detach itself.
    fn detach_consumer(&mut self, id: GroupId, consumer: ConsumerId, delete: Option<String>) {
        self.detaching.insert(consumer);
        if let Some(queue) = &delete {
            self.deleting.insert(queue.clone());
        }
        if self.step == Step::Local {
            return self.hold_back(id, Held::Detach { consumer, delete });
        }
        self.propose_to(id, Command::Detach { consumer }, None, Reply::None);
        if let Some(queue) = delete {
            self.propose_to(id, Command::Delete { queue }, None, Reply::None);
        }
    }

    /// Queues a change until every item pushed so far is applied.
    fn hold_back(&mut self, id: GroupId, change: Held) {
        if let Some(group) = self.groups.get_mut(&id) {
            let after = group.outbox.newest_token();
            group.held_back.push_back(HeldBack { after, change });
        }
        self.carry_out_due(id);
    }

    /// Carries out the held-back changes whose turn has come.
    pub(super) fn carry_out_due(&mut self, id: GroupId) {
        while let Some(group) = self.groups.get_mut(&id)
            && group
                .held_back
                .front()
                .is_some_and(|held| group.is_due(held))
            && let Some(held) = group.held_back.pop_front()
        {
            let by_detaches = match held.change {
                Held::Detach { consumer, delete } => {
                    self.carry_out_detaches(id, consumer, delete);
                    true
                }
                change => {
                    // A credit proposes nothing: what is not applied stays
                    // as it was.
                    let keeps = matches!(change, Held::Credit { .. }) && group.floor_by_detaches;
                    self.carry_out_held(id, change);
                    keeps
                }
            };
            // What comes next came after what was just proposed.
            if let Some(group) = self.groups.get_mut(&id) {
                group.held_floor = group.outbox.newest_token();
                group.floor_by_detaches = by_detaches;
            }
        }
    }

    /// Carries out a held-back detach of `consumer` together with the
    /// detaches right behind it that are due: a connection that drops
    /// detaches all its consumers at once. One at a time, each would wait
    /// for the log to apply the one before (what it proposed comes before
    /// the next), and every proposal of every client would wait behind
    /// them: 65,536 consumers held the node for as many fsyncs. Together is
    /// the same: each one's credit is taken before the commands of those
    /// before it are applied, so that nothing they give back reaches it,
    /// and what it holds is known now. So a detach is due behind nothing
    /// but detaches' commands ([`Group::is_due`]), as well as once its turn
    /// is applied.
    fn carry_out_detaches(&mut self, id: GroupId, consumer: ConsumerId, delete: Option<String>) {
        let mut detaches = vec![(consumer, delete)];
        while let Some(group) = self.groups.get_mut(&id)
            && group.held_back.front().is_some_and(|held| {
                matches!(held.change, Held::Detach { .. }) && group.is_due(held)
            })
            && let Some(HeldBack {
                change: Held::Detach { consumer, delete },
                ..
            }) = group.held_back.pop_front()
        {
            detaches.push((consumer, delete));
        }
        for &(consumer, _) in &detaches {
            let command = Command::Credit {
                consumer,
                credit: 0,
                drain: false,
            };
            self.apply_volatile(id, command);
        }
        for (consumer, delete) in detaches {
            self.carry_out_held(id, Held::Detach { consumer, delete });
        }
    }

    fn carry_out_held(&mut self, id: GroupId, change: Held) {
        match change {
            Held::Propose {
                command,
                guard,
                reply,
            } => self.push_to_outbox(id, *command, guard, reply),
            Held::Credit {
                consumer,
                credit,
                drain,
            } => {
                let command = Command::Credit {
                    consumer,
                    credit,
                    drain,
                };
                self.apply_volatile(id, command);
            }
            Held::Detach { consumer, delete } => {
                let Some(group) = self.groups.get(&id) else {
                    return;
                };
                for command in group.state.queues().detach_commands(consumer) {
                    match command {
                        // Taking its credit first keeps what it held from
                        // being delivered to it again meanwhile.
                        Command::Credit { .. } => self.apply_volatile(id, command),
                        command => self.push_to_outbox(id, command, None, Reply::None),
                    }
                }
                if let Some(queue) = delete {
                    self.push_to_outbox(id, Command::Delete { queue }, None, Reply::None);
                }
            }
            Held::Manage {
                id: answer,
                command,
            } => self.carry_out_manage(id, answer, *command),
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
        filter: Option<Box<MessageFilter>>,
        options: Option<Box<QueueOptions>>,
        container_id: &str,
    ) -> Result<(), Refusal> {
        self.admit_link(conn, link)?;
        let lookup = match &node {
            ConsumerNode::Lookup(subscription) => Some(subscription.name.clone()),
            _ => None,
        };
        let dynamic = matches!(node, ConsumerNode::Dynamic);
        let (origin, next_dynamic) = (self.origin, &mut self.next_dynamic);
        let (topics, deleting) = (&self.topics, &self.deleting);
        // Among the subscriptions only, however many other queues there are.
        let existing = |id: &str| {
            topics
                .values()
                .flatten()
                .find(|queue| is_subscription(queue, id) && !deleting.contains(*queue))
                .cloned()
        };
        let unique = || temporary::unique_name(origin, next_dynamic);
        let ConsumerTarget {
            queue,
            address,
            browse,
            deleted_on_close,
            declare,
            filter,
        } = ConsumerTarget::of(node, filter, container_id, &self.settings, unique, existing)?;
        let op = if browse {
            Operation::Browse
        } else {
            Operation::Receive
        };
        // PLANTED BUG (`receive-unchecked`): any user consumes anything.
        if !self.settings.config.plants.receive_unchecked() {
            let checked = self.access.check(conn, &address, op);
            if let (Some(name), Err(_)) = (&lookup, &checked) {
                // A subscription of a topic the user may not read is as if
                // it were not there: the answer says nothing of either.
                return Err(subscription_not_found(name));
            }
            checked?;
        }
        match declare {
            Some(mut config) => {
                if dynamic {
                    self.access.check(conn, &address, Operation::Manage)?;
                }
                if let Some(options) = &options {
                    options.apply(&mut config);
                }
                self.replace_changed_subscription(&queue, &config)?;
                self.declare(&queue, config);
            }
            None => self.ensure_queue_for_attach(conn, &queue, options.as_deref())?,
        }
        let consumer = self.next_consumer;
        self.next_consumer += 1;
        let info = Consumer {
            conn,
            link,
            queue: queue.clone(),
            deleted_on_close,
        };
        self.clients.add_consumer(consumer, info);
        let attach = Command::Attach {
            consumer,
            queue: queue.clone(),
            browse,
            filter,
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
    /// configuration allows it, with what the attach asks of it. A
    /// declaration still on its way is proposed again; the group keeps the
    /// first.
    ///
    /// Creating the queue takes `manage` on its name as well; the caller has
    /// checked the link's own operation already, so that only a user allowed
    /// on the address learns whether the queue exists.
    fn ensure_queue_for_attach(
        &mut self,
        conn: ConnId,
        name: &str,
        options: Option<&QueueOptions>,
    ) -> Result<(), Refusal> {
        if self.exists(name) {
            return Ok(());
        }
        if !self.settings.auto_create(name) {
            return Err(Refusal {
                condition: condition::NOT_FOUND,
                description: format!("no queue named {name:?}"),
            });
        }
        self.access.check(conn, name, Operation::Manage)?;
        let mut config = self.settings.queue_config(name);
        if let Some(options) = options {
            options.apply(&mut config);
        }
        self.declare(name, config);
        Ok(())
    }

    fn declare(&mut self, queue: &str, config: QueueConfig) {
        if self.exists(queue) && !self.deleting.contains(queue) {
            return;
        }
        let group = self.placement.group_of(queue);
        info!(queue, group, "declaring a queue");
        let command = Command::Declare {
            queue: queue.to_owned(),
            config: Box::new(config),
        };
        self.propose_to(group, command, None, Reply::None);
    }

    fn attach_producer(
        &mut self,
        conn: ConnId,
        link: LinkId,
        node: ProducerNode,
        options: Option<Box<QueueOptions>>,
    ) {
        let options = options.as_deref();
        let (node, result) = match self.admit_link(conn, link) {
            Err(refusal) => (node, Err(refusal)),
            Ok(()) => self.producer_target(conn, link, node, options),
        };
        let accepted = result.is_ok();
        self.clients
            .tell(conn, ToConnection::ProducerAttached { link, result });
        if accepted {
            self.clients.add_producer(conn, link, node);
            self.grant_credit(conn, link);
        }
    }

    /// Where a producer's link sends, once its user may: the queue (made
    /// if the user may create it), the topic, a temporary node made for it,
    /// or the anonymous relay, whose every message is checked instead.
    fn producer_target(
        &mut self,
        conn: ConnId,
        link: LinkId,
        node: ProducerNode,
        options: Option<&QueueOptions>,
    ) -> (ProducerNode, Result<Option<String>, Refusal>) {
        match node {
            ProducerNode::Queue(name) => {
                let result = self
                    .access
                    .check(conn, &name, Operation::Send)
                    .and_then(|()| self.ensure_queue_for_attach(conn, &name, options))
                    .map(|()| None);
                (ProducerNode::Queue(name), result)
            }
            ProducerNode::Dynamic { topic } => {
                let address = self.next_temporary_address(topic);
                let allowed = self
                    .access
                    .check(conn, &address, Operation::Send)
                    .and_then(|()| self.access.check(conn, &address, Operation::Manage));
                if let Err(refusal) = allowed {
                    return (ProducerNode::Dynamic { topic }, Err(refusal));
                }
                let (node, address) = self.temporary_node(conn, link, topic, options);
                (node, Ok(Some(address)))
            }
            ProducerNode::Topic(topic) => {
                let result = self
                    .access
                    .check(conn, &format!("{TOPIC_PREFIX}{topic}"), Operation::Send)
                    .map(|()| None);
                (ProducerNode::Topic(topic), result)
            }
            ProducerNode::AnonymousRelay => (ProducerNode::AnonymousRelay, Ok(None)),
        }
    }

    /// Whether `conn` may attach one more link: it, its session and its
    /// user are within the user's limits.
    fn admit_link(&self, conn: ConnId, link: LinkId) -> Result<(), Refusal> {
        self.access
            .admit_link(conn, link, |conn| self.clients.links_of(conn).len())
    }

    fn detach(&mut self, conn: ConnId, link: LinkId, closed: bool) {
        self.end_transactions(conn, Some(link));
        self.delete_temporary_node(conn, link);
        let Some((consumer, info)) = self.clients.remove_link(conn, link) else {
            return;
        };
        let id = self.placement.group_of(&info.queue);
        let delete = (info.deleted_on_close && closed).then_some(info.queue);
        self.detach_consumer(id, consumer, delete);
    }

    // ---- publishing and producer credit ---------------------------------

    fn publish(&mut self, conn: ConnId, delivery: DeliveryId, message: Bytes, settled: bool) {
        let bytes = message.len() as u64;
        // Counted before its publish starts, which may answer it at once.
        self.clients.producer_sent(conn, delivery.link, bytes);
        let Some(node) = self.clients.producer_node(conn, delivery.link) else {
            return;
        };
        // Whether a queue exists, and which subscriptions a topic has, is
        // the group's to say when it applies the enqueue: a declaration may
        // still be on its way, and a topic's enqueue goes to the topic's
        // group, which fans it out to the subscriptions it has then.
        let topic_address = |topic: &str| vec![format!("{TOPIC_PREFIX}{topic}")];
        // PLANTED BUG (`relay-unchecked`): the relay sends anywhere.
        let unchecked = self.settings.config.plants.relay_unchecked();
        let may_relay = |address: &str| {
            if unchecked {
                return Ok(());
            }
            self.access.check_message(conn, address, Operation::Send)
        };
        let routed = destinations(node, &message, |_| true, topic_address, may_relay);
        match routed {
            Ok((queues, inspected)) => {
                let publish =
                    self.clients
                        .start_publish(conn, delivery, settled, queues.len(), None, bytes);
                for queue in queues {
                    if !self.takes_messages(self.placement.group_of(&queue)) {
                        let error = Error::new(condition::RESOURCE_LIMIT_EXCEEDED, NOT_DURABLE);
                        self.clients.reject_publish(publish, error);
                        self.clients.enqueue_done(publish);
                        continue;
                    }
                    let persist_always = self.settings.persist_always(&queue);
                    let message =
                        inspected.new_message(message.clone(), persist_always, self.now.unix_ms);
                    if self.refuses_transient(&queue, message.durable) {
                        let error = Error::new(
                            condition::RESOURCE_LIMIT_EXCEEDED,
                            format!("{queue:?} {TRANSIENT_REFUSED}"),
                        );
                        self.clients.reject_publish(publish, error);
                        // PLANTED BUG (`transient-refused-kept`): the
                        // refused message is enqueued all the same.
                        if !self.settings.config.plants.transient_refused_kept() {
                            self.clients.enqueue_done(publish);
                            continue;
                        }
                    }
                    match self.pending_enqueues.get_mut(&queue) {
                        Some(count) => *count += 1,
                        None => {
                            self.pending_enqueues.insert(queue.clone(), 1);
                        }
                    }
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
                let publish =
                    self.clients
                        .start_publish(conn, delivery, settled, 0, Some(error), bytes);
                self.finish_publish_if_done(publish);
            }
        }
        self.top_up_credit(conn, delivery.link);
    }

    /// Whether a message to `queue` (a queue, or a topic's address) that
    /// is `durable` as published is refused rather than paged: with
    /// `limits.page_transient_messages` off, by a queue that pages and
    /// would not keep it across a restart. Decided here, before it is
    /// logged, from what the group has applied: a replay of the log must
    /// not take a message its producer was told was refused.
    fn refuses_transient(&self, queue: &str, durable: bool) -> bool {
        if self.settings.config.limits.page_transient_messages {
            return false;
        }
        let pages = |target: &str, copy| {
            let group = &self.groups[&self.placement.group_of(target)];
            group.state.queues().pages_transient(target, durable, copy)
        };
        match queue.strip_prefix(TOPIC_PREFIX) {
            Some(topic) => {
                // With more than one subscription, each takes a copy.
                let subscriptions = self.topics.get(topic);
                let copies = subscriptions.is_some_and(|s| s.len() > 1);
                subscriptions
                    .into_iter()
                    .flatten()
                    .any(|s| pages(s, copies))
            }
            None => pages(queue, false),
        }
    }

    fn top_up_credit(&mut self, conn: ConnId, link: LinkId) {
        if self.clients.wants_top_up(conn, link) {
            self.grant_credit(conn, link);
        }
    }

    fn grant_credit(&mut self, conn: ConnId, link: LinkId) {
        let memory_left = self.memory_left();
        self.grant_credit_within(conn, link, memory_left);
    }

    /// Grants a producer credit with `memory_left` bytes left under the
    /// memory watermark (`None`: no watermark): none while producers are
    /// blocked (see [`Core::blocked`]).
    fn grant_credit_within(&mut self, conn: ConnId, link: LinkId, memory_left: Option<u64>) {
        let Some(node) = self.clients.producer_node(conn, link) else {
            return;
        };
        let room = match self.blocked(memory_left) {
            Some(_) => 0,
            None => self.room_for(node),
        };
        self.clients.grant_credit(conn, link, room, memory_left);
    }

    /// How many more messages `node` can take: none while a group it
    /// writes to has no leader (a partitioned minority takes nothing);
    /// else the smallest room among its queues, counting enqueues on their
    /// way as taken.
    fn room_for(&self, node: &ProducerNode) -> u64 {
        let room = |queue: &String| {
            let group = &self.groups[&self.placement.group_of(queue)];
            if group.leader.is_none() || group.unlogged.is_some() {
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
            // A dynamic node is named at attach, and never a link's node.
            ProducerNode::AnonymousRelay | ProducerNode::Dynamic { .. } => u64::MAX,
        }
    }

    /// Whether group `id` may take messages: not while its state is ahead
    /// of its log (see [`Unlogged`]).
    fn takes_messages(&self, id: GroupId) -> bool {
        self.groups
            .get(&id)
            .is_some_and(|group| group.unlogged.is_none())
    }

    /// What the messages held in memory take, bodies and index entries.
    /// Paged messages do not count: a deep queue pages (see
    /// `queue::paging`) rather than stop its producers.
    fn memory_held(&self) -> u64 {
        self.groups
            .values()
            .map(|group| group.state.memory_bytes())
            .sum()
    }

    /// What is left under the memory watermark, or `None` without one.
    fn memory_left(&self) -> Option<u64> {
        let watermark = self.settings.config.limits.memory_high_watermark()?;
        Some(watermark.saturating_sub(self.memory_held()))
    }

    /// Why no producer gets credit now, whatever its destination's room:
    /// the data directory's free space is under `limits.disk_free_min_bytes`
    /// (checked first: it is the one an operator may have to act on), or
    /// the messages held in memory reach the watermark.
    fn blocked(&self, memory_left: Option<u64>) -> Option<Blocked> {
        let min = self.settings.config.limits.disk_free_min_bytes;
        if self.disk_free_bytes.is_some_and(|free| free < min) {
            Some(Blocked::Disk)
        } else if memory_left == Some(0) {
            Some(Blocked::Memory)
        } else {
            None
        }
    }

    /// At start, once the snapshot is installed: each group's page store
    /// keeps only the runs its snapshot names.
    pub(super) fn keep_pages(&mut self) -> Result<(), NodeError> {
        for (&group, state) in &mut self.groups {
            let live = state.state.live_runs();
            let kept = state.state.pager_mut().retain(&live);
            kept.map_err(|error| NodeError::Pages { group, error })?;
        }
        Ok(())
    }

    /// Offers credit again to the producers parked for want of room, and
    /// logs a change in why producers are blocked.
    fn unblock_producers(&mut self) {
        let memory_left = self.memory_left();
        let blocked = self.blocked(memory_left);
        if blocked != self.blocked_since {
            match blocked {
                Some(reason) => warn!(
                    ?reason,
                    memory_held_bytes = self.memory_held(),
                    disk_free_bytes = self.disk_free_bytes,
                    "producers blocked: no credit until this passes"
                ),
                None => info!("producers unblocked"),
            }
            self.blocked_since = blocked;
        }
        if blocked == Some(Blocked::Disk) {
            self.snapshot_if_disk_short();
        }
        for (conn, link) in self.clients.blocked() {
            self.grant_credit_within(conn, link, memory_left);
        }
    }

    fn finish_publish_if_done(&mut self, publish: u64) {
        if let Some((conn, link)) = self.clients.finish_publish_if_done(publish) {
            self.top_up_credit(conn, link);
        }
    }

    // ---- proposing --------------------------------------------------------

    /// Sends what this wake-up queued, one entry per group (or a few, for a
    /// large batch). New items that only settle may wait [`SETTLE_LINGER`]
    /// for company (see [`lingers`]).
    fn propose_fresh(&mut self) {
        let now = self.now.instant;
        for (&id, group) in &mut self.groups {
            if group.outbox.fresh().next().is_none() {
                continue;
            }
            if !self.closing && group.outbox.fresh().all(lingers) {
                let until = *group.linger_until.get_or_insert(now + SETTLE_LINGER);
                if now < until {
                    continue;
                }
            }
            group.linger_until = None;
            for entry in group.outbox.take_fresh(self.now.unix_ms) {
                self.to_groups.push_back(ToGroups::Propose(id, entry));
            }
        }
    }

    /// Proposes again everything of `group` not applied yet.
    fn retry(&mut self, id: GroupId) {
        if let Some(group) = self.groups.get_mut(&id) {
            group.proposed_at = self.now.instant;
            // Lingering items go too.
            group.linger_until = None;
            for entry in group.outbox.take_all(self.now.unix_ms) {
                self.to_groups.push_back(ToGroups::Propose(id, entry));
            }
        }
    }

    /// The groups' leaders, unreachable peers or rejoining members changed.
    pub(super) fn handle_status(&mut self, now: Now, status: Status) {
        self.now = now;
        let mut elected = Vec::new();
        let mut reconnected = Vec::new();
        for (id, group) in &mut self.groups {
            let leader = status.leaders.get(id).copied().flatten();
            if leader != group.leader {
                if leader.is_some() {
                    elected.push(*id);
                }
                group.leader = leader;
            } else if let Some(leader) = leader
                && !group.outbox.is_idle()
            {
                let dialled = |status: &Status| status.connections.get(&leader).copied();
                if dialled(&status) != dialled(&self.status) {
                    reconnected.push(*id);
                }
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
        // What was forwarded to the leader on a connection that has since
        // been replaced may have been lost with it; waiting for
        // `RETRY_AFTER` would hold its client up for nothing.
        for id in reconnected {
            debug!(
                group = id,
                "new connection to the leader: proposing again what is not applied"
            );
            self.retry(id);
        }
        self.status = status;
        self.unblock_producers();
        self.check_invariants_if_on();
    }

    fn housekeeping(&mut self) {
        let now = self.now.instant;
        // The local step loses nothing: only Raft's proposals are retried.
        let retries = self.step == Step::Raft;
        let stale: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, group)| {
                retries
                    && !group.outbox.is_idle()
                    && now.duration_since(group.proposed_at) >= RETRY_AFTER
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
        self.snapshot_unlogged_again();
        self.propose_expiries();
        self.detach_orphans();
        self.delete_orphaned_temporary_queues();
    }

    /// Asks again for the snapshot of each group whose state is ahead of its
    /// log, once the wait after the last failed one is over.
    fn snapshot_unlogged_again(&mut self) {
        let now = self.now.instant;
        let due: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, group)| {
                let retry_at = group.unlogged.as_ref().and_then(|u| u.retry_at);
                retry_at.is_some_and(|at| at <= now)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.snapshot_unlogged(id);
        }
    }

    /// Asks for a snapshot of group `id`'s state, which holds what its log
    /// does not; or, while the log holds no entry a snapshot could follow
    /// (the log refuses a snapshot as of entry 0), asks again later.
    fn snapshot_unlogged(&mut self, id: GroupId) {
        let Some(group) = self.groups.get(&id) else {
            return;
        };
        let retry_at = if group.applied > 0 {
            self.compact(id, 0);
            None
        } else {
            Some(self.now.instant + SNAPSHOT_RETRY_AFTER)
        };
        if let Some(unlogged) = self.groups.get_mut(&id).and_then(|g| g.unlogged.as_mut()) {
            unlogged.retry_at = retry_at;
        }
    }

    /// Asks for a snapshot of group `id`'s state as of its last applied
    /// entry, keeping `keep` entries before it.
    fn compact(&mut self, id: GroupId, keep: u64) {
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        // What the snapshot names of the page store must be on disk first.
        let checkpoint = match group.state.pager_mut().checkpoint() {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                warn!(group = id, %error, "no snapshot: the paged messages are not all on disk");
                return;
            }
        };
        group.since_snapshot = (0, 0);
        group.snapshot_state_bytes = group.state.queues().snapshot_bytes_estimate();
        self.snapshots_asked += 1;
        group
            .checkpoints
            .push_back((self.snapshots_asked, checkpoint.number));
        debug!(
            group = id,
            index = group.applied,
            number = self.snapshots_asked,
            "snapshot of the group's state"
        );
        self.to_groups.push_back(ToGroups::Compact {
            group: id,
            index: group.applied,
            state: group.state.encode(),
            keep,
            number: self.snapshots_asked,
            pages: checkpoint.sync,
        });
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
                        .is_some_and(|due_ms| due_ms <= self.now.unix_ms)
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
        let unreachable = self.status.unreachable.clone();
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
            self.detach_consumer(id, consumer, None);
        }
    }
}

/// Whether a new item may wait for company before it is proposed: only an
/// accepting settle, which nobody waits for (its disposition is already
/// answered, and the message only leaves the queue), is not worth an fsync
/// or a Raft entry of its own. At a low rate that halves the fsyncs per
/// message (publish, then settle), and a publish no longer queues behind a
/// settle's fsync: the publish makes both durable at once. Whatever comes
/// next takes it along, so it delays nothing, and it waits at most
/// [`SETTLE_LINGER`] on its own.
fn lingers(item: &super::batch::Item) -> bool {
    matches!(
        item.command,
        Command::Settle {
            outcome: Outcome::Accepted,
            ..
        }
    )
}

impl Core {
    /// Checks [`Core::check_invariants`] in builds with debug assertions:
    /// the tests' and the simulator's (`--profile sim`), not the release
    /// binary's.
    fn check_invariants_if_on(&self) {
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// What must hold after every input: the outbox's count of what
    /// credit may not overtake, held-back changes in turn and only while it
    /// has not come, a linger only while new items wait, and the enqueues
    /// counted as on their way to each queue exactly those waiting in the
    /// outboxes.
    fn check_invariants(&self) {
        let mut waiting: BTreeMap<String, u64> = BTreeMap::new();
        for group in self.groups.values() {
            let overtakable =
                |item: &super::batch::Item| super::proposer::overtakable(&item.command);
            assert_eq!(
                group.outbox.credit_may_overtake(),
                group.outbox.waiting().all(overtakable),
                "the outbox counts what credit may not overtake"
            );
            let afters: Vec<u64> = group.held_back.iter().map(|held| held.after).collect();
            assert!(afters.is_sorted(), "held-back changes in turn: {afters:?}");
            if let Some(first) = group.held_back.front() {
                assert!(
                    !group.is_due(first),
                    "a held-back change waits only while its turn has not come"
                );
            }
            if group.linger_until.is_some() {
                assert!(
                    group.outbox.fresh().next().is_some(),
                    "a linger runs only while new items wait"
                );
            }
            if self.step == Step::Raft {
                assert!(group.unlogged.is_none(), "Raft logs what it applies");
            }
            if let Some(unlogged) = &group.unlogged {
                assert!(
                    unlogged.snapshot <= self.snapshots_asked + 1,
                    "the snapshot awaited is the next asked for at the latest"
                );
            }
            let held = group
                .held_back
                .iter()
                .filter_map(|held| match &held.change {
                    Held::Propose { command, .. } => Some(&**command),
                    _ => None,
                });
            for command in group.outbox.waiting().map(|item| &item.command).chain(held) {
                if let Command::Enqueue { queue, .. } = command {
                    *waiting.entry(queue.clone()).or_default() += 1;
                }
            }
        }
        let counted: BTreeMap<String, u64> = self
            .pending_enqueues
            .iter()
            .filter(|&(_, &count)| count > 0)
            .map(|(queue, &count)| (queue.clone(), count))
            .collect();
        assert_eq!(counted, waiting, "pending enqueues against the outboxes");
    }
}

#[cfg(test)]
mod tests;
