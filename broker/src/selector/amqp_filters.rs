//! The properties filter and application-properties filter of OASIS AMQP
//! Filter Expressions (working draft 09, §4.2.4 and §4.2.5), as RabbitMQ 4.1
//! implements them.
//!
//! Each is a map from a field to the value it must have; a message passes if
//! every field matches. A string reference value may carry a modifier
//! (§4.1.1): `&p:abc` matches strings starting with `abc`, `&s:abc` strings
//! ending with it, `&&…` is the string `&…` exactly, and any other leading
//! `&` is refused (reserved for future modifiers).
//!
//! Where RabbitMQ's Erlang types blur distinctions, this module keeps the
//! AMQP ones: a string matches a string or symbol, never binary, and the
//! prefix and suffix modifiers apply to text only.

use bytes::Bytes;

use super::fields::MessageFields;
use crate::amqp::codec::{Symbol, Value};
use crate::amqp::types::{MessageId, Properties};

/// At most this many fields per filter, as RabbitMQ allows: the working
/// draft asks brokers to bound each filter's complexity (§7.1).
const FIELDS_MAX: usize = 16;

/// How a string reference value matches (§4.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
enum TextMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl TextMatch {
    fn parse(reference: &str) -> Result<TextMatch, String> {
        if let Some(prefix) = reference.strip_prefix("&p:") {
            Ok(TextMatch::Prefix(prefix.to_owned()))
        } else if let Some(suffix) = reference.strip_prefix("&s:") {
            Ok(TextMatch::Suffix(suffix.to_owned()))
        } else if let Some(escaped) = reference.strip_prefix('&') {
            if escaped.starts_with('&') {
                Ok(TextMatch::Exact(escaped.to_owned()))
            } else {
                Err(format!(
                    "{reference:?} starts with '&' but not with a known modifier \
                     (&p:, &s:, or && for a literal '&')"
                ))
            }
        } else {
            Ok(TextMatch::Exact(reference.to_owned()))
        }
    }

    fn matches(&self, text: &str) -> bool {
        match self {
            TextMatch::Exact(exact) => text == exact,
            TextMatch::Prefix(prefix) => text.starts_with(prefix.as_str()),
            TextMatch::Suffix(suffix) => text.ends_with(suffix.as_str()),
        }
    }
}

/// A reference value for `message-id` or `correlation-id`.
#[derive(Debug, Clone, PartialEq)]
enum IdMatch {
    Text(TextMatch),
    Ulong(u64),
    Uuid([u8; 16]),
    Binary(Bytes),
}

impl IdMatch {
    fn parse(reference: &Value) -> Result<IdMatch, String> {
        Ok(match reference {
            Value::String(s) => IdMatch::Text(TextMatch::parse(s)?),
            Value::Ulong(n) => IdMatch::Ulong(*n),
            Value::Uuid(u) => IdMatch::Uuid(*u),
            Value::Binary(b) => IdMatch::Binary(b.clone()),
            _ => return Err("must be a string, ulong, uuid or binary".to_owned()),
        })
    }

    fn matches(&self, id: &MessageId) -> bool {
        match (self, id) {
            (IdMatch::Text(m), MessageId::String(s)) => m.matches(s),
            (IdMatch::Ulong(a), MessageId::Ulong(b)) => a == b,
            (IdMatch::Uuid(a), MessageId::Uuid(b)) => a == b,
            (IdMatch::Binary(a), MessageId::Binary(b)) => a == b,
            _ => false,
        }
    }
}

/// One field of the properties section and the value it must have.
#[derive(Debug, Clone, PartialEq)]
enum PropertyTest {
    MessageId(IdMatch),
    UserId(Bytes),
    To(TextMatch),
    Subject(TextMatch),
    ReplyTo(TextMatch),
    CorrelationId(IdMatch),
    ContentType(Symbol),
    ContentEncoding(Symbol),
    AbsoluteExpiryTime(i64),
    CreationTime(i64),
    GroupId(TextMatch),
    GroupSequence(u32),
    ReplyToGroupId(TextMatch),
}

impl PropertyTest {
    /// The test for the field named `field`, whose reference value must have
    /// the field's own type.
    fn parse(field: &str, reference: &Value) -> Result<PropertyTest, String> {
        let wrong_type = |expected: &str| format!("field {field:?} must be {expected}");
        let text = || match reference {
            Value::String(s) => TextMatch::parse(s),
            _ => Err(wrong_type("a string")),
        };
        let symbol = || match reference {
            Value::Symbol(s) => Ok(s.clone()),
            _ => Err(wrong_type("a symbol")),
        };
        let timestamp = || match reference {
            Value::Timestamp(ms) => Ok(*ms),
            _ => Err(wrong_type("a timestamp")),
        };
        let id = || IdMatch::parse(reference).map_err(|why| format!("field {field:?} {why}"));
        Ok(match field {
            "message-id" => PropertyTest::MessageId(id()?),
            "user-id" => match reference {
                Value::Binary(b) => PropertyTest::UserId(b.clone()),
                _ => return Err(wrong_type("a binary")),
            },
            "to" => PropertyTest::To(text()?),
            "subject" => PropertyTest::Subject(text()?),
            "reply-to" => PropertyTest::ReplyTo(text()?),
            "correlation-id" => PropertyTest::CorrelationId(id()?),
            "content-type" => PropertyTest::ContentType(symbol()?),
            "content-encoding" => PropertyTest::ContentEncoding(symbol()?),
            "absolute-expiry-time" => PropertyTest::AbsoluteExpiryTime(timestamp()?),
            "creation-time" => PropertyTest::CreationTime(timestamp()?),
            "group-id" => PropertyTest::GroupId(text()?),
            "group-sequence" => match reference {
                Value::Uint(n) => PropertyTest::GroupSequence(*n),
                _ => return Err(wrong_type("a uint")),
            },
            "reply-to-group-id" => PropertyTest::ReplyToGroupId(text()?),
            _ => {
                return Err(format!(
                    "{field:?} is not a field of the properties section"
                ));
            }
        })
    }

    /// True if the message has the field and its value matches; an absent
    /// field never matches.
    fn matches(&self, p: &Properties) -> bool {
        let text =
            |m: &TextMatch, field: &Option<String>| field.as_deref().is_some_and(|s| m.matches(s));
        match self {
            PropertyTest::MessageId(m) => p.message_id.as_ref().is_some_and(|id| m.matches(id)),
            PropertyTest::UserId(b) => p.user_id.as_ref() == Some(b),
            PropertyTest::To(m) => text(m, &p.to),
            PropertyTest::Subject(m) => text(m, &p.subject),
            PropertyTest::ReplyTo(m) => text(m, &p.reply_to),
            PropertyTest::CorrelationId(m) => {
                p.correlation_id.as_ref().is_some_and(|id| m.matches(id))
            }
            PropertyTest::ContentType(s) => p.content_type.as_ref() == Some(s),
            PropertyTest::ContentEncoding(s) => p.content_encoding.as_ref() == Some(s),
            PropertyTest::AbsoluteExpiryTime(ms) => {
                p.absolute_expiry_time.is_some_and(|t| t.0 == *ms)
            }
            PropertyTest::CreationTime(ms) => p.creation_time.is_some_and(|t| t.0 == *ms),
            PropertyTest::GroupId(m) => text(m, &p.group_id),
            PropertyTest::GroupSequence(n) => p.group_sequence == Some(*n),
            PropertyTest::ReplyToGroupId(m) => text(m, &p.reply_to_group_id),
        }
    }
}

/// `amqp:properties-filter`: a map from property names (symbols) to the
/// values those properties must have.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PropertiesFilter {
    tests: Vec<PropertyTest>,
}

impl PropertiesFilter {
    /// Parses the filter's value; the error says what is wrong with it.
    pub(super) fn parse(value: &Value) -> Result<PropertiesFilter, String> {
        let tests = bounded_map(value)?
            .iter()
            .map(|(key, reference)| match key {
                Value::Symbol(field) => PropertyTest::parse(field.as_str(), reference),
                _ => Err("the keys must be symbols, naming properties".to_owned()),
            })
            .collect::<Result<_, _>>()?;
        Ok(PropertiesFilter { tests })
    }

    pub(super) fn matches(&self, message: &MessageFields) -> bool {
        self.tests.iter().all(|t| t.matches(&message.properties))
    }
}

/// The value an application property must have.
#[derive(Debug, Clone, PartialEq)]
enum Reference {
    /// `null`: any value, as long as the property is there.
    Present,
    /// A string, perhaps with a modifier: matches string or symbol values.
    Text(TextMatch),
    /// Any other simple value: matches an equal value, numbers of different
    /// types comparing by value.
    Equal(Value),
}

impl Reference {
    fn parse(key: &str, reference: &Value) -> Result<Reference, String> {
        Ok(match reference {
            Value::Null => Reference::Present,
            Value::String(s) => Reference::Text(TextMatch::parse(s)?),
            Value::List(_) | Value::Map(_) | Value::Array(_) | Value::Described(_) => {
                return Err(format!(
                    "the value for {key:?} must be a simple type: application \
                     properties hold no lists, maps, arrays or described values"
                ));
            }
            simple => Reference::Equal(simple.clone()),
        })
    }

    fn matches(&self, actual: &Value) -> bool {
        match (self, actual) {
            (Reference::Present, _) => true,
            (Reference::Text(m), Value::String(s)) => m.matches(s),
            (Reference::Text(m), Value::Symbol(s)) => m.matches(s.as_str()),
            (Reference::Text(_), _) => false,
            (Reference::Equal(expected), actual) => simple_equal(expected, actual),
        }
    }
}

/// `amqp:application-properties-filter`: a map from application property
/// names (strings) to the values those properties must have.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ApplicationPropertiesFilter {
    tests: Vec<(String, Reference)>,
}

impl ApplicationPropertiesFilter {
    /// Parses the filter's value; the error says what is wrong with it.
    pub(super) fn parse(value: &Value) -> Result<ApplicationPropertiesFilter, String> {
        let tests = bounded_map(value)?
            .iter()
            .map(|(key, reference)| match key {
                Value::String(name) => Ok((name.clone(), Reference::parse(name, reference)?)),
                _ => Err("the keys must be strings, naming application properties".to_owned()),
            })
            .collect::<Result<_, _>>()?;
        Ok(ApplicationPropertiesFilter { tests })
    }

    /// True if the message has every property and each matches; an absent
    /// property never matches, whatever the reference value.
    pub(super) fn matches(&self, message: &MessageFields) -> bool {
        self.tests.iter().all(|(name, reference)| {
            message
                .application_property(name)
                .is_some_and(|actual| reference.matches(actual))
        })
    }
}

/// The filter's map of 1 to [`FIELDS_MAX`] entries.
fn bounded_map(value: &Value) -> Result<&[(Value, Value)], String> {
    match value {
        Value::Map(entries) if entries.is_empty() => Err("the map is empty".to_owned()),
        Value::Map(entries) if entries.len() > FIELDS_MAX => Err(format!(
            "the map has {} entries, more than the {FIELDS_MAX} allowed",
            entries.len()
        )),
        Value::Map(entries) => Ok(entries),
        _ => Err("the value must be a map".to_owned()),
    }
}

/// Equality of simple values as the working draft defines it (§4.1.1):
/// numbers of different types are equal if their values are (compared as
/// floating point when either is), other values only within their type.
fn simple_equal(expected: &Value, actual: &Value) -> bool {
    match (Number::of(expected), Number::of(actual)) {
        (Some(a), Some(b)) => a.equals(b),
        (None, None) => expected == actual,
        _ => false,
    }
}

/// A numeric value, wide enough for every AMQP integer type.
#[derive(Debug, Clone, Copy)]
enum Number {
    Integer(i128),
    Float(f64),
}

impl Number {
    fn of(value: &Value) -> Option<Number> {
        Some(match *value {
            Value::Ubyte(n) => Number::Integer(n.into()),
            Value::Ushort(n) => Number::Integer(n.into()),
            Value::Uint(n) => Number::Integer(n.into()),
            Value::Ulong(n) => Number::Integer(n.into()),
            Value::Byte(n) => Number::Integer(n.into()),
            Value::Short(n) => Number::Integer(n.into()),
            Value::Int(n) => Number::Integer(n.into()),
            Value::Long(n) => Number::Integer(n.into()),
            Value::Float(n) => Number::Float(n.into()),
            Value::Double(n) => Number::Float(n),
            _ => return None,
        })
    }

    fn equals(self, other: Number) -> bool {
        match (self, other) {
            (Number::Integer(a), Number::Integer(b)) => a == b,
            (Number::Integer(i), Number::Float(f)) | (Number::Float(f), Number::Integer(i)) => {
                i as f64 == f
            }
            (Number::Float(a), Number::Float(b)) => a == b,
        }
    }
}
