//! Writing a result document: `OUT_DIR/<command>.json`, pretty-printed, and a line saying where.

use std::path::{Path, PathBuf};

use super::schema::BenchDoc;
use super::BenchError;

pub fn write_doc(doc: &BenchDoc, out_dir: &Path) -> Result<PathBuf, BenchError> {
    std::fs::create_dir_all(out_dir)?;
    let path = out_dir.join(format!("{}.json", doc.command));
    let text = serde_json::to_string_pretty(doc).map_err(|e| BenchError::Other(e.to_string()))?;
    std::fs::write(&path, text + "\n")?;
    println!("wrote {}", path.display());
    Ok(path)
}
