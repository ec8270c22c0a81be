//! Signature schemes and the RFC 7427 AlgorithmIdentifiers that name them.

use std::fmt;

use der::asn1::AnyRef;
use der::{Decode, Encode};
use spki::AlgorithmIdentifierRef;

use super::error::der_err;
use super::oid::*;
use super::{Hash, SigError};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::sig::test_util::hex;

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
}
