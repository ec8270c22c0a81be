//! Validating the peer's chain (RFC 5280 §6 as IKE needs it, RFC 4945 §5).
//!
//! The walk goes up from the end entity: each certificate's issuer is looked up by name
//! (and authorityKeyIdentifier against subjectKeyIdentifier when both are there) among our
//! trust anchors, the certificates the peer sent and the intermediates we hold, and the
//! signature is checked with the issuer's key; the walk ends at a trust anchor. Then every
//! element is checked: validity (with a clock-skew allowance), basicConstraints and
//! keyUsage of the CAs, keyUsage of the end entity, critical extensions we do not know, and
//! our CRLs.

use std::net::IpAddr;
use std::time::Duration;

use der::asn1::BitString;
use der::{Decode, Encode, Reader, SliceReader};
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::crl::CrlReason;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies,
    CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::time::Time;
use x509_cert::Certificate;

use super::ident::show_dn;
use super::{CertError, TrustStore};
use crate::ike::sig::{self, SigError};

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

/// The most CA certificates between the end entity and the trust anchor: 4 is plenty for
/// IKE deployments (strongSwan allows 7) and bounds the work a peer can make us do.
pub const MAX_INTERMEDIATES: usize = 4;

/// A certificate with the pieces the walk needs, parsed once.
pub(crate) struct Cert {
    pub der: Vec<u8>,
    pub cert: Certificate,
    /// The signed bytes exactly as received (not re-encoded: a CA's encoding choices must
    /// not break its signature).
    pub tbs: Vec<u8>,
    pub sig_alg: Vec<u8>,
    pub signature: Vec<u8>,
    pub subject_der: Vec<u8>,
    pub issuer_der: Vec<u8>,
    pub spki_der: Vec<u8>,
}

/// The three parts of a signed structure (certificate or CRL, RFC 5280 §4.1 / §5.1):
/// the raw to-be-signed bytes, the AlgorithmIdentifier DER and the signature bits.
pub(crate) fn signed_parts(der: &[u8]) -> der::Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let mut r = SliceReader::new(der)?;
    let parts = r.sequence(|r| -> der::Result<_> {
        let tbs = r.tlv_bytes()?.to_vec();
        let alg = r.tlv_bytes()?.to_vec();
        let sig: BitString = r.decode()?;
        let sig = sig
            .as_bytes()
            .ok_or_else(|| der::Error::from(der::ErrorKind::Failed))?
            .to_vec();
        Ok((tbs, alg, sig))
    })?;
    r.finish()?;
    Ok(parts)
}

impl Cert {
    /// `what` names the certificate in errors ("the peer's certificate", "trust anchor 2").
    pub fn parse(der: &[u8], what: &str) -> Result<Cert, CertError> {
        let bad = |e: der::Error| CertError::Malformed {
            what: what.to_string(),
            reason: format!("not an X.509 certificate: {e}"),
        };
        let cert = Certificate::from_der(der).map_err(bad)?;
        let (tbs, sig_alg, signature) = signed_parts(der).map_err(bad)?;
        let tbs_cert = cert.tbs_certificate();
        let subject_der = tbs_cert.subject().to_der().map_err(bad)?;
        let issuer_der = tbs_cert.issuer().to_der().map_err(bad)?;
        let spki_der = tbs_cert.subject_public_key_info().to_der().map_err(bad)?;
        Ok(Cert {
            der: der.to_vec(),
            cert,
            tbs,
            sig_alg,
            signature,
            subject_der,
            issuer_der,
            spki_der,
        })
    }

    pub fn subject(&self) -> String {
        show_dn(&self.subject_der)
    }

    pub fn issuer(&self) -> String {
        show_dn(&self.issuer_der)
    }

    /// `extension` when present and decodable; a malformed one is an error naming it.
    fn ext<'a, T>(&'a self, name: &str) -> Result<Option<T>, CertError>
    where
        T: Decode<'a> + der::oid::AssociatedOid,
        <T as Decode<'a>>::Error: std::fmt::Display,
    {
        self.cert
            .tbs_certificate()
            .get_extension::<T>()
            .map(|o| o.map(|(_, v)| v))
            .map_err(|e| CertError::Malformed {
                what: format!("certificate \"{}\"", self.subject()),
                reason: format!("its {name} extension does not decode: {e}"),
            })
    }

    fn ski(&self) -> Option<Vec<u8>> {
        self.ext::<SubjectKeyIdentifier>("subjectKeyIdentifier")
            .ok()
            .flatten()
            .map(|s| s.0.as_bytes().to_vec())
    }

    fn aki(&self) -> Option<Vec<u8>> {
        self.ext::<AuthorityKeyIdentifier>("authorityKeyIdentifier")
            .ok()
            .flatten()
            .and_then(|a| a.key_identifier)
            .map(|k| k.as_bytes().to_vec())
    }

    /// Whether `issuer` may have issued this one: its subject is our issuer, and the key
    /// identifiers agree when both are given (RFC 5280 §4.2.1.1).
    pub fn named_by(&self, issuer: &Cert) -> bool {
        if self.issuer_der != issuer.subject_der {
            return false;
        }
        match (self.aki(), issuer.ski()) {
            (Some(a), Some(s)) => a == s,
            _ => true,
        }
    }

    /// Self-issued and, as far as names and key identifiers tell, self-signed.
    pub fn is_self_issued(&self) -> bool {
        self.named_by(self)
    }

    fn serial(&self) -> String {
        hex_colon(self.cert.tbs_certificate().serial_number().as_bytes())
    }
}

/// Bytes as strongSwan prints serials: `26:ca:25:41`.
pub(crate) fn hex_colon(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A certificate time for messages: `2040-01-01 00:00:00 UTC`.
pub(crate) fn show_time(unix: i64) -> String {
    let secs = u64::try_from(unix).unwrap_or(0);
    match der::DateTime::from_unix_duration(Duration::from_secs(secs)) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minutes(),
            d.seconds()
        ),
        Err(_) => format!("{unix} s after 1970"),
    }
}

/// How far apart two clocks are, for an operator: "42 seconds", "3 minutes 20 seconds",
/// "3 hours 5 minutes",
/// "4762 days (about 13.0 years)".
pub(crate) fn show_span(s: u64) -> String {
    match s {
        0..120 => format!("{s} seconds"),
        120..7200 if s.is_multiple_of(60) => format!("{} minutes", s / 60),
        120..7200 => format!("{} minutes {} seconds", s / 60, s % 60),
        7200..172_800 => format!("{} hours {} minutes", s / 3600, s % 3600 / 60),
        _ => {
            let days = s / 86_400;
            if days >= 365 {
                format!("{days} days (about {:.1} years)", days as f64 / 365.25)
            } else {
                format!("{days} days")
            }
        }
    }
}

fn unix(t: &Time) -> i64 {
    i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// RFC 5280 §6.1.3 (a)(2), with `skew_s` allowed either way.
fn check_validity(c: &Cert, now: i64, skew_s: u64) -> Result<(), CertError> {
    let v = c.cert.tbs_certificate().validity();
    let (nb, na) = (unix(&v.not_before), unix(&v.not_after));
    let skew = i64::try_from(skew_s).unwrap_or(i64::MAX);
    if now.saturating_add(skew) < nb {
        return Err(CertError::NotYetValid {
            subject: c.subject(),
            not_before: show_time(nb),
            not_after: show_time(na),
            now: show_time(now),
            off_by: show_span(nb.abs_diff(now)),
        });
    }
    if now.saturating_sub(skew) > na {
        return Err(CertError::Expired {
            subject: c.subject(),
            not_before: show_time(nb),
            not_after: show_time(na),
            now: show_time(now),
            off_by: show_span(now.abs_diff(na)),
        });
    }
    Ok(())
}

/// RFC 5280 §4.2: a certificate with a critical extension we do not process is refused.
fn check_critical(c: &Cert) -> Result<(), CertError> {
    use der::oid::AssociatedOid;
    let known = [
        BasicConstraints::OID,
        KeyUsage::OID,
        ExtendedKeyUsage::OID,
        SubjectAltName::OID,
        SubjectKeyIdentifier::OID,
        AuthorityKeyIdentifier::OID,
        // We accept any policy (no policy constraints are configured): RFC 5280 §6.1 with
        // user-initial-policy-set any-policy.
        CertificatePolicies::OID,
        CrlDistributionPoints::OID,
        AuthorityInfoAccessSyntax::OID,
    ];
    let exts = c.cert.tbs_certificate().extensions();
    for e in exts.map(|v| v.as_slice()).unwrap_or(&[]) {
        if e.critical && !known.contains(&e.extn_id) {
            return Err(CertError::Constraint {
                subject: c.subject(),
                reason: format!(
                    "it has a critical extension {} that we do not process (RFC 5280 §4.2)",
                    e.extn_id
                ),
            });
        }
    }
    Ok(())
}

/// A CA certificate at `below` CAs above the end entity (0 = it issued the end entity):
/// basicConstraints cA and pathLenConstraint, keyUsage keyCertSign (RFC 5280 §6.1.4 (k),
/// (l), (m), (n)). A trust anchor is taken as configured, but what it says about itself
/// still holds.
fn check_ca(c: &Cert, below: usize, anchor: bool) -> Result<(), CertError> {
    let refuse = |reason: String| CertError::Constraint {
        subject: c.subject(),
        reason,
    };
    match c.ext::<BasicConstraints>("basicConstraints")? {
        Some(bc) if !bc.ca => {
            return Err(refuse(
                "it issued a certificate but is not a CA (basicConstraints cA is false)".into(),
            ))
        }
        Some(bc) => {
            if let Some(n) = bc.path_len_constraint {
                if below > usize::from(n) {
                    return Err(refuse(format!(
                        "its pathLenConstraint {n} allows {n} CA certificate(s) below it, \
                         the chain has {below}"
                    )));
                }
            }
        }
        None if !anchor => {
            return Err(refuse(
                "it issued a certificate but is not a CA (no basicConstraints extension)".into(),
            ))
        }
        None => {}
    }
    if let Some(ku) = c.ext::<KeyUsage>("keyUsage")? {
        if !ku.key_cert_sign() {
            return Err(refuse(
                "its keyUsage does not allow signing certificates (keyCertSign)".into(),
            ));
        }
    }
    Ok(())
}

/// RFC 4945 §5.1.3.2: an end-entity keyUsage, if present, must allow signatures.
fn check_end_entity(c: &Cert) -> Result<(), CertError> {
    if let Some(ku) = c.ext::<KeyUsage>("keyUsage")? {
        if !ku.digital_signature() && !ku.non_repudiation() {
            return Err(CertError::Constraint {
                subject: c.subject(),
                reason: "its keyUsage allows neither digitalSignature nor nonRepudiation, so \
                         it cannot authenticate IKE (RFC 4945 §5.1.3.2)"
                    .into(),
            });
        }
    }
    Ok(())
}

type VerifyFn<'a> = &'a dyn Fn(&[u8], &[u8], &[u8], &[u8]) -> Result<(), SigError>;

/// RFC 5280 §6.3: `c` (issued by `issuer`) against each CRL `issuer` signed. A revoked
/// serial stays revoked after the CRL's nextUpdate, so stale CRLs are used too (strongSwan's
/// `revocation = relaxed` does the same); a CRL whose signature does not verify with the
/// issuer's key is an error, not silently skipped.
fn check_crls(
    c: &Cert,
    issuer: &Cert,
    crls: &[Vec<u8>],
    verify: VerifyFn<'_>,
) -> Result<(), CertError> {
    let serial = c.cert.tbs_certificate().serial_number();
    for (i, der) in crls.iter().enumerate() {
        let bad = |reason: String| CertError::Crl {
            issuer: issuer.subject(),
            reason,
        };
        let crl =
            CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der).map_err(|e| {
                CertError::Malformed {
                    what: format!("CRL {}", i + 1),
                    reason: e.to_string(),
                }
            })?;
        let tbs = &crl.tbs_cert_list;
        if tbs.issuer.to_der().ok().as_deref() != Some(&issuer.subject_der[..]) {
            continue; // another CA's CRL
        }
        let (crl_tbs, alg, sig) = signed_parts(der).map_err(|e| bad(e.to_string()))?;
        verify(&issuer.spki_der, &alg, &crl_tbs, &sig).map_err(|e| {
            bad(format!(
                "its signature does not verify with the CA's key: {e}"
            ))
        })?;
        if let Some(ku) = issuer.ext::<KeyUsage>("keyUsage")? {
            if !ku.crl_sign() {
                return Err(bad(
                    "the CA's keyUsage does not allow signing CRLs (cRLSign)".into(),
                ));
            }
        }
        for r in tbs.revoked_certificates.as_deref().unwrap_or(&[]) {
            if r.serial_number.as_bytes() != serial.as_bytes() {
                continue;
            }
            let reason = r
                .crl_entry_extensions
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .find(|e| e.extn_id == <CrlReason as der::oid::AssociatedOid>::OID)
                .and_then(|e| CrlReason::from_der(e.extn_value.as_bytes()).ok());
            if reason == Some(CrlReason::RemoveFromCRL) {
                continue; // RFC 5280 §5.3.1: only in delta CRLs, and it means "not revoked"
            }
            return Err(CertError::Revoked {
                subject: c.subject(),
                serial: c.serial(),
                issuer: issuer.subject(),
                date: show_time(unix(&r.revocation_date)),
                reason: match reason {
                    Some(r) => crl_reason(r).into(),
                    None => "no reason given".into(),
                },
            });
        }
    }
    Ok(())
}

fn crl_reason(r: CrlReason) -> &'static str {
    match r {
        CrlReason::Unspecified => "unspecified",
        CrlReason::KeyCompromise => "key compromise",
        CrlReason::CaCompromise => "CA compromise",
        CrlReason::AffiliationChanged => "affiliation changed",
        CrlReason::Superseded => "superseded",
        CrlReason::CessationOfOperation => "cessation of operation",
        CrlReason::CertificateHold => "certificate hold",
        CrlReason::RemoveFromCRL => "remove from CRL",
        CrlReason::PrivilegeWithdrawn => "privilege withdrawn",
        CrlReason::AaCompromise => "AA compromise",
    }
}

/// The subjectAltName entries IKE identities are matched against.
fn peer_cert(c: &Cert) -> Result<PeerCert, CertError> {
    let mut out = PeerCert {
        der: c.der.clone(),
        subject: c.subject(),
        subject_der: c.subject_der.clone(),
        issuer: c.issuer(),
        serial: c.serial(),
        spki_der: c.spki_der.clone(),
        san_dns: Vec::new(),
        san_ip: Vec::new(),
        san_email: Vec::new(),
    };
    if let Some(san) = c.ext::<SubjectAltName>("subjectAltName")? {
        for n in san.0 {
            match n {
                GeneralName::DnsName(d) => out.san_dns.push(d.to_string()),
                GeneralName::Rfc822Name(e) => out.san_email.push(e.to_string()),
                GeneralName::IpAddress(o) => match o.as_bytes().len() {
                    4 | 16 => {
                        let b = o.as_bytes();
                        out.san_ip.push(if b.len() == 4 {
                            IpAddr::from(<[u8; 4]>::try_from(b).unwrap_or_default())
                        } else {
                            IpAddr::from(<[u8; 16]>::try_from(b).unwrap_or_default())
                        });
                    }
                    _ => {} // an address range (name constraints syntax): not an identity
                },
                _ => {} // URIs, directory names, ...: no IKE identity type matches them here
            }
        }
    }
    Ok(out)
}

/// What a certificate says about its subject (no validation): for our own certificate.
pub(crate) fn describe(der: &[u8]) -> Result<PeerCert, CertError> {
    peer_cert(&Cert::parse(der, "certificate")?)
}

/// Validate `chain` (DER, end entity first, then what the peer sent as intermediates)
/// against `store` at `now_unix` seconds, allowing `skew_s` either way.
pub fn validate(
    chain: &[Vec<u8>],
    store: &TrustStore,
    now_unix: i64,
    skew_s: u64,
) -> Result<PeerCert, CertError> {
    validate_with(chain, store, now_unix, skew_s, &sig::verify_cert_signature)
}

/// [`validate`] with the signature check given, so the walk can be tested on its own.
pub(crate) fn validate_with(
    chain: &[Vec<u8>],
    store: &TrustStore,
    now_unix: i64,
    skew_s: u64,
    verify: VerifyFn<'_>,
) -> Result<PeerCert, CertError> {
    let first = chain.first().ok_or(CertError::NoCertificate)?;
    let ee = Cert::parse(first, "the peer's certificate")?;
    let mut sent = Vec::new();
    for (i, d) in chain.iter().enumerate().skip(1) {
        sent.push(Cert::parse(
            d,
            &format!("certificate {} the peer sent", i + 1),
        )?);
    }
    let mut anchors = Vec::new();
    for (i, d) in store.anchors.iter().enumerate() {
        anchors.push(Cert::parse(d, &format!("trust anchor {}", i + 1))?);
    }
    let mut known = Vec::new();
    for (i, d) in store.intermediates.iter().enumerate() {
        known.push(Cert::parse(d, &format!("intermediate CA {}", i + 1))?);
    }

    // The path, end entity first; the last element is the trust anchor.
    let mut path: Vec<&Cert> = vec![&ee];
    loop {
        let cur = path[path.len() - 1];
        // A certificate configured as trusted ends the walk (also the peer's own).
        if anchors.iter().any(|a| a.der == cur.der) {
            break;
        }
        let candidates: Vec<(&Cert, bool)> = anchors
            .iter()
            .map(|a| (a, true))
            .chain(sent.iter().chain(&known).map(|c| (c, false)))
            .filter(|(c, _)| c.der != cur.der && cur.named_by(c))
            .collect();
        if candidates.is_empty() {
            return Err(CertError::UntrustedIssuer {
                subject: cur.subject(),
                issuer: cur.issuer(),
            });
        }
        let issuer = candidates
            .iter()
            .find(|(c, _)| verify(&c.spki_der, &cur.sig_alg, &cur.tbs, &cur.signature).is_ok());
        let Some(&(issuer, is_anchor)) = issuer else {
            return Err(CertError::BadSignature {
                subject: cur.subject(),
                issuer: cur.issuer(),
            });
        };
        if path.iter().any(|p| p.der == issuer.der) {
            return Err(CertError::UntrustedIssuer {
                subject: cur.subject(),
                issuer: cur.issuer(),
            });
        }
        path.push(issuer);
        if is_anchor {
            break;
        }
        // path = end entity + intermediates so far; the anchor is still to come.
        if path.len() > MAX_INTERMEDIATES + 1 {
            return Err(CertError::Constraint {
                subject: ee.subject(),
                reason: format!(
                    "its chain has more than {MAX_INTERMEDIATES} intermediate CAs before a \
                     trust anchor"
                ),
            });
        }
    }

    for c in &path {
        check_validity(c, now_unix, skew_s)?;
        check_critical(c)?;
    }
    check_end_entity(&ee)?;
    let last = path.len() - 1;
    for (i, c) in path.iter().enumerate().skip(1) {
        check_ca(c, i - 1, i == last)?;
    }
    for w in path.windows(2) {
        check_crls(w[0], w[1], &store.crls, verify)?;
    }
    peer_cert(&ee)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ike::auth::parse_id;
    use crate::pki::ident::cert_has_id;
    use crate::pki::load::read_certs;
    use std::path::PathBuf;

    /// 2027-06-01 00:00:00 UTC: inside every fixture's validity but the expired/notyet ones.
    pub const NOW: i64 = 1_811_808_000;

    pub fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/pki")
            .join(name)
    }

    pub fn cert(name: &str) -> Vec<u8> {
        read_certs(&fixture(name)).expect("fixture").remove(0)
    }

    pub fn store(crls: bool) -> TrustStore {
        let crl = fixture("im.crl.pem");
        let crl_list = [crl.as_path()];
        TrustStore::load(
            &[&fixture("rootCert.pem")],
            &[],
            if crls { &crl_list[..] } else { &[] },
        )
        .expect("store")
    }

    /// The walk and the checks without signature verification (B's code verifies).
    fn no_sig(_: &[u8], _: &[u8], _: &[u8], _: &[u8]) -> Result<(), SigError> {
        Ok(())
    }

    fn bad_sig(_: &[u8], _: &[u8], _: &[u8], _: &[u8]) -> Result<(), SigError> {
        Err(SigError::Invalid)
    }

    #[test]
    fn walk_and_checks_without_signatures() {
        let im = cert("imCert.pem");
        let s = store(true);
        let p = validate_with(&[cert("gw-aCert.pem"), im.clone()], &s, NOW, 300, &no_sig)
            .expect("valid");
        assert_eq!(p.subject, "C=CH, O=example, CN=gw-a");
        assert_eq!(p.issuer, "C=CH, O=example, CN=Intermediate CA");
        assert_eq!(p.san_dns, ["gw-a.example"]);
        assert_eq!(p.san_ip, [IpAddr::from([10, 0, 0, 1])]);
        assert_eq!(p.san_email, ["gw-a@example.net"]);
        assert_eq!(p.serial, "2e:c6:36:dc:39:46:a3:79");
        // The intermediate may come from the store instead of the peer.
        let mut s2 = store(false);
        s2.intermediates.push(im.clone());
        assert!(validate_with(&[cert("gw-bCert.pem")], &s2, NOW, 0, &no_sig).is_ok());
        // Without it nobody vouches for the end entity.
        let e = validate_with(&[cert("gw-bCert.pem")], &store(false), NOW, 0, &no_sig)
            .expect_err("untrusted");
        assert!(matches!(e, CertError::UntrustedIssuer { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("C=CH, O=example, CN=Intermediate CA"),
            "{e}"
        );
        // A bad signature anywhere is refused, naming the certificate.
        let e = validate_with(&[cert("gw-bCert.pem"), im.clone()], &s, NOW, 0, &bad_sig)
            .expect_err("bad signature");
        assert!(matches!(e, CertError::BadSignature { .. }), "{e}");
        // The revoked one, even without signatures checked (the CRL "verifies" here).
        let e = validate_with(&[cert("revokedCert.pem"), im.clone()], &s, NOW, 0, &no_sig)
            .expect_err("revoked");
        assert!(e.to_string().contains("26:ca:25:41:a9:a0:e3:e2"), "{e}");
        // A CRL that does not verify is an error, not skipped.
        let e = validate_with_crl_failing(&[cert("gw-bCert.pem"), im]);
        assert!(matches!(e, CertError::Crl { .. }), "{e}");
        assert_eq!(
            validate_with(&[], &s, NOW, 0, &no_sig),
            Err(CertError::NoCertificate)
        );
        let e =
            validate_with(&[vec![0x30, 0x03, 1, 2, 3]], &s, NOW, 0, &no_sig).expect_err("garbage");
        assert!(matches!(e, CertError::Malformed { .. }), "{e}");
    }

    fn validate_with_crl_failing(chain: &[Vec<u8>]) -> CertError {
        // Certificates verify, the CRL (signed by the intermediate, tbs starting with its
        // version) does not: tell them apart by the signed bytes' issuer position.
        let s = store(true);
        let crl_tbs = signed_parts(&s.crls[0]).expect("crl").0;
        let only_crl_fails = move |_: &[u8], _: &[u8], tbs: &[u8], _: &[u8]| {
            if tbs == crl_tbs {
                Err(SigError::Invalid)
            } else {
                Ok(())
            }
        };
        validate_with(chain, &s, NOW, 0, &only_crl_fails).expect_err("bad CRL")
    }

    #[test]
    fn chains_of_every_key_type_validate() {
        let im = cert("imCert.pem");
        for (name, dns) in [
            ("gw-aCert.pem", "gw-a.example"),
            ("gw-bCert.pem", "gw-b.example"),
            ("gw-cCert.pem", "gw-c.example"),
            ("gw-dCert.pem", "gw-d.example"),
        ] {
            let p = validate(&[cert(name), im.clone()], &store(true), NOW, 300)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(cert_has_id(&p, &parse_id(dns)), "{name}");
        }
    }

    #[test]
    fn a_tampered_certificate_does_not_verify() {
        let mut ee = cert("gw-bCert.pem");
        // Flip a byte inside the subject's CN ("gw-b" → "gw-c"): the signature breaks.
        let at = ee
            .windows(4)
            .position(|w| w == b"gw-b")
            .expect("CN in the DER");
        ee[at + 3] = b'c';
        let e = validate(&[ee, cert("imCert.pem")], &store(true), NOW, 300).expect_err("tampered");
        assert!(matches!(e, CertError::BadSignature { .. }), "{e}");
    }

    #[test]
    fn revoked_names_its_serial() {
        let e = validate(
            &[cert("revokedCert.pem"), cert("imCert.pem")],
            &store(true),
            NOW,
            300,
        )
        .expect_err("revoked");
        match &e {
            CertError::Revoked {
                subject,
                serial,
                issuer,
                ..
            } => {
                assert_eq!(subject, "C=CH, O=example, CN=revoked");
                assert_eq!(serial, "26:ca:25:41:a9:a0:e3:e2");
                assert_eq!(issuer, "C=CH, O=example, CN=Intermediate CA");
            }
            other => panic!("{other}"),
        }
        assert!(
            e.to_string().contains("serial 26:ca:25:41:a9:a0:e3:e2"),
            "{e}"
        );
        // Without the CRL it passes.
        assert!(validate(
            &[cert("revokedCert.pem"), cert("imCert.pem")],
            &store(false),
            NOW,
            300
        )
        .is_ok());
    }

    #[test]
    fn untrusted_names_the_issuer() {
        let e = validate(
            &[cert("other-gwCert.pem"), cert("otherCert.pem")],
            &store(true),
            NOW,
            300,
        )
        .expect_err("untrusted");
        assert!(matches!(e, CertError::UntrustedIssuer { .. }), "{e}");
        assert!(e.to_string().contains("C=CH, O=other, CN=Other CA"), "{e}");
    }

    #[test]
    fn clock_messages_say_how_far_off() {
        let im = cert("imCert.pem");
        let e = validate(
            &[cert("expiredCert.pem"), im.clone()],
            &store(true),
            NOW,
            300,
        )
        .expect_err("expired");
        let text = e.to_string();
        assert!(matches!(e, CertError::Expired { .. }), "{text}");
        for want in [
            "C=CH, O=example, CN=expired",
            "2020-01-01 00:00:00 UTC",
            "2021-01-01 00:00:00 UTC",
            "2027-06-01 00:00:00 UTC",
            "2342 days",
            "check the clocks",
        ] {
            assert!(text.contains(want), "{want:?} not in {text}");
        }
        let e = validate(
            &[cert("notyetCert.pem"), im.clone()],
            &store(true),
            NOW,
            300,
        )
        .expect_err("not yet valid");
        let text = e.to_string();
        assert!(matches!(e, CertError::NotYetValid { .. }), "{text}");
        for want in [
            "C=CH, O=example, CN=notyet",
            "2040-01-01 00:00:00 UTC",
            "2041-01-01 00:00:00 UTC",
            "check the clocks",
        ] {
            assert!(text.contains(want), "{want:?} not in {text}");
        }
        // The skew allowance: 2040-01-01 minus 200 s is fine with 300 s, not with 100 s.
        let start = 2_208_988_800;
        let chain = [cert("notyetCert.pem"), im];
        assert!(validate(&chain, &store(true), start - 200, 300).is_ok());
        let e = validate(&chain, &store(true), start - 200, 100).expect_err("too early");
        assert!(e.to_string().contains("3 minutes 20 seconds"), "{e}");
        // Far in the future everything has expired.
        let e = validate(
            &[cert("gw-bCert.pem"), cert("imCert.pem")],
            &store(true),
            2_500_000_000,
            300,
        )
        .expect_err("everything expired");
        assert!(matches!(e, CertError::Expired { .. }), "{e}");
    }

    /// A certificate of control/tests/data/pki-extra (scripts/gen-test-pki-extra.sh).
    fn extra(name: &str) -> Vec<u8> {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/pki-extra")
            .join(name);
        read_certs(&p).expect("fixture").remove(0)
    }

    #[test]
    fn each_broken_rule_is_named() {
        let im = cert("imCert.pem");
        // An end-entity keyUsage without digitalSignature/nonRepudiation (RFC 4945 §5.1.3.2).
        let e = validate(&[extra("kuCert.pem"), im.clone()], &store(true), NOW, 300)
            .expect_err("keyEncipherment only");
        assert!(matches!(e, CertError::Constraint { .. }), "{e}");
        assert!(e.to_string().contains("digitalSignature"), "{e}");
        assert!(e.to_string().contains("CN=ku"), "{e}");
        // A critical extension we do not know (RFC 5280 §4.2).
        let e = validate(&[extra("critCert.pem"), im.clone()], &store(true), NOW, 300)
            .expect_err("unknown critical extension");
        assert!(e.to_string().contains("1.3.6.1.4.1.99999.1"), "{e}");
        // An end entity (gw-b, no basicConstraints) that signed another certificate: the
        // signature verifies, but gw-b is not a CA.
        let e = validate(
            &[extra("undergwbCert.pem"), cert("gw-bCert.pem"), im],
            &store(true),
            NOW,
            300,
        )
        .expect_err("issued by an end entity");
        assert!(matches!(e, CertError::Constraint { .. }), "{e}");
        assert!(
            e.to_string().contains("CN=gw-b") && e.to_string().contains("not a CA"),
            "{e}"
        );
    }

    #[test]
    fn spans_and_times_read_well() {
        assert_eq!(show_span(5), "5 seconds");
        assert_eq!(show_span(600), "10 minutes");
        assert_eq!(show_span(3 * 3600 + 120), "3 hours 2 minutes");
        assert_eq!(show_span(10 * 86_400), "10 days");
        assert_eq!(show_span(730 * 86_400), "730 days (about 2.0 years)");
        assert_eq!(show_time(NOW), "2027-06-01 00:00:00 UTC");
        assert_eq!(show_time(0), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn root_is_a_ca_and_end_entities_are_not() {
        // The intermediate has pathLen 0: a CA below it is refused.
        let im = Cert::parse(&cert("imCert.pem"), "im").expect("parses");
        assert!(check_ca(&im, 0, false).is_ok());
        let e = check_ca(&im, 1, false).expect_err("pathLen 0");
        assert!(e.to_string().contains("pathLenConstraint 0"), "{e}");
        // An end entity (no basicConstraints) cannot issue.
        let ee = Cert::parse(&cert("gw-bCert.pem"), "gw-b").expect("parses");
        let e = check_ca(&ee, 0, false).expect_err("not a CA");
        assert!(e.to_string().contains("not a CA"), "{e}");
        assert!(check_end_entity(&ee).is_ok());
        assert!(!ee.is_self_issued());
        assert!(Cert::parse(&cert("rootCert.pem"), "root")
            .expect("parses")
            .is_self_issued());
        // A chain where the end entity claims to issue another: refused by its constraints.
        let mut s = store(false);
        s.anchors = vec![cert("gw-bCert.pem")];
        assert!(validate_with(&[cert("gw-bCert.pem")], &s, NOW, 0, &no_sig).is_ok());
    }
}
