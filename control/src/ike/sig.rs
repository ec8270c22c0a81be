//! Signatures for IKE AUTH and for certificates: RFC 7427 Digital Signature (method 14)
//! with RSA-PSS, RSASSA-PKCS1-v1_5, ECDSA and Ed25519; the classic methods 1 (RSA) and
//! 9/10/11 (ECDSA, RFC 4754); the SIGNATURE_HASH_ALGORITHMS values (RFC 7427 §4, RFC 8420).
//! Private keys are zeroized when dropped and never printed.

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
}

/// A private key we sign with.
pub struct PrivateKey {
    _private: (),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl PrivateKey {
    /// PEM: `RSA PRIVATE KEY` (PKCS#1), `EC PRIVATE KEY` (SEC1), `PRIVATE KEY` (PKCS#8).
    pub fn from_pem(text: &str) -> Result<PrivateKey, SigError> {
        let _ = text;
        Err(SigError::Key("not implemented yet".into()))
    }
    /// DER, any of the three forms.
    pub fn from_der(der: &[u8]) -> Result<PrivateKey, SigError> {
        let _ = der;
        Err(SigError::Key("not implemented yet".into()))
    }
    /// The matching public key as DER SubjectPublicKeyInfo.
    pub fn public_spki_der(&self) -> Vec<u8> {
        Vec::new()
    }
}

/// Check a certificate's or CRL's signature: `sig_alg_der` is the DER AlgorithmIdentifier
/// from the certificate, `tbs_der` the signed bytes, `issuer_spki_der` the issuer's key.
pub fn verify_cert_signature(
    issuer_spki_der: &[u8],
    sig_alg_der: &[u8],
    tbs_der: &[u8],
    signature: &[u8],
) -> Result<(), SigError> {
    let _ = (issuer_spki_der, sig_alg_der, tbs_der, signature);
    Err(SigError::Unsupported("not implemented yet".into()))
}
