//! What `vpnctl --json` prints and what iked's control socket carries: one versioned set of
//! types (schema [`SCHEMA_VERSION`]), documented in `docs/OPERATIONS.md` and described by the
//! JSON Schema files in `docs/schema/`. Every top-level document carries `schema_version` and
//! `kind`, so a script can refuse a document it does not know.
//!
//! Compatibility: fields are only ever added within one schema version; removing or renaming
//! a field, or changing its meaning, bumps [`SCHEMA_VERSION`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The schema version of every document below.
pub const SCHEMA_VERSION: u32 = 1;

/// A top-level `vpnctl --json` document: `{"schema_version": 1, "kind": "...", ...}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Document<T> {
    pub schema_version: u32,
    pub kind: String,
    #[serde(flatten)]
    pub body: T,
}

impl<T> Document<T> {
    pub fn new(kind: &str, body: T) -> Document<T> {
        Document {
            schema_version: SCHEMA_VERSION,
            kind: kind.to_string(),
            body,
        }
    }
}

// ---- the control socket -------------------------------------------------------------------

/// A request to iked, one JSON object on one line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The daemon itself: version, uptime, configuration, counters.
    Status,
    /// Connections, IKE SAs, Child SAs (all, or one connection).
    List {
        conn: Option<String>,
    },
    Up {
        conn: String,
    },
    Down {
        conn: String,
    },
    /// The shell loads the file and hands the result to the daemon.
    Reload,
    /// Daemon events (log lines and IKE message summaries) with a sequence number above
    /// `since`, oldest first, at most `max`.
    Events {
        since: u64,
        max: Option<u32>,
    },
    /// The keys of the live SAs (for `vpnctl keys --wireshark`; never logged).
    Keys,
}

/// iked's answer: whether it did what was asked, text for the operator, and the data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    pub ok: bool,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub data: serde_json::Value,
}

// ---- status -------------------------------------------------------------------------------

/// iked as it sees itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct IkedStatus {
    pub version: String,
    pub pid: u32,
    pub uptime_s: f64,
    pub config: String,
    pub control_socket: String,
    pub ring: String,
    /// Unix time (ms) of the daemon's clock now, so readers can age the other times.
    pub now_unix_ms: u64,
    pub connections: u32,
    /// IKE SAs by state: "established", "connecting", "half_open", "deleting".
    pub ike_sas: BTreeMap<String, u64>,
    pub half_open: u64,
    /// Whether IKE_SA_INIT must carry a COOKIE right now (RFC 7296 §2.6).
    pub cookie_mode: bool,
    /// IKE datagrams dropped, by reason.
    pub ike_drops: BTreeMap<String, u64>,
    /// Negotiations by outcome: "established" and "failed" (totals), and "failed:<finding
    /// id>" for each finding failures were classified as (these add up to "failed").
    pub negotiations: BTreeMap<String, u64>,
    pub dpd_timeouts: u64,
    pub cookies_sent: u64,
    pub last_reload: Option<ReloadOutcome>,
    /// Errors iked met on its sockets (e.g. sendto: Network is unreachable), by peer.
    pub send_errors: Vec<SendError>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ReloadOutcome {
    pub at_unix_ms: u64,
    pub ok: bool,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SendError {
    pub peer: String,
    pub error: String,
    pub count: u64,
    pub last_unix_ms: u64,
}

/// The dataplane as its info file and counters file show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct DataplaneStatus {
    pub running: bool,
    pub pid: Option<u32>,
    pub ring: String,
    /// Seconds since the counters file was last written (a stale file: the dataplane is gone).
    pub counters_age_s: Option<f64>,
    pub outside: Option<String>,
    pub inside: Option<String>,
    /// "native", "generic" (skb), or "none".
    pub xdp_mode: Option<String>,
    /// "zerocopy" or "copy".
    pub bind_mode: Option<String>,
    pub workers: Vec<WorkerStatus>,
    pub sas: u64,
    pub policies: Option<u64>,
    pub totals: Totals,
    /// What looks wrong or could not be read, in plain words (a stale info file, old
    /// counters).
    #[serde(default)]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct WorkerStatus {
    pub id: u32,
    pub core: Option<u32>,
    /// Its first outside queue (`outside_queues` has them all).
    pub queue: Option<u32>,
    #[serde(default)]
    pub outside_queues: Vec<u32>,
    #[serde(default)]
    pub inside_queues: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Totals {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub encrypted_packets: u64,
    pub decrypted_packets: u64,
    pub dropped_packets: u64,
}

/// `vpnctl status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct StatusReport {
    /// None when iked does not answer (`iked_error` says why).
    pub iked: Option<IkedStatus>,
    pub iked_error: Option<String>,
    pub dataplane: DataplaneStatus,
}

// ---- list ---------------------------------------------------------------------------------

/// `vpnctl list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ListReport {
    pub now_unix_ms: u64,
    pub connections: Vec<ConnReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ConnReport {
    pub name: String,
    /// "established", "connecting", "down".
    pub state: String,
    pub local_addrs: Vec<String>,
    pub remote_addrs: Vec<String>,
    pub local_id: String,
    pub remote_id: String,
    /// Established, connecting and deleting IKE SAs (half-open responder SAs are only
    /// counted, in `half_open`).
    pub ike_sas: Vec<IkeSaReport>,
    /// Responder IKE SAs of this connection waiting for IKE_AUTH (RFC 7296 §2.6).
    #[serde(default)]
    pub half_open: u64,
    pub children: Vec<ChildReport>,
    /// Seconds until the next initiation attempt, when down and retrying.
    pub retry_in_s: Option<f64>,
    /// The most recent failures, newest last (bounded).
    pub failures: Vec<FailureRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct IkeSaReport {
    pub spi_i: String,
    pub spi_r: String,
    /// "initiator" or "responder".
    pub role: String,
    /// "established", "connecting", "half_open", "deleting".
    pub state: String,
    pub local: String,
    pub remote: String,
    pub local_id: String,
    pub remote_id: String,
    /// e.g. "aes128gcm16-prfsha256-x25519".
    pub suite: Option<String>,
    pub nat: bool,
    pub age_s: f64,
    pub established_s: Option<f64>,
    pub rekey_in_s: Option<f64>,
    pub reauth_in_s: Option<f64>,
    pub expire_in_s: Option<f64>,
    pub rekeys: u64,
    /// Seconds since the last IKE message from the peer (liveness).
    pub last_heard_s: Option<f64>,
    pub last_rekey_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ChildReport {
    pub name: String,
    pub reqid: u32,
    /// "installed", "negotiating", "trap", "down".
    pub state: String,
    pub mode: String,
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    pub sas: Vec<ChildSaReport>,
    pub rekeys: u64,
    /// Inbound SAs replaced by a rekey, kept for packets in flight.
    pub retiring: u32,
    /// SAs inherited from a previous iked, still forwarding.
    pub stale: u32,
    pub last_failure: Option<FailureRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ChildSaReport {
    pub in_spi: String,
    pub out_spi: String,
    /// Whether the dataplane holds each SPI (from its counters file; None when unknown).
    pub in_in_dataplane: Option<bool>,
    pub out_in_dataplane: Option<bool>,
    pub outbound_installed: bool,
    pub suite: Option<String>,
    pub in_bytes: u64,
    pub in_packets: u64,
    pub out_bytes: u64,
    pub out_packets: u64,
    /// Packets in the last 60 s (from iked's once-a-second samples of the counters).
    pub in_packets_60s: u64,
    pub out_packets_60s: u64,
    /// Seconds since inbound / outbound counters last moved.
    pub in_idle_s: Option<f64>,
    pub out_idle_s: Option<f64>,
    pub up_s: f64,
    pub rekey_in_s: Option<f64>,
    pub expire_in_s: Option<f64>,
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    /// RFC 9611: the dataplane worker this per-resource Child SA's outbound SA is bound to;
    /// `None` for the ordinary (fallback) Child SA every worker may use. Added in schema 1.
    #[serde(default)]
    pub worker: Option<u16>,
}

/// One failure of a connection, classified for `vpnctl diagnose`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct FailureRecord {
    pub at_unix_ms: u64,
    /// The finding id it points at (docs/DIAGNOSE.md), or "unclassified".
    pub finding: String,
    /// The error in plain words, as logged.
    pub message: String,
    /// Structured evidence (e.g. "ours", "theirs", "peer", "notify").
    pub evidence: BTreeMap<String, String>,
}

// ---- events (log --follow, trace) ---------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct EventRecord {
    pub seq: u64,
    pub at_unix_ms: u64,
    /// "error", "warn", "info", "debug".
    pub level: String,
    /// "event" (a log line) or "trace" (one IKE message, summarised).
    pub kind: String,
    pub conn: Option<String>,
    pub peer: Option<String>,
    pub ike_spi: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct EventsReport {
    /// The sequence number to ask from next (`since`).
    pub next: u64,
    /// Events older than the buffer holds were lost to its bound (so many).
    pub lost: u64,
    /// The sequence number of the newest event held (0: none yet), so a reader can ask for
    /// the last N (`since = newest - N`).
    #[serde(default)]
    pub newest: u64,
    pub events: Vec<EventRecord>,
}

// ---- stats --------------------------------------------------------------------------------

/// `vpnctl stats`: what the dataplane counted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct StatsReport {
    pub ring: String,
    /// When the dataplane wrote these counters (unix ns): equal values, equal snapshots.
    pub updated_unix_ns: u64,
    /// The writer was mid-update when read and did not finish within the reader's patience
    /// (a dataplane killed while writing): the figures may mix two moments.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub torn: bool,
    pub workers: Vec<WorkerStats>,
    pub sas: Vec<SaStats>,
    /// Every drop reason the dataplane knows, with its meaning, and its total.
    pub drop_reasons: Vec<DropReasonStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct WorkerStats {
    pub id: u32,
    pub outside_rx: u64,
    pub outside_tx: u64,
    pub inside_rx: u64,
    pub inside_tx: u64,
    /// Bytes received and sent per interface; absent when the counters do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_rx_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_tx_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside_rx_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside_tx_bytes: Option<u64>,
    pub encrypted: u64,
    pub decrypted: u64,
    pub drops: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SaStats {
    /// "in" or "out".
    pub direction: String,
    pub spi: String,
    pub reqid: u32,
    pub packets: u64,
    pub bytes: u64,
    /// Outbound: the last sequence number; inbound: the replay window's top.
    pub seq: u64,
    pub drops: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct DropReasonStats {
    pub reason: String,
    /// "esp" (per SA and worker) or "worker".
    pub scope: String,
    pub total: u64,
    pub meaning: String,
}

// ---- diagnose -----------------------------------------------------------------------------

/// One problem `vpnctl diagnose` found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Finding {
    /// Stable id; `docs/DIAGNOSE.md#<id>` explains it.
    pub id: String,
    /// "error" (traffic does not flow), "warning" (it will not, or not well), "info".
    pub severity: String,
    pub conn: Option<String>,
    /// What is happening, in one sentence.
    pub summary: String,
    /// The numbers and times that show it, by name.
    pub evidence: BTreeMap<String, serde_json::Value>,
    /// What to change.
    pub remedy: String,
    /// "docs/DIAGNOSE.md#<id>".
    pub doc: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct DiagnoseReport {
    pub now_unix_ms: u64,
    pub findings: Vec<Finding>,
    /// What could not be checked, and why (iked down, no counters file, no nft, ...).
    pub unchecked: Vec<String>,
}

// ---- keys ---------------------------------------------------------------------------------

/// The keys of the live SAs (`Request::Keys`): only on request, never logged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct KeysReport {
    pub ike_sas: Vec<IkeKeys>,
    pub child_sas: Vec<ChildKeys>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct IkeKeys {
    pub spi_i: String,
    pub spi_r: String,
    /// IANA names, e.g. "ENCR_AES_GCM_16" with key bits, "AUTH_HMAC_SHA2_256_128" or none.
    pub encr: String,
    pub encr_key_bits: u32,
    pub integ: Option<String>,
    /// Hex.
    pub sk_ei: String,
    pub sk_er: String,
    pub sk_ai: String,
    pub sk_ar: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ChildKeys {
    /// "in" or "out".
    pub direction: String,
    pub spi: String,
    pub src: String,
    pub dst: String,
    pub encr: String,
    pub encr_key_bits: u32,
    pub integ: Option<String>,
    /// Hex: encryption key with its salt (GCM) as the dataplane holds it; integrity key.
    pub encr_key: String,
    pub integ_key: String,
    pub nat_t: bool,
}
