//! The whole state of a [`Queues`], volatile parts included: consumers,
//! their credit, what each holds, browse cursors, `undeliverable-here`
//! marks, transient queues and messages. A node that restarts from it, or
//! a Raft member that catches up from it, must end with exactly the state
//! of one that applied the log.
//!
//! It is the queues' part of a group's snapshot (`node::state`), in the
//! single node's log and in a Raft group's: a plain binary layout, decoded
//! strictly: every count honoured, nothing left over, and the rebuilt
//! queues checked against the machine's invariants.
//!
//! ```text
//! whole    := last_seq u64 | next_run u64 | queues u32 | queue*
//! queue    := name | config | last_served | dedup u32 (id | expiry u64)*
//!             | consumers u32 | consumer* | messages u32 | message*
//!             | runs u8 | run* | paged_expiries u32 (expiry u64 | seq u64)*
//! consumer := id u64 | credit u32 | mode
//! mode     := 0 | undeliverable u32 | seq u64*          acquiring
//!           | 1 | cursor                               browsing
//!           | 2 | filter | undeliverable u32 | seq u64*  acquiring, filtered
//!           | 3 | filter | cursor                      browsing, filtered
//! message  := seq u64 | copy | persistent u8 | expiry | delivery_count u32
//!             | annotations | acquired_before u8 | holder
//! copy     := 0 | body                 not a copy
//!           | 1 | first u64 | body     a copy, whose body comes first here
//!           | 2 | first u64            a copy, whose body came before
//! run      := rank u8 | id u64 | front u64 | end u64 | first_seq u64
//!             | last_seq u64 | all tally | persistent tally | expiring u64
//! tally    := count u64 | bytes u64
//! ```
//!
//! Messages are those in memory; copies of one publish (a topic's, see
//! [`super::NewMessage::copy_of`]) share a body, written once: with the
//! first copy written, in the order of the queues' names. A run names a
//! deep queue's paged ones in the group's page store (`super::paging`),
//! which must be synced before the snapshot is written.
//!
//! Byte strings (names, bodies, ids) are `len u32 | bytes`; optional
//! numbers (`last_served`, `cursor`, `expiry`, `holder`) are `0` or
//! `1 | u64`; the config, the annotations and a consumer's filter are
//! AMQP-encoded byte strings. A consumer without a filter is written as
//! before filters existed.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::consumer::{Consumer, Mode};
use super::dedup::Dedup;
use super::message::{Message, Tally, Traits};
use super::paging::{Run, RunId};
use super::single::Queue;
use super::{QueueConfig, Queues, Seq};
use crate::amqp::codec::{DecodeError, DecodeErrorKind, Value, from_bytes, to_bytes};
use crate::planted::Plants;

/// A consumer's mode tag: acquiring, or (this bit) browsing.
const ACQUIRING: u8 = 0;
const BROWSING: u8 = 1;
/// The bit of a consumer's mode tag that says a filter follows.
const FILTERED: u8 = 2;

/// Writes the whole state of `queues` into `out`.
pub fn encode(queues: &Queues, out: &mut BytesMut) {
    let mut bodies = Bodies::shared(queues.pager().plants());
    out.put_u64(queues.last_seq());
    out.put_u64(queues.pager().next_run());
    let all: Vec<&Queue> = queues.all_queues().collect();
    put_count(out, all.len());
    for queue in all {
        put_bytes(out, queue.name.as_bytes());
        put_bytes(out, &to_bytes(&queue.config));
        put_optional(out, queue.last_served());
        let dedup: Vec<(&Bytes, u64)> = queue.dedup.entries().collect();
        put_count(out, dedup.len());
        for (id, expiry) in dedup {
            put_bytes(out, id);
            out.put_u64(expiry);
        }
        let consumers: Vec<_> = queue.consumers().collect();
        put_count(out, consumers.len());
        for (id, consumer) in consumers {
            out.put_u64(id);
            out.put_u32(consumer.credit);
            let filtered = if consumer.filter.is_some() {
                FILTERED
            } else {
                0
            };
            let mode = match &consumer.mode {
                Mode::Acquiring { .. } => ACQUIRING,
                Mode::Browsing { .. } => BROWSING,
            };
            out.put_u8(mode | filtered);
            if let Some(filter) = &consumer.filter {
                put_bytes(out, &to_bytes(filter));
            }
            match &consumer.mode {
                Mode::Acquiring { undeliverable, .. } => {
                    put_count(out, undeliverable.len());
                    undeliverable.iter().for_each(|&seq| out.put_u64(seq));
                }
                Mode::Browsing { cursor } => put_optional(out, *cursor),
            }
        }
        let messages: Vec<_> = queue.messages().collect();
        put_count(out, messages.len());
        for (seq, message) in messages {
            put_message(out, seq, message, &mut bodies);
        }
        put_runs(out, queue);
    }
}

fn put_runs(out: &mut BytesMut, queue: &Queue) {
    let runs: Vec<(u8, &Run)> = queue.runs().collect();
    out.put_u8(u8::try_from(runs.len()).expect("a run per rank, of at most 256"));
    for (rank, run) in runs {
        out.put_u8(rank);
        for value in [run.id, run.front, run.end, run.first_seq, run.last_seq] {
            out.put_u64(value);
        }
        for tally in [run.all, run.persistent] {
            out.put_u64(tally.count);
            out.put_u64(tally.bytes);
        }
        out.put_u64(run.expiring);
    }
    let expiries: Vec<(u64, Seq)> = queue.paged_expiries().collect();
    put_count(out, expiries.len());
    for (expiry_ms, seq) in expiries {
        out.put_u64(expiry_ms);
        out.put_u64(seq);
    }
}

fn runs_of(
    input: &mut Bytes,
    last_seq: Seq,
    next_run: RunId,
) -> Result<Vec<(u8, Run)>, DecodeError> {
    let mut runs = Vec::new();
    for _ in 0..u8_of(input)? {
        let rank = u8_of(input)?;
        let run = Run {
            id: u64_of(input)?,
            front: u64_of(input)?,
            end: u64_of(input)?,
            first_seq: u64_of(input)?,
            last_seq: u64_of(input)?,
            all: tally_of(input)?,
            persistent: tally_of(input)?,
            expiring: u64_of(input)?,
        };
        if run.id >= next_run || run.last_seq > last_seq {
            return Err(invalid("run"));
        }
        runs.push((rank, run));
    }
    Ok(runs)
}

fn tally_of(input: &mut Bytes) -> Result<Tally, DecodeError> {
    Ok(Tally {
        count: u64_of(input)?,
        bytes: u64_of(input)?,
    })
}

/// Reads what [`encode`] wrote from the front of `input`.
pub fn decode(input: &mut Bytes) -> Result<Queues, DecodeError> {
    let last_seq = u64_of(input)?;
    let next_run = u64_of(input)?;
    let mut bodies = Bodies::shared(Plants::NONE);
    let mut queues = Vec::new();
    for _ in 0..u32_of(input)? {
        queues.push(decode_queue(input, last_seq, next_run, &mut bodies)?);
    }
    let names_ascend = queues.windows(2).all(|pair| pair[0].name < pair[1].name);
    if !names_ascend {
        return Err(invalid("name"));
    }
    Queues::restored_whole(queues, last_seq, next_run).ok_or_else(|| invalid("consumer"))
}

fn decode_queue(
    input: &mut Bytes,
    last_seq: Seq,
    next_run: RunId,
    bodies: &mut Bodies,
) -> Result<Queue, DecodeError> {
    let name = String::from_utf8(bytes_of(input)?.to_vec()).map_err(|_| invalid("name"))?;
    let config: QueueConfig = from_bytes(bytes_of(input)?)?;
    let last_served = optional_of(input)?;
    let mut dedup = Vec::new();
    for _ in 0..u32_of(input)? {
        dedup.push((bytes_of(input)?, u64_of(input)?));
    }
    let dedup = Dedup::restored(dedup).ok_or_else(|| invalid("dedup"))?;
    let mut consumers = Vec::new();
    for _ in 0..u32_of(input)? {
        let id = u64_of(input)?;
        let credit = u32_of(input)?;
        let tag = u8_of(input)?;
        if tag & !(FILTERED | BROWSING) != 0 {
            return Err(invalid("mode"));
        }
        let filter = if tag & FILTERED != 0 {
            Some(from_bytes(bytes_of(input)?)?)
        } else {
            None
        };
        let mode = match tag & BROWSING {
            ACQUIRING => {
                let mut undeliverable = std::collections::BTreeSet::new();
                for _ in 0..u32_of(input)? {
                    undeliverable.insert(u64_of(input)?);
                }
                Mode::Acquiring {
                    unsettled: std::collections::BTreeSet::new(),
                    undeliverable,
                }
            }
            _ => Mode::Browsing {
                cursor: optional_of(input)?,
            },
        };
        let mut consumer = Consumer::new(false, filter);
        consumer.credit = credit;
        consumer.mode = mode;
        consumers.push((id, consumer));
    }
    let mut messages = Vec::new();
    for _ in 0..u32_of(input)? {
        let (seq, message) = message_of(input, &config, bodies)?;
        if seq > last_seq || message.copy_of.is_some_and(|first| first > last_seq) {
            return Err(invalid("seq"));
        }
        messages.push((seq, message));
    }
    let mut queue = Queue::restored_whole(name, config, dedup, last_served, consumers, messages)
        .ok_or_else(|| invalid("queue"))?;
    let runs = runs_of(input, last_seq, next_run)?;
    let mut expiries = Vec::new();
    for _ in 0..u32_of(input)? {
        expiries.push((u64_of(input)?, u64_of(input)?));
    }
    queue
        .restore_runs(runs, expiries)
        .ok_or_else(|| invalid("run"))?;
    Ok(queue)
}

/// The bodies of copies (by their first copy's seq) already in an
/// encoding: each is written once. A page's record stands alone.
pub(super) enum Bodies {
    Shared {
        written: BTreeMap<Seq, Bytes>,
        /// Planted bugs: `copy-body-swapped`.
        plants: Plants,
    },
    Alone,
}

impl Bodies {
    /// For one encoding, or decoding, of the whole state.
    fn shared(plants: Plants) -> Self {
        Self::Shared {
            written: BTreeMap::new(),
            plants,
        }
    }
}

/// A message's copy tag: not a copy, a copy with its body, a copy whose
/// body came before.
const NOT_A_COPY: u8 = 0;
const COPY_WITH_BODY: u8 = 1;
const COPY_WITHOUT_BODY: u8 = 2;

/// Writes message `seq`: also a paged message's record (`super::paging`).
pub(super) fn put_message(out: &mut BytesMut, seq: Seq, message: &Message, bodies: &mut Bodies) {
    out.put_u64(seq);
    match (message.copy_of, bodies) {
        (None, _) => {
            out.put_u8(NOT_A_COPY);
            put_bytes(out, &message.body);
        }
        (Some(first), Bodies::Shared { written, plants }) if written.contains_key(&first) => {
            out.put_u8(COPY_WITHOUT_BODY);
            // PLANTED BUG (`copy-body-swapped`): the copy is written as one
            // of the body written before its own.
            let before = written.range(..first).next_back().map(|(&seq, _)| seq);
            out.put_u64(
                before
                    .filter(|_| plants.copy_body_swapped())
                    .unwrap_or(first),
            );
        }
        (Some(first), bodies) => {
            if let Bodies::Shared { written, .. } = bodies {
                written.insert(first, message.body.clone());
            }
            out.put_u8(COPY_WITH_BODY);
            out.put_u64(first);
            put_bytes(out, &message.body);
        }
    }
    out.put_u8(u8::from(message.persistent));
    put_optional(out, message.expiry_ms);
    out.put_u32(message.delivery_count);
    put_bytes(out, &to_bytes(&Value::Map(message.annotations.clone())));
    out.put_u8(u8::from(message.acquired_before));
    put_optional(out, message.holder);
}

/// Reads what [`put_message`] wrote, for a queue configured by `config`.
pub(super) fn message_of(
    input: &mut Bytes,
    config: &QueueConfig,
    bodies: &mut Bodies,
) -> Result<(Seq, Message), DecodeError> {
    let seq = u64_of(input)?;
    let (copy_of, body) = copy_of(input, bodies)?;
    let persistent = bool_of(input)?;
    let expiry_ms = optional_of(input)?;
    let delivery_count = u32_of(input)?;
    let Value::Map(annotations) = from_bytes(bytes_of(input)?)? else {
        return Err(invalid("annotations"));
    };
    let acquired_before = bool_of(input)?;
    let holder = optional_of(input)?;
    // A message held, or delivered and failed before, was acquired: the
    // queue's invariants rest on it (found by the `queue_state` fuzzer).
    if (holder.is_some() || delivery_count > 0) && !acquired_before {
        return Err(invalid("acquired_before"));
    }
    let traits = Traits::read(&body, &annotations, config).boxed();
    let message = Message {
        body,
        persistent,
        expiry_ms,
        delivery_count,
        annotations,
        acquired_before,
        holder,
        traits,
        copy_of,
    };
    Ok((seq, message))
}

/// A message's copy tag and body; strictly: a body comes with the first
/// copy written, and only with it.
fn copy_of(input: &mut Bytes, bodies: &mut Bodies) -> Result<(Option<Seq>, Bytes), DecodeError> {
    let tag = u8_of(input)?;
    if tag == NOT_A_COPY {
        return Ok((None, bytes_of(input)?));
    }
    let first = u64_of(input)?;
    let known = match bodies {
        Bodies::Shared { written, .. } => written.get(&first).cloned(),
        Bodies::Alone => None,
    };
    let body = match (tag, known) {
        (COPY_WITH_BODY, None) => bytes_of(input)?,
        (COPY_WITHOUT_BODY, Some(body)) => body,
        _ => return Err(invalid("copy")),
    };
    if let Bodies::Shared { written, .. } = bodies {
        written.insert(first, body.clone());
    }
    Ok((Some(first), body))
}

fn put_count(out: &mut BytesMut, count: usize) {
    out.put_u32(u32::try_from(count).expect("fewer than 4G items"));
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    put_count(out, bytes.len());
    out.put_slice(bytes);
}

fn put_optional(out: &mut BytesMut, value: Option<u64>) {
    match value {
        None => out.put_u8(0),
        Some(value) => {
            out.put_u8(1);
            out.put_u64(value);
        }
    }
}

fn truncated() -> DecodeError {
    DecodeErrorKind::Truncated.into()
}

fn invalid(field: &'static str) -> DecodeError {
    DecodeError::new(DecodeErrorKind::InvalidValue).in_field(field)
}

fn u8_of(input: &mut Bytes) -> Result<u8, DecodeError> {
    input.try_get_u8().map_err(|_| truncated())
}

fn u32_of(input: &mut Bytes) -> Result<u32, DecodeError> {
    input.try_get_u32().map_err(|_| truncated())
}

fn u64_of(input: &mut Bytes) -> Result<u64, DecodeError> {
    input.try_get_u64().map_err(|_| truncated())
}

fn bool_of(input: &mut Bytes) -> Result<bool, DecodeError> {
    match u8_of(input)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(invalid("flag")),
    }
}

fn optional_of(input: &mut Bytes) -> Result<Option<u64>, DecodeError> {
    match u8_of(input)? {
        0 => Ok(None),
        1 => u64_of(input).map(Some),
        _ => Err(invalid("optional")),
    }
}

fn bytes_of(input: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = u32_of(input)? as usize;
    if input.len() < len {
        return Err(truncated());
    }
    Ok(input.split_to(len))
}
