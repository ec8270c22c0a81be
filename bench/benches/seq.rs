//! The multi-worker sequence scheme: cost per packet of reserving numbers for a batch of 32
//! with one CAS, uncontended (baseline, same run) and with a second thread hammering the
//! same SA's counter.
//!
//! Run: `cargo bench -p bench --bench seq`.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::esp::seq::SeqCounter;

const BATCH: u64 = 32;

fn bench_seq(c: &mut Criterion) {
    let mut g = c.benchmark_group("seq-reserve");
    g.throughput(Throughput::Elements(BATCH));
    let counter = Arc::new(SeqCounter::new(true));
    g.bench_function("batch-32/uncontended", |b| {
        b.iter(|| black_box(counter.reserve(BATCH)))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (counter, stop) = (Arc::clone(&counter), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(counter.reserve(BATCH));
            }
        })
    };
    g.bench_function("batch-32/contended-2-threads", |b| {
        b.iter(|| black_box(counter.reserve(BATCH)))
    });
    stop.store(true, Ordering::Relaxed);
    other.join().unwrap();
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = bench_seq
}
criterion_main!(benches);
