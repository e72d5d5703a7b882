//! Request and reply over temporary queues and the anonymous relay (issue
//! 14, item 1): requesters and a responder, turmoil client hosts like the
//! rest of the workload (`workload.rs`).
//!
//! A requester attaches a receiving link from a dynamic source: the broker
//! makes a temporary queue and names it in its answer; the queue lives as
//! long as the link. On the same connection it sends requests through the
//! anonymous relay (a sending link with no target address), each with its
//! `to` set to [`REQUESTS`] (a few to [`NOWHERE`], which does not exist,
//! and which the relay must refuse) and its `reply-to` to its temporary
//! queue, and reads the replies there. Now and then it closes that link,
//! which deletes the queue with whatever it holds, and attaches a new one.
//! A request is never resent: the queue its reply would go to dies with
//! the connection.
//!
//! The responder consumes [`REQUESTS`] (it makes the queue: requesters
//! wait for it, as the relay never makes one) and answers each request
//! through the anonymous relay to its `reply-to`, then accepts the
//! request, or releases it if the broker refused the reply for any reason
//! but its queue being gone (a full disk); a request it released or could
//! not settle is delivered again and answered again (at least once).
//!
//! The checker's rule 20 (`checker/rules/request_reply.rs`) reads the ops they
//! record; [`Awaited`] tells the drain which accepted requests still wait
//! for their reply.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use bytes::Bytes;
use rand::Rng;
use sluice::amqp::engine::{DeliveryId, Event, LinkId, SessionId};
use sluice::amqp::types::{
    Accepted, DeliveryState, Header, Message, Properties, Rejected, Released, Section, Source,
    condition,
};
use sluice::client::ClientError;

use crate::history::{ClientId, ConnId, MsgId, NodeId, Op, Outcome};
use crate::workload::{
    PHASE_POLL, Phase, Shared, SimClient, backoff, client_rng, close, connect, final_outcome,
    next_event_before, outcome_of, pause, unless_lost, with_timeout,
};

/// The queue requests go to, which the responder makes.
pub const REQUESTS: &str = "requests";
/// An address no client ever makes: the relay must not accept a message to
/// it.
pub const NOWHERE: &str = "nowhere";

/// Of seeds, the percentage that have requesters.
pub(crate) const SEEDS_PCT: u32 = 40;
/// The most requesters a seed has.
pub(crate) const REQUESTERS_MAX: u32 = 2;

/// The range of the number of requests one requester sends.
const REQUESTS_MIN: u64 = 20;
const REQUESTS_MAX: u64 = 120;
/// The most requests a requester has unanswered at once: not yet settled
/// by the broker, or accepted and not yet replied to. Like an RPC client,
/// it waits for replies: without that bound, the backlog behind a
/// responder that answers one request per two commits on a slow disk
/// outlasted the liveness phase (3 nodes, seed 0x16e).
const WINDOW_MAX: usize = 8;
/// Of requests, the percentage sent to [`NOWHERE`].
const NOWHERE_PCT: u32 = 5;
/// The most a requester's chance, per reply, of closing its reply link
/// (deleting its temporary queue) and attaching a new one, in percent.
const CHURN_PCT_MAX: u32 = 6;
/// The credit of a requester's reply link, topped up at half.
const REPLY_CREDIT: u32 = 20;

/// The id a delivery that is not one of ours is recorded with: no
/// requester sends it, so the checker reports it.
const UNKNOWN_MSG: MsgId = MsgId {
    producer: u32::MAX,
    seq: u64::MAX,
};

/// A request or a reply: its body carries the request's id.
fn encode(msg: MsgId, to: &str, reply_to: Option<&str>) -> Bytes {
    let mut body = Vec::with_capacity(12);
    body.extend_from_slice(&msg.producer.to_be_bytes());
    body.extend_from_slice(&msg.seq.to_be_bytes());
    let sections = vec![
        Section::Header(Header {
            durable: true,
            ..Header::default()
        }),
        Section::Properties(Box::new(Properties {
            to: Some(to.to_owned()),
            reply_to: reply_to.map(str::to_owned),
            ..Properties::default()
        })),
        Section::Data(Bytes::from(body)),
    ];
    Message { sections }.encode()
}

/// What a delivered request or reply says: its id, `to` and `reply-to`
/// (empty if absent); `None` if it is not one of ours.
fn decode(message: Bytes) -> Option<(MsgId, String, String)> {
    let message = Message::decode(message).ok()?;
    let (mut id, mut to, mut reply_to) = (None, String::new(), String::new());
    for section in &message.sections {
        match section {
            Section::Properties(properties) => {
                to = properties.to.clone().unwrap_or_default();
                reply_to = properties.reply_to.clone().unwrap_or_default();
            }
            Section::Data(data) if data.len() == 12 => {
                let producer = u32::from_be_bytes(data[..4].try_into().ok()?);
                let seq = u64::from_be_bytes(data[4..].try_into().ok()?);
                id = Some(MsgId { producer, seq });
            }
            _ => {}
        }
    }
    Some((id?, to, reply_to))
}

/// A requester's connection: its reply link and the temporary queue
/// behind it, and its relay link.
struct Requesting {
    client: SimClient,
    session: SessionId,
    replies: LinkId,
    address: String,
    relay: LinkId,
}

async fn open_requester(
    shared: &Shared,
    conn: ConnId,
    node: NodeId,
) -> Result<Requesting, ClientError> {
    let mut client = connect(shared, conn, conn.to_string(), node).await?;
    let session = with_timeout(client.begin()).await?;
    let attach = client.attach_dynamic_receiver(session, "replies", REPLY_CREDIT);
    let (replies, address) = with_timeout(attach).await?;
    let relay = with_timeout(client.attach_sender(session, "requests", None)).await?;
    Ok(Requesting {
        client,
        session,
        replies,
        address,
        relay,
    })
}

/// A requester: see the module documentation. It sends in the fault phase
/// only, and reads replies until the run is finished.
pub async fn requester(n: u32, seed: u64, shared: Rc<Shared>) -> turmoil::Result {
    let me = ClientId::Requester(n);
    let mut rng = client_rng(seed, me);
    let total = rng.gen_range(REQUESTS_MIN..=REQUESTS_MAX);
    let window = rng.gen_range(1..=WINDOW_MAX);
    let gap_ms_max = rng.gen_range(1..=50u64);
    let churn_pct = rng.gen_range(0..=CHURN_PCT_MAX);
    while !shared.requests_ready.get() {
        if shared.phase() != Phase::Faults {
            return Ok(());
        }
        tokio::time::sleep(PHASE_POLL).await;
    }
    let mut next_seq = 0;
    let mut conn_n = 0;
    loop {
        if shared.phase() == Phase::Finished {
            return Ok(());
        }
        conn_n += 1;
        let conn = ConnId {
            client: me,
            n: conn_n,
        };
        let node = shared.pick_broker(&mut rng);
        let mut r = match open_requester(&shared, conn, node).await {
            Ok(opened) => opened,
            Err(error) => {
                let why = format!("connect: {error}");
                shared.record(Op::ConnectionLost { conn, why });
                backoff(&mut rng).await;
                continue;
            }
        };
        shared.record(Op::Connected {
            conn,
            address: r.address.clone(),
            node,
        });
        shared.record(Op::TempQueue {
            conn,
            address: r.address.clone(),
        });
        // Sent requests, with the reply queue each names.
        let mut in_flight: BTreeMap<DeliveryId, (MsgId, String)> = BTreeMap::new();
        // Accepted requests whose reply has yet to reach the current queue.
        let mut awaiting: BTreeSet<MsgId> = BTreeSet::new();
        let lost = 'conn: loop {
            let phase = shared.phase();
            if phase == Phase::Finished {
                close(r.client, &shared, conn).await;
                return Ok(());
            }
            let can_send = phase == Phase::Faults
                && next_seq < total
                && in_flight.len() + awaiting.len() < window
                && r.client.connection().credit(r.relay) > 0;
            if can_send {
                let msg = MsgId {
                    producer: n,
                    seq: next_seq,
                };
                next_seq += 1;
                let to = if rng.gen_range(0..100) < NOWHERE_PCT {
                    NOWHERE
                } else {
                    REQUESTS
                };
                shared.record(Op::Request {
                    conn,
                    msg,
                    to: to.to_owned(),
                    reply_to: r.address.clone(),
                });
                let tag = Bytes::copy_from_slice(&msg.seq.to_be_bytes());
                let request = encode(msg, to, Some(&r.address));
                match r.client.send(r.relay, tag, request, false).await {
                    Ok(delivery) => {
                        in_flight.insert(delivery, (msg, r.address.clone()));
                    }
                    Err(error) => break 'conn format!("send: {error}"),
                }
            }
            // Between sends, take in replies and what the broker answers.
            let sleep = tokio::time::sleep(pause(can_send, gap_ms_max, &mut rng));
            tokio::pin!(sleep);
            loop {
                let Some(event) = next_event_before(&mut r.client, &mut sleep).await else {
                    break;
                };
                match unless_lost(event) {
                    Ok(Event::Disposition {
                        delivery,
                        state,
                        settled,
                    }) => {
                        if let Some(outcome) = final_outcome(state.as_ref(), settled)
                            && let Some((msg, reply_to)) = in_flight.remove(&delivery)
                        {
                            if outcome == Outcome::Accepted && reply_to == r.address {
                                awaiting.insert(msg);
                            }
                            shared.record(Op::RequestOutcome { conn, msg, outcome });
                        }
                    }
                    Ok(Event::Delivery {
                        delivery, message, ..
                    }) => {
                        let (msg, to, _) =
                            decode(message).unwrap_or((UNKNOWN_MSG, String::new(), String::new()));
                        awaiting.remove(&msg);
                        shared.record(Op::ReplyDelivered {
                            conn,
                            msg,
                            to,
                            queue: r.address.clone(),
                        });
                        let accepted = DeliveryState::Accepted(Accepted);
                        if let Err(error) = r.client.settle(delivery, accepted).await {
                            break 'conn error.to_string();
                        }
                        if shared.phase() == Phase::Faults && rng.gen_range(0..100) < churn_pct {
                            if let Err(error) = renew_queue(&mut r, &shared, conn).await {
                                break 'conn error;
                            }
                            // Their replies went with the old queue.
                            awaiting.clear();
                            break;
                        }
                        if r.client.connection().credit(r.replies) <= REPLY_CREDIT / 2
                            && let Err(error) =
                                r.client.connection().flow(r.replies, REPLY_CREDIT, false)
                        {
                            break 'conn error.to_string();
                        }
                    }
                    Ok(_) => {}
                    Err(why) => break 'conn why,
                }
            }
        };
        shared.record(Op::ConnectionLost { conn, why: lost });
        backoff(&mut rng).await;
    }
}

/// Closes the requester's reply link, which deletes its temporary queue
/// with what it holds, and attaches a new one; why the connection is to be
/// dropped if that failed.
async fn renew_queue(r: &mut Requesting, shared: &Shared, conn: ConnId) -> Result<(), String> {
    with_timeout(r.client.detach(r.replies, true))
        .await
        .map_err(|error| format!("detach: {error}"))?;
    shared.record(Op::TempQueueDeleted {
        conn,
        address: r.address.clone(),
    });
    let attach = r
        .client
        .attach_dynamic_receiver(r.session, "replies", REPLY_CREDIT);
    let (replies, address) = with_timeout(attach)
        .await
        .map_err(|error| format!("attach: {error}"))?;
    r.replies = replies;
    r.address = address;
    shared.record(Op::TempQueue {
        conn,
        address: r.address.clone(),
    });
    Ok(())
}

/// The responder's connection: its link from [`REQUESTS`] and its relay
/// link.
struct Responding {
    client: SimClient,
    requests: LinkId,
    relay: LinkId,
}

async fn open_responder(
    shared: &Shared,
    conn: ConnId,
    node: NodeId,
    credit: u32,
) -> Result<Responding, ClientError> {
    let mut client = connect(shared, conn, conn.to_string(), node).await?;
    let session = with_timeout(client.begin()).await?;
    let source = Source {
        address: Some(REQUESTS.to_owned()),
        ..Source::default()
    };
    let attach = client.attach_receiver(session, "responder", source, credit);
    let requests = with_timeout(attach).await?;
    let relay = with_timeout(client.attach_sender(session, "replies", None)).await?;
    Ok(Responding {
        client,
        requests,
        relay,
    })
}

/// The responder: see the module documentation. It answers until the run
/// is finished.
pub async fn responder(n: u32, seed: u64, shared: Rc<Shared>) -> turmoil::Result {
    let me = ClientId::Responder(n);
    let mut rng = client_rng(seed, me);
    let credit_max = rng.gen_range(1..=20u32);
    let mut conn_n = 0;
    loop {
        if shared.phase() == Phase::Finished {
            return Ok(());
        }
        conn_n += 1;
        let conn = ConnId {
            client: me,
            n: conn_n,
        };
        let node = shared.pick_broker(&mut rng);
        let mut r = match open_responder(&shared, conn, node, credit_max).await {
            Ok(opened) => opened,
            Err(error) => {
                let why = format!("connect: {error}");
                shared.record(Op::ConnectionLost { conn, why });
                backoff(&mut rng).await;
                continue;
            }
        };
        shared.requests_ready.set(true);
        shared.record(Op::Connected {
            conn,
            address: REQUESTS.to_owned(),
            node,
        });
        let lost = loop {
            if shared.phase() == Phase::Finished {
                close(r.client, &shared, conn).await;
                return Ok(());
            }
            let Some(event) =
                next_event_before(&mut r.client, tokio::time::sleep(PHASE_POLL)).await
            else {
                continue;
            };
            match unless_lost(event) {
                Ok(Event::Delivery {
                    delivery, message, ..
                }) => {
                    if let Err(error) = answer(&mut r, &shared, conn, delivery, message).await {
                        break error;
                    }
                    if r.client.connection().credit(r.requests) <= credit_max / 2
                        && let Err(error) =
                            r.client.connection().flow(r.requests, credit_max, false)
                    {
                        break error.to_string();
                    }
                }
                Ok(_) => {}
                Err(why) => break why,
            }
        };
        shared.record(Op::ConnectionLost { conn, why: lost });
        backoff(&mut rng).await;
    }
}

/// Answers the request `message` (delivery `delivery`) through the relay,
/// waits (boundedly) for the reply's outcome, then accepts the request if
/// the reply was taken or has nowhere to go (its queue is gone), and
/// releases it otherwise (a full disk refused the reply), so that it comes
/// back to be answered again; why the connection is to be dropped if that
/// failed.
async fn answer(
    r: &mut Responding,
    shared: &Shared,
    conn: ConnId,
    delivery: DeliveryId,
    message: Bytes,
) -> Result<(), String> {
    let (msg, _, reply_to) = decode(message).unwrap_or((UNKNOWN_MSG, String::new(), String::new()));
    shared.record(Op::RequestDelivered {
        conn,
        msg,
        reply_to: reply_to.clone(),
    });
    if msg != UNKNOWN_MSG && !reply_to.is_empty() {
        shared.record(Op::Reply {
            conn,
            msg,
            to: reply_to.clone(),
        });
        let tag = Bytes::copy_from_slice(&msg.seq.to_be_bytes());
        let reply = encode(msg, &reply_to, None);
        let sent = with_timeout(r.client.send(r.relay, tag, reply, false))
            .await
            .map_err(|error| format!("send: {error}"))?;
        let answered = r.client.wait_for(|event| {
            matches!(event, Event::Disposition { delivery, settled: true, .. } if *delivery == sent)
        });
        let state = match with_timeout(answered).await {
            Ok(Event::Disposition { state, .. }) => state,
            Ok(_) => None,
            Err(error) => return Err(format!("reply outcome: {error}")),
        };
        let outcome = outcome_of(state.as_ref());
        shared.record(Op::ReplyOutcome { conn, msg, outcome });
        let nowhere = matches!(
            &state,
            Some(DeliveryState::Rejected(Rejected { error: Some(error) }))
                if error.condition.as_str() == condition::NOT_FOUND
        );
        if outcome != Outcome::Accepted && !nowhere {
            let released = DeliveryState::Released(Released);
            return r
                .client
                .settle(delivery, released)
                .await
                .map_err(|error| error.to_string());
        }
    }
    let accepted = DeliveryState::Accepted(Accepted);
    r.client
        .settle(delivery, accepted)
        .await
        .map_err(|error| error.to_string())
}

/// The accepted requests still waiting for their reply, as the history
/// goes: the drain lasts until there is none. A request whose reply queue
/// died (its link closed, or its connection lost) waits no more, nor does
/// one the broker accepted only after its reply queue died.
#[derive(Debug, Default)]
pub struct Awaited {
    /// Requests to [`REQUESTS`]: their connection and reply queue.
    sent: BTreeMap<MsgId, (ConnId, String)>,
    waiting: BTreeSet<MsgId>,
    /// The temporary queues deleted so far.
    deleted: BTreeSet<String>,
}

impl Awaited {
    /// Takes in one event of the history.
    pub fn observe(&mut self, op: &Op) {
        match op {
            Op::Request {
                conn,
                msg,
                to,
                reply_to,
            } if to == REQUESTS => {
                self.sent.insert(*msg, (*conn, reply_to.clone()));
            }
            Op::RequestOutcome {
                msg,
                outcome: Outcome::Accepted,
                ..
            } if (self.sent.get(msg)).is_some_and(|(_, queue)| !self.deleted.contains(queue)) => {
                self.waiting.insert(*msg);
            }
            Op::ReplyDelivered { msg, .. } => {
                self.waiting.remove(msg);
            }
            Op::TempQueueDeleted { address, .. } => {
                self.deleted.insert(address.clone());
                let sent = &self.sent;
                self.waiting
                    .retain(|msg| sent.get(msg).is_none_or(|(_, queue)| queue != address));
            }
            Op::ConnectionLost { conn, .. } | Op::Closed { conn } => {
                let sent = &self.sent;
                self.waiting
                    .retain(|msg| sent.get(msg).is_none_or(|(owner, _)| owner != conn));
            }
            _ => {}
        }
    }

    /// Whether no accepted request waits for its reply.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONN: ConnId = ConnId {
        client: ClientId::Requester(0),
        n: 1,
    };

    fn request(seq: u64, reply_to: &str) -> (MsgId, Op) {
        let msg = MsgId { producer: 0, seq };
        let op = Op::Request {
            conn: CONN,
            msg,
            to: REQUESTS.to_owned(),
            reply_to: reply_to.to_owned(),
        };
        (msg, op)
    }

    fn accepted(msg: MsgId) -> Op {
        Op::RequestOutcome {
            conn: CONN,
            msg,
            outcome: Outcome::Accepted,
        }
    }

    /// Found by the simulator (3 nodes, seed 0x16e): a request accepted
    /// just after its reply queue was deleted was awaited for good, and the
    /// drain ran to the liveness bound.
    #[test]
    fn a_request_accepted_after_its_reply_queue_died_is_not_awaited() {
        let mut awaited = Awaited::default();
        let (old, sent_old) = request(0, "dynamic.1");
        let (new, sent_new) = request(1, "dynamic.2");
        awaited.observe(&sent_old);
        awaited.observe(&Op::TempQueueDeleted {
            conn: CONN,
            address: "dynamic.1".to_owned(),
        });
        awaited.observe(&sent_new);
        awaited.observe(&accepted(old));
        assert!(awaited.is_empty(), "its reply has nowhere to go");
        awaited.observe(&accepted(new));
        assert!(!awaited.is_empty(), "its reply queue lives");
        awaited.observe(&Op::ReplyDelivered {
            conn: CONN,
            msg: new,
            to: "dynamic.2".to_owned(),
            queue: "dynamic.2".to_owned(),
        });
        assert!(awaited.is_empty());
    }
}
