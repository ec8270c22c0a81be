//! `vpnctl diagnose [CONN]`: gather iked's state, the dataplane's counters (twice, for
//! rates) and the system's ([`crate::diagnose::probe`]), run [`crate::diagnose::analyze`],
//! print the findings.

use std::path::Path;

use super::cli::Cli;
use super::{CmdError, Exit};

pub fn run(
    cli: &Cli,
    conn: Option<&str>,
    config: Option<&Path>,
    window_s: f64,
) -> Result<Exit, CmdError> {
    let _ = (cli, conn, config, window_s);
    Err(CmdError::failed("vpnctl diagnose: not implemented yet"))
}
