//! iked's configuration: TOML shaped like swanctl.conf. A bad file is refused with its path,
//! line and field; the daemon keeps its old configuration when a reload is bad.
//!
//! ```toml
//! [connections.gw-b]
//! local_addrs = ["192.0.2.1"]
//! remote_addrs = ["192.0.2.2"]
//! proposals = ["aes128gcm16-prfsha256-x25519"]   # strongSwan proposal strings
//! encap = false                                  # force UDP encapsulation (NAT-T)
//!
//! [connections.gw-b.local]
//! id = "gw-a.example"
//! auth = "psk"
//!
//! [connections.gw-b.remote]
//! id = "gw-b.example"
//! auth = "psk"
//!
//! [connections.gw-b.children.net]
//! local_ts = ["10.1.0.0/16"]
//! remote_ts = ["10.2.0.0/16"]
//! esp_proposals = ["aes128gcm16"]
//! mode = "tunnel"                                # or "transport"
//! start_action = "start"                         # "none", "start" or "trap"
//!
//! [secrets.ike-gw-b]
//! id = ["gw-b.example"]
//! secret = "a long shared secret"
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use dataplane::control::static_sa::{deserialize_toml, ConfigError, Lines};
use serde::Deserialize;
use toml::Spanned;
use zeroize::Zeroizing;

use crate::ike::child::{parse_ts, EspProposal};
use crate::ike::proposal::IkeProposal;
use crate::ike::sa::{Connection, IKE_PORT};

/// What to do with a connection when the daemon starts (swanctl's `start_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAction {
    None,
    /// Initiate at start.
    Start,
    /// Install the policy; initiate when the dataplane reports matching traffic (acquire).
    Trap,
}

/// One configured connection with its first child.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub connection: Connection,
    pub child: String,
    pub start_action: StartAction,
}

/// The whole file.
#[derive(Debug, Clone, Default)]
pub struct IkedConfig {
    pub connections: Vec<ConnConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    connections: BTreeMap<String, RawConn>,
    #[serde(default)]
    secrets: BTreeMap<String, RawSecret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConn {
    local_addrs: Spanned<Vec<String>>,
    remote_addrs: Spanned<Vec<String>>,
    proposals: Spanned<Vec<String>>,
    #[serde(default)]
    encap: bool,
    #[serde(default)]
    retransmit_ms: Option<u64>,
    #[serde(default)]
    retransmit_tries: Option<u32>,
    local: RawEnd,
    remote: RawEnd,
    children: Spanned<BTreeMap<String, RawChild>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnd {
    id: Spanned<String>,
    #[serde(default)]
    auth: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChild {
    local_ts: Spanned<Vec<String>>,
    remote_ts: Spanned<Vec<String>>,
    esp_proposals: Spanned<Vec<String>>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    start_action: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    id: Spanned<IdList>,
    secret: Spanned<String>,
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

fn addr(lines: &Lines<'_>, v: &Spanned<Vec<String>>, field: String) -> Result<IpAddr, ConfigError> {
    let s = v
        .get_ref()
        .first()
        .ok_or_else(|| lines.err(v.span(), field.clone(), "needs an address"))?;
    s.parse()
        .map_err(|_| lines.err(v.span(), field, format!("{s:?} is not an IP address")))
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
        let lines = Lines { file, text };
        let raw: RawFile = deserialize_toml(&lines)?;
        let mut out = IkedConfig::default();
        for (name, c) in &raw.connections {
            let f = |x: &str| format!("connections.{name}.{x}");
            let local = addr(&lines, &c.local_addrs, f("local_addrs"))?;
            let remote = addr(&lines, &c.remote_addrs, f("remote_addrs"))?;
            if local.is_ipv4() != remote.is_ipv4() {
                return Err(lines.err(
                    c.remote_addrs.span(),
                    f("remote_addrs"),
                    "mixes IPv4 and IPv6 with local_addrs",
                ));
            }
            let mut ike = Vec::new();
            for p in c.proposals.get_ref() {
                ike.push(
                    p.parse::<IkeProposal>().map_err(|e| {
                        lines.err(c.proposals.span(), f("proposals"), e.to_string())
                    })?,
                );
            }
            if ike.is_empty() {
                return Err(lines.err(
                    c.proposals.span(),
                    f("proposals"),
                    "needs at least one proposal",
                ));
            }
            for (end, e) in [("local", &c.local), ("remote", &c.remote)] {
                if let Some(a) = &e.auth {
                    if a.get_ref() != "psk" {
                        return Err(lines.err(
                            a.span(),
                            f(&format!("{end}.auth")),
                            format!("{:?}: only \"psk\" is supported", a.get_ref()),
                        ));
                    }
                }
            }
            let (local_id, remote_id) =
                (c.local.id.get_ref().clone(), c.remote.id.get_ref().clone());
            // strongSwan matches a shared key by the identities it is for.
            let secret = raw
                .secrets
                .values()
                .find(|s| s.id.get_ref().contains(&remote_id))
                .or_else(|| {
                    raw.secrets
                        .values()
                        .find(|s| s.id.get_ref().contains(&local_id))
                })
                .ok_or_else(|| {
                    lines.err(
                        c.remote.id.span(),
                        f("remote.id"),
                        format!("no [secrets] entry has id {remote_id:?}"),
                    )
                })?;
            if secret.secret.get_ref().len() < 16 {
                return Err(lines.err(secret.secret.span(), "secrets.secret".into(), "a pre-shared key must have at least 16 characters (RFC 7296 §2.15: weak PSKs are open to dictionary attacks)"));
            }
            let (child_name, ch) = c
                .children
                .get_ref()
                .iter()
                .next()
                .ok_or_else(|| lines.err(c.children.span(), f("children"), "needs a child"))?;
            let g = |x: &str| format!("connections.{name}.children.{child_name}.{x}");
            let ts = |v: &Spanned<Vec<String>>, field: String| -> Result<Vec<_>, ConfigError> {
                let mut out = Vec::new();
                for s in v.get_ref() {
                    out.push(parse_ts(s).ok_or_else(|| {
                        lines.err(
                            v.span(),
                            field.clone(),
                            format!("{s:?} is not a prefix or address"),
                        )
                    })?);
                }
                if out.is_empty() {
                    return Err(lines.err(v.span(), field, "needs at least one traffic selector"));
                }
                Ok(out)
            };
            let local_ts = ts(&ch.local_ts, g("local_ts"))?;
            let remote_ts = ts(&ch.remote_ts, g("remote_ts"))?;
            let mut esp = Vec::new();
            for p in ch.esp_proposals.get_ref() {
                esp.push(p.parse::<EspProposal>().map_err(|e| {
                    lines.err(ch.esp_proposals.span(), g("esp_proposals"), e.to_string())
                })?);
            }
            let transport = match ch.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
                None | Some(("tunnel", _)) => false,
                Some(("transport", _)) => true,
                Some((other, span)) => {
                    return Err(lines.err(
                        span,
                        g("mode"),
                        format!("{other:?}: use \"tunnel\" or \"transport\""),
                    ))
                }
            };
            let start_action = match ch
                .start_action
                .as_ref()
                .map(|m| (m.get_ref().as_str(), m.span()))
            {
                None | Some(("none", _)) => StartAction::None,
                Some(("start", _)) => StartAction::Start,
                Some(("trap", _)) => StartAction::Trap,
                Some((other, span)) => {
                    return Err(lines.err(
                        span,
                        g("start_action"),
                        format!("{other:?}: use \"none\", \"start\" or \"trap\""),
                    ))
                }
            };
            out.connections.push(ConnConfig {
                connection: Connection {
                    name: name.clone(),
                    local: SocketAddr::new(local, IKE_PORT),
                    remote: SocketAddr::new(remote, IKE_PORT),
                    local_id,
                    remote_id,
                    psk: Zeroizing::new(secret.secret.get_ref().as_bytes().to_vec()),
                    ike,
                    esp,
                    local_ts,
                    remote_ts,
                    transport,
                    force_encap: c.encap,
                    retransmit_ms: c.retransmit_ms.unwrap_or(1000),
                    retransmit_tries: c.retransmit_tries.unwrap_or(5),
                },
                child: child_name.clone(),
                start_action,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[connections.gw-b]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
proposals = ["aes128gcm16-prfsha256-x25519", "aes256-sha256-modp2048"]

[connections.gw-b.local]
id = "gw-a.example"
auth = "psk"

[connections.gw-b.remote]
id = "gw-b.example"

[connections.gw-b.children.net]
local_ts = ["10.1.0.0/16"]
remote_ts = ["10.2.0.0/16"]
esp_proposals = ["aes128gcm16", "aes256-sha256"]
start_action = "trap"

[secrets.ike]
id = ["gw-a.example", "gw-b.example"]
secret = "correct horse battery staple"
"#;

    #[test]
    fn a_swanctl_like_file_parses() {
        let c = IkedConfig::parse(Path::new("iked.toml"), GOOD).unwrap();
        let cc = &c.connections[0];
        assert_eq!(cc.connection.name, "gw-b");
        assert_eq!(cc.connection.ike.len(), 2);
        assert_eq!(cc.connection.esp.len(), 2);
        assert_eq!(cc.start_action, StartAction::Trap);
        assert_eq!(cc.child, "net");
        assert_eq!(&cc.connection.psk[..], b"correct horse battery staple");
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
                "start_action",
                "\"none\"",
            ),
            (
                "\"192.0.2.2\"",
                "\"gw-b\"",
                "remote_addrs",
                "not an IP address",
            ),
            (
                "correct horse battery staple",
                "short",
                "secret",
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
                "only \"psk\"",
            ),
            (
                "esp_proposals",
                "esp_proposal",
                "children.net",
                "unknown field",
            ),
        ] {
            let text = GOOD.replacen(from, to, 1);
            // The error points at the line we broke (for a missing secret: the peer's ID).
            let marker = if field == "remote.id" {
                "id = \"gw-b.example\""
            } else {
                to
            };
            let line = text.lines().position(|l| l.contains(marker)).unwrap() + 1;
            let e = IkedConfig::parse(Path::new("iked.toml"), &text).unwrap_err();
            let s = e.to_string();
            assert!(
                s.starts_with(&format!("iked.toml:{line}:")),
                "line {line}: {s}"
            );
            assert!(s.contains(field) && s.contains(what), "{s}");
        }
    }
}
