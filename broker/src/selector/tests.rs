use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::amqp::codec::{Described, Descriptor, Symbol};
use crate::amqp::types::{Header, Message, MessageId, Properties, Section, Timestamp};

fn described(descriptor: Descriptor, value: Value) -> Value {
    Value::from(Described { descriptor, value })
}

fn by_name(name: &'static str, value: Value) -> Value {
    described(Descriptor::Name(Symbol::from_static(name)), value)
}

fn key(name: &'static str) -> Value {
    Value::Symbol(Symbol::from_static(name))
}

fn selector(text: &str) -> Value {
    by_name(JMS_SELECTOR_NAME, Value::from(text))
}

fn symbol_map(entries: &[(&'static str, Value)]) -> Value {
    Value::Map(entries.iter().map(|(k, v)| (key(k), v.clone())).collect())
}

fn string_map(entries: &[(&str, Value)]) -> Value {
    Value::Map(
        entries
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

fn parse(value: Value) -> Result<Option<Filter>, FilterError> {
    Filter::from_source_entry(&key("f"), &value)
}

fn filter(value: Value) -> Filter {
    parse(value).unwrap().expect("a known filter")
}

fn invalid(value: Value) -> String {
    parse(value).unwrap_err().to_string()
}

fn read(sections: Vec<Section>) -> MessageFields {
    MessageFields::read(&Message { sections }.encode()).unwrap()
}

/// The message the filter tests select from.
fn sample() -> MessageFields {
    read(vec![
        Section::Header(Header {
            durable: true,
            ..Header::default()
        }),
        Section::Properties(Box::new(Properties {
            message_id: Some(MessageId::String("order-17".into())),
            user_id: Some(Bytes::from_static(b"alice")),
            to: Some("/queues/orders".into()),
            subject: Some("&special".into()),
            correlation_id: Some(MessageId::Ulong(9)),
            content_type: Some(Symbol::from_static("application/json")),
            creation_time: Some(Timestamp(1_000)),
            group_id: Some("group-a".into()),
            group_sequence: Some(4),
            ..Properties::default()
        })),
        Section::ApplicationProperties(vec![
            ("region".into(), Value::from("eu-west-1")),
            ("count".into(), Value::Int(5)),
            ("ratio".into(), Value::Double(0.5)),
            ("kind".into(), Value::Symbol(Symbol::from_static("fruit"))),
            ("bytes".into(), Value::Binary(Bytes::from_static(b"eu"))),
            ("nothing".into(), Value::Null),
        ]),
        Section::Data(Bytes::from_static(b"body")),
    ])
}

#[test]
fn a_selector_is_known_by_name_or_code() {
    let message = sample();
    let by_code = described(
        Descriptor::Code(JMS_SELECTOR_CODE),
        Value::from("region = 'eu-west-1'"),
    );
    assert!(filter(by_code).matches(&message));
    assert!(filter(selector("region = 'eu-west-1'")).matches(&message));
    assert!(!filter(selector("region = 'us-east-1'")).matches(&message));
}

#[test]
fn unknown_filters_are_left_to_the_broker() {
    let no_local = by_name("apache.org:no-local-filter:list", Value::List(vec![]));
    assert!(parse(no_local).unwrap().is_none());
    assert!(
        parse(Value::from("color = 'red'")).unwrap().is_none(),
        "not described"
    );
    assert!(
        parse(described(Descriptor::Code(0x468C_0000_0005), Value::Null))
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_selector_must_be_a_string() {
    assert_eq!(
        invalid(by_name(JMS_SELECTOR_NAME, Value::Int(1))),
        "apache.org:selector-filter:string: the value must be a string"
    );
}

#[test]
fn selector_errors_carry_the_position() {
    match parse(selector("a = 1 AND")) {
        Err(FilterError::Selector(e)) => {
            assert_eq!(e.position, 9);
            assert_eq!(
                e.to_string(),
                "selector: position 9: expected an expression after AND"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn filters_keep_and_echo_only_known_entries() {
    let set = vec![
        (key("jms"), selector("count > 1")),
        (
            key("no-local"),
            by_name("apache.org:no-local-filter:list", Value::List(vec![])),
        ),
        (
            key("props"),
            by_name(
                PROPERTIES_FILTER_NAME,
                symbol_map(&[("group-id", Value::from("group-a"))]),
            ),
        ),
    ];
    let filters = Filters::from_source(&set).unwrap();
    assert_eq!(filters.iter().count(), 2);
    assert_eq!(filters.in_effect(), vec![set[0].clone(), set[2].clone()]);
    assert!(filters.matches(&sample()));
    assert!(!filters.is_empty());
}

#[test]
fn every_filter_must_pass() {
    let message = sample();
    let set = |second: &str| {
        Filters::from_source(&[
            (key("a"), selector("count = 5")),
            (key("b"), selector(second)),
        ])
        .unwrap()
    };
    assert!(set("ratio < 1").matches(&message));
    assert!(!set("ratio > 1").matches(&message));
    assert!(Filters::default().matches(&message), "no filter passes all");
}

#[test]
fn one_bad_entry_refuses_the_set() {
    let set = [
        (key("a"), selector("count = 5")),
        (key("b"), selector("count =")),
    ];
    assert!(matches!(
        Filters::from_source(&set),
        Err(FilterError::Selector(_))
    ));
}

fn properties_filter(entries: &[(&'static str, Value)]) -> Value {
    by_name(PROPERTIES_FILTER_NAME, symbol_map(entries))
}

fn application_properties_filter(entries: &[(&str, Value)]) -> Value {
    by_name(APPLICATION_PROPERTIES_FILTER_NAME, string_map(entries))
}

#[test]
fn the_properties_filter_matches_each_field_by_type() {
    let message = sample();
    let passes =
        |entries: &[(&'static str, Value)]| filter(properties_filter(entries)).matches(&message);
    let cases: [(&'static str, Value, bool); 18] = [
        ("message-id", Value::from("order-17"), true),
        ("message-id", Value::from("&p:order-"), true),
        ("message-id", Value::from("&s:-17"), true),
        ("message-id", Value::Ulong(17), false),
        ("correlation-id", Value::Ulong(9), true),
        ("correlation-id", Value::from("9"), false),
        ("user-id", Value::Binary(Bytes::from_static(b"alice")), true),
        ("to", Value::from("&p:/queues/"), true),
        ("to", Value::from("&s:/orders"), true),
        ("to", Value::from("&p:/topics/"), false),
        ("subject", Value::from("&&special"), true),
        (
            "content-type",
            Value::Symbol(Symbol::from_static("application/json")),
            true,
        ),
        (
            "content-encoding",
            Value::Symbol(Symbol::from_static("gzip")),
            false,
        ),
        ("creation-time", Value::Timestamp(1_000), true),
        ("absolute-expiry-time", Value::Timestamp(1_000), false),
        ("group-id", Value::from("group-a"), true),
        ("group-sequence", Value::Uint(4), true),
        ("reply-to-group-id", Value::from("&p:"), false),
    ];
    for (field, reference, expected) in cases {
        assert_eq!(
            passes(&[(field, reference.clone())]),
            expected,
            "{field} {reference:?}"
        );
    }
    assert!(passes(&[
        ("to", Value::from("&p:/queues/")),
        ("group-sequence", Value::Uint(4)),
    ]));
    assert!(!passes(&[
        ("to", Value::from("&p:/queues/")),
        ("group-sequence", Value::Uint(5)),
    ]));
}

#[test]
fn the_application_properties_filter() {
    let message = sample();
    let passes = |entries: &[(&str, Value)]| {
        filter(application_properties_filter(entries)).matches(&message)
    };
    let cases = [
        ("region", Value::from("eu-west-1"), true),
        ("region", Value::from("&p:eu-"), true),
        ("region", Value::from("&s:-1"), true),
        ("region", Value::from("&p:us-"), false),
        ("kind", Value::from("fruit"), true),
        ("kind", Value::from("&p:fr"), true),
        ("count", Value::Long(5), true),
        ("count", Value::Ubyte(5), true),
        ("count", Value::Double(5.0), true),
        ("count", Value::from("5"), false),
        ("ratio", Value::Float(0.5), true),
        ("ratio", Value::Int(0), false),
        ("bytes", Value::Binary(Bytes::from_static(b"eu")), true),
        ("bytes", Value::from("eu"), false),
        // Null: any value, the property being there.
        ("nothing", Value::Null, true),
        ("count", Value::Null, true),
        ("absent", Value::Null, false),
        ("absent", Value::from("&p:"), false),
    ];
    for (name, reference, expected) in cases {
        assert_eq!(
            passes(&[(name, reference.clone())]),
            expected,
            "{name} {reference:?}"
        );
    }
}

#[test]
fn malformed_amqp_filters_are_refused() {
    let too_many: Vec<(Value, Value)> = (0..17)
        .map(|i| (Value::from(format!("p{i}")), Value::Null))
        .collect();
    let lines = [
        invalid(properties_filter(&[])),
        invalid(by_name(PROPERTIES_FILTER_NAME, Value::from("subject"))),
        invalid(properties_filter(&[("subject", Value::Int(1))])),
        invalid(properties_filter(&[("message-id", Value::Int(1))])),
        invalid(properties_filter(&[("group-sequence", Value::Ulong(1))])),
        invalid(properties_filter(&[("priority", Value::Ubyte(1))])),
        invalid(properties_filter(&[("to", Value::from("&x:abc"))])),
        invalid(properties_filter(&[("to", Value::from("&"))])),
        invalid(by_name(
            PROPERTIES_FILTER_NAME,
            string_map(&[("subject", Value::from("x"))]),
        )),
        invalid(by_name(
            APPLICATION_PROPERTIES_FILTER_NAME,
            Value::Map(too_many),
        )),
        invalid(by_name(
            APPLICATION_PROPERTIES_FILTER_NAME,
            symbol_map(&[("region", Value::from("eu"))]),
        )),
        invalid(application_properties_filter(&[(
            "list",
            Value::List(vec![]),
        )])),
        invalid(application_properties_filter(&[(
            "region",
            Value::from("&q:eu"),
        )])),
    ];
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn fields_are_read_from_the_sections_before_the_body() {
    let message = sample();
    assert!(message.header.durable);
    assert_eq!(message.properties.group_sequence, Some(4));
    assert_eq!(message.application_property("count"), Some(&Value::Int(5)));
    assert_eq!(message.application_property("missing"), None);
    assert_eq!(message.message_annotation("x-opt-jms-type"), None);
}

#[test]
fn the_body_is_never_decoded() {
    let mut bytes = Message {
        sections: vec![Section::Properties(Box::new(Properties {
            subject: Some("s".into()),
            ..Properties::default()
        }))],
    }
    .encode()
    .to_vec();
    // An amqp-value section holding an unknown constructor.
    bytes.extend_from_slice(&[0x00, 0x53, 0x77, 0xff]);
    let fields = MessageFields::read(&Bytes::from(bytes)).unwrap();
    assert_eq!(fields.properties.subject.as_deref(), Some("s"));
}

#[test]
fn malformed_sections_are_a_decode_error() {
    for garbage in [
        &b"\x00\x53\x70\xff"[..],
        b"\x00",
        b"\x00\x53\x74\xc1\x05\x02",
    ] {
        assert!(MessageFields::read(&Bytes::copy_from_slice(garbage)).is_err());
    }
}

#[test]
fn the_fuzz_check_passes_on_hand_picked_selectors() {
    let message = sample();
    for text in [
        "",
        "count > 1",
        "count > 1 AND region LIKE 'eu%'",
        "JMSMessageID = 'ID:AMQP_NO_PREFIX:order-17'",
        "nothing IS NULL OR missing = 1",
        "region = 5",
        "region IN ('eu-west-1', 'x')",
        "'",
        "((((",
        "a = 0x",
        "a LIKE 'x!' ESCAPE '!'",
    ] {
        fuzzing::check(text, &message);
    }
}

proptest! {
    #[test]
    fn the_fuzz_check_passes_on_generated_selectors(
        pieces in prop::collection::vec(
            prop::sample::select(vec![
                "count", "region", "ratio", "kind", "nothing", "missing", "JMSPriority",
                "JMSMessageID", "JMSDeliveryMode", "=", "<>", "<", ">=", "+", "-", "*", "/",
                "(", ")", ",", "'eu-west-1'", "'%e_'", "'!'", "5", "0.5", "0x1F", "AND", "OR",
                "NOT", "BETWEEN", "IN", "LIKE", "ESCAPE", "IS", "NULL", "TRUE", "FALSE", "é",
            ]),
            0..24,
        ),
    ) {
        fuzzing::check(&pieces.join(" "), &sample());
    }

    #[test]
    fn the_fuzz_check_passes_on_arbitrary_text(text in "\\PC{0,64}") {
        fuzzing::check(&text, &sample());
    }
}
