//! A durable or shared subscription attached again under its name with
//! another topic or another selector is a new subscription: the old one,
//! with what it holds, goes (as JMS defines durable subscriptions, and
//! Qpid JMS expects of the broker). While consumers are attached to the
//! old one it stays, and the new attach is refused.

use tracing::info;

use super::{Core, Reply};
use crate::amqp::types::condition;
use crate::node::Refusal;
use crate::node::address::{is_subscription, subscription_of};
use crate::queue::{Command, QueueConfig};

impl Core {
    /// Before subscription queue `queue` is declared with `config`: deletes
    /// the subscriptions of the same name that differ from it (another
    /// topic, another filter). A non-durable, unshared subscription has a
    /// name of its own, so only durable and shared ones ever meet here.
    pub(super) fn replace_changed_subscription(
        &mut self,
        queue: &str,
        config: &QueueConfig,
    ) -> Result<(), Refusal> {
        let Some(id) = subscription_of(queue) else {
            return Ok(());
        };
        let changed: Vec<(String, u64)> = self
            .groups
            .values()
            .flat_map(|group| {
                let queues = group.state.queues();
                queues.declared().filter_map(move |(name, declared)| {
                    let differs = name != queue || declared.filter != config.filter;
                    let consumers = queues.info(name).map_or(0, |info| info.consumers);
                    (is_subscription(name, id) && differs).then(|| (name.to_owned(), consumers))
                })
            })
            .filter(|(name, _)| !self.deleting.contains(name))
            .collect();
        if let Some((name, _)) = changed.iter().find(|(_, consumers)| *consumers > 0) {
            return Err(Refusal {
                condition: condition::RESOURCE_LOCKED,
                description: format!(
                    "subscription {id:?} is in use ({name:?}): it cannot change its topic \
                     or selector while consumers are attached"
                ),
            });
        }
        for (name, _) in changed {
            info!(
                queue = name,
                "deleting a subscription: attached again with another topic or selector"
            );
            self.deleting.insert(name.clone());
            self.propose(
                &name.clone(),
                Command::Delete { queue: name },
                None,
                Reply::None,
            );
        }
        Ok(())
    }
}
