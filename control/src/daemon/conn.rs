//! What the daemon keeps per configured connection and child, between IKE SAs.

use std::net::SocketAddr;

use dataplane::policy::spd::PolicyRule;
use dataplane::sa::Direction;
use dataplane::shm::records::SaInstall;

use crate::config::{ChildConfig, ConnConfig};
use crate::ike::sa::NAT_T_PORT;
use crate::ike::wire::Ts;

use super::dataplane_ops::base_policies;

/// A Child SA installed in the dataplane.
pub struct InstalledChild {
    /// The IKE SA it belongs to (our IKE SPI).
    pub ike_spi: u64,
    pub inbound_spi: u32,
    pub outbound_spi: u32,
    pub local_ts: Vec<Ts>,
    pub remote_ts: Vec<Ts>,
    /// The records as installed, kept to replay them into a restarted dataplane (the
    /// keys are zeroized when this is dropped).
    pub inbound: SaInstall,
    pub outbound: SaInstall,
    /// Its outbound SA is in the dataplane (a rekey responder installs it only once the
    /// initiator deleted the old SA: until then the peer may not have the new inbound SA).
    pub outbound_installed: bool,
    pub since: u64,
}

/// An SA the dataplane held when the daemon started (keys unknown to us): it keeps
/// forwarding until its child is up again, then goes (make-before-break).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleSa {
    pub inbound: bool,
    pub spi: u32,
}

impl StaleSa {
    pub fn direction(&self) -> Direction {
        if self.inbound {
            Direction::Inbound
        } else {
            Direction::Outbound
        }
    }
}

pub struct ChildState {
    pub cfg: ChildConfig,
    /// It should be up: `start_action = start`, an acquire on a trap, `vpnctl up`,
    /// `dpd_action`/`close_action = restart|start`.
    pub wanted: bool,
    /// Traffic for it raises an acquire that we answer by initiating.
    pub trapped: bool,
    /// The IKE SA negotiating it, and the inbound SPI we offered.
    pub negotiating: Option<(u64, u32)>,
    pub installed: Vec<InstalledChild>,
    /// The narrowed policies in the dataplane (those of the newest installed Child SA).
    pub narrowed: Vec<PolicyRule>,
    /// Inherited from a previous daemon.
    pub stale: Vec<StaleSa>,
    pub stale_policies: Vec<u32>,
    /// Delete the stale SAs at this time (a grace period after the child came up again).
    pub stale_until: Option<u64>,
    pub last_failure: Option<(u64, String)>,
    /// Inbound SAs replaced by a rekey, kept until this time for packets in flight and
    /// reordered (inbound SPI, when to delete it).
    pub retiring: Vec<(u32, u64)>,
    /// Child SA rekeys completed (for `vpnctl list`).
    pub rekeys: u64,
}

impl ChildState {
    pub fn new(cfg: ChildConfig) -> ChildState {
        ChildState {
            cfg,
            wanted: false,
            trapped: false,
            negotiating: None,
            installed: Vec::new(),
            narrowed: Vec::new(),
            stale: Vec::new(),
            stale_policies: Vec::new(),
            stale_until: None,
            last_failure: None,
            retiring: Vec::new(),
            rekeys: 0,
        }
    }
}

/// Failures kept per connection.
pub const FAILURE_HISTORY: usize = 16;

pub struct ConnState {
    pub cfg: ConnConfig,
    pub children: Vec<ChildState>,
    /// Which `remote_addrs` entry the next initiation tries (in order, wrapping).
    pub remote_index: usize,
    /// Consecutive failures (exponential backoff) and when to try again.
    pub failures: u32,
    pub retry_at: Option<u64>,
    pub last_failure: Option<(u64, String)>,
    /// The most recent failures, classified (`vpnctl list`, `vpnctl diagnose`).
    pub history: std::collections::VecDeque<crate::api::FailureRecord>,
    /// A reauthentication under way: the IKE SA (our SPI) it replaces.
    pub reauth: Option<u64>,
    /// (ours, the peer's): the outer endpoints of the UDP-encapsulated SAs a previous daemon
    /// left in the dataplane, where a NAT maps the peer's port 4500.
    pub resume_path: Option<(SocketAddr, SocketAddr)>,
}

impl ConnState {
    pub fn new(cfg: ConnConfig) -> ConnState {
        let children = cfg.children.iter().cloned().map(ChildState::new).collect();
        ConnState {
            cfg,
            children,
            remote_index: 0,
            failures: 0,
            retry_at: None,
            last_failure: None,
            history: std::collections::VecDeque::new(),
            reauth: None,
            resume_path: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.connection.name
    }

    /// The base (fail-closed) policies of every child.
    pub fn base_policies(&self) -> Vec<PolicyRule> {
        self.cfg
            .connection
            .children
            .iter()
            .zip(&self.cfg.children)
            .flat_map(|(c, cc)| base_policies(cc.reqid, &c.local_ts, &c.remote_ts))
            .collect()
    }

    /// Where to initiate to renegotiate inherited SAs (RFC 7296 §2.23), if anywhere else
    /// than the configured peer's port 500: on the UDP path they use, when a NAT is in it.
    /// The configured peer is not reachable there if the NAT is in front of the peer and
    /// forwards only the ports the peer opened; the path is tried on every other attempt
    /// (the first included) while inherited SAs forward, the configuration's in between.
    pub fn resume_path(&self) -> Option<(SocketAddr, SocketAddr)> {
        let (ours, peer) = self.resume_path?;
        let inherited = self.children.iter().any(|c| !c.stale.is_empty());
        let usable = self.cfg.local_addrs.contains(&ours.ip()) && ours.port() == NAT_T_PORT;
        (inherited && usable && self.failures.is_multiple_of(2)).then_some((ours, peer))
    }

    pub fn child_by_name(&self, name: &str) -> Option<usize> {
        self.children.iter().position(|c| c.cfg.name == name)
    }

    pub fn child_by_reqid(&self, reqid: u32) -> Option<usize> {
        self.children.iter().position(|c| c.cfg.reqid == reqid)
    }
}
