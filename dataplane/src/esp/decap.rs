//! Inbound processing (RFC 4303 §3.4): ESP packet → inner packet, in place.

use std::collections::HashMap;

use super::drop_reason::DropReason;
use super::ecn::decap_ecn;
use super::frame::Frame;
use super::replay::ReplayError;
use super::sa::{InboundSa, Mode, SaCounters};
use super::selector::FlowKey;
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
struct Outer {
    v4: bool,
    /// Length of the outer IP header plus the extension headers before ESP/UDP.
    ip_len: usize,
    /// Offset of the next-header byte naming ESP/UDP (transport mode rewrites it).
    nh_at: usize,
    esp_at: usize,
    tos: u8,
}

fn parse_outer(f: &mut Frame<impl AsRef<[u8]> + AsMut<[u8]>>) -> Result<Outer, DropReason> {
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
    f.truncate(total);
    Ok(Outer {
        v4,
        ip_len,
        nh_at,
        esp_at,
        tos,
    })
}

/// Decapsulate the packet in `f` (an IP packet at the frame's head); on success the frame
/// holds the inner packet (tunnel mode) or the restored packet (transport mode). `run`
/// carries the counts of the current run of packets of one SA, added to the SA when the
/// run ends.
pub(crate) fn decap_one<'a, B, T>(
    table: &'a T,
    f: &mut Frame<B>,
    run: &mut Option<(&'a InboundSa, SaCounters)>,
) -> Result<(), DropReason>
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    T: InboundSaLookup + ?Sized,
{
    let outer = parse_outer(f)?;
    let spi = {
        let esp =
            EspPacket::new_checked(&f.data()[outer.esp_at..]).map_err(|_| DropReason::Malformed)?;
        esp.spi()
    };
    let sa = table.lookup(spi).ok_or(DropReason::UnknownSpi)?;
    let counts = match run {
        Some((cur, c)) if std::ptr::eq(*cur, sa) => c,
        _ => {
            if let Some((prev, c)) = run.take() {
                prev.account(&c);
            }
            &mut run.insert((sa, SaCounters::default())).1
        }
    };
    let r = if sa.is_expired() {
        Err(DropReason::SaExpired)
    } else {
        open_with(sa, f, &outer)
    };
    match r {
        Ok(len) => {
            counts.pass(len);
            Ok(())
        }
        Err(r) => {
            counts.drop(r);
            Err(r)
        }
    }
}

fn open_with<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &InboundSa,
    f: &mut Frame<B>,
    outer: &Outer,
) -> Result<usize, DropReason> {
    let crypto = &sa.crypto;
    let iv_len = crypto.iv_len();
    let icv_len = crypto.icv_len();
    let esp_len = f.len() - outer.esp_at;
    // The payload must hold at least the two trailer bytes.
    if esp_len < crypto.overhead() + 2 {
        return Err(DropReason::Malformed);
    }
    let seq_low = EspPacket::new_checked(&f.data()[outer.esp_at..])
        .map_err(|_| DropReason::Malformed)?
        .seq();

    // RFC 4303 §3.4.3 and Appendix A: infer the high half, then check the window
    // *before* spending cycles on the ICV. The window is locked only for the check and,
    // below, for the accept: workers sharing the SA decrypt in parallel, and the accept
    // re-checks, so each sequence number is accepted exactly once whoever receives it.
    let anti_replay = sa.cfg.replay_window.is_some();
    let seq = {
        let w = sa.replay_window();
        let seq = if sa.cfg.esn {
            w.infer_esn(seq_low).ok_or(DropReason::ReplayTooOld)?
        } else {
            u64::from(seq_low)
        };
        if anti_replay {
            w.check(seq).map_err(replay_reason)?;
        }
        seq
    };

    let esn_high = sa.cfg.esn.then_some((seq >> 32) as u32);
    let d = f.data_mut();
    crypto
        .open(&mut d[outer.esp_at..], esn_high)
        .map_err(|e| match e {
            CryptoError::IcvMismatch => DropReason::IcvFailed,
            _ => DropReason::Malformed,
        })?;
    // §3.4.3: the window advances only for packets whose ICV verified.
    let accepted = sa.replay_window().accept(seq);
    match accepted {
        Ok(()) => {}
        Err(e) if anti_replay => return Err(replay_reason(e)),
        Err(_) => {} // window used only to infer ESN high bits
    }

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
