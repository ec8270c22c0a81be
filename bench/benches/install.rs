//! SA installs per second through the shared-memory ring (goal ≥ 500k/s): a control thread
//! encodes AddSa records and pushes them; the dataplane side pops, decodes, expands the keys
//! (`InboundSa::new`) and publishes into the lock-free SPI table. The ring transport alone
//! (`--bench ring`) is the baseline.
//!
//! Run: `cargo bench -p bench --bench install`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::crypto::{EspTransform, SaKeys};
use dataplane::esp::{InboundSa, SaConfig, SelectorSet, TrafficSelector};
use dataplane::satable::SpiTable;
use dataplane::shm::records::{decode, encode_add_sa, ControlRecord, MAX_RECORD};
use dataplane::shm::{RingDir, ShmFile};
use dataplane::static_sa::Direction;

const N: u32 = 50_000;

fn bench_install(c: &mut Criterion) {
    let name = format!("vpnring-install-{}", std::process::id());
    let shm = ShmFile::create(&name, 4096, 512).unwrap();
    let mut g = c.benchmark_group("sa-install");
    g.throughput(Throughput::Elements(u64::from(N)));
    g.bench_function("add-sa-via-ring/aes128gcm16", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let table: SpiTable<InboundSa> = SpiTable::with_slots(N as usize);
                let mut p = shm.producer(RingDir::ToDataplane);
                let mut cons = shm.consumer(RingDir::ToDataplane);
                let start = Instant::now();
                let t = std::thread::spawn(move || {
                    let selectors = SelectorSet {
                        local: vec![TrafficSelector::prefix("10.1.0.0/16").unwrap()],
                        remote: vec![TrafficSelector::prefix("10.2.0.0/16").unwrap()],
                    };
                    let mut buf = [0u8; MAX_RECORD];
                    for i in 0..N {
                        let mut cfg = SaConfig::tunnel(
                            0x8000_0000 | i,
                            EspTransform::AES_GCM_128,
                            SaKeys::new(&[i as u8; 20], &[]),
                            [192, 0, 2, 1].into(),
                            [198, 51, 100, (i % 250) as u8].into(),
                        );
                        cfg.selectors = selectors.clone();
                        let n = encode_add_sa(&mut buf, i, Direction::Inbound, &cfg).unwrap();
                        p.push(&buf[..n], Duration::from_secs(10)).unwrap();
                    }
                });
                let mut buf = [0u8; MAX_RECORD];
                let mut got = 0;
                while got < N {
                    match cons.pop(&mut buf) {
                        Some(n) => {
                            let ControlRecord::AddSa { config, .. } = decode(&buf[..n]).unwrap()
                            else {
                                panic!()
                            };
                            let sa = InboundSa::new(config).unwrap();
                            table.allocate(|_| sa).unwrap();
                            got += 1;
                        }
                        None => std::hint::spin_loop(),
                    }
                }
                t.join().unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
    let _ = ShmFile::unlink(&name);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5));
    targets = bench_install
}
criterion_main!(benches);
