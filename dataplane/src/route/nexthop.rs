//! Next-hop resolution from the kernel's routing and neighbour tables (the slow path).
//!
//! The workers forward packets themselves over AF_XDP, past the kernel's own forwarding, so
//! for every destination they need what the kernel would have used: the output interface,
//! the source and destination MAC addresses and the MTU. [`NextHopResolver`] asks the kernel
//! over a synchronous rtnetlink socket, the way `ip route get DST` and `ip neigh show` do:
//!
//! 1. `RTM_GETROUTE` with the destination: the kernel's own FIB lookup (policy rules,
//!    multipath selection, cached path MTU), giving the output interface, the gateway (if
//!    any) and the preferred source address;
//! 2. `RTM_GETLINK` on the output interface: its name, MAC address, MTU and state;
//! 3. `RTM_GETNEIGH` for the gateway (or the destination itself when it is on-link) on that
//!    interface: the neighbour's MAC address, if the entry is usable.
//!
//! When there is no usable neighbour entry, the resolver makes the kernel resolve it (an
//! `RTM_NEWNEIGH` with `NTF_USE`, which is what a packet sent by the kernel would do; if the
//! kernel refuses that, one small UDP datagram to the neighbour's discard port, sent from a
//! socket bound to the output interface) and answers [`Resolution::Pending`]: ask again a
//! little later. A `STALE` entry is usable, but as the dataplane's own traffic never
//! confirms it to the kernel, the resolver also asks the kernel to re-verify it.
//!
//! Every call makes syscalls: this is for a slow-path thread that caches its answers for the
//! workers, never for the per-packet path.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_MULTIPART, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr as NetlinkAddr};

/// How long one netlink request may wait for the kernel's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Receive buffer: the kernel sends dump parts of at most 32 KiB.
const RECV_BUFFER: usize = 64 * 1024;

/// The UDP port that [`NextHopResolver`] sends its resolution-triggering datagram to if the
/// kernel refuses `NTF_USE`: the discard service.
const DISCARD_PORT: u16 = 9;

/// Where and how to send a packet for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// The output interface's index.
    pub ifindex: u32,
    /// The output interface's name.
    pub ifname: String,
    /// The output interface's MAC address (the Ethernet source).
    pub src_mac: [u8; 6],
    /// The neighbour's MAC address (the Ethernet destination).
    pub dst_mac: [u8; 6],
    /// The gateway, or the destination itself when it is on-link.
    pub neighbour: IpAddr,
    /// The source address the kernel would pick for this destination.
    pub src_addr: Option<IpAddr>,
    /// The MTU towards this destination: the interface's, lowered by a route MTU or a
    /// cached path MTU if the kernel has one.
    pub mtu: u32,
}

/// The answer to [`NextHopResolver::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Everything needed to send.
    Ready(NextHop),
    /// The route is known but the neighbour's MAC address is not yet: the kernel has been
    /// asked to resolve it (ARP / neighbour discovery). Ask again a little later.
    Pending {
        /// The output interface's index.
        ifindex: u32,
        /// The gateway, or the destination itself when it is on-link.
        neighbour: IpAddr,
    },
    /// Packets for this destination cannot be forwarded; the text says why, in plain words.
    Unreachable(String),
}

/// What failed while talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NextHopError {
    /// The rtnetlink socket could not be opened or set up.
    #[error("cannot open a netlink route socket: {0}")]
    Socket(#[source] io::Error),
    /// Sending a request or receiving the answer failed (including a timeout).
    #[error("netlink {request} request: {source}")]
    Io {
        /// The request, e.g. `RTM_GETROUTE for 192.0.2.1`.
        request: String,
        #[source]
        source: io::Error,
    },
    /// The kernel answered a request with an error.
    #[error("the kernel refused the netlink {request} request: {source}{}", detail_suffix(.detail))]
    Kernel {
        /// The request, e.g. `RTM_GETLINK for ifindex 7`.
        request: String,
        /// The errno.
        #[source]
        source: io::Error,
        /// The kernel's extended-ack message, if it gave one.
        detail: Option<String>,
    },
    /// The kernel's answer could not be decoded, or was not the answer expected.
    #[error("bad answer to the netlink {request} request: {detail}")]
    Decode {
        /// The request.
        request: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// No interface has this name.
    #[error("no network interface is named {0:?}")]
    NoSuchInterface(String),
    /// No interface has this index.
    #[error("no network interface has index {0}")]
    NoSuchIfindex(u32),
    /// The kernel could not be made to resolve a neighbour.
    #[error("cannot make the kernel resolve neighbour {neighbour} on {ifname}: {source}")]
    Trigger {
        /// The neighbour address.
        neighbour: IpAddr,
        /// The interface it is on.
        ifname: String,
        #[source]
        source: io::Error,
    },
}

fn detail_suffix(detail: &Option<String>) -> String {
    match detail {
        Some(d) => format!(" ({d})"),
        None => String::new(),
    }
}

impl NextHopError {
    /// The errno of a [`NextHopError::Kernel`] error.
    fn kernel_errno(&self) -> Option<i32> {
        match self {
            NextHopError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// What the resolver needs to know about an interface.
#[derive(Debug, Clone)]
struct Link {
    ifindex: u32,
    name: String,
    flags: LinkFlags,
    link_type: LinkLayerType,
    mac: Option<[u8; 6]>,
    mtu: u32,
}

/// The parts of the kernel's `ip route get` answer that matter here.
#[derive(Debug, Clone)]
struct RouteAnswer {
    kind: RouteType,
    oif: Option<u32>,
    gateway: Option<IpAddr>,
    pref_src: Option<IpAddr>,
    mtu: Option<u32>,
}

/// A neighbour-table entry.
#[derive(Debug, Clone)]
struct Neighbour {
    state: NeighbourState,
    lladdr: Option<Vec<u8>>,
}

/// The slow-path next-hop resolver: one rtnetlink socket, synchronous requests.
pub struct NextHopResolver {
    socket: Socket,
    sequence: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for NextHopResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextHopResolver")
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl NextHopResolver {
    /// Opens the rtnetlink socket.
    pub fn new() -> Result<Self, NextHopError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NextHopError::Socket)?;
        socket.bind_auto().map_err(NextHopError::Socket)?;
        socket
            .connect(&NetlinkAddr::new(0, 0))
            .map_err(NextHopError::Socket)?;
        // Extended acks give the kernel's own words for a refusal; capped acks keep them
        // short. Both are optional: older kernels just ignore them.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        socket2::SockRef::from(&socket)
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(NextHopError::Socket)?;
        Ok(NextHopResolver {
            socket,
            sequence: 0,
            buf: vec![0; RECV_BUFFER],
        })
    }

    /// Like `ip route get DST` then `ip neigh show`: the kernel's route lookup for `dst`,
    /// then the output interface and the neighbour entry of the gateway (or of `dst` itself
    /// when it is on-link). Without a usable neighbour entry, makes the kernel resolve it and
    /// returns [`Resolution::Pending`].
    pub fn resolve(&mut self, dst: IpAddr) -> Result<Resolution, NextHopError> {
        if dst.is_unspecified() {
            return Ok(Resolution::Unreachable(format!(
                "{dst} is the unspecified address, not a destination"
            )));
        }
        if dst.is_loopback() {
            return Ok(Resolution::Unreachable(format!(
                "{dst} is local to this host (a loopback address)"
            )));
        }
        if dst.is_multicast() {
            return Ok(Resolution::Unreachable(format!(
                "{dst} is a multicast address, not a unicast destination"
            )));
        }

        let route = match self.route_get(dst) {
            Ok(route) => route,
            Err(e) => {
                return match e.kernel_errno() {
                    Some(libc::ENETUNREACH) => Ok(Resolution::Unreachable(format!(
                        "no route to {dst} (the network is unreachable)"
                    ))),
                    Some(libc::EHOSTUNREACH) => Ok(Resolution::Unreachable(format!(
                        "no route to {dst} (an unreachable route covers it)"
                    ))),
                    Some(libc::EACCES) | Some(libc::EPERM) => Ok(Resolution::Unreachable(format!(
                        "the route to {dst} is administratively prohibited"
                    ))),
                    Some(libc::EAGAIN) => Ok(Resolution::Unreachable(format!(
                        "the route to {dst} is being resolved by the kernel (try again)"
                    ))),
                    Some(libc::EINVAL) => Ok(Resolution::Unreachable(format!(
                        "no usable route to {dst}: a blackhole route covers it, or the kernel \
                         has no source address for it"
                    ))),
                    _ => Err(e),
                };
            }
        };

        match route.kind {
            RouteType::Unicast | RouteType::Unspec => {}
            RouteType::Local | RouteType::Anycast => {
                return Ok(Resolution::Unreachable(format!(
                    "{dst} is local to this host"
                )))
            }
            RouteType::Broadcast => {
                return Ok(Resolution::Unreachable(format!(
                    "{dst} is a broadcast address"
                )))
            }
            RouteType::Multicast => {
                return Ok(Resolution::Unreachable(format!(
                    "{dst} is a multicast address"
                )))
            }
            RouteType::BlackHole => {
                return Ok(Resolution::Unreachable(format!(
                    "the route to {dst} is a blackhole route"
                )))
            }
            RouteType::Unreachable => {
                return Ok(Resolution::Unreachable(format!(
                    "the route to {dst} is an unreachable route"
                )))
            }
            RouteType::Prohibit => {
                return Ok(Resolution::Unreachable(format!(
                    "the route to {dst} is administratively prohibited"
                )))
            }
            other => {
                return Ok(Resolution::Unreachable(format!(
                    "the route to {dst} is of type {other:?}, which cannot be forwarded to"
                )))
            }
        }

        let Some(oif) = route.oif else {
            return Ok(Resolution::Unreachable(format!(
                "the kernel's route to {dst} names no output interface"
            )));
        };
        let link = self.link_by_index(oif)?;
        if link.flags.contains(LinkFlags::Loopback) {
            return Ok(Resolution::Unreachable(format!(
                "{dst} is local to this host (routed via {})",
                link.name
            )));
        }
        if !link.flags.contains(LinkFlags::Up) {
            return Ok(Resolution::Unreachable(format!(
                "{dst} is routed via {}, which is down",
                link.name
            )));
        }
        if !link.flags.contains(LinkFlags::LowerUp) {
            return Ok(Resolution::Unreachable(format!(
                "{dst} is routed via {}, which has no carrier (its link is down)",
                link.name
            )));
        }
        let src_mac = match (link.link_type, link.mac) {
            (LinkLayerType::Ether, Some(mac)) => mac,
            _ => {
                return Ok(Resolution::Unreachable(format!(
                    "{dst} is routed via {}, which is not an Ethernet interface (link type {:?})",
                    link.name, link.link_type
                )))
            }
        };

        let neighbour = route.gateway.unwrap_or(dst);
        let entry = self.neighbour_get(oif, neighbour)?;
        let usable = entry.as_ref().and_then(|n| {
            let mac: Option<[u8; 6]> = n.lladdr.as_deref().and_then(|a| a.try_into().ok());
            match n.state {
                NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
                | NeighbourState::Noarp => mac.map(|m| (m, n.state)),
                _ => None,
            }
        });

        match usable {
            Some((dst_mac, state)) => {
                if state == NeighbourState::Stale {
                    // Our own traffic bypasses the kernel and never confirms the entry:
                    // have the kernel re-verify it (best effort; the entry stays usable).
                    let _ = self.neighbour_use(oif, neighbour);
                }
                let mtu = match route.mtu {
                    Some(m) if m > 0 => m.min(link.mtu),
                    _ => link.mtu,
                };
                Ok(Resolution::Ready(NextHop {
                    ifindex: oif,
                    ifname: link.name,
                    src_mac,
                    dst_mac,
                    neighbour,
                    src_addr: route.pref_src,
                    mtu,
                }))
            }
            None => {
                self.trigger_resolution(&link, neighbour)?;
                Ok(Resolution::Pending {
                    ifindex: oif,
                    neighbour,
                })
            }
        }
    }

    /// The addresses configured on an interface (IPv4 and IPv6, in the kernel's order).
    pub fn interface_addrs(&mut self, ifindex: u32) -> Result<Vec<IpAddr>, NextHopError> {
        // Fails with NoSuchIfindex for an unknown interface, rather than an empty list.
        self.link_by_index(ifindex)?;
        let request = format!("RTM_GETADDR dump for ifindex {ifindex}");
        let answers = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
            &request,
        )?;
        let mut addrs = Vec::new();
        for answer in answers {
            let RouteNetlinkMessage::NewAddress(msg) = answer else {
                continue;
            };
            if msg.header.index != ifindex {
                continue;
            }
            // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on a
            // point-to-point link); IPv6 only sends IFA_ADDRESS.
            let mut local = None;
            let mut address = None;
            for attr in &msg.attributes {
                match attr {
                    AddressAttribute::Local(a) => local = Some(*a),
                    AddressAttribute::Address(a) => address = Some(*a),
                    _ => {}
                }
            }
            if let Some(a) = local.or(address) {
                addrs.push(a);
            }
        }
        Ok(addrs)
    }

    /// The index of the interface named `ifname`.
    pub fn ifindex(&mut self, ifname: &str) -> Result<u32, NextHopError> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(ifname.to_string()));
        let request = format!("RTM_GETLINK for {ifname:?}");
        let answers = match self.request(RouteNetlinkMessage::GetLink(msg), 0, &request) {
            Ok(a) => a,
            Err(e) if e.kernel_errno() == Some(libc::ENODEV) => {
                return Err(NextHopError::NoSuchInterface(ifname.to_string()))
            }
            Err(e) => return Err(e),
        };
        let link = single_link(answers, &request)?;
        Ok(link.ifindex)
    }

    /// `RTM_GETLINK` by index.
    fn link_by_index(&mut self, ifindex: u32) -> Result<Link, NextHopError> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        let request = format!("RTM_GETLINK for ifindex {ifindex}");
        let answers = match self.request(RouteNetlinkMessage::GetLink(msg), 0, &request) {
            Ok(a) => a,
            Err(e) if e.kernel_errno() == Some(libc::ENODEV) => {
                return Err(NextHopError::NoSuchIfindex(ifindex))
            }
            Err(e) => return Err(e),
        };
        single_link(answers, &request)
    }

    /// `ip route get DST`: the kernel's FIB lookup.
    fn route_get(&mut self, dst: IpAddr) -> Result<RouteAnswer, NextHopError> {
        let mut msg = RouteMessage::default();
        let (family, len) = match dst {
            IpAddr::V4(_) => (AddressFamily::Inet, 32),
            IpAddr::V6(_) => (AddressFamily::Inet6, 128),
        };
        msg.header.address_family = family;
        msg.header.destination_prefix_length = len;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        let request = format!("RTM_GETROUTE for {dst}");
        let answers = self.request(RouteNetlinkMessage::GetRoute(msg), 0, &request)?;
        let route = answers
            .into_iter()
            .find_map(|a| match a {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .ok_or_else(|| NextHopError::Decode {
                request: request.clone(),
                detail: "no route message in the answer".into(),
            })?;

        let mut answer = RouteAnswer {
            kind: route.header.kind,
            oif: None,
            gateway: None,
            pref_src: None,
            mtu: None,
        };
        for attr in route.attributes {
            match attr {
                RouteAttribute::Oif(i) => answer.oif = Some(i),
                RouteAttribute::Gateway(a) => answer.gateway = route_address(&a),
                RouteAttribute::Via(RouteVia::Inet(a)) => answer.gateway = Some(a.into()),
                RouteAttribute::Via(RouteVia::Inet6(a)) => answer.gateway = Some(a.into()),
                RouteAttribute::PrefSource(a) => answer.pref_src = route_address(&a),
                RouteAttribute::Metrics(metrics) => {
                    for m in metrics {
                        if let RouteMetric::Mtu(mtu) = m {
                            answer.mtu = Some(mtu);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(answer)
    }

    /// `ip neigh get ADDR dev IF`; `None` if the kernel has no entry.
    fn neighbour_get(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
    ) -> Result<Option<Neighbour>, NextHopError> {
        let msg = neighbour_message(ifindex, addr);
        let request = format!("RTM_GETNEIGH for {addr} on ifindex {ifindex}");
        let answers = match self.request(RouteNetlinkMessage::GetNeighbour(msg), 0, &request) {
            Ok(a) => a,
            Err(e) if e.kernel_errno() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        for answer in answers {
            if let RouteNetlinkMessage::NewNeighbour(n) = answer {
                let lladdr = n.attributes.into_iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(l) => Some(l),
                    _ => None,
                });
                return Ok(Some(Neighbour {
                    state: n.header.state,
                    lladdr,
                }));
            }
        }
        Ok(None)
    }

    /// `RTM_NEWNEIGH` with `NTF_USE`: the kernel treats the entry as if it had a packet to
    /// send to it, creating it if needed and starting resolution (or re-verification).
    fn neighbour_use(&mut self, ifindex: u32, addr: IpAddr) -> Result<(), NextHopError> {
        let mut msg = neighbour_message(ifindex, addr);
        msg.header.flags = NeighbourFlags::Use;
        let request = format!("RTM_NEWNEIGH (use) for {addr} on ifindex {ifindex}");
        self.request(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_ACK,
            &request,
        )?;
        Ok(())
    }

    /// Makes the kernel resolve `neighbour` on `link`: `NTF_USE` first; if the kernel
    /// refuses, one UDP datagram to the neighbour's discard port from a socket bound to the
    /// interface.
    fn trigger_resolution(&mut self, link: &Link, neighbour: IpAddr) -> Result<(), NextHopError> {
        if self.neighbour_use(link.ifindex, neighbour).is_ok() {
            return Ok(());
        }
        send_discard_datagram(link, neighbour).map_err(|source| NextHopError::Trigger {
            neighbour,
            ifname: link.name.clone(),
            source,
        })
    }

    /// Sends one request and collects the answers: the single reply of a plain request, all
    /// parts of a dump (`NLM_F_DUMP`), or nothing for an acknowledged request (`NLM_F_ACK`).
    fn request(
        &mut self,
        payload: RouteNetlinkMessage,
        flags: u16,
        request: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NextHopError> {
        self.sequence = self.sequence.wrapping_add(1);
        let seq = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(payload));
        msg.finalize();
        let mut out = vec![0; msg.buffer_len()];
        msg.serialize(&mut out);
        let io_err = |source: io::Error| NextHopError::Io {
            request: request.to_string(),
            source: match source.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the kernel did not answer within {REPLY_TIMEOUT:?}"),
                ),
                _ => source,
            },
        };
        self.socket.send(&out, 0).map_err(io_err)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let ack = flags & NLM_F_ACK != 0;
        let mut answers = Vec::new();
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], libc::MSG_TRUNC)
                .map_err(io_err)?;
            if n > self.buf.len() {
                return Err(NextHopError::Decode {
                    request: request.to_string(),
                    detail: format!("a {n}-byte answer does not fit the receive buffer"),
                });
            }
            let mut offset = 0;
            while offset < n {
                let bytes = &self.buf[offset..n];
                let parsed: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(bytes).map_err(|e| NextHopError::Decode {
                        request: request.to_string(),
                        detail: e.to_string(),
                    })?;
                let len = parsed.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if parsed.header.sequence_number != seq {
                    continue; // a late answer to an earlier, timed-out request
                }
                let multipart = parsed.header.flags & NLM_F_MULTIPART != 0;
                let outer_flags = parsed.header.flags;
                match parsed.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(answers), // the acknowledgement
                        Some(_) => {
                            return Err(NextHopError::Kernel {
                                request: request.to_string(),
                                source: e.to_io(),
                                detail: ext_ack_message(outer_flags, &e.header),
                            })
                        }
                    },
                    NetlinkPayload::Done(d) => {
                        if d.code != 0 {
                            return Err(NextHopError::Kernel {
                                request: request.to_string(),
                                source: io::Error::from_raw_os_error(d.code.abs()),
                                detail: None,
                            });
                        }
                        return Ok(answers);
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        answers.push(m);
                        if !dump && !ack && !multipart {
                            return Ok(answers);
                        }
                    }
                    NetlinkPayload::Overrun(_) => {
                        return Err(NextHopError::Decode {
                            request: request.to_string(),
                            detail: "the kernel reported an overrun".into(),
                        })
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A neighbour message naming `addr` on `ifindex`, for get/new requests.
fn neighbour_message(ifindex: u32, addr: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.ifindex = ifindex;
    let (family, nda) = match addr {
        IpAddr::V4(a) => (AddressFamily::Inet, NeighbourAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, NeighbourAddress::Inet6(a)),
    };
    msg.header.family = family;
    msg.attributes.push(NeighbourAttribute::Destination(nda));
    msg
}

fn route_address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The one link in the answer to a non-dump `RTM_GETLINK`.
fn single_link(answers: Vec<RouteNetlinkMessage>, request: &str) -> Result<Link, NextHopError> {
    let msg = answers
        .into_iter()
        .find_map(|a| match a {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })
        .ok_or_else(|| NextHopError::Decode {
            request: request.to_string(),
            detail: "no link message in the answer".into(),
        })?;
    let mut link = Link {
        ifindex: msg.header.index,
        name: String::new(),
        flags: msg.header.flags,
        link_type: msg.header.link_layer_type,
        mac: None,
        mtu: 0,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::Address(a) => link.mac = a.as_slice().try_into().ok(),
            _ => {}
        }
    }
    Ok(link)
}

/// The kernel's extended-ack text (`NLMSGERR_ATTR_MSG`) from an error message's payload
/// (after the errno): the request's header (its body too unless capped), then attributes.
fn ext_ack_message(outer_flags: u16, payload: &[u8]) -> Option<String> {
    const NLM_F_CAPPED: u16 = 0x100;
    const NLM_F_ACK_TLVS: u16 = 0x200;
    const NLMSGERR_ATTR_MSG: u16 = 1;
    if outer_flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let skip = if outer_flags & NLM_F_CAPPED != 0 {
        16
    } else {
        let len = u32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?) as usize;
        (len + 3) & !3
    };
    let mut tlvs = payload.get(skip..)?;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            break;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let text = text.split(|&b| b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        tlvs = tlvs.get(((len + 3) & !3).min(tlvs.len())..)?;
    }
    None
}

/// One empty UDP datagram to `neighbour`'s discard port, from a socket bound to `link`:
/// the kernel has to resolve the neighbour to send it.
fn send_discard_datagram(link: &Link, neighbour: IpAddr) -> io::Result<()> {
    use socket2::{Domain, Protocol, SockAddr, Socket as UdpSocket, Type};
    let target: SocketAddr = match neighbour {
        IpAddr::V4(a) => SocketAddrV4::new(a, DISCARD_PORT).into(),
        IpAddr::V6(a) => {
            let scope = if is_unicast_link_local(&a) {
                link.ifindex
            } else {
                0
            };
            SocketAddrV6::new(a, DISCARD_PORT, 0, scope).into()
        }
    };
    let socket = UdpSocket::new(
        Domain::for_address(target),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.bind_device(Some(link.name.as_bytes()))?;
    socket.set_nonblocking(true)?;
    let unspecified: IpAddr = match neighbour {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    socket.bind(&SockAddr::from(SocketAddr::new(unspecified, 0)))?;
    match socket.send_to(&[0u8], &SockAddr::from(target)) {
        // The datagram waits in the neighbour's queue; a full queue still means resolution
        // is under way.
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_unicast_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_text_is_found_after_a_capped_header() {
        let mut payload = vec![0u8; 16];
        let text = b"Invalid values in header\0";
        let len = (4 + text.len()) as u16;
        payload.extend_from_slice(&len.to_ne_bytes());
        payload.extend_from_slice(&1u16.to_ne_bytes());
        payload.extend_from_slice(text);
        assert_eq!(
            ext_ack_message(0x100 | 0x200, &payload).as_deref(),
            Some("Invalid values in header")
        );
        assert_eq!(ext_ack_message(0x100, &payload), None);
        assert_eq!(ext_ack_message(0x300, &payload[..10]), None);
    }

    #[test]
    fn link_local_detection() {
        assert!(is_unicast_link_local(&"fe80::1".parse().unwrap()));
        assert!(!is_unicast_link_local(&"2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn errors_name_what_failed() {
        let e = NextHopError::Kernel {
            request: "RTM_GETROUTE for 192.0.2.1".into(),
            source: io::Error::from_raw_os_error(libc::ENETUNREACH),
            detail: Some("no route".into()),
        };
        let text = e.to_string();
        assert!(text.contains("RTM_GETROUTE for 192.0.2.1"), "{text}");
        assert!(text.contains("(no route)"), "{text}");
        assert_eq!(e.kernel_errno(), Some(libc::ENETUNREACH));
    }
}
