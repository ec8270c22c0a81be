//! Inbound SA lookup by SPI at 1k, 100k and 1M installed SAs (goal: ≤ 10 ns at 1M), random
//! SPIs, one reader thread: the worker's replica (what the dataplane uses), the lock-free
//! master table (arc-swap), and a `std::collections::HashMap` of the same SPIs as the
//! baseline in the same run.
//!
//! Run: `cargo bench -p bench --bench satable`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::sa::satable::{SpiReplica, SpiTable};

const LOOKUPS: usize = 4096;

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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = bench_lookup
}
criterion_main!(benches);
