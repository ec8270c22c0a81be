//! Outbound policy lookup (RFC 4301 §4.4.1) at 100k policies: the tuple-space SPD the
//! workers use, against the ordered list it replaced (the baseline, same run, fewer probes
//! because it is ~10^4 times slower).
//!
//! The policy set is a concentrator's: 90k site-to-site policies (one /16 behind us to a
//! distinct remote /24 each), 10k remote-access policies (/16 to a distinct /32), and a few
//! port-specific bypass/discard rules above them.
//!
//! Run: `cargo bench -p bench --bench spd`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::esp::{FlowKey, TrafficSelector};
use dataplane::policy::spd::{PolicyRule, Spd, SpdAction};

const POLICIES: u32 = 100_000;
const PROBES: usize = 4096;

fn sel(addr: u32, len: u8) -> TrafficSelector {
    TrafficSelector::prefix(&format!("{}/{len}", Ipv4Addr::from(addr))).unwrap()
}

fn rules() -> Vec<PolicyRule> {
    let mut v = Vec::new();
    // Specific rules first (lowest priority value wins).
    v.push(PolicyRule {
        id: 1,
        priority: 10,
        src: sel(0x0a01_0000, 16),
        dst: sel(0, 0).with_protocol(6, (22, 22)),
        action: SpdAction::Discard,
    });
    v.push(PolicyRule {
        id: 2,
        priority: 10,
        src: sel(0x0a01_0000, 16),
        dst: sel(0, 0).with_protocol(17, (53, 53)),
        action: SpdAction::Bypass,
    });
    for i in 0..POLICIES - 2 {
        let (dst, len) = if i < 90_000 {
            (0x6400_0000 + (i << 8), 24) // 100.0.0.0 + i·256 /24
        } else {
            (0xc000_0000 + i, 32) // 192.0.0.0 + i /32
        };
        v.push(PolicyRule {
            id: i + 3,
            priority: 100,
            src: sel(0x0a01_0000, 16),
            dst: sel(dst, len),
            action: SpdAction::Protect { reqid: i + 1 },
        });
    }
    v
}

fn probes(rules: &[PolicyRule], n: usize) -> Vec<FlowKey> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = &rules[2 + (x % (rules.len() as u64 - 2)) as usize];
            let IpAddr::V4(d) = r.dst.start else {
                unreachable!()
            };
            // Any host of a /24, the address itself for a /32.
            let host = if r.dst.start != r.dst.end {
                (x >> 48) as u32 & 0xff
            } else {
                0
            };
            FlowKey {
                src: IpAddr::V4(Ipv4Addr::new(10, 1, (x >> 32) as u8, (x >> 40) as u8)),
                dst: IpAddr::V4(Ipv4Addr::from(u32::from(d) + host)),
                protocol: 6,
                src_port: Some(40000),
                dst_port: Some(443),
            }
        })
        .collect()
}

fn linear(sorted: &[PolicyRule], f: &FlowKey) -> Option<u32> {
    sorted
        .iter()
        .find(|r| {
            r.src.matches(f.src, f.protocol, f.src_port)
                && r.dst.matches(f.dst, f.protocol, f.dst_port)
        })
        .map(|r| r.id)
}

fn bench_spd(c: &mut Criterion) {
    let rules = rules();
    let mut spd = Spd::new();
    let t = std::time::Instant::now();
    for r in &rules {
        spd.insert(r.clone()).unwrap();
    }
    eprintln!(
        "spd: {} policies inserted in {:?} ({} tuples)",
        spd.len(),
        t.elapsed(),
        spd.tuples()
    );
    let probe = probes(&rules, PROBES);
    // Both agree on every probe.
    let mut sorted = rules.clone();
    sorted.sort_by_key(|r| r.priority);
    for f in probe.iter().take(64) {
        assert_eq!(spd.lookup(f).map(|m| m.id), linear(&sorted, f));
    }
    let mut g = c.benchmark_group("spd-lookup");
    g.throughput(Throughput::Elements(PROBES as u64));
    g.bench_function("tuple-space/100k", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for f in &probe {
                if let Some(m) = spd.lookup(black_box(f)) {
                    acc = acc.wrapping_add(m.id);
                }
            }
            acc
        })
    });
    g.throughput(Throughput::Elements(16));
    g.bench_function("linear-list-baseline/100k", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for f in probe.iter().take(16) {
                if let Some(id) = linear(&sorted, black_box(f)) {
                    acc = acc.wrapping_add(id);
                }
            }
            acc
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(3));
    targets = bench_spd
}
criterion_main!(benches);
