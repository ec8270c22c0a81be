//! The shared-memory ring: records per second through one ring, producer and consumer on
//! two threads (the transport under SA installs; the SA codec adds its own cost).
//!
//! Run: `cargo bench -p bench --bench ring`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::shm::{RingDir, ShmFile};

fn bench_ring(c: &mut Criterion) {
    let name = format!("vpnring-bench-{}", std::process::id());
    let shm = ShmFile::create(&name, 4096, 256).unwrap();
    let mut g = c.benchmark_group("shm-ring");
    const N: u64 = 100_000;
    g.throughput(Throughput::Elements(N));
    for size in [64usize, 200] {
        g.bench_function(format!("push-pop-2-threads/{size}B"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut p = shm.producer(RingDir::ToDataplane);
                    let mut cons = shm.consumer(RingDir::ToDataplane);
                    let start = Instant::now();
                    let t = std::thread::spawn(move || {
                        let rec = vec![0xa5u8; size];
                        for _ in 0..N {
                            p.push(&rec, Duration::from_secs(10)).unwrap();
                        }
                    });
                    let mut buf = [0u8; 256];
                    let mut got = 0;
                    while got < N {
                        if cons.pop(&mut buf).is_some() {
                            got += 1;
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                    t.join().unwrap();
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
    let _ = ShmFile::unlink(&name);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = bench_ring
}
criterion_main!(benches);
