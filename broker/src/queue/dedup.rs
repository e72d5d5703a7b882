//! Producer de-duplication: the `message-id`s a queue took lately. A
//! producer that loses its connection (or, in a cluster, its leader) resends
//! what it had no outcome for; when the first copy did arrive, the queue
//! recognises the id and takes the message again without enqueuing it
//! twice.
//!
//! The window is part of the queue's state: commands change it in log
//! order, with the command's own time, so a restart (or another replica)
//! replaying the same commands rebuilds the same window, and snapshots carry
//! it.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

/// The ids a queue remembers, each until its expiry, at most a configured
/// number of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Dedup {
    /// When each remembered id is forgotten.
    expiries: BTreeMap<Bytes, u64>,
    /// Every id as it was remembered, with that expiry, oldest first. An id
    /// remembered again after it was forgotten appears twice; only the entry
    /// matching `expiries` counts.
    order: VecDeque<(u64, Bytes)>,
}

impl Dedup {
    /// Whether `id` was taken less than the window ago, as of `now_ms`.
    pub fn contains(&mut self, now_ms: u64, id: &Bytes) -> bool {
        self.forget_expired(now_ms);
        self.expiries.contains_key(id)
    }

    /// Remembers `id` until `now_ms + window_ms`, forgetting the oldest ids
    /// beyond `ids_max`.
    pub fn remember(&mut self, now_ms: u64, id: Bytes, window_ms: u64, ids_max: u64) {
        let expiry = now_ms.saturating_add(window_ms);
        self.expiries.insert(id.clone(), expiry);
        self.order.push_back((expiry, id));
        while self.expiries.len() as u64 > ids_max {
            self.forget_oldest();
        }
    }

    /// A window holding `entries` (oldest first), as [`Dedup::entries`]
    /// gave them; `None` if an id repeats, which no window holds. Expiries
    /// need not increase: a wall clock set back between two commands makes
    /// a later id expire earlier, and that id is then only forgotten late.
    pub fn restored(entries: impl IntoIterator<Item = (Bytes, u64)>) -> Option<Self> {
        let mut dedup = Self::default();
        for (id, expiry) in entries {
            if dedup.expiries.insert(id.clone(), expiry).is_some() {
                return None;
            }
            dedup.order.push_back((expiry, id));
        }
        Some(dedup)
    }

    /// The remembered ids with their expiries, oldest first: what a
    /// snapshot keeps.
    pub fn entries(&self) -> impl Iterator<Item = (&Bytes, u64)> {
        self.order
            .iter()
            .filter(|(expiry, id)| self.expiries.get(id) == Some(expiry))
            .map(|(expiry, id)| (id, *expiry))
    }

    fn forget_expired(&mut self, now_ms: u64) {
        while self
            .order
            .front()
            .is_some_and(|(expiry, _)| *expiry <= now_ms)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((expiry, id)) = self.order.pop_front()
            && self.expiries.get(&id) == Some(&expiry)
        {
            self.expiries.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn an_id_is_remembered_for_the_window() {
        let mut dedup = Dedup::default();
        dedup.remember(1_000, id("a"), 500, 10);
        assert!(dedup.contains(1_499, &id("a")));
        assert!(!dedup.contains(1_499, &id("b")));
        assert!(!dedup.contains(1_500, &id("a")));
        assert_eq!(dedup.entries().count(), 0);
    }

    #[test]
    fn the_oldest_ids_go_first_beyond_the_limit() {
        let mut dedup = Dedup::default();
        for (at, name) in [(0, "a"), (1, "b"), (2, "c")] {
            dedup.remember(at, id(name), 1_000, 2);
        }
        assert!(!dedup.contains(3, &id("a")));
        assert!(dedup.contains(3, &id("b")));
        assert!(dedup.contains(3, &id("c")));
    }

    #[test]
    fn an_id_taken_again_after_expiry_counts_from_then() {
        let mut dedup = Dedup::default();
        dedup.remember(0, id("a"), 10, 10);
        assert!(!dedup.contains(10, &id("a")));
        dedup.remember(10, id("a"), 10, 10);
        dedup.remember(15, id("b"), 10, 10);
        // The first "a" is long gone; the second lasts until 20.
        assert!(dedup.contains(19, &id("a")));
        let entries: Vec<(&Bytes, u64)> = dedup.entries().collect();
        assert_eq!(entries, [(&id("a"), 20), (&id("b"), 25)]);
        assert!(!dedup.contains(20, &id("a")));
        assert!(dedup.contains(20, &id("b")));
    }
}
