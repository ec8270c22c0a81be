//! IKE fragmentation (RFC 7383), ours against ours, sans-IO: a small fragment size and an
//! IKE_AUTH made big by many traffic selectors. Every datagram fits the size; the SA comes
//! up; a lost fragment is recovered by retransmitting the whole set; a peer that did not
//! announce support gets whole messages; `fragmentation = accept` never sends fragments.

use std::collections::VecDeque;
use std::net::SocketAddr;

use control::ike::child::{parse_ts, ChildCfg, EspProposal};
use control::ike::frag::{FragConfig, FragMode};
use control::ike::lifetime::{ChildLifetime, IkeLifetime, Limits};
use control::ike::sa::{is_init_request, peek, ChildRequest, Connection, Event, IkeSa, Phase};
use control::ike::wire::{exchange, payload};
use zeroize::Zeroizing;

use crate::support::{Counter, Seeded};

const A: &str = "192.0.2.1:500";
const B: &str = "192.0.2.2:500";
const SIZE: usize = 576;
/// IPv4 header + UDP on port 500 (no non-ESP marker).
const IP_UDP: usize = 28;

/// `n` selectors 10.<side>.<k>.0/24: 16 bytes each in a TS payload.
fn selectors(side: u8, n: usize) -> Vec<control::ike::wire::Ts> {
    (0..n)
        .map(|k| parse_ts(&format!("10.{side}.{k}.0/24")).unwrap())
        .collect()
}

fn conn(initiator: bool, ike: &str, mode: FragMode, n_ts: usize) -> Connection {
    let (a, b): (SocketAddr, SocketAddr) = (A.parse().unwrap(), B.parse().unwrap());
    let (local, remote, lid, rid, l, r) = if initiator {
        (a, b, "gw-a.example", "gw-b.example", 1, 2)
    } else {
        (b, a, "gw-b.example", "gw-a.example", 2, 1)
    };
    Connection {
        name: "frag".into(),
        local,
        remote,
        local_id: lid.into(),
        remote_id: rid.into(),
        psk: Zeroizing::new(b"s3cret".to_vec()),
        ike: vec![ike.parse().unwrap()],
        children: vec![ChildCfg {
            per_resource: 0,
            name: "net".into(),
            esp: vec!["aes128gcm16".parse::<EspProposal>().unwrap()],
            local_ts: selectors(l, n_ts),
            remote_ts: selectors(r, n_ts),
            transport: false,
            lifetime: ChildLifetime::from_swanctl(
                Limits {
                    rekey: Some(0),
                    ..Default::default()
                },
                Limits::default(),
                Limits::default(),
            ),
        }],
        force_encap: false,
        retransmit_ms: 1000,
        retransmit_tries: 5,
        lifetime: IkeLifetime::from_swanctl(Some(0), Some(0), None, None),
        auth: Default::default(),
        fragmentation: FragConfig { mode, size: SIZE },
    }
}

#[derive(Debug, Clone)]
struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

impl Datagram {
    fn is_fragment(&self) -> bool {
        self.data.get(16) == Some(&payload::SKF)
    }
    fn mid(&self) -> u32 {
        peek(&self.data).unwrap().message_id
    }
}

/// Decides, by the datagram's number (0-based, both directions) and the datagram, whether
/// the network delivers it.
type Network = Box<dyn FnMut(usize, bool, &Datagram) -> bool>;

struct Pair {
    now: u64,
    rng: Seeded,
    i: IkeSa,
    r: Option<IkeSa>,
    r_cfg: Connection,
    i_spis: Counter,
    r_spis: Counter,
    to_r: VecDeque<Datagram>,
    to_i: VecDeque<Datagram>,
    i_events: Vec<Event>,
    r_events: Vec<Event>,
    /// Every datagram sent, by side (true: by the initiator).
    wire: Vec<(bool, Datagram)>,
    deliver: Network,
}

impl Pair {
    fn new(i_cfg: Connection, r_cfg: Connection, deliver: Network) -> Pair {
        let mut rng = Seeded(0x0bad_cafe_1234_5678);
        let (l, r) = (i_cfg.local, i_cfg.remote);
        let first = ChildRequest {
            child: 0,
            inbound_spi: 0x8000_0001,
        };
        let i = IkeSa::initiate(i_cfg, l, r, first, true, 0, &mut rng);
        let mut p = Pair {
            now: 0,
            rng,
            i,
            r: None,
            r_cfg,
            i_spis: Counter(0x8000_0101),
            r_spis: Counter(0x8000_0002),
            to_r: VecDeque::new(),
            to_i: VecDeque::new(),
            i_events: vec![],
            r_events: vec![],
            wire: vec![],
            deliver,
        };
        p.collect();
        p
    }

    fn r(&self) -> &IkeSa {
        self.r.as_ref().expect("the responder exists")
    }

    fn put(&mut self, from_i: bool, d: Datagram) {
        self.wire.push((from_i, d.clone()));
        let n = self.wire.len() - 1;
        if (self.deliver)(n, from_i, &d) {
            if from_i {
                self.to_r.push_back(d);
            } else {
                self.to_i.push_back(d);
            }
        }
    }

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

    fn pump(&mut self) {
        for _ in 0..1000 {
            self.collect();
            if self.to_r.is_empty() && self.to_i.is_empty() {
                return;
            }
            let now = self.now;
            while let Some(d) = self.to_r.pop_front() {
                let h = peek(&d.data).unwrap();
                if is_init_request(&h) && self.r.is_none() {
                    let r = IkeSa::respond(
                        self.r_cfg.clone(),
                        d.to,
                        d.from,
                        &d.data,
                        now,
                        &mut self.rng,
                    )
                    .unwrap_or_else(|e| panic!("responder refused: {e:?}"));
                    self.r = Some(r);
                } else if let Some(r) = self.r.as_mut() {
                    r.handle(now, d.to, d.from, &d.data, &mut self.rng, &mut self.r_spis);
                }
            }
            while let Some(d) = self.to_i.pop_front() {
                self.i
                    .handle(now, d.to, d.from, &d.data, &mut self.rng, &mut self.i_spis);
            }
        }
        panic!("the exchange does not settle");
    }

    /// Deliver and let time pass until nothing is in flight and no timer is left.
    fn run(&mut self) {
        for _ in 0..1000 {
            self.pump();
            let next = [
                self.i.poll_timeout(),
                self.r.as_ref().and_then(|r| r.poll_timeout()),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(t) = next else {
                return;
            };
            self.now = self.now.max(t);
            let now = self.now;
            self.i.handle_timeout(now, &mut self.rng, &mut self.i_spis);
            if let Some(r) = self.r.as_mut() {
                r.handle_timeout(now, &mut self.rng, &mut self.r_spis);
            }
        }
        panic!("timers keep firing");
    }

    /// The IKE_AUTH datagrams (message ID 1) one side sent, in order.
    fn auth_datagrams(&self, from_i: bool) -> Vec<&Datagram> {
        self.wire
            .iter()
            .filter(|(f, d)| *f == from_i && peek(&d.data).unwrap().exchange == exchange::IKE_AUTH)
            .map(|(_, d)| d)
            .collect()
    }

    fn assert_up(&self) {
        assert_eq!(
            self.i.phase(),
            Phase::Established,
            "initiator: {:?}",
            failure(&self.i_events)
        );
        assert_eq!(
            self.r().phase(),
            Phase::Established,
            "responder: {:?}",
            failure(&self.r_events)
        );
        for ev in [&self.i_events, &self.r_events] {
            let up = ev.iter().find_map(|e| match e {
                Event::ChildUp(c) => Some(c),
                _ => None,
            });
            let c = up.expect("the first Child SA is up");
            assert_eq!(c.local_ts.len(), 40);
        }
    }
}

fn failure(events: &[Event]) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::Failed(f) => Some(f.to_string()),
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

fn all() -> Network {
    Box::new(|_, _, _| true)
}

/// An AEAD suite and a CBC+HMAC one (other IV, ICV and block sizes).
const SUITES: [&str; 2] = ["aes256gcm16-prfsha384-ecp384", "aes256-sha256-modp2048"];

#[test]
fn a_big_ike_auth_is_fragmented_to_fit_576_and_the_sa_comes_up() {
    for ike in SUITES {
        let mut p = Pair::new(
            conn(true, ike, FragMode::Yes, 40),
            conn(false, ike, FragMode::Yes, 40),
            all(),
        );
        p.run();
        p.assert_up();
        for (from_i, d) in &p.wire {
            assert!(
                d.data.len() + IP_UDP <= SIZE,
                "{ike}: a {} byte IKE message from the {} does not fit {SIZE}",
                d.data.len(),
                if *from_i { "initiator" } else { "responder" }
            );
        }
        for from_i in [true, false] {
            let auth = p.auth_datagrams(from_i);
            assert!(auth.len() >= 3, "{ike}: {} IKE_AUTH datagrams", auth.len());
            assert!(auth.iter().all(|d| d.is_fragment() && d.mid() == 1));
        }
        // IKE_SA_INIT is never fragmented.
        assert!(p.wire.iter().take(2).all(|(_, d)| !d.is_fragment()));
        let (si, sr) = (p.i.frag_stats(), p.r().frag_stats());
        assert_eq!(si.messages_split, 1, "{ike}");
        assert_eq!(sr.messages_split, 1, "{ike}");
        assert_eq!(si.fragments_sent, p.auth_datagrams(true).len() as u64);
        assert_eq!(sr.fragments_received, si.fragments_sent);
        assert_eq!(si.fragments_received, sr.fragments_sent);
        assert_eq!((si.messages_reassembled, sr.messages_reassembled), (1, 1));
        assert_eq!((si.dropped, sr.dropped), (0, 0));
        assert!(p.i.fragments_outbound() && p.r().fragments_outbound());
        // Nothing else unused or refused.
        assert_eq!(ignored(&p.i_events), Vec::<&str>::new());
        assert_eq!(ignored(&p.r_events), Vec::<&str>::new());
    }
}

#[test]
fn a_lost_request_fragment_is_recovered_by_retransmitting_the_set() {
    // Datagrams 0 and 1 are IKE_SA_INIT; 3 is the IKE_AUTH request's second fragment.
    let mut p = Pair::new(
        conn(true, SUITES[0], FragMode::Yes, 40),
        conn(false, SUITES[0], FragMode::Yes, 40),
        Box::new(|n, _, _| n != 3),
    );
    p.run();
    p.assert_up();
    let sent = p.auth_datagrams(true);
    let total = p.i.frag_stats().fragments_sent as usize;
    assert!(total >= 3);
    assert_eq!(sent.len(), 2 * total, "every fragment went again, once");
    for k in 0..total {
        assert_eq!(sent[k].data.len(), sent[k + total].data.len());
    }
    // Of the second set: fragment 1 is a duplicate, fragment 2 completes the request, the
    // rest come after the answer (a retransmission, answered on fragment 1 only).
    let ign = ignored(&p.r_events);
    assert_eq!(
        ign.iter().filter(|w| w.contains("again")).count(),
        1,
        "{ign:?}"
    );
    assert_eq!(
        ign.iter()
            .filter(|w| w.contains("answered on its fragment 1"))
            .count(),
        total - 2,
        "{ign:?}"
    );
    assert_eq!(p.r().frag_stats().dropped, 1);
    assert_eq!(p.r().frag_stats().messages_reassembled, 1);
    // The response went once: the request was whole before it was answered.
    assert_eq!(
        p.auth_datagrams(false).len() as u64,
        p.r().frag_stats().fragments_sent
    );
}

#[test]
fn a_lost_response_fragment_is_answered_again_on_fragment_1() {
    // The IKE_AUTH response's first datagram is lost.
    let mut first_resp = None;
    let mut p = Pair::new(
        conn(true, SUITES[1], FragMode::Yes, 40),
        conn(false, SUITES[1], FragMode::Yes, 40),
        Box::new(move |n, from_i, d| {
            let auth_resp = !from_i && peek(&d.data).unwrap().exchange == exchange::IKE_AUTH;
            if auth_resp && first_resp.is_none() {
                first_resp = Some(n);
                return false;
            }
            true
        }),
    );
    p.run();
    p.assert_up();
    let req = p.auth_datagrams(true);
    let resp = p.auth_datagrams(false);
    let (nq, nr) = (
        p.i.frag_stats().fragments_sent as usize,
        p.r().frag_stats().fragments_sent as usize,
    );
    assert_eq!(req.len(), 2 * nq, "the request set went twice");
    assert_eq!(
        resp.len(),
        2 * nr,
        "the response set went twice, on fragment 1 only"
    );
    let ign = ignored(&p.r_events);
    assert_eq!(
        ign.iter()
            .filter(|w| w.contains("answered on its fragment 1"))
            .count(),
        nq - 1,
        "{ign:?}"
    );
    // The initiator had the later response fragments already: their copies were duplicates.
    assert_eq!(p.i.frag_stats().messages_reassembled, 1);
}

#[test]
fn a_peer_that_did_not_announce_support_gets_no_fragments() {
    for (i_mode, r_mode) in [(FragMode::Yes, FragMode::No), (FragMode::No, FragMode::Yes)] {
        let mut p = Pair::new(
            conn(true, SUITES[0], i_mode, 40),
            conn(false, SUITES[0], r_mode, 40),
            all(),
        );
        p.run();
        p.assert_up();
        assert!(p.wire.iter().all(|(_, d)| !d.is_fragment()));
        for from_i in [true, false] {
            let auth = p.auth_datagrams(from_i);
            assert_eq!(auth.len(), 1);
            assert!(auth[0].data.len() + IP_UDP > SIZE, "too big, but whole");
        }
        assert!(!p.i.fragments_outbound() && !p.r().fragments_outbound());
        assert_eq!(p.i.frag_stats(), Default::default());
        assert_eq!(p.r().frag_stats(), Default::default());
    }
}

#[test]
fn accept_announces_and_reassembles_but_never_sends_fragments() {
    let mut p = Pair::new(
        conn(true, SUITES[0], FragMode::Accept, 40),
        conn(false, SUITES[0], FragMode::Yes, 40),
        all(),
    );
    p.run();
    p.assert_up();
    let req = p.auth_datagrams(true);
    assert_eq!(req.len(), 1);
    assert!(!req[0].is_fragment());
    assert!(p.auth_datagrams(false).iter().all(|d| d.is_fragment()));
    assert!(p.auth_datagrams(false).len() >= 3);
    assert!(!p.i.fragments_outbound());
    assert!(p.r().fragments_outbound());
    assert_eq!(p.i.frag_stats().messages_reassembled, 1);
    assert_eq!(p.i.frag_stats().fragments_sent, 0);
}

#[test]
fn the_budget_counts_ipv6_and_the_non_esp_marker_on_port_4500() {
    // (initiator, responder, force_encap, IP header + UDP + marker)
    for (a, b, encap, over) in [
        (A, B, true, 20 + 8 + 4),
        ("[2001:db8::1]:500", "[2001:db8::2]:500", false, 40 + 8),
        ("[2001:db8::1]:500", "[2001:db8::2]:500", true, 40 + 8 + 4),
    ] {
        let (a, b): (SocketAddr, SocketAddr) = (a.parse().unwrap(), b.parse().unwrap());
        let mut ic = conn(true, SUITES[1], FragMode::Yes, 40);
        let mut rc = conn(false, SUITES[1], FragMode::Yes, 40);
        (ic.local, ic.remote, ic.force_encap) = (a, b, encap);
        (rc.local, rc.remote, rc.force_encap) = (b, a, encap);
        let mut p = Pair::new(ic, rc, all());
        p.run();
        p.assert_up();
        let mut fullest = 0;
        for from_i in [true, false] {
            let auth = p.auth_datagrams(from_i);
            assert!(auth.len() >= 3);
            for d in auth {
                assert!(d.is_fragment());
                assert_eq!(d.from.port(), if encap { 4500 } else { 500 });
                assert!(d.data.len() + over <= SIZE, "{a} {encap}: {}", d.data.len());
                fullest = fullest.max(d.data.len() + over);
            }
        }
        // Full fragments use the room, to within a cipher block (16 for AES-CBC).
        assert!(
            fullest + 16 > SIZE,
            "{a} {encap}: largest datagram {fullest}"
        );
    }
}

#[test]
fn a_message_that_fits_is_not_fragmented() {
    let mut p = Pair::new(
        conn(true, SUITES[0], FragMode::Yes, 2),
        conn(false, SUITES[0], FragMode::Yes, 2),
        all(),
    );
    p.run();
    assert_eq!(p.i.phase(), Phase::Established);
    assert!(p.wire.iter().all(|(_, d)| !d.is_fragment()));
    assert!(p.i.fragments_outbound());
}
