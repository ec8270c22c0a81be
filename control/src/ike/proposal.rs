//! IKE SA proposals: strongSwan proposal strings (`aes128gcm16-prfsha256-x25519`,
//! `aes256-sha256-modp2048`) to and from SA payload proposals, and the responder's choice
//! (RFC 7296 §2.7, §3.3). Weak algorithms are refused naming RFC 8247.

use std::fmt;
use std::str::FromStr;

use dataplane::crypto::algorithm::{parse_encryption, parse_integrity};
use dataplane::crypto::{AlgorithmError, Encryption, Integrity};

use super::algnames;
use super::dh::Group;
use super::kem::Method;
use super::keys::Prf;
use super::wire::{transform, Proposal, Transform};

/// IKE protocol id in proposals (RFC 7296 §3.3.1).
pub const PROTO_IKE: u8 = 1;

/// RFC 9370 §2.2.1: transform types 6..12 are the Additional Key Exchanges 1..7.
pub const ADDKE1: u8 = 6;
/// How many additional key exchanges a proposal can carry.
pub const ADDKE_SLOTS: usize = 7;
/// RFC 9370 §2.2.1: transform ID 0 of an ADDKE type is NONE (this one may be skipped).
pub const ADDKE_NONE: u16 = 0;

/// What each ADDKE slot of a negotiated SA holds: `None` when none runs.
pub type AddKe = [Option<Method>; ADDKE_SLOTS];

/// Why a proposal string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposalError {
    #[error("{name} is refused for IKE: {why} (RFC 8247 §2.1-§2.4)")]
    Weak { name: String, why: String },
    #[error("unknown IKE algorithm {0:?}; supported: aes128gcm16, aes256gcm16, chacha20poly1305, aes128, aes256, sha256, sha384, sha512, prfsha256, prfsha384, prfsha512, x25519, ecp256, ecp384, modp2048, modp3072")]
    Unknown(String),
    #[error("{0}")]
    Incomplete(&'static str),
}

/// One IKE proposal: alternatives per transform type, in our order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeProposal {
    pub encr: Vec<Encryption>,
    pub integ: Vec<Integrity>,
    pub prf: Vec<Prf>,
    pub groups: Vec<Group>,
    /// RFC 9370: per additional key exchange (ADDKE1..7) the methods allowed, `None` being
    /// NONE (the exchange may be skipped); an empty list: the type is not offered.
    pub addke: [Vec<Option<Method>>; ADDKE_SLOTS],
}

/// What was chosen for an IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeSuite {
    pub encr: Encryption,
    /// `Integrity::None` with an AEAD.
    pub integ: Integrity,
    pub prf: Prf,
    pub group: Group,
    /// The additional key exchanges to run, in slot order (RFC 9370 §2.2.1).
    pub addke: AddKe,
}

fn weak(e: AlgorithmError) -> ProposalError {
    match e {
        AlgorithmError::Deprecated { name, why } => ProposalError::Weak {
            name,
            why: why.to_string(),
        },
        other => ProposalError::Unknown(other.to_string()),
    }
}

fn is_aead(e: Encryption) -> bool {
    !matches!(e, Encryption::AesCbc128 | Encryption::AesCbc256)
}

impl FromStr for IkeProposal {
    type Err = ProposalError;

    /// strongSwan's syntax: algorithms joined by `-`, several of a kind allowed. Without a
    /// `prf…` token the integrity algorithms double as PRFs (as strongSwan does).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut p = IkeProposal {
            encr: vec![],
            integ: vec![],
            prf: vec![],
            groups: vec![],
            addke: Default::default(),
        };
        for tok in s.split('-').map(|t| t.trim().to_ascii_lowercase()) {
            let prf = match tok.as_str() {
                "prfsha256" => Some(Prf::HmacSha256),
                "prfsha384" => Some(Prf::HmacSha384),
                "prfsha512" => Some(Prf::HmacSha512),
                "prfsha1" | "prfmd5" => {
                    return Err(ProposalError::Weak {
                        name: tok,
                        why: "SHA-1 and MD5 PRFs are not to be used".into(),
                    })
                }
                _ => None,
            };
            if let Some((slot, m)) = parse_addke(&tok)? {
                p.addke[slot].push(m);
                continue;
            }
            let group = parse_group(&tok)?;
            if let Some(f) = prf {
                p.prf.push(f);
            } else if let Some(g) = group {
                p.groups.push(g);
            } else if let Some(e) = parse_encryption(&tok).map_err(weak)? {
                p.encr.push(e);
            } else if let Some(i) = parse_integrity(&tok).map_err(weak)? {
                p.integ.push(i);
            } else {
                return Err(ProposalError::Unknown(tok));
            }
        }
        if p.encr.is_empty() {
            return Err(ProposalError::Incomplete(
                "an IKE proposal needs an encryption algorithm",
            ));
        }
        if p.groups.is_empty() {
            return Err(ProposalError::Incomplete(
                "an IKE proposal needs a key exchange group (x25519, ecp256, ...)",
            ));
        }
        let aead = p.encr.iter().any(|&e| is_aead(e));
        let cbc = p.encr.iter().any(|&e| !is_aead(e));
        if aead && cbc {
            return Err(ProposalError::Incomplete(
                "AEAD and non-AEAD encryption go in separate proposals",
            ));
        }
        if cbc && p.integ.is_empty() {
            return Err(ProposalError::Incomplete(
                "AES-CBC needs an integrity algorithm (sha256, ...)",
            ));
        }
        if aead && !p.integ.is_empty() {
            return Err(ProposalError::Incomplete(
                "an AEAD carries its own integrity: drop the sha token or use prfsha…",
            ));
        }
        if p.prf.is_empty() {
            p.prf = p
                .integ
                .iter()
                .map(|i| match i {
                    Integrity::HmacSha384_192 => Prf::HmacSha384,
                    Integrity::HmacSha512_256 => Prf::HmacSha512,
                    _ => Prf::HmacSha256,
                })
                .collect();
        }
        if p.prf.is_empty() {
            return Err(ProposalError::Incomplete(
                "an AEAD proposal needs a PRF (prfsha256, ...)",
            ));
        }
        Ok(p)
    }
}

/// strongSwan 6's additional key exchange token `keN_<method>` (N = 1..7, method a KE
/// method name or `none`). `Ok(None)`: not such a token.
pub fn parse_addke(tok: &str) -> Result<Option<(usize, Option<Method>)>, ProposalError> {
    let Some(rest) = tok.strip_prefix("ke") else {
        return Ok(None);
    };
    let Some((n, method)) = rest.split_once('_') else {
        return Ok(None);
    };
    let slot = match n.parse::<usize>() {
        Ok(n @ 1..=ADDKE_SLOTS) => n - 1,
        _ => {
            return Err(ProposalError::Incomplete(
                "an additional key exchange is ke1_ .. ke7_ followed by a method (ke1_mlkem768, ke1_none)",
            ))
        }
    };
    if method == "none" {
        return Ok(Some((slot, None)));
    }
    if !method.starts_with("mlkem") {
        parse_group(method)?; // refuses weak groups with the reason
    }
    match Method::from_name(method) {
        Some(m) => Ok(Some((slot, Some(m)))),
        None => Err(ProposalError::Unknown(tok.into())),
    }
}

/// A key exchange group token of a proposal string (strongSwan's names), shared by the IKE
/// and the ESP proposals (PFS). `Ok(None)`: not a group token; weak groups are refused.
pub fn parse_group(tok: &str) -> Result<Option<Group>, ProposalError> {
    Ok(match tok {
        "x25519" | "curve25519" => Some(Group::Curve25519),
        "ecp256" => Some(Group::Ecp256),
        "ecp384" => Some(Group::Ecp384),
        "modp2048" => Some(Group::Modp2048),
        "modp3072" => Some(Group::Modp3072),
        "mlkem512" | "mlkem768" | "mlkem1024" => {
            return Err(ProposalError::Incomplete(
                "ML-KEM goes in an additional key exchange here (ke1_mlkem768), with a classic group as the first key exchange",
            ))
        }
        "modp768" | "modp1024" | "modp1536" | "modp1024s160" | "modp2048s224"
        | "modp2048s256" => {
            return Err(ProposalError::Weak {
                name: tok.into(),
                why: "MODP groups under 2048 bits, and those with small subgroups, are MUST NOT or SHOULD NOT".into(),
            })
        }
        _ => None,
    })
}

fn encr_transform(e: Encryption) -> Transform {
    let (id, bits) = match e {
        Encryption::AesGcm128 => (20, Some(128)),
        Encryption::AesGcm256 => (20, Some(256)),
        Encryption::ChaCha20Poly1305 => (28, None),
        Encryption::AesCbc128 => (12, Some(128)),
        Encryption::AesCbc256 => (12, Some(256)),
    };
    Transform {
        kind: transform::ENCR,
        id,
        key_len: bits,
    }
}

fn encr_of(t: &Transform) -> Option<Encryption> {
    Some(match (t.id, t.key_len) {
        (20, Some(128)) => Encryption::AesGcm128,
        (20, Some(256)) => Encryption::AesGcm256,
        (28, None) => Encryption::ChaCha20Poly1305,
        (12, Some(128)) => Encryption::AesCbc128,
        (12, Some(256)) => Encryption::AesCbc256,
        _ => return None,
    })
}

fn integ_id(i: Integrity) -> u16 {
    match i {
        Integrity::HmacSha256_128 => 12,
        Integrity::HmacSha384_192 => 13,
        Integrity::HmacSha512_256 => 14,
        Integrity::None => 0,
    }
}

fn integ_of(id: u16) -> Option<Integrity> {
    Some(match id {
        12 => Integrity::HmacSha256_128,
        13 => Integrity::HmacSha384_192,
        14 => Integrity::HmacSha512_256,
        _ => return None,
    })
}

impl IkeProposal {
    /// As an SA payload proposal (IKE SA: no SPI in IKE_SA_INIT, RFC 7296 §3.3.1).
    pub fn to_wire(&self, number: u8) -> Proposal {
        let mut t: Vec<Transform> = self.encr.iter().map(|&e| encr_transform(e)).collect();
        t.extend(self.prf.iter().map(|p| Transform {
            kind: transform::PRF,
            id: p.iana(),
            key_len: None,
        }));
        t.extend(self.integ.iter().map(|&i| Transform {
            kind: transform::INTEG,
            id: integ_id(i),
            key_len: None,
        }));
        t.extend(self.groups.iter().map(|g| Transform {
            kind: transform::KE,
            id: g.iana(),
            key_len: None,
        }));
        for (i, slot) in self.addke.iter().enumerate() {
            t.extend(slot.iter().map(|m| Transform {
                kind: ADDKE1 + i as u8,
                id: m.map_or(ADDKE_NONE, |m| m.iana()),
                key_len: None,
            }));
        }
        Proposal {
            number,
            protocol: PROTO_IKE,
            spi: vec![],
            transforms: t,
        }
    }

    /// Whether this proposal has additional key exchanges.
    pub fn has_addke(&self) -> bool {
        self.addke.iter().any(|s| !s.is_empty())
    }

    /// The same proposal without additional key exchanges, when every ADDKE type it has
    /// allows NONE: what a peer without RFC 9370 (strongSwan 5.9.x refuses any proposal
    /// with transform types it does not know) can pick.
    pub fn without_addke(&self) -> Option<IkeProposal> {
        let optional = self.addke.iter().all(|s| s.is_empty() || s.contains(&None));
        (self.has_addke() && optional).then(|| IkeProposal {
            addke: Default::default(),
            ..self.clone()
        })
    }

    /// Our proposals as sent: each as configured, followed by its twin without ADDKE
    /// ([`IkeProposal::without_addke`]) when it has one; numbered from 1.
    pub fn offer(ours: &[IkeProposal]) -> Vec<IkeProposal> {
        ours.iter()
            .flat_map(|p| std::iter::once(p.clone()).chain(p.without_addke()))
            .collect()
    }

    /// As a proposal in an IKE SA rekey (§1.3.2, §3.3.1): with the sender's SPI of the new
    /// IKE SA (8 octets).
    pub fn to_wire_with_spi(&self, number: u8, spi: u64) -> Proposal {
        Proposal {
            spi: spi.to_be_bytes().to_vec(),
            ..self.to_wire(number)
        }
    }

    /// The responder's choice for an IKE SA rekey (§1.3.2): as [`IkeProposal::choose`], but
    /// taking the group of the initiator's KE payload when the proposal allows it and we
    /// accept it, which saves an INVALID_KE_PAYLOAD round trip (§1.2 lets the responder pick
    /// any offered group; the KE is for one of them).
    pub fn choose_for_ke(
        ours: &[IkeProposal],
        offered: &[Proposal],
        ke_group: u16,
    ) -> Option<(u8, IkeSuite)> {
        let with_ke: Vec<Proposal> = offered
            .iter()
            .map(|p| Proposal {
                transforms: p
                    .transforms
                    .iter()
                    .filter(|t| t.kind != transform::KE || t.id == ke_group)
                    .copied()
                    .collect(),
                ..p.clone()
            })
            .collect();
        IkeProposal::choose(ours, &with_ke).or_else(|| IkeProposal::choose(ours, offered))
    }

    /// The responder's choice (RFC 7296 §2.7): the first of the initiator's proposals we
    /// can accept whole, taking in each transform type the initiator's first choice that is
    /// also ours. `None`: NO_PROPOSAL_CHOSEN.
    pub fn choose(ours: &[IkeProposal], offered: &[Proposal]) -> Option<(u8, IkeSuite)> {
        for p in offered.iter().filter(|p| p.protocol == PROTO_IKE) {
            for mine in ours {
                let of = |k: u8| p.transforms.iter().filter(move |t| t.kind == k);
                let encr = of(transform::ENCR)
                    .filter_map(encr_of)
                    .find(|e| mine.encr.contains(e));
                let prf = of(transform::PRF)
                    .filter_map(|t| Prf::from_iana(t.id))
                    .find(|f| mine.prf.contains(f));
                let group = of(transform::KE)
                    .filter_map(|t| Group::from_iana(t.id))
                    .find(|g| mine.groups.contains(g));
                let (Some(encr), Some(prf), Some(group)) = (encr, prf, group) else {
                    continue;
                };
                let Some(addke) = choose_addke(&mine.addke, p) else {
                    continue;
                };
                let integ = if is_aead(encr) {
                    if of(transform::INTEG).next().is_some() {
                        continue; // an AEAD with integrity is malformed (§3.3.2)
                    }
                    Integrity::None
                } else {
                    match of(transform::INTEG)
                        .filter_map(|t| integ_of(t.id))
                        .find(|i| mine.integ.contains(i))
                    {
                        Some(i) => i,
                        None => continue,
                    }
                };
                return Some((
                    p.number,
                    IkeSuite {
                        encr,
                        integ,
                        prf,
                        group,
                        addke,
                    },
                ));
            }
        }
        None
    }
}

/// RFC 9370 §2.2.1: per ADDKE type, the initiator's first method we also allow. A type
/// only one side lists counts as NONE on the other: acceptable when that side's list
/// allows NONE (so a proposal without ADDKE matches ours with `keN_none` in every slot).
/// The same rule for IKE proposals and for ESP proposals in CREATE_CHILD_SA (§2.2.4).
pub(crate) fn choose_addke(
    mine: &[Vec<Option<Method>>; ADDKE_SLOTS],
    p: &Proposal,
) -> Option<AddKe> {
    let mut out: AddKe = [None; ADDKE_SLOTS];
    for (i, slot) in out.iter_mut().enumerate() {
        let kind = ADDKE1 + i as u8;
        let ours = &mine[i];
        let none_ok = ours.is_empty() || ours.contains(&None);
        let mut theirs = p.transforms.iter().filter(|t| t.kind == kind).peekable();
        if theirs.peek().is_none() {
            if none_ok {
                continue;
            }
            return None;
        }
        *slot = theirs.find_map(|t| {
            if t.id == ADDKE_NONE {
                none_ok.then_some(None)
            } else {
                Method::from_iana(t.id)
                    .filter(|m| ours.contains(&Some(*m)))
                    .map(Some)
            }
        })?;
    }
    Some(out)
}

impl IkeSuite {
    /// The chosen suite as the single proposal the responder returns (§3.3.1).
    pub fn to_wire(&self, number: u8) -> Proposal {
        IkeProposal {
            encr: vec![self.encr],
            integ: if self.integ == Integrity::None {
                vec![]
            } else {
                vec![self.integ]
            },
            prf: vec![self.prf],
            groups: vec![self.group],
            addke: std::array::from_fn(|i| self.addke[i].map(Some).into_iter().collect()),
        }
        .to_wire(number)
    }
}

impl IkeSuite {
    /// The chosen suite in an IKE SA rekey answer, with the responder's new SPI (§1.3.2).
    pub fn to_wire_with_spi(&self, number: u8, spi: u64) -> Proposal {
        Proposal {
            spi: spi.to_be_bytes().to_vec(),
            ..self.to_wire(number)
        }
    }
}

impl fmt::Display for IkeSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = match self.encr {
            Encryption::AesGcm128 => "aes128gcm16",
            Encryption::AesGcm256 => "aes256gcm16",
            Encryption::ChaCha20Poly1305 => "chacha20poly1305",
            Encryption::AesCbc128 => "aes128",
            Encryption::AesCbc256 => "aes256",
        };
        write!(f, "{e}")?;
        match self.integ {
            Integrity::HmacSha256_128 => write!(f, "-sha256")?,
            Integrity::HmacSha384_192 => write!(f, "-sha384")?,
            Integrity::HmacSha512_256 => write!(f, "-sha512")?,
            Integrity::None => {}
        }
        write!(f, "-{}-{}", self.prf.name(), self.group.name())?;
        for (i, m) in self.addke.iter().enumerate() {
            if let Some(m) = m {
                write!(f, "-ke{}_{}", i + 1, m.name())?;
            }
        }
        Ok(())
    }
}

/// A proposal as the operator would write it (for logs: "we offered X, they offered Y"),
/// by name for every registered algorithm ([`algnames`]), never as IANA numbers.
pub fn describe(p: &Proposal) -> String {
    let mut parts = Vec::new();
    for t in &p.transforms {
        let s = match t.kind {
            transform::ENCR => encr_of(t).map_or(algnames::encr(t.id, t.key_len), |e| {
                IkeSuite {
                    encr: e,
                    integ: Integrity::None,
                    prf: Prf::HmacSha256,
                    group: Group::Curve25519,
                    addke: Default::default(),
                }
                .to_string()
                .split('-')
                .next()
                .unwrap_or_default()
                .to_string()
            }),
            transform::PRF => Prf::from_iana(t.id).map_or(algnames::prf(t.id), |p| p.name().into()),
            // Names for every registered algorithm, ours or not (algnames): a peer's
            // offer reads as it was configured, weak ones included.
            transform::INTEG => algnames::integ(t.id),
            transform::KE => Group::from_iana(t.id).map_or(algnames::ke(t.id), |g| g.name().into()),
            transform::ESN => {
                if t.id == 1 {
                    "esn".into()
                } else {
                    "noesn".into()
                }
            }
            k if (ADDKE1..ADDKE1 + ADDKE_SLOTS as u8).contains(&k) => {
                let n = k - ADDKE1 + 1;
                match (t.id, Method::from_iana(t.id)) {
                    (ADDKE_NONE, _) => format!("ke{n}_none"),
                    (_, Some(m)) => format!("ke{n}_{}", m.name()),
                    (id, None) => format!("ke{n}_{id}"),
                }
            }
            k => format!("t{k}:{}", t.id),
        };
        parts.push(s);
    }
    parts.join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strongswan_strings_parse_and_weak_ones_are_refused() {
        let p: IkeProposal = "aes128gcm16-prfsha256-x25519".parse().unwrap();
        assert_eq!(p.encr, vec![Encryption::AesGcm128]);
        assert_eq!(p.prf, vec![Prf::HmacSha256]);
        assert!(p.integ.is_empty());
        let p: IkeProposal = "aes256-sha384-modp2048".parse().unwrap();
        assert_eq!(p.prf, vec![Prf::HmacSha384], "integrity doubles as PRF");
        let p: IkeProposal = "aes128gcm16-aes256gcm16-prfsha256-prfsha512-x25519-ecp256"
            .parse()
            .unwrap();
        assert_eq!((p.encr.len(), p.prf.len(), p.groups.len()), (2, 2, 2));
        for (s, want) in [
            ("3des-sha256-modp2048", "RFC 8247"),
            ("aes128-md5-modp2048", "RFC 8247"),
            ("aes128-sha256-modp1024", "RFC 8247"),
            ("aes128gcm16-prfsha1-x25519", "RFC 8247"),
            ("aes128gcm16-x25519", "needs a PRF"),
            ("aes128-x25519", "integrity"),
            ("aes128gcm16-prfsha256", "key exchange"),
            ("aes128gcm16-sha256-prfsha256-x25519", "AEAD"),
            ("rot13-prfsha256-x25519", "unknown"),
        ] {
            let e = s.parse::<IkeProposal>().unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn responder_takes_the_initiators_first_acceptable_choice() {
        let offered = vec![
            "aes256gcm16-prfsha384-ecp384"
                .parse::<IkeProposal>()
                .unwrap()
                .to_wire(1),
            "aes128gcm16-chacha20poly1305-prfsha256-x25519-ecp256"
                .parse::<IkeProposal>()
                .unwrap()
                .to_wire(2),
        ];
        let ours = vec!["chacha20poly1305-aes128gcm16-prfsha256-ecp256-x25519"
            .parse::<IkeProposal>()
            .unwrap()];
        let (n, s) = IkeProposal::choose(&ours, &offered).unwrap();
        assert_eq!(n, 2);
        assert_eq!(s.to_string(), "aes128gcm16-prfsha256-x25519");
        // Round trip through the wire form.
        let back = IkeProposal::choose(&ours, &[s.to_wire(2)]).unwrap().1;
        assert_eq!(back, s);
        // Disjoint: nothing chosen.
        let theirs = vec!["aes256-sha512-modp3072"
            .parse::<IkeProposal>()
            .unwrap()
            .to_wire(1)];
        assert!(IkeProposal::choose(&ours, &theirs).is_none());
        assert_eq!(describe(&theirs[0]), "aes256-prfsha512-sha512-modp3072");
    }

    #[test]
    fn a_rekey_responder_prefers_the_group_of_the_ke_payload() {
        let offered = vec!["aes128gcm16-prfsha256-x25519-ecp256-modp2048"
            .parse::<IkeProposal>()
            .unwrap()
            .to_wire_with_spi(1, 0x0102_0304_0506_0708)];
        assert_eq!(offered[0].spi, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        let ours = vec!["aes128gcm16-prfsha256-modp2048-ecp256"
            .parse::<IkeProposal>()
            .unwrap()];
        // Plain choice: the initiator's first group we accept.
        assert_eq!(
            IkeProposal::choose(&ours, &offered).unwrap().1.group,
            Group::Ecp256
        );
        // With a KE for modp2048, that one (no INVALID_KE_PAYLOAD needed).
        let (n, s) = IkeProposal::choose_for_ke(&ours, &offered, 14).unwrap();
        assert_eq!((n, s.group), (1, Group::Modp2048));
        // A KE for a group we do not accept: the plain choice (then INVALID_KE_PAYLOAD).
        let (_, s) = IkeProposal::choose_for_ke(&ours, &offered, 31).unwrap();
        assert_eq!(s.group, Group::Ecp256);
        assert_eq!(s.to_wire_with_spi(1, 9).spi, 9u64.to_be_bytes().to_vec());
    }

    #[test]
    fn additional_key_exchanges_parse_select_and_fall_back() {
        use crate::ike::kem::{Method, MlKem};
        let mlkem768 = Some(Method::MlKem(MlKem::MlKem768));
        let mlkem1024 = Some(Method::MlKem(MlKem::MlKem1024));
        let p: IkeProposal = "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none"
            .parse()
            .unwrap();
        assert_eq!(p.addke[0], vec![mlkem768, None]);
        assert!(p.addke[1..].iter().all(|s| s.is_empty()));
        let w = p.to_wire(1);
        assert_eq!(
            describe(&w),
            "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none"
        );
        assert!(w.transforms.contains(&Transform {
            kind: 6,
            id: 36,
            key_len: None
        }));
        // The twin without ADDKE follows it in the offer.
        let offer = IkeProposal::offer(std::slice::from_ref(&p));
        assert_eq!(offer.len(), 2);
        assert!(!offer[1].has_addke());
        // Mandatory ML-KEM: no twin.
        let m: IkeProposal = "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024-ke2_mlkem768"
            .parse()
            .unwrap();
        assert_eq!(
            (m.addke[0].clone(), m.addke[1].clone()),
            (vec![mlkem1024], vec![mlkem768])
        );
        assert!(m.without_addke().is_none());
        assert_eq!(IkeProposal::offer(std::slice::from_ref(&m)).len(), 1);

        // Responder with ML-KEM: takes it; the suite says so and round-trips.
        let (_, s) =
            IkeProposal::choose(std::slice::from_ref(&p), std::slice::from_ref(&w)).unwrap();
        assert_eq!(s.addke[0], mlkem768);
        assert_eq!(s.to_string(), "aes256gcm16-prfsha384-x25519-ke1_mlkem768");
        assert_eq!(
            IkeProposal::choose(std::slice::from_ref(&p), &[s.to_wire(1)])
                .unwrap()
                .1,
            s
        );
        // A classic responder against our ADDKE-with-NONE offer: the twin matches.
        let classic: IkeProposal = "aes256gcm16-prfsha384-x25519".parse().unwrap();
        let wire: Vec<Proposal> = offer
            .iter()
            .enumerate()
            .map(|(i, x)| x.to_wire(i as u8 + 1))
            .collect();
        // Ours takes NONE from the first (RFC 9370 §2.2.1); strongSwan 5.9.8 refuses a
        // proposal with unknown transform types and takes the twin.
        let (n, s) = IkeProposal::choose(std::slice::from_ref(&classic), &wire).unwrap();
        assert_eq!((n, s.addke), (1, [None; ADDKE_SLOTS]));
        assert_eq!(
            s.to_wire(1).transforms.len(),
            3,
            "no ADDKE transform in the answer"
        );
        let (n, s) = IkeProposal::choose(std::slice::from_ref(&classic), &wire[1..]).unwrap();
        assert_eq!((n, s.addke), (2, [None; ADDKE_SLOTS]));
        // ... and our initiator accepts that answer (no ADDKE = NONE in every slot).
        assert!(IkeProposal::choose(std::slice::from_ref(&p), &[s.to_wire(n)]).is_some());
        // A responder with `ke1_none` accepts a proposal without ADDKE.
        assert!(IkeProposal::choose(std::slice::from_ref(&p), &[classic.to_wire(1)]).is_some());
        // Mandatory ML-KEM against a classic peer: nothing in common, either way round.
        assert!(IkeProposal::choose(std::slice::from_ref(&m), &[classic.to_wire(1)]).is_none());
        let e: IkeProposal = "aes256gcm16-prfsha384-ecp384".parse().unwrap();
        assert!(IkeProposal::choose(std::slice::from_ref(&e), &[m.to_wire(1)]).is_none());
        // The initiator's order decides among the methods of a slot.
        let both: IkeProposal = "aes256gcm16-prfsha384-ecp384-ke1_mlkem768-ke1_mlkem1024"
            .parse()
            .unwrap();
        let theirs: IkeProposal = "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024-ke1_mlkem768"
            .parse()
            .unwrap();
        let (_, s) =
            IkeProposal::choose(std::slice::from_ref(&both), &[theirs.to_wire(1)]).unwrap();
        assert_eq!(s.addke[0], mlkem1024);
        // A mandatory ke2 we do not list at all: refused.
        assert!(IkeProposal::choose(std::slice::from_ref(&both), &[m.to_wire(1)]).is_none());
    }

    #[test]
    fn bad_additional_key_exchange_tokens_are_refused() {
        for (s, want) in [
            ("aes256gcm16-prfsha384-x25519-ke8_mlkem768", "ke1_ .. ke7_"),
            ("aes256gcm16-prfsha384-x25519-ke1_mlkem999", "unknown"),
            ("aes256gcm16-prfsha384-x25519-ke1_modp1024", "RFC 8247"),
            ("aes256gcm16-prfsha384-mlkem768", "additional key exchange"),
        ] {
            let e = s.parse::<IkeProposal>().unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
