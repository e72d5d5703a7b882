//! Rule 7.

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule};
use crate::history::{Event, Op};

use super::{Check, violation};

/// Rule 7, **no node panics**: a panic (an assertion of the broker, or of
/// raft-rs, failed) is a bug, whatever it did to messages. Under turmoil a
/// panic in any task stops the whole simulation: the run is then cut
/// short, and the rules about its end (2, 5, 6, 10, 13 and 15) are not
/// checked ([`Facts::ended`]).
pub(super) struct Panicked;

impl<'h> Check<'h> for Panicked {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        _facts: &Facts<'h>,
        report: &mut CheckReport,
    ) {
        if let Op::Aborted { .. } = event.op {
            report.violations.push(violation(
                Rule::NodePanicked,
                index,
                event,
                "the run stopped",
            ));
        }
    }

    fn finish(self: Box<Self>, _facts: &Facts<'h>, report: &mut CheckReport) {
        report.stats.checked.insert(Rule::NodePanicked);
    }
}
