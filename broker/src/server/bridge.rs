//! The bridge between a connection's AMQP engine and the broker node:
//! turns engine events into node requests, and node messages into engine
//! commands, keeping what the connection's links are to the node.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, info};

use crate::amqp::codec::{DecodeError, DecodeErrorKind, Descriptor, Symbol, from_bytes, to_bytes};
use crate::amqp::engine::{Connection, DeliveryId, Event, LinkId, LinkReply};
use crate::amqp::types::{
    Attach, AttachSource, AttachTarget, ControlMessage, Coordinator, DeliveryState, Error,
    ExpiryPolicy, Fields, LOCAL_TRANSACTIONS, Message, ReceiverSettleMode, Rejected, Role, Section,
    Source, TerminusDurability, TransactionalState, condition,
};
use crate::node::{
    ConnId, NodeHandle, NodeStopped, QueueOptions, Refusal, Request, SettleAnswer, ToConnection,
    consumer_node, producer_node,
};
use crate::queue::{ConsumerId, MessageFilter, Outcome, Seq};

/// The credit a coordinator link is kept at: controllers send one control
/// message at a time per session.
const COORDINATOR_CREDIT: u32 = 64;

/// A message the node assigned to a consumer that has no credit left on the
/// wire yet (credit changed while it was on its way).
struct Waiting {
    consumer: ConsumerId,
    queue: String,
    seq: Seq,
    message: Bytes,
    settled: bool,
}

/// Where a message sent to a consumer sits in the broker.
struct InQueue {
    /// The consumer it was delivered to.
    consumer: ConsumerId,
    queue: String,
    seq: Seq,
}

/// The links of one connection.
pub(super) struct Bridge {
    conn: ConnId,
    node: NodeHandle,
    /// The client's container id, from its `open`.
    container_id: String,
    /// Links the client attached, waiting for the node's answer.
    attaching: BTreeMap<LinkId, Box<Attach>>,
    /// Producer links, with the receiver settle mode the broker answered.
    producers: BTreeMap<LinkId, ReceiverSettleMode>,
    /// Links to the transaction coordinator.
    coordinators: BTreeSet<LinkId>,
    /// Consumer links: which consumer each is, and what it could not be
    /// sent yet.
    consumers: BTreeMap<LinkId, (ConsumerId, VecDeque<Waiting>)>,
    /// Messages sent to consumers and not yet settled.
    unsettled: BTreeMap<DeliveryId, InQueue>,
    /// The client's `open` has arrived.
    opened: bool,
    /// Why the node refused the connection, until the client's `open`
    /// arrives to be answered with a `close` saying so.
    refused: Option<Error>,
}

impl Bridge {
    pub(super) fn new(conn: ConnId, node: NodeHandle) -> Self {
        Self {
            conn,
            node,
            container_id: String::new(),
            attaching: BTreeMap::new(),
            producers: BTreeMap::new(),
            coordinators: BTreeSet::new(),
            consumers: BTreeMap::new(),
            unsettled: BTreeMap::new(),
            opened: false,
            refused: None,
        }
    }

    /// Reacts to what the engine reports.
    pub(super) fn on_event(
        &mut self,
        conn: &mut Connection,
        now: Instant,
        event: Event,
    ) -> Result<(), NodeStopped> {
        match event {
            // The connection's driver answers SASL before the bridge
            // sees anything.
            Event::SaslInit { .. } | Event::SaslResponse { .. } => {}
            Event::Authenticated { identity } => {
                info!(identity, "client authenticated");
                self.node.send(Request::Authenticated {
                    conn: self.conn,
                    user: identity,
                })?;
            }
            Event::Opened { remote } => {
                info!(container_id = remote.container_id, "AMQP connection open");
                self.container_id = remote.container_id;
                self.opened = true;
                if let Some(error) = self.refused.take() {
                    conn.close(now, Some(error));
                }
            }
            Event::SessionBegun { session, .. } => {
                debug!(session = session.0, "session begun");
                self.node.send(Request::SessionBegun {
                    conn: self.conn,
                    session,
                })?;
            }
            Event::LinkAttached {
                link,
                remote,
                initiated_by_peer,
            } => {
                if initiated_by_peer {
                    self.on_attach(conn, link, remote)?;
                }
            }
            Event::Acquiring { link, txn_id } => {
                debug!(?link, ?txn_id, "a consumer's transactional acquisition");
            }
            Event::Credit {
                link,
                credit,
                drain,
                ..
            } => self.on_consumer_credit(conn, link, credit, drain)?,
            Event::Delivery {
                delivery,
                message,
                settled,
                state,
                ..
            } => {
                if self.coordinators.contains(&delivery.link) {
                    return self.on_control(conn, delivery, &message);
                }
                let txn = match state {
                    Some(DeliveryState::Transactional(state)) => Some(state.txn_id),
                    _ => None,
                };
                self.node.send(Request::Publish {
                    conn: self.conn,
                    delivery,
                    message,
                    settled,
                    txn,
                })?;
            }
            Event::Disposition {
                delivery,
                state,
                settled,
            } => self.on_consumer_disposition(conn, delivery, state, settled)?,
            Event::LinkDetached {
                link,
                closed,
                error,
            } => {
                debug!(?link, closed, ?error, "link detached");
                self.forget_link(link, closed)?;
            }
            Event::SessionEnded { session, error } => {
                debug!(session = session.0, ?error, "session ended");
                self.node.send(Request::SessionEnded {
                    conn: self.conn,
                    session,
                })?;
            }
            Event::Closed { local, remote } => info!(?local, ?remote, "AMQP connection closed"),
        }
        Ok(())
    }

    fn on_attach(
        &mut self,
        conn: &mut Connection,
        link: LinkId,
        mut remote: Box<Attach>,
    ) -> Result<(), NodeStopped> {
        // The client's role: a client receiver is a broker consumer.
        let request = match remote.role {
            Role::Receiver => self.consumer_request(link, &mut remote),
            Role::Sender => {
                if let Some(AttachTarget::Coordinator(coordinator)) = &remote.target {
                    let coordinator = coordinator.clone();
                    self.attach_coordinator(conn, link, &remote, coordinator);
                    return Ok(());
                }
                self.producer_request(link, &remote)
            }
        };
        match request {
            Ok(request) => {
                self.attaching.insert(link, remote);
                self.node.send(request)
            }
            Err(refusal) => {
                refuse(conn, link, refusal);
                Ok(())
            }
        }
    }

    /// What a client receiver's attach asks of the node; its source keeps
    /// only the filters the broker applies (see [`consumer_filter`]).
    fn consumer_request(&self, link: LinkId, remote: &mut Attach) -> Result<Request, Refusal> {
        let mut source = match &mut remote.source {
            Some(AttachSource::Unsupported(source)) => {
                return Err(unsupported("sources", &source.descriptor));
            }
            source => source.as_mut().and_then(AttachSource::node_mut),
        };
        let node = consumer_node(source.as_deref(), &remote.name)?;
        let filter = consumer_filter(source.as_deref_mut())?;
        let properties = source.as_ref().map(|s| &s.dynamic_node_properties);
        Ok(Request::AttachConsumer {
            conn: self.conn,
            link,
            node: Box::new(node),
            filter,
            options: queue_options(properties)?,
            container_id: self.container_id.clone(),
        })
    }

    /// What a client sender's attach (to a node, not the coordinator)
    /// asks of the node.
    fn producer_request(&self, link: LinkId, remote: &Attach) -> Result<Request, Refusal> {
        let target = match &remote.target {
            Some(AttachTarget::Unsupported(target)) => {
                return Err(unsupported("targets", &target.descriptor));
            }
            target => target.as_ref().and_then(AttachTarget::node),
        };
        let node = producer_node(target)?;
        let properties = target.map(|t| &t.dynamic_node_properties);
        Ok(Request::AttachProducer {
            conn: self.conn,
            link,
            node,
            options: queue_options(properties)?,
        })
    }

    /// A link to the transaction coordinator, which the bridge serves
    /// itself: it turns each control message into a request to the node.
    /// Only local transactions are offered.
    fn attach_coordinator(
        &mut self,
        conn: &mut Connection,
        link: LinkId,
        remote: &Attach,
        coordinator: Coordinator,
    ) {
        let local = Symbol::from_static(LOCAL_TRANSACTIONS);
        if !coordinator.capabilities.is_empty() && !coordinator.capabilities.contains(&local) {
            let refusal = Refusal {
                condition: condition::NOT_IMPLEMENTED,
                description: format!(
                    "only local transactions are supported, not {:?}",
                    coordinator.capabilities
                ),
            };
            return refuse(conn, link, refusal);
        }
        let reply = LinkReply {
            source: sender_source(remote),
            target: Some(AttachTarget::Coordinator(Coordinator {
                capabilities: vec![local],
            })),
            ..LinkReply::default()
        };
        if conn.accept_link(link, reply).is_ok() {
            self.coordinators.insert(link);
            let _ = conn.raise_credit(link, COORDINATOR_CREDIT);
        }
    }

    /// A `declare` or `discharge` arrived: the node answers it. One that
    /// does not decode is rejected, and the link stays.
    fn on_control(
        &mut self,
        conn: &mut Connection,
        delivery: DeliveryId,
        message: &Bytes,
    ) -> Result<(), NodeStopped> {
        let _ = conn.raise_credit(delivery.link, COORDINATOR_CREDIT);
        match control_message(message) {
            Ok(control) => self.node.send(Request::Coordinate {
                conn: self.conn,
                delivery,
                control,
            }),
            Err(error) => {
                debug!(%error, "a coordinator message does not decode");
                let description = format!(
                    "a coordinator takes an amqp-value body holding a declare or a \
                     discharge: {error}"
                );
                let error = Error::new(condition::DECODE_ERROR, description);
                let state = DeliveryState::Rejected(Rejected { error: Some(error) });
                let _ = conn.disposition(delivery, Some(state), true);
                Ok(())
            }
        }
    }

    /// A consumer's credit changed: send what waited for it, then tell the
    /// node how much is left.
    fn on_consumer_credit(
        &mut self,
        conn: &mut Connection,
        link: LinkId,
        credit: u32,
        drain: bool,
    ) -> Result<(), NodeStopped> {
        if !self.consumers.contains_key(&link) {
            // A producer's credit echoed by the client: nothing to do.
            return Ok(());
        }
        self.send_waiting(conn, link)?;
        let credit = conn.credit(link).min(credit);
        self.node.send(Request::Credit {
            conn: self.conn,
            link,
            credit,
            drain,
        })
    }

    fn on_consumer_disposition(
        &mut self,
        conn: &mut Connection,
        delivery: DeliveryId,
        state: Option<DeliveryState>,
        settled: bool,
    ) -> Result<(), NodeStopped> {
        // Only a terminal outcome, or a settlement, concludes a delivery.
        let (outcome, txn) = match &state {
            Some(DeliveryState::Transactional(TransactionalState {
                txn_id,
                outcome: Some(inner),
            })) => match consumer_outcome(inner) {
                Some(outcome) => (outcome, Some(txn_id.clone())),
                None => return Ok(()),
            },
            Some(state) if state.is_outcome() => match consumer_outcome(state) {
                Some(outcome) => (outcome, None),
                None => return Ok(()),
            },
            // Settled with no outcome: the message was not processed.
            _ if settled => (Outcome::Released, None),
            _ => return Ok(()),
        };
        let Some(InQueue {
            consumer,
            queue,
            seq,
        }) = self.unsettled.remove(&delivery)
        else {
            return Ok(());
        };
        // The client waits for us to settle (rcv-settle-mode second, or a
        // client that never settles first). Our settle tells it the outcome
        // took effect: the node sends it once the settle is applied. In a
        // transaction the outcome takes effect at the commit, which the
        // discharge's answer reports; the delivery is settled at once.
        let mut answer = None;
        if !settled {
            match (&txn, state) {
                (None, Some(state)) => {
                    answer = Some(SettleAnswer {
                        conn: self.conn,
                        delivery,
                        state,
                    });
                }
                (_, state) => {
                    let _ = conn.disposition(delivery, state, true);
                }
            }
        }
        self.node.send(Request::Settle {
            consumer,
            queue,
            seq,
            outcome,
            txn,
            answer,
        })
    }

    /// Reacts to what the node says.
    pub(super) fn on_node(
        &mut self,
        conn: &mut Connection,
        now: Instant,
        message: ToConnection,
    ) -> Result<(), NodeStopped> {
        match message {
            ToConnection::ConsumerAttached { link, result } => {
                let Some(remote) = self.attaching.remove(&link) else {
                    return Ok(());
                };
                match result {
                    Ok((consumer, address)) => {
                        let reply = LinkReply {
                            source: Some(consumer_source(
                                remote.source.as_ref().and_then(AttachSource::node),
                                address,
                            )),
                            target: remote.target.clone(),
                            ..LinkReply::default()
                        };
                        if conn.accept_link(link, reply).is_ok() {
                            self.consumers.insert(link, (consumer, VecDeque::new()));
                            // Credit the client sent along with its attach
                            // (before our answer) was not the node's to see
                            // until now.
                            let credit = conn.credit(link);
                            if credit > 0 {
                                self.node.send(Request::Credit {
                                    conn: self.conn,
                                    link,
                                    credit,
                                    drain: false,
                                })?;
                            }
                        }
                    }
                    Err(refusal) => refuse(conn, link, refusal),
                }
            }
            ToConnection::ProducerAttached { link, result } => {
                let Some(remote) = self.attaching.remove(&link) else {
                    return Ok(());
                };
                match result {
                    Ok(dynamic) => {
                        let reply = LinkReply {
                            source: sender_source(&remote),
                            target: producer_target(remote.target.as_ref(), dynamic),
                            // Scheduled delivery: Qpid JMS sets a delivery
                            // delay only on links that offer it.
                            offered_capabilities: vec![Symbol::from_static("DELAYED_DELIVERY")],
                        };
                        if conn.accept_link(link, reply).is_ok()
                            && let Some(mode) = conn.rcv_settle_mode(link)
                        {
                            self.producers.insert(link, mode);
                        }
                    }
                    Err(refusal) => refuse(conn, link, refusal),
                }
            }
            ToConnection::ProducerCredit { link, credit } => {
                // The node counts the producer's messages behind the engine
                // (some are still on their way to it), so its credit can fall
                // short of what the producer holds here; that is not taken
                // back. Fails only if the link has gone meanwhile.
                let _ = conn.raise_credit(link, credit);
            }
            ToConnection::Deliver {
                link,
                consumer,
                queue,
                seq,
                message,
                settled,
            } => {
                let waiting = Waiting {
                    consumer,
                    queue,
                    seq,
                    message,
                    settled,
                };
                match self.consumers.get_mut(&link) {
                    Some((current, queue)) if *current == consumer => queue.push_back(waiting),
                    // For a link that has gone, or for the consumer a
                    // link with the same handle was before: the node has
                    // taken the message back already.
                    _ => return self.release(waiting),
                }
                self.send_waiting(conn, link)?;
            }
            ToConnection::DrainComplete { link } => {
                let _ = conn.drain_complete(link);
            }
            ToConnection::Outcome { delivery, state } => {
                let second =
                    self.producers.get(&delivery.link) == Some(&ReceiverSettleMode::Second);
                // Under rcv-settle-mode second the client settles first.
                let _ = conn.disposition(delivery, Some(state), !second);
            }
            ToConnection::CloseConnection { refusal } => {
                info!(reason = refusal.description, "connection refused");
                let error = Error::new(refusal.condition, refusal.description);
                // Closed before the client's `open`, the handshake would
                // end without a word: the client is told why once open.
                match self.opened {
                    true => conn.close(now, Some(error)),
                    false => self.refused = Some(error),
                }
            }
            ToConnection::EndSession { session, refusal } => {
                info!(
                    session = session.0,
                    reason = refusal.description,
                    "session refused"
                );
                let error = Error::new(refusal.condition, refusal.description);
                // Fails only if the session has ended meanwhile.
                let _ = conn.end(session, Some(error));
            }
            ToConnection::CloseLink { link, refusal } => {
                let error = Error::new(refusal.condition, refusal.description);
                let _ = conn.detach(link, true, Some(error));
                self.forget_link(link, true)?;
            }
        }
        Ok(())
    }

    /// Sends a consumer's waiting messages while it has credit.
    fn send_waiting(&mut self, conn: &mut Connection, link: LinkId) -> Result<(), NodeStopped> {
        let Some((_, waiting)) = self.consumers.get_mut(&link) else {
            return Ok(());
        };
        // A consumer that asked for settled deliveries (at most once) takes
        // each message as it is sent.
        let at_most_once = conn.sends_settled(link);
        while conn.credit(link) > 0 {
            let Some(next) = waiting.pop_front() else {
                break;
            };
            let tag = Bytes::copy_from_slice(&next.seq.to_be_bytes());
            let settled = next.settled || at_most_once;
            match conn.send(link, tag, next.message.clone(), settled) {
                Ok(delivery) if !settled => {
                    if let Some(txn) = conn.acquiring(link) {
                        self.node.send(Request::AcquiredInTransaction {
                            consumer: next.consumer,
                            queue: next.queue.clone(),
                            seq: next.seq,
                            txn: txn.clone(),
                        })?;
                    }
                    self.unsettled.insert(
                        delivery,
                        InQueue {
                            consumer: next.consumer,
                            queue: next.queue,
                            seq: next.seq,
                        },
                    );
                }
                Ok(_) if !next.settled => self.node.send(Request::Settle {
                    consumer: next.consumer,
                    queue: next.queue,
                    seq: next.seq,
                    outcome: Outcome::Accepted,
                    txn: None,
                    answer: None,
                })?,
                Ok(_) => {}
                Err(error) => {
                    debug!(%error, "delivery not sent; returning it to its queue");
                    waiting.push_front(next);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Gives a message that never reached its consumer back to its queue,
    /// without counting a delivery.
    fn release(&self, waiting: Waiting) -> Result<(), NodeStopped> {
        if waiting.settled {
            return Ok(());
        }
        self.node.send(Request::Settle {
            consumer: waiting.consumer,
            queue: waiting.queue,
            seq: waiting.seq,
            outcome: Outcome::Released,
            txn: None,
            answer: None,
        })
    }

    /// A link is gone: return what it had not sent, and tell the node.
    fn forget_link(&mut self, link: LinkId, closed: bool) -> Result<(), NodeStopped> {
        self.attaching.remove(&link);
        self.producers.remove(&link);
        self.coordinators.remove(&link);
        if let Some((_, waiting)) = self.consumers.remove(&link) {
            for message in waiting {
                self.release(message)?;
            }
        }
        self.unsettled.retain(|delivery, _| delivery.link != link);
        self.node.send(Request::Detach {
            conn: self.conn,
            link,
            closed,
        })
    }

    /// The connection is over: every link goes with it.
    pub(super) fn disconnect(&mut self) -> Result<(), NodeStopped> {
        let links: Vec<LinkId> = self.consumers.keys().copied().collect();
        for link in links {
            if let Some((_, waiting)) = self.consumers.remove(&link) {
                for message in waiting {
                    self.release(message)?;
                }
            }
        }
        self.node.send(Request::Disconnect { conn: self.conn })
    }
}

/// Refuses a link the client attached.
fn refuse(conn: &mut Connection, link: LinkId, refusal: Refusal) {
    info!(
        ?link,
        condition = refusal.condition,
        reason = refusal.description,
        "link refused"
    );
    let error = Error::new(refusal.condition, refusal.description);
    // Fails only if the client detached it meanwhile.
    let _ = conn.refuse_link(link, error);
}

/// The filters of a consumer's source that the broker applies; the source
/// keeps only those, to be answered with: the answered source lists
/// exactly the filters in effect (spec part 3 §3.5.3), so a client can see
/// that one it asked for is not. One that does not parse refuses the link.
fn consumer_filter(source: Option<&mut Source>) -> Result<Option<Box<MessageFilter>>, Refusal> {
    let Some(source) = source else {
        return Ok(None);
    };
    let filter = MessageFilter::new(&source.filter).map_err(|error| Refusal {
        condition: condition::INVALID_FIELD,
        description: format!("source filter: {error}"),
    })?;
    let in_effect = filter.as_ref().map(|f| f.entries().to_vec());
    if in_effect.as_ref().map_or(0, Vec::len) < source.filter.len() {
        debug!(
            requested = source.filter.len(),
            "source filters of unknown types are not applied"
        );
    }
    source.filter = in_effect.unwrap_or_default();
    Ok(filter.map(Box::new))
}

/// The refusal of a terminus of a kind the broker does not know.
fn unsupported(termini: &str, descriptor: &Descriptor) -> Refusal {
    Refusal {
        condition: condition::NOT_IMPLEMENTED,
        description: format!("{termini} of type {descriptor:?} are not supported"),
    }
}

/// What a terminus's dynamic-node-properties ask of a queue the attach
/// creates.
fn queue_options(properties: Option<&Fields>) -> Result<Option<Box<QueueOptions>>, Refusal> {
    properties.map_or(Ok(None), QueueOptions::of)
}

/// The source a consumer's attach is answered with: the client's (with
/// the filters in effect, see [`consumer_filter`]), with the address a
/// dynamic node was given.
fn consumer_source(requested: Option<&Source>, address: String) -> Source {
    let Some(requested) = requested else {
        // A durable subscription looked up by its link's name: which it is.
        return Source {
            address: Some(address),
            durable: Some(TerminusDurability::UnsettledState),
            expiry_policy: Some(ExpiryPolicy::Never),
            ..Source::default()
        };
    };
    let mut source = requested.clone();
    if source.dynamic {
        source.address = Some(address);
    }
    source
}

/// The source a client sender's attach is answered with: its own, if it
/// is a node's (the broker has no use for it).
fn sender_source(remote: &Attach) -> Option<Source> {
    remote.source.as_ref().and_then(AttachSource::node).cloned()
}

/// The target a producer's attach is answered with: the client's, with
/// the address of the node the broker made for a dynamic one.
fn producer_target(
    requested: Option<&AttachTarget>,
    dynamic: Option<String>,
) -> Option<AttachTarget> {
    let mut target = requested.cloned();
    if let (Some(AttachTarget::Node(target)), Some(address)) = (&mut target, dynamic) {
        target.address = Some(address);
    }
    target
}

/// The queue's view of a consumer's outcome; `None` for a state that is
/// not a consumer's to give (a coordinator's `declared`, or a
/// transactional state without an outcome).
fn consumer_outcome(state: &DeliveryState) -> Option<Outcome> {
    Some(match state {
        DeliveryState::Accepted(_) => Outcome::Accepted,
        DeliveryState::Rejected(_) => Outcome::Rejected,
        DeliveryState::Released(_) | DeliveryState::Received(_) => Outcome::Released,
        DeliveryState::Modified(m) => Outcome::Modified {
            delivery_failed: m.delivery_failed,
            undeliverable_here: m.undeliverable_here,
            annotations: m.message_annotations.clone(),
        },
        DeliveryState::Declared(_) | DeliveryState::Transactional(_) => return None,
    })
}

/// The `declare` or `discharge` a coordinator's transfer carries, as its
/// `amqp-value` body.
fn control_message(message: &Bytes) -> Result<ControlMessage, DecodeError> {
    let message = Message::decode(message.clone())?;
    let body = message
        .sections
        .into_iter()
        .find_map(|section| match section {
            Section::AmqpValue(value) => Some(value),
            _ => None,
        });
    let body =
        body.ok_or(DecodeError::new(DecodeErrorKind::MissingField).in_field("amqp-value"))?;
    from_bytes(to_bytes(&body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::codec::{Described, Descriptor, Symbol, Value};
    use crate::amqp::types::DistributionMode;

    fn selector() -> (Value, Value) {
        let filter = Described {
            descriptor: Descriptor::Name(Symbol::from_static("apache.org:selector-filter:string")),
            value: Value::from("color = 'red'"),
        };
        (
            Value::Symbol(Symbol::from_static("jms-selector")),
            Value::from(filter),
        )
    }

    fn unknown_filter() -> (Value, Value) {
        let filter = Described {
            descriptor: Descriptor::Name(Symbol::from_static("com.example:filter")),
            value: Value::from("anything"),
        };
        (
            Value::Symbol(Symbol::from_static("mine")),
            Value::from(filter),
        )
    }

    /// The answered source lists exactly the filters in effect: a
    /// selector stays, a filter of a kind the broker does not know goes.
    #[test]
    fn a_consumer_source_keeps_the_filters_in_effect_only() {
        let mut requested = Source {
            address: Some("orders".into()),
            distribution_mode: Some(DistributionMode::Copy),
            filter: vec![selector(), unknown_filter()],
            ..Source::default()
        };
        let filter = consumer_filter(Some(&mut requested)).expect("a valid selector");
        assert!(filter.is_some());
        assert_eq!(requested.filter, [selector()]);
        let answered = consumer_source(Some(&requested), "ignored".into());
        assert_eq!(answered, requested);
    }

    #[test]
    fn a_selector_that_does_not_parse_refuses_the_link_naming_where() {
        let broken = Described {
            descriptor: Descriptor::Name(Symbol::from_static("apache.org:selector-filter:string")),
            value: Value::from("color = 'red' AND"),
        };
        let mut requested = Source {
            filter: vec![(Value::Symbol(Symbol::from_static("s")), Value::from(broken))],
            ..Source::default()
        };
        let refusal = consumer_filter(Some(&mut requested)).expect_err("refused");
        assert_eq!(refusal.condition, condition::INVALID_FIELD);
        assert!(
            refusal.description.contains("position"),
            "{}",
            refusal.description
        );
    }

    #[test]
    fn a_dynamic_consumer_source_gets_its_address() {
        let requested = Source {
            dynamic: true,
            ..Source::default()
        };
        let answered = consumer_source(Some(&requested), "temp-1".into());
        assert_eq!(answered.address.as_deref(), Some("temp-1"));
    }
}
