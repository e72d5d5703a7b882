//! Rule 18.
//!
//! Its one consumer keeps its credit at 1, and grants the next credit only
//! after a delivery arrives; so the broker picks the message of a delivery
//! D after the consumer received the delivery P before it on the same link.
//! A message H of higher priority than D's, accepted before P arrived and
//! delivered to no one before D, was in the queue when the broker picked
//! D's: ready, unless a link of the consumer that has since gone still
//! held it. Then D is a violation. What may hold H:
//!
//! - an earlier link of the consumer that the broker has not detached yet:
//!   a lost connection's until the broker notices (its idle timeout, or in
//!   a cluster the group's leader, after a cut); a closed or re-attached
//!   one's until its detach is applied. So D is checked only once every
//!   earlier link ended [`STALE_LINK_MAX`] before P (a graceful end,
//!   [`DETACH_SLACK`] before, with no late commit since);
//! - a delivery late to arrive: D on a dead incarnation's connection, a
//!   stale one, or one a fault may have delayed (as rule 9 allows).
//!
//! Per producer and priority, rule 4 holds as on any queue with one
//! consumer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::checker::facts::{Facts, overlaps};
use crate::checker::{CheckReport, Rule};
use crate::history::{ClientId, ConnId, Event, MsgId, Op, Outcome};
use crate::queue_types::PRIORITY_QUEUE;
use crate::workload::WorkloadParams;

use super::{Check, violation};

/// How long the broker may keep a lost connection's link: its idle
/// timeout (2 s) and, in a cluster, a leader's detach of a node cut off
/// ([`crate::checker::CUT_OFF_SLACK`]), with room to spare.
pub const STALE_LINK_MAX: Duration = Duration::from_secs(10);

/// How long after a graceful close or a re-attach the old link's detach
/// may take to apply, with no fault delaying commits.
pub const DETACH_SLACK: Duration = Duration::from_secs(1);

/// What the history says of one message sent to the priority queue.
#[derive(Debug, Clone, Copy)]
struct Sent {
    priority: u8,
    /// The history index of its first `accepted`.
    accepted: Option<usize>,
}

/// Rule 18, **higher priorities first**, fed the history event by event
/// (what it judges and what excuses it: the module docs).
#[derive(Debug, Default)]
pub(super) struct Priority {
    /// Its consumer, if the run has the queue.
    consumer: Option<ClientId>,
    /// Every message sent to the queue so far.
    sent: BTreeMap<MsgId, Sent>,
    /// The messages delivered from it so far.
    delivered: BTreeSet<MsgId>,
    /// The consumer's current link (its connection), and the index and
    /// time of the last delivery on it.
    link: Option<(ConnId, Option<(usize, Duration)>)>,
    /// When each earlier link of the consumer ended, and whether
    /// gracefully (closed, or detached to attach again).
    ended: Vec<(Duration, bool)>,
    /// Deliveries judged, for the summary.
    judged: u64,
}

impl Priority {
    /// The rule for `params`'s workload.
    pub(super) fn new(params: &WorkloadParams) -> Self {
        let consumer = params
            .all_consumers()
            .find(|&n| params.typed_queue_of_consumer(n) == Some(PRIORITY_QUEUE))
            .map(ClientId::Consumer);
        Self {
            consumer,
            ..Self::default()
        }
    }

    /// Bookkeeping: sends, acceptances, and the consumer's links.
    fn track(&mut self, index: usize, event: &Event, params: &WorkloadParams) {
        match &event.op {
            Op::Send { msg, kind, .. }
                if params.typed_queue_of_producer(msg.producer) == Some(PRIORITY_QUEUE) =>
            {
                if let Some(priority) = kind.priority {
                    self.sent.entry(*msg).or_insert(Sent {
                        priority,
                        accepted: None,
                    });
                }
            }
            Op::ProducerOutcome {
                msg,
                outcome: Outcome::Accepted,
                ..
            } => {
                if let Some(sent) = self.sent.get_mut(msg) {
                    sent.accepted.get_or_insert(index);
                }
            }
            Op::Connected { conn, .. } if Some(conn.client) == self.consumer => {
                self.link = Some((*conn, None));
            }
            Op::Relinked { conn } if Some(conn.client) == self.consumer => {
                self.ended.push((event.time, true));
                self.link = Some((*conn, None));
            }
            Op::Closed { conn } | Op::ConnectionLost { conn, .. }
                if Some(conn.client) == self.consumer =>
            {
                let graceful = matches!(event.op, Op::Closed { .. });
                // A refused connect had no link.
                if self.link.is_some_and(|(current, _)| current == *conn) {
                    self.ended.push((event.time, graceful));
                    self.link = None;
                }
            }
            _ => {}
        }
    }

    /// Why the delivery observed now (`facts.delivery`, at history index
    /// `index`) overtook a message of higher priority, if it did.
    fn overtaken(&mut self, index: usize, facts: &Facts<'_>) -> Option<String> {
        let delivery = facts.delivery.as_ref()?;
        let (t2, msg) = (delivery.time, delivery.msg);
        if delivery.queue != PRIORITY_QUEUE {
            return None;
        }
        let first = self.delivered.insert(msg);
        let (current, previous) = self.link.as_mut()?;
        if *current != delivery.conn {
            return None;
        }
        let (p_index, p_time) = previous.replace((index, t2))?;
        let late_commits = &facts.timeline.late_commits;
        let links_gone = self.ended.iter().all(|&(end, graceful)| {
            end + STALE_LINK_MAX <= p_time
                || (graceful && end + DETACH_SLACK <= p_time && !overlaps(late_commits, end, t2))
        });
        let priority = self.sent.get(&msg)?.priority;
        if !links_gone {
            return None;
        }
        self.judged += 1;
        let (other, sent) = self
            .sent
            .iter()
            .filter(|(other, sent)| {
                sent.priority > priority
                    && sent.accepted.is_some_and(|accepted| accepted < p_index)
                    && !self.delivered.contains(other)
            })
            .map(|(other, sent)| (*other, *sent))
            .min_by_key(|(_, sent)| sent.accepted)?;
        let accepted = sent.accepted?;
        let first_sent = facts.first_sent.get(&msg).copied().unwrap_or_default();
        if delivery.from_dead_incarnation
            || delivery.stale
            || facts.may_be_late(delivery, first_sent, facts.events[accepted].time)
        {
            return None;
        }
        let again = if first { "" } else { " (again)" };
        Some(format!(
            "{msg}{again} has priority {priority}, yet {other} of priority {} was accepted (history event {accepted}) before the delivery before it on this link (history event {p_index}), and was delivered to no one",
            sent.priority
        ))
    }
}

impl<'h> Check<'h> for Priority {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        facts: &Facts<'h>,
        report: &mut CheckReport,
    ) {
        self.track(index, event, facts.params);
        if let Some(detail) = self.overtaken(index, facts) {
            report
                .violations
                .push(violation(Rule::PriorityOrder, index, event, detail));
        }
    }

    fn finish(self: Box<Self>, _facts: &Facts<'h>, report: &mut CheckReport) {
        report.stats.priority_judged = self.judged;
        report.stats.checked.insert(Rule::PriorityOrder);
    }
}
