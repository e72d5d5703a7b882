//! Applying what the commit step commits: entries, in each group's log
//! order, snapshots to install, and the local step's refusals; and handing
//! the groups snapshots of their state when their logs have grown.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tracing::{debug, error, info, warn};

use super::super::batch::{Batch, BatchHeader};
use super::super::state::{GroupState, Proposers};
use super::{
    COMPACTION_KEEP, Commit, Core, DISK_SHORT_SNAPSHOT_MIN_BYTES, GAP_RETRY_AFTER, Reply,
    SNAPSHOT_EVERY_BYTES, SNAPSHOT_RETRY_AFTER, Step, Unlogged,
};
use crate::amqp::types::{Error, condition};
use crate::node::NodeError;
use crate::node::address::topic_of_subscription;
use crate::node::clients::rollback_error;
use crate::node::{ManageError, Refusal, SettleAnswer, ToConnection};
use crate::queue::{Command, ConsumerId, Effect};
use crate::raft::wal::GroupId;

impl Core {
    pub(super) fn on_committed(&mut self, id: GroupId, committed: Commit) -> Result<(), NodeError> {
        match committed {
            Commit::Entry { index, data } => self.apply_entry(id, index, data),
            Commit::Snapshot { index, data } => self.install_snapshot(id, index, data)?,
            Commit::Refused(data) => self.refuse_entry(id, data),
        }
        self.carry_out_due(id);
        Ok(())
    }

    /// Who proposes to the groups over this core's step.
    fn proposers(&self) -> Proposers {
        match self.step {
            Step::Local => Proposers::One,
            Step::Raft => Proposers::Many,
        }
    }

    /// Applies a command outside the log, to this node's copy of the group
    /// only (see [`Core::credit`]).
    pub(super) fn apply_volatile(&mut self, id: GroupId, command: Command) {
        let mut effects = std::mem::take(&mut self.effects);
        if let Some(group) = self.groups.get_mut(&id) {
            group
                .state
                .apply_volatile(self.now.unix_ms, command, &mut effects);
        }
        for effect in effects.drain(..) {
            self.on_effect(effect, None);
        }
        self.effects = effects;
    }

    /// One of this node's entries that the local step could not make
    /// durable: the disk is full. What must not be lost is refused;
    /// everything else is applied in memory only, since a restart that
    /// forgets it can redeliver or resurrect a message, never lose one:
    /// - an enqueue is not applied, and its message is rejected (the
    ///   producer may retry once space returns);
    /// - a declaration is not applied, so that no message is ever accepted
    ///   into a queue a restart would not know;
    /// - settles, expiry, deletion and consumers' changes are applied.
    ///   Dropping a settle instead would leave its message held by a
    ///   consumer that already let it go.
    ///
    /// The state is then ahead of the log, which a replay would not
    /// rebuild: until a snapshot holds it, the group takes no message
    /// ([`Unlogged`]).
    fn refuse_entry(&mut self, id: GroupId, data: Bytes) {
        let mut batch = match Batch::decode(data) {
            Ok(batch) => batch,
            Err(error) => {
                error!(group = id, %error, "a refused entry of ours does not decode");
                return;
            }
        };
        warn!(
            group = id,
            items = batch.items.len(),
            "disk full: an entry was not logged"
        );
        let mut refused = Vec::new();
        batch.items.retain(|item| {
            let logged_only = matches!(
                item.command,
                Command::Enqueue { .. } | Command::Declare { .. } | Command::Transaction { .. }
            );
            if logged_only {
                refused.push(item.token);
            }
            !logged_only
        });
        // A settle applied in memory only may be forgotten by a restart: a
        // consumer waiting for the broker's settle (rcv-settle-mode second)
        // is not told it took effect.
        let unlogged_settles: Vec<u64> = batch
            .items
            .iter()
            .filter(|item| matches!(item.command, Command::Settle { .. }))
            .map(|item| item.token)
            .collect();
        for token in unlogged_settles {
            let taken = self
                .groups
                .get_mut(&id)
                .and_then(|g| g.outbox.refused(token));
            if let Some(proposed) = taken {
                self.count_applied(&proposed.item.command);
            }
        }
        for token in refused {
            let Some(proposed) = self
                .groups
                .get_mut(&id)
                .and_then(|g| g.outbox.refused(token))
            else {
                continue;
            };
            self.count_applied(&proposed.item.command);
            const FULL: &str = "the broker's disk is full";
            match proposed.reply {
                Reply::Publish(publish) => {
                    let full = Error::new(condition::RESOURCE_LIMIT_EXCEEDED, FULL);
                    self.clients.reject_publish(publish, full);
                    self.clients.enqueue_done(publish);
                    self.finish_publish_if_done(publish);
                }
                Reply::Discharge { publish, unsettles } => {
                    self.clients.reject_publish(publish, rollback_error(FULL));
                    self.on_discharged(publish, unsettles);
                }
                _ => {}
            }
        }
        if batch.items.is_empty() {
            return;
        }
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        let index = group.applied;
        // Any snapshot asked for from now on holds what is applied next.
        let snapshot = self.snapshots_asked + 1;
        let first = group.unlogged.is_none();
        let unlogged = group.unlogged.get_or_insert(Unlogged {
            snapshot,
            retry_at: None,
            answers: Vec::new(),
        });
        if !first {
            // One on its way no longer holds it all. While the disk is full
            // every entry may be refused: the next is asked for a little
            // later, not for each of them.
            unlogged.snapshot = snapshot;
            let later = self.now.instant + SNAPSHOT_RETRY_AFTER;
            unlogged.retry_at.get_or_insert(later);
        }
        self.apply_batch(id, index, batch);
        if first {
            self.snapshot_unlogged(id);
        }
    }

    /// Hands each group whose log grew enough since its last snapshot its
    /// state as of now, so that the log before it can go.
    pub(super) fn snapshot_if_due(&mut self) {
        let every = self.settings.config.storage.snapshot_every_records;
        let due: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, group)| {
                let (entries, bytes) = group.since_snapshot;
                entries >= every || bytes >= SNAPSHOT_EVERY_BYTES
            })
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.compact(id, every.min(COMPACTION_KEEP));
        }
    }

    /// While producers are blocked for want of disk space: hands each group
    /// that logged something since its last snapshot its state as of now,
    /// if the log since outweighs the state or the state halved since (what
    /// consumers took), since only a snapshot gives the log's space back,
    /// and it would otherwise wait for the usual count of records. Halving
    /// keeps what these snapshots write under twice the largest state.
    pub(super) fn snapshot_if_disk_short(&mut self) {
        let every = self.settings.config.storage.snapshot_every_records;
        let due: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, group)| {
                let (entries, logged) = group.since_snapshot;
                let state = group.state.queues().snapshot_bytes_estimate();
                let outweighs = logged as u64 > state * 2 + DISK_SHORT_SNAPSHOT_MIN_BYTES;
                let halved = state * 2 < group.snapshot_state_bytes;
                group.applied > 0 && entries > 0 && (outweighs || halved)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.compact(id, every.min(COMPACTION_KEEP));
        }
    }

    /// The group's state becomes a snapshot's: at start, or after this node
    /// fell so far behind that the leader sent its state instead of
    /// entries. What was applied meanwhile was not seen here, so:
    /// - this node's items the snapshot covers are done, but their outcome
    ///   is unknown: a publish among them fails its link (the client
    ///   resends; never a false `accepted`);
    /// - this node's consumers of the group that were already attached may
    ///   hold deliveries that were never sent: they are detached (the
    ///   clients attach again) and what they hold returns to the queue.
    fn install_snapshot(&mut self, id: GroupId, index: u64, data: Bytes) -> Result<(), NodeError> {
        let mut state = GroupState::decode(data).map_err(|error| NodeError::Snapshot {
            group: id,
            index,
            error,
        })?;
        // Planted bugs are not state: they stay with the node.
        state.plant(self.settings.config.plants);
        let groups = u32::try_from(self.groups.len()).unwrap_or(u32::MAX);
        state.page_to(self.settings.paging(groups), self.settings.pages.open(id));
        info!(group = id, index, "group state installed from a snapshot");
        let Some(group) = self.groups.get_mut(&id) else {
            return Ok(());
        };
        let done = state.next_token(self.origin);
        group.state = state;
        group.applied = index;
        group.since_snapshot = (0, 0);
        let mut unknown = Vec::new();
        while let Some(proposed) = group.outbox.applied_before(done) {
            unknown.push(proposed);
        }
        if group.outbox.fresh().next().is_none() {
            group.linger_until = None;
        }
        let attaching: BTreeSet<ConsumerId> = group
            .outbox
            .waiting()
            .filter_map(|item| match item.command {
                Command::Attach { consumer, .. } => Some(consumer),
                _ => None,
            })
            .collect();
        for proposed in unknown {
            self.on_unknown_outcome(id, proposed.reply, &proposed.item.command);
        }
        let stranded: Vec<ConsumerId> = self
            .clients
            .consumers()
            .filter(|(consumer, info)| {
                self.placement.group_of(&info.queue) == id && !attaching.contains(consumer)
            })
            .map(|(consumer, _)| consumer)
            .collect();
        for consumer in stranded {
            self.forced_detach(consumer);
            self.detach_consumer(id, consumer, None);
        }
        self.rebuild_topics();
        Ok(())
    }

    /// One of this node's items was applied out of its sight (inside a
    /// snapshot).
    fn on_unknown_outcome(&mut self, id: GroupId, reply: Reply, command: &Command) {
        self.count_applied(command);
        match reply {
            Reply::Publish(publish) => {
                warn!(
                    group = id,
                    "a publish's outcome was lost in a snapshot: failing its link"
                );
                let refusal = Refusal {
                    condition: condition::DETACH_FORCED,
                    description: "the outcome of a message is unknown after this node \
                                  caught up from a snapshot: send it again"
                        .into(),
                };
                self.clients.abandon_publish(publish, refusal);
            }
            Reply::Discharge { publish, .. } => {
                warn!(
                    group = id,
                    "a transaction's outcome was lost in a snapshot: failing its coordinator link"
                );
                let refusal = Refusal {
                    condition: condition::DETACH_FORCED,
                    description: "whether the transaction committed is unknown after this \
                                  node caught up from a snapshot"
                        .into(),
                };
                self.clients.abandon_publish(publish, refusal);
            }
            // The attach happened, but what was delivered meanwhile was not
            // seen here: the client attaches again.
            Reply::Attached {
                conn,
                link,
                consumer,
                ..
            } => {
                self.clients.remove_consumer(consumer);
                let refusal = Refusal {
                    condition: condition::DETACH_FORCED,
                    description: "this node caught up from a snapshot while attaching: \
                                  attach again"
                        .into(),
                };
                let result = Err(refusal);
                self.clients
                    .tell(conn, ToConnection::ConsumerAttached { link, result });
                self.detach_consumer(id, consumer, None);
            }
            Reply::Manage(answer) => self.answer_manage(answer, Err(ManageError::Unknown)),
            Reply::Expire | Reply::None | Reply::PlantedRest { .. } => {
                self.on_own_applied(id, reply);
            }
            // Whether it took effect is unknown: the consumer is not told it
            // did, and gives up waiting.
            Reply::Settled(_) => {}
        }
    }

    /// Subscription queues by topic, from every group's declared queues.
    fn rebuild_topics(&mut self) {
        self.topics.clear();
        for group in self.groups.values() {
            for (queue, _) in group.state.queues().declared() {
                if let Some(topic) = topic_of_subscription(queue) {
                    self.topics
                        .entry(topic.to_owned())
                        .or_default()
                        .insert(queue.to_owned());
                }
            }
        }
    }

    fn apply_entry(&mut self, id: GroupId, index: u64, data: Bytes) {
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        // A step hands each index over once; only the planted
        // `commit-on-minority` hands some over early, and then again.
        if index <= group.applied {
            return;
        }
        group.applied = index;
        group.since_snapshot.0 += 1;
        group.since_snapshot.1 += data.len();
        if data.is_empty() {
            return;
        }
        if let Some(batch) = self.own_batch(id, &data) {
            return self.apply_batch(id, index, batch);
        }
        match Batch::decode(data) {
            Ok(batch) => self.apply_batch(id, index, batch),
            // Every member skips it alike, so the groups stay equal.
            Err(error) => {
                error!(group = id, index, %error, "a committed entry does not decode: skipped");
            }
        }
    }

    /// Over the local step, an entry this node proposed since it started
    /// is made of the oldest items of its outbox: they are taken from
    /// there, with their replies (kept for [`Core::take_reply`]), which
    /// costs far less than decoding the entry again. `None` for any other
    /// entry (one recovered from the log), which is decoded.
    fn own_batch(&mut self, id: GroupId, data: &Bytes) -> Option<Batch> {
        if self.step != Step::Local {
            return None;
        }
        let header = BatchHeader::peek(data)?;
        if header.origin != self.origin {
            return None;
        }
        let outbox = &mut self.groups.get_mut(&id)?.outbox;
        let tokens = header.first_token.map_or(0..0, |first| {
            first..first.saturating_add(header.count as u64)
        });
        let at_front = {
            let mut waiting = outbox.waiting().map(|item| item.token);
            tokens.clone().all(|token| waiting.next() == Some(token))
        };
        if !at_front {
            debug_assert!(false, "an entry of ours is not at the outbox's front");
            return None;
        }
        let mut items = Vec::with_capacity(header.count);
        for proposed in tokens.filter_map(|token| outbox.applied(token)) {
            count_applied(&mut self.pending_enqueues, &proposed.item.command);
            self.taken_replies
                .push_back((proposed.item.token, proposed.reply));
            items.push(proposed.item);
        }
        Some(Batch {
            origin: header.origin,
            now_ms: header.now_ms,
            items,
        })
    }

    /// Applies a batch as of entry `index`, and acts on what it did.
    fn apply_batch(&mut self, id: GroupId, index: u64, batch: Batch) {
        let origin = batch.origin;
        let last_token = batch.items.last().map(|item| item.token);
        let forced: Vec<ConsumerId> = batch
            .items
            .iter()
            .filter_map(|item| match item.command {
                Command::Detach { consumer } if !self.detaching.contains(&consumer) => {
                    Some(consumer)
                }
                _ => None,
            })
            .collect();
        let mut applied = std::mem::take(&mut self.applied);
        let mut effects = std::mem::take(&mut self.effects);
        let proposers = self.proposers();
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        group
            .state
            .apply(index, batch, proposers, &mut applied, &mut effects);
        // The items' effects follow each other in order.
        let mut all_effects = effects.drain(..);
        for item in applied.drain(..) {
            let reply = if item.origin == self.origin {
                self.take_reply(id, item.token)
            } else {
                None
            };
            let publish = match &reply {
                Some(Reply::Publish(publish) | Reply::Discharge { publish, .. }) => Some(*publish),
                _ => None,
            };
            let mut managed = None;
            for effect in all_effects.by_ref().take(item.effects.len()) {
                if let Some(Reply::Manage(_)) = reply {
                    managed = managed.or(super::manage::managed(&effect));
                }
                self.on_effect(effect, publish);
            }
            if let Some(Reply::Manage(answer)) = reply {
                self.answer_manage(answer, managed.ok_or(ManageError::NotFound("queue")));
                continue;
            }
            // A settle the group dropped as stale settled nothing: its
            // consumer must not hear that it did.
            let reply = reply.filter(|reply| !(item.stale && matches!(reply, Reply::Settled(_))));
            if let Some(reply) = reply {
                self.on_own_applied_or_later(id, reply);
            }
        }
        drop(all_effects);
        self.applied = applied;
        self.effects = effects;
        for consumer in forced {
            self.forced_detach(consumer);
        }
        // At most one such retry per `GAP_RETRY_AFTER`: a retry's own
        // entries may show the same gap while they are applied, and a
        // retry per applied entry would snowball.
        let now = self.now.instant;
        if origin == self.origin
            && let Some(last) = last_token
            && self.groups.get(&id).is_some_and(|g| {
                g.outbox.has_gap_before(last)
                    && now.duration_since(g.proposed_at) >= GAP_RETRY_AFTER
            })
        {
            debug!(
                group = id,
                "an item of ours was lost: proposing again from it"
            );
            self.retry(id);
        }
    }

    /// What to do now that our item `token` of group `id` is applied: taken
    /// with the item by [`Core::own_batch`], or from the outbox.
    fn take_reply(&mut self, id: GroupId, token: u64) -> Option<Reply> {
        if self
            .taken_replies
            .front()
            .is_some_and(|&(taken, _)| taken == token)
        {
            return self.taken_replies.pop_front().map(|(_, reply)| reply);
        }
        let proposed = self.groups.get_mut(&id)?.outbox.applied(token)?;
        self.count_applied(&proposed.item.command);
        Some(proposed.reply)
    }

    /// One of our items left the outbox (see [`count_applied`]).
    fn count_applied(&mut self, command: &Command) {
        count_applied(&mut self.pending_enqueues, command);
    }

    /// One of our items was applied: a publish or a discharge applied to a
    /// state ahead of its log is answered only once a snapshot holds that
    /// state ([`Unlogged`]). It was proposed before the entry that put the
    /// state ahead was refused, and was still on its way to the log then:
    /// a replay of the log alone might decide it otherwise.
    fn on_own_applied_or_later(&mut self, id: GroupId, reply: Reply) {
        if let Reply::Publish(_) | Reply::Discharge { .. } = reply
            && let Some(unlogged) = self.groups.get_mut(&id).and_then(|g| g.unlogged.as_mut())
        {
            return unlogged.answers.push(reply);
        }
        self.on_own_applied(id, reply);
    }

    /// One of our items was applied.
    pub(super) fn on_own_applied(&mut self, id: GroupId, reply: Reply) {
        match reply {
            Reply::None => {}
            Reply::Attached {
                conn,
                link,
                consumer,
                address,
            } => self.clients.answer_attach(conn, link, consumer, address),
            Reply::Publish(publish) => {
                self.clients.enqueue_done(publish);
                self.finish_publish_if_done(publish);
            }
            Reply::Discharge { publish, unsettles } => self.on_discharged(publish, unsettles),
            Reply::Settled(SettleAnswer {
                conn,
                delivery,
                state,
            }) => self
                .clients
                .tell(conn, ToConnection::Outcome { delivery, state }),
            Reply::Expire => {
                if let Some(group) = self.groups.get_mut(&id) {
                    group.expiring = false;
                }
            }
            // Answered where it is applied (`apply_batch`), with what it did.
            Reply::Manage(answer) => self.answer_manage(answer, Err(ManageError::Unknown)),
            Reply::PlantedRest {
                queue,
                rest,
                publish,
                unsettles,
            } => {
                let command = Command::Transaction { work: rest };
                let reply = Reply::Discharge { publish, unsettles };
                self.propose(&queue, command, None, reply);
            }
        }
    }

    /// Another node detached one of our live consumers (it took this node
    /// for gone): the client hears that its link ended.
    fn forced_detach(&mut self, consumer: ConsumerId) {
        if self.clients.consumer(consumer).is_none() {
            return;
        }
        warn!(
            consumer,
            "a consumer of this node was detached by the cluster"
        );
        let refusal = Refusal {
            condition: condition::DETACH_FORCED,
            description: "the cluster lost contact with this node and detached the link".into(),
        };
        self.clients.close_consumer(consumer, refusal);
    }

    fn on_effect(&mut self, effect: Effect, publish: Option<u64>) {
        match self.clients.act(effect, publish) {
            Some(Effect::Declared { queue }) => {
                if let Some(topic) = topic_of_subscription(&queue) {
                    self.topics
                        .entry(topic.to_owned())
                        .or_default()
                        .insert(queue);
                }
            }
            Some(Effect::Deleted { queue }) => {
                if let Some(topic) = topic_of_subscription(&queue)
                    && let Some(subscriptions) = self.topics.get_mut(topic)
                {
                    subscriptions.remove(&queue);
                    if subscriptions.is_empty() {
                        self.topics.remove(topic);
                    }
                }
                self.deleting.remove(&queue);
            }
            Some(other) => debug!(effect = ?other, "queue effect"),
            None => {}
        }
    }
}

/// One of our items left the outbox: an enqueue no longer takes room ahead
/// of time in `pending_enqueues`.
fn count_applied(pending_enqueues: &mut BTreeMap<String, u64>, command: &Command) {
    if let Command::Enqueue { queue, .. } = command
        && let Some(count) = pending_enqueues.get_mut(queue)
    {
        *count -= 1;
        if *count == 0 {
            pending_enqueues.remove(queue);
        }
    }
}
