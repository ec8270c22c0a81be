//! The IKE daemon's logic, sans-IO (the quinn-proto `Endpoint` shape): datagrams, timer
//! ticks, dataplane records and operator commands in; datagrams to send and dataplane
//! changes out ([`Action`]). The `iked` binary owns the sockets, the ring, signals and the
//! clock; everything it decides is decided here, where tests drive it with a virtual clock.
//!
//! What it owns:
//! - the IKE SAs, routed to by our SPI (a map), with cookies (RFC 7296 §2.6) and half-open
//!   limits in front of them;
//! - per configured child: whether it should be up, its installed Child SAs, their
//!   policies, inherited (stale) SAs, retries with backoff, DPD and close actions;
//! - the dataplane's desired state, replayed whole when a dataplane says Hello.
//!
//! Fault semantics are tabled in docs/ARCHITECTURE.md ("Faults and restarts").

pub mod command;
pub mod conn;
pub mod dataplane_ops;
pub mod endpoint;
pub mod events;
mod install;
mod keys;
pub mod ratelimit;
mod reauth;
mod report;
pub mod spi;
mod timers;
pub mod traffic;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use dataplane::sa::Direction;
use tracing::{debug, info, warn};

use crate::config::{CloseAction, DpdAction, IkedConfig, StartAction};
use crate::ike::sa::{
    ChildRequest, CookieJar, Event, IkeError, IkeSa, Phase, Random, Role, IKE_PORT, NAT_T_PORT,
};

use conn::{ConnState, StaleSa};
use dataplane_ops::{policy_owner, DpOp};
use endpoint::{classify, IkeDrop, Verdict};
use ratelimit::LogLimiter;
use spi::SpiPool;

/// Tunables; the defaults are what `iked` runs with.
#[derive(Debug, Clone)]
pub struct Options {
    /// RFC 3948 §2.3 keepalives while a NAT is in the path.
    pub nat_keepalive_ms: u64,
    /// Half-open responder SAs (in all) from which an IKE_SA_INIT must carry a COOKIE.
    pub cookie_threshold: usize,
    /// Half-open responder SAs allowed per source address, and in all.
    pub half_open_per_source: usize,
    pub half_open_max: usize,
    /// A responder SA that has not seen IKE_AUTH after this long is forgotten.
    pub half_open_timeout_ms: u64,
    /// Retries of a failed initiation: first delay, doubling up to the cap, ±25 % jitter.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Inherited SAs stay this long after their child is up again (packets in flight).
    pub stale_grace_ms: u64,
    /// Inherited SAs whose child does not come back go after this long.
    pub stale_timeout_ms: u64,
    /// The inbound SA a rekey replaced stays this long after its Delete was exchanged, for
    /// packets in flight and reordered.
    pub rekey_grace_ms: u64,
    /// Unix time in ms at `now == 0`, for certificate validity (the shell sets it from the
    /// system clock; tests choose it).
    pub wall_clock_base_ms: u64,
    /// The dataplane's workers (the shell reads them from `RING.info`): what
    /// `per_resource_sas = "auto"` means (RFC 9611).
    pub dataplane_workers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nat_keepalive_ms: 20_000,
            cookie_threshold: 32,
            half_open_per_source: 8,
            half_open_max: 2048,
            half_open_timeout_ms: 30_000,
            retry_base_ms: 2_000,
            retry_max_ms: 120_000,
            stale_grace_ms: 5_000,
            stale_timeout_ms: 120_000,
            rekey_grace_ms: 2_000,
            wall_clock_base_ms: 0,
            dataplane_workers: 1,
        }
    }
}

/// Where an event happened, for its log fields.
#[derive(Debug, Clone, Default)]
pub struct EventAt {
    pub conn: Option<String>,
    pub peer: Option<SocketAddr>,
    pub ike_spi: Option<u64>,
}

/// Half-open SAs from one address beyond which a COOKIE is asked for.
const COOKIE_PER_SOURCE: usize = 2;

/// How long a half-open SA the peer started (no IKE_AUTH yet) holds back our own initiation
/// of its connection: a round trip and the peer's AUTH computation, with room to spare.
const PEER_HALF_OPEN_HOLD_MS: u64 = 1_000;

/// What the shell must do.
#[derive(Debug)]
pub enum Action {
    /// Send exactly these bytes (the non-ESP marker is already in front of IKE on 4500).
    Send {
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    },
    /// Apply this change to the dataplane (through the ring).
    Dataplane(DpOp),
}

/// What the dataplane held when we attached (from a resync), to adopt or clean up.
#[derive(Debug, Clone, Default)]
pub struct Held {
    /// (inbound?, SPI, reqid)
    pub sas: Vec<(bool, u32, u32)>,
    pub policies: Vec<u32>,
    /// (reqid, ours, the peer's): the outer endpoints of UDP-encapsulated outbound SAs, the
    /// path through a NAT that the previous daemon's IKE SA used.
    pub udp_paths: Vec<(u32, SocketAddr, SocketAddr)>,
}

/// One SA's traffic as the dataplane counted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaTraffic {
    pub spi: u32,
    pub inbound: bool,
    pub packets: u64,
    pub bytes: u64,
}

/// Counters of what the daemon dropped or did on its own, for `vpnctl` and tests.
#[derive(Debug, Clone, Default)]
pub struct DaemonCounters {
    pub drops: HashMap<&'static str, u64>,
    pub cookies_sent: u64,
    pub dpd_probes: u64,
    pub peers_dead: u64,
    /// IKE SAs that came up (IKE_AUTH done, as initiator or responder).
    pub negotiations_established: u64,
    /// Failures kept by [`Daemon::record_failure`], by finding id.
    pub negotiations_failed: HashMap<String, u64>,
}

struct SaEntry {
    sa: IkeSa,
    /// Index into `conns` (by name at creation; re-resolved on reload).
    conn: String,
    /// Responder SAs still half-open count against the limits.
    half_open_from: Option<IpAddr>,
    created: u64,
    next_keepalive: Option<u64>,
    /// No DPD probe before this (one probe at a time; the next after another dpd_delay).
    dpd_not_before: u64,
    /// Dropped because the peer sent INITIAL_CONTACT on a newer SA: its children going
    /// down is not the peer closing them (no close_action).
    abandoned: bool,
    /// When to reauthenticate (swanctl `reauth_time`; kept across IKE SA rekeys).
    reauth_at: Option<u64>,
}

/// The daemon core.
pub struct Daemon {
    opts: Options,
    rng: Box<dyn Random + Send>,
    conns: Vec<ConnState>,
    /// By our SPI; ordered so that work over every SA (timers, deletes, reports) happens in
    /// the same order every run (a HashMap's random order made the same input send the same
    /// messages in another order: found by ike_exchange's determinism check).
    sas: BTreeMap<u64, SaEntry>,
    /// (SPIi, peer address) → our SPI, for retransmitted IKE_SA_INIT requests.
    init_index: HashMap<(u64, IpAddr), u64>,
    half_open: HashMap<IpAddr, usize>,
    half_open_total: usize,
    cookies: CookieJar,
    spis: SpiPool,
    /// Last packet count and when it last grew, per inbound SPI (DPD: §2.4, probe only
    /// when nothing came in).
    activity: HashMap<u32, (u64, u64)>,
    /// The dataplane's last counts per (inbound?, SPI): (packets, bytes), for `vpnctl list`.
    traffic: HashMap<(bool, u32), (u64, u64)>,
    stale_deadline: Option<u64>,
    /// Connections to bring up once the current event is handled.
    pending_ensure: Vec<usize>,
    actions: VecDeque<Action>,
    limiter: LogLimiter,
    pub counters: DaemonCounters,
    /// Recent events and IKE message summaries (`vpnctl log`, `vpnctl trace`).
    pub events: events::EventLog,
    /// Each SA's packets over the last minute (`vpnctl list`, `vpnctl diagnose`).
    traffic_history: traffic::TrafficHistory,
    /// The outcome of the last `vpnctl reload`.
    last_reload: Option<crate::api::ReloadOutcome>,
    /// Errors sending to peers, by (peer, error); bounded (see `report::SEND_ERRORS`).
    send_errors: Vec<crate::api::SendError>,
}

/// `base ± 25 %`, from the daemon's random source.
fn jitter(base: u64, rng: &mut dyn Random) -> u64 {
    let mut b = [0u8; 2];
    rng.fill(&mut b);
    let r = u64::from(u16::from_be_bytes(b)); // 0 ..= 65535
    base - base / 4 + base * r / (2 * 65536)
}

fn ts_list(ts: &[crate::ike::wire::Ts]) -> String {
    ts.iter()
        .map(crate::ike::child::show_ts)
        .collect::<Vec<_>>()
        .join(",")
}

/// RFC 9611: how many per-resource Child SAs each child negotiates, now that the dataplane's
/// worker count is known (`per_resource_sas = "auto"`).
pub(crate) fn resolve_resources(cfg: &mut IkedConfig, workers: usize) {
    for c in &mut cfg.connections {
        for (k, ch) in c.children.iter().enumerate() {
            if let Some(ike) = c.connection.children.get_mut(k) {
                ike.per_resource = ch.per_resource_sas.resolve(workers);
            }
        }
    }
}

impl Daemon {
    pub fn new(mut cfg: IkedConfig, opts: Options, mut rng: Box<dyn Random + Send>) -> Daemon {
        resolve_resources(&mut cfg, opts.dataplane_workers);
        let mut secret = [0u8; 32];
        rng.fill(&mut secret);
        Daemon {
            opts,
            rng,
            conns: cfg.connections.into_iter().map(ConnState::new).collect(),
            sas: BTreeMap::new(),
            init_index: HashMap::new(),
            half_open: HashMap::new(),
            half_open_total: 0,
            cookies: CookieJar::new(secret),
            spis: SpiPool::default(),
            activity: HashMap::new(),
            traffic: HashMap::new(),
            stale_deadline: None,
            pending_ensure: Vec::new(),
            actions: VecDeque::new(),
            limiter: LogLimiter::default(),
            counters: DaemonCounters::default(),
            events: events::EventLog::default(),
            traffic_history: traffic::TrafficHistory::default(),
            last_reload: None,
            send_errors: Vec::new(),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn dp(&mut self, op: DpOp) {
        self.actions.push_back(Action::Dataplane(op));
    }

    fn drop_datagram(&mut self, now: u64, why: IkeDrop, from: SocketAddr) {
        *self.counters.drops.entry(why.name()).or_default() += 1;
        if self.limiter.allow(now, why.name()) {
            let at = EventAt {
                peer: Some(from),
                ..EventAt::default()
            };
            self.event(
                now,
                tracing::Level::DEBUG,
                "event",
                at,
                format!("IKE datagram dropped: {}", why.name()),
            );
        }
    }

    /// An IKEv1 datagram (major version 1, RFC 2409): counted as the drop "ikev1" and, at
    /// a limited rate, an event naming the peer (`vpnctl diagnose`: finding "ikev1-peer").
    fn ikev1_peer(&mut self, now: u64, remote: SocketAddr) {
        *self
            .counters
            .drops
            .entry(IkeDrop::IkeV1.name())
            .or_default() += 1;
        if self.limiter.allow(now, "ikev1") {
            let at = EventAt {
                peer: Some(remote),
                ..EventAt::default()
            };
            let line = format!(
                "IKEv1 peer {}: dropping its IKEv1 message; IKEv1 is deprecated (RFC 9395) and not spoken here: configure the peer for IKEv2 (strongSwan: version = 2)",
                remote.ip()
            );
            self.event(now, tracing::Level::WARN, "event", at, line);
        }
    }

    /// Where an IKE SA's events happen: its connection, its peer's address and our SPI.
    fn at_sa(&self, spi: u64) -> EventAt {
        match self.sas.get(&spi) {
            Some(e) => EventAt {
                conn: Some(e.conn.clone()),
                peer: Some(e.sa.remote()),
                ike_spi: Some(spi),
            },
            None => EventAt {
                ike_spi: Some(spi),
                ..EventAt::default()
            },
        }
    }

    /// A connection's events outside any one IKE SA.
    fn at_conn(&self, ci: usize) -> EventAt {
        EventAt {
            conn: Some(self.conns[ci].name().to_string()),
            ..EventAt::default()
        }
    }

    // ---- start-up ---------------------------------------------------------------------

    /// Start: install every child's fail-closed policies, adopt what a previous daemon
    /// left in the dataplane (`held`, if it answered), and start what should start.
    pub fn start(&mut self, now: u64, held: Option<Held>) {
        for ci in 0..self.conns.len() {
            for p in self.conns[ci].base_policies() {
                self.dp(DpOp::AddPolicy(p));
            }
        }
        let mut reinitiate = Vec::new();
        if let Some(held) = held {
            for &(inbound, spi, reqid) in &held.sas {
                match self.child_of_reqid(reqid) {
                    Some((ci, k)) => {
                        self.spis.reserve(spi);
                        self.conns[ci].children[k]
                            .stale
                            .push(StaleSa { inbound, spi });
                        reinitiate.push((ci, k));
                    }
                    None => self.dp(DpOp::DeleteSa {
                        direction: if inbound {
                            Direction::Inbound
                        } else {
                            Direction::Outbound
                        },
                        spi,
                        reqid,
                    }),
                }
            }
            let base: Vec<u32> = self
                .conns
                .iter()
                .flat_map(|c| c.base_policies())
                .map(|p| p.id)
                .collect();
            for &id in &held.policies {
                let (reqid, narrowed) = policy_owner(id);
                match (self.child_of_reqid(reqid), narrowed) {
                    (Some(_), false) if base.contains(&id) => {}
                    (Some((ci, k)), true) => self.conns[ci].children[k].stale_policies.push(id),
                    _ => self.dp(DpOp::DeletePolicy(id)),
                }
            }
            // RFC 7296 §2.23: behind a NAT, the peer is reachable where the NAT maps its port
            // 4500 (the port ESP goes to), not on port 500 of the address we know it by.
            for &(reqid, ours, peer) in &held.udp_paths {
                if let Some((ci, _)) = self.child_of_reqid(reqid) {
                    self.conns[ci].resume_path.get_or_insert((ours, peer));
                }
            }
            let stale: usize = self
                .conns
                .iter()
                .flat_map(|c| &c.children)
                .map(|c| c.stale.len())
                .sum();
            if stale > 0 {
                let line = format!("the dataplane holds SAs of a previous iked ({stale}): they keep forwarding until their children are negotiated again (at most {} s)", self.opts.stale_timeout_ms / 1000);
                self.event(now, tracing::Level::INFO, "event", EventAt::default(), line);
                self.stale_deadline = Some(now + self.opts.stale_timeout_ms);
            }
        }
        for ci in 0..self.conns.len() {
            for k in 0..self.conns[ci].children.len() {
                let c = &mut self.conns[ci].children[k];
                match c.cfg.start_action {
                    StartAction::Start => c.wanted = true,
                    StartAction::Trap => c.trapped = true,
                    StartAction::None => {}
                }
                // A child the previous daemon had up is renegotiated whatever its start
                // action: its peer may still think the old SAs are current.
                if reinitiate.contains(&(ci, k)) {
                    c.wanted = true;
                }
            }
            if self.conns[ci].children.iter().any(|c| c.wanted) {
                self.ensure_up(now, ci);
            }
        }
    }

    fn child_of_reqid(&self, reqid: u32) -> Option<(usize, usize)> {
        self.conns
            .iter()
            .enumerate()
            .find_map(|(ci, c)| c.child_by_reqid(reqid).map(|k| (ci, k)))
    }

    fn conn_index(&self, name: &str) -> Option<usize> {
        self.conns.iter().position(|c| c.name() == name)
    }

    /// Responder IKE SAs waiting for IKE_AUTH.
    pub fn half_open(&self) -> usize {
        self.half_open_total
    }

    /// IKE SAs held, in any state.
    pub fn ike_sas(&self) -> usize {
        self.sas.len()
    }

    /// The SPIs (initiator's, responder's) of the IKE SAs that have keys, the ones
    /// [`Daemon::keys_report`] lists, without formatting their keys (the fuzz harness asks
    /// per message).
    #[doc(hidden)]
    pub fn keyed_ike_spis(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.sas
            .values()
            .filter(|e| e.sa.key_material().is_some())
            .map(|e| e.sa.spis())
    }

    /// Every `start_action = start` child has a Child SA in the dataplane.
    pub fn ready(&self) -> bool {
        self.conns.iter().all(|c| {
            c.children
                .iter()
                .filter(|k| k.cfg.start_action == StartAction::Start)
                .all(|k| !k.installed.is_empty())
        })
    }

    // ---- initiating ---------------------------------------------------------------------

    /// Bring up the wanted children of a connection: through its established IKE SA, or a
    /// new one (unless one is being negotiated or a retry is pending).
    fn ensure_up(&mut self, now: u64, ci: usize) {
        let name = self.conns[ci].name().to_string();
        // An IKE SA being replaced by a reauthentication takes no new Child SAs.
        let reauth_old = self.conns[ci].reauth;
        let established = self
            .sas
            .iter()
            .filter(|(s, e)| {
                e.conn == name && e.sa.phase() == Phase::Established && Some(**s) != reauth_old
            })
            .map(|(s, _)| *s)
            .max();
        // An IKE SA being negotiated holds our own initiation back. One the peer started (we
        // answered its IKE_SA_INIT and wait for its IKE_AUTH) does only while it is young: a
        // real peer's IKE_AUTH follows within a round trip, but anyone who knows the peer's
        // address can make such an SA (RFC 7296 §2.6), and waiting for it to expire
        // (`half_open_timeout_ms`) let a spoofer keep the connection down for that long, over
        // and over (found by scripts/soak.py).
        let mut connecting = false;
        let mut peer_half_open_until: Option<u64> = None;
        for e in self
            .sas
            .values()
            .filter(|e| e.conn == name && e.sa.phase() == Phase::Connecting)
        {
            if e.half_open_from.is_none() {
                connecting = true;
            } else if now < e.created + PEER_HALF_OPEN_HOLD_MS {
                let until = e.created + PEER_HALF_OPEN_HOLD_MS;
                peer_half_open_until = Some(peer_half_open_until.map_or(until, |u| u.max(until)));
            }
        }
        let missing: Vec<usize> = (0..self.conns[ci].children.len())
            .filter(|&k| {
                let c = &self.conns[ci].children[k];
                let carried = match reauth_old {
                    Some(old) => c.installed.iter().any(|i| i.ike_spi != old),
                    None => !c.installed.is_empty(),
                };
                c.wanted && !carried && c.negotiating.is_none()
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        if let Some(spi) = established {
            for k in missing {
                let inbound_spi = self.spis.alloc(&mut *self.rng);
                let req = ChildRequest {
                    child: k,
                    inbound_spi,
                };
                let entry = self.sas.get_mut(&spi).expect("listed above");
                match entry.sa.create_child(now, req, &mut *self.rng) {
                    Ok(()) => self.conns[ci].children[k].negotiating = Some((spi, inbound_spi)),
                    Err(e) => {
                        self.spis.release(inbound_spi);
                        let line = format!(
                            "cannot create child {}: {e}",
                            self.conns[ci].children[k].cfg.name
                        );
                        let at = self.at_sa(spi);
                        self.event(now, tracing::Level::WARN, "event", at, line);
                    }
                }
            }
            self.settle(now, spi);
            return;
        }
        if connecting || self.conns[ci].retry_at.is_some_and(|t| t > now) {
            return;
        }
        if let Some(until) = peer_half_open_until {
            // Come back when the peer's half-open SA is no longer young, if it has not
            // completed by then (its IKE_AUTH brings the children).
            self.conns[ci].retry_at = Some(until);
            return;
        }
        self.initiate(now, ci, missing[0]);
    }

    fn initiate(&mut self, now: u64, ci: usize, k: usize) {
        self.conns[ci].retry_at = None;
        let c = &self.conns[ci];
        let remotes = &c.cfg.remote_addrs;
        let remote_ip = remotes[c.remote_index % remotes.len()];
        let local_ip = c
            .cfg
            .local_addrs
            .iter()
            .copied()
            .find(|l| l.is_ipv4() == remote_ip.is_ipv4())
            .unwrap_or(c.cfg.local_addrs[0]);
        let (local, remote) = match c.resume_path() {
            Some(path) => path,
            None => (
                SocketAddr::new(local_ip, IKE_PORT),
                SocketAddr::new(remote_ip, IKE_PORT),
            ),
        };
        let resuming = local.port() != IKE_PORT;
        let mut cfg = c.cfg.connection.clone();
        cfg.local = local;
        cfg.remote = remote;
        let name = cfg.name.clone();
        // RFC 7296 §2.4: INITIAL_CONTACT when we hold no other IKE SA with this peer, so
        // it drops what it still holds from our previous life.
        let initial_contact = !self
            .sas
            .values()
            .any(|e| e.conn == name && e.sa.phase() == Phase::Established);
        let inbound_spi = self.spis.alloc(&mut *self.rng);
        let line = format!(
            "initiating child {}{}{}",
            self.conns[ci].children[k].cfg.name,
            if initial_contact {
                " (INITIAL_CONTACT)"
            } else {
                ""
            },
            if resuming {
                format!(" from {local} to {remote}, where the SAs of the previous iked send ESP (a NAT is in the path, RFC 7296 §2.23)")
            } else {
                String::new()
            }
        );
        let at = EventAt {
            conn: Some(name.clone()),
            peer: Some(remote),
            ike_spi: None,
        };
        self.event(now, tracing::Level::INFO, "event", at, line);
        let mut sa = IkeSa::initiate(
            cfg,
            local,
            remote,
            ChildRequest {
                child: k,
                inbound_spi,
            },
            initial_contact,
            now,
            &mut *self.rng,
        );
        sa.set_wall_clock(self.opts.wall_clock_base_ms);
        let spi = sa.our_spi();
        self.conns[ci].children[k].negotiating = Some((spi, inbound_spi));
        self.sas.insert(
            spi,
            SaEntry {
                sa,
                conn: name,
                half_open_from: None,
                created: now,
                next_keepalive: None,
                dpd_not_before: 0,
                abandoned: false,
                reauth_at: None,
            },
        );
        self.settle(now, spi);
    }

    /// Schedule a retry of a connection's wanted children after a failure.
    fn backoff(&mut self, now: u64, ci: usize) {
        let c = &mut self.conns[ci];
        c.failures = c.failures.saturating_add(1);
        let base = self
            .opts
            .retry_base_ms
            .saturating_mul(1u64 << (c.failures - 1).min(16))
            .min(self.opts.retry_max_ms);
        let delay = jitter(base, &mut *self.rng);
        let c = &mut self.conns[ci];
        c.retry_at = Some(now + delay);
        let line = format!(
            "retrying in {:.1} s (attempt {})",
            delay as f64 / 1000.0,
            c.failures
        );
        let at = self.at_conn(ci);
        self.event(now, tracing::Level::INFO, "event", at, line);
    }

    // ---- datagrams --------------------------------------------------------------------

    /// A datagram arrived on `local` (our address and port) from `remote`.
    pub fn handle_datagram(
        &mut self,
        now: u64,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) {
        match classify(local, data) {
            Verdict::Drop(IkeDrop::IkeV1) => self.ikev1_peer(now, remote),
            Verdict::Drop(why) => self.drop_datagram(now, why, remote),
            Verdict::Keepalive => {}
            Verdict::Answer(reply) => {
                if self.limiter.allow(now, "invalid major version") {
                    let at = EventAt {
                        peer: Some(remote),
                        ..EventAt::default()
                    };
                    self.event(now, tracing::Level::WARN, "event", at, "IKE request of a higher major version: answering INVALID_MAJOR_VERSION (we speak 2.0)".into());
                }
                self.send(local, remote, reply);
            }
            Verdict::InitRequest { spi_i, msg } => {
                if let Some(&spi) = self.init_index.get(&(spi_i, remote.ip())) {
                    return self.deliver_to_sa(now, spi, local, remote, msg);
                }
                let msg = msg.to_vec();
                self.new_responder(now, local, remote, &msg);
            }
            Verdict::ToSa { spi, msg } => {
                if self.sas.contains_key(&spi) {
                    let msg = msg.to_vec();
                    self.deliver_to_sa(now, spi, local, remote, &msg);
                } else {
                    self.drop_datagram(now, IkeDrop::UnknownSpi, remote);
                }
            }
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        let data = if from.port() == NAT_T_PORT {
            // RFC 3948 §2.2: IKE on 4500 behind the non-ESP marker.
            let mut b = vec![0u8; 4];
            b.extend_from_slice(&data);
            b
        } else {
            data
        };
        self.actions.push_back(Action::Send { from, to, data });
    }

    fn deliver_to_sa(
        &mut self,
        now: u64,
        spi: u64,
        local: SocketAddr,
        remote: SocketAddr,
        msg: &[u8],
    ) {
        let Some(e) = self.sas.get_mut(&spi) else {
            return;
        };
        self.spis.refill(&mut *self.rng);
        e.sa.handle(now, local, remote, msg, &mut *self.rng, &mut self.spis);
        self.settle(now, spi);
    }

    /// An IKE_SA_INIT request: cookies and half-open limits first (RFC 7296 §2.6, RFC
    /// 8019), then a responder SA for the connection that names the peer.
    fn new_responder(&mut self, now: u64, local: SocketAddr, remote: SocketAddr, msg: &[u8]) {
        let Some(ci) = self.conns.iter().position(|c| {
            c.cfg.remote_addrs.contains(&remote.ip()) && c.cfg.local_addrs.contains(&local.ip())
        }) else {
            if self.limiter.allow(now, "no connection") {
                let at = EventAt {
                    peer: Some(remote),
                    ..EventAt::default()
                };
                self.event(now, tracing::Level::WARN, "event", at, format!("IKE_SA_INIT to {local} from a peer no connection is configured for: dropped (add its address to a connection's remote_addrs)"));
            }
            return self.drop_datagram(now, IkeDrop::NoConnection, remote);
        };
        let from_source = self.half_open.get(&remote.ip()).copied().unwrap_or(0);
        // RFC 7296 §2.6, RFC 8019: under load — many half-open SAs in all, or a few from
        // one address — keep state only for initiators that prove they receive our
        // answers (a COOKIE). Spoofed floods then cost a hash each, and a real peer whose
        // address is being spoofed still gets through.
        if self.half_open_total >= self.opts.cookie_threshold || from_source >= COOKIE_PER_SOURCE {
            if let Some(reply) = self.cookies.check(msg, remote.ip()) {
                self.counters.cookies_sent += 1;
                self.drop_datagram(now, IkeDrop::CookieRequired, remote);
                self.send(local, remote, reply);
                return;
            }
        }
        if from_source >= self.opts.half_open_per_source
            || self.half_open_total >= self.opts.half_open_max
        {
            return self.drop_datagram(now, IkeDrop::HalfOpenLimit, remote);
        }
        let cfg = self.conns[ci].cfg.connection.clone();
        let name = cfg.name.clone();
        match IkeSa::respond(cfg, local, remote, msg, now, &mut *self.rng) {
            Ok(mut sa) => {
                sa.set_wall_clock(self.opts.wall_clock_base_ms);
                let spi = sa.our_spi();
                self.init_index.insert((sa.spis().0, remote.ip()), spi);
                *self.half_open.entry(remote.ip()).or_default() += 1;
                self.half_open_total += 1;
                self.sas.insert(
                    spi,
                    SaEntry {
                        sa,
                        conn: name,
                        half_open_from: Some(remote.ip()),
                        created: now,
                        next_keepalive: None,
                        dpd_not_before: 0,
                        abandoned: false,
                        reauth_at: None,
                    },
                );
                self.settle(now, spi);
            }
            Err(events) => {
                for ev in events {
                    match ev {
                        Event::Send { from, to, data } => self.send(from, to, data),
                        Event::Failed(e) => {
                            if self.limiter.allow(now, "init refused") {
                                let at = EventAt {
                                    conn: Some(name.clone()),
                                    peer: Some(remote),
                                    ike_spi: None,
                                };
                                self.event(
                                    now,
                                    tracing::Level::WARN,
                                    "event",
                                    at,
                                    format!("IKE_SA_INIT refused: {e}"),
                                );
                            }
                            // For `vpnctl list` and `diagnose`: the responder's side of a
                            // proposal mismatch (bounded history; a flood of refusals
                            // only keeps the newest).
                            self.record_failure(now, ci, &e);
                        }
                        Event::Log {
                            level,
                            trace,
                            message,
                        } => {
                            let at = EventAt {
                                conn: Some(name.clone()),
                                peer: Some(remote),
                                ike_spi: None,
                            };
                            self.event(
                                now,
                                level,
                                if trace { "trace" } else { "event" },
                                at,
                                message,
                            );
                        }
                        other => debug!(conn = %name, "stateless answer event: {other:?}"),
                    }
                }
            }
        }
    }

    // ---- what an IKE SA said ----------------------------------------------------------

    /// Act on an SA's events, keep the half-open accounting, forget it once closed.
    fn settle(&mut self, now: u64, spi: u64) {
        let mut abandon = Vec::new();
        let mut moved_deleted = Vec::new();
        loop {
            let Some(e) = self.sas.get_mut(&spi) else {
                return;
            };
            let Some(ev) = e.sa.poll_event() else { break };
            let conn = e.conn.clone();
            let abandoned = e.abandoned;
            // A peer deleting the whole IKE SA closes it before its ChildDown events are
            // polled: those children did not end early by a lifetime.
            let ike_up = e.sa.phase() == Phase::Established;
            let ci = self.conn_index(&conn);
            match ev {
                Event::Send { from, to, data } => self.send(from, to, data),
                Event::Established {
                    suite,
                    nat,
                    peer_id,
                    peer_initial_contact,
                } => {
                    let line = format!(
                        "IKE SA established with {peer_id}: {suite}{}",
                        if nat { ", NAT-T (UDP 4500)" } else { "" }
                    );
                    let at = self.at_sa(spi);
                    self.event(now, tracing::Level::INFO, "event", at, line);
                    self.counters.negotiations_established += 1;
                    if let Some(ci) = ci {
                        self.conns[ci].failures = 0;
                        self.conns[ci].last_failure = None;
                        let times = self.conns[ci]
                            .cfg
                            .connection
                            .lifetime
                            .schedule(now, &mut *self.rng);
                        if let Some(e) = self.sas.get_mut(&spi) {
                            e.reauth_at = times.reauth_at;
                        }
                    }
                    if peer_initial_contact {
                        // RFC 7296 §2.4: the peer has forgotten every other IKE SA with us.
                        abandon.extend(self.sas.iter().filter_map(|(s, o)| {
                            (*s != spi && o.sa.peer_id().as_deref() == Some(peer_id.as_str()))
                                .then_some(*s)
                        }));
                    }
                }
                Event::ChildUp(child) => {
                    if let Some(ci) = ci {
                        let more = child.add_resources.then(|| child.name.clone());
                        self.install(now, ci, spi, child, true);
                        if let Some(name) = more {
                            self.negotiate_resources(now, ci, spi, &name);
                        }
                    }
                }
                Event::ResourceRefused { name, inbound_spi } => {
                    self.spis.release(inbound_spi);
                    let line = format!("child {name}: the peer takes no more per-resource Child SAs (TS_MAX_QUEUE, RFC 9611 §5.2); workers without one send on the fallback Child SA");
                    let at = self.at_sa(spi);
                    self.event(now, tracing::Level::INFO, "event", at, line);
                }
                Event::ChildRekeyed {
                    replaces,
                    new,
                    outbound_now,
                } => {
                    if let Some(ci) = ci {
                        self.install_rekeyed(now, ci, spi, replaces, new, outbound_now);
                    }
                }
                Event::ChildOutbound { name, inbound_spi } => {
                    if let Some(ci) = ci {
                        self.switch_outbound(ci, &name, inbound_spi);
                    }
                }
                Event::ChildDown {
                    name,
                    inbound_spi,
                    rekeyed: true,
                    ..
                } => {
                    if let Some(ci) = ci {
                        let line = format!("Child SA {name} {inbound_spi:#010x} replaced by its rekey; its inbound SA stays {} ms", self.opts.rekey_grace_ms);
                        let at = self.at_sa(spi);
                        self.event(now, tracing::Level::DEBUG, "event", at, line);
                        self.retire(now, ci, &name, inbound_spi);
                    }
                }
                Event::ChildDown {
                    name,
                    inbound_spi,
                    by_peer,
                    ..
                } => {
                    if let Some(ci) = ci {
                        let line = format!(
                            "Child SA {name} {inbound_spi:#010x} down{}",
                            if by_peer {
                                " (deleted by the peer)"
                            } else {
                                ""
                            }
                        );
                        let at = self.at_sa(spi);
                        self.event(now, tracing::Level::INFO, "event", at, line);
                        if by_peer && !abandoned && ike_up {
                            self.peer_deleted_early(now, ci, &name, inbound_spi);
                        }
                        self.uninstall(ci, spi, inbound_spi);
                        // The peer closing one Child SA of a child another Child SA still
                        // carries (its reauthentication, a duplicate) is no close.
                        let carried = self.conns[ci]
                            .child_by_name(&name)
                            .is_some_and(|k| !self.conns[ci].children[k].installed.is_empty());
                        if by_peer && !abandoned && !carried {
                            self.close_action(now, ci, &name);
                        }
                    }
                }
                Event::NewIkeSa(sa) => {
                    // Taken over at once: this SA may close (and be forgotten, uninstalling
                    // what still points at it) by the end of its events.
                    let reauth_at = self.sas.get(&spi).and_then(|e| e.reauth_at);
                    self.adopt(now, spi, conn.clone(), reauth_at, sa);
                }
                Event::ChildFailed { name, error } => {
                    let rekey = ci.and_then(|ci| {
                        let k = self.conns[ci].child_by_name(&name)?;
                        Some(!self.conns[ci].children[k].installed.is_empty())
                    });
                    if rekey == Some(true) {
                        // A rekey refused (a PFS mismatch, say): the current Child SA carries
                        // on until it expires; the child stays wanted, so it is negotiated
                        // afresh then.
                        let at = self.at_sa(spi);
                        self.event(now, tracing::Level::WARN, "event", at, format!("Child SA {name} not rekeyed: {error}; the current one carries on until its life_time"));
                        if let Some(ci) = ci {
                            // Kept for `diagnose` too (pfs-mismatch, a rekey's proposals);
                            // the connection itself did not fail (its SA carries on).
                            let keep = self.conns[ci].last_failure.take();
                            self.record_failure(now, ci, &error);
                            self.conns[ci].last_failure = keep;
                            if let Some(k) = self.conns[ci].child_by_name(&name) {
                                self.conns[ci].children[k].last_failure =
                                    Some((now, error.to_string()));
                            }
                        }
                        continue;
                    }
                    let at = self.at_sa(spi);
                    self.event(
                        now,
                        tracing::Level::WARN,
                        "event",
                        at,
                        format!("Child SA {name} not created: {error}"),
                    );
                    if let Some(ci) = ci {
                        // Kept for `vpnctl list` and `diagnose` (an AH proposal, a TS or
                        // proposal mismatch is a Child SA failure: the IKE SA stays up).
                        self.record_failure(now, ci, &error);
                        if let Some(k) = self.conns[ci].child_by_name(&name) {
                            let c = &mut self.conns[ci].children[k];
                            c.last_failure = Some((now, error.to_string()));
                            if let Some((_, inb)) = c.negotiating.take() {
                                self.spis.release(inb);
                            }
                            // A configuration mismatch: retried on `vpnctl up` or a reload,
                            // not in a loop against the same answer.
                            c.wanted = false;
                        }
                    }
                }
                Event::MovedChildDeleted { inbound_spi } => moved_deleted.push(inbound_spi),
                Event::PeerMoved { remote } => {
                    let at = self.at_sa(spi);
                    self.event(now, tracing::Level::INFO, "event", at, format!("the peer's NAT mapping changed to {remote} (RFC 7296 §2.23): ESP follows"));
                    if let Some(ci) = ci {
                        self.follow_peer(ci, spi);
                    }
                }
                Event::Failed(error) => self.failed(now, spi, ci, error),
                Event::Closed { by_peer } => {
                    let at = self.at_sa(spi);
                    self.event(
                        now,
                        tracing::Level::INFO,
                        "event",
                        at,
                        format!("IKE SA closed{}", if by_peer { " by the peer" } else { "" }),
                    );
                }
                Event::Log {
                    level,
                    trace,
                    message,
                } => {
                    let at = self.at_sa(spi);
                    let kind = if trace { "trace" } else { "event" };
                    self.event(now, level, kind, at, message);
                }
                Event::Ignored { what } => {
                    if self.limiter.allow(now, "ignored") {
                        let at = self.at_sa(spi);
                        self.event(
                            now,
                            tracing::Level::DEBUG,
                            "event",
                            at,
                            format!("not acted on: {what}"),
                        );
                    }
                }
            }
        }
        self.after_events(now, spi);
        // §2.8: the peer's Delete of a Child SA that reached the IKE SA we rekeyed it from
        // acts where the Child SA is now (the IKE SA holding it, by its inbound SPI).
        for inbound_spi in moved_deleted {
            let holder = self
                .sas
                .iter()
                .find(|(_, e)| e.sa.children().iter().any(|c| c.inbound_spi == inbound_spi))
                .map(|(s, _)| *s);
            match holder {
                Some(other) => {
                    if let Some(e) = self.sas.get_mut(&other) {
                        e.sa.peer_deleted_moved_child(inbound_spi);
                    }
                    self.settle(now, other);
                }
                None => {
                    let at = self.at_sa(spi);
                    self.event(now, tracing::Level::DEBUG, "event", at, format!("not acted on: the peer's Delete of Child SA {inbound_spi:#010x} on the IKE SA we rekeyed: no IKE SA holds it any more"));
                }
            }
        }
        for other in abandon {
            if self.sas.contains_key(&other) {
                let at = self.at_sa(other);
                self.event(
                    now,
                    tracing::Level::INFO,
                    "event",
                    at,
                    "the peer sent INITIAL_CONTACT: dropping the IKE SA it forgot".into(),
                );
            }
            if let Some(e) = self.sas.get_mut(&other) {
                e.abandoned = true;
                e.sa.abandon();
                self.settle(now, other);
            }
        }
        for ci in std::mem::take(&mut self.pending_ensure) {
            if ci < self.conns.len() {
                self.ensure_up(now, ci);
            }
        }
    }

    fn after_events(&mut self, now: u64, spi: u64) {
        let Some(e) = self.sas.get_mut(&spi) else {
            return;
        };
        let phase = e.sa.phase();
        if phase == Phase::Established && e.next_keepalive.is_none() && e.sa.nat() {
            e.next_keepalive = Some(now + self.opts.nat_keepalive_ms);
        }
        let no_longer_half_open = if phase != Phase::Connecting {
            e.half_open_from.take()
        } else {
            None
        };
        let conn = e.conn.clone();
        if let Some(ip) = no_longer_half_open {
            self.release_half_open(ip);
        }
        if phase == Phase::Closed {
            self.forget(spi);
        } else if phase == Phase::Established {
            // Children that should be up and are not: ask this IKE SA for them.
            if let Some(ci) = self.conn_index(&conn) {
                let wants = self.conns[ci].reauth.is_some()
                    || self.conns[ci]
                        .children
                        .iter()
                        .any(|c| c.wanted && c.installed.is_empty() && c.negotiating.is_none());
                if wants {
                    self.ensure_up(now, ci);
                }
                self.reauth_progress(now, ci);
            }
        }
    }

    /// A new IKE SA from `old` (RFC 7296 §1.3.2 rekey, or a collision's redundant one):
    /// route to it, and re-point the Child SAs it took over.
    fn adopt(&mut self, now: u64, old: u64, conn: String, reauth_at: Option<u64>, sa: Box<IkeSa>) {
        let new = sa.our_spi();
        let moved: Vec<u32> = sa.children().iter().map(|c| c.inbound_spi).collect();
        if let Some(ci) = self.conn_index(&conn) {
            for c in &mut self.conns[ci].children {
                for i in c.installed.iter_mut().filter(|i| i.ike_spi == old) {
                    if moved.contains(&i.inbound_spi) {
                        i.ike_spi = new;
                    }
                }
                if let Some((s, inb)) = c.negotiating {
                    if s == old {
                        c.negotiating = Some((new, inb));
                    }
                }
            }
        }
        let nat = sa.nat();
        // Rekeying does not authenticate the peer again: the reauthentication stays due.
        self.sas.insert(
            new,
            SaEntry {
                sa: *sa,
                conn,
                half_open_from: None,
                created: now,
                next_keepalive: nat.then_some(now + self.opts.nat_keepalive_ms),
                dpd_not_before: 0,
                abandoned: false,
                reauth_at,
            },
        );
        self.settle(now, new);
    }

    fn release_half_open(&mut self, ip: IpAddr) {
        if let Some(n) = self.half_open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.half_open.remove(&ip);
            }
        }
        self.half_open_total = self.half_open_total.saturating_sub(1);
    }

    /// Drop an SA from every index; uninstall whatever of it is still installed.
    fn forget(&mut self, spi: u64) {
        let Some(e) = self.sas.remove(&spi) else {
            return;
        };
        if let Some(ip) = e.half_open_from {
            self.release_half_open(ip);
        }
        self.init_index.remove(&(e.sa.spis().0, e.sa.remote().ip()));
        // SPIs drawn for rekeys that never happened.
        for &s in e.sa.unused_spis() {
            self.spis.release(s);
        }
        if let Some(ci) = self.conn_index(&e.conn) {
            if self.conns[ci].reauth == Some(spi) {
                self.conns[ci].reauth = None;
            }
            let left: Vec<u32> = self.conns[ci]
                .children
                .iter()
                .flat_map(|c| c.installed.iter())
                .filter(|i| i.ike_spi == spi)
                .map(|i| i.inbound_spi)
                .collect();
            for inb in left {
                self.uninstall(ci, spi, inb);
            }
            for c in &mut self.conns[ci].children {
                if let Some((s, inb)) = c.negotiating {
                    if s == spi {
                        c.negotiating = None;
                        self.spis.release(inb);
                    }
                }
            }
        }
        // Free the memory of a flood once it has passed (`sas`, a BTreeMap, frees its nodes
        // as entries go).
        if self.init_index.capacity() > 64 && self.init_index.len() < self.init_index.capacity() / 4
        {
            self.init_index.shrink_to_fit();
            self.half_open.shrink_to_fit();
        }
    }

    /// Unix time (ms) of daemon time `now`.
    pub fn unix_ms(&self, now: u64) -> u64 {
        self.opts.wall_clock_base_ms + now
    }

    /// One event: logged once through `tracing` (with the connection, peer and IKE SPI as
    /// fields) and kept for `vpnctl log` / `vpnctl trace` (`kind` "event" or "trace").
    pub fn event(
        &mut self,
        now: u64,
        level: tracing::Level,
        kind: &str,
        at: EventAt,
        message: String,
    ) {
        // Target "iked" whichever module recorded it (`RUST_LOG=iked=debug`); absent
        // fields are left out rather than logged empty.
        // Formatted once for the log line and the record (every IKE message makes one).
        let peer_text = at.peer.map(|p| p.to_string());
        let spi_text = at.ike_spi.map(|s| format!("{s:016x}"));
        let conn = at.conn.as_deref();
        let peer = peer_text.as_deref();
        let ike_spi = spi_text.as_deref();
        let trace = (kind == "trace").then_some("trace");
        match level {
            tracing::Level::ERROR => {
                tracing::error!(target: "iked", conn, peer, ike_spi, kind = trace, "{message}")
            }
            tracing::Level::WARN => {
                warn!(target: "iked", conn, peer, ike_spi, kind = trace, "{message}")
            }
            tracing::Level::INFO => {
                info!(target: "iked", conn, peer, ike_spi, kind = trace, "{message}")
            }
            tracing::Level::DEBUG => {
                debug!(target: "iked", conn, peer, ike_spi, kind = trace, "{message}")
            }
            tracing::Level::TRACE => {
                tracing::trace!(target: "iked", conn, peer, ike_spi, kind = trace, "{message}")
            }
        }
        let unix_ms = self.unix_ms(now);
        self.events.push(crate::api::EventRecord {
            seq: 0,
            at_unix_ms: unix_ms,
            level: level.as_str().to_ascii_lowercase(),
            kind: kind.to_string(),
            conn: at.conn,
            peer: peer_text,
            ike_spi: spi_text,
            message,
        });
    }

    /// Keep a connection's failure, classified for `vpnctl diagnose` (bounded history).
    pub(crate) fn record_failure(&mut self, now: u64, ci: usize, error: &IkeError) {
        let (finding, evidence) = crate::diagnose::classify(error);
        *self
            .counters
            .negotiations_failed
            .entry(finding.to_string())
            .or_default() += 1;
        let rec = crate::api::FailureRecord {
            at_unix_ms: self.unix_ms(now),
            finding: finding.to_string(),
            message: error.to_string(),
            evidence,
        };
        let h = &mut self.conns[ci].history;
        if h.len() == conn::FAILURE_HISTORY {
            h.pop_front();
        }
        h.push_back(rec);
        self.conns[ci].last_failure = Some((now, error.to_string()));
    }

    /// Keep a problem that is no [`IkeError`] (the connection still works) in the failure
    /// history, for `vpnctl diagnose`: `finding` is a catalog id, `evidence` its keys.
    fn record_finding(
        &mut self,
        now: u64,
        ci: usize,
        finding: &'static str,
        message: String,
        evidence: &[(&str, String)],
    ) {
        let rec = crate::api::FailureRecord {
            at_unix_ms: self.unix_ms(now),
            finding: finding.to_string(),
            message,
            evidence: evidence
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        let h = &mut self.conns[ci].history;
        if h.len() == conn::FAILURE_HISTORY {
            h.pop_front();
        }
        h.push_back(rec);
    }

    fn failed(&mut self, now: u64, spi: u64, ci: Option<usize>, error: IkeError) {
        let Some(e) = self.sas.get(&spi) else { return };
        let role = e.sa.role();
        let established_before = e.sa.established_at().is_some();
        let Some(ci) = ci else {
            let at = self.at_sa(spi);
            self.event(now, tracing::Level::WARN, "event", at, error.to_string());
            return;
        };
        if self.conns[ci].reauth.is_some() {
            self.reauth_failed(now, ci, spi);
        }
        if let IkeError::PeerDead { .. } = error {
            self.counters.peers_dead += 1;
            self.dpd_action(now, ci, &error);
            return;
        }
        let at = self.at_sa(spi);
        self.event(now, tracing::Level::WARN, "event", at, error.to_string());
        self.record_failure(now, ci, &error);
        if let IkeError::Timeout { .. } = error {
            // The next attempt tries the next remote address.
            self.conns[ci].remote_index += 1;
        }
        // Whoever wants the children up tries again — not "the initiator": after an IKE SA
        // rekey the role is whoever started the rekey (§2.18), not who set the tunnel up.
        // A responder-only connection wants nothing and waits for its peer; a half-open
        // responder SA (role responder, still connecting) is not ours to retry either.
        let wanted = self.conns[ci].children.iter().any(|c| c.wanted);
        let half_open_responder = role == Role::Responder && !established_before;
        if wanted && !half_open_responder {
            self.backoff(now, ci);
        }
    }

    /// RFC 7296 §2.4: the peer did not answer our liveness checks.
    fn dpd_action(&mut self, now: u64, ci: usize, error: &IkeError) {
        let mut restart = false;
        let mut what = Vec::new();
        for c in &mut self.conns[ci].children {
            match c.cfg.dpd_action {
                DpdAction::Clear => {
                    c.wanted = false;
                    what.push(format!("{}: cleared (traffic dropped)", c.cfg.name));
                }
                DpdAction::Trap => {
                    c.wanted = false;
                    c.trapped = true;
                    what.push(format!(
                        "{}: trapped (the next packet renegotiates)",
                        c.cfg.name
                    ));
                }
                DpdAction::Restart => {
                    c.wanted = true;
                    restart = true;
                    what.push(format!("{}: restarting", c.cfg.name));
                }
            }
        }
        let at = self.at_conn(ci);
        self.event(
            now,
            tracing::Level::WARN,
            "event",
            at,
            format!("{error}; dpd_action: {}", what.join("; ")),
        );
        self.record_failure(now, ci, error);
        if restart {
            // The peer may come back at another address (tried in order).
            self.conns[ci].remote_index += 1;
            self.conns[ci].retry_at = None;
            self.pending_ensure.push(ci);
        }
    }

    /// A lifetime mismatch, in plain words: the peer deleted a Child SA well before our
    /// rekey time instead of rekeying it (its life_time is shorter than ours and it does not
    /// rekey, or it rekeys by delete-and-recreate).
    fn peer_deleted_early(&mut self, now: u64, ci: usize, name: &str, inbound_spi: u32) {
        let Some(k) = self.conns[ci].child_by_name(name) else {
            return;
        };
        let installed = &self.conns[ci].children[k].installed;
        if installed.len() > 1 {
            return; // another Child SA carries it (the peer reauthenticated)
        }
        let Some(i) = installed.iter().find(|i| i.inbound_spi == inbound_spi) else {
            return;
        };
        let age_s = now.saturating_sub(i.since) / 1000;
        let lt = self.conns[ci].cfg.connection.children[k].lifetime;
        if lt.rekey_ms == 0 || now.saturating_sub(i.since) + lt.rand_ms >= lt.rekey_ms {
            return;
        }
        let message = format!(
            "the peer deleted the Child SA after {age_s} s instead of rekeying it; our rekey_time is {} s (life_time {} s). If this repeats, the peer's lifetime is shorter than ours and it does not rekey: set our rekey_time below the peer's life_time, or configure the peer to rekey (swanctl: rekey_time below life_time)",
            lt.rekey_ms / 1000,
            lt.life_ms / 1000
        );
        if self.limiter.allow(now, "peer deleted early") {
            let at = self.at_conn(ci);
            self.event(
                now,
                tracing::Level::WARN,
                "event",
                at,
                format!("Child SA {name}: {message}"),
            );
        }
        // For `vpnctl diagnose` (docs/DIAGNOSE.md#lifetime-mismatch).
        let evidence = [
            ("child", name.to_string()),
            ("our_rekey_s", (lt.rekey_ms / 1000).to_string()),
            ("our_life_s", (lt.life_ms / 1000).to_string()),
            ("peer_interval_s", age_s.to_string()),
        ];
        self.record_finding(now, ci, "lifetime-mismatch", message, &evidence);
    }

    /// swanctl's close_action, when the peer deleted a child or the IKE SA.
    fn close_action(&mut self, now: u64, ci: usize, child: &str) {
        let Some(k) = self.conns[ci].child_by_name(child) else {
            return;
        };
        let c = &mut self.conns[ci].children[k];
        match c.cfg.close_action {
            CloseAction::None => c.wanted = false,
            CloseAction::Trap => {
                c.wanted = false;
                c.trapped = true;
            }
            CloseAction::Start => {
                c.wanted = true;
                let _ = now;
                self.pending_ensure.push(ci);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::Seq;

    #[test]
    fn jitter_stays_within_a_quarter() {
        let mut r = Seq(1);
        for _ in 0..1000 {
            let j = jitter(4000, &mut r);
            assert!((3000..=5000).contains(&j), "{j}");
        }
    }
}
