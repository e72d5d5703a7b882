//! A consumer attached to a queue: its credit, and what it holds.

use std::collections::{BTreeMap, BTreeSet};

use super::{ConsumerId, LazyFields, MessageFilter, Seq};

/// One consumer of one queue. Volatile: never snapshotted or replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Consumer {
    /// Deliveries it may still receive.
    pub credit: u32,
    /// How it reads the queue.
    pub mode: Mode,
    /// The messages it takes, if not all.
    pub filter: Option<Box<MessageFilter>>,
}

/// How a consumer reads its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mode {
    /// Takes messages (distribution mode `move`), one consumer each.
    Acquiring {
        /// The messages it holds, delivered and not settled.
        unsettled: BTreeSet<Seq>,
        /// Messages it must not receive again (`undeliverable-here`).
        undeliverable: BTreeSet<Seq>,
    },
    /// Sees every message once without taking it (distribution mode `copy`).
    Browsing {
        /// The last seq it was sent; it is sent only greater ones.
        cursor: Option<Seq>,
    },
}

impl Consumer {
    /// A consumer with no credit.
    pub fn new(browse: bool, filter: Option<Box<MessageFilter>>) -> Self {
        let mode = if browse {
            Mode::Browsing { cursor: None }
        } else {
            Mode::Acquiring {
                unsettled: BTreeSet::new(),
                undeliverable: BTreeSet::new(),
            }
        };
        Self {
            credit: 0,
            mode,
            filter,
        }
    }

    /// Whether its filter, if it has one, passes the message `body`.
    pub fn takes(&self, message: &LazyFields) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|filter| filter.takes(message))
    }

    /// Uses one unit of credit for a delivery.
    pub fn spend_credit(&mut self) {
        assert!(self.credit > 0, "delivered without credit");
        self.credit -= 1;
    }

    /// The messages it holds (none for a browser).
    pub fn unsettled(&self) -> Option<&BTreeSet<Seq>> {
        match &self.mode {
            Mode::Acquiring { unsettled, .. } => Some(unsettled),
            Mode::Browsing { .. } => None,
        }
    }

    /// True if it may be sent `seq` as an acquiring consumer.
    pub fn accepts(&self, seq: Seq) -> bool {
        match &self.mode {
            Mode::Acquiring { undeliverable, .. } => !undeliverable.contains(&seq),
            Mode::Browsing { .. } => false,
        }
    }

    /// Records that it holds `seq`.
    pub fn hold(&mut self, seq: Seq) {
        let Mode::Acquiring { unsettled, .. } = &mut self.mode else {
            panic!("a browser acquired message {seq}");
        };
        assert!(unsettled.insert(seq), "message {seq} held twice");
    }

    /// Records that it no longer holds `seq`.
    pub fn unhold(&mut self, seq: Seq) {
        let Mode::Acquiring { unsettled, .. } = &mut self.mode else {
            panic!("a browser held message {seq}");
        };
        assert!(unsettled.remove(&seq), "message {seq} was not held");
    }

    /// Never sends it `seq` again.
    pub fn refuse(&mut self, seq: Seq) {
        if let Mode::Acquiring { undeliverable, .. } = &mut self.mode {
            undeliverable.insert(seq);
        }
    }

    /// Forgets `seq`, which left the queue, so marks do not pile up.
    pub fn forget(&mut self, seq: Seq) {
        if let Mode::Acquiring { undeliverable, .. } = &mut self.mode {
            undeliverable.remove(&seq);
        }
    }

    /// Whether it refuses some message (`undeliverable-here`).
    pub fn refuses_any(&self) -> bool {
        matches!(&self.mode, Mode::Acquiring { undeliverable, .. } if !undeliverable.is_empty())
    }

    /// Whether it browses.
    pub fn browses(&self) -> bool {
        matches!(self.mode, Mode::Browsing { .. })
    }
}

/// A queue's consumers in attach order (a single active consumer's turn),
/// where a consumer leaves in O(log n): a queue with tens of thousands of
/// consumers detaches them all without a quadratic cost.
#[derive(Debug, Default)]
pub(super) struct AttachOrder {
    /// Consumers by turn, the earliest attached first.
    by_turn: BTreeMap<u64, ConsumerId>,
    /// Each consumer's turn.
    turns: BTreeMap<ConsumerId, u64>,
    next_turn: u64,
}

impl AttachOrder {
    /// `id` attached last.
    pub fn push(&mut self, id: ConsumerId) {
        self.by_turn.insert(self.next_turn, id);
        self.turns.insert(id, self.next_turn);
        self.next_turn += 1;
    }

    /// `id` detached.
    pub fn remove(&mut self, id: ConsumerId) {
        if let Some(turn) = self.turns.remove(&id) {
            self.by_turn.remove(&turn);
        }
    }

    /// The consumers, the earliest attached first.
    pub fn iter(&self) -> impl Iterator<Item = ConsumerId> + '_ {
        self.by_turn.values().copied()
    }
}
