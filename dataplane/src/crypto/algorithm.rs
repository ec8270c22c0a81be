//! ESP transforms: which encryption and integrity algorithms an SA uses, parsed from
//! strongSwan-style proposal strings (`aes128gcm16`, `chacha20poly1305`, `aes256-sha384`).
//!
//! RFC 8221 §5 and §6 set what an ESP implementation should offer. We implement the MUST and
//! SHOULD algorithms that carry traffic today and refuse the deprecated ones by name, so an
//! operator who asks for `3des-md5` learns why rather than getting a silent fallback.

use std::fmt;

/// Encryption (or combined-mode AEAD) algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// RFC 4106, 16-byte ICV (ENCR_AES_GCM_16, IANA 20), 128-bit key.
    AesGcm128,
    /// RFC 4106, 16-byte ICV, 256-bit key.
    AesGcm256,
    /// RFC 7634 (ENCR_CHACHA20_POLY1305, IANA 28).
    ChaCha20Poly1305,
    /// RFC 3602 (ENCR_AES_CBC, IANA 12), 128-bit key; needs an integrity algorithm.
    AesCbc128,
    /// RFC 3602, 256-bit key.
    AesCbc256,
}

/// Integrity algorithm for non-AEAD encryption (RFC 4868).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integrity {
    /// AEAD ciphers carry their own ICV.
    None,
    /// AUTH_HMAC_SHA2_256_128 (IANA 12).
    HmacSha256_128,
    /// AUTH_HMAC_SHA2_384_192 (IANA 13).
    HmacSha384_192,
    /// AUTH_HMAC_SHA2_512_256 (IANA 14).
    HmacSha512_256,
}

/// A complete ESP transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspTransform {
    pub encryption: Encryption,
    pub integrity: Integrity,
}

/// Why an algorithm or key was refused when an SA was created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AlgorithmError {
    /// The algorithm is known but deprecated for ESP.
    #[error("{name} is refused: {why} (RFC 8221 §5/§6)")]
    Deprecated { name: String, why: &'static str },
    /// The name is not an algorithm we know.
    #[error("unknown ESP algorithm {0:?}; supported: aes128gcm16, aes256gcm16, chacha20poly1305, aes128|aes256 with sha256|sha384|sha512")]
    Unknown(String),
    /// An AEAD was combined with an integrity algorithm, or CBC without one.
    #[error("{0}")]
    BadCombination(&'static str),
    /// The key material has the wrong length for the transform.
    #[error("{what} must be {expected} bytes, got {got}")]
    KeyLength {
        what: &'static str,
        expected: usize,
        got: usize,
    },
}

impl Encryption {
    /// Bytes of encryption key material, including the 4-byte salt of AEAD ciphers
    /// (RFC 4106 §8.1, RFC 7634 §4: the salt is the last four bytes of KEYMAT).
    pub fn key_material_len(self) -> usize {
        match self {
            Encryption::AesGcm128 => 16 + 4,
            Encryption::AesGcm256 | Encryption::ChaCha20Poly1305 => 32 + 4,
            Encryption::AesCbc128 => 16,
            Encryption::AesCbc256 => 32,
        }
    }

    pub fn is_aead(self) -> bool {
        matches!(
            self,
            Encryption::AesGcm128 | Encryption::AesGcm256 | Encryption::ChaCha20Poly1305
        )
    }

    /// Length of the IV carried in each packet.
    pub fn iv_len(self) -> usize {
        if self.is_aead() {
            8
        } else {
            16
        }
    }

    /// The payload (plaintext + padding + trailer) must be a multiple of this (RFC 4303 §2.4:
    /// at least 4 so the ICV is 4-byte aligned; the cipher block size for CBC).
    pub fn align(self) -> usize {
        if self.is_aead() {
            4
        } else {
            16
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encryption::AesGcm128 => "aes128gcm16",
            Encryption::AesGcm256 => "aes256gcm16",
            Encryption::ChaCha20Poly1305 => "chacha20poly1305",
            Encryption::AesCbc128 => "aes128",
            Encryption::AesCbc256 => "aes256",
        }
    }
}

impl Integrity {
    pub fn key_len(self) -> usize {
        match self {
            Integrity::None => 0,
            Integrity::HmacSha256_128 => 32,
            Integrity::HmacSha384_192 => 48,
            Integrity::HmacSha512_256 => 64,
        }
    }

    /// Truncated ICV length (RFC 4868 §2.3).
    pub fn icv_len(self) -> usize {
        match self {
            Integrity::None => 0,
            Integrity::HmacSha256_128 => 16,
            Integrity::HmacSha384_192 => 24,
            Integrity::HmacSha512_256 => 32,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Integrity::None => "",
            Integrity::HmacSha256_128 => "sha256",
            Integrity::HmacSha384_192 => "sha384",
            Integrity::HmacSha512_256 => "sha512",
        }
    }
}

impl EspTransform {
    pub const AES_GCM_128: EspTransform = EspTransform::aead(Encryption::AesGcm128);
    pub const AES_GCM_256: EspTransform = EspTransform::aead(Encryption::AesGcm256);
    pub const CHACHA20_POLY1305: EspTransform = EspTransform::aead(Encryption::ChaCha20Poly1305);

    const fn aead(encryption: Encryption) -> EspTransform {
        EspTransform {
            encryption,
            integrity: Integrity::None,
        }
    }

    /// Build a transform, checking the combination is one RFC 8221 allows.
    pub fn new(encryption: Encryption, integrity: Integrity) -> Result<Self, AlgorithmError> {
        match (encryption.is_aead(), integrity) {
            (true, Integrity::None) | (false, Integrity::HmacSha256_128)
            | (false, Integrity::HmacSha384_192) | (false, Integrity::HmacSha512_256) => {
                Ok(EspTransform {
                    encryption,
                    integrity,
                })
            }
            (true, _) => Err(AlgorithmError::BadCombination(
                "an AEAD cipher carries its own ICV and takes no integrity algorithm (RFC 8221 §5)",
            )),
            (false, _) => Err(AlgorithmError::BadCombination(
                "AES-CBC needs an integrity algorithm: ESP without integrity is refused (RFC 8221 §5)",
            )),
        }
    }

    /// ICV length on the wire.
    pub fn icv_len(&self) -> usize {
        if self.encryption.is_aead() {
            16
        } else {
            self.integrity.icv_len()
        }
    }

    /// Parse a strongSwan-style ESP proposal: tokens joined by `-`, e.g. `aes128gcm16`,
    /// `aes256-sha512`. `esn`/`noesn` tokens and key-exchange groups belong to the Child SA
    /// proposal, not the transform, and are refused here.
    pub fn from_proposal(s: &str) -> Result<EspTransform, AlgorithmError> {
        let mut enc = None;
        let mut integ = Integrity::None;
        for tok in s.split('-').map(|t| t.trim().to_ascii_lowercase()) {
            if let Some(e) = parse_encryption(&tok)? {
                enc = Some(e);
            } else if let Some(i) = parse_integrity(&tok)? {
                integ = i;
            } else {
                return Err(AlgorithmError::Unknown(tok));
            }
        }
        let enc = enc.ok_or_else(|| AlgorithmError::Unknown(s.to_string()))?;
        EspTransform::new(enc, integ)
    }
}

fn deprecated(name: &str, why: &'static str) -> AlgorithmError {
    AlgorithmError::Deprecated {
        name: name.to_string(),
        why,
    }
}

/// One strongSwan encryption token (`aes128gcm16`, `chacha20poly1305`, `aes256`...):
/// `Ok(None)` if it is not an encryption algorithm, an error if it is a refused one. Shared
/// with the IKE proposal parser.
pub fn parse_encryption(tok: &str) -> Result<Option<Encryption>, AlgorithmError> {
    Ok(Some(match tok {
        "aes128gcm16" | "aes128gcm128" => Encryption::AesGcm128,
        "aes256gcm16" | "aes256gcm128" => Encryption::AesGcm256,
        "chacha20poly1305" => Encryption::ChaCha20Poly1305,
        "aes128" | "aes128cbc" => Encryption::AesCbc128,
        "aes256" | "aes256cbc" => Encryption::AesCbc256,
        "des" | "descbc" => return Err(deprecated(tok, "DES MUST NOT be implemented")),
        "3des" | "3descbc" => {
            return Err(deprecated(
                tok,
                "3DES is SHOULD NOT: its 64-bit block is unsafe at datacenter volumes",
            ))
        }
        "null" => {
            return Err(deprecated(
                tok,
                "ENCR_NULL gives no confidentiality and is not offered by this dataplane",
            ))
        }
        t if t.starts_with("aes")
            && (t.contains("gcm8")
                || t.contains("gcm12")
                || t.contains("gcm64")
                || t.contains("gcm96")) =>
        {
            return Err(deprecated(
                tok,
                "AES-GCM with an 8- or 12-byte ICV is SHOULD NOT; use the 16-byte ICV",
            ))
        }
        _ => return Ok(None),
    }))
}

/// One strongSwan integrity token (`sha256`...), as [`parse_encryption`].
pub fn parse_integrity(tok: &str) -> Result<Option<Integrity>, AlgorithmError> {
    Ok(Some(match tok {
        "sha256" | "sha2_256" => Integrity::HmacSha256_128,
        "sha384" | "sha2_384" => Integrity::HmacSha384_192,
        "sha512" | "sha2_512" => Integrity::HmacSha512_256,
        "md5" | "hmac_md5" => return Err(deprecated(tok, "HMAC-MD5-96 MUST NOT be used")),
        "sha1" | "sha" | "hmac_sha1" => {
            return Err(deprecated(
                tok,
                "HMAC-SHA1-96 is refused here; use sha256 or an AEAD",
            ))
        }
        _ => return Ok(None),
    }))
}

impl fmt::Display for EspTransform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encryption.name())?;
        if self.integrity != Integrity::None {
            write!(f, "-{}", self.integrity.name())?;
        }
        Ok(())
    }
}

impl std::str::FromStr for EspTransform {
    type Err = AlgorithmError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EspTransform::from_proposal(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supported_proposals_and_round_trips_names() {
        for s in [
            "aes128gcm16",
            "aes256gcm16",
            "chacha20poly1305",
            "aes128-sha256",
            "aes256-sha384",
            "aes256-sha512",
        ] {
            let t = EspTransform::from_proposal(s).unwrap();
            assert_eq!(t.to_string(), s);
        }
        assert_eq!(
            EspTransform::from_proposal("AES128GCM128").unwrap(),
            EspTransform::AES_GCM_128
        );
    }

    #[test]
    fn refuses_deprecated_with_rfc_8221() {
        for s in [
            "3des-sha256",
            "des-sha256",
            "aes128-md5",
            "aes128-sha1",
            "aes128gcm8",
            "null-sha256",
        ] {
            let e = EspTransform::from_proposal(s).unwrap_err();
            assert!(matches!(e, AlgorithmError::Deprecated { .. }), "{s}: {e}");
            assert!(e.to_string().contains("RFC 8221"), "{s}: {e}");
        }
    }

    #[test]
    fn refuses_bad_combinations_and_unknown() {
        assert!(matches!(
            EspTransform::from_proposal("aes128"),
            Err(AlgorithmError::BadCombination(_))
        ));
        assert!(matches!(
            EspTransform::from_proposal("aes128gcm16-sha256"),
            Err(AlgorithmError::BadCombination(_))
        ));
        assert!(matches!(
            EspTransform::from_proposal("aes128-whirlpool"),
            Err(AlgorithmError::Unknown(_))
        ));
    }
}
