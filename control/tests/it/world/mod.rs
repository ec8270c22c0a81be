//! The test world of the daemon core: two daemons on a virtual network with a virtual
//! clock, each with a model dataplane that applies what the daemon asks (shared by the
//! daemon test files).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use control::config::IkedConfig;
use control::daemon::command::Request;
use control::daemon::dataplane_ops::{DpOp, ACQUIRE_BIT};
use control::daemon::{Action, Daemon, Held, Options};
use control::ike::sa::Random;
use dataplane::policy::spd::{PolicyRule, SpdAction};
use dataplane::sa::Direction;
use dataplane::shm::records::SaInstall;

/// A deterministic random source (each daemon its own seed).
pub struct Seeded(pub u64);
impl Random for Seeded {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (self.0 >> 33) as u8;
        }
    }
}

/// What a dataplane holds, applying the daemon's changes like the real installer.
#[derive(Default)]
pub struct ModelDataplane {
    pub sas: BTreeMap<(bool, u32), SaInstall>,
    pub policies: BTreeMap<u32, PolicyRule>,
    pub refused: Vec<String>,
    /// Outbound SAs in the order they were installed, per reqid: the newest carries the
    /// reqid's traffic (the real installer's rule).
    pub out_order: Vec<(u32, u32)>,
}

impl ModelDataplane {
    pub fn apply(&mut self, op: DpOp) {
        match op {
            DpOp::AddSa(sa) => {
                let key = (sa.direction == Direction::Inbound, sa.config.spi);
                if self.sas.contains_key(&key) && !sa.update {
                    self.refused
                        .push(format!("duplicate SA {:#x}", sa.config.spi));
                } else {
                    if !key.0 && !sa.update {
                        self.out_order.push((sa.reqid, key.1));
                    }
                    self.sas.insert(key, *sa);
                }
            }
            DpOp::DeleteSa { direction, spi, .. } => {
                if direction == Direction::Outbound {
                    self.out_order.retain(|o| o.1 != spi);
                }
                if self
                    .sas
                    .remove(&(direction == Direction::Inbound, spi))
                    .is_none()
                {
                    self.refused.push(format!("no SA {spi:#x}"));
                }
            }
            DpOp::AddPolicy(p) => {
                if self.policies.contains_key(&p.id) {
                    // The real dataplane refuses it as a duplicate (harmless on replay).
                    return;
                }
                self.policies.insert(p.id, p);
            }
            DpOp::DeletePolicy(id) => {
                self.policies.remove(&id);
            }
        }
    }

    pub fn inbound(&self) -> Vec<&SaInstall> {
        self.sas
            .iter()
            .filter(|(k, _)| k.0)
            .map(|(_, v)| v)
            .collect()
    }
    pub fn outbound(&self) -> Vec<&SaInstall> {
        self.sas
            .iter()
            .filter(|(k, _)| !k.0)
            .map(|(_, v)| v)
            .collect()
    }
    /// The outbound SA carrying each reqid's traffic now: (reqid, SPI).
    pub fn current_outbound(&self) -> BTreeMap<u32, u32> {
        self.out_order.iter().copied().collect()
    }
    pub fn held(&self) -> Held {
        Held {
            sas: self
                .sas
                .iter()
                .map(|((inb, spi), sa)| (*inb, *spi, sa.reqid))
                .collect(),
            policies: self.policies.keys().copied().collect(),
            udp_paths: self
                .outbound()
                .iter()
                .filter_map(|sa| sa.config.udp_path().map(|(o, p)| (sa.reqid, o, p)))
                .collect(),
        }
    }
    /// Would a packet from `src` to `dst` be protected by an SA (narrowed policy with its
    /// outbound SA), dropped by a base policy, or not covered at all (forwarded in clear)?
    pub fn verdict(&self, src: IpAddr, dst: IpAddr) -> &'static str {
        let m = self
            .policies
            .values()
            .filter(|p| {
                p.src.start <= src && src <= p.src.end && p.dst.start <= dst && dst <= p.dst.end
            })
            .min_by_key(|p| p.priority);
        match m.map(|p| p.action) {
            None => "clear",
            Some(SpdAction::Protect { reqid }) if reqid & ACQUIRE_BIT != 0 => "dropped",
            Some(SpdAction::Protect { reqid }) => {
                if self.outbound().iter().any(|s| s.reqid == reqid) {
                    "protected"
                } else {
                    "dropped"
                }
            }
            Some(_) => "other",
        }
    }
}

pub struct Node {
    pub name: &'static str,
    pub addr: IpAddr,
    pub daemon: Daemon,
    pub dp: ModelDataplane,
}

/// A datagram in flight.
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// Two nodes, a network between them and a clock.
pub struct World {
    pub now: u64,
    pub nodes: Vec<Node>,
    pub wire: Vec<Datagram>,
    /// Decides each datagram's fate: `None` drops it; it may rewrite the addresses (NAT).
    pub filter: Box<dyn FnMut(u64, Datagram) -> Option<Datagram>>,
    pub sent: usize,
    /// Check after every dataplane change that each side's current outbound SA is an
    /// inbound SA of the other side with the same keys (a packet sent at that moment would
    /// be decrypted): no instant in which traffic is lost. Violations are collected.
    pub check_no_loss: bool,
    pub loss: Vec<String>,
}

pub const A: &str = "192.0.2.1";
pub const B: &str = "192.0.2.2";

pub fn conf(local: &str, remote: &str, extra_conn: &str, children: &str) -> String {
    format!(
        r#"
[connections.peer]
local_addrs = ["{local}"]
remote_addrs = ["{remote}"]
proposals = ["aes128gcm16-prfsha256-x25519"]
retransmit_ms = 500
retransmit_tries = 3
{extra_conn}
[connections.peer.local]
id = "{local}"
[connections.peer.remote]
id = "{remote}"
{children}
[secrets.psk]
id = ["{local}", "{remote}"]
secret = "a test pre-shared key of some length"
"#
    )
}

pub fn child(name: &str, local_ts: &str, remote_ts: &str, extra: &str) -> String {
    format!(
        r#"
[connections.peer.children.{name}]
local_ts = ["{local_ts}"]
remote_ts = ["{remote_ts}"]
esp_proposals = ["aes128gcm16"]
{extra}
"#
    )
}

pub fn parse(text: &str) -> IkedConfig {
    IkedConfig::parse(Path::new("test.toml"), text).expect("test configuration parses")
}

impl World {
    pub fn new(conf_a: &str, conf_b: &str) -> World {
        let mk = |name, addr: &str, text: &str, seed| Node {
            name,
            addr: addr.parse().unwrap(),
            daemon: Daemon::new(parse(text), Options::default(), Box::new(Seeded(seed))),
            dp: ModelDataplane::default(),
        };
        World {
            now: 0,
            nodes: vec![mk("a", A, conf_a, 1), mk("b", B, conf_b, 2)],
            wire: Vec::new(),
            filter: Box::new(|_, d| Some(d)),
            sent: 0,
            check_no_loss: false,
            loss: Vec::new(),
        }
    }

    pub fn start(&mut self) {
        for i in 0..self.nodes.len() {
            self.nodes[i].daemon.start(self.now, Some(Held::default()));
        }
        self.drain();
    }

    pub fn node(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    /// Take every node's actions: datagrams onto the wire, changes into its dataplane.
    pub fn drain(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(a) = self.nodes[i].daemon.poll_action() {
                match a {
                    Action::Send { from, to, data } => self.wire.push(Datagram { from, to, data }),
                    Action::Dataplane(op) => {
                        let what = op.describe();
                        self.nodes[i].dp.apply(op);
                        if self.check_no_loss {
                            self.check_loss(i, &what);
                        }
                    }
                }
            }
        }
    }

    /// Would a packet sent now in either direction meet an SA on the other side?
    fn check_loss(&mut self, changed: usize, what: &str) {
        for (x, y) in [(0, 1), (1, 0)] {
            let (tx, rx) = (&self.nodes[x].dp, &self.nodes[y].dp);
            for (reqid, spi) in tx.current_outbound() {
                let ok = rx.sas.get(&(true, spi)).is_some_and(|inb| {
                    let (k1, k2) = (&tx.sas[&(false, spi)].config.keys, &inb.config.keys);
                    k1.encryption[..] == k2.encryption[..]
                });
                if !ok {
                    self.loss.push(format!(
                        "at {} ms after {} on {}: {} sends reqid {reqid} on SPI {spi:#010x}, which {} does not hold",
                        self.now, what, self.nodes[changed].name, self.nodes[x].name, self.nodes[y].name
                    ));
                }
            }
        }
    }

    /// Deliver what is on the wire until it is quiet.
    pub fn deliver(&mut self) {
        for _ in 0..1000 {
            self.drain();
            if self.wire.is_empty() {
                return;
            }
            for d in std::mem::take(&mut self.wire) {
                self.sent += 1;
                let Some(d) = (self.filter)(self.now, d) else {
                    continue;
                };
                let now = self.now;
                if let Some(n) = self.nodes.iter_mut().find(|n| n.addr == d.to.ip()) {
                    n.daemon.handle_datagram(now, d.to, d.from, &d.data);
                }
            }
        }
        panic!("the network never went quiet");
    }

    /// Run the clock to `until`, firing every timer on the way.
    pub fn run_until(&mut self, until: u64) {
        let mut same = (self.now, 0u32);
        loop {
            if same.0 == self.now {
                same.1 += 1;
                assert!(
                    same.1 < 10_000,
                    "a timer at {} ms never makes progress",
                    self.now
                );
            } else {
                same = (self.now, 0);
            }
            self.deliver();
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.daemon.poll_timeout())
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for n in &mut self.nodes {
                        if n.daemon.poll_timeout().is_some_and(|t| t <= now) {
                            n.daemon.handle_timeout(now);
                        }
                    }
                }
                _ => {
                    self.now = until;
                    self.deliver();
                    return;
                }
            }
        }
    }

    pub fn list(&mut self, name: &str) -> String {
        let now = self.now;
        self.node(name)
            .daemon
            .handle_request(now, Request::List { conn: None })
            .text
    }
}

/// Both daemons' logs in the test's output at `TEST_LOG`'s level (`TEST_LOG=debug`); off
/// unless asked for.
pub fn init_test_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn basic() -> World {
    World::new(
        &conf(
            A,
            B,
            "",
            &child(
                "net",
                "10.1.0.0/16",
                "10.2.0.0/16",
                "start_action = \"start\"",
            ),
        ),
        &conf(B, A, "", &child("net", "10.2.0.0/16", "10.1.0.0/16", "")),
    )
}

/// Both dataplanes hold one Child SA whose keys match crosswise.
pub fn assert_tunnel_up(w: &mut World) {
    let (a, b) = (&w.nodes[0].dp, &w.nodes[1].dp);
    assert_eq!(a.inbound().len(), 1, "a holds one inbound SA");
    assert_eq!(a.outbound().len(), 1, "a holds one outbound SA");
    assert_eq!(b.inbound().len(), 1);
    assert_eq!(b.outbound().len(), 1);
    assert_eq!(a.outbound()[0].config.spi, b.inbound()[0].config.spi);
    assert_eq!(b.outbound()[0].config.spi, a.inbound()[0].config.spi);
    let (ka, kb) = (&a.outbound()[0].config.keys, &b.inbound()[0].config.keys);
    assert!(
        ka.encryption[..] == kb.encryption[..] && ka.integrity[..] == kb.integrity[..],
        "a's outbound keys are b's inbound keys"
    );
    assert_eq!(
        a.verdict(ip("10.1.0.5"), ip("10.2.0.5")),
        "protected",
        "a protects traffic to b's network"
    );
}
