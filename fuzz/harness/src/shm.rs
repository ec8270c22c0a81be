//! The shared-memory readers: `ring_records` (the ring's record decoding, alone and out of a
//! ring file) and `counters_reader` (the counters region as `vpnctl` and a restarted
//! dataplane read it). Both files are written by another process, which may be killed
//! mid-write, be of another version, or be anything at all: a reader must refuse with an
//! error value, never panic or hang.
//!
//! `ring_records` input: `[mode][rest]`. Mode bit 0 clear: `rest` is one record, decoded as
//! a control record and as a dataplane record. Bit 0 set: `rest` is a ring file — bit 1
//! set: the whole file, header included; clear: `[geometry][body]`, a valid header for
//! slot size `64 << (geometry & 4)` and capacity `1 << ((geometry >> 3) & 3)` followed by
//! the indexes and slots from `body` (zero-filled): the file is attached, and every
//! published record of both rings is popped and decoded. Property: what decodes re-encodes
//! to bytes that decode to the same record and re-encode to the same bytes.
//!
//! `counters_reader` input: `[mode][rest]`. Mode bit 0 clear: `rest` is the whole file. Set:
//! `rest` is `[workers][esp reasons][worker reasons][SA slots][seqlock][body]` (each
//! field's low bits), the harness writes a header of that geometry and the body (names,
//! counters) from `body`. The file is opened and read (without waiting for the writer).
//! Properties: open refuses with an error or the snapshot has the file's shape; a reader
//! never waits for a writer that is mid-update (odd seqlock): the copy is marked torn.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dataplane::shm::counters::{CountersFile, COUNTERS_MAGIC, COUNTERS_VERSION, WORKER_FIXED};
use dataplane::shm::records::{self, ControlRecord, DataplaneRecord, MAX_RECORD};
use dataplane::shm::{RingDir, ShmFile, ABI_VERSION, MAGIC};

const RING_HEADER: usize = 64;
const RING_SLOTS_AT: usize = 320;

/// A file name of this process under /dev/shm (the counters reader opens by name there).
fn shm_name(what: &str) -> String {
    format!("vpn-fuzz-{what}-{}", std::process::id())
}

fn shm_path(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name)
}

/// Encode a control record with the public encoders.
fn encode_control(r: &ControlRecord, out: &mut [u8]) -> usize {
    match r {
        ControlRecord::AddSa { txid, sa } => {
            records::encode_add_sa(out, *txid, sa).expect("a decoded AddSa encodes")
        }
        ControlRecord::DeleteSa {
            txid,
            direction,
            spi,
            reqid,
        } => records::encode_delete_sa(out, *txid, *direction, *spi, *reqid),
        ControlRecord::Flush { txid } => records::encode_flush(out, *txid),
        ControlRecord::AddPolicy { txid, rule } => records::encode_add_policy(out, *txid, rule),
        ControlRecord::DeletePolicy { txid, id } => records::encode_delete_policy(out, *txid, *id),
        ControlRecord::Resync { txid } => records::encode_resync(out, *txid),
    }
}

/// Decode `b` both ways; whatever decodes must round-trip.
fn record(b: &[u8]) {
    let mut e1 = vec![0u8; MAX_RECORD];
    let mut e2 = vec![0u8; MAX_RECORD];
    if let Ok(r1) = records::decode(b) {
        let n = encode_control(&r1, &mut e1);
        assert_eq!(&e1[..2], &b[..2], "the kind changed");
        assert_eq!(r1.txid(), u32::from_le_bytes(b[4..8].try_into().unwrap()));
        let r2 = records::decode(&e1[..n])
            .unwrap_or_else(|e| panic!("{r1:?} re-encodes to bytes that do not decode: {e}"));
        assert_eq!(format!("{r1:?}"), format!("{r2:?}"), "control round trip");
        let m = encode_control(&r2, &mut e2);
        assert_eq!(e1[..n], e2[..m], "control re-encoding differs");
    }
    if let Ok(r1) = DataplaneRecord::decode(b) {
        let n = r1.encode(&mut e1);
        assert_eq!(&e1[..2], &b[..2], "the kind changed");
        let r2 = DataplaneRecord::decode(&e1[..n])
            .unwrap_or_else(|e| panic!("{r1:?} re-encodes to bytes that do not decode: {e}"));
        assert_eq!(r1, r2, "dataplane round trip");
        let m = r2.encode(&mut e2);
        assert_eq!(e1[..n], e2[..m], "dataplane re-encoding differs");
    }
}

/// A ring file's bytes: a valid header of the geometry `g` names, then `body`.
fn ring_file(g: u8, body: &[u8]) -> Vec<u8> {
    let slot = 64u32 << (g & 4);
    let cap = 1u32 << ((g >> 3) & 3);
    let len = RING_SLOTS_AT + 2 * (cap * slot) as usize;
    let mut f = vec![0u8; len];
    f[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    f[8..12].copy_from_slice(&ABI_VERSION.to_le_bytes());
    f[12..16].copy_from_slice(&slot.to_le_bytes());
    f[16..20].copy_from_slice(&cap.to_le_bytes());
    f[20..24].copy_from_slice(&2u32.to_le_bytes());
    f[24..32].copy_from_slice(&(len as u64).to_le_bytes());
    let n = body.len().min(len - RING_HEADER);
    f[RING_HEADER..RING_HEADER + n].copy_from_slice(&body[..n]);
    f
}

/// Attach a ring file and pop every published record of both rings.
fn ring(file: &[u8]) {
    let name = shm_name("ring");
    let path = shm_path(&name);
    std::fs::write(&path, file).expect("write /dev/shm");
    let shm = ShmFile::attach_at(&path, ABI_VERSION);
    let _ = std::fs::remove_file(&path);
    let shm: Arc<ShmFile> = match shm {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let mut out = vec![0u8; shm.max_record()];
    for dir in [RingDir::ToDataplane, RingDir::ToControl] {
        let mut c = shm.consumer(dir);
        // Arbitrary indexes may claim 2^32 records; a slot is a slot: capacity + 1 pops
        // cover every slot and one wrap.
        for _ in 0..=shm.capacity() {
            let Some(n) = c.pop(&mut out) else { break };
            assert!(n <= shm.max_record());
            record(&out[..n]);
        }
    }
}

/// The `ring_records` harness.
pub fn ring_records(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match (mode & 1, mode & 2) {
        (0, _) => record(rest),
        (_, 0) => {
            if let Some((&g, body)) = rest.split_first() {
                ring(&ring_file(g, body));
            }
        }
        _ => ring(rest),
    }
}

const CNT_HEADER: usize = 128;

/// A counters file's bytes: a header of the geometry `g` names, then `body`.
fn counters_file(g: &[u8; 5], body: &[u8]) -> Vec<u8> {
    let workers = usize::from(g[0] & 3);
    let esp = usize::from(g[1] & 7);
    let wrk = usize::from(g[2] & 3);
    let slots = usize::from(g[3] & 7);
    let len = CNT_HEADER
        + (esp + wrk) * 32
        + workers * (WORKER_FIXED + esp + wrk) * 8
        + slots * (8 + esp) * 8;
    let mut f = vec![0u8; len];
    f[0..8].copy_from_slice(&COUNTERS_MAGIC.to_le_bytes());
    f[8..12].copy_from_slice(&COUNTERS_VERSION.to_le_bytes());
    f[12..16].copy_from_slice(&(workers as u32).to_le_bytes());
    f[16..20].copy_from_slice(&(esp as u32).to_le_bytes());
    f[20..24].copy_from_slice(&(wrk as u32).to_le_bytes());
    f[24..28].copy_from_slice(&(slots as u32).to_le_bytes());
    f[32..40].copy_from_slice(&u64::from(g[4]).to_le_bytes());
    f[48..56].copy_from_slice(&(len as u64).to_le_bytes());
    let n = body.len().min(len - CNT_HEADER);
    f[CNT_HEADER..CNT_HEADER + n].copy_from_slice(&body[..n]);
    f
}

/// Open a counters file and read it, without waiting for a writer.
fn counters(file: &[u8]) {
    let name = shm_name("cntr");
    let path = shm_path(&name);
    std::fs::write(&path, file).expect("write /dev/shm");
    let f = CountersFile::open(&name);
    let _ = std::fs::remove_file(&path);
    let f = match f {
        Ok(f) => f,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let u32_at = |o: usize| u32::from_le_bytes(file[o..o + 4].try_into().unwrap()) as usize;
    let slots = u64::from_le_bytes(file[24..32].try_into().unwrap()) as usize;
    let (workers, esp, wrk) = (u32_at(12), u32_at(16), u32_at(20));
    let odd = file[32] & 1 == 1;
    let s = f.snapshot_within(Duration::ZERO);
    assert_eq!(s.torn, odd, "torn iff the writer is mid-update");
    assert_eq!(f.sa_slots(), slots);
    assert_eq!((s.esp_reasons.len(), s.worker_reasons.len()), (esp, wrk));
    assert_eq!(s.workers.len(), workers);
    for w in &s.workers {
        assert_eq!((w.esp_drops.len(), w.worker_drops.len()), (esp, wrk));
    }
    assert!(s.sas.len() <= slots);
    for e in &s.sas {
        assert!(e.slot < slots);
        assert_eq!(e.drops.len(), esp);
    }
}

/// The `counters_reader` harness.
pub fn counters_reader(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        counters(rest);
    } else if rest.len() >= 5 {
        let (g, body) = rest.split_at(5);
        counters(&counters_file(g.try_into().unwrap(), body));
    }
}

/// Seeds for both targets: every record kind, as produced by the encoders; ring files with
/// records in flight, written by the real producer; counters files written by the real
/// writer (`tests/gen_seeds.rs`).
pub fn ring_seeds() -> Vec<(String, Vec<u8>)> {
    use dataplane::crypto::{EspTransform, SaKeys};
    use dataplane::esp::{SaConfig, SaEvent, SelectorSet, TrafficSelector, UdpEncap};
    use dataplane::policy::spd::{PolicyRule, SpdAction};
    use dataplane::sa::Direction;
    use dataplane::shm::records::{FlowRecord, SaInstall};

    let mut recs: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; MAX_RECORD];
    let t: EspTransform = "aes256-sha512".parse().unwrap();
    let mut cfg = SaConfig::tunnel(
        0xc000_0001,
        t,
        SaKeys::new(&[7; 32], &[9; 64]),
        "2001:db8::1".parse().unwrap(),
        "2001:db8::2".parse().unwrap(),
    );
    cfg.esn = true;
    cfg.udp_encap = Some(UdpEncap::DEFAULT);
    cfg.selectors = SelectorSet {
        local: vec![TrafficSelector::prefix("10.2.0.0/16").unwrap()],
        remote: vec![TrafficSelector::prefix("2001:db8:1::/48")
            .unwrap()
            .with_protocol(17, (53, 53))],
    };
    let sa = SaInstall {
        direction: Direction::Outbound,
        reqid: 7,
        update: true,
        resource: Some(1),
        config: cfg,
    };
    let n = records::encode_add_sa(&mut buf, 1, &sa).unwrap();
    recs.push(("add-sa", buf[..n].to_vec()));
    let gcm = SaConfig::transport(
        0x1001,
        EspTransform::AES_GCM_128,
        SaKeys::new(&[1; 20], &[]),
    );
    let n = records::encode_add_sa(
        &mut buf,
        2,
        &SaInstall {
            direction: Direction::Inbound,
            reqid: 0,
            update: false,
            resource: None,
            config: gcm,
        },
    )
    .unwrap();
    recs.push(("add-sa-transport", buf[..n].to_vec()));
    let n = records::encode_delete_sa(&mut buf, 3, Direction::Inbound, 0x1001, 4);
    recs.push(("delete-sa", buf[..n].to_vec()));
    let n = records::encode_flush(&mut buf, 4);
    recs.push(("flush", buf[..n].to_vec()));
    let n = records::encode_resync(&mut buf, 5);
    recs.push(("resync", buf[..n].to_vec()));
    let rule = PolicyRule {
        id: 3,
        priority: 100,
        src: TrafficSelector::prefix("10.1.0.0/16").unwrap(),
        dst: TrafficSelector::prefix("10.2.0.0/16")
            .unwrap()
            .with_protocol(6, (443, 443)),
        action: SpdAction::Protect { reqid: 7 },
    };
    let n = records::encode_add_policy(&mut buf, 6, &rule);
    recs.push(("add-policy", buf[..n].to_vec()));
    let n = records::encode_delete_policy(&mut buf, 7, 3);
    recs.push(("delete-policy", buf[..n].to_vec()));
    let dp = [
        (
            "ack",
            DataplaneRecord::Ack {
                txid: 1,
                status: 2,
                message: "refused: SPI 0x1001 already installed (é)".into(),
            },
        ),
        (
            "hello",
            DataplaneRecord::Hello {
                boot_id: 42,
                sas: 2,
                policies: 1,
            },
        ),
        (
            "resync-begin",
            DataplaneRecord::ResyncBegin {
                txid: 5,
                sas: 1,
                policies: 1,
            },
        ),
        (
            "held-sa",
            DataplaneRecord::HeldSa {
                txid: 5,
                direction: Direction::Inbound,
                spi: 0x1001,
                reqid: 7,
                packets: 10,
                bytes: 1000,
                udp_path: None,
            },
        ),
        (
            "held-sa-udp-path",
            DataplaneRecord::HeldSa {
                txid: 5,
                direction: Direction::Outbound,
                spi: 0x1002,
                reqid: 7,
                packets: 10,
                bytes: 1000,
                udp_path: Some((
                    "192.0.2.2:4500".parse().unwrap(),
                    "198.51.100.1:44500".parse().unwrap(),
                )),
            },
        ),
        (
            "held-policy",
            DataplaneRecord::HeldPolicy {
                txid: 5,
                id: 3,
                reqid: 7,
                priority: 100,
                action: 0,
            },
        ),
        ("resync-end", DataplaneRecord::ResyncEnd { txid: 5 }),
        (
            "sa-event",
            DataplaneRecord::SaEvent {
                direction: Direction::Outbound,
                reqid: 7,
                event: SaEvent::SoftLifetime {
                    spi: 0xc000_0001,
                    kind: dataplane::esp::LifetimeKind::Bytes,
                },
            },
        ),
        (
            "acquire",
            DataplaneRecord::Acquire {
                policy: 3,
                reqid: 7,
                flow: FlowRecord {
                    src: "10.1.0.1".parse().unwrap(),
                    dst: "10.2.0.2".parse().unwrap(),
                    protocol: 6,
                    src_port: 40000,
                    dst_port: 443,
                },
            },
        ),
        (
            "unknown-spi",
            DataplaneRecord::UnknownSpi {
                spi: 0xdead,
                src: "2001:db8::2".parse().unwrap(),
                dst: "2001:db8::1".parse().unwrap(),
            },
        ),
    ];
    for (name, r) in dp {
        let n = r.encode(&mut buf);
        recs.push((name, buf[..n].to_vec()));
    }

    let mut out: Vec<(String, Vec<u8>)> = recs
        .iter()
        .map(|(name, b)| {
            let mut v = vec![0u8];
            v.extend_from_slice(b);
            (format!("record-{name}"), v)
        })
        .collect();
    // Ring files from the real producer: control records in ring 0, dataplane records in
    // ring 1, one popped already so the indexes are not both zero.
    let path = shm_path(&shm_name("seed-ring"));
    let shm = ShmFile::create_at(&path, 8, 1024, ABI_VERSION).unwrap();
    let (mut p0, mut p1) = (
        shm.producer(RingDir::ToDataplane),
        shm.producer(RingDir::ToControl),
    );
    for (_, b) in &recs {
        let to_control = records::decode(b).is_err();
        let p = if to_control { &mut p1 } else { &mut p0 };
        p.try_push(b).unwrap();
    }
    let mut c = shm.consumer(RingDir::ToDataplane);
    let mut tmp = vec![0u8; shm.max_record()];
    c.pop(&mut tmp);
    let file = std::fs::read(&path).unwrap();
    drop(shm);
    let _ = std::fs::remove_file(&path);
    let mut whole = vec![3u8];
    whole.extend_from_slice(&file);
    out.push(("ring-file".into(), whole));
    // The same contents under a harness-written header (slot 1024, capacity 8).
    let mut body = vec![1u8, 4 | (3 << 3)];
    body.extend_from_slice(&file[RING_HEADER..]);
    out.push(("ring-body".into(), body));
    out
}

/// Counters files from the real writer (see [`ring_seeds`]).
pub fn counters_seeds() -> Vec<(String, Vec<u8>)> {
    use dataplane::shm::counters::WorkerCounters;
    let name = shm_name("seed-cntr");
    let f = CountersFile::create(&name, 2, 4, &["icv_failed", "replay"], &["no_sa"]).unwrap();
    f.update(|f| {
        f.set_worker(
            1,
            &WorkerCounters {
                fixed: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
                esp_drops: vec![11, 12],
                worker_drops: vec![13],
            },
        );
        f.set_sa(1, 0xc000_0001, false, 7, 1 << 22);
        f.set_sa_counters(1, 100, 15000, 99, &[1, 0]);
        f.set_sa(3, 0x1001, true, 0, 0);
    });
    let file = std::fs::read(f.path()).unwrap();
    CountersFile::unlink(&name).unwrap();
    let mut whole = vec![0u8];
    whole.extend_from_slice(&file);
    let mut mid_update = whole.clone();
    mid_update[1 + 32] |= 1;
    let mut body = vec![1u8, 2, 2, 1, 4, 0];
    body.extend_from_slice(&file[CNT_HEADER..]);
    vec![
        ("written".into(), whole),
        ("writer-died-mid-update".into(), mid_update),
        ("body".into(), body),
    ]
}
