//! AES-GCM (NIST SP 800-38D) with a 96-bit nonce, as ESP (RFC 4106) and IKEv2 (RFC 5282)
//! use it, on the fastest path the CPU has.
//!
//! The path is chosen once per key at run time, so a default `cargo build --release` runs
//! VAES on a CPU that has it:
//!
//! 1. [`GcmPath::Avx512`]: 512-bit VAES + VPCLMULQDQ (AVX-512F/BW), 16 blocks per group;
//! 2. [`GcmPath::Avx2Vaes`]: 256-bit VAES + VPCLMULQDQ with AVX2, 8 blocks per group;
//! 3. [`GcmPath::AesNi`]: AES-NI + PCLMULQDQ, 8 blocks per group;
//! 4. [`GcmPath::Portable`]: RustCrypto `aes-gcm` (itself using AES-NI where it can).
//!
//! The three x86 paths are one algorithm instantiated at three vector widths
//! (`x86.rs`, the only `unsafe` here). Tests force every path the CPU can run, so a
//! machine without AVX-512 still checks the other three against Wycheproof and RustCrypto.
//!
//! Why our own: RustCrypto's `aes-gcm` only reaches VAES with `-C target-cpu` set at build
//! time and runs GHASH a block at a time (about half our speed here from a default build:
//! the `portable` column of `cargo bench -p bench --bench gcm`); `ring` and `aws-lc-rs` have
//! assembly but their own key types and nonce rules, and issue 6's survey of this hardware
//! put them 1.7–1.8× behind Intel's ipsec-mb at 1420 bytes, the figure we measure against.

use std::fmt;

use aes_gcm::aead::array::Array;
use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{AeadInOut, KeyInit};

/// The RustCrypto AEADs this module falls back to.
trait Aead96: AeadInOut<NonceSize = U12, TagSize = U16> {}
impl<A: AeadInOut<NonceSize = U12, TagSize = U16>> Aead96 for A {}

#[cfg(target_arch = "x86_64")]
mod x86;

/// One implementation of AES-GCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GcmPath {
    /// 512-bit VAES + VPCLMULQDQ, needs AVX-512F and AVX-512BW.
    Avx512,
    /// 256-bit VAES + VPCLMULQDQ, needs AVX2.
    Avx2Vaes,
    /// 128-bit AES-NI + PCLMULQDQ.
    AesNi,
    /// RustCrypto `aes-gcm`, any CPU.
    Portable,
}

impl GcmPath {
    /// Every path, fastest first.
    pub const ALL: [GcmPath; 4] = [
        GcmPath::Avx512,
        GcmPath::Avx2Vaes,
        GcmPath::AesNi,
        GcmPath::Portable,
    ];

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                GcmPath::Avx512 => x86::Width::Zmm.available(),
                GcmPath::Avx2Vaes => x86::Width::Ymm.available(),
                GcmPath::AesNi => x86::Width::Xmm.available(),
                GcmPath::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == GcmPath::Portable
        }
    }

    /// The fastest path this CPU has.
    pub fn best() -> GcmPath {
        GcmPath::ALL
            .into_iter()
            .find(|p| p.available())
            .unwrap_or(GcmPath::Portable)
    }

    /// The paths this CPU can run, fastest first.
    pub fn available_paths() -> Vec<GcmPath> {
        GcmPath::ALL.into_iter().filter(|p| p.available()).collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            GcmPath::Avx512 => "vaes-avx512",
            GcmPath::Avx2Vaes => "vaes-avx2",
            GcmPath::AesNi => "aesni",
            GcmPath::Portable => "portable",
        }
    }
}

impl fmt::Display for GcmPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an AES-GCM key or operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GcmError {
    #[error("AES-GCM key must be 16 or 32 bytes, got {0}")]
    KeyLength(usize),
    #[error("the CPU cannot run the {0} AES-GCM path")]
    PathUnavailable(GcmPath),
    #[error("AES-GCM tag must be 8, 12 or 16 bytes (RFC 4106 §3), got {0}")]
    TagLength(usize),
    #[error("AES-GCM message longer than 2^36 - 32 bytes (SP 800-38D §5.2.1.1)")]
    TooLong,
    #[error("AES-GCM tag does not verify")]
    TagMismatch,
}

/// SP 800-38D §5.2.1.1: at most 2^32 − 2 blocks under one 96-bit nonce.
const MAX_MESSAGE: u64 = (1 << 36) - 32;

/// An AES-128-GCM or AES-256-GCM key, expanded for one path: round keys and the powers of
/// H are computed here, once per SA, and zeroized on drop.
pub struct GcmKey {
    path: GcmPath,
    state: State,
}

enum State {
    #[cfg(target_arch = "x86_64")]
    X86(Box<x86::Keys>),
    Portable128(Box<aes_gcm::Aes128Gcm>),
    Portable256(Box<aes_gcm::Aes256Gcm>),
}

impl GcmKey {
    /// Expand `key` (16 or 32 bytes) for the fastest path this CPU has.
    pub fn new(key: &[u8]) -> Result<GcmKey, GcmError> {
        GcmKey::with_path(key, GcmPath::best())
    }

    /// Expand `key` for `path`; refused if the CPU cannot run it. For tests and benches.
    pub fn with_path(key: &[u8], path: GcmPath) -> Result<GcmKey, GcmError> {
        if key.len() != 16 && key.len() != 32 {
            return Err(GcmError::KeyLength(key.len()));
        }
        if !path.available() {
            return Err(GcmError::PathUnavailable(path));
        }
        let state = match path {
            #[cfg(target_arch = "x86_64")]
            GcmPath::Avx512 | GcmPath::Avx2Vaes | GcmPath::AesNi => {
                let width = match path {
                    GcmPath::Avx512 => x86::Width::Zmm,
                    GcmPath::Avx2Vaes => x86::Width::Ymm,
                    _ => x86::Width::Xmm,
                };
                State::X86(x86::Keys::new(key, width).ok_or(GcmError::PathUnavailable(path))?)
            }
            _ if key.len() == 16 => State::Portable128(Box::new(
                aes_gcm::Aes128Gcm::new_from_slice(key).map_err(|_| GcmError::KeyLength(16))?,
            )),
            _ => State::Portable256(Box::new(
                aes_gcm::Aes256Gcm::new_from_slice(key).map_err(|_| GcmError::KeyLength(32))?,
            )),
        };
        Ok(GcmKey { path, state })
    }

    pub fn path(&self) -> GcmPath {
        self.path
    }

    /// Encrypt `buf` in place; returns the 16-byte tag (ESP with a shorter ICV sends its
    /// first 8 or 12 bytes, RFC 4106 §3).
    pub fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16], GcmError> {
        if buf.len() as u64 > MAX_MESSAGE {
            return Err(GcmError::TooLong);
        }
        Ok(match &self.state {
            #[cfg(target_arch = "x86_64")]
            State::X86(k) => x86::crypt::<false>(k, nonce, aad, buf),
            State::Portable128(a) => portable_seal(&**a, nonce, aad, buf),
            State::Portable256(a) => portable_seal(&**a, nonce, aad, buf),
        })
    }

    /// Verify `tag` (8, 12 or 16 bytes: a prefix of the full tag) and decrypt `buf` in
    /// place. On failure `buf` is zeroed, so unauthenticated plaintext never escapes.
    pub fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8],
    ) -> Result<(), GcmError> {
        if !matches!(tag.len(), 8 | 12 | 16) {
            return Err(GcmError::TagLength(tag.len()));
        }
        if buf.len() as u64 > MAX_MESSAGE {
            return Err(GcmError::TooLong);
        }
        match &self.state {
            #[cfg(target_arch = "x86_64")]
            State::X86(k) => {
                // One pass: GHASH of the ciphertext interleaved with the decryption.
                let full = x86::crypt::<true>(k, nonce, aad, buf);
                if ct_eq(&full[..tag.len()], tag) {
                    Ok(())
                } else {
                    buf.fill(0);
                    Err(GcmError::TagMismatch)
                }
            }
            State::Portable128(a) => portable_open(&**a, nonce, aad, buf, tag),
            State::Portable256(a) => portable_open(&**a, nonce, aad, buf, tag),
        }
    }
}

/// One message of a batch: `buf` is sealed or opened in place; `tag` is written by
/// [`GcmKey::seal_batch`] and read by [`GcmKey::open_batch`].
pub struct GcmMessage<'a> {
    pub nonce: [u8; 12],
    pub aad: &'a [u8],
    pub buf: &'a mut [u8],
    pub tag: [u8; 16],
}

impl GcmKey {
    /// Seal every message of a batch under this key. Short messages (up to 288 bytes with
    /// at most 16 bytes of AAD) go two at a time, their AES rounds interleaved, so one
    /// packet's AES latency hides behind the other's.
    pub fn seal_batch(&self, msgs: &mut [GcmMessage<'_>]) -> Result<(), GcmError> {
        if msgs.iter().any(|m| m.buf.len() as u64 > MAX_MESSAGE) {
            return Err(GcmError::TooLong);
        }
        match &self.state {
            #[cfg(target_arch = "x86_64")]
            State::X86(k) => {
                let mut pairs = msgs.chunks_exact_mut(2);
                for pair in &mut pairs {
                    let [a, b] = pair else {
                        unreachable!("chunks_exact(2)")
                    };
                    let [ta, tb] = x86::crypt2::<false>(
                        k,
                        (&a.nonce, a.aad, &mut *a.buf),
                        (&b.nonce, b.aad, &mut *b.buf),
                    );
                    (a.tag, b.tag) = (ta, tb);
                }
                for m in pairs.into_remainder() {
                    m.tag = x86::crypt::<false>(k, &m.nonce, m.aad, m.buf);
                }
            }
            _ => {
                for m in msgs.iter_mut() {
                    m.tag = self.seal(&m.nonce, m.aad, m.buf)?;
                }
            }
        }
        Ok(())
    }

    /// Open every message of a batch (16-byte tags); `ok[i]` says whether message `i`
    /// verified. A message that fails is zeroed, as in [`GcmKey::open`].
    pub fn open_batch(&self, msgs: &mut [GcmMessage<'_>], ok: &mut [bool]) {
        assert_eq!(msgs.len(), ok.len(), "one verdict per message");
        match &self.state {
            #[cfg(target_arch = "x86_64")]
            State::X86(k) if msgs.iter().all(|m| m.buf.len() as u64 <= MAX_MESSAGE) => {
                let mut pairs = msgs.chunks_exact_mut(2);
                let mut oks = ok.chunks_exact_mut(2);
                for (pair, ok) in (&mut pairs).zip(&mut oks) {
                    let [a, b] = pair else {
                        unreachable!("chunks_exact(2)")
                    };
                    let [ta, tb] = x86::crypt2::<true>(
                        k,
                        (&a.nonce, a.aad, &mut *a.buf),
                        (&b.nonce, b.aad, &mut *b.buf),
                    );
                    ok[0] = verdict(ct_eq(&ta, &a.tag), a.buf);
                    ok[1] = verdict(ct_eq(&tb, &b.tag), b.buf);
                }
                for (m, ok) in pairs.into_remainder().iter_mut().zip(oks.into_remainder()) {
                    let t = x86::crypt::<true>(k, &m.nonce, m.aad, m.buf);
                    *ok = verdict(ct_eq(&t, &m.tag), m.buf);
                }
            }
            _ => {
                for (m, ok) in msgs.iter_mut().zip(ok.iter_mut()) {
                    *ok = self.open(&m.nonce, m.aad, m.buf, &m.tag).is_ok();
                }
            }
        }
    }
}

/// Zero the plaintext of a message whose tag failed; pass the verdict through.
fn verdict(ok: bool, buf: &mut [u8]) -> bool {
    if !ok {
        buf.fill(0);
    }
    ok
}

impl fmt::Debug for GcmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GcmKey({}, <redacted>)", self.path)
    }
}

/// Constant-time equality of two byte strings of public, equal length.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0 && a.len() == b.len()
}

fn portable_seal<A: Aead96>(a: &A, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
    let mut tag = [0u8; 16];
    let t = a
        .encrypt_inout_detached(&Array::from(*nonce), aad, buf.into())
        .expect("length checked against SP 800-38D's limit");
    tag.copy_from_slice(&t);
    tag
}

fn portable_open<A: Aead96>(
    a: &A,
    nonce: &[u8; 12],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> Result<(), GcmError> {
    if tag.len() != 16 {
        // RustCrypto's Aes*Gcm types fix the tag at 16 bytes: compute it and compare the
        // prefix, decrypting only after it verifies.
        let mut copy = buf.to_vec();
        let full = portable_seal_ct(a, nonce, aad, &mut copy);
        copy.fill(0);
        if !ct_eq(&full[..tag.len()], tag) {
            buf.fill(0);
            return Err(GcmError::TagMismatch);
        }
        // Decrypt = encrypt in CTR mode; the tag computed here is discarded.
        portable_seal(a, nonce, aad, buf);
        return Ok(());
    }
    a.decrypt_inout_detached(
        &Array::from(*nonce),
        aad,
        buf.into(),
        &Array::try_from(tag).expect("16 bytes"),
    )
    .map_err(|_| {
        buf.fill(0);
        GcmError::TagMismatch
    })
}

/// The tag of ciphertext `ct` (GHASH over the ciphertext): decrypt a copy, re-encrypt it.
fn portable_seal_ct<A: Aead96>(a: &A, nonce: &[u8; 12], aad: &[u8], ct: &mut [u8]) -> [u8; 16] {
    // CTR decryption is CTR encryption; the first call's tag is over the wrong text.
    portable_seal(a, nonce, aad, ct);
    portable_seal(a, nonce, aad, ct)
}
