//! IPv6 headers (RFC 8200 §3).

use std::net::Ipv6Addr;

use super::{be16, be32, put16, put32, WireError};

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// A view of an IPv6 packet. `new_checked` guarantees: version 6, the fixed header and the
/// declared payload fit. Jumbograms (payload length 0, RFC 2675) are refused.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let p = Ipv6Packet { buf };
        p.check_len()?;
        Ok(p)
    }

    fn check_len(&self) -> Result<(), WireError> {
        let b = self.buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::BadVersion);
        }
        if HEADER_LEN + usize::from(be16(b, field::PAYLOAD_LEN)) > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The traffic class byte: DSCP (6 bits) and ECN (2 bits).
    pub fn traffic_class(&self) -> u8 {
        ((be32(self.buf.as_ref(), field::VER_TC_FLOW) >> 20) & 0xff) as u8
    }
    pub fn dscp(&self) -> u8 {
        self.traffic_class() >> 2
    }
    pub fn ecn(&self) -> u8 {
        self.traffic_class() & 3
    }
    pub fn flow_label(&self) -> u32 {
        be32(self.buf.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }
    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.buf.as_ref(), field::PAYLOAD_LEN))
    }
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[field::NEXT_HEADER]
    }
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[field::HOP_LIMIT]
    }
    pub fn src(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buf.as_ref()[field::SRC]);
        Ipv6Addr::from(a)
    }
    pub fn dst(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buf.as_ref()[field::DST]);
        Ipv6Addr::from(a)
    }
    /// The payload (extension headers included), up to the declared payload length.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..self.total_len()]
    }
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn set_payload_len(&mut self, len: u16) {
        put16(self.buf.as_mut(), field::PAYLOAD_LEN, len);
    }
    pub fn set_next_header(&mut self, nh: u8) {
        self.buf.as_mut()[field::NEXT_HEADER] = nh;
    }
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buf.as_mut()[field::HOP_LIMIT] = h;
    }
    pub fn set_traffic_class(&mut self, tc: u8) {
        let b = self.buf.as_mut();
        let w = be32(b, field::VER_TC_FLOW);
        let w = (w & 0xf00f_ffff) | (u32::from(tc) << 20);
        put32(b, field::VER_TC_FLOW, w);
    }
}

/// The fixed IPv6 header fields as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Ipv6Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Ipv6Repr {
        Ipv6Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        }
    }

    /// Write the 40-byte fixed header into the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        if buf.len() < HEADER_LEN || self.payload_len > usize::from(u16::MAX) {
            return Err(WireError::NoRoom);
        }
        let w = (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0xf_ffff);
        put32(buf, field::VER_TC_FLOW, w);
        put16(buf, field::PAYLOAD_LEN, self.payload_len as u16);
        buf[field::NEXT_HEADER] = self.next_header;
        buf[field::HOP_LIMIT] = self.hop_limit;
        buf[field::SRC].copy_from_slice(&self.src.octets());
        buf[field::DST].copy_from_slice(&self.dst.octets());
        Ok(())
    }
}

/// Walk the extension headers that precede an ESP header in transport mode
/// (RFC 4303 §3.1.1: hop-by-hop, routing and fragment headers come before ESP; we also
/// keep destination options there). Returns `(offset of the first header that follows them,
/// offset of the next-header byte that names it)` relative to the start of the packet,
/// or `None` if an extension header is truncated.
pub fn split_before_esp(pkt: &[u8]) -> Option<(usize, usize)> {
    let mut nh_at = field::NEXT_HEADER;
    let mut off = HEADER_LEN;
    loop {
        let nh = *pkt.get(nh_at)?;
        match nh {
            super::IpProtocol::HOP_BY_HOP
            | super::IpProtocol::ROUTING
            | super::IpProtocol::DEST_OPTS => {
                let len = (usize::from(*pkt.get(off + 1)?) + 1) * 8;
                if off + len > pkt.len() {
                    return None;
                }
                nh_at = off;
                off += len;
            }
            _ => return Some((off, nh_at)),
        }
    }
}

/// Find the upper-layer protocol and its offset, skipping extension headers (for traffic
/// selector checks). A fragment header stops the walk: a non-first fragment has no ports.
/// Returns `(protocol, offset, is_non_first_fragment)`.
pub fn upper_layer(pkt: &[u8]) -> Option<(u8, usize, bool)> {
    let mut nh = *pkt.get(field::NEXT_HEADER)?;
    let mut off = HEADER_LEN;
    for _ in 0..8 {
        match nh {
            super::IpProtocol::HOP_BY_HOP
            | super::IpProtocol::ROUTING
            | super::IpProtocol::DEST_OPTS => {
                let len = (usize::from(*pkt.get(off + 1)?) + 1) * 8;
                nh = *pkt.get(off)?;
                off += len;
            }
            super::IpProtocol::FRAGMENT => {
                let b = pkt.get(off..off + 8)?;
                let frag_off = be16(b, 2) & 0xfff8;
                nh = b[0];
                off += 8;
                if frag_off != 0 {
                    return Some((nh, off, true));
                }
            }
            _ => return Some((nh, off, false)),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ipv6Repr {
        Ipv6Repr {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            next_header: 17,
            payload_len: 8,
            hop_limit: 64,
            traffic_class: 0xb9,
            flow_label: 0x12345,
        }
    }

    #[test]
    fn round_trip() {
        let mut b = [0u8; 48];
        sample().emit(&mut b).unwrap();
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p), sample());
        assert_eq!(p.ecn(), 1);
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn refuses_short_and_wrong_version() {
        let mut b = [0u8; 48];
        sample().emit(&mut b).unwrap();
        assert_eq!(
            Ipv6Packet::new_checked(&b[..47]).unwrap_err(),
            WireError::Truncated
        );
        b[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap_err(),
            WireError::BadVersion
        );
    }

    #[test]
    fn walks_extension_headers() {
        let mut b = vec![0u8; 40 + 8 + 8 + 8];
        let mut r = sample();
        r.next_header = 0;
        r.payload_len = 24;
        r.emit(&mut b).unwrap();
        b[40] = 60; // HBH -> dest opts
        b[48] = 17; // dest opts -> UDP
        assert_eq!(split_before_esp(&b), Some((56, 48)));
        assert_eq!(upper_layer(&b), Some((17, 56, false)));
        b[49] = 200; // dest opts length overruns the buffer
        assert_eq!(split_before_esp(&b), None);
    }
}
