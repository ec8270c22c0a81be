//! What the dataplane tells the operator besides the counters file: the stats file (JSON,
//! rewritten every interval; scripts and the demo read it) and the summary printed at exit.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use crate::control::install::Installer;
use crate::esp::SaCounters;
use crate::io::xdp::{XdpSteering, XdpVerdict};
use crate::io::Side;
use crate::route::hops::HopTable;
use crate::worker::{WorkerCounter, WorkerStats};

/// The stats file's content: per-worker counters, SAs (the first thousand each way), XDP
/// verdicts per side over the `queues` of each (outside, inside), and the next hops.
pub fn stats_json(
    stats: &[Arc<WorkerStats>],
    installer: &Installer,
    xdp: &XdpSteering,
    queues: [u32; 2],
    hops: &HopTable,
) -> serde_json::Value {
    let workers: Vec<_> = stats.iter().map(|s| s.to_json()).collect();
    let mut sa_list = Vec::new();
    let drops = |c: &SaCounters| {
        c.drops
            .nonzero()
            .map(|(r, n)| (r.name(), n))
            .collect::<BTreeMap<_, _>>()
    };
    // The JSON lists the first SAs only: the counters region is for many.
    for (inst, sa) in installer.outbound().take(1000) {
        let c = sa.counters();
        sa_list.push(json!({"name": inst.name, "direction": "out", "reqid": inst.reqid, "spi": format!("{:#010x}", sa.spi()), "packets": c.packets, "bytes": c.bytes, "last_seq": sa.last_seq(), "drops": drops(&c)}));
    }
    for (spi, inst) in installer.inbound().take(1000) {
        if let Some(sa) = installer.db().inbound.get(spi) {
            let c = sa.counters();
            sa_list.push(json!({"name": inst.name, "direction": "in", "reqid": inst.reqid, "spi": format!("{spi:#010x}"), "packets": c.packets, "bytes": c.bytes, "drops": drops(&c)}));
        }
    }
    let (n_sas, n_policies) = installer.counts();
    let mut x = serde_json::Map::new();
    for (side, n) in [(Side::Outside, queues[0]), (Side::Inside, queues[1])] {
        let m: BTreeMap<_, _> = XdpVerdict::ALL
            .iter()
            .map(|v| (v.name(), xdp.total(side, n, *v).unwrap_or(0)))
            .filter(|x| x.1 > 0)
            .collect();
        x.insert(side_name(side).into(), json!(m));
    }
    x.insert("inherited_prefixes".into(), json!(xdp.inherited().count()));
    let mut next_hops: Vec<String> = hops
        .map
        .iter()
        .map(|((side, dst), h)| {
            let mac = h
                .dst_mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            format!("{} {dst} via {mac} mtu {}", side_name(*side), h.mtu)
        })
        .collect();
    next_hops.sort();
    json!({"workers": workers, "sa_count": n_sas, "policy_count": n_policies, "sas": sa_list, "xdp": x, "next_hops": next_hops})
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Outside => "outside",
        Side::Inside => "inside",
    }
}

/// Write [`stats_json`] to `path` (through a temporary file and a rename, so readers never
/// see half a file).
pub fn write_stats(
    path: &Path,
    stats: &[Arc<WorkerStats>],
    installer: &Installer,
    xdp: &XdpSteering,
    queues: [u32; 2],
    hops: &HopTable,
) {
    let v = stats_json(stats, installer, xdp, queues, hops);
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, serde_json::to_vec_pretty(&v).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// The counters printed when the dataplane stops.
pub fn print_summary(stats: &[Arc<WorkerStats>], installer: &Installer) {
    use WorkerCounter as C;
    println!("dataplane counters:");
    for (w, s) in stats.iter().enumerate() {
        println!(
            "  worker {w}: inside rx {} tx {}, outside rx {} tx {}, encapsulated {}, decapsulated {}",
            s.get(C::RxPacketsInside),
            s.get(C::TxPacketsInside),
            s.get(C::RxPacketsOutside),
            s.get(C::TxPacketsOutside),
            s.get(C::Encapsulated),
            s.get(C::Decapsulated)
        );
        for (name, n) in s.nonzero_drops() {
            println!("    drop {name:<20} {n}");
        }
    }
    for (inst, sa) in installer.outbound().take(20) {
        let c = sa.counters();
        println!(
            "  SA {} out spi {:#010x}: {} packets, {} bytes",
            inst.name.as_deref().unwrap_or("-"),
            sa.spi(),
            c.packets,
            c.bytes
        );
    }
    for (spi, inst) in installer.inbound().take(20) {
        if let Some(sa) = installer.db().inbound.get(spi) {
            let c = sa.counters();
            println!(
                "  SA {} in  spi {spi:#010x}: {} packets, {} bytes",
                inst.name.as_deref().unwrap_or("-"),
                c.packets,
                c.bytes
            );
        }
    }
}
