//! Key exchange groups (IANA "Transform Type 4"): Curve25519 (RFC 8031), ECP-256/384
//! (RFC 5903), MODP-2048/3072 (RFC 3526). Sans-IO: the caller supplies the random bytes
//! for the private value. Peer public values are checked before use (RFC 7296 §3.4,
//! RFC 5903 §9, RFC 8031 §2.3) and refused with a reason.
//!
//! MODP runs on `crypto-bigint` in Montgomery form: `pow` takes the same time for every
//! exponent of a given width (a fixed window over all of the exponent's bits), so the
//! secret exponent does not leak through timing as `num-bigint`'s `modpow` let it. The
//! exponent is zeroized when dropped; the intermediates inside `pow` live on the stack of
//! that call and are not (crypto-bigint does not offer it).

use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{Odd, Uint, U2048, U256, U3072, U384};
use zeroize::Zeroizing;

use super::keys::Secret;

/// A key exchange group we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// 31, RFC 8031.
    Curve25519,
    /// 19, RFC 5903.
    Ecp256,
    /// 20, RFC 5903.
    Ecp384,
    /// 14, RFC 3526.
    Modp2048,
    /// 15, RFC 3526.
    Modp3072,
}

/// Why a key exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DhError {
    #[error("{group}: the peer's public value has {got} bytes, {want} expected")]
    Length {
        group: &'static str,
        got: usize,
        want: usize,
    },
    #[error("{0}: the peer's public value is not a valid group element")]
    Invalid(&'static str),
    #[error("{0}: the shared secret is degenerate (all zero)")]
    Degenerate(&'static str),
    #[error("{0}: the random bytes do not make a valid private key; draw again")]
    BadRandom(&'static str),
}

/// Our half of an exchange.
pub struct KeyPair {
    pub group: Group,
    secret: Secret,
    pub public: Vec<u8>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("group", &self.group)
            .field("secret", &"<redacted>")
            .finish()
    }
}

const MODP_2048_P: &str = concat!(
    "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74",
    "020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f1437",
    "4fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7ed",
    "ee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf05",
    "98da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb",
    "9ed529077096966d670c354e4abc9804f1746c08ca18217c32905e462e36ce3b",
    "e39e772c180e86039b2783a2ec07a28fb5c55df06f4c52c9de2bcbf695581718",
    "3995497cea956ae515d2261898fa051015728e5a8aacaa68ffffffffffffffff",
);

const MODP_3072_P: &str = concat!(
    "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74",
    "020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f1437",
    "4fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7ed",
    "ee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf05",
    "98da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb",
    "9ed529077096966d670c354e4abc9804f1746c08ca18217c32905e462e36ce3b",
    "e39e772c180e86039b2783a2ec07a28fb5c55df06f4c52c9de2bcbf695581718",
    "3995497cea956ae515d2261898fa051015728e5a8aaac42dad33170d04507a33",
    "a85521abdf1cba64ecfb850458dbef0a8aea71575d060c7db3970f85a6e1e4c7",
    "abf5ae8cdb0933d71e8c94e04a25619dcee3d2261ad2ee6bf12ffa06d98a0864",
    "d87602733ec86a64521f2b18177b200cbbe117577a615d6c770988c0bad946e2",
    "08e24fa074e5ab3143db5bfce0fd108e4b82d120a93ad2caffffffffffffffff",
);

/// `base^exp mod p`, constant time in `exp` (its full width is always processed), as
/// big-endian bytes of the prime's width (RFC 3526 left-pads).
fn modp_pow<const L: usize, const E: usize>(p_hex: &str, base: &[u8], exp: &[u8]) -> Vec<u8> {
    let p = Odd::<Uint<L>>::from_be_hex(p_hex);
    let params = FixedMontyParams::new_vartime(p); // the modulus is public
    let base = Uint::<L>::from_be_slice(base);
    let exp = Zeroizing::new(Uint::<E>::from_be_slice(exp));
    let r = FixedMontyForm::new(&base, &params).pow(&exp).retrieve();
    r.to_be_bytes().as_ref().to_vec()
}

/// RFC 7296 §3.4 / RFC 6989 §2.1: a MODP public value must satisfy 1 < y < p - 1. The
/// value is public, so a variable-time comparison is fine.
fn modp_public_ok<const L: usize>(p_hex: &str, y: &[u8]) -> bool {
    let p = Uint::<L>::from_be_hex(p_hex);
    let y = Uint::<L>::from_be_slice(y);
    let pm1 = p.wrapping_sub(&Uint::ONE);
    y > Uint::ONE && y < pm1
}

/// The generator 2, as big-endian bytes of `len`.
fn two(len: usize) -> Vec<u8> {
    let mut g = vec![0u8; len];
    g[len - 1] = 2;
    g
}

impl Group {
    pub fn from_iana(id: u16) -> Option<Group> {
        Some(match id {
            31 => Group::Curve25519,
            19 => Group::Ecp256,
            20 => Group::Ecp384,
            14 => Group::Modp2048,
            15 => Group::Modp3072,
            _ => return None,
        })
    }
    pub fn iana(self) -> u16 {
        match self {
            Group::Curve25519 => 31,
            Group::Ecp256 => 19,
            Group::Ecp384 => 20,
            Group::Modp2048 => 14,
            Group::Modp3072 => 15,
        }
    }
    /// strongSwan's name (proposal strings).
    pub fn name(self) -> &'static str {
        match self {
            Group::Curve25519 => "x25519",
            Group::Ecp256 => "ecp256",
            Group::Ecp384 => "ecp384",
            Group::Modp2048 => "modp2048",
            Group::Modp3072 => "modp3072",
        }
    }
    /// Bytes of a public value in a KE payload.
    pub fn public_len(self) -> usize {
        match self {
            Group::Curve25519 => 32,
            Group::Ecp256 => 64,
            Group::Ecp384 => 96,
            Group::Modp2048 => 256,
            Group::Modp3072 => 384,
        }
    }
    /// Random bytes [`Group::keypair`] needs.
    pub fn random_len(self) -> usize {
        match self {
            Group::Curve25519 | Group::Ecp256 => 32,
            Group::Ecp384 => 48,
            // 2 × the security strength (NIST SP 800-56A §5.6.1.1.1): 256 and 384 bits.
            Group::Modp2048 => 32,
            Group::Modp3072 => 48,
        }
    }

    /// Our key pair from `random` (`random_len` bytes from a CSPRNG).
    pub fn keypair(self, random: &[u8]) -> Result<KeyPair, DhError> {
        #[cfg(fuzzing)]
        return fuzz_memo::keypair(self, random);
        #[cfg(not(fuzzing))]
        self.compute_keypair(random)
    }

    fn compute_keypair(self, random: &[u8]) -> Result<KeyPair, DhError> {
        let bad = DhError::BadRandom(self.name());
        if random.len() != self.random_len() {
            return Err(bad);
        }
        let (secret, public) = match self {
            Group::Curve25519 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(random);
                let s = x25519_dalek::StaticSecret::from(k);
                k.fill(0);
                let p = x25519_dalek::PublicKey::from(&s);
                (s.to_bytes().to_vec(), p.as_bytes().to_vec())
            }
            Group::Ecp256 => {
                let s = p256::SecretKey::from_slice(random).map_err(|_| bad)?;
                let p = s.public_key().to_sec1_bytes();
                (s.to_bytes().to_vec(), p[1..].to_vec()) // RFC 5903 §7: x ‖ y, no 0x04
            }
            Group::Ecp384 => {
                let s = p384::SecretKey::from_slice(random).map_err(|_| bad)?;
                let p = s.public_key().to_sec1_bytes();
                (s.to_bytes().to_vec(), p[1..].to_vec())
            }
            Group::Modp2048 | Group::Modp3072 => {
                // x < 2 would make y = 1 or 2: refuse such random bytes.
                let high_zero = random[..random.len() - 1].iter().all(|b| *b == 0);
                if high_zero && random[random.len() - 1] < 2 {
                    return Err(bad);
                }
                let g = two(self.public_len());
                let y = match self {
                    Group::Modp2048 => {
                        modp_pow::<{ U2048::LIMBS }, { U256::LIMBS }>(MODP_2048_P, &g, random)
                    }
                    _ => modp_pow::<{ U3072::LIMBS }, { U384::LIMBS }>(MODP_3072_P, &g, random),
                };
                (random.to_vec(), y)
            }
        };
        Ok(KeyPair {
            group: self,
            secret: Zeroizing::new(secret),
            public,
        })
    }
}

impl KeyPair {
    /// The shared secret g^ir with the peer's public value (checked first).
    pub fn shared(&self, peer: &[u8]) -> Result<Secret, DhError> {
        #[cfg(fuzzing)]
        return fuzz_memo::shared(self, peer);
        #[cfg(not(fuzzing))]
        self.compute_shared(peer)
    }

    fn compute_shared(&self, peer: &[u8]) -> Result<Secret, DhError> {
        let g = self.group;
        let want = g.public_len();
        if peer.len() != want {
            return Err(DhError::Length {
                group: g.name(),
                got: peer.len(),
                want,
            });
        }
        let out = match g {
            Group::Curve25519 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&self.secret);
                let s = x25519_dalek::StaticSecret::from(k);
                k.fill(0);
                let mut pk = [0u8; 32];
                pk.copy_from_slice(peer);
                let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(pk));
                // RFC 8031 §2.3: an all-zero result means a low-order peer point.
                if !shared.was_contributory() {
                    return Err(DhError::Degenerate(g.name()));
                }
                shared.as_bytes().to_vec()
            }
            Group::Ecp256 => {
                let s = p256::SecretKey::from_slice(&self.secret)
                    .map_err(|_| DhError::Invalid(g.name()))?;
                let mut sec1 = vec![4u8];
                sec1.extend_from_slice(peer);
                // from_sec1_bytes checks that the point is on the curve (RFC 5903 §9).
                let pk = p256::PublicKey::from_sec1_bytes(&sec1)
                    .map_err(|_| DhError::Invalid(g.name()))?;
                let shared = p256::ecdh::diffie_hellman(s.to_nonzero_scalar(), pk.as_affine());
                // RFC 5903 §7: the shared secret is the x coordinate.
                shared.raw_secret_bytes().to_vec()
            }
            Group::Ecp384 => {
                let s = p384::SecretKey::from_slice(&self.secret)
                    .map_err(|_| DhError::Invalid(g.name()))?;
                let mut sec1 = vec![4u8];
                sec1.extend_from_slice(peer);
                let pk = p384::PublicKey::from_sec1_bytes(&sec1)
                    .map_err(|_| DhError::Invalid(g.name()))?;
                let shared = p384::ecdh::diffie_hellman(s.to_nonzero_scalar(), pk.as_affine());
                shared.raw_secret_bytes().to_vec()
            }
            Group::Modp2048 => {
                if !modp_public_ok::<{ U2048::LIMBS }>(MODP_2048_P, peer) {
                    return Err(DhError::Invalid(g.name()));
                }
                modp_pow::<{ U2048::LIMBS }, { U256::LIMBS }>(MODP_2048_P, peer, &self.secret)
            }
            Group::Modp3072 => {
                if !modp_public_ok::<{ U3072::LIMBS }>(MODP_3072_P, peer) {
                    return Err(DhError::Invalid(g.name()));
                }
                modp_pow::<{ U3072::LIMBS }, { U384::LIMBS }>(MODP_3072_P, peer, &self.secret)
            }
        };
        Ok(Zeroizing::new(out))
    }
}

/// Fuzzing builds only: key exchanges remembered (see `crate::fuzz_memo`).
#[cfg(fuzzing)]
mod fuzz_memo {
    use super::{DhError, Group, KeyPair, Secret};
    use crate::fuzz_memo::{key, remember};

    pub(super) fn keypair(g: Group, random: &[u8]) -> Result<KeyPair, DhError> {
        let k = key("dh-keypair", &[&g.iana().to_be_bytes(), random]);
        let (secret, public) = remember(k, || {
            g.compute_keypair(random)
                .map(|kp| (kp.secret.to_vec(), kp.public))
        })?;
        Ok(KeyPair {
            group: g,
            secret: Secret::new(secret),
            public,
        })
    }

    pub(super) fn shared(kp: &KeyPair, peer: &[u8]) -> Result<Secret, DhError> {
        let k = key(
            "dh-shared",
            &[&kp.group.iana().to_be_bytes(), &kp.secret, peer],
        );
        let shared = remember(k, || kp.compute_shared(peer).map(|s| s.to_vec()))?;
        Ok(Secret::new(shared))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    #[test]
    fn both_sides_agree_in_every_group() {
        for g in [
            Group::Curve25519,
            Group::Ecp256,
            Group::Ecp384,
            Group::Modp2048,
            Group::Modp3072,
        ] {
            let a = g.keypair(&random(g.random_len(), 1)).unwrap();
            let b = g.keypair(&random(g.random_len(), 77)).unwrap();
            assert_eq!(a.public.len(), g.public_len(), "{g:?}");
            let ab = a.shared(&b.public).unwrap();
            let ba = b.shared(&a.public).unwrap();
            assert_eq!(&ab[..], &ba[..], "{g:?}");
            assert_eq!(Group::from_iana(g.iana()), Some(g));
            assert!(!format!("{a:?}").contains(&format!("{:?}", &a.secret[..4])));
        }
    }

    #[test]
    fn bad_public_values_are_refused() {
        for g in [
            Group::Curve25519,
            Group::Ecp256,
            Group::Ecp384,
            Group::Modp2048,
            Group::Modp3072,
        ] {
            let a = g.keypair(&random(g.random_len(), 5)).unwrap();
            assert!(
                matches!(a.shared(&[1, 2, 3]), Err(DhError::Length { .. })),
                "{g:?}"
            );
        }
        // Curve25519: the all-zero (low-order) point gives a zero secret.
        let a = Group::Curve25519.keypair(&random(32, 5)).unwrap();
        assert_eq!(a.shared(&[0u8; 32]), Err(DhError::Degenerate("x25519")));
        // ECP: a point not on the curve.
        let a = Group::Ecp256.keypair(&random(32, 5)).unwrap();
        assert_eq!(a.shared(&[1u8; 64]), Err(DhError::Invalid("ecp256")));
        // MODP: 1 and p - 1 are refused.
        let a = Group::Modp2048.keypair(&random(32, 5)).unwrap();
        let mut one = vec![0u8; 256];
        one[255] = 1;
        assert_eq!(a.shared(&one), Err(DhError::Invalid("modp2048")));
        let mut pm1 = Uint::<{ U2048::LIMBS }>::from_be_hex(MODP_2048_P)
            .to_be_bytes()
            .as_ref()
            .to_vec();
        pm1[255] -= 1; // p ends in 0xff
        assert_eq!(a.shared(&pm1), Err(DhError::Invalid("modp2048")));
        // p itself and p + something are out of range too.
        let p = Uint::<{ U2048::LIMBS }>::from_be_hex(MODP_2048_P).to_be_bytes();
        assert_eq!(a.shared(p.as_ref()), Err(DhError::Invalid("modp2048")));
        assert_eq!(a.shared(&pm1), Err(DhError::Invalid("modp2048")));
    }

    /// The RFC 3526 primes are safe primes: (p - 1) / 2 is the published q (a typo in the
    /// constants would break this).
    #[test]
    fn modp_constants_match_rfc3526() {
        let q2048 = concat!(
            "7fffffffffffffffe487ed5110b4611a62633145c06e0e68948127044533e63a",
            "0105df531d89cd9128a5043cc71a026ef7ca8cd9e69d218d98158536f92f8a1b",
            "a7f09ab6b6a8e122f242dabb312f3f637a262174d31bf6b585ffae5b7a035bf6",
            "f71c35fdad44cfd2d74f9208be258ff324943328f6722d9ee1003e5c50b1df82",
            "cc6d241b0e2ae9cd348b1fd47e9267afc1b2ae91ee51d6cb0e3179ab1042a95d",
            "cf6a9483b84b4b36b3861aa7255e4c0278ba3604650c10be19482f23171b671d",
            "f1cf3b960c074301cd93c1d17603d147dae2aef837a62964ef15e5fb4aac0b8c",
            "1ccaa4be754ab5728ae9130c4c7d02880ab9472d455655347fffffffffffffff",
        );
        let q = Uint::<{ U2048::LIMBS }>::from_be_hex(q2048);
        let p = Uint::<{ U2048::LIMBS }>::from_be_hex(MODP_2048_P);
        assert_eq!(p, q.shl(1).wrapping_add(&Uint::ONE));
        assert_eq!(p.bit_width(), 2048);
        assert_eq!(
            Uint::<{ U3072::LIMBS }>::from_be_hex(MODP_3072_P).bit_width(),
            3072
        );
    }

    /// Known answers: with a small exponent x the public value is exactly 2^x, and the
    /// shared secret with the peer value 2^y is 2^(xy) (both below p, so no reduction).
    #[test]
    fn modp_known_answers_in_both_groups() {
        for g in [Group::Modp2048, Group::Modp3072] {
            let mut x = vec![0u8; g.random_len()];
            *x.last_mut().unwrap() = 10;
            let a = g.keypair(&x).unwrap();
            let mut want = vec![0u8; g.public_len()];
            want[g.public_len() - 2] = 4; // 2^10 = 0x0400
            assert_eq!(a.public, want, "{g:?}");
            let mut y = vec![0u8; g.public_len()];
            y[g.public_len() - 1] = 8; // 2^3
            let z = a.shared(&y).unwrap();
            let mut want = vec![0u8; g.public_len()];
            want[g.public_len() - 4] = 0x40; // 2^30
            assert_eq!(&z[..], &want[..], "{g:?}");
            // x = 0 and 1 are refused as random input.
            let mut one = vec![0u8; g.random_len()];
            *one.last_mut().unwrap() = 1;
            assert!(matches!(g.keypair(&one), Err(DhError::BadRandom(_))));
        }
    }

    /// RFC 7748 §5.2 / RFC 8031: the X25519 function on the published test vector.
    #[test]
    fn x25519_matches_rfc7748() {
        fn hex(s: &str) -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        }
        let alice = Group::Curve25519
            .keypair(&hex(
                "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
            ))
            .unwrap();
        assert_eq!(
            alice.public,
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let shared = alice
            .shared(&hex(
                "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
            ))
            .unwrap();
        assert_eq!(
            &shared[..],
            &hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")[..]
        );
    }
}
