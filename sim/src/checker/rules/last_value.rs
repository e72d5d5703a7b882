//! Rules 16 and 17.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, EXPIRY_SLACK, Rule, Violation};
use crate::history::{Event, Op};
use crate::queue_types::LAST_VALUE_QUEUE;

use super::{Check, violation};

/// How long after its successor was accepted a superseded message may
/// still arrive: as [`EXPIRY_SLACK`], the successor's enqueue and the
/// consumer's delivery cross different links, and the broker may have
/// sent the superseded one just before it enqueued the successor.
pub const SUPERSEDED_SLACK: Duration = EXPIRY_SLACK;

/// Rules 16 and 17, the last-value queue (its model, what is sure of the
/// order its messages were enqueued in, is in [`crate::checker`]'s
/// `last_value`). They judge the same messages by the same model, so
/// they share one struct.
///
/// Rule 16, **no superseded value delivered**: a message M of a key, sent
/// once and accepted, is gone from the queue once a message of its key
/// first sent after M was accepted is accepted itself; a delivery of M
/// more than [`SUPERSEDED_SLACK`] after that is a violation, unless
/// something may have made it late (what excuses rule 9: a dead
/// incarnation's or a stale delivery, a fault on its link, late commits, a
/// clock off, its node cut off).
///
/// Rule 17, **the newest value is not lost**: for each key with an
/// accepted message, some message of the key is consumed after the first
/// send of every accepted one. Checked once the run had its liveness
/// phase.
#[derive(Default)]
pub(super) struct LastValue {
    /// Per key, the history index of the latest consume of one of its
    /// messages from the queue.
    consumed: BTreeMap<u8, usize>,
    /// Deliveries judged by rule 16, for the summary.
    judged: u64,
    /// Deliveries after a successor's acceptance that faults excused.
    late_excused: u64,
}

impl<'h> Check<'h> for LastValue {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        facts: &Facts<'h>,
        report: &mut CheckReport,
    ) {
        let values = &facts.last_values;
        if let Op::Settled {
            queue,
            msg,
            outcome,
            ..
        } = &event.op
            && queue == LAST_VALUE_QUEUE
            && outcome.consumes()
            && let Some(sent) = values.sent.get(msg)
        {
            self.consumed.insert(sent.key, index);
        }
        let Some(delivery) = &facts.delivery else {
            return;
        };
        let msg = delivery.msg;
        if delivery.queue != LAST_VALUE_QUEUE {
            return;
        }
        let Some(sent) = values.sent.get(&msg) else {
            return;
        };
        let sent_before = sent.sends.iter().filter(|(i, _)| *i < index).count();
        let Some((accepted, _)) = sent.accepted else {
            return;
        };
        if sent_before != 1 {
            return;
        }
        self.judged += 1;
        // The earliest acceptance of a successor surely enqueued after it.
        let successor = values
            .sent
            .iter()
            .filter(|(other, o)| **other != msg && o.key == sent.key && o.first_send() > accepted)
            .filter_map(|(other, o)| o.accepted.map(|(i, t)| (t, i, *other)))
            .filter(|&(t1, i, _)| i < index && t1 + SUPERSEDED_SLACK < delivery.time)
            .min();
        let Some((t1, successor_index, successor)) = successor else {
            return;
        };
        let first_sent = facts.first_sent.get(&msg).copied().unwrap_or_default();
        if delivery.from_dead_incarnation
            || delivery.stale
            || facts.may_be_late(delivery, first_sent, t1)
        {
            self.late_excused += 1;
            return;
        }
        let detail = format!(
            "{msg} (key {}) was replaced by {successor}, sent after {msg} was accepted and itself accepted at {:.3}s (history event {successor_index})",
            sent.key,
            t1.as_secs_f64()
        );
        report
            .violations
            .push(violation(Rule::LastValueSuperseded, index, event, detail));
    }

    fn finish(self: Box<Self>, facts: &Facts<'h>, report: &mut CheckReport) {
        report.stats.last_value_judged = self.judged;
        report.stats.last_value_late_excused = self.late_excused;
        report.stats.checked.insert(Rule::LastValueSuperseded);
        if !facts.ended() {
            return;
        }
        report.stats.checked.insert(Rule::LastValueLost);
        let values = &facts.last_values;
        // Per key, its accepted message first sent last.
        let mut newest = BTreeMap::new();
        for (msg, sent) in &values.sent {
            if sent.accepted.is_some() {
                let first_send = sent.first_send();
                let entry = newest.entry(sent.key).or_insert((first_send, *msg));
                if first_send > entry.0 {
                    *entry = (first_send, *msg);
                }
            }
        }
        for (key, (first_send, msg)) in newest {
            if self.consumed.get(&key).is_some_and(|c| *c > first_send) {
                continue;
            }
            let Some((index, time)) = values.sent.get(&msg).and_then(|s| s.accepted) else {
                continue;
            };
            report.violations.push(Violation {
                rule: Rule::LastValueLost,
                index,
                time,
                detail: format!(
                    "{}: key {key}: no message of the key was consumed from {LAST_VALUE_QUEUE} after {msg}, an accepted one, was first sent (history event {first_send})",
                    facts.events[index]
                ),
            });
        }
    }
}
