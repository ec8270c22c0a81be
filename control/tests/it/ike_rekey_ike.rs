//! IKE SA rekeying (RFC 7296 §1.3.2, §2.8, §2.8.1, §2.18) and the IKE SA's lifetime,
//! sans-IO: two peers, each holding any number of IKE SAs the way the daemon does (routed
//! by their SPI, new ones added on `NewIkeSa`, closed ones dropped), a virtual clock, a
//! seeded random source and a network that can drop datagrams.

use std::collections::VecDeque;
use std::net::SocketAddr;

use control::ike::child::{parse_ts, ChildCfg, EspProposal};
use control::ike::lifetime::IkeLifetime;
use control::ike::sa::{
    is_init_request, peek, ChildInfo, ChildRequest, ChildSa, Connection, Event, IkeError, IkeSa,
    Phase, Random, Role,
};
use control::ike::wire::{exchange, Header};
use zeroize::Zeroizing;

use crate::support::{Counter, Seeded};

const A: &str = "192.0.2.1:500";
const B: &str = "192.0.2.2:500";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn child(name: &str, lts: &str, rts: &str) -> ChildCfg {
    ChildCfg {
        per_resource: 0,
        name: name.into(),
        esp: vec!["aes128gcm16".parse::<EspProposal>().unwrap()],
        local_ts: vec![parse_ts(lts).unwrap()],
        remote_ts: vec![parse_ts(rts).unwrap()],
        transport: false,
        // No Child SA lifetimes: the harness settles when no timer is left.
        lifetime: control::ike::lifetime::ChildLifetime::from_swanctl(
            control::ike::lifetime::Limits {
                rekey: Some(0),
                life: Some(0),
                rand: None,
            },
            Default::default(),
            Default::default(),
        ),
    }
}

/// A connection with two children ("net" comes up in IKE_AUTH, "dmz" on demand) and the
/// IKE lifetime given.
fn conn(is_a: bool, ike: &str, lifetime: IkeLifetime) -> Connection {
    let (local, remote, lid, rid) = if is_a {
        (addr(A), addr(B), "gw-a.example", "gw-b.example")
    } else {
        (addr(B), addr(A), "gw-b.example", "gw-a.example")
    };
    let (net, dmz) = if is_a {
        (
            child("net", "10.1.0.0/16", "10.2.0.0/16"),
            child("dmz", "10.11.0.0/16", "10.12.0.0/16"),
        )
    } else {
        (
            child("net", "10.2.0.0/16", "10.1.0.0/16"),
            child("dmz", "10.12.0.0/16", "10.11.0.0/16"),
        )
    };
    Connection {
        name: "test".into(),
        local,
        remote,
        local_id: lid.into(),
        remote_id: rid.into(),
        psk: Zeroizing::new(b"k".to_vec()),
        ike: ike.split(',').map(|s| s.parse().unwrap()).collect(),
        children: vec![net, dmz],
        force_encap: false,
        retransmit_ms: 1000,
        retransmit_tries: 5,
        auth: Default::default(),
        fragmentation: Default::default(),
        lifetime,
    }
}

/// No rekey on time: the tests start them.
fn never() -> IkeLifetime {
    IkeLifetime::from_swanctl(Some(0), Some(0), None, None)
}

const P: &str = "aes128gcm16-prfsha256-x25519";

#[derive(Debug, Clone)]
struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// One peer: its IKE SAs, as the daemon holds them.
struct Side {
    cfg: Connection,
    sas: Vec<IkeSa>,
    spis: Counter,
    /// Every event but Send and NewIkeSa: (time, our SPI of the SA, event).
    events: Vec<(u64, u64, Event)>,
    /// How many NewIkeSa events, and how many SAs were dropped once Closed.
    new_sas: usize,
    closed: Vec<(u64, u64)>,
    /// How many of those said they were superseded (their Closed ends no connection).
    superseded: usize,
    /// Datagrams that found no IKE SA here.
    unroutable: Vec<Header>,
    /// Stateless answers, sent with the next drain.
    outbox: Vec<Datagram>,
}

impl Side {
    fn new(cfg: Connection, spi_base: u32) -> Side {
        Side {
            cfg,
            sas: vec![],
            spis: Counter(spi_base),
            events: vec![],
            new_sas: 0,
            closed: vec![],
            superseded: 0,
            unroutable: vec![],
            outbox: vec![],
        }
    }

    /// The only IKE SA of this side (the tests settle before asking).
    fn live(&self) -> &IkeSa {
        assert_eq!(self.sas.len(), 1, "one IKE SA: {:?}", self.sas);
        &self.sas[0]
    }

    fn live_mut(&mut self) -> &mut IkeSa {
        assert_eq!(self.sas.len(), 1, "one IKE SA: {:?}", self.sas);
        &mut self.sas[0]
    }

    /// Move every event out of every SA: datagrams into `out`, new SAs into the table, the
    /// rest aside; drop the SAs that closed.
    fn drain(&mut self, now: u64, out: &mut Vec<Datagram>) {
        out.append(&mut self.outbox);
        let mut i = 0;
        while i < self.sas.len() {
            while let Some(e) = self.sas[i].poll_event() {
                let spi = self.sas[i].our_spi();
                match e {
                    Event::Send { from, to, data } => out.push(Datagram { from, to, data }),
                    Event::NewIkeSa(sa) => {
                        self.new_sas += 1;
                        self.sas.push(*sa);
                    }
                    // Log lines (the daemon's to log) are not what these tests look at.
                    Event::Log { .. } => {}
                    e => self.events.push((now, spi, e)),
                }
            }
            i += 1;
        }
        let closed: Vec<(u64, u64)> = self
            .sas
            .iter()
            .filter(|s| s.phase() == Phase::Closed)
            .map(|s| s.spis())
            .collect();
        self.closed.extend(closed);
        self.superseded += self
            .sas
            .iter()
            .filter(|s| s.phase() == Phase::Closed && s.superseded())
            .count();
        self.sas.retain(|s| s.phase() != Phase::Closed);
    }

    /// Route by SPI as the daemon does: our SPI is SPIr when the sender is the original
    /// initiator, else SPIi.
    fn deliver(&mut self, now: u64, d: Datagram, rng: &mut Seeded) {
        let h = peek(&d.data).unwrap();
        if is_init_request(&h) && !self.sas.iter().any(|s| s.spis().0 == h.spi_i) {
            match IkeSa::respond(self.cfg.clone(), d.to, d.from, &d.data, now, rng) {
                Ok(sa) => self.sas.push(sa),
                // A stateless answer (INVALID_KE_PAYLOAD, say): no SA is kept.
                Err(events) => {
                    for e in events {
                        if let Event::Send { from, to, data } = e {
                            self.outbox.push(Datagram { from, to, data });
                        }
                    }
                }
            }
            return;
        }
        let ours = if h.from_initiator() { h.spi_r } else { h.spi_i };
        match self.sas.iter_mut().find(|s| s.our_spi() == ours) {
            Some(sa) => sa.handle(now, d.to, d.from, &d.data, rng, &mut self.spis),
            None => self.unroutable.push(h),
        }
    }

    fn take_events(&mut self) -> Vec<(u64, u64, Event)> {
        std::mem::take(&mut self.events)
    }
}

/// What the network does with a datagram (true: from A).
type Network = Box<dyn FnMut(bool, &Datagram) -> bool>;

struct Net {
    now: u64,
    rng: Seeded,
    a: Side,
    b: Side,
    to_a: VecDeque<Datagram>,
    to_b: VecDeque<Datagram>,
    /// Every datagram sent, as it left (true: by A), with the time.
    wire: Vec<(u64, bool, Datagram)>,
    deliver: Network,
}

impl Net {
    /// A initiates to B; both established with the "net" child, events cleared.
    fn establish(a: Connection, b: Connection, seed: u64) -> Net {
        let mut rng = Seeded(seed);
        let first = ChildRequest {
            child: 0,
            inbound_spi: 0x8000_0001,
        };
        let sa = IkeSa::initiate(a.clone(), a.local, a.remote, first, true, 0, &mut rng);
        let mut n = Net {
            now: 0,
            rng,
            a: Side::new(a, 0x8000_0101),
            b: Side::new(b, 0x9000_0001),
            to_a: VecDeque::new(),
            to_b: VecDeque::new(),
            wire: vec![],
            deliver: Box::new(|_, _| true),
        };
        n.a.sas.push(sa);
        n.pump();
        assert_eq!(n.a.live().phase(), Phase::Established);
        assert_eq!(n.b.live().phase(), Phase::Established);
        assert_eq!(n.a.live().children().len(), 1);
        n.a.take_events();
        n.b.take_events();
        n
    }

    fn collect(&mut self) {
        let (mut from_a, mut from_b) = (vec![], vec![]);
        self.a.drain(self.now, &mut from_a);
        self.b.drain(self.now, &mut from_b);
        for (is_a, d) in from_a
            .into_iter()
            .map(|d| (true, d))
            .chain(from_b.into_iter().map(|d| (false, d)))
        {
            self.wire.push((self.now, is_a, d.clone()));
            if (self.deliver)(is_a, &d) {
                if is_a {
                    self.to_b.push_back(d);
                } else {
                    self.to_a.push_back(d);
                }
            }
        }
    }

    /// Deliver until nothing is in flight; the clock stands still.
    fn pump(&mut self) {
        for _ in 0..1000 {
            self.collect();
            if self.to_a.is_empty() && self.to_b.is_empty() {
                return;
            }
            let now = self.now;
            while let Some(d) = self.to_b.pop_front() {
                self.b.deliver(now, d, &mut self.rng);
            }
            while let Some(d) = self.to_a.pop_front() {
                self.a.deliver(now, d, &mut self.rng);
            }
        }
        panic!("the exchanges do not settle");
    }

    fn next_timer(&self) -> Option<u64> {
        self.a
            .sas
            .iter()
            .chain(self.b.sas.iter())
            .filter_map(|s| s.poll_timeout())
            .min()
    }

    /// Let time pass until `t`, firing the timers due on the way.
    fn run_until(&mut self, t: u64) {
        self.pump();
        for _ in 0..100_000 {
            let Some(next) = self.next_timer().filter(|&n| n <= t) else {
                self.now = self.now.max(t);
                return;
            };
            self.now = self.now.max(next);
            let now = self.now;
            for side in [&mut self.a, &mut self.b] {
                for sa in side.sas.iter_mut() {
                    sa.handle_timeout(now, &mut self.rng, &mut side.spis);
                }
            }
            self.pump();
        }
        panic!("timers keep firing");
    }

    fn rekey(&mut self, by_a: bool) {
        let now = self.now;
        let side = if by_a { &mut self.a } else { &mut self.b };
        side.live_mut().rekey_ike(now, &mut self.rng).unwrap();
    }

    /// Datagrams on the wire since `from` (an index into `wire`) with their headers.
    fn headers_since(&self, from: usize) -> Vec<(bool, Header)> {
        self.wire[from..]
            .iter()
            .map(|(_, a, d)| (*a, peek(&d.data).unwrap()))
            .collect()
    }
}

fn failures(events: &[(u64, u64, Event)]) -> Vec<&IkeError> {
    events
        .iter()
        .filter_map(|(_, _, e)| match e {
            Event::Failed(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn child_downs(events: &[(u64, u64, Event)]) -> usize {
    events
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::ChildDown { .. }))
        .count()
}

fn child_ups(events: &[(u64, u64, Event)]) -> Vec<(u64, &ChildSa)> {
    events
        .iter()
        .filter_map(|(_, spi, e)| match e {
            Event::ChildUp(c) => Some((*spi, c)),
            _ => None,
        })
        .collect()
}

fn ignored(events: &[(u64, u64, Event)]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|(_, _, e)| match e {
            Event::Ignored { what } => Some(what.as_str()),
            _ => None,
        })
        .collect()
}

/// The two halves of each Child SA pair up: A's inbound is B's outbound and back.
fn assert_children_pair(a: &[ChildInfo], b: &[ChildInfo]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for c in a {
        assert!(
            b.iter()
                .any(|d| d.inbound_spi == c.outbound_spi && d.outbound_spi == c.inbound_spi),
            "{c:?} has no other half in {b:?}"
        );
    }
}

/// After a rekey started by `by_a`: one IKE SA each side, new SPIs both sides agree on,
/// the role of the rekey initiator, the children moved, the old SAs closed without
/// ChildDown, and the new SA works (DPD probe and CREATE_CHILD_SA with message IDs from
/// 0), while the old SA's SPIs see nothing more.
fn check_rekeyed(
    n: &mut Net,
    by_a: bool,
    old: (u64, u64),
    children: (Vec<ChildInfo>, Vec<ChildInfo>),
) {
    let (a, b) = (n.a.live(), n.b.live());
    assert_eq!(a.phase(), Phase::Established);
    assert_eq!(b.phase(), Phase::Established);
    assert_eq!(a.spis(), b.spis(), "both sides agree on the new SA");
    let new = a.spis();
    assert!(new.0 != old.0 && new.1 != old.1 && new.1 != 0, "fresh SPIs");
    let (ra, rb) = if by_a {
        (Role::Initiator, Role::Responder)
    } else {
        (Role::Responder, Role::Initiator)
    };
    assert_eq!(
        (a.role(), b.role()),
        (ra, rb),
        "§2.18: the rekey initiator's role"
    );
    assert_eq!(
        a.children(),
        &children.0[..],
        "A's children moved as they were"
    );
    assert_eq!(
        b.children(),
        &children.1[..],
        "B's children moved as they were"
    );
    assert_eq!((a.rekeys(), b.rekeys()), (1, 1));
    assert_eq!(a.suite(), b.suite());
    assert!(
        n.a.closed.contains(&old) && n.b.closed.contains(&old),
        "old SA closed"
    );
    let (ea, eb) = (n.a.take_events(), n.b.take_events());
    assert_eq!(child_downs(&ea) + child_downs(&eb), 0, "{ea:?} {eb:?}");
    assert!(failures(&ea).is_empty() && failures(&eb).is_empty());
    let closed = |ev: &[(u64, u64, Event)], spi: u64| {
        ev.iter()
            .any(|(_, s, e)| *s == spi && matches!(e, Event::Closed { .. }))
    };
    assert!(closed(&ea, old.0), "A's old SA (its SPIi) reports Closed");
    assert!(closed(&eb, old.1), "B's old SA (its SPIr) reports Closed");
    assert_eq!((n.a.new_sas, n.b.new_sas), (1, 1));
    assert_eq!(
        (n.a.superseded, n.b.superseded),
        (1, 1),
        "the old SAs say so"
    );
    assert!(!n.a.live().superseded() && !n.b.live().superseded());

    // The new SA carries on: a DPD probe from A, a new Child SA from B.
    let mark = n.wire.len();
    let now = n.now;
    assert!(n.a.live_mut().dpd_probe(now, 10_000, &mut n.rng));
    n.pump();
    let req = ChildRequest {
        child: 1,
        inbound_spi: 0x9000_1000,
    };
    n.b.live_mut().create_child(now, req, &mut n.rng).unwrap();
    n.pump();
    let hs = n.headers_since(mark);
    assert_eq!(hs.len(), 4, "two exchanges: {hs:?}");
    for (i, (from_a, h)) in hs.iter().enumerate() {
        assert_eq!((h.spi_i, h.spi_r), new, "on the new SA only");
        assert_eq!(h.message_id, 0, "message IDs restart in both directions");
        assert_eq!(*from_a, i < 1 || i == 3, "{i}");
    }
    assert_eq!(hs[0].1.exchange, exchange::INFORMATIONAL);
    assert_eq!(hs[2].1.exchange, exchange::CREATE_CHILD_SA);
    let (ea, eb) = (n.a.take_events(), n.b.take_events());
    assert!(failures(&ea).is_empty() && failures(&eb).is_empty());
    let (ua, ub) = (child_ups(&ea), child_ups(&eb));
    assert_eq!((ua.len(), ub.len()), (1, 1), "{ea:?} {eb:?}");
    assert_eq!(ua[0].0, n.a.live().our_spi());
    assert_eq!(ub[0].0, n.b.live().our_spi());
    // Both derived the Child SA keys from the new SK_d alike.
    assert_eq!(
        ua[0].1.keys_in.encryption[..],
        ub[0].1.keys_out.encryption[..]
    );
    assert_eq!(
        ua[0].1.keys_out.encryption[..],
        ub[0].1.keys_in.encryption[..]
    );
    assert_children_pair(n.a.live().children(), n.b.live().children());
    assert_eq!(n.a.live().children().len(), 2);
    assert!(n.a.unroutable.is_empty() && n.b.unroutable.is_empty());
}

fn rekey_once(ike_a: &str, ike_b: &str, by_a: bool, seed: u64) -> Net {
    let mut n = Net::establish(
        conn(true, ike_a, never()),
        conn(false, ike_b, never()),
        seed,
    );
    let old = n.a.live().spis();
    let children = (
        n.a.live().children().to_vec(),
        n.b.live().children().to_vec(),
    );
    n.now = 5_000;
    n.rekey(by_a);
    n.pump();
    check_rekeyed(&mut n, by_a, old, children);
    n
}

#[test]
fn the_ike_sa_rekeys_with_every_group_started_by_either_side() {
    for g in ["x25519", "ecp256", "ecp384", "modp2048", "modp3072"] {
        let p = format!("aes128gcm16-prfsha256-{g}");
        for by_a in [true, false] {
            let n = rekey_once(&p, &p, by_a, 0x1234_5678 + by_a as u64);
            assert_eq!(
                n.a.live().suite().unwrap().group.name(),
                g,
                "rekeyed with {g}, by A: {by_a}"
            );
        }
    }
    // Another cipher and PRF, too: SKEYSEED uses the old PRF, the keys the new one.
    for by_a in [true, false] {
        rekey_once(
            "aes256-sha384-ecp384",
            "aes256-sha384-ecp384",
            by_a,
            0x77 + by_a as u64,
        );
    }
}

#[test]
fn invalid_ke_makes_the_rekey_retry_with_the_responders_group() {
    let ike_a = "aes128gcm16-prfsha256-x25519-ecp256";
    let ike_b = "aes128gcm16-prfsha256-ecp256";
    let mut n = Net::establish(conn(true, ike_a, never()), conn(false, ike_b, never()), 9);
    let old = n.a.live().spis();
    let children = (
        n.a.live().children().to_vec(),
        n.b.live().children().to_vec(),
    );
    let mark = n.wire.len();
    n.rekey(true);
    n.pump();
    let reqs: Vec<_> = n
        .headers_since(mark)
        .into_iter()
        .filter(|(a, h)| *a && h.exchange == exchange::CREATE_CHILD_SA)
        .collect();
    assert_eq!(reqs.len(), 2, "x25519 refused, then ecp256");
    assert_eq!((reqs[0].1.message_id, reqs[1].1.message_id), (2, 3));
    assert!(ignored(&n.b.events)
        .iter()
        .any(|w| w.contains("answered INVALID_KE_PAYLOAD")));
    assert_eq!(n.a.live().suite().unwrap().group.name(), "ecp256");
    check_rekeyed(&mut n, true, old, children);
}

#[test]
fn a_queued_child_request_moves_to_the_new_sa() {
    let mut n = Net::establish(conn(true, P, never()), conn(false, P, never()), 21);
    n.rekey(true);
    // The window is busy with the rekey: this waits, and goes out on the new SA.
    let now = n.now;
    let req = ChildRequest {
        child: 1,
        inbound_spi: 0x8000_2000,
    };
    n.a.live_mut().create_child(now, req, &mut n.rng).unwrap();
    n.pump();
    let (ea, eb) = (n.a.take_events(), n.b.take_events());
    let (ua, ub) = (child_ups(&ea), child_ups(&eb));
    assert_eq!((ua.len(), ub.len()), (1, 1), "{ea:?}");
    assert_eq!(ua[0].0, n.a.live().our_spi(), "made on the new SA");
    assert_eq!(ub[0].0, n.b.live().our_spi());
    assert_eq!(n.a.live().children().len(), 2);
    assert_children_pair(n.a.live().children(), n.b.live().children());
}

#[test]
fn a_rekey_request_is_answered_while_our_child_request_is_in_flight() {
    let mut n = Net::establish(conn(true, P, never()), conn(false, P, never()), 22);
    let now = n.now;
    let req = ChildRequest {
        child: 1,
        inbound_spi: 0x8000_2000,
    };
    // A's CREATE_CHILD_SA and B's IKE SA rekey cross on the wire.
    n.a.live_mut().create_child(now, req, &mut n.rng).unwrap();
    n.rekey(false);
    n.pump();
    assert_eq!(n.a.live().spis(), n.b.live().spis());
    assert_eq!(n.a.live().rekeys(), 1);
    assert_eq!(n.b.live().role(), Role::Initiator);
    // Whatever came of the Child SA request, both sides hold the same pairs, once.
    assert_children_pair(n.a.live().children(), n.b.live().children());
    let (ea, eb) = (n.a.take_events(), n.b.take_events());
    assert_eq!(child_downs(&ea) + child_downs(&eb), 0);
    assert!(failures(&ea).is_empty() && failures(&eb).is_empty());
    assert_eq!(n.a.closed.len(), 1);
    assert!(n.a.unroutable.is_empty() && n.b.unroutable.is_empty());
}

#[test]
fn colliding_rekeys_leave_exactly_one_ike_sa_on_each_side() {
    let mut winners = std::collections::HashSet::new();
    for seed in 1..=16u64 {
        let mut n = Net::establish(conn(true, P, never()), conn(false, P, never()), seed * 7919);
        let old = n.a.live().spis();
        let children = (
            n.a.live().children().to_vec(),
            n.b.live().children().to_vec(),
        );
        n.now = 1_000;
        // Both start within one round trip: both requests are delivered before either
        // answer.
        n.rekey(true);
        n.rekey(false);
        n.pump();
        n.run_until(n.now + 120_000);
        let (a, b) = (n.a.live(), n.b.live());
        assert_eq!(a.spis(), b.spis(), "seed {seed}: both sides agree");
        assert_eq!(a.phase(), Phase::Established);
        assert_eq!(a.children(), &children.0[..], "the children, exactly once");
        assert_eq!(b.children(), &children.1[..]);
        winners.insert(a.role() == Role::Initiator);
        // The old SA and the redundant one are closed on both sides.
        assert_eq!(n.a.new_sas, 2, "seed {seed}");
        assert_eq!(n.b.new_sas, 2);
        assert_eq!(n.a.closed.len(), 2, "seed {seed}: {:?}", n.a.closed);
        assert_eq!((n.a.superseded, n.b.superseded), (2, 2));
        assert!(!n.a.live().superseded() && !n.b.live().superseded());
        assert_eq!(n.b.closed.len(), 2);
        assert!(n.a.closed.contains(&old) && n.b.closed.contains(&old));
        let redundant = n.a.closed.iter().find(|s| **s != old).unwrap();
        assert!(
            n.b.closed.contains(redundant),
            "the same SA is redundant on both sides"
        );
        let (ea, eb) = (n.a.take_events(), n.b.take_events());
        assert_eq!(child_downs(&ea) + child_downs(&eb), 0, "{ea:?}");
        assert!(failures(&ea).is_empty() && failures(&eb).is_empty());
        // Nothing waits any more: no leftover deadline but the new SA's lifetime (none).
        assert_eq!(n.next_timer(), None, "seed {seed}");
        // And it works.
        let now = n.now;
        assert!(n.a.live_mut().dpd_probe(now, 5_000, &mut n.rng));
        n.run_until(now + 10_000);
        assert!(failures(&n.a.take_events()).is_empty());
        assert!(n.a.unroutable.is_empty() && n.b.unroutable.is_empty());
    }
    assert_eq!(winners.len(), 2, "either side's SA can win: {winners:?}");
}

#[test]
fn the_rekey_happens_within_the_random_spread_of_rekey_time() {
    // rekey_time 10 s, rand_time 2 s, over_time 3 s.
    let l = IkeLifetime::from_swanctl(Some(10_000), Some(0), Some(3_000), Some(2_000));
    let mut times = vec![];
    for seed in 1..=20u64 {
        let mut n = Net::establish(conn(true, P, l), conn(false, P, l), seed * 104_729);
        let est = n.a.live().established_at().unwrap();
        for s in [&n.a, &n.b] {
            let sa = s.live();
            let at = sa.rekey_at().unwrap();
            assert!((est + 8_000..=est + 10_000).contains(&at), "{at}");
            assert_eq!(sa.expire_at(), Some(est + 13_000));
        }
        let first =
            n.a.live()
                .rekey_at()
                .unwrap()
                .min(n.b.live().rekey_at().unwrap());
        n.run_until(est + 10_000);
        let (a, b) = (n.a.live(), n.b.live());
        assert_eq!(a.spis(), b.spis());
        assert_eq!((a.rekeys(), b.rekeys()), (1, 1), "seed {seed}");
        let at = a.established_at().unwrap();
        assert_eq!(at, first, "the earlier side rekeys at its rekey_at");
        assert!((est + 8_000..=est + 10_000).contains(&at));
        times.push(at - est);
        // The new SA's lifetime starts afresh.
        assert!((at + 8_000..=at + 10_000).contains(&a.rekey_at().unwrap()));
        assert_eq!(a.expire_at(), Some(at + 13_000));
        assert_eq!(child_downs(&n.a.take_events()), 0);
        // And it goes on: the next rekey within the spread of the new SA's time.
        n.run_until(at + 10_000);
        assert_eq!(n.a.live().rekeys(), 2);
        assert!(failures(&n.a.events).is_empty() && failures(&n.b.events).is_empty());
    }
    times.sort();
    times.dedup();
    assert!(times.len() > 10, "the spread is used: {times:?}");
}

#[test]
fn the_ike_sa_expires_when_the_peer_stays_silent() {
    let l = IkeLifetime::from_swanctl(Some(10_000), Some(0), Some(3_000), Some(2_000));
    let mut n = Net::establish(conn(true, P, l), conn(false, P, l), 5);
    let est = n.a.live().established_at().unwrap();
    n.deliver = Box::new(|_, _| false);
    n.run_until(est + 20_000);
    for side in [&n.a, &n.b] {
        assert!(side.sas.is_empty(), "closed");
        let f: Vec<_> = side
            .events
            .iter()
            .filter_map(|(t, _, e)| match e {
                Event::Failed(f) => Some((*t, f)),
                _ => None,
            })
            .collect();
        assert_eq!(f.len(), 1, "{:?}", side.events);
        assert_eq!(f[0].0, est + 13_000, "at rekey_time + over_time");
        assert!(matches!(
            f[0].1,
            IkeError::Expired {
                rekey_tried: true,
                ..
            }
        ));
        let why = f[0].1.to_string();
        assert!(
            why.contains("hard lifetime (rekey_time 10s + over_time 3s) without a completed rekey"),
            "{why}"
        );
        // Its children go with it (the daemon tears their ESP SAs down).
        assert_eq!(child_downs(&side.events), 1);
    }
    // The rekey was tried (and retransmitted) before that.
    let tries = n
        .wire
        .iter()
        .filter(|(_, _, d)| peek(&d.data).unwrap().exchange == exchange::CREATE_CHILD_SA)
        .count();
    assert!(tries >= 2, "{tries}");
}

#[test]
fn a_hundred_consecutive_rekeys_keep_the_state_flat() {
    let mut n = Net::establish(conn(true, P, never()), conn(false, P, never()), 77);
    let children = (
        n.a.live().children().to_vec(),
        n.b.live().children().to_vec(),
    );
    let mut wire_per_rekey = None;
    for k in 1..=100u32 {
        let mark = n.wire.len();
        n.now += 1_000;
        n.rekey(k % 3 != 0);
        n.pump();
        let (a, b) = (n.a.live(), n.b.live());
        assert_eq!(a.spis(), b.spis());
        assert_eq!((a.rekeys(), b.rekeys()), (k, k));
        assert_eq!(a.children(), &children.0[..]);
        assert_eq!(b.children(), &children.1[..]);
        // Nothing left over: no request in flight, no timer, no event but the old SA's
        // Closed, and the same four datagrams each time.
        assert_eq!(n.next_timer(), None, "rekey {k}");
        let (ea, eb) = (n.a.take_events(), n.b.take_events());
        assert_eq!((ea.len(), eb.len()), (1, 1), "rekey {k}: {ea:?} {eb:?}");
        let sent = n.wire.len() - mark;
        assert_eq!(*wire_per_rekey.get_or_insert(sent), sent);
        assert_eq!(n.a.sas.len() + n.b.sas.len(), 2);
    }
    assert_eq!(
        wire_per_rekey,
        Some(4),
        "rekey and delete, request and answer each"
    );
    assert_eq!((n.a.closed.len(), n.b.closed.len()), (100, 100));
    // The line's Debug shows no growth either.
    assert!(format!("{:?}", n.a.live()).len() < 200);
}

/// Drop the datagrams whose (from A?, exchange, response?) match, `times` times each.
fn drop_first(rules: Vec<(bool, u8, bool, usize)>) -> Network {
    let mut rules = rules;
    Box::new(move |from_a, d| {
        let h = peek(&d.data).unwrap();
        for r in rules.iter_mut() {
            if r.3 > 0 && r.0 == from_a && r.1 == h.exchange && r.2 == h.is_response() {
                r.3 -= 1;
                return false;
            }
        }
        true
    })
}

#[test]
fn lost_rekey_and_delete_messages_are_retransmitted() {
    for by_a in [true, false] {
        let mut n = Net::establish(conn(true, P, never()), conn(false, P, never()), 31);
        let old = n.a.live().spis();
        let children = (
            n.a.live().children().to_vec(),
            n.b.live().children().to_vec(),
        );
        let init = by_a;
        // The rekey request, its answer, the Delete and its answer: each lost once.
        n.deliver = drop_first(vec![
            (init, exchange::CREATE_CHILD_SA, false, 1),
            (!init, exchange::CREATE_CHILD_SA, true, 1),
            (init, exchange::INFORMATIONAL, false, 1),
        ]);
        n.rekey(by_a);
        n.run_until(n.now + 120_000);
        let (a, b) = (n.a.live(), n.b.live());
        assert_eq!(a.spis(), b.spis());
        assert_eq!(a.children(), &children.0[..]);
        assert_eq!(b.children(), &children.1[..]);
        assert_eq!((n.a.new_sas, n.b.new_sas), (1, 1), "one new SA, made once");
        assert!(n.a.closed.contains(&old) && n.b.closed.contains(&old));
        let (ea, eb) = (n.a.take_events(), n.b.take_events());
        assert_eq!(child_downs(&ea) + child_downs(&eb), 0);
        assert!(failures(&ea).is_empty() && failures(&eb).is_empty());
        assert_eq!(n.next_timer(), None);
    }
}

#[test]
fn the_old_sa_goes_even_if_its_delete_never_arrives() {
    let mut n = Net::establish(conn(true, P, never()), conn(false, P, never()), 32);
    let old = n.a.live().spis();
    // Every Delete A sends on the old SA is lost.
    n.deliver = Box::new(move |from_a, d| {
        let h = peek(&d.data).unwrap();
        !(from_a && h.exchange == exchange::INFORMATIONAL && (h.spi_i, h.spi_r) == old)
    });
    let start = n.now;
    n.rekey(true);
    n.run_until(start + 120_000);
    assert_eq!(n.a.live().spis(), n.b.live().spis());
    assert!(n.a.closed.contains(&old) && n.b.closed.contains(&old));
    let (ea, eb) = (n.a.take_events(), n.b.take_events());
    assert_eq!(child_downs(&ea) + child_downs(&eb), 0);
    assert!(failures(&ea).is_empty() && failures(&eb).is_empty());
    // B waited for A's Delete as long as A retransmits (31 s), then deleted it itself.
    let b_delete = n
        .wire
        .iter()
        .find(|(_, from_a, d)| {
            let h = peek(&d.data).unwrap();
            !from_a
                && h.exchange == exchange::INFORMATIONAL
                && !h.is_response()
                && (h.spi_i, h.spi_r) == old
        })
        .map(|(t, _, _)| *t);
    assert_eq!(b_delete, Some(start + 31_000));
    assert_eq!(n.next_timer(), None);
}

#[test]
fn colliding_rekeys_under_loss_still_converge_to_one_sa() {
    let (mut failed, mut collided) = (0, 0);
    for seed in 1..=40u64 {
        let mut n = Net::establish(conn(true, P, never()), conn(false, P, never()), seed * 31);
        let children = (
            n.a.live().children().to_vec(),
            n.b.live().children().to_vec(),
        );
        // Lose a quarter of the datagrams for the first 20 s.
        let mut r = Seeded(seed * 0x9e37_79b9 + 1);
        let mut count = 0u32;
        n.deliver = Box::new(move |_, _| {
            count += 1;
            let mut b = [0u8; 1];
            r.fill(&mut b);
            count > 40 || b[0] >= 64
        });
        n.now = 1_000;
        n.rekey(true);
        if seed % 4 != 0 {
            n.rekey(false);
        }
        n.run_until(n.now + 300_000);
        let ctx = format!("seed {seed}: A {:?} B {:?}", n.a.sas, n.b.sas);
        let (ea, eb) = (n.a.take_events(), n.b.take_events());
        if !failures(&ea).is_empty() || !failures(&eb).is_empty() {
            failed += 1;
            // Every retransmission of one exchange lost: a peer declared dead is fine, as
            // long as both agree nothing survives.
            continue;
        }
        collided += usize::from(n.a.new_sas == 2);
        assert_eq!((n.a.sas.len(), n.b.sas.len()), (1, 1), "{ctx}");
        let (a, b) = (n.a.live(), n.b.live());
        assert_eq!(a.spis(), b.spis(), "{ctx}");
        assert_eq!(a.children(), &children.0[..], "{ctx}");
        assert_eq!(b.children(), &children.1[..], "{ctx}");
        assert_eq!(child_downs(&ea) + child_downs(&eb), 0, "{ctx}");
        assert_eq!(n.next_timer(), None, "{ctx}");
    }
    assert!(
        failed < 5 && collided >= 5,
        "{failed} failed, {collided} collided"
    );
}

#[test]
fn a_rekeyed_sa_keeps_nat_t_and_its_ports() {
    let (mut a, mut b) = (conn(true, P, never()), conn(false, P, never()));
    a.force_encap = true;
    b.force_encap = true;
    let mut n = Net::establish(a, b, 41);
    assert!(n.a.live().nat() && n.a.live().local().port() == 4500);
    let mark = n.wire.len();
    n.rekey(false);
    n.pump();
    for side in [&n.a, &n.b] {
        let sa = side.live();
        assert_eq!(sa.rekeys(), 1);
        assert!(sa.nat(), "ESP stays in UDP");
        assert_eq!((sa.local().port(), sa.remote().port()), (4500, 4500));
    }
    assert!(n.wire[mark..]
        .iter()
        .all(|(_, _, d)| d.from.port() == 4500 && d.to.port() == 4500));
    assert_eq!(n.a.live().peer_id(), Some("gw-b.example".into()));
}

/// Inbound SAs a side's dataplane would hold after these events, from `held`: ChildUp and
/// ChildRekeyed add one, ChildDown takes one away.
fn installed(held: &[u32], events: &[(u64, u64, Event)]) -> std::collections::BTreeSet<u32> {
    let mut held: std::collections::BTreeSet<u32> = held.iter().copied().collect();
    for (_, _, e) in events {
        match e {
            Event::ChildUp(c) => {
                held.insert(c.inbound_spi);
            }
            Event::ChildRekeyed { new, .. } => {
                held.insert(new.inbound_spi);
            }
            Event::ChildDown { inbound_spi, .. } => {
                held.remove(inbound_spi);
            }
            _ => {}
        }
    }
    held
}

/// B rekeys its Child SA and A's answer is lost; before B retransmits, A rekeys the IKE SA
/// and deletes the old one, so B's Child SA rekey ends unanswered there: the new SA exists
/// only at A. B rekeys the Child SA again on the new IKE SA. Both sides end with one Child
/// SA pair, the same one (the lossy collision world test once left two, each rekeyed on its
/// own from then on).
#[test]
fn a_child_rekey_whose_answer_was_lost_before_an_ike_rekey_leaves_one_child_sa() {
    for seed in [41u64, 42, 43, 44] {
        let mut n = Net::establish(conn(true, P, never()), conn(false, P, never()), seed);
        n.deliver = drop_first(vec![(true, exchange::CREATE_CHILD_SA, true, 1)]);
        let now = n.now;
        let x = n.b.live().children()[0].inbound_spi;
        let x_at_a = n.a.live().children()[0].inbound_spi;
        let b = &mut n.b;
        b.sas[0]
            .rekey_child(now, x, &mut n.rng, &mut b.spis)
            .unwrap();
        n.pump();
        n.rekey(true);
        n.pump();
        n.run_until(n.now + 120_000);
        let (a, b) = (n.a.live(), n.b.live());
        assert_eq!(a.spis(), b.spis());
        assert_eq!(a.children().len(), 1, "seed {seed}: A {:?}", a.children());
        assert_eq!(b.children().len(), 1, "seed {seed}: B {:?}", b.children());
        assert_children_pair(a.children(), b.children());
        let (ca, cb) = (a.children()[0].clone(), b.children()[0].clone());
        let (ea, eb) = (n.a.take_events(), n.b.take_events());
        let (ha, hb) = (installed(&[x_at_a], &ea), installed(&[x], &eb));
        assert_eq!(ha, [ca.inbound_spi].into(), "seed {seed}: A's dataplane");
        assert_eq!(hb, [cb.inbound_spi].into(), "seed {seed}: B's dataplane");
        assert_ne!(ca.inbound_spi, x_at_a, "seed {seed}: rekeyed");
        assert!(failures(&ea).is_empty() && failures(&eb).is_empty());
        assert_eq!(n.next_timer(), None);
    }
}
