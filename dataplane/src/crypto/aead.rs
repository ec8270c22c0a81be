//! AES-GCM (RFC 4106) and ChaCha20-Poly1305 (RFC 7634) for ESP.
//!
//! Both use a 4-byte salt taken from the end of the key material and an 8-byte explicit IV
//! in each packet; nonce = salt ‖ IV. We use the 64-bit sequence number as the IV: it is
//! unique per key by construction (the counter never wraps), which is what RFC 4106 §3.1
//! and RFC 7634 §2 require, and it needs no random source on the hot path.

use zeroize::Zeroizing;

use super::gcm::{GcmKey, GcmMessage};
use super::{aead_aad, CryptoError};
use crate::wire::esp::HEADER_LEN as ESP_HEADER_LEN;

const IV_LEN: usize = 8;
const TAG_LEN: usize = 16;
const SALT_LEN: usize = 4;

/// One message for [`Aead96::seal2`]: nonce, AAD, text sealed in place.
pub(crate) type Msg<'a> = (&'a [u8; 12], &'a [u8], &'a mut [u8]);

/// An AEAD with a 96-bit nonce and a 16-byte tag, keyed once per SA.
pub(crate) trait Aead96: Sized {
    /// `key` has the length the transform needs (checked by `SaCrypto::new`).
    fn from_key(key: &[u8]) -> Self;
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN];
    /// Two messages at once; an AEAD that can interleave them overrides this.
    fn seal2(&self, a: Msg<'_>, b: Msg<'_>) -> [[u8; TAG_LEN]; 2] {
        [self.seal(a.0, a.1, a.2), self.seal(b.0, b.1, b.2)]
    }
    fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError>;
    /// Two messages at once, each as [`Aead96::open`] would; an AEAD that can interleave
    /// them overrides this.
    fn open2(
        &self,
        a: (Msg<'_>, &[u8; TAG_LEN]),
        b: (Msg<'_>, &[u8; TAG_LEN]),
    ) -> [Result<(), CryptoError>; 2] {
        [
            self.open(a.0 .0, a.0 .1, a.0 .2, a.1),
            self.open(b.0 .0, b.0 .1, b.0 .2, b.1),
        ]
    }
}

/// AES-GCM: our engine, on the fastest path the CPU has.
impl Aead96 for GcmKey {
    fn from_key(key: &[u8]) -> Self {
        GcmKey::new(key).expect("key length checked by SaCrypto::new")
    }

    fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        GcmKey::seal(self, nonce, aad, buf).expect("ESP packets are far below GCM's limit")
    }

    fn seal2(&self, a: Msg<'_>, b: Msg<'_>) -> [[u8; TAG_LEN]; 2] {
        let mut msgs = [
            GcmMessage {
                nonce: *a.0,
                aad: a.1,
                buf: a.2,
                tag: [0; TAG_LEN],
            },
            GcmMessage {
                nonce: *b.0,
                aad: b.1,
                buf: b.2,
                tag: [0; TAG_LEN],
            },
        ];
        self.seal_batch(&mut msgs)
            .expect("ESP packets are far below GCM's limit");
        [msgs[0].tag, msgs[1].tag]
    }

    fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        GcmKey::open(self, nonce, aad, buf, tag).map_err(|_| CryptoError::IcvMismatch)
    }

    fn open2(
        &self,
        a: (Msg<'_>, &[u8; TAG_LEN]),
        b: (Msg<'_>, &[u8; TAG_LEN]),
    ) -> [Result<(), CryptoError>; 2] {
        let mut msgs = [
            GcmMessage {
                nonce: *a.0 .0,
                aad: a.0 .1,
                buf: a.0 .2,
                tag: *a.1,
            },
            GcmMessage {
                nonce: *b.0 .0,
                aad: b.0 .1,
                buf: b.0 .2,
                tag: *b.1,
            },
        ];
        let mut ok = [false; 2];
        // Interleaved like `seal2`; a message whose tag fails is zeroed, as `open` does.
        self.open_batch(&mut msgs, &mut ok);
        ok.map(|ok| {
            if ok {
                Ok(())
            } else {
                Err(CryptoError::IcvMismatch)
            }
        })
    }
}

/// ChaCha20-Poly1305: ring (BoringSSL's AVX2 assembly, chosen at run time). Measured by
/// `cargo bench -p bench --bench aead_crates`: RustCrypto `chacha20poly1305` 0.11 takes 3.7×
/// ring's time at 1420 bytes and 9.8× at 64. What it costs: ring does not zeroize its key
/// schedule on drop (our `SaKeys` bytes still are).
pub(crate) struct RingChaCha(ring::aead::LessSafeKey);

impl Aead96 for RingChaCha {
    fn from_key(key: &[u8]) -> Self {
        let k = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key)
            .expect("key length checked by SaCrypto::new");
        RingChaCha(ring::aead::LessSafeKey::new(k))
    }

    fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(*nonce),
                ring::aead::Aad::from(aad),
                buf,
            )
            .expect("ring only refuses messages above 2^38 bytes");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        self.0
            .open_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(*nonce),
                ring::aead::Aad::from(aad),
                ring::aead::Tag::from(*tag),
                buf,
                0..,
            )
            .map(|_| ())
            .map_err(|_| CryptoError::IcvMismatch)
    }
}

pub(crate) struct AeadKey<A> {
    aead: A,
    salt: Zeroizing<[u8; SALT_LEN]>,
}

/// One ESP packet to seal: `SPI | Seq | IV | payload | ICV`, the IV seed (the 64-bit
/// sequence number) and the ESN high half.
pub(crate) type EspMsg<'a> = (&'a mut [u8], u64, Option<u32>);

/// Write the IV; split off the payload and the ICV (the caller checked the length).
fn split_for_seal<'a>(esp: &'a mut [u8], iv: &[u8; IV_LEN]) -> (&'a mut [u8], &'a mut [u8]) {
    let (head, rest) = esp.split_at_mut(ESP_HEADER_LEN + IV_LEN);
    head[ESP_HEADER_LEN..].copy_from_slice(iv);
    let split = rest.len() - TAG_LEN;
    rest.split_at_mut(split)
}

impl<A: Aead96> AeadKey<A> {
    /// `material` = key ‖ salt; its length was checked by the caller.
    pub(crate) fn new(material: &[u8]) -> Self {
        let (key, salt) = material.split_at(material.len() - SALT_LEN);
        let aead = A::from_key(key);
        let mut s = Zeroizing::new([0u8; SALT_LEN]);
        s.copy_from_slice(salt);
        AeadKey { aead, salt: s }
    }

    fn nonce(&self, iv: &[u8]) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..SALT_LEN].copy_from_slice(&self.salt[..]);
        n[SALT_LEN..].copy_from_slice(iv);
        n
    }

    /// The AEAD primitive: nonce = salt ‖ `iv`, any AAD, `buf` encrypted in place.
    pub(crate) fn seal_detached(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; TAG_LEN] {
        self.aead.seal(&self.nonce(iv), aad, buf)
    }

    /// Verify `tag` and decrypt `buf` in place; nothing is decrypted if the tag fails.
    pub(crate) fn open_detached(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        self.aead.open(&self.nonce(iv), aad, buf, tag)
    }

    /// ESP (RFC 4106 §3, RFC 7634 §2): `esp` = SPI ‖ Seq ‖ IV ‖ payload ‖ ICV.
    pub(crate) fn seal(
        &self,
        esp: &mut [u8],
        iv_seed: u64,
        esn_high: Option<u32>,
    ) -> Result<(), CryptoError> {
        let mut aad = [0u8; 12];
        let aad_len = aead_aad(esp, esn_high, &mut aad);
        let iv = iv_seed.to_be_bytes();
        let (payload, icv) = split_for_seal(esp, &iv);
        let tag = self.seal_detached(&iv, &aad[..aad_len], payload);
        icv.copy_from_slice(&tag);
        Ok(())
    }

    /// Two ESP packets of this SA, sealed together (see [`Aead96::seal2`]).
    pub(crate) fn seal_pair(&self, a: EspMsg<'_>, b: EspMsg<'_>) {
        let (mut aad_a, mut aad_b) = ([0u8; 12], [0u8; 12]);
        let la = aead_aad(a.0, a.2, &mut aad_a);
        let lb = aead_aad(b.0, b.2, &mut aad_b);
        let (iv_a, iv_b) = (a.1.to_be_bytes(), b.1.to_be_bytes());
        let (nonce_a, nonce_b) = (self.nonce(&iv_a), self.nonce(&iv_b));
        let (pa, icv_a) = split_for_seal(a.0, &iv_a);
        let (pb, icv_b) = split_for_seal(b.0, &iv_b);
        let [ta, tb] = self
            .aead
            .seal2((&nonce_a, &aad_a[..la], pa), (&nonce_b, &aad_b[..lb], pb));
        icv_a.copy_from_slice(&ta);
        icv_b.copy_from_slice(&tb);
    }

    pub(crate) fn open(&self, esp: &mut [u8], esn_high: Option<u32>) -> Result<(), CryptoError> {
        let mut aad = [0u8; 12];
        let aad_len = aead_aad(esp, esn_high, &mut aad);
        let (iv, payload, tag) = split_for_open(esp)?;
        self.open_detached(&iv, &aad[..aad_len], payload, &tag)
    }

    /// Two ESP packets of this SA, opened together (see [`Aead96::open2`]); each result is
    /// what [`AeadKey::open`] would return for it.
    pub(crate) fn open_pair(
        &self,
        a: (&mut [u8], Option<u32>),
        b: (&mut [u8], Option<u32>),
    ) -> [Result<(), CryptoError>; 2] {
        let (mut aad_a, mut aad_b) = ([0u8; 12], [0u8; 12]);
        let la = aead_aad(a.0, a.1, &mut aad_a);
        let lb = aead_aad(b.0, b.1, &mut aad_b);
        let (iv_a, pa, tag_a) = match split_for_open(a.0) {
            Ok(x) => x,
            Err(e) => return [Err(e), self.open(b.0, b.1)],
        };
        let (iv_b, pb, tag_b) = match split_for_open(b.0) {
            Ok(x) => x,
            Err(e) => return [self.open_detached(&iv_a, &aad_a[..la], pa, &tag_a), Err(e)],
        };
        let (nonce_a, nonce_b) = (self.nonce(&iv_a), self.nonce(&iv_b));
        self.aead.open2(
            ((&nonce_a, &aad_a[..la], pa), &tag_a),
            ((&nonce_b, &aad_b[..lb], pb), &tag_b),
        )
    }
}

/// An ESP packet split for opening: IV, payload, ICV.
type OpenParts<'a> = ([u8; IV_LEN], &'a mut [u8], [u8; TAG_LEN]);

/// Read the IV and the ICV; split off the payload.
fn split_for_open(esp: &mut [u8]) -> Result<OpenParts<'_>, CryptoError> {
    if esp.len() < ESP_HEADER_LEN + IV_LEN + TAG_LEN {
        return Err(CryptoError::BadLength);
    }
    let (head, rest) = esp.split_at_mut(ESP_HEADER_LEN + IV_LEN);
    let iv: [u8; IV_LEN] = head[ESP_HEADER_LEN..]
        .try_into()
        .map_err(|_| CryptoError::BadLength)?;
    let split = rest.len() - TAG_LEN;
    let (payload, icv) = rest.split_at_mut(split);
    let tag: [u8; TAG_LEN] = (&*icv).try_into().map_err(|_| CryptoError::BadLength)?;
    Ok((iv, payload, tag))
}
