//! Typed views over packet bytes, in the smoltcp style.
//!
//! Every header has a `Packet<T: AsRef<[u8]>>` view whose `new_checked` validates
//! all lengths once; after that, no accessor can panic. A plain-data `Repr` converts
//! between bytes and a struct with `parse`/`emit` for the slow path and for tests.
//! The fast path uses the views directly, in place.

pub mod checksum;
pub mod esp;
pub mod ethernet;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod udp;

pub use esp::{EspPacket, EspRepr};
pub use ethernet::{EthernetFrame, EthernetRepr};
pub use ip::{Ecn, IpProtocol};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use udp::{UdpPacket, UdpRepr};

/// Why a buffer is not a valid header of the kind asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer ends before the header (or the length it declares) does.
    #[error("truncated: the buffer is shorter than the header or its declared length")]
    Truncated,
    /// The IP version nibble is not the one expected.
    #[error("wrong IP version")]
    BadVersion,
    /// A length field is inconsistent (e.g. IPv4 IHL < 5, total length < header length).
    #[error("inconsistent length field")]
    BadLength,
    /// The header checksum does not verify.
    #[error("bad header checksum")]
    BadChecksum,
    /// A buffer given to `emit` is too small for the header.
    #[error("buffer too small to emit the header")]
    NoRoom,
}

pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
