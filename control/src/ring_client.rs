//! The control plane's end of the shared-memory ring: send records, match their acks,
//! reconcile with what a (re)started dataplane holds.
//!
//! Protocol (see `dataplane::shm::records`):
//! - every control record carries a txid; the dataplane answers each with an Ack;
//! - `Resync` is answered with ResyncBegin, one HeldSa / HeldPolicy per item, ResyncEnd;
//! - a dataplane that starts sends Hello: a controller then replays its whole state
//!   (Flush, then every SA and policy).
//!
//! The controller decides what the dataplane should hold; [`Desired`] is that state as
//! encoded records, and [`RingClient::reconcile`] brings a dataplane to it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dataplane::control::static_sa::StaticConfig;
use dataplane::sa::Direction;
use dataplane::shm::records::{
    self, encode_delete_policy, encode_delete_sa, encode_flush, encode_resync, status,
    DataplaneRecord, MAX_RECORD, SLOT_SIZE,
};
use dataplane::shm::{Consumer, Producer, RingDir, ShmError, ShmFile};
use zeroize::Zeroizing;

/// Why talking to the dataplane failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(transparent)]
    Shm(#[from] ShmError),
    #[error("no answer from the dataplane on ring {ring} within {waited:?}: is a dataplane running with --ring {ring}?")]
    NoAnswer { ring: String, waited: Duration },
    #[error("the dataplane refused {what}: {message}")]
    Refused { what: String, message: String },
    #[error("{0}")]
    Config(String),
}

/// An SA as the dataplane reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SaKey {
    pub inbound: bool,
    pub spi: u32,
    pub reqid: u32,
}

/// What a dataplane holds (from a resync).
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub sas: BTreeMap<SaKey, (u64, u64)>,
    pub policies: BTreeSet<u32>,
    /// (reqid, ours, the peer's): the outer endpoints of UDP-encapsulated outbound SAs.
    pub udp_paths: Vec<(u32, SocketAddr, SocketAddr)>,
}

/// One record of the desired state.
pub struct DesiredRecord {
    pub what: String,
    pub sa: Option<SaKey>,
    pub policy: Option<u32>,
    pub bytes: Zeroizing<Vec<u8>>,
}

/// The state a controller wants the dataplane to hold, as encoded records.
#[derive(Default)]
pub struct Desired {
    pub records: Vec<DesiredRecord>,
}

impl Desired {
    /// The SAs and policies of a static file (reqids and policy ids as the dataplane's
    /// `--sa-file` assigns them).
    pub fn from_static(cfg: &StaticConfig) -> Result<Desired, String> {
        let mut out = Desired::default();
        let mut policy = 0;
        for r in dataplane::control::static_sa::to_records(cfg)? {
            let (sa, pol) = match (&r.sa, records::decode(&r.bytes)) {
                (Some(_), Ok(records::ControlRecord::AddSa { sa, .. })) => (
                    Some(SaKey {
                        inbound: sa.direction == Direction::Inbound,
                        spi: sa.config.spi,
                        reqid: sa.reqid,
                    }),
                    None,
                ),
                _ => {
                    policy += 1;
                    (None, Some(policy))
                }
            };
            out.records.push(DesiredRecord {
                what: r.what,
                sa,
                policy: pol,
                bytes: r.bytes,
            });
        }
        Ok(out)
    }
}

/// Counts of what a reconcile changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub added: usize,
    pub removed: usize,
    pub kept: usize,
}

/// The control end of one ring.
pub struct RingClient {
    name: String,
    tx: Producer,
    rx: Consumer,
    next_txid: u32,
    /// Records read while waiting for something else (events, hellos), for `poll`.
    backlog: VecDeque<DataplaneRecord>,
    buf: Zeroizing<Vec<u8>>,
    /// Held open: this process is the ring's one controller.
    _claim: std::fs::File,
}

impl RingClient {
    /// Attach to (or create) /dev/shm/NAME.
    pub fn attach(name: &str, slots: u32) -> Result<RingClient, ClientError> {
        let claim = ShmFile::claim(name, "controller")?;
        let (shm, _) = ShmFile::open_or_create(name, slots, SLOT_SIZE)?;
        // Start txids somewhere a previous controller's acks still in the ring will not be.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos() ^ std::process::id().rotate_left(16));
        Ok(RingClient {
            name: name.to_string(),
            tx: shm.producer(RingDir::ToDataplane),
            rx: shm.consumer(RingDir::ToControl),
            next_txid: seed | 1,
            backlog: VecDeque::new(),
            buf: Zeroizing::new(vec![0u8; MAX_RECORD]),
            _claim: claim,
        })
    }

    /// Send an encoded control record under a fresh txid (written into its header).
    /// Waits while the ring is full (backpressure) up to `timeout`.
    pub fn send(&mut self, rec: &[u8], timeout: Duration) -> Result<u32, ClientError> {
        let txid = self.next_txid;
        self.next_txid = self.next_txid.wrapping_add(1);
        let mut b = Zeroizing::new(rec.to_vec());
        if b.len() >= 8 {
            b[4..8].copy_from_slice(&txid.to_le_bytes());
        }
        self.tx.push(&b, timeout).map_err(|e| match e {
            ShmError::Timeout(waited) => ClientError::NoAnswer {
                ring: self.name.clone(),
                waited,
            },
            e => e.into(),
        })?;
        Ok(txid)
    }

    /// Send without waiting: `Ok(None)` when the ring is full (try again later).
    pub fn try_send(&mut self, rec: &[u8]) -> Result<Option<u32>, ClientError> {
        let txid = self.next_txid;
        let mut b = Zeroizing::new(rec.to_vec());
        if b.len() >= 8 {
            b[4..8].copy_from_slice(&txid.to_le_bytes());
        }
        if self.tx.try_push(&b)? {
            self.next_txid = self.next_txid.wrapping_add(1);
            Ok(Some(txid))
        } else {
            Ok(None)
        }
    }

    fn read(&mut self) -> Option<DataplaneRecord> {
        let n = self.rx.pop(&mut self.buf)?;
        match DataplaneRecord::decode(&self.buf[..n]) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("ignoring a dataplane record: {e}");
                None
            }
        }
    }

    /// The next record that nobody waited for (events, hellos), if any.
    pub fn poll(&mut self) -> Option<DataplaneRecord> {
        self.backlog.pop_front().or_else(|| self.read())
    }

    /// Wait for the ack of `txid`; other records go to the backlog.
    pub fn wait_ack(&mut self, txid: u32, timeout: Duration) -> Result<(u16, String), ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.read() {
                Some(DataplaneRecord::Ack {
                    txid: t,
                    status,
                    message,
                }) if t == txid => return Ok((status, message)),
                Some(DataplaneRecord::Ack { .. }) => {} // an ack nobody waits for any more
                Some(other) => self.backlog.push_back(other),
                None => {
                    if Instant::now() > deadline {
                        return Err(ClientError::NoAnswer {
                            ring: self.name.clone(),
                            waited: timeout,
                        });
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }

    /// Send and wait for a successful ack.
    pub fn call(&mut self, what: &str, rec: &[u8], timeout: Duration) -> Result<(), ClientError> {
        let txid = self.send(rec, timeout)?;
        match self.wait_ack(txid, timeout)? {
            (status::OK, _) => Ok(()),
            (_, message) => Err(ClientError::Refused {
                what: what.to_string(),
                message,
            }),
        }
    }

    /// Ask the dataplane what it holds.
    pub fn resync(&mut self, timeout: Duration) -> Result<Held, ClientError> {
        let mut b = [0u8; 8];
        let n = encode_resync(&mut b, 0);
        let txid = self.send(&b[..n], timeout)?;
        let deadline = Instant::now() + timeout;
        let mut held = Held::default();
        let mut begun = false;
        loop {
            match self.read() {
                Some(DataplaneRecord::ResyncBegin { txid: t, .. }) if t == txid => begun = true,
                Some(DataplaneRecord::HeldSa {
                    txid: t,
                    direction,
                    spi,
                    reqid,
                    packets,
                    bytes,
                    udp_path,
                }) if t == txid && begun => {
                    if let Some((ours, peer)) = udp_path {
                        held.udp_paths.push((reqid, ours, peer));
                    }
                    // The raw reqid (inbound too: the daemon maps inherited SAs to
                    // children by it); `reconcile` compares inbound SAs without it.
                    let key = SaKey {
                        inbound: direction == Direction::Inbound,
                        spi,
                        reqid,
                    };
                    held.sas.insert(key, (packets, bytes));
                }
                Some(DataplaneRecord::HeldPolicy { txid: t, id, .. }) if t == txid && begun => {
                    held.policies.insert(id);
                }
                Some(DataplaneRecord::ResyncEnd { txid: t }) if t == txid && begun => {
                    return Ok(held)
                }
                // A hello before our answer is from a dataplane that (re)started before it
                // read our request: its answer describes it, so nothing to replay.
                Some(DataplaneRecord::Hello { .. }) | Some(DataplaneRecord::Ack { .. }) => {}
                Some(other) => self.backlog.push_back(other),
                None => {
                    if Instant::now() > deadline {
                        return Err(ClientError::NoAnswer {
                            ring: self.name.clone(),
                            waited: timeout,
                        });
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }

    /// Bring the dataplane to `want`: add what it lacks, delete what it holds that is not
    /// wanted, keep the rest (an SA with the same direction, SPI and reqid is taken to be
    /// the same SA: key material is never reported back).
    pub fn reconcile(
        &mut self,
        want: &Desired,
        held: &Held,
        timeout: Duration,
    ) -> Result<Reconciled, ClientError> {
        let mut r = Reconciled::default();
        let norm = |k: SaKey| SaKey {
            reqid: if k.inbound { 0 } else { k.reqid },
            ..k
        };
        let wanted_sas: BTreeSet<SaKey> =
            want.records.iter().filter_map(|d| d.sa).map(norm).collect();
        let wanted_pols: BTreeSet<u32> = want.records.iter().filter_map(|d| d.policy).collect();
        let mut b = [0u8; 64];
        // Policies first, so no policy points at an SA about to go.
        for &id in held.policies.difference(&wanted_pols) {
            let n = encode_delete_policy(&mut b, 0, id);
            self.call(&format!("delete of policy {id}"), &b[..n], timeout)?;
            r.removed += 1;
        }
        for k in held.sas.keys().filter(|k| !wanted_sas.contains(&norm(**k))) {
            let dir = if k.inbound {
                Direction::Inbound
            } else {
                Direction::Outbound
            };
            let n = encode_delete_sa(&mut b, 0, dir, k.spi, k.reqid);
            self.call(&format!("delete of SA {:#010x}", k.spi), &b[..n], timeout)?;
            r.removed += 1;
        }
        for d in &want.records {
            let have = match (d.sa, d.policy) {
                (Some(k), _) => held.sas.keys().any(|h| norm(*h) == norm(k)),
                (None, Some(id)) => held.policies.contains(&id),
                _ => false,
            };
            if have {
                r.kept += 1;
            } else {
                self.call(&d.what, &d.bytes, timeout)?;
                r.added += 1;
            }
        }
        Ok(r)
    }

    /// Replace everything the dataplane holds with `want` (after a dataplane restart).
    pub fn replay(&mut self, want: &Desired, timeout: Duration) -> Result<usize, ClientError> {
        let mut b = [0u8; 8];
        let n = encode_flush(&mut b, 0);
        self.call("flush", &b[..n], timeout)?;
        for d in &want.records {
            self.call(&d.what, &d.bytes, timeout)?;
        }
        Ok(want.records.len())
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}
