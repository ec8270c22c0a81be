//! The control thread's loop: install what the ring brings, relay what the workers raise,
//! keep the next hops current, and write the counters and the stats file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::install::Installer;
use crate::control::ring_end::{self, RingEnd};
use crate::control::telemetry;
use crate::io::xdp::XdpSteering;
use crate::io::Side;
use crate::route::hops::HopCache;
use crate::route::refresh::HopRefresher;
use crate::worker::{WorkerEvent, WorkerStats};
use tracing::warn;

/// Housekeeping (next hops, files) runs at most this often; records and events at once.
const HOUSEKEEPING: Duration = Duration::from_millis(20);

/// Everything the control thread owns.
pub struct ControlThread {
    pub installer: Installer,
    pub xdp: XdpSteering,
    pub ring: Option<RingEnd>,
    pub events: Receiver<WorkerEvent>,
    pub hops: Arc<HopCache>,
    pub refresher: HopRefresher,
    pub stats: Vec<Arc<WorkerStats>>,
    /// Write the stats JSON here every `stats_interval`, and at exit.
    pub stats_file: Option<PathBuf>,
    pub stats_interval: Duration,
    /// Queues of the outside and inside interfaces (for the XDP counters).
    pub queues: [u32; 2],
}

impl ControlThread {
    /// Run until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut remotes_seen = 0usize;
        // Written once now: its appearance tells scripts the dataplane is forwarding.
        self.write_stats();
        let mut last_stats = Instant::now();
        let mut last_housekeeping = Instant::now() - Duration::from_secs(1);
        let mut last_export = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let mut busy = false;
            if let Some(r) = self.ring.as_mut() {
                busy |= r.drain(&mut self.installer, &mut self.xdp);
            }
            while let Ok(ev) = self.events.try_recv() {
                if let WorkerEvent::LeaseLow { reqid, spi } = ev {
                    self.installer.extend_lease(reqid, spi);
                    continue;
                }
                ring_end::log_event(&ev);
                if let (Some(r), Some(rec)) = (self.ring.as_mut(), ring_end::record_of(&ev)) {
                    r.queue(rec);
                }
            }
            if let Some(r) = self.ring.as_mut() {
                r.flush();
            }
            // Next hops: the tunnel endpoints as SAs arrive, the rest on demand.
            for remote in self.installer.tunnel_remotes().skip(remotes_seen) {
                self.hops.request(Side::Outside, remote);
                remotes_seen += 1;
            }
            if last_housekeeping.elapsed() < HOUSEKEEPING {
                if !busy {
                    std::thread::sleep(Duration::from_millis(1));
                }
                continue;
            }
            last_housekeeping = Instant::now();
            self.refresher.tick(&self.hops);
            if let Err(e) = self.xdp.tick(Instant::now()) {
                warn!("releasing the prefixes a previous run left protected: {e}");
            }
            if last_stats.elapsed() >= self.stats_interval {
                self.write_stats();
                last_stats = Instant::now();
            }
            if last_export.elapsed() >= self.stats_interval.min(Duration::from_secs(1)) {
                self.export();
                last_export = Instant::now();
            }
        }
    }

    /// After the workers stopped: the last stats file, counters and summary.
    pub fn finish(&self) {
        self.write_stats();
        self.export();
        telemetry::print_summary(&self.stats, &self.installer);
    }

    fn write_stats(&self) {
        if let Some(path) = &self.stats_file {
            telemetry::write_stats(
                path,
                &self.stats,
                &self.installer,
                &self.xdp,
                self.queues,
                self.refresher.table(),
            );
        }
    }

    fn export(&self) {
        let counters: Vec<_> = self.stats.iter().map(|s| s.snapshot()).collect();
        self.installer.export(&counters);
    }
}
