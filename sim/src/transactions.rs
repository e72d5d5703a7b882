//! Transactions in the history: each one's members and fate, read event by
//! event, for the checker's rules 13–15 and the drain.
//!
//! A transactional producer declares a transaction, sends a few new
//! messages in it (never resent), then discharges it, recording the
//! discharge before it goes out and the coordinator's answer when it
//! arrives. A message's own outcome inside a transaction is provisional:
//! only the transaction's fate says whether the broker may hold it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::history::{Event, MsgId, Op, Outcome, TxnId};

/// What became of a transaction, as far as its producer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Declared and never discharged: the broker rolls it back when its
    /// connection ends.
    Open,
    /// A rollback was sent: whatever the answer, nothing of it applies.
    RolledBack,
    /// A commit was sent and no answer came: the connection was lost. All
    /// of it applied, or none.
    Unknown,
    /// The commit was answered `accepted`: all of it applied.
    Committed {
        /// The answer's history index.
        index: usize,
        /// Its time.
        time: Duration,
    },
    /// The commit was answered otherwise: rolled back.
    Refused,
}

/// One transaction.
#[derive(Debug, Clone)]
pub struct Txn {
    /// Its messages, in the order they were sent.
    pub members: Vec<MsgId>,
    /// Members the broker refused provisionally (a `rejected` outcome):
    /// not part of what a commit applies.
    pub refused: BTreeSet<MsgId>,
    /// Its fate.
    pub fate: Fate,
    /// When its discharge was sent (history index, time), if it was.
    pub discharged_at: Option<(usize, Duration)>,
}

impl Txn {
    /// The members a commit applies: those the broker took provisionally.
    pub fn applied_members(&self) -> impl Iterator<Item = MsgId> + '_ {
        self.members
            .iter()
            .copied()
            .filter(|msg| !self.refused.contains(msg))
    }

    /// Whether the commit may have applied: it was sent, and not refused.
    pub fn may_commit(&self) -> bool {
        matches!(self.fate, Fate::Unknown | Fate::Committed { .. })
    }
}

/// Every transaction of a history so far.
#[derive(Debug, Clone, Default)]
pub struct Transactions {
    txns: BTreeMap<TxnId, Txn>,
    member_of: BTreeMap<MsgId, TxnId>,
}

impl Transactions {
    /// Every transaction of `events`.
    pub fn gather(events: &[Event]) -> Self {
        let mut book = Self::default();
        for (index, event) in events.iter().enumerate() {
            book.observe(index, event);
        }
        book
    }

    /// Takes in the history's event `index`.
    pub fn observe(&mut self, index: usize, event: &Event) {
        match &event.op {
            Op::TxnDeclared { txn, .. } => {
                self.txns.insert(
                    *txn,
                    Txn {
                        members: Vec::new(),
                        refused: BTreeSet::new(),
                        fate: Fate::Open,
                        discharged_at: None,
                    },
                );
            }
            Op::Send { msg, kind, .. } => {
                let Some(txn) = TxnId::of(*msg, *kind) else {
                    return;
                };
                if let Some(t) = self.txns.get_mut(&txn) {
                    t.members.push(*msg);
                    self.member_of.insert(*msg, txn);
                }
            }
            Op::ProducerOutcome {
                msg,
                outcome: Outcome::Rejected,
                ..
            } => {
                if let Some(t) = self.member_of.get(msg).and_then(|id| self.txns.get_mut(id)) {
                    t.refused.insert(*msg);
                }
            }
            Op::Discharge { txn, commit, .. } => {
                if let Some(t) = self.txns.get_mut(txn) {
                    t.fate = if *commit {
                        Fate::Unknown
                    } else {
                        Fate::RolledBack
                    };
                    t.discharged_at = Some((index, event.time));
                }
            }
            Op::Discharged { txn, outcome, .. } => {
                if let Some(t) = self.txns.get_mut(txn)
                    && t.fate == Fate::Unknown
                {
                    t.fate = match outcome {
                        Outcome::Accepted => Fate::Committed {
                            index,
                            time: event.time,
                        },
                        _ => Fate::Refused,
                    };
                }
            }
            _ => {}
        }
    }

    /// The transaction `msg` was sent in, if any.
    pub fn of(&self, msg: MsgId) -> Option<(TxnId, &Txn)> {
        let id = *self.member_of.get(&msg)?;
        Some((id, self.txns.get(&id)?))
    }

    /// Whether the broker may ever hold `msg`: it was sent in no
    /// transaction, or in one whose commit may have applied it.
    pub fn may_hold(&self, msg: MsgId) -> bool {
        self.of(msg)
            .is_none_or(|(_, txn)| txn.may_commit() && !txn.refused.contains(&msg))
    }

    /// The transaction `txn`.
    pub fn get(&self, txn: TxnId) -> Option<&Txn> {
        self.txns.get(&txn)
    }

    /// Every transaction, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (TxnId, &Txn)> {
        self.txns.iter().map(|(id, txn)| (*id, txn))
    }
}
