//! `vpnctl ring ...`: speak to a dataplane's shared-memory ring directly (install a file of
//! manually keyed SAs, keep a dataplane in step with it across restarts, show what it holds
//! and has counted).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::control::static_sa::StaticConfig;
use dataplane::shm::records::DataplaneRecord;
use tracing::{info, warn};

use crate::ring_client::{Desired, RingClient};

pub const SLOTS: u32 = 4096;

/// The SAs and policies of a static SA file, as the ring client wants them.
pub fn load(path: &std::path::Path) -> Result<Desired, String> {
    let cfg = StaticConfig::load(path).map_err(|e| e.to_string())?;
    Desired::from_static(&cfg).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn serve(
    ring: &str,
    sa_file: &std::path::Path,
    ready: Option<&std::path::Path>,
) -> Result<(), String> {
    let want = load(sa_file)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let mut c = RingClient::attach(ring, SLOTS).map_err(|e| e.to_string())?;
    let step = Duration::from_secs(2);
    // First contact: reconcile with whatever a running dataplane holds (it kept forwarding
    // while no controller was attached), waiting for a dataplane if there is none yet.
    let held = loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match c.resync(step) {
            Ok(h) => break h,
            Err(e) => info!("waiting for a dataplane on ring {ring}: {e}"),
        }
    };
    let r = c
        .reconcile(&want, &held, step * 5)
        .map_err(|e| e.to_string())?;
    info!(
        added = r.added,
        removed = r.removed,
        kept = r.kept,
        "dataplane in step with {}",
        sa_file.display()
    );
    if let Some(p) = ready {
        std::fs::write(p, format!("{} {} {}\n", r.added, r.removed, r.kept))
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let mut idle_since = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match c.poll() {
            Some(DataplaneRecord::Hello { boot_id, .. }) => {
                info!(
                    boot_id,
                    "the dataplane restarted: replaying its SAs and policies"
                );
                match c.replay(&want, step * 5) {
                    Ok(n) => info!(records = n, "replayed"),
                    Err(e) => warn!("replay failed: {e}"),
                }
            }
            Some(DataplaneRecord::Acquire {
                policy,
                reqid,
                flow,
            }) => info!(
                policy, reqid, src = %flow.src, dst = %flow.dst,
                "acquire: traffic for a policy without an SA (static keying cannot negotiate one)"
            ),
            Some(DataplaneRecord::UnknownSpi { spi, src, dst }) => {
                info!(spi = format_args!("{spi:#010x}"), %src, %dst, "ESP with an unknown SPI")
            }
            Some(DataplaneRecord::SaEvent {
                direction,
                reqid,
                event,
            }) => {
                warn!(
                    ?direction,
                    reqid,
                    ?event,
                    "SA event (static SAs are not rekeyed)"
                )
            }
            Some(_) => {}
            None => {
                if idle_since.elapsed() > Duration::from_millis(5) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                continue;
            }
        }
        idle_since = Instant::now();
    }
    Ok(())
}

pub fn churn(ring: &str) -> Result<(), String> {
    use dataplane::crypto::{EspTransform, SaKeys};
    use dataplane::esp::SaConfig;
    use dataplane::sa::Direction;
    use dataplane::shm::records::{encode_add_sa, encode_delete_sa, SaInstall, MAX_RECORD};
    let mut c = RingClient::attach(ring, SLOTS).map_err(|e| e.to_string())?;
    let mut buf = zeroize::Zeroizing::new(vec![0u8; MAX_RECORD]);
    let t = Duration::from_secs(3600);
    println!("churning");
    for i in 0u32.. {
        let spi = 0x9000_0000 | (i & 0xff);
        let cfg = SaConfig::tunnel(
            spi,
            EspTransform::AES_GCM_128,
            SaKeys::new(&[0x5a; 20], &[]),
            [192, 0, 2, 1].into(),
            [192, 0, 2, 2].into(),
        );
        let inst = SaInstall {
            direction: Direction::Inbound,
            reqid: 0,
            update: false,
            resource: None,
            config: cfg,
        };
        let n = encode_add_sa(&mut buf, 0, &inst).map_err(|e| e.to_string())?;
        c.send(&buf[..n], t).map_err(|e| e.to_string())?;
        if i >= 128 {
            let old = 0x9000_0000 | ((i - 128) & 0xff);
            let n = encode_delete_sa(&mut buf[..], 0, Direction::Inbound, old, 0);
            c.send(&buf[..n], t).map_err(|e| e.to_string())?;
        }
        // Drain the acks so the return ring never fills.
        while c.poll().is_some() {}
    }
    Ok(())
}

pub fn status(ring: &str, counters: Option<&str>) -> Result<(), String> {
    use dataplane::shm::counters::CountersFile;
    let name = counters.map_or_else(|| format!("{ring}.counters"), str::to_string);
    let f = CountersFile::open(&name)
        .map_err(|e| format!("{e} (is a dataplane running with --ring {ring}?)"))?;
    let s = f.snapshot();
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        .saturating_sub(s.updated_unix_ns);
    println!(
        "dataplane counters /dev/shm/{name}, written {:.1} s ago",
        age as f64 / 1e9
    );
    let reasons = |names: &[String], v: &[u64]| -> String {
        names
            .iter()
            .zip(v)
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, w) in s.workers.iter().enumerate() {
        let f = &w.fixed;
        println!(
            "  worker {i}: outside rx {} tx {}, inside rx {} tx {}, encrypted {}, decrypted {}",
            f[0], f[2], f[4], f[6], f[8], f[9]
        );
        let d = [
            reasons(&s.esp_reasons, &w.esp_drops),
            reasons(&s.worker_reasons, &w.worker_drops),
        ]
        .into_iter()
        .filter(|x| !x.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
        if !d.is_empty() {
            println!("    drops: {d}");
        }
    }
    println!("  {} SAs", s.sas.len());
    for e in &s.sas {
        let dir = if e.inbound { "in " } else { "out" };
        let seq = if e.inbound {
            format!("window top {}", e.seq)
        } else {
            format!("seq {} (leased to {})", e.seq, e.lease)
        };
        println!(
            "  {dir} spi {:#010x} reqid {}: {} packets, {} bytes, {seq}",
            e.spi, e.reqid, e.packets, e.bytes
        );
        let d = reasons(&s.esp_reasons, &e.drops);
        if !d.is_empty() {
            println!("    drops: {d}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_static_sa_file_is_named() {
        let dir = std::env::temp_dir().join(format!("vpnctl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("sa.toml");
        std::fs::write(&f, "[[sa]]\nname = 1\n").unwrap();
        let e = match load(&f) {
            Ok(_) => String::from("loaded"),
            Err(e) => e,
        };
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("sa.toml"), "{e}");
    }
}
