//! Every fuzz target's seeds and regressions through its harness, on the stable toolchain:
//! `cargo test -p vpn-fuzz` (part of the workspace's `cargo test`). A target without a
//! seed, or a `fuzz_targets/*.rs` missing from `TARGETS`, fails here.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[test]
fn every_target_is_registered() {
    let mut on_disk: Vec<String> = files(&root().join("fuzz_targets"))
        .iter()
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .collect();
    on_disk.sort();
    let mut registered: Vec<String> = vpn_fuzz::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    registered.sort();
    assert_eq!(
        on_disk, registered,
        "fuzz_targets/*.rs and vpn_fuzz::TARGETS differ"
    );
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    for name in &registered {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} has no [[bin]] in fuzz/Cargo.toml"
        );
    }
}

#[test]
fn seeds_and_regressions_replay() {
    for (name, harness) in vpn_fuzz::TARGETS {
        let seeds = files(&root().join("seeds").join(name));
        assert!(
            !seeds.is_empty(),
            "{name}: no seed under fuzz/seeds/{name}/"
        );
        let regressions = files(&root().join("regressions").join(name));
        for f in seeds.iter().chain(&regressions) {
            let data = std::fs::read(f).unwrap();
            eprintln!("{name}: {}", f.display());
            harness(&data);
        }
    }
}
