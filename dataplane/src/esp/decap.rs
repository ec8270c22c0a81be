//! Inbound processing (RFC 4303 §3.4): ESP packet → inner packet, in place.

use std::collections::HashMap;

use super::drop_reason::DropReason;
use super::ecn::decap_ecn;
use super::frame::Frame;
use super::replay::{ReplayError, ReplayWindow};
use super::sa::{InboundSa, Mode, SaCounters};
use super::selector::FlowKey;
use super::Verdict;
use crate::crypto::CryptoError;
use crate::wire::esp::EspTrailer;
use crate::wire::ip::IpProtocol;
use crate::wire::{checksum, esp, ipv6, udp, Ecn, EspPacket, Ipv4Packet, Ipv6Packet, UdpPacket};

/// Finds the inbound SA for an SPI. The lock-free table of the dataplane implements this;
/// so do a single SA and a plain map, for tests and tools.
pub trait InboundSaLookup {
    fn lookup(&self, spi: u32) -> Option<&InboundSa>;
}

impl InboundSaLookup for InboundSa {
    fn lookup(&self, spi: u32) -> Option<&InboundSa> {
        (self.cfg.spi == spi).then_some(self)
    }
}

/// A simple SPI → SA map.
#[derive(Debug, Default)]
pub struct SpiMap(pub HashMap<u32, InboundSa>);

impl SpiMap {
    pub fn insert(&mut self, sa: InboundSa) {
        self.0.insert(sa.spi(), sa);
    }
}

impl InboundSaLookup for SpiMap {
    fn lookup(&self, spi: u32) -> Option<&InboundSa> {
        self.0.get(&spi)
    }
}

/// Where ESP starts in an outer packet, and what the outer header says.
#[derive(Clone, Copy)]
struct Outer {
    v4: bool,
    /// Length of the outer IP header plus the extension headers before ESP/UDP.
    ip_len: usize,
    /// Offset of the next-header byte naming ESP/UDP (transport mode rewrites it).
    nh_at: usize,
    esp_at: usize,
    tos: u8,
}

/// The outer header and the SPI (RFC 4303 §2.1; zero is reserved, and no SA has it).
fn parse_outer(f: &mut Frame<impl AsRef<[u8]> + AsMut<[u8]>>) -> Result<(Outer, u32), DropReason> {
    let d = f.data();
    let (v4, ip_len, nh_at, proto, tos, total) = match d.first().map(|b| b >> 4) {
        Some(4) => {
            let p = Ipv4Packet::new_checked(d).map_err(|_| DropReason::Malformed)?;
            if !p.verify_checksum() {
                return Err(DropReason::BadIpChecksum);
            }
            if p.is_fragment() {
                // RFC 4303 §3.4.1: reassembly comes before ESP processing; we do not
                // reassemble, so fragments are counted and dropped.
                return Err(DropReason::Fragment);
            }
            (
                true,
                p.header_len(),
                9,
                p.protocol(),
                p.tos(),
                p.total_len(),
            )
        }
        Some(6) => {
            let p = Ipv6Packet::new_checked(d).map_err(|_| DropReason::Malformed)?;
            let total = p.total_len();
            let (off, nh_at) = ipv6::split_before_esp(&d[..total]).ok_or(DropReason::Malformed)?;
            let nh = d[nh_at];
            if nh == IpProtocol::FRAGMENT {
                return Err(DropReason::Fragment);
            }
            (false, off, nh_at, nh, p.traffic_class(), total)
        }
        _ => return Err(DropReason::Malformed),
    };
    let esp_at = match proto {
        IpProtocol::ESP => ip_len,
        IpProtocol::UDP => {
            let u = UdpPacket::new_checked(&d[ip_len..total]).map_err(|_| DropReason::Malformed)?;
            // RFC 3948 §2.2–2.3: a non-ESP marker is IKE; a lone 0xff is a NAT keepalive.
            if esp::is_non_esp_marker(u.payload()) || u.payload().len() < esp::HEADER_LEN {
                return Err(DropReason::NotEsp);
            }
            // The UDP checksum is not checked: RFC 3948 §3.1.2 lets the receiver skip it
            // over IPv4, and over IPv6 the ESP ICV protects every byte it would cover.
            ip_len + udp::HEADER_LEN
        }
        _ => return Err(DropReason::NotEsp),
    };
    let spi = {
        let esp = EspPacket::new_checked(&d[esp_at..total]).map_err(|_| DropReason::Malformed)?;
        esp.spi()
    };
    f.truncate(total);
    Ok((
        Outer {
            v4,
            ip_len,
            nh_at,
            esp_at,
            tos,
        },
        spi,
    ))
}

/// A packet that passed every check that comes before the ICV: where ESP starts, and its
/// full sequence number.
struct Checked {
    outer: Outer,
    seq: u64,
}

/// The current run of packets of one SA: the SA and the counts not yet added to it.
type Run<'a> = Option<(&'a InboundSa, SaCounters)>;

/// Decapsulate a batch (see [`super::decap_batch`]). Packets are checked one by one; two
/// consecutive packets of one SA are then opened together (`SaCrypto::open_pair`: AES-GCM
/// interleaves them). Each packet gets the verdict it would get if the batch were processed
/// one packet after the other: where the second packet's checks depend on the first one
/// being accepted, the first is finished alone before the second is checked.
pub(crate) fn decap_frames<B, T>(table: &T, frames: &mut [Frame<B>], verdicts: &mut [Verdict])
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    T: InboundSaLookup + ?Sized,
{
    let mut run: Run<'_> = None;
    // A checked packet waiting for a partner: its index and checks.
    let mut pending: Option<(usize, Checked)> = None;
    for i in 0..frames.len() {
        let (outer, spi) = match parse_outer(&mut frames[i]) {
            Ok(x) => x,
            Err(r) => {
                verdicts[i] = Verdict::Drop(r);
                continue;
            }
        };
        // The SA of the current run, without a lookup when the SPI is the same.
        let sa = match run {
            Some((cur, _)) if cur.cfg.spi == spi => cur,
            _ => match table.lookup(spi) {
                Some(sa) => sa,
                None => {
                    verdicts[i] = Verdict::Drop(DropReason::UnknownSpi);
                    continue;
                }
            },
        };
        if let Some((cur, _)) = run {
            if !std::ptr::eq(cur, sa) {
                // A new run: the pending packet belongs to the old one.
                if let Some((j, p)) = pending.take() {
                    verdicts[j] = open_single(cur, &mut frames[j], p, &mut run);
                }
            }
        }
        let counts = run_counts(&mut run, sa);
        let prev = pending.as_ref().map(|(_, p)| p.seq);
        let c = match check(sa, &frames[i], outer, prev) {
            Ok(c) => c,
            Err(Recheck::Drop(r)) => {
                counts.drop(r);
                verdicts[i] = Verdict::Drop(r);
                continue;
            }
            Err(Recheck::AfterPrevious) => {
                // Its checks depend on the pending packet: finish that one first.
                let (j, p) = pending.take().expect("only asked with a pending packet");
                verdicts[j] = open_single(sa, &mut frames[j], p, &mut run);
                match check(sa, &frames[i], outer, None) {
                    Ok(c) => c,
                    Err(Recheck::Drop(r)) => {
                        run_counts(&mut run, sa).drop(r);
                        verdicts[i] = Verdict::Drop(r);
                        continue;
                    }
                    Err(Recheck::AfterPrevious) => unreachable!("no previous packet"),
                }
            }
        };
        match pending.take() {
            None => pending = Some((i, c)),
            Some((j, p)) => {
                let (fa, fb) = pair_mut(frames, j, i);
                let [va, vb] = open_two(sa, fa, p, fb, c, &mut run);
                verdicts[j] = va;
                verdicts[i] = vb;
            }
        }
    }
    if let Some((j, p)) = pending {
        let sa = run
            .as_ref()
            .map(|(sa, _)| *sa)
            .expect("a pending packet has a run");
        verdicts[j] = open_single(sa, &mut frames[j], p, &mut run);
    }
    if let Some((sa, c)) = run {
        sa.account(&c);
    }
}

/// The counts of the run of `sa`, starting a new run (and adding the old one's counts to
/// its SA) if the current run is of another SA.
fn run_counts<'r, 'a>(run: &'r mut Run<'a>, sa: &'a InboundSa) -> &'r mut SaCounters {
    if let Some((cur, c)) = run {
        if !std::ptr::eq(*cur, sa) {
            cur.account(c);
            *run = Some((sa, SaCounters::default()));
        }
    } else {
        *run = Some((sa, SaCounters::default()));
    }
    &mut run.as_mut().expect("set above").1
}

fn pair_mut<B>(frames: &mut [Frame<B>], j: usize, i: usize) -> (&mut Frame<B>, &mut Frame<B>) {
    debug_assert!(j < i);
    let (lo, hi) = frames.split_at_mut(i);
    (&mut lo[j], &mut hi[0])
}

/// Why `check` refused a packet.
enum Recheck {
    /// Dropped; the pending packet could not have changed that.
    Drop(DropReason),
    /// Dropped here, but accepting the pending packet could change the answer: check again
    /// after it (`check` with `prev` = None never answers this).
    AfterPrevious,
}

/// RFC 4303 §3.4.3 and Appendix A: the checks before the ICV. `prev` is the sequence
/// number of the packet of the same SA checked just before and not yet accepted; if the
/// answer for this one could depend on that one's acceptance, `AfterPrevious`.
fn check<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &InboundSa,
    f: &Frame<B>,
    outer: Outer,
    prev: Option<u64>,
) -> Result<Checked, Recheck> {
    if sa.is_expired() {
        return Err(Recheck::Drop(DropReason::SaExpired));
    }
    let d = f.data();
    let esp_len = d.len() - outer.esp_at;
    // The payload must hold at least the two trailer bytes.
    if esp_len < sa.crypto.overhead() + 2 {
        return Err(Recheck::Drop(DropReason::Malformed));
    }
    let at = outer.esp_at + 4;
    let seq_low = u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
    // Infer the high half, then check the window *before* spending cycles on the ICV. The
    // window is locked only for the check and, after the ICV, for the accept: workers
    // sharing the SA decrypt in parallel, and the accept re-checks, so each sequence number
    // is accepted exactly once whoever receives it.
    let anti_replay = sa.cfg.replay_window.is_some();
    let w = sa.replay_window();
    // Would accepting `prev` move the window (and so perhaps change this answer)?
    let moves = prev.is_some_and(|p| p > w.top());
    let seq = if sa.cfg.esn {
        let seq = w.infer_esn(seq_low);
        if let Some(p) = prev.filter(|_| moves) {
            if w.infer_esn_after(p, seq_low) != seq {
                return Err(Recheck::AfterPrevious);
            }
        }
        match seq {
            Some(s) => s,
            None if moves => return Err(Recheck::AfterPrevious),
            None => return Err(Recheck::Drop(DropReason::ReplayTooOld)),
        }
    } else {
        u64::from(seq_low)
    };
    if anti_replay {
        if let Err(e) = w.check(seq) {
            return Err(if moves {
                Recheck::AfterPrevious
            } else {
                Recheck::Drop(replay_reason(e))
            });
        }
    }
    Ok(Checked { outer, seq })
}

fn icv_reason(e: CryptoError) -> DropReason {
    match e {
        CryptoError::IcvMismatch => DropReason::IcvFailed,
        _ => DropReason::Malformed,
    }
}

/// Open, accept and restore one checked packet.
fn open_single<'a, B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &'a InboundSa,
    f: &mut Frame<B>,
    c: Checked,
    run: &mut Run<'a>,
) -> Verdict {
    let esn_high = sa.cfg.esn.then_some((c.seq >> 32) as u32);
    let r = sa
        .crypto
        .open(&mut f.data_mut()[c.outer.esp_at..], esn_high)
        .map_err(icv_reason)
        .and_then(|()| accept(sa, &mut sa.replay_window(), c.seq))
        .and_then(|()| after_icv(sa, f, &c.outer));
    count(run_counts(run, sa), r)
}

/// Open two checked packets of `sa` together; accept and restore each in order.
fn open_two<'a, B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &'a InboundSa,
    fa: &mut Frame<B>,
    a: Checked,
    fb: &mut Frame<B>,
    b: Checked,
    run: &mut Run<'a>,
) -> [Verdict; 2] {
    let esn = |seq: u64| sa.cfg.esn.then_some((seq >> 32) as u32);
    let [ra, rb] = sa.crypto.open_pair(
        (&mut fa.data_mut()[a.outer.esp_at..], esn(a.seq)),
        (&mut fb.data_mut()[b.outer.esp_at..], esn(b.seq)),
    );
    // §3.4.3: the window advances only for packets whose ICV verified, in packet order.
    let (ra, rb) = {
        let mut w = sa.replay_window();
        let ra = ra
            .map_err(icv_reason)
            .and_then(|()| accept(sa, &mut w, a.seq));
        let rb = match rb {
            Ok(()) => accept(sa, &mut w, b.seq),
            // Processed alone, `b` would have met the window after `a`'s accept before its
            // ICV: a replay reason found there comes first.
            Err(e) => match sa.cfg.replay_window.is_some() {
                true => w.check(b.seq).map_err(replay_reason),
                false => Ok(()),
            }
            .and(Err(icv_reason(e))),
        };
        (ra, rb)
    };
    let ra = ra.and_then(|()| after_icv(sa, fa, &a.outer));
    let rb = rb.and_then(|()| after_icv(sa, fb, &b.outer));
    let counts = run_counts(run, sa);
    [count(counts, ra), count(counts, rb)]
}

fn count(counts: &mut SaCounters, r: Result<usize, DropReason>) -> Verdict {
    match r {
        Ok(len) => {
            counts.pass(len);
            Verdict::Forward
        }
        Err(r) => {
            counts.drop(r);
            Verdict::Drop(r)
        }
    }
}

/// §3.4.3: the window advances only for packets whose ICV verified; without anti-replay
/// it only tracks the top for ESN inference.
fn accept(sa: &InboundSa, w: &mut ReplayWindow, seq: u64) -> Result<(), DropReason> {
    match w.accept(seq) {
        Ok(()) => Ok(()),
        Err(e) if sa.cfg.replay_window.is_some() => Err(replay_reason(e)),
        Err(_) => Ok(()), // window used only to infer ESN high bits
    }
}

/// After the ICV verified and the window accepted: trailer, padding, restore, selectors.
fn after_icv<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &InboundSa,
    f: &mut Frame<B>,
    outer: &Outer,
) -> Result<usize, DropReason> {
    let iv_len = sa.crypto.iv_len();
    let icv_len = sa.crypto.icv_len();
    let d = f.data_mut();
    let pt_at = outer.esp_at + esp::HEADER_LEN + iv_len;
    let pt_end = d.len() - icv_len;
    let plaintext = &d[pt_at..pt_end];
    let trailer = EspTrailer::parse(plaintext).map_err(|_| DropReason::Malformed)?;
    let pad = usize::from(trailer.pad_len);
    if pad + EspTrailer::LEN > plaintext.len() {
        return Err(DropReason::BadPadding);
    }
    let payload_len = plaintext.len() - pad - EspTrailer::LEN;
    // §2.4: the receiver checks the default padding contents 1, 2, 3, ...
    let pad_bytes = &plaintext[payload_len..payload_len + pad];
    if pad_bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| usize::from(b) != i + 1)
    {
        return Err(DropReason::BadPadding);
    }
    if trailer.next_header == IpProtocol::NO_NEXT_HEADER {
        return Err(DropReason::DummyPacket);
    }

    match sa.cfg.mode {
        Mode::Tunnel { .. } => finish_tunnel(sa, f, outer, pt_at, payload_len, trailer.next_header),
        Mode::Transport => finish_transport(sa, f, outer, pt_at, payload_len, trailer.next_header),
    }?;

    // RFC 4301 §5.2 step 4: the decrypted packet must match the SA's selectors.
    let flow = FlowKey::of_packet(f.data()).ok_or(DropReason::Malformed)?;
    if !sa.cfg.selectors.admits_inbound(&flow) {
        return Err(DropReason::SelectorMismatch);
    }
    Ok(f.len())
}

fn replay_reason(e: ReplayError) -> DropReason {
    match e {
        ReplayError::Duplicate => DropReason::ReplayDuplicate,
        ReplayError::TooOld => DropReason::ReplayTooOld,
        ReplayError::Zero => DropReason::Malformed,
    }
}

fn finish_tunnel<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &InboundSa,
    f: &mut Frame<B>,
    outer: &Outer,
    pt_at: usize,
    payload_len: usize,
    next_header: u8,
) -> Result<(), DropReason> {
    let head = f.head() + pt_at;
    f.set_bounds(head, payload_len);
    let outer_ecn = Ecn::from_bits(outer.tos);
    let outer_dscp = outer.tos & !3;
    let d = f.data_mut();
    match next_header {
        IpProtocol::IPV4 => {
            let mut p = Ipv4Packet::new_checked(&mut d[..]).map_err(|_| DropReason::Malformed)?;
            if !p.verify_checksum() {
                return Err(DropReason::BadIpChecksum);
            }
            let tos = p.tos();
            let ecn = decap_ecn(outer_ecn, Ecn::from_bits(tos)).ok_or(DropReason::EcnDrop)?;
            let dscp = if sa.cfg.copy_dscp_on_decap {
                outer_dscp
            } else {
                tos & !3
            };
            let new_tos = dscp | ecn as u8;
            if new_tos != tos {
                p.set_tos_incremental(new_tos);
            }
            let total = p.total_len();
            // Anything past the inner length is TFC padding (RFC 4303 §2.7).
            f.truncate(total);
        }
        IpProtocol::IPV6 => {
            let mut p = Ipv6Packet::new_checked(&mut d[..]).map_err(|_| DropReason::Malformed)?;
            let tc = p.traffic_class();
            let ecn = decap_ecn(outer_ecn, Ecn::from_bits(tc)).ok_or(DropReason::EcnDrop)?;
            let dscp = if sa.cfg.copy_dscp_on_decap {
                outer_dscp
            } else {
                tc & !3
            };
            p.set_traffic_class(dscp | ecn as u8);
            let total = p.total_len();
            f.truncate(total);
        }
        _ => return Err(DropReason::NotEsp),
    }
    Ok(())
}

fn finish_transport<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &InboundSa,
    f: &mut Frame<B>,
    outer: &Outer,
    pt_at: usize,
    payload_len: usize,
    next_header: u8,
) -> Result<(), DropReason> {
    // Remove [UDP] ESP header and IV by sliding the clear IP header forward over them.
    let shift = pt_at - outer.ip_len;
    let head = f.head();
    f.raw_mut()
        .copy_within(head..head + outer.ip_len, head + shift);
    f.set_bounds(head + shift, outer.ip_len + payload_len);
    let total = f.len();
    let d = f.data_mut();
    d[outer.nh_at] = next_header;
    // Fix the length field first: until then it still counts the removed ESP bytes and the
    // view would (rightly) refuse the header as longer than the buffer.
    let (src, dst) = if outer.v4 {
        d[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        let mut p = Ipv4Packet::new_checked(&mut d[..]).map_err(|_| DropReason::Malformed)?;
        p.fill_checksum();
        (p.src().into(), p.dst().into())
    } else {
        d[4..6].copy_from_slice(&((total - ipv6::HEADER_LEN) as u16).to_be_bytes());
        let p = Ipv6Packet::new_checked(&d[..]).map_err(|_| DropReason::Malformed)?;
        (p.src().into(), p.dst().into())
    };
    // RFC 3948 §3.1.2: after NAT traversal in transport mode the addresses the sender used
    // in its TCP/UDP checksum may have been rewritten; recompute the checksum.
    if sa.cfg.udp_encap.is_some() {
        fix_l4_checksum(&mut d[outer.ip_len..], next_header, src, dst);
    }
    Ok(())
}

fn fix_l4_checksum(seg: &mut [u8], proto: u8, src: std::net::IpAddr, dst: std::net::IpAddr) {
    use std::net::IpAddr;
    let at = match proto {
        IpProtocol::TCP if seg.len() >= 20 => 16,
        // A zero UDP checksum over IPv4 means "none" and stays so.
        IpProtocol::UDP if seg.len() >= 8 && !(src.is_ipv4() && seg[6..8] == [0, 0]) => 6,
        _ => return,
    };
    seg[at..at + 2].copy_from_slice(&[0, 0]);
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_v4(s, d, proto, seg.len() as u16),
        (IpAddr::V6(s), IpAddr::V6(d)) => checksum::pseudo_v6(s, d, proto, seg.len() as u32),
        _ => return,
    };
    let mut c = checksum::finish(checksum::combine(pseudo, checksum::sum(seg)));
    if proto == IpProtocol::UDP && c == 0 {
        c = 0xffff;
    }
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// The SPI of an ESP (or ESP-in-UDP) packet, without changing it: lets a worker group a
/// batch by SA before taking each SA once. `None` if it is not a well-formed ESP packet.
pub fn peek_spi(pkt: &[u8]) -> Option<u32> {
    let (ip_len, proto, total) = match pkt.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(pkt).ok()?;
            (p.header_len(), p.protocol(), p.total_len())
        }
        6 => {
            let p = Ipv6Packet::new_checked(pkt).ok()?;
            let total = p.total_len();
            let (off, nh_at) = ipv6::split_before_esp(&pkt[..total])?;
            (off, pkt[nh_at], total)
        }
        _ => return None,
    };
    let esp_at = match proto {
        IpProtocol::ESP => ip_len,
        IpProtocol::UDP => ip_len + udp::HEADER_LEN,
        _ => return None,
    };
    let b = pkt.get(esp_at..esp_at + 4.min(total))?;
    let spi = u32::from_be_bytes(b.try_into().ok()?);
    (spi != 0).then_some(spi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{EspTransform, SaKeys};
    use crate::esp::{OutboundSa, SaConfig};
    use crate::wire::Ipv4Repr;

    fn cfg(esn: bool, replay: Option<u32>) -> SaConfig {
        let t = EspTransform::AES_GCM_128;
        let keys = SaKeys::new(&[0x42; 20], &[]);
        let mut c = SaConfig::tunnel(
            0x1007,
            t,
            keys,
            [192, 0, 2, 1].into(),
            [192, 0, 2, 2].into(),
        );
        c.esn = esn;
        c.replay_window = replay;
        c
    }

    fn inner() -> Vec<u8> {
        let mut p = vec![0u8; 64];
        Ipv4Repr {
            src: [10, 1, 0, 1].into(),
            dst: [10, 2, 0, 2].into(),
            protocol: 17,
            payload_len: 44,
            ttl: 64,
            tos: 0,
            ident: 1,
            dont_frag: true,
        }
        .emit(&mut p)
        .unwrap();
        p[20..28].copy_from_slice(&[0, 1, 0, 2, 0, 44, 0, 0]);
        p
    }

    /// One sealed packet per `(seq, forged)`; a forged one has a ciphertext byte flipped.
    fn wire(out: &OutboundSa, pkts: &[(u64, bool)]) -> Vec<Vec<u8>> {
        pkts.iter()
            .map(|&(seq, forged)| {
                out.set_last_seq(seq - 1);
                let mut f = Frame::with_packet(vec![0u8; 512], 128, &inner()).unwrap();
                assert_eq!(crate::esp::encap(out, &mut f), Verdict::Forward);
                let mut w = f.data().to_vec();
                if forged {
                    w[40] ^= 1;
                }
                w
            })
            .collect()
    }

    /// Decapsulating a batch gives every packet the verdict, and the SA the counters, that
    /// decapsulating the packets one at a time gives — although the batch opens two packets
    /// at once and checks the second before the first is accepted.
    #[test]
    fn batch_matches_one_by_one() {
        let w64 = 1u64 << 32;
        // (esn, replay window, window top to start from (0: fresh), packets as (seq, forged)).
        type Case = (bool, Option<u32>, u64, Vec<(u64, bool)>);
        let cases: Vec<Case> = vec![
            // In order, duplicates next to each other and apart, too old after a jump,
            // forged copies of a number already seen and of one not yet seen.
            (
                false,
                Some(64),
                0,
                vec![
                    (1, false),
                    (2, false),
                    (2, false),
                    (3, false),
                    (5, false),
                    (4, false),
                    (1, false),
                    (300, false),
                    (5, false),
                    (301, true),
                    (301, false),
                    (300, true),
                    (302, false),
                    (302, false),
                    (400, false),
                    (380, true),
                    (2000, true),
                    (2000, false),
                    (1990, false),
                ],
            ),
            // Without anti-replay: duplicates pass.
            (
                false,
                None,
                0,
                vec![(1, false), (1, false), (9, false), (3, true), (3, false)],
            ),
            // ESN across 2^32: the second packet's high half depends on the first's accept.
            (
                true,
                Some(64),
                w64 + 10,
                vec![
                    (w64 + 200, false),
                    (w64 - 5, false),
                    (w64 + 11, false),
                    (w64 + 11, false),
                    (2 * w64 - 5, false),
                    (w64 + 400, true),
                    (w64 + 399, false),
                    (w64 - 20, false),
                    (w64 + 401, false),
                ],
            ),
            (
                true,
                None,
                w64 + 10,
                vec![(w64 + 200, false), (w64 - 5, false), (w64 + 12, false)],
            ),
        ];
        for (esn, replay, top, pkts) in cases {
            let c = cfg(esn, replay);
            let out = OutboundSa::new(c.clone()).unwrap();
            let w = wire(&out, &pkts);
            let frames = || {
                w.iter()
                    .map(|p| Frame::with_packet(vec![0u8; 512], 128, p).unwrap())
                    .collect::<Vec<_>>()
            };
            let (one, batch) = (
                InboundSa::new(c.clone()).unwrap(),
                InboundSa::new(c).unwrap(),
            );
            if top != 0 {
                one.restore_replay_top(top);
                batch.restore_replay_top(top);
            }
            let singles: Vec<Verdict> = frames()
                .iter_mut()
                .map(|f| crate::esp::decap(&one, f))
                .collect();
            let mut fs = frames();
            let mut verdicts = vec![Verdict::Forward; fs.len()];
            crate::esp::decap_batch(&batch, &mut fs, &mut verdicts);
            assert_eq!(verdicts, singles, "esn={esn} replay={replay:?}");
            assert_eq!(
                batch.counters(),
                one.counters(),
                "esn={esn} replay={replay:?}"
            );
            assert_eq!(batch.replay_window().top(), one.replay_window().top());
            assert!(singles.contains(&Verdict::Forward));
            assert!(singles.iter().any(|v| !v.is_forward()) || replay.is_none());
        }
    }

    /// Runs of several SAs in one batch: each packet is opened with its own SA and each SA
    /// gets its own counts, as one at a time.
    #[test]
    fn batch_of_several_sas_matches_one_by_one() {
        let mut ca = cfg(false, Some(64));
        let mut cb = cfg(false, Some(64));
        ca.spi = 0x1007;
        cb.spi = 0x1008;
        let (oa, ob) = (
            OutboundSa::new(ca.clone()).unwrap(),
            OutboundSa::new(cb.clone()).unwrap(),
        );
        let order = [
            (0, 1),
            (0, 2),
            (1, 1),
            (0, 3),
            (1, 2),
            (1, 2),
            (0, 4),
            (1, 3),
        ];
        let w: Vec<Vec<u8>> = order
            .iter()
            .map(|&(which, seq)| {
                wire(if which == 0 { &oa } else { &ob }, &[(seq, false)]).remove(0)
            })
            .collect();
        let mk = || {
            let mut m = SpiMap::default();
            m.insert(InboundSa::new(ca.clone()).unwrap());
            m.insert(InboundSa::new(cb.clone()).unwrap());
            m
        };
        let (one, batch) = (mk(), mk());
        let mut fs: Vec<_> = w
            .iter()
            .map(|p| Frame::with_packet(vec![0u8; 512], 128, p).unwrap())
            .collect();
        let singles: Vec<Verdict> = fs
            .clone()
            .iter_mut()
            .map(|f| crate::esp::decap(&one, f))
            .collect();
        let mut verdicts = vec![Verdict::Forward; fs.len()];
        crate::esp::decap_batch(&batch, &mut fs, &mut verdicts);
        assert_eq!(verdicts, singles);
        assert_eq!(
            singles.iter().filter(|v| v.is_forward()).count(),
            order.len() - 1
        );
        for spi in [0x1007, 0x1008] {
            let (a, b) = (one.lookup(spi).unwrap(), batch.lookup(spi).unwrap());
            assert_eq!(a.counters(), b.counters(), "spi {spi}");
        }
    }
}
