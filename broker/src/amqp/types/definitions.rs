//! Shared definitions (spec part 2 §2.8): roles, settlement modes, errors,
//! and the restricted types used across performatives.

use bytes::BytesMut;

use crate::amqp::codec::{
    Composite, Decode, DecodeError, DecodeErrorKind, Encode, FieldDecoder, FieldEncoder, Reader,
    Symbol, Value, composite_codec, encode_map, read_map,
};

/// A link handle, scoped to its session.
pub type Handle = u32;

/// A map with symbol keys (`fields`), in wire order.
pub type Fields = Vec<(Symbol, Value)>;

/// Annotations: symbol (or ulong) keys, in wire order.
pub type Annotations = Vec<(Value, Value)>;

/// Application properties: string keys, simple values, in wire order.
pub type ApplicationProperties = Vec<(String, Value)>;

/// Maps encode as `null` when empty: the spec treats an absent map and an
/// empty one alike, and this keeps trailing fields trimmable.
impl<K: Encode, V: Encode> Encode for Vec<(K, V)> {
    fn encode(&self, buf: &mut BytesMut) {
        if self.is_empty() {
            return Value::Null.encode(buf);
        }
        encode_map(buf, self);
    }

    fn is_null(&self) -> bool {
        self.is_empty()
    }
}

impl<K: Decode, V: Decode> Decode for Vec<(K, V)> {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let (mut entries, count) = read_map(r)?;
        let map = (0..count)
            .map(|_| Ok((K::decode(&mut entries)?, V::decode(&mut entries)?)))
            .collect::<Result<_, DecodeError>>()?;
        entries
            .expect_empty()
            .map_err(|_| DecodeErrorKind::SizeMismatch)?;
        Ok(map)
    }
}

/// An absolute point in time: milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Encode for Timestamp {
    fn encode(&self, buf: &mut BytesMut) {
        Value::Timestamp(self.0).encode(buf)
    }
}

impl Decode for Timestamp {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match Value::decode(r)? {
            Value::Timestamp(ms) => Ok(Timestamp(ms)),
            _ => Err(DecodeErrorKind::InvalidValue.into()),
        }
    }
}

/// Declares a restricted type: a Rust enum carried on the wire as a value of
/// an underlying AMQP type.
macro_rules! restricted {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $wire:ty {
            $($(#[$vmeta:meta])* $variant:ident = $value:expr),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),*
        }

        impl $name {
            /// The value that represents this variant on the wire.
            pub fn wire(self) -> $wire {
                match self {
                    $(Self::$variant => $value),*
                }
            }
        }

        impl Encode for $name {
            fn encode(&self, buf: &mut BytesMut) {
                self.wire().encode(buf)
            }
        }

        impl Decode for $name {
            fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
                let wire = <$wire>::decode(r)?;
                $(if wire == $value {
                    return Ok(Self::$variant);
                })*
                Err(DecodeErrorKind::InvalidValue.into())
            }
        }
    };
}

restricted! {
    /// Which end of a link a peer is.
    pub enum Role: bool {
        /// Sends messages.
        Sender = false,
        /// Receives messages.
        Receiver = true,
    }
}

restricted! {
    /// How the sender settles deliveries.
    pub enum SenderSettleMode: u8 {
        /// Every delivery is sent unsettled.
        Unsettled = 0,
        /// Every delivery is sent settled (at most once).
        Settled = 1,
        /// Either, delivery by delivery.
        Mixed = 2,
    }
}

restricted! {
    /// How the receiver settles deliveries.
    pub enum ReceiverSettleMode: u8 {
        /// The receiver settles first (at least once).
        First = 0,
        /// The receiver settles only after the sender has (exactly once).
        Second = 1,
    }
}

restricted! {
    /// What state a terminus keeps durably.
    pub enum TerminusDurability: u32 {
        /// Nothing.
        None = 0,
        /// Its configuration.
        Configuration = 1,
        /// Its configuration and unsettled state.
        UnsettledState = 2,
    }
}

restricted! {
    /// When a terminus' expiry timer starts.
    pub enum ExpiryPolicy: Symbol {
        /// When the link detaches.
        LinkDetach = Symbol::from_static("link-detach"),
        /// When the session ends.
        SessionEnd = Symbol::from_static("session-end"),
        /// When the connection closes.
        ConnectionClose = Symbol::from_static("connection-close"),
        /// Never.
        Never = Symbol::from_static("never"),
    }
}

restricted! {
    /// How messages are taken from a source.
    pub enum DistributionMode: Symbol {
        /// Each message goes to one link and leaves the node.
        Move = Symbol::from_static("move"),
        /// Messages stay on the node; each link gets a copy (browsing).
        Copy = Symbol::from_static("copy"),
    }
}

/// An error condition with a description (spec part 2 §2.8.14).
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// The condition, e.g. `amqp:decode-error`.
    pub condition: Symbol,
    /// A human-readable description.
    pub description: Option<String>,
    /// More information about the error.
    pub info: Fields,
}

impl Error {
    /// An error with a condition and a description.
    pub fn new(condition: &'static str, description: impl Into<String>) -> Self {
        Self {
            condition: Symbol::from_static(condition),
            description: Some(description.into()),
            info: Fields::new(),
        }
    }
}

impl Composite for Error {
    const NAME: &'static str = "amqp:error:list";
    const CODE: u64 = 0x1d;

    fn encode_fields(&self, f: &mut FieldEncoder<'_>) {
        f.field(&self.condition)
            .field(&self.description)
            .field(&self.info);
    }

    fn decode_fields(f: &mut FieldDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            condition: f.required("condition")?,
            description: f.optional("description")?,
            info: f.or_default("info")?,
        })
    }
}

composite_codec!(Error);

/// The error conditions the spec defines (part 2 §2.8.15 – §2.8.18).
pub mod condition {
    /// An internal error occurred.
    pub const INTERNAL_ERROR: &str = "amqp:internal-error";
    /// A peer attempted to work with a remote entity that does not exist.
    pub const NOT_FOUND: &str = "amqp:not-found";
    /// A peer attempted to work with a remote entity to which it has no access.
    pub const UNAUTHORIZED_ACCESS: &str = "amqp:unauthorized-access";
    /// Data could not be decoded.
    pub const DECODE_ERROR: &str = "amqp:decode-error";
    /// A peer exceeded its resource allocation.
    pub const RESOURCE_LIMIT_EXCEEDED: &str = "amqp:resource-limit-exceeded";
    /// The peer tried to use a frame in a manner that is inconsistent with the spec.
    pub const NOT_ALLOWED: &str = "amqp:not-allowed";
    /// An invalid field was passed in a frame body.
    pub const INVALID_FIELD: &str = "amqp:invalid-field";
    /// The peer tried to use functionality that is not implemented.
    pub const NOT_IMPLEMENTED: &str = "amqp:not-implemented";
    /// The client attempted to work with a server entity to which it has no access
    /// because another client is working with it.
    pub const RESOURCE_LOCKED: &str = "amqp:resource-locked";
    /// The client made a request that was not allowed because some precondition failed.
    pub const PRECONDITION_FAILED: &str = "amqp:precondition-failed";
    /// A server entity the client is working with has been deleted.
    pub const RESOURCE_DELETED: &str = "amqp:resource-deleted";
    /// The peer sent a frame that is not permitted in the current state.
    pub const ILLEGAL_STATE: &str = "amqp:illegal-state";
    /// The peer cannot send a frame because the smallest encoding of the
    /// performative with the currently valid values would be too large.
    pub const FRAME_SIZE_TOO_SMALL: &str = "amqp:frame-size-too-small";

    /// An operator intervened to close the connection.
    pub const CONNECTION_FORCED: &str = "amqp:connection:forced";
    /// A valid frame header cannot be formed from the incoming byte stream.
    pub const FRAMING_ERROR: &str = "amqp:connection:framing-error";
    /// The container is no longer available on the current connection.
    pub const REDIRECT: &str = "amqp:connection:redirect";

    /// The peer violated incoming window for the session.
    pub const WINDOW_VIOLATION: &str = "amqp:session:window-violation";
    /// Input was received for a link that was detached with an error.
    pub const ERRANT_LINK: &str = "amqp:session:errant-link";
    /// An attach was received using a handle that is already in use.
    pub const HANDLE_IN_USE: &str = "amqp:session:handle-in-use";
    /// A frame (other than attach) was received referencing a handle which is
    /// not currently in use.
    pub const UNATTACHED_HANDLE: &str = "amqp:session:unattached-handle";

    /// An operator intervened to detach for some reason.
    pub const DETACH_FORCED: &str = "amqp:link:detach-forced";
    /// The peer sent more message transfers than currently allowed on the link.
    pub const TRANSFER_LIMIT_EXCEEDED: &str = "amqp:link:transfer-limit-exceeded";
    /// The peer sent a larger message than is supported on the link.
    pub const MESSAGE_SIZE_EXCEEDED: &str = "amqp:link:message-size-exceeded";
    /// The address provided cannot be resolved to a terminus at the current container.
    pub const LINK_REDIRECT: &str = "amqp:link:redirect";
    /// The link has been attached elsewhere, causing the existing attachment
    /// to be forcibly closed.
    pub const STOLEN: &str = "amqp:link:stolen";

    /// The transaction named is not one the coordinator knows (part 4 §4.5.9).
    pub const TRANSACTION_UNKNOWN_ID: &str = "amqp:transaction:unknown-id";
    /// The transaction was rolled back, whatever its discharge asked for.
    pub const TRANSACTION_ROLLBACK: &str = "amqp:transaction:rollback";
}
