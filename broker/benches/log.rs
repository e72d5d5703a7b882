//! Log micro-benchmarks on a temporary directory with the production seam
//! (`TokioIo`, real files and fsync): one append awaited alone (a batch of
//! one: write + fsync), and 100 or 1000 records submitted at once, which the
//! writer groups into few fsyncs (group commit). The figures depend on the
//! disk's fsync latency more than on the code.

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::io::TokioIo;
use sluice::log::{self, LogOptions};

const RECORD: usize = 160;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn bench_log(c: &mut Criterion) {
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut log, _recovered) = runtime
        .block_on(log::open(TokioIo, dir.path(), LogOptions::default()))
        .expect("a fresh log opens");
    let record = Bytes::from(vec![0x42u8; RECORD]);

    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_fsync_1", |b| {
        b.iter(|| {
            runtime
                .block_on(log.append(record.clone()))
                .expect("append")
        });
    });

    for batch in [100u64, 1000] {
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("group_commit_{batch}"), |b| {
            b.iter(|| {
                // Submit them all before waiting: the writer takes whatever
                // is waiting as one write and one fsync.
                for _ in 0..batch {
                    log.submit(|buf| buf.extend_from_slice(&record))
                        .expect("a valid record");
                }
                runtime.block_on(async {
                    while log.outstanding() > 0 {
                        let completion = log.completion().await;
                        assert!(completion.outcome.is_ok(), "appends succeed");
                    }
                });
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = bench_log
}
criterion_main!(benches);
