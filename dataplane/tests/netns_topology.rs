//! The four-namespace test topology (`scripts/topology.sh`) works as the baseline for the
//! AF_XDP dataplane tests: plain routing client-a → gw-a → gw-b → client-b over IPv4 and
//! IPv6, multi-queue veths, tx checksum offload off on the client veths, safe to rerun, and
//! nothing left behind after `down`.
//!
//! Needs root (network namespaces). Without it the tests print a loud SKIPPED notice and
//! pass, unless `VPN_REQUIRE_ROOT=1`, which makes them fail instead. Every topology gets a
//! name of its own (`t<pid>n<counter>`), so these tests can run in parallel with each other
//! and with other test binaries, and a guard tears it down even when an assertion panics.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The four namespaces, `NAME-<suffix>`, in line order.
const NAMESPACES: &[&str] = &["client-a", "gw-a", "gw-b", "client-b"];

/// Every veth end, by namespace suffix.
const VETHS: &[(&str, &str)] = &[
    ("client-a", "ca0"),
    ("gw-a", "ga-in"),
    ("gw-a", "ga-out"),
    ("gw-b", "gb-out"),
    ("gw-b", "gb-in"),
    ("client-b", "cb0"),
];

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/topology.sh")
}

/// True if we may run: root. Otherwise prints SKIPPED (or panics with `VPN_REQUIRE_ROOT=1`).
fn have_root(test: &str) -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if uid == "0" {
        return true;
    }
    if std::env::var("VPN_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{test}: needs root (network namespaces) and VPN_REQUIRE_ROOT=1 is set");
    }
    eprintln!("\n*** SKIPPED: needs root ({test}: network namespaces) ***\n");
    false
}

/// A short name unique to this process and call.
fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}n{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`, panics unless it succeeds, returns its stdout.
fn run(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn topology(args: &[&str]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).args(args);
    cmd
}

/// `ip netns exec NS args...`
fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    cmd
}

/// Namespaces whose name starts with `prefix`.
fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "list"]);
    run(cmd)
        .lines()
        // `ip netns list` prints "name (id: N)" for namespaces that have an id.
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// A topology that exists from `up` until `down` or drop: `Drop` always runs
/// `topology.sh down`, so a panicking test cleans up too.
struct Topology {
    name: String,
    up: bool,
}

impl Topology {
    fn up(name: &str, extra: &[&str]) -> Topology {
        // The guard exists before the script runs: a half-built topology is removed too.
        let mut topo = Topology {
            name: name.to_string(),
            up: true,
        };
        topo.up_again(extra);
        topo
    }

    fn up_again(&mut self, extra: &[&str]) {
        self.up = true;
        let mut args = vec!["up", self.name.as_str()];
        args.extend_from_slice(extra);
        print!("{}", run(topology(&args)));
    }

    fn ns(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    /// The prefix every namespace of this topology (and no other) starts with.
    fn prefix(&self) -> String {
        format!("{}-", self.name)
    }

    fn down(&mut self) {
        self.up = false;
        print!("{}", run(topology(&["down", &self.name])));
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if !self.up {
            return;
        }
        let mut cmd = topology(&["down", &self.name]);
        match cmd.output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("cleanup failed: {}", describe(&cmd, &out)),
            Err(e) => eprintln!("cleanup failed: cannot run {cmd:?}: {e}"),
        }
    }
}

/// Pings `dst` from namespace `ns` (2 echoes) and returns the TTL (hop limit) of every reply.
fn ping_ttls(ns: &str, dst: &str) -> Vec<u8> {
    let out = run(in_ns(
        ns,
        &["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", dst],
    ));
    assert!(
        out.contains(" 2 received"),
        "ping {dst} from {ns}: not all replies came back:\n{out}"
    );
    let ttls: Vec<u8> = out
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("ttl="))
        .map(|t| {
            t.parse()
                .unwrap_or_else(|e| panic!("bad ttl {t:?} ({e}):\n{out}"))
        })
        .collect();
    assert_eq!(
        ttls.len(),
        2,
        "ping {dst} from {ns}: no ttl= per reply:\n{out}"
    );
    ttls
}

/// Counts the `rx-*` and `tx-*` queues of `ifname` inside `ns`.
fn queue_counts(ns: &str, ifname: &str) -> (usize, usize) {
    let dir = format!("/sys/class/net/{ifname}/queues/");
    let list = run(in_ns(ns, &["ls", &dir]));
    let count = |p: &str| list.split_whitespace().filter(|q| q.starts_with(p)).count();
    (count("rx-"), count("tx-"))
}

fn assert_queues(topo: &Topology, n: usize) {
    for (suffix, ifname) in VETHS {
        let ns = topo.ns(suffix);
        assert_eq!(
            queue_counts(&ns, ifname),
            (n, n),
            "{ns} {ifname}: want {n} rx and {n} tx queues"
        );
    }
}

/// Client-a reaches client-b over both families, through exactly the two gateways.
fn assert_end_to_end(topo: &Topology) {
    let ca = topo.ns("client-a");
    for dst in ["10.2.0.20", "2001:db8:b::20"] {
        // client-b answers with Linux's default TTL / hop limit 64; each gateway takes one.
        assert_eq!(ping_ttls(&ca, dst), [62, 62], "ping {dst} from {ca}");
    }
    // The other way round, and gateway to gateway over the WAN (no hop in between).
    let cb = topo.ns("client-b");
    assert_eq!(ping_ttls(&cb, "10.1.0.10"), [62, 62]);
    assert_eq!(ping_ttls(&cb, "2001:db8:a::10"), [62, 62]);
    assert_eq!(ping_ttls(&topo.ns("gw-a"), "192.0.2.2"), [64, 64]);
    assert_eq!(ping_ttls(&topo.ns("gw-a"), "2001:db8:ff::2"), [64, 64]);
}

#[test]
fn baseline_routing_queues_and_cleanup() {
    if !have_root("baseline_routing_queues_and_cleanup") {
        return;
    }
    let mut topo = Topology::up(&unique_name(), &[]);

    for suffix in NAMESPACES {
        assert_eq!(
            namespaces_with_prefix(&topo.ns(suffix)),
            [topo.ns(suffix)],
            "namespace {suffix} missing"
        );
    }
    assert_end_to_end(&topo);

    // Both gateway-a veths (and every other veth) have the default 2 rx and 2 tx queues.
    assert_eq!(queue_counts(&topo.ns("gw-a"), "ga-in"), (2, 2));
    assert_eq!(queue_counts(&topo.ns("gw-a"), "ga-out"), (2, 2));
    assert_queues(&topo, 2);

    // The client veths do not leave partial checksums.
    for (suffix, ifname) in [("client-a", "ca0"), ("client-b", "cb0")] {
        let features = run(in_ns(&topo.ns(suffix), &["ethtool", "-k", ifname]));
        assert!(
            features.lines().any(|l| l.trim() == "tx-checksumming: off"),
            "{suffix} {ifname}: tx checksum offload still on:\n{features}"
        );
    }

    // The status command sees it.
    run(topology(&["status", &topo.name]));

    topo.down();
    assert_eq!(
        namespaces_with_prefix(&topo.prefix()),
        Vec::<String>::new(),
        "namespaces left after down"
    );
}

#[test]
fn up_twice_is_safe_and_down_is_idempotent() {
    if !have_root("up_twice_is_safe_and_down_is_idempotent") {
        return;
    }
    let mut topo = Topology::up(&unique_name(), &["--queues", "4"]);
    assert_queues(&topo, 4);

    // `up` again on the same name replaces the topology (here with the default 2 queues).
    topo.up_again(&[]);
    assert_eq!(namespaces_with_prefix(&topo.prefix()).len(), 4);
    assert_queues(&topo, 2);
    assert_end_to_end(&topo);

    topo.down();
    assert_eq!(
        namespaces_with_prefix(&topo.prefix()),
        Vec::<String>::new(),
        "namespaces left after down"
    );
    // `down` of an absent topology succeeds; `status` reports it absent.
    topo.down();
    let mut status = topology(&["status", &topo.name]);
    let out = status.output().expect("run topology.sh status");
    assert!(!out.status.success(), "{}", describe(&status, &out));
}

#[test]
fn guard_cleans_up_after_a_panic() {
    if !have_root("guard_cleans_up_after_a_panic") {
        return;
    }
    let name = unique_name();
    let prefix = format!("{name}-");
    let result = std::panic::catch_unwind(|| {
        let _topo = Topology::up(&name, &["--queues", "1"]);
        panic!("deliberate panic with the topology up (expected: this test checks the guard)");
    });
    assert!(result.is_err());
    assert_eq!(
        namespaces_with_prefix(&prefix),
        Vec::<String>::new(),
        "the guard did not remove the topology"
    );
}
