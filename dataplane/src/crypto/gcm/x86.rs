//! The x86-64 AES-GCM kernels (NIST SP 800-38D), the only `unsafe` of the GCM engine.
//!
//! One algorithm, written once in [`width_kernel!`], instantiated for three vector widths:
//!
//! | module | vector | blocks per vector | blocks per group | instructions |
//! |---|---|---|---|---|
//! | [`zmm`] | `__m512i` | 4 | 16 | AVX-512F/BW + VAES + VPCLMULQDQ |
//! | [`ymm`] | `__m256i` | 2 | 8 | AVX2 + VAES + VPCLMULQDQ |
//! | [`xmm`] | `__m128i` | 1 | 8 | AES-NI + PCLMULQDQ |
//!
//! Long messages: per group of blocks, AES-CTR runs on all counters at once (independent
//! dependency chains hide the AES latency) and GHASH multiplies each block by its own power
//! of H, accumulating the three partial products unreduced, so there is one reduction per
//! group rather than one per block (aggregated reduction). The out-of-order core overlaps
//! the GHASH of one group with the AES of the next: they do not depend on each other. The
//! tail and the lengths block share the last reduction.
//!
//! Short messages (up to 18 blocks with at most one block of AAD: ESP packets up to 256
//! bytes inside): AAD, text and lengths are one sum of products with one reduction, so the
//! serial chain is AES, one multiply, one reduction. `crypt2` runs two of them with their
//! AES rounds interleaved (the batch entry point). Partial blocks are built and written in
//! registers from fixed-size pieces, never through `memcpy` or a wide load of narrow stores.
//!
//! GHASH works in the byte-reflected representation with the one-bit offset of
//! carry-less multiplication folded into the key (H·x, as in Intel's white paper), and a
//! two-step Montgomery-style reduction by x^128 + x^7 + x^2 + x + 1 (the form used by
//! BoringSSL's and Linux's VAES code). Everything here is constant time: AES and CLMUL are
//! data-independent instructions, and no branch or index depends on key, nonce or data;
//! only public lengths steer the control flow.
//!
//! Each `#[target_feature]` function may only be called when the CPU has its features;
//! [`super::GcmPath::available`] checks them, and the dispatcher in `super` is the only
//! caller of the `pub(super)` entry points.

#![allow(unsafe_code)]

use core::arch::x86_64::*;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Powers of H kept per key: one group of the widest path (16 blocks of 512-bit code) plus
/// the lengths block, so a tail and the lengths block always fit one run; and a whole
/// 288-byte message with its AAD block and lengths block (the short path, 18 blocks).
pub(super) const HPOW: usize = 20;
/// Zero entries after H^1, so a vector load that starts on the last powers and runs past
/// H^1 reads zeros instead of out of bounds (lanes beyond the data are zero as well).
const HPAD: usize = 3;

/// Per-key state: the expanded AES key and the powers of H, computed once per SA.
/// Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
#[repr(C, align(64))]
pub(super) struct Keys {
    /// AES round keys 0..=rounds.
    rk: [[u8; 16]; 15],
    /// `hp[i]` = H^(HPOW − i) in GHASH's shifted form, then `HPAD` zero entries: a run of
    /// `m` blocks uses `hp[HPOW − m ..]`, the last block H^1.
    hp: [[u8; 16]; HPOW + HPAD],
    /// 10 (AES-128) or 14 (AES-256).
    rounds: usize,
    /// The kernel; `Keys::new` only builds keys for a width the CPU can run.
    #[zeroize(skip)]
    width: Width,
}

/// Which instantiation of the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Width {
    Zmm,
    Ymm,
    Xmm,
}

impl Width {
    /// Whether the CPU has every feature the width's kernel is compiled for.
    pub(super) fn available(self) -> bool {
        use std::arch::is_x86_feature_detected as has;
        let aesni = has!("aes") && has!("pclmulqdq") && has!("ssse3") && has!("sse2");
        let vaes = aesni && has!("vaes") && has!("vpclmulqdq");
        match self {
            Width::Zmm => vaes && has!("avx512f") && has!("avx512bw"),
            Width::Ymm => vaes && has!("avx2"),
            Width::Xmm => aesni,
        }
    }
}

/// Seal (`DECRYPT` false) or open `buf` in place with `k`; returns the full tag.
pub(super) fn crypt<const DECRYPT: bool>(
    k: &Keys,
    nonce: &[u8; 12],
    aad: &[u8],
    buf: &mut [u8],
) -> [u8; 16] {
    macro_rules! on {
        ($width:ident) => {
            // SAFETY: `Keys::new` built `k` only after `Width::available` confirmed that
            // the CPU has every feature the `$width` kernel is compiled for.
            unsafe {
                if k.rounds == 10 {
                    $width::crypt::<10, DECRYPT>(k, nonce, aad, buf)
                } else {
                    $width::crypt::<14, DECRYPT>(k, nonce, aad, buf)
                }
            }
        };
    }
    match k.width {
        Width::Zmm => on!(zmm),
        Width::Ymm => on!(ymm),
        Width::Xmm => on!(xmm),
    }
}

/// Byte-reversal shuffle: GCM's big-endian block ↔ the reflected 128-bit integer.
const BSWAP: [u8; 16] = [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0];
/// x^128 + x^7 + x^2 + x + 1, reflected, as the reduction constant: (0xc2 << 120) | 1.
const GFPOLY: u128 = 0xc200_0000_0000_0000_0000_0000_0000_0001;

/// Copy a short run (a message tail, at most a vector) in fixed-size pieces. A call to
/// `memcpy` would cost more than the copy: its `vzeroupper` forces every vector register the
/// kernel keeps live to be spilled and reloaded.
#[inline(always)]
fn copy_small(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    let mut i = 0;
    while n - i >= 16 {
        dst[i..i + 16].copy_from_slice(&src[i..i + 16]);
        i += 16;
    }
    for piece in [8, 4, 2, 1] {
        if n - i >= piece {
            dst[i..i + piece].copy_from_slice(&src[i..i + piece]);
            i += piece;
        }
    }
}

/// Up to 16 bytes as a little-endian integer, zero-padded, without going through memory
/// (a wide load of narrow stores stalls store-to-load forwarding).
#[inline(always)]
fn read_u128(b: &[u8]) -> u128 {
    let mut v = 0u128;
    let mut i = 0;
    for piece in [8usize, 8, 4, 2, 1] {
        if b.len() - i >= piece {
            let mut w = [0u8; 8];
            w[..piece].copy_from_slice(&b[i..i + piece]);
            v |= u128::from(u64::from_le_bytes(w)) << (8 * i);
            i += piece;
        }
    }
    v
}

/// 128-bit helpers shared by every width: AES-NI key schedule, one-block AES, GHASH of
/// single blocks. Feature set: what every x86 path has.
mod x128 {
    use super::*;

    #[inline]
    #[target_feature(enable = "sse2,ssse3,aes,pclmulqdq")]
    pub(super) fn load(b: &[u8; 16]) -> __m128i {
        // SAFETY: `b` is 16 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "sse2,ssse3,aes,pclmulqdq")]
    pub(super) fn store(b: &mut [u8; 16], v: __m128i) {
        // SAFETY: `b` is 16 writable bytes; `storeu` has no alignment requirement.
        unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) }
    }

    #[inline]
    #[target_feature(enable = "sse2,ssse3,aes,pclmulqdq")]
    pub(super) fn from_u128(x: u128) -> __m128i {
        // From general registers (movq + pinsrq), not through memory: a 16-byte load of
        // two 8-byte stores would stall store-to-load forwarding.
        _mm_set_epi64x((x >> 64) as u64 as i64, x as u64 as i64)
    }

    #[inline]
    #[target_feature(enable = "sse2,ssse3,aes,pclmulqdq")]
    pub(super) fn bswap(v: __m128i) -> __m128i {
        _mm_shuffle_epi8(v, from_u128(u128::from_le_bytes(BSWAP)))
    }

    /// The reduction of a 256-bit product `hi·x^128 + mi·x^64 + lo` (reflected) to 128
    /// bits: fold `lo` into `mi`, then `mi` into `hi`, each with one multiplication by
    /// the upper half of [`GFPOLY`].
    #[inline]
    #[target_feature(enable = "sse2,ssse3,aes,pclmulqdq")]
    pub(super) fn reduce(lo: __m128i, mi: __m128i, hi: __m128i) -> __m128i {
        let poly = from_u128(GFPOLY);
        let t = _mm_clmulepi64_si128::<0x10>(lo, poly);
        let mi = _mm_xor_si128(_mm_xor_si128(mi, _mm_shuffle_epi32::<0x4e>(lo)), t);
        let t = _mm_clmulepi64_si128::<0x10>(mi, poly);
        _mm_xor_si128(_mm_xor_si128(hi, _mm_shuffle_epi32::<0x4e>(mi)), t)
    }

    /// The three partial products of a·b, unreduced: (lo, mid, hi).
    #[inline]
    #[target_feature(enable = "sse2,ssse3,aes,pclmulqdq")]
    pub(super) fn mul_parts(a: __m128i, b: __m128i) -> (__m128i, __m128i, __m128i) {
        let lo = _mm_clmulepi64_si128::<0x00>(a, b);
        let hi = _mm_clmulepi64_si128::<0x11>(a, b);
        let mi = _mm_xor_si128(
            _mm_clmulepi64_si128::<0x01>(a, b),
            _mm_clmulepi64_si128::<0x10>(a, b),
        );
        (lo, mi, hi)
    }

    /// a·b in GF(2^128), `b` in the shifted form (H·x); the result is in `a`'s form.
    #[inline]
    #[target_feature(enable = "sse2,ssse3,aes,pclmulqdq")]
    pub(super) fn gmul(a: __m128i, b: __m128i) -> __m128i {
        let lo = _mm_clmulepi64_si128::<0x00>(a, b);
        let hi = _mm_clmulepi64_si128::<0x11>(a, b);
        let mi = _mm_xor_si128(
            _mm_clmulepi64_si128::<0x01>(a, b),
            _mm_clmulepi64_si128::<0x10>(a, b),
        );
        reduce(lo, mi, hi)
    }

    /// One AES block with round keys `rk[0..=NR]`.
    #[inline]
    #[target_feature(enable = "sse2,ssse3,aes,pclmulqdq")]
    pub(super) fn aes<const NR: usize>(rk: &[[u8; 16]; 15], block: __m128i) -> __m128i {
        let mut x = _mm_xor_si128(block, load(&rk[0]));
        for k in &rk[1..NR] {
            x = _mm_aesenc_si128(x, load(k));
        }
        _mm_aesenclast_si128(x, load(&rk[NR]))
    }

    /// GHASH of `aad` (zero-padded to whole blocks) into `acc`, one block at a time: the
    /// AAD of ESP is one block (SPI ‖ [ESN high ‖] sequence number).
    #[inline]
    #[target_feature(enable = "sse2,ssse3,aes,pclmulqdq")]
    pub(super) fn ghash_bytes(mut acc: __m128i, data: &[u8], h1: __m128i) -> __m128i {
        let mut blocks = data.chunks_exact(16);
        for b in &mut blocks {
            let b: &[u8; 16] = b.try_into().expect("chunks_exact(16)");
            acc = gmul(_mm_xor_si128(acc, bswap(load(b))), h1);
        }
        let rest = blocks.remainder();
        if !rest.is_empty() {
            acc = gmul(
                _mm_xor_si128(acc, bswap(from_u128(super::read_u128(rest)))),
                h1,
            );
        }
        acc
    }

    /// The AES-NI key schedule (FIPS 197 §5.2, as in Intel's AES-NI white paper).
    macro_rules! expand_step {
        ($prev:expr, $assist:expr, $shuf:literal) => {{
            let t = _mm_shuffle_epi32::<$shuf>($assist);
            let mut p = $prev;
            p = _mm_xor_si128(p, _mm_slli_si128::<4>(p));
            p = _mm_xor_si128(p, _mm_slli_si128::<4>(p));
            p = _mm_xor_si128(p, _mm_slli_si128::<4>(p));
            _mm_xor_si128(p, t)
        }};
    }

    #[target_feature(enable = "sse2,ssse3,aes,pclmulqdq")]
    pub(super) fn expand_128(key: &[u8; 16], rk: &mut [[u8; 16]; 15]) {
        let mut k = load(key);
        store(&mut rk[0], k);
        macro_rules! round {
            ($i:literal, $rcon:literal) => {
                k = expand_step!(k, _mm_aeskeygenassist_si128::<$rcon>(k), 0xff);
                store(&mut rk[$i], k);
            };
        }
        round!(1, 0x01);
        round!(2, 0x02);
        round!(3, 0x04);
        round!(4, 0x08);
        round!(5, 0x10);
        round!(6, 0x20);
        round!(7, 0x40);
        round!(8, 0x80);
        round!(9, 0x1b);
        round!(10, 0x36);
    }

    #[target_feature(enable = "sse2,ssse3,aes,pclmulqdq")]
    pub(super) fn expand_256(key: &[u8; 32], rk: &mut [[u8; 16]; 15]) {
        let (lo, hi) = key.split_at(16);
        let mut a = load(lo.try_into().expect("16 bytes"));
        let mut b = load(hi.try_into().expect("16 bytes"));
        store(&mut rk[0], a);
        store(&mut rk[1], b);
        macro_rules! round {
            ($i:literal, $rcon:literal) => {
                a = expand_step!(a, _mm_aeskeygenassist_si128::<$rcon>(b), 0xff);
                store(&mut rk[$i], a);
            };
            ($i:literal, $rcon:literal, odd) => {
                round!($i, $rcon);
                b = expand_step!(b, _mm_aeskeygenassist_si128::<0>(a), 0xaa);
                store(&mut rk[$i + 1], b);
            };
        }
        round!(2, 0x01, odd);
        round!(4, 0x02, odd);
        round!(6, 0x04, odd);
        round!(8, 0x08, odd);
        round!(10, 0x10, odd);
        round!(12, 0x20, odd);
        round!(14, 0x40);
    }

    /// H = AES_K(0^128), then H·x in the reflected form, then its powers.
    #[target_feature(enable = "sse2,ssse3,aes,pclmulqdq")]
    pub(super) fn hash_powers<const NR: usize>(
        rk: &[[u8; 16]; 15],
        hp: &mut [[u8; 16]; HPOW + HPAD],
    ) {
        let mut raw = [0u8; 16];
        store(&mut raw, aes::<NR>(rk, _mm_setzero_si128()));
        let h = u128::from_be_bytes(raw);
        raw.zeroize();
        // Multiply by x: shift left one bit; if a bit falls off, add the polynomial.
        // `carry_mask` is all ones or all zeros, so there is no key-dependent branch.
        let carry_mask = 0u128.wrapping_sub(h >> 127);
        let h1 = from_u128((h << 1) ^ (GFPOLY & carry_mask));
        let mut p = h1;
        for i in (0..HPOW).rev() {
            store(&mut hp[i], p);
            p = gmul(p, h1);
        }
        for z in &mut hp[HPOW..] {
            *z = [0; 16];
        }
    }
}

/// Two messages under `k` (the batch entry point): short ones are interleaved.
pub(super) fn crypt2<const DECRYPT: bool>(
    k: &Keys,
    a: (&[u8; 12], &[u8], &mut [u8]),
    b: (&[u8; 12], &[u8], &mut [u8]),
) -> [[u8; 16]; 2] {
    macro_rules! on {
        ($width:ident) => {
            // SAFETY: as in `crypt`: `k` exists only if the CPU runs `$width`.
            unsafe {
                if k.rounds == 10 {
                    $width::crypt2::<10, DECRYPT>(k, a, b)
                } else {
                    $width::crypt2::<14, DECRYPT>(k, a, b)
                }
            }
        };
    }
    match k.width {
        Width::Zmm => on!(zmm),
        Width::Ymm => on!(ymm),
        Width::Xmm => on!(xmm),
    }
}

impl Keys {
    /// Expand a 16- or 32-byte AES key for `width`. `None` for other key lengths, or if
    /// the CPU cannot run `width`.
    pub(super) fn new(key: &[u8], width: Width) -> Option<Box<Keys>> {
        if !width.available() {
            return None;
        }
        let mut k = Box::new(Keys {
            rk: [[0; 16]; 15],
            hp: [[0; 16]; HPOW + HPAD],
            rounds: 0,
            width,
        });
        // SAFETY (both arms): every width includes AES-NI, PCLMULQDQ and SSSE3, which
        // `width.available()` confirmed above; the key schedule needs nothing more.
        match key.len() {
            16 => unsafe {
                x128::expand_128(key.try_into().expect("16 bytes"), &mut k.rk);
                k.rounds = 10;
                x128::hash_powers::<10>(&k.rk, &mut k.hp);
            },
            32 => unsafe {
                x128::expand_256(key.try_into().expect("32 bytes"), &mut k.rk);
                k.rounds = 14;
                x128::hash_powers::<14>(&k.rk, &mut k.hp);
            },
            _ => return None,
        }
        Some(k)
    }
}

/// The GCM algorithm over vectors of `W` blocks, `N` vectors per group. Expects the module
/// to define the width primitives (`load`, `store`, `bcast`, `zero`, `xor`, `and`, `shuf`,
/// `add32`, `enc`, `enclast`, `clmul`, `fold`, `zext`, `from_blocks`, `to_blocks`) with the
/// same `$feat` features.
macro_rules! width_kernel {
    ($feat:literal, $V:ty, $W:literal, $N:literal) => {
        use super::x128;
        use super::{Keys, BSWAP, HPOW};

        const W: usize = $W;
        const N: usize = $N;
        /// Blocks per group.
        const G: usize = W * N;
        /// Bytes per vector.
        const VB: usize = 16 * W;
        /// Most keystream vectors per message per step of the short path (8 blocks, or 4
        /// vectors): enough chains in flight to cover the AES latency.
        const CMAX: usize = if W >= 2 { 4 } else { 8 };
        /// A vector whose lane `l` holds `first + step·l` in its low 32-bit word: counter
        /// offsets in the reflected form, where inc32 (SP 800-38D §6.2) is a 32-bit add.
        #[inline]
        #[target_feature(enable = $feat)]
        fn counters(first: u32, step: u32) -> $V {
            let mut b = [0u8; VB];
            for lane in 0..W {
                let c = first + step * lane as u32;
                b[16 * lane..16 * lane + 4].copy_from_slice(&c.to_le_bytes());
            }
            load(&b)
        }

        /// AES of `N` counter vectors at once (independent chains hide the latency).
        #[inline]
        #[target_feature(enable = $feat)]
        fn keystream<const NR: usize, const K: usize>(
            rk: &[$V; 15],
            ctr: &mut $V,
            inc: $V,
            bswap: $V,
        ) -> [$V; K] {
            let mut x = [zero(); K];
            for v in x.iter_mut() {
                *v = xor(shuf(*ctr, bswap), rk[0]);
                *ctr = add32(*ctr, inc);
            }
            for r in rk.iter().take(NR).skip(1) {
                for v in x.iter_mut() {
                    *v = enc(*v, *r);
                }
            }
            for v in x.iter_mut() {
                *v = enclast(*v, rk[NR]);
            }
            x
        }

        /// Multiply-accumulate `d` (vectors of blocks as they are on the wire) by the
        /// powers `h`, fold the accumulator into the first block, reduce once.
        #[inline]
        #[target_feature(enable = $feat)]
        fn ghash_run(acc: __m128i, d: &[$V], h: &[$V], bswap: $V) -> __m128i {
            let (mut lo, mut mi, mut hi) = (zero(), zero(), zero());
            for (i, (d, h)) in d.iter().zip(h).enumerate() {
                let mut x = shuf(*d, bswap);
                if i == 0 {
                    x = xor(x, zext(acc));
                }
                lo = xor(lo, clmul::<0x00>(x, *h));
                hi = xor(hi, clmul::<0x11>(x, *h));
                mi = xor(mi, xor(clmul::<0x01>(x, *h), clmul::<0x10>(x, *h)));
            }
            x128::reduce(fold(lo), fold(mi), fold(hi))
        }

        /// The powers for a run of `m` blocks laid out in `N` vectors.
        #[inline]
        #[target_feature(enable = $feat)]
        fn powers(k: &Keys, m: usize) -> [$V; N] {
            let hp = k.hp.as_flattened();
            let mut h = [zero(); N];
            let first = HPOW - m;
            for (i, v) in h.iter_mut().enumerate().take(m.div_ceil(W)) {
                let at = (first + i * W) * 16;
                *v = load(hp[at..at + VB].try_into().expect("padded table"));
            }
            h
        }

        /// The last GHASH run of a long message, as one sum of products and one reduction:
        /// `d` (`m` blocks) then `post` (the lengths block, H^1). `acc`, the hash so far, is
        /// added to the first block of the run.
        #[inline]
        #[target_feature(enable = $feat)]
        fn ghash_final(
            k: &Keys,
            acc: __m128i,
            d: &[$V],
            m: usize,
            post: __m128i,
            bswap: $V,
        ) -> __m128i {
            let hp = k.hp.as_flattened();
            let (mut lo, mut mi, mut hi) = (zero(), zero(), zero());
            let mut carry = acc;
            let first = HPOW - (m + 1);
            for (i, d) in d.iter().enumerate() {
                let mut x = shuf(*d, bswap);
                if i == 0 {
                    x = xor(x, zext(carry));
                }
                let at = (first + i * W) * 16;
                let h = load(hp[at..at + VB].try_into().expect("padded table"));
                lo = xor(lo, clmul::<0x00>(x, h));
                hi = xor(hi, clmul::<0x11>(x, h));
                mi = xor(mi, xor(clmul::<0x01>(x, h), clmul::<0x10>(x, h)));
            }
            if !d.is_empty() {
                carry = _mm_setzero_si128();
            }
            let (l, mm, h) =
                x128::mul_parts(_mm_xor_si128(post, carry), x128::load(&k.hp[HPOW - 1]));
            x128::reduce(
                _mm_xor_si128(fold(lo), l),
                _mm_xor_si128(fold(mi), mm),
                _mm_xor_si128(fold(hi), h),
            )
        }

        /// SP 800-38D §7.1 step 5: the lengths block, len(A) ‖ len(C) in bits, reflected.
        #[inline]
        #[target_feature(enable = $feat)]
        fn lengths(aad: usize, text: usize) -> __m128i {
            x128::from_u128(((aad as u128 * 8) << 64) | (text as u128 * 8))
        }

        /// Encrypt (or decrypt) whole and partial vectors of a message shorter than a group;
        /// returns the ciphertext vectors (zero-padded) for GHASH.
        #[inline]
        #[target_feature(enable = $feat)]
        fn xor_tail<const DECRYPT: bool>(buf: &mut [u8], ks: &[$V], ct: &mut [$V]) -> usize {
            let mut n = 0;
            for ((chunk, ks), ct) in buf.chunks_mut(VB).zip(ks).zip(ct.iter_mut()) {
                n += 1;
                if let Ok(chunk) = <&mut [u8; VB]>::try_from(&mut *chunk) {
                    let input = load(chunk);
                    let output = xor(input, *ks);
                    store(chunk, output);
                    *ct = if DECRYPT { input } else { output };
                } else {
                    *ct = xor_partial::<DECRYPT>(chunk, *ks);
                }
            }
            n
        }

        /// The last, partial vector of a message (`chunk` shorter than a vector), built and
        /// written block by block in registers: going through a stack buffer would make
        /// the wide load wait on narrow stores. Returns the ciphertext, zero-padded for
        /// GHASH (SP 800-38D §6.4).
        #[inline]
        #[target_feature(enable = $feat)]
        fn xor_partial<const DECRYPT: bool>(chunk: &mut [u8], ks: $V) -> $V {
            let len = chunk.len();
            let mut blocks = [_mm_setzero_si128(); W];
            let mut keep = [_mm_setzero_si128(); W];
            for (j, (b, keep)) in blocks.iter_mut().zip(&mut keep).enumerate() {
                let at = 16 * j;
                if at >= len {
                    break;
                }
                let r = (len - at).min(16);
                *b = x128::from_u128(super::read_u128(&chunk[at..at + r]));
                *keep = x128::from_u128(if r == 16 {
                    u128::MAX
                } else {
                    (1u128 << (8 * r)) - 1
                });
            }
            let input = from_blocks(blocks);
            let output = xor(input, ks);
            for (j, b) in to_blocks(output).iter().enumerate() {
                let at = 16 * j;
                if at >= len {
                    break;
                }
                let r = (len - at).min(16);
                let mut t = [0u8; 16];
                x128::store(&mut t, *b);
                super::copy_small(&mut chunk[at..at + r], &t[..r]);
            }
            if DECRYPT {
                input
            } else {
                and(output, from_blocks(keep))
            }
        }

        /// A message short enough for one GHASH run: AAD of at most one block and
        /// AAD + text + lengths within the powers kept.
        #[inline]
        fn is_short(aad: &[u8], buf: &[u8]) -> bool {
            aad.len() <= 16 && buf.len().div_ceil(16) + 2 <= HPOW
        }

        /// `K` short messages at once: the AES rounds of all of them interleave, so their
        /// latencies overlap (the batch entry point for 64–256-byte packets), then each
        /// message's GHASH is a single sum of products with one reduction.
        #[target_feature(enable = $feat)]
        fn short<const NR: usize, const DECRYPT: bool, const K: usize>(
            k: &Keys,
            rk: &[$V; 15],
            bswap: $V,
            mut jobs: [(&[u8; 12], &[u8], &mut [u8]); K],
        ) -> [[u8; 16]; K] {
            let mut j0 = [_mm_setzero_si128(); K];
            let mut base = [zero(); K];
            let mut nv = [0usize; K];
            for (p, (nonce, _, buf)) in jobs.iter().enumerate() {
                let mut b = [0u8; 16];
                b[..12].copy_from_slice(*nonce);
                b[15] = 1;
                j0[p] = x128::load(&b);
                base[p] = bcast(x128::bswap(j0[p]));
                nv[p] = buf.len().div_ceil(VB);
            }
            // E(K, J0) for every message: independent chains the core overlaps with the
            // keystream below.
            let mut mask = [_mm_setzero_si128(); K];
            for (m, j) in mask.iter_mut().zip(&j0) {
                *m = x128::aes::<NR>(&k.rk, *j);
            }
            // Per message: the unreduced GHASH products (lo, mid, hi) of its text.
            let mut acc = [[zero(); 3]; K];
            let most = nv.iter().max().copied().unwrap_or(0);
            match most {
                0 => {}
                1 => steps::<NR, DECRYPT, K, 1>(k, rk, bswap, &base, &mut jobs, most, &mut acc),
                2 => steps::<NR, DECRYPT, K, 2>(k, rk, bswap, &base, &mut jobs, most, &mut acc),
                3 | 4 => steps::<NR, DECRYPT, K, 4>(k, rk, bswap, &base, &mut jobs, most, &mut acc),
                _ => steps::<NR, DECRYPT, K, CMAX>(k, rk, bswap, &base, &mut jobs, most, &mut acc),
            }
            let mut tags = [[0u8; 16]; K];
            for (p, (_, aad, buf)) in jobs.iter().enumerate() {
                // AAD block (H^(m+2)) and lengths block (H^1) join the text's products.
                let m = buf.len().div_ceil(16);
                let (mut lo, mut mi, mut hi) = (fold(acc[p][0]), fold(acc[p][1]), fold(acc[p][2]));
                if !aad.is_empty() {
                    let pre = x128::bswap(x128::from_u128(super::read_u128(aad)));
                    let (l, mm, h) = x128::mul_parts(pre, x128::load(&k.hp[HPOW - (m + 2)]));
                    (lo, mi, hi) = (
                        _mm_xor_si128(lo, l),
                        _mm_xor_si128(mi, mm),
                        _mm_xor_si128(hi, h),
                    );
                }
                let post = lengths(aad.len(), buf.len());
                let (l, mm, h) = x128::mul_parts(post, x128::load(&k.hp[HPOW - 1]));
                let sum = x128::reduce(
                    _mm_xor_si128(lo, l),
                    _mm_xor_si128(mi, mm),
                    _mm_xor_si128(hi, h),
                );
                x128::store(&mut tags[p], _mm_xor_si128(x128::bswap(sum), mask[p]));
            }
            tags
        }

        /// The short path's body: `C` vectors of every message per step, rounds outermost
        /// (K·C independent AES chains in registers hide the latency, and no chain is
        /// computed for a vector no message has), each vector XORed into its message and
        /// multiplied into the message's GHASH products as soon as it is out.
        #[inline]
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        fn steps<const NR: usize, const DECRYPT: bool, const K: usize, const C: usize>(
            k: &Keys,
            rk: &[$V; 15],
            bswap: $V,
            base: &[$V; K],
            jobs: &mut [(&[u8; 12], &[u8], &mut [u8]); K],
            most: usize,
            acc: &mut [[$V; 3]; K],
        ) {
            let hp = k.hp.as_flattened();
            for step in 0..most.div_ceil(C) {
                let mut x = [[zero(); C]; K];
                for (x, base) in x.iter_mut().zip(base) {
                    for (c, v) in x.iter_mut().enumerate() {
                        // Vector i, lane l: J0 + 1 + W·i + l (§7.1 step 3).
                        let i = step * C + c;
                        let ctr = add32(*base, counters((1 + W * i) as u32, 1));
                        *v = xor(shuf(ctr, bswap), rk[0]);
                    }
                }
                for r in rk.iter().take(NR).skip(1) {
                    for x in x.iter_mut() {
                        for v in x.iter_mut() {
                            *v = enc(*v, *r);
                        }
                    }
                }
                for x in x.iter_mut() {
                    for v in x.iter_mut() {
                        *v = enclast(*v, rk[NR]);
                    }
                }
                // Without this, the compiler sinks each AES chain into the branch below that
                // uses it, one after the other, and the chains no longer overlap.
                let x = core::hint::black_box(x);
                for ((x, job), acc) in x.iter().zip(jobs.iter_mut()).zip(acc.iter_mut()) {
                    let buf = &mut *job.2;
                    let len = buf.len();
                    // Text block j takes H^(m + 1 − j): the lengths block takes H^1.
                    let first = HPOW - (len.div_ceil(16) + 1);
                    for (c, v) in x.iter().enumerate() {
                        let i = step * C + c;
                        if i * VB >= len {
                            break;
                        }
                        let ks = *v;
                        let end = (i * VB + VB).min(len);
                        let ct = if let Ok(chunk) = <&mut [u8; VB]>::try_from(&mut buf[i * VB..end])
                        {
                            let input = load(chunk);
                            let output = xor(input, ks);
                            store(chunk, output);
                            if DECRYPT {
                                input
                            } else {
                                output
                            }
                        } else {
                            xor_partial::<DECRYPT>(&mut buf[i * VB..end], ks)
                        };
                        let at = (first + i * W) * 16;
                        let h = load(hp[at..at + VB].try_into().expect("padded table"));
                        let d = shuf(ct, bswap);
                        acc[0] = xor(acc[0], clmul::<0x00>(d, h));
                        acc[2] = xor(acc[2], clmul::<0x11>(d, h));
                        acc[1] = xor(acc[1], xor(clmul::<0x01>(d, h), clmul::<0x10>(d, h)));
                    }
                }
            }
        }

        #[inline]
        #[target_feature(enable = $feat)]
        fn round_keys(k: &Keys) -> [$V; 15] {
            let mut rk = [zero(); 15];
            for (v, r) in rk.iter_mut().zip(&k.rk) {
                *v = bcast(x128::load(r));
            }
            rk
        }

        /// A message of any length: whole groups with one reduction each (Horner over
        /// groups), then the tail and the lengths block in one final run.
        #[target_feature(enable = $feat)]
        fn long<const NR: usize, const DECRYPT: bool>(
            k: &Keys,
            rk: &[$V; 15],
            bswap: $V,
            nonce: &[u8; 12],
            aad: &[u8],
            buf: &mut [u8],
        ) -> [u8; 16] {
            let h1 = x128::load(&k.hp[HPOW - 1]);
            let mut j0 = [0u8; 16];
            j0[..12].copy_from_slice(nonce);
            j0[15] = 1;
            let j0 = x128::load(&j0);
            let tag_mask = x128::aes::<NR>(&k.rk, j0);
            // The first data block uses J0 + 1 (§7.1 step 3); lane l of the vector gets J0 + 1 + l.
            let mut ctr = add32(bcast(x128::bswap(j0)), counters(1, 1));
            let inc = counters(W as u32, 0);

            // Independent of the AES below, so it runs in its shadow.
            let mut acc = x128::ghash_bytes(_mm_setzero_si128(), aad, h1);

            let full = powers(k, G);
            let mut groups = buf.chunks_exact_mut(G * 16);
            for group in &mut groups {
                let ks = keystream::<NR, N>(rk, &mut ctr, inc, bswap);
                let mut ct = [zero(); N];
                for ((chunk, ks), ct) in group.chunks_exact_mut(VB).zip(ks).zip(&mut ct) {
                    let chunk: &mut [u8; VB] = chunk.try_into().expect("chunks_exact(VB)");
                    let input = load(chunk);
                    let output = xor(input, ks);
                    store(chunk, output);
                    *ct = if DECRYPT { input } else { output };
                }
                acc = ghash_run(acc, &ct, &full, bswap);
            }

            let tail = groups.into_remainder();
            let m = tail.len().div_ceil(16);
            let mut ks = [zero(); N];
            for v in ks.iter_mut().take(tail.len().div_ceil(VB)) {
                let [one] = keystream::<NR, 1>(rk, &mut ctr, inc, bswap);
                *v = one;
            }
            let mut ct = [zero(); N];
            let n = xor_tail::<DECRYPT>(tail, &ks, &mut ct);
            let text_len = buf.len();
            acc = ghash_final(k, acc, &ct[..n], m, lengths(aad.len(), text_len), bswap);
            let mut tag = [0u8; 16];
            x128::store(&mut tag, _mm_xor_si128(x128::bswap(acc), tag_mask));
            tag
        }

        /// Seal (`DECRYPT` false) or open `buf` in place; returns the full 16-byte tag
        /// (of the ciphertext, which is the input when opening).
        #[target_feature(enable = $feat)]
        pub(in super::super) unsafe fn crypt<const NR: usize, const DECRYPT: bool>(
            k: &Keys,
            nonce: &[u8; 12],
            aad: &[u8],
            buf: &mut [u8],
        ) -> [u8; 16] {
            let rk = round_keys(k);
            let bswap = bcast(x128::load(&BSWAP));
            if is_short(aad, buf) {
                let [tag] = short::<NR, DECRYPT, 1>(k, &rk, bswap, [(nonce, aad, buf)]);
                tag
            } else {
                long::<NR, DECRYPT>(k, &rk, bswap, nonce, aad, buf)
            }
        }

        /// Two messages under the same key; short ones are interleaved.
        #[target_feature(enable = $feat)]
        pub(in super::super) unsafe fn crypt2<const NR: usize, const DECRYPT: bool>(
            k: &Keys,
            a: (&[u8; 12], &[u8], &mut [u8]),
            b: (&[u8; 12], &[u8], &mut [u8]),
        ) -> [[u8; 16]; 2] {
            let rk = round_keys(k);
            let bswap = bcast(x128::load(&BSWAP));
            if is_short(a.1, a.2) && is_short(b.1, b.2) {
                short::<NR, DECRYPT, 2>(k, &rk, bswap, [a, b])
            } else {
                [
                    long::<NR, DECRYPT>(k, &rk, bswap, a.0, a.1, a.2),
                    long::<NR, DECRYPT>(k, &rk, bswap, b.0, b.1, b.2),
                ]
            }
        }
    };
}

/// 512-bit VAES + VPCLMULQDQ (AVX-512): four blocks per instruction.
pub(super) mod zmm {
    use core::arch::x86_64::*;

    macro_rules! prims {
        ($f:literal) => {
            #[inline]
            #[target_feature(enable = $f)]
            fn load(b: &[u8; 64]) -> __m512i {
                // SAFETY: `b` is 64 readable bytes; `loadu` has no alignment requirement.
                unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn store(b: &mut [u8; 64], v: __m512i) {
                // SAFETY: `b` is 64 writable bytes; `storeu` has no alignment requirement.
                unsafe { _mm512_storeu_si512(b.as_mut_ptr().cast(), v) }
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn bcast(x: __m128i) -> __m512i {
                _mm512_broadcast_i32x4(x)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn zero() -> __m512i {
                _mm512_setzero_si512()
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn xor(a: __m512i, b: __m512i) -> __m512i {
                _mm512_xor_si512(a, b)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn shuf(a: __m512i, m: __m512i) -> __m512i {
                _mm512_shuffle_epi8(a, m)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn add32(a: __m512i, b: __m512i) -> __m512i {
                _mm512_add_epi32(a, b)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn enc(a: __m512i, k: __m512i) -> __m512i {
                _mm512_aesenc_epi128(a, k)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn enclast(a: __m512i, k: __m512i) -> __m512i {
                _mm512_aesenclast_epi128(a, k)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn clmul<const I: i32>(a: __m512i, b: __m512i) -> __m512i {
                _mm512_clmulepi64_epi128::<I>(a, b)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn fold(v: __m512i) -> __m128i {
                let a = _mm_xor_si128(
                    _mm512_extracti32x4_epi32::<0>(v),
                    _mm512_extracti32x4_epi32::<1>(v),
                );
                let b = _mm_xor_si128(
                    _mm512_extracti32x4_epi32::<2>(v),
                    _mm512_extracti32x4_epi32::<3>(v),
                );
                _mm_xor_si128(a, b)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn zext(x: __m128i) -> __m512i {
                _mm512_zextsi128_si512(x)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn and(a: __m512i, b: __m512i) -> __m512i {
                _mm512_and_si512(a, b)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn from_blocks(b: [__m128i; 4]) -> __m512i {
                let v = _mm512_zextsi128_si512(b[0]);
                let v = _mm512_inserti32x4::<1>(v, b[1]);
                let v = _mm512_inserti32x4::<2>(v, b[2]);
                _mm512_inserti32x4::<3>(v, b[3])
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn to_blocks(v: __m512i) -> [__m128i; 4] {
                [
                    _mm512_extracti32x4_epi32::<0>(v),
                    _mm512_extracti32x4_epi32::<1>(v),
                    _mm512_extracti32x4_epi32::<2>(v),
                    _mm512_extracti32x4_epi32::<3>(v),
                ]
            }
        };
    }
    prims!("avx512f,avx512bw,vaes,vpclmulqdq,aes,pclmulqdq,sse2,ssse3");
    width_kernel!(
        "avx512f,avx512bw,vaes,vpclmulqdq,aes,pclmulqdq,sse2,ssse3",
        __m512i,
        4,
        4
    );
}

/// 256-bit VAES + VPCLMULQDQ with AVX2: two blocks per instruction.
pub(super) mod ymm {
    use core::arch::x86_64::*;

    macro_rules! prims {
        ($f:literal) => {
            #[inline]
            #[target_feature(enable = $f)]
            fn load(b: &[u8; 32]) -> __m256i {
                // SAFETY: `b` is 32 readable bytes; `loadu` has no alignment requirement.
                unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn store(b: &mut [u8; 32], v: __m256i) {
                // SAFETY: `b` is 32 writable bytes; `storeu` has no alignment requirement.
                unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn bcast(x: __m128i) -> __m256i {
                _mm256_broadcastsi128_si256(x)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn zero() -> __m256i {
                _mm256_setzero_si256()
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn xor(a: __m256i, b: __m256i) -> __m256i {
                _mm256_xor_si256(a, b)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn shuf(a: __m256i, m: __m256i) -> __m256i {
                _mm256_shuffle_epi8(a, m)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn add32(a: __m256i, b: __m256i) -> __m256i {
                _mm256_add_epi32(a, b)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn enc(a: __m256i, k: __m256i) -> __m256i {
                _mm256_aesenc_epi128(a, k)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn enclast(a: __m256i, k: __m256i) -> __m256i {
                _mm256_aesenclast_epi128(a, k)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn clmul<const I: i32>(a: __m256i, b: __m256i) -> __m256i {
                _mm256_clmulepi64_epi128::<I>(a, b)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn fold(v: __m256i) -> __m128i {
                _mm_xor_si128(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v))
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn zext(x: __m128i) -> __m256i {
                _mm256_zextsi128_si256(x)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn and(a: __m256i, b: __m256i) -> __m256i {
                _mm256_and_si256(a, b)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn from_blocks(b: [__m128i; 2]) -> __m256i {
                _mm256_set_m128i(b[1], b[0])
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn to_blocks(v: __m256i) -> [__m128i; 2] {
                [_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v)]
            }
        };
    }
    prims!("avx2,vaes,vpclmulqdq,aes,pclmulqdq,sse2,ssse3");
    width_kernel!(
        "avx2,vaes,vpclmulqdq,aes,pclmulqdq,sse2,ssse3",
        __m256i,
        2,
        4
    );
}

/// AES-NI + PCLMULQDQ, one block per instruction, eight blocks in flight.
pub(super) mod xmm {
    use core::arch::x86_64::*;

    macro_rules! prims {
        ($f:literal) => {
            #[inline]
            #[target_feature(enable = $f)]
            fn load(b: &[u8; 16]) -> __m128i {
                super::x128::load(b)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn store(b: &mut [u8; 16], v: __m128i) {
                super::x128::store(b, v)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn bcast(x: __m128i) -> __m128i {
                x
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn zero() -> __m128i {
                _mm_setzero_si128()
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn xor(a: __m128i, b: __m128i) -> __m128i {
                _mm_xor_si128(a, b)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn shuf(a: __m128i, m: __m128i) -> __m128i {
                _mm_shuffle_epi8(a, m)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn add32(a: __m128i, b: __m128i) -> __m128i {
                _mm_add_epi32(a, b)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn enc(a: __m128i, k: __m128i) -> __m128i {
                _mm_aesenc_si128(a, k)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn enclast(a: __m128i, k: __m128i) -> __m128i {
                _mm_aesenclast_si128(a, k)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn clmul<const I: i32>(a: __m128i, b: __m128i) -> __m128i {
                _mm_clmulepi64_si128::<I>(a, b)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn fold(v: __m128i) -> __m128i {
                v
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn zext(x: __m128i) -> __m128i {
                x
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn and(a: __m128i, b: __m128i) -> __m128i {
                _mm_and_si128(a, b)
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn from_blocks(b: [__m128i; 1]) -> __m128i {
                b[0]
            }
            #[inline]
            #[target_feature(enable = $f)]
            fn to_blocks(v: __m128i) -> [__m128i; 1] {
                [v]
            }
        };
    }
    prims!("aes,pclmulqdq,sse2,ssse3");
    width_kernel!("aes,pclmulqdq,sse2,ssse3", __m128i, 1, 8);
}
