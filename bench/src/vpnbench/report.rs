//! TODO(issue 15): plots and the markdown report from the JSON files.

use std::path::Path;

use super::cli::ReportArgs;
use super::BenchError;

pub fn run(_args: &ReportArgs, _out_dir: &Path) -> Result<(), BenchError> {
    Err(BenchError::Other("not built yet".into()))
}
