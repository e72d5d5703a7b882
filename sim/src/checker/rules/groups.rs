//! Rule 21.
//!
//! The grouped queue hands a group's messages to the consumer that holds
//! messages of the group, and to another only once it holds none. What
//! the history proves a link *holds* at a moment: a message delivered on
//! it that it has not settled yet. Its `Op::Settled` is recorded before
//! the disposition goes out, so the broker may hand the group on as soon
//! as that is recorded; before, the broker cannot have read it. A link
//! also lets go of what it holds when it ends: a consumer closes its
//! connection, or detaches its link to attach again, right after the last
//! event it recorded on that link, so from then on (not from the
//! `Op::Closed` or `Op::Relinked`, recorded once the broker answered) its
//! holds are not firm. Whether a link recorded anything after a delivery
//! is known only later: a delivery that would break the rule is kept
//! pending until the holding connection's next event, which confirms it
//! (the link was still there) or excuses it (the link was ending).
//!
//! A link that is lost lets go of what it held when the broker notices,
//! which the client never learns; so does one whose broker restarted, and,
//! in a cluster, one whose node was cut off from the others (a leader
//! detaches its consumers). Holds on such links are never firm, and a
//! delivery to a connection later lost, a dead incarnation's or a stale
//! one (rule 3) may have been sent before the group moved: neither is
//! judged.

use std::collections::BTreeMap;

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule, Violation};
use crate::history::{ConnId, Event, MsgId, Op};
use crate::queue_types::GROUPED_QUEUE;

use super::{Check, violation};

/// A message a link holds: delivered on it, not settled by it yet.
#[derive(Debug, Clone, Copy)]
struct Hold {
    group: u8,
    /// The history index of its delivery.
    index: usize,
}

/// Rule 21, **a group is held by one consumer at a time**: a delivery of
/// a message of group G from the grouped queue is a violation while
/// another consumer link firmly holds a message of G (what holds firmly,
/// and what is not judged: the module docs). Per-group order is rule 4's
/// (`rules::fifo`).
#[derive(Debug, Default)]
pub(super) struct GroupHeld {
    /// What each connection's current link holds.
    holds: BTreeMap<ConnId, BTreeMap<MsgId, Hold>>,
    /// Violations awaiting the holding connection's next event.
    pending: BTreeMap<ConnId, Vec<Violation>>,
    /// Deliveries judged, for the summary.
    judged: u64,
}

impl GroupHeld {
    /// Books what `event` does to the links' holds, and settles the
    /// violations pending on its connection.
    fn track(&mut self, event: &Event, report: &mut CheckReport) {
        let Some(conn) = conn_of(&event.op) else {
            return;
        };
        if let Some(pending) = self.pending.remove(&conn) {
            // The link still recorded something after the delivery it
            // held a group's message over: it was not ending.
            if !matches!(event.op, Op::Closed { .. } | Op::Relinked { .. }) {
                report.violations.extend(pending);
            }
        }
        match &event.op {
            Op::Settled { msg, queue, .. } if queue == GROUPED_QUEUE => {
                if let Some(holds) = self.holds.get_mut(&conn) {
                    holds.remove(msg);
                }
            }
            Op::Closed { .. } | Op::Relinked { .. } | Op::ConnectionLost { .. } => {
                self.holds.remove(&conn);
            }
            _ => {}
        }
    }

    /// Judges the delivery observed now (`facts.delivery`, at history
    /// index `index`) against the other links' firm holds, then books it.
    fn judge(&mut self, index: usize, event: &Event, facts: &Facts<'_>) {
        let Some(delivery) = facts.delivery.as_ref() else {
            return;
        };
        if delivery.queue != GROUPED_QUEUE {
            return;
        }
        let Some(group) = facts.timeline.kind(delivery.msg).group else {
            return;
        };
        let timeline = &facts.timeline;
        let later_lost = |conn: &ConnId| timeline.lost_conns.contains_key(conn);
        let doubtful = delivery.stale || delivery.from_dead_incarnation;
        if doubtful || later_lost(&delivery.conn) {
            return;
        }
        self.judged += 1;
        for (holder, holds) in &self.holds {
            if *holder == delivery.conn || later_lost(holder) {
                continue;
            }
            let Some((msg, hold)) = holds.iter().find(|(_, hold)| hold.group == group) else {
                continue;
            };
            let node = timeline.node_of(*holder);
            let opened = timeline
                .connected_at
                .get(holder)
                .copied()
                .unwrap_or_default();
            let held_since = facts.events[hold.index].time;
            if facts.starts.between(node, opened, delivery.time)
                || timeline.cut_off_between(*holder, held_since, delivery.time)
            {
                continue;
            }
            let detail = format!(
                "{} is of group {group}, yet {holder} held {msg} of the group (delivered at history event {}) and had not settled it",
                delivery.msg, hold.index
            );
            self.pending.entry(*holder).or_default().push(violation(
                Rule::GroupHeld,
                index,
                event,
                detail,
            ));
        }
        self.holds
            .entry(delivery.conn)
            .or_default()
            .insert(delivery.msg, Hold { group, index });
    }
}

/// The connection an event is on, if it is a consumer's event.
fn conn_of(op: &Op) -> Option<ConnId> {
    match op {
        Op::Delivered { conn, .. }
        | Op::Settled { conn, .. }
        | Op::SettleConfirmed { conn, .. }
        | Op::Closed { conn }
        | Op::Relinked { conn }
        | Op::ConnectionLost { conn, .. } => Some(*conn),
        _ => None,
    }
}

impl<'h> Check<'h> for GroupHeld {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        facts: &Facts<'h>,
        report: &mut CheckReport,
    ) {
        self.track(event, report);
        self.judge(index, event, facts);
    }

    fn finish(self: Box<Self>, _facts: &Facts<'h>, report: &mut CheckReport) {
        // Pending violations left: their holder recorded nothing more, so
        // its link may have been ending.
        report.stats.groups_judged = self.judged;
        report.stats.checked.insert(Rule::GroupHeld);
    }
}
