//! The outbound switch of a rekey, under load (issue 12: "no packet meets 'no SA' while
//! outbound switches to the new SA"). Worker threads do what a worker does with an outbound
//! SA — load the reqid's slot, seal with what they got — while the control side drives the
//! real installer through its records, in the make-before-break order iked uses: install
//! the new outbound SA under the same reqid (one atomic swap), then delete the old one.
//!
//! Also: the sequence-number soft limit of a 32-bit SA, which asks for that rekey.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use dataplane::control::install::{Installer, NoSteering};
use dataplane::esp::{self, SaEvent};
use dataplane::sa::sadb::SaDb;
use dataplane::sa::Direction;
use dataplane::shm::records::{self, status, DataplaneRecord, SaInstall};

const REQID: u32 = 7;
const REKEYS: u32 = 2000;
const READERS: usize = 3;
/// SPIs fall as SAs are installed, so "the highest SPI" is the oldest SA: a fallback that
/// picked it would show up as a step back in `generation`.
const SPI_TOP: u32 = 0x4000_0000;
/// Redundant SAs of simulated rekey collisions, told apart by range.
const REDUNDANT: u32 = 0x7000_0000;

fn generation(spi: u32) -> Option<u32> {
    (spi <= SPI_TOP && spi > SPI_TOP - 1 - REKEYS).then(|| SPI_TOP - spi)
}

/// The control side: the real installer, fed encoded records, every Ack checked.
struct Control {
    inst: Installer,
    acks: Vec<DataplaneRecord>,
    txid: u32,
}

impl Control {
    fn apply(&mut self, rec: &[u8]) {
        self.acks.clear();
        self.inst.apply_bytes(rec, &mut NoSteering, &mut self.acks);
        match self.acks.last() {
            Some(DataplaneRecord::Ack {
                status: s, message, ..
            }) => assert_eq!(*s, status::OK, "{message}"),
            other => panic!("no Ack: {other:?}"),
        }
    }

    fn install(&mut self, spi: u32) {
        let mut cfg = config(SHAPES[0], "aes128gcm16", false, false);
        cfg.spi = spi;
        let mut b = vec![0u8; records::MAX_RECORD];
        self.txid += 1;
        let sa = SaInstall {
            direction: Direction::Outbound,
            reqid: REQID,
            update: false,
            resource: None,
            config: cfg,
        };
        let n = records::encode_add_sa(&mut b, self.txid, &sa).unwrap();
        self.apply(&b[..n]);
    }

    fn delete(&mut self, spi: u32) {
        let mut b = [0u8; 64];
        self.txid += 1;
        let n = records::encode_delete_sa(&mut b, self.txid, Direction::Outbound, spi, REQID);
        self.apply(&b[..n]);
    }
}

fn current(db: &SaDb) -> Option<u32> {
    db.outbound
        .get(REQID)
        .and_then(|g| g.as_ref().map(|sa| sa.spi()))
}

/// What one reader saw.
#[derive(Debug, Default)]
struct Seen {
    loads: u64,
    no_sa: u64,
    /// Distinct generations, in the order first seen.
    generations: Vec<u32>,
    /// A generation older than one already seen (a switch went backwards).
    backwards: Vec<(u32, u32)>,
    sealed: u64,
}

#[test]
fn outbound_switches_without_a_moment_of_no_sa() {
    let db = Arc::new(SaDb::with_capacity(64, 16));
    let mut ctl = Control {
        inst: Installer::new(Arc::clone(&db)),
        acks: Vec::new(),
        txid: 0,
    };
    // The tunnel is up before the workers start forwarding on it.
    ctl.install(SPI_TOP);

    let done = Arc::new(AtomicBool::new(false));
    let loads: Arc<Vec<AtomicU64>> = Arc::new((0..READERS).map(|_| AtomicU64::new(0)).collect());
    let start = Arc::new(Barrier::new(READERS + 1));
    let last_spi = SPI_TOP - REKEYS;
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (db, done, loads, start) = (
                Arc::clone(&db),
                Arc::clone(&done),
                Arc::clone(&loads),
                Arc::clone(&start),
            );
            std::thread::spawn(move || {
                let pkt = udp_packet(false, b"rekey", 0);
                let mut seen = Seen::default();
                let mut newest = 0;
                start.wait();
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    // What a worker does per batch: load the slot, seal with what it got
                    // (the guard keeps the SA alive even if the control side deletes it).
                    let spi = match db.outbound.get(REQID) {
                        None => {
                            seen.no_sa += 1;
                            None
                        }
                        Some(g) => {
                            let sa = g.as_ref().expect("get() returns only a full slot");
                            if seen.loads % 8 == 0 {
                                let mut f = frame(&pkt);
                                assert!(esp::encap(sa, &mut f).is_forward());
                                seen.sealed += 1;
                            }
                            Some(sa.spi())
                        }
                    };
                    seen.loads += 1;
                    loads[r].fetch_add(1, Ordering::Release);
                    if let Some(g) = spi.and_then(generation) {
                        if g < newest {
                            seen.backwards.push((newest, g));
                        } else if g > newest || seen.generations.is_empty() {
                            newest = g;
                            seen.generations.push(g);
                        }
                    }
                    // Every reader must come to see the newest SA once the control side
                    // is done; the deadline only turns a hang into a failure.
                    if done.load(Ordering::Acquire) && spi == Some(last_spi) {
                        break;
                    }
                    if Instant::now() > deadline {
                        panic!("reader {r} never saw the last SA {last_spi:#x}: {seen:?}");
                    }
                }
                seen
            })
        })
        .collect();
    start.wait();

    // Wait until every reader has loaded the slot again: the readiness check that makes
    // the readers see this point of the sequence (no sleeps).
    let wait_for_readers = |readers: &[std::thread::JoinHandle<Seen>]| {
        let before: Vec<u64> = loads.iter().map(|l| l.load(Ordering::Acquire)).collect();
        while loads
            .iter()
            .zip(&before)
            .any(|(l, b)| l.load(Ordering::Acquire) <= *b)
        {
            // A reader that failed stops counting: let the join below report it.
            if readers.iter().any(|h| h.is_finished()) {
                return;
            }
            std::thread::yield_now();
        }
    };

    let mut checkpoints = 0;
    for k in 1..=REKEYS {
        let (old, new) = (SPI_TOP - (k - 1), SPI_TOP - k);
        ctl.install(new);
        assert_eq!(
            current(&db),
            Some(new),
            "rekey {k}: the new SA carries the traffic"
        );
        if k % 50 == 0 {
            // A rekey collision (RFC 7296 §2.8.1): both sides made a new SA; the redundant
            // one, installed last, is deleted by its initiator. The reqid goes back to the
            // winner — the newest SA left — while the old one (a higher SPI) still exists.
            let redundant = REDUNDANT + k;
            ctl.install(redundant);
            assert_eq!(current(&db), Some(redundant));
            ctl.delete(redundant);
            assert_eq!(current(&db), Some(new), "rekey {k}: back to the winner");
        }
        if k % 7 == 3 && k > 3 {
            // The SA kept 3 rekeys ago (its Delete was late): deleting an older,
            // non-current SA changes nothing workers see.
            let before = db.outbound.get(REQID).unwrap().as_ref().map(Arc::clone);
            let straggler = SPI_TOP - (k - 4);
            ctl.delete(straggler);
            let after = db.outbound.get(REQID).unwrap().as_ref().map(Arc::clone);
            assert!(
                Arc::ptr_eq(before.as_ref().unwrap(), after.as_ref().unwrap()),
                "rekey {k}: deleting an old SA moved the slot"
            );
        }
        // The old SA goes once the exchange completed (make-before-break), except every
        // 7th, whose Delete comes late (above).
        if k % 7 != 0 {
            let before = db.outbound.get(REQID).unwrap().as_ref().map(Arc::clone);
            ctl.delete(old);
            let after = db.outbound.get(REQID).unwrap().as_ref().map(Arc::clone);
            assert!(Arc::ptr_eq(
                before.as_ref().unwrap(),
                after.as_ref().unwrap()
            ));
        }
        if k % 100 == 0 {
            wait_for_readers(&readers);
            checkpoints += 1;
        }
    }
    done.store(true, Ordering::Release);
    let seen: Vec<Seen> = readers.into_iter().map(|h| h.join().unwrap()).collect();

    // Afterwards the dataplane holds only the current SA: nothing leaked.
    let held: Vec<u32> = ctl.inst.outbound().map(|(_, sa)| sa.spi()).collect();
    assert_eq!(held, [last_spi]);

    for (r, s) in seen.iter().enumerate() {
        assert_eq!(s.no_sa, 0, "reader {r} met a moment without an SA: {s:?}");
        assert!(
            s.backwards.is_empty(),
            "reader {r} went back to an older SA: {s:?}"
        );
        assert_eq!(s.generations.last(), Some(&REKEYS), "reader {r}: {s:?}");
        // The checkpoints made each reader look at least once per 100 rekeys.
        assert!(
            s.generations.len() >= checkpoints,
            "reader {r} saw {} SAs over {checkpoints} checkpoints",
            s.generations.len()
        );
        assert!(s.sealed > 0);
    }
}

/// A 32-bit SA asks for its rekey when 2^28 numbers are left (1/16 of the space: 268 s at
/// 1 Mpps, 27 s at 10 Mpps), and not a packet earlier; with ESN the same fraction of 2^64.
#[test]
fn a_32_bit_sa_asks_for_a_rekey_well_before_its_numbers_run_out() {
    let threshold = (1u64 << 32) - (1 << 28);
    for (esn, threshold) in [(false, threshold), (true, u64::MAX - (u64::MAX >> 4))] {
        let cfg = config(SHAPES[0], "aes128gcm16", false, esn);
        let (out, _) = sa_pair(&cfg);
        let pkt = udp_packet(false, b"seq", 0);
        out.set_last_seq(threshold - 2);
        let mut f = frame(&pkt);
        assert!(esp::encap(&out, &mut f).is_forward());
        assert_eq!(out.poll_event(), None, "esn {esn}: seq {}", threshold - 1);
        let mut f = frame(&pkt);
        assert!(esp::encap(&out, &mut f).is_forward());
        assert_eq!(out.last_seq(), threshold);
        assert_eq!(
            out.poll_event(),
            Some(SaEvent::SeqNearlyExhausted { spi: out.spi() }),
            "esn {esn}"
        );
    }
}
