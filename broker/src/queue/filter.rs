//! Which messages a consumer, or a topic subscription, takes: the filters
//! of its source ([`crate::selector`]), kept as the client sent them (what
//! the log and snapshots record) and compiled once.

use std::cell::OnceCell;

use bytes::{Bytes, BytesMut};

use crate::amqp::codec::{Decode, DecodeError, DecodeErrorKind, Encode, Reader, Value, to_bytes};
use crate::selector::{Filter, FilterError, Filters, MessageFields};

/// A source's filters in effect.
#[derive(Debug, Clone)]
pub struct MessageFilter {
    /// The filter set's entries in effect, as the client sent them.
    entries: Vec<(Value, Value)>,
    /// Their encoding: what two filters are equal by.
    encoded: Bytes,
    compiled: Filters,
}

impl MessageFilter {
    /// The filters of `entries` (a source's filter set) that the broker
    /// applies; `None` if it applies none of them.
    pub fn new(entries: &[(Value, Value)]) -> Result<Option<Self>, FilterError> {
        let compiled = Filters::from_source(entries)?;
        Ok((!compiled.is_empty()).then(|| {
            let entries = compiled.in_effect();
            let encoded = to_bytes(&Value::Map(entries.clone()));
            Self {
                entries,
                encoded,
                compiled,
            }
        }))
    }

    /// The entries in effect, to answer the attach with.
    pub fn entries(&self) -> &[(Value, Value)] {
        &self.entries
    }

    /// The same filters but the application-properties filters; `None` if
    /// no other is left. Only the `filter-ignored` plant asks.
    pub fn without_application_properties(&self) -> Option<Box<Self>> {
        let kept: Vec<(Value, Value)> = self
            .entries
            .iter()
            .filter(|(name, value)| {
                Filter::from_source_entry(name, value)
                    .is_ok_and(|filter| filter.is_some_and(|f| !f.is_application_properties()))
            })
            .cloned()
            .collect();
        MessageFilter::new(&kept).ok().flatten().map(Box::new)
    }

    /// Whether the message passes. One that does not decode passes no
    /// filter.
    pub fn takes(&self, message: &LazyFields) -> bool {
        message
            .get()
            .is_some_and(|fields| self.compiled.matches(fields))
    }
}

/// A message's fields, decoded the first time a filter asks for them: a
/// message that many consumers' or subscriptions' filters test is decoded
/// once, and one that meets no filter not at all.
pub struct LazyFields<'a> {
    body: &'a Bytes,
    decoded: OnceCell<Option<MessageFields>>,
}

impl<'a> LazyFields<'a> {
    pub fn new(body: &'a Bytes) -> Self {
        Self {
            body,
            decoded: OnceCell::new(),
        }
    }

    /// Its fields; `None` if it does not decode.
    fn get(&self) -> Option<&MessageFields> {
        self.decoded
            .get_or_init(|| MessageFields::read(self.body).ok())
            .as_ref()
    }
}

impl PartialEq for MessageFilter {
    fn eq(&self, other: &Self) -> bool {
        self.encoded == other.encoded
    }
}

impl Eq for MessageFilter {}

impl Encode for MessageFilter {
    fn encode(&self, buf: &mut BytesMut) {
        buf.extend_from_slice(&self.encoded);
    }
}

impl Decode for MessageFilter {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let Value::Map(entries) = Value::decode(r)? else {
            return Err(DecodeErrorKind::InvalidValue.into());
        };
        // What was logged was in effect when logged; what does not compile
        // now, or compiles to a different set, is not what was logged.
        match MessageFilter::new(&entries) {
            Ok(Some(filter)) if filter.entries == entries => Ok(filter),
            _ => Err(DecodeErrorKind::InvalidValue.into()),
        }
    }
}
