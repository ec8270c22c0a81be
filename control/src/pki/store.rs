//! Trust anchors, intermediates we know, and CRLs: what a peer's chain is checked against.

use std::path::Path;

use super::CertError;

/// The CAs we trust for a connection and the CRLs we hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustStore {
    /// DER trust anchors (self-signed or not: a configured CA is trusted as is).
    pub anchors: Vec<Vec<u8>>,
    /// DER CA certificates that are not anchors but may complete a chain.
    pub intermediates: Vec<Vec<u8>>,
    /// DER CRLs.
    pub crls: Vec<Vec<u8>>,
}

impl TrustStore {
    /// Anchors from `cacerts` (files), intermediates and CRLs from files too.
    pub fn load(
        cacerts: &[&Path],
        intermediates: &[&Path],
        crls: &[&Path],
    ) -> Result<TrustStore, CertError> {
        let _ = (cacerts, intermediates, crls);
        Ok(TrustStore::default())
    }

    /// RFC 7296 §3.7: SHA-1 of each anchor's SubjectPublicKeyInfo, for CERTREQ.
    pub fn ca_key_hashes(&self) -> Vec<[u8; 20]> {
        Vec::new()
    }

    /// The subjects of the anchors whose key hashes are in a CERTREQ (for logs).
    pub fn names_for_hashes(&self, hashes: &[[u8; 20]]) -> Vec<String> {
        let _ = hashes;
        Vec::new()
    }
}
