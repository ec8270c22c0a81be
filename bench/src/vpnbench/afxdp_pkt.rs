//! The AF_XDP generator's packets, sans-IO: Ethernet / IPv4 / UDP carrying a magic, a sequence
//! number and a CLOCK_MONOTONIC timestamp; the sink's parser; and the sink's sequence tracker
//! (received, duplicates, out of order).
//!
//! Payload (big endian): `b"VPNB"`, sequence number (u64), send time in ns (u64), zero padding
//! up to the requested IP packet size. UDP checksum 0 (RFC 768: "no checksum" for IPv4); the
//! IPv4 header checksum is real (RFC 791 §3.1): the plain-forwarding reference routes the
//! packets through the kernel, which drops bad ones.

use std::net::Ipv4Addr;

/// Marks our packets (anything else reaching the sink is counted as foreign).
pub const MAGIC: [u8; 4] = *b"VPNB";
/// UDP destination port of the generator's packets.
pub const DST_PORT: u16 = 9_999;
const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const UDP_LEN: usize = 8;
const PAYLOAD_MIN: usize = 4 + 8 + 8;
/// Smallest IP packet that carries the payload.
pub const MIN_SIZE: usize = IP_LEN + UDP_LEN + PAYLOAD_MIN;
/// Largest IP packet (Ethernet MTU).
pub const MAX_SIZE: usize = 1500;

/// Addresses of the generator's flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet size {0} outside {MIN_SIZE}..={MAX_SIZE} (IP bytes)")]
    Size(usize),
    #[error("bad MAC address {0:?}")]
    Mac(String),
}

/// A frame's bytes for one size; each packet copies it and writes its sequence and time.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
}

impl Template {
    /// `size` is the IP packet's length (what the tunnel carries as its inner packet).
    pub fn new(flow: &FlowSpec, size: usize) -> Result<Template, PacketError> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
            return Err(PacketError::Size(size));
        }
        let mut b = vec![0u8; ETH_LEN + size];
        b[0..6].copy_from_slice(&flow.dst_mac);
        b[6..12].copy_from_slice(&flow.src_mac);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut b[ETH_LEN..ETH_LEN + IP_LEN];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(size as u16).to_be_bytes());
        ip[6] = 0x40; // DF: never fragmented on the way
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&flow.src_ip.octets());
        ip[16..20].copy_from_slice(&flow.dst_ip.octets());
        let sum = ipv4_checksum(ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let udp = &mut b[ETH_LEN + IP_LEN..ETH_LEN + IP_LEN + UDP_LEN];
        udp[0..2].copy_from_slice(&flow.src_port.to_be_bytes());
        udp[2..4].copy_from_slice(&DST_PORT.to_be_bytes());
        udp[4..6].copy_from_slice(&((size - IP_LEN) as u16).to_be_bytes());
        let p = ETH_LEN + IP_LEN + UDP_LEN;
        b[p..p + 4].copy_from_slice(&MAGIC);
        Ok(Template { bytes: b })
    }

    /// Frame length (Ethernet header included).
    pub fn frame_len(&self) -> usize {
        self.bytes.len()
    }

    /// Write packet `seq` sent at `ts_ns` into `out` (at least [`Template::frame_len`] bytes);
    /// returns the frame length.
    pub fn write(&self, out: &mut [u8], seq: u64, ts_ns: u64) -> usize {
        let n = self.bytes.len();
        out[..n].copy_from_slice(&self.bytes);
        let p = ETH_LEN + IP_LEN + UDP_LEN + 4;
        out[p..p + 8].copy_from_slice(&seq.to_be_bytes());
        out[p + 8..p + 16].copy_from_slice(&ts_ns.to_be_bytes());
        n
    }
}

/// RFC 791 §3.1 header checksum (the one's complement of the one's complement sum).
pub fn ipv4_checksum(hdr: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for (i, w) in hdr.chunks(2).enumerate() {
        if i == 5 {
            continue; // the checksum field itself
        }
        let hi = u32::from(w[0]) << 8;
        sum += hi | u32::from(*w.get(1).unwrap_or(&0));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One of our packets as the sink sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub seq: u64,
    pub ts_ns: u64,
}

/// Parse a received Ethernet frame: `None` unless it is one of the generator's packets.
pub fn parse(frame: &[u8]) -> Option<Probe> {
    if frame.len() < ETH_LEN + MIN_SIZE || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[ETH_LEN..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ip[9] != 17 || ihl < IP_LEN || ip.len() < ihl + UDP_LEN + PAYLOAD_MIN {
        return None;
    }
    let udp = &ip[ihl..];
    if udp[2..4] != DST_PORT.to_be_bytes() || udp[8..12] != MAGIC {
        return None;
    }
    let seq = u64::from_be_bytes(udp[12..20].try_into().ok()?);
    let ts_ns = u64::from_be_bytes(udp[20..28].try_into().ok()?);
    Some(Probe { seq, ts_ns })
}

/// "aa:bb:cc:dd:ee:ff" to bytes.
pub fn parse_mac(s: &str) -> Result<[u8; 6], PacketError> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    let mut out = [0u8; 6];
    if parts.len() != 6 {
        return Err(PacketError::Mac(s.into()));
    }
    for (o, p) in out.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).map_err(|_| PacketError::Mac(s.into()))?;
    }
    Ok(out)
}

/// Sequence numbers larger than this are counted as invalid rather than tracked (the bitmap
/// would be 32 MiB here; the longest run sends far fewer).
pub const MAX_TRACKED_SEQ: u64 = 1 << 28;

/// What the sink saw, by sequence number.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    seen: Vec<u64>,
    /// Distinct sequence numbers received.
    pub received: u64,
    pub duplicates: u64,
    /// Received after a higher sequence number.
    pub out_of_order: u64,
    /// Sequence numbers beyond [`MAX_TRACKED_SEQ`].
    pub invalid: u64,
    highest: Option<u64>,
}

/// The verdict on one received sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    New,
    Duplicate,
    Invalid,
}

impl SeqTracker {
    pub fn record(&mut self, seq: u64) -> SeqVerdict {
        if seq >= MAX_TRACKED_SEQ {
            self.invalid += 1;
            return SeqVerdict::Invalid;
        }
        let (w, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if w >= self.seen.len() {
            self.seen.resize((w + 1).next_power_of_two(), 0);
        }
        if self.seen[w] & bit != 0 {
            self.duplicates += 1;
            return SeqVerdict::Duplicate;
        }
        self.seen[w] |= bit;
        self.received += 1;
        match self.highest {
            Some(h) if seq < h => self.out_of_order += 1,
            _ => self.highest = Some(seq),
        }
        SeqVerdict::New
    }

    /// How many of `0..sent` never arrived.
    pub fn missing(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.received_below(sent))
    }

    fn received_below(&self, n: u64) -> u64 {
        let full = (n / 64) as usize;
        let mut c: u64 = self
            .seen
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        if let Some(w) = self.seen.get(full) {
            let rem = n % 64;
            if rem > 0 {
                c += u64::from((w & ((1u64 << rem) - 1)).count_ones());
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> FlowSpec {
        FlowSpec {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 1, 0, 10),
            dst_ip: Ipv4Addr::new(10, 2, 0, 20),
            src_port: 40_000,
        }
    }

    #[test]
    fn packets_round_trip_at_every_size() {
        for size in [MIN_SIZE, 64, 576, 1420, MAX_SIZE] {
            let t = Template::new(&flow(), size).unwrap();
            let mut buf = vec![0xaau8; 2048];
            let n = t.write(&mut buf, 0x0102_0304_0506_0708, 987_654_321);
            assert_eq!(n, 14 + size);
            let ip = &buf[14..n];
            assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), size);
            assert_eq!(usize::from(u16::from_be_bytes([ip[24], ip[25]])), size - 20);
            // A receiver's check: the sum over the header including its checksum is 0xffff.
            let mut sum: u32 = ip[..20]
                .chunks(2)
                .map(|w| u32::from(w[0]) << 8 | u32::from(w[1]))
                .sum();
            sum = (sum & 0xffff) + (sum >> 16);
            assert_eq!(sum, 0xffff, "size {size}");
            assert_eq!(
                parse(&buf[..n]),
                Some(Probe {
                    seq: 0x0102_0304_0506_0708,
                    ts_ns: 987_654_321
                })
            );
        }
    }

    #[test]
    fn checksum_matches_rfc1071_example_header() {
        // A header from RFC 1071-style worked examples (Wikipedia's IPv4 checksum example).
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
    }

    #[test]
    fn sizes_and_foreign_packets_are_refused() {
        assert_eq!(
            Template::new(&flow(), MIN_SIZE - 1).unwrap_err(),
            PacketError::Size(MIN_SIZE - 1)
        );
        assert!(Template::new(&flow(), MAX_SIZE + 1).is_err());
        let t = Template::new(&flow(), 64).unwrap();
        let mut buf = vec![0u8; 128];
        let n = t.write(&mut buf, 1, 2);
        let mut other = buf.clone();
        other[14 + 20 + 8] = b'X'; // wrong magic
        assert_eq!(parse(&other[..n]), None);
        let mut arp = buf.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse(&arp[..n]), None);
        assert_eq!(parse(&buf[..40]), None);
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:zz").is_err());
    }

    #[test]
    fn tracker_counts_duplicates_reordering_and_missing() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 2, 5, 3, 3, 200, 4, 0] {
            t.record(s);
        }
        assert_eq!(t.received, 7);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.out_of_order, 2); // 3 after 5, 4 after 200
        assert_eq!(t.missing(6), 0);
        assert_eq!(t.missing(7), 1); // 6 never came
        assert_eq!(t.missing(201), 201 - 7);
        assert_eq!(t.record(MAX_TRACKED_SEQ), SeqVerdict::Invalid);
        assert_eq!(t.invalid, 1);
    }
}
