//! Prometheus metrics: what iked and the dataplane count, rendered in the Prometheus text
//! exposition format, version 0.0.4 (`text/plain; version=0.0.4`). Pure: [`render`] turns a
//! [`MetricsInput`] (iked's status and list, the dataplane's counters; each may be missing)
//! into text. `iked --metrics ADDR:PORT` serves it ([`crate::metrics_http`]); `vpnctl metrics`
//! prints it once. `docs/METRICS.md` documents every family; `docs/grafana-dashboard.json`
//! graphs them.
//!
//! Conventions (<https://prometheus.io/docs/practices/naming/>): one product prefix
//! (`xdpipsec_`), base units in the name (`_bytes`, `_seconds`), `_total` on counters. The
//! families are declared once, as data, in [`FAMILIES`] (name, type, help): the renderer, the
//! dashboard test and the docs test all read that list.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::api::{IkedStatus, ListReport, StatsReport};

/// Product prefix of every metric name.
pub const PREFIX: &str = "xdpipsec_";

/// The content type of the text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters older than this (the dataplane writes them at least once a second) mean the
/// dataplane is gone: `xdpipsec_up{daemon="dataplane"}` is 0.
pub const DATAPLANE_STALE_MS: u64 = 5_000;

/// IKE SA states always present in `xdpipsec_ike_sas` (0 when none), so a dashboard or an
/// alert sees a series even before the first SA.
pub const IKE_STATES: [&str; 4] = ["established", "connecting", "half_open", "deleting"];

/// Per-SA drop reasons always present (0 when none): anti-replay (RFC 4303 §3.4.3) and
/// integrity (§3.4.4), the ones an alert watches. Other reasons appear once counted.
pub const SA_DROPS_ALWAYS: [&str; 3] = ["icv_failed", "replay_duplicate", "replay_too_old"];

/// A metric type (`# TYPE` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One metric family: its name (with the prefix), type and help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

macro_rules! families {
    ($( $id:ident = $name:literal, $kind:ident, $help:literal; )*) => {
        $( const $id: Family = Family { name: $name, kind: Kind::$kind, help: $help }; )*
        /// Every family [`render`] can emit, in the order it emits them.
        pub const FAMILIES: &[Family] = &[ $( $id, )* ];
    };
}

families! {
    UP = "xdpipsec_up", Gauge,
        "Whether the daemon answered (iked) or its counters are fresh (dataplane): 1 or 0.";
    COUNTERS_TS = "xdpipsec_dataplane_counters_timestamp_seconds", Gauge,
        "When the dataplane wrote the counters of this scrape (Unix time); equal values, equal snapshots (vpnctl stats --json updated_unix_ns).";
    W_RX = "xdpipsec_worker_rx_packets_total", Counter,
        "Packets a dataplane worker received, by interface (outside: the WAN, inside: the protected network).";
    W_TX = "xdpipsec_worker_tx_packets_total", Counter,
        "Packets a dataplane worker sent, by interface.";
    W_RX_BYTES = "xdpipsec_worker_rx_bytes_total", Counter,
        "Bytes a dataplane worker received, by interface.";
    W_TX_BYTES = "xdpipsec_worker_tx_bytes_total", Counter,
        "Bytes a dataplane worker sent, by interface.";
    W_ENCAP = "xdpipsec_worker_encapsulated_packets_total", Counter,
        "Packets a dataplane worker encapsulated in ESP (outbound).";
    W_DECAP = "xdpipsec_worker_decapsulated_packets_total", Counter,
        "ESP packets a dataplane worker decapsulated (inbound, verified).";
    W_DROPS = "xdpipsec_worker_dropped_packets_total", Counter,
        "Packets a dataplane worker dropped, by reason (vpnctl stats explains each reason).";
    SA_PACKETS = "xdpipsec_sa_packets_total", Counter,
        "Packets through one ESP SA (in: decapsulated, out: encapsulated).";
    SA_BYTES = "xdpipsec_sa_bytes_total", Counter,
        "Bytes through one ESP SA.";
    SA_DROPS = "xdpipsec_sa_dropped_packets_total", Counter,
        "Packets dropped on one ESP SA, by reason (replay_duplicate and replay_too_old: anti-replay, RFC 4303 3.4.3; icv_failed: integrity, 3.4.4).";
    SA_SEQ = "xdpipsec_sa_sequence_number", Gauge,
        "Outbound: the last ESP sequence number sent; inbound: the top of the replay window.";
    CHILD_REKEYS = "xdpipsec_child_rekeys_total", Counter,
        "Child SA rekeys of one child of a connection (since iked started).";
    CONN_UP = "xdpipsec_connection_established", Gauge,
        "Whether a configured connection is established: 1 or 0.";
    CONNECTIONS = "xdpipsec_connections", Gauge,
        "Connections in iked's configuration.";
    IKE_SAS = "xdpipsec_ike_sas", Gauge,
        "IKE SAs by state (established, connecting, half_open, deleting).";
    HALF_OPEN = "xdpipsec_ike_half_open", Gauge,
        "Half-open IKE SAs (IKE_SA_INIT answered, IKE_AUTH not yet; RFC 7296 2.6).";
    COOKIE_MODE = "xdpipsec_ike_cookie_mode", Gauge,
        "Whether iked asks for a COOKIE before it keeps state for a new IKE_SA_INIT (RFC 7296 2.6): 1 or 0.";
    COOKIES_SENT = "xdpipsec_ike_cookies_sent_total", Counter,
        "COOKIE notifies iked sent in answer to an IKE_SA_INIT.";
    NEGOTIATIONS = "xdpipsec_ike_negotiations_total", Counter,
        "IKE and Child SA negotiations by outcome (established, failed) and, for failures, the reason (a vpnctl diagnose finding id).";
    DPD_TIMEOUTS = "xdpipsec_ike_dpd_timeouts_total", Counter,
        "IKE SAs closed because the peer stopped answering liveness checks (RFC 7296 2.4).";
    IKE_DROPS = "xdpipsec_ike_dropped_datagrams_total", Counter,
        "IKE datagrams iked dropped, by reason.";
    SEND_ERRORS = "xdpipsec_ike_send_errors_total", Counter,
        "Errors iked met sending IKE datagrams, by peer and error.";
}

/// What one scrape shows. Each part is optional: iked may be absent (a statically keyed
/// dataplane), and the dataplane's counters may be missing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetricsInput {
    /// Unix time (ms) of the scrape: ages the dataplane's counters.
    pub now_unix_ms: u64,
    pub iked: Option<IkedStatus>,
    pub list: Option<ListReport>,
    pub stats: Option<StatsReport>,
}

/// A sample's labels, in the order printed.
type Labels = Vec<(&'static str, String)>;

/// The samples of one family, collected before printing so HELP and TYPE come once.
struct Out {
    text: String,
}

impl Out {
    /// Print `family` with its samples; a family without samples is left out.
    fn family(&mut self, f: Family, samples: impl IntoIterator<Item = (Labels, Value)>) {
        let mut samples = samples.into_iter().peekable();
        if samples.peek().is_none() {
            return;
        }
        let _ = writeln!(self.text, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(self.text, "# TYPE {} {}", f.name, f.kind.as_str());
        for (labels, value) in samples {
            self.text.push_str(f.name);
            if !labels.is_empty() {
                self.text.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.text.push(',');
                    }
                    let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
                }
                self.text.push('}');
            }
            let _ = writeln!(self.text, " {value}");
        }
    }
}

/// A sample value: counters and most gauges are whole numbers; a Unix time in ns is printed
/// as exact seconds with nine decimals.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    UnixNs(u64),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::UnixNs(ns) => write!(f, "{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000),
        }
    }
}

/// A label value as the format wants it: backslash, double quote and line feed escaped
/// (`\\`, `\"`, `\n`).
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text: backslash and line feed escaped (`\\`, `\n`).
pub fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// An SPI as the dataplane and iked print it ("0x0000c0de", "c0de"), as a number: the two
/// reports are matched on the number, not on how it is spelled.
fn spi_value(s: &str) -> Option<u32> {
    let s = s.trim();
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u32::from_str_radix(hex, 16).ok()
}

/// `negotiations` keys: an outcome ("established", "failed"), optionally with a reason after
/// a ':' or '/' ("failed:psk_mismatch").
fn outcome_reason(key: &str) -> (&str, &str) {
    match key.split_once([':', '/']) {
        Some((o, r)) => (o, r),
        None => (key, ""),
    }
}

/// The Prometheus text of one scrape.
pub fn render(m: &MetricsInput) -> String {
    let mut out = Out {
        text: String::new(),
    };
    let fresh = m.stats.as_ref().is_some_and(|s| {
        m.now_unix_ms.saturating_sub(s.updated_unix_ns / 1_000_000) <= DATAPLANE_STALE_MS
    });
    out.family(
        UP,
        [
            (
                lbl([("daemon", "iked")]),
                Value::Int(m.iked.is_some().into()),
            ),
            (lbl([("daemon", "dataplane")]), Value::Int(fresh.into())),
        ],
    );
    if let Some(s) = &m.stats {
        dataplane(&mut out, s, m.list.as_ref());
    }
    if let Some(l) = &m.list {
        connections(&mut out, l);
    }
    if let Some(st) = &m.iked {
        iked(&mut out, st);
    }
    out.text
}

fn lbl<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn dataplane(out: &mut Out, s: &StatsReport, list: Option<&ListReport>) {
    out.family(
        COUNTERS_TS,
        [(Vec::new(), Value::UnixNs(s.updated_unix_ns))],
    );
    let w = |id: u32, iface: &str| lbl([("worker", &id.to_string()), ("interface", iface)]);
    out.family(
        W_RX,
        s.workers.iter().flat_map(|x| {
            [
                (w(x.id, "outside"), Value::Int(x.outside_rx)),
                (w(x.id, "inside"), Value::Int(x.inside_rx)),
            ]
        }),
    );
    out.family(
        W_TX,
        s.workers.iter().flat_map(|x| {
            [
                (w(x.id, "outside"), Value::Int(x.outside_tx)),
                (w(x.id, "inside"), Value::Int(x.inside_tx)),
            ]
        }),
    );
    out.family(
        W_RX_BYTES,
        s.workers.iter().flat_map(|x| {
            [
                (x.outside_rx_bytes, "outside"),
                (x.inside_rx_bytes, "inside"),
            ]
            .into_iter()
            .filter_map(move |(v, iface)| Some((w(x.id, iface), Value::Int(v?))))
        }),
    );
    out.family(
        W_TX_BYTES,
        s.workers.iter().flat_map(|x| {
            [
                (x.outside_tx_bytes, "outside"),
                (x.inside_tx_bytes, "inside"),
            ]
            .into_iter()
            .filter_map(move |(v, iface)| Some((w(x.id, iface), Value::Int(v?))))
        }),
    );
    let wk = |id: u32| lbl([("worker", &id.to_string())]);
    out.family(
        W_ENCAP,
        s.workers
            .iter()
            .map(|x| (wk(x.id), Value::Int(x.encrypted))),
    );
    out.family(
        W_DECAP,
        s.workers
            .iter()
            .map(|x| (wk(x.id), Value::Int(x.decrypted))),
    );
    out.family(
        W_DROPS,
        s.workers.iter().flat_map(|x| {
            // Every reason the dataplane knows, 0 where it counted none (its report may
            // list only the non-zero ones): a series must exist before its first drop for
            // rate() and increase() to see that drop.
            let mut drops: BTreeMap<&str, u64> = s
                .drop_reasons
                .iter()
                .map(|r| (r.reason.as_str(), 0))
                .collect();
            for (reason, v) in &x.drops {
                drops.insert(reason, *v);
            }
            drops.into_iter().map(move |(reason, v)| {
                (
                    lbl([("worker", &x.id.to_string()), ("reason", reason)]),
                    Value::Int(v),
                )
            })
        }),
    );

    // Which connection and child each SPI belongs to, as iked knows it.
    let mut owner: HashMap<(bool, u32), (&str, &str)> = HashMap::new();
    for c in list.map_or(&[][..], |l| &l.connections) {
        for ch in &c.children {
            for sa in &ch.sas {
                for (inbound, spi) in [(true, &sa.in_spi), (false, &sa.out_spi)] {
                    if let Some(v) = spi_value(spi) {
                        owner.insert((inbound, v), (&c.name, &ch.name));
                    }
                }
            }
        }
    }
    let sa_labels = |sa: &crate::api::SaStats| -> Labels {
        let (conn, child) = spi_value(&sa.spi)
            .and_then(|v| owner.get(&(sa.direction == "in", v)).copied())
            .unwrap_or(("", ""));
        lbl([
            ("spi", &sa.spi),
            ("direction", &sa.direction),
            ("reqid", &sa.reqid.to_string()),
            ("conn", conn),
            ("child", child),
        ])
    };
    out.family(
        SA_PACKETS,
        s.sas
            .iter()
            .map(|sa| (sa_labels(sa), Value::Int(sa.packets))),
    );
    out.family(
        SA_BYTES,
        s.sas.iter().map(|sa| (sa_labels(sa), Value::Int(sa.bytes))),
    );
    out.family(
        SA_DROPS,
        s.sas.iter().flat_map(|sa| {
            let base = sa_labels(sa);
            let mut drops: BTreeMap<&str, u64> = SA_DROPS_ALWAYS.iter().map(|r| (*r, 0)).collect();
            for (reason, v) in &sa.drops {
                drops.insert(reason, *v);
            }
            drops.into_iter().map(move |(reason, v)| {
                let mut l = base.clone();
                l.push(("reason", reason.to_string()));
                (l, Value::Int(v))
            })
        }),
    );
    out.family(
        SA_SEQ,
        s.sas.iter().map(|sa| (sa_labels(sa), Value::Int(sa.seq))),
    );
}

fn connections(out: &mut Out, l: &ListReport) {
    out.family(
        CHILD_REKEYS,
        l.connections.iter().flat_map(|c| {
            c.children.iter().map(move |ch| {
                (
                    lbl([("conn", &c.name), ("child", &ch.name)]),
                    Value::Int(ch.rekeys),
                )
            })
        }),
    );
    out.family(
        CONN_UP,
        l.connections.iter().map(|c| {
            (
                lbl([("conn", &c.name)]),
                Value::Int((c.state == "established").into()),
            )
        }),
    );
}

fn iked(out: &mut Out, st: &IkedStatus) {
    out.family(
        CONNECTIONS,
        [(Vec::new(), Value::Int(st.connections.into()))],
    );
    let mut states: BTreeMap<&str, u64> = IKE_STATES.iter().map(|s| (*s, 0)).collect();
    for (k, v) in &st.ike_sas {
        *states.entry(k).or_default() += v;
    }
    out.family(
        IKE_SAS,
        states
            .iter()
            .map(|(k, v)| (lbl([("state", k)]), Value::Int(*v))),
    );
    out.family(HALF_OPEN, [(Vec::new(), Value::Int(st.half_open))]);
    out.family(
        COOKIE_MODE,
        [(Vec::new(), Value::Int(st.cookie_mode.into()))],
    );
    out.family(COOKIES_SENT, [(Vec::new(), Value::Int(st.cookies_sent))]);
    // iked counts "established" and "failed" in all, and "failed:<finding>" per finding
    // (adding up to "failed"). Each failure is counted once: under its finding, and what no
    // finding covers under reason "" (0 when all are classified). Both outcomes are always
    // there, so a rate of failures is 0 rather than absent.
    let mut negs: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut totals: BTreeMap<&str, u64> = [("established", 0), ("failed", 0)].into();
    let mut classified: BTreeMap<&str, u64> = BTreeMap::new();
    for (k, v) in &st.negotiations {
        match outcome_reason(k) {
            (o, "") => *totals.entry(o).or_default() += v,
            (o, r) => {
                *negs.entry((o, r)).or_default() += v;
                *classified.entry(o).or_default() += v;
            }
        }
    }
    for (o, total) in totals {
        let rest = total.saturating_sub(classified.get(o).copied().unwrap_or(0));
        negs.insert((o, ""), rest);
    }
    out.family(
        NEGOTIATIONS,
        negs.iter()
            .map(|((o, r), v)| (lbl([("outcome", o), ("reason", r)]), Value::Int(*v))),
    );
    out.family(DPD_TIMEOUTS, [(Vec::new(), Value::Int(st.dpd_timeouts))]);
    out.family(
        IKE_DROPS,
        st.ike_drops
            .iter()
            .map(|(r, v)| (lbl([("reason", r)]), Value::Int(*v))),
    );
    out.family(
        SEND_ERRORS,
        st.send_errors.iter().map(|e| {
            (
                lbl([("peer", &e.peer), ("error", &e.error)]),
                Value::Int(e.count),
            )
        }),
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::{ChildReport, ChildSaReport, ConnReport, SaStats, SendError, WorkerStats};

    /// One parsed sample: name, labels, value.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Sample {
        pub name: String,
        pub labels: BTreeMap<String, String>,
        pub value: f64,
    }

    /// A parsed exposition: HELP and TYPE per family (each a list, to catch repeats), and
    /// the samples in order.
    #[derive(Debug, Default)]
    pub struct Parsed {
        pub help: BTreeMap<String, Vec<String>>,
        pub types: BTreeMap<String, Vec<String>>,
        pub samples: Vec<Sample>,
    }

    impl Parsed {
        pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
            self.samples
                .iter()
                .find(|s| {
                    s.name == name
                        && labels
                            .iter()
                            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                })
                .map(|s| s.value)
        }
    }

    /// A small parser of the text format (enough for what `render` prints): `# HELP`,
    /// `# TYPE`, and `name{k="v",...} value` with escapes in label values. Panics on
    /// anything else, so a malformed line fails the test.
    pub fn parse(text: &str) -> Parsed {
        let mut p = Parsed::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                p.help
                    .entry(name.into())
                    .or_default()
                    .push(unescape(help, false));
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').expect("TYPE name type");
                p.types.entry(name.into()).or_default().push(t.into());
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            let name_end = line
                .find(['{', ' '])
                .unwrap_or_else(|| panic!("no value: {line:?}"));
            let name = &line[..name_end];
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {line:?}"
            );
            let mut labels = BTreeMap::new();
            let mut rest = &line[name_end..];
            if let Some(r) = rest.strip_prefix('{') {
                let mut chars = r.char_indices();
                let mut key = String::new();
                loop {
                    let (_, c) = chars.next().expect("unterminated labels");
                    match c {
                        '}' => break,
                        ',' => continue,
                        '=' => {
                            assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line:?}");
                            let mut val = String::new();
                            loop {
                                let (_, c) = chars.next().expect("unterminated value");
                                match c {
                                    '"' => break,
                                    '\\' => match chars.next().map(|x| x.1) {
                                        Some('\\') => val.push('\\'),
                                        Some('"') => val.push('"'),
                                        Some('n') => val.push('\n'),
                                        o => panic!("bad escape {o:?} in {line:?}"),
                                    },
                                    '\n' => panic!("raw newline in {line:?}"),
                                    c => val.push(c),
                                }
                            }
                            assert!(
                                labels.insert(std::mem::take(&mut key), val).is_none(),
                                "repeated label in {line:?}"
                            );
                        }
                        c => key.push(c),
                    }
                }
                let consumed = chars.next().map_or(r.len(), |(i, _)| i);
                rest = &r[consumed..];
            }
            let value = rest
                .trim_start()
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
            p.samples.push(Sample {
                name: name.into(),
                labels,
                value,
            });
        }
        p
    }

    fn unescape(s: &str, quotes: bool) -> String {
        let mut out = String::new();
        let mut it = s.chars();
        while let Some(c) = it.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match it.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('"') if quotes => out.push('"'),
                o => panic!("bad escape {o:?} in {s:?}"),
            }
        }
        out
    }

    /// A made-up scrape: two workers, an SA pair of a known child plus one inbound SA iked
    /// does not know, iked with SAs in two states and a few failures.
    pub fn sample_input() -> MetricsInput {
        let worker = |id: u32, base: u64| WorkerStats {
            id,
            outside_rx: base + 1,
            outside_tx: base + 2,
            inside_rx: base + 3,
            inside_tx: base + 4,
            outside_rx_bytes: Some(base * 100 + 1),
            outside_tx_bytes: Some(base * 100 + 2),
            inside_rx_bytes: None,
            inside_tx_bytes: None,
            encrypted: base + 5,
            decrypted: base + 6,
            drops: [
                ("no_policy".to_string(), base + 7),
                ("icv_failed".into(), 0),
            ]
            .into_iter()
            .collect(),
        };
        let sa = |direction: &str, spi: &str, packets: u64| SaStats {
            direction: direction.into(),
            spi: spi.into(),
            reqid: 7,
            packets,
            bytes: packets * 100,
            seq: packets,
            drops: [
                ("replay_duplicate".to_string(), 2),
                ("icv_failed".into(), 1),
            ]
            .into_iter()
            .collect(),
        };
        MetricsInput {
            now_unix_ms: 1_700_000_000_500,
            iked: Some(IkedStatus {
                connections: 2,
                ike_sas: [("established".to_string(), 1), ("half_open".into(), 3)]
                    .into_iter()
                    .collect(),
                half_open: 3,
                cookie_mode: true,
                ike_drops: [("bad_spi".to_string(), 4)].into_iter().collect(),
                negotiations: [
                    ("established".to_string(), 5),
                    ("failed".into(), 4),
                    ("failed:psk_mismatch".into(), 2),
                    ("failed/proposal_mismatch".into(), 1),
                ]
                .into_iter()
                .collect(),
                dpd_timeouts: 1,
                cookies_sent: 9,
                send_errors: vec![SendError {
                    peer: "192.0.2.2:500".into(),
                    error: "Network is unreachable \"ENETUNREACH\"".into(),
                    count: 3,
                    last_unix_ms: 0,
                }],
                ..IkedStatus::default()
            }),
            list: Some(ListReport {
                now_unix_ms: 0,
                connections: vec![ConnReport {
                    name: "site\"b\\".into(),
                    state: "established".into(),
                    children: vec![ChildReport {
                        name: "net\nline".into(),
                        reqid: 7,
                        rekeys: 4,
                        sas: vec![ChildSaReport {
                            in_spi: "c0de0001".into(),
                            out_spi: "0xC0DE0002".into(),
                            ..ChildSaReport::default()
                        }],
                        ..ChildReport::default()
                    }],
                    ..ConnReport::default()
                }],
            }),
            stats: Some(StatsReport {
                ring: "r".into(),
                updated_unix_ns: 1_700_000_000_123_456_789,
                torn: false,
                workers: vec![worker(0, 10), worker(1, 20)],
                sas: vec![
                    sa("in", "0xc0de0001", 11),
                    sa("out", "0xc0de0002", 12),
                    sa("in", "0x0000beef", 13),
                ],
                drop_reasons: vec![crate::api::DropReasonStats {
                    reason: "tx_ring_full".into(),
                    scope: "worker".into(),
                    total: 0,
                    meaning: String::new(),
                }],
            }),
        }
    }

    #[test]
    fn a_scrape_parses_back_to_the_numbers_it_was_made_of() {
        let text = render(&sample_input());
        let p = parse(&text);
        let g = |n: &str, l: &[(&str, &str)]| {
            p.get(n, l).unwrap_or_else(|| panic!("no sample {n} {l:?}"))
        };
        assert_eq!(g("xdpipsec_up", &[("daemon", "iked")]), 1.0);
        assert_eq!(g("xdpipsec_up", &[("daemon", "dataplane")]), 1.0);
        let ts = g("xdpipsec_dataplane_counters_timestamp_seconds", &[]);
        assert!((ts - 1_700_000_000.123_456_8).abs() < 1e-6, "{ts}");
        // The text carries the nanoseconds exactly.
        assert!(
            text.contains("\nxdpipsec_dataplane_counters_timestamp_seconds 1700000000.123456789\n")
        );
        let w1 = [("worker", "1"), ("interface", "outside")];
        assert_eq!(g("xdpipsec_worker_rx_packets_total", &w1), 21.0);
        assert_eq!(
            g(
                "xdpipsec_worker_tx_packets_total",
                &[("worker", "0"), ("interface", "inside")]
            ),
            14.0
        );
        assert_eq!(g("xdpipsec_worker_rx_bytes_total", &w1), 2001.0);
        // A byte count the dataplane did not report is absent, not 0.
        assert_eq!(
            p.get(
                "xdpipsec_worker_rx_bytes_total",
                &[("worker", "1"), ("interface", "inside")]
            ),
            None
        );
        assert_eq!(
            g(
                "xdpipsec_worker_encapsulated_packets_total",
                &[("worker", "1")]
            ),
            25.0
        );
        assert_eq!(
            g(
                "xdpipsec_worker_decapsulated_packets_total",
                &[("worker", "0")]
            ),
            16.0
        );
        assert_eq!(
            g(
                "xdpipsec_worker_dropped_packets_total",
                &[("worker", "1"), ("reason", "no_policy")]
            ),
            27.0
        );
        // Reasons the dataplane knows but did not count are 0, not absent.
        assert_eq!(
            g(
                "xdpipsec_worker_dropped_packets_total",
                &[("worker", "1"), ("reason", "tx_ring_full")]
            ),
            0.0
        );
        assert_eq!(
            g(
                "xdpipsec_sa_dropped_packets_total",
                &[("spi", "0x0000beef"), ("reason", "replay_too_old")]
            ),
            0.0
        );
        // SAs iked knows carry their connection and child (matched on the SPI's value).
        let known = [
            ("spi", "0xc0de0002"),
            ("direction", "out"),
            ("reqid", "7"),
            ("conn", "site\"b\\"),
            ("child", "net\nline"),
        ];
        assert_eq!(g("xdpipsec_sa_packets_total", &known), 12.0);
        assert_eq!(g("xdpipsec_sa_bytes_total", &known), 1200.0);
        assert_eq!(g("xdpipsec_sa_sequence_number", &known), 12.0);
        let known_in = [
            ("spi", "0xc0de0001"),
            ("direction", "in"),
            ("child", "net\nline"),
        ];
        assert_eq!(g("xdpipsec_sa_packets_total", &known_in), 11.0);
        let unknown = [("spi", "0x0000beef"), ("conn", ""), ("child", "")];
        assert_eq!(g("xdpipsec_sa_packets_total", &unknown), 13.0);
        let mut drop = unknown.to_vec();
        drop.push(("reason", "replay_duplicate"));
        assert_eq!(g("xdpipsec_sa_dropped_packets_total", &drop), 2.0);
        drop[3] = ("reason", "icv_failed");
        assert_eq!(g("xdpipsec_sa_dropped_packets_total", &drop), 1.0);
        assert_eq!(
            g(
                "xdpipsec_child_rekeys_total",
                &[("conn", "site\"b\\"), ("child", "net\nline")]
            ),
            4.0
        );
        assert_eq!(
            g("xdpipsec_connection_established", &[("conn", "site\"b\\")]),
            1.0
        );
        assert_eq!(g("xdpipsec_connections", &[]), 2.0);
        assert_eq!(g("xdpipsec_ike_sas", &[("state", "established")]), 1.0);
        assert_eq!(g("xdpipsec_ike_sas", &[("state", "half_open")]), 3.0);
        // States with no SA are there, as 0.
        assert_eq!(g("xdpipsec_ike_sas", &[("state", "deleting")]), 0.0);
        assert_eq!(g("xdpipsec_ike_half_open", &[]), 3.0);
        assert_eq!(g("xdpipsec_ike_cookie_mode", &[]), 1.0);
        assert_eq!(g("xdpipsec_ike_cookies_sent_total", &[]), 9.0);
        let neg = "xdpipsec_ike_negotiations_total";
        assert_eq!(g(neg, &[("outcome", "established"), ("reason", "")]), 5.0);
        assert_eq!(
            g(neg, &[("outcome", "failed"), ("reason", "psk_mismatch")]),
            2.0
        );
        assert_eq!(
            g(
                neg,
                &[("outcome", "failed"), ("reason", "proposal_mismatch")]
            ),
            1.0
        );
        // A failure no finding covers is counted once, without a reason: the sum over
        // reasons is the total.
        assert_eq!(g(neg, &[("outcome", "failed"), ("reason", "")]), 1.0);
        let failed: f64 = p
            .samples
            .iter()
            .filter(|s| s.name == neg && s.labels["outcome"] == "failed")
            .map(|s| s.value)
            .sum();
        assert_eq!(failed, 4.0);
        assert_eq!(g("xdpipsec_ike_dpd_timeouts_total", &[]), 1.0);
        assert_eq!(
            g(
                "xdpipsec_ike_dropped_datagrams_total",
                &[("reason", "bad_spi")]
            ),
            4.0
        );
        assert_eq!(
            g(
                "xdpipsec_ike_send_errors_total",
                &[("error", "Network is unreachable \"ENETUNREACH\"")]
            ),
            3.0
        );
    }

    #[test]
    fn each_family_has_one_help_and_one_type_before_its_samples_and_counters_end_in_total() {
        let text = render(&sample_input());
        let p = parse(&text);
        let mut seen = std::collections::BTreeSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap_or_default().to_string();
                assert!(seen.insert(current.clone()), "{current} declared twice");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert_eq!(name, current, "sample {line:?} outside its family");
            }
        }
        for f in FAMILIES {
            assert!(f.name.starts_with(PREFIX), "{}", f.name);
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
            if seen.contains(f.name) {
                assert_eq!(p.help[f.name], vec![f.help.to_string()], "{}", f.name);
                assert_eq!(p.types[f.name], vec![f.kind.as_str().to_string()]);
            }
        }
        // The sample input exercises every family.
        let all: std::collections::BTreeSet<_> = FAMILIES.iter().map(|f| f.name).collect();
        assert_eq!(
            seen.iter()
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>(),
            all
        );
        assert!(FAMILIES.len() == all.len(), "a family is declared twice");
    }

    #[test]
    fn label_values_are_escaped_and_read_back_unchanged() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_label("plain-0x1f"), "plain-0x1f");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
        let text = render(&sample_input());
        assert!(
            text.contains(r#"conn="site\"b\\",child="net\nline""#),
            "{text}"
        );
        // No sample line is broken by a raw newline in a value.
        for line in text.lines() {
            assert!(
                line.starts_with("xdpipsec_") || line.starts_with("# "),
                "{line:?}"
            );
        }
    }

    #[test]
    fn counters_are_never_negative_and_every_value_is_finite() {
        let mut input = sample_input();
        // Extreme counts print exactly, without a sign or an exponent.
        if let Some(s) = &mut input.stats {
            s.sas[0].packets = u64::MAX;
        }
        let text = render(&input);
        assert!(text.contains(&format!(" {}\n", u64::MAX)), "{text}");
        let p = parse(&text);
        for s in &p.samples {
            assert!(s.value.is_finite() && s.value >= 0.0, "{s:?}");
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(
                value.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
                "{line:?}"
            );
        }
    }

    #[test]
    fn without_iked_only_the_dataplane_is_shown_and_iked_is_down() {
        let mut input = sample_input();
        input.iked = None;
        input.list = None;
        let p = parse(&render(&input));
        assert_eq!(p.get("xdpipsec_up", &[("daemon", "iked")]), Some(0.0));
        assert_eq!(p.get("xdpipsec_up", &[("daemon", "dataplane")]), Some(1.0));
        assert!(p
            .samples
            .iter()
            .all(|s| !s.name.starts_with("xdpipsec_ike_")));
        // SAs without iked have no connection or child.
        assert!(p
            .samples
            .iter()
            .filter(|s| s.name == "xdpipsec_sa_packets_total")
            .all(|s| s.labels["conn"].is_empty() && s.labels["child"].is_empty()));
    }

    #[test]
    fn stale_or_missing_counters_show_the_dataplane_down() {
        let mut input = sample_input();
        input.now_unix_ms += DATAPLANE_STALE_MS + 1;
        let p = parse(&render(&input));
        assert_eq!(p.get("xdpipsec_up", &[("daemon", "dataplane")]), Some(0.0));
        // The last counters are still shown (with their timestamp): they are what was counted.
        assert!(p.get("xdpipsec_sa_packets_total", &[]).is_some());
        input.stats = None;
        let p = parse(&render(&input));
        assert_eq!(p.get("xdpipsec_up", &[("daemon", "dataplane")]), Some(0.0));
        assert_eq!(
            p.get("xdpipsec_dataplane_counters_timestamp_seconds", &[]),
            None
        );
    }

    #[test]
    fn nothing_to_show_is_still_a_valid_scrape() {
        let text = render(&MetricsInput::default());
        assert_eq!(
            text,
            "# HELP xdpipsec_up Whether the daemon answered (iked) or its counters are fresh \
             (dataplane): 1 or 0.\n# TYPE xdpipsec_up gauge\nxdpipsec_up{daemon=\"iked\"} 0\n\
             xdpipsec_up{daemon=\"dataplane\"} 0\n"
        );
    }

    /// The metric names an expression uses (identifiers with the product prefix).
    fn metric_names(expr: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut rest = expr;
        while let Some(i) = rest.find(PREFIX) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            out.push(&tail[..end]);
            rest = &tail[end..];
        }
        out
    }

    fn repo_file(path: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn the_grafana_dashboard_is_json_and_graphs_only_metrics_we_emit() {
        let d: serde_json::Value =
            serde_json::from_str(&repo_file("docs/grafana-dashboard.json")).expect("valid JSON");
        assert!(
            d["schemaVersion"].as_u64().unwrap_or(0) >= 36,
            "schemaVersion"
        );
        let vars = d["templating"]["list"].as_array().expect("templating");
        assert!(
            vars.iter()
                .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
            "no Prometheus datasource variable"
        );
        let known: std::collections::BTreeSet<&str> = FAMILIES.iter().map(|f| f.name).collect();
        let mut used = std::collections::BTreeSet::new();
        let mut exprs = 0;
        for p in d["panels"].as_array().expect("panels") {
            if p["type"] == "row" {
                continue;
            }
            let title = p["title"].as_str().unwrap_or_default();
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "panel {title} has no query");
            for t in targets {
                let expr = t["expr"].as_str().expect("expr");
                let names = metric_names(expr);
                assert!(!names.is_empty(), "{title}: {expr} uses no metric of ours");
                for n in names {
                    assert!(known.contains(n), "{title}: {n} is not a metric we emit");
                    used.insert(n);
                }
                exprs += 1;
            }
        }
        assert!(exprs >= 10, "{exprs} queries");
        // The panels the dashboard promises.
        for n in [
            "xdpipsec_sa_bytes_total",
            "xdpipsec_worker_rx_bytes_total",
            "xdpipsec_sa_packets_total",
            "xdpipsec_worker_rx_packets_total",
            "xdpipsec_worker_dropped_packets_total",
            "xdpipsec_sa_dropped_packets_total",
            "xdpipsec_ike_sas",
            "xdpipsec_ike_negotiations_total",
            "xdpipsec_ike_dpd_timeouts_total",
            "xdpipsec_ike_half_open",
            "xdpipsec_ike_cookie_mode",
        ] {
            assert!(used.contains(n), "no panel graphs {n}");
        }
        // A variable name (e.g. ${datasource}) is not mistaken for a metric.
        assert_eq!(
            metric_names("rate(xdpipsec_sa_bytes_total{instance=~\"$instance\"}[5m])"),
            vec!["xdpipsec_sa_bytes_total"]
        );
    }

    #[test]
    fn docs_describe_every_metric() {
        let doc = repo_file("docs/METRICS.md");
        for f in FAMILIES {
            assert!(
                doc.contains(&format!("`{}`", f.name)),
                "docs/METRICS.md lacks {}",
                f.name
            );
        }
    }

    #[test]
    fn spis_match_whatever_their_spelling() {
        assert_eq!(spi_value("0x0000c0de"), Some(0xc0de));
        assert_eq!(spi_value("C0DE"), Some(0xc0de));
        assert_eq!(spi_value("0XC0DE"), Some(0xc0de));
        assert_eq!(spi_value("spi"), None);
        assert_eq!(
            outcome_reason("failed:ts_mismatch"),
            ("failed", "ts_mismatch")
        );
        assert_eq!(outcome_reason("established"), ("established", ""));
    }
}
