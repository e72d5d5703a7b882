//! Rule 19.

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule};
use crate::history::{Event, Op};

use super::redelivered::firm_consumes;
use super::{Check, violation};

/// Rule 19, **a consume the broker settled holds**. Under rcv-settle-mode
/// `second` a consume is done when the broker settles it: a consumer sends
/// its outcome unsettled, and the broker's settle ([`Op::SettleConfirmed`])
/// says the outcome has taken effect and the delivery is forgotten (AMQP
/// 1.0 §2.6.12, §3.4). So the message is consumed exactly then: not when
/// the consumer chose the outcome ([`Op::Settled`]: until the broker's
/// settle arrives it may be lost with the connection, as in mode `first`),
/// and, once settled, for good. Nothing that excuses an unconfirmed consume
/// in rule 3 (a lost connection, a restart, a disk failing writes, a node
/// cut off) excuses a confirmed one: the broker vouched for it.
///
/// It flags a delivery of M from Q after as many confirmed consumes of M
/// from Q (`Facts::confirmed`) as the broker may hold copies of M, unless
/// the delivery says nothing of what the broker did since (a dead
/// incarnation's, or a stale one: counted in `second_excused`), and unless
/// rule 3 flags it already; and a receiver whose request for `second` the
/// broker's attach answered with `first` ([`Op::SettleModeRefused`]).
/// Rule 5 counts a confirmed consume as one that surely reached the broker.
#[derive(Default)]
pub(super) struct SettleSecond {
    confirmations: u64,
    excused: u64,
}

impl<'h> Check<'h> for SettleSecond {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        facts: &Facts<'h>,
        report: &mut CheckReport,
    ) {
        match &event.op {
            Op::SettleConfirmed { outcome, .. } if outcome.consumes() => {
                self.confirmations += 1;
            }
            Op::SettleModeRefused { .. } => report.violations.push(violation(
                Rule::SettleSecond,
                index,
                event,
                "the broker's attach must keep a receiver's rcv-settle-mode second",
            )),
            _ => {}
        }
        let Some(delivery) = &facts.delivery else {
            return;
        };
        let (queue, msg) = (delivery.queue, delivery.msg);
        let confirmed = facts.confirmed.get(&(queue, msg)).copied().unwrap_or(0);
        if confirmed == 0 || confirmed < delivery.copies {
            return;
        }
        if delivery.from_dead_incarnation || delivery.stale {
            self.excused += 1;
            return;
        }
        if firm_consumes(facts, delivery) >= delivery.copies {
            // Rule 3 (or 8) flags it.
            return;
        }
        let detail = format!(
            "the broker settled {confirmed} consume(s) of {msg} from {queue} under rcv-settle-mode second, and may hold {} copy(ies)",
            delivery.copies
        );
        report
            .violations
            .push(violation(Rule::SettleSecond, index, event, detail));
    }

    fn finish(self: Box<Self>, _facts: &Facts<'h>, report: &mut CheckReport) {
        report.stats.settles_confirmed = self.confirmations;
        report.stats.second_excused = self.excused;
        report.stats.checked.insert(Rule::SettleSecond);
    }
}
