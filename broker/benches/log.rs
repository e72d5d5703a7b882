//! Log micro-benchmarks on a temporary directory with the production seam
//! (`TokioIo`, real files and fsync): one append awaited alone (a batch of
//! one: write + fsync), and 1000 appends in flight at once, which the
//! writer groups into few fsyncs (group commit). The figures depend on the
//! disk's fsync latency more than on the code.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::io::TokioIo;
use sluice::log::{self, LogOptions};

const RECORD: usize = 160;

/// Polls every future together until all are done (what `join_all` does),
/// so that every append is queued before the writer takes a batch.
async fn join_all<T>(futures: Vec<impl Future<Output = T>>) -> Vec<T> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (future, result) in futures.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match Pin::new(future).poll(cx) {
                    Poll::Ready(value) => *result = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn bench_log(c: &mut Criterion) {
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (log, _recovered) = runtime
        .block_on(log::open(TokioIo, dir.path(), LogOptions::default()))
        .expect("a fresh log opens");
    let record = Bytes::from(vec![0x42u8; RECORD]);

    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_fsync_1", |b| {
        b.to_async(&runtime).iter(|| {
            let append = log.append(record.clone());
            async move { append.await.expect("append") }
        });
    });

    for batch in [100usize, 1000] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("group_commit_{batch}"), |b| {
            b.to_async(&runtime).iter(|| {
                // Queue them all before awaiting any: the writer batches
                // whatever is waiting into one write and one fsync.
                let appends: Vec<_> = (0..batch).map(|_| log.append(record.clone())).collect();
                async move {
                    let lsns = join_all(appends).await;
                    assert!(lsns.iter().all(Result::is_ok), "appends succeed");
                    lsns.len()
                }
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
