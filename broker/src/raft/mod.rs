//! Replication: the Raft pieces a cluster of brokers is built from (the
//! broker's side, the clustered node, is `node::cluster`).
//!
//! - [`replica`]: one Raft group member, a sans-IO wrapper around raft-rs's
//!   `RawNode` driven by the ready cycle, with election timeouts drawn from
//!   the seed instead of `thread_rng`, so that the simulator replays it.
//! - [`group`]: the groups this node hosts, as one task: a replica per
//!   group, one write-ahead log for all (submitted without waiting, released
//!   on completion, one fsync for every group), and the transport.
//! - [`transport`]: authenticated, length-delimited frames between nodes.
//! - [`wal`]: the Raft records of a node's write-ahead log (every group's
//!   entries, hard state and snapshots, in the broker's shared log), and
//!   recovery.
//! - [`votes`]: each group's term and vote, kept apart from the log, which
//!   repair after damage may cut back.
//! - [`raft_log`]: raft-rs logs through slog; this forwards it to `tracing`.

pub mod group;
pub mod raft_log;
pub mod replica;
pub mod transport;
pub mod votes;
pub mod wal;
