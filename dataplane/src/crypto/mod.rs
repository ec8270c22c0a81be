//! Per-SA cryptographic state behind one small interface.
//!
//! The ESP engine lays out a packet as `SPI | Seq | IV | payload | ICV` and calls
//! [`SaCrypto::seal`] or [`SaCrypto::open`] on that slice. All key-dependent work (AES key
//! schedules, GHASH key, HMAC inner/outer pads) is done once in [`SaCrypto::new`]; the
//! per-packet calls only touch the packet. A faster backend (e.g. a VAES GCM) replaces a
//! variant of [`CipherState`] without changing the engine.

mod aead;
pub mod algorithm;
mod cbc_hmac;
pub mod gcm;

use std::fmt;

use zeroize::Zeroizing;

pub use algorithm::{AlgorithmError, Encryption, EspTransform, Integrity};

use crate::wire::esp::HEADER_LEN as ESP_HEADER_LEN;

/// Key material for one SA, as IKEv2 derives it (RFC 7296 §2.17): the encryption key
/// (with the 4-byte salt appended for AEAD ciphers) and the integrity key.
/// Zeroized on drop; `Debug` never prints the bytes.
#[derive(Clone, Default)]
pub struct SaKeys {
    pub encryption: Zeroizing<Vec<u8>>,
    pub integrity: Zeroizing<Vec<u8>>,
}

impl SaKeys {
    pub fn new(encryption: &[u8], integrity: &[u8]) -> SaKeys {
        SaKeys {
            encryption: Zeroizing::new(encryption.to_vec()),
            integrity: Zeroizing::new(integrity.to_vec()),
        }
    }
}

impl fmt::Debug for SaKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SaKeys {{ encryption: <{} bytes redacted>, integrity: <{} bytes redacted> }}",
            self.encryption.len(),
            self.integrity.len()
        )
    }
}

/// Why a seal or open failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The ICV does not verify: the packet was altered or the key is wrong.
    #[error("integrity check failed")]
    IcvMismatch,
    /// The protected payload is too short, or not a whole number of cipher blocks.
    #[error("ciphertext length is not valid for the cipher")]
    BadLength,
}

/// Key state for one SA and one direction.
pub struct SaCrypto {
    transform: EspTransform,
    state: CipherState,
}

/// One variant per backend; each holds its precomputed key schedule.
enum CipherState {
    AesGcm(aead::AeadKey<gcm::GcmKey>),
    ChaCha20Poly1305(aead::AeadKey<aead::RingChaCha>),
    AesCbc128(cbc_hmac::CbcHmacKey<aes::Aes128>),
    AesCbc256(cbc_hmac::CbcHmacKey<aes::Aes256>),
}

impl SaCrypto {
    /// Expand the keys for `transform`, checking their lengths.
    pub fn new(transform: EspTransform, keys: &SaKeys) -> Result<SaCrypto, AlgorithmError> {
        let enc = &keys.encryption[..];
        let expected = transform.encryption.key_material_len();
        if enc.len() != expected {
            return Err(AlgorithmError::KeyLength {
                what: "encryption key material",
                expected,
                got: enc.len(),
            });
        }
        let integ = &keys.integrity[..];
        let expected = transform.integrity.key_len();
        if integ.len() != expected {
            return Err(AlgorithmError::KeyLength {
                what: "integrity key",
                expected,
                got: integ.len(),
            });
        }
        let state = match transform.encryption {
            Encryption::AesGcm128 | Encryption::AesGcm256 => {
                CipherState::AesGcm(aead::AeadKey::new(enc))
            }
            Encryption::ChaCha20Poly1305 => CipherState::ChaCha20Poly1305(aead::AeadKey::new(enc)),
            Encryption::AesCbc128 => {
                CipherState::AesCbc128(cbc_hmac::CbcHmacKey::new(enc, transform.integrity, integ))
            }
            Encryption::AesCbc256 => {
                CipherState::AesCbc256(cbc_hmac::CbcHmacKey::new(enc, transform.integrity, integ))
            }
        };
        Ok(SaCrypto { transform, state })
    }

    pub fn transform(&self) -> EspTransform {
        self.transform
    }

    pub fn iv_len(&self) -> usize {
        self.transform.encryption.iv_len()
    }

    pub fn icv_len(&self) -> usize {
        self.transform.icv_len()
    }

    pub fn align(&self) -> usize {
        self.transform.encryption.align()
    }

    /// Bytes ESP adds around the payload before padding: header, IV and ICV.
    pub fn overhead(&self) -> usize {
        ESP_HEADER_LEN + self.iv_len() + self.icv_len()
    }

    /// Seal `esp` = `SPI | Seq | IV | plaintext | ICV` in place: write the IV (derived from
    /// `iv_seed`, which must be unique per key — the 64-bit sequence number), encrypt the
    /// plaintext and write the ICV. `esn_high` is the implicit high half of an extended
    /// sequence number (RFC 4303 §2.2.1), authenticated but not sent.
    pub fn seal(
        &self,
        esp: &mut [u8],
        iv_seed: u64,
        esn_high: Option<u32>,
    ) -> Result<(), CryptoError> {
        if esp.len() < self.overhead() {
            return Err(CryptoError::BadLength);
        }
        match &self.state {
            CipherState::AesGcm(k) => k.seal(esp, iv_seed, esn_high),
            CipherState::ChaCha20Poly1305(k) => k.seal(esp, iv_seed, esn_high),
            CipherState::AesCbc128(k) => k.seal(esp, iv_seed, esn_high),
            CipherState::AesCbc256(k) => k.seal(esp, iv_seed, esn_high),
        }
    }

    /// Seal two ESP packets of this SA, each as [`SaCrypto::seal`] would: AES-GCM interleaves
    /// short ones (`GcmKey::seal_batch`); other ciphers seal one after the other.
    pub fn seal_pair(
        &self,
        a: (&mut [u8], u64, Option<u32>),
        b: (&mut [u8], u64, Option<u32>),
    ) -> [Result<(), CryptoError>; 2] {
        match &self.state {
            CipherState::AesGcm(k)
                if a.0.len() >= self.overhead() && b.0.len() >= self.overhead() =>
            {
                k.seal_pair(a, b);
                [Ok(()), Ok(())]
            }
            _ => [self.seal(a.0, a.1, a.2), self.seal(b.0, b.1, b.2)],
        }
    }

    /// Open two ESP packets of this SA, each as [`SaCrypto::open`] would: AES-GCM interleaves
    /// short ones (`GcmKey::open_batch`); other ciphers open one after the other.
    pub fn open_pair(
        &self,
        a: (&mut [u8], Option<u32>),
        b: (&mut [u8], Option<u32>),
    ) -> [Result<(), CryptoError>; 2] {
        match &self.state {
            CipherState::AesGcm(k)
                if a.0.len() >= self.overhead() && b.0.len() >= self.overhead() =>
            {
                k.open_pair(a, b)
            }
            _ => [self.open(a.0, a.1), self.open(b.0, b.1)],
        }
    }

    /// Verify the ICV of `esp` (laid out as for `seal`) and decrypt the payload in place.
    /// Nothing is decrypted unless the ICV verifies (RFC 4303 §3.4.4).
    pub fn open(&self, esp: &mut [u8], esn_high: Option<u32>) -> Result<(), CryptoError> {
        if esp.len() < self.overhead() {
            return Err(CryptoError::BadLength);
        }
        match &self.state {
            CipherState::AesGcm(k) => k.open(esp, esn_high),
            CipherState::ChaCha20Poly1305(k) => k.open(esp, esn_high),
            CipherState::AesCbc128(k) => k.open(esp, esn_high),
            CipherState::AesCbc256(k) => k.open(esp, esn_high),
        }
    }
}

/// The raw primitives behind ESP, for known-answer tests and for IKEv2's encrypted payload
/// (RFC 5282 uses the same AEADs with other AAD).
impl SaCrypto {
    /// AEAD transforms: encrypt `buf` in place with nonce = salt ‖ `iv` and any AAD; returns
    /// the 16-byte tag. `None` for a non-AEAD transform.
    pub fn aead_seal(&self, iv: &[u8; 8], aad: &[u8], buf: &mut [u8]) -> Option<[u8; 16]> {
        match &self.state {
            CipherState::AesGcm(k) => Some(k.seal_detached(iv, aad, buf)),
            CipherState::ChaCha20Poly1305(k) => Some(k.seal_detached(iv, aad, buf)),
            _ => None,
        }
    }

    /// AEAD transforms: verify `tag` and decrypt `buf` in place.
    pub fn aead_open(
        &self,
        iv: &[u8; 8],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), CryptoError> {
        match &self.state {
            CipherState::AesGcm(k) => k.open_detached(iv, aad, buf, tag),
            CipherState::ChaCha20Poly1305(k) => k.open_detached(iv, aad, buf, tag),
            _ => Err(CryptoError::BadLength),
        }
    }

    /// CBC+HMAC transforms: the truncated HMAC of `data` into `out` (`icv_len()` bytes).
    /// Returns false for an AEAD transform or a wrong `out` length.
    pub fn integrity_mac(&self, data: &[u8], out: &mut [u8]) -> bool {
        if out.len() != self.icv_len() {
            return false;
        }
        match &self.state {
            CipherState::AesCbc128(k) => k.mac(data, out),
            CipherState::AesCbc256(k) => k.mac(data, out),
            _ => return false,
        }
        true
    }

    /// CBC+HMAC transforms: AES-CBC encryption of whole blocks with the caller's IV.
    pub fn cbc_encrypt(&self, iv: &[u8; 16], buf: &mut [u8]) -> Result<(), CryptoError> {
        match &self.state {
            CipherState::AesCbc128(k) => k.cbc_encrypt(iv, buf),
            CipherState::AesCbc256(k) => k.cbc_encrypt(iv, buf),
            _ => Err(CryptoError::BadLength),
        }
    }

    /// CBC+HMAC transforms: AES-CBC decryption of whole blocks.
    pub fn cbc_decrypt(&self, iv: &[u8; 16], buf: &mut [u8]) -> Result<(), CryptoError> {
        match &self.state {
            CipherState::AesCbc128(k) => k.cbc_decrypt(iv, buf),
            CipherState::AesCbc256(k) => k.cbc_decrypt(iv, buf),
            _ => Err(CryptoError::BadLength),
        }
    }

    /// CBC+HMAC transforms: constant-time verification of a truncated HMAC.
    pub fn integrity_verify(&self, data: &[u8], icv: &[u8]) -> bool {
        match &self.state {
            CipherState::AesCbc128(k) => k.mac_ok(data, icv),
            CipherState::AesCbc256(k) => k.mac_ok(data, icv),
            _ => false,
        }
    }
}

impl fmt::Debug for SaCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SaCrypto({})", self.transform)
    }
}

/// RFC 4106 §5 / RFC 7634 §2.1 (AEAD) and RFC 4303 §3.3.2.1 (ESN appended to the ICV input):
/// the authenticated header bytes, SPI and sequence number, with the ESN high half between
/// them for AEADs.
pub(crate) fn aead_aad(esp: &[u8], esn_high: Option<u32>, out: &mut [u8; 12]) -> usize {
    out[..4].copy_from_slice(&esp[..4]);
    match esn_high {
        Some(hi) => {
            out[4..8].copy_from_slice(&hi.to_be_bytes());
            out[8..12].copy_from_slice(&esp[4..8]);
            12
        }
        None => {
            out[4..8].copy_from_slice(&esp[4..8]);
            8
        }
    }
}
