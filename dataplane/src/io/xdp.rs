//! The XDP program (`ebpf/xdp_vpn.bpf.c`, built by `build.rs`), loaded and attached with aya.
//!
//! # Fail-closed across restarts: the pins
//!
//! The attachments are bpf_links, and a link owned by a process goes when the process goes
//! (even on SIGKILL): the kernel would then forward the traffic between the protected
//! networks in clear. So the links and the maps that matter are pinned in bpffs, in one
//! directory per dataplane instance (default [`default_pin_dir`]:
//! `/sys/fs/bpf/xdp-ipsec/<inside-ifname>`, or `--pin-dir`):
//!
//! ```text
//! <pin-dir>/link_outside   bpf_link: xdp_outside on the WAN interface
//! <pin-dir>/link_inside    bpf_link: xdp_inside on the LAN interface
//! <pin-dir>/protected_v4   LPM trie: the protected IPv4 destination prefixes
//! <pin-dir>/protected_v6   LPM trie: the protected IPv6 destination prefixes
//! <pin-dir>/stats          per-CPU counters per side, queue and verdict
//! <pin-dir>/config         fail-open flag and who owns the pins (netns, ifindexes, mode)
//! ```
//!
//! The XSKMAPs are not pinned: a socket leaves its map when its process dies, so the old
//! program finds no socket and `xdp_inside` DROPS protected packets (counted as
//! [`XdpVerdict::NoSocketDrop`]) until a new dataplane is up, unless `--fail-open` set the
//! config map. A new dataplane reuses the pinned maps (so the prefixes stay protected and the
//! counters continue) and swaps its freshly loaded program into the pinned links with
//! `bpf_link_update` (atomic: there is never a moment without a program). A clean stop keeps
//! the pins; [`XdpSteering::detach_pinned`] (`dataplane --detach`) removes them on purpose.
//!
//! bpffs is mounted on `/sys/fs/bpf` if it is not there. A bpffs mount made inside a private
//! mount namespace (`ip netns exec` remounts `/sys`) dies with that namespace, and the pins
//! with it: run the dataplane in the host's mount namespace, or mount a bpffs there and pass
//! a `--pin-dir` on it (the namespace tests do).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, MapData, MapType, PerCpuArray, XskMap};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use tracing::{info, warn};

/// The compiled program, embedded at build time.
pub static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xdp_vpn.bpf.o"));

/// Must match `MAX_QUEUES` in the C program.
pub const MAX_QUEUES: u32 = 64;
/// Counter slots per (side, queue): `VERDICT_SLOTS` in the C program.
pub const VERDICT_SLOTS: u32 = 16;

/// Where the pins go by default: one directory per inside interface.
pub fn default_pin_dir(inside_ifname: &str) -> PathBuf {
    Path::new("/sys/fs/bpf/xdp-ipsec").join(inside_ifname)
}

/// `enum config_index` in the C program.
mod cfg {
    pub const FAIL_OPEN: u32 = 0;
    pub const NETNS: u32 = 1;
    pub const IFINDEX: [u32; 2] = [2, 3];
    pub const MODE: u32 = 4;
}

/// A pinned map and the layout this program needs it to have (the C definitions).
struct PinnedMapSpec {
    name: &'static str,
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    /// Holds state that must not be lost (the protected prefixes): a pin with another
    /// layout is refused rather than replaced.
    precious: bool,
}

const PINNED_MAPS: [PinnedMapSpec; 4] = [
    PinnedMapSpec {
        name: "protected_v4",
        map_type: MapType::LpmTrie,
        key_size: 8,
        value_size: 4,
        max_entries: 1 << 18,
        precious: true,
    },
    PinnedMapSpec {
        name: "protected_v6",
        map_type: MapType::LpmTrie,
        key_size: 20,
        value_size: 4,
        max_entries: 1 << 18,
        precious: true,
    },
    PinnedMapSpec {
        name: "stats",
        map_type: MapType::PerCpuArray,
        key_size: 4,
        value_size: 8,
        max_entries: MAX_QUEUES * VERDICT_SLOTS * 2,
        precious: false,
    },
    PinnedMapSpec {
        name: "config",
        map_type: MapType::Array,
        key_size: 4,
        value_size: 8,
        max_entries: 8,
        precious: false,
    },
];

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
    fn link_pin(self) -> &'static str {
        match self {
            Side::Outside => "link_outside",
            Side::Inside => "link_inside",
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
    /// Inside: a protected destination while no socket serves the queue (the dataplane is
    /// down or restarting): dropped, fail-closed.
    NoSocketDrop,
    /// Outside: more IPv6 extension headers than the program walks: to the kernel.
    ExtHeaderLimit,
}

impl XdpVerdict {
    pub const ALL: [XdpVerdict; 9] = [
        XdpVerdict::Esp,
        XdpVerdict::EspInUdp,
        XdpVerdict::Ike,
        XdpVerdict::Pass,
        XdpVerdict::Protected,
        XdpVerdict::NoSocket,
        XdpVerdict::Malformed,
        XdpVerdict::NoSocketDrop,
        XdpVerdict::ExtHeaderLimit,
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
            XdpVerdict::NoSocketDrop => "no_socket_dropped",
            XdpVerdict::ExtHeaderLimit => "ipv6_ext_headers_beyond_limit_to_kernel",
        }
    }
}

/// How to attach: native (driver) XDP, or generic (skb) XDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    Driver,
    Skb,
}

impl AttachMode {
    /// As kept in the config map (0: nothing recorded).
    fn code(self) -> u64 {
        match self {
            AttachMode::Driver => 1,
            AttachMode::Skb => 2,
        }
    }
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
    #[error("{path}: {what}")]
    PinDir { path: PathBuf, what: String },
    #[error(
        "pinned map {path} has {found}, this dataplane needs {want}: it was left by another \
         version. Remove the pins with `dataplane --detach` (protected traffic then flows in \
         clear until a dataplane is up again) and start again"
    )]
    PinnedLayout {
        path: PathBuf,
        found: String,
        want: String,
    },
    #[error(
        "the pins in {path} belong to a dataplane in another network namespace (netns inode \
         {theirs}, ours {ours}): give this one its own --pin-dir"
    )]
    OtherNamespace {
        path: PathBuf,
        theirs: u64,
        ours: u64,
    },
    #[error(
        "XDP is attached to {ifname} in {was} mode by a previous run, and {now:?} mode was \
         asked: changing it would leave a moment without the program. Run `dataplane \
         --detach` first to change the mode"
    )]
    ModeChange {
        ifname: String,
        was: &'static str,
        now: AttachMode,
    },
    #[error("pinned XDP link {path}: {what}")]
    Link { path: PathBuf, what: String },
}

/// The loaded program and its maps.
pub struct XdpSteering {
    ebpf: Ebpf,
    loaded: [bool; 2],
    /// The pin directory, or `None` for a program that goes with the process.
    pins: Option<PathBuf>,
    /// Protected prefixes found in the pinned tries at start, not yet claimed by a policy
    /// of this process: kept protected (fail-closed) until [`INHERITED_GRACE`] after the
    /// controller flushes.
    inherited: BTreeSet<(IpAddr, u8)>,
    /// When the unclaimed inherited prefixes go (set by a Flush).
    release_at: Option<Instant>,
}

/// How long the prefixes a previous run left stay protected after the controller's Flush.
/// A controller replays by flushing and then adding what it wants: releasing at the Flush
/// would leave the prefixes unprotected (and forwarded in clear by the kernel) until the
/// adds arrive. The replay claims what is still wanted; the rest goes after this grace.
pub const INHERITED_GRACE: Duration = Duration::from_secs(5);

impl XdpSteering {
    /// Load the object into the kernel (programs are verified on first attach), unpinned:
    /// the attachments go with the process.
    pub fn load() -> Result<XdpSteering, XdpError> {
        Ok(XdpSteering {
            ebpf: Ebpf::load(PROGRAM)?,
            loaded: [false; 2],
            pins: None,
            inherited: BTreeSet::new(),
            release_at: None,
        })
    }

    /// Load the object with its maps pinned in `dir` (see the module docs): maps a previous
    /// run pinned there are reused, missing ones are created and pinned. bpffs is mounted on
    /// /sys/fs/bpf if `dir` is under it and it is not mounted. `fail_open` goes to the
    /// config map at once (the old program, still attached, reads it too).
    pub fn open_pinned(dir: &Path, fail_open: bool) -> Result<XdpSteering, XdpError> {
        let pin_err = |what: String| XdpError::PinDir {
            path: dir.to_path_buf(),
            what,
        };
        ensure_bpffs(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| pin_err(format!("creating it: {e}")))?;
        let ours = netns_inode().map_err(|e| pin_err(format!("/proc/self/ns/net: {e}")))?;
        for spec in &PINNED_MAPS {
            check_pinned_map(dir, spec)?;
        }
        if let Ok(m) = MapData::from_pin(dir.join("config")) {
            let config: Array<_, u64> = Array::try_from(aya::maps::Map::Array(m))
                .map_err(|e| XdpError::Map("config", e))?;
            let theirs = config.get(&cfg::NETNS, 0).unwrap_or(0);
            if theirs != 0 && theirs != ours {
                return Err(XdpError::OtherNamespace {
                    path: dir.to_path_buf(),
                    theirs,
                    ours,
                });
            }
        }
        let paths: Vec<(&'static str, PathBuf)> = PINNED_MAPS
            .iter()
            .map(|m| (m.name, dir.join(m.name)))
            .collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut x = XdpSteering {
            ebpf: loader.load(PROGRAM)?,
            loaded: [false; 2],
            pins: Some(dir.to_path_buf()),
            inherited: BTreeSet::new(),
            release_at: None,
        };
        x.inherited = x.protected_prefixes()?.into_iter().collect();
        x.set_config(cfg::NETNS, ours)?;
        x.set_config(cfg::FAIL_OPEN, u64::from(fail_open))?;
        Ok(x)
    }

    /// The pin directory, if pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_deref()
    }

    fn config(&self, index: u32) -> Result<u64, XdpError> {
        let map = self
            .ebpf
            .map("config")
            .ok_or(XdpError::MissingMap("config"))?;
        let a: Array<_, u64> = Array::try_from(map).map_err(|e| XdpError::Map("config", e))?;
        a.get(&index, 0).map_err(|e| XdpError::Map("config", e))
    }

    fn set_config(&mut self, index: u32, value: u64) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut("config")
            .ok_or(XdpError::MissingMap("config"))?;
        let mut a: Array<_, u64> = Array::try_from(map).map_err(|e| XdpError::Map("config", e))?;
        a.set(index, value, 0)
            .map_err(|e| XdpError::Map("config", e))
    }

    /// Whether the inside program passes protected packets to the kernel when no socket
    /// serves their queue (set by `--fail-open`; default false: it drops them).
    pub fn fail_open(&self) -> Result<bool, XdpError> {
        Ok(self.config(cfg::FAIL_OPEN)? != 0)
    }

    /// Attach `side`'s program to `ifname`. Unpinned: held until `self` is dropped or the
    /// process exits. Pinned: a link a previous run pinned for this interface gets this
    /// program swapped in atomically; otherwise a new link is made and pinned.
    pub fn attach(&mut self, side: Side, ifname: &str, mode: AttachMode) -> Result<(), XdpError> {
        let name = side.program();
        let pins = self.pins.clone();
        let (stored_if, stored_mode) = match &pins {
            Some(_) => (
                self.config(cfg::IFINDEX[side.index() as usize])?,
                self.config(cfg::MODE)?,
            ),
            None => (0, 0),
        };
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
        let attach_err = |source| XdpError::Attach {
            ifname: ifname.to_string(),
            mode,
            source,
        };
        let Some(dir) = pins else {
            prog.attach(ifname, flags).map_err(attach_err)?;
            return Ok(());
        };
        let link_path = dir.join(side.link_pin());
        let ifindex = ifindex_of(ifname).map_err(|what| XdpError::PinDir {
            path: link_path.clone(),
            what,
        })?;
        let link_err = |what: String| XdpError::Link {
            path: link_path.clone(),
            what,
        };
        let mut replaced = false;
        if link_path.exists() {
            if stored_if == u64::from(ifindex) {
                if stored_mode != 0 && stored_mode != mode.code() {
                    return Err(XdpError::ModeChange {
                        ifname: ifname.to_string(),
                        was: if stored_mode == AttachMode::Driver.code() {
                            "driver"
                        } else {
                            "skb"
                        },
                        now: mode,
                    });
                }
                let pinned =
                    PinnedLink::from_pin(&link_path).map_err(|e| link_err(e.to_string()))?;
                let link = XdpLink::try_from(FdLink::from(pinned))
                    .map_err(|e| link_err(format!("not an XDP link: {e}")))?;
                // bpf_link_update: the new program replaces the old one in place.
                match prog.attach_to_link(link) {
                    Ok(_) => replaced = true,
                    Err(e) => {
                        // ENOLINK: the interface the link served went away (the link is
                        // defunct). Nothing is attached there: start a new link.
                        warn!(link = %link_path.display(), "the pinned XDP link cannot take the new program ({e}); replacing the link");
                        std::fs::remove_file(&link_path).map_err(|e| link_err(e.to_string()))?;
                    }
                }
            } else {
                // A link for another (probably deleted) interface of that name.
                warn!(link = %link_path.display(), stored_ifindex = stored_if, ifindex, "the pinned XDP link was made for another interface; replacing it");
                std::fs::remove_file(&link_path).map_err(|e| link_err(e.to_string()))?;
            }
        }
        if !replaced {
            let id = prog.attach(ifname, flags).map_err(attach_err)?;
            let link = prog.take_link(id).map_err(|e| XdpError::Program(name, e))?;
            let fd_link = FdLink::try_from(link).map_err(|e| {
                link_err(format!(
                    "the kernel gave a netlink attachment, not a bpf_link, which cannot be pinned ({e})"
                ))
            })?;
            // Dropping the PinnedLink closes our fd; the pin keeps the link.
            fd_link
                .pin(&link_path)
                .map_err(|e| link_err(e.to_string()))?;
        }
        self.set_config(cfg::IFINDEX[side.index() as usize], u64::from(ifindex))?;
        self.set_config(cfg::MODE, mode.code())?;
        info!(
            side = ?side,
            ifname,
            link = %link_path.display(),
            "{}",
            if replaced {
                "XDP program swapped into the pinned link (no gap)"
            } else {
                "XDP attached and its link pinned"
            }
        );
        Ok(())
    }

    /// Remove the pins in `dir` (links and maps) and the directory: once no process holds
    /// them, the XDP programs leave both interfaces and the protected prefixes are gone.
    /// Returns the names of what was removed; a missing directory is not an error.
    pub fn detach_pinned(dir: &Path) -> Result<Vec<String>, XdpError> {
        let mut removed = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => {
                return Err(XdpError::PinDir {
                    path: dir.to_path_buf(),
                    what: e.to_string(),
                })
            }
        };
        for e in entries.flatten() {
            let p = e.path();
            std::fs::remove_file(&p).map_err(|err| XdpError::PinDir {
                path: p.clone(),
                what: format!("removing it: {err}"),
            })?;
            removed.push(e.file_name().to_string_lossy().into_owned());
        }
        std::fs::remove_dir(dir).map_err(|e| XdpError::PinDir {
            path: dir.to_path_buf(),
            what: format!("removing it: {e}"),
        })?;
        removed.sort();
        Ok(removed)
    }

    /// Every prefix in the protected tries now.
    pub fn protected_prefixes(&self) -> Result<Vec<(IpAddr, u8)>, XdpError> {
        let mut out = Vec::new();
        let name = "protected_v4";
        let map = self.ebpf.map(name).ok_or(XdpError::MissingMap(name))?;
        let trie: LpmTrie<_, [u8; 4], u32> =
            LpmTrie::try_from(map).map_err(|e| XdpError::Map(name, e))?;
        for k in trie.keys() {
            let k = k.map_err(|e| XdpError::Map(name, e))?;
            out.push((IpAddr::V4(Ipv4Addr::from(k.data())), k.prefix_len() as u8));
        }
        let name = "protected_v6";
        let map = self.ebpf.map(name).ok_or(XdpError::MissingMap(name))?;
        let trie: LpmTrie<_, [u8; 16], u32> =
            LpmTrie::try_from(map).map_err(|e| XdpError::Map(name, e))?;
        for k in trie.keys() {
            let k = k.map_err(|e| XdpError::Map(name, e))?;
            out.push((IpAddr::V6(Ipv6Addr::from(k.data())), k.prefix_len() as u8));
        }
        Ok(out)
    }

    /// Prefixes a previous run left protected that no policy of this process claimed yet.
    pub fn inherited(&self) -> impl Iterator<Item = &(IpAddr, u8)> {
        self.inherited.iter()
    }

    /// Release the inherited prefixes if the grace after a Flush is over (call it from the
    /// control loop). Returns how many were released.
    pub fn tick(&mut self, now: Instant) -> Result<usize, XdpError> {
        match self.release_at {
            Some(t) if now >= t => self.release_inherited(),
            _ => Ok(0),
        }
    }

    /// Stop protecting what a previous run left and no policy of ours claims: called when
    /// the control plane said what it wants (the grace after a Flush is over, or the static
    /// file was installed with no controller). Returns how many prefixes were released.
    pub fn release_inherited(&mut self) -> Result<usize, XdpError> {
        self.release_at = None;
        let old = std::mem::take(&mut self.inherited);
        for &(addr, len) in &old {
            self.remove_protected(addr, len)?;
        }
        if !old.is_empty() {
            info!(
                prefixes = ?old,
                "released protected prefixes left by a previous run that no policy claims"
            );
        }
        Ok(old.len())
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
        // A policy of ours claims it now: a Flush will remove it as the installer says.
        self.inherited.remove(&(addr, prefix_len));
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
        let key = (side.index() * MAX_QUEUES + queue % MAX_QUEUES) * VERDICT_SLOTS + verdict as u32;
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
    fn flushed(&mut self) -> Result<(), String> {
        if !self.inherited.is_empty() && self.release_at.is_none() {
            self.release_at = Some(Instant::now() + INHERITED_GRACE);
            info!(
                prefixes = self.inherited.len(),
                "the controller flushed: prefixes left by a previous run stay protected for {} s \
                 unless its policies claim them",
                INHERITED_GRACE.as_secs()
            );
        }
        Ok(())
    }
}

/// The interface index of `ifname` in this network namespace.
fn ifindex_of(ifname: &str) -> Result<u32, String> {
    let p = format!("/sys/class/net/{ifname}/ifindex");
    std::fs::read_to_string(&p)
        .map_err(|e| format!("{p}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("{p}: {e}"))
}

/// Identifies this network namespace (the pins must not serve two).
fn netns_inode() -> std::io::Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/net")?.ino())
}

/// The filesystem type of the mount that holds `path` (the longest mount point that is a
/// prefix of it), from /proc/self/mountinfo.
fn fs_type_of(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        // id parent major:minor root MOUNTPOINT options... - FSTYPE source super-options
        let mut parts = line.split(" - ");
        let (Some(pre), Some(post)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Some(mnt), Some(fstype)) = (pre.split(' ').nth(4), post.split(' ').next()) else {
            continue;
        };
        let mnt = mnt.replace("\\040", " ");
        if path.starts_with(&mnt) && best.as_ref().is_none_or(|(n, _)| mnt.len() >= *n) {
            best = Some((mnt.len(), fstype.to_string()));
        }
    }
    best.map(|(_, t)| t)
}

/// Make sure `dir` is on a bpffs, mounting one on /sys/fs/bpf if `dir` is under it.
fn ensure_bpffs(dir: &Path) -> Result<(), XdpError> {
    if fs_type_of(dir).as_deref() == Some("bpf") {
        return Ok(());
    }
    let root = Path::new("/sys/fs/bpf");
    if !dir.starts_with(root) {
        return Err(XdpError::PinDir {
            path: dir.to_path_buf(),
            what: "not on a BPF filesystem: mount one first (mount -t bpf bpf DIR)".into(),
        });
    }
    let out = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(root)
        .output()
        .map_err(|e| XdpError::PinDir {
            path: root.to_path_buf(),
            what: format!("running mount -t bpf: {e}"),
        })?;
    if !out.status.success() || fs_type_of(dir).as_deref() != Some("bpf") {
        return Err(XdpError::PinDir {
            path: root.to_path_buf(),
            what: format!(
                "mount -t bpf bpf {} failed: {}",
                root.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    warn!(
        "mounted bpffs on {}: the pins live as long as this mount. Under `ip netns exec` (a \
         private mount namespace) that is the life of this process; mount bpffs in the host \
         namespace and pass --pin-dir on it to stay fail-closed across restarts",
        root.display()
    );
    Ok(())
}

/// Refuse (precious maps) or remove (counters, config) a pinned map whose layout is not
/// the one this program defines; a missing pin is fine (it will be created).
fn check_pinned_map(dir: &Path, spec: &PinnedMapSpec) -> Result<(), XdpError> {
    let path = dir.join(spec.name);
    if !path.exists() {
        return Ok(());
    }
    let describe =
        |t: &str, k: u32, v: u32, n: u32| format!("type {t}, key {k} B, value {v} B, {n} entries");
    let want = describe(
        &format!("{:?}", spec.map_type),
        spec.key_size,
        spec.value_size,
        spec.max_entries,
    );
    let found = match MapData::from_pin(&path).and_then(|m| m.info()) {
        Ok(i) => {
            let t = i.map_type().ok();
            if t == Some(spec.map_type)
                && i.key_size() == spec.key_size
                && i.value_size() == spec.value_size
                && i.max_entries() == spec.max_entries
            {
                return Ok(());
            }
            describe(
                &t.map_or("unknown".into(), |t| format!("{t:?}")),
                i.key_size(),
                i.value_size(),
                i.max_entries(),
            )
        }
        Err(e) => format!("no readable map ({e})"),
    };
    if spec.precious {
        return Err(XdpError::PinnedLayout { path, found, want });
    }
    warn!(map = %path.display(), %found, %want, "pinned map has another layout; making a new one");
    std::fs::remove_file(&path).map_err(|e| XdpError::PinDir {
        path: path.clone(),
        what: format!("removing it: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pinned maps' layouts checked at start must be the ones the C program defines:
    /// a drift would refuse every restart (or, worse, accept a wrong map).
    #[test]
    fn pinned_map_specs_match_the_object() {
        let obj = aya_obj::Object::parse(PROGRAM).expect("the embedded object parses");
        for spec in &PINNED_MAPS {
            let m = obj
                .maps
                .get(spec.name)
                .unwrap_or_else(|| panic!("map {} missing from the object", spec.name));
            assert_eq!(m.map_type(), spec.map_type as u32, "{} type", spec.name);
            assert_eq!(m.key_size(), spec.key_size, "{} key size", spec.name);
            assert_eq!(m.value_size(), spec.value_size, "{} value size", spec.name);
            assert_eq!(m.max_entries(), spec.max_entries, "{} entries", spec.name);
        }
        // The XSKMAPs are not pinned: sockets leave them when their process dies.
        for name in ["xsks_outside", "xsks_inside"] {
            assert!(obj.maps.contains_key(name), "{name}");
            assert!(!PINNED_MAPS.iter().any(|m| m.name == name), "{name}");
        }
    }

    #[test]
    fn verdicts_fit_the_counter_slots_and_have_distinct_names() {
        assert!(XdpVerdict::ALL.len() as u32 <= VERDICT_SLOTS);
        let names: BTreeSet<_> = XdpVerdict::ALL.iter().map(|v| v.name()).collect();
        assert_eq!(names.len(), XdpVerdict::ALL.len());
        for (i, v) in XdpVerdict::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i, "ALL is in `enum verdict` order");
        }
        assert_eq!(XdpVerdict::NoSocketDrop as u32, 7);
        assert_eq!(XdpVerdict::ExtHeaderLimit as u32, 8);
    }

    #[test]
    fn default_pin_dir_is_per_inside_interface() {
        assert_eq!(
            default_pin_dir("lan0"),
            PathBuf::from("/sys/fs/bpf/xdp-ipsec/lan0")
        );
    }

    #[test]
    fn mount_lookup_takes_the_longest_prefix() {
        // /proc is procfs wherever these tests run.
        assert_eq!(fs_type_of(Path::new("/proc/self")).as_deref(), Some("proc"));
    }
}
