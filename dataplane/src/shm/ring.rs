//! The mapped file and its two SPSC rings.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::spsc::{self, RingMem};
use crate::io::mapping::Mapping;

/// "VPNRING\0" as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"VPNRING\0");
/// Bumped on any incompatible change of the file layout or record formats.
pub const ABI_VERSION: u32 = 2;

const CACHE_LINE: usize = 64;
const HEADER_LEN: usize = CACHE_LINE;
const RING_CTRL_LEN: usize = 2 * CACHE_LINE;
const RINGS: usize = 2;
const SLOTS_AT: usize = HEADER_LEN + RINGS * RING_CTRL_LEN;
/// Each slot starts with the record length (u32) and 4 reserved bytes.
const SLOT_HEADER: usize = 8;

mod hdr {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const SLOT_SIZE: usize = 12;
    pub const CAPACITY: usize = 16;
    pub const RINGS: usize = 20;
    pub const FILE_LEN: usize = 24;
}

/// Which ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingDir {
    /// Control → dataplane: add/update/delete SA and policy, flush, resync.
    ToDataplane = 0,
    /// Dataplane → control: expiries, acquires, unknown SPIs, resync answers.
    ToControl = 1,
}

/// Why the file could not be created or attached, or a record not exchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a VPN ring file (bad magic {found:#018x})", .path.display())]
    BadMagic { path: PathBuf, found: u64 },
    #[error("{} has ring ABI version {found}, this program speaks version {expected}: upgrade the older of iked and the dataplane so both match", .path.display())]
    AbiMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{}: inconsistent header ({what})", .path.display())]
    BadHeader { path: PathBuf, what: &'static str },
    #[error("record of {len} bytes does not fit a {max}-byte slot payload")]
    TooBig { len: usize, max: usize },
    #[error("ring full for {0:?}: the consumer is not draining it")]
    Timeout(Duration),
    #[error("ring name {0:?} must be a plain file name (letters, digits, '-', '_', '.')")]
    BadName(String),
    #[error("another {role} (pid {pid}) is attached to ring {ring}: one per ring")]
    Claimed {
        ring: String,
        role: String,
        pid: String,
    },
}

/// A mapped ring file. Shared by the producer and consumer handles of this process.
pub struct ShmFile {
    /// The whole file, unmapped on drop (producer and consumer handles hold an Arc to it).
    map: Mapping,
    len: usize,
    slot_size: usize,
    capacity: u32,
    path: PathBuf,
    _file: File,
}

// `Send` and `Sync` through `Mapping`: all mutation of the shared state goes through atomics
// (indexes) or through slots owned by exactly one side at a time (SPSC protocol).

fn shm_path(name: &str) -> Result<PathBuf, ShmError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(ShmError::BadName(name.to_string()));
    }
    Ok(Path::new("/dev/shm").join(name))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ShmError + '_ {
    move |source| ShmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl ShmFile {
    /// Create (or replace) `/dev/shm/NAME` with two rings of `capacity` slots of
    /// `slot_size` bytes (both powers of two; slot_size ≥ 64).
    pub fn create(name: &str, capacity: u32, slot_size: u32) -> Result<Arc<ShmFile>, ShmError> {
        let path = shm_path(name)?;
        Self::create_at(&path, capacity, slot_size, ABI_VERSION)
    }

    /// Attach to an existing file, checking magic, ABI version and geometry.
    pub fn attach(name: &str) -> Result<Arc<ShmFile>, ShmError> {
        let path = shm_path(name)?;
        Self::attach_at(&path, ABI_VERSION)
    }

    /// Attach to `/dev/shm/NAME` if it exists, else create it. Either process may come up
    /// first; the file outlives both, so a restarted process continues where its
    /// predecessor left off. Returns the file and whether it was created.
    pub fn open_or_create(
        name: &str,
        capacity: u32,
        slot_size: u32,
    ) -> Result<(Arc<ShmFile>, bool), ShmError> {
        let path = shm_path(name)?;
        // Reserve the name atomically, so two starting processes cannot both create it.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => {
                return Ok((
                    Self::create_at(&path, capacity, slot_size, ABI_VERSION)?,
                    true,
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        // The creator may still be writing the header (magic last): give it a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match Self::attach_at(&path, ABI_VERSION) {
                Ok(f) => return Ok((f, false)),
                Err(ShmError::BadMagic { found: 0, .. }) | Err(ShmError::BadHeader { .. })
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Claim one end of the ring `name` for this process: an SPSC ring has one producer and
    /// one consumer per direction, so a second controller (or dataplane) attaching to the
    /// same ring would corrupt it. The claim is an exclusive `flock` on
    /// `/dev/shm/NAME.ROLE.lock`, which the kernel releases when the process dies however
    /// it dies, so a successor can always take over. Keep the returned file open.
    pub fn claim(name: &str, role: &str) -> Result<File, ShmError> {
        let path = shm_path(&format!("{name}.{role}.lock"))?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        match f.try_lock() {
            Ok(()) => {
                let _ = f.set_len(0);
                let _ = std::io::Write::write_all(
                    &mut &f,
                    format!("{}\n", std::process::id()).as_bytes(),
                );
                Ok(f)
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                Err(ShmError::Claimed {
                    ring: name.to_string(),
                    role: role.to_string(),
                    pid: holder.trim().to_string(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
        }
    }

    /// Remove `/dev/shm/NAME` and its claim files (mappings stay valid until dropped).
    pub fn unlink(name: &str) -> Result<(), ShmError> {
        let path = shm_path(name)?;
        for role in ["controller", "dataplane"] {
            let _ = std::fs::remove_file(path.with_file_name(format!("{name}.{role}.lock")));
        }
        std::fs::remove_file(&path).map_err(io_err(&path))
    }

    #[doc(hidden)]
    pub fn create_at(
        path: &Path,
        capacity: u32,
        slot_size: u32,
        version: u32,
    ) -> Result<Arc<ShmFile>, ShmError> {
        if !capacity.is_power_of_two() || !slot_size.is_power_of_two() || slot_size < 64 {
            return Err(ShmError::BadHeader {
                path: path.to_path_buf(),
                what: "capacity and slot size must be powers of two, slot size ≥ 64",
            });
        }
        let len = SLOTS_AT + RINGS * capacity as usize * slot_size as usize;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err(path))?;
        file.set_len(len as u64).map_err(io_err(path))?;
        let shm = Self::map(file, path, len, slot_size as usize, capacity)?;
        // Fill the header, magic last (release): an attacher that sees the magic sees the rest.
        shm.header_u32(hdr::VERSION)
            .store(version, Ordering::Relaxed);
        shm.header_u32(hdr::SLOT_SIZE)
            .store(slot_size, Ordering::Relaxed);
        shm.header_u32(hdr::CAPACITY)
            .store(capacity, Ordering::Relaxed);
        shm.header_u32(hdr::RINGS)
            .store(RINGS as u32, Ordering::Relaxed);
        shm.header_u64(hdr::FILE_LEN)
            .store(len as u64, Ordering::Relaxed);
        shm.header_u64(hdr::MAGIC).store(MAGIC, Ordering::Release);
        Ok(Arc::new(shm))
    }

    #[doc(hidden)]
    pub fn attach_at(path: &Path, expected_version: u32) -> Result<Arc<ShmFile>, ShmError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len() as usize;
        if len < SLOTS_AT {
            return Err(ShmError::BadHeader {
                path: path.to_path_buf(),
                what: "file shorter than the header",
            });
        }
        // Read the header with a plain pread before mapping anything.
        let mut h = [0u8; HEADER_LEN];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut h, 0).map_err(io_err(path))?;
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
        let magic = u64::from_le_bytes(h[hdr::MAGIC..hdr::MAGIC + 8].try_into().expect("8 bytes"));
        if magic != MAGIC {
            return Err(ShmError::BadMagic {
                path: path.to_path_buf(),
                found: magic,
            });
        }
        let version = u32_at(hdr::VERSION);
        if version != expected_version {
            return Err(ShmError::AbiMismatch {
                path: path.to_path_buf(),
                found: version,
                expected: expected_version,
            });
        }
        let (slot_size, capacity, rings) = (
            u32_at(hdr::SLOT_SIZE),
            u32_at(hdr::CAPACITY),
            u32_at(hdr::RINGS) as usize,
        );
        let geometry_ok = rings == RINGS
            && capacity.is_power_of_two()
            && slot_size.is_power_of_two()
            && slot_size >= 64;
        if !geometry_ok || SLOTS_AT + RINGS * capacity as usize * slot_size as usize != len {
            return Err(ShmError::BadHeader {
                path: path.to_path_buf(),
                what: "geometry does not match the file size",
            });
        }
        Ok(Arc::new(Self::map(
            file,
            path,
            len,
            slot_size as usize,
            capacity,
        )?))
    }

    fn map(
        file: File,
        path: &Path,
        len: usize,
        slot_size: usize,
        capacity: u32,
    ) -> Result<ShmFile, ShmError> {
        // A shared mapping of a file we hold open, of exactly its length.
        let map =
            Mapping::shared(file.as_raw_fd(), len, 0, false).map_err(|source| ShmError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(ShmFile {
            map,
            len,
            slot_size,
            capacity,
            path: path.to_path_buf(),
            _file: file,
        })
    }

    fn header_u32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` + 4 ≤ HEADER_LEN ≤ len; 4-aligned (page-aligned base); the mapping
        // lives as long as `self`.
        unsafe { &*self.map.as_ptr().add(off).cast::<AtomicU32>() }
    }

    fn header_u64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: as `header_u32`, 8-aligned offsets.
        unsafe { &*self.map.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// Producer (0) or consumer (1) index of a ring, each on its own cache line.
    fn index(&self, ring: RingDir, which: usize) -> &AtomicU32 {
        let off = HEADER_LEN + ring as usize * RING_CTRL_LEN + which * CACHE_LINE;
        // SAFETY: within the control area (< SLOTS_AT ≤ len), 64-aligned.
        unsafe { &*self.map.as_ptr().add(off).cast::<AtomicU32>() }
    }

    fn slot_ptr(&self, ring: RingDir, i: u32) -> *mut u8 {
        let idx = (i & (self.capacity - 1)) as usize;
        let off = SLOTS_AT + (ring as usize * self.capacity as usize + idx) * self.slot_size;
        debug_assert!(off + self.slot_size <= self.len);
        // SAFETY: `off + slot_size ≤ len` by the geometry checked at create/attach.
        unsafe { self.map.as_ptr().add(off) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Largest record payload.
    pub fn max_record(&self) -> usize {
        self.slot_size - SLOT_HEADER
    }
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The producer side of `ring`. One producer per ring at a time (the protocol's
    /// contract; a restarted producer re-attaches and continues at the published index).
    pub fn producer(self: &Arc<Self>, ring: RingDir) -> Producer {
        let head = self.index(ring, 0).load(Ordering::Acquire);
        Producer {
            shm: Arc::clone(self),
            ring,
            next: head,
        }
    }

    /// The consumer side of `ring`.
    pub fn consumer(self: &Arc<Self>, ring: RingDir) -> Consumer {
        let tail = self.index(ring, 1).load(Ordering::Acquire);
        Consumer {
            shm: Arc::clone(self),
            ring,
            next: tail,
        }
    }
}

/// Writes records into one ring.
pub struct Producer {
    shm: Arc<ShmFile>,
    ring: RingDir,
    /// Our copy of the producer index (only we write it).
    next: u32,
}

/// One ring of the mapped file, as the SPSC protocol sees it.
struct RingView<'a> {
    shm: &'a ShmFile,
    ring: RingDir,
}

impl RingMem for RingView<'_> {
    fn capacity(&self) -> u32 {
        self.shm.capacity
    }
    fn max_record(&self) -> usize {
        self.shm.max_record()
    }
    fn load_index(&self, which: usize, o: Ordering) -> u32 {
        self.shm.index(self.ring, which).load(o)
    }
    fn store_index(&self, which: usize, v: u32, o: Ordering) {
        self.shm.index(self.ring, which).store(v, o)
    }
    fn write_slot(&self, i: u32, rec: &[u8]) {
        let p = self.shm.slot_ptr(self.ring, i);
        // SAFETY: the SPSC protocol gives the producer this slot until it publishes the
        // index past it; `rec.len() + SLOT_HEADER ≤ slot_size` (checked by `try_push`).
        unsafe {
            std::ptr::copy_nonoverlapping((rec.len() as u32).to_le_bytes().as_ptr(), p, 4);
            std::ptr::copy_nonoverlapping(rec.as_ptr(), p.add(SLOT_HEADER), rec.len());
        }
    }
    fn take_slot(&self, i: u32, out: &mut [u8]) -> usize {
        let p = self.shm.slot_ptr(self.ring, i);
        let mut lenb = [0u8; 4];
        // SAFETY: the slot is published and owned by the consumer until it advances the
        // consumer index; reads and the zeroing stay within the slot.
        unsafe {
            std::ptr::copy_nonoverlapping(p, lenb.as_mut_ptr(), 4);
            let len = (u32::from_le_bytes(lenb) as usize).min(self.shm.max_record());
            let n = len.min(out.len());
            std::ptr::copy_nonoverlapping(p.add(SLOT_HEADER), out.as_mut_ptr(), n);
            // Key material must not linger in shared memory once taken.
            std::ptr::write_bytes(p, 0, self.shm.slot_size);
            n
        }
    }
}

impl Producer {
    /// Append a record if there is room. `Ok(false)` when the ring is full.
    pub fn try_push(&mut self, rec: &[u8]) -> Result<bool, ShmError> {
        let view = RingView {
            shm: &self.shm,
            ring: self.ring,
        };
        spsc::try_push(&view, &mut self.next, rec)
    }

    /// Append a record, waiting while the ring is full (backpressure, nothing dropped).
    pub fn push(&mut self, rec: &[u8], timeout: Duration) -> Result<(), ShmError> {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if self.try_push(rec)? {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(ShmError::Timeout(timeout));
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// Reads records from one ring.
pub struct Consumer {
    shm: Arc<ShmFile>,
    ring: RingDir,
    next: u32,
}

impl Consumer {
    /// Copy the next record into `out` and release its slot (zeroed first). Returns its
    /// length, or `None` if the ring is empty. A record longer than `out` is truncated.
    pub fn pop(&mut self, out: &mut [u8]) -> Option<usize> {
        let view = RingView {
            shm: &self.shm,
            ring: self.ring,
        };
        spsc::pop(&view, &mut self.next, out)
    }

    /// Records published and not yet taken.
    pub fn pending(&self) -> u32 {
        self.shm
            .index(self.ring, 0)
            .load(Ordering::Acquire)
            .wrapping_sub(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(tag: &str) -> String {
        format!("vpnring-test-{}-{tag}", std::process::id())
    }

    #[test]
    fn round_trip_full_and_zeroing() {
        let n = name("rt");
        let shm = ShmFile::create(&n, 4, 64).unwrap();
        let mut p = shm.producer(RingDir::ToDataplane);
        let mut c = shm.consumer(RingDir::ToDataplane);
        let mut buf = [0u8; 64];
        assert_eq!(c.pop(&mut buf), None);
        for i in 0..4u8 {
            assert!(p.try_push(&[i; 10]).unwrap());
        }
        assert!(!p.try_push(&[9; 10]).unwrap(), "full ring refuses");
        assert!(matches!(p.try_push(&[0; 57]), Err(ShmError::TooBig { .. })));
        assert_eq!(c.pending(), 4);
        for i in 0..4u8 {
            assert_eq!(c.pop(&mut buf), Some(10));
            assert_eq!(&buf[..10], &[i; 10]);
        }
        // Every slot of the ring was zeroed after it was taken.
        for i in 0..4 {
            let p = shm.slot_ptr(RingDir::ToDataplane, i);
            // SAFETY: test-only read of a slot inside the mapping.
            let bytes = unsafe { std::slice::from_raw_parts(p, 64) };
            assert!(bytes.iter().all(|&b| b == 0));
        }
        // The other ring is independent.
        let mut p2 = shm.producer(RingDir::ToControl);
        assert!(p2.try_push(b"event").unwrap());
        assert_eq!(c.pop(&mut buf), None);
        ShmFile::unlink(&n).unwrap();
    }

    #[test]
    fn attach_checks_magic_version_and_geometry() {
        let n = name("abi");
        let path = Path::new("/dev/shm").join(&n);
        ShmFile::create_at(&path, 8, 128, ABI_VERSION + 1).unwrap();
        let e = ShmFile::attach(&n).err().unwrap();
        assert!(
            matches!(e, ShmError::AbiMismatch { found, expected, .. } if found == ABI_VERSION + 1 && expected == ABI_VERSION),
            "{e}"
        );
        assert!(e.to_string().contains("ABI version"), "{e}");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        assert!(matches!(
            ShmFile::attach(&n),
            Err(ShmError::BadMagic { .. })
        ));
        ShmFile::create(&n, 8, 128).unwrap();
        let f = ShmFile::attach(&n).unwrap();
        assert_eq!((f.capacity(), f.max_record()), (8, 120));
        assert!(matches!(
            ShmFile::attach("../etc/passwd"),
            Err(ShmError::BadName(_))
        ));
        ShmFile::unlink(&n).unwrap();
    }

    #[test]
    fn one_claim_per_role() {
        let n = name("claim");
        let a = ShmFile::claim(&n, "controller").unwrap();
        let e = ShmFile::claim(&n, "controller").unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        let _d = ShmFile::claim(&n, "dataplane").unwrap();
        drop(a);
        ShmFile::claim(&n, "controller").unwrap();
        for role in ["controller", "dataplane"] {
            let _ = std::fs::remove_file(format!("/dev/shm/{n}.{role}.lock"));
        }
    }

    #[test]
    fn threads_exchange_a_million_records_in_order() {
        let n = name("mt");
        let shm = ShmFile::create(&n, 256, 64).unwrap();
        let mut p = shm.producer(RingDir::ToDataplane);
        let mut c = shm.consumer(RingDir::ToDataplane);
        const N: u64 = 1_000_000;
        let t = std::thread::spawn(move || {
            for i in 0..N {
                p.push(&i.to_le_bytes(), Duration::from_secs(10)).unwrap();
            }
        });
        let mut buf = [0u8; 64];
        let mut want = 0u64;
        while want < N {
            if let Some(len) = c.pop(&mut buf) {
                assert_eq!(len, 8);
                assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), want);
                want += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        t.join().unwrap();
        ShmFile::unlink(&n).unwrap();
    }
}
