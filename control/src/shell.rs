//! The I/O pieces of `iked` around the daemon core: reading what the dataplane holds at
//! start, its inbound packet counters (for DPD), and the `vpnctl` control socket. Kept out
//! of the binary so the binary stays sockets and a poll loop.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use dataplane::shm::counters::CountersFile;
use tracing::warn;

use crate::config::IkedConfig;
use crate::daemon::command::{encode_reply, parse_request, Reply, Request};
use crate::daemon::{Daemon, Held, SaTraffic};
use crate::ring_client::RingClient;

/// What the dataplane holds, if one answers (no answer: it replays on its Hello).
pub fn resync(ring: &mut RingClient) -> Option<Held> {
    match ring.resync(Duration::from_secs(2)) {
        Ok(h) => Some(Held {
            sas: h.sas.keys().map(|k| (k.inbound, k.spi, k.reqid)).collect(),
            policies: h.policies.into_iter().collect(),
            udp_paths: h.udp_paths,
        }),
        Err(e) => {
            warn!("{e}; iked goes on and installs everything when the dataplane says Hello");
            None
        }
    }
}

/// Packet and byte counts per SA from the dataplane's counters file (DPD, `vpnctl list`).
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

    /// The traffic of every SA, at most once a second.
    pub fn read(&mut self, now: Instant) -> Option<Vec<SaTraffic>> {
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
                .map(|s| SaTraffic {
                    spi: s.spi,
                    inbound: s.inbound,
                    packets: s.packets,
                    bytes: s.bytes,
                })
                .collect(),
        )
    }
}

/// What only the shell knows about iked, for `vpnctl status`.
#[derive(Debug, Clone)]
pub struct ShellInfo {
    pub config: std::path::PathBuf,
    pub control: std::path::PathBuf,
    pub ring: String,
    pub started: Instant,
}

impl ShellInfo {
    /// Fill in the daemon's status report with the process's side.
    pub fn complete(&self, status: &mut crate::api::IkedStatus, now: Instant) {
        status.version = env!("CARGO_PKG_VERSION").to_string();
        status.pid = std::process::id();
        status.uptime_s = now.duration_since(self.started).as_secs_f64();
        status.config = self.config.display().to_string();
        status.control_socket = self.control.display().to_string();
        status.ring = self.ring.clone();
    }
}

/// Answer one `vpnctl` request, if one is waiting. Returns whether there was one.
pub fn serve_control(listener: &UnixListener, d: &mut Daemon, now: u64, info: &ShellInfo) -> bool {
    let config = info.config.as_path();
    let Ok((mut conn, _)) = listener.accept() else {
        return false;
    };
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    if std::io::BufReader::new(&conn).read_line(&mut line).is_err() {
        return true;
    }
    let reply = match parse_request(&line) {
        Ok(Request::Reload) => d.reload(now, IkedConfig::load(config).map_err(|e| e.to_string())),
        Ok(Request::Status) => {
            let mut s = d.status_report(now);
            info.complete(&mut s, Instant::now());
            Reply {
                ok: true,
                text: String::new(),
                data: serde_json::to_value(s).unwrap_or_default(),
            }
        }
        Ok(req) => d.handle_request(now, req),
        Err(e) => Reply {
            ok: false,
            text: e,
            data: serde_json::Value::Null,
        },
    };
    let _ = conn.write_all(encode_reply(&reply).as_bytes());
    true
}

/// A datagram to send: from (our address and port), to, bytes.
pub type Datagram = (SocketAddr, SocketAddr, Vec<u8>);

/// Datagrams held until the dataplane has applied the changes asked before them. RFC 7296
/// §2.8: a rekey's new inbound SA must be in place before the message that lets the peer
/// send on it leaves (make-before-break); the ring is asynchronous, so the shell waits for
/// its acks. Bounded: after `max_hold` a datagram goes anyway (a dataplane that does not
/// answer must not stall IKE; it gets everything replayed when it says Hello).
pub struct SendGate {
    held: VecDeque<(u64, std::time::Instant, Datagram)>,
    max_hold: Duration,
}

impl SendGate {
    pub fn new(max_hold: Duration) -> SendGate {
        SendGate {
            held: VecDeque::new(),
            max_hold,
        }
    }

    /// A datagram that must wait for the ring changes up to sequence number `barrier`
    /// (`settled`: whether they are answered already). Returns it if it may go now; order
    /// is kept behind datagrams still held.
    pub fn offer(
        &mut self,
        now: std::time::Instant,
        barrier: u64,
        settled: bool,
        d: Datagram,
    ) -> Option<Datagram> {
        if settled && self.held.is_empty() {
            return Some(d);
        }
        self.held.push_back((barrier, now, d));
        None
    }

    /// The held datagrams that may go now, in order.
    pub fn release(
        &mut self,
        now: std::time::Instant,
        settled: impl Fn(u64) -> bool,
    ) -> Vec<Datagram> {
        let mut out = Vec::new();
        while let Some((barrier, since, _)) = self.held.front() {
            let timed_out = now.duration_since(*since) >= self.max_hold;
            if !settled(*barrier) && !timed_out {
                break;
            }
            if timed_out {
                warn!(
                    "the dataplane has not confirmed a change within {:?}: sending the IKE message anyway",
                    self.max_hold
                );
            }
            if let Some((_, _, d)) = self.held.pop_front() {
                out.push(d);
            }
        }
        out
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// How many workers the dataplane on ring `ring` runs (its `/dev/shm/RING.info`), for
/// `per_resource_sas = "auto"` (RFC 9611); 1 when it cannot be read (the dataplane starts
/// later): then "auto" negotiates no per-resource Child SA, and says so.
pub fn dataplane_workers(ring: &str) -> usize {
    match dataplane::shm::info::DataplaneInfo::read(&dataplane::shm::info::info_path(ring)) {
        Ok(i) => i.workers.len().max(1),
        Err(e) => {
            tracing::info!(
                "dataplane workers unknown ({e}): per_resource_sas = \"auto\" means none"
            );
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn d(n: u8) -> Datagram {
        (
            "127.0.0.1:500".parse().unwrap(),
            "127.0.0.2:500".parse().unwrap(),
            vec![n],
        )
    }

    #[test]
    fn datagrams_wait_for_the_changes_asked_before_them_in_order() {
        let t0 = Instant::now();
        let mut g = SendGate::new(Duration::from_millis(200));
        assert_eq!(g.offer(t0, 0, true, d(1)), Some(d(1)));
        // Inbound SA (seq 1) not yet acked: the answer waits.
        assert_eq!(g.offer(t0, 1, false, d(2)), None);
        // Settled later changes do not let an earlier datagram jump its queue.
        assert_eq!(g.offer(t0, 1, true, d(3)), None);
        assert!(g.release(t0, |s| s < 1).is_empty());
        assert_eq!(g.len(), 2);
        assert_eq!(g.release(t0, |s| s <= 1), vec![d(2), d(3)]);
        assert!(g.is_empty());
    }

    #[test]
    fn a_silent_dataplane_delays_a_datagram_at_most_max_hold() {
        let t0 = Instant::now();
        let mut g = SendGate::new(Duration::from_millis(200));
        assert_eq!(g.offer(t0, 5, false, d(1)), None);
        assert!(g
            .release(t0 + Duration::from_millis(199), |_| false)
            .is_empty());
        assert_eq!(
            g.release(t0 + Duration::from_millis(200), |_| false),
            vec![d(1)]
        );
    }
}
