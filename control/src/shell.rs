//! The I/O pieces of `iked` around the daemon core: reading what the dataplane holds at
//! start, its inbound packet counters (for DPD), and the `vpnctl` control socket. Kept out
//! of the binary so the binary stays sockets and a poll loop.

use std::io::{BufRead, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use dataplane::shm::counters::CountersFile;
use tracing::warn;

use crate::config::IkedConfig;
use crate::daemon::command::{Reply, Request};
use crate::daemon::{Daemon, Held};
use crate::ring_client::RingClient;

/// What the dataplane holds, if one answers (no answer: it replays on its Hello).
pub fn resync(ring: &mut RingClient) -> Option<Held> {
    match ring.resync(Duration::from_secs(2)) {
        Ok(h) => Some(Held {
            sas: h.sas.keys().map(|k| (k.inbound, k.spi, k.reqid)).collect(),
            policies: h.policies.into_iter().collect(),
        }),
        Err(e) => {
            warn!("{e}; iked goes on and installs everything when the dataplane says Hello");
            None
        }
    }
}

/// Inbound packet counts per SPI from the dataplane's counters file (DPD).
pub struct InboundActivity {
    name: String,
    file: Option<CountersFile>,
    next: Instant,
}

impl InboundActivity {
    pub fn new(name: String, now: Instant) -> InboundActivity {
        InboundActivity {
            name,
            file: None,
            next: now,
        }
    }

    /// (SPI, packets) of every inbound SA, at most once a second.
    pub fn read(&mut self, now: Instant) -> Option<Vec<(u32, u64)>> {
        if now < self.next {
            return None;
        }
        self.next = now + Duration::from_secs(1);
        if self.file.is_none() {
            self.file = CountersFile::open(&self.name).ok();
        }
        let snap = self.file.as_ref()?.snapshot();
        Some(
            snap.sas
                .iter()
                .filter(|s| s.inbound)
                .map(|s| (s.spi, s.packets))
                .collect(),
        )
    }
}

/// Answer one `vpnctl` request, if one is waiting. Returns whether there was one.
pub fn serve_control(listener: &UnixListener, d: &mut Daemon, now: u64, config: &Path) -> bool {
    let Ok((mut conn, _)) = listener.accept() else {
        return false;
    };
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    if std::io::BufReader::new(&conn).read_line(&mut line).is_err() {
        return true;
    }
    let reply = match Request::parse(line.trim()) {
        Ok(Request::Reload) => d.reload(now, IkedConfig::load(config).map_err(|e| e.to_string())),
        Ok(req) => d.handle_request(now, req),
        Err(e) => Reply {
            ok: false,
            text: format!("error: {e}"),
        },
    };
    let _ = conn.write_all(reply.encode().as_bytes());
    true
}
