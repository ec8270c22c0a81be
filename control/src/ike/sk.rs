//! The encrypted payload (RFC 7296 §3.14; AEAD per RFC 5282 §5, ChaCha20-Poly1305 per
//! RFC 7634 §3): sealing a list of payloads into a message and opening one. Sans-IO: the
//! caller supplies the IV's random bytes.
//!
//! ```text
//! IKE header | SK generic header | IV | ciphertext(payloads ‖ padding ‖ pad length) | ICV
//! ```
//! AEAD: 8-byte IV, nonce = salt ‖ IV, AAD = the IKE header and the SK generic header;
//! no padding needed. AES-CBC: 16-byte IV, padding to the block, then an HMAC over the
//! whole message up to the ICV.

use zeroize::Zeroizing;

use dataplane::crypto::{CryptoError, Encryption, EspTransform, Integrity, SaCrypto, SaKeys};

use super::wire::{self, payload, Header, Payload, WireError, HEADER_LEN, PAYLOAD_HEADER_LEN};

/// Why an encrypted payload could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SkError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the message has no encrypted payload")]
    Missing,
    #[error("integrity check failed (wrong keys, or a forged or corrupted message)")]
    Integrity,
    #[error("the encrypted payload is too short or badly padded")]
    Length,
    #[error("the message is one fragment (RFC 7383) of a larger one, not a whole message")]
    Fragment,
}

/// RFC 9242 §3.3.2: the octets an IKE_INTERMEDIATE message contributes to IntAuth, `A | P`:
/// the IKE header and SK payload header with their lengths as if the SK payload held only
/// the plaintext inner payloads (no IV, padding, pad length or ICV), then those payloads.
/// The same for a fragmented message (computed on the reassembled plaintext) and for one
/// sent whole. `first` is the type of the first inner payload.
pub fn intauth_octets(header: Header, first: u8, inner_plain: &[u8]) -> Vec<u8> {
    let sk_len = PAYLOAD_HEADER_LEN + inner_plain.len();
    let mut out = Vec::with_capacity(HEADER_LEN + sk_len);
    Header {
        next_payload: payload::SK,
        length: (HEADER_LEN + sk_len) as u32,
        ..header
    }
    .emit(&mut out);
    out.extend_from_slice(&[first, 0]);
    out.extend_from_slice(&(sk_len as u16).to_be_bytes());
    out.extend_from_slice(inner_plain);
    out
}

/// One direction's keys for the encrypted payload (SK_ei/SK_ai or SK_er/SK_ar).
pub struct SkCrypto {
    crypto: SaCrypto,
    aead: bool,
    /// SK_e and SK_a as derived (§2.14; SK_e with its salt for AEADs), kept only for
    /// [`SkCrypto::key_material`] (`vpnctl keys --wireshark`); wiped on drop, never printed.
    sk_e: Zeroizing<Vec<u8>>,
    sk_a: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SkCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SkCrypto({:?})", self.crypto)
    }
}

impl SkCrypto {
    pub fn new(
        encr: Encryption,
        integ: Integrity,
        sk_e: &[u8],
        sk_a: &[u8],
    ) -> Result<SkCrypto, CryptoError> {
        let t = EspTransform::new(encr, integ).map_err(|_| CryptoError::BadLength)?;
        let crypto =
            SaCrypto::new(t, &SaKeys::new(sk_e, sk_a)).map_err(|_| CryptoError::BadLength)?;
        Ok(SkCrypto {
            aead: integ == Integrity::None,
            crypto,
            sk_e: Zeroizing::new(sk_e.to_vec()),
            sk_a: Zeroizing::new(sk_a.to_vec()),
        })
    }

    /// This direction's SK_e (with the salt for AEADs, RFC 5282 §7.1) and SK_a (empty
    /// for AEADs). For exporting to a debugger on the operator's request only: never log.
    pub fn key_material(&self) -> (&[u8], &[u8]) {
        (&self.sk_e, &self.sk_a)
    }

    /// Bytes of IV the caller must supply to [`SkCrypto::seal`].
    pub fn iv_len(&self) -> usize {
        if self.aead {
            8
        } else {
            16
        }
    }

    /// Bytes the ICV adds.
    pub fn icv_len(&self) -> usize {
        self.crypto.icv_len()
    }

    /// The cipher's block: what the encrypted content (with pad length) must be a
    /// multiple of. 1 for the AEAD ciphers (stream modes, no padding needed).
    pub fn block_len(&self) -> usize {
        if self.aead {
            1
        } else {
            16
        }
    }

    /// A whole message: `header` (next payload and length are filled in), then an SK
    /// payload carrying `inner`.
    pub fn seal(
        &self,
        header: Header,
        inner: &[Payload],
        iv: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut plain = Vec::with_capacity(256);
        let first = wire::emit_chain(inner, &mut plain);
        self.seal_bytes(header, first, None, &plain, iv)
    }

    /// A whole message around already emitted inner payloads: an SK payload, or with
    /// `fragment = Some((number, total))` an Encrypted Fragment payload (RFC 7383 §2.5)
    /// whose fragment numbers are covered by the AAD / integrity check like the rest of
    /// its header. `first`: the type of the first inner payload (0 in fragments after
    /// the first, RFC 7383 §2.5).
    pub fn seal_bytes(
        &self,
        header: Header,
        first: u8,
        fragment: Option<(u16, u16)>,
        inner: &[u8],
        iv: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if iv.len() != self.iv_len() {
            return Err(CryptoError::BadLength);
        }
        let mut plain = Vec::with_capacity(inner.len() + 16);
        plain.extend_from_slice(inner);
        if self.aead {
            plain.push(0); // pad length 0 (RFC 5282 §3: padding is optional)
        } else {
            let pad = (16 - (plain.len() + 1) % 16) % 16;
            plain.extend(std::iter::repeat_n(0u8, pad));
            plain.push(pad as u8);
        }
        let (kind, extra) = match fragment {
            None => (payload::SK, 0),
            Some(_) => (payload::SKF, FRAG_NUMBERS_LEN),
        };
        let sk_len = PAYLOAD_HEADER_LEN + extra + iv.len() + plain.len() + self.icv_len();
        let total = HEADER_LEN + sk_len;
        if sk_len > usize::from(u16::MAX) {
            return Err(CryptoError::BadLength);
        }
        let mut out = Vec::with_capacity(total);
        Header {
            next_payload: kind,
            length: total as u32,
            ..header
        }
        .emit(&mut out);
        out.extend_from_slice(&[first, 0]);
        out.extend_from_slice(&(sk_len as u16).to_be_bytes());
        if let Some((number, count)) = fragment {
            out.extend_from_slice(&number.to_be_bytes());
            out.extend_from_slice(&count.to_be_bytes());
        }
        let aad_end = out.len();
        out.extend_from_slice(iv);
        let ct_at = out.len();
        out.extend_from_slice(&plain);
        if self.aead {
            let mut v = [0u8; 8];
            v.copy_from_slice(iv);
            let (aad, rest) = out.split_at_mut(aad_end);
            let tag = self
                .crypto
                .aead_seal(&v, aad, &mut rest[8..])
                .ok_or(CryptoError::BadLength)?;
            out.extend_from_slice(&tag);
        } else {
            let mut v = [0u8; 16];
            v.copy_from_slice(iv);
            self.crypto.cbc_encrypt(&v, &mut out[ct_at..])?;
            let mut icv = vec![0u8; self.icv_len()];
            if !self.crypto.integrity_mac(&out, &mut icv) {
                return Err(CryptoError::BadLength);
            }
            out.extend_from_slice(&icv);
        }
        Ok(out)
    }

    /// Open a message whose (last) payload is SK: check its integrity, decrypt, and parse
    /// the payloads inside. Returns the header and those payloads.
    pub fn open(&self, msg: &[u8]) -> Result<(Header, Vec<Payload>), SkError> {
        let o = self.open_plain(msg)?;
        let payloads = wire::parse_chain(o.first, &o.plain)?;
        Ok((o.header, payloads))
    }

    /// Like [`SkCrypto::open`], but the inner payloads stay bytes: what IntAuth (RFC 9242
    /// §3.3.2, [`intauth_octets`]) and reassembly (RFC 7383) need. A fragment (SKF) is
    /// refused here: see [`SkCrypto::open_any`].
    pub fn open_plain(&self, msg: &[u8]) -> Result<OpenedSk, SkError> {
        match self.open_any(msg)? {
            Opened::Whole(o) => Ok(o),
            Opened::Fragment(_) => Err(SkError::Fragment),
        }
    }

    /// Open a message whose last payload is SK or an Encrypted Fragment (RFC 7383 §2.5):
    /// check its integrity (for a fragment over its numbers too) and decrypt.
    pub fn open_any(&self, msg: &[u8]) -> Result<Opened, SkError> {
        let header = Header::parse(msg)?;
        let len = header.length as usize;
        if len > msg.len() || len < HEADER_LEN {
            return Err(WireError::BadLength("IKE message").into());
        }
        let msg = &msg[..len];
        // Walk the clear payloads to the SK (or SKF) one.
        let mut next = header.next_payload;
        let mut at = HEADER_LEN;
        while next != payload::SK && next != payload::SKF {
            if next == payload::NONE || at + PAYLOAD_HEADER_LEN > msg.len() {
                return Err(SkError::Missing);
            }
            let l = usize::from(u16::from_be_bytes([msg[at + 2], msg[at + 3]]));
            if l < PAYLOAD_HEADER_LEN || at + l > msg.len() {
                return Err(WireError::BadLength("payload").into());
            }
            next = msg[at];
            at += l;
        }
        let extra = if next == payload::SKF {
            FRAG_NUMBERS_LEN
        } else {
            0
        };
        if at + PAYLOAD_HEADER_LEN + extra > msg.len() {
            return Err(SkError::Missing);
        }
        let first = msg[at];
        let sk_len = usize::from(u16::from_be_bytes([msg[at + 2], msg[at + 3]]));
        if at + sk_len != msg.len() {
            return Err(WireError::SkNotLast.into());
        }
        let numbers = (extra > 0).then(|| {
            let n = at + PAYLOAD_HEADER_LEN;
            (
                u16::from_be_bytes([msg[n], msg[n + 1]]),
                u16::from_be_bytes([msg[n + 2], msg[n + 3]]),
            )
        });
        let (iv_len, icv_len) = (self.iv_len(), self.icv_len());
        let body_at = at + PAYLOAD_HEADER_LEN + extra;
        if sk_len < PAYLOAD_HEADER_LEN + extra + iv_len + icv_len + 1 {
            return Err(SkError::Length);
        }
        let ct_at = body_at + iv_len;
        let icv_at = msg.len() - icv_len;
        let mut plain = msg[ct_at..icv_at].to_vec();
        if self.aead {
            let mut iv = [0u8; 8];
            iv.copy_from_slice(&msg[body_at..ct_at]);
            let mut tag = [0u8; 16];
            tag.copy_from_slice(&msg[icv_at..]);
            // The AAD runs to the IV: for a fragment it covers its numbers (RFC 7383 §2.5).
            self.crypto
                .aead_open(&iv, &msg[..body_at], &mut plain, &tag)
                .map_err(|_| SkError::Integrity)?;
        } else {
            // RFC 7296 §3.14: check the ICV before decrypting.
            if !self.crypto.integrity_verify(&msg[..icv_at], &msg[icv_at..]) {
                return Err(SkError::Integrity);
            }
            let mut iv = [0u8; 16];
            iv.copy_from_slice(&msg[body_at..ct_at]);
            self.crypto
                .cbc_decrypt(&iv, &mut plain)
                .map_err(|_| SkError::Length)?;
        }
        let pad = usize::from(*plain.last().ok_or(SkError::Length)?);
        if pad + 1 > plain.len() {
            return Err(SkError::Length);
        }
        plain.truncate(plain.len() - pad - 1);
        let sk = OpenedSk {
            header,
            first,
            plain,
        };
        Ok(match numbers {
            None => Opened::Whole(sk),
            Some((number, total)) => Opened::Fragment(OpenedFragment { sk, number, total }),
        })
    }
}

/// The Fragment Number and Total Fragments fields of an SKF payload (RFC 7383 §2.5).
pub const FRAG_NUMBERS_LEN: usize = 4;

/// What [`SkCrypto::open_any`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    Whole(OpenedSk),
    Fragment(OpenedFragment),
}

/// One verified and decrypted Encrypted Fragment payload (RFC 7383 §2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedFragment {
    /// `first` is the Next Payload field: the first inner payload's type in fragment 1,
    /// 0 in the others; `plain` is this fragment's piece of the inner payloads.
    pub sk: OpenedSk,
    /// Fragment Number, from 1.
    pub number: u16,
    /// Total Fragments.
    pub total: u16,
}

/// A decrypted SK payload, its inner payloads not yet parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedSk {
    pub header: Header,
    /// The type of the first inner payload.
    pub first: u8,
    /// The inner payloads (padding and pad length removed).
    pub plain: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::wire::{exchange, flags, Id};

    fn header() -> Header {
        Header {
            spi_i: 1,
            spi_r: 2,
            next_payload: 0,
            major: 2,
            minor: 0,
            exchange: exchange::IKE_AUTH,
            flags: flags::INITIATOR,
            message_id: 1,
            length: 0,
        }
    }

    #[test]
    fn every_cipher_round_trips_and_tampering_is_caught() {
        let inner = vec![
            Payload::IdI(Id {
                kind: 2,
                data: b"gw-a".to_vec(),
            }),
            Payload::Auth {
                method: 2,
                data: vec![5; 32],
            },
        ];
        for (e, i, ek, ik) in [
            (Encryption::AesGcm128, Integrity::None, 20, 0),
            (Encryption::AesGcm256, Integrity::None, 36, 0),
            (Encryption::ChaCha20Poly1305, Integrity::None, 36, 0),
            (Encryption::AesCbc128, Integrity::HmacSha256_128, 16, 32),
            (Encryption::AesCbc256, Integrity::HmacSha512_256, 32, 64),
        ] {
            let k = SkCrypto::new(e, i, &vec![3; ek], &vec![4; ik]).unwrap();
            let iv = vec![9u8; k.iv_len()];
            let msg = k.seal(header(), &inner, &iv).unwrap();
            let (h, p) = k.open(&msg).unwrap();
            assert_eq!(h.message_id, 1);
            assert_eq!(p, inner, "{e:?}");
            // The parser sees an SK payload as the last and only payload.
            assert!(matches!(
                wire::Message::parse(&msg).unwrap().payloads[..],
                [Payload::Sk {
                    first: payload::IDI,
                    ..
                }]
            ));
            for at in [10, HEADER_LEN + 2, msg.len() / 2, msg.len() - 1] {
                let mut bad = msg.clone();
                bad[at] ^= 1;
                assert!(k.open(&bad).is_err(), "{e:?}: flipped byte {at} accepted");
            }
            let other = SkCrypto::new(e, i, &vec![7; ek], &vec![4; ik]).unwrap();
            assert!(other.open(&msg).is_err());
            assert_eq!(k.key_material(), (&vec![3; ek][..], &vec![4; ik][..]));
            assert!(
                !format!("{k:?}").contains("3, 3"),
                "Debug printed key bytes"
            );
        }
    }
}
