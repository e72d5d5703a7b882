//! What a selector's identifiers name: JMS header fields, mapped onto the
//! AMQP message as Qpid JMS maps them (so a selector sees the values a Qpid
//! JMS consumer would read), and otherwise application properties.
//!
//! | identifier | AMQP field |
//! | --- | --- |
//! | `JMSDeliveryMode` | `header.durable`: `'PERSISTENT'` or `'NON_PERSISTENT'` |
//! | `JMSPriority` | `header.priority` (4 without a header) |
//! | `JMSRedelivered` | `header.delivery-count > 0` |
//! | `JMSXDeliveryCount` | `header.delivery-count + 1` |
//! | `JMSMessageID` | `properties.message-id`, as Qpid JMS writes it (below) |
//! | `JMSCorrelationID` | `properties.correlation-id`, likewise |
//! | `JMSTimestamp` | `properties.creation-time` (0 without one) |
//! | `JMSExpiration` | `properties.absolute-expiry-time` (0 without one) |
//! | `JMSType` | `properties.subject`, else the `x-opt-jms-type` annotation |
//! | `JMSXUserID` | `properties.user-id` as UTF-8 |
//! | `JMSXGroupID` | `properties.group-id` |
//! | `JMSXGroupSeq` | `properties.group-sequence` |
//!
//! Message and correlation ids that are not strings become
//! `ID:AMQP_ULONG:…`, `ID:AMQP_UUID:…` or `ID:AMQP_BINARY:…` (upper-case
//! hex). A string message id without the `ID:` prefix reads as
//! `ID:AMQP_NO_PREFIX:…`, while a string correlation id reads as it is.
//! `JMSType`'s annotation fallback is Qpid Broker-J's, for older clients.

use std::borrow::Cow;
use std::fmt::Write;

use super::ast::Kind;
use super::eval::Val;
use crate::amqp::codec::Value;
use crate::amqp::types::MessageId;
use crate::selector::fields::MessageFields;

/// What an identifier reads, resolved once at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Field {
    DeliveryMode,
    Priority,
    Redelivered,
    DeliveryCount,
    MessageId,
    CorrelationId,
    Timestamp,
    Expiration,
    Type,
    UserId,
    GroupId,
    GroupSequence,
    /// An application property, by its (case-sensitive) name.
    Property(String),
}

impl Field {
    pub(super) fn resolve(identifier: &str) -> Field {
        match identifier {
            "JMSDeliveryMode" => Field::DeliveryMode,
            "JMSPriority" => Field::Priority,
            "JMSRedelivered" => Field::Redelivered,
            "JMSXDeliveryCount" => Field::DeliveryCount,
            "JMSMessageID" => Field::MessageId,
            "JMSCorrelationID" => Field::CorrelationId,
            "JMSTimestamp" => Field::Timestamp,
            "JMSExpiration" => Field::Expiration,
            "JMSType" => Field::Type,
            "JMSXUserID" => Field::UserId,
            "JMSXGroupID" => Field::GroupId,
            "JMSXGroupSeq" => Field::GroupSequence,
            name => Field::Property(name.to_owned()),
        }
    }

    pub(super) fn kind(&self) -> Kind {
        match self {
            Field::Redelivered => Kind::Condition,
            Field::Priority
            | Field::DeliveryCount
            | Field::Timestamp
            | Field::Expiration
            | Field::GroupSequence => Kind::Number,
            Field::DeliveryMode
            | Field::MessageId
            | Field::CorrelationId
            | Field::Type
            | Field::UserId
            | Field::GroupId => Kind::Text,
            Field::Property(_) => Kind::Unknown,
        }
    }

    /// The field's value in `message`; `Null` where the message lacks it.
    pub(super) fn read<'m>(&self, message: &'m MessageFields) -> Val<'m> {
        let header = &message.header;
        let properties = &message.properties;
        match self {
            Field::DeliveryMode => Val::Text(Cow::Borrowed(if header.durable {
                "PERSISTENT"
            } else {
                "NON_PERSISTENT"
            })),
            Field::Priority => Val::Integer(header.priority.into()),
            Field::Redelivered => Val::Boolean(header.delivery_count > 0),
            Field::DeliveryCount => Val::Integer(i64::from(header.delivery_count) + 1),
            Field::MessageId => text(properties.message_id.as_ref().map(message_id)),
            Field::CorrelationId => text(properties.correlation_id.as_ref().map(correlation_id)),
            Field::Timestamp => Val::Integer(properties.creation_time.map_or(0, |t| t.0)),
            Field::Expiration => Val::Integer(properties.absolute_expiry_time.map_or(0, |t| t.0)),
            Field::Type => text(jms_type(message)),
            Field::UserId => text(
                properties
                    .user_id
                    .as_ref()
                    .and_then(|id| std::str::from_utf8(id).ok())
                    .map(Cow::Borrowed),
            ),
            Field::GroupId => text(properties.group_id.as_deref().map(Cow::Borrowed)),
            Field::GroupSequence => properties
                .group_sequence
                .map_or(Val::Null, |n| Val::Integer(n.into())),
            Field::Property(name) => message
                .application_property(name)
                .map_or(Val::Null, Val::of_property),
        }
    }
}

fn text(value: Option<Cow<'_, str>>) -> Val<'_> {
    value.map_or(Val::Null, Val::Text)
}

fn jms_type(message: &MessageFields) -> Option<Cow<'_, str>> {
    if let Some(subject) = &message.properties.subject {
        return Some(Cow::Borrowed(subject));
    }
    match message.message_annotation("x-opt-jms-type") {
        Some(Value::String(jms_type)) => Some(Cow::Borrowed(jms_type)),
        _ => None,
    }
}

const ID_PREFIX: &str = "ID:";

/// The prefixes Qpid JMS writes after `ID:` to keep an id's AMQP type.
const TYPE_PREFIXES: [&str; 5] = [
    "AMQP_BINARY:",
    "AMQP_UUID:",
    "AMQP_ULONG:",
    "AMQP_STRING:",
    "AMQP_NO_PREFIX:",
];

/// `JMSMessageID` as Qpid JMS's `AmqpMessageIdHelper.toMessageIdString`.
fn message_id(id: &MessageId) -> Cow<'_, str> {
    id_string(id, |s| Cow::Owned(format!("{ID_PREFIX}AMQP_NO_PREFIX:{s}")))
}

/// `JMSCorrelationID` as Qpid JMS's `toCorrelationIdString`.
fn correlation_id(id: &MessageId) -> Cow<'_, str> {
    id_string(id, Cow::Borrowed)
}

/// An id as a JMS string; `unprefixed` writes a string id that lacks the
/// `ID:` prefix, which is where message and correlation ids differ.
fn id_string<'a>(
    id: &'a MessageId,
    unprefixed: impl FnOnce(&'a str) -> Cow<'a, str>,
) -> Cow<'a, str> {
    match id {
        MessageId::String(s) => match s.strip_prefix(ID_PREFIX) {
            None => unprefixed(s),
            // Escaped when what follows `ID:` could be read as a type prefix.
            Some(rest) if TYPE_PREFIXES.iter().any(|p| rest.starts_with(p)) => {
                Cow::Owned(format!("{ID_PREFIX}AMQP_STRING:{s}"))
            }
            Some(_) => Cow::Borrowed(s),
        },
        MessageId::Ulong(n) => Cow::Owned(format!("{ID_PREFIX}AMQP_ULONG:{n}")),
        MessageId::Uuid(bytes) => Cow::Owned(format!("{ID_PREFIX}AMQP_UUID:{}", uuid(bytes))),
        MessageId::Binary(bytes) => {
            Cow::Owned(format!("{ID_PREFIX}AMQP_BINARY:{}", upper_hex(bytes)))
        }
    }
}

/// A UUID as Java's `UUID.toString` writes it: lower-case 8-4-4-4-12.
fn uuid(bytes: &[u8; 16]) -> String {
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn upper_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
    out
}
