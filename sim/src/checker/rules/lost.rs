//! Rules 2, 10 and 13.

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule};

use super::{Check, violation};

/// Rules 2, 10 and 13 decide together which one an accepted message never
/// consumed breaks: rule 10 if it left a dead-lettering queue, else rule
/// 13 if a transaction's commit accepted it, else rule 2. The summary's
/// final depths count these messages, and `vanished_excused` those that
/// may vanish. Checked once the run had its liveness phase.
///
/// Rule 2, **no loss**: every message whose `accepted` a producer received
/// is consumed from each of its queues (a consumer settled it `accepted`
/// or `rejected`), or from the queue's dead-letter queue, by the end of the
/// liveness phase. A `released` or `modified` delivery does not count. A
/// message may *vanish* (see [`crate::checker::may_vanish`]) if it had a
/// TTL, or was transient and some broker (re)started after it was
/// accepted, or its queue drops its oldest messages when full, or it was
/// transient in a length-limited queue (a persistent message displaces
/// it: `WorkloadParams::may_drop`); and a message of the last-value
/// queue may have been replaced by a later one of its key (counted in
/// `superseded_excused`).
///
/// Rule 10, **dead-lettered messages reach the dead-letter queue**: an
/// accepted message of a dead-lettering queue that was delivered from it
/// but consumed neither there nor from its dead-letter queue left by
/// dead-lettering (a rejection, or too many failed deliveries), and was
/// lost on the way.
///
/// Rule 13, **a committed transaction is whole**: every message of a
/// transaction whose commit was answered `accepted` is consumed, as rule 2
/// asks of an accepted message (it counts as accepted at the answer).
pub(super) struct Lost;

impl<'h> Check<'h> for Lost {
    fn finish(self: Box<Self>, facts: &Facts<'h>, report: &mut CheckReport) {
        let params = facts.params;
        let stats = &mut report.stats;
        if facts.ended() {
            stats
                .checked
                .extend([Rule::Lost, Rule::DeadLetterLost, Rule::TxnLost]);
            for (msg, (index, time)) in &facts.accepted {
                for queue in facts.destinations.get(&msg.producer).into_iter().flatten() {
                    let dead_letters = params.dead_letter_queue_of(queue);
                    let consumed = |q: &str| facts.consumed(q, *msg);
                    if consumed(queue) || dead_letters.is_some_and(consumed) {
                        continue;
                    }
                    if facts.timeline.may_vanish(*msg, *time)
                        || params.may_drop(queue, facts.timeline.kind(*msg).durable)
                    {
                        stats.vanished_excused += 1;
                        continue;
                    }
                    if facts.last_values.may_vanish(*msg) {
                        stats.superseded_excused += 1;
                        continue;
                    }
                    *stats.final_depths.entry(queue.clone()).or_default() += 1;
                    // Delivered from a dead-lettering queue yet never
                    // consumed there, it left by dead-lettering.
                    let (rule, detail) = match dead_letters {
                        Some(dlq) if facts.was_delivered(queue, *msg) => (
                            Rule::DeadLetterLost,
                            format!(
                                "{msg} left {queue} unconsumed, yet was never consumed from {dlq}"
                            ),
                        ),
                        _ if facts.timeline.kind(*msg).txn.is_some() => (
                            Rule::TxnLost,
                            format!(
                                "{msg}, of a committed transaction, was never consumed from {queue}"
                            ),
                        ),
                        _ => (Rule::Lost, format!("{msg} was never consumed from {queue}")),
                    };
                    let event = &facts.events[*index];
                    report
                        .violations
                        .push(violation(rule, *index, event, detail));
                }
            }
        }
        for queue in params.all_queues() {
            report.stats.final_depths.entry(queue).or_default();
        }
    }
}
