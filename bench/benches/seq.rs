//! The multi-worker scheme's cost per packet:
//! - outbound: reserving sequence numbers for a batch of 32 with one CAS, uncontended and
//!   with a second thread hammering the same SA's counter;
//! - inbound: the replay window as the engine uses it with several workers — lock, check,
//!   unlock, (decrypt), lock, accept, unlock — against the same window with no lock (the
//!   single-worker baseline), uncontended and with a second thread on the same SA.
//!
//! Run: `cargo bench -p bench --bench seq`.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::esp::seq::SeqCounter;
use dataplane::esp::ReplayWindow;
use std::sync::Mutex;

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

    let mut g = c.benchmark_group("replay-window");
    g.throughput(Throughput::Elements(BATCH));
    let mut plain = ReplayWindow::new(1024);
    let mut seq = 0u64;
    g.bench_function("batch-32/no-lock-baseline", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                seq += 1;
                black_box(plain.check(seq)).ok();
                black_box(plain.accept(seq)).ok();
            }
        })
    });
    let shared = Arc::new(Mutex::new(ReplayWindow::new(1024)));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let scheme = |w: &Mutex<ReplayWindow>, seq: u64| {
        let ok = w.lock().unwrap().check(seq).is_ok();
        // (the ICV is verified here, outside the lock)
        ok && w.lock().unwrap().accept(seq).is_ok()
    };
    g.bench_function("batch-32/check-and-accept-locked/uncontended", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let s = next.fetch_add(1, Ordering::Relaxed) + 1;
                black_box(scheme(&shared, s));
            }
        })
    });
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (shared, next, stop) = (Arc::clone(&shared), Arc::clone(&next), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let s = next.fetch_add(1, Ordering::Relaxed) + 1;
                black_box(scheme(&shared, s));
            }
        })
    };
    g.bench_function(
        "batch-32/check-and-accept-locked/contended-2-threads",
        |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    let s = next.fetch_add(1, Ordering::Relaxed) + 1;
                    black_box(scheme(&shared, s));
                }
            })
        },
    );
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
