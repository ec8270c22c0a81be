//! RFC 9611 per-resource Child SAs, negotiated by two daemon cores on the virtual network
//! and clock of `world`: the fallback Child SA first, then one per resource (dataplane
//! worker) with the same selectors, each bound on its own side; the responder's limit
//! (TS_MAX_QUEUE beyond it); a peer that does not do them; rekeys keeping the binding.

use std::collections::BTreeSet;

use crate::world::*;
use dataplane::shm::records::SaInstall;

/// A world where `a` (initiator, `start_action = "start"`) and `b` have these
/// `per_resource_sas` settings (`None`: the option left out).
fn pair(a: Option<&str>, b: Option<&str>, extra: &str) -> World {
    let opt = |v: Option<&str>| v.map_or(String::new(), |v| format!("per_resource_sas = {v}\n"));
    World::new(
        &conf(
            A,
            B,
            "",
            &child(
                "net",
                "10.1.0.0/16",
                "10.2.0.0/16",
                &format!("start_action = \"start\"\n{}{extra}", opt(a)),
            ),
        ),
        &conf(
            B,
            A,
            "",
            &child(
                "net",
                "10.2.0.0/16",
                "10.1.0.0/16",
                &format!("{}{extra}", opt(b)),
            ),
        ),
    )
}

/// Every event line the node's daemon kept.
fn events(w: &mut World, name: &str) -> String {
    let now = w.now;
    let r = w.node(name).daemon.handle_request(
        now,
        control::daemon::command::Request::Events {
            since: 0,
            max: None,
        },
    );
    r.data.to_string()
}

/// The resources the node's outbound SAs are bound to (`None`: the fallback).
fn resources(dp: &ModelDataplane) -> Vec<Option<u16>> {
    let mut r: Vec<_> = dp.outbound().iter().map(|s| s.resource).collect();
    r.sort();
    r
}

/// Every outbound SA of one side is an inbound SA of the other, with the same keys.
fn crosswise(w: &World) {
    for (x, y) in [(0, 1), (1, 0)] {
        let inb: Vec<&SaInstall> = w.nodes[y].dp.inbound();
        for o in w.nodes[x].dp.outbound() {
            let i = inb
                .iter()
                .find(|i| i.config.spi == o.config.spi)
                .unwrap_or_else(|| panic!("{:#x} is not inbound on the peer", o.config.spi));
            assert!(o.config.keys.encryption[..] == i.config.keys.encryption[..]);
            assert_eq!(o.config.selectors, {
                let mut s = i.config.selectors.clone();
                std::mem::swap(&mut s.local, &mut s.remote);
                s
            });
        }
        assert!(
            w.nodes[x].dp.inbound().iter().all(|i| i.resource.is_none()),
            "inbound SAs are found by SPI on any worker: never bound"
        );
    }
}

#[test]
fn both_sides_bind_one_child_sa_per_worker_beside_the_fallback() {
    let mut w = pair(Some("2"), Some("2"), "");
    w.start();
    w.run_until(3_000);
    for n in 0..2 {
        assert_eq!(
            resources(&w.nodes[n].dp),
            vec![None, Some(0), Some(1)],
            "node {n}: the fallback and one per worker"
        );
        assert_eq!(w.nodes[n].dp.inbound().len(), 3);
        assert!(
            w.nodes[n].dp.refused.is_empty(),
            "{:?}",
            w.nodes[n].dp.refused
        );
    }
    crosswise(&w);
    // Every SA of the group has the fallback's selectors, so one narrowed policy set.
    let reqids: BTreeSet<u32> = w.nodes[0].dp.outbound().iter().map(|s| s.reqid).collect();
    assert_eq!(reqids.len(), 1);
    assert_eq!(
        w.nodes[0].dp.verdict(ip("10.1.0.5"), ip("10.2.0.5")),
        "protected"
    );
    // The list document (what `vpnctl list --json` prints) names each SA's worker.
    for name in ["a", "b"] {
        let now = w.now;
        let r = w
            .node(name)
            .daemon
            .handle_request(now, control::daemon::command::Request::List { conn: None });
        let workers: Vec<Option<u64>> = r.data["connections"][0]["children"][0]["sas"]
            .as_array()
            .expect("sas listed")
            .iter()
            .map(|sa| sa["worker"].as_u64())
            .collect();
        let mut sorted = workers.clone();
        sorted.sort();
        assert_eq!(sorted, vec![None, Some(0), Some(1)], "{name}: {workers:?}");
    }
}

#[test]
fn the_responder_takes_up_to_its_limit_and_answers_ts_max_queue_beyond() {
    let mut w = pair(Some("4"), Some("2"), "");
    w.start();
    w.run_until(3_000);
    // a asked for 4; b took 2 and refused the rest: 3 Child SAs each side, the same ones.
    assert_eq!(w.nodes[0].dp.outbound().len(), 3);
    assert_eq!(w.nodes[1].dp.outbound().len(), 3);
    assert_eq!(resources(&w.nodes[1].dp), vec![None, Some(0), Some(1)]);
    crosswise(&w);
    let a_events = events(&mut w, "a");
    assert!(a_events.contains("TS_MAX_QUEUE"), "{a_events}");
    let b_events = events(&mut w, "b");
    assert!(b_events.contains("answered TS_MAX_QUEUE"), "{b_events}");
    // The IKE SA is fine: nothing failed.
    assert!(w.nodes[0].daemon.ready());
    assert!(!a_events.contains("not created"), "{a_events}");
}

#[test]
fn a_peer_without_per_resource_sas_gets_exactly_one_ordinary_child_sa() {
    // b does not echo SA_RESOURCE_INFO (as strongSwan 5.9 would not: it does not know it),
    // so a asks for nothing more.
    let mut w = pair(Some("2"), None, "");
    w.start();
    w.run_until(3_000);
    assert_tunnel_up(&mut w);
    assert_eq!(resources(&w.nodes[0].dp), vec![None]);
    // The other way round: b (off) initiates; a (on) answers its plain request plainly.
    let mut w = World::new(
        &conf(
            A,
            B,
            "",
            &child("net", "10.1.0.0/16", "10.2.0.0/16", "per_resource_sas = 2"),
        ),
        &conf(
            B,
            A,
            "",
            &child(
                "net",
                "10.2.0.0/16",
                "10.1.0.0/16",
                "start_action = \"start\"",
            ),
        ),
    );
    w.start();
    w.run_until(3_000);
    assert_tunnel_up(&mut w);
    assert_eq!(resources(&w.nodes[0].dp), vec![None]);
}

#[test]
fn the_responder_role_negotiates_them_too_when_the_peer_initiates() {
    // b initiates this time; a answers and binds its side.
    let mut w = World::new(
        &conf(
            A,
            B,
            "",
            &child("net", "10.1.0.0/16", "10.2.0.0/16", "per_resource_sas = 3"),
        ),
        &conf(
            B,
            A,
            "",
            &child(
                "net",
                "10.2.0.0/16",
                "10.1.0.0/16",
                "start_action = \"start\"\nper_resource_sas = 3",
            ),
        ),
    );
    w.start();
    w.run_until(3_000);
    for n in 0..2 {
        assert_eq!(
            resources(&w.nodes[n].dp),
            vec![None, Some(0), Some(1), Some(2)]
        );
    }
    crosswise(&w);
}

#[test]
fn per_resource_child_sas_rekey_like_any_and_stay_bound() {
    let mut w = pair(
        Some("2"),
        Some("2"),
        "rekey_time = \"10s\"\nrand_time = \"2s\"",
    );
    w.start();
    w.run_until(3_000);
    let first: BTreeSet<u32> = w.nodes[0]
        .dp
        .outbound()
        .iter()
        .map(|s| s.config.spi)
        .collect();
    // Several rekeys of each; after the grace periods, the same shape with new SPIs.
    w.run_until(45_000);
    for n in 0..2 {
        assert_eq!(
            resources(&w.nodes[n].dp),
            vec![None, Some(0), Some(1)],
            "node {n} after rekeys"
        );
        assert!(
            w.nodes[n].dp.refused.is_empty(),
            "{:?}",
            w.nodes[n].dp.refused
        );
    }
    let now: BTreeSet<u32> = w.nodes[0]
        .dp
        .outbound()
        .iter()
        .map(|s| s.config.spi)
        .collect();
    assert!(first.is_disjoint(&now), "every Child SA was rekeyed");
    crosswise(&w);
}
