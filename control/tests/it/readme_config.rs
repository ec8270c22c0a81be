//! The configuration example in the README is a configuration iked accepts.

use std::path::Path;

use control::config::{CloseAction, DpdAction, IkedConfig, StartAction};

#[test]
fn the_readme_example_parses() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let start = readme
        .find("```toml\n[connections.")
        .expect("the README has an iked configuration example");
    let body = &readme[start + "```toml\n".len()..];
    let text = &body[..body.find("```").expect("closed code block")];
    let cfg = IkedConfig::parse(Path::new("README.md"), text).expect("the README example parses");
    let c = &cfg.connections[0];
    assert_eq!(c.dpd_delay_ms, 30_000);
    assert_eq!(c.children[0].start_action, StartAction::Start);
    assert_eq!(c.children[0].dpd_action, DpdAction::Restart);
    assert_eq!(c.children[0].close_action, CloseAction::None);
}
