//! What several rules read of the history: the first pass's [`Timeline`]
//! (facts whose later occurrence matters to earlier events), and the
//! [`Facts`] kept as the second pass goes (sends, acceptances, consumes,
//! deliveries and broker starts so far), updated once per event before
//! any rule sees it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::history::{
    ClientId, ConnId, Event, MessageKind, MsgId, NodeId, Op, Outcome, broker_name,
};
use crate::nemesis::{Fault, FaultEvent, fault_spans, fault_windows};
use crate::transactions::{Fate, Transactions};
use crate::workload::WorkloadParams;

use super::last_value::LastValues;
use super::{CUT_OFF_SLACK, Stats, may_vanish};

/// A [start, end] window of simulated time.
pub(super) type Window = (Duration, Duration);

/// The windows in which a broker disk was failing writes (the nemesis's
/// `disk full` and `fsync EIO` faults), from injection to end or heal (or
/// the end of the history).
fn disk_full_windows(events: &[Event]) -> Vec<Window> {
    windows_of(events, Fault::fails_writes)
}

/// The windows in which what `client` sent towards a broker could be
/// dropped (see [`Fault::drops_uplink_of`]): a settle sent then may never
/// arrive even though the connection later closes gracefully.
fn lossy_uplink_windows(events: &[Event], client: ClientId) -> Vec<Window> {
    let name = client.to_string();
    windows_of(events, |fault| fault.drops_uplink_of(&name))
}

/// The windows in which cluster node `node` was cut off from other nodes
/// (see [`Fault::nodes_cut_off`]).
fn cut_off_windows(events: &[Event], node: NodeId) -> Vec<Window> {
    let name = broker_name(node);
    windows_of(events, |fault| {
        fault.nodes_cut_off().contains(&name.as_str())
    })
}

/// The windows in which what passes between `client` and its broker could
/// be late (see [`Fault::delays_link_of`]).
fn late_link_windows(events: &[Event], client: ClientId) -> Vec<Window> {
    let name = client.to_string();
    windows_of(events, |fault| fault.delays_link_of(&name))
}

/// The windows in which some broker's commits may have been late: a disk
/// failing or slow; in a cluster also a group without a leader, from a
/// fault that may cost one until [`CUT_OFF_SLACK`] after it ended (an
/// election, and a transport that reconnects after a cut). A single node
/// has no leader to lose: what a crash did not make durable is lost, and
/// its restart replays the rest before any consumer attaches.
fn late_commit_windows(events: &[Event]) -> Vec<Window> {
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
fn clock_off_windows(events: &[Event]) -> Vec<Window> {
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
fn windows_of(events: &[Event], selected: impl Fn(&Fault) -> bool) -> Vec<Window> {
    let faults = events.iter().filter_map(|event| match &event.op {
        Op::Fault(fault) => Some((event.time, fault)),
        _ => None,
    });
    fault_windows(faults, selected)
}

/// Whether windows start by `to` and end no sooner than `from`.
pub(super) fn overlaps(windows: &[Window], from: Duration, to: Duration) -> bool {
    windows
        .iter()
        .any(|(start, end)| *start <= to && *end >= from)
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
        Op::Intrusion { .. } => "intrusion",
        Op::LeaderObserved { .. } => "leader_observed",
        Op::LivenessEnded => "liveness_ended",
    }
}

/// How many faults the nemesis injected between the first send and the
/// last settle.
fn faults_in_traffic(events: &[Event]) -> u64 {
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
    let during = |event: &&Event| {
        matches!(event.op, Op::Fault(FaultEvent::Injected { .. }))
            && (from..=to).contains(&event.time)
    };
    events.iter().filter(during).count() as u64
}

/// What the history says of connections and faults, gathered in a first
/// pass for the rules that look ahead (a connection lost after a settle
/// makes it not firm).
#[derive(Debug, Default)]
pub(super) struct Timeline {
    pub(super) disk_full: Vec<Window>,
    pub(super) lossy_uplinks: BTreeMap<ClientId, Vec<Window>>,
    /// Per cluster node, when it was cut off from other nodes.
    cut_off: BTreeMap<NodeId, Vec<Window>>,
    pub(super) lost_conns: BTreeMap<ConnId, Duration>,
    pub(super) closed_conns: BTreeSet<ConnId>,
    pub(super) connected_at: BTreeMap<ConnId, Duration>,
    /// The broker each connection went to.
    conn_node: BTreeMap<ConnId, NodeId>,
    pub(super) send_counts: BTreeMap<MsgId, u64>,
    /// How each message was sent (its first send says; resends keep it).
    kinds: BTreeMap<MsgId, MessageKind>,
    /// Every broker start, of any node.
    all_starts: Vec<Duration>,
    /// Per client, when its link to its broker could be late.
    pub(super) late_links: BTreeMap<ClientId, Vec<Window>>,
    /// When some broker's commits could be late.
    pub(super) late_commits: Vec<Window>,
    /// When some broker's group clocks may have been off the true time.
    clock_off: Vec<Window>,
    /// Every transaction, with its fate.
    pub(super) txns: Transactions,
}

impl Timeline {
    fn gather(events: &[Event]) -> Self {
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
    pub(super) fn node_of(&self, conn: ConnId) -> NodeId {
        self.conn_node.get(&conn).copied().flatten()
    }

    /// How `msg` was sent (plain if never: a phantom's kind is moot).
    pub(super) fn kind(&self, msg: MsgId) -> MessageKind {
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
    pub(super) fn may_vanish(&self, msg: MsgId, accepted_at: Duration) -> bool {
        may_vanish(self.kind(msg), accepted_at, &self.all_starts)
    }

    /// Whether some broker's group clocks may have been off the true time
    /// at some point in [`from`, `to`].
    pub(super) fn clock_off_between(&self, from: Duration, to: Duration) -> bool {
        overlaps(&self.clock_off, from, to)
    }

    /// Whether `conn`'s broker was cut off from other nodes at some point
    /// in [`from` − [`CUT_OFF_SLACK`], `to`].
    pub(super) fn cut_off_between(&self, conn: ConnId, from: Duration, to: Duration) -> bool {
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
pub(super) struct Starts(BTreeMap<NodeId, Vec<Duration>>);

impl Starts {
    /// Whether `node` started in (`after`, `until`].
    pub(super) fn between(&self, node: NodeId, after: Duration, until: Duration) -> bool {
        self.0
            .get(&node)
            .is_some_and(|starts| starts.iter().any(|s| *s > after && *s <= until))
    }

    /// When `node` last started (zero if never).
    pub(super) fn last(&self, node: NodeId) -> Duration {
        self.0
            .get(&node)
            .and_then(|starts| starts.last().copied())
            .unwrap_or_default()
    }
}

/// The delivery being observed, unless it is a phantom (rule 1's alone).
#[derive(Debug)]
pub(super) struct Delivery<'h> {
    pub(super) conn: ConnId,
    pub(super) queue: &'h str,
    pub(super) msg: MsgId,
    pub(super) delivery_count: u32,
    /// Its time.
    pub(super) time: Duration,
    /// The first delivery of the message from the queue.
    pub(super) first: bool,
    /// In a cluster, its delivery-count is lower than that of a delivery
    /// of the message from the queue already seen: it belongs to an
    /// earlier acquisition, handed over late by a lagging node.
    pub(super) stale: bool,
    /// Its connection was opened before its broker's latest restart: the
    /// dead incarnation sent it before that restart (it was only slow to
    /// arrive), so it says nothing of what the restarted broker did since.
    pub(super) from_dead_incarnation: bool,
    /// Sends of the message so far.
    pub(super) sends: u64,
    /// Copies of it the broker may have made in the queue so far.
    pub(super) copies: u64,
}

/// The shared facts as the second pass goes, in history order: every field
/// describes the history up to and including the event being observed.
pub(super) struct Facts<'h> {
    pub(super) events: &'h [Event],
    pub(super) params: &'h WorkloadParams,
    /// The first pass.
    pub(super) timeline: Timeline,
    /// The last-value queue's messages, from the first pass.
    pub(super) last_values: LastValues,
    /// Per producer, the queues its messages go to.
    pub(super) destinations: BTreeMap<u32, Vec<String>>,
    pub(super) sends_so_far: BTreeMap<MsgId, u64>,
    /// When each message was first sent.
    pub(super) first_sent: BTreeMap<MsgId, Duration>,
    /// When a producer saw each message accepted (history index, time); a
    /// transaction's messages count as accepted at its commit's answer.
    pub(super) accepted: BTreeMap<MsgId, (usize, Duration)>,
    /// Every consume of a message from a queue so far: when and on which
    /// connection.
    pub(super) consumes: BTreeMap<(&'h str, MsgId), Vec<(Duration, ConnId)>>,
    /// Every (queue, message) delivered so far.
    pub(super) delivered: BTreeSet<(&'h str, MsgId)>,
    /// Per (queue, message), the consumes the broker settled so far under
    /// rcv-settle-mode `second` (rule 19): done for good.
    pub(super) confirmed: BTreeMap<(&'h str, MsgId), u64>,
    /// The highest delivery-count seen so far per (queue, message).
    counts_seen: BTreeMap<(&'h str, MsgId), u32>,
    pub(super) starts: Starts,
    /// A panic cut the run short: it never had its liveness phase.
    pub(super) aborted: bool,
    redeliveries: u64,
    duplicates: u64,
    /// Why the event being observed (a delivery or a browse) is a phantom,
    /// if it is.
    pub(super) phantom: Option<String>,
    /// The event being observed, if it is a delivery and no phantom.
    pub(super) delivery: Option<Delivery<'h>>,
}

impl<'h> Facts<'h> {
    /// Runs the first pass over `events`.
    pub(super) fn new(events: &'h [Event], params: &'h WorkloadParams) -> Self {
        Facts {
            events,
            params,
            timeline: Timeline::gather(events),
            last_values: LastValues::gather(events, params),
            destinations: params
                .all_producers()
                .map(|producer| (producer, params.destinations_of(producer)))
                .collect(),
            sends_so_far: BTreeMap::new(),
            first_sent: BTreeMap::new(),
            accepted: BTreeMap::new(),
            consumes: BTreeMap::new(),
            delivered: BTreeSet::new(),
            confirmed: BTreeMap::new(),
            counts_seen: BTreeMap::new(),
            starts: Starts::default(),
            aborted: false,
            redeliveries: 0,
            duplicates: 0,
            phantom: None,
            delivery: None,
        }
    }

    /// Whether something other than the broker may have made `delivery`
    /// of a message first sent at `sent` late since `since` (an expiry, a
    /// successor's acceptance): its link, its node's cut from the others,
    /// or a disk that delays commits, since then; or a clock off the true
    /// time since it was sent.
    pub(super) fn may_be_late(
        &self,
        delivery: &Delivery<'_>,
        sent: Duration,
        since: Duration,
    ) -> bool {
        let timeline = &self.timeline;
        let t2 = delivery.time;
        timeline
            .late_links
            .get(&delivery.conn.client)
            .is_some_and(|windows| overlaps(windows, since, t2))
            || overlaps(&timeline.late_commits, since, t2)
            || timeline.clock_off_between(sent, t2)
            || timeline.cut_off_between(delivery.conn, since, t2)
    }

    /// The run reached its end: it had its liveness phase.
    pub(super) fn ended(&self) -> bool {
        !self.aborted
    }

    /// Takes in the history's event `index`, before the rules see it.
    pub(super) fn observe(&mut self, index: usize, event: &'h Event) {
        self.phantom = None;
        self.delivery = None;
        match &event.op {
            Op::BrokerStart { node } => {
                self.starts.0.entry(*node).or_default().push(event.time);
            }
            Op::Aborted { .. } => self.aborted = true,
            Op::Send { msg, .. } => {
                *self.sends_so_far.entry(*msg).or_default() += 1;
                self.first_sent.entry(*msg).or_insert(event.time);
            }
            // A message's outcome in a transaction is provisional: its
            // transaction's commit accepts it.
            Op::ProducerOutcome {
                msg,
                outcome: Outcome::Accepted,
                ..
            } if self.timeline.kind(*msg).txn.is_none() => {
                self.accepted.entry(*msg).or_insert((index, event.time));
            }
            Op::Discharged { txn, .. } => {
                let committed = self.timeline.txns.get(*txn).filter(|t| {
                    t.fate
                        == Fate::Committed {
                            index,
                            time: event.time,
                        }
                });
                for msg in committed.into_iter().flat_map(|t| t.applied_members()) {
                    self.accepted.entry(msg).or_insert((index, event.time));
                }
            }
            Op::Settled {
                conn,
                queue,
                msg,
                outcome,
            } if outcome.consumes() => {
                let entry = self.consumes.entry((queue.as_str(), *msg)).or_default();
                if !entry.is_empty() {
                    self.duplicates += 1;
                }
                entry.push((event.time, *conn));
            }
            Op::SettleConfirmed {
                queue,
                msg,
                outcome,
                ..
            } if outcome.consumes() => {
                *self.confirmed.entry((queue.as_str(), *msg)).or_default() += 1;
            }
            Op::Browsed { queue, msg, .. } => self.phantom = self.why_phantom(queue, *msg),
            Op::Delivered {
                conn,
                queue,
                msg,
                delivery_count,
                ..
            } => {
                self.phantom = self.why_phantom(queue, *msg);
                if self.phantom.is_none() {
                    self.delivery =
                        Some(self.book_delivery(*conn, queue, *msg, *delivery_count, event));
                }
            }
            _ => {}
        }
    }

    /// Books a delivery that is no phantom, and describes it.
    fn book_delivery(
        &mut self,
        conn: ConnId,
        queue: &'h str,
        msg: MsgId,
        delivery_count: u32,
        event: &Event,
    ) -> Delivery<'h> {
        let key = (queue, msg);
        let first = self.delivered.insert(key);
        if !first {
            self.redeliveries += 1;
        }
        let count_seen = self.counts_seen.entry(key).or_insert(delivery_count);
        let node = self.timeline.node_of(conn);
        let stale = node.is_some() && delivery_count < *count_seen;
        *count_seen = (*count_seen).max(delivery_count);
        let from_dead_incarnation = self
            .timeline
            .connected_at
            .get(&conn)
            .is_some_and(|opened| self.starts.between(node, *opened, event.time));
        let sends = self.sends_so_far.get(&msg).copied().unwrap_or(0);
        Delivery {
            conn,
            queue,
            msg,
            delivery_count,
            time: event.time,
            first,
            stale,
            from_dead_incarnation,
            sends,
            copies: self.timeline.copies_allowed(msg, sends),
        }
    }

    /// Rule 1: why a delivery (or a browse) of `msg` from `queue` is a
    /// phantom, if it is: it was never sent, or never sent to `queue` (or
    /// to the queue that dead-letters into it, or, for a volatile
    /// subscription, to the topic).
    fn why_phantom(&self, queue: &str, msg: MsgId) -> Option<String> {
        if !self.sends_so_far.contains_key(&msg) {
            return Some(format!("{msg} was never sent"));
        }
        let to_topic =
            self.params.is_volatile_queue(queue) && self.params.is_topic_producer(msg.producer);
        let sent_here = to_topic
            || self
                .destinations
                .get(&msg.producer)
                .is_some_and(|queues| queues.iter().any(|q| self.reaches(q, queue)));
        (!sent_here).then(|| format!("{msg} was never sent to {queue}"))
    }

    /// Whether a message sent to `destination` may be delivered from
    /// `queue`: it is the destination, or the destination's dead-letter
    /// queue.
    pub(super) fn reaches(&self, destination: &str, queue: &str) -> bool {
        destination == queue || self.params.dead_letter_queue_of(destination) == Some(queue)
    }

    /// Whether `msg` was consumed from `queue`.
    pub(super) fn consumed(&self, queue: &str, msg: MsgId) -> bool {
        self.consumes.contains_key(&(queue, msg))
    }

    /// Whether `msg` was delivered from `queue`.
    pub(super) fn was_delivered(&self, queue: &str, msg: MsgId) -> bool {
        self.delivered.contains(&(queue, msg))
    }

    /// Fills in the counts of `stats` that the facts keep.
    pub(super) fn count(&self, stats: &mut Stats) {
        for event in self.events {
            *stats.events_by_kind.entry(kind(&event.op)).or_default() += 1;
        }
        stats.faults_in_traffic = faults_in_traffic(self.events);
        stats.messages_sent = self.timeline.send_counts.len() as u64;
        stats.messages_accepted = self.accepted.len() as u64;
        stats.messages_consumed = self.consumes.len() as u64;
        stats.dead_lettered = self
            .consumes
            .keys()
            .filter(|(queue, _)| self.params.is_dead_letter_queue(queue))
            .count() as u64;
        stats.redeliveries = self.redeliveries;
        stats.duplicates = self.duplicates;
    }
}
