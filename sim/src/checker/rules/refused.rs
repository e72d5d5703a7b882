//! Rule 24.

use std::collections::BTreeMap;

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule};
use crate::history::{Event, MsgId, Op, Outcome};

use super::{Check, violation};

/// Rule 24, **a refused message is never delivered**: a message every
/// send of which the broker answered `rejected` (a queue that refuses
/// publishes when full, a full disk, a queue that pages and refuses
/// non-durable messages) is not delivered from any queue. A send whose
/// outcome was lost with its connection may have been taken, so one such
/// send excuses the message. A message of a transaction is rule 14's.
#[derive(Default)]
pub(super) struct Refused {
    /// The `rejected` answers to each message's sends, outside
    /// transactions.
    rejections: BTreeMap<MsgId, u64>,
    /// Each message's first delivery: its history index.
    first_delivered: BTreeMap<MsgId, usize>,
}

impl<'h> Check<'h> for Refused {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        facts: &Facts<'h>,
        _report: &mut CheckReport,
    ) {
        if let Op::ProducerOutcome {
            msg,
            outcome: Outcome::Rejected,
            ..
        } = &event.op
            && facts.timeline.kind(*msg).txn.is_none()
        {
            *self.rejections.entry(*msg).or_default() += 1;
        }
        if let Some(delivery) = &facts.delivery {
            self.first_delivered.entry(delivery.msg).or_insert(index);
        }
    }

    fn finish(self: Box<Self>, facts: &Facts<'h>, report: &mut CheckReport) {
        report.stats.checked.insert(Rule::Refused);
        for (msg, rejections) in self.rejections {
            let sends = facts.timeline.send_counts.get(&msg).copied().unwrap_or(0);
            let Some(&index) = self.first_delivered.get(&msg) else {
                continue;
            };
            if rejections >= sends {
                let detail = format!("every send of {msg} ({sends}) was rejected");
                let event = &facts.events[index];
                report
                    .violations
                    .push(violation(Rule::Refused, index, event, detail));
            }
        }
    }
}
