//! IKE SA proposals: strongSwan proposal strings (`aes128gcm16-prfsha256-x25519`,
//! `aes256-sha256-modp2048`) to and from SA payload proposals, and the responder's choice
//! (RFC 7296 §2.7, §3.3). Weak algorithms are refused naming RFC 8247.

use std::fmt;
use std::str::FromStr;

use dataplane::crypto::algorithm::{parse_encryption, parse_integrity};
use dataplane::crypto::{AlgorithmError, Encryption, Integrity};

use super::dh::Group;
use super::keys::Prf;
use super::wire::{transform, Proposal, Transform};

/// IKE protocol id in proposals (RFC 7296 §3.3.1).
pub const PROTO_IKE: u8 = 1;

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
}

/// What was chosen for an IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeSuite {
    pub encr: Encryption,
    /// `Integrity::None` with an AEAD.
    pub integ: Integrity,
    pub prf: Prf,
    pub group: Group,
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

/// A key exchange group token of a proposal string (strongSwan's names), shared by the IKE
/// and the ESP proposals (PFS). `Ok(None)`: not a group token; weak groups are refused.
pub fn parse_group(tok: &str) -> Result<Option<Group>, ProposalError> {
    Ok(match tok {
        "x25519" | "curve25519" => Some(Group::Curve25519),
        "ecp256" => Some(Group::Ecp256),
        "ecp384" => Some(Group::Ecp384),
        "modp2048" => Some(Group::Modp2048),
        "modp3072" => Some(Group::Modp3072),
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
        Proposal {
            number,
            protocol: PROTO_IKE,
            spi: vec![],
            transforms: t,
        }
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
                    },
                ));
            }
        }
        None
    }
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
        write!(f, "-{}-{}", self.prf.name(), self.group.name())
    }
}

/// A proposal as the operator would write it (for logs: "we offered X, they offered Y").
pub fn describe(p: &Proposal) -> String {
    let mut parts = Vec::new();
    for t in &p.transforms {
        let s = match t.kind {
            transform::ENCR => encr_of(t).map_or(format!("encr{}", t.id), |e| {
                IkeSuite {
                    encr: e,
                    integ: Integrity::None,
                    prf: Prf::HmacSha256,
                    group: Group::Curve25519,
                }
                .to_string()
                .split('-')
                .next()
                .unwrap_or_default()
                .to_string()
            }),
            transform::PRF => {
                Prf::from_iana(t.id).map_or(format!("prf{}", t.id), |p| p.name().into())
            }
            transform::INTEG => match integ_of(t.id) {
                Some(Integrity::HmacSha256_128) => "sha256".into(),
                Some(Integrity::HmacSha384_192) => "sha384".into(),
                Some(Integrity::HmacSha512_256) => "sha512".into(),
                _ => format!("integ{}", t.id),
            },
            transform::KE => {
                Group::from_iana(t.id).map_or(format!("group{}", t.id), |g| g.name().into())
            }
            transform::ESN => {
                if t.id == 1 {
                    "esn".into()
                } else {
                    "noesn".into()
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
}
