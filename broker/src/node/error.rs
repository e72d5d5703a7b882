//! Why a node stops or cannot start.

use crate::amqp::codec::DecodeError;
use crate::log::LogError;

/// Why the node stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The log could not be opened, recovered or written. A failed write or
    /// fsync is fatal: the state of the disk is unknown.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The single node's log was written in another format.
    #[error(
        "the data directory {data_dir} holds a log in format {found:?}, and this version of \
         Sluice reads only {expected:?}: drain it with the version that wrote it, or move \
         the data directory away"
    )]
    Format {
        /// The data directory.
        data_dir: std::path::PathBuf,
        /// The format its log is in.
        found: String,
        /// The format this version reads.
        expected: String,
    },
    /// The data directory could not be read or written.
    #[error("the data directory: {0}")]
    DataDir(#[source] std::io::Error),
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
    /// A group's page store could not be cleaned at start: what its
    /// snapshot names of it is unknown, so the node stops.
    #[error("the page store of group {group}: {error}")]
    Pages {
        /// The group.
        group: u32,
        /// Why.
        error: crate::queue::PageError,
    },
    /// The node could not count its starts (see `node::origin`).
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
