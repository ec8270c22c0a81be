//! IKE SA setups per second (IKE_SA_INIT [+ IKE_INTERMEDIATE] + IKE_AUTH with the first
//! Child SA), our initiator against our responder on one core, sans-IO: no sockets, every
//! message encoded, encrypted, decrypted and parsed. Goal ≥ 5000/s with x25519 and PSK.
//! Other groups, certificate authentication (ECDSA P-256, RSA-3072 with PSS: both sides sign,
//! verify the peer's AUTH and validate its chain root → intermediate → end entity) and the
//! hybrid x25519 + ML-KEM-768 exchange in the same run, for comparison.
//!
//! Run: `cargo bench -p bench --bench ike`.

use std::time::Duration;

use control::ike::child::{parse_ts, ChildCfg, EspProposal};
use control::ike::sa::{ChildRequest, Connection, Event, IkeSa, Phase, Random, SpiAllocator};
use control::pki::load::KeyPermissions;
use control::pki::{AuthConfig, AuthKind, Credentials, TrustStore};
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
            per_resource: 0,
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

/// `conn` authenticating with the test PKI's certificates (control/tests/data/pki): gw-a is
/// RSA-3072 (PSS), gw-b ECDSA P-256; the initiator is `me`, the responder the other.
fn pki_conn(initiator: bool, ike: &str, me: &str, peer: &str) -> Connection {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../control/tests/data/pki");
    let f = |n: &str| dir.join(n);
    let (me, peer) = if initiator { (me, peer) } else { (peer, me) };
    let creds = Credentials::load_with(
        &f(&format!("{me}Cert.pem")),
        &[&f("imCert.pem")],
        &f(&format!("{me}Key.pem")),
        KeyPermissions::AllowLooseForTests,
    )
    .expect("test credentials");
    let trust = TrustStore::load(&[&f("rootCert.pem")], &[], &[]).expect("test anchors");
    let mut c = conn(initiator, ike);
    c.local_id = format!("C=CH, O=example, CN={me}");
    c.remote_id = format!("C=CH, O=example, CN={peer}");
    c.auth = AuthConfig {
        local: AuthKind::Pubkey,
        remote: AuthKind::Pubkey,
        credentials: Some(std::sync::Arc::new(creds)),
        trust: Some(std::sync::Arc::new(trust)),
        ..AuthConfig::default()
    };
    c
}

/// The test certificates are valid from 2026-12-01 for ten years: 2027-06-01.
const BENCH_WALL_CLOCK_MS: u64 = 1_811_808_000_000;

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
    init.set_wall_clock(BENCH_WALL_CLOCK_MS);
    let m1 = sends(&mut init);
    let Ok(mut resp) = IkeSa::respond(r.clone(), r.local, r.remote, &m1[0], 0, rng) else {
        return false;
    };
    resp.set_wall_clock(BENCH_WALL_CLOCK_MS);
    // Back and forth until both are quiet (IKE_INTERMEDIATE adds round trips).
    for _ in 0..8 {
        let to_init = sends(&mut resp);
        if to_init.is_empty() {
            break;
        }
        for m in to_init {
            init.handle(0, i.local, i.remote, &m, rng, &mut OneSpi);
        }
        for m in sends(&mut init) {
            resp.handle(0, r.local, r.remote, &m, rng, &mut OneSpi);
        }
    }
    init.phase() == Phase::Established && resp.phase() == Phase::Established
}

fn bench_ike(c: &mut Criterion) {
    let mut g = c.benchmark_group("ike-setup");
    g.throughput(Throughput::Elements(1));
    let psk = |ike: &str| (conn(true, ike), conn(false, ike));
    let cases = [
        (
            "psk/aes128gcm16-prfsha256-x25519",
            psk("aes128gcm16-prfsha256-x25519"),
        ),
        (
            "psk/aes128gcm16-prfsha256-ecp256",
            psk("aes128gcm16-prfsha256-ecp256"),
        ),
        ("psk/aes256-sha256-modp2048", psk("aes256-sha256-modp2048")),
        (
            "psk/aes256gcm16-prfsha384-x25519-ke1_mlkem768",
            psk("aes256gcm16-prfsha384-x25519-ke1_mlkem768"),
        ),
        (
            "ecdsa-p256/aes128gcm16-prfsha256-x25519",
            (
                pki_conn(true, "aes128gcm16-prfsha256-x25519", "gw-b", "gw-b"),
                pki_conn(false, "aes128gcm16-prfsha256-x25519", "gw-b", "gw-b"),
            ),
        ),
        (
            "rsa3072-pss/aes128gcm16-prfsha256-x25519",
            (
                pki_conn(true, "aes128gcm16-prfsha256-x25519", "gw-a", "gw-a"),
                pki_conn(false, "aes128gcm16-prfsha256-x25519", "gw-a", "gw-a"),
            ),
        ),
    ];
    for (name, (i, r)) in cases {
        let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
        assert!(setup(&i, &r, &mut rng), "{name}: no SA");
        g.bench_function(name, |b| b.iter(|| assert!(setup(&i, &r, &mut rng))));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4));
    targets = bench_ike
}
criterion_main!(benches);
