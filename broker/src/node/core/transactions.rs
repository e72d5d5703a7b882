//! Local transactions (AMQP 1.0 part 4): what a transaction does is kept
//! here, in memory, until its discharge; a commit proposes all of it as
//! one [`Command::Transaction`], one entry of one group, which applies
//! whole or not at all; a rollback, or the connection's end, drops it.
//!
//! A transaction's settles take effect when it commits. Until then their
//! messages stay with the consumer that received them; a rollback (or a
//! commit the group refuses) gives them back to their queues as failed
//! deliveries, to be redelivered, as JMS expects of a rolled-back session.
//!
//! A commit is atomic within one group. A transaction whose queues live in
//! several groups of a cluster is rolled back at its discharge, with an
//! error saying so, rather than committed in parts.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tracing::{debug, info};

use super::{Core, Reply, Step};
use crate::amqp::engine::{DeliveryId, LinkId};
use crate::amqp::types::{
    Accepted, ControlMessage, Declared, DeliveryState, Error, Rejected, condition,
};
use crate::node::address::destinations;
use crate::node::clients::{rollback_error, transaction_refusal};
use crate::node::{ConnId, Refusal, TOPIC_PREFIX, ToConnection};
use crate::permissions::Operation;
use crate::queue::{Command, ConsumerId, Guarded, Outcome, Seq, TransactionRefusal};

/// The most commands (publishes to a queue, settles) one transaction may
/// hold: past it, the transaction can only roll back.
const TRANSACTION_COMMANDS_MAX: usize = 4096;

/// The most message bytes one transaction may publish: its commit is one
/// entry, which must fit in one replication frame with room to spare.
const TRANSACTION_BYTES_MAX: usize = 8 << 20;

/// The most transactions one connection may have open: each holds what it
/// publishes in memory until its discharge.
const TRANSACTIONS_PER_CONNECTION_MAX: usize = 16;

/// An open transaction.
#[derive(Debug)]
pub(super) struct Transaction {
    /// The connection that declared it: only its links may use it.
    conn: ConnId,
    /// The coordinator link that declared it: it ends with the link.
    link: LinkId,
    /// What it does at commit, in order.
    work: Vec<Guarded>,
    /// The messages its consumers acquired in it: they go back to their
    /// queues if it does not commit.
    acquired: Vec<Unsettle>,
    /// Message bytes published in it.
    bytes: usize,
    /// It outgrew its limits: it can only roll back.
    full: bool,
}

/// Why a transaction did not take a publish or a settle.
#[derive(Debug, Clone, Copy)]
enum TransactionError {
    /// No such transaction on the connection.
    Unknown,
    /// It is past its limits.
    Full,
}

impl TransactionError {
    fn condition(self) -> &'static str {
        match self {
            TransactionError::Unknown => condition::TRANSACTION_UNKNOWN_ID,
            TransactionError::Full => condition::RESOURCE_LIMIT_EXCEEDED,
        }
    }

    fn description(self) -> String {
        match self {
            TransactionError::Unknown => "no such transaction on this connection".into(),
            TransactionError::Full => format!(
                "a transaction holds at most {TRANSACTION_COMMANDS_MAX} publishes and settles \
                 and {TRANSACTION_BYTES_MAX} message bytes: this one can only roll back"
            ),
        }
    }

    fn error(self) -> Error {
        Error::new(self.condition(), self.description())
    }
}

/// A message a transaction settled or acquired, to give back if it does
/// not commit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Unsettle {
    consumer: ConsumerId,
    queue: String,
    seq: Seq,
}

/// The open transactions of the node's connections.
#[derive(Debug, Default)]
pub(super) struct Transactions {
    next: u64,
    open: BTreeMap<u64, Transaction>,
}

impl Transactions {
    /// How many transactions `conn` has open.
    fn open_on(&self, conn: ConnId) -> usize {
        self.open.values().filter(|txn| txn.conn == conn).count()
    }

    /// The transaction `txn_id` names, if `conn` declared it.
    fn get_mut(&mut self, conn: ConnId, txn_id: &[u8]) -> Option<&mut Transaction> {
        let id = u64::from_be_bytes(txn_id.try_into().ok()?);
        self.open.get_mut(&id).filter(|txn| txn.conn == conn)
    }

    /// Takes out the transaction `txn_id` names, if `conn` declared it.
    fn take(&mut self, conn: ConnId, txn_id: &[u8]) -> Option<Transaction> {
        self.get_mut(conn, txn_id)?;
        let id = u64::from_be_bytes(txn_id.try_into().ok()?);
        self.open.remove(&id)
    }
}

impl Transaction {
    /// Makes room for a command or an acquisition of `bytes` message
    /// bytes, unless the transaction is full, which dooms it.
    fn reserve(&mut self, bytes: usize) -> Result<(), TransactionError> {
        if self.full
            || self.work.len() + self.acquired.len() >= TRANSACTION_COMMANDS_MAX
            || self.bytes.saturating_add(bytes) > TRANSACTION_BYTES_MAX
        {
            self.full = true;
            return Err(TransactionError::Full);
        }
        self.bytes += bytes;
        Ok(())
    }

    /// Adds a command, unless the transaction is full.
    fn push(&mut self, guarded: Guarded, bytes: usize) -> Result<(), TransactionError> {
        self.reserve(bytes)?;
        self.work.push(guarded);
        Ok(())
    }

    /// What to give back if it does not commit: the messages it settled
    /// and those acquired in it, each once.
    fn unsettles(&self) -> Vec<Unsettle> {
        let settled = self
            .work
            .iter()
            .filter_map(|guarded| match &guarded.command {
                Command::Settle { queue, seq, .. } => Some(Unsettle {
                    consumer: guarded.guard?,
                    queue: queue.clone(),
                    seq: *seq,
                }),
                _ => None,
            });
        let all: BTreeSet<Unsettle> = settled.chain(self.acquired.iter().cloned()).collect();
        all.into_iter().collect()
    }
}

impl Core {
    /// A `declare` or `discharge` on a coordinator link.
    pub(super) fn coordinate(
        &mut self,
        conn: ConnId,
        delivery: DeliveryId,
        control: ControlMessage,
    ) {
        let state = match control {
            ControlMessage::Declare(declare) if declare.global_id.is_some() => {
                rejected(Error::new(
                    condition::NOT_IMPLEMENTED,
                    "distributed transactions are not supported",
                ))
            }
            ControlMessage::Declare(_)
                if self.transactions.open_on(conn) >= TRANSACTIONS_PER_CONNECTION_MAX =>
            {
                rejected(Error::new(
                    condition::RESOURCE_LIMIT_EXCEEDED,
                    format!(
                        "a connection may have at most {TRANSACTIONS_PER_CONNECTION_MAX} \
                         transactions open"
                    ),
                ))
            }
            ControlMessage::Declare(_) => {
                let id = self.transactions.next;
                self.transactions.next += 1;
                let txn = Transaction {
                    conn,
                    link: delivery.link,
                    work: Vec::new(),
                    acquired: Vec::new(),
                    bytes: 0,
                    full: false,
                };
                self.transactions.open.insert(id, txn);
                debug!(conn, txn = id, "transaction declared");
                let txn_id = Bytes::copy_from_slice(&id.to_be_bytes());
                DeliveryState::Declared(Declared { txn_id })
            }
            ControlMessage::Discharge(discharge) => {
                let Some(txn) = self.transactions.take(conn, &discharge.txn_id) else {
                    let error = TransactionError::Unknown.error();
                    return self.answer(conn, delivery, rejected(error));
                };
                if discharge.fail {
                    self.roll_back(txn.unsettles());
                    DeliveryState::Accepted(Accepted)
                } else {
                    return self.commit(conn, delivery, txn);
                }
            }
        };
        self.answer(conn, delivery, state);
    }

    fn answer(&mut self, conn: ConnId, delivery: DeliveryId, state: DeliveryState) {
        self.clients
            .tell(conn, ToConnection::Outcome { delivery, state });
    }

    /// Proposes a transaction's work as one command, to the one group its
    /// queues live in; or rolls it back, saying why it cannot commit.
    fn commit(&mut self, conn: ConnId, delivery: DeliveryId, txn: Transaction) {
        let unsettles = txn.unsettles();
        if let Err(error) = self.committable(&txn) {
            info!(
                conn,
                reason = error.description,
                "a transaction rolled back at commit"
            );
            self.roll_back(unsettles);
            return self.answer(
                conn,
                delivery,
                DeliveryState::Rejected(Rejected { error: Some(error) }),
            );
        }
        let Some(queue) = txn
            .work
            .first()
            .map(|guarded| work_queue(&guarded.command).to_owned())
        else {
            return self.answer(conn, delivery, DeliveryState::Accepted(Accepted));
        };
        let mut work = txn.work;
        if self.step == Step::Local {
            // Logged unguarded, like any local settle (see `committable`).
            work.iter_mut().for_each(|guarded| guarded.guard = None);
        }
        let publish = self
            .clients
            .start_publish(conn, delivery, false, 1, None, 0);
        // PLANTED BUG (`txn-partial-commit`): the first half commits on its
        // own; the second, with the discharge's answer, is proposed only
        // once the first is applied, so a crash between them applies half.
        if self.settings.config.plants.txn_partial_commit() && work.len() >= 2 {
            let rest = work.split_off(work.len() / 2);
            let reply = Reply::PlantedRest {
                queue: queue.clone(),
                rest,
                publish,
                unsettles,
            };
            return self.propose(&queue, Command::Transaction { work }, None, reply);
        }
        let command = Command::Transaction { work };
        self.propose(
            &queue,
            command,
            None,
            Reply::Discharge { publish, unsettles },
        );
    }

    /// Why `txn` cannot commit, if it cannot.
    fn committable(&self, txn: &Transaction) -> Result<(), Error> {
        if txn.full {
            return Err(rollback_error(&TransactionError::Full.description()));
        }
        let groups: BTreeSet<u32> = txn
            .work
            .iter()
            .map(|guarded| self.placement.group_of(work_queue(&guarded.command)))
            .collect();
        if groups.len() > 1 {
            return Err(rollback_error(&format!(
                "its queues live in {} replica groups ({groups:?}), and a transaction commits \
                 atomically within one group",
                groups.len()
            )));
        }
        let enqueues = |guarded: &Guarded| matches!(guarded.command, Command::Enqueue { .. });
        if txn.work.iter().any(enqueues) && !groups.iter().all(|&id| self.takes_messages(id)) {
            return Err(rollback_error(super::NOT_DURABLE));
        }
        // Over Raft each settle is guarded, and the group refuses the
        // transaction if its consumer no longer holds the message. The
        // local step logs settles unguarded (a replay has nobody holding
        // anything), so it checks here, where the order is the log's.
        if self.step == Step::Raft {
            return Ok(());
        }
        let gone = |consumer: ConsumerId| {
            self.clients.consumer(consumer).is_none() || self.detaching.contains(&consumer)
        };
        for guarded in &txn.work {
            if let Command::Settle { queue, seq, .. } = &guarded.command
                && guarded.guard.is_some_and(gone)
            {
                let (queue, seq) = (queue.clone(), *seq);
                return Err(transaction_refusal(&TransactionRefusal::NotHeld {
                    queue,
                    seq,
                }));
            }
        }
        Ok(())
    }

    /// Gives the messages a transaction settled back to their queues, as
    /// failed deliveries, if their consumers still hold them.
    fn roll_back(&mut self, unsettles: Vec<Unsettle>) {
        for Unsettle {
            consumer,
            queue,
            seq,
        } in unsettles
        {
            if self.clients.consumer(consumer).is_none() {
                // Detached: what it held went back already.
                continue;
            }
            let outcome = Outcome::Modified {
                delivery_failed: true,
                undeliverable_here: false,
                annotations: Vec::new(),
            };
            let command = Command::Settle {
                queue: queue.clone(),
                seq,
                outcome,
            };
            let guard = (self.step == Step::Raft).then_some(consumer);
            self.propose(&queue, command, guard, Reply::None);
        }
    }

    /// A discharge's transaction was applied, or refused by its group (or,
    /// on a full disk, by the log): answer it, and give back what it
    /// settled if it did not commit.
    pub(super) fn on_discharged(&mut self, publish: u64, unsettles: Vec<Unsettle>) {
        if self.clients.is_rejected(publish) {
            self.roll_back(unsettles);
        }
        self.clients.enqueue_done(publish);
        self.clients.finish_publish_if_done(publish);
    }

    /// A message published in transaction `txn_id`: routed now, enqueued
    /// when the transaction commits.
    pub(super) fn publish_in_transaction(
        &mut self,
        conn: ConnId,
        delivery: DeliveryId,
        message: Bytes,
        settled: bool,
        txn_id: Bytes,
    ) {
        let bytes = message.len() as u64;
        // Counted before its publish, which is answered at once.
        self.clients.producer_sent(conn, delivery.link, bytes);
        // The outcome names the transaction, if there is one to name.
        let known = self.transactions.get_mut(conn, &txn_id).is_some();
        let result = self.transactional_enqueues(conn, delivery, &message, &txn_id);
        let publish = self
            .clients
            .start_publish(conn, delivery, settled, 0, result.err(), bytes);
        if known {
            self.clients.in_transaction(publish, txn_id);
        }
        self.finish_publish_if_done(publish);
        self.top_up_credit(conn, delivery.link);
    }

    fn transactional_enqueues(
        &mut self,
        conn: ConnId,
        delivery: DeliveryId,
        message: &Bytes,
        txn_id: &[u8],
    ) -> Result<(), Error> {
        let node = self
            .clients
            .producer_node(conn, delivery.link)
            .ok_or_else(|| Error::new(condition::ILLEGAL_STATE, "the link is gone"))?;
        let topic_address = |topic: &str| vec![format!("{TOPIC_PREFIX}{topic}")];
        let may_relay = |address: &str| self.access.check_message(conn, address, Operation::Send);
        let (queues, inspected) = destinations(node, message, |_| true, topic_address, may_relay)?;
        let enqueues: Vec<Guarded> = queues
            .into_iter()
            .map(|queue| {
                let persist_always = self.settings.persist_always(&queue);
                let message =
                    inspected.new_message(message.clone(), persist_always, self.now.unix_ms);
                Guarded {
                    guard: None,
                    command: Command::Enqueue {
                        queue,
                        seq: 0,
                        message,
                    },
                }
            })
            .collect();
        let txn = self
            .transactions
            .get_mut(conn, txn_id)
            .ok_or(TransactionError::Unknown.error())?;
        for enqueue in enqueues {
            txn.push(enqueue, message.len())
                .map_err(TransactionError::error)?;
        }
        Ok(())
    }

    /// A consumer's outcome in transaction `txn_id`: it takes effect at
    /// commit. A settle the transaction cannot take (it is unknown, or
    /// full) ends the consumer's link, which gives back what it holds.
    pub(super) fn settle_in_transaction(
        &mut self,
        consumer: ConsumerId,
        command: Command,
        txn_id: &[u8],
    ) {
        let Some(info) = self.clients.consumer(consumer) else {
            return;
        };
        // Guarded here whatever the step: the transaction checks its
        // consumers, and gives back what they hold, by the guard.
        let guarded = Guarded {
            guard: Some(consumer),
            command,
        };
        let pushed = match self.transactions.get_mut(info.conn, txn_id) {
            Some(txn) => txn.push(guarded, 0),
            None => Err(TransactionError::Unknown),
        };
        if let Err(error) = pushed {
            self.close_in_transaction(consumer, error);
        }
    }

    /// Message `seq` of `queue` was sent to `consumer`, whose link acquires
    /// in transaction `txn_id`: it goes back if that does not commit. An
    /// acquisition the transaction cannot take (it is unknown, or full)
    /// ends the consumer's link, which gives back what it holds.
    pub(super) fn acquire_in_transaction(
        &mut self,
        consumer: ConsumerId,
        queue: String,
        seq: Seq,
        txn_id: &[u8],
    ) {
        let Some(info) = self.clients.consumer(consumer) else {
            return;
        };
        let acquired = match self.transactions.get_mut(info.conn, txn_id) {
            Some(txn) => txn.reserve(0).map(|()| {
                txn.acquired.push(Unsettle {
                    consumer,
                    queue,
                    seq,
                });
            }),
            None => Err(TransactionError::Unknown),
        };
        if let Err(error) = acquired {
            self.close_in_transaction(consumer, error);
        }
    }

    /// Ends a consumer's link for a transactional settle or acquisition
    /// the transaction could not take.
    fn close_in_transaction(&mut self, consumer: ConsumerId, error: TransactionError) {
        let refusal = Refusal {
            condition: error.condition(),
            description: error.description(),
        };
        self.clients.close_consumer(consumer, refusal);
    }

    /// A link detached (`Some`), or the whole connection went (`None`): the
    /// transactions declared on it end uncommitted, as a controller that
    /// went away left them.
    pub(super) fn end_transactions(&mut self, conn: ConnId, link: Option<LinkId>) {
        let ended: Vec<u64> = self
            .transactions
            .open
            .iter()
            .filter(|(_, txn)| txn.conn == conn && link.is_none_or(|link| txn.link == link))
            .map(|(&id, _)| id)
            .collect();
        for id in ended {
            if let Some(txn) = self.transactions.open.remove(&id) {
                debug!(
                    conn,
                    txn = id,
                    "transaction rolled back: its controller detached"
                );
                self.roll_back(txn.unsettles());
            }
        }
    }
}

/// The queue a transaction's command concerns.
fn work_queue(command: &Command) -> &str {
    match command {
        Command::Enqueue { queue, .. } | Command::Settle { queue, .. } => queue,
        _ => "",
    }
}

fn rejected(error: Error) -> DeliveryState {
    DeliveryState::Rejected(Rejected { error: Some(error) })
}
