//! The next-hop refresh loop: resolves what the workers missed and the tunnel endpoints as
//! SAs arrive, re-checks every known destination every couple of seconds, and publishes a
//! new [`HopTable`] when anything changed. Run by the control thread (it makes syscalls).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::io::Side;
use crate::route::hops::{Hop, HopCache, HopTable};
use crate::route::nexthop::{NextHopResolver, Resolution};

/// How often every known destination is resolved again.
const REFRESH: Duration = Duration::from_secs(2);

/// The slow path behind a [`HopCache`].
pub struct HopRefresher {
    resolver: NextHopResolver,
    /// The interface each side must leave by (ifindex).
    ifindex: [u32; 2],
    known: Vec<(Side, IpAddr)>,
    table: HopTable,
    last_refresh: Instant,
}

impl HopRefresher {
    /// `ifindex`: the outside and inside interfaces.
    pub fn new(resolver: NextHopResolver, ifindex: [u32; 2]) -> HopRefresher {
        HopRefresher {
            resolver,
            ifindex,
            known: Vec::new(),
            table: HopTable::default(),
            last_refresh: Instant::now(),
        }
    }

    /// The table last published.
    pub fn table(&self) -> &HopTable {
        &self.table
    }

    /// Resolve the destinations the workers asked for (and, every `REFRESH`, all known
    /// ones); publish to `hops` if anything changed.
    pub fn tick(&mut self, hops: &HopCache) {
        let mut wanted = hops.take_requests();
        if self.last_refresh.elapsed() > REFRESH {
            wanted.extend(self.known.iter().copied());
            self.last_refresh = Instant::now();
        }
        let mut changed = false;
        for (side, dst) in wanted {
            match self.resolver.resolve(dst) {
                Ok(Resolution::Ready(nh)) => {
                    let expect = match side {
                        Side::Outside => self.ifindex[0],
                        Side::Inside => self.ifindex[1],
                    };
                    if nh.ifindex != expect {
                        warn!(%dst, via = %nh.ifname, "route leaves by the other interface; not forwarding there");
                        continue;
                    }
                    let hop = Hop {
                        src_mac: nh.src_mac,
                        dst_mac: nh.dst_mac,
                        mtu: nh.mtu.min(u32::from(u16::MAX)) as u16,
                    };
                    if self.table.get(side, dst) != Some(hop) {
                        self.table.map.insert((side, dst), hop);
                        changed = true;
                    }
                    if !self.known.contains(&(side, dst)) {
                        self.known.push((side, dst));
                    }
                }
                Ok(Resolution::Pending { .. }) => hops.request(side, dst),
                Ok(Resolution::Unreachable(why)) => warn!(%dst, "no next hop: {why}"),
                Err(e) => warn!(%dst, "next hop lookup failed: {e}"),
            }
        }
        if changed {
            hops.publish(self.table.clone());
        }
    }
}
