//! The next-hop resolver against a real kernel: two network namespaces joined by a veth
//! pair, routes via the peer, IPv4 and IPv6.
//!
//! Needs root (network namespaces). Without it the test prints a loud SKIPPED notice and
//! passes, unless `VPN_REQUIRE_ROOT=1`, which makes it fail instead.
//!
//! A process cannot switch its network namespace without `unsafe` (setns), so the parent
//! test builds the namespaces and re-runs this very test binary under `ip netns exec`,
//! selecting only [`child_resolves_inside_namespace`] and marking the child's role with an
//! environment variable; without that variable the child test returns at once. A guard
//! deletes both namespaces, also when an assertion fails.

use std::net::IpAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dataplane::route::nexthop::{NextHopError, NextHopResolver, Resolution};

/// Set (to `1`) in the child's environment; the child test does nothing without it.
const CHILD_ENV: &str = "VPN_NEXTHOP_NETNS_CHILD";
/// The MACs the child must find, passed from the parent.
const OWN_MAC_ENV: &str = "VPN_NEXTHOP_OWN_MAC";
const PEER_MAC_ENV: &str = "VPN_NEXTHOP_PEER_MAC";
/// The child test's name, for `--exact`.
const CHILD_TEST: &str = "child_resolves_inside_namespace";

/// Our end of the veth (in the first namespace) and the peer's (in the second).
const OWN_IF: &str = "nh0";
const PEER_IF: &str = "nh1";

/// How long the child waits for a neighbour to resolve, and how often it asks.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(3);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

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

/// `ip ARGS...`, which must succeed.
fn ip(args: &[&str]) -> String {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run(cmd)
}

/// Two namespaces, deleted on drop (also when the test panics).
struct Namespaces {
    own: String,
    peer: String,
}

impl Namespaces {
    fn create() -> Namespaces {
        let pid = std::process::id();
        let ns = Namespaces {
            own: format!("nh{pid}a"),
            peer: format!("nh{pid}b"),
        };
        // Left over from a killed run with a recycled pid: remove quietly first.
        ns.delete();
        ip(&["netns", "add", &ns.own]);
        ip(&["netns", "add", &ns.peer]);
        ns
    }

    fn delete(&self) {
        for name in [&self.own, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Waits (at most [`RESOLVE_DEADLINE`]) until `dev` in `ns` has a usable IPv6 link-local
/// address.
fn wait_for_link_local(ns: &str, dev: &str) {
    let start = Instant::now();
    loop {
        let addrs = ip(&["-n", ns, "-6", "addr", "show", "dev", dev, "scope", "link"]);
        if addrs.contains("fe80:") && !addrs.contains("tentative") {
            return;
        }
        assert!(
            start.elapsed() < RESOLVE_DEADLINE,
            "{dev} in {ns} has no usable link-local address after {RESOLVE_DEADLINE:?}:\n{addrs}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The MAC address of `ifname` inside namespace `ns`, as `aa:bb:cc:dd:ee:ff`.
fn mac_in(ns: &str, ifname: &str) -> String {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "cat"])
        .arg(format!("/sys/class/net/{ifname}/address"));
    run(cmd).trim().to_string()
}

fn parse_mac(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("MAC {text:?}: {e}")))
        .collect();
    bytes
        .try_into()
        .unwrap_or_else(|_| panic!("MAC {text:?} is not 6 bytes"))
}

#[test]
fn resolver_in_two_namespaces() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // we are the child: only the child test has work to do
    }
    if !have_root("resolver_in_two_namespaces") {
        return;
    }
    let ns = Namespaces::create();
    let (a, b) = (ns.own.as_str(), ns.peer.as_str());

    // Neighbour solicitations come from the link-local address, which is unusable while
    // duplicate address detection runs (~1-2 s after link up): turn DAD off for the new
    // interfaces, as on an interface that has long been up.
    for n in [a, b] {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", n, "sysctl", "-qw"]).args([
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
        run(cmd);
    }

    ip(&[
        "-n", a, "link", "add", OWN_IF, "type", "veth", "peer", "name", PEER_IF, "netns", b,
    ]);
    ip(&["-n", a, "addr", "add", "192.0.2.1/24", "dev", OWN_IF]);
    ip(&[
        "-n",
        a,
        "addr",
        "add",
        "2001:db8:ff::1/64",
        "dev",
        OWN_IF,
        "nodad",
    ]);
    ip(&["-n", b, "addr", "add", "192.0.2.2/24", "dev", PEER_IF]);
    ip(&[
        "-n",
        b,
        "addr",
        "add",
        "2001:db8:ff::2/64",
        "dev",
        PEER_IF,
        "nodad",
    ]);
    for (n, dev) in [(a, "lo"), (a, OWN_IF), (b, "lo"), (b, PEER_IF)] {
        ip(&["-n", n, "link", "set", dev, "up"]);
    }
    ip(&["-n", a, "route", "add", "10.9.0.0/16", "via", "192.0.2.2"]);
    ip(&[
        "-n",
        a,
        "-6",
        "route",
        "add",
        "2001:db8:9::/48",
        "via",
        "2001:db8:ff::2",
    ]);

    // IPv6 on a new link is ready only once the kernel has seen the carrier come up (it
    // drops even neighbour solicitations until then); its sign is the link-local address.
    for (n, dev) in [(a, OWN_IF), (b, PEER_IF)] {
        wait_for_link_local(n, dev);
    }

    let own_mac = mac_in(a, OWN_IF);
    let peer_mac = mac_in(b, PEER_IF);

    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new("ip");
    child
        .args(["netns", "exec", a])
        .arg(&exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env(OWN_MAC_ENV, &own_mac)
        .env(PEER_MAC_ENV, &peer_mac);
    let out = child
        .output()
        .unwrap_or_else(|e| panic!("cannot run {child:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}", describe(&child, &out));
    // The child must really have run its checks (not been filtered out by name).
    assert!(
        stdout.contains("1 passed"),
        "the child test did not run: {}",
        describe(&child, &out)
    );
}

/// Polls `resolve(dst)` until it is `Ready` (at most [`RESOLVE_DEADLINE`]); checks that the
/// first answer was `Pending` or `Ready`.
fn resolve_until_ready(
    resolver: &mut NextHopResolver,
    dst: IpAddr,
) -> dataplane::route::nexthop::NextHop {
    let start = Instant::now();
    let first = resolver
        .resolve(dst)
        .unwrap_or_else(|e| panic!("resolve({dst}): {e}"));
    println!("resolve({dst}) first answer: {first:?}");
    let mut answer = first;
    loop {
        match answer {
            Resolution::Ready(hop) => {
                println!("resolve({dst}) ready after {:?}: {hop:?}", start.elapsed());
                return hop;
            }
            Resolution::Pending { .. } => {}
            Resolution::Unreachable(why) => panic!("resolve({dst}): unreachable: {why}"),
        }
        assert!(
            start.elapsed() < RESOLVE_DEADLINE,
            "resolve({dst}) still {answer:?} after {RESOLVE_DEADLINE:?}"
        );
        std::thread::sleep(POLL_INTERVAL);
        answer = resolver
            .resolve(dst)
            .unwrap_or_else(|e| panic!("resolve({dst}): {e}"));
    }
}

#[test]
fn child_resolves_inside_namespace() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return; // only meaningful inside the namespace the parent test built
    }
    let own_mac = parse_mac(&std::env::var(OWN_MAC_ENV).expect("own MAC from the parent"));
    let peer_mac = parse_mac(&std::env::var(PEER_MAC_ENV).expect("peer MAC from the parent"));

    let mut resolver = NextHopResolver::new().expect("open the resolver");
    let ifindex = resolver.ifindex(OWN_IF).expect("ifindex of our veth end");

    // IPv4, via the gateway 192.0.2.2.
    let hop = resolve_until_ready(&mut resolver, "10.9.1.1".parse().unwrap());
    assert_eq!(hop.ifindex, ifindex);
    assert_eq!(hop.ifname, OWN_IF);
    assert_eq!(hop.dst_mac, peer_mac, "destination MAC is the peer's");
    assert_eq!(hop.src_mac, own_mac, "source MAC is our interface's");
    assert_eq!(hop.neighbour, "192.0.2.2".parse::<IpAddr>().unwrap());
    assert_eq!(hop.src_addr, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(hop.mtu, 1500);

    // IPv6, via the gateway 2001:db8:ff::2.
    let hop = resolve_until_ready(&mut resolver, "2001:db8:9::1".parse().unwrap());
    assert_eq!(hop.ifindex, ifindex);
    assert_eq!(hop.ifname, OWN_IF);
    assert_eq!(hop.dst_mac, peer_mac, "destination MAC is the peer's");
    assert_eq!(hop.src_mac, own_mac, "source MAC is our interface's");
    assert_eq!(hop.neighbour, "2001:db8:ff::2".parse::<IpAddr>().unwrap());
    assert_eq!(hop.src_addr, Some("2001:db8:ff::1".parse().unwrap()));
    assert_eq!(hop.mtu, 1500);

    // On-link: the destination is its own neighbour (already resolved above).
    let hop = resolve_until_ready(&mut resolver, "192.0.2.2".parse().unwrap());
    assert_eq!(hop.neighbour, "192.0.2.2".parse::<IpAddr>().unwrap());
    assert_eq!(hop.dst_mac, peer_mac);

    // No route.
    match resolver.resolve("198.51.100.1".parse().unwrap()) {
        Ok(Resolution::Unreachable(why)) => {
            println!("198.51.100.1: {why}");
            assert!(
                why.contains("198.51.100.1"),
                "the reason names the destination: {why}"
            );
        }
        other => panic!("resolve(198.51.100.1) with no route: {other:?}"),
    }
    match resolver.resolve("2001:db8:77::1".parse().unwrap()) {
        Ok(Resolution::Unreachable(why)) => {
            println!("2001:db8:77::1: {why}");
            assert!(
                why.contains("2001:db8:77::1"),
                "the reason names the destination: {why}"
            );
        }
        other => panic!("resolve(2001:db8:77::1) with no route: {other:?}"),
    }

    // Local destinations.
    for local in ["192.0.2.1", "2001:db8:ff::1", "127.0.0.1", "::1"] {
        match resolver.resolve(local.parse().unwrap()) {
            Ok(Resolution::Unreachable(why)) => {
                println!("{local}: {why}");
                assert!(why.contains("local to this host"), "{local}: {why}");
            }
            other => panic!("resolve({local}) (local): {other:?}"),
        }
    }

    // The interface's own addresses.
    let addrs = resolver.interface_addrs(ifindex).expect("interface_addrs");
    println!("addresses on {OWN_IF}: {addrs:?}");
    assert!(addrs.contains(&"192.0.2.1".parse().unwrap()), "{addrs:?}");
    assert!(
        addrs.contains(&"2001:db8:ff::1".parse().unwrap()),
        "{addrs:?}"
    );

    // Unknown interfaces are named in the error.
    match resolver.ifindex("no-such-if0") {
        Err(NextHopError::NoSuchInterface(name)) => assert_eq!(name, "no-such-if0"),
        other => panic!("ifindex(no-such-if0): {other:?}"),
    }
    match resolver.interface_addrs(999_999) {
        Err(NextHopError::NoSuchIfindex(999_999)) => {}
        other => panic!("interface_addrs(999999): {other:?}"),
    }
}
