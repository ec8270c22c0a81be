//! The UMEM: one anonymous mapping cut into fixed-size frames, and the frame token.

use std::io;
use std::ptr::NonNull;

use crate::io::mapping::Mapping;

/// A UMEM area. Never unmapped: frame tokens point into it and may outlive any owner object;
/// a dataplane creates its UMEMs once at start, so the "leak" is bounded and intentional.
#[derive(Debug)]
pub struct Umem {
    base: NonNull<u8>,
    len: usize,
    frame_size: u32,
    frame_count: u32,
    frames_taken: bool,
}

// SAFETY: the area is plain memory; access to any frame goes through a unique `UmemFrame`
// token, so sharing the (immutable) descriptor of the area between threads is sound.
unsafe impl Send for Umem {}
// SAFETY: as above; `Umem`'s own fields are immutable after creation except `frames_taken`,
// which needs `&mut self`.
unsafe impl Sync for Umem {}

impl Umem {
    /// Map `frame_count` frames of `frame_size` bytes (a power of two, 2048 or 4096).
    pub fn new(frame_count: u32, frame_size: u32) -> io::Result<Umem> {
        if !frame_size.is_power_of_two() || !(2048..=4096).contains(&frame_size) || frame_count == 0
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame size must be 2048 or 4096",
            ));
        }
        let len = frame_count as usize * frame_size as usize;
        Ok(Umem {
            base: Mapping::anonymous(len)?.leak(),
            len,
            frame_size,
            frame_count,
            frames_taken: false,
        })
    }

    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }
    pub fn frame_count(&self) -> u32 {
        self.frame_count
    }
    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every frame, once: the initial free list. Later calls return nothing (a second set
    /// of tokens would alias the first).
    pub fn take_frames(&mut self) -> Vec<UmemFrame> {
        if self.frames_taken {
            return Vec::new();
        }
        self.frames_taken = true;
        (0..self.frame_count)
            .map(|i| u64::from(i) * u64::from(self.frame_size))
            .map(|addr| self.token(addr))
            .collect()
    }

    /// A token for the frame containing `addr`, or `None` if `addr` is outside the area.
    /// Only the socket layer calls this, for addresses the kernel hands back.
    pub(crate) fn frame_at(&self, addr: u64) -> Option<UmemFrame> {
        if addr as usize >= self.len {
            return None;
        }
        Some(self.token(addr & !(u64::from(self.frame_size) - 1)))
    }

    fn token(&self, chunk: u64) -> UmemFrame {
        // SAFETY: `chunk` < len (callers check), so the pointer stays inside the mapping.
        let ptr = unsafe { NonNull::new_unchecked(self.base.as_ptr().add(chunk as usize)) };
        UmemFrame {
            ptr,
            addr: chunk,
            size: self.frame_size,
        }
    }
}

/// Exclusive ownership of one UMEM frame while userspace holds it.
#[derive(Debug)]
pub struct UmemFrame {
    ptr: NonNull<u8>,
    addr: u64,
    size: u32,
}

// SAFETY: a token is the unique owner of its frame's bytes (not Clone, created once per
// hand-back from the kernel), so moving it to another thread moves that ownership.
unsafe impl Send for UmemFrame {}

impl UmemFrame {
    /// Offset of the frame in the UMEM (what the rings carry).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Give up ownership, returning the address to hand to the kernel.
    pub(crate) fn into_addr(self) -> u64 {
        self.addr
    }
}

impl AsRef<[u8]> for UmemFrame {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the frame lies inside the never-unmapped UMEM area, and this token is its
        // only owner while it exists (the kernel does not write frames userspace holds).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.size as usize) }
    }
}

impl AsMut<[u8]> for UmemFrame {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `as_ref`, and `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.size as usize) }
    }
}
