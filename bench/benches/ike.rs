//! IKE SA setups per second (IKE_SA_INIT + IKE_AUTH with the first Child SA, PSK), our
//! initiator against our responder on one core, sans-IO: no sockets, every message
//! encoded, encrypted, decrypted and parsed. Goal ≥ 5000/s with x25519. Other groups in
//! the same run for comparison.
//!
//! Run: `cargo bench -p bench --bench ike`.

use std::time::Duration;

use control::ike::child::{parse_ts, ChildCfg, EspProposal};
use control::ike::sa::{ChildRequest, Connection, Event, IkeSa, Phase, Random, SpiAllocator};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zeroize::Zeroizing;

/// A fast generator for the benchmark (the daemon uses the OS CSPRNG).
struct Xorshift(u64);
impl Random for Xorshift {
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            c.copy_from_slice(&self.0.to_le_bytes()[..c.len()]);
        }
    }
}

fn conn(initiator: bool, ike: &str) -> Connection {
    let (a, b) = (
        "192.0.2.1:500".parse().unwrap(),
        "192.0.2.2:500".parse().unwrap(),
    );
    let (local, remote, lid, rid, lts, rts) = if initiator {
        (a, b, "gw-a", "gw-b", "10.1.0.0/16", "10.2.0.0/16")
    } else {
        (b, a, "gw-b", "gw-a", "10.2.0.0/16", "10.1.0.0/16")
    };
    Connection {
        name: "bench".into(),
        local,
        remote,
        local_id: lid.into(),
        remote_id: rid.into(),
        psk: Zeroizing::new(b"a benchmark pre-shared key".to_vec()),
        ike: vec![ike.parse().unwrap()],
        children: vec![ChildCfg {
            name: "net".into(),
            esp: vec!["aes128gcm16".parse::<EspProposal>().unwrap()],
            local_ts: vec![parse_ts(lts).unwrap()],
            remote_ts: vec![parse_ts(rts).unwrap()],
            transport: false,
            lifetime: Default::default(),
        }],
        force_encap: false,
        retransmit_ms: 1000,
        retransmit_tries: 5,
        auth: Default::default(),
        fragmentation: Default::default(),
        lifetime: Default::default(),
    }
}

struct OneSpi;
impl SpiAllocator for OneSpi {
    fn alloc_spi(&mut self) -> u32 {
        0x8000_0002
    }
}

fn sends(sa: &mut IkeSa) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| sa.poll_event())
        .filter_map(|e| match e {
            Event::Send { data, .. } => Some(data),
            _ => None,
        })
        .collect()
}

/// One whole setup; returns true when both sides are up.
fn setup(i: &Connection, r: &Connection, rng: &mut Xorshift) -> bool {
    let first = ChildRequest {
        child: 0,
        inbound_spi: 0x8000_0001,
    };
    let mut init = IkeSa::initiate(i.clone(), i.local, i.remote, first, true, 0, rng);
    let m1 = sends(&mut init);
    let Ok(mut resp) = IkeSa::respond(r.clone(), r.local, r.remote, &m1[0], 0, rng) else {
        return false;
    };
    for m in sends(&mut resp) {
        init.handle(0, i.local, i.remote, &m, rng, &mut OneSpi);
    }
    for m in sends(&mut init) {
        resp.handle(0, r.local, r.remote, &m, rng, &mut OneSpi);
    }
    for m in sends(&mut resp) {
        init.handle(0, i.local, i.remote, &m, rng, &mut OneSpi);
    }
    init.phase() == Phase::Established && resp.phase() == Phase::Established
}

fn bench_ike(c: &mut Criterion) {
    let mut g = c.benchmark_group("ike-setup");
    g.throughput(Throughput::Elements(1));
    for ike in [
        "aes128gcm16-prfsha256-x25519",
        "aes128gcm16-prfsha256-ecp256",
        "aes256-sha256-modp2048",
    ] {
        let (i, r) = (conn(true, ike), conn(false, ike));
        let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
        assert!(setup(&i, &r, &mut rng));
        g.bench_function(ike, |b| b.iter(|| assert!(setup(&i, &r, &mut rng))));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4));
    targets = bench_ike
}
criterion_main!(benches);
