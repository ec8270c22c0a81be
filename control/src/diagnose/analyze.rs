//! Findings from a snapshot of everything `vpnctl diagnose` gathered: a pure function.
//!
//! One finding per problem: repeated failures of one kind on one connection make one
//! finding with a count and the first and last times; a peer with no route is not also
//! reported as unanswered. Evidence keys and their types are documented per finding id in
//! `docs/DIAGNOSE.md`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use super::catalog;
use super::probe::{ConfigProblem, ConfigSummary, SystemSnapshot};
use crate::api::{
    ChildSaReport, ConnReport, DataplaneStatus, EventRecord, FailureRecord, Finding, IkeSaReport,
    IkedStatus, ListReport, StatsReport,
};

/// Everything diagnose looked at. Missing parts are `None` (and say why in `unchecked`).
#[derive(Debug, Clone, Default)]
pub struct DiagnoseInput {
    pub now_unix_ms: u64,
    /// Only this connection (machine-wide findings are kept).
    pub conn: Option<String>,
    /// iked's control socket, and why it did not answer (iked down).
    pub socket: String,
    pub iked_error: Option<String>,
    pub iked: Option<IkedStatus>,
    pub list: Option<ListReport>,
    pub events: Vec<EventRecord>,
    pub dataplane: Option<DataplaneStatus>,
    /// The dataplane's ring, and why its counters could not be read.
    pub ring: Option<String>,
    pub dataplane_error: Option<String>,
    /// Two snapshots of the dataplane's counters, `window_s` apart (rates).
    pub stats_before: Option<StatsReport>,
    pub stats_after: Option<StatsReport>,
    pub window_s: f64,
    pub system: Option<SystemSnapshot>,
    /// The configuration file loaded by diagnose itself.
    pub config: Option<Result<ConfigSummary, ConfigProblem>>,
    pub unchecked: Vec<String>,
}

/// Evidence keys whose values are numbers (classify gives strings).
const NUMBER_KEYS: &[&str] = &[
    "port",
    "tries",
    "probes",
    "waited_ms",
    "skew_s",
    "our_rekey_s",
    "our_life_s",
    "peer_interval_s",
    "line",
    "count",
    "first_at_unix_ms",
    "last_at_unix_ms",
];
const BOOL_KEYS: &[&str] = &["rekey_tried"];

/// Failures that show only on rekeys, so an established IKE SA does not resolve them.
fn shows_on_rekey(f: &FailureRecord) -> bool {
    match f.finding.as_str() {
        "pfs-mismatch" | "lifetime-mismatch" => true,
        "proposal-mismatch" => {
            f.evidence.get("exchange").map(String::as_str) == Some("CREATE_CHILD_SA")
        }
        _ => false,
    }
}

/// Sort order of severities.
fn rank(sev: &str) -> u8 {
    match sev {
        "error" => 0,
        "warning" => 1,
        _ => 2,
    }
}

/// 12431 -> "12,431".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn secs(s: f64) -> String {
    if s >= 10.0 || s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{} {many}", thousands(n))
    }
}

/// The address part of "192.0.2.2:500", "[2001:db8::2]:4500" or "192.0.2.2".
fn ip_of(s: &str) -> String {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return a.ip().to_string();
    }
    s.to_string()
}

/// Hex SPI as "0x1234abcd" whatever the source wrote.
fn spi_key(s: &str) -> String {
    let t = s.trim().trim_start_matches("0x").trim_start_matches("0X");
    match u32::from_str_radix(t, 16) {
        Ok(n) => format!("{n:#010x}"),
        Err(_) => s.to_string(),
    }
}

struct Out {
    findings: Vec<Finding>,
}

impl Out {
    fn add(
        &mut self,
        id: &'static str,
        conn: Option<&str>,
        summary: String,
        evidence: BTreeMap<String, Value>,
        remedy: String,
    ) {
        let severity = catalog::kind(id).map_or("error", |k| k.severity);
        self.findings.push(Finding {
            id: id.to_string(),
            severity: severity.to_string(),
            conn: conn.map(str::to_string),
            summary,
            evidence,
            remedy,
            doc: format!("docs/DIAGNOSE.md#{id}"),
        });
    }
}

/// Build an evidence map from pairs.
fn ev<const N: usize>(pairs: [(&str, Value); N]) -> BTreeMap<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn typed(k: &str, v: &str) -> Value {
    if NUMBER_KEYS.contains(&k) {
        if let Ok(n) = v.parse::<u64>() {
            return Value::from(n);
        }
        if let Ok(n) = v.parse::<i64>() {
            return Value::from(n);
        }
    }
    if BOOL_KEYS.contains(&k) {
        if let Ok(b) = v.parse::<bool>() {
            return Value::from(b);
        }
    }
    Value::from(v)
}

/// One finding per problem, most severe first.
pub fn analyze(input: &DiagnoseInput) -> Vec<Finding> {
    let mut out = Out {
        findings: Vec::new(),
    };
    daemons(input, &mut out);
    config(input, &mut out);
    let no_route = routes(input, &mut out);
    failures(input, &no_route, &mut out);
    esp_blocked(input, &mut out);
    counters(input, &mut out);
    firewall(input, &mut out);
    certificates(input, &mut out);
    if let Some(c) = &input.conn {
        out.findings
            .retain(|f| f.conn.as_deref().is_none_or(|fc| fc == c));
    }
    out.findings.sort_by(|a, b| {
        (rank(&a.severity), &a.conn, &a.id).cmp(&(rank(&b.severity), &b.conn, &b.id))
    });
    out.findings
}

/// The connections as iked lists them, or (iked down) as the configuration has them:
/// (name, remote addresses).
fn peers_by_conn(input: &DiagnoseInput) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(l) = &input.list {
        for c in &l.connections {
            out.push((
                c.name.clone(),
                c.remote_addrs.iter().map(|a| ip_of(a)).collect(),
            ));
        }
    }
    if let Some(Ok(cfg)) = &input.config {
        for c in &cfg.conns {
            out.push((c.name.clone(), c.remote_addrs.clone()));
        }
    }
    out
}

fn conn_of_peer(input: &DiagnoseInput, peer: &str) -> Option<String> {
    let peer = ip_of(peer);
    peers_by_conn(input)
        .into_iter()
        .find(|(_, r)| r.contains(&peer))
        .map(|(n, _)| n)
}

// ---- iked and the dataplane ---------------------------------------------------------------

fn daemons(input: &DiagnoseInput, out: &mut Out) {
    if input.iked.is_none() {
        if let Some(e) = &input.iked_error {
            out.add(
                "iked-down",
                None,
                if e.contains(&input.socket) {
                    format!("iked does not answer: {e}.")
                } else {
                    format!("iked does not answer on {}: {e}.", input.socket)
                },
                ev([
                    ("socket", Value::from(input.socket.clone())),
                    ("error", Value::from(e.clone())),
                ]),
                "Start iked (iked --config FILE --control SOCKET ...); if it exits at once, \
                 its configuration may not load (see config-error)."
                    .into(),
            );
        }
    }
    if let Some(s) = &input.iked {
        if let Some(&n) = s.ike_drops.get("ikev1").filter(|&&n| n > 0) {
            let peer = input
                .events
                .iter()
                .rev()
                .find(|e| e.message.contains("IKEv1") && e.peer.is_some())
                .and_then(|e| e.peer.clone());
            let mut evidence = ev([("datagrams", Value::from(n))]);
            let from = match &peer {
                Some(p) => {
                    evidence.insert("peer".into(), Value::from(ip_of(p)));
                    format!(" (last from {})", ip_of(p))
                }
                None => String::new(),
            };
            out.add(
                "ikev1-peer",
                peer.as_deref()
                    .and_then(|p| conn_of_peer(input, p))
                    .as_deref(),
                format!(
                    "iked dropped {} of IKEv1{from}: a peer speaks IKEv1, which is deprecated \
                     (RFC 9395) and not spoken here.",
                    plural(n, "datagram", "datagrams")
                ),
                evidence,
                "Configure the peer for IKEv2 (strongSwan: version = 2, or keyexchange=ikev2)."
                    .into(),
            );
        }
    }
    // The dataplane: its status, or why its counters could not be read.
    let dp_down = match (&input.dataplane, &input.dataplane_error) {
        (Some(d), _) if !d.running => Some((d.ring.clone(), None, d.counters_age_s)),
        (None, Some(e)) => Some((
            input.ring.clone().unwrap_or_default(),
            Some(e.clone()),
            None,
        )),
        _ => None,
    };
    if let Some((ring, error, age)) = dp_down {
        let mut evidence = ev([("ring", Value::from(ring.clone()))]);
        let mut why = String::new();
        if let Some(e) = &error {
            evidence.insert("error".into(), Value::from(e.clone()));
            why = format!(": {e}");
        }
        if let Some(a) = age {
            evidence.insert("counters_age_s".into(), Value::from(a));
            why = format!(": its counters were last written {} s ago", secs(a));
        }
        out.add(
            "dataplane-down",
            None,
            format!("The dataplane of ring {ring} is not running{why}."),
            evidence,
            "Start the dataplane (dataplane --ring NAME ...); its log says why it stopped.".into(),
        );
    }
    // XDP: the dataplane runs, but ip link shows no program on an interface it serves.
    if let (Some(d), Some(sys)) = (&input.dataplane, &input.system) {
        if d.running {
            for ifname in [&d.outside, &d.inside].into_iter().flatten() {
                let Some(i) = sys.interfaces.iter().find(|i| &i.name == ifname) else {
                    continue; // not in this namespace's list: nothing to compare
                };
                let expected = match d.xdp_mode.as_deref() {
                    Some("none") | None => continue, // it says it runs without XDP
                    Some(m) => m.to_string(),
                };
                if i.xdp.is_none() {
                    out.add(
                        "xdp-not-attached",
                        None,
                        format!(
                            "The dataplane runs, but no XDP program is attached to {ifname} \
                             (the dataplane reports mode {expected}): its packets bypass the \
                             dataplane."
                        ),
                        ev([
                            ("interface", Value::from(ifname.clone())),
                            ("attached", Value::from("none")),
                            ("expected", Value::from(expected)),
                        ]),
                        format!(
                            "Restart the dataplane; check that no other program holds the XDP \
                             hook of {ifname} (ip link show dev {ifname})."
                        ),
                    );
                }
            }
        }
    }
}

// ---- the configuration ---------------------------------------------------------------------

fn config_evidence(p: &ConfigProblem) -> BTreeMap<String, Value> {
    ev([
        ("file", Value::from(p.file.clone())),
        ("line", Value::from(p.line)),
        ("field", Value::from(p.field.clone())),
        ("message", Value::from(p.message.clone())),
    ])
}

fn at(p: &ConfigProblem) -> String {
    match (p.line, p.field.is_empty()) {
        (0, true) => p.file.clone(),
        (0, false) => format!("{}, {}", p.file, p.field),
        (l, true) => format!("{}:{l}", p.file),
        (l, false) => format!("{}:{l}, {}", p.file, p.field),
    }
}

fn config(input: &DiagnoseInput, out: &mut Out) {
    let problem = match &input.config {
        Some(Err(p)) => Some(p),
        _ => None,
    };
    if let Some(p) = problem {
        out.add(
            "config-error",
            None,
            format!(
                "The configuration file does not load: {}: {}.",
                at(p),
                p.message.trim_end_matches('.')
            ),
            config_evidence(p),
            format!(
                "Fix {} as the message says, then vpnctl reload (or start iked).",
                at(p)
            ),
        );
    }
    let Some(r) = input.iked.as_ref().and_then(|s| s.last_reload.as_ref()) else {
        return;
    };
    if r.ok {
        return;
    }
    let ago = input.now_unix_ms.saturating_sub(r.at_unix_ms) as f64 / 1000.0;
    let mut evidence = ev([
        ("at_unix_ms", Value::from(r.at_unix_ms)),
        ("message", Value::from(r.message.clone())),
    ]);
    if let Some(p) = problem {
        evidence.extend(
            config_evidence(p)
                .into_iter()
                .filter(|(k, _)| k != "message"),
        );
    } else if let Some(p) = super::probe::parse_config_message(&r.message) {
        if p.line > 0 {
            evidence.insert("file".into(), Value::from(p.file));
            evidence.insert("line".into(), Value::from(p.line));
            evidence.insert("field".into(), Value::from(p.field));
        }
    }
    out.add(
        "reload-failed",
        None,
        format!(
            "The last reload, {} s ago, was refused ({}); the previous configuration is still \
             running.",
            secs(ago),
            r.message.trim_end_matches('.')
        ),
        evidence,
        "Fix the file as the message says and run vpnctl reload again.".into(),
    );
}

// ---- routes --------------------------------------------------------------------------------

/// no-route findings; returns the peers (IP) without a route.
fn routes(input: &DiagnoseInput, out: &mut Out) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    if let Some(sys) = &input.system {
        for r in &sys.routes {
            let Some(e) = &r.error else { continue };
            let conn = conn_of_peer(input, &r.peer);
            out.add(
                "no-route",
                conn.as_deref(),
                format!(
                    "{}no route to the peer {}: ip route get says \"{e}\".",
                    conn.as_deref()
                        .map(|c| format!("{c}: "))
                        .unwrap_or_default(),
                    r.peer
                ),
                ev([
                    ("peer", Value::from(r.peer.clone())),
                    ("route_error", Value::from(e.clone())),
                    ("source", Value::from("route")),
                ]),
                format!(
                    "Add a route to {} (or a default route) on the WAN interface, and check that \
                     the interface is up and has its address.",
                    r.peer
                ),
            );
            found.push(ip_of(&r.peer));
        }
    }
    if let Some(s) = &input.iked {
        for e in &s.send_errors {
            let peer = ip_of(&e.peer);
            let unreachable = {
                let l = e.error.to_ascii_lowercase();
                l.contains("unreachable") || l.contains("no route")
            };
            if !unreachable || found.contains(&peer) {
                continue;
            }
            let conn = conn_of_peer(input, &peer);
            let ago = input.now_unix_ms.saturating_sub(e.last_unix_ms) as f64 / 1000.0;
            out.add(
                "no-route",
                conn.as_deref(),
                format!(
                    "{}iked could not send to the peer {peer} {} (last {} s ago): {}.",
                    conn.as_deref()
                        .map(|c| format!("{c}: "))
                        .unwrap_or_default(),
                    plural(e.count, "time", "times"),
                    secs(ago),
                    e.error
                ),
                ev([
                    ("peer", Value::from(peer.clone())),
                    ("route_error", Value::from(e.error.clone())),
                    ("source", Value::from("iked")),
                    ("send_errors", Value::from(e.count)),
                ]),
                format!(
                    "Add a route to {peer} (or a default route) on the WAN interface, and check \
                     that the interface is up and has its address."
                ),
            );
            found.push(peer);
        }
    }
    found
}

// ---- failures iked classified ----------------------------------------------------------------

/// When the connection's newest established IKE SA was set up (Unix ms).
fn established_at(l: &ListReport, c: &ConnReport) -> Option<u64> {
    c.ike_sas
        .iter()
        .filter(|s| s.state == "established")
        .filter_map(|s| s.established_s.or(Some(s.age_s)))
        .map(|s| l.now_unix_ms.saturating_sub((s * 1000.0) as u64))
        .max()
}

fn failures(input: &DiagnoseInput, no_route: &[String], out: &mut Out) {
    let Some(l) = &input.list else { return };
    for c in &l.connections {
        let cut = established_at(l, c);
        let mut groups: BTreeMap<&str, Vec<&FailureRecord>> = BTreeMap::new();
        for f in &c.failures {
            if cut.is_some_and(|t| f.at_unix_ms < t) && !shows_on_rekey(f) {
                continue; // resolved: an IKE SA was established since
            }
            let id = if catalog::kind(&f.finding).is_some() {
                f.finding.as_str()
            } else {
                "unclassified-failure"
            };
            groups.entry(id).or_default().push(f);
        }
        for (id, fs) in groups {
            let (Some(first), Some(last)) = (fs.first(), fs.last()) else {
                continue; // a group has at least one failure
            };
            let peer = last.evidence.get("peer").map(|p| ip_of(p));
            if matches!(id, "ike-unanswered" | "natt-blocked" | "peer-dead")
                && peer.as_ref().is_some_and(|p| no_route.contains(p))
            {
                continue; // the no-route finding explains it
            }
            let mut evidence: BTreeMap<String, Value> = last
                .evidence
                .iter()
                .map(|(k, v)| (k.clone(), typed(k, v)))
                .collect();
            let count = fs.len() as u64;
            evidence.insert("count".into(), Value::from(count));
            evidence.insert("first_at_unix_ms".into(), Value::from(first.at_unix_ms));
            evidence.insert("last_at_unix_ms".into(), Value::from(last.at_unix_ms));
            evidence.insert("message".into(), Value::from(last.message.clone()));
            let id = catalog::kind(id).map_or("unclassified-failure", |k| k.id);
            let ago = l.now_unix_ms.saturating_sub(last.at_unix_ms) as f64 / 1000.0;
            let times = if count == 1 {
                format!("{} s ago", secs(ago))
            } else {
                format!("{} times, last {} s ago", thousands(count), secs(ago))
            };
            let (what, remedy) = explain(id, &last.evidence, &last.message, c);
            out.add(
                id,
                Some(&c.name),
                format!("{}: {what} ({times}).", c.name),
                evidence,
                remedy,
            );
        }
    }
}

/// What a classified failure means, and what to change, from its evidence.
fn explain(
    id: &str,
    e: &BTreeMap<String, String>,
    message: &str,
    c: &ConnReport,
) -> (String, String) {
    let g = |k: &str| e.get(k).cloned().unwrap_or_default();
    let peer = c
        .remote_addrs
        .first()
        .map(|a| ip_of(a))
        .or_else(|| e.get("peer").map(|p| ip_of(p)))
        .unwrap_or_else(|| "the peer".into());
    let local = c
        .local_addrs
        .first()
        .map(|a| ip_of(a))
        .unwrap_or_else(|| "this gateway".into());
    match id {
        "proposal-mismatch" => {
            let what = if g("proposal") == "esp" { "ESP (Child SA)" } else { "IKE" };
            let s = if g("side") == "we" {
                match e.get("theirs") {
                    Some(t) => format!(
                        "no {what} proposal in common in {}: the peer offered {t}; we accept {}",
                        g("exchange"),
                        g("ours")
                    ),
                    None => format!("no {what} proposal in common in {}: we accept {}", g("exchange"), g("ours")),
                }
            } else if let Some(w) = e.get("wanted_group") {
                format!(
                    "the peer wants key exchange group {w}, which our {what} proposals ({}) do not offer",
                    g("ours")
                )
            } else {
                format!(
                    "the peer refused all our {what} proposals in {} ({}); we offered {}",
                    g("exchange"),
                    e.get("notify").map_or("NO_PROPOSAL_CHOSEN", String::as_str),
                    g("ours")
                )
            };
            let field = if g("proposal") == "esp" { "esp_proposals" } else { "proposals" };
            (
                s,
                format!(
                    "Make the proposals overlap: add one of the peer's {what} proposals to {field} \
                     here, or one of ours ({}) to the peer's. Prefer AEAD suites such as \
                     aes256gcm16 with x25519 (RFC 8221, RFC 8247).",
                    g("ours")
                ),
            )
        }
        "psk-mismatch" => (
            format!(
                "the {}'s AUTH ({}) did not verify with our pre-shared key: the keys differ",
                g("peer_role"),
                g("peer_id")
            ),
            format!(
                "Set the same secret on both sides (the [secrets] entry for {} here, the one \
                 for our identity on the peer).",
                g("peer_id")
            ),
        ),
        "auth-rejected" => (
            format!(
                "the peer ({}) refused our authentication as {} with AUTHENTICATION_FAILED",
                g("peer_role"),
                g("our_id")
            ),
            format!(
                "On {peer}, check the identity it expects from us ({}), the pre-shared key for \
                 it, or that it trusts our CA; its log names the reason.",
                g("our_id")
            ),
        ),
        "auth-method-mismatch" => {
            if g("side") == "local" {
                (
                    format!("we cannot authenticate to the peer: {}", g("why")),
                    "Give this connection the credentials named (local.auth, local.certs, the \
                     key in private/)."
                        .into(),
                )
            } else {
                (
                    format!(
                        "the {} authenticated with {}, but this connection expects {} from it",
                        g("peer_role"),
                        g("method"),
                        match g("expected").as_str() {
                            "psk" => "a pre-shared key".to_string(),
                            "pubkey" => "a certificate signature".to_string(),
                            _ => "a method we support (psk, or signatures 1, 9, 10, 11, 14)".to_string(),
                        }
                    ),
                    "Use the same method on both sides: remote.auth = \"psk\" with a shared \
                     secret, or remote.auth = \"pubkey\" with the peer's CA in x509ca/."
                        .into(),
                )
            }
        }
        "identity-mismatch" => (
            match e.get("want") {
                Some(w) => format!("the peer identified as {}, but this connection expects {w}", g("got")),
                None => format!(
                    "the peer identified as {}, but its certificate \"{}\" does not hold that identity",
                    g("got"),
                    g("subject")
                ),
            },
            format!(
                "Set remote.id to the identity the peer sends ({}), or make the peer send the \
                 configured one; with certificates it must be the subject DN or a subjectAltName.",
                g("got")
            ),
        ),
        "cert-untrusted" => (
            format!(
                "the peer's certificate{} was refused: {}",
                e.get("subject").map(|s| format!(" \"{s}\"")).unwrap_or_default(),
                e.get("detail").cloned().unwrap_or_else(|| g("reason"))
            ),
            "Put the peer's CA certificate (and any intermediate it does not send) in x509ca/ \
             (or remote.cacerts)."
                .into(),
        ),
        "cert-revoked" => (
            format!(
                "the peer's certificate{} is revoked by a CRL of \"{}\": {}",
                e.get("subject").map(|s| format!(" \"{s}\"")).unwrap_or_default(),
                g("issuer"),
                g("reason")
            ),
            "Issue the peer a new certificate; if the CRL is stale, put a current one in x509crl/."
                .into(),
        ),
        "cert-expired" | "cert-not-yet-valid" => {
            let skew = e.get("skew_s").cloned().unwrap_or_default();
            if id == "cert-expired" {
                (
                    format!(
                        "the peer's certificate \"{}\" expired at {}, {skew} s before our clock ({})",
                        g("subject"),
                        g("not_after"),
                        g("clock")
                    ),
                    "Renew the peer's certificate; if it should still be valid, synchronise the \
                     clocks (NTP)."
                        .into(),
                )
            } else {
                (
                    format!(
                        "the peer's certificate \"{}\" is valid only from {}, {skew} s after our \
                         clock ({}): one of the clocks is wrong",
                        g("subject"),
                        g("not_before"),
                        g("clock")
                    ),
                    "Synchronise the clocks of both gateways (NTP); if they are right, reissue \
                     the certificate with a notBefore in the past."
                        .into(),
                )
            }
        }
        "ike-unanswered" => {
            if g("direction") == "in" {
                (
                    format!(
                        "we answered the peer's IKE_SA_INIT but its IKE_AUTH never arrived \
                         (waited {} ms)",
                        g("waited_ms")
                    ),
                    format!(
                        "Check that UDP 500 and 4500 pass both ways between {local} and {peer}; \
                         vpnctl trace shows each message."
                    ),
                )
            } else {
                (
                    format!(
                        "no answer from {} to {} after {} tries",
                        g("peer"),
                        g("exchange"),
                        g("tries")
                    ),
                    format!(
                        "Check that the peer is up and that UDP {} passes both ways between \
                         {local} and {peer}.",
                        g("port")
                    ),
                )
            }
        }
        "natt-blocked" => (
            format!(
                "IKE_SA_INIT got through on UDP 500, but {} on UDP 4500 got no answer after {} tries",
                g("exchange"),
                g("tries")
            ),
            format!("Allow UDP 4500 both ways between {local} and {peer}."),
        ),
        "ts-mismatch" => {
            let s = if let Some(m) = e.get("our_mode") {
                format!("the peer wants {} mode, this connection is {m} mode", g("peer_mode"))
            } else if g("side") == "we" {
                format!(
                    "the peer proposed traffic selectors {}; we allow {}",
                    g("theirs"),
                    g("ours")
                )
            } else {
                format!(
                    "the peer refused our traffic selectors {} with TS_UNACCEPTABLE",
                    g("ours")
                )
            };
            (
                s,
                "Make local_ts here equal (or contain) the peer's remote_ts, and remote_ts here \
                 the peer's local_ts; set mode alike on both sides."
                    .into(),
            )
        }
        "pfs-mismatch" => (
            if g("wants_pfs") == "peer" {
                format!(
                    "the peer wants a key exchange (PFS) with {} on CREATE_CHILD_SA{}; we offer {}",
                    g("theirs"),
                    e.get("child").map(|c| format!(" for {c}")).unwrap_or_default(),
                    g("ours")
                )
            } else {
                format!(
                    "we want a key exchange (PFS) with {} on CREATE_CHILD_SA{}, the peer {}",
                    g("ours"),
                    e.get("child").map(|c| format!(" for {c}")).unwrap_or_default(),
                    if g("side") == "peer" {
                        "refused it"
                    } else {
                        "offers none"
                    }
                )
            },
            "Add the same group (e.g. -x25519) to esp_proposals on both sides, or make PFS \
             optional here with -none."
                .into(),
        ),
        "lifetime-mismatch" => (
            match e.get("peer_interval_s") {
                Some(p) => format!(
                    "the peer deleted {} after {p} s instead of rekeying it; our rekey_time is {} s",
                    e.get("child").map_or("the Child SA".to_string(), |c| format!("Child SA {c}")),
                    g("our_rekey_s")
                ),
                None => format!(
                    "the IKE SA reached its hard lifetime ({} s) without a completed rekey{}",
                    g("our_life_s"),
                    if g("rekey_tried") == "true" {
                        ": our rekey got no answer or was refused"
                    } else {
                        ""
                    }
                ),
            },
            "Set our rekey_time below the peer's lifetime (or the peer's below ours), so that \
             one side rekeys before the other deletes."
                .into(),
        ),
        "ah-proposed" => (
            format!(
                "the peer proposes AH ({}), which this product does not do (ESP only, RFC 8221)",
                g("theirs")
            ),
            "Configure the peer for ESP with an AEAD, e.g. esp_proposals = aes256gcm16.".into(),
        ),
        "peer-dead" => (
            format!(
                "the peer {} stopped answering: {} DPD probe(s) unanswered in {} ms",
                g("peer"),
                g("probes"),
                g("waited_ms")
            ),
            format!(
                "Check that {peer} is up and that UDP 500/4500 pass between {local} and {peer}; \
                 behind NAT, that the mapping is kept."
            ),
        ),
        _ => (
            format!("a failure no other finding covers: {message}"),
            "Run vpnctl trace CONN and vpnctl log while it fails, and read the peer's log for \
             the same moment."
                .into(),
        ),
    }
}

// ---- ESP that does not come back --------------------------------------------------------------

/// Packets per SPI (normalised hex) in `s`.
fn sa_packets(s: &StatsReport) -> BTreeMap<(String, String), u64> {
    s.sas
        .iter()
        .map(|a| ((a.direction.clone(), spi_key(&a.spi)), a.packets))
        .collect()
}

fn esp_blocked(input: &DiagnoseInput, out: &mut Out) {
    let Some(l) = &input.list else { return };
    let deltas = match (&input.stats_before, &input.stats_after) {
        (Some(a), Some(b)) => {
            let (a, b) = (sa_packets(a), sa_packets(b));
            Some(
                b.into_iter()
                    .map(|(k, v)| {
                        let d = v.saturating_sub(a.get(&k).copied().unwrap_or(0));
                        (k, d)
                    })
                    .collect::<BTreeMap<_, _>>(),
            )
        }
        _ => None,
    };
    for c in &l.connections {
        let Some(ike) = c.ike_sas.iter().find(|s| s.state == "established") else {
            continue; // no IKE SA: other findings say why
        };
        if c.failures.iter().rev().take(1).any(|f| {
            f.finding == "peer-dead" && l.now_unix_ms.saturating_sub(f.at_unix_ms) < 120_000
        }) {
            continue; // the peer is gone: peer-dead says so
        }
        for ch in &c.children {
            for sa in &ch.sas {
                if let Some((enc, dec, window)) = rates(sa, deltas.as_ref(), input.window_s) {
                    if enc >= 3 && dec == 0 {
                        report_esp_blocked(out, input, c, ike, &ch.name, sa, enc, window);
                        break;
                    }
                }
            }
        }
    }
}

/// Packets encrypted and decrypted by one Child SA over a window: iked's 60 s samples when
/// they show traffic, else the two counter snapshots.
fn rates(
    sa: &ChildSaReport,
    deltas: Option<&BTreeMap<(String, String), u64>>,
    window_s: f64,
) -> Option<(u64, u64, f64)> {
    if sa.out_packets_60s > 0 {
        return Some((sa.out_packets_60s, sa.in_packets_60s, 60.0));
    }
    let d = deltas?;
    let out = *d.get(&("out".to_string(), spi_key(&sa.out_spi)))?;
    let inb = d
        .get(&("in".to_string(), spi_key(&sa.in_spi)))
        .copied()
        .unwrap_or(0);
    Some((out, inb, window_s))
}

#[allow(clippy::too_many_arguments)]
fn report_esp_blocked(
    out: &mut Out,
    input: &DiagnoseInput,
    c: &ConnReport,
    ike: &IkeSaReport,
    child: &str,
    sa: &ChildSaReport,
    enc: u64,
    window: f64,
) {
    let peer = ip_of(&ike.remote);
    let local = ip_of(&ike.local);
    let encap = ike.nat
        || ike.remote.ends_with(":4500")
        || matches!(&input.config, Some(Ok(cfg)) if cfg.conns.iter().any(|k| k.name == c.name && k.encap));
    let ports = if encap { "UDP 4500" } else { "IP protocol 50" };
    let mut evidence = ev([
        ("encrypted_packets_window", Value::from(enc)),
        ("decrypted_packets_window", Value::from(0u64)),
        ("window_s", Value::from(window)),
        ("peer", Value::from(peer.clone())),
        ("local", Value::from(local.clone())),
        ("ports", Value::from(ports)),
        ("out_spi", Value::from(spi_key(&sa.out_spi))),
        ("in_spi", Value::from(spi_key(&sa.in_spi))),
        ("child", Value::from(child)),
    ]);
    let liveness = match ike.last_heard_s {
        Some(h) => {
            evidence.insert("ike_last_heard_s".into(), Value::from(h));
            format!(
                "while IKE is answered (the peer's last IKE message {} s ago)",
                secs(h)
            )
        }
        None => "while the IKE SA is up".into(),
    };
    let alt = if encap {
        "UDP 4500"
    } else {
        "IP protocol 50 (or UDP 4500 with NAT traversal)"
    };
    out.add(
        "esp-blocked",
        Some(&c.name),
        format!(
            "{}: {} encrypted in the last {} s and 0 decrypted, {liveness}: ESP does not get \
             through.",
            c.name,
            plural(enc, "packet", "packets"),
            secs(window)
        ),
        evidence,
        format!("Check that {alt} is allowed between {local} and {peer}, in both directions."),
    );
}

// ---- the dataplane's drop counters -----------------------------------------------------------

fn drop_total(s: &StatsReport, reason: &str) -> u64 {
    match s.drop_reasons.iter().find(|d| d.reason == reason) {
        Some(d) => d.total,
        None => s
            .workers
            .iter()
            .map(|w| w.drops.get(reason).copied().unwrap_or(0))
            .sum(),
    }
}

/// The most bytes ESP adds in tunnel mode with an AEAD: outer IP header, UDP 8 with NAT
/// traversal, ESP header 8, IV 8, padding up to 3 plus pad length and next header 2,
/// ICV 16 (RFC 4303 §2, RFC 4106 §3, RFC 3948 §2).
pub fn esp_overhead(ipv6: bool, nat: bool) -> u32 {
    (if ipv6 { 40 } else { 20 }) + if nat { 8 } else { 0 } + 8 + 8 + 3 + 2 + 16
}

fn counters(input: &DiagnoseInput, out: &mut Out) {
    let (Some(a), Some(b)) = (&input.stats_before, &input.stats_after) else {
        return;
    };
    let d = |r: &str| drop_total(b, r).saturating_sub(drop_total(a, r));
    let w = input.window_s;
    let no_policy = d("no_policy");
    if no_policy > 0 {
        out.add(
            "no-policy",
            None,
            format!(
                "The dataplane dropped {} in the last {} s that no policy covers ({} since it \
                 started): a subnet talks through this gateway that no connection's traffic \
                 selectors include.",
                plural(no_policy, "inside packet", "inside packets"),
                secs(w),
                thousands(drop_total(b, "no_policy"))
            ),
            ev([
                ("no_policy_drops", Value::from(no_policy)),
                ("no_policy_total", Value::from(drop_total(b, "no_policy"))),
                ("window_s", Value::from(w)),
            ]),
            "Add the subnet to a child's local_ts/remote_ts (and the peer's), or route it \
             elsewhere; vpnctl stats shows the drop counters."
                .into(),
        );
    }
    let icmp = d("too_big_icmp_sent");
    let df_clear = d("too_big_df_clear");
    let too_big = icmp + df_clear;
    if too_big >= 2 {
        mtu_blackhole(input, out, too_big, icmp, df_clear);
    }
}

fn mtu_blackhole(input: &DiagnoseInput, out: &mut Out, too_big: u64, icmp: u64, df_clear: u64) {
    let mut evidence = ev([
        ("too_big_drops", Value::from(too_big)),
        ("icmp_sent", Value::from(icmp)),
        ("df_clear_drops", Value::from(df_clear)),
        ("window_s", Value::from(input.window_s)),
    ]);
    // The WAN interface: the one the route to a peer leaves by, else the dataplane's outside.
    let sys = input.system.as_ref();
    let wan = sys
        .and_then(|s| s.routes.iter().find_map(|r| r.dev.clone()))
        .or_else(|| input.dataplane.as_ref().and_then(|d| d.outside.clone()));
    let inside = input.dataplane.as_ref().and_then(|d| d.inside.clone());
    let mtu = |n: &Option<String>| {
        n.as_ref().and_then(|n| {
            sys.and_then(|s| s.interfaces.iter().find(|i| &i.name == n))
                .map(|i| i.mtu)
        })
    };
    let ipv6 = sys.is_some_and(|s| {
        s.routes
            .iter()
            .any(|r| r.peer.parse::<IpAddr>().is_ok_and(|a| a.is_ipv6()))
    });
    let nat = input.list.as_ref().is_some_and(|l| {
        l.connections
            .iter()
            .flat_map(|c| &c.ike_sas)
            .any(|s| s.nat || s.remote.ends_with(":4500"))
    });
    let overhead = esp_overhead(ipv6, nat);
    evidence.insert("esp_overhead".into(), Value::from(overhead));
    let mut path = String::new();
    if let Some(w) = &wan {
        evidence.insert("wan_interface".into(), Value::from(w.clone()));
    }
    if let Some(i) = &inside {
        evidence.insert("inside_interface".into(), Value::from(i.clone()));
    }
    let (wan_mtu, inside_mtu) = (mtu(&wan), mtu(&inside));
    if let Some(m) = wan_mtu {
        evidence.insert("wan_mtu".into(), Value::from(m));
        let max_inner = m.saturating_sub(overhead);
        evidence.insert("max_inner".into(), Value::from(max_inner));
        path = format!(
            " {} has MTU {m}, so inside packets above {max_inner} bytes do not fit after ESP's \
             {overhead} bytes",
            wan.as_deref().unwrap_or("the WAN interface")
        );
        if let Some(im) = inside_mtu {
            path.push_str(&format!(
                "; {} lets through {im}",
                inside.as_deref().unwrap_or("the inside interface")
            ));
        }
        path.push('.');
    }
    if let Some(im) = inside_mtu {
        evidence.insert("inside_mtu".into(), Value::from(im));
    }
    let target = match wan_mtu {
        Some(m) => format!("{}", m.saturating_sub(overhead)),
        None => "the WAN MTU minus ESP's overhead".into(),
    };
    out.add(
        "mtu-blackhole",
        None,
        format!(
            "{} too big for the tunnel were dropped in the last {} s ({} answered with ICMP \
             \"too big\", {} with DF clear), and they keep coming: the ICMP errors do not reach \
             the senders.{path}",
            plural(too_big, "packet", "packets"),
            secs(input.window_s),
            thousands(icmp),
            thousands(df_clear)
        ),
        evidence,
        format!(
            "Let ICMP \"fragmentation needed\" / \"packet too big\" reach the inside hosts, clamp \
             TCP MSS on the inside (tcp option maxseg size set rt mtu), or set the inside MTU \
             to {target}."
        ),
    );
}

// ---- firewall rules and certificates ----------------------------------------------------------

fn firewall(input: &DiagnoseInput, out: &mut Out) {
    let Some(sys) = &input.system else { return };
    for r in &sys.firewall {
        let what = match (r.protocol.as_str(), r.port) {
            ("udp", Some(500)) => "IKE (UDP 500)".to_string(),
            ("udp", Some(4500)) => "IKE and NAT-traversal ESP (UDP 4500)".to_string(),
            ("udp", _) => "UDP, IKE included".to_string(),
            _ => "ESP (IP protocol 50)".to_string(),
        };
        let mut evidence = ev([
            ("rule", Value::from(r.rule.clone())),
            ("table", Value::from(r.table.clone())),
            ("chain", Value::from(r.chain.clone())),
            ("protocol", Value::from(r.protocol.clone())),
            ("verdict", Value::from(r.verdict.clone())),
        ]);
        if let Some(p) = r.port {
            evidence.insert("port".into(), Value::from(p));
        }
        if let Some(h) = &r.hook {
            evidence.insert("hook".into(), Value::from(h.clone()));
        }
        if let Some(h) = r.handle {
            evidence.insert("handle".into(), Value::from(h));
        }
        let del = r
            .handle
            .map(|h| format!(" (nft delete rule {} {} handle {h})", r.table, r.chain))
            .unwrap_or_default();
        out.add(
            "firewall-blocks-ike",
            None,
            format!(
                "The nftables rule \"{}\" in table {}, chain {}{} {}s {what}.",
                r.rule,
                r.table,
                r.chain,
                r.hook
                    .as_ref()
                    .map(|h| format!(" (hook {h})"))
                    .unwrap_or_default(),
                r.verdict
            ),
            evidence,
            format!(
                "Insert an accept rule for UDP 500 and 4500 (and IP protocol 50 without NAT) \
                 from the peers before it, or remove it{del}."
            ),
        );
    }
}

fn certificates(input: &DiagnoseInput, out: &mut Out) {
    let Some(sys) = &input.system else { return };
    let now = sys.clock_unix_s;
    let show = |t: i64| crate::pki::chain::show_time(t);
    for c in &sys.certs {
        let skew = i64::try_from(c.skew_s).unwrap_or(i64::MAX);
        let base = ev([
            ("whose", Value::from("ours")),
            ("subject", Value::from(c.subject.clone())),
            ("not_before", Value::from(show(c.not_before_unix_s))),
            ("not_after", Value::from(show(c.not_after_unix_s))),
            ("clock", Value::from(show(now))),
            ("file", Value::from(c.file.clone())),
        ]);
        if now.saturating_add(skew) < c.not_before_unix_s {
            let off = c.not_before_unix_s - now;
            let mut e = base;
            e.insert("skew_s".into(), Value::from(off));
            out.add(
                "cert-not-yet-valid",
                Some(&c.conn),
                format!(
                    "{}: our certificate \"{}\" is valid only from {}, {off} s after our clock ({}): \
                     peers with a correct clock refuse it, or our clock is wrong.",
                    c.conn,
                    c.subject,
                    show(c.not_before_unix_s),
                    show(now)
                ),
                e,
                "Synchronise this machine's clock (NTP); if it is right, reissue the certificate \
                 with a notBefore in the past."
                    .into(),
            );
        } else if now.saturating_sub(skew) > c.not_after_unix_s {
            let off = now - c.not_after_unix_s;
            let mut e = base;
            e.insert("skew_s".into(), Value::from(off));
            out.add(
                "cert-expired",
                Some(&c.conn),
                format!(
                    "{}: our certificate \"{}\" expired at {}, {off} s before our clock ({}).",
                    c.conn,
                    c.subject,
                    show(c.not_after_unix_s),
                    show(now)
                ),
                e,
                format!(
                    "Renew {} and vpnctl reload; if it should still be valid, synchronise the clock.",
                    if c.file.is_empty() { "the certificate" } else { &c.file }
                ),
            );
        } else if c.not_after_unix_s - now < 30 * 86_400 {
            let left = c.not_after_unix_s - now;
            out.add(
                "local-cert-expiring",
                Some(&c.conn),
                format!(
                    "{}: our certificate \"{}\" expires in {} days ({}).",
                    c.conn,
                    c.subject,
                    left / 86_400,
                    show(c.not_after_unix_s)
                ),
                ev([
                    ("subject", Value::from(c.subject.clone())),
                    ("file", Value::from(c.file.clone())),
                    ("not_after", Value::from(show(c.not_after_unix_s))),
                    ("expires_in_s", Value::from(left)),
                ]),
                "Renew it and vpnctl reload before it expires.".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests;
