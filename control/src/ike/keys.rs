//! IKEv2 key derivation (RFC 7296 §2.13, §2.14, §2.17, §2.18): the PRF, prf+, SKEYSEED, the
//! seven IKE SA keys (from IKE_SA_INIT, or from a rekey), and Child SA key material. Every secret lives in `Zeroizing` buffers, and
//! `Debug` never prints one.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

/// Secret bytes, wiped on drop.
pub type Secret = Zeroizing<Vec<u8>>;

/// The pseudorandom functions we negotiate (IANA "Transform Type 2").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prf {
    /// PRF_HMAC_SHA2_256 (RFC 4868), IANA 5.
    HmacSha256,
    /// PRF_HMAC_SHA2_384, IANA 6.
    HmacSha384,
    /// PRF_HMAC_SHA2_512, IANA 7.
    HmacSha512,
}

fn hmac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Secret {
    let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    Zeroizing::new(m.finalize().into_bytes().to_vec())
}

impl Prf {
    pub fn from_iana(id: u16) -> Option<Prf> {
        match id {
            5 => Some(Prf::HmacSha256),
            6 => Some(Prf::HmacSha384),
            7 => Some(Prf::HmacSha512),
            _ => None,
        }
    }
    pub fn iana(self) -> u16 {
        match self {
            Prf::HmacSha256 => 5,
            Prf::HmacSha384 => 6,
            Prf::HmacSha512 => 7,
        }
    }
    /// Output length, which is also the length of SK_d, SK_pi and SK_pr (§2.14).
    pub fn output_len(self) -> usize {
        match self {
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
            Prf::HmacSha512 => 64,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Prf::HmacSha256 => "prfsha256",
            Prf::HmacSha384 => "prfsha384",
            Prf::HmacSha512 => "prfsha512",
        }
    }

    /// prf(key, parts concatenated).
    pub fn prf(self, key: &[u8], parts: &[&[u8]]) -> Secret {
        match self {
            Prf::HmacSha256 => hmac::<Hmac<Sha256>>(key, parts),
            Prf::HmacSha384 => hmac::<Hmac<Sha384>>(key, parts),
            Prf::HmacSha512 => hmac::<Hmac<Sha512>>(key, parts),
        }
    }

    /// RFC 7296 §2.13: prf+(K, S) = T1 | T2 | ..., T1 = prf(K, S | 0x01),
    /// Tn = prf(K, Tn-1 | S | n), truncated to `len` (at most 255 blocks).
    pub fn prf_plus(self, key: &[u8], seed: &[u8], len: usize) -> Secret {
        assert!(
            len <= 255 * self.output_len(),
            "prf+ yields at most 255 blocks"
        );
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.output_len()));
        let mut t: Secret = Zeroizing::new(Vec::new());
        let mut n = 1u8;
        while out.len() < len {
            t = self.prf(key, &[&t, seed, &[n]]);
            out.extend_from_slice(&t);
            n = n.wrapping_add(1);
        }
        out.truncate(len);
        out
    }
}

/// Key lengths of the negotiated IKE SA transforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLengths {
    /// Encryption key, including the salt of an AEAD (RFC 5282 §7.1).
    pub enc: usize,
    /// Integrity key; 0 for an AEAD.
    pub integ: usize,
}

/// The seven keys of an IKE SA (RFC 7296 §2.14).
pub struct IkeKeys {
    pub sk_d: Secret,
    pub sk_ai: Secret,
    pub sk_ar: Secret,
    pub sk_ei: Secret,
    pub sk_er: Secret,
    pub sk_pi: Secret,
    pub sk_pr: Secret,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IkeKeys { <redacted> }")
    }
}

/// RFC 7296 §2.14: SKEYSEED = prf(Ni | Nr, g^ir), then
/// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
pub fn derive_ike_keys(
    prf: Prf,
    ni: &[u8],
    nr: &[u8],
    shared: &[u8],
    (spi_i, spi_r): (u64, u64),
    lens: KeyLengths,
) -> IkeKeys {
    let nonces = [ni, nr].concat();
    let skeyseed = prf.prf(&nonces, &[shared]);
    expand_ike_keys(prf, &skeyseed, ni, nr, (spi_i, spi_r), lens)
}

/// RFC 7296 §2.18: the keys of an IKE SA made by rekeying one (CREATE_CHILD_SA).
/// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) with the old IKE SA's PRF ("the
/// rekeying exchange belongs to the old IKE SA"); then the seven keys as §2.14 with the
/// new SA's PRF, the exchange's nonces and the new SPIs (SPIi is the rekey initiator's).
#[allow(clippy::too_many_arguments)]
pub fn derive_rekeyed_ike_keys(
    old_prf: Prf,
    old_sk_d: &[u8],
    prf: Prf,
    ni: &[u8],
    nr: &[u8],
    shared: &[u8],
    spis: (u64, u64),
    lens: KeyLengths,
) -> IkeKeys {
    let skeyseed = old_prf.prf(old_sk_d, &[shared, ni, nr]);
    expand_ike_keys(prf, &skeyseed, ni, nr, spis, lens)
}

/// RFC 9370 §2.2.2: the keys after the additional key exchange `n` of an IKE SA setup
/// (an IKE_INTERMEDIATE exchange): SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr), then all
/// seven keys as §2.14 with the IKE_SA_INIT nonces and the SPIs.
pub fn derive_intermediate_keys(
    prf: Prf,
    sk_d_prev: &[u8],
    sk_n: &[u8],
    ni: &[u8],
    nr: &[u8],
    spis: (u64, u64),
    lens: KeyLengths,
) -> IkeKeys {
    let skeyseed = prf.prf(sk_d_prev, &[sk_n, ni, nr]);
    expand_ike_keys(prf, &skeyseed, ni, nr, spis, lens)
}

/// RFC 9370 §2.2.4: an IKE SA rekey with additional key exchanges:
/// SKEYSEED = prf(SK_d (old), SK(0) | Ni | Nr | SK(1) | ... | SK(n)), the rest as
/// [`derive_rekeyed_ike_keys`]. `secrets[0]` is the KE transform's, then ADDKE1.. in order.
#[allow(clippy::too_many_arguments)]
pub fn derive_rekeyed_ike_keys_multi(
    old_prf: Prf,
    old_sk_d: &[u8],
    prf: Prf,
    ni: &[u8],
    nr: &[u8],
    secrets: &[&[u8]],
    spis: (u64, u64),
    lens: KeyLengths,
) -> IkeKeys {
    let seed = multi_seed(secrets, ni, nr);
    let skeyseed = old_prf.prf(old_sk_d, &[&seed]);
    expand_ike_keys(prf, &skeyseed, ni, nr, spis, lens)
}

/// SK(0) | Ni | Nr | SK(1) | ... | SK(n) (RFC 9370 §2.2.4); without SK(0), Ni | Nr.
fn multi_seed(secrets: &[&[u8]], ni: &[u8], nr: &[u8]) -> Secret {
    let mut s = Zeroizing::new(Vec::new());
    if let Some((first, rest)) = secrets.split_first() {
        s.extend_from_slice(first);
        s.extend_from_slice(ni);
        s.extend_from_slice(nr);
        for x in rest {
            s.extend_from_slice(x);
        }
    } else {
        s.extend_from_slice(ni);
        s.extend_from_slice(nr);
    }
    s
}

/// RFC 9370 §2.2.4: Child SA KEYMAT with PFS and additional key exchanges:
/// prf+(SK_d, SK(0) | Ni | Nr | SK(1) | ... | SK(n)). No secrets: §2.17 without PFS.
pub fn child_keymat_multi(
    prf: Prf,
    sk_d: &[u8],
    secrets: &[&[u8]],
    ni: &[u8],
    nr: &[u8],
    len: usize,
) -> Secret {
    prf.prf_plus(sk_d, &multi_seed(secrets, ni, nr), len)
}

/// §2.14: {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
/// = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
fn expand_ike_keys(
    prf: Prf,
    skeyseed: &[u8],
    ni: &[u8],
    nr: &[u8],
    (spi_i, spi_r): (u64, u64),
    lens: KeyLengths,
) -> IkeKeys {
    let (enc_len, integ_len) = (lens.enc, lens.integ);
    let seed = [ni, nr, &spi_i.to_be_bytes()[..], &spi_r.to_be_bytes()[..]].concat();
    let p = prf.output_len();
    let total = p + 2 * integ_len + 2 * enc_len + 2 * p;
    let km = prf.prf_plus(skeyseed, &seed, total);
    let mut at = 0;
    let mut take = |n: usize| {
        let s = Zeroizing::new(km[at..at + n].to_vec());
        at += n;
        s
    };
    IkeKeys {
        sk_d: take(p),
        sk_ai: take(integ_len),
        sk_ar: take(integ_len),
        sk_ei: take(enc_len),
        sk_er: take(enc_len),
        sk_pi: take(p),
        sk_pr: take(p),
    }
}

/// RFC 7296 §2.17: KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr). Keys are taken in the
/// order: initiator-to-responder encryption, integrity; then responder-to-initiator.
pub fn child_keymat(
    prf: Prf,
    sk_d: &[u8],
    pfs_shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    len: usize,
) -> Secret {
    let seed = [pfs_shared.unwrap_or(&[]), ni, nr].concat();
    prf.prf_plus(sk_d, &seed, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 4231 test case 2 ("Jefe"), the PRF itself.
    #[test]
    fn prf_matches_rfc4231() {
        let out = Prf::HmacSha256.prf(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            &out[..],
            &hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")[..]
        );
        let out = Prf::HmacSha512.prf(b"Jefe", &[b"what do ya want for nothing?"]);
        assert_eq!(
            &out[..],
            &hex("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737")[..]
        );
    }

    /// prf+ is the chain §2.13 defines, whatever the length asked.
    #[test]
    fn prf_plus_chains_blocks() {
        let (k, s) = (b"key".as_slice(), b"seed".as_slice());
        for prf in [Prf::HmacSha256, Prf::HmacSha384, Prf::HmacSha512] {
            let t1 = prf.prf(k, &[s, &[1]]);
            let t2 = prf.prf(k, &[&t1, s, &[2]]);
            let t3 = prf.prf(k, &[&t2, s, &[3]]);
            let want = [&t1[..], &t2[..], &t3[..]].concat();
            let out = prf.prf_plus(k, s, 3 * prf.output_len() - 5);
            assert_eq!(&out[..], &want[..3 * prf.output_len() - 5]);
        }
    }

    #[test]
    fn ike_keys_are_split_in_rfc_order() {
        let prf = Prf::HmacSha256;
        let (ni, nr, g) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let k = derive_ike_keys(
            prf,
            &ni,
            &nr,
            &g,
            (0x1111, 0x2222),
            KeyLengths { enc: 20, integ: 0 },
        );
        let skeyseed = prf.prf(&[ni, nr].concat(), &[&g]);
        let seed = [
            &ni[..],
            &nr[..],
            &0x1111u64.to_be_bytes(),
            &0x2222u64.to_be_bytes(),
        ]
        .concat();
        let km = prf.prf_plus(&skeyseed, &seed, 32 + 40 + 64);
        assert_eq!(&k.sk_d[..], &km[..32]);
        assert!(k.sk_ai.is_empty() && k.sk_ar.is_empty());
        assert_eq!(&k.sk_ei[..], &km[32..52]);
        assert_eq!(&k.sk_er[..], &km[52..72]);
        assert_eq!(&k.sk_pi[..], &km[72..104]);
        assert_eq!(&k.sk_pr[..], &km[104..136]);
        assert_eq!(format!("{k:?}"), "IkeKeys { <redacted> }");
    }

    /// RFC 9370 §2.2.2 / §2.2.4, recomputed from the formulas with fixed inputs.
    #[test]
    fn additional_key_exchanges_follow_rfc9370() {
        let prf = Prf::HmacSha384;
        let lens = KeyLengths { enc: 36, integ: 0 };
        let (ni, nr, spis) = ([1u8; 32], [2u8; 32], (0x1111u64, 0x2222u64));
        let (sk0, sk1, sk2) = ([3u8; 32], [5u8; 32], [6u8; 32]);
        let seed = [
            &ni[..],
            &nr[..],
            &spis.0.to_be_bytes(),
            &spis.1.to_be_bytes(),
        ]
        .concat();
        let total = 48 + 72 + 96;
        // IKE_SA_INIT, then two IKE_INTERMEDIATE updates.
        let k0 = derive_ike_keys(prf, &ni, &nr, &sk0, spis, lens);
        let k1 = derive_intermediate_keys(prf, &k0.sk_d, &sk1, &ni, &nr, spis, lens);
        let k2 = derive_intermediate_keys(prf, &k1.sk_d, &sk2, &ni, &nr, spis, lens);
        let mut skd = prf.prf(&[ni, nr].concat(), &[&sk0])[..].to_vec();
        skd = prf.prf_plus(&skd, &seed, total)[..48].to_vec();
        assert_eq!(&k0.sk_d[..], &skd[..]);
        for (k, sk) in [(&k1, &sk1), (&k2, &sk2)] {
            let skeyseed = prf.prf(&skd, &[&[&sk[..], &ni, &nr].concat()]);
            let km = prf.prf_plus(&skeyseed, &seed, total);
            assert_eq!(&k.sk_d[..], &km[..48]);
            assert_eq!(&k.sk_ei[..], &km[48..84]);
            assert_eq!(&k.sk_er[..], &km[84..120]);
            assert_eq!(&k.sk_pi[..], &km[120..168]);
            assert_eq!(&k.sk_pr[..], &km[168..216]);
            skd = km[..48].to_vec();
        }
        // Rekey: SKEYSEED = prf(SK_d(old), SK(0) | Ni | Nr | SK(1) | SK(2)).
        let old = [9u8; 48];
        let r = derive_rekeyed_ike_keys_multi(
            prf,
            &old,
            prf,
            &ni,
            &nr,
            &[&sk0, &sk1, &sk2],
            spis,
            lens,
        );
        let skeyseed = prf.prf(&old, &[&[&sk0[..], &ni, &nr, &sk1, &sk2].concat()]);
        let km = prf.prf_plus(&skeyseed, &seed, total);
        assert_eq!(&r.sk_d[..], &km[..48]);
        assert_eq!(&r.sk_pr[..], &km[168..216]);
        // One secret: the same as §2.18.
        let one = derive_rekeyed_ike_keys_multi(prf, &old, prf, &ni, &nr, &[&sk0], spis, lens);
        let classic = derive_rekeyed_ike_keys(prf, &old, prf, &ni, &nr, &sk0, spis, lens);
        assert_eq!(&one.sk_d[..], &classic.sk_d[..]);
        // Child KEYMAT = prf+(SK_d, SK(0) | Ni | Nr | SK(1)).
        let c = child_keymat_multi(prf, &old, &[&sk0, &sk1], &ni, &nr, 100);
        let want = prf.prf_plus(&old, &[&sk0[..], &ni, &nr, &sk1].concat(), 100);
        assert_eq!(&c[..], &want[..]);
        let c = child_keymat_multi(prf, &old, &[], &ni, &nr, 100);
        assert_eq!(&c[..], &child_keymat(prf, &old, None, &ni, &nr, 100)[..]);
    }

    /// §2.18: SKEYSEED from the old SK_d and the old PRF, the rest as §2.14 with the new
    /// PRF and the new SPIs.
    #[test]
    fn rekeyed_ike_keys_follow_2_18() {
        let (old, new) = (Prf::HmacSha512, Prf::HmacSha256);
        let (sk_d, ni, nr, g) = ([4u8; 64], [1u8; 32], [2u8; 32], [3u8; 32]);
        let lens = KeyLengths { enc: 36, integ: 0 };
        let k = derive_rekeyed_ike_keys(old, &sk_d, new, &ni, &nr, &g, (0x1111, 0x2222), lens);
        let skeyseed = old.prf(&sk_d, &[&[g, ni, nr].concat()]);
        let seed = [
            &ni[..],
            &nr[..],
            &0x1111u64.to_be_bytes(),
            &0x2222u64.to_be_bytes(),
        ]
        .concat();
        let km = new.prf_plus(&skeyseed, &seed, 32 + 72 + 64);
        assert_eq!(&k.sk_d[..], &km[..32]);
        assert_eq!(&k.sk_ei[..], &km[32..68]);
        assert_eq!(&k.sk_er[..], &km[68..104]);
        assert_eq!(&k.sk_pr[..], &km[136..168]);
        // Not the IKE_SA_INIT derivation, and the SPIs matter.
        let fresh = derive_ike_keys(new, &ni, &nr, &g, (0x1111, 0x2222), lens);
        assert_ne!(&fresh.sk_d[..], &k.sk_d[..]);
        let other = derive_rekeyed_ike_keys(old, &sk_d, new, &ni, &nr, &g, (0x1111, 0x2223), lens);
        assert_ne!(&other.sk_d[..], &k.sk_d[..]);
    }
}
