//! Names for the algorithms a peer may offer, in the IANA "IKEv2 Parameters" registry
//! (RFC 7296 §3.3.2), as strongSwan's proposal strings spell them — including those we do not
//! implement, so an operator reads `3des-sha1-modp1024` rather than `encr3-integ2-group2` —
//! and, for the ones the current RFCs retire, which RFC retires them and why:
//! RFC 8247 (IKEv2: §2.1 encryption, §2.2 PRF, §2.3 integrity, §2.4 key exchange) and
//! RFC 8221 (ESP and AH: §5 encryption, §6 integrity).

use super::wire::{transform, Proposal, Transform};

/// Protocol ids in SA payload proposals (RFC 7296 §3.3.1).
pub const PROTO_IKE: u8 = 1;
pub const PROTO_AH: u8 = 2;
pub const PROTO_ESP: u8 = 3;

/// strongSwan's name for an encryption transform (ENCR, type 1), with its key length.
pub fn encr(id: u16, key_len: Option<u16>) -> String {
    let bits = key_len.map(|b| b.to_string()).unwrap_or_default();
    match id {
        1 => "des_iv64".into(),
        2 => "des".into(),
        3 => "3des".into(),
        4 => "rc5".into(),
        5 => "idea".into(),
        6 => "cast".into(),
        7 => "blowfish".into(),
        8 => "3idea".into(),
        9 => "des_iv32".into(),
        11 => "null".into(),
        12 => format!("aes{bits}"),
        13 => format!("aes{bits}ctr"),
        14 => format!("aes{bits}ccm8"),
        15 => format!("aes{bits}ccm12"),
        16 => format!("aes{bits}ccm16"),
        18 => format!("aes{bits}gcm8"),
        19 => format!("aes{bits}gcm12"),
        20 => format!("aes{bits}gcm16"),
        21 => format!("aes{bits}gmac"),
        23 => format!("camellia{bits}"),
        24 => format!("camellia{bits}ctr"),
        25 => format!("camellia{bits}ccm8"),
        26 => format!("camellia{bits}ccm12"),
        27 => format!("camellia{bits}ccm16"),
        28 => "chacha20poly1305".into(),
        id => format!("encr{id}"),
    }
}

/// strongSwan's name for a PRF (type 2).
pub fn prf(id: u16) -> String {
    match id {
        1 => "prfmd5".into(),
        2 => "prfsha1".into(),
        3 => "prftiger".into(),
        4 => "prfaesxcbc".into(),
        5 => "prfsha256".into(),
        6 => "prfsha384".into(),
        7 => "prfsha512".into(),
        8 => "prfaescmac".into(),
        id => format!("prf{id}"),
    }
}

/// strongSwan's name for an integrity transform (type 3).
pub fn integ(id: u16) -> String {
    match id {
        1 => "md5".into(),
        2 => "sha1".into(),
        3 => "desmac".into(),
        4 => "kpdkmd5".into(),
        5 => "aesxcbc".into(),
        6 => "md5_128".into(),
        7 => "sha1_160".into(),
        8 => "aescmac".into(),
        9 => "aes128gmac".into(),
        10 => "aes192gmac".into(),
        11 => "aes256gmac".into(),
        12 => "sha256".into(),
        13 => "sha384".into(),
        14 => "sha512".into(),
        id => format!("integ{id}"),
    }
}

/// strongSwan's name for a key exchange method (type 4; RFC 9370's ADDKE types too).
pub fn ke(id: u16) -> String {
    match id {
        0 => "none".into(),
        1 => "modp768".into(),
        2 => "modp1024".into(),
        5 => "modp1536".into(),
        14 => "modp2048".into(),
        15 => "modp3072".into(),
        16 => "modp4096".into(),
        17 => "modp6144".into(),
        18 => "modp8192".into(),
        19 => "ecp256".into(),
        20 => "ecp384".into(),
        21 => "ecp521".into(),
        22 => "modp1024s160".into(),
        23 => "modp2048s224".into(),
        24 => "modp2048s256".into(),
        25 => "ecp192".into(),
        26 => "ecp224".into(),
        27 => "ecp224bp".into(),
        28 => "ecp256bp".into(),
        29 => "ecp384bp".into(),
        30 => "ecp512bp".into(),
        31 => "x25519".into(),
        32 => "x448".into(),
        35 => "mlkem512".into(),
        36 => "mlkem768".into(),
        37 => "mlkem1024".into(),
        id => format!("ke{id}"),
    }
}

/// A transform by name, whatever its type.
pub fn name(t: &Transform) -> String {
    match t.kind {
        transform::ENCR => encr(t.id, t.key_len),
        transform::PRF => prf(t.id),
        transform::INTEG => integ(t.id),
        transform::KE => ke(t.id),
        transform::ESN if t.id == 1 => "esn".into(),
        transform::ESN => "noesn".into(),
        k => format!("t{k}:{}", t.id),
    }
}

/// Why the RFCs retire a transform offered for `protocol` (IKE, ESP or AH), or `None` if it
/// is not retired.
pub fn retired(protocol: u8, t: &Transform) -> Option<&'static str> {
    let ike = protocol == PROTO_IKE;
    Some(match (t.kind, t.id) {
        (transform::ENCR, 1 | 2 | 9) if ike => "DES is MUST NOT: a 56-bit key (RFC 8247 §2.1)",
        (transform::ENCR, 1 | 2 | 9) => "DES is MUST NOT: a 56-bit key (RFC 8221 §5)",
        (transform::ENCR, 3) if ike => {
            "3DES is MAY at best and being phased out: its 64-bit block is unsafe at today's volumes (RFC 8247 §2.1)"
        }
        (transform::ENCR, 3) => {
            "3DES is SHOULD NOT: its 64-bit block is unsafe at today's volumes (RFC 8221 §5)"
        }
        (transform::ENCR, 4..=8) if ike => {
            "RC5, IDEA, CAST, Blowfish and 3IDEA are MUST NOT (RFC 8247 §2.1)"
        }
        (transform::ENCR, 7 | 8) => "Blowfish and 3IDEA are MUST NOT (RFC 8221 §5)",
        (transform::ENCR, 11) if ike => "NULL encryption is MUST NOT for IKE (RFC 8247 §2.1)",
        (transform::PRF, 1) => "PRF_HMAC_MD5 is MUST NOT (RFC 8247 §2.2)",
        (transform::PRF, 2) => "PRF_HMAC_SHA1 is MUST-, being phased out (RFC 8247 §2.2)",
        (transform::INTEG, 1) if ike => "HMAC-MD5-96 is MUST NOT (RFC 8247 §2.3)",
        (transform::INTEG, 1) => "HMAC-MD5-96 is MUST NOT (RFC 8221 §6)",
        (transform::INTEG, 2) if ike => {
            "HMAC-SHA1-96 integrity is MUST-, being phased out (RFC 8247 §2.3)"
        }
        (transform::INTEG, 2) => "HMAC-SHA1-96 integrity is MUST-, being phased out (RFC 8221 §6)",
        (transform::INTEG, 3 | 4) if ike => "DES-MAC and KPDK-MD5 are MUST NOT (RFC 8247 §2.3)",
        (transform::INTEG, 3 | 4) => "DES-MAC and KPDK-MD5 are MUST NOT (RFC 8221 §6)",
        (transform::KE, 1) => "MODP-768 is MUST NOT (RFC 8247 §2.4)",
        (transform::KE, 2) => "MODP-1024 is SHOULD NOT: too small (RFC 8247 §2.4)",
        (transform::KE, 5) => "MODP-1536 is SHOULD NOT: too small (RFC 8247 §2.4)",
        (transform::KE, 22..=24) => {
            "MODP groups with small subgroups (22-24) are SHOULD NOT (RFC 8247 §2.4)"
        }
        _ => return None,
    })
}

/// The protocol of a proposal as a word.
pub fn protocol(id: u8) -> String {
    match id {
        PROTO_IKE => "IKE".into(),
        PROTO_AH => "AH".into(),
        PROTO_ESP => "ESP".into(),
        p => format!("protocol {p}"),
    }
}

/// Proposals as the operator would write them, joined by ", ", followed by what is weak in
/// them and which RFC says so: `3des-sha1-prfsha1-modp1024 (weak: 3des: ...; modp1024: ...)`.
/// An AH proposal is marked `AH:`.
pub fn offered(props: &[Proposal], describe: impl Fn(&Proposal) -> String) -> String {
    let list = props
        .iter()
        .map(|p| match p.protocol {
            PROTO_AH => format!("AH:{}", describe(p)),
            _ => describe(p),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut weak: Vec<String> = Vec::new();
    for p in props {
        for t in &p.transforms {
            if let Some(why) = retired(p.protocol, t) {
                let line = format!("{}: {why}", name(t));
                if !weak.contains(&line) {
                    weak.push(line);
                }
            }
        }
    }
    if weak.is_empty() {
        list
    } else {
        format!("{list} (weak: {})", weak.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(kind: u8, id: u16, key_len: Option<u16>) -> Transform {
        Transform { kind, id, key_len }
    }

    #[test]
    fn weak_algorithms_are_named_with_the_rfc_that_retires_them() {
        let ike = Proposal {
            number: 1,
            protocol: PROTO_IKE,
            spi: vec![],
            transforms: vec![
                t(transform::ENCR, 3, None),
                t(transform::INTEG, 2, None),
                t(transform::PRF, 2, None),
                t(transform::KE, 2, None),
            ],
        };
        let names: Vec<String> = ike.transforms.iter().map(name).collect();
        assert_eq!(names, ["3des", "sha1", "prfsha1", "modp1024"]);
        let s = offered(std::slice::from_ref(&ike), |p| {
            p.transforms.iter().map(name).collect::<Vec<_>>().join("-")
        });
        assert!(s.starts_with("3des-sha1-prfsha1-modp1024 (weak: "), "{s}");
        for want in [
            "3des: 3DES",
            "RFC 8247 §2.1",
            "sha1: HMAC-SHA1-96",
            "RFC 8247 §2.3",
            "prfsha1: PRF_HMAC_SHA1",
            "modp1024: MODP-1024 is SHOULD NOT",
            "RFC 8247 §2.4",
        ] {
            assert!(s.contains(want), "{want} in {s}");
        }
        // The same algorithms for ESP cite RFC 8221.
        let esp = Proposal {
            protocol: PROTO_ESP,
            transforms: vec![t(transform::ENCR, 2, None), t(transform::INTEG, 2, None)],
            ..ike.clone()
        };
        let s = offered(&[esp], |p| {
            p.transforms.iter().map(name).collect::<Vec<_>>().join("-")
        });
        assert!(
            s.contains("des: DES is MUST NOT") && s.contains("RFC 8221 §5"),
            "{s}"
        );
        assert!(s.contains("RFC 8221 §6"), "{s}");
        // Modern ones carry no note; unknown ones keep their number.
        assert_eq!(retired(PROTO_IKE, &t(transform::ENCR, 20, Some(256))), None);
        assert_eq!(encr(20, Some(256)), "aes256gcm16");
        assert_eq!(ke(31), "x25519");
        assert_eq!(encr(99, None), "encr99");
    }
}
