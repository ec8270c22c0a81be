//! Rekeying through the daemon core (RFC 7296 §1.3.2, §1.3.3, §2.8, §2.8.1), sans-IO: two
//! daemons with short lifetimes on a virtual clock, each with a model dataplane. After every
//! dataplane change the world checks that each side's current outbound SA is held inbound by
//! the other (make-before-break: no instant in which a packet would be lost), and at the end
//! that each dataplane holds exactly the current pair.

use crate::world::*;
use dataplane::esp::{LifetimeKind, SaEvent};
use dataplane::sa::Direction;
use dataplane::shm::records::DataplaneRecord;

/// Both sides with these child and IKE lifetime lines; `a` starts the tunnel.
fn with_lifetimes(child_a: &str, child_b: &str, ike_a: &str, ike_b: &str) -> World {
    World::new(
        &conf(
            A,
            B,
            ike_a,
            &child(
                "net",
                "10.1.0.0/16",
                "10.2.0.0/16",
                &format!("start_action = \"start\"\n{child_a}"),
            ),
        ),
        &conf(
            B,
            A,
            ike_b,
            &child("net", "10.2.0.0/16", "10.1.0.0/16", child_b),
        ),
    )
}

fn up(w: &mut World) {
    w.start();
    w.run_until(2_000);
    assert_tunnel_up(w);
    w.check_no_loss = true;
}

/// The rekeys `vpnctl list` reports for the child on one side.
fn child_rekeys(w: &mut World, node: &str) -> u64 {
    let l = w.list(node);
    l.lines()
        .find_map(|x| {
            let (_, rest) = x.split_once("; ")?.1.rsplit_once("; ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no rekey count in {l}"))
}

fn assert_clean_end(w: &mut World) {
    assert!(
        w.loss.is_empty(),
        "traffic would be lost: {:#?}",
        &w.loss[..w.loss.len().min(5)]
    );
    for n in &w.nodes {
        assert!(
            n.dp.refused.is_empty(),
            "{} refused {:?}",
            n.name,
            n.dp.refused
        );
    }
    // Let the grace periods run out, then exactly one pair per side, crosswise.
    let t = w.now + 3_000;
    w.run_until(t);
    assert_tunnel_up(w);
    for n in &w.nodes {
        assert_eq!(n.daemon.ike_sas(), 1, "{}: one IKE SA left", n.name);
    }
}

#[test]
fn child_rekeys_initiated_by_one_side_lose_nothing() {
    let mut w = with_lifetimes(
        "rekey_time = \"10s\"\nrand_time = \"2s\"",
        "rekey_time = \"1h\"",
        "",
        "",
    );
    up(&mut w);
    w.run_until(65_000);
    assert!(child_rekeys(&mut w, "a") >= 6, "{}", w.list("a"));
    assert_clean_end(&mut w);
}

#[test]
fn child_rekeys_from_both_sides_at_once_collide_and_one_pair_survives() {
    // No random spread: both sides start their rekeys at the same instant (§2.8.1).
    let both = "rekey_time = \"10s\"\nlife_time = \"15s\"\nrand_time = \"0s\"";
    let mut w = with_lifetimes(both, both, "", "");
    up(&mut w);
    w.run_until(65_000);
    assert!(child_rekeys(&mut w, "a") + child_rekeys(&mut w, "b") >= 6);
    assert_clean_end(&mut w);
}

#[test]
fn ike_and_child_rekeys_together_lose_nothing() {
    let child = "rekey_time = \"10s\"\nrand_time = \"3s\"";
    let ike = "rekey_time = \"25s\"\nrand_time = \"5s\"";
    let mut w = with_lifetimes(child, child, ike, ike);
    up(&mut w);
    w.run_until(120_000);
    let l = w.list("a");
    assert!(l.contains("established"), "{l}");
    assert!(child_rekeys(&mut w, "a") >= 8, "{l}");
    assert_clean_end(&mut w);
}

/// Chaos soak finding (stop 24): `vpnctl reload` changing a connection within the grace
/// period after one of its Child SAs was rekeyed (the old inbound SA kept `rekey_grace_ms` for
/// packets in flight) dropped the daemon's record of that retiring SA with the old
/// connection's state, and the dataplane held it for good. Now it goes with the connection's
/// IKE SAs, and the dataplane ends holding exactly the new tunnel's pair.
#[test]
fn a_reload_during_a_rekeys_grace_period_leaves_no_retired_sa_behind() {
    let child_a = "rekey_time = \"10s\"\nrand_time = \"0s\"";
    let mut w = with_lifetimes(child_a, "rekey_time = \"1h\"", "", "");
    up(&mut w);
    // Step until a's dataplane holds the rekey's old inbound SA beside the new one.
    let mut t = w.now;
    while w.nodes[0].dp.inbound().len() < 2 {
        t += 50;
        assert!(
            t < 30_000,
            "no rekey left a retiring inbound SA: {}",
            w.list("a")
        );
        w.run_until(t);
    }
    let before: Vec<u32> = w.nodes[0]
        .dp
        .inbound()
        .iter()
        .map(|s| s.config.spi)
        .collect();
    w.check_no_loss = false; // a changed connection is torn down: traffic waits for it
    let changed = conf(
        A,
        B,
        "dpd_delay = \"7s\"",
        &child(
            "net",
            "10.1.0.0/16",
            "10.2.0.0/16",
            &format!("start_action = \"start\"\n{child_a}"),
        ),
    );
    let now = w.now;
    let r = w.node("a").daemon.reload(now, Ok(parse(&changed)));
    assert!(r.ok && r.text.contains("changed: [peer]"), "{}", r.text);
    // Well inside the next rekey_time: the new tunnel is up and nothing of the old is left.
    w.run_until(now + 5_000);
    assert_tunnel_up(&mut w);
    let after: Vec<u32> = w.nodes[0]
        .dp
        .inbound()
        .iter()
        .map(|s| s.config.spi)
        .collect();
    assert!(
        before.iter().all(|s| !after.contains(s)),
        "a's dataplane still holds an inbound SA of the old connection: before {before:x?}, after {after:x?}"
    );
    assert!(
        w.nodes[0].dp.refused.is_empty(),
        "{:?}",
        w.nodes[0].dp.refused
    );
}

#[test]
fn a_soft_limit_in_the_dataplane_rekeys_and_a_hard_one_replaces_the_sa() {
    let mut w = with_lifetimes("rekey_time = \"1h\"", "", "", "");
    up(&mut w);
    let out = w.nodes[0].dp.outbound()[0].clone();
    let now = w.now;
    w.nodes[0].daemon.handle_dataplane(
        now,
        &DataplaneRecord::SaEvent {
            direction: Direction::Outbound,
            reqid: out.reqid,
            event: SaEvent::SoftLifetime {
                spi: out.config.spi,
                kind: LifetimeKind::Packets,
            },
        },
    );
    w.run_until(now + 5_000);
    assert_eq!(child_rekeys(&mut w, "a"), 1, "{}", w.list("a"));
    assert_ne!(w.nodes[0].dp.outbound()[0].config.spi, out.config.spi);
    assert_clean_end(&mut w);

    // A hard limit with no rekey done: the SA is deleted and a new one negotiated (the
    // child is wanted), fail-closed in between.
    w.check_no_loss = false;
    let out = w.nodes[0].dp.outbound()[0].clone();
    let now = w.now;
    w.nodes[0].daemon.handle_dataplane(
        now,
        &DataplaneRecord::SaEvent {
            direction: Direction::Outbound,
            reqid: out.reqid,
            event: SaEvent::HardLifetime {
                spi: out.config.spi,
                kind: LifetimeKind::Bytes,
            },
        },
    );
    w.run_until(now + 10_000);
    assert_tunnel_up(&mut w);
    assert_ne!(w.nodes[0].dp.outbound()[0].config.spi, out.config.spi);
}

#[test]
fn a_thousand_rekeys_leave_no_state_behind() {
    let child = "rekey_time = \"10s\"\nrand_time = \"1s\"";
    let mut w = with_lifetimes(child, "", "rekey_time = \"100s\"", "");
    up(&mut w);
    w.run_until(10_000_000);
    assert!(child_rekeys(&mut w, "a") >= 900, "{}", w.list("a"));
    assert_clean_end(&mut w);
    for n in &w.nodes {
        assert!(n.dp.sas.len() <= 2, "{}: {} SAs", n.name, n.dp.sas.len());
        assert!(n.dp.out_order.len() <= 1);
    }
}

#[test]
fn reauthentication_is_make_before_break() {
    let mut w = with_lifetimes(
        "",
        "",
        "reauth_time = \"30s\"\nrand_time = \"0s\"\nrekey_time = \"0s\"",
        "",
    );
    up(&mut w);
    w.run_until(20_000);
    let first = w.nodes[0].dp.inbound()[0].config.spi;
    w.run_until(100_000);
    let l = w.list("a");
    // Reauthenticated at 30 s, 60 s and 90 s: the IKE SA is at most 10 s old.
    let age: u64 = l
        .split("established ")
        .nth(1)
        .and_then(|x| x.split(" s ago").next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{l}"));
    assert!(age <= 11, "{l}");
    assert_ne!(w.nodes[0].dp.inbound()[0].config.spi, first);
    assert_clean_end(&mut w);
}

#[test]
fn child_and_ike_rekeys_colliding_at_once_leave_one_sa_of_each() {
    // Everything at the same instant on both sides: Child SA and IKE SA rekeys from both
    // peers cross (§2.8.1, §2.25).
    let child = "rekey_time = \"10s\"\nlife_time = \"20s\"\nrand_time = \"0s\"";
    let ike = "rekey_time = \"10s\"\nover_time = \"10s\"\nrand_time = \"0s\"";
    let mut w = with_lifetimes(child, child, ike, ike);
    up(&mut w);
    w.run_until(95_000);
    assert_clean_end(&mut w);
}

#[test]
fn colliding_rekeys_on_a_lossy_network_still_leave_one_sa_of_each() {
    let child = "rekey_time = \"10s\"\nlife_time = \"30s\"\nrand_time = \"0s\"";
    let ike = "rekey_time = \"10s\"\nover_time = \"20s\"\nrand_time = \"0s\"";
    init_test_log();
    for drop_every in [3usize, 5, 7, 11, 13, 17] {
        let mut w = with_lifetimes(child, child, ike, ike);
        up(&mut w);
        let mut n = 0usize;
        w.filter = Box::new(move |_, d| {
            n += 1;
            (!n.is_multiple_of(drop_every)).then_some(d)
        });
        w.run_until(200_000);
        // Loss loses packets by itself; what must hold is the end state, no leak.
        w.check_no_loss = false;
        w.filter = Box::new(|_, d| Some(d));
        let t = w.now + 60_000;
        w.run_until(t);
        for n in &w.nodes {
            assert!(
                n.dp.refused.is_empty(),
                "drop every {drop_every}: {} refused {:?}",
                n.name,
                n.dp.refused
            );
        }
        assert_tunnel_up(&mut w);
        for n in &w.nodes {
            assert_eq!(
                n.daemon.ike_sas(),
                1,
                "drop every {drop_every}: {}: one IKE SA left",
                n.name
            );
        }
    }
}

/// B rekeys the Child SA X and sends its Delete of X; before that reaches A, A rekeys the IKE
/// SA and moves X (awaiting that Delete) and its successor Y to the new IKE SA. The Delete
/// then arrives on the old IKE SA. A answered it empty ("not one of ours") and kept sending
/// on X, which B no longer held: A's traffic to B was lost until B's next Child SA rekey
/// (an hour, by default), and X stayed at A as a second Child SA, rekeyed on its own (seeded
/// chaos, daemon_chaos.rs). Now the old IKE SA answers for X and A acts on it where X is.
#[test]
fn a_child_sa_delete_that_reaches_the_ike_sa_rekeyed_meanwhile_acts_on_the_new_one() {
    init_test_log();
    // B rekeys the Child SA at 10 s; A rekeys the IKE SA at 11 s.
    let mut w = with_lifetimes(
        "rekey_time = \"1h\"",
        "rekey_time = \"10s\"\nrand_time = \"0s\"",
        "rekey_time = \"11s\"\nrand_time = \"0s\"",
        "",
    );
    up(&mut w);
    let x_at_a = w.nodes[0].dp.inbound()[0].config.spi;
    let x_out_at_a = w.nodes[0].dp.outbound()[0].config.spi;
    // Hold every INFORMATIONAL request (exchange type 37, the Response flag 0x20 clear) from
    // 10 s on: B's Delete of X, then A's Delete of the old IKE SA.
    type Held = std::rc::Rc<std::cell::RefCell<Vec<Datagram>>>;
    let held: Held = Default::default();
    let hold = std::rc::Rc::new(std::cell::Cell::new(true));
    {
        let (held, hold) = (held.clone(), hold.clone());
        w.filter = Box::new(move |now, d| {
            let informational_request =
                d.data.len() > 19 && d.data[18] == 37 && d.data[19] & 0x20 == 0;
            if hold.get() && now >= 10_000 && informational_request {
                held.borrow_mut().push(d);
                return None;
            }
            Some(d)
        });
    }
    w.run_until(11_010);
    let from = |ip: &str| {
        held.borrow()
            .iter()
            .filter(|d| d.from.ip() == crate::world::ip(ip))
            .count()
    };
    assert!(from(B) >= 1, "B's Delete of X is held");
    assert!(
        from(A) >= 1,
        "A rekeyed the IKE SA and its Delete of the old one is held"
    );
    assert_eq!(
        w.nodes[0].daemon.ike_sas(),
        2,
        "A: the old IKE SA and its successor"
    );
    // B's Delete of X reaches A's old IKE SA first, then A's Delete of that IKE SA reaches B.
    hold.set(false);
    let late = std::mem::take(&mut *held.borrow_mut());
    let (from_b, from_a): (Vec<_>, Vec<_>) = late
        .into_iter()
        .partition(|d| d.from.ip() == crate::world::ip(B));
    w.wire.extend(from_b);
    w.deliver();
    w.wire.extend(from_a);
    w.deliver();
    let out: Vec<u32> = w.nodes[0]
        .dp
        .outbound()
        .iter()
        .map(|s| s.config.spi)
        .collect();
    assert!(
        out.len() == 1 && out[0] != x_out_at_a,
        "A sends on X's successor at once, not on X ({x_out_at_a:#010x}): {out:x?}"
    );
    // Past B's grace for X's inbound SA: everything A sends, B can decrypt.
    w.run_until(16_000);
    assert!(
        w.loss.is_empty(),
        "traffic would be lost: {:#?}",
        &w.loss[..w.loss.len().min(5)]
    );
    assert_tunnel_up(&mut w);
    assert!(
        !w.nodes[0]
            .dp
            .inbound()
            .iter()
            .any(|s| s.config.spi == x_at_a),
        "A no longer holds X"
    );
    for n in &w.nodes {
        assert_eq!(n.daemon.ike_sas(), 1, "{}: one IKE SA", n.name);
    }
    assert_eq!(child_rekeys(&mut w, "a"), 1);
}
