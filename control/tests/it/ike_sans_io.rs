//! Our IKEv2 initiator against our responder, sans-IO: a `Pair` of IKE SAs, a virtual
//! clock, a seeded random source, a queue of datagrams that can be dropped, duplicated or
//! held back (reordered), and an optional port-translating NAT in front of the initiator.
//! Every algorithm combination, lost datagrams, INVALID_KE retry, cookies, PSK and proposal
//! mismatches (with the right notifies and errors), TS narrowing, NAT-T and NAT mapping
//! changes, INITIAL_CONTACT, AUTHENTICATION_FAILED notices, CREATE_CHILD_SA both ways, DPD,
//! Delete of a child and of the IKE SA.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use control::ike::child::{parse_ts, ChildCfg, EspProposal};
use control::ike::lifetime::{ChildLifetime, Limits};
use control::ike::sa::{
    invalid_major_version, is_init_request, peek, ChildRequest, ChildSa, Connection, CookieJar,
    Event, IkeError, IkeSa, Phase,
};
use control::ike::wire::exchange;
use zeroize::Zeroizing;

use crate::support::{Counter, Seeded};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const A: &str = "192.0.2.1:500";
const B: &str = "192.0.2.2:500";
/// The initiator's first child's inbound SPI; the responder's counter starts at R_SPI.
const I_SPI: u32 = 0x8000_0001;
const R_SPI: u32 = 0x8000_0002;

fn child(name: &str, lts: &str, rts: &str, esp: &str) -> ChildCfg {
    ChildCfg {
        per_resource: 0,
        name: name.into(),
        esp: esp
            .split(',')
            .map(|s| s.parse::<EspProposal>().unwrap())
            .collect(),
        local_ts: lts.split(',').map(|t| parse_ts(t).unwrap()).collect(),
        remote_ts: rts.split(',').map(|t| parse_ts(t).unwrap()).collect(),
        transport: false,
        // No time limits: `Pair::run` settles when no timer is left (the rekey tests in
        // ike_rekey_child.rs set lifetimes).
        lifetime: ChildLifetime::from_swanctl(
            Limits {
                rekey: Some(0),
                ..Default::default()
            },
            Limits::default(),
            Limits::default(),
        ),
    }
}

fn conn(initiator: bool, ike: &str, esp: &str, psk: &[u8]) -> Connection {
    let (a, b) = (addr(A), addr(B));
    let (local, remote, lid, rid, lts, rts) = if initiator {
        (
            a,
            b,
            "gw-a.example",
            "gw-b.example",
            "10.1.0.0/16",
            "10.2.0.0/16",
        )
    } else {
        (
            b,
            a,
            "gw-b.example",
            "gw-a.example",
            "10.2.0.0/16",
            "10.1.0.0/16",
        )
    };
    Connection {
        name: "test".into(),
        local,
        remote,
        local_id: lid.into(),
        remote_id: rid.into(),
        psk: Zeroizing::new(psk.to_vec()),
        ike: ike.split(',').map(|s| s.parse().unwrap()).collect(),
        children: vec![child("net", lts, rts, esp)],
        force_encap: false,
        retransmit_ms: 1000,
        retransmit_tries: 5,
        auth: Default::default(),
        fragmentation: Default::default(),
        // No IKE SA rekey: `run` lets time pass until no timer is left (ike_rekey_ike.rs
        // tests the lifetimes).
        lifetime: control::ike::lifetime::IkeLifetime::from_swanctl(Some(0), Some(0), None, None),
    }
}

const P: &str = "aes128gcm16-prfsha256-x25519";
const E: &str = "aes128gcm16";

#[derive(Debug, Clone)]
struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// What the network does with the n-th datagram sent (0-based, both directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Deliver,
    Drop,
    Duplicate,
    /// Held back until `release_held` (delivered out of order, later).
    Hold,
}

/// A NAT in front of the initiator that maps each inner address and port to a port of its
/// own public address, and forgets its mappings on `rebind` (a NAT reboot or timeout).
struct Nat {
    public: IpAddr,
    next_port: u16,
    out: HashMap<SocketAddr, SocketAddr>,
}

impl Nat {
    fn outbound(&mut self, inner: SocketAddr) -> SocketAddr {
        let next = &mut self.next_port;
        let public = self.public;
        *self.out.entry(inner).or_insert_with(|| {
            *next += 1;
            SocketAddr::new(public, *next)
        })
    }
    fn inbound(&self, outer: SocketAddr) -> Option<SocketAddr> {
        self.out.iter().find(|(_, o)| **o == outer).map(|(i, _)| *i)
    }
    fn rebind(&mut self) {
        self.out.clear();
    }
}

/// Decides the fate of each datagram.
type Network = Box<dyn FnMut(usize, &Datagram) -> Fault>;

struct Pair {
    now: u64,
    rng: Seeded,
    i: IkeSa,
    r: Option<IkeSa>,
    r_cfg: Connection,
    i_spis: Counter,
    r_spis: Counter,
    jar: Option<CookieJar>,
    nat: Option<Nat>,
    to_r: VecDeque<Datagram>,
    to_i: VecDeque<Datagram>,
    held: Vec<(bool, Datagram)>,
    /// Every event but Send, in order.
    i_events: Vec<Event>,
    r_events: Vec<Event>,
    /// Every datagram sent, by side (true: by the initiator), as it left.
    wire: Vec<(bool, Datagram)>,
    fault: Network,
}

impl Pair {
    fn new(i_cfg: Connection, r_cfg: Connection) -> Pair {
        Pair::with(i_cfg, r_cfg, true)
    }

    fn with(i_cfg: Connection, r_cfg: Connection, initial_contact: bool) -> Pair {
        let mut rng = Seeded(0x1234_5678_9abc_def1);
        let (l, r) = (i_cfg.local, i_cfg.remote);
        let first = ChildRequest {
            child: 0,
            inbound_spi: I_SPI,
        };
        let i = IkeSa::initiate(i_cfg, l, r, first, initial_contact, 0, &mut rng);
        let mut p = Pair {
            now: 0,
            rng,
            i,
            r: None,
            r_cfg,
            i_spis: Counter(0x8000_0101),
            r_spis: Counter(R_SPI),
            jar: None,
            nat: None,
            to_r: VecDeque::new(),
            to_i: VecDeque::new(),
            held: vec![],
            i_events: vec![],
            r_events: vec![],
            wire: vec![],
            fault: Box::new(|_, _| Fault::Deliver),
        };
        p.collect();
        p
    }

    fn fault(mut self, f: impl FnMut(usize, &Datagram) -> Fault + 'static) -> Pair {
        self.fault = Box::new(f);
        // The first IKE_SA_INIT already left: run it through the new network.
        let first: Vec<Datagram> = self.to_r.drain(..).collect();
        self.wire.clear();
        for d in first {
            self.put(true, d);
        }
        self
    }

    fn sent(&self) -> usize {
        self.wire.len()
    }

    fn r(&mut self) -> &mut IkeSa {
        self.r.as_mut().expect("the responder exists")
    }

    /// One datagram into the network.
    fn put(&mut self, from_i: bool, mut d: Datagram) {
        self.wire.push((from_i, d.clone()));
        let n = self.wire.len() - 1;
        if let Some(nat) = self.nat.as_mut() {
            if from_i {
                d.from = nat.outbound(d.from);
            } else {
                match nat.inbound(d.to) {
                    Some(inner) => d.to = inner,
                    None => return, // no mapping: the NAT drops it
                }
            }
        }
        let q = if from_i {
            &mut self.to_r
        } else {
            &mut self.to_i
        };
        match (self.fault)(n, &d) {
            Fault::Deliver => q.push_back(d),
            Fault::Drop => {}
            Fault::Duplicate => {
                q.push_back(d.clone());
                q.push_back(d);
            }
            Fault::Hold => self.held.push((from_i, d)),
        }
    }

    /// Move every event out of both SAs: datagrams into the network, the rest aside.
    fn collect(&mut self) {
        let mut out = vec![];
        while let Some(e) = self.i.poll_event() {
            match e {
                Event::Send { from, to, data } => out.push((true, Datagram { from, to, data })),
                // Log lines (the daemon's to log) are not what these tests look at.
                Event::Log { .. } => {}
                e => self.i_events.push(e),
            }
        }
        if let Some(r) = self.r.as_mut() {
            while let Some(e) = r.poll_event() {
                match e {
                    Event::Send { from, to, data } => {
                        out.push((false, Datagram { from, to, data }))
                    }
                    Event::Log { .. } => {}
                    e => self.r_events.push(e),
                }
            }
        }
        for (from_i, d) in out {
            self.put(from_i, d);
        }
    }

    fn deliver_to_r(&mut self, d: Datagram) {
        let now = self.now;
        let h = peek(&d.data).unwrap();
        let known = self.r.as_ref().is_some_and(|r| r.spis().0 == h.spi_i);
        if is_init_request(&h) && !known {
            if let Some(j) = &self.jar {
                if let Some(reply) = j.check(&d.data, d.from.ip()) {
                    let reply = Datagram {
                        from: d.to,
                        to: d.from,
                        data: reply,
                    };
                    self.put(false, reply);
                    return;
                }
            }
            match IkeSa::respond(
                self.r_cfg.clone(),
                d.to,
                d.from,
                &d.data,
                now,
                &mut self.rng,
            ) {
                Ok(r) => self.r = Some(r),
                Err(evs) => {
                    for e in evs {
                        match e {
                            Event::Send { from, to, data } => {
                                self.put(false, Datagram { from, to, data })
                            }
                            Event::Log { .. } => {}
                            e => self.r_events.push(e),
                        }
                    }
                }
            }
        } else if let Some(r) = self.r.as_mut() {
            r.handle(now, d.to, d.from, &d.data, &mut self.rng, &mut self.r_spis);
        }
    }

    /// Deliver until nothing is in flight; the clock stands still.
    fn pump(&mut self) {
        for _ in 0..1000 {
            self.collect();
            if self.to_r.is_empty() && self.to_i.is_empty() {
                return;
            }
            while let Some(d) = self.to_r.pop_front() {
                self.deliver_to_r(d);
            }
            while let Some(d) = self.to_i.pop_front() {
                let now = self.now;
                self.i
                    .handle(now, d.to, d.from, &d.data, &mut self.rng, &mut self.i_spis);
            }
        }
        panic!("the exchange does not settle");
    }

    fn next_timer(&self) -> Option<u64> {
        [
            self.i.poll_timeout(),
            self.r.as_ref().and_then(|r| r.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Move the clock to `t`, firing the timers due on the way.
    fn advance_to(&mut self, t: u64) {
        while let Some(next) = self.next_timer().filter(|&n| n <= t) {
            self.now = self.now.max(next);
            let now = self.now;
            self.i.handle_timeout(now, &mut self.rng, &mut self.i_spis);
            if let Some(r) = self.r.as_mut() {
                r.handle_timeout(now, &mut self.rng, &mut self.r_spis);
            }
            self.pump();
        }
        self.now = self.now.max(t);
    }

    /// Deliver and let time pass until no datagram is in flight and no timer is left.
    fn run(&mut self) {
        for _ in 0..1000 {
            self.pump();
            match self.next_timer() {
                Some(t) => self.advance_to(t),
                None => return,
            }
        }
        panic!("timers keep firing");
    }

    fn release_held(&mut self) {
        for (from_i, d) in std::mem::take(&mut self.held) {
            if from_i {
                self.to_r.push_back(d);
            } else {
                self.to_i.push_back(d);
            }
        }
        self.pump();
    }

    fn take_events(&mut self) -> (Vec<Event>, Vec<Event>) {
        (
            std::mem::take(&mut self.i_events),
            std::mem::take(&mut self.r_events),
        )
    }
}

fn child_up<'a>(events: &'a [Event], name: &str) -> Option<&'a ChildSa> {
    events.iter().find_map(|e| match e {
        Event::ChildUp(c) if c.name == name => Some(c),
        _ => None,
    })
}

fn failure(events: &[Event]) -> Option<&IkeError> {
    events.iter().find_map(|e| match e {
        Event::Failed(f) => Some(f),
        _ => None,
    })
}

fn child_failure(events: &[Event]) -> Option<&IkeError> {
    events.iter().find_map(|e| match e {
        Event::ChildFailed { error, .. } => Some(error),
        _ => None,
    })
}

fn ignored(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Ignored { what } => Some(what.as_str()),
            _ => None,
        })
        .collect()
}

/// The keys of the two halves match crosswise.
fn assert_keys_match(ours: &ChildSa, theirs: &ChildSa) {
    assert_eq!(
        (ours.inbound_spi, ours.outbound_spi),
        (theirs.outbound_spi, theirs.inbound_spi)
    );
    assert_eq!(
        &ours.keys_out.encryption[..],
        &theirs.keys_in.encryption[..]
    );
    assert_eq!(
        &ours.keys_in.encryption[..],
        &theirs.keys_out.encryption[..]
    );
    assert_eq!(&ours.keys_out.integrity[..], &theirs.keys_in.integrity[..]);
    assert_eq!(&ours.keys_in.integrity[..], &theirs.keys_out.integrity[..]);
    assert_ne!(&ours.keys_out.encryption[..], &ours.keys_in.encryption[..]);
}

fn established() -> Pair {
    let mut p = Pair::new(conn(true, P, E, b"k"), conn(false, P, E, b"k"));
    p.run();
    assert_eq!(p.i.phase(), Phase::Established);
    assert_eq!(p.r().phase(), Phase::Established);
    p.take_events();
    p
}

// ---- IKE_SA_INIT and IKE_AUTH ------------------------------------------------------------

#[test]
fn every_algorithm_combination_establishes_a_child_sa() {
    let ikes = [
        "aes128gcm16-prfsha256",
        "aes256gcm16-prfsha384",
        "chacha20poly1305-prfsha512",
        "aes128-sha256",
        "aes256-sha384",
        "aes256-sha512",
    ];
    let groups = ["x25519", "ecp256", "ecp384", "modp2048", "modp3072"];
    let esps = [
        "aes128gcm16",
        "aes256gcm16",
        "aes256-sha256",
        "chacha20poly1305",
    ];
    for (k, ike) in ikes.iter().enumerate() {
        for (g, group) in groups.iter().enumerate() {
            let esp = esps[(k + g) % esps.len()];
            let p = format!("{ike}-{group}");
            let mut pair = Pair::new(
                conn(true, &p, esp, b"s3cret"),
                conn(false, &p, esp, b"s3cret"),
            );
            pair.run();
            assert_eq!(
                pair.i.phase(),
                Phase::Established,
                "{p} {esp}: {:?}",
                failure(&pair.i_events)
            );
            assert_eq!(pair.r().phase(), Phase::Established, "{p}");
            let ci = child_up(&pair.i_events, "net").expect("initiator child");
            let cr = child_up(&pair.r_events, "net").expect("responder child");
            assert_eq!((ci.inbound_spi, ci.outbound_spi), (I_SPI, R_SPI));
            assert_keys_match(ci, cr);
            assert_eq!(ci.proposal, cr.proposal);
            assert_eq!(pair.sent(), 4, "{p}: two exchanges, no retransmission");
            assert_eq!(
                (ci.udp_encap, cr.udp_encap),
                (None, None),
                "no NAT, no UDP encapsulation"
            );
            assert!(!pair.i.nat() && !pair.r().nat());
            assert_eq!(pair.i.children().len(), 1);
            assert_eq!(pair.r().children()[0].inbound_spi, R_SPI);
            assert_eq!(pair.i.peer_id().as_deref(), Some("gw-b.example"));
            assert_eq!(pair.r().peer_id().as_deref(), Some("gw-a.example"));
        }
    }
}

#[test]
fn lost_datagrams_are_retransmitted_and_the_exchange_completes() {
    // Lose the first IKE_SA_INIT request and the first IKE_AUTH response.
    let mut p = Pair::new(conn(true, P, E, b"k"), conn(false, P, E, b"k")).fault(|n, _| {
        if n == 0 || n == 4 {
            Fault::Drop
        } else {
            Fault::Deliver
        }
    });
    p.run();
    assert_eq!(
        p.i.phase(),
        Phase::Established,
        "{:?}",
        failure(&p.i_events)
    );
    assert!(child_up(&p.i_events, "net").is_some() && child_up(&p.r_events, "net").is_some());
    assert_eq!(p.sent(), 7);
    // The retransmitted IKE_AUTH request got the cached answer, not a second Child SA.
    assert_eq!(p.r().children().len(), 1);
}

#[test]
fn duplicated_datagrams_change_nothing() {
    let mut p =
        Pair::new(conn(true, P, E, b"k"), conn(false, P, E, b"k")).fault(|_, _| Fault::Duplicate);
    p.run();
    assert_eq!(p.i.phase(), Phase::Established);
    assert_eq!(p.r().children().len(), 1, "one Child SA despite duplicates");
    assert_eq!(
        p.i_events
            .iter()
            .filter(|e| matches!(e, Event::ChildUp(_)))
            .count(),
        1
    );
    // The duplicate responses were noticed and dropped (§2.3), not acted on.
    assert!(!ignored(&p.i_events).is_empty());
}

#[test]
fn a_silent_peer_fails_after_the_retries_with_a_reason() {
    let mut p =
        Pair::new(conn(true, P, E, b"k"), conn(false, P, E, b"k")).fault(|_, _| Fault::Drop);
    p.run();
    assert_eq!(p.i.phase(), Phase::Closed);
    let err = failure(&p.i_events).unwrap();
    assert!(
        matches!(err, IkeError::Timeout { what: "IKE_SA_INIT", tries: 5, peer } if *peer == addr(B)),
        "{err:?}"
    );
    assert_eq!(p.sent(), 5);
    assert_eq!(
        p.now,
        1000 + 2000 + 4000 + 8000 + 16000,
        "exponential backoff"
    );
}

#[test]
fn invalid_ke_makes_the_initiator_retry_with_the_responders_group() {
    let mut p = Pair::new(
        conn(true, "aes128gcm16-prfsha256-x25519-ecp256", E, b"k"),
        conn(false, "aes128gcm16-prfsha256-ecp256", E, b"k"),
    );
    p.run();
    assert_eq!(
        p.i.phase(),
        Phase::Established,
        "{:?}",
        failure(&p.i_events)
    );
    assert!(matches!(
        failure(&p.r_events),
        Some(IkeError::KeGroupMismatch { theirs: 31, ours }) if ours == "ecp256"
    ));
    assert_eq!(p.sent(), 6);
}

#[test]
fn forced_nat_t_moves_both_sides_to_udp_encapsulation() {
    let mut i = conn(true, P, E, b"k");
    i.force_encap = true;
    let mut p = Pair::new(i, conn(false, P, E, b"k"));
    p.run();
    assert_eq!(p.i.phase(), Phase::Established);
    let ci = child_up(&p.i_events, "net").unwrap();
    let cr = child_up(&p.r_events, "net").unwrap();
    assert_eq!(ci.udp_encap, Some((4500, 4500)));
    assert_eq!(
        cr.udp_encap,
        Some((4500, 4500)),
        "the responder sees the NAT too"
    );
    // IKE_AUTH went from and to port 4500.
    let (_, auth) = &p.wire[2];
    assert_eq!((auth.from.port(), auth.to.port()), (4500, 4500));
}

#[test]
fn cookie_round_trip() {
    let p_ = "aes256gcm16-prfsha256-ecp384";
    let mut p = Pair::new(
        conn(true, p_, "aes256gcm16", b"k"),
        conn(false, p_, "aes256gcm16", b"k"),
    );
    p.jar = Some(CookieJar::new([9; 32]));
    p.run();
    assert_eq!(
        p.i.phase(),
        Phase::Established,
        "{:?}",
        failure(&p.i_events)
    );
    assert_eq!(p.sent(), 6, "cookie request, then the two exchanges");
}

#[test]
fn psk_mismatch_fails_on_both_sides_with_authentication_failed() {
    let mut p = Pair::new(conn(true, P, E, b"one"), conn(false, P, E, b"two"));
    p.run();
    assert_eq!(p.i.phase(), Phase::Closed);
    assert_eq!(p.r().phase(), Phase::Closed);
    let i = failure(&p.i_events).unwrap();
    let r = failure(&p.r_events).unwrap();
    assert!(
        matches!(i, IkeError::PeerRejectedAuth { our_id, peer_is_initiator: false } if our_id == "gw-a.example"),
        "{i:?}"
    );
    assert!(
        matches!(r, IkeError::PeerAuthInvalid { peer_id, peer_is_initiator: true } if peer_id == "gw-a.example"),
        "{r:?}"
    );
    assert!(child_up(&p.i_events, "net").is_none() && child_up(&p.r_events, "net").is_none());
}

#[test]
fn disjoint_proposals_give_no_proposal_chosen_naming_both_sides() {
    let mut p = Pair::new(
        conn(true, P, E, b"k"),
        conn(false, "aes256-sha512-modp3072", E, b"k"),
    );
    p.run();
    assert_eq!(p.i.phase(), Phase::Closed);
    assert!(p.r.is_none(), "the responder keeps no state");
    assert!(matches!(
        failure(&p.i_events),
        Some(IkeError::PeerRefusedIkeProposals { ours }) if ours.contains("aes128gcm16")
    ));
    assert!(matches!(
        failure(&p.r_events),
        Some(IkeError::NoIkeProposal { ours, theirs })
            if theirs == "aes128gcm16-prfsha256-x25519" && ours == "aes256-prfsha512-sha512-modp3072"
    ));

    // ESP only: the IKE SA comes up, the child does not, and both sides say why.
    let mut p = Pair::new(
        conn(true, P, E, b"k"),
        conn(false, P, "aes256-sha256", b"k"),
    );
    p.run();
    assert_eq!(p.i.phase(), Phase::Established);
    assert!(child_up(&p.i_events, "net").is_none());
    assert!(matches!(
        child_failure(&p.r_events),
        Some(IkeError::NoEspProposal { .. })
    ));
    assert!(matches!(
        child_failure(&p.i_events),
        Some(IkeError::PeerRefusedEsp { ours }) if ours.starts_with("aes128gcm16")
    ));
    assert!(p.i.children().is_empty() && p.r().children().is_empty());
}

#[test]
fn traffic_selectors_are_narrowed_or_refused() {
    let mut r = conn(false, P, E, b"k");
    r.children[0].local_ts = vec![parse_ts("10.2.5.0/24").unwrap()];
    let mut p = Pair::new(conn(true, P, E, b"k"), r);
    p.run();
    let ci = child_up(&p.i_events, "net").expect("narrowed child");
    assert_eq!(ci.remote_ts, vec![parse_ts("10.2.5.0/24").unwrap()]);
    assert_eq!(ci.local_ts, vec![parse_ts("10.1.0.0/16").unwrap()]);
    // The responder's ChildUp carries the narrowed selectors too, and so does its list.
    let cr = child_up(&p.r_events, "net").unwrap();
    assert_eq!(cr.local_ts, vec![parse_ts("10.2.5.0/24").unwrap()]);
    assert_eq!(cr.remote_ts, vec![parse_ts("10.1.0.0/16").unwrap()]);
    assert_eq!(p.i.children()[0].remote_ts, ci.remote_ts);

    let mut r = conn(false, P, E, b"k");
    r.children[0].local_ts = vec![parse_ts("172.16.0.0/12").unwrap()];
    let mut p = Pair::new(conn(true, P, E, b"k"), r);
    p.run();
    assert_eq!(p.i.phase(), Phase::Established);
    assert!(child_up(&p.i_events, "net").is_none());
    assert!(matches!(
        child_failure(&p.r_events),
        Some(IkeError::TsUnacceptable { proposed, allowed })
            if proposed == "10.1.0.0/16 === 10.2.0.0/16" && allowed == "10.1.0.0/16 === 172.16.0.0/12"
    ));
    assert!(matches!(
        child_failure(&p.i_events),
        Some(IkeError::PeerRefusedTs { .. })
    ));
}

#[test]
fn the_responder_picks_the_first_child_whose_selectors_fit() {
    let mut r = conn(false, P, E, b"k");
    r.children = vec![
        child("other", "10.9.0.0/16", "10.1.0.0/16", E),
        child("wide", "10.2.0.0/16", "10.0.0.0/8", E),
        child("late", "10.2.0.0/16", "10.1.0.0/16", E),
    ];
    let mut p = Pair::new(conn(true, P, E, b"k"), r);
    p.run();
    let cr = child_up(&p.r_events, "wide").expect("the first child that narrows to something");
    assert_eq!(cr.remote_ts, vec![parse_ts("10.1.0.0/16").unwrap()]);
    assert_eq!(p.r().children()[0].name, "wide");
}

#[test]
fn a_higher_major_version_gets_invalid_major_version() {
    let p = Pair::new(conn(true, P, E, b"k"), conn(false, P, E, b"k"));
    let mut req = p.i.first_message().to_vec();
    assert!(invalid_major_version(&req).is_none(), "version 2 is ours");
    req[17] = 0x30; // IKE version 3.0
    let resp = control::ike::wire::Message::parse(&invalid_major_version(&req).unwrap()).unwrap();
    assert_eq!((resp.header.major, resp.header.is_response()), (2, true));
    let n = resp.notify(5).expect("INVALID_MAJOR_VERSION");
    assert_eq!(n.data, vec![0x20]);
}

#[test]
fn a_half_open_sa_expires_on_the_responder() {
    // Every IKE_AUTH request is lost: the responder gives up after the initiator's budget.
    let mut p = Pair::new(conn(true, P, E, b"k"), conn(false, P, E, b"k")).fault(|_, d| {
        if peek(&d.data).unwrap().exchange == exchange::IKE_AUTH {
            Fault::Drop
        } else {
            Fault::Deliver
        }
    });
    p.run();
    assert_eq!(p.r().phase(), Phase::Closed);
    assert!(matches!(
        failure(&p.r_events),
        Some(IkeError::HalfOpenExpired {
            waited_ms: 31_000,
            ..
        })
    ));
    assert!(matches!(
        failure(&p.i_events),
        Some(IkeError::Timeout {
            what: "IKE_AUTH",
            ..
        })
    ));
}

// ---- addresses and NAT (§2.11, §2.23) ------------------------------------------------

fn natted() -> Pair {
    let mut p = Pair::new(conn(true, P, E, b"k"), conn(false, P, E, b"k"));
    p.nat = Some(Nat {
        public: "198.51.100.7".parse().unwrap(),
        next_port: 40000,
        out: HashMap::new(),
    });
    // The first IKE_SA_INIT is already queued: translate it as the NAT would.
    let first: Vec<Datagram> = p.to_r.drain(..).collect();
    p.wire.clear();
    for d in first {
        p.put(true, d);
    }
    p
}

#[test]
fn responses_go_to_the_source_address_and_port() {
    let mut p = natted();
    p.run();
    assert_eq!(
        p.i.phase(),
        Phase::Established,
        "{:?}",
        failure(&p.i_events)
    );
    // §2.11: the IKE_SA_INIT answer went to the NAT's port, not to port 500.
    let (from_i, init_resp) = &p.wire[1];
    assert!(!from_i);
    assert_eq!(init_resp.to, addr("198.51.100.7:40001"));
    assert_eq!(init_resp.from, addr(B));
    // §2.23: a NAT was found; the initiator moved to 4500, so did the responder, which now
    // talks to the NAT's mapping of the initiator's port 4500.
    assert!(p.i.nat() && p.r().nat());
    assert_eq!(p.i.local(), addr("192.0.2.1:4500"));
    assert_eq!(p.i.remote(), addr("192.0.2.2:4500"));
    assert_eq!(p.r().remote(), addr("198.51.100.7:40002"));
    assert_eq!(p.r().local(), addr("192.0.2.2:4500"));
    let cr = child_up(&p.r_events, "net").unwrap();
    assert_eq!(
        cr.udp_encap,
        Some((4500, 40002)),
        "ESP-in-UDP to the mapped port"
    );
    assert_eq!(cr.remote, "198.51.100.7".parse::<IpAddr>().unwrap());
    let ci = child_up(&p.i_events, "net").unwrap();
    assert_eq!(ci.udp_encap, Some((4500, 4500)));
}

#[test]
fn a_changed_nat_mapping_is_followed_by_the_peer_outside_the_nat() {
    let mut p = natted();
    p.run();
    p.take_events();
    // The NAT forgets its mappings: the initiator's next message comes from a new port.
    p.nat.as_mut().unwrap().rebind();
    let now = p.now;
    assert!(p.i.dpd_probe(now, 10_000, &mut p.rng));
    p.pump();
    let moved: Vec<_> = p
        .r_events
        .iter()
        .filter_map(|e| match e {
            Event::PeerMoved { remote } => Some(*remote),
            _ => None,
        })
        .collect();
    assert_eq!(moved, vec![addr("198.51.100.7:40003")]);
    assert_eq!(p.r().remote(), addr("198.51.100.7:40003"));
    // The answer reached the initiator through the new mapping: nothing failed.
    p.run();
    assert_eq!(p.i.phase(), Phase::Established);
    assert!(failure(&p.i_events).is_none());
    // The responder's own requests now go to the new mapping too.
    let now = p.now;
    let rng = &mut p.rng;
    assert!(p.r.as_mut().unwrap().dpd_probe(now, 10_000, rng));
    p.run();
    assert_eq!(p.r().phase(), Phase::Established);
    assert!(failure(&p.r_events).is_none());
    // The initiator, behind the NAT, never moves (§2.23).
    assert!(!p
        .i_events
        .iter()
        .any(|e| matches!(e, Event::PeerMoved { .. })));
}

#[test]
fn without_a_nat_a_message_from_another_port_moves_nothing() {
    let mut p = established();
    let now = p.now;
    assert!(p.i.dpd_probe(now, 10_000, &mut p.rng));
    p.collect();
    let mut d = p.to_r.pop_front().unwrap();
    d.from = addr("192.0.2.1:6000");
    p.to_r.push_back(d);
    p.pump();
    assert_eq!(p.r().remote(), addr(A));
    assert!(!p
        .r_events
        .iter()
        .any(|e| matches!(e, Event::PeerMoved { .. })));
    assert!(ignored(&p.r_events)
        .iter()
        .any(|w| w.contains("not following")));
    // The answer still went where the request came from (§2.11).
    assert_eq!(p.wire.last().unwrap().1.to, addr("192.0.2.1:6000"));
}

// ---- INITIAL_CONTACT and authentication failures --------------------------------------

fn initial_contact_seen(events: &[Event]) -> Option<bool> {
    events.iter().find_map(|e| match e {
        Event::Established {
            peer_initial_contact,
            ..
        } => Some(*peer_initial_contact),
        _ => None,
    })
}

#[test]
fn initial_contact_is_sent_when_asked_and_reported() {
    for want in [true, false] {
        let mut p = Pair::with(conn(true, P, E, b"k"), conn(false, P, E, b"k"), want);
        p.run();
        assert_eq!(initial_contact_seen(&p.r_events), Some(want));
        assert_eq!(
            initial_contact_seen(&p.i_events),
            Some(false),
            "the responder sends none"
        );
    }
}

#[test]
fn abandon_drops_the_sa_silently() {
    let mut p = established();
    p.r().abandon();
    p.collect();
    assert_eq!(p.r().phase(), Phase::Closed);
    assert!(p.to_i.is_empty(), "not a word to the peer");
    assert!(p.r_events.iter().any(|e| matches!(
        e,
        Event::ChildDown {
            inbound_spi: R_SPI,
            by_peer: true,
            ..
        }
    )));
    assert!(p
        .r_events
        .iter()
        .any(|e| matches!(e, Event::Closed { by_peer: true })));
}

#[test]
fn the_initiator_tells_the_responder_when_its_auth_does_not_verify() {
    // The responder identifies as someone the initiator does not expect: the responder
    // authenticated the initiator and is up; the initiator rejects it and says so (§2.21.2).
    let mut r = conn(false, P, E, b"k");
    r.local_id = "gw-c.example".into();
    let mut p = Pair::new(conn(true, P, E, b"k"), r);
    p.run();
    assert!(matches!(
        failure(&p.i_events),
        Some(IkeError::PeerIdMismatch { got, want, peer_is_initiator: false })
            if got == "gw-c.example" && want == "gw-b.example"
    ));
    assert!(child_up(&p.i_events, "net").is_none());
    // The notice: an INFORMATIONAL request from the initiator after the IKE_AUTH answer.
    let info = p
        .wire
        .iter()
        .filter(|(from_i, _)| *from_i)
        .map(|(_, d)| peek(&d.data).unwrap())
        .find(|h| h.exchange == exchange::INFORMATIONAL && !h.is_response())
        .expect("an INFORMATIONAL request");
    assert_eq!(info.message_id, 2);
    // The responder took its IKE SA and Child SA down: nothing left established.
    assert_eq!(p.r().phase(), Phase::Closed);
    assert!(matches!(
        failure(&p.r_events),
        Some(IkeError::PeerRejectedAuth { our_id, peer_is_initiator: true }) if our_id == "gw-c.example"
    ));
    assert!(p.r_events.iter().any(|e| matches!(
        e,
        Event::ChildDown {
            inbound_spi: R_SPI,
            ..
        }
    )));
    assert!(p.r().children().is_empty());
    // The notice was answered: the initiator is done too.
    assert_eq!(p.i.phase(), Phase::Closed);
}

#[test]
fn the_notice_is_retransmitted_until_answered() {
    let mut r = conn(false, P, E, b"k");
    r.local_id = "gw-c.example".into();
    let mut dropped = false;
    let mut p = Pair::new(conn(true, P, E, b"k"), r).fault(move |_, d| {
        let h = peek(&d.data).unwrap();
        if h.exchange == exchange::INFORMATIONAL && !h.is_response() && !dropped {
            dropped = true;
            Fault::Drop
        } else {
            Fault::Deliver
        }
    });
    p.pump();
    assert_eq!(p.i.phase(), Phase::Deleting, "the notice is still out");
    p.run();
    assert_eq!(p.r().phase(), Phase::Closed);
    assert_eq!(p.i.phase(), Phase::Closed);
}

// ---- CREATE_CHILD_SA ------------------------------------------------------------------

fn two_children(initiator: bool) -> Connection {
    let mut c = conn(initiator, P, E, b"k");
    let web = if initiator {
        child("web", "10.1.0.0/16", "10.3.0.0/16", "aes256gcm16")
    } else {
        child("web", "10.3.0.0/16", "10.1.0.0/16", "aes256gcm16")
    };
    c.children.push(web);
    c
}

#[test]
fn create_child_sa_makes_another_child_as_initiator() {
    let mut p = Pair::new(two_children(true), two_children(false));
    p.run();
    let first_i = child_up(&p.i_events, "net").unwrap();
    let first_keys = first_i.keys_out.encryption.to_vec();
    p.take_events();
    let now = p.now;
    let req = ChildRequest {
        child: 1,
        inbound_spi: 0x8000_0011,
    };
    p.i.create_child(now, req, &mut p.rng).unwrap();
    p.run();
    let ci = child_up(&p.i_events, "web").expect("initiator's web child");
    let cr = child_up(&p.r_events, "web").expect("responder's web child");
    assert_keys_match(ci, cr);
    assert_eq!(ci.inbound_spi, 0x8000_0011);
    assert_eq!(cr.inbound_spi, R_SPI + 1, "from the responder's allocator");
    assert_eq!(
        ci.proposal.transform.to_string(),
        cr.proposal.transform.to_string()
    );
    assert_eq!(ci.remote_ts, vec![parse_ts("10.3.0.0/16").unwrap()]);
    assert_ne!(
        &ci.keys_out.encryption[..16],
        &first_keys[..16],
        "fresh nonces, fresh keys"
    );
    assert_eq!(p.i.children().len(), 2);
    assert_eq!(p.r().children().len(), 2);
}

#[test]
fn create_child_sa_makes_another_child_as_responder() {
    let mut p = Pair::new(two_children(true), two_children(false));
    p.run();
    p.take_events();
    let now = p.now;
    let req = ChildRequest {
        child: 1,
        inbound_spi: 0x9000_0001,
    };
    let rng = &mut p.rng;
    p.r.as_mut().unwrap().create_child(now, req, rng).unwrap();
    p.run();
    let ci = child_up(&p.i_events, "web").expect("the original initiator answers");
    let cr = child_up(&p.r_events, "web").expect("the original responder asked");
    assert_keys_match(cr, ci);
    assert_eq!(cr.inbound_spi, 0x9000_0001);
    assert_eq!(
        ci.inbound_spi, 0x8000_0101,
        "from the initiator's allocator"
    );
    assert_eq!(ci.local_ts, vec![parse_ts("10.1.0.0/16").unwrap()]);
    assert_eq!(ci.remote_ts, vec![parse_ts("10.3.0.0/16").unwrap()]);
}

#[test]
fn requests_wait_for_the_window_and_go_in_order() {
    let mut p = Pair::new(two_children(true), two_children(false));
    p.run();
    p.take_events();
    let sent = p.sent();
    let now = p.now;
    let rng = &mut p.rng;
    p.i.create_child(
        now,
        ChildRequest {
            child: 1,
            inbound_spi: 0x11,
        },
        rng,
    )
    .unwrap();
    p.i.create_child(
        now,
        ChildRequest {
            child: 0,
            inbound_spi: 0x12,
        },
        rng,
    )
    .unwrap();
    assert!(p.i.dpd_probe(now, 5000, rng));
    assert!(!p.i.dpd_probe(now, 5000, rng), "one probe at a time");
    p.collect();
    assert_eq!(p.sent(), sent + 1, "window size 1: one request in flight");
    p.run();
    let ups: Vec<u32> = p
        .i_events
        .iter()
        .filter_map(|e| match e {
            Event::ChildUp(c) => Some(c.inbound_spi),
            _ => None,
        })
        .collect();
    assert_eq!(ups, vec![0x11, 0x12]);
    let mids: Vec<u32> = p.wire[sent..]
        .iter()
        .filter(|(i, _)| *i)
        .map(|(_, d)| peek(&d.data).unwrap().message_id)
        .collect();
    assert_eq!(mids, vec![2, 3, 4]);
    assert_eq!(p.i.phase(), Phase::Established);
    // Not established: refused.
    let mut q = Pair::new(two_children(true), two_children(false));
    let rng = &mut q.rng;
    assert_eq!(
        q.i.create_child(
            0,
            ChildRequest {
                child: 1,
                inbound_spi: 1
            },
            rng
        ),
        Err(IkeError::NotEstablished)
    );
    let now = p.now;
    assert!(matches!(
        p.i.create_child(
            now,
            ChildRequest {
                child: 7,
                inbound_spi: 1
            },
            &mut p.rng
        ),
        Err(IkeError::NoSuchChild { index: 7, count: 2 })
    ));
}

// ---- DPD, Delete, retransmitted requests ---------------------------------------------

#[test]
fn an_answered_dpd_probe_keeps_the_sa() {
    let mut p = established();
    let now = p.now;
    assert!(p.i.dpd_probe(now, 10_000, &mut p.rng));
    p.run();
    assert_eq!(p.i.phase(), Phase::Established);
    assert!(failure(&p.i_events).is_none());
    assert_eq!(p.i.last_heard(), now);
    assert_eq!(p.i.poll_timeout(), None, "nothing left to wait for");
}

#[test]
fn an_unanswered_dpd_probe_declares_the_peer_dead() {
    let mut p = established();
    p.fault = Box::new(|_, _| Fault::Drop);
    let start = p.now;
    assert!(p.i.dpd_probe(start, 10_000, &mut p.rng));
    p.run();
    assert_eq!(p.i.phase(), Phase::Closed);
    assert!(
        matches!(
            failure(&p.i_events),
            Some(IkeError::PeerDead { probes: 4, waited_ms: 10_000, peer }) if *peer == addr(B)
        ),
        "{:?}",
        failure(&p.i_events)
    );
    assert_eq!(p.now, start + 10_000);
    assert!(p.i_events.iter().any(|e| matches!(
        e,
        Event::ChildDown {
            inbound_spi: I_SPI,
            by_peer: false,
            ..
        }
    )));
}

#[test]
fn retransmitted_requests_get_the_cached_answer() {
    let mut p = established();
    p.fault = Box::new(|_, _| Fault::Duplicate);
    let now = p.now;
    assert!(p.i.dpd_probe(now, 10_000, &mut p.rng));
    p.pump();
    // Both copies of the request were answered with the same bytes (§2.1) ...
    let answers: Vec<&Vec<u8>> = p
        .wire
        .iter()
        .filter(|(i, _)| !*i)
        .map(|(_, d)| &d.data)
        .collect();
    let last_two = &answers[answers.len() - 2..];
    assert_eq!(last_two[0], last_two[1]);
    // ... and the extra answers were dropped by the initiator as stale.
    assert!(ignored(&p.i_events)
        .iter()
        .any(|w| w.contains("no request of ours outstanding")));
    assert_eq!(p.i.phase(), Phase::Established);
}

#[test]
fn an_old_request_delivered_late_is_outside_the_window() {
    let mut p = established();
    let mut held = false;
    p.fault = Box::new(move |_, d| {
        let h = peek(&d.data).unwrap();
        if !h.is_response() && !held {
            held = true;
            Fault::Hold
        } else {
            Fault::Deliver
        }
    });
    let now = p.now;
    assert!(p.i.dpd_probe(now, 60_000, &mut p.rng));
    p.pump();
    // The probe is retransmitted, answered; a second exchange follows.
    let t = p.i.poll_timeout().unwrap();
    p.advance_to(t);
    let now = p.now;
    assert!(p.i.dpd_probe(now, 60_000, &mut p.rng));
    p.pump();
    p.take_events();
    p.release_held();
    assert!(ignored(&p.r_events)
        .iter()
        .any(|w| w.contains("expecting 4")));
    assert_eq!(p.r().phase(), Phase::Established);
}

#[test]
fn delete_child_closes_both_halves_and_keeps_the_ike_sa() {
    let mut p = established();
    let now = p.now;
    p.i.delete_child(now, I_SPI, &mut p.rng);
    p.run();
    assert!(p.i_events.iter().any(|e| matches!(
        e,
        Event::ChildDown { name, inbound_spi: I_SPI, outbound_spi: R_SPI, by_peer: false, rekeyed: false } if name == "net"
    )));
    assert!(p.r_events.iter().any(|e| matches!(
        e,
        Event::ChildDown {
            inbound_spi: R_SPI,
            outbound_spi: I_SPI,
            by_peer: true,
            ..
        }
    )));
    assert!(p.i.children().is_empty() && p.r().children().is_empty());
    assert_eq!(p.i.phase(), Phase::Established);
    assert_eq!(p.r().phase(), Phase::Established);
    // Unknown SPIs are said, not silently dropped.
    let now = p.now;
    p.i.delete_child(now, 0xdead, &mut p.rng);
    p.collect();
    assert!(!ignored(&p.i_events).is_empty());
}

#[test]
fn delete_closes_both_sides_and_their_child_sas() {
    let mut p = established();
    let now = p.now;
    p.i.delete(now, &mut p.rng);
    p.collect();
    assert_eq!(p.i.phase(), Phase::Deleting);
    assert!(p.i_events.iter().any(|e| matches!(
        e,
        Event::ChildDown {
            inbound_spi: I_SPI,
            by_peer: false,
            ..
        }
    )));
    p.run();
    assert!(p.r_events.iter().any(|e| matches!(
        e,
        Event::ChildDown {
            inbound_spi: R_SPI,
            by_peer: true,
            ..
        }
    )));
    assert!(p
        .r_events
        .iter()
        .any(|e| matches!(e, Event::Closed { by_peer: true })));
    assert!(p
        .i_events
        .iter()
        .any(|e| matches!(e, Event::Closed { by_peer: false })));
    assert_eq!(p.i.phase(), Phase::Closed);
    assert_eq!(p.r().phase(), Phase::Closed);
}

#[test]
fn an_unanswered_delete_still_closes() {
    let mut p = established();
    p.fault = Box::new(|_, _| Fault::Drop);
    let now = p.now;
    p.i.delete(now, &mut p.rng);
    p.run();
    assert_eq!(p.i.phase(), Phase::Closed);
    assert!(p
        .i_events
        .iter()
        .any(|e| matches!(e, Event::Closed { by_peer: false })));
}

// ---- errors in words ------------------------------------------------------------------

#[test]
fn errors_say_which_side_wanted_what() {
    let e = IkeError::NoIkeProposal {
        ours: "aes256-prfsha512-sha512-modp3072".into(),
        theirs: "aes128gcm16-prfsha256-x25519".into(),
    };
    assert_eq!(
        e.to_string(),
        "no IKE proposal in common: the initiator offered aes128gcm16-prfsha256-x25519; we accept aes256-prfsha512-sha512-modp3072"
    );
    let e = IkeError::Timeout {
        what: "IKE_SA_INIT",
        tries: 5,
        peer: addr(B),
    };
    assert_eq!(
        e.to_string(),
        "no answer from 192.0.2.2:500 to IKE_SA_INIT after 5 tries: is the peer up, and does it listen on UDP 500?"
    );
    let e = IkeError::PeerAuthInvalid {
        peer_id: "gw-a.example".into(),
        peer_is_initiator: true,
    };
    assert_eq!(
        e.to_string(),
        "the initiator's AUTH did not verify: the pre-shared key for gw-a.example differs from ours"
    );
    let e = IkeError::PeerNotify {
        exchange: "INFORMATIONAL",
        notify: 24,
    };
    assert_eq!(
        e.to_string(),
        "the peer sent AUTHENTICATION_FAILED in INFORMATIONAL"
    );
    let e = IkeError::PeerDead {
        probes: 4,
        waited_ms: 10_000,
        peer: addr(B),
    };
    assert_eq!(
        e.to_string(),
        "peer 192.0.2.2:500 is dead: no answer to 4 DPD probe(s) in 10000 ms"
    );
    let e = IkeError::ModeMismatch {
        peer_wants_transport: true,
        ours_transport: false,
    };
    assert_eq!(
        e.to_string(),
        "the initiator wants transport mode, this connection is tunnel mode"
    );
}

#[test]
fn delete_while_a_child_is_being_created_leaves_nothing_behind() {
    let mut p = Pair::new(two_children(true), two_children(false));
    p.run();
    p.take_events();
    let now = p.now;
    let rng = &mut p.rng;
    p.i.create_child(
        now,
        ChildRequest {
            child: 1,
            inbound_spi: 0x11,
        },
        rng,
    )
    .unwrap();
    p.i.delete(now, rng);
    p.run();
    assert_eq!(p.i.phase(), Phase::Closed);
    assert_eq!(p.r().phase(), Phase::Closed);
    assert!(
        child_up(&p.i_events, "web").is_none(),
        "not installed by the dying SA"
    );
    // Whatever the responder brought up, it took down again.
    let up = p
        .r_events
        .iter()
        .filter(|e| matches!(e, Event::ChildUp(_)))
        .count();
    let down = p
        .r_events
        .iter()
        .filter(|e| matches!(e, Event::ChildDown { .. }))
        .count();
    assert_eq!((up, down), (1, 2));
    assert!(p.r().children().is_empty());
}

#[test]
fn garbage_never_panics_never_changes_state_and_is_always_accounted_for() {
    let mut p = established();
    let wire: Vec<(bool, Datagram)> = p.wire.clone();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for n in 0..5000 {
        let (from_i, d) = &wire[n % wire.len()];
        let mut b = d.data.clone();
        for _ in 0..(n % 4) + 1 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x as usize) % b.len();
            b[at] ^= (x >> 40) as u8 | 1;
        }
        if n % 7 == 0 {
            b.truncate((x as usize) % b.len());
        }
        let now = p.now;
        let sa = if *from_i { p.r() } else { &mut p.i };
        let (l, r) = (sa.local(), sa.remote());
        let mut spis = Counter(0x7000_0000);
        sa.handle(now, l, r, &b, &mut Seeded(n as u64 + 1), &mut spis);
        let mut said = 0;
        while let Some(e) = sa.poll_event() {
            assert!(
                matches!(
                    e,
                    Event::Ignored { .. } | Event::Send { .. } | Event::Log { .. }
                ),
                "garbage #{n} did something: {e:?}"
            );
            // The "received packet" trace line does not count as saying why.
            said += usize::from(!matches!(e, Event::Log { trace: true, .. }));
        }
        assert!(said > 0, "garbage #{n} passed in silence");
        assert_eq!(sa.phase(), Phase::Established);
    }
    assert_eq!((p.i.children().len(), p.r().children().len()), (1, 1));
}
