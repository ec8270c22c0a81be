//! Validating the peer's chain (RFC 5280 §6 as IKE needs it, RFC 4945 §5).

use super::{CertError, TrustStore};

/// A peer certificate that validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    pub der: Vec<u8>,
    /// swanctl syntax, forward order.
    pub subject: String,
    /// DER of the subject Name (for DER_ASN1_DN identities).
    pub subject_der: Vec<u8>,
    pub issuer: String,
    /// Lowercase hex with ':' between bytes, as strongSwan prints it.
    pub serial: String,
    /// DER SubjectPublicKeyInfo: what AUTH is verified with.
    pub spki_der: Vec<u8>,
    /// subjectAltName entries: DNS names, IP addresses, email addresses.
    pub san_dns: Vec<String>,
    pub san_ip: Vec<std::net::IpAddr>,
    pub san_email: Vec<String>,
}

/// Validate `chain` (DER, end entity first, then what the peer sent as intermediates)
/// against `store` at `now_unix` seconds, allowing `skew_s` either way.
pub fn validate(
    chain: &[Vec<u8>],
    store: &TrustStore,
    now_unix: i64,
    skew_s: u64,
) -> Result<PeerCert, CertError> {
    let _ = (chain, store, now_unix, skew_s);
    Err(CertError::NoCertificate)
}
