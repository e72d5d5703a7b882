//! A consumer attached to a queue: its credit, and what it holds.

use std::collections::BTreeSet;

use super::{LazyFields, MessageFilter, Seq};

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
}
