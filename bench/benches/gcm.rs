//! AES-GCM: our engine on every dispatch path against two baselines in the same process,
//! Intel ipsec-mb (Debian's libipsec-mb, through `ipsecmb/shim.c`) and ring 0.17
//! (BoringSSL's code, with a VAES-AVX2 path that ipsec-mb 1.3 lacks on CPUs without
//! AVX-512), at 64, 256, 512, 1420 and 8192 bytes; ours is reported against the best of the
//! baselines at each size. Then the full ESP encap at 64 and 1420 bytes against the best
//! raw seal of the inner packet's size.
//!
//! Run: `cargo bench -p bench --bench gcm` (`GCM_BENCH_SIZES=64,68` for other sizes,
//! `GCM_BENCH_ROUNDS=7` for a quicker run). It prints a table and writes
//! `target/bench/gcm.json` and a vpnbench document with `gcm` rows, `bench/results/gcm.json`. The machine is shared and noisy, so every figure is the median
//! of interleaved rounds (ours, theirs, ours, ...) and every ratio is the median of the
//! per-round ratios, not a ratio of medians taken at different times.

use std::hint::black_box;
use std::time::Instant;

use bench::inner_packet;
use bench::vpnbench::schema::{BenchDoc, GcmRow, Goal};
use dataplane::crypto::gcm::{GcmKey, GcmMessage, GcmPath};
use dataplane::crypto::{EspTransform, SaKeys};
use dataplane::esp::{self, Frame, OutboundSa, SaConfig, Verdict};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

const SIZES: &[usize] = &[64, 256, 512, 1420, 8192];
const ROUNDS: usize = 21;
/// Target time per measurement.
const SLICE_NS: f64 = 2e6;
const AAD: [u8; 8] = [0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1];
const BATCH: usize = 32;

#[cfg(ipsecmb)]
mod imb {
    use std::ffi::c_void;

    // The shim first: it needs ipsec-mb's symbols. (Two `link` attributes are not a
    // duplicate, whatever clippy thinks.)
    #[allow(clippy::duplicated_attributes)]
    #[link(name = "vpn_imb_shim", kind = "static")]
    #[link(name = "IPSec_MB", kind = "static")]
    extern "C" {
        fn vpn_imb_new(key: *const u8, key_len: i32) -> *mut c_void;
        fn vpn_imb_arch(s: *const c_void) -> i32;
        fn vpn_imb_seal(
            s: *mut c_void,
            iv: *const u8,
            aad: *const u8,
            aad_len: u64,
            buf: *mut u8,
            len: u64,
            tag: *mut u8,
        );
        fn vpn_imb_open(
            s: *mut c_void,
            iv: *const u8,
            aad: *const u8,
            aad_len: u64,
            buf: *mut u8,
            len: u64,
            tag: *mut u8,
        );
        fn vpn_imb_free(s: *mut c_void);
    }

    /// One ipsec-mb manager and 64-byte-aligned expanded GCM key.
    pub struct Imb(*mut c_void);

    impl Imb {
        pub fn new(key: &[u8]) -> Imb {
            // SAFETY: `key` is valid for `key.len()` bytes; the shim copies what it needs.
            let p = unsafe { vpn_imb_new(key.as_ptr(), key.len() as i32) };
            assert!(!p.is_null(), "ipsec-mb manager allocation failed");
            Imb(p)
        }

        pub fn arch(&self) -> &'static str {
            // SAFETY: `self.0` is a live shim from `vpn_imb_new`.
            match unsafe { vpn_imb_arch(self.0) } {
                2 => "sse",
                3 => "avx",
                4 => "avx2",
                5 => "avx512",
                _ => "none",
            }
        }

        pub fn seal(&mut self, iv: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
            let mut tag = [0u8; 16];
            // SAFETY: every pointer is valid for the length passed with it; the shim
            // encrypts `buf` in place and writes 16 tag bytes.
            unsafe {
                vpn_imb_seal(
                    self.0,
                    iv.as_ptr(),
                    aad.as_ptr(),
                    aad.len() as u64,
                    buf.as_mut_ptr(),
                    buf.len() as u64,
                    tag.as_mut_ptr(),
                )
            };
            tag
        }

        /// Decrypt in place; returns the computed tag (the caller compares).
        pub fn open(&mut self, iv: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
            let mut tag = [0u8; 16];
            // SAFETY: as for `seal`.
            unsafe {
                vpn_imb_open(
                    self.0,
                    iv.as_ptr(),
                    aad.as_ptr(),
                    aad.len() as u64,
                    buf.as_mut_ptr(),
                    buf.len() as u64,
                    tag.as_mut_ptr(),
                )
            };
            tag
        }
    }

    impl Drop for Imb {
        fn drop(&mut self) {
            // SAFETY: `self.0` came from `vpn_imb_new` and is freed once.
            unsafe { vpn_imb_free(self.0) }
        }
    }
}

/// A named operation at one size, run `iters` times per measurement.
struct Case<'a> {
    name: String,
    op: Box<dyn FnMut() + 'a>,
    iters: u64,
    ns: Vec<f64>,
}

impl<'a> Case<'a> {
    fn new(name: impl Into<String>, mut op: Box<dyn FnMut() + 'a>) -> Case<'a> {
        // Calibrate to about SLICE_NS per measurement.
        for _ in 0..200 {
            op();
        }
        let t = Instant::now();
        for _ in 0..1000 {
            op();
        }
        let per = t.elapsed().as_nanos() as f64 / 1000.0;
        let iters = ((SLICE_NS / per.max(1.0)) as u64).max(10);
        Case {
            name: name.into(),
            op,
            iters,
            ns: Vec::new(),
        }
    }

    fn measure(&mut self) {
        let t = Instant::now();
        for _ in 0..self.iters {
            (self.op)();
        }
        self.ns
            .push(t.elapsed().as_nanos() as f64 / self.iters as f64);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median over rounds of `a[i] / b[i]`.
fn paired_ratio(a: &Case, b: &Case) -> f64 {
    median(a.ns.iter().zip(&b.ns).map(|(x, y)| x / y).collect())
}

/// ring's AES-GCM key for `key` (16 or 32 bytes).
fn ring_key(key: &[u8]) -> LessSafeKey {
    let alg = if key.len() == 32 {
        &AES_256_GCM
    } else {
        &AES_128_GCM
    };
    LessSafeKey::new(UnboundKey::new(alg, key).expect("a 16 or 32-byte key"))
}

fn ring_seal(k: &LessSafeKey, iv: [u8; 12], buf: &mut [u8]) -> [u8; 16] {
    let tag = k
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(&AAD), buf)
        .expect("ring seal");
    let mut t = [0u8; 16];
    t.copy_from_slice(tag.as_ref());
    t
}

fn rounds() -> usize {
    // `cargo test --all-targets` runs this once as a smoke test: three rounds do.
    if !std::env::args().any(|a| a == "--bench") {
        return 3;
    }
    std::env::var("GCM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(ROUNDS)
}

fn run_rounds(cases: &mut [Case]) {
    let rounds = rounds();
    for _ in 0..rounds {
        for c in cases.iter_mut() {
            c.measure();
        }
    }
}

fn cpu_flags() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let wanted = [
        "aes",
        "pclmulqdq",
        "avx",
        "avx2",
        "vaes",
        "vpclmulqdq",
        "avx512f",
        "avx512bw",
    ];
    let have: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| flags.contains(w))
        .collect();
    format!("{model}; {}", have.join(" "))
}

fn main() {
    // `cargo test --all-targets` runs benches once as tests with `--bench` absent: keep
    // that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    // `GCM_BENCH_SIZES=64,68,256` measures other sizes.
    let sizes: Vec<usize> = std::env::var("GCM_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| SIZES.to_vec());
    let flags = cpu_flags();
    println!("CPU: {flags}");
    println!("our best path: {}", GcmPath::best());
    let mut json = Vec::new();
    let mut doc = BenchDoc::new("gcm");
    doc.command_line = format!(
        "cargo bench -p bench --bench gcm{}{}",
        std::env::var("GCM_BENCH_SIZES")
            .map(|v| format!(" (GCM_BENCH_SIZES={v})"))
            .unwrap_or_default(),
        std::env::var("GCM_BENCH_ROUNDS")
            .map(|v| format!(" (GCM_BENCH_ROUNDS={v})"))
            .unwrap_or_default()
    );
    #[cfg(ipsecmb)]
    let imb_name = format!("ipsec-mb-{}", imb::Imb::new(&[0u8; 16]).arch());

    for key_len in [16usize, 32] {
        let key: Vec<u8> = (0..key_len as u8).collect();
        let bits = key_len * 8;
        #[cfg(ipsecmb)]
        println!(
            "\nAES-{bits}-GCM seal, ns per message (median of {} interleaved rounds); ipsec-mb arch: {}",
            rounds(),
            imb::Imb::new(&key).arch()
        );
        #[cfg(not(ipsecmb))]
        println!(
            "\nAES-{bits}-GCM seal, ns per message; ipsec-mb not built (libipsec-mb-dev missing)"
        );
        let paths = GcmPath::available_paths();
        print!("{:>6}", "bytes");
        #[cfg(ipsecmb)]
        print!(" {:>10} {:>10}", "ipsec-mb", "(open)");
        for p in &paths {
            print!(" {:>12}", p.name());
        }
        print!(" {:>10}", "(open)");
        print!(" {:>10} {:>10}", "ring", "(open)");
        #[cfg(ipsecmb)]
        print!(" {:>13} {:>12}", "ours/imb seal", "ours/imb open");
        print!(" {:>10} {:>9}", "best base", "ours/best");
        print!(" {:>9} {:>9}", "x32 loop", "x32 batch");
        #[cfg(ipsecmb)]
        print!(" {:>9} {:>9}", "x32 imb", "batch/imb");
        println!();

        for &size in &sizes {
            if quick && size > 512 {
                break;
            }
            let mut cases: Vec<Case> = Vec::new();
            #[cfg(ipsecmb)]
            {
                let mut m = imb::Imb::new(&key);
                let mut buf = vec![0u8; size];
                let mut n = 0u64;
                cases.push(Case::new(
                    "imb-seal",
                    Box::new(move || {
                        n += 1;
                        let mut iv = [0u8; 12];
                        iv[4..].copy_from_slice(&n.to_be_bytes());
                        black_box(m.seal(&iv, &AAD, &mut buf));
                    }),
                ));
                let mut m = imb::Imb::new(&key);
                let mut buf = vec![0u8; size];
                cases.push(Case::new(
                    "imb-open",
                    Box::new(move || {
                        black_box(m.open(&[1; 12], &AAD, &mut buf));
                    }),
                ));
            }
            {
                let k = ring_key(&key);
                let mut buf = vec![0u8; size];
                let mut n = 0u64;
                cases.push(Case::new(
                    "ring-seal",
                    Box::new(move || {
                        n += 1;
                        let mut iv = [0u8; 12];
                        iv[4..].copy_from_slice(&n.to_be_bytes());
                        black_box(ring_seal(&k, iv, &mut buf));
                    }),
                ));
            }
            {
                // As ours-open: open a valid message in place, seal it back; the seal is
                // subtracted below.
                let k = ring_key(&key);
                let mut buf = vec![0u8; size];
                let tag = ring_seal(&k, [1; 12], &mut buf);
                buf.extend_from_slice(&tag);
                cases.push(Case::new(
                    "ring-open",
                    Box::new(move || {
                        k.open_in_place(
                            Nonce::assume_unique_for_key([1; 12]),
                            Aad::from(&AAD),
                            &mut buf,
                        )
                        .expect("a valid message");
                        let n = buf.len() - 16;
                        let t = ring_seal(&k, [1; 12], &mut buf[..n]);
                        buf[n..].copy_from_slice(&t);
                        black_box(&buf);
                    }),
                ));
            }
            for &p in &paths {
                let k = GcmKey::with_path(&key, p).unwrap();
                let mut buf = vec![0u8; size];
                let mut n = 0u64;
                cases.push(Case::new(
                    format!("ours-seal-{}", p.name()),
                    Box::new(move || {
                        n += 1;
                        let mut iv = [0u8; 12];
                        iv[4..].copy_from_slice(&n.to_be_bytes());
                        black_box(k.seal(&iv, &AAD, &mut buf).unwrap());
                    }),
                ));
            }
            {
                // 32 different buffers per call: packets of one batch, where the core can
                // overlap one packet's GHASH with the next one's AES.
                let k = GcmKey::new(&key).unwrap();
                let mut bufs = vec![vec![0u8; size]; BATCH];
                let mut n = 0u64;
                cases.push(Case::new(
                    "ours-x32",
                    Box::new(move || {
                        for b in bufs.iter_mut() {
                            n += 1;
                            let mut iv = [0u8; 12];
                            iv[4..].copy_from_slice(&n.to_be_bytes());
                            black_box(k.seal(&iv, &AAD, b).unwrap());
                        }
                    }),
                ));
            }
            {
                // The same 32 packets through the batch entry point (pairs interleaved).
                let k = GcmKey::new(&key).unwrap();
                let mut bufs = vec![vec![0u8; size]; BATCH];
                let mut n = 0u64;
                cases.push(Case::new(
                    "ours-batch",
                    Box::new(move || {
                        let mut msgs: Vec<GcmMessage> = bufs
                            .iter_mut()
                            .map(|buf| {
                                n += 1;
                                let mut nonce = [0u8; 12];
                                nonce[4..].copy_from_slice(&n.to_be_bytes());
                                GcmMessage {
                                    nonce,
                                    aad: &AAD,
                                    buf,
                                    tag: [0; 16],
                                }
                            })
                            .collect();
                        k.seal_batch(&mut msgs).unwrap();
                        black_box(&msgs);
                    }),
                ));
            }
            #[cfg(ipsecmb)]
            {
                let mut m = imb::Imb::new(&key);
                let mut bufs = vec![vec![0u8; size]; BATCH];
                let mut n = 0u64;
                cases.push(Case::new(
                    "imb-x32",
                    Box::new(move || {
                        for b in bufs.iter_mut() {
                            n += 1;
                            let mut iv = [0u8; 12];
                            iv[4..].copy_from_slice(&n.to_be_bytes());
                            black_box(m.seal(&iv, &AAD, b));
                        }
                    }),
                ));
            }
            {
                // Open of a valid message, so the tag check passes and nothing is zeroed.
                let k = GcmKey::new(&key).unwrap();
                let mut wire = vec![0u8; size];
                let tag = k.seal(&[1; 12], &AAD, &mut wire).unwrap();
                let mut buf = wire.clone();
                cases.push(Case::new(
                    "ours-open",
                    Box::new(move || {
                        // Open in place, then seal back: the pair costs two passes, so
                        // the figure is halved below.
                        k.open(&[1; 12], &AAD, &mut buf, &tag).unwrap();
                        black_box(k.seal(&[1; 12], &AAD, &mut buf).unwrap());
                    }),
                ));
            }
            run_rounds(&mut cases);

            let get = |name: &str| cases.iter().find(|c| c.name == name).unwrap();
            let best = format!("ours-seal-{}", GcmPath::best().name());
            print!("{size:>6}");
            let mut row = serde_json_row(bits, size);
            #[cfg(ipsecmb)]
            {
                let s = median(get("imb-seal").ns.clone());
                let o = median(get("imb-open").ns.clone());
                print!(" {s:>10.1} {o:>10.1}");
                row.push(("ipsec_mb_seal_ns".into(), s));
                row.push(("ipsec_mb_open_ns".into(), o));
            }
            for p in &paths {
                let c = get(&format!("ours-seal-{}", p.name()));
                let v = median(c.ns.clone());
                print!(" {v:>12.1}");
                row.push((format!("ours_seal_{}_ns", p.name()), v));
            }
            // The open case runs open + seal; subtract the seal in the same rounds.
            let seal_best: Vec<f64> = get(&best).ns.clone();
            let open_only: Vec<f64> = get("ours-open")
                .ns
                .iter()
                .zip(&seal_best)
                .map(|(both, seal)| both - seal)
                .collect();
            let open_med = median(open_only.clone());
            print!(" {open_med:>10.1}");
            row.push(("ours_open_ns".into(), open_med));
            let ring_s = median(get("ring-seal").ns.clone());
            let ring_open: Vec<f64> = get("ring-open")
                .ns
                .iter()
                .zip(&get("ring-seal").ns)
                .map(|(both, seal)| both - seal)
                .collect();
            let ring_o = median(ring_open);
            print!(" {ring_s:>10.1} {ring_o:>10.1}");
            row.push(("ring_seal_ns".into(), ring_s));
            row.push(("ring_open_ns".into(), ring_o));
            // The best baseline at this size: the lower median seal.
            #[allow(unused_mut)] // reassigned only when ipsec-mb is built
            let mut base = ("ring", "ring-seal", ring_s);
            #[cfg(ipsecmb)]
            {
                let r = paired_ratio(get(&best), get("imb-seal"));
                let imb_open = &get("imb-open").ns;
                let ro = median(open_only.iter().zip(imb_open).map(|(a, b)| a / b).collect());
                print!(" {r:>13.2} {ro:>12.2}");
                row.push(("ratio_seal_ours_over_ipsec_mb".into(), r));
                row.push(("ratio_open_ours_over_ipsec_mb".into(), ro));
                let imb_s = median(get("imb-seal").ns.clone());
                if imb_s < ring_s {
                    base = ("ipsec-mb", "imb-seal", imb_s);
                }
                doc.gcm.push(GcmRow {
                    implementation: imb_name.clone(),
                    key_bits: bits,
                    op: "seal".into(),
                    bytes: size,
                    ns_per_op: imb_s,
                    gbps: size as f64 * 8.0 / imb_s,
                    ..GcmRow::default()
                });
            }
            let vs_best = paired_ratio(get(&best), get(base.1));
            print!(" {:>10} {vs_best:>9.2}", base.0);
            row.push(("best_baseline_seal_ns".into(), base.2));
            row.push(("best_baseline_is_ring".into(), f64::from(base.0 == "ring")));
            row.push(("ratio_seal_ours_over_best_baseline".into(), vs_best));
            doc.gcm.push(GcmRow {
                implementation: "ring".into(),
                key_bits: bits,
                op: "seal".into(),
                bytes: size,
                ns_per_op: ring_s,
                gbps: size as f64 * 8.0 / ring_s,
                ..GcmRow::default()
            });
            for p in &paths {
                let ns = median(get(&format!("ours-seal-{}", p.name())).ns.clone());
                let is_best = *p == GcmPath::best();
                doc.gcm.push(GcmRow {
                    implementation: format!("ours-{}", p.name()),
                    key_bits: bits,
                    op: "seal".into(),
                    bytes: size,
                    ns_per_op: ns,
                    gbps: size as f64 * 8.0 / ns,
                    best_baseline: if is_best {
                        base.0.into()
                    } else {
                        String::new()
                    },
                    ours_over_best_baseline: if is_best { vs_best } else { 0.0 },
                });
            }
            let x32 = median(get("ours-x32").ns.clone()) / BATCH as f64;
            let batch = median(get("ours-batch").ns.clone()) / BATCH as f64;
            print!(" {x32:>9.1} {batch:>9.1}");
            row.push(("ours_seal_loop32_ns".into(), x32));
            row.push(("ours_seal_batch32_ns".into(), batch));
            #[cfg(ipsecmb)]
            {
                let i32_ = median(get("imb-x32").ns.clone()) / BATCH as f64;
                let r = paired_ratio(get("ours-batch"), get("imb-x32"));
                print!(" {i32_:>9.1} {r:>9.2}");
                row.push(("ipsec_mb_seal_batch32_ns".into(), i32_));
                row.push(("ratio_batch32_ours_over_ipsec_mb".into(), r));
            }
            println!();
            json.push(row);
        }
    }

    // The full ESP encap (tunnel mode over IPv4: outer header, ESP header, IV, padding,
    // trailer, ICV) at 1420 bytes of inner packet, against ipsec-mb's raw seal of 1420.
    if !quick {
        println!("\nESP encap, batch of {BATCH}, ns per packet, against the baselines' raw seal of the inner packet's size:");
        for (t, inner) in [
            ("aes128gcm16", 64),
            ("aes128gcm16", 1420),
            ("aes256gcm16", 64),
            ("aes256gcm16", 1420),
        ] {
            let transform: EspTransform = t.parse().unwrap();
            let keys = SaKeys::new(&vec![0x11; transform.encryption.key_material_len()], &[]);
            let cfg = SaConfig::tunnel(
                0x1234_5678,
                transform,
                keys,
                [192, 0, 2, 1].into(),
                [192, 0, 2, 2].into(),
            );
            let sa = OutboundSa::new(cfg).unwrap();
            let pkt = inner_packet(inner);
            let mut frames: Vec<Frame<Vec<u8>>> = (0..BATCH)
                .map(|_| Frame::with_packet(vec![0u8; 2048], 256, &pkt).unwrap())
                .collect();
            let mut verdicts = [Verdict::Forward; BATCH];
            let mut cases = vec![Case::new(
                "esp-encap",
                Box::new(|| {
                    for f in frames.iter_mut() {
                        // Back to the inner packet: only the header is read before sealing.
                        f.set_bounds(256, pkt.len());
                        f.data_mut()[..20].copy_from_slice(&pkt[..20]);
                    }
                    esp::encap_batch(&sa, &mut frames, &mut verdicts);
                    debug_assert!(verdicts.iter().all(|v| v.is_forward()));
                    black_box(&verdicts);
                }),
            )];
            #[cfg(ipsecmb)]
            {
                let key_len = transform.encryption.key_material_len() - 4;
                let mut m = imb::Imb::new(&vec![0x11; key_len]);
                let mut bufs = vec![vec![0u8; inner]; BATCH];
                let mut n = 0u64;
                cases.push(Case::new(
                    "imb-seal",
                    Box::new(move || {
                        for b in bufs.iter_mut() {
                            n += 1;
                            let mut iv = [0u8; 12];
                            iv[4..].copy_from_slice(&n.to_be_bytes());
                            black_box(m.seal(&iv, &AAD, b));
                        }
                    }),
                ));
            }
            {
                let k = ring_key(&vec![0x11; transform.encryption.key_material_len() - 4]);
                let mut bufs = vec![vec![0u8; inner]; BATCH];
                let mut n = 0u64;
                cases.push(Case::new(
                    "ring-seal",
                    Box::new(move || {
                        for b in bufs.iter_mut() {
                            n += 1;
                            let mut iv = [0u8; 12];
                            iv[4..].copy_from_slice(&n.to_be_bytes());
                            black_box(ring_seal(&k, iv, b));
                        }
                    }),
                ));
            }
            run_rounds(&mut cases);
            let encap = median(cases[0].ns.clone()) / BATCH as f64;
            let ring_case = cases.len() - 1;
            let ring_raw = median(cases[ring_case].ns.clone()) / BATCH as f64;
            // The best raw seal of the two baselines, and encap against it (paired rounds).
            #[allow(unused_mut)] // reassigned only when ipsec-mb is built
            let mut best_raw = ("ring", ring_case, ring_raw);
            let mut row = serde_json_row(transform.encryption.key_material_len() * 8 - 32, inner);
            row[0] = ("esp_encap".into(), 1.0);
            row.push(("esp_encap_ns".into(), encap));
            print!("  {t} {inner:>5} B: encap {encap:.1}");
            #[cfg(ipsecmb)]
            {
                let raw = median(cases[1].ns.clone()) / BATCH as f64;
                let r = paired_ratio(&cases[0], &cases[1]);
                print!(", ipsec-mb raw seal {raw:.1}, encap/ipsec-mb = {r:.2}");
                row.push(("ipsec_mb_seal_ns".into(), raw));
                row.push(("ratio_encap_over_ipsec_mb_seal".into(), r));
                if raw < ring_raw {
                    best_raw = ("ipsec-mb", 1, raw);
                }
            }
            let r_best = paired_ratio(&cases[0], &cases[best_raw.1]);
            println!(
                ", ring raw seal {ring_raw:.1}, encap/best ({}) = {r_best:.2}",
                best_raw.0
            );
            row.push(("ring_seal_ns".into(), ring_raw));
            row.push(("best_baseline_seal_ns".into(), best_raw.2));
            row.push(("ratio_encap_over_best_baseline_seal".into(), r_best));
            json.push(row);
            let bits = transform.encryption.key_material_len() * 8 - 32;
            doc.gcm.push(GcmRow {
                implementation: "ours-esp-encap".into(),
                key_bits: bits,
                op: "esp-encap".into(),
                bytes: inner,
                ns_per_op: encap,
                gbps: inner as f64 * 8.0 / encap,
                best_baseline: best_raw.0.into(),
                ours_over_best_baseline: r_best,
            });
            if bits == 128 && inner == 64 {
                let met = r_best <= 1.25;
                doc.goals.push(Goal {
                    id: "esp-encap-64-vs-best-seal".into(),
                    target: "full ESP encap at 64 B within 1.25x of the best raw AES-GCM seal (same process)".into(),
                    measured: format!(
                        "encap {encap:.1} ns against {} raw seal {:.1} ns: {r_best:.2}x (decap is measured by benches/esp.rs, not here)",
                        best_raw.0, best_raw.2
                    ),
                    met,
                    reason: if met {
                        String::new()
                    } else {
                        format!(
                            "{:.1} ns per packet above the raw seal go to headers, trailer and bookkeeping",
                            encap - best_raw.2
                        )
                    },
                });
            }
        }
    }

    if quick {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let body: Vec<String> = json
        .iter()
        .map(|row| {
            let fields: Vec<String> = row
                .iter()
                .map(|(k, v)| format!("\"{k}\": {v:.3}"))
                .collect();
            format!("    {{{}}}", fields.join(", "))
        })
        .collect();
    let out = format!(
        "{{\n  \"cpu\": \"{}\",\n  \"best_path\": \"{}\",\n  \"rows\": [\n{}\n  ]\n}}\n",
        flags.replace('"', "'"),
        GcmPath::best(),
        body.join(",\n")
    );
    let path = dir.join("gcm.json");
    std::fs::write(&path, out).unwrap();
    println!("\nwrote {}", path.display());
    let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    bench::vpnbench::output::write_doc(&doc, &results).unwrap();
}

fn serde_json_row(bits: usize, size: usize) -> Vec<(String, f64)> {
    vec![
        ("key_bits".into(), bits as f64),
        ("bytes".into(), size as f64),
    ]
}
