//! Manually keyed SAs and policies from a TOML file: the equivalent of `ip xfrm state add`
//! and `ip xfrm policy add` (RFC 4301 §4.5, manual SA management), so the dataplane runs —
//! and can be tested — without the IKE daemon.
//!
//! ```toml
//! [[sa]]
//! name = "a-to-b"
//! direction = "out"              # "out" seals, "in" opens
//! spi = 0x00001001
//! proposal = "aes128gcm16"       # strongSwan-style ESP proposal
//! enc_key = "hex: key || salt"   # 20 bytes for aes128gcm16
//! mode = "tunnel"                # or "transport"
//! local = "192.0.2.1"            # tunnel endpoints
//! remote = "192.0.2.2"
//! local_ts = ["10.1.0.0/16"]
//! remote_ts = ["10.2.0.0/16"]
//! rekey_bytes = "500M"           # soft limit: the dataplane reports it (swanctl's name)
//! life_bytes = "1G"              # hard limit: the SA passes no more traffic
//! rekey_packets = 1000000        # the same in packets (plain numbers)
//! life_packets = 2000000
//!
//! [[policy]]
//! src = "10.1.0.0/16"
//! dst = "10.2.0.0/16"
//! action = "protect"             # or "bypass" / "discard"
//! sa = "a-to-b"
//! ```
//!
//! A bad file is refused with its path, line and the field at fault.
//!
//! Lifetimes (RFC 4301 §4.4.2.1) use swanctl's names: `rekey_bytes`/`life_bytes` and
//! `rekey_packets`/`life_packets` are the soft and hard limits of [`Lifetime`]; byte sizes
//! take swanctl's `k`, `M`, `G` suffixes (powers of 1024). Each is off (0) unless given:
//! nothing rekeys a manual SA, so nothing is derived — the soft limit only raises an event.
//! Time limits need a clock and are iked's; a static SA has none.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::crypto::{EspTransform, SaKeys};
use crate::esp::{DfPolicy, Lifetime, Mode, SaConfig, SelectorSet, TrafficSelector, UdpEncap};
/// Re-exported: a [`StaticSa`] names its direction.
pub use crate::sa::Direction;

/// A refused configuration: where, which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error concerns the whole file (e.g. it cannot be read).
    pub line: usize,
    /// Dotted path of the field, e.g. `sa[1].spi`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.field.is_empty()) {
            (0, _) => write!(f, "{}: {}", self.file.display(), self.message),
            (l, true) => write!(f, "{}:{l}: {}", self.file.display(), self.message),
            (l, false) => write!(
                f,
                "{}:{l}: {}: {}",
                self.file.display(),
                self.field,
                self.message
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// RFC 4301 §4.4.1: what the SPD does with matching traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyAction {
    /// Send through the named outbound SA.
    Protect { sa: String },
    /// Forward in clear (the kernel handles it).
    Bypass,
    /// Drop.
    Discard,
}

/// One SPD entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub src: TrafficSelector,
    pub dst: TrafficSelector,
    pub action: PolicyAction,
    /// Lower wins (as `ip xfrm policy ... priority`); file order breaks ties.
    pub priority: u32,
}

/// One SA from the file.
#[derive(Debug, Clone)]
pub struct StaticSa {
    pub name: String,
    pub direction: Direction,
    pub config: SaConfig,
}

/// The whole file, validated.
#[derive(Debug, Clone, Default)]
pub struct StaticConfig {
    pub sas: Vec<StaticSa>,
    pub policies: Vec<Policy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    sa: Vec<RawSa>,
    #[serde(default)]
    policy: Vec<RawPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSa {
    name: Spanned<String>,
    /// `"esp"` (the default and the only one): named so that `proto = "ah"` gets an answer
    /// rather than "unknown field".
    #[serde(default)]
    proto: Option<Spanned<String>>,
    /// The same, by its other usual name.
    #[serde(default)]
    protocol: Option<Spanned<String>>,
    direction: Spanned<String>,
    spi: Spanned<i64>,
    proposal: Spanned<String>,
    /// Optional only to answer its absence in plain words (after an AH refusal).
    #[serde(default)]
    enc_key: Option<Spanned<String>>,
    #[serde(default)]
    integ_key: Option<Spanned<String>>,
    mode: Spanned<String>,
    #[serde(default)]
    local: Option<Spanned<String>>,
    #[serde(default)]
    remote: Option<Spanned<String>>,
    #[serde(default)]
    esn: bool,
    #[serde(default)]
    replay_window: Option<Spanned<i64>>,
    #[serde(default)]
    nat_t: bool,
    #[serde(default)]
    nat_t_src_port: Option<Spanned<i64>>,
    #[serde(default)]
    nat_t_dst_port: Option<Spanned<i64>>,
    #[serde(default)]
    df: Option<Spanned<String>>,
    #[serde(default)]
    ttl: Option<Spanned<i64>>,
    #[serde(default)]
    copy_dscp_on_decap: bool,
    #[serde(default)]
    local_ts: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    remote_ts: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    rekey_bytes: Option<Spanned<toml::Value>>,
    #[serde(default)]
    life_bytes: Option<Spanned<toml::Value>>,
    #[serde(default)]
    rekey_packets: Option<Spanned<toml::Value>>,
    #[serde(default)]
    life_packets: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    src: Spanned<String>,
    dst: Spanned<String>,
    #[serde(default)]
    protocol: Option<Spanned<String>>,
    #[serde(default)]
    src_port: Option<Spanned<String>>,
    #[serde(default)]
    dst_port: Option<Spanned<String>>,
    action: Spanned<String>,
    #[serde(default)]
    sa: Option<Spanned<String>>,
    #[serde(default)]
    priority: Option<Spanned<i64>>,
}

/// Maps byte offsets to line numbers, for errors that name file, line and field. Shared
/// with the other TOML configurations (iked's).
pub struct Lines<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

/// Deserialize `text` (TOML) into `T`, with errors that name the file, line and field.
pub fn deserialize_toml<T: serde::de::DeserializeOwned>(
    lines: &Lines<'_>,
) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(lines.text).map_err(|e| {
        lines.err(
            e.span().unwrap_or(0..0),
            String::new(),
            e.message().to_string(),
        )
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        // `Spanned` wrappers show up in the path as a private field name: drop them.
        let path = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "")
            .replace("$__serde_spanned_private_value.", "");
        let inner = e.into_inner();
        lines.err(
            inner.span().unwrap_or(0..0),
            path,
            inner.message().to_string(),
        )
    })
}

impl Lines<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }
    pub fn err(
        &self,
        span: Range<usize>,
        field: String,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: self.line_of(span.start),
            field,
            message: message.into(),
        }
    }
}

impl StaticConfig {
    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<StaticConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            field: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        StaticConfig::parse(path, &text)
    }

    /// Validate `text`, naming `file` in errors.
    pub fn parse(file: &Path, text: &str) -> Result<StaticConfig, ConfigError> {
        let lines = Lines { file, text };
        let raw: RawFile = deserialize_toml(&lines)?;

        let mut cfg = StaticConfig::default();
        let mut names: HashMap<String, (Direction, usize)> = HashMap::new();
        let mut spis: HashMap<u32, usize> = HashMap::new();
        for (i, r) in raw.sa.iter().enumerate() {
            let sa = convert_sa(&lines, i, r)?;
            let f = |n: &str| format!("sa[{i}].{n}");
            if names.insert(sa.name.clone(), (sa.direction, i)).is_some() {
                return Err(lines.err(
                    r.name.span(),
                    f("name"),
                    format!("duplicate SA name {:?}", sa.name),
                ));
            }
            if sa.direction == Direction::Inbound {
                if let Some(j) = spis.insert(sa.config.spi, i) {
                    return Err(lines.err(
                        r.spi.span(),
                        f("spi"),
                        format!(
                            "inbound SPI {:#x} is already used by sa[{j}]",
                            sa.config.spi
                        ),
                    ));
                }
            }
            cfg.sas.push(sa);
        }
        for (i, r) in raw.policy.iter().enumerate() {
            let p = convert_policy(&lines, i, r)?;
            if let PolicyAction::Protect { sa } = &p.action {
                let span = r.sa.as_ref().map_or(r.action.span(), |s| s.span());
                match names.get(sa) {
                    Some((Direction::Outbound, _)) => {}
                    Some((Direction::Inbound, _)) => {
                        return Err(lines.err(
                            span,
                            format!("policy[{i}].sa"),
                            format!("SA {sa:?} is inbound; a protect policy needs an outbound SA"),
                        ))
                    }
                    None => {
                        return Err(lines.err(
                            span,
                            format!("policy[{i}].sa"),
                            format!("no SA named {sa:?}"),
                        ))
                    }
                }
            }
            cfg.policies.push(p);
        }
        Ok(cfg)
    }
}

fn hex_key(lines: &Lines, field: String, s: &Spanned<String>) -> Result<Vec<u8>, ConfigError> {
    let t: String = s
        .get_ref()
        .chars()
        .filter(|c| !matches!(c, ' ' | ':' | '_'))
        .collect();
    let t = t.strip_prefix("0x").unwrap_or(&t);
    if !t.len().is_multiple_of(2) || !t.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(lines.err(s.span(), field, "expected an even number of hex digits"));
    }
    Ok((0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&t[i..i + 2], 16).expect("checked hex"))
        .collect())
}

fn addr(lines: &Lines, field: String, s: &Spanned<String>) -> Result<IpAddr, ConfigError> {
    s.get_ref().parse().map_err(|_| {
        lines.err(
            s.span(),
            field,
            format!("{:?} is not an IP address", s.get_ref()),
        )
    })
}

fn int_in<T: TryFrom<i64>>(
    lines: &Lines,
    field: String,
    s: &Spanned<i64>,
    what: &str,
) -> Result<T, ConfigError> {
    T::try_from(*s.get_ref()).map_err(|_| {
        lines.err(
            s.span(),
            field,
            format!("{} is out of range for {what}", s.get_ref()),
        )
    })
}

fn selectors(
    lines: &Lines,
    field: String,
    s: &Option<Spanned<Vec<String>>>,
    v6: Option<bool>,
) -> Result<Vec<TrafficSelector>, ConfigError> {
    match s {
        None => Ok(match v6 {
            Some(true) => vec![TrafficSelector::any_v6()],
            Some(false) => vec![TrafficSelector::any_v4()],
            None => vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()],
        }),
        Some(list) => list
            .get_ref()
            .iter()
            .map(|p| {
                TrafficSelector::prefix(p)
                    .map_err(|e| lines.err(list.span(), field.clone(), format!("{p:?}: {e}")))
            })
            .collect(),
    }
}

/// A swanctl byte volume (`rekey_bytes`, ...): an integer, or a string with an optional
/// `k`, `m` or `g` suffix in either case, each a power of 1024 (strongSwan's vici
/// `parse_bytes`: "500M" is 500 × 2^20). iked's configuration parses the same way.
pub fn bytes_value(v: &toml::Value) -> Result<u64, String> {
    let bad = || {
        format!(
            "{v}: use a number of bytes (1000000) or a swanctl size (\"500k\", \"100M\", \"2G\")"
        )
    };
    match v {
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| bad()),
        toml::Value::String(s) => {
            let s = s.trim();
            let i = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let shift = match s[i..].trim() {
                "" => 0,
                "k" | "K" => 10,
                "m" | "M" => 20,
                "g" | "G" => 30,
                _ => return Err(bad()),
            };
            let n: u64 = s[..i].parse().map_err(|_| bad())?;
            n.checked_mul(1 << shift)
                .ok_or_else(|| format!("{v} is too large"))
        }
        _ => Err(bad()),
    }
}

/// A packet count (`rekey_packets`, ...): an integer or a string of digits (no suffix, as
/// strongSwan's vici parser).
pub fn packets_value(v: &toml::Value) -> Result<u64, String> {
    let bad = || format!("{v}: use a number of packets (1000000); swanctl takes no suffix here");
    match v {
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| bad()),
        toml::Value::String(s) => s.trim().parse().map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// The SA's byte and packet limits: soft (`rekey_*`) below hard (`life_*`) when both are set.
fn lifetime(lines: &Lines, i: usize, r: &RawSa) -> Result<Lifetime, ConfigError> {
    let f = |n: &str| format!("sa[{i}].{n}");
    type Parse = fn(&toml::Value) -> Result<u64, String>;
    let get = |v: &Option<Spanned<toml::Value>>, n: &str, parse: Parse| match v {
        None => Ok(0),
        Some(v) => parse(v.get_ref()).map_err(|e| lines.err(v.span(), f(n), e)),
    };
    let l = Lifetime {
        soft_bytes: get(&r.rekey_bytes, "rekey_bytes", bytes_value)?,
        hard_bytes: get(&r.life_bytes, "life_bytes", bytes_value)?,
        soft_packets: get(&r.rekey_packets, "rekey_packets", packets_value)?,
        hard_packets: get(&r.life_packets, "life_packets", packets_value)?,
    };
    for (soft, hard, rekey, life, v) in [
        (
            l.soft_bytes,
            l.hard_bytes,
            "rekey_bytes",
            "life_bytes",
            &r.life_bytes,
        ),
        (
            l.soft_packets,
            l.hard_packets,
            "rekey_packets",
            "life_packets",
            &r.life_packets,
        ),
    ] {
        if let Some(v) = v {
            if soft != 0 && hard != 0 && hard <= soft {
                return Err(lines.err(
                    v.span(),
                    f(life),
                    format!(
                        "{life} ({hard}) must be greater than {rekey} ({soft}): the soft limit \
                         warns before the hard one stops the SA"
                    ),
                ));
            }
        }
    }
    Ok(l)
}

/// Why an AH SA is refused, after "AH ".
const ESP_ONLY: &str = "is not supported: this product is ESP-only. RFC 4301 §3.2 made AH a \
     MAY, since ESP provides the needed services; RFC 8221 recommends ESP with an AEAD \
     (proposal = \"aes256gcm16\" or \"chacha20poly1305\"), which authenticates as well as \
     encrypts, and ESP-NULL rather than AH where only integrity is wanted (this dataplane \
     always encrypts). AH also cannot cross NAT: it authenticates the outer addresses.";

/// A proposal of integrity algorithms only (strongSwan's `ah_proposals` syntax, e.g.
/// `sha256`, `sha1-modp2048`): what an AH SA would use.
fn integrity_only(proposal: &str) -> bool {
    let toks: Vec<String> = proposal
        .split('-')
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let integ = |t: &str| {
        matches!(
            t,
            "sha256"
                | "sha2_256"
                | "sha384"
                | "sha2_384"
                | "sha512"
                | "sha2_512"
                | "sha1"
                | "sha"
                | "md5"
                | "aesxcbc"
                | "aescmac"
                | "hmac_md5"
                | "hmac_sha1"
        )
    };
    let dh = |t: &str| t.starts_with("modp") || t.starts_with("ecp") || t.starts_with("curve");
    toks.iter().any(|t| integ(t))
        && toks
            .iter()
            .all(|t| integ(t) || dh(t) || t == "esn" || t == "noesn")
}

fn convert_sa(lines: &Lines, i: usize, r: &RawSa) -> Result<StaticSa, ConfigError> {
    let f = |n: &str| format!("sa[{i}].{n}");
    let direction = match r.direction.get_ref().as_str() {
        "in" | "inbound" => Direction::Inbound,
        "out" | "outbound" => Direction::Outbound,
        other => {
            return Err(lines.err(
                r.direction.span(),
                f("direction"),
                format!("{other:?}: expected \"in\" or \"out\""),
            ))
        }
    };
    for (p, name) in [(&r.proto, "proto"), (&r.protocol, "protocol")] {
        let Some(p) = p else { continue };
        match p.get_ref().to_ascii_lowercase().as_str() {
            "esp" => {}
            "ah" => return Err(lines.err(p.span(), f(name), format!("AH {ESP_ONLY}"))),
            other => {
                return Err(lines.err(
                    p.span(),
                    f(name),
                    format!("{other:?}: expected \"esp\" (the only IPsec protocol supported)"),
                ))
            }
        }
    }
    let spi: u32 = int_in(lines, f("spi"), &r.spi, "a 32-bit SPI")?;
    let transform: EspTransform = r.proposal.get_ref().parse().map_err(|e| {
        let msg = if integrity_only(r.proposal.get_ref()) {
            format!(
                "{:?} is an integrity-only (AH) proposal: AH {ESP_ONLY}",
                r.proposal.get_ref()
            )
        } else {
            format!("{e}")
        };
        lines.err(r.proposal.span(), f("proposal"), msg)
    })?;
    let Some(enc_key) = &r.enc_key else {
        return Err(lines.err(
            r.proposal.span(),
            f("enc_key"),
            format!(
                "missing: proposal {:?} needs a {}-byte `enc_key`",
                r.proposal.get_ref(),
                transform.encryption.key_material_len()
            ),
        ));
    };
    let enc = hex_key(lines, f("enc_key"), enc_key)?;
    let integ_len = transform.integrity.key_len();
    let integ = match &r.integ_key {
        Some(k) => {
            let key = hex_key(lines, f("integ_key"), k)?;
            if integ_len == 0 && !key.is_empty() {
                return Err(lines.err(
                    k.span(),
                    f("integ_key"),
                    format!(
                        "{} is an AEAD: it carries its own ICV and takes no integrity key \
                         (remove `integ_key`)",
                        r.proposal.get_ref()
                    ),
                ));
            }
            if integ_len > 0 && key.is_empty() {
                return Err(lines.err(
                    k.span(),
                    f("integ_key"),
                    format!(
                        "missing: the key is empty; {:?} needs {integ_len} bytes",
                        r.proposal.get_ref()
                    ),
                ));
            }
            key
        }
        None if integ_len > 0 => {
            // Nothing to point at but what asks for the key: the proposal's line.
            return Err(lines.err(
                r.proposal.span(),
                f("integ_key"),
                format!(
                    "missing: proposal {:?} authenticates with {} and needs a \
                     {integ_len}-byte `integ_key`",
                    r.proposal.get_ref(),
                    transform.integrity.name()
                ),
            ));
        }
        None => Vec::new(),
    };
    let keys = SaKeys::new(&enc, &integ);
    let mode = match r.mode.get_ref().as_str() {
        "tunnel" => {
            let need = |o: &Option<Spanned<String>>, n: &str| {
                o.as_ref()
                    .ok_or_else(|| {
                        lines.err(r.mode.span(), f(n), format!("tunnel mode needs `{n}`"))
                    })
                    .and_then(|s| addr(lines, f(n), s))
            };
            let (local, remote) = (need(&r.local, "local")?, need(&r.remote, "remote")?);
            if local.is_ipv4() != remote.is_ipv4() {
                // The endpoint that disagrees with `local` is the one to point at.
                let span = r.remote.as_ref().map_or(r.mode.span(), |s| s.span());
                return Err(lines.err(
                    span,
                    f("remote"),
                    format!(
                        "tunnel endpoints mix IPv4 and IPv6: remote {remote} is not of the \
                         family of local {local} (the outer header has one family)"
                    ),
                ));
            }
            Mode::Tunnel { local, remote }
        }
        "transport" => Mode::Transport,
        other => {
            return Err(lines.err(
                r.mode.span(),
                f("mode"),
                format!("{other:?}: expected \"tunnel\" or \"transport\""),
            ))
        }
    };
    let mut config = match mode {
        Mode::Tunnel { local, remote } => SaConfig::tunnel(spi, transform, keys, local, remote),
        Mode::Transport => SaConfig::transport(spi, transform, keys),
    };
    config.esn = r.esn;
    if let Some(w) = &r.replay_window {
        config.replay_window = match *w.get_ref() {
            0 => None,
            _ => Some(int_in(lines, f("replay_window"), w, "a window")?),
        };
    }
    if r.nat_t {
        let mut e = UdpEncap::DEFAULT;
        if let Some(p) = &r.nat_t_src_port {
            e.src_port = int_in(lines, f("nat_t_src_port"), p, "a port")?;
        }
        if let Some(p) = &r.nat_t_dst_port {
            e.dst_port = int_in(lines, f("nat_t_dst_port"), p, "a port")?;
        }
        config.udp_encap = Some(e);
    }
    if let Some(df) = &r.df {
        config.df = match df.get_ref().as_str() {
            "copy" => DfPolicy::Copy,
            "set" => DfPolicy::Set,
            "clear" => DfPolicy::Clear,
            other => {
                return Err(lines.err(
                    df.span(),
                    f("df"),
                    format!("{other:?}: expected copy, set or clear"),
                ))
            }
        };
    }
    if let Some(t) = &r.ttl {
        config.outer_ttl = int_in(lines, f("ttl"), t, "a TTL")?;
    }
    config.copy_dscp_on_decap = r.copy_dscp_on_decap;
    config.lifetime = lifetime(lines, i, r)?;
    config.selectors = SelectorSet {
        local: selectors(lines, f("local_ts"), &r.local_ts, None)?,
        remote: selectors(lines, f("remote_ts"), &r.remote_ts, None)?,
    };
    // Build the SA once to run every check the engine makes (key lengths, SPI range, ...).
    crate::esp::OutboundSa::new(config.clone()).map_err(|e| {
        let span = match e {
            crate::esp::SaError::ReservedSpi(_) => r.spi.span(),
            crate::esp::SaError::ReplayWindow(_) => {
                r.replay_window.as_ref().map_or(r.spi.span(), |w| w.span())
            }
            crate::esp::SaError::MixedTunnelFamilies => {
                r.remote.as_ref().map_or(r.mode.span(), |s| s.span())
            }
            crate::esp::SaError::Algorithm(crate::crypto::AlgorithmError::KeyLength {
                what: "integrity key",
                ..
            }) => r.integ_key.as_ref().map_or(r.proposal.span(), |k| k.span()),
            _ => enc_key.span(),
        };
        lines.err(
            span,
            f(match e {
                crate::esp::SaError::ReservedSpi(_) => "spi",
                crate::esp::SaError::ReplayWindow(_) => "replay_window",
                crate::esp::SaError::MixedTunnelFamilies => "remote",
                crate::esp::SaError::Algorithm(crate::crypto::AlgorithmError::KeyLength {
                    what: "integrity key",
                    ..
                }) => "integ_key",
                _ => "enc_key",
            }),
            e.to_string(),
        )
    })?;
    Ok(StaticSa {
        name: r.name.get_ref().clone(),
        direction,
        config,
    })
}

fn port_range(
    lines: &Lines,
    field: String,
    s: &Option<Spanned<String>>,
) -> Result<(u16, u16), ConfigError> {
    let Some(s) = s else { return Ok((0, u16::MAX)) };
    let bad = || {
        lines.err(
            s.span(),
            field.clone(),
            format!("{:?}: expected PORT or LOW-HIGH", s.get_ref()),
        )
    };
    let (a, b) = match s.get_ref().split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.get_ref().trim(), s.get_ref().trim()),
    };
    let (a, b): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b {
        return Err(bad());
    }
    Ok((a, b))
}

fn convert_policy(lines: &Lines, i: usize, r: &RawPolicy) -> Result<Policy, ConfigError> {
    let f = |n: &str| format!("policy[{i}].{n}");
    let sel = |s: &Spanned<String>, n: &str| {
        TrafficSelector::prefix(s.get_ref()).map_err(|e| lines.err(s.span(), f(n), e.to_string()))
    };
    let mut src = sel(&r.src, "src")?;
    let mut dst = sel(&r.dst, "dst")?;
    if src.start.is_ipv4() != dst.start.is_ipv4() {
        return Err(lines.err(r.dst.span(), f("dst"), "src and dst mix IPv4 and IPv6"));
    }
    let protocol = match &r.protocol {
        None => 0,
        Some(p) => match p.get_ref().as_str() {
            "any" => 0,
            "tcp" => 6,
            "udp" => 17,
            "icmp" => 1,
            "ipv6-icmp" | "icmpv6" => 58,
            "sctp" => 132,
            n => n.parse().map_err(|_| {
                lines.err(
                    p.span(),
                    f("protocol"),
                    format!("{n:?}: expected any, tcp, udp, icmp, icmpv6, sctp or a number"),
                )
            })?,
        },
    };
    src = src.with_protocol(protocol, port_range(lines, f("src_port"), &r.src_port)?);
    dst = dst.with_protocol(protocol, port_range(lines, f("dst_port"), &r.dst_port)?);
    let action = match r.action.get_ref().as_str() {
        "protect" => PolicyAction::Protect {
            sa: r
                .sa
                .as_ref()
                .ok_or_else(|| lines.err(r.action.span(), f("sa"), "a protect policy needs `sa`"))?
                .get_ref()
                .clone(),
        },
        "bypass" => PolicyAction::Bypass,
        "discard" => PolicyAction::Discard,
        other => {
            return Err(lines.err(
                r.action.span(),
                f("action"),
                format!("{other:?}: expected protect, bypass or discard"),
            ))
        }
    };
    let priority = match &r.priority {
        Some(p) => int_in(lines, f("priority"), p, "a priority")?,
        None => 1000,
    };
    Ok(Policy {
        src,
        dst,
        action,
        priority,
    })
}

/// A static file as ring records: every SA (outbound SA number *i* gets reqid *i* + 1),
/// then every policy (policy number *i* gets id *i* + 1). The dataplane's `--sa-file` and
/// `vpnctl`'s ring client both install through these, so a static file takes the same
/// path as SAs negotiated by iked. Buffers holding keys are zeroized when dropped.
pub fn to_records(cfg: &StaticConfig) -> Result<Vec<StaticRecord>, String> {
    use crate::policy::spd::{PolicyRule, SpdAction};
    use crate::shm::records::{encode_add_policy, encode_add_sa, SaInstall, MAX_RECORD};
    // By name, for the policies (a map: a file of 100k SAs and policies must not cost
    // 100k × 100k comparisons).
    let mut reqids: HashMap<&str, u32> = HashMap::new();
    let mut next_reqid = 0u32;
    let mut out = Vec::with_capacity(cfg.sas.len() + cfg.policies.len());
    // One scratch buffer, zeroized when dropped; each record keeps only its own bytes.
    let mut scratch = zeroize::Zeroizing::new(vec![0u8; MAX_RECORD]);
    for sa in &cfg.sas {
        let reqid = match sa.direction {
            Direction::Outbound => {
                next_reqid += 1;
                // The first SA of a name is the one policies name (as before).
                reqids.entry(&sa.name).or_insert(next_reqid);
                next_reqid
            }
            Direction::Inbound => 0,
        };
        let inst = SaInstall {
            direction: sa.direction,
            reqid,
            update: false,
            resource: None,
            config: sa.config.clone(),
        };
        let n = encode_add_sa(&mut scratch, out.len() as u32 + 1, &inst)
            .map_err(|e| format!("SA {:?}: {e}", sa.name))?;
        let buf = zeroize::Zeroizing::new(scratch[..n].to_vec());
        out.push(StaticRecord {
            what: format!("SA {:?}", sa.name),
            sa: Some((sa.direction, sa.config.spi, sa.name.clone())),
            bytes: buf,
        });
    }
    for (i, p) in cfg.policies.iter().enumerate() {
        let action = match &p.action {
            PolicyAction::Protect { sa } => SpdAction::Protect {
                reqid: reqids
                    .get(sa.as_str())
                    .copied()
                    .ok_or_else(|| format!("policy {} names unknown outbound SA {sa:?}", i + 1))?,
            },
            PolicyAction::Bypass => SpdAction::Bypass,
            PolicyAction::Discard => SpdAction::Discard,
        };
        let rule = PolicyRule {
            id: i as u32 + 1,
            priority: p.priority,
            src: p.src,
            dst: p.dst,
            action,
        };
        let n = encode_add_policy(&mut scratch, out.len() as u32 + 1, &rule);
        let buf = zeroize::Zeroizing::new(scratch[..n].to_vec());
        out.push(StaticRecord {
            what: format!("policy {}", i + 1),
            sa: None,
            bytes: buf,
        });
    }
    Ok(out)
}

/// One encoded record of a static file.
pub struct StaticRecord {
    /// What it installs, for error messages.
    pub what: String,
    /// (direction, SPI, name) for SA records.
    pub sa: Option<(Direction, u32, String)>,
    pub bytes: zeroize::Zeroizing<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[sa]]
name = "a-to-b"
direction = "out"
spi = 0x1001
proposal = "aes128gcm16"
enc_key = "000102030405060708090a0b0c0d0e0f 10111213"
mode = "tunnel"
local = "192.0.2.1"
remote = "192.0.2.2"
local_ts = ["10.1.0.0/16"]
remote_ts = ["10.2.0.0/16"]
nat_t = true

[[sa]]
name = "b-to-a"
direction = "in"
spi = 0x2001
proposal = "aes256-sha256"
enc_key = "0x000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f"
integ_key = "000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f"
mode = "transport"
esn = true
replay_window = 4096
rekey_bytes = "500M"
life_bytes = 1073741824
rekey_packets = 1000000
life_packets = "2000000"

[[policy]]
src = "10.1.0.0/16"
dst = "10.2.0.0/16"
protocol = "tcp"
dst_port = "443"
action = "protect"
sa = "a-to-b"
"#;

    fn parse(s: &str) -> Result<StaticConfig, ConfigError> {
        StaticConfig::parse(Path::new("/etc/vpn/sa.toml"), s)
    }

    #[test]
    fn parses_a_good_file() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.sas.len(), 2);
        assert_eq!(c.sas[0].config.spi, 0x1001);
        assert_eq!(c.sas[0].config.udp_encap, Some(UdpEncap::DEFAULT));
        assert_eq!(c.sas[1].direction, Direction::Inbound);
        assert_eq!(c.sas[1].config.replay_window, Some(4096));
        assert!(c.sas[1].config.esn);
        assert_eq!(
            c.sas[1].config.lifetime,
            Lifetime {
                soft_bytes: 500 << 20,
                hard_bytes: 1 << 30,
                soft_packets: 1_000_000,
                hard_packets: 2_000_000,
            }
        );
        assert_eq!(
            c.sas[0].config.lifetime,
            Lifetime::default(),
            "no limits unless given"
        );
        assert_eq!(c.policies[0].dst.protocol, 6);
        assert_eq!(
            (c.policies[0].dst.start_port, c.policies[0].dst.end_port),
            (443, 443)
        );
        assert_eq!(
            c.policies[0].action,
            PolicyAction::Protect {
                sa: "a-to-b".into()
            }
        );
    }

    /// Replace `from` in the good file and return the error.
    fn err_after(from: &str, to: &str) -> ConfigError {
        assert!(GOOD.contains(from), "{from}");
        parse(&GOOD.replacen(from, to, 1)).unwrap_err()
    }

    fn line_of(needle: &str) -> usize {
        GOOD[..GOOD.find(needle).unwrap()].matches('\n').count() + 1
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = err_after("proposal = \"aes128gcm16\"", "proposal = \"3des-md5\"");
        assert_eq!(e.line, line_of("proposal = \"aes128gcm16\""));
        assert_eq!(e.field, "sa[0].proposal");
        assert!(e.to_string().starts_with("/etc/vpn/sa.toml:"), "{e}");
        assert!(e.message.contains("RFC 8221"), "{e}");

        let e = err_after("10111213\"", "101112\"");
        assert_eq!(e.field, "sa[0].enc_key");
        assert!(e.message.contains("20 bytes"), "{e}");

        let e = err_after("spi = 0x2001", "spi = 0x1_0000_0000");
        assert_eq!(
            (e.field.as_str(), e.line),
            ("sa[1].spi", line_of("spi = 0x2001"))
        );

        let e = err_after("spi = 0x2001", "spi = 7");
        assert!(e.message.contains("reserved"), "{e}");

        let e = err_after("remote = \"192.0.2.2\"", "remote = \"192.0.2.300\"");
        assert_eq!(e.field, "sa[0].remote");

        let e = err_after("sa = \"a-to-b\"", "sa = \"b-to-a\"");
        assert!(e.message.contains("inbound"), "{e}");
        let e = err_after("sa = \"a-to-b\"", "sa = \"nope\"");
        assert_eq!(e.field, "policy[0].sa");

        let e = err_after("replay_window = 4096", "replay_window = 32");
        assert_eq!(e.field, "sa[1].replay_window");

        let e = err_after("dst_port = \"443\"", "dst_port = \"9-1\"");
        assert_eq!(e.field, "policy[0].dst_port");
    }

    #[test]
    fn lifetime_errors_name_the_field() {
        for (from, to, field, what) in [
            (
                "life_bytes = 1073741824",
                "life_bytes = \"100M\"",
                "sa[1].life_bytes",
                "life_bytes (104857600) must be greater than rekey_bytes (524288000)",
            ),
            (
                "life_packets = \"2000000\"",
                "life_packets = 1000000",
                "sa[1].life_packets",
                "life_packets (1000000) must be greater than rekey_packets (1000000)",
            ),
            (
                "rekey_bytes = \"500M\"",
                "rekey_bytes = \"500MB\"",
                "sa[1].rekey_bytes",
                "swanctl size",
            ),
            (
                "rekey_bytes = \"500M\"",
                "rekey_bytes = -5",
                "sa[1].rekey_bytes",
                "number of bytes",
            ),
            (
                "rekey_packets = 1000000",
                "rekey_packets = \"1M\"",
                "sa[1].rekey_packets",
                "no suffix",
            ),
            (
                "life_packets = \"2000000\"",
                "life_packets = 2.5",
                "sa[1].life_packets",
                "number of packets",
            ),
            (
                "rekey_bytes = \"500M\"",
                "rekey_bytes = \"99999999999G\"",
                "sa[1].rekey_bytes",
                "too large",
            ),
            (
                "rekey_bytes = \"500M\"",
                "rekey_time = \"1h\"",
                "sa[1]",
                "unknown field `rekey_time`",
            ),
        ] {
            let e = err_after(from, to);
            assert_eq!(e.line, line_of(from), "{to}: {e}");
            assert!(e.field.starts_with(field), "{to}: {e}");
            assert!(e.message.contains(what), "{to}: {e}");
        }
        // Only one of a pair given: no ordering to check.
        let c = parse(&GOOD.replace("life_bytes = 1073741824\n", "")).unwrap();
        assert_eq!(
            (
                c.sas[1].config.lifetime.soft_bytes,
                c.sas[1].config.lifetime.hard_bytes
            ),
            (500 << 20, 0)
        );
    }

    /// The limits go through the ring records into the installed SA.
    #[test]
    fn lifetimes_reach_the_installed_sa() {
        let c = parse(GOOD).unwrap();
        let db = std::sync::Arc::new(crate::sa::sadb::SaDb::with_capacity(64, 16));
        let mut inst = crate::control::install::Installer::new(std::sync::Arc::clone(&db));
        crate::control::install::install_static(
            &mut inst,
            &c,
            &mut crate::control::install::NoSteering,
        )
        .unwrap();
        let sa = db.inbound.get(0x2001).unwrap();
        assert_eq!(sa.config().lifetime.hard_packets, 2_000_000);
        assert_eq!(sa.config().lifetime.soft_bytes, 500 << 20);
    }

    #[test]
    fn structural_errors_have_a_path_and_line() {
        let e = err_after("esn = true", "esn = \"yes\"");
        assert_eq!(e.field, "sa[1].esn");
        assert_eq!(e.line, line_of("esn = true"));
        let e = err_after("esn = true", "esm = true");
        assert!(e.message.contains("esm"), "{e}");
        let e = parse("[[sa]\nname=").unwrap_err();
        assert_eq!(e.line, 1);
        let e = StaticConfig::load(Path::new("/nonexistent/sa.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/sa.toml"), "{e}");
    }

    #[test]
    fn an_ah_sa_is_refused_as_esp_only_with_the_reason() {
        // Named as a protocol, by either name, at its own line.
        for key in ["proto", "protocol"] {
            let e = err_after(
                "mode = \"transport\"",
                &format!("{key} = \"ah\"\nmode = \"transport\""),
            );
            assert_eq!(
                (e.field.clone(), e.line),
                (format!("sa[1].{key}"), line_of("mode = \"transport\"")),
                "{e}"
            );
            assert!(
                e.message.contains("ESP-only") && e.message.contains("RFC 8221"),
                "{e}"
            );
            assert!(!e.message.contains("unknown field"), "{e}");
        }
        // An AH SA usually has no encryption key: the refusal comes first all the same.
        let e = parse(&GOOD.replacen(
            "enc_key = \"0x000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f\"\n",
            "proto = \"ah\"\n",
            1,
        ))
        .unwrap_err();
        assert_eq!(e.field, "sa[1].proto", "{e}");
        // Or as an integrity-only proposal (strongSwan's ah_proposals syntax).
        let e = err_after(
            "proposal = \"aes256-sha256\"",
            "proposal = \"sha256-modp2048\"",
        );
        assert_eq!(
            (e.field.as_str(), e.line),
            ("sa[1].proposal", line_of("proposal = \"aes256-sha256\""))
        );
        assert!(
            e.message.contains("integrity-only (AH)") && e.message.contains("ESP-NULL"),
            "{e}"
        );
        // "esp" is the default, and accepted when said.
        assert!(parse(&GOOD.replacen(
            "mode = \"transport\"",
            "proto = \"esp\"\nmode = \"transport\"",
            1
        ))
        .is_ok());
        let e = err_after(
            "mode = \"transport\"",
            "proto = \"gre\"\nmode = \"transport\"",
        );
        assert!(e.message.contains("expected \"esp\""), "{e}");
    }

    #[test]
    fn a_mixed_family_tunnel_points_at_the_remote_line() {
        let e = err_after("remote = \"192.0.2.2\"", "remote = \"2001:db8::2\"");
        assert_eq!(
            (e.field.as_str(), e.line),
            ("sa[0].remote", line_of("remote = \"192.0.2.2\""))
        );
        assert!(
            e.message.contains("mix IPv4 and IPv6") && e.message.contains("2001:db8::2"),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("/etc/vpn/sa.toml:{}: sa[0].remote:", e.line)),
            "{e}"
        );
    }

    #[test]
    fn a_missing_integ_key_says_missing_with_its_field() {
        // Absent: at the line of the proposal that needs it.
        let integ =
            "integ_key = \"000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f\"";
        let e = err_after(&format!("{integ}\n"), "");
        assert_eq!(
            (e.field.as_str(), e.line),
            ("sa[1].integ_key", line_of("proposal = \"aes256-sha256\""))
        );
        assert!(
            e.message.starts_with("missing") && e.message.contains("32-byte `integ_key`"),
            "{e}"
        );
        // Empty: at its own line.
        let e = err_after(integ, "integ_key = \"\"");
        assert_eq!(
            (e.field.as_str(), e.line),
            ("sa[1].integ_key", line_of(integ))
        );
        assert!(e.message.starts_with("missing"), "{e}");
        // Too short: at its own line too (not the enc_key's).
        let e = err_after(integ, "integ_key = \"0001\"");
        assert_eq!(
            (e.field.as_str(), e.line),
            ("sa[1].integ_key", line_of(integ))
        );
        // Given to an AEAD: refused at its line.
        let e = err_after("nat_t = true", &format!("nat_t = true\n{integ}"));
        assert_eq!(e.field, "sa[0].integ_key");
        assert!(e.message.contains("AEAD"), "{e}");
        // A missing enc_key says so too.
        let e = err_after(
            "enc_key = \"000102030405060708090a0b0c0d0e0f 10111213\"\n",
            "",
        );
        assert_eq!(e.field, "sa[0].enc_key");
        assert!(
            e.message.starts_with("missing") && e.message.contains("20-byte"),
            "{e}"
        );
    }
}
