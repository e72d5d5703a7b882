//! The protocol types against the spec: each performative, SASL frame,
//! delivery state, terminus and message section is decoded from bytes laid
//! out as the spec describes them, round-tripped with every field set and
//! with defaults, and fed the malformed inputs a peer may send.
//!
//! Byte layouts follow the AMQP 1.0 spec (OASIS, 2012): part 1 §1.6 for the
//! format codes, part 2 §2.7 for the performatives, part 3 §3.2 – §3.5 for
//! messaging and part 5 §5.3 for SASL. A composite is `0x00`, its
//! descriptor (`0x53 code` for a smallulong, or a symbol), then its fields as
//! a list: `0x45` (list0), `0xc0 size count …` (list8) or
//! `0xd0 size32 count32 …` (list32), where size counts the count field plus
//! the fields.

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::amqp::codec::{
    Decode, DecodeError, DecodeErrorKind, Described, Descriptor, Encode, Symbol, Value, from_bytes,
    to_bytes,
};
use crate::amqp::frame::{Frame, FrameDecoder, Layer, put_amqp_frame, put_sasl_frame};

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

fn sym(s: &'static str) -> Symbol {
    Symbol::from_static(s)
}

fn encode<T: Encode + ?Sized>(v: &T) -> Vec<u8> {
    to_bytes(v).to_vec()
}

fn decode<T: Decode>(bytes: &[u8]) -> Result<T, DecodeError> {
    from_bytes(Bytes::copy_from_slice(bytes))
}

#[track_caller]
fn assert_round_trip<T: Encode + Decode + PartialEq + Debug>(v: &T) {
    let bytes = encode(v);
    assert_eq!(decode::<T>(&bytes).as_ref(), Ok(v), "bytes {bytes:02x?}");
}

fn missing(field: &'static str) -> DecodeError {
    DecodeError::new(DecodeErrorKind::MissingField).in_field(field)
}

fn wrong_type(field: &'static str, expected: &'static str, found: u8) -> DecodeError {
    DecodeError::new(DecodeErrorKind::UnexpectedConstructor { expected, found }).in_field(field)
}

fn invalid(field: &'static str) -> DecodeError {
    DecodeError::new(DecodeErrorKind::InvalidValue).in_field(field)
}

fn unexpected_descriptor() -> DecodeError {
    DecodeError::new(DecodeErrorKind::UnexpectedDescriptor)
}

/// `0x00 0x53 code`: a described type with a smallulong descriptor.
fn described(code: u8, body: &[u8]) -> Vec<u8> {
    [&[0x00, 0x53, code][..], body].concat()
}

/// `0x00 0xa3 len name`: a described type with a symbolic descriptor.
fn named(name: &str, body: &[u8]) -> Vec<u8> {
    [&[0x00, 0xa3, name.len() as u8][..], name.as_bytes(), body].concat()
}

/// `0xc0 size count fields…`.
fn list8(fields: &[&[u8]]) -> Vec<u8> {
    let body = fields.concat();
    let size = u8::try_from(body.len() + 1).unwrap();
    [&[0xc0, size, fields.len() as u8][..], &body].concat()
}

/// `0xc1 size count keys-and-values…`.
fn map8(items: &[&[u8]]) -> Vec<u8> {
    assert!(items.len() % 2 == 0);
    let body = items.concat();
    let size = u8::try_from(body.len() + 1).unwrap();
    [&[0xc1, size, items.len() as u8][..], &body].concat()
}

fn str8(s: &str) -> Vec<u8> {
    [&[0xa1, s.len() as u8][..], s.as_bytes()].concat()
}

fn sym8(s: &str) -> Vec<u8> {
    [&[0xa3, s.len() as u8][..], s.as_bytes()].concat()
}

fn vbin8(b: &[u8]) -> Vec<u8> {
    [&[0xa0, b.len() as u8][..], b].concat()
}

/// `0xe0 size count 0xa3 (len symbol)…`: an array of sym8.
fn sym_array8(symbols: &[&str]) -> Vec<u8> {
    let body: Vec<u8> = symbols
        .iter()
        .flat_map(|s| [&[s.len() as u8][..], s.as_bytes()].concat())
        .collect();
    let size = u8::try_from(body.len() + 2).unwrap();
    [&[0xe0, size, symbols.len() as u8, 0xa3][..], &body].concat()
}

const NULL: &[u8] = &[0x40];
const TRUE: &[u8] = &[0x41];
const FALSE: &[u8] = &[0x42];
const LIST0: &[u8] = &[0x45];

/// Writes `v` with the widest constructor of its type everywhere, as some
/// peers do: list32, map32, array32, uint, ulong, str32, sym32, vbin32, and
/// `0x56 0x0?` for booleans. An independent encoder, so that decoding its
/// output checks the decoder against more than our own encoder.
fn put_wide(buf: &mut Vec<u8>, v: &Value) {
    fn sized(buf: &mut Vec<u8>, code: u8, count: Option<usize>, body: &[u8]) {
        buf.push(code);
        let count_len = if count.is_some() { 4 } else { 0 };
        buf.extend(u32::try_from(body.len() + count_len).unwrap().to_be_bytes());
        if let Some(count) = count {
            buf.extend(u32::try_from(count).unwrap().to_be_bytes());
        }
        buf.extend(body);
    }
    match v {
        Value::Boolean(b) => buf.extend([0x56, u8::from(*b)]),
        Value::Uint(n) => buf.extend([&[0x70][..], &n.to_be_bytes()].concat()),
        Value::Ulong(n) => buf.extend([&[0x80][..], &n.to_be_bytes()].concat()),
        Value::Int(n) => buf.extend([&[0x71][..], &n.to_be_bytes()].concat()),
        Value::Long(n) => buf.extend([&[0x81][..], &n.to_be_bytes()].concat()),
        Value::Binary(b) => sized(buf, 0xb0, None, b),
        Value::String(s) => sized(buf, 0xb1, None, s.as_bytes()),
        Value::Symbol(s) => sized(buf, 0xb3, None, s.as_str().as_bytes()),
        Value::List(items) => {
            let mut body = Vec::new();
            items.iter().for_each(|item| put_wide(&mut body, item));
            sized(buf, 0xd0, Some(items.len()), &body);
        }
        Value::Map(entries) => {
            let mut body = Vec::new();
            for (k, v) in entries {
                put_wide(&mut body, k);
                put_wide(&mut body, v);
            }
            sized(buf, 0xd1, Some(entries.len() * 2), &body);
        }
        Value::Array(array) if array.items().iter().all(|v| v.as_symbol().is_some()) => {
            let mut body = vec![0xb3];
            for s in array.items().iter().filter_map(Value::as_symbol) {
                body.extend(u32::try_from(s.as_str().len()).unwrap().to_be_bytes());
                body.extend(s.as_str().as_bytes());
            }
            sized(buf, 0xf0, Some(array.items().len()), &body);
        }
        Value::Described(d) => {
            buf.push(0x00);
            match &d.descriptor {
                Descriptor::Code(code) => put_wide(buf, &Value::Ulong(*code)),
                Descriptor::Name(name) => put_wide(buf, &Value::Symbol(name.clone())),
                Descriptor::Other(other) => put_wide(buf, other),
            }
            put_wide(buf, &d.value);
        }
        // Fixed-width scalars have one encoding; other arrays keep ours.
        other => buf.extend(encode(other)),
    }
}

/// `v`'s encoding, re-written with the widest constructors.
fn wide<T: Encode>(v: &T) -> Vec<u8> {
    let value: Value = decode(&encode(v)).unwrap();
    let mut buf = Vec::new();
    put_wide(&mut buf, &value);
    buf
}

#[track_caller]
fn assert_wide_form_decodes<T: Encode + Decode + PartialEq + Debug>(v: &T) {
    let bytes = wide(v);
    assert_ne!(
        bytes,
        encode(v),
        "the wide form should differ from the narrow one"
    );
    assert_eq!(
        decode::<T>(&bytes).as_ref(),
        Ok(v),
        "wide bytes {bytes:02x?}"
    );
}

// ---------------------------------------------------------------------------
// Fully populated samples.
// ---------------------------------------------------------------------------

fn an_error() -> Error {
    Error {
        condition: sym(condition::NOT_FOUND),
        description: Some("no such queue".into()),
        info: vec![(sym("node"), Value::from("orders"))],
    }
}

fn full_open() -> Open {
    Open {
        container_id: "sluice-test".into(),
        hostname: Some("broker.example".into()),
        max_frame_size: 65_536,
        channel_max: 255,
        idle_time_out: Some(30_000),
        outgoing_locales: vec![sym("en-US")],
        incoming_locales: vec![sym("en-US"), sym("fr-FR")],
        offered_capabilities: vec![sym("ANONYMOUS-RELAY")],
        desired_capabilities: vec![sym("DELAYED_DELIVERY")],
        properties: vec![(sym("product"), Value::from("sluice"))],
    }
}

fn full_begin() -> Begin {
    Begin {
        remote_channel: Some(3),
        next_outgoing_id: 1,
        incoming_window: 2048,
        outgoing_window: 4096,
        handle_max: 1023,
        offered_capabilities: vec![sym("a")],
        desired_capabilities: vec![sym("b")],
        properties: vec![(sym("k"), Value::Int(-5))],
    }
}

fn selector_filter() -> Annotations {
    vec![(
        Value::Symbol(sym("jms-selector")),
        Value::from(Described {
            descriptor: Descriptor::Name(sym("apache.org:selector-filter:string")),
            value: Value::from("color = 'red'"),
        }),
    )]
}

fn full_source() -> Source {
    Source {
        address: Some("orders".into()),
        durable: Some(TerminusDurability::UnsettledState),
        expiry_policy: Some(ExpiryPolicy::Never),
        timeout: 60,
        dynamic: true,
        dynamic_node_properties: vec![(sym("lifetime-policy"), Value::Null)],
        distribution_mode: Some(DistributionMode::Copy),
        filter: selector_filter(),
        default_outcome: Some(DeliveryState::Modified(Modified {
            delivery_failed: true,
            undeliverable_here: false,
            message_annotations: vec![],
        })),
        outcomes: vec![sym("amqp:accepted:list"), sym("amqp:released:list")],
        capabilities: vec![sym("queue")],
    }
}

fn full_target() -> Target {
    Target {
        address: Some("orders".into()),
        durable: Some(TerminusDurability::Configuration),
        expiry_policy: Some(ExpiryPolicy::ConnectionClose),
        timeout: 5,
        dynamic: true,
        dynamic_node_properties: vec![(sym("x"), Value::Boolean(true))],
        capabilities: vec![sym("topic")],
    }
}

/// An attach with only its mandatory fields and the spec's defaults.
fn attach(name: &str, handle: u32, role: Role) -> Attach {
    Attach {
        name: name.into(),
        handle,
        role,
        snd_settle_mode: SenderSettleMode::Mixed,
        rcv_settle_mode: ReceiverSettleMode::First,
        source: None,
        target: None,
        unsettled: vec![],
        incomplete_unsettled: false,
        initial_delivery_count: None,
        max_message_size: None,
        offered_capabilities: vec![],
        desired_capabilities: vec![],
        properties: vec![],
    }
}

fn full_attach() -> Attach {
    Attach {
        snd_settle_mode: SenderSettleMode::Settled,
        rcv_settle_mode: ReceiverSettleMode::Second,
        source: Some(full_source().into()),
        target: Some(full_target().into()),
        unsettled: vec![(
            Value::Binary(Bytes::from_static(b"tag-1")),
            Value::from(Described {
                descriptor: Descriptor::Code(0x24),
                value: Value::List(vec![]),
            }),
        )],
        incomplete_unsettled: true,
        initial_delivery_count: Some(7),
        max_message_size: Some(1 << 20),
        offered_capabilities: vec![sym("SHARED-SUBS")],
        desired_capabilities: vec![sym("DELAYED_DELIVERY")],
        properties: vec![(sym("paired"), Value::Boolean(true))],
        ..attach("orders-sender", 4, Role::Sender)
    }
}

fn full_flow() -> Flow {
    Flow {
        next_incoming_id: Some(1),
        incoming_window: 2048,
        next_outgoing_id: 5,
        outgoing_window: 2048,
        handle: Some(0),
        delivery_count: Some(0),
        link_credit: Some(100),
        available: Some(3),
        drain: true,
        echo: true,
        properties: vec![(sym("k"), Value::Uint(1))],
    }
}

fn full_transfer() -> Transfer {
    Transfer {
        handle: 1,
        delivery_id: Some(9),
        delivery_tag: Some(Bytes::from_static(&[0, 0, 0, 9])),
        message_format: Some(0),
        settled: Some(false),
        more: true,
        rcv_settle_mode: Some(ReceiverSettleMode::Second),
        state: Some(DeliveryState::Received(Received {
            section_number: 2,
            section_offset: 100,
        })),
        resume: true,
        aborted: true,
        batchable: true,
    }
}

fn full_disposition() -> Disposition {
    Disposition {
        role: Role::Receiver,
        first: 3,
        last: Some(5),
        settled: true,
        state: Some(DeliveryState::Rejected(Rejected {
            error: Some(an_error()),
        })),
        batchable: true,
    }
}

fn full_header() -> Header {
    Header {
        durable: true,
        priority: 9,
        ttl: Some(60_000),
        first_acquirer: true,
        delivery_count: 2,
    }
}

fn full_properties() -> Properties {
    Properties {
        message_id: Some(MessageId::Uuid([0x11; 16])),
        user_id: Some(Bytes::from_static(b"guest")),
        to: Some("orders".into()),
        subject: Some("new-order".into()),
        reply_to: Some("replies".into()),
        correlation_id: Some(MessageId::Ulong(42)),
        content_type: Some(sym("application/json")),
        content_encoding: Some(sym("gzip")),
        absolute_expiry_time: Some(Timestamp(1_700_000_060_000)),
        creation_time: Some(Timestamp(1_700_000_000_000)),
        group_id: Some("g".into()),
        group_sequence: Some(3),
        reply_to_group_id: Some("rg".into()),
    }
}

fn all_performatives() -> Vec<Performative> {
    vec![
        Performative::Open(full_open()),
        Performative::Begin(full_begin()),
        Performative::Attach(Box::new(full_attach())),
        Performative::Flow(full_flow()),
        Performative::Transfer(full_transfer()),
        Performative::Disposition(full_disposition()),
        Performative::Detach(Detach {
            handle: 4,
            closed: true,
            error: Some(an_error()),
        }),
        Performative::End(End {
            error: Some(an_error()),
        }),
        Performative::Close(Close {
            error: Some(an_error()),
        }),
    ]
}

fn all_sasl_frames() -> Vec<SaslFrame> {
    vec![
        SaslFrame::Mechanisms(SaslMechanisms {
            mechanisms: vec![sym("PLAIN"), sym("ANONYMOUS")],
        }),
        SaslFrame::Init(SaslInit {
            mechanism: sym("PLAIN"),
            initial_response: Some(Bytes::from_static(b"\0guest\0guest")),
            hostname: Some("localhost".into()),
        }),
        SaslFrame::Challenge(SaslChallenge {
            challenge: Bytes::from_static(b"nonce"),
        }),
        SaslFrame::Response(SaslResponse {
            response: Bytes::from_static(b"proof"),
        }),
        SaslFrame::Outcome(SaslOutcome {
            code: SaslCode::Auth,
            additional_data: Some(Bytes::from_static(b"why")),
        }),
    ]
}

fn all_delivery_states() -> Vec<DeliveryState> {
    vec![
        DeliveryState::Received(Received {
            section_number: 1,
            section_offset: 1 << 40,
        }),
        DeliveryState::Accepted(Accepted),
        DeliveryState::Rejected(Rejected {
            error: Some(an_error()),
        }),
        DeliveryState::Released(Released),
        DeliveryState::Modified(Modified {
            delivery_failed: true,
            undeliverable_here: true,
            message_annotations: vec![(Value::Symbol(sym("x-opt-reason")), Value::from("retry"))],
        }),
        DeliveryState::Declared(Declared {
            txn_id: Bytes::from_static(b"txn-1"),
        }),
        DeliveryState::Transactional(TransactionalState {
            txn_id: Bytes::from_static(b"txn-1"),
            outcome: Some(Box::new(DeliveryState::Accepted(Accepted))),
        }),
        DeliveryState::Transactional(TransactionalState {
            txn_id: Bytes::from_static(b"txn-2"),
            outcome: None,
        }),
    ]
}

fn full_message() -> Message {
    Message {
        sections: vec![
            Section::Header(full_header()),
            Section::DeliveryAnnotations(vec![(Value::Symbol(sym("x-opt-hop")), Value::Uint(1))]),
            Section::MessageAnnotations(vec![(
                Value::Symbol(sym("x-opt-partition-key")),
                Value::from("p1"),
            )]),
            Section::Properties(Box::new(full_properties())),
            Section::ApplicationProperties(vec![
                ("count".into(), Value::Int(256)),
                ("flag".into(), Value::Boolean(true)),
            ]),
            Section::Data(Bytes::from_static(b"hello")),
            Section::Data(Bytes::from_static(b"world")),
            Section::Footer(vec![(Value::Symbol(sym("x-opt-crc")), Value::Uint(7))]),
        ],
    }
}

// ---------------------------------------------------------------------------
// open (part 2 §2.7.1)
// ---------------------------------------------------------------------------

#[test]
fn open_decodes_from_spec_bytes() {
    let bytes = [
        &[0x00, 0x53, 0x10][..], // described, descriptor smallulong 0x10: open
        &[0xc0, 29, 5],          // list8, size 29 = count byte + 28, 5 fields
        &[0xa1, 2],              // container-id: str8, 2 bytes
        b"c1",                   //
        &[0xa1, 9],              // hostname: str8, 9 bytes
        b"localhost",            //
        &[0x70, 0x00, 0x01, 0x00, 0x00], // max-frame-size: uint 65536
        &[0x60, 0x00, 0xff],     // channel-max: ushort 255
        &[0x70, 0x00, 0x00, 0x75, 0x30], // idle-time-out: uint 30000 ms
    ]
    .concat();
    let expected = Open {
        hostname: Some("localhost".into()),
        max_frame_size: 65_536,
        channel_max: 255,
        idle_time_out: Some(30_000),
        ..Open::new("c1")
    };
    assert_eq!(decode::<Open>(&bytes), Ok(expected.clone()));
    assert_eq!(
        decode::<Performative>(&bytes),
        Ok(Performative::Open(expected))
    );
}

#[test]
fn open_with_defaults_encodes_only_the_container_id() {
    let bytes = encode(&Open::new("c1"));
    assert_eq!(bytes, [0x00, 0x53, 0x10, 0xc0, 5, 1, 0xa1, 2, b'c', b'1']);
}

#[test]
fn open_omitted_trailing_fields_take_the_spec_defaults() {
    let open: Open = decode(&described(0x10, &list8(&[&str8("c1")]))).unwrap();
    assert_eq!(
        open.max_frame_size,
        u32::MAX,
        "max-frame-size defaults to 4294967295"
    );
    assert_eq!(open.channel_max, u16::MAX, "channel-max defaults to 65535");
    assert_eq!(open.idle_time_out, None);
    assert_eq!(open, Open::new("c1"));
}

#[test]
fn open_null_fields_take_the_spec_defaults() {
    let bytes = described(
        0x10,
        &list8(&[&str8("c1"), NULL, NULL, NULL, NULL, NULL, NULL]),
    );
    assert_eq!(decode::<Open>(&bytes), Ok(Open::new("c1")));
}

#[test]
fn open_round_trips_with_every_field_set() {
    assert_round_trip(&full_open());
    assert_round_trip(&Open::new("c1"));
}

#[test]
fn open_accepts_its_symbolic_descriptor() {
    let bytes = named("amqp:open:list", &list8(&[&str8("c1")]));
    assert_eq!(decode::<Open>(&bytes), Ok(Open::new("c1")));
    assert_eq!(
        decode::<Performative>(&bytes),
        Ok(Performative::Open(Open::new("c1")))
    );
}

#[test]
fn open_requires_a_container_id() {
    assert_eq!(
        decode::<Open>(&described(0x10, LIST0)),
        Err(missing("container-id"))
    );
    assert_eq!(
        decode::<Open>(&described(0x10, &list8(&[NULL]))),
        Err(missing("container-id"))
    );
    assert_eq!(
        decode::<Performative>(&described(0x10, LIST0)),
        Err(missing("container-id"))
    );
}

#[test]
fn open_rejects_fields_of_the_wrong_type() {
    let open = |fields: &[&[u8]]| decode::<Open>(&described(0x10, &list8(fields)));
    assert_eq!(
        open(&[&sym8("c1")]),
        Err(wrong_type("container-id", "string", 0xa3))
    );
    assert_eq!(
        open(&[&str8("c1"), NULL, &[0x53, 1]]),
        Err(wrong_type("max-frame-size", "uint", 0x53))
    );
    assert_eq!(
        open(&[&str8("c1"), NULL, NULL, &[0x52, 1]]),
        Err(wrong_type("channel-max", "ushort", 0x52))
    );
    assert_eq!(
        open(&[&str8("c1"), NULL, NULL, NULL, NULL, &str8("en")]),
        Err(wrong_type(
            "outgoing-locales",
            "symbol or symbol array",
            0xa1
        ))
    );
}

#[test]
fn open_decodes_fields_written_with_wider_constructors() {
    assert_wide_form_decodes(&full_open());
    assert_wide_form_decodes(&Open::new("c1"));
}

#[test]
fn open_accepts_a_single_symbol_for_a_multiple_field() {
    let bytes = described(
        0x10,
        &list8(&[
            &str8("c1"),
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            &sym8("ANONYMOUS-RELAY"),
        ]),
    );
    let open: Open = decode(&bytes).unwrap();
    assert_eq!(open.offered_capabilities, [sym("ANONYMOUS-RELAY")]);
}

#[test]
fn extra_null_fields_are_ignored_but_extra_values_are_refused() {
    let c1 = str8("c1");
    let mut fields: Vec<&[u8]> = vec![&c1];
    fields.resize(10, NULL);
    let open_with = |extra: &[u8]| {
        let mut fields = fields.clone();
        fields.push(extra);
        decode::<Open>(&described(0x10, &list8(&fields)))
    };
    assert_eq!(open_with(NULL), Ok(Open::new("c1")));
    assert_eq!(
        open_with(&[0x52, 1]).map_err(|e| e.kind),
        Err(DecodeErrorKind::TrailingBytes)
    );
}

#[test]
fn decode_errors_name_the_field_in_their_message() {
    let err = decode::<Open>(&described(0x10, LIST0)).unwrap_err();
    assert_eq!(err.to_string(), "container-id: mandatory field is absent");
}

// ---------------------------------------------------------------------------
// begin (part 2 §2.7.2)
// ---------------------------------------------------------------------------

#[test]
fn begin_decodes_from_spec_bytes() {
    let bytes = [
        &[0x00, 0x53, 0x11][..],         // begin
        &[0xc0, 17, 5],                  // list8, 16 bytes of fields, 5 fields
        &[0x60, 0x00, 0x07],             // remote-channel: ushort 7
        &[0x43],                         // next-outgoing-id: uint0
        &[0x70, 0x00, 0x00, 0x08, 0x00], // incoming-window: uint 2048
        &[0x52, 0xff],                   // outgoing-window: smalluint 255
        &[0x70, 0x00, 0x00, 0x03, 0xff], // handle-max: uint 1023
    ]
    .concat();
    let expected = Begin {
        remote_channel: Some(7),
        next_outgoing_id: 0,
        incoming_window: 2048,
        outgoing_window: 255,
        handle_max: 1023,
        offered_capabilities: vec![],
        desired_capabilities: vec![],
        properties: vec![],
    };
    assert_eq!(
        decode::<Performative>(&bytes),
        Ok(Performative::Begin(expected))
    );
}

#[test]
fn begin_omitted_handle_max_defaults_to_the_largest_handle() {
    let bytes = described(0x11, &list8(&[NULL, &[0x43], &[0x43], &[0x43]]));
    let begin: Begin = decode(&bytes).unwrap();
    assert_eq!(begin.handle_max, u32::MAX);
    assert_eq!(begin.remote_channel, None);
    assert_eq!(encode(&begin), bytes, "defaults are trimmed on encode");
}

#[test]
fn begin_round_trips() {
    assert_round_trip(&full_begin());
    assert_wide_form_decodes(&full_begin());
    assert_round_trip(&Begin {
        handle_max: u32::MAX,
        remote_channel: None,
        ..full_begin()
    });
}

#[test]
fn begin_accepts_its_symbolic_descriptor() {
    let bytes = named(
        "amqp:begin:list",
        &list8(&[NULL, &[0x43], &[0x43], &[0x43]]),
    );
    assert!(matches!(
        decode::<Performative>(&bytes),
        Ok(Performative::Begin(_))
    ));
}

#[test]
fn begin_requires_ids_and_windows() {
    let begin = |fields: &[&[u8]]| decode::<Begin>(&described(0x11, &list8(fields)));
    assert_eq!(
        begin(&[NULL, NULL, &[0x43], &[0x43]]),
        Err(missing("next-outgoing-id"))
    );
    assert_eq!(
        begin(&[NULL, &[0x43], NULL, &[0x43]]),
        Err(missing("incoming-window"))
    );
    assert_eq!(
        begin(&[NULL, &[0x43], &[0x43]]),
        Err(missing("outgoing-window"))
    );
}

#[test]
fn begin_rejects_a_remote_channel_that_is_not_a_ushort() {
    let bytes = described(0x11, &list8(&[&[0x52, 1], &[0x43], &[0x43], &[0x43]]));
    assert_eq!(
        decode::<Begin>(&bytes),
        Err(wrong_type("remote-channel", "ushort", 0x52))
    );
}

// ---------------------------------------------------------------------------
// attach (part 2 §2.7.3), with source (part 3 §3.5.3) and target (§3.5.4)
// ---------------------------------------------------------------------------

#[test]
fn attach_decodes_from_spec_bytes() {
    let bytes = [
        &[0x00, 0x53, 0x12][..],                        // attach
        &[0xc0, 40, 11],                                // list8, 39 bytes of fields, 11 fields
        &[0xa1, 6],                                     // name: str8
        b"recv-1",                                      //
        &[0x43],                                        // handle: uint0
        &[0x41],                                        // role: true = receiver
        &[0x50, 0x01],                                  // snd-settle-mode: ubyte 1 = settled
        &[0x50, 0x01],                                  // rcv-settle-mode: ubyte 1 = second
        &[0x00, 0x53, 0x28, 0xc0, 4, 1, 0xa1, 1, b'q'], // source {address: "q"}
        &[0x00, 0x53, 0x29, 0x45],                      // target: no fields
        &[0x40],                                        // unsettled: null
        &[0x42],                                        // incomplete-unsettled: false
        &[0x40],                                        // initial-delivery-count: null
        &[0x80, 0, 0, 0, 0, 0, 0x10, 0, 0],             // max-message-size: ulong 1 MiB
    ]
    .concat();
    let expected = Attach {
        snd_settle_mode: SenderSettleMode::Settled,
        rcv_settle_mode: ReceiverSettleMode::Second,
        source: Some(
            Source {
                address: Some("q".into()),
                ..Source::default()
            }
            .into(),
        ),
        target: Some(Target::default().into()),
        max_message_size: Some(1 << 20),
        ..attach("recv-1", 0, Role::Receiver)
    };
    assert_eq!(
        decode::<Performative>(&bytes),
        Ok(Performative::Attach(Box::new(expected)))
    );
}

#[test]
fn attach_with_only_mandatory_fields_takes_the_spec_defaults() {
    let bytes = described(0x12, &list8(&[&str8("l"), &[0x52, 2], FALSE]));
    let decoded: Attach = decode(&bytes).unwrap();
    assert_eq!(decoded.snd_settle_mode, SenderSettleMode::Mixed);
    assert_eq!(decoded.rcv_settle_mode, ReceiverSettleMode::First);
    assert_eq!(decoded, attach("l", 2, Role::Sender));
    assert_eq!(encode(&decoded), bytes, "defaults are trimmed on encode");
}

#[test]
fn attach_round_trips() {
    assert_round_trip(&full_attach());
    assert_round_trip(&attach("l", 0, Role::Receiver));
    assert_wide_form_decodes(&full_attach());
}

#[test]
fn attach_accepts_its_symbolic_descriptor() {
    let bytes = named("amqp:attach:list", &list8(&[&str8("l"), &[0x43], TRUE]));
    assert_eq!(
        decode::<Performative>(&bytes),
        Ok(Performative::Attach(Box::new(attach(
            "l",
            0,
            Role::Receiver
        ))))
    );
}

#[test]
fn attach_zero_max_message_size_means_no_limit() {
    let bytes = described(
        0x12,
        &list8(&[
            &str8("l"),
            &[0x43],
            TRUE,
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            &[0x44],
        ]),
    );
    assert_eq!(decode::<Attach>(&bytes).unwrap().max_message_size, None);
}

#[test]
fn attach_requires_name_handle_and_role() {
    let attach = |fields: &[&[u8]]| decode::<Attach>(&described(0x12, &list8(fields)));
    assert_eq!(attach(&[NULL, &[0x43], TRUE]), Err(missing("name")));
    assert_eq!(attach(&[&str8("l"), NULL, TRUE]), Err(missing("handle")));
    assert_eq!(attach(&[&str8("l"), &[0x43]]), Err(missing("role")));
}

#[test]
fn attach_rejects_wrong_types_and_out_of_range_modes() {
    let attach = |fields: &[&[u8]]| decode::<Attach>(&described(0x12, &list8(fields)));
    assert_eq!(
        attach(&[&str8("l"), &[0x43], &[0x50, 1]]),
        Err(wrong_type("role", "boolean", 0x50))
    );
    assert_eq!(
        attach(&[&str8("l"), &[0x43], TRUE, &[0x50, 3]]),
        Err(invalid("snd-settle-mode"))
    );
    assert_eq!(
        attach(&[&str8("l"), &[0x43], TRUE, NULL, &[0x50, 2]]),
        Err(invalid("rcv-settle-mode"))
    );
    // A target where the source belongs: a source of a kind the broker
    // does not know, kept so that the link (not the connection) is refused.
    let odd = attach(&[
        &str8("l"),
        &[0x43],
        TRUE,
        NULL,
        NULL,
        &described(0x29, LIST0),
    ])
    .expect("an attach with a source of an unknown kind decodes");
    assert!(
        matches!(odd.source, Some(AttachSource::Unsupported(_))),
        "{odd:?}"
    );
}

#[test]
fn attach_errors_inside_a_source_name_the_innermost_field() {
    let source = described(0x28, &list8(&[&str8("q"), &[0x52, 3]]));
    let bytes = described(
        0x12,
        &list8(&[&str8("l"), &[0x43], TRUE, NULL, NULL, &source]),
    );
    assert_eq!(decode::<Attach>(&bytes), Err(invalid("durable")));
}

#[test]
fn source_with_a_selector_filter_decodes_from_spec_bytes() {
    let selector = named("apache.org:selector-filter:string", &str8("color = 'red'"));
    let bytes = described(
        0x28,
        &list8(&[
            &str8("orders"),                                            // address
            &[0x52, 2],                                                 // durable: unsettled-state
            &sym8("never"),                                             // expiry-policy
            &[0x52, 60],                                                // timeout: 60 s
            TRUE,                                                       // dynamic
            NULL,                                                       // dynamic-node-properties
            &sym8("copy"),                                              // distribution-mode
            &map8(&[&sym8("jms-selector"), &selector]),                 // filter
            &described(0x27, &list8(&[TRUE])),                          // default-outcome: modified
            &sym_array8(&["amqp:accepted:list", "amqp:released:list"]), // outcomes
            &sym8("queue"), // capabilities: one symbol, not an array
        ]),
    );
    let expected = Source {
        dynamic_node_properties: vec![],
        ..full_source()
    };
    assert_eq!(decode::<Source>(&bytes), Ok(expected));
}

#[test]
fn source_filter_accepts_the_numeric_selector_descriptor() {
    // apache.org:selector-filter:string is 0x0000468C:0x00000004.
    let selector = [
        &[0x00, 0x80, 0x00, 0x00, 0x46, 0x8c, 0x00, 0x00, 0x00, 0x04][..],
        &str8("a = 1"),
    ]
    .concat();
    let bytes = described(
        0x28,
        &list8(&[
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            &map8(&[&sym8("f"), &selector]),
        ]),
    );
    let source: Source = decode(&bytes).unwrap();
    assert_eq!(
        source.filter,
        [(
            Value::Symbol(sym("f")),
            Value::from(Described {
                descriptor: Descriptor::Code(0x0000_468c_0000_0004),
                value: Value::from("a = 1"),
            })
        )]
    );
}

#[test]
fn source_and_target_defaults_encode_as_empty_lists() {
    assert_eq!(encode(&Source::default()), [0x00, 0x53, 0x28, 0x45]);
    assert_eq!(encode(&Target::default()), [0x00, 0x53, 0x29, 0x45]);
    assert_eq!(
        decode::<Source>(&described(0x28, LIST0)),
        Ok(Source::default())
    );
}

#[test]
fn source_and_target_round_trip() {
    assert_round_trip(&full_source());
    assert_round_trip(&full_target());
    assert_wide_form_decodes(&full_source());
    assert_wide_form_decodes(&full_target());
}

#[test]
fn source_and_target_accept_their_symbolic_descriptors() {
    assert_eq!(
        decode::<Source>(&named("amqp:source:list", LIST0)),
        Ok(Source::default())
    );
    assert_eq!(
        decode::<Target>(&named("amqp:target:list", LIST0)),
        Ok(Target::default())
    );
}

#[test]
fn target_decodes_from_spec_bytes() {
    let bytes = described(
        0x29,
        &list8(&[
            &str8("orders"),
            &[0x52, 1],                // durable: configuration
            &sym8("connection-close"), // expiry-policy
            &[0x52, 5],                // timeout
            TRUE,                      // dynamic
            &map8(&[&sym8("x"), TRUE]),
            &sym_array8(&["topic"]),
        ]),
    );
    assert_eq!(decode::<Target>(&bytes), Ok(full_target()));
}

#[test]
fn termini_reject_unknown_policies() {
    let target = |fields: &[&[u8]]| decode::<Target>(&described(0x29, &list8(fields)));
    assert_eq!(
        target(&[NULL, NULL, &sym8("sometimes")]),
        Err(invalid("expiry-policy"))
    );
    assert_eq!(
        target(&[NULL, NULL, &str8("never")]),
        Err(wrong_type("expiry-policy", "symbol", 0xa1))
    );
    assert_eq!(target(&[NULL, &[0x52, 3]]), Err(invalid("durable")));
    let source = |fields: &[&[u8]]| decode::<Source>(&described(0x28, &list8(fields)));
    assert_eq!(
        source(&[NULL, NULL, NULL, NULL, NULL, NULL, &sym8("steal")]),
        Err(invalid("distribution-mode"))
    );
}

#[test]
fn termini_reject_unknown_descriptors() {
    assert_eq!(
        decode::<Target>(&described(0x28, LIST0)),
        Err(unexpected_descriptor())
    );
    assert_eq!(
        decode::<Source>(&named("amqp:target:list", LIST0)),
        Err(unexpected_descriptor())
    );
}

// ---------------------------------------------------------------------------
// flow (part 2 §2.7.4)
// ---------------------------------------------------------------------------

#[test]
fn flow_decodes_from_spec_bytes() {
    let bytes = [
        &[0x00, 0x53, 0x13][..],         // flow
        &[0xc0, 23, 10],                 // list8, 22 bytes of fields, 10 fields
        &[0x52, 0x01],                   // next-incoming-id: 1
        &[0x70, 0x00, 0x00, 0x08, 0x00], // incoming-window: 2048
        &[0x52, 0x05],                   // next-outgoing-id: 5
        &[0x70, 0x00, 0x00, 0x08, 0x00], // outgoing-window: 2048
        &[0x43],                         // handle: 0
        &[0x43],                         // delivery-count: 0
        &[0x52, 0x64],                   // link-credit: 100
        &[0x52, 0x03],                   // available: 3
        &[0x41],                         // drain: true
        &[0x42],                         // echo: false
    ]
    .concat();
    let expected = Flow {
        echo: false,
        properties: vec![],
        ..full_flow()
    };
    assert_eq!(
        decode::<Performative>(&bytes),
        Ok(Performative::Flow(expected))
    );
}

#[test]
fn flow_for_the_session_only_takes_defaults() {
    let bytes = described(0x13, &list8(&[NULL, &[0x43], &[0x43], &[0x43]]));
    assert_eq!(decode::<Flow>(&bytes), Ok(Flow::default()));
    assert_eq!(encode(&Flow::default()), bytes);
}

#[test]
fn flow_round_trips() {
    assert_round_trip(&full_flow());
    assert_round_trip(&Flow::default());
    assert_wide_form_decodes(&full_flow());
}

#[test]
fn flow_accepts_its_symbolic_descriptor() {
    let bytes = named("amqp:flow:list", &list8(&[NULL, &[0x43], &[0x43], &[0x43]]));
    assert_eq!(
        decode::<Performative>(&bytes),
        Ok(Performative::Flow(Flow::default()))
    );
}

#[test]
fn flow_requires_windows_and_next_outgoing_id() {
    let flow = |fields: &[&[u8]]| decode::<Flow>(&described(0x13, &list8(fields)));
    assert_eq!(
        flow(&[NULL, NULL, &[0x43], &[0x43]]),
        Err(missing("incoming-window"))
    );
    assert_eq!(
        flow(&[NULL, &[0x43], NULL, &[0x43]]),
        Err(missing("next-outgoing-id"))
    );
    assert_eq!(
        flow(&[NULL, &[0x43], &[0x43]]),
        Err(missing("outgoing-window"))
    );
}

#[test]
fn flow_rejects_a_drain_that_is_not_a_boolean() {
    let bytes = described(
        0x13,
        &list8(&[
            NULL,
            &[0x43],
            &[0x43],
            &[0x43],
            NULL,
            NULL,
            NULL,
            NULL,
            &[0x43],
        ]),
    );
    assert_eq!(
        decode::<Flow>(&bytes),
        Err(wrong_type("drain", "boolean", 0x43))
    );
}

// ---------------------------------------------------------------------------
// transfer (part 2 §2.7.5)
// ---------------------------------------------------------------------------

#[test]
fn transfer_decodes_from_spec_bytes() {
    let bytes = [
        &[0x00, 0x53, 0x14][..],   // transfer
        &[0xc0, 18, 11],           // list8, 17 bytes of fields, 11 fields
        &[0x43],                   // handle: 0
        &[0x43],                   // delivery-id: 0
        &[0xa0, 0x01, 0x07],       // delivery-tag: vbin8 [7]
        &[0x43],                   // message-format: 0
        &[0x41],                   // settled: true
        &[0x42],                   // more: false
        &[0x50, 0x00],             // rcv-settle-mode: first
        &[0x00, 0x53, 0x24, 0x45], // state: accepted
        &[0x42],                   // resume: false
        &[0x42],                   // aborted: false
        &[0x41],                   // batchable: true
    ]
    .concat();
    let expected = Transfer {
        handle: 0,
        delivery_id: Some(0),
        delivery_tag: Some(Bytes::from_static(&[7])),
        message_format: Some(0),
        settled: Some(true),
        more: false,
        rcv_settle_mode: Some(ReceiverSettleMode::First),
        state: Some(DeliveryState::Accepted(Accepted)),
        resume: false,
        aborted: false,
        batchable: true,
    };
    assert_eq!(
        decode::<Performative>(&bytes),
        Ok(Performative::Transfer(expected))
    );
}

#[test]
fn transfer_continuation_needs_only_a_handle() {
    let bytes = described(0x14, &list8(&[&[0x52, 1]]));
    assert_eq!(
        decode::<Transfer>(&bytes),
        Ok(Transfer {
            handle: 1,
            ..Transfer::default()
        })
    );
}

#[test]
fn transfer_round_trips() {
    assert_round_trip(&full_transfer());
    assert_round_trip(&Transfer::default());
    assert_wide_form_decodes(&full_transfer());
}

#[test]
fn transfer_accepts_its_symbolic_descriptor() {
    let bytes = named("amqp:transfer:list", &list8(&[&[0x43]]));
    assert_eq!(
        decode::<Performative>(&bytes),
        Ok(Performative::Transfer(Transfer::default()))
    );
}

#[test]
fn transfer_requires_a_handle() {
    assert_eq!(
        decode::<Transfer>(&described(0x14, LIST0)),
        Err(missing("handle"))
    );
    assert_eq!(
        decode::<Transfer>(&described(0x14, &list8(&[NULL]))),
        Err(missing("handle"))
    );
}

#[test]
fn transfer_rejects_a_delivery_tag_that_is_not_binary() {
    let bytes = described(0x14, &list8(&[&[0x43], &[0x43], &str8("t")]));
    assert_eq!(
        decode::<Transfer>(&bytes),
        Err(wrong_type("delivery-tag", "binary", 0xa1))
    );
}

#[test]
fn transfer_rejects_a_state_that_is_not_a_delivery_state() {
    let bytes = described(
        0x14,
        &list8(&[
            &[0x43],
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            &described(0x28, LIST0),
        ]),
    );
    assert_eq!(
        decode::<Transfer>(&bytes),
        Err(unexpected_descriptor().in_field("state"))
    );
}

// ---------------------------------------------------------------------------
// disposition (part 2 §2.7.6)
// ---------------------------------------------------------------------------

#[test]
fn disposition_decodes_from_spec_bytes() {
    let bytes = [
        &[0x00, 0x53, 0x15][..],   // disposition
        &[0xc0, 12, 6],            // list8, 11 bytes of fields, 6 fields
        &[0x41],                   // role: receiver
        &[0x52, 0x03],             // first: 3
        &[0x52, 0x05],             // last: 5
        &[0x41],                   // settled: true
        &[0x00, 0x53, 0x24, 0x45], // state: accepted
        &[0x42],                   // batchable: false
    ]
    .concat();
    let expected = Disposition {
        role: Role::Receiver,
        first: 3,
        last: Some(5),
        settled: true,
        state: Some(DeliveryState::Accepted(Accepted)),
        batchable: false,
    };
    assert_eq!(
        decode::<Performative>(&bytes),
        Ok(Performative::Disposition(expected))
    );
}

#[test]
fn disposition_with_only_mandatory_fields_takes_defaults() {
    let bytes = described(0x15, &list8(&[FALSE, &[0x52, 9]]));
    let expected = Disposition {
        role: Role::Sender,
        first: 9,
        last: None,
        settled: false,
        state: None,
        batchable: false,
    };
    assert_eq!(decode::<Disposition>(&bytes), Ok(expected.clone()));
    assert_eq!(encode(&expected), bytes);
}

#[test]
fn disposition_round_trips() {
    assert_round_trip(&full_disposition());
    assert_wide_form_decodes(&full_disposition());
}

#[test]
fn disposition_accepts_its_symbolic_descriptor() {
    let bytes = named("amqp:disposition:list", &list8(&[TRUE, &[0x43]]));
    assert!(matches!(
        decode::<Performative>(&bytes),
        Ok(Performative::Disposition(_))
    ));
}

#[test]
fn disposition_requires_role_and_first() {
    let disposition = |fields: &[&[u8]]| decode::<Disposition>(&described(0x15, &list8(fields)));
    assert_eq!(disposition(&[NULL, &[0x43]]), Err(missing("role")));
    assert_eq!(disposition(&[TRUE]), Err(missing("first")));
    assert_eq!(
        disposition(&[TRUE, &[0x53, 1]]),
        Err(wrong_type("first", "uint", 0x53))
    );
}

// ---------------------------------------------------------------------------
// detach, end, close (part 2 §2.7.7 – §2.7.9) and error (§2.8.14)
// ---------------------------------------------------------------------------

#[test]
fn detach_decodes_from_spec_bytes() {
    let bytes = [
        &[0x00, 0x53, 0x16][..], // detach
        &[0xc0, 32, 3],          // list8, 31 bytes of fields, 3 fields
        &[0x52, 0x02],           // handle: 2
        &[0x41],                 // closed: true
        &[0x00, 0x53, 0x1d],     // error
        &[0xc0, 23, 2],          // list8, 22 bytes of fields, 2 fields
        &[0xa3, 14],             // condition: sym8
        b"amqp:not-found",       //
        &[0xa1, 4],              // description: str8
        b"gone",                 //
    ]
    .concat();
    let expected = Detach {
        handle: 2,
        closed: true,
        error: Some(Error {
            info: vec![],
            ..Error::new(condition::NOT_FOUND, "gone")
        }),
    };
    assert_eq!(
        decode::<Performative>(&bytes),
        Ok(Performative::Detach(expected))
    );
}

#[test]
fn detach_round_trips() {
    let full = Detach {
        handle: 4,
        closed: true,
        error: Some(an_error()),
    };
    assert_round_trip(&full);
    assert_wide_form_decodes(&full);
    assert_round_trip(&Detach::default());
    assert_eq!(
        encode(&Detach::default()),
        [0x00, 0x53, 0x16, 0xc0, 2, 1, 0x43]
    );
}

#[test]
fn detach_requires_a_handle() {
    assert_eq!(
        decode::<Detach>(&described(0x16, LIST0)),
        Err(missing("handle"))
    );
}

#[test]
fn detach_accepts_its_symbolic_descriptor() {
    let bytes = named("amqp:detach:list", &list8(&[&[0x43], TRUE]));
    assert_eq!(
        decode::<Performative>(&bytes),
        Ok(Performative::Detach(Detach {
            handle: 0,
            closed: true,
            error: None
        }))
    );
}

#[test]
fn end_and_close_without_error_are_empty_lists() {
    assert_eq!(encode(&End::default()), [0x00, 0x53, 0x17, 0x45]);
    assert_eq!(encode(&Close::default()), [0x00, 0x53, 0x18, 0x45]);
    assert_eq!(
        decode::<Performative>(&[0x00, 0x53, 0x17, 0x45]),
        Ok(Performative::End(End::default()))
    );
    assert_eq!(
        decode::<Performative>(&[0x00, 0x53, 0x18, 0x45]),
        Ok(Performative::Close(Close::default()))
    );
    // An explicit null error, in a list8, is the same.
    assert_eq!(
        decode::<Close>(&[0x00, 0x53, 0x18, 0xc0, 2, 1, 0x40]),
        Ok(Close::default())
    );
}

#[test]
fn end_and_close_decode_their_error_from_spec_bytes() {
    let error = described(
        0x1d,
        &list8(&[
            &sym8("amqp:not-found"),
            &str8("no such queue"),
            &map8(&[&sym8("node"), &str8("orders")]),
        ]),
    );
    let expected = Some(an_error());
    assert_eq!(
        decode::<End>(&described(0x17, &list8(&[&error]))),
        Ok(End {
            error: expected.clone()
        })
    );
    assert_eq!(
        decode::<Close>(&described(0x18, &list8(&[&error]))),
        Ok(Close { error: expected })
    );
}

#[test]
fn end_and_close_round_trip() {
    let end = End {
        error: Some(an_error()),
    };
    let close = Close {
        error: Some(an_error()),
    };
    assert_round_trip(&end);
    assert_round_trip(&close);
    assert_wide_form_decodes(&end);
    assert_wide_form_decodes(&close);
}

#[test]
fn end_and_close_accept_their_symbolic_descriptors() {
    assert_eq!(
        decode::<Performative>(&named("amqp:end:list", LIST0)),
        Ok(Performative::End(End::default()))
    );
    assert_eq!(
        decode::<Performative>(&named("amqp:close:list", LIST0)),
        Ok(Performative::Close(Close::default()))
    );
}

#[test]
fn errors_require_a_condition_symbol() {
    let close = |error: &[u8]| decode::<Close>(&described(0x18, &list8(&[error])));
    assert_eq!(close(&described(0x1d, LIST0)), Err(missing("condition")));
    assert_eq!(
        close(&described(0x1d, &list8(&[&str8("amqp:not-found")]))),
        Err(wrong_type("condition", "symbol", 0xa1))
    );
    assert_eq!(
        close(&described(0x1d, &list8(&[&sym8("c"), &sym8("d")]))),
        Err(wrong_type("description", "string", 0xa3))
    );
    // Something other than an error where the error belongs.
    assert_eq!(
        close(&described(0x24, LIST0)),
        Err(unexpected_descriptor().in_field("error"))
    );
}

// ---------------------------------------------------------------------------
// Performative dispatch.
// ---------------------------------------------------------------------------

#[test]
fn every_performative_round_trips_through_the_dispatcher() {
    for performative in all_performatives() {
        assert_round_trip(&performative);
        assert_wide_form_decodes(&performative);
    }
}

#[test]
fn performatives_use_descriptors_0x10_to_0x18() {
    let codes: Vec<u8> = all_performatives()
        .iter()
        .map(|p| {
            let bytes = encode(p);
            assert_eq!(bytes[..2], [0x00, 0x53], "{}", p.name());
            bytes[2]
        })
        .collect();
    assert_eq!(
        codes,
        [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
    );
}

#[test]
fn unknown_performative_descriptors_are_rejected() {
    let perf = |bytes: &[u8]| decode::<Performative>(bytes);
    assert_eq!(perf(&described(0x19, LIST0)), Err(unexpected_descriptor()));
    assert_eq!(perf(&described(0x0f, LIST0)), Err(unexpected_descriptor()));
    assert_eq!(
        perf(&described(0x41, LIST0)),
        Err(unexpected_descriptor()),
        "sasl-init"
    );
    assert_eq!(
        perf(&named("amqp:opem:list", LIST0)),
        Err(unexpected_descriptor())
    );
    // A descriptor that is neither a ulong nor a symbol.
    assert_eq!(
        perf(&[0x00, 0xa1, 1, b'x', 0x45]),
        Err(unexpected_descriptor())
    );
    // The 64-bit code with a non-zero domain is not the spec's open.
    assert_eq!(
        perf(&[0x00, 0x80, 0, 0, 0, 1, 0, 0, 0, 0x10, 0x45]),
        Err(unexpected_descriptor())
    );
    // Not a described type at all.
    assert_eq!(
        perf(&[0x45]),
        Err(DecodeError::new(DecodeErrorKind::UnexpectedConstructor {
            expected: "described type",
            found: 0x45
        }))
    );
    // A typed decoder rejects its siblings.
    assert_eq!(
        decode::<Open>(&described(0x11, LIST0)),
        Err(unexpected_descriptor())
    );
}

#[test]
fn performative_bodies_must_be_lists() {
    let bytes = described(0x10, &str8("c1"));
    assert_eq!(
        decode::<Performative>(&bytes),
        Err(DecodeError::new(DecodeErrorKind::UnexpectedConstructor {
            expected: "list",
            found: 0xa1
        }))
    );
}

#[test]
fn every_truncation_of_a_performative_fails_cleanly() {
    for performative in all_performatives() {
        let bytes = encode(&performative);
        for len in 0..bytes.len() {
            assert!(
                decode::<Performative>(&bytes[..len]).is_err(),
                "{} cut to {len} bytes",
                performative.name()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// SASL (part 5 §5.3)
// ---------------------------------------------------------------------------

#[test]
fn sasl_mechanisms_decodes_from_spec_bytes() {
    let bytes = [
        &[0x00, 0x53, 0x40][..], // sasl-mechanisms
        &[0xc0, 21, 1],          // list8, 20 bytes of fields, 1 field
        &[0xe0, 18, 2, 0xa3],    // array8 of sym8, 17 bytes after the size, 2 elements
        &[5],
        b"PLAIN",
        &[9],
        b"ANONYMOUS",
    ]
    .concat();
    assert_eq!(
        decode::<SaslFrame>(&bytes),
        Ok(all_sasl_frames()[0].clone())
    );
}

#[test]
fn sasl_mechanisms_accepts_a_single_symbol() {
    let bytes = described(0x40, &list8(&[&sym8("ANONYMOUS")]));
    assert_eq!(
        decode::<SaslMechanisms>(&bytes),
        Ok(SaslMechanisms {
            mechanisms: vec![sym("ANONYMOUS")]
        })
    );
}

#[test]
fn sasl_mechanisms_requires_at_least_one_mechanism() {
    let missing = Err(missing("sasl-server-mechanisms"));
    assert_eq!(decode::<SaslMechanisms>(&described(0x40, LIST0)), missing);
    assert_eq!(
        decode::<SaslMechanisms>(&described(0x40, &list8(&[NULL]))),
        missing
    );
    let empty_array = [0xe0, 2, 0, 0xa3];
    assert_eq!(
        decode::<SaslMechanisms>(&described(0x40, &list8(&[&empty_array]))),
        missing
    );
}

#[test]
fn sasl_init_decodes_from_spec_bytes() {
    let bytes = [
        &[0x00, 0x53, 0x41][..], // sasl-init
        &[0xc0, 33, 3],          // list8, 32 bytes of fields, 3 fields
        &[0xa3, 5],              // mechanism: sym8
        b"PLAIN",
        &[0xa0, 12], // initial-response: vbin8, authzid \0 authcid \0 passwd
        b"\0guest\0guest",
        &[0xa1, 9], // hostname: str8
        b"localhost",
    ]
    .concat();
    assert_eq!(
        decode::<SaslFrame>(&bytes),
        Ok(all_sasl_frames()[1].clone())
    );
}

#[test]
fn sasl_init_requires_a_symbol_mechanism() {
    let init = |fields: &[&[u8]]| decode::<SaslInit>(&described(0x41, &list8(fields)));
    assert_eq!(init(&[]), Err(missing("mechanism")));
    assert_eq!(
        init(&[&str8("PLAIN")]),
        Err(wrong_type("mechanism", "symbol", 0xa1))
    );
    assert_eq!(
        init(&[&sym8("PLAIN"), &str8("x")]),
        Err(wrong_type("initial-response", "binary", 0xa1))
    );
    assert_eq!(
        init(&[&sym8("ANONYMOUS")]),
        Ok(SaslInit {
            mechanism: sym("ANONYMOUS"),
            initial_response: None,
            hostname: None
        })
    );
}

#[test]
fn sasl_challenge_and_response_decode_from_spec_bytes() {
    let challenge = described(0x42, &list8(&[&vbin8(b"nonce")]));
    assert_eq!(
        decode::<SaslFrame>(&challenge),
        Ok(all_sasl_frames()[2].clone())
    );
    let response = described(0x43, &list8(&[&vbin8(b"proof")]));
    assert_eq!(
        decode::<SaslFrame>(&response),
        Ok(all_sasl_frames()[3].clone())
    );
}

#[test]
fn sasl_challenge_and_response_require_their_data() {
    assert_eq!(
        decode::<SaslChallenge>(&described(0x42, LIST0)),
        Err(missing("challenge"))
    );
    assert_eq!(
        decode::<SaslResponse>(&described(0x43, LIST0)),
        Err(missing("response"))
    );
    assert_eq!(
        decode::<SaslResponse>(&described(0x43, &list8(&[&str8("x")]))),
        Err(wrong_type("response", "binary", 0xa1))
    );
}

#[test]
fn sasl_outcome_decodes_every_code() {
    let codes = [
        (0, SaslCode::Ok),
        (1, SaslCode::Auth),
        (2, SaslCode::Sys),
        (3, SaslCode::SysPerm),
        (4, SaslCode::SysTemp),
    ];
    for (wire, code) in codes {
        let bytes = described(0x44, &list8(&[&[0x50, wire]]));
        assert_eq!(
            decode::<SaslOutcome>(&bytes),
            Ok(SaslOutcome {
                code,
                additional_data: None
            })
        );
        assert_eq!(
            encode(&SaslOutcome {
                code,
                additional_data: None
            }),
            bytes
        );
    }
}

#[test]
fn sasl_outcome_rejects_unknown_or_missing_codes() {
    let outcome = |fields: &[&[u8]]| decode::<SaslOutcome>(&described(0x44, &list8(fields)));
    assert_eq!(outcome(&[&[0x50, 5]]), Err(invalid("code")));
    assert_eq!(
        outcome(&[&[0x52, 0]]),
        Err(wrong_type("code", "ubyte", 0x52))
    );
    assert_eq!(outcome(&[NULL]), Err(missing("code")));
}

#[test]
fn sasl_outcome_decodes_from_spec_bytes() {
    let bytes = [
        &[0x00, 0x53, 0x44][..], // sasl-outcome
        &[0xc0, 8, 2],           // list8, 7 bytes of fields, 2 fields
        &[0x50, 0x01],           // code: ubyte 1 = auth
        &[0xa0, 3],              // additional-data: vbin8
        b"why",
    ]
    .concat();
    assert_eq!(
        decode::<SaslFrame>(&bytes),
        Ok(all_sasl_frames()[4].clone())
    );
}

#[test]
fn every_sasl_frame_round_trips_and_accepts_its_symbolic_descriptor() {
    let names = [
        "amqp:sasl-mechanisms:list",
        "amqp:sasl-init:list",
        "amqp:sasl-challenge:list",
        "amqp:sasl-response:list",
        "amqp:sasl-outcome:list",
    ];
    for (frame, name) in all_sasl_frames().into_iter().zip(names) {
        assert_round_trip(&frame);
        assert_wide_form_decodes(&frame);
        // Swap the 3-byte numeric descriptor for the symbolic one.
        let numeric = encode(&frame);
        let symbolic = named(name, &numeric[3..]);
        assert_eq!(decode::<SaslFrame>(&symbolic), Ok(frame), "{name}");
    }
}

/// Credentials in SASL frames never reach an error message or a log line
/// through `Debug`: only their length does.
#[test]
fn debug_of_sasl_frames_shows_no_credentials() {
    let secret = Bytes::from_static(b"\0alice\0hunter2");
    let frames = [
        SaslFrame::Init(SaslInit {
            mechanism: Symbol::from_static("PLAIN"),
            initial_response: Some(secret.clone()),
            hostname: Some("broker".to_owned()),
        }),
        SaslFrame::Challenge(SaslChallenge {
            challenge: secret.clone(),
        }),
        SaslFrame::Response(SaslResponse {
            response: secret.clone(),
        }),
    ];
    for frame in frames {
        let shown = format!("{frame:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<14 bytes>"), "{shown}");
    }
}

#[test]
fn sasl_frames_use_descriptors_0x40_to_0x44() {
    let codes: Vec<u8> = all_sasl_frames().iter().map(|f| encode(f)[2]).collect();
    assert_eq!(codes, [0x40, 0x41, 0x42, 0x43, 0x44]);
}

#[test]
fn unknown_sasl_descriptors_are_rejected() {
    assert_eq!(
        decode::<SaslFrame>(&described(0x45, LIST0)),
        Err(unexpected_descriptor())
    );
    assert_eq!(
        decode::<SaslFrame>(&described(0x10, LIST0)),
        Err(unexpected_descriptor())
    );
    assert_eq!(
        decode::<SaslFrame>(&named("amqp:sasl-foo:list", LIST0)),
        Err(unexpected_descriptor())
    );
}

// ---------------------------------------------------------------------------
// Delivery states (part 3 §3.4)
// ---------------------------------------------------------------------------

#[test]
fn delivery_states_decode_from_spec_bytes() {
    let received = described(0x23, &list8(&[&[0x52, 1], &[0x80, 0, 0, 1, 0, 0, 0, 0, 0]]));
    let rejected = described(
        0x25,
        &list8(&[&described(
            0x1d,
            &list8(&[
                &sym8("amqp:not-found"),
                &str8("no such queue"),
                &map8(&[&sym8("node"), &str8("orders")]),
            ]),
        )]),
    );
    let modified = described(
        0x27,
        &list8(&[TRUE, TRUE, &map8(&[&sym8("x-opt-reason"), &str8("retry")])]),
    );
    let encodings = [
        received,
        described(0x24, LIST0),
        rejected,
        described(0x26, LIST0),
        modified,
    ];
    for (bytes, state) in encodings.iter().zip(all_delivery_states()) {
        assert_eq!(decode::<DeliveryState>(bytes), Ok(state));
    }
}

#[test]
fn outcomes_without_fields_are_empty_lists() {
    assert_eq!(
        encode(&DeliveryState::Accepted(Accepted)),
        [0x00, 0x53, 0x24, 0x45]
    );
    assert_eq!(
        encode(&DeliveryState::Released(Released)),
        [0x00, 0x53, 0x26, 0x45]
    );
    assert_eq!(encode(&Rejected::default()), [0x00, 0x53, 0x25, 0x45]);
    // Some peers write an empty list8 instead of list0.
    assert_eq!(
        decode::<DeliveryState>(&[0x00, 0x53, 0x24, 0xc0, 1, 0]),
        Ok(DeliveryState::Accepted(Accepted))
    );
}

#[test]
fn modified_defaults_to_no_failure_and_no_annotations() {
    assert_eq!(
        decode::<Modified>(&described(0x27, LIST0)),
        Ok(Modified::default())
    );
    assert_round_trip(&Modified::default());
}

#[test]
fn delivery_states_round_trip_and_accept_symbolic_descriptors() {
    let names = [
        "amqp:received:list",
        "amqp:accepted:list",
        "amqp:rejected:list",
        "amqp:released:list",
        "amqp:modified:list",
    ];
    for (state, name) in all_delivery_states().into_iter().zip(names) {
        assert_round_trip(&state);
        let numeric = encode(&state);
        let symbolic = named(name, &numeric[3..]);
        assert_eq!(decode::<DeliveryState>(&symbolic), Ok(state), "{name}");
    }
    // Wide forms, for states that have fields.
    for state in all_delivery_states() {
        if encode(&state).len() > 4 {
            assert_wide_form_decodes(&state);
        }
    }
}

#[test]
fn received_requires_section_number_and_offset() {
    let received = |fields: &[&[u8]]| decode::<Received>(&described(0x23, &list8(fields)));
    assert_eq!(received(&[]), Err(missing("section-number")));
    assert_eq!(received(&[&[0x43]]), Err(missing("section-offset")));
    assert_eq!(
        received(&[&[0x43], &[0x43]]),
        Err(wrong_type("section-offset", "ulong", 0x43))
    );
}

#[test]
fn unknown_delivery_states_are_rejected() {
    assert_eq!(
        decode::<DeliveryState>(&described(0x28, LIST0)),
        Err(unexpected_descriptor())
    );
    assert_eq!(
        decode::<DeliveryState>(&named("amqp:unknown-state:list", LIST0)),
        Err(unexpected_descriptor())
    );
    assert!(DeliveryState::Accepted(Accepted).is_outcome());
    assert!(
        !all_delivery_states()[0].is_outcome(),
        "received is not an outcome"
    );
}

// ---------------------------------------------------------------------------
// Transactions (part 4)
// ---------------------------------------------------------------------------

#[test]
fn transaction_types_round_trip() {
    assert_round_trip(&Coordinator {
        capabilities: vec![sym(LOCAL_TRANSACTIONS)],
    });
    assert_round_trip(&ControlMessage::Declare(Declare::default()));
    assert_round_trip(&ControlMessage::Declare(Declare {
        global_id: Some(Value::from("xid")),
    }));
    assert_round_trip(&ControlMessage::Discharge(Discharge {
        txn_id: Bytes::from_static(&[0, 1]),
        fail: true,
    }));
    assert_round_trip(&AttachTarget::Coordinator(Coordinator::default()));
    assert_round_trip(&AttachTarget::Node(full_target()));
}

/// What Qpid Proton sends to declare a transaction and to commit it.
#[test]
fn control_messages_decode_from_spec_bytes() {
    assert_eq!(
        decode::<ControlMessage>(&described(0x31, LIST0)),
        Ok(ControlMessage::Declare(Declare::default()))
    );
    let discharge = described(0x32, &list8(&[&vbin8(b"\x00\x07"), &[0x42]]));
    assert_eq!(
        decode::<ControlMessage>(&discharge),
        Ok(ControlMessage::Discharge(Discharge {
            txn_id: Bytes::from_static(b"\x00\x07"),
            fail: false,
        }))
    );
    assert_eq!(
        decode::<ControlMessage>(&described(0x32, LIST0)),
        Err(missing("txn-id"))
    );
    assert_eq!(
        decode::<ControlMessage>(&described(0x24, LIST0)),
        Err(unexpected_descriptor())
    );
}

/// The provisional outcome of a transactional state is one of part 3's
/// outcomes: never a partial `received`, nor another transaction's state.
#[test]
fn a_transactional_state_holds_only_a_terminal_outcome() {
    let with = |outcome: &[u8]| {
        decode::<DeliveryState>(&described(0x34, &list8(&[&vbin8(b"t"), outcome])))
    };
    assert!(with(&described(0x24, LIST0)).is_ok(), "accepted");
    let received = described(0x23, &list8(&[&[0x43], &[0x44]]));
    assert_eq!(with(&received), Err(invalid("outcome")));
    let nested = described(0x34, &list8(&[&vbin8(b"u")]));
    assert_eq!(with(&nested), Err(invalid("outcome")));
}

/// A link's target may be a coordinator, or a kind this broker does not
/// know: each decodes, so the broker answers on the link, not by closing
/// the connection.
#[test]
fn an_attach_target_is_a_node_a_coordinator_or_unsupported() {
    let coordinator = described(0x30, &list8(&[&sym_array8(&[LOCAL_TRANSACTIONS])]));
    assert_eq!(
        decode::<AttachTarget>(&coordinator),
        Ok(AttachTarget::Coordinator(Coordinator {
            capabilities: vec![sym(LOCAL_TRANSACTIONS)],
        }))
    );
    let unknown = named("com.example:target:list", LIST0);
    let Ok(AttachTarget::Unsupported(described)) = decode::<AttachTarget>(&unknown) else {
        panic!("an unknown target decodes as unsupported");
    };
    assert_eq!(
        encode(&AttachTarget::Unsupported(described))[..],
        unknown[..]
    );
}

// ---------------------------------------------------------------------------
// Message sections (part 3 §3.2)
// ---------------------------------------------------------------------------

#[test]
fn header_decodes_from_spec_bytes() {
    let bytes = [
        &[0x00, 0x53, 0x70][..],         // header
        &[0xc0, 12, 5],                  // list8, 11 bytes of fields, 5 fields
        &[0x41],                         // durable: true
        &[0x50, 0x09],                   // priority: ubyte 9
        &[0x70, 0x00, 0x00, 0xea, 0x60], // ttl: 60000 ms
        &[0x41],                         // first-acquirer: true
        &[0x52, 0x02],                   // delivery-count: 2
    ]
    .concat();
    assert_eq!(decode::<Header>(&bytes), Ok(full_header()));
    assert_eq!(
        decode::<Section>(&bytes),
        Ok(Section::Header(full_header()))
    );
}

#[test]
fn header_defaults_to_priority_four() {
    let header: Header = decode(&described(0x70, LIST0)).unwrap();
    assert_eq!(header.priority, 4);
    assert_eq!(header, Header::default());
    assert_eq!(encode(&Header::default()), [0x00, 0x53, 0x70, 0x45]);
    let durable_only = described(0x70, &list8(&[TRUE]));
    assert_eq!(
        decode::<Header>(&durable_only),
        Ok(Header {
            durable: true,
            ..Header::default()
        })
    );
}

#[test]
fn header_round_trips() {
    assert_round_trip(&full_header());
    assert_wide_form_decodes(&full_header());
    assert_eq!(
        decode::<Header>(&named("amqp:header:list", LIST0)),
        Ok(Header::default())
    );
}

#[test]
fn header_rejects_a_priority_that_is_not_a_ubyte() {
    let bytes = described(0x70, &list8(&[NULL, &[0x52, 9]]));
    assert_eq!(
        decode::<Header>(&bytes),
        Err(wrong_type("priority", "ubyte", 0x52))
    );
}

#[test]
fn properties_decode_from_spec_bytes() {
    let bytes = described(
        0x73,
        &list8(&[
            &[[0x98].as_slice(), &[0x11; 16]].concat(), // message-id: uuid
            &vbin8(b"guest"),                           // user-id
            &str8("orders"),                            // to
            &str8("new-order"),                         // subject
            &str8("replies"),                           // reply-to
            &[0x53, 42],                                // correlation-id: ulong
            &sym8("application/json"),                  // content-type
            &sym8("gzip"),                              // content-encoding
            &[0x83, 0, 0, 0x01, 0x8b, 0xcf, 0xe6, 0x52, 0x60], // absolute-expiry-time
            &[0x83, 0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00], // creation-time
            &str8("g"),                                 // group-id
            &[0x52, 3],                                 // group-sequence
            &str8("rg"),                                // reply-to-group-id
        ]),
    );
    assert_eq!(decode::<Properties>(&bytes), Ok(full_properties()));
}

#[test]
fn properties_accept_every_message_id_type() {
    let ids = [
        (vec![0x53, 7], MessageId::Ulong(7)),
        (
            vec![0xa0, 1, 9],
            MessageId::Binary(Bytes::from_static(&[9])),
        ),
        (str8("id-1"), MessageId::String("id-1".into())),
        ([&[0x98][..], &[2; 16]].concat(), MessageId::Uuid([2; 16])),
    ];
    for (bytes, id) in ids {
        let properties = Properties {
            message_id: Some(id.clone()),
            correlation_id: Some(id),
            ..Properties::default()
        };
        let encoded = described(0x73, &list8(&[&bytes, NULL, NULL, NULL, NULL, &bytes]));
        assert_eq!(decode::<Properties>(&encoded), Ok(properties.clone()));
        assert_round_trip(&properties);
    }
}

#[test]
fn properties_reject_ids_and_times_of_other_types() {
    let properties = |fields: &[&[u8]]| decode::<Properties>(&described(0x73, &list8(fields)));
    assert_eq!(properties(&[&sym8("id")]), Err(invalid("message-id")));
    assert_eq!(
        properties(&[NULL, NULL, NULL, NULL, NULL, &[0x54, 1]]),
        Err(invalid("correlation-id"))
    );
    assert_eq!(
        properties(&[
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            NULL,
            &[0x81, 0, 0, 0, 0, 0, 0, 0, 1]
        ]),
        Err(invalid("creation-time"))
    );
    assert_eq!(
        properties(&[NULL, NULL, &sym8("orders")]),
        Err(wrong_type("to", "string", 0xa3))
    );
}

#[test]
fn properties_round_trip() {
    assert_round_trip(&full_properties());
    assert_round_trip(&Properties::default());
    assert_eq!(encode(&Properties::default()), [0x00, 0x53, 0x73, 0x45]);
    assert_wide_form_decodes(&full_properties());
    assert_eq!(
        decode::<Properties>(&named("amqp:properties:list", LIST0)),
        Ok(Properties::default())
    );
}

#[test]
fn map_sections_decode_from_spec_bytes() {
    let annotations = map8(&[&sym8("x-opt-k"), &[0x54, 0xff]]);
    let expected: Annotations = vec![(Value::Symbol(sym("x-opt-k")), Value::Int(-1))];
    assert_eq!(
        decode::<Section>(&described(0x71, &annotations)),
        Ok(Section::DeliveryAnnotations(expected.clone()))
    );
    assert_eq!(
        decode::<Section>(&described(0x72, &annotations)),
        Ok(Section::MessageAnnotations(expected.clone()))
    );
    assert_eq!(
        decode::<Section>(&described(0x78, &annotations)),
        Ok(Section::Footer(expected))
    );
    let properties = map8(&[&str8("count"), &[0x71, 0, 0, 1, 0]]);
    assert_eq!(
        decode::<Section>(&described(0x74, &properties)),
        Ok(Section::ApplicationProperties(vec![(
            "count".into(),
            Value::Int(256)
        )]))
    );
}

#[test]
fn empty_map_sections_keep_their_map() {
    // Unlike an optional field, a map section *is* its map: it is written
    // even when empty, and null is not a map.
    assert_eq!(
        encode(&Section::ApplicationProperties(vec![])),
        [0x00, 0x53, 0x74, 0xc1, 1, 0]
    );
    assert_round_trip(&Section::MessageAnnotations(vec![]));
    assert_eq!(
        decode::<Section>(&described(0x74, NULL)),
        Err(DecodeError::new(DecodeErrorKind::UnexpectedConstructor {
            expected: "map",
            found: 0x40
        }))
    );
}

#[test]
fn application_properties_need_string_keys() {
    let bytes = described(0x74, &map8(&[&sym8("k"), TRUE]));
    assert_eq!(
        decode::<Section>(&bytes),
        Err(DecodeError::new(DecodeErrorKind::UnexpectedConstructor {
            expected: "string",
            found: 0xa3
        }))
    );
}

#[test]
fn body_sections_decode_from_spec_bytes() {
    assert_eq!(
        decode::<Section>(&described(0x75, &vbin8(b"hi"))),
        Ok(Section::Data(Bytes::from_static(b"hi")))
    );
    assert_eq!(
        decode::<Section>(&described(0x76, &list8(&[&[0x52, 1], &str8("a")]))),
        Ok(Section::AmqpSequence(vec![
            Value::Uint(1),
            Value::from("a")
        ]))
    );
    assert_eq!(
        decode::<Section>(&described(0x77, &str8("hello"))),
        Ok(Section::AmqpValue(Value::from("hello")))
    );
    assert_eq!(
        decode::<Section>(&described(0x77, NULL)),
        Ok(Section::AmqpValue(Value::Null))
    );
}

#[test]
fn body_sections_reject_the_wrong_payload() {
    assert_eq!(
        decode::<Section>(&described(0x75, &str8("hi"))),
        Err(DecodeError::new(DecodeErrorKind::UnexpectedConstructor {
            expected: "binary",
            found: 0xa1
        }))
    );
    assert_eq!(
        decode::<Section>(&described(0x76, &str8("hi"))).map_err(|e| e.kind),
        Err(DecodeErrorKind::InvalidValue)
    );
}

#[test]
fn sections_accept_their_symbolic_descriptors() {
    let cases: [(&str, Vec<u8>, Section); 9] = [
        (
            "amqp:header:list",
            LIST0.to_vec(),
            Section::Header(Header::default()),
        ),
        (
            "amqp:delivery-annotations:map",
            vec![0xc1, 1, 0],
            Section::DeliveryAnnotations(vec![]),
        ),
        (
            "amqp:message-annotations:map",
            vec![0xc1, 1, 0],
            Section::MessageAnnotations(vec![]),
        ),
        (
            "amqp:properties:list",
            LIST0.to_vec(),
            Section::Properties(Box::default()),
        ),
        (
            "amqp:application-properties:map",
            vec![0xc1, 1, 0],
            Section::ApplicationProperties(vec![]),
        ),
        (
            "amqp:data:binary",
            vec![0xa0, 0],
            Section::Data(Bytes::new()),
        ),
        (
            "amqp:amqp-sequence:list",
            LIST0.to_vec(),
            Section::AmqpSequence(vec![]),
        ),
        (
            "amqp:amqp-value:*",
            NULL.to_vec(),
            Section::AmqpValue(Value::Null),
        ),
        ("amqp:footer:map", vec![0xc1, 1, 0], Section::Footer(vec![])),
    ];
    for (name, body, section) in cases {
        assert_eq!(
            decode::<Section>(&named(name, &body)),
            Ok(section),
            "{name}"
        );
    }
}

#[test]
fn unknown_sections_are_rejected() {
    assert_eq!(
        decode::<Section>(&described(0x79, NULL)),
        Err(unexpected_descriptor())
    );
    assert_eq!(
        decode::<Section>(&described(0x10, LIST0)),
        Err(unexpected_descriptor())
    );
    assert_eq!(
        decode::<Section>(&named("amqp:data:list", NULL)),
        Err(unexpected_descriptor())
    );
}

#[test]
fn a_full_message_round_trips_section_by_section() {
    let message = full_message();
    let bytes = message.encode();
    assert_eq!(Message::decode(bytes.clone()), Ok(message.clone()));
    assert_eq!(message.header(), Some(&full_header()));
    assert_eq!(message.properties(), Some(&full_properties()));
    for section in &message.sections {
        assert_round_trip(section);
        assert_wide_form_decodes(section);
    }
}

#[test]
fn message_bodies_of_every_kind_round_trip() {
    let bodies = [
        Message::data(Bytes::from_static(b"x")),
        Message {
            sections: vec![
                Section::AmqpSequence(vec![Value::Uint(1)]),
                Section::AmqpSequence(vec![Value::from("two")]),
            ],
        },
        Message {
            sections: vec![Section::AmqpValue(Value::Map(vec![(
                Value::from("k"),
                Value::List(vec![Value::Null]),
            )]))],
        },
        Message::default(),
    ];
    for message in bodies {
        assert_eq!(Message::decode(message.encode()), Ok(message));
    }
}

#[test]
fn a_message_cut_inside_a_section_is_truncated() {
    let bytes = full_message().encode();
    let cut = bytes.slice(..bytes.len() - 1);
    assert_eq!(
        Message::decode(cut).map_err(|e| e.kind),
        Err(DecodeErrorKind::Truncated)
    );
}

// ---------------------------------------------------------------------------
// Snapshots of whole frames, as hex dumps. Review a changed snapshot against
// the spec before accepting it: these bytes are what peers see.
// ---------------------------------------------------------------------------

/// `hexdump -C` style: offset, 16 bytes, printable ASCII.
fn hex_dump(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, chunk)| {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            let ascii: String = chunk
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        b as char
                    } else {
                        '.'
                    }
                })
                .collect();
            format!("{:08x}  {:<47}  |{ascii}|", i * 16, hex.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn decode_frame(bytes: &[u8], layer: Layer) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = FrameDecoder::new(u32::MAX)
        .decode(&mut buf, layer)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty(), "one frame, no leftovers");
    frame
}

#[test]
fn hex_dumps_show_offsets_bytes_and_ascii() {
    let dump = hex_dump(b"AMQP\x00\x01\x00\x00 0123456789");
    assert_eq!(
        dump,
        "00000000  41 4d 51 50 00 01 00 00 20 30 31 32 33 34 35 36  |AMQP.... 0123456|\n\
         00000010  37 38 39                                         |789|"
    );
}

#[test]
fn snapshot_open_frame() {
    let open = Open {
        hostname: Some("localhost".into()),
        max_frame_size: 65_536,
        channel_max: 255,
        idle_time_out: Some(30_000),
        offered_capabilities: vec![sym("ANONYMOUS-RELAY")],
        properties: vec![(sym("product"), Value::from("sluice"))],
        ..Open::new("sluice-1")
    };
    let mut buf = BytesMut::new();
    put_amqp_frame(&mut buf, 0, &open, &[]);
    // Spec part 2 §2.3.1: SIZE (4 bytes, the whole frame), DOFF = 2 (the body
    // starts 2 × 4 = 8 bytes in), TYPE = 0x00 (AMQP), channel 0x0000. Then
    // the body (§2.7.1): 0x00 0x53 0x10 (open), list8 (0xc0, size, count):
    // all 10 fields up to properties, the unset locales and desired
    // capabilities as nulls (0x40).
    assert_eq!(buf[..4], u32::try_from(buf.len()).unwrap().to_be_bytes());
    assert_eq!(buf[4..11], [0x02, 0x00, 0x00, 0x00, 0x00, 0x53, 0x10]);
    assert_eq!(buf[11], 0xc0);
    assert_eq!(buf[13], 10, "fields up to properties are written");
    assert_eq!(
        decode_frame(&buf, Layer::Amqp),
        Frame::Amqp {
            channel: 0,
            performative: Performative::Open(open),
            payload: Bytes::new()
        }
    );
    insta::assert_snapshot!("open_frame", hex_dump(&buf));
}

#[test]
fn snapshot_attach_frame_with_a_selector_filter() {
    let receiver = Attach {
        source: Some(
            Source {
                address: Some("orders".into()),
                filter: selector_filter(),
                capabilities: vec![sym("queue")],
                ..Source::default()
            }
            .into(),
        ),
        target: Some(Target::default().into()),
        ..attach("orders-receiver", 0, Role::Receiver)
    };
    let mut buf = BytesMut::new();
    put_amqp_frame(&mut buf, 1, &receiver, &[]);
    // Frame header: size, DOFF 2, TYPE 0 (AMQP), channel 1. Body: attach
    // (0x00 0x53 0x12), list8 of 7 fields: name, handle (uint0), role
    // (true = receiver), two null settle modes, the source, the target.
    assert_eq!(buf[4..8], [0x02, 0x00, 0x00, 0x01]);
    assert_eq!(buf[8..11], [0x00, 0x53, 0x12]);
    assert_eq!(buf[11], 0xc0);
    assert_eq!(buf[13], 7);
    assert_eq!(buf[14..16], [0xa1, 15], "name: str8 of 15 bytes");
    assert_eq!(
        buf[31..37],
        [0x43, 0x41, 0x40, 0x40, 0x00, 0x53],
        "handle, role, modes, source"
    );
    assert_eq!(buf[37], 0x28, "source descriptor");
    assert_eq!(
        decode_frame(&buf, Layer::Amqp),
        Frame::Amqp {
            channel: 1,
            performative: Performative::Attach(Box::new(receiver)),
            payload: Bytes::new()
        }
    );
    insta::assert_snapshot!("attach_frame_with_selector_filter", hex_dump(&buf));
}

#[test]
fn snapshot_transfer_frame_with_a_full_message() {
    let transfer = Transfer {
        handle: 0,
        delivery_id: Some(0),
        delivery_tag: Some(Bytes::from_static(&[0, 0, 0, 1])),
        message_format: Some(0),
        settled: Some(false),
        ..Transfer::default()
    };
    let message = Message {
        sections: vec![
            Section::Header(Header {
                durable: true,
                ..Header::default()
            }),
            Section::MessageAnnotations(vec![(
                Value::Symbol(sym("x-opt-partition-key")),
                Value::from("p1"),
            )]),
            Section::Properties(Box::new(Properties {
                message_id: Some(MessageId::String("m-1".into())),
                to: Some("orders".into()),
                content_type: Some(sym("text/plain")),
                creation_time: Some(Timestamp(1_700_000_000_000)),
                ..Properties::default()
            })),
            Section::ApplicationProperties(vec![("count".into(), Value::Int(3))]),
            Section::Data(Bytes::from_static(b"hello, sluice")),
        ],
    };
    let payload = message.encode();
    let mut buf = BytesMut::new();
    put_amqp_frame(&mut buf, 0, &transfer, &payload);
    // Header: DOFF 2, TYPE 0, channel 0; body: transfer (0x00 0x53 0x14),
    // list8 of 5 fields: handle uint0, delivery-id uint0, delivery-tag vbin8
    // of 4 bytes, message-format uint0, settled false; then the message,
    // starting with the header section (0x00 0x53 0x70).
    assert_eq!(buf[4..11], [0x02, 0x00, 0x00, 0x00, 0x00, 0x53, 0x14]);
    assert_eq!(buf[11..14], [0xc0, 11, 5]);
    assert_eq!(
        buf[14..25],
        [0x43, 0x43, 0xa0, 4, 0, 0, 0, 1, 0x43, 0x42, 0x00]
    );
    assert_eq!(buf[25..27], [0x53, 0x70], "header section");
    let Frame::Amqp {
        performative: Performative::Transfer(decoded),
        payload: decoded_payload,
        ..
    } = decode_frame(&buf, Layer::Amqp)
    else {
        panic!("not a transfer frame");
    };
    assert_eq!(decoded, transfer);
    assert_eq!(Message::decode(decoded_payload), Ok(message));
    insta::assert_snapshot!("transfer_frame_with_full_message", hex_dump(&buf));
}

#[test]
fn snapshot_sasl_init_plain_frame() {
    let init = SaslFrame::Init(SaslInit {
        mechanism: sym("PLAIN"),
        initial_response: Some(Bytes::from_static(b"\0guest\0guest")),
        hostname: Some("localhost".into()),
    });
    let mut buf = BytesMut::new();
    put_sasl_frame(&mut buf, &init);
    // Spec part 5 §5.3.1: a SASL frame has TYPE = 0x01 and channel 0 (the
    // channel is ignored). Body: sasl-init (0x00 0x53 0x41), list8 of 3
    // fields: sym8 "PLAIN", vbin8 "\0guest\0guest", str8 "localhost".
    assert_eq!(
        buf[..4],
        [0, 0, 0, 0x2e],
        "8 header + 3 descriptor + 3 list + 32 fields"
    );
    assert_eq!(
        buf[4..14],
        [0x02, 0x01, 0x00, 0x00, 0x00, 0x53, 0x41, 0xc0, 33, 3]
    );
    assert_eq!(buf[14..21], *b"\xa3\x05PLAIN");
    assert_eq!(decode_frame(&buf, Layer::Sasl), Frame::Sasl(init));
    insta::assert_snapshot!("sasl_init_plain_frame", hex_dump(&buf));
}
