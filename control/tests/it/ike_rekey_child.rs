//! Child SA rekeying, lifetimes, PFS and ESN, sans-IO: our IKE SA against our IKE SA
//! with a virtual clock, a seeded random source and a network whose datagrams the tests
//! deliver, hold back or drop one by one. Each side's events are applied to a model of the
//! daemon's dataplane (installed inbound SAs, the outbound SA per child), which checks
//! make-before-break at every step: whatever SA a side sends on is installed inbound at the
//! peer, and a rekeyed SA is never removed while it still carries outbound traffic.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;

use control::ike::child::{parse_ts, ChildCfg, EspProposal};
use control::ike::dh::Group;
use control::ike::lifetime::{ChildLifetime, Limits};
use control::ike::sa::{ChildRequest, ChildSa, Connection, Event, IkeError, IkeSa, Phase};
use control::ike::wire::{exchange, Header};
use zeroize::Zeroizing;

use crate::support::{Counter, Seeded};

const A: &str = "192.0.2.1:500";
const B: &str = "192.0.2.2:500";
const P: &str = "aes128gcm16-prfsha256-x25519";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// No time limits.
fn no_lifetime() -> ChildLifetime {
    ChildLifetime::from_swanctl(
        Limits {
            rekey: Some(0),
            ..Default::default()
        },
        Limits::default(),
        Limits::default(),
    )
}

fn lifetime(rekey: u64, life: u64, rand: u64) -> ChildLifetime {
    ChildLifetime::from_swanctl(
        Limits {
            rekey: Some(rekey),
            life: Some(life),
            rand: Some(rand),
        },
        Limits::default(),
        Limits::default(),
    )
}

fn conn(initiator: bool, esp: &str, life: ChildLifetime) -> Connection {
    let (a, b) = (addr(A), addr(B));
    let (local, remote, lid, rid, lts, rts) = if initiator {
        (a, b, "gw-a", "gw-b", "10.1.0.0/16", "10.2.0.0/16")
    } else {
        (b, a, "gw-b", "gw-a", "10.2.0.0/16", "10.1.0.0/16")
    };
    Connection {
        name: "test".into(),
        local,
        remote,
        local_id: lid.into(),
        remote_id: rid.into(),
        psk: Zeroizing::new(b"k".to_vec()),
        ike: vec![P.parse().unwrap()],
        children: vec![ChildCfg {
            per_resource: 0,
            name: "net".into(),
            esp: esp
                .split(',')
                .map(|s| s.parse::<EspProposal>().unwrap())
                .collect(),
            local_ts: vec![parse_ts(lts).unwrap()],
            remote_ts: vec![parse_ts(rts).unwrap()],
            transport: false,
            lifetime: life,
        }],
        force_encap: false,
        retransmit_ms: 1000,
        retransmit_tries: 5,
        auth: Default::default(),
        fragmentation: Default::default(),
        lifetime: Default::default(),
    }
}

#[derive(Debug, Clone)]
struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

impl Datagram {
    fn exchange(&self) -> u8 {
        Header::parse(&self.data).map_or(0, |h| h.exchange)
    }
    fn is_request(&self) -> bool {
        Header::parse(&self.data).is_ok_and(|h| !h.is_response())
    }
}

/// What a side's daemon would have in its dataplane after applying the events.
#[derive(Default)]
struct Model {
    /// Installed inbound SAs by SPI.
    installed: BTreeMap<u32, ChildSa>,
    /// The inbound SPI of the SA whose outbound half carries each child's traffic.
    outbound: HashMap<String, u32>,
    /// Installed by ChildUp (both directions at once, as before this issue: a fresh Child
    /// SA's first packets may race its answer; not what these tests are about).
    fresh: HashSet<u32>,
    /// Deleted outright (not by a rekey): the peer sends on it until the Delete arrives.
    deleted: HashSet<u32>,
}

impl Model {
    fn out_spi(&self, name: &str) -> Option<u32> {
        let i = self.outbound.get(name)?;
        self.installed.get(i).map(|c| c.outbound_spi)
    }
    fn apply(&mut self, e: &Event, side: &str) {
        match e {
            Event::ChildUp(c) => {
                self.fresh.insert(c.inbound_spi);
                self.outbound.insert(c.name.clone(), c.inbound_spi);
                self.installed.insert(c.inbound_spi, clone_sa(c));
            }
            Event::ChildRekeyed {
                replaces,
                new,
                outbound_now,
            } => {
                assert!(
                    self.installed.contains_key(replaces),
                    "{side}: ChildRekeyed replaces {replaces:#x}, which is not installed"
                );
                if *outbound_now {
                    self.outbound.insert(new.name.clone(), new.inbound_spi);
                }
                self.installed.insert(new.inbound_spi, clone_sa(new));
            }
            Event::ChildOutbound { name, inbound_spi } => {
                assert!(
                    self.installed.contains_key(inbound_spi),
                    "{side}: ChildOutbound to {inbound_spi:#x}, not installed"
                );
                self.outbound.insert(name.clone(), *inbound_spi);
            }
            Event::ChildDown {
                name,
                inbound_spi,
                rekeyed,
                ..
            } => {
                assert!(
                    self.installed.remove(inbound_spi).is_some(),
                    "{side}: ChildDown for {inbound_spi:#x}, not installed"
                );
                if !rekeyed {
                    self.deleted.insert(*inbound_spi);
                }
                if self.outbound.get(name) == Some(inbound_spi) {
                    assert!(
                        !rekeyed,
                        "{side}: a rekeyed SA {inbound_spi:#x} went down while it still carried outbound traffic"
                    );
                    self.outbound.remove(name);
                }
            }
            _ => {}
        }
    }
}

fn clone_sa(c: &ChildSa) -> ChildSa {
    ChildSa {
        name: c.name.clone(),
        inbound_spi: c.inbound_spi,
        outbound_spi: c.outbound_spi,
        proposal: c.proposal.clone(),
        keys_in: dataplane::crypto::SaKeys::new(&c.keys_in.encryption, &c.keys_in.integrity),
        keys_out: dataplane::crypto::SaKeys::new(&c.keys_out.encryption, &c.keys_out.integrity),
        local_ts: c.local_ts.clone(),
        remote_ts: c.remote_ts.clone(),
        transport: c.transport,
        local: c.local,
        remote: c.remote,
        udp_encap: c.udp_encap,
        resource: c.resource,
        add_resources: c.add_resources,
    }
}

struct Side {
    sa: IkeSa,
    spis: Counter,
    /// Every event but Send, in order, with the time it came.
    events: Vec<(u64, Event)>,
    /// "send" and event names in order (ordering checks).
    log: Vec<String>,
    model: Model,
}

impl Side {
    fn new(sa: IkeSa, spi: u32) -> Side {
        Side {
            sa,
            spis: Counter(spi),
            events: vec![],
            log: vec![],
            model: Model::default(),
        }
    }
}

struct Net {
    now: u64,
    rng: Seeded,
    a: Side,
    b: Side,
    to_a: VecDeque<Datagram>,
    to_b: VecDeque<Datagram>,
    /// Drop everything (a silent peer, a cut link).
    cut: bool,
    /// Drop this many datagrams in a hundred, at random (`loss_rng`).
    loss_pct: u64,
    loss_rng: u64,
    lost: usize,
}

fn kind(e: &Event) -> String {
    match e {
        Event::ChildUp(c) => format!("up {:#x}", c.inbound_spi),
        Event::ChildRekeyed {
            replaces,
            new,
            outbound_now,
        } => format!(
            "rekeyed {replaces:#x}->{:#x} now={outbound_now}",
            new.inbound_spi
        ),
        Event::ChildOutbound { inbound_spi, .. } => format!("outbound {inbound_spi:#x}"),
        Event::ChildDown {
            inbound_spi,
            by_peer,
            rekeyed,
            ..
        } => format!("down {inbound_spi:#x} by_peer={by_peer} rekeyed={rekeyed}"),
        Event::ChildFailed { .. } => "child failed".into(),
        Event::Ignored { .. } => "ignored".into(),
        Event::Failed(_) => "failed".into(),
        _ => "other".into(),
    }
}

impl Net {
    fn new(a_cfg: Connection, b_cfg: Connection, seed: u64) -> Net {
        let mut rng = Seeded(seed);
        let first = ChildRequest {
            child: 0,
            inbound_spi: 0xa000_0001,
        };
        let (l, r) = (a_cfg.local, a_cfg.remote);
        let mut a = IkeSa::initiate(a_cfg, l, r, first, true, 0, &mut rng);
        let mut init = None;
        while let Some(e) = a.poll_event() {
            if let Event::Send { from, to, data } = e {
                init = Some(Datagram { from, to, data });
            }
        }
        let d = init.expect("IKE_SA_INIT");
        let b = match IkeSa::respond(b_cfg, d.to, d.from, &d.data, 0, &mut rng) {
            Ok(b) => b,
            Err(e) => panic!("responder refused IKE_SA_INIT: {e:?}"),
        };
        let mut n = Net {
            now: 0,
            rng,
            a: Side::new(a, 0xa000_0101),
            b: Side::new(b, 0xb000_0001),
            to_a: VecDeque::new(),
            to_b: VecDeque::new(),
            cut: false,
            loss_pct: 0,
            loss_rng: seed | 1,
            lost: 0,
        };
        n.collect();
        n.pump();
        assert_eq!(n.a.sa.phase(), Phase::Established);
        assert_eq!(n.b.sa.phase(), Phase::Established);
        n.check();
        n
    }

    fn established(a_esp: &str, b_esp: &str, life: ChildLifetime, seed: u64) -> Net {
        let n = Net::new(conn(true, a_esp, life), conn(false, b_esp, life), seed);
        assert_eq!(n.a.model.installed.len(), 1, "{:?}", n.a.events);
        n
    }

    fn side(&mut self, a: bool) -> &mut Side {
        if a {
            &mut self.a
        } else {
            &mut self.b
        }
    }

    /// Events out of both SAs: datagrams into the network, the rest applied to the models.
    fn collect(&mut self) {
        for is_a in [true, false] {
            let now = self.now;
            let cut = self.cut;
            let (loss_pct, loss_rng, lost) = (self.loss_pct, &mut self.loss_rng, &mut self.lost);
            let (side, q) = if is_a {
                (&mut self.a, &mut self.to_b)
            } else {
                (&mut self.b, &mut self.to_a)
            };
            while let Some(e) = side.sa.poll_event() {
                match e {
                    Event::Send { from, to, data } => {
                        side.log.push("send".into());
                        *loss_rng ^= *loss_rng << 13;
                        *loss_rng ^= *loss_rng >> 7;
                        *loss_rng ^= *loss_rng << 17;
                        let drop = *loss_rng % 100 < loss_pct;
                        *lost += usize::from(drop);
                        if !cut && !drop {
                            q.push_back(Datagram { from, to, data });
                        }
                    }
                    // Log lines (the daemon's to log) are not the sequence checked here.
                    Event::Log { .. } => {}
                    e => {
                        side.log.push(kind(&e));
                        side.model.apply(&e, if is_a { "A" } else { "B" });
                        side.events.push((now, e));
                    }
                }
            }
        }
        self.check();
    }

    /// Make-before-break: each side's outbound SA is installed inbound at the peer.
    fn check(&self) {
        for (us, them, who) in [(&self.a, &self.b, "A"), (&self.b, &self.a, "B")] {
            if self.cut {
                continue;
            }
            for (name, inb) in &us.model.outbound {
                if us.model.fresh.contains(inb) {
                    continue;
                }
                if let Some(spi) = us.model.out_spi(name) {
                    if them.model.deleted.contains(&spi) {
                        continue;
                    }
                    assert!(
                        them.model.installed.contains_key(&spi),
                        "{who} sends on {spi:#x}, which its peer has not installed: {:?} / {:?}",
                        us.log,
                        them.log
                    );
                }
            }
        }
    }

    fn deliver(&mut self, to_a: bool, d: Datagram) {
        let now = self.now;
        let side = if to_a { &mut self.a } else { &mut self.b };
        side.sa
            .handle(now, d.to, d.from, &d.data, &mut self.rng, &mut side.spis);
        self.collect();
    }

    /// Deliver the next datagram queued for A (or B).
    fn step(&mut self, to_a: bool) -> bool {
        let d = if to_a {
            self.to_a.pop_front()
        } else {
            self.to_b.pop_front()
        };
        match d {
            Some(d) => {
                self.deliver(to_a, d);
                true
            }
            None => false,
        }
    }

    /// Deliver until nothing is in flight; the clock stands still.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            self.collect();
            if self.to_a.is_empty() && self.to_b.is_empty() {
                return;
            }
            while self.step(false) {}
            while self.step(true) {}
        }
        panic!("the exchange does not settle");
    }

    fn next_timer(&self) -> Option<u64> {
        [self.a.sa.poll_timeout(), self.b.sa.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Move the clock to `t`, firing the timers due on the way.
    fn advance_to(&mut self, t: u64) {
        let mut n = 0;
        while let Some(next) = self.next_timer().filter(|&x| x <= t) {
            n += 1;
            assert!(n < 1_000_000, "timers keep firing at {next}");
            self.now = self.now.max(next);
            let now = self.now;
            self.a
                .sa
                .handle_timeout(now, &mut self.rng, &mut self.a.spis);
            self.b
                .sa
                .handle_timeout(now, &mut self.rng, &mut self.b.spis);
            self.pump();
        }
        self.now = self.now.max(t);
    }

    fn rekey(&mut self, a: bool) {
        let now = self.now;
        let spi = self.side(a).sa.children()[0].inbound_spi;
        let side = if a { &mut self.a } else { &mut self.b };
        side.sa
            .rekey_child(now, spi, &mut self.rng, &mut side.spis)
            .unwrap();
        self.collect();
    }

    fn take(&mut self) -> (Vec<Event>, Vec<Event>) {
        self.a.log.clear();
        self.b.log.clear();
        (
            self.a.events.drain(..).map(|x| x.1).collect(),
            self.b.events.drain(..).map(|x| x.1).collect(),
        )
    }

    /// Exactly one Child SA pair, installed on both sides, carrying both directions, with
    /// matching keys. Returns it as seen from A.
    fn one_pair(&self) -> (u32, u32) {
        let (a, b) = (&self.a.model, &self.b.model);
        assert_eq!(a.installed.len(), 1, "A: {:?}", self.a.log);
        assert_eq!(b.installed.len(), 1, "B: {:?}", self.b.log);
        let ca = a.installed.values().next().unwrap();
        let cb = b.installed.values().next().unwrap();
        assert_eq!(a.outbound.get("net"), Some(&ca.inbound_spi));
        assert_eq!(b.outbound.get("net"), Some(&cb.inbound_spi));
        assert_keys_match(ca, cb);
        assert_eq!(self.a.sa.children().len(), 1);
        assert_eq!(self.b.sa.children().len(), 1);
        assert_eq!(self.a.sa.children()[0].inbound_spi, ca.inbound_spi);
        assert_eq!(self.b.sa.children()[0].inbound_spi, cb.inbound_spi);
        assert_eq!(self.a.sa.child_book_len(), 0, "A's book is empty");
        assert_eq!(self.b.sa.child_book_len(), 0, "B's book is empty");
        (ca.inbound_spi, ca.outbound_spi)
    }
}

/// The keys of the two halves match crosswise.
fn assert_keys_match(ours: &ChildSa, theirs: &ChildSa) {
    assert_eq!(
        (ours.inbound_spi, ours.outbound_spi),
        (theirs.outbound_spi, theirs.inbound_spi)
    );
    assert_eq!(ours.proposal, theirs.proposal);
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

fn rekeyed(events: &[Event]) -> Vec<(&ChildSa, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildRekeyed {
                new, outbound_now, ..
            } => Some((new, *outbound_now)),
            _ => None,
        })
        .collect()
}

fn child_failure(events: &[Event]) -> Option<&IkeError> {
    events.iter().find_map(|e| match e {
        Event::ChildFailed { error, .. } => Some(error),
        _ => None,
    })
}

/// One rekey started by A (or B), checked end to end; returns the new SA's keys' pair.
fn rekey_once(n: &mut Net, by_a: bool) -> (ChildSa, ChildSa) {
    let old_a = n.a.sa.children()[0].clone();
    let old_b = n.b.sa.children()[0].clone();
    n.take();
    n.rekey(by_a);
    n.pump();
    let (ea, eb) = n.take_with_logs();
    let (init, resp) = if by_a { (&ea, &eb) } else { (&eb, &ea) };
    let (old_i, old_r) = if by_a {
        (&old_a, &old_b)
    } else {
        (&old_b, &old_a)
    };
    // Initiator: ChildRekeyed (outbound now), then the old one down once its Delete is
    // answered.
    let ki: Vec<String> = init.0.iter().map(kind).collect();
    let new_i = rekeyed(&init.0);
    assert_eq!(new_i.len(), 1, "{ki:?}");
    assert!(new_i[0].1);
    assert_eq!(
        ki,
        vec![
            format!(
                "rekeyed {:#x}->{:#x} now=true",
                old_i.inbound_spi, new_i[0].0.inbound_spi
            ),
            format!("down {:#x} by_peer=false rekeyed=true", old_i.inbound_spi),
        ]
    );
    // Responder: ChildRekeyed before its answer leaves; on the Delete: outbound, down.
    let new_r = rekeyed(&resp.0);
    assert_eq!(new_r.len(), 1);
    assert!(!new_r[0].1);
    let r_new = new_r[0].0.inbound_spi;
    assert_eq!(
        resp.1,
        vec![
            format!("rekeyed {:#x}->{r_new:#x} now=false", old_r.inbound_spi),
            "send".into(),
            format!("outbound {r_new:#x}"),
            format!("down {:#x} by_peer=true rekeyed=true", old_r.inbound_spi),
            "send".into(),
        ]
    );
    assert_keys_match(new_i[0].0, new_r[0].0);
    let (ia, _) = n.one_pair();
    let new_a = if by_a { new_i[0].0 } else { new_r[0].0 };
    assert_eq!(ia, new_a.inbound_spi);
    assert_eq!(n.a.sa.children()[0].rekeys, old_a.rekeys + 1);
    assert_eq!(n.b.sa.children()[0].rekeys, old_b.rekeys + 1);
    // The selectors carry over.
    assert_eq!(n.a.sa.children()[0].local_ts, old_a.local_ts);
    assert_eq!(n.b.sa.children()[0].remote_ts, old_b.remote_ts);
    (clone_sa(new_i[0].0), clone_sa(new_r[0].0))
}

impl Net {
    /// Events and logs of both sides since the last take.
    #[allow(clippy::type_complexity)]
    fn take_with_logs(&mut self) -> ((Vec<Event>, Vec<String>), (Vec<Event>, Vec<String>)) {
        let la = std::mem::take(&mut self.a.log);
        let lb = std::mem::take(&mut self.b.log);
        let (ea, eb) = self.take();
        ((ea, la), (eb, lb))
    }
}

// ---- rekeys, both roles, with and without PFS ----------------------------------------

#[test]
fn a_child_sa_rekey_started_by_either_side_replaces_it_make_before_break() {
    for by_a in [true, false] {
        let mut n = Net::established("aes128gcm16", "aes128gcm16", no_lifetime(), 11);
        let (i, _) = rekey_once(&mut n, by_a);
        assert_eq!(i.proposal.group(), None, "no PFS configured");
        assert!(i.proposal.esn, "ESN by default");
        // And again, the other way round, on the new SA.
        rekey_once(&mut n, !by_a);
        assert_eq!(n.a.sa.children()[0].rekeys, 2);
    }
}

#[test]
fn pfs_with_every_group_in_both_roles() {
    for g in ["x25519", "ecp256", "ecp384", "modp2048", "modp3072"] {
        let esp = format!("aes128gcm16-{g}");
        for by_a in [true, false] {
            let mut n = Net::established(&esp, &esp, no_lifetime(), 21);
            // IKE_AUTH's Child SA has no key exchange of its own (§1.2).
            assert_eq!(n.a.sa.children()[0].proposal.group(), None);
            let (i, r) = rekey_once(&mut n, by_a);
            let want = esp.parse::<EspProposal>().unwrap().groups[0];
            assert_eq!(i.proposal.group(), Some(want), "{g}");
            assert_eq!(r.proposal.group(), Some(want), "{g}");
        }
    }
}

#[test]
fn pfs_keys_differ_from_the_keys_without_a_key_exchange() {
    // Same seeds, same nonces: only g^ir differs, so the keys must too (§2.17).
    let mut plain = Net::established("aes128gcm16", "aes128gcm16", no_lifetime(), 5);
    let mut pfs = Net::established(
        "aes128gcm16-x25519-none",
        "aes128gcm16-none-x25519",
        no_lifetime(),
        5,
    );
    let (a, _) = rekey_once(&mut plain, true);
    let (b, _) = rekey_once(&mut pfs, true);
    assert_eq!(b.proposal.group(), Some(Group::Curve25519));
    assert_ne!(&a.keys_out.encryption[..], &b.keys_out.encryption[..]);
}

#[test]
fn a_new_child_sa_on_create_child_sa_uses_pfs_too() {
    let esp = "aes256gcm16-ecp384";
    let mut n = Net::established(esp, esp, no_lifetime(), 3);
    n.take();
    let now = n.now;
    n.a.sa
        .create_child(
            now,
            ChildRequest {
                child: 0,
                inbound_spi: 0xa0ff_0000,
            },
            &mut n.rng,
        )
        .unwrap();
    n.collect();
    n.pump();
    let (ea, eb) = n.take();
    let up = |e: &[Event]| {
        e.iter()
            .find_map(|x| match x {
                Event::ChildUp(c) => Some(clone_sa(c)),
                _ => None,
            })
            .unwrap()
    };
    let (ca, cb) = (up(&ea), up(&eb));
    assert_eq!(ca.proposal.group(), Some(Group::Ecp384));
    assert_keys_match(&ca, &cb);
}

#[test]
fn invalid_ke_payload_makes_the_initiator_retry_with_the_group_asked_for() {
    for by_a in [true, false] {
        // The initiator's KE is for x25519 (its first group); the responder only takes
        // ecp384 and says so (INVALID_KE_PAYLOAD, §1.3); the retry succeeds.
        let (mine, theirs) = ("aes128gcm16-x25519-ecp384", "aes128gcm16-ecp384");
        let (ae, be) = if by_a { (mine, theirs) } else { (theirs, mine) };
        let mut n = Net::established(ae, be, no_lifetime(), 31);
        n.take();
        n.rekey(by_a);
        n.pump();
        let (ea, eb) = n.take();
        let (ei, er) = if by_a { (&ea, &eb) } else { (&eb, &ea) };
        assert!(child_failure(ei).is_none(), "{ei:?}");
        assert!(child_failure(er).is_none(), "{er:?}");
        let new = rekeyed(ei);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].0.proposal.group(), Some(Group::Ecp384));
        n.one_pair();
    }
}

#[test]
fn a_pfs_mismatch_is_refused_in_plain_words_both_ways() {
    // The initiator wants PFS with ecp384, the responder has none configured.
    let mut n = Net::established("aes128gcm16-ecp384", "aes128gcm16", no_lifetime(), 41);
    let old = n.one_pair();
    n.take();
    n.rekey(true);
    n.pump();
    let (ea, eb) = n.take();
    assert_eq!(
        child_failure(&eb).unwrap().to_string(),
        "the peer wants a key exchange (PFS) with ecp384 on CREATE_CHILD_SA; our esp_proposals for child net offer no key exchange group: add -ecp384 to esp_proposals"
    );
    let e = child_failure(&ea).unwrap();
    assert!(matches!(e, IkeError::PeerRefusedPfs { .. }), "{e}");
    assert!(
        e.to_string().contains("add -none to our esp_proposals"),
        "{e}"
    );
    assert_eq!(n.one_pair(), old, "the old SA stays until it expires");
    // The responder requires x25519; the initiator offers no key exchange.
    let mut n = Net::established("aes128gcm16", "aes128gcm16-x25519", no_lifetime(), 42);
    n.take();
    n.rekey(true);
    n.pump();
    let (ea, eb) = n.take();
    assert_eq!(
        child_failure(&eb).unwrap().to_string(),
        "the peer offered no key exchange (PFS) on CREATE_CHILD_SA, but our esp_proposals for child net require one (x25519): add -x25519 to the peer's esp_proposals, or -none to ours to make PFS optional"
    );
    assert!(matches!(
        child_failure(&ea),
        Some(IkeError::PeerRefusedEsp { .. })
    ));
    n.one_pair();
    // PFS optional on one side: agreed without a key exchange, or with one.
    let mut n = Net::established("aes128gcm16", "aes128gcm16-x25519-none", no_lifetime(), 43);
    let (i, _) = rekey_once(&mut n, true);
    assert_eq!(i.proposal.group(), None);
    let (i, _) = rekey_once(&mut n, false);
    assert_eq!(
        i.proposal.group(),
        None,
        "B's KE is ignored by A, which has no group"
    );
}

// ---- collisions ---------------------------------------------------------------------

/// The SAs a side has installed and announced as "installed" after all its events.
fn down_count(events: &[(u64, Event)], spi: u32) -> usize {
    events
        .iter()
        .filter(|(_, e)| matches!(e, Event::ChildDown { inbound_spi, .. } if *inbound_spi == spi))
        .count()
}

#[test]
fn simultaneous_rekeys_leave_exactly_one_pair_on_both_sides() {
    let mut winners = [0usize; 2];
    for seed in 1..=24u64 {
        let esp = if seed % 2 == 0 {
            "aes128gcm16"
        } else {
            "aes128gcm16-x25519"
        };
        let mut n = Net::established(esp, esp, no_lifetime(), seed * 7919);
        let old_a = n.a.sa.children()[0].inbound_spi;
        let old_b = n.b.sa.children()[0].inbound_spi;
        n.a.events.clear();
        n.b.events.clear();
        // A's own rekey gets the next SPI of A's counter; the one A answers B with, the one
        // after.
        let a_own = n.a.spis.0;
        // Both start within one round trip: both requests arrive before either answer.
        n.rekey(true);
        n.rekey(false);
        assert_eq!((n.to_a.len(), n.to_b.len()), (1, 1));
        assert!(n.step(false) && n.step(true));
        n.pump();
        let (a_in, _) = n.one_pair();
        // Whose exchange made the survivor.
        winners[usize::from(a_in == a_own)] += 1;
        // The old SA went once on each side, rekeyed.
        assert_eq!(down_count(&n.a.events, old_a), 1);
        assert_eq!(down_count(&n.b.events, old_b), 1);
        for (_, e) in n.a.events.iter().chain(n.b.events.iter()) {
            if let Event::ChildDown { rekeyed, .. } = e {
                assert!(rekeyed, "only rekeyed SAs go: {e:?}");
            }
            assert!(!matches!(e, Event::ChildFailed { .. }), "{e:?}");
        }
        // Nothing left over after the fallback time either.
        n.advance_to(n.now + 60_000);
        n.one_pair();
        // And the survivor rekeys normally afterwards.
        rekey_once(&mut n, seed % 3 == 0);
    }
    assert!(
        winners[0] > 0 && winners[1] > 0,
        "both outcomes of the nonce comparison occur: {winners:?}"
    );
}

#[test]
fn a_rekey_request_for_an_sa_we_already_replaced_gets_temporary_failure() {
    let mut n = Net::established("aes128gcm16", "aes128gcm16", no_lifetime(), 77);
    let old_b = n.b.sa.children()[0].inbound_spi;
    n.a.events.clear();
    n.b.events.clear();
    n.rekey(false); // B's request is held back in the network
    let held = n.to_a.pop_front().unwrap();
    n.rekey(true);
    assert!(n.step(false)); // B answers A's rekey (a collision for B)
    assert!(n.step(true)); // A has the answer: outbound switched, Delete of old sent
    let delete = n.to_b.pop_front().unwrap(); // held too
    assert_eq!(delete.exchange(), exchange::INFORMATIONAL);
    n.deliver(true, held); // A: that SA is on its way out: TEMPORARY_FAILURE (§2.25)
    assert!(n.step(false));
    // B retries after 2–5 s.
    let c = n.b.sa.children().iter().find(|c| c.inbound_spi == old_b);
    let at = c.and_then(|c| c.rekey_at).unwrap();
    assert!((n.now + 2_000..=n.now + 5_000).contains(&at), "{at}");
    // The Delete comes: B switches and the retry finds nothing to do.
    n.deliver(false, delete);
    n.pump();
    n.advance_to(n.now + 10_000);
    n.one_pair();
    assert_eq!(n.b.sa.children()[0].rekeys, 1);
    // The SPI B drew for its refused rekey is kept for its next one, not leaked.
    let spare = n.b.sa.unused_spis().to_vec();
    assert_eq!(spare.len(), 1);
    let (b_new, _) = rekey_once(&mut n, false);
    assert_eq!(b_new.inbound_spi, spare[0]);
    assert!(n.b.sa.unused_spis().is_empty());
}

#[test]
fn a_delete_crossing_our_rekey_leaves_nothing_behind() {
    for by_a in [true, false] {
        let mut n = Net::established("aes128gcm16", "aes128gcm16", no_lifetime(), 88);
        n.take();
        // The rekeyer's request and the peer's Delete of the same SA cross.
        n.rekey(by_a);
        let now = n.now;
        let peer = n.side(!by_a);
        let spi = peer.sa.children()[0].inbound_spi;
        peer.sa.delete_child(now, spi, &mut Seeded(3));
        n.collect();
        n.pump();
        n.advance_to(n.now + 60_000);
        for s in [&n.a, &n.b] {
            assert!(s.model.installed.is_empty(), "{:?}", s.log);
            assert!(s.sa.children().is_empty());
            assert_eq!(s.sa.child_book_len(), 0);
            assert_eq!(s.sa.phase(), Phase::Established);
        }
        // The rekeyer's new SPI went unused, and is listed for the daemon to release.
        assert_eq!(n.side(by_a).sa.unused_spis().len(), 1);
    }
}

#[test]
fn child_sa_not_found_makes_a_fresh_child_sa_that_replaces_the_old_one() {
    let mut n = Net::established("aes128gcm16", "aes128gcm16", no_lifetime(), 99);
    let old_a = n.a.sa.children()[0].inbound_spi;
    n.take();
    // B deletes its half; the Delete is lost (it will be retransmitted later).
    let now = n.now;
    let spi = n.b.sa.children()[0].inbound_spi;
    n.b.sa.delete_child(now, spi, &mut Seeded(3));
    n.collect();
    assert_eq!(
        n.to_a.pop_front().unwrap().exchange(),
        exchange::INFORMATIONAL
    );
    // A rekeys it: B answers CHILD_SA_NOT_FOUND (§2.25); A makes a fresh one instead.
    n.rekey(true);
    n.pump();
    let (ea, _) = n.take();
    let k: Vec<String> = ea.iter().map(kind).collect();
    assert!(
        k.iter()
            .any(|x| x.starts_with(&format!("rekeyed {old_a:#x}")) && x.ends_with("now=true")),
        "{k:?}"
    );
    assert!(
        k.contains(&format!("down {old_a:#x} by_peer=true rekeyed=true")),
        "{k:?}"
    );
    // B's Delete, retransmitted, finds the old SA gone on A.
    n.advance_to(n.now + 10_000);
    n.one_pair();
}

// ---- lifetimes ----------------------------------------------------------------------

#[test]
fn lifetimes_rekey_within_their_random_spread_and_keep_one_sa() {
    let (rekey, life, rand) = (20_000, 30_000, 5_000);
    let mut n = Net::established(
        "aes128gcm16",
        "aes128gcm16",
        lifetime(rekey, life, rand),
        123,
    );
    let mut offsets = vec![];
    let mut last = (0, 0);
    for _ in 0..40 {
        for s in [&n.a, &n.b] {
            let c = &s.sa.children()[0];
            let r = c.rekey_at.unwrap();
            assert!(
                (c.created_at + rekey - rand..=c.created_at + rekey).contains(&r),
                "rekey_at {r} for an SA created at {}",
                c.created_at
            );
            assert_eq!(c.expire_at, Some(c.created_at + life));
            offsets.push(r - c.created_at);
        }
        let next = n.a.sa.children()[0]
            .rekey_at
            .min(n.b.sa.children()[0].rekey_at)
            .unwrap();
        n.advance_to(next);
        n.pump();
        n.one_pair();
        let now = (n.a.sa.children()[0].rekeys, n.b.sa.children()[0].rekeys);
        assert!(now.0 > last.0, "a rekey happened at {next}");
        last = now;
    }
    offsets.sort_unstable();
    offsets.dedup();
    assert!(offsets.len() > 20, "the spread is random: {offsets:?}");
    // Never an expiry: rekeys came first.
    for (_, e) in n.a.events.iter().chain(n.b.events.iter()) {
        if let Event::ChildDown { rekeyed, .. } = e {
            assert!(rekeyed);
        }
    }
}

#[test]
fn a_child_sa_expires_on_time_while_the_peer_is_silent() {
    let mut n = Net::established("aes128gcm16", "aes128gcm16", lifetime(10_000, 15_000, 0), 5);
    let c = n.a.sa.children()[0].clone();
    n.take();
    n.cut = true;
    n.advance_to(c.expire_at.unwrap() - 1);
    assert!(
        !n.a.events
            .iter()
            .any(|(_, e)| matches!(e, Event::ChildDown { .. })),
        "{:?}",
        n.a.log
    );
    // The rekey started at rekey_at and goes unanswered.
    assert!(n.a.log.iter().any(|l| l == "send"));
    n.advance_to(c.expire_at.unwrap());
    let downs: Vec<_> =
        n.a.events
            .iter()
            .filter_map(|(t, e)| match e {
                Event::ChildDown {
                    inbound_spi,
                    by_peer,
                    rekeyed,
                    ..
                } => Some((*t, *inbound_spi, *by_peer, *rekeyed)),
                _ => None,
            })
            .collect();
    assert_eq!(
        downs,
        vec![(c.expire_at.unwrap(), c.inbound_spi, false, false)]
    );
    assert!(n.a.sa.children().is_empty());
    assert!(n.a.model.installed.is_empty());
}

#[test]
fn expire_child_deletes_on_demand_and_rekey_child_twice_is_one_rekey() {
    let mut n = Net::established("aes128gcm16", "aes128gcm16", no_lifetime(), 6);
    n.take();
    let spi = n.a.sa.children()[0].inbound_spi;
    let now = n.now;
    n.a.sa
        .rekey_child(now, spi, &mut n.rng, &mut n.a.spis)
        .unwrap();
    n.a.sa
        .rekey_child(now, spi, &mut n.rng, &mut n.a.spis)
        .unwrap();
    n.collect();
    assert_eq!(n.to_b.len(), 1, "one CREATE_CHILD_SA");
    n.pump();
    n.one_pair();
    assert!(matches!(
        n.a.sa.rekey_child(now, 0x1234, &mut n.rng, &mut n.a.spis),
        Err(IkeError::UnknownChildSa { .. })
    ));
    let spi = n.a.sa.children()[0].inbound_spi;
    n.take();
    n.a.sa.expire_child(now, spi, &mut Seeded(1));
    n.collect();
    n.pump();
    let (ea, eb) = n.take();
    assert!(ea.iter().any(|e| matches!(
        e,
        Event::ChildDown {
            by_peer: false,
            rekeyed: false,
            ..
        }
    )));
    assert!(eb.iter().any(|e| matches!(
        e,
        Event::ChildDown {
            by_peer: true,
            rekeyed: false,
            ..
        }
    )));
    assert!(n.a.model.installed.is_empty() && n.b.model.installed.is_empty());
}

#[test]
fn the_responder_switches_after_30_s_without_the_initiators_delete() {
    // A retransmits only after 40 s.
    let mut ac = conn(true, "aes128gcm16", no_lifetime());
    ac.retransmit_ms = 40_000;
    let mut n = Net::new(ac, conn(false, "aes128gcm16", no_lifetime()), 8);
    let old_b = n.b.sa.children()[0].inbound_spi;
    n.take();
    n.rekey(true);
    assert!(n.step(false));
    assert!(n.step(true));
    // A's Delete of the old SA is lost.
    let start = n.now;
    assert_eq!(
        n.to_b.pop_front().unwrap().exchange(),
        exchange::INFORMATIONAL
    );
    n.advance_to(start + 29_999);
    assert!(n.b.log.iter().all(|l| !l.starts_with("outbound")));
    n.advance_to(start + 30_000);
    n.pump();
    let k = &n.b.log;
    assert!(k.iter().any(|l| l.starts_with("outbound")), "{k:?}");
    assert!(
        k.iter().any(
            |l| l == &format!("down {old_b:#x} by_peer=false rekeyed=true")
                || l == &format!("down {old_b:#x} by_peer=true rekeyed=true")
        ),
        "{k:?}"
    );
    n.advance_to(n.now + 60_000);
    n.one_pair();
}

// ---- state stays bounded ------------------------------------------------------------

#[test]
fn a_thousand_consecutive_rekeys_grow_nothing() {
    let mut n = Net::established("aes128gcm16", "aes128gcm16", no_lifetime(), 1000);
    for k in 1..=1000u32 {
        n.take();
        n.a.events.clear();
        n.b.events.clear();
        n.rekey(k % 2 == 0);
        n.pump();
        n.one_pair();
        assert_eq!(n.a.sa.children()[0].rekeys, k);
        assert_eq!(n.b.sa.children()[0].rekeys, k);
    }
}

#[test]
fn a_hundred_rekeys_with_pfs_and_lifetimes_grow_nothing() {
    let mut n = Net::established(
        "aes128gcm16-x25519",
        "aes128gcm16-x25519",
        lifetime(10_000, 12_000, 2_000),
        1001,
    );
    while n.a.sa.children()[0].rekeys < 100 {
        n.a.events.clear();
        n.b.events.clear();
        let t = n.next_timer().unwrap();
        n.advance_to(t);
        n.pump();
        n.one_pair();
    }
    assert!(n.now < 100 * 10_000, "rekeyed before rekey_time each time");
}

// ---- ESN ----------------------------------------------------------------------------

#[test]
fn esn_is_negotiated_by_default_and_follows_the_tokens() {
    let cases = [
        ("aes128gcm16", "aes128gcm16", Some(true)),
        ("aes128gcm16-noesn", "aes128gcm16", Some(false)),
        ("aes128gcm16", "aes128gcm16-noesn", Some(false)),
        ("aes128gcm16-esn", "aes128gcm16", Some(true)),
        ("aes128gcm16-esn-noesn", "aes128gcm16-noesn", Some(false)),
        ("aes128gcm16-esn", "aes128gcm16-noesn", None),
    ];
    for (a, b, want) in cases {
        let n = Net::new(
            conn(true, a, no_lifetime()),
            conn(false, b, no_lifetime()),
            9,
        );
        match want {
            Some(esn) => {
                let c = n.a.model.installed.values().next().unwrap();
                assert_eq!(c.proposal.esn, esn, "{a} vs {b}");
                assert!(!c.proposal.esn_either);
            }
            None => {
                assert!(n.a.model.installed.is_empty(), "{a} vs {b}");
                let (ea, eb): (Vec<_>, Vec<_>) = (
                    n.a.events.iter().map(|x| &x.1).collect(),
                    n.b.events.iter().map(|x| &x.1).collect(),
                );
                assert!(ea.iter().any(|e| matches!(
                    e,
                    Event::ChildFailed {
                        error: IkeError::PeerRefusedEsp { .. },
                        ..
                    }
                )));
                assert!(eb.iter().any(|e| matches!(
                    e,
                    Event::ChildFailed {
                        error: IkeError::NoEspProposal { .. },
                        ..
                    }
                )));
            }
        }
    }
    // A rekey keeps ESN.
    let mut n = Net::established("aes128gcm16", "aes128gcm16", no_lifetime(), 10);
    let (i, r) = rekey_once(&mut n, false);
    assert!(i.proposal.esn && r.proposal.esn);
}

#[test]
fn requests_are_requests() {
    // The harness's own sanity: what A sends first after a rekey is a CREATE_CHILD_SA request.
    let mut n = Net::established("aes128gcm16", "aes128gcm16", no_lifetime(), 12);
    n.rekey(true);
    let d = n.to_b.front().unwrap();
    assert!(d.is_request());
    assert_eq!(d.exchange(), exchange::CREATE_CHILD_SA);
}

// ---- lifetimes that collide, a lossy network, transport mode -----------------------------

#[test]
fn lifetimes_without_spread_collide_every_time_and_still_leave_one_pair() {
    // rand_time 0 on both sides: both rekey at the same instant, every time (§2.8.1).
    let life = lifetime(10_000, 15_000, 0);
    for esp in ["aes128gcm16", "aes128gcm16-ecp256"] {
        let mut n = Net::established(esp, esp, life, 4242);
        for round in 1..=30u32 {
            n.a.events.clear();
            n.b.events.clear();
            let t = n.next_timer().unwrap();
            n.advance_to(t);
            n.pump();
            // The redundant SA waits for its initiator's Delete; all settled right away.
            n.one_pair();
            assert_eq!(n.a.sa.children()[0].rekeys, round, "{esp}");
            for (_, e) in n.a.events.iter().chain(n.b.events.iter()) {
                match e {
                    Event::ChildDown { rekeyed, .. } => assert!(rekeyed),
                    Event::ChildFailed { .. } | Event::Failed(_) => panic!("{e:?}"),
                    _ => {}
                }
            }
        }
        assert!(n.now < 31 * 10_000);
    }
}

#[test]
fn rekeys_on_a_lossy_network_keep_one_pair_and_lose_no_packet() {
    for seed in [1u64, 2, 3, 4] {
        let life = lifetime(20_000, 30_000, 4_000);
        let mut n = Net::established("aes128gcm16-x25519", "aes128gcm16-x25519", life, seed);
        n.loss_pct = 10;
        n.advance_to(20 * 60_000);
        n.loss_pct = 0;
        // Let the retransmissions and fallbacks finish, short of the next rekey.
        let quiet = n.a.sa.children()[0]
            .rekey_at
            .min(n.b.sa.children()[0].rekey_at)
            .unwrap();
        n.advance_to(quiet - 1);
        assert!(n.lost > 0);
        assert_eq!(n.a.sa.phase(), Phase::Established);
        for (_, e) in n.a.events.iter().chain(n.b.events.iter()) {
            if let Event::ChildDown { rekeyed, .. } = e {
                assert!(rekeyed, "{e:?}");
            }
        }
        n.one_pair();
        assert!(n.a.sa.children()[0].rekeys >= 40, "seed {seed}");
    }
}

#[test]
fn a_transport_mode_child_sa_rekeys_in_transport_mode() {
    let mut ac = conn(true, "aes128gcm16", no_lifetime());
    let mut bc = conn(false, "aes128gcm16", no_lifetime());
    for c in [&mut ac, &mut bc] {
        c.children[0].transport = true;
        c.children[0].local_ts = vec![parse_ts(&c.local.ip().to_string()).unwrap()];
        c.children[0].remote_ts = vec![parse_ts(&c.remote.ip().to_string()).unwrap()];
    }
    let mut n = Net::new(ac, bc, 17);
    for by_a in [true, false] {
        let (i, r) = rekey_once(&mut n, by_a);
        assert!(i.transport && r.transport);
    }
}

#[test]
fn colliding_rekeys_in_every_delivery_order_leave_one_pair() {
    let mut outcomes = HashMap::new();
    for seed in 1..=300u64 {
        let esp = if seed % 3 == 0 {
            "aes128gcm16-x25519"
        } else {
            "aes128gcm16"
        };
        let mut n = Net::established(esp, esp, no_lifetime(), seed * 104_729);
        n.a.events.clear();
        n.b.events.clear();
        // Every other run on a lossy network (retransmissions sort it out).
        n.loss_pct = if seed % 2 == 0 { 5 } else { 0 };
        n.rekey(true);
        n.rekey(false);
        // Deliver one datagram at a time, each direction in order, the two directions
        // interleaved at random; sometimes the two first of a direction swap (UDP reorders).
        let mut pick = seed;
        for _ in 0..200 {
            pick ^= pick << 13;
            pick ^= pick >> 7;
            pick ^= pick << 17;
            let to_a = pick % 2 == 0;
            let q = if to_a { &mut n.to_a } else { &mut n.to_b };
            if q.len() >= 2 && pick % 7 == 0 {
                q.swap(0, 1);
            }
            if !n.step(to_a) && !n.step(!to_a) {
                break;
            }
        }
        n.pump();
        n.advance_to(n.now + 120_000);
        n.loss_pct = 0;
        n.advance_to(n.now + 120_000);
        n.one_pair();
        for (_, e) in n.a.events.iter().chain(n.b.events.iter()) {
            match e {
                Event::ChildDown { rekeyed, .. } => assert!(rekeyed, "seed {seed}: {e:?}"),
                Event::ChildFailed { .. } | Event::Failed(_) => panic!("seed {seed}: {e:?}"),
                _ => {}
            }
        }
        let ra = rekeyed(
            &n.a.events
                .iter()
                .map(|x| clone_event(&x.1))
                .collect::<Vec<_>>(),
        )
        .len();
        *outcomes.entry(ra).or_insert(0) += 1;
    }
    // Both kinds happened: a true collision (two new SAs on A) and a refused one.
    assert!(outcomes.len() >= 2, "{outcomes:?}");
}

fn clone_event(e: &Event) -> Event {
    match e {
        Event::ChildRekeyed {
            replaces,
            new,
            outbound_now,
        } => Event::ChildRekeyed {
            replaces: *replaces,
            new: clone_sa(new),
            outbound_now: *outbound_now,
        },
        _ => Event::Ignored {
            what: String::new(),
        },
    }
}
