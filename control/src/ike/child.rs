//! Child SA negotiation pieces (RFC 7296 §2.9, §2.17, §3.3): ESP proposals as strongSwan
//! strings, the responder's choice, traffic-selector narrowing, and the key material split.

use std::net::IpAddr;

use dataplane::crypto::{AlgorithmError, EspTransform, Integrity, SaKeys};

use super::keys::{child_keymat, Prf};
use super::wire::{transform, Proposal, Transform, Ts};

/// One Child SA of a connection, as configured (swanctl's `children` section).
#[derive(Debug, Clone, PartialEq)]
pub struct ChildCfg {
    pub name: String,
    /// ESP proposals, in our order of preference.
    pub esp: Vec<EspProposal>,
    /// The configured (widest) selectors; the negotiated ones may be narrower (§2.9).
    pub local_ts: Vec<Ts>,
    pub remote_ts: Vec<Ts>,
    pub transport: bool,
    /// When its Child SAs are rekeyed and expire (time here; bytes and packets in the
    /// dataplane).
    pub lifetime: super::lifetime::ChildLifetime,
}

/// ESP protocol id in proposals.
pub const PROTO_ESP: u8 = 3;

/// One ESP proposal: a transform and whether ESN is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspProposal {
    pub transform: EspTransform,
    pub esn: bool,
}

impl std::str::FromStr for EspProposal {
    type Err = AlgorithmError;
    /// `aes128gcm16`, `aes256-sha256-esn`, `chacha20poly1305-noesn` (strongSwan syntax;
    /// no ESN unless asked, as strongSwan).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut esn = false;
        let rest: Vec<&str> = s
            .split('-')
            .filter(|t| match t.trim().to_ascii_lowercase().as_str() {
                "esn" => {
                    esn = true;
                    false
                }
                "noesn" => false,
                _ => true,
            })
            .collect();
        Ok(EspProposal {
            transform: EspTransform::from_proposal(&rest.join("-"))?,
            esn,
        })
    }
}

fn encr_transform(t: EspTransform) -> Transform {
    use dataplane::crypto::Encryption::*;
    let (id, bits) = match t.encryption {
        AesGcm128 => (20, Some(128)),
        AesGcm256 => (20, Some(256)),
        ChaCha20Poly1305 => (28, None),
        AesCbc128 => (12, Some(128)),
        AesCbc256 => (12, Some(256)),
    };
    Transform {
        kind: transform::ENCR,
        id,
        key_len: bits,
    }
}

fn integ_id(i: Integrity) -> Option<u16> {
    match i {
        Integrity::HmacSha256_128 => Some(12),
        Integrity::HmacSha384_192 => Some(13),
        Integrity::HmacSha512_256 => Some(14),
        Integrity::None => None,
    }
}

impl EspProposal {
    /// As an SA payload proposal carrying our inbound `spi`.
    pub fn to_wire(&self, number: u8, spi: u32) -> Proposal {
        let mut t = vec![encr_transform(self.transform)];
        if let Some(id) = integ_id(self.transform.integrity) {
            t.push(Transform {
                kind: transform::INTEG,
                id,
                key_len: None,
            });
        }
        t.push(Transform {
            kind: transform::ESN,
            id: u16::from(self.esn),
            key_len: None,
        });
        Proposal {
            number,
            protocol: PROTO_ESP,
            spi: spi.to_be_bytes().to_vec(),
            transforms: t,
        }
    }

    /// Whether the offered proposal is exactly this one (same encryption, integrity; ESN
    /// among its choices).
    fn accepts(&self, p: &Proposal) -> bool {
        if p.protocol != PROTO_ESP || p.spi.len() != 4 {
            return false;
        }
        let encr = encr_transform(self.transform);
        let has = |k: u8, id: u16, len: Option<u16>| {
            p.transforms
                .iter()
                .any(|t| t.kind == k && t.id == id && t.key_len == len)
        };
        let integ_ok = match integ_id(self.transform.integrity) {
            Some(id) => has(transform::INTEG, id, None),
            None => !p
                .transforms
                .iter()
                .any(|t| t.kind == transform::INTEG && t.id != 0),
        };
        let esn_offered: Vec<u16> = p
            .transforms
            .iter()
            .filter(|t| t.kind == transform::ESN)
            .map(|t| t.id)
            .collect();
        let esn_ok = if esn_offered.is_empty() {
            !self.esn
        } else {
            esn_offered.contains(&u16::from(self.esn))
        };
        has(encr.kind, encr.id, encr.key_len) && integ_ok && esn_ok
    }

    /// The responder's choice: the first offered proposal one of ours accepts, in the
    /// initiator's order. Returns (proposal number, the peer's SPI, what was chosen).
    pub fn choose(ours: &[EspProposal], offered: &[Proposal]) -> Option<(u8, u32, EspProposal)> {
        offered.iter().find_map(|p| {
            ours.iter().find(|o| o.accepts(p)).map(|o| {
                let spi = u32::from_be_bytes([p.spi[0], p.spi[1], p.spi[2], p.spi[3]]);
                (p.number, spi, *o)
            })
        })
    }
}

fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn addr(v4: bool, n: u128) -> IpAddr {
    if v4 {
        IpAddr::V4((n as u32).into())
    } else {
        IpAddr::V6(n.into())
    }
}

/// The intersection of two selectors, if any (RFC 7296 §2.9).
pub fn intersect(a: &Ts, b: &Ts) -> Option<Ts> {
    if a.start.is_ipv4() != b.start.is_ipv4() {
        return None;
    }
    let protocol = match (a.protocol, b.protocol) {
        (0, p) | (p, 0) => p,
        (p, q) if p == q => p,
        _ => return None,
    };
    let (s, e) = (
        bits(a.start).max(bits(b.start)),
        bits(a.end).min(bits(b.end)),
    );
    let (ps, pe) = (a.start_port.max(b.start_port), a.end_port.min(b.end_port));
    if s > e || ps > pe {
        return None;
    }
    let v4 = a.start.is_ipv4();
    Some(Ts {
        protocol,
        start_port: ps,
        end_port: pe,
        start: addr(v4, s),
        end: addr(v4, e),
    })
}

/// RFC 7296 §2.9: narrow what the peer proposed to what our policy allows. Empty means
/// TS_UNACCEPTABLE.
pub fn narrow(proposed: &[Ts], allowed: &[Ts]) -> Vec<Ts> {
    let mut out = Vec::new();
    for p in proposed {
        for a in allowed {
            if let Some(i) = intersect(p, a) {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// Whether every selector in `got` lies within one of `offered` (the initiator checks the
/// responder's narrowing).
pub fn within(got: &[Ts], offered: &[Ts]) -> bool {
    !got.is_empty()
        && got
            .iter()
            .all(|g| offered.iter().any(|o| intersect(g, o) == Some(*g)))
}

/// A selector as an operator writes it: `10.1.0.0/16`, `10.1.0.1-10.1.0.9`, with
/// `[proto/port]` when narrowed.
pub fn show_ts(t: &Ts) -> String {
    let v4 = t.start.is_ipv4();
    let (s, e) = (bits(t.start), bits(t.end));
    let width = if v4 { 32 } else { 128 };
    let span = e - s;
    let range = if span == u128::MAX || ((span + 1).is_power_of_two() && s & span == 0) {
        let len = if span == u128::MAX {
            0
        } else {
            width - (span + 1).trailing_zeros()
        };
        format!("{}/{len}", t.start)
    } else {
        format!("{}-{}", t.start, t.end)
    };
    if t.protocol == 0 && t.start_port == 0 && t.end_port == u16::MAX {
        range
    } else if t.start_port == t.end_port {
        format!("{range}[{}/{}]", t.protocol, t.start_port)
    } else {
        format!("{range}[{}/{}-{}]", t.protocol, t.start_port, t.end_port)
    }
}

/// Parse `10.1.0.0/16` (or an address) into a selector for any protocol and port.
pub fn parse_ts(s: &str) -> Option<Ts> {
    let t = dataplane::esp::TrafficSelector::prefix(s)
        .ok()
        .or_else(|| {
            let a: IpAddr = s.parse().ok()?;
            dataplane::esp::TrafficSelector::new(a, a, 0, (0, u16::MAX)).ok()
        })?;
    Some(Ts {
        protocol: t.protocol,
        start_port: t.start_port,
        end_port: t.end_port,
        start: t.start,
        end: t.end,
    })
}

/// The keys of both directions of a Child SA.
pub struct ChildKeys {
    /// Initiator → responder.
    pub i_to_r: SaKeys,
    /// Responder → initiator.
    pub r_to_i: SaKeys,
}

/// RFC 7296 §2.17: KEYMAT = prf+(SK_d, Ni | Nr), taken as initiator-to-responder
/// encryption key, integrity key, then responder-to-initiator.
pub fn child_keys(prf: Prf, sk_d: &[u8], ni: &[u8], nr: &[u8], t: EspTransform) -> ChildKeys {
    let (e, i) = (t.encryption.key_material_len(), t.integrity.key_len());
    let km = child_keymat(prf, sk_d, None, ni, nr, 2 * (e + i));
    ChildKeys {
        i_to_r: SaKeys::new(&km[..e], &km[e..e + i]),
        r_to_i: SaKeys::new(&km[e + i..2 * e + i], &km[2 * e + i..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Ts {
        parse_ts(s).unwrap()
    }

    #[test]
    fn esp_proposals_choose_and_refuse() {
        let ours: Vec<EspProposal> = ["aes256-sha256", "aes128gcm16"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let offered = vec![
            "chacha20poly1305"
                .parse::<EspProposal>()
                .unwrap()
                .to_wire(1, 0x1111),
            "aes128gcm16-esn"
                .parse::<EspProposal>()
                .unwrap()
                .to_wire(2, 0x2222),
            "aes128gcm16"
                .parse::<EspProposal>()
                .unwrap()
                .to_wire(3, 0x3333),
        ];
        let (n, spi, p) = EspProposal::choose(&ours, &offered).unwrap();
        assert_eq!(
            (n, spi),
            (3, 0x3333),
            "ESN only offered in 2, we do not do it"
        );
        assert!(!p.esn);
        assert!(EspProposal::choose(&ours, &offered[..1]).is_none());
        assert!("3des-sha256"
            .parse::<EspProposal>()
            .unwrap_err()
            .to_string()
            .contains("RFC 8221"));
    }

    #[test]
    fn narrowing_follows_rfc7296_2_9() {
        let proposed = vec![ts("10.1.0.0/16")];
        assert_eq!(
            narrow(&proposed, &[ts("10.1.2.0/24")]),
            vec![ts("10.1.2.0/24")]
        );
        assert!(narrow(&proposed, &[ts("10.9.0.0/16")]).is_empty());
        assert!(narrow(&proposed, &[ts("2001:db8::/32")]).is_empty());
        let mut web = ts("10.0.0.0/8");
        web.protocol = 6;
        web.start_port = 443;
        web.end_port = 443;
        let n = narrow(&proposed, &[web]);
        assert_eq!(show_ts(&n[0]), "10.1.0.0/16[6/443]");
        assert!(within(&n, &proposed));
        assert!(!within(&[ts("10.0.0.0/8")], &proposed));
        assert_eq!(show_ts(&ts("0.0.0.0/0")), "0.0.0.0/0");
        assert_eq!(show_ts(&ts("::/0")), "::/0");
    }

    #[test]
    fn child_keys_split_in_rfc_order() {
        let t: EspTransform = "aes256-sha256".parse().unwrap();
        let k = child_keys(Prf::HmacSha256, &[1; 32], &[2; 32], &[3; 32], t);
        let km = child_keymat(
            Prf::HmacSha256,
            &[1; 32],
            None,
            &[2; 32],
            &[3; 32],
            2 * (32 + 32),
        );
        assert_eq!(&k.i_to_r.encryption[..], &km[..32]);
        assert_eq!(&k.i_to_r.integrity[..], &km[32..64]);
        assert_eq!(&k.r_to_i.encryption[..], &km[64..96]);
        assert_eq!(&k.r_to_i.integrity[..], &km[96..128]);
    }
}
