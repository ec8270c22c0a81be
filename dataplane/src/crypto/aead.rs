//! AES-GCM (RFC 4106) and ChaCha20-Poly1305 (RFC 7634) for ESP.
//!
//! Both use a 4-byte salt taken from the end of the key material and an 8-byte explicit IV
//! in each packet; nonce = salt ‖ IV. We use the 64-bit sequence number as the IV: it is
//! unique per key by construction (the counter never wraps), which is what RFC 4106 §3.1
//! and RFC 7634 §2 require, and it needs no random source on the hot path.

use zeroize::Zeroizing;

use super::gcm::GcmKey;
use super::{aead_aad, CryptoError};
use crate::wire::esp::HEADER_LEN as ESP_HEADER_LEN;

const IV_LEN: usize = 8;
const TAG_LEN: usize = 16;
const SALT_LEN: usize = 4;

/// An AEAD with a 96-bit nonce and a 16-byte tag, keyed once per SA.
pub(crate) trait Aead96: Sized {
    /// `key` has the length the transform needs (checked by `SaCrypto::new`).
    fn from_key(key: &[u8]) -> Self;
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN];
    fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError>;
}

/// AES-GCM: our engine, on the fastest path the CPU has.
impl Aead96 for GcmKey {
    fn from_key(key: &[u8]) -> Self {
        GcmKey::new(key).expect("key length checked by SaCrypto::new")
    }

    fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        GcmKey::seal(self, nonce, aad, buf).expect("ESP packets are far below GCM's limit")
    }

    fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        GcmKey::open(self, nonce, aad, buf, tag).map_err(|_| CryptoError::IcvMismatch)
    }
}

/// ChaCha20-Poly1305: ring (BoringSSL's AVX2 assembly, chosen at run time). Measured by
/// `cargo bench -p bench --bench aead_crates`: RustCrypto `chacha20poly1305` 0.11 takes 3.7×
/// ring's time at 1420 bytes and 9.8× at 64. What it costs: ring does not zeroize its key
/// schedule on drop (our `SaKeys` bytes still are).
pub(crate) struct RingChaCha(ring::aead::LessSafeKey);

impl Aead96 for RingChaCha {
    fn from_key(key: &[u8]) -> Self {
        let k = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key)
            .expect("key length checked by SaCrypto::new");
        RingChaCha(ring::aead::LessSafeKey::new(k))
    }

    fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(*nonce),
                ring::aead::Aad::from(aad),
                buf,
            )
            .expect("ring only refuses messages above 2^38 bytes");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        self.0
            .open_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(*nonce),
                ring::aead::Aad::from(aad),
                ring::aead::Tag::from(*tag),
                buf,
                0..,
            )
            .map(|_| ())
            .map_err(|_| CryptoError::IcvMismatch)
    }
}

pub(crate) struct AeadKey<A> {
    aead: A,
    salt: Zeroizing<[u8; SALT_LEN]>,
}

impl<A: Aead96> AeadKey<A> {
    /// `material` = key ‖ salt; its length was checked by the caller.
    pub(crate) fn new(material: &[u8]) -> Self {
        let (key, salt) = material.split_at(material.len() - SALT_LEN);
        let aead = A::from_key(key);
        let mut s = Zeroizing::new([0u8; SALT_LEN]);
        s.copy_from_slice(salt);
        AeadKey { aead, salt: s }
    }

    fn nonce(&self, iv: &[u8]) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..SALT_LEN].copy_from_slice(&self.salt[..]);
        n[SALT_LEN..].copy_from_slice(iv);
        n
    }

    /// The AEAD primitive: nonce = salt ‖ `iv`, any AAD, `buf` encrypted in place.
    pub(crate) fn seal_detached(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; TAG_LEN] {
        self.aead.seal(&self.nonce(iv), aad, buf)
    }

    /// Verify `tag` and decrypt `buf` in place; nothing is decrypted if the tag fails.
    pub(crate) fn open_detached(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        self.aead.open(&self.nonce(iv), aad, buf, tag)
    }

    /// ESP (RFC 4106 §3, RFC 7634 §2): `esp` = SPI ‖ Seq ‖ IV ‖ payload ‖ ICV.
    pub(crate) fn seal(
        &self,
        esp: &mut [u8],
        iv_seed: u64,
        esn_high: Option<u32>,
    ) -> Result<(), CryptoError> {
        let mut aad = [0u8; 12];
        let aad_len = aead_aad(esp, esn_high, &mut aad);
        let iv = iv_seed.to_be_bytes();
        let (head, rest) = esp.split_at_mut(ESP_HEADER_LEN + IV_LEN);
        head[ESP_HEADER_LEN..].copy_from_slice(&iv);
        let split = rest.len() - TAG_LEN;
        let (payload, icv) = rest.split_at_mut(split);
        let tag = self.seal_detached(&iv, &aad[..aad_len], payload);
        icv.copy_from_slice(&tag);
        Ok(())
    }

    pub(crate) fn open(&self, esp: &mut [u8], esn_high: Option<u32>) -> Result<(), CryptoError> {
        let mut aad = [0u8; 12];
        let aad_len = aead_aad(esp, esn_high, &mut aad);
        let (head, rest) = esp.split_at_mut(ESP_HEADER_LEN + IV_LEN);
        let iv: [u8; IV_LEN] = head[ESP_HEADER_LEN..]
            .try_into()
            .map_err(|_| CryptoError::BadLength)?;
        let split = rest.len() - TAG_LEN;
        let (payload, icv) = rest.split_at_mut(split);
        let tag: [u8; TAG_LEN] = (&*icv).try_into().map_err(|_| CryptoError::BadLength)?;
        self.open_detached(&iv, &aad[..aad_len], payload, &tag)
    }
}
