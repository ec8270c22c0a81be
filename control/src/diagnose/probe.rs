//! The system part of a diagnosis: routes to each peer, interface MTUs, XDP attachment,
//! firewall rules, certificates, the configuration file. The only part of `diagnose` that
//! runs commands; each probe that cannot run says why in `unchecked` and never fails the
//! diagnosis. The parsers are pure and tested with captured output.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the machine showed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SystemSnapshot {
    /// Our clock (Unix seconds) when the snapshot was taken.
    pub clock_unix_s: i64,
    /// `ip route get` for each peer.
    pub routes: Vec<RouteProbe>,
    /// Every interface: MTU and XDP attachment.
    pub interfaces: Vec<InterfaceInfo>,
    /// nftables rules that drop or reject IKE or ESP.
    pub firewall: Vec<FirewallRule>,
    /// Our certificates (the ones the configuration names).
    pub certs: Vec<CertProbe>,
    /// What could not be looked at, and why.
    pub unchecked: Vec<String>,
}

/// The route to one peer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RouteProbe {
    pub peer: String,
    /// The interface the route leaves by.
    pub dev: Option<String>,
    pub src: Option<String>,
    pub gateway: Option<String>,
    /// Why there is no route (`ip route get`'s error), when there is none.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InterfaceInfo {
    pub name: String,
    pub mtu: u32,
    /// "native", "generic", "offload", or None (no XDP program attached).
    pub xdp: Option<String>,
    pub up: bool,
}

/// One nftables rule that drops or rejects IKE (UDP 500, 4500) or ESP.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FirewallRule {
    /// Family and name, e.g. "inet filter".
    pub table: String,
    pub chain: String,
    /// The chain's hook ("input", "output", "forward", ...), when it is a base chain.
    pub hook: Option<String>,
    /// "udp" or "esp".
    pub protocol: String,
    pub port: Option<u16>,
    /// "drop" or "reject".
    pub verdict: String,
    /// The rule in nft syntax (reconstructed from the JSON).
    pub rule: String,
    pub handle: Option<u64>,
}

/// One of our certificates and its validity (RFC 5280 §4.1.2.5).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CertProbe {
    pub conn: String,
    pub file: String,
    pub subject: String,
    pub not_before_unix_s: i64,
    pub not_after_unix_s: i64,
    /// The connection's clock-skew allowance.
    pub skew_s: u64,
}

/// The configuration file as diagnose loaded it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConfigSummary {
    pub file: String,
    pub conns: Vec<ConfigConn>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConfigConn {
    pub name: String,
    pub local_addrs: Vec<String>,
    pub remote_addrs: Vec<String>,
    pub encap: bool,
}

/// Why the configuration file does not load: the loader's error, typed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConfigProblem {
    pub file: String,
    /// 1-based; 0 for the whole file.
    pub line: u64,
    pub field: String,
    pub message: String,
}

// ---- running the probes --------------------------------------------------------------------

/// Run `cmd args`, its stdout on success, else a sentence saying why.
fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Look at the machine: routes to `peers`, interfaces, nftables, and the certificates of
/// `config` (when it loaded).
pub fn gather(peers: &[IpAddr], config: Option<&Path>, clock_unix_s: i64) -> SystemSnapshot {
    let mut s = SystemSnapshot {
        clock_unix_s,
        ..SystemSnapshot::default()
    };
    for p in peers {
        match run("ip", &["-j", "route", "get", &p.to_string()]) {
            Ok(out) => match parse_route_get(&out) {
                Some(mut r) => {
                    r.peer = p.to_string();
                    s.routes.push(r);
                }
                None => s
                    .unchecked
                    .push(format!("route to {p}: unexpected ip output {out:?}")),
            },
            // A missing `ip` is unchecked; `ip` saying no route is the answer.
            Err(e) if e.starts_with("ip:") => s.unchecked.push(format!("route to {p}: {e}")),
            Err(e) => s.routes.push(RouteProbe {
                peer: p.to_string(),
                error: Some(route_error(&e)),
                ..RouteProbe::default()
            }),
        }
    }
    match run("ip", &["-j", "link", "show"]) {
        Ok(out) => match parse_ip_link(&out) {
            Ok(i) => s.interfaces = i,
            Err(e) => s.unchecked.push(format!("interfaces: {e}")),
        },
        Err(e) => s.unchecked.push(format!("interfaces: {e}")),
    }
    if s.interfaces.is_empty() {
        // Without `ip`, the MTUs still are in sysfs.
        s.interfaces = sysfs_mtus();
    }
    match run("nft", &["-j", "list", "ruleset"]) {
        Ok(out) => match parse_nft_ruleset(&out) {
            Ok(r) => s.firewall = r,
            Err(e) => s.unchecked.push(format!("firewall rules: {e}")),
        },
        Err(e) => s.unchecked.push(format!("firewall rules: {e}")),
    }
    if let Some(path) = config {
        match certificates(path) {
            Ok(c) => s.certs = c,
            Err(e) => s.unchecked.push(format!("certificates: {e}")),
        }
    }
    s
}

/// `ip route get` fails with "RTNETLINK answers: Network is unreachable": keep the reason.
fn route_error(e: &str) -> String {
    e.rsplit("RTNETLINK answers: ")
        .next()
        .unwrap_or(e)
        .trim()
        .to_string()
}

fn sysfs_mtus() -> Vec<InterfaceInfo> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut v: Vec<InterfaceInfo> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let mtu = std::fs::read_to_string(e.path().join("mtu")).ok()?;
            Some(InterfaceInfo {
                name,
                mtu: mtu.trim().parse().ok()?,
                xdp: None,
                up: true,
            })
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

// ---- parsers (pure) -------------------------------------------------------------------------

/// `ip -j route get ADDR`: `[{"dst":"192.0.2.2","gateway":"...","dev":"wan0","prefsrc":...}]`.
pub fn parse_route_get(json: &str) -> Option<RouteProbe> {
    let v: Value = serde_json::from_str(json).ok()?;
    let r = v.as_array()?.first()?;
    let s = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
    if s("type").as_deref() == Some("unreachable") || s("type").as_deref() == Some("prohibit") {
        return Some(RouteProbe {
            peer: s("dst").unwrap_or_default(),
            error: Some(format!(
                "{} route",
                s("type").unwrap_or_else(|| "unreachable".into())
            )),
            ..RouteProbe::default()
        });
    }
    Some(RouteProbe {
        peer: s("dst").unwrap_or_default(),
        dev: s("dev"),
        src: s("prefsrc"),
        gateway: s("gateway"),
        error: None,
    })
}

/// `ip -j link show`: name, MTU, state and the XDP program's mode
/// (`"xdp":{"mode":1,...}`: 1 native (drv), 2 generic (skb), 3 offload; iproute2's
/// XDP_ATTACHED_* numbers).
pub fn parse_ip_link(json: &str) -> Result<Vec<InterfaceInfo>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("ip -j link: {e}"))?;
    let arr = v.as_array().ok_or("ip -j link: not a JSON array")?;
    let mut out = Vec::new();
    for l in arr {
        let Some(name) = l.get("ifname").and_then(Value::as_str) else {
            continue; // an entry without a name cannot be matched to anything
        };
        let mtu = l.get("mtu").and_then(Value::as_u64).unwrap_or(0) as u32;
        let xdp = l.get("xdp").and_then(|x| {
            let mode = x.get("mode").and_then(Value::as_u64)?;
            match mode {
                1 => Some("native".to_string()),
                2 => Some("generic".to_string()),
                3 => Some("offload".to_string()),
                4 => Some("multi".to_string()),
                _ => None, // 0: XDP_ATTACHED_NONE
            }
        });
        let up = l
            .get("flags")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|f| f == "UP"));
        out.push(InterfaceInfo {
            name: name.to_string(),
            mtu,
            xdp,
            up,
        });
    }
    Ok(out)
}

/// `nft -j list ruleset`: the rules whose verdict is drop or reject and that match IKE
/// (UDP port 500 or 4500, either direction) or ESP (IP protocol 50, by `meta l4proto`,
/// `ip protocol` or `ip6 nexthdr`). Chains' default policies are not judged: a drop policy
/// with an accept rule for IKE before it is the usual setup.
pub fn parse_nft_ruleset(json: &str) -> Result<Vec<FirewallRule>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("nft -j: {e}"))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("nft -j: no \"nftables\" array")?;
    let mut hooks: BTreeMap<(String, String, String), String> = BTreeMap::new();
    for it in items {
        if let Some(c) = it.get("chain") {
            let key = (str_of(c, "family"), str_of(c, "table"), str_of(c, "name"));
            if let Some(h) = c.get("hook").and_then(Value::as_str) {
                hooks.insert(key, h.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for it in items {
        let Some(r) = it.get("rule") else {
            continue; // tables, chains, sets: not rules
        };
        let exprs = r
            .get("expr")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let Some(m) = match_rule(&exprs) else {
            continue; // neither a drop/reject verdict nor IKE/ESP: not our concern
        };
        let (family, table, chain) = (str_of(r, "family"), str_of(r, "table"), str_of(r, "chain"));
        out.push(FirewallRule {
            hook: hooks
                .get(&(family.clone(), table.clone(), chain.clone()))
                .cloned(),
            table: format!("{family} {table}"),
            chain,
            protocol: m.protocol,
            port: m.port,
            verdict: m.verdict,
            rule: m.text,
            handle: r.get("handle").and_then(Value::as_u64),
        });
    }
    Ok(out)
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

struct RuleMatch {
    protocol: String,
    port: Option<u16>,
    verdict: String,
    text: String,
}

/// The ports a `"right"` side holds: a number, a set of numbers, or a range.
fn ports_of(right: &Value) -> Vec<(u16, u16)> {
    if let Some(n) = right.as_u64() {
        return vec![(n as u16, n as u16)];
    }
    if let Some(r) = right.get("range").and_then(Value::as_array) {
        if let (Some(a), Some(b)) = (
            r.first().and_then(Value::as_u64),
            r.get(1).and_then(Value::as_u64),
        ) {
            return vec![(a as u16, b as u16)];
        }
    }
    if let Some(set) = right.get("set").and_then(Value::as_array) {
        return set.iter().flat_map(ports_of).collect();
    }
    Vec::new()
}

fn show(v: &Value) -> String {
    if let Some(s) = v.as_str() {
        return s.to_string();
    }
    if let Some(n) = v.as_u64() {
        return n.to_string();
    }
    if let Some(r) = v.get("range").and_then(Value::as_array) {
        return r.iter().map(show).collect::<Vec<_>>().join("-");
    }
    if let Some(s) = v.get("set").and_then(Value::as_array) {
        return format!(
            "{{ {} }}",
            s.iter().map(show).collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(p) = v.get("payload") {
        return format!("{} {}", str_of(p, "protocol"), str_of(p, "field"));
    }
    if let Some(m) = v.get("meta") {
        return format!("meta {}", str_of(m, "key"));
    }
    v.to_string()
}

fn match_rule(exprs: &[Value]) -> Option<RuleMatch> {
    let mut verdict = None;
    let mut udp = false;
    let mut esp = false;
    let mut ike_port = None;
    let mut other_port = false;
    let mut text = Vec::new();
    for e in exprs {
        if e.get("drop").is_some() {
            verdict = Some("drop");
            text.push("drop".to_string());
        } else if e.get("reject").is_some() {
            verdict = Some("reject");
            text.push("reject".to_string());
        } else if let Some(m) = e.get("match") {
            let left = m.get("left").cloned().unwrap_or(Value::Null);
            let right = m.get("right").cloned().unwrap_or(Value::Null);
            let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
            let (proto, field) = match (left.get("payload"), left.get("meta")) {
                (Some(p), _) => (str_of(p, "protocol"), str_of(p, "field")),
                (_, Some(mk)) => ("meta".to_string(), str_of(mk, "key")),
                _ => (String::new(), String::new()),
            };
            let negated = op == "!=";
            match (proto.as_str(), field.as_str()) {
                ("udp", "dport" | "sport") if !negated => {
                    udp = true;
                    let ports = ports_of(&right);
                    match [500u16, 4500]
                        .into_iter()
                        .find(|p| ports.iter().any(|(a, b)| (a..=b).contains(&p)))
                    {
                        Some(p) => ike_port = Some(p),
                        None => other_port = true,
                    }
                }
                ("meta", "l4proto") | ("ip", "protocol") | ("ip6", "nexthdr") if !negated => {
                    let names = match right.get("set").and_then(Value::as_array) {
                        Some(s) => s.iter().map(show).collect(),
                        None => vec![show(&right)],
                    };
                    if names.iter().any(|n| n == "esp" || n == "50") {
                        esp = true;
                    }
                    if names.iter().any(|n| n == "udp" || n == "17") {
                        udp = true;
                    }
                }
                _ => {} // other matches (addresses, interfaces, ...) only narrow the rule: the rule text keeps them
            }
            let opt = if op == "==" || op == "in" {
                String::new()
            } else {
                format!("{op} ")
            };
            let l = if proto == "meta" {
                format!("meta {field}")
            } else {
                format!("{proto} {field}")
            };
            text.push(format!("{l} {opt}{}", show(&right)));
        } else if e.get("counter").is_some() {
            text.push("counter".into());
        } else if e.get("accept").is_some() {
            text.push("accept".into());
        } else if e.get("log").is_some() {
            text.push("log".into());
        }
    }
    let verdict = verdict?.to_string();
    let text = text.join(" ");
    if let Some(port) = ike_port {
        return Some(RuleMatch {
            protocol: "udp".into(),
            port: Some(port),
            verdict,
            text,
        });
    }
    if esp {
        return Some(RuleMatch {
            protocol: "esp".into(),
            port: None,
            verdict,
            text,
        });
    }
    // "meta l4proto udp drop" with no port: drops IKE too.
    if udp && !other_port {
        return Some(RuleMatch {
            protocol: "udp".into(),
            port: None,
            verdict,
            text,
        });
    }
    None
}

// ---- the configuration and our certificates -----------------------------------------------

/// Load iked's configuration file as iked does: what diagnose needs of it, or the loader's
/// error (file, line, field, message).
pub fn load_config(
    path: &Path,
) -> Result<(ConfigSummary, crate::config::IkedConfig), ConfigProblem> {
    match crate::config::IkedConfig::load(path) {
        Ok(c) => Ok((
            ConfigSummary {
                file: path.display().to_string(),
                conns: c
                    .connections
                    .iter()
                    .map(|cc| ConfigConn {
                        name: cc.connection.name.clone(),
                        local_addrs: cc.local_addrs.iter().map(IpAddr::to_string).collect(),
                        remote_addrs: cc.remote_addrs.iter().map(IpAddr::to_string).collect(),
                        encap: cc.connection.force_encap,
                    })
                    .collect(),
            },
            c,
        )),
        Err(e) => Err(ConfigProblem {
            file: e.file.display().to_string(),
            line: e.line as u64,
            field: e.field,
            message: e.message,
        }),
    }
}

/// "FILE:LINE: FIELD: MESSAGE" (how a [`crate::config`] error prints, e.g. in a refused
/// reload's message) back into its parts.
pub fn parse_config_message(s: &str) -> Option<ConfigProblem> {
    let (file, rest) = s.split_once(':')?;
    let (line, rest) = match rest.split_once(':') {
        Some((l, r)) if l.trim().parse::<u64>().is_ok() => (l.trim().parse().ok()?, r),
        _ => (0, rest),
    };
    let rest = rest.trim_start();
    // A field is a dotted path without spaces, then ": ".
    let (field, message) = match rest.split_once(": ") {
        Some((f, m)) if !f.is_empty() && !f.contains(' ') => (f.to_string(), m.to_string()),
        _ => (String::new(), rest.to_string()),
    };
    Some(ConfigProblem {
        file: file.to_string(),
        line,
        field,
        message,
    })
}

/// Our certificates, from a configuration that loaded: each connection's own certificate
/// with its validity. The file names come from the configuration's `local.certs`.
fn certificates(path: &Path) -> Result<Vec<CertProbe>, String> {
    let (_, cfg) = load_config(path).map_err(|e| format!("{}: {}", e.file, e.message))?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let files = cert_files(&text);
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for c in &cfg.connections {
        let auth = &c.connection.auth;
        let Some(creds) = &auth.credentials else {
            continue; // a PSK connection has no certificate of ours
        };
        let Some(der) = creds.chain.first() else {
            continue; // Credentials::new refuses an empty chain; nothing to check
        };
        let (nb, na) = validity(der)?;
        let file = files
            .get(&c.connection.name)
            .map(|f| {
                let p = Path::new(f);
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    base.join("x509").join(p)
                }
            })
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        out.push(CertProbe {
            conn: c.connection.name.clone(),
            file,
            subject: creds.subject.clone(),
            not_before_unix_s: nb,
            not_after_unix_s: na,
            skew_s: auth.clock_skew_s,
        });
    }
    Ok(out)
}

/// `connections.NAME.local.certs[0]` of each connection, from the TOML text.
fn cert_files(text: &str) -> BTreeMap<String, String> {
    let Ok(v) = text.parse::<toml::Table>() else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    if let Some(conns) = v.get("connections").and_then(toml::Value::as_table) {
        for (name, c) in conns {
            if let Some(f) = c
                .get("local")
                .and_then(|l| l.get("certs"))
                .and_then(toml::Value::as_array)
                .and_then(|a| a.first())
                .and_then(toml::Value::as_str)
            {
                out.insert(name.clone(), f.to_string());
            }
        }
    }
    out
}

/// notBefore and notAfter of a DER certificate, Unix seconds.
fn validity(der: &[u8]) -> Result<(i64, i64), String> {
    use x509_cert::der::Decode;
    let c = x509_cert::Certificate::from_der(der).map_err(|e| format!("our certificate: {e}"))?;
    let v = c.tbs_certificate().validity();
    let s = |t: &x509_cert::time::Time| {
        i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
    };
    Ok((s(&v.not_before), s(&v.not_after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `nft -j list ruleset` (nftables 1.0.9) after
    /// `nft add rule inet filter input udp dport 4500 drop` and friends.
    const NFT: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.9", "release_name": "Old Doc Yak #3", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "filter", "handle": 1}}, {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}, {"chain": {"family": "inet", "table": "filter", "name": "output", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 3, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 4500}}, {"counter": {"packets": 12, "bytes": 1440}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 4, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "output", "handle": 5, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "esp"}}, {"reject": null}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 6, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": {"set": [53, 500]}}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 7, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 8, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "sport"}}, "right": 500}}, {"accept": null}]}}]}"#;

    #[test]
    fn nft_rules_that_drop_ike_or_esp_are_found_and_others_not() {
        let r = parse_nft_ruleset(NFT).unwrap();
        assert_eq!(r.len(), 3, "{r:#?}");
        assert_eq!(r[0].table, "inet filter");
        assert_eq!(r[0].chain, "input");
        assert_eq!(r[0].hook.as_deref(), Some("input"));
        assert_eq!((r[0].protocol.as_str(), r[0].port), ("udp", Some(4500)));
        assert_eq!(r[0].verdict, "drop");
        assert_eq!(r[0].rule, "udp dport 4500 counter drop");
        assert_eq!(r[0].handle, Some(3));
        assert_eq!((r[1].protocol.as_str(), r[1].port), ("esp", None));
        assert_eq!(r[1].verdict, "reject");
        assert_eq!(r[1].hook.as_deref(), Some("output"));
        assert_eq!(r[1].rule, "meta l4proto esp reject");
        assert_eq!(r[2].port, Some(500));
        assert_eq!(r[2].rule, "udp dport { 53, 500 } drop");
    }

    #[test]
    fn an_empty_or_broken_ruleset() {
        let empty =
            r#"{"nftables": [{"metainfo": {"version": "1.0.9", "json_schema_version": 1}}]}"#;
        assert_eq!(parse_nft_ruleset(empty).unwrap(), vec![]);
        assert!(parse_nft_ruleset("Error: permission denied").is_err());
    }

    #[test]
    fn a_port_range_covering_4500_counts() {
        let j = r#"{"nftables":[{"rule":{"family":"ip","table":"t","chain":"c","handle":9,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":{"range":[4000,5000]}}},{"drop":null}]}}]}"#;
        let r = parse_nft_ruleset(j).unwrap();
        assert_eq!(r[0].port, Some(4500));
        assert_eq!(r[0].table, "ip t");
        assert_eq!(r[0].hook, None);
        assert_eq!(r[0].rule, "udp dport 4000-5000 drop");
    }

    /// Captured from `ip -j route get` (iproute2 6.1).
    #[test]
    fn ip_route_get_is_parsed() {
        let j = r#"[{"dst":"192.0.2.2","gateway":"198.51.100.1","dev":"wan0","prefsrc":"192.0.2.1","flags":[],"uid":0,"cache":[]}]"#;
        let r = parse_route_get(j).unwrap();
        assert_eq!(r.dev.as_deref(), Some("wan0"));
        assert_eq!(r.gateway.as_deref(), Some("198.51.100.1"));
        assert_eq!(r.src.as_deref(), Some("192.0.2.1"));
        assert_eq!(r.error, None);
        let u =
            parse_route_get(r#"[{"type":"unreachable","dst":"203.0.113.9","flags":[],"uid":0}]"#)
                .unwrap();
        assert_eq!(u.error.as_deref(), Some("unreachable route"));
        assert_eq!(
            route_error("ip -j route get 203.0.113.9: RTNETLINK answers: Network is unreachable"),
            "Network is unreachable"
        );
    }

    /// Captured from `ip -j link show` (iproute2 6.1) with an XDP program in generic mode.
    #[test]
    fn ip_link_shows_mtus_and_xdp_modes() {
        let j = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue","operstate":"UNKNOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00"},{"ifindex":2,"ifname":"wan0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1400,"xdp":{"mode":2,"prog":{"id":42,"name":"xsk_redirect","tag":"0123456789abcdef","jited":1}},"qdisc":"noqueue","operstate":"UP","link_type":"ether","address":"02:00:00:00:00:01"},{"ifindex":3,"ifname":"lan0","flags":["BROADCAST","MULTICAST"],"mtu":1500,"operstate":"DOWN","link_type":"ether"}]"#;
        let l = parse_ip_link(j).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!((l[1].name.as_str(), l[1].mtu), ("wan0", 1400));
        assert_eq!(l[1].xdp.as_deref(), Some("generic"));
        assert!(l[1].up);
        assert_eq!(l[2].xdp, None);
        assert!(!l[2].up);
        assert!(parse_ip_link("nonsense").is_err());
    }

    #[test]
    fn a_config_error_message_is_taken_apart() {
        let p = parse_config_message(
            "/etc/iked.toml:12: connections.gw-b.proposals: unknown algorithm \"aes512\"",
        )
        .unwrap();
        assert_eq!(p.file, "/etc/iked.toml");
        assert_eq!(p.line, 12);
        assert_eq!(p.field, "connections.gw-b.proposals");
        assert_eq!(p.message, "unknown algorithm \"aes512\"");
        let p = parse_config_message("/etc/iked.toml: cannot read: No such file").unwrap();
        assert_eq!((p.line, p.field.as_str()), (0, ""));
        assert_eq!(p.message, "cannot read: No such file");
    }

    #[test]
    fn a_config_typo_is_a_typed_problem() {
        let dir = std::env::temp_dir().join(format!("diag-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("iked.toml");
        std::fs::write(
            &f,
            "[connections.gw-b]\nlocal_addrs = [\"192.0.2.1\"]\nremote_addrs = [\"192.0.2.2\"]\nproposal = [\"aes128gcm16-prfsha256-x25519\"]\n",
        )
        .unwrap();
        let e = load_config(&f).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(e.file, f.display().to_string());
        assert!(e.line >= 1, "{e:?}");
        assert!(
            e.message.contains("proposal") || e.field.contains("proposal"),
            "{e:?}"
        );
    }
}
