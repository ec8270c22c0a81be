//! Trust anchors, intermediates we know, and CRLs: what a peer's chain is checked against.

use std::path::Path;

use sha1::{Digest, Sha1};

use super::chain::Cert;
use super::load::{read_certs, read_crls};
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
    /// Anchors from `cacerts` (files), intermediates and CRLs from files too. Every file
    /// may hold several PEM blocks or one DER structure; each must parse.
    pub fn load(
        cacerts: &[&Path],
        intermediates: &[&Path],
        crls: &[&Path],
    ) -> Result<TrustStore, CertError> {
        let mut s = TrustStore::default();
        for p in cacerts {
            s.anchors.extend(read_certs(p)?);
        }
        for p in intermediates {
            s.intermediates.extend(read_certs(p)?);
        }
        for p in crls {
            s.crls.extend(read_crls(p)?);
        }
        Ok(s)
    }

    /// RFC 7296 §3.7: SHA-1 of each anchor's SubjectPublicKeyInfo, for CERTREQ.
    pub fn ca_key_hashes(&self) -> Vec<[u8; 20]> {
        self.anchors.iter().filter_map(|d| key_hash(d)).collect()
    }

    /// The subjects of the anchors (and intermediates) whose key hashes are in a CERTREQ
    /// (for logs); hashes we do not know are left out.
    pub fn names_for_hashes(&self, hashes: &[[u8; 20]]) -> Vec<String> {
        self.anchors
            .iter()
            .chain(&self.intermediates)
            .filter(|d| key_hash(d).is_some_and(|h| hashes.contains(&h)))
            .filter_map(|d| Cert::parse(d, "CA").ok())
            .map(|c| c.subject())
            .collect()
    }
}

/// SHA-1 of the certificate's DER SubjectPublicKeyInfo (RFC 7296 §3.7).
pub fn key_hash(cert_der: &[u8]) -> Option<[u8; 20]> {
    let c = Cert::parse(cert_der, "CA").ok()?;
    Some(Sha1::digest(&c.spki_der).into())
}

/// Whether the certificate is self-issued (subject = issuer, matching key identifiers):
/// the ones in `x509ca/` that are trust anchors by default, as swanctl treats them.
pub fn is_self_issued(cert_der: &[u8]) -> bool {
    Cert::parse(cert_der, "CA").is_ok_and(|c| c.is_self_issued())
}

/// The CA certificates among `cas` that issued `cert_der`, nearest first, up to but not
/// including a self-issued one (the root the peer trusts already): what we send after our
/// own certificate. Matched by name and key identifier without signature checks: these are
/// our own files, and the peer checks the signatures.
pub fn issuers_of(cert_der: &[u8], cas: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let parsed: Vec<Cert> = cas
        .iter()
        .filter_map(|d| Cert::parse(d, "CA").ok())
        .collect();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let Ok(mut cur) = Cert::parse(cert_der, "certificate") else {
        return out;
    };
    while out.len() < super::chain::MAX_INTERMEDIATES {
        let next = parsed
            .iter()
            .find(|c| c.der != cur.der && !c.is_self_issued() && cur.named_by(c));
        let Some(next) = next else { break };
        if out.contains(&next.der) {
            break;
        }
        out.push(next.der.clone());
        match Cert::parse(&next.der, "CA") {
            Ok(c) => cur = c,
            Err(_) => break,
        }
    }
    out
}

/// The subject of a certificate in swanctl syntax (for messages).
pub fn subject_of(cert_der: &[u8]) -> Option<String> {
    Cert::parse(cert_der, "certificate")
        .ok()
        .map(|c| c.subject())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::chain::tests::{cert, fixture};

    #[test]
    fn ca_key_hash_is_sha1_of_the_spki() {
        // openssl x509 -pubkey -noout -in rootCert.pem | openssl pkey -pubin -outform der
        //   | sha1sum
        let s = TrustStore::load(&[&fixture("rootCert.pem")], &[], &[]).expect("loads");
        let hashes = s.ca_key_hashes();
        assert_eq!(hashes.len(), 1);
        let hex: String = hashes[0].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, ROOT_SPKI_SHA1);
        assert_eq!(s.names_for_hashes(&hashes), ["C=CH, O=example, CN=Root CA"]);
        assert!(s.names_for_hashes(&[[0; 20]]).is_empty());
    }

    const ROOT_SPKI_SHA1: &str = "0445e2bb6d5f6f859c97752dc15f36032e4b895d";

    #[test]
    fn load_reads_anchors_intermediates_and_crls() {
        let s = TrustStore::load(
            &[&fixture("rootCert.pem"), &fixture("otherCert.pem")],
            &[&fixture("imCert.pem")],
            &[&fixture("im.crl.pem")],
        )
        .expect("loads");
        assert_eq!(s.anchors, [cert("rootCert.pem"), cert("otherCert.pem")]);
        assert_eq!(s.intermediates, [cert("imCert.pem")]);
        assert_eq!(s.crls.len(), 1);
        assert_eq!(
            s.names_for_hashes(&s.ca_key_hashes()),
            ["C=CH, O=example, CN=Root CA", "C=CH, O=other, CN=Other CA"]
        );
        assert!(is_self_issued(&cert("rootCert.pem")));
        let cas = [
            cert("rootCert.pem"),
            cert("imCert.pem"),
            cert("otherCert.pem"),
        ];
        assert_eq!(
            issuers_of(&cert("gw-bCert.pem"), &cas),
            [cert("imCert.pem")]
        );
        assert!(issuers_of(&cert("other-gwCert.pem"), &cas).is_empty());
        assert!(!is_self_issued(&cert("imCert.pem")));
        let e = TrustStore::load(&[&fixture("nope.pem")], &[], &[]).expect_err("missing");
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let e = TrustStore::load(&[], &[], &[&fixture("rootCert.pem")]).expect_err("not a CRL");
        assert!(e.to_string().contains("rootCert.pem"), "{e}");
    }
}
