//! CI smoke run of `vpnbench pipeline`: a few thousand packets per point at every size, 1
//! and 2 workers, 1 and 64 SAs, every stage; every packet must come out exactly once and
//! nothing may be dropped (counts, not speed, are asserted). No root, no kernel.

use std::sync::Arc;

use bench::vpnbench::cli::PipelineArgs;
use bench::vpnbench::imix::SizeSpec;
use bench::vpnbench::pipeline::{self, Budget, Frames, Gateways, Point, Stage};
use bench::vpnbench::pipeline_port::FrameList;
use bench::vpnbench::BenchError;

const PACKETS: u64 = 3001;

#[test]
fn every_point_counts_packets_in_and_out_exactly() {
    let args = PipelineArgs {
        sizes: vec!["64".into(), "1420".into(), "imix".into()],
        sas: vec![1, 64],
        workers: vec![1, 2],
        seconds: 0.0,
        packets: Some(PACKETS),
    };
    let doc = pipeline::measure(&args, true).expect("exact counts");
    assert_eq!(doc.command, "pipeline");
    assert_eq!(doc.pipeline.len(), 3 * 2 * 2 * 3, "one row per point");
    for r in &doc.pipeline {
        assert_eq!(r.packets, PACKETS, "{r:?}");
        assert_eq!(r.dropped, 0, "{r:?}");
        assert!(r.bytes > 0 && r.mpps > 0.0, "{r:?}");
    }
    for stage in ["encap", "decap", "encap+decap"] {
        for size in ["64", "1420", "imix"] {
            assert!(
                doc.pipeline
                    .iter()
                    .any(|r| r.stage == stage && r.size == size && r.workers == 2 && r.sas == 64),
                "{stage} {size}"
            );
        }
    }
    // Inner bytes: 64-byte packets are 64 bytes; the IMIX averages 354.33.
    let r = doc
        .pipeline
        .iter()
        .find(|r| r.size == "64" && r.stage == "encap")
        .unwrap();
    assert_eq!(r.bytes, 64 * PACKETS);
    let r = doc.pipeline.iter().find(|r| r.size == "imix").unwrap();
    assert_eq!(r.size_mix, "7:4:1 of 64/576/1500");
    assert!(
        (r.bytes as f64 / PACKETS as f64 - 354.33).abs() < 1.0,
        "{r:?}"
    );
    // A count-only run states no speed goal.
    assert!(doc.goals.is_empty());
}

#[test]
fn a_dropped_packet_fails_the_run() {
    let gw = Gateways::new(1).unwrap();
    let frames = gw.frames(SizeSpec::Fixed(64)).unwrap();
    // Corrupt one ESP frame's ciphertext: its ICV fails at gateway B.
    let mut esp: Vec<Vec<u8>> = frames.esp.frames.clone();
    let last = esp[3].len() - 20;
    esp[3][last] ^= 1;
    let bad = Frames {
        inner: Arc::clone(&frames.inner),
        esp: Arc::new(FrameList {
            frames: esp,
            inner_len: frames.esp.inner_len.clone(),
        }),
    };
    let p = Point {
        size: SizeSpec::Fixed(64),
        stage: Stage::Decap,
        workers: 1,
        budget: Budget::Packets(100),
    };
    match pipeline::run_point(&gw, &bad, &p, &[]) {
        Err(BenchError::CountMismatch(m)) => {
            assert!(m.contains("99 out, 1 dropped"), "{m}");
            assert!(m.contains("icv"), "the drop reason is named: {m}");
        }
        other => panic!(
            "expected a count mismatch, got {:?}",
            other.map(|r| r.packets)
        ),
    }
    // The intact frames pass.
    let r = pipeline::run_point(&gw, &frames, &p, &[]).unwrap();
    assert_eq!((r.packets, r.dropped), (100, 0));
}
