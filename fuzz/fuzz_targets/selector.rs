//! Fuzz target: arbitrary text as a consumer's JMS selector
//! (`sluice::selector`), parsed as the broker parses a source filter and
//! evaluated against a fixed message.
//!
//! Properties:
//! - parsing never panics, whatever the text, and an error's position is
//!   inside the text (or just past its end);
//! - what parses evaluates without panicking, the same way twice;
//! - a selector and its negation, `NOT (…)`, never both select the message
//!   (either may select nothing: three-valued logic).
//!
//! The check is `sluice::selector::fuzzing::check`, which the unit tests
//! run too.

#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::amqp::codec::Value;
use sluice::amqp::types::{Header, Message, MessageId, Properties, Section, Timestamp};
use sluice::selector::MessageFields;

/// A message with a value for every kind of field a selector can name.
fn message() -> &'static MessageFields {
    static MESSAGE: OnceLock<MessageFields> = OnceLock::new();
    MESSAGE.get_or_init(|| {
        let sections = vec![
            Section::Header(Header {
                durable: true,
                priority: 7,
                delivery_count: 1,
                ..Header::default()
            }),
            Section::Properties(Box::new(Properties {
                message_id: Some(MessageId::Ulong(42)),
                user_id: Some(Bytes::from_static(b"alice")),
                subject: Some("order".into()),
                correlation_id: Some(MessageId::String("ID:corr".into())),
                creation_time: Some(Timestamp(1_700_000_000_000)),
                group_id: Some("g".into()),
                group_sequence: Some(3),
                ..Properties::default()
            })),
            Section::ApplicationProperties(vec![
                ("a".into(), Value::from("red")),
                ("b".into(), Value::Int(5)),
                ("c".into(), Value::Double(2.5)),
                ("d".into(), Value::Boolean(true)),
                ("e".into(), Value::Ulong(u64::MAX)),
                ("f".into(), Value::from("a".repeat(1000))),
            ]),
            Section::Data(Bytes::from_static(b"body")),
        ];
        let bytes = Message { sections }.encode();
        MessageFields::read(&bytes).expect("the fixed message decodes")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    sluice::selector::fuzzing::check(text, message());
});
