//! Messaging (spec part 3): delivery states, termini, and message sections.

use bytes::{Bytes, BytesMut};

use super::definitions::{
    Annotations, ApplicationProperties, DistributionMode, Error, ExpiryPolicy, Fields,
    TerminusDurability, Timestamp,
};
use super::transactions::{Declared, TransactionalState};
use crate::amqp::codec::{
    Composite, Decode, DecodeError, DecodeErrorKind, Described, Descriptor, Encode, FieldDecoder,
    FieldEncoder, Reader, Symbol, Value, composite_codec, encode_descriptor, encode_list_of,
    encode_map, read_descriptor,
};

/// The state of a delivery at one end of a link (spec part 3 §3.4).
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryState {
    /// Partial progress (used when resuming links).
    Received(Received),
    /// Processed successfully: the terminal outcome that removes a message.
    Accepted(Accepted),
    /// Invalid and will not be processed.
    Rejected(Rejected),
    /// Not (and will not be) processed: it may be redelivered.
    Released(Released),
    /// Not processed, with changes to apply before redelivery.
    Modified(Modified),
    /// A transaction was declared: the coordinator's answer (part 4).
    Declared(Declared),
    /// Part of a transaction, with the outcome it will have if the
    /// transaction commits (part 4).
    Transactional(TransactionalState),
}

impl DeliveryState {
    /// True for the terminal outcomes: not `received`, nor a transaction's
    /// provisional state.
    pub fn is_outcome(&self) -> bool {
        !matches!(
            self,
            DeliveryState::Received(_) | DeliveryState::Transactional(_)
        )
    }
}

/// Partial delivery progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The section being processed.
    pub section_number: u32,
    /// The first byte not yet processed within that section.
    pub section_offset: u64,
}

/// The `accepted` outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepted;

/// The `rejected` outcome.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rejected {
    /// Why the message was rejected.
    pub error: Option<Error>,
}

/// The `released` outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Released;

/// The `modified` outcome.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Modified {
    /// Count the delivery as failed (increments the delivery count).
    pub delivery_failed: bool,
    /// Do not redeliver to this link.
    pub undeliverable_here: bool,
    /// Annotations to merge into the message.
    pub message_annotations: Annotations,
}

impl Composite for Received {
    const NAME: &'static str = "amqp:received:list";
    const CODE: u64 = 0x23;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.section_number).field(&self.section_offset);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            section_number: f.required("section-number")?,
            section_offset: f.required("section-offset")?,
        })
    }
}

impl Composite for Accepted {
    const NAME: &'static str = "amqp:accepted:list";
    const CODE: u64 = 0x24;

    fn encode_fields(&self, _: &mut FieldEncoder<'_>) {}

    fn decode_fields(_: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self)
    }
}

impl Composite for Rejected {
    const NAME: &'static str = "amqp:rejected:list";
    const CODE: u64 = 0x25;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.error);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            error: f.optional("error")?,
        })
    }
}

impl Composite for Released {
    const NAME: &'static str = "amqp:released:list";
    const CODE: u64 = 0x26;

    fn encode_fields(&self, _: &mut FieldEncoder<'_>) {}

    fn decode_fields(_: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self)
    }
}

impl Composite for Modified {
    const NAME: &'static str = "amqp:modified:list";
    const CODE: u64 = 0x27;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.delivery_failed)
            .field(&self.undeliverable_here)
            .field(&self.message_annotations);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            delivery_failed: f.or("delivery-failed", false)?,
            undeliverable_here: f.or("undeliverable-here", false)?,
            message_annotations: f.or_default("message-annotations")?,
        })
    }
}

composite_codec!(Received, Accepted, Rejected, Released, Modified);

impl Encode for DeliveryState {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            DeliveryState::Received(s) => s.encode(buf),
            DeliveryState::Accepted(s) => s.encode(buf),
            DeliveryState::Rejected(s) => s.encode(buf),
            DeliveryState::Released(s) => s.encode(buf),
            DeliveryState::Modified(s) => s.encode(buf),
            DeliveryState::Declared(s) => s.encode(buf),
            DeliveryState::Transactional(s) => s.encode(buf),
        }
    }
}

impl Decode for DeliveryState {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let descriptor = read_descriptor(r)?;
        let is = |name, code| descriptor.is(name, code);
        if is(Accepted::NAME, Accepted::CODE) {
            Accepted::decode_after_descriptor(r).map(DeliveryState::Accepted)
        } else if is(Released::NAME, Released::CODE) {
            Released::decode_after_descriptor(r).map(DeliveryState::Released)
        } else if is(Rejected::NAME, Rejected::CODE) {
            Rejected::decode_after_descriptor(r).map(DeliveryState::Rejected)
        } else if is(Modified::NAME, Modified::CODE) {
            Modified::decode_after_descriptor(r).map(DeliveryState::Modified)
        } else if is(Received::NAME, Received::CODE) {
            Received::decode_after_descriptor(r).map(DeliveryState::Received)
        } else if is(TransactionalState::NAME, TransactionalState::CODE) {
            TransactionalState::decode_after_descriptor(r).map(DeliveryState::Transactional)
        } else if is(Declared::NAME, Declared::CODE) {
            Declared::decode_after_descriptor(r).map(DeliveryState::Declared)
        } else {
            Err(DecodeErrorKind::UnexpectedDescriptor.into())
        }
    }
}

/// Where messages come from: the source terminus of a link (spec part 3 §3.5.3).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Source {
    /// The node's address; `None` with `dynamic` asks the peer to create one.
    pub address: Option<String>,
    /// What terminus state is durable.
    pub durable: Option<TerminusDurability>,
    /// When the expiry timer starts (default `session-end`).
    pub expiry_policy: Option<ExpiryPolicy>,
    /// Seconds the terminus outlives its trigger.
    pub timeout: u32,
    /// Ask the peer to create the node.
    pub dynamic: bool,
    /// Properties of the dynamically created node.
    pub dynamic_node_properties: Fields,
    /// Move (consume) or copy (browse).
    pub distribution_mode: Option<DistributionMode>,
    /// Filters, by name.
    pub filter: Annotations,
    /// The outcome to assume for unsettled deliveries at link recovery.
    pub default_outcome: Option<DeliveryState>,
    /// The outcomes the source supports.
    pub outcomes: Vec<Symbol>,
    /// Extension capabilities (e.g. `topic`, `queue`).
    pub capabilities: Vec<Symbol>,
}

impl Composite for Source {
    const NAME: &'static str = "amqp:source:list";
    const CODE: u64 = 0x28;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.address)
            .field(&self.durable)
            .field(&self.expiry_policy)
            .field(&Some(self.timeout).filter(|t| *t != 0))
            .field(&Some(self.dynamic).filter(|d| *d))
            .field(&self.dynamic_node_properties)
            .field(&self.distribution_mode)
            .field(&self.filter)
            .field(&self.default_outcome)
            .field(&self.outcomes)
            .field(&self.capabilities);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            address: f.optional("address")?,
            durable: f.optional("durable")?,
            expiry_policy: f.optional("expiry-policy")?,
            timeout: f.or("timeout", 0)?,
            dynamic: f.or("dynamic", false)?,
            dynamic_node_properties: f.or_default("dynamic-node-properties")?,
            distribution_mode: f.optional("distribution-mode")?,
            filter: f.or_default("filter")?,
            default_outcome: f.optional("default-outcome")?,
            outcomes: f.or_default("outcomes")?,
            capabilities: f.or_default("capabilities")?,
        })
    }
}

/// An attach's source: a node's, or a kind this broker does not know,
/// decoded so that the link can be refused rather than the connection
/// closed.
#[derive(Debug, Clone, PartialEq)]
pub enum AttachSource {
    /// A node (queue, topic, …).
    Node(Source),
    /// Another kind of terminus.
    Unsupported(Box<Described>),
}

impl AttachSource {
    /// The node source, if the link has one.
    pub fn node(&self) -> Option<&Source> {
        match self {
            AttachSource::Node(source) => Some(source),
            AttachSource::Unsupported(_) => None,
        }
    }

    /// The node source, to change, if the link has one.
    pub fn node_mut(&mut self) -> Option<&mut Source> {
        match self {
            AttachSource::Node(source) => Some(source),
            AttachSource::Unsupported(_) => None,
        }
    }
}

impl From<Source> for AttachSource {
    fn from(source: Source) -> Self {
        AttachSource::Node(source)
    }
}

impl Encode for AttachSource {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            AttachSource::Node(source) => source.encode(buf),
            AttachSource::Unsupported(described) => described.encode(buf),
        }
    }
}

impl Decode for AttachSource {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let descriptor = read_descriptor(r)?;
        if descriptor.is(Source::NAME, Source::CODE) {
            Source::decode_after_descriptor(r).map(AttachSource::Node)
        } else {
            let value = Value::decode(r)?;
            Ok(AttachSource::Unsupported(Box::new(Described {
                descriptor,
                value,
            })))
        }
    }
}

/// Where messages go: the target terminus of a link (spec part 3 §3.5.4).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Target {
    /// The node's address; `None` with `dynamic` asks the peer to create one,
    /// and `None` alone means "route by each message's `to`".
    pub address: Option<String>,
    /// What terminus state is durable.
    pub durable: Option<TerminusDurability>,
    /// When the expiry timer starts (default `session-end`).
    pub expiry_policy: Option<ExpiryPolicy>,
    /// Seconds the terminus outlives its trigger.
    pub timeout: u32,
    /// Ask the peer to create the node.
    pub dynamic: bool,
    /// Properties of the dynamically created node.
    pub dynamic_node_properties: Fields,
    /// Extension capabilities (e.g. `topic`, `queue`).
    pub capabilities: Vec<Symbol>,
}

impl Composite for Target {
    const NAME: &'static str = "amqp:target:list";
    const CODE: u64 = 0x29;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.address)
            .field(&self.durable)
            .field(&self.expiry_policy)
            .field(&Some(self.timeout).filter(|t| *t != 0))
            .field(&Some(self.dynamic).filter(|d| *d))
            .field(&self.dynamic_node_properties)
            .field(&self.capabilities);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            address: f.optional("address")?,
            durable: f.optional("durable")?,
            expiry_policy: f.optional("expiry-policy")?,
            timeout: f.or("timeout", 0)?,
            dynamic: f.or("dynamic", false)?,
            dynamic_node_properties: f.or_default("dynamic-node-properties")?,
            capabilities: f.or_default("capabilities")?,
        })
    }
}

composite_codec!(Source, Target);

/// A message identifier (spec part 3 §3.2.11 – §3.2.14).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageId {
    /// `message-id-ulong`.
    Ulong(u64),
    /// `message-id-uuid`.
    Uuid([u8; 16]),
    /// `message-id-binary`.
    Binary(Bytes),
    /// `message-id-string`.
    String(String),
}

impl Encode for MessageId {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            MessageId::Ulong(v) => v.encode(buf),
            MessageId::Uuid(v) => Value::Uuid(*v).encode(buf),
            MessageId::Binary(v) => v.encode(buf),
            MessageId::String(v) => v.encode(buf),
        }
    }
}

impl Decode for MessageId {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match Value::decode(r)? {
            Value::Ulong(v) => Ok(MessageId::Ulong(v)),
            Value::Uuid(v) => Ok(MessageId::Uuid(v)),
            Value::Binary(v) => Ok(MessageId::Binary(v)),
            Value::String(v) => Ok(MessageId::String(v)),
            _ => Err(DecodeErrorKind::InvalidValue.into()),
        }
    }
}

/// The header section: transport headers (spec part 3 §3.2.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Survive a broker restart.
    pub durable: bool,
    /// Relative priority, 0 – 255 (default 4).
    pub priority: u8,
    /// Time to live in milliseconds.
    pub ttl: Option<u32>,
    /// True if no earlier acquirer has seen this message.
    pub first_acquirer: bool,
    /// Failed delivery attempts so far.
    pub delivery_count: u32,
}

impl Default for Header {
    fn default() -> Self {
        Self {
            durable: false,
            priority: 4,
            ttl: None,
            first_acquirer: false,
            delivery_count: 0,
        }
    }
}

impl Composite for Header {
    const NAME: &'static str = "amqp:header:list";
    const CODE: u64 = 0x70;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&Some(self.durable).filter(|d| *d))
            .field(&Some(self.priority).filter(|p| *p != 4))
            .field(&self.ttl)
            .field(&Some(self.first_acquirer).filter(|a| *a))
            .field(&Some(self.delivery_count).filter(|c| *c != 0));
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            durable: f.or("durable", false)?,
            priority: f.or("priority", 4)?,
            ttl: f.optional("ttl")?,
            first_acquirer: f.or("first-acquirer", false)?,
            delivery_count: f.or("delivery-count", 0)?,
        })
    }
}

/// The properties section: immutable message properties (spec part 3 §3.2.4).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties {
    /// Uniquely identifies the message.
    pub message_id: Option<MessageId>,
    /// The identity of the user who produced the message.
    pub user_id: Option<Bytes>,
    /// The address of the node the message is destined for.
    pub to: Option<String>,
    /// A summary of the message's content.
    pub subject: Option<String>,
    /// Where to send replies.
    pub reply_to: Option<String>,
    /// The message this one relates to.
    pub correlation_id: Option<MessageId>,
    /// MIME type of the body.
    pub content_type: Option<Symbol>,
    /// MIME content encoding of the body.
    pub content_encoding: Option<Symbol>,
    /// When the message is considered expired.
    pub absolute_expiry_time: Option<Timestamp>,
    /// When the message was created.
    pub creation_time: Option<Timestamp>,
    /// The group the message belongs to.
    pub group_id: Option<String>,
    /// The message's position in its group.
    pub group_sequence: Option<u32>,
    /// The group that replies belong to.
    pub reply_to_group_id: Option<String>,
}

impl Composite for Properties {
    const NAME: &'static str = "amqp:properties:list";
    const CODE: u64 = 0x73;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.message_id)
            .field(&self.user_id)
            .field(&self.to)
            .field(&self.subject)
            .field(&self.reply_to)
            .field(&self.correlation_id)
            .field(&self.content_type)
            .field(&self.content_encoding)
            .field(&self.absolute_expiry_time)
            .field(&self.creation_time)
            .field(&self.group_id)
            .field(&self.group_sequence)
            .field(&self.reply_to_group_id);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            message_id: f.optional("message-id")?,
            user_id: f.optional("user-id")?,
            to: f.optional("to")?,
            subject: f.optional("subject")?,
            reply_to: f.optional("reply-to")?,
            correlation_id: f.optional("correlation-id")?,
            content_type: f.optional("content-type")?,
            content_encoding: f.optional("content-encoding")?,
            absolute_expiry_time: f.optional("absolute-expiry-time")?,
            creation_time: f.optional("creation-time")?,
            group_id: f.optional("group-id")?,
            group_sequence: f.optional("group-sequence")?,
            reply_to_group_id: f.optional("reply-to-group-id")?,
        })
    }
}

composite_codec!(Header, Properties);

/// Descriptor codes of the message sections (spec part 3 §3.2).
pub mod section {
    /// `header`.
    pub const HEADER: u64 = 0x70;
    /// `delivery-annotations`.
    pub const DELIVERY_ANNOTATIONS: u64 = 0x71;
    /// `message-annotations`.
    pub const MESSAGE_ANNOTATIONS: u64 = 0x72;
    /// `properties`.
    pub const PROPERTIES: u64 = 0x73;
    /// `application-properties`.
    pub const APPLICATION_PROPERTIES: u64 = 0x74;
    /// `data`.
    pub const DATA: u64 = 0x75;
    /// `amqp-sequence`.
    pub const AMQP_SEQUENCE: u64 = 0x76;
    /// `amqp-value`.
    pub const AMQP_VALUE: u64 = 0x77;
    /// `footer`.
    pub const FOOTER: u64 = 0x78;
}

/// One section of a bare or annotated message.
#[derive(Debug, Clone, PartialEq)]
pub enum Section {
    /// Transport headers.
    Header(Header),
    /// Annotations for the next hop only.
    DeliveryAnnotations(Annotations),
    /// Annotations that travel with the message.
    MessageAnnotations(Annotations),
    /// Immutable standard properties (boxed: by far the largest section).
    Properties(Box<Properties>),
    /// Application-defined properties.
    ApplicationProperties(ApplicationProperties),
    /// An opaque binary body part.
    Data(Bytes),
    /// A body part that is a list of AMQP values.
    AmqpSequence(Vec<Value>),
    /// A body that is a single AMQP value.
    AmqpValue(Value),
    /// Annotations computed over the bare message (e.g. hashes).
    Footer(Annotations),
}

impl Section {
    fn code(&self) -> u64 {
        match self {
            Section::Header(_) => section::HEADER,
            Section::DeliveryAnnotations(_) => section::DELIVERY_ANNOTATIONS,
            Section::MessageAnnotations(_) => section::MESSAGE_ANNOTATIONS,
            Section::Properties(_) => section::PROPERTIES,
            Section::ApplicationProperties(_) => section::APPLICATION_PROPERTIES,
            Section::Data(_) => section::DATA,
            Section::AmqpSequence(_) => section::AMQP_SEQUENCE,
            Section::AmqpValue(_) => section::AMQP_VALUE,
            Section::Footer(_) => section::FOOTER,
        }
    }
}

impl Encode for Section {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Section::Header(h) => h.encode(buf),
            Section::Properties(p) => p.encode(buf),
            // A map section encodes its map even when empty: there the map
            // *is* the section, unlike an optional field.
            other => {
                encode_descriptor(buf, &Descriptor::Code(other.code()));
                match other {
                    Section::DeliveryAnnotations(m)
                    | Section::MessageAnnotations(m)
                    | Section::Footer(m) => encode_map(buf, m),
                    Section::ApplicationProperties(m) => encode_map(buf, m),
                    Section::Data(b) => b.encode(buf),
                    Section::AmqpSequence(items) => encode_list_of(buf, items),
                    Section::AmqpValue(v) => v.encode(buf),
                    Section::Header(_) | Section::Properties(_) => unreachable!("encoded above"),
                }
            }
        }
    }
}

impl Decode for Section {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let code = match read_descriptor(r)? {
            Descriptor::Code(code) => code,
            Descriptor::Name(name) => {
                section_code(&name).ok_or(DecodeErrorKind::UnexpectedDescriptor)?
            }
            Descriptor::Other(_) => return Err(DecodeErrorKind::UnexpectedDescriptor.into()),
        };
        Ok(match code {
            section::HEADER => Section::Header(Header::decode_after_descriptor(r)?),
            section::DELIVERY_ANNOTATIONS => Section::DeliveryAnnotations(Decode::decode(r)?),
            section::MESSAGE_ANNOTATIONS => Section::MessageAnnotations(Decode::decode(r)?),
            section::PROPERTIES => {
                Section::Properties(Box::new(Properties::decode_after_descriptor(r)?))
            }
            section::APPLICATION_PROPERTIES => Section::ApplicationProperties(Decode::decode(r)?),
            section::DATA => Section::Data(Decode::decode(r)?),
            section::AMQP_SEQUENCE => match Value::decode(r)? {
                Value::List(items) => Section::AmqpSequence(items),
                _ => return Err(DecodeErrorKind::InvalidValue.into()),
            },
            section::AMQP_VALUE => Section::AmqpValue(Value::decode(r)?),
            section::FOOTER => Section::Footer(Decode::decode(r)?),
            _ => return Err(DecodeErrorKind::UnexpectedDescriptor.into()),
        })
    }
}

fn section_code(name: &Symbol) -> Option<u64> {
    Some(match name.as_str() {
        "amqp:header:list" => section::HEADER,
        "amqp:delivery-annotations:map" => section::DELIVERY_ANNOTATIONS,
        "amqp:message-annotations:map" => section::MESSAGE_ANNOTATIONS,
        "amqp:properties:list" => section::PROPERTIES,
        "amqp:application-properties:map" => section::APPLICATION_PROPERTIES,
        "amqp:data:binary" => section::DATA,
        "amqp:amqp-sequence:list" => section::AMQP_SEQUENCE,
        "amqp:amqp-value:*" => section::AMQP_VALUE,
        "amqp:footer:map" => section::FOOTER,
        _ => return None,
    })
}

/// A whole message: its sections in order.
///
/// The engine carries messages as opaque bytes; this type is for the places
/// that must look inside (routing by `to`, TTL, tests and clients).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    /// The sections, in wire order.
    pub sections: Vec<Section>,
}

impl Message {
    /// A message with one data section.
    pub fn data(body: impl Into<Bytes>) -> Self {
        Self {
            sections: vec![Section::Data(body.into())],
        }
    }

    /// Encodes every section, in order.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.sections.iter().for_each(|s| s.encode(&mut buf));
        buf.freeze()
    }

    /// Decodes a message's sections from transfer payload bytes.
    pub fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let mut sections = Vec::new();
        while !r.is_empty() {
            sections.push(Section::decode(&mut r)?);
        }
        Ok(Self { sections })
    }

    /// The header section, if any.
    pub fn header(&self) -> Option<&Header> {
        self.sections.iter().find_map(|s| match s {
            Section::Header(h) => Some(h),
            _ => None,
        })
    }

    /// The properties section, if any.
    pub fn properties(&self) -> Option<&Properties> {
        self.sections.iter().find_map(|s| match s {
            Section::Properties(p) => Some(&**p),
            _ => None,
        })
    }
}
