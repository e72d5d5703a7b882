//! Temporary nodes that producers ask for: a sender's dynamic target (a
//! JMS temporary queue or topic). The broker names the node; a temporary
//! queue lives as long as the link that made it, and one whose link a
//! crash ended is deleted by the node's next start.

use std::collections::{BTreeMap, BTreeSet};

use tracing::info;

use super::{Core, Reply};
use crate::amqp::engine::LinkId;
use crate::node::origin::Origin;
use crate::node::{ConnId, ProducerNode, QueueOptions, TOPIC_PREFIX};
use crate::queue::{Command, QueueConfig};

/// The prefix of every queue and topic the broker names.
const DYNAMIC_PREFIX: &str = "dynamic.";

/// The temporary queues of this node's producer links.
#[derive(Debug, Default)]
pub(super) struct Temporary {
    /// Each link's queue.
    queues: BTreeMap<(ConnId, LinkId), String>,
    /// Orphaned queues (of an earlier start) whose deletion is proposed.
    deleting: BTreeSet<String>,
}

/// A node name no other node, and no earlier start of this one, uses:
/// `dynamic.NODE.START.N`.
pub(super) fn unique_name(origin: Origin, next: &mut u64) -> String {
    *next += 1;
    format!(
        "{DYNAMIC_PREFIX}{}.{}.{next}",
        origin.node(),
        origin.start()
    )
}

impl Core {
    /// The address the next temporary node a producer asks for gets, with
    /// `topic` a temporary topic's: what its permissions are checked on
    /// before it is made.
    pub(super) fn next_temporary_address(&self, topic: bool) -> String {
        let name = unique_name(self.origin, &mut self.next_dynamic.clone());
        match topic {
            true => format!("{TOPIC_PREFIX}{name}"),
            false => name,
        }
    }

    /// Makes the temporary node a producer link's dynamic target asks for;
    /// returns where the link sends, and the node's address.
    pub(super) fn temporary_node(
        &mut self,
        conn: ConnId,
        link: LinkId,
        topic: bool,
        options: Option<&QueueOptions>,
    ) -> (ProducerNode, String) {
        let name = unique_name(self.origin, &mut self.next_dynamic);
        if topic {
            // A topic is its subscriptions, which go with their consumers.
            let address = format!("{TOPIC_PREFIX}{name}");
            return (ProducerNode::Topic(name), address);
        }
        let mut config = QueueConfig {
            durable: false,
            ..self.settings.queue_config(&name)
        };
        if let Some(options) = options {
            options.apply(&mut config);
        }
        self.declare(&name, config);
        self.temporary.queues.insert((conn, link), name.clone());
        (ProducerNode::Queue(name.clone()), name)
    }

    /// A link detached: the temporary queue it made, if any, goes.
    pub(super) fn delete_temporary_node(&mut self, conn: ConnId, link: LinkId) {
        if let Some(queue) = self.temporary.queues.remove(&(conn, link)) {
            info!(queue, "deleting a temporary queue: its link detached");
            self.deleting.insert(queue.clone());
            self.propose(&queue.clone(), Command::Delete { queue }, None, Reply::None);
        }
    }

    /// Deletes the broker-named queues an earlier start of this node made:
    /// their links ended with it.
    pub(super) fn delete_orphaned_temporary_queues(&mut self) {
        let ours = format!("{DYNAMIC_PREFIX}{}.", self.origin.node());
        let current = format!("{ours}{}.", self.origin.start());
        // A range of this node's names, run every housekeeping: not a walk
        // over every queue.
        let orphans: Vec<String> = self
            .groups
            .values()
            .flat_map(|group| group.state.queues().declared_with_prefix(&ours))
            .map(|(queue, _)| queue)
            .filter(|queue| !queue.starts_with(&current))
            .map(str::to_owned)
            .collect();
        self.temporary
            .deleting
            .retain(|queue| orphans.contains(queue));
        for queue in orphans {
            if self.temporary.deleting.insert(queue.clone()) {
                info!(queue, "deleting a temporary queue an earlier start made");
                self.propose(&queue.clone(), Command::Delete { queue }, None, Reply::None);
            }
        }
    }
}
