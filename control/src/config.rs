//! iked's configuration: TOML shaped like swanctl.conf. A bad file is refused with its path,
//! line and field; the daemon keeps its old configuration when a reload is bad.
//!
//! ```toml
//! [connections.gw-b]
//! local_addrs = ["192.0.2.1"]
//! remote_addrs = ["192.0.2.2", "192.0.2.3"]      # all used: tried in order
//! proposals = ["aes128gcm16-prfsha256-x25519"]   # strongSwan proposal strings
//! encap = false                                  # force UDP encapsulation (NAT-T)
//! dpd_delay = "30s"                              # probe a silent peer (0 = off, the default)
//! dpd_timeout = "30s"                            # declare it dead after this (default 30 s)
//! rekey_time = "4h"                              # rekey the IKE SA (default 4 h; 0 = never)
//!

//! [connections.gw-b.local]
//! id = "gw-a.example"
//! auth = "psk"
//!
//! [connections.gw-b.remote]
//! id = "gw-b.example"
//! auth = "psk"
//!
//! [connections.gw-b.children.net]                # several children: all kept, in file order
//! local_ts = ["10.1.0.0/16"]
//! remote_ts = ["10.2.0.0/16", "10.3.0.5[tcp/443]"]
//! esp_proposals = ["aes128gcm16"]
//! mode = "tunnel"                                # or "transport"
//! start_action = "start"                         # "none", "start" or "trap"
//! dpd_action = "restart"                         # "clear" (default), "trap" or "restart"
//! close_action = "none"                          # "none" (default), "trap" or "start"
//! rekey_time = "1h"                              # rekey the Child SA (default 1 h)
//! rekey_bytes = "500M"                           # and/or after this much traffic (k/M/G: 1024s)
//!
//! [secrets.ike-gw-b]
//! id = ["gw-b.example"]
//! secret = "a long shared secret"
//! ```
//!
//! Certificates (RFC 7296 §2.15 with RFC 7427 signatures) are configured as in swanctl:
//!
//! ```toml
//! [connections.gw-c]
//! # ... addresses, proposals, children as above ...
//! send_cert = "ifasked"          # send our certificate only after a CERTREQ (default),
//!                                # "always" or "never"
//! send_certreq = true            # ask for the peer's certificate (default)
//! clock_skew = "5m"              # validity allowance either way (default 5 min)
//! fragmentation = "yes"          # RFC 7383: "yes" (default), "accept" (reassemble only), "no"
//! fragment_size = 1280           # largest IP datagram of a fragment (default 1280)
//!
//! [connections.gw-c.local]
//! id = "C=CH, O=example, CN=gw-a" # a DN in swanctl's forward order, or FQDN/IP/email
//! auth = "pubkey"
//! certs = ["gw-aCert.pem"]        # in x509/; the CAs of x509ca/ that issued it are sent too
//!
//! [connections.gw-c.remote]
//! id = "*.example"                # wildcards: %any, *.example, *@example.net, CN=*
//! auth = "pubkey"                 # the peer's certificate must hold its ID
//! cacerts = ["rootCert.pem"]      # in x509ca/; default: every self-signed CA there
//!
//! [secrets.private-gw-a]          # optional: without it, every key in private/ is read
//! file = "gw-aKey.pem"            # and the one that belongs to the certificate is used
//! ```
//!
//! The credential directories are swanctl's, beside this file (an absolute path in a field
//! is used as is): `x509/` our certificates, `x509ca/` CA certificates (self-signed ones are
//! trust anchors, the others intermediates, which complete chains both ways), `private/`
//! private keys (PKCS#1, SEC1 or PKCS#8, PEM or DER; a key file group or others may read is
//! refused), `x509crl/` CRLs (all of them are checked). A side may use `psk` while the
//! other uses `pubkey`; a `[secrets]` pre-shared key is needed only when a side uses `psk`.
//!
//! Traffic selectors use swanctl's syntax: `ADDRESS[PROTOCOL/PORT]`, where ADDRESS is a
//! prefix (`10.1.0.0/24`), an address (`10.1.0.5`), a range (`10.1.0.5-10.1.0.9`), `%any`
//! (`0.0.0.0/0`), `%any6` (`::/0`), `dynamic` (the connection's first own or peer address), or
//! empty (`[icmp]`: all of IPv4, all of IPv6 for `ipv6-icmp`); PROTOCOL a number (`[47]`) or a
//! name (`tcp`, `udp`, `icmp`, `ipv6-icmp`, `sctp`, `gre`, `esp`, `ah`, `%any`); PORT a number,
//! a range (`1024-2048`), a service name (`https`) or `%any`. For ICMP the port is the message
//! type when below 256, else type and code (type in the high byte), as in swanctl.conf(5).
//! Durations are swanctl's: `30s`, `2m`, `1h`, `1d`, or a plain number of seconds.
//!
//! Lifetimes have swanctl's names, defaults and meaning (swanctl.conf(5), RFC 7296 §2.8):
//! - IKE SA, in `[connections.X]`: `rekey_time` (default 4 h; 0 = never), `reauth_time`
//!   (default 0 = never), `over_time` (the hard limit this long after the first of the two;
//!   default 10 % of the larger), `rand_time` (the rekey comes up to this much earlier, drawn
//!   per SA; default over_time).
//! - Child SA, in `[connections.X.children.Y]`: `rekey_time` (default 1 h), `life_time` (hard
//!   limit; default rekey_time + 10 %), `rand_time` (default life_time − rekey_time); the same
//!   for traffic as `rekey_bytes`/`life_bytes`/`rand_bytes` and
//!   `rekey_packets`/`life_packets`/`rand_packets` (default 0 = no limit; enforced by the
//!   dataplane). Byte sizes take swanctl's suffixes `k`, `M`, `G` (powers of 1024); packet
//!   counts are plain numbers. A life limit must be greater than its rekey limit, a rand
//!   limit below it; 0 turns a rekey or life limit off.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use dataplane::control::static_sa::{deserialize_toml, ConfigError, Lines};
use serde::Deserialize;
use toml::Spanned;
use zeroize::Zeroizing;

use std::path::PathBuf;
use std::sync::Arc;

use crate::ike::child::EspProposal;
use crate::ike::frag::{FragConfig, FragMode, DEFAULT_FRAGMENT_SIZE};
use crate::ike::lifetime::{ChildLifetime, IkeLifetime, Limits};
use crate::ike::proposal::IkeProposal;
use crate::ike::sa::{Connection, IKE_PORT};
use crate::ike::wire::Ts;
use crate::pki::load::{read_certs, read_crls, read_key, KeyPermissions};
use crate::pki::{AuthConfig, AuthKind, Credentials, SendCert, TrustStore, DEFAULT_CLOCK_SKEW_S};
use dataplane::control::static_sa::{bytes_value, packets_value};

pub use crate::ike::child::ChildCfg;

/// What to do with a child when the daemon starts (swanctl's `start_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAction {
    None,
    /// Initiate at start.
    Start,
    /// Install the policy; initiate when the dataplane reports matching traffic (acquire).
    Trap,
}

/// What to do when dead peer detection declares the peer dead (swanctl's `dpd_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DpdAction {
    /// Delete the SAs and leave it at that.
    #[default]
    Clear,
    /// Delete the SAs and install a trap: the next matching packet renegotiates.
    Trap,
    /// Delete the SAs and initiate again at once.
    Restart,
}

/// What to do when the peer deletes the Child SA (swanctl's `close_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CloseAction {
    #[default]
    None,
    /// Install a trap: the next matching packet renegotiates.
    Trap,
    /// Initiate again at once.
    Start,
}

/// One child's daemon-level settings; the negotiated ones are in [`ConnConfig::child_cfgs`]
/// at the same index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildConfig {
    pub name: String,
    pub start_action: StartAction,
    pub dpd_action: DpdAction,
    pub close_action: CloseAction,
    /// Ties the child's dataplane policies to its SAs. Derived from "conn/child" so it stays
    /// the same across daemon restarts (see [`assign_reqids`]); 1..2^19; unique in the file.
    pub reqid: u32,
    /// Anti-replay window of the inbound SAs in packets (swanctl `replay_window`); 0 turns
    /// the check off. [`DEFAULT_REPLAY_WINDOW`] unless configured.
    pub replay_window: u32,
    /// RFC 9611 per-resource Child SAs (`per_resource_sas`).
    pub per_resource_sas: PerResource,
}

/// `per_resource_sas`: RFC 9611 per-resource Child SAs beside the ordinary (fallback) one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PerResource {
    /// `"off"` (the default): one Child SA, shared by every dataplane worker.
    #[default]
    Off,
    /// `"auto"`: one per dataplane worker (from the dataplane's `RING.info`), none with a
    /// single worker.
    Auto,
    /// A number: that many (1..=64).
    Count(u16),
}

impl PerResource {
    /// How many to negotiate and accept with `workers` dataplane workers.
    pub fn resolve(self, workers: usize) -> u16 {
        match self {
            PerResource::Off => 0,
            PerResource::Auto if workers >= 2 => workers.min(64) as u16,
            PerResource::Auto => 0,
            PerResource::Count(n) => n,
        }
    }
}

/// Our default anti-replay window: larger than strongSwan's 32 because several workers send
/// on one SA, each taking sequence numbers as it encrypts a batch; a worker that the
/// scheduler delays lets the others' packets overtake its own by thousands on a busy
/// machine, and a receiver with a small window would drop them as replays (RFC 4303 §3.4.3
/// lets the receiver choose the size). 8192 packets cost 1 KiB per inbound SA.
pub const DEFAULT_REPLAY_WINDOW: u32 = 8192;

/// One configured connection.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// What the IKE layer needs; `local`/`remote` are the first of `local_addrs` and
    /// `remote_addrs`, port 500.
    pub connection: Connection,
    /// Every address given, in file order, one family, no duplicates. The peer is tried at
    /// each of `remote_addrs` in order.
    pub local_addrs: Vec<IpAddr>,
    pub remote_addrs: Vec<IpAddr>,
    /// RFC 7296 §2.4: probe the peer after this long without hearing from it; 0 = off.
    pub dpd_delay_ms: u64,
    /// How long an unanswered probe may stay out before the peer is declared dead.
    pub dpd_timeout_ms: u64,
    /// In file order; never empty.
    pub children: Vec<ChildConfig>,
}

impl ConnConfig {
    /// The children's IKE-level settings, in the order of `children`.
    pub fn child_cfgs(&self) -> &[ChildCfg] {
        &self.connection.children
    }

    /// Every field equal, the pre-shared key included.
    fn same_as(&self, o: &ConnConfig) -> bool {
        self.connection == o.connection
            && self.local_addrs == o.local_addrs
            && self.remote_addrs == o.remote_addrs
            && self.dpd_delay_ms == o.dpd_delay_ms
            && self.dpd_timeout_ms == o.dpd_timeout_ms
            && self.children == o.children
    }
}

/// The whole file: at least one connection, in file order.
#[derive(Debug, Clone)]
pub struct IkedConfig {
    pub connections: Vec<ConnConfig>,
}

/// What a reload changes, by connection name. `unchanged`, `changed` and `added` follow the
/// new file's order, `removed` the old one's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    pub unchanged: Vec<String>,
    /// Any field differs (the pre-shared key and the reqids included).
    pub changed: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// swanctl's default `dpd_timeout` is IKEv1-only; here it bounds the IKEv2 probe too.
pub const DEFAULT_DPD_TIMEOUT_MS: u64 = 30_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    connections: BTreeMap<String, Spanned<RawConn>>,
    #[serde(default)]
    secrets: BTreeMap<String, Spanned<RawSecret>>,
}

type StrList = Spanned<Vec<Spanned<String>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConn {
    local_addrs: StrList,
    remote_addrs: StrList,
    proposals: Spanned<Vec<String>>,
    #[serde(default)]
    encap: bool,
    #[serde(default)]
    retransmit_ms: Option<u64>,
    #[serde(default)]
    retransmit_tries: Option<u32>,
    #[serde(default)]
    dpd_delay: Option<Spanned<toml::Value>>,
    #[serde(default)]
    dpd_timeout: Option<Spanned<toml::Value>>,
    #[serde(default)]
    rekey_time: Option<Spanned<toml::Value>>,
    #[serde(default)]
    reauth_time: Option<Spanned<toml::Value>>,
    #[serde(default)]
    over_time: Option<Spanned<toml::Value>>,
    #[serde(default)]
    rand_time: Option<Spanned<toml::Value>>,
    #[serde(default)]
    send_cert: Option<Spanned<String>>,
    #[serde(default)]
    send_certreq: Option<bool>,
    #[serde(default)]
    clock_skew: Option<Spanned<toml::Value>>,
    #[serde(default)]
    fragmentation: Option<Spanned<String>>,
    #[serde(default)]
    fragment_size: Option<Spanned<i64>>,
    local: RawEnd,
    remote: RawEnd,
    children: Spanned<BTreeMap<String, Spanned<RawChild>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnd {
    id: Spanned<String>,
    #[serde(default)]
    auth: Option<Spanned<String>>,
    /// local: our certificate, in `x509/`.
    #[serde(default)]
    certs: Option<StrList>,
    /// remote: the trust anchors, in `x509ca/`.
    #[serde(default)]
    cacerts: Option<StrList>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChild {
    local_ts: StrList,
    remote_ts: StrList,
    esp_proposals: Spanned<Vec<String>>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    start_action: Option<Spanned<String>>,
    #[serde(default)]
    dpd_action: Option<Spanned<String>>,
    #[serde(default)]
    close_action: Option<Spanned<String>>,
    #[serde(default)]
    rekey_time: Option<Spanned<toml::Value>>,
    #[serde(default)]
    life_time: Option<Spanned<toml::Value>>,
    #[serde(default)]
    rand_time: Option<Spanned<toml::Value>>,
    #[serde(default)]
    rekey_bytes: Option<Spanned<toml::Value>>,
    #[serde(default)]
    life_bytes: Option<Spanned<toml::Value>>,
    #[serde(default)]
    rand_bytes: Option<Spanned<toml::Value>>,
    #[serde(default)]
    rekey_packets: Option<Spanned<toml::Value>>,
    #[serde(default)]
    life_packets: Option<Spanned<toml::Value>>,
    #[serde(default)]
    rand_packets: Option<Spanned<toml::Value>>,
    #[serde(default)]
    replay_window: Option<Spanned<i64>>,
    #[serde(default)]
    per_resource_sas: Option<Spanned<toml::Value>>,
}

/// `[secrets.NAME]`: a pre-shared key (`id` and `secret`) or a private key file (`file`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    #[serde(default)]
    id: Option<Spanned<IdList>>,
    #[serde(default)]
    secret: Option<Spanned<String>>,
    #[serde(default)]
    file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdList {
    One(String),
    Many(Vec<String>),
}

impl IdList {
    fn contains(&self, id: &str) -> bool {
        match self {
            IdList::One(s) => s == id,
            IdList::Many(v) => v.iter().any(|s| s == id),
        }
    }
}

/// The IKE layer's view of a connection, gathered before it is built.
struct IkeParts {
    name: String,
    local: IpAddr,
    remote: IpAddr,
    local_id: String,
    remote_id: String,
    psk: Zeroizing<Vec<u8>>,
    ike: Vec<IkeProposal>,
    force_encap: bool,
    retransmit_ms: u64,
    retransmit_tries: u32,
    lifetime: IkeLifetime,
    auth: AuthConfig,
    fragmentation: FragConfig,
}

/// The one place that knows the shape of `ike::sa::Connection`.
fn connection(p: IkeParts, children: &[ChildCfg]) -> Connection {
    Connection {
        name: p.name,
        local: SocketAddr::new(p.local, IKE_PORT),
        remote: SocketAddr::new(p.remote, IKE_PORT),
        local_id: p.local_id,
        remote_id: p.remote_id,
        psk: p.psk,
        ike: p.ike,
        children: children.to_vec(),
        force_encap: p.force_encap,
        retransmit_ms: p.retransmit_ms,
        retransmit_tries: p.retransmit_tries,
        lifetime: p.lifetime,
        auth: p.auth,
        fragmentation: p.fragmentation,
    }
}

/// The pre-shared key for a connection where a side uses one: the `[secrets]` entry for the
/// remote identity, else for the local one (strongSwan matches shared keys by identity).
fn pre_shared_key(
    lines: &Lines<'_>,
    raw: &RawFile,
    c: &RawConn,
    f: &dyn Fn(&str) -> String,
    local_id: &str,
    remote_id: &str,
) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    let psk_for = |id: &str| {
        raw.secrets.iter().find_map(|(n, s)| {
            let s = s.get_ref();
            match (&s.id, &s.secret) {
                (Some(ids), Some(secret)) if ids.get_ref().contains(id) => Some((n, secret)),
                _ => None,
            }
        })
    };
    let (secret_name, secret) = psk_for(remote_id)
        .or_else(|| psk_for(local_id))
        .ok_or_else(|| {
            lines.err(
                c.remote.id.span(),
                f("remote.id"),
                format!("no [secrets] entry has id {remote_id:?}"),
            )
        })?;
    if secret.get_ref().len() < 16 {
        return Err(lines.err(
            secret.span(),
            format!("secrets.{secret_name}.secret"),
            "a pre-shared key must have at least 16 characters (RFC 7296 §2.15: weak PSKs are open to dictionary attacks)",
        ));
    }
    Ok(Zeroizing::new(secret.get_ref().as_bytes().to_vec()))
}

/// `local.auth`/`remote.auth` and what they need: our certificate and key for `pubkey`
/// locally, the trust anchors and CRLs for `pubkey` remotely; `send_cert`,
/// `send_certreq`, `clock_skew`.
fn auth_config(
    lines: &Lines<'_>,
    c: &RawConn,
    f: &dyn Fn(&str) -> String,
    pki: &mut PkiFiles,
    perms: KeyPermissions,
) -> Result<AuthConfig, ConfigError> {
    let kinds = [("psk", AuthKind::Psk), ("pubkey", AuthKind::Pubkey)];
    let local = keyword(lines, &c.local.auth, f("local.auth"), &kinds)?.unwrap_or_default();
    let remote = keyword(lines, &c.remote.auth, f("remote.auth"), &kinds)?.unwrap_or_default();
    let mut auth = AuthConfig {
        local,
        remote,
        ..AuthConfig::default()
    };
    // Fields that belong to the other side or to the other method are refused rather than
    // ignored: they would suggest a check that does not happen.
    for (v, field, why) in [
        (&c.local.cacerts, "local.cacerts", "the CAs that vouch for the peer go in remote.cacerts"),
        (&c.remote.certs, "remote.certs", "the peer's certificate is checked against remote.cacerts; pinning one is not supported"),
    ] {
        if let Some(v) = v {
            return Err(lines.err(v.span(), f(field), why));
        }
    }
    match (local, &c.local.certs) {
        (AuthKind::Pubkey, None) => {
            let at = c
                .local
                .auth
                .as_ref()
                .map_or(c.local.id.span(), |a| a.span());
            return Err(lines.err(
                at,
                f("local.auth"),
                "\"pubkey\" needs our certificate: add certs = [\"FILE\"] (a file in x509/)",
            ));
        }
        (AuthKind::Pubkey, Some(certs)) => {
            let [cert] = &certs.get_ref()[..] else {
                return Err(lines.err(
                    certs.span(),
                    f("local.certs"),
                    "give exactly one certificate (the intermediates that issued it are taken \
                     from x509ca/)",
                ));
            };
            let creds = pki
                .credentials(cert.get_ref(), perms)
                .map_err(|e| lines.err(cert.span(), f("local.certs[0]"), e))?;
            warn_if_id_not_in_cert(&creds, c.local.id.get_ref());
            auth.credentials = Some(creds);
        }
        (AuthKind::Psk, Some(certs)) => {
            return Err(lines.err(
                certs.span(),
                f("local.certs"),
                "only used with auth = \"pubkey\"",
            ))
        }
        (AuthKind::Psk, None) => {}
    }
    match (remote, &c.remote.cacerts) {
        (AuthKind::Pubkey, cacerts) => {
            let names: Option<Vec<String>> = cacerts
                .as_ref()
                .map(|v| v.get_ref().iter().map(|s| s.get_ref().clone()).collect());
            let (span, field) = match (cacerts, &c.remote.auth) {
                (Some(v), _) => (v.span(), "remote.cacerts"),
                (None, Some(a)) => (a.span(), "remote.auth"),
                (None, None) => (c.remote.id.span(), "remote.auth"),
            };
            auth.trust = Some(
                pki.trust(names.as_deref())
                    .map_err(|e| lines.err(span, f(field), e))?,
            );
        }
        (AuthKind::Psk, Some(v)) => {
            return Err(lines.err(
                v.span(),
                f("remote.cacerts"),
                "only used with auth = \"pubkey\"",
            ))
        }
        (AuthKind::Psk, None) => {}
    }
    auth.send_cert = keyword(
        lines,
        &c.send_cert,
        f("send_cert"),
        &[
            ("ifasked", SendCert::IfAsked),
            ("always", SendCert::Always),
            ("never", SendCert::Never),
        ],
    )?
    .unwrap_or_default();
    auth.send_certreq = c.send_certreq.unwrap_or(true);
    if let Some(v) = &c.clock_skew {
        auth.clock_skew_s =
            duration_ms(v.get_ref()).map_err(|e| lines.err(v.span(), f("clock_skew"), e))? / 1000;
    } else {
        auth.clock_skew_s = DEFAULT_CLOCK_SKEW_S;
    }
    Ok(auth)
}

/// strongSwan will not send an identity its certificate does not hold (it finds no key for
/// it); we do, for tests of the peer's check, but say so.
fn warn_if_id_not_in_cert(creds: &Credentials, id: &str) {
    let Some(der) = creds.chain.first() else {
        return;
    };
    let parsed = crate::pki::chain::describe(der);
    let id_v = crate::ike::auth::parse_id(id);
    if let Ok(cert) = parsed {
        if !crate::pki::ident::cert_has_id(&cert, &id_v) {
            tracing::warn!(
                "local.id {id:?} is not in our certificate \"{}\" (its subject, or a \
                 subjectAltName): peers that check it will refuse us",
                cert.subject
            );
        }
    }
}

/// The smallest fragment_size we accept: room for the IP, UDP, IKE header, Encrypted
/// Fragment payload and a cipher block or two (RFC 7383 §2.5.1 takes 576 for IPv4 as the
/// safe minimum; a little below is allowed for tests).
const MIN_FRAGMENT_SIZE: i64 = 256;

/// `fragmentation` and `fragment_size` (RFC 7383).
fn frag_config(
    lines: &Lines<'_>,
    c: &RawConn,
    f: &dyn Fn(&str) -> String,
) -> Result<FragConfig, ConfigError> {
    let mode = keyword(
        lines,
        &c.fragmentation,
        f("fragmentation"),
        &[
            ("yes", FragMode::Yes),
            ("accept", FragMode::Accept),
            ("no", FragMode::No),
        ],
    )?
    .unwrap_or_default();
    let size = match &c.fragment_size {
        None => DEFAULT_FRAGMENT_SIZE,
        Some(v) => {
            let n = *v.get_ref();
            if !(MIN_FRAGMENT_SIZE..=65_535).contains(&n) {
                return Err(lines.err(
                    v.span(),
                    f("fragment_size"),
                    format!(
                        "{n}: use {MIN_FRAGMENT_SIZE} ..= 65535 bytes (the largest IP datagram \
                         a fragment may make; default {DEFAULT_FRAGMENT_SIZE})"
                    ),
                ));
            }
            n as usize
        }
    };
    Ok(FragConfig { mode, size })
}

/// `local_addrs`/`remote_addrs`: every entry an address, no duplicates, and one family
/// across both lists (`family` is the first address seen, shared between the two calls).
fn addrs(
    lines: &Lines<'_>,
    v: &StrList,
    field: &str,
    family: &mut Option<IpAddr>,
) -> Result<Vec<IpAddr>, ConfigError> {
    let mut out: Vec<IpAddr> = Vec::new();
    for (i, s) in v.get_ref().iter().enumerate() {
        let at = |msg: String| lines.err(s.span(), format!("{field}[{i}]"), msg);
        let text = s.get_ref().trim();
        let a: IpAddr = match text.parse() {
            Ok(a) => a,
            Err(_) if text.starts_with('%') => {
                return Err(at(format!(
                    "{text:?}: give an IP address (wildcards are not supported here)"
                )))
            }
            Err(_) => return Err(at(format!("{text:?} is not an IP address"))),
        };
        if a.is_unspecified() || a.is_multicast() {
            return Err(at(format!("{a} cannot be a tunnel endpoint")));
        }
        if out.contains(&a) {
            return Err(at(format!("{a} is listed twice")));
        }
        match family {
            Some(f) if f.is_ipv4() != a.is_ipv4() => {
                return Err(at(format!(
                    "{a} and {f} are of different families: all local_addrs and remote_addrs must be IPv4, or all IPv6"
                )))
            }
            Some(_) => {}
            None => *family = Some(a),
        }
        out.push(a);
    }
    if out.is_empty() {
        return Err(lines.err(v.span(), field.into(), "needs at least one address"));
    }
    Ok(out)
}

/// A swanctl duration in milliseconds: an integer number of seconds, or a string with an
/// optional `s`, `m`, `h` or `d` suffix (either case, spaces allowed before it, as
/// strongSwan's vici parser takes them).
fn duration_ms(v: &toml::Value) -> Result<u64, String> {
    let bad = || format!("{v}: use seconds (30) or a swanctl duration (\"30s\", \"2m\", \"1h\")");
    let (num, unit) = match v {
        toml::Value::Integer(n) => (u64::try_from(*n).map_err(|_| bad())?, 1),
        toml::Value::String(s) => {
            let (digits, suffix) = split_number(s);
            let unit = match suffix {
                "" => 1,
                "s" | "S" => 1,
                "m" | "M" => 60,
                "h" | "H" => 3600,
                "d" | "D" => 86_400,
                _ => return Err(bad()),
            };
            (digits.parse::<u64>().map_err(|_| bad())?, unit)
        }
        _ => return Err(bad()),
    };
    num.checked_mul(unit)
        .and_then(|s| s.checked_mul(1000))
        .ok_or_else(|| format!("{v} is too long"))
}

/// `" 500 M "` → (`"500"`, `"M"`): the leading decimal digits and what follows them,
/// trimmed.
fn split_number(s: &str) -> (&str, &str) {
    let s = s.trim();
    let i = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (&s[..i], s[i..].trim())
}

/// A duration as an operator would write it, for messages: "90s", "2m", "1h", "1d".
fn show_ms(ms: u64) -> String {
    match ms {
        0 => "0".into(),
        _ if ms.is_multiple_of(86_400_000) => format!("{}d", ms / 86_400_000),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// A byte volume for messages: the exact count, with its swanctl form when it has one.
fn show_bytes(b: u64) -> String {
    for (shift, s) in [(30, "G"), (20, "M"), (10, "k")] {
        if b != 0 && b.is_multiple_of(1 << shift) {
            return format!("{}{s}", b >> shift);
        }
    }
    b.to_string()
}

/// One kind of limit (time, bytes or packets) with swanctl's three names.
struct LimitKind {
    rekey: &'static str,
    life: &'static str,
    rand: &'static str,
    parse: fn(&toml::Value) -> Result<u64, String>,
    show: fn(u64) -> String,
    /// The rekey limit when none is given (swanctl's default).
    default_rekey: u64,
}

const CHILD_TIME: LimitKind = LimitKind {
    rekey: "rekey_time",
    life: "life_time",
    rand: "rand_time",
    parse: duration_ms,
    show: show_ms,
    default_rekey: 3_600_000,
};
const CHILD_BYTES: LimitKind = LimitKind {
    rekey: "rekey_bytes",
    life: "life_bytes",
    rand: "rand_bytes",
    parse: bytes_value,
    show: show_bytes,
    default_rekey: 0,
};
const CHILD_PACKETS: LimitKind = LimitKind {
    rekey: "rekey_packets",
    life: "life_packets",
    rand: "rand_packets",
    parse: packets_value,
    show: |n| n.to_string(),
    default_rekey: 0,
};

type Field = Option<Spanned<toml::Value>>;

/// Parse a child's rekey/life/rand limits of one kind and check them against each other:
/// the hard limit must come after the rekey (else the SA dies before it is replaced), and
/// the random spread must stay below the rekey limit (RFC 7296 §2.8: the spread keeps the
/// peers from rekeying at once; it cannot move the rekey to the SA's first instant). 0 is
/// "off" for rekey and life, as in swanctl; what is not given is derived as swanctl does
/// (see [`ChildLifetime::from_swanctl`]), and only what was written is checked.
fn child_limits(
    lines: &Lines<'_>,
    k: &LimitKind,
    [rekey, life, rand]: [&Field; 3],
    field: &dyn Fn(&str) -> String,
) -> Result<Limits, ConfigError> {
    let get = |v: &Field, name: &str| match v {
        None => Ok(None),
        Some(v) => (k.parse)(v.get_ref())
            .map(Some)
            .map_err(|e| lines.err(v.span(), field(name), e)),
    };
    let l = Limits {
        rekey: get(rekey, k.rekey)?,
        life: get(life, k.life)?,
        rand: get(rand, k.rand)?,
    };
    let r = l.rekey.unwrap_or(k.default_rekey);
    let shown_rekey = || match l.rekey {
        Some(_) => (k.show)(r),
        None => format!("{}, the default", (k.show)(r)),
    };
    if let (Some(v), Some(life)) = (life, l.life) {
        if life != 0 && r != 0 && life <= r {
            return Err(lines.err(
                v.span(),
                field(k.life),
                format!(
                    "{} ({}) must be greater than {} ({}): the SA would expire before it is \
                     rekeyed (give 0 for no hard limit)",
                    k.life,
                    (k.show)(life),
                    k.rekey,
                    shown_rekey()
                ),
            ));
        }
    }
    if let (Some(v), Some(rand)) = (rand, l.rand) {
        if r != 0 && rand >= r {
            return Err(lines.err(
                v.span(),
                field(k.rand),
                format!(
                    "{} ({}) must be below {} ({}): the rekey happens up to {} early",
                    k.rand,
                    (k.show)(rand),
                    k.rekey,
                    shown_rekey(),
                    k.rand
                ),
            ));
        }
    }
    Ok(l)
}

/// The IKE SA's lifetime (swanctl `rekey_time`, `reauth_time`, `over_time`, `rand_time`),
/// with the same kind of checks as [`child_limits`].
fn ike_lifetime(
    lines: &Lines<'_>,
    c: &RawConn,
    field: &dyn Fn(&str) -> String,
) -> Result<IkeLifetime, ConfigError> {
    let get = |v: &Field, name: &str| match v {
        None => Ok(None),
        Some(v) => duration_ms(v.get_ref())
            .map(Some)
            .map_err(|e| lines.err(v.span(), field(name), e)),
    };
    let lt = IkeLifetime::from_swanctl(
        get(&c.rekey_time, "rekey_time")?,
        get(&c.reauth_time, "reauth_time")?,
        get(&c.over_time, "over_time")?,
        get(&c.rand_time, "rand_time")?,
    );
    // The first of rekey and reauthentication is what the spread and over_time apply to.
    let (first, name) = match (lt.rekey_ms, lt.reauth_ms) {
        (0, 0) => return Ok(lt),
        (0, a) => (a, "reauth_time"),
        (r, a) if a != 0 && a < r => (a, "reauth_time"),
        (r, _) => (r, "rekey_time"),
    };
    let shown = || {
        let given = match name {
            "rekey_time" => c.rekey_time.is_some(),
            _ => c.reauth_time.is_some(),
        };
        if given {
            show_ms(first)
        } else {
            format!("{}, the default", show_ms(first))
        }
    };
    if let Some(v) = &c.rand_time {
        if lt.rand_ms >= first {
            return Err(lines.err(
                v.span(),
                field("rand_time"),
                format!(
                    "rand_time ({}) must be below {name} ({}): the rekey happens up to \
                     rand_time early",
                    show_ms(lt.rand_ms),
                    shown()
                ),
            ));
        }
    }
    if let (Some(v), 0) = (&c.over_time, lt.over_ms) {
        return Err(lines.err(
            v.span(),
            field("over_time"),
            format!(
                "must be more than 0: the IKE SA is closed over_time after {name} ({}), \
                 and its rekey needs time to complete",
                shown()
            ),
        ));
    }
    Ok(lt)
}

/// IP protocols by name (getprotobyname(3) names, as swanctl accepts them).
const PROTOCOLS: &[(&str, u8)] = &[
    ("icmp", 1),
    ("tcp", 6),
    ("udp", 17),
    ("dccp", 33),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("ipv6-icmp", 58),
    ("icmpv6", 58),
    ("icmp6", 58),
    ("sctp", 132),
    ("udplite", 136),
];

/// A few getservent(3) names; anything else is given as a number.
const SERVICES: &[(&str, u16)] = &[
    ("ftp", 21),
    ("ssh", 22),
    ("telnet", 23),
    ("smtp", 25),
    ("domain", 53),
    ("http", 80),
    ("ntp", 123),
    ("snmp", 161),
    ("ldap", 389),
    ("https", 443),
    ("isakmp", 500),
    ("syslog", 514),
    ("ldaps", 636),
    ("ipsec-nat-t", 4500),
];

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// The protocols whose selectors carry ports (RFC 4301 §4.4.1.1; ICMP's are type/code).
fn has_ports(proto: u8) -> bool {
    matches!(proto, ICMP | 6 | 17 | 33 | ICMPV6 | 132 | 136)
}

fn protocol(p: &str) -> Result<u8, String> {
    let p = p.trim().to_ascii_lowercase();
    if p.is_empty() || p == "%any" || p == "any" {
        return Ok(0);
    }
    if let Ok(n) = p.parse::<u8>() {
        return Ok(n);
    }
    PROTOCOLS
        .iter()
        .find(|(n, _)| *n == p)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            format!(
                "unknown protocol {p:?}: use a number (0-255) or one of {}",
                PROTOCOLS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn port(p: &str) -> Result<u16, String> {
    let p = p.trim();
    p.parse::<u16>()
        .ok()
        .or_else(|| {
            let l = p.to_ascii_lowercase();
            SERVICES.iter().find(|(n, _)| *n == l).map(|(_, v)| *v)
        })
        .ok_or_else(|| format!("{p:?} is not a port (0-65535) or a known service name"))
}

/// The port range of a selector: `%any`, `N`, `N-M`, service names; ICMP values below 256
/// are a message type (all its codes), others type << 8 | code (swanctl.conf(5)).
fn ports(proto: u8, p: &str) -> Result<(u16, u16), String> {
    let p = p.trim();
    if p.is_empty() || p.eq_ignore_ascii_case("%any") {
        return Ok((0, u16::MAX));
    }
    if p.eq_ignore_ascii_case("opaque") {
        return Err("OPAQUE ports (RFC 4301 §4.4.1) are not supported".into());
    }
    if proto == 0 {
        return Err("any protocol has no ports: name one (tcp, udp, sctp, icmp, ...)".into());
    }
    if !has_ports(proto) {
        return Err(format!("protocol {proto} has no ports"));
    }
    let (a, b) = match p.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let a = port(p)?;
            (a, a)
        }
    };
    let (lo, hi) = if matches!(proto, ICMP | ICMPV6) {
        let lo = |v: u16| if v < 256 { v << 8 } else { v };
        let hi = |v: u16| if v < 256 { v << 8 | 0xff } else { v };
        (lo(a), hi(b))
    } else {
        (a, b)
    };
    if lo > hi {
        return Err(format!("port range {p:?} runs backwards"));
    }
    Ok((lo, hi))
}

/// An address range from a prefix (host bits must be clear), a range or one address.
fn address_range(a: &str) -> Result<(IpAddr, IpAddr), String> {
    if let Some((lo, hi)) = a.split_once('-') {
        let bad = || format!("{a:?} is not a prefix, range or address");
        let lo: IpAddr = lo.trim().parse().map_err(|_| bad())?;
        let hi: IpAddr = hi.trim().parse().map_err(|_| bad())?;
        if lo.is_ipv4() != hi.is_ipv4() {
            return Err(format!("range {a:?} mixes IPv4 and IPv6"));
        }
        if lo > hi {
            return Err(format!("range {a:?} runs backwards"));
        }
        return Ok((lo, hi));
    }
    if let Some((addr, len)) = a.split_once('/') {
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let len: u32 = len
            .parse()
            .map_err(|_| format!("{len:?} is not a prefix length"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        if len > bits {
            return Err(format!("/{len} is longer than an {bits}-bit address"));
        }
        let (v, max) = match addr {
            IpAddr::V4(x) => (u128::from(u32::from(x)), u128::from(u32::MAX)),
            IpAddr::V6(x) => (u128::from(x), u128::MAX),
        };
        let host = if len == bits { 0 } else { max >> len };
        let back = |n: u128| match addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
        };
        if v & host != 0 {
            return Err(format!(
                "{a} has host bits set: did you mean {}/{len}?",
                back(v & !host)
            ));
        }
        return Ok((back(v), back(v | host)));
    }
    let x: IpAddr = a
        .parse()
        .map_err(|_| format!("{a:?} is not a prefix, range or address"))?;
    Ok((x, x))
}

/// One traffic selector in swanctl syntax (see the module docs). `dynamic` stands for the
/// connection's own (local_ts) or peer (remote_ts) address.
pub fn parse_selector(s: &str, dynamic: IpAddr) -> Result<Ts, String> {
    let s = s.trim();
    let (addr, sel) = match s.split_once('[') {
        Some((a, rest)) => {
            let inner = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("{s:?}: the [protocol/port] part needs its closing ']'"))?;
            (a.trim(), Some(inner))
        }
        None => (s, None),
    };
    let (proto, port_part) = match sel {
        Some(inner) => match inner.split_once('/') {
            Some((p, q)) => (protocol(p)?, q),
            None => (protocol(inner)?, ""),
        },
        None => (0, ""),
    };
    let (start, end) = match addr {
        "" if sel.is_some() && proto == ICMPV6 => (
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::from(u128::MAX)),
        ),
        "" if sel.is_some() => (
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::BROADCAST),
        ),
        "" => return Err("empty traffic selector".into()),
        "%any" => (
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::BROADCAST),
        ),
        "%any6" => (
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::from(u128::MAX)),
        ),
        "dynamic" => (dynamic, dynamic),
        a => address_range(a)?,
    };
    match (proto, start.is_ipv4()) {
        (ICMP, false) => return Err(format!("{s:?}: icmp is IPv4's; use ipv6-icmp")),
        (ICMPV6, true) => return Err(format!("{s:?}: ipv6-icmp is IPv6's; use icmp")),
        _ => {} // any other protocol suits either family
    }
    let (start_port, end_port) = ports(proto, port_part)?;
    Ok(Ts {
        protocol: proto,
        start_port,
        end_port,
        start,
        end,
    })
}

fn selectors(
    lines: &Lines<'_>,
    v: &StrList,
    field: &str,
    dynamic: IpAddr,
) -> Result<Vec<Ts>, ConfigError> {
    let mut out = Vec::new();
    for (i, s) in v.get_ref().iter().enumerate() {
        out.push(
            parse_selector(s.get_ref(), dynamic)
                .map_err(|e| lines.err(s.span(), format!("{field}[{i}]"), e))?,
        );
    }
    if out.is_empty() {
        return Err(lines.err(
            v.span(),
            field.into(),
            "needs at least one traffic selector",
        ));
    }
    Ok(out)
}

/// `field = "word"` with its allowed words; `None` when absent.
fn keyword<T: Copy>(
    lines: &Lines<'_>,
    v: &Option<Spanned<String>>,
    field: String,
    words: &[(&str, T)],
) -> Result<Option<T>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    words
        .iter()
        .find(|(w, _)| *w == v.get_ref().as_str())
        .map(|(_, t)| Some(*t))
        .ok_or_else(|| {
            let list: Vec<String> = words.iter().map(|(w, _)| format!("{w:?}")).collect();
            lines.err(
                v.span(),
                field,
                format!("{:?}: use {}", v.get_ref(), list.join(", ")),
            )
        })
}

/// FNV-1a (32 bits): small, stable across releases and platforms (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The largest reqid: below the daemon's acquire bit (2^19), itself below the dataplane's
/// outbound table (2^20 reqids); see `daemon::dataplane_ops`.
pub const REQID_MAX: u32 = crate::daemon::dataplane_ops::REQID_LIMIT - 1;

/// The probe after `r`: the next value, wrapping from `REQID_MAX` to 1.
fn next_reqid(r: u32) -> u32 {
    r % REQID_MAX + 1
}

/// A reqid for every (connection, child), unique in the file.
///
/// Why not a counter: the dataplane keeps forwarding on its installed SAs and policies while
/// iked restarts, and they are tied together by reqid. A restarted iked (or one that reloaded
/// a file with connections added or reordered) must hand out the same reqid for the same
/// child, so that its replacement SAs match the policies already installed (make-before-break)
/// and the stale ones are found and removed. So each reqid is FNV-1a of "conn/child" mapped
/// into 1..2^19; on a collision the child later in (connection, child) name order takes the
/// next free value (linear probing, wrapping to 1). Only a colliding name added before it
/// in that order can move a child's reqid, and that shows up as a changed connection in
/// [`IkedConfig::diff`].
pub fn assign_reqids<'a>(
    names: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<(String, String), u32> {
    let sorted: BTreeSet<(&str, &str)> = names.into_iter().collect();
    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    for (conn, child) in sorted {
        let mut r = 1 + fnv1a(format!("{conn}/{child}").as_bytes()) % REQID_MAX;
        while !taken.insert(r) {
            r = next_reqid(r);
        }
        out.insert((conn.to_string(), child.to_string()), r);
    }
    out
}

/// A table's entries in file order (TOML maps come back sorted by name).
fn in_file_order<T>(m: &BTreeMap<String, Spanned<T>>) -> Vec<(&String, &Spanned<T>)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by_key(|(_, t)| t.span().start);
    v
}

/// swanctl's credential directories beside the configuration file (`x509/`, `x509ca/`,
/// `private/`, `x509crl/`), read when a connection first needs them and shared by every
/// connection of the file. Errors are plain strings naming the file; the caller adds the
/// configuration file, line and field.
struct PkiFiles {
    base: PathBuf,
    /// Key files named in `[secrets.*]` entries with `file`.
    secret_keys: Vec<PathBuf>,
    /// Every certificate in `x509ca/`.
    cas: Option<Vec<Vec<u8>>>,
    crls: Option<Vec<Vec<u8>>>,
    /// Every candidate key file with its public key (SubjectPublicKeyInfo DER).
    keys: Option<Vec<(PathBuf, Vec<u8>)>>,
    creds: BTreeMap<PathBuf, Arc<Credentials>>,
    trust: BTreeMap<Option<Vec<PathBuf>>, Arc<TrustStore>>,
}

impl PkiFiles {
    fn new(config_file: &Path) -> PkiFiles {
        PkiFiles {
            base: config_file
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            secret_keys: Vec::new(),
            cas: None,
            crls: None,
            keys: None,
            creds: BTreeMap::new(),
            trust: BTreeMap::new(),
        }
    }

    /// `name` in the directory `sub` beside the configuration file, or as is if absolute.
    fn path(&self, sub: &str, name: &str) -> PathBuf {
        let p = Path::new(name);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(sub).join(p)
        }
    }

    /// The regular files in `sub`, by name; none if the directory does not exist.
    fn files(&self, sub: &str) -> Result<Vec<PathBuf>, String> {
        let dir = self.base.join(sub);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: cannot read the directory: {e}", dir.display())),
        };
        let mut out = Vec::new();
        for e in entries {
            let p = e
                .map_err(|e| format!("{}: cannot read the directory: {e}", dir.display()))?
                .path();
            if p.is_file() {
                out.push(p);
            }
        }
        out.sort();
        Ok(out)
    }

    fn cas(&mut self) -> Result<&[Vec<u8>], String> {
        if self.cas.is_none() {
            let mut all = Vec::new();
            for f in self.files("x509ca")? {
                all.extend(read_certs(&f).map_err(|e| e.to_string())?);
            }
            self.cas = Some(all);
        }
        Ok(self.cas.as_deref().unwrap_or(&[]))
    }

    /// Every key we might use, with its public key: the `[secrets]` files, then `private/`.
    fn keys(&mut self) -> Result<&[(PathBuf, Vec<u8>)], String> {
        if self.keys.is_none() {
            let mut files = self.secret_keys.clone();
            for f in self.files("private")? {
                if !files.contains(&f) {
                    files.push(f);
                }
            }
            let mut keys = Vec::new();
            for f in files {
                // The mode is checked on the key that is used (below), not on every file.
                let k =
                    read_key(&f, KeyPermissions::AllowLooseForTests).map_err(|e| e.to_string())?;
                keys.push((f, k.public_spki_der()));
            }
            self.keys = Some(keys);
        }
        Ok(self.keys.as_deref().unwrap_or(&[]))
    }

    /// Our certificate `cert` (a file name in `x509/`), the intermediates from `x509ca/`
    /// that issued it, and the private key that belongs to it.
    fn credentials(
        &mut self,
        cert: &str,
        perms: KeyPermissions,
    ) -> Result<Arc<Credentials>, String> {
        let path = self.path("x509", cert);
        if let Some(c) = self.creds.get(&path) {
            return Ok(c.clone());
        }
        let mut chain = read_certs(&path).map_err(|e| e.to_string())?;
        let ours = chain[0].clone();
        for im in crate::pki::store::issuers_of(&ours, self.cas()?) {
            if !chain.contains(&im) {
                chain.push(im);
            }
        }
        let spki = crate::pki::chain::Cert::parse(&ours, &path.display().to_string())
            .map_err(|e| e.to_string())?
            .spki_der;
        let key_file = self
            .keys()?
            .iter()
            .find(|(_, k)| *k == spki)
            .map(|(f, _)| f.clone())
            .ok_or_else(|| {
                format!(
                    "no private key in {} or a [secrets] file entry belongs to the certificate \
                     in {}",
                    self.base.join("private").display(),
                    path.display()
                )
            })?;
        let key = read_key(&key_file, perms).map_err(|e| e.to_string())?;
        let c = Arc::new(Credentials::new(chain, key).map_err(|e| e.to_string())?);
        self.creds.insert(path, c.clone());
        Ok(c)
    }

    /// The trust anchors (`cacerts` file names in `x509ca/`, or every self-signed
    /// certificate there), the other CAs of `x509ca/` as intermediates, and every CRL of
    /// `x509crl/`.
    fn trust(&mut self, cacerts: Option<&[String]>) -> Result<Arc<TrustStore>, String> {
        let named: Option<Vec<PathBuf>> =
            cacerts.map(|v| v.iter().map(|n| self.path("x509ca", n)).collect());
        if let Some(t) = self.trust.get(&named) {
            return Ok(t.clone());
        }
        let all = self.cas()?.to_vec();
        let anchors: Vec<Vec<u8>> = match &named {
            Some(files) => {
                let mut a = Vec::new();
                for f in files {
                    a.extend(read_certs(f).map_err(|e| e.to_string())?);
                }
                a
            }
            None => all
                .iter()
                .filter(|d| crate::pki::store::is_self_issued(d))
                .cloned()
                .collect(),
        };
        if anchors.is_empty() {
            return Err(format!(
                "no trust anchor: {} holds no self-signed CA certificate (put the root CA \
                 there, or name the CAs to trust in remote.cacerts)",
                self.base.join("x509ca").display()
            ));
        }
        if self.crls.is_none() {
            let mut crls = Vec::new();
            for f in self.files("x509crl")? {
                crls.extend(read_crls(&f).map_err(|e| e.to_string())?);
            }
            self.crls = Some(crls);
        }
        let t = Arc::new(TrustStore {
            intermediates: all.into_iter().filter(|d| !anchors.contains(d)).collect(),
            anchors,
            crls: self.crls.clone().unwrap_or_default(),
        });
        self.trust.insert(named, t.clone());
        Ok(t)
    }
}

/// Whether a key file entry: `[secrets.NAME]` with `file` (a private key in `private/`),
/// else a pre-shared key with `id` and `secret`. Each must have what its kind needs.
fn check_secret(lines: &Lines<'_>, name: &str, s: &Spanned<RawSecret>) -> Result<(), ConfigError> {
    let r = s.get_ref();
    let field = |x: &str| format!("secrets.{name}.{x}");
    match (&r.file, &r.id, &r.secret) {
        (Some(_), None, None) => Ok(()),
        (Some(f), _, _) => Err(lines.err(
            f.span(),
            field("file"),
            "a key file entry takes only `file` (encrypted private keys are not supported, \
             and the key is found by the certificate, not by id)",
        )),
        (None, Some(_), Some(_)) => Ok(()),
        (None, None, _) => Err(lines.err(
            s.span(),
            field("id"),
            "a pre-shared key needs `id` (the identities it is for) and `secret`; a private \
             key needs `file`",
        )),
        (None, Some(_), None) => Err(lines.err(
            s.span(),
            field("secret"),
            "missing: give the pre-shared key",
        )),
    }
}

impl IkedConfig {
    pub fn load(path: &Path) -> Result<IkedConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            field: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        IkedConfig::parse(path, &text)
    }

    pub fn parse(file: &Path, text: &str) -> Result<IkedConfig, ConfigError> {
        IkedConfig::parse_with(file, text, KeyPermissions::Strict)
    }

    /// [`IkedConfig::parse`] accepting private key files that group or others may read:
    /// for tests, whose fixtures git checks out 0644. The daemon never uses it.
    pub fn parse_allowing_loose_key_permissions(
        file: &Path,
        text: &str,
    ) -> Result<IkedConfig, ConfigError> {
        IkedConfig::parse_with(file, text, KeyPermissions::AllowLooseForTests)
    }

    fn parse_with(
        file: &Path,
        text: &str,
        perms: KeyPermissions,
    ) -> Result<IkedConfig, ConfigError> {
        let lines = Lines { file, text };
        let raw: RawFile = deserialize_toml(&lines)?;
        let reqids = assign_reqids(raw.connections.iter().flat_map(|(conn, c)| {
            c.get_ref()
                .children
                .get_ref()
                .keys()
                .map(move |child| (conn.as_str(), child.as_str()))
        }));
        IkedConfig::build(&lines, &raw, &reqids, perms)
    }

    fn build(
        lines: &Lines<'_>,
        raw: &RawFile,
        reqids: &BTreeMap<(String, String), u32>,
        perms: KeyPermissions,
    ) -> Result<IkedConfig, ConfigError> {
        if raw.connections.is_empty() {
            // An empty file would make a reload drop every tunnel: refuse it.
            return Err(ConfigError {
                file: lines.file.to_path_buf(),
                line: 0,
                field: "connections".into(),
                message: "no connection is configured: add a [connections.NAME] table \
                          (use `vpnctl down` to stop tunnels)"
                    .into(),
            });
        }
        let mut pki = PkiFiles::new(lines.file);
        for (name, s) in &raw.secrets {
            check_secret(lines, name, s)?;
            if let Some(f) = &s.get_ref().file {
                let path = pki.path("private", f.get_ref());
                pki.secret_keys.push(path);
            }
        }
        let mut connections = Vec::new();
        for (name, c) in in_file_order(&raw.connections) {
            connections.push(conn_config(
                lines,
                raw,
                name,
                c.get_ref(),
                reqids,
                &mut pki,
                perms,
            )?);
        }
        Ok(IkedConfig { connections })
    }

    /// The connection called `name`.
    pub fn get(&self, name: &str) -> Option<&ConnConfig> {
        self.connections.iter().find(|c| c.connection.name == name)
    }

    /// What applying `new` over `self` does to each connection.
    pub fn diff(&self, new: &IkedConfig) -> ConfigDiff {
        let mut d = ConfigDiff::default();
        for n in &new.connections {
            let name = n.connection.name.clone();
            match self.get(&name) {
                None => d.added.push(name),
                Some(o) if o.same_as(n) => d.unchanged.push(name),
                Some(_) => d.changed.push(name),
            }
        }
        for o in &self.connections {
            if new.get(&o.connection.name).is_none() {
                d.removed.push(o.connection.name.clone());
            }
        }
        d
    }
}

fn conn_config(
    lines: &Lines<'_>,
    raw: &RawFile,
    name: &str,
    c: &RawConn,
    reqids: &BTreeMap<(String, String), u32>,
    pki: &mut PkiFiles,
    perms: KeyPermissions,
) -> Result<ConnConfig, ConfigError> {
    let f = |x: &str| format!("connections.{name}.{x}");
    let mut family = None;
    let local_addrs = addrs(lines, &c.local_addrs, &f("local_addrs"), &mut family)?;
    let remote_addrs = addrs(lines, &c.remote_addrs, &f("remote_addrs"), &mut family)?;
    let mut ike = Vec::new();
    for p in c.proposals.get_ref() {
        ike.push(
            p.parse::<IkeProposal>()
                .map_err(|e| lines.err(c.proposals.span(), f("proposals"), e.to_string()))?,
        );
    }
    if ike.is_empty() {
        return Err(lines.err(
            c.proposals.span(),
            f("proposals"),
            "needs at least one proposal",
        ));
    }
    let (local_id, remote_id) = (c.local.id.get_ref().clone(), c.remote.id.get_ref().clone());
    for (end, e) in [("local", &c.local), ("remote", &c.remote)] {
        let id = e.id.get_ref();
        // strongSwan reads anything with '=' as a DN; a typo there would silently become an
        // FQDN no certificate holds.
        if id.contains('=') {
            if let Err(why) = crate::pki::ident::parse_dn(id) {
                return Err(lines.err(
                    e.id.span(),
                    f(&format!("{end}.id")),
                    format!("{why}: a distinguished name is written C=CH, O=example, CN=gw-a"),
                ));
            }
        }
    }
    let auth = auth_config(lines, c, &f, pki, perms)?;
    let psk = if auth.local == AuthKind::Psk || auth.remote == AuthKind::Psk {
        pre_shared_key(lines, raw, c, &f, &local_id, &remote_id)?
    } else {
        Zeroizing::new(Vec::new())
    };
    let fragmentation = frag_config(lines, c, &f)?;
    let duration = |v: &Option<Spanned<toml::Value>>, field: &str, default: u64| match v {
        None => Ok(default),
        Some(v) => duration_ms(v.get_ref()).map_err(|e| lines.err(v.span(), f(field), e)),
    };
    let dpd_delay_ms = duration(&c.dpd_delay, "dpd_delay", 0)?;
    let dpd_timeout_ms = duration(&c.dpd_timeout, "dpd_timeout", DEFAULT_DPD_TIMEOUT_MS)?;
    if let (Some(t), 0) = (&c.dpd_timeout, dpd_timeout_ms) {
        return Err(lines.err(
            t.span(),
            f("dpd_timeout"),
            "must be more than 0: a probe needs time to be answered",
        ));
    }

    let lifetime = ike_lifetime(lines, c, &f)?;

    let mut children = Vec::new();
    let mut child_cfgs = Vec::new();
    for (child, ch) in in_file_order(c.children.get_ref()) {
        let ch = ch.get_ref();
        let g = |x: &str| format!("connections.{name}.children.{child}.{x}");
        let local_ts = selectors(lines, &ch.local_ts, &g("local_ts"), local_addrs[0])?;
        let remote_ts = selectors(lines, &ch.remote_ts, &g("remote_ts"), remote_addrs[0])?;
        let mut esp = Vec::new();
        for p in ch.esp_proposals.get_ref() {
            esp.push(p.parse::<EspProposal>().map_err(|e| {
                lines.err(ch.esp_proposals.span(), g("esp_proposals"), e.to_string())
            })?);
        }
        if esp.is_empty() {
            return Err(lines.err(
                ch.esp_proposals.span(),
                g("esp_proposals"),
                "needs at least one proposal",
            ));
        }
        let transport = keyword(
            lines,
            &ch.mode,
            g("mode"),
            &[("tunnel", false), ("transport", true)],
        )?
        .unwrap_or(false);
        let start_action = keyword(
            lines,
            &ch.start_action,
            g("start_action"),
            &[
                ("none", StartAction::None),
                ("start", StartAction::Start),
                ("trap", StartAction::Trap),
            ],
        )?
        .unwrap_or(StartAction::None);
        let dpd_action = keyword(
            lines,
            &ch.dpd_action,
            g("dpd_action"),
            &[
                ("clear", DpdAction::Clear),
                ("trap", DpdAction::Trap),
                ("restart", DpdAction::Restart),
            ],
        )?
        .unwrap_or_default();
        let close_action = keyword(
            lines,
            &ch.close_action,
            g("close_action"),
            &[
                ("none", CloseAction::None),
                ("trap", CloseAction::Trap),
                ("start", CloseAction::Start),
            ],
        )?
        .unwrap_or_default();
        let time = child_limits(
            lines,
            &CHILD_TIME,
            [&ch.rekey_time, &ch.life_time, &ch.rand_time],
            &g,
        )?;
        let bytes = child_limits(
            lines,
            &CHILD_BYTES,
            [&ch.rekey_bytes, &ch.life_bytes, &ch.rand_bytes],
            &g,
        )?;
        let packets = child_limits(
            lines,
            &CHILD_PACKETS,
            [&ch.rekey_packets, &ch.life_packets, &ch.rand_packets],
            &g,
        )?;
        let reqid = reqids
            .get(&(name.to_string(), child.clone()))
            .copied()
            .ok_or_else(|| lines.err(c.children.span(), g("reqid"), "no reqid was assigned"))?;
        let replay_window = match &ch.replay_window {
            None => DEFAULT_REPLAY_WINDOW,
            Some(v) => {
                let w = *v.get_ref();
                let max = i64::from(dataplane::esp::replay::MAX_WINDOW);
                if w != 0 && !(64..=max).contains(&w) {
                    return Err(lines.err(
                        v.span(),
                        g("replay_window"),
                        format!("{w}: use 0 (no replay check) or 64 ..= {max} packets"),
                    ));
                }
                w as u32
            }
        };
        let per_resource_sas = match &ch.per_resource_sas {
            None => PerResource::Off,
            Some(v) => match v.get_ref() {
                toml::Value::String(s) if s == "off" || s == "no" => PerResource::Off,
                toml::Value::String(s) if s == "auto" => PerResource::Auto,
                toml::Value::Integer(0) => PerResource::Off,
                toml::Value::Integer(n) if (1..=64).contains(n) => PerResource::Count(*n as u16),
                other => {
                    return Err(lines.err(
                        v.span(),
                        g("per_resource_sas"),
                        format!("{other}: use \"auto\" (one per dataplane worker), \"off\", or 1 ..= 64 (RFC 9611 per-resource Child SAs)"),
                    ))
                }
            },
        };
        children.push(ChildConfig {
            name: child.clone(),
            start_action,
            dpd_action,
            close_action,
            reqid,
            replay_window,
            per_resource_sas,
        });
        child_cfgs.push(ChildCfg {
            per_resource: per_resource_sas.resolve(1),
            name: child.clone(),
            esp,
            local_ts,
            remote_ts,
            transport,
            lifetime: ChildLifetime::from_swanctl(time, bytes, packets),
        });
    }
    if children.is_empty() {
        return Err(lines.err(
            c.children.span(),
            f("children"),
            "needs a child: add a [connections.NAME.children.CHILD] table",
        ));
    }
    let parts = IkeParts {
        name: name.to_string(),
        local: local_addrs[0],
        remote: remote_addrs[0],
        local_id,
        remote_id,
        psk,
        ike,
        force_encap: c.encap,
        retransmit_ms: c.retransmit_ms.unwrap_or(1000),
        retransmit_tries: c.retransmit_tries.unwrap_or(5),
        lifetime,
        auth,
        fragmentation,
    };
    Ok(ConnConfig {
        connection: connection(parts, &child_cfgs),
        local_addrs,
        remote_addrs,
        dpd_delay_ms,
        dpd_timeout_ms,
        children,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two connections to the same peer; the first has two children, given in an order that
    /// is not alphabetical, and two peer addresses.
    const GOOD: &str = r#"
[connections.gw-b]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2", "192.0.2.3"]
proposals = ["aes128gcm16-prfsha256-x25519", "aes256-sha256-modp2048"]
dpd_delay = "10s"
dpd_timeout = "2m"

[connections.gw-b.local]
id = "gw-a.example"
auth = "psk"

[connections.gw-b.remote]
id = "gw-b.example"

[connections.gw-b.children.net]
local_ts = ["10.1.0.0/16"]
remote_ts = ["10.2.0.0/16", "10.3.0.5[tcp/443]"]
esp_proposals = ["aes128gcm16", "aes256-sha256"]
start_action = "trap"
dpd_action = "restart"
close_action = "start"

[connections.gw-b.children.alpha]
local_ts = ["10.1.9.0/24[udp]"]
remote_ts = ["dynamic[47]"]
esp_proposals = ["aes256gcm16"]
mode = "transport"

[connections.gw-b-voice]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
proposals = ["aes128gcm16-prfsha256-x25519"]
dpd_delay = 30

[connections.gw-b-voice.local]
id = "gw-a.example"

[connections.gw-b-voice.remote]
id = "gw-b.example"

[connections.gw-b-voice.children.rtp]
local_ts = ["10.1.0.0/16[udp/10000-20000]"]
remote_ts = ["10.2.0.0/16[udp/10000-20000]"]
esp_proposals = ["aes128gcm16"]
start_action = "start"

[secrets.ike]
id = ["gw-a.example", "gw-b.example"]
secret = "correct horse battery staple"
"#;

    fn parse(text: &str) -> Result<IkedConfig, ConfigError> {
        IkedConfig::parse(Path::new("iked.toml"), text)
    }

    fn ts(proto: u8, ports: (u16, u16), start: &str, end: &str) -> Ts {
        Ts {
            protocol: proto,
            start_port: ports.0,
            end_port: ports.1,
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
        }
    }

    const ANY: (u16, u16) = (0, u16::MAX);

    #[test]
    fn a_swanctl_like_file_parses() {
        let c = parse(GOOD).unwrap();
        let names: Vec<_> = c
            .connections
            .iter()
            .map(|c| &c.connection.name[..])
            .collect();
        assert_eq!(names, ["gw-b", "gw-b-voice"], "two connections to one peer");
        let cc = &c.connections[0];
        assert_eq!(cc.connection.ike.len(), 2);
        assert_eq!(&cc.connection.psk[..], b"correct horse battery staple");
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(cc.local_addrs, [a("192.0.2.1")]);
        assert_eq!(cc.remote_addrs, [a("192.0.2.2"), a("192.0.2.3")]);
        assert_eq!(cc.connection.local, "192.0.2.1:500".parse().unwrap());
        assert_eq!(cc.connection.remote, "192.0.2.2:500".parse().unwrap());
        assert_eq!((cc.dpd_delay_ms, cc.dpd_timeout_ms), (10_000, 120_000));

        // Both children, in file order (not name order), each with its own settings.
        let kids: Vec<_> = cc.children.iter().map(|c| &c.name[..]).collect();
        assert_eq!(kids, ["net", "alpha"]);
        let ike: Vec<_> = cc.child_cfgs().iter().map(|c| &c.name[..]).collect();
        assert_eq!(ike, kids);
        let (net, alpha) = (&cc.children[0], &cc.children[1]);
        assert_eq!(
            (net.start_action, net.dpd_action, net.close_action),
            (StartAction::Trap, DpdAction::Restart, CloseAction::Start)
        );
        assert_eq!(
            (alpha.start_action, alpha.dpd_action, alpha.close_action),
            (StartAction::None, DpdAction::Clear, CloseAction::None),
            "swanctl's defaults"
        );
        let (net_ike, alpha_ike) = (&cc.child_cfgs()[0], &cc.child_cfgs()[1]);
        assert_eq!(net_ike.esp.len(), 2);
        assert!(!net_ike.transport && alpha_ike.transport);
        assert_eq!(
            net_ike.remote_ts,
            [
                ts(0, ANY, "10.2.0.0", "10.2.255.255"),
                ts(6, (443, 443), "10.3.0.5", "10.3.0.5")
            ]
        );
        assert_eq!(alpha_ike.local_ts, [ts(17, ANY, "10.1.9.0", "10.1.9.255")]);
        // `dynamic` is the peer's (first) address for remote_ts.
        assert_eq!(alpha_ike.remote_ts, [ts(47, ANY, "192.0.2.2", "192.0.2.2")]);
        assert_eq!(cc.connection.children[0].remote_ts, net_ike.remote_ts);

        let voice = &c.connections[1];
        assert_eq!((voice.dpd_delay_ms, voice.dpd_timeout_ms), (30_000, 30_000));
        assert_eq!(voice.children[0].start_action, StartAction::Start);
        assert_eq!(
            voice.child_cfgs()[0].local_ts,
            [ts(17, (10_000, 20_000), "10.1.0.0", "10.1.255.255")]
        );
        // dpd off unless asked; reqids differ.
        let no_dpd = parse(&GOOD.replace("dpd_delay = \"10s\"\n", "")).unwrap();
        assert_eq!(no_dpd.connections[0].dpd_delay_ms, 0);
        let mut reqids: Vec<u32> = c
            .connections
            .iter()
            .flat_map(|c| c.children.iter().map(|ch| ch.reqid))
            .collect();
        reqids.sort_unstable();
        reqids.dedup();
        assert_eq!(reqids.len(), 3);
        assert!(!format!("{:?}", cc.connection).is_empty());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        for (from, to, field, what) in [
            (
                "aes128gcm16-prfsha256-x25519\", \"aes256-sha256-modp2048",
                "3des-sha256-modp2048",
                "connections.gw-b.proposals",
                "RFC 8247",
            ),
            (
                "start_action = \"trap\"",
                "start_action = \"later\"",
                "children.net.start_action",
                "\"none\"",
            ),
            (
                "\"192.0.2.2\", \"192.0.2.3\"",
                "\"192.0.2.2\", \"gw-b\"",
                "connections.gw-b.remote_addrs[1]",
                "not an IP address",
            ),
            (
                "\"192.0.2.2\", \"192.0.2.3\"",
                "\"192.0.2.2\", \"192.0.2.2\"",
                "connections.gw-b.remote_addrs[1]",
                "listed twice",
            ),
            (
                "\"192.0.2.2\", \"192.0.2.3\"",
                "\"192.0.2.2\", \"2001:db8::3\"",
                "connections.gw-b.remote_addrs[1]",
                "different families",
            ),
            (
                "\"192.0.2.2\", \"192.0.2.3\"",
                "\"%any\"",
                "connections.gw-b.remote_addrs[0]",
                "give an IP address",
            ),
            (
                "correct horse battery staple",
                "short",
                "secrets.ike.secret",
                "16 characters",
            ),
            (
                "id = [\"gw-a.example\", \"gw-b.example\"]",
                "id = [\"gw-x.example\"]",
                "remote.id",
                "no [secrets]",
            ),
            (
                "auth = \"psk\"",
                "auth = \"pubkey\"",
                "local.auth",
                "needs our certificate",
            ),
            (
                "auth = \"psk\"",
                "auth = \"eap\"",
                "local.auth",
                "\"psk\", \"pubkey\"",
            ),
            (
                "esp_proposals = [\"aes128gcm16\", \"aes256-sha256\"]",
                "esp_proposal = [\"aes128gcm16\"]",
                "children.net",
                "unknown field",
            ),
            (
                "\"10.3.0.5[tcp/443]\"",
                "\"10.3.0.5[tcpp/443]\"",
                "connections.gw-b.children.net.remote_ts[1]",
                "unknown protocol \"tcpp\"",
            ),
            (
                "\"10.3.0.5[tcp/443]\"",
                "\"10.3.0.5[tcp/70000]\"",
                "children.net.remote_ts[1]",
                "not a port",
            ),
            (
                "\"10.3.0.5[tcp/443]\"",
                "\"10.3.0.5[47/443]\"",
                "children.net.remote_ts[1]",
                "protocol 47 has no ports",
            ),
            (
                "\"10.3.0.5[tcp/443]\"",
                "\"10.3.0.0/8\"",
                "children.net.remote_ts[1]",
                "did you mean 10.0.0.0/8",
            ),
            (
                "local_ts = [\"10.1.9.0/24[udp]\"]",
                "local_ts = [\"10.1.9.0/24[udp\"]",
                "children.alpha.local_ts[0]",
                "closing ']'",
            ),
            (
                "local_ts = [\"10.1.9.0/24[udp]\"]",
                "local_ts = []",
                "children.alpha.local_ts",
                "at least one traffic selector",
            ),
            (
                "dpd_delay = \"10s\"",
                "dpd_delay = \"10 parsecs\"",
                "connections.gw-b.dpd_delay",
                "swanctl duration",
            ),
            (
                "dpd_timeout = \"2m\"",
                "dpd_timeout = -5",
                "connections.gw-b.dpd_timeout",
                "swanctl duration",
            ),
            (
                "dpd_timeout = \"2m\"",
                "dpd_timeout = \"0s\"",
                "connections.gw-b.dpd_timeout",
                "more than 0",
            ),
            (
                "dpd_action = \"restart\"",
                "dpd_action = \"hold\"",
                "children.net.dpd_action",
                "\"clear\", \"trap\", \"restart\"",
            ),
            (
                "close_action = \"start\"",
                "close_action = \"restart\"",
                "children.net.close_action",
                "\"none\", \"trap\", \"start\"",
            ),
            (
                "mode = \"transport\"",
                "mode = \"beet\"",
                "children.alpha.mode",
                "\"tunnel\"",
            ),
        ] {
            assert!(GOOD.contains(from), "{from}");
            let text = GOOD.replacen(from, to, 1);
            // The error points at the line we broke (for a missing secret: the peer's ID).
            let marker = if field == "remote.id" {
                "id = \"gw-b.example\""
            } else {
                to
            };
            let line = text.lines().position(|l| l.contains(marker)).unwrap() + 1;
            let e = parse(&text).unwrap_err();
            let s = e.to_string();
            assert!(
                s.starts_with(&format!("iked.toml:{line}:")),
                "line {line}: {s}"
            );
            assert!(s.contains(field) && s.contains(what), "{s}");
        }
    }

    #[test]
    fn a_file_without_connections_is_refused() {
        for text in [
            "",
            "# nothing yet\n",
            "[connections]\n",
            "[secrets.ike]\nid = \"gw-b.example\"\nsecret = \"correct horse battery staple\"\n",
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.file, Path::new("iked.toml"));
            let s = e.to_string();
            assert!(
                s.starts_with("iked.toml: ") && s.contains("no connection is configured"),
                "{text:?}: {s}"
            );
        }
        // A connection without children is refused as well.
        let (conn, _) = GOOD.split_at(GOOD.find("[connections.gw-b.children.net]").unwrap());
        let secrets = &GOOD[GOOD.find("[secrets.ike]").unwrap()..];
        let text = format!("{conn}{secrets}").replace("dpd_timeout = \"2m\"", "children = {}");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("connections.gw-b.children") && e.contains("needs a child"),
            "{e}"
        );
    }

    #[test]
    fn selectors_in_swanctl_syntax() {
        let dynamic: IpAddr = "192.0.2.9".parse().unwrap();
        let all4 = ("0.0.0.0", "255.255.255.255");
        let all6 = ("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
        for (text, want) in [
            ("10.1.0.0/24", ts(0, ANY, "10.1.0.0", "10.1.0.255")),
            (
                "10.1.0.0/24[tcp/443]",
                ts(6, (443, 443), "10.1.0.0", "10.1.0.255"),
            ),
            ("10.1.0.0/24[udp]", ts(17, ANY, "10.1.0.0", "10.1.0.255")),
            (
                "10.1.0.0/24[UDP/%any]",
                ts(17, ANY, "10.1.0.0", "10.1.0.255"),
            ),
            (
                "10.1.0.5[tcp/1024-2048]",
                ts(6, (1024, 2048), "10.1.0.5", "10.1.0.5"),
            ),
            (
                "10.1.0.5[tcp/https]",
                ts(6, (443, 443), "10.1.0.5", "10.1.0.5"),
            ),
            (" 10.1.0.5-10.1.0.9 ", ts(0, ANY, "10.1.0.5", "10.1.0.9")),
            ("[icmp]", ts(1, ANY, all4.0, all4.1)),
            // ICMP: below 256 a type (all its codes), else type << 8 | code.
            ("[icmp/8]", ts(1, (0x0800, 0x08ff), all4.0, all4.1)),
            ("[icmp/771]", ts(1, (0x0303, 0x0303), all4.0, all4.1)),
            ("[ipv6-icmp/128]", ts(58, (0x8000, 0x80ff), all6.0, all6.1)),
            ("[47]", ts(47, ANY, all4.0, all4.1)),
            ("%any", ts(0, ANY, all4.0, all4.1)),
            ("%any6", ts(0, ANY, all6.0, all6.1)),
            ("0.0.0.0/0", ts(0, ANY, all4.0, all4.1)),
            ("::/0[tcp/22]", ts(6, (22, 22), all6.0, all6.1)),
            (
                "2001:db8:a::/64",
                ts(0, ANY, "2001:db8:a::", "2001:db8:a::ffff:ffff:ffff:ffff"),
            ),
            ("10.1.0.5/32", ts(0, ANY, "10.1.0.5", "10.1.0.5")),
            (
                "dynamic[udp/500]",
                ts(17, (500, 500), "192.0.2.9", "192.0.2.9"),
            ),
            ("10.0.0.0/8[%any]", ts(0, ANY, "10.0.0.0", "10.255.255.255")),
        ] {
            assert_eq!(parse_selector(text, dynamic), Ok(want), "{text}");
        }
        for (text, why) in [
            ("", "empty"),
            ("10.1.0.0/33", "longer than"),
            ("10.1.0.1/24", "host bits"),
            ("10.1.0.9-10.1.0.5", "backwards"),
            ("10.1.0.5-2001:db8::1", "mixes"),
            ("10.1.0.0/24[tcp/2048-1024]", "backwards"),
            ("10.1.0.0/24[tcp/opaque]", "OPAQUE"),
            ("10.1.0.0/24[%any/80]", "any protocol has no ports"),
            ("10.1.0.0/24[256]", "unknown protocol"),
            ("2001:db8::/32[icmp]", "use ipv6-icmp"),
            ("10.0.0.0/8[ipv6-icmp]", "use icmp"),
            ("10.0.0.0/8[tcp/80", "closing"),
            ("gw-b", "not a prefix"),
        ] {
            let e = parse_selector(text, dynamic).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn replay_window_defaults_large_and_is_checked() {
        let c = parse(GOOD).unwrap();
        assert_eq!(
            c.connections[0].children[0].replay_window,
            DEFAULT_REPLAY_WINDOW
        );
        let with = |w: &str| {
            GOOD.replacen(
                "start_action = \"start\"\n",
                &format!("start_action = \"start\"\nreplay_window = {w}\n"),
                1,
            )
        };
        let c = parse(&with("0")).unwrap();
        let w: Vec<u32> = c
            .connections
            .iter()
            .flat_map(|c| c.children.iter().map(|k| k.replay_window))
            .collect();
        assert!(w.contains(&0), "{w:?}");
        let e = parse(&with("10")).unwrap_err();
        assert!(e.field.ends_with(".replay_window"), "{e}");
        assert!(e.to_string().contains("64 ..= 65536"), "{e}");
    }

    #[test]
    fn durations_as_swanctl_writes_them() {
        for (v, ms) in [
            (toml::Value::Integer(30), 30_000),
            (toml::Value::Integer(0), 0),
            (toml::Value::String("45".into()), 45_000),
            (toml::Value::String("30s".into()), 30_000),
            (toml::Value::String("2m".into()), 120_000),
            (toml::Value::String("1h".into()), 3_600_000),
            (toml::Value::String("1d".into()), 86_400_000),
        ] {
            assert_eq!(duration_ms(&v), Ok(ms), "{v}");
        }
        for v in [
            toml::Value::Integer(-1),
            toml::Value::String("".into()),
            toml::Value::String("s".into()),
            toml::Value::String("5ms".into()),
            toml::Value::String("1.5h".into()),
            toml::Value::Float(1.5),
            toml::Value::String("99999999999999999999d".into()),
        ] {
            assert!(duration_ms(&v).is_err(), "{v}");
        }
    }

    /// GOOD with `conn` added to [connections.gw-b] and `child` to its child `net`.
    fn with_lifetimes(conn: &str, child: &str) -> String {
        GOOD.replacen(
            "dpd_timeout = \"2m\"\n",
            &format!("dpd_timeout = \"2m\"\n{conn}"),
            1,
        )
        .replacen(
            "close_action = \"start\"\n",
            &format!("close_action = \"start\"\n{child}"),
            1,
        )
    }

    #[test]
    fn lifetimes_as_swanctl_writes_them() {
        let text = with_lifetimes(
            "rekey_time = \"2h\"\nreauth_time = \"1d\"\nover_time = \"10m\"\nrand_time = 300\n",
            "rekey_time = \"20s\"\nlife_time = \"1m\"\nrand_time = \"5s\"\n\
             rekey_bytes = \"500M\"\nlife_bytes = \"1g\"\nrand_bytes = 1048576\n\
             rekey_packets = 1000000\nlife_packets = \"1200000\"\nrand_packets = 0\n",
        );
        let c = parse(&text).unwrap();
        let gw = &c.connections[0];
        assert_eq!(
            gw.connection.lifetime,
            IkeLifetime {
                rekey_ms: 7_200_000,
                reauth_ms: 86_400_000,
                over_ms: 600_000,
                rand_ms: 300_000,
            }
        );
        let net = &gw.child_cfgs()[0];
        assert_eq!(net.name, "net");
        assert_eq!(
            net.lifetime,
            ChildLifetime {
                rekey_ms: 20_000,
                life_ms: 60_000,
                rand_ms: 5_000,
                rekey_bytes: 500 << 20,
                life_bytes: 1 << 30,
                rand_bytes: 1 << 20,
                rekey_packets: 1_000_000,
                life_packets: 1_200_000,
                rand_packets: 0,
            }
        );
        assert_eq!(gw.connection.children[0].lifetime, net.lifetime);
        // The other child and the other connection keep strongSwan's defaults.
        let alpha = &gw.child_cfgs()[1];
        assert_eq!(alpha.lifetime, ChildLifetime::default());
        assert_eq!(
            (
                alpha.lifetime.rekey_ms,
                alpha.lifetime.life_ms,
                alpha.lifetime.rand_ms
            ),
            (3_600_000, 3_960_000, 360_000),
            "child: 1 h, life +10 %, rand the difference"
        );
        assert_eq!(
            (alpha.lifetime.rekey_bytes, alpha.lifetime.life_packets),
            (0, 0),
            "no traffic limits unless asked"
        );
        let voice = &c.connections[1];
        assert_eq!(voice.connection.lifetime, IkeLifetime::default());
        assert_eq!(
            voice.connection.lifetime,
            IkeLifetime {
                rekey_ms: 14_400_000,
                reauth_ms: 0,
                over_ms: 1_440_000,
                rand_ms: 1_440_000,
            },
            "IKE: 4 h, over_time 10 %, rand_time = over_time"
        );
        // A lifetime change is a change of its connection only.
        let d = parse(GOOD).unwrap().diff(&c);
        assert_eq!(
            (d.changed, d.unchanged),
            (vec!["gw-b".into()], vec!["gw-b-voice".into()])
        );
    }

    #[test]
    fn lifetimes_derive_what_is_not_given() {
        let c = parse(&with_lifetimes(
            "rekey_time = \"1h\"\n",
            "rekey_time = \"10m\"\nrekey_bytes = \"1G\"\nlife_packets = 5000\n",
        ))
        .unwrap();
        let ike = c.connections[0].connection.lifetime;
        assert_eq!(
            (ike.rekey_ms, ike.reauth_ms, ike.over_ms, ike.rand_ms),
            (3_600_000, 0, 360_000, 360_000)
        );
        let l = c.connections[0].child_cfgs()[0].lifetime;
        assert_eq!(
            (l.rekey_ms, l.life_ms, l.rand_ms),
            (600_000, 660_000, 60_000)
        );
        let g = 1u64 << 30;
        assert_eq!(
            (l.rekey_bytes, l.life_bytes, l.rand_bytes),
            (g, g + g / 10, g / 10)
        );
        // A hard packet limit alone: no rekey on packets, the SA stops at 5000.
        assert_eq!(
            (l.rekey_packets, l.life_packets, l.rand_packets),
            (0, 5000, 5000)
        );
        // reauth_time alone: over_time is 10 % of it; 0 switches everything off.
        let c = parse(&with_lifetimes(
            "rekey_time = 0\nreauth_time = \"10h\"\n",
            "rekey_time = 0\nlife_time = 0\n",
        ))
        .unwrap();
        let ike = c.connections[0].connection.lifetime;
        assert_eq!(
            (ike.rekey_ms, ike.reauth_ms, ike.over_ms, ike.rand_ms),
            (0, 36_000_000, 3_600_000, 3_600_000)
        );
        let l = c.connections[0].child_cfgs()[0].lifetime;
        assert_eq!((l.rekey_ms, l.life_ms, l.rand_ms), (0, 0, 0));
        // A life limit with its rekey off is just a hard limit.
        let c = parse(&with_lifetimes(
            "",
            "rekey_time = 0\nlife_time = \"2h\"\nrand_time = \"1h\"\n",
        ))
        .unwrap();
        let l = c.connections[0].child_cfgs()[0].lifetime;
        assert_eq!((l.rekey_ms, l.life_ms), (0, 7_200_000));
    }

    #[test]
    fn lifetime_errors_name_file_line_and_field() {
        let net = "connections.gw-b.children.net";
        for (conn, child, bad_line, field, what) in [
            (
                "",
                "rekey_time = \"1h\"\nlife_time = \"30s\"\n",
                "life_time = \"30s\"",
                format!("{net}.life_time"),
                "life_time (30s) must be greater than rekey_time (1h)",
            ),
            (
                "",
                "life_time = \"30m\"\n",
                "life_time = \"30m\"",
                format!("{net}.life_time"),
                "life_time (30m) must be greater than rekey_time (1h, the default)",
            ),
            (
                "",
                "rekey_time = \"1h\"\nlife_time = \"1h\"\n",
                "life_time = \"1h\"",
                format!("{net}.life_time"),
                "must be greater than rekey_time (1h)",
            ),
            (
                "",
                "rekey_time = \"10m\"\nrand_time = \"10m\"\n",
                "rand_time = \"10m\"",
                format!("{net}.rand_time"),
                "rand_time (10m) must be below rekey_time (10m)",
            ),
            (
                "",
                "rekey_bytes = \"1G\"\nlife_bytes = \"512M\"\n",
                "life_bytes = \"512M\"",
                format!("{net}.life_bytes"),
                "life_bytes (512M) must be greater than rekey_bytes (1G)",
            ),
            (
                "",
                "rekey_bytes = 1000\nrand_bytes = 2000\n",
                "rand_bytes = 2000",
                format!("{net}.rand_bytes"),
                "rand_bytes (2000) must be below rekey_bytes (1000)",
            ),
            (
                "",
                "rekey_packets = 1000\nlife_packets = 999\n",
                "life_packets = 999",
                format!("{net}.life_packets"),
                "life_packets (999) must be greater than rekey_packets (1000)",
            ),
            (
                "",
                "rekey_packets = 1000\nrand_packets = 1000\n",
                "rand_packets = 1000",
                format!("{net}.rand_packets"),
                "rand_packets (1000) must be below rekey_packets (1000)",
            ),
            (
                "",
                "rekey_packets = \"1k\"\n",
                "rekey_packets = \"1k\"",
                format!("{net}.rekey_packets"),
                "no suffix",
            ),
            (
                "",
                "rekey_bytes = \"1T\"\n",
                "rekey_bytes = \"1T\"",
                format!("{net}.rekey_bytes"),
                "swanctl size",
            ),
            (
                "",
                "life_bytes = -1\n",
                "life_bytes = -1",
                format!("{net}.life_bytes"),
                "number of bytes",
            ),
            (
                "",
                "rekey_time = \"soon\"\n",
                "rekey_time = \"soon\"",
                format!("{net}.rekey_time"),
                "swanctl duration",
            ),
            (
                "",
                "rekey_bytes = \"99999999999G\"\n",
                "rekey_bytes = \"99999999999G\"",
                format!("{net}.rekey_bytes"),
                "too large",
            ),
            (
                "rekey_time = \"10m\"\nrand_time = \"1h\"\n",
                "",
                "rand_time = \"1h\"",
                "connections.gw-b.rand_time".to_string(),
                "rand_time (1h) must be below rekey_time (10m)",
            ),
            (
                "rand_time = \"4h\"\n",
                "",
                "rand_time = \"4h\"",
                "connections.gw-b.rand_time".to_string(),
                "must be below rekey_time (4h, the default)",
            ),
            (
                "rekey_time = 0\nreauth_time = \"1h\"\nrand_time = \"2h\"\n",
                "",
                "rand_time = \"2h\"",
                "connections.gw-b.rand_time".to_string(),
                "must be below reauth_time (1h)",
            ),
            (
                "over_time = 0\n",
                "",
                "over_time = 0",
                "connections.gw-b.over_time".to_string(),
                "must be more than 0",
            ),
            (
                "reauth_time = \"1 fortnight\"\n",
                "",
                "reauth_time = \"1 fortnight\"",
                "connections.gw-b.reauth_time".to_string(),
                "swanctl duration",
            ),
            (
                "rekey_bytes = 1000\n",
                "",
                "rekey_bytes = 1000",
                "connections.gw-b".to_string(),
                "unknown field `rekey_bytes`",
            ),
        ] {
            let text = with_lifetimes(conn, child);
            let line = text.lines().position(|l| l == bad_line).unwrap() + 1;
            let s = parse(&text).unwrap_err().to_string();
            assert!(
                s.starts_with(&format!("iked.toml:{line}: {field}")),
                "line {line}, {field}: {s}"
            );
            assert!(s.contains(what), "{what}: {s}");
        }
    }

    #[test]
    fn sizes_as_swanctl_writes_them() {
        use toml::Value::{Float, Integer, String as S};
        for (v, n) in [
            (Integer(0), 0),
            (Integer(1_000_000), 1_000_000),
            (S("1000".into()), 1000),
            (S("500k".into()), 500 << 10),
            (S("500K".into()), 500 << 10),
            (S("100M".into()), 100 << 20),
            (S("100m".into()), 100 << 20),
            (S("2G".into()), 2 << 30),
            (S(" 2 g ".into()), 2 << 30),
        ] {
            assert_eq!(bytes_value(&v), Ok(n), "{v}");
        }
        for v in [
            Integer(-1),
            Float(1.5),
            S("".into()),
            S("k".into()),
            S("1.5G".into()),
            S("1KB".into()),
            S("1T".into()),
            S("0x10".into()),
            S("20000000000G".into()),
        ] {
            assert!(bytes_value(&v).is_err(), "{v}");
        }
        assert_eq!(packets_value(&Integer(5)), Ok(5));
        assert_eq!(packets_value(&S("5".into())), Ok(5));
        for v in [Integer(-5), S("5k".into()), Float(5.0)] {
            assert!(packets_value(&v).is_err(), "{v}");
        }
        // Durations take strongSwan's upper-case units and spaces too.
        assert_eq!(duration_ms(&S("2 H".into())), Ok(7_200_000));
        assert_eq!(duration_ms(&S("90S".into())), Ok(90_000));
        for (ms, shown) in [
            (90_000, "90s"),
            (120_000, "2m"),
            (3_600_000, "1h"),
            (1500, "1500ms"),
        ] {
            assert_eq!(show_ms(ms), shown);
        }
        assert_eq!(show_bytes((3 << 30) + 1), ((3u64 << 30) + 1).to_string());
        assert_eq!(show_bytes(3 << 20), "3M");
    }

    #[test]
    fn diff_by_connection_name() {
        let old = parse(GOOD).unwrap();
        assert_eq!(
            old.diff(&old),
            ConfigDiff {
                unchanged: vec!["gw-b".into(), "gw-b-voice".into()],
                ..ConfigDiff::default()
            }
        );
        // Only the pre-shared key differs: changed (both connections use it).
        let psk = parse(&GOOD.replace("battery staple", "battery stapler")).unwrap();
        let d = old.diff(&psk);
        assert_eq!(d.changed, ["gw-b", "gw-b-voice"]);
        assert!(d.unchanged.is_empty() && d.added.is_empty() && d.removed.is_empty());
        // One child's close_action, a peer address, dpd_timeout: each changes only its own.
        for edit in [
            ("close_action = \"start\"", "close_action = \"trap\""),
            ("\"192.0.2.2\", \"192.0.2.3\"", "\"192.0.2.2\""),
            ("dpd_timeout = \"2m\"", "dpd_timeout = \"1m\""),
            ("\"10.3.0.5[tcp/443]\"", "\"10.3.0.5[tcp/444]\""),
        ] {
            let new = parse(&GOOD.replace(edit.0, edit.1)).unwrap();
            let d = old.diff(&new);
            assert_eq!(d.changed, ["gw-b"], "{edit:?}");
            assert_eq!(d.unchanged, ["gw-b-voice"], "{edit:?}");
        }
        // Remove one, add another.
        let renamed = parse(&GOOD.replace("gw-b-voice", "gw-c")).unwrap();
        assert_eq!(
            old.diff(&renamed),
            ConfigDiff {
                unchanged: vec!["gw-b".into()],
                changed: vec![],
                added: vec!["gw-c".into()],
                removed: vec!["gw-b-voice".into()],
            }
        );
        // The same connections in another order: nothing to do.
        let (a, b) = GOOD.split_at(GOOD.find("[connections.gw-b-voice]").unwrap());
        let (b, secrets) = b.split_at(b.find("[secrets.ike]").unwrap());
        let swapped = parse(&format!("{b}\n{a}\n{secrets}")).unwrap();
        assert_eq!(swapped.connections[0].connection.name, "gw-b-voice");
        let d = old.diff(&swapped);
        assert_eq!((d.unchanged.len(), d.changed.len()), (2, 0), "{d:?}");
    }

    #[test]
    fn reqids_are_stable_and_unique() {
        // The value is part of the contract: it must come out the same after a restart and
        // after an upgrade (FNV-1a of "gw-b/net" into 1..2^19).
        let c = parse(GOOD).unwrap();
        assert_eq!(c.connections[0].children[0].reqid, 10_253);
        assert_eq!(c.get("gw-b").unwrap().children[0].reqid, 10_253);
        // Adding a connection and reordering leaves the others' reqids alone.
        let more = GOOD.replace(
            "[secrets.ike]",
            "[connections.aaa]\nlocal_addrs = [\"192.0.2.1\"]\nremote_addrs = [\"192.0.2.7\"]\n\
             proposals = [\"aes128gcm16-prfsha256-x25519\"]\n[connections.aaa.local]\n\
             id = \"gw-a.example\"\n[connections.aaa.remote]\nid = \"gw-b.example\"\n\
             [connections.aaa.children.net]\nlocal_ts = [\"10.1.0.0/16\"]\n\
             remote_ts = [\"10.7.0.0/16\"]\nesp_proposals = [\"aes128gcm16\"]\n[secrets.ike]",
        );
        let c2 = parse(&more).unwrap();
        for cc in &c.connections {
            let cc2 = c2.get(&cc.connection.name).unwrap();
            assert_eq!(cc.children, cc2.children);
        }
        assert_eq!(c.diff(&c2).added, ["aaa"]);
        assert_eq!(c.diff(&c2).unchanged.len(), 2);

        // Unique over many children, all in 1..2^19.
        let names: Vec<(String, String)> = (0..3000)
            .map(|i| (format!("c{i}"), format!("child{}", i % 7)))
            .collect();
        let r = assign_reqids(names.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        let set: BTreeSet<u32> = r.values().copied().collect();
        assert_eq!(set.len(), 3000);
        assert!(set.iter().all(|&v| (1..=REQID_MAX).contains(&v)));

        // These two collide: the first in name order keeps the hash, the next takes +1,
        // whatever order they are given in.
        for pairs in [
            [("c404", "net"), ("c686", "net")],
            [("c686", "net"), ("c404", "net")],
        ] {
            let r = assign_reqids(pairs);
            assert_eq!(r[&("c404".into(), "net".into())], 403_571);
            assert_eq!(r[&("c686".into(), "net".into())], 403_572);
        }
        // Probing wraps from the top of the range to 1 (0 is never a reqid).
        assert_eq!(next_reqid(REQID_MAX), 1);
        assert_eq!(next_reqid(1), 2);
    }

    /// A swanctl-style directory with the fixture PKI: gw-a's certificate and key, the
    /// root and intermediate CAs, the intermediate's CRL. Keys are 0600 (git has 0644).
    struct PkiDir(std::path::PathBuf);

    impl PkiDir {
        fn new() -> PkiDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let d = std::env::temp_dir().join(format!(
                "iked-config-pki-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pki");
            for (sub, files) in [
                ("x509", &["gw-aCert.pem", "gw-bCert.pem"][..]),
                ("x509ca", &["rootCert.pem", "imCert.pem"][..]),
                ("private", &["gw-aKey.pem", "gw-bKey.pem"][..]),
                ("x509crl", &["im.crl.pem"][..]),
            ] {
                std::fs::create_dir_all(d.join(sub)).unwrap();
                for f in files {
                    std::fs::copy(fx.join(f), d.join(sub).join(f)).unwrap();
                }
            }
            for k in ["gw-aKey.pem", "gw-bKey.pem"] {
                set_mode(&d.join("private").join(k), 0o600);
            }
            PkiDir(d)
        }

        fn parse(&self, text: &str) -> Result<IkedConfig, ConfigError> {
            IkedConfig::parse(&self.0.join("iked.toml"), text)
        }
    }

    impl Drop for PkiDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn set_mode(p: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    const PUBKEY: &str = r#"
[connections.gw-b]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
proposals = ["aes256gcm16-prfsha384-ecp384"]
send_cert = "always"
send_certreq = false
clock_skew = "2m"
fragmentation = "accept"
fragment_size = 576

[connections.gw-b.local]
id = "C=CH, O=example, CN=gw-a"
auth = "pubkey"
certs = ["gw-aCert.pem"]

[connections.gw-b.remote]
id = "gw-b.example"
auth = "pubkey"
cacerts = ["rootCert.pem"]

[connections.gw-b.children.net]
local_ts = ["10.1.0.0/16"]
remote_ts = ["10.2.0.0/16"]
esp_proposals = ["aes256gcm16"]
"#;

    fn fixture_der(name: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/pki")
            .join(name);
        read_certs(&p).unwrap().remove(0)
    }

    #[test]
    fn certificates_keys_and_trust_come_from_the_swanctl_directories() {
        let d = PkiDir::new();
        // No [secrets] at all: nothing uses a pre-shared key.
        let c = d.parse(PUBKEY).unwrap();
        let conn = &c.connections[0].connection;
        let a = &conn.auth;
        assert_eq!((a.local, a.remote), (AuthKind::Pubkey, AuthKind::Pubkey));
        assert!(conn.psk.is_empty());
        let creds = a.credentials.as_ref().unwrap();
        assert_eq!(creds.subject, "C=CH, O=example, CN=gw-a");
        // Our certificate, then the intermediate from x509ca/ that issued it (not the root).
        assert_eq!(
            creds.chain,
            [fixture_der("gw-aCert.pem"), fixture_der("imCert.pem")]
        );
        let t = a.trust.as_ref().unwrap();
        assert_eq!(t.anchors, [fixture_der("rootCert.pem")]);
        assert_eq!(t.intermediates, [fixture_der("imCert.pem")]);
        assert_eq!(t.crls.len(), 1);
        assert_eq!(
            (a.send_cert, a.send_certreq, a.clock_skew_s),
            (SendCert::Always, false, 120)
        );
        assert_eq!(
            conn.fragmentation,
            FragConfig {
                mode: FragMode::Accept,
                size: 576
            }
        );
        // The same with an explicit key file and the defaults.
        let text = PUBKEY
            .replace("send_cert = \"always\"\n", "")
            .replace("send_certreq = false\n", "")
            .replace("clock_skew = \"2m\"\n", "")
            .replace("fragmentation = \"accept\"\n", "")
            .replace("fragment_size = 576\n", "")
            + "[secrets.private-a]\nfile = \"gw-aKey.pem\"\n";
        let c2 = d.parse(&text).unwrap();
        let a2 = &c2.connections[0].connection.auth;
        assert_eq!(a2.credentials, a.credentials);
        assert_eq!(
            (a2.send_cert, a2.send_certreq, a2.clock_skew_s),
            (SendCert::IfAsked, true, DEFAULT_CLOCK_SKEW_S)
        );
        assert_eq!(
            c2.connections[0].connection.fragmentation,
            FragConfig::default()
        );
    }

    #[test]
    fn psk_one_way_and_certificates_the_other() {
        let d = PkiDir::new();
        // We authenticate with a PSK, the peer with a certificate: the PSK is still needed,
        // no key of ours is read, and every self-signed CA of x509ca/ is trusted.
        let text = PUBKEY
            .replace(
                "auth = \"pubkey\"\ncerts = [\"gw-aCert.pem\"]",
                "auth = \"psk\"",
            )
            .replace("cacerts = [\"rootCert.pem\"]\n", "");
        let e = d.parse(&text).unwrap_err();
        assert_eq!(e.field, "connections.gw-b.remote.id");
        assert!(e.message.contains("no [secrets]"), "{e}");
        let text = text
            + "[secrets.ike]\nid = \"gw-b.example\"\nsecret = \"correct horse battery staple\"\n";
        let c = d.parse(&text).unwrap();
        let a = &c.connections[0].connection.auth;
        assert_eq!((a.local, a.remote), (AuthKind::Psk, AuthKind::Pubkey));
        assert!(a.credentials.is_none());
        assert_eq!(
            a.trust.as_ref().unwrap().anchors,
            [fixture_der("rootCert.pem")]
        );
        assert_eq!(
            &c.connections[0].connection.psk[..],
            b"correct horse battery staple"
        );
        // An empty x509ca/ trusts nobody: refused, naming the directory.
        for f in ["rootCert.pem", "imCert.pem"] {
            std::fs::remove_file(d.0.join("x509ca").join(f)).unwrap();
        }
        let e = d.parse(&text).unwrap_err();
        assert_eq!(e.field, "connections.gw-b.remote.auth");
        assert!(e.message.contains("no trust anchor"), "{e}");
        assert!(e.message.contains("x509ca"), "{e}");
    }

    #[test]
    fn certificate_errors_name_file_line_and_field() {
        let d = PkiDir::new();
        let key = d.0.join("private/gw-aKey.pem");
        set_mode(&key, 0o644);
        let e = d.parse(PUBKEY).unwrap_err();
        assert_eq!(e.field, "connections.gw-b.local.certs[0]");
        assert_eq!(e.line, 15);
        assert!(e.file.ends_with("iked.toml"));
        assert!(
            e.message.contains("gw-aKey.pem") && e.message.contains("644"),
            "{e}"
        );
        // Tests may read loose keys (the fixtures in git are 0644).
        assert!(
            IkedConfig::parse_allowing_loose_key_permissions(&d.0.join("iked.toml"), PUBKEY)
                .is_ok()
        );
        set_mode(&key, 0o600);
        for (from, to, field, what) in [
            (
                "certs = [\"gw-aCert.pem\"]",
                "certs = [\"nope.pem\"]",
                "connections.gw-b.local.certs[0]",
                "nope.pem",
            ),
            (
                "certs = [\"gw-aCert.pem\"]",
                "certs = [\"gw-aCert.pem\", \"gw-bCert.pem\"]",
                "connections.gw-b.local.certs",
                "exactly one",
            ),
            (
                "cacerts = [\"rootCert.pem\"]",
                "cacerts = [\"missing.pem\"]",
                "connections.gw-b.remote.cacerts",
                "missing.pem",
            ),
            (
                "cacerts = [\"rootCert.pem\"]",
                "certs = [\"gw-bCert.pem\"]",
                "connections.gw-b.remote.certs",
                "pinning",
            ),
            (
                "auth = \"pubkey\"\ncacerts",
                "auth = \"psk\"\ncacerts",
                "connections.gw-b.remote.cacerts",
                "only used with auth = \"pubkey\"",
            ),
            (
                "id = \"C=CH, O=example, CN=gw-a\"",
                "id = \"C=CH, Q=example, CN=gw-a\"",
                "connections.gw-b.local.id",
                "unknown attribute \"Q\"",
            ),
            (
                "fragment_size = 576",
                "fragment_size = 100",
                "connections.gw-b.fragment_size",
                "256 ..= 65535",
            ),
            (
                "fragmentation = \"accept\"",
                "fragmentation = \"force\"",
                "connections.gw-b.fragmentation",
                "\"accept\"",
            ),
            (
                "send_cert = \"always\"",
                "send_cert = \"sometimes\"",
                "connections.gw-b.send_cert",
                "\"ifasked\"",
            ),
            (
                "clock_skew = \"2m\"",
                "clock_skew = \"2 weeks\"",
                "connections.gw-b.clock_skew",
                "swanctl duration",
            ),
        ] {
            assert!(PUBKEY.contains(from), "{from}");
            let e = d.parse(&PUBKEY.replace(from, to)).unwrap_err();
            assert_eq!(e.field, field, "{to}: {e}");
            assert!(e.message.contains(what), "{to}: {e}");
            assert!(e.line > 0, "{to}: {e}");
        }
        // A key that belongs to no certificate of ours: the message says where we looked.
        std::fs::remove_file(&key).unwrap();
        let e = d.parse(PUBKEY).unwrap_err();
        assert!(e.message.contains("no private key"), "{e}");
        // A [secrets] entry is a key file or a pre-shared key, not both.
        let e = d
            .parse(&format!(
                "{PUBKEY}[secrets.private-a]\nfile = \"gw-bKey.pem\"\nid = \"x\"\n"
            ))
            .unwrap_err();
        assert_eq!(e.field, "secrets.private-a.file");
    }
}
