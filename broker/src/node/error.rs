//! Why a node stops or cannot start.

use crate::amqp::codec::DecodeError;
use crate::log::{LogError, Lsn};

/// Why the node stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The log could not be opened, recovered or written. A failed write or
    /// fsync is fatal: the state of the disk is unknown.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A log record or snapshot does not decode.
    #[error("log record {lsn} does not decode: {error}")]
    Record {
        /// The record (or the snapshot's last record).
        lsn: Lsn,
        /// Why.
        error: DecodeError,
    },
    /// A replicated group's snapshot does not decode: this node's state
    /// for the group is unknown, so it stops rather than diverge.
    #[error("the snapshot of group {group} at index {index} does not decode: {error}")]
    Snapshot {
        /// The group.
        group: u32,
        /// The snapshot's index.
        index: u64,
        /// Why.
        error: DecodeError,
    },
    /// A clustered node could not count its starts (see
    /// `node::cluster`).
    #[error("cannot record this start of the node in the data directory")]
    Incarnation(#[source] std::io::Error),
    /// The Raft groups could not start, or failed (a failed write to their
    /// log stops them, as a failed fsync stops the single node).
    #[error(transparent)]
    Groups(#[from] crate::raft::group::GroupError),
    /// The Raft groups' task panicked.
    #[error("the raft groups' task panicked")]
    GroupsPanicked,
}
