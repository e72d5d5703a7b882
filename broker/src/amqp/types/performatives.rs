//! The nine performatives of the transport layer (spec part 2 §2.7).

use bytes::{Bytes, BytesMut};

use super::definitions::{Error, Fields, Handle, ReceiverSettleMode, Role, SenderSettleMode};
use super::messaging::{AttachSource, DeliveryState};
use super::transactions::AttachTarget;
use crate::amqp::codec::{
    Composite, Decode, DecodeError, DecodeErrorKind, Descriptor, Encode, FieldDecoder,
    FieldEncoder, Reader, Symbol, Value, composite_codec, read_descriptor,
};

/// Negotiates connection parameters (spec §2.7.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Open {
    /// The sender's container id.
    pub container_id: String,
    /// The name of the host the sender is connecting to (virtual hosting).
    pub hostname: Option<String>,
    /// The largest frame the sender accepts.
    pub max_frame_size: u32,
    /// The highest channel number the sender accepts.
    pub channel_max: u16,
    /// The sender's idle timeout, in milliseconds.
    pub idle_time_out: Option<u32>,
    /// Locales the sender may write in.
    pub outgoing_locales: Vec<Symbol>,
    /// Locales the sender accepts.
    pub incoming_locales: Vec<Symbol>,
    /// Extensions the sender supports.
    pub offered_capabilities: Vec<Symbol>,
    /// Extensions the sender would use if the receiver offers them.
    pub desired_capabilities: Vec<Symbol>,
    /// Connection properties.
    pub properties: Fields,
}

impl Open {
    /// An open with the spec's defaults.
    pub fn new(container_id: impl Into<String>) -> Self {
        Self {
            container_id: container_id.into(),
            hostname: None,
            max_frame_size: u32::MAX,
            channel_max: u16::MAX,
            idle_time_out: None,
            outgoing_locales: Vec::new(),
            incoming_locales: Vec::new(),
            offered_capabilities: Vec::new(),
            desired_capabilities: Vec::new(),
            properties: Fields::new(),
        }
    }
}

impl Composite for Open {
    const NAME: &'static str = "amqp:open:list";
    const CODE: u64 = 0x10;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.container_id)
            .field(&self.hostname)
            .field(&Some(self.max_frame_size).filter(|m| *m != u32::MAX))
            .field(&Some(self.channel_max).filter(|m| *m != u16::MAX))
            .field(&self.idle_time_out)
            .field(&self.outgoing_locales)
            .field(&self.incoming_locales)
            .field(&self.offered_capabilities)
            .field(&self.desired_capabilities)
            .field(&self.properties);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            container_id: f.required("container-id")?,
            hostname: f.optional("hostname")?,
            max_frame_size: f.or("max-frame-size", u32::MAX)?,
            channel_max: f.or("channel-max", u16::MAX)?,
            idle_time_out: f.optional("idle-time-out")?,
            outgoing_locales: f.or_default("outgoing-locales")?,
            incoming_locales: f.or_default("incoming-locales")?,
            offered_capabilities: f.or_default("offered-capabilities")?,
            desired_capabilities: f.or_default("desired-capabilities")?,
            properties: f.or_default("properties")?,
        })
    }
}

/// Begins a session on a channel (spec §2.7.2).
#[derive(Debug, Clone, PartialEq)]
pub struct Begin {
    /// The peer's channel, when answering its begin.
    pub remote_channel: Option<u16>,
    /// The transfer-id of the sender's next outgoing transfer.
    pub next_outgoing_id: u32,
    /// How many transfers the sender can take.
    pub incoming_window: u32,
    /// How many transfers the sender may send.
    pub outgoing_window: u32,
    /// The highest link handle the sender accepts.
    pub handle_max: Handle,
    /// Extensions the sender supports.
    pub offered_capabilities: Vec<Symbol>,
    /// Extensions the sender would use.
    pub desired_capabilities: Vec<Symbol>,
    /// Session properties.
    pub properties: Fields,
}

impl Composite for Begin {
    const NAME: &'static str = "amqp:begin:list";
    const CODE: u64 = 0x11;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.remote_channel)
            .field(&self.next_outgoing_id)
            .field(&self.incoming_window)
            .field(&self.outgoing_window)
            .field(&Some(self.handle_max).filter(|m| *m != u32::MAX))
            .field(&self.offered_capabilities)
            .field(&self.desired_capabilities)
            .field(&self.properties);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            remote_channel: f.optional("remote-channel")?,
            next_outgoing_id: f.required("next-outgoing-id")?,
            incoming_window: f.required("incoming-window")?,
            outgoing_window: f.required("outgoing-window")?,
            handle_max: f.or("handle-max", u32::MAX)?,
            offered_capabilities: f.or_default("offered-capabilities")?,
            desired_capabilities: f.or_default("desired-capabilities")?,
            properties: f.or_default("properties")?,
        })
    }
}

/// Attaches a link to a session (spec §2.7.3).
#[derive(Debug, Clone, PartialEq)]
pub struct Attach {
    /// The link's name, unique per container pair and direction.
    pub name: String,
    /// The sender's handle for the link.
    pub handle: Handle,
    /// The sender's role on the link.
    pub role: Role,
    /// How the link's sender settles.
    pub snd_settle_mode: SenderSettleMode,
    /// How the link's receiver settles.
    pub rcv_settle_mode: ReceiverSettleMode,
    /// Where messages come from.
    pub source: Option<AttachSource>,
    /// Where messages go: a node, or a transaction coordinator.
    pub target: Option<AttachTarget>,
    /// Unsettled delivery state, by delivery tag (link recovery).
    pub unsettled: Vec<(Value, Value)>,
    /// True if `unsettled` is not the whole unsettled state.
    pub incomplete_unsettled: bool,
    /// The sender's delivery count (sender role only).
    pub initial_delivery_count: Option<u32>,
    /// The largest message the sender accepts; `None` is unlimited.
    pub max_message_size: Option<u64>,
    /// Extensions the sender supports.
    pub offered_capabilities: Vec<Symbol>,
    /// Extensions the sender would use.
    pub desired_capabilities: Vec<Symbol>,
    /// Link properties.
    pub properties: Fields,
}

impl Composite for Attach {
    const NAME: &'static str = "amqp:attach:list";
    const CODE: u64 = 0x12;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.name)
            .field(&self.handle)
            .field(&self.role)
            .field(&Some(self.snd_settle_mode).filter(|m| *m != SenderSettleMode::Mixed))
            .field(&Some(self.rcv_settle_mode).filter(|m| *m != ReceiverSettleMode::First))
            .field(&self.source)
            .field(&self.target)
            .field(&self.unsettled)
            .field(&Some(self.incomplete_unsettled).filter(|i| *i))
            .field(&self.initial_delivery_count)
            .field(&self.max_message_size)
            .field(&self.offered_capabilities)
            .field(&self.desired_capabilities)
            .field(&self.properties);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            name: f.required("name")?,
            handle: f.required("handle")?,
            role: f.required("role")?,
            snd_settle_mode: f.or("snd-settle-mode", SenderSettleMode::Mixed)?,
            rcv_settle_mode: f.or("rcv-settle-mode", ReceiverSettleMode::First)?,
            source: f.optional("source")?,
            target: f.optional("target")?,
            unsettled: f.or_default("unsettled")?,
            incomplete_unsettled: f.or("incomplete-unsettled", false)?,
            initial_delivery_count: f.optional("initial-delivery-count")?,
            max_message_size: f.optional("max-message-size")?.filter(|m| *m != 0),
            offered_capabilities: f.or_default("offered-capabilities")?,
            desired_capabilities: f.or_default("desired-capabilities")?,
            properties: f.or_default("properties")?,
        })
    }
}

/// Updates session and link flow state (spec §2.7.4).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Flow {
    /// The next transfer-id the sender expects (absent before the peer's begin).
    pub next_incoming_id: Option<u32>,
    /// How many transfers the sender can take.
    pub incoming_window: u32,
    /// The transfer-id of the sender's next outgoing transfer.
    pub next_outgoing_id: u32,
    /// How many transfers the sender may send.
    pub outgoing_window: u32,
    /// The link this flow is about; `None` for session flow only.
    pub handle: Option<Handle>,
    /// The link's delivery count.
    pub delivery_count: Option<u32>,
    /// The link's credit.
    pub link_credit: Option<u32>,
    /// Messages the sender has waiting.
    pub available: Option<u32>,
    /// Ask the sender to use up its credit, then report.
    pub drain: bool,
    /// Ask the peer to answer with its own flow state.
    pub echo: bool,
    /// Link state properties.
    pub properties: Fields,
}

impl Composite for Flow {
    const NAME: &'static str = "amqp:flow:list";
    const CODE: u64 = 0x13;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.next_incoming_id)
            .field(&self.incoming_window)
            .field(&self.next_outgoing_id)
            .field(&self.outgoing_window)
            .field(&self.handle)
            .field(&self.delivery_count)
            .field(&self.link_credit)
            .field(&self.available)
            .field(&Some(self.drain).filter(|d| *d))
            .field(&Some(self.echo).filter(|e| *e))
            .field(&self.properties);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            next_incoming_id: f.optional("next-incoming-id")?,
            incoming_window: f.required("incoming-window")?,
            next_outgoing_id: f.required("next-outgoing-id")?,
            outgoing_window: f.required("outgoing-window")?,
            handle: f.optional("handle")?,
            delivery_count: f.optional("delivery-count")?,
            link_credit: f.optional("link-credit")?,
            available: f.optional("available")?,
            drain: f.or("drain", false)?,
            echo: f.or("echo", false)?,
            properties: f.or_default("properties")?,
        })
    }
}

/// Carries (part of) a message on a link (spec §2.7.5). The payload follows
/// the performative in the frame body and is carried beside it, not in it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transfer {
    /// The link.
    pub handle: Handle,
    /// The delivery's id; mandatory on a delivery's first transfer.
    pub delivery_id: Option<u32>,
    /// The delivery's tag; mandatory on a delivery's first transfer.
    pub delivery_tag: Option<Bytes>,
    /// The message format (0 for AMQP messages).
    pub message_format: Option<u32>,
    /// True if the sender settled the delivery.
    pub settled: Option<bool>,
    /// True if more transfers of this delivery follow.
    pub more: bool,
    /// Per-delivery receiver settle mode override.
    pub rcv_settle_mode: Option<ReceiverSettleMode>,
    /// The delivery's state at the sender.
    pub state: Option<DeliveryState>,
    /// True when resending a delivery after link recovery.
    pub resume: bool,
    /// True if the delivery is abandoned.
    pub aborted: bool,
    /// The receiver may delay its disposition.
    pub batchable: bool,
}

impl Composite for Transfer {
    const NAME: &'static str = "amqp:transfer:list";
    const CODE: u64 = 0x14;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.handle)
            .field(&self.delivery_id)
            .field(&self.delivery_tag)
            .field(&self.message_format)
            .field(&self.settled)
            .field(&Some(self.more).filter(|m| *m))
            .field(&self.rcv_settle_mode)
            .field(&self.state)
            .field(&Some(self.resume).filter(|r| *r))
            .field(&Some(self.aborted).filter(|a| *a))
            .field(&Some(self.batchable).filter(|b| *b));
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            handle: f.required("handle")?,
            delivery_id: f.optional("delivery-id")?,
            delivery_tag: f.optional("delivery-tag")?,
            message_format: f.optional("message-format")?,
            settled: f.optional("settled")?,
            more: f.or("more", false)?,
            rcv_settle_mode: f.optional("rcv-settle-mode")?,
            state: f.optional("state")?,
            resume: f.or("resume", false)?,
            aborted: f.or("aborted", false)?,
            batchable: f.or("batchable", false)?,
        })
    }
}

/// Reports delivery state changes for a range of deliveries (spec §2.7.6).
#[derive(Debug, Clone, PartialEq)]
pub struct Disposition {
    /// The role of the sender of this disposition.
    pub role: Role,
    /// The first delivery-id of the range.
    pub first: u32,
    /// The last delivery-id of the range (`first` if absent).
    pub last: Option<u32>,
    /// True if the deliveries are settled at the sender.
    pub settled: bool,
    /// The new state of the deliveries.
    pub state: Option<DeliveryState>,
    /// The peer may delay its answer.
    pub batchable: bool,
}

impl Composite for Disposition {
    const NAME: &'static str = "amqp:disposition:list";
    const CODE: u64 = 0x15;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.role)
            .field(&self.first)
            .field(&self.last)
            .field(&Some(self.settled).filter(|s| *s))
            .field(&self.state)
            .field(&Some(self.batchable).filter(|b| *b));
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            role: f.required("role")?,
            first: f.required("first")?,
            last: f.optional("last")?,
            settled: f.or("settled", false)?,
            state: f.optional("state")?,
            batchable: f.or("batchable", false)?,
        })
    }
}

/// Detaches a link, closing it if `closed` (spec §2.7.7).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Detach {
    /// The link.
    pub handle: Handle,
    /// True to close the link rather than only detach it.
    pub closed: bool,
    /// Why, if because of an error.
    pub error: Option<Error>,
}

impl Composite for Detach {
    const NAME: &'static str = "amqp:detach:list";
    const CODE: u64 = 0x16;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.handle)
            .field(&Some(self.closed).filter(|c| *c))
            .field(&self.error);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            handle: f.required("handle")?,
            closed: f.or("closed", false)?,
            error: f.optional("error")?,
        })
    }
}

/// Ends a session (spec §2.7.8).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct End {
    /// Why, if because of an error.
    pub error: Option<Error>,
}

impl Composite for End {
    const NAME: &'static str = "amqp:end:list";
    const CODE: u64 = 0x17;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.error);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            error: f.optional("error")?,
        })
    }
}

/// Closes the connection (spec §2.7.9).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Close {
    /// Why, if because of an error.
    pub error: Option<Error>,
}

impl Composite for Close {
    const NAME: &'static str = "amqp:close:list";
    const CODE: u64 = 0x18;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.error);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            error: f.optional("error")?,
        })
    }
}

composite_codec!(
    Open,
    Begin,
    Attach,
    Flow,
    Transfer,
    Disposition,
    Detach,
    End,
    Close
);

/// The body of an AMQP frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Performative {
    /// `open`.
    Open(Open),
    /// `begin`.
    Begin(Begin),
    /// `attach`.
    Attach(Box<Attach>),
    /// `flow`.
    Flow(Flow),
    /// `transfer`.
    Transfer(Transfer),
    /// `disposition`.
    Disposition(Disposition),
    /// `detach`.
    Detach(Detach),
    /// `end`.
    End(End),
    /// `close`.
    Close(Close),
}

impl Performative {
    /// The performative's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Performative::Open(_) => "open",
            Performative::Begin(_) => "begin",
            Performative::Attach(_) => "attach",
            Performative::Flow(_) => "flow",
            Performative::Transfer(_) => "transfer",
            Performative::Disposition(_) => "disposition",
            Performative::Detach(_) => "detach",
            Performative::End(_) => "end",
            Performative::Close(_) => "close",
        }
    }
}

impl Encode for Performative {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Performative::Open(p) => p.encode(buf),
            Performative::Begin(p) => p.encode(buf),
            Performative::Attach(p) => p.encode(buf),
            Performative::Flow(p) => p.encode(buf),
            Performative::Transfer(p) => p.encode(buf),
            Performative::Disposition(p) => p.encode(buf),
            Performative::Detach(p) => p.encode(buf),
            Performative::End(p) => p.encode(buf),
            Performative::Close(p) => p.encode(buf),
        }
    }
}

impl Decode for Performative {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let code = match read_descriptor(r)? {
            Descriptor::Code(code) => code,
            Descriptor::Name(name) => {
                performative_code(&name).ok_or(DecodeErrorKind::UnexpectedDescriptor)?
            }
            Descriptor::Other(_) => return Err(DecodeErrorKind::UnexpectedDescriptor.into()),
        };
        Ok(match code {
            Open::CODE => Performative::Open(Open::decode_after_descriptor(r)?),
            Begin::CODE => Performative::Begin(Begin::decode_after_descriptor(r)?),
            Attach::CODE => Performative::Attach(Box::new(Attach::decode_after_descriptor(r)?)),
            Flow::CODE => Performative::Flow(Flow::decode_after_descriptor(r)?),
            Transfer::CODE => Performative::Transfer(Transfer::decode_after_descriptor(r)?),
            Disposition::CODE => {
                Performative::Disposition(Disposition::decode_after_descriptor(r)?)
            }
            Detach::CODE => Performative::Detach(Detach::decode_after_descriptor(r)?),
            End::CODE => Performative::End(End::decode_after_descriptor(r)?),
            Close::CODE => Performative::Close(Close::decode_after_descriptor(r)?),
            _ => return Err(DecodeErrorKind::UnexpectedDescriptor.into()),
        })
    }
}

fn performative_code(name: &Symbol) -> Option<u64> {
    [
        (Open::NAME, Open::CODE),
        (Begin::NAME, Begin::CODE),
        (Attach::NAME, Attach::CODE),
        (Flow::NAME, Flow::CODE),
        (Transfer::NAME, Transfer::CODE),
        (Disposition::NAME, Disposition::CODE),
        (Detach::NAME, Detach::CODE),
        (End::NAME, End::CODE),
        (Close::NAME, Close::CODE),
    ]
    .into_iter()
    .find(|(n, _)| name == n)
    .map(|(_, code)| code)
}
