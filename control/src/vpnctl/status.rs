//! `vpnctl status`: daemons up, XDP attached and how, workers and cores, rings, totals.

use super::cli::Cli;
use super::{CmdError, Exit};

pub fn run(cli: &Cli) -> Result<Exit, CmdError> {
    let _ = cli;
    Err(CmdError::failed("vpnctl status: not implemented yet"))
}
