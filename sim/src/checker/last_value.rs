//! Rules 16 and 17: the last-value queue (see docs/simulation.md).
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

use super::{Rule, Violation};
use crate::history::{Event, MsgId, Op, Outcome};
use crate::queue_types::LAST_VALUE_QUEUE;
use crate::workload::WorkloadParams;

/// How long after its successor was accepted a superseded message may
/// still arrive: as [`super::EXPIRY_SLACK`], the successor's enqueue and
/// the consumer's delivery cross different links, and the broker may have
/// sent the superseded one just before it enqueued the successor.
pub const SUPERSEDED_SLACK: Duration = super::EXPIRY_SLACK;

/// What the history says of one message sent to the last-value queue.
#[derive(Debug, Default)]
struct Sent {
    key: u8,
    /// The history index and time of each send.
    sends: Vec<(usize, Duration)>,
    /// The history index and time of its first `accepted`.
    accepted: Option<(usize, Duration)>,
}

impl Sent {
    fn first_send(&self) -> usize {
        self.sends.first().map_or(usize::MAX, |(index, _)| *index)
    }

    /// Whether it was surely enqueued before history index `index`: sent
    /// once before it, and accepted before it.
    fn surely_enqueued_before(&self, index: usize) -> bool {
        let sent_before = self.sends.iter().filter(|(i, _)| *i < index).count();
        sent_before == 1 && self.accepted.is_some_and(|(accepted, _)| accepted < index)
    }
}

/// Rules 16 and 17, fed the history event by event.
#[derive(Debug, Default)]
pub struct LastValue {
    /// Every message sent to the last-value queue (gathered in a first
    /// pass: a later send decides whether an earlier message may vanish).
    sent: BTreeMap<MsgId, Sent>,
    /// Per key, the history index of the latest consume of one of its
    /// messages from the queue.
    consumed: BTreeMap<u8, usize>,
    /// Deliveries checked against rule 16, for the summary.
    pub deliveries_checked: u64,
    /// Deliveries after a successor's acceptance that faults excused.
    pub late_excused: u64,
}

impl LastValue {
    /// What rules 16 and 17 need to know ahead: every send to the queue
    /// and every acceptance of one of them.
    pub fn gather(events: &[Event], params: &WorkloadParams) -> Self {
        let mut rule = Self::default();
        if params.queue_types.last_value_keys.is_none() {
            return rule;
        }
        let lvq_producer =
            |msg: MsgId| params.typed_queue_of_producer(msg.producer) == Some(LAST_VALUE_QUEUE);
        for (index, event) in events.iter().enumerate() {
            match &event.op {
                Op::Send { msg, kind, .. } if lvq_producer(*msg) => {
                    let Some(key) = kind.key else { continue };
                    let sent = rule.sent.entry(*msg).or_default();
                    sent.key = key;
                    sent.sends.push((index, event.time));
                }
                Op::ProducerOutcome {
                    msg,
                    outcome: Outcome::Accepted,
                    ..
                } => {
                    if let Some(sent) = rule.sent.get_mut(msg) {
                        sent.accepted.get_or_insert((index, event.time));
                    }
                }
                _ => {}
            }
        }
        rule
    }

    /// Whether `msg` may vanish from the queue unconsumed, superseded by a
    /// message of its key that may have been enqueued after it.
    pub fn may_vanish(&self, msg: MsgId) -> bool {
        let Some(sent) = self.sent.get(&msg) else {
            return false;
        };
        let first_send = sent.first_send();
        self.sent.iter().any(|(other, o)| {
            *other != msg && o.key == sent.key && !o.surely_enqueued_before(first_send)
        })
    }

    /// Rule 17's bookkeeping: a consume from `queue`.
    pub fn observe_settle(&mut self, index: usize, queue: &str, msg: MsgId, outcome: Outcome) {
        if queue != LAST_VALUE_QUEUE || !outcome.consumes() {
            return;
        }
        if let Some(sent) = self.sent.get(&msg) {
            self.consumed.insert(sent.key, index);
        }
    }

    /// Rule 16: why the delivery of `msg` on `conn` at history index
    /// `index`, time `t2`, shows a superseded value, if it does.
    /// `excused(since)` says whether something other than the broker may
    /// have made a delivery late since `since` (a dead incarnation's or a
    /// stale delivery, a late link or commit, a node cut off).
    pub fn observe_delivery(
        &mut self,
        index: usize,
        t2: Duration,
        queue: &str,
        msg: MsgId,
        excused: impl Fn(Duration) -> bool,
    ) -> Option<String> {
        if queue != LAST_VALUE_QUEUE {
            return None;
        }
        let sent = self.sent.get(&msg)?;
        let sent_before = sent.sends.iter().filter(|(i, _)| *i < index).count();
        let (accepted, _) = sent.accepted?;
        if sent_before != 1 {
            return None;
        }
        self.deliveries_checked += 1;
        // The earliest acceptance of a successor surely enqueued after it.
        let successor = self
            .sent
            .iter()
            .filter(|(other, o)| **other != msg && o.key == sent.key && o.first_send() > accepted)
            .filter_map(|(other, o)| o.accepted.map(|(i, t)| (t, i, *other)))
            .filter(|&(t1, i, _)| i < index && t1 + SUPERSEDED_SLACK < t2)
            .min()?;
        let (t1, successor_index, successor) = successor;
        if excused(t1) {
            self.late_excused += 1;
            return None;
        }
        Some(format!(
            "{msg} (key {}) was replaced by {successor}, sent after {msg} was accepted and itself accepted at {:.3}s (history event {successor_index})",
            sent.key,
            t1.as_secs_f64()
        ))
    }

    /// Rule 17: each key whose newest accepted value was not consumed.
    pub fn finish(&self, events: &[Event]) -> Vec<Violation> {
        let mut newest: BTreeMap<u8, (usize, MsgId)> = BTreeMap::new();
        for (msg, sent) in &self.sent {
            if sent.accepted.is_some() {
                let first_send = sent.first_send();
                let entry = newest.entry(sent.key).or_insert((first_send, *msg));
                if first_send > entry.0 {
                    *entry = (first_send, *msg);
                }
            }
        }
        let mut found = Vec::new();
        for (key, (first_send, msg)) in newest {
            let consumed_after = self.consumed.get(&key).is_some_and(|c| *c > first_send);
            if consumed_after {
                continue;
            }
            let Some((index, time)) = self.sent.get(&msg).and_then(|s| s.accepted) else {
                continue;
            };
            found.push(Violation {
                rule: Rule::LastValueLost,
                index,
                time,
                detail: format!(
                    "{}: key {key}: no message of the key was consumed from {LAST_VALUE_QUEUE} after {msg}, an accepted one, was first sent (history event {first_send})",
                    events[index]
                ),
            });
        }
        found
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
