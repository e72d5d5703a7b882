//! Rules 3 and 8.

use std::time::Duration;

use crate::checker::facts::{Delivery, Facts, overlaps};
use crate::checker::{CheckReport, Rule};
use crate::history::{ConnId, Event};

use super::{Check, violation};

/// Rules 3 and 8 decide together which one a delivery of a message
/// consumed too often breaks: the same count of firm consumes is a
/// violation of rule 8 if the message is de-duplicated and was sent more
/// than once, else of rule 3.
///
/// Rule 3, **no redelivery of a consumed message**: a delivery of M from Q
/// is a violation if, before it, consumers made as many *firm* consumes of
/// M from Q as the broker may hold copies of M (one per send: each send
/// may legally create one copy). A consume (settle `accepted`/`rejected`
/// at time t on connection C) is firm for a later delivery at t2 unless C
/// was later lost (the disposition may never have reached the broker — a
/// graceful close does not count as lost), or C's broker restarted in (t,
/// t2] (the settle may not have been durable yet), or a broker disk was
/// failing writes (disk full, fsync EIO) at some point in [t, t2] (the
/// broker drops a settle it cannot log: a redelivery, never a loss), or
/// C's client was partitioned from its broker (or its link lossy) at t:
/// the link loses whole writes of a TCP stream there without breaking the
/// connection, so the settle may never have arrived; or C was opened
/// before its broker's latest restart before t (a settle on a connection
/// to a dead incarnation reaches nobody); or, in a cluster, C's node was
/// cut off from other nodes at some point in [t − [`CUT_OFF_SLACK`], t2]
/// (the groups' leaders then detach its consumers, and what they held goes
/// to others: the settle arrives stale and is dropped, a failover
/// duplicate). A delivery from a dead incarnation, or a stale one (see
/// [`crate::checker::facts::Delivery`]), is no violation either.
/// Everything else that delivers a message again is a counted, allowed
/// duplicate.
///
/// Rule 8, **no duplicate of a de-duplicated message**: a durable message
/// with a `message-id` makes one copy in a queue however often it is resent
/// within the broker's window, so a delivery after one firm consume of it
/// is a violation, even though it was sent more than once.
///
/// [`CUT_OFF_SLACK`]: crate::checker::CUT_OFF_SLACK
pub(super) struct Redelivered;

/// Whether a consume at `t` on `conn` is firm for a delivery at `t2`.
fn firm(facts: &Facts<'_>, t: Duration, conn: ConnId, t2: Duration) -> bool {
    let timeline = &facts.timeline;
    let node = timeline.node_of(conn);
    let conn_lost = timeline
        .lost_conns
        .get(&conn)
        .is_some_and(|lost| *lost >= t);
    let restarted = facts.starts.between(node, t, t2);
    // A connection to a broker incarnation that has since been restarted
    // reaches nobody: bytes still in flight from the old one can be
    // delivered and settled, but the settle goes nowhere, even if the
    // client then sees a clean close.
    let stale = timeline
        .connected_at
        .get(&conn)
        .is_some_and(|opened| facts.starts.between(node, *opened, t));
    let unlogged = overlaps(&timeline.disk_full, t, t2);
    let dropped = timeline
        .lossy_uplinks
        .get(&conn.client)
        .is_some_and(|windows| overlaps(windows, t, t));
    let cut_off = timeline.cut_off_between(conn, t, t2);
    !conn_lost && !restarted && !stale && !unlogged && !dropped && !cut_off
}

/// The consumes of `delivery`'s message from its queue before it that are
/// firm for it.
pub(super) fn firm_consumes(facts: &Facts<'_>, delivery: &Delivery<'_>) -> u64 {
    facts
        .consumes
        .get(&(delivery.queue, delivery.msg))
        .map_or(0, |list| {
            list.iter()
                .filter(|(t, conn)| firm(facts, *t, *conn, delivery.time))
                .count() as u64
        })
}

impl<'h> Check<'h> for Redelivered {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        facts: &Facts<'h>,
        report: &mut CheckReport,
    ) {
        let Some(delivery) = &facts.delivery else {
            return;
        };
        if delivery.from_dead_incarnation || delivery.stale {
            return;
        }
        let (msg, sends) = (delivery.msg, delivery.sends);
        let firm = firm_consumes(facts, delivery);
        if firm < delivery.copies {
            return;
        }
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
        report
            .violations
            .push(violation(rule, index, event, detail));
    }

    fn finish(self: Box<Self>, _facts: &Facts<'h>, report: &mut CheckReport) {
        report
            .stats
            .checked
            .extend([Rule::ConsumedRedelivered, Rule::DuplicateId]);
    }
}
