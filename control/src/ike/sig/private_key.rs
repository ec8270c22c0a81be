//! Private keys: loading them from PEM or DER (PKCS#1, SEC1, PKCS#8) and signing with them,
//! bare and as AUTH payload data.

use std::fmt;

use der::Decode;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use rsa::traits::PublicKeyParts;
use zeroize::Zeroizing;

use super::error::key_err;
use super::oid::*;
use super::{method, rsa_sig, Hash, KeyKind, Scheme, SigError};
use crate::ike::sa::Random;

enum PrivInner {
    Rsa(Box<rsa::PrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
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
        if let Ok(sk) = p384::SecretKey::from_sec1_der(der) {
            return Self::new(PrivInner::P384(sk.into()));
        }
        match p521::SecretKey::from_sec1_der(der) {
            Ok(sk) => Self::new(PrivInner::P521(sk.into())),
            Err(e) => Err(SigError::Key(format!(
                "EC key: not a P-256, P-384 or P-521 SEC1 key ({e})"
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
                Ok(OID_P521) => Self::new(PrivInner::P521(
                    p521::SecretKey::from_pkcs8_der(der).map_err(e8)?.into(),
                )),
                Ok(curve) => Err(SigError::Key(format!(
                    "PKCS#8 EC key on curve {curve}: only P-256, P-384 and P-521 are supported"
                ))),
                Err(e) => Err(SigError::Key(format!("PKCS#8 EC key without a curve: {e}"))),
            },
            OID_ED25519 => Self::new(PrivInner::Ed25519(Box::new(
                ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(e8)?,
            ))),
            oid => Err(SigError::Key(format!(
                "PKCS#8 key of type {oid}: only RSA, ECDSA P-256/P-384/P-521 and Ed25519 are supported"
            ))),
        }
    }

    fn new(inner: PrivInner) -> Result<PrivateKey, SigError> {
        use pkcs8::EncodePublicKey;
        let spki = match &inner {
            PrivInner::Rsa(k) => k.to_public_key().to_public_key_der(),
            PrivInner::P256(k) => k.verifying_key().to_public_key_der(),
            PrivInner::P384(k) => k.verifying_key().to_public_key_der(),
            PrivInner::P521(k) => k.verifying_key().to_public_key_der(),
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
            PrivInner::P521(_) => KeyKind::EcdsaP521,
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
    /// certificates and RFC 7427 §3). `rng` supplies the RSA-PSS salt and blinds the RSA
    /// private-key operation; RSASSA-PKCS1-v1_5 is deterministic whatever the blinding,
    /// ECDSA too (RFC 6979), Ed25519 by definition.
    pub fn sign(
        &self,
        scheme: Scheme,
        msg: &[u8],
        rng: &mut dyn Random,
    ) -> Result<Vec<u8>, SigError> {
        match (&self.inner, scheme) {
            (PrivInner::Rsa(k), Scheme::RsaPkcs1(h)) if h != Hash::Identity => {
                rsa_sig::pkcs1v15_sign(k, h, msg, Some(rng))
            }
            (PrivInner::Rsa(k), Scheme::RsaPss(h)) => rsa_sig::pss_sign(k, h, msg, rng),
            (PrivInner::P256(_) | PrivInner::P384(_) | PrivInner::P521(_), Scheme::Ecdsa(h)) => {
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
            PrivInner::P521(k) => {
                let s: p521::ecdsa::Signature = k.sign_prehash(&digest).map_err(fail)?;
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
    /// `SIGN_RSA_EMSA_PKCS1_SHA1`), 9/10/11 ECDSA r‖s (RFC 4754 §3, §7). `rng` blinds the RSA
    /// operation (the signature does not depend on it).
    pub fn auth_classic(
        &self,
        octets: &[u8],
        rng: &mut dyn Random,
    ) -> Result<(u8, Vec<u8>), SigError> {
        match &self.inner {
            PrivInner::Rsa(k) => Ok((
                method::RSA_SIG,
                rsa_sig::pkcs1v15_sign(k, Hash::Sha1, octets, Some(rng))?,
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
            // RFC 4754 §3, §7: SHA-512 on P-521, r and s 66 octets each.
            PrivInner::P521(_) => Ok((
                method::ECDSA_SHA512_P521,
                self.ecdsa_sign(Hash::Sha512, octets, Scheme::Ecdsa(Hash::Sha512))?
                    .1,
            )),
            PrivInner::Ed25519(_) => Err(SigError::Unsupported(
                "Ed25519 has no classic AUTH method; the peer must announce SIGNATURE_HASH_ALGORITHMS with Identity (RFC 8420)".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::sig::test_util::fixture;

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
        // P-521 as strongSwan's pki writes it (SEC1), and the same key as PKCS#8 PEM and DER.
        let p521 = PrivateKey::from_pem(&fixture("../pki-extra/gw-eKey.pem")).unwrap();
        assert_eq!(p521.kind(), KeyKind::EcdsaP521);
        assert!(!format!("{p521:?}").contains("0x"), "Debug leaks nothing");
        let PrivInner::P521(inner) = &p521.inner else {
            panic!()
        };
        let p8 = p521::SecretKey::from(inner.as_nonzero_scalar())
            .to_pkcs8_der()
            .unwrap();
        let k2 = PrivateKey::from_der(p8.as_bytes()).unwrap();
        assert_eq!(k2.public_spki_der(), p521.public_spki_der());
        let p8_pem =
            der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, p8.as_bytes())
                .unwrap();
        assert_eq!(
            PrivateKey::from_pem(&p8_pem).unwrap().public_spki_der(),
            p521.public_spki_der()
        );
        let e = PrivateKey::from_pem(&fixture("gw-bCert.pem")).unwrap_err();
        assert!(e.to_string().contains("no private key"), "{e}");
        assert!(PrivateKey::from_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
    }
}
