//! `iked_config` and `static_sa_file`: the two configuration parsers (iked's swanctl-shaped
//! TOML, `control::config`; the dataplane's manual SA file,
//! `dataplane::control::static_sa`) on arbitrary text.
//!
//! Input: the file's bytes. Valid UTF-8 is parsed as text; anything else starting with 0xFF
//! is written to a file and loaded, as the daemons do, and the rest parsed as lossy UTF-8.
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

/// Parse `data` as text. Input that is not UTF-8 goes through a file and `load`, as the
/// daemons read it, when it starts with 0xFF (never in UTF-8: a fixed 1/256 of the inputs, so
/// the path stays checked); other such input is parsed as its lossy UTF-8 text. Writing a
/// file per input made the syscalls most of the run (mutations rarely keep text UTF-8).
fn parse_or_load<T>(
    data: &[u8],
    what: &str,
    parse: impl Fn(&Path, &str) -> Result<T, ConfigError>,
    load: impl Fn(&Path) -> Result<T, ConfigError>,
    whole_file_ok: &[&str],
) {
    let text = match std::str::from_utf8(data) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) if data.first() == Some(&0xff) => {
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
            return;
        }
        Err(_) => String::from_utf8_lossy(data),
    };
    let file = PathBuf::from(FILE);
    if let Err(e) = parse(&file, &text) {
        check(&e, &file, Some(&text), whole_file_ok);
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
