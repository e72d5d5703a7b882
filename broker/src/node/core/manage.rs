//! Operators' commands (the management API's write side): purge, move and
//! delete queues, and close connections. Written once, here, for a single
//! node and a cluster node alike: a queue's command goes to its group like
//! any client's, and is answered once that group has applied it (committed
//! and applied, in a cluster), with what it did there.
//!
//! A purge or a move acts on the messages that are ready when it is
//! applied, which every member of a group agrees on. The local step does
//! not log consumers, so a replay of its log would find ready what a
//! consumer held when the command was applied: the command lists those
//! messages (`except`), and is made only once everything before it is
//! applied, so that what consumers hold cannot change before it is applied
//! in turn (no credit overtakes it, see [`Core::credit`]). A move is one
//! command of one group: after a crash it has happened whole or not at all.

use super::{Core, Held, Reply, Step};
use crate::amqp::types::condition;
use crate::node::{ConnId, Manage, ManageError, Managed, Refusal, ToConnection};
use crate::queue::{Command, Effect, Seqs};
use crate::raft::wal::GroupId;

impl Core {
    /// Operator's command `id`, at `now`: answered through
    /// [`Core::poll_answer`].
    pub(in crate::node) fn handle_manage(
        &mut self,
        now: crate::node::Now,
        id: u64,
        command: Manage,
    ) {
        self.now = now;
        self.manage(id, command);
        self.check_invariants_if_on();
    }

    /// The next answer to an operator's command.
    pub(in crate::node) fn poll_answer(&mut self) -> Option<(u64, Result<Managed, ManageError>)> {
        self.answers.pop_front()
    }

    fn manage(&mut self, id: u64, command: Manage) {
        match command {
            Manage::Close { conn, operator } => self.close_connection(id, conn, &operator),
            Manage::Delete { queue } => {
                if !self.exists(&queue) {
                    return self.answer_manage(id, Err(ManageError::NotFound("queue")));
                }
                // A subscription looked up meanwhile is not found.
                self.deleting.insert(queue.clone());
                self.propose(
                    &queue.clone(),
                    Command::Delete { queue },
                    None,
                    Reply::Manage(id),
                );
            }
            Manage::Purge { queue } => {
                if !self.exists(&queue) {
                    return self.answer_manage(id, Err(ManageError::NotFound("queue")));
                }
                let group = self.placement.group_of(&queue);
                let except = Seqs::default();
                self.propose_manage(group, id, Command::Purge { queue, except });
            }
            Manage::Move { from, to, max } => {
                if !self.exists(&from) || !self.exists(&to) {
                    return self.answer_manage(id, Err(ManageError::NotFound("queue")));
                }
                if from == to {
                    return self.answer_manage(id, Err(ManageError::SameQueue));
                }
                let (from_group, to_group) =
                    (self.placement.group_of(&from), self.placement.group_of(&to));
                if from_group != to_group {
                    let error = ManageError::DifferentGroups {
                        from_group,
                        to_group,
                    };
                    return self.answer_manage(id, Err(error));
                }
                let except = Seqs::default();
                let command = Command::Move {
                    from,
                    to,
                    max,
                    except,
                };
                self.propose_manage(from_group, id, command);
            }
        }
    }

    /// Proposes a purge or a move to group `group`: over Raft at once, the
    /// group's members agreeing on what is held; over the local step once
    /// everything before it is applied, listing what consumers hold then.
    fn propose_manage(&mut self, group: GroupId, id: u64, command: Command) {
        match self.step {
            Step::Raft => self.propose_to(group, command, None, Reply::Manage(id)),
            Step::Local => {
                let command = Box::new(command);
                self.hold_back(group, Held::Manage { id, command });
            }
        }
    }

    /// Proposes a held-back purge or move, its turn come: with the messages
    /// consumers hold now as its exceptions.
    pub(super) fn carry_out_manage(&mut self, group: GroupId, id: u64, mut command: Command) {
        let Some(state) = self.groups.get(&group).map(|g| &g.state) else {
            return;
        };
        match &mut command {
            Command::Purge { queue, except }
            | Command::Move {
                from: queue,
                except,
                ..
            } => {
                *except = state.queues().held_seqs(queue);
            }
            _ => {}
        }
        self.push_to_outbox(group, command, None, Reply::Manage(id));
    }

    /// Closes connection `conn` at an operator's word.
    fn close_connection(&mut self, id: u64, conn: ConnId, operator: &str) {
        tracing::info!(
            conn,
            operator,
            "closing a connection at an operator's request"
        );
        let refusal = Refusal {
            condition: condition::CONNECTION_FORCED,
            description: format!("closed by operator {operator:?}"),
        };
        self.clients
            .tell(conn, ToConnection::CloseConnection { refusal });
        self.answer_manage(id, Ok(Managed::Closed));
    }

    /// Answers operator's command `id`.
    pub(super) fn answer_manage(&mut self, id: u64, answer: Result<Managed, ManageError>) {
        self.answers.push_back((id, answer));
    }
}

/// What an operator's command did, from one of its effects.
pub(super) fn managed(effect: &Effect) -> Option<Managed> {
    match effect {
        Effect::Purged { count, .. } => Some(Managed::Purged(*count)),
        Effect::Moved { count, .. } => Some(Managed::Moved(*count)),
        Effect::Deleted { .. } => Some(Managed::Deleted),
        _ => None,
    }
}
