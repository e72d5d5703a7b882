//! Rule 12.

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule};
use crate::history::{ClientId, Event, MsgId};

use super::{Check, violation};

/// Rule 12, **a selector selects**: nothing its filter does not select
/// reaches the selective consumer: a message with an odd sequence number,
/// to the JMS selector `parity = 'even'` or the application-properties
/// filter `{parity: even}`, whichever the seed drew
/// ([`crate::workload::SelectiveFilter`]).
pub(super) struct Unselected;

/// Whether the selective consumer's filter selects `msg` (its `parity`
/// property is `even` for an even sequence number).
fn selected(msg: MsgId) -> bool {
    msg.seq % 2 == 0
}

impl<'h> Check<'h> for Unselected {
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
        let client = delivery.conn.client;
        let selective = facts
            .params
            .selective_consumer()
            .is_some_and(|n| client == ClientId::Consumer(n));
        if selective && !selected(delivery.msg) {
            let detail = format!(
                "{} is odd, and {client} reads through {}",
                delivery.msg,
                facts.params.selective_filter.describe()
            );
            report
                .violations
                .push(violation(Rule::Unselected, index, event, detail));
        }
    }

    fn finish(self: Box<Self>, _facts: &Facts<'h>, report: &mut CheckReport) {
        report.stats.checked.insert(Rule::Unselected);
    }
}
