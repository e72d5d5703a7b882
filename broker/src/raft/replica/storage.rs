//! What raft-rs reads a replica's log from: raft-rs's `MemStorage` for
//! entries and hard state, plus the group's latest snapshot with its data,
//! which `MemStorage` does not keep (it hands out snapshots without data).
//! A leader sends this snapshot to a follower that needs entries compacted
//! away.

use raft::eraftpb::{Entry, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// A replica's log cache and latest snapshot.
#[derive(Default)]
pub struct ReplicaStorage {
    /// Entries after the compaction point, the hard state and the
    /// configuration.
    pub memory: MemStorage,
    /// The latest snapshot (index 0 while there is none).
    pub snapshot: Snapshot,
}

impl Storage for ReplicaStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.memory.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.memory.entries(low, high, max_size, context)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        match self.memory.term(index) {
            // The snapshot's own index is compacted, but its term is known.
            Err(_) if index != 0 && index == self.snapshot.get_metadata().index => {
                Ok(self.snapshot.get_metadata().term)
            }
            other => other,
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.memory.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.memory.last_index()
    }

    /// The latest snapshot, if it is recent enough for what the follower
    /// asked for; raft-rs asks again later otherwise.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let index = self.snapshot.get_metadata().index;
        if index == 0 || index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}
