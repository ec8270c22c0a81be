//! Traffic selectors (RFC 4301 §4.4.1.1, in the IKEv2 form of RFC 7296 §3.13.1):
//! an address range, an IP protocol (0 = any) and a port range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::ip::IpProtocol;
use crate::wire::{ipv6, Ipv4Packet, Ipv6Packet};

/// One traffic selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    pub start: IpAddr,
    pub end: IpAddr,
    /// IP protocol number; 0 matches any.
    pub protocol: u8,
    /// Inclusive port range. For ICMP the "port" is type << 8 | code (RFC 4301 §4.4.1.1).
    pub start_port: u16,
    pub end_port: u16,
}

/// Why a selector could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    #[error("address range mixes IPv4 and IPv6")]
    MixedFamilies,
    #[error("range start is after its end")]
    Inverted,
    #[error("bad prefix {0:?}: expected ADDRESS/LEN")]
    BadPrefix(String),
}

impl TrafficSelector {
    pub fn new(
        start: IpAddr,
        end: IpAddr,
        protocol: u8,
        ports: (u16, u16),
    ) -> Result<Self, SelectorError> {
        match (start, end) {
            (IpAddr::V4(a), IpAddr::V4(b)) if a > b => return Err(SelectorError::Inverted),
            (IpAddr::V6(a), IpAddr::V6(b)) if a > b => return Err(SelectorError::Inverted),
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {}
            _ => return Err(SelectorError::MixedFamilies),
        }
        if ports.0 > ports.1 {
            return Err(SelectorError::Inverted);
        }
        Ok(TrafficSelector {
            start,
            end,
            protocol,
            start_port: ports.0,
            end_port: ports.1,
        })
    }

    /// All of IPv4, any protocol, any port.
    pub fn any_v4() -> Self {
        TrafficSelector {
            start: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            end: IpAddr::V4(Ipv4Addr::BROADCAST),
            protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
        }
    }

    /// All of IPv6, any protocol, any port.
    pub fn any_v6() -> Self {
        TrafficSelector {
            start: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            end: IpAddr::V6(Ipv6Addr::from(u128::MAX)),
            protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
        }
    }

    /// A CIDR prefix (`10.1.0.0/16`, `2001:db8::/32`), any protocol and port.
    pub fn prefix(s: &str) -> Result<Self, SelectorError> {
        let bad = || SelectorError::BadPrefix(s.to_string());
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let len: u32 = len.parse().map_err(|_| bad())?;
        let (start, end) = match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                let a = u32::from(a);
                (
                    IpAddr::from((a & mask).to_be_bytes()),
                    IpAddr::from((a | !mask).to_be_bytes()),
                )
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                let a = u128::from(a);
                (
                    IpAddr::from((a & mask).to_be_bytes()),
                    IpAddr::from((a | !mask).to_be_bytes()),
                )
            }
            _ => return Err(bad()),
        };
        Self::new(start, end, 0, (0, u16::MAX))
    }

    /// Restrict to one protocol and port range.
    pub fn with_protocol(mut self, protocol: u8, ports: (u16, u16)) -> Self {
        self.protocol = protocol;
        self.start_port = ports.0;
        self.end_port = ports.1;
        self
    }

    fn ports_are_any(&self) -> bool {
        self.start_port == 0 && self.end_port == u16::MAX
    }

    /// Does (addr, protocol, port) fall within this selector? `port` is `None` when the
    /// packet has no port (another protocol, or a non-first fragment: RFC 4301 §7 — such a
    /// packet matches only a selector whose ports are "any").
    #[inline]
    pub fn matches(&self, addr: IpAddr, protocol: u8, port: Option<u16>) -> bool {
        let addr_ok = match (addr, self.start, self.end) {
            (IpAddr::V4(a), IpAddr::V4(s), IpAddr::V4(e)) => s <= a && a <= e,
            (IpAddr::V6(a), IpAddr::V6(s), IpAddr::V6(e)) => s <= a && a <= e,
            _ => false,
        };
        if !addr_ok || (self.protocol != 0 && self.protocol != protocol) {
            return false;
        }
        match port {
            _ if self.ports_are_any() => true,
            Some(p) => self.start_port <= p && p <= self.end_port,
            None => false,
        }
    }
}

/// The selector-relevant fields of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
}

#[inline]
fn ports_at(proto: u8, l4: Option<&[u8]>) -> (Option<u16>, Option<u16>) {
    let Some(l4) = l4 else { return (None, None) };
    match proto {
        IpProtocol::TCP | IpProtocol::UDP | IpProtocol::SCTP if l4.len() >= 4 => (
            Some(u16::from_be_bytes([l4[0], l4[1]])),
            Some(u16::from_be_bytes([l4[2], l4[3]])),
        ),
        // RFC 4301 §4.4.1.1: ICMP type and code travel in the "local port" slot; the
        // remote side uses the same pair (IKEv2 sends both start and end ports).
        IpProtocol::ICMP | IpProtocol::ICMPV6 if l4.len() >= 2 => {
            let tc = u16::from_be_bytes([l4[0], l4[1]]);
            (Some(tc), Some(tc))
        }
        _ => (None, None),
    }
}

impl FlowKey {
    /// Extract the flow of an IPv4 or IPv6 packet (already length-checked by the caller).
    #[inline]
    pub fn of_packet(pkt: &[u8]) -> Option<FlowKey> {
        match pkt.first()? >> 4 {
            4 => {
                let p = Ipv4Packet::new_checked(pkt).ok()?;
                let proto = p.protocol();
                let l4 = if p.frag_offset() == 0 {
                    Some(p.payload())
                } else {
                    None
                };
                let (sp, dp) = ports_at(proto, l4);
                Some(FlowKey {
                    src: p.src().into(),
                    dst: p.dst().into(),
                    protocol: proto,
                    src_port: sp,
                    dst_port: dp,
                })
            }
            6 => {
                let p = Ipv6Packet::new_checked(pkt).ok()?;
                let bytes = &pkt[..p.total_len()];
                let (proto, off, non_first) = ipv6::upper_layer(bytes)?;
                let l4 = if non_first { None } else { bytes.get(off..) };
                let (sp, dp) = ports_at(proto, l4);
                Some(FlowKey {
                    src: p.src().into(),
                    dst: p.dst().into(),
                    protocol: proto,
                    src_port: sp,
                    dst_port: dp,
                })
            }
            _ => None,
        }
    }
}

/// The selectors of one SA: RFC 4301 §5.2 — an inbound packet must come from the remote
/// selectors and go to the local ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectorSet {
    pub local: Vec<TrafficSelector>,
    pub remote: Vec<TrafficSelector>,
}

impl SelectorSet {
    /// Everything, both families.
    pub fn any() -> Self {
        let all = vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()];
        SelectorSet {
            local: all.clone(),
            remote: all,
        }
    }

    /// Does an inbound (decrypted) flow match: src in remote, dst in local?
    #[inline]
    pub fn admits_inbound(&self, f: &FlowKey) -> bool {
        self.remote
            .iter()
            .any(|t| t.matches(f.src, f.protocol, f.src_port))
            && self
                .local
                .iter()
                .any(|t| t.matches(f.dst, f.protocol, f.dst_port))
    }

    /// Does an outbound flow match: src in local, dst in remote?
    #[inline]
    pub fn admits_outbound(&self, f: &FlowKey) -> bool {
        self.local
            .iter()
            .any(|t| t.matches(f.src, f.protocol, f.src_port))
            && self
                .remote
                .iter()
                .any(|t| t.matches(f.dst, f.protocol, f.dst_port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges() {
        let t = TrafficSelector::prefix("10.1.0.0/16").unwrap();
        assert!(t.matches("10.1.255.255".parse().unwrap(), 6, Some(80)));
        assert!(!t.matches("10.2.0.0".parse().unwrap(), 6, Some(80)));
        assert!(!t.matches("::1".parse().unwrap(), 6, Some(80)));
        let t6 = TrafficSelector::prefix("2001:db8::/32").unwrap();
        assert!(t6.matches("2001:db8:ffff::1".parse().unwrap(), 17, None));
        assert!(TrafficSelector::prefix("10.0.0.0/33").is_err());
        assert!(TrafficSelector::prefix("10.0.0.0").is_err());
    }

    #[test]
    fn protocol_and_ports() {
        let t = TrafficSelector::prefix("0.0.0.0/0")
            .unwrap()
            .with_protocol(6, (443, 443));
        let a = "1.2.3.4".parse().unwrap();
        assert!(t.matches(a, 6, Some(443)));
        assert!(!t.matches(a, 6, Some(80)));
        assert!(!t.matches(a, 17, Some(443)));
        // A non-first fragment has no ports and only matches "any port".
        assert!(!t.matches(a, 6, None));
        assert!(TrafficSelector::any_v4().matches(a, 6, None));
    }

    #[test]
    fn constructor_checks() {
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let b: IpAddr = "10.0.0.1".parse().unwrap();
        let c: IpAddr = "::1".parse().unwrap();
        assert_eq!(
            TrafficSelector::new(a, b, 0, (0, 1)),
            Err(SelectorError::Inverted)
        );
        assert_eq!(
            TrafficSelector::new(a, c, 0, (0, 1)),
            Err(SelectorError::MixedFamilies)
        );
        assert_eq!(
            TrafficSelector::new(b, a, 0, (2, 1)),
            Err(SelectorError::Inverted)
        );
    }
}
