//! A limit on the bytes of unfinished incoming messages, shared by every
//! connection that holds a clone of it.
//!
//! A message sent in several transfers is reassembled in memory until its
//! last transfer arrives. Each link may hold up to `max_message_size`, so
//! without a shared limit many links that start large messages and never
//! finish them hold that much each. Counting them against one pool bounds
//! the sum whatever the number of links.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The pool that unfinished incoming messages take their bytes from.
#[derive(Debug, Clone)]
pub struct UnfinishedBytes {
    shared: Arc<Pool>,
}

#[derive(Debug)]
struct Pool {
    limit_bytes: u64,
    held_bytes: AtomicU64,
}

impl UnfinishedBytes {
    /// A pool of `limit_bytes`, none held.
    pub fn new(limit_bytes: u64) -> Self {
        Self {
            shared: Arc::new(Pool {
                limit_bytes,
                held_bytes: AtomicU64::new(0),
            }),
        }
    }

    /// The pool's size.
    pub fn limit_bytes(&self) -> u64 {
        self.shared.limit_bytes
    }

    /// The bytes unfinished messages hold now.
    pub fn held_bytes(&self) -> u64 {
        self.shared.held_bytes.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the pool, unless that would pass its limit.
    fn take(&self, bytes: u64) -> bool {
        let held = &self.shared.held_bytes;
        held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
            now.checked_add(bytes)
                .filter(|&after| after <= self.shared.limit_bytes)
        })
        .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.shared.held_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// What one unfinished message holds of a pool; given back when dropped,
/// however the message ends (completed, aborted, its link or connection
/// gone).
#[derive(Debug, Default)]
pub(super) struct Reservation {
    pool: Option<UnfinishedBytes>,
    bytes: u64,
}

impl Reservation {
    /// Grows the reservation to `bytes` from `pool`; false, holding what it
    /// held, if the pool has not that much room.
    pub fn grow_to(&mut self, pool: &UnfinishedBytes, bytes: u64) -> bool {
        let more = bytes.saturating_sub(self.bytes);
        if !pool.take(more) {
            return false;
        }
        self.pool.get_or_insert_with(|| pool.clone());
        self.bytes += more;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give_back(self.bytes);
        }
    }
}
