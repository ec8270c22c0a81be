//! Stress tests of one SA shared by several threads, with the real engine (the loom models
//! in `src/esp/loom_model.rs` cover every interleaving of the small cases):
//! - outbound: threads sealing on one SA never produce a duplicate sequence number, and
//!   each thread's numbers increase;
//! - inbound: threads opening copies of the same packets accept each number exactly once.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use dataplane::esp::{self, DropReason, Frame, Verdict};

const THREADS: usize = 4;
const PER_THREAD: usize = 4000;
const BATCH: usize = 32;

fn seq_of(wire: &[u8]) -> u32 {
    // IPv4 outer header (20 bytes), then SPI, then the sequence number.
    u32::from_be_bytes(wire[24..28].try_into().unwrap())
}

#[test]
fn threads_sealing_on_one_sa_never_share_a_number() {
    let cfg = config(SHAPES[0], "aes128gcm16", false, false);
    let (out, _) = sa_pair(&cfg);
    let out = Arc::new(out);
    let pkt = udp_packet(false, b"stress", 0);
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (out, pkt) = (Arc::clone(&out), pkt.clone());
            std::thread::spawn(move || {
                let mut seqs = Vec::with_capacity(PER_THREAD);
                let mut v = [Verdict::Forward; BATCH];
                for _ in 0..PER_THREAD / BATCH {
                    let mut fs: Vec<Frame<Vec<u8>>> = (0..BATCH).map(|_| frame(&pkt)).collect();
                    esp::encap_batch(&out, &mut fs, &mut v);
                    assert!(v.iter().all(|v| v.is_forward()));
                    seqs.extend(fs.iter().map(|f| seq_of(f.data())));
                }
                seqs
            })
        })
        .collect();
    let mut all = HashSet::new();
    for h in handles {
        let seqs = h.join().unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "a thread's numbers increase"
        );
        for s in seqs {
            assert!(all.insert(s), "sequence number {s} sent twice");
        }
    }
    assert_eq!(all.len(), THREADS * (PER_THREAD / BATCH) * BATCH);
    assert_eq!(out.last_seq() as usize, all.len());
}

#[test]
fn threads_opening_copies_accept_each_number_once() {
    let cfg = config(SHAPES[0], "aes128gcm16", false, false);
    let (out, inb) = sa_pair(&cfg);
    let inb = Arc::new(inb);
    const N: usize = 3000;
    let wire: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..N)
            .map(|i| {
                let mut f = frame(&udp_packet(false, &[i as u8; 40], 0));
                assert!(esp::encap(&out, &mut f).is_forward());
                f.data().to_vec()
            })
            .collect(),
    );
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (inb, wire) = (Arc::clone(&inb), Arc::clone(&wire));
            std::thread::spawn(move || {
                // Each thread walks the packets in its own order, in batches.
                let mut order: Vec<usize> = (0..N).collect();
                let mut x = 0x9e37_79b9u64 + t as u64;
                for i in (1..N).rev() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Small local shuffles: stays inside the 1024-packet window.
                    let j = i.saturating_sub((x % 64) as usize);
                    order.swap(i, j);
                }
                let mut accepted = vec![0u32; N];
                let mut v = [Verdict::Forward; BATCH];
                for chunk in order.chunks(BATCH) {
                    let mut fs: Vec<Frame<Vec<u8>>> =
                        chunk.iter().map(|&i| frame(&wire[i])).collect();
                    esp::decap_batch(&*inb, &mut fs, &mut v[..chunk.len()]);
                    for (&i, v) in chunk.iter().zip(v.iter()) {
                        match v {
                            Verdict::Forward => accepted[i] += 1,
                            Verdict::Drop(
                                DropReason::ReplayDuplicate | DropReason::ReplayTooOld,
                            ) => {}
                            Verdict::Drop(r) => panic!("packet {i}: unexpected drop {r:?}"),
                        }
                    }
                }
                accepted
            })
        })
        .collect();
    let mut total = vec![0u32; N];
    for h in handles {
        for (t, a) in total.iter_mut().zip(h.join().unwrap()) {
            *t += a;
        }
    }
    let twice: Vec<_> = total.iter().enumerate().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "accepted more than once: {twice:?}");
    // Every number was accepted by some thread unless it fell out of the window first.
    let c = inb.counters();
    assert_eq!(
        c.packets as usize,
        total.iter().filter(|&&n| n == 1).count()
    );
    assert!(
        c.packets as usize > N * 9 / 10,
        "{} of {N} accepted",
        c.packets
    );
}
