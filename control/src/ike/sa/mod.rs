//! The IKE SA state machine (RFC 7296), sans-IO: fed datagrams (with the addresses and
//! ports they came from and to), the current time and random bytes; returns datagrams to
//! send, the next timer and events (SA up, Child SA keys, failures in plain words). No
//! sockets, clocks or randomness inside.
//!
//! The state is an enum whose variants carry what that state needs ([`IkeState`]): no
//! `Option` to `.expect()`. One request of ours is in flight at a time (window size 1,
//! §2.3); further ones wait in a queue and go out in order.
//!
//! For the daemon: drain [`IkeSa::poll_event`] after every call, in order; keep the SA
//! (routing its datagrams, calling [`IkeSa::handle_timeout`] at [`IkeSa::poll_timeout`])
//! until [`IkeSa::phase`] is [`Phase::Closed`]. After `Failed` it may still be `Deleting`
//! for a while: when we reject the responder's AUTH, `Failed` comes at once and the
//! AUTHENTICATION_FAILED notice (§2.21.2) is retransmitted until answered; after `delete`,
//! `Closed` comes when the peer answers or the retransmissions run out.
//!
//! Modules: `init` (IKE_SA_INIT, NAT detection, COOKIE and INVALID_KE retries), `auth`
//! (IKE_AUTH with PSK and the first Child SA), `create_child` (Child SA negotiation, in
//! IKE_AUTH and CREATE_CHILD_SA), `informational` (Delete, DPD, error notifies), `rekey_ike`
//! (IKE SA rekeying, its collisions and the IKE SA's lifetime), `stateless` (cookies and
//! version answers for the endpoint), `error` ([`IkeError`]).

mod auth;
mod create_child;
mod error;
mod informational;
mod init;
mod intermediate;
pub mod notify;
mod rekey_ike;
mod stateless;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use dataplane::crypto::SaKeys;
use zeroize::Zeroizing;

use super::child::{ChildCfg, EspProposal};
use super::dh::KeyPair;
use super::frag::{self, FragMode, FragStats, Reassembler};
use super::keys::Secret;
use super::proposal::{IkeProposal, IkeSuite};
use super::sk::{Opened, OpenedSk, SkCrypto};
use super::summary;
use super::wire::{self, exchange, flags, Header, Message, Notify, Payload, Ts, WireError};

pub use error::IkeError;
pub use stateless::{invalid_major_version, is_init_request, peek, CookieJar};

/// IKE's ports (RFC 7296 §2.23, RFC 3948).
pub const IKE_PORT: u16 = 500;
pub const NAT_T_PORT: u16 = 4500;

/// One connection, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    pub name: String,
    /// First local address, port 500.
    pub local: SocketAddr,
    /// First remote address, port 500.
    pub remote: SocketAddr,
    pub local_id: String,
    pub remote_id: String,
    pub psk: Zeroizing<Vec<u8>>,
    pub ike: Vec<IkeProposal>,
    /// Never empty.
    pub children: Vec<ChildCfg>,
    /// Pretend a NAT is there: UDP-encapsulate ESP regardless (strongSwan `encap = yes`).
    pub force_encap: bool,
    /// First retransmission after this many milliseconds, then doubling.
    pub retransmit_ms: u64,
    pub retransmit_tries: u32,
    /// When the IKE SA is rekeyed and expires.
    pub lifetime: super::lifetime::IkeLifetime,
    /// How each side authenticates (PSK or certificates) and with what.
    pub auth: crate::pki::AuthConfig,
    /// IKE fragmentation (RFC 7383).
    pub fragmentation: super::frag::FragConfig,
}

/// Random bytes, supplied by the caller (a CSPRNG in the daemon, a seeded one in tests).
pub trait Random {
    fn fill(&mut self, buf: &mut [u8]);
}

/// Inbound SPIs in the dataplane's table form; the daemon core implements it.
pub trait SpiAllocator {
    fn alloc_spi(&mut self) -> u32;
}

/// A Child SA to negotiate: `child` indexes [`Connection::children`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildRequest {
    pub child: usize,
    pub inbound_spi: u32,
}

/// A negotiated Child SA, ready to install.
pub struct ChildSa {
    /// The child's name in the configuration.
    pub name: String,
    /// Our SPI: ESP arriving with it is ours.
    pub inbound_spi: u32,
    pub outbound_spi: u32,
    pub proposal: EspProposal,
    pub keys_in: SaKeys,
    pub keys_out: SaKeys,
    /// The narrowed selectors that were negotiated (§2.9), not the configured ones.
    pub local_ts: Vec<Ts>,
    pub remote_ts: Vec<Ts>,
    pub transport: bool,
    pub local: IpAddr,
    pub remote: IpAddr,
    /// UDP encapsulation (local port, remote port) when a NAT was found or forced; the
    /// remote port is the peer's NAT-mapped one.
    pub udp_encap: Option<(u16, u16)>,
    /// RFC 9611: the resource (dataplane worker) this per-resource Child SA is bound to on
    /// our side; `None` for an ordinary (fallback) Child SA.
    pub resource: Option<u16>,
    /// RFC 9611 §4: we initiated this fallback Child SA with SA_RESOURCE_INFO and the peer
    /// answered with it too: negotiate the per-resource Child SAs now.
    pub add_resources: bool,
}

impl std::fmt::Debug for ChildSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSa")
            .field("name", &self.name)
            .field("inbound_spi", &format_args!("{:#010x}", self.inbound_spi))
            .field("outbound_spi", &format_args!("{:#010x}", self.outbound_spi))
            .field("proposal", &self.proposal)
            .field("keys", &"<redacted>")
            .field("local_ts", &self.local_ts)
            .field("remote_ts", &self.remote_ts)
            .field("udp_encap", &self.udp_encap)
            .finish()
    }
}

/// A Child SA of this IKE SA, as listed (no keys).
#[derive(Debug, Clone, PartialEq)]
pub struct ChildInfo {
    pub name: String,
    pub inbound_spi: u32,
    pub outbound_spi: u32,
    pub local_ts: Vec<Ts>,
    pub remote_ts: Vec<Ts>,
    pub transport: bool,
    pub proposal: EspProposal,
    /// When it came up, and when it is due for a rekey and expires (daemon clock, ms).
    pub created_at: u64,
    pub rekey_at: Option<u64>,
    pub expire_at: Option<u64>,
    /// How many rekeys its line has been through (0 for a fresh Child SA).
    pub rekeys: u32,
    /// RFC 9611: the resource it is bound to on our side (kept across rekeys).
    pub resource: Option<u16>,
}

/// What the state machine wants done, or wants known.
#[derive(Debug)]
pub enum Event {
    /// Send from `from` (our address and port: 500, or 4500 with the non-ESP marker added
    /// by the shell) to `to`.
    Send {
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    },
    /// The IKE SA is authenticated.
    Established {
        suite: IkeSuite,
        nat: bool,
        peer_id: String,
        /// The peer sent INITIAL_CONTACT (§2.4): its other IKE SAs with us are stale.
        peer_initial_contact: bool,
    },
    ChildUp(ChildSa),
    ChildDown {
        name: String,
        inbound_spi: u32,
        outbound_spi: u32,
        by_peer: bool,
        /// Replaced by a rekey (§2.8): its successor carries the traffic; the daemon keeps
        /// the inbound SA a grace period for packets in flight, and runs no close_action.
        rekeyed: bool,
    },
    /// RFC 9611 §5.2: the peer takes no more per-resource Child SAs for this child
    /// (TS_MAX_QUEUE); our request with `inbound_spi` made none. Not a failure.
    ResourceRefused {
        name: String,
        inbound_spi: u32,
    },
    /// A Child SA rekey (either side started it, §1.3.3, §2.8) made `new`, which replaces
    /// the Child SA whose inbound SPI is `replaces`. Install `new`'s inbound SA now; its
    /// outbound SA now if `outbound_now` (we started the rekey: the peer has its inbound SA
    /// already), otherwise when [`Event::ChildOutbound`] names it. The old Child SA goes
    /// with a later `ChildDown { rekeyed: true }`.
    ChildRekeyed {
        replaces: u32,
        new: ChildSa,
        outbound_now: bool,
    },
    /// Switch the child's outbound traffic to the Child SA with this inbound SPI (the
    /// responder of a rekey: the initiator deleted the old SA, so it has the new one).
    ChildOutbound {
        name: String,
        inbound_spi: u32,
    },
    /// A new IKE SA the daemon must route to (by its `our_spi()`) and settle: the result of
    /// an IKE SA rekey (§1.3.2), carrying the Child SAs listed in its `children()` (moved
    /// from this one: re-point them), or a redundant SA of a rekey collision that deletes
    /// itself (§2.8.1).
    NewIkeSa(Box<IkeSa>),
    /// The Child SA could not be made; the IKE SA stays up (§1.2, §2.21.3).
    ChildFailed {
        name: String,
        error: IkeError,
    },
    /// The peer deleted (§1.4.1), on this IKE SA after we rekeyed it, the Child SA with
    /// this inbound SPI, which moved to the IKE SA that replaced this one (§2.8): the daemon
    /// passes it on there ([`IkeSa::peer_deleted_moved_child`]). Already answered.
    MovedChildDeleted {
        inbound_spi: u32,
    },
    /// The peer's NAT-mapped address or port changed (§2.23); ESP-in-UDP must follow.
    PeerMoved {
        remote: SocketAddr,
    },
    /// The IKE SA is dead (negotiation failed, peer dead, peer's error notify).
    Failed(IkeError),
    /// The IKE SA is gone (deleted by either side).
    Closed {
        by_peer: bool,
    },
    /// A message, payload or notify we did not act on, and why (for a debug line / counter).
    Ignored {
        what: String,
    },
    /// A line for the operator: what happened (`trace: false`), or one IKE message passing
    /// (`trace: true`, [`super::summary`]). The SA does not log through `tracing` itself: it
    /// hands its lines to the daemon, which logs each once with the connection, peer and IKE
    /// SPI as fields and keeps it for `vpnctl log` / `vpnctl trace` (`Daemon::event`). A line
    /// logged here and repeated by the daemon was the "every event twice" of issue 14; and
    /// lines kept as events reach `vpnctl`, which a `tracing` call in the core never could.
    /// Never a key, nonce, PSK or AUTH value in `message`.
    Log {
        level: tracing::Level,
        trace: bool,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// The IKE SA's life, coarsely (for the daemon and `vpnctl list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    Established,
    /// Our Delete (or our AUTHENTICATION_FAILED notice) is out, awaiting its answer.
    Deleting,
    Closed,
}

/// The keys of an IKE SA once IKE_SA_INIT is done: what every later message needs.
struct SkKeys {
    suite: IkeSuite,
    sk_d: Secret,
    sk_in: SkCrypto,
    sk_out: SkCrypto,
}

/// An IKE SA's SK_e and SK_a keys, borrowed (see [`IkeSa::key_material`]). SK_e carries
/// the salt for AEADs; SK_a is empty for them. `Debug` prints no key.
pub struct SkMaterial<'a> {
    pub suite: IkeSuite,
    pub sk_ei: &'a [u8],
    pub sk_er: &'a [u8],
    pub sk_ai: &'a [u8],
    pub sk_ar: &'a [u8],
}

impl std::fmt::Debug for SkMaterial<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SkMaterial {{ suite: {}, keys: <redacted> }}",
            self.suite
        )
    }
}

/// What IKE_AUTH needs beyond the keys (§2.15: the AUTH payload signs the first messages
/// and the peer's nonce).
struct Handshake {
    keys: SkKeys,
    sk_pi: Secret,
    sk_pr: Secret,
    ni: Vec<u8>,
    nr: Vec<u8>,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    /// RFC 9242 §3.3.2: `IntAuth_i | IntAuth_r | IKE_AUTH MID` when IKE_INTERMEDIATE
    /// exchanges ran, else empty; appended to both sides' signed octets.
    int_auth: Vec<u8>,
    /// The additional key exchanges still due and the IntAuth chains (intermediate.rs).
    inter: intermediate::Intermediate,
    /// RFC 7427 §4: the hashes the peer announced in SIGNATURE_HASH_ALGORITHMS; `None`
    /// without the notify (then we sign with the classic methods 1/9/10).
    peer_hashes: Option<Vec<super::sig::Hash>>,
    /// The peer's CERTREQ (RFC 7296 §3.7): the key hashes of the CAs it trusts; `None` if
    /// it sent none (then `send_cert = ifasked` sends no certificate).
    peer_certreq: Option<Vec<[u8; 20]>>,
}

/// What [`IkeSa::seal_bytes`] made: the datagrams, and what to say about them.
struct Sealed {
    datagrams: Vec<Vec<u8>>,
    /// The length of the whole message (before any fragmentation).
    whole_len: usize,
    /// Why a message that should have been fragmented goes whole.
    warning: Option<String>,
}

/// Initiator: IKE_SA_INIT sent.
struct InitSent {
    ni: Vec<u8>,
    dh: KeyPair,
    cookie: Option<Vec<u8>>,
    request: Vec<u8>,
    first: ChildRequest,
    initial_contact: bool,
}

enum IkeState {
    InitSent(Box<InitSent>),
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH until `expires`.
    InitDone {
        hs: Box<Handshake>,
        expires: u64,
    },
    /// Initiator: an IKE_INTERMEDIATE with an additional key exchange sent (RFC 9370).
    InterSent {
        hs: Box<Handshake>,
        first: ChildRequest,
        initial_contact: bool,
        pending: super::kem::Pending,
    },
    /// Initiator: IKE_AUTH sent.
    AuthSent {
        hs: Box<Handshake>,
        first: ChildRequest,
    },
    Established {
        keys: Box<SkKeys>,
    },
    /// Our Delete or AUTHENTICATION_FAILED notice is queued or out.
    Deleting {
        keys: Box<SkKeys>,
    },
    Closed,
}

/// A request of ours, by what its answer means.
#[derive(Debug, Clone)]
enum Req {
    Init,
    /// An additional key exchange of the setup (intermediate.rs).
    Intermediate,
    Auth,
    CreateChild {
        req: ChildRequest,
        ni: Vec<u8>,
    },
    DeleteChild {
        inbound_spi: u32,
    },
    DeleteIke,
    Dpd {
        started: u64,
        deadline: u64,
    },
    /// §2.21.2: we rejected the responder's AUTH and say so.
    AuthFailedNotice,
    /// Our IKE SA rekey (§1.3.2); what its answer needs is in `IkeSa::ike_rk`.
    RekeyIke,
    /// An additional key exchange of our CREATE_CHILD_SA (RFC 9370 §2.2.4).
    Followup,
}

impl Req {
    fn exchange(&self) -> u8 {
        match self {
            Req::Init => exchange::IKE_SA_INIT,
            Req::Auth => exchange::IKE_AUTH,
            Req::Intermediate => exchange::IKE_INTERMEDIATE,
            Req::CreateChild { .. } | Req::RekeyIke => exchange::CREATE_CHILD_SA,
            Req::Followup => exchange::IKE_FOLLOWUP_KE,
            _ => exchange::INFORMATIONAL,
        }
    }
    fn what(&self) -> &'static str {
        match self {
            Req::Init => "IKE_SA_INIT",
            Req::Auth => "IKE_AUTH",
            Req::Intermediate => "IKE_INTERMEDIATE",
            Req::CreateChild { .. } => "CREATE_CHILD_SA",
            Req::DeleteChild { .. } => "the Child SA delete",
            Req::DeleteIke => "the delete",
            Req::Dpd { .. } => "the DPD probe",
            Req::AuthFailedNotice => "the AUTHENTICATION_FAILED notice",
            Req::RekeyIke => "the IKE SA rekey",
            Req::Followup => "IKE_FOLLOWUP_KE",
        }
    }
}

/// Our request on the wire, retransmitted until answered (§2.1).
struct Outstanding {
    mid: u32,
    /// The datagrams: one message, or all its fragments (RFC 7383 §2.6.1: every one is
    /// retransmitted).
    data: Vec<Vec<u8>>,
    next_at: u64,
    tries: u32,
    req: Req,
}

/// A request waiting for the window (§2.3: one at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    CreateChild(ChildRequest),
    DeleteChild(u32),
    Dpd { started: u64, deadline: u64 },
    DeleteIke,
    AuthFailedNotice,
    RekeyIke,
    Followup,
}

/// One IKE SA.
pub struct IkeSa {
    cfg: Connection,
    role: Role,
    state: IkeState,
    spi_i: u64,
    spi_r: u64,
    suite: Option<IkeSuite>,
    /// Current addresses: port 4500 after NAT-T; `remote` follows NAT mapping changes.
    local: SocketAddr,
    remote: SocketAddr,
    /// NAT found or forced: ESP goes in UDP.
    nat: bool,
    /// What NAT detection found (§2.23): whether to follow the peer's address changes.
    peer_behind_nat: bool,
    we_behind_nat: bool,
    children: Vec<ChildInfo>,
    next_mid: u32,
    out: Option<Outstanding>,
    queue: VecDeque<Queued>,
    /// The message ID of the next request we expect from the peer.
    peer_mid: u32,
    /// §2.1: the answer to the peer's last request (its datagrams: one message or all
    /// its fragments), for its retransmissions.
    last_response: Option<(u32, Vec<Vec<u8>>)>,
    events: VecDeque<Event>,
    established_at: Option<u64>,
    last_heard: u64,
    peer_id: Option<String>,
    /// Child SA rekeys, retiring SAs and collisions (create_child).
    book: create_child::ChildBook,
    /// The IKE SA's lifetime and rekeying (rekey_ike.rs).
    ike_rk: rekey_ike::IkeRekey,
    /// Unix time in ms at `now == 0`: certificates are valid by the calendar, not by our
    /// monotonic clock. Set by the daemon ([`IkeSa::set_wall_clock`]).
    wall_base_ms: u64,
    /// RFC 7383: the peer announced IKEV2_FRAGMENTATION_SUPPORTED in IKE_SA_INIT (and,
    /// as responder, we announced it back).
    frag_peer: bool,
    /// Fragmented requests and responses from the peer being put together (one message
    /// in progress per direction).
    frag_requests: Reassembler,
    frag_responses: Reassembler,
    frag_stats: FragStats,
}

impl std::fmt::Debug for IkeSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkeSa")
            .field("conn", &self.cfg.name)
            .field("role", &self.role)
            .field("spi_i", &format_args!("{:#018x}", self.spi_i))
            .field("spi_r", &format_args!("{:#018x}", self.spi_r))
            .field("phase", &self.phase())
            .field("children", &self.children.len())
            .finish()
    }
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

fn notify_payload(kind: u16, data: Vec<u8>) -> Payload {
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

/// The first error notify (types below 16384) in a message.
fn error_notify(p: &[Payload]) -> Option<u16> {
    p.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind < notify::FIRST_STATUS => Some(n.kind),
        _ => None,
    })
}

fn exchange_name(e: u8) -> &'static str {
    match e {
        exchange::IKE_SA_INIT => "IKE_SA_INIT",
        exchange::IKE_AUTH => "IKE_AUTH",
        exchange::CREATE_CHILD_SA => "CREATE_CHILD_SA",
        exchange::INFORMATIONAL => "INFORMATIONAL",
        exchange::IKE_INTERMEDIATE => "IKE_INTERMEDIATE",
        exchange::IKE_FOLLOWUP_KE => "IKE_FOLLOWUP_KE",
        _ => "an unknown exchange",
    }
}

/// A peer's whole retransmission budget under `cfg`'s timers: how long a half-open SA or
/// an incomplete fragment set is worth keeping.
fn retransmit_window(cfg: &Connection) -> u64 {
    (0..cfg.retransmit_tries.max(1))
        .map(|k| cfg.retransmit_ms.saturating_mul(1 << k.min(10)))
        .fold(0u64, u64::saturating_add)
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
pub(crate) use first;

impl IkeSa {
    fn new(cfg: Connection, role: Role, local: SocketAddr, remote: SocketAddr) -> IkeSa {
        // An incomplete fragment set is dropped after the peer's retransmission budget.
        let frag_age = retransmit_window(&cfg);
        IkeSa {
            cfg,
            role,
            state: IkeState::Closed,
            spi_i: 0,
            spi_r: 0,
            suite: None,
            local,
            remote,
            nat: false,
            peer_behind_nat: false,
            we_behind_nat: false,
            children: Vec::new(),
            next_mid: 0,
            out: None,
            queue: VecDeque::new(),
            peer_mid: 0,
            last_response: None,
            events: VecDeque::new(),
            established_at: None,
            last_heard: 0,
            peer_id: None,
            book: Default::default(),
            ike_rk: Default::default(),
            wall_base_ms: 0,
            frag_peer: false,
            frag_requests: Reassembler::new(frag::MAX_REASSEMBLED, frag_age),
            frag_responses: Reassembler::new(frag::MAX_REASSEMBLED, frag_age),
            frag_stats: FragStats::default(),
        }
    }

    /// Tell the SA the calendar time at `now == 0` (Unix ms), for certificate validity.
    pub fn set_wall_clock(&mut self, unix_ms_at_zero: u64) {
        self.wall_base_ms = unix_ms_at_zero;
    }

    /// Unix seconds at `now`.
    pub(crate) fn unix_now_s(&self, now: u64) -> i64 {
        (self.wall_base_ms.saturating_add(now) / 1000) as i64
    }

    // ---- what the daemon reads -----------------------------------------------------

    pub fn role(&self) -> Role {
        self.role
    }
    /// (SPIi, SPIr); SPIr is 0 until known.
    pub fn spis(&self) -> (u64, u64) {
        (self.spi_i, self.spi_r)
    }
    /// SPIi as initiator, SPIr as responder: the SPI the endpoint routes by.
    pub fn our_spi(&self) -> u64 {
        match self.role {
            Role::Initiator => self.spi_i,
            Role::Responder => self.spi_r,
        }
    }
    pub fn connection(&self) -> &Connection {
        &self.cfg
    }
    pub fn phase(&self) -> Phase {
        match self.state {
            IkeState::InitSent(_)
            | IkeState::InitDone { .. }
            | IkeState::InterSent { .. }
            | IkeState::AuthSent { .. } => Phase::Connecting,
            IkeState::Established { .. } => Phase::Established,
            IkeState::Deleting { .. } => Phase::Deleting,
            IkeState::Closed => Phase::Closed,
        }
    }
    /// The negotiated suite, once IKE_SA_INIT is done.
    pub fn suite(&self) -> Option<IkeSuite> {
        self.suite
    }
    /// Whether a NAT was found (or forced): ESP in UDP, NAT keepalives (RFC 3948 §2.3).
    /// The SK keys of this IKE SA (RFC 7296 §2.14) once IKE_SA_INIT derived them, named as
    /// the initiator's and responder's whatever our role. Only for `vpnctl keys --wireshark`
    /// on the operator's request: never for a log.
    pub fn key_material(&self) -> Option<SkMaterial<'_>> {
        let keys = match &self.state {
            IkeState::InitDone { hs, .. }
            | IkeState::InterSent { hs, .. }
            | IkeState::AuthSent { hs, .. } => &hs.keys,
            IkeState::Established { keys } | IkeState::Deleting { keys } => keys,
            IkeState::InitSent(_) | IkeState::Closed => return None,
        };
        let ((out_e, out_a), (in_e, in_a)) =
            (keys.sk_out.key_material(), keys.sk_in.key_material());
        let ((sk_ei, sk_ai), (sk_er, sk_ar)) = match self.role {
            Role::Initiator => ((out_e, out_a), (in_e, in_a)),
            Role::Responder => ((in_e, in_a), (out_e, out_a)),
        };
        Some(SkMaterial {
            suite: keys.suite,
            sk_ei,
            sk_er,
            sk_ai,
            sk_ar,
        })
    }

    pub fn nat(&self) -> bool {
        self.nat
    }
    /// Our current address and port (4500 after NAT-T).
    pub fn local(&self) -> SocketAddr {
        self.local
    }
    /// The peer's current address and port; follows NAT mapping changes (§2.23).
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }
    /// The peer's identity, once authenticated.
    pub fn peer_id(&self) -> Option<String> {
        self.peer_id.clone()
    }
    pub fn children(&self) -> &[ChildInfo] {
        &self.children
    }
    pub fn established_at(&self) -> Option<u64> {
        self.established_at
    }
    /// Last time an authenticated message from the peer arrived (DPD decisions).
    pub fn last_heard(&self) -> u64 {
        self.last_heard
    }
    /// What IKE fragmentation (RFC 7383) did on this SA.
    pub fn frag_stats(&self) -> FragStats {
        self.frag_stats
    }
    /// Whether we split our messages into fragments when they do not fit (both sides
    /// announced support and our mode is `yes`).
    pub fn fragments_outbound(&self) -> bool {
        self.frag_peer && self.cfg.fragmentation.mode == FragMode::Yes
    }
    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- plumbing ------------------------------------------------------------------

    fn ignored(&mut self, what: String) {
        self.events.push_back(Event::Ignored { what });
    }

    /// A line for the operator (see [`Event::Log`]).
    fn log(&mut self, level: tracing::Level, message: String) {
        self.events.push_back(Event::Log {
            level,
            trace: false,
            message,
        });
    }

    /// One IKE message or datagram passing, for `vpnctl trace` (debug level).
    fn trace(&mut self, message: String) {
        self.events.push_back(Event::Log {
            level: tracing::Level::DEBUG,
            trace: true,
            message,
        });
    }

    /// Nothing silent: say which payloads and notifies of a message no code here acts on
    /// (vendor IDs, certificate requests, status notifies of extensions we do not speak).
    /// Error notifies are acted on where they matter.
    fn report_unused(&mut self, exch: &'static str, p: &[Payload], used: &[u8], notifies: &[u16]) {
        for x in p {
            let what = match x {
                Payload::Notify(n)
                    if n.kind < notify::FIRST_STATUS || notifies.contains(&n.kind) =>
                {
                    continue
                }
                Payload::Notify(n) => format!("{} in {exch}", notify::name(n.kind)),
                x if used.contains(&x.kind()) => continue,
                Payload::VendorId(_) => format!("a vendor ID in {exch}"),
                x => format!("payload type {} in {exch}", x.kind()),
            };
            self.ignored(what);
        }
    }

    fn send_to(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        self.trace(summary::sending(from, to, data.len()));
        self.events.push_back(Event::Send { from, to, data });
    }

    fn send(&mut self, data: Vec<u8>) {
        self.send_to(self.local, self.remote, data);
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

    /// The SK keys, in every state that has them.
    fn keys(&self) -> Option<&SkKeys> {
        match &self.state {
            IkeState::InitDone { hs, .. }
            | IkeState::AuthSent { hs, .. }
            | IkeState::InterSent { hs, .. } => Some(&hs.keys),
            IkeState::Established { keys } | IkeState::Deleting { keys } => Some(keys),
            IkeState::InitSent(_) | IkeState::Closed => None,
        }
    }

    /// Seal our payloads in `keys` into datagrams: one message, or, when it does not fit
    /// and fragmentation is on both ways, its Encrypted Fragments (RFC 7383 §2.5). Traced.
    fn seal_with(
        &mut self,
        keys: &SkKeys,
        header: Header,
        payloads: &[Payload],
        rng: &mut dyn Random,
    ) -> Vec<Vec<u8>> {
        let sealed = self.seal_bytes(keys, header, payloads, rng);
        self.sealed(header, payloads, sealed)
    }

    /// Trace what was sealed (the payloads inside SK, charon's "generating" line) and how.
    fn sealed(&mut self, header: Header, payloads: &[Payload], s: Sealed) -> Vec<Vec<u8>> {
        self.trace(summary::generating(&header, payloads));
        if s.datagrams.len() > 1 {
            // An event, not only a trace line: fragmentation is what an operator looks for
            // when IKE_AUTH does not get through (RFC 7383), so it shows at the default level.
            self.log(
                tracing::Level::INFO,
                format!(
                    "splitting IKE message ({} bytes) into {} fragments",
                    s.whole_len,
                    s.datagrams.len()
                ),
            );
        }
        if let Some(w) = s.warning {
            self.log(tracing::Level::WARN, w);
        }
        s.datagrams
    }

    /// An unencrypted message (IKE_SA_INIT) on the wire, traced like a sealed one.
    fn emit_traced(&mut self, m: Message) -> Vec<u8> {
        self.trace(summary::generating(&m.header, &m.payloads));
        m.emit()
    }

    /// [`IkeSa::seal_with`] without the trace.
    fn seal_bytes(
        &self,
        keys: &SkKeys,
        header: Header,
        payloads: &[Payload],
        rng: &mut dyn Random,
    ) -> Sealed {
        let mut inner = Vec::with_capacity(256);
        let first = wire::emit_chain(payloads, &mut inner);
        let mut iv = vec![0u8; keys.sk_out.iv_len()];
        rng.fill(&mut iv);
        // The IV length is the one the cipher asked for: sealing cannot fail on lengths.
        let whole = keys
            .sk_out
            .seal_bytes(header, first, None, &inner, &iv)
            .expect("IV of the cipher's own length; our messages stay under 64 KiB");
        let whole_len = whole.len();
        let one = |whole, warning| Sealed {
            datagrams: vec![whole],
            whole_len,
            warning,
        };
        let Some(max) = self.fragment_limit() else {
            return one(whole, None);
        };
        if whole.len() <= max {
            return one(whole, None);
        }
        match frag::fragment(&keys.sk_out, header, first, &inner, max, rng) {
            Ok(f) => Sealed {
                datagrams: f,
                whole_len,
                warning: None,
            },
            // Whole is the best we can do; IP fragmentation may still carry it.
            Err(e) => one(
                whole,
                Some(format!(
                    "sending a {whole_len} byte {} message unfragmented: {e}",
                    exchange_name(header.exchange)
                )),
            ),
        }
    }

    /// The largest IKE message we send whole, when we fragment (RFC 7383 §2.5.1): the
    /// configured datagram size minus the headers for our path.
    fn fragment_limit(&self) -> Option<usize> {
        if !self.fragments_outbound() {
            return None;
        }
        // The shell adds the non-ESP marker on any port but 500 (RFC 3948 §2.2).
        Some(frag::max_ike_len(
            self.cfg.fragmentation.size,
            self.remote.is_ipv6(),
            self.local.port() != IKE_PORT,
        ))
    }

    /// Seal our payloads in the current keys; `None` in a state without keys.
    fn seal(
        &mut self,
        header: Header,
        payloads: &[Payload],
        rng: &mut dyn Random,
    ) -> Option<Vec<Vec<u8>>> {
        let sealed = self
            .keys()
            .map(|k| self.seal_bytes(k, header, payloads, rng))?;
        Some(self.sealed(header, payloads, sealed))
    }

    fn count_sent(&mut self, data: &[Vec<u8>]) {
        if data.len() > 1 {
            self.frag_stats.messages_split += 1;
            self.frag_stats.fragments_sent += data.len() as u64;
        }
    }

    /// Put a request of ours on the wire (the window must be free).
    fn request(&mut self, now: u64, mid: u32, data: Vec<Vec<u8>>, req: Req) {
        self.count_sent(&data);
        self.out = Some(Outstanding {
            mid,
            data: data.clone(),
            next_at: now + self.cfg.retransmit_ms,
            tries: 1,
            req,
        });
        for d in data {
            self.send(d);
        }
    }

    /// Answer the peer's request `mid` (§2.1: to where it came from, §2.11), keeping the
    /// answer for its retransmissions.
    fn answer(
        &mut self,
        exch: u8,
        mid: u32,
        local: SocketAddr,
        remote: SocketAddr,
        payloads: &[Payload],
        rng: &mut dyn Random,
    ) {
        let h = self.header(exch, mid, true);
        let Some(msgs) = self.seal(h, payloads, rng) else {
            return;
        };
        self.respond_with(mid, local, remote, msgs);
    }

    /// Send an answer already sealed (one message or its fragments) and keep it for the
    /// peer's retransmissions of request `mid`.
    fn respond_with(
        &mut self,
        mid: u32,
        local: SocketAddr,
        remote: SocketAddr,
        msgs: Vec<Vec<u8>>,
    ) {
        self.count_sent(&msgs);
        self.last_response = Some((mid, msgs.clone()));
        for m in msgs {
            self.send_to(local, remote, m);
        }
    }

    /// The IKE SA is dead: its children go, the daemon hears why (and logs it, once).
    fn fail(&mut self, error: IkeError) {
        self.children_down(false);
        self.state = IkeState::Closed;
        self.out = None;
        self.queue.clear();
        self.events.push_back(Event::Failed(error));
    }

    fn children_down(&mut self, by_peer: bool) {
        self.book.reset();
        for c in std::mem::take(&mut self.children) {
            self.events.push_back(Event::ChildDown {
                name: c.name,
                inbound_spi: c.inbound_spi,
                outbound_spi: c.outbound_spi,
                by_peer,
                rekeyed: false,
            });
        }
    }

    /// Send the next queued request if the window is free (§2.3: window size 1).
    fn pump(&mut self, now: u64, rng: &mut dyn Random) {
        while self.out.is_none() {
            let Some(q) = self.queue.pop_front() else {
                return;
            };
            let mid = self.next_mid;
            let (payloads, req, exch) = match q {
                Queued::CreateChild(req) => {
                    if !matches!(self.state, IkeState::Established { .. }) {
                        self.ignored(format!(
                            "a queued CREATE_CHILD_SA for child {}: the IKE SA is going away",
                            req.child
                        ));
                        continue;
                    }
                    let mut ni = vec![0u8; 32];
                    rng.fill(&mut ni);
                    let Some(p) = self.create_child_request(req, &ni, rng) else {
                        continue;
                    };
                    (p, Req::CreateChild { req, ni }, exchange::CREATE_CHILD_SA)
                }
                Queued::DeleteChild(inbound_spi) => (
                    vec![Payload::Delete(super::wire::Delete {
                        protocol: super::child::PROTO_ESP,
                        spi_size: 4,
                        spis: vec![inbound_spi.to_be_bytes().to_vec()],
                    })],
                    Req::DeleteChild { inbound_spi },
                    exchange::INFORMATIONAL,
                ),
                Queued::Dpd { started, deadline } => (
                    vec![],
                    Req::Dpd { started, deadline },
                    exchange::INFORMATIONAL,
                ),
                Queued::DeleteIke => (
                    vec![Payload::Delete(super::wire::Delete {
                        protocol: super::proposal::PROTO_IKE,
                        spi_size: 0,
                        spis: vec![],
                    })],
                    Req::DeleteIke,
                    exchange::INFORMATIONAL,
                ),
                Queued::AuthFailedNotice => (
                    vec![notify_payload(notify::AUTHENTICATION_FAILED, vec![])],
                    Req::AuthFailedNotice,
                    exchange::INFORMATIONAL,
                ),
                Queued::RekeyIke => match self.rekey_ike_request(rng) {
                    Some(p) => (p, Req::RekeyIke, exchange::CREATE_CHILD_SA),
                    None => continue,
                },
                Queued::Followup => match self.followup_request(rng) {
                    Some(p) => (p, Req::Followup, exchange::IKE_FOLLOWUP_KE),
                    None => continue,
                },
            };
            let h = self.header(exch, mid, false);
            let Some(msg) = self.seal(h, &payloads, rng) else {
                self.queue.clear();
                return;
            };
            self.next_mid += 1;
            self.request(now, mid, msg, req);
        }
    }

    // ---- input -----------------------------------------------------------------------

    /// A datagram for this SA (already routed by SPI; the non-ESP marker already removed),
    /// arrived on `local` from `remote`.
    pub fn handle(
        &mut self,
        now: u64,
        local: SocketAddr,
        remote: SocketAddr,
        raw: &[u8],
        rng: &mut dyn Random,
        spis: &mut dyn SpiAllocator,
    ) {
        if matches!(self.state, IkeState::Closed) {
            self.ignored(format!("a message from {remote} for a closed IKE SA"));
            return;
        }
        self.trace(summary::received(remote, local, raw.len()));
        let hdr = match Header::parse(raw) {
            Ok(h) if h.major == 2 => h,
            Ok(h) => {
                self.ignored(format!(
                    "a message of IKE version {} from {remote}",
                    h.major
                ));
                return;
            }
            Err(e) => {
                self.ignored(format!(
                    "a datagram from {remote} that is no IKE message: {e}"
                ));
                return;
            }
        };
        if hdr.spi_i != self.spi_i {
            self.ignored(format!(
                "a message from {remote} for IKE SPI {:#018x}, not ours",
                hdr.spi_i
            ));
            return;
        }
        // Past IKE_SA_INIT, both SPIs name the SA (§2.6: SPIr is 0 only in IKE_SA_INIT).
        if hdr.exchange != exchange::IKE_SA_INIT && hdr.spi_r != self.spi_r {
            self.ignored(format!(
                "a message from {remote} for responder SPI {:#018x}, not ours",
                hdr.spi_r
            ));
            return;
        }
        // §3.1: the I flag marks the original initiator's messages.
        if hdr.from_initiator() != (self.role == Role::Responder) {
            self.ignored(format!(
                "a message from {remote} with the Initiator flag the wrong way round"
            ));
            return;
        }
        if hdr.is_response() {
            self.on_response(now, local, remote, hdr, raw, rng);
        } else {
            self.on_request(now, local, remote, hdr, raw, rng, spis);
        }
    }

    fn on_response(
        &mut self,
        now: u64,
        local: SocketAddr,
        remote: SocketAddr,
        hdr: Header,
        raw: &[u8],
        rng: &mut dyn Random,
    ) {
        let Some(out) = &self.out else {
            self.ignored(format!(
                "a {} response (message ID {}) with no request of ours outstanding",
                exchange_name(hdr.exchange),
                hdr.message_id
            ));
            return;
        };
        // §2.3: a response must answer the request in flight.
        if hdr.message_id != out.mid || hdr.exchange != out.req.exchange() {
            let want = out.mid;
            self.ignored(format!(
                "a {} response with message ID {}, but our request in flight is {want}",
                exchange_name(hdr.exchange),
                hdr.message_id
            ));
            return;
        }
        if hdr.exchange == exchange::IKE_SA_INIT {
            match Message::parse(raw) {
                Ok(m) => {
                    self.trace(summary::parsed(&m.header, &m.payloads));
                    self.out = None;
                    self.on_init_response(now, local, remote, &m, raw, rng);
                }
                Err(e) => self.ignored(format!("a malformed IKE_SA_INIT response: {e}")),
            }
            return;
        }
        // §2.21: a response that does not verify is dropped; retransmissions go on.
        let Some(opened) = self.open_message(&hdr, remote, raw, now) else {
            return;
        };
        if hdr.exchange == exchange::IKE_INTERMEDIATE {
            // IntAuth needs the decrypted bytes, not just the payloads (RFC 9242 §3.3.2):
            // parsed here for the trace only.
            if let Ok(p) = wire::parse_chain(opened.first, &opened.plain) {
                self.trace(summary::parsed(&hdr, &p));
            }
            self.frag_responses.clear();
            self.on_intermediate_response(now, opened, rng);
            self.pump(now, rng);
            return;
        }
        let p = match wire::parse_chain(opened.first, &opened.plain) {
            Ok(p) => p,
            Err(e) => {
                self.ignored(format!(
                    "a {} response from {remote} that does not parse: {e}",
                    exchange_name(hdr.exchange)
                ));
                return;
            }
        };
        self.trace(summary::parsed(&hdr, &p));
        self.frag_responses.clear();
        self.last_heard = now;
        self.follow_peer(remote);
        let Some(out) = self.out.take() else {
            return;
        };
        match out.req {
            Req::Init | Req::Intermediate => {}
            Req::Auth => self.on_auth_response(now, &p, rng),
            Req::CreateChild { req, ni } => self.on_create_child_response(now, req, &ni, &p, rng),
            Req::DeleteChild { inbound_spi } => self.on_delete_child_answer(inbound_spi),
            Req::DeleteIke => {
                // The daemon logs the close (Closed), once.
                self.state = IkeState::Closed;
                self.queue.clear();
                self.events.push_back(Event::Closed { by_peer: false });
            }
            Req::Dpd { .. } => {
                self.log(
                    tracing::Level::DEBUG,
                    "the peer answered our liveness check (RFC 7296 §2.4)".into(),
                );
            }
            Req::AuthFailedNotice => {
                // The Failed event went out when we rejected the AUTH; now the peer knows.
                self.state = IkeState::Closed;
                self.queue.clear();
            }
            Req::RekeyIke => self.on_rekey_ike_response(now, &p, rng),
            Req::Followup => self.on_followup_response(now, &p, rng),
        }
        // The window is free: a rekey of the peer's we answered meanwhile takes effect.
        self.settle_ike_rekey(now, rng, false);
        self.pump(now, rng);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_request(
        &mut self,
        now: u64,
        local: SocketAddr,
        remote: SocketAddr,
        hdr: Header,
        raw: &[u8],
        rng: &mut dyn Random,
        spis: &mut dyn SpiAllocator,
    ) {
        if let Some((mid, resp)) = &self.last_response {
            if hdr.message_id == *mid {
                // §2.1: a retransmitted request gets the same response again, to where this
                // copy came from (§2.11); a fragmented one (all its fragments come again)
                // on its fragment 1 only, with every fragment of ours (RFC 7383 §2.6.1).
                match frag::peek_fragment_number(raw) {
                    None | Some(1) => {
                        let r = resp.clone();
                        for d in r {
                            self.send_to(local, remote, d);
                        }
                    }
                    Some(n) => self.ignored(format!(
                        "fragment {n} of a retransmitted request (message ID {mid}) from {remote}: answered on its fragment 1"
                    )),
                }
                return;
            }
        }
        if hdr.message_id != self.peer_mid {
            // §2.3: outside the window of one.
            self.ignored(format!(
                "a {} request from {remote} with message ID {}, expecting {}",
                exchange_name(hdr.exchange),
                hdr.message_id,
                self.peer_mid
            ));
            return;
        }
        if hdr.exchange == exchange::IKE_SA_INIT {
            self.ignored(format!(
                "an IKE_SA_INIT request from {remote} inside an existing IKE SA"
            ));
            return;
        }
        // §2.21: a request that does not verify is dropped without an answer.
        let Some(opened) = self.open_message(&hdr, remote, raw, now) else {
            return;
        };
        if hdr.exchange == exchange::IKE_INTERMEDIATE {
            // IntAuth needs the decrypted bytes, not just the payloads (RFC 9242 §3.3.2):
            // parsed here for the trace only.
            if let Ok(p) = wire::parse_chain(opened.first, &opened.plain) {
                self.trace(summary::parsed(&hdr, &p));
            }
            self.on_intermediate_request(now, local, remote, hdr, opened, rng);
            return;
        }
        let p = match wire::parse_chain(opened.first, &opened.plain) {
            Ok(p) => p,
            Err(WireError::UnsupportedCritical(t)) => {
                // §2.5: refuse it, naming the payload; the message ID is used up.
                self.peer_mid += 1;
                self.answer(
                    hdr.exchange,
                    hdr.message_id,
                    local,
                    remote,
                    &[notify_payload(
                        notify::UNSUPPORTED_CRITICAL_PAYLOAD,
                        vec![t],
                    )],
                    rng,
                );
                self.ignored(format!(
                    "a request with the unsupported critical payload {t}: answered UNSUPPORTED_CRITICAL_PAYLOAD"
                ));
                return;
            }
            Err(e) => {
                // The peer's keys, so the peer's bug: answer nothing, as for a forgery.
                self.ignored(format!(
                    "a {} request from {remote} that does not parse: {e}",
                    exchange_name(hdr.exchange)
                ));
                return;
            }
        };
        self.trace(summary::parsed(&hdr, &p));
        self.peer_mid += 1;
        self.last_heard = now;
        let mid = hdr.message_id;
        if let (exchange::IKE_AUTH, Some(err)) = (hdr.exchange, self.auth_before_addke()) {
            self.answer(
                hdr.exchange,
                mid,
                local,
                remote,
                &[notify_payload(notify::INVALID_SYNTAX, vec![])],
                rng,
            );
            self.fail(err);
            return;
        }
        match (hdr.exchange, &self.state) {
            (exchange::IKE_AUTH, IkeState::InitDone { .. }) => {
                // §2.23: the initiator moved to port 4500 after a NAT; the IKE SA lives
                // where this authenticated request came from.
                self.local = local;
                self.remote = remote;
                self.on_auth_request(now, mid, &p, rng, spis);
            }
            (exchange::INFORMATIONAL, IkeState::Established { .. } | IkeState::Deleting { .. }) => {
                self.follow_peer(remote);
                if p.iter().any(
                    |x| matches!(x, Payload::Delete(d) if d.protocol == super::proposal::PROTO_IKE),
                ) {
                    // The peer deletes this SA: a rekey of its we answered takes effect first.
                    self.settle_ike_rekey(now, rng, true);
                }
                self.on_informational(mid, local, remote, &p, rng);
            }
            (exchange::CREATE_CHILD_SA, IkeState::Established { .. }) => {
                self.follow_peer(remote);
                self.on_create_child_request(now, mid, local, remote, &p, rng, spis);
            }
            (exchange::IKE_FOLLOWUP_KE, IkeState::Established { .. }) => {
                self.follow_peer(remote);
                self.on_followup_request(now, mid, local, remote, &p, rng);
            }
            (exchange::CREATE_CHILD_SA, IkeState::Deleting { .. }) => {
                // §2.21: answer, so the peer is not left waiting; nothing new on a dying SA.
                self.answer(
                    hdr.exchange,
                    mid,
                    local,
                    remote,
                    &[notify_payload(notify::TEMPORARY_FAILURE, vec![])],
                    rng,
                );
                self.ignored("a CREATE_CHILD_SA request while we delete the IKE SA: answered TEMPORARY_FAILURE".into());
            }
            (e, _) => {
                // §2.21: a request we cannot serve here still gets an answer.
                let phase = self.phase();
                self.answer(
                    e,
                    mid,
                    local,
                    remote,
                    &[notify_payload(notify::INVALID_SYNTAX, vec![])],
                    rng,
                );
                self.ignored(format!(
                    "a {} request (exchange type {e}) while {phase:?}: answered INVALID_SYNTAX",
                    exchange_name(e)
                ));
            }
        }
    }

    /// The one place an encrypted message from the peer is opened: a whole SK message, or
    /// the fragment that completes an SKF set (RFC 7383 §2.6), as one decrypted payload
    /// chain. `None` when nothing is complete yet or the datagram is not used (reported:
    /// does not verify, or a fragment the reassembly refused). Only fragments that verify
    /// are kept. The caller has checked the message ID against the window.
    pub(super) fn open_message(
        &mut self,
        hdr: &Header,
        remote: SocketAddr,
        raw: &[u8],
        now: u64,
    ) -> Option<OpenedSk> {
        let what = if hdr.is_response() {
            "response"
        } else {
            "request"
        };
        let exch = exchange_name(hdr.exchange);
        let opened = match self.keys() {
            Some(k) => k.sk_in.open_any(raw),
            None => {
                self.ignored(format!(
                    "an encrypted {exch} {what} from {remote} before the keys exist"
                ));
                return None;
            }
        };
        let f = match opened {
            Ok(Opened::Whole(o)) => return Some(o),
            Ok(Opened::Fragment(f)) => f,
            Err(e) => {
                self.ignored(format!(
                    "a {exch} {what} from {remote} that does not open: {e}"
                ));
                return None;
            }
        };
        self.frag_stats.fragments_received += 1;
        let (number, total) = (f.number, f.total);
        let r = if hdr.is_response() {
            &mut self.frag_responses
        } else {
            &mut self.frag_requests
        };
        let pushed = match r.push(f, now) {
            Ok(p) => p,
            Err(e) => {
                self.frag_stats.dropped += 1;
                self.ignored(format!(
                    "fragment {number} of {total} of a {exch} {what} from {remote}: {e}"
                ));
                return None;
            }
        };
        if let Some(e) = pushed.dropped {
            self.frag_stats.dropped += 1;
            self.ignored(format!("fragments of a {exch} {what} from {remote}: {e}"));
        }
        let m = pushed.message?;
        self.frag_stats.messages_reassembled += 1;
        self.log(
            tracing::Level::INFO,
            format!(
            "received fragment #{number} of {total}, reassembled fragmented IKE message ({} bytes)",
            m.plain.len()
        ),
        );
        Some(m)
    }

    /// RFC 7296 §2.23: with a NAT in front of the peer (and none in front of us), an
    /// authenticated new message from another address or port means the NAT mapping
    /// changed: follow it, and so must ESP-in-UDP.
    fn follow_peer(&mut self, remote: SocketAddr) {
        if remote == self.remote || !matches!(self.state, IkeState::Established { .. }) {
            return;
        }
        if self.peer_behind_nat && !self.we_behind_nat {
            self.remote = remote;
            self.events.push_back(Event::PeerMoved { remote });
        } else {
            // §2.23: a host behind a NAT (or with no NAT) must not follow: one forged
            // packet would break the connection.
            let what = format!(
                "an authenticated message from {remote}, not {}: not following it (no NAT in front of the peer, or one in front of us)",
                self.remote
            );
            self.ignored(what);
        }
    }

    // ---- timers ----------------------------------------------------------------------

    /// When [`IkeSa::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = match &self.out {
            Some(o) => match o.req {
                Req::Dpd { deadline, .. } => Some(o.next_at.min(deadline)),
                _ => Some(o.next_at),
            },
            None => None,
        };
        if let IkeState::InitDone { expires, .. } = self.state {
            t = Some(t.map_or(expires, |x| x.min(expires)));
        }
        for d in [self.child_deadline(), self.ike_deadline()]
            .into_iter()
            .flatten()
        {
            t = Some(t.map_or(d, |x| x.min(d)));
        }
        t
    }

    /// Retransmit with exponential backoff (§2.1), or give up; expire a half-open SA; fail
    /// a DPD probe that was not answered in time.
    pub fn handle_timeout(&mut self, now: u64, rng: &mut dyn Random, spis: &mut dyn SpiAllocator) {
        // Lifetimes: Child SA rekeys and expiry (create_child), the IKE SA's (rekey_ike).
        self.child_timers(now, rng, spis);
        self.ike_timers(now, rng);
        if let IkeState::InitDone { expires, .. } = self.state {
            if now >= expires {
                let waited_ms = self.half_open_ms();
                self.fail(IkeError::HalfOpenExpired {
                    peer: self.remote,
                    waited_ms,
                });
                return;
            }
        }
        let Some(o) = self.out.as_ref() else {
            return;
        };
        if let Req::Dpd { started, deadline } = o.req {
            if now >= deadline {
                let probes = o.tries;
                self.fail(IkeError::PeerDead {
                    probes,
                    waited_ms: now - started,
                    peer: self.remote,
                });
                return;
            }
        }
        if now < o.next_at {
            return;
        }
        let tries = o.tries;
        let is_dpd = matches!(o.req, Req::Dpd { .. });
        if tries >= self.cfg.retransmit_tries && !is_dpd {
            let req = o.req.clone();
            self.out = None;
            let deleting = matches!(self.state, IkeState::Deleting { .. });
            match req {
                // Our delete (or what was in flight before it) went unanswered: the IKE SA
                // is gone either way.
                Req::DeleteIke
                | Req::CreateChild { .. }
                | Req::DeleteChild { .. }
                | Req::Dpd { .. }
                    if deleting =>
                {
                    self.log(
                        tracing::Level::DEBUG,
                        "no answer to our delete; the IKE SA is gone anyway".into(),
                    );
                    self.state = IkeState::Closed;
                    self.queue.clear();
                    self.events.push_back(Event::Closed { by_peer: false });
                }
                Req::AuthFailedNotice => {
                    self.state = IkeState::Closed;
                    self.queue.clear();
                }
                r => {
                    // §2.4: an unanswered request means the peer is gone.
                    self.fail(IkeError::Timeout {
                        what: r.what(),
                        tries,
                        peer: self.remote,
                    });
                }
            }
            return;
        }
        let base = self.cfg.retransmit_ms;
        let Some(o) = self.out.as_mut() else {
            return;
        };
        o.tries += 1;
        o.next_at = now.saturating_add(base.saturating_mul(1 << (o.tries - 1).min(10)));
        // RFC 7383 §2.6.1: every fragment again.
        let data = o.data.clone();
        let what = format!(
            "retransmit {} of {} request with message ID {}",
            o.tries - 1,
            exchange_name(o.req.exchange()),
            o.mid
        );
        self.log(tracing::Level::INFO, what);
        for d in data {
            self.send(d);
        }
    }

    /// How long a responder waits for IKE_AUTH: the initiator's whole retransmission
    /// budget (it gives up after that too).
    fn half_open_ms(&self) -> u64 {
        retransmit_window(&self.cfg)
    }

    // ---- commands --------------------------------------------------------------------

    /// Forget the SA without a word to the peer (INITIAL_CONTACT from the peer, §2.4):
    /// ChildDown for each child and Closed { by_peer: true }.
    pub fn abandon(&mut self) {
        if matches!(self.state, IkeState::Closed) {
            return;
        }
        self.children_down(true);
        self.state = IkeState::Closed;
        self.out = None;
        self.queue.clear();
        self.events.push_back(Event::Closed { by_peer: true });
    }
}

#[cfg(test)]
mod tests;
