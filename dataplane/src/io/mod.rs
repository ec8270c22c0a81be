//! Packet I/O: the worker's I/O boundary and what implements it.
//!
//! A worker has two sides ([`Side`]: outside, inside) and moves batches of frames in and out
//! through [`WorkerIo`]. AF_XDP implements it for real traffic ([`afxdp_io`], over the
//! sockets and UMEM of [`afxdp`], steered by the XDP program loaded in [`xdp`]); [`MemIo`]
//! implements it in memory for tests and the pipeline benchmark, behind the same worker loop.
//! Every `mmap` of the dataplane (AF_XDP rings and UMEM, the shared-memory files) is a
//! [`mapping::Mapping`].

#[allow(unsafe_code)]
pub mod afxdp;
pub mod afxdp_io;
#[allow(unsafe_code)]
pub mod mapping;
pub mod mem;
pub mod xdp;

pub use mem::MemIo;
pub use xdp::Side;

use crate::esp::Frame;

/// What a worker needs from its ports.
pub trait WorkerIo {
    type Buf: AsRef<[u8]> + AsMut<[u8]>;

    /// Receive up to `max` frames from `side` into `out`.
    fn recv(&mut self, side: Side, out: &mut Vec<Frame<Self::Buf>>, max: usize);
    /// Queue a frame for transmission on `side`. Returns it if the queue is full.
    fn send(&mut self, side: Side, f: Frame<Self::Buf>) -> Result<(), Frame<Self::Buf>>;
    /// Return the buffer of a dropped packet for reuse.
    fn recycle(&mut self, buf: Self::Buf);
    /// Publish queued transmissions, reap completions, refill receive rings.
    fn flush(&mut self);
    /// Nothing to do: block briefly (or return at once for in-memory I/O).
    fn idle(&mut self);
    /// Packets still waiting on `side`'s receive rings after the last `recv` (what the
    /// worker's AQM watches; 0 where the I/O has no rings).
    fn rx_backlog(&mut self, _side: Side) -> usize {
        0
    }
}
