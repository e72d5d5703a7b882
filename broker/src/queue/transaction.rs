//! Committing a transaction: all of its commands, or none of them.
//!
//! A transaction is one command, so it is one log record (one Raft entry)
//! and replays whole. Before applying anything, the machine checks that
//! every command would take effect; the check reads the state as it is
//! before the transaction, so a settle in it does not make room for an
//! enqueue in it.

use std::collections::BTreeMap;

use super::{Command, Effect, Guarded, Queues, TransactionRefusal};

impl Queues {
    /// Applies `work`, in order, if all of it can apply; otherwise nothing,
    /// and says why.
    pub(super) fn commit(&mut self, now_ms: u64, work: Vec<Guarded>, effects: &mut Vec<Effect>) {
        if let Err(reason) = self.check_commit(&work) {
            return effects.push(Effect::TransactionRefused { reason });
        }
        for Guarded { command, .. } in work {
            debug_assert!(
                matches!(command, Command::Enqueue { .. } | Command::Settle { .. }),
                "{command:?} in a transaction"
            );
            self.apply(now_ms, command, effects);
        }
    }

    fn check_commit(&self, work: &[Guarded]) -> Result<(), TransactionRefusal> {
        let mut published: BTreeMap<&str, Vec<(u64, bool)>> = BTreeMap::new();
        for Guarded { guard, command } in work {
            match command {
                Command::Enqueue { queue, message, .. } => {
                    let target =
                        self.queue(queue)
                            .ok_or_else(|| TransactionRefusal::QueueNotFound {
                                queue: queue.clone(),
                            })?;
                    let persistent = message.durable && target.config.durable;
                    let size = message.body.len() as u64;
                    published.entry(queue).or_default().push((size, persistent));
                }
                Command::Settle { queue, seq, .. } => {
                    if let Some(consumer) = guard
                        && self.holder(queue, *seq) != Some(*consumer)
                    {
                        return Err(TransactionRefusal::NotHeld {
                            queue: queue.clone(),
                            seq: *seq,
                        });
                    }
                }
                _ => {}
            }
        }
        for (queue, messages) in published {
            if !self.queue(queue).is_some_and(|q| q.admits_all(&messages)) {
                return Err(TransactionRefusal::QueueFull {
                    queue: queue.to_owned(),
                });
            }
        }
        Ok(())
    }
}
