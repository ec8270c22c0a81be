//! Our IKEv2 initiator against our responder, sans-IO, with a virtual clock and a seeded
//! random source: every algorithm combination, lost datagrams, INVALID_KE retry, cookies,
//! PSK and proposal mismatches (with the right notifies and reasons), TS narrowing, Delete.

use std::net::SocketAddr;

use control::ike::child::{parse_ts, EspProposal};
use control::ike::sa::invalid_major_version;
use control::ike::sa::{
    is_init_request, peek, ChildSa, Connection, CookieJar, Event, IkeSa, Random, State,
};
use zeroize::Zeroizing;

struct Seeded(u64);
impl Random for Seeded {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn conn(initiator: bool, ike: &str, esp: &str, psk: &[u8]) -> Connection {
    let (a, b) = (addr("192.0.2.1:500"), addr("192.0.2.2:500"));
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
        esp: esp
            .split(',')
            .map(|s| s.parse::<EspProposal>().unwrap())
            .collect(),
        local_ts: vec![parse_ts(lts).unwrap()],
        remote_ts: vec![parse_ts(rts).unwrap()],
        transport: false,
        force_encap: false,
        retransmit_ms: 1000,
        retransmit_tries: 5,
    }
}

#[derive(Default)]
struct Outcome {
    i_events: Vec<Event>,
    r_events: Vec<Event>,
    sent: usize,
}

impl Outcome {
    fn child(events: &[Event]) -> Option<&ChildSa> {
        events.iter().find_map(|e| match e {
            Event::ChildUp(c) => Some(c),
            _ => None,
        })
    }
    fn failure(events: &[Event]) -> Option<&str> {
        events.iter().find_map(|e| match e {
            Event::Failed { reason } => Some(reason.as_str()),
            _ => None,
        })
    }
}

/// Run an exchange to quiescence. `lose(n)` drops the n-th datagram (0-based).
fn run(
    i_cfg: Connection,
    r_cfg: Connection,
    jar: Option<&CookieJar>,
    lose: impl Fn(usize) -> bool,
) -> (Outcome, IkeSa, Option<IkeSa>) {
    let mut rng = Seeded(0x1234_5678_9abc_def1);
    let mut now = 0u64;
    let mut init = IkeSa::initiate(i_cfg, now, &mut rng, 0x8000_0001);
    let mut resp: Option<IkeSa> = None;
    let mut out = Outcome::default();
    let mut to_r: Vec<Vec<u8>> = vec![];
    let mut to_i: Vec<Vec<u8>> = vec![];
    for _round in 0..200 {
        for e in init.take_events() {
            match e {
                Event::Send { data, .. } => {
                    if !lose(out.sent) {
                        to_r.push(data);
                    }
                    out.sent += 1;
                }
                e => out.i_events.push(e),
            }
        }
        if let Some(r) = resp.as_mut() {
            for e in r.take_events() {
                match e {
                    Event::Send { data, .. } => {
                        if !lose(out.sent) {
                            to_i.push(data);
                        }
                        out.sent += 1;
                    }
                    e => out.r_events.push(e),
                }
            }
        }
        if to_r.is_empty() && to_i.is_empty() {
            // Nothing in flight: let time pass to the next timer, if any.
            match init.next_timeout() {
                Some(t) if init.state() != State::Dead => {
                    now = now.max(t);
                    init.on_timeout(now);
                    continue;
                }
                _ => break,
            }
        }
        for m in std::mem::take(&mut to_r) {
            let h = peek(&m).unwrap();
            if is_init_request(&h) {
                if let Some(j) = jar {
                    if let Some(reply) = j.check(&m, "192.0.2.1".parse().unwrap()) {
                        to_i.push(reply);
                        out.sent += 1;
                        continue;
                    }
                }
                if resp
                    .as_ref()
                    .is_some_and(|r| r.spis().0 == h.spi_i && r.state() != State::Dead)
                {
                    resp.as_mut().unwrap().handle(now, &m, &mut rng);
                    continue;
                }
                match IkeSa::respond(r_cfg.clone(), now, &m, &mut rng, 0x8000_0002) {
                    Ok(r) => resp = Some(r),
                    Err(evs) => {
                        for e in evs {
                            match e {
                                Event::Send { data, .. } => {
                                    to_i.push(data);
                                    out.sent += 1;
                                }
                                e => out.r_events.push(e),
                            }
                        }
                    }
                }
            } else if let Some(r) = resp.as_mut() {
                r.handle(now, &m, &mut rng);
            }
        }
        for m in std::mem::take(&mut to_i) {
            init.handle(now, &m, &mut rng);
        }
    }
    (out, init, resp)
}

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
            let (o, init, resp) = run(
                conn(true, &p, esp, b"s3cret"),
                conn(false, &p, esp, b"s3cret"),
                None,
                |_| false,
            );
            assert_eq!(
                init.state(),
                State::Established,
                "{p} {esp}: {:?}",
                Outcome::failure(&o.i_events)
            );
            assert_eq!(resp.unwrap().state(), State::Established, "{p}");
            let ci = Outcome::child(&o.i_events).expect("initiator child");
            let cr = Outcome::child(&o.r_events).expect("responder child");
            assert_eq!(
                (ci.inbound_spi, ci.outbound_spi),
                (0x8000_0001, 0x8000_0002)
            );
            assert_eq!(
                (cr.inbound_spi, cr.outbound_spi),
                (0x8000_0002, 0x8000_0001)
            );
            assert_eq!(
                &ci.keys_out.encryption[..],
                &cr.keys_in.encryption[..],
                "{p} {esp}"
            );
            assert_eq!(&ci.keys_in.encryption[..], &cr.keys_out.encryption[..]);
            assert_eq!(&ci.keys_out.integrity[..], &cr.keys_in.integrity[..]);
            assert_ne!(&ci.keys_out.encryption[..], &ci.keys_in.encryption[..]);
            assert_eq!(
                ci.proposal.transform.to_string(),
                cr.proposal.transform.to_string()
            );
            assert_eq!(o.sent, 4, "{p}: two exchanges, no retransmission");
            assert_eq!(
                (ci.udp_encap, cr.udp_encap),
                (None, None),
                "no NAT, no UDP encapsulation"
            );
        }
    }
}

#[test]
fn lost_datagrams_are_retransmitted_and_the_exchange_completes() {
    let p = "aes128gcm16-prfsha256-x25519";
    // Lose the first IKE_SA_INIT request and the first IKE_AUTH response.
    let (o, init, _) = run(
        conn(true, p, "aes128gcm16", b"k"),
        conn(false, p, "aes128gcm16", b"k"),
        None,
        |n| n == 0 || n == 3,
    );
    assert_eq!(
        init.state(),
        State::Established,
        "{:?}",
        Outcome::failure(&o.i_events)
    );
    assert!(Outcome::child(&o.i_events).is_some() && Outcome::child(&o.r_events).is_some());
    assert_eq!(o.sent, 6);
}

#[test]
fn a_silent_peer_fails_after_the_retries_with_a_reason() {
    let p = "aes128gcm16-prfsha256-x25519";
    let (o, init, _) = run(
        conn(true, p, "aes128gcm16", b"k"),
        conn(false, p, "aes128gcm16", b"k"),
        None,
        |_| true,
    );
    assert_eq!(init.state(), State::Dead);
    let why = Outcome::failure(&o.i_events).unwrap();
    assert!(
        why.contains("no answer") && why.contains("5 tries"),
        "{why}"
    );
    assert_eq!(o.sent, 5);
}

#[test]
fn invalid_ke_makes_the_initiator_retry_with_the_responders_group() {
    let (o, init, _) = run(
        conn(
            true,
            "aes128gcm16-prfsha256-x25519-ecp256",
            "aes128gcm16",
            b"k",
        ),
        conn(false, "aes128gcm16-prfsha256-ecp256", "aes128gcm16", b"k"),
        None,
        |_| false,
    );
    assert_eq!(
        init.state(),
        State::Established,
        "{:?}",
        Outcome::failure(&o.i_events)
    );
    assert!(Outcome::failure(&o.r_events)
        .unwrap()
        .contains("INVALID_KE_PAYLOAD"));
    assert_eq!(o.sent, 6);
}

#[test]
fn forced_nat_t_moves_both_sides_to_udp_encapsulation() {
    let p = "aes128gcm16-prfsha256-x25519";
    let mut i = conn(true, p, "aes128gcm16", b"k");
    i.force_encap = true;
    let (o, init, _) = run(i, conn(false, p, "aes128gcm16", b"k"), None, |_| false);
    assert_eq!(init.state(), State::Established);
    let (ci, cr) = (
        Outcome::child(&o.i_events).unwrap(),
        Outcome::child(&o.r_events).unwrap(),
    );
    assert_eq!(ci.udp_encap, Some((4500, 4500)));
    assert_eq!(
        cr.udp_encap,
        Some((4500, 4500)),
        "the responder sees the NAT too"
    );
}

#[test]
fn cookie_round_trip() {
    let jar = CookieJar::new([9; 32]);
    let p = "aes256gcm16-prfsha256-ecp384";
    let (o, init, _) = run(
        conn(true, p, "aes256gcm16", b"k"),
        conn(false, p, "aes256gcm16", b"k"),
        Some(&jar),
        |_| false,
    );
    assert_eq!(
        init.state(),
        State::Established,
        "{:?}",
        Outcome::failure(&o.i_events)
    );
    assert_eq!(o.sent, 6, "cookie request, then the two exchanges");
}

#[test]
fn psk_mismatch_fails_on_both_sides_with_authentication_failed() {
    let p = "aes128gcm16-prfsha256-x25519";
    let (o, init, resp) = run(
        conn(true, p, "aes128gcm16", b"one"),
        conn(false, p, "aes128gcm16", b"two"),
        None,
        |_| false,
    );
    assert_eq!(init.state(), State::Dead);
    assert_eq!(resp.unwrap().state(), State::Dead);
    let i = Outcome::failure(&o.i_events).unwrap();
    let r = Outcome::failure(&o.r_events).unwrap();
    assert!(
        i.contains("AUTHENTICATION_FAILED") && i.contains("pre-shared key"),
        "{i}"
    );
    assert!(
        r.contains("gw-a.example") && r.contains("pre-shared key differs"),
        "{r}"
    );
    assert!(Outcome::child(&o.i_events).is_none() && Outcome::child(&o.r_events).is_none());
}

#[test]
fn disjoint_proposals_give_no_proposal_chosen_naming_both_sides() {
    let (o, init, resp) = run(
        conn(true, "aes128gcm16-prfsha256-x25519", "aes128gcm16", b"k"),
        conn(false, "aes256-sha512-modp3072", "aes128gcm16", b"k"),
        None,
        |_| false,
    );
    assert_eq!(init.state(), State::Dead);
    assert!(resp.is_none(), "the responder keeps no state");
    let i = Outcome::failure(&o.i_events).unwrap();
    let r = Outcome::failure(&o.r_events).unwrap();
    assert!(
        i.contains("accepted none of our IKE proposals") && i.contains("aes128gcm16"),
        "{i}"
    );
    assert!(
        r.contains("initiator offered aes128gcm16-prfsha256-x25519")
            && r.contains("we accept aes256-prfsha512-sha512-modp3072"),
        "{r}"
    );

    // ESP only: the IKE SA comes up, the child does not, and both sides say why.
    let p = "aes128gcm16-prfsha256-x25519";
    let (o, init, _) = run(
        conn(true, p, "aes128gcm16", b"k"),
        conn(false, p, "aes256-sha256", b"k"),
        None,
        |_| false,
    );
    assert_eq!(init.state(), State::Established);
    assert!(Outcome::child(&o.i_events).is_none());
    assert!(Outcome::failure(&o.r_events)
        .unwrap()
        .contains("no ESP proposal in common"));
    assert!(
        Outcome::failure(&o.i_events)
            .unwrap()
            .contains("NO_PROPOSAL_CHOSEN")
            || Outcome::failure(&o.i_events)
                .unwrap()
                .contains("no Child SA")
    );
}

#[test]
fn traffic_selectors_are_narrowed_or_refused() {
    let p = "aes128gcm16-prfsha256-x25519";
    let mut r = conn(false, p, "aes128gcm16", b"k");
    r.local_ts = vec![parse_ts("10.2.5.0/24").unwrap()];
    let (o, _, _) = run(conn(true, p, "aes128gcm16", b"k"), r, None, |_| false);
    let ci = Outcome::child(&o.i_events).expect("narrowed child");
    assert_eq!(ci.remote_ts, vec![parse_ts("10.2.5.0/24").unwrap()]);
    assert_eq!(ci.local_ts, vec![parse_ts("10.1.0.0/16").unwrap()]);

    let mut r = conn(false, p, "aes128gcm16", b"k");
    r.local_ts = vec![parse_ts("172.16.0.0/12").unwrap()];
    let (o, init, _) = run(conn(true, p, "aes128gcm16", b"k"), r, None, |_| false);
    assert_eq!(init.state(), State::Established);
    assert!(Outcome::child(&o.i_events).is_none());
    assert!(Outcome::failure(&o.r_events)
        .unwrap()
        .contains("traffic selectors unacceptable"));
}

#[test]
fn delete_closes_both_sides_and_their_child_sas() {
    let p = "aes128gcm16-prfsha256-x25519";
    let (_, mut init, resp) = run(
        conn(true, p, "aes128gcm16", b"k"),
        conn(false, p, "aes128gcm16", b"k"),
        None,
        |_| false,
    );
    let mut resp = resp.unwrap();
    let mut rng = Seeded(42);
    init.delete(10, &mut rng);
    let ev = init.take_events();
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::ChildDown {
            inbound_spi: 0x8000_0001,
            ..
        }
    )));
    let req = ev
        .iter()
        .find_map(|e| match e {
            Event::Send { data, .. } => Some(data.clone()),
            _ => None,
        })
        .unwrap();
    resp.handle(10, &req, &mut rng);
    let rev = resp.take_events();
    assert!(rev.iter().any(|e| matches!(
        e,
        Event::ChildDown {
            inbound_spi: 0x8000_0002,
            ..
        }
    )));
    assert!(rev.iter().any(|e| matches!(e, Event::Closed)));
    let ans = rev
        .iter()
        .find_map(|e| match e {
            Event::Send { data, .. } => Some(data.clone()),
            _ => None,
        })
        .unwrap();
    // A retransmitted request gets the cached answer.
    resp.handle(11, &req, &mut rng);
    assert!(
        matches!(&resp.take_events()[..], [Event::Send { data, .. }] if *data == ans)
            || resp.state() == State::Dead
    );
    init.handle(12, &ans, &mut rng);
    assert!(init
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::Closed)));
    assert_eq!(init.state(), State::Dead);
}

#[test]
fn a_higher_major_version_gets_invalid_major_version() {
    let mut rng = Seeded(7);
    let p = "aes128gcm16-prfsha256-x25519";
    let init = IkeSa::initiate(conn(true, p, "aes128gcm16", b"k"), 0, &mut rng, 1);
    let mut req = init.first_message().to_vec();
    assert!(invalid_major_version(&req).is_none(), "version 2 is ours");
    req[17] = 0x30; // IKE version 3.0
    let resp = control::ike::wire::Message::parse(&invalid_major_version(&req).unwrap()).unwrap();
    assert_eq!((resp.header.major, resp.header.is_response()), (2, true));
    let n = resp.notify(5).expect("INVALID_MAJOR_VERSION");
    assert_eq!(n.data, vec![0x20]);
}
