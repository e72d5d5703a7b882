//! The last-value queue's model, for rules 2, 5, 16 and 17 and the
//! drain (see docs/simulation.md).
//!
//! Its producer marks each message with a key (one of a few); the broker
//! keeps one waiting message per key, a newer one replacing the older
//! (held or ready). Which message of a key is *newer* is the order the
//! broker enqueued them in, which the history bounds but does not always
//! give: one connection's messages are enqueued in the order they were
//! sent, but a copy sent on a connection later lost may arrive late, after
//! messages sent later. So the rules reason from what is sure:
//!
//! - M was surely enqueued before M' if M was sent once and its producer
//!   saw it accepted before M' was first sent. Then, once M' is accepted
//!   (a copy of it is enqueued, after M's), M is gone from the queue, and
//!   a delivery of M later than that is a violation (rule 16), unless
//!   something may have made it late (as rule 9 allows a late delivery
//!   after an expiry).
//! - M may vanish unconsumed (rule 2 excuses it, and rule 5's lower bound
//!   leaves it out) if another message of its key may have been enqueued
//!   after it: any but one surely enqueued before it.
//! - The message of a key enqueued last is never replaced, so it is
//!   consumed by the end of the drain: for each key with an accepted
//!   message, some message of that key is consumed after the first send of
//!   every accepted one (rule 17: the newest value is not lost). The last
//!   one enqueued was enqueued after each accepted one was, so after each
//!   was first sent, and it is consumed after it was enqueued.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::history::{Event, MsgId, Op, Outcome};
use crate::queue_types::LAST_VALUE_QUEUE;
use crate::workload::WorkloadParams;

/// What the history says of one message sent to the last-value queue.
#[derive(Debug, Default)]
pub(super) struct Sent {
    pub(super) key: u8,
    /// The history index and time of each send.
    pub(super) sends: Vec<(usize, Duration)>,
    /// The history index and time of its first `accepted`.
    pub(super) accepted: Option<(usize, Duration)>,
}

impl Sent {
    pub(super) fn first_send(&self) -> usize {
        self.sends.first().map_or(usize::MAX, |(index, _)| *index)
    }

    /// Whether it was surely enqueued before history index `index`: sent
    /// once before it, and accepted before it.
    fn surely_enqueued_before(&self, index: usize) -> bool {
        let sent_before = self.sends.iter().filter(|(i, _)| *i < index).count();
        sent_before == 1 && self.accepted.is_some_and(|(accepted, _)| accepted < index)
    }
}

/// Every message sent to the last-value queue, gathered in the first pass
/// (a later send decides whether an earlier message may vanish): what
/// rules 2 and 5 excuse, and what rules 16 and 17 judge by.
#[derive(Debug, Default)]
pub(super) struct LastValues {
    pub(super) sent: BTreeMap<MsgId, Sent>,
}

impl LastValues {
    /// Every send to the queue and every acceptance of one of them.
    pub(super) fn gather(events: &[Event], params: &WorkloadParams) -> Self {
        let mut gathered = Self::default();
        if params.queue_types.last_value_keys.is_none() {
            return gathered;
        }
        let lvq_producer =
            |msg: MsgId| params.typed_queue_of_producer(msg.producer) == Some(LAST_VALUE_QUEUE);
        for (index, event) in events.iter().enumerate() {
            match &event.op {
                Op::Send { msg, kind, .. } if lvq_producer(*msg) => {
                    let Some(key) = kind.key else { continue };
                    let sent = gathered.sent.entry(*msg).or_default();
                    sent.key = key;
                    sent.sends.push((index, event.time));
                }
                Op::ProducerOutcome {
                    msg,
                    outcome: Outcome::Accepted,
                    ..
                } => {
                    if let Some(sent) = gathered.sent.get_mut(msg) {
                        sent.accepted.get_or_insert((index, event.time));
                    }
                }
                _ => {}
            }
        }
        gathered
    }

    /// Whether `msg` may vanish from the queue unconsumed, superseded by a
    /// message of its key that may have been enqueued after it.
    pub(super) fn may_vanish(&self, msg: MsgId) -> bool {
        let Some(sent) = self.sent.get(&msg) else {
            return false;
        };
        let first_send = sent.first_send();
        self.sent.iter().any(|(other, o)| {
            *other != msg && o.key == sent.key && !o.surely_enqueued_before(first_send)
        })
    }
}

/// The drain's view of rule 17, fed as the run goes: whether every key's
/// newest accepted value has been consumed, so the drain need not wait
/// for values that were replaced.
#[derive(Debug, Default)]
pub struct LastValueDrain {
    /// Per message to the queue: its key and the index of its first send.
    first_sends: BTreeMap<MsgId, (u8, usize)>,
    /// Per key, the first send of its newest accepted value.
    needed: BTreeMap<u8, usize>,
    /// Per key, the latest consume.
    consumed: BTreeMap<u8, usize>,
}

impl LastValueDrain {
    /// A send of `msg` with last-value key `key`, at history index `index`.
    pub fn sent(&mut self, index: usize, msg: MsgId, key: u8) {
        self.first_sends.entry(msg).or_insert((key, index));
    }

    /// Whether `msg` is a message of the last-value queue.
    pub fn has(&self, msg: MsgId) -> bool {
        self.first_sends.contains_key(&msg)
    }

    /// `msg` was accepted: its key's newest value is at least as new.
    pub fn accepted(&mut self, msg: MsgId) {
        if let Some(&(key, first_send)) = self.first_sends.get(&msg) {
            let needed = self.needed.entry(key).or_insert(first_send);
            *needed = (*needed).max(first_send);
        }
    }

    /// A consume of `msg` at history index `index`.
    pub fn consumed(&mut self, index: usize, msg: MsgId) {
        if let Some(&(key, _)) = self.first_sends.get(&msg) {
            self.consumed.insert(key, index);
        }
    }

    /// Whether every key's newest accepted value was consumed.
    pub fn done(&self) -> bool {
        self.needed
            .iter()
            .all(|(key, needed)| self.consumed.get(key).is_some_and(|c| c > needed))
    }
}
