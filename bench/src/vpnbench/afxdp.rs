//! TODO(issue 15): see /work/plan/COMMON15.md for who builds this.

use std::path::Path;

use super::cli::AfxdpArgs;
use super::BenchError;

pub fn run(_args: &AfxdpArgs, _out_dir: &Path, _quiet: bool) -> Result<(), BenchError> {
    Err(BenchError::Other("not built yet".into()))
}

/// The hidden `vpnbench xsk` subcommand: the generator/sink process inside a namespace.
pub fn xsk_main(_args: &super::cli::XskArgs) -> Result<(), BenchError> {
    Err(BenchError::Other("not built yet".into()))
}
