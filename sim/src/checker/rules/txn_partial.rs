//! Rule 15.

use std::collections::BTreeSet;

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule};
use crate::history::{Event, MsgId, Op};
use crate::transactions::Fate;

use super::{Check, violation};

/// Rule 15, **all or nothing**: a transaction whose commit was sent and
/// never answered (the connection was lost) applied whole or not at all:
/// if any of its messages was delivered from a queue (or its dead-letter
/// queue) in the liveness phase or before, every one is consumed from it
/// by the end of that phase, but for a message that may vanish (as in
/// rule 2). A commit applied so late that its first message arrives only
/// as the clients close proves nothing: the drain did not wait for the
/// others (3 nodes, seed 0x253). Checked once the run had its liveness
/// phase.
#[derive(Default)]
pub(super) struct TxnPartial<'h> {
    /// (queue, message) delivered before the liveness phase ended.
    delivered: BTreeSet<(&'h str, MsgId)>,
    liveness_ended: bool,
}

impl<'h> TxnPartial<'h> {
    /// Whether `msg` was delivered in time from `queue` or its dead-letter
    /// queue, and whether it was consumed from either.
    fn seen(&self, facts: &Facts<'_>, queue: &str, msg: MsgId) -> (bool, bool) {
        let queues = [Some(queue), facts.params.dead_letter_queue_of(queue)];
        let (mut delivered, mut consumed) = (false, false);
        for q in queues.into_iter().flatten() {
            delivered |= self.delivered.contains(&(q, msg));
            consumed |= facts.consumed(q, msg);
        }
        (delivered, consumed)
    }
}

impl<'h> Check<'h> for TxnPartial<'h> {
    fn observe(
        &mut self,
        _index: usize,
        event: &'h Event,
        _facts: &Facts<'h>,
        _report: &mut CheckReport,
    ) {
        match &event.op {
            Op::Delivered { queue, msg, .. } if !self.liveness_ended => {
                self.delivered.insert((queue, *msg));
            }
            Op::LivenessEnded => self.liveness_ended = true,
            _ => {}
        }
    }

    fn finish(self: Box<Self>, facts: &Facts<'h>, report: &mut CheckReport) {
        if !facts.ended() {
            return;
        }
        report.stats.checked.insert(Rule::TxnPartial);
        let unknown = facts
            .timeline
            .txns
            .iter()
            .filter(|(_, t)| t.fate == Fate::Unknown);
        for (id, txn) in unknown {
            let Some((index, time)) = txn.discharged_at else {
                continue;
            };
            let members: Vec<MsgId> = txn.applied_members().collect();
            let Some(producer) = members.first().map(|msg| msg.producer) else {
                continue;
            };
            for queue in facts.destinations.get(&producer).into_iter().flatten() {
                let seen: Vec<(MsgId, bool, bool)> = members
                    .iter()
                    .map(|msg| {
                        let (delivered, consumed) = self.seen(facts, queue, *msg);
                        (*msg, delivered, consumed)
                    })
                    .collect();
                let Some(applied) = seen.iter().find(|(_, delivered, _)| *delivered) else {
                    continue;
                };
                let missing = seen.iter().filter(|(msg, _, consumed)| {
                    !consumed
                        && !facts.timeline.may_vanish(*msg, time)
                        && !facts
                            .params
                            .may_drop(queue, facts.timeline.kind(*msg).durable)
                });
                for (msg, _, _) in missing {
                    let detail = format!(
                        "{id}'s commit went unanswered; {} was delivered from {queue}, yet {msg} was never consumed from it",
                        applied.0
                    );
                    report.violations.push(violation(
                        Rule::TxnPartial,
                        index,
                        &facts.events[index],
                        detail,
                    ));
                }
            }
        }
    }
}
