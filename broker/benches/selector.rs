//! Selector micro-benchmarks: the cost, per message, of testing a consumer's
//! JMS selector, reading the message's fields from its bytes included (as
//! the broker does for each message it offers a filtering consumer).
//!
//! The message carries a 10 KB property of `a`s beside `instrument`. The
//! plain comparison is the baseline; the LIKE patterns are the bad cases:
//! - `'%a%a%a%a%a%a%a%a%b'` backtracks exponentially in a naive matcher,
//!   and here fails at once on the anchored last segment (`b`);
//! - `'%aaaaaaaab%'` makes the matcher scan the whole text for a plain
//!   segment (substring search, linear);
//! - `'%a_a_a_a_a_a_a_a_b%'` scans the whole text for a segment with `_`
//!   (shift-and: linear in the text times the segment's 64-bit words).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice::amqp::codec::{Described, Descriptor, Symbol, Value};
use sluice::amqp::types::{Header, Message, Properties, Section};
use sluice::selector::{Filter, JMS_SELECTOR_NAME, MessageFields};

const LONG_BYTES: usize = 10 * 1024;

fn message() -> Bytes {
    Message {
        sections: vec![
            Section::Header(Header {
                durable: true,
                ..Header::default()
            }),
            Section::Properties(Box::new(Properties {
                subject: Some("quote".into()),
                ..Properties::default()
            })),
            Section::ApplicationProperties(vec![
                ("instrument".into(), Value::from("EURUSD")),
                ("note".into(), Value::from("a".repeat(LONG_BYTES))),
            ]),
            Section::Data(Bytes::from_static(b"1.0842")),
        ],
    }
    .encode()
}

fn selector(text: &str) -> Filter {
    let value = Value::from(Described {
        descriptor: Descriptor::Name(Symbol::from_static(JMS_SELECTOR_NAME)),
        value: Value::from(text),
    });
    Filter::from_source_entry(&Value::Symbol(Symbol::from_static("jms")), &value)
        .expect("the selector parses")
        .expect("a known filter type")
}

fn selectors(c: &mut Criterion) {
    let bytes = message();
    let mut group = c.benchmark_group("selector");
    group.throughput(Throughput::Elements(1));
    group.bench_function("read_fields_only", |b| {
        b.iter(|| black_box(MessageFields::read(&bytes).expect("decodes")))
    });
    let cases = [
        ("eq", "instrument = 'EURUSD'", true),
        (
            "like_many_percents",
            "note LIKE '%a%a%a%a%a%a%a%a%b'",
            false,
        ),
        ("like_literal_scan", "note LIKE '%aaaaaaaab%'", false),
        (
            "like_wildcard_scan",
            "note LIKE '%a_a_a_a_a_a_a_a_b%'",
            false,
        ),
    ];
    for (name, text, expected) in cases {
        let filter = selector(text);
        let fields = MessageFields::read(&bytes).expect("decodes");
        assert_eq!(filter.matches(&fields), expected, "{text}");
        group.bench_with_input(BenchmarkId::new("read_and_match", name), &filter, |b, f| {
            b.iter(|| {
                let fields = MessageFields::read(&bytes).expect("decodes");
                black_box(f.matches(&fields))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = selectors
}
criterion_main!(benches);
