//! RSA signatures, all through the `rsa` crate: RSASSA-PKCS1-v1_5 (RFC 8017 §8.2) and
//! RSASSA-PSS with a salt as long as the hash (RFC 8017 §8.1, RFC 7427 A.4.3), the hash
//! chosen at run time.

use der::oid::AssociatedOid;
use sha2::Digest;

use super::rng::RngAdapter;
use super::{Hash, Scheme, SigError};
use crate::ike::sa::Random;

/// RFC 8017 §8.2.1 RSASSA-PKCS1-V1_5-SIGN over `msg` hashed with `h`. The signature is
/// deterministic; `rng` only blinds the private-key operation (RFC 8017 §5.1.2 note), and
/// without one the crate blinds with the operating system's RNG. The crate checks the
/// result with the public key before releasing it (a faulty computation must not leak
/// the key).
pub(super) fn pkcs1v15_sign(
    k: &rsa::PrivateKey,
    h: Hash,
    msg: &[u8],
    rng: Option<&mut dyn Random>,
) -> Result<Vec<u8>, SigError> {
    fn with<D: Digest + AssociatedOid>(
        k: &rsa::PrivateKey,
        msg: &[u8],
        rng: Option<&mut dyn Random>,
    ) -> rsa::Result<Vec<u8>> {
        match rng {
            Some(rng) => k.pkcs1v15_sign_with_rng::<D, _>(&mut RngAdapter(rng), msg),
            None => k.pkcs1v15_sign::<D>(msg),
        }
    }
    let r = match h {
        // Only for AUTH method 1 (RFC 7296 §3.8), which every implementation signs with
        // SHA-1; `Scheme::from_alg_id` refuses sha1WithRSAEncryption (RFC 8247 §3.2).
        Hash::Sha1 => with::<sha1::Sha1>(k, msg, rng),
        Hash::Sha256 => with::<sha2::Sha256>(k, msg, rng),
        Hash::Sha384 => with::<sha2::Sha384>(k, msg, rng),
        Hash::Sha512 => with::<sha2::Sha512>(k, msg, rng),
        Hash::Identity => return Err(SigError::Unsupported(Scheme::RsaPkcs1(h).to_string())),
    };
    r.map_err(|e| SigError::Key(format!("RSA PKCS#1 v1.5 signing: {e}")))
}

/// RFC 8017 §8.2.2 RSASSA-PKCS1-V1_5-VERIFY of `sig` over `msg` hashed with `h`. The crate
/// compares the recovered block with the encoding it builds (DigestInfo with NULL
/// parameters) instead of parsing it, so the BER and garbage variants of Bleichenbacher's
/// 2006 forgery cannot pass, and neither can a DigestInfo without the NULL.
pub(super) fn pkcs1v15_verify(
    k: &rsa::PublicKey,
    h: Hash,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), SigError> {
    let r = match h {
        Hash::Sha1 => k.pkcs1v15_verify::<sha1::Sha1>(msg, sig),
        Hash::Sha256 => k.pkcs1v15_verify::<sha2::Sha256>(msg, sig),
        Hash::Sha384 => k.pkcs1v15_verify::<sha2::Sha384>(msg, sig),
        Hash::Sha512 => k.pkcs1v15_verify::<sha2::Sha512>(msg, sig),
        Hash::Identity => return Err(SigError::Unsupported(Scheme::RsaPkcs1(h).to_string())),
    };
    r.map_err(|_| SigError::Invalid)
}

/// RFC 8017 §8.1.1 RSASSA-PSS-SIGN; `rng` supplies the salt (and the blinding).
pub(super) fn pss_sign(
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

/// RFC 8017 §8.1.2 RSASSA-PSS-VERIFY with a salt as long as the hash.
pub(super) fn pss_verify(
    k: &rsa::PublicKey,
    h: Hash,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), SigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::sig::test_util::{fixture, hex};
    use crate::test_rng::Seq;
    use rsa::traits::PublicKeyParts;

    /// The encoded message inside a PKCS#1 v1.5 signature: s^e mod n (RFC 8017 §5.2.2), done
    /// here only to look at what the crate signed.
    fn recover(k: &rsa::PublicKey, sig: &[u8]) -> Vec<u8> {
        use crypto_bigint::modular::BoxedMontyForm;
        let params = k.n_params();
        let s = rsa::BoxedUint::from_be_slice(sig, params.bits_precision()).unwrap();
        let m = BoxedMontyForm::new(s, params)
            .pow_bounded_exp(k.e(), k.e().bit_width_vartime())
            .retrieve()
            .to_be_bytes();
        m[m.len() - k.size()..].to_vec()
    }

    /// The crate's encoding is RFC 8017 §9.2 with the DigestInfo prefixes of note 1 (NULL
    /// parameters, as strongSwan writes and expects them, SHA-1 for method 1 included);
    /// signing is deterministic whatever the blinding RNG; the result verifies.
    #[test]
    fn pkcs1v15_is_rfc_8017_encoding_and_deterministic() {
        use pkcs1::DecodeRsaPrivateKey;
        let k = rsa::PrivateKey::from_pkcs1_pem(&fixture("gw-aKey.pem")).unwrap();
        let public = k.to_public_key();
        let msg = b"signed octets of an IKE_AUTH";
        for (h, prefix) in [
            (Hash::Sha1, "3021300906052b0e03021a05000414"),
            (Hash::Sha256, "3031300d060960864801650304020105000420"),
        ] {
            let sig = pkcs1v15_sign(&k, h, msg, Some(&mut Seq(1))).unwrap();
            assert_eq!(sig.len(), public.size());
            let em = recover(&public, &sig);
            let t: Vec<u8> = [hex(prefix), h.digest(msg)].concat();
            let ps = em.len() - t.len() - 3;
            assert_eq!(&em[..2], &[0, 1], "{h}");
            assert!(em[2..2 + ps].iter().all(|&b| b == 0xff), "{h}");
            assert_eq!(em[2 + ps], 0, "{h}");
            assert_eq!(&em[3 + ps..], &t[..], "{h}");
            assert_eq!(pkcs1v15_verify(&public, h, msg, &sig), Ok(()));
            assert_eq!(
                pkcs1v15_verify(&public, h, b"other octets", &sig),
                Err(SigError::Invalid)
            );
            if h == Hash::Sha256 {
                let again = pkcs1v15_sign(&k, h, msg, Some(&mut Seq(99))).unwrap();
                assert_eq!(again, sig, "blinding does not change the signature");
                assert_eq!(pkcs1v15_sign(&k, h, msg, None).unwrap(), sig);
            }
        }
        assert!(pkcs1v15_sign(&k, Hash::Identity, msg, None).is_err());
    }

    /// A DigestInfo without the NULL parameters (RFC 8017 §9.2 note 2 lets verifiers take
    /// it; Wycheproof calls it "acceptable") is refused: we compare with the one encoding.
    #[test]
    fn digest_info_without_null_is_refused() {
        use crypto_bigint::modular::BoxedMontyForm;
        use pkcs1::DecodeRsaPrivateKey;
        use rsa::traits::PrivateKeyParts;
        let k = rsa::PrivateKey::from_pkcs1_pem(&fixture("gw-aKey.pem")).unwrap();
        let public = k.to_public_key();
        let msg = b"signed octets";
        let t: Vec<u8> = [
            hex("302f300b0609608648016503040201" /* no 0500 */),
            hex("0420"),
            Hash::Sha256.digest(msg),
        ]
        .concat();
        let size = public.size();
        let mut em = vec![0xff; size];
        em[0] = 0;
        em[1] = 1;
        em[size - t.len() - 1] = 0;
        em[size - t.len()..].copy_from_slice(&t);
        // RSASP1 by hand (m^d mod n), only to build the variant.
        let params = k.n_params();
        let m = rsa::BoxedUint::from_be_slice(&em, params.bits_precision()).unwrap();
        let s = BoxedMontyForm::new(m, params)
            .pow(k.d())
            .retrieve()
            .to_be_bytes();
        let sig = s[s.len() - size..].to_vec();
        assert_eq!(recover(&public, &sig), em, "the variant is what was signed");
        assert_eq!(
            pkcs1v15_verify(&public, Hash::Sha256, msg, &sig),
            Err(SigError::Invalid)
        );
    }
}
