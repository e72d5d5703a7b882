//! Codec micro-benchmarks: one transfer frame (performative + message) with
//! a 100 B and a 4 KiB body, encoded with `put_transfer_frame` and decoded
//! with `FrameDecoder` (which decodes the performative and slices the
//! payload), plus the message sections themselves.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice::amqp::frame::{Frame, FrameDecoder, Layer, put_transfer_frame};
use sluice::amqp::types::{Header, Message, Section, Transfer};

const MAX_FRAME: usize = 256 * 1024;

fn message(size: usize) -> Bytes {
    Message {
        sections: vec![
            Section::Header(Header {
                durable: true,
                ..Header::default()
            }),
            Section::Data(Bytes::from(vec![0x5a; size])),
        ],
    }
    .encode()
}

fn transfer(id: u32) -> Transfer {
    Transfer {
        handle: 0,
        delivery_id: Some(id),
        delivery_tag: Some(Bytes::copy_from_slice(&u64::from(id).to_be_bytes())),
        message_format: Some(0),
        settled: Some(false),
        ..Transfer::default()
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("transfer_frame");
    for size in [100usize, 4096] {
        let payload = message(size);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("encode", size), &payload, |b, payload| {
            let mut buf = BytesMut::with_capacity(2 * MAX_FRAME);
            let mut id = 0u32;
            b.iter(|| {
                buf.clear();
                let mut t = transfer(id);
                id = id.wrapping_add(1);
                black_box(put_transfer_frame(&mut buf, 0, &mut t, payload, MAX_FRAME));
            });
        });
        let mut encoded = BytesMut::new();
        put_transfer_frame(&mut encoded, 0, &mut transfer(1), &payload, MAX_FRAME);
        let encoded = encoded.freeze();
        let decoder = FrameDecoder::new(MAX_FRAME as u32);
        group.bench_with_input(BenchmarkId::new("decode", size), &encoded, |b, encoded| {
            b.iter(|| {
                let mut buf = BytesMut::from(&encoded[..]);
                let frame = decoder.decode(&mut buf, Layer::Amqp);
                assert!(matches!(frame, Ok(Some(Frame::Amqp { .. }))));
                black_box(frame)
            });
        });
        group.bench_with_input(
            BenchmarkId::new("message_decode", size),
            &payload,
            |b, payload| b.iter(|| black_box(Message::decode(payload.clone()))),
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = codec
}
criterion_main!(benches);
