//! Cross-check of the ESP engine against scapy (`scapy.layers.ipsec`), an implementation we
//! did not write, over every cipher × shape × NAT-T × ESN, near and across the 2^32
//! sequence-number boundary, with UDP, TCP and ICMP inner packets of several sizes.
//!
//! * A (we send, scapy receives): our `OutboundSa` seals the packet; scapy must decrypt it
//!   to our inner packet byte for byte. scapy also encrypts the same inner packet with the
//!   same sequence number and the IV our engine chose, and the ESP part (SPI to the end of
//!   the ICV) must be byte-identical to ours.
//! * B (scapy sends, we receive): scapy encrypts with an IV of its own choosing; our
//!   `InboundSa` must give back the inner packet byte for byte.
//!
//! All scapy work happens in one python process (`scripts/scapy_esp.py`). The python is
//! `$VPN_PYTHON`, else `<workspace>/.venv/bin/python`. Without it (or without scapy) the
//! test prints a loud SKIPPED notice and passes, unless `VPN_REQUIRE_SCAPY=1`, which makes
//! it fail instead; `scripts/install-deps.sh` sets the venv up.

mod common;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use common::*;
use dataplane::esp::{self, Frame, InboundSa, Mode, OutboundSa, SaConfig, Verdict};
use dataplane::wire::checksum;
use serde_json::{json, Value};

/// Our proposal name, scapy's `crypt_algo`, scapy's `auth_algo`.
const CIPHERS: &[(&str, &str, Option<&str>)] = &[
    ("aes128gcm16", "AES-GCM", None),
    ("aes256gcm16", "AES-GCM", None),
    ("chacha20poly1305", "CHACHA20-POLY1305", None),
    ("aes128-sha256", "AES-CBC", Some("SHA2-256-128")),
    ("aes256-sha384", "AES-CBC", Some("SHA2-384-192")),
    ("aes256-sha512", "AES-CBC", Some("SHA2-512-256")),
];

const PAYLOAD_SIZES: &[usize] = &[0, 1, 3, 100, 1400];

/// The sequence numbers each SA is tested at: a small one, and both sides of 2^32.
fn sequence_numbers(esn: bool) -> &'static [u64] {
    if esn {
        // 2^32 has low half 0: the ESN high half alone distinguishes it from a wrap.
        &[1, (1 << 32) - 1, 1 << 32, (1 << 32) + 1]
    } else {
        // Without ESN 2^32 - 1 is the last number an SA may use (RFC 4303 §3.3.3).
        &[7, (1 << 32) - 2, (1 << 32) - 1]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    Udp,
    Tcp,
    Icmp,
}

struct Case {
    shape: Shape,
    transform: &'static str,
    scapy_crypt: &'static str,
    scapy_auth: Option<&'static str>,
    nat_t: bool,
    esn: bool,
    seq: u64,
    l4: L4,
    payload_len: usize,
    tos: u8,
    cfg: SaConfig,
    inner: Vec<u8>,
}

impl Case {
    fn describe(&self) -> String {
        format!(
            "{} {:?} nat_t={} esn={} seq={:#x} spi={:#010x} inner={:?}/{}B tos={:#04x}",
            self.transform,
            self.shape,
            self.nat_t,
            self.esn,
            self.seq,
            self.cfg.spi,
            self.l4,
            self.payload_len,
            self.tos
        )
    }

    /// One job for `scripts/scapy_esp.py`.
    fn scapy_job(&self, id: &str, op: &str, iv: Option<&[u8]>, packet: &[u8]) -> Value {
        let (mode, tunnel_src, tunnel_dst) = match self.cfg.mode {
            Mode::Tunnel { local, remote } => ("tunnel", local.to_string(), remote.to_string()),
            Mode::Transport => ("transport", String::new(), String::new()),
        };
        json!({
            "id": id,
            "op": op,
            "crypt_algo": self.scapy_crypt,
            "crypt_key": hex(&self.cfg.keys.encryption),
            "auth_algo": self.scapy_auth,
            "auth_key": hex(&self.cfg.keys.integrity),
            "spi": self.cfg.spi,
            "seq": self.seq,
            "esn": self.esn,
            "mode": mode,
            "tunnel_src": tunnel_src,
            "tunnel_dst": tunnel_dst,
            "nat_t": self.nat_t,
            "iv": iv.map(hex),
            "packet": hex(packet),
        })
    }
}

fn payload(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(131).wrapping_add(seed * 17 + 5) % 251) as u8)
        .collect()
}

fn l4_checksum(v6: bool, proto: u8, seg: &[u8]) -> u16 {
    let (src, dst) = host_addrs(v6);
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_v4(s, d, proto, seg.len() as u16),
        (IpAddr::V6(s), IpAddr::V6(d)) => checksum::pseudo_v6(s, d, proto, seg.len() as u32),
        _ => unreachable!(),
    };
    checksum::finish(checksum::combine(pseudo, checksum::sum(seg)))
}

/// A TCP segment (PSH|ACK) from host A to host B, with a valid checksum.
fn tcp_packet(v6: bool, data: &[u8], tos: u8) -> Vec<u8> {
    let mut seg = vec![0u8; 20 + data.len()];
    seg[0..2].copy_from_slice(&40001u16.to_be_bytes());
    seg[2..4].copy_from_slice(&443u16.to_be_bytes());
    seg[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    seg[8..12].copy_from_slice(&0x0a0b_0c0du32.to_be_bytes());
    seg[12] = 5 << 4;
    seg[13] = 0x18;
    seg[14..16].copy_from_slice(&64240u16.to_be_bytes());
    seg[20..].copy_from_slice(data);
    let c = l4_checksum(v6, 6, &seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    ip_packet(v6, 6, &seg, tos)
}

/// An ICMP (v4) or ICMPv6 echo request from host A to host B, with a valid checksum.
fn icmp_packet(v6: bool, data: &[u8], tos: u8) -> Vec<u8> {
    let mut msg = vec![0u8; 8 + data.len()];
    msg[0] = if v6 { 128 } else { 8 };
    msg[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    msg[6..8].copy_from_slice(&1u16.to_be_bytes());
    msg[8..].copy_from_slice(data);
    let (proto, c) = if v6 {
        (58, l4_checksum(true, 58, &msg))
    } else {
        (1, checksum::checksum(&msg))
    };
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    ip_packet(v6, proto, &msg, tos)
}

fn build_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut sa_index = 0u32;
    for &(transform, scapy_crypt, scapy_auth) in CIPHERS {
        for &shape in SHAPES {
            for nat_t in [false, true] {
                for esn in [false, true] {
                    sa_index += 1;
                    let mut cfg = config(shape, transform, nat_t, esn);
                    // A distinct SPI and distinct keys for every SA.
                    cfg.spi = 0x0100_0000 + sa_index * 0x101;
                    cfg.keys = keys_for(cfg.transform, sa_index as u8);
                    let v6 = shape.inner_v6();
                    for (si, &seq) in sequence_numbers(esn).iter().enumerate() {
                        let mut inners = Vec::new();
                        for &len in PAYLOAD_SIZES {
                            inners.push((L4::Udp, len));
                        }
                        // TCP and ICMP at the small sequence number and at the boundary.
                        if si < 2 {
                            inners.extend([(L4::Tcp, 3), (L4::Tcp, 100), (L4::Icmp, 1)]);
                            inners.push((L4::Icmp, 100));
                        }
                        for (pi, (l4, len)) in inners.into_iter().enumerate() {
                            // Alternate best effort and DSCP EF with ECT(0).
                            let tos = if (pi + si) % 2 == 0 { 0 } else { 0xb8 | 2 };
                            let data = payload(len, cases.len());
                            let inner = match l4 {
                                L4::Udp => udp_packet(v6, &data, tos),
                                L4::Tcp => tcp_packet(v6, &data, tos),
                                L4::Icmp => icmp_packet(v6, &data, tos),
                            };
                            cases.push(Case {
                                shape,
                                transform,
                                scapy_crypt,
                                scapy_auth,
                                nat_t,
                                esn,
                                seq,
                                l4,
                                payload_len: len,
                                tos,
                                cfg: cfg.clone(),
                                inner,
                            });
                        }
                    }
                }
            }
        }
    }
    cases
}

// ---------------------------------------------------------------------------------------
// Packet helpers.

/// Where things are in an ESP packet this test produced or received: the outer IP header
/// length (no IPv6 extension headers here), whether UDP encapsulation is present, and where
/// ESP starts.
#[derive(Debug, Clone, Copy)]
struct Layout {
    v6: bool,
    ip_len: usize,
    udp: bool,
    esp_at: usize,
}

fn layout(pkt: &[u8]) -> Option<Layout> {
    let v6 = match pkt.first()? >> 4 {
        4 => false,
        6 => true,
        _ => return None,
    };
    let (ip_len, proto) = if v6 {
        (40, *pkt.get(6)?)
    } else {
        (usize::from(pkt[0] & 15) * 4, *pkt.get(9)?)
    };
    let udp = match proto {
        50 => false,
        17 => true,
        _ => return None,
    };
    let esp_at = ip_len + if udp { 8 } else { 0 };
    (pkt.len() >= esp_at + 8).then_some(Layout {
        v6,
        ip_len,
        udp,
        esp_at,
    })
}

/// The fields of an outer header that both implementations define the same way: version,
/// length, protocol, TTL / hop limit, addresses. (DSCP/ECN, DF, the IPv4 ID and the flow
/// label are per-implementation choices: scapy leaves its defaults, we copy DSCP/ECN and
/// DF from the inner packet per RFC 4301 §5.1.2.1 and RFC 6040.)
fn outer_fields(pkt: &[u8], l: Layout) -> Vec<u8> {
    if l.v6 {
        // version nibble, payload length, next header, hop limit, addresses
        let mut v = vec![pkt[0] >> 4];
        v.extend_from_slice(&pkt[4..40]);
        v
    } else {
        let mut v = vec![pkt[0] >> 4, pkt[0] & 15, pkt[2], pkt[3], pkt[8], pkt[9]];
        v.extend_from_slice(&pkt[12..20]);
        v
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn first_diff(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("first difference at byte {i}"),
        None if a.len() != b.len() => {
            format!("lengths differ ({} vs {})", a.len(), b.len())
        }
        None => "identical".to_string(),
    }
}

/// Our engine seals `c.inner` with sequence number `c.seq`.
fn our_encrypt(c: &Case) -> Result<Vec<u8>, String> {
    let out = OutboundSa::new(c.cfg.clone()).map_err(|e| e.to_string())?;
    out.set_last_seq(c.seq - 1);
    let mut f = frame(&c.inner);
    match esp::encap(&out, &mut f) {
        Verdict::Forward => Ok(f.data().to_vec()),
        v => Err(format!("our encap: {v:?}")),
    }
}

/// Our engine opens `wire` on a receiver that has seen everything up to `c.seq - 1`.
fn our_decrypt(c: &Case, wire: &[u8]) -> Result<Vec<u8>, String> {
    let (_, inb): (OutboundSa, InboundSa) = sa_pair(&c.cfg);
    inb.restore_replay_top(c.seq - 1);
    let mut f = Frame::with_packet(vec![0u8; BUF], 64, wire).ok_or("frame too small")?;
    match esp::decap(&inb, &mut f) {
        Verdict::Forward => Ok(f.data().to_vec()),
        v => Err(format!("our decap: {v:?}")),
    }
}

/// The IPv6 UDP checksum scapy cannot fill in (it always leaves 0): check ours is valid.
fn check_v6_udp_checksum(pkt: &[u8], l: Layout) -> Result<(), String> {
    let src: [u8; 16] = pkt[8..24].try_into().unwrap();
    let dst: [u8; 16] = pkt[24..40].try_into().unwrap();
    let seg = &pkt[l.ip_len..];
    let acc = checksum::combine(
        checksum::pseudo_v6(src.into(), dst.into(), 17, seg.len() as u32),
        checksum::sum(seg),
    );
    if seg[6..8] == [0, 0] || checksum::finish(acc) != 0 {
        return Err(format!(
            "our IPv6 NAT-T UDP checksum {:02x}{:02x} is not valid",
            seg[6], seg[7]
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Finding and running scapy.

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("dataplane sits in the workspace")
        .to_path_buf()
}

/// The python to use, or why there is none with a usable scapy.
fn find_python() -> Result<PathBuf, String> {
    let py = match std::env::var_os("VPN_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace().join(".venv/bin/python"),
    };
    if !py.exists() {
        return Err(format!("{} does not exist", py.display()));
    }
    let probe = "import sys, scapy, cryptography\n\
                 from scapy.layers.ipsec import SecurityAssociation\n\
                 v = tuple(int(x) for x in scapy.__version__.split('.')[:2])\n\
                 sys.exit(0 if v >= (2, 8) else 'scapy %s is older than 2.8' % scapy.__version__)";
    let out = Command::new(&py)
        .args(["-c", probe])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", py.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} cannot import scapy>=2.8 and cryptography: {}",
            py.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(py)
}

/// Run every job through `scripts/scapy_esp.py` in one process; results by job index.
fn run_scapy(py: &Path, jobs: &[Value]) -> Vec<Result<Vec<u8>, String>> {
    let script = workspace().join("scripts/scapy_esp.py");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let stem = format!("scapy_crosscheck_{}_{nanos}", std::process::id());
    let input = std::env::temp_dir().join(format!("{stem}_cases.json"));
    let output = std::env::temp_dir().join(format!("{stem}_results.json"));
    std::fs::write(&input, serde_json::to_vec(jobs).unwrap()).expect("write scapy cases");
    let run = Command::new(py)
        .arg(&script)
        .arg(&input)
        .arg(&output)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", py.display(), script.display()));
    assert!(
        run.status.success(),
        "{} failed ({}); cases kept in {}\nstderr:\n{}",
        script.display(),
        run.status,
        input.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let results: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&output).expect("read scapy results"))
            .expect("scapy results are JSON");
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
    assert_eq!(results.len(), jobs.len(), "one scapy result per case");
    results
        .iter()
        .zip(jobs)
        .map(|(r, j)| {
            assert_eq!(r["id"], j["id"], "scapy results out of order");
            if let Some(p) = r["packet"].as_str() {
                unhex(p).ok_or_else(|| format!("bad hex from scapy: {p}"))
            } else {
                Err(format!("scapy: {}", r["error"].as_str().unwrap_or("?")))
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The checks.

struct Failures(Vec<String>);

impl Failures {
    fn add(&mut self, id: &str, c: &Case, what: &str, ours: &[u8], theirs: &[u8]) {
        self.add_labelled(id, c, what, ("ours: ", ours), ("scapy:", theirs));
    }
    fn add_labelled(
        &mut self,
        id: &str,
        c: &Case,
        what: &str,
        (la, a): (&str, &[u8]),
        (lb, b): (&str, &[u8]),
    ) {
        self.0.push(format!(
            "[{id}] {}\n  {what} ({})\n  {la} {}\n  {lb} {}",
            c.describe(),
            first_diff(a, b),
            hex(a),
            hex(b)
        ));
    }
    fn error(&mut self, id: &str, c: &Case, err: &str) {
        self.0.push(format!(
            "[{id}] {}\n  {err}\n  inner: {}",
            c.describe(),
            hex(&c.inner)
        ));
    }
}

/// A: scapy's decryption of our packet, and scapy's encryption with our IV, against ours.
fn check_a(
    id: &str,
    c: &Case,
    ours: &[u8],
    scapy_dec: &Result<Vec<u8>, String>,
    scapy_enc: &Result<Vec<u8>, String>,
    fails: &mut Failures,
) {
    // scapy's decryption must give the inner packet back exactly. In transport mode scapy
    // rebuilds the IP header itself (protocol from the ESP next header, length, and for
    // IPv4 a recomputed header checksum) — all of which the original packet had right, so
    // the whole packet must still match byte for byte.
    match scapy_dec {
        Ok(p) if p == &c.inner => {}
        Ok(p) => fails.add_labelled(
            id,
            c,
            "scapy decrypted our packet to something else than our inner packet",
            ("inner:", &c.inner),
            ("scapy:", p),
        ),
        Err(e) => fails.error(
            id,
            c,
            &format!("scapy cannot decrypt ours: {e}\n  ours: {}", hex(ours)),
        ),
    }

    let theirs = match scapy_enc {
        Ok(p) => p,
        Err(e) => return fails.error(id, c, &format!("scapy cannot encrypt: {e}")),
    };
    let (Some(lo), Some(lt)) = (layout(ours), layout(theirs)) else {
        return fails.add(id, c, "unparsable ESP packet", ours, theirs);
    };
    if lo.udp != c.nat_t || lt.udp != c.nat_t || lo.v6 != lt.v6 {
        return fails.add(
            id,
            c,
            "outer family or UDP encapsulation differs",
            ours,
            theirs,
        );
    }
    // Outer / rewritten IP header.
    match c.cfg.mode {
        // Transport mode: both derive the header from the same inner header, changing only
        // protocol, length and the IPv4 checksum — it must be identical.
        Mode::Transport if ours[..lo.ip_len] != theirs[..lt.ip_len] => {
            fails.add(id, c, "transport-mode IP header differs", ours, theirs)
        }
        Mode::Tunnel { .. } if outer_fields(ours, lo) != outer_fields(theirs, lt) => fails.add(
            id,
            c,
            "outer header (version/length/protocol/TTL/addresses) differs",
            ours,
            theirs,
        ),
        _ => {}
    }
    // UDP header: ports and length must match. Over IPv4 both send checksum 0 (RFC 3948
    // §2.1); over IPv6 scapy leaves 0 (which RFC 8200 §8.1 forbids) while we compute it,
    // so there we check ours is valid instead of comparing.
    if c.nat_t {
        let (uo, ut) = (&ours[lo.ip_len..lo.esp_at], &theirs[lt.ip_len..lt.esp_at]);
        let same = if lo.v6 { uo[..6] == ut[..6] } else { uo == ut };
        if !same {
            fails.add(id, c, "NAT-T UDP header differs", ours, theirs);
        }
        if lo.v6 {
            if let Err(e) = check_v6_udp_checksum(ours, lo) {
                fails.error(id, c, &format!("{e}\n  ours: {}", hex(ours)));
            }
        }
    }
    // The ESP part, SPI to the end of the ICV: byte-exact with the same seq and IV.
    if ours[lo.esp_at..] != theirs[lt.esp_at..] {
        fails.add(
            id,
            c,
            "ESP (SPI..ICV) differs from scapy's with the same seq and IV",
            &ours[lo.esp_at..],
            &theirs[lt.esp_at..],
        );
    }
}

/// B: our decryption of scapy's packet must be the inner packet.
fn check_b(id: &str, c: &Case, scapy_enc: &Result<Vec<u8>, String>, fails: &mut Failures) {
    let wire = match scapy_enc {
        Ok(p) => p,
        Err(e) => return fails.error(id, c, &format!("scapy cannot encrypt: {e}")),
    };
    // Our receiver does not check the IPv6 UDP checksum of NAT-T packets (the ICV covers
    // everything it would), so scapy's zero checksum there is accepted.
    match our_decrypt(c, wire) {
        Ok(p) if p == c.inner => {}
        Ok(p) => fails.add_labelled(
            id,
            c,
            "we decrypted scapy's packet to something else than the inner packet",
            ("we got:  ", &p),
            ("expected:", &c.inner),
        ),
        Err(e) => fails.error(id, c, &format!("{e}\n  scapy's packet: {}", hex(wire))),
    }
}

#[test]
fn esp_matches_scapy_both_ways() {
    let py = match find_python() {
        Ok(p) => p,
        Err(why) => {
            if std::env::var("VPN_REQUIRE_SCAPY").as_deref() == Ok("1") {
                panic!(
                    "VPN_REQUIRE_SCAPY=1 but scapy is not usable: {why}. \
                     Run scripts/install-deps.sh (or point VPN_PYTHON at a python with \
                     scapy>=2.8 and cryptography)."
                );
            }
            eprintln!(
                "\n************************************************************************\n\
                 SKIPPED: scapy not installed -- the scapy ESP cross-check did NOT run.\n\
                 ({why})\n\
                 Run scripts/install-deps.sh, or set VPN_PYTHON to a python with scapy>=2.8\n\
                 and cryptography; set VPN_REQUIRE_SCAPY=1 to make this a failure.\n\
                 ************************************************************************\n"
            );
            return;
        }
    };
    let started = Instant::now();
    let cases = build_cases();
    let mut fails = Failures(Vec::new());

    // Our side of A, and the scapy jobs of both directions.
    let mut ours = Vec::with_capacity(cases.len());
    let mut jobs = Vec::with_capacity(cases.len() * 3);
    for (i, c) in cases.iter().enumerate() {
        let wire = match our_encrypt(c) {
            Ok(w) => w,
            Err(e) => {
                fails.error(&format!("A{i}"), c, &e);
                Vec::new()
            }
        };
        let iv_len = c.cfg.transform.encryption.iv_len();
        let iv = layout(&wire)
            .and_then(|l| wire.get(l.esp_at + 8..l.esp_at + 8 + iv_len))
            .map(<[u8]>::to_vec);
        if !wire.is_empty() && iv.is_none() {
            fails.error(
                &format!("A{i}"),
                c,
                &format!("cannot find the IV in {}", hex(&wire)),
            );
        }
        jobs.push(c.scapy_job(&format!("A{i}-dec"), "decrypt", None, &wire));
        // With no IV (our encryption failed) scapy picks one; the comparison then fails
        // anyway, and the failure above says why.
        jobs.push(c.scapy_job(&format!("A{i}-enc"), "encrypt", iv.as_deref(), &c.inner));
        jobs.push(c.scapy_job(&format!("B{i}-enc"), "encrypt", None, &c.inner));
        ours.push(wire);
    }

    let results = run_scapy(&py, &jobs);

    let (mut checked_a, mut checked_b) = (0usize, 0usize);
    for (i, c) in cases.iter().enumerate() {
        let r = &results[3 * i..3 * i + 3];
        if !ours[i].is_empty() {
            check_a(&format!("A{i}"), c, &ours[i], &r[0], &r[1], &mut fails);
            checked_a += 1;
        }
        check_b(&format!("B{i}"), c, &r[2], &mut fails);
        checked_b += 1;
    }

    eprintln!(
        "scapy cross-check ({}): {} cases; A (ours -> scapy decrypt + byte-exact scapy \
         encrypt): {checked_a}; B (scapy -> ours): {checked_b}; {} scapy operations; \
         {:.1?} in total",
        py.display(),
        cases.len(),
        jobs.len(),
        started.elapsed(),
    );
    if !fails.0.is_empty() {
        let shown = fails.0.len().min(25);
        panic!(
            "{} of the scapy cross-checks failed (first {shown} shown):\n\n{}",
            fails.0.len(),
            fails.0[..shown].join("\n\n")
        );
    }
    assert!(
        checked_a >= 2000 && checked_b >= 2000,
        "too few cases checked: A {checked_a}, B {checked_b}"
    );
}
