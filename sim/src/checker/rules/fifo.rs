//! Rule 4.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule};
use crate::history::{ClientId, ConnId, Event, MsgId, Op};
use crate::queue_types::GROUPED_QUEUE;
use crate::workload::WorkloadParams;

use super::{Check, violation};

/// Rule 4, **per-producer FIFO**: on a queue with one consumer, within one
/// broker lifetime (between restarts of any node), the first-ever
/// deliveries of messages sent exactly once, with delivery-count 0, arrive
/// in each producer's sequence order. Messages sent twice, released,
/// modified, or lost with a link are excluded, because the protocol lets
/// those move; so are scheduled messages, which are meant to arrive out of
/// order. So are messages first sent before the consumer's current link
/// was attached: a broker goes on handing messages to the consumer's
/// previous link until it learns that link is gone (a connection that lost
/// its way back to the client lives on at the broker until its idle
/// timeout; in a cluster, the group waits for the detach to be
/// committed), and then returns what it never sent (a release, which keeps
/// delivery-count 0), so they may come back after later ones (1 node,
/// lossy-net, seeds 0xb59, 0x1007 and 0x1299).
///
/// Across connections, only what the producer knew was accepted keeps its
/// place: a message whose connection ended before its outcome came (one
/// sent presettled, or in a transaction whose commit went unanswered) may
/// still be on its way through the cluster, and be applied after what the
/// producer sent on its next connection (5 nodes, seeds 0x120c, 0x3e4 and
/// 0xc58). So two messages of a producer are ordered if they were sent on
/// the same connection, or the first was accepted before the second was
/// sent.
///
/// The grouped queue has several consumers, yet each group goes to one at
/// a time, and to another only once the first settled what it held of it
/// (after it received it) or its link ended (which counts a failed
/// delivery on what it held, or, in a cluster, comes with an attach after
/// it): so the rule holds there per producer *and group*, any consumer's
/// attach counting as the queue's consumer's.
pub(super) struct Fifo<'h> {
    /// How many consumers read each queue.
    consumers_per_queue: BTreeMap<String, u32>,
    /// Per stream, the last in-order seq this broker life, and the
    /// history index of its delivery.
    last: BTreeMap<Stream, (u64, usize)>,
    /// When each queue's consumer last attached a link.
    linked_at: BTreeMap<&'h str, Duration>,
    /// The queue each consumer's connection reads.
    conn_queue: BTreeMap<ConnId, &'h str>,
    /// Each message's first send: its history index and connection.
    first_send: BTreeMap<MsgId, (usize, ConnId)>,
}

/// What keeps its order: a queue's messages of one producer, priority and
/// group.
type Stream = (String, u32, Option<u8>, Option<u8>);

impl Fifo<'_> {
    pub(super) fn new(params: &WorkloadParams) -> Self {
        let mut consumers_per_queue: BTreeMap<String, u32> = BTreeMap::new();
        for consumer in params.all_consumers() {
            *consumers_per_queue
                .entry(params.consumer_queue(consumer).to_owned())
                .or_default() += 1;
        }
        for subscriber in params.durable_subscribers() {
            consumers_per_queue.insert(params.subscription(subscriber), 1);
        }
        Fifo {
            consumers_per_queue,
            last: BTreeMap::new(),
            linked_at: BTreeMap::new(),
            conn_queue: BTreeMap::new(),
            first_send: BTreeMap::new(),
        }
    }

    /// Whether `first` must arrive before `later`: both were sent on one
    /// connection, or `first` was accepted before `later` was sent.
    fn ordered(&self, facts: &Facts<'_>, first: MsgId, later: MsgId) -> bool {
        let (Some(&(_, first_conn)), Some(&(later_sent, later_conn))) =
            (self.first_send.get(&first), self.first_send.get(&later))
        else {
            return true;
        };
        first_conn == later_conn
            || (facts.accepted.get(&first)).is_some_and(|&(accepted, _)| accepted < later_sent)
    }
}

impl<'h> Check<'h> for Fifo<'h> {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        facts: &Facts<'h>,
        report: &mut CheckReport,
    ) {
        match &event.op {
            Op::BrokerStart { .. } => self.last.clear(),
            Op::Send { conn, msg, .. } => {
                self.first_send.entry(*msg).or_insert((index, *conn));
            }
            Op::Connected { conn, address, .. }
                if !matches!(conn.client, ClientId::Producer(_)) =>
            {
                self.conn_queue.insert(*conn, address.as_str());
                self.linked_at.insert(address.as_str(), event.time);
                self.last.retain(|(queue, ..), _| queue != address);
            }
            Op::Relinked { conn } => {
                if let Some(&queue) = self.conn_queue.get(conn) {
                    self.linked_at.insert(queue, event.time);
                    self.last.retain(|(q, ..), _| q != queue);
                }
            }
            _ => {}
        }
        let Some(delivery) = &facts.delivery else {
            return;
        };
        let (queue, msg) = (delivery.queue, delivery.msg);
        let single_consumer =
            self.consumers_per_queue.get(queue) == Some(&1) || queue == GROUPED_QUEUE;
        // The broker only rewrites the header (delivery-count,
        // first-acquirer) on a redelivery, and counts a delivery lost with
        // its link as failed; so delivery-count 0 on the first delivery
        // the client saw means no earlier acquirer.
        let sent_before_link = self
            .linked_at
            .get(queue)
            .is_some_and(|linked| facts.first_sent.get(&msg).is_some_and(|sent| sent < linked));
        let clean = facts.timeline.send_counts.get(&msg) == Some(&1)
            && facts.timeline.kind(msg).delay.is_none()
            && delivery.first
            && delivery.delivery_count == 0
            && !sent_before_link;
        if !(single_consumer && clean) {
            return;
        }
        let kind = facts.timeline.kind(msg);
        let key = (queue.to_owned(), msg.producer, kind.priority, kind.group);
        let before = self.last.get(&key).filter(|(last, _)| {
            let later = MsgId {
                producer: msg.producer,
                seq: *last,
            };
            *last > msg.seq && self.ordered(facts, msg, later)
        });
        if let Some((last, last_index)) = before {
            let detail = format!(
                "{msg} arrived after p{}#{last} (history event {last_index})",
                msg.producer
            );
            report
                .violations
                .push(violation(Rule::Fifo, index, event, detail));
        }
        self.last.insert(key, (msg.seq, index));
    }

    fn finish(self: Box<Self>, _facts: &Facts<'h>, report: &mut CheckReport) {
        report.stats.checked.insert(Rule::Fifo);
    }
}
