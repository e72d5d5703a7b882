//! Rule 1.

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule};
use crate::history::Event;

use super::{Check, violation};

/// Rule 1, **no phantom messages**: every message delivered from Q was
/// sent before, to Q (or to the topic behind it, or to the queue that
/// dead-letters into Q). A browse is held to this rule only. A phantom
/// delivery is this rule's alone: the other rules never see it.
pub(super) struct NeverSent;

impl<'h> Check<'h> for NeverSent {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        facts: &Facts<'h>,
        report: &mut CheckReport,
    ) {
        if let Some(why) = &facts.phantom {
            report
                .violations
                .push(violation(Rule::NeverSent, index, event, why));
        }
    }

    fn finish(self: Box<Self>, _facts: &Facts<'h>, report: &mut CheckReport) {
        report.stats.checked.insert(Rule::NeverSent);
    }
}
