//! Which crate for the ciphers our own engine does not cover: ChaCha20-Poly1305 and the
//! HMAC-SHA-256 of CBC+HMAC SAs, RustCrypto (what the dataplane uses) against ring 0.17
//! (BoringSSL's assembly), in the same process, at 64 and 1420 bytes.
//!
//! Run: `cargo bench -p bench --bench aead_crates`. Prints ns per message and the ratio
//! RustCrypto/ring, median of interleaved rounds.

use std::hint::black_box;
use std::time::Instant;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use hmac::Mac;

const ROUNDS: usize = 15;

fn time(iters: u64, f: &mut dyn FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn compare(what: &str, size: usize, ours: &mut dyn FnMut(), ring: &mut dyn FnMut()) {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (rounds, iters) = if quick { (1, 100) } else { (ROUNDS, 20_000) };
    let (mut a, mut b, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let x = time(iters, ours);
        let y = time(iters, ring);
        a.push(x);
        b.push(y);
        r.push(x / y);
    }
    println!(
        "{what:<24} {size:>5} B   RustCrypto {:>8.1} ns   ring {:>8.1} ns   RustCrypto/ring {:>5.2}",
        median(a),
        median(b),
        median(r)
    );
}

fn main() {
    for size in [64usize, 1420] {
        let key = [7u8; 32];
        let rc = chacha20poly1305::ChaCha20Poly1305::new_from_slice(&key).unwrap();
        let rg = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &key).unwrap(),
        );
        let mut buf_a = vec![0u8; size];
        let mut buf_b = vec![0u8; size];
        let aad = [1u8; 8];
        compare(
            "chacha20poly1305 seal",
            size,
            &mut || {
                let n = Default::default();
                black_box(
                    rc.encrypt_inout_detached(&n, &aad, (&mut buf_a[..]).into())
                        .unwrap(),
                );
            },
            &mut || {
                let n = ring::aead::Nonce::assume_unique_for_key([0; 12]);
                let tag = rg
                    .seal_in_place_separate_tag(n, ring::aead::Aad::from(aad), &mut buf_b)
                    .unwrap();
                black_box(tag.as_ref()[0]);
            },
        );

        let hk = [9u8; 32];
        let data = vec![0u8; size];
        let rk = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &hk);
        // Both keyed once, as the dataplane does (inner and outer pad states precomputed).
        let keyed = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(&hk).unwrap();
        compare(
            "hmac-sha256",
            size,
            &mut || {
                let mut m = keyed.clone();
                m.update(&data);
                black_box(m.finalize().into_bytes());
            },
            &mut || {
                black_box(ring::hmac::sign(&rk, &data));
            },
        );
    }
}
