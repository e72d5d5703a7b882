//! Transactions (spec part 4): the coordinator terminus, the `declare` and
//! `discharge` messages a controller sends it, and the delivery states that
//! tie transfers and dispositions to a transaction.

use bytes::{Bytes, BytesMut};

use super::definitions::Fields;
use super::messaging::{DeliveryState, Target};
use crate::amqp::codec::{
    Composite, Decode, DecodeError, DecodeErrorKind, Described, Encode, FieldDecoder, FieldEncoder,
    Reader, Symbol, Value, composite_codec, read_descriptor,
};

/// The coordinator capability for local transactions (§4.5.8).
pub const LOCAL_TRANSACTIONS: &str = "amqp:local-transactions";

/// The longest transaction id (§4.5.x `transaction-id`: up to 32 octets).
pub const TXN_ID_MAX: usize = 32;

/// The key of a flow's properties under which a receiver names the
/// transaction it acquires messages in (§4.4.3).
const TXN_ID_KEY: &str = "txn-id";

/// The transaction a flow's `properties` acquire in, if any: a binary
/// `txn-id` (another type names no transaction).
pub fn acquisition(properties: &Fields) -> Option<Bytes> {
    properties
        .iter()
        .find(|(key, _)| key.as_str() == TXN_ID_KEY)
        .and_then(|(_, value)| match value {
            Value::Binary(txn_id) => Some(txn_id.clone()),
            _ => None,
        })
}

/// The target of a link to a transaction coordinator (§4.5.1).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Coordinator {
    /// The transaction capabilities the controller needs.
    pub capabilities: Vec<Symbol>,
}

/// Asks the coordinator for a new transaction (§4.5.2).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Declare {
    /// Present for a distributed transaction (a branch of a global one).
    pub global_id: Option<Value>,
}

/// Ends a transaction (§4.5.3): commits it, or with `fail` rolls it back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Discharge {
    /// The transaction.
    pub txn_id: Bytes,
    /// Roll back rather than commit.
    pub fail: bool,
}

/// The coordinator's answer to a `declare` (§4.5.5).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Declared {
    /// The new transaction's id.
    pub txn_id: Bytes,
}

/// A delivery's state as part of a transaction (§4.5.6): on a transfer, the
/// transaction a publish belongs to; on a disposition, the outcome that
/// takes effect if the transaction commits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TransactionalState {
    /// The transaction.
    pub txn_id: Bytes,
    /// The provisional outcome: one of the terminal outcomes of part 3.
    pub outcome: Option<Box<DeliveryState>>,
}

impl Composite for Coordinator {
    const NAME: &'static str = "amqp:coordinator:list";
    const CODE: u64 = 0x30;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.capabilities);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            capabilities: f.or_default("capabilities")?,
        })
    }
}

impl Composite for Declare {
    const NAME: &'static str = "amqp:declare:list";
    const CODE: u64 = 0x31;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.global_id);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            global_id: f.optional("global-id")?,
        })
    }
}

impl Composite for Discharge {
    const NAME: &'static str = "amqp:discharge:list";
    const CODE: u64 = 0x32;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.txn_id)
            .field(&Some(self.fail).filter(|fail| *fail));
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            txn_id: f.required("txn-id")?,
            fail: f.or("fail", false)?,
        })
    }
}

impl Composite for Declared {
    const NAME: &'static str = "amqp:declared:list";
    const CODE: u64 = 0x33;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.txn_id);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            txn_id: f.required("txn-id")?,
        })
    }
}

impl Composite for TransactionalState {
    const NAME: &'static str = "amqp:transactional-state:list";
    const CODE: u64 = 0x34;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.txn_id).field(&self.outcome.as_deref());
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        let txn_id = f.required("txn-id")?;
        let outcome: Option<DeliveryState> = f.optional("outcome")?;
        // Only the terminal outcomes of part 3 may be provisional: not
        // `received`, and not another transaction's state.
        if outcome.as_ref().is_some_and(|o| {
            matches!(
                o,
                DeliveryState::Received(_) | DeliveryState::Transactional(_)
            )
        }) {
            return Err(DecodeError::new(DecodeErrorKind::InvalidValue).in_field("outcome"));
        }
        Ok(Self {
            txn_id,
            outcome: outcome.map(Box::new),
        })
    }
}

composite_codec!(
    Coordinator,
    Declare,
    Discharge,
    Declared,
    TransactionalState
);

/// What a link's target names: a node, or a transaction coordinator.
#[derive(Debug, Clone, PartialEq)]
pub enum AttachTarget {
    /// A node (queue, topic, …), or the anonymous relay.
    Node(Target),
    /// The transaction coordinator.
    Coordinator(Coordinator),
    /// A kind of terminus this broker does not know: decoded, so that the
    /// link can be refused rather than the connection closed.
    Unsupported(Box<Described>),
}

impl AttachTarget {
    /// The node target, if the link has one.
    pub fn node(&self) -> Option<&Target> {
        match self {
            AttachTarget::Node(target) => Some(target),
            AttachTarget::Coordinator(_) | AttachTarget::Unsupported(_) => None,
        }
    }
}

impl From<Target> for AttachTarget {
    fn from(target: Target) -> Self {
        AttachTarget::Node(target)
    }
}

impl Encode for AttachTarget {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            AttachTarget::Node(target) => target.encode(buf),
            AttachTarget::Coordinator(coordinator) => coordinator.encode(buf),
            AttachTarget::Unsupported(described) => described.encode(buf),
        }
    }
}

impl Decode for AttachTarget {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let descriptor = read_descriptor(r)?;
        if descriptor.is(Target::NAME, Target::CODE) {
            Target::decode_after_descriptor(r).map(AttachTarget::Node)
        } else if descriptor.is(Coordinator::NAME, Coordinator::CODE) {
            Coordinator::decode_after_descriptor(r).map(AttachTarget::Coordinator)
        } else {
            let value = Value::decode(r)?;
            Ok(AttachTarget::Unsupported(Box::new(Described {
                descriptor,
                value,
            })))
        }
    }
}

/// What a controller sends the coordinator, as the `amqp-value` body of a
/// transfer.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlMessage {
    /// Start a transaction.
    Declare(Declare),
    /// End one.
    Discharge(Discharge),
}

impl Decode for ControlMessage {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let descriptor = read_descriptor(r)?;
        if descriptor.is(Declare::NAME, Declare::CODE) {
            Declare::decode_after_descriptor(r).map(ControlMessage::Declare)
        } else if descriptor.is(Discharge::NAME, Discharge::CODE) {
            Discharge::decode_after_descriptor(r).map(ControlMessage::Discharge)
        } else {
            Err(DecodeErrorKind::UnexpectedDescriptor.into())
        }
    }
}

impl Encode for ControlMessage {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            ControlMessage::Declare(declare) => declare.encode(buf),
            ControlMessage::Discharge(discharge) => discharge.encode(buf),
        }
    }
}
