//! [`Queues`]: every queue, fed commands, answering with effects.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::consumer::Consumer;
use super::message::Message;
use super::paging::{PageStore, Pager, Paging, RunId};
use super::single::{Admission, Queue};
use super::{
    CloseReason, Command, ConsumerId, DEFAULT_PRIORITY, DeadLetterReason, Effect, LazyFields,
    MessageFilter, NewMessage, Outcome, QueueConfig, QueueInfo, QueueStats, RejectReason, Seq,
    Seqs,
};
use crate::amqp::codec::DecodeError;
use crate::planted::Plants;

/// What a snapshot takes per message besides its body, at most: its seq,
/// delivery count, expiry and the framing of its record, with room for a
/// few annotations.
const SNAPSHOT_BYTES_PER_MESSAGE: u64 = 128;

/// The finest step of [`Arrivals`]: a second is fine enough for the age
/// of a queue's oldest message, which alerts compare with minutes.
const ARRIVAL_STEP_MS: u64 = 1_000;

/// The most steps [`Arrivals`] keeps: about 16 KiB.
const ARRIVALS_MAX: usize = 1_024;

/// When seqs were first enqueued, coarsely: `(seq, now_ms)` pairs, the
/// first seq enqueued at or after each step. Seqs grow with time, so the
/// oldest message of a queue (its least seq) arrived no later than the
/// step of the greatest recorded seq not above it. It answers the age of
/// a queue's oldest message without a timestamp in every message.
/// Volatile, like [`QueueStats`]: empty after a snapshot is loaded, so
/// the messages restored with it have no known arrival.
#[derive(Debug, Default)]
struct Arrivals(VecDeque<(Seq, u64)>);

impl Arrivals {
    /// `seq` was enqueued at `now_ms`.
    fn note(&mut self, seq: Seq, now_ms: u64) {
        if self
            .0
            .back()
            .is_some_and(|&(_, at)| now_ms < at.saturating_add(ARRIVAL_STEP_MS))
        {
            return;
        }
        self.0.push_back((seq, now_ms));
    }

    /// Bounds the record: forgets the steps before the one of `oldest`
    /// (the least seq any queue holds), then, if that is not enough, every
    /// other step, which keeps the whole span at half the resolution.
    fn trim(&mut self, oldest: Option<Seq>) {
        if self.0.len() <= ARRIVALS_MAX {
            return;
        }
        let keep_from = oldest.map_or(self.0.len() - 1, |oldest| {
            self.0
                .partition_point(|&(seq, _)| seq <= oldest)
                .saturating_sub(1)
        });
        self.0.drain(..keep_from);
        if self.0.len() > ARRIVALS_MAX / 2 {
            let mut index = 0;
            self.0.retain(|_| {
                index += 1;
                index % 2 == 1
            });
        }
    }

    /// When `seq` was enqueued at the latest, if it was recorded.
    fn arrival_ms(&self, seq: Seq) -> Option<u64> {
        let after = self.0.partition_point(|&(first, _)| first <= seq);
        let (_, at) = self.0.get(after.checked_sub(1)?)?;
        Some(*at)
    }
}

/// One queue's counters, for the broker's metrics and management API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueReport {
    /// Its name.
    pub name: String,
    /// What it holds now.
    pub info: QueueInfo,
    /// What it has done.
    pub stats: QueueStats,
    /// When its oldest message was enqueued at the latest, Unix
    /// milliseconds (to the second); `None` if it holds none, or its oldest
    /// came with a snapshot.
    pub oldest_arrival_ms: Option<u64>,
}

/// The queue state machine: every queue, its messages and its consumers.
///
/// Feed it commands with [`Queues::apply`]; it appends the effects the
/// broker must carry out. See the [module](super) documentation for what is
/// durable and how replay stays exact.
#[derive(Debug, Default)]
pub struct Queues {
    /// Every queue, by name.
    queues: BTreeMap<String, Queue>,
    /// The queue each attached consumer reads.
    consumers: BTreeMap<ConsumerId, String>,
    /// The greatest seq ever accepted.
    last_seq: Seq,
    /// Planted bugs: `lose-redelivery` and `double-deliver` concern the
    /// state machine.
    plants: Plants,
    /// The latest time a dispatch has judged expiry and schedules at
    /// (see [`Queues::raise_dispatch_floor`]). Volatile: not in snapshots,
    /// and it decides only what is delivered, never what is kept.
    dispatch_floor_ms: u64,
    /// When seqs were enqueued, for the age of each queue's oldest
    /// message. Volatile.
    arrivals: Arrivals,
    /// Where deep queues page their messages out, and the budget that
    /// says when.
    pager: Pager,
    /// Each queue's earliest expiry or schedule, with its name, as last
    /// counted: what [`Queues::next_expiry`] reads every housekeeping, and
    /// [`Command::Expire`] visits, without a walk over every queue (with
    /// 110,000 queues that walk took an eighth of the node's time).
    timers: BTreeSet<(u64, String)>,
}

/// A message on its way to a dead-letter queue.
struct DeadLetter {
    from: String,
    seq: Seq,
    message: Message,
    reason: DeadLetterReason,
}

impl Queues {
    /// No queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pages deep queues out to `store` under `paging` from now on: a
    /// group's machine is made, or restored from a snapshot, and then
    /// given the store its runs are in.
    pub fn page_to(&mut self, paging: Paging, store: Box<dyn PageStore>) {
        self.pager.use_store(paging, store);
    }

    /// Its paging.
    pub fn pager(&self) -> &Pager {
        &self.pager
    }

    /// Its paging, to checkpoint before a snapshot and release after.
    pub fn pager_mut(&mut self) -> &mut Pager {
        &mut self.pager
    }

    /// Every run of paged messages, `(run, front, end)`: what its page
    /// store must keep.
    pub fn live_runs(&self) -> Vec<(RunId, u64, u64)> {
        let runs = self.queues.values().flat_map(Queue::runs);
        runs.map(|(_, run)| (run.id, run.front, run.end)).collect()
    }

    /// Pages every queue's paged messages back in: what a test compares
    /// with a machine that never paged.
    #[cfg(test)]
    pub(super) fn page_in_all(&mut self) {
        for queue in self.queues.values_mut() {
            queue.page_in_all(&mut self.pager);
        }
    }

    /// Plants bugs for the simulator's checker. Volatile: not in
    /// snapshots.
    pub fn plant(&mut self, plants: Plants) {
        self.plants = plants;
        self.pager.plant(plants);
    }

    /// Dispatches from now on judge expiry and schedules at `now_ms` at the
    /// earliest: a single node applies a consumer's credit, which it does
    /// not log, at its own clock, and may apply a logged command after
    /// it that was proposed earlier; without the floor that command's
    /// dispatch could deliver what the credit's found expired. Only
    /// dispatch reads it: what is kept or dropped follows the logged
    /// commands' clocks alone, so that a recovery replays it exactly.
    pub fn raise_dispatch_floor(&mut self, now_ms: u64) {
        self.dispatch_floor_ms = self.dispatch_floor_ms.max(now_ms);
    }

    /// The time a dispatch at `now_ms` judges expiry and schedules at.
    fn dispatch_ms(&self, now_ms: u64) -> u64 {
        now_ms.max(self.dispatch_floor_ms)
    }

    /// Applies one command at `now_ms`, appending its effects.
    pub fn apply(&mut self, now_ms: u64, command: Command, effects: &mut Vec<Effect>) {
        let changed = changed_by(&command);
        match command {
            Command::Declare { queue, config } => self.declare(queue, *config, effects),
            Command::Delete { queue } => self.delete(queue, effects),
            Command::Purge { queue, except } => self.purge(queue, &except, effects),
            Command::Move {
                from,
                to,
                max,
                except,
            } => self.move_ready(now_ms, from, to, max, &except, effects),
            Command::Enqueue {
                queue,
                seq,
                message,
            } => self.enqueue(now_ms, queue, seq, message, effects),
            Command::Attach {
                consumer,
                queue,
                browse,
                filter,
            } => self.attach(consumer, queue, browse, filter, effects),
            Command::Credit {
                consumer,
                credit,
                drain,
            } => self.credit(now_ms, consumer, credit, drain, effects),
            Command::Settle {
                queue,
                seq,
                outcome,
            } => self.settle(now_ms, queue, seq, outcome, effects),
            Command::Detach { consumer } => self.detach(now_ms, consumer, effects),
            Command::Expire => self.expire(now_ms, effects),
            Command::Transaction { work } => self.commit(now_ms, work, effects),
        }
        for queue in changed.iter().flatten() {
            self.recount(queue);
        }
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// The earliest expiry among the messages held, for the caller's timer:
    /// apply [`Command::Expire`] once `now_ms` reaches it.
    pub fn next_expiry(&self) -> Option<u64> {
        self.timers.first().map(|&(at_ms, _)| at_ms)
    }

    /// Brings the timers up to date with `name`'s messages.
    fn recount(&mut self, name: &str) {
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        let timer = queue.next_expiry();
        if timer != queue.counted_timer {
            if let Some(at_ms) = queue.counted_timer {
                self.timers.remove(&(at_ms, name.to_owned()));
            }
            if let Some(at_ms) = timer {
                self.timers.insert((at_ms, name.to_owned()));
            }
            queue.counted_timer = timer;
        }
    }

    /// The queues whose earliest expiry or schedule is due at `now_ms`,
    /// in name order.
    fn timed_out(&self, now_ms: u64) -> BTreeSet<String> {
        let due = self
            .timers
            .range(..(now_ms.saturating_add(1), String::new()));
        due.map(|(_, name)| name.clone()).collect()
    }

    /// A queue's counters, if it exists.
    pub fn info(&self, queue: &str) -> Option<QueueInfo> {
        self.queues.get(queue).map(Queue::info)
    }

    /// Every queue's counters and statistics, in name order.
    pub fn reports(&self) -> impl Iterator<Item = QueueReport> + '_ {
        self.queues.values().map(|queue| QueueReport {
            name: queue.name.clone(),
            info: queue.info(),
            stats: queue.stats,
            oldest_arrival_ms: queue
                .oldest_seq()
                .and_then(|seq| self.arrivals.arrival_ms(seq)),
        })
    }

    /// How many more messages the queue takes before it refuses publishes
    /// (`u64::MAX` if unbounded or drop-head), if it exists. The broker
    /// stops granting producers credit at 0.
    pub fn room(&self, queue: &str) -> Option<u64> {
        self.queues.get(queue).map(Queue::room)
    }

    /// Whether `queue` would page a message that is `durable` (as
    /// published) and a topic's `copy` or not, and keep it only until a
    /// restart: the queue or the message is not durable.
    pub fn pages_transient(&self, queue: &str, durable: bool, copy: bool) -> bool {
        self.queues.get(queue).is_some_and(|target| {
            let persistent = durable && target.config.durable;
            !persistent && target.pages(copy, &self.pager)
        })
    }

    /// The greatest seq ever accepted (after a restore: as far as the
    /// snapshot and the replayed log know). Seqs the caller assigns must
    /// exceed it.
    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// Every queue with its configuration, in name order: what a restarted
    /// broker rebuilds its routing from.
    pub fn declared(&self) -> impl Iterator<Item = (&str, &QueueConfig)> {
        self.queues
            .iter()
            .map(|(name, queue)| (name.as_str(), &queue.config))
    }

    /// The queues whose names start with `prefix`, with their
    /// configuration, in name order: a range of the names, whatever the
    /// number of other queues.
    pub fn declared_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a QueueConfig)> + 'a {
        self.queues
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(name, _)| name.starts_with(prefix))
            .map(|(name, queue)| (name.as_str(), &queue.config))
    }

    /// The messages of `queue` that consumers hold (none if there is no
    /// such queue).
    pub fn held_seqs(&self, queue: &str) -> Seqs {
        let held = self.queues.get(queue).into_iter().flat_map(|queue| {
            queue
                .messages()
                .filter(|(_, message)| message.holder.is_some())
                .map(|(seq, _)| seq)
        });
        Seqs(held.collect())
    }

    /// The consumer holding message `seq` of `queue` unsettled, if any.
    pub fn holder(&self, queue: &str, seq: Seq) -> Option<ConsumerId> {
        self.queues.get(queue)?.message(seq)?.holder
    }

    /// Every attached consumer, in id order.
    pub fn consumer_ids(&self) -> impl Iterator<Item = ConsumerId> + '_ {
        self.consumers.keys().copied()
    }

    /// A generous estimate of [`Queues::encode_whole`]'s size, without
    /// encoding it: the bodies in memory (a body that copies share once),
    /// 128 bytes for each message in memory, and the expiry of each paged
    /// one (whose body is in its run, not in the snapshot). For deciding
    /// whether a snapshot fits in a given space.
    pub fn snapshot_bytes_estimate(&self) -> u64 {
        self.queues
            .values()
            .map(|queue| queue.snapshot_bytes_besides_bodies(SNAPSHOT_BYTES_PER_MESSAGE))
            .fold(self.pager.hot_bytes(), u64::saturating_add)
    }

    /// The whole state, volatile parts included, for a group's
    /// snapshot (see [`super::whole`]).
    pub fn encode_whole(&self, out: &mut bytes::BytesMut) {
        super::whole::encode(self, out);
    }

    /// A machine from [`Queues::encode_whole`]'s bytes, read from the
    /// front of `input`.
    pub fn decode_whole(input: &mut Bytes) -> Result<Self, DecodeError> {
        super::whole::decode(input)
    }

    /// A machine holding queues rebuilt whole, consumers included; `None`
    /// if a consumer is attached to two queues, or a seq is in two queues
    /// or beyond `last_seq`.
    pub(super) fn restored_whole(
        queues: Vec<Queue>,
        last_seq: Seq,
        next_run: RunId,
    ) -> Option<Self> {
        let mut seqs = BTreeSet::new();
        for seq in queues.iter().flat_map(Queue::seqs) {
            if seq > last_seq || !seqs.insert(seq) {
                return None;
            }
        }
        let mut restored = Self {
            last_seq,
            ..Self::default()
        };
        restored.pager.set_next_run(next_run);
        for mut queue in queues {
            queue.count_restored(&mut restored.pager);
            queue.counted_timer = queue.next_expiry();
            if let Some(at_ms) = queue.counted_timer {
                restored.timers.insert((at_ms, queue.name.clone()));
            }
            for id in queue.consumer_ids() {
                if restored.consumers.insert(id, queue.name.clone()).is_some() {
                    return None;
                }
            }
            restored.queues.insert(queue.name.clone(), queue);
        }
        restored.check_invariants();
        Some(restored)
    }

    /// The queue `consumer` reads, and the consumer's state.
    pub(super) fn consumer(&self, consumer: ConsumerId) -> Option<(&Queue, &Consumer)> {
        let queue = self.queues.get(self.consumers.get(&consumer)?)?;
        Some((queue, queue.consumer(consumer)?))
    }

    /// Whether `queue` takes a copy of a topic's message: a subscription
    /// whose filter the message does not pass does not.
    pub fn takes(&self, queue: &str, message: &LazyFields) -> bool {
        self.queues
            .get(queue)
            .and_then(|q| q.config.filter.as_ref())
            .is_none_or(|filter| filter.takes(message))
    }

    /// The queue named `name`.
    pub(super) fn queue(&self, name: &str) -> Option<&Queue> {
        self.queues.get(name)
    }

    /// Every queue, by name.
    pub(super) fn all_queues(&self) -> impl Iterator<Item = &Queue> {
        self.queues.values()
    }

    fn declare(&mut self, queue: String, mut config: QueueConfig, effects: &mut Vec<Effect>) {
        // PLANTED BUG (`groups-ignored`): the queue is made (and declared
        // again) without its message groups, so dispatch hands a group's
        // messages to any consumer.
        if self.plants.groups_ignored() {
            config.message_groups = false;
        }
        match self.queues.get(&queue) {
            Some(existing) if existing.config != config => {
                effects.push(Effect::DeclareConflict {
                    existing: existing.config.clone(),
                    queue,
                });
            }
            Some(_) => effects.push(Effect::Declared { queue }),
            None => {
                let created = Queue::new(queue.clone(), config);
                self.queues.insert(queue.clone(), created);
                effects.push(Effect::Declared { queue });
            }
        }
    }

    fn delete(&mut self, queue: String, effects: &mut Vec<Effect>) {
        let Some(deleted) = self.queues.remove(&queue) else {
            return;
        };
        if let Some(at_ms) = deleted.counted_timer {
            self.timers.remove(&(at_ms, queue.clone()));
        }
        let consumers: Vec<ConsumerId> = deleted.consumer_ids().collect();
        deleted.dispose(&mut self.pager);
        for consumer in consumers {
            let removed = self.consumers.remove(&consumer);
            assert_eq!(removed.as_ref(), Some(&queue), "consumer index");
            effects.push(Effect::ConsumerClosed {
                consumer,
                reason: CloseReason::QueueDeleted,
            });
        }
        effects.push(Effect::Deleted { queue });
    }

    /// Drops `queue`'s ready messages but `except`'s; they count as
    /// dead-lettered (dropped), as other messages dropped unconsumed do.
    fn purge(&mut self, queue: String, except: &Seqs, effects: &mut Vec<Effect>) {
        let Some(target) = self.queues.get_mut(&queue) else {
            return;
        };
        let count = target.purge(except, &mut self.pager);
        target.stats.dead_lettered += count;
        effects.push(Effect::Purged { queue, count });
    }

    /// Moves up to `max` of `from`'s ready messages but `except`'s, oldest
    /// first, to `to`, each keeping its seq (seqs are unique in the whole
    /// group), until one does not fit.
    fn move_ready(
        &mut self,
        now_ms: u64,
        from: String,
        to: String,
        max: u64,
        except: &Seqs,
        effects: &mut Vec<Effect>,
    ) {
        if from == to || !self.queues.contains_key(&to) {
            return;
        }
        if !self.queues.contains_key(&from) {
            return;
        }
        let mut count = 0;
        let mut after = None;
        while count < max {
            let source = self.queues.get_mut(&from).expect("checked above");
            let Some(seq) = source.next_ready(after, except, &mut self.pager) else {
                break;
            };
            after = Some(seq);
            let message = source.message(seq).expect("the seq is ready");
            let (size, persistent) = (message.size(), message.persistent);
            let target = self.queues.get(&to).expect("checked above");
            let persistent = persistent && target.config.durable;
            // Admitted as a dead-letter is: where it fits as things are,
            // evicting nothing.
            if !target.can_admit(size, persistent, Admission::DeadLetter) {
                break;
            }
            let source = self.queues.get_mut(&from).expect("found above");
            let mut message = source
                .remove(seq, &mut self.pager)
                .expect("the seq is ready");
            let target = self.queues.get_mut(&to).expect("checked above");
            message.moved(&target.config);
            let evicted = target.admit(seq, message, Admission::DeadLetter, &mut self.pager);
            assert!(
                evicted.is_ok_and(|evicted| evicted.is_empty()),
                "seq {seq} fits without evicting"
            );
            count += 1;
        }
        effects.push(Effect::Moved {
            from,
            to: to.clone(),
            count,
        });
        self.dispatch(now_ms, &to, effects);
    }

    fn enqueue(
        &mut self,
        now_ms: u64,
        queue: String,
        seq: Seq,
        mut message: NewMessage,
        effects: &mut Vec<Effect>,
    ) {
        // PLANTED BUG (`schedule-ignored`): a scheduled message is ready at
        // once.
        if self.plants.schedule_ignored()
            && let Some(traits) = message.traits.as_mut()
        {
            traits.deliver_at_ms = None;
        }
        // PLANTED BUG (`priority-ignored`): every message has the default
        // priority.
        if self.plants.priority_ignored()
            && let Some(traits) = message.traits.as_mut()
        {
            traits.priority = DEFAULT_PRIORITY;
        }
        let Some(target) = self.queues.get_mut(&queue) else {
            // PLANTED BUG (`unroutable-accepted`): the message is dropped
            // without a word, so its publish is answered `accepted`.
            if self.plants.unroutable_accepted() {
                return;
            }
            return effects.push(rejected(queue, seq, RejectReason::NotFound));
        };
        if seq <= self.last_seq {
            return effects.push(rejected(queue, seq, RejectReason::SeqNotIncreasing));
        }
        let window = target
            .config
            .dedup_window_ms
            .zip(target.config.dedup_window_ids);
        // A durable queue de-duplicates persistent messages only: a message
        // marked transient asked for no guarantee, and its ids would crowd
        // the persistent messages' out of a window of bounded size.
        let kept = message.durable || !target.config.durable;
        let message_id = message
            .message_id
            .clone()
            .filter(|_| window.is_some() && kept);
        // PLANTED BUG (`dedup-ignored`): a remembered id is enqueued again.
        if let Some(id) = &message_id
            && target.dedup.contains(now_ms, id)
            && !self.plants.dedup_ignored()
        {
            // Taken already: accepted again, not enqueued again.
            self.last_seq = seq;
            return;
        }
        let mut message = Message::published(now_ms, message, &target.config);
        // PLANTED BUG (`deliver-expired`): the message never expires.
        if self.plants.deliver_expired() {
            message.expiry_ms = None;
        }
        // PLANTED BUG (`lvq-keeps-superseded`): a new last value replaces
        // nothing.
        let replaced = if self.plants.lvq_keeps_superseded() {
            Vec::new()
        } else {
            target.replaced_by(&message)
        };
        // PLANTED BUG (`lvq-loses-newest`): a new last value that replaces
        // others is dropped with them, yet answered as taken.
        if self.plants.lvq_loses_newest() && !replaced.is_empty() {
            for old in replaced {
                target.remove(old, &mut self.pager);
            }
            self.last_seq = seq;
            self.dispatch(now_ms, &queue, effects);
            return;
        }
        let Ok(evicted) = target.admit(seq, message, Admission::Publish, &mut self.pager) else {
            return effects.push(rejected(queue, seq, RejectReason::Overflow));
        };
        // A last-value queue's new message takes the place of those with
        // its key (that drop-head did not take already).
        for old in replaced {
            if target.remove(old, &mut self.pager).is_some() {
                target.stats.dead_lettered += 1;
                effects.push(Effect::DeadLettered {
                    from: queue.clone(),
                    seq: old,
                    to: None,
                    reason: DeadLetterReason::Replaced,
                });
            }
        }
        if let (Some(id), Some((window_ms, ids_max))) = (message_id, window) {
            target.dedup.remember(now_ms, id, window_ms, ids_max);
        }
        target.stats.published += 1;
        self.last_seq = seq;
        self.note_arrival(seq, now_ms);
        effects.push(Effect::Enqueued {
            queue: queue.clone(),
            seq,
        });
        self.dead_letter_evicted(now_ms, &queue, evicted, effects);
        self.dispatch(now_ms, &queue, effects);
    }

    /// How many steps the arrival record holds.
    #[cfg(test)]
    pub(super) fn arrival_steps(&self) -> usize {
        self.arrivals.0.len()
    }

    /// Records `seq`'s arrival, keeping the record bounded.
    fn note_arrival(&mut self, seq: Seq, now_ms: u64) {
        self.arrivals.note(seq, now_ms);
        if self.arrivals.0.len() > ARRIVALS_MAX {
            let oldest = self.queues.values().filter_map(Queue::oldest_seq).min();
            self.arrivals.trim(oldest);
        }
    }

    fn attach(
        &mut self,
        consumer: ConsumerId,
        queue: String,
        browse: bool,
        filter: Option<Box<MessageFilter>>,
        effects: &mut Vec<Effect>,
    ) {
        // Ids are unique while attached; a reused one is the caller's bug,
        // and ignoring it leaves the attached consumer undisturbed.
        if self.consumers.contains_key(&consumer) {
            return;
        }
        let Some(target) = self.queues.get_mut(&queue) else {
            return effects.push(Effect::ConsumerClosed {
                consumer,
                reason: CloseReason::QueueNotFound,
            });
        };
        // PLANTED BUG (`filter-ignored`): the consumer's
        // application-properties filter is dropped, so dispatch never
        // applies it.
        let filter = if self.plants.filter_ignored() {
            filter.and_then(|filter| filter.without_application_properties())
        } else {
            filter
        };
        target.attach(consumer, browse, filter);
        self.consumers.insert(consumer, queue);
    }

    fn credit(
        &mut self,
        now_ms: u64,
        consumer: ConsumerId,
        credit: u32,
        drain: bool,
        effects: &mut Vec<Effect>,
    ) {
        let dispatch_ms = self.dispatch_ms(now_ms);
        let Some(name) = self.consumers.get(&consumer) else {
            return;
        };
        let queue = self.queues.get_mut(name).expect("consumers read queues");
        queue.set_credit(consumer, credit);
        queue.dispatch(dispatch_ms, effects, &mut self.pager);
        if drain {
            queue.finish_drain(consumer, effects);
        }
    }

    fn settle(
        &mut self,
        now_ms: u64,
        queue: String,
        seq: Seq,
        outcome: Outcome,
        effects: &mut Vec<Effect>,
    ) {
        let Some(source) = self.queues.get_mut(&queue) else {
            return;
        };
        if !source.fetch(seq, &mut self.pager) {
            return;
        }
        let outcome = match outcome {
            // PLANTED BUG (`lose-redelivery`): a released message is dropped.
            Outcome::Released if self.plants.lose_redelivery() => {
                source.remove(seq, &mut self.pager);
                self.dispatch(now_ms, &queue, effects);
                return;
            }
            // PLANTED BUG (`double-deliver`): an accepted message goes back
            // to the queue, to be delivered again.
            Outcome::Accepted if self.plants.double_deliver() => Outcome::Released,
            outcome => outcome,
        };
        let dead_letter = match outcome {
            Outcome::Accepted => {
                source.remove(seq, &mut self.pager);
                source.stats.acked += 1;
                None
            }
            Outcome::Released => {
                source.release(seq);
                None
            }
            Outcome::Rejected => Some(DeadLetterReason::Rejected),
            Outcome::Modified {
                delivery_failed,
                undeliverable_here,
                annotations,
            } => {
                source.modify(seq, annotations, undeliverable_here);
                (delivery_failed && source.fail_delivery(seq))
                    .then_some(DeadLetterReason::DeliveryLimit)
            }
        };
        if let Some(reason) = dead_letter {
            let message = source
                .remove(seq, &mut self.pager)
                .expect("the message was found above");
            let dead = DeadLetter {
                from: queue.clone(),
                seq,
                message,
                reason,
            };
            self.dead_letter(now_ms, vec![dead], effects);
        }
        self.dispatch(now_ms, &queue, effects);
    }

    fn detach(&mut self, now_ms: u64, consumer: ConsumerId, effects: &mut Vec<Effect>) {
        let dispatch_ms = self.dispatch_ms(now_ms);
        let Some(name) = self.consumers.remove(&consumer) else {
            return;
        };
        let queue = self.queues.get_mut(&name).expect("consumers read queues");
        queue.detach(consumer);
        if queue.config.auto_delete && queue.consumer_ids().next().is_none() {
            return self.delete(name, effects);
        }
        queue.dispatch(dispatch_ms, effects, &mut self.pager);
    }

    fn expire(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        // Collected first, so that a message dead-lettered during this pass
        // waits for the next one, on replay too; queue by queue in name
        // order, as a walk over every queue would.
        let due: Vec<(String, Seq)> = self
            .timed_out(now_ms)
            .into_iter()
            .filter_map(|name| self.queues.get(&name).map(|q| (name, q.due(now_ms))))
            .flat_map(|(name, due)| due.into_iter().map(move |seq| (name.clone(), seq)))
            .collect();
        for (queue, seq) in due {
            // A dead-letter earlier in this pass may have evicted it.
            let Some(message) = self
                .queues
                .get_mut(&queue)
                .and_then(|q| q.remove(seq, &mut self.pager))
            else {
                continue;
            };
            self.recount(&queue);
            let expired = DeadLetter {
                from: queue,
                seq,
                message,
                reason: DeadLetterReason::Expired,
            };
            self.dead_letter(now_ms, vec![expired], effects);
        }
        let mut woken = Vec::new();
        for name in self.timed_out(now_ms) {
            if let Some(queue) = self.queues.get_mut(&name)
                && queue.wake_scheduled(now_ms)
            {
                woken.push(name);
            }
        }
        for queue in woken {
            self.recount(&queue);
            self.dispatch(now_ms, &queue, effects);
        }
    }

    fn dead_letter_evicted(
        &mut self,
        now_ms: u64,
        from: &str,
        evicted: Vec<(Seq, Message)>,
        effects: &mut Vec<Effect>,
    ) {
        let batch = evicted
            .into_iter()
            .map(|(seq, message)| DeadLetter {
                from: from.to_owned(),
                seq,
                message,
                reason: DeadLetterReason::MaxLen,
            })
            .collect();
        self.dead_letter(now_ms, batch, effects);
    }

    /// Moves messages, already out of their queues, to their queues'
    /// dead-letter queues, or drops them.
    ///
    /// A dead-lettered message is admitted as [`Admission::DeadLetter`]: it
    /// displaces only transient messages, and only if it is persistent, and
    /// those displaced are admitted the same way but displace nothing. So
    /// the work is finite, even when dead-letter queues form a cycle.
    fn dead_letter(&mut self, now_ms: u64, batch: Vec<DeadLetter>, effects: &mut Vec<Effect>) {
        let mut pending = VecDeque::from(batch);
        while let Some(dead) = pending.pop_front() {
            let DeadLetter {
                from,
                seq,
                message,
                reason,
            } = dead;
            if let Some(source) = self.queues.get_mut(&from) {
                match reason {
                    DeadLetterReason::Expired => source.stats.expired += 1,
                    _ => source.stats.dead_lettered += 1,
                }
            }
            let persistent = message.persistent;
            let (to, evicted) = self.route(now_ms, &from, seq, message, reason);
            // What bounds the loop: only a persistent message evicts, and
            // only transient ones, which evict nothing in turn.
            assert!(
                persistent || evicted.is_empty(),
                "a transient dead-letter evicted"
            );
            assert!(
                evicted.iter().all(|(_, m)| !m.persistent),
                "a dead-letter evicted a persistent message"
            );
            effects.push(Effect::DeadLettered {
                from,
                seq,
                to: to.clone(),
                reason,
            });
            let Some(to) = to else { continue };
            self.recount(&to);
            pending.extend(evicted.into_iter().map(|(seq, message)| DeadLetter {
                from: to.clone(),
                seq,
                message,
                reason: DeadLetterReason::MaxLen,
            }));
            self.dispatch(now_ms, &to, effects);
        }
    }

    /// Puts one dead-lettered message into its origin's dead-letter queue.
    /// Returns that queue, or `None` if the message was dropped (no such
    /// queue, no room, or it would arrive expired), and what it evicted.
    fn route(
        &mut self,
        now_ms: u64,
        from: &str,
        seq: Seq,
        mut message: Message,
        reason: DeadLetterReason,
    ) -> (Option<String>, Vec<(Seq, Message)>) {
        let target_name = self
            .queues
            .get(from)
            .and_then(|q| q.config.dead_letter_queue.clone());
        let Some((name, target)) =
            target_name.and_then(|name| self.queues.get_mut(&name).map(|t| (name, t)))
        else {
            return (None, Vec::new());
        };
        // PLANTED BUG (`dlq-drops`): the dead-lettered message is dropped.
        if self.plants.dlq_drops() {
            return (None, Vec::new());
        }
        message.dead_lettered(now_ms, from, reason, &target.config);
        // It would only expire again, at once: with queues whose default
        // TTL is 0 dead-lettering to each other, `Expire` would never end.
        if message.is_expired(now_ms) {
            return (None, Vec::new());
        }
        match target.admit(seq, message, Admission::DeadLetter, &mut self.pager) {
            Ok(evicted) => (Some(name), evicted),
            Err(_) => (None, Vec::new()),
        }
    }

    fn dispatch(&mut self, now_ms: u64, queue: &str, effects: &mut Vec<Effect>) {
        let dispatch_ms = self.dispatch_ms(now_ms);
        if let Some(queue) = self.queues.get_mut(queue) {
            queue.dispatch(dispatch_ms, effects, &mut self.pager);
        }
    }

    /// Checks every invariant; a failure is a bug.
    fn check_invariants(&self) {
        // Every queue's seqs, sorted, show a seq held twice as two equal
        // neighbours and the greatest seq last: the same checks as a set
        // filled seq by seq, at a fraction of the cost (this runs after
        // every command in the simulator). Each queue's seqs come sorted,
        // and a stable sort merges such runs.
        let mut seqs = Vec::new();
        for (name, queue) in &self.queues {
            assert_eq!(name, &queue.name, "queue keyed by its name");
            queue.check_invariants();
            seqs.extend(queue.seqs());
            for consumer in queue.consumer_ids() {
                assert_eq!(self.consumers.get(&consumer), Some(name), "consumer index");
            }
        }
        let timers: BTreeSet<(u64, String)> = self
            .queues
            .values()
            .filter_map(|q| Some((q.next_expiry()?, q.name.clone())))
            .collect();
        assert_eq!(timers, self.timers, "each queue's earliest timer");
        let in_memory = self
            .queues
            .values()
            .flat_map(|q| q.messages().map(|(_, m)| m));
        self.pager.check_counts(in_memory);
        seqs.sort();
        for pair in seqs.windows(2) {
            assert_ne!(pair[0], pair[1], "seq {} is in two queues", pair[0]);
        }
        if let Some(&last) = seqs.last() {
            assert!(last <= self.last_seq, "seq {last} beyond the last seq");
        }
        for (consumer, name) in &self.consumers {
            let queue = self.queues.get(name).expect("consumers read queues");
            assert!(queue.consumer(*consumer).is_some(), "consumer index");
        }
    }
}

/// The queues whose messages `command` itself changes; a dead-letter queue
/// is recounted as messages reach it.
fn changed_by(command: &Command) -> [Option<String>; 2] {
    match command {
        Command::Enqueue { queue, .. }
        | Command::Settle { queue, .. }
        | Command::Purge { queue, .. } => [Some(queue.clone()), None],
        Command::Move { from, to, .. } => [Some(from.clone()), Some(to.clone())],
        _ => [None, None],
    }
}

fn rejected(queue: String, seq: Seq, reason: RejectReason) -> Effect {
    Effect::EnqueueRejected { queue, seq, reason }
}
