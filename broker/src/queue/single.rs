//! One queue: its messages in seq order, its consumers, admission under its
//! limits, and dispatch.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Excluded, Unbounded};

use super::consumer::{AttachOrder, Consumer, Mode};
use super::dedup::Dedup;
use super::message::{Message, Tally};
use super::paging::{Paged, Pager, Run};
use super::ready::{Key, Ready};
use super::whole::{self, Bodies};
use super::{
    ConsumerId, Effect, LazyFields, MessageFilter, Overflow, QueueConfig, QueueInfo, QueueStats,
    Seq, Seqs,
};
use crate::amqp::codec::Value;
use bytes::{Bytes, BytesMut};

/// How a message arrives, which decides whether it may displace others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Published: a drop-head queue makes room for it.
    Publish,
    /// Dead-lettered or restored: it fits as things are, or not at all, so
    /// dead-letter chains cannot go on forever.
    DeadLetter,
}

/// One queue.
///
/// Every message is in exactly one place: `ready`, the `unsettled` set of
/// the acquiring consumer named by its `holder`, or its rank's run in the
/// page store (see [`super::paging`]). Browsers hold nothing.
///
/// Its type shapes dispatch ([`QueueConfig`]): a priority queue ranks ready
/// messages by priority before seq; a last-value queue keeps one waiting
/// message per key; with message groups a group's messages go to the
/// consumer holding messages of the group, if any; with a single active
/// consumer only the earliest attached acquiring consumer receives. A
/// scheduled message waits, ready, until its time.
#[derive(Debug)]
pub(super) struct Queue {
    /// Its name, for the effects it emits.
    pub name: String,
    /// How it behaves.
    pub config: QueueConfig,
    /// Every message it holds in memory, by seq.
    messages: BTreeMap<Seq, Message>,
    /// Each rank's paged messages, which come after those of the rank in
    /// memory.
    runs: BTreeMap<u8, Run>,
    /// The messages in `messages`.
    hot: Tally,
    /// The messages no consumer holds, in delivery order: by rank (see
    /// [`Queue::rank`]), then seq.
    ready: Ready,
    /// `(deliver_at_ms, seq)` of every message scheduled for later, until
    /// its time has come.
    scheduled: BTreeSet<(u64, Seq)>,
    /// In a last-value queue, the messages of each key value: one, but for
    /// dead-lettered arrivals, which add to it rather than replace.
    last_values: BTreeMap<Bytes, BTreeSet<Seq>>,
    /// With message groups, each group some consumer holds messages of:
    /// that consumer, and how many it holds.
    groups: BTreeMap<String, (ConsumerId, usize)>,
    /// The consumers in attach order: a single active consumer's turn.
    order: AttachOrder,
    /// `(expiry_ms, seq)` of every message that expires, paged or not.
    expiries: BTreeSet<(u64, Seq)>,
    /// All its messages.
    all: Tally,
    /// Its persistent messages: the only ones a durable decision may count.
    persistent: Tally,
    /// Its consumers, acquiring and browsing.
    consumers: BTreeMap<ConsumerId, Consumer>,
    /// The acquiring consumers with credit: all that dispatch looks at, so
    /// that thousands of idle consumers cost a delivery nothing.
    with_credit: BTreeSet<ConsumerId>,
    /// The browsers with credit.
    browsers_with_credit: BTreeSet<ConsumerId>,
    /// The consumers that refuse some message (`undeliverable-here`): all
    /// that a message leaving the queue has to be forgotten by.
    refusing: BTreeSet<ConsumerId>,
    /// The consumer that received the last acquired delivery; the next one
    /// goes to the next consumer after it (round robin).
    last_served: Option<ConsumerId>,
    /// The `message-id`s taken lately.
    pub dedup: Dedup,
    /// Its counters, for metrics (volatile).
    pub stats: QueueStats,
    /// Its earliest expiry or schedule as last filed in the machine's
    /// timers.
    pub counted_timer: Option<u64>,
}

impl Queue {
    /// An empty queue.
    pub fn new(name: String, config: QueueConfig) -> Self {
        Self {
            name,
            config,
            messages: BTreeMap::new(),
            runs: BTreeMap::new(),
            hot: Tally::ZERO,
            ready: Ready::default(),
            scheduled: BTreeSet::new(),
            last_values: BTreeMap::new(),
            groups: BTreeMap::new(),
            order: AttachOrder::default(),
            expiries: BTreeSet::new(),
            all: Tally::ZERO,
            persistent: Tally::ZERO,
            consumers: BTreeMap::new(),
            with_credit: BTreeSet::new(),
            browsers_with_credit: BTreeSet::new(),
            refusing: BTreeSet::new(),
            last_served: None,
            dedup: Dedup::default(),
            stats: QueueStats::default(),
            counted_timer: None,
        }
    }

    /// The message `seq`, if this queue holds it in memory.
    pub fn message(&self, seq: Seq) -> Option<&Message> {
        self.messages.get(&seq)
    }

    /// Every seq it holds in memory, in order.
    pub fn seqs(&self) -> impl Iterator<Item = Seq> + '_ {
        self.messages.keys().copied()
    }

    /// Its runs of paged messages, by rank.
    pub fn runs(&self) -> impl Iterator<Item = (u8, &Run)> {
        self.runs.iter().map(|(&rank, run)| (rank, run))
    }

    /// What its part of a snapshot takes besides the bodies in memory
    /// (which the group counts, a body that copies share once), at most:
    /// `per_message` for each message in memory, and a paged message's
    /// expiry (a paged message is otherwise in its run).
    pub fn snapshot_bytes_besides_bodies(&self, per_message: u64) -> u64 {
        let paged_expiring: u64 = self.runs.values().map(|run| run.expiring).sum();
        let expiry_bytes = 2 * std::mem::size_of::<u64>() as u64;
        self.hot
            .count
            .saturating_mul(per_message)
            .saturating_add(paged_expiring.saturating_mul(expiry_bytes))
    }

    /// Counts what it holds in memory into the `pager` of the group it is
    /// restored into: copies then share their bodies again.
    pub fn count_restored(&mut self, pager: &mut Pager) {
        for message in self.messages.values_mut() {
            pager.count_in(message);
        }
    }

    /// Pages in whatever holds message `seq`, if it is paged; true if the
    /// queue holds it.
    pub fn fetch(&mut self, seq: Seq, pager: &mut Pager) -> bool {
        while !self.messages.contains_key(&seq) {
            let Some(rank) = self.run_spanning(seq) else {
                return false;
            };
            self.page_in(rank, pager);
        }
        true
    }

    fn run_spanning(&self, seq: Seq) -> Option<u8> {
        let mut runs = self.runs.iter();
        runs.find(|(_, run)| run.spans(seq)).map(|(&rank, _)| rank)
    }

    /// Pages in the front of rank `rank`'s run.
    fn page_in(&mut self, rank: u8, pager: &mut Pager) {
        let mut run = self.runs.remove(&rank).expect("paging in a run");
        let records = pager.page_in(&mut run);
        let last = records.len() - 1;
        for (i, mut payload) in records.into_iter().enumerate() {
            let (seq, mut message) =
                whole::message_of(&mut payload, &self.config, &mut Bodies::Alone)
                    .unwrap_or_else(|error| panic!("run {} has a bad record: {error}", run.id));
            run.took(paged(&message));
            // PLANTED BUG (`page-in-drops`): the last of several paged in is
            // dropped, as if it had been consumed.
            if pager.plants().page_in_drops() && i == last && last > 0 {
                self.forget_paged(seq, &message);
                continue;
            }
            pager.count_in(&mut message);
            self.hold_in_memory(seq, message);
        }
        if run.is_empty() {
            pager.drop_run(&run);
        } else {
            self.runs.insert(rank, run);
        }
    }

    /// Counts out a paged message that goes without being held in memory.
    fn forget_paged(&mut self, seq: Seq, message: &Message) {
        self.all.remove(message.size());
        if message.persistent {
            self.persistent.remove(message.size());
        }
        if let Some(expiry_ms) = message.expiry_ms {
            self.expiries.remove(&(expiry_ms, seq));
        }
    }

    /// Pages in the front of the first run in delivery order; false if
    /// there is none.
    fn page_in_first(&mut self, pager: &mut Pager) -> bool {
        let Some(&rank) = self.runs.keys().next() else {
            return false;
        };
        self.page_in(rank, pager);
        true
    }

    /// Pages every run in.
    #[cfg(test)]
    pub fn page_in_all(&mut self, pager: &mut Pager) {
        while self.page_in_first(pager) {}
    }

    /// The first seq and rank of the run with the first paged message
    /// after `after` in seq order, if any: memory holds the messages after
    /// `after` in seq order only up to that seq.
    fn first_paged_after(&self, after: Option<Seq>) -> Option<(Seq, u8)> {
        first_paged_after(&self.runs, after)
    }

    /// The first ready message after `after` in seq order, but `except`'s,
    /// paging in as far as it must to find it.
    pub fn next_ready(
        &mut self,
        after: Option<Seq>,
        except: &Seqs,
        pager: &mut Pager,
    ) -> Option<Seq> {
        loop {
            let first_paged = self.first_paged_after(after);
            if let Some((first, rank)) = first_paged
                && after.is_some_and(|after| first <= after)
            {
                self.page_in(rank, pager);
                continue;
            }
            let start = after.map_or(Unbounded, Excluded);
            let end = first_paged.map_or(Unbounded, |(first, _)| Excluded(first));
            let found = self
                .messages
                .range((start, end))
                .find(|(seq, m)| m.holder.is_none() && !except.0.contains(seq));
            if let Some((&seq, _)) = found {
                return Some(seq);
            }
            let (_, rank) = first_paged?;
            self.page_in(rank, pager);
        }
    }

    /// Drops its ready messages but `except`'s, paged ones included;
    /// returns how many.
    pub fn purge(&mut self, except: &Seqs, pager: &mut Pager) -> u64 {
        let ready: Vec<Seq> = self
            .messages
            .iter()
            .filter(|(seq, m)| m.holder.is_none() && !except.0.contains(seq))
            .map(|(&seq, _)| seq)
            .collect();
        let mut count = ready.len() as u64;
        for seq in ready {
            self.remove(seq, pager);
        }
        for run in std::mem::take(&mut self.runs).into_values() {
            self.all.deduct(run.all);
            self.persistent.deduct(run.persistent);
            count += run.all.count;
            pager.drop_run(&run);
        }
        // What expires now is in memory.
        let hot = &self.messages;
        self.expiries.retain(|(_, seq)| hot.contains_key(seq));
        count
    }

    /// The queue is deleted: what it held leaves the group's memory and
    /// its runs.
    pub fn dispose(self, pager: &mut Pager) {
        for message in self.messages.values() {
            pager.count_out(message);
        }
        for run in self.runs.values() {
            pager.drop_run(run);
        }
    }

    /// Where the ready messages in memory stop being the next in delivery
    /// order: the first run's first message. Ready keys before it are the
    /// first in order; the run must be paged in to see past it.
    fn ready_bound(&self) -> Option<Key> {
        let (&rank, run) = self.runs.first_key_value()?;
        Some((rank, run.first_seq))
    }

    /// Whether an arrival goes to its rank's run rather than memory: it
    /// must be a plain message that the queue types need not index (no
    /// schedule, no last value) and come after the run's last, and the
    /// queue must page already, or be over its budget in a group over its
    /// own.
    fn pages_out(&self, seq: Seq, message: &Message, pager: &Pager) -> bool {
        if message.deliver_at_ms().is_some() || message.last_value().is_some() {
            return false;
        }
        match self.runs.get(&self.rank(message)) {
            Some(run) => seq > run.last_seq,
            None => pager.pages_out(self.hot.bytes, message.copy_of.is_some()),
        }
    }

    /// Whether it pages its arrivals now, or would page the next one
    /// (`copy`: if it is one of a topic's copies). A last-value queue
    /// does not: it keeps its keyed messages in memory, one per key.
    pub fn pages(&self, copy: bool, pager: &Pager) -> bool {
        self.config.last_value_key.is_none()
            && (!self.runs.is_empty() || pager.pages_out(self.hot.bytes, copy))
    }

    /// The consumer `id`, if attached here.
    pub fn consumer(&self, id: ConsumerId) -> Option<&Consumer> {
        self.consumers.get(&id)
    }

    /// Its consumers' ids, in order.
    pub fn consumer_ids(&self) -> impl Iterator<Item = ConsumerId> + '_ {
        self.consumers.keys().copied()
    }

    /// The earliest time something is due: a message expires, or a
    /// scheduled one's time comes.
    pub fn next_expiry(&self) -> Option<u64> {
        let expiry = self.expiries.first().map(|&(expiry_ms, _)| expiry_ms);
        let scheduled = self.scheduled.first().map(|&(at_ms, _)| at_ms);
        expiry.into_iter().chain(scheduled).min()
    }

    /// Forgets the schedule of the messages whose time has come at
    /// `now_ms`; true if there were any, to dispatch them.
    pub fn wake_scheduled(&mut self, now_ms: u64) -> bool {
        let later = self.scheduled.split_off(&(now_ms.saturating_add(1), 0));
        let woken = !self.scheduled.is_empty();
        self.scheduled = later;
        woken
    }

    /// Where a message ranks among the ready ones: 0 first. A priority
    /// queue ranks by priority, the highest first; any other ranks all
    /// alike, so seq alone orders them.
    fn rank(&self, message: &Message) -> u8 {
        match self.config.priority_levels {
            Some(levels) => {
                let top = levels.saturating_sub(1);
                top - message.priority().min(top)
            }
            None => 0,
        }
    }

    /// The ready-set entry of message `seq`.
    fn ready_key(&self, seq: Seq) -> (u8, Seq) {
        (self.rank(&self.messages[&seq]), seq)
    }

    /// The messages a new one with the same last value replaces, held or
    /// not: which consumer holds a message never decides its outcome (see
    /// the module documentation), so a held one goes too, and its settle
    /// finds nothing.
    pub fn replaced_by(&self, message: &Message) -> Vec<Seq> {
        let value = message.last_value();
        let seqs = value.and_then(|value| self.last_values.get(value));
        seqs.into_iter().flatten().copied().collect()
    }

    /// The messages due at `now_ms`, by expiry then seq.
    pub fn due(&self, now_ms: u64) -> Vec<Seq> {
        self.expiries
            .range(..=(now_ms, Seq::MAX))
            .map(|&(_, seq)| seq)
            .collect()
    }

    /// Its counters.
    pub fn info(&self) -> QueueInfo {
        let ready = self.ready.len() as u64;
        let paged: u64 = self.runs.values().map(|run| run.all.count).sum();
        QueueInfo {
            depth: ready + paged,
            unsettled: self.messages.len() as u64 - ready,
            bytes: self.all.bytes,
            consumers: self.consumers.len() as u64,
        }
    }

    /// The seq of the message it has held longest, if any.
    pub fn oldest_seq(&self) -> Option<Seq> {
        let hot = self.messages.first_key_value().map(|(&seq, _)| seq);
        let paged = self.runs.values().map(|run| run.first_seq);
        hot.into_iter().chain(paged).min()
    }

    /// How many more messages can be published before it refuses them;
    /// each counts as at least one byte. A drop-head queue never refuses.
    pub fn room(&self) -> u64 {
        if self.config.overflow == Overflow::DropHead {
            return u64::MAX;
        }
        let count = self
            .config
            .max_length
            .map_or(u64::MAX, |max| max.saturating_sub(self.all.count));
        let bytes = self
            .config
            .max_bytes
            .map_or(u64::MAX, |max| max.saturating_sub(self.all.bytes));
        count.min(bytes)
    }

    /// True if every one of `messages` (size, persistent), published in
    /// order, would be admitted: what a transaction checks before it
    /// commits. Conservative where drop-head makes room: a message that
    /// fits once older ones are dropped counts as if nothing were.
    pub fn admits_all(&self, messages: &[(u64, bool)]) -> bool {
        let (mut all, mut persistent) = (self.all, self.persistent);
        for &(size, is_persistent) in messages {
            let (tier, floor) = if is_persistent {
                (persistent, Tally::ZERO)
            } else {
                (all, persistent)
            };
            let admitted = tier.fits(size, &self.config)
                || (self.config.overflow == Overflow::DropHead && floor.fits(size, &self.config));
            if !admitted {
                return false;
            }
            all.add(size);
            if is_persistent {
                persistent.add(size);
            }
        }
        true
    }

    /// The tally a message competes in: persistent messages only among
    /// persistent ones, so that durable decisions replay exactly.
    fn tier(&self, persistent: bool) -> Tally {
        if persistent {
            self.persistent
        } else {
            self.all
        }
    }

    /// What is left of that tally once every message the message may
    /// displace is gone: a transient message may not displace persistent
    /// ones.
    fn floor(&self, persistent: bool) -> Tally {
        if persistent {
            Tally::ZERO
        } else {
            self.persistent
        }
    }

    /// True if a message of `size` bytes would be admitted.
    pub fn can_admit(&self, size: u64, persistent: bool, admission: Admission) -> bool {
        if self.tier(persistent).fits(size, &self.config) {
            return true;
        }
        admission == Admission::Publish
            && self.config.overflow == Overflow::DropHead
            && self.floor(persistent).fits(size, &self.config)
    }

    /// Admits a message, ready, or hands it back if it does not fit.
    /// Returns the messages evicted to make room, oldest first, for the
    /// caller to dead-letter.
    pub fn admit(
        &mut self,
        seq: Seq,
        message: Message,
        admission: Admission,
        pager: &mut Pager,
    ) -> Result<Vec<(Seq, Message)>, Message> {
        let size = message.size();
        let persistent = message.persistent;
        if !self.can_admit(size, persistent, admission) {
            return Err(message);
        }
        let mut evicted = Vec::new();
        // Drop-head, among the messages of its own kind.
        while !self.tier(persistent).fits(size, &self.config) {
            evicted.push(self.evict_oldest(persistent, pager));
        }
        // A persistent message also needs room among all messages: the
        // transient ones make way, which only volatile state notices.
        while !self.all.fits(size, &self.config) {
            debug_assert!(persistent, "a transient message fits its own tier");
            evicted.push(self.evict_oldest(false, pager));
        }
        self.insert(seq, message, pager);
        Ok(evicted)
    }

    /// Takes out its oldest message of the kind, paging in as far as it
    /// must to find it.
    fn evict_oldest(&mut self, persistent: bool, pager: &mut Pager) -> (Seq, Message) {
        loop {
            // Memory holds the oldest of the kind only if it comes before
            // every run's first message of the kind.
            let first_paged = self
                .runs
                .iter()
                .filter(|(_, run)| run.holds(persistent))
                .min_by_key(|(_, run)| run.first_seq)
                .map(|(&rank, run)| (run.first_seq, rank));
            let oldest = self
                .messages
                .iter()
                .take_while(|&(&seq, _)| first_paged.is_none_or(|(first, _)| seq < first))
                .find(|(_, m)| m.persistent == persistent)
                .map(|(&seq, _)| seq);
            if let Some(seq) = oldest {
                let message = self.remove(seq, pager).expect("the seq was just found");
                return (seq, message);
            }
            let (_, rank) = first_paged.expect("can_admit checked that evictions make room");
            self.page_in(rank, pager);
        }
    }

    fn insert(&mut self, seq: Seq, mut message: Message, pager: &mut Pager) {
        assert!(message.holder.is_none(), "messages arrive ready");
        assert!(
            !message.persistent || self.config.durable,
            "a transient queue holds a persistent message"
        );
        if let Some(expiry_ms) = message.expiry_ms {
            assert!(self.expiries.insert((expiry_ms, seq)));
        }
        self.all.add(message.size());
        if message.persistent {
            self.persistent.add(message.size());
        }
        assert!(self.all.within(&self.config), "admitted beyond the limits");
        if self.pages_out(seq, &message, pager) {
            let rank = self.rank(&message);
            let run = self
                .runs
                .entry(rank)
                .or_insert_with(|| pager.start_run(seq));
            let mut payload = BytesMut::new();
            whole::put_message(&mut payload, seq, &message, &mut Bodies::Alone);
            pager.page_out(run, seq, &payload, paged(&message));
            return;
        }
        pager.count_in(&mut message);
        self.hold_in_memory(seq, message);
    }

    /// Puts a ready message in memory, counted and expiring already.
    fn hold_in_memory(&mut self, seq: Seq, message: Message) {
        if let Some(at_ms) = message.deliver_at_ms() {
            self.scheduled.insert((at_ms, seq));
        }
        if let Some(value) = message.last_value() {
            self.last_values
                .entry(value.clone())
                .or_default()
                .insert(seq);
        }
        self.hot.add(message.size());
        let key = (self.rank(&message), seq);
        let ready = self.ready.insert(key, &message.body, &self.consumers);
        assert!(ready, "seq {seq} is already ready");
        let previous = self.messages.insert(seq, message);
        assert!(previous.is_none(), "seq {seq} is already held");
    }

    /// Takes message `seq` out of the queue, from wherever it is.
    pub fn remove(&mut self, seq: Seq, pager: &mut Pager) -> Option<Message> {
        if !self.fetch(seq, pager) {
            return None;
        }
        let mut message = self.messages.remove(&seq)?;
        self.hot.remove(message.size());
        pager.count_out(&message);
        let key = (self.rank(&message), seq);
        match message.holder.take() {
            Some(id) => {
                self.attached(id).unhold(seq);
                self.ungroup(&message);
            }
            None => assert!(self.ready.remove(&key), "seq {seq} is nowhere"),
        }
        if let Some(expiry_ms) = message.expiry_ms {
            assert!(self.expiries.remove(&(expiry_ms, seq)));
        }
        if let Some(at_ms) = message.deliver_at_ms() {
            self.scheduled.remove(&(at_ms, seq));
        }
        if let Some(value) = message.last_value()
            && let Some(seqs) = self.last_values.get_mut(value)
        {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.last_values.remove(value);
            }
        }
        self.all.remove(message.size());
        if message.persistent {
            self.persistent.remove(message.size());
        }
        let consumers = &mut self.consumers;
        self.refusing.retain(|id| {
            let consumer = consumers
                .get_mut(id)
                .expect("refusing consumers are attached");
            consumer.forget(seq);
            consumer.refuses_any()
        });
        Some(message)
    }

    /// Puts a held message back at its place, uncounted. A ready (or
    /// unknown) message stays as it is.
    pub fn release(&mut self, seq: Seq) {
        let Some(message) = self.messages.get_mut(&seq) else {
            return;
        };
        let Some(id) = message.holder.take() else {
            return;
        };
        let message = message.clone();
        self.attached(id).unhold(seq);
        self.ungroup(&message);
        let key = self.ready_key(seq);
        let ready = self.ready.insert(key, &message.body, &self.consumers);
        assert!(ready, "seq {seq} was held and ready");
    }

    /// A held message of a group is no longer held: once its holder holds
    /// none of the group, the group is free to go to any consumer.
    fn ungroup(&mut self, message: &Message) {
        let Some(group) = message.group().filter(|_| self.config.message_groups) else {
            return;
        };
        if let Some((_, held)) = self.groups.get_mut(group) {
            *held -= 1;
            if *held == 0 {
                self.groups.remove(group);
            }
        }
    }

    /// Consumer `id` acquired a message: if it is of a group, the group is
    /// that consumer's while it holds any of it.
    fn group(&mut self, id: ConsumerId, seq: Seq) {
        if !self.config.message_groups {
            return;
        }
        if let Some(group) = self.messages[&seq].group().cloned() {
            let (holder, held) = self.groups.entry(group).or_insert((id, 0));
            assert_eq!(*holder, id, "a group is held by one consumer at a time");
            *held += 1;
        }
    }

    /// Applies a `modified` outcome's annotations and undeliverable-here,
    /// and puts the message back at its place.
    pub fn modify(&mut self, seq: Seq, annotations: Vec<(Value, Value)>, undeliverable_here: bool) {
        let Some(message) = self.messages.get_mut(&seq) else {
            return;
        };
        message.merge_annotations(annotations);
        // Replay has no holder to mark: undeliverable-here is volatile.
        if let (true, Some(id)) = (undeliverable_here, message.holder) {
            self.attached(id).refuse(seq);
            self.refusing.insert(id);
        }
        self.release(seq);
    }

    /// Counts a failed delivery and puts the message back at its place.
    /// Returns true if it reached the delivery limit, for the caller to
    /// dead-letter it.
    pub fn fail_delivery(&mut self, seq: Seq) -> bool {
        let Some(message) = self.messages.get_mut(&seq) else {
            return false;
        };
        message.delivery_count = message.delivery_count.saturating_add(1);
        // Only an acquired message can fail; on replay this restores the
        // mark the lost acquisition would have set.
        message.acquired_before = true;
        let count = message.delivery_count;
        self.release(seq);
        self.config
            .delivery_limit
            .is_some_and(|limit| count >= limit)
    }

    /// True if `message` has failed fewer deliveries than dead-letter it
    /// (a limit of 0 acts as 1: the count is only checked as it rises).
    pub fn under_delivery_limit(&self, message: &Message) -> bool {
        self.config
            .delivery_limit
            .is_none_or(|limit| message.delivery_count < limit.max(1))
    }

    /// Attaches a consumer with no credit.
    pub fn attach(&mut self, id: ConsumerId, browse: bool, filter: Option<Box<MessageFilter>>) {
        let consumer = Consumer::new(browse, filter);
        if consumer.filter.is_some() && !browse {
            let messages = &self.messages;
            self.ready
                .select(id, &consumer, |seq| messages[&seq].body.clone());
        }
        let previous = self.consumers.insert(id, consumer);
        assert!(previous.is_none(), "consumer {id} attached twice");
        self.order.push(id);
    }

    /// Detaches a consumer; what it holds goes back to its place, uncounted.
    pub fn detach(&mut self, id: ConsumerId) {
        let Some(consumer) = self.consumers.remove(&id) else {
            return;
        };
        self.order.remove(id);
        self.with_credit.remove(&id);
        self.browsers_with_credit.remove(&id);
        self.refusing.remove(&id);
        self.ready.forget(id);
        for &seq in consumer.unsettled().into_iter().flatten() {
            let message = self.messages.get_mut(&seq).expect("held messages exist");
            assert_eq!(message.holder, Some(id), "seq {seq} held by another");
            message.holder = None;
            let message = message.clone();
            self.ungroup(&message);
            let key = self.ready_key(seq);
            let ready = self.ready.insert(key, &message.body, &self.consumers);
            assert!(ready, "seq {seq} was held and ready");
        }
    }

    /// Sets a consumer's absolute credit.
    pub fn set_credit(&mut self, id: ConsumerId, credit: u32) {
        self.attached(id).credit = credit;
        self.note_credit(id);
    }

    /// Ends a drain: the consumer's remaining credit is used up.
    pub fn finish_drain(&mut self, id: ConsumerId, effects: &mut Vec<Effect>) {
        self.attached(id).credit = 0;
        self.note_credit(id);
        effects.push(Effect::DrainComplete { consumer: id });
    }

    /// Files consumer `id` among those with credit, or not, as it has.
    fn note_credit(&mut self, id: ConsumerId) {
        let Some(consumer) = self.consumers.get(&id) else {
            return;
        };
        let set = if consumer.browses() {
            &mut self.browsers_with_credit
        } else {
            &mut self.with_credit
        };
        if consumer.credit > 0 {
            set.insert(id);
        } else {
            set.remove(&id);
        }
    }

    fn attached(&mut self, id: ConsumerId) -> &mut Consumer {
        self.consumers
            .get_mut(&id)
            .expect("consumer is attached to this queue")
    }

    /// Delivers what the consumers' credit allows: acquired deliveries round
    /// robin, lowest ready seq first; then browse copies.
    pub fn dispatch(&mut self, now_ms: u64, effects: &mut Vec<Effect>, pager: &mut Pager) {
        loop {
            while let Some((id, key)) = self.next_assignment(now_ms) {
                self.acquire(id, key, effects);
            }
            // Memory has nothing more for the consumers with credit: the
            // first run may.
            if self.runs.is_empty() || !self.wants_more() || !self.page_in_first(pager) {
                break;
            }
        }
        self.dispatch_copies(now_ms, effects, pager);
    }

    /// Whether a consumer that may be sent messages has credit left.
    fn wants_more(&self) -> bool {
        if self.config.single_active_consumer {
            let mut active = self.order.iter().map(|id| &self.consumers[&id]);
            return active
                .find(|c| c.unsettled().is_some())
                .is_some_and(|c| c.credit > 0);
        }
        // Those with credit are kept apart: no walk over every consumer.
        !self.with_credit.is_empty()
    }

    /// The next consumer in round-robin order that has credit and a message
    /// it may take, with that message; with a single active consumer, that
    /// consumer only.
    fn next_assignment(&self, now_ms: u64) -> Option<(ConsumerId, Key)> {
        if self.ready.len() == 0 {
            return None;
        }
        if self.config.single_active_consumer {
            let active = self
                .order
                .iter()
                .find(|id| self.consumers[id].unsettled().is_some())?;
            let consumer = &self.consumers[&active];
            return self
                .first_deliverable(active, consumer, now_ms)
                .map(|key| (active, key));
        }
        // Round robin over those with credit: the others would take nothing.
        let start = self.last_served.map_or(Unbounded, Excluded);
        let after = self.with_credit.range((start, Unbounded));
        let up_to = self
            .last_served
            .into_iter()
            .flat_map(|last| self.with_credit.range(..=last));
        after.chain(up_to).find_map(|&id| {
            self.first_deliverable(id, &self.consumers[&id], now_ms)
                .map(|key| (id, key))
        })
    }

    /// The first ready message consumer `id` may acquire now: not expired,
    /// not scheduled for later, and not of a group another consumer holds.
    fn first_deliverable(&self, id: ConsumerId, consumer: &Consumer, now_ms: u64) -> Option<Key> {
        if consumer.credit == 0 || consumer.unsettled().is_none() {
            return None;
        }
        // Only what its filter selects (see `Ready`), and only as far as
        // memory holds the next messages in order.
        let bound = self.ready_bound();
        let ready = self.ready.of(id);
        let ahead = ready.take_while(|&key| bound.is_none_or(|bound| key < bound));
        ahead.into_iter().find(|&(_, seq)| {
            let message = &self.messages[&seq];
            consumer.accepts(seq)
                && !message.is_expired(now_ms)
                && !message.is_scheduled(now_ms)
                && self.group_allows(message, id)
        })
    }

    /// Whether a message's group (if groups are on) may go to `id`.
    fn group_allows(&self, message: &Message, id: ConsumerId) -> bool {
        let Some(group) = message.group().filter(|_| self.config.message_groups) else {
            return true;
        };
        self.groups
            .get(group)
            .is_none_or(|&(holder, _)| holder == id)
    }

    fn acquire(&mut self, id: ConsumerId, key: Key, effects: &mut Vec<Effect>) {
        let (_, seq) = key;
        assert!(self.ready.remove(&key), "acquired seq {seq} was not ready");
        self.group(id, seq);
        let message = self.messages.get_mut(&seq).expect("ready messages exist");
        assert!(message.holder.is_none(), "ready seq {seq} has a holder");
        message.holder = Some(id);
        let first_acquirer = !message.acquired_before;
        message.acquired_before = true;
        let consumer = self
            .consumers
            .get_mut(&id)
            .expect("assigned consumers are attached");
        consumer.spend_credit();
        consumer.hold(seq);
        self.last_served = Some(id);
        self.stats.delivered += 1;
        if !first_acquirer {
            self.stats.redelivered += 1;
        }
        effects.push(Effect::Deliver {
            consumer: id,
            delivery: message.delivery(&self.name, seq, first_acquirer, false),
        });
        self.note_credit(id);
    }

    /// Sends each browser, as its credit allows, the messages after its
    /// cursor that have not expired, whoever holds them.
    fn dispatch_copies(&mut self, now_ms: u64, effects: &mut Vec<Effect>, pager: &mut Pager) {
        // The browsers with credit only: the others would take nothing.
        let browsers: Vec<ConsumerId> = self.browsers_with_credit.iter().copied().collect();
        for id in browsers {
            while let Some(rank) = self.send_copies(id, now_ms, effects) {
                self.page_in(rank, pager);
            }
            self.note_credit(id);
        }
    }

    /// Sends browser `id` what its credit allows from memory; the rank of
    /// the run to page in if it must read on.
    fn send_copies(
        &mut self,
        id: ConsumerId,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) -> Option<u8> {
        let consumer = self.consumers.get_mut(&id).expect("browsers are attached");
        while consumer.credit > 0 {
            let Mode::Browsing { cursor } = consumer.mode else {
                break;
            };
            // Memory holds the next messages after the cursor only up to
            // the first seq of a run that goes past it.
            let first_paged = first_paged_after(&self.runs, cursor);
            if let Some((first, rank)) = first_paged
                && cursor.is_some_and(|cursor| first <= cursor)
            {
                return Some(rank);
            }
            let start = cursor.map_or(Unbounded, Excluded);
            let end = first_paged.map_or(Unbounded, |(first, _)| Excluded(first));
            let mut next = None;
            for (&seq, m) in self.messages.range((start, end)) {
                if m.is_expired(now_ms) || m.is_scheduled(now_ms) {
                    continue;
                }
                if consumer.takes(&LazyFields::new(&m.body)) {
                    next = Some((seq, m));
                    break;
                }
                // Its filter will never select it: passed for good, so
                // the next dispatch does not test it again.
                consumer.mode = Mode::Browsing { cursor: Some(seq) };
            }
            let Some((seq, message)) = next else {
                return first_paged.map(|(_, rank)| rank);
            };
            consumer.spend_credit();
            consumer.mode = Mode::Browsing { cursor: Some(seq) };
            effects.push(Effect::Deliver {
                consumer: id,
                delivery: message.delivery(&self.name, seq, false, true),
            });
        }
        None
    }

    /// Every message with its seq, in seq order, ready or held.
    pub fn messages(&self) -> impl Iterator<Item = (Seq, &Message)> {
        self.messages.iter().map(|(&seq, message)| (seq, message))
    }

    /// Its consumers with their state, in attach order.
    pub fn consumers(&self) -> impl Iterator<Item = (ConsumerId, &Consumer)> {
        self.order.iter().map(|id| (id, &self.consumers[&id]))
    }

    /// The consumer that received the last acquired delivery.
    pub fn last_served(&self) -> Option<ConsumerId> {
        self.last_served
    }

    /// A queue rebuilt whole, volatile state included, from what
    /// [`Queue::messages`], [`Queue::consumers`] and
    /// [`Queue::last_served`] gave. Consumers come without what they hold:
    /// each message's `holder` says. `None` if the parts do not fit
    /// together (a seq twice, a holder that is not an acquiring consumer
    /// here, more than the limits allow).
    pub fn restored_whole(
        name: String,
        config: QueueConfig,
        dedup: Dedup,
        last_served: Option<ConsumerId>,
        consumers: Vec<(ConsumerId, Consumer)>,
        messages: Vec<(Seq, Message)>,
    ) -> Option<Self> {
        let mut queue = Self::new(name, config);
        queue.dedup = dedup;
        queue.last_served = last_served;
        for (id, consumer) in consumers {
            if consumer.unsettled().is_some_and(|held| !held.is_empty())
                || queue.consumers.insert(id, consumer).is_some()
            {
                return None;
            }
            queue.order.push(id);
            queue.note_credit(id);
            if queue.consumers[&id].refuses_any() {
                queue.refusing.insert(id);
            }
        }
        for (seq, mut message) in messages {
            if queue.messages.contains_key(&seq)
                || (message.persistent && !queue.config.durable)
                || !queue.under_delivery_limit(&message)
                || !queue.all.fits(message.size(), &queue.config)
            {
                return None;
            }
            let holder = message.holder.take();
            // In memory, as it was: the runs come after (see
            // `Queue::restore_runs`), and a pager that never pages decides.
            queue.insert(seq, message, &mut Pager::default());
            if let Some(id) = holder {
                let consumer = queue.consumers.get_mut(&id)?;
                consumer.unsettled()?;
                consumer.hold(seq);
                let key = queue.ready_key(seq);
                queue.ready.remove(&key);
                if queue.config.message_groups
                    && let Some(group) = queue.messages[&seq].group()
                    && queue
                        .groups
                        .get(group)
                        .is_some_and(|&(other, _)| other != id)
                {
                    return None;
                }
                queue.group(id, seq);
                queue.messages.get_mut(&seq)?.holder = Some(id);
            }
        }
        for (&id, consumer) in &queue.consumers {
            if consumer.filter.is_some() && consumer.unsettled().is_some() {
                let messages = &queue.messages;
                queue
                    .ready
                    .select(id, consumer, |seq| messages[&seq].body.clone());
            }
        }
        Some(queue)
    }

    /// Gives a restored queue its runs and the expiries of their messages,
    /// as a snapshot names them. `None` if they do not fit with what it
    /// holds in memory.
    pub fn restore_runs(&mut self, runs: Vec<(u8, Run)>, expiries: Vec<(u64, Seq)>) -> Option<()> {
        for (rank, run) in runs {
            let consistent = !run.is_empty()
                && run.front < run.end
                && run.first_seq <= run.last_seq
                && run.persistent.count <= run.all.count
                && run.persistent.bytes <= run.all.bytes
                && run.expiring <= run.all.count
                && (run.persistent.count == 0 || self.config.durable);
            if !consistent {
                return None;
            }
            self.all.merge(run.all);
            self.persistent.merge(run.persistent);
            if self.runs.insert(rank, run).is_some() {
                return None;
            }
        }
        let expiring: u64 = self.runs.values().map(|run| run.expiring).sum();
        if expiries.len() as u64 != expiring || !self.all.within(&self.config) {
            return None;
        }
        for (expiry_ms, seq) in expiries {
            if self.messages.contains_key(&seq)
                || self.run_spanning(seq).is_none()
                || !self.expiries.insert((expiry_ms, seq))
            {
                return None;
            }
        }
        Some(())
    }

    /// The expiries of its paged messages, by expiry then seq.
    pub fn paged_expiries(&self) -> impl Iterator<Item = (u64, Seq)> + '_ {
        let hot = &self.messages;
        self.expiries
            .iter()
            .filter(move |(_, seq)| !hot.contains_key(seq))
            .copied()
    }

    /// Checks every invariant of the queue; a failure is a bug.
    pub fn check_invariants(&self) {
        let mut all = Tally::ZERO;
        let mut persistent = Tally::ZERO;
        let mut held = 0;
        for (&seq, message) in &self.messages {
            all.add(message.size());
            if message.persistent {
                assert!(
                    self.config.durable,
                    "persistent seq {seq} in a transient queue"
                );
                persistent.add(message.size());
            }
            let key = (self.rank(message), seq);
            match message.holder {
                None => assert!(self.ready.contains(&key), "seq {seq} is nowhere"),
                Some(id) => {
                    assert!(!self.ready.contains(&key), "seq {seq} is held and ready");
                    let unsettled = self.consumers.get(&id).and_then(Consumer::unsettled);
                    assert!(
                        unsettled.is_some_and(|u| u.contains(&seq)),
                        "seq {seq} held by {id}, which does not hold it"
                    );
                    held += 1;
                }
            }
            if message.holder.is_some() || message.delivery_count > 0 {
                assert!(message.acquired_before, "seq {seq} acquired unmarked");
            }
            if let Some(expiry_ms) = message.expiry_ms {
                assert!(self.expiries.contains(&(expiry_ms, seq)));
            }
            assert!(
                self.under_delivery_limit(message),
                "seq {seq} is past its delivery limit"
            );
        }
        assert_eq!(all, self.hot, "tally of the messages in memory");
        let mut expiring = 0;
        for (rank, run) in &self.runs {
            assert!(!run.is_empty(), "rank {rank} keeps an empty run");
            assert!(run.front < run.end && run.first_seq <= run.last_seq);
            all.merge(run.all);
            persistent.merge(run.persistent);
            expiring += run.expiring;
        }
        assert_eq!(all, self.all, "tally of all messages");
        assert_eq!(persistent, self.persistent, "tally of persistent messages");
        assert!(self.all.within(&self.config), "limits exceeded");
        assert_eq!(self.ready.len() + held, self.messages.len());
        let hot_expiring = self.messages.values().filter(|m| m.expiry_ms.is_some());
        assert_eq!(
            self.expiries.len() as u64,
            hot_expiring.count() as u64 + expiring,
            "every expiry is of a message in memory or paged"
        );
        let unsettled: usize = self
            .consumers
            .values()
            .filter_map(Consumer::unsettled)
            .map(|u| u.len())
            .sum();
        assert_eq!(unsettled, held, "consumers hold exactly the held messages");
        self.ready.check_invariants(&self.consumers);
        self.check_type_invariants();
    }

    /// The queue type's own state agrees with the messages and consumers.
    fn check_type_invariants(&self) {
        let mut order: Vec<ConsumerId> = self.order.iter().collect();
        order.sort_unstable();
        assert!(
            order.iter().eq(self.consumers.keys()),
            "attach order lists each consumer once"
        );
        let with_credit = |browsing: bool| {
            let consumers = self.consumers.iter();
            consumers
                .filter(move |(_, c)| c.credit > 0 && c.browses() == browsing)
                .map(|(&id, _)| id)
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(
            with_credit(false),
            self.with_credit,
            "acquirers with credit"
        );
        assert_eq!(
            with_credit(true),
            self.browsers_with_credit,
            "browsers with credit"
        );
        let refusing = self.consumers.iter().filter(|(_, c)| c.refuses_any());
        assert!(
            refusing
                .map(|(&id, _)| id)
                .eq(self.refusing.iter().copied()),
            "the consumers that refuse some message"
        );
        let valued = self.messages.values().filter(|m| m.last_value().is_some());
        assert_eq!(
            valued.count(),
            self.last_values.values().map(BTreeSet::len).sum::<usize>(),
            "last values index every keyed message"
        );
        for (value, seqs) in &self.last_values {
            for seq in seqs {
                let message = self
                    .messages
                    .get(seq)
                    .expect("a last value names a message");
                assert_eq!(message.last_value(), Some(value));
            }
        }
        for &(at_ms, seq) in &self.scheduled {
            let message = self.messages.get(&seq).expect("a schedule names a message");
            assert_eq!(message.deliver_at_ms(), Some(at_ms));
        }
        let mut groups: BTreeMap<&String, (ConsumerId, usize)> = BTreeMap::new();
        for message in self.messages.values() {
            if let (Some(group), Some(id), true) =
                (message.group(), message.holder, self.config.message_groups)
            {
                let (holder, held) = groups.entry(group).or_insert((id, 0));
                assert_eq!(*holder, id, "group {group} held by two consumers");
                *held += 1;
            }
        }
        assert!(
            groups.iter().map(|(g, h)| (*g, h)).eq(self.groups.iter()),
            "group holders"
        );
    }
}

/// What a run counts of `message`.
fn paged(message: &Message) -> Paged {
    Paged {
        size: message.size(),
        persistent: message.persistent,
        expires: message.expiry_ms.is_some(),
    }
}

/// See [`Queue::first_paged_after`].
fn first_paged_after(runs: &BTreeMap<u8, Run>, after: Option<Seq>) -> Option<(Seq, u8)> {
    runs.iter()
        .filter(|(_, run)| after.is_none_or(|after| run.last_seq > after))
        .min_by_key(|(_, run)| run.first_seq)
        .map(|(&rank, run)| (run.first_seq, rank))
}
