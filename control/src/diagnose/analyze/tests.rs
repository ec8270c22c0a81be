//! One made-up snapshot per finding id, and the catalog against docs/DIAGNOSE.md.

use super::*;
use crate::api::{ChildReport, DropReasonStats, ReloadOutcome, SaStats, SendError, WorkerStats};
use crate::diagnose::probe::{CertProbe, ConfigConn, FirewallRule, InterfaceInfo, RouteProbe};

const NOW: u64 = 1_767_225_600_000;

fn ids(f: &[Finding]) -> Vec<&str> {
    f.iter().map(|f| f.id.as_str()).collect()
}

fn only<'a>(f: &'a [Finding], id: &str) -> &'a Finding {
    assert_eq!(ids(f), vec![id], "{f:#?}");
    let x = &f[0];
    assert_eq!(x.doc, format!("docs/DIAGNOSE.md#{id}"));
    assert_eq!(x.severity, catalog::kind(id).unwrap().severity);
    assert!(!x.summary.is_empty() && !x.remedy.is_empty());
    x
}

fn num(f: &Finding, k: &str) -> f64 {
    f.evidence
        .get(k)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{k} not a number in {:#?}", f.evidence))
}

fn text<'a>(f: &'a Finding, k: &str) -> &'a str {
    f.evidence
        .get(k)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{k} not a string in {:#?}", f.evidence))
}

fn conn(name: &str) -> ConnReport {
    ConnReport {
        name: name.into(),
        state: "down".into(),
        local_addrs: vec!["192.0.2.1".into()],
        remote_addrs: vec!["192.0.2.2".into()],
        ..ConnReport::default()
    }
}

fn established(c: &mut ConnReport, age_s: f64, last_heard_s: f64) {
    c.state = "established".into();
    c.ike_sas.push(IkeSaReport {
        state: "established".into(),
        local: "192.0.2.1:500".into(),
        remote: "192.0.2.2:500".into(),
        age_s,
        established_s: Some(age_s),
        last_heard_s: Some(last_heard_s),
        ..IkeSaReport::default()
    });
}

fn failure(at_s_ago: u64, id: &str, msg: &str, ev: &[(&str, &str)]) -> FailureRecord {
    FailureRecord {
        at_unix_ms: NOW - at_s_ago * 1000,
        finding: id.into(),
        message: msg.into(),
        evidence: ev
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn with_conns(conns: Vec<ConnReport>) -> DiagnoseInput {
    DiagnoseInput {
        now_unix_ms: NOW,
        iked: Some(IkedStatus::default()),
        list: Some(ListReport {
            now_unix_ms: NOW,
            connections: conns,
        }),
        window_s: 2.0,
        ..DiagnoseInput::default()
    }
}

/// A failure as classify makes it, through the same path the daemon takes.
fn classified(at_s_ago: u64, e: &crate::ike::sa::IkeError) -> FailureRecord {
    let (id, evidence) = crate::diagnose::classify(e);
    FailureRecord {
        at_unix_ms: NOW - at_s_ago * 1000,
        finding: id.into(),
        message: e.to_string(),
        evidence,
    }
}

fn one_failure(f: FailureRecord) -> Vec<Finding> {
    let mut c = conn("gw-b");
    c.failures.push(f);
    analyze(&with_conns(vec![c]))
}

fn stats(drops: &[(&str, u64)], sas: &[(&str, &str, u64)]) -> StatsReport {
    StatsReport {
        drop_reasons: drops
            .iter()
            .map(|(r, n)| DropReasonStats {
                reason: r.to_string(),
                scope: "worker".into(),
                total: *n,
                meaning: String::new(),
            })
            .collect(),
        sas: sas
            .iter()
            .map(|(d, spi, n)| SaStats {
                direction: d.to_string(),
                spi: spi.to_string(),
                packets: *n,
                ..SaStats::default()
            })
            .collect(),
        workers: vec![WorkerStats::default()],
        ..StatsReport::default()
    }
}

#[test]
fn a_healthy_snapshot_has_no_finding() {
    let mut c = conn("gw-b");
    established(&mut c, 100.0, 3.0);
    c.failures.push(failure(500, "ike-unanswered", "old", &[]));
    c.children.push(ChildReport {
        name: "net".into(),
        sas: vec![ChildSaReport {
            in_spi: "c0000001".into(),
            out_spi: "c0000002".into(),
            in_packets_60s: 100,
            out_packets_60s: 100,
            ..ChildSaReport::default()
        }],
        ..ChildReport::default()
    });
    let mut i = with_conns(vec![c]);
    i.stats_before = Some(stats(&[("no_policy", 5)], &[]));
    i.stats_after = Some(stats(&[("no_policy", 5)], &[]));
    assert_eq!(
        analyze(&i),
        vec![],
        "an old failure before the IKE SA is resolved"
    );
}

#[test]
fn proposal_mismatch() {
    let e = crate::ike::sa::IkeError::NoIkeProposal {
        ours: "aes128gcm16-prfsha256-x25519".into(),
        theirs: "aes256-sha256-prfsha256-modp2048".into(),
    };
    let mut c = conn("gw-b");
    c.failures.push(classified(30, &e));
    c.failures.push(classified(20, &e));
    c.failures.push(classified(10, &e));
    let f = analyze(&with_conns(vec![c]));
    let x = only(&f, "proposal-mismatch");
    assert_eq!(x.conn.as_deref(), Some("gw-b"));
    assert_eq!(num(x, "count"), 3.0, "three failures, one finding");
    assert_eq!(num(x, "first_at_unix_ms"), (NOW - 30_000) as f64);
    assert_eq!(num(x, "last_at_unix_ms"), (NOW - 10_000) as f64);
    assert_eq!(text(x, "side"), "we");
    assert_eq!(text(x, "exchange"), "IKE_SA_INIT");
    assert_eq!(text(x, "theirs"), "aes256-sha256-prfsha256-modp2048");
    assert!(x.summary.contains("3 times"), "{}", x.summary);
    assert!(
        x.summary.contains("aes256-sha256-prfsha256-modp2048"),
        "{}",
        x.summary
    );
}

#[test]
fn psk_mismatch() {
    let f = one_failure(classified(
        5,
        &crate::ike::sa::IkeError::PeerAuthInvalid {
            peer_id: "gw-b.example".into(),
            peer_is_initiator: true,
        },
    ));
    let x = only(&f, "psk-mismatch");
    assert_eq!(text(x, "peer_id"), "gw-b.example");
    assert_eq!(text(x, "peer_role"), "initiator");
}

#[test]
fn auth_rejected() {
    let f = one_failure(classified(
        5,
        &crate::ike::sa::IkeError::PeerRejectedAuth {
            our_id: "gw-a.example".into(),
            peer_is_initiator: false,
        },
    ));
    let x = only(&f, "auth-rejected");
    assert_eq!(text(x, "our_id"), "gw-a.example");
    assert_eq!(text(x, "notify"), "AUTHENTICATION_FAILED");
}

#[test]
fn auth_method_mismatch() {
    let f = one_failure(classified(
        5,
        &crate::ike::sa::IkeError::PeerUsedPsk {
            peer_is_initiator: true,
        },
    ));
    let x = only(&f, "auth-method-mismatch");
    assert_eq!((text(x, "method"), text(x, "expected")), ("psk", "pubkey"));
}

#[test]
fn identity_mismatch() {
    let f = one_failure(classified(
        5,
        &crate::ike::sa::IkeError::PeerIdMismatch {
            got: "gw-c".into(),
            want: "gw-b".into(),
            peer_is_initiator: true,
        },
    ));
    let x = only(&f, "identity-mismatch");
    assert_eq!((text(x, "got"), text(x, "want")), ("gw-c", "gw-b"));
}

fn peer_cert(error: crate::pki::CertError) -> crate::ike::sa::IkeError {
    crate::ike::sa::IkeError::PeerCert {
        error: Box::new(error),
        peer_is_initiator: false,
    }
}

#[test]
fn cert_untrusted() {
    let f = one_failure(classified(
        5,
        &peer_cert(crate::pki::CertError::UntrustedIssuer {
            subject: "CN=gw-b".into(),
            issuer: "CN=Other CA".into(),
        }),
    ));
    let x = only(&f, "cert-untrusted");
    assert_eq!(text(x, "reason"), "untrusted issuer");
    assert_eq!(text(x, "issuer"), "CN=Other CA");
}

#[test]
fn cert_revoked() {
    let f = one_failure(classified(
        5,
        &peer_cert(crate::pki::CertError::Revoked {
            subject: "CN=gw-b".into(),
            serial: "0a".into(),
            issuer: "CN=CA".into(),
            date: "2025-01-01 00:00:00 UTC".into(),
            reason: "keyCompromise".into(),
        }),
    ));
    let x = only(&f, "cert-revoked");
    assert_eq!(text(x, "serial"), "0a");
}

#[test]
fn cert_expired_of_the_peer_and_ours() {
    let f = one_failure(classified(
        5,
        &peer_cert(crate::pki::CertError::Expired {
            subject: "CN=gw-b".into(),
            not_before: "2024-01-01 00:00:00 UTC".into(),
            not_after: "2025-01-01 00:00:00 UTC".into(),
            now: "2025-01-02 00:00:00 UTC".into(),
            off_by: "1 days".into(),
        }),
    ));
    let x = only(&f, "cert-expired");
    assert_eq!(num(x, "skew_s"), 86_400.0);
    assert_eq!(text(x, "whose"), "peer");

    let mut i = with_conns(vec![]);
    i.system = Some(SystemSnapshot {
        clock_unix_s: 1_800_000_000,
        certs: vec![CertProbe {
            conn: "gw-a".into(),
            file: "/etc/iked/x509/a.pem".into(),
            subject: "CN=gw-a".into(),
            not_before_unix_s: 1_700_000_000,
            not_after_unix_s: 1_799_999_000,
            skew_s: 300,
        }],
        ..SystemSnapshot::default()
    });
    let f = analyze(&i);
    let x = only(&f, "cert-expired");
    assert_eq!(text(x, "whose"), "ours");
    assert_eq!(num(x, "skew_s"), 1000.0);
    assert_eq!(text(x, "file"), "/etc/iked/x509/a.pem");
}

#[test]
fn cert_not_yet_valid_of_ours() {
    let mut i = with_conns(vec![]);
    i.system = Some(SystemSnapshot {
        clock_unix_s: 1_700_000_000,
        certs: vec![CertProbe {
            conn: "gw-a".into(),
            file: "a.pem".into(),
            subject: "CN=gw-a".into(),
            not_before_unix_s: 1_700_086_400,
            not_after_unix_s: 1_800_000_000,
            skew_s: 300,
        }],
        ..SystemSnapshot::default()
    });
    let f = analyze(&i);
    let x = only(&f, "cert-not-yet-valid");
    assert_eq!(x.conn.as_deref(), Some("gw-a"));
    assert_eq!(num(x, "skew_s"), 86_400.0);
    assert_eq!(text(x, "clock"), "2023-11-14 22:13:20 UTC");
    // Within the skew allowance: nothing.
    if let Some(s) = &mut i.system {
        s.certs[0].not_before_unix_s = 1_700_000_200;
    }
    assert_eq!(analyze(&i), vec![]);
}

#[test]
fn local_cert_expiring() {
    let mut i = with_conns(vec![]);
    i.system = Some(SystemSnapshot {
        clock_unix_s: 1_700_000_000,
        certs: vec![CertProbe {
            conn: "gw-a".into(),
            file: "a.pem".into(),
            subject: "CN=gw-a".into(),
            not_before_unix_s: 1_600_000_000,
            not_after_unix_s: 1_700_000_000 + 10 * 86_400,
            skew_s: 300,
        }],
        ..SystemSnapshot::default()
    });
    let f = analyze(&i);
    let x = only(&f, "local-cert-expiring");
    assert_eq!(num(x, "expires_in_s"), 864_000.0);
    assert!(x.summary.contains("10 days"), "{}", x.summary);
}

#[test]
fn ike_unanswered() {
    let f = one_failure(classified(
        5,
        &crate::ike::sa::IkeError::Timeout {
            what: "IKE_SA_INIT",
            tries: 5,
            peer: "192.0.2.2:500".parse().unwrap(),
        },
    ));
    let x = only(&f, "ike-unanswered");
    assert_eq!(num(x, "tries"), 5.0);
    assert_eq!(num(x, "port"), 500.0);
    assert_eq!(text(x, "peer"), "192.0.2.2:500");
    assert_eq!(text(x, "direction"), "out");
}

#[test]
fn natt_blocked() {
    let f = one_failure(classified(
        5,
        &crate::ike::sa::IkeError::Timeout {
            what: "IKE_AUTH",
            tries: 3,
            peer: "192.0.2.2:4500".parse().unwrap(),
        },
    ));
    let x = only(&f, "natt-blocked");
    assert_eq!(num(x, "port"), 4500.0);
    assert_eq!(text(x, "exchange"), "IKE_AUTH");
}

fn child(in_60: u64, out_60: u64) -> ChildReport {
    ChildReport {
        name: "net".into(),
        sas: vec![ChildSaReport {
            in_spi: "0xc0000001".into(),
            out_spi: "0xc0000002".into(),
            in_packets_60s: in_60,
            out_packets_60s: out_60,
            ..ChildSaReport::default()
        }],
        ..ChildReport::default()
    }
}

#[test]
fn esp_blocked_from_iked_samples() {
    let mut c = conn("gw-b");
    established(&mut c, 300.0, 4.0);
    c.children.push(child(0, 12_431));
    let f = analyze(&with_conns(vec![c]));
    let x = only(&f, "esp-blocked");
    assert_eq!(num(x, "encrypted_packets_window"), 12_431.0);
    assert_eq!(num(x, "decrypted_packets_window"), 0.0);
    assert_eq!(num(x, "window_s"), 60.0);
    assert_eq!(num(x, "ike_last_heard_s"), 4.0);
    assert_eq!(text(x, "peer"), "192.0.2.2");
    assert_eq!(text(x, "ports"), "IP protocol 50");
    assert!(
        x.summary
            .starts_with("gw-b: 12,431 packets encrypted in the last 60 s and 0 decrypted"),
        "{}",
        x.summary
    );
    assert!(
        x.remedy.contains("between 192.0.2.1 and 192.0.2.2"),
        "{}",
        x.remedy
    );
}

#[test]
fn esp_blocked_from_counter_snapshots() {
    let mut c = conn("gw-b");
    established(&mut c, 300.0, 4.0);
    c.ike_sas[0].nat = true;
    c.children.push(child(0, 0));
    let mut i = with_conns(vec![c]);
    i.stats_before = Some(stats(
        &[],
        &[("out", "c0000002", 100), ("in", "c0000001", 7)],
    ));
    i.stats_after = Some(stats(
        &[],
        &[("out", "c0000002", 140), ("in", "c0000001", 7)],
    ));
    let f = analyze(&i);
    let x = only(&f, "esp-blocked");
    assert_eq!(num(x, "encrypted_packets_window"), 40.0);
    assert_eq!(num(x, "window_s"), 2.0);
    assert_eq!(text(x, "ports"), "UDP 4500");
    // Replies coming back: nothing.
    i.stats_after = Some(stats(
        &[],
        &[("out", "c0000002", 140), ("in", "c0000001", 9)],
    ));
    assert_eq!(analyze(&i), vec![]);
}

#[test]
fn firewall_blocks_ike() {
    let mut i = with_conns(vec![]);
    i.system = Some(SystemSnapshot {
        firewall: vec![FirewallRule {
            table: "inet filter".into(),
            chain: "input".into(),
            hook: Some("input".into()),
            protocol: "udp".into(),
            port: Some(500),
            verdict: "drop".into(),
            rule: "udp dport 500 drop".into(),
            handle: Some(7),
        }],
        ..SystemSnapshot::default()
    });
    let f = analyze(&i);
    let x = only(&f, "firewall-blocks-ike");
    assert_eq!(text(x, "rule"), "udp dport 500 drop");
    assert_eq!(text(x, "table"), "inet filter");
    assert_eq!(text(x, "chain"), "input");
    assert_eq!(num(x, "port"), 500.0);
    assert_eq!(num(x, "handle"), 7.0);
}

#[test]
fn ts_mismatch() {
    let f = one_failure(classified(
        5,
        &crate::ike::sa::IkeError::TsUnacceptable {
            proposed: "10.9.0.0/16 === 10.2.0.0/16".into(),
            allowed: "10.1.0.0/16 === 10.2.0.0/16".into(),
        },
    ));
    let x = only(&f, "ts-mismatch");
    assert_eq!(text(x, "side"), "we");
    assert_eq!(text(x, "theirs"), "10.9.0.0/16 === 10.2.0.0/16");
}

#[test]
fn no_policy() {
    let mut i = with_conns(vec![]);
    i.stats_before = Some(stats(&[("no_policy", 10)], &[]));
    i.stats_after = Some(stats(&[("no_policy", 25)], &[]));
    let f = analyze(&i);
    let x = only(&f, "no-policy");
    assert_eq!(num(x, "no_policy_drops"), 15.0);
    assert_eq!(num(x, "no_policy_total"), 25.0);
    assert_eq!(num(x, "window_s"), 2.0);
}

#[test]
fn lifetime_mismatch_shows_though_the_tunnel_is_up() {
    let mut c = conn("gw-b");
    established(&mut c, 30.0, 1.0);
    c.failures.push(failure(
        100,
        "lifetime-mismatch",
        "the peer deleted the Child SA after 60 s instead of rekeying it",
        &[
            ("child", "net"),
            ("our_rekey_s", "3600"),
            ("our_life_s", "3960"),
            ("peer_interval_s", "60"),
        ],
    ));
    let f = analyze(&with_conns(vec![c]));
    let x = only(&f, "lifetime-mismatch");
    assert_eq!(num(x, "our_rekey_s"), 3600.0);
    assert_eq!(num(x, "peer_interval_s"), 60.0);
    assert!(x.summary.contains("after 60 s"), "{}", x.summary);
}

#[test]
fn pfs_mismatch_shows_though_the_tunnel_is_up() {
    let mut c = conn("gw-b");
    established(&mut c, 30.0, 1.0);
    c.failures.push(classified(
        100,
        &crate::ike::sa::IkeError::PfsPeerWants {
            child: "net".into(),
            theirs: "x25519".into(),
            first: "x25519".into(),
            ours: "no key exchange group".into(),
        },
    ));
    let f = analyze(&with_conns(vec![c]));
    let x = only(&f, "pfs-mismatch");
    assert_eq!(text(x, "wants_pfs"), "peer");
    assert_eq!(text(x, "child"), "net");
}

#[test]
fn mtu_blackhole() {
    let mut c = conn("gw-b");
    established(&mut c, 300.0, 2.0);
    let mut i = with_conns(vec![c]);
    i.dataplane = Some(DataplaneStatus {
        running: true,
        outside: Some("wan0".into()),
        inside: Some("lan0".into()),
        ..DataplaneStatus::default()
    });
    i.system = Some(SystemSnapshot {
        routes: vec![RouteProbe {
            peer: "192.0.2.2".into(),
            dev: Some("wan0".into()),
            ..RouteProbe::default()
        }],
        interfaces: vec![
            InterfaceInfo {
                name: "wan0".into(),
                mtu: 1280,
                xdp: Some("generic".into()),
                up: true,
            },
            InterfaceInfo {
                name: "lan0".into(),
                mtu: 1500,
                xdp: Some("generic".into()),
                up: true,
            },
        ],
        ..SystemSnapshot::default()
    });
    i.stats_before = Some(stats(
        &[("too_big_icmp_sent", 3), ("too_big_df_clear", 0)],
        &[],
    ));
    i.stats_after = Some(stats(
        &[("too_big_icmp_sent", 9), ("too_big_df_clear", 0)],
        &[],
    ));
    let f = analyze(&i);
    let x = only(&f, "mtu-blackhole");
    assert_eq!(num(x, "too_big_drops"), 6.0);
    assert_eq!(num(x, "icmp_sent"), 6.0);
    assert_eq!(text(x, "wan_interface"), "wan0");
    assert_eq!(num(x, "wan_mtu"), 1280.0);
    assert_eq!(num(x, "inside_mtu"), 1500.0);
    assert_eq!(num(x, "esp_overhead"), 57.0);
    assert_eq!(num(x, "max_inner"), 1223.0);
    // One packet too big (a sender that then lowers its size) is path MTU discovery working.
    i.stats_after = Some(stats(&[("too_big_icmp_sent", 4)], &[]));
    assert_eq!(analyze(&i), vec![]);
}

#[test]
fn config_error_with_iked_down() {
    let i = DiagnoseInput {
        now_unix_ms: NOW,
        socket: "/run/iked.sock".into(),
        iked_error: Some("connection refused".into()),
        config: Some(Err(ConfigProblem {
            file: "/etc/iked.toml".into(),
            line: 7,
            field: "connections.gw-b.proposal".into(),
            message: "unknown field `proposal`, expected one of ...".into(),
        })),
        ..DiagnoseInput::default()
    };
    let f = analyze(&i);
    assert_eq!(ids(&f), vec!["config-error", "iked-down"]);
    let x = &f[0];
    assert_eq!(text(x, "file"), "/etc/iked.toml");
    assert_eq!(num(x, "line"), 7.0);
    assert_eq!(text(x, "field"), "connections.gw-b.proposal");
    assert!(x.summary.contains("/etc/iked.toml:7"), "{}", x.summary);
    assert_eq!(text(&f[1], "socket"), "/run/iked.sock");
}

#[test]
fn iked_down() {
    let i = DiagnoseInput {
        now_unix_ms: NOW,
        socket: "/run/iked.sock".into(),
        iked_error: Some("No such file or directory".into()),
        config: Some(Ok(ConfigSummary::default())),
        ..DiagnoseInput::default()
    };
    let f = analyze(&i);
    let x = only(&f, "iked-down");
    assert_eq!(text(x, "error"), "No such file or directory");
}

#[test]
fn reload_failed() {
    let mut i = with_conns(vec![]);
    if let Some(s) = &mut i.iked {
        s.last_reload = Some(ReloadOutcome {
            at_unix_ms: NOW - 20_000,
            ok: false,
            message: "/etc/iked.toml:3: connections.gw-b.remote_addrs: not an address".into(),
        });
    }
    let f = analyze(&i);
    let x = only(&f, "reload-failed");
    assert_eq!(num(x, "line"), 3.0);
    assert_eq!(text(x, "field"), "connections.gw-b.remote_addrs");
    assert!(x.summary.contains("20 s ago"), "{}", x.summary);
}

#[test]
fn unclassified_failure() {
    let f = one_failure(classified(
        5,
        &crate::ike::sa::IkeError::Malformed {
            what: "no SA payload".into(),
        },
    ));
    let x = only(&f, "unclassified-failure");
    assert_eq!(text(x, "kind"), "Malformed");
    // An id this build does not know (a newer daemon) is reported as unclassified too.
    let f = one_failure(failure(5, "some-future-id", "odd", &[]));
    only(&f, "unclassified-failure");
}

#[test]
fn no_route_from_the_probe_hides_the_timeouts_it_causes() {
    let mut c = conn("gw-b");
    c.failures.push(classified(
        5,
        &crate::ike::sa::IkeError::Timeout {
            what: "IKE_SA_INIT",
            tries: 5,
            peer: "192.0.2.2:500".parse().unwrap(),
        },
    ));
    let mut i = with_conns(vec![c]);
    i.system = Some(SystemSnapshot {
        routes: vec![RouteProbe {
            peer: "192.0.2.2".into(),
            error: Some("Network is unreachable".into()),
            ..RouteProbe::default()
        }],
        ..SystemSnapshot::default()
    });
    let f = analyze(&i);
    let x = only(&f, "no-route");
    assert_eq!(x.conn.as_deref(), Some("gw-b"));
    assert_eq!(text(x, "peer"), "192.0.2.2");
    assert_eq!(text(x, "route_error"), "Network is unreachable");
    assert_eq!(text(x, "source"), "route");
}

#[test]
fn no_route_from_iked_send_errors() {
    let mut i = with_conns(vec![conn("gw-b")]);
    if let Some(s) = &mut i.iked {
        s.send_errors.push(SendError {
            peer: "192.0.2.2:500".into(),
            error: "Network is unreachable (os error 101)".into(),
            count: 4,
            last_unix_ms: NOW - 1000,
        });
    }
    let f = analyze(&i);
    let x = only(&f, "no-route");
    assert_eq!(text(x, "source"), "iked");
    assert_eq!(num(x, "send_errors"), 4.0);
}

#[test]
fn ah_proposed() {
    let f = one_failure(classified(
        5,
        &crate::ike::sa::IkeError::NoEspProposal {
            ours: "aes256gcm16".into(),
            theirs: "AH sha256".into(),
        },
    ));
    let x = only(&f, "ah-proposed");
    assert_eq!(text(x, "theirs"), "AH sha256");
}

#[test]
fn ikev1_peer() {
    let mut i = with_conns(vec![conn("gw-b")]);
    if let Some(s) = &mut i.iked {
        s.ike_drops.insert("ikev1".into(), 6);
    }
    i.events.push(EventRecord {
        message: "dropping an IKEv1 message: IKEv1 is deprecated (RFC 9395)".into(),
        peer: Some("192.0.2.2:500".into()),
        ..EventRecord::default()
    });
    let f = analyze(&i);
    let x = only(&f, "ikev1-peer");
    assert_eq!(num(x, "datagrams"), 6.0);
    assert_eq!(text(x, "peer"), "192.0.2.2");
    assert_eq!(x.conn.as_deref(), Some("gw-b"));
}

#[test]
fn peer_dead() {
    let f = one_failure(classified(
        5,
        &crate::ike::sa::IkeError::PeerDead {
            probes: 3,
            waited_ms: 30_000,
            peer: "192.0.2.2:500".parse().unwrap(),
        },
    ));
    let x = only(&f, "peer-dead");
    assert_eq!(num(x, "probes"), 3.0);
    assert_eq!(num(x, "waited_ms"), 30_000.0);
}

#[test]
fn dataplane_down() {
    let mut i = with_conns(vec![]);
    i.ring = Some("vpn0".into());
    i.dataplane_error = Some("/dev/shm/vpn0.counters: No such file or directory".into());
    let f = analyze(&i);
    let x = only(&f, "dataplane-down");
    assert_eq!(text(x, "ring"), "vpn0");
    assert!(text(x, "error").contains("No such file"));
}

#[test]
fn xdp_not_attached() {
    let mut i = with_conns(vec![]);
    i.dataplane = Some(DataplaneStatus {
        running: true,
        outside: Some("wan0".into()),
        xdp_mode: Some("native".into()),
        ..DataplaneStatus::default()
    });
    i.system = Some(SystemSnapshot {
        interfaces: vec![InterfaceInfo {
            name: "wan0".into(),
            mtu: 1500,
            xdp: None,
            up: true,
        }],
        ..SystemSnapshot::default()
    });
    let f = analyze(&i);
    let x = only(&f, "xdp-not-attached");
    assert_eq!(text(x, "interface"), "wan0");
    assert_eq!(text(x, "attached"), "none");
    assert_eq!(text(x, "expected"), "native");
}

#[test]
fn the_connection_filter_keeps_machine_wide_findings() {
    let mut a = conn("gw-b");
    a.failures.push(failure(
        5,
        "peer-dead",
        "dead",
        &[("peer", "192.0.2.2:500")],
    ));
    let mut b = conn("gw-c");
    b.remote_addrs = vec!["192.0.2.3".into()];
    b.failures.push(failure(
        5,
        "peer-dead",
        "dead",
        &[("peer", "192.0.2.3:500")],
    ));
    let mut i = with_conns(vec![a, b]);
    i.stats_before = Some(stats(&[("no_policy", 0)], &[]));
    i.stats_after = Some(stats(&[("no_policy", 1)], &[]));
    i.conn = Some("gw-c".into());
    let f = analyze(&i);
    assert_eq!(ids(&f), vec!["peer-dead", "no-policy"], "errors first");
    assert_eq!(f[0].conn.as_deref(), Some("gw-c"));
}

#[test]
fn config_peers_name_the_connection_when_iked_is_down() {
    let i = DiagnoseInput {
        now_unix_ms: NOW,
        config: Some(Ok(ConfigSummary {
            file: "x".into(),
            conns: vec![ConfigConn {
                name: "gw-b".into(),
                remote_addrs: vec!["192.0.2.2".into()],
                ..ConfigConn::default()
            }],
        })),
        system: Some(SystemSnapshot {
            routes: vec![RouteProbe {
                peer: "192.0.2.2".into(),
                error: Some("Network is unreachable".into()),
                ..RouteProbe::default()
            }],
            ..SystemSnapshot::default()
        }),
        ..DiagnoseInput::default()
    };
    let f = analyze(&i);
    assert_eq!(only(&f, "no-route").conn.as_deref(), Some("gw-b"));
}

#[test]
fn every_catalog_id_has_a_test_and_a_section_in_the_docs_and_back() {
    let doc = include_str!("../../../../docs/DIAGNOSE.md");
    let sections: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .filter(|s| !s.contains(' '))
        .collect();
    let catalog: Vec<&str> = catalog::CATALOG.iter().map(|k| k.id).collect();
    assert_eq!(
        sections, catalog,
        "docs/DIAGNOSE.md sections, in catalog order"
    );
    let me = include_str!("tests.rs");
    for id in &catalog {
        let t = id.replace('-', "_");
        assert!(
            me.contains(&format!("fn {t}")),
            "no test named after {id} in analyze/tests.rs"
        );
    }
}

#[test]
fn numbers_read_well() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(12_431), "12,431");
    assert_eq!(thousands(1_234_567), "1,234,567");
    assert_eq!(esp_overhead(false, true), 65);
    assert_eq!(esp_overhead(true, false), 77);
}
