//! The command encoding: round trips, and strict decoding.

use bytes::BytesMut;

use super::*;
use crate::amqp::codec::{
    DecodeErrorKind, Descriptor, Encode, FieldEncoder, encode_descriptor, encode_list,
};
use crate::queue::command::DOMAIN;
use crate::queue::{Guarded, Overflow, PublishTraits, Seqs};

/// Every command variant, with edge values in every field.
fn every_command() -> Vec<Command> {
    let config = QueueConfig {
        durable: true,
        max_length: Some(0),
        max_bytes: Some(u64::MAX),
        overflow: Overflow::DropHead,
        dead_letter_queue: Some("dlq".into()),
        delivery_limit: None,
        default_ttl_ms: Some(60_000),
        dedup_window_ms: Some(600_000),
        dedup_window_ids: Some(u64::MAX),
        auto_delete: true,
        priority_levels: Some(10),
        last_value_key: Some("instrument".into()),
        message_groups: true,
        single_active_consumer: true,
        filter: Some(selector("instrument = 'EURUSD'")),
    };
    let message = NewMessage {
        body: Bytes::from(vec![0xab; 300]),
        durable: true,
        ttl_ms: Some(0),
        absolute_expiry_ms: Some(1),
        message_id: Some(Bytes::from_static(b"\xa1\x05order")),
        traits: PublishTraits {
            priority: 9,
            group: Some("EURUSD".into()),
            deliver_at_ms: Some(u64::MAX),
        }
        .boxed(),
        copy_of: None,
    };
    let annotations = vec![
        (symbol("x-opt-a"), Value::from("text")),
        (
            Value::Ulong(7),
            Value::List(vec![Value::Null, Value::Int(-1)]),
        ),
    ];
    let settle = |outcome| Command::Settle {
        queue: "q".into(),
        seq: 3,
        outcome,
    };
    vec![
        Command::Declare {
            queue: "q".into(),
            config: Box::default(),
        },
        Command::Declare {
            queue: "ünïcode".into(),
            config: Box::new(config),
        },
        Command::Delete { queue: "q".into() },
        Command::Enqueue {
            queue: "q".into(),
            seq: u64::MAX,
            message,
        },
        Command::Enqueue {
            queue: String::new(),
            seq: 0,
            message: NewMessage {
                body: Bytes::new(),
                ..transient("")
            },
        },
        Command::Attach {
            consumer: u64::MAX,
            queue: "q".into(),
            browse: true,
            filter: Some(selector("k BETWEEN 1 AND 2")),
        },
        Command::Attach {
            consumer: 0,
            queue: "q".into(),
            browse: false,
            filter: None,
        },
        Command::Credit {
            consumer: 7,
            credit: u32::MAX,
            drain: true,
        },
        Command::Credit {
            consumer: 0,
            credit: 0,
            drain: false,
        },
        settle(Outcome::Accepted),
        settle(Outcome::Released),
        settle(Outcome::Rejected),
        settle(modified(false, false)),
        settle(Outcome::Modified {
            delivery_failed: true,
            undeliverable_here: true,
            annotations,
        }),
        Command::Detach { consumer: 3 },
        Command::Purge {
            queue: "q".into(),
            except: Seqs::default(),
        },
        Command::Move {
            from: "q".into(),
            to: "dlq".into(),
            max: u64::MAX,
            except: Seqs([1, 7, u64::MAX].into_iter().collect()),
        },
        Command::Expire,
        Command::Transaction { work: Vec::new() },
        Command::Transaction {
            work: vec![
                Guarded {
                    guard: None,
                    command: Command::Enqueue {
                        queue: "q".into(),
                        seq: 9,
                        message: transient("t"),
                    },
                },
                Guarded {
                    guard: Some(u64::MAX),
                    command: settle(Outcome::Accepted),
                },
            ],
        },
    ]
}

/// A transaction is a log record: its encoding is a format.
#[test]
fn the_transaction_encoding_is_stable() {
    let command = every_command().pop().expect("a transaction last");
    let hex: String = command
        .encode()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    insta::assert_snapshot!(hex);
}

/// A transaction holds enqueues and settles only: never another
/// transaction, nor a command that is not a transaction's to make.
#[test]
fn a_transaction_of_other_commands_is_refused() {
    for inner in [Command::Expire, Command::Transaction { work: Vec::new() }] {
        let guarded = record(0x12, |f| {
            f.field(&0_u64).field(&inner);
        });
        let transaction = record(0x09, |f| {
            f.field(&RawList(vec![guarded]));
        });
        assert_eq!(
            kind(transaction),
            DecodeErrorKind::InvalidValue,
            "{inner:?}"
        );
    }
}

/// A list of already encoded values.
struct RawList(Vec<Bytes>);

impl Encode for RawList {
    fn encode(&self, buf: &mut BytesMut) {
        let items: Vec<RawValue> = self.0.iter().cloned().map(RawValue).collect();
        crate::amqp::codec::encode_list_of(buf, &items);
    }
}

#[test]
fn every_command_round_trips() {
    for command in every_command() {
        let bytes = command.encode();
        let decoded = Command::decode(bytes.clone()).expect("decodes");
        assert_eq!(decoded, command);
        assert_eq!(decoded.encode(), bytes, "one encoding per command");
    }
}

#[test]
fn every_truncation_of_a_command_is_an_error() {
    for command in every_command() {
        let bytes = command.encode();
        for len in 0..bytes.len() {
            assert!(
                Command::decode(bytes.slice(..len)).is_err(),
                "{command:?} cut at {len}"
            );
        }
    }
}

/// A described list with descriptor `DOMAIN | id`.
fn record(id: u64, fields: impl FnOnce(&mut FieldEncoder<'_>)) -> Bytes {
    let mut buf = BytesMut::new();
    encode_descriptor(&mut buf, &Descriptor::Code(DOMAIN | id));
    encode_list(&mut buf, fields);
    buf.freeze()
}

fn kind(bytes: Bytes) -> DecodeErrorKind {
    Command::decode(bytes).expect_err("must not decode").kind
}

#[test]
fn command_decoding_is_strict() {
    let mut trailing = BytesMut::from(&Command::Expire.encode()[..]);
    trailing.extend_from_slice(&[0x40]);
    assert_eq!(kind(trailing.freeze()), DecodeErrorKind::TrailingBytes);
    assert_eq!(
        kind(record(0xff, |_| {})),
        DecodeErrorKind::UnexpectedDescriptor
    );
    // A plain list is not a command.
    assert!(matches!(
        kind(Bytes::from_static(&[0x45])),
        DecodeErrorKind::UnexpectedConstructor { .. }
    ));
    // Detach: an extra non-null field, a missing one, a mistyped one.
    let extra = record(0x07, |f| {
        f.field(&1_u64).field(&true);
    });
    assert_eq!(kind(extra), DecodeErrorKind::TrailingBytes);
    let missing = Command::decode(record(0x07, |_| {})).expect_err("missing");
    assert_eq!(missing.kind, DecodeErrorKind::MissingField);
    assert_eq!(missing.field, Some("consumer"));
    let mistyped = record(0x07, |f| {
        f.field(&1_u32);
    });
    assert!(matches!(
        kind(mistyped),
        DecodeErrorKind::UnexpectedConstructor { .. }
    ));
}

#[test]
fn outcome_and_overflow_decoding_is_strict() {
    let settle_with = |outcome: &dyn Encode| {
        record(0x06, |f| {
            f.field("q").field(&1_u64).field(outcome);
        })
    };
    let rejected_with_error = crate::amqp::types::Rejected {
        error: Some(crate::amqp::types::Error {
            condition: Symbol::from_static("amqp:internal-error"),
            description: None,
            info: Vec::new(),
        }),
    };
    assert_eq!(
        kind(settle_with(&rejected_with_error)),
        DecodeErrorKind::InvalidValue
    );
    let received = crate::amqp::types::Received {
        section_number: 0,
        section_offset: 0,
    };
    assert_eq!(kind(settle_with(&received)), DecodeErrorKind::InvalidValue);

    let declare_with_overflow = |overflow: &str| {
        let config = record(0x10, |f| {
            f.field(&true).field(&Value::Null).field(&Value::Null);
            f.field(&Symbol::new(overflow).expect("ascii"));
        });
        record(0x01, |f| {
            f.field("q").field(&RawValue(config));
        })
    };
    let good = Command::decode(declare_with_overflow("drop-head")).expect("decodes");
    assert!(matches!(
        good,
        Command::Declare { config, .. } if config.overflow == Overflow::DropHead
    ));
    assert_eq!(
        kind(declare_with_overflow("drop-tail")),
        DecodeErrorKind::InvalidValue
    );
}

/// Already encoded bytes, written as they are.
struct RawValue(Bytes);

impl Encode for RawValue {
    fn encode(&self, buf: &mut BytesMut) {
        buf.extend_from_slice(&self.0);
    }
}

/// A seq set is 8 bytes a seq, each once: anything else is refused.
#[test]
fn a_malformed_seq_set_is_refused() {
    let purge = |except: &[u8]| {
        record(0x0a, |f| {
            f.field(&"q".to_owned())
                .field(&Bytes::copy_from_slice(except));
        })
    };
    let seq = 5_u64.to_be_bytes();
    assert!(Command::decode(purge(&seq)).is_ok());
    assert!(Command::decode(purge(&seq[..7])).is_err());
    assert!(Command::decode(purge(&[seq, seq].concat())).is_err());
}

/// The `queue_state` fuzz target's seeds are real states (the queues'
/// part of the group states in `node::state`'s encoding snapshots): each
/// decodes whole and re-encodes to its own bytes, so the fuzzer starts
/// from inputs that reach every part of the decoder, and a change of the
/// encoding must renew them.
#[test]
fn the_queue_state_fuzz_seeds_decode_and_re_encode_to_their_bytes() {
    let seeds: [&[u8]; 2] = [
        include_bytes!("../../../../fuzz/corpus/queue_state/seed-queue-types"),
        include_bytes!("../../../../fuzz/corpus/queue_state/seed-topic-copies"),
    ];
    for seed in seeds {
        let queues = from_whole(Bytes::from_static(seed));
        assert_eq!(whole(&queues), seed);
    }
}

/// Found by the `queue_state` fuzz target: a state whose message was
/// delivered before (or is held) yet is marked never acquired broke the
/// queue's invariants once restored. The decoder refuses it.
#[test]
fn the_fuzz_crash_that_found_a_held_message_never_acquired_is_refused() {
    let mut input = Bytes::from_static(include_bytes!(
        "../../../../fuzz/corpus/queue_state/seed-crash-held-unacquired"
    ));
    let Err(error) = Queues::decode_whole(&mut input) else {
        panic!("the state was taken");
    };
    assert_eq!(error.kind, DecodeErrorKind::InvalidValue, "{error}");
    assert_eq!(error.field, Some("acquired_before"), "{error}");
}

/// Found by the `queue_state` fuzz target, once the decoder refused the
/// crash above: a state with one seq in two queues broke the machine's
/// invariants once restored. It is refused.
#[test]
fn the_fuzz_crash_that_found_a_seq_in_two_queues_is_refused() {
    let mut input = Bytes::from_static(include_bytes!(
        "../../../../fuzz/corpus/queue_state/seed-crash-seq-in-two-queues"
    ));
    assert!(Queues::decode_whole(&mut input).is_err());
}
