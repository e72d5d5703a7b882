//! The parts of a message that filters look at, decoded once per message.

use bytes::Bytes;

use crate::amqp::codec::{Decode, DecodeError, Descriptor, Reader, Value, read_descriptor};
use crate::amqp::types::{
    Annotations, ApplicationProperties, Header, Properties, Section, section,
};

/// A message's header, message annotations, properties and application
/// properties: every field a filter can name.
///
/// Read once from the bytes the producer sent, then tested by as many
/// consumers' filters as need it. A section the message lacks reads as its
/// default (an absent header is priority 4, not durable, never delivered).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageFields {
    pub(super) header: Header,
    pub(super) message_annotations: Annotations,
    pub(super) properties: Properties,
    pub(super) application_properties: ApplicationProperties,
}

impl MessageFields {
    /// Decodes the sections before the body; the body is not read.
    pub fn read(message: &Bytes) -> Result<MessageFields, DecodeError> {
        let mut fields = MessageFields::default();
        let mut r = Reader::new(message.clone());
        while !r.is_empty() && !next_is_body(&r)? {
            match Section::decode(&mut r)? {
                Section::Header(header) => fields.header = header,
                Section::MessageAnnotations(annotations) => {
                    fields.message_annotations = annotations;
                }
                Section::Properties(properties) => fields.properties = *properties,
                Section::ApplicationProperties(properties) => {
                    fields.application_properties = properties;
                    // The body and footer follow: nothing a filter names.
                    break;
                }
                // Delivery annotations are for the hop, not the consumer.
                _ => {}
            }
        }
        Ok(fields)
    }

    /// The application property `name`, if the message has it.
    pub(super) fn application_property(&self, name: &str) -> Option<&Value> {
        self.application_properties
            .iter()
            .find_map(|(key, value)| (key == name).then_some(value))
    }

    /// The message annotation whose symbol key is `name`, if any.
    pub(super) fn message_annotation(&self, name: &str) -> Option<&Value> {
        self.message_annotations
            .iter()
            .find_map(|(key, value)| match key {
                Value::Symbol(key) if key == name => Some(value),
                _ => None,
            })
    }
}

/// True if the next section is a body section (or the footer after it).
fn next_is_body(r: &Reader) -> Result<bool, DecodeError> {
    let mut peek = r.clone();
    Ok(match read_descriptor(&mut peek)? {
        Descriptor::Code(code) => code >= section::DATA,
        Descriptor::Name(name) => [
            "amqp:data:",
            "amqp:amqp-sequence:",
            "amqp:amqp-value:",
            "amqp:footer:",
        ]
        .iter()
        .any(|prefix| name.as_str().starts_with(prefix)),
        // Not a section at all: let `Section::decode` refuse it.
        Descriptor::Other(_) => false,
    })
}
