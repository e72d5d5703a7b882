//! The snapshot: the durable state as a sequence of AMQP described lists.
//!
//! ```text
//! snapshot := header (queue message*)*
//! ```
//!
//! The header counts the queues and each queue record counts its messages,
//! rather than nesting them in lists, so no single AMQP value has to hold a
//! whole queue (a list is at most 4 GiB). Decoding is strict: counts are
//! honoured exactly, names and seqs must be strictly increasing, and the
//! result must satisfy every invariant a live machine keeps.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};

use super::command::DOMAIN;
use super::dedup::Dedup;
use super::message::Message;
use super::single::{Admission, Queue};
use super::{QueueConfig, Queues, Seq};
use crate::amqp::codec::{
    Composite, DecodeError, DecodeErrorKind, FieldDecoder, FieldEncoder, Reader, Value,
};

/// The format version this code writes and reads.
const VERSION: u32 = 1;

/// What precedes the queues.
struct Header {
    version: u32,
    last_seq: Seq,
    queue_count: u64,
}

/// A durable queue, followed by its messages.
struct QueueRecord {
    name: String,
    config: QueueConfig,
    message_count: u64,
    /// Its de-duplication window: `message-id` (binary) to expiry (ulong),
    /// oldest first.
    dedup: Vec<(Value, Value)>,
}

/// A persistent message.
struct MessageRecord {
    seq: Seq,
    body: Bytes,
    delivery_count: u32,
    expiry_ms: Option<u64>,
    annotations: Vec<(Value, Value)>,
}

impl Composite for Header {
    const NAME: &'static str = "sluice:snapshot:list";
    const CODE: u64 = DOMAIN | 0x20;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.version)
            .field(&self.last_seq)
            .field(&self.queue_count);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            version: f.required("version")?,
            last_seq: f.required("last-seq")?,
            queue_count: f.required("queue-count")?,
        })
    }
}

impl Composite for QueueRecord {
    const NAME: &'static str = "sluice:snapshot-queue:list";
    const CODE: u64 = DOMAIN | 0x21;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.name)
            .field(&self.config)
            .field(&self.message_count)
            .field(&self.dedup);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            name: f.required("name")?,
            config: f.required("config")?,
            message_count: f.required("message-count")?,
            dedup: f.or_default("dedup")?,
        })
    }
}

impl Composite for MessageRecord {
    const NAME: &'static str = "sluice:snapshot-message:list";
    const CODE: u64 = DOMAIN | 0x22;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.seq)
            .field(&self.body)
            .field(&self.delivery_count)
            .field(&self.expiry_ms)
            .field(&self.annotations);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            seq: f.required("seq")?,
            body: f.required("body")?,
            delivery_count: f.required("delivery-count")?,
            expiry_ms: f.optional("expiry-ms")?,
            annotations: f.or_default("annotations")?,
        })
    }
}

/// Encodes the durable state of `queues`, recording `last_seq`.
pub(super) fn encode(queues: &Queues, last_seq: Seq) -> Bytes {
    let durable: Vec<&Queue> = queues.all_queues().filter(|q| q.config.durable).collect();
    let mut buf = BytesMut::new();
    Header {
        version: VERSION,
        last_seq,
        queue_count: durable.len() as u64,
    }
    .encode_composite(&mut buf);
    for queue in durable {
        QueueRecord {
            name: queue.name.clone(),
            config: queue.config.clone(),
            message_count: queue.persistent_messages().count() as u64,
            dedup: queue
                .dedup
                .entries()
                .map(|(id, expiry)| (Value::Binary(id.clone()), Value::Ulong(expiry)))
                .collect(),
        }
        .encode_composite(&mut buf);
        for (seq, message) in queue.persistent_messages() {
            MessageRecord {
                seq,
                body: message.body.clone(),
                delivery_count: message.delivery_count,
                expiry_ms: message.expiry_ms,
                annotations: message.annotations.clone(),
            }
            .encode_composite(&mut buf);
        }
    }
    buf.freeze()
}

/// Decodes a snapshot into a machine with no consumers.
pub(super) fn decode(snapshot: Bytes) -> Result<Queues, DecodeError> {
    let mut r = Reader::new(snapshot);
    let header = Header::decode_composite(&mut r)?;
    if header.version != VERSION {
        return Err(invalid("version"));
    }
    let mut queues = Vec::new();
    let mut seqs = BTreeSet::new();
    let mut previous_name: Option<String> = None;
    // Each record takes bytes, so a count beyond the input fails as soon as
    // the input runs out; nothing is allocated ahead of it.
    for _ in 0..header.queue_count {
        let record = QueueRecord::decode_composite(&mut r)?;
        if !record.config.durable {
            return Err(invalid("config"));
        }
        if previous_name.as_ref().is_some_and(|p| *p >= record.name) {
            return Err(invalid("name"));
        }
        previous_name = Some(record.name.clone());
        let mut queue = Queue::new(record.name, record.config);
        let dedup = record.dedup.into_iter().map(|entry| match entry {
            (Value::Binary(id), Value::Ulong(expiry)) => Some((id, expiry)),
            _ => None,
        });
        queue.dedup = dedup
            .collect::<Option<Vec<_>>>()
            .and_then(Dedup::restored)
            .ok_or_else(|| invalid("dedup"))?;
        let mut previous_seq = None;
        for _ in 0..record.message_count {
            let (seq, message) = decode_message(&mut r)?;
            if seq > header.last_seq || !seqs.insert(seq) {
                return Err(invalid("seq"));
            }
            // Seqs are unique, so any order could be rebuilt; strictness
            // keeps one encoding per state.
            if previous_seq.is_some_and(|previous| previous >= seq) {
                return Err(invalid("seq"));
            }
            previous_seq = Some(seq);
            if !queue.under_delivery_limit(&message) {
                return Err(invalid("delivery-count"));
            }
            let evicted = queue
                .admit(seq, message, Admission::DeadLetter)
                .map_err(|_| invalid("message-count"))?;
            assert!(evicted.is_empty(), "persistent messages evict nothing here");
        }
        queues.push(queue);
    }
    r.expect_empty()?;
    Ok(Queues::restored(queues, header.last_seq))
}

fn decode_message(r: &mut Reader) -> Result<(Seq, Message), DecodeError> {
    let record = MessageRecord::decode_composite(r)?;
    let message = Message::restored(
        record.body,
        record.delivery_count,
        record.expiry_ms,
        record.annotations,
    );
    Ok((record.seq, message))
}

fn invalid(field: &'static str) -> DecodeError {
    DecodeError::new(DecodeErrorKind::InvalidValue).in_field(field)
}
