//! ESP encap and decap per packet, at 64, 512 and 1420 bytes of inner packet, for each
//! cipher, in tunnel mode over IPv4 (the common datacenter case).
//!
//! Run: `cargo bench -p bench --bench esp`. Criterion writes its JSON under
//! `target/criterion/`; `scripts/bench-summary.sh` prints a table from it.

use std::hint::black_box;

use bench::inner_packet;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataplane::crypto::{EspTransform, SaKeys};
use dataplane::esp::{self, Frame, InboundSa, OutboundSa, SaConfig, Verdict};

const SIZES: &[usize] = &[64, 512, 1420];
const CIPHERS: &[&str] = &[
    "aes128gcm16",
    "aes256gcm16",
    "chacha20poly1305",
    "aes128-sha256",
];
const BATCH: usize = 32;

fn sa_pair(t: &str) -> (OutboundSa, InboundSa) {
    let t: EspTransform = t.parse().unwrap();
    let keys = SaKeys::new(
        &vec![0x11; t.encryption.key_material_len()],
        &vec![0x22; t.integrity.key_len()],
    );
    let mut cfg = SaConfig::tunnel(
        0x1234_5678,
        t,
        keys,
        [192, 0, 2, 1].into(),
        [192, 0, 2, 2].into(),
    );
    // Benchmarks replay the same packets; the window would drop them.
    cfg.replay_window = None;
    (
        OutboundSa::new(cfg.clone()).unwrap(),
        InboundSa::new(cfg).unwrap(),
    )
}

fn frames(pkt: &[u8]) -> Vec<Frame<Vec<u8>>> {
    (0..BATCH)
        .map(|_| Frame::with_packet(vec![0u8; 2048], 256, pkt).unwrap())
        .collect()
}

/// The baseline in the same run: the raw AEAD seal of the same number of bytes (no headers,
/// padding or trailer), so `encap / raw` is the engine's own overhead.
fn bench_raw_aead(c: &mut Criterion) {
    use dataplane::crypto::SaCrypto;
    let mut g = c.benchmark_group("esp/raw-aead-aes128gcm16");
    let crypto = SaCrypto::new(EspTransform::AES_GCM_128, &SaKeys::new(&[0x11; 20], &[])).unwrap();
    for &size in SIZES {
        g.throughput(Throughput::Elements(BATCH as u64));
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; size + 2]).collect();
        let mut iv = 0u64;
        g.bench_function(format!("seal/{size}"), |b| {
            b.iter(|| {
                for buf in bufs.iter_mut() {
                    iv += 1;
                    black_box(crypto.aead_seal(&iv.to_be_bytes(), &[0u8; 8], buf));
                }
            })
        });
    }
    g.finish();
}

fn bench_esp(c: &mut Criterion) {
    for &cipher in CIPHERS {
        let mut g = c.benchmark_group(format!("esp/{cipher}"));
        for &size in SIZES {
            let pkt = inner_packet(size);
            g.throughput(Throughput::Elements(BATCH as u64));
            let (out, inb) = sa_pair(cipher);
            let mut verdicts = [Verdict::Forward; BATCH];
            g.bench_function(format!("encap/{size}"), |b| {
                b.iter_batched_ref(
                    || frames(&pkt),
                    |fs| {
                        esp::encap_batch(&out, fs, &mut verdicts);
                        black_box(&verdicts);
                    },
                    BatchSize::SmallInput,
                )
            });
            // Decap input: a batch of sealed packets, restored before every iteration.
            let mut sealed = frames(&pkt);
            esp::encap_batch(&out, &mut sealed, &mut verdicts);
            assert!(verdicts.iter().all(|v| v.is_forward()));
            let wire: Vec<Vec<u8>> = sealed.iter().map(|f| f.data().to_vec()).collect();
            g.bench_function(format!("decap/{size}"), |b| {
                b.iter_batched_ref(
                    || {
                        wire.iter()
                            .map(|w| Frame::with_packet(vec![0u8; 2048], 256, w).unwrap())
                            .collect::<Vec<_>>()
                    },
                    |fs| {
                        esp::decap_batch(&inb, fs, &mut verdicts);
                        debug_assert!(verdicts.iter().all(|v| v.is_forward()));
                        black_box(&verdicts);
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench_raw_aead, bench_esp
}
criterion_main!(benches);
