//! Public keys: loading them from a SubjectPublicKeyInfo and checking signatures with them,
//! bare, in AUTH payloads and on certificates and CRLs.

use std::fmt;

use der::Decode;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::traits::PublicKeyParts;

use super::oid::*;
use super::{method, rsa_sig, Hash, KeyKind, Scheme, SigError};

enum PubInner {
    Rsa(Box<rsa::PublicKey>),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
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
    /// From DER SubjectPublicKeyInfo: RSA (rsaEncryption), EC P-256/P-384/P-521, Ed25519.
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
                Ok(OID_P521) => {
                    PubInner::P521(p521::ecdsa::VerifyingKey::from_public_key_der(der).map_err(e)?)
                }
                Ok(curve) => {
                    return Err(SigError::Key(format!(
                        "EC public key on curve {curve}: only P-256, P-384 and P-521 are supported"
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
            PubInner::P521(_) => KeyKind::EcdsaP521,
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
                rsa_sig::pkcs1v15_verify(k, h, msg, sig)
            }
            (PubInner::Rsa(k), Scheme::RsaPss(h)) => rsa_sig::pss_verify(k, h, msg, sig),
            (PubInner::P256(_) | PubInner::P384(_) | PubInner::P521(_), Scheme::Ecdsa(h)) => {
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
            (PubInner::P521(k), EcSig::Der(b)) => {
                let s = p521::ecdsa::Signature::from_der(b).map_err(|_| SigError::Invalid)?;
                k.verify_prehash(&digest, &s).map_err(|_| SigError::Invalid)
            }
            (PubInner::P521(k), EcSig::Fixed(b)) => {
                let s = p521::ecdsa::Signature::from_slice(b).map_err(|_| SigError::Invalid)?;
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
                        rsa_sig::pkcs1v15_verify(k, Hash::Sha1, octets, data)?;
                        Ok(scheme)
                    }
                    _ => Err(self.wrong_key(method::name(auth_method))),
                }
            }
            method::ECDSA_SHA256_P256 | method::ECDSA_SHA384_P384 | method::ECDSA_SHA512_P521 => {
                let (h, ok) = match (auth_method, &self.inner) {
                    (method::ECDSA_SHA256_P256, PubInner::P256(_)) => (Hash::Sha256, true),
                    (method::ECDSA_SHA384_P384, PubInner::P384(_)) => (Hash::Sha384, true),
                    (method::ECDSA_SHA512_P521, PubInner::P521(_)) => (Hash::Sha512, true),
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
                "AUTH {} (we verify methods 1, 9, 10, 11 and 14)",
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

/// Check a certificate's or CRL's signature: `sig_alg_der` is the DER AlgorithmIdentifier
/// from the certificate, `tbs_der` the signed bytes, `issuer_spki_der` the issuer's key.
pub fn verify_cert_signature(
    issuer_spki_der: &[u8],
    sig_alg_der: &[u8],
    tbs_der: &[u8],
    signature: &[u8],
) -> Result<(), SigError> {
    // Fuzzing builds only: the fixtures' chains are checked again in every input.
    #[cfg(fuzzing)]
    return crate::fuzz_memo::remember(
        crate::fuzz_memo::key(
            "cert-signature",
            &[issuer_spki_der, sig_alg_der, tbs_der, signature],
        ),
        || compute_cert_signature(issuer_spki_der, sig_alg_der, tbs_der, signature),
    );
    #[cfg(not(fuzzing))]
    compute_cert_signature(issuer_spki_der, sig_alg_der, tbs_der, signature)
}

fn compute_cert_signature(
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
    use crate::ike::sig::test_util::{cert_spki, fixture};
    use crate::ike::sig::PrivateKey;
    use crate::test_rng::Seq;
    use der::Encode;

    /// Every fixture key loads, matches its certificate, and signs with every scheme its
    /// kind offers, the classic method included; tampering is caught.
    #[test]
    fn fixture_keys_sign_and_verify() {
        for (name, kind) in [
            ("gw-a", KeyKind::Rsa { bits: 3072 }),
            ("gw-b", KeyKind::EcdsaP256),
            ("gw-c", KeyKind::EcdsaP384),
            ("gw-d", KeyKind::Ed25519),
            // scripts/gen-test-pki-p521.sh
            ("../pki-extra/gw-e", KeyKind::EcdsaP521),
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
                    let (got_m, data) = key.auth_classic(&octets, &mut rng).unwrap();
                    assert_eq!(got_m, m);
                    assert!(pubkey.verify_auth(m, &data, &octets).is_ok());
                    assert_eq!(
                        pubkey.verify_auth(m, &data, b"other"),
                        Err(SigError::Invalid)
                    );
                }
                None => assert!(key.auth_classic(&octets, &mut rng).is_err()),
            }
        }
    }

    /// P-521 (RFC 4754 §3, §7): method 11 is SHA-512 with r‖s of 66 octets each, 14 carries
    /// DER with ecdsa-with-SHA512 first; a P-521 issuer's certificate signature verifies.
    #[test]
    fn p521_methods_and_cert_signatures() {
        let key = PrivateKey::from_pem(&fixture("../pki-extra/gw-eKey.pem")).unwrap();
        let pubkey = PublicKey::from_spki_der(&key.public_spki_der()).unwrap();
        assert_eq!(pubkey.kind(), KeyKind::EcdsaP521);
        assert_eq!(KeyKind::EcdsaP521.to_string(), "ECDSA P-521");
        assert_eq!(
            KeyKind::EcdsaP521.scheme_for(&crate::ike::sig::OUR_HASHES),
            Some(Scheme::Ecdsa(Hash::Sha512))
        );
        let octets = b"signed octets";
        let mut rng = Seq(3);
        let (m, data) = key.auth_classic(octets, &mut rng).unwrap();
        assert_eq!(m, method::ECDSA_SHA512_P521);
        assert_eq!(data.len(), 132);
        assert_eq!(
            pubkey.verify_auth(m, &data, octets),
            Ok(Scheme::Ecdsa(Hash::Sha512))
        );
        let mut bad = data.clone();
        bad[70] ^= 1;
        assert_eq!(pubkey.verify_auth(m, &bad, octets), Err(SigError::Invalid));
        assert_eq!(
            pubkey.verify_auth(m, &data[..131], octets),
            Err(SigError::Invalid)
        );
        // The method fixes the curve both ways.
        let e = pubkey
            .verify_auth(method::ECDSA_SHA384_P384, &[0; 96], octets)
            .unwrap_err();
        assert!(e.to_string().contains("P-521"), "{e}");
        let p384 = PublicKey::from_spki_der(&cert_spki("gw-cCert.pem")).unwrap();
        let e = p384.verify_auth(m, &data, octets).unwrap_err();
        assert!(e.to_string().contains("P-521 (11)"), "{e}");
        // A certificate (or CRL) whose issuer has a P-521 key, signed ecdsa-with-SHA512.
        let tbs = b"a TBSCertificate".to_vec();
        let scheme = Scheme::Ecdsa(Hash::Sha512);
        let sig = key.sign(scheme, &tbs, &mut rng).unwrap();
        let alg = scheme.alg_id_der().unwrap();
        let spki = key.public_spki_der();
        verify_cert_signature(&spki, &alg, &tbs, &sig).unwrap();
        assert_eq!(
            verify_cert_signature(&spki, &alg, b"another TBSCertificate", &sig),
            Err(SigError::Invalid)
        );
        let sha384 = Scheme::Ecdsa(Hash::Sha384).alg_id_der().unwrap();
        assert_eq!(
            verify_cert_signature(&spki, &sha384, &tbs, &sig),
            Err(SigError::Invalid)
        );
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
}
