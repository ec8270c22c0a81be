//! The worker loop on in-memory ports: two gateways' workers wired back to back, packets
//! from client A come out at client B decrypted, with TTL decremented once per gateway.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use common::*;
use dataplane::control::install::{install_static, Installer, NoSteering};
use dataplane::control::static_sa::StaticConfig;
use dataplane::io::MemIo;
use dataplane::io::Side;
use dataplane::route::hops::{Hop, HopCache, HopTable};
use dataplane::sa::sadb::SaDb;
use dataplane::worker::{GatewayAddrs, Worker, WorkerCounter, WorkerDrop, WorkerStats};

const MAC_CA: [u8; 6] = [2, 0, 0, 0, 0xca, 0];
const MAC_GA_IN: [u8; 6] = [2, 0, 0, 0, 0xa1, 0];
const MAC_GA_OUT: [u8; 6] = [2, 0, 0, 0, 0xa2, 0];
const MAC_GB_OUT: [u8; 6] = [2, 0, 0, 0, 0xb2, 0];
const MAC_GB_IN: [u8; 6] = [2, 0, 0, 0, 0xb1, 0];
const MAC_CB: [u8; 6] = [2, 0, 0, 0, 0xcb, 0];

fn sa_file(
    local: &str,
    remote: &str,
    out_spi: u32,
    in_spi: u32,
    v6_inner: bool,
    nat_t: bool,
) -> String {
    let (lp, rp) = if v6_inner {
        ("2001:db8:a::/48", "2001:db8:b::/48")
    } else {
        ("10.1.0.0/16", "10.2.0.0/16")
    };
    let (lts, rts) = if out_spi == 0x1001 {
        (lp, rp)
    } else {
        (rp, lp)
    };
    format!(
        r#"
[[sa]]
name = "out"
direction = "out"
spi = {out_spi}
proposal = "aes128gcm16"
enc_key = "{k}"
mode = "tunnel"
local = "{local}"
remote = "{remote}"
nat_t = {nat_t}
local_ts = ["{lts}"]
remote_ts = ["{rts}"]

[[sa]]
name = "in"
direction = "in"
spi = {in_spi}
proposal = "aes128gcm16"
enc_key = "{k}"
mode = "tunnel"
local = "{local}"
remote = "{remote}"
nat_t = {nat_t}
local_ts = ["{lts}"]
remote_ts = ["{rts}"]

[[policy]]
src = "{lts}"
dst = "{rts}"
action = "protect"
sa = "out"
"#,
        k = "000102030405060708090a0b0c0d0e0f10111213"
    )
}

fn gateway(
    file: &str,
    hops: &[(Side, IpAddr, [u8; 6], [u8; 6])],
    mtu: u16,
    gw: GatewayAddrs,
) -> Worker<MemIo> {
    let cfg = StaticConfig::parse(Path::new("test.toml"), file).unwrap();
    let db = Arc::new(SaDb::with_capacity(1024, 64));
    install_static(&mut Installer::new(Arc::clone(&db)), &cfg, &mut NoSteering).unwrap();
    let cache = Arc::new(HopCache::default());
    let mut t = HopTable::default();
    for &(side, dst, src_mac, dst_mac) in hops {
        t.map.insert(
            (side, dst),
            Hop {
                src_mac,
                dst_mac,
                mtu,
            },
        );
    }
    cache.publish(t);
    Worker::new(
        MemIo::new(256, 2048),
        db,
        cache,
        Arc::new(WorkerStats::default()),
        gw,
        64,
    )
}

fn eth(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(if ip[0] >> 4 == 6 {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    });
    f.extend_from_slice(ip);
    f
}

fn pair(v6_outer: bool, v6_inner: bool, nat_t: bool, mtu: u16) -> (Worker<MemIo>, Worker<MemIo>) {
    let (ga, gb) = gw_addrs(v6_outer);
    let (ca, cb) = host_addrs(v6_inner);
    let a = gateway(
        &sa_file(
            &ga.to_string(),
            &gb.to_string(),
            0x1001,
            0x2001,
            v6_inner,
            nat_t,
        ),
        &[
            (Side::Outside, gb, MAC_GA_OUT, MAC_GB_OUT),
            (Side::Inside, ca, MAC_GA_IN, MAC_CA),
        ],
        mtu,
        GatewayAddrs {
            inside_v4: Some([10, 1, 0, 1].into()),
            inside_v6: Some("2001:db8:a::1".parse().unwrap()),
        },
    );
    let b = gateway(
        &sa_file(
            &gb.to_string(),
            &ga.to_string(),
            0x2001,
            0x1001,
            v6_inner,
            nat_t,
        ),
        &[
            (Side::Outside, ga, MAC_GB_OUT, MAC_GA_OUT),
            (Side::Inside, cb, MAC_GB_IN, MAC_CB),
        ],
        mtu,
        GatewayAddrs::default(),
    );
    (a, b)
}

#[test]
fn packets_cross_two_gateways_in_every_family() {
    for (v6_outer, v6_inner, nat_t) in [
        (false, false, false),
        (true, true, false),
        (true, false, true),
        (false, true, true),
    ] {
        let (mut a, mut b) = pair(v6_outer, v6_inner, nat_t, 1500);
        let pkts: Vec<Vec<u8>> = (0..100u8)
            .map(|i| udp_packet(v6_inner, &vec![i; 20 + usize::from(i) * 10], 0))
            .collect();
        for p in &pkts {
            a.io.inject(Side::Inside, &eth(MAC_GA_IN, MAC_CA, p));
        }
        while a.poll_once() > 0 {}
        let wire = a.io.take_sent(Side::Outside);
        assert_eq!(
            wire.len(),
            100,
            "outer v6={v6_outer} inner v6={v6_inner} nat_t={nat_t}"
        );
        for w in &wire {
            assert_eq!(&w[..12], &[MAC_GB_OUT, MAC_GA_OUT].concat()[..]);
            let proto = if v6_outer { w[14 + 6] } else { w[14 + 9] };
            assert_eq!(proto, if nat_t { 17 } else { 50 });
            b.io.inject(Side::Outside, w);
        }
        while b.poll_once() > 0 {}
        let out = b.io.take_sent(Side::Inside);
        assert_eq!(out.len(), 100);
        for (o, p) in out.iter().zip(&pkts) {
            assert_eq!(&o[..12], &[MAC_CB, MAC_GB_IN].concat()[..]);
            let mut want = p.clone();
            // Two routers on the way: TTL 61 → 59 (checksum fixed incrementally).
            if v6_inner {
                want[7] -= 2;
            } else {
                want[8] -= 2;
                want[10..12].copy_from_slice(&[0, 0]);
                let c = dataplane::wire::checksum::checksum(&want[..20]);
                want[10..12].copy_from_slice(&c.to_be_bytes());
            }
            assert_eq!(&o[14..], &want[..]);
        }
        let s = a.stats();
        assert_eq!(s.get(WorkerCounter::Encapsulated), 100);
        assert_eq!(b.stats().get(WorkerCounter::Decapsulated), 100);
    }
}

#[test]
fn outside_policy_is_not_tunnelled_and_too_big_gets_icmp() {
    let (mut a, _) = pair(false, false, false, 1500);
    // No policy for 10.3.0.0/16.
    let mut p = udp_packet(false, b"stray", 0);
    p[16..20].copy_from_slice(&[10, 3, 0, 1]);
    p[10..12].copy_from_slice(&[0, 0]);
    let c = dataplane::wire::checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    a.io.inject(Side::Inside, &eth(MAC_GA_IN, MAC_CA, &p));
    // 1472-byte UDP payload: a 1500-byte packet, DF set, too big for the tunnel.
    let big = udp_packet(false, &vec![0u8; 1472], 0);
    a.io.inject(Side::Inside, &eth(MAC_GA_IN, MAC_CA, &big));
    a.poll_once();
    assert!(a.io.take_sent(Side::Outside).is_empty());
    let back = a.io.take_sent(Side::Inside);
    assert_eq!(back.len(), 1, "one ICMP error back to the sender");
    let icmp = &back[0];
    assert_eq!(&icmp[..6], &MAC_CA);
    assert_eq!(icmp[14 + 9], 1);
    assert_eq!((icmp[34], icmp[35]), (3, 4));
    let mtu = u16::from_be_bytes([icmp[40], icmp[41]]);
    assert!(mtu < 1500 && mtu > 1400, "{mtu}");
    let s = a.stats();
    assert_eq!(
        s.worker_drops[WorkerDrop::NoPolicy as usize].load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        s.worker_drops[WorkerDrop::TooBigIcmpSent as usize]
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // A packet of exactly the advertised MTU passes.
    let fits = udp_packet(false, &vec![0u8; usize::from(mtu) - 28], 0);
    a.io.inject(Side::Inside, &eth(MAC_GA_IN, MAC_CA, &fits));
    a.poll_once();
    let wire = a.io.take_sent(Side::Outside);
    assert_eq!(wire.len(), 1);
    assert!(wire[0].len() - 14 <= 1500);
}

/// SAs and policies arrive through the installer while the worker runs: a packet before
/// any policy is not ours; with a policy but no SA it raises one (rate-limited) acquire;
/// once the SA is installed the same flow is encrypted; deleting the policy stops it.
#[test]
fn sas_installed_while_the_worker_runs() {
    use dataplane::shm::records::{self, DataplaneRecord};
    use dataplane::worker::WorkerEvent;
    let (ga, gb) = gw_addrs(false);
    let cfg = StaticConfig::parse(
        Path::new("live.toml"),
        &sa_file(
            &ga.to_string(),
            &gb.to_string(),
            0x1001,
            0x2001,
            false,
            false,
        ),
    )
    .unwrap();
    let recs = dataplane::control::static_sa::to_records(&cfg).unwrap();
    // SA records come first (out, in), then the policy.
    assert_eq!(recs.len(), 3);
    let db = Arc::new(SaDb::with_capacity(1024, 64));
    let mut inst = Installer::new(Arc::clone(&db));
    let cache = Arc::new(HopCache::default());
    let mut t = HopTable::default();
    t.map.insert(
        (Side::Outside, gb),
        Hop {
            src_mac: MAC_GA_OUT,
            dst_mac: MAC_GB_OUT,
            mtu: 1500,
        },
    );
    cache.publish(t);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut w = Worker::new(
        MemIo::new(256, 2048),
        Arc::clone(&db),
        cache,
        Arc::new(WorkerStats::default()),
        GatewayAddrs::default(),
        64,
    )
    .with_events(tx);
    let send = |w: &mut Worker<MemIo>, n: usize| {
        for _ in 0..n {
            let p = udp_packet(false, b"live", 0);
            w.io.inject(Side::Inside, &eth(MAC_GA_IN, MAC_CA, &p));
        }
        while w.poll_once() > 0 {}
        w.io.take_sent(Side::Outside).len()
    };
    let drops = |w: &Worker<MemIo>, d: WorkerDrop| {
        w.stats().worker_drops[d as usize].load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(send(&mut w, 3), 0);
    assert_eq!(drops(&w, WorkerDrop::NoPolicy), 3);

    let mut acks = Vec::new();
    inst.apply_bytes(&recs[2].bytes, &mut NoSteering, &mut acks);
    assert_eq!(send(&mut w, 3), 0);
    assert_eq!(drops(&w, WorkerDrop::NoSa), 3);
    let events: Vec<_> = rx.try_iter().collect();
    assert_eq!(
        events.len(),
        1,
        "one acquire per policy per second: {events:?}"
    );
    assert!(matches!(
        &events[0],
        WorkerEvent::Acquire { policy: 1, reqid: 1, flow }
            if flow.dst == host_addrs(false).1
    ));

    inst.apply_bytes(&recs[0].bytes, &mut NoSteering, &mut acks);
    assert_eq!(send(&mut w, 5), 5, "encrypted once the SA is installed");
    assert!(acks.iter().all(|a| matches!(
        a,
        DataplaneRecord::Ack {
            status: records::status::OK,
            ..
        }
    )));

    let mut b = [0u8; 64];
    let n = records::encode_delete_policy(&mut b, 9, 1);
    inst.apply_bytes(&b[..n], &mut NoSteering, &mut acks);
    assert_eq!(send(&mut w, 2), 0);
    assert_eq!(drops(&w, WorkerDrop::NoPolicy), 5);
}
