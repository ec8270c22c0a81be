//! Writes the generated seed inputs into `seeds/<target>/` (run when a harness's input
//! format changes, then commit the files):
//! `cargo test -p vpn-fuzz --test gen_seeds -- --ignored`.

use std::path::PathBuf;

/// A target's generated seeds: file names and contents.
type Seeds = Vec<(String, Vec<u8>)>;

#[test]
#[ignore = "writes fuzz/seeds/; run by hand"]
fn write_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("seeds");
    let generated: &[(&str, Seeds)] = &[
        ("esp_decap", vpn_fuzz::esp::seeds()),
        ("ring_records", vpn_fuzz::shm::ring_seeds()),
        ("counters_reader", vpn_fuzz::shm::counters_seeds()),
    ];
    for (target, seeds) in generated {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
