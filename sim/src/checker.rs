//! The checker: reads a run's [`History`] and decides whether the broker
//! kept its promises. The rules (also in docs/simulation.md):
//!
//! Every rule is about a message M in a queue Q: a queue producer's queue,
//! or, for a topic producer, each subscriber's subscription queue (every
//! subscription exists before a topic producer starts, so each must get
//! every topic message). In a cluster, "the broker" of a connection is the
//! node it connected to, and a restart is that node's.
//!
//! 1. **No phantom messages.** Every message delivered from Q was sent
//!    before, to Q (or to the topic behind it).
//! 2. **No loss.** Every message whose `accepted` a producer received is
//!    consumed from each of its queues (a consumer settled it `accepted` or
//!    `rejected`) by the end of the liveness phase. A `released` or
//!    `modified` delivery does not count.
//! 3. **No redelivery of a consumed message.** A delivery of M from Q is a
//!    violation if, before it, consumers made as many *firm* consumes of M
//!    from Q as producers made sends of M (each send may legally create one
//!    copy). A consume (settle `accepted`/`rejected` at time t on connection
//!    C) is firm for a later delivery at t2 unless C was later lost (the
//!    disposition may never have reached the broker — a graceful close does
//!    not count as lost), or C's broker restarted in (t, t2] (the settle may
//!    not have been durable yet), or a broker disk was failing writes
//!    (disk full, fsync EIO) at some point in [t, t2] (the broker drops a
//!    settle it cannot log: a redelivery, never a loss), or C's client was
//!    partitioned from its broker (or its link lossy) at t: turmoil drops
//!    whole writes of a TCP stream there without breaking the connection,
//!    so the settle may never have arrived; or C was opened before its
//!    broker's latest restart before t (a settle on a connection to a dead
//!    incarnation reaches nobody); or, in a cluster, C's node was cut off
//!    from other nodes at some point in [t − [`CUT_OFF_SLACK`], t2] (the
//!    groups' leaders then detach its consumers, and what they held goes to
//!    others: the settle arrives stale and is dropped, a failover
//!    duplicate). A delivery on a connection opened before its broker's
//!    latest restart is no violation either: the dead incarnation sent it
//!    before the restart; it was only slow to arrive. Nor, in a cluster, is
//!    a *stale* delivery, whose delivery-count is lower than that of a
//!    delivery of M from Q already seen: it belongs to an earlier
//!    acquisition, which a node that applies its group's log late (after a
//!    cut, or behind a slow disk) hands its consumer only after the group
//!    has detached that consumer and given M to another (every such
//!    hand-over counts a failed delivery, so the count tells them apart).
//!    Everything else that delivers a message again is a counted, allowed
//!    duplicate.
//! 4. **Per-producer FIFO.** On a queue with one consumer, within one broker
//!    lifetime (between restarts of any node), the first-ever deliveries of
//!    messages sent exactly once, with delivery-count 0, arrive in each
//!    producer's sequence order. Messages sent twice, released, modified, or
//!    lost with a link are excluded, because the protocol lets those move.
//!    In a cluster, so are messages first sent before the consumer's current
//!    link was attached: the group goes on handing messages to its previous
//!    link until that link's detach is committed, and the connection that
//!    link was on returns what it could not send (a release, which keeps
//!    delivery-count 0), so they may come back after later ones.
//! 5. **The broker's own state agrees.** Once every client has gone, the
//!    broker (in a cluster, the first node, once the replicas converged)
//!    reports each queue: it must have every queue of the workload, with no
//!    consumer and nothing unsettled, and a depth no less than the accepted
//!    messages never consumed from it, and no more than the copies the
//!    history leaves it possibly holding: every send of a message not
//!    consumed from it on a connection that closed cleanly (the broker
//!    answered the close, so it had read the settle) since its broker's last
//!    start (and, in a cluster, whose node was not cut off since).
//! 6. **Replica convergence** (a cluster). Once every client has gone, every
//!    node must have applied every group to the same index within a bound
//!    of simulated time, no member may still be rejoining after damage to
//!    its log, and then every group's state digest must be the same on
//!    every node.
//! 7. **No node panics.** A panic (an assertion of the broker, or of
//!    raft-rs, failed) is a bug, whatever it did to messages. Under turmoil
//!    a panic in any task stops the whole simulation: the run is then cut
//!    short, and the rules about its end (2, 5 and 6) are not checked.
//!
//! Rules 8–10 concern the message kinds (docs/simulation.md); rules 11–13
//! transactions (see [`crate::transactions`]). A message sent in a
//! transaction is never resent, and its own outcome is provisional:
//!
//! 11. **A committed transaction is whole.** Every message of a transaction
//!     whose commit was answered `accepted` is consumed from its queue (or
//!     its dead-letter queue), as rule 2 asks of an accepted message.
//! 12. **Nothing of a transaction that did not commit is delivered.** A
//!     message of a transaction rolled back, refused at commit or never
//!     discharged (its connection ended first, which rolls it back), or
//!     one the broker refused provisionally, is never delivered; nor is
//!     any message of a transaction before its commit was sent.
//! 13. **All or nothing.** A transaction whose commit was sent and never
//!     answered (the connection was lost) applied whole or not at all: if
//!     any of its messages was delivered, every one is consumed by the end
//!     of the liveness phase.
//!
//! Rule 16, **a consume the broker settled holds** (rcv-settle-mode
//! `second`), lives in [`settle_second`]; rule 17, **every accepted request
//! is answered, by its own reply queue** (temporary queues, their deletion,
//! and the anonymous relay), in [`request_reply`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use crate::history::{
    ClientId, ConnId, History, MessageKind, MsgId, NodeId, NodeReplicas, Op, QueueState,
    broker_name,
};
use crate::nemesis::{Fault, FaultEvent, fault_spans, fault_windows};
use crate::transactions::{Fate, Transactions};
use crate::workload::{SELECTOR, WorkloadParams};

mod request_reply;
mod settle_second;

use request_reply::RequestReply;
use settle_second::{DeliveryFacts, SettleSecond};

/// At most this many violations are kept in a report.
const VIOLATIONS_KEPT: usize = 100;

/// A cut between cluster nodes excuses settles made up to this long after
/// it ended. A node stays out of reach after the network heals until its
/// transport notices and reconnects: a connection dialled during the cut
/// waits for its handshake to time out (5 s), then backs off (up to 2 s);
/// meanwhile a leader may detach its consumers (after 3 s of silence), and
/// the node learns of it only once it is back.
pub const CUT_OFF_SLACK: Duration = Duration::from_secs(8);

/// How late after its expiry a message may still arrive at a consumer
/// (rule 9). The broker checks expiry against the clock of the command
/// that dispatches it, which was read when the command was proposed, before
/// it was logged (fsync, up to 50 ms here) and, in a cluster, replicated;
/// then the delivery crosses the network (up to 50 ms in `slow-net`).
/// Faults that delay any of that excuse a delivery outright.
pub const EXPIRY_SLACK: Duration = Duration::from_millis(500);

/// How much sooner than its first send plus its delay a scheduled message
/// may arrive (rule 11): none, but for the rounding of simulated time to
/// the broker's milliseconds. The broker takes it after it was sent, by
/// its own clock, and schedules it from then; with true clocks that is no
/// earlier than the send.
pub const SCHEDULE_SLACK: Duration = Duration::from_millis(2);

/// Which rule a violation breaks, or a run checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// Rule 1.
    NeverSent,
    /// Rule 2.
    Lost,
    /// Rule 3.
    ConsumedRedelivered,
    /// Rule 4.
    Fifo,
    /// Rule 5.
    FinalState,
    /// Rule 6.
    ReplicaConvergence,
    /// Rule 7.
    NodePanicked,
    /// Rule 8.
    DuplicateId,
    /// Rule 9.
    Expired,
    /// Rule 10.
    DeadLetterLost,
    /// Rule 11.
    Early,
    /// Rule 12.
    Unselected,
    /// Rule 13.
    TxnLost,
    /// Rule 14.
    TxnAbortedDelivered,
    /// Rule 15.
    TxnPartial,
    /// Rule 16.
    SettleSecond,
    /// Rule 17.
    RequestReply,
    /// No silent skips: a rule that applies to the run could not be
    /// checked, and nothing else the run broke explains why.
    NotChecked,
}

impl Rule {
    /// Every rule, in their numbering's order.
    pub const ALL: [Rule; 17] = [
        Rule::NeverSent,
        Rule::Lost,
        Rule::ConsumedRedelivered,
        Rule::Fifo,
        Rule::FinalState,
        Rule::ReplicaConvergence,
        Rule::NodePanicked,
        Rule::DuplicateId,
        Rule::Expired,
        Rule::DeadLetterLost,
        Rule::Early,
        Rule::Unselected,
        Rule::TxnLost,
        Rule::TxnAbortedDelivered,
        Rule::TxnPartial,
        Rule::SettleSecond,
        Rule::RequestReply,
    ];

    /// Whether the rule applies to a run of `nodes` nodes: replicas
    /// converge only in a cluster.
    pub fn applies_to(self, nodes: u32) -> bool {
        self != Rule::ReplicaConvergence || nodes > 1
    }

    /// Its short name, for summaries.
    pub fn name(self) -> &'static str {
        match self {
            Rule::NeverSent => "1 never-sent",
            Rule::Lost => "2 lost",
            Rule::ConsumedRedelivered => "3 consumed-redelivered",
            Rule::Fifo => "4 fifo",
            Rule::FinalState => "5 final-state",
            Rule::ReplicaConvergence => "6 replicas",
            Rule::NodePanicked => "7 panic",
            Rule::DuplicateId => "8 duplicate-id",
            Rule::Expired => "9 expired",
            Rule::DeadLetterLost => "10 dead-letter-lost",
            Rule::Early => "11 early",
            Rule::Unselected => "12 unselected",
            Rule::TxnLost => "13 txn-lost",
            Rule::TxnAbortedDelivered => "14 txn-aborted-delivered",
            Rule::TxnPartial => "15 txn-partial",
            Rule::SettleSecond => "16 settle-second",
            Rule::RequestReply => "17 request-reply",
            Rule::NotChecked => "not-checked",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::NeverSent => "delivered but never sent",
            Rule::Lost => "accepted but never consumed",
            Rule::ConsumedRedelivered => "consumed message delivered again",
            Rule::Fifo => "per-producer FIFO broken",
            Rule::FinalState => "broker state disagrees with the history",
            Rule::ReplicaConvergence => "replicas did not converge",
            Rule::NodePanicked => "a broker node panicked",
            Rule::DuplicateId => "a de-duplicated message-id enqueued twice",
            Rule::Expired => "an expired message delivered",
            Rule::DeadLetterLost => "dead-lettered but missing from the dead-letter queue",
            Rule::Early => "a scheduled message delivered before its time",
            Rule::Unselected => "a message delivered that its consumer's selector does not select",
            Rule::TxnLost => "a committed transaction's message never consumed",
            Rule::TxnAbortedDelivered => "a message of a transaction that did not commit delivered",
            Rule::TxnPartial => "part of a transaction applied",
            Rule::SettleSecond => {
                "a consume the broker settled (rcv-settle-mode second) did not hold"
            }
            Rule::RequestReply => "a request or its reply went astray",
            Rule::NotChecked => "a rule could not be checked",
        })
    }
}

/// One broken rule, at the history event that shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// The index of the event in the history.
    pub index: usize,
    /// The event's simulated time.
    pub time: Duration,
    /// The event and what is wrong with it.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {:.3}s (history event {}): {}",
            self.rule,
            self.time.as_secs_f64(),
            self.index,
            self.detail
        )
    }
}

/// Counts over the history, for summaries and the snapshot test.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events by kind.
    pub events_by_kind: BTreeMap<&'static str, u64>,
    /// Faults the nemesis injected while messages flowed: from the first
    /// send to the last settle. A seed with none tested its faults against
    /// an idle broker, or had none.
    pub faults_in_traffic: u64,
    /// Distinct messages sent.
    pub messages_sent: u64,
    /// Distinct messages a producer saw accepted.
    pub messages_accepted: u64,
    /// Distinct messages consumed, counted once per queue (a topic message
    /// once per subscription).
    pub messages_consumed: u64,
    /// Distinct messages consumed from the dead-letter queue.
    pub dead_lettered: u64,
    /// Accepted messages never consumed that the history excuses: they
    /// had a TTL, or were transient and a broker restarted after.
    pub vanished_excused: u64,
    /// Deliveries of a message from a queue beyond its first (all allowed
    /// ones).
    pub redeliveries: u64,
    /// Consumes of a message from a queue beyond its first (allowed
    /// duplicates).
    pub duplicates: u64,
    /// Consumes the broker settled under rcv-settle-mode `second`.
    pub settles_confirmed: u64,
    /// Deliveries after a consume the broker settled under rcv-settle-mode
    /// `second` that rule 16 let pass: a dead incarnation's or stale.
    pub second_excused: u64,
    /// Requests the broker accepted that a reply answered.
    pub requests_answered: u64,
    /// Requests the broker accepted that no reply answered, excused: their
    /// reply queue was deleted, or died with its connection, first.
    pub requests_excused: u64,
    /// Per queue: messages accepted by the broker and never consumed.
    pub final_depths: BTreeMap<String, u64>,
    /// The rules the run was checked against. Rules 1, 3, 4, 7, 8, 9, 11,
    /// 12, 14 and 16 always are; rules 2, 10, 13, 15 and 17 once the run had
    /// its liveness phase (not cut short by a panic); rule 5 once the broker reported
    /// its state at the end; rule 6 once the cluster's nodes reported their
    /// replicas.
    pub checked: BTreeSet<Rule>,
    /// Violations found, including those not kept in the report.
    pub violations_total: u64,
    /// Violations found, by rule, including those not kept in the report.
    pub violations_by_rule: BTreeMap<Rule, u64>,
}

/// What the checker concluded.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Counts.
    pub stats: Stats,
    /// Every violation, earliest first.
    pub violations: Vec<Violation>,
}

impl CheckReport {
    /// True if no rule was broken.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The rules broken, each with its count, after a colon
    /// (`: 3 × accepted but never consumed, …`); empty if none.
    pub fn rules_broken(&self) -> String {
        let listed: Vec<String> = self
            .stats
            .violations_by_rule
            .iter()
            .map(|(rule, count)| format!("{count} × {rule}"))
            .collect();
        if listed.is_empty() {
            String::new()
        } else {
            format!(": {}", listed.join(", "))
        }
    }
}

/// A [start, end] window of simulated time.
type Window = (Duration, Duration);

/// The windows in which a broker disk was failing writes (the nemesis's
/// `disk full` and `fsync EIO` faults), from injection to end or heal (or
/// the end of the history).
fn disk_full_windows(events: &[crate::history::Event]) -> Vec<Window> {
    windows_of(events, Fault::fails_writes)
}

/// The windows in which what `client` sent towards a broker could be
/// dropped (see [`Fault::drops_uplink_of`]): a settle sent then may never
/// arrive even though the connection later closes gracefully.
fn lossy_uplink_windows(events: &[crate::history::Event], client: ClientId) -> Vec<Window> {
    let name = client.to_string();
    windows_of(events, |fault| fault.drops_uplink_of(&name))
}

/// The windows in which cluster node `node` was cut off from other nodes
/// (see [`Fault::nodes_cut_off`]).
fn cut_off_windows(events: &[crate::history::Event], node: NodeId) -> Vec<Window> {
    let name = broker_name(node);
    windows_of(events, |fault| {
        fault.nodes_cut_off().contains(&name.as_str())
    })
}

/// The windows in which what passes between `client` and its broker could
/// be late (see [`Fault::delays_link_of`]).
fn late_link_windows(events: &[crate::history::Event], client: ClientId) -> Vec<Window> {
    let name = client.to_string();
    windows_of(events, |fault| fault.delays_link_of(&name))
}

/// The windows in which some broker's commits may have been late: a disk
/// failing or slow; in a cluster also a group without a leader, from a
/// fault that may cost one until [`CUT_OFF_SLACK`] after it ended (an
/// election, and a transport that reconnects after a cut). A single node
/// has no leader to lose: what a crash did not make durable is lost, and
/// its restart replays the rest before any consumer attaches.
fn late_commit_windows(events: &[crate::history::Event]) -> Vec<Window> {
    let cluster = events
        .iter()
        .any(|event| matches!(event.op, Op::BrokerStart { node: Some(_) }));
    let mut windows = windows_of(events, Fault::delays_commits);
    if cluster {
        let leaderless = windows_of(events, Fault::costs_a_leader)
            .into_iter()
            .map(|(start, end)| (start, end.saturating_add(CUT_OFF_SLACK)));
        windows.extend(leaderless);
    }
    windows
}

/// The windows in which some broker's group clocks may have been off the
/// true time (see [`Fault::clock_off_after`]).
fn clock_off_windows(events: &[crate::history::Event]) -> Vec<Window> {
    let faults = events.iter().filter_map(|event| match &event.op {
        Op::Fault(fault) => Some((event.time, fault)),
        _ => None,
    });
    fault_spans(faults)
        .into_iter()
        .filter_map(|span| {
            let after = span.fault.clock_off_after()?;
            let end = span
                .end
                .map_or(Duration::MAX, |end| end.saturating_add(after));
            Some((span.start, end))
        })
        .collect()
}

/// The windows of the faults `selected` picks, among the history's
/// nemesis events.
fn windows_of(events: &[crate::history::Event], selected: impl Fn(&Fault) -> bool) -> Vec<Window> {
    let faults = events.iter().filter_map(|event| match &event.op {
        Op::Fault(fault) => Some((event.time, fault)),
        _ => None,
    });
    fault_windows(faults, selected)
}

fn kind(op: &Op) -> &'static str {
    match op {
        Op::BrokerStart { .. } => "broker_start",
        Op::Fault(_) => "fault",
        Op::BrokerStopped { .. } => "broker_stopped",
        Op::Connected { .. } => "connected",
        Op::ConnectionLost { .. } => "connection_lost",
        Op::Closed { .. } => "closed",
        Op::Relinked { .. } => "relinked",
        Op::Send { resend: false, .. } => "send",
        Op::Send { resend: true, .. } => "resend",
        Op::ProducerOutcome { .. } => "producer_outcome",
        Op::TxnDeclared { .. } => "txn_declared",
        Op::Discharge { .. } => "discharge",
        Op::Discharged { .. } => "discharged",
        Op::Delivered { .. } => "delivered",
        Op::Settled { .. } => "settled",
        Op::SettleConfirmed { .. } => "settle_confirmed",
        Op::SettleModeRefused { .. } => "settle_mode_refused",
        Op::TempQueue { .. } => "temp_queue",
        Op::TempQueueDeleted { .. } => "temp_queue_deleted",
        Op::Request { .. } => "request",
        Op::RequestOutcome { .. } => "request_outcome",
        Op::RequestDelivered { .. } => "request_delivered",
        Op::Reply { .. } => "reply",
        Op::ReplyOutcome { .. } => "reply_outcome",
        Op::ReplyDelivered { .. } => "reply_delivered",
        Op::Browsed { .. } => "browsed",
        Op::BrokerState { .. } => "broker_state",
        Op::Replicas { .. } => "replicas",
        Op::Aborted { .. } => "aborted",
        Op::LeaderObserved { .. } => "leader_observed",
    }
}

/// How many faults the nemesis injected between the first send and the
/// last settle.
fn faults_in_traffic(events: &[crate::history::Event]) -> u64 {
    let first_send = events
        .iter()
        .find(|event| matches!(event.op, Op::Send { .. }))
        .map(|event| event.time);
    let last_settle = events
        .iter()
        .rev()
        .find(|event| matches!(event.op, Op::Settled { .. }))
        .map(|event| event.time);
    let (Some(from), Some(to)) = (first_send, last_settle) else {
        return 0;
    };
    let during = |event: &&crate::history::Event| {
        matches!(event.op, Op::Fault(FaultEvent::Injected { .. }))
            && (from..=to).contains(&event.time)
    };
    events.iter().filter(during).count() as u64
}

/// What the history says of connections and faults, gathered in a first
/// pass for the rules that look ahead (a connection lost after a settle
/// makes it not firm).
#[derive(Debug, Default)]
struct Timeline {
    disk_full: Vec<Window>,
    lossy_uplinks: BTreeMap<ClientId, Vec<Window>>,
    /// Per cluster node, when it was cut off from other nodes.
    cut_off: BTreeMap<NodeId, Vec<Window>>,
    lost_conns: BTreeMap<ConnId, Duration>,
    closed_conns: BTreeSet<ConnId>,
    connected_at: BTreeMap<ConnId, Duration>,
    /// The broker each connection went to.
    conn_node: BTreeMap<ConnId, NodeId>,
    send_counts: BTreeMap<MsgId, u64>,
    /// How each message was sent (its first send says; resends keep it).
    kinds: BTreeMap<MsgId, MessageKind>,
    /// Every broker start, of any node.
    all_starts: Vec<Duration>,
    /// Per client, when its link to its broker could be late.
    late_links: BTreeMap<ClientId, Vec<Window>>,
    /// When some broker's commits could be late.
    late_commits: Vec<Window>,
    /// When some broker's group clocks may have been off the true time.
    clock_off: Vec<Window>,
    /// Every transaction, with its fate.
    txns: Transactions,
}

impl Timeline {
    fn gather(events: &[crate::history::Event]) -> Self {
        let mut timeline = Timeline {
            disk_full: disk_full_windows(events),
            late_commits: late_commit_windows(events),
            clock_off: clock_off_windows(events),
            txns: Transactions::gather(events),
            ..Timeline::default()
        };
        for event in events {
            match &event.op {
                Op::Settled { conn, .. } => {
                    timeline
                        .lossy_uplinks
                        .entry(conn.client)
                        .or_insert_with(|| lossy_uplink_windows(events, conn.client));
                }
                Op::ConnectionLost { conn, .. } => {
                    timeline.lost_conns.entry(*conn).or_insert(event.time);
                }
                Op::Connected { conn, node, .. } => {
                    timeline.connected_at.entry(*conn).or_insert(event.time);
                    timeline.conn_node.insert(*conn, *node);
                    if node.is_some() {
                        timeline
                            .cut_off
                            .entry(*node)
                            .or_insert_with(|| cut_off_windows(events, *node));
                    }
                }
                Op::Closed { conn } => {
                    timeline.closed_conns.insert(*conn);
                }
                Op::Send { msg, kind, .. } => {
                    *timeline.send_counts.entry(*msg).or_default() += 1;
                    timeline.kinds.entry(*msg).or_insert(*kind);
                }
                Op::Delivered { conn, .. } => {
                    timeline
                        .late_links
                        .entry(conn.client)
                        .or_insert_with(|| late_link_windows(events, conn.client));
                }
                Op::BrokerStart { .. } => timeline.all_starts.push(event.time),
                _ => {}
            }
        }
        timeline
    }

    /// The broker connection `conn` went to.
    fn node_of(&self, conn: ConnId) -> NodeId {
        self.conn_node.get(&conn).copied().flatten()
    }

    /// How `msg` was sent (plain if never: a phantom's kind is moot).
    fn kind(&self, msg: MsgId) -> MessageKind {
        self.kinds.get(&msg).copied().unwrap_or(MessageKind::PLAIN)
    }

    /// How many copies of `msg` the broker may make in a queue: one per
    /// send, or one in all if it de-duplicates the message.
    fn copies_allowed(&self, msg: MsgId, sends: u64) -> u64 {
        if self.kind(msg).deduplicated() {
            sends.min(1)
        } else {
            sends
        }
    }

    /// Why `msg`, accepted at `accepted_at`, may never be consumed
    /// although no rule was broken, if it may.
    fn may_vanish(&self, msg: MsgId, accepted_at: Duration) -> bool {
        may_vanish(self.kind(msg), accepted_at, &self.all_starts)
    }

    /// Rule 9: whether something other than the broker may have made a
    /// delivery at `t2` on `conn` of a message first sent at `sent` late,
    /// after its expiry at `expiry`: its link, its node's cut from the
    /// others, or a disk that delays commits, since the expiry; or a clock
    /// off the true time since it was sent.
    fn delivery_may_be_late(
        &self,
        conn: ConnId,
        sent: Duration,
        expiry: Duration,
        t2: Duration,
    ) -> bool {
        let overlaps = |windows: &[Window], since: Duration| {
            windows
                .iter()
                .any(|(start, end)| *start <= t2 && *end >= since)
        };
        self.late_links
            .get(&conn.client)
            .is_some_and(|windows| overlaps(windows, expiry))
            || overlaps(&self.late_commits, expiry)
            || self.clock_off_between(sent, t2)
            || self.cut_off_between(conn, expiry, t2)
    }

    /// Whether some broker's group clocks may have been off the true time
    /// at some point in [`from`, `to`].
    fn clock_off_between(&self, from: Duration, to: Duration) -> bool {
        self.clock_off
            .iter()
            .any(|(start, end)| *start <= to && *end >= from)
    }

    /// Whether `conn`'s broker was cut off from other nodes at some point
    /// in [`from` − [`CUT_OFF_SLACK`], `to`].
    fn cut_off_between(&self, conn: ConnId, from: Duration, to: Duration) -> bool {
        self.cut_off
            .get(&self.node_of(conn))
            .is_some_and(|windows| {
                windows
                    .iter()
                    .any(|(start, end)| *start <= to && end.saturating_add(CUT_OFF_SLACK) >= from)
            })
    }
}

/// Each broker's starts so far, as the second pass goes.
#[derive(Debug, Default)]
struct Starts(BTreeMap<NodeId, Vec<Duration>>);

impl Starts {
    /// Whether `node` started in (`after`, `until`].
    fn between(&self, node: NodeId, after: Duration, until: Duration) -> bool {
        self.0
            .get(&node)
            .is_some_and(|starts| starts.iter().any(|s| *s > after && *s <= until))
    }

    fn last(&self, node: NodeId) -> Duration {
        self.0
            .get(&node)
            .and_then(|starts| starts.last().copied())
            .unwrap_or_default()
    }
}

/// Rule 3: whether a consume at `t` on `conn` is firm for a delivery at
/// `t2` (see the module documentation).
fn firm(timeline: &Timeline, starts: &Starts, t: Duration, conn: ConnId, t2: Duration) -> bool {
    let node = timeline.node_of(conn);
    let conn_lost = timeline
        .lost_conns
        .get(&conn)
        .is_some_and(|lost| *lost >= t);
    let restarted = starts.between(node, t, t2);
    // A connection to a broker incarnation that has since been restarted
    // reaches nobody: bytes still in flight from the old one can be
    // delivered and settled, but the settle goes nowhere, even if the
    // client then sees a clean close.
    let stale = timeline
        .connected_at
        .get(&conn)
        .is_some_and(|opened| starts.between(node, *opened, t));
    let unlogged = timeline
        .disk_full
        .iter()
        .any(|(start, end)| *start <= t2 && *end >= t);
    let dropped = timeline
        .lossy_uplinks
        .get(&conn.client)
        .is_some_and(|w| w.iter().any(|(start, end)| *start <= t && *end >= t));
    let cut_off = timeline.cut_off_between(conn, t, t2);
    !conn_lost && !restarted && !stale && !unlogged && !dropped && !cut_off
}

/// Whether an accepted message of `kind`, accepted at `accepted_at`, may
/// never be consumed without a broken promise: it had a TTL (it may have
/// expired), or it was transient and a broker (re)started after it was
/// accepted (`starts`, every broker start of the run).
pub fn may_vanish(kind: MessageKind, accepted_at: Duration, starts: &[Duration]) -> bool {
    kind.ttl.is_some() || (!kind.durable && starts.iter().any(|start| *start > accepted_at))
}

/// Checks `history` against the rules in the module docs.
pub fn check(history: &History, params: &WorkloadParams) -> CheckReport {
    let events = history.events();
    let mut report = CheckReport::default();
    let mut stats = Stats::default();
    for event in events {
        *stats.events_by_kind.entry(kind(&event.op)).or_default() += 1;
    }
    stats.faults_in_traffic = faults_in_traffic(events);

    // First pass: facts whose later occurrence matters to earlier events.
    let timeline = Timeline::gather(events);
    let send_counts = &timeline.send_counts;
    let destinations: BTreeMap<u32, Vec<String>> = params
        .all_producers()
        .map(|producer| (producer, params.destinations_of(producer)))
        .collect();
    let mut consumers_per_queue: BTreeMap<String, u32> = BTreeMap::new();
    for consumer in 0..params.consumers {
        *consumers_per_queue
            .entry(params.queue_of(consumer).to_owned())
            .or_default() += 1;
    }
    for subscriber in 0..params.subscribers {
        consumers_per_queue.insert(params.subscription(subscriber), 1);
    }

    // Second pass, in history order.
    let mut sends_so_far: BTreeMap<MsgId, u64> = BTreeMap::new();
    let mut accepted: BTreeMap<MsgId, (usize, Duration)> = BTreeMap::new();
    // Every consume of a message from a queue so far: when and on which
    // connection.
    let mut consumes: BTreeMap<(&str, MsgId), Vec<(Duration, ConnId)>> = BTreeMap::new();
    let mut delivered: BTreeSet<(&str, MsgId)> = BTreeSet::new();
    // The highest delivery-count seen so far per (queue, message).
    let mut counts_seen: BTreeMap<(&str, MsgId), u32> = BTreeMap::new();
    let mut starts = Starts::default();
    // Rule 4: per (queue, producer), the last in-order seq this broker life.
    let mut fifo_last: BTreeMap<(String, u32), (u64, usize)> = BTreeMap::new();
    // Rule 4, cluster: when each message was first sent, and when each
    // queue's consumer last attached a link.
    let mut first_sent: BTreeMap<MsgId, Duration> = BTreeMap::new();
    let mut linked_at: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut conn_queue: BTreeMap<ConnId, &str> = BTreeMap::new();
    // Rule 5: the broker's last report of its queues.
    let mut broker_state: Option<(usize, &[QueueState])> = None;
    // Rule 6: the nodes' last report of their replicas.
    let mut replicas: Option<(usize, &[NodeReplicas])> = None;
    // Rule 7: a panic cut the run short.
    let mut aborted = false;
    let mut second = SettleSecond::default();
    let mut requests = RequestReply::default();
    for (index, event) in events.iter().enumerate() {
        second.observe(index, event);
        requests.observe(index, event);
        let violation = |rule, detail: String| Violation {
            rule,
            index,
            time: event.time,
            detail: format!("{event}: {detail}"),
        };
        match &event.op {
            Op::BrokerStart { node } => {
                starts.0.entry(*node).or_default().push(event.time);
                fifo_last.clear();
            }
            Op::Aborted { .. } => {
                aborted = true;
                report
                    .violations
                    .push(violation(Rule::NodePanicked, "the run stopped".to_owned()));
            }
            Op::Send { msg, .. } => {
                *sends_so_far.entry(*msg).or_default() += 1;
                first_sent.entry(*msg).or_insert(event.time);
            }
            Op::Connected {
                conn,
                address,
                node: Some(_),
            } if !matches!(conn.client, ClientId::Producer(_)) => {
                conn_queue.insert(*conn, address.as_str());
                linked_at.insert(address.as_str(), event.time);
                fifo_last.retain(|(queue, _), _| queue != address);
            }
            Op::Relinked { conn } => {
                if let Some(&queue) = conn_queue.get(conn) {
                    linked_at.insert(queue, event.time);
                    fifo_last.retain(|(q, _), _| q != queue);
                }
            }
            // A message's outcome in a transaction is provisional: its
            // transaction's commit accepts it.
            Op::ProducerOutcome { msg, outcome, .. } => {
                if *outcome == crate::history::Outcome::Accepted
                    && timeline.kind(*msg).txn.is_none()
                {
                    accepted.entry(*msg).or_insert((index, event.time));
                }
            }
            Op::Discharged { txn, .. } => {
                let committed = timeline.txns.get(*txn).filter(|t| {
                    t.fate
                        == Fate::Committed {
                            index,
                            time: event.time,
                        }
                });
                for msg in committed.into_iter().flat_map(|t| t.applied_members()) {
                    accepted.entry(msg).or_insert((index, event.time));
                }
            }
            Op::Settled {
                conn,
                queue,
                msg,
                outcome,
            } => {
                if outcome.consumes() {
                    let entry = consumes.entry((queue.as_str(), *msg)).or_default();
                    if !entry.is_empty() {
                        stats.duplicates += 1;
                    }
                    entry.push((event.time, *conn));
                }
            }
            Op::Browsed { queue, msg, .. } => {
                if let Some(detail) = phantom(params, &destinations, &sends_so_far, queue, *msg) {
                    report.violations.push(violation(Rule::NeverSent, detail));
                }
            }
            Op::Delivered {
                conn: delivery_conn,
                queue,
                msg,
                delivery_count,
                ..
            } => {
                if let Some(detail) = phantom(params, &destinations, &sends_so_far, queue, *msg) {
                    report.violations.push(violation(Rule::NeverSent, detail));
                    continue;
                }
                let sends = sends_so_far.get(msg).copied().unwrap_or(0);
                let selective = params
                    .selective_consumer()
                    .is_some_and(|n| delivery_conn.client == ClientId::Consumer(n));
                if selective && !selected(*msg) {
                    report.violations.push(violation(
                        Rule::Unselected,
                        format!(
                            "{msg} is odd, and {} reads through {SELECTOR}",
                            delivery_conn.client
                        ),
                    ));
                }
                if let Some(detail) = never_committed(&timeline.txns, *msg, index) {
                    report
                        .violations
                        .push(violation(Rule::TxnAbortedDelivered, detail));
                }
                let key = (queue.as_str(), *msg);
                let first_delivery = delivered.insert(key);
                if !first_delivery {
                    stats.redeliveries += 1;
                }
                let count_seen = counts_seen.entry(key).or_insert(*delivery_count);
                let stale =
                    timeline.node_of(*delivery_conn).is_some() && *delivery_count < *count_seen;
                *count_seen = (*count_seen).max(*delivery_count);
                let t2 = event.time;
                // On a connection opened before its broker's latest
                // restart, a delivery was sent by the dead incarnation,
                // before that restart (it was only slow to arrive): it says
                // nothing of what the restarted broker did since.
                let from_dead_incarnation =
                    timeline
                        .connected_at
                        .get(delivery_conn)
                        .is_some_and(|opened| {
                            starts.between(timeline.node_of(*delivery_conn), *opened, t2)
                        });
                let firm = consumes.get(&key).map_or(0, |list| {
                    list.iter()
                        .filter(|(t, conn)| firm(&timeline, &starts, *t, *conn, t2))
                        .count() as u64
                });
                let copies = timeline.copies_allowed(*msg, sends);
                let flagged = firm >= copies && !from_dead_incarnation && !stale;
                let facts = DeliveryFacts {
                    copies,
                    says_nothing_new: from_dead_incarnation || stale,
                    flagged,
                };
                second.delivered(index, event, (queue.as_str(), *msg), &facts);
                if flagged {
                    let (rule, detail) = if firm < sends {
                        let detail = format!(
                            "{msg} carries a message-id the broker de-duplicates; it was sent {sends} time(s), and its one copy already consumed firmly {firm} time(s)"
                        );
                        (Rule::DuplicateId, detail)
                    } else {
                        let detail = format!(
                            "{msg} was sent {sends} time(s) and already consumed firmly {firm} time(s)"
                        );
                        (Rule::ConsumedRedelivered, detail)
                    };
                    report.violations.push(violation(rule, detail));
                }
                let expiry = timeline.kind(*msg).ttl.and_then(|ttl| {
                    let (_, accepted_at) = accepted.get(msg)?;
                    // Only a copy the accept dates: there is one.
                    (copies == 1 && !params.is_dead_letter_queue(queue))
                        .then_some(*accepted_at + ttl)
                });
                if let Some(expiry) = expiry
                    && t2 > expiry + EXPIRY_SLACK
                    && !from_dead_incarnation
                    && !stale
                    && !timeline.delivery_may_be_late(
                        *delivery_conn,
                        first_sent.get(msg).copied().unwrap_or_default(),
                        expiry,
                        t2,
                    )
                {
                    report.violations.push(violation(
                        Rule::Expired,
                        format!(
                            "{msg} expired by {:.3}s at the latest (accepted, plus its TTL)",
                            expiry.as_secs_f64()
                        ),
                    ));
                }
                let sent = first_sent.get(msg).copied().unwrap_or_default();
                if let Some(delay) = timeline.kind(*msg).delay
                    && t2 + SCHEDULE_SLACK < sent + delay
                    && !timeline.clock_off_between(sent, t2)
                {
                    report.violations.push(violation(
                        Rule::Early,
                        format!(
                            "{msg} was first sent at {:.3}s with a delay of {}ms",
                            sent.as_secs_f64(),
                            delay.as_millis()
                        ),
                    ));
                }
                let single_consumer = consumers_per_queue.get(queue) == Some(&1);
                // The broker only rewrites the header (delivery-count,
                // first-acquirer) on a redelivery, and counts a delivery
                // lost with its link as failed; so delivery-count 0 on the
                // first delivery the client saw means no earlier acquirer.
                let sent_before_link = linked_at
                    .get(queue.as_str())
                    .is_some_and(|linked| first_sent.get(msg).is_some_and(|sent| sent < linked));
                let clean = send_counts.get(msg) == Some(&1)
                    && timeline.kind(*msg).delay.is_none()
                    && first_delivery
                    && *delivery_count == 0
                    && !sent_before_link;
                if single_consumer && clean {
                    let key = (queue.clone(), msg.producer);
                    let before = fifo_last.get(&key).filter(|(last, _)| *last > msg.seq);
                    if let Some((last, last_index)) = before {
                        report.violations.push(violation(
                            Rule::Fifo,
                            format!(
                                "{msg} arrived after p{}#{last} (history event {last_index})",
                                msg.producer
                            ),
                        ));
                    }
                    fifo_last.insert(key, (msg.seq, index));
                }
            }
            Op::BrokerState { queues } => broker_state = Some((index, queues)),
            Op::Replicas { nodes } => replicas = Some((index, nodes)),
            Op::BrokerStopped { .. }
            | Op::Fault(_)
            | Op::Connected { .. }
            | Op::ConnectionLost { .. }
            | Op::Closed { .. }
            | Op::TxnDeclared { .. }
            | Op::Discharge { .. }
            | Op::SettleConfirmed { .. }
            | Op::SettleModeRefused { .. }
            | Op::TempQueue { .. }
            | Op::TempQueueDeleted { .. }
            | Op::Request { .. }
            | Op::RequestOutcome { .. }
            | Op::RequestDelivered { .. }
            | Op::Reply { .. }
            | Op::ReplyOutcome { .. }
            | Op::ReplyDelivered { .. }
            | Op::LeaderObserved { .. } => {}
        }
    }

    stats.checked.extend([
        Rule::NeverSent,
        Rule::ConsumedRedelivered,
        Rule::Fifo,
        Rule::NodePanicked,
        Rule::DuplicateId,
        Rule::Expired,
        Rule::Early,
        Rule::Unselected,
        Rule::TxnAbortedDelivered,
        Rule::SettleSecond,
    ]);
    // A run cut short never had its liveness phase.
    let ended = !aborted;
    if ended {
        stats.checked.extend([
            Rule::Lost,
            Rule::DeadLetterLost,
            Rule::TxnLost,
            Rule::TxnPartial,
            Rule::RequestReply,
        ]);
    }
    for (msg, (index, time)) in accepted.iter().filter(|_| ended) {
        for queue in destinations.get(&msg.producer).into_iter().flatten() {
            let dead_letters = params.dead_letter_queue_of(queue);
            let consumed = |q: &str| consumes.contains_key(&(q, *msg));
            if consumed(queue) || dead_letters.is_some_and(consumed) {
                continue;
            }
            if timeline.may_vanish(*msg, *time) || params.drops_head(queue) {
                stats.vanished_excused += 1;
                continue;
            }
            *stats.final_depths.entry(queue.clone()).or_default() += 1;
            // Delivered from a dead-lettering queue yet never consumed
            // there, it left by dead-lettering.
            let (rule, detail) = match dead_letters {
                Some(dlq) if delivered.contains(&(queue.as_str(), *msg)) => (
                    Rule::DeadLetterLost,
                    format!("{msg} left {queue} unconsumed, yet was never consumed from {dlq}"),
                ),
                _ if timeline.kind(*msg).txn.is_some() => (
                    Rule::TxnLost,
                    format!("{msg}, of a committed transaction, was never consumed from {queue}"),
                ),
                _ => (Rule::Lost, format!("{msg} was never consumed from {queue}")),
            };
            report.violations.push(Violation {
                rule,
                index: *index,
                time: *time,
                detail: format!("{}: {detail}", events[*index]),
            });
        }
    }
    if ended {
        let outcome = Applied {
            params,
            destinations: &destinations,
            consumes: &consumes,
            delivered: &delivered,
            timeline: &timeline,
        };
        report
            .violations
            .extend(outcome.partial_transactions(events));
    }
    for queue in params.all_queues() {
        stats.final_depths.entry(queue).or_default();
    }
    if let Some((index, queues)) = broker_state {
        stats.checked.insert(Rule::FinalState);
        let facts = Facts {
            params,
            destinations: &destinations,
            accepted: &accepted,
            consumes: &consumes,
            delivered: &delivered,
            timeline: &timeline,
            starts: &starts,
            second: &second,
        };
        for detail in facts.final_state_disagreements(queues) {
            report.violations.push(Violation {
                rule: Rule::FinalState,
                index,
                time: events[index].time,
                detail: format!("{}: {detail}", events[index]),
            });
        }
    }
    if let Some((index, nodes)) = replicas {
        stats.checked.insert(Rule::ReplicaConvergence);
        for detail in divergences(nodes) {
            report.violations.push(Violation {
                rule: Rule::ReplicaConvergence,
                index,
                time: events[index].time,
                detail,
            });
        }
    }
    stats.settles_confirmed = second.confirmations;
    stats.second_excused = second.excused;
    report.violations.extend(second.finish());
    report.violations.extend(requests.finish(ended, events));
    stats.requests_answered = requests.answered;
    stats.requests_excused = requests.excused;
    stats.messages_sent = send_counts.len() as u64;
    stats.messages_accepted = accepted.len() as u64;
    stats.messages_consumed = consumes.len() as u64;
    stats.dead_lettered = consumes
        .keys()
        .filter(|(queue, _)| params.is_dead_letter_queue(queue))
        .count() as u64;
    report.stats = stats;
    report.violations.sort_by_key(|v| v.index);
    let total = report.violations.len() as u64;
    for violation in &report.violations {
        *report
            .stats
            .violations_by_rule
            .entry(violation.rule)
            .or_default() += 1;
    }
    // The first violations explain the failure; a runaway bug can produce
    // hundreds of thousands more.
    report.violations.truncate(VIOLATIONS_KEPT);
    report.stats.violations_total = total;
    report
}

/// Rule 1: why a delivery (or a browse) of `msg` from `queue` is a
/// phantom, if it is: it was never sent, or never sent to `queue` (or to
/// the queue that dead-letters into it).
fn phantom(
    params: &WorkloadParams,
    destinations: &BTreeMap<u32, Vec<String>>,
    sends_so_far: &BTreeMap<MsgId, u64>,
    queue: &str,
    msg: MsgId,
) -> Option<String> {
    if !sends_so_far.contains_key(&msg) {
        return Some(format!("{msg} was never sent"));
    }
    let sent_here = destinations
        .get(&msg.producer)
        .is_some_and(|queues| queues.iter().any(|q| reaches(params, q, queue)));
    (!sent_here).then(|| format!("{msg} was never sent to {queue}"))
}

/// Rule 12: whether [`SELECTOR`] selects `msg` (its `parity` property is
/// `even` for an even sequence number).
fn selected(msg: MsgId) -> bool {
    msg.seq % 2 == 0
}

/// Rule 14: why the delivery of `msg` at history index `index` shows part
/// of a transaction that did not commit (yet), if it does.
fn never_committed(txns: &Transactions, msg: MsgId, index: usize) -> Option<String> {
    let (id, txn) = txns.of(msg)?;
    let why = if txn.refused.contains(&msg) {
        "the broker refused it in the transaction"
    } else {
        match txn.fate {
            Fate::Open => "the transaction was never discharged",
            Fate::RolledBack => "the transaction was rolled back",
            Fate::Refused => "the transaction's commit was refused",
            Fate::Unknown | Fate::Committed { .. } => {
                let before = txn.discharged_at.is_none_or(|(at, _)| index < at);
                if !before {
                    return None;
                }
                "its commit was not sent yet"
            }
        }
    };
    Some(format!("{msg} of {id}: {why}"))
}

/// What rule 15 needs from the history.
struct Applied<'a> {
    params: &'a WorkloadParams,
    destinations: &'a BTreeMap<u32, Vec<String>>,
    consumes: &'a BTreeMap<(&'a str, MsgId), Vec<(Duration, ConnId)>>,
    delivered: &'a BTreeSet<(&'a str, MsgId)>,
    timeline: &'a Timeline,
}

impl Applied<'_> {
    /// Whether `msg` was delivered from `queue` or its dead-letter queue,
    /// and whether it was consumed from either.
    fn seen(&self, queue: &str, msg: MsgId) -> (bool, bool) {
        let queues = [Some(queue), self.params.dead_letter_queue_of(queue)];
        let queues = queues.into_iter().flatten();
        let (mut delivered, mut consumed) = (false, false);
        for q in queues {
            delivered |= self.delivered.contains(&(q, msg));
            consumed |= self.consumes.contains_key(&(q, msg));
        }
        (delivered, consumed)
    }

    /// Rule 15: each message of a transaction of unknown fate that was
    /// never consumed, though another of its messages was delivered from
    /// the same queue (a copy that may vanish excepted, as in rule 2).
    fn partial_transactions(&self, events: &[crate::history::Event]) -> Vec<Violation> {
        let mut found = Vec::new();
        let unknown = self
            .timeline
            .txns
            .iter()
            .filter(|(_, t)| t.fate == Fate::Unknown);
        for (id, txn) in unknown {
            let Some((index, time)) = txn.discharged_at else {
                continue;
            };
            let members: Vec<MsgId> = txn.applied_members().collect();
            let Some(producer) = members.first().map(|msg| msg.producer) else {
                continue;
            };
            for queue in self.destinations.get(&producer).into_iter().flatten() {
                let seen: Vec<(MsgId, bool, bool)> = members
                    .iter()
                    .map(|msg| {
                        let (delivered, consumed) = self.seen(queue, *msg);
                        (*msg, delivered, consumed)
                    })
                    .collect();
                let Some(applied) = seen.iter().find(|(_, delivered, _)| *delivered) else {
                    continue;
                };
                let missing = seen.iter().filter(|(msg, _, consumed)| {
                    !consumed
                        && !self.timeline.may_vanish(*msg, time)
                        && !self.params.drops_head(queue)
                });
                for (msg, _, _) in missing {
                    found.push(Violation {
                        rule: Rule::TxnPartial,
                        index,
                        time,
                        detail: format!(
                            "{}: {id}'s commit went unanswered; {} was delivered from {queue}, yet {msg} was never consumed from it",
                            events[index], applied.0
                        ),
                    });
                }
            }
        }
        found
    }
}

/// Whether a message sent to `destination` may be delivered from `queue`:
/// it is the destination, or the destination's dead-letter queue.
fn reaches(params: &WorkloadParams, destination: &str, queue: &str) -> bool {
    destination == queue || params.dead_letter_queue_of(destination) == Some(queue)
}

/// No silent skips: a run of `nodes` nodes that breaks no rule fails if a
/// rule that applies to it could not be checked (the broker did not report
/// its state at the end, the nodes their replicas). A run that broke a
/// rule is failing already, and what it broke (a panic, a delivery storm)
/// is why the end was not reached.
pub fn require_all_checked(report: &mut CheckReport, nodes: u32, history: &History) {
    let unchecked: Vec<&str> = Rule::ALL
        .into_iter()
        .filter(|rule| rule.applies_to(nodes) && !report.stats.checked.contains(rule))
        .map(Rule::name)
        .collect();
    if !report.passed() || unchecked.is_empty() {
        return;
    }
    let events = history.events();
    report.violations.push(Violation {
        rule: Rule::NotChecked,
        index: events.len().saturating_sub(1),
        time: events.last().map_or(Duration::ZERO, |event| event.time),
        detail: format!("not checked: {}", unchecked.join(", ")),
    });
    report.stats.violations_total += 1;
    *report
        .stats
        .violations_by_rule
        .entry(Rule::NotChecked)
        .or_default() += 1;
}

/// Rule 6: how the nodes' replicas fail to converge, one line per group
/// (or per node that did not answer).
fn divergences(nodes: &[NodeReplicas]) -> Vec<String> {
    let mut found = Vec::new();
    // Per group, each node's (applied, digest).
    let mut groups: BTreeMap<u32, Vec<(u64, u64, u32)>> = BTreeMap::new();
    let reported = nodes.iter().filter(|node| node.groups.is_some()).count();
    for node in nodes {
        let Some(statuses) = &node.groups else {
            found.push(format!("node{} did not report its replicas", node.node));
            continue;
        };
        for status in statuses {
            if status.rejoining {
                found.push(format!(
                    "group {}: node{} is still rejoining after damage to its log",
                    status.group, node.node
                ));
            }
            let of_group = groups.entry(status.group).or_default();
            of_group.push((node.node, status.applied, status.digest));
        }
    }
    for (group, replicas) in groups {
        let list = |show: &dyn Fn(&(u64, u64, u32)) -> String| {
            replicas.iter().map(show).collect::<Vec<_>>().join(", ")
        };
        if replicas.len() != reported {
            found.push(format!(
                "group {group}: only some nodes have it: {}",
                list(&|(node, _, _)| format!("node{node}"))
            ));
        } else if replicas.iter().any(|r| r.1 != replicas[0].1) {
            found.push(format!(
                "group {group}: the nodes did not apply it to the same index in time: {}",
                list(&|(node, applied, _)| format!("node{node} applied {applied}"))
            ));
        } else if replicas.iter().any(|r| r.2 != replicas[0].2) {
            found.push(format!(
                "group {group}: every node applied it to index {}, yet their states differ: {}",
                replicas[0].1,
                list(&|(node, _, digest)| format!("node{node} digest {digest:#010x}"))
            ));
        }
    }
    found
}

/// What rule 5 needs from the history.
struct Facts<'a> {
    params: &'a WorkloadParams,
    destinations: &'a BTreeMap<u32, Vec<String>>,
    accepted: &'a BTreeMap<MsgId, (usize, Duration)>,
    consumes: &'a BTreeMap<(&'a str, MsgId), Vec<(Duration, ConnId)>>,
    delivered: &'a BTreeSet<(&'a str, MsgId)>,
    timeline: &'a Timeline,
    starts: &'a Starts,
    second: &'a SettleSecond,
}

impl Facts<'_> {
    /// Rule 5: how the broker's report of its queues disagrees with the
    /// history, one line per disagreement.
    fn final_state_disagreements(&self, reported: &[QueueState]) -> Vec<String> {
        let mut disagreements = Vec::new();
        for queue in self.params.all_queues() {
            let Some(state) = reported.iter().find(|q| q.name == queue) else {
                disagreements.push(format!("the broker has no queue {queue}"));
                continue;
            };
            if state.unsettled != 0 || state.consumers != 0 {
                disagreements.push(format!(
                    "{state}: every client has gone, yet it has consumers or unsettled deliveries"
                ));
            }
            let (least, most) = self.depth_bounds(&queue);
            if !(least..=most).contains(&state.depth) {
                disagreements.push(format!(
                    "{state}: the history says its depth is between {least} and {most}"
                ));
            }
        }
        disagreements
    }

    /// Whether the consume at `time` on `conn` surely reached the broker
    /// and stuck: `conn` was opened since its broker's last start and
    /// closed cleanly (and, in a cluster, its node was not cut off since).
    fn surely_consumed(&self, time: Duration, conn: ConnId) -> bool {
        let last_start = self.starts.last(self.timeline.node_of(conn));
        time >= last_start
            && self.timeline.closed_conns.contains(&conn)
            && self
                .timeline
                .connected_at
                .get(&conn)
                .is_some_and(|opened| *opened >= last_start)
            && !self.timeline.cut_off_between(conn, time, Duration::MAX)
    }

    /// The depth `queue` must have at least (accepted messages never
    /// consumed from it) and may have at most (every send of a message not
    /// surely consumed from it since the broker's last start).
    fn depth_bounds(&self, queue: &str) -> (u64, u64) {
        let mut least = 0;
        let mut most = 0;
        let dead_letters = self.params.dead_letter_queue_of(queue);
        for (msg, sends) in &self.timeline.send_counts {
            let goes_here = self.destinations.get(&msg.producer).is_some_and(|queues| {
                queues
                    .iter()
                    .any(|destination| reaches(self.params, destination, queue))
            });
            if !goes_here {
                continue;
            }
            let consumes = self.consumes.get(&(queue, *msg));
            // What a dead-letter queue must hold is left to rule 10; a
            // message that left its queue unconsumed may have been
            // dead-lettered.
            let stays = !self.params.is_dead_letter_queue(queue)
                && dead_letters.is_none_or(|dlq| {
                    !self.consumes.contains_key(&(dlq, *msg))
                        && !self.delivered.contains(&(queue, *msg))
                });
            let must_hold = !self.params.drops_head(queue)
                && self
                    .accepted
                    .get(msg)
                    .is_some_and(|(_, at)| !self.timeline.may_vanish(*msg, *at));
            if must_hold && stays && consumes.is_none() {
                least += 1;
            }
            // A consume the broker settled under rcv-settle-mode second
            // took effect, wherever its connection went next (rule 16).
            let surely_consumed = self.second.confirmed(queue, *msg)
                || consumes.is_some_and(|list| {
                    list.iter()
                        .any(|(time, conn)| self.surely_consumed(*time, *conn))
                });
            // A transaction that did not commit left nothing.
            if !surely_consumed && self.timeline.txns.may_hold(*msg) {
                most += sends;
            }
        }
        (least, most)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Outcome, TxnId};
    use crate::workload::DEAD_LETTER_QUEUE;

    /// One queue producer to q0, one consumer each on q0 and q1, and, if
    /// `subscribers` > 0, one topic producer with that many subscribers.
    fn params(subscribers: u32) -> WorkloadParams {
        WorkloadParams {
            queues: vec!["q0".to_owned(), "q1".to_owned()],
            producers: 1,
            consumers: 2,
            messages_per_producer: 1,
            topic: "t0".to_owned(),
            topic_producers: u32::from(subscribers > 0),
            subscribers,
            dead_lettering: None,
            delivery_limit: 3,
            limit: None,
            browsers: 0,
            selective: false,
            rcv_settle_second: false,
            requesters: 0,
        }
    }

    fn conn(client: ClientId) -> ConnId {
        ConnId { client, n: 1 }
    }

    /// Builds a history one event per millisecond.
    #[derive(Default)]
    struct Script(History);

    impl Script {
        fn then(&mut self, op: Op) -> &mut Self {
            let time = Duration::from_millis(self.0.events().len() as u64);
            self.0.push(time, op);
            self
        }

        /// `producer` sends message 0 and sees it accepted.
        fn accepted(&mut self, producer: u32) -> MsgId {
            let conn = conn(ClientId::Producer(producer));
            let msg = MsgId { producer, seq: 0 };
            self.then(Op::Send {
                conn,
                msg,
                resend: false,
                kind: MessageKind::PLAIN,
            })
            .then(Op::ProducerOutcome {
                conn,
                msg,
                outcome: Outcome::Accepted,
            });
            msg
        }

        /// `client` receives `msg` from `queue`, accepts it and closes.
        fn consumed(&mut self, client: ClientId, queue: &str, msg: MsgId) -> &mut Self {
            self.consumed_on(conn(client), queue, msg)
        }

        /// `msg` is received from `queue` on `conn`, accepted, and `conn`
        /// closed.
        fn consumed_on(&mut self, conn: ConnId, queue: &str, msg: MsgId) -> &mut Self {
            self.then(Op::Connected {
                conn,
                address: queue.to_owned(),
                node: None,
            })
            .then(Op::Delivered {
                conn,
                queue: queue.to_owned(),
                msg,
                delivery_count: 0,
                first_acquirer: true,
            })
            .then(Op::Settled {
                conn,
                queue: queue.to_owned(),
                msg,
                outcome: Outcome::Accepted,
            })
            .then(Op::Closed { conn })
        }

        fn broker_state(&mut self, queues: &[(&str, u64, u64)]) -> &mut Self {
            let queues = queues
                .iter()
                .map(|&(name, depth, unsettled)| QueueState {
                    name: name.to_owned(),
                    depth,
                    unsettled,
                    consumers: 0,
                })
                .collect();
            self.then(Op::BrokerState { queues })
        }
    }

    fn rules(report: &CheckReport) -> Vec<Rule> {
        report.violations.iter().map(|v| v.rule).collect()
    }

    #[test]
    fn a_consumed_message_and_an_empty_broker_pass() {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msg = script.accepted(0);
        script
            .consumed(ClientId::Consumer(0), "q0", msg)
            .broker_state(&[("q0", 0, 0), ("q1", 0, 0)]);
        let report = check(&script.0, &params(0));
        assert!(report.passed(), "{:?}", report.violations);
        assert!(report.stats.checked.contains(&Rule::FinalState));
    }

    /// No silent skips: a run that reached its end without the broker's
    /// final report (or, in a cluster, the replicas') fails for that
    /// alone; a run a panic cut short fails for the panic, not twice.
    #[test]
    fn a_rule_that_could_not_be_checked_fails_the_run() {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msg = script.accepted(0);
        script.consumed(ClientId::Consumer(0), "q0", msg);
        let mut report = check(&script.0, &params(0));
        assert!(report.passed(), "{:?}", report.violations);
        require_all_checked(&mut report, 1, &script.0);
        assert_eq!(rules(&report), [Rule::NotChecked]);
        assert!(report.violations[0].detail.ends_with("5 final-state"));

        script.broker_state(&[("q0", 0, 0), ("q1", 0, 0)]);
        let mut report = check(&script.0, &params(0));
        require_all_checked(&mut report, 1, &script.0);
        assert!(report.passed(), "{:?}", report.violations);
        require_all_checked(&mut report, 3, &script.0);
        assert!(report.violations[0].detail.ends_with("6 replicas"));

        script.then(Op::Aborted { why: "boom".into() });
        let mut report = check(&script.0, &params(0));
        require_all_checked(&mut report, 3, &script.0);
        assert_eq!(rules(&report), [Rule::NodePanicked]);
    }

    #[test]
    fn a_broker_that_still_holds_a_consumed_message_fails_rule_5() {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msg = script.accepted(0);
        script
            .consumed(ClientId::Consumer(0), "q0", msg)
            .broker_state(&[("q0", 1, 0), ("q1", 0, 1)]);
        let report = check(&script.0, &params(0));
        assert_eq!(rules(&report), [Rule::FinalState, Rule::FinalState]);
    }

    #[test]
    fn a_missing_queue_fails_rule_5() {
        let mut script = Script::default();
        script
            .then(Op::BrokerStart { node: None })
            .broker_state(&[("q0", 0, 0)]);
        let report = check(&script.0, &params(0));
        assert_eq!(rules(&report), [Rule::FinalState]);
        assert!(report.violations[0].detail.contains("no queue q1"));
    }

    #[test]
    fn a_message_consumed_on_a_lost_connection_may_still_be_held() {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msg = script.accepted(0);
        let consumer = conn(ClientId::Consumer(0));
        script
            .then(Op::Delivered {
                conn: consumer,
                queue: "q0".to_owned(),
                msg,
                delivery_count: 0,
                first_acquirer: true,
            })
            .then(Op::Settled {
                conn: consumer,
                queue: "q0".to_owned(),
                msg,
                outcome: Outcome::Accepted,
            })
            .then(Op::ConnectionLost {
                conn: consumer,
                why: "reset".to_owned(),
            })
            .broker_state(&[("q0", 1, 0), ("q1", 0, 0)]);
        let report = check(&script.0, &params(0));
        assert!(report.passed(), "{:?}", report.violations);
    }

    #[test]
    fn every_subscription_must_consume_every_topic_message() {
        let params = params(2);
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        // Producer 1 is the topic producer.
        let msg = script.accepted(1);
        script.consumed(ClientId::Subscriber(0), &params.subscription(0), msg);
        let report = check(&script.0, &params);
        assert_eq!(rules(&report), [Rule::Lost]);
        assert!(
            report.violations[0]
                .detail
                .contains(&params.subscription(1))
        );
    }

    #[test]
    fn a_delivery_from_a_queue_the_message_was_not_sent_to_is_a_phantom() {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msg = script.accepted(0);
        script.consumed(ClientId::Consumer(1), "q1", msg);
        let report = check(&script.0, &params(0));
        // Sent to q0, delivered from q1; and never consumed from q0.
        assert_eq!(rules(&report), [Rule::Lost, Rule::NeverSent]);
    }

    /// `producer` sends message 0 as `kind` `sends` times (the first
    /// time, the outcome is lost with the connection) and sees the last
    /// send accepted.
    fn sent(script: &mut Script, producer: u32, kind: MessageKind, sends: u32) -> MsgId {
        let msg = MsgId { producer, seq: 0 };
        for n in 1..=sends {
            let conn = ConnId {
                client: ClientId::Producer(producer),
                n,
            };
            script.then(Op::Send {
                conn,
                msg,
                resend: n > 1,
                kind,
            });
            if n == sends {
                script.then(Op::ProducerOutcome {
                    conn,
                    msg,
                    outcome: Outcome::Accepted,
                });
            }
        }
        msg
    }

    /// A consumer with its own connection (`n`) consumes `msg` from `queue`.
    fn consumed_again(script: &mut Script, client: ClientId, n: u32, queue: &str, msg: MsgId) {
        script.consumed_on(ConnId { client, n }, queue, msg);
    }

    #[test]
    fn a_second_copy_of_a_deduplicated_message_fails_rule_8() {
        let with_id = MessageKind {
            message_id: true,
            ..MessageKind::PLAIN
        };
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msg = sent(&mut script, 0, with_id, 2);
        consumed_again(&mut script, ClientId::Consumer(0), 1, "q0", msg);
        consumed_again(&mut script, ClientId::Consumer(0), 2, "q0", msg);
        let report = check(&script.0, &params(0));
        assert_eq!(rules(&report), [Rule::DuplicateId]);
        // Without a message-id, two sends may make two copies.
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msg = sent(&mut script, 0, MessageKind::PLAIN, 2);
        consumed_again(&mut script, ClientId::Consumer(0), 1, "q0", msg);
        consumed_again(&mut script, ClientId::Consumer(0), 2, "q0", msg);
        let report = check(&script.0, &params(0));
        assert!(report.passed(), "{:?}", report.violations);
        // A transient message is not de-duplicated.
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let transient = MessageKind {
            durable: false,
            ..with_id
        };
        let msg = sent(&mut script, 0, transient, 2);
        consumed_again(&mut script, ClientId::Consumer(0), 1, "q0", msg);
        consumed_again(&mut script, ClientId::Consumer(0), 2, "q0", msg);
        assert!(check(&script.0, &params(0)).passed());
    }

    #[test]
    fn a_delivery_well_after_expiry_fails_rule_9_and_an_expired_message_may_vanish() {
        let ttl = MessageKind {
            ttl: Some(Duration::from_millis(2)),
            ..MessageKind::PLAIN
        };
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msg = sent(&mut script, 0, ttl, 1);
        // Never consumed: it may have expired.
        let report = check(&script.0, &params(0));
        assert!(report.passed(), "{:?}", report.violations);
        assert_eq!(report.stats.vanished_excused, 1);
        // Delivered within the slack: no violation.
        consumed_again(&mut script, ClientId::Consumer(0), 1, "q0", msg);
        assert!(check(&script.0, &params(0)).passed());
        // Delivered a whole slack after its expiry.
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msg = sent(&mut script, 0, ttl, 1);
        while script.0.events().last().map(|e| e.time)
            < Some(EXPIRY_SLACK + Duration::from_millis(10))
        {
            script.then(Op::Fault(FaultEvent::HealedAll));
        }
        consumed_again(&mut script, ClientId::Consumer(0), 1, "q0", msg);
        let report = check(&script.0, &params(0));
        assert_eq!(rules(&report), [Rule::Expired]);
    }

    #[test]
    fn a_message_that_left_a_dead_lettering_queue_unconsumed_must_reach_the_dlq() {
        // Producer 0 sends to q0, which dead-letters; producer 1 to q1.
        let params = WorkloadParams {
            producers: 2,
            dead_lettering: Some("q0".to_owned()),
            ..params(0)
        };
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msg = sent(&mut script, 0, MessageKind::PLAIN, 1);
        let conn = conn(ClientId::Consumer(0));
        script
            .then(Op::Connected {
                conn,
                address: "q0".to_owned(),
                node: None,
            })
            .then(Op::Delivered {
                conn,
                queue: "q0".to_owned(),
                msg,
                delivery_count: 0,
                first_acquirer: true,
            })
            .then(Op::Settled {
                conn,
                queue: "q0".to_owned(),
                msg,
                outcome: Outcome::Modified,
            });
        let report = check(&script.0, &params);
        assert_eq!(rules(&report), [Rule::DeadLetterLost]);
        consumed_again(
            &mut script,
            ClientId::DeadLetters(0),
            1,
            DEAD_LETTER_QUEUE,
            msg,
        );
        let report = check(&script.0, &params);
        assert!(report.passed(), "{:?}", report.violations);
        assert_eq!(report.stats.dead_lettered, 1);
        // From the dlq of a queue that has none, it is a phantom.
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msg = sent(&mut script, 1, MessageKind::PLAIN, 1);
        consumed_again(
            &mut script,
            ClientId::DeadLetters(0),
            1,
            DEAD_LETTER_QUEUE,
            msg,
        );
        let rules_broken = rules(&check(&script.0, &params));
        assert!(rules_broken.contains(&Rule::NeverSent), "{rules_broken:?}");
    }

    /// Rule 16: a consume the broker settled in mode second holds across a
    /// lost connection and a restart, which excuse an unconfirmed one.
    #[test]
    fn a_consume_the_broker_settled_in_mode_second_must_hold() {
        let redelivered = |confirmed: bool| {
            let mut script = Script::default();
            script.then(Op::BrokerStart { node: None });
            let msg = script.accepted(0);
            let first = conn(ClientId::Consumer(0));
            let queue = "q0".to_owned();
            script
                .then(Op::Connected {
                    conn: first,
                    address: queue.clone(),
                    node: None,
                })
                .then(Op::Delivered {
                    conn: first,
                    queue: queue.clone(),
                    msg,
                    delivery_count: 0,
                    first_acquirer: true,
                })
                .then(Op::Settled {
                    conn: first,
                    queue: queue.clone(),
                    msg,
                    outcome: Outcome::Accepted,
                });
            if confirmed {
                script.then(Op::SettleConfirmed {
                    conn: first,
                    queue: queue.clone(),
                    msg,
                    outcome: Outcome::Accepted,
                });
            }
            script
                .then(Op::ConnectionLost {
                    conn: first,
                    why: "reset".to_owned(),
                })
                .then(Op::BrokerStart { node: None });
            consumed_again(&mut script, ClientId::Consumer(0), 2, "q0", msg);
            check(&script.0, &params(0))
        };
        let report = redelivered(false);
        assert!(report.passed(), "{:?}", report.violations);
        let report = redelivered(true);
        assert_eq!(rules(&report), [Rule::SettleSecond]);
        assert_eq!(report.stats.settles_confirmed, 1);
        // A broker that answers `first` to `second` breaks it too.
        let mut script = Script::default();
        script
            .then(Op::BrokerStart { node: None })
            .then(Op::SettleModeRefused {
                conn: conn(ClientId::Consumer(0)),
            });
        assert_eq!(rules(&check(&script.0, &params(0))), [Rule::SettleSecond]);
    }

    /// Rule 17: an accepted request is answered, on its own reply queue,
    /// unless that queue was deleted first; the relay refuses what has
    /// nowhere to go.
    #[test]
    fn every_accepted_request_is_answered_on_its_own_queue() {
        use crate::request_reply::{NOWHERE, REQUESTS};
        let requester = conn(ClientId::Requester(0));
        let responder = conn(ClientId::Responder(0));
        let msg = MsgId {
            producer: 0,
            seq: 0,
        };
        // A request to `to`, accepted, with reply queue "dynamic.1".
        let requested = |to: &str| {
            let mut script = Script::default();
            script
                .then(Op::BrokerStart { node: None })
                .then(Op::TempQueue {
                    conn: requester,
                    address: "dynamic.1".to_owned(),
                })
                .then(Op::Request {
                    conn: requester,
                    msg,
                    to: to.to_owned(),
                    reply_to: "dynamic.1".to_owned(),
                })
                .then(Op::RequestOutcome {
                    conn: requester,
                    msg,
                    outcome: Outcome::Accepted,
                });
            script
        };
        let replied = |script: &mut Script, delivered_on: &str| {
            script
                .then(Op::RequestDelivered {
                    conn: responder,
                    msg,
                    reply_to: "dynamic.1".to_owned(),
                })
                .then(Op::Reply {
                    conn: responder,
                    msg,
                    to: "dynamic.1".to_owned(),
                })
                .then(Op::ReplyDelivered {
                    conn: requester,
                    msg,
                    to: "dynamic.1".to_owned(),
                    queue: delivered_on.to_owned(),
                });
        };
        let checked = |script: &Script| check(&script.0, &params(0));
        let mut script = requested(REQUESTS);
        assert_eq!(rules(&checked(&script)), [Rule::RequestReply]);
        replied(&mut script, "dynamic.1");
        let report = checked(&script);
        assert!(report.passed(), "{:?}", report.violations);
        assert_eq!(report.stats.requests_answered, 1);
        // Delivered from another queue than the one it was routed to.
        let mut script = requested(REQUESTS);
        replied(&mut script, "dynamic.2");
        assert_eq!(rules(&checked(&script)), [Rule::RequestReply]);
        // Unanswered, its queue deleted: excused.
        let mut script = requested(REQUESTS);
        script.then(Op::TempQueueDeleted {
            conn: requester,
            address: "dynamic.1".to_owned(),
        });
        let report = checked(&script);
        assert!(report.passed(), "{:?}", report.violations);
        assert_eq!(report.stats.requests_excused, 1);
        // Accepted for an address that does not exist.
        let mut script = requested(NOWHERE);
        script.then(Op::Closed { conn: requester });
        assert_eq!(rules(&checked(&script)), [Rule::RequestReply]);
    }

    // ---- transactions ------------------------------------------------------

    /// Producer 0 declares its transaction 0, sends messages 0..`count` in
    /// it and discharges it (committing if `commit`), then gets `answer`
    /// (`None`: the connection is lost first). Returns the messages.
    fn transaction(
        script: &mut Script,
        count: u64,
        commit: bool,
        answer: Option<Outcome>,
    ) -> Vec<MsgId> {
        let conn = conn(ClientId::Producer(0));
        let txn = TxnId { producer: 0, n: 0 };
        script.then(Op::TxnDeclared { conn, txn });
        let kind = MessageKind {
            txn: Some(0),
            ..MessageKind::PLAIN
        };
        let msgs: Vec<MsgId> = (0..count).map(|seq| MsgId { producer: 0, seq }).collect();
        for &msg in &msgs {
            script.then(Op::Send {
                conn,
                msg,
                resend: false,
                kind,
            });
            // Provisional: no acceptance.
            script.then(Op::ProducerOutcome {
                conn,
                msg,
                outcome: Outcome::Accepted,
            });
        }
        script.then(Op::Discharge { conn, txn, commit });
        match answer {
            Some(outcome) => script.then(Op::Discharged { conn, txn, outcome }),
            None => script.then(Op::ConnectionLost {
                conn,
                why: "reset".to_owned(),
            }),
        };
        msgs
    }

    /// Consumer 0 consumes each of `msgs` from q0, each on its own
    /// connection.
    fn consume_all(script: &mut Script, msgs: &[MsgId]) {
        for (n, &msg) in (1..).zip(msgs) {
            consumed_again(script, ClientId::Consumer(0), n, "q0", msg);
        }
    }

    #[test]
    fn every_message_of_a_committed_transaction_must_be_consumed() {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msgs = transaction(&mut script, 3, true, Some(Outcome::Accepted));
        consume_all(&mut script, &msgs[..2]);
        let report = check(&script.0, &params(0));
        assert_eq!(rules(&report), [Rule::TxnLost]);
        assert!(report.violations[0].detail.contains("p0#2"));
        assert_eq!(report.stats.messages_accepted, 3);
        consume_all(&mut script, &msgs[2..]);
        let report = check(&script.0, &params(0));
        assert!(report.passed(), "{:?}", report.violations);
        // Provisional outcomes alone promise nothing.
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        transaction(&mut script, 3, true, Some(Outcome::Rejected));
        let report = check(&script.0, &params(0));
        assert!(report.passed(), "{:?}", report.violations);
        assert_eq!(report.stats.messages_accepted, 0);
    }

    #[test]
    fn a_message_of_a_transaction_that_did_not_commit_must_never_be_delivered() {
        let cases = [
            (false, Some(Outcome::Accepted), "rolled back"),
            (false, None, "rolled back"),
            (true, Some(Outcome::Rejected), "commit was refused"),
        ];
        for (commit, answer, why) in cases {
            let mut script = Script::default();
            script.then(Op::BrokerStart { node: None });
            let msgs = transaction(&mut script, 2, commit, answer);
            consume_all(&mut script, &msgs[..1]);
            let report = check(&script.0, &params(0));
            assert_eq!(rules(&report), [Rule::TxnAbortedDelivered], "{why}");
            assert!(report.violations[0].detail.contains(why), "{why}");
        }
        // Never discharged: its connection's end rolled it back.
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let conn = conn(ClientId::Producer(0));
        let txn = TxnId { producer: 0, n: 0 };
        let msg = MsgId {
            producer: 0,
            seq: 0,
        };
        let kind = MessageKind {
            txn: Some(0),
            ..MessageKind::PLAIN
        };
        script.then(Op::TxnDeclared { conn, txn }).then(Op::Send {
            conn,
            msg,
            resend: false,
            kind,
        });
        consume_all(&mut script, &[msg]);
        let report = check(&script.0, &params(0));
        assert_eq!(rules(&report), [Rule::TxnAbortedDelivered]);
        assert!(report.violations[0].detail.contains("never discharged"));
    }

    #[test]
    fn a_commit_with_no_answer_applies_all_or_nothing() {
        // Nothing delivered: it did not commit, which is allowed.
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msgs = transaction(&mut script, 3, true, None);
        let report = check(&script.0, &params(0));
        assert!(report.passed(), "{:?}", report.violations);
        // Everything consumed: it committed.
        consume_all(&mut script, &msgs);
        let report = check(&script.0, &params(0));
        assert!(report.passed(), "{:?}", report.violations);
        // Part of it: a violation per message missing.
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        let msgs = transaction(&mut script, 3, true, None);
        consume_all(&mut script, &msgs[..1]);
        let report = check(&script.0, &params(0));
        assert_eq!(rules(&report), [Rule::TxnPartial, Rule::TxnPartial]);
        assert!(report.violations[0].detail.contains("p0#0 was delivered"));
    }

    #[test]
    fn a_broker_holding_a_rolled_back_message_fails_rule_5() {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        transaction(&mut script, 1, false, Some(Outcome::Accepted));
        script.broker_state(&[("q0", 1, 0), ("q1", 0, 0)]);
        let report = check(&script.0, &params(0));
        assert_eq!(rules(&report), [Rule::FinalState]);
        // Of a commit with no answer, it may hold the messages.
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: None });
        transaction(&mut script, 1, true, None);
        script.broker_state(&[("q0", 1, 0), ("q1", 0, 0)]);
        let report = check(&script.0, &params(0));
        assert!(report.passed(), "{:?}", report.violations);
    }

    // ---- the cluster -------------------------------------------------------

    fn replicas(node: u64, groups: &[(u32, u64, u32)]) -> NodeReplicas {
        let groups = groups
            .iter()
            .map(|&(group, applied, digest)| sluice::node::ReplicaStatus {
                group,
                leader: Some(1),
                applied,
                digest,
                rejoining: false,
            })
            .collect();
        NodeReplicas {
            node,
            groups: Some(groups),
        }
    }

    #[test]
    fn replicas_must_apply_alike_and_agree() {
        let agree = [
            replicas(1, &[(1, 10, 0xaa), (2, 7, 0xbb)]),
            replicas(2, &[(1, 10, 0xaa), (2, 7, 0xbb)]),
        ];
        assert!(divergences(&agree).is_empty());
        let differ = [
            replicas(1, &[(1, 10, 0xaa), (2, 7, 0xbb)]),
            replicas(2, &[(1, 10, 0xab), (2, 7, 0xbb)]),
        ];
        let found = divergences(&differ);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("group 1:"), "{found:?}");
        assert!(found[0].contains("node1 digest 0x000000aa"), "{found:?}");
        assert!(found[0].contains("node2 digest 0x000000ab"), "{found:?}");
        let behind = [
            replicas(1, &[(1, 10, 0xaa)]),
            replicas(2, &[(1, 9, 0xaa)]),
            NodeReplicas {
                node: 3,
                groups: None,
            },
        ];
        let found = divergences(&behind);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().any(|f| f.contains("node3 did not report")));
        assert!(found.iter().any(|f| f.contains("node2 applied 9")));
        let mut stuck = [replicas(1, &[(1, 10, 0xaa)]), replicas(2, &[(1, 10, 0xaa)])];
        if let Some(groups) = &mut stuck[1].groups {
            groups[0].rejoining = true;
        }
        let found = divergences(&stuck);
        assert_eq!(
            found,
            ["group 1: node2 is still rejoining after damage to its log"]
        );
    }

    #[test]
    fn diverged_replicas_fail_rule_6() {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: Some(1) });
        script.then(Op::Replicas {
            nodes: vec![replicas(1, &[(1, 3, 1)]), replicas(2, &[(1, 3, 2)])],
        });
        let report = check(&script.0, &params(0));
        assert_eq!(rules(&report), [Rule::ReplicaConvergence]);
        assert!(report.stats.checked.contains(&Rule::ReplicaConvergence));
    }

    /// `client` on cluster node `node` receives `msg` from q0 with
    /// `count`, then accepts it.
    fn consumed_on(script: &mut Script, client: ClientId, node: u64, msg: MsgId, count: u32) {
        let conn = conn(client);
        script
            .then(Op::Connected {
                conn,
                address: "q0".to_owned(),
                node: Some(node),
            })
            .then(Op::Delivered {
                conn,
                queue: "q0".to_owned(),
                msg,
                delivery_count: count,
                first_acquirer: false,
            })
            .then(Op::Settled {
                conn,
                queue: "q0".to_owned(),
                msg,
                outcome: Outcome::Accepted,
            });
    }

    #[test]
    fn a_stale_delivery_from_a_lagging_node_is_no_violation() {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: Some(1) });
        let msg = script.accepted(0);
        consumed_on(&mut script, ClientId::Consumer(0), 1, msg, 1);
        // An earlier acquisition (count 0), handed over late.
        consumed_on(&mut script, ClientId::Consumer(1), 2, msg, 0);
        let report = check(&script.0, &params(0));
        assert!(report.passed(), "{:?}", report.violations);
        // The same count again is a redelivery of a consumed message.
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: Some(1) });
        let msg = script.accepted(0);
        consumed_on(&mut script, ClientId::Consumer(0), 1, msg, 1);
        consumed_on(&mut script, ClientId::Consumer(1), 2, msg, 1);
        let report = check(&script.0, &params(0));
        assert_eq!(rules(&report), [Rule::ConsumedRedelivered]);
    }

    #[test]
    fn a_consume_on_a_node_cut_off_from_the_others_is_not_firm() {
        let isolate = |host: &str| Fault::Isolate {
            host: host.to_owned(),
            others: vec!["node1".to_owned()],
            leader_of: None,
        };
        let injected = |fault| {
            let lasts = Duration::from_secs(1);
            Op::Fault(FaultEvent::Injected { fault, lasts })
        };
        let ended = |fault| Op::Fault(FaultEvent::Ended(fault));
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: Some(1) });
        let msg = script.accepted(0);
        script.then(injected(isolate("node2")));
        consumed_on(&mut script, ClientId::Consumer(0), 2, msg, 0);
        script.then(ended(isolate("node2")));
        consumed_on(&mut script, ClientId::Consumer(1), 1, msg, 1);
        let report = check(&script.0, &params(0));
        assert!(report.passed(), "{:?}", report.violations);
        // Cut off node 3 instead: the consume on node 2 is firm.
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: Some(1) });
        let msg = script.accepted(0);
        script.then(injected(isolate("node3")));
        consumed_on(&mut script, ClientId::Consumer(0), 2, msg, 0);
        script.then(ended(isolate("node3")));
        consumed_on(&mut script, ClientId::Consumer(1), 1, msg, 1);
        let report = check(&script.0, &params(0));
        assert_eq!(rules(&report), [Rule::ConsumedRedelivered]);
    }

    /// Rule 9 in a cluster: a crash of any node (a group's leader) may
    /// stall the commit that dispatches a message, whose clock was read
    /// before the crash.
    #[test]
    fn a_late_delivery_behind_a_crashed_node_is_excused() {
        let ttl = MessageKind {
            ttl: Some(Duration::from_millis(2)),
            ..MessageKind::PLAIN
        };
        let late = |crash: bool| {
            let mut script = Script::default();
            script.then(Op::BrokerStart { node: Some(1) });
            let msg = sent(&mut script, 0, ttl, 1);
            let fault = Fault::Crash {
                host: "node3".to_owned(),
            };
            if crash {
                let lasts = Duration::from_millis(100);
                script.then(Op::Fault(FaultEvent::Injected {
                    fault: fault.clone(),
                    lasts,
                }));
            }
            while script.0.events().last().map(|e| e.time)
                < Some(EXPIRY_SLACK + Duration::from_millis(10))
            {
                script.then(Op::LeaderObserved {
                    group: 1,
                    leader: Some(1),
                });
            }
            if crash {
                script.then(Op::Fault(FaultEvent::Ended(fault)));
            }
            consumed_on(&mut script, ClientId::Consumer(0), 2, msg, 0);
            rules(&check(&script.0, &params(0)))
        };
        assert_eq!(late(false), [Rule::Expired]);
        assert_eq!(late(true), []);
    }

    #[test]
    fn a_panic_fails_rule_7_and_skips_the_end_of_run_rules() {
        let mut script = Script::default();
        script.then(Op::BrokerStart { node: Some(1) });
        script.accepted(0);
        script.then(Op::Aborted {
            why: "to_commit 9 is out of range".to_owned(),
        });
        let report = check(&script.0, &params(0));
        assert_eq!(rules(&report), [Rule::NodePanicked]);
    }
}
