//! `ike_exchange`: the IKE daemon core (`control::daemon::Daemon`: the endpoint's front
//! door, half-open limits and cookies, the IKE SA state machines of `control::ike::sa`)
//! fed sequences of datagrams, structure-aware.
//!
//! Two daemons in memory, sans-IO, with a virtual clock and seeded random sources: `a`
//! (192.0.2.1, our initiator, `start_action = start`) and `b` (192.0.2.2, our responder),
//! PSK, as in control/tests/it/world. The harness runs their real exchange up to a stage, so it
//! knows the IKE SA's SK_e/SK_a (`Daemon::keys_report`, what `vpnctl keys --wireshark`
//! exports; no product API was added), then plays the fuzz input's records: raw datagrams,
//! or inner payload chains that it seals properly (`SkCrypto`, RFC 7296 §3.14; optionally
//! split into RFC 7383 fragments) with the right SPIs and message ID, so mutations reach
//! the payloads inside the encrypted payload.
//!
//! Input: `[setup]` then records `[op][ctl][first][len:2][len bytes]` until the input ends
//! (a short last record takes what is left), at most `MAX_RECORDS` (128) of them; the
//! virtual clock stops at `MAX_CLOCK_MS` (120 s).
//! - `setup` bits 0–1: the stage: 0 nothing delivered yet (a's IKE_SA_INIT request waits on
//!   the wire), 1 IKE_SA_INIT done (b half-open, a's IKE_AUTH request on the wire), 2 or 3
//!   established (a Child SA installed on both). Bit 2: the IKE SA uses AES-CBC-256 with
//!   HMAC-SHA-256-128 instead of AES-GCM-128. Bit 7: run the input twice and require the
//!   same transcript (time only through the virtual clock, randomness only through the
//!   daemons' seeded sources).
//! - `op` bits 0–2, what the record is:
//!   0 raw datagram to b:500 from a:500; 1 raw datagram to b:4500 from a:4500 (the bytes
//!   as they are: the non-ESP marker is the input's); 2 raw datagram to a:500 from b:500;
//!   3 sealed request a→b; 4 sealed response b→a (to a's last request); 5 sealed request
//!   b→a; 6 sealed response a→b (to b's last request); 7 time: the clock advances `first`
//!   × 100 ms, due timers fire, and with `ctl` bit 0 what is on the wire between a and b
//!   is delivered (one round).
//!   For sealed records: `op` bits 3–4 the exchange (IKE_AUTH, CREATE_CHILD_SA,
//!   INFORMATIONAL, IKE_INTERMEDIATE; a response takes its request's), bit 5 port 4500
//!   (behind the non-ESP marker); `first` is the first inner payload's type and the bytes
//!   the inner payload chain; `ctl` bits 0–2 the message ID (0: the one expected, else
//!   that ± up to 4), bit 3 split into Encrypted Fragments (RFC 7383) of
//!   200 + 64 × (`ctl` >> 4) bytes. Before the keys exist (stage 0) a sealed record is sent
//!   as its bytes, raw.
//!
//! Properties: never a panic; every datagram either daemon sends parses
//! (`Message::parse`, its length field exact), and if it is encrypted with keys the sender
//! still holds, it opens with them and its inner payload chain parses; no unbounded
//! growth: b's half-open SAs stay within `half_open_max`, each record adds at most one IKE
//! SA per daemon, each record makes a bounded number of datagrams; timers make progress;
//! with `setup` bit 7, the same input gives the same transcript.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::rc::Rc;
use std::sync::OnceLock;

use control::config::IkedConfig;
use control::daemon::{Action, Daemon, Held, Options};
use control::ike::frag;
use control::ike::sa::Random;
use control::ike::sk::{Opened, SkCrypto};
use control::ike::wire::{self, exchange, flags, payload, Header, Message};
use dataplane::crypto::{Encryption, Integrity};

pub const A: &str = "192.0.2.1";
pub const B: &str = "192.0.2.2";

/// b's limits, small so the fuzzer meets them.
pub fn b_options() -> Options {
    Options {
        cookie_threshold: 4,
        half_open_per_source: 3,
        half_open_max: 6,
        half_open_timeout_ms: 5_000,
        ..Options::default()
    }
}

/// A deterministic random source.
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

fn conf(local: &str, remote: &str, proposal: &str, initiator: bool) -> String {
    let start = if initiator {
        "start_action = \"start\""
    } else {
        ""
    };
    let (lts, rts) = if initiator {
        ("10.1.0.0/16", "10.2.0.0/16")
    } else {
        ("10.2.0.0/16", "10.1.0.0/16")
    };
    format!(
        r#"
[connections.peer]
local_addrs = ["{local}"]
remote_addrs = ["{remote}"]
proposals = ["{proposal}"]
retransmit_ms = 500
retransmit_tries = 3
rekey_time = "30s"
dpd_delay = "10s"
[connections.peer.local]
id = "{local}"
[connections.peer.remote]
id = "{remote}"
[connections.peer.children.net]
local_ts = ["{lts}"]
remote_ts = ["{rts}"]
esp_proposals = ["aes128gcm16", "aes256-sha256"]
rekey_time = "20s"
{start}
[secrets.psk]
id = ["{local}", "{remote}"]
secret = "a test pre-shared key of some length"
"#
    )
}

const PROPOSALS: [&str; 2] = ["aes128gcm16-prfsha256-x25519", "aes256-sha256-x25519"];

/// The parsed configurations: [suite][a, b].
fn configs() -> &'static [[IkedConfig; 2]; 2] {
    static C: OnceLock<[[IkedConfig; 2]; 2]> = OnceLock::new();
    C.get_or_init(|| {
        PROPOSALS.map(|p| {
            [(A, B, true), (B, A, false)].map(|(l, r, i)| {
                IkedConfig::parse(Path::new("fuzz.toml"), &conf(l, r, p, i))
                    .expect("the fuzz configuration parses")
            })
        })
    })
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("address"), port)
}

struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// One IKE SA's keys as `keys_report` gives them.
struct SaKeys {
    spi_i: u64,
    spi_r: u64,
    /// Initiator's and responder's direction.
    init: SkCrypto,
    resp: SkCrypto,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// An IKE SA's keys never change (a rekeyed IKE SA has new SPIs), so each SA's ciphers are
/// set up once per run: building them per sealed record and per datagram sent (the hex of
/// `keys_report`, two `SkCrypto::new`) was a sixth of the target's time. Per daemon: a forged
/// message could give each daemon an SA with the same SPIs and other keys.
#[derive(Default)]
struct KeyCache(HashMap<(usize, u64, u64), Rc<SaKeys>>);

impl KeyCache {
    /// The keys of daemon `i`'s IKE SA with SPIs `spis` (cached: also after the daemon
    /// deleted it, when a datagram it still sends under them is still checked), or of the
    /// keyed one with the highest SPIs.
    fn keys_of(&mut self, i: usize, d: &Daemon, spis: Option<(u64, u64)>) -> Option<Rc<SaKeys>> {
        // Without SPIs: the keyed IKE SA with the highest SPIs, the last `keys_report` lists
        // (sorted by their fixed-width hex, the same order), found without formatting keys.
        let first = spis.or_else(|| d.keyed_ike_spis().max());
        if let Some(k) = first.and_then(|(si, sr)| self.0.get(&(i, si, sr))) {
            return Some(Rc::clone(k));
        }
        let report = d.keys_report();
        let k = report.ike_sas.iter().rev().find_map(|k| {
            let spi_i = u64::from_str_radix(&k.spi_i, 16).ok()?;
            let spi_r = u64::from_str_radix(&k.spi_r, 16).ok()?;
            if spis.is_some_and(|s| s != (spi_i, spi_r)) {
                return None;
            }
            if let Some(cached) = self.0.get(&(i, spi_i, spi_r)) {
                return Some(Rc::clone(cached));
            }
            let encr = match (k.encr.as_str(), k.encr_key_bits) {
                ("ENCR_AES_GCM_16", 128) => Encryption::AesGcm128,
                ("ENCR_AES_GCM_16", 256) => Encryption::AesGcm256,
                ("ENCR_CHACHA20_POLY1305", _) => Encryption::ChaCha20Poly1305,
                ("ENCR_AES_CBC", 128) => Encryption::AesCbc128,
                ("ENCR_AES_CBC", 256) => Encryption::AesCbc256,
                _ => return None,
            };
            let integ = match k.integ.as_deref() {
                None => Integrity::None,
                Some("AUTH_HMAC_SHA2_256_128") => Integrity::HmacSha256_128,
                Some("AUTH_HMAC_SHA2_384_192") => Integrity::HmacSha384_192,
                Some("AUTH_HMAC_SHA2_512_256") => Integrity::HmacSha512_256,
                Some(_) => return None,
            };
            Some(Rc::new(SaKeys {
                spi_i,
                spi_r,
                init: SkCrypto::new(encr, integ, &unhex(&k.sk_ei), &unhex(&k.sk_ai)).ok()?,
                resp: SkCrypto::new(encr, integ, &unhex(&k.sk_er), &unhex(&k.sk_ar)).ok()?,
            }))
        })?;
        self.0.insert((i, k.spi_i, k.spi_r), Rc::clone(&k));
        Some(k)
    }
}

/// The last request one side sent (exchange, message ID: what a response answers), and
/// the message ID after the last request of that side delivered to the other (what the
/// other side expects next, RFC 7296 §2.2).
#[derive(Default, Clone, Copy)]
struct Requests {
    last: Option<(u8, u32)>,
    next: u32,
}

/// The virtual clock never passes this (ms): enough for several IKE SA (30 s) and Child SA
/// (20 s) rekeys, DPD (10 s) and half-open expiry, while an input cannot buy minutes of
/// rekeying (each a key exchange: that made long inputs run at a few per second).
const MAX_CLOCK_MS: u64 = 120_000;

/// Records past this many are ignored (libFuzzer's inputs stay short; the cost of each
/// sealed record is a daemon's full processing, a key exchange for CREATE_CHILD_SA).
const MAX_RECORDS: usize = 128;

/// Most datagrams one record may make both daemons send (retransmissions, answers, the
/// exchanges a timer starts): more is an amplification bug.
const MAX_SENDS_PER_RECORD: usize = 64;

struct Harness {
    now: u64,
    /// a, b.
    d: [Daemon; 2],
    /// What the daemons sent and the harness has not delivered.
    wire: Vec<Datagram>,
    /// Requests seen from a and from b.
    req: [Requests; 2],
    /// Every datagram and dataplane change, in order (the determinism check).
    transcript: Vec<u8>,
    iv: u64,
    keys: KeyCache,
}

impl Harness {
    fn new(suite: usize) -> Harness {
        let [ca, cb] = configs()[suite].clone();
        let a = Daemon::new(ca, Options::default(), Box::new(Seeded(1)));
        let b = Daemon::new(cb, b_options(), Box::new(Seeded(2)));
        let mut h = Harness {
            now: 0,
            d: [a, b],
            wire: Vec::new(),
            req: [Requests::default(); 2],
            transcript: Vec::new(),
            iv: 0,
            keys: KeyCache::default(),
        };
        for d in &mut h.d {
            d.start(0, Some(Held::default()));
        }
        h.drain();
        h
    }

    /// Take both daemons' actions, checking every datagram.
    fn drain(&mut self) -> usize {
        let mut sent = 0;
        for i in 0..2 {
            while let Some(act) = self.d[i].poll_action() {
                match act {
                    Action::Send { from, to, data } => {
                        self.check_sent(i, from, &data);
                        self.transcript
                            .extend_from_slice(&(data.len() as u32).to_be_bytes());
                        self.transcript.extend_from_slice(&data);
                        self.wire.push(Datagram { from, to, data });
                        sent += 1;
                    }
                    Action::Dataplane(op) => {
                        self.transcript.extend_from_slice(op.describe().as_bytes());
                    }
                }
            }
        }
        sent
    }

    /// A datagram daemon `i` sends must be well-formed.
    fn check_sent(&mut self, i: usize, from: SocketAddr, data: &[u8]) {
        let msg = if from.port() == 4500 {
            match data {
                [0xff] => return, // a NAT keepalive (RFC 3948 §2.3)
                [0, 0, 0, 0, rest @ ..] => rest,
                _ => panic!("daemon {i} sent on 4500 without the non-ESP marker"),
            }
        } else {
            data
        };
        let m = Message::parse(msg)
            .unwrap_or_else(|e| panic!("daemon {i} sent a message that does not parse: {e}"));
        assert_eq!(
            m.header.length as usize,
            msg.len(),
            "daemon {i} sent a length field that is not the message's"
        );
        let h = m.header;
        if !h.is_response() {
            self.req[i].last = Some((h.exchange, h.message_id));
        }
        let encrypted = matches!(
            m.payloads.last(),
            Some(
                wire::Payload::Sk { .. }
                    | wire::Payload::Other {
                        kind: payload::SKF,
                        ..
                    }
            )
        );
        if !encrypted {
            return;
        }
        let Some(k) = self.keys.keys_of(i, &self.d[i], Some((h.spi_i, h.spi_r))) else {
            return; // an SA the harness never saw keys for (gone before it sent again)
        };
        let sk = if h.from_initiator() { &k.init } else { &k.resp };
        match sk.open_any(msg) {
            Ok(Opened::Whole(o)) => {
                if let Err(e) = wire::parse_chain(o.first, &o.plain) {
                    panic!("daemon {i} encrypted inner payloads that do not parse: {e}");
                }
            }
            Ok(Opened::Fragment(_)) => {}
            Err(e) => panic!("daemon {i} sent an SK payload its own keys do not open: {e}"),
        }
    }

    fn deliver(&mut self, to: usize, from: SocketAddr, at: SocketAddr, data: &[u8]) {
        let msg = match (at.port(), data) {
            (4500, [0, 0, 0, 0, rest @ ..]) => rest,
            (_, d) => d,
        };
        if let Ok(h) = Header::parse(msg) {
            if !h.is_response() {
                let r = &mut self.req[1 - to];
                r.next = r.next.max(h.message_id.wrapping_add(1));
            }
        }
        let now = self.now;
        self.d[to].handle_datagram(now, at, from, data);
    }

    /// Deliver what is on the wire (one round).
    fn deliver_wire(&mut self) {
        let a: IpAddr = A.parse().expect("address");
        for dg in std::mem::take(&mut self.wire) {
            let to = if dg.to.ip() == a { 0 } else { 1 };
            self.deliver(to, dg.from, dg.to, &dg.data);
        }
    }

    fn fire_timers(&mut self) {
        for i in 0..2 {
            let mut n = 0;
            while let Some(t) = self.d[i].poll_timeout() {
                if t > self.now {
                    break;
                }
                n += 1;
                assert!(
                    n < 1000,
                    "daemon {i}: a timer at {t} ms never makes progress"
                );
                let now = self.now;
                self.d[i].handle_timeout(now);
            }
        }
    }

    /// The keys of the IKE SA between a and b (b's newest).
    fn keys(&mut self) -> Option<Rc<SaKeys>> {
        self.keys.keys_of(1, &self.d[1], None)
    }

    /// Seal `inner` from `sender` (0 a, 1 b) and deliver it to the other daemon.
    #[allow(clippy::too_many_arguments)]
    fn sealed(
        &mut self,
        sender: usize,
        response: bool,
        exch_sel: u8,
        ctl: u8,
        first: u8,
        inner: &[u8],
        nat: bool,
    ) {
        let to = 1 - sender;
        let port = if nat { 4500 } else { 500 };
        let (from, at) = if sender == 0 {
            (sock(A, port), sock(B, port))
        } else {
            (sock(B, port), sock(A, port))
        };
        let Some(k) = self.keys() else {
            self.deliver(to, from, at, inner);
            return;
        };
        let (exch, expected) = if response {
            // The other side's last request.
            match self.req[to].last {
                Some(r) => r,
                None => (exchange::INFORMATIONAL, 0),
            }
        } else {
            let exch = [
                exchange::IKE_AUTH,
                exchange::CREATE_CHILD_SA,
                exchange::INFORMATIONAL,
                exchange::IKE_INTERMEDIATE,
            ][usize::from(exch_sel & 3)];
            (exch, self.req[sender].next)
        };
        let delta = ctl & 7;
        let mid = if delta == 0 {
            expected
        } else {
            expected.wrapping_add(u32::from(delta)).wrapping_sub(4)
        };
        // a is the original initiator of the SA between them.
        let from_initiator = sender == 0;
        let header = Header {
            spi_i: k.spi_i,
            spi_r: k.spi_r,
            next_payload: 0,
            major: 2,
            minor: 0,
            exchange: exch,
            flags: (if from_initiator { flags::INITIATOR } else { 0 })
                | (if response { flags::RESPONSE } else { 0 }),
            message_id: mid,
            length: 0,
        };
        let sk = if from_initiator { &k.init } else { &k.resp };
        let mut rng = Seeded(self.iv);
        self.iv += 1;
        let msgs = if ctl & 8 != 0 {
            let max = 200 + 64 * usize::from(ctl >> 4);
            frag::fragment(sk, header, first, inner, max, &mut rng).unwrap_or_default()
        } else {
            let mut iv = vec![0u8; sk.iv_len()];
            rng.fill(&mut iv);
            sk.seal_bytes(header, first, None, inner, &iv)
                .into_iter()
                .collect()
        };
        for m in msgs {
            let data = if nat { [&[0u8; 4][..], &m].concat() } else { m };
            self.deliver(to, from, at, &data);
        }
    }

    fn record(&mut self, op: u8, ctl: u8, first: u8, body: &[u8]) {
        let exch = (op >> 3) & 3;
        let nat = op & 0x20 != 0;
        match op & 7 {
            0 => self.deliver(1, sock(A, 500), sock(B, 500), body),
            1 => self.deliver(1, sock(A, 4500), sock(B, 4500), body),
            2 => self.deliver(0, sock(B, 500), sock(A, 500), body),
            3 => self.sealed(0, false, exch, ctl, first, body, nat),
            4 => self.sealed(1, true, exch, ctl, first, body, nat),
            5 => self.sealed(1, false, exch, ctl, first, body, nat),
            6 => self.sealed(0, true, exch, ctl, first, body, nat),
            _ => {
                // The clock stops at MAX_CLOCK_MS: beyond it, inputs spent their time on
                // rekeys (a key exchange each), not on new states.
                self.now = (self.now + u64::from(first) * 100).min(MAX_CLOCK_MS);
                self.fire_timers();
                if ctl & 1 != 0 {
                    self.deliver_wire();
                }
            }
        }
    }

    /// Bring the pair to `stage` (see the module doc).
    fn setup(&mut self, stage: u8) {
        if stage >= 1 {
            // a's IKE_SA_INIT to b, b's answer to a: a sends IKE_AUTH (left on the wire).
            self.deliver_wire();
            self.drain();
            self.deliver_wire();
            self.drain();
        }
        if stage >= 2 {
            for _ in 0..8 {
                self.deliver_wire();
                self.drain();
            }
        }
    }
}

/// One run; returns the transcript.
fn run(data: &[u8]) -> Vec<u8> {
    let Some((&setup, mut rest)) = data.split_first() else {
        return Vec::new();
    };
    let mut h = Harness::new(usize::from(setup >> 2 & 1));
    h.setup(setup & 3);
    let half_open_max = b_options().half_open_max;
    let mut records = 0usize;
    let base = [h.d[0].ike_sas(), h.d[1].ike_sas()];
    while !rest.is_empty() && records < MAX_RECORDS {
        let (op, ctl, first) = (
            rest[0],
            *rest.get(1).unwrap_or(&0),
            *rest.get(2).unwrap_or(&0),
        );
        let len = match rest.get(3..5) {
            Some(l) => usize::from(u16::from_be_bytes([l[0], l[1]])),
            None => 0,
        };
        let body_at = rest.len().min(5);
        let len = len.min(rest.len() - body_at);
        let body = &rest[body_at..body_at + len];
        rest = &rest[body_at + len..];
        h.record(op, ctl, first, body);
        let sent = h.drain();
        records += 1;
        assert!(
            sent <= MAX_SENDS_PER_RECORD,
            "one record made the daemons send {sent} datagrams"
        );
        assert!(
            h.d[1].half_open() <= half_open_max,
            "b holds {} half-open SAs, over its limit of {half_open_max}",
            h.d[1].half_open()
        );
        for (i, (d, base)) in h.d.iter().zip(base).enumerate() {
            assert!(
                d.ike_sas() <= base + 2 * records,
                "daemon {i} holds {} IKE SAs after {records} records",
                d.ike_sas()
            );
        }
        // Undelivered datagrams do not pile up in the harness either.
        if h.wire.len() > 256 {
            h.wire.drain(..128);
        }
    }
    h.transcript
}

/// The `ike_exchange` harness.
pub fn exchange(data: &[u8]) {
    let t = run(data);
    if data.first().is_some_and(|s| s & 0x80 != 0) {
        assert!(run(data) == t, "the same input gave another transcript");
    }
}

/// One datagram of a real exchange, for seeds: who sent it (0 a, 1 b), its bytes, and for
/// an encrypted one its inner payloads (first payload type, bytes).
pub struct Captured {
    pub sender: usize,
    pub data: Vec<u8>,
    pub inner: Option<(u8, Vec<u8>)>,
}

/// The datagrams of our initiator against our responder up to an established IKE SA and
/// Child SA (the stage-2 setup), for seeds.
pub fn real_exchange(suite: usize) -> Vec<Captured> {
    let mut h = Harness::new(suite);
    let a: IpAddr = A.parse().expect("address");
    let mut out = Vec::new();
    for _ in 0..8 {
        for dg in &h.wire {
            out.push((usize::from(dg.from.ip() != a), dg.data.clone()));
        }
        h.deliver_wire();
        h.drain();
    }
    let keys = h.keys();
    out.into_iter()
        .map(|(sender, data)| {
            let inner = keys.as_ref().and_then(|k| {
                let sk = if sender == 0 { &k.init } else { &k.resp };
                match sk.open_any(&data).ok()? {
                    Opened::Whole(o) => Some((o.first, o.plain)),
                    Opened::Fragment(_) => None,
                }
            });
            Captured {
                sender,
                data,
                inner,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness reaches what it claims: the sealed IKE_AUTH request establishes b's
    /// IKE SA, and a sealed INFORMATIONAL request on an established SA is answered.
    #[test]
    fn sealed_records_reach_the_state_machine() {
        for suite in 0..2 {
            let (first, inner) = real_exchange(suite)
                .into_iter()
                .find(|c| c.sender == 0 && c.inner.is_some())
                .and_then(|c| c.inner)
                .expect("a's IKE_AUTH request");
            let mut h = Harness::new(suite);
            h.setup(1);
            assert_eq!(h.d[1].half_open(), 1);
            h.wire.clear(); // a's own IKE_AUTH request: the sealed copy stands in for it
            h.record(3, 0, first, &inner);
            assert_eq!(h.drain(), 1, "b answers IKE_AUTH");
            assert_eq!(h.d[1].counters.negotiations_established, 1);

            let mut h = Harness::new(suite);
            h.setup(2);
            assert_eq!(h.d[0].counters.negotiations_established, 1);
            assert_eq!(h.d[1].counters.negotiations_established, 1);
            h.wire.clear();
            h.record(3 | 2 << 3, 0, 0, &[]);
            assert_eq!(h.drain(), 1, "b answers an empty INFORMATIONAL (DPD)");
            let m = Message::parse(&h.wire[0].data).unwrap();
            assert!(m.header.is_response());
            assert_eq!(m.header.exchange, exchange::INFORMATIONAL);
            assert_eq!(m.header.message_id, 2);
        }
    }
}
