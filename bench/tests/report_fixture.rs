//! `vpnbench report` from a recorded document: the markdown holds every section's table,
//! the goals with met/missed and the reason, the command line, says which section is
//! absent, and the SVG plots are written.

use std::path::{Path, PathBuf};

use bench::vpnbench::report;

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vpnbench-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/report_fixture.json")
}

#[test]
fn report_from_a_recorded_document() {
    let dir = out_dir("fixture");
    // A file that is not a vpnbench document is skipped, not guessed at.
    let junk = dir.join("junk.json");
    std::fs::write(&junk, "{\"rows\": []}").unwrap();
    let (inputs, skipped) = report::load(&[fixture(), junk.clone()], &dir).unwrap();
    assert_eq!(inputs.len(), 1);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, junk);

    let w = report::write_report(&inputs, &dir).unwrap();
    let md = std::fs::read_to_string(&w.markdown).unwrap();
    for piece in [
        "| AMD EPYC 7B13 64-Core Processor | 2 | 6.1.0-test | vaes-avx2 | 0.1.0 |",
        "`vpnbench pipeline --seconds 1`",
        "| encap+decap | 64 | 1 | 2 | 0,1 | 3.000 | 1.54 | 1.500 | 666.7 | 0 |",
        "| encap+decap | 7:4:1 of 64/576/1500 | 1 | 1 |",
        "| pipeline (encap+decap, 1 SAs) with 2 workers >= 1.9x one worker | worst 1.50x: 64 B: 1.50x (2.000 → 3.000 Mpps) | **missed** | a CPU-bound loop in the same process scaled only 1.40x from 1 to 2 pinned threads |",
        "| met | — |",
        "| ours-1w | 64 | 100000 | 200000 | 200000 | 100000 | 0.0000 | 10 % | 12.0 / 15.0 / 30.0 / 55.0 / 120.0 |",
        // Medians of the two rounds, and ours against each peer.
        "| ours-2w | 2 | off | 1.05 | 1.29 |",
        "| boringtun | 2 | off | 0.34 | 0.38 |",
        "3.39x |",
        "| ours-vaes-avx2 | 128 | seal | 1420 | 396.0 | 28.69 | ring | 1.23 |",
        "_Absent: no input file holds sa results",
        "- fixture: a recorded document with every section but sa_scale (report_fixture.json)",
    ] {
        assert!(md.contains(piece), "missing {piece:?} in\n{md}");
    }
    assert!(!md.contains("no input file holds pipeline"));
    let names: Vec<String> = w
        .plots
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "pipeline_throughput.svg",
        "pipeline_scaling.svg",
        "afxdp_latency_cdf.svg",
        "e2e_peers.svg",
        "e2e_rtt_loaded_cdf.svg",
        "gcm_seal.svg",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        let svg = std::fs::read_to_string(dir.join(want)).unwrap();
        assert!(svg.starts_with("<svg"), "{want}");
        assert!(
            svg.contains("<polyline") || svg.contains("<rect"),
            "{want} draws something"
        );
        assert!(md.contains(&format!("]({want})")), "{want} is linked");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sections_absent_from_the_inputs_are_said_to_be_absent() {
    let dir = out_dir("empty");
    let doc = bench::vpnbench::schema::BenchDoc::new("sa");
    let path = dir.join("sa.json");
    std::fs::write(&path, serde_json::to_string(&doc).unwrap()).unwrap();
    let (inputs, _) = report::load(&[], &dir).unwrap();
    assert_eq!(inputs.len(), 1, "every *.json in the directory");
    let w = report::write_report(&inputs, &dir).unwrap();
    let md = std::fs::read_to_string(&w.markdown).unwrap();
    for s in ["pipeline", "afxdp", "e2e", "sa", "gcm", "goal"] {
        assert!(
            md.contains(&format!("_Absent: no input file holds {s} results")),
            "{s}:\n{md}"
        );
    }
    assert!(w.plots.is_empty(), "no plots of nothing: {:?}", w.plots);
    let _ = std::fs::remove_dir_all(&dir);
}
