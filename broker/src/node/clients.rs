//! What a node core keeps about its clients' links: connections, consumers,
//! producers with their windows, and publishes waiting for their outcome.
//! The single-node core and the clustered one share it; they differ in how
//! a command becomes durable, not in how links are served.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use tracing::debug;

use super::NodeSettings;
use super::address::{
    ConsumerNode, ProducerNode, Refusal, TOPIC_PREFIX, subscription_id, subscription_queue,
    topic_of_subscription,
};
use super::message::render;
use super::{ConnId, ToConnection};
use crate::amqp::engine::{DeliveryId, LinkId, SessionId};
use crate::amqp::types::{Accepted, DeliveryState, Error, Rejected, TransactionalState, condition};
use crate::queue::{
    ConsumerId, Delivery, Effect, MessageFilter, QueueConfig, RejectReason, TransactionRefusal,
};

/// A publish waiting for every queue it goes to.
struct Publish {
    conn: ConnId,
    delivery: DeliveryId,
    settled: bool,
    /// Queues whose enqueue is not applied yet.
    remaining: usize,
    /// Why a queue refused it, if one did.
    rejection: Option<Error>,
    /// The transaction it was published in: its outcome is provisional.
    txn: Option<Bytes>,
    /// The message's size.
    bytes: u64,
}

/// A consumer, as the node that serves its link knows it.
#[derive(Debug, Clone)]
pub(super) struct Consumer {
    pub conn: ConnId,
    pub link: LinkId,
    pub queue: String,
    /// Its queue is deleted when its link closes (not when it only
    /// detaches): a durable topic subscription's. Queues that go with
    /// their consumer's detach are the state machine's to delete
    /// (`QueueConfig::auto_delete`).
    pub deleted_on_close: bool,
}

/// Where a consumer's link reads, as its terminus names it.
pub(super) struct ConsumerTarget {
    /// The queue it consumes.
    pub queue: String,
    /// The address the broker announces for it.
    pub address: String,
    /// It browses (distribution mode `copy`).
    pub browse: bool,
    /// Its queue is deleted when its link closes (see
    /// [`Consumer::deleted_on_close`]).
    pub deleted_on_close: bool,
    /// The configuration to declare its queue with, if the broker makes
    /// the queue for it (a subscription, a dynamic node); `None` for an
    /// anycast queue, which exists or is auto-created as configured.
    pub declare: Option<QueueConfig>,
    /// The consumer's filter. A subscription's is its queue's instead
    /// (in `declare`): the topic's other messages are never copied there.
    pub filter: Option<Box<MessageFilter>>,
}

impl ConsumerTarget {
    /// The target of `node` for a link of `container_id` with `filter`;
    /// `unique` names a queue no other link, node or start uses, and
    /// `existing` finds the subscription queue whose name ends in a
    /// subscription id.
    pub fn of(
        node: ConsumerNode,
        filter: Option<Box<MessageFilter>>,
        container_id: &str,
        settings: &NodeSettings,
        unique: impl FnOnce() -> String,
        existing: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Self, Refusal> {
        Ok(match node {
            ConsumerNode::Queue { name, browse } => Self {
                queue: name.clone(),
                address: name,
                browse,
                deleted_on_close: false,
                declare: None,
                filter,
            },
            ConsumerNode::Topic {
                topic,
                subscription,
            } => {
                let id = subscription_id(&subscription, container_id, unique);
                let queue = subscription_queue(&topic, &id);
                let durable = subscription.durable;
                let config = QueueConfig {
                    durable,
                    auto_delete: !durable,
                    filter,
                    ..settings.queue_config(&queue)
                };
                Self {
                    queue,
                    address: format!("{TOPIC_PREFIX}{topic}"),
                    browse: false,
                    deleted_on_close: durable,
                    declare: Some(config),
                    filter: None,
                }
            }
            ConsumerNode::Dynamic => {
                let queue = unique();
                let config = QueueConfig {
                    durable: false,
                    auto_delete: true,
                    ..settings.queue_config(&queue)
                };
                Self {
                    address: queue.clone(),
                    queue,
                    browse: false,
                    deleted_on_close: false,
                    declare: Some(config),
                    filter,
                }
            }
            ConsumerNode::Lookup(subscription) => {
                let id = subscription_id(&subscription, container_id, unique);
                let queue =
                    existing(&id).ok_or_else(|| subscription_not_found(&subscription.name))?;
                let topic = topic_of_subscription(&queue).unwrap_or_default();
                Self {
                    address: format!("{TOPIC_PREFIX}{topic}"),
                    queue,
                    browse: false,
                    deleted_on_close: true,
                    declare: None,
                    filter,
                }
            }
        })
    }
}

/// The refusal of a lookup of the durable subscription `name` that finds
/// none.
pub(super) fn subscription_not_found(name: &str) -> Refusal {
    Refusal {
        condition: condition::NOT_FOUND,
        description: format!("no durable subscription named {name:?}"),
    }
}

/// A producer's link and its window.
struct Producer {
    node: ProducerNode,
    /// Credit granted and not yet used, as far as the node knows.
    remaining: u32,
    /// Messages received and not yet answered (accepted, or rejected):
    /// they count against the window, so that what a producer has in
    /// flight, and with it the time each message waits, stays bounded.
    unanswered: u32,
    /// Their bytes.
    unanswered_bytes: u64,
    /// What one of its messages is expected to take: it rises at once to a
    /// larger message and falls back slowly. `None` before its first.
    message_bytes: Option<u64>,
}

/// What a producer's first window is assumed to bring, before its first
/// message tells its size: one message of the largest size the broker
/// accepts (the engine's max-message-size).
const FIRST_WINDOW_BYTES: u64 = 64 << 20;

impl Producer {
    /// What one of its messages is expected to take, `assumed` before its
    /// first.
    fn expected_bytes(&self, assumed: u64) -> u64 {
        self.message_bytes.unwrap_or(assumed)
    }

    /// The memory its messages may take before they are answered: those
    /// received, and those its credit lets it send.
    fn exposure_bytes(&self, assumed: u64) -> u64 {
        let granted = self.expected_bytes(assumed) * u64::from(self.remaining);
        self.unanswered_bytes.saturating_add(granted)
    }
}

/// Every link the node serves.
pub(super) struct Clients {
    /// Each producer's window (`limits.producer_credit`).
    window: u32,
    /// What a message of a producer that has sent none is assumed to take:
    /// its whole window counts as [`FIRST_WINDOW_BYTES`].
    assumed_message_bytes: u64,
    /// What to tell connections, oldest first, until the node's driver
    /// takes it ([`Clients::poll_to_connection`]).
    outbox: VecDeque<(ConnId, ToConnection)>,
    consumers: BTreeMap<ConsumerId, Consumer>,
    consumer_ids: BTreeMap<(ConnId, LinkId), ConsumerId>,
    producers: BTreeMap<(ConnId, LinkId), Producer>,
    /// Producers waiting for room before they get credit.
    blocked: BTreeSet<(ConnId, LinkId)>,
    /// Every producer's [`Producer::exposure_bytes`], summed.
    in_flight_bytes: u64,
    publishes: BTreeMap<u64, Publish>,
    next_publish: u64,
}

impl Clients {
    /// No links; producers get windows of `window` messages.
    pub fn new(window: u32) -> Self {
        Self {
            window,
            assumed_message_bytes: FIRST_WINDOW_BYTES / u64::from(window.max(1)),
            outbox: VecDeque::new(),
            consumers: BTreeMap::new(),
            consumer_ids: BTreeMap::new(),
            producers: BTreeMap::new(),
            blocked: BTreeSet::new(),
            in_flight_bytes: 0,
            publishes: BTreeMap::new(),
            next_publish: 1,
        }
    }

    // ---- connections ------------------------------------------------------

    /// Tells a connection something (once the driver takes it; one that has
    /// gone by then no longer needs to know).
    pub fn tell(&mut self, conn: ConnId, message: ToConnection) {
        self.outbox.push_back((conn, message));
    }

    /// The oldest message for a connection not yet taken.
    pub fn poll_to_connection(&mut self) -> Option<(ConnId, ToConnection)> {
        self.outbox.pop_front()
    }

    /// The links of a connection, consumers and producers.
    pub fn links_of(&self, conn: ConnId) -> Vec<LinkId> {
        // A range of each map: not a walk over every connection's links.
        let first = LinkId {
            session: SessionId(0),
            handle: 0,
        };
        let last = LinkId {
            session: SessionId(u16::MAX),
            handle: u32::MAX,
        };
        let range = (conn, first)..=(conn, last);
        self.consumer_ids
            .range(range.clone())
            .map(|(key, _)| key)
            .chain(self.producers.range(range).map(|(key, _)| key))
            .map(|(_, link)| *link)
            .collect()
    }

    /// Detaches a link with `refusal` as its error.
    pub fn close_link(&mut self, conn: ConnId, link: LinkId, refusal: Refusal) {
        self.tell(conn, ToConnection::CloseLink { link, refusal });
    }

    // ---- consumers --------------------------------------------------------

    /// A consumer this node now serves.
    pub fn add_consumer(&mut self, consumer: ConsumerId, info: Consumer) {
        self.consumer_ids.insert((info.conn, info.link), consumer);
        self.consumers.insert(consumer, info);
    }

    /// The consumer `consumer`, if this node serves it.
    pub fn consumer(&self, consumer: ConsumerId) -> Option<&Consumer> {
        self.consumers.get(&consumer)
    }

    /// Answers a consumer's attach, now that it is applied, with the
    /// address it reads; not if its link went meanwhile (its detach
    /// follows).
    pub fn answer_attach(
        &mut self,
        conn: ConnId,
        link: LinkId,
        consumer: ConsumerId,
        address: String,
    ) {
        if self.consumers.contains_key(&consumer) {
            let result = Ok((consumer, address));
            self.tell(conn, ToConnection::ConsumerAttached { link, result });
        }
    }

    /// Every consumer this node serves.
    pub fn consumers(&self) -> impl Iterator<Item = (ConsumerId, &Consumer)> {
        self.consumers.iter().map(|(&id, info)| (id, info))
    }

    /// The consumer on a link.
    pub fn consumer_on(&self, conn: ConnId, link: LinkId) -> Option<ConsumerId> {
        self.consumer_ids.get(&(conn, link)).copied()
    }

    /// Stops serving `consumer`.
    pub fn remove_consumer(&mut self, consumer: ConsumerId) -> Option<Consumer> {
        let info = self.consumers.remove(&consumer)?;
        self.consumer_ids.remove(&(info.conn, info.link));
        Some(info)
    }

    /// Stops serving `consumer` and detaches its link with `refusal`.
    pub fn close_consumer(&mut self, consumer: ConsumerId, refusal: Refusal) {
        if let Some(info) = self.remove_consumer(consumer) {
            self.close_link(info.conn, info.link, refusal);
        }
    }

    /// Forgets a detached link: its producer, or its consumer, returned.
    pub fn remove_link(&mut self, conn: ConnId, link: LinkId) -> Option<(ConsumerId, Consumer)> {
        self.remove_producer(conn, link);
        self.blocked.remove(&(conn, link));
        let consumer = self.consumer_ids.remove(&(conn, link))?;
        let info = self.consumers.remove(&consumer)?;
        Some((consumer, info))
    }

    // ---- producers and their windows ---------------------------------------

    /// A producer this node now serves; give it credit with
    /// [`Clients::grant_credit`].
    pub fn add_producer(&mut self, conn: ConnId, link: LinkId, node: ProducerNode) {
        let producer = Producer {
            node,
            remaining: 0,
            unanswered: 0,
            unanswered_bytes: 0,
            message_bytes: None,
        };
        self.producers.insert((conn, link), producer);
    }

    fn remove_producer(&mut self, conn: ConnId, link: LinkId) {
        if let Some(producer) = self.producers.remove(&(conn, link)) {
            self.in_flight_bytes -= producer.exposure_bytes(self.assumed_message_bytes);
        }
    }

    /// Changes a producer, keeping [`Clients::in_flight_bytes`] the sum of
    /// their exposures.
    fn update_producer<T>(
        &mut self,
        conn: ConnId,
        link: LinkId,
        change: impl FnOnce(&mut Producer) -> T,
    ) -> Option<T> {
        let assumed = self.assumed_message_bytes;
        let producer = self.producers.get_mut(&(conn, link))?;
        let before = producer.exposure_bytes(assumed);
        let result = change(producer);
        self.in_flight_bytes = self.in_flight_bytes - before + producer.exposure_bytes(assumed);
        Some(result)
    }

    /// The bytes producers may have in flight: received and not yet
    /// answered, or which the credit granted them is expected to bring.
    pub fn in_flight_bytes(&self) -> u64 {
        self.in_flight_bytes
    }

    /// Where a producer sends.
    pub fn producer_node(&self, conn: ConnId, link: LinkId) -> Option<&ProducerNode> {
        self.producers.get(&(conn, link)).map(|p| &p.node)
    }

    /// Counts a message of `bytes` received from a producer, before its
    /// publish starts (its answer may come at once).
    pub fn producer_sent(&mut self, conn: ConnId, link: LinkId, bytes: u64) {
        self.update_producer(conn, link, |producer| {
            producer.remaining = producer.remaining.saturating_sub(1);
            producer.unanswered += 1;
            producer.unanswered_bytes += bytes;
            let expected = producer.message_bytes.unwrap_or(bytes);
            producer.message_bytes = Some(bytes.max(expected - expected / 8 + bytes / 8));
        });
    }

    /// Whether to grant a producer more credit: once half its window is
    /// free, neither granted (unused credit) nor taken (messages not yet
    /// answered).
    pub fn wants_top_up(&self, conn: ConnId, link: LinkId) -> bool {
        self.producers.get(&(conn, link)).is_some_and(|producer| {
            let taken = producer.remaining.saturating_add(producer.unanswered);
            self.window.saturating_sub(taken) >= self.window.div_ceil(2)
        })
    }

    /// Grants a producer the free part of its window, but never more than
    /// `room` (what its destination can take): a full queue stops its
    /// producers rather than rejecting what they send. With `memory_left`
    /// bytes left under the memory watermark, no more than the messages it
    /// is expected to send that fit in what it and the other producers
    /// have in flight leave, but one if it has none in flight. With no
    /// room it is parked until
    /// [`Clients::blocked`] producers are offered credit again.
    ///
    /// A grant never lowers the credit the producer holds: a flow sets
    /// link-credit afresh, and the producer may be using what it holds
    /// already (its transfers in flight are legal, spec §2.6.7). A grant
    /// that would not raise it is not sent.
    pub fn grant_credit(
        &mut self,
        conn: ConnId,
        link: LinkId,
        room: u64,
        memory_left: Option<u64>,
    ) {
        let Some(producer) = self.producers.get(&(conn, link)) else {
            return;
        };
        let assumed = self.assumed_message_bytes;
        let others = self.in_flight_bytes - producer.exposure_bytes(assumed);
        let fits = memory_left.map_or(u64::MAX, |left| {
            let left = left.saturating_sub(producer.unanswered_bytes + others);
            let fits = left / producer.expected_bytes(assumed).max(1);
            // One message in flight is always allowed: estimates alone (a
            // watermark below a first window's share of it, as paging sets
            // in the simulator) must not park a producer for good.
            if producer.unanswered == 0 {
                fits.max(1)
            } else {
                fits
            }
        });
        let free = self.window.saturating_sub(producer.unanswered);
        let credit = room.min(fits).min(u64::from(free)) as u32;
        if credit == 0 {
            self.blocked.insert((conn, link));
            return;
        }
        self.blocked.remove(&(conn, link));
        if credit <= producer.remaining {
            return;
        }
        self.update_producer(conn, link, |producer| producer.remaining = credit);
        self.tell(conn, ToConnection::ProducerCredit { link, credit });
    }

    /// The producers parked for want of room.
    pub fn blocked(&self) -> Vec<(ConnId, LinkId)> {
        self.blocked.iter().copied().collect()
    }

    // ---- publishes --------------------------------------------------------

    /// A publish of `delivery` that waits for `queues` enqueues (0 if it
    /// goes nowhere, or was refused with `rejection`).
    pub fn start_publish(
        &mut self,
        conn: ConnId,
        delivery: DeliveryId,
        settled: bool,
        queues: usize,
        rejection: Option<Error>,
        bytes: u64,
    ) -> u64 {
        let publish = self.next_publish;
        self.next_publish += 1;
        let pending = Publish {
            conn,
            delivery,
            settled,
            remaining: queues,
            rejection,
            txn: None,
            bytes,
        };
        self.publishes.insert(publish, pending);
        publish
    }

    /// Records a queue's refusal of a publish.
    pub fn reject_publish(&mut self, publish: u64, error: Error) {
        if let Some(p) = self.publishes.get_mut(&publish) {
            p.rejection = Some(error);
        }
    }

    /// Marks a publish as made in transaction `txn_id`, which its outcome
    /// names.
    pub fn in_transaction(&mut self, publish: u64, txn_id: Bytes) {
        if let Some(p) = self.publishes.get_mut(&publish) {
            p.txn = Some(txn_id);
        }
    }

    /// True if a queue refused the publish.
    pub fn is_rejected(&self, publish: u64) -> bool {
        self.publishes
            .get(&publish)
            .is_some_and(|p| p.rejection.is_some())
    }

    /// Counts one of a publish's enqueues as done (applied or refused).
    pub fn enqueue_done(&mut self, publish: u64) {
        if let Some(p) = self.publishes.get_mut(&publish) {
            p.remaining -= 1;
        }
    }

    /// Answers the producer once every enqueue of the publish is done, and
    /// returns its link, whose window has a free place now.
    pub fn finish_publish_if_done(&mut self, publish: u64) -> Option<(ConnId, LinkId)> {
        if self.publishes.get(&publish)?.remaining > 0 {
            return None;
        }
        let p = self.publishes.remove(&publish)?;
        let (conn, link) = (p.conn, p.delivery.link);
        match (p.settled, p.rejection) {
            (true, None) => {}
            (true, Some(error)) => debug!(?error, "a settled message was not taken"),
            (false, rejection) => {
                let mut state = match rejection {
                    None => DeliveryState::Accepted(Accepted),
                    Some(error) => DeliveryState::Rejected(Rejected { error: Some(error) }),
                };
                if let Some(txn_id) = p.txn {
                    state = DeliveryState::Transactional(TransactionalState {
                        txn_id,
                        outcome: Some(Box::new(state)),
                    });
                }
                let delivery = p.delivery;
                self.tell(conn, ToConnection::Outcome { delivery, state });
            }
        }
        // After the outcome, so that the producer hears of the answer before
        // of the credit it frees.
        self.update_producer(conn, link, |producer| {
            producer.unanswered = producer.unanswered.saturating_sub(1);
            producer.unanswered_bytes = producer.unanswered_bytes.saturating_sub(p.bytes);
        });
        Some((conn, link))
    }

    /// Gives up on a publish whose outcome cannot be known: its link is
    /// detached with `refusal`, so that the client sends it again.
    pub fn abandon_publish(&mut self, publish: u64, refusal: Refusal) {
        let Some(p) = self.publishes.remove(&publish) else {
            return;
        };
        let (conn, link) = (p.conn, p.delivery.link);
        self.remove_producer(conn, link);
        self.blocked.remove(&(conn, link));
        self.close_link(conn, link, refusal);
    }

    // ---- effects ------------------------------------------------------------

    /// Carries out a queue effect that concerns links — a delivery, a
    /// finished drain, a refused enqueue of `publish`, a consumer whose
    /// queue is gone — and hands back any other.
    pub fn act(&mut self, effect: Effect, publish: Option<u64>) -> Option<Effect> {
        match effect {
            Effect::Deliver { consumer, delivery } => {
                if let Some(info) = self.consumers.get(&consumer) {
                    self.tell(info.conn, deliver_message(info.link, consumer, delivery));
                }
            }
            Effect::DrainComplete { consumer } => {
                if let Some(info) = self.consumers.get(&consumer) {
                    self.tell(info.conn, ToConnection::DrainComplete { link: info.link });
                }
            }
            Effect::EnqueueRejected { reason, queue, .. } => {
                if let Some(publish) = publish {
                    self.reject_publish(publish, rejection(reason, &queue));
                }
            }
            Effect::TransactionRefused { reason } => {
                if let Some(publish) = publish {
                    self.reject_publish(publish, transaction_refusal(&reason));
                }
            }
            Effect::ConsumerClosed { consumer, .. } => {
                if let Some(info) = self.consumers.get(&consumer) {
                    let refusal = Refusal {
                        condition: condition::RESOURCE_DELETED,
                        description: format!("queue {:?} is gone", info.queue),
                    };
                    self.close_consumer(consumer, refusal);
                }
            }
            other => return Some(other),
        }
        None
    }
}

/// The message that sends `delivery` to `consumer` on `link`.
fn deliver_message(link: LinkId, consumer: ConsumerId, delivery: Delivery) -> ToConnection {
    let message = render(
        &delivery.body,
        delivery.delivery_count,
        delivery.first_acquirer,
        &delivery.annotations,
    )
    .unwrap_or_else(|_| delivery.body.clone());
    ToConnection::Deliver {
        link,
        consumer,
        queue: delivery.queue,
        seq: delivery.seq,
        message,
        settled: delivery.settled,
    }
}

/// The error a producer hears when a queue refuses its message.
fn rejection(reason: RejectReason, queue: &str) -> Error {
    match reason {
        RejectReason::NotFound => {
            Error::new(condition::NOT_FOUND, format!("no queue named {queue:?}"))
        }
        RejectReason::Overflow => Error::new(
            condition::RESOURCE_LIMIT_EXCEEDED,
            format!("queue {queue:?} is full"),
        ),
        // Sequence numbers are assigned increasing: this is a bug, reported
        // to the producer, not fatal.
        RejectReason::SeqNotIncreasing => {
            tracing::error!(queue, "sequence number out of order");
            Error::new(condition::INTERNAL_ERROR, "sequence number out of order")
        }
    }
}

/// The error a transaction's controller hears when it is rolled back for
/// it: `why`, under `amqp:transaction:rollback`.
pub(super) fn rollback_error(why: &str) -> Error {
    Error::new(
        condition::TRANSACTION_ROLLBACK,
        format!("the transaction was rolled back: {why}"),
    )
}

/// The error a transaction's controller hears when its group refuses it.
pub(super) fn transaction_refusal(reason: &TransactionRefusal) -> Error {
    rollback_error(&match reason {
        TransactionRefusal::QueueNotFound { queue } => format!("no queue named {queue:?}"),
        TransactionRefusal::QueueFull { queue } => format!("queue {queue:?} is full"),
        TransactionRefusal::NotHeld { queue, seq } => format!(
            "message {seq} of queue {queue:?} went back to its queue before the commit \
             (its consumer detached)"
        ),
    })
}
