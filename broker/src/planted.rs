//! Planted bugs: deliberate durability and delivery faults that prove the
//! simulator's checker can fail.
//!
//! A plant is chosen per broker instance through
//! [`Config::plants`](crate::config::Config::plants) and handed down to the
//! node, the log and the queue state machine; there is no global switch, so
//! several brokers in one process (and hosts turmoil restarts) each keep
//! their own. Every planted code path asks its [`Plants`] value, whose
//! questions are constant `false` unless the `planted-bugs` feature is on:
//! only `sluice-sim` turns it on, so the production binary carries no
//! planted branch at all (`scripts/test.sh` checks its release build).
//!
//! | plant | where | what goes wrong |
//! |---|---|---|
//! | `ack-before-fsync` | `node::core` `Core::submit` | a durable command is applied (and a publish answered `accepted`) at once; its log append still runs, detached |
//! | `skip-dir-fsync` | `log::writer` `try_create` | a new segment's header is fsynced but its directory is not, so a crash may drop the whole file, acknowledged records and all |
//! | `lose-redelivery` | `queue::machine` `Queues::settle` | a `released` message is removed instead of put back |
//! | `double-deliver` | `queue::machine` `Queues::settle` | an `accepted` message is put back instead of removed, so it is delivered again |
//! | `vote-without-persist` | `raft::replica` `Replica::advance` | a Raft member sends its votes and acknowledgements before what they vouch for is durable, so a crash can make it vote twice in a term or forget entries a leader counted as replicated |
//! | `commit-on-minority` | `raft::group` `Host::handle` | a leader hands entries to the broker as committed as soon as it appends them to its own log, without waiting for a majority: a deposed leader's entries are applied (and publishes answered) though another leader overwrites them |
//! | `ignore-damage` | `raft::group` `start` | a node whose Raft log was cut back after damage carries on as if nothing was lost: it votes at once, and its leaders go on counting the acknowledgements it sent for entries it no longer has |
//! | `txn-partial-commit` | `node::core::transactions` `Core::commit` | a transaction of two commands or more commits in two entries, the second proposed once the first is applied: a crash between them applies half of it, and its discharge is never answered |
//! | `lvq-keeps-superseded` | `queue::machine` `Queues::enqueue` | a last-value queue's new message replaces none of the messages with its key, so a superseded value is delivered after the newer one was accepted |
//! | `lvq-loses-newest` | `queue::machine` `Queues::enqueue` | a last-value queue's new message that replaces others is dropped with them (yet answered `accepted`), so the newest value of its key is lost |
//! | `priority-ignored` | `queue::machine` `Queues::enqueue` | a published message's priority is taken as the default, so a priority queue delivers first in first out |
//! | `unroutable-accepted` | `queue::machine` `Queues::enqueue` | an enqueue to a queue that does not exist (the anonymous relay's `to` names none) is dropped without a rejection, so the publish is answered `accepted` |
//! | `groups-ignored` | `queue::machine` `Queues::declare` | a queue with message groups is made without them, so its dispatch hands a group's messages to any consumer while another holds some |
//! | `settle-second-early` | `node::core` `Core::handle` (`Request::Settle`) | a consumer in rcv-settle-mode second is told its outcome took effect as soon as the node reads it, before it is applied: a crash (or a full disk, or a cut-off node) then loses a settle the broker vouched for |
//! | `filter-ignored` | `queue::machine` `Queues::attach` | a consumer's `amqp:application-properties-filter` is dropped when it attaches, so dispatch never applies it: the consumer gets what the filter does not select |
//! | `volatile-copy-dropped` | `node::state` `GroupState::subscriptions` | a topic's message skips the non-durable subscriptions now and then (one message in four, by a checksum of its bytes), though its publish is answered `accepted` |
//! | `receive-unchecked` | `node::core` `Core::attach_consumer` | a consumer's attach skips the permission check, so a user that may not receive from a queue consumes it |
//! | `relay-unchecked` | `node::core` `Core::publish` | the anonymous relay skips the check of `send` on each message's `to`, so a user that may not send to a queue puts messages in it |
//! | `scram-accepts-any-proof` | `sasl::scram` `ScramServer::finish_planted` | a SCRAM login of a known user is admitted whatever its proof, so a wrong password opens a connection |
//! | `handshake-deadline-ignored` | `server` `connection_config` | connections get no handshake deadline (`amqp.handshake_timeout_ms`), so a client that trickles its handshake under the idle timeout is served however long it takes |
//! | `page-in-drops` | `queue::single` `Queue::page_in` | a page-in that reads several paged messages drops the last of them, as if it had been consumed: a deep queue loses a message now and then |
//! | `transient-refused-kept` | `node::core` `Core::publish` | a non-durable message that a paging queue refuses (`limits.page_transient_messages = false`) is answered `rejected` and enqueued all the same, so a message its producer was told was refused is delivered |
//! | `copy-body-swapped` | `queue::whole` `put_message` | the state's encoding writes a topic message's copy whose body came before as a copy of the body written just before that one: a subscription restored from a snapshot holds another message's body in its place |

use std::fmt;
use std::str::FromStr;

/// The bugs planted in one broker instance: none, or one [`Plant`]. Every
/// planted code path asks it one question; without the `planted-bugs`
/// feature it holds nothing and every answer is a constant `false`, so the
/// compiler removes the branch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plants {
    #[cfg(feature = "planted-bugs")]
    plant: Option<Plant>,
}

impl Plants {
    /// No bug planted: what production runs.
    pub const NONE: Plants = Plants {
        #[cfg(feature = "planted-bugs")]
        plant: None,
    };

    /// `plant` planted (or nothing, for `None`).
    #[cfg(feature = "planted-bugs")]
    pub const fn new(plant: Option<Plant>) -> Self {
        Self { plant }
    }

    #[cfg(feature = "planted-bugs")]
    const fn has(self, plant: Plant) -> bool {
        match self.plant {
            Some(planted) => planted as u8 == plant as u8,
            None => false,
        }
    }

    #[cfg(not(feature = "planted-bugs"))]
    const fn has(self, _plant: Plant) -> bool {
        false
    }

    /// `ack-before-fsync`: a durable command is applied before its record
    /// is durable.
    pub const fn ack_before_fsync(self) -> bool {
        self.has(Plant::AckBeforeFsync)
    }

    /// `skip-dir-fsync`: a new segment's directory entry is never fsynced.
    pub const fn skip_dir_fsync(self) -> bool {
        self.has(Plant::SkipDirFsync)
    }

    /// `lose-redelivery`: a released message is dropped.
    pub const fn lose_redelivery(self) -> bool {
        self.has(Plant::LoseRedelivery)
    }

    /// `double-deliver`: an accepted message is requeued.
    pub const fn double_deliver(self) -> bool {
        self.has(Plant::DoubleDeliver)
    }

    /// `vote-without-persist`: votes and acknowledgements leave before what
    /// they vouch for is durable.
    pub const fn vote_without_persist(self) -> bool {
        self.has(Plant::VoteWithoutPersist)
    }

    /// `commit-on-minority`: a leader applies what only its disk holds.
    pub const fn commit_on_minority(self) -> bool {
        self.has(Plant::CommitOnMinority)
    }

    /// `ignore-damage`: a node whose log was cut back does not rejoin.
    pub const fn ignore_damage(self) -> bool {
        self.has(Plant::IgnoreDamage)
    }

    /// `dedup-ignored`: a resent `message-id` is enqueued again.
    pub const fn dedup_ignored(self) -> bool {
        self.has(Plant::DedupIgnored)
    }

    /// `deliver-expired`: a message's expiry is never checked.
    pub const fn deliver_expired(self) -> bool {
        self.has(Plant::DeliverExpired)
    }

    /// `dlq-drops`: a dead-lettered message is dropped.
    pub const fn dlq_drops(self) -> bool {
        self.has(Plant::DlqDrops)
    }

    /// `clock-regress`: a group's clock goes back with a proposer's.
    pub const fn clock_regress(self) -> bool {
        self.has(Plant::ClockRegress)
    }

    /// `schedule-ignored`: a scheduled message is delivered at once.
    pub const fn schedule_ignored(self) -> bool {
        self.has(Plant::ScheduleIgnored)
    }

    /// `txn-partial-commit`: a transaction commits in two entries.
    pub const fn txn_partial_commit(self) -> bool {
        self.has(Plant::TxnPartialCommit)
    }

    /// `lvq-keeps-superseded`: a last-value queue replaces nothing.
    pub const fn lvq_keeps_superseded(self) -> bool {
        self.has(Plant::LvqKeepsSuperseded)
    }

    /// `lvq-loses-newest`: a replacing last value is dropped too.
    pub const fn lvq_loses_newest(self) -> bool {
        self.has(Plant::LvqLosesNewest)
    }

    /// `priority-ignored`: every published message has the default
    /// priority.
    pub const fn priority_ignored(self) -> bool {
        self.has(Plant::PriorityIgnored)
    }

    /// `unroutable-accepted`: a message for a queue that does not exist is
    /// dropped and accepted.
    pub const fn unroutable_accepted(self) -> bool {
        self.has(Plant::UnroutableAccepted)
    }

    /// `groups-ignored`: a queue's message groups are ignored.
    pub const fn groups_ignored(self) -> bool {
        self.has(Plant::GroupsIgnored)
    }

    /// `settle-second-early`: a settle is confirmed before it is applied.
    pub const fn settle_second_early(self) -> bool {
        self.has(Plant::SettleSecondEarly)
    }

    /// `filter-ignored`: a consumer's application-properties filter is
    /// never applied.
    pub const fn filter_ignored(self) -> bool {
        self.has(Plant::FilterIgnored)
    }

    /// `volatile-copy-dropped`: a topic's message now and then skips the
    /// non-durable subscriptions.
    pub const fn volatile_copy_dropped(self) -> bool {
        self.has(Plant::VolatileCopyDropped)
    }

    /// `receive-unchecked`: a consumer's attach is not checked against
    /// its user's permissions.
    pub const fn receive_unchecked(self) -> bool {
        self.has(Plant::ReceiveUnchecked)
    }

    /// `relay-unchecked`: a message on the anonymous relay is not checked
    /// against its user's permission to send to its `to`.
    pub const fn relay_unchecked(self) -> bool {
        self.has(Plant::RelayUnchecked)
    }

    /// `scram-accepts-any-proof`: a SCRAM login's proof is not checked.
    pub const fn scram_accepts_any_proof(self) -> bool {
        self.has(Plant::ScramAcceptsAnyProof)
    }

    /// `handshake-deadline-ignored`: connections get no handshake
    /// deadline.
    pub const fn handshake_deadline_ignored(self) -> bool {
        self.has(Plant::HandshakeDeadlineIgnored)
    }

    /// `page-in-drops`: a page-in of several messages leaves the last out.
    pub const fn page_in_drops(self) -> bool {
        self.has(Plant::PageInDrops)
    }

    /// `copy-body-swapped`: a snapshot gives a copy the body written
    /// before its own.
    pub const fn copy_body_swapped(self) -> bool {
        self.has(Plant::CopyBodySwapped)
    }

    /// `transient-refused-kept`: a refused non-durable message is
    /// enqueued all the same.
    pub const fn transient_refused_kept(self) -> bool {
        self.has(Plant::TransientRefusedKept)
    }
}

/// One planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Plant {
    /// `accepted` is sent before the log append is durable.
    AckBeforeFsync,
    /// A new log segment's directory entry is never fsynced.
    SkipDirFsync,
    /// A released message is dropped instead of requeued.
    LoseRedelivery,
    /// An accepted (settled) message is requeued.
    DoubleDeliver,
    /// A Raft member's votes and acknowledgements leave before what they
    /// vouch for is durable.
    VoteWithoutPersist,
    /// A leader applies entries that only its own disk holds.
    CommitOnMinority,
    /// A node whose Raft log was cut back after damage does not rejoin.
    IgnoreDamage,
    /// A message published again with a `message-id` the queue remembers
    /// is enqueued again.
    DedupIgnored,
    /// A message's TTL is ignored: it is delivered (and kept) after it
    /// expired, as if expiry were checked neither at delivery nor by the
    /// sweep.
    DeliverExpired,
    /// A dead-lettered message is dropped instead of moved to its queue's
    /// dead-letter queue.
    DlqDrops,
    /// A group's clock follows the clock of whoever proposed last, back in
    /// time too, so expiry is judged at an earlier time than before.
    ClockRegress,
    /// A message's delivery schedule (`x-opt-delivery-delay`,
    /// `x-opt-delivery-time`) is ignored: it is ready at once.
    ScheduleIgnored,
    /// A transaction's commit is split in two entries, so a crash between
    /// them applies part of it.
    TxnPartialCommit,
    /// A last-value queue's new message replaces none of the waiting
    /// messages with its key.
    LvqKeepsSuperseded,
    /// A last-value queue's new message that replaces others is dropped
    /// along with them, though answered `accepted`.
    LvqLosesNewest,
    /// A published message's `header.priority` is ignored.
    PriorityIgnored,
    /// Under rcv-settle-mode second, the broker settles a consumer's
    /// delivery before the outcome is applied.
    SettleSecondEarly,
    /// An enqueue to a queue that does not exist is dropped, and its
    /// publish accepted.
    UnroutableAccepted,
    /// A queue with message groups dispatches as if it had none.
    GroupsIgnored,
    /// A consumer's `amqp:application-properties-filter` is not applied at
    /// dispatch.
    FilterIgnored,
    /// A topic's message skips the non-durable subscriptions now and then.
    VolatileCopyDropped,
    /// A consumer's attach skips its user's permissions.
    ReceiveUnchecked,
    /// The anonymous relay skips its user's permission to send to a
    /// message's `to`.
    RelayUnchecked,
    /// A SCRAM login of a known user is admitted whatever its proof.
    ScramAcceptsAnyProof,
    /// Connections get no handshake deadline.
    HandshakeDeadlineIgnored,
    /// A page-in of several messages leaves the last out.
    PageInDrops,
    /// A snapshot gives a topic message's copy the body written before
    /// its own.
    CopyBodySwapped,
    /// A refused non-durable message is enqueued all the same.
    TransientRefusedKept,
}

impl Plant {
    /// Every plant, in a fixed order.
    pub const ALL: [Plant; 28] = [
        Plant::AckBeforeFsync,
        Plant::SkipDirFsync,
        Plant::LoseRedelivery,
        Plant::DoubleDeliver,
        Plant::VoteWithoutPersist,
        Plant::CommitOnMinority,
        Plant::IgnoreDamage,
        Plant::DedupIgnored,
        Plant::DeliverExpired,
        Plant::DlqDrops,
        Plant::ClockRegress,
        Plant::ScheduleIgnored,
        Plant::TxnPartialCommit,
        Plant::LvqKeepsSuperseded,
        Plant::LvqLosesNewest,
        Plant::PriorityIgnored,
        Plant::SettleSecondEarly,
        Plant::UnroutableAccepted,
        Plant::GroupsIgnored,
        Plant::FilterIgnored,
        Plant::VolatileCopyDropped,
        Plant::ReceiveUnchecked,
        Plant::RelayUnchecked,
        Plant::ScramAcceptsAnyProof,
        Plant::HandshakeDeadlineIgnored,
        Plant::PageInDrops,
        Plant::CopyBodySwapped,
        Plant::TransientRefusedKept,
    ];

    /// The plant's command-line name.
    pub const fn name(self) -> &'static str {
        match self {
            Plant::AckBeforeFsync => "ack-before-fsync",
            Plant::SkipDirFsync => "skip-dir-fsync",
            Plant::LoseRedelivery => "lose-redelivery",
            Plant::DoubleDeliver => "double-deliver",
            Plant::VoteWithoutPersist => "vote-without-persist",
            Plant::CommitOnMinority => "commit-on-minority",
            Plant::IgnoreDamage => "ignore-damage",
            Plant::DedupIgnored => "dedup-ignored",
            Plant::DeliverExpired => "deliver-expired",
            Plant::DlqDrops => "dlq-drops",
            Plant::ClockRegress => "clock-regress",
            Plant::ScheduleIgnored => "schedule-ignored",
            Plant::TxnPartialCommit => "txn-partial-commit",
            Plant::LvqKeepsSuperseded => "lvq-keeps-superseded",
            Plant::LvqLosesNewest => "lvq-loses-newest",
            Plant::PriorityIgnored => "priority-ignored",
            Plant::SettleSecondEarly => "settle-second-early",
            Plant::UnroutableAccepted => "unroutable-accepted",
            Plant::GroupsIgnored => "groups-ignored",
            Plant::FilterIgnored => "filter-ignored",
            Plant::VolatileCopyDropped => "volatile-copy-dropped",
            Plant::ReceiveUnchecked => "receive-unchecked",
            Plant::RelayUnchecked => "relay-unchecked",
            Plant::ScramAcceptsAnyProof => "scram-accepts-any-proof",
            Plant::HandshakeDeadlineIgnored => "handshake-deadline-ignored",
            Plant::PageInDrops => "page-in-drops",
            Plant::CopyBodySwapped => "copy-body-swapped",
            Plant::TransientRefusedKept => "transient-refused-kept",
        }
    }
}

impl fmt::Display for Plant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a plant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown plant {0:?}: expected one of ack-before-fsync, skip-dir-fsync, lose-redelivery, double-deliver, vote-without-persist, commit-on-minority, ignore-damage, dedup-ignored, deliver-expired, dlq-drops, clock-regress, schedule-ignored, txn-partial-commit, lvq-keeps-superseded, lvq-loses-newest, priority-ignored, settle-second-early, unroutable-accepted, groups-ignored, filter-ignored, volatile-copy-dropped, receive-unchecked, relay-unchecked, scram-accepts-any-proof, handshake-deadline-ignored, page-in-drops, copy-body-swapped, transient-refused-kept"
)]
pub struct UnknownPlant(pub String);

impl FromStr for Plant {
    type Err = UnknownPlant;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Plant::ALL
            .into_iter()
            .find(|plant| plant.name() == name)
            .ok_or_else(|| UnknownPlant(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for plant in Plant::ALL {
            assert_eq!(plant.to_string().parse::<Plant>(), Ok(plant));
        }
        assert_eq!(
            "ack-before-fsync".parse::<Plant>(),
            Ok(Plant::AckBeforeFsync)
        );
        assert!("AckBeforeFsync".parse::<Plant>().is_err());
        assert!("".parse::<Plant>().is_err());
    }
}
