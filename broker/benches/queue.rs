//! Queue state machine micro-benchmark: one message's life on a durable
//! queue with one consumer holding credit: enqueue, deliver (the credit top
//! up that the broker sends as a flow), settle accepted; and the same for a
//! consumer whose selector passes over a backlog it does not select.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sluice::amqp::codec::{Described, Descriptor, Symbol, Value};
use sluice::amqp::types::{Message as AmqpMessage, Section};
use sluice::queue::{Command, Effect, MessageFilter, NewMessage, Outcome, QueueConfig, Queues};

const QUEUE: &str = "bench";
const CONSUMER: u64 = 1;

fn setup() -> (Queues, Vec<Effect>) {
    let mut queues = Queues::new();
    let mut effects = Vec::new();
    queues.apply(
        0,
        Command::Declare {
            queue: QUEUE.to_owned(),
            config: Box::new(QueueConfig {
                durable: true,
                ..QueueConfig::default()
            }),
        },
        &mut effects,
    );
    queues.apply(
        0,
        Command::Attach {
            consumer: CONSUMER,
            queue: QUEUE.to_owned(),
            browse: false,
            filter: None,
        },
        &mut effects,
    );
    effects.clear();
    (queues, effects)
}

fn message(body: &Bytes) -> NewMessage {
    NewMessage {
        body: body.clone(),
        durable: true,
        ttl_ms: None,
        absolute_expiry_ms: None,
        message_id: None,
        traits: None,
        copy_of: None,
    }
}

/// A message whose application property `k` is `k`, as a selector sees it.
fn keyed(k: i32) -> NewMessage {
    let sections = vec![
        Section::ApplicationProperties(vec![("k".to_owned(), Value::Int(k))]),
        Section::Data(Bytes::from(vec![0u8; 100])),
    ];
    NewMessage {
        body: AmqpMessage { sections }.encode(),
        ..message(&Bytes::new())
    }
}

/// A queue holding `backlog` messages that a consumer selecting `k = 1`,
/// attached with plenty of credit, does not select.
fn selecting_past(backlog: u64) -> (Queues, Vec<Effect>, u64) {
    let (mut queues, mut effects) = setup();
    queues.apply(0, Command::Detach { consumer: CONSUMER }, &mut effects);
    for seq in 1..=backlog {
        let command = Command::Enqueue {
            queue: QUEUE.to_owned(),
            seq,
            message: keyed(2),
        };
        queues.apply(0, command, &mut effects);
    }
    let selector = Described {
        descriptor: Descriptor::Name(Symbol::from_static("apache.org:selector-filter:string")),
        value: Value::from("k = 1"),
    };
    let entry = (
        Value::Symbol(Symbol::from_static("s")),
        Value::from(selector),
    );
    let filter = MessageFilter::new(&[entry]).expect("parses");
    let attach = Command::Attach {
        consumer: CONSUMER + 1,
        queue: QUEUE.to_owned(),
        browse: false,
        filter: filter.map(Box::new),
    };
    queues.apply(0, attach, &mut effects);
    let credit = Command::Credit {
        consumer: CONSUMER + 1,
        credit: u32::MAX,
        drain: false,
    };
    queues.apply(0, credit, &mut effects);
    effects.clear();
    (queues, effects, backlog)
}

fn queue(c: &mut Criterion) {
    let body = Bytes::from(vec![0u8; 130]);
    let mut group = c.benchmark_group("queue");
    group.throughput(Throughput::Elements(1));

    // Steady state with credit out: enqueue delivers at once, then settle.
    group.bench_function("enqueue_deliver_settle", |b| {
        let (mut queues, mut effects) = setup();
        queues.apply(
            0,
            Command::Credit {
                consumer: CONSUMER,
                credit: u32::MAX,
                drain: false,
            },
            &mut effects,
        );
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            effects.clear();
            queues.apply(
                1,
                Command::Enqueue {
                    queue: QUEUE.to_owned(),
                    seq,
                    message: message(&body),
                },
                &mut effects,
            );
            debug_assert!(effects.iter().any(|e| matches!(e, Effect::Deliver { .. })));
            queues.apply(
                1,
                Command::Settle {
                    queue: QUEUE.to_owned(),
                    seq,
                    outcome: Outcome::Accepted,
                },
                &mut effects,
            );
            black_box(effects.len())
        });
    });

    // A selecting consumer past 10,000 messages it does not select: each
    // selected message enqueued, delivered and settled.
    group.bench_function("selector_past_10000_unselected", |b| {
        let (mut queues, mut effects, mut seq) = selecting_past(10_000);
        b.iter(|| {
            seq += 1;
            effects.clear();
            let enqueue = Command::Enqueue {
                queue: QUEUE.to_owned(),
                seq,
                message: keyed(1),
            };
            queues.apply(1, enqueue, &mut effects);
            debug_assert!(effects.iter().any(|e| matches!(e, Effect::Deliver { .. })));
            let settle = Command::Settle {
                queue: QUEUE.to_owned(),
                seq,
                outcome: Outcome::Accepted,
            };
            queues.apply(1, settle, &mut effects);
            black_box(effects.len())
        });
    });

    // A backlog of 1000 enqueued first, then credit delivers them all and
    // each is settled: the consumer catching up.
    group.throughput(Throughput::Elements(1000));
    group.bench_function("backlog_1000_credit_deliver_settle", |b| {
        b.iter_batched(
            || {
                let (mut queues, mut effects) = setup();
                for seq in 1..=1000 {
                    queues.apply(
                        1,
                        Command::Enqueue {
                            queue: QUEUE.to_owned(),
                            seq,
                            message: message(&body),
                        },
                        &mut effects,
                    );
                }
                effects.clear();
                (queues, effects)
            },
            |(mut queues, mut effects)| {
                queues.apply(
                    2,
                    Command::Credit {
                        consumer: CONSUMER,
                        credit: 1000,
                        drain: false,
                    },
                    &mut effects,
                );
                for seq in 1..=1000 {
                    queues.apply(
                        2,
                        Command::Settle {
                            queue: QUEUE.to_owned(),
                            seq,
                            outcome: Outcome::Accepted,
                        },
                        &mut effects,
                    );
                }
                black_box(effects.len())
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = queue
}
criterion_main!(benches);
