//! Applying what the groups commit: entries, in each group's log order,
//! and snapshots to install; and handing the groups snapshots of their
//! state when their logs have grown.

use std::collections::BTreeSet;

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType};
use tracing::{debug, error, info, warn};

use super::super::batch::Batch;
use super::super::state::GroupState;
use super::super::{COMPACTION_KEEP, GAP_RETRY_AFTER, SNAPSHOT_EVERY_BYTES};
use super::{ClusterCore, Reply, ToGroups};
use crate::amqp::types::condition;
use crate::node::NodeError;
use crate::node::address::topic_of_subscription;
use crate::node::{Refusal, ToConnection};
use crate::queue::{Command, ConsumerId, Effect};
use crate::raft::group::Committed;
use crate::raft::wal::GroupId;

impl ClusterCore {
    pub(super) fn on_committed(
        &mut self,
        id: GroupId,
        committed: Committed,
    ) -> Result<(), NodeError> {
        match committed {
            Committed::Entry(entry) => self.apply_entry(id, entry),
            Committed::Snapshot { index, data } => self.install_snapshot(id, index, data)?,
        }
        Ok(())
    }

    /// Hands each group whose log grew enough since its last snapshot its
    /// state as of now, so that the log before it can go.
    pub(super) fn snapshot_if_due(&mut self) {
        let every = self.settings.config.storage.snapshot_every_records;
        for (&id, group) in &mut self.groups {
            let (entries, bytes) = group.since_snapshot;
            if entries >= every || bytes >= SNAPSHOT_EVERY_BYTES {
                group.since_snapshot = (0, 0);
                debug!(
                    group = id,
                    index = group.applied,
                    "snapshot of the group's state"
                );
                let keep = every.min(COMPACTION_KEEP);
                self.to_groups.push_back(ToGroups::Compact {
                    group: id,
                    index: group.applied,
                    state: group.state.encode(),
                    keep,
                });
            }
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
        let state = GroupState::decode(data).map_err(|error| NodeError::Snapshot {
            group: id,
            index,
            error,
        })?;
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
            self.detaching.insert(consumer);
            self.propose_to(id, Command::Detach { consumer }, None, Reply::None);
        }
        self.rebuild_topics();
        Ok(())
    }

    /// One of this node's items was applied out of its sight (inside a
    /// snapshot).
    fn on_unknown_outcome(&mut self, id: GroupId, reply: Reply, command: &Command) {
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
                self.detaching.insert(consumer);
                self.propose_to(id, Command::Detach { consumer }, None, Reply::None);
            }
            Reply::Expire | Reply::None => self.on_own_applied(id, reply, command),
        }
        if let Command::Enqueue { queue, .. } = command
            && let Some(count) = self.pending_enqueues.get_mut(queue)
        {
            *count = count.saturating_sub(1);
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

    fn apply_entry(&mut self, id: GroupId, entry: Entry) {
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        // Raft hands each index over once; only the planted
        // `commit-on-minority` hands some over early, and then again.
        if entry.index <= group.applied {
            return;
        }
        group.applied = entry.index;
        group.since_snapshot.0 += 1;
        group.since_snapshot.1 += entry.data.len();
        if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
            return;
        }
        let index = entry.index;
        let batch = match Batch::decode(entry.data) {
            Ok(batch) => batch,
            // Every member skips it alike, so the groups stay equal.
            Err(error) => {
                error!(group = id, index, %error, "a committed entry does not decode: skipped");
                return;
            }
        };
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
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        group.state.apply(index, batch, &mut applied, &mut effects);
        // The items' effects follow each other in order.
        let mut all_effects = effects.drain(..);
        for item in applied.drain(..) {
            let reply = if item.origin == self.origin {
                self.groups
                    .get_mut(&id)
                    .and_then(|group| group.outbox.applied(item.token))
                    .map(|proposed| (proposed.reply, proposed.item.command))
            } else {
                None
            };
            let publish = match &reply {
                Some((Reply::Publish(publish), _)) => Some(*publish),
                _ => None,
            };
            for effect in all_effects.by_ref().take(item.effects.len()) {
                self.on_effect(effect, publish);
            }
            if let Some((reply, command)) = reply {
                self.on_own_applied(id, reply, &command);
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

    /// One of our items was applied.
    fn on_own_applied(&mut self, id: GroupId, reply: Reply, command: &Command) {
        if let Command::Enqueue { queue, .. } = command
            && let Some(count) = self.pending_enqueues.get_mut(queue)
        {
            *count -= 1;
            if *count == 0 {
                self.pending_enqueues.remove(queue);
            }
        }
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
            Reply::Expire => {
                if let Some(group) = self.groups.get_mut(&id) {
                    group.expiring = false;
                }
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
                for subscriptions in self.topics.values_mut() {
                    subscriptions.remove(&queue);
                }
            }
            Some(other) => debug!(effect = ?other, "queue effect"),
            None => {}
        }
    }
}
