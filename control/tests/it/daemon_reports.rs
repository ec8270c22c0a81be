//! The daemon's reports for `vpnctl status` and `vpnctl list` (`Daemon::status_report`,
//! `Daemon::list_report`), driven sans-IO with a virtual clock: what they say after a
//! tunnel comes up, carries traffic, fails to come up, and after reloads and send errors.

use crate::world::*;
use control::api::ListReport;
use control::daemon::command::Request;
use control::daemon::SaTraffic;

fn list_report(w: &mut World, node: &str, conn: Option<&str>) -> (bool, ListReport) {
    let now = w.now;
    let r = w.node(node).daemon.handle_request(
        now,
        Request::List {
            conn: conn.map(str::to_string),
        },
    );
    let report = serde_json::from_value(r.data).unwrap_or_default();
    (r.ok, report)
}

#[test]
fn an_established_tunnel_is_reported_as_data_with_the_dataplanes_spis() {
    let mut w = basic();
    w.start();
    w.run_until(2_000);
    assert_tunnel_up(&mut w);
    let a_in = w.nodes[0].dp.inbound()[0].config.spi;
    let a_out = w.nodes[0].dp.outbound()[0].config.spi;

    for (node, role) in [("a", "initiator"), ("b", "responder")] {
        let s = w.node(node).daemon.status_report(2_000);
        assert_eq!(s.connections, 1);
        assert_eq!(s.ike_sas["established"], 1, "{node}: {s:?}");
        assert_eq!(s.ike_sas["half_open"], 0);
        assert_eq!(s.negotiations["established"], 1, "{node}: {s:?}");
        assert_eq!(s.negotiations["failed"], 0);
        assert!(!s.cookie_mode);
        let (ok, l) = list_report(&mut w, node, None);
        assert!(ok);
        assert_eq!(l.connections.len(), 1);
        let c = &l.connections[0];
        assert_eq!((c.name.as_str(), c.state.as_str()), ("peer", "established"));
        assert_eq!(c.ike_sas.len(), 1, "{c:?}");
        let ike = &c.ike_sas[0];
        assert_eq!(ike.role, role);
        assert_eq!(ike.state, "established");
        assert_eq!(ike.suite.as_deref(), Some("aes128gcm16-prfsha256-x25519"));
        assert!(!ike.nat);
        assert!(ike.last_heard_s.is_some_and(|s| s <= 2.0), "{ike:?}");
        assert_eq!(ike.spi_i.len(), 16);
        assert_eq!(c.children.len(), 1);
        let k = &c.children[0];
        assert_eq!(
            (k.name.as_str(), k.state.as_str(), k.mode.as_str()),
            ("net", "installed", "tunnel")
        );
        assert_eq!(k.sas.len(), 1);
        assert!(k.sas[0].outbound_installed);
        assert!(
            k.sas[0]
                .suite
                .as_deref()
                .is_some_and(|s| s.starts_with("aes128gcm16")),
            "{:?}",
            k.sas[0]
        );
    }
    let (_, l) = list_report(&mut w, "a", Some("peer"));
    let sa = &l.connections[0].children[0].sas[0];
    assert_eq!(sa.in_spi, format!("{a_in:#010x}"));
    assert_eq!(sa.out_spi, format!("{a_out:#010x}"));
    assert_eq!(sa.local_ts, ["10.1.0.0/16"]);

    // Traffic, read once a second from the dataplane's counters: 50 packets a second in,
    // outbound stops after 20 s.
    for s in 1..=90u64 {
        let now = 2_000 + s * 1000;
        let out = 30 * s.min(20);
        w.nodes[0].daemon.handle_sa_counters(
            now,
            &[
                SaTraffic {
                    spi: a_in,
                    inbound: true,
                    packets: 50 * s,
                    bytes: 5000 * s,
                },
                SaTraffic {
                    spi: a_out,
                    inbound: false,
                    packets: out,
                    bytes: 100 * out,
                },
            ],
        );
        if s == 1 {
            // The first reading already has traffic: the SA is seconds old, so all of it is
            // recent (it said "50 packets (0 in the last 60 s, last 0 s ago)").
            w.now = now;
            let (_, l) = list_report(&mut w, "a", None);
            let sa = &l.connections[0].children[0].sas[0];
            assert_eq!((sa.in_packets, sa.in_packets_60s), (50, 50), "{sa:?}");
            assert_eq!((sa.out_packets, sa.out_packets_60s), (30, 30), "{sa:?}");
        }
    }
    w.now = 92_000;
    let (_, l) = list_report(&mut w, "a", None);
    let sa = &l.connections[0].children[0].sas[0];
    assert_eq!((sa.in_packets, sa.in_bytes), (4500, 450_000));
    assert_eq!((sa.out_packets, sa.out_bytes), (600, 60_000));
    assert!((3000..=3300).contains(&sa.in_packets_60s), "{sa:?}");
    assert_eq!(sa.out_packets_60s, 0, "{sa:?}");
    assert_eq!(sa.in_idle_s, Some(0.0));
    assert_eq!(sa.out_idle_s, Some(70.0), "outbound last moved at 22 s");
    assert!(sa.up_s >= 90.0);
}

#[test]
fn failures_are_counted_by_finding_and_listed_with_the_connection() {
    let bad_b = conf(B, A, "", &child("net", "10.2.0.0/16", "10.1.0.0/16", "")).replace(
        "a test pre-shared key of some length",
        "another pre-shared key entirely",
    );
    let good_a = conf(
        A,
        B,
        "",
        &child(
            "net",
            "10.1.0.0/16",
            "10.2.0.0/16",
            "start_action = \"start\"",
        ),
    );
    let mut w = World::new(&good_a, &bad_b);
    w.start();
    w.run_until(3_000);
    let s = w.node("a").daemon.status_report(3_000);
    assert_eq!(s.negotiations["established"], 0, "{s:?}");
    assert!(s.negotiations["failed"] >= 1, "{s:?}");
    let by_finding: u64 = s
        .negotiations
        .iter()
        .filter(|(k, _)| k.starts_with("failed:"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        by_finding, s.negotiations["failed"],
        "the findings add up: {s:?}"
    );
    let (_, l) = list_report(&mut w, "a", None);
    let c = &l.connections[0];
    assert_eq!(c.state, "down", "{c:?}");
    assert!(!c.failures.is_empty(), "{c:?}");
    assert!(c.failures.last().unwrap().at_unix_ms <= 3_000);
    assert!(c.retry_in_s.is_some(), "an initiator retries: {c:?}");
    assert_eq!(c.children[0].state, "down");
    // A connection that does not exist is refused (vpnctl exits 1).
    let (ok, _) = list_report(&mut w, "a", Some("nosuch"));
    assert!(!ok);
}

#[test]
fn send_errors_are_counted_per_peer_and_logged_once_per_burst() {
    let mut w = basic();
    let d = &mut w.node("a").daemon;
    let peer = "192.0.2.2:500".parse().unwrap();
    for t in 0..100 {
        d.send_failed(t * 10, peer, "Network is unreachable (os error 101)");
    }
    let s = d.status_report(1_000);
    assert_eq!(s.send_errors.len(), 1);
    assert_eq!(s.send_errors[0].count, 100);
    assert_eq!(s.send_errors[0].peer, "192.0.2.2:500");
    let ev = d.events.since(0, 1000);
    let lines: Vec<_> = ev
        .events
        .iter()
        .filter(|e| e.message.contains("Network is unreachable"))
        .collect();
    assert!(
        !lines.is_empty() && lines.len() <= 5,
        "rate-limited: {}",
        lines.len()
    );
    assert_eq!(lines[0].conn.as_deref(), Some("peer"));
    assert_eq!(lines[0].level, "warn");
}

#[test]
fn the_last_reload_is_reported_whether_it_worked_or_not() {
    let mut w = basic();
    w.start();
    w.run_until(2_000);
    let d = &mut w.node("a").daemon;
    assert_eq!(d.status_report(2_000).last_reload, None);
    let r = d.reload(2_500, Err("test.toml:3: unknown field `proposal`".into()));
    assert!(!r.ok);
    let lr = d.status_report(2_600).last_reload.unwrap();
    assert!(
        !lr.ok && lr.message.contains("unknown field") && lr.at_unix_ms == 2_500,
        "{lr:?}"
    );
    let same = parse(&conf(
        A,
        B,
        "",
        &child(
            "net",
            "10.1.0.0/16",
            "10.2.0.0/16",
            "start_action = \"start\"",
        ),
    ));
    assert!(d.reload(3_000, Ok(same)).ok);
    let lr = d.status_report(3_000).last_reload.unwrap();
    assert!(lr.ok && lr.message.contains("unchanged: [peer]"), "{lr:?}");
}
