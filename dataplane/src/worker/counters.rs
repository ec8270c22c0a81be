//! A worker's counters, declared once. Each list below generates its enum, the counter
//! arrays, the names written to the counters file and the stats JSON — the way
//! [`drop_reasons!`](crate::esp::DropReason) declares the ESP engine's drops (VPP's "error
//! counters declared as data"): no counter is known by a bare index or a hand-written name.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::esp::DropReason;
use crate::io::Side;
use crate::shm::counters::{WorkerCounters, WORKER_FIXED};

macro_rules! worker_counters {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal $(in $side:literal)?, )*) => {
        /// What a worker counts besides drops. The order is the counters file's (an ABI:
        /// `vpnctl` reads it).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum WorkerCounter { $( $(#[$doc])* $variant, )* }

        impl WorkerCounter {
            /// Every counter, in counters-file order.
            pub const ALL: &'static [WorkerCounter] = &[ $( WorkerCounter::$variant, )* ];
            /// Number of counters (length of a counter array).
            pub const COUNT: usize = [ $( WorkerCounter::$variant, )* ].len();

            /// Stable snake_case name; the two sides of a per-side counter share it.
            pub fn name(self) -> &'static str {
                match self { $( WorkerCounter::$variant => $name, )* }
            }
            /// `"outside"` or `"inside"` for a per-side counter.
            pub fn side(self) -> Option<&'static str> {
                match self { $( WorkerCounter::$variant => None $( .or(Some($side)) )?, )* }
            }
        }
    };
}

worker_counters! {
    /// Frames received on the outside (WAN) interface.
    RxPacketsOutside => "rx_packets" in "outside",
    /// Bytes of those frames.
    RxBytesOutside => "rx_bytes" in "outside",
    /// Frames transmitted on the outside interface.
    TxPacketsOutside => "tx_packets" in "outside",
    /// Bytes of those frames.
    TxBytesOutside => "tx_bytes" in "outside",
    /// Frames received on the inside (LAN) interface.
    RxPacketsInside => "rx_packets" in "inside",
    /// Bytes of those frames.
    RxBytesInside => "rx_bytes" in "inside",
    /// Frames transmitted on the inside interface.
    TxPacketsInside => "tx_packets" in "inside",
    /// Bytes of those frames.
    TxBytesInside => "tx_bytes" in "inside",
    /// Packets the ESP engine encapsulated.
    Encapsulated => "encapsulated",
    /// Packets the ESP engine decapsulated.
    Decapsulated => "decapsulated",
}

// The counters file holds exactly these, in this order.
const _: () = assert!(WorkerCounter::COUNT == WORKER_FIXED);

impl WorkerCounter {
    pub fn rx_packets(side: Side) -> Self {
        match side {
            Side::Outside => WorkerCounter::RxPacketsOutside,
            Side::Inside => WorkerCounter::RxPacketsInside,
        }
    }
    pub fn rx_bytes(side: Side) -> Self {
        match side {
            Side::Outside => WorkerCounter::RxBytesOutside,
            Side::Inside => WorkerCounter::RxBytesInside,
        }
    }
    pub fn tx_packets(side: Side) -> Self {
        match side {
            Side::Outside => WorkerCounter::TxPacketsOutside,
            Side::Inside => WorkerCounter::TxPacketsInside,
        }
    }
    pub fn tx_bytes(side: Side) -> Self {
        match side {
            Side::Outside => WorkerCounter::TxBytesOutside,
            Side::Inside => WorkerCounter::TxBytesInside,
        }
    }
}

macro_rules! worker_drops {
    ($( $(#[doc = $doc:literal])* $variant:ident => $name:literal, )*) => {
        /// Why a worker dropped a packet outside the ESP engine.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum WorkerDrop { $( $(#[doc = $doc])* $variant, )* }
        impl WorkerDrop {
            /// Every reason, in counter order.
            pub const ALL: &'static [WorkerDrop] = &[ $( WorkerDrop::$variant, )* ];
            /// Number of reasons (length of a counter array).
            pub const COUNT: usize = [ $( WorkerDrop::$variant, )* ].len();
            /// Stable snake_case name, used in metrics and logs.
            pub fn name(self) -> &'static str { match self { $( WorkerDrop::$variant => $name, )* } }
            /// What it means, in one line: the variant's doc comment (`vpnctl stats`,
            /// metrics HELP).
            pub fn meaning(self) -> &'static str {
                match self { $( WorkerDrop::$variant => concat!($($doc),*).trim(), )* }
            }
        }
    };
}

worker_drops! {
    /// Not IPv4 or IPv6 (the XDP program should not have sent it).
    NotIp => "not_ip",
    /// An inside packet no policy matches.
    NoPolicy => "no_policy",
    /// A policy says discard (RFC 4301 §4.4.1).
    PolicyDiscard => "policy_discard",
    /// A protect policy matched but its SA is not installed; the control plane was told
    /// (an acquire, rate-limited).
    NoSa => "no_sa",
    /// No neighbour entry yet; the kernel was asked to resolve it.
    NoNextHop => "no_next_hop",
    /// TTL or hop limit would reach zero.
    TtlExpired => "ttl_expired",
    /// Too big for the tunnel; an ICMP error went back to the sender.
    TooBigIcmpSent => "too_big_icmp_sent",
    /// Too big for the tunnel, DF clear: we do not fragment.
    TooBigNoDf => "too_big_df_clear",
    /// The transmit ring was full.
    TxFull => "tx_ring_full",
    /// A receive ring held a standing queue (more than the AQM limit after every batch for
    /// an interval): the head packet was dropped so the sender slows down (CoDel, RFC 8289).
    AqmStandingQueue => "aqm_standing_queue",
}

/// Counters of one worker, published once per batch, read by anyone.
#[derive(Debug)]
pub struct WorkerStats {
    pub counters: [AtomicU64; WorkerCounter::COUNT],
    pub esp_drops: [AtomicU64; DropReason::COUNT],
    pub worker_drops: [AtomicU64; WorkerDrop::COUNT],
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            esp_drops: std::array::from_fn(|_| AtomicU64::new(0)),
            worker_drops: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn ld(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl WorkerStats {
    pub fn get(&self, c: WorkerCounter) -> u64 {
        ld(&self.counters[c as usize])
    }
    pub fn esp_drop(&self, r: DropReason) -> u64 {
        ld(&self.esp_drops[r as usize])
    }
    pub fn worker_drop(&self, r: WorkerDrop) -> u64 {
        ld(&self.worker_drops[r as usize])
    }

    /// The non-zero drops of both kinds, by name.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let esp = DropReason::ALL
            .iter()
            .map(|&r| (r.name(), self.esp_drop(r)));
        let wrk = WorkerDrop::ALL
            .iter()
            .map(|&r| (r.name(), self.worker_drop(r)));
        esp.chain(wrk).filter(|&(_, n)| n > 0)
    }

    /// What the counters file holds for this worker.
    pub fn snapshot(&self) -> WorkerCounters {
        WorkerCounters {
            fixed: std::array::from_fn(|i| ld(&self.counters[i])),
            esp_drops: self.esp_drops.iter().map(ld).collect(),
            worker_drops: self.worker_drops.iter().map(ld).collect(),
        }
    }

    /// This worker in the stats file: every counter (per-side ones grouped by side), and the
    /// non-zero drops by reason.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for &c in WorkerCounter::ALL {
            let v = serde_json::Value::from(self.get(c));
            match c.side() {
                Some(side) => {
                    let e = m
                        .entry(c.name())
                        .or_insert_with(|| serde_json::Value::Object(Default::default()));
                    if let serde_json::Value::Object(o) = e {
                        o.insert(side.into(), v);
                    }
                }
                None => {
                    m.insert(c.name().into(), v);
                }
            }
        }
        let esp: BTreeMap<_, _> = DropReason::ALL
            .iter()
            .map(|&r| (r.name(), self.esp_drop(r)))
            .filter(|x| x.1 > 0)
            .collect();
        let wrk: BTreeMap<_, _> = WorkerDrop::ALL
            .iter()
            .map(|&r| (r.name(), self.worker_drop(r)))
            .filter(|x| x.1 > 0)
            .collect();
        m.insert("esp_drops".into(), serde_json::json!(esp));
        m.insert("worker_drops".into(), serde_json::json!(wrk));
        serde_json::Value::Object(m)
    }
}

/// A worker's own copy of its counters between publications (no atomics per packet).
#[derive(Default)]
pub(super) struct Local {
    pub counters: [u64; WorkerCounter::COUNT],
    pub esp_drops: [u64; DropReason::COUNT],
    pub worker_drops: [u64; WorkerDrop::COUNT],
}

impl Local {
    pub fn count(&mut self, c: WorkerCounter, n: u64) {
        self.counters[c as usize] += n;
    }
    pub fn esp_drop(&mut self, r: DropReason) {
        self.esp_drops[r as usize] += 1;
    }
    pub fn worker_drop(&mut self, r: WorkerDrop) {
        self.worker_drops[r as usize] += 1;
    }

    /// Add to the shared counters and start again from zero.
    pub fn publish(&mut self, s: &WorkerStats) {
        fn add(a: &AtomicU64, v: &mut u64) {
            if *v != 0 {
                // Single writer: a relaxed load+store would do, fetch_add keeps it simple.
                a.fetch_add(*v, Ordering::Relaxed);
                *v = 0;
            }
        }
        let shared = s
            .counters
            .iter()
            .chain(s.esp_drops.iter())
            .chain(s.worker_drops.iter());
        let local = self
            .counters
            .iter_mut()
            .chain(self.esp_drops.iter_mut())
            .chain(self.worker_drops.iter_mut());
        for (a, v) in shared.zip(local) {
            add(a, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_drop_has_a_one_line_meaning() {
        for r in WorkerDrop::ALL {
            let m = r.meaning();
            assert!(!m.is_empty() && !m.starts_with(' '), "{r:?}: {m:?}");
        }
        assert_eq!(
            WorkerDrop::NoSa.meaning(),
            "A protect policy matched but its SA is not installed; the control plane was told (an acquire, rate-limited)."
        );
    }

    #[test]
    fn names_are_unique_and_the_json_groups_sides() {
        let mut names: Vec<_> = WorkerCounter::ALL
            .iter()
            .map(|c| format!("{}{:?}", c.name(), c.side()))
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), WorkerCounter::COUNT);
        let s = WorkerStats::default();
        let mut l = Local::default();
        l.count(WorkerCounter::rx_packets(Side::Inside), 3);
        l.count(WorkerCounter::Encapsulated, 2);
        l.worker_drop(WorkerDrop::NoSa);
        l.publish(&s);
        let j = s.to_json();
        assert_eq!(j["rx_packets"]["inside"], 3);
        assert_eq!(j["rx_packets"]["outside"], 0);
        assert_eq!(j["encapsulated"], 2);
        assert_eq!(j["worker_drops"]["no_sa"], 1);
        assert_eq!(
            s.snapshot().fixed[WorkerCounter::RxPacketsInside as usize],
            3
        );
        assert_eq!(
            l.counters,
            [0; WorkerCounter::COUNT],
            "published counters restart"
        );
    }
}
