//! ICMP errors the gateway originates: "fragmentation needed" (RFC 792, RFC 1191) and
//! "packet too big" (RFC 4443 §3.2), built in place over the offending packet.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::esp::Frame;
use crate::wire::{checksum, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr};

/// RFC 1812 §4.3.2.3: quote as much of the original as fits in 576 bytes (IPv4);
/// RFC 4443 §2.4(c): as much as fits in the minimum MTU, 1280 bytes (IPv6).
const V4_MAX: usize = 576;
const V6_MAX: usize = 1280;

/// Replace the IPv4 packet in `f` by an ICMP "fragmentation needed" to its sender, from
/// `gw`, advertising `mtu`. False if the packet is not IPv4 or has no room.
pub fn frag_needed_v4<B: AsRef<[u8]> + AsMut<[u8]>>(
    f: &mut Frame<B>,
    gw: Ipv4Addr,
    mtu: u16,
) -> bool {
    let Ok(p) = Ipv4Packet::new_checked(f.data()) else {
        return false;
    };
    let (sender, tos) = (p.src(), p.tos());
    let quote = f.len().min(V4_MAX - 28);
    let head = f.head();
    f.truncate(quote);
    // Move the quoted bytes back 28 bytes to make room for the new IP and ICMP headers.
    if !f.push_back(28) {
        return false;
    }
    f.raw_mut().copy_within(head..head + quote, head + 28);
    let d = f.data_mut();
    Ipv4Repr {
        src: gw,
        dst: sender,
        protocol: 1,
        payload_len: 8 + quote,
        ttl: 64,
        tos: tos & !3,
        ident: 0,
        dont_frag: false,
    }
    .emit(d)
    .is_ok()
        && {
            let icmp = &mut d[20..];
            icmp[0] = 3; // destination unreachable
            icmp[1] = 4; // fragmentation needed and DF set
            icmp[2..4].copy_from_slice(&[0, 0]);
            icmp[4..6].copy_from_slice(&[0, 0]);
            icmp[6..8].copy_from_slice(&mtu.to_be_bytes()); // RFC 1191 §4
            let c = checksum::checksum(icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            true
        }
}

/// Replace the IPv6 packet in `f` by an ICMPv6 "packet too big" to its sender.
pub fn packet_too_big_v6<B: AsRef<[u8]> + AsMut<[u8]>>(
    f: &mut Frame<B>,
    gw: Ipv6Addr,
    mtu: u32,
) -> bool {
    let Ok(p) = Ipv6Packet::new_checked(f.data()) else {
        return false;
    };
    let sender = p.src();
    let quote = f.len().min(V6_MAX - 48);
    let head = f.head();
    f.truncate(quote);
    if !f.push_back(48) {
        return false;
    }
    f.raw_mut().copy_within(head..head + quote, head + 48);
    let d = f.data_mut();
    if (Ipv6Repr {
        src: gw,
        dst: sender,
        next_header: 58,
        payload_len: 8 + quote,
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
    })
    .emit(d)
    .is_err()
    {
        return false;
    }
    let icmp = &mut d[40..];
    icmp[0] = 2; // packet too big
    icmp[1] = 0;
    icmp[2..4].copy_from_slice(&[0, 0]);
    icmp[4..8].copy_from_slice(&mtu.to_be_bytes());
    let pseudo = checksum::pseudo_v6(gw, sender, 58, icmp.len() as u32);
    let c = checksum::finish(checksum::combine(pseudo, checksum::sum(icmp)));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_frag_needed_is_well_formed() {
        let mut pkt = vec![0u8; 1400];
        Ipv4Repr {
            src: [10, 1, 0, 10].into(),
            dst: [10, 2, 0, 20].into(),
            protocol: 6,
            payload_len: 1380,
            ttl: 63,
            tos: 0,
            ident: 9,
            dont_frag: true,
        }
        .emit(&mut pkt)
        .unwrap();
        let mut f = Frame::with_packet(vec![0u8; 2048], 128, &pkt).unwrap();
        assert!(frag_needed_v4(&mut f, [10, 1, 0, 1].into(), 1398));
        let p = Ipv4Packet::new_checked(f.data()).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.dst(), Ipv4Addr::new(10, 1, 0, 10));
        assert_eq!(p.total_len(), 576);
        let icmp = p.payload();
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1398);
        assert_eq!(checksum::checksum(icmp), 0);
        assert_eq!(&icmp[8..28], &pkt[..20]);
    }

    #[test]
    fn v6_packet_too_big_is_well_formed() {
        let mut pkt = vec![0u8; 1500];
        let (s, d): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8:a::10".parse().unwrap(),
            "2001:db8:b::20".parse().unwrap(),
        );
        Ipv6Repr {
            src: s,
            dst: d,
            next_header: 6,
            payload_len: 1460,
            hop_limit: 63,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut pkt)
        .unwrap();
        let mut f = Frame::with_packet(vec![0u8; 2048], 128, &pkt).unwrap();
        let gw: Ipv6Addr = "2001:db8:a::1".parse().unwrap();
        assert!(packet_too_big_v6(&mut f, gw, 1418));
        let p = Ipv6Packet::new_checked(f.data()).unwrap();
        assert_eq!(p.total_len(), 1280);
        assert_eq!(p.dst(), s);
        let icmp = p.payload();
        assert_eq!(icmp[0], 2);
        let pseudo = checksum::pseudo_v6(gw, s, 58, icmp.len() as u32);
        assert_eq!(
            checksum::finish(checksum::combine(pseudo, checksum::sum(icmp))),
            0
        );
    }
}
