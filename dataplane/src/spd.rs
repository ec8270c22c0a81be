//! The security policy database (RFC 4301 §4.4.1): which outbound traffic is protected by
//! which SA, bypassed or discarded. Ordered by priority; the first match wins.
//!
//! Today a linear scan, which is right for the handful of policies of a static setup; the
//! SA-table issue replaces it with a lookup that does not walk a list.

use crate::esp::FlowKey;
use crate::static_sa::{Policy, PolicyAction};

/// What to do with an outbound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpdAction {
    /// Encapsulate with the outbound SA at this index of the SA store.
    Protect(usize),
    Bypass,
    Discard,
}

#[derive(Debug, Clone)]
struct Entry {
    policy: Policy,
    action: SpdAction,
}

/// The SPD.
#[derive(Debug, Clone, Default)]
pub struct Spd {
    entries: Vec<Entry>,
}

impl Spd {
    /// Build from policies; `sa_index` maps an SA name to its outbound index.
    pub fn new(
        policies: &[Policy],
        sa_index: impl Fn(&str) -> Option<usize>,
    ) -> Result<Spd, String> {
        let mut entries = Vec::with_capacity(policies.len());
        for p in policies {
            let action = match &p.action {
                PolicyAction::Protect { sa } => SpdAction::Protect(
                    sa_index(sa).ok_or_else(|| format!("policy names unknown SA {sa:?}"))?,
                ),
                PolicyAction::Bypass => SpdAction::Bypass,
                PolicyAction::Discard => SpdAction::Discard,
            };
            entries.push(Entry {
                policy: p.clone(),
                action,
            });
        }
        // Stable: equal priorities keep file order.
        entries.sort_by_key(|e| e.policy.priority);
        Ok(Spd { entries })
    }

    /// The first matching policy's action, or `None` (no policy: not ours to forward).
    pub fn lookup(&self, f: &FlowKey) -> Option<SpdAction> {
        self.entries
            .iter()
            .find(|e| {
                e.policy.src.matches(f.src, f.protocol, f.src_port)
                    && e.policy.dst.matches(f.dst, f.protocol, f.dst_port)
            })
            .map(|e| e.action)
    }

    /// Destination prefixes the inside XDP program must steer to the dataplane: every
    /// policy's destination range, as (address, prefix length) pairs covering it.
    pub fn protected_prefixes(&self) -> Vec<(std::net::IpAddr, u8)> {
        let mut out = Vec::new();
        // Every action needs the dataplane to see the packet: protect encrypts it, bypass
        // forwards it in clear, discard counts and drops it.
        for e in &self.entries {
            range_to_prefixes(e.policy.dst.start, e.policy.dst.end, &mut out);
        }
        out.sort();
        out.dedup();
        out
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Cover the inclusive range [start, end] with CIDR prefixes.
fn range_to_prefixes(
    start: std::net::IpAddr,
    end: std::net::IpAddr,
    out: &mut Vec<(std::net::IpAddr, u8)>,
) {
    use std::net::IpAddr;
    let (mut s, e, bits, v4) = match (start, end) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (
            u128::from(u32::from(a)),
            u128::from(u32::from(b)),
            32u32,
            true,
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128u32, false),
        _ => return,
    };
    let full = if v4 { u128::from(u32::MAX) } else { u128::MAX };
    if s == 0 && e == full {
        // The whole space: a single /0 (its size, 2^bits, does not fit in u128 for IPv6).
        let any = if v4 {
            IpAddr::V4(0u32.into())
        } else {
            IpAddr::V6(0u128.into())
        };
        out.push((any, 0));
        return;
    }
    loop {
        // Largest block aligned at s that stays within e (size < bits here).
        let mut size = if s == 0 {
            bits - 1
        } else {
            s.trailing_zeros().min(bits - 1)
        };
        while size > 0 && s + ((1u128 << size) - 1) > e {
            size -= 1;
        }
        let len = (bits - size) as u8;
        let addr = if v4 {
            IpAddr::V4((s as u32).into())
        } else {
            IpAddr::V6(s.into())
        };
        out.push((addr, len));
        match s.checked_add(1u128 << size) {
            Some(n) if n <= e => s = n,
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::TrafficSelector;
    use crate::static_sa::Policy;

    fn pol(src: &str, dst: &str, action: PolicyAction, priority: u32) -> Policy {
        Policy {
            src: TrafficSelector::prefix(src).unwrap(),
            dst: TrafficSelector::prefix(dst).unwrap(),
            action,
            priority,
        }
    }

    #[test]
    fn first_match_by_priority() {
        let spd = Spd::new(
            &[
                pol(
                    "10.1.0.0/16",
                    "10.2.0.0/16",
                    PolicyAction::Protect { sa: "t".into() },
                    100,
                ),
                pol("10.1.0.0/16", "10.2.9.0/24", PolicyAction::Bypass, 10),
            ],
            |n| (n == "t").then_some(3),
        )
        .unwrap();
        let flow = |d: &str| FlowKey {
            src: "10.1.0.5".parse().unwrap(),
            dst: d.parse().unwrap(),
            protocol: 6,
            src_port: Some(1),
            dst_port: Some(2),
        };
        assert_eq!(spd.lookup(&flow("10.2.0.1")), Some(SpdAction::Protect(3)));
        assert_eq!(spd.lookup(&flow("10.2.9.1")), Some(SpdAction::Bypass));
        assert_eq!(spd.lookup(&flow("10.3.0.1")), None);
        assert!(Spd::new(
            &[pol(
                "0.0.0.0/0",
                "0.0.0.0/0",
                PolicyAction::Protect { sa: "x".into() },
                1
            )],
            |_| None
        )
        .is_err());
    }

    #[test]
    fn prefixes_cover_ranges_exactly() {
        let mut out = Vec::new();
        range_to_prefixes(
            "10.2.0.0".parse().unwrap(),
            "10.2.255.255".parse().unwrap(),
            &mut out,
        );
        assert_eq!(out, vec![("10.2.0.0".parse().unwrap(), 16)]);
        out.clear();
        range_to_prefixes(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.6".parse().unwrap(),
            &mut out,
        );
        let want: Vec<(std::net::IpAddr, u8)> = vec![
            ("10.0.0.1".parse().unwrap(), 32),
            ("10.0.0.2".parse().unwrap(), 31),
            ("10.0.0.4".parse().unwrap(), 31),
            ("10.0.0.6".parse().unwrap(), 32),
        ];
        assert_eq!(out, want);
        out.clear();
        range_to_prefixes(
            "::".parse().unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            &mut out,
        );
        assert_eq!(out, vec![("::".parse().unwrap(), 0)]);
        out.clear();
        range_to_prefixes(
            "0.0.0.0".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
            &mut out,
        );
        assert_eq!(out, vec![("0.0.0.0".parse().unwrap(), 0)]);
    }
}
