//! Fault test of the shared-memory ring: a producer process is SIGKILLed while writing
//! records as fast as it can; the consumer sees only whole records, in order, and a new
//! producer attaches and carries on where the dead one stopped.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dataplane::shm::{RingDir, ShmFile};

const CHILD_ENV: &str = "VPN_SHM_FAULT_CHILD";

/// A self-checking record: sequence number, a pattern, and a checksum over both.
fn record(seq: u64, buf: &mut [u8]) -> usize {
    let len = 24 + (seq as usize * 37) % 200;
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in buf[8..len - 8].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    let sum: u64 = buf[..len - 8].iter().map(|&b| u64::from(b)).sum::<u64>() ^ seq.rotate_left(17);
    buf[len - 8..len].copy_from_slice(&sum.to_le_bytes());
    len
}

fn check(buf: &[u8]) -> u64 {
    let len = buf.len();
    assert!(len >= 24, "short record {len}");
    let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
    let mut want = vec![0u8; 256];
    let l = record(seq, &mut want);
    assert_eq!(l, len, "record {seq}: torn length");
    assert_eq!(buf, &want[..l], "record {seq}: torn contents");
    seq
}

/// The child: attach and produce records from `start` forever.
#[test]
fn child_producer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (name, start) = spec.split_once(':').unwrap();
    let shm = ShmFile::attach(name).unwrap();
    let mut p = shm.producer(RingDir::ToDataplane);
    let mut buf = [0u8; 256];
    let mut seq: u64 = start.parse().unwrap();
    loop {
        let len = record(seq, &mut buf);
        p.push(&buf[..len], Duration::from_secs(30)).unwrap();
        seq += 1;
    }
}

fn spawn_child(name: &str, start: u64) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_producer",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, format!("{name}:{start}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn sigkilled_producer_leaves_only_whole_records() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let name = format!("vpnring-fault-{}", std::process::id());
    /// Removes the ring file however the test ends.
    struct Unlink(String);
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = ShmFile::unlink(&self.0);
        }
    }
    let _cleanup = Unlink(name.clone());
    let shm = ShmFile::create(&name, 64, 256).unwrap();
    let mut c = shm.consumer(RingDir::ToDataplane);
    let mut buf = [0u8; 256];
    let mut next = 0u64;
    for round in 0..3 {
        let mut child = spawn_child(&name, next);
        // Consume until the child has produced a good number, then kill it mid-stream.
        let target = next + 20_000;
        let deadline = Instant::now() + Duration::from_secs(30);
        while next < target {
            match c.pop(&mut buf) {
                Some(n) => {
                    assert_eq!(check(&buf[..n]), next, "round {round}: out of order");
                    next += 1;
                }
                None => {
                    assert!(Instant::now() < deadline, "round {round}: producer stalled");
                    std::hint::spin_loop();
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Whatever was published before the kill is whole; nothing torn appears.
        while let Some(n) = c.pop(&mut buf) {
            assert_eq!(check(&buf[..n]), next, "round {round}: after the kill");
            next += 1;
        }
        assert_eq!(c.pending(), 0);
    }
    // A new producer in this process attaches and continues.
    let again = ShmFile::attach(&name).unwrap();
    let mut p = again.producer(RingDir::ToDataplane);
    for k in 0..50 {
        let len = record(next + k, &mut buf);
        p.push(&buf[..len], Duration::from_secs(5)).unwrap();
    }
    for _ in 0..50 {
        let n = c.pop(&mut buf).expect("record from the new producer");
        assert_eq!(check(&buf[..n]), next);
        next += 1;
    }
}
