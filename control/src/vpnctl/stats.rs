//! `vpnctl stats`: the dataplane's counters per worker and per SA, drops by reason with what
//! each reason means.

use super::cli::Cli;
use super::{CmdError, Exit};

pub fn run(cli: &Cli) -> Result<Exit, CmdError> {
    let _ = cli;
    Err(CmdError::failed("vpnctl stats: not implemented yet"))
}
