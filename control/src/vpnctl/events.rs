//! `vpnctl log [--follow]` and `vpnctl trace [CONN]`: iked's recent events and IKE message
//! summaries, read from its event buffer by sequence number.

use super::cli::Cli;
use super::{CmdError, Exit};

pub fn log(cli: &Cli, follow: bool, lines: u32) -> Result<Exit, CmdError> {
    let _ = (cli, follow, lines);
    Err(CmdError::failed("vpnctl log: not implemented yet"))
}

pub fn trace(
    cli: &Cli,
    conn: Option<&str>,
    count: Option<u64>,
    timeout_s: Option<f64>,
) -> Result<Exit, CmdError> {
    let _ = (cli, conn, count, timeout_s);
    Err(CmdError::failed("vpnctl trace: not implemented yet"))
}
