//! TODO(issue 15): see /work/plan/COMMON15.md for who builds this.

use std::path::Path;

use super::cli::E2eArgs;
use super::BenchError;

pub fn run(_args: &E2eArgs, _out_dir: &Path, _quiet: bool) -> Result<(), BenchError> {
    Err(BenchError::Other("not built yet".into()))
}
