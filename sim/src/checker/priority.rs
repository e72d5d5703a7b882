//! Rule 18: the priority queue delivers higher priorities first (see
//! docs/simulation.md).
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

use crate::history::{ClientId, ConnId, Event, MsgId, Op, Outcome};
use crate::queue_types::PRIORITY_QUEUE;
use crate::workload::WorkloadParams;

/// How long the broker may keep a lost connection's link: its idle
/// timeout (2 s) and, in a cluster, a leader's detach of a node cut off
/// ([`super::CUT_OFF_SLACK`]), with room to spare.
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

/// A delivery, as rule 18 judges it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// Its history index.
    pub index: usize,
    /// Its time.
    pub time: Duration,
    /// The connection it came on.
    pub conn: ConnId,
    /// The queue it came from.
    pub queue: &'a str,
    /// The message.
    pub msg: MsgId,
}

/// Rule 18, fed the history event by event.
#[derive(Debug, Default)]
pub struct Priority {
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
    /// Deliveries checked against the rule, for the summary.
    pub deliveries_checked: u64,
}

impl Priority {
    /// The rule for `params`'s workload.
    pub fn new(params: &WorkloadParams) -> Self {
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
    pub fn observe(&mut self, index: usize, event: &Event, params: &WorkloadParams) {
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

    /// Rule 18: why `delivery` overtook a message of higher priority, if
    /// it did. `late_commit_since(t)` says whether some broker's commits
    /// may have been late since `t`; `excused(index)` whether something
    /// other than the broker may have made this delivery late since the
    /// history event `index` (as rule 16 asks).
    pub fn observe_delivery(
        &mut self,
        delivery: Delivery<'_>,
        late_commit_since: impl Fn(Duration) -> bool,
        excused: impl Fn(usize) -> bool,
    ) -> Option<String> {
        let Delivery {
            index,
            time: t2,
            conn,
            queue,
            msg,
        } = delivery;
        if queue != PRIORITY_QUEUE {
            return None;
        }
        let first = self.delivered.insert(msg);
        let Some((current, previous)) = &mut self.link else {
            return None;
        };
        if *current != conn {
            return None;
        }
        let before = previous.replace((index, t2));
        let (p_index, p_time) = before?;
        let links_gone = self.ended.iter().all(|&(end, graceful)| {
            end + STALE_LINK_MAX <= p_time
                || (graceful && end + DETACH_SLACK <= p_time && !late_commit_since(end))
        });
        let priority = self.sent.get(&msg)?.priority;
        if !links_gone {
            return None;
        }
        self.deliveries_checked += 1;
        let overtaken = self
            .sent
            .iter()
            .filter(|(other, sent)| {
                sent.priority > priority
                    && sent.accepted.is_some_and(|accepted| accepted < p_index)
                    && !self.delivered.contains(other)
            })
            .map(|(other, sent)| (*other, *sent))
            .min_by_key(|(_, sent)| sent.accepted);
        let (other, sent) = overtaken?;
        let accepted = sent.accepted?;
        if excused(accepted) {
            return None;
        }
        let again = if first { "" } else { " (again)" };
        Some(format!(
            "{msg}{again} has priority {priority}, yet {other} of priority {} was accepted (history event {accepted}) before the delivery before it on this link (history event {p_index}), and was delivered to no one",
            sent.priority
        ))
    }
}
