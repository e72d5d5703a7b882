//! One group's state machine: the queue state machine, plus what makes
//! applying proposals exactly once and in order possible over a step that
//! may lose or repeat them. A single node is one group; a cluster has K.
//!
//! Every member applies the same committed batches in the same order, so
//! every member computes the same state and the same effects; each node
//! then acts only on the effects that concern its own links.
//!
//! # Sessions
//!
//! A proposal can be lost (a forward to a leader that steps down) or
//! committed twice (proposed again after a leader change that, as it turns
//! out, had already committed it). The proposer therefore numbers its items
//! per group, 1, 2, 3, …, and proposes again, in order, everything not yet
//! applied, whenever it has reason to believe something was lost. The group
//! applies an item only if it is the next its origin's session expects:
//! an item seen before is a duplicate, and an item past a gap waits to be
//! proposed again after the missing one. This is go-back-N over the log,
//! and it keeps each origin's commands in the order they were made in — an
//! attach before the credit that follows it. The single node's log loses
//! and repeats nothing, so its group trusts the order ([`Proposers`]).
//!
//! A topic's subscriptions all live in the topic's group, and a message
//! published to the topic is one enqueue of the topic's address, fanned out
//! when it is applied to the subscriptions the topic has then.

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::batch::Batch;
use super::origin::Origin;
use crate::amqp::codec::{DecodeError, DecodeErrorKind};
use crate::node::TOPIC_PREFIX;
use crate::node::address::{subscription_queue, topic_of_subscription};
use crate::queue::{
    Command, Effect, Guarded, LazyFields, NewMessage, PageStore, Pager, Paging, Queues,
};

/// An enqueue's seq is its entry's index shifted left this far, plus its
/// place among the entry's enqueues: unique and increasing in the group,
/// and the same on every member.
const SEQ_SHIFT: u32 = 24;

/// A data group's queues and sessions.
#[derive(Debug, Default)]
pub struct GroupState {
    queues: Queues,
    /// The group's clock: the greatest proposer time applied so far. Time
    /// never runs backwards inside a group, whichever node proposes.
    clock_ms: u64,
    /// For each origin, the token it proposes next.
    sessions: BTreeMap<Origin, u64>,
    /// Bugs planted for the simulator's checker. Volatile: not in
    /// snapshots.
    plants: crate::planted::Plants,
}

/// Who proposes to a group, which decides how it applies their items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proposers {
    /// Only this node, over its own log, which loses and repeats nothing:
    /// every item is applied, in log order (a refused entry leaves a hole
    /// in the tokens, which a session would take for a loss). The node
    /// logs neither consumers' credit nor so what they hold, so a
    /// consumer's detach arrives expanded into the settles that fail what
    /// it held (`Queues::detach_commands`, made by the node once
    /// everything before the detach was applied), which replay the same.
    One,
    /// Every node of a cluster, over Raft: an item is applied only if it is
    /// the next its origin's session expects, and a detach is expanded when
    /// it is applied, from what every member agrees the consumer holds.
    Many,
}

/// An item applied (not skipped), with its effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Who proposed it.
    pub origin: Origin,
    /// Its token.
    pub token: u64,
    /// Its effects, as a range of the effects vector.
    pub effects: Range<usize>,
    /// A settle from a consumer that no longer held the message, which
    /// the group dropped: nothing was settled.
    pub stale: bool,
}

impl GroupState {
    /// The queues as applied so far.
    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// The subscriptions of `topic` (`topic://T`, which lives in the group
    /// of its subscriptions) as this entry applies: the log orders a
    /// publish and a subscription the same way for every node.
    /// Only the subscriptions whose filter the message `body` passes get a
    /// copy.
    fn subscriptions(&self, topic: &str, body: &Bytes) -> Vec<String> {
        let topic = topic.strip_prefix(TOPIC_PREFIX).unwrap_or(topic);
        let prefix = subscription_queue(topic, "");
        let message = LazyFields::new(body);
        // PLANTED BUG (`volatile-copy-dropped`): one message in four, by a
        // checksum of its bytes (the same on every member), skips the
        // non-durable subscriptions.
        let skips_volatile = self.plants.volatile_copy_dropped() && crc32c::crc32c(body) % 4 == 0;
        self.queues
            .declared_with_prefix(&prefix)
            .filter(|(_, declared)| !skips_volatile || declared.durable)
            .map(|(name, _)| name)
            .filter(|name| self.queues.takes(name, &message))
            .map(str::to_owned)
            .collect()
    }

    fn enqueue(
        &mut self,
        now_ms: u64,
        queue: String,
        seq: u64,
        message: NewMessage,
        effects: &mut Vec<Effect>,
    ) {
        let command = Command::Enqueue {
            queue,
            seq,
            message,
        };
        self.queues.apply(now_ms, command, effects);
    }

    /// A transaction's work as its group applies it: its enqueues numbered
    /// like any of the entry's, and a topic's fanned out to the
    /// subscriptions the topic has now.
    fn number_transaction(
        &self,
        index: u64,
        enqueued: &mut u64,
        work: Vec<Guarded>,
    ) -> Vec<Guarded> {
        let mut numbered = Vec::with_capacity(work.len());
        for guarded in work {
            let Command::Enqueue { queue, message, .. } = guarded.command else {
                numbered.push(guarded);
                continue;
            };
            let copies = if is_topic(&queue) {
                self.fan_out(index, enqueued, &queue, message)
            } else {
                next_seq(index, enqueued)
                    .map(|seq| (queue, seq, message))
                    .into_iter()
                    .collect()
            };
            for (queue, seq, message) in copies {
                let command = Command::Enqueue {
                    queue,
                    seq,
                    message,
                };
                numbered.push(Guarded {
                    guard: guarded.guard,
                    command,
                });
            }
        }
        numbered
    }

    /// A message published to `topic` as a copy for each subscription
    /// that takes it, numbered like any of the entry's enqueues. Copies
    /// share the body, and say so (`copy_of` the first's seq): the group
    /// then holds and counts the body once.
    fn fan_out(
        &self,
        index: u64,
        enqueued: &mut u64,
        topic: &str,
        message: NewMessage,
    ) -> Vec<(String, u64, NewMessage)> {
        let queues = self.subscriptions(topic, &message.body);
        let shared = queues.len() > 1;
        let mut first = None;
        let mut copies = Vec::with_capacity(queues.len());
        for queue in queues {
            let Some(seq) = next_seq(index, enqueued) else {
                break;
            };
            let copy_of = shared.then(|| *first.get_or_insert(seq));
            copies.push((
                queue,
                seq,
                NewMessage {
                    copy_of,
                    ..message.clone()
                },
            ));
        }
        copies
    }

    /// A digest of the whole state: that of its encoding, which is
    /// canonical. Two members that applied the same entries must agree on
    /// it; the simulator checks that they do.
    pub fn digest(&self) -> u32 {
        crc32c::crc32c(&self.encode())
    }

    /// The token `origin` proposes next, as far as the group knows.
    pub fn next_token(&self, origin: Origin) -> u64 {
        self.sessions.get(&origin).copied().unwrap_or(1)
    }

    /// The whole state, for a Raft snapshot:
    /// `clock_ms u64 | sessions u32 | (origin u64 | next u64)* | queues`.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u64(self.clock_ms);
        out.put_u32(u32::try_from(self.sessions.len()).expect("fewer than 4G sessions"));
        for (&origin, &next) in &self.sessions {
            out.put_u64(origin.to_bits());
            out.put_u64(next);
        }
        self.queues.encode_whole(&mut out);
        out.freeze()
    }

    /// A state from all of [`GroupState::encode`]'s bytes.
    pub fn decode(mut data: Bytes) -> Result<Self, DecodeError> {
        let truncated = |_| DecodeError::from(DecodeErrorKind::Truncated);
        let clock_ms = data.try_get_u64().map_err(truncated)?;
        let mut sessions = BTreeMap::new();
        for _ in 0..data.try_get_u32().map_err(truncated)? {
            let origin = Origin::from_bits(data.try_get_u64().map_err(truncated)?);
            let next = data.try_get_u64().map_err(truncated)?;
            if sessions.insert(origin, next).is_some() || next == 0 {
                return Err(DecodeError::new(DecodeErrorKind::InvalidValue).in_field("session"));
            }
        }
        let queues = Queues::decode_whole(&mut data)?;
        if !data.is_empty() {
            return Err(DecodeError::new(DecodeErrorKind::InvalidValue).in_field("trailing"));
        }
        Ok(Self {
            queues,
            clock_ms,
            sessions,
            plants: crate::planted::Plants::NONE,
        })
    }

    /// Plants bugs in the group and its queue state machine.
    /// Pages its deep queues out to `store` under `paging`.
    pub fn page_to(&mut self, paging: Paging, store: Box<dyn PageStore>) {
        self.queues.page_to(paging, store);
    }

    /// Its paging: checkpointed before a snapshot, released after.
    pub fn pager_mut(&mut self) -> &mut Pager {
        self.queues.pager_mut()
    }

    /// What its queues hold in memory: bodies and index entries (see
    /// [`crate::queue::Pager::memory_bytes`]).
    pub fn memory_bytes(&self) -> u64 {
        self.queues.pager().memory_bytes()
    }

    /// See [`Queues::live_runs`].
    pub fn live_runs(&self) -> Vec<(crate::queue::RunId, u64, u64)> {
        self.queues.live_runs()
    }

    pub fn plant(&mut self, plants: crate::planted::Plants) {
        self.plants = plants;
        self.queues.plant(plants);
    }

    /// Moves the group's clock to `now_ms` if it is later.
    fn advance_clock(&mut self, now_ms: u64) {
        // PLANTED BUG (`clock-regress`): the clock follows the proposer's,
        // back in time too.
        if self.plants.clock_regress() {
            self.clock_ms = now_ms;
        } else {
            self.clock_ms = self.clock_ms.max(now_ms);
        }
    }

    /// Applies a consumer's credit, which is not logged, to this member
    /// only: over the single node's log (see `Core::credit`).
    ///
    /// Its clock is the node's now, which is later than that of entries
    /// proposed before it and applied after (each carries the clock read
    /// when it was proposed). The group's clock must not keep it (the log
    /// does not, so a recovery would judge expiry and the length limits
    /// otherwise), but dispatches keep it as their floor, so that no later
    /// entry delivers what this one found expired.
    pub fn apply_volatile(&mut self, now_ms: u64, command: Command, effects: &mut Vec<Effect>) {
        debug_assert!(matches!(command, Command::Credit { .. }), "{command:?}");
        let now_ms = self.clock_ms.max(now_ms);
        self.queues.raise_dispatch_floor(now_ms);
        self.queues.apply(now_ms, command, effects);
    }

    /// Applies the batch committed at `index`: appends the items it applied
    /// to `applied` and their effects to `effects`.
    pub fn apply(
        &mut self,
        index: u64,
        batch: Batch,
        proposers: Proposers,
        applied: &mut Vec<Applied>,
        effects: &mut Vec<Effect>,
    ) {
        self.advance_clock(batch.now_ms);
        let now_ms = self.clock_ms;
        let mut enqueued = 0;
        for item in batch.items {
            let next = self.sessions.entry(batch.origin).or_insert(1);
            if proposers == Proposers::Many && item.token != *next {
                continue;
            }
            *next = item.token + 1;
            let start = effects.len();
            let mut stale = false;
            match item.command {
                Command::Enqueue { queue, message, .. } if is_topic(&queue) => {
                    for (queue, seq, message) in self.fan_out(index, &mut enqueued, &queue, message)
                    {
                        self.enqueue(now_ms, queue, seq, message, effects);
                    }
                }
                Command::Enqueue { queue, message, .. } => {
                    if let Some(seq) = next_seq(index, &mut enqueued) {
                        self.enqueue(now_ms, queue, seq, message, effects);
                    }
                }
                // A settle from a consumer that no longer holds the message
                // (it was detached, and the message may be someone else's
                // now) is stale.
                Command::Settle { queue, seq, .. }
                    if item.guard.is_some_and(|consumer| {
                        self.queues.holder(&queue, seq) != Some(consumer)
                    }) =>
                {
                    stale = true;
                }
                Command::Transaction { work } => {
                    let work = self.number_transaction(index, &mut enqueued, work);
                    self.queues
                        .apply(now_ms, Command::Transaction { work }, effects);
                }
                // What the consumer holds is known only now: it returns
                // counted as a failed delivery.
                Command::Detach { consumer } if proposers == Proposers::Many => {
                    for command in self.queues.detach_commands(consumer) {
                        self.queues.apply(now_ms, command, effects);
                    }
                }
                command => self.queues.apply(now_ms, command, effects),
            }
            applied.push(Applied {
                origin: batch.origin,
                token: item.token,
                effects: start..effects.len(),
                stale,
            });
        }
    }
}

/// Whether an enqueue's address is a topic's, to fan out to its
/// subscriptions, rather than a queue (a subscription's included).
fn is_topic(address: &str) -> bool {
    address.starts_with(TOPIC_PREFIX) && topic_of_subscription(address).is_none()
}

/// The seq of the next enqueue of the entry at `index`, of which `enqueued`
/// were numbered so far; `None` past 2^24, which an entry never reaches.
fn next_seq(index: u64, enqueued: &mut u64) -> Option<u64> {
    if *enqueued >> SEQ_SHIFT != 0 {
        tracing::error!(index, "an entry past 2^24 enqueues: the rest dropped");
        return None;
    }
    let seq = (index << SEQ_SHIFT) | *enqueued;
    *enqueued += 1;
    Some(seq)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::node::batch::Item;
    use crate::queue::{NewMessage, Outcome};

    const ORIGIN: Origin = Origin::new(1, 0);

    fn item(token: u64, command: Command) -> Item {
        Item {
            token,
            guard: None,
            command,
        }
    }

    fn declare() -> Command {
        Command::Declare {
            queue: "q".into(),
            config: Box::default(),
        }
    }

    fn enqueue(body: &'static str) -> Command {
        enqueue_to("q", body)
    }

    fn enqueue_to(address: &str, body: &'static str) -> Command {
        Command::Enqueue {
            queue: address.into(),
            seq: 0,
            message: NewMessage {
                body: Bytes::from_static(body.as_bytes()),
                durable: true,
                ttl_ms: None,
                absolute_expiry_ms: None,
                message_id: None,
                traits: None,
                copy_of: None,
            },
        }
    }

    /// Subscription `name` of topic `prices`.
    fn subscribe(name: &str) -> Command {
        Command::Declare {
            queue: format!("topic://prices::{name}"),
            config: Box::default(),
        }
    }

    fn apply(state: &mut GroupState, index: u64, items: Vec<Item>) -> (Vec<Applied>, Vec<Effect>) {
        let (mut applied, mut effects) = (Vec::new(), Vec::new());
        let batch = Batch {
            origin: ORIGIN,
            now_ms: 1000,
            items,
        };
        state.apply(index, batch, Proposers::Many, &mut applied, &mut effects);
        (applied, effects)
    }

    fn depth(state: &GroupState) -> u64 {
        state.queues().info("q").map_or(0, |info| info.depth)
    }

    /// Consumer 10 attaches to `q`.
    fn attach() -> Command {
        Command::Attach {
            consumer: 10,
            queue: "q".into(),
            browse: false,
            filter: None,
        }
    }

    /// Consumer 10 may take `credit` messages.
    fn credit(credit: u32) -> Command {
        Command::Credit {
            consumer: 10,
            credit,
            drain: false,
        }
    }

    /// A queue with two messages and a consumer that holds them.
    fn sample() -> GroupState {
        let mut state = GroupState::default();
        let items = vec![
            item(1, declare()),
            item(2, enqueue("a")),
            item(3, enqueue("b")),
            item(4, attach()),
            item(5, credit(5)),
        ];
        apply(&mut state, 1, items);
        state
    }

    /// A message a volatile credit found expired is never delivered by an
    /// entry applied after it with an earlier clock (found by the
    /// simulator, replays/ttl-expiry-clock-went-back-0x36.toml), and the
    /// credit leaves the group's clock alone.
    #[test]
    fn an_entry_applied_after_a_volatile_credit_does_not_check_expiry_earlier() {
        let mut state = GroupState::default();
        let mut expiring = enqueue("a");
        if let Command::Enqueue { message, .. } = &mut expiring {
            message.ttl_ms = Some(100);
        }
        // Applied at 1000 ms: "a" expires at 1100.
        apply(
            &mut state,
            1,
            vec![item(1, declare()), item(2, expiring), item(3, attach())],
        );
        let mut effects = Vec::new();
        let clock = |state: &GroupState| state.encode().slice(..8);
        let before = clock(&state);
        state.apply_volatile(1_200, credit(1), &mut effects);
        // The group's clock (encoded first) is the log's: a recovery,
        // which replays no credit, must judge everything else alike.
        assert_eq!(clock(&state), before, "a volatile credit moved the clock");
        let delivered = |effects: &[Effect]| {
            effects
                .iter()
                .any(|effect| matches!(effect, Effect::Deliver { .. }))
        };
        assert!(!delivered(&effects), "expired at 1200: {effects:?}");
        // Proposed at 1000 ms, applied after the credit.
        let (_, effects) = apply(&mut state, 2, vec![item(4, credit(2))]);
        assert!(!delivered(&effects), "still expired: {effects:?}");
    }

    #[test]
    fn a_state_survives_its_encoding_with_consumers_and_what_they_hold() {
        let state = sample();
        let restored = GroupState::decode(state.encode()).expect("decodes");
        assert_eq!(restored.digest(), state.digest());
        assert_eq!(restored.queues().holder("q", 1 << SEQ_SHIFT | 1), Some(10));
        assert_eq!(restored.next_token(ORIGIN), 6);
        let bytes = state.encode();
        for len in 0..bytes.len() {
            assert!(
                GroupState::decode(bytes.slice(..len)).is_err(),
                "cut at {len}"
            );
        }
    }

    /// A group's state is a single node's log snapshot and a Raft
    /// snapshot, byte for byte: a change to it is a format change.
    #[test]
    fn the_state_encoding_is_stable() {
        insta::assert_snapshot!(hex_lines(&sample().encode()));
    }

    /// `bytes` in hex, 32 to a line.
    fn hex_lines(bytes: &[u8]) -> String {
        let lines: Vec<String> = bytes
            .chunks(32)
            .map(|line| line.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        lines.join("\n")
    }

    #[test]
    fn a_topic_publish_goes_to_the_subscriptions_the_topic_has_when_applied() {
        let mut state = GroupState::default();
        let publish = || enqueue_to("topic://prices", "tick");
        apply(
            &mut state,
            1,
            vec![
                item(1, subscribe("a")),
                item(2, publish()),
                item(3, subscribe("b")),
            ],
        );
        apply(&mut state, 2, vec![item(4, publish())]);
        let depth = |queue: &str| state.queues().info(queue).map(|info| info.depth);
        assert_eq!(depth("topic://prices::a"), Some(2));
        assert_eq!(
            depth("topic://prices::b"),
            Some(1),
            "subscribed after the first"
        );
        assert_eq!(depth("topic://prices"), None, "a topic is not a queue");
    }

    /// A topic's message held by several subscriptions is one body: held,
    /// counted against memory and written in a snapshot once, and shared
    /// again by the state a snapshot restores.
    #[test]
    fn the_copies_of_a_topic_message_share_one_body() {
        let mut state = GroupState::default();
        let publish = |body| enqueue_to("topic://prices", body);
        let items = vec![
            item(1, subscribe("a")),
            item(2, subscribe("b")),
            item(3, subscribe("c")),
            item(4, publish("tick-1")),
            item(5, publish("tick-2")),
        ];
        apply(&mut state, 1, items);
        // Two bodies of 6 bytes, six messages (two per subscription).
        let held = 12 + 6 * crate::queue::MESSAGE_INDEX_BYTES;
        assert_eq!(state.memory_bytes(), held);
        let encoded = state.encode();
        let written = |body: &[u8]| encoded.windows(body.len()).filter(|w| *w == body).count();
        assert_eq!((written(b"tick-1"), written(b"tick-2")), (1, 1));
        insta::assert_snapshot!(hex_lines(&encoded));
        let restored = GroupState::decode(encoded.clone()).unwrap();
        assert_eq!(restored.memory_bytes(), held);
        assert_eq!(restored.encode(), encoded);
    }

    #[test]
    fn an_item_committed_twice_is_applied_once() {
        let mut state = GroupState::default();
        apply(
            &mut state,
            1,
            vec![item(1, declare()), item(2, enqueue("a"))],
        );
        let (applied, _) = apply(&mut state, 2, vec![item(2, enqueue("a"))]);
        assert!(applied.is_empty());
        assert_eq!(depth(&state), 1);
    }

    #[test]
    fn an_item_past_a_gap_waits_for_the_missing_one() {
        let mut state = GroupState::default();
        apply(&mut state, 1, vec![item(1, declare())]);
        let (applied, _) = apply(&mut state, 2, vec![item(3, enqueue("b"))]);
        assert!(applied.is_empty(), "token 2 was lost: 3 must wait");
        assert_eq!(state.next_token(ORIGIN), 2, "3 is not applied");
        let (applied, _) = apply(
            &mut state,
            3,
            vec![item(2, enqueue("a")), item(3, enqueue("b"))],
        );
        assert_eq!(applied.len(), 2);
        assert_eq!(depth(&state), 2);
    }

    #[test]
    fn enqueues_take_their_seq_from_the_entry_index() {
        let mut state = GroupState::default();
        apply(&mut state, 1, vec![item(1, declare())]);
        apply(
            &mut state,
            7,
            vec![item(2, enqueue("a")), item(3, enqueue("b"))],
        );
        apply(&mut state, 3, vec![]);
        assert_eq!(state.queues().last_seq(), (7 << SEQ_SHIFT) | 1);
    }

    #[test]
    fn a_settle_from_a_consumer_that_no_longer_holds_the_message_is_dropped() {
        let mut state = GroupState::default();
        let attach = |consumer| Command::Attach {
            consumer,
            queue: "q".into(),
            browse: false,
            filter: None,
        };
        let credit = |consumer| Command::Credit {
            consumer,
            credit: 1,
            drain: false,
        };
        apply(
            &mut state,
            1,
            vec![
                item(1, declare()),
                item(2, enqueue("a")),
                item(3, attach(10)),
                item(4, credit(10)),
                item(5, Command::Detach { consumer: 10 }),
                item(6, attach(11)),
                item(7, credit(11)),
            ],
        );
        let seq = 1 << SEQ_SHIFT;
        assert_eq!(state.queues().holder("q", seq), Some(11));
        let stale = Item {
            token: 8,
            guard: Some(10),
            command: Command::Settle {
                queue: "q".into(),
                seq,
                outcome: Outcome::Accepted,
            },
        };
        apply(&mut state, 2, vec![stale]);
        assert_eq!(state.queues().holder("q", seq), Some(11));
        assert_eq!(state.queues().info("q").map(|info| info.unsettled), Some(1));
    }
}
