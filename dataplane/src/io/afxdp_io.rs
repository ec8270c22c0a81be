//! [`WorkerIo`] over AF_XDP: one UMEM per worker, shared by the worker's sockets on both
//! interfaces, so a frame received on one side is transmitted on the other in place.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use super::WorkerIo;
use crate::esp::Frame;
use crate::io::afxdp::{poll_readable, BindMode, RxPacket, Umem, UmemFrame, XskSocket};
use crate::io::Side;

/// Sizes of a worker's UMEM and rings.
#[derive(Debug, Clone, Copy)]
pub struct AfXdpConfig {
    pub frames: u32,
    pub frame_size: u32,
    pub ring_size: u32,
    pub bind: BindMode,
}

impl Default for AfXdpConfig {
    fn default() -> Self {
        AfXdpConfig {
            frames: 4096,
            frame_size: 2048,
            ring_size: 1024,
            bind: BindMode::Auto,
        }
    }
}

pub struct AfXdpIo {
    umem: Umem,
    /// Sockets per side (index 0 outside, 1 inside), one per queue this worker owns.
    sockets: [Vec<XskSocket>; 2],
    free: Vec<UmemFrame>,
    rx_tmp: Vec<RxPacket>,
    tx_dirty: [bool; 2],
    /// The socket of each side `recv` starts at, rotating, so one busy queue cannot
    /// starve the others of a worker.
    rx_next: [usize; 2],
    fds: Vec<RawFd>,
    /// Frames we could not give back to any fill ring (diagnostics).
    pub zero_copy: bool,
}

fn idx(s: Side) -> usize {
    match s {
        Side::Outside => 0,
        Side::Inside => 1,
    }
}

impl AfXdpIo {
    /// Bind sockets on `queues` of both interfaces (ifindex per side) over one new UMEM.
    pub fn new(cfg: AfXdpConfig, ifindex: [u32; 2], queues: [&[u32]; 2]) -> io::Result<AfXdpIo> {
        let mut umem = Umem::new(cfg.frames, cfg.frame_size)?;
        if queues[0].is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a worker needs at least one outside queue",
            ));
        }
        let mut sockets: [Vec<XskSocket>; 2] = [Vec::new(), Vec::new()];
        for side in 0..2 {
            for &q in queues[side] {
                // The first socket (outside, first queue) registers the UMEM; the others share it.
                let s = XskSocket::bind(
                    &umem,
                    ifindex[side],
                    q,
                    cfg.bind,
                    cfg.ring_size,
                    sockets[0].first(),
                )?;
                sockets[side].push(s);
            }
        }
        let zero_copy = sockets[0][0].is_zero_copy();
        let free = umem.take_frames();
        let fds = sockets.iter().flatten().map(|s| s.as_raw_fd()).collect();
        let mut io = AfXdpIo {
            umem,
            sockets,
            free,
            rx_tmp: Vec::with_capacity(256),
            tx_dirty: [false; 2],
            rx_next: [0; 2],
            fds,
            zero_copy,
        };
        io.refill();
        Ok(io)
    }

    pub fn sockets(&self, side: Side) -> &[XskSocket] {
        &self.sockets[idx(side)]
    }

    /// Spread free frames over the fill rings, keeping some back for other sockets.
    fn refill(&mut self) {
        let n = self.sockets.iter().map(Vec::len).sum::<usize>().max(1);
        for s in self.sockets.iter_mut().flatten() {
            let share = self.free.len() / n + 1;
            s.fill(&mut self.free, share);
        }
    }
}

impl WorkerIo for AfXdpIo {
    type Buf = UmemFrame;

    fn recv(&mut self, side: Side, out: &mut Vec<Frame<UmemFrame>>, max: usize) {
        let socks = &mut self.sockets[idx(side)];
        let k = socks.len();
        let start = self.rx_next[idx(side)] % k.max(1);
        self.rx_next[idx(side)] = start + 1;
        for i in 0..k {
            if out.len() >= max {
                break;
            }
            let s = &mut socks[(start + i) % k];
            s.recv(&self.umem, &mut self.rx_tmp, max - out.len());
            for p in self.rx_tmp.drain(..) {
                // `new` cannot fail here: the socket clamps the length to the frame.
                if let Some(f) = Frame::new(p.frame, p.offset, p.len) {
                    out.push(f);
                }
            }
        }
    }

    fn send(&mut self, side: Side, f: Frame<UmemFrame>) -> Result<(), Frame<UmemFrame>> {
        let Some(s) = self.sockets[idx(side)].first_mut() else {
            return Err(f);
        };
        if s.tx_free(1) == 0 {
            s.complete(&self.umem, &mut self.free, 256);
            if s.tx_free(1) == 0 {
                return Err(f);
            }
        }
        let (head, len) = (f.head(), f.len());
        s.tx_push(f.into_buffer(), head, len);
        self.tx_dirty[idx(side)] = true;
        Ok(())
    }

    fn recycle(&mut self, buf: UmemFrame) {
        self.free.push(buf);
    }

    fn flush(&mut self) {
        for side in 0..2 {
            if std::mem::take(&mut self.tx_dirty[side]) {
                if let Some(s) = self.sockets[side].first_mut() {
                    s.tx_commit();
                }
            }
        }
        for s in self.sockets.iter_mut().flatten() {
            s.complete(&self.umem, &mut self.free, 1024);
        }
        self.refill();
    }

    fn idle(&mut self) {
        poll_readable(&self.fds, 5);
    }

    fn rx_backlog(&mut self, side: Side) -> usize {
        self.sockets[idx(side)]
            .iter_mut()
            .map(|s| s.rx_pending())
            .sum()
    }
}
