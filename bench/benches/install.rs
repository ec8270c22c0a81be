//! SA installs per second through the shared-memory ring (goal ≥ 500k/s): a control thread
//! encodes AddSa records and pushes them; the dataplane side pops them and hands them to the
//! dataplane's `Installer` — the same code the dataplane binary runs — which decodes,
//! expands the keys (`InboundSa::new`), publishes into the lock-free SPI table and writes
//! an Ack. The ring transport alone (`--bench ring`) is the baseline.
//!
//! Run: `cargo bench -p bench --bench install`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::control::install::{Installer, NoSteering};
use dataplane::crypto::{EspTransform, SaKeys};
use dataplane::esp::{SaConfig, SelectorSet, TrafficSelector};
use dataplane::sa::sadb::SaDb;
use dataplane::sa::Direction;
use dataplane::shm::records::{
    encode_add_sa, status, DataplaneRecord, SaInstall, MAX_RECORD, SLOT_SIZE,
};
use dataplane::shm::{RingDir, ShmFile};

const N: u32 = 50_000;

fn bench_install(c: &mut Criterion) {
    let name = format!("vpnring-install-{}", std::process::id());
    let shm = ShmFile::create(&name, 4096, SLOT_SIZE).unwrap();
    let mut g = c.benchmark_group("sa-install");
    g.throughput(Throughput::Elements(u64::from(N)));
    g.bench_function("add-sa-via-ring/aes128gcm16", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let db = std::sync::Arc::new(SaDb::with_capacity(N as usize, 16));
                let mut installer = Installer::new(db);
                let mut acks = Vec::with_capacity(1);
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
                        let inst = SaInstall {
                            direction: Direction::Inbound,
                            reqid: 0,
                            update: false,
                            resource: None,
                            config: cfg,
                        };
                        let n = encode_add_sa(&mut buf, i, &inst).unwrap();
                        p.push(&buf[..n], Duration::from_secs(10)).unwrap();
                    }
                });
                let mut buf = [0u8; MAX_RECORD];
                let mut got = 0;
                while got < N {
                    match cons.pop(&mut buf) {
                        Some(n) => {
                            installer.apply_bytes(&buf[..n], &mut NoSteering, &mut acks);
                            assert!(matches!(
                                acks.pop(),
                                Some(DataplaneRecord::Ack {
                                    status: status::OK,
                                    ..
                                })
                            ));
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
