//! What the daemon asks of the dataplane, and how it names it.
//!
//! **Policies are fail-closed.** Each configured child has *base* policies for its
//! configured selectors from the moment the connection is loaded until it is removed from
//! the configuration. They point at the child's *acquire reqid* (`reqid | ACQUIRE_BIT`),
//! under which no SA is ever installed: matching traffic is dropped and counted by the
//! dataplane (`no_sa`) and raises an acquire, which trap connections answer by
//! initiating. A Child SA that comes up adds *narrowed* policies (the selectors actually
//! negotiated, RFC 7296 §2.9) with a better priority, pointing at the child's reqid; they go
//! when the Child SA goes. So traffic outside the narrowed range is dropped, not encrypted
//! for a peer that would drop it, and no state of the daemon — starting, `down`, a dead
//! peer, a reload — lets protected traffic fall through to the kernel in clear.
//!
//! Ids: reqids are below 2^19 (the dataplane's outbound table holds 2^20); policy ids are
//! `reqid << 8 | k` for base policies and `reqid << 8 | 0x80 | k` for narrowed ones
//! (k < 128 selector pairs).

use std::net::{IpAddr, SocketAddr};

use dataplane::esp::{SaConfig, SelectorSet, TrafficSelector, UdpEncap};
use dataplane::policy::spd::{PolicyRule, SpdAction};
use dataplane::sa::Direction;
use dataplane::shm::records::SaInstall;

use crate::ike::sa::ChildSa;
use crate::ike::wire::Ts;

/// Reqids the configuration may use: 1 .. 2^19.
pub const REQID_LIMIT: u32 = 1 << 19;
/// Set in the reqid of base policies: no SA is ever installed under it.
pub const ACQUIRE_BIT: u32 = 1 << 19;
/// Priorities (lower wins): narrowed policies of an up Child SA beat the base policies.
pub const NARROWED_PRIORITY: u32 = 100;
pub const BASE_PRIORITY: u32 = 1000;
/// Selector pairs per child and kind (policy id bits).
pub const MAX_PAIRS: usize = 128;

/// One change to the dataplane.
#[derive(Debug, Clone)]
pub enum DpOp {
    AddSa(Box<SaInstall>),
    DeleteSa {
        direction: Direction,
        spi: u32,
        reqid: u32,
    },
    AddPolicy(PolicyRule),
    DeletePolicy(u32),
}

impl DpOp {
    /// For log lines about the dataplane's answer.
    pub fn describe(&self) -> String {
        match self {
            DpOp::AddSa(sa) => format!(
                "{} SA {:#010x} (reqid {}){}",
                match sa.direction {
                    Direction::Inbound => "inbound",
                    Direction::Outbound => "outbound",
                },
                sa.config.spi,
                sa.reqid,
                if sa.update { " update" } else { "" }
            ),
            DpOp::DeleteSa { direction, spi, .. } => format!(
                "delete of {} SA {spi:#010x}",
                match direction {
                    Direction::Inbound => "inbound",
                    Direction::Outbound => "outbound",
                }
            ),
            DpOp::AddPolicy(r) => format!("policy {}", r.id),
            DpOp::DeletePolicy(id) => format!("delete of policy {id}"),
        }
    }
}

pub fn ts_selector(t: &Ts) -> TrafficSelector {
    TrafficSelector {
        start: t.start,
        end: t.end,
        protocol: t.protocol,
        start_port: t.start_port,
        end_port: t.end_port,
    }
}

/// Policies for every pair of (local, remote) selectors of one family.
fn policies(reqid: u32, local: &[Ts], remote: &[Ts], narrowed: bool) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for l in local {
        for r in remote {
            if l.start.is_ipv4() != r.start.is_ipv4() || out.len() >= MAX_PAIRS {
                continue;
            }
            let k = out.len() as u32;
            let (id, priority, target) = if narrowed {
                (reqid << 8 | 0x80 | k, NARROWED_PRIORITY, reqid)
            } else {
                (reqid << 8 | k, BASE_PRIORITY, reqid | ACQUIRE_BIT)
            };
            out.push(PolicyRule {
                id,
                priority,
                src: ts_selector(l),
                dst: ts_selector(r),
                action: SpdAction::Protect { reqid: target },
            });
        }
    }
    out
}

/// The base (fail-closed) policies of a configured child.
pub fn base_policies(reqid: u32, local: &[Ts], remote: &[Ts]) -> Vec<PolicyRule> {
    policies(reqid, local, remote, false)
}

/// The policies of an up Child SA, from its narrowed selectors.
pub fn narrowed_policies(reqid: u32, local: &[Ts], remote: &[Ts]) -> Vec<PolicyRule> {
    policies(reqid, local, remote, true)
}

/// The reqid a policy id belongs to, and whether it is a narrowed one.
pub fn policy_owner(id: u32) -> (u32, bool) {
    (id >> 8, id & 0x80 != 0)
}

/// The child reqid an acquire names (base policies carry the acquire bit).
pub fn acquire_reqid(reqid: u32) -> u32 {
    reqid & !ACQUIRE_BIT
}

/// The two SAs of a Child SA, as the dataplane installs them. `local`/`remote` are the IKE
/// SA's current addresses (ports included: they give the UDP encapsulation under NAT).
pub fn sa_installs(
    c: &ChildSa,
    reqid: u32,
    nat: bool,
    local: SocketAddr,
    remote: SocketAddr,
    update: bool,
) -> (SaInstall, SaInstall) {
    let mk = |spi: u32, keys: &dataplane::crypto::SaKeys, l: IpAddr, r: IpAddr| {
        let mut cfg = if c.transport {
            SaConfig::transport(spi, c.proposal.transform, keys.clone())
        } else {
            SaConfig::tunnel(spi, c.proposal.transform, keys.clone(), l, r)
        };
        cfg.esn = c.proposal.esn;
        // RFC 3948 §2.1: ESP in UDP from our 4500 to the peer's (NAT-mapped) port.
        cfg.udp_encap = nat.then_some(UdpEncap {
            src_port: local.port(),
            dst_port: remote.port(),
        });
        cfg.selectors = SelectorSet {
            local: c.local_ts.iter().map(ts_selector).collect(),
            remote: c.remote_ts.iter().map(ts_selector).collect(),
        };
        cfg
    };
    let inbound = SaInstall {
        direction: Direction::Inbound,
        reqid,
        update: false,
        resource: None,
        config: mk(c.inbound_spi, &c.keys_in, local.ip(), remote.ip()),
    };
    let outbound = SaInstall {
        direction: Direction::Outbound,
        reqid,
        update,
        // RFC 9611: a per-resource Child SA's outbound SA serves its worker only.
        resource: c.resource,
        config: mk(c.outbound_spi, &c.keys_out, local.ip(), remote.ip()),
    };
    (inbound, outbound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Ts {
        crate::ike::child::parse_ts(s).unwrap()
    }

    #[test]
    fn base_policies_point_at_the_acquire_reqid_and_lose_to_narrowed_ones() {
        let base = base_policies(7, &[ts("10.1.0.0/16")], &[ts("10.2.0.0/16")]);
        let narrow = narrowed_policies(7, &[ts("10.1.0.0/24")], &[ts("10.2.0.0/24")]);
        assert_eq!(base.len(), 1);
        assert_eq!(
            base[0].action,
            SpdAction::Protect {
                reqid: 7 | ACQUIRE_BIT
            }
        );
        assert_eq!(narrow[0].action, SpdAction::Protect { reqid: 7 });
        assert!(narrow[0].priority < base[0].priority);
        assert_ne!(base[0].id, narrow[0].id);
        assert_eq!(policy_owner(base[0].id), (7, false));
        assert_eq!(policy_owner(narrow[0].id), (7, true));
        assert_eq!(acquire_reqid(7 | ACQUIRE_BIT), 7);
    }

    #[test]
    fn pairs_of_mixed_families_are_skipped() {
        let p = base_policies(
            3,
            &[ts("10.1.0.0/16"), ts("fd00:1::/64")],
            &[ts("10.2.0.0/16"), ts("fd00:2::/64")],
        );
        assert_eq!(p.len(), 2);
    }
}
