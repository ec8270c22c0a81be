//! AF_XDP sockets: UMEM, the four rings, batched receive and transmit.
//!
//! Our own small layer on `libc` rather than a crate: xsk-rs builds C libxdp (and wants its
//! own XDP program out of the way), xdpilone is EUPL-licensed, and the `xdp` crate lacks shared
//! UMEM across interfaces — which is what lets a worker receive a packet on the inside
//! interface, encrypt it in place and transmit the same frame on the outside one.
//!
//! This module and the shared-memory ring are the only places with `unsafe`; each block says
//! why it is sound. The rest of the dataplane sees frames as [`UmemFrame`] tokens that own
//! their bytes: a token exists only while userspace owns the frame (taken from the rx or
//! completion ring or the initial free list) and is consumed when the frame is handed to the
//! kernel (fill or tx ring), so safe code can never touch memory the kernel is writing.

mod ring;
mod socket;
mod umem;

pub use socket::{poll_readable, BindMode, RxPacket, XskSocket, XskStats};
pub use umem::{Umem, UmemFrame};

/// `XDP_PACKET_HEADROOM`: the kernel puts received packets this far into a frame.
pub const XDP_PACKET_HEADROOM: usize = 256;
