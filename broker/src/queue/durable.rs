//! Which commands the broker must log, and how to detach a consumer so that
//! the log still replays exactly.

use super::single::Admission;
use super::{Command, ConsumerId, Outcome, Queues};

impl Command {
    /// True if the command may change durable state, so the broker must log
    /// it (with its `now_ms`) before applying it. Ask before applying: the
    /// answer depends on the state the command meets.
    ///
    /// - `Declare`: a durable queue that does not exist yet.
    /// - `Delete`: a durable queue.
    /// - `Enqueue`: a durable message to a durable queue that will accept
    ///   it.
    /// - `Settle`: a persistent message, unless the outcome is `released`
    ///   or a `modified` that neither fails the delivery nor annotates.
    /// - `Expire`: whenever a persistent message has an expiry, since the
    ///   answer cannot see `now_ms`; replaying an `Expire` that expired
    ///   nothing durable changes nothing.
    /// - `Attach`, `Credit`, `Detach`: never; consumers are volatile.
    pub fn is_durable(&self, queues: &Queues) -> bool {
        match self {
            Command::Declare { queue, config } => config.durable && queues.queue(queue).is_none(),
            Command::Delete { queue } => queues.queue(queue).is_some_and(|q| q.config.durable),
            Command::Enqueue {
                queue,
                seq,
                message,
            } => {
                message.durable
                    && *seq > queues.last_seq()
                    && queues.queue(queue).is_some_and(|q| {
                        let size = message.body.len() as u64;
                        q.config.durable && q.can_admit(size, true, Admission::Publish)
                    })
            }
            Command::Settle {
                queue,
                seq,
                outcome,
            } => {
                let persistent = queues
                    .queue(queue)
                    .and_then(|q| q.message(*seq))
                    .is_some_and(|m| m.persistent);
                persistent && changes_durable_state(outcome)
            }
            Command::Expire => queues.all_queues().any(|q| q.persistent_expires()),
            Command::Attach { .. } | Command::Credit { .. } | Command::Detach { .. } => false,
        }
    }
}

/// True if settling a persistent message this way changes it or removes it.
fn changes_durable_state(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Accepted | Outcome::Rejected => true,
        Outcome::Released => false,
        Outcome::Modified {
            delivery_failed,
            annotations,
            ..
        } => *delivery_failed || !annotations.is_empty(),
    }
}

impl Queues {
    /// The commands that detach `consumer`, to apply in order (logging
    /// those that are durable): take its credit, fail each delivery it
    /// holds (a `modified` settle with `delivery_failed`, which counts the
    /// failure and dead-letters at the delivery limit), then forget it.
    ///
    /// [`Command::Detach`] alone puts what the consumer holds back
    /// uncounted, because a volatile command may not change durable state:
    /// a count it added would be missing on replay. The settles here carry
    /// the count through the log instead. Zeroing the credit first keeps the
    /// failed messages from being delivered straight back to the consumer
    /// being detached.
    pub fn detach_commands(&self, consumer: ConsumerId) -> Vec<Command> {
        let Some((queue, state)) = self.consumer(consumer) else {
            return vec![Command::Detach { consumer }];
        };
        let unsettled = state.unsettled().into_iter().flatten();
        let fail = |&seq| Command::Settle {
            queue: queue.name.clone(),
            seq,
            outcome: Outcome::Modified {
                delivery_failed: true,
                undeliverable_here: false,
                annotations: Vec::new(),
            },
        };
        let take_credit = Command::Credit {
            consumer,
            credit: 0,
            drain: false,
        };
        std::iter::once(take_credit)
            .chain(unsettled.map(fail))
            .chain(std::iter::once(Command::Detach { consumer }))
            .collect()
    }
}
