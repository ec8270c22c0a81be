//! Model checks (loom) of the state several workers share on one SA: the outbound
//! sequence counter and the inbound anti-replay window, on the real engine code.
//! Run by `scripts/test.sh`: `cargo test -p dataplane --features loom --lib loom_`.

use super::*;
use crate::crypto::{EspTransform, SaKeys};
use crate::wire::{ip::IpProtocol, Ipv4Repr};
use loom::sync::Arc;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

/// Two workers reserving batches on one SA near its limit: every number is handed out
/// once, none past the limit, and together they use them all.
#[test]
fn loom_sequence_numbers_are_unique() {
    model(|| {
        let c = Arc::new(seq::SeqCounter::with_limit(5));
        let t = {
            let c = Arc::clone(&c);
            loom::thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..2 {
                    if let Some(r) = c.reserve(2) {
                        got.extend(r);
                    }
                }
                got
            })
        };
        let mut all = Vec::new();
        for _ in 0..2 {
            if let Some(r) = c.reserve(2) {
                all.extend(r);
            }
        }
        all.extend(t.join().unwrap());
        all.sort();
        assert_eq!(all, vec![1, 2, 3, 4, 5]);
    });
}

fn packet() -> Vec<u8> {
    let payload = b"loom";
    let mut p = vec![0u8; 20 + 8 + payload.len()];
    Ipv4Repr {
        src: [10, 1, 0, 2].into(),
        dst: [10, 2, 0, 2].into(),
        protocol: IpProtocol::UDP,
        payload_len: 8 + payload.len(),
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
    }
    .emit(&mut p)
    .unwrap();
    p[20..22].copy_from_slice(&1000u16.to_be_bytes());
    p[22..24].copy_from_slice(&2000u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

fn frame(bytes: &[u8]) -> Frame<Vec<u8>> {
    Frame::with_packet(vec![0u8; 256], 64, bytes).unwrap()
}

/// Two workers receive copies of the same ESP packets (a duplicate on the wire, or an
/// attacker's replay) at the same time: whatever the interleaving of their window checks,
/// decryptions and accepts, each sequence number is accepted exactly once.
#[test]
fn loom_replay_window_accepts_each_number_once() {
    model(|| {
        let cfg = SaConfig::tunnel(
            0x1000,
            EspTransform::AES_GCM_128,
            SaKeys::new(&[7; 20], &[]),
            [192, 0, 2, 1].into(),
            [192, 0, 2, 2].into(),
        );
        let out = OutboundSa::new(cfg.clone()).unwrap();
        let inb = Arc::new(InboundSa::new(cfg).unwrap());
        let mut wire = Vec::new();
        for _ in 0..2 {
            let mut f = frame(&packet());
            assert!(encap(&out, &mut f).is_forward());
            wire.push(f.data().to_vec());
        }
        let wire = Arc::new(wire);
        let worker = |inb: Arc<InboundSa>, wire: Arc<Vec<Vec<u8>>>| {
            let mut fs: Vec<_> = wire.iter().map(|w| frame(w)).collect();
            let mut v = [Verdict::Forward; 2];
            decap_batch(&*inb, &mut fs, &mut v);
            v.map(|v| v.is_forward() as u32)
        };
        let t = {
            let (inb, wire) = (Arc::clone(&inb), Arc::clone(&wire));
            loom::thread::spawn(move || worker(inb, wire))
        };
        let a = worker(Arc::clone(&inb), Arc::clone(&wire));
        let b = t.join().unwrap();
        assert_eq!([a[0] + b[0], a[1] + b[1]], [1, 1], "accepted {a:?} + {b:?}");
        let c = inb.counters();
        assert_eq!(c.packets, 2);
        assert_eq!(c.drops.get(DropReason::ReplayDuplicate), 2);
    });
}
