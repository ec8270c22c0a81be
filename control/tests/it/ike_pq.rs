//! Post-quantum hybrid IKE SAs (RFC 9370 additional key exchanges with ML-KEM, carried in
//! IKE_INTERMEDIATE, RFC 9242), sans-IO, our initiator against our responder: x25519 +
//! ML-KEM-768 and ecp384 + ML-KEM-1024 establish and the first Child SA's keys cross; a
//! changed IKE_INTERMEDIATE (sealed again with the right keys) makes AUTH fail through
//! IntAuth; `ke1_none` falls back to a classic IKE SA against a peer without ADDKE; a
//! mandatory ML-KEM against a classic peer fails in plain words. Rekeys (RFC 9370
//! §2.2.4): Child SA and IKE SA rekeys run IKE_FOLLOWUP_KE, a wrong link gets
//! STATE_NOT_FOUND.

use std::collections::VecDeque;
use std::net::SocketAddr;

use control::ike::child::{parse_ts, ChildCfg, EspProposal};
use control::ike::lifetime::{ChildLifetime, IkeLifetime, Limits};
use control::ike::sa::{ChildRequest, ChildSa, Connection, Event, IkeError, IkeSa, Phase};
use control::ike::wire::{exchange, Header, Payload};
use zeroize::Zeroizing;

use crate::support::{Counter, Seeded};

const A: &str = "192.0.2.1:500";
const B: &str = "192.0.2.2:500";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn conn(initiator: bool, ike: &str, esp: &str) -> Connection {
    let (local, remote, lid, rid, lts, rts) = if initiator {
        (
            A,
            B,
            "gw-a.example",
            "gw-b.example",
            "10.1.0.0/16",
            "10.2.0.0/16",
        )
    } else {
        (
            B,
            A,
            "gw-b.example",
            "gw-a.example",
            "10.2.0.0/16",
            "10.1.0.0/16",
        )
    };
    Connection {
        name: "pq".into(),
        local: addr(local),
        remote: addr(remote),
        local_id: lid.into(),
        remote_id: rid.into(),
        psk: Zeroizing::new(b"post-quantum".to_vec()),
        ike: ike.split(',').map(|s| s.parse().unwrap()).collect(),
        children: vec![ChildCfg {
            per_resource: 0,
            name: "net".into(),
            esp: vec![esp.parse::<EspProposal>().unwrap()],
            local_ts: vec![parse_ts(lts).unwrap()],
            remote_ts: vec![parse_ts(rts).unwrap()],
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
        auth: Default::default(),
        fragmentation: Default::default(),
        lifetime: IkeLifetime::from_swanctl(Some(0), Some(0), None, None),
    }
}

/// A datagram on the wire, and who sent it.
struct Sent {
    by_initiator: bool,
    data: Vec<u8>,
}

/// What the test may do to each datagram before delivery: `None` delivers it unchanged.
type Tamper = Box<dyn FnMut(&IkeSa, &Sent, &mut Seeded) -> Option<Vec<u8>>>;

struct Pair {
    i: IkeSa,
    r: Option<IkeSa>,
    rng: Seeded,
    spis_i: Counter,
    spis_r: Counter,
    now: u64,
    /// Every datagram delivered, in order (after tampering).
    wire: Vec<Sent>,
    ev_i: Vec<Event>,
    ev_r: Vec<Event>,
    tamper: Option<Tamper>,
}

impl Pair {
    fn new(ci: Connection, seed: u64) -> Pair {
        let mut rng = Seeded(seed);
        let i = IkeSa::initiate(
            ci,
            addr(A),
            addr(B),
            ChildRequest {
                child: 0,
                inbound_spi: 0x8000_0001,
            },
            true,
            0,
            &mut rng,
        );
        Pair {
            i,
            r: None,
            rng,
            spis_i: Counter(0x9000_0000),
            spis_r: Counter(0xa000_0000),
            now: 0,
            wire: Vec::new(),
            ev_i: Vec::new(),
            ev_r: Vec::new(),
            tamper: None,
        }
    }

    /// Deliver datagrams until nobody has anything to send.
    fn run(&mut self, cr: &Connection) {
        let mut q: VecDeque<Sent> = VecDeque::new();
        for _ in 0..200 {
            while let Some(e) = self.i.poll_event() {
                match e {
                    Event::Send { data, .. } => q.push_back(Sent {
                        by_initiator: true,
                        data,
                    }),
                    // Log lines (the daemon's to log) are not what these tests look at.
                    Event::Log { .. } => {}
                    e => self.ev_i.push(e),
                }
            }
            if let Some(r) = self.r.as_mut() {
                while let Some(e) = r.poll_event() {
                    match e {
                        Event::Send { data, .. } => q.push_back(Sent {
                            by_initiator: false,
                            data,
                        }),
                        Event::Log { .. } => {}
                        e => self.ev_r.push(e),
                    }
                }
            }
            let Some(mut d) = q.pop_front() else {
                return;
            };
            if let Some(t) = self.tamper.as_mut() {
                let sender = if d.by_initiator {
                    &self.i
                } else {
                    self.r.as_ref().unwrap()
                };
                if let Some(new) = t(sender, &d, &mut self.rng) {
                    d.data = new;
                }
            }
            self.now += 1;
            if d.by_initiator {
                match self.r.as_mut() {
                    Some(r) => r.handle(
                        self.now,
                        addr(B),
                        addr(A),
                        &d.data,
                        &mut self.rng,
                        &mut self.spis_r,
                    ),
                    None => match IkeSa::respond(
                        cr.clone(),
                        addr(B),
                        addr(A),
                        &d.data,
                        self.now,
                        &mut self.rng,
                    ) {
                        Ok(r) => self.r = Some(r),
                        Err(events) => {
                            for e in events {
                                match e {
                                    Event::Send { data, .. } => q.push_back(Sent {
                                        by_initiator: false,
                                        data,
                                    }),
                                    Event::Log { .. } => {}
                                    e => self.ev_r.push(e),
                                }
                            }
                        }
                    },
                }
            } else {
                self.i.handle(
                    self.now,
                    addr(A),
                    addr(B),
                    &d.data,
                    &mut self.rng,
                    &mut self.spis_i,
                );
            }
            self.wire.push(d);
        }
        panic!("the exchange did not settle");
    }

    fn headers(&self) -> Vec<(bool, Header)> {
        self.wire
            .iter()
            .map(|d| (d.by_initiator, Header::parse(&d.data).unwrap()))
            .collect()
    }
}

fn ups(ev: &[Event]) -> Vec<&ChildSa> {
    ev.iter()
        .filter_map(|e| match e {
            Event::ChildUp(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn failed(ev: &[Event]) -> Vec<&IkeError> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Failed(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn suite_of(ev: &[Event]) -> Option<String> {
    ev.iter().find_map(|e| match e {
        Event::Established { suite, .. } => Some(suite.to_string()),
        _ => None,
    })
}

/// Establish with `ike_i` / `ike_r`; returns the pair after it settled.
fn establish(ike_i: &str, ike_r: &str, seed: u64) -> Pair {
    let ci = conn(true, ike_i, "aes256gcm16");
    let cr = conn(false, ike_r, "aes256gcm16");
    let mut p = Pair::new(ci, seed);
    p.run(&cr);
    p
}

fn assert_up_and_keys_cross(p: &Pair) {
    assert_eq!(p.i.phase(), Phase::Established, "{:?}", failed(&p.ev_i));
    let r = p.r.as_ref().unwrap();
    assert_eq!(r.phase(), Phase::Established, "{:?}", failed(&p.ev_r));
    let (ui, ur) = (ups(&p.ev_i), ups(&p.ev_r));
    assert_eq!((ui.len(), ur.len()), (1, 1));
    assert_eq!(ui[0].keys_out.encryption[..], ur[0].keys_in.encryption[..]);
    assert_eq!(ui[0].keys_in.encryption[..], ur[0].keys_out.encryption[..]);
    assert_ne!(ui[0].keys_in.encryption[..], ui[0].keys_out.encryption[..]);
}

/// The messages on the wire, as (from initiator, exchange, message ID); the fragments of
/// one message (RFC 7383) count once.
fn exchanges(p: &Pair) -> Vec<(bool, u8, u32)> {
    let mut out: Vec<(bool, u8, u32)> = p
        .headers()
        .into_iter()
        .map(|(i, h)| (i, h.exchange, h.message_id))
        .collect();
    out.dedup();
    out
}

/// Bytes and datagrams of the message (from initiator, exchange, message ID).
fn message_size(p: &Pair, m: (bool, u8, u32)) -> (usize, usize) {
    p.wire
        .iter()
        .zip(p.headers())
        .filter(|(_, (i, h))| (*i, h.exchange, h.message_id) == m)
        .fold((0, 0), |(b, n), (d, _)| (b + d.data.len(), n + 1))
}

#[test]
fn x25519_with_mlkem768_establishes_through_one_ike_intermediate() {
    let ike = "aes256gcm16-prfsha384-x25519-ke1_mlkem768";
    let p = establish(ike, ike, 1);
    assert_up_and_keys_cross(&p);
    assert_eq!(
        suite_of(&p.ev_i).unwrap(),
        "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
    );
    assert_eq!(
        exchanges(&p),
        vec![
            (true, exchange::IKE_SA_INIT, 0),
            (false, exchange::IKE_SA_INIT, 0),
            (true, exchange::IKE_INTERMEDIATE, 1),
            (false, exchange::IKE_INTERMEDIATE, 1),
            (true, exchange::IKE_AUTH, 2),
            (false, exchange::IKE_AUTH, 2),
        ]
    );
    // The ML-KEM-768 encapsulation key (1184 B) and ciphertext (1088 B) are inside.
    assert!(message_size(&p, (true, exchange::IKE_INTERMEDIATE, 1)).0 > 1184);
    assert!(message_size(&p, (false, exchange::IKE_INTERMEDIATE, 1)).0 > 1088);
}

#[test]
fn ecp384_with_mlkem1024_and_a_second_addke_establish() {
    let ike = "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024";
    let p = establish(ike, ike, 2);
    assert_up_and_keys_cross(&p);
    // The encapsulation key and the ciphertext (1568 B each) do not fit in 1280 bytes:
    // both IKE_INTERMEDIATE messages go in fragments (RFC 7383).
    for by_i in [true, false] {
        let (bytes, datagrams) = message_size(&p, (by_i, exchange::IKE_INTERMEDIATE, 1));
        assert!(
            bytes > 1568 && datagrams >= 2,
            "{by_i}: {bytes} B in {datagrams}"
        );
    }
    // Two additional key exchanges: two IKE_INTERMEDIATE exchanges, IKE_AUTH is MID 3.
    let ike2 = "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024-ke2_mlkem768";
    let p = establish(ike2, ike2, 3);
    assert_up_and_keys_cross(&p);
    let ex = exchanges(&p);
    assert_eq!(ex[2], (true, exchange::IKE_INTERMEDIATE, 1));
    assert_eq!(ex[4], (true, exchange::IKE_INTERMEDIATE, 2));
    assert_eq!(ex[6], (true, exchange::IKE_AUTH, 3));
    assert_eq!(
        suite_of(&p.ev_r).unwrap(),
        "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024-ke2_mlkem768"
    );
}

#[test]
fn a_changed_ike_intermediate_that_still_decrypts_makes_auth_fail() {
    let ike = "aes256gcm16-prfsha384-x25519-ke1_mlkem768";
    // Unfragmented, so the hook sees the whole message (fragmented IntAuth is the same
    // octets, RFC 9242 §3.3.2).
    let mut ci = conn(true, ike, "aes256gcm16");
    ci.fragmentation.mode = control::ike::frag::FragMode::No;
    let mut cr = conn(false, ike, "aes256gcm16");
    cr.fragmentation.mode = control::ike::frag::FragMode::No;
    let mut p = Pair::new(ci, 4);
    // The initiator's IKE_INTERMEDIATE request gains a vendor ID on the way: sealed again
    // with the initiator's own keys, so the responder opens it, ignores the payload, and
    // still has a different IntAuth (RFC 9242 §3.3.2).
    p.tamper = Some(Box::new(|sender, d, rng| {
        let h = Header::parse(&d.data).ok()?;
        if !d.by_initiator || h.exchange != exchange::IKE_INTERMEDIATE {
            return None;
        }
        sender.reseal_own_for_test(
            &d.data,
            |p| p.push(Payload::VendorId(b"tampered".to_vec())),
            rng,
        )
    }));
    p.run(&cr);
    assert!(ups(&p.ev_i).is_empty() && ups(&p.ev_r).is_empty());
    let fr = failed(&p.ev_r);
    assert!(
        matches!(fr[..], [IkeError::PeerAuthInvalid { .. }]),
        "responder: {fr:?}"
    );
    let fi = failed(&p.ev_i);
    assert!(
        matches!(fi[..], [IkeError::PeerRejectedAuth { .. }]),
        "initiator: {fi:?}"
    );
    // The untouched run with the same seed establishes: the vendor ID made the difference.
    let p = establish(ike, ike, 4);
    assert_up_and_keys_cross(&p);
}

#[test]
fn ke1_none_against_a_classic_responder_gives_a_classic_ike_sa() {
    let p = establish(
        "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none",
        "aes256gcm16-prfsha384-x25519",
        5,
    );
    assert_up_and_keys_cross(&p);
    assert_eq!(suite_of(&p.ev_i).unwrap(), "aes256gcm16-prfsha384-x25519");
    let ex = exchanges(&p);
    assert!(ex.iter().all(|e| e.1 != exchange::IKE_INTERMEDIATE));
    assert_eq!(ex[2], (true, exchange::IKE_AUTH, 1));
    // The same with a responder that allows NONE: both offer ML-KEM, so it runs.
    let ike = "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none";
    let p = establish(ike, ike, 6);
    assert_up_and_keys_cross(&p);
    assert_eq!(
        suite_of(&p.ev_r).unwrap(),
        "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
    );
    // A classic initiator against a responder with `ke1_none`: classic.
    let p = establish("aes256gcm16-prfsha384-x25519", ike, 7);
    assert_up_and_keys_cross(&p);
    assert_eq!(suite_of(&p.ev_r).unwrap(), "aes256gcm16-prfsha384-x25519");
}

#[test]
fn mandatory_mlkem_against_a_classic_peer_fails_in_plain_words() {
    let p = establish(
        "aes256gcm16-prfsha384-x25519-ke1_mlkem768",
        "aes256gcm16-prfsha384-x25519",
        8,
    );
    assert!(p.r.is_none());
    let fr = failed(&p.ev_r);
    let msg = fr[0].to_string();
    assert!(
        msg.contains("ke1_mlkem768") && msg.contains("aes256gcm16-prfsha384-x25519"),
        "{msg}"
    );
    let fi = failed(&p.ev_i);
    let msg = fi[0].to_string();
    assert!(msg.contains("ke1_mlkem768"), "{msg}");
    // And the other way round: the responder insists on ML-KEM.
    let p = establish(
        "aes256gcm16-prfsha384-x25519",
        "aes256gcm16-prfsha384-x25519-ke1_mlkem768",
        9,
    );
    let msg = failed(&p.ev_r)[0].to_string();
    assert!(msg.contains("ke1_mlkem768"), "{msg}");
}

fn new_sa_suites(ev: &[Event]) -> Vec<String> {
    ev.iter()
        .filter_map(|e| match e {
            Event::NewIkeSa(sa) => sa.suite().map(|s| s.to_string()),
            _ => None,
        })
        .collect()
}

fn take_new_sa(ev: &mut Vec<Event>) -> IkeSa {
    let i = ev
        .iter()
        .position(|e| matches!(e, Event::NewIkeSa(_)))
        .expect("a new IKE SA");
    match ev.remove(i) {
        Event::NewIkeSa(sa) => *sa,
        _ => unreachable!(),
    }
}

/// RFC 9370 §2.2.4: an IKE SA rekey of a hybrid IKE SA is hybrid: CREATE_CHILD_SA, then
/// IKE_FOLLOWUP_KE per additional key exchange; the new IKE SA works (a Child SA rekey with
/// ML-KEM over it succeeds). With `ke1_none` too, both sides still choose ML-KEM.
#[test]
fn ike_rekey_of_a_hybrid_ike_sa_runs_ike_followup_ke() {
    for (ike, esp, seed) in [
        (
            "aes256gcm16-prfsha384-x25519-ke1_mlkem768",
            "aes256gcm16-x25519-ke1_mlkem768",
            10,
        ),
        (
            "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none",
            "aes256gcm16",
            11,
        ),
        (
            "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024",
            "aes256gcm16-ecp384-ke1_mlkem1024",
            12,
        ),
    ] {
        let ci = conn(true, ike, esp);
        let cr = conn(false, ike, esp);
        let mut p = Pair::new(ci, seed);
        p.run(&cr);
        assert_up_and_keys_cross(&p);
        let before = exchanges(&p).len();
        let now = p.now;
        p.i.rekey_ike(now, &mut p.rng).unwrap();
        p.run(&cr);
        let want = ike.trim_end_matches("-ke1_none");
        assert_eq!(
            new_sa_suites(&p.ev_i),
            vec![want],
            "{:?}",
            p.i.ike_rekey_error()
        );
        assert_eq!(new_sa_suites(&p.ev_r), vec![want]);
        let kinds: Vec<u8> = exchanges(&p)[before..].iter().map(|x| x.1).collect();
        assert_eq!(
            &kinds[..4],
            &[
                exchange::CREATE_CHILD_SA,
                exchange::CREATE_CHILD_SA,
                exchange::IKE_FOLLOWUP_KE,
                exchange::IKE_FOLLOWUP_KE
            ],
            "{ike}"
        );
        // The new IKE SAs carry on: rekey the Child SA over them.
        p.i = take_new_sa(&mut p.ev_i);
        p.r = Some(take_new_sa(&mut p.ev_r));
        assert_eq!(p.i.phase(), Phase::Established);
        let old = ups(&p.ev_i)[0].inbound_spi;
        let now = p.now;
        p.i.rekey_child(now, old, &mut p.rng, &mut p.spis_i)
            .unwrap();
        p.run(&cr);
        let (ni, nr) = (rekeyed(&p.ev_i), rekeyed(&p.ev_r));
        assert_eq!(
            (ni.len(), nr.len()),
            (1, 1),
            "{ike}: {:?} {:?}",
            child_failures(&p.ev_i),
            child_failures(&p.ev_r)
        );
        assert_eq!(ni[0].keys_out.encryption[..], nr[0].keys_in.encryption[..]);
        assert_eq!(ni[0].keys_in.encryption[..], nr[0].keys_out.encryption[..]);
    }
}

fn rekeyed(ev: &[Event]) -> Vec<&ChildSa> {
    ev.iter()
        .filter_map(|e| match e {
            Event::ChildRekeyed { new, .. } => Some(new),
            _ => None,
        })
        .collect()
}

fn child_failures(ev: &[Event]) -> Vec<String> {
    ev.iter()
        .filter_map(|e| match e {
            Event::ChildFailed { error, .. } => Some(error.to_string()),
            _ => None,
        })
        .collect()
}

/// ESP proposals with additional key exchanges: the first Child SA (IKE_AUTH) carries none
/// (RFC 7296 §1.2); `ke1_none` against a peer without ADDKE rekeys classically, without
/// IKE_FOLLOWUP_KE.
#[test]
fn esp_ke1_none_against_a_classic_peer_rekeys_classically() {
    let ike = "aes256gcm16-prfsha384-x25519";
    let ci = conn(true, ike, "aes256gcm16-x25519-ke1_mlkem768-ke1_none");
    let cr = conn(false, ike, "aes256gcm16-x25519");
    let mut p = Pair::new(ci, 20);
    p.run(&cr);
    assert_up_and_keys_cross(&p);
    let old = ups(&p.ev_i)[0].inbound_spi;
    let now = p.now;
    p.i.rekey_child(now, old, &mut p.rng, &mut p.spis_i)
        .unwrap();
    p.run(&cr);
    let (ni, nr) = (rekeyed(&p.ev_i), rekeyed(&p.ev_r));
    assert_eq!(
        (ni.len(), nr.len()),
        (1, 1),
        "{:?}",
        child_failures(&p.ev_i)
    );
    assert_eq!(ni[0].proposal.to_string(), "aes256gcm16-x25519-esn");
    assert_eq!(ni[0].keys_out.encryption[..], nr[0].keys_in.encryption[..]);
    assert_eq!(ni[0].keys_in.encryption[..], nr[0].keys_out.encryption[..]);
    assert!(!exchanges(&p).iter().any(|(_, x, _)| *x == 44));
}

/// Rekey a Child SA of `esp` (both sides) over an IKE SA of `ike`; returns the pair and the
/// exchanges of the rekey.
fn child_rekey(ike: &str, esp: &str, seed: u64) -> (Pair, Vec<(bool, u8, u32)>) {
    let ci = conn(true, ike, esp);
    let cr = conn(false, ike, esp);
    let mut p = Pair::new(ci, seed);
    p.run(&cr);
    assert_up_and_keys_cross(&p);
    let before = exchanges(&p).len();
    let old = ups(&p.ev_i)[0].inbound_spi;
    let now = p.now;
    p.i.rekey_child(now, old, &mut p.rng, &mut p.spis_i)
        .unwrap();
    p.run(&cr);
    let ex = exchanges(&p)[before..].to_vec();
    (p, ex)
}

fn assert_rekeyed_and_keys_cross(p: &Pair, proposal: &str) {
    let (ni, nr) = (rekeyed(&p.ev_i), rekeyed(&p.ev_r));
    assert_eq!(
        (ni.len(), nr.len()),
        (1, 1),
        "{:?} {:?}",
        child_failures(&p.ev_i),
        child_failures(&p.ev_r)
    );
    assert_eq!(ni[0].proposal.to_string(), proposal);
    assert_eq!(ni[0].keys_out.encryption[..], nr[0].keys_in.encryption[..]);
    assert_eq!(ni[0].keys_in.encryption[..], nr[0].keys_out.encryption[..]);
    assert_ne!(ni[0].keys_in.encryption[..], ni[0].keys_out.encryption[..]);
    let old = ups(&p.ev_i)[0];
    assert_ne!(ni[0].keys_out.encryption[..], old.keys_out.encryption[..]);
}

/// RFC 9370 §2.2.4: a Child SA rekey with x25519 + ML-KEM-768 runs CREATE_CHILD_SA, then
/// one IKE_FOLLOWUP_KE; the new SA's keys cross, and the old one is deleted.
#[test]
fn child_rekey_with_mlkem768_runs_ike_followup_ke() {
    let (p, ex) = child_rekey(
        "aes256gcm16-prfsha384-x25519",
        "aes256gcm16-x25519-ke1_mlkem768",
        21,
    );
    assert_rekeyed_and_keys_cross(&p, "aes256gcm16-x25519-ke1_mlkem768-esn");
    let kinds: Vec<(bool, u8)> = ex.iter().map(|(i, x, _)| (*i, *x)).collect();
    assert_eq!(
        &kinds[..4],
        &[
            (true, exchange::CREATE_CHILD_SA),
            (false, exchange::CREATE_CHILD_SA),
            (true, exchange::IKE_FOLLOWUP_KE),
            (false, exchange::IKE_FOLLOWUP_KE),
        ]
    );
    // Then the initiator deletes the old Child SA (make-before-break as without ADDKE).
    assert_eq!(kinds[4], (true, exchange::INFORMATIONAL));
    assert_eq!(p.i.phase(), Phase::Established);
}

/// ecp384 + ML-KEM-1024 + ML-KEM-768: two IKE_FOLLOWUP_KE, the ML-KEM-1024 ones in
/// fragments (RFC 7383), each answer carrying the link for the next.
#[test]
fn child_rekey_with_two_addke_and_fragments() {
    let (p, ex) = child_rekey(
        "aes256gcm16-prfsha384-ecp384",
        "aes256gcm16-ecp384-ke1_mlkem1024-ke2_mlkem768",
        22,
    );
    assert_rekeyed_and_keys_cross(&p, "aes256gcm16-ecp384-ke1_mlkem1024-ke2_mlkem768-esn");
    let followups: Vec<_> = ex
        .iter()
        .filter(|(_, x, _)| *x == exchange::IKE_FOLLOWUP_KE)
        .copied()
        .collect();
    assert_eq!(followups.len(), 4);
    let (_, frags) = message_size(&p, followups[0]);
    assert!(frags > 1, "the ML-KEM-1024 request goes in fragments");
}

/// RFC 9370 §2.2.4: an IKE_FOLLOWUP_KE naming a link the responder does not know gets
/// STATE_NOT_FOUND; the initiator says so, deletes the half-made Child SA, and the IKE SA
/// and the old Child SA stay.
#[test]
fn a_followup_with_a_wrong_link_gets_state_not_found() {
    let ike = "aes256gcm16-prfsha384-x25519";
    let esp = "aes256gcm16-x25519-ke1_mlkem768";
    // Unfragmented, so the hook sees the whole message.
    let mut ci = conn(true, ike, esp);
    ci.fragmentation.mode = control::ike::frag::FragMode::No;
    let mut cr = conn(false, ike, esp);
    cr.fragmentation.mode = control::ike::frag::FragMode::No;
    let mut p = Pair::new(ci, 23);
    p.run(&cr);
    assert_up_and_keys_cross(&p);
    p.tamper = Some(Box::new(|sender, d, rng| {
        let h = Header::parse(&d.data).ok()?;
        if !d.by_initiator || h.exchange != exchange::IKE_FOLLOWUP_KE {
            return None;
        }
        sender.reseal_own_for_test(
            &d.data,
            |p| {
                for x in p.iter_mut() {
                    if let Payload::Notify(n) = x {
                        n.data = b"not-a-link".to_vec();
                    }
                }
            },
            rng,
        )
    }));
    let old = ups(&p.ev_i)[0].inbound_spi;
    let now = p.now;
    p.i.rekey_child(now, old, &mut p.rng, &mut p.spis_i)
        .unwrap();
    p.run(&cr);
    assert!(rekeyed(&p.ev_i).is_empty() && rekeyed(&p.ev_r).is_empty());
    let fi = child_failures(&p.ev_i);
    assert!(
        fi.iter().any(|e| e.contains("STATE_NOT_FOUND")),
        "initiator: {fi:?}"
    );
    // The responder forgets the unfinished exchange when the initiator deletes it.
    let fr = child_failures(&p.ev_r);
    assert!(
        fr.iter()
            .any(|e| e.contains("before its additional key exchanges")),
        "responder: {fr:?}"
    );
    assert_eq!(p.i.phase(), Phase::Established);
    assert_eq!(p.r.as_ref().unwrap().phase(), Phase::Established);
    assert_eq!(p.r.as_ref().unwrap().child_book_len(), 0);
}

/// §2.8.1 with RFC 9370 §2.2.4: both peers rekey the Child SA with ML-KEM at once; the
/// collision is decided by the CREATE_CHILD_SA nonces, and afterwards each side has one
/// Child SA, the same one, whose keys cross.
#[test]
fn a_child_rekey_collision_with_followups_leaves_one_child_sa() {
    let ike = "aes256gcm16-prfsha384-x25519";
    let esp = "aes256gcm16-x25519-ke1_mlkem768";
    for seed in [30, 31, 32, 33] {
        let ci = conn(true, ike, esp);
        let cr = conn(false, ike, esp);
        let mut p = Pair::new(ci, seed);
        p.run(&cr);
        assert_up_and_keys_cross(&p);
        let (old_i, old_r) = (ups(&p.ev_i)[0].inbound_spi, ups(&p.ev_r)[0].inbound_spi);
        let now = p.now;
        p.i.rekey_child(now, old_i, &mut p.rng, &mut p.spis_i)
            .unwrap();
        let r = p.r.as_mut().unwrap();
        r.rekey_child(now, old_r, &mut p.rng, &mut p.spis_r)
            .unwrap();
        p.run(&cr);
        let r = p.r.as_ref().unwrap();
        let (ci, cr) = (p.i.children(), r.children());
        assert_eq!(
            (ci.len(), cr.len()),
            (1, 1),
            "seed {seed}: {:?} {:?}",
            child_failures(&p.ev_i),
            child_failures(&p.ev_r)
        );
        assert_eq!(ci[0].inbound_spi, cr[0].outbound_spi, "seed {seed}");
        assert_eq!(ci[0].outbound_spi, cr[0].inbound_spi, "seed {seed}");
        assert_ne!(ci[0].inbound_spi, old_i);
        // A real collision: two new Child SAs on each side, one deleted again.
        assert_eq!(
            (rekeyed(&p.ev_i).len(), rekeyed(&p.ev_r).len()),
            (2, 2),
            "seed {seed}"
        );
        let new_i = rekeyed(&p.ev_i)
            .into_iter()
            .find(|c| c.inbound_spi == ci[0].inbound_spi)
            .unwrap();
        let new_r = rekeyed(&p.ev_r)
            .into_iter()
            .find(|c| c.inbound_spi == cr[0].inbound_spi)
            .unwrap();
        assert_eq!(new_i.keys_out.encryption[..], new_r.keys_in.encryption[..]);
    }
}

/// §2.8.1 with RFC 9370 §2.2.4: both peers rekey a hybrid IKE SA at once; both rekeys run
/// their IKE_FOLLOWUP_KE, and both sides keep the same survivor.
#[test]
fn an_ike_rekey_collision_with_followups_agrees_on_the_survivor() {
    let ike = "aes256gcm16-prfsha384-x25519-ke1_mlkem768";
    for seed in [40, 41, 42] {
        let ci = conn(true, ike, "aes256gcm16");
        let cr = conn(false, ike, "aes256gcm16");
        let mut p = Pair::new(ci, seed);
        p.run(&cr);
        assert_up_and_keys_cross(&p);
        let now = p.now;
        p.i.rekey_ike(now, &mut p.rng).unwrap();
        p.r.as_mut().unwrap().rekey_ike(now, &mut p.rng).unwrap();
        p.run(&cr);
        let survivors = |ev: &[Event]| -> Vec<(u64, u64)> {
            ev.iter()
                .filter_map(|e| match e {
                    Event::NewIkeSa(sa) if !sa.superseded() => Some(sa.spis()),
                    _ => None,
                })
                .collect()
        };
        let (si, sr) = (survivors(&p.ev_i), survivors(&p.ev_r));
        assert_eq!(si.len(), 1, "seed {seed}: {:?}", p.i.ike_rekey_error());
        assert_eq!(si, sr, "seed {seed}");
        assert_eq!(
            new_sa_suites(&p.ev_i).len(),
            2,
            "seed {seed}: a real collision"
        );
    }
}
