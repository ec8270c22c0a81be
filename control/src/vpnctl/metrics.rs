//! `vpnctl metrics`: the Prometheus text that `iked --metrics` serves, printed once — for a
//! statically keyed dataplane without iked (`--ring NAME`), for a textfile collector, and for
//! scripts. With `--json`, the input it is rendered from (iked's status and list, the
//! dataplane's counters).

use std::time::{SystemTime, UNIX_EPOCH};

use super::cli::Cli;
use super::{request, CmdError, Exit};
use crate::api::{IkedStatus, ListReport, Request};
use crate::metrics::{render, MetricsInput};

/// What iked and the dataplane show now, and why a part is missing (iked not answering, no
/// counters file).
pub fn gather(cli: &Cli) -> (MetricsInput, Vec<String>) {
    let mut missing = Vec::new();
    let ask = |req: Request| match request(&cli.socket, &req) {
        Ok(r) if r.ok => Ok(r.data),
        Ok(r) => Err(format!("iked refused {req:?}: {}", r.text.trim())),
        Err(e) => Err(e.message),
    };
    let iked = ask(Request::Status).and_then(|v| {
        serde_json::from_value::<IkedStatus>(v).map_err(|e| format!("iked's status: {e}"))
    });
    let list = match &iked {
        Ok(_) => ask(Request::List { conn: None }).and_then(|v| {
            serde_json::from_value::<ListReport>(v).map_err(|e| format!("iked's list: {e}"))
        }),
        Err(e) => Err(e.clone()),
    };
    let iked = iked.map_err(|e| missing.push(e)).ok();
    let list = list.ok();
    let ring = cli.ring.clone().or_else(|| {
        iked.as_ref()
            .map(|s| s.ring.clone())
            .filter(|r| !r.is_empty())
    });
    let stats = match &ring {
        Some(r) => super::stats::snapshot(r)
            .map_err(|e| missing.push(format!("dataplane counters of ring {r}: {}", e.message)))
            .ok(),
        None => {
            missing.push("dataplane counters: no --ring, and iked did not say its ring".into());
            None
        }
    };
    let now_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (
        MetricsInput {
            now_unix_ms,
            iked,
            list,
            stats,
        },
        missing,
    )
}

pub fn run(cli: &Cli) -> Result<Exit, CmdError> {
    let (input, missing) = gather(cli);
    if cli.json {
        super::print_json("metrics", &input);
    } else {
        print!("{}", render(&input));
    }
    if input.iked.is_none() && input.stats.is_none() {
        // Printed anyway: `xdpipsec_up` 0 for both is itself the answer for a collector.
        return Err(CmdError::unreachable(missing.join("; ")));
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn with_neither_daemon_it_says_why_for_each() {
        let cli = Cli::parse_from([
            "vpnctl",
            "metrics",
            "--socket",
            "/nonexistent/iked.sock",
            "--ring",
            "no-such-ring-for-metrics-test",
        ]);
        let (input, missing) = gather(&cli);
        assert!(input.iked.is_none() && input.list.is_none() && input.stats.is_none());
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].contains("/nonexistent/iked.sock"), "{missing:?}");
        assert!(
            missing[1].contains("no-such-ring-for-metrics-test"),
            "{missing:?}"
        );
        assert_eq!(run(&cli).unwrap_err().exit, Exit::Unreachable);
    }
}
