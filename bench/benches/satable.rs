//! Inbound SA lookup by SPI at 1k, 100k and 1M installed SAs (goal: ≤ 10 ns at 1M), random
//! SPIs, one reader thread: the worker's replica (what the dataplane uses) one lookup at a
//! time and batched (`get_batch`), the lock-free master table (arc-swap), and a
//! `std::collections::HashMap` of the same SPIs as the baseline in the same run. The
//! `hot` probes are 4096 SPIs repeated (their SAs stay in cache, as in the issue's ~19 ns);
//! the `cold` probes 2^20 random SPIs (every lookup a cache miss at 1M).
//!
//! `sa-manual-install`: installing N manually keyed SPIs (RFC 4301 §4.5) into the master
//! table, against the old overflow path (a map copied whole on each insert: quadratic) in
//! the same run.
//!
//! Run: `cargo bench -p bench --bench satable`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataplane::sa::satable::{SpiReplica, SpiTable};

const LOOKUPS: usize = 4096;
const COLD_LOOKUPS: usize = 1 << 20;

fn shuffled(spis: &[u32], n: usize) -> Vec<u32> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            spis[(x % spis.len() as u64) as usize]
        })
        .collect()
}

fn bench_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("sa-lookup");
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    for n in [1_000usize, 100_000, 1_000_000] {
        let table: SpiTable<[u64; 4]> = SpiTable::new();
        let mut spis = Vec::with_capacity(n);
        for i in 0..n {
            spis.push(table.allocate(|_| [i as u64; 4]).unwrap());
        }
        let probe = shuffled(&spis, LOOKUPS);
        g.bench_function(format!("spi-table/{n}"), |b| {
            b.iter(|| {
                let mut acc = 0u64;
                for &spi in &probe {
                    if let Some(sa) = table.get(black_box(spi)) {
                        acc = acc.wrapping_add(sa[0]);
                    }
                }
                acc
            })
        });
        // What the workers read: their own replica of the table.
        let replica = SpiReplica::from_table(&table);
        let mut out = vec![None; LOOKUPS];
        g.bench_function(format!("worker-replica-batch/{n}"), |b| {
            b.iter(|| {
                replica.get_batch(black_box(&probe), &mut out);
                out.iter()
                    .flatten()
                    .fold(0u64, |acc, sa| acc.wrapping_add(sa[0]))
            })
        });
        g.bench_function(format!("worker-replica/{n}"), |b| {
            b.iter(|| {
                let mut acc = 0u64;
                for &spi in &probe {
                    if let Some(sa) = replica.get(black_box(spi)) {
                        acc = acc.wrapping_add(sa[0]);
                    }
                }
                acc
            })
        });
        if n == 1_000_000 {
            let cold = shuffled(&spis, COLD_LOOKUPS);
            let mut out = vec![None; COLD_LOOKUPS];
            g.throughput(Throughput::Elements(COLD_LOOKUPS as u64));
            g.bench_function(format!("worker-replica-cold/{n}"), |b| {
                b.iter(|| {
                    let mut acc = 0u64;
                    for &spi in &cold {
                        if let Some(sa) = replica.get(black_box(spi)) {
                            acc = acc.wrapping_add(sa[0]);
                        }
                    }
                    acc
                })
            });
            g.bench_function(format!("worker-replica-batch-cold/{n}"), |b| {
                b.iter(|| {
                    replica.get_batch(black_box(&cold), &mut out);
                    out.iter()
                        .flatten()
                        .fold(0u64, |acc, sa| acc.wrapping_add(sa[0]))
                })
            });
            g.throughput(Throughput::Elements(LOOKUPS as u64));
        }
        let map: HashMap<u32, Arc<[u64; 4]>> =
            spis.iter().map(|&s| (s, Arc::new([1u64; 4]))).collect();
        g.bench_function(format!("std-hashmap-baseline/{n}"), |b| {
            b.iter(|| {
                let mut acc = 0u64;
                for &spi in &probe {
                    if let Some(sa) = map.get(&black_box(spi)) {
                        acc = acc.wrapping_add(sa[0]);
                    }
                }
                acc
            })
        });
    }
    g.finish();
}

/// The overflow map as it was: replaced copy-on-write, whole, on every insert.
struct OldOverflow(ArcSwap<HashMap<u32, Arc<[u64; 4]>>>);
impl OldOverflow {
    fn insert(&self, spi: u32, v: [u64; 4]) {
        let mut m = HashMap::clone(&self.0.load());
        m.insert(spi, Arc::new(v));
        self.0.store(Arc::new(m));
    }
}

fn bench_manual_install(c: &mut Criterion) {
    let mut g = c.benchmark_group("sa-manual-install");
    for n in [1_000u32, 10_000, 100_000] {
        g.throughput(Throughput::Elements(u64::from(n)));
        // The old path at 100k takes minutes (what the issue measured at dataplane start).
        if n <= 10_000 {
            g.bench_function(format!("old-overflow-copy/{n}"), |b| {
                b.iter_batched(
                    || OldOverflow(ArcSwap::from_pointee(HashMap::new())),
                    |t| {
                        for i in 0..n {
                            t.insert(0x1000 + i, [u64::from(i); 4]);
                        }
                        t
                    },
                    BatchSize::PerIteration,
                )
            });
        }
        g.bench_function(format!("spi-table-buckets/{n}"), |b| {
            b.iter_batched(
                SpiTable::<[u64; 4]>::new,
                |t| {
                    for i in 0..n {
                        t.insert(0x1000 + i, [u64::from(i); 4]).unwrap();
                    }
                    t
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(2));
    targets = bench_lookup, bench_manual_install
}
criterion_main!(benches);
