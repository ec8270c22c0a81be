//! One AF_XDP socket bound to (interface, queue), with its own fill and completion rings
//! (also when it shares its UMEM with sockets on other interfaces).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::ring::Ring;
use super::umem::{Umem, UmemFrame};

/// How to bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// Try zero-copy, fall back to copy mode (veth supports only copy).
    Auto,
    Copy,
    ZeroCopy,
}

/// A received packet: the frame and where the packet lies in it.
#[derive(Debug)]
pub struct RxPacket {
    pub frame: UmemFrame,
    pub offset: usize,
    pub len: usize,
}

/// The kernel's per-socket counters (XDP_STATISTICS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

pub struct XskSocket {
    fd: OwnedFd,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    zero_copy: bool,
    ifindex: u32,
    queue: u32,
    umem_len: usize,
    frame_size: u32,
}

fn setsockopt<T>(fd: RawFd, opt: i32, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live T of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ctx(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl XskSocket {
    /// Bind a socket to (`ifindex`, `queue`) over `umem`. The first socket of a UMEM
    /// (`shared_with = None`) registers it; later ones pass that socket to share it.
    pub fn bind(
        umem: &Umem,
        ifindex: u32,
        queue: u32,
        mode: BindMode,
        ring_size: u32,
        shared_with: Option<&XskSocket>,
    ) -> io::Result<XskSocket> {
        match (mode, shared_with) {
            (BindMode::Auto, None) => {
                match Self::bind_once(umem, ifindex, queue, true, ring_size, None) {
                    Ok(s) => Ok(s),
                    Err(_) => Self::bind_once(umem, ifindex, queue, false, ring_size, None),
                }
            }
            (BindMode::ZeroCopy, None) => {
                Self::bind_once(umem, ifindex, queue, true, ring_size, None)
            }
            (_, None) => Self::bind_once(umem, ifindex, queue, false, ring_size, None),
            // A socket sharing a UMEM inherits the owner's copy/zero-copy mode.
            (_, Some(owner)) => Self::bind_once(
                umem,
                ifindex,
                queue,
                owner.zero_copy,
                ring_size,
                Some(owner),
            ),
        }
    }

    fn bind_once(
        umem: &Umem,
        ifindex: u32,
        queue: u32,
        zero_copy: bool,
        ring_size: u32,
        owner: Option<&XskSocket>,
    ) -> io::Result<XskSocket> {
        if !ring_size.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring size must be a power of two",
            ));
        }
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(ctx(io::Error::last_os_error(), "socket(AF_XDP)"));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if owner.is_none() {
            let reg = libc::xdp_umem_reg {
                addr: umem.base() as u64,
                len: umem.len() as u64,
                chunk_size: umem.frame_size(),
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            setsockopt(raw, libc::XDP_UMEM_REG, &reg).map_err(|e| ctx(e, "XDP_UMEM_REG"))?;
        }
        setsockopt(raw, libc::XDP_UMEM_FILL_RING, &ring_size).map_err(|e| ctx(e, "fill ring"))?;
        setsockopt(raw, libc::XDP_UMEM_COMPLETION_RING, &ring_size)
            .map_err(|e| ctx(e, "completion ring"))?;
        setsockopt(raw, libc::XDP_RX_RING, &ring_size).map_err(|e| ctx(e, "rx ring"))?;
        setsockopt(raw, libc::XDP_TX_RING, &ring_size).map_err(|e| ctx(e, "tx ring"))?;

        // SAFETY: xdp_mmap_offsets is plain data; zeroed is a valid value.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` and `optlen` are live and sized as passed.
        let r = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut optlen,
            )
        };
        if r != 0 {
            return Err(ctx(io::Error::last_os_error(), "XDP_MMAP_OFFSETS"));
        }
        let rx = Ring::map(raw, &off.rx, ring_size, libc::XDP_PGOFF_RX_RING as u64)
            .map_err(|e| ctx(e, "mmap rx"))?;
        let tx = Ring::map(raw, &off.tx, ring_size, libc::XDP_PGOFF_TX_RING as u64)
            .map_err(|e| ctx(e, "mmap tx"))?;
        let fill = Ring::map(raw, &off.fr, ring_size, libc::XDP_UMEM_PGOFF_FILL_RING)
            .map_err(|e| ctx(e, "mmap fill"))?;
        let comp = Ring::map(
            raw,
            &off.cr,
            ring_size,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )
        .map_err(|e| ctx(e, "mmap completion"))?;

        let flags = match owner {
            // Flags are inherited from the owner; the kernel refuses them here.
            Some(_) => libc::XDP_SHARED_UMEM,
            None if zero_copy => libc::XDP_ZEROCOPY | libc::XDP_USE_NEED_WAKEUP,
            None => libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP,
        };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: owner.map_or(0, |o| o.fd.as_raw_fd() as u32),
        };
        // SAFETY: `sa` is a live sockaddr_xdp of the size passed.
        let r = unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r != 0 {
            let what = format!(
                "bind AF_XDP to ifindex {ifindex} queue {queue} ({})",
                if owner.is_some() {
                    "shared UMEM"
                } else if zero_copy {
                    "zero-copy"
                } else {
                    "copy mode"
                }
            );
            return Err(ctx(io::Error::last_os_error(), &what));
        }
        Ok(XskSocket {
            fd,
            rx,
            tx,
            fill,
            comp,
            zero_copy,
            ifindex,
            queue,
            umem_len: umem.len(),
            frame_size: umem.frame_size(),
        })
    }

    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Give frames to the kernel for receiving; returns those that did not fit.
    pub fn fill(&mut self, frames: &mut Vec<UmemFrame>, max: usize) {
        let n = self.fill.free(max as u32).min(max as u32) as usize;
        let n = n.min(frames.len());
        for _ in 0..n {
            let f = frames.pop().expect("n <= len");
            // The token is consumed: the kernel owns the frame until it comes back.
            self.fill.push(f.into_addr());
        }
        if n > 0 {
            self.fill.commit();
        }
    }

    /// Receive up to `max` packets into `out`.
    pub fn recv(&mut self, umem: &Umem, out: &mut Vec<RxPacket>, max: usize) -> usize {
        let n = (self.rx.available() as usize).min(max);
        for _ in 0..n {
            let d = self.rx.pop();
            if d.addr as usize >= self.umem_len {
                continue; // never expected from the kernel; skip rather than alias
            }
            if let Some(frame) = umem.frame_at(d.addr) {
                let offset = (d.addr - frame.addr()) as usize;
                let len = (d.len as usize).min(self.frame_size as usize - offset);
                out.push(RxPacket { frame, offset, len });
            }
        }
        if n > 0 {
            self.rx.release();
        }
        n
    }

    /// Packets waiting in the rx ring now.
    pub fn rx_pending(&mut self) -> usize {
        self.rx.pending() as usize
    }

    /// Free tx slots.
    pub fn tx_free(&mut self, want: usize) -> usize {
        self.tx.free(want as u32) as usize
    }

    /// Queue a packet for transmit (published by `tx_commit`). The caller checked `tx_free`.
    pub fn tx_push(&mut self, frame: UmemFrame, offset: usize, len: usize) {
        // The token is consumed: the kernel owns the frame until it shows up on the
        // completion ring.
        self.tx.push(libc::xdp_desc {
            addr: frame.into_addr() + offset as u64,
            len: len as u32,
            options: 0,
        });
    }

    /// Publish queued packets and kick the kernel if it asks (always needed in copy mode).
    /// In copy mode one kick sends at most 32 packets (the kernel's TX_BATCH_SIZE), so we
    /// kick until the ring is drained or the kernel stops making progress.
    pub fn tx_commit(&mut self) {
        self.tx.commit();
        if self.zero_copy && !self.tx.needs_wakeup() {
            return;
        }
        let mut left = self.tx.unconsumed();
        for _ in 0..16 {
            // SAFETY: a zero-length sendto on our own socket: the documented AF_XDP kick.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            let now = self.tx.unconsumed();
            if now == 0 || (r < 0 && now == left) {
                break;
            }
            left = now;
        }
    }

    /// Take back frames whose transmission completed.
    pub fn complete(&mut self, umem: &Umem, out: &mut Vec<UmemFrame>, max: usize) -> usize {
        let n = (self.comp.available() as usize).min(max);
        for _ in 0..n {
            let addr = self.comp.pop();
            if let Some(f) = umem.frame_at(addr) {
                out.push(f);
            }
        }
        if n > 0 {
            self.comp.release();
        }
        n
    }

    /// True when the kernel wants a wakeup to keep filling the rx ring.
    pub fn fill_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    /// The kernel's counters for this socket.
    pub fn stats(&self) -> io::Result<XskStats> {
        // SAFETY: xdp_statistics is plain data; zeroed is valid.
        let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `s` and `len` are live and sized as passed.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut s as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(XskStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Wait until one of `fds` is readable or `timeout_ms` passes (idle workers block here
/// instead of spinning, so a quiet dataplane leaves the CPU to others).
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) {
    let mut p = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 8];
    let n = fds.len().min(p.len());
    for (slot, &fd) in p.iter_mut().zip(fds) {
        *slot = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
    }
    // SAFETY: `p` holds `n` initialised pollfd entries.
    unsafe { libc::poll(p.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
}
