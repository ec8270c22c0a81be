//! The ESP engine on generated traffic, for `esp-demo`: every mode (tunnel 4in4, 6in6, 4in6,
//! 6in4; transport IPv4, IPv6) and cipher encapsulates a batch stream of packets of mixed
//! sizes, decapsulates them with the peer's SA, checks every packet came back byte for byte,
//! then checks the drop counters catch a replayed, a tampered and an unknown-SPI packet.
//! Sans-IO: the binary only parses arguments and prints the rows.

use std::net::IpAddr;
use std::time::Instant;

use crate::crypto::{EspTransform, SaKeys};
use crate::esp::{
    self as esp, DropCounters, DropReason, Frame, InboundSa, OutboundSa, SaConfig, UdpEncap,
    Verdict,
};
use crate::wire::{checksum, Ipv4Repr, Ipv6Repr};

pub const BATCH: usize = 64;
const HEADROOM: usize = 128;

fn inner_packet(v6: bool, len: usize, n: u32) -> Vec<u8> {
    let mut p = vec![0u8; len];
    if v6 {
        Ipv6Repr {
            src: "2001:db8:a::10".parse().unwrap(),
            dst: "2001:db8:b::20".parse().unwrap(),
            next_header: 17,
            payload_len: len - 40,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: n & 0xfffff,
        }
        .emit(&mut p)
        .unwrap();
        p[40..44].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
        p[44..46].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    } else {
        Ipv4Repr {
            src: [10, 1, 0, 10].into(),
            dst: [10, 2, 0, 20].into(),
            protocol: 17,
            payload_len: len - 20,
            ttl: 64,
            tos: 0,
            ident: n as u16,
            dont_frag: true,
        }
        .emit(&mut p)
        .unwrap();
        p[20..24].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
        p[24..26].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    }
    let hdr = if v6 { 48 } else { 28 };
    for (i, b) in p[hdr..].iter_mut().enumerate() {
        *b = (i as u32 ^ n) as u8;
    }
    // A correct UDP checksum, as a real host would send.
    let ip = hdr - 8;
    let seg_len = len - ip;
    let pseudo = if v6 {
        checksum::pseudo_v6(
            "2001:db8:a::10".parse().unwrap(),
            "2001:db8:b::20".parse().unwrap(),
            17,
            seg_len as u32,
        )
    } else {
        checksum::pseudo_v4(
            [10, 1, 0, 10].into(),
            [10, 2, 0, 20].into(),
            17,
            seg_len as u16,
        )
    };
    let c = checksum::finish(checksum::combine(pseudo, checksum::sum(&p[ip..])));
    let c = if c == 0 { 0xffff } else { c };
    p[ip + 6..ip + 8].copy_from_slice(&c.to_be_bytes());
    p
}

/// Demo keys: fixed patterns, never to be used outside this demo.
fn keys(t: EspTransform) -> SaKeys {
    SaKeys::new(
        &(0..t.encryption.key_material_len())
            .map(|i| i as u8)
            .collect::<Vec<_>>(),
        &(0..t.integrity.key_len())
            .map(|i| 0x80 | i as u8)
            .collect::<Vec<_>>(),
    )
}

pub struct Shape {
    pub name: &'static str,
    pub tunnel: Option<(&'static str, &'static str)>,
    pub inner_v6: bool,
    pub nat_t: bool,
    pub esn: bool,
}

pub const SHAPES: &[Shape] = &[
    Shape {
        name: "tunnel 4in4",
        tunnel: Some(("192.0.2.1", "192.0.2.2")),
        inner_v6: false,
        nat_t: false,
        esn: false,
    },
    Shape {
        name: "tunnel 6in6",
        tunnel: Some(("2001:db8:ff::1", "2001:db8:ff::2")),
        inner_v6: true,
        nat_t: false,
        esn: true,
    },
    Shape {
        name: "tunnel 4in6",
        tunnel: Some(("2001:db8:ff::1", "2001:db8:ff::2")),
        inner_v6: false,
        nat_t: true,
        esn: false,
    },
    Shape {
        name: "tunnel 6in4",
        tunnel: Some(("192.0.2.1", "192.0.2.2")),
        inner_v6: true,
        nat_t: true,
        esn: true,
    },
    Shape {
        name: "transport v4",
        tunnel: None,
        inner_v6: false,
        nat_t: false,
        esn: true,
    },
    Shape {
        name: "transport v6",
        tunnel: None,
        inner_v6: true,
        nat_t: true,
        esn: false,
    },
];

pub const CIPHERS: &[&str] = &[
    "aes128gcm16",
    "aes256gcm16",
    "chacha20poly1305",
    "aes256-sha512",
];

fn config(shape: &Shape, t: EspTransform, flip: bool) -> SaConfig {
    let mut cfg = match shape.tunnel {
        Some((a, b)) => {
            let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
            let (l, r) = if flip { (b, a) } else { (a, b) };
            SaConfig::tunnel(0xc0de_0001, t, keys(t), l, r)
        }
        None => SaConfig::transport(0xc0de_0001, t, keys(t)),
    };
    cfg.esn = shape.esn;
    cfg.udp_encap = shape.nat_t.then_some(UdpEncap::DEFAULT);
    cfg
}

pub struct Row {
    pub packets: usize,
    pub inner_bytes: usize,
    pub wire_bytes: usize,
    pub ns_per_packet: f64,
    pub drops: DropCounters,
}

pub fn run(shape: &Shape, cipher: &str, n: usize) -> Result<Row, String> {
    let t: EspTransform = cipher.parse().map_err(|e| format!("{e}"))?;
    let out = OutboundSa::new(config(shape, t, false)).map_err(|e| e.to_string())?;
    let inb = InboundSa::new(config(shape, t, true)).map_err(|e| e.to_string())?;
    if shape.esn {
        // Start just below 2^32 to show the extended sequence number crossing it.
        let start = (1u64 << 32) - (n as u64 / 2);
        out.set_last_seq(start);
        inb.restore_replay_top(start);
    }
    let sizes = [64usize, 128, 512, 1024, 1420];
    let mut row = Row {
        packets: 0,
        inner_bytes: 0,
        wire_bytes: 0,
        ns_per_packet: 0.0,
        drops: DropCounters::default(),
    };
    let mut bufs: Vec<Frame<Vec<u8>>> = Vec::with_capacity(BATCH);
    let mut originals: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    let mut verdicts = [Verdict::Forward; BATCH];
    let mut busy = std::time::Duration::ZERO;
    let mut sent = 0usize;
    while sent < n {
        let k = BATCH.min(n - sent);
        bufs.clear();
        originals.clear();
        for i in 0..k {
            let len = sizes[(sent + i) % sizes.len()].max(if shape.inner_v6 { 48 } else { 28 });
            let p = inner_packet(shape.inner_v6, len, (sent + i) as u32);
            bufs.push(Frame::with_packet(vec![0u8; 2048], HEADROOM, &p).ok_or("frame")?);
            originals.push(p);
        }
        let t0 = Instant::now();
        esp::encap_batch(&out, &mut bufs, &mut verdicts);
        let wire: usize = bufs.iter().map(|f| f.len()).sum();
        esp::decap_batch(&inb, &mut bufs, &mut verdicts);
        busy += t0.elapsed();
        for (i, (f, v)) in bufs.iter().zip(&verdicts).enumerate() {
            match v {
                Verdict::Forward if f.data() == &originals[i][..] => {}
                Verdict::Forward => {
                    return Err(format!("packet {} changed in the round trip", sent + i))
                }
                Verdict::Drop(r) => row.drops.add(*r),
            }
        }
        row.packets += k;
        row.inner_bytes += originals.iter().map(Vec::len).sum::<usize>();
        row.wire_bytes += wire;
        sent += k;
    }
    row.ns_per_packet = busy.as_nanos() as f64 / row.packets as f64;
    if row.drops.total() != 0 {
        return Err(format!(
            "{} packets dropped in a clean run",
            row.drops.total()
        ));
    }
    // Show the drop counters at work: a genuine packet, its replay, a tampered packet and
    // one with an unknown SPI.
    let mut wires = Vec::new();
    for k in 0..3 {
        let p = inner_packet(shape.inner_v6, 100, k);
        let mut f = Frame::with_packet(vec![0u8; 2048], HEADROOM, &p).ok_or("frame")?;
        if !esp::encap(&out, &mut f).is_forward() {
            return Err("encap failed".into());
        }
        wires.push(f.data().to_vec());
    }
    let outer_ip = if wires[0][0] >> 4 == 6 { 40 } else { 20 };
    let esp_at = outer_ip + if shape.nat_t { 8 } else { 0 };
    for attack in 0..4 {
        let mut w = wires[[0, 0, 1, 2][attack]].clone();
        match attack {
            2 => {
                let last = w.len() - 1;
                w[last] ^= 0x01; // tamper with the ICV
            }
            3 => w[esp_at] ^= 0xff, // unknown SPI
            _ => {}                 // 0: genuine, 1: replay of it
        }
        let mut g = Frame::with_packet(vec![0u8; 2048], HEADROOM, &w).ok_or("frame")?;
        match esp::decap(&inb, &mut g) {
            Verdict::Forward if attack == 0 => {}
            Verdict::Drop(r) if attack > 0 => row.drops.add(r),
            v => return Err(format!("attack {attack}: unexpected verdict {v:?}")),
        }
    }
    let want = [
        DropReason::ReplayDuplicate,
        DropReason::IcvFailed,
        DropReason::UnknownSpi,
    ];
    if want.iter().any(|&r| row.drops.get(r) != 1) {
        return Err(format!(
            "drop counters wrong: {:?}",
            row.drops.nonzero().collect::<Vec<_>>()
        ));
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mode and cipher round-trips and the deliberate bad packets land on their
    /// counters (what `esp-demo` prints as "verified").
    #[test]
    fn every_mode_and_cipher_round_trips() {
        for shape in SHAPES {
            for &cipher in CIPHERS {
                let r = run(shape, cipher, 300)
                    .unwrap_or_else(|e| panic!("{} {cipher}: {e}", shape.name));
                assert_eq!(r.packets, 300);
                assert!(r.wire_bytes > r.inner_bytes);
                assert!(r.drops.nonzero().count() > 0);
            }
        }
    }
}
