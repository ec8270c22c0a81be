//! IPv4 headers (RFC 791).

use std::net::Ipv4Addr;

use super::{be16, checksum, put16, WireError};

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: core::ops::Range<usize> = 12..16;
    pub const DST: core::ops::Range<usize> = 16..20;
}

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet. `new_checked` guarantees: version 4, IHL ≥ 5, the header
/// and the declared total length fit in the buffer. The buffer may be longer than
/// the total length (Ethernet padding, tailroom); `payload` stops at the total length.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let p = Ipv4Packet { buf };
        p.check_len()?;
        Ok(p)
    }

    fn check_len(&self) -> Result<(), WireError> {
        let b = self.buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        let tl = usize::from(be16(b, field::TOTAL_LEN));
        if hl < MIN_HEADER_LEN || tl < hl {
            return Err(WireError::BadLength);
        }
        if b.len() < tl {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[field::VER_IHL] & 0x0f) * 4
    }
    pub fn dscp(&self) -> u8 {
        self.buf.as_ref()[field::TOS] >> 2
    }
    pub fn ecn(&self) -> u8 {
        self.buf.as_ref()[field::TOS] & 3
    }
    pub fn tos(&self) -> u8 {
        self.buf.as_ref()[field::TOS]
    }
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buf.as_ref(), field::TOTAL_LEN))
    }
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), field::IDENT)
    }
    pub fn dont_frag(&self) -> bool {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & FLAG_DF != 0
    }
    pub fn more_frags(&self) -> bool {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & FLAG_MF != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(be16(self.buf.as_ref(), field::FLAGS_FRAG) & FRAG_OFFSET_MASK) * 8
    }
    /// True for any fragment, first or later.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[field::TTL]
    }
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[field::PROTOCOL]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }
    pub fn src(&self) -> Ipv4Addr {
        let b = &self.buf.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
    pub fn dst(&self) -> Ipv4Addr {
        let b = &self.buf.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
    /// True when the header checksum verifies (RFC 1071).
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.buf.as_ref()[..self.header_len()]) == 0
    }
    pub fn header(&self) -> &[u8] {
        &self.buf.as_ref()[..self.header_len()]
    }
    /// The payload, up to the declared total length.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..self.total_len()]
    }
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn set_total_len(&mut self, len: u16) {
        put16(self.buf.as_mut(), field::TOTAL_LEN, len);
    }
    pub fn set_protocol(&mut self, p: u8) {
        self.buf.as_mut()[field::PROTOCOL] = p;
    }
    pub fn set_tos(&mut self, tos: u8) {
        self.buf.as_mut()[field::TOS] = tos;
    }
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buf.as_mut()[field::TTL] = ttl;
    }
    /// Recompute the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buf.as_mut();
        put16(b, field::CHECKSUM, 0);
        let c = checksum::checksum(&b[..hl]);
        put16(b, field::CHECKSUM, c);
    }
    /// Set the TOS byte and patch the checksum incrementally (RFC 1624).
    pub fn set_tos_incremental(&mut self, tos: u8) {
        let b = self.buf.as_mut();
        let old = be16(b, 0);
        b[field::TOS] = tos;
        let new = be16(b, 0);
        let c = checksum::update16(be16(b, field::CHECKSUM), old, new);
        put16(b, field::CHECKSUM, c);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), self.total_len());
        &mut self.buf.as_mut()[hl..tl]
    }
}

/// The fields of an IPv4 header (without options) as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub payload_len: usize,
    pub ttl: u8,
    /// The whole TOS byte: DSCP (6 bits) and ECN (2 bits).
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Parse a view; refuses a header whose checksum does not verify.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Result<Ipv4Repr, WireError> {
        if !p.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        Ok(Ipv4Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            payload_len: p.total_len() - p.header_len(),
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
        })
    }

    /// Write a 20-byte header with a valid checksum into the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let total = MIN_HEADER_LEN + self.payload_len;
        if buf.len() < MIN_HEADER_LEN || total > usize::from(u16::MAX) {
            return Err(WireError::NoRoom);
        }
        buf[field::VER_IHL] = 0x45;
        buf[field::TOS] = self.tos;
        put16(buf, field::TOTAL_LEN, total as u16);
        put16(buf, field::IDENT, self.ident);
        put16(
            buf,
            field::FLAGS_FRAG,
            if self.dont_frag { FLAG_DF } else { 0 },
        );
        buf[field::TTL] = self.ttl;
        buf[field::PROTOCOL] = self.protocol;
        put16(buf, field::CHECKSUM, 0);
        buf[field::SRC].copy_from_slice(&self.src.octets());
        buf[field::DST].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(&buf[..MIN_HEADER_LEN]);
        put16(buf, field::CHECKSUM, c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ipv4Repr {
        Ipv4Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(198, 51, 100, 7),
            protocol: 17,
            payload_len: 4,
            ttl: 63,
            tos: 0xb9,
            ident: 0x1234,
            dont_frag: true,
        }
    }

    #[test]
    fn round_trip() {
        let mut b = [0u8; 24];
        sample().emit(&mut b).unwrap();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p).unwrap(), sample());
        assert_eq!(p.dscp(), 0xb9 >> 2);
        assert_eq!(p.ecn(), 1);
        assert!(!p.is_fragment());
    }

    #[test]
    fn refuses_bad_lengths() {
        let mut b = [0u8; 24];
        sample().emit(&mut b).unwrap();
        assert_eq!(
            Ipv4Packet::new_checked(&b[..23]).unwrap_err(),
            WireError::Truncated
        );
        let mut bad = b;
        bad[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::BadLength
        );
        let mut bad = b;
        bad[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::BadVersion
        );
        let mut bad = b;
        bad[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::BadLength
        );
        let mut bad = b;
        bad[8] ^= 1;
        let p = Ipv4Packet::new_checked(&bad[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p).unwrap_err(), WireError::BadChecksum);
    }

    #[test]
    fn tos_incremental_keeps_checksum_valid() {
        let mut b = [0u8; 24];
        sample().emit(&mut b).unwrap();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_tos_incremental(0xbb);
        assert!(p.verify_checksum());
        assert_eq!(p.ecn(), 3);
    }
}
