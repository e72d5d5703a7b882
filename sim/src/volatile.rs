//! Volatile (non-durable) topic subscriptions as the history shows them,
//! for rule 22 and for the drain, which waits for what they must get.
//!
//! A volatile subscriber's every link is a subscription of its own: the
//! broker makes it when it applies the link's attach (a queue named by the
//! broker, which the client never learns; the history names it after the
//! subscriber, the connection and the link: see
//! [`crate::workload::volatile_link_queue`]), and deletes it, with what it
//! holds, when its consumer detaches: the link closed or detached, its
//! connection lost, its node restarted, or, in a cluster, the group's leader
//! gave up on its node after a silence (docs/amqp-conformance.md,
//! "Durable subscriptions" and "A consumer whose node the cluster lost").
//!
//! What the history can prove of a link L of a volatile subscriber:
//!
//! - **Owed**: a topic message M the broker accepted on a connection P,
//!   whose first send on P was recorded after L's attach was answered (L's
//!   `Connected` or `Relinked`), while L was still alive (its end not yet
//!   recorded when the acceptance was): the accepted copy was published
//!   after the attach was answered, which the broker documents as enough
//!   for a copy (docs/amqp-conformance.md, "Topics"). A copy still waiting
//!   in the subscription goes with it, so what L was owed and never got is
//!   a violation only if L lived to the end of the run: it ended with its
//!   client's last act, a close the broker answered, after the drain
//!   (which waits for what live links are owed).
//! - **Never there**: the subscription did not exist before its attach
//!   was sent, so a message every send of which was answered before that
//!   (the subscriber's last act before L's attach answer bounds when it
//!   was sent) was enqueued or refused before L's queue existed, and is
//!   never delivered on L.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::history::{ClientId, ConnId, Event, MsgId, Op, Outcome};
use crate::workload::{WorkloadParams, volatile_link_queue};

/// How a link's life ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEnd {
    /// Its client detached it and attached another on the connection.
    Relinked,
    /// Its connection was lost.
    Lost,
    /// Its client closed the connection and the broker answered.
    Closed,
}

/// One link of a volatile subscriber: one subscription.
#[derive(Debug, Clone)]
pub struct Link {
    /// The history's name of its subscription.
    pub queue: String,
    /// Its connection.
    pub conn: ConnId,
    /// The history index of its attach's answer (`Connected` or
    /// `Relinked`).
    pub attached: usize,
    /// The history index of its client's last act before it: its attach
    /// was sent after this.
    pub requested_after: usize,
    /// How and at which history index it ended, if it did.
    pub end: Option<(usize, LinkEnd)>,
    /// The messages it is owed and did not get (yet), each with the
    /// history index and time of its acceptance.
    pub owed: BTreeMap<MsgId, (usize, Duration)>,
    /// The messages delivered on it.
    pub got: BTreeSet<MsgId>,
}

/// How many times something happened to a message, and the history index
/// of the last.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    count: u64,
    last: usize,
}

impl Tally {
    fn add(&mut self, index: usize) {
        self.count += 1;
        self.last = index;
    }
}

/// Every volatile subscription of a history so far, with what it is owed.
#[derive(Debug)]
pub struct VolatileLinks {
    params: WorkloadParams,
    /// Every link, in the order they were attached.
    links: Vec<Link>,
    /// The live link of each connection, by its place in `links`.
    live: BTreeMap<ConnId, usize>,
    /// How many links each connection attached.
    attached_on: BTreeMap<ConnId, u32>,
    /// Each volatile subscriber's last act so far.
    last_act: BTreeMap<ClientId, usize>,
    /// When each topic message was first sent on each connection.
    first_send_on: BTreeMap<(ConnId, MsgId), usize>,
    /// Each topic message's sends and answers so far.
    sends: BTreeMap<MsgId, Tally>,
    answers: BTreeMap<MsgId, Tally>,
}

impl VolatileLinks {
    /// None yet, for a run of `params`.
    pub fn new(params: &WorkloadParams) -> Self {
        Self {
            params: params.clone(),
            links: Vec::new(),
            live: BTreeMap::new(),
            attached_on: BTreeMap::new(),
            last_act: BTreeMap::new(),
            first_send_on: BTreeMap::new(),
            sends: BTreeMap::new(),
            answers: BTreeMap::new(),
        }
    }

    /// Every link so far.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The link whose subscription the history names `queue`.
    pub fn link_of(&self, queue: &str) -> Option<&Link> {
        if !self.params.is_volatile_queue(queue) {
            return None;
        }
        self.links.iter().rev().find(|link| link.queue == queue)
    }

    /// Whether every send of `msg` so far was answered before history
    /// index `before`: its every copy was enqueued, or refused, by then.
    pub fn answered_before(&self, msg: MsgId, before: usize) -> bool {
        let sends = self.sends.get(&msg).copied().unwrap_or_default();
        let answers = self.answers.get(&msg).copied().unwrap_or_default();
        sends.count > 0
            && answers.count == sends.count
            && sends.last < before
            && answers.last < before
    }

    /// Whether `link` lived to the end of the run: it ended with its
    /// client's last act, a close the broker answered.
    pub fn lived_to_the_end(&self, link: &Link) -> bool {
        matches!(link.end, Some((index, LinkEnd::Closed))
            if self.last_act.get(&link.conn.client) == Some(&index))
    }

    /// Whether a live link is owed a message that `excused` does not let
    /// go (given the message and the time it was accepted at).
    pub fn awaiting(&self, excused: impl Fn(MsgId, Duration) -> bool) -> bool {
        self.live.values().any(|&place| {
            self.links[place]
                .owed
                .iter()
                .any(|(msg, (_, time))| !excused(*msg, *time))
        })
    }

    fn volatile_conn(&self, conn: ConnId) -> bool {
        matches!(conn.client, ClientId::Subscriber(n) if self.params.is_volatile(n))
    }

    /// Takes in the history's event `index`.
    pub fn observe(&mut self, index: usize, event: &Event) {
        match &event.op {
            Op::Send { conn, msg, .. } if self.params.is_topic_producer(msg.producer) => {
                self.first_send_on.entry((*conn, *msg)).or_insert(index);
                self.sends.entry(*msg).or_default().add(index);
            }
            Op::ProducerOutcome { conn, msg, outcome }
                if self.params.is_topic_producer(msg.producer) =>
            {
                self.answers.entry(*msg).or_default().add(index);
                if *outcome == Outcome::Accepted {
                    self.owe(*conn, *msg, index, event.time);
                }
            }
            Op::Connected { conn, .. } if self.volatile_conn(*conn) => self.attach(*conn, index),
            Op::Relinked { conn } if self.volatile_conn(*conn) => {
                self.end(*conn, index, LinkEnd::Relinked);
                self.attach(*conn, index);
            }
            Op::ConnectionLost { conn, .. } if self.volatile_conn(*conn) => {
                self.end(*conn, index, LinkEnd::Lost);
            }
            Op::Closed { conn } if self.volatile_conn(*conn) => {
                self.end(*conn, index, LinkEnd::Closed);
            }
            Op::Delivered { queue, msg, .. } if self.params.is_volatile_queue(queue) => {
                if let Some(link) = self.links.iter_mut().rev().find(|l| l.queue == *queue) {
                    link.owed.remove(msg);
                    link.got.insert(*msg);
                }
            }
            _ => {}
        }
        if let Some(conn) = subscriber_conn(&event.op).filter(|conn| self.volatile_conn(*conn)) {
            self.last_act.insert(conn.client, index);
        }
    }

    /// A link attached on `conn`, answered at history index `index`.
    fn attach(&mut self, conn: ConnId, index: usize) {
        let n = self.attached_on.entry(conn).or_default();
        *n += 1;
        let ClientId::Subscriber(subscriber) = conn.client else {
            return;
        };
        let named = self.params.volatile_subscription(subscriber);
        let requested_after = self.last_act.get(&conn.client).copied().unwrap_or(0);
        self.live.insert(conn, self.links.len());
        self.links.push(Link {
            queue: volatile_link_queue(&named, conn, *n),
            conn,
            attached: index,
            requested_after,
            end: None,
            owed: BTreeMap::new(),
            got: BTreeSet::new(),
        });
    }

    fn end(&mut self, conn: ConnId, index: usize, how: LinkEnd) {
        if let Some(place) = self.live.remove(&conn) {
            self.links[place].end = Some((index, how));
        }
    }

    /// `msg`, accepted on `conn` at `index`, is owed to every live link
    /// attached before its first send on `conn`.
    fn owe(&mut self, conn: ConnId, msg: MsgId, index: usize, time: Duration) {
        let Some(&sent) = self.first_send_on.get(&(conn, msg)) else {
            return;
        };
        for &place in self.live.values() {
            let link = &mut self.links[place];
            if link.attached < sent && !link.got.contains(&msg) {
                link.owed.entry(msg).or_insert((index, time));
            }
        }
    }
}

/// The connection of an act a subscriber records.
fn subscriber_conn(op: &Op) -> Option<ConnId> {
    match op {
        Op::Connected { conn, .. }
        | Op::ConnectionLost { conn, .. }
        | Op::Closed { conn }
        | Op::Relinked { conn }
        | Op::Delivered { conn, .. }
        | Op::Settled { conn, .. }
        | Op::SettleConfirmed { conn, .. }
        | Op::SettleModeRefused { conn } => Some(*conn),
        _ => None,
    }
}
