//! Security associations as the ESP engine sees them: what was negotiated (or keyed by
//! hand), plus the per-SA runtime state (sequence counter, replay window, counters).

use std::fmt;
use std::net::IpAddr;

use super::drop_reason::{DropCounters, DropReason};
use super::replay::{ReplayWindow, MAX_WINDOW, MIN_WINDOW};
use super::selector::SelectorSet;
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

/// Something the control plane must hear about (sans-IO: the caller polls for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaEvent {
    /// The outbound counter passed the soft threshold: rekey now.
    SeqNearlyExhausted { spi: u32 },
    /// The outbound counter reached its limit: the SA sends nothing more (RFC 4303 §3.3.3).
    SeqExhausted { spi: u32 },
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

/// Outbound SA: seals packets.
pub struct OutboundSa {
    pub(crate) cfg: SaConfig,
    pub(crate) crypto: SaCrypto,
    /// Last sequence number used (64-bit even without ESN); the next packet gets +1.
    pub(crate) last_seq: u64,
    pub(crate) seq_limit: u64,
    pub(crate) seq_soft_limit: u64,
    pub(crate) counters: SaCounters,
    events: EventQueue,
}

/// Inbound SA: opens packets.
pub struct InboundSa {
    pub(crate) cfg: SaConfig,
    pub(crate) crypto: SaCrypto,
    pub(crate) replay: ReplayWindow,
    pub(crate) counters: SaCounters,
}

#[derive(Default)]
struct EventQueue {
    nearly_raised: bool,
    exhausted_raised: bool,
    pending: Vec<SaEvent>,
}

impl OutboundSa {
    pub fn new(cfg: SaConfig) -> Result<OutboundSa, SaError> {
        let crypto = validate(&cfg)?;
        // RFC 4303 §3.3.3: never cycle: 2^32 - 1 or 2^64 - 1 packets at most.
        let seq_limit = if cfg.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        Ok(OutboundSa {
            crypto,
            last_seq: 0,
            seq_limit,
            // Leave room for in-flight traffic while the rekey happens.
            seq_soft_limit: seq_limit - (seq_limit >> 4),
            counters: SaCounters::default(),
            events: EventQueue {
                pending: Vec::with_capacity(2),
                ..EventQueue::default()
            },
            cfg,
        })
    }

    pub fn spi(&self) -> u32 {
        self.cfg.spi
    }
    pub fn config(&self) -> &SaConfig {
        &self.cfg
    }
    pub fn counters(&self) -> &SaCounters {
        &self.counters
    }
    /// The sequence number the last sealed packet carried.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
    /// Start numbering after `seq` (tests, and resuming an SA across restarts).
    pub fn set_last_seq(&mut self, seq: u64) {
        self.last_seq = seq.min(self.seq_limit);
    }

    /// Reserve the next sequence number, or report exhaustion.
    pub(crate) fn next_seq(&mut self) -> Option<u64> {
        if self.last_seq >= self.seq_limit {
            if !self.events.exhausted_raised {
                self.events.exhausted_raised = true;
                self.events
                    .pending
                    .push(SaEvent::SeqExhausted { spi: self.cfg.spi });
            }
            return None;
        }
        self.last_seq += 1;
        if self.last_seq >= self.seq_soft_limit && !self.events.nearly_raised {
            self.events.nearly_raised = true;
            self.events
                .pending
                .push(SaEvent::SeqNearlyExhausted { spi: self.cfg.spi });
        }
        Some(self.last_seq)
    }

    /// The next event for the control plane, if any.
    pub fn poll_event(&mut self) -> Option<SaEvent> {
        if self.events.pending.is_empty() {
            None
        } else {
            Some(self.events.pending.remove(0))
        }
    }

    /// Bytes of the largest inner packet whose encapsulation fits in `outer_mtu`
    /// (for ICMP "fragmentation needed" / "packet too big"). In transport mode the packet's
    /// own IP header stays in clear; it is assumed to carry no options or extension headers.
    pub fn max_inner_len(&self, outer_mtu: usize, inner_v6: bool) -> usize {
        self.shape().max_inner_len(outer_mtu, inner_v6)
    }

    /// The immutable facts about this SA that the MTU check needs, so workers can check
    /// packets without taking the SA.
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
            replay,
            counters: SaCounters::default(),
            cfg,
        })
    }

    pub fn spi(&self) -> u32 {
        self.cfg.spi
    }
    pub fn config(&self) -> &SaConfig {
        &self.cfg
    }
    pub fn counters(&self) -> &SaCounters {
        &self.counters
    }
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }
    /// Resume the window as if `seq` were the highest number received, with nothing in the
    /// window seen yet (restoring an SA after a restart; tests that start near 2^32).
    pub fn restore_replay_top(&mut self, seq: u64) {
        self.replay = ReplayWindow::new(self.replay.size());
        self.replay.reset_top(seq);
    }
}

impl fmt::Debug for OutboundSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundSa")
            .field("spi", &format_args!("{:#010x}", self.cfg.spi))
            .field("transform", &self.cfg.transform)
            .field("mode", &self.cfg.mode)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for InboundSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundSa")
            .field("spi", &format_args!("{:#010x}", self.cfg.spi))
            .field("transform", &self.cfg.transform)
            .field("mode", &self.cfg.mode)
            .field("replay_top", &self.replay.top())
            .finish_non_exhaustive()
    }
}
