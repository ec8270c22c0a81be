//! Our AES-GCM on every dispatch path the CPU has, against RustCrypto `aes-gcm`: the same
//! ciphertext and tag for any key, nonce, AAD and message; open inverts seal; a flipped
//! bit in the ciphertext, tag or AAD is always rejected and the buffer is zeroed.
//!
//! Input: `[mode][key: 32][nonce: 12][aad_len][aad][message]`; mode bit 0 picks AES-256,
//! bits 1–2 what to tamper with, the next bits where.
use aes_gcm::aead::array::Array;
use aes_gcm::aead::{AeadInOut, KeyInit};
use dataplane::crypto::gcm::{GcmError, GcmKey, GcmPath};

fn reference(key: &[u8], nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
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

/// The harness: never panics on any input unless our AES-GCM disagrees with the reference.
pub fn differential(data: &[u8]) {
    if data.len() < 46 {
        return;
    }
    let mode = data[0];
    let key = &data[1..if mode & 1 == 0 { 17 } else { 33 }];
    let nonce: &[u8; 12] = data[33..45].try_into().unwrap();
    let rest = &data[46..];
    let aad_len = (data[45] as usize).min(rest.len());
    let (aad, msg) = rest.split_at(aad_len);

    let mut want = msg.to_vec();
    let want_tag = reference(key, nonce, aad, &mut want);
    for path in GcmPath::available_paths() {
        let k = GcmKey::with_path(key, path).unwrap();
        let mut ct = msg.to_vec();
        let tag = k.seal(nonce, aad, &mut ct).unwrap();
        assert_eq!(
            ct,
            want,
            "{path}: ciphertext differs at {} bytes",
            msg.len()
        );
        assert_eq!(tag, want_tag, "{path}: tag differs at {} bytes", msg.len());
        let mut back = ct.clone();
        k.open(nonce, aad, &mut back, &tag).unwrap();
        assert_eq!(back, msg, "{path}: open does not invert seal");

        let at = (mode >> 3) as usize;
        let (mut bad_ct, mut bad_tag, mut bad_aad) = (ct.clone(), tag, aad.to_vec());
        match (mode >> 1) & 3 {
            1 if !bad_ct.is_empty() => bad_ct[at % ct.len()] ^= 1 << (at % 8),
            2 => bad_tag[at % 16] ^= 1 << (at % 8),
            3 if !bad_aad.is_empty() => bad_aad[at % aad.len()] ^= 1 << (at % 8),
            _ => continue,
        }
        assert_eq!(
            k.open(nonce, &bad_aad, &mut bad_ct, &bad_tag),
            Err(GcmError::TagMismatch),
            "{path}: a forgery was accepted"
        );
        assert!(
            bad_ct.iter().all(|&b| b == 0),
            "{path}: plaintext of a forgery escaped"
        );
    }
}
