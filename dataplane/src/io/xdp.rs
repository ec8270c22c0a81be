//! The XDP program (`ebpf/xdp_vpn.bpf.c`, built by `build.rs`), loaded and attached with aya.
//!
//! The attachment is a bpf_link owned by this process: it goes away when the process exits,
//! even on SIGKILL, so a crashed dataplane never leaves a program steering packets into
//! sockets nobody reads.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;

/// The compiled program, embedded at build time.
pub static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xdp_vpn.bpf.o"));

/// Must match `MAX_QUEUES` and `enum verdict` in the C program.
pub const MAX_QUEUES: u32 = 64;

/// Which interface a program or socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The WAN side: ESP in, ESP out.
    Outside,
    /// The LAN side: clear traffic in and out.
    Inside,
}

impl Side {
    fn program(self) -> &'static str {
        match self {
            Side::Outside => "xdp_outside",
            Side::Inside => "xdp_inside",
        }
    }
    fn xsk_map(self) -> &'static str {
        match self {
            Side::Outside => "xsks_outside",
            Side::Inside => "xsks_inside",
        }
    }
    fn index(self) -> u32 {
        match self {
            Side::Outside => 0,
            Side::Inside => 1,
        }
    }
}

/// What the XDP program did with a packet. Must match `enum verdict` in the C program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdpVerdict {
    Esp,
    EspInUdp,
    Ike,
    Pass,
    Protected,
    NoSocket,
    Malformed,
}

impl XdpVerdict {
    pub const ALL: [XdpVerdict; 7] = [
        XdpVerdict::Esp,
        XdpVerdict::EspInUdp,
        XdpVerdict::Ike,
        XdpVerdict::Pass,
        XdpVerdict::Protected,
        XdpVerdict::NoSocket,
        XdpVerdict::Malformed,
    ];
    pub fn name(self) -> &'static str {
        match self {
            XdpVerdict::Esp => "esp_to_socket",
            XdpVerdict::EspInUdp => "esp_in_udp_to_socket",
            XdpVerdict::Ike => "ike_to_kernel",
            XdpVerdict::Pass => "to_kernel",
            XdpVerdict::Protected => "protected_to_socket",
            XdpVerdict::NoSocket => "no_socket_to_kernel",
            XdpVerdict::Malformed => "malformed_to_kernel",
        }
    }
}

/// How to attach: native (driver) XDP, or generic (skb) XDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    Driver,
    Skb,
}

/// Why the XDP program could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpError {
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program {0}: {1}")]
    Program(&'static str, #[source] aya::programs::ProgramError),
    #[error("attaching XDP to {ifname} in {mode:?} mode: {source}")]
    Attach {
        ifname: String,
        mode: AttachMode,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("BPF map {0}: {1}")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("BPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("queue {0} is beyond the program's {MAX_QUEUES} queues")]
    Queue(u32),
}

/// The loaded program and its maps.
pub struct XdpSteering {
    ebpf: Ebpf,
    loaded: [bool; 2],
}

impl XdpSteering {
    /// Load the object into the kernel (programs are verified on first attach).
    pub fn load() -> Result<XdpSteering, XdpError> {
        Ok(XdpSteering {
            ebpf: Ebpf::load(PROGRAM)?,
            loaded: [false; 2],
        })
    }

    /// Attach `side`'s program to `ifname`. Held until `self` is dropped or the process exits.
    pub fn attach(&mut self, side: Side, ifname: &str, mode: AttachMode) -> Result<(), XdpError> {
        let name = side.program();
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or(XdpError::MissingMap(name))?
            .try_into()
            .map_err(|e| XdpError::Program(name, e))?;
        if !self.loaded[side.index() as usize] {
            prog.load().map_err(|e| XdpError::Program(name, e))?;
            self.loaded[side.index() as usize] = true;
        }
        let flags = match mode {
            AttachMode::Driver => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        };
        prog.attach(ifname, flags)
            .map_err(|source| XdpError::Attach {
                ifname: ifname.to_string(),
                mode,
                source,
            })?;
        Ok(())
    }

    /// Steer `side`'s packets received on `queue` to the AF_XDP socket `fd`.
    pub fn register_socket(
        &mut self,
        side: Side,
        queue: u32,
        fd: &impl AsRawFd,
    ) -> Result<(), XdpError> {
        if queue >= MAX_QUEUES {
            return Err(XdpError::Queue(queue));
        }
        let name = side.xsk_map();
        let map = self.ebpf.map_mut(name).ok_or(XdpError::MissingMap(name))?;
        let mut xsks = XskMap::try_from(map).map_err(|e| XdpError::Map(name, e))?;
        xsks.set(queue, fd.as_raw_fd(), 0)
            .map_err(|e| XdpError::Map(name, e))
    }

    /// Mark `addr/prefix_len` as protected: the inside program sends it to the dataplane.
    pub fn add_protected(&mut self, addr: IpAddr, prefix_len: u8) -> Result<(), XdpError> {
        match addr {
            IpAddr::V4(a) => {
                let name = "protected_v4";
                let map = self.ebpf.map_mut(name).ok_or(XdpError::MissingMap(name))?;
                let mut trie: LpmTrie<_, [u8; 4], u32> =
                    LpmTrie::try_from(map).map_err(|e| XdpError::Map(name, e))?;
                trie.insert(&Key::new(u32::from(prefix_len.min(32)), a.octets()), 1, 0)
                    .map_err(|e| XdpError::Map(name, e))
            }
            IpAddr::V6(a) => {
                let name = "protected_v6";
                let map = self.ebpf.map_mut(name).ok_or(XdpError::MissingMap(name))?;
                let mut trie: LpmTrie<_, [u8; 16], u32> =
                    LpmTrie::try_from(map).map_err(|e| XdpError::Map(name, e))?;
                trie.insert(&Key::new(u32::from(prefix_len.min(128)), a.octets()), 1, 0)
                    .map_err(|e| XdpError::Map(name, e))
            }
        }
    }

    /// Stop steering `addr/prefix_len` (the last policy with that destination went away).
    pub fn remove_protected(&mut self, addr: IpAddr, prefix_len: u8) -> Result<(), XdpError> {
        match addr {
            IpAddr::V4(a) => {
                let name = "protected_v4";
                let map = self.ebpf.map_mut(name).ok_or(XdpError::MissingMap(name))?;
                let mut trie: LpmTrie<_, [u8; 4], u32> =
                    LpmTrie::try_from(map).map_err(|e| XdpError::Map(name, e))?;
                trie.remove(&Key::new(u32::from(prefix_len.min(32)), a.octets()))
                    .map_err(|e| XdpError::Map(name, e))
            }
            IpAddr::V6(a) => {
                let name = "protected_v6";
                let map = self.ebpf.map_mut(name).ok_or(XdpError::MissingMap(name))?;
                let mut trie: LpmTrie<_, [u8; 16], u32> =
                    LpmTrie::try_from(map).map_err(|e| XdpError::Map(name, e))?;
                trie.remove(&Key::new(u32::from(prefix_len.min(128)), a.octets()))
                    .map_err(|e| XdpError::Map(name, e))
            }
        }
    }

    /// The counter for (side, queue, verdict), summed over CPUs.
    pub fn counter(&self, side: Side, queue: u32, verdict: XdpVerdict) -> Result<u64, XdpError> {
        let name = "stats";
        let map = self.ebpf.map(name).ok_or(XdpError::MissingMap(name))?;
        let stats: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| XdpError::Map(name, e))?;
        let n = XdpVerdict::ALL.len() as u32;
        let key = (side.index() * MAX_QUEUES + queue % MAX_QUEUES) * n + verdict as u32;
        let per_cpu = stats.get(&key, 0).map_err(|e| XdpError::Map(name, e))?;
        Ok(per_cpu.iter().sum())
    }

    /// Sum of a verdict over the first `queues` queues of a side.
    pub fn total(&self, side: Side, queues: u32, verdict: XdpVerdict) -> Result<u64, XdpError> {
        (0..queues).map(|q| self.counter(side, q, verdict)).sum()
    }
}

impl crate::control::install::Steering for XdpSteering {
    fn add(&mut self, (addr, len): (IpAddr, u8)) -> Result<(), String> {
        self.add_protected(addr, len).map_err(|e| e.to_string())
    }
    fn remove(&mut self, (addr, len): (IpAddr, u8)) -> Result<(), String> {
        self.remove_protected(addr, len).map_err(|e| e.to_string())
    }
}
