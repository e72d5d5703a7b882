//! Rule 5.

use std::time::Duration;

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule};
use crate::history::{ConnId, Event, Op, QueueState};

use super::{Check, violation};

/// Rule 5, **the broker's own state agrees**: once every client has gone,
/// the broker (in a cluster, the first node, once the replicas converged)
/// reports each queue: it must have every queue of the workload, with no
/// consumer and nothing unsettled, and a depth no less than the accepted
/// messages never consumed from it (but for those that may vanish, as in
/// rule 2, and, on a dead-lettering queue, those delivered from it: they
/// may have been dead-lettered; what a dead-letter queue holds is rule
/// 10's), and no more than the copies the history leaves it possibly
/// holding: every send of a message not consumed from it on a connection
/// that closed cleanly (the broker answered the close, so it had read the
/// settle) since its broker's last start (and, in a cluster, whose node
/// was not cut off since), leaving out the messages of transactions that
/// cannot have committed. Checked once the broker reported its state (its
/// last report counts).
#[derive(Default)]
pub(super) struct FinalState<'h> {
    /// The broker's last report of its queues, with its history index.
    reported: Option<(usize, &'h [QueueState])>,
}

impl<'h> Check<'h> for FinalState<'h> {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        _facts: &Facts<'h>,
        _report: &mut CheckReport,
    ) {
        if let Op::BrokerState { queues } = &event.op {
            self.reported = Some((index, queues));
        }
    }

    fn finish(self: Box<Self>, facts: &Facts<'h>, report: &mut CheckReport) {
        let Some((index, queues)) = self.reported else {
            return;
        };
        report.stats.checked.insert(Rule::FinalState);
        let event = &facts.events[index];
        for detail in disagreements(facts, queues) {
            report
                .violations
                .push(violation(Rule::FinalState, index, event, detail));
        }
    }
}

/// How the broker's report of its queues disagrees with the history, one
/// line per disagreement.
fn disagreements(facts: &Facts<'_>, reported: &[QueueState]) -> Vec<String> {
    let mut disagreements = Vec::new();
    for queue in facts.params.all_queues() {
        let Some(state) = reported.iter().find(|q| q.name == queue) else {
            disagreements.push(format!("the broker has no queue {queue}"));
            continue;
        };
        if state.unsettled != 0 || state.consumers != 0 {
            disagreements.push(format!(
                "{state}: every client has gone, yet it has consumers or unsettled deliveries"
            ));
        }
        let (least, most) = depth_bounds(facts, &queue);
        if !(least..=most).contains(&state.depth) {
            disagreements.push(format!(
                "{state}: the history says its depth is between {least} and {most}"
            ));
        }
    }
    disagreements
}

/// Whether the consume at `time` on `conn` surely reached the broker and
/// stuck: `conn` was opened since its broker's last start and closed
/// cleanly (and, in a cluster, its node was not cut off since).
fn surely_consumed(facts: &Facts<'_>, time: Duration, conn: ConnId) -> bool {
    let timeline = &facts.timeline;
    let last_start = facts.starts.last(timeline.node_of(conn));
    time >= last_start
        && timeline.closed_conns.contains(&conn)
        && timeline
            .connected_at
            .get(&conn)
            .is_some_and(|opened| *opened >= last_start)
        && !timeline.cut_off_between(conn, time, Duration::MAX)
}

/// The depth `queue` must have at least (accepted messages never consumed
/// from it) and may have at most (every send of a message not surely
/// consumed from it since the broker's last start).
fn depth_bounds(facts: &Facts<'_>, queue: &str) -> (u64, u64) {
    let params = facts.params;
    let mut least = 0;
    let mut most = 0;
    let dead_letters = params.dead_letter_queue_of(queue);
    for (msg, sends) in &facts.timeline.send_counts {
        let goes_here = facts.destinations.get(&msg.producer).is_some_and(|queues| {
            queues
                .iter()
                .any(|destination| facts.reaches(destination, queue))
        });
        if !goes_here {
            continue;
        }
        let consumes = facts.consumes.get(&(queue, *msg));
        // What a dead-letter queue must hold is left to rule 10; a message
        // that left its queue unconsumed may have been dead-lettered.
        let stays = !params.is_dead_letter_queue(queue)
            && dead_letters
                .is_none_or(|dlq| !facts.consumed(dlq, *msg) && !facts.was_delivered(queue, *msg));
        let must_hold = !params.may_drop(queue, facts.timeline.kind(*msg).durable)
            && !facts.last_values.may_vanish(*msg)
            && facts
                .accepted
                .get(msg)
                .is_some_and(|(_, at)| !facts.timeline.may_vanish(*msg, *at));
        if must_hold && stays && consumes.is_none() {
            least += 1;
        }
        // A consume the broker settled under rcv-settle-mode second took
        // effect, wherever its connection went next (rule 19).
        let surely_consumed = facts.confirmed.contains_key(&(queue, *msg))
            || consumes.is_some_and(|list| {
                list.iter()
                    .any(|(time, conn)| surely_consumed(facts, *time, *conn))
            });
        // A transaction that did not commit left nothing.
        if !surely_consumed && facts.timeline.txns.may_hold(*msg) {
            most += sends;
        }
    }
    (least, most)
}
