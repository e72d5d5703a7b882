//! Rule 23.

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule};
use crate::history::{Answer, Event, Op};

use super::{Check, violation};

/// Rule 23, **an intruder is never served**: the intruder
/// ([`crate::intruder`]) never gets a receiving or sending link on a queue
/// its user may not consume from or send to, never has a message it
/// relayed to one accepted, and a wrong password never gets a connection
/// opened (a SASL outcome `ok`, which the client's engine then catches as
/// the server's SCRAM signature not verifying, or a session). Faults
/// excuse nothing: an attempt may fail or go unanswered, never be served.
/// A delivery of its relayed message to a consumer would also break rule
/// 1: its body is no producer's.
pub(super) struct Intruder;

impl<'h> Check<'h> for Intruder {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        _facts: &Facts<'h>,
        report: &mut CheckReport,
    ) {
        let Op::Intrusion { answer, .. } = &event.op else {
            return;
        };
        match answer {
            Answer::Refused(_) => report.stats.intrusions_refused += 1,
            Answer::Failed(_) => report.stats.intrusions_failed += 1,
            Answer::Served(what) => {
                let detail = format!("{what}: an intruder is never served");
                report
                    .violations
                    .push(violation(Rule::Intruder, index, event, detail));
            }
        }
    }

    fn finish(self: Box<Self>, _facts: &Facts<'h>, report: &mut CheckReport) {
        report.stats.checked.insert(Rule::Intruder);
    }
}
