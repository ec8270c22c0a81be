//! One memory mapping, unmapped when dropped: the shared-memory ring file, the counters
//! file, the AF_XDP rings (shared with the kernel) and the UMEM (anonymous) all map through
//! here, so `mmap`'s flags, its failure check and the matching `munmap` are written once.

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;

/// A mapped region of `len` bytes. It hands out only a raw pointer: whoever reads or writes
/// through it says why that is sound (atomics, SPSC ownership, frame tokens).
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` is an address range; it never dereferences it. Its users synchronise
// their own accesses.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// A read-write `MAP_SHARED` mapping of `len` bytes of `fd` from byte `offset`;
    /// `populate` pre-faults it (`MAP_POPULATE`).
    pub fn shared(fd: RawFd, len: usize, offset: u64, populate: bool) -> io::Result<Mapping> {
        let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
        Self::map(fd, len, offset, flags)
    }

    /// A read-write, pre-faulted, private anonymous mapping of `len` bytes.
    pub fn anonymous(len: usize) -> io::Result<Mapping> {
        Self::map(
            -1,
            len,
            0,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
        )
    }

    fn map(fd: RawFd, len: usize, offset: u64, flags: i32) -> io::Result<Mapping> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mmap offset too large"))?;
        // SAFETY: no address hint, so the kernel picks a range that aliases nothing of ours;
        // the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping { base, len })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keep the region mapped for the rest of the process (the UMEM: frame tokens point into
    /// it and may outlive every owner).
    pub fn leak(self) -> NonNull<u8> {
        let base = self.base;
        std::mem::forget(self);
        base
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `len` bytes; its owner holds no reference into it past
        // its own drop (the field order of each owner keeps this last).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
