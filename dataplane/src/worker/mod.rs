//! The per-core worker: receive a batch, classify, run the ESP engine, rewrite layer 2,
//! transmit. Generic over [`WorkerIo`], so the same loop runs on AF_XDP sockets and on
//! in-memory ports (tests, the pipeline benchmark).
//!
//! Per packet there is no allocation, lock, log line or system call: SAs are taken once
//! per run of consecutive packets of the same SA, the next-hop table once per batch, and
//! counters are published once per batch.

pub mod aqm;
mod counters;
pub mod icmp;

pub use aqm::Aqm;
pub use counters::{WorkerCounter, WorkerDrop, WorkerStats};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use crate::esp::{self, DropReason, FlowKey, Frame, Mode, OutboundSa, SaShape, Verdict};
use crate::io::Side;
use crate::io::WorkerIo;
use crate::policy::spd::SpdAction;
use crate::route::hops::{HopCache, HopTable};
use crate::sa::sadb::{Replica, ReplicaData, SaDb};
use crate::sa::Direction;
use crate::wire::{checksum, ethernet, Ipv4Packet};
use counters::Local;

/// What a worker tells the control thread, which turns it into ring records, log lines or
/// lease updates (the worker knows nothing of the ring's format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// RFC 4301 §5.1 / RFC 7296 §1.3: traffic matched a protect policy whose SA is not
    /// installed (rate-limited per policy).
    Acquire {
        policy: u32,
        reqid: u32,
        flow: FlowKey,
    },
    /// ESP arrived for an SPI this dataplane does not hold (rate-limited per SPI).
    UnknownSpi { spi: u32, src: IpAddr, dst: IpAddr },
    /// An SA's sequence-number or lifetime event (raised once each).
    Sa {
        direction: Direction,
        reqid: u32,
        event: esp::SaEvent,
    },
    /// An outbound SA used half of its sequence lease: persist and grant more.
    LeaseLow { reqid: u32, spi: u32 },
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
    db: Arc<SaDb>,
    replica: Replica,
    events: Option<Sender<WorkerEvent>>,
    limiter: EventLimiter,
    hops: Arc<HopCache>,
    stats: Arc<WorkerStats>,
    gw: GatewayAddrs,
    batch: usize,
    local: Local,
    rx: Vec<Frame<I::Buf>>,
    run: Vec<Frame<I::Buf>>,
    verdicts: Vec<Verdict>,
    /// Bounded queueing per side's receive rings (index: [`side_index`]).
    aqm: [Aqm; 2],
    /// A time passed to the AQM when the backlog is under its limit (it reads no clock then).
    epoch: Instant,
    /// Empty polls before the worker blocks in `WorkerIo::idle`.
    idle_polls: u32,
    /// This worker's index: the resource its per-resource SAs are bound to (RFC 9611).
    index: u16,
}

/// Defaults of the loop's latency policy (see `Worker::with_latency_policy`).
pub mod policy {
    use std::time::Duration;
    /// Empty polls before blocking in poll(2) (a few tens of microseconds of spinning).
    pub const IDLE_POLLS: u32 = 64;
    /// The suggested `--aqm-limit` (the dataplane defaults to 0, off): packets left in a
    /// side's rings after a batch above which the queue counts as
    /// standing (one batch: a worker that keeps up leaves less).
    pub const AQM_LIMIT: usize = 64;
    /// How long a standing queue may last before the first drop (CoDel's interval, sized
    /// for the sub-millisecond RTTs of a LAN-to-LAN tunnel).
    pub const AQM_INTERVAL: Duration = Duration::from_millis(1);
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Outside => 0,
        Side::Inside => 1,
    }
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
        db: Arc<SaDb>,
        hops: Arc<HopCache>,
        stats: Arc<WorkerStats>,
        gw: GatewayAddrs,
        batch: usize,
    ) -> Self {
        Worker {
            io,
            replica: db.replica(),
            db,
            events: None,
            limiter: EventLimiter::default(),
            hops,
            stats,
            gw,
            batch,
            local: Local::default(),
            rx: Vec::with_capacity(batch),
            run: Vec::with_capacity(batch),
            verdicts: vec![Verdict::Forward; batch],
            // Off unless `with_latency_policy` turns it on (the dataplane's `--aqm-limit`).
            aqm: std::array::from_fn(|_| Aqm::new(0, policy::AQM_INTERVAL)),
            epoch: Instant::now(),
            idle_polls: policy::IDLE_POLLS,
            index: 0,
        }
    }

    /// The loop's latency policy: empty polls before blocking, and the AQM's standing-queue
    /// limit (packets; 0 turns it off) and interval.
    pub fn with_latency_policy(
        mut self,
        idle_polls: u32,
        aqm_limit: usize,
        aqm_interval: Duration,
    ) -> Self {
        self.idle_polls = idle_polls;
        self.aqm = std::array::from_fn(|_| Aqm::new(aqm_limit, aqm_interval));
        self
    }

    /// Receive a batch from `side` into `rx`; then let the AQM look at what is left in the
    /// rings and drop the batch's head if the queue has been standing (RFC 8289 head drop).
    fn receive(&mut self, side: Side, rx: &mut Vec<Frame<I::Buf>>) {
        self.io.recv(side, rx, self.batch);
        let aqm = &mut self.aqm[side_index(side)];
        if rx.is_empty() || aqm.is_off() {
            return;
        }
        let backlog = self.io.rx_backlog(side);
        let now = if backlog > aqm.limit() {
            Instant::now()
        } else {
            self.epoch
        };
        if aqm.on_batch(now, backlog) {
            let f = rx.remove(0);
            self.local.count(WorkerCounter::rx_packets(side), 1);
            self.local
                .count(WorkerCounter::rx_bytes(side), f.len() as u64);
            self.drop_frame(f, WorkerDrop::AqmStandingQueue);
        }
    }

    /// This worker is worker `index` of the dataplane: outbound, it prefers the SAs bound to
    /// it (RFC 9611 per-resource SAs) over a reqid's shared fallback SA.
    pub fn with_index(mut self, index: u16) -> Self {
        self.index = index;
        self
    }

    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// Send events for the control plane (acquires, unknown SPIs, SA lifetimes) here.
    pub fn with_events(mut self, tx: Sender<WorkerEvent>) -> Self {
        self.events = Some(tx);
        self
    }

    fn emit(&mut self, key: (u8, u32), ev: impl FnOnce() -> Option<WorkerEvent>) {
        if let Some(tx) = &self.events {
            if self.limiter.allow(key) {
                if let Some(ev) = ev() {
                    let _ = tx.send(ev);
                }
            }
        }
    }

    /// SA events are raised once each, so they bypass the rate limit.
    fn emit_sa_events(
        &mut self,
        direction: Direction,
        reqid: u32,
        sa_events: impl Iterator<Item = esp::SaEvent>,
    ) {
        for event in sa_events {
            if let Some(tx) = &self.events {
                let _ = tx.send(WorkerEvent::Sa {
                    direction,
                    reqid,
                    event,
                });
            }
        }
    }

    /// Run until `stop` is set, blocking briefly when idle.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut idle_rounds = 0u32;
        while !stop.load(Ordering::Relaxed) {
            if self.poll_once() == 0 {
                idle_rounds += 1;
                if idle_rounds > self.idle_polls {
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
        self.replica.sync();
        let table = self.hops.snapshot();
        let n = self.inside_batch(&table) + self.outside_batch(&table);
        self.io.flush();
        self.local.publish(&self.stats);
        n
    }

    fn drop_frame(&mut self, f: Frame<I::Buf>, why: WorkerDrop) {
        self.local.worker_drop(why);
        self.io.recycle(f.into_buffer());
    }

    fn transmit(&mut self, side: Side, mut f: Frame<I::Buf>, src: [u8; 6], dst: [u8; 6]) {
        let ethertype = match f.data().first().map(|b| b >> 4) {
            Some(6) => ethernet::ETHERTYPE_IPV6,
            _ => ethernet::ETHERTYPE_IPV4,
        };
        if !f.push_front(ethernet::HEADER_LEN) {
            self.local.esp_drop(DropReason::NoRoom);
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
                self.local.count(WorkerCounter::tx_packets(side), 1);
                self.local.count(WorkerCounter::tx_bytes(side), len);
            }
            Err(f) => self.drop_frame(f, WorkerDrop::TxFull),
        }
    }

    /// Strip Ethernet; returns (src MAC, dst MAC) or drops the frame.
    fn strip_l2(&mut self, side: Side, f: &mut Frame<I::Buf>) -> Option<([u8; 6], [u8; 6])> {
        self.local.count(WorkerCounter::rx_packets(side), 1);
        self.local
            .count(WorkerCounter::rx_bytes(side), f.len() as u64);
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
        self.receive(Side::Inside, &mut rx);
        let n = rx.len();
        // The current run: packets for one reqid, and its SA (loaded once per run).
        let mut current: Option<(u32, Option<OutboundRef>)> = None;
        for mut f in rx.drain(..) {
            let Some((peer_mac, our_mac)) = self.strip_l2(Side::Inside, &mut f) else {
                self.drop_frame(f, WorkerDrop::NotIp);
                continue;
            };
            let Some(flow) = FlowKey::of_packet(f.data()) else {
                self.local.esp_drop(DropReason::Malformed);
                self.io.recycle(f.into_buffer());
                continue;
            };
            let Some(m) = self.replica.spd().lookup(&flow) else {
                self.drop_frame(f, WorkerDrop::NoPolicy);
                continue;
            };
            match m.action {
                SpdAction::Discard => self.drop_frame(f, WorkerDrop::PolicyDiscard),
                SpdAction::Bypass => {
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
                SpdAction::Protect { reqid } => {
                    if !decrement_ttl(f.data_mut()) {
                        self.drop_frame(f, WorkerDrop::TtlExpired);
                        continue;
                    }
                    if current.as_ref().map(|c| c.0) != Some(reqid) {
                        if let Some((r, Some(sa))) = current.take() {
                            self.seal_run(r, sa_of(&sa), table);
                        }
                        current = Some((reqid, self.outbound_sa(reqid)));
                    }
                    let Some(shape) = current
                        .as_ref()
                        .and_then(|c| c.1.as_ref())
                        .map(|g| sa_of(g).shape())
                    else {
                        // RFC 4301 §5.1 / RFC 7296 §1.3: no SA yet: ask the control plane.
                        self.emit((0, m.id), || {
                            Some(WorkerEvent::Acquire {
                                policy: m.id,
                                reqid,
                                flow,
                            })
                        });
                        self.drop_frame(f, WorkerDrop::NoSa);
                        continue;
                    };
                    // Check the tunnel MTU before spending a sequence number.
                    match self.fits_tunnel(shape, &f, table) {
                        Fit::Yes => self.run.push(f),
                        Fit::NoHop => self.drop_frame(f, WorkerDrop::NoNextHop),
                        Fit::TooBig(max) => self.too_big(f, max, peer_mac, our_mac),
                    }
                }
            }
        }
        if let Some((r, Some(sa))) = current.take() {
            self.seal_run(r, sa_of(&sa), table);
        }
        self.rx = rx;
        n
    }

    /// The MTU check before encapsulation, from the SA's immutable shape.
    fn fits_tunnel(&mut self, shape: SaShape, f: &Frame<I::Buf>, table: &HopTable) -> Fit {
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
        self.local.worker_drop(WorkerDrop::TooBigIcmpSent);
        if ok {
            // Back out the inside interface to the sender's MAC.
            self.transmit(Side::Inside, f, our_mac, peer_mac);
        } else {
            self.io.recycle(f.into_buffer());
        }
    }

    fn seal_run(&mut self, reqid: u32, sa: &OutboundSa, table: &HopTable) {
        if self.run.is_empty() {
            return;
        }
        let mut run = std::mem::take(&mut self.run);
        let mut verdicts = std::mem::take(&mut self.verdicts);
        let k = run.len();
        esp::encap_batch(sa, &mut run, &mut verdicts[..k]);
        let remote = match sa.config().mode {
            Mode::Tunnel { remote, .. } => Some(remote),
            Mode::Transport => None,
        };
        self.emit_sa_events(
            Direction::Outbound,
            reqid,
            std::iter::from_fn(|| sa.poll_event()),
        );
        if sa.take_lease_request() {
            if let Some(tx) = &self.events {
                let _ = tx.send(WorkerEvent::LeaseLow {
                    reqid,
                    spi: sa.spi(),
                });
            }
        }
        for (f, v) in run.drain(..).zip(verdicts.iter().copied()) {
            match v {
                Verdict::Forward => {
                    self.local.count(WorkerCounter::Encapsulated, 1);
                    let dst = remote.or_else(|| FlowKey::of_packet(f.data()).map(|k| k.dst));
                    match dst.and_then(|d| table.get(Side::Outside, d)) {
                        Some(h) => self.transmit(Side::Outside, f, h.src_mac, h.dst_mac),
                        None => self.drop_frame(f, WorkerDrop::NoNextHop),
                    }
                }
                Verdict::Drop(r) => {
                    self.local.esp_drop(r);
                    self.io.recycle(f.into_buffer());
                }
            }
        }
        self.run = run;
        self.verdicts = verdicts;
    }

    /// Outside → inside: decapsulation.
    fn outside_batch(&mut self, table: &HopTable) -> usize {
        // The replica is moved out for the batch, so its SAs can be borrowed while the
        // worker counts and transmits.
        let replica = self.replica.take();
        let mut rx = std::mem::take(&mut self.rx);
        self.receive(Side::Outside, &mut rx);
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
                    self.open_run(&replica, prev, table);
                }
                current = Some(spi);
            }
            self.run.push(f);
        }
        if let Some(prev) = current {
            self.open_run(&replica, prev, table);
        }
        self.rx = rx;
        self.replica.put(replica);
        n
    }

    fn open_run(&mut self, replica: &ReplicaData, spi: u32, table: &HopTable) {
        if self.run.is_empty() {
            return;
        }
        let mut run = std::mem::take(&mut self.run);
        let mut verdicts = std::mem::take(&mut self.verdicts);
        let k = run.len();
        match replica.inbound.get(spi) {
            Some(sa) => {
                esp::decap_batch(sa, &mut run, &mut verdicts[..k]);
                self.emit_sa_events(
                    Direction::Inbound,
                    0,
                    std::iter::from_fn(|| sa.poll_event()),
                );
            }
            None => {
                // Unknown SPI (or not ESP): let the engine say which, on an empty table.
                esp::decap_batch(&esp::SpiMap::default(), &mut run, &mut verdicts[..k]);
                if verdicts[0] == Verdict::Drop(DropReason::UnknownSpi) {
                    let first = run.first().and_then(|f| FlowKey::of_packet(f.data()));
                    self.emit((1, spi), || {
                        first.map(|k| WorkerEvent::UnknownSpi {
                            spi,
                            src: k.src,
                            dst: k.dst,
                        })
                    });
                }
            }
        }
        for (mut f, v) in run.drain(..).zip(verdicts.iter().copied()) {
            match v {
                Verdict::Forward => {
                    self.local.count(WorkerCounter::Decapsulated, 1);
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
                    self.local.esp_drop(r);
                    self.io.recycle(f.into_buffer());
                }
            }
        }
        self.run = run;
        self.verdicts = verdicts;
    }
}

type OutboundGuard = crate::sync::swap::Guard<Option<Arc<OutboundSa>>>;

/// The outbound SA of a run: this worker's own (RFC 9611), or the reqid's shared fallback.
enum OutboundRef {
    Bound(Arc<OutboundSa>),
    Shared(OutboundGuard),
}

fn sa_of(r: &OutboundRef) -> &OutboundSa {
    match r {
        OutboundRef::Bound(sa) => sa,
        OutboundRef::Shared(g) => g
            .as_ref()
            .expect("ReqidTable::get returns only occupied slots"),
    }
}

impl<I: WorkerIo> Worker<I> {
    /// RFC 9611 §4: the per-resource SA bound to this worker for `reqid`, else the fallback
    /// SA every worker shares. Loaded once per run of packets.
    #[inline]
    fn outbound_sa(&self, reqid: u32) -> Option<OutboundRef> {
        match self.db.outbound.get_bound(reqid, self.index) {
            Some(sa) => Some(OutboundRef::Bound(sa)),
            None => self.db.outbound.get(reqid).map(OutboundRef::Shared),
        }
    }
}

/// Rate limit of control-plane events per worker: one per key per second, and at most
/// `MAX_PER_SECOND` in all, so a flood of unknown SPIs cannot flood the control plane.
#[derive(Default)]
struct EventLimiter {
    last: HashMap<(u8, u32), Instant>,
    window: Option<Instant>,
    in_window: u32,
}

impl EventLimiter {
    const MAX_PER_SECOND: u32 = 64;
    const PER_KEY: Duration = Duration::from_secs(1);

    fn allow(&mut self, key: (u8, u32)) -> bool {
        let now = Instant::now();
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1))
        {
            self.window = Some(now);
            self.in_window = 0;
            if self.last.len() > 4096 {
                self.last.clear();
            }
        }
        if self.in_window >= Self::MAX_PER_SECOND {
            return false;
        }
        if self
            .last
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < Self::PER_KEY)
        {
            return false;
        }
        self.last.insert(key, now);
        self.in_window += 1;
        true
    }
}

enum Fit {
    Yes,
    NoHop,
    TooBig(usize),
}
