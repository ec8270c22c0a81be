//! Signatures for IKE AUTH and for certificates: RFC 7427 Digital Signature (method 14)
//! with RSA-PSS, RSASSA-PKCS1-v1_5, ECDSA and Ed25519; the classic methods 1 (RSA) and
//! 9/10/11 (ECDSA P-256/P-384/P-521, RFC 4754); the SIGNATURE_HASH_ALGORITHMS values (RFC 7427 §4, RFC 8420).
//! Private keys are zeroized when dropped and never printed.
//!
//! Every primitive is RustCrypto's (`rsa` with PKCS#1 v1.5 and PSS, `p256`/`p384`/`p521`,
//! `ed25519-dalek`); this module chooses schemes, encodes and parses AlgorithmIdentifiers
//! and AUTH data, and loads keys.
//!
//! - `hash`: [`Hash`](enum@Hash) and the SIGNATURE_HASH_ALGORITHMS notify data;
//! - [`method`]: the AUTH method numbers;
//! - `scheme`: [`Scheme`] and its AlgorithmIdentifier;
//! - `key_kind`: [`KeyKind`], which schemes and methods a key signs with;
//! - `private_key`: [`PrivateKey`], loading and signing;
//! - `public_key`: [`PublicKey`], verifying AUTH data and certificate signatures;
//! - `rsa_sig`: the RSA schemes over the `rsa` crate with a run-time hash.

mod error;
mod hash;
mod key_kind;
pub mod method;
mod oid;
mod private_key;
mod public_key;
mod rng;
mod rsa_sig;
mod scheme;
#[cfg(test)]
mod test_util;

pub use error::SigError;
pub use hash::{hash_notify_data, parse_hash_notify, Hash, OUR_HASHES};
pub use key_kind::KeyKind;
pub use private_key::PrivateKey;
pub use public_key::{verify_cert_signature, PublicKey};
pub use scheme::Scheme;
