//! `iked_config` and `static_sa_file`: the two configuration parsers (iked's swanctl-shaped
//! TOML, `control::config`; the dataplane's manual SA file,
//! `dataplane::control::static_sa`) on arbitrary text.
//!
//! Input: the file's bytes. Valid UTF-8 is parsed as text; anything else is written to a
//! file and loaded, as the daemons do.
//!
//! Properties: no panic; a refusal is a `ConfigError` naming the file, and (what the code
//! promises, `ConfigError`'s `Display`) `FILE:LINE: [FIELD: ]MESSAGE` with a line that
//! exists in the text whenever the error is about a place in the file. Line 0 (no line) is
//! kept for what concerns the whole file: it cannot be read (not UTF-8), or (iked) it
//! configures no connection.
use std::path::{Path, PathBuf};

use control::config::IkedConfig;
use dataplane::control::static_sa::{ConfigError, StaticConfig};

/// A path beside which no credential directory exists: relative `certs`/`file` names in a
/// fuzzed file resolve to nothing.
const FILE: &str = "/nonexistent/vpn-fuzz/config.toml";

fn check(e: &ConfigError, file: &Path, text: Option<&str>, whole_file_ok: &[&str]) {
    assert_eq!(e.file, file, "the error names another file: {e:?}");
    let shown = e.to_string();
    let lead = format!("{}:", file.display());
    assert!(shown.starts_with(&lead), "{shown:?} does not name the file");
    if e.line == 0 {
        assert!(
            whole_file_ok
                .iter()
                .any(|w| e.message.starts_with(w) || e.field == *w),
            "an error without a line: {e:?}"
        );
        return;
    }
    let at = format!("{}:{}: ", file.display(), e.line);
    assert!(
        shown.starts_with(&at),
        "{shown:?} does not name line {}",
        e.line
    );
    if !e.field.is_empty() {
        assert!(
            shown.contains(&e.field),
            "{shown:?} does not name its field"
        );
    }
    if let Some(t) = text {
        let lines = t.matches('\n').count() + 1;
        assert!(
            e.line <= lines,
            "line {} of a {lines}-line file: {e:?}",
            e.line
        );
    }
}

/// Parse `data` as text, or (not UTF-8) write it to a file and load it.
fn parse_or_load<T>(
    data: &[u8],
    what: &str,
    parse: impl Fn(&Path, &str) -> Result<T, ConfigError>,
    load: impl Fn(&Path) -> Result<T, ConfigError>,
    whole_file_ok: &[&str],
) {
    match std::str::from_utf8(data) {
        Ok(text) => {
            let file = PathBuf::from(FILE);
            if let Err(e) = parse(&file, text) {
                check(&e, &file, Some(text), whole_file_ok);
            }
        }
        Err(_) => {
            let file =
                std::env::temp_dir().join(format!("vpn-fuzz-{what}-{}.toml", std::process::id()));
            std::fs::write(&file, data).expect("write a temporary file");
            let r = load(&file);
            let _ = std::fs::remove_file(&file);
            match r {
                Ok(_) => panic!("a file that is not UTF-8 was accepted"),
                Err(e) => {
                    check(&e, &file, None, &["cannot read"]);
                    assert_eq!(e.line, 0, "not UTF-8 is about the whole file: {e:?}");
                }
            }
        }
    }
}

/// The `iked_config` harness.
pub fn iked_config(data: &[u8]) {
    parse_or_load(
        data,
        "iked",
        IkedConfig::parse,
        IkedConfig::load,
        &["cannot read", "connections"],
    );
}

/// The `static_sa_file` harness.
pub fn static_sa_file(data: &[u8]) {
    parse_or_load(
        data,
        "static-sa",
        StaticConfig::parse,
        StaticConfig::load,
        &["cannot read"],
    );
}
