//! The counters region: a file in /dev/shm that the dataplane writes and any process reads
//! (`vpnctl`, monitoring): per-worker packets, bytes and drops by reason; per-SA packets,
//! bytes, drops, and sequence state. It is also the dataplane's memory across restarts:
//! each outbound SA's *sequence lease* — the highest number the SA may use — is written
//! here before the SA may use it, so a restarted dataplane never reuses a sequence number
//! (an AES-GCM nonce) under the same key.
//!
//! ```text
//! 0    header (128 B): magic "VPNCNTR\0" u64 | version u32 | workers u32 | esp reasons u32 |
//!      worker reasons u32 | SA slots u32 | reserved u32 | 32 seqlock u64 | 40 updated (Unix ns)
//!      u64 | 48 file length u64
//! 128  reason names, 32 bytes each (NUL-padded): ESP drop reasons, then worker drop reasons
//! ...  per worker: rx packets, rx bytes, tx packets, tx bytes (outside, inside each),
//!      encapsulated, decapsulated, ESP drops [esp reasons], worker drops [worker reasons] (u64)
//! ...  per SA slot: spi u32 | flags u32 (1 in use, 2 inbound) | reqid u32 | 0 u32 | packets |
//!      bytes | last sequence number (outbound) or window top (inbound) | lease | 2 reserved |
//!      drops [esp reasons] (u64)
//! ```
//!
//! Consistency: the writer (the dataplane's control thread) bumps the seqlock to odd,
//! writes, and bumps it to even; a reader retries while it is odd or changed. Every field
//! is an aligned u64 accessed atomically, so a torn read is impossible and a reader never
//! blocks the writer.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::ShmError;
use crate::io::mapping::Mapping;

pub const COUNTERS_MAGIC: u64 = u64::from_le_bytes(*b"VPNCNTR\0");
pub const COUNTERS_VERSION: u32 = 1;
const HEADER: usize = 128;
const NAME_LEN: usize = 32;
/// Per-worker counters before the drops (`worker::WorkerCounter`, in its order).
pub const WORKER_FIXED: usize = 10;
const SA_FIXED: usize = 8;

/// How long [`CountersFile::snapshot`] waits for a writer that is mid-update: an update
/// takes microseconds, so a writer still mid-update after this is gone.
pub const SNAPSHOT_PATIENCE: Duration = Duration::from_millis(100);

const F_USED: u64 = 1;
const F_INBOUND: u64 = 2;

/// A mapped counters file.
pub struct CountersFile {
    map: Mapping,
    len: usize,
    path: PathBuf,
    workers: usize,
    esp: usize,
    wrk: usize,
    sa_slots: usize,
    _file: File,
}

// `Send` and `Sync` through `Mapping`: the file is accessed only through `AtomicU64`s.

/// One worker's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// rx packets, rx bytes, tx packets, tx bytes for (outside, inside), then
    /// encapsulated, decapsulated.
    pub fixed: [u64; WORKER_FIXED],
    pub esp_drops: Vec<u64>,
    pub worker_drops: Vec<u64>,
}

/// One SA's counters and sequence state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaCounterEntry {
    pub slot: usize,
    pub spi: u32,
    pub inbound: bool,
    pub reqid: u32,
    pub packets: u64,
    pub bytes: u64,
    /// Outbound: the last sequence number used. Inbound: the replay window's top.
    pub seq: u64,
    /// Outbound: no number above this was ever handed out.
    pub lease: u64,
    pub drops: Vec<u64>,
}

/// A consistent copy of the whole file (unless `torn`).
#[derive(Debug, Clone, Default)]
pub struct CountersSnapshot {
    /// The writer stayed mid-update for longer than the reader's patience — a dataplane
    /// killed between the two seqlock bumps leaves the file so forever. The copy may then
    /// mix values from before and after that last update; each field is still one value
    /// the writer stored (every word is read atomically), so a sequence lease read from it
    /// is one that was persisted.
    pub torn: bool,
    pub updated_unix_ns: u64,
    pub esp_reasons: Vec<String>,
    pub worker_reasons: Vec<String>,
    pub workers: Vec<WorkerCounters>,
    pub sas: Vec<SaCounterEntry>,
}

fn counters_path(name: &str) -> Result<PathBuf, ShmError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
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

fn map(file: &File, path: &Path, len: usize) -> Result<Mapping, ShmError> {
    // A shared mapping of a file we hold open, of exactly its length.
    Mapping::shared(file.as_raw_fd(), len, 0, false).map_err(|source| ShmError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl CountersFile {
    fn worker_words(&self) -> usize {
        WORKER_FIXED + self.esp + self.wrk
    }
    fn sa_words(&self) -> usize {
        SA_FIXED + self.esp
    }
    fn names_at(&self) -> usize {
        HEADER
    }
    fn workers_at(&self) -> usize {
        HEADER + (self.esp + self.wrk) * NAME_LEN
    }
    fn sas_at(&self) -> usize {
        self.workers_at() + self.workers * self.worker_words() * 8
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        assert!(
            off.is_multiple_of(8) && off + 8 <= self.len,
            "counter offset {off} out of the file"
        );
        // SAFETY: in bounds and 8-aligned (checked; the base is page-aligned); the mapping
        // lives as long as `self`.
        unsafe { &*self.map.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// Create (or replace) `/dev/shm/NAME` for `workers` workers and `sa_slots` SAs, naming
    /// the drop reasons.
    pub fn create(
        name: &str,
        workers: usize,
        sa_slots: usize,
        esp_reasons: &[&str],
        worker_reasons: &[&str],
    ) -> Result<CountersFile, ShmError> {
        let path = counters_path(name)?;
        let (esp, wrk) = (esp_reasons.len(), worker_reasons.len());
        let len = HEADER
            + (esp + wrk) * NAME_LEN
            + workers * (WORKER_FIXED + esp + wrk) * 8
            + sa_slots * (SA_FIXED + esp) * 8;
        // Build under a temporary name and rename: readers never see a half-made file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        file.set_len(len as u64).map_err(io_err(&tmp))?;
        let map = map(&file, &tmp, len)?;
        let f = CountersFile {
            map,
            len,
            path: path.clone(),
            workers,
            esp,
            wrk,
            sa_slots,
            _file: file,
        };
        let h = |o: usize, v: u64| f.word(o).store(v, Ordering::Relaxed);
        h(8, u64::from(COUNTERS_VERSION) | (workers as u64) << 32);
        h(16, esp as u64 | (wrk as u64) << 32);
        h(24, sa_slots as u64);
        h(48, len as u64);
        for (i, n) in esp_reasons.iter().chain(worker_reasons.iter()).enumerate() {
            let mut b = [0u8; NAME_LEN];
            let k = n.len().min(NAME_LEN - 1);
            b[..k].copy_from_slice(&n.as_bytes()[..k]);
            for (j, c) in b.chunks(8).enumerate() {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                h(f.names_at() + i * NAME_LEN + j * 8, u64::from_le_bytes(w));
            }
        }
        f.word(0).store(COUNTERS_MAGIC, Ordering::Release);
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(f)
    }

    /// Open an existing file to read it.
    pub fn open(name: &str) -> Result<CountersFile, ShmError> {
        let path = counters_path(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len() as usize;
        let mut h = [0u8; HEADER];
        if len < HEADER {
            return Err(ShmError::BadHeader {
                path,
                what: "file shorter than the header",
            });
        }
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut h, 0).map_err(io_err(&path))?;
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
        if u64_at(0) != COUNTERS_MAGIC {
            return Err(ShmError::BadMagic {
                path,
                found: u64_at(0),
            });
        }
        let version = u64_at(8) as u32;
        if version != COUNTERS_VERSION {
            return Err(ShmError::AbiMismatch {
                path,
                found: version,
                expected: COUNTERS_VERSION,
            });
        }
        let workers = (u64_at(8) >> 32) as usize;
        let (esp, wrk) = ((u64_at(16) as u32) as usize, (u64_at(16) >> 32) as usize);
        let sa_slots = u64_at(24) as usize;
        let want = HEADER
            .checked_add((esp + wrk).saturating_mul(NAME_LEN))
            .and_then(|x| x.checked_add(workers.checked_mul((WORKER_FIXED + esp + wrk) * 8)?))
            .and_then(|x| x.checked_add(sa_slots.checked_mul((SA_FIXED + esp) * 8)?));
        if want != Some(len) || u64_at(48) as usize != len {
            return Err(ShmError::BadHeader {
                path,
                what: "geometry does not match the file size",
            });
        }
        let map = map(&file, &path, len)?;
        Ok(CountersFile {
            map,
            len,
            path,
            workers,
            esp,
            wrk,
            sa_slots,
            _file: file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn sa_slots(&self) -> usize {
        self.sa_slots
    }

    /// Writer: run `f` inside the seqlock (readers retry meanwhile).
    pub fn update(&self, f: impl FnOnce(&Self)) {
        let seq = self.word(32);
        seq.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        f(self);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.word(40).store(now, Ordering::Relaxed);
        seq.fetch_add(1, Ordering::Release);
    }

    /// Writer: a worker's counters.
    pub fn set_worker(&self, w: usize, c: &WorkerCounters) {
        if w >= self.workers {
            return;
        }
        let at = self.workers_at() + w * self.worker_words() * 8;
        let vals = c
            .fixed
            .iter()
            .chain(c.esp_drops.iter().take(self.esp))
            .chain(c.worker_drops.iter().take(self.wrk));
        for (i, v) in vals.enumerate() {
            self.word(at + i * 8).store(*v, Ordering::Relaxed);
        }
    }

    fn sa_at(&self, slot: usize) -> Option<usize> {
        (slot < self.sa_slots).then(|| self.sas_at() + slot * self.sa_words() * 8)
    }

    /// Writer: claim `slot` for an SA (counters zeroed), with its first lease.
    pub fn set_sa(&self, slot: usize, spi: u32, inbound: bool, reqid: u32, lease: u64) {
        let Some(at) = self.sa_at(slot) else { return };
        for i in 0..self.sa_words() {
            self.word(at + i * 8).store(0, Ordering::Relaxed);
        }
        let flags = F_USED | if inbound { F_INBOUND } else { 0 };
        self.word(at + 8).store(u64::from(reqid), Ordering::Relaxed);
        self.word(at + 40).store(lease, Ordering::Relaxed);
        // The identity last: a reader that sees the slot used sees the rest.
        self.word(at)
            .store(u64::from(spi) | flags << 32, Ordering::Release);
    }

    /// Writer: free `slot`.
    pub fn clear_sa(&self, slot: usize) {
        if let Some(at) = self.sa_at(slot) {
            self.word(at).store(0, Ordering::Release);
        }
    }

    /// Writer: an SA's traffic counters and sequence state.
    pub fn set_sa_counters(&self, slot: usize, packets: u64, bytes: u64, seq: u64, drops: &[u64]) {
        let Some(at) = self.sa_at(slot) else { return };
        self.word(at + 16).store(packets, Ordering::Relaxed);
        self.word(at + 24).store(bytes, Ordering::Relaxed);
        self.word(at + 32).store(seq, Ordering::Relaxed);
        for (i, v) in drops.iter().take(self.esp).enumerate() {
            self.word(at + (SA_FIXED + i) * 8)
                .store(*v, Ordering::Relaxed);
        }
    }

    /// Writer: raise an outbound SA's lease. Stored before the SA may use the numbers, so
    /// the file always bounds what was used.
    pub fn set_lease(&self, slot: usize, lease: u64) {
        if let Some(at) = self.sa_at(slot) {
            self.word(at + 40).store(lease, Ordering::Release);
        }
    }

    fn name(&self, i: usize) -> String {
        let mut b = Vec::with_capacity(NAME_LEN);
        for j in 0..NAME_LEN / 8 {
            b.extend_from_slice(
                &self
                    .word(self.names_at() + i * NAME_LEN + j * 8)
                    .load(Ordering::Relaxed)
                    .to_le_bytes(),
            );
        }
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    }

    /// Reader: a consistent copy (retries while the writer is mid-update, for at most
    /// [`SNAPSHOT_PATIENCE`]; after that the copy is marked `torn`).
    pub fn snapshot(&self) -> CountersSnapshot {
        self.snapshot_within(SNAPSHOT_PATIENCE)
    }

    /// Reader: as [`CountersFile::snapshot`], retrying for at most `patience`. A writer
    /// that died mid-update (odd seqlock) must not hang its readers — among them the
    /// restarted dataplane, which reads the leases its predecessor left.
    pub fn snapshot_within(&self, patience: Duration) -> CountersSnapshot {
        let start = Instant::now();
        loop {
            let s1 = self.word(32).load(Ordering::Acquire);
            let out_of_time = start.elapsed() >= patience;
            if s1 % 2 == 1 && !out_of_time {
                std::thread::yield_now();
                continue;
            }
            let mut snap = self.read_all();
            fence(Ordering::Acquire);
            if s1.is_multiple_of(2) && self.word(32).load(Ordering::Relaxed) == s1 {
                return snap;
            }
            if out_of_time {
                snap.torn = true;
                return snap;
            }
        }
    }

    fn read_all(&self) -> CountersSnapshot {
        let ld = |o: usize| self.word(o).load(Ordering::Relaxed);
        let mut s = CountersSnapshot {
            updated_unix_ns: ld(40),
            esp_reasons: (0..self.esp).map(|i| self.name(i)).collect(),
            worker_reasons: (0..self.wrk).map(|i| self.name(self.esp + i)).collect(),
            ..Default::default()
        };
        for w in 0..self.workers {
            let at = self.workers_at() + w * self.worker_words() * 8;
            let v: Vec<u64> = (0..self.worker_words()).map(|i| ld(at + i * 8)).collect();
            let mut fixed = [0u64; WORKER_FIXED];
            fixed.copy_from_slice(&v[..WORKER_FIXED]);
            s.workers.push(WorkerCounters {
                fixed,
                esp_drops: v[WORKER_FIXED..WORKER_FIXED + self.esp].to_vec(),
                worker_drops: v[WORKER_FIXED + self.esp..].to_vec(),
            });
        }
        for slot in 0..self.sa_slots {
            let at = self.sas_at() + slot * self.sa_words() * 8;
            let id = self.word(at).load(Ordering::Acquire);
            let flags = id >> 32;
            if flags & F_USED == 0 {
                continue;
            }
            s.sas.push(SaCounterEntry {
                slot,
                spi: id as u32,
                inbound: flags & F_INBOUND != 0,
                reqid: ld(at + 8) as u32,
                packets: ld(at + 16),
                bytes: ld(at + 24),
                seq: ld(at + 32),
                lease: ld(at + 40),
                drops: (0..self.esp).map(|i| ld(at + (SA_FIXED + i) * 8)).collect(),
            });
        }
        s
    }

    /// Remove `/dev/shm/NAME`.
    pub fn unlink(name: &str) -> Result<(), ShmError> {
        let path = counters_path(name)?;
        std::fs::remove_file(&path).map_err(io_err(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn written_counters_read_back_by_name_and_leases_survive() {
        let n = format!("vpncntr-test-{}", std::process::id());
        let f = CountersFile::create(&n, 2, 8, &["icv_failed", "replay"], &["no_sa"]).unwrap();
        f.update(|f| {
            f.set_worker(
                1,
                &WorkerCounters {
                    fixed: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
                    esp_drops: vec![11, 12],
                    worker_drops: vec![13],
                },
            );
            f.set_sa(3, 0x8000_0003, false, 7, 1 << 20);
            f.set_sa_counters(3, 100, 15000, 99, &[1, 0]);
            f.set_sa(5, 0x1234, true, 0, 0);
        });
        f.set_lease(3, 2 << 20);
        drop(f);
        // Another process's view: open by name.
        let r = CountersFile::open(&n).unwrap();
        let s = r.snapshot();
        assert_eq!(s.esp_reasons, vec!["icv_failed", "replay"]);
        assert_eq!(s.worker_reasons, vec!["no_sa"]);
        assert_eq!(s.workers[1].fixed[9], 10);
        assert_eq!(s.workers[1].worker_drops, vec![13]);
        assert_eq!(s.sas.len(), 2);
        let out = &s.sas[0];
        assert_eq!(
            (out.slot, out.spi, out.inbound, out.reqid),
            (3, 0x8000_0003, false, 7)
        );
        assert_eq!(
            (out.packets, out.bytes, out.seq, out.lease),
            (100, 15000, 99, 2 << 20)
        );
        assert!(s.sas[1].inbound);
        assert!(s.updated_unix_ns > 0);
        CountersFile::unlink(&n).unwrap();
    }

    /// A writer killed between the two seqlock bumps (kill -9 of the dataplane) leaves the
    /// seqlock odd forever: readers — the restarted dataplane restoring its leases first —
    /// get a copy marked torn after their patience instead of spinning forever (found
    /// writing the `counters_reader` fuzz target: its seed `writer-died-mid-update` hung the
    /// old reader).
    #[test]
    fn a_writer_dead_mid_update_does_not_hang_readers() {
        let n = format!("vpncntr-torn-{}", std::process::id());
        let f = CountersFile::create(&n, 1, 2, &["a"], &["b"]).unwrap();
        f.set_sa(1, 0x1234, false, 9, 5 << 20);
        // The first half of `update`, then nothing: the writer died.
        f.word(32).fetch_add(1, Ordering::Release);
        let r = CountersFile::open(&n).unwrap();
        let t = Instant::now();
        let s = r.snapshot_within(Duration::from_millis(20));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(s.torn);
        assert_eq!((s.sas[0].spi, s.sas[0].lease), (0x1234, 5 << 20));
        assert!(r.snapshot().torn);
        // A writer that finishes: consistent again.
        f.word(32).fetch_add(1, Ordering::Release);
        assert!(!r.snapshot().torn);
        CountersFile::unlink(&n).unwrap();
    }

    /// A reader never sees a half-updated snapshot while the writer rewrites it.
    #[test]
    fn readers_see_consistent_snapshots() {
        let n = format!("vpncntr-mt-{}", std::process::id());
        let f = Arc::new(CountersFile::create(&n, 1, 4, &["a"], &["b"]).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (f, stop) = (Arc::clone(&f), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(Ordering::Relaxed) {
                    let s = f.snapshot();
                    let w = &s.workers[0];
                    // The writer keeps every field equal.
                    assert!(w.fixed.iter().all(|&v| v == w.fixed[0]), "{w:?}");
                    assert_eq!(w.esp_drops[0], w.fixed[0]);
                    seen += 1;
                }
                seen
            })
        };
        for i in 0..200_000u64 {
            f.update(|f| {
                f.set_worker(
                    0,
                    &WorkerCounters {
                        fixed: [i; WORKER_FIXED],
                        esp_drops: vec![i],
                        worker_drops: vec![i],
                    },
                )
            });
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        CountersFile::unlink(&n).unwrap();
    }
}
