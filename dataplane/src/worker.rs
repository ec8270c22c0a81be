//! The per-core worker: receive a batch, classify, run the ESP engine, rewrite layer 2,
//! transmit. Generic over [`WorkerIo`], so the same loop runs on AF_XDP sockets and on
//! in-memory ports (tests, the pipeline benchmark).
//!
//! Per packet there is no allocation, lock, log line or system call: SAs are taken once
//! per run of consecutive packets of the same SA, the next-hop table once per batch, and
//! counters are published once per batch.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::esp::{self, DropReason, FlowKey, Frame, Mode, Verdict};
use crate::hops::{HopCache, HopTable};
use crate::icmp;
use crate::io::WorkerIo;
use crate::sadb::SaStore;
use crate::spd::SpdAction;
use crate::wire::{checksum, ethernet, Ipv4Packet};
use crate::xdp::Side;

macro_rules! worker_drops {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// Why a worker dropped a packet outside the ESP engine.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum WorkerDrop { $( $(#[$doc])* $variant, )* }
        impl WorkerDrop {
            pub const ALL: &'static [WorkerDrop] = &[ $( WorkerDrop::$variant, )* ];
            pub const COUNT: usize = [ $( WorkerDrop::$variant, )* ].len();
            pub fn name(self) -> &'static str { match self { $( WorkerDrop::$variant => $name, )* } }
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
}

/// Counters of one worker, published once per batch, read by anyone.
#[derive(Debug)]
pub struct WorkerStats {
    pub rx_packets: [AtomicU64; 2],
    pub rx_bytes: [AtomicU64; 2],
    pub tx_packets: [AtomicU64; 2],
    pub tx_bytes: [AtomicU64; 2],
    pub esp_drops: [AtomicU64; DropReason::COUNT],
    pub worker_drops: [AtomicU64; WorkerDrop::COUNT],
    pub encapsulated: AtomicU64,
    pub decapsulated: AtomicU64,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            rx_packets: Default::default(),
            rx_bytes: Default::default(),
            tx_packets: Default::default(),
            tx_bytes: Default::default(),
            esp_drops: std::array::from_fn(|_| AtomicU64::new(0)),
            worker_drops: std::array::from_fn(|_| AtomicU64::new(0)),
            encapsulated: AtomicU64::new(0),
            decapsulated: AtomicU64::new(0),
        }
    }
}

#[derive(Default)]
struct Local {
    rx_packets: [u64; 2],
    rx_bytes: [u64; 2],
    tx_packets: [u64; 2],
    tx_bytes: [u64; 2],
    esp_drops: [u64; DropReason::COUNT],
    worker_drops: [u64; WorkerDrop::COUNT],
    encapsulated: u64,
    decapsulated: u64,
}

impl Local {
    fn publish(&mut self, s: &WorkerStats) {
        fn add(a: &AtomicU64, v: &mut u64) {
            if *v != 0 {
                // Single writer: a relaxed load+store would do, fetch_add keeps it simple.
                a.fetch_add(*v, Ordering::Relaxed);
                *v = 0;
            }
        }
        for i in 0..2 {
            add(&s.rx_packets[i], &mut self.rx_packets[i]);
            add(&s.rx_bytes[i], &mut self.rx_bytes[i]);
            add(&s.tx_packets[i], &mut self.tx_packets[i]);
            add(&s.tx_bytes[i], &mut self.tx_bytes[i]);
        }
        for (a, v) in s.esp_drops.iter().zip(self.esp_drops.iter_mut()) {
            add(a, v);
        }
        for (a, v) in s.worker_drops.iter().zip(self.worker_drops.iter_mut()) {
            add(a, v);
        }
        add(&s.encapsulated, &mut self.encapsulated);
        add(&s.decapsulated, &mut self.decapsulated);
    }
}

fn side_idx(s: Side) -> usize {
    match s {
        Side::Outside => 0,
        Side::Inside => 1,
    }
}

/// Addresses the gateway answers from (ICMP errors on the inside).
#[derive(Debug, Clone, Copy, Default)]
pub struct GatewayAddrs {
    pub inside_v4: Option<Ipv4Addr>,
    pub inside_v6: Option<Ipv6Addr>,
}

/// One worker and its I/O.
pub struct Worker<I: WorkerIo> {
    pub io: I,
    sas: Arc<SaStore>,
    hops: Arc<HopCache>,
    stats: Arc<WorkerStats>,
    gw: GatewayAddrs,
    batch: usize,
    local: Local,
    rx: Vec<Frame<I::Buf>>,
    run: Vec<Frame<I::Buf>>,
    verdicts: Vec<Verdict>,
}

/// Decrement the TTL / hop limit of the IP packet at the start of `d` (RFC 1812 §5.3.1).
/// False if it would reach zero.
fn decrement_ttl(d: &mut [u8]) -> bool {
    match d.first().map(|b| b >> 4) {
        Some(4) if d.len() >= 20 => {
            if d[8] <= 1 {
                return false;
            }
            let old = u16::from_be_bytes([d[8], d[9]]);
            d[8] -= 1;
            let new = u16::from_be_bytes([d[8], d[9]]);
            let c = checksum::update16(u16::from_be_bytes([d[10], d[11]]), old, new);
            d[10..12].copy_from_slice(&c.to_be_bytes());
            true
        }
        Some(6) if d.len() >= 40 => {
            if d[7] <= 1 {
                return false;
            }
            d[7] -= 1;
            true
        }
        _ => false,
    }
}

impl<I: WorkerIo> Worker<I> {
    pub fn new(
        io: I,
        sas: Arc<SaStore>,
        hops: Arc<HopCache>,
        stats: Arc<WorkerStats>,
        gw: GatewayAddrs,
        batch: usize,
    ) -> Self {
        Worker {
            io,
            sas,
            hops,
            stats,
            gw,
            batch,
            local: Local::default(),
            rx: Vec::with_capacity(batch),
            run: Vec::with_capacity(batch),
            verdicts: vec![Verdict::Forward; batch],
        }
    }

    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// Run until `stop` is set, blocking briefly when idle.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut idle_rounds = 0u32;
        while !stop.load(Ordering::Relaxed) {
            if self.poll_once() == 0 {
                idle_rounds += 1;
                if idle_rounds > 64 {
                    self.io.idle();
                }
            } else {
                idle_rounds = 0;
            }
        }
        self.io.flush();
        self.local.publish(&self.stats);
    }

    /// One batch from each side; returns the packets received.
    pub fn poll_once(&mut self) -> usize {
        let table = self.hops.snapshot();
        let n = self.inside_batch(&table) + self.outside_batch(&table);
        self.io.flush();
        self.local.publish(&self.stats);
        n
    }

    fn drop_frame(&mut self, f: Frame<I::Buf>, why: WorkerDrop) {
        self.local.worker_drops[why as usize] += 1;
        self.io.recycle(f.into_buffer());
    }

    fn transmit(&mut self, side: Side, mut f: Frame<I::Buf>, src: [u8; 6], dst: [u8; 6]) {
        let ethertype = match f.data().first().map(|b| b >> 4) {
            Some(6) => ethernet::ETHERTYPE_IPV6,
            _ => ethernet::ETHERTYPE_IPV4,
        };
        if !f.push_front(ethernet::HEADER_LEN) {
            self.local.esp_drops[DropReason::NoRoom as usize] += 1;
            self.io.recycle(f.into_buffer());
            return;
        }
        let _ = ethernet::EthernetRepr {
            src,
            dst,
            ethertype,
        }
        .emit(f.data_mut());
        let len = f.len() as u64;
        match self.io.send(side, f) {
            Ok(()) => {
                self.local.tx_packets[side_idx(side)] += 1;
                self.local.tx_bytes[side_idx(side)] += len;
            }
            Err(f) => self.drop_frame(f, WorkerDrop::TxFull),
        }
    }

    /// Strip Ethernet; returns (src MAC, dst MAC) or drops the frame.
    fn strip_l2(&mut self, side: Side, f: &mut Frame<I::Buf>) -> Option<([u8; 6], [u8; 6])> {
        self.local.rx_packets[side_idx(side)] += 1;
        self.local.rx_bytes[side_idx(side)] += f.len() as u64;
        let eth = ethernet::EthernetFrame::new_checked(f.data()).ok()?;
        let (src, dst, t) = (eth.src(), eth.dst(), eth.ethertype());
        if t != ethernet::ETHERTYPE_IPV4 && t != ethernet::ETHERTYPE_IPV6 {
            return None;
        }
        f.pull_front(ethernet::HEADER_LEN);
        Some((src, dst))
    }

    /// Inside → outside: policy, encapsulation.
    fn inside_batch(&mut self, table: &HopTable) -> usize {
        let mut rx = std::mem::take(&mut self.rx);
        self.io.recv(Side::Inside, &mut rx, self.batch);
        let n = rx.len();
        let mut current: Option<usize> = None;
        for mut f in rx.drain(..) {
            let Some((peer_mac, our_mac)) = self.strip_l2(Side::Inside, &mut f) else {
                self.drop_frame(f, WorkerDrop::NotIp);
                continue;
            };
            let Some(flow) = FlowKey::of_packet(f.data()) else {
                self.local.esp_drops[DropReason::Malformed as usize] += 1;
                self.io.recycle(f.into_buffer());
                continue;
            };
            match self.sas.spd.lookup(&flow) {
                None => self.drop_frame(f, WorkerDrop::NoPolicy),
                Some(SpdAction::Discard) => self.drop_frame(f, WorkerDrop::PolicyDiscard),
                Some(SpdAction::Bypass) => {
                    if !decrement_ttl(f.data_mut()) {
                        self.drop_frame(f, WorkerDrop::TtlExpired);
                        continue;
                    }
                    match table.get(Side::Outside, flow.dst) {
                        Some(h) => self.transmit(Side::Outside, f, h.src_mac, h.dst_mac),
                        None => {
                            self.hops.request(Side::Outside, flow.dst);
                            self.drop_frame(f, WorkerDrop::NoNextHop);
                        }
                    }
                }
                Some(SpdAction::Protect(i)) => {
                    if !decrement_ttl(f.data_mut()) {
                        self.drop_frame(f, WorkerDrop::TtlExpired);
                        continue;
                    }
                    if current != Some(i) {
                        if let Some(prev) = current {
                            self.seal_run(prev, table);
                        }
                        current = Some(i);
                    }
                    // Check the tunnel MTU before spending a sequence number.
                    match self.fits_tunnel(i, &f, table) {
                        Fit::Yes => self.run.push(f),
                        Fit::NoHop => self.drop_frame(f, WorkerDrop::NoNextHop),
                        Fit::TooBig(max) => self.too_big(f, max, peer_mac, our_mac),
                    }
                }
            }
        }
        if let Some(prev) = current {
            self.seal_run(prev, table);
        }
        self.rx = rx;
        n
    }

    /// The MTU check before encapsulation, from the SA's immutable shape: no lock.
    fn fits_tunnel(&mut self, sa: usize, f: &Frame<I::Buf>, table: &HopTable) -> Fit {
        let Some(shape) = self.sas.outbound_shape.get(sa).copied() else {
            return Fit::NoHop;
        };
        let dst = match shape.mode {
            Mode::Tunnel { remote, .. } => Some(remote),
            Mode::Transport => FlowKey::of_packet(f.data()).map(|k| k.dst),
        };
        let Some(dst) = dst else { return Fit::NoHop };
        let Some(hop) = table.get(Side::Outside, dst) else {
            self.hops.request(Side::Outside, dst);
            return Fit::NoHop;
        };
        let v6 = f.data().first().map(|b| b >> 4) == Some(6);
        let max = shape.max_inner_len(usize::from(hop.mtu), v6);
        if f.len() <= max {
            Fit::Yes
        } else {
            Fit::TooBig(max)
        }
    }

    /// RFC 4301 §8.2.1 / RFC 1191 / RFC 4443: tell the sender what fits.
    fn too_big(&mut self, mut f: Frame<I::Buf>, max: usize, peer_mac: [u8; 6], our_mac: [u8; 6]) {
        let ok = match f.data().first().map(|b| b >> 4) {
            Some(4) => {
                let df = Ipv4Packet::new_checked(f.data())
                    .map(|p| p.dont_frag())
                    .unwrap_or(false);
                if !df {
                    self.drop_frame(f, WorkerDrop::TooBigNoDf);
                    return;
                }
                match self.gw.inside_v4 {
                    Some(gw) => icmp::frag_needed_v4(&mut f, gw, max as u16),
                    None => false,
                }
            }
            Some(6) => match self.gw.inside_v6 {
                Some(gw) => icmp::packet_too_big_v6(&mut f, gw, max.max(1280) as u32),
                None => false,
            },
            _ => false,
        };
        self.local.worker_drops[WorkerDrop::TooBigIcmpSent as usize] += 1;
        if ok {
            // Back out the inside interface to the sender's MAC.
            self.transmit(Side::Inside, f, our_mac, peer_mac);
        } else {
            self.io.recycle(f.into_buffer());
        }
    }

    fn seal_run(&mut self, sa: usize, table: &HopTable) {
        if self.run.is_empty() {
            return;
        }
        let mut run = std::mem::take(&mut self.run);
        let mut verdicts = std::mem::take(&mut self.verdicts);
        let k = run.len();
        let remote = {
            let Ok(mut guard) = self.sas.outbound[sa].1.lock() else {
                run.drain(..).for_each(|f| self.io.recycle(f.into_buffer()));
                self.run = run;
                self.verdicts = verdicts;
                return;
            };
            esp::encap_batch(&mut guard, &mut run, &mut verdicts[..k]);
            match guard.config().mode {
                Mode::Tunnel { remote, .. } => Some(remote),
                Mode::Transport => None,
            }
        };
        for (f, v) in run.drain(..).zip(verdicts.iter().copied()) {
            match v {
                Verdict::Forward => {
                    self.local.encapsulated += 1;
                    let dst = remote.or_else(|| FlowKey::of_packet(f.data()).map(|k| k.dst));
                    match dst.and_then(|d| table.get(Side::Outside, d)) {
                        Some(h) => self.transmit(Side::Outside, f, h.src_mac, h.dst_mac),
                        None => self.drop_frame(f, WorkerDrop::NoNextHop),
                    }
                }
                Verdict::Drop(r) => {
                    self.local.esp_drops[r as usize] += 1;
                    self.io.recycle(f.into_buffer());
                }
            }
        }
        self.run = run;
        self.verdicts = verdicts;
    }

    /// Outside → inside: decapsulation.
    fn outside_batch(&mut self, table: &HopTable) -> usize {
        let mut rx = std::mem::take(&mut self.rx);
        self.io.recv(Side::Outside, &mut rx, self.batch);
        let n = rx.len();
        let mut current: Option<u32> = None;
        for mut f in rx.drain(..) {
            if self.strip_l2(Side::Outside, &mut f).is_none() {
                self.drop_frame(f, WorkerDrop::NotIp);
                continue;
            }
            let spi = esp::peek_spi(f.data()).unwrap_or(0);
            if current != Some(spi) {
                if let Some(prev) = current {
                    self.open_run(prev, table);
                }
                current = Some(spi);
            }
            self.run.push(f);
        }
        if let Some(prev) = current {
            self.open_run(prev, table);
        }
        self.rx = rx;
        n
    }

    fn open_run(&mut self, spi: u32, table: &HopTable) {
        if self.run.is_empty() {
            return;
        }
        let mut run = std::mem::take(&mut self.run);
        let mut verdicts = std::mem::take(&mut self.verdicts);
        let k = run.len();
        match self.sas.inbound.get(&spi).map(|(_, m)| m.lock()) {
            Some(Ok(mut guard)) => esp::decap_batch(&mut *guard, &mut run, &mut verdicts[..k]),
            // Unknown SPI (or not ESP): let the engine say which, on an empty table.
            _ => esp::decap_batch(&mut esp::SpiMap::default(), &mut run, &mut verdicts[..k]),
        }
        for (mut f, v) in run.drain(..).zip(verdicts.iter().copied()) {
            match v {
                Verdict::Forward => {
                    self.local.decapsulated += 1;
                    if !decrement_ttl(f.data_mut()) {
                        self.drop_frame(f, WorkerDrop::TtlExpired);
                        continue;
                    }
                    let dst = FlowKey::of_packet(f.data()).map(|k| k.dst);
                    match dst.and_then(|d| table.get(Side::Inside, d).map(|h| (d, h))) {
                        Some((_, h)) => self.transmit(Side::Inside, f, h.src_mac, h.dst_mac),
                        None => {
                            if let Some(d) = dst {
                                self.hops.request(Side::Inside, d);
                            }
                            self.drop_frame(f, WorkerDrop::NoNextHop);
                        }
                    }
                }
                Verdict::Drop(r) => {
                    self.local.esp_drops[r as usize] += 1;
                    self.io.recycle(f.into_buffer());
                }
            }
        }
        self.run = run;
        self.verdicts = verdicts;
    }
}

enum Fit {
    Yes,
    NoHop,
    TooBig(usize),
}
