//! Child SA negotiation pieces (RFC 7296 §2.9, §2.17, §3.3): ESP proposals as strongSwan
//! strings, the responder's choice, traffic-selector narrowing, and the key material split.

use std::net::IpAddr;

use dataplane::crypto::{AlgorithmError, EspTransform, Integrity, SaKeys};

use super::dh::Group;
use super::kem::Method;
use super::keys::{child_keymat, child_keymat_multi, Prf};
use super::proposal::{parse_addke, parse_group, AddKe, ADDKE1, ADDKE_NONE, ADDKE_SLOTS};
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
    /// RFC 9611 per-resource Child SAs: beside the ordinary (fallback) Child SA, how many
    /// more with the same selectors we negotiate as initiator, each bound to one resource
    /// (a dataplane worker), and accept at most as responder (TS_MAX_QUEUE beyond). 0: off.
    pub per_resource: u16,
}

/// ESP protocol id in proposals.
pub const PROTO_ESP: u8 = 3;

/// One ESP proposal: a transform, the ESN choices and the key exchange groups for PFS.
///
/// As configured it lists what we offer; as chosen (in a [`super::sa::ChildSa`]) it is
/// definite: `esn` says whether the SA uses extended sequence numbers, `esn_either` is
/// false, and `groups` holds the group of the CREATE_CHILD_SA key exchange, if there was one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspProposal {
    pub transform: EspTransform,
    /// Configured: ESN is offered first (preferred). Chosen: the SA uses ESN.
    pub esn: bool,
    /// Configured: the other ESN setting is offered too (the default, and `esn-noesn`).
    pub esn_either: bool,
    /// Key exchange groups for PFS on CREATE_CHILD_SA, in order of preference.
    pub groups: Vec<Group>,
    /// `-none` among the groups: a Child SA without a key exchange is acceptable too.
    pub pfs_optional: bool,
    /// RFC 9370 §2.2.4: per additional key exchange (ADDKE1..7) the methods allowed in
    /// CREATE_CHILD_SA, `None` being NONE; empty: the type is not offered. Chosen: at most
    /// one method per slot (an empty slot runs no exchange).
    pub addke: [Vec<Option<Method>>; ADDKE_SLOTS],
}

/// Why an ESP proposal string was refused.
fn group_error(e: super::proposal::ProposalError) -> AlgorithmError {
    match e {
        super::proposal::ProposalError::Weak { name, .. } => AlgorithmError::Deprecated {
            name,
            why: "MODP groups under 2048 bits, and those with small subgroups, are MUST NOT or SHOULD NOT (RFC 8247 §2.4)",
        },
        other => AlgorithmError::Unknown(other.to_string()),
    }
}

impl std::str::FromStr for EspProposal {
    type Err = AlgorithmError;
    /// strongSwan syntax: `aes128gcm16`, `aes256-sha256-esn`, `chacha20poly1305-noesn`,
    /// `aes128gcm16-x25519` (PFS), `aes256gcm16-ecp384-modp3072` (either group),
    /// `aes128gcm16-x25519-none` (PFS optional). Without an ESN token both are offered, ESN
    /// first; `esn` / `noesn` alone offer only that; `esn-noesn` both.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut esn_tokens = Vec::new();
        let mut groups = Vec::new();
        let mut pfs_optional = false;
        let mut addke: [Vec<Option<Method>>; ADDKE_SLOTS] = Default::default();
        let mut rest = Vec::new();
        for t in s.split('-') {
            let tok = t.trim().to_ascii_lowercase();
            if let Some((slot, m)) = parse_addke(&tok).map_err(group_error)? {
                if !addke[slot].contains(&m) {
                    addke[slot].push(m);
                }
                continue;
            }
            match tok.as_str() {
                "esn" => esn_tokens.push(true),
                "noesn" => esn_tokens.push(false),
                "none" => pfs_optional = true,
                _ => match parse_group(&tok).map_err(group_error)? {
                    Some(g) if !groups.contains(&g) => groups.push(g),
                    Some(_) => {}
                    None => rest.push(t),
                },
            }
        }
        esn_tokens.dedup();
        let (esn, esn_either) = match esn_tokens.as_slice() {
            [] => (true, true),
            [one] => (*one, false),
            [first, ..] => (*first, true),
        };
        Ok(EspProposal {
            transform: EspTransform::from_proposal(&rest.join("-"))?,
            esn,
            esn_either,
            pfs_optional: pfs_optional && !groups.is_empty(),
            groups,
            addke,
        })
    }
}

impl std::fmt::Display for EspProposal {
    /// In strongSwan syntax, as configured or as chosen.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.transform)?;
        for g in &self.groups {
            write!(f, "-{}", g.name())?;
        }
        if self.pfs_optional {
            f.write_str("-none")?;
        }
        for (i, slot) in self.addke.iter().enumerate() {
            for m in slot {
                write!(f, "-ke{}_{}", i + 1, m.map_or("none", |m| m.name()))?;
            }
        }
        match (self.esn, self.esn_either) {
            (true, true) => Ok(()), // the default
            (false, true) => f.write_str("-noesn-esn"),
            (true, false) => f.write_str("-esn"),
            (false, false) => f.write_str("-noesn"),
        }
    }
}

/// What the initiator's KE payload carried, for the responder's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeOffer {
    /// IKE_AUTH: key exchange transforms are ignored (RFC 7296 §1.2), no PFS.
    Ignore,
    /// CREATE_CHILD_SA with a KE payload of this group, or none.
    Ke(Option<Group>),
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
    /// As an SA payload proposal carrying our inbound `spi`, with every choice we offer
    /// (the key exchange groups too: see [`EspProposal::without_ke`] for IKE_AUTH).
    pub fn to_wire(&self, number: u8, spi: u32) -> Proposal {
        let mut t = vec![encr_transform(self.transform)];
        if let Some(id) = integ_id(self.transform.integrity) {
            t.push(Transform {
                kind: transform::INTEG,
                id,
                key_len: None,
            });
        }
        for g in &self.groups {
            t.push(Transform {
                kind: transform::KE,
                id: g.iana(),
                key_len: None,
            });
        }
        if self.pfs_optional {
            // RFC 7296 §3.3.2: NONE (0) among the groups makes the key exchange optional.
            t.push(Transform {
                kind: transform::KE,
                id: 0,
                key_len: None,
            });
        }
        // RFC 9370 §2.2.4: the additional key exchanges, types 6..12.
        for (i, slot) in self.addke.iter().enumerate() {
            t.extend(slot.iter().map(|m| Transform {
                kind: ADDKE1 + i as u8,
                id: m.map_or(ADDKE_NONE, |m| m.iana()),
                key_len: None,
            }));
        }
        let esn = if self.esn_either {
            vec![self.esn, !self.esn]
        } else {
            vec![self.esn]
        };
        for e in esn {
            t.push(Transform {
                kind: transform::ESN,
                id: u16::from(e),
                key_len: None,
            });
        }
        Proposal {
            number,
            protocol: PROTO_ESP,
            spi: spi.to_be_bytes().to_vec(),
            transforms: t,
        }
    }

    /// The proposal as offered in IKE_AUTH: no key exchange transforms (the first Child SA
    /// takes its keys from the IKE SA's exchange, RFC 7296 §1.2; strongSwan strips them too),
    /// additional key exchanges included (RFC 9370 §2.2.4 runs them in CREATE_CHILD_SA only).
    pub fn without_ke(&self) -> EspProposal {
        EspProposal {
            groups: vec![],
            pfs_optional: false,
            addke: Default::default(),
            ..self.clone()
        }
    }

    /// Whether this proposal has additional key exchanges.
    pub fn has_addke(&self) -> bool {
        self.addke.iter().any(|s| !s.is_empty())
    }

    /// Our proposals as sent in CREATE_CHILD_SA: each as configured, followed by its twin
    /// without ADDKE transforms when every ADDKE type it has allows NONE (strongSwan 5.9.x
    /// refuses a proposal with transform types it does not know, as for IKE proposals).
    pub fn offer(ours: &[EspProposal]) -> Vec<EspProposal> {
        ours.iter()
            .flat_map(|p| {
                let optional = p.addke.iter().all(|s| s.is_empty() || s.contains(&None));
                let twin = (p.has_addke() && optional).then(|| EspProposal {
                    addke: Default::default(),
                    ..p.clone()
                });
                std::iter::once(p.clone()).chain(twin)
            })
            .collect()
    }

    /// The additional key exchanges of a chosen proposal, in slot order.
    pub fn chosen_addke(&self) -> AddKe {
        std::array::from_fn(|i| self.addke[i].first().copied().flatten())
    }

    /// The key exchange group of a chosen proposal (PFS), if any.
    pub fn group(&self) -> Option<Group> {
        self.groups.first().copied()
    }

    /// Whether a Child SA without a key exchange is acceptable.
    pub fn accepts_no_ke(&self) -> bool {
        self.groups.is_empty() || self.pfs_optional
    }

    /// Same encryption and integrity as offered in `p` (an ESP proposal with a 4-byte SPI).
    fn same_algorithms(&self, p: &Proposal) -> bool {
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
        has(encr.kind, encr.id, encr.key_len) && integ_ok
    }

    /// The ESN setting both accept, ours preferred; absent ESN transforms mean none.
    fn esn_choice(&self, p: &Proposal) -> Option<bool> {
        let offered: Vec<bool> = p
            .transforms
            .iter()
            .filter(|t| t.kind == transform::ESN)
            .map(|t| t.id == 1)
            .collect();
        let offered = if offered.is_empty() {
            vec![false]
        } else {
            offered
        };
        let ours = if self.esn_either {
            vec![self.esn, !self.esn]
        } else {
            vec![self.esn]
        };
        ours.into_iter().find(|e| offered.contains(e))
    }

    /// The key exchange choices both accept, ours in order (`None`: no key exchange).
    fn group_choices(&self, p: &Proposal) -> Vec<Option<Group>> {
        let ids: Vec<u16> = p
            .transforms
            .iter()
            .filter(|t| t.kind == transform::KE)
            .map(|t| t.id)
            .collect();
        let mut out: Vec<Option<Group>> = self
            .groups
            .iter()
            .filter(|g| ids.contains(&g.iana()))
            .map(|g| Some(*g))
            .collect();
        if self.accepts_no_ke() && (ids.is_empty() || ids.contains(&0)) {
            out.push(None);
        }
        out
    }

    /// This proposal made definite for the offered `p` with `group`, `esn` and `addke`.
    fn definite(&self, esn: bool, group: Option<Group>, addke: AddKe) -> EspProposal {
        EspProposal {
            transform: self.transform,
            esn,
            esn_either: false,
            groups: group.into_iter().collect(),
            pfs_optional: false,
            addke: std::array::from_fn(|i| addke[i].map(Some).into_iter().collect()),
        }
    }

    /// The responder's choice: the first offered proposal one of ours accepts, in the
    /// initiator's order. With a KE payload (`KeOffer::Ke`), a choice whose group is the
    /// KE's (or needs no key exchange) comes before one that would need INVALID_KE_PAYLOAD
    /// (RFC 7296 §1.3: the KE is of the group the initiator expects us to accept). Returns
    /// (proposal number, the peer's SPI, what was chosen, made definite).
    pub fn choose(
        ours: &[EspProposal],
        offered: &[Proposal],
        ke: KeOffer,
    ) -> Option<(u8, u32, EspProposal)> {
        let pick = |strict: bool| {
            offered.iter().find_map(|p| {
                ours.iter().find_map(|o| {
                    if !o.same_algorithms(p) {
                        return None;
                    }
                    let esn = o.esn_choice(p)?;
                    // RFC 7296 §1.2: IKE_AUTH runs no key exchange, additional ones neither.
                    let addke = match ke {
                        KeOffer::Ignore => [None; ADDKE_SLOTS],
                        KeOffer::Ke(_) => super::proposal::choose_addke(&o.addke, p)?,
                    };
                    let group = match ke {
                        KeOffer::Ignore => None,
                        KeOffer::Ke(k) => {
                            let choices = o.group_choices(p);
                            let fits = |c: &&Option<Group>| c.is_none() || **c == k;
                            if k.is_some() && choices.contains(&k) {
                                k
                            } else if strict {
                                *choices.iter().find(fits)?
                            } else {
                                *choices.first()?
                            }
                        }
                    };
                    let spi = u32::from_be_bytes([p.spi[0], p.spi[1], p.spi[2], p.spi[3]]);
                    if group.is_none() && addke.iter().any(Option::is_some) {
                        // RFC 9370 §2.2.4: additional key exchanges follow a KE, never alone.
                        return None;
                    }
                    Some((p.number, spi, o.definite(esn, group, addke)))
                })
            })
        };
        pick(true).or_else(|| pick(false))
    }

    /// Whether some offered proposal would be acceptable but for the key exchange (a PFS
    /// mismatch, for the plain-words error).
    pub fn pfs_only_mismatch(ours: &[EspProposal], offered: &[Proposal]) -> bool {
        offered.iter().any(|p| {
            ours.iter()
                .any(|o| o.same_algorithms(p) && o.esn_choice(p).is_some())
        })
    }

    /// Initiator: the responder's answer `p` checked against what we offered (`sent_ke`:
    /// the group of our KE payload; `KeOffer::Ignore` in IKE_AUTH). The chosen proposal,
    /// definite, or `None` if it is not one we offered (§2.7).
    pub fn accept_answer(ours: &[EspProposal], p: &Proposal, ke: KeOffer) -> Option<EspProposal> {
        let esn: Vec<bool> = p
            .transforms
            .iter()
            .filter(|t| t.kind == transform::ESN)
            .map(|t| t.id == 1)
            .collect();
        let ids: Vec<u16> = p
            .transforms
            .iter()
            .filter(|t| t.kind == transform::KE && t.id != 0)
            .map(|t| t.id)
            .collect();
        if esn.len() > 1 || ids.len() > 1 {
            return None; // §3.3.6: the answer holds one transform of each type
        }
        let mut addke: AddKe = [None; ADDKE_SLOTS];
        for (i, slot) in addke.iter_mut().enumerate() {
            let t: Vec<u16> = p
                .transforms
                .iter()
                .filter(|t| t.kind == ADDKE1 + i as u8)
                .map(|t| t.id)
                .collect();
            match t.as_slice() {
                [] | [ADDKE_NONE] => {}
                [id] => *slot = Some(Method::from_iana(*id)?),
                _ => return None,
            }
        }
        if ke == KeOffer::Ignore && addke.iter().any(Option::is_some) {
            return None; // RFC 7296 §1.2: no key exchange in IKE_AUTH
        }
        let esn = esn.first().copied().unwrap_or(false);
        ours.iter().find_map(|o| {
            if !o.same_algorithms(p) || !(esn == o.esn || o.esn_either) {
                return None;
            }
            let group = match (ke, ids.first()) {
                (KeOffer::Ignore, _) => None,
                (KeOffer::Ke(_), None) if o.accepts_no_ke() => None,
                (KeOffer::Ke(Some(g)), Some(&id)) if id == g.iana() && o.groups.contains(&g) => {
                    Some(g)
                }
                _ => return None,
            };
            // Each slot: the method we allow, or NONE where absent/NONE is acceptable.
            let fits = addke.iter().enumerate().all(|(i, m)| match m {
                Some(m) => o.addke[i].contains(&Some(*m)),
                None => {
                    ke == KeOffer::Ignore || o.addke[i].is_empty() || o.addke[i].contains(&None)
                }
            });
            if !fits || (group.is_none() && addke.iter().any(Option::is_some)) {
                return None;
            }
            Some(o.definite(esn, group, addke))
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
    // A peer's selector may end before it starts (RFC 7296 §3.13.1 does not forbid it on
    // the wire): shown as the range it says, never a prefix (found by fuzzing, ike_exchange).
    let range = match e.checked_sub(s) {
        Some(u128::MAX) => format!("{}/0", t.start),
        Some(span) if (span + 1).is_power_of_two() && s & span == 0 => {
            format!("{}/{}", t.start, width - (span + 1).trailing_zeros())
        }
        _ => format!("{}-{}", t.start, t.end),
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

/// RFC 7296 §2.17: KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr), taken as
/// initiator-to-responder encryption key, integrity key, then responder-to-initiator.
/// `pfs`: the shared secret of the CREATE_CHILD_SA key exchange, if there was one.
pub fn child_keys(
    prf: Prf,
    sk_d: &[u8],
    pfs: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    t: EspTransform,
) -> ChildKeys {
    let (e, i) = (t.encryption.key_material_len(), t.integrity.key_len());
    let km = child_keymat(prf, sk_d, pfs, ni, nr, 2 * (e + i));
    ChildKeys {
        i_to_r: SaKeys::new(&km[..e], &km[e..e + i]),
        r_to_i: SaKeys::new(&km[e + i..2 * e + i], &km[2 * e + i..]),
    }
}

/// RFC 9370 §2.2.4: KEYMAT = prf+(SK_d, SK(0) | Ni | Nr | SK(1) | ... | SK(n)), split as
/// [`child_keys`]. `secrets`: the key exchanges' shared secrets, KE transform first.
pub fn child_keys_multi(
    prf: Prf,
    sk_d: &[u8],
    secrets: &[&[u8]],
    ni: &[u8],
    nr: &[u8],
    t: EspTransform,
) -> ChildKeys {
    let (e, i) = (t.encryption.key_material_len(), t.integrity.key_len());
    let km = child_keymat_multi(prf, sk_d, secrets, ni, nr, 2 * (e + i));
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

    fn esp(s: &str) -> EspProposal {
        s.parse().unwrap()
    }

    #[test]
    fn esp_proposals_choose_and_refuse() {
        let ours = vec![esp("aes256-sha256"), esp("aes128gcm16")];
        let offered = vec![
            esp("chacha20poly1305").to_wire(1, 0x1111),
            esp("aes128gcm16-esn").to_wire(2, 0x2222),
            esp("aes128gcm16").to_wire(3, 0x3333),
        ];
        let (n, spi, p) = EspProposal::choose(&ours, &offered, KeOffer::Ignore).unwrap();
        assert_eq!(
            (n, spi),
            (2, 0x2222),
            "ESN is offered and accepted by default"
        );
        assert!(p.esn && !p.esn_either);
        let noesn = vec![esp("aes128gcm16-noesn")];
        assert!(EspProposal::choose(&noesn, &offered[1..2], KeOffer::Ignore).is_none());
        let (n, _, p) = EspProposal::choose(&noesn, &offered, KeOffer::Ignore).unwrap();
        assert_eq!(n, 3);
        assert!(!p.esn);
        assert!(EspProposal::choose(&ours, &offered[..1], KeOffer::Ignore).is_none());
        assert!("3des-sha256"
            .parse::<EspProposal>()
            .unwrap_err()
            .to_string()
            .contains("RFC 8221"));
        assert!("aes128gcm16-modp1024"
            .parse::<EspProposal>()
            .unwrap_err()
            .to_string()
            .contains("modp1024"));
    }

    #[test]
    fn esn_and_group_tokens_parse_as_strongswan() {
        let p = esp("aes128gcm16");
        assert!(p.esn && p.esn_either && p.groups.is_empty() && !p.pfs_optional);
        let p = esp("aes128gcm16-esn");
        assert!(p.esn && !p.esn_either);
        let p = esp("aes128gcm16-noesn");
        assert!(!p.esn && !p.esn_either);
        let p = esp("aes128gcm16-esn-noesn");
        assert!(p.esn && p.esn_either);
        let p = esp("aes256gcm16-ecp384-modp3072");
        assert_eq!(p.groups, vec![Group::Ecp384, Group::Modp3072]);
        assert!(!p.pfs_optional);
        let p = esp("aes128gcm16-x25519-none");
        assert_eq!(p.groups, vec![Group::Curve25519]);
        assert!(p.pfs_optional && p.accepts_no_ke());
        assert_eq!(
            esp("aes128gcm16-curve25519").groups,
            vec![Group::Curve25519]
        );
        assert_eq!(p.to_string(), "aes128gcm16-x25519-none");
        assert_eq!(
            esp("aes128gcm16-noesn-esn").to_string(),
            "aes128gcm16-noesn-esn"
        );
        // Wire form: the group, NONE, ESN then no ESN; without_ke drops the groups.
        let w = p.to_wire(1, 7);
        let ke: Vec<u16> = w
            .transforms
            .iter()
            .filter(|t| t.kind == transform::KE)
            .map(|t| t.id)
            .collect();
        assert_eq!(ke, vec![31, 0]);
        assert!(!p
            .without_ke()
            .to_wire(1, 7)
            .transforms
            .iter()
            .any(|t| t.kind == transform::KE));
    }

    #[test]
    fn the_key_exchange_group_is_chosen_as_rfc7296_1_3() {
        let ours = vec![esp("aes128gcm16-ecp256-x25519")];
        let offered = vec![esp("aes128gcm16-x25519-ecp256").to_wire(1, 9)];
        // The KE's group when both accept it, else our first (INVALID_KE_PAYLOAD follows).
        let c = |k| EspProposal::choose(&ours, &offered, k).map(|x| x.2.group());
        assert_eq!(
            c(KeOffer::Ke(Some(Group::Curve25519))),
            Some(Some(Group::Curve25519))
        );
        assert_eq!(
            c(KeOffer::Ke(Some(Group::Ecp384))),
            Some(Some(Group::Ecp256))
        );
        assert_eq!(c(KeOffer::Ke(None)), Some(Some(Group::Ecp256)));
        assert_eq!(
            c(KeOffer::Ignore),
            Some(None),
            "IKE_AUTH ignores the groups"
        );
        // No group on our side: only a proposal that allows none.
        let plain = vec![esp("aes128gcm16")];
        assert!(
            EspProposal::choose(&plain, &offered, KeOffer::Ke(Some(Group::Curve25519))).is_none()
        );
        assert!(EspProposal::pfs_only_mismatch(&plain, &offered));
        let optional = vec![esp("aes128gcm16-x25519-none").to_wire(1, 9)];
        let (_, _, p) =
            EspProposal::choose(&plain, &optional, KeOffer::Ke(Some(Group::Curve25519))).unwrap();
        assert_eq!(p.group(), None, "PFS optional on their side: none chosen");
        // The answer must be one of ours.
        let answer = esp("aes128gcm16-x25519-esn").to_wire(1, 3);
        let got = EspProposal::accept_answer(&ours, &answer, KeOffer::Ke(Some(Group::Curve25519)));
        assert_eq!(
            got.map(|p| (p.group(), p.esn)),
            Some((Some(Group::Curve25519), true))
        );
        assert!(
            EspProposal::accept_answer(&ours, &answer, KeOffer::Ke(Some(Group::Ecp256))).is_none()
        );
        assert!(EspProposal::accept_answer(&plain, &answer, KeOffer::Ke(None)).is_none());
    }

    #[test]
    fn additional_key_exchanges_in_esp_proposals() {
        use crate::ike::kem::MlKem;
        let mlkem768 = Some(Method::MlKem(MlKem::MlKem768));
        let p = esp("aes256gcm16-x25519-ke1_mlkem768");
        assert_eq!(p.groups, vec![Group::Curve25519]);
        assert_eq!(p.addke[0], vec![mlkem768]);
        assert_eq!(p.to_string(), "aes256gcm16-x25519-ke1_mlkem768");
        let w = p.to_wire(1, 7);
        assert!(w.transforms.contains(&Transform {
            kind: ADDKE1,
            id: 36,
            key_len: None
        }));
        // IKE_AUTH: no KE, no ADDKE (RFC 7296 §1.2).
        assert!(!p
            .without_ke()
            .to_wire(1, 7)
            .transforms
            .iter()
            .any(|t| t.kind >= ADDKE1));
        // Mandatory: no twin; optional: a twin without ADDKE follows.
        assert_eq!(EspProposal::offer(std::slice::from_ref(&p)).len(), 1);
        let opt = esp("aes256gcm16-x25519-ke1_mlkem768-ke1_none");
        assert_eq!(opt.addke[0], vec![mlkem768, None]);
        let offer = EspProposal::offer(std::slice::from_ref(&opt));
        assert_eq!(offer.len(), 2);
        assert!(!offer[1].has_addke());

        // Responder with ML-KEM takes it in CREATE_CHILD_SA, never in IKE_AUTH.
        let ke = KeOffer::Ke(Some(Group::Curve25519));
        let (_, _, c) =
            EspProposal::choose(std::slice::from_ref(&p), std::slice::from_ref(&w), ke).unwrap();
        assert_eq!(c.chosen_addke()[0], mlkem768);
        assert_eq!(c.to_string(), "aes256gcm16-x25519-ke1_mlkem768-esn");
        let (_, _, c2) = EspProposal::choose(
            std::slice::from_ref(&p),
            std::slice::from_ref(&w),
            KeOffer::Ignore,
        )
        .unwrap();
        assert_eq!(c2.chosen_addke(), [None; ADDKE_SLOTS]);
        // The initiator accepts the answer; an unoffered method in it is refused.
        let answer = c.to_wire(1, 9);
        let got = EspProposal::accept_answer(std::slice::from_ref(&p), &answer, ke).unwrap();
        assert_eq!(got.chosen_addke()[0], mlkem768);
        let plain = esp("aes256gcm16-x25519");
        assert!(EspProposal::accept_answer(std::slice::from_ref(&plain), &answer, ke).is_none());
        // Mandatory ML-KEM against a classic peer: nothing in common, either way round.
        assert!(
            EspProposal::choose(std::slice::from_ref(&p), &[plain.to_wire(1, 3)], ke).is_none()
        );
        assert!(EspProposal::choose(std::slice::from_ref(&plain), &[w], ke).is_none());
        // `ke1_none` against a classic peer: classic either way round.
        let (_, _, c) =
            EspProposal::choose(std::slice::from_ref(&opt), &[plain.to_wire(1, 3)], ke).unwrap();
        assert_eq!(c.chosen_addke(), [None; ADDKE_SLOTS]);
        let (_, _, c) =
            EspProposal::choose(std::slice::from_ref(&plain), &[opt.to_wire(1, 3)], ke).unwrap();
        assert_eq!(c.chosen_addke(), [None; ADDKE_SLOTS]);
        assert!(
            EspProposal::accept_answer(std::slice::from_ref(&opt), &c.to_wire(1, 3), ke).is_some()
        );
        // Bad tokens.
        assert!("aes256gcm16-x25519-ke8_mlkem768"
            .parse::<EspProposal>()
            .is_err());
        assert!("aes256gcm16-x25519-ke1_modp1024"
            .parse::<EspProposal>()
            .unwrap_err()
            .to_string()
            .contains("modp1024"));
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

    /// A peer's selector whose end lies before its start (fuzz/regressions/ike_exchange):
    /// shown as the range it says; it used to overflow computing the prefix length.
    #[test]
    fn an_inverted_selector_is_shown_not_a_panic() {
        let mut t = ts("10.1.0.1");
        t.end = "10.1.0.0".parse().unwrap();
        assert_eq!(show_ts(&t), "10.1.0.1-10.1.0.0");
        let mut t = ts("2001:db8::ff");
        t.end = "::".parse().unwrap();
        assert_eq!(show_ts(&t), "2001:db8::ff-::");
        assert!(narrow(&[t], &[ts("::/0")]).is_empty());
    }

    #[test]
    fn child_keys_multi_is_rfc9370_keymat_and_rfc7296_with_one_secret() {
        let t: EspTransform = "aes256gcm16".parse().unwrap();
        let (sk0, sk1) = ([4u8; 32], [5u8; 32]);
        let one = child_keys_multi(Prf::HmacSha384, &[1; 48], &[&sk0], &[2; 32], &[3; 32], t);
        let classic = child_keys(Prf::HmacSha384, &[1; 48], Some(&sk0), &[2; 32], &[3; 32], t);
        assert_eq!(one.i_to_r.encryption[..], classic.i_to_r.encryption[..]);
        assert_eq!(one.r_to_i.encryption[..], classic.r_to_i.encryption[..]);
        // Two secrets: prf+(SK_d, SK(0) | Ni | Nr | SK(1)), split as §2.17.
        let two = child_keys_multi(
            Prf::HmacSha384,
            &[1; 48],
            &[&sk0, &sk1],
            &[2; 32],
            &[3; 32],
            t,
        );
        let mut seed = sk0.to_vec();
        seed.extend_from_slice(&[2; 32]);
        seed.extend_from_slice(&[3; 32]);
        seed.extend_from_slice(&sk1);
        let e = t.encryption.key_material_len();
        let km = Prf::HmacSha384.prf_plus(&[1; 48], &seed, 2 * e);
        assert_eq!(&two.i_to_r.encryption[..], &km[..e]);
        assert_eq!(&two.r_to_i.encryption[..], &km[e..]);
        assert_ne!(two.i_to_r.encryption[..], one.i_to_r.encryption[..]);
    }

    #[test]
    fn child_keys_split_in_rfc_order() {
        let t: EspTransform = "aes256-sha256".parse().unwrap();
        let k = child_keys(Prf::HmacSha256, &[1; 32], None, &[2; 32], &[3; 32], t);
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
