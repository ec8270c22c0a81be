//! `esp_decap`: `dataplane::esp::decap_batch` with live inbound SAs of every cipher, ESN on
//! and off, anti-replay on and off, NAT-T, transport and tunnel, IPv4 and IPv6 outer.
//!
//! Input: `[cfg0][cfg1][rest]`. `cfg0`: bits 0–2 the transform (mod 6: AES-GCM-128,
//! AES-GCM-256, ChaCha20-Poly1305, AES-128-CBC+SHA-256, AES-256-CBC+SHA-384,
//! AES-256-CBC+SHA-512), bit 3 ESN, bit 4 anti-replay, bit 5 NAT-T (UDP/4500), bit 6
//! transport mode, bit 7 IPv6 outer. `cfg1`: bits 0–1 the selectors (0, 3 any; 1 narrow
//! prefixes; 2 narrow prefixes and UDP ports 1000–2000 for IPv4), bit 2 copy DSCP on decap,
//! bits 3–4 where the replay window starts (fresh, just below 2^32, just above 2^32, 100),
//! bit 5 a 64-packet window (else 1024), bit 6 a hard lifetime of 3 packets, bit 7 the
//! mode:
//!
//! - raw (bit 7 clear): `rest` is frames, each `[len: u16 LE][bytes]`, decapsulated as
//!   received (outer parsing, SPI lookup, the checks before the ICV). Two SAs exist, SPIs
//!   `SPI_A` and `SPI_B`.
//! - sealed (bit 7 set): `rest` is packets, each `[ctl][seq: 5][len: u16 LE][plaintext]`: the
//!   harness builds the outer header and seals `plaintext` (the ESP payload: inner packet,
//!   padding, pad length, next header — arbitrary bytes) with the SA's keys under the
//!   sequence number `seq` (low 32 bits LE, then the high byte), so the packet passes the
//!   ICV and reaches the trailer, padding, restore and selector checks, and a batch reaches
//!   the replay window and the paired open. `ctl`: bit 0 the second SA, bit 1 flip one bit
//!   after sealing (position from `seq`), bits 2–3 the outer ECN, bit 4 an outer DSCP,
//!   bit 5 (IPv6 outer) a hop-by-hop header before ESP. CBC plaintexts are cut to whole
//!   blocks.
//!
//! Properties: no panic; every frame gets a verdict; the batch gives the verdicts, counters
//! and window that one packet at a time gives (without a lifetime: expiry is noticed per
//! batch by design); the SAs' counters add up to the frames that reached them (sealed: all
//! of them), drops by reason. Sealed packets: a forwarded one is exactly what the reference
//! decapsulation below gives from its plaintext (tunnel: the inner packet, ECN per RFC 6040;
//! transport: the clear header rewritten plus the payload); one whose padding is not
//! 1, 2, 3, ..., whose next header is 59, whose inner packet is not valid or whose flow is
//! outside the selectors, or that was tampered with, is never forwarded; with anti-replay no
//! sequence number is forwarded twice; without anti-replay, ESN and lifetime, a tunnel
//! IPv4-in-ESP or IPv4 transport packet is forwarded if and only if the reference accepts it.
use std::collections::HashSet;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::OnceLock;

use dataplane::crypto::{Encryption, EspTransform, Integrity, SaCrypto, SaKeys};
use dataplane::esp::{
    self, DropReason, Frame, InboundSa, InboundSaLookup, Lifetime, SaConfig, SelectorSet, SpiMap,
    TrafficSelector, UdpEncap, Verdict,
};

/// The two SAs' SPIs (raw inputs must spell them to get past the lookup).
pub const SPI_A: u32 = 0x0000_1001;
pub const SPI_B: u32 = 0x0000_1002;
const HEADROOM: usize = 64;
/// At most this many frames per input: a few runs of pairs.
const MAX_FRAMES: usize = 24;
/// An encap-only reason: a verdict still holding it was never written.
const UNSET: Verdict = Verdict::Drop(DropReason::SeqLeaseWait);

const V4_SRC: [u8; 4] = [10, 1, 0, 1];
const V4_DST: [u8; 4] = [10, 2, 0, 2];
const V6_SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// The SA configuration the first two bytes pick.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub transform: usize,
    pub esn: bool,
    pub anti_replay: bool,
    pub nat_t: bool,
    pub transport: bool,
    pub v6: bool,
    pub selectors: u8,
    pub copy_dscp: bool,
    pub start: u8,
    pub small_window: bool,
    pub lifetime: bool,
    pub sealed: bool,
}

impl Setup {
    pub fn from_bytes(a: u8, b: u8) -> Setup {
        Setup {
            transform: usize::from(a & 7) % TRANSFORMS.len(),
            esn: a & 8 != 0,
            anti_replay: a & 16 != 0,
            nat_t: a & 32 != 0,
            transport: a & 64 != 0,
            v6: a & 128 != 0,
            selectors: b & 3,
            copy_dscp: b & 4 != 0,
            start: (b >> 3) & 3,
            small_window: b & 32 != 0,
            lifetime: b & 64 != 0,
            sealed: b & 128 != 0,
        }
    }

    pub fn to_bytes(self) -> [u8; 2] {
        let bit = |c: bool, n: u8| if c { 1u8 << n } else { 0 };
        [
            self.transform as u8
                | bit(self.esn, 3)
                | bit(self.anti_replay, 4)
                | bit(self.nat_t, 5)
                | bit(self.transport, 6)
                | bit(self.v6, 7),
            self.selectors
                | bit(self.copy_dscp, 2)
                | (self.start << 3)
                | bit(self.small_window, 5)
                | bit(self.lifetime, 6)
                | bit(self.sealed, 7),
        ]
    }

    fn transform(&self) -> EspTransform {
        let (e, i) = TRANSFORMS[self.transform];
        EspTransform::new(e, i).expect("a valid combination")
    }

    fn config(&self, spi: u32) -> SaConfig {
        let t = self.transform();
        // Different keys per SA: a packet sealed for one never opens with the other.
        let k = spi as u8;
        let keys = SaKeys::new(
            &vec![k; t.encryption.key_material_len()],
            &vec![k ^ 0x5a; t.integrity.key_len()],
        );
        let (local, remote): (IpAddr, IpAddr) = if self.v6 {
            (V6_DST.into(), V6_SRC.into())
        } else {
            (V4_DST.into(), V4_SRC.into())
        };
        let mut c = if self.transport {
            SaConfig::transport(spi, t, keys)
        } else {
            SaConfig::tunnel(spi, t, keys, local, remote)
        };
        c.esn = self.esn;
        c.replay_window = self
            .anti_replay
            .then_some(if self.small_window { 64 } else { 1024 });
        c.udp_encap = self.nat_t.then_some(UdpEncap::DEFAULT);
        c.copy_dscp_on_decap = self.copy_dscp;
        c.selectors = selectors(self.selectors).clone();
        if self.lifetime {
            c.lifetime = Lifetime {
                hard_packets: 3,
                ..Lifetime::default()
            };
        }
        c
    }

    fn window_top(&self) -> u64 {
        match self.start {
            0 => 0,
            1 => (1 << 32) - 10,
            2 => (1 << 32) + 10,
            _ => 100,
        }
    }

    fn sas(&self) -> SpiMap {
        let mut m = SpiMap::default();
        for spi in [SPI_A, SPI_B] {
            let sa = InboundSa::new(self.config(spi)).expect("a valid SA");
            if self.window_top() != 0 {
                sa.restore_replay_top(self.window_top());
            }
            m.insert(sa);
        }
        m
    }
}

const TRANSFORMS: [(Encryption, Integrity); 6] = [
    (Encryption::AesGcm128, Integrity::None),
    (Encryption::AesGcm256, Integrity::None),
    (Encryption::ChaCha20Poly1305, Integrity::None),
    (Encryption::AesCbc128, Integrity::HmacSha256_128),
    (Encryption::AesCbc256, Integrity::HmacSha384_192),
    (Encryption::AesCbc256, Integrity::HmacSha512_256),
];

const V4_PORTS: (u16, u16) = (1000, 2000);

/// The selector sets `cfg1` picks, parsed once (parsing them per input was a tenth of the
/// target's time).
fn selectors(kind: u8) -> &'static SelectorSet {
    static SETS: OnceLock<[SelectorSet; 3]> = OnceLock::new();
    let sets = SETS.get_or_init(|| {
        let p = |s: &str| TrafficSelector::prefix(s).expect("a valid prefix");
        let narrow = |ports: Option<(u16, u16)>| {
            let restrict = |t: TrafficSelector| match ports {
                Some(range) => t.with_protocol(17, range),
                None => t,
            };
            SelectorSet {
                local: vec![restrict(p("10.2.0.0/16")), p("2001:db8:2::/48")],
                remote: vec![restrict(p("10.1.0.0/16")), p("2001:db8:1::/48")],
            }
        };
        [SelectorSet::any(), narrow(None), narrow(Some(V4_PORTS))]
    });
    match kind {
        1 | 2 => &sets[usize::from(kind)],
        _ => &sets[0],
    }
}

/// RFC 1071 over `data`.
fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// One packet of a sealed input.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub second_sa: bool,
    pub tamper: bool,
    pub outer_tos: u8,
    pub hop_by_hop: bool,
    pub seq: u64,
    pub plaintext: Vec<u8>,
}

impl Sealed {
    fn parse(d: &[u8]) -> Option<(Sealed, &[u8])> {
        let (head, rest) = (d.get(..8)?, &d[8..]);
        let ctl = head[0];
        let seq =
            u64::from(u32::from_le_bytes(head[1..5].try_into().ok()?)) | u64::from(head[5]) << 32;
        let len = usize::from(u16::from_le_bytes([head[6], head[7]])).min(rest.len());
        let (pt, rest) = rest.split_at(len);
        let tos = ((ctl >> 2) & 3) | if ctl & 16 != 0 { 0xb8 } else { 0 };
        Some((
            Sealed {
                second_sa: ctl & 1 != 0,
                tamper: ctl & 2 != 0,
                outer_tos: tos,
                hop_by_hop: ctl & 32 != 0,
                seq,
                plaintext: pt.to_vec(),
            },
            rest,
        ))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let dscp = self.outer_tos & !3 != 0;
        let ctl = u8::from(self.second_sa)
            | u8::from(self.tamper) << 1
            | (self.outer_tos & 3) << 2
            | u8::from(dscp) << 4
            | u8::from(self.hop_by_hop) << 5;
        let mut v = vec![ctl];
        v.extend_from_slice(&(self.seq as u32).to_le_bytes());
        v.push((self.seq >> 32) as u8);
        v.extend_from_slice(&(self.plaintext.len() as u16).to_le_bytes());
        v.extend_from_slice(&self.plaintext);
        v
    }
}

/// Where the parts of a built packet are.
struct Built {
    wire: Vec<u8>,
    /// The outer IP header and extension headers before UDP/ESP.
    ip_len: usize,
    /// The byte naming ESP/UDP, rewritten to the next header in transport mode.
    nh_at: usize,
}

/// The outer header(s) of a packet whose ESP part is `esp_len` bytes.
fn build(s: &Setup, tos: u8, hop_by_hop: bool, esp: &[u8]) -> Built {
    let udp = if s.nat_t { 8 } else { 0 };
    let proto = if s.nat_t { 17 } else { 50 };
    let mut w = Vec::with_capacity(64 + esp.len());
    let (ip_len, nh_at) = if s.v6 {
        let ext = if hop_by_hop { 8 } else { 0 };
        let plen = (ext + udp + esp.len()) as u16;
        w.extend_from_slice(&[0x60 | tos >> 4, tos << 4, 0, 0]);
        w.extend_from_slice(&plen.to_be_bytes());
        w.extend_from_slice(&[if hop_by_hop { 0 } else { proto }, 64]);
        w.extend_from_slice(&V6_SRC);
        w.extend_from_slice(&V6_DST);
        if hop_by_hop {
            // Next header, length 0 (8 bytes), a PadN option of 4 bytes.
            w.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
            (48, 40)
        } else {
            (40, 6)
        }
    } else {
        let total = (20 + udp + esp.len()) as u16;
        w.extend_from_slice(&[0x45, tos]);
        w.extend_from_slice(&total.to_be_bytes());
        w.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
        w.extend_from_slice(&V4_SRC);
        w.extend_from_slice(&V4_DST);
        let c = csum(&w);
        w[10..12].copy_from_slice(&c.to_be_bytes());
        (20, 9)
    };
    if s.nat_t {
        w.extend_from_slice(&4500u16.to_be_bytes());
        w.extend_from_slice(&4500u16.to_be_bytes());
        w.extend_from_slice(&((8 + esp.len()) as u16).to_be_bytes());
        w.extend_from_slice(&[0, 0]);
    }
    w.extend_from_slice(esp);
    Built {
        wire: w,
        ip_len,
        nh_at,
    }
}

/// The plaintext the harness actually seals (CBC: whole blocks).
fn sealed_plaintext(s: &Setup, pt: &[u8]) -> Vec<u8> {
    let align = s.transform().encryption.align();
    let keep = if s.transform().encryption.is_aead() {
        pt.len()
    } else {
        pt.len() / align * align
    };
    pt[..keep].to_vec()
}

/// Seal `pt` as ESP with `crypto` under `seq` and wrap it in the outer headers.
fn seal(s: &Setup, crypto: &SaCrypto, spi: u32, p: &Sealed, pt: &[u8]) -> Built {
    let (iv, icv) = (crypto.iv_len(), crypto.icv_len());
    let mut e = Vec::with_capacity(8 + iv + pt.len() + icv);
    e.extend_from_slice(&spi.to_be_bytes());
    e.extend_from_slice(&(p.seq as u32).to_be_bytes());
    e.resize(8 + iv, 0);
    e.extend_from_slice(pt);
    e.resize(e.len() + icv, 0);
    let esn_high = s.esn.then_some((p.seq >> 32) as u32);
    // CBC refuses an empty payload (nothing to encrypt): such a packet goes out unsealed,
    // and the reference drops it anyway (no trailer).
    if crypto.seal(&mut e, p.seq, esn_high).is_err() {
        assert!(pt.is_empty(), "sealing {} bytes failed", pt.len());
    }
    if p.tamper {
        // Anything after the SPI: sequence number, IV, ciphertext or ICV.
        let at = 4 + (p.seq as usize >> 3) % (e.len() - 4);
        e[at] ^= 1 << (p.seq & 7);
    }
    build(s, p.outer_tos, p.hop_by_hop && s.v6, &e)
}

/// RFC 6040 §4.2 Figure 4, written out again: the inner ECN after decapsulation, `None` =
/// drop.
fn ref_ecn(outer: u8, inner: u8) -> Option<u8> {
    const CE: u8 = 3;
    match (inner & 3, outer & 3) {
        (0, CE) => None,
        (0, _) => Some(0),
        (_, CE) => Some(CE),
        (2, 1) => Some(1), // inner ECT(0), outer ECT(1)
        (i, _) => Some(i),
    }
}

/// The ESP trailer of a plaintext (RFC 4303 §2.4–2.6): the payload length and next header
/// if the padding is 1, 2, 3, ... and the packet is not a dummy.
fn ref_trailer(pt: &[u8]) -> Option<(usize, u8)> {
    let n = pt.len();
    if n < 2 {
        return None;
    }
    let (pad, nh) = (usize::from(pt[n - 2]), pt[n - 1]);
    let payload = n.checked_sub(2 + pad)?;
    let ok = pt[payload..n - 2]
        .iter()
        .enumerate()
        .all(|(i, &b)| usize::from(b) == i + 1);
    (ok && nh != 59).then_some((payload, nh))
}

fn in_range(a: &[u8], lo: &[u8], hi: &[u8]) -> bool {
    lo <= a && a <= hi
}

/// Does a flow pass the selectors of `kind` (src in remote, dst in local)? IPv6 selectors
/// are address-only.
fn ref_admits(kind: u8, v6: bool, src: &[u8], dst: &[u8], v4_ports: Option<(u16, u16)>) -> bool {
    if kind == 0 || kind == 3 {
        return true;
    }
    let addrs = if v6 {
        let (r, l) = (&V6_SRC[..6], &V6_DST[..6]);
        src[..6] == *r && dst[..6] == *l
    } else {
        in_range(src, &[10, 1, 0, 0], &[10, 1, 255, 255])
            && in_range(dst, &[10, 2, 0, 0], &[10, 2, 255, 255])
    };
    if !addrs {
        return false;
    }
    if kind == 2 && !v6 {
        let r = V4_PORTS.0..=V4_PORTS.1;
        return matches!(v4_ports, Some((sp, dp)) if r.contains(&sp) && r.contains(&dp));
    }
    true
}

/// The ports of an IPv4 packet for a UDP-only selector: `Some` for a first fragment of UDP
/// with at least 4 bytes of it.
fn v4_udp_ports(pkt: &[u8]) -> Option<(u16, u16)> {
    let hl = usize::from(pkt[0] & 15) * 4;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    let frag_off = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff;
    let l4 = &pkt[hl..total];
    (pkt[9] == 17 && frag_off == 0 && l4.len() >= 4).then(|| {
        (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        )
    })
}

/// What decapsulating a sealed packet must give, from its plaintext, if it gets past the
/// ICV and the window: the forwarded packet, or `None` (dropped). Bytes an implementation
/// may rewrite (the checksums it recomputes) are compared separately.
fn ref_decap(s: &Setup, b: &Built, pt: &[u8], outer_tos: u8) -> Option<Vec<u8>> {
    let (payload_len, nh) = ref_trailer(pt)?;
    let inner = &pt[..payload_len];
    if s.transport {
        let mut out = b.wire[..b.ip_len].to_vec();
        out[b.nh_at] = nh;
        out.extend_from_slice(inner);
        let total = out.len();
        if s.v6 {
            out[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            ref_admits(s.selectors, true, &out[8..24], &out[24..40], None).then_some(out)
        } else {
            out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            out[10..12].copy_from_slice(&[0, 0]);
            let c = csum(&out[..20]);
            out[10..12].copy_from_slice(&c.to_be_bytes());
            let ports = v4_udp_ports(&out);
            ref_admits(s.selectors, false, &out[12..16], &out[16..20], ports).then_some(out)
        }
    } else {
        match nh {
            4 => {
                if inner.len() < 20 || inner[0] >> 4 != 4 {
                    return None;
                }
                let hl = usize::from(inner[0] & 15) * 4;
                let total = usize::from(u16::from_be_bytes([inner[2], inner[3]]));
                if hl < 20 || total < hl || total > inner.len() || csum(&inner[..hl]) != 0 {
                    return None;
                }
                let mut out = inner[..total].to_vec();
                let ecn = ref_ecn(outer_tos, out[1])?;
                let dscp = if s.copy_dscp { outer_tos } else { out[1] } & !3;
                out[1] = dscp | ecn;
                out[10..12].copy_from_slice(&[0, 0]);
                let c = csum(&out[..hl]);
                out[10..12].copy_from_slice(&c.to_be_bytes());
                let ports = v4_udp_ports(&out);
                ref_admits(s.selectors, false, &out[12..16], &out[16..20], ports).then_some(out)
            }
            41 => {
                if inner.len() < 40 || inner[0] >> 4 != 6 {
                    return None;
                }
                let total = 40 + usize::from(u16::from_be_bytes([inner[4], inner[5]]));
                if total > inner.len() {
                    return None;
                }
                let mut out = inner[..total].to_vec();
                let tc = (out[0] << 4) | (out[1] >> 4);
                let ecn = ref_ecn(outer_tos, tc)?;
                let dscp = if s.copy_dscp { outer_tos } else { tc } & !3;
                let tc = dscp | ecn;
                out[0] = 0x60 | tc >> 4;
                out[1] = (tc << 4) | (out[1] & 15);
                ref_admits(s.selectors, true, &out[8..24], &out[24..40], None).then_some(out)
            }
            _ => None,
        }
    }
}

/// Checks the forwarded packet `got` against the reference `want`. An IPv4 header checksum
/// is compared as "verifies" (an incremental update may give the other zero); the TCP/UDP
/// checksum that NAT-T transport mode recomputes (RFC 3948 §3.1.2) is skipped.
fn same_packet(s: &Setup, b: &Built, got: &[u8], want: &[u8]) -> bool {
    if got.len() != want.len() {
        return false;
    }
    let mut skip: Vec<usize> = Vec::new();
    let v4 = got.first().is_some_and(|b| b >> 4 == 4);
    if v4 {
        let hl = usize::from(got[0] & 15) * 4;
        if hl > got.len() || csum(&got[..hl]) != 0 {
            return false;
        }
        skip.extend([10, 11]);
    }
    if s.transport && s.nat_t {
        let l4 = b.ip_len;
        let nh = got[b.nh_at];
        let seg = got.len() - l4;
        match nh {
            6 if seg >= 20 => skip.extend([l4 + 16, l4 + 17]),
            17 if seg >= 8 => skip.extend([l4 + 6, l4 + 7]),
            _ => {}
        }
    }
    got.iter()
        .zip(want)
        .enumerate()
        .all(|(i, (g, w))| g == w || skip.contains(&i))
}

fn frame(pkt: &[u8]) -> Frame<Vec<u8>> {
    Frame::with_packet(vec![0u8; HEADROOM + pkt.len()], HEADROOM, pkt).expect("room")
}

/// Decapsulate `wires` in one batch on one table of SAs and one at a time on a twin.
/// Returns the batch's verdicts, frames and SAs after checking the two agree.
fn run(s: &Setup, wires: &[Vec<u8>]) -> (Vec<Verdict>, Vec<Frame<Vec<u8>>>, SpiMap) {
    let batch_sas = s.sas();
    let mut frames: Vec<_> = wires.iter().map(|w| frame(w)).collect();
    let mut verdicts = vec![UNSET; frames.len()];
    esp::decap_batch(&batch_sas, &mut frames, &mut verdicts);
    assert!(
        !verdicts.contains(&UNSET),
        "a frame got no verdict: {verdicts:?}"
    );
    for v in &verdicts {
        if let Verdict::Drop(r) = v {
            assert!(
                !matches!(
                    r,
                    DropReason::SeqExhausted | DropReason::NoRoom | DropReason::TooBig
                ),
                "an encap-only reason on decap: {r:?}"
            );
        }
    }

    if !s.lifetime {
        let one_sas = s.sas();
        let mut singles = Vec::new();
        for (i, w) in wires.iter().enumerate() {
            let mut f = frame(w);
            let v = esp::decap(&one_sas, &mut f);
            if v.is_forward() {
                assert_eq!(
                    f.data(),
                    frames[i].data(),
                    "frame {i}: batch output differs"
                );
            }
            singles.push(v);
        }
        assert_eq!(verdicts, singles, "batch and one-at-a-time verdicts differ");
        for spi in [SPI_A, SPI_B] {
            let (a, b) = (batch_sas.lookup(spi).unwrap(), one_sas.lookup(spi).unwrap());
            assert_eq!(a.counters(), b.counters(), "SPI {spi:#x}: counters differ");
            assert_eq!(a.replay_window().top(), b.replay_window().top());
        }
    }
    (verdicts, frames, batch_sas)
}

/// Counted by the SAs: every forward, and each drop at most as often as a verdict says it
/// (drops before the lookup are not counted on an SA); reasons only an SA can give, exactly.
fn check_counters(sas: &SpiMap, verdicts: &[Verdict], all_reach_sa: bool) {
    let (mut packets, mut drops) = (0u64, dataplane::esp::DropCounters::default());
    for spi in [SPI_A, SPI_B] {
        let c = sas.lookup(spi).unwrap().counters();
        packets += c.packets;
        drops.merge(&c.drops);
    }
    let forwards = verdicts.iter().filter(|v| v.is_forward()).count() as u64;
    assert_eq!(packets, forwards, "packets counted vs forwarded");
    for &r in DropReason::ALL {
        let n = verdicts.iter().filter(|&&v| v == Verdict::Drop(r)).count() as u64;
        let c = drops.get(r);
        let before_lookup_only = matches!(r, DropReason::UnknownSpi | DropReason::Fragment);
        let maybe_before = matches!(
            r,
            DropReason::Malformed | DropReason::BadIpChecksum | DropReason::NotEsp
        );
        if before_lookup_only {
            assert_eq!(c, 0, "{r:?} counted on an SA");
        } else if maybe_before && !all_reach_sa {
            assert!(c <= n, "{r:?}: {c} counted, {n} verdicts");
        } else {
            assert_eq!(c, n, "{r:?}: {c} counted, {n} verdicts");
        }
    }
}

fn raw(s: &Setup, mut rest: &[u8]) {
    let mut wires = Vec::new();
    while rest.len() >= 2 && wires.len() < MAX_FRAMES {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        wires.push(rest[2..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    let (verdicts, _, sas) = run(s, &wires);
    check_counters(&sas, &verdicts, false);
}

/// Decode a sealed input's packets.
pub fn sealed_packets(mut rest: &[u8]) -> Vec<Sealed> {
    let mut v = Vec::new();
    while v.len() < MAX_FRAMES {
        match Sealed::parse(rest) {
            Some((p, r)) => {
                v.push(p);
                rest = r;
            }
            None => break,
        }
    }
    v
}

thread_local! {
    /// The sealing side's ciphers per (transform, SA): their keys depend on nothing else,
    /// and setting them up per input was a tenth of the target's time.
    static SEALERS: std::cell::RefCell<[[Option<Rc<SaCrypto>>; 2]; TRANSFORMS.len()]> =
        Default::default();
}

fn sealer(s: &Setup, i: usize) -> Rc<SaCrypto> {
    SEALERS.with(|cache| {
        let slot = &mut cache.borrow_mut()[s.transform][i];
        Rc::clone(slot.get_or_insert_with(|| {
            let c = s.config([SPI_A, SPI_B][i]);
            Rc::new(SaCrypto::new(c.transform, &c.keys).expect("valid keys"))
        }))
    })
}

/// The wire packets of a sealed input, with their built layout and sealed plaintext.
fn seal_all(s: &Setup, pkts: &[Sealed]) -> Vec<(Built, Vec<u8>)> {
    let cryptos = [sealer(s, 0), sealer(s, 1)];
    pkts.iter()
        .map(|p| {
            let i = usize::from(p.second_sa);
            let pt = sealed_plaintext(s, &p.plaintext);
            (seal(s, &cryptos[i], [SPI_A, SPI_B][i], p, &pt), pt)
        })
        .collect()
}

fn sealed(s: &Setup, rest: &[u8]) {
    let pkts = sealed_packets(rest);
    let built = seal_all(s, &pkts);
    let wires: Vec<Vec<u8>> = built.iter().map(|(b, _)| b.wire.clone()).collect();
    let (verdicts, frames, sas) = run(s, &wires);
    check_counters(&sas, &verdicts, true);

    let exact = !s.anti_replay && !s.esn && !s.lifetime;
    let mut seen = HashSet::new();
    for (i, ((b, pt), p)) in built.iter().zip(&pkts).enumerate() {
        let want = ref_decap(s, b, pt, p.outer_tos);
        let fwd = verdicts[i].is_forward();
        if fwd {
            assert!(!p.tamper, "packet {i}: tampered with, yet forwarded");
            let Some(want) = &want else {
                panic!("packet {i}: forwarded, but the reference drops it: {p:?}")
            };
            assert!(
                same_packet(s, b, frames[i].data(), want),
                "packet {i}: forwarded {:02x?}, reference {want:02x?}",
                frames[i].data()
            );
            if s.anti_replay {
                assert!(
                    seen.insert((p.second_sa, p.seq)),
                    "packet {i}: sequence number {} forwarded twice",
                    p.seq
                );
            }
        }
        // Here only the ICV, the trailer, the inner packet and the selectors decide.
        let decided_by_reference =
            exact && !p.tamper && (!s.transport && pt.last() == Some(&4) || s.transport && !s.v6);
        if decided_by_reference {
            assert_eq!(
                fwd,
                want.is_some(),
                "packet {i}: verdict {:?}, reference {}",
                verdicts[i],
                if want.is_some() { "forwards" } else { "drops" }
            );
        }
    }
}

/// The harness.
pub fn decap(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let s = Setup::from_bytes(data[0], data[1]);
    if s.sealed {
        sealed(&s, &data[2..]);
    } else {
        raw(&s, &data[2..]);
    }
}

/// An IPv4 UDP packet 10.1.0.1:1500 → 10.2.0.2:1500 of `len` bytes (at least 28).
pub fn inner_v4(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[..20].copy_from_slice(&[
        0x45, 0, 0, 0, 0, 7, 0x40, 0, 64, 17, 0, 0, 10, 1, 0, 1, 10, 2, 0, 2,
    ]);
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    let c = csum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..24].copy_from_slice(&[0x05, 0xdc, 0x05, 0xdc]);
    p[24..26].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

/// An IPv6 UDP packet 2001:db8:1::1 → 2001:db8:2::2 of `len` bytes (at least 48).
pub fn inner_v6(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&V6_SRC);
    p[24..40].copy_from_slice(&V6_DST);
    p[40..44].copy_from_slice(&[0x05, 0xdc, 0x05, 0xdc]);
    p[44..46].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    p
}

/// An ESP plaintext: `payload`, padding 1, 2, 3, ... to `align`, pad length, next header.
pub fn esp_plaintext(payload: &[u8], next_header: u8, align: usize) -> Vec<u8> {
    let pad = (align - (payload.len() + 2) % align) % align;
    let mut v = payload.to_vec();
    v.extend((1..=pad).map(|i| i as u8));
    v.push(pad as u8);
    v.push(next_header);
    v
}

/// Seed inputs: for every SA configuration that matters (each transform, ESN, anti-replay,
/// NAT-T, transport and tunnel, IPv4 and IPv6 outer), a sealed batch of valid packets and
/// the same packets as raw frames. Written by `tests/gen_seeds.rs` (ignored test).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for t in 0..TRANSFORMS.len() {
        for (esn, replay, nat_t, transport, v6) in [
            (false, true, false, false, false),
            (true, true, true, false, true),
            (false, false, true, true, false),
            (true, true, false, true, true),
        ] {
            let s = Setup {
                transform: t,
                esn,
                anti_replay: replay,
                nat_t,
                transport,
                v6,
                selectors: if t % 2 == 0 { 2 } else { 1 },
                copy_dscp: false,
                start: if esn { 1 } else { 0 },
                small_window: false,
                lifetime: false,
                sealed: true,
            };
            let align = s.transform().encryption.align();
            // Tunnel: the inner packet; transport: a UDP segment after the clear header.
            let payloads: Vec<(Vec<u8>, u8)> = if transport {
                let mut u = vec![0x05, 0xdc, 0x05, 0xdc, 0, 40, 0, 0];
                u.resize(40, 0xab);
                vec![(u.clone(), 17), (u[..16].to_vec(), 17)]
            } else {
                vec![(inner_v4(64), 4), (inner_v6(100), 41)]
            };
            let top = s.window_top();
            let pkts: Vec<Sealed> = [(0usize, 1u64), (1, 2), (0, 2), (0, 3)]
                .iter()
                .map(|&(k, n)| Sealed {
                    second_sa: k == 1 && n == 2,
                    tamper: false,
                    outer_tos: if n == 3 { 2 } else { 0 },
                    hop_by_hop: v6 && n == 3,
                    seq: top + n,
                    plaintext: esp_plaintext(&payloads[k].0, payloads[k].1, align),
                })
                .collect();
            let name = format!(
                "t{t}{}{}{}{}{}",
                if esn { "-esn" } else { "" },
                if replay { "-replay" } else { "" },
                if nat_t { "-natt" } else { "" },
                if transport { "-transport" } else { "-tunnel" },
                if v6 { "-v6" } else { "-v4" },
            );
            let mut sealed_in = s.to_bytes().to_vec();
            for p in &pkts {
                sealed_in.extend(p.to_bytes());
            }
            let mut raw_in = Setup { sealed: false, ..s }.to_bytes().to_vec();
            for (b, _) in seal_all(&s, &pkts) {
                raw_in.extend((b.wire.len() as u16).to_le_bytes());
                raw_in.extend(&b.wire);
            }
            out.push((format!("sealed-{name}"), sealed_in));
            out.push((format!("raw-{name}"), raw_in));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed's packets are forwarded: the builder, the sealing and the reference agree
    /// with the dataplane on valid traffic.
    #[test]
    fn seeds_forward() {
        for (name, input) in seeds() {
            let s = Setup::from_bytes(input[0], input[1]);
            if !s.sealed {
                continue;
            }
            let pkts = sealed_packets(&input[2..]);
            let built = seal_all(&s, &pkts);
            let wires: Vec<_> = built.iter().map(|(b, _)| b.wire.clone()).collect();
            let (verdicts, _, _) = run(&s, &wires);
            assert!(
                verdicts.iter().all(|v| v.is_forward()),
                "{name}: {verdicts:?}"
            );
            decap(&input);
        }
    }

    #[test]
    fn reference_ecn_is_rfc6040() {
        use dataplane::esp::ecn::decap_ecn;
        use dataplane::wire::Ecn;
        for o in 0..4u8 {
            for i in 0..4u8 {
                let want = decap_ecn(Ecn::from_bits(o), Ecn::from_bits(i)).map(|e| e as u8);
                assert_eq!(ref_ecn(o, i), want, "outer {o} inner {i}");
            }
        }
    }
}
