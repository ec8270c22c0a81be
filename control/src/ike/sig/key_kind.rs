//! What kind a key is, and which schemes and AUTH methods such a key signs with.

use std::fmt;

use super::{method, Hash, Scheme};

/// The kind of a key, for logs and method choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    Ed25519,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA {bits}"),
            KeyKind::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyKind::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyKind::EcdsaP521 => f.write_str("ECDSA P-521"),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

impl KeyKind {
    /// The schemes a key of this kind signs with in RFC 7427 (method 14), best first: what
    /// strongSwan 5.9.8 picks for the key (ss:public_key.c `scheme_map`), except that RSA
    /// uses PSS (RFC 8247 §3.2 SHOULD).
    pub fn schemes(self) -> Vec<Scheme> {
        match self {
            KeyKind::Rsa { bits } if bits <= 3072 => vec![
                Scheme::RsaPss(Hash::Sha256),
                Scheme::RsaPss(Hash::Sha384),
                Scheme::RsaPss(Hash::Sha512),
            ],
            KeyKind::Rsa { .. } => vec![
                Scheme::RsaPss(Hash::Sha384),
                Scheme::RsaPss(Hash::Sha512),
                Scheme::RsaPss(Hash::Sha256),
            ],
            KeyKind::EcdsaP256 => vec![
                Scheme::Ecdsa(Hash::Sha256),
                Scheme::Ecdsa(Hash::Sha384),
                Scheme::Ecdsa(Hash::Sha512),
            ],
            KeyKind::EcdsaP384 => vec![
                Scheme::Ecdsa(Hash::Sha384),
                Scheme::Ecdsa(Hash::Sha512),
                Scheme::Ecdsa(Hash::Sha256),
            ],
            KeyKind::EcdsaP521 => vec![
                Scheme::Ecdsa(Hash::Sha512),
                Scheme::Ecdsa(Hash::Sha384),
                Scheme::Ecdsa(Hash::Sha256),
            ],
            KeyKind::Ed25519 => vec![Scheme::Ed25519],
        }
    }

    /// The first of [`KeyKind::schemes`] whose hash the peer announced (RFC 7427 §4).
    pub fn scheme_for(self, peer_hashes: &[Hash]) -> Option<Scheme> {
        self.schemes()
            .into_iter()
            .find(|s| peer_hashes.contains(&s.hash()))
    }

    /// The classic AUTH method for this key (RFC 7296 §3.8, RFC 4754), when the peer did not
    /// announce SIGNATURE_HASH_ALGORITHMS. Ed25519 has none (RFC 8420 needs method 14).
    pub fn classic_method(self) -> Option<u8> {
        match self {
            KeyKind::Rsa { .. } => Some(method::RSA_SIG),
            KeyKind::EcdsaP256 => Some(method::ECDSA_SHA256_P256),
            KeyKind::EcdsaP384 => Some(method::ECDSA_SHA384_P384),
            KeyKind::EcdsaP521 => Some(method::ECDSA_SHA512_P521),
            KeyKind::Ed25519 => None,
        }
    }
}
