//! The IKE SA state machine (RFC 7296), sans-IO: fed datagrams, the current time and
//! random bytes; returns datagrams to send, the next timer and events (SA up, child SA
//! keys, failures in plain words). No sockets, clocks or randomness inside.
//!
//! Covered: IKE_SA_INIT with NAT detection, COOKIE and INVALID_KE_PAYLOAD retries;
//! IKE_AUTH with PSK and the first Child SA (narrowing, transport mode); INFORMATIONAL
//! (Delete of the IKE SA or the child, liveness); retransmission with exponential backoff;
//! duplicate requests answered from the cached response (§2.1–2.3); error notifies.

use std::net::{IpAddr, SocketAddr};

use dataplane::crypto::SaKeys;
use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

use super::auth::{auth_matches, parse_id, psk_auth, show_id, AUTH_PSK};
use super::child::{self, show_ts, EspProposal, PROTO_ESP};
use super::dh::{Group, KeyPair};
use super::keys::{derive_ike_keys, IkeKeys, KeyLengths};
use super::proposal::{describe, IkeProposal, IkeSuite, PROTO_IKE};
use super::sk::SkCrypto;
use super::wire::{
    exchange, flags, payload, Delete, Header, Message, Notify, Payload, Ts, HEADER_LEN,
};

/// Notify message types (RFC 7296 §3.10.1).
pub mod notify {
    pub const UNSUPPORTED_CRITICAL_PAYLOAD: u16 = 1;
    pub const INVALID_MAJOR_VERSION: u16 = 5;
    pub const INVALID_SYNTAX: u16 = 7;
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    pub const AUTHENTICATION_FAILED: u16 = 24;
    pub const TS_UNACCEPTABLE: u16 = 38;
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    pub const COOKIE: u16 = 16390;
    pub const USE_TRANSPORT_MODE: u16 = 16391;

    /// A name for logs.
    pub fn name(t: u16) -> String {
        match t {
            1 => "UNSUPPORTED_CRITICAL_PAYLOAD".into(),
            4 => "INVALID_IKE_SPI".into(),
            5 => "INVALID_MAJOR_VERSION".into(),
            7 => "INVALID_SYNTAX".into(),
            9 => "INVALID_MESSAGE_ID".into(),
            11 => "INVALID_SPI".into(),
            14 => "NO_PROPOSAL_CHOSEN".into(),
            17 => "INVALID_KE_PAYLOAD".into(),
            24 => "AUTHENTICATION_FAILED".into(),
            34 => "SINGLE_PAIR_REQUIRED".into(),
            35 => "NO_ADDITIONAL_SAS".into(),
            38 => "TS_UNACCEPTABLE".into(),
            43 => "TEMPORARY_FAILURE".into(),
            t => format!("notify {t}"),
        }
    }
}

/// The first payload of a kind in a list, destructured: `first!(p, Payload::Nonce(n) => n)`.
macro_rules! first {
    ($p:expr, $pat:pat => $out:expr) => {
        $p.iter().find_map(|x| match x {
            $pat => Some($out),
            _ => None,
        })
    };
}

/// IKE's ports (RFC 7296 §2.23, RFC 3948).
pub const IKE_PORT: u16 = 500;
pub const NAT_T_PORT: u16 = 4500;

/// One connection, as configured.
#[derive(Debug, Clone)]
pub struct Connection {
    pub name: String,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub local_id: String,
    pub remote_id: String,
    pub psk: Zeroizing<Vec<u8>>,
    pub ike: Vec<IkeProposal>,
    pub esp: Vec<EspProposal>,
    pub local_ts: Vec<Ts>,
    pub remote_ts: Vec<Ts>,
    pub transport: bool,
    /// Pretend a NAT is there: UDP-encapsulate ESP regardless (strongSwan `encap = yes`).
    pub force_encap: bool,
    /// First retransmission after this many milliseconds, then doubling.
    pub retransmit_ms: u64,
    pub retransmit_tries: u32,
}

/// Random bytes, supplied by the caller (a CSPRNG in the daemon, a seeded one in tests).
pub trait Random {
    fn fill(&mut self, buf: &mut [u8]);
}

/// A negotiated Child SA, ready to install.
pub struct ChildSa {
    /// Our SPI: ESP arriving with it is ours.
    pub inbound_spi: u32,
    pub outbound_spi: u32,
    pub proposal: EspProposal,
    pub keys_in: SaKeys,
    pub keys_out: SaKeys,
    pub local_ts: Vec<Ts>,
    pub remote_ts: Vec<Ts>,
    pub transport: bool,
    pub local: IpAddr,
    pub remote: IpAddr,
    /// UDP encapsulation (local port, remote port) when a NAT was found or forced.
    pub udp_encap: Option<(u16, u16)>,
}

impl std::fmt::Debug for ChildSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSa")
            .field("inbound_spi", &format_args!("{:#010x}", self.inbound_spi))
            .field("outbound_spi", &format_args!("{:#010x}", self.outbound_spi))
            .field("proposal", &self.proposal)
            .field("keys", &"<redacted>")
            .field("udp_encap", &self.udp_encap)
            .finish()
    }
}

/// What the state machine wants done, or wants known.
#[derive(Debug)]
pub enum Event {
    /// Send `data` from our `from_port` to `to`.
    Send {
        to: SocketAddr,
        from_port: u16,
        data: Vec<u8>,
    },
    /// The IKE SA is authenticated.
    Established {
        suite: IkeSuite,
        nat: bool,
    },
    ChildUp(ChildSa),
    ChildDown {
        inbound_spi: u32,
        outbound_spi: u32,
    },
    /// The negotiation failed; `reason` says which side wanted what.
    Failed {
        reason: String,
    },
    /// The IKE SA is gone (deleted by either side).
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    InitSent,
    AuthSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
    InitDone,
    Established,
    Deleting,
    Dead,
}

struct Pending {
    mid: u32,
    data: Vec<u8>,
    next_at: u64,
    tries: u32,
}

/// One IKE SA.
pub struct IkeSa {
    cfg: Connection,
    role: Role,
    state: State,
    spi_i: u64,
    spi_r: u64,
    ni: Vec<u8>,
    nr: Vec<u8>,
    dh: Option<KeyPair>,
    suite: Option<IkeSuite>,
    keys: Option<IkeKeys>,
    /// Our outgoing and incoming SK keys.
    sk_out: Option<SkCrypto>,
    sk_in: Option<SkCrypto>,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    cookie: Option<Vec<u8>>,
    next_mid: u32,
    peer_mid: u32,
    pending: Option<Pending>,
    last_response: Option<(u32, Vec<u8>)>,
    nat: bool,
    port: u16,
    child_spi: u32,
    child: Option<(u32, u32)>,
    events: Vec<Event>,
}

fn random_spi(rng: &mut dyn Random) -> u64 {
    loop {
        let mut b = [0u8; 8];
        rng.fill(&mut b);
        let v = u64::from_be_bytes(b);
        if v != 0 {
            return v;
        }
    }
}

fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    // RFC 7296 §2.23: SHA-1(SPIi | SPIr | IP | port).
    let mut h = Sha1::new();
    h.update(spi_i.to_be_bytes());
    h.update(spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(addr.port().to_be_bytes());
    h.finalize().to_vec()
}

fn n(kind: u16, data: Vec<u8>) -> Payload {
    Payload::Notify(Notify {
        protocol: 0,
        spi: vec![],
        kind,
        data,
    })
}

fn find_notify(p: &[Payload], kind: u16) -> Option<&Notify> {
    p.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind == kind => Some(n),
        _ => None,
    })
}

/// The first error notify (types below 16384) in a response.
fn error_notify(p: &[Payload]) -> Option<u16> {
    p.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind < 16384 => Some(n.kind),
        _ => None,
    })
}

impl IkeSa {
    fn new(cfg: Connection, role: Role, child_spi: u32) -> IkeSa {
        IkeSa {
            port: cfg.local.port(),
            cfg,
            role,
            state: State::InitSent,
            spi_i: 0,
            spi_r: 0,
            ni: vec![],
            nr: vec![],
            dh: None,
            suite: None,
            keys: None,
            sk_out: None,
            sk_in: None,
            init_request: vec![],
            init_response: vec![],
            cookie: None,
            next_mid: 0,
            peer_mid: 0,
            pending: None,
            last_response: None,
            nat: false,
            child_spi,
            child: None,
            events: vec![],
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn role(&self) -> Role {
        self.role
    }
    /// (SPIi, SPIr): how the daemon finds this SA for an incoming message.
    pub fn spis(&self) -> (u64, u64) {
        (self.spi_i, self.spi_r)
    }
    pub fn connection(&self) -> &Connection {
        &self.cfg
    }
    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn remote_addr(&self) -> SocketAddr {
        let mut r = self.cfg.remote;
        if self.port == NAT_T_PORT {
            r.set_port(NAT_T_PORT);
        }
        r
    }

    fn send(&mut self, data: Vec<u8>) {
        self.events.push(Event::Send {
            to: self.remote_addr(),
            from_port: self.port,
            data,
        });
    }

    fn fail(&mut self, reason: String) {
        tracing::warn!(conn = %self.cfg.name, "{reason}");
        self.state = State::Dead;
        self.pending = None;
        self.events.push(Event::Failed { reason });
    }

    fn request(&mut self, now: u64, data: Vec<u8>) {
        self.pending = Some(Pending {
            mid: self.next_mid,
            data: data.clone(),
            next_at: now + self.cfg.retransmit_ms,
            tries: 1,
        });
        self.next_mid += 1;
        self.send(data);
    }

    // ---- initiator -------------------------------------------------------------------

    /// Start a connection as initiator. `child_spi` is our inbound SPI for the first
    /// Child SA (allocated by the daemon in the dataplane's SPI space).
    pub fn initiate(cfg: Connection, now: u64, rng: &mut dyn Random, child_spi: u32) -> IkeSa {
        let mut sa = IkeSa::new(cfg, Role::Initiator, child_spi);
        sa.spi_i = random_spi(rng);
        sa.ni = vec![0u8; 32];
        rng.fill(&mut sa.ni);
        let group = sa
            .cfg
            .ike
            .first()
            .and_then(|p| p.groups.first().copied())
            .unwrap_or(Group::Curve25519);
        sa.send_init(now, group, rng);
        sa
    }

    fn keypair(group: Group, rng: &mut dyn Random) -> KeyPair {
        loop {
            let mut r = Zeroizing::new(vec![0u8; group.random_len()]);
            rng.fill(&mut r);
            if let Ok(k) = group.keypair(&r) {
                return k;
            }
        }
    }

    fn send_init(&mut self, now: u64, group: Group, rng: &mut dyn Random) {
        let dh = Self::keypair(group, rng);
        let mut payloads = Vec::new();
        if let Some(c) = &self.cookie {
            payloads.push(n(notify::COOKIE, c.clone())); // §2.6: first
        }
        payloads.push(Payload::Sa(
            self.cfg
                .ike
                .iter()
                .enumerate()
                .map(|(i, p)| p.to_wire(i as u8 + 1))
                .collect(),
        ));
        payloads.push(Payload::Ke {
            group: group.iana(),
            data: dh.public.clone(),
        });
        payloads.push(Payload::Nonce(self.ni.clone()));
        payloads.extend(self.nat_notifies(0));
        self.dh = Some(dh);
        let msg = Message {
            header: self.header(exchange::IKE_SA_INIT, 0, false),
            payloads,
        }
        .emit();
        self.init_request = msg.clone();
        self.next_mid = 0;
        self.state = State::InitSent;
        self.request(now, msg);
    }

    fn nat_notifies(&self, spi_r: u64) -> Vec<Payload> {
        let mut src = self.cfg.local;
        if self.cfg.force_encap {
            // A hash nobody can match: the peer sees a NAT and so do we (RFC 7296 §2.23).
            src.set_port(src.port() ^ 0x5a5a);
        }
        vec![
            n(
                notify::NAT_DETECTION_SOURCE_IP,
                nat_hash(self.spi_i, spi_r, src),
            ),
            n(
                notify::NAT_DETECTION_DESTINATION_IP,
                nat_hash(self.spi_i, spi_r, self.cfg.remote),
            ),
        ]
    }

    /// Compare the peer's NAT detection hashes with what we see (RFC 7296 §2.23). The
    /// hashes cover the SPIs of the message they came in: `spi_r` is 0 in the request.
    fn detect_nat(&mut self, p: &[Payload], spi_r: u64) {
        let src = find_notify(p, notify::NAT_DETECTION_SOURCE_IP);
        let dst = find_notify(p, notify::NAT_DETECTION_DESTINATION_IP);
        if let (Some(s), Some(d)) = (src, dst) {
            let peer_behind = s.data != nat_hash(self.spi_i, spi_r, self.cfg.remote);
            let we_behind = d.data != nat_hash(self.spi_i, spi_r, self.cfg.local);
            self.nat = peer_behind || we_behind || self.cfg.force_encap;
        } else {
            self.nat = self.cfg.force_encap;
        }
        if self.nat {
            // §2.23: move to port 4500 from IKE_AUTH on.
            self.port = NAT_T_PORT;
        }
    }

    fn header(&self, exch: u8, mid: u32, response: bool) -> Header {
        let mut f = 0;
        if self.role == Role::Initiator {
            f |= flags::INITIATOR;
        }
        if response {
            f |= flags::RESPONSE;
        }
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next_payload: 0,
            major: 2,
            minor: 0,
            exchange: exch,
            flags: f,
            message_id: mid,
            length: 0,
        }
    }

    fn derive(&mut self, suite: IkeSuite, peer_public: &[u8]) -> Result<(), String> {
        let dh = self.dh.as_ref().ok_or("no key exchange state")?;
        let shared = dh.shared(peer_public).map_err(|e| e.to_string())?;
        let lens = KeyLengths {
            enc: suite.encr.key_material_len(),
            integ: suite.integ.key_len(),
        };
        let keys = derive_ike_keys(
            suite.prf,
            &self.ni,
            &self.nr,
            &shared,
            (self.spi_i, self.spi_r),
            lens,
        );
        let (out_e, out_a, in_e, in_a) = match self.role {
            Role::Initiator => (&keys.sk_ei, &keys.sk_ai, &keys.sk_er, &keys.sk_ar),
            Role::Responder => (&keys.sk_er, &keys.sk_ar, &keys.sk_ei, &keys.sk_ai),
        };
        let bad = |e| format!("keys for {suite}: {e:?}");
        self.sk_out = Some(SkCrypto::new(suite.encr, suite.integ, out_e, out_a).map_err(bad)?);
        self.sk_in = Some(SkCrypto::new(suite.encr, suite.integ, in_e, in_a).map_err(bad)?);
        self.keys = Some(keys);
        self.suite = Some(suite);
        Ok(())
    }

    fn on_init_response(&mut self, now: u64, msg: &Message, raw: &[u8], rng: &mut dyn Random) {
        let p = &msg.payloads;
        if let Some(c) = find_notify(p, notify::COOKIE) {
            if self.cookie.is_none() {
                tracing::info!(conn = %self.cfg.name, "responder asked for a cookie; retrying");
                self.cookie = Some(c.data.clone());
                let g = self.dh.as_ref().map_or(Group::Curve25519, |d| d.group);
                self.send_init(now, g, rng);
                return;
            }
        }
        if let Some(ke) = find_notify(p, notify::INVALID_KE_PAYLOAD) {
            let want = (ke.data.len() == 2).then(|| u16::from_be_bytes([ke.data[0], ke.data[1]]));
            let ours = want
                .and_then(Group::from_iana)
                .filter(|g| self.cfg.ike.iter().any(|x| x.groups.contains(g)));
            let tried = self.dh.as_ref().map(|d| d.group);
            match ours {
                Some(g) if Some(g) != tried => {
                    tracing::info!(conn = %self.cfg.name, "responder wants key exchange group {}; retrying", g.name());
                    self.send_init(now, g, rng);
                }
                _ => self.fail(format!(
                    "responder wants key exchange group {}, which we do not offer (we offered {})",
                    want.map_or("?".into(), |w| Group::from_iana(w)
                        .map_or(format!("{w}"), |g| g.name().into())),
                    self.offered_ike()
                )),
            }
            return;
        }
        if let Some(e) = error_notify(p) {
            let why = if e == notify::NO_PROPOSAL_CHOSEN {
                format!(
                    "responder accepted none of our IKE proposals (we offered {})",
                    self.offered_ike()
                )
            } else {
                format!("responder refused IKE_SA_INIT with {}", notify::name(e))
            };
            self.fail(why);
            return;
        }
        let sa = first!(p, Payload::Sa(props) => props);
        let ke = first!(p, Payload::Ke { group, data } => (*group, data));
        let nr = first!(p, Payload::Nonce(d) => d);
        let (Some(props), Some((group, kex)), Some(nr)) = (sa, ke, nr) else {
            self.fail("IKE_SA_INIT response lacks SA, KE or nonce".into());
            return;
        };
        // The responder must pick one of ours, whole (§2.7).
        let chosen = match props.as_slice() {
            [one] => IkeProposal::choose(&self.cfg.ike, std::slice::from_ref(one)),
            _ => None,
        };
        let Some((_, suite)) = chosen else {
            self.fail(format!(
                "responder chose a proposal we did not offer ({})",
                props.first().map(describe).unwrap_or_default()
            ));
            return;
        };
        if self.dh.as_ref().map(|d| d.group.iana()) != Some(group) || suite.group.iana() != group {
            self.fail(format!(
                "responder's KE is for group {group}, not the one chosen"
            ));
            return;
        }
        if !(16..=256).contains(&nr.len()) {
            self.fail("responder's nonce has a bad length (§3.9)".into());
            return;
        }
        self.spi_r = msg.header.spi_r;
        self.nr = nr.clone();
        self.init_response = raw.to_vec();
        if let Err(e) = self.derive(suite, kex) {
            self.fail(format!("key exchange with the responder failed: {e}"));
            return;
        }
        self.detect_nat(p, self.spi_r);
        tracing::info!(conn = %self.cfg.name, %suite, nat = self.nat, "IKE_SA_INIT done");
        self.send_auth(now, rng);
    }

    fn offered_ike(&self) -> String {
        self.cfg
            .ike
            .iter()
            .enumerate()
            .map(|(i, p)| describe(&p.to_wire(i as u8 + 1)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn offered_esp(&self) -> String {
        self.cfg
            .esp
            .iter()
            .enumerate()
            .map(|(i, p)| describe(&p.to_wire(i as u8 + 1, 0)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn my_auth(&self) -> Vec<u8> {
        let suite = self.suite.expect("derived");
        let keys = self.keys.as_ref().expect("derived");
        let id = parse_id(&self.cfg.local_id);
        let (first, peer_nonce, sk_p) = match self.role {
            Role::Initiator => (&self.init_request, &self.nr, &keys.sk_pi),
            Role::Responder => (&self.init_response, &self.ni, &keys.sk_pr),
        };
        psk_auth(suite.prf, &self.cfg.psk, first, peer_nonce, sk_p, &id).to_vec()
    }

    fn peer_auth_ok(&self, id: &super::wire::Id, auth: &[u8]) -> bool {
        let suite = self.suite.expect("derived");
        let keys = self.keys.as_ref().expect("derived");
        let (first, peer_nonce, sk_p) = match self.role {
            Role::Initiator => (&self.init_response, &self.ni, &keys.sk_pr),
            Role::Responder => (&self.init_request, &self.nr, &keys.sk_pi),
        };
        auth_matches(
            &psk_auth(suite.prf, &self.cfg.psk, first, peer_nonce, sk_p, id),
            auth,
        )
    }

    fn seal(&self, header: Header, payloads: &[Payload], rng: &mut dyn Random) -> Vec<u8> {
        let sk = self.sk_out.as_ref().expect("keys derived");
        let mut iv = vec![0u8; sk.iv_len()];
        rng.fill(&mut iv);
        sk.seal(header, payloads, &iv).expect("lengths are ours")
    }

    fn send_auth(&mut self, now: u64, rng: &mut dyn Random) {
        let mut inner = vec![Payload::IdI(parse_id(&self.cfg.local_id))];
        inner.push(Payload::Auth {
            method: AUTH_PSK,
            data: self.my_auth(),
        });
        if self.cfg.transport {
            inner.push(n(notify::USE_TRANSPORT_MODE, vec![]));
        }
        inner.push(Payload::Sa(
            self.cfg
                .esp
                .iter()
                .enumerate()
                .map(|(i, p)| p.to_wire(i as u8 + 1, self.child_spi))
                .collect(),
        ));
        inner.push(Payload::TsI(self.cfg.local_ts.clone()));
        inner.push(Payload::TsR(self.cfg.remote_ts.clone()));
        let h = self.header(exchange::IKE_AUTH, self.next_mid, false);
        let msg = self.seal(h, &inner, rng);
        self.state = State::AuthSent;
        self.request(now, msg);
    }

    fn on_auth_response(&mut self, p: &[Payload]) {
        let has_auth = p.iter().any(|x| matches!(x, Payload::Auth { .. }));
        // Without AUTH, an error notify is about the IKE SA itself (§2.21.2); with it, the
        // IKE SA is up and the notify concerns the Child SA (§2.21.3).
        if let (false, Some(e)) = (has_auth, error_notify(p)) {
            let why = match e {
                notify::AUTHENTICATION_FAILED => format!(
                    "the responder rejected our authentication (AUTHENTICATION_FAILED): check the pre-shared key and that it expects our ID {}",
                    self.cfg.local_id
                ),
                _ => format!("the responder refused IKE_AUTH with {}", notify::name(e)),
            };
            self.fail(why);
            return;
        }
        let idr = first!(p, Payload::IdR(i) => i);
        let auth = first!(p, Payload::Auth { method, data } => (*method, data));
        let (Some(idr), Some((method, auth))) = (idr, auth) else {
            self.fail("IKE_AUTH response lacks IDr or AUTH".into());
            return;
        };
        let want = parse_id(&self.cfg.remote_id);
        if *idr != want {
            self.fail(format!(
                "the responder identified as {}, but we expect {}",
                show_id(idr),
                self.cfg.remote_id
            ));
            return;
        }
        if method != AUTH_PSK || !self.peer_auth_ok(idr, auth) {
            self.fail(format!(
                "the responder's AUTH did not verify: the pre-shared key for {} differs from ours",
                show_id(idr)
            ));
            return;
        }
        self.state = State::Established;
        let suite = self.suite.expect("derived");
        self.events.push(Event::Established {
            suite,
            nat: self.nat,
        });
        tracing::info!(conn = %self.cfg.name, peer = %show_id(idr), "IKE SA established");
        // The first Child SA (or why there is none: the IKE SA stays up, §1.2).
        let sa = first!(p, Payload::Sa(props) => props);
        let tsi = first!(p, Payload::TsI(t) => t);
        let tsr = first!(p, Payload::TsR(t) => t);
        let (Some(props), Some(tsi), Some(tsr)) = (sa, tsi, tsr) else {
            let reason = match error_notify(p) {
                Some(e @ notify::NO_PROPOSAL_CHOSEN) => format!(
                    "the responder refused the Child SA with {}: it accepts none of our ESP proposals ({})",
                    notify::name(e),
                    self.offered_esp()
                ),
                Some(e @ notify::TS_UNACCEPTABLE) => format!(
                    "the responder refused the Child SA with {}: our traffic selectors {} === {} are outside its policy",
                    notify::name(e),
                    self.cfg.local_ts.iter().map(show_ts).collect::<Vec<_>>().join(","),
                    self.cfg.remote_ts.iter().map(show_ts).collect::<Vec<_>>().join(",")
                ),
                Some(e) => format!("the responder refused the Child SA with {}", notify::name(e)),
                None => "the responder created no Child SA".into(),
            };
            tracing::warn!(conn = %self.cfg.name, "{reason}");
            self.events.push(Event::Failed { reason });
            return;
        };
        let Some((_, spi, chosen)) = EspProposal::choose(&self.cfg.esp, props) else {
            self.events.push(Event::Failed {
                reason: format!(
                    "the responder chose an ESP proposal we did not offer ({})",
                    props.first().map(describe).unwrap_or_default()
                ),
            });
            return;
        };
        if !child::within(tsi, &self.cfg.local_ts) || !child::within(tsr, &self.cfg.remote_ts) {
            self.events.push(Event::Failed {
                reason: "the responder's traffic selectors are not within ours".into(),
            });
            return;
        }
        let transport = find_notify(p, notify::USE_TRANSPORT_MODE).is_some();
        let ck = child::child_keys(
            suite.prf,
            &self.keys.as_ref().expect("derived").sk_d,
            &self.ni,
            &self.nr,
            chosen.transform,
        );
        self.child_up(
            spi,
            chosen,
            ck.r_to_i,
            ck.i_to_r,
            tsi.clone(),
            tsr.clone(),
            transport,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn child_up(
        &mut self,
        outbound_spi: u32,
        proposal: EspProposal,
        keys_in: SaKeys,
        keys_out: SaKeys,
        local_ts: Vec<Ts>,
        remote_ts: Vec<Ts>,
        transport: bool,
    ) {
        tracing::info!(
            conn = %self.cfg.name,
            inbound_spi = format_args!("{:#010x}", self.child_spi),
            outbound_spi = format_args!("{:#010x}", outbound_spi),
            local_ts = %local_ts.iter().map(show_ts).collect::<Vec<_>>().join(","),
            remote_ts = %remote_ts.iter().map(show_ts).collect::<Vec<_>>().join(","),
            "Child SA up"
        );
        self.child = Some((self.child_spi, outbound_spi));
        self.events.push(Event::ChildUp(ChildSa {
            inbound_spi: self.child_spi,
            outbound_spi,
            proposal,
            keys_in,
            keys_out,
            local_ts,
            remote_ts,
            transport,
            local: self.cfg.local.ip(),
            remote: self.cfg.remote.ip(),
            udp_encap: self.nat.then_some((NAT_T_PORT, NAT_T_PORT)),
        }));
    }

    // ---- responder -------------------------------------------------------------------

    /// Answer an IKE_SA_INIT request for `cfg`. `Ok` holds the new SA (its events carry
    /// the response); `Err` holds the stateless answer to send (no SA is kept).
    pub fn respond(
        cfg: Connection,
        now: u64,
        raw: &[u8],
        rng: &mut dyn Random,
        child_spi: u32,
    ) -> Result<IkeSa, Vec<Event>> {
        let mut sa = IkeSa::new(cfg, Role::Responder, child_spi);
        let _ = now;
        let reject = |sa: &mut IkeSa, hdr: Header, kind: u16, data: Vec<u8>, why: String| {
            tracing::warn!(conn = %sa.cfg.name, "{why}");
            let msg = Message {
                header: Header {
                    spi_r: 0,
                    flags: flags::RESPONSE,
                    next_payload: 0,
                    length: 0,
                    ..hdr
                },
                payloads: vec![n(kind, data)],
            }
            .emit();
            sa.send(msg);
            sa.events.push(Event::Failed { reason: why });
            std::mem::take(&mut sa.events)
        };
        let msg = match Message::parse(raw) {
            Ok(m) => m,
            Err(e) => {
                sa.events.push(Event::Failed {
                    reason: format!("malformed IKE_SA_INIT from {}: {e}", sa.cfg.remote),
                });
                return Err(sa.events);
            }
        };
        let hdr = msg.header;
        let p = &msg.payloads;
        let sa_p = first!(p, Payload::Sa(props) => props);
        let ke = first!(p, Payload::Ke { group, data } => (*group, data));
        let ni = first!(p, Payload::Nonce(d) => d);
        let (Some(props), Some((group, kex)), Some(ni)) = (sa_p, ke, ni) else {
            return Err(reject(
                &mut sa,
                hdr,
                notify::INVALID_SYNTAX,
                vec![],
                "IKE_SA_INIT without SA, KE or nonce".into(),
            ));
        };
        let Some((number, suite)) = IkeProposal::choose(&sa.cfg.ike, props) else {
            let theirs = props.iter().map(describe).collect::<Vec<_>>().join(", ");
            let ours = sa.offered_ike();
            return Err(reject(
                &mut sa,
                hdr,
                notify::NO_PROPOSAL_CHOSEN,
                vec![],
                format!(
                    "no IKE proposal in common: the initiator offered {theirs}; we accept {ours}"
                ),
            ));
        };
        if suite.group.iana() != group {
            let why = format!(
                "the initiator's KE is for group {group}; we chose {}: asking it to retry (INVALID_KE_PAYLOAD)",
                suite.group.name()
            );
            return Err(reject(
                &mut sa,
                hdr,
                notify::INVALID_KE_PAYLOAD,
                suite.group.iana().to_be_bytes().to_vec(),
                why,
            ));
        }
        if !(16..=256).contains(&ni.len()) {
            return Err(reject(
                &mut sa,
                hdr,
                notify::INVALID_SYNTAX,
                vec![],
                "nonce of a bad length".into(),
            ));
        }
        sa.spi_i = hdr.spi_i;
        sa.spi_r = random_spi(rng);
        sa.ni = ni.clone();
        sa.nr = vec![0u8; 32];
        rng.fill(&mut sa.nr);
        sa.dh = Some(Self::keypair(suite.group, rng));
        sa.init_request = raw.to_vec();
        if let Err(e) = sa.derive(suite, kex) {
            return Err(reject(
                &mut sa,
                hdr,
                notify::INVALID_SYNTAX,
                vec![],
                format!("key exchange failed: {e}"),
            ));
        }
        sa.detect_nat(p, 0);
        let mut payloads = vec![
            Payload::Sa(vec![suite.to_wire(number)]),
            Payload::Ke {
                group: suite.group.iana(),
                data: sa.dh.as_ref().expect("set").public.clone(),
            },
            Payload::Nonce(sa.nr.clone()),
        ];
        let mut our = sa.cfg.local;
        if sa.cfg.force_encap {
            our.set_port(our.port() ^ 0x5a5a);
        }
        payloads.push(n(
            notify::NAT_DETECTION_SOURCE_IP,
            nat_hash(sa.spi_i, sa.spi_r, our),
        ));
        payloads.push(n(
            notify::NAT_DETECTION_DESTINATION_IP,
            nat_hash(sa.spi_i, sa.spi_r, sa.cfg.remote),
        ));
        let resp = Message {
            header: sa.header(exchange::IKE_SA_INIT, 0, true),
            payloads,
        }
        .emit();
        sa.init_response = resp.clone();
        sa.last_response = Some((0, resp.clone()));
        sa.peer_mid = 1;
        sa.state = State::InitDone;
        // The IKE_SA_INIT response goes back where the request came from.
        let port = sa.port;
        sa.port = sa.cfg.local.port();
        sa.send(resp);
        sa.port = port;
        tracing::info!(conn = %sa.cfg.name, %suite, nat = sa.nat, "IKE_SA_INIT answered");
        Ok(sa)
    }

    fn on_auth_request(&mut self, mid: u32, p: &[Payload], rng: &mut dyn Random) {
        let idi = first!(p, Payload::IdI(i) => i);
        let auth = first!(p, Payload::Auth { method, data } => (*method, data));
        let respond = |sa: &mut IkeSa, payloads: Vec<Payload>, rng: &mut dyn Random| {
            let h = sa.header(exchange::IKE_AUTH, mid, true);
            let msg = sa.seal(h, &payloads, rng);
            sa.last_response = Some((mid, msg.clone()));
            sa.send(msg);
        };
        let (Some(idi), Some((method, auth))) = (idi, auth) else {
            respond(self, vec![n(notify::INVALID_SYNTAX, vec![])], rng);
            self.fail("IKE_AUTH request lacks IDi or AUTH".into());
            return;
        };
        let want = parse_id(&self.cfg.remote_id);
        if *idi != want || method != AUTH_PSK || !self.peer_auth_ok(idi, auth) {
            respond(self, vec![n(notify::AUTHENTICATION_FAILED, vec![])], rng);
            let why = if *idi != want {
                format!(
                    "the initiator identified as {}, but this connection expects {}",
                    show_id(idi),
                    self.cfg.remote_id
                )
            } else {
                format!(
                    "the initiator {}'s AUTH did not verify: its pre-shared key differs from ours",
                    show_id(idi)
                )
            };
            self.fail(why);
            return;
        }
        let suite = self.suite.expect("derived");
        let mut out = vec![
            Payload::IdR(parse_id(&self.cfg.local_id)),
            Payload::Auth {
                method: AUTH_PSK,
                data: self.my_auth(),
            },
        ];
        self.state = State::Established;
        self.events.push(Event::Established {
            suite,
            nat: self.nat,
        });
        tracing::info!(conn = %self.cfg.name, peer = %show_id(idi), "IKE SA established");
        // The first Child SA.
        let sa_p = first!(p, Payload::Sa(props) => props);
        let tsi = first!(p, Payload::TsI(t) => t);
        let tsr = first!(p, Payload::TsR(t) => t);
        if let (Some(props), Some(tsi), Some(tsr)) = (sa_p, tsi, tsr) {
            let transport = find_notify(p, notify::USE_TRANSPORT_MODE).is_some();
            match EspProposal::choose(&self.cfg.esp, props) {
                None => {
                    let why = format!(
                        "no ESP proposal in common: the initiator offered {}; we accept {}",
                        props.iter().map(describe).collect::<Vec<_>>().join(", "),
                        self.offered_esp()
                    );
                    tracing::warn!(conn = %self.cfg.name, "{why}");
                    self.events.push(Event::Failed { reason: why });
                    out.push(n(notify::NO_PROPOSAL_CHOSEN, vec![]));
                }
                Some((number, spi, chosen)) => {
                    // TSi is the initiator's side: our remote; TSr ours.
                    let ni = child::narrow(tsi, &self.cfg.remote_ts);
                    let nr = child::narrow(tsr, &self.cfg.local_ts);
                    if ni.is_empty() || nr.is_empty() || transport != self.cfg.transport {
                        let why = if transport != self.cfg.transport {
                            format!(
                                "the initiator wants {} mode, this connection is {} mode",
                                if transport { "transport" } else { "tunnel" },
                                if self.cfg.transport {
                                    "transport"
                                } else {
                                    "tunnel"
                                }
                            )
                        } else {
                            format!(
                                "traffic selectors unacceptable: the initiator proposed {} === {}; we allow {} === {}",
                                tsi.iter().map(show_ts).collect::<Vec<_>>().join(","),
                                tsr.iter().map(show_ts).collect::<Vec<_>>().join(","),
                                self.cfg.remote_ts.iter().map(show_ts).collect::<Vec<_>>().join(","),
                                self.cfg.local_ts.iter().map(show_ts).collect::<Vec<_>>().join(",")
                            )
                        };
                        tracing::warn!(conn = %self.cfg.name, "{why}");
                        self.events.push(Event::Failed { reason: why });
                        out.push(n(notify::TS_UNACCEPTABLE, vec![]));
                    } else {
                        if transport {
                            out.push(n(notify::USE_TRANSPORT_MODE, vec![]));
                        }
                        out.push(Payload::Sa(vec![chosen.to_wire(number, self.child_spi)]));
                        out.push(Payload::TsI(ni.clone()));
                        out.push(Payload::TsR(nr.clone()));
                        let ck = child::child_keys(
                            suite.prf,
                            &self.keys.as_ref().expect("derived").sk_d,
                            &self.ni,
                            &self.nr,
                            chosen.transform,
                        );
                        self.child_up(spi, chosen, ck.i_to_r, ck.r_to_i, nr, ni, transport);
                    }
                }
            }
        }
        respond(self, out, rng);
    }

    // ---- both ------------------------------------------------------------------------

    /// A datagram for this SA arrived.
    pub fn handle(&mut self, now: u64, raw: &[u8], rng: &mut dyn Random) {
        if self.state == State::Dead {
            return;
        }
        let hdr = match super::wire::Header::parse(raw) {
            Ok(h) => h,
            Err(_) => return,
        };
        if hdr.is_response() {
            let Some(pending) = &self.pending else { return };
            if hdr.message_id != pending.mid {
                return; // a stale or forged response (§2.3)
            }
            if hdr.exchange == exchange::IKE_SA_INIT {
                match Message::parse(raw) {
                    Ok(m) => {
                        self.pending = None;
                        self.on_init_response(now, &m, raw, rng)
                    }
                    Err(e) => tracing::debug!("ignoring a malformed IKE_SA_INIT response: {e}"),
                }
                return;
            }
            let Some(sk) = &self.sk_in else { return };
            let Ok((_, p)) = sk.open(raw) else {
                // §2.21: a response that does not verify is dropped; retransmissions go on.
                return;
            };
            self.pending = None;
            match (hdr.exchange, self.state) {
                (exchange::IKE_AUTH, State::AuthSent) => self.on_auth_response(&p),
                (exchange::INFORMATIONAL, State::Deleting) => {
                    self.state = State::Dead;
                    self.events.push(Event::Closed);
                }
                _ => {}
            }
            return;
        }
        // A request from the peer.
        if let Some((mid, resp)) = &self.last_response {
            if hdr.message_id == *mid {
                // §2.1: a retransmitted request gets the same response again.
                let r = resp.clone();
                self.send(r);
                return;
            }
        }
        if hdr.message_id != self.peer_mid {
            return; // outside the window of one (§2.3)
        }
        let Some(sk) = &self.sk_in else { return };
        let Ok((_, p)) = sk.open(raw) else { return };
        self.peer_mid += 1;
        match (hdr.exchange, self.state) {
            (exchange::IKE_AUTH, State::InitDone) => {
                // NAT-T: the initiator moved to 4500 (§2.23); answer from there.
                if self.nat {
                    self.port = NAT_T_PORT;
                }
                self.on_auth_request(hdr.message_id, &p, rng)
            }
            (exchange::INFORMATIONAL, State::Established | State::Deleting) => {
                self.on_informational(hdr.message_id, &p, rng)
            }
            _ => {}
        }
    }

    fn on_informational(&mut self, mid: u32, p: &[Payload], rng: &mut dyn Random) {
        let mut reply = Vec::new();
        let mut closed = false;
        for d in p.iter().filter_map(|x| match x {
            Payload::Delete(d) => Some(d),
            _ => None,
        }) {
            if d.protocol == PROTO_IKE {
                closed = true;
            } else if d.protocol == PROTO_ESP {
                if let Some((inb, outb)) = self.child {
                    if d.spis.iter().any(|s| s.as_slice() == outb.to_be_bytes()) {
                        // §1.4.1: answer with the SPI of our half.
                        reply.push(Payload::Delete(Delete {
                            protocol: PROTO_ESP,
                            spi_size: 4,
                            spis: vec![inb.to_be_bytes().to_vec()],
                        }));
                        self.child = None;
                        self.events.push(Event::ChildDown {
                            inbound_spi: inb,
                            outbound_spi: outb,
                        });
                    }
                }
            }
        }
        let h = self.header(exchange::INFORMATIONAL, mid, true);
        let msg = self.seal(h, &reply, rng);
        self.last_response = Some((mid, msg.clone()));
        self.send(msg);
        if closed {
            if let Some((inb, outb)) = self.child.take() {
                self.events.push(Event::ChildDown {
                    inbound_spi: inb,
                    outbound_spi: outb,
                });
            }
            tracing::info!(conn = %self.cfg.name, "the peer deleted the IKE SA");
            self.state = State::Dead;
            self.events.push(Event::Closed);
        }
    }

    /// Delete the IKE SA (and its child) — INFORMATIONAL with a Delete payload.
    pub fn delete(&mut self, now: u64, rng: &mut dyn Random) {
        if self.state != State::Established {
            self.state = State::Dead;
            self.events.push(Event::Closed);
            return;
        }
        if let Some((inb, outb)) = self.child.take() {
            self.events.push(Event::ChildDown {
                inbound_spi: inb,
                outbound_spi: outb,
            });
        }
        let d = Payload::Delete(Delete {
            protocol: PROTO_IKE,
            spi_size: 0,
            spis: vec![],
        });
        let h = self.header(exchange::INFORMATIONAL, self.next_mid, false);
        let msg = self.seal(h, &[d], rng);
        self.state = State::Deleting;
        self.request(now, msg);
    }

    /// An empty INFORMATIONAL request: is the peer alive (§1.4)?
    pub fn liveness_check(&mut self, now: u64, rng: &mut dyn Random) {
        if self.state != State::Established || self.pending.is_some() {
            return;
        }
        let h = self.header(exchange::INFORMATIONAL, self.next_mid, false);
        let msg = self.seal(h, &[], rng);
        self.request(now, msg);
    }

    /// When [`IkeSa::on_timeout`] should next run.
    pub fn next_timeout(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.next_at)
    }

    /// Retransmit with exponential backoff (§2.1), or give up.
    pub fn on_timeout(&mut self, now: u64) {
        let Some(p) = self.pending.as_ref() else {
            return;
        };
        if now < p.next_at {
            return;
        }
        let tries = p.tries;
        if tries >= self.cfg.retransmit_tries {
            let what = match self.state {
                State::InitSent => "IKE_SA_INIT",
                State::AuthSent => "IKE_AUTH",
                State::Deleting => "the delete",
                _ => "our request",
            };
            let why = format!(
                "no answer from {} to {what} after {tries} tries: is the peer up, and does it listen on UDP {}?",
                self.cfg.remote,
                self.remote_addr().port()
            );
            if self.state == State::Deleting {
                self.state = State::Dead;
                self.pending = None;
                self.events.push(Event::Closed);
            } else {
                self.fail(why);
            }
            return;
        }
        let base = self.cfg.retransmit_ms;
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        p.tries += 1;
        p.next_at = now + (base << (p.tries - 1).min(10));
        let data = p.data.clone();
        self.send(data);
    }

    /// The IKE_SA_INIT request we sent (tests; and the responder's view of it).
    pub fn first_message(&self) -> &[u8] {
        &self.init_request
    }
}

/// RFC 7296 §2.6: stateless cookies. The responder, when loaded, answers an IKE_SA_INIT
/// without a valid cookie with one: hash(Ni | IPi | SPIi | secret).
pub struct CookieJar {
    secret: [u8; 32],
}

impl CookieJar {
    pub fn new(secret: [u8; 32]) -> CookieJar {
        CookieJar { secret }
    }

    fn cookie(&self, ni: &[u8], ip: IpAddr, spi_i: u64) -> Vec<u8> {
        let mut h = sha2::Sha256::new();
        sha2::Digest::update(&mut h, ni);
        match ip {
            IpAddr::V4(a) => sha2::Digest::update(&mut h, a.octets()),
            IpAddr::V6(a) => sha2::Digest::update(&mut h, a.octets()),
        }
        sha2::Digest::update(&mut h, spi_i.to_be_bytes());
        sha2::Digest::update(&mut h, self.secret);
        sha2::Digest::finalize(h).to_vec()
    }

    /// `None`: the request carries a valid cookie, go on. `Some(response)`: send it and
    /// keep no state.
    pub fn check(&self, raw: &[u8], from: IpAddr) -> Option<Vec<u8>> {
        let m = Message::parse(raw).ok()?;
        let ni = first!(m.payloads, Payload::Nonce(d) => d)?;
        let want = self.cookie(ni, from, m.header.spi_i);
        if find_notify(&m.payloads, notify::COOKIE).is_some_and(|c| c.data == want) {
            return None;
        }
        Some(
            Message {
                header: Header {
                    spi_r: 0,
                    flags: flags::RESPONSE,
                    next_payload: 0,
                    length: 0,
                    ..m.header
                },
                payloads: vec![n(notify::COOKIE, want)],
            }
            .emit(),
        )
    }
}

/// RFC 7296 §2.5: a request with a higher major version gets INVALID_MAJOR_VERSION, in a
/// version-2 header, naming the highest version we speak. `None` for anything else
/// (responses are never answered; IKEv1, major 1, is dropped by the caller).
pub fn invalid_major_version(raw: &[u8]) -> Option<Vec<u8>> {
    let h = Header::parse(raw).ok()?;
    if h.major <= 2 || h.is_response() {
        return None;
    }
    Some(
        Message {
            header: Header {
                major: 2,
                minor: 0,
                flags: flags::RESPONSE,
                next_payload: 0,
                length: 0,
                ..h
            },
            payloads: vec![n(notify::INVALID_MAJOR_VERSION, vec![0x20])],
        }
        .emit(),
    )
}

impl IkeSa {
    /// Whether a NAT was found (or forced): the shell sends NAT keepalives (RFC 3948 §2.3).
    pub fn behind_nat(&self) -> bool {
        self.nat && self.state == State::Established
    }
    /// The negotiated suite, once IKE_SA_INIT is done.
    pub fn suite(&self) -> Option<IkeSuite> {
        self.suite
    }
    /// (our inbound SPI, outbound SPI) of the Child SA, when up.
    pub fn child_spis(&self) -> Option<(u32, u32)> {
        self.child
    }
}

/// The exchange type and whether it is a response, without parsing further (dispatch).
pub fn peek(raw: &[u8]) -> Option<Header> {
    (raw.len() >= HEADER_LEN)
        .then(|| Header::parse(raw).ok())
        .flatten()
}

/// Is this an IKE_SA_INIT request (a new SA)?
pub fn is_init_request(h: &Header) -> bool {
    h.exchange == exchange::IKE_SA_INIT
        && !h.is_response()
        && h.spi_r == 0
        && h.next_payload != payload::NONE
}
