//! Rule 14.

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule};
use crate::history::{Event, MsgId};
use crate::transactions::{Fate, Transactions};

use super::{Check, violation};

/// Rule 14, **nothing of a transaction that did not commit is
/// delivered**: a message of a transaction rolled back, refused at commit
/// (`rejected`, e.g. on a full disk) or never discharged (its connection
/// ended first, which rolls it back), or one the broker refused
/// provisionally, is never delivered; nor is any message of a transaction
/// before its commit was sent.
pub(super) struct TxnAbortedDelivered;

/// Why the delivery of `msg` at history index `index` shows part of a
/// transaction that did not commit (yet), if it does.
fn never_committed(txns: &Transactions, msg: MsgId, index: usize) -> Option<String> {
    let (id, txn) = txns.of(msg)?;
    let why = if txn.refused.contains(&msg) {
        "the broker refused it in the transaction"
    } else {
        match txn.fate {
            Fate::Open => "the transaction was never discharged",
            Fate::RolledBack => "the transaction was rolled back",
            Fate::Refused => "the transaction's commit was refused",
            Fate::Unknown | Fate::Committed { .. } => {
                let before = txn.discharged_at.is_none_or(|(at, _)| index < at);
                if !before {
                    return None;
                }
                "its commit was not sent yet"
            }
        }
    };
    Some(format!("{msg} of {id}: {why}"))
}

impl<'h> Check<'h> for TxnAbortedDelivered {
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
        if let Some(detail) = never_committed(&facts.timeline.txns, delivery.msg, index) {
            report
                .violations
                .push(violation(Rule::TxnAbortedDelivered, index, event, detail));
        }
    }

    fn finish(self: Box<Self>, _facts: &Facts<'h>, report: &mut CheckReport) {
        report.stats.checked.insert(Rule::TxnAbortedDelivered);
    }
}
