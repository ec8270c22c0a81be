//! iked's log output: one line per event on stderr, as text or as JSON objects (one a line),
//! at the level `--log-level` names unless `RUST_LOG` says otherwise.
//!
//! Events carry the connection, the peer and the IKE SPI as fields (`conn`, `peer`,
//! `ike_spi`; see `Daemon::event`), and IKE message summaries `kind = "trace"` at debug. Lines
//! come from the target `iked` (the daemon's events) and `control::…` (the ring and control
//! socket plumbing): a directive for either, or a bare level, selects them.

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00Z  INFO iked: message conn=gw-b peer=192.0.2.2:500 ...`
    Text,
    /// `{"timestamp":…,"level":"INFO","message":…,"conn":…,"peer":…,"ike_spi":…}`
    Json,
}

/// The levels `--log-level` takes.
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// The filter: `RUST_LOG` when it is set (and parses), else `level` for everything. The
/// directive `iked=LEVEL` also covers the library's plumbing (`control=LEVEL`), so
/// `RUST_LOG=iked=trace` shows everything iked logs, not only the binary's own lines (what
/// "iked prints nothing below INFO even at trace" of issue 14 was). Returns the filter and,
/// if `RUST_LOG` was refused, why (to print once the subscriber is up).
pub fn filter(level: &str, rust_log: Option<&str>) -> Result<(EnvFilter, Option<String>), String> {
    let level = level.to_ascii_lowercase();
    if !LEVELS.contains(&level.as_str()) {
        return Err(format!(
            "--log-level {level:?}: expected one of {}",
            LEVELS.join(", ")
        ));
    }
    let fallback = || EnvFilter::from_str(&level).map_err(|e| e.to_string());
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok((fallback()?, None)),
        Some(spec) => {
            let widened = widen(spec);
            match EnvFilter::from_str(&widened) {
                Ok(f) => Ok((f, None)),
                Err(e) => Ok((
                    fallback()?,
                    Some(format!(
                        "RUST_LOG={spec:?} does not parse ({e}); logging at --log-level {level}"
                    )),
                )),
            }
        }
    }
}

/// `iked=LEVEL` directives get a `control=LEVEL` twin (unless one is given).
fn widen(spec: &str) -> String {
    let mut out: Vec<String> = spec.split(',').map(|d| d.trim().to_string()).collect();
    let has_control = out.iter().any(|d| d.starts_with("control"));
    if !has_control {
        let twins: Vec<String> = out
            .iter()
            .filter_map(|d| d.strip_prefix("iked="))
            .map(|lvl| format!("control={lvl}"))
            .collect();
        out.extend(twins);
    }
    out.join(",")
}

/// Install the global subscriber: stderr, `format`, the filter of [`filter`] with `RUST_LOG`
/// from the environment.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let env = std::env::var("RUST_LOG").ok();
    let (filter, warning) = filter(level, env.as_deref())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            // Colour only on a terminal: logs go to files and journals as plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // One JSON object per line, the event's fields at the top level beside "message".
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    }
    .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_by_option_rust_log_overrides_iked_covers_the_library() {
        let (f, w) = filter("info", None).unwrap();
        assert_eq!(f.to_string(), "info");
        assert!(w.is_none());
        let (f, _) = filter("DEBUG", None).unwrap();
        assert_eq!(f.to_string(), "debug");
        let (f, w) = filter("info", Some("trace")).unwrap();
        assert_eq!(f.to_string(), "trace", "RUST_LOG overrides --log-level");
        assert!(w.is_none());
        let (f, _) = filter("info", Some("iked=debug")).unwrap();
        let s = f.to_string();
        assert!(
            s.contains("iked=debug") && s.contains("control=debug"),
            "{s}"
        );
        let (f, _) = filter("info", Some("warn,control::ring_pump=trace")).unwrap();
        assert!(!f.to_string().contains("control=warn"), "{f}");
        let (f, w) = filter("warn", Some("iked=[")).unwrap();
        assert_eq!(
            f.to_string(),
            "warn",
            "a bad RUST_LOG falls back to --log-level"
        );
        assert!(w.unwrap().contains("does not parse"));
        let e = filter("loud", None).unwrap_err();
        assert!(e.contains("error, warn, info, debug, trace"), "{e}");
    }
}
