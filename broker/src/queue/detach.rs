//! Detaching a consumer: what it holds returns to its queue as failed
//! deliveries.

use super::{Command, ConsumerId, Outcome, Queues};

impl Queues {
    /// The commands that detach `consumer`, to apply in order: take its
    /// credit, fail each delivery it holds (a `modified` settle with
    /// `delivery_failed`, which counts the failure and dead-letters at the
    /// delivery limit), then forget it. A node's group applies a logged
    /// [`Command::Detach`] as these (`node::state`), since what the
    /// consumer holds is known only when it is applied.
    ///
    /// [`Command::Detach`] alone puts what the consumer holds back
    /// uncounted. Zeroing the credit first keeps the failed messages from
    /// being delivered straight back to the consumer being detached.
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
