//! The checker: reads a run's [`History`] and decides whether the broker
//! kept its promises. The rules (also in docs/simulation.md):
//!
//! Every rule is about a message M in a queue Q: a queue producer's queue,
//! or, for a topic producer, each subscriber's subscription queue (every
//! subscription exists before a topic producer starts, so each must get
//! every topic message).
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
//! 5. **The broker's own state agrees.** Once every client has gone, the
//!    broker reports each queue: it must have every queue of the workload,
//!    with no consumer and nothing unsettled, and a depth no less than the
//!    accepted messages never consumed from it, and no more than the copies
//!    the history leaves it possibly holding: every send of a message not
//!    consumed from it on a connection that closed cleanly (the broker
//!    answered the close, so it had read the settle) since its last start.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use crate::history::{ClientId, ConnId, History, MsgId, Op, QueueState};
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
    /// Rule 5.
    FinalState,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::NeverSent => "delivered but never sent",
            Rule::Lost => "accepted but never consumed",
            Rule::ConsumedRedelivered => "consumed message delivered again",
            Rule::Fifo => "per-producer FIFO broken",
            Rule::FinalState => "broker state disagrees with the history",
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
    /// Distinct messages consumed, counted once per queue (a topic message
    /// once per subscription).
    pub messages_consumed: u64,
    /// Deliveries of a message from a queue beyond its first (all allowed
    /// ones).
    pub redeliveries: u64,
    /// Consumes of a message from a queue beyond its first (allowed
    /// duplicates).
    pub duplicates: u64,
    /// Per queue: messages accepted by the broker and never consumed.
    pub final_depths: BTreeMap<String, u64>,
    /// Whether the broker reported its state at the end (rule 5 checked).
    pub broker_state_checked: bool,
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
        Op::Relinked { .. } => "relinked",
        Op::Send { resend: false, .. } => "send",
        Op::Send { resend: true, .. } => "resend",
        Op::ProducerOutcome { .. } => "producer_outcome",
        Op::Delivered { .. } => "delivered",
        Op::Settled { .. } => "settled",
        Op::BrokerState { .. } => "broker_state",
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
    let mut closed_conns: BTreeSet<ConnId> = BTreeSet::new();
    let mut connected_at: BTreeMap<ConnId, Duration> = BTreeMap::new();
    let mut send_counts: BTreeMap<MsgId, u64> = BTreeMap::new();
    for event in events {
        match &event.op {
            Op::ConnectionLost { conn, .. } => {
                lost_conns.entry(*conn).or_insert(event.time);
            }
            Op::Connected { conn, .. } => {
                connected_at.entry(*conn).or_insert(event.time);
            }
            Op::Closed { conn } => {
                closed_conns.insert(*conn);
            }
            Op::Send { msg, .. } => *send_counts.entry(*msg).or_default() += 1,
            _ => {}
        }
    }
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
    let mut broker_starts: Vec<Duration> = Vec::new();
    // Rule 4: per (queue, producer), the last in-order seq this broker life.
    let mut fifo_last: BTreeMap<(String, u32), (u64, usize)> = BTreeMap::new();
    // Rule 5: the broker's last report of its queues.
    let mut broker_state: Option<(usize, &[QueueState])> = None;
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
                let sent_here = destinations
                    .get(&msg.producer)
                    .is_some_and(|queues| queues.contains(queue));
                if !sent_here {
                    report.violations.push(violation(
                        Rule::NeverSent,
                        format!("{msg} was never sent to {queue}"),
                    ));
                    continue;
                }
                let key = (queue.as_str(), *msg);
                let first_delivery = delivered.insert(key);
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
                let firm = consumes.get(&key).map_or(0, |list| {
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
                let single_consumer = consumers_per_queue.get(queue) == Some(&1);
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
            Op::BrokerState { queues } => broker_state = Some((index, queues)),
            Op::BrokerStopped { .. }
            | Op::Fault { .. }
            | Op::Connected { .. }
            | Op::ConnectionLost { .. }
            | Op::Closed { .. }
            | Op::Relinked { .. } => {}
        }
    }

    for (msg, (index, time)) in &accepted {
        for queue in destinations.get(&msg.producer).into_iter().flatten() {
            if consumes.contains_key(&(queue.as_str(), *msg)) {
                continue;
            }
            *stats.final_depths.entry(queue.clone()).or_default() += 1;
            report.violations.push(Violation {
                rule: Rule::Lost,
                index: *index,
                time: *time,
                detail: format!("{}: {msg} was never consumed from {queue}", events[*index]),
            });
        }
    }
    for queue in params.all_queues() {
        stats.final_depths.entry(queue).or_default();
    }
    if let Some((index, queues)) = broker_state {
        stats.broker_state_checked = true;
        let facts = Facts {
            params,
            destinations: &destinations,
            send_counts: &send_counts,
            accepted: &accepted,
            consumes: &consumes,
            closed_conns: &closed_conns,
            connected_at: &connected_at,
            last_start: broker_starts.last().copied().unwrap_or_default(),
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

/// What rule 5 needs from the history.
struct Facts<'a> {
    params: &'a WorkloadParams,
    destinations: &'a BTreeMap<u32, Vec<String>>,
    send_counts: &'a BTreeMap<MsgId, u64>,
    accepted: &'a BTreeMap<MsgId, (usize, Duration)>,
    consumes: &'a BTreeMap<(&'a str, MsgId), Vec<(Duration, ConnId)>>,
    closed_conns: &'a BTreeSet<ConnId>,
    connected_at: &'a BTreeMap<ConnId, Duration>,
    last_start: Duration,
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

    /// The depth `queue` must have at least (accepted messages never
    /// consumed from it) and may have at most (every send of a message not
    /// surely consumed from it since the broker's last start).
    fn depth_bounds(&self, queue: &str) -> (u64, u64) {
        let mut least = 0;
        let mut most = 0;
        for (msg, sends) in self.send_counts {
            let goes_here = self
                .destinations
                .get(&msg.producer)
                .is_some_and(|queues| queues.iter().any(|q| q == queue));
            if !goes_here {
                continue;
            }
            let consumes = self.consumes.get(&(queue, *msg));
            if self.accepted.contains_key(msg) && consumes.is_none() {
                least += 1;
            }
            let surely_consumed = consumes.is_some_and(|list| {
                list.iter().any(|(time, conn)| {
                    *time >= self.last_start
                        && self.closed_conns.contains(conn)
                        && self
                            .connected_at
                            .get(conn)
                            .is_some_and(|opened| *opened >= self.last_start)
                })
            });
            if !surely_consumed {
                most += sends;
            }
        }
        (least, most)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Outcome;

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
            let conn = conn(client);
            self.then(Op::Connected {
                conn,
                address: queue.to_owned(),
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
        script.then(Op::BrokerStart);
        let msg = script.accepted(0);
        script
            .consumed(ClientId::Consumer(0), "q0", msg)
            .broker_state(&[("q0", 0, 0), ("q1", 0, 0)]);
        let report = check(&script.0, &params(0));
        assert!(report.passed(), "{:?}", report.violations);
        assert!(report.stats.broker_state_checked);
    }

    #[test]
    fn a_broker_that_still_holds_a_consumed_message_fails_rule_5() {
        let mut script = Script::default();
        script.then(Op::BrokerStart);
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
        script.then(Op::BrokerStart).broker_state(&[("q0", 0, 0)]);
        let report = check(&script.0, &params(0));
        assert_eq!(rules(&report), [Rule::FinalState]);
        assert!(report.violations[0].detail.contains("no queue q1"));
    }

    #[test]
    fn a_message_consumed_on_a_lost_connection_may_still_be_held() {
        let mut script = Script::default();
        script.then(Op::BrokerStart);
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
        script.then(Op::BrokerStart);
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
        script.then(Op::BrokerStart);
        let msg = script.accepted(0);
        script.consumed(ClientId::Consumer(1), "q1", msg);
        let report = check(&script.0, &params(0));
        // Sent to q0, delivered from q1; and never consumed from q0.
        assert_eq!(rules(&report), [Rule::Lost, Rule::NeverSent]);
    }
}
