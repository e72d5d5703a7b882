//! Rule 9.

use std::time::Duration;

use crate::checker::facts::{Delivery, Facts, overlaps};
use crate::checker::{CheckReport, Rule};
use crate::history::Event;

use super::{Check, violation};

/// How late after its expiry a message may still arrive at a consumer
/// (rule 9). The broker checks expiry against the clock of the command
/// that dispatches it, which was read when the command was proposed, before
/// it was logged (fsync, up to 50 ms here) and, in a cluster, replicated;
/// then the delivery crosses the network (up to 50 ms in `slow-net`).
/// Faults that delay any of that excuse a delivery outright.
pub const EXPIRY_SLACK: Duration = Duration::from_millis(500);

/// Rule 9, **no delivery of an expired message**: a message with a TTL
/// that the broker holds one copy of (sent once, or de-duplicated), whose
/// producer saw it accepted at t, has expired by t + TTL at the latest
/// (the broker took it before it answered). A delivery of it from its own
/// queue after t + TTL + [`EXPIRY_SLACK`] is a violation, unless something
/// else may have made it late since its expiry: a fault on the consumer's
/// link, a disk that delays commits, in a cluster a fault that may cost a
/// group its leader (until [`CUT_OFF_SLACK`] after it) or the node's cut
/// from the others; or a group clock off the true time since the message
/// was first sent; or it is a dead incarnation's or a stale delivery (rule
/// 3). A dead-lettered message takes the dead-letter queue's expiry (none
/// here), so deliveries from it are left out.
///
/// [`CUT_OFF_SLACK`]: crate::checker::CUT_OFF_SLACK
pub(super) struct Expired;

/// Whether something other than the broker may have made `delivery` of a
/// message first sent at `sent` late, after its expiry at `expiry`: its
/// link, its node's cut from the others, or a disk that delays commits,
/// since the expiry; or a clock off the true time since it was sent.
fn may_be_late(
    facts: &Facts<'_>,
    delivery: &Delivery<'_>,
    sent: Duration,
    expiry: Duration,
) -> bool {
    let timeline = &facts.timeline;
    let t2 = delivery.time;
    timeline
        .late_links
        .get(&delivery.conn.client)
        .is_some_and(|windows| overlaps(windows, expiry, t2))
        || overlaps(&timeline.late_commits, expiry, t2)
        || timeline.clock_off_between(sent, t2)
        || timeline.cut_off_between(delivery.conn, expiry, t2)
}

impl<'h> Check<'h> for Expired {
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
        let msg = delivery.msg;
        let expiry = facts.timeline.kind(msg).ttl.and_then(|ttl| {
            let (_, accepted_at) = facts.accepted.get(&msg)?;
            // Only a copy the accept dates: there is one.
            (delivery.copies == 1 && !facts.params.is_dead_letter_queue(delivery.queue))
                .then_some(*accepted_at + ttl)
        });
        let Some(expiry) = expiry else {
            return;
        };
        let sent = facts.first_sent.get(&msg).copied().unwrap_or_default();
        if delivery.time > expiry + EXPIRY_SLACK
            && !delivery.from_dead_incarnation
            && !delivery.stale
            && !may_be_late(facts, delivery, sent, expiry)
        {
            let detail = format!(
                "{msg} expired by {:.3}s at the latest (accepted, plus its TTL)",
                expiry.as_secs_f64()
            );
            report
                .violations
                .push(violation(Rule::Expired, index, event, detail));
        }
    }

    fn finish(self: Box<Self>, _facts: &Facts<'h>, report: &mut CheckReport) {
        report.stats.checked.insert(Rule::Expired);
    }
}
