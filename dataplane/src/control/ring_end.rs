//! The dataplane's ends of the shared-memory ring: records from the controller go to the
//! installer; acks, the Hello, and what the workers raised go back, queued (never blocking
//! the control thread) while the ring is full.

use std::collections::VecDeque;

use tracing::{info, warn};

use crate::control::install::Installer;
use crate::io::xdp::XdpSteering;
use crate::shm::records::{DataplaneRecord, FlowRecord, MAX_RECORD, SLOT_SIZE};
use crate::shm::{Consumer, Producer, RingDir, ShmFile};
use crate::worker::WorkerEvent;

/// The dataplane's ends of the shared-memory ring.
pub struct RingEnd {
    rx: Consumer,
    tx: Producer,
    /// Records for the controller waiting for room in the ring (kept, never dropped,
    /// up to `MAX_QUEUED`; a controller that stays away longer loses the oldest events).
    queued: VecDeque<DataplaneRecord>,
    lost: u64,
    buf: zeroize::Zeroizing<Vec<u8>>,
    out: Vec<DataplaneRecord>,
    replica_timeouts: u64,
    /// Held open: this process is the ring's one dataplane.
    _claim: std::fs::File,
}

const MAX_QUEUED: usize = 1 << 20;
/// How long acks wait for the workers to apply what they acknowledge (idle workers wake
/// every 5 ms).
const REPLICA_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

impl RingEnd {
    /// Claim `/dev/shm/NAME`, create or attach it, and say Hello with what `installer` holds.
    pub fn open(name: &str, slots: u32, installer: &Installer) -> Result<RingEnd, String> {
        let claim = ShmFile::claim(name, "dataplane").map_err(|e| e.to_string())?;
        let (shm, created) =
            ShmFile::open_or_create(name, slots, SLOT_SIZE).map_err(|e| e.to_string())?;
        info!(path = %shm.path().display(), created, "control ring {}", if created { "created" } else { "attached" });
        let mut r = RingEnd {
            rx: shm.consumer(RingDir::ToDataplane),
            tx: shm.producer(RingDir::ToControl),
            queued: VecDeque::new(),
            lost: 0,
            buf: zeroize::Zeroizing::new(vec![0u8; MAX_RECORD]),
            out: Vec::new(),
            replica_timeouts: 0,
            _claim: claim,
        };
        // Tell a controller that is already running to send what it wants installed.
        let (sas, policies) = installer.counts();
        let boot_id = (u64::from(std::process::id()) << 32)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        r.queue(DataplaneRecord::Hello {
            boot_id,
            sas: sas as u32,
            policies: policies as u32,
        });
        r.flush();
        Ok(r)
    }

    /// Apply what the controller sent; true if there was anything.
    pub fn drain(&mut self, installer: &mut Installer, xdp: &mut XdpSteering) -> bool {
        let mut any = false;
        for _ in 0..4096 {
            let Some(n) = self.rx.pop(&mut self.buf) else {
                break;
            };
            any = true;
            installer.apply_bytes(&self.buf[..n], xdp, &mut self.out);
            // Key bytes do not outlive the install in our buffer either.
            self.buf[..n].fill(0);
        }
        if any && !installer.db().wait_replicas(REPLICA_WAIT) {
            self.replica_timeouts += 1;
            warn!(
                times = self.replica_timeouts,
                "a worker has not applied the controller's changes within {REPLICA_WAIT:?}: acknowledging anyway"
            );
        }
        // Acked once every worker uses what was installed (a rekey's peer may send on a
        // new inbound SA as soon as the controller hears of it).
        for r in self.out.drain(..) {
            self.queued.push_back(r);
        }
        any
    }

    /// Queue a record for the controller (sent by the next [`flush`](Self::flush)).
    pub fn queue(&mut self, r: DataplaneRecord) {
        if self.queued.len() >= MAX_QUEUED {
            self.queued.pop_front();
            self.lost += 1;
        }
        self.queued.push_back(r);
    }

    /// Push queued records while the ring has room (never blocks the control thread).
    pub fn flush(&mut self) {
        let mut b = [0u8; MAX_RECORD];
        while let Some(r) = self.queued.front() {
            let n = r.encode(&mut b);
            match self.tx.try_push(&b[..n]) {
                Ok(true) => {
                    self.queued.pop_front();
                }
                Ok(false) => break,
                Err(e) => {
                    warn!("dropping a record the ring cannot carry: {e}");
                    self.queued.pop_front();
                    self.lost += 1;
                }
            }
        }
    }
}

/// The ring record that tells the controller about a worker's event (`None` for what only
/// the dataplane acts on).
pub fn record_of(ev: &WorkerEvent) -> Option<DataplaneRecord> {
    match *ev {
        WorkerEvent::Acquire {
            policy,
            reqid,
            flow,
        } => Some(DataplaneRecord::Acquire {
            policy,
            reqid,
            flow: FlowRecord {
                src: flow.src,
                dst: flow.dst,
                protocol: flow.protocol,
                src_port: flow.src_port.unwrap_or(0),
                dst_port: flow.dst_port.unwrap_or(0),
            },
        }),
        WorkerEvent::UnknownSpi { spi, src, dst } => {
            Some(DataplaneRecord::UnknownSpi { spi, src, dst })
        }
        WorkerEvent::Sa {
            direction,
            reqid,
            event,
        } => Some(DataplaneRecord::SaEvent {
            direction,
            reqid,
            event,
        }),
        WorkerEvent::LeaseLow { .. } => None,
    }
}

/// Events the operator should see in the log as well as the controller.
pub fn log_event(ev: &WorkerEvent) {
    match ev {
        WorkerEvent::Acquire {
            policy,
            reqid,
            flow,
        } => info!(
            policy, reqid, src = %flow.src, dst = %flow.dst, protocol = flow.protocol,
            "traffic matched policy {policy} but its SA (reqid {reqid}) is not installed: acquire"
        ),
        WorkerEvent::UnknownSpi { spi, src, dst } => info!(
            spi = format_args!("{spi:#010x}"), %src, %dst,
            "ESP for an SPI this dataplane does not hold"
        ),
        WorkerEvent::Sa {
            direction,
            reqid,
            event,
        } => {
            info!(?direction, reqid, ?event, "SA event")
        }
        WorkerEvent::LeaseLow { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::FlowKey;
    use std::net::IpAddr;

    #[test]
    fn acquire_becomes_a_record_and_lease_stays_here() {
        let a: IpAddr = "10.1.0.1".parse().unwrap();
        let b: IpAddr = "10.2.0.1".parse().unwrap();
        let flow = FlowKey {
            src: a,
            dst: b,
            protocol: 17,
            src_port: Some(5),
            dst_port: None,
        };
        let r = record_of(&WorkerEvent::Acquire {
            policy: 1,
            reqid: 2,
            flow,
        });
        assert!(matches!(
            r,
            Some(DataplaneRecord::Acquire {
                policy: 1,
                reqid: 2,
                flow: FlowRecord {
                    src_port: 5,
                    dst_port: 0,
                    ..
                }
            })
        ));
        assert_eq!(record_of(&WorkerEvent::LeaseLow { reqid: 1, spi: 2 }), None);
    }
}
