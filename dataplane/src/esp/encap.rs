//! Outbound processing (RFC 4303 §3.3): inner packet → ESP packet, in place.

use std::net::IpAddr;

use super::drop_reason::DropReason;
use super::ecn::encap_ecn;
use super::frame::Frame;
use super::sa::{DfPolicy, Mode, OutboundSa, SaConfig, SaCounters};
use super::Verdict;
use crate::wire::ip::IpProtocol;
use crate::wire::{
    checksum, esp, ipv4, ipv6, udp, Ecn, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr,
};

/// What the encapsulation needs to know about the inner packet.
#[derive(Clone, Copy)]
struct Inner {
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

/// What every packet of one outbound SA shares, worked out once when the SA is installed
/// (`OutboundSa::new`): the sizes ESP adds and, in tunnel mode, the outer IP and NAT-T UDP
/// headers with every constant field filled in, so that per packet only the lengths, TOS,
/// DF, IPv4 ID and checksum are patched.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    icv_len: usize,
    align: usize,
    udp_len: usize,
    /// Outer IP header length (tunnel mode; 0 in transport mode).
    outer_ip_len: usize,
    outer_v4: bool,
    tunnel: bool,
    /// ESP + IV + (tunnel) the outer IP header + the UDP header.
    front: usize,
    /// Outer IP header (tunnel mode) then the UDP header (NAT-T); lengths, TOS, ID, DF and
    /// checksum zero.
    hdr: [u8; 48],
    /// Tunnel over IPv4: the checksum's partial sum over the constant fields of `hdr`.
    hdr_sum: u32,
    /// The SPI in network order.
    spi: [u8; 4],
}

impl Template {
    pub(crate) fn new(cfg: &SaConfig, crypto: &crate::crypto::SaCrypto) -> Template {
        let udp_len = if cfg.udp_encap.is_some() {
            udp::HEADER_LEN
        } else {
            0
        };
        let ip_proto = if udp_len != 0 {
            IpProtocol::UDP
        } else {
            IpProtocol::ESP
        };
        let mut hdr = [0u8; 48];
        let (tunnel, outer_ip_len, outer_v4) = match cfg.mode {
            Mode::Tunnel {
                local: IpAddr::V4(s),
                remote: IpAddr::V4(t),
            } => {
                let repr = Ipv4Repr {
                    src: s,
                    dst: t,
                    protocol: ip_proto,
                    payload_len: 0,
                    ttl: cfg.outer_ttl,
                    tos: 0,
                    ident: 0,
                    dont_frag: false,
                };
                repr.emit(&mut hdr).expect("48 bytes hold an IPv4 header");
                (true, ipv4::MIN_HEADER_LEN, true)
            }
            Mode::Tunnel {
                local: IpAddr::V6(s),
                remote: IpAddr::V6(t),
            } => {
                let repr = Ipv6Repr {
                    src: s,
                    dst: t,
                    next_header: ip_proto,
                    payload_len: 0,
                    hop_limit: cfg.outer_ttl,
                    traffic_class: 0,
                    flow_label: 0,
                };
                repr.emit(&mut hdr).expect("48 bytes hold an IPv6 header");
                (true, ipv6::HEADER_LEN, false)
            }
            // Mixed families are refused by `SaConfig` validation; transport mode keeps
            // the packet's own header.
            _ => (false, 0, false),
        };
        let mut hdr_sum = 0;
        if tunnel && outer_v4 {
            // Constant fields only: the total length, ID and checksum are zero here, and
            // the TOS and flags are added per packet.
            hdr[10..12].copy_from_slice(&[0, 0]);
            hdr[2..4].copy_from_slice(&[0, 0]);
            hdr_sum = checksum::sum(&hdr[..ipv4::MIN_HEADER_LEN]);
        }
        if let Some(encap) = cfg.udp_encap {
            let u = &mut hdr[outer_ip_len..outer_ip_len + udp::HEADER_LEN];
            u[0..2].copy_from_slice(&encap.src_port.to_be_bytes());
            u[2..4].copy_from_slice(&encap.dst_port.to_be_bytes());
        }
        let (iv_len, icv_len) = (crypto.iv_len(), crypto.icv_len());
        Template {
            icv_len,
            align: crypto.align(),
            udp_len,
            outer_ip_len,
            outer_v4,
            tunnel,
            front: outer_ip_len + udp_len + esp::HEADER_LEN + iv_len,
            hdr,
            hdr_sum,
            spi: cfg.spi.to_be_bytes(),
        }
    }
}

/// A packet that passed the checks, and the sizes its encapsulation needs.
#[derive(Clone, Copy, Default)]
struct Plan {
    inner_len: u16,
    pad: u8,
    tos: u8,
    dont_frag: bool,
    next_header: u8,
    /// Transport mode: the clear part in front of ESP, and where its next-header byte is.
    clear_len: u16,
    nh_at: u16,
}

/// Encapsulate a chunk (≤ `CHUNK` frames): check every packet, reserve one sequence number
/// per packet that passed with a single atomic operation, then build and seal. A packet
/// dropped by the checks does not burn a number.
pub(crate) fn encap_chunk<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &OutboundSa,
    frames: &mut [Frame<B>],
    verdicts: &mut [Verdict],
    counts: &mut SaCounters,
) {
    debug_assert!(frames.len() <= CHUNK);
    let t = &sa.tmpl;
    let mut plans = [Plan::default(); CHUNK];
    // Bit i: frame i passed the checks.
    let mut passed = 0u64;
    if sa.is_expired() {
        for v in verdicts[..frames.len()].iter_mut() {
            counts.drop(DropReason::SaExpired);
            *v = Verdict::Drop(DropReason::SaExpired);
        }
        return;
    }
    for (i, f) in frames.iter_mut().enumerate() {
        match prepare(t, f) {
            Ok(p) => {
                plans[i] = p;
                passed |= 1 << i;
            }
            Err(r) => {
                counts.drop(r);
                verdicts[i] = Verdict::Drop(r);
            }
        }
    }
    let mut seqs = sa
        .reserve_seq(u64::from(passed.count_ones()))
        .into_iter()
        .flatten();
    let esn = |seq: u64| sa.cfg.esn.then_some((seq >> 32) as u32);
    // Build each packet, then encrypt two at a time: the AES-GCM engine interleaves short
    // ones, so one packet's AES latency hides behind the other's (other ciphers go one by
    // one).
    let mut pending: Option<(usize, &mut Frame<B>, Built)> = None;
    for (i, f) in frames.iter_mut().enumerate() {
        if passed & (1 << i) == 0 {
            continue;
        }
        let plan = &plans[i];
        let r = match seqs.next() {
            Some(seq) => build(sa, f, plan, seq),
            None if sa.is_expired() => Err(DropReason::SaExpired),
            None if sa.waiting_for_lease() => Err(DropReason::SeqLeaseWait),
            None => Err(DropReason::SeqExhausted),
        };
        let b = match r {
            Ok(b) => b,
            Err(r) => {
                counts.drop(r);
                verdicts[i] = Verdict::Drop(r);
                continue;
            }
        };
        let Some((j, g, a)) = pending.take() else {
            pending = Some((i, f, b));
            continue;
        };
        let [ra, rb] = sa.crypto.seal_pair(
            (&mut g.data_mut()[a.esp_at..], a.seq, esn(a.seq)),
            (&mut f.data_mut()[b.esp_at..], b.seq, esn(b.seq)),
        );
        verdicts[j] = finish(g, &a, ra, &plans[j], counts);
        verdicts[i] = finish(f, &b, rb, plan, counts);
    }
    if let Some((j, g, a)) = pending {
        let r = sa
            .crypto
            .seal(&mut g.data_mut()[a.esp_at..], a.seq, esn(a.seq));
        verdicts[j] = finish(g, &a, r, &plans[j], counts);
    }
}

/// After encryption: the UDP checksum of NAT-T over IPv6 (it covers the ciphertext), the
/// verdict and the counters.
fn finish<B: AsRef<[u8]> + AsMut<[u8]>>(
    f: &mut Frame<B>,
    b: &Built,
    sealed: Result<(), crate::crypto::CryptoError>,
    plan: &Plan,
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
    counts.pass(usize::from(plan.inner_len));
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
    t: &Template,
    f: &mut Frame<B>,
) -> Result<Plan, DropReason> {
    let (inner, total) = inspect(f.data(), !t.tunnel)?;
    // Ethernet padding or garbage beyond the IP length is not part of the packet.
    f.truncate(total);
    let inner_len = total;

    // RFC 4303 §2.4: pad so payload ‖ padding ‖ pad length ‖ next header is aligned.
    let protected = inner_len - inner.clear_len;
    let pad = (t.align - (protected + 2) % t.align) % t.align;
    let tail = pad + 2 + t.icv_len;
    if inner_len + t.front + tail > usize::from(u16::MAX) {
        return Err(DropReason::TooBig);
    }
    if f.headroom() < t.front || f.tailroom() < tail {
        return Err(DropReason::NoRoom);
    }
    // Checked above: every length fits in 16 bits, the padding in 8.
    Ok(Plan {
        inner_len: inner_len as u16,
        pad: pad as u8,
        tos: inner.tos,
        dont_frag: inner.dont_frag,
        next_header: inner.next_header,
        clear_len: inner.clear_len as u16,
        nh_at: inner.nh_at as u16,
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
    let t = &sa.tmpl;
    let inner_len = usize::from(plan.inner_len);
    let pad = usize::from(plan.pad);
    let clear_len = usize::from(plan.clear_len);
    let tail = pad + 2 + t.icv_len;

    // Trailer (RFC 4303 §2.4–2.6): padding 1, 2, 3, ..., pad length, next header. `prepare`
    // checked the room at both ends.
    f.push_back(tail);
    f.push_front(t.front);
    let front = t.front;
    let d = f.data_mut();
    let total_len = d.len();
    {
        let tr = &mut d[front + inner_len..front + inner_len + pad + 2];
        const PAD: [u8; 255] = {
            let mut p = [0u8; 255];
            let mut i = 0;
            while i < 255 {
                p[i] = i as u8 + 1;
                i += 1;
            }
            p
        };
        tr[..pad].copy_from_slice(&PAD[..pad]);
        tr[pad] = pad as u8;
        tr[pad + 1] = plan.next_header;
    }

    // Transport mode: slide the clear IP header to the new front (ESP goes after it).
    let hdr_len = if t.tunnel {
        t.outer_ip_len
    } else {
        d.copy_within(front..front + clear_len, 0);
        clear_len
    };

    // ESP header (RFC 4303 §3.3.2–3.3.4); the IV is written by the seal.
    let esp_at = hdr_len + t.udp_len;
    d[esp_at..esp_at + 4].copy_from_slice(&t.spi);
    d[esp_at + 4..esp_at + 8].copy_from_slice(&(seq as u32).to_be_bytes());

    let mut udp6 = None;
    if t.tunnel {
        // The outer header from the SA's template; only the per-packet fields are patched.
        d[..t.outer_ip_len + t.udp_len].copy_from_slice(&t.hdr[..t.outer_ip_len + t.udp_len]);
        // RFC 4301 §5.1.2.1: DSCP copied from inner to outer; RFC 6040: ECN too.
        let ecn = encap_ecn(Ecn::from_bits(plan.tos));
        let tos = (plan.tos & !3) | ecn as u8;
        if t.outer_v4 {
            let dont_frag = match sa.cfg.df {
                DfPolicy::Set => true,
                DfPolicy::Clear => false,
                DfPolicy::Copy => plan.dont_frag,
            };
            // RFC 6864 §4.1: atomic datagrams may carry any ID; others need one unique per
            // source, destination and protocol for the reassembly lifetime — the low bits
            // of the sequence number are.
            let ident = if dont_frag { 0 } else { seq as u16 };
            let flags: u16 = if dont_frag { 0x4000 } else { 0 };
            let h = &mut d[..ipv4::MIN_HEADER_LEN];
            h[1] = tos;
            h[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
            h[4..6].copy_from_slice(&ident.to_be_bytes());
            h[6..8].copy_from_slice(&flags.to_be_bytes());
            let acc =
                t.hdr_sum + u32::from(tos) + total_len as u32 + u32::from(ident) + u32::from(flags);
            h[10..12].copy_from_slice(&checksum::finish(acc).to_be_bytes());
        } else {
            let h = &mut d[..ipv6::HEADER_LEN];
            h[0] = 0x60 | (tos >> 4);
            h[1] = (tos << 4) | (h[1] & 0x0f);
            h[4..6].copy_from_slice(&((total_len - ipv6::HEADER_LEN) as u16).to_be_bytes());
            if t.udp_len != 0 {
                udp6 = Some((ipv6_addr(&h[8..24]), ipv6_addr(&h[24..40])));
            }
        }
    } else {
        let ip_proto = if t.udp_len != 0 {
            IpProtocol::UDP
        } else {
            IpProtocol::ESP
        };
        if plan_v4(d) {
            let mut p = Ipv4Packet::new_checked(&mut d[..]).map_err(|_| DropReason::Malformed)?;
            p.set_protocol(ip_proto);
            p.set_total_len(total_len as u16);
            p.fill_checksum();
        } else {
            d[usize::from(plan.nh_at)] = ip_proto;
            let mut p = Ipv6Packet::new_checked(&mut d[..]).map_err(|_| DropReason::Malformed)?;
            p.set_payload_len((total_len - ipv6::HEADER_LEN) as u16);
            if t.udp_len != 0 {
                udp6 = Some((p.src(), p.dst()));
            }
        }
        if t.udp_len != 0 {
            // Transport mode: the UDP header's ports from the template.
            d[hdr_len..hdr_len + 4].copy_from_slice(&t.hdr[0..4]);
        }
    }

    if t.udp_len != 0 {
        // RFC 3948 §2.1: over IPv4 the checksum is zero; over IPv6 `finish` computes it
        // after sealing (it covers the ciphertext).
        let udp_len = (total_len - hdr_len) as u16;
        let u = &mut d[hdr_len..hdr_len + udp::HEADER_LEN];
        u[4..6].copy_from_slice(&udp_len.to_be_bytes());
        u[6..8].copy_from_slice(&[0, 0]);
    }

    Ok(Built {
        seq,
        esp_at,
        udp_at: hdr_len,
        udp6,
    })
}

/// Transport mode: the packet's own header is IPv4.
fn plan_v4(d: &[u8]) -> bool {
    d.first().is_some_and(|b| b >> 4 == 4)
}

fn ipv6_addr(b: &[u8]) -> std::net::Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    a.into()
}
