//! What the broker reads from, and writes into, the messages it carries.
//!
//! Messages travel as the bytes the producer sent. The broker looks only at
//! the sections before the body (header, annotations, properties), and
//! rewrites the header and message annotations only when a redelivery or a
//! dead-lettering has something to say: a first delivery is the producer's
//! bytes, unchanged and uncopied.

use bytes::Bytes;

use crate::amqp::codec::{
    Decode, DecodeError, Descriptor, Reader, Value, read_descriptor, to_bytes,
};
use crate::amqp::types::{Header, Message, Section, section};
use crate::queue::{DEFAULT_PRIORITY, NewMessage, PublishTraits};

/// What routing, durability, expiry and the queue types need to know
/// about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// `header.durable`.
    pub durable: bool,
    /// `header.ttl`, in milliseconds.
    pub ttl_ms: Option<u64>,
    /// `properties.absolute-expiry-time`, in Unix milliseconds.
    pub absolute_expiry_ms: Option<u64>,
    /// `properties.to`, for the anonymous relay.
    pub to: Option<String>,
    /// `properties.message-id`, encoded, for de-duplication.
    pub message_id: Option<Bytes>,
    /// `header.priority`.
    pub priority: u8,
    /// `properties.group-id`, for message groups.
    pub group: Option<String>,
    /// When it asks to be delivered, if not at once.
    pub schedule: Option<Schedule>,
}

/// When a message asks to be delivered (scheduled delivery, as Qpid JMS,
/// Artemis and Azure Service Bus annotate it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// `x-opt-delivery-time`: not before this time, Unix milliseconds.
    At(u64),
    /// `x-opt-delivery-delay`: not before this many milliseconds from its
    /// arrival.
    After(u64),
}

/// The annotation of a scheduled message's delivery time.
const DELIVERY_TIME: &str = "x-opt-delivery-time";
/// The annotation of a scheduled message's delay.
const DELIVERY_DELAY: &str = "x-opt-delivery-delay";

impl Default for Inspected {
    fn default() -> Self {
        Self {
            durable: false,
            ttl_ms: None,
            absolute_expiry_ms: None,
            to: None,
            message_id: None,
            priority: DEFAULT_PRIORITY,
            group: None,
            schedule: None,
        }
    }
}

impl Inspected {
    /// The message `body` (the bytes it was inspected from), arrived at
    /// `now_ms`, as a queue takes it: durable if its header says so or
    /// `persist_always` (the queue keeps every message on disk).
    pub fn new_message(&self, body: Bytes, persist_always: bool, now_ms: u64) -> NewMessage {
        NewMessage {
            body,
            durable: self.durable || persist_always,
            ttl_ms: self.ttl_ms,
            absolute_expiry_ms: self.absolute_expiry_ms,
            message_id: self.message_id.clone(),
            traits: PublishTraits {
                priority: self.priority,
                group: self.group.clone(),
                deliver_at_ms: self.schedule.map(|schedule| match schedule {
                    Schedule::At(at_ms) => at_ms,
                    Schedule::After(delay_ms) => now_ms.saturating_add(delay_ms),
                }),
            }
            .boxed(),
            copy_of: None,
        }
    }
}

/// The delivery schedule message annotations ask for; a time or delay
/// that is not a non-negative number (or timestamp) is ignored.
fn schedule(annotations: &[(Value, Value)]) -> Option<Schedule> {
    let millis = |value: &Value| match value {
        Value::Timestamp(ms) | Value::Long(ms) => u64::try_from(*ms).ok(),
        Value::Ulong(ms) => Some(*ms),
        Value::Uint(ms) => Some(u64::from(*ms)),
        Value::Int(ms) => u64::try_from(*ms).ok(),
        _ => None,
    };
    let annotation = |name: &str| {
        annotations
            .iter()
            .find(|(key, _)| matches!(key, Value::Symbol(symbol) if symbol == name))
            .and_then(|(_, value)| millis(value))
    };
    annotation(DELIVERY_TIME)
        .map(Schedule::At)
        .or_else(|| annotation(DELIVERY_DELAY).map(Schedule::After))
}

/// Reads the sections that precede the body; the body is not decoded.
pub fn inspect(message: &Bytes) -> Result<Inspected, DecodeError> {
    let mut inspected = Inspected::default();
    let mut r = Reader::new(message.clone());
    while !r.is_empty() {
        if is_body_section(&r)? {
            break;
        }
        match Section::decode(&mut r)? {
            Section::Header(header) => {
                inspected.durable = header.durable;
                inspected.ttl_ms = header.ttl.map(u64::from);
                inspected.priority = header.priority;
            }
            Section::MessageAnnotations(annotations) => {
                inspected.schedule = schedule(&annotations);
            }
            Section::Properties(properties) => {
                inspected.absolute_expiry_ms = properties
                    .absolute_expiry_time
                    .and_then(|t| u64::try_from(t.0).ok());
                inspected.to = properties.to;
                inspected.message_id = properties.message_id.as_ref().map(to_bytes);
                inspected.group = properties.group_id;
                // Nothing after the properties concerns the broker.
                break;
            }
            _ => {}
        }
    }
    Ok(inspected)
}

/// True if the next section is a body section (or the footer after it).
fn is_body_section(r: &Reader) -> Result<bool, DecodeError> {
    let mut peek = r.clone();
    Ok(match read_descriptor(&mut peek)? {
        Descriptor::Code(code) => code >= section::DATA,
        Descriptor::Name(name) => {
            let name = name.as_str();
            name.starts_with("amqp:data:")
                || name.starts_with("amqp:amqp-sequence:")
                || name.starts_with("amqp:amqp-value:")
                || name.starts_with("amqp:footer:")
        }
        Descriptor::Other(_) => false,
    })
}

/// The message as a consumer receives it: the stored bytes, with the header
/// and message annotations rewritten when the delivery carries news
/// (a failed earlier delivery, or annotations from `modified` or
/// dead-lettering).
pub fn render(
    body: &Bytes,
    delivery_count: u32,
    first_acquirer: bool,
    annotations: &[(Value, Value)],
) -> Result<Bytes, DecodeError> {
    if delivery_count == 0 && annotations.is_empty() {
        return Ok(body.clone());
    }
    let mut message = Message::decode(body.clone())?;
    let sections = &mut message.sections;
    match sections.iter_mut().find_map(|s| match s {
        Section::Header(h) => Some(h),
        _ => None,
    }) {
        Some(header) => {
            header.delivery_count = delivery_count;
            header.first_acquirer = first_acquirer;
        }
        None => sections.insert(
            0,
            Section::Header(Header {
                delivery_count,
                first_acquirer,
                ..Header::default()
            }),
        ),
    }
    if !annotations.is_empty() {
        merge_annotations(sections, annotations);
    }
    Ok(message.encode())
}

/// Sets `annotations` in the message-annotations section (replacing keys
/// already there), creating the section in its place if there is none.
fn merge_annotations(sections: &mut Vec<Section>, annotations: &[(Value, Value)]) {
    let existing = sections.iter_mut().find_map(|s| match s {
        Section::MessageAnnotations(m) => Some(m),
        _ => None,
    });
    let map = match existing {
        Some(map) => map,
        None => {
            // Message annotations follow the header and delivery annotations.
            let at = sections
                .iter()
                .take_while(|s| matches!(s, Section::Header(_) | Section::DeliveryAnnotations(_)))
                .count();
            sections.insert(at, Section::MessageAnnotations(Vec::new()));
            match &mut sections[at] {
                Section::MessageAnnotations(map) => map,
                _ => unreachable!("just inserted"),
            }
        }
    };
    for (key, value) in annotations {
        match map.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.clone(),
            None => map.push((key.clone(), value.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::codec::Symbol;
    use crate::amqp::types::{MessageId, Properties, Timestamp};

    fn message(sections: Vec<Section>) -> Bytes {
        Message { sections }.encode()
    }

    #[test]
    fn inspect_reads_header_and_properties_only() {
        let bytes = message(vec![
            Section::Header(Header {
                durable: true,
                ttl: Some(500),
                ..Header::default()
            }),
            Section::Properties(Box::new(Properties {
                to: Some("orders".into()),
                message_id: Some(MessageId::String("order-1".into())),
                absolute_expiry_time: Some(Timestamp(1_700_000_000_000)),
                ..Properties::default()
            })),
            Section::Data(Bytes::from_static(b"body")),
        ]);
        assert_eq!(
            inspect(&bytes),
            Ok(Inspected {
                durable: true,
                ttl_ms: Some(500),
                absolute_expiry_ms: Some(1_700_000_000_000),
                to: Some("orders".into()),
                message_id: Some(to_bytes(&MessageId::String("order-1".into()))),
                ..Inspected::default()
            })
        );
    }

    /// What the queue types read: the header's priority, the group-id, and
    /// a delivery time or delay from the message annotations.
    #[test]
    fn inspect_reads_what_the_queue_types_need() {
        let annotated = |key: &'static str, value: Value| {
            message(vec![
                Section::Header(Header {
                    priority: 7,
                    ..Header::default()
                }),
                Section::MessageAnnotations(vec![(Value::Symbol(Symbol::from_static(key)), value)]),
                Section::Properties(Box::new(Properties {
                    group_id: Some("EURUSD".into()),
                    ..Properties::default()
                })),
                Section::Data(Bytes::from_static(b"x")),
            ])
        };
        let at = inspect(&annotated("x-opt-delivery-time", Value::Timestamp(5_000))).unwrap();
        assert_eq!(at.priority, 7);
        assert_eq!(at.group.as_deref(), Some("EURUSD"));
        assert_eq!(at.schedule, Some(Schedule::At(5_000)));
        assert_eq!(
            at.new_message(Bytes::new(), false, 1_000)
                .traits()
                .deliver_at_ms,
            Some(5_000)
        );
        let after = inspect(&annotated("x-opt-delivery-delay", Value::Long(250))).unwrap();
        assert_eq!(
            after
                .new_message(Bytes::new(), false, 1_000)
                .traits()
                .deliver_at_ms,
            Some(1_250)
        );
        let negative = inspect(&annotated("x-opt-delivery-delay", Value::Long(-1))).unwrap();
        assert_eq!(negative.schedule, None, "a negative delay is no schedule");
        assert_eq!(
            inspect(&message(vec![])).unwrap().priority,
            4,
            "the default"
        );
    }

    #[test]
    fn a_message_without_header_is_not_durable() {
        let bytes = message(vec![Section::Data(Bytes::from_static(b"x"))]);
        assert_eq!(inspect(&bytes), Ok(Inspected::default()));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(inspect(&Bytes::from_static(b"\x00\x53\x70\xff")).is_err());
    }

    #[test]
    fn a_first_delivery_is_the_producers_bytes() {
        let bytes = message(vec![Section::Data(Bytes::from_static(b"x"))]);
        let rendered = render(&bytes, 0, true, &[]).unwrap();
        assert_eq!(rendered.as_ptr(), bytes.as_ptr(), "not copied");
    }

    /// Qpid JMS keeps a message's JMS type and destinations in message
    /// annotations: a redelivery, which rewrites the header and merges the
    /// broker's annotations in, keeps them as the producer sent them.
    #[test]
    fn a_redelivery_keeps_the_jms_annotations() {
        let jms: Vec<(Value, Value)> = [
            ("x-opt-jms-msg-type", Value::Byte(5)),
            ("x-opt-jms-dest", Value::Byte(0)),
            ("x-opt-jms-reply-to", Value::Byte(2)),
        ]
        .into_iter()
        .map(|(key, value)| (Value::Symbol(Symbol::from_static(key)), value))
        .collect();
        let bytes = message(vec![
            Section::MessageAnnotations(jms.clone()),
            Section::Data(Bytes::from_static(b"x")),
        ]);
        let reason = (
            Value::Symbol(Symbol::from_static("x-opt-deadletter-reason")),
            Value::Symbol(Symbol::from_static("rejected")),
        );
        let rendered = render(&bytes, 1, false, std::slice::from_ref(&reason)).unwrap();
        let message = Message::decode(rendered).unwrap();
        let annotations = message.sections.iter().find_map(|s| match s {
            Section::MessageAnnotations(map) => Some(map.clone()),
            _ => None,
        });
        let expected: Vec<_> = jms.into_iter().chain([reason]).collect();
        assert_eq!(annotations, Some(expected));
    }

    #[test]
    fn a_redelivery_carries_its_count_and_annotations() {
        let bytes = message(vec![Section::Data(Bytes::from_static(b"x"))]);
        let reason = (
            Value::Symbol(Symbol::from_static("x-opt-deadletter-reason")),
            Value::Symbol(Symbol::from_static("rejected")),
        );
        let rendered = render(&bytes, 3, false, std::slice::from_ref(&reason)).unwrap();
        let message = Message::decode(rendered).unwrap();
        let header = message.header().unwrap();
        assert_eq!(header.delivery_count, 3);
        assert!(!header.first_acquirer);
        assert_eq!(
            message.sections[1],
            Section::MessageAnnotations(vec![reason])
        );
        assert_eq!(message.sections[2], Section::Data(Bytes::from_static(b"x")));
    }
}
