//! Property tests of the AMQP codec and protocol types.
//!
//! - Every value and every protocol type round-trips: `decode(encode(x)) == x`.
//! - Decoding arbitrary (or mutated) bytes never panics, and whatever does
//!   decode re-encodes stably: `encode(decode(encode(decode(b)))) ==
//!   encode(decode(b))`. Bytes are compared where values may hold NaN.
//! - The frame decoder either takes one whole frame, waits for more bytes
//!   without consuming any, or fails.

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use sluice::amqp::codec::{
    Array, Decode, Described, Descriptor, Encode, Symbol, Value, from_bytes, to_bytes,
};
use sluice::amqp::frame::{FrameDecoder, Layer, put_amqp_frame, put_sasl_frame};
use sluice::amqp::types::{
    Accepted, Attach, AttachTarget, Begin, Close, Coordinator, Declared, DeliveryState, Detach,
    Disposition, DistributionMode, End, Error, ExpiryPolicy, Flow, Header, Message, MessageId,
    Modified, Open, Performative, Properties, Received, ReceiverSettleMode, Rejected, Released,
    Role, SaslChallenge, SaslCode, SaslFrame, SaslInit, SaslMechanisms, SaslOutcome, SaslResponse,
    Section, SenderSettleMode, Source, Target, TerminusDurability, Timestamp, TransactionalState,
    Transfer,
};

// ---------------------------------------------------------------------------
// Values.
// ---------------------------------------------------------------------------

fn symbol() -> BoxedStrategy<Symbol> {
    prop_oneof![
        9 => "[ -~]{0,12}",
        1 => "[a-z]{250,260}",
    ]
    .prop_map(|s| Symbol::new(s).expect("ASCII"))
    .boxed()
}

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        9 => "\\PC{0,8}",
        1 => "[a-zé]{250,260}",
    ]
    .boxed()
}

fn binary() -> BoxedStrategy<Bytes> {
    prop_oneof![
        9 => vec(any::<u8>(), 0..8),
        1 => vec(any::<u8>(), 250..260),
    ]
    .prop_map(Bytes::from)
    .boxed()
}

fn uint() -> BoxedStrategy<u32> {
    prop_oneof![Just(0), 0..=255u32, any::<u32>()].boxed()
}

fn ulong() -> BoxedStrategy<u64> {
    prop_oneof![Just(0), 0..=255u64, any::<u64>()].boxed()
}

fn f32_value(nan: bool) -> BoxedStrategy<f32> {
    if nan {
        any::<f32>().boxed()
    } else {
        any::<f32>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .boxed()
    }
    .boxed()
}

fn f64_value(nan: bool) -> BoxedStrategy<f64> {
    if nan {
        any::<f64>().boxed()
    } else {
        any::<f64>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .boxed()
    }
    .boxed()
}

/// One strategy per non-null scalar type, so that arrays can pick one.
fn scalar_kinds(nan: bool) -> Vec<BoxedStrategy<Value>> {
    vec![
        any::<bool>().prop_map(Value::Boolean).boxed(),
        any::<u8>().prop_map(Value::Ubyte).boxed(),
        any::<u16>().prop_map(Value::Ushort).boxed(),
        uint().prop_map(Value::Uint).boxed(),
        ulong().prop_map(Value::Ulong).boxed(),
        any::<i8>().prop_map(Value::Byte).boxed(),
        any::<i16>().prop_map(Value::Short).boxed(),
        prop_oneof![-128..=127i32, any::<i32>()]
            .prop_map(Value::Int)
            .boxed(),
        prop_oneof![-128..=127i64, any::<i64>()]
            .prop_map(Value::Long)
            .boxed(),
        f32_value(nan).prop_map(Value::Float).boxed(),
        f64_value(nan).prop_map(Value::Double).boxed(),
        any::<[u8; 4]>().prop_map(Value::Decimal32).boxed(),
        any::<[u8; 8]>().prop_map(Value::Decimal64).boxed(),
        any::<[u8; 16]>().prop_map(Value::Decimal128).boxed(),
        any::<char>().prop_map(Value::Char).boxed(),
        any::<i64>().prop_map(Value::Timestamp).boxed(),
        any::<[u8; 16]>().prop_map(Value::Uuid).boxed(),
        binary().prop_map(Value::Binary).boxed(),
        text().prop_map(Value::String).boxed(),
        symbol().prop_map(Value::Symbol).boxed(),
    ]
}

fn scalar(nan: bool) -> BoxedStrategy<Value> {
    let mut kinds = scalar_kinds(nan);
    kinds.push(Just(Value::Null).boxed());
    proptest::strategy::Union::new(kinds).boxed()
}

fn array(items: Vec<Value>) -> Value {
    Value::Array(Array::try_from(items).expect("homogeneous by construction"))
}

/// An array of one scalar type, picked at random.
fn scalar_array(nan: bool) -> BoxedStrategy<Value> {
    let kinds = scalar_kinds(nan);
    (0..kinds.len())
        .prop_flat_map(move |k| vec(kinds[k].clone(), 0..6))
        .prop_map(array)
        .boxed()
}

/// A descriptor: numeric, symbolic, or another value. `Other` never holds
/// a ulong or symbol, which would decode as `Code` or `Name`.
fn descriptor(inner: BoxedStrategy<Value>) -> BoxedStrategy<Descriptor> {
    prop_oneof![
        ulong().prop_map(Descriptor::Code),
        symbol().prop_map(Descriptor::Name),
        inner
            .prop_filter("decodes as Code or Name", |v| {
                !matches!(v, Value::Ulong(_) | Value::Symbol(_))
            })
            .prop_map(|v| Descriptor::Other(Box::new(v))),
    ]
    .boxed()
}

fn described(descriptor: Descriptor, value: Value) -> Value {
    Value::from(Described { descriptor, value })
}

/// Any value, nested at most a few levels deep; `nan` allows NaN floats.
fn value(nan: bool) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![4 => scalar(nan), 1 => scalar_array(nan)];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        let kinds = scalar_kinds(nan);
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::List),
            vec((inner.clone(), inner.clone()), 0..4).prop_map(Value::Map),
            (descriptor(inner.clone()), inner.clone()).prop_map(|(d, v)| described(d, v)),
            // Arrays of compounds: each element is a list, map or array.
            vec(vec(inner.clone(), 0..3).prop_map(Value::List), 0..3).prop_map(array),
            vec(
                vec((inner.clone(), inner.clone()), 0..2).prop_map(Value::Map),
                0..3
            )
            .prop_map(array),
            vec(scalar_array(nan), 0..3).prop_map(array),
            // Arrays of described scalars sharing one descriptor and type.
            (descriptor(inner.clone()), 0..kinds.len()).prop_flat_map(move |(d, k)| {
                vec(kinds[k].clone(), 0..4).prop_map(move |items| {
                    array(items.into_iter().map(|v| described(d.clone(), v)).collect())
                })
            }),
        ]
    })
    .boxed()
}

fn round_trip<T: Encode + Decode>(v: &T) -> T {
    let bytes = to_bytes(v);
    from_bytes(bytes.clone()).unwrap_or_else(|e| panic!("{bytes:02x?} does not decode: {e}"))
}

/// Checks that a decoded `T` re-encodes to bytes that decode and re-encode
/// identically.
fn assert_stable<T: Encode + Decode + Debug>(decoded: &T) {
    let encoded = to_bytes(decoded);
    let again: T = from_bytes(encoded.clone())
        .unwrap_or_else(|e| panic!("{decoded:?} re-encoded as {encoded:02x?} fails: {e}"));
    assert_eq!(to_bytes(&again), encoded, "unstable: {decoded:?}");
}

proptest! {
    #[test]
    fn values_round_trip(v in value(false)) {
        prop_assert_eq!(round_trip(&v), v);
    }

    #[test]
    fn values_with_nan_re_encode_to_the_same_bytes(v in value(true)) {
        let bytes = to_bytes(&v);
        prop_assert_eq!(to_bytes(&round_trip(&v)), bytes);
    }

    #[test]
    fn arbitrary_bytes_decode_without_panicking_and_re_encode_stably(
        bytes in vec(any::<u8>(), 0..64),
    ) {
        if let Ok(v) = from_bytes::<Value>(Bytes::from(bytes)) {
            assert_stable(&v);
        }
    }

    #[test]
    fn mutated_values_decode_without_panicking_and_re_encode_stably(
        v in value(true),
        mutations in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = to_bytes(&v).to_vec();
        for (at, byte) in mutations {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        for input in [bytes.clone(), bytes[..cut.index(bytes.len() + 1)].to_vec()] {
            if let Ok(v) = from_bytes::<Value>(Bytes::from(input)) {
                assert_stable(&v);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Protocol types.
// ---------------------------------------------------------------------------

fn symbols() -> BoxedStrategy<Vec<Symbol>> {
    vec(symbol(), 0..3).boxed()
}

fn fields() -> BoxedStrategy<Vec<(Symbol, Value)>> {
    vec((symbol(), value(false)), 0..3).boxed()
}

fn annotations() -> BoxedStrategy<Vec<(Value, Value)>> {
    vec((value(false), value(false)), 0..3).boxed()
}

fn error() -> BoxedStrategy<Error> {
    (symbol(), option::of(text()), fields())
        .prop_map(|(condition, description, info)| Error {
            condition,
            description,
            info,
        })
        .boxed()
}

fn role() -> BoxedStrategy<Role> {
    prop_oneof![Just(Role::Sender), Just(Role::Receiver)].boxed()
}

fn snd_settle_mode() -> BoxedStrategy<SenderSettleMode> {
    prop_oneof![
        Just(SenderSettleMode::Unsettled),
        Just(SenderSettleMode::Settled),
        Just(SenderSettleMode::Mixed),
    ]
    .boxed()
}

fn rcv_settle_mode() -> BoxedStrategy<ReceiverSettleMode> {
    prop_oneof![
        Just(ReceiverSettleMode::First),
        Just(ReceiverSettleMode::Second)
    ]
    .boxed()
}

fn durability() -> BoxedStrategy<TerminusDurability> {
    prop_oneof![
        Just(TerminusDurability::None),
        Just(TerminusDurability::Configuration),
        Just(TerminusDurability::UnsettledState),
    ]
    .boxed()
}

fn expiry_policy() -> BoxedStrategy<ExpiryPolicy> {
    prop_oneof![
        Just(ExpiryPolicy::LinkDetach),
        Just(ExpiryPolicy::SessionEnd),
        Just(ExpiryPolicy::ConnectionClose),
        Just(ExpiryPolicy::Never),
    ]
    .boxed()
}

fn delivery_state() -> BoxedStrategy<DeliveryState> {
    let outcome = prop_oneof![
        Just(DeliveryState::Accepted(Accepted)),
        Just(DeliveryState::Released(Released)),
    ];
    prop_oneof![
        binary().prop_map(|txn_id| DeliveryState::Declared(Declared { txn_id })),
        (binary(), option::of(outcome)).prop_map(|(txn_id, outcome)| {
            DeliveryState::Transactional(TransactionalState {
                txn_id,
                outcome: outcome.map(Box::new),
            })
        }),
        (uint(), ulong()).prop_map(|(section_number, section_offset)| {
            DeliveryState::Received(Received {
                section_number,
                section_offset,
            })
        }),
        Just(DeliveryState::Accepted(Accepted)),
        option::of(error()).prop_map(|error| DeliveryState::Rejected(Rejected { error })),
        Just(DeliveryState::Released(Released)),
        (any::<bool>(), any::<bool>(), annotations()).prop_map(|(failed, here, annotations)| {
            DeliveryState::Modified(Modified {
                delivery_failed: failed,
                undeliverable_here: here,
                message_annotations: annotations,
            })
        }),
    ]
    .boxed()
}

fn source() -> BoxedStrategy<Source> {
    (
        (
            option::of(text()),
            option::of(durability()),
            option::of(expiry_policy()),
            uint(),
            any::<bool>(),
            fields(),
        ),
        (
            option::of(prop_oneof![
                Just(DistributionMode::Move),
                Just(DistributionMode::Copy)
            ]),
            annotations(),
            option::of(delivery_state()),
            symbols(),
            symbols(),
        ),
    )
        .prop_map(
            |(
                (address, durable, expiry_policy, timeout, dynamic, dynamic_node_properties),
                (distribution_mode, filter, default_outcome, outcomes, capabilities),
            )| Source {
                address,
                durable,
                expiry_policy,
                timeout,
                dynamic,
                dynamic_node_properties,
                distribution_mode,
                filter,
                default_outcome,
                outcomes,
                capabilities,
            },
        )
        .boxed()
}

/// A link's target: a node or a transaction coordinator.
fn attach_target() -> BoxedStrategy<AttachTarget> {
    prop_oneof![
        target().prop_map(AttachTarget::Node),
        symbols().prop_map(|capabilities| AttachTarget::Coordinator(Coordinator { capabilities })),
    ]
    .boxed()
}

fn target() -> BoxedStrategy<Target> {
    (
        option::of(text()),
        option::of(durability()),
        option::of(expiry_policy()),
        uint(),
        any::<bool>(),
        fields(),
        symbols(),
    )
        .prop_map(
            |(
                address,
                durable,
                expiry_policy,
                timeout,
                dynamic,
                dynamic_node_properties,
                capabilities,
            )| {
                Target {
                    address,
                    durable,
                    expiry_policy,
                    timeout,
                    dynamic,
                    dynamic_node_properties,
                    capabilities,
                }
            },
        )
        .boxed()
}

fn open() -> BoxedStrategy<Open> {
    (
        text(),
        option::of(text()),
        uint(),
        any::<u16>(),
        option::of(uint()),
        symbols(),
        symbols(),
        symbols(),
        symbols(),
        fields(),
    )
        .prop_map(
            |(
                container_id,
                hostname,
                max_frame_size,
                channel_max,
                idle_time_out,
                out,
                inc,
                offered,
                desired,
                properties,
            )| {
                Open {
                    container_id,
                    hostname,
                    max_frame_size,
                    channel_max,
                    idle_time_out,
                    outgoing_locales: out,
                    incoming_locales: inc,
                    offered_capabilities: offered,
                    desired_capabilities: desired,
                    properties,
                }
            },
        )
        .boxed()
}

fn begin() -> BoxedStrategy<Begin> {
    (
        option::of(any::<u16>()),
        uint(),
        uint(),
        uint(),
        uint(),
        symbols(),
        symbols(),
        fields(),
    )
        .prop_map(
            |(
                remote_channel,
                next_outgoing_id,
                incoming_window,
                outgoing_window,
                handle_max,
                offered,
                desired,
                properties,
            )| {
                Begin {
                    remote_channel,
                    next_outgoing_id,
                    incoming_window,
                    outgoing_window,
                    handle_max,
                    offered_capabilities: offered,
                    desired_capabilities: desired,
                    properties,
                }
            },
        )
        .boxed()
}

fn attach() -> BoxedStrategy<Attach> {
    (
        (text(), uint(), role(), snd_settle_mode(), rcv_settle_mode()),
        (
            option::of(source()),
            option::of(attach_target()),
            annotations(),
            any::<bool>(),
        ),
        (
            option::of(uint()),
            // Zero means "no limit" and decodes as `None` (spec §2.7.3).
            option::of(1..=u64::MAX),
            symbols(),
            symbols(),
            fields(),
        ),
    )
        .prop_map(
            |(
                (name, handle, role, snd_settle_mode, rcv_settle_mode),
                (source, target, unsettled, incomplete_unsettled),
                (initial_delivery_count, max_message_size, offered, desired, properties),
            )| Attach {
                name,
                handle,
                role,
                snd_settle_mode,
                rcv_settle_mode,
                source: source.map(Into::into),
                target,
                unsettled,
                incomplete_unsettled,
                initial_delivery_count,
                max_message_size,
                offered_capabilities: offered,
                desired_capabilities: desired,
                properties,
            },
        )
        .boxed()
}

fn flow() -> BoxedStrategy<Flow> {
    (
        (
            option::of(uint()),
            uint(),
            uint(),
            uint(),
            option::of(uint()),
        ),
        (option::of(uint()), option::of(uint()), option::of(uint())),
        (any::<bool>(), any::<bool>(), fields()),
    )
        .prop_map(
            |(
                (next_incoming_id, incoming_window, next_outgoing_id, outgoing_window, handle),
                (delivery_count, link_credit, available),
                (drain, echo, properties),
            )| Flow {
                next_incoming_id,
                incoming_window,
                next_outgoing_id,
                outgoing_window,
                handle,
                delivery_count,
                link_credit,
                available,
                drain,
                echo,
                properties,
            },
        )
        .boxed()
}

fn transfer() -> BoxedStrategy<Transfer> {
    (
        (
            uint(),
            option::of(uint()),
            option::of(binary()),
            option::of(uint()),
        ),
        (
            option::of(any::<bool>()),
            any::<bool>(),
            option::of(rcv_settle_mode()),
        ),
        (
            option::of(delivery_state()),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (handle, delivery_id, delivery_tag, message_format),
                (settled, more, rcv_settle_mode),
                (state, resume, aborted, batchable),
            )| Transfer {
                handle,
                delivery_id,
                delivery_tag,
                message_format,
                settled,
                more,
                rcv_settle_mode,
                state,
                resume,
                aborted,
                batchable,
            },
        )
        .boxed()
}

fn disposition() -> BoxedStrategy<Disposition> {
    (
        role(),
        uint(),
        option::of(uint()),
        any::<bool>(),
        option::of(delivery_state()),
        any::<bool>(),
    )
        .prop_map(
            |(role, first, last, settled, state, batchable)| Disposition {
                role,
                first,
                last,
                settled,
                state,
                batchable,
            },
        )
        .boxed()
}

fn performative() -> BoxedStrategy<Performative> {
    prop_oneof![
        open().prop_map(Performative::Open),
        begin().prop_map(Performative::Begin),
        attach().prop_map(|a| Performative::Attach(Box::new(a))),
        flow().prop_map(Performative::Flow),
        transfer().prop_map(Performative::Transfer),
        disposition().prop_map(Performative::Disposition),
        (uint(), any::<bool>(), option::of(error())).prop_map(|(handle, closed, error)| {
            Performative::Detach(Detach {
                handle,
                closed,
                error,
            })
        }),
        option::of(error()).prop_map(|error| Performative::End(End { error })),
        option::of(error()).prop_map(|error| Performative::Close(Close { error })),
    ]
    .boxed()
}

fn sasl_frame() -> BoxedStrategy<SaslFrame> {
    let code = prop_oneof![
        Just(SaslCode::Ok),
        Just(SaslCode::Auth),
        Just(SaslCode::Sys),
        Just(SaslCode::SysPerm),
        Just(SaslCode::SysTemp),
    ];
    prop_oneof![
        // At least one mechanism: an empty list is a missing field.
        vec(symbol(), 1..4)
            .prop_map(|mechanisms| SaslFrame::Mechanisms(SaslMechanisms { mechanisms })),
        (symbol(), option::of(binary()), option::of(text())).prop_map(
            |(mechanism, initial_response, hostname)| SaslFrame::Init(SaslInit {
                mechanism,
                initial_response,
                hostname,
            })
        ),
        binary().prop_map(|challenge| SaslFrame::Challenge(SaslChallenge { challenge })),
        binary().prop_map(|response| SaslFrame::Response(SaslResponse { response })),
        (code, option::of(binary())).prop_map(|(code, additional_data)| {
            SaslFrame::Outcome(SaslOutcome {
                code,
                additional_data,
            })
        }),
    ]
    .boxed()
}

fn message_id() -> BoxedStrategy<MessageId> {
    prop_oneof![
        ulong().prop_map(MessageId::Ulong),
        any::<[u8; 16]>().prop_map(MessageId::Uuid),
        binary().prop_map(MessageId::Binary),
        text().prop_map(MessageId::String),
    ]
    .boxed()
}

fn header() -> BoxedStrategy<Header> {
    (
        any::<bool>(),
        any::<u8>(),
        option::of(uint()),
        any::<bool>(),
        uint(),
    )
        .prop_map(
            |(durable, priority, ttl, first_acquirer, delivery_count)| Header {
                durable,
                priority,
                ttl,
                first_acquirer,
                delivery_count,
            },
        )
        .boxed()
}

fn properties() -> BoxedStrategy<Properties> {
    let timestamp = || option::of(any::<i64>().prop_map(Timestamp));
    (
        (
            option::of(message_id()),
            option::of(binary()),
            option::of(text()),
            option::of(text()),
            option::of(text()),
            option::of(message_id()),
        ),
        (
            option::of(symbol()),
            option::of(symbol()),
            timestamp(),
            timestamp(),
            option::of(text()),
            option::of(uint()),
            option::of(text()),
        ),
    )
        .prop_map(
            |(
                (message_id, user_id, to, subject, reply_to, correlation_id),
                (
                    content_type,
                    content_encoding,
                    absolute_expiry_time,
                    creation_time,
                    group_id,
                    group_sequence,
                    reply_to_group_id,
                ),
            )| Properties {
                message_id,
                user_id,
                to,
                subject,
                reply_to,
                correlation_id,
                content_type,
                content_encoding,
                absolute_expiry_time,
                creation_time,
                group_id,
                group_sequence,
                reply_to_group_id,
            },
        )
        .boxed()
}

fn section() -> BoxedStrategy<Section> {
    prop_oneof![
        header().prop_map(Section::Header),
        annotations().prop_map(Section::DeliveryAnnotations),
        annotations().prop_map(Section::MessageAnnotations),
        properties().prop_map(|p| Section::Properties(Box::new(p))),
        vec((text(), value(false)), 0..3).prop_map(Section::ApplicationProperties),
        binary().prop_map(Section::Data),
        vec(value(false), 0..4).prop_map(Section::AmqpSequence),
        value(false).prop_map(Section::AmqpValue),
        annotations().prop_map(Section::Footer),
    ]
    .boxed()
}

fn message() -> BoxedStrategy<Message> {
    vec(section(), 0..6)
        .prop_map(|sections| Message { sections })
        .boxed()
}

proptest! {
    #[test]
    fn performatives_round_trip(p in performative()) {
        prop_assert_eq!(round_trip(&p), p);
    }

    #[test]
    fn sources_and_targets_round_trip(s in source(), t in target()) {
        prop_assert_eq!(round_trip(&s), s);
        prop_assert_eq!(round_trip(&t), t);
    }

    #[test]
    fn sasl_frames_round_trip(f in sasl_frame()) {
        prop_assert_eq!(round_trip(&f), f);
    }

    #[test]
    fn delivery_states_round_trip(s in delivery_state()) {
        prop_assert_eq!(round_trip(&s), s);
    }

    #[test]
    fn messages_round_trip(m in message()) {
        prop_assert_eq!(Message::decode(m.encode()), Ok(m));
    }

    #[test]
    fn frames_round_trip_through_the_frame_decoder(
        p in performative(),
        channel in any::<u16>(),
        sasl in sasl_frame(),
    ) {
        let payload: &[u8] = if matches!(p, Performative::Transfer(_)) { b"message" } else { b"" };
        let mut buf = BytesMut::new();
        put_amqp_frame(&mut buf, channel, &p, payload);
        let decoded = FrameDecoder::new(u32::MAX).decode(&mut buf, Layer::Amqp);
        prop_assert_eq!(
            decoded,
            Ok(Some(sluice::amqp::frame::Frame::Amqp {
                channel,
                performative: p,
                payload: Bytes::from_static(payload),
            }))
        );
        prop_assert!(buf.is_empty());

        put_sasl_frame(&mut buf, &sasl);
        let decoded = FrameDecoder::new(u32::MAX).decode(&mut buf, Layer::Sasl);
        prop_assert_eq!(decoded, Ok(Some(sluice::amqp::frame::Frame::Sasl(sasl))));
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_typed_decoder(bytes in vec(any::<u8>(), 0..96)) {
        let bytes = Bytes::from(bytes);
        if let Ok(p) = from_bytes::<Performative>(bytes.clone()) {
            assert_stable(&p);
        }
        if let Ok(f) = from_bytes::<SaslFrame>(bytes.clone()) {
            assert_stable(&f);
        }
        if let Ok(s) = from_bytes::<Section>(bytes.clone()) {
            assert_stable(&s);
        }
        if let Ok(s) = from_bytes::<DeliveryState>(bytes.clone()) {
            assert_stable(&s);
        }
        if let Ok(m) = Message::decode(bytes) {
            let encoded = m.encode();
            let again = Message::decode(encoded.clone()).expect("re-encoded message decodes");
            prop_assert_eq!(again.encode(), encoded);
        }
    }

    /// Valid encodings with a few bytes changed and a random cut: they reach
    /// deep into the typed decoders, which random bytes rarely do.
    #[test]
    fn mutated_performatives_never_panic_and_re_encode_stably(
        p in performative(),
        mutations in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = to_bytes(&p).to_vec();
        for (at, byte) in mutations {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        for input in [bytes.clone(), bytes[..cut.index(bytes.len() + 1)].to_vec()] {
            if let Ok(p) = from_bytes::<Performative>(Bytes::from(input)) {
                assert_stable(&p);
            }
        }
    }

    #[test]
    fn mutated_messages_never_panic_and_re_encode_stably(
        m in message(),
        mutations in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = m.encode().to_vec();
        if !bytes.is_empty() {
            for (at, byte) in mutations {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
        }
        if let Ok(m) = Message::decode(Bytes::from(bytes)) {
            let encoded = m.encode();
            let again = Message::decode(encoded.clone()).expect("re-encoded message decodes");
            prop_assert_eq!(again.encode(), encoded);
        }
    }

    /// "Need more bytes" consumes nothing; a whole frame consumes exactly
    /// its declared size; and nothing panics.
    #[test]
    fn the_frame_decoder_takes_whole_frames_or_nothing(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..64),
            // A plausible header (size 8..64, DOFF 2, type 0 or 1) before
            // random bytes, to get past the header checks.
            (8u32..64, 0u8..2, vec(any::<u8>(), 0..64)).prop_map(|(size, ty, rest)| {
                [&size.to_be_bytes()[..], &[2, ty, 0, 0], &rest].concat()
            }),
        ],
        layer in prop_oneof![Just(Layer::Amqp), Just(Layer::Sasl)],
        max in prop_oneof![Just(512u32), Just(u32::MAX)],
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        match FrameDecoder::new(max).decode(&mut buf, layer) {
            Ok(None) => prop_assert_eq!(&buf[..], &bytes[..]),
            Ok(Some(_)) => {
                let size = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
                prop_assert_eq!(&buf[..], &bytes[size..]);
            }
            Err(_) => {}
        }
    }
}
