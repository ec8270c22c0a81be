//! The security policy database (RFC 4301 §4.4.1): which outbound traffic is protected by
//! which SA, bypassed or discarded. The policy with the lowest priority value that matches
//! wins; equal priorities go to the older policy.
//!
//! Lookup is a tuple-space search (Srinivasan, Suri, Varghese, SIGCOMM 1999), not a walk of
//! the policy list. Every policy's source and destination ranges are cut into prefixes;
//! policies whose prefixes have the same pair of lengths share one hash table keyed by the
//! masked addresses. A lookup masks the packet's addresses once per distinct length pair
//! (a handful in practice: a site-to-site concentrator has /24-to-/16 style policies, a
//! remote-access one /32-to-/0) and probes that table; ports and protocol are checked on the
//! few policies found there. Tables are visited in order of the best priority they hold, so
//! the search stops as soon as no later table can beat the match in hand. Insert and delete
//! are O(prefixes of the policy).
//!
//! Each worker owns a replica (see `sadb`), so lookups take no lock and share no cache
//! line; the control thread sends every change to every replica.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;

use crate::esp::{FlowKey, TrafficSelector};

/// Identifies a policy (chosen by the control plane).
pub type PolicyId = u32;

/// What to do with an outbound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpdAction {
    /// Encapsulate with the outbound SA installed under this request id (RFC 4301's SA
    /// bundle reference; rekeying installs a new SA under the same id).
    Protect {
        reqid: u32,
    },
    Bypass,
    Discard,
}

/// One policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    pub id: PolicyId,
    /// Lower wins.
    pub priority: u32,
    pub src: TrafficSelector,
    pub dst: TrafficSelector,
    pub action: SpdAction,
}

/// The result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpdMatch {
    pub id: PolicyId,
    pub action: SpdAction,
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpdError {
    #[error("policy {0} already exists")]
    Duplicate(PolicyId),
    #[error("policy {0} does not exist")]
    NotFound(PolicyId),
    #[error("policy {0} mixes IPv4 and IPv6 selectors")]
    MixedFamilies(PolicyId),
    #[error("policy {id}: its address ranges need {n} prefix pairs (at most {MAX_PAIRS}); use prefix-aligned ranges")]
    TooFragmented { id: PolicyId, n: usize },
}

/// Most (source prefix × destination prefix) pairs one policy may expand to.
pub const MAX_PAIRS: usize = 256;

type Hasher = std::hash::BuildHasherDefault<FoldHasher>;

/// A fast hasher for masked addresses (the keys are ours, from configuration; packets only
/// look them up), folding 64-bit words with a multiply (FxHash style).
#[derive(Default, Clone, Copy)]
pub struct FoldHasher(u64);

impl std::hash::Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        // Final avalanche so the high bits hashbrown uses for its control bytes vary.
        let h = self.0 ^ (self.0 >> 29);
        h.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }
}

/// Addresses of one family as integers.
trait Addr: Copy + Eq + std::hash::Hash + Ord + std::fmt::Debug {
    fn mask(self, len: u8) -> Self;
}
impl Addr for u32 {
    fn mask(self, len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - u32::from(len)))
        }
    }
}
impl Addr for u128 {
    fn mask(self, len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - u32::from(len)))
        }
    }
}

/// A policy as stored in a table: enough to check ports and protocol and to rank it.
#[derive(Debug, Clone)]
struct Slot {
    rank: (u32, u64),
    id: PolicyId,
    src: TrafficSelector,
    dst: TrafficSelector,
    action: SpdAction,
}

impl Slot {
    fn matches(&self, f: &FlowKey) -> bool {
        self.src.matches(f.src, f.protocol, f.src_port)
            && self.dst.matches(f.dst, f.protocol, f.dst_port)
    }
}

#[derive(Debug, Clone)]
struct Tuple<A> {
    src_len: u8,
    dst_len: u8,
    /// A lower bound of the ranks stored (exact after inserts; deletes may leave it low,
    /// which only costs an extra probe).
    best: (u32, u64),
    /// Per key, slots sorted by rank.
    map: HashMap<(A, A), Vec<Slot>, Hasher>,
}

#[derive(Debug, Clone)]
struct Space<A> {
    /// Sorted by `best`.
    tuples: Vec<Tuple<A>>,
}

impl<A> Default for Space<A> {
    fn default() -> Self {
        Space { tuples: Vec::new() }
    }
}

impl<A: Addr> Space<A> {
    fn insert(&mut self, src: (A, u8), dst: (A, u8), slot: Slot) {
        let key = (src.0.mask(src.1), dst.0.mask(dst.1));
        let i = match self
            .tuples
            .iter()
            .position(|t| t.src_len == src.1 && t.dst_len == dst.1)
        {
            Some(i) => i,
            None => {
                self.tuples.push(Tuple {
                    src_len: src.1,
                    dst_len: dst.1,
                    best: slot.rank,
                    map: HashMap::with_hasher(Hasher::default()),
                });
                self.tuples.len() - 1
            }
        };
        let t = &mut self.tuples[i];
        t.best = t.best.min(slot.rank);
        let v = t.map.entry(key).or_default();
        let at = v.partition_point(|s| s.rank < slot.rank);
        v.insert(at, slot);
        self.tuples.sort_by_key(|t| t.best);
    }

    fn remove(&mut self, src: (A, u8), dst: (A, u8), id: PolicyId) {
        let key = (src.0.mask(src.1), dst.0.mask(dst.1));
        if let Some(i) = self
            .tuples
            .iter()
            .position(|t| t.src_len == src.1 && t.dst_len == dst.1)
        {
            let t = &mut self.tuples[i];
            if let Some(v) = t.map.get_mut(&key) {
                v.retain(|s| s.id != id);
                if v.is_empty() {
                    t.map.remove(&key);
                }
            }
            if t.map.is_empty() {
                self.tuples.remove(i);
            }
        }
    }

    #[inline]
    fn lookup(&self, s: A, d: A, f: &FlowKey) -> Option<&Slot> {
        let mut best: Option<&Slot> = None;
        for t in &self.tuples {
            if best.is_some_and(|b| b.rank <= t.best) {
                break;
            }
            let Some(v) = t.map.get(&(s.mask(t.src_len), d.mask(t.dst_len))) else {
                continue;
            };
            for slot in v {
                if best.is_some_and(|b| b.rank <= slot.rank) {
                    break;
                }
                if slot.matches(f) {
                    best = Some(slot);
                    break;
                }
            }
        }
        best
    }
}

/// The SPD. Cloned into each worker's replica; changed through `insert`/`remove`.
#[derive(Debug, Clone, Default)]
pub struct Spd {
    v4: Space<u32>,
    v6: Space<u128>,
    rules: HashMap<PolicyId, PolicyRule>,
    next_order: u64,
}

fn ip_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

impl Spd {
    pub fn new() -> Spd {
        Spd::default()
    }

    /// Add a policy.
    pub fn insert(&mut self, rule: PolicyRule) -> Result<(), SpdError> {
        if self.rules.contains_key(&rule.id) {
            return Err(SpdError::Duplicate(rule.id));
        }
        let v4 = rule.src.start.is_ipv4();
        if rule.dst.start.is_ipv4() != v4 {
            return Err(SpdError::MixedFamilies(rule.id));
        }
        let (mut sp, mut dp) = (Vec::new(), Vec::new());
        range_to_prefixes(rule.src.start, rule.src.end, &mut sp);
        range_to_prefixes(rule.dst.start, rule.dst.end, &mut dp);
        if sp.len() * dp.len() > MAX_PAIRS {
            return Err(SpdError::TooFragmented {
                id: rule.id,
                n: sp.len() * dp.len(),
            });
        }
        self.next_order += 1;
        let slot = Slot {
            rank: (rule.priority, self.next_order),
            id: rule.id,
            src: rule.src,
            dst: rule.dst,
            action: rule.action,
        };
        for &(s, sl) in &sp {
            for &(d, dl) in &dp {
                if v4 {
                    let (s, d) = (ip_bits(s) as u32, ip_bits(d) as u32);
                    self.v4.insert((s, sl), (d, dl), slot.clone());
                } else {
                    self.v6
                        .insert((ip_bits(s), sl), (ip_bits(d), dl), slot.clone());
                }
            }
        }
        self.rules.insert(rule.id, rule);
        Ok(())
    }

    /// Remove a policy; returns it.
    pub fn remove(&mut self, id: PolicyId) -> Result<PolicyRule, SpdError> {
        let rule = self.rules.remove(&id).ok_or(SpdError::NotFound(id))?;
        let (mut sp, mut dp) = (Vec::new(), Vec::new());
        range_to_prefixes(rule.src.start, rule.src.end, &mut sp);
        range_to_prefixes(rule.dst.start, rule.dst.end, &mut dp);
        for &(s, sl) in &sp {
            for &(d, dl) in &dp {
                if rule.src.start.is_ipv4() {
                    let (s, d) = (ip_bits(s) as u32, ip_bits(d) as u32);
                    self.v4.remove((s, sl), (d, dl), id);
                } else {
                    self.v6.remove((ip_bits(s), sl), (ip_bits(d), dl), id);
                }
            }
        }
        Ok(rule)
    }

    /// Remove every policy.
    pub fn clear(&mut self) {
        *self = Spd {
            next_order: self.next_order,
            ..Spd::default()
        };
    }

    /// The best matching policy, or `None` (no policy: not ours to forward).
    #[inline]
    pub fn lookup(&self, f: &FlowKey) -> Option<SpdMatch> {
        let slot = match (f.src, f.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.v4.lookup(u32::from(s), u32::from(d), f),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.v6.lookup(u128::from(s), u128::from(d), f),
            _ => None,
        }?;
        Some(SpdMatch {
            id: slot.id,
            action: slot.action,
        })
    }

    pub fn get(&self, id: PolicyId) -> Option<&PolicyRule> {
        self.rules.get(&id)
    }
    pub fn rules(&self) -> impl Iterator<Item = &PolicyRule> {
        self.rules.values()
    }
    pub fn len(&self) -> usize {
        self.rules.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
    /// Distinct (source, destination) prefix-length pairs: the probes a lookup may make.
    pub fn tuples(&self) -> usize {
        self.v4.tuples.len() + self.v6.tuples.len()
    }
}

/// Destination prefixes the inside XDP program must steer to the dataplane for `rule`.
/// Every action needs the dataplane to see the packet: protect encrypts it, bypass forwards
/// it in clear, discard counts and drops it.
pub fn steering_prefixes(rule: &PolicyRule) -> Vec<(IpAddr, u8)> {
    let mut out = Vec::new();
    range_to_prefixes(rule.dst.start, rule.dst.end, &mut out);
    out
}

/// Reference counts of steering prefixes, kept by the control thread so the XDP map holds
/// exactly the union of all policies' destination prefixes.
#[derive(Debug, Default)]
pub struct PrefixRefs(std::collections::BTreeMap<(IpAddr, u8), u32>);

impl PrefixRefs {
    /// Count a policy's prefixes; returns those that became used.
    pub fn add(&mut self, rule: &PolicyRule) -> Vec<(IpAddr, u8)> {
        let mut new = Vec::new();
        for p in steering_prefixes(rule) {
            let n = self.0.entry(p).or_insert(0);
            *n += 1;
            if *n == 1 {
                new.push(p);
            }
        }
        new
    }
    /// Uncount a policy's prefixes; returns those no longer used.
    pub fn remove(&mut self, rule: &PolicyRule) -> Vec<(IpAddr, u8)> {
        let mut gone = Vec::new();
        for p in steering_prefixes(rule) {
            if let Some(n) = self.0.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    self.0.remove(&p);
                    gone.push(p);
                }
            }
        }
        gone
    }
    pub fn all(&self) -> impl Iterator<Item = (IpAddr, u8)> + '_ {
        self.0.keys().copied()
    }
    pub fn clear(&mut self) -> Vec<(IpAddr, u8)> {
        std::mem::take(&mut self.0).into_keys().collect()
    }
}

/// Cover the inclusive range [start, end] with CIDR prefixes.
pub fn range_to_prefixes(start: IpAddr, end: IpAddr, out: &mut Vec<(IpAddr, u8)>) {
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
    if s > e {
        return;
    }
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

/// A hasher instance for callers that want the same hashing (benchmarks).
pub fn hasher() -> impl BuildHasher {
    Hasher::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(id: u32, src: &str, dst: &str, action: SpdAction, priority: u32) -> PolicyRule {
        PolicyRule {
            id,
            priority,
            src: TrafficSelector::prefix(src).unwrap(),
            dst: TrafficSelector::prefix(dst).unwrap(),
            action,
        }
    }

    fn flow(s: &str, d: &str, proto: u8, sp: u16, dp: u16) -> FlowKey {
        FlowKey {
            src: s.parse().unwrap(),
            dst: d.parse().unwrap(),
            protocol: proto,
            src_port: Some(sp),
            dst_port: Some(dp),
        }
    }

    #[test]
    fn best_priority_wins_and_removal_restores() {
        let mut spd = Spd::new();
        spd.insert(rule(
            1,
            "10.1.0.0/16",
            "10.2.0.0/16",
            SpdAction::Protect { reqid: 3 },
            100,
        ))
        .unwrap();
        spd.insert(rule(2, "10.1.0.0/16", "10.2.9.0/24", SpdAction::Bypass, 10))
            .unwrap();
        let m = |d: &str| spd.lookup(&flow("10.1.0.5", d, 6, 1, 2)).map(|m| m.id);
        assert_eq!(m("10.2.0.1"), Some(1));
        assert_eq!(m("10.2.9.1"), Some(2));
        assert_eq!(m("10.3.0.1"), None);
        assert_eq!(
            spd.insert(rule(2, "::/0", "::/0", SpdAction::Bypass, 1)),
            Err(SpdError::Duplicate(2))
        );
        assert_eq!(
            spd.insert(rule(9, "10.0.0.0/8", "::/0", SpdAction::Bypass, 1)),
            Err(SpdError::MixedFamilies(9))
        );
        spd.remove(2).unwrap();
        assert_eq!(
            spd.lookup(&flow("10.1.0.5", "10.2.9.1", 6, 1, 2))
                .map(|m| m.id),
            Some(1)
        );
        assert_eq!(spd.remove(2), Err(SpdError::NotFound(2)));
        assert_eq!(spd.len(), 1);
    }

    #[test]
    fn ports_and_protocol_narrow_a_match() {
        let mut spd = Spd::new();
        let mut r = rule(1, "10.0.0.0/8", "10.9.0.0/16", SpdAction::Discard, 5);
        r.dst = r.dst.with_protocol(6, (22, 22));
        spd.insert(r).unwrap();
        spd.insert(rule(
            2,
            "10.0.0.0/8",
            "10.9.0.0/16",
            SpdAction::Protect { reqid: 1 },
            50,
        ))
        .unwrap();
        assert_eq!(
            spd.lookup(&flow("10.0.0.1", "10.9.0.1", 6, 999, 22))
                .unwrap()
                .id,
            1
        );
        assert_eq!(
            spd.lookup(&flow("10.0.0.1", "10.9.0.1", 6, 999, 80))
                .unwrap()
                .id,
            2
        );
        assert_eq!(
            spd.lookup(&flow("10.0.0.1", "10.9.0.1", 17, 999, 22))
                .unwrap()
                .id,
            2
        );
    }

    #[test]
    fn prefix_refs_track_the_union() {
        let mut refs = PrefixRefs::default();
        let a = rule(1, "10.1.0.0/16", "10.2.0.0/16", SpdAction::Bypass, 1);
        let b = rule(2, "10.5.0.0/16", "10.2.0.0/16", SpdAction::Bypass, 1);
        assert_eq!(refs.add(&a), vec![("10.2.0.0".parse().unwrap(), 16)]);
        assert!(refs.add(&b).is_empty());
        assert!(refs.remove(&a).is_empty());
        assert_eq!(refs.remove(&b), vec![("10.2.0.0".parse().unwrap(), 16)]);
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
        let want: Vec<(IpAddr, u8)> = vec![
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

    /// The reference: RFC 4301's ordered list, walked.
    fn linear(rules: &[PolicyRule], f: &FlowKey) -> Option<PolicyId> {
        let mut sorted: Vec<_> = rules.iter().enumerate().collect();
        sorted.sort_by_key(|(i, r)| (r.priority, *i));
        sorted
            .into_iter()
            .find(|(_, r)| {
                r.src.matches(f.src, f.protocol, f.src_port)
                    && r.dst.matches(f.dst, f.protocol, f.dst_port)
            })
            .map(|(_, r)| r.id)
    }

    fn arb_sel() -> impl Strategy<Value = TrafficSelector> {
        (
            0u32..16,
            0u32..16,
            prop_oneof![Just(0u8), Just(6u8), Just(17u8)],
            0u16..4,
            0u16..4,
        )
            .prop_map(|(a, b, proto, p1, p2)| {
                let (lo, hi) = (a.min(b), a.max(b));
                let s = TrafficSelector {
                    start: IpAddr::V4((0x0a00_0000 | lo).into()),
                    end: IpAddr::V4((0x0a00_0000 | hi).into()),
                    protocol: 0,
                    start_port: 0,
                    end_port: u16::MAX,
                };
                if proto == 0 {
                    s
                } else {
                    s.with_protocol(proto, (p1.min(p2), p1.max(p2)))
                }
            })
    }

    proptest! {
        /// Tuple-space search agrees with the ordered list it replaces, through inserts
        /// and deletes, on small address spaces where everything overlaps.
        #[test]
        fn agrees_with_the_linear_list(
            rules in proptest::collection::vec((arb_sel(), arb_sel(), 0u32..4), 1..20),
            deletes in proptest::collection::vec(0usize..20, 0..5),
            probes in proptest::collection::vec((0u32..16, 0u32..16, prop_oneof![Just(6u8), Just(17u8), Just(1u8)], 0u16..4, 0u16..4), 50),
        ) {
            let mut spd = Spd::new();
            let mut list = Vec::new();
            for (i, (s, d, prio)) in rules.into_iter().enumerate() {
                let r = PolicyRule { id: i as u32, priority: prio, src: s, dst: d, action: SpdAction::Bypass };
                spd.insert(r.clone()).unwrap();
                list.push(r);
            }
            for k in deletes {
                if k < list.len() {
                    let r = list.remove(k);
                    spd.remove(r.id).unwrap();
                }
            }
            for (s, d, proto, sp, dp) in probes {
                let f = FlowKey {
                    src: IpAddr::V4((0x0a00_0000 | s).into()),
                    dst: IpAddr::V4((0x0a00_0000 | d).into()),
                    protocol: proto,
                    src_port: Some(sp),
                    dst_port: Some(dp),
                };
                prop_assert_eq!(spd.lookup(&f).map(|m| m.id), linear(&list, &f));
            }
        }
    }
}
