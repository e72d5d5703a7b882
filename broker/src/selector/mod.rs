//! Message filters for consumers: which messages a consumer's link wants.
//!
//! A consumer's attach carries `source.filter`, a map from a name of the
//! client's choosing to a described value whose descriptor says what kind of
//! filter it is. The broker parses the filters once, at attach, into
//! [`Filters`], and then asks for each message whether it [matches]. A
//! message is read once into [`MessageFields`] (its sections before the
//! body), so that every consumer of a queue tests the same decoded fields.
//!
//! Three kinds of filter are understood:
//! - the JMS message selector (`apache.org:selector-filter:string`), the SQL
//!   subset of JMS 2.0 §3.8.1, with JMS header names mapped onto AMQP fields
//!   the way Qpid JMS maps them (see `jms/headers.rs`);
//! - the OASIS AMQP Filter Expressions properties filter and
//!   application-properties filter, as RabbitMQ 4.1 implements them (see
//!   `amqp_filters.rs`).
//!
//! Any other descriptor is not a filter this module knows: the broker decides
//! what to do with it (the spec lets it ignore the filter and leave it out of
//! the source it answers with, so the client can see it is not applied).
//!
//! Cost is bounded both when parsing (selector length, nesting, list sizes)
//! and when matching: a LIKE pattern matches in time linear in the text for
//! each `%`-separated part, never by backtracking.
//!
//! [matches]: Filters::matches

mod amqp_filters;
mod fields;
#[doc(hidden)]
pub mod fuzzing;
mod jms;

#[cfg(test)]
mod tests;

use crate::amqp::codec::Value;

pub use fields::MessageFields;
pub use jms::SelectorError;

use amqp_filters::{ApplicationPropertiesFilter, PropertiesFilter};
use jms::Selector;

/// The JMS selector filter's symbolic descriptor.
pub const JMS_SELECTOR_NAME: &str = "apache.org:selector-filter:string";
/// The JMS selector filter's numeric descriptor (Apache's domain, `0x468C`).
pub const JMS_SELECTOR_CODE: u64 = 0x0000_468C_0000_0004;
/// The properties filter's symbolic descriptor (AMQP Filter Expressions).
pub const PROPERTIES_FILTER_NAME: &str = "amqp:properties-filter";
/// The properties filter's numeric descriptor.
pub const PROPERTIES_FILTER_CODE: u64 = 0x0000_0000_0000_0173;
/// The application-properties filter's symbolic descriptor.
pub const APPLICATION_PROPERTIES_FILTER_NAME: &str = "amqp:application-properties-filter";
/// The application-properties filter's numeric descriptor.
pub const APPLICATION_PROPERTIES_FILTER_CODE: u64 = 0x0000_0000_0000_0174;

/// Why a filter the broker knows could not be put in effect.
///
/// The broker refuses the link with `amqp:invalid-field`, and this error's
/// text as the description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// A JMS selector that does not parse, with the position of the fault.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// A filter whose value does not have the shape its type requires.
    #[error("{filter}: {reason}")]
    Invalid {
        /// The filter type's symbolic descriptor.
        filter: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
}

/// One filter of a consumer's source, parsed.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The entry's key in the source's filter set, as the client sent it.
    name: Value,
    /// The entry's described value, as the client sent it.
    value: Value,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    Selector(Selector),
    Properties(PropertiesFilter),
    ApplicationProperties(ApplicationPropertiesFilter),
}

impl Filter {
    /// Parses one entry of `source.filter`: `name` is its key, `value` the
    /// described value.
    ///
    /// `Ok(None)` for a value that is not described or whose descriptor is
    /// not a filter type known here; an error for a known type whose value
    /// is malformed.
    pub fn from_source_entry(name: &Value, value: &Value) -> Result<Option<Filter>, FilterError> {
        let Value::Described(described) = value else {
            return Ok(None);
        };
        let descriptor = &described.descriptor;
        let inner = &described.value;
        let test = if descriptor.is(JMS_SELECTOR_NAME, JMS_SELECTOR_CODE) {
            Test::Selector(selector(inner)?)
        } else if descriptor.is(PROPERTIES_FILTER_NAME, PROPERTIES_FILTER_CODE) {
            Test::Properties(PropertiesFilter::parse(inner).map_err(|reason| {
                FilterError::Invalid {
                    filter: PROPERTIES_FILTER_NAME,
                    reason,
                }
            })?)
        } else if descriptor.is(
            APPLICATION_PROPERTIES_FILTER_NAME,
            APPLICATION_PROPERTIES_FILTER_CODE,
        ) {
            Test::ApplicationProperties(ApplicationPropertiesFilter::parse(inner).map_err(
                |reason| FilterError::Invalid {
                    filter: APPLICATION_PROPERTIES_FILTER_NAME,
                    reason,
                },
            )?)
        } else {
            return Ok(None);
        };
        Ok(Some(Filter {
            name: name.clone(),
            value: value.clone(),
            test,
        }))
    }

    /// True if `message` passes this filter.
    pub fn matches(&self, message: &MessageFields) -> bool {
        match &self.test {
            Test::Selector(selector) => selector.matches(message),
            Test::Properties(filter) => filter.matches(message),
            Test::ApplicationProperties(filter) => filter.matches(message),
        }
    }

    /// Whether it is an `amqp:application-properties-filter`.
    pub fn is_application_properties(&self) -> bool {
        matches!(self.test, Test::ApplicationProperties(_))
    }

    /// The entry's key, as the client sent it.
    pub fn name(&self) -> &Value {
        &self.name
    }

    /// The entry's described value, as the client sent it.
    pub fn value(&self) -> &Value {
        &self.value
    }
}

fn selector(value: &Value) -> Result<Selector, FilterError> {
    match value {
        Value::String(text) => Ok(Selector::parse(text)?),
        _ => Err(FilterError::Invalid {
            filter: JMS_SELECTOR_NAME,
            reason: "the value must be a string".to_owned(),
        }),
    }
}

/// The filters in effect on one consumer: a message passes if it passes
/// every one (spec part 3 §3.5.8).
#[derive(Debug, Clone, Default)]
pub struct Filters {
    filters: Vec<Filter>,
}

impl Filters {
    /// Parses a source's filter set, keeping the entries of known types and
    /// leaving out the others.
    pub fn from_source(filter_set: &[(Value, Value)]) -> Result<Filters, FilterError> {
        let mut filters = Vec::new();
        for (name, value) in filter_set {
            filters.extend(Filter::from_source_entry(name, value)?);
        }
        Ok(Filters { filters })
    }

    /// True if `message` passes every filter (and so when there is none).
    pub fn matches(&self, message: &MessageFields) -> bool {
        self.filters.iter().all(|filter| filter.matches(message))
    }

    /// True if no filter is in effect.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The filters in effect, in the order the client sent them.
    pub fn iter(&self) -> impl Iterator<Item = &Filter> {
        self.filters.iter()
    }

    /// The filter set to answer the attach with: exactly the entries in
    /// effect, as the client sent them.
    pub fn in_effect(&self) -> Vec<(Value, Value)> {
        self.filters
            .iter()
            .map(|filter| (filter.name.clone(), filter.value.clone()))
            .collect()
    }
}
