//! `vpnctl diagnose [CONN]`: gather iked's state, the dataplane's counters (twice, for
//! rates) and the system's ([`crate::diagnose::probe`]), run [`crate::diagnose::analyze`],
//! print the findings. Whatever cannot be looked at (iked down, no counters, no `nft`) is
//! listed as unchecked; only the findings decide the exit code.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::cli::Cli;
use super::{request, CmdError, Exit};
use crate::api::{
    DataplaneStatus, DiagnoseReport, EventsReport, Finding, IkedStatus, ListReport, Request,
    StatsReport,
};
use crate::diagnose::{analyze, probe, DiagnoseInput};

/// Counters older than this, and unchanged across the window, belong to a stopped dataplane.
const STALE_COUNTERS_S: f64 = 10.0;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One request whose reply's data is a `T`.
fn ask<T: serde::de::DeserializeOwned>(socket: &Path, req: &Request) -> Result<T, String> {
    let r = request(socket, req).map_err(|e| e.message)?;
    if !r.ok {
        return Err(format!("iked refused: {}", r.text.trim()));
    }
    serde_json::from_value(r.data).map_err(|e| format!("unexpected answer from iked: {e}"))
}

pub fn run(
    cli: &Cli,
    conn: Option<&str>,
    config: Option<&Path>,
    window_s: f64,
) -> Result<Exit, CmdError> {
    if !(window_s.is_finite() && (0.0..=300.0).contains(&window_s)) {
        return Err(CmdError {
            exit: Exit::Usage,
            message: format!("--window-s {window_s}: give 0 to 300 seconds"),
        });
    }
    let input = gather(cli, conn, config, window_s);
    let findings = analyze(&input);
    let report = DiagnoseReport {
        now_unix_ms: input.now_unix_ms,
        findings,
        unchecked: input.unchecked.clone(),
    };
    if cli.json {
        super::print_json("diagnose", &report);
    } else {
        print!("{}", text(&report));
    }
    Ok(exit_of(&report.findings))
}

/// 4 with an error finding, 5 with warnings only, 0 with none.
pub fn exit_of(findings: &[Finding]) -> Exit {
    if findings.iter().any(|f| f.severity == "error") {
        Exit::FoundErrors
    } else if findings.iter().any(|f| f.severity == "warning") {
        Exit::FoundWarnings
    } else {
        Exit::Ok
    }
}

fn gather(cli: &Cli, conn: Option<&str>, config: Option<&Path>, window_s: f64) -> DiagnoseInput {
    let mut input = DiagnoseInput {
        now_unix_ms: now_ms(),
        conn: conn.map(str::to_string),
        socket: cli.socket.display().to_string(),
        window_s,
        ..DiagnoseInput::default()
    };
    // iked: status, list, events. Down: the configuration and the system alone.
    match ask::<IkedStatus>(&cli.socket, &Request::Status) {
        Ok(s) => input.iked = Some(s),
        Err(e) => input.iked_error = Some(e),
    }
    if input.iked.is_some() {
        match ask::<ListReport>(&cli.socket, &Request::List { conn: None }) {
            Ok(l) => input.list = Some(l),
            Err(e) => input
                .unchecked
                .push(format!("connections (iked list): {e}")),
        }
        match ask::<EventsReport>(
            &cli.socket,
            &Request::Events {
                since: 0,
                max: Some(1000),
            },
        ) {
            Ok(ev) => input.events = ev.events,
            Err(e) => input.unchecked.push(format!("events (iked events): {e}")),
        }
    } else {
        input
            .unchecked
            .push("iked's state (connections, failures, events): iked does not answer".into());
    }
    // The configuration: the one given, else the one iked runs.
    let config: Option<PathBuf> = config.map(Path::to_path_buf).or_else(|| {
        input
            .iked
            .as_ref()
            .map(|s| s.config.clone())
            .filter(|c| !c.is_empty())
            .map(PathBuf::from)
    });
    let mut config_ok = false;
    match &config {
        Some(path) => match probe::load_config(path) {
            Ok((summary, _)) => {
                config_ok = true;
                input.config = Some(Ok(summary));
            }
            Err(p) => input.config = Some(Err(p)),
        },
        None => input
            .unchecked
            .push("configuration file: iked does not say which, and no --config given".into()),
    }
    // The dataplane's counters, twice.
    let ring = cli.ring.clone().or_else(|| {
        input
            .iked
            .as_ref()
            .map(|s| s.ring.clone())
            .filter(|r| !r.is_empty())
    });
    match &ring {
        Some(r) => dataplane(&mut input, r, window_s),
        None => input
            .unchecked
            .push("dataplane counters: no --ring given and iked does not say which".into()),
    }
    input.ring = ring;
    // The system.
    let peers = peers(&input);
    let system = probe::gather(
        &peers,
        config.as_deref().filter(|_| config_ok),
        (input.now_unix_ms / 1000) as i64,
    );
    input.unchecked.extend(system.unchecked.iter().cloned());
    input.system = Some(system);
    input
}

/// Two looks at the dataplane's counters `window_s` apart.
fn dataplane(input: &mut DiagnoseInput, ring: &str, window_s: f64) {
    let before = match super::stats::snapshot(ring) {
        Ok(s) => s,
        Err(e) => {
            input.dataplane_error = Some(e.message);
            return;
        }
    };
    // The measurement window itself (rates), not a wait for readiness.
    std::thread::sleep(Duration::from_secs_f64(window_s));
    let after = match super::stats::snapshot(ring) {
        Ok(s) => s,
        Err(e) => {
            input.dataplane_error = Some(e.message);
            return;
        }
    };
    let age_s = (input.now_unix_ms as f64 / 1000.0 + window_s) - after.updated_unix_ns as f64 / 1e9;
    let running = after.updated_unix_ns != before.updated_unix_ns || age_s < STALE_COUNTERS_S;
    input.dataplane = Some(status_of(ring, &after, running, age_s.max(0.0)));
    input.stats_before = Some(before);
    input.stats_after = Some(after);
}

fn status_of(ring: &str, s: &StatsReport, running: bool, age_s: f64) -> DataplaneStatus {
    DataplaneStatus {
        running,
        ring: ring.to_string(),
        counters_age_s: Some(age_s),
        sas: s.sas.len() as u64,
        ..DataplaneStatus::default()
    }
}

/// The peers' addresses: iked's connections' and the configuration's.
fn peers(input: &DiagnoseInput) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut add = |s: &str| {
        let a = s
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip())
            .or_else(|_| s.parse::<IpAddr>());
        if let Ok(a) = a {
            if !a.is_unspecified() && !out.contains(&a) {
                out.push(a);
            }
        }
    };
    if let Some(l) = &input.list {
        for c in &l.connections {
            c.remote_addrs.iter().for_each(|a| add(a));
        }
    }
    if let Some(Ok(c)) = &input.config {
        for c in &c.conns {
            c.remote_addrs.iter().for_each(|a| add(a));
        }
    }
    out
}

/// The report for people: one block per finding.
pub fn text(r: &DiagnoseReport) -> String {
    let mut s = String::new();
    if r.findings.is_empty() {
        s.push_str("No problem found.\n");
    }
    for f in &r.findings {
        let _ = writeln!(
            s,
            "{} {}{}",
            f.severity.to_uppercase(),
            f.id,
            f.conn
                .as_ref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        );
        let _ = writeln!(s, "  {}", f.summary);
        if !f.evidence.is_empty() {
            s.push_str("  evidence:\n");
            for (k, v) in &f.evidence {
                let v = match v {
                    serde_json::Value::String(x) => x.clone(),
                    v => v.to_string(),
                };
                let _ = writeln!(s, "    {k}: {v}");
            }
        }
        let _ = writeln!(s, "  remedy: {}", f.remedy);
        let _ = writeln!(s, "  see {}", f.doc);
        s.push('\n');
    }
    if !r.unchecked.is_empty() {
        s.push_str("Not checked:\n");
        for u in &r.unchecked {
            let _ = writeln!(s, "  - {u}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn finding(sev: &str) -> Finding {
        Finding {
            id: "esp-blocked".into(),
            severity: sev.into(),
            conn: Some("gw-b".into()),
            summary: "gw-b: 12,431 packets encrypted".into(),
            evidence: BTreeMap::from([
                ("window_s".to_string(), serde_json::Value::from(60)),
                ("peer".to_string(), serde_json::Value::from("192.0.2.2")),
            ]),
            remedy: "Check UDP 4500.".into(),
            doc: "docs/DIAGNOSE.md#esp-blocked".into(),
        }
    }

    #[test]
    fn exit_codes_follow_the_worst_finding() {
        assert_eq!(exit_of(&[]), Exit::Ok);
        assert_eq!(exit_of(&[finding("info")]), Exit::Ok);
        assert_eq!(exit_of(&[finding("warning")]), Exit::FoundWarnings);
        assert_eq!(
            exit_of(&[finding("warning"), finding("error")]),
            Exit::FoundErrors
        );
    }

    #[test]
    fn the_text_has_one_block_per_finding() {
        let r = DiagnoseReport {
            now_unix_ms: 0,
            findings: vec![finding("error")],
            unchecked: vec!["firewall rules: nft: No such file or directory".into()],
        };
        let t = text(&r);
        assert!(
            t.starts_with("ERROR esp-blocked (gw-b)\n  gw-b: 12,431"),
            "{t}"
        );
        assert!(t.contains("    peer: 192.0.2.2\n    window_s: 60\n"), "{t}");
        assert!(t.contains("  see docs/DIAGNOSE.md#esp-blocked\n"), "{t}");
        assert!(t.contains("Not checked:\n  - firewall rules"), "{t}");
        let empty = DiagnoseReport::default();
        assert_eq!(text(&empty), "No problem found.\n");
    }

    #[test]
    fn with_iked_down_and_nothing_else_it_still_reports() {
        use clap::Parser;
        let dir = std::env::temp_dir().join(format!("diag-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("iked.toml");
        std::fs::write(&cfg, "[connections.gw-b]\nlocal_addrs = 7\n").unwrap();
        let cli = Cli::parse_from([
            "vpnctl",
            "--socket",
            dir.join("none.sock").to_str().unwrap(),
            "diagnose",
        ]);
        let input = gather(&cli, None, Some(&cfg), 0.0);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(input.iked.is_none() && input.iked_error.is_some());
        assert!(
            matches!(input.config, Some(Err(ref p)) if p.line == 2),
            "{:?}",
            input.config
        );
        let f = analyze(&input);
        let ids: Vec<&str> = f.iter().map(|f| f.id.as_str()).collect();
        assert!(
            ids.contains(&"iked-down") && ids.contains(&"config-error"),
            "{ids:?}"
        );
        assert_eq!(exit_of(&f), Exit::FoundErrors);
    }
}
