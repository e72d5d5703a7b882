//! The checker: reads a run's [`History`] and decides whether the broker
//! kept its promises. The rules (also in docs/simulation.md):
//!
//! 1. **No phantom messages.** Every delivered message was sent before.
//! 2. **No loss.** Every message whose `accepted` a producer received is
//!    consumed (a consumer settled it `accepted` or `rejected`) by the end of
//!    the liveness phase. A `released` or `modified` delivery does not count.
//! 3. **No redelivery of a consumed message.** A delivery of message M is
//!    a violation if, before it, consumers made as many *firm* consumes of
//!    M as producers made sends of M (each send may legally create one
//!    copy). A consume (settle `accepted`/`rejected` at time t on connection
//!    C) is firm for a later delivery at t2 unless C was later lost (the
//!    disposition may never have reached the broker — a graceful close does
//!    not count as lost), or the broker restarted in (t, t2] (the settle may
//!    not have been durable yet), or a broker disk was failing writes
//!    (disk full, fsync EIO) at some point in [t, t2] (the broker drops a
//!    settle it cannot log: a redelivery, never a loss), or C's client was
//!    partitioned from the broker (or its link lossy) at t: turmoil drops
//!    whole writes of a TCP stream there without breaking the connection,
//!    so the settle may never have arrived; or C was opened before the
//!    broker's latest restart before t (a settle on a connection to a dead
//!    incarnation reaches nobody). A delivery on a connection opened before
//!    the broker's latest restart is no violation either: the dead
//!    incarnation sent it before the restart; it was only slow to arrive.
//!    Everything else that delivers a message
//!    again is a counted, allowed duplicate.
//! 4. **Per-producer FIFO.** On a queue with one consumer, within one broker
//!    lifetime (between restarts), the first-ever deliveries of messages
//!    sent exactly once, with delivery-count 0, arrive in each producer's
//!    sequence order. Messages sent twice, released, modified, or lost with
//!    a link are excluded, because the protocol lets those move.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use crate::history::{ClientId, ConnId, History, MsgId, Op};
use crate::workload::WorkloadParams;

/// At most this many violations are kept in a report.
const VIOLATIONS_KEPT: usize = 100;

/// Which rule a violation breaks.
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
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::NeverSent => "delivered but never sent",
            Rule::Lost => "accepted but never consumed",
            Rule::ConsumedRedelivered => "consumed message delivered again",
            Rule::Fifo => "per-producer FIFO broken",
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
    /// Distinct messages sent.
    pub messages_sent: u64,
    /// Distinct messages a producer saw accepted.
    pub messages_accepted: u64,
    /// Distinct messages consumed.
    pub messages_consumed: u64,
    /// Deliveries of a message beyond its first (all allowed ones).
    pub redeliveries: u64,
    /// Messages consumed more than once (allowed duplicates).
    pub duplicates: u64,
    /// Per queue: messages accepted by the broker and never consumed.
    pub final_depths: BTreeMap<String, u64>,
    /// Violations found, including those not kept in the report.
    pub violations_total: u64,
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
}

/// The windows in which a broker disk was failing writes (the nemesis's
/// `disk full` and `fsync EIO` faults), from its start line to its `ended`
/// or `healed` line (or the end of the history). Matched on the nemesis's
/// trace text: the one place the checker depends on its wording.
fn disk_full_windows(events: &[crate::history::Event]) -> Vec<(Duration, Duration)> {
    fault_windows(events, |fault| {
        fault.starts_with("disk full") || fault.starts_with("fsync EIO")
    })
}

/// The windows in which what `client` sent towards the broker could be
/// dropped: a partition in that direction, or a lossy link. turmoil drops
/// whole writes of a TCP stream there without breaking the connection, so a
/// settle sent then may never arrive even though the connection later
/// closes gracefully.
fn lossy_uplink_windows(
    events: &[crate::history::Event],
    client: ClientId,
) -> Vec<(Duration, Duration)> {
    let towards_broker = format!("partition {client} -> broker");
    let both_ways = format!("partition {client} <-> broker");
    let lossy = format!("lossy {client} <-> broker");
    fault_windows(events, |fault| {
        fault.starts_with(&towards_broker)
            || fault.starts_with(&both_ways)
            || fault.starts_with(&lossy)
    })
}

/// The [start, end] windows of the nemesis faults `selected` picks (by
/// their trace text), from injection to end or heal; one never ended lasts
/// to the end of the run.
fn fault_windows(
    events: &[crate::history::Event],
    selected: impl Fn(&str) -> bool,
) -> Vec<(Duration, Duration)> {
    let mut windows = Vec::new();
    let mut open: BTreeMap<String, Duration> = BTreeMap::new();
    for event in events {
        let Op::Fault { what } = &event.op else {
            continue;
        };
        let (ending, fault) = match what
            .strip_prefix("ended ")
            .or_else(|| what.strip_prefix("healed "))
        {
            Some(rest) => (true, rest),
            None => (false, what.as_str()),
        };
        if !selected(fault) {
            continue;
        }
        // "disk full broker for 1.2s" and "ended disk full broker" name the
        // same fault by what precedes " for ".
        let key = fault.split(" for ").next().unwrap_or(fault).to_owned();
        if ending {
            if let Some(start) = open.remove(&key) {
                windows.push((start, event.time));
            }
        } else {
            open.entry(key).or_insert(event.time);
        }
    }
    windows.extend(open.into_values().map(|start| (start, Duration::MAX)));
    windows
}

fn kind(op: &Op) -> &'static str {
    match op {
        Op::BrokerStart => "broker_start",
        Op::Fault { .. } => "fault",
        Op::BrokerStopped { .. } => "broker_stopped",
        Op::Connected { .. } => "connected",
        Op::ConnectionLost { .. } => "connection_lost",
        Op::Closed { .. } => "closed",
        Op::Send { resend: false, .. } => "send",
        Op::Send { resend: true, .. } => "resend",
        Op::ProducerOutcome { .. } => "producer_outcome",
        Op::Delivered { .. } => "delivered",
        Op::Settled { .. } => "settled",
    }
}

/// Checks `history` against the rules in the module docs.
pub fn check(history: &History, params: &WorkloadParams) -> CheckReport {
    let events = history.events();
    let mut report = CheckReport::default();
    let mut stats = Stats::default();
    for event in events {
        *stats.events_by_kind.entry(kind(&event.op)).or_default() += 1;
    }

    // First pass: facts whose later occurrence matters to earlier events.
    let disk_full = disk_full_windows(events);
    let mut lossy_uplinks: BTreeMap<ClientId, Vec<(Duration, Duration)>> = BTreeMap::new();
    for event in events {
        if let Op::Settled { conn, .. } = &event.op {
            lossy_uplinks
                .entry(conn.client)
                .or_insert_with(|| lossy_uplink_windows(events, conn.client));
        }
    }
    let mut lost_conns: BTreeMap<ConnId, Duration> = BTreeMap::new();
    let mut connected_at: BTreeMap<ConnId, Duration> = BTreeMap::new();
    let mut send_counts: BTreeMap<MsgId, u64> = BTreeMap::new();
    let mut queue_of_producer: BTreeMap<u32, String> = BTreeMap::new();
    for event in events {
        match &event.op {
            Op::ConnectionLost { conn, .. } => {
                lost_conns.entry(*conn).or_insert(event.time);
            }
            Op::Connected { conn, .. } => {
                connected_at.entry(*conn).or_insert(event.time);
            }
            Op::Send { msg, .. } => *send_counts.entry(*msg).or_default() += 1,
            _ => {}
        }
    }
    for producer in 0..params.producers {
        queue_of_producer.insert(producer, params.queue_of(producer).to_owned());
    }
    let mut consumers_per_queue: BTreeMap<&str, u32> = BTreeMap::new();
    for consumer in 0..params.consumers {
        *consumers_per_queue
            .entry(params.queue_of(consumer))
            .or_default() += 1;
    }

    // Second pass, in history order.
    let mut sends_so_far: BTreeMap<MsgId, u64> = BTreeMap::new();
    let mut accepted: BTreeMap<MsgId, (usize, Duration)> = BTreeMap::new();
    // Every consume of a message so far: when and on which connection.
    let mut consumes: BTreeMap<MsgId, Vec<(Duration, ConnId)>> = BTreeMap::new();
    let mut delivered: BTreeSet<MsgId> = BTreeSet::new();
    let mut broker_starts: Vec<Duration> = Vec::new();
    // Rule 4: per (queue, producer), the last in-order seq this broker life.
    let mut fifo_last: BTreeMap<(String, u32), (u64, usize)> = BTreeMap::new();
    for (index, event) in events.iter().enumerate() {
        let violation = |rule, detail: String| Violation {
            rule,
            index,
            time: event.time,
            detail: format!("{event}: {detail}"),
        };
        match &event.op {
            Op::BrokerStart => {
                broker_starts.push(event.time);
                fifo_last.clear();
            }
            Op::Send { msg, .. } => *sends_so_far.entry(*msg).or_default() += 1,
            Op::ProducerOutcome { msg, outcome, .. } => {
                if *outcome == crate::history::Outcome::Accepted {
                    accepted.entry(*msg).or_insert((index, event.time));
                }
            }
            Op::Settled { conn, msg, outcome } => {
                if outcome.consumes() {
                    let entry = consumes.entry(*msg).or_default();
                    if !entry.is_empty() {
                        stats.duplicates += 1;
                    }
                    entry.push((event.time, *conn));
                }
            }
            Op::Delivered {
                conn: delivery_conn,
                queue,
                msg,
                delivery_count,
                ..
            } => {
                let sends = sends_so_far.get(msg).copied().unwrap_or(0);
                if sends == 0 {
                    report
                        .violations
                        .push(violation(Rule::NeverSent, format!("{msg} was never sent")));
                    continue;
                }
                let first_delivery = delivered.insert(*msg);
                if !first_delivery {
                    stats.redeliveries += 1;
                }
                let t2 = event.time;
                // On a connection opened before the broker's latest restart,
                // a delivery was sent by the dead incarnation, before that
                // restart (it was only slow to arrive): it says nothing of
                // what the restarted broker did since.
                let from_dead_incarnation = connected_at.get(delivery_conn).is_some_and(|opened| {
                    broker_starts
                        .iter()
                        .any(|start| start > opened && *start <= t2)
                });
                let firm = consumes.get(msg).map_or(0, |list| {
                    list.iter()
                        .filter(|(t, conn)| {
                            let conn_lost = lost_conns.get(conn).is_some_and(|lost| lost >= t);
                            let restarted =
                                broker_starts.iter().any(|start| start > t && *start <= t2);
                            // A connection to a broker incarnation that has
                            // since been restarted reaches nobody: bytes
                            // still in flight from the old one can be
                            // delivered and settled, but the settle goes
                            // nowhere, even if the client then sees a clean
                            // close.
                            let stale = connected_at.get(conn).is_some_and(|opened| {
                                broker_starts
                                    .iter()
                                    .any(|start| start > opened && start <= t)
                            });
                            let unlogged = disk_full
                                .iter()
                                .any(|(start, end)| start <= &t2 && end >= t);
                            let dropped = lossy_uplinks.get(&conn.client).is_some_and(|w| {
                                w.iter().any(|(start, end)| start <= t && end >= t)
                            });
                            !conn_lost && !restarted && !stale && !unlogged && !dropped
                        })
                        .count() as u64
                });
                if firm >= sends && !from_dead_incarnation {
                    report.violations.push(violation(
                        Rule::ConsumedRedelivered,
                        format!(
                            "{msg} was sent {sends} time(s) and already consumed firmly {firm} time(s)"
                        ),
                    ));
                }
                let single_consumer = consumers_per_queue.get(queue.as_str()) == Some(&1);
                // The broker only rewrites the header (delivery-count,
                // first-acquirer) on a redelivery, and counts a delivery
                // lost with its link as failed; so delivery-count 0 on the
                // first delivery the client saw means no earlier acquirer.
                let clean =
                    send_counts.get(msg) == Some(&1) && first_delivery && *delivery_count == 0;
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
            Op::BrokerStopped { .. }
            | Op::Fault { .. }
            | Op::Connected { .. }
            | Op::ConnectionLost { .. }
            | Op::Closed { .. } => {}
        }
    }

    for (msg, (index, time)) in &accepted {
        if !consumes.contains_key(msg) {
            let queue = queue_of_producer
                .get(&msg.producer)
                .cloned()
                .unwrap_or_default();
            *stats.final_depths.entry(queue).or_default() += 1;
            report.violations.push(Violation {
                rule: Rule::Lost,
                index: *index,
                time: *time,
                detail: format!("{}: {msg} was never consumed", events[*index]),
            });
        }
    }
    for queue in &params.queues {
        stats.final_depths.entry(queue.clone()).or_default();
    }
    stats.messages_sent = send_counts.len() as u64;
    stats.messages_accepted = accepted.len() as u64;
    stats.messages_consumed = consumes.len() as u64;
    report.stats = stats;
    report.violations.sort_by_key(|v| v.index);
    let total = report.violations.len() as u64;
    // The first violations explain the failure; a runaway bug can produce
    // hundreds of thousands more.
    report.violations.truncate(VIOLATIONS_KEPT);
    report.stats.violations_total = total;
    report
}
