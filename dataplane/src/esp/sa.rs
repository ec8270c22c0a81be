//! Security associations as the ESP engine sees them: what was negotiated (or keyed by
//! hand), plus the per-SA runtime state (sequence counter, replay window, counters).

use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use crate::sync::{Mutex, MutexGuard};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::drop_reason::{DropCounters, DropReason};
use super::replay::{ReplayWindow, MAX_WINDOW, MIN_WINDOW};
use super::selector::SelectorSet;
use super::seq::SeqCounter;
use crate::crypto::{AlgorithmError, EspTransform, SaCrypto, SaKeys};

/// RFC 4303 §3.1: where ESP sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// §3.1.2: a new outer IP header between these tunnel endpoints; the whole inner packet
    /// is protected. `local` is our address (outer source on send).
    Tunnel { local: IpAddr, remote: IpAddr },
    /// §3.1.1: ESP inserted after the packet's own IP header.
    Transport,
}

/// RFC 3948: ESP inside UDP, for NAT traversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpEncap {
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpEncap {
    /// RFC 3948 §2: both sides on port 4500 (the usual case before any NAT rewrites ports).
    pub const DEFAULT: UdpEncap = UdpEncap {
        src_port: 4500,
        dst_port: 4500,
    };
}

/// The outer IPv4 DF bit in tunnel mode (RFC 4301 §8.1: a per-SA setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DfPolicy {
    /// Copy the inner IPv4 DF bit; set it for inner IPv6 (which is never fragmented en route).
    #[default]
    Copy,
    Set,
    Clear,
}

/// Everything needed to build an SA, as negotiated by IKE or written by an operator.
#[derive(Debug, Clone)]
pub struct SaConfig {
    pub spi: u32,
    pub transform: EspTransform,
    pub keys: SaKeys,
    pub mode: Mode,
    /// RFC 4303 §2.2.1: 64-bit sequence numbers, the high half implicit.
    pub esn: bool,
    /// Anti-replay window in packets (`MIN_WINDOW..=MAX_WINDOW`); `None` disables the check
    /// (RFC 4303 §3.4.3 allows it, e.g. for manually keyed SAs used in testing).
    pub replay_window: Option<u32>,
    pub udp_encap: Option<UdpEncap>,
    pub df: DfPolicy,
    /// TTL / hop limit of the outer header in tunnel mode.
    pub outer_ttl: u8,
    /// RFC 4301 §5.1.2.1: copy the outer DSCP onto the inner packet on decapsulation
    /// (uniform model). Off by default: the inner DSCP is kept (pipe model).
    pub copy_dscp_on_decap: bool,
    pub selectors: SelectorSet,
    /// Packet and byte lifetimes (RFC 4301 §4.4.2.1).
    pub lifetime: Lifetime,
}

impl SaConfig {
    /// A tunnel-mode SA with the usual defaults: no ESN, window 1024, no UDP encapsulation,
    /// DF copied, outer TTL 64, selectors "any".
    pub fn tunnel(
        spi: u32,
        transform: EspTransform,
        keys: SaKeys,
        local: IpAddr,
        remote: IpAddr,
    ) -> Self {
        SaConfig {
            spi,
            transform,
            keys,
            mode: Mode::Tunnel { local, remote },
            esn: false,
            replay_window: Some(1024),
            udp_encap: None,
            df: DfPolicy::Copy,
            outer_ttl: 64,
            copy_dscp_on_decap: false,
            selectors: SelectorSet::any(),
            lifetime: Lifetime::default(),
        }
    }

    /// A transport-mode SA with the same defaults as [`SaConfig::tunnel`].
    pub fn transport(spi: u32, transform: EspTransform, keys: SaKeys) -> Self {
        SaConfig {
            mode: Mode::Transport,
            ..SaConfig::tunnel(
                spi,
                transform,
                keys,
                IpAddr::from([0u8; 4]),
                IpAddr::from([0u8; 4]),
            )
        }
    }

    /// A UDP-encapsulated (RFC 3948) tunnel SA's outer endpoints, (ours, the peer's): for an
    /// outbound SA, where a NAT in the path maps the peer (RFC 7296 §2.23).
    pub fn udp_path(&self) -> Option<(SocketAddr, SocketAddr)> {
        match (self.mode, self.udp_encap) {
            (Mode::Tunnel { local, remote }, Some(u)) => Some((
                SocketAddr::new(local, u.src_port),
                SocketAddr::new(remote, u.dst_port),
            )),
            _ => None,
        }
    }
}

/// Why an SA could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaError {
    #[error(transparent)]
    Algorithm(#[from] AlgorithmError),
    /// RFC 4303 §2.1: SPIs 1–255 are reserved by IANA and 0 is reserved for local use.
    #[error("SPI {0:#x} is reserved (RFC 4303 §2.1: 0-255)")]
    ReservedSpi(u32),
    #[error("tunnel endpoints mix IPv4 and IPv6")]
    MixedTunnelFamilies,
    #[error("anti-replay window {0} is outside {min}..={max}", min = MIN_WINDOW, max = MAX_WINDOW)]
    ReplayWindow(u32),
}

/// Which lifetime limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeKind {
    Packets,
    Bytes,
}

/// Something the control plane must hear about (sans-IO: the caller polls for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaEvent {
    /// The outbound counter passed the soft threshold: rekey now.
    SeqNearlyExhausted { spi: u32 },
    /// The outbound counter reached its limit: the SA sends nothing more (RFC 4303 §3.3.3).
    SeqExhausted { spi: u32 },
    /// RFC 4301 §4.4.2.1: the soft lifetime was reached: rekey.
    SoftLifetime { spi: u32, kind: LifetimeKind },
    /// The hard lifetime was reached: the SA passes no more traffic.
    HardLifetime { spi: u32, kind: LifetimeKind },
}

/// Packet and byte limits of an SA (RFC 4301 §4.4.2.1); 0 means no limit. Time limits are
/// the control plane's business (it has the clock); the dataplane counts traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    pub soft_packets: u64,
    pub hard_packets: u64,
    pub soft_bytes: u64,
    pub hard_bytes: u64,
}

/// Per-SA traffic counters. Bytes count inner (plaintext) packets, as `ip xfrm` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaCounters {
    pub packets: u64,
    pub bytes: u64,
    pub drops: DropCounters,
}

impl SaCounters {
    pub(crate) fn pass(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
    pub(crate) fn drop(&mut self, r: DropReason) {
        self.drops.add(r);
    }
    fn is_zero(&self) -> bool {
        self.packets == 0 && self.drops.total() == 0
    }
}

/// The counters of an SA that several workers use at once: each worker counts a batch
/// locally and adds it here once (one atomic add per counter per batch, not per packet).
#[derive(Debug)]
pub struct SharedCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
}

impl Default for SharedCounters {
    fn default() -> Self {
        SharedCounters {
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl SharedCounters {
    /// Add a batch's counts; returns the totals of packets and bytes after it.
    pub(crate) fn add(&self, c: &SaCounters) -> (u64, u64) {
        let p = self.packets.fetch_add(c.packets, Ordering::Relaxed) + c.packets;
        let b = self.bytes.fetch_add(c.bytes, Ordering::Relaxed) + c.bytes;
        for (a, &v) in self.drops.iter().zip(c.drops.as_array().iter()) {
            if v != 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        }
        (p, b)
    }

    pub fn snapshot(&self) -> SaCounters {
        SaCounters {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            drops: DropCounters::from_array(std::array::from_fn(|i| {
                self.drops[i].load(Ordering::Relaxed)
            })),
        }
    }
}

/// Events raised at most once each, by whichever worker gets there first, and polled by
/// the control thread. Lock-free: two bit sets.
#[derive(Debug, Default)]
struct EventFlags {
    raised: AtomicU8,
    pending: AtomicU8,
}

const EV_SEQ_NEARLY: u8 = 1 << 0;
const EV_SEQ_EXHAUSTED: u8 = 1 << 1;
const EV_SOFT_PACKETS: u8 = 1 << 2;
const EV_SOFT_BYTES: u8 = 1 << 3;
const EV_HARD_PACKETS: u8 = 1 << 4;
const EV_HARD_BYTES: u8 = 1 << 5;

impl EventFlags {
    fn raise(&self, bit: u8) {
        if self.raised.load(Ordering::Relaxed) & bit == 0
            && self.raised.fetch_or(bit, Ordering::Relaxed) & bit == 0
        {
            self.pending.fetch_or(bit, Ordering::Release);
        }
    }

    fn is_raised(&self, bit: u8) -> bool {
        self.raised.load(Ordering::Relaxed) & bit != 0
    }

    fn poll(&self, spi: u32) -> Option<SaEvent> {
        let p = self.pending.load(Ordering::Acquire);
        if p == 0 {
            return None;
        }
        let bit = p & p.wrapping_neg();
        self.pending.fetch_and(!bit, Ordering::AcqRel);
        use LifetimeKind::*;
        Some(match bit {
            EV_SEQ_NEARLY => SaEvent::SeqNearlyExhausted { spi },
            EV_SEQ_EXHAUSTED => SaEvent::SeqExhausted { spi },
            EV_SOFT_PACKETS => SaEvent::SoftLifetime { spi, kind: Packets },
            EV_SOFT_BYTES => SaEvent::SoftLifetime { spi, kind: Bytes },
            EV_HARD_PACKETS => SaEvent::HardLifetime { spi, kind: Packets },
            _ => SaEvent::HardLifetime { spi, kind: Bytes },
        })
    }

    /// After a batch moved the totals to (`packets`, `bytes`): raise what was crossed.
    fn check_lifetime(&self, l: &Lifetime, packets: u64, bytes: u64) {
        let over = |limit: u64, v: u64| limit != 0 && v >= limit;
        if over(l.soft_packets, packets) {
            self.raise(EV_SOFT_PACKETS);
        }
        if over(l.soft_bytes, bytes) {
            self.raise(EV_SOFT_BYTES);
        }
        if over(l.hard_packets, packets) {
            self.raise(EV_HARD_PACKETS);
        }
        if over(l.hard_bytes, bytes) {
            self.raise(EV_HARD_BYTES);
        }
    }

    fn hard_expired(&self) -> bool {
        self.is_raised(EV_HARD_PACKETS | EV_HARD_BYTES)
    }
}

fn validate(cfg: &SaConfig) -> Result<SaCrypto, SaError> {
    if cfg.spi < 256 {
        return Err(SaError::ReservedSpi(cfg.spi));
    }
    if let Mode::Tunnel { local, remote } = cfg.mode {
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(SaError::MixedTunnelFamilies);
        }
    }
    if let Some(w) = cfg.replay_window {
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&w) {
            return Err(SaError::ReplayWindow(w));
        }
    }
    Ok(SaCrypto::new(cfg.transform, &cfg.keys)?)
}

/// Outbound SA: seals packets. Shared by every worker that sends on it (`&self` only):
/// sequence numbers come from one atomic counter, reserved a batch at a time.
pub struct OutboundSa {
    pub(crate) cfg: SaConfig,
    pub(crate) crypto: SaCrypto,
    pub(crate) seq: SeqCounter,
    pub(crate) seq_soft_limit: u64,
    /// Sizes and outer headers shared by every packet, built once here.
    pub(crate) tmpl: super::encap::Template,
    counters: SharedCounters,
    events: EventFlags,
    lease_wanted: AtomicBool,
}

/// Sequence numbers granted per lease extension: a control thread that wakes every few
/// milliseconds stays ahead of any line rate this machine reaches.
pub const LEASE_STEP: u64 = 1 << 22;

/// Inbound SA: opens packets. Shared by every worker that receives it (`&self` only): the
/// replay window sits behind a mutex taken twice per packet for a few nanoseconds — to
/// check before the ICV and to accept after it — never while decrypting.
pub struct InboundSa {
    pub(crate) cfg: SaConfig,
    pub(crate) crypto: SaCrypto,
    pub(crate) replay: Mutex<ReplayWindow>,
    counters: SharedCounters,
    events: EventFlags,
}

impl OutboundSa {
    pub fn new(cfg: SaConfig) -> Result<OutboundSa, SaError> {
        let crypto = validate(&cfg)?;
        // RFC 4303 §3.3.3: never cycle: 2^32 - 1 or 2^64 - 1 packets at most. A hard packet
        // lifetime is enforced exactly through the same counter.
        let space = if cfg.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        let seq_limit = match cfg.lifetime.hard_packets {
            0 => space,
            hard => space.min(hard),
        };
        Ok(OutboundSa {
            tmpl: super::encap::Template::new(&cfg, &crypto),
            crypto,
            seq: SeqCounter::with_limit(seq_limit),
            // Leave room for in-flight traffic while the rekey happens. Measured against the
            // sequence space: a packet lifetime has its own soft limit.
            seq_soft_limit: space - (space >> 4),
            counters: SharedCounters::default(),
            events: EventFlags::default(),
            lease_wanted: AtomicBool::new(false),
            cfg,
        })
    }

    pub fn spi(&self) -> u32 {
        self.cfg.spi
    }
    pub fn config(&self) -> &SaConfig {
        &self.cfg
    }
    /// A snapshot of the counters.
    pub fn counters(&self) -> SaCounters {
        self.counters.snapshot()
    }

    /// Let the SA use sequence numbers up to `lease` (persisted by the caller first).
    pub fn set_lease(&self, lease: u64) {
        self.seq.set_ceiling(lease);
        self.lease_wanted.store(false, Ordering::Release);
    }
    pub fn lease(&self) -> u64 {
        self.seq.ceiling()
    }
    /// True once per lease when half of the lease's headroom is used: the worker then asks
    /// the control thread for more.
    pub fn take_lease_request(&self) -> bool {
        let lease = self.seq.ceiling();
        lease != u64::MAX
            && self.seq.last().saturating_add(LEASE_STEP / 2) >= lease
            && !self.lease_wanted.swap(true, Ordering::AcqRel)
    }
    /// True if numbers are held back by the lease (not by the sequence limit).
    pub(crate) fn waiting_for_lease(&self) -> bool {
        let last = self.seq.last();
        last >= self.seq.ceiling() && last < self.seq.limit()
    }
    /// The highest sequence number handed out.
    pub fn last_seq(&self) -> u64 {
        self.seq.last()
    }
    /// Start numbering after `seq` (tests, and resuming an SA across restarts).
    pub fn set_last_seq(&self, seq: u64) {
        self.seq.set_last(seq);
    }

    /// Reserve up to `n` sequence numbers for a batch (one atomic operation), raising the
    /// exhaustion events as the counter nears and reaches its limit.
    pub(crate) fn reserve_seq(&self, n: u64) -> Option<std::ops::RangeInclusive<u64>> {
        let r = self.seq.reserve(n);
        let got = r.as_ref().map_or(0, |r| r.end() - r.start() + 1);
        if got < n && !self.waiting_for_lease() {
            if self.cfg.lifetime.hard_packets != 0
                && self.seq.last() >= self.cfg.lifetime.hard_packets
            {
                self.events.raise(EV_HARD_PACKETS);
            } else {
                self.events.raise(EV_SEQ_EXHAUSTED);
            }
        }
        if let Some(r) = &r {
            if *r.end() >= self.seq_soft_limit {
                self.events.raise(EV_SEQ_NEARLY);
            }
        }
        r
    }

    /// Add a batch's counts and check the lifetime.
    pub(crate) fn account(&self, c: &SaCounters) {
        if c.is_zero() {
            return;
        }
        let (p, b) = self.counters.add(c);
        self.events.check_lifetime(&self.cfg.lifetime, p, b);
    }

    /// True once a hard lifetime was reached: the SA must not seal more packets.
    pub fn is_expired(&self) -> bool {
        self.events.hard_expired()
    }

    /// The next event for the control plane, if any.
    pub fn poll_event(&self) -> Option<SaEvent> {
        self.events.poll(self.cfg.spi)
    }

    /// Bytes of the largest inner packet whose encapsulation fits in `outer_mtu`
    /// (for ICMP "fragmentation needed" / "packet too big"). In transport mode the packet's
    /// own IP header stays in clear; it is assumed to carry no options or extension headers.
    pub fn max_inner_len(&self, outer_mtu: usize, inner_v6: bool) -> usize {
        self.shape().max_inner_len(outer_mtu, inner_v6)
    }

    /// The immutable facts about this SA that the MTU check needs.
    pub fn shape(&self) -> SaShape {
        SaShape {
            mode: self.cfg.mode,
            udp_encap: self.cfg.udp_encap.is_some(),
            overhead: self.crypto.overhead(),
            align: self.crypto.align(),
        }
    }
}

/// What an outbound SA adds to a packet: mode, encapsulation and crypto overhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaShape {
    pub mode: Mode,
    pub udp_encap: bool,
    overhead: usize,
    align: usize,
}

impl SaShape {
    /// See [`OutboundSa::max_inner_len`].
    pub fn max_inner_len(&self, outer_mtu: usize, inner_v6: bool) -> usize {
        let clear = match self.mode {
            Mode::Tunnel { local, .. } if local.is_ipv4() => 20,
            Mode::Tunnel { .. } => 40,
            Mode::Transport if inner_v6 => 40,
            Mode::Transport => 20,
        };
        let udp = if self.udp_encap { 8 } else { 0 };
        let room = outer_mtu.saturating_sub(clear + udp + self.overhead);
        // The protected part plus the 2-byte trailer is padded to the alignment.
        let protected = (room / self.align * self.align).saturating_sub(2);
        match self.mode {
            Mode::Tunnel { .. } => protected,
            Mode::Transport => protected + clear,
        }
    }
}

impl InboundSa {
    pub fn new(cfg: SaConfig) -> Result<InboundSa, SaError> {
        let crypto = validate(&cfg)?;
        let replay = ReplayWindow::new(cfg.replay_window.unwrap_or(MIN_WINDOW));
        Ok(InboundSa {
            crypto,
            replay: Mutex::new(replay),
            counters: SharedCounters::default(),
            events: EventFlags::default(),
            cfg,
        })
    }

    pub fn spi(&self) -> u32 {
        self.cfg.spi
    }
    pub fn config(&self) -> &SaConfig {
        &self.cfg
    }
    /// A snapshot of the counters.
    pub fn counters(&self) -> SaCounters {
        self.counters.snapshot()
    }
    /// The replay window (locked: hold it briefly).
    pub fn replay_window(&self) -> MutexGuard<'_, ReplayWindow> {
        self.replay.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Resume the window as if `seq` were the highest number received, with nothing in the
    /// window seen yet (restoring an SA after a restart; tests that start near 2^32).
    pub fn restore_replay_top(&self, seq: u64) {
        let mut w = self.replay_window();
        *w = ReplayWindow::new(w.size());
        w.reset_top(seq);
    }

    /// Add a batch's counts and check the lifetime.
    pub(crate) fn account(&self, c: &SaCounters) {
        if c.is_zero() {
            return;
        }
        let (p, b) = self.counters.add(c);
        self.events.check_lifetime(&self.cfg.lifetime, p, b);
    }

    /// True once a hard lifetime was reached: the SA must not open more packets.
    pub fn is_expired(&self) -> bool {
        self.events.hard_expired()
    }

    /// The next event for the control plane, if any.
    pub fn poll_event(&self) -> Option<SaEvent> {
        self.events.poll(self.cfg.spi)
    }
}

impl fmt::Debug for OutboundSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundSa")
            .field("spi", &format_args!("{:#010x}", self.cfg.spi))
            .field("transform", &self.cfg.transform)
            .field("mode", &self.cfg.mode)
            .field("last_seq", &self.seq.last())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for InboundSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundSa")
            .field("spi", &format_args!("{:#010x}", self.cfg.spi))
            .field("transform", &self.cfg.transform)
            .field("mode", &self.cfg.mode)
            .field("replay_top", &self.replay_window().top())
            .finish_non_exhaustive()
    }
}
