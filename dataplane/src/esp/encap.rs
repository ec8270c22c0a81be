//! Outbound processing (RFC 4303 §3.3): inner packet → ESP packet, in place.

use std::net::IpAddr;

use super::drop_reason::DropReason;
use super::ecn::encap_ecn;
use super::frame::Frame;
use super::sa::{DfPolicy, Mode, OutboundSa, SaCounters};
use super::Verdict;
use crate::wire::ip::IpProtocol;
use crate::wire::{
    checksum, esp, ipv4, ipv6, udp, Ecn, EspRepr, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr,
    UdpRepr,
};

/// What the encapsulation needs to know about the inner packet.
#[derive(Clone, Copy)]
struct Inner {
    v4: bool,
    tos: u8,
    dont_frag: bool,
    /// Length of the part left in clear in front of ESP (transport mode: the IP header and
    /// the extension headers that precede ESP).
    clear_len: usize,
    /// Offset of the next-header byte to rewrite to ESP (transport mode).
    nh_at: usize,
    /// ESP next header (RFC 4303 §2.6).
    next_header: u8,
}

fn inspect(pkt: &[u8], transport: bool) -> Result<(Inner, usize), DropReason> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => {
            let p = Ipv4Packet::new_checked(pkt).map_err(|_| DropReason::Malformed)?;
            if !p.verify_checksum() {
                return Err(DropReason::BadIpChecksum);
            }
            if transport && p.is_fragment() {
                // RFC 4303 §3.1.1: transport mode protects whole datagrams only.
                return Err(DropReason::Fragment);
            }
            let inner = Inner {
                v4: true,
                tos: p.tos(),
                dont_frag: p.dont_frag(),
                clear_len: if transport { p.header_len() } else { 0 },
                nh_at: 9,
                next_header: if transport {
                    p.protocol()
                } else {
                    IpProtocol::IPV4
                },
            };
            Ok((inner, p.total_len()))
        }
        Some(6) => {
            let p = Ipv6Packet::new_checked(pkt).map_err(|_| DropReason::Malformed)?;
            let total = p.total_len();
            let (clear_len, nh_at, next_header) = if transport {
                let (off, nh_at) =
                    ipv6::split_before_esp(&pkt[..total]).ok_or(DropReason::Malformed)?;
                let nh = pkt[nh_at];
                if nh == IpProtocol::FRAGMENT {
                    return Err(DropReason::Fragment);
                }
                (off, nh_at, nh)
            } else {
                (0, 0, IpProtocol::IPV6)
            };
            let inner = Inner {
                v4: false,
                tos: p.traffic_class(),
                dont_frag: true,
                clear_len,
                nh_at,
                next_header,
            };
            Ok((inner, total))
        }
        _ => Err(DropReason::Malformed),
    }
}

/// Packets per sequence-number reservation (stack space for their plans).
pub(crate) const CHUNK: usize = 64;

/// A packet that passed the checks, and the sizes its encapsulation needs.
#[derive(Clone, Copy)]
struct Plan {
    inner: Inner,
    inner_len: usize,
    pad: usize,
    tail: usize,
    front: usize,
    outer_ip_len: usize,
    outer_v4: bool,
    udp_len: usize,
}

/// Encapsulate a chunk (≤ `CHUNK` frames): check every packet, reserve one sequence number
/// per packet that passed with a single atomic operation, then seal. A packet dropped by
/// the checks does not burn a number.
pub(crate) fn encap_chunk<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &OutboundSa,
    frames: &mut [Frame<B>],
    verdicts: &mut [Verdict],
    counts: &mut SaCounters,
) {
    debug_assert!(frames.len() <= CHUNK);
    let mut plans: [Option<Plan>; CHUNK] = [None; CHUNK];
    let expired = sa.is_expired();
    let mut ok = 0u64;
    for (i, f) in frames.iter_mut().enumerate() {
        let r = if expired {
            Err(DropReason::SaExpired)
        } else {
            prepare(sa, f)
        };
        match r {
            Ok(p) => {
                plans[i] = Some(p);
                ok += 1;
            }
            Err(r) => {
                counts.drop(r);
                verdicts[i] = Verdict::Drop(r);
            }
        }
    }
    let mut seqs = sa.reserve_seq(ok).into_iter().flatten();
    let mut built: [Option<Built>; CHUNK] = [None; CHUNK];
    for (i, f) in frames.iter_mut().enumerate() {
        let Some(plan) = plans[i] else { continue };
        let r = match seqs.next() {
            Some(seq) => build(sa, f, &plan, seq),
            None if sa.is_expired() => Err(DropReason::SaExpired),
            None if sa.waiting_for_lease() => Err(DropReason::SeqLeaseWait),
            None => Err(DropReason::SeqExhausted),
        };
        match r {
            Ok(b) => built[i] = Some(b),
            Err(r) => {
                counts.drop(r);
                verdicts[i] = Verdict::Drop(r);
            }
        }
    }
    // Encrypt two packets at a time: the AES-GCM engine interleaves short ones, so one
    // packet's AES latency hides behind the other's (other ciphers go one by one).
    let mut pending: Option<(usize, &mut Frame<B>)> = None;
    for (i, f) in frames.iter_mut().enumerate() {
        let Some(b) = built[i] else { continue };
        let Some((j, g)) = pending.take() else {
            pending = Some((i, f));
            continue;
        };
        let a = built[j].expect("pending frames were built");
        let esn = |seq: u64| sa.cfg.esn.then_some((seq >> 32) as u32);
        let [ra, rb] = sa.crypto.seal_pair(
            (&mut g.data_mut()[a.esp_at..], a.seq, esn(a.seq)),
            (&mut f.data_mut()[b.esp_at..], b.seq, esn(b.seq)),
        );
        verdicts[j] = finish(g, &a, ra, plans[j], counts);
        verdicts[i] = finish(f, &b, rb, plans[i], counts);
    }
    if let Some((j, g)) = pending {
        let a = built[j].expect("pending frames were built");
        let r = sa.crypto.seal(
            &mut g.data_mut()[a.esp_at..],
            a.seq,
            sa.cfg.esn.then_some((a.seq >> 32) as u32),
        );
        verdicts[j] = finish(g, &a, r, plans[j], counts);
    }
}

/// After encryption: the UDP checksum of NAT-T over IPv6 (it covers the ciphertext), the
/// verdict and the counters.
fn finish<B: AsRef<[u8]> + AsMut<[u8]>>(
    f: &mut Frame<B>,
    b: &Built,
    sealed: Result<(), crate::crypto::CryptoError>,
    plan: Option<Plan>,
    counts: &mut SaCounters,
) -> Verdict {
    if sealed.is_err() {
        counts.drop(DropReason::Malformed);
        return Verdict::Drop(DropReason::Malformed);
    }
    if let Some((s, t)) = b.udp6 {
        // RFC 3948 §2.1: over IPv4 the checksum is zero. IPv6 forbids a zero UDP checksum
        // (RFC 8200 §8.1), so there we compute it.
        let d = f.data_mut();
        let seg = &d[b.udp_at..];
        let acc = checksum::combine(
            checksum::pseudo_v6(s, t, IpProtocol::UDP, seg.len() as u32),
            checksum::sum(seg),
        );
        let c = match checksum::finish(acc) {
            0 => 0xffff,
            c => c,
        };
        d[b.udp_at + 6..b.udp_at + 8].copy_from_slice(&c.to_be_bytes());
    }
    counts.pass(plan.expect("built frames were planned").inner_len);
    Verdict::Forward
}

/// A packet whose headers and trailer are in place, waiting for its encryption.
#[derive(Clone, Copy)]
struct Built {
    seq: u64,
    /// Where ESP starts in the frame.
    esp_at: usize,
    /// Where the UDP header of NAT-T starts.
    udp_at: usize,
    /// NAT-T over IPv6: the addresses of the checksum's pseudo-header.
    udp6: Option<(std::net::Ipv6Addr, std::net::Ipv6Addr)>,
}

/// The checks and sizes, before a sequence number is spent.
fn prepare<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &OutboundSa,
    f: &mut Frame<B>,
) -> Result<Plan, DropReason> {
    let transport = sa.cfg.mode == Mode::Transport;
    let (inner, total) = inspect(f.data(), transport)?;
    // Ethernet padding or garbage beyond the IP length is not part of the packet.
    f.truncate(total);
    let inner_len = f.len();

    let crypto = &sa.crypto;
    let iv_len = crypto.iv_len();
    let icv_len = crypto.icv_len();
    let align = crypto.align();
    let udp_len = if sa.cfg.udp_encap.is_some() {
        udp::HEADER_LEN
    } else {
        0
    };
    let (outer_ip_len, outer_v4) = match sa.cfg.mode {
        Mode::Tunnel {
            local: IpAddr::V4(_),
            ..
        } => (ipv4::MIN_HEADER_LEN, true),
        Mode::Tunnel { .. } => (ipv6::HEADER_LEN, false),
        Mode::Transport => (0, inner.v4),
    };

    // RFC 4303 §2.4: pad so payload ‖ padding ‖ pad length ‖ next header is aligned.
    let protected = inner_len - inner.clear_len;
    let pad = (align - (protected + 2) % align) % align;
    let tail = pad + 2 + icv_len;
    let front = outer_ip_len + udp_len + esp::HEADER_LEN + iv_len;
    if inner_len + front + tail > usize::from(u16::MAX) {
        return Err(DropReason::TooBig);
    }
    if f.headroom() < front || f.tailroom() < tail {
        return Err(DropReason::NoRoom);
    }
    Ok(Plan {
        inner,
        inner_len,
        pad,
        tail,
        front,
        outer_ip_len,
        outer_v4,
        udp_len,
    })
}

/// Build the ESP packet around a prepared packet with sequence number `seq`: everything
/// but the encryption (and the IPv6 NAT-T checksum that covers it).
fn build<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &OutboundSa,
    f: &mut Frame<B>,
    plan: &Plan,
    seq: u64,
) -> Result<Built, DropReason> {
    let Plan {
        inner,
        inner_len,
        pad,
        tail,
        front,
        outer_ip_len,
        outer_v4,
        udp_len,
    } = *plan;
    let transport = sa.cfg.mode == Mode::Transport;

    // Trailer (RFC 4303 §2.4–2.6): padding 1, 2, 3, ..., pad length, next header.
    f.push_back(tail);
    {
        let d = f.data_mut();
        for (i, b) in d[inner_len..inner_len + pad].iter_mut().enumerate() {
            *b = (i + 1) as u8;
        }
        d[inner_len + pad] = pad as u8;
        d[inner_len + pad + 1] = inner.next_header;
    }
    f.push_front(front);
    let d = f.data_mut();
    let total_len = d.len();

    // Transport mode: slide the clear IP header to the new front (ESP goes after it).
    let hdr_len = if transport {
        d.copy_within(front..front + inner.clear_len, 0);
        inner.clear_len
    } else {
        outer_ip_len
    };

    // ESP header and the protected payload (RFC 4303 §3.3.2–3.3.4).
    let esp_at = hdr_len + udp_len;
    EspRepr {
        spi: sa.cfg.spi,
        seq: seq as u32,
    }
    .emit(&mut d[esp_at..])
    .map_err(|_| DropReason::NoRoom)?;

    let ip_proto = if udp_len != 0 {
        IpProtocol::UDP
    } else {
        IpProtocol::ESP
    };
    // Outer (tunnel) or rewritten (transport) IP header.
    let (src, dst) = match sa.cfg.mode {
        Mode::Tunnel { local, remote } => {
            // RFC 4301 §5.1.2.1: DSCP copied from inner to outer; RFC 6040: ECN too.
            let ecn = encap_ecn(Ecn::from_bits(inner.tos));
            let tos = (inner.tos & !3) | ecn as u8;
            match (local, remote) {
                (IpAddr::V4(s), IpAddr::V4(t)) => {
                    let dont_frag = match sa.cfg.df {
                        DfPolicy::Set => true,
                        DfPolicy::Clear => false,
                        DfPolicy::Copy => inner.dont_frag,
                    };
                    Ipv4Repr {
                        src: s,
                        dst: t,
                        protocol: ip_proto,
                        payload_len: total_len - outer_ip_len,
                        ttl: sa.cfg.outer_ttl,
                        tos,
                        // RFC 6864 §4.1: atomic datagrams may carry any ID; others need one
                        // unique per source, destination and protocol for the reassembly
                        // lifetime — the low bits of the sequence number are.
                        ident: if dont_frag { 0 } else { seq as u16 },
                        dont_frag,
                    }
                    .emit(d)
                    .map_err(|_| DropReason::TooBig)?;
                }
                (IpAddr::V6(s), IpAddr::V6(t)) => {
                    Ipv6Repr {
                        src: s,
                        dst: t,
                        next_header: ip_proto,
                        payload_len: total_len - outer_ip_len,
                        hop_limit: sa.cfg.outer_ttl,
                        traffic_class: tos,
                        flow_label: 0,
                    }
                    .emit(d)
                    .map_err(|_| DropReason::TooBig)?;
                }
                _ => return Err(DropReason::Malformed),
            }
            (local, remote)
        }
        Mode::Transport => {
            if outer_v4 {
                let mut p =
                    Ipv4Packet::new_checked(&mut d[..]).map_err(|_| DropReason::Malformed)?;
                p.set_protocol(ip_proto);
                p.set_total_len(total_len as u16);
                p.fill_checksum();
                (p.src().into(), p.dst().into())
            } else {
                d[inner.nh_at] = ip_proto;
                let mut p =
                    Ipv6Packet::new_checked(&mut d[..]).map_err(|_| DropReason::Malformed)?;
                p.set_payload_len((total_len - ipv6::HEADER_LEN) as u16);
                (p.src().into(), p.dst().into())
            }
        }
    };

    let mut udp6 = None;
    if let Some(encap) = sa.cfg.udp_encap {
        let udp_payload = total_len - hdr_len - udp::HEADER_LEN;
        UdpRepr {
            src_port: encap.src_port,
            dst_port: encap.dst_port,
            payload_len: udp_payload,
        }
        .emit(&mut d[hdr_len..])
        .map_err(|_| DropReason::TooBig)?;
        // The IPv6 checksum covers the ciphertext: `finish` computes it after sealing.
        if let (IpAddr::V6(s), IpAddr::V6(t)) = (src, dst) {
            udp6 = Some((s, t));
        }
    }

    Ok(Built {
        seq,
        esp_at,
        udp_at: hdr_len,
        udp6,
    })
}
