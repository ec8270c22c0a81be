//! The ESP engine (RFC 4303), sans-IO: batches of packets in caller-owned buffers are
//! transformed in place, and each gets a [`Verdict`]. No allocation, lock, clock or system
//! call happens per packet; anything the control plane must learn is queued as an
//! [`SaEvent`] for the caller to poll.

mod decap;
pub mod demo;
pub mod drop_reason;
pub mod ecn;
mod encap;
pub mod frame;
pub mod replay;
pub mod sa;
pub mod selector;
pub mod seq;

#[cfg(all(test, feature = "loom"))]
mod loom_model;

pub use decap::{peek_spi, InboundSaLookup, SpiMap};
pub use drop_reason::{DropCounters, DropReason};
pub use frame::Frame;
pub use replay::ReplayWindow;
pub use sa::{
    DfPolicy, InboundSa, Lifetime, LifetimeKind, Mode, OutboundSa, SaConfig, SaCounters, SaError,
    SaEvent, SaShape, SharedCounters, UdpEncap, LEASE_STEP,
};
pub use selector::{FlowKey, SelectorSet, TrafficSelector};

/// What became of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Transformed; the frame holds the packet to send on.
    #[default]
    Forward,
    /// Dropped, and why. The frame's contents are unspecified.
    Drop(DropReason),
}

impl Verdict {
    pub fn is_forward(self) -> bool {
        self == Verdict::Forward
    }
}

/// Encapsulate every frame with `sa`. `verdicts[i]` is set for `frames[i]`.
///
/// Each frame holds an IP packet at its head; on `Forward` it holds the ESP packet
/// (tunnel: new outer header; transport: the packet's own header, rewritten).
///
/// Several workers may call this on one SA at once: the packets that pass the checks get
/// consecutive sequence numbers reserved with one atomic operation per chunk of
/// [`encap::CHUNK`] packets, and the SA's counters are updated once per call.
pub fn encap_batch<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &OutboundSa,
    frames: &mut [Frame<B>],
    verdicts: &mut [Verdict],
) {
    assert!(verdicts.len() >= frames.len(), "one verdict per frame");
    let mut counts = SaCounters::default();
    for (fs, vs) in frames
        .chunks_mut(encap::CHUNK)
        .zip(verdicts.chunks_mut(encap::CHUNK))
    {
        encap::encap_chunk(sa, fs, vs, &mut counts);
    }
    sa.account(&counts);
}

/// Decapsulate every frame, finding each one's SA by SPI in `sas`.
///
/// Drops before an SA is found (malformed, unknown SPI, ...) are only reported in the
/// verdict; later drops are also counted on the SA. Counters are added to an SA once per
/// run of consecutive packets of that SA.
pub fn decap_batch<B, T>(sas: &T, frames: &mut [Frame<B>], verdicts: &mut [Verdict])
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    T: InboundSaLookup + ?Sized,
{
    assert!(verdicts.len() >= frames.len(), "one verdict per frame");
    decap::decap_frames(sas, frames, verdicts);
}

/// Encapsulate one frame (convenience over [`encap_batch`]).
pub fn encap<B: AsRef<[u8]> + AsMut<[u8]>>(sa: &OutboundSa, f: &mut Frame<B>) -> Verdict {
    let mut v = [Verdict::Forward];
    encap_batch(sa, std::slice::from_mut(f), &mut v);
    v[0]
}

/// Decapsulate one frame (convenience over [`decap_batch`]).
pub fn decap<B, T>(sas: &T, f: &mut Frame<B>) -> Verdict
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    T: InboundSaLookup + ?Sized,
{
    let mut v = [Verdict::Forward];
    decap_batch(sas, std::slice::from_mut(f), &mut v);
    v[0]
}
