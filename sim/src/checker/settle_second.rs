//! Rule 16: under rcv-settle-mode `second` a consume is done when the
//! broker settles it. A consumer sends its outcome unsettled, and the
//! broker's settle says the outcome has taken effect and the delivery is
//! forgotten (AMQP 1.0 §2.6.12, §3.4), so the message is consumed exactly
//! then: not when the consumer chose the outcome (that one may still be
//! lost with the connection, as in mode `first`), and, once confirmed,
//! for good. Nothing that excuses an unconfirmed consume in rule 3 (a lost
//! connection, a restart, a disk failing writes, a node cut off) excuses a
//! confirmed one: the broker vouched for it.
//!
//! The rule flags
//! - a delivery of M from Q after as many confirmed consumes of M from Q
//!   as the broker may hold copies of M, unless the delivery says nothing
//!   of what the broker did since (a dead incarnation's, or a stale one in
//!   a cluster: rule 3's excuses about the delivery itself, counted in
//!   `second_excused`), and unless rule 3 flags it already;
//! - a receiver whose request for `second` the broker answered with
//!   `first` (the conformance page says it keeps `second`).
//!
//! Rule 5 counts a confirmed consume as one that surely reached the broker
//! ([`SettleSecond::confirmed`]).

use std::collections::BTreeMap;

use super::{Rule, Violation};
use crate::history::{Event, MsgId, Op};

/// Rule 16's state, fed every event in history order.
#[derive(Debug, Default)]
pub(super) struct SettleSecond {
    /// Per (queue, message), the consumes the broker confirmed so far.
    confirmed: BTreeMap<(String, MsgId), u64>,
    /// Consumes the broker confirmed, in all.
    pub(super) confirmations: u64,
    /// Deliveries after a confirmed consume that the rule let pass as a
    /// dead incarnation's or stale.
    pub(super) excused: u64,
    violations: Vec<Violation>,
}

/// What rule 3 found out about a delivery, which rule 16 reuses.
pub(super) struct DeliveryFacts {
    /// Copies of the message the broker may hold in its queue.
    pub copies: u64,
    /// The delivery was sent by a dead incarnation, or is stale.
    pub says_nothing_new: bool,
    /// Rule 3 (or 8) flagged it already.
    pub flagged: bool,
}

impl SettleSecond {
    /// Takes in `event`, the history's event `index`.
    pub(super) fn observe(&mut self, index: usize, event: &Event) {
        match &event.op {
            Op::SettleConfirmed {
                queue,
                msg,
                outcome,
                ..
            } if outcome.consumes() => {
                *self.confirmed.entry((queue.clone(), *msg)).or_default() += 1;
                self.confirmations += 1;
            }
            Op::SettleModeRefused { .. } => self.violations.push(Violation {
                rule: Rule::SettleSecond,
                index,
                time: event.time,
                detail: format!(
                    "{event}: the broker's attach must keep a receiver's rcv-settle-mode second"
                ),
            }),
            _ => {}
        }
    }

    /// Takes in a delivery of `msg` from `queue` (the history's event
    /// `index`), which rule 3 judged as `facts` say.
    pub(super) fn delivered(
        &mut self,
        index: usize,
        event: &Event,
        (queue, msg): (&str, MsgId),
        facts: &DeliveryFacts,
    ) {
        let confirmed = self
            .confirmed
            .get(&(queue.to_owned(), msg))
            .copied()
            .unwrap_or(0);
        if confirmed == 0 || confirmed < facts.copies || facts.flagged {
            return;
        }
        if facts.says_nothing_new {
            self.excused += 1;
            return;
        }
        self.violations.push(Violation {
            rule: Rule::SettleSecond,
            index,
            time: event.time,
            detail: format!(
                "{event}: the broker settled {confirmed} consume(s) of {msg} from {queue} under rcv-settle-mode second, and may hold {} copy(ies)",
                facts.copies
            ),
        });
    }

    /// Whether a consume of `msg` from `queue` was confirmed.
    pub(super) fn confirmed(&self, queue: &str, msg: MsgId) -> bool {
        self.confirmed.contains_key(&(queue.to_owned(), msg))
    }

    /// The violations found.
    pub(super) fn finish(&mut self) -> Vec<Violation> {
        std::mem::take(&mut self.violations)
    }
}
