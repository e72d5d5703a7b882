//! Rule 22.

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule};
use crate::history::Event;
use crate::volatile::VolatileLinks;
use crate::workload::WorkloadParams;

use super::{Check, violation};

/// Rule 22, **a volatile subscription gets what was published while its
/// link lived, and nothing from before it**: each link of a volatile
/// subscriber is a subscription of its own (see [`crate::volatile`] for
/// what the history proves of one).
///
/// - A topic message the broker accepted whose accepted copy was first
///   sent after the link's attach was answered, while the link was alive,
///   must be delivered on it, if the link lived to the end of the run (its
///   client's last act was a close the broker answered, after the drain).
///   A link that ended otherwise (relinked, lost, closed by churn) may have
///   died before the delivery: what it was owed is excused (counted in
///   `volatile_excused`), as is a message that may vanish as rule 2 has it
///   (a TTL; transient, with a broker start after its acceptance).
/// - No message is delivered on a link whose every send was answered
///   before the link's attach was sent: it was enqueued or refused before
///   the subscription existed.
///
/// Checked once the run had its liveness phase (the first part; the second
/// is checked as the deliveries come).
pub(super) struct Volatile {
    links: VolatileLinks,
}

impl Volatile {
    pub(super) fn new(params: &WorkloadParams) -> Self {
        Self {
            links: VolatileLinks::new(params),
        }
    }
}

impl<'h> Check<'h> for Volatile {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        facts: &Facts<'h>,
        report: &mut CheckReport,
    ) {
        if let Some(delivery) = &facts.delivery
            && let Some(link) = self.links.link_of(delivery.queue)
            && self
                .links
                .answered_before(delivery.msg, link.requested_after)
        {
            let detail = format!(
                "every send of {} was answered before {}'s volatile subscription {} was asked for \
                 (after history event {}): it cannot hold the message",
                delivery.msg, link.conn, link.queue, link.requested_after
            );
            report
                .violations
                .push(violation(Rule::Volatile, index, event, detail));
        }
        self.links.observe(index, event);
    }

    fn finish(self: Box<Self>, facts: &Facts<'h>, report: &mut CheckReport) {
        if !facts.ended() {
            return;
        }
        report.stats.checked.insert(Rule::Volatile);
        for link in self.links.links() {
            let judged = self.links.lived_to_the_end(link);
            for (msg, (index, time)) in &link.owed {
                if !judged || facts.timeline.may_vanish(*msg, *time) {
                    report.stats.volatile_excused += 1;
                    continue;
                }
                let detail = format!(
                    "{msg} was accepted after {}'s volatile subscription {} was attached \
                     (history event {}), which lived to the end of the run, and never reached it",
                    link.conn, link.queue, link.attached
                );
                let event = &facts.events[*index];
                report
                    .violations
                    .push(violation(Rule::Volatile, *index, event, detail));
            }
            if judged {
                report.stats.volatile_delivered += link.got.len() as u64;
            }
        }
    }
}
