//! A queue's ready messages, in delivery order, and for each consumer with
//! a filter the ones it selects: its filter is tested once per message as
//! the message becomes ready, so dispatch never passes over messages the
//! consumer does not select (a selector consumer behind a backlog of others
//! costs what a plain one costs).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::LazyFields;
use super::consumer::Consumer;
use super::{ConsumerId, Seq};

/// A ready message's place: its rank (0 first), then its seq.
pub(super) type Key = (u8, Seq);

#[derive(Debug, Default)]
pub(super) struct Ready {
    all: BTreeSet<Key>,
    /// For each acquiring consumer with a filter, the ready messages its
    /// filter passes.
    selected: BTreeMap<ConsumerId, BTreeSet<Key>>,
}

impl Ready {
    /// Makes a message ready; false if it was already.
    pub fn insert(
        &mut self,
        key: Key,
        body: &Bytes,
        consumers: &BTreeMap<ConsumerId, Consumer>,
    ) -> bool {
        let message = LazyFields::new(body);
        for (id, selected) in &mut self.selected {
            if consumers[id].takes(&message) {
                selected.insert(key);
            }
        }
        self.all.insert(key)
    }

    /// Takes a message out of the ready ones; false if it was not ready.
    pub fn remove(&mut self, key: &Key) -> bool {
        for selected in self.selected.values_mut() {
            selected.remove(key);
        }
        self.all.remove(key)
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.all.contains(key)
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// The ready messages consumer `id` may be sent, in delivery order:
    /// those its filter selects, if it has one.
    pub fn of(&self, id: ConsumerId) -> impl Iterator<Item = Key> + '_ {
        self.selected.get(&id).unwrap_or(&self.all).iter().copied()
    }

    /// An acquiring consumer with a filter attached: what it selects of the
    /// ready messages, whose bytes `body` gives.
    pub fn select(&mut self, id: ConsumerId, consumer: &Consumer, body: impl Fn(Seq) -> Bytes) {
        let selected = self
            .all
            .iter()
            .filter(|&&(_, seq)| consumer.takes(&LazyFields::new(&body(seq))))
            .copied()
            .collect();
        self.selected.insert(id, selected);
    }

    /// A consumer detached.
    pub fn forget(&mut self, id: ConsumerId) {
        self.selected.remove(&id);
    }

    /// Checks that every acquiring consumer with a filter, and no other,
    /// has a selection, and that each selection is of ready messages.
    pub fn check_invariants(&self, consumers: &BTreeMap<ConsumerId, Consumer>) {
        let filtered = consumers
            .iter()
            .filter(|(_, c)| c.filter.is_some() && c.unsettled().is_some())
            .map(|(id, _)| id);
        assert!(
            filtered.eq(self.selected.keys()),
            "selections are the filtered consumers'"
        );
        for (id, selected) in &self.selected {
            assert!(
                selected.is_subset(&self.all),
                "consumer {id} selects a message that is not ready"
            );
        }
    }
}
