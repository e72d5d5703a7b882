//! The encoding of commands, as the log stores them: AMQP described lists
//! with descriptors in Sluice's private domain, strictly decoded.
//!
//! Outcomes reuse the AMQP outcome types (`amqp:accepted:list`, …), since
//! they are those outcomes.

use bytes::{Bytes, BytesMut};

use super::{
    Command, DEFAULT_PRIORITY, Guarded, MessageFilter, NewMessage, Outcome, Overflow,
    PublishTraits, QueueConfig, Seq, Seqs,
};
use crate::amqp::codec::{
    Composite, Decode, DecodeError, DecodeErrorKind, Descriptor, Encode, FieldDecoder,
    FieldEncoder, Reader, Symbol, composite_codec, decode_list, encode_descriptor, encode_list,
    encode_list_of, from_bytes, read_descriptor, read_list, to_bytes,
};
use crate::amqp::types::{self, DeliveryState};

/// Sluice's descriptor domain ("SL"): codes are `DOMAIN | id`.
pub(super) const DOMAIN: u64 = 0x534C_0000_0000_0000;

impl Command {
    /// The command as the log stores it.
    pub fn encode(&self) -> Bytes {
        to_bytes(self)
    }

    /// A command from [`Command::encode`]'s bytes, all of them.
    pub fn decode(bytes: Bytes) -> Result<Command, DecodeError> {
        from_bytes(bytes)
    }
}

/// Declares the record of each command variant: a described list whose
/// fields are the variant's fields in order, all mandatory. Encoding writes
/// the fields where they are, without building a record value first (the
/// log encodes every command it stores).
///
/// Fields after a `;` are optional (`Option<T>` in the variant), and come
/// last: a record written before they existed decodes with `None`, and
/// `None` encodes as that record did.
macro_rules! command_records {
    ($($variant:ident, $id:literal, $name:literal {
        $($field:ident: $ty:ty),* $(; $($optional:ident: $oty:ty),*)?
    })*) => {
        impl Encode for Command {
            fn encode(&self, buf: &mut BytesMut) {
                match self {
                    $(Command::$variant { $($field,)* $($($optional),*)? } => {
                        encode_descriptor(buf, &Descriptor::Code(DOMAIN | $id));
                        encode_list(buf, |_fields| {
                            $(_fields.field::<$ty>($field);)*
                            $($(_fields.field::<Option<$oty>>($optional);)*)?
                        });
                    })*
                }
            }
        }

        impl Decode for Command {
            fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
                let descriptor = read_descriptor(r)?;
                $(if descriptor.is($name, DOMAIN | $id) {
                    return decode_list(r, |_fields| {
                        Ok(Command::$variant {
                            $($field: _fields.required::<$ty>(stringify!($field))?,)*
                            $($($optional: _fields.optional::<$oty>(stringify!($optional))?,)*)?
                        })
                    });
                })*
                Err(DecodeErrorKind::UnexpectedDescriptor.into())
            }
        }
    };
}

command_records! {
    Declare, 0x01, "sluice:declare:list" { queue: String, config: Box<QueueConfig> }
    Delete, 0x02, "sluice:delete:list" { queue: String }
    Enqueue, 0x03, "sluice:enqueue:list" { queue: String, seq: u64, message: NewMessage }
    Attach, 0x04, "sluice:attach:list" {
        consumer: u64, queue: String, browse: bool; filter: Box<MessageFilter>
    }
    Credit, 0x05, "sluice:credit:list" { consumer: u64, credit: u32, drain: bool }
    Settle, 0x06, "sluice:settle:list" { queue: String, seq: u64, outcome: Outcome }
    Detach, 0x07, "sluice:detach:list" { consumer: u64 }
    Expire, 0x08, "sluice:expire:list" {}
    Transaction, 0x09, "sluice:transaction:list" { work: Vec<Guarded> }
    Purge, 0x0a, "sluice:purge:list" { queue: String, except: Seqs }
    Move, 0x0b, "sluice:move:list" { from: String, to: String, max: u64, except: Seqs }
}

/// Seqs as binary: each big-endian in 8 bytes, in increasing order.
impl Encode for Seqs {
    fn encode(&self, buf: &mut BytesMut) {
        let bytes: Vec<u8> = self.0.iter().flat_map(|seq| seq.to_be_bytes()).collect();
        Bytes::from(bytes).encode(buf);
    }
}

impl Decode for Seqs {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let bytes = Bytes::decode(r)?;
        let chunks = bytes.chunks_exact(8);
        if !chunks.remainder().is_empty() {
            return Err(DecodeErrorKind::SizeMismatch.into());
        }
        let seqs = chunks
            .map(|chunk| <[u8; 8]>::try_from(chunk).map(u64::from_be_bytes))
            .collect::<Result<std::collections::BTreeSet<Seq>, _>>()
            .map_err(|_| DecodeErrorKind::SizeMismatch)?;
        if seqs.len() * 8 != bytes.len() {
            // Encoded in increasing order, each once: a repeat is not ours.
            return Err(DecodeErrorKind::InvalidValue.into());
        }
        Ok(Seqs(seqs))
    }
}

impl Composite for QueueConfig {
    const NAME: &'static str = "sluice:queue-config:list";
    const CODE: u64 = DOMAIN | 0x10;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.durable)
            .field(&self.max_length)
            .field(&self.max_bytes)
            .field(&self.overflow)
            .field(&self.dead_letter_queue)
            .field(&self.delivery_limit)
            .field(&self.default_ttl_ms)
            .field(&self.dedup_window_ms)
            .field(&self.dedup_window_ids)
            .field(&self.auto_delete)
            .field(&self.priority_levels)
            .field(&self.last_value_key)
            .field(&Some(self.message_groups).filter(|on| *on))
            .field(&Some(self.single_active_consumer).filter(|on| *on))
            .field(&self.filter);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            durable: f.required("durable")?,
            max_length: f.optional("max-length")?,
            max_bytes: f.optional("max-bytes")?,
            overflow: f.required("overflow")?,
            dead_letter_queue: f.optional("dead-letter-queue")?,
            delivery_limit: f.optional("delivery-limit")?,
            default_ttl_ms: f.optional("default-ttl-ms")?,
            dedup_window_ms: f.optional("dedup-window-ms")?,
            dedup_window_ids: f.optional("dedup-window-ids")?,
            // This and what follows are absent from what an earlier version
            // logged.
            auto_delete: f.optional("auto-delete")?.unwrap_or(false),
            priority_levels: f.optional("priority-levels")?,
            last_value_key: f.optional("last-value-key")?,
            message_groups: f.or("message-groups", false)?,
            single_active_consumer: f.or("single-active-consumer", false)?,
            filter: f.optional("filter")?,
        })
    }
}

impl Composite for NewMessage {
    const NAME: &'static str = "sluice:new-message:list";
    const CODE: u64 = DOMAIN | 0x11;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        let default = PublishTraits::default();
        let traits = self.traits.as_deref().unwrap_or(&default);
        f.field(&self.body)
            .field(&self.durable)
            .field(&self.ttl_ms)
            .field(&self.absolute_expiry_ms)
            .field(&self.message_id)
            .field(&Some(traits.priority).filter(|p| *p != DEFAULT_PRIORITY))
            .field(&traits.group)
            .field(&traits.deliver_at_ms)
            .field(&self.copy_of);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            body: f.required("body")?,
            durable: f.required("durable")?,
            ttl_ms: f.optional("ttl-ms")?,
            absolute_expiry_ms: f.optional("absolute-expiry-ms")?,
            message_id: f.optional("message-id")?,
            // Absent from what an earlier version logged, and from a message
            // that does not set them.
            traits: PublishTraits {
                priority: f.or("priority", DEFAULT_PRIORITY)?,
                group: f.optional("group")?,
                deliver_at_ms: f.optional("deliver-at-ms")?,
            }
            .boxed(),
            copy_of: f.optional("copy-of")?,
        })
    }
}

/// A transaction's command: `guard` is 0 for none (consumer ids start at 1).
impl Composite for Guarded {
    const NAME: &'static str = "sluice:guarded:list";
    const CODE: u64 = DOMAIN | 0x12;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.guard.unwrap_or(0)).field(&self.command);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        let guard = f.required::<u64>("guard")?;
        let command = f.required("command")?;
        // A transaction enqueues and settles; anything else (another
        // transaction above all) is not one of its commands.
        if !matches!(command, Command::Enqueue { .. } | Command::Settle { .. }) {
            return Err(DecodeError::new(DecodeErrorKind::InvalidValue).in_field("command"));
        }
        Ok(Self {
            guard: Some(guard).filter(|&consumer| consumer != 0),
            command,
        })
    }
}

composite_codec!(QueueConfig, NewMessage, Guarded);

/// What commands box (see [`Command::Declare`]) encodes as what it holds.
macro_rules! boxed_codec {
    ($($t:ty),*) => {
        $(
            impl Encode for Box<$t> {
                fn encode(&self, buf: &mut BytesMut) {
                    (**self).encode(buf);
                }
            }

            impl Decode for Box<$t> {
                fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
                    <$t>::decode(r).map(Box::new)
                }
            }
        )*
    };
}

boxed_codec!(QueueConfig, MessageFilter);

impl Encode for Vec<Guarded> {
    fn encode(&self, buf: &mut BytesMut) {
        encode_list_of(buf, self);
    }
}

impl Decode for Vec<Guarded> {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let (mut items, count) = read_list(r)?;
        let work = (0..count)
            .map(|_| Guarded::decode(&mut items))
            .collect::<Result<Vec<_>, _>>()?;
        items
            .expect_empty()
            .map_err(|_| DecodeErrorKind::SizeMismatch)?;
        Ok(work)
    }
}

impl Overflow {
    fn symbol(self) -> &'static str {
        match self {
            Overflow::RejectPublish => "reject-publish",
            Overflow::DropHead => "drop-head",
        }
    }
}

impl Encode for Overflow {
    fn encode(&self, buf: &mut BytesMut) {
        Symbol::from_static(self.symbol()).encode(buf)
    }
}

impl Decode for Overflow {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let symbol = Symbol::decode(r)?;
        [Overflow::RejectPublish, Overflow::DropHead]
            .into_iter()
            .find(|o| symbol == o.symbol())
            .ok_or(DecodeErrorKind::InvalidValue.into())
    }
}

impl Encode for Outcome {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Outcome::Accepted => types::Accepted.encode(buf),
            Outcome::Released => types::Released.encode(buf),
            Outcome::Rejected => types::Rejected::default().encode(buf),
            Outcome::Modified {
                delivery_failed,
                undeliverable_here,
                annotations,
            } => types::Modified {
                delivery_failed: *delivery_failed,
                undeliverable_here: *undeliverable_here,
                message_annotations: annotations.clone(),
            }
            .encode(buf),
        }
    }
}

impl Decode for Outcome {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match DeliveryState::decode(r)? {
            DeliveryState::Accepted(_) => Ok(Outcome::Accepted),
            DeliveryState::Released(_) => Ok(Outcome::Released),
            // The log never carries the error: the queue does not keep it.
            DeliveryState::Rejected(types::Rejected { error: None }) => Ok(Outcome::Rejected),
            DeliveryState::Modified(m) => Ok(Outcome::Modified {
                delivery_failed: m.delivery_failed,
                undeliverable_here: m.undeliverable_here,
                annotations: m.message_annotations,
            }),
            DeliveryState::Rejected(_)
            | DeliveryState::Received(_)
            | DeliveryState::Declared(_)
            | DeliveryState::Transactional(_) => Err(DecodeErrorKind::InvalidValue.into()),
        }
    }
}
