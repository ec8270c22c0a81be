//! Packet and SA builders shared by the integration tests.
#![allow(dead_code)]

use std::net::IpAddr;

use dataplane::crypto::{EspTransform, SaKeys};
use dataplane::esp::{Frame, InboundSa, Mode, OutboundSa, SaConfig, UdpEncap};
use dataplane::wire::{checksum, Ipv4Repr, Ipv6Repr, UdpRepr};

pub const HEADROOM: usize = 128;
pub const BUF: usize = 9216 + 512;

pub const TRANSFORMS: &[&str] = &[
    "aes128gcm16",
    "aes256gcm16",
    "chacha20poly1305",
    "aes128-sha256",
    "aes128-sha384",
    "aes128-sha512",
    "aes256-sha256",
    "aes256-sha384",
    "aes256-sha512",
];

/// The shape of an SA: mode and IP families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Tunnel { outer_v6: bool, inner_v6: bool },
    Transport { v6: bool },
}

pub const SHAPES: &[Shape] = &[
    Shape::Tunnel {
        outer_v6: false,
        inner_v6: false,
    },
    Shape::Tunnel {
        outer_v6: true,
        inner_v6: true,
    },
    Shape::Tunnel {
        outer_v6: true,
        inner_v6: false,
    },
    Shape::Tunnel {
        outer_v6: false,
        inner_v6: true,
    },
    Shape::Transport { v6: false },
    Shape::Transport { v6: true },
];

impl Shape {
    pub fn inner_v6(self) -> bool {
        match self {
            Shape::Tunnel { inner_v6, .. } => inner_v6,
            Shape::Transport { v6 } => v6,
        }
    }
}

/// Deterministic key bytes (tests only).
pub fn key_bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn keys_for(t: EspTransform, seed: u8) -> SaKeys {
    SaKeys::new(
        &key_bytes(t.encryption.key_material_len(), seed),
        &key_bytes(t.integrity.key_len(), seed.wrapping_add(7)),
    )
}

pub fn gw_addrs(v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (
            "2001:db8:ffff::1".parse().unwrap(),
            "2001:db8:ffff::2".parse().unwrap(),
        )
    } else {
        ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap())
    }
}

pub fn host_addrs(v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (
            "2001:db8:a::10".parse().unwrap(),
            "2001:db8:b::20".parse().unwrap(),
        )
    } else {
        ("10.1.0.10".parse().unwrap(), "10.2.0.20".parse().unwrap())
    }
}

/// The config of an SA of this shape and transform.
pub fn config(shape: Shape, transform: &str, nat_t: bool, esn: bool) -> SaConfig {
    let t: EspTransform = transform.parse().unwrap();
    let keys = keys_for(t, 0x42);
    let mut cfg = match shape {
        Shape::Tunnel { outer_v6, .. } => {
            let (l, r) = gw_addrs(outer_v6);
            SaConfig::tunnel(0x1000_0001, t, keys, l, r)
        }
        Shape::Transport { .. } => SaConfig::transport(0x1000_0001, t, keys),
    };
    cfg.esn = esn;
    if nat_t {
        cfg.udp_encap = Some(UdpEncap::DEFAULT);
    }
    cfg
}

pub fn sa_pair(cfg: &SaConfig) -> (OutboundSa, InboundSa) {
    let out = OutboundSa::new(cfg.clone()).unwrap();
    let mut in_cfg = cfg.clone();
    if let Mode::Tunnel { local, remote } = cfg.mode {
        in_cfg.mode = Mode::Tunnel {
            local: remote,
            remote: local,
        };
    }
    (out, InboundSa::new(in_cfg).unwrap())
}

/// A UDP datagram in IPv4 or IPv6 from host A to host B, with valid checksums.
pub fn udp_packet(v6: bool, payload: &[u8], tos: u8) -> Vec<u8> {
    let (src, dst) = host_addrs(v6);
    let udp_len = 8 + payload.len();
    let mut seg = vec![0u8; udp_len];
    UdpRepr {
        src_port: 40000,
        dst_port: 5201,
        payload_len: payload.len(),
    }
    .emit(&mut seg)
    .unwrap();
    seg[8..].copy_from_slice(payload);
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_v4(s, d, 17, udp_len as u16),
        (IpAddr::V6(s), IpAddr::V6(d)) => checksum::pseudo_v6(s, d, 17, udp_len as u32),
        _ => unreachable!(),
    };
    let c = checksum::finish(checksum::combine(pseudo, checksum::sum(&seg)));
    seg[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    ip_packet(v6, 17, &seg, tos)
}

pub fn ip_packet(v6: bool, proto: u8, l4: &[u8], tos: u8) -> Vec<u8> {
    let (src, dst) = host_addrs(v6);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = vec![0u8; 20 + l4.len()];
            Ipv4Repr {
                src: s,
                dst: d,
                protocol: proto,
                payload_len: l4.len(),
                ttl: 61,
                tos,
                ident: 0x4242,
                dont_frag: true,
            }
            .emit(&mut p)
            .unwrap();
            p[20..].copy_from_slice(l4);
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0u8; 40 + l4.len()];
            Ipv6Repr {
                src: s,
                dst: d,
                next_header: proto,
                payload_len: l4.len(),
                hop_limit: 61,
                traffic_class: tos,
                flow_label: 0xbeef,
            }
            .emit(&mut p)
            .unwrap();
            p[40..].copy_from_slice(l4);
            p
        }
        _ => unreachable!(),
    }
}

pub fn frame(pkt: &[u8]) -> Frame<Vec<u8>> {
    Frame::with_packet(vec![0u8; BUF], HEADROOM, pkt).unwrap()
}
