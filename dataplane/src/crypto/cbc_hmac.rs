//! AES-CBC (RFC 3602) with HMAC-SHA-2 (RFC 4868), encrypt-then-MAC as ESP does it.
//!
//! The IV must be unpredictable (RFC 3602 §2.1). Without a random source on the hot path we
//! use NIST SP 800-38A Appendix C, method 1: the IV is the forward cipher, under the SA's own
//! key, applied to a nonce — here the 64-bit sequence number, unique per key.

use aes::cipher::inout::InOutBuf;
use aes::cipher::{
    BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, InnerIvInit,
    KeyInit,
};
use aes::Block;
use hmac::{Hmac, KeyInit as MacKeyInit, Mac};
use sha2::{Sha256, Sha384, Sha512};

use super::{CryptoError, Integrity};
use crate::wire::esp::HEADER_LEN as ESP_HEADER_LEN;

const IV_LEN: usize = 16;
const BLOCK: usize = 16;

/// Keyed HMAC state: the inner and outer pads are hashed once, here, and cloned per packet.
#[derive(Clone)]
enum HmacKey {
    Sha256(Hmac<Sha256>),
    Sha384(Hmac<Sha384>),
    Sha512(Hmac<Sha512>),
}

pub(crate) struct CbcHmacKey<C> {
    cipher: C,
    mac: HmacKey,
    icv_len: usize,
}

fn mac_of<M: Mac + Clone>(m: &M, parts: [&[u8]; 2]) -> hmac::digest::Output<M> {
    let mut m = m.clone();
    m.update(parts[0]);
    m.update(parts[1]);
    m.finalize().into_bytes()
}

fn verify<M: Mac + Clone>(m: &M, parts: [&[u8]; 2], icv: &[u8]) -> bool {
    let mut m = m.clone();
    m.update(parts[0]);
    m.update(parts[1]);
    m.verify_truncated_left(icv).is_ok()
}

impl<C> CbcHmacKey<C>
where
    C: BlockCipherEncrypt + BlockCipherDecrypt + KeyInit + Clone,
    C: aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
{
    pub(crate) fn new(enc: &[u8], integ: Integrity, integ_key: &[u8]) -> Self {
        let cipher = C::new_from_slice(enc).expect("key length checked by SaCrypto::new");
        let mac = match integ {
            Integrity::HmacSha256_128 => HmacKey::Sha256(
                <Hmac<Sha256> as MacKeyInit>::new_from_slice(integ_key).expect("any length"),
            ),
            Integrity::HmacSha384_192 => HmacKey::Sha384(
                <Hmac<Sha384> as MacKeyInit>::new_from_slice(integ_key).expect("any length"),
            ),
            Integrity::HmacSha512_256 | Integrity::None => HmacKey::Sha512(
                <Hmac<Sha512> as MacKeyInit>::new_from_slice(integ_key).expect("any length"),
            ),
        };
        CbcHmacKey {
            cipher,
            mac,
            icv_len: integ.icv_len(),
        }
    }

    /// The truncated HMAC of `data` (RFC 4868 §2.3), written to `out` (`icv_len` bytes).
    pub(crate) fn mac(&self, data: &[u8], out: &mut [u8]) {
        self.icv(data, None, out)
    }

    /// Constant-time check of a truncated HMAC.
    pub(crate) fn mac_ok(&self, data: &[u8], icv: &[u8]) -> bool {
        icv.len() == self.icv_len && self.icv_ok(data, None, icv)
    }

    /// RFC 4303 §3.3.2.1: with ESN the high 32 bits are appended to the ICV input.
    fn icv(&self, authed: &[u8], esn_high: Option<u32>, out: &mut [u8]) {
        let hi = esn_high.map(u32::to_be_bytes);
        let tail: &[u8] = hi.as_ref().map_or(&[], |h| &h[..]);
        match &self.mac {
            HmacKey::Sha256(m) => out.copy_from_slice(&mac_of(m, [authed, tail])[..out.len()]),
            HmacKey::Sha384(m) => out.copy_from_slice(&mac_of(m, [authed, tail])[..out.len()]),
            HmacKey::Sha512(m) => out.copy_from_slice(&mac_of(m, [authed, tail])[..out.len()]),
        }
    }

    fn icv_ok(&self, authed: &[u8], esn_high: Option<u32>, icv: &[u8]) -> bool {
        let hi = esn_high.map(u32::to_be_bytes);
        let tail: &[u8] = hi.as_ref().map_or(&[], |h| &h[..]);
        // Constant-time comparison of the truncated tag (hmac's verify_truncated_left).
        match &self.mac {
            HmacKey::Sha256(m) => verify(m, [authed, tail], icv),
            HmacKey::Sha384(m) => verify(m, [authed, tail], icv),
            HmacKey::Sha512(m) => verify(m, [authed, tail], icv),
        }
    }

    /// Raw AES-CBC with an explicit IV over whole blocks (IKEv2's encrypted payload, whose
    /// IV is random: RFC 7296 §3.14).
    pub(crate) fn cbc_encrypt(&self, iv: &[u8; 16], buf: &mut [u8]) -> Result<(), CryptoError> {
        if !buf.len().is_multiple_of(BLOCK) {
            return Err(CryptoError::BadLength);
        }
        let iv = Block::from(*iv);
        let (blocks, _) = InOutBuf::from(buf).into_chunks();
        cbc::Encryptor::<C>::inner_iv_init(self.cipher.clone(), &iv).encrypt_blocks_inout(blocks);
        Ok(())
    }

    pub(crate) fn cbc_decrypt(&self, iv: &[u8; 16], buf: &mut [u8]) -> Result<(), CryptoError> {
        if !buf.len().is_multiple_of(BLOCK) {
            return Err(CryptoError::BadLength);
        }
        let iv = Block::from(*iv);
        let (blocks, _) = InOutBuf::from(buf).into_chunks();
        cbc::Decryptor::<C>::inner_iv_init(self.cipher.clone(), &iv).decrypt_blocks_inout(blocks);
        Ok(())
    }

    pub(crate) fn seal(
        &self,
        esp: &mut [u8],
        iv_seed: u64,
        esn_high: Option<u32>,
    ) -> Result<(), CryptoError> {
        let icv_at = esp.len() - self.icv_len;
        let payload_len = icv_at - ESP_HEADER_LEN - IV_LEN;
        if payload_len == 0 || !payload_len.is_multiple_of(BLOCK) {
            return Err(CryptoError::BadLength);
        }
        // SP 800-38A App. C: IV = E_K(nonce). The nonce block is the sequence number
        // followed by a fixed tag, so it can never equal a CBC input block of another packet
        // in a way an attacker controls.
        let mut iv = Block::default();
        iv[..8].copy_from_slice(&iv_seed.to_be_bytes());
        iv[8..].copy_from_slice(b"ESP-IV\x00\x01");
        self.cipher.encrypt_block(&mut iv);
        esp[ESP_HEADER_LEN..ESP_HEADER_LEN + IV_LEN].copy_from_slice(&iv);
        let payload = &mut esp[ESP_HEADER_LEN + IV_LEN..icv_at];
        let (blocks, _) = InOutBuf::from(payload).into_chunks();
        cbc::Encryptor::<C>::inner_iv_init(self.cipher.clone(), &iv).encrypt_blocks_inout(blocks);
        let (authed, icv) = esp.split_at_mut(icv_at);
        self.icv(authed, esn_high, icv);
        Ok(())
    }

    pub(crate) fn open(&self, esp: &mut [u8], esn_high: Option<u32>) -> Result<(), CryptoError> {
        let icv_at = esp.len() - self.icv_len;
        let payload_len = icv_at - ESP_HEADER_LEN - IV_LEN;
        if payload_len == 0 || !payload_len.is_multiple_of(BLOCK) {
            return Err(CryptoError::BadLength);
        }
        let (authed, icv) = esp.split_at_mut(icv_at);
        // RFC 4303 §3.4.4.1: verify the ICV before decrypting.
        if !self.icv_ok(authed, esn_high, icv) {
            return Err(CryptoError::IcvMismatch);
        }
        let (head, payload) = authed.split_at_mut(ESP_HEADER_LEN + IV_LEN);
        let iv = Block::try_from(&head[ESP_HEADER_LEN..]).map_err(|_| CryptoError::BadLength)?;
        let (blocks, _) = InOutBuf::from(payload).into_chunks();
        cbc::Decryptor::<C>::inner_iv_init(self.cipher.clone(), &iv).decrypt_blocks_inout(blocks);
        Ok(())
    }
}
