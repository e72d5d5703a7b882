//! The clustered node: what the node task is when cluster peers are
//! configured. Clients see the same broker; underneath, every queue lives
//! in one of K Raft data groups that every node is a member of.
//!
//! - **Placement** is a pure function of the queue's name (and of its
//!   dead-letter queue, which must live in the same group): every node
//!   computes the same group for a queue without asking anyone.
//! - **Proposals.** What the single-node broker logs and applies, this node
//!   proposes to the queue's group instead: declarations, enqueues, consumer
//!   attaches, credit, settles and detaches, as numbered items of this
//!   node's session with the group (see [`state`] and [`proposer`]).
//! - **Application.** Every node applies the committed entries of every
//!   group in log order, to that group's [`GroupState`], and so computes the
//!   same effects; each acts on those that concern its own links: it sends a
//!   delivery assigned to one of its consumers, and answers a publish it
//!   proposed (`accepted` once the enqueue is committed, on a majority's
//!   disks, and applied here).
//! - **Failures.** Items that are not applied are proposed again, in order,
//!   when the group's leader changes or after [`RETRY_AFTER`]; the group
//!   skips duplicates. A producer gets no credit for a queue whose group has
//!   no leader it knows of, so a partitioned minority stops taking messages.
//!   The leader of a group detaches the consumers of a node it has not heard
//!   from for a while, and a node detaches the consumers it registered
//!   before it restarted: their messages return to the queue.

mod batch;
mod core;
mod driver;
mod proposer;
mod state;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use self::driver::start;

use crate::config::Config;
use crate::io::Io;
use crate::node::TOPIC_PREFIX;
use crate::node::address::topic_of_subscription;
use crate::raft::replica::{NodeId, Timing};
use batch::Origin;

/// The Raft write-ahead log's directory inside the data directory.
const RAFT_DIR: &str = "raft";

/// Each Raft group's term and vote, kept apart from the Raft log
/// (`raft::votes`).
const VOTES_FILE: &str = "votes";

/// The file that counts this node's starts (see [`Origin`]).
const INCARNATION_FILE: &str = "incarnation";

/// How long a Raft tick is. With [`TIMING`], a leader heartbeats every
/// 100 ms and a follower campaigns after 0.5–1 s without one.
const TICK: Duration = Duration::from_millis(50);

/// Election and heartbeat lengths in [`TICK`]s; a peer silent for 3 s is
/// unreachable, and its consumers are detached.
const TIMING: Timing = Timing {
    election_ticks: 10,
    heartbeat_ticks: 2,
    peer_timeout_ticks: 60,
};

/// How often the node looks for lost proposals, due expiries and consumers
/// to detach.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(100);

/// Items not applied this long after they were last proposed are proposed
/// again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// A gap in this node's applied items (a later item applied before an
/// earlier one, which was lost) has them proposed again at once, but not
/// sooner than this after the last time.
const GAP_RETRY_AFTER: Duration = Duration::from_millis(200);

/// A group's state is snapshotted, and its log compacted, after
/// `storage.snapshot_every_records` entries or this many bytes of entries,
/// whichever comes first.
const SNAPSHOT_EVERY_BYTES: usize = 64 << 20;

/// Entries kept before a snapshot's index when the log is compacted (at
/// most `storage.snapshot_every_records`), so that a follower a little
/// behind catches up from entries rather than from the whole state.
const COMPACTION_KEEP: u64 = 1024;

/// This node's incarnation: its id and its start count. Counting starts
/// needs one small durable write.
async fn next_origin<I: Io>(io: &I, data_dir: &Path, node_id: NodeId) -> std::io::Result<Origin> {
    io.create_dir_all(data_dir).await?;
    let path = data_dir.join(INCARNATION_FILE);
    let previous = match io.read_file(&path).await {
        Ok(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not 8 bytes", path.display()),
                )
            })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => return Err(error),
    };
    let count = previous.wrapping_add(1);
    crate::io::replace_file(io, &path, &count.to_be_bytes()).await?;
    Ok(Origin::new(node_id, count))
}

/// Where queues live: `groups` data groups, numbered from 1.
#[derive(Debug, Clone)]
struct Placement {
    groups: u32,
    config: Arc<Config>,
    /// Whether any queue dead-letters: if none does, a queue's group
    /// depends on its name alone, which is all most brokers need to look at
    /// on every command.
    dead_letters: bool,
}

impl Placement {
    fn new(groups: u32, config: &Config) -> Self {
        let dead_letters = !config.queues.dead_letter_queue.is_empty()
            || config.queue_overrides.iter().any(|entry| {
                entry
                    .dead_letter_queue
                    .as_ref()
                    .is_some_and(|q| !q.is_empty())
            });
        Self {
            groups,
            config: Arc::new(config.clone()),
            dead_letters,
        }
    }

    /// The group of `queue`: for a topic's address and its subscriptions,
    /// the topic's (a publish to the topic is fanned out inside it); for
    /// another queue, that of the last queue of its dead-letter chain, so
    /// that a message is dead-lettered inside its group.
    fn group_of(&self, queue: &str) -> u32 {
        if queue.starts_with(TOPIC_PREFIX) {
            return match topic_of_subscription(queue) {
                Some(topic) => self.group_of_name(&format!("{TOPIC_PREFIX}{topic}")),
                None => self.group_of_name(queue),
            };
        }
        if !self.dead_letters {
            return self.group_of_name(queue);
        }
        let mut key = queue.to_owned();
        for _ in 0..DEAD_LETTER_CHAIN_MAX {
            match self.config.queue_settings(&key).dead_letter_queue {
                Some(next) if next != key && next != queue => key = next,
                _ => break,
            }
        }
        self.group_of_name(&key)
    }

    /// A group from a name's hash. CRC is linear, so names that differ in a
    /// few characters (`queue-1`, `queue-2`) share bit patterns: murmur3's
    /// finaliser mixes them before the modulo spreads them.
    fn group_of_name(&self, name: &str) -> u32 {
        let mut hash = crc32c::crc32c(name.as_bytes());
        hash ^= hash >> 16;
        hash = hash.wrapping_mul(0x85eb_ca6b);
        hash ^= hash >> 13;
        hash = hash.wrapping_mul(0xc2b2_ae35);
        hash ^= hash >> 16;
        1 + hash % self.groups
    }
}

/// How far [`Placement::group_of`] follows a dead-letter chain (which may
/// loop).
const DEAD_LETTER_CHAIN_MAX: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueOverride;

    fn dead_lettering(queue: &str, into: &str) -> QueueOverride {
        QueueOverride {
            name: queue.into(),
            dead_letter_queue: Some(into.into()),
            ..QueueOverride::default()
        }
    }

    #[test]
    fn a_dead_letter_chain_lives_in_one_group_and_a_loop_ends() {
        let config = Config {
            queue_overrides: vec![
                dead_lettering("orders", "orders.dlq"),
                dead_lettering("orders.dlq", "parked"),
                dead_lettering("ping", "pong"),
                dead_lettering("pong", "ping"),
            ],
            ..Config::default()
        };
        let placement = Placement::new(64, &config);
        let parked = placement.group_of("parked");
        assert_eq!(placement.group_of("orders"), parked);
        assert_eq!(placement.group_of("orders.dlq"), parked);
        assert!((1..=64).contains(&placement.group_of("ping")));
        let spread: std::collections::BTreeSet<u32> = (0..100)
            .map(|i| placement.group_of(&format!("queue-{i}")))
            .collect();
        assert!(
            spread.len() > 32,
            "queues spread over the groups: {spread:?}"
        );
    }
}
