//! The daemon's non-blocking end of the ring: changes queue here and go out as the ring has
//! room; acks are matched to what they answer. Nothing here waits, so a slow, full or
//! absent dataplane never stalls IKE (retransmissions, DPD, other peers).
//!
//! Refusals are logged with what was refused; records with no ack after [`ACK_TIMEOUT`]
//! are reported as lost (a dataplane that comes back says Hello and gets everything
//! replayed, so nothing is retried here).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use dataplane::shm::records::{
    encode_add_policy, encode_add_sa, encode_delete_policy, encode_delete_sa, status,
    DataplaneRecord, MAX_RECORD,
};
use tracing::{debug, warn};
use zeroize::Zeroizing;

use crate::daemon::dataplane_ops::DpOp;
use crate::ring_client::{ClientError, RingClient};

/// How long an ack may take before the record is reported lost.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Changes kept while the ring is full; past this the oldest go (a Hello replays all).
const MAX_QUEUED: usize = 200_000;

/// What the pump has seen, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PumpCounters {
    pub sent: u64,
    pub acked: u64,
    pub refused: u64,
    pub lost: u64,
    pub dropped_queued: u64,
}

pub struct RingPump {
    client: RingClient,
    /// (sequence number, what, record)
    queue: VecDeque<(u64, String, Zeroizing<Vec<u8>>)>,
    /// txid → (sequence number, what, when sent)
    inflight: HashMap<u32, (u64, String, Instant)>,
    /// Sequence number of the last change pushed (0: none yet).
    pushed: u64,
    pub counters: PumpCounters,
}

/// Encode a change as its ring record.
pub fn encode(op: &DpOp) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_RECORD]);
    let n = match op {
        DpOp::AddSa(sa) => encode_add_sa(&mut buf, 0, sa).map_err(|e| e.to_string())?,
        DpOp::DeleteSa {
            direction,
            spi,
            reqid,
        } => encode_delete_sa(&mut buf, 0, *direction, *spi, *reqid),
        DpOp::AddPolicy(rule) => encode_add_policy(&mut buf, 0, rule),
        DpOp::DeletePolicy(id) => encode_delete_policy(&mut buf, 0, *id),
    };
    buf.truncate(n);
    Ok(buf)
}

impl RingPump {
    pub fn new(client: RingClient) -> RingPump {
        RingPump {
            client,
            queue: VecDeque::new(),
            inflight: HashMap::new(),
            pushed: 0,
            counters: PumpCounters::default(),
        }
    }

    pub fn client(&mut self) -> &mut RingClient {
        &mut self.client
    }

    /// Queue a change; returns its sequence number (for [`RingPump::settled_through`]).
    pub fn push(&mut self, op: &DpOp) -> u64 {
        self.pushed += 1;
        match encode(op) {
            Ok(bytes) => {
                if self.queue.len() >= MAX_QUEUED {
                    self.queue.pop_front();
                    self.counters.dropped_queued += 1;
                }
                self.queue.push_back((self.pushed, op.describe(), bytes));
            }
            Err(e) => warn!("cannot encode {} for the dataplane: {e}", op.describe()),
        }
        self.pushed
    }

    /// The sequence number of the last change pushed.
    pub fn last_pushed(&self) -> u64 {
        self.pushed
    }

    /// Whether every change up to sequence number `seq` is answered (acked, refused or
    /// given up on): what was asked before is in the dataplane.
    pub fn settled_through(&self, seq: u64) -> bool {
        self.queue.front().is_none_or(|q| q.0 > seq) && self.inflight.values().all(|v| v.0 > seq)
    }

    /// Send what fits, read what came back. Returns the records that are not acks
    /// (hellos, acquires, SA events) for the daemon core.
    pub fn pump(&mut self, now: Instant) -> Result<Vec<DataplaneRecord>, ClientError> {
        while let Some((seq, what, bytes)) = self.queue.front() {
            match self.client.try_send(bytes)? {
                Some(txid) => {
                    self.inflight.insert(txid, (*seq, what.clone(), now));
                    self.queue.pop_front();
                    self.counters.sent += 1;
                }
                None => break,
            }
        }
        let mut out = Vec::new();
        while let Some(rec) = self.client.poll() {
            match rec {
                DataplaneRecord::Ack {
                    txid,
                    status: st,
                    message,
                } => {
                    let Some((_, what, _)) = self.inflight.remove(&txid) else {
                        debug!(txid, "an ack for a record we no longer wait for");
                        continue;
                    };
                    match st {
                        status::OK => self.counters.acked += 1,
                        // Replays after a Hello or a restart re-add what may be there.
                        status::DUPLICATE if what.starts_with("policy") => {
                            self.counters.acked += 1;
                            debug!("{what}: already installed");
                        }
                        _ => {
                            self.counters.refused += 1;
                            warn!("the dataplane refused {what}: {message}");
                        }
                    }
                }
                other => out.push(other),
            }
        }
        let lost: Vec<u32> = self
            .inflight
            .iter()
            .filter(|(_, (_, _, at))| now.duration_since(*at) > ACK_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        if !lost.is_empty() {
            self.counters.lost += lost.len() as u64;
            let first = self.inflight.get(&lost[0]).map(|w| w.1.clone());
            warn!(
                n = lost.len(),
                first = first.as_deref().unwrap_or(""),
                "no ack from the dataplane on ring {} within {:?}: is it running? (it gets everything again when it says Hello)",
                self.client.name(),
                ACK_TIMEOUT
            );
            for t in lost {
                self.inflight.remove(&t);
            }
        }
        Ok(out)
    }

    /// Changes waiting for room in the ring, and records waiting for their ack.
    pub fn backlog(&self) -> (usize, usize) {
        (self.queue.len(), self.inflight.len())
    }
}
