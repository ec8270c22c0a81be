//! `vpnctl stats`: the dataplane's counters per worker and per SA, drops by reason with what
//! each reason means.

use super::cli::Cli;
use super::{CmdError, Exit};
use crate::api::StatsReport;

/// The dataplane's counters file of `ring`, as a [`StatsReport`] (also used by `diagnose`
/// and compared with the metrics in tests).
pub fn snapshot(ring: &str) -> Result<StatsReport, CmdError> {
    let _ = ring;
    Err(CmdError::unreachable("not implemented yet"))
}

pub fn run(cli: &Cli) -> Result<Exit, CmdError> {
    let _ = cli;
    Err(CmdError::failed("vpnctl stats: not implemented yet"))
}
