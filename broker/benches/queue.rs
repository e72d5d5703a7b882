//! Queue state machine micro-benchmark: one message's life on a durable
//! queue with one consumer holding credit: enqueue, deliver (the credit top
//! up that the broker sends as a flow), settle accepted.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sluice::queue::{Command, Effect, NewMessage, Outcome, QueueConfig, Queues};

const QUEUE: &str = "bench";
const CONSUMER: u64 = 1;

fn setup() -> (Queues, Vec<Effect>) {
    let mut queues = Queues::new();
    let mut effects = Vec::new();
    queues.apply(
        0,
        Command::Declare {
            queue: QUEUE.to_owned(),
            config: QueueConfig {
                durable: true,
                ..QueueConfig::default()
            },
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
        priority: 4,
        group: None,
        deliver_at_ms: None,
    }
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
