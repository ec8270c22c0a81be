//! End-to-end: two of our dataplanes on AF_XDP between network namespaces, driven by
//! `scripts/e2e.py` (ping, iperf3, tcpdump + scapy decryption, SIGKILL, MTU, two workers;
//! the NAT topology's self-check), `scripts/e2e_rekey.py` (SA lifetimes and rekeying),
//! `scripts/e2e_certs.py` (certificates and IKE fragmentation against strongSwan) and
//! `scripts/e2e_pq.py` (hybrid ML-KEM key exchange); `scripts/e2e_diagnose.py` (the common
//! IPsec failures provoked, `vpnctl diagnose --json` naming them); `scripts/e2e_keys.py`
//! (Wireshark keys); `scripts/e2e_vpnctl.py` (the operator CLI's JSON documents and exit
//! codes); `scripts/e2e_logs.py` (iked's log lines); `vpnbench e2e`'s short smoke run
//! (`scripts/vpnbench_e2e.py`, plain forwarding and ours with one worker);
//! `scripts/e2e_rfc9611.py` (RFC 9611 per-worker Child SAs).
//! Needs root and the scapy venv; skipped (loudly) without them unless VPN_REQUIRE_ROOT=1.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// One scenario at a time: each one saturates this machine's two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("VPN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    p.exists().then_some(p)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn scenario(case: &str) {
    run_script("e2e.py", case);
}

/// A case of `scripts/e2e_rekey.py` (issue 12: lifetimes, rekeying, PFS).
fn rekey_scenario(case: &str) {
    run_script("e2e_rekey.py", case);
}

/// A case of `scripts/e2e_certs.py` (issue 13: certificates, fragmentation).
fn certs_scenario(case: &str) {
    run_script("e2e_certs.py", case);
}

/// A case of `scripts/e2e_pq.py` (issue 13: RFC 9370 hybrid key exchange with ML-KEM).
fn pq_scenario(case: &str) {
    run_script("e2e_pq.py", case);
}

/// A case of `scripts/e2e_vpnctl.py` (issue 14: `vpnctl --json` against docs/schema/).
fn vpnctl_scenario(case: &str) {
    run_script("e2e_vpnctl.py", case);
}

/// A case of `scripts/e2e_diagnose.py` (issue 14: `vpnctl diagnose` on real failures).
fn diag_scenario(case: &str) {
    run_script("e2e_diagnose.py", case);
}

/// A case of `scripts/e2e_rfc9611.py` (issue 15: per-resource Child SAs, RFC 9611).
fn rfc9611_scenario(case: &str) {
    run_script("e2e_rfc9611.py", case);
}

/// A case of `scripts/e2e_metrics.py` (issue 14: the Prometheus endpoint).
fn metrics_scenario(case: &str) {
    run_script("e2e_metrics.py", case);
}

fn run_script(script: &str, case: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let required = std::env::var("VPN_REQUIRE_ROOT").as_deref() == Ok("1");
    let py = python();
    if !is_root() || py.is_none() {
        assert!(
            !required,
            "e2e {case}: needs root and the scapy venv (run scripts/install-deps.sh as root)"
        );
        eprintln!("SKIPPED e2e {case}: needs root and .venv (scripts/install-deps.sh)");
        return;
    }
    let dataplane = PathBuf::from(env!("CARGO_BIN_EXE_dataplane"));
    // vpnctl (package `control`) is built next to the dataplane by a workspace build.
    let vpnctl = dataplane.with_file_name("vpnctl");
    for (needs, bin) in [
        ("ring", "vpnctl"),
        ("iked", "iked"),
        ("strongswan", "iked"),
        ("dataplane-kill", "vpnctl"),
        ("rekey", "iked"),
        ("rekey", "vpnctl"),
        ("pfs", "iked"),
        ("pfs", "vpnctl"),
        ("certs", "iked"),
        ("certs", "vpnctl"),
        ("pq", "iked"),
        ("pq", "vpnctl"),
        ("vpnctl", "iked"),
        ("vpnctl", "vpnctl"),
        ("diag", "iked"),
        ("diag", "vpnctl"),
        ("metrics", "iked"),
        ("metrics", "vpnctl"),
        ("rfc9611", "iked"),
        ("rfc9611", "vpnctl"),
    ] {
        let path = dataplane.with_file_name(bin);
        if case.starts_with(needs) && !path.exists() {
            panic!(
                "e2e {case}: {} is missing: build the workspace (cargo build --workspace --bins)",
                path.display()
            );
        }
    }
    let out = Command::new(py.unwrap())
        .arg(root().join("scripts").join(script))
        .arg("--dataplane")
        .arg(&dataplane)
        .arg("--vpnctl")
        .arg(&vpnctl)
        .arg(case)
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "e2e scenario {case} failed:\n{text}");
    assert!(text.contains(&format!("{case}: ok")), "{text}");
    assert!(!text.contains("FAIL:"), "{text}");
}

#[test]
fn tunnel_ipv4() {
    scenario("tunnel-v4");
}

#[test]
fn tunnel_ipv6_outer() {
    scenario("outer-v6");
}

#[test]
fn tunnel_ipv6_inner() {
    scenario("inner-v6");
}

#[test]
fn tunnel_nat_t() {
    scenario("nat-t");
}

#[test]
fn tunnel_mtu_and_icmp() {
    scenario("mtu");
}

#[test]
fn two_workers_share_the_load() {
    scenario("two-workers");
}

/// SAs installed through the shared-memory ring while traffic flows; the controller
/// SIGKILLed mid-write and replaced (resync); the dataplane restarted under a live
/// controller (replay).
#[test]
fn sas_through_the_ring() {
    scenario("ring");
}

/// Our iked on both gateways negotiates the SAs (IKEv2, PSK, x25519) and installs them
/// into our dataplanes through their rings: raw ESP.
#[test]
fn iked_keys_the_tunnel() {
    scenario("iked");
}

/// The same with NAT-T forced: IKE moves to 4500 and ESP is UDP-encapsulated.
#[test]
fn iked_keys_the_tunnel_with_nat_t() {
    scenario("iked-nat-t");
}

/// Interop: our iked + dataplane against strongSwan charon (kernel-libipsec): x25519,
/// ecp256 and modp2048 with ESP aes128gcm16, aes256gcm16, aes256-sha256 and
/// chacha20poly1305, us as initiator and as responder; ping and TCP through each tunnel;
/// PSK mismatch and disjoint proposals fail with the right notify and a log line that says
/// what went wrong. Our side has `per_resource_sas = 2` (RFC 9611): charon ignores
/// SA_RESOURCE_INFO, so each tunnel is exactly one ordinary Child SA and nothing fails.
#[test]
fn strongswan_interop() {
    scenario("strongswan");
}

/// start_action = "trap": the first packet's acquire makes iked negotiate the tunnel.
#[test]
fn iked_trap_initiates_on_acquire() {
    scenario("iked-trap");
}

/// iked over IPv6 outer addresses (IKE and ESP on IPv6).
#[test]
fn iked_over_ipv6() {
    scenario("iked-v6");
}

/// Fail-closed across a dataplane crash: under a 0.02 s ping, gw-a's dataplane is SIGKILLed
/// and restarted; the pinned XDP program drops (and counts) the protected packets meanwhile,
/// and a capture on both WAN interfaces shows no clear-text packet between the protected
/// networks.
#[test]
fn dataplane_kill_stays_fail_closed() {
    scenario("dataplane-kill-failclosed");
}

/// ESP over IPv6 behind extension headers (destination options; hop-by-hop + routing +
/// destination options) is steered by the XDP program and decapsulated; a chain longer than
/// the program walks goes to the kernel, counted.
#[test]
fn ipv6_esp_behind_extension_headers() {
    scenario("ipv6-destopts");
}

/// The NAT topology itself (no dataplane): a fifth namespace masquerades gw-a's side with
/// random ports (nftables); a UDP datagram from gw-a:4500 reaches gw-b from the NAT's address
/// with another port, its answer comes back, and `conntrack -F` makes the next one use a new
/// port. IPv4 and IPv6.
#[test]
fn nat_topology_rewrites_ports() {
    scenario("nat-topology");
}

/// strongSwan with DPD against ours, both ways; charon restarted (its INITIAL_CONTACT makes
/// iked drop the IKE SA it forgot); charon killed (our DPD notices, traffic stays dropped).
#[test]
fn strongswan_dpd_and_restart() {
    scenario("strongswan-dpd");
}

// Fault scenarios (scripts/e2e_faults.py): iked on both gateways under a 0.02 s ping, a WAN
// capture asserting no clear text between the protected networks, loss within stated bounds.

#[test]
fn iked_kill_initiator_then_responder() {
    scenario("iked-kill");
}

#[test]
fn iked_dataplane_kill_replay() {
    scenario("iked-dataplane-kill");
}

#[test]
fn iked_down_then_up() {
    scenario("iked-down");
}

#[test]
fn iked_dpd_dead_peer() {
    scenario("iked-dpd");
}

#[test]
fn iked_init_flood_cookies() {
    scenario("iked-flood");
}

#[test]
fn iked_through_real_nat_rebinding() {
    scenario("iked-nat");
}

// Rekeying (scripts/e2e_rekey.py, issue 12): a 0.01 s ping that must lose nothing while the
// SAs are rekeyed, a WAN capture asserting no clear text, every process alive at the end.

/// ours <-> ours, 2 workers: child rekey_time 5 s and IKE rekey_time 15 s on both sides
/// (small rand_time: the sides' rekeys start close together and may collide), a 0.01 s ping
/// and an iperf3 TCP stream for 50 s: 0 pings lost, iperf3 retransmissions reported, at least
/// 7 Child SA and 2 IKE SA rekeys, and afterwards each dataplane holds exactly the current
/// pair of SAs, with SPIs matching across the sides.
#[test]
fn rekey_ours_under_load_loses_nothing() {
    rekey_scenario("rekey-ours");
}

/// Rekey collisions (RFC 7296 §2.8.1): both ikeds frozen (SIGSTOP) past their child rekey_time
/// (3 s, rand_time 0) and thawed together, six times, so both start the same rekey at once:
/// 0 pings lost, at least 3 collisions seen on the wire, exactly one pair of SAs left each side.
#[test]
fn rekey_collisions_lose_nothing() {
    rekey_scenario("rekey-collide");
}

/// strongSwan 5.9.8 initiates every rekey (its child rekey_time 10 s, IKE 20 s), without PFS:
/// 0 pings lost over at least 4 Child SA and 2 IKE SA rekeys, each completed in charon's log.
#[test]
fn rekey_strongswan_initiates() {
    rekey_scenario("rekey-strongswan-init");
}

/// The same with PFS (esp_proposals aes128gcm16-x25519 on both sides): every Child SA rekey
/// carries a KE payload.
#[test]
fn rekey_strongswan_initiates_with_pfs() {
    rekey_scenario("rekey-strongswan-init-pfs");
}

/// We initiate every rekey (child rekey_time 6 s, IKE 14 s; charon's 10 s / 20 s), without
/// PFS: 0 pings lost over at least 4 Child SA and 2 IKE SA rekeys, each completed in charon's
/// log.
#[test]
fn rekey_we_initiate_against_strongswan() {
    rekey_scenario("rekey-strongswan-resp");
}

/// The same with PFS.
#[test]
fn rekey_we_initiate_against_strongswan_with_pfs() {
    rekey_scenario("rekey-strongswan-resp-pfs");
}

/// A PFS mismatch with strongSwan, both ways (it requires a group on rekeys and we offer
/// none; we require one and it offers none): our log has the plain-words line naming
/// esp_proposals, the key exchange and the group; nothing leaks in clear.
#[test]
fn pfs_mismatch_is_explained() {
    rekey_scenario("pfs-mismatch");
}

/// Child rekey_packets 100 000: an iperf3 stream crosses it several times in 30 s; the
/// dataplane's soft event makes iked rekey, with 0 pings lost.
#[test]
fn rekey_on_packet_count() {
    rekey_scenario("rekey-packets");
}

// Certificates (scripts/e2e_certs.py, issue 13): a PKI made at run time with strongSwan's `pki`
// (root ECDSA P-384 -> intermediate RSA-3072 -> gateway certificates; an RSA-4096 chain;
// expired, not-yet-valid and revoked ones and a CRL), our iked on gw-a against charon on gw-b.

/// The test PKI and the swanctl layout, charon <-> charon (no iked): the certificates load
/// (`swanctl --list-certs`) and authenticate (RSA-PSS, Ed25519), and strongSwan 5.9.8 writes
/// the lines the other cases assert on (revoked, expired, not yet valid, an id its certificate
/// lacks, fragments).
#[test]
fn certs_test_pki_works_with_strongswan() {
    certs_scenario("certs-pki");
}

/// RSA-3072 (PSS), ECDSA P-256, P-384 and Ed25519 certificates, each in both roles, ids as DN,
/// FQDN and IP address: CERTREQ honoured both ways (charon received ours for the root CA and
/// sent its end-entity and intermediate certificates; it received ours and verified our
/// signature with the key type's RFC 7427 scheme); ping crosses.
#[test]
fn certs_each_key_type_both_roles_against_strongswan() {
    certs_scenario("certs-strongswan");
}

/// charon without RFC 7427 (signature_authentication = no): the classic AUTH methods, RSA (1),
/// ECDSA P-256 (9) and P-384 (10), the roles alternating.
#[test]
fn certs_classic_auth_methods_against_strongswan() {
    certs_scenario("certs-classic");
}

/// Revoked, expired and not-yet-valid certificates on each side: our refusal names the serial
/// or says "check the clocks"; charon's says "certificate was revoked on" / "certificate
/// invalid (valid from"; nothing is installed.
#[test]
fn certs_revoked_expired_notyet_refused_both_ways() {
    certs_scenario("certs-refused");
}

/// charon authenticates as an id its certificate does not hold: we refuse it, in both roles.
/// charon signs where we expect a pre-shared key: our refusal says so.
#[test]
fn certs_identity_not_in_certificate_refused() {
    certs_scenario("certs-id");
}

/// An RSA-4096 chain with fragment_size 576 on both sides: IKE_AUTH crosses in RFC 7383
/// fragments both ways, in both roles (charon's split/reassembled lines, SKF on the wire, no
/// datagram above 576 bytes).
#[test]
fn certs_fragmented_ike_auth_against_strongswan() {
    certs_scenario("certs-frag");
}

// Hybrid post-quantum key exchange (scripts/e2e_pq.py, issue 13).

/// ours <-> ours, x25519 + ML-KEM-768 in IKE and ESP proposals: one IKE_INTERMEDIATE, Child and
/// IKE SA rekeys through IKE_FOLLOWUP_KE, a 0.01 s ping loses nothing.
#[test]
fn pq_x25519_mlkem768_establish_and_rekey() {
    pq_scenario("pq-mlkem768");
}

/// The same with ecp384 + ML-KEM-1024, whose IKE_INTERMEDIATE travels in fragments.
#[test]
fn pq_ecp384_mlkem1024_establish_and_rekey() {
    pq_scenario("pq-mlkem1024");
}

/// `...-ke1_mlkem768-ke1_none` against strongSwan 5.9.8: a classical x25519 tunnel in both
/// roles, with a PFS Child SA rekey each time.
#[test]
fn pq_optional_mlkem_falls_back_with_strongswan() {
    pq_scenario("pq-strongswan");
}

// iked's log lines (scripts/e2e_logs.py, issue 14).

/// ours <-> ours at debug (gw-b in JSON): charon-style trace lines, a wrong PSK's failure once
/// per IKE SA on each side, IKEv1 datagrams logged 5 times then summed up, no PSK in a log.
#[test]
fn logs_one_line_per_event_json_and_trace() {
    run_script("e2e_logs.py", "log-lines");
}

/// strongSwan proposes AH: our refusal says ESP only and cites RFC 8221, in the log and in
/// `vpnctl list`.
#[test]
fn logs_ah_proposal_refused_in_plain_words() {
    run_script("e2e_logs.py", "ah-strongswan");
}

/// `vpnctl keys --wireshark` (issue 14): tshark, given only the exported esp_sa and
/// ikev2_decryption_table, decrypts a capture of IKE_AUTH (IDi, IDr, AUTH) and of the ESP
/// (the inner ICMP), for AES-GCM-128 and AES-CBC + HMAC-SHA-256 in IKE and ESP; the files
/// are mode 0600 and iked's log holds no key.
#[test]
fn keys_exported_for_wireshark_decrypt_ike_and_esp() {
    run_script("e2e_keys.py", "wireshark-keys");
}

// `vpnctl diagnose` (scripts/e2e_diagnose.py, issue 14): each failure provoked for real in the
// namespaces, diagnose run inside the gateway's namespace must name the finding and its
// evidence (docs/DIAGNOSE.md).

/// A working tunnel: no error finding on either side. Then a subnet no policy covers
/// (`no-policy`), and WAN MTU 1300 with DF pings whose ICMP errors are filtered
/// (`mtu-blackhole`).
#[test]
fn diagnose_healthy_no_policy_mtu_blackhole() {
    diag_scenario("diag-healthy");
}

/// ours <-> ours: disjoint IKE proposals, different PSKs, traffic selectors that do not
/// match, UDP 4500 dropped by nftables on the responder (`proposal-mismatch`,
/// `psk-mismatch`/`auth-rejected`, `ts-mismatch`, `natt-blocked`/`firewall-blocks-ike`).
#[test]
fn diagnose_negotiation_failures() {
    diag_scenario("diag-negotiation");
}

/// gw-a alone: a typo in iked's configuration at start and on reload, an nftables rule
/// dropping IKE, the route to the peer removed (`config-error`, `reload-failed`,
/// `firewall-blocks-ike`, `no-route`).
#[test]
fn diagnose_config_firewall_route() {
    diag_scenario("diag-local");
}

/// Against strongSwan: AH, IKEv1, PFS and lifetime mismatches, a certificate not valid
/// before 2040 (the peer's and ours) (`ah-proposed`, `ikev1-peer`, `pfs-mismatch`,
/// `lifetime-mismatch`, `cert-not-yet-valid`).
#[test]
fn diagnose_against_strongswan() {
    diag_scenario("diag-strongswan");
}

// Metrics (scripts/e2e_metrics.py, issue 14).

/// iked's `--metrics` endpoint scraped during traffic and parsed by prometheus_client:
/// counters monotonic, one established IKE SA, per-SA counters equal `vpnctl stats --json`
/// of the same counters snapshot.
#[test]
fn metrics_endpoint_during_traffic() {
    metrics_scenario("metrics");
}

// The operator CLI (scripts/e2e_vpnctl.py, issue 14).

/// ours <-> ours: every `vpnctl --json` document validates against docs/schema/ (jsonschema);
/// `list`'s SPIs are the dataplane's; `status` names the XDP mode and the workers; exit codes 3
/// (no iked), 1 (`up nosuch`), 2 (bad usage).
#[test]
fn vpnctl_json_documents_and_exit_codes() {
    vpnctl_scenario("vpnctl-json");
}

/// `vpnbench e2e --only plain,ours-1w --rounds 1 --seconds 1` (issue 15): the benchmark's
/// namespace driver builds its topology, runs plain forwarding and ours with one worker, and
/// `e2e.json` has a row for each with throughput and RTT samples measured (not their speed).
#[test]
fn vpnbench_e2e_smoke() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let required = std::env::var("VPN_REQUIRE_ROOT").as_deref() == Ok("1");
    if !is_root() || python().is_none() {
        assert!(!required, "vpnbench e2e smoke: needs root and the venv");
        eprintln!("SKIPPED vpnbench e2e smoke: needs root and .venv (scripts/install-deps.sh)");
        return;
    }
    let dataplane = PathBuf::from(env!("CARGO_BIN_EXE_dataplane"));
    let vpnbench = dataplane.with_file_name("vpnbench");
    assert!(
        vpnbench.exists(),
        "{} is missing: build the workspace (cargo build --workspace --bins)",
        vpnbench.display()
    );
    let out_dir = std::env::temp_dir().join(format!("vpnbench-e2e-smoke-{}", std::process::id()));
    let out = Command::new(&vpnbench)
        .arg("--out-dir")
        .arg(&out_dir)
        .args([
            "e2e",
            "--only",
            "plain,ours-1w",
            "--rounds",
            "1",
            "--seconds",
            "1",
        ])
        .arg("--dataplane")
        .arg(&dataplane)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", vpnbench.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "vpnbench e2e failed:\n{text}");
    let json = std::fs::read_to_string(out_dir.join("e2e.json")).expect("e2e.json written");
    let _ = std::fs::remove_dir_all(&out_dir);
    let doc: serde_json::Value = serde_json::from_str(&json).expect("e2e.json is JSON");
    let rows = doc["e2e"].as_array().expect("an e2e section");
    let mut configs: Vec<&str> = rows.iter().filter_map(|r| r["config"].as_str()).collect();
    configs.sort_unstable();
    assert_eq!(configs, ["ours-1w", "plain"], "{json}");
    for r in rows {
        for field in ["tcp_1_stream_gbps", "tcp_4_streams_gbps", "small_rx_pps"] {
            assert!(
                r[field].as_f64().unwrap_or(0.0) > 0.0,
                "{field} of {}: {json}",
                r["config"]
            );
        }
        // Small packets come from our AF_XDP generator, not iperf3.
        assert_eq!(r["small_method"], "xsk", "{json}");
        assert!(r["rtt_idle"]["samples"].as_u64().unwrap_or(0) > 0, "{json}");
        assert!(
            r["rtt_loaded"]["samples"].as_u64().unwrap_or(0) > 0,
            "{json}"
        );
    }
    assert_eq!(
        doc["e2e_median"].as_array().map(Vec::len),
        Some(2),
        "{json}"
    );
}

// vpnbench (issue 15).

/// `vpnbench afxdp --smoke`: the AF_XDP generator in client-a sends 1000 packets (1 kpps) at 64 and
/// 1420 B through our tunnel to the AF_XDP sink in client-b; every one must arrive exactly
/// once (no loss, no duplicate) and be in the latency histogram. Counts, not speed.
#[test]
fn vpnbench_afxdp_smoke_counts_exactly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let required = std::env::var("VPN_REQUIRE_ROOT").as_deref() == Ok("1");
    let Some(py) = python().filter(|_| is_root()) else {
        assert!(
            !required,
            "vpnbench afxdp smoke: needs root and the scapy venv"
        );
        eprintln!("SKIPPED vpnbench afxdp smoke: needs root and .venv (scripts/install-deps.sh)");
        return;
    };
    let dataplane = PathBuf::from(env!("CARGO_BIN_EXE_dataplane"));
    let vpnbench = dataplane.with_file_name("vpnbench");
    assert!(
        vpnbench.exists(),
        "{} is missing: build the workspace (cargo build --workspace --bins)",
        vpnbench.display()
    );
    let out_dir = std::env::temp_dir().join(format!("vpnbench-smoke-{}", std::process::id()));
    let out = Command::new(&vpnbench)
        .arg("--out-dir")
        .arg(&out_dir)
        .args(["afxdp", "--smoke", "--dataplane"])
        .arg(&dataplane)
        .env("VPN_PYTHON", &py)
        .output()
        .expect("run vpnbench");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "vpnbench afxdp --smoke failed:\n{text}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("afxdp.json")).unwrap())
            .unwrap();
    let _cleanup = std::fs::remove_dir_all(&out_dir);
    let rows = doc["afxdp"].as_array().expect("afxdp rows");
    assert_eq!(rows.len(), 2, "{doc}");
    for r in rows {
        assert_eq!(r["sent"], 1000, "{r}");
        assert_eq!(r["received"], 1000, "{r}");
        assert_eq!(r["latency"]["samples"], 1000, "{r}");
        assert_eq!(r["loss_ratio"], 0.0, "{r}");
    }
}

/// RFC 9611, ours <-> ours with 2 workers per gateway and `per_resource_sas = "auto"`: the
/// fallback Child SA plus one bound to each worker (same selectors), held by both dataplanes;
/// 8 TCP flows arrive and both per-worker outbound SAs of gw-a carry packets.
#[test]
fn rfc9611_per_worker_child_sas() {
    rfc9611_scenario("rfc9611-ours");
}
