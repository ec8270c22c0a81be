//! The four AF_XDP rings: single-producer/single-consumer rings shared with the kernel,
//! with free-running 32-bit indexes masked by a power-of-two size (as in DPDK's rte_ring).

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::io::mapping::Mapping;

/// One mapped ring. `D` is the descriptor type: `u64` (fill, completion) or `xdp_desc`.
pub(crate) struct Ring<D: Copy> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut D,
    mask: u32,
    size: u32,
    /// Our view of the other side's index, refreshed only when needed.
    cached_prod: u32,
    cached_cons: u32,
    /// Unmapped when the ring is dropped (the pointers above point into it).
    _map: Mapping,
}

// SAFETY: the ring is owned by one socket, which one worker thread owns; the kernel side is
// synchronised through the atomic producer/consumer indexes.
unsafe impl<D: Copy> Send for Ring<D> {}

impl<D: Copy> Ring<D> {
    /// Map a ring of `size` entries of the socket `fd` at page offset `pgoff`.
    pub(crate) fn map(
        fd: i32,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: u64,
    ) -> io::Result<Ring<D>> {
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<D>();
        // The region the kernel created for this socket.
        let map = Mapping::shared(fd, map_len, pgoff, true)?;
        let base = map.as_ptr();
        // SAFETY: the kernel's offsets lie within `map_len` (XDP_MMAP_OFFSETS contract); the
        // index words are u32-aligned.
        let (producer, consumer, flags, descs) = unsafe {
            (
                base.add(off.producer as usize).cast::<AtomicU32>(),
                base.add(off.consumer as usize).cast::<AtomicU32>(),
                base.add(off.flags as usize).cast::<AtomicU32>(),
                base.add(off.desc as usize).cast::<D>(),
            )
        };
        let mut r = Ring {
            producer,
            consumer,
            flags,
            descs,
            mask: size - 1,
            size,
            cached_prod: 0,
            cached_cons: 0,
            _map: map,
        };
        r.cached_prod = r.prod().load(Ordering::Relaxed);
        r.cached_cons = r.cons().load(Ordering::Relaxed);
        Ok(r)
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping owned by `self`.
        unsafe { &*self.producer }
    }
    fn cons(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping owned by `self`.
        unsafe { &*self.consumer }
    }

    /// True when the kernel asks to be woken (XDP_RING_NEED_WAKEUP).
    pub(crate) fn needs_wakeup(&self) -> bool {
        // SAFETY: points into the live mapping owned by `self`.
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    // ---- producer side (fill, tx) ----

    /// Free slots we may write, refreshing the consumer index only if needed.
    pub(crate) fn free(&mut self, want: u32) -> u32 {
        let free = self.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free >= want {
            return free;
        }
        // Acquire: pairs with the kernel's release of the consumer index, so slots it has
        // consumed are really free before we overwrite them.
        self.cached_cons = self.cons().load(Ordering::Acquire);
        self.size - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Write a descriptor into the next slot. The caller checked `free() > 0`.
    pub(crate) fn push(&mut self, d: D) {
        let i = (self.cached_prod & self.mask) as usize;
        // SAFETY: i < size; the slot is free (checked by the caller through `free`).
        unsafe { self.descs.add(i).write(d) };
        self.cached_prod = self.cached_prod.wrapping_add(1);
    }

    /// Publish everything pushed so far.
    pub(crate) fn commit(&mut self) {
        // Release: the descriptors written above become visible before the new index.
        self.prod().store(self.cached_prod, Ordering::Release);
    }

    /// Entries published but not yet taken by the kernel.
    pub(crate) fn unconsumed(&mut self) -> u32 {
        self.cached_cons = self.cons().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    // ---- consumer side (rx, completion) ----

    /// Entries ready to read, refreshing the producer index only if needed.
    pub(crate) fn available(&mut self) -> u32 {
        let n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n > 0 {
            return n;
        }
        // Acquire: pairs with the kernel's release of the producer index.
        self.cached_prod = self.prod().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Entries ready to read, with a fresh look at the producer index (one atomic load).
    pub(crate) fn pending(&mut self) -> u32 {
        // Acquire: pairs with the kernel's release of the producer index.
        self.cached_prod = self.prod().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Read the next descriptor. The caller checked `available() > 0`.
    pub(crate) fn pop(&mut self) -> D {
        let i = (self.cached_cons & self.mask) as usize;
        // SAFETY: i < size; the kernel published this slot (checked through `available`).
        let d = unsafe { self.descs.add(i).read() };
        self.cached_cons = self.cached_cons.wrapping_add(1);
        d
    }

    /// Hand the slots read so far back to the kernel.
    pub(crate) fn release(&mut self) {
        // Release: our reads of the descriptors happen before the kernel may reuse the slots.
        self.cons().store(self.cached_cons, Ordering::Release);
    }
}
