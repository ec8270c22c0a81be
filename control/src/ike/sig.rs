//! Signatures for IKE AUTH and for certificates: RFC 7427 Digital Signature (method 14)
//! with RSA-PSS, RSASSA-PKCS1-v1_5, ECDSA and Ed25519; the classic methods 1 (RSA) and
//! 9/10/11 (ECDSA, RFC 4754); the SIGNATURE_HASH_ALGORITHMS values (RFC 7427 §4, RFC 8420).
//! Private keys are zeroized when dropped and never printed.
//!
//! The primitives are RustCrypto's (`rsa`, `p256`/`p384`, `ed25519-dalek`); only
//! RSASSA-PKCS1-v1_5 is assembled here (RFC 8017 §8.2, encode-and-compare on verify) because
//! the `rsa` crate's `pkcs1v15` feature is not enabled in this build: its modular
//! exponentiations run on `crypto-bigint`'s constant-time `BoxedMontyForm::pow` for the
//! private exponent.

use std::convert::Infallible;
use std::fmt;

use der::asn1::{AnyRef, ObjectIdentifier, OctetStringRef};
use der::{Decode, Encode, Tag};
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use sha2::Digest;
use spki::AlgorithmIdentifierRef;
use zeroize::Zeroizing;

use super::sa::Random;

/// Hash algorithms of SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4, RFC 8420 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hash {
    Sha1 = 1,
    Sha256 = 2,
    Sha384 = 3,
    Sha512 = 4,
    /// RFC 8420: no hash (Ed25519 signs the octets themselves).
    Identity = 5,
}

/// What we announce in SIGNATURE_HASH_ALGORITHMS: SHA-1 is left out (RFC 8247 §3.2: MUST
/// NOT for signatures), Identity is needed for Ed25519 (RFC 8420 §2).
pub const OUR_HASHES: [Hash; 4] = [Hash::Sha256, Hash::Sha384, Hash::Sha512, Hash::Identity];

const OID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_SHA1_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5");
const OID_SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

impl Hash {
    /// The SIGNATURE_HASH_ALGORITHMS value (RFC 7427 §4).
    pub fn from_wire(v: u16) -> Option<Hash> {
        Some(match v {
            1 => Hash::Sha1,
            2 => Hash::Sha256,
            3 => Hash::Sha384,
            4 => Hash::Sha512,
            5 => Hash::Identity,
            _ => return None,
        })
    }

    pub fn wire(self) -> u16 {
        self as u16
    }

    /// The name in logs, as the IANA registry spells it.
    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha1 => "SHA1",
            Hash::Sha256 => "SHA2_256",
            Hash::Sha384 => "SHA2_384",
            Hash::Sha512 => "SHA2_512",
            Hash::Identity => "IDENTITY",
        }
    }

    fn oid(self) -> Option<ObjectIdentifier> {
        match self {
            Hash::Sha1 => Some(OID_SHA1),
            Hash::Sha256 => Some(OID_SHA256),
            Hash::Sha384 => Some(OID_SHA384),
            Hash::Sha512 => Some(OID_SHA512),
            Hash::Identity => None,
        }
    }

    fn from_oid(oid: ObjectIdentifier) -> Option<Hash> {
        [Hash::Sha1, Hash::Sha256, Hash::Sha384, Hash::Sha512]
            .into_iter()
            .find(|h| h.oid() == Some(oid))
    }

    /// Output length in bytes (0 for Identity).
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
            Hash::Identity => 0,
        }
    }

    fn digest(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => sha1::Sha1::digest(msg).to_vec(),
            Hash::Sha256 => sha2::Sha256::digest(msg).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(msg).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(msg).to_vec(),
            Hash::Identity => msg.to_vec(),
        }
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The SIGNATURE_HASH_ALGORITHMS notify data for `hashes` (RFC 7427 §4: a list of u16).
pub fn hash_notify_data(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.wire().to_be_bytes()).collect()
}

/// The hashes a SIGNATURE_HASH_ALGORITHMS notify lists, and how many values we do not
/// know (RFC 7427 §4: ignored; the caller reports them). `None` if the length is odd.
pub fn parse_hash_notify(data: &[u8]) -> Option<(Vec<Hash>, usize)> {
    if !data.len().is_multiple_of(2) {
        return None;
    }
    let mut known = Vec::new();
    let mut unknown = 0;
    for pair in data.chunks_exact(2) {
        match Hash::from_wire(u16::from_be_bytes([pair[0], pair[1]])) {
            Some(h) if !known.contains(&h) => known.push(h),
            Some(_) => {}
            None => unknown += 1,
        }
    }
    Some((known, unknown))
}

/// AUTH methods (RFC 7296 §3.8, RFC 4754 §3, RFC 7427 §3).
pub mod method {
    /// RSA Digital Signature: RSASSA-PKCS1-v1_5, with SHA-1 as every implementation does.
    pub const RSA_SIG: u8 = 1;
    pub const ECDSA_SHA256_P256: u8 = 9;
    pub const ECDSA_SHA384_P384: u8 = 10;
    pub const ECDSA_SHA512_P521: u8 = 11;
    /// RFC 7427 Digital Signature.
    pub const DIGITAL_SIGNATURE: u8 = 14;

    /// Whether `m` is one of the signature methods (as opposed to PSK, 2).
    pub fn is_signature(m: u8) -> bool {
        matches!(
            m,
            RSA_SIG | ECDSA_SHA256_P256 | ECDSA_SHA384_P384 | ECDSA_SHA512_P521 | DIGITAL_SIGNATURE
        )
    }

    /// The method's name in logs.
    pub fn name(m: u8) -> String {
        match m {
            RSA_SIG => "RSA signature (1)".into(),
            2 => "pre-shared key (2)".into(),
            ECDSA_SHA256_P256 => "ECDSA P-256 (9)".into(),
            ECDSA_SHA384_P384 => "ECDSA P-384 (10)".into(),
            ECDSA_SHA512_P521 => "ECDSA P-521 (11)".into(),
            DIGITAL_SIGNATURE => "digital signature (14)".into(),
            m => format!("method {m}"),
        }
    }
}

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigError {
    #[error("{0}")]
    Key(String),
    #[error("unsupported signature algorithm {0}")]
    Unsupported(String),
    #[error("the signature does not verify")]
    Invalid,
    /// Authentication Data or an AlgorithmIdentifier that cannot be parsed.
    #[error("malformed signature data: {0}")]
    Malformed(String),
    /// The scheme (or AUTH method) needs another kind of key than the one we have.
    #[error("a {scheme} signature cannot be made or checked with an {key} key")]
    WrongKey { scheme: String, key: String },
}

/// A signature scheme: what an RFC 7427 AlgorithmIdentifier names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// RSASSA-PKCS1-v1_5 (RFC 8017 §8.2).
    RsaPkcs1(Hash),
    /// RSASSA-PSS with MGF1 of the same hash and a salt as long as the hash (RFC 8017 §8.1,
    /// RFC 7427 A.4.3).
    RsaPss(Hash),
    /// ECDSA with the hash; the curve is the key's.
    Ecdsa(Hash),
    /// PureEdDSA (RFC 8032, RFC 8420).
    Ed25519,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheme::RsaPkcs1(h) => write!(f, "RSA PKCS#1 v1.5 with {h}"),
            Scheme::RsaPss(h) => write!(f, "RSA-PSS with {h}"),
            Scheme::Ecdsa(h) => write!(f, "ECDSA with {h}"),
            Scheme::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

fn der_err(what: &str) -> impl Fn(der::Error) -> SigError + '_ {
    move |e| SigError::Malformed(format!("{what}: {e}"))
}

impl Scheme {
    pub fn hash(self) -> Hash {
        match self {
            Scheme::RsaPkcs1(h) | Scheme::RsaPss(h) | Scheme::Ecdsa(h) => h,
            Scheme::Ed25519 => Hash::Identity,
        }
    }

    /// The DER AlgorithmIdentifier (RFC 7427 Appendix A; hash AlgIds with NULL parameters
    /// inside PSS params, none for ECDSA and Ed25519, as strongSwan writes them).
    pub fn alg_id_der(self) -> Result<Vec<u8>, SigError> {
        let unsupported = || SigError::Unsupported(self.to_string());
        let oid = match self {
            Scheme::RsaPkcs1(Hash::Sha256) => OID_SHA256_WITH_RSA,
            Scheme::RsaPkcs1(Hash::Sha384) => OID_SHA384_WITH_RSA,
            Scheme::RsaPkcs1(Hash::Sha512) => OID_SHA512_WITH_RSA,
            Scheme::Ecdsa(Hash::Sha256) => OID_ECDSA_SHA256,
            Scheme::Ecdsa(Hash::Sha384) => OID_ECDSA_SHA384,
            Scheme::Ecdsa(Hash::Sha512) => OID_ECDSA_SHA512,
            Scheme::Ed25519 => OID_ED25519,
            Scheme::RsaPss(h @ (Hash::Sha256 | Hash::Sha384 | Hash::Sha512)) => {
                let hash_oid = h.oid().ok_or_else(unsupported)?;
                let salt = u8::try_from(h.output_len()).map_err(|_| unsupported())?;
                let hash_ai = AlgorithmIdentifierRef {
                    oid: hash_oid,
                    parameters: Some(AnyRef::NULL),
                };
                let params = pkcs1::RsaPssParamsRef {
                    hash: hash_ai,
                    mask_gen: spki::AlgorithmIdentifier {
                        oid: OID_MGF1,
                        parameters: Some(hash_ai),
                    },
                    salt_len: salt,
                    trailer_field: pkcs1::TrailerField::BC,
                };
                let params_der = params.to_der().map_err(der_err("RSA-PSS parameters"))?;
                let any = AnyRef::try_from(params_der.as_slice())
                    .map_err(der_err("RSA-PSS parameters"))?;
                return AlgorithmIdentifierRef {
                    oid: OID_RSASSA_PSS,
                    parameters: Some(any),
                }
                .to_der()
                .map_err(der_err("RSA-PSS AlgorithmIdentifier"));
            }
            _ => return Err(unsupported()),
        };
        let null_params = matches!(self, Scheme::RsaPkcs1(_));
        AlgorithmIdentifierRef {
            oid,
            parameters: null_params.then_some(AnyRef::NULL),
        }
        .to_der()
        .map_err(der_err("AlgorithmIdentifier"))
    }

    /// The scheme a DER AlgorithmIdentifier names. Refuses SHA-1 (RFC 8247 §3.2), RSA-PSS
    /// with the SHA-1 defaults (empty parameters), an MGF1 hash other than the message hash,
    /// and a salt shorter than the hash (RFC 8017 §9.1 note 4: we use hash-length salts and
    /// expect them).
    pub fn from_alg_id_der(der: &[u8]) -> Result<Scheme, SigError> {
        let ai = AlgorithmIdentifierRef::from_der(der).map_err(der_err("AlgorithmIdentifier"))?;
        Scheme::from_alg_id(&ai)
    }

    /// As [`Scheme::from_alg_id_der`], on a parsed AlgorithmIdentifier.
    pub fn from_alg_id(ai: &AlgorithmIdentifierRef<'_>) -> Result<Scheme, SigError> {
        let params_null_or_absent = match ai.parameters {
            None => true,
            Some(p) => p.is_null(),
        };
        let rsa = |h| {
            if params_null_or_absent {
                Ok(Scheme::RsaPkcs1(h))
            } else {
                Err(SigError::Malformed(
                    "RSA AlgorithmIdentifier with parameters other than NULL".into(),
                ))
            }
        };
        let ec = |h| {
            // RFC 5758 §3.2: the parameters MUST be absent.
            if ai.parameters.is_none() {
                Ok(Scheme::Ecdsa(h))
            } else {
                Err(SigError::Malformed(
                    "ECDSA AlgorithmIdentifier with parameters".into(),
                ))
            }
        };
        match ai.oid {
            OID_SHA256_WITH_RSA => rsa(Hash::Sha256),
            OID_SHA384_WITH_RSA => rsa(Hash::Sha384),
            OID_SHA512_WITH_RSA => rsa(Hash::Sha512),
            OID_ECDSA_SHA256 => ec(Hash::Sha256),
            OID_ECDSA_SHA384 => ec(Hash::Sha384),
            OID_ECDSA_SHA512 => ec(Hash::Sha512),
            // RFC 8410 §3: parameters absent.
            OID_ED25519 if ai.parameters.is_none() => Ok(Scheme::Ed25519),
            OID_ED25519 => Err(SigError::Malformed(
                "Ed25519 AlgorithmIdentifier with parameters".into(),
            )),
            OID_SHA1_WITH_RSA => Err(SigError::Unsupported(
                "sha1WithRSAEncryption (SHA-1 is not accepted for signatures, RFC 8247)".into(),
            )),
            OID_RSASSA_PSS => Self::pss_from_params(ai),
            oid => Err(SigError::Unsupported(format!("OID {oid}"))),
        }
    }

    fn pss_from_params(ai: &AlgorithmIdentifierRef<'_>) -> Result<Scheme, SigError> {
        let any = ai.parameters.ok_or_else(|| {
            SigError::Unsupported("RSA-PSS without parameters (SHA-1 defaults)".into())
        })?;
        let params_der = any.to_der().map_err(der_err("RSA-PSS parameters"))?;
        let params = pkcs1::RsaPssParamsOwned::from_der(&params_der)
            .map_err(der_err("RSA-PSS parameters"))?;
        let null_or_absent = |p: &Option<der::Any>| p.as_ref().is_none_or(|p| p.is_null());
        if !null_or_absent(&params.hash.parameters) {
            return Err(SigError::Malformed(
                "RSA-PSS hash AlgorithmIdentifier with parameters other than NULL".into(),
            ));
        }
        let hash = Hash::from_oid(params.hash.oid).ok_or_else(|| {
            SigError::Unsupported(format!("RSA-PSS with hash {}", params.hash.oid))
        })?;
        if hash == Hash::Sha1 {
            return Err(SigError::Unsupported(
                "RSA-PSS with SHA-1 (the default parameters; SHA-1 is not accepted, RFC 8247)"
                    .into(),
            ));
        }
        if params.mask_gen.oid != OID_MGF1 {
            return Err(SigError::Unsupported(format!(
                "RSA-PSS mask generation {}",
                params.mask_gen.oid
            )));
        }
        let mgf_hash = params
            .mask_gen
            .parameters
            .as_ref()
            .ok_or_else(|| SigError::Malformed("MGF1 without a hash".into()))?;
        if mgf_hash.oid != params.hash.oid || !null_or_absent(&mgf_hash.parameters) {
            return Err(SigError::Unsupported(format!(
                "RSA-PSS with hash {} but MGF1 with {}",
                params.hash.oid, mgf_hash.oid
            )));
        }
        if usize::from(params.salt_len) != hash.output_len() {
            return Err(SigError::Unsupported(format!(
                "RSA-PSS with {hash} and a {}-byte salt (we expect {})",
                params.salt_len,
                hash.output_len()
            )));
        }
        Ok(Scheme::RsaPss(hash))
    }
}

/// The kind of a key, for logs and method choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA {bits}"),
            KeyKind::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyKind::EcdsaP384 => f.write_str("ECDSA P-384"),
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
            KeyKind::Ed25519 => None,
        }
    }
}

/// Our `Random` as the `rand_core` 0.10 RNG the RSA-PSS salt is drawn from.
struct RngAdapter<'a>(&'a mut dyn Random);

impl rand_core::TryRng for RngAdapter<'_> {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for RngAdapter<'_> {}

enum PrivInner {
    Rsa(Box<rsa::PrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

/// A private key we sign with. Every variant zeroizes its secret on drop (the RustCrypto
/// types are `ZeroizeOnDrop`); the decoded DER is held in `Zeroizing` while parsing.
pub struct PrivateKey {
    inner: PrivInner,
    spki: Vec<u8>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.kind())
    }
}

fn key_err(what: &str) -> impl Fn(String) -> SigError + '_ {
    move |e| SigError::Key(format!("{what}: {e}"))
}

/// PEM labels of private keys (RFC 7468 §10, RFC 8017 A.1.2, RFC 5915 §4).
const KEY_LABELS: [&str; 4] = [
    "RSA PRIVATE KEY",
    "EC PRIVATE KEY",
    "PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
];

impl PrivateKey {
    /// PEM: `RSA PRIVATE KEY` (PKCS#1), `EC PRIVATE KEY` (SEC1), `PRIVATE KEY` (PKCS#8).
    /// Other blocks (an `EC PARAMETERS` block openssl writes first) are skipped.
    pub fn from_pem(text: &str) -> Result<PrivateKey, SigError> {
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN ") {
            let block = &rest[start..];
            let label_end = block["-----BEGIN ".len()..]
                .find("-----")
                .ok_or_else(|| SigError::Key("PEM: unterminated BEGIN line".into()))?;
            let label = &block["-----BEGIN ".len().."-----BEGIN ".len() + label_end];
            let end_marker = format!("-----END {label}-----");
            let end = block
                .find(&end_marker)
                .ok_or_else(|| SigError::Key(format!("PEM: no END line for {label}")))?
                + end_marker.len();
            if KEY_LABELS.contains(&label) {
                return Self::from_pem_block(&block[..end]);
            }
            rest = &block[end..];
        }
        Err(SigError::Key(
            "no private key in the PEM text (expected RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY)"
                .into(),
        ))
    }

    fn from_pem_block(block: &str) -> Result<PrivateKey, SigError> {
        let (label, der) = der::pem::decode_vec(block.as_bytes())
            .map_err(|e| SigError::Key(format!("PEM: {e}")))?;
        let der = Zeroizing::new(der);
        match label {
            "RSA PRIVATE KEY" => Self::from_pkcs1_der(&der),
            "EC PRIVATE KEY" => Self::from_sec1_der(&der),
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "ENCRYPTED PRIVATE KEY" => Err(SigError::Key(
                "encrypted private keys are not supported; store the key unencrypted with mode 600"
                    .into(),
            )),
            other => Err(SigError::Key(format!(
                "PEM block {other} is not a private key"
            ))),
        }
    }

    /// DER, any of the three forms (PKCS#8 tried first, then PKCS#1, then SEC1).
    pub fn from_der(der: &[u8]) -> Result<PrivateKey, SigError> {
        if pkcs8::PrivateKeyInfoRef::from_der(der).is_ok() {
            return Self::from_pkcs8_der(der);
        }
        Self::from_pkcs1_der(der)
            .or_else(|_| Self::from_sec1_der(der))
            .map_err(|_| {
                SigError::Key("DER is not a PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key".into())
            })
    }

    fn from_pkcs1_der(der: &[u8]) -> Result<PrivateKey, SigError> {
        use pkcs1::DecodeRsaPrivateKey;
        let k = rsa::PrivateKey::from_pkcs1_der(der)
            .map_err(|e| key_err("RSA PKCS#1 key")(e.to_string()))?;
        Self::from_rsa(k)
    }

    fn from_rsa(k: rsa::PrivateKey) -> Result<PrivateKey, SigError> {
        k.validate()
            .map_err(|e| key_err("RSA key")(e.to_string()))?;
        Self::new(PrivInner::Rsa(Box::new(k)))
    }

    fn from_sec1_der(der: &[u8]) -> Result<PrivateKey, SigError> {
        // The curve comes from the key's parameters: each crate refuses the other's OID.
        if let Ok(sk) = p256::SecretKey::from_sec1_der(der) {
            return Self::new(PrivInner::P256(sk.into()));
        }
        match p384::SecretKey::from_sec1_der(der) {
            Ok(sk) => Self::new(PrivInner::P384(sk.into())),
            Err(e) => Err(SigError::Key(format!(
                "EC key: not a P-256 or P-384 SEC1 key ({e})"
            ))),
        }
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<PrivateKey, SigError> {
        use pkcs8::DecodePrivateKey;
        let info = pkcs8::PrivateKeyInfoRef::from_der(der)
            .map_err(|e| key_err("PKCS#8 key")(e.to_string()))?;
        let e8 = |e: pkcs8::Error| key_err("PKCS#8 key")(e.to_string());
        match info.algorithm.oid {
            OID_RSA_ENCRYPTION => Self::from_rsa(rsa::PrivateKey::from_pkcs8_der(der).map_err(e8)?),
            OID_EC_PUBLIC_KEY => match info.algorithm.parameters_oid() {
                Ok(OID_P256) => Self::new(PrivInner::P256(
                    p256::SecretKey::from_pkcs8_der(der).map_err(e8)?.into(),
                )),
                Ok(OID_P384) => Self::new(PrivInner::P384(
                    p384::SecretKey::from_pkcs8_der(der).map_err(e8)?.into(),
                )),
                Ok(curve) => Err(SigError::Key(format!(
                    "PKCS#8 EC key on curve {curve}: only P-256 and P-384 are supported"
                ))),
                Err(e) => Err(SigError::Key(format!("PKCS#8 EC key without a curve: {e}"))),
            },
            OID_ED25519 => Self::new(PrivInner::Ed25519(Box::new(
                ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(e8)?,
            ))),
            oid => Err(SigError::Key(format!(
                "PKCS#8 key of type {oid}: only RSA, ECDSA P-256/P-384 and Ed25519 are supported"
            ))),
        }
    }

    fn new(inner: PrivInner) -> Result<PrivateKey, SigError> {
        use pkcs8::EncodePublicKey;
        let spki = match &inner {
            PrivInner::Rsa(k) => k.to_public_key().to_public_key_der(),
            PrivInner::P256(k) => k.verifying_key().to_public_key_der(),
            PrivInner::P384(k) => k.verifying_key().to_public_key_der(),
            PrivInner::Ed25519(k) => k.verifying_key().to_public_key_der(),
        }
        .map_err(|e| SigError::Key(format!("encoding the public key: {e}")))?;
        Ok(PrivateKey {
            inner,
            spki: spki.as_bytes().to_vec(),
        })
    }

    /// The matching public key as DER SubjectPublicKeyInfo.
    pub fn public_spki_der(&self) -> Vec<u8> {
        self.spki.clone()
    }

    pub fn kind(&self) -> KeyKind {
        match &self.inner {
            PrivInner::Rsa(k) => KeyKind::Rsa {
                bits: k.n().bit_width_vartime() as usize,
            },
            PrivInner::P256(_) => KeyKind::EcdsaP256,
            PrivInner::P384(_) => KeyKind::EcdsaP384,
            PrivInner::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    fn wrong_key(&self, scheme: Scheme) -> SigError {
        SigError::WrongKey {
            scheme: scheme.to_string(),
            key: self.kind().to_string(),
        }
    }

    /// Sign `msg` with `scheme`: the bare signature (ECDSA as DER `Ecdsa-Sig-Value`, as in
    /// certificates and RFC 7427 §3). `rng` supplies the RSA-PSS salt; ECDSA is
    /// deterministic (RFC 6979), Ed25519 by definition.
    pub fn sign(
        &self,
        scheme: Scheme,
        msg: &[u8],
        rng: &mut dyn Random,
    ) -> Result<Vec<u8>, SigError> {
        match (&self.inner, scheme) {
            (PrivInner::Rsa(k), Scheme::RsaPkcs1(h)) if h != Hash::Identity => {
                pkcs1v15_sign(k, h, &h.digest(msg))
            }
            (PrivInner::Rsa(k), Scheme::RsaPss(h)) => rsa_pss_sign(k, h, msg, rng),
            (PrivInner::P256(_) | PrivInner::P384(_), Scheme::Ecdsa(h)) => {
                Ok(self.ecdsa_sign(h, msg, scheme)?.0)
            }
            (PrivInner::Ed25519(k), Scheme::Ed25519) => {
                use ed25519_dalek::Signer;
                Ok(k.sign(msg).to_bytes().to_vec())
            }
            _ => Err(self.wrong_key(scheme)),
        }
    }

    /// ECDSA over the `h` digest of `msg`: (DER, r‖s).
    fn ecdsa_sign(
        &self,
        h: Hash,
        msg: &[u8],
        scheme: Scheme,
    ) -> Result<(Vec<u8>, Vec<u8>), SigError> {
        if matches!(h, Hash::Identity | Hash::Sha1) {
            return Err(SigError::Unsupported(scheme.to_string()));
        }
        let digest = h.digest(msg);
        let fail = |e: p256::ecdsa::Error| SigError::Key(format!("ECDSA signing: {e}"));
        match &self.inner {
            PrivInner::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign_prehash(&digest).map_err(fail)?;
                Ok((s.to_der().as_bytes().to_vec(), s.to_bytes().to_vec()))
            }
            PrivInner::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign_prehash(&digest).map_err(fail)?;
                Ok((s.to_der().as_bytes().to_vec(), s.to_bytes().to_vec()))
            }
            _ => Err(self.wrong_key(scheme)),
        }
    }

    /// RFC 7427 §3 Authentication Data for method 14: `len | AlgorithmIdentifier | signature`.
    pub fn auth_digital_signature(
        &self,
        scheme: Scheme,
        octets: &[u8],
        rng: &mut dyn Random,
    ) -> Result<Vec<u8>, SigError> {
        let alg = scheme.alg_id_der()?;
        let len = u8::try_from(alg.len())
            .map_err(|_| SigError::Malformed("AlgorithmIdentifier longer than 255 bytes".into()))?;
        let sig = self.sign(scheme, octets, rng)?;
        let mut out = Vec::with_capacity(1 + alg.len() + sig.len());
        out.push(len);
        out.extend_from_slice(&alg);
        out.extend_from_slice(&sig);
        Ok(out)
    }

    /// A classic AUTH payload (method, data) for this key: method 1 RSASSA-PKCS1-v1_5 with
    /// SHA-1 (what strongSwan signs and expects: ss:pubkey_authenticator.c
    /// `SIGN_RSA_EMSA_PKCS1_SHA1`), 9/10 ECDSA r‖s (RFC 4754 §3, §7).
    pub fn auth_classic(&self, octets: &[u8]) -> Result<(u8, Vec<u8>), SigError> {
        match &self.inner {
            PrivInner::Rsa(k) => Ok((
                method::RSA_SIG,
                pkcs1v15_sign(k, Hash::Sha1, &Hash::Sha1.digest(octets))?,
            )),
            PrivInner::P256(_) => Ok((
                method::ECDSA_SHA256_P256,
                self.ecdsa_sign(Hash::Sha256, octets, Scheme::Ecdsa(Hash::Sha256))?
                    .1,
            )),
            PrivInner::P384(_) => Ok((
                method::ECDSA_SHA384_P384,
                self.ecdsa_sign(Hash::Sha384, octets, Scheme::Ecdsa(Hash::Sha384))?
                    .1,
            )),
            PrivInner::Ed25519(_) => Err(SigError::Unsupported(
                "Ed25519 has no classic AUTH method; the peer must announce SIGNATURE_HASH_ALGORITHMS with Identity (RFC 8420)".into(),
            )),
        }
    }
}

fn rsa_pss_sign(
    k: &rsa::PrivateKey,
    h: Hash,
    msg: &[u8],
    rng: &mut dyn Random,
) -> Result<Vec<u8>, SigError> {
    let mut rng = RngAdapter(rng);
    let digest = h.digest(msg);
    let salt = h.output_len();
    let r = match h {
        Hash::Sha256 => k.sign_with_rng(
            &mut rng,
            rsa::Pss::<sha2::Sha256>::new_with_salt(salt),
            &digest,
        ),
        Hash::Sha384 => k.sign_with_rng(
            &mut rng,
            rsa::Pss::<sha2::Sha384>::new_with_salt(salt),
            &digest,
        ),
        Hash::Sha512 => k.sign_with_rng(
            &mut rng,
            rsa::Pss::<sha2::Sha512>::new_with_salt(salt),
            &digest,
        ),
        Hash::Sha1 | Hash::Identity => {
            return Err(SigError::Unsupported(Scheme::RsaPss(h).to_string()))
        }
    };
    r.map_err(|e| SigError::Key(format!("RSA-PSS signing: {e}")))
}

/// RFC 8017 §9.2 EMSA-PKCS1-v1_5: `00 01 FF… 00 DigestInfo`, `k` bytes.
fn emsa_pkcs1v15(h: Hash, digest: &[u8], k: usize) -> Result<Vec<u8>, SigError> {
    let oid = h
        .oid()
        .ok_or_else(|| SigError::Unsupported(Scheme::RsaPkcs1(h).to_string()))?;
    // DigestInfo ::= SEQUENCE { AlgorithmIdentifier (NULL parameters), OCTET STRING }
    let mut body = AlgorithmIdentifierRef {
        oid,
        parameters: Some(AnyRef::NULL),
    }
    .to_der()
    .map_err(der_err("DigestInfo"))?;
    OctetStringRef::new(digest)
        .and_then(|o| o.encode_to_vec(&mut body))
        .map_err(der_err("DigestInfo"))?;
    let t = AnyRef::new(Tag::Sequence, &body)
        .and_then(|a| a.to_der())
        .map_err(der_err("DigestInfo"))?;
    // RFC 8017 §9.2 step 3: at least 8 bytes of FF.
    if k < t.len() + 11 {
        return Err(SigError::Key("RSA key too short for the digest".into()));
    }
    let mut em = vec![0xff; k];
    em[0] = 0;
    em[1] = 1;
    em[k - t.len() - 1] = 0;
    em[k - t.len()..].copy_from_slice(&t);
    Ok(em)
}

/// RFC 8017 §8.2.1 RSASSA-PKCS1-V1_5-SIGN over a digest: RSASP1 is m^d mod n with
/// `crypto-bigint`'s constant-time exponentiation, checked by s^e = m before release (a
/// faulty computation must not leak the key).
fn pkcs1v15_sign(k: &rsa::PrivateKey, h: Hash, digest: &[u8]) -> Result<Vec<u8>, SigError> {
    use crypto_bigint::modular::BoxedMontyForm;
    let size = k.size();
    let em = emsa_pkcs1v15(h, digest, size)?;
    let params = k.n_params();
    let prec = params.bits_precision();
    let m = rsa::BoxedUint::from_be_slice(&em, prec)
        .map_err(|e| SigError::Key(format!("RSA signing: {e:?}")))?;
    let s = BoxedMontyForm::new(m.clone(), params).pow(k.d()).retrieve();
    let back = BoxedMontyForm::new(s.clone(), params)
        .pow_bounded_exp(k.e(), k.e().bit_width_vartime())
        .retrieve();
    if back != m {
        return Err(SigError::Key(
            "RSA signing: the result does not verify".into(),
        ));
    }
    Ok(fixed_be(&s, size))
}

/// The last `k` bytes of the big-endian encoding (the value is below the modulus).
fn fixed_be(x: &rsa::BoxedUint, k: usize) -> Vec<u8> {
    let b = x.to_be_bytes();
    if b.len() >= k {
        b[b.len() - k..].to_vec()
    } else {
        let mut out = vec![0; k - b.len()];
        out.extend_from_slice(&b);
        out
    }
}

/// RFC 8017 §8.2.2 RSASSA-PKCS1-V1_5-VERIFY: RSAVP1, then compare with the encoding we
/// build ourselves (no parsing of the recovered block: the BER and garbage variants of
/// Bleichenbacher's 2006 forgery cannot pass).
fn pkcs1v15_verify(k: &rsa::PublicKey, h: Hash, digest: &[u8], sig: &[u8]) -> Result<(), SigError> {
    use crypto_bigint::modular::BoxedMontyForm;
    let size = k.size();
    if sig.len() != size {
        return Err(SigError::Invalid);
    }
    let params = k.n_params();
    let s = rsa::BoxedUint::from_be_slice(sig, params.bits_precision())
        .map_err(|_| SigError::Invalid)?;
    if s >= *k.n().as_ref() {
        return Err(SigError::Invalid);
    }
    let m = BoxedMontyForm::new(s, params)
        .pow_bounded_exp(k.e(), k.e().bit_width_vartime())
        .retrieve();
    let want = emsa_pkcs1v15(h, digest, size)?;
    if fixed_be(&m, size) == want {
        Ok(())
    } else {
        Err(SigError::Invalid)
    }
}

enum PubInner {
    Rsa(Box<rsa::PublicKey>),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// A public key we verify with (from a certificate's SubjectPublicKeyInfo).
pub struct PublicKey {
    inner: PubInner,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.kind())
    }
}

impl PublicKey {
    /// From DER SubjectPublicKeyInfo: RSA (rsaEncryption), EC P-256/P-384, Ed25519.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, SigError> {
        use pkcs8::DecodePublicKey;
        let info = spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| SigError::Key(format!("SubjectPublicKeyInfo: {e}")))?;
        let e = |e: spki::Error| SigError::Key(format!("public key: {e}"));
        let inner = match info.algorithm.oid {
            OID_RSA_ENCRYPTION | OID_RSASSA_PSS => PubInner::Rsa(Box::new(
                rsa::PublicKey::from_public_key_der(der).map_err(e)?,
            )),
            OID_EC_PUBLIC_KEY => match info.algorithm.parameters_oid() {
                Ok(OID_P256) => {
                    PubInner::P256(p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(e)?)
                }
                Ok(OID_P384) => {
                    PubInner::P384(p384::ecdsa::VerifyingKey::from_public_key_der(der).map_err(e)?)
                }
                Ok(curve) => {
                    return Err(SigError::Key(format!(
                        "EC public key on curve {curve}: only P-256 and P-384 are supported"
                    )))
                }
                Err(err) => return Err(e(err)),
            },
            OID_ED25519 => {
                PubInner::Ed25519(ed25519_dalek::VerifyingKey::from_public_key_der(der).map_err(e)?)
            }
            oid => {
                return Err(SigError::Key(format!(
                "public key of type {oid}: only RSA, ECDSA P-256/P-384 and Ed25519 are supported"
            )))
            }
        };
        Ok(PublicKey { inner })
    }

    pub fn kind(&self) -> KeyKind {
        match &self.inner {
            PubInner::Rsa(k) => KeyKind::Rsa {
                bits: k.n().bit_width_vartime() as usize,
            },
            PubInner::P256(_) => KeyKind::EcdsaP256,
            PubInner::P384(_) => KeyKind::EcdsaP384,
            PubInner::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    fn wrong_key(&self, scheme: impl fmt::Display) -> SigError {
        SigError::WrongKey {
            scheme: scheme.to_string(),
            key: self.kind().to_string(),
        }
    }

    /// Check `sig` over `msg` with `scheme` (ECDSA signatures DER-encoded).
    pub fn verify(&self, scheme: Scheme, msg: &[u8], sig: &[u8]) -> Result<(), SigError> {
        match (&self.inner, scheme) {
            (PubInner::Rsa(k), Scheme::RsaPkcs1(h)) if h != Hash::Identity => {
                pkcs1v15_verify(k, h, &h.digest(msg), sig)
            }
            (PubInner::Rsa(k), Scheme::RsaPss(h)) => rsa_pss_verify(k, h, msg, sig),
            (PubInner::P256(_) | PubInner::P384(_), Scheme::Ecdsa(h)) => {
                self.ecdsa_verify(h, msg, EcSig::Der(sig), scheme)
            }
            (PubInner::Ed25519(k), Scheme::Ed25519) => {
                let sig =
                    ed25519_dalek::Signature::from_slice(sig).map_err(|_| SigError::Invalid)?;
                // RFC 8032 §5.1.7 with the canonical-S check; `verify_strict` also refuses
                // small-order keys and R values, which RFC 8032 does not require.
                use ed25519_dalek::Verifier;
                k.verify(msg, &sig).map_err(|_| SigError::Invalid)
            }
            _ => Err(self.wrong_key(scheme)),
        }
    }

    /// ECDSA with a fixed-width `r‖s` signature (IEEE P1363, RFC 4754 §7).
    pub fn verify_ecdsa_fixed(&self, h: Hash, msg: &[u8], sig: &[u8]) -> Result<(), SigError> {
        self.ecdsa_verify(h, msg, EcSig::Fixed(sig), Scheme::Ecdsa(h))
    }

    fn ecdsa_verify(
        &self,
        h: Hash,
        msg: &[u8],
        sig: EcSig<'_>,
        scheme: Scheme,
    ) -> Result<(), SigError> {
        if matches!(h, Hash::Identity | Hash::Sha1) {
            return Err(SigError::Unsupported(scheme.to_string()));
        }
        let digest = h.digest(msg);
        match (&self.inner, sig) {
            (PubInner::P256(k), EcSig::Der(b)) => {
                let s = p256::ecdsa::Signature::from_der(b).map_err(|_| SigError::Invalid)?;
                k.verify_prehash(&digest, &s).map_err(|_| SigError::Invalid)
            }
            (PubInner::P256(k), EcSig::Fixed(b)) => {
                let s = p256::ecdsa::Signature::from_slice(b).map_err(|_| SigError::Invalid)?;
                k.verify_prehash(&digest, &s).map_err(|_| SigError::Invalid)
            }
            (PubInner::P384(k), EcSig::Der(b)) => {
                let s = p384::ecdsa::Signature::from_der(b).map_err(|_| SigError::Invalid)?;
                k.verify_prehash(&digest, &s).map_err(|_| SigError::Invalid)
            }
            (PubInner::P384(k), EcSig::Fixed(b)) => {
                let s = p384::ecdsa::Signature::from_slice(b).map_err(|_| SigError::Invalid)?;
                k.verify_prehash(&digest, &s).map_err(|_| SigError::Invalid)
            }
            _ => Err(self.wrong_key(scheme)),
        }
    }

    /// Check an AUTH payload's data (`auth_method`, `data`) over the signed octets
    /// (RFC 7296 §2.15). Returns the scheme it was made with, for the log.
    pub fn verify_auth(
        &self,
        auth_method: u8,
        data: &[u8],
        octets: &[u8],
    ) -> Result<Scheme, SigError> {
        match auth_method {
            // RFC 7427 §3: ASN.1 length (1 octet) | AlgorithmIdentifier | signature.
            method::DIGITAL_SIGNATURE => {
                let (&len, rest) = data
                    .split_first()
                    .ok_or_else(|| SigError::Malformed("empty Authentication Data".into()))?;
                let len = usize::from(len);
                if rest.len() < len {
                    return Err(SigError::Malformed(format!(
                        "AlgorithmIdentifier length {len} exceeds the {} bytes there",
                        rest.len()
                    )));
                }
                let (alg, sig) = rest.split_at(len);
                let scheme = Scheme::from_alg_id_der(alg)?;
                self.verify(scheme, octets, sig)?;
                Ok(scheme)
            }
            method::RSA_SIG => {
                let scheme = Scheme::RsaPkcs1(Hash::Sha1);
                match &self.inner {
                    PubInner::Rsa(k) => {
                        pkcs1v15_verify(k, Hash::Sha1, &Hash::Sha1.digest(octets), data)?;
                        Ok(scheme)
                    }
                    _ => Err(self.wrong_key(method::name(auth_method))),
                }
            }
            method::ECDSA_SHA256_P256 | method::ECDSA_SHA384_P384 => {
                let (h, ok) = match (auth_method, &self.inner) {
                    (method::ECDSA_SHA256_P256, PubInner::P256(_)) => (Hash::Sha256, true),
                    (method::ECDSA_SHA384_P384, PubInner::P384(_)) => (Hash::Sha384, true),
                    _ => (Hash::Sha256, false),
                };
                if !ok {
                    // RFC 4754 §3: the method fixes the curve.
                    return Err(self.wrong_key(method::name(auth_method)));
                }
                self.verify_ecdsa_fixed(h, octets, data)?;
                Ok(Scheme::Ecdsa(h))
            }
            m => Err(SigError::Unsupported(format!(
                "AUTH {} (we verify methods 1, 9, 10 and 14)",
                method::name(m)
            ))),
        }
    }
}

#[derive(Clone, Copy)]
enum EcSig<'a> {
    Der(&'a [u8]),
    Fixed(&'a [u8]),
}

fn rsa_pss_verify(k: &rsa::PublicKey, h: Hash, msg: &[u8], sig: &[u8]) -> Result<(), SigError> {
    let digest = h.digest(msg);
    let salt = h.output_len();
    let r = match h {
        Hash::Sha256 => k.verify(rsa::Pss::<sha2::Sha256>::new_with_salt(salt), &digest, sig),
        Hash::Sha384 => k.verify(rsa::Pss::<sha2::Sha384>::new_with_salt(salt), &digest, sig),
        Hash::Sha512 => k.verify(rsa::Pss::<sha2::Sha512>::new_with_salt(salt), &digest, sig),
        Hash::Sha1 | Hash::Identity => {
            return Err(SigError::Unsupported(Scheme::RsaPss(h).to_string()))
        }
    };
    r.map_err(|_| SigError::Invalid)
}

/// Check a certificate's or CRL's signature: `sig_alg_der` is the DER AlgorithmIdentifier
/// from the certificate, `tbs_der` the signed bytes, `issuer_spki_der` the issuer's key.
pub fn verify_cert_signature(
    issuer_spki_der: &[u8],
    sig_alg_der: &[u8],
    tbs_der: &[u8],
    signature: &[u8],
) -> Result<(), SigError> {
    let key = PublicKey::from_spki_der(issuer_spki_der)?;
    let scheme = Scheme::from_alg_id_der(sig_alg_der)?;
    key.verify(scheme, tbs_der, signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Seq;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const PSS256: &str = "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120";

    /// Research §2's table (RFC 7427 A.4.3 after errata; strongSwan's test_signature_params.c).
    #[test]
    fn alg_ids_encode_as_strongswan_and_rfc_7427() {
        let pss = |h: &str, salt: &str| {
            PSS256
                .replace("0402010500", &format!("04020{h}0500"))
                .replace("a203020120", &format!("a2030201{salt}"))
        };
        let table = [
            (
                Scheme::RsaPkcs1(Hash::Sha256),
                "300d06092a864886f70d01010b0500".to_string(),
            ),
            (
                Scheme::RsaPkcs1(Hash::Sha384),
                "300d06092a864886f70d01010c0500".to_string(),
            ),
            (
                Scheme::RsaPkcs1(Hash::Sha512),
                "300d06092a864886f70d01010d0500".to_string(),
            ),
            (Scheme::RsaPss(Hash::Sha256), PSS256.to_string()),
            (Scheme::RsaPss(Hash::Sha384), pss("2", "30")),
            (Scheme::RsaPss(Hash::Sha512), pss("3", "40")),
            (
                Scheme::Ecdsa(Hash::Sha256),
                "300a06082a8648ce3d040302".to_string(),
            ),
            (
                Scheme::Ecdsa(Hash::Sha384),
                "300a06082a8648ce3d040303".to_string(),
            ),
            (
                Scheme::Ecdsa(Hash::Sha512),
                "300a06082a8648ce3d040304".to_string(),
            ),
            (Scheme::Ed25519, "300506032b6570".to_string()),
        ];
        for (scheme, want) in table {
            let der = scheme.alg_id_der().unwrap();
            assert_eq!(der, hex(&want), "{scheme}");
            assert_eq!(Scheme::from_alg_id_der(&der).unwrap(), scheme);
        }
        assert!(Scheme::RsaPkcs1(Hash::Sha1).alg_id_der().is_err());
        assert!(Scheme::Ecdsa(Hash::Identity).alg_id_der().is_err());
    }

    #[test]
    fn alg_id_variants_accepted_and_refused() {
        // Hash AlgIds without NULL parameters (63 bytes), as some implementations write.
        let no_null = "303d06092a864886f70d01010a3030a00d300b0609608648016503040201a11a301806092a864886f70d010108300b0609608648016503040201a203020120";
        assert_eq!(
            Scheme::from_alg_id_der(&hex(no_null)).unwrap(),
            Scheme::RsaPss(Hash::Sha256)
        );
        // An explicit trailerField (strongSwan's rsa_pss_trailerfield option).
        let trailer = "304606092a864886f70d01010a3039a00f300d06096086480165030402010500a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120a303020101";
        assert_eq!(
            Scheme::from_alg_id_der(&hex(trailer)).unwrap(),
            Scheme::RsaPss(Hash::Sha256)
        );
        // RSA PKCS#1 with parameters absent (RFC 4055 allows it on input).
        assert_eq!(
            Scheme::from_alg_id_der(&hex("300b06092a864886f70d01010b")).unwrap(),
            Scheme::RsaPkcs1(Hash::Sha256)
        );
        for (bad, word) in [
            ("300d06092a864886f70d01010a3000", "SHA-1"), // PSS with all defaults
            ("300b06092a864886f70d01010a", "SHA-1"),     // PSS without parameters
            ("300d06092a864886f70d0101050500", "SHA-1"), // sha1WithRSAEncryption
            // PSS SHA-256 with a 20-byte salt
            ("303c06092a864886f70d01010a302fa00f300d06096086480165030402010500a11c301a06092a864886f70d010108300d06096086480165030402010500", "salt"),
            ("300c06082a8648ce3d0403020500", "parameters"), // ECDSA with NULL params
            ("3009060700000000000000", "OID"),
        ] {
            let e = Scheme::from_alg_id_der(&hex(bad)).unwrap_err().to_string();
            assert!(e.contains(word), "{bad}: {e}");
        }
    }

    #[test]
    fn hash_notify_round_trip() {
        let d = hash_notify_data(&OUR_HASHES);
        assert_eq!(d, [0, 2, 0, 3, 0, 4, 0, 5]);
        assert_eq!(parse_hash_notify(&d), Some((OUR_HASHES.to_vec(), 0)));
        assert_eq!(
            parse_hash_notify(&[0, 1, 0, 9, 0, 2, 0, 2]),
            Some((vec![Hash::Sha1, Hash::Sha256], 1))
        );
        assert_eq!(parse_hash_notify(&[0, 1, 0]), None);
    }

    #[test]
    fn digest_info_matches_rfc_8017_prefixes() {
        // RFC 8017 §9.2 note 1.
        let em = emsa_pkcs1v15(Hash::Sha256, &[0xaa; 32], 64).unwrap();
        let t = hex("3031300d060960864801650304020105000420");
        assert_eq!(&em[64 - 32 - t.len()..64 - 32], &t[..]);
        assert_eq!(&em[..3], &[0, 1, 0xff]);
        assert_eq!(em[64 - 32 - t.len() - 1], 0);
        let em = emsa_pkcs1v15(Hash::Sha1, &[0xaa; 20], 64).unwrap();
        assert_eq!(
            &em[64 - 20 - 15..64 - 20],
            &hex("3021300906052b0e03021a05000414")[..]
        );
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/data/pki/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn cert_spki(name: &str) -> Vec<u8> {
        use der::DecodePem;
        let c = x509_cert::Certificate::from_pem(fixture(name).as_bytes()).unwrap();
        c.tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .unwrap()
    }

    /// Every fixture key loads, matches its certificate, and signs with every scheme its
    /// kind offers, the classic method included; tampering is caught.
    #[test]
    fn fixture_keys_sign_and_verify() {
        for (name, kind) in [
            ("gw-a", KeyKind::Rsa { bits: 3072 }),
            ("gw-b", KeyKind::EcdsaP256),
            ("gw-c", KeyKind::EcdsaP384),
            ("gw-d", KeyKind::Ed25519),
        ] {
            let key = PrivateKey::from_pem(&fixture(&format!("{name}Key.pem"))).unwrap();
            assert_eq!(key.kind(), kind);
            assert!(!format!("{key:?}").contains("0x"), "Debug leaks nothing");
            let spki = cert_spki(&format!("{name}Cert.pem"));
            assert_eq!(
                key.public_spki_der(),
                spki,
                "{name}: key matches its certificate"
            );
            let pubkey = PublicKey::from_spki_der(&spki).unwrap();
            let octets = b"signed octets of an IKE_AUTH".to_vec();
            let mut rng = Seq(7);
            // RSA is slow in tests: one PSS scheme per key is enough here.
            let schemes = if matches!(kind, KeyKind::Rsa { .. }) {
                vec![Scheme::RsaPss(Hash::Sha256), Scheme::RsaPkcs1(Hash::Sha256)]
            } else {
                kind.schemes()
            };
            for scheme in schemes {
                let data = key
                    .auth_digital_signature(scheme, &octets, &mut rng)
                    .unwrap();
                assert_eq!(
                    pubkey.verify_auth(method::DIGITAL_SIGNATURE, &data, &octets),
                    Ok(scheme)
                );
                let mut bad = data.clone();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                assert!(pubkey
                    .verify_auth(method::DIGITAL_SIGNATURE, &bad, &octets)
                    .is_err());
                assert_eq!(
                    pubkey.verify_auth(method::DIGITAL_SIGNATURE, &data, b"other octets"),
                    Err(SigError::Invalid)
                );
            }
            match kind.classic_method() {
                Some(m) => {
                    let (got_m, data) = key.auth_classic(&octets).unwrap();
                    assert_eq!(got_m, m);
                    assert!(pubkey.verify_auth(m, &data, &octets).is_ok());
                    assert_eq!(
                        pubkey.verify_auth(m, &data, b"other"),
                        Err(SigError::Invalid)
                    );
                }
                None => assert!(key.auth_classic(&octets).is_err()),
            }
        }
    }

    #[test]
    fn wrong_key_and_method_are_refused_in_words() {
        let p256 = PublicKey::from_spki_der(&cert_spki("gw-bCert.pem")).unwrap();
        let e = p256
            .verify(Scheme::RsaPss(Hash::Sha256), b"x", &[0; 256])
            .unwrap_err()
            .to_string();
        assert!(e.contains("RSA-PSS") && e.contains("ECDSA P-256"), "{e}");
        let e = p256
            .verify_auth(method::ECDSA_SHA384_P384, &[0; 96], b"x")
            .unwrap_err();
        assert!(e.to_string().contains("P-384"), "{e}");
        assert!(p256
            .verify_auth(method::DIGITAL_SIGNATURE, &[], b"x")
            .is_err());
        assert!(p256
            .verify_auth(method::DIGITAL_SIGNATURE, &[200, 1], b"x")
            .is_err());
    }

    /// The test PKI's chain: PKCS#1 (intermediate over gw-b), PSS (intermediate over gw-a),
    /// ECDSA P-384 (root over the intermediate), and a CRL; a flipped TBS byte fails.
    #[test]
    fn fixture_certificates_verify() {
        use der::DecodePem;
        let load = |n: &str| x509_cert::Certificate::from_pem(fixture(n).as_bytes()).unwrap();
        let root = load("rootCert.pem");
        let im = load("imCert.pem");
        let check = |issuer: &x509_cert::Certificate, c: &x509_cert::Certificate| {
            let spki = issuer
                .tbs_certificate()
                .subject_public_key_info()
                .to_der()
                .unwrap();
            let alg = c.signature_algorithm().to_der().unwrap();
            let tbs = c.tbs_certificate().to_der().unwrap();
            let sig = c.signature().raw_bytes();
            verify_cert_signature(&spki, &alg, &tbs, sig).map(|_| {
                let mut t = tbs.clone();
                let n = t.len() - 3;
                t[n] ^= 1;
                assert_eq!(
                    verify_cert_signature(&spki, &alg, &t, sig),
                    Err(SigError::Invalid)
                );
            })
        };
        check(&root, &root).unwrap();
        check(&root, &im).unwrap();
        for n in ["gw-a", "gw-b", "gw-c", "gw-d", "revoked"] {
            check(&im, &load(&format!("{n}Cert.pem"))).unwrap();
        }
        assert_eq!(
            check(&root, &load("gw-bCert.pem")),
            Err(SigError::WrongKey {
                scheme: "RSA PKCS#1 v1.5 with SHA2_256".into(),
                key: "ECDSA P-384".into()
            })
        );
        let crl = x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_pem(
            fixture("im.crl.pem").as_bytes(),
        )
        .unwrap();
        let spki = im
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .unwrap();
        verify_cert_signature(
            &spki,
            &crl.signature_algorithm.to_der().unwrap(),
            &crl.tbs_cert_list.to_der().unwrap(),
            crl.signature.raw_bytes(),
        )
        .unwrap();
    }

    #[test]
    fn keys_in_other_encodings() {
        use pkcs8::EncodePrivateKey;
        let rsa_pem = fixture("gw-aKey.pem");
        let k = PrivateKey::from_pem(&rsa_pem).unwrap();
        // The same key as PKCS#8 DER and PEM, and with an unrelated block before it.
        let PrivInner::Rsa(inner) = &k.inner else {
            panic!()
        };
        let p8 = inner.to_pkcs8_der().unwrap();
        let k2 = PrivateKey::from_der(p8.as_bytes()).unwrap();
        assert_eq!(k2.public_spki_der(), k.public_spki_der());
        let ec = fixture("gw-bKey.pem");
        let with_params = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{ec}"
        );
        assert_eq!(
            PrivateKey::from_pem(&with_params).unwrap().kind(),
            KeyKind::EcdsaP256
        );
        let (_, sec1) = der::pem::decode_vec(ec.as_bytes()).unwrap();
        assert_eq!(
            PrivateKey::from_der(&sec1).unwrap().kind(),
            KeyKind::EcdsaP256
        );
        let e = PrivateKey::from_pem(&fixture("gw-bCert.pem")).unwrap_err();
        assert!(e.to_string().contains("no private key"), "{e}");
        assert!(PrivateKey::from_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
    }
}
