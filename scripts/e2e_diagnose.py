#!/usr/bin/env python3
"""`vpnctl diagnose` end to end (issue 14): each of the common IPsec failures provoked for real
in network namespaces, and `vpnctl diagnose --json` (run inside the gateway's namespace, so its
route, MTU and nftables probes see that gateway) must name the right finding with the right
evidence (docs/DIAGNOSE.md lists each finding's evidence keys).

    e2e_diagnose.py --dataplane PATH [--vpnctl PATH] CASE

Cases (each builds its own topology, prints PASS/FAIL lines with e2e.py's check() and always
tears everything down; exit 0 only if every check passed):

  diag-healthy      ours <-> ours, a working tunnel: diagnose reports no error on either side.
                    Then, on the same tunnel: a second subnet on client-a (10.1.7.0/24) that no
                    connection covers sends to client-b -> `no-policy` (the dataplane's
                    no_policy drops); the WAN MTU lowered to 1300 on both gateways, DF pings of
                    1400 bytes from client-a whose ICMP "fragmentation needed" answers client-a
                    filters with nftables -> `mtu-blackhole` (too_big drops, ICMP sent, the WAN
                    MTU, the largest inner packet).
  diag-negotiation  ours <-> ours, gw-a initiating, one misconfiguration at a time:
                    disjoint IKE proposals -> `proposal-mismatch` on both sides; different
                    pre-shared keys -> `psk-mismatch` on the responder, `auth-rejected` on the
                    initiator; gw-b's remote_ts not gw-a's local_ts -> `ts-mismatch`; encap on
                    (IKE moves to UDP 4500 after IKE_SA_INIT) with gw-b's nftables dropping UDP
                    4500 -> `natt-blocked` on gw-a, `firewall-blocks-ike` on gw-b.
  diag-local        gw-a alone: a typo in iked's configuration (iked refuses to start) ->
                    `config-error` with file and line (and `iked-down`); the typo written into
                    a running iked's file and `vpnctl reload` -> `reload-failed`; an nftables
                    output rule dropping UDP 500 -> `firewall-blocks-ike` with the rule; the
                    route to the peer removed -> `no-route`.
  diag-strongswan   our iked on gw-a against strongSwan 5.9.8 on gw-b: charon proposes AH ->
                    `ah-proposed`; charon speaks IKEv1 (swanctl version = 1, Main Mode) ->
                    `ikev1-peer`; charon requires PFS on its Child SA rekeys, we offer none ->
                    `pfs-mismatch`; charon's Child SA life_time 4 s without rekeying (ours 1 h)
                    -> `lifetime-mismatch`; charon's certificate not valid before 2040 ->
                    `cert-not-yet-valid` (whose "peer"), then our own such certificate ->
                    `cert-not-yet-valid` (whose "ours", from the certificate probe).

IKE retransmissions are short everywhere (iked: 300 ms, 2 tries; charon: 1 s, 1 try), so each
failure shows within seconds; every wait is a readiness check (a log line, a counter, a file).

Each phase first asserts the raw symptom the diagnosis must rest on (a log line, a counter, a
notify in charon's log) — the proof the provocation is real — then `expect()` runs
`vpnctl diagnose --json` and asserts the finding id and its evidence.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import signal
import subprocess
import sys
import time
from typing import Any, Callable

import e2e
import e2e_faults
import vpnlab
from e2e import check
from e2e_certs import Tail
from e2e_faults import iked_log, plain
from vpnlab import Auth, Case, Lab, Pki, ns_exec

PSK = "a diagnose test pre-shared key"
IKE = "aes128gcm16-prfsha256-x25519"
PEER_A, PEER_B = "192.0.2.1", "192.0.2.2"
CONN = "gw-b"  # gw-a's connection (iked_conf names it after the peer)
WINDOW_S = "1"  # diagnose's counter window: short, with traffic running through it
# Short IKE retransmissions: 300 ms then 600 ms, then the exchange has failed.
FAST_RETRANSMIT = "retransmit_ms = 300\nretransmit_tries = 2\n"
SWAN_RETRANSMIT = {"retransmit_timeout": 1, "retransmit_tries": 1}


# --- running diagnose -----------------------------------------------------------------------------

class Diag:
    """One `vpnctl diagnose --json` run: exit code, parsed document (None if not JSON)."""

    def __init__(self, rc: int, out: str, err: str):
        self.rc, self.out, self.err = rc, out, err
        try:
            self.doc = json.loads(out)
        except json.JSONDecodeError:
            self.doc = None

    @property
    def findings(self) -> list[dict]:
        return list((self.doc or {}).get("findings") or [])

    def ids(self) -> list[str]:
        return [f.get("id", "?") for f in self.findings]

    def find(self, fid: str) -> list[dict]:
        return [f for f in self.findings if f.get("id") == fid]

    def brief(self) -> str:
        if self.doc is None:
            return f"exit {self.rc}, not JSON: {(self.out + self.err).strip()[-300:]}"
        return f"exit {self.rc}, findings {self.ids()}, unchecked {(self.doc or {}).get('unchecked')}"


def diagnose(lab: Lab, side: str, *extra: str) -> Diag:
    """`vpnctl diagnose --json` inside gw-`side`'s namespace (its routes, links, nftables),
    against that gateway's iked socket and dataplane ring."""
    vpnctl = lab.vpnctl or str(pathlib.Path(lab.dataplane).with_name("vpnctl"))
    args = ["ip", "netns", "exec", lab.ns(f"gw-{side}"), vpnctl, "diagnose", "--json",
            "--socket", str(lab.workdir / f"iked-{side}.sock"), "--ring", lab.ring(side),
            "--window-s", WINDOW_S, *extra]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return Diag(r.returncode, r.stdout, r.stderr)


Want = dict[str, Any]  # evidence key -> exact value, or a predicate on the value


def catalog_severities() -> dict[str, str]:
    """Each finding id's severity, from the catalog (control/src/diagnose/catalog.rs)."""
    text = (vpnlab.ROOT / "control" / "src" / "diagnose" / "catalog.rs").read_text()
    return dict(re.findall(r'k\(\s*"([a-z0-9-]+)",\s*"(error|warning|info)"', text))


SEVERITY = catalog_severities()


class Opt:
    """An optional evidence key (docs/DIAGNOSE.md: "(optional)"): absent is fine, present
    must satisfy `want` (a value or a predicate)."""

    def __init__(self, want):
        self.want = want


def _match(want: Want, ev: dict) -> list[str]:
    """What of `want` the evidence `ev` does not satisfy (empty: all of it)."""
    bad = []
    for k, w in want.items():
        if isinstance(w, Opt):
            if k not in ev:
                continue
            w = w.want
        if k not in ev:
            bad.append(f"{k} missing")
            continue
        v = ev[k]
        ok = w(v) if callable(w) else v == w
        if not ok:
            bad.append(f"{k}={v!r}")
    return bad


def expect(lab: Lab, side: str, fid: str, want: Want, what: str, severity: str | None = None,
           conn: str | None = None, extra: tuple[str, ...] = (), diag: Diag | None = None) -> Diag:
    """The check of a phase: diagnose on gw-`side` names `fid` with evidence satisfying `want`
    (one finding of that id must satisfy all of it); the evidence seen goes into the message."""
    assert fid in SEVERITY, f"{fid} is not in the catalog"
    d = diag or diagnose(lab, side, *extra)
    if d.doc is not None and (d.doc.get("kind") != "diagnose" or d.doc.get("schema_version") != 1):
        check(False, f"{what}: diagnose prints a schema_version 1 'diagnose' document",
              f"kind {d.doc.get('kind')!r}, schema_version {d.doc.get('schema_version')!r}")
    cands = d.find(fid)
    best, best_bad = None, ["no such finding"]
    for f in cands:
        bad = _match(want, f.get("evidence") or {})
        if f.get("severity") != (severity or SEVERITY.get(fid)):
            bad.append(f"severity {f.get('severity')}")
        if f.get("doc") != f"docs/DIAGNOSE.md#{fid}":
            bad.append(f"doc {f.get('doc')!r}")
        if not f.get("summary") or not f.get("remedy"):
            bad.append("summary or remedy empty")
        # Exit codes: 4 with any error finding, 5 with warnings only.
        if d.rc != (4 if any(x.get("severity") == "error" for x in d.findings) else 5):
            bad.append(f"exit {d.rc}")
        if conn is not None and f.get("conn") != conn:
            bad.append(f"conn {f.get('conn')!r}")
        if best is None or len(bad) < len(best_bad):
            best, best_bad = f, bad
    ok = best is not None and not best_bad
    if best is not None:
        detail = f"evidence {json.dumps(best.get('evidence'), sort_keys=True)[:600]}"
        if best_bad:
            detail += f"; wrong: {', '.join(best_bad)}"
    else:
        detail = d.brief()
    check(ok, f"{what}: diagnose on gw-{side} names {fid}", detail)
    if ok:
        print(f"  summary: {best.get('summary', '')[:300]}", flush=True)
    else:
        FINDINGS_LOG.append((what, side, fid, want, d))
    return d


# What the engine got wrong, for /work/plan/DIAG_E2E_FINDINGS.md (printed at the end).
FINDINGS_LOG: list[tuple[str, str, str, Want, Diag]] = []


def gt0(v) -> bool:
    return isinstance(v, (int, float)) and v > 0


def contains(s: str) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and s.lower() in v.lower()


def one_of(*vals) -> Callable[[Any], bool]:
    return lambda v: v in vals


def is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --- processes and readiness ----------------------------------------------------------------------

def wait_for(pred: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    """Readiness: poll `pred` until it returns something true or `timeout` s passed."""
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() > deadline:
            return v
        time.sleep(step)


def log_line(lab: Lab, side: str, tag: str, pattern: str, timeout: float = 10) -> str:
    """Readiness: the first line of iked-SIDE-TAG's log matching `pattern` (regex, no case)."""
    def find() -> str:
        return next((ln.strip() for ln in iked_log(lab, side, tag).splitlines() if re.search(pattern, ln, re.I)), "")
    return wait_for(find, timeout)


def fast(conf: str) -> str:
    """iked's configuration with short retransmissions."""
    assert "retransmit_ms = 500\n" in conf
    return conf.replace("retransmit_ms = 500\n", FAST_RETRANSMIT, 1)


def start_iked(lab: Lab, side: str, tag: str, conf: str, conf_dir: pathlib.Path | None = None) -> subprocess.Popen:
    """iked on gw-`side`, ready when its control socket answers."""
    p, _ = lab.start_iked(side, tag, conf, conf_dir=conf_dir)
    e2e_faults.wait_control(lab, side, p)
    return p


def stop(lab: Lab, *keys: str) -> None:
    """Stop the lab's processes `keys` (iked-SIDE-TAG, charon-SIDE, ping-...) and, for an iked,
    wait until its dataplane holds no SA (each phase starts from an empty dataplane)."""
    for k in keys:
        p = lab.procs.get(k)
        if p is None:
            continue
        if k.startswith("iked-") and p.poll() is None:
            side = k.split("-")[1]
            lab.vpnctl_iked(side, "down", CONN if side == "a" else "gw-a")
        if p.poll() is None:
            p.send_signal(signal.SIGTERM if not k.startswith("ping") else signal.SIGINT)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if k.startswith("iked-"):
            side = k.split("-")[1]
            if side in lab.procs:
                lab.wait_stats(side, lambda s: s["sa_count"] == 0, timeout=5)


def background(lab: Lab, key: str, ns: str, *cmd: str) -> subprocess.Popen:
    p = subprocess.Popen(["ip", "netns", "exec", lab.ns(ns), *cmd], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    lab.procs[key] = p
    return p


def nft(lab: Lab, ns: str, ruleset: str) -> None:
    r = subprocess.run(["ip", "netns", "exec", lab.ns(ns), "nft", "-f", "-"], input=ruleset, text=True,
                       capture_output=True, timeout=20)
    if r.returncode != 0:
        raise RuntimeError(f"nft in {ns}: {r.stderr.strip()}")


def nft_flush(lab: Lab, ns: str) -> None:
    ns_exec(lab.ns(ns), "nft", "flush", "ruleset", check=False)


def worker_drop(s: dict, reason: str) -> int:
    return sum(w.get("worker_drops", {}).get(reason, 0) for w in s.get("workers", []))


def no_error(lab: Lab, side: str, what: str) -> Diag:
    d = diagnose(lab, side)
    errs = [f for f in d.findings if f.get("severity") == "error"]
    check(d.doc is not None and d.doc.get("kind") == "diagnose" and not errs and d.rc in (0, 5),
          f"{what}: diagnose on gw-{side} reports no error finding (exit 0, or 5 with warnings only)",
          d.brief() + (f"; errors: {json.dumps(errs)[:400]}" if errs else ""))
    if d.rc != 0 or errs:
        FINDINGS_LOG.append((what, side, "(none)", {}, d))
    return d


# --- diag-healthy: a working tunnel, then no-policy and mtu-blackhole on it -------------------------

def healthy(lab: Lab) -> None:
    e2e_faults.start_pair(lab, fast(vpnlab.iked_conf(lab.case, "a", psk=PSK)),
                          fast(vpnlab.iked_conf(lab.case, "b", psk=PSK)))
    # Traffic through the tunnel while diagnose samples the counters.
    background(lab, "ping-healthy", "client-a", "ping", "-n", "-i", "0.05", lab.case.client("b"))
    for side in "ab":
        no_error(lab, side, "healthy tunnel with traffic")
    stop(lab, "ping-healthy")

    # no-policy: a subnet on client-a's link that no connection's traffic selectors include.
    ns_exec(lab.ns("client-a"), "ip", "addr", "add", "10.1.7.10/24", "dev", "ca0")
    before = worker_drop(lab.stats("a"), "no_policy")
    background(lab, "ping-nopolicy", "client-a", "ping", "-n", "-i", "0.05", "-I", "10.1.7.10",
               lab.case.client("b"))
    s = lab.wait_stats("a", lambda s: worker_drop(s, "no_policy") >= before + 5, timeout=10)
    n = worker_drop(s, "no_policy") - before
    check(n >= 5, "no-policy: gw-a's dataplane drops 10.1.7.10 -> 10.2.0.20 (no policy covers 10.1.7.0/24)",
          f"{n} no_policy drops")
    expect(lab, "a", "no-policy", {"no_policy_drops": gt0, "no_policy_total": lambda v: is_num(v) and v >= n,
                                   "window_s": gt0},
           "a subnet with no policy", severity="warning")
    stop(lab, "ping-nopolicy")
    ns_exec(lab.ns("client-a"), "ip", "addr", "del", "10.1.7.10/24", "dev", "ca0")

    # mtu-blackhole: WAN MTU 1300 on both gateways, DF pings of 1400 bytes (1428 on the wire),
    # and client-a drops the ICMP "fragmentation needed" the dataplane answers with.
    for side, ifc in (("a", "ga-out"), ("b", "gb-out")):
        ns_exec(lab.ns(f"gw-{side}"), "ip", "link", "set", ifc, "mtu", "1300")
    nft(lab, "client-a", """table inet icmpfilter {
  chain input {
    type filter hook input priority 0;
    icmp type destination-unreachable drop
  }
}
""")
    before = worker_drop(lab.stats("a"), "too_big_icmp_sent")
    background(lab, "ping-mtu", "client-a", "ping", "-n", "-i", "0.05", "-M", "do", "-s", "1400",
               lab.case.client("b"))
    s = lab.wait_stats("a", lambda s: worker_drop(s, "too_big_icmp_sent") >= before + 5, timeout=10)
    n = worker_drop(s, "too_big_icmp_sent") - before
    check(n >= 5, "mtu black hole: gw-a's dataplane drops the 1428-byte DF packets as too big for WAN MTU 1300 "
          "and answers each with ICMP", f"{n} too_big_icmp_sent")
    big = lab.ping("client-a", lab.case.client("b"), count=3, size=1400, df=True, interval=0.1)
    check(big.returncode != 0 and not re.search(r"mtu|frag", big.stdout, re.I),
          "mtu black hole: client-a's 1400-byte DF pings get no reply and no ICMP (it is filtered)",
          (big.stdout.strip().splitlines() or [""])[-2][-120:])
    small = lab.ping("client-a", lab.case.client("b"), count=2, size=1000, df=True, interval=0.1)
    check(small.returncode == 0, "mtu black hole: packets that fit still cross the tunnel (it is the size)",
          (small.stdout.strip().splitlines() or [""])[-1])
    expect(lab, "a", "mtu-blackhole", {
        "too_big_drops": gt0, "icmp_sent": gt0, "window_s": gt0, "wan_interface": "ga-out", "wan_mtu": 1300,
        "esp_overhead": lambda v: is_num(v) and 40 <= v <= 100,
        "max_inner": lambda v: is_num(v) and 1200 <= v < 1300}, "MTU black hole", severity="error")
    stop(lab, "ping-mtu")
    nft_flush(lab, "client-a")


# --- diag-negotiation: ours <-> ours, one misconfiguration at a time --------------------------------

def pair(lab: Lab, tag: str, conf_a: str, conf_b: str) -> tuple[subprocess.Popen, subprocess.Popen]:
    """gw-b's iked (responder) then gw-a's (initiator), both with short retransmissions."""
    pb = start_iked(lab, "b", tag, fast(conf_b))
    pa = start_iked(lab, "a", tag, fast(conf_a))
    return pa, pb


def negotiation(lab: Lab) -> None:
    lab.start_dataplane("a", ring=True)
    lab.start_dataplane("b", ring=True)
    c = lab.case

    # 1. Algorithms: disjoint IKE proposals.
    theirs_ike = "aes256-sha256-modp2048"
    pair(lab, "prop", vpnlab.iked_conf(c, "a", psk=PSK, ike=IKE), vpnlab.iked_conf(c, "b", psk=PSK, ike=theirs_ike))
    ln = log_line(lab, "b", "prop", r"no IKE proposal in common")
    check(bool(ln), "proposal mismatch: gw-b's iked refuses gw-a's IKE_SA_INIT (no proposal in common)", ln[-220:])
    ln = log_line(lab, "a", "prop", r"NO_PROPOSAL_CHOSEN|accepted none of our IKE proposals")
    check(bool(ln), "proposal mismatch: gw-a's iked hears that gw-b accepted none of its IKE proposals", ln[-220:])
    expect(lab, "b", "proposal-mismatch", {"proposal": "ike", "exchange": "IKE_SA_INIT", "side": "we",
                                           "ours": contains("modp2048"), "theirs": contains("x25519")},
           "proposal mismatch (responder)", conn="gw-a")
    expect(lab, "a", "proposal-mismatch", {"proposal": "ike", "exchange": "IKE_SA_INIT", "side": "peer",
                                           "ours": contains("x25519"), "notify": "NO_PROPOSAL_CHOSEN"},
           "proposal mismatch (initiator)", conn=CONN)
    stop(lab, "iked-a-prop", "iked-b-prop")

    # 2. Credentials: different pre-shared keys.
    pair(lab, "psk", vpnlab.iked_conf(c, "a", psk=PSK), vpnlab.iked_conf(c, "b", psk="another pre-shared key"))
    ln = log_line(lab, "a", "psk", r"AUTHENTICATION_FAILED")
    check(bool(ln), "PSK mismatch: gw-a's iked gets AUTHENTICATION_FAILED", ln[-220:])
    ln = log_line(lab, "b", "psk", r"pre-shared key .* differs")
    check(bool(ln), "PSK mismatch: gw-b's iked finds gw-a's AUTH does not verify with its key", ln[-160:])
    expect(lab, "b", "psk-mismatch", {"peer_id": "gw-a.example", "peer_role": "initiator"},
           "PSK mismatch (responder)", conn="gw-a")
    expect(lab, "a", "auth-rejected", {"our_id": "gw-a.example", "peer_role": "responder",
                                       "notify": "AUTHENTICATION_FAILED"},
           "PSK mismatch (initiator)", conn=CONN)
    stop(lab, "iked-a-psk", "iked-b-psk")

    # 3. Traffic selectors: gw-b expects gw-a's side to be 10.9.0.0/24.
    conf_b = vpnlab.iked_conf(c, "b", psk=PSK)
    assert 'remote_ts = ["10.1.0.0/24"]' in conf_b
    conf_b = conf_b.replace('remote_ts = ["10.1.0.0/24"]', 'remote_ts = ["10.9.0.0/24"]')
    pair(lab, "ts", vpnlab.iked_conf(c, "a", psk=PSK), conf_b)
    ln = log_line(lab, "a", "ts", r"TS_UNACCEPTABLE")
    check(bool(ln), "TS mismatch: gw-a's iked gets TS_UNACCEPTABLE", ln[-220:])
    check(lab.stats("a")["sa_count"] == 0, "TS mismatch: no Child SA installed")
    expect(lab, "b", "ts-mismatch", {"side": "we", "theirs": contains("10.1.0.0/24")},
           "TS mismatch (responder)", conn="gw-a")
    expect(lab, "a", "ts-mismatch", {"side": "peer", "ours": contains("10.1.0.0/24")},
           "TS mismatch (initiator)", conn=CONN)
    stop(lab, "iked-a-ts", "iked-b-ts")

    # 4. NAT traversal: encap on, IKE moves to UDP 4500 after IKE_SA_INIT; gw-b drops UDP 4500.
    nat = Case(nat_t=True)
    nft(lab, "gw-b", """table inet filter {
  chain input {
    type filter hook input priority 0;
    udp dport 4500 drop
  }
}
""")
    pair(lab, "natt", vpnlab.iked_conf(nat, "a", psk=PSK), vpnlab.iked_conf(nat, "b", psk=PSK))
    # Raw symptom: the rule counts what it drops (nft's counters need a counter statement; the
    # drop shows in gw-a's log as an IKE_AUTH that gets no answer).
    ln = log_line(lab, "a", "natt", r"IKE_AUTH.*(no answer|unanswered|giving up|retransmi)|(no answer|unanswered).*IKE_AUTH",
                  timeout=8)
    check(bool(ln), "UDP 4500 blocked: gw-a's IKE_AUTH on UDP 4500 goes unanswered", ln[-220:])
    expect(lab, "a", "natt-blocked", {"peer": f"{PEER_B}:4500", "port": 4500, "exchange": "IKE_AUTH",
                                      "direction": "out", "tries": gt0},
           "UDP 4500 blocked", conn=CONN)
    expect(lab, "b", "firewall-blocks-ike", {"rule": contains("udp dport 4500 drop"), "table": "inet filter",
                                             "chain": "input", "protocol": "udp", "port": 4500, "verdict": "drop"},
           "UDP 4500 blocked (the blocking gateway)")
    stop(lab, "iked-a-natt", "iked-b-natt")
    nft_flush(lab, "gw-b")


# --- diag-local: gw-a's own configuration, firewall and routes ----------------------------------------

def local(lab: Lab) -> None:
    lab.start_dataplane("a", ring=True)
    lab.start_dataplane("b", ring=True)
    c = lab.case

    # 1. A typo in iked's configuration: iked refuses to start.
    good = fast(vpnlab.iked_conf(c, "a", psk=PSK))
    bad = good.replace("esp_proposals =", "esp_propsals =", 1)
    line_no = next(i for i, ln in enumerate(bad.splitlines(), 1) if ln.startswith("esp_propsals"))
    p, _ = lab.start_iked("a", "typo", bad)
    try:
        rc = p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        rc = None
    out = iked_log(lab, "a", "typo")
    check(rc not in (None, 0) and "esp_propsals" in out, "config typo: iked refuses to start and names the field",
          f"exit {rc}: " + next((ln.strip()[:220] for ln in out.splitlines() if "esp_propsals" in ln), out.strip()[-220:]))
    path = lab.workdir / "iked-a-typo.toml"
    d = diagnose(lab, "a", "--config", str(path))
    # An unknown field: `field` is the key or the table holding it; the message names the key.
    expect(lab, "a", "config-error", {"file": str(path), "line": line_no, "field": contains("children.net"),
                                      "message": contains("esp_propsals")},
           "config typo (iked down)", diag=d)
    expect(lab, "a", "iked-down", {"socket": str(lab.workdir / "iked-a.sock")}, "config typo (iked down)", diag=d)

    # 2. The same typo written into a running iked's file, then `vpnctl reload`: refused.
    start_iked(lab, "b", "rl", fast(vpnlab.iked_conf(c, "b", psk=PSK)))
    pa = start_iked(lab, "a", "rl", good)
    path = lab.workdir / "iked-a-rl.toml"
    lab.wait_stats("a", lambda s: s["sa_count"] == 2, timeout=10)
    path.write_text(bad)
    r = lab.vpnctl_iked("a", "reload")
    check(r.returncode != 0 and pa.poll() is None, "config typo on reload: `vpnctl reload` is refused, iked keeps running",
          f"exit {r.returncode}: {r.stdout.strip()[:200]}")
    d = diagnose(lab, "a")
    expect(lab, "a", "reload-failed", {"at_unix_ms": gt0, "message": contains("esp_propsals")},
           "config typo on reload", diag=d)
    expect(lab, "a", "config-error", {"file": str(path), "line": line_no, "field": contains("children.net"),
                                      "message": contains("esp_propsals")},
           "config typo on reload", diag=d)
    path.write_text(good)
    stop(lab, "iked-a-rl", "iked-b-rl")

    # 3. A local firewall rule that drops IKE: nftables on gw-a drops UDP 500 going out.
    nft(lab, "gw-a", """table inet filter {
  chain output {
    type filter hook output priority 0;
    udp dport 500 drop
  }
}
""")
    handle = json.loads(ns_exec(lab.ns("gw-a"), "nft", "-j", "-a", "list", "chain", "inet", "filter", "output").stdout)
    handle = next(x["rule"]["handle"] for x in handle["nftables"] if "rule" in x)
    start_iked(lab, "b", "fw", fast(vpnlab.iked_conf(c, "b", psk=PSK)))
    start_iked(lab, "a", "fw", fast(vpnlab.iked_conf(c, "a", psk=PSK)))
    ln = log_line(lab, "a", "fw", r"not permitted|EPERM|no answer|unanswered|giving up", timeout=8)
    check(bool(ln), "firewall: gw-a's IKE_SA_INIT does not leave (send refused or unanswered)", ln[-220:])
    check(not iked_log(lab, "b", "fw").count("IKE_SA_INIT"), "firewall: gw-b never saw an IKE_SA_INIT")
    expect(lab, "a", "firewall-blocks-ike", {"rule": contains("udp dport 500 drop"), "table": "inet filter",
                                             "chain": "output", "hook": "output", "protocol": "udp", "port": 500,
                                             "verdict": "drop", "handle": handle},
           "a policy that blocks IKE")
    stop(lab, "iked-a-fw", "iked-b-fw")
    nft_flush(lab, "gw-a")

    # 4. No route to the peer: gw-a's WAN prefix route removed (its address stays).
    ns_exec(lab.ns("gw-a"), "ip", "route", "del", "192.0.2.0/24", "dev", "ga-out")
    ns_exec(lab.ns("gw-a"), "ip", "route", "del", "10.2.0.0/24", check=False)
    r = ns_exec(lab.ns("gw-a"), "ip", "route", "get", PEER_B, check=False)
    check(r.returncode != 0, "no route: `ip route get 192.0.2.2` fails in gw-a", r.stdout.strip()[-120:])
    start_iked(lab, "a", "rt", fast(vpnlab.iked_conf(c, "a", psk=PSK)))
    ln = log_line(lab, "a", "rt", r"unreachable", timeout=8)
    check(bool(ln), "no route: gw-a's iked cannot send to the peer", ln[-220:])
    expect(lab, "a", "no-route", {"peer": PEER_B, "route_error": lambda v: isinstance(v, str) and v != "",
                                  "source": one_of("route", "iked")}, "no route to the peer")
    stop(lab, "iked-a-rt")
    ns_exec(lab.ns("gw-a"), "ip", "route", "add", "192.0.2.0/24", "dev", "ga-out", "src", PEER_A)


# --- diag-strongswan: our iked on gw-a against charon on gw-b -----------------------------------------

def charon(lab: Lab, swanctl: str, **opts) -> Tail:
    """charon on gw-b; returns its log's new part (the log is appended to across restarts)."""
    tail = Tail(lab.swan_dir("b") / "charon.log")
    lab.start_charon("b", swanctl, options=dict(SWAN_RETRANSMIT, **opts))
    return tail


def swan_conf(lab: Lab, esp: str = "aes128gcm16", start: bool = True, **kw) -> str:
    return vpnlab.swanctl_conf(lab.case, "b", PSK, IKE, esp, start=start, **kw)


def our_responder(lab: Lab, tag: str, **kw) -> subprocess.Popen:
    return start_iked(lab, "a", tag, fast(vpnlab.iked_conf(lab.case, "a", psk=PSK, ike=IKE, start_action="none", **kw)),
                      conf_dir=kw.get("auth") and lab.iked_dir("a"))


def strongswan(lab: Lab) -> None:
    lab.start_dataplane("a", ring=True)

    # 1. AH: charon proposes AH for the Child SA.
    our_responder(lab, "ah")
    conf = swan_conf(lab).replace("esp_proposals = aes128gcm16", "ah_proposals = sha256")
    assert "ah_proposals = sha256" in conf
    clog = charon(lab, conf)
    ln = clog.wait(r"received NO_PROPOSAL_CHOSEN notify|failed to establish CHILD_SA")
    check(bool(ln), "AH: charon proposes AH and our iked refuses it", ln[-200:])
    check(bool(log_line(lab, "a", "ah", r"\bAH\b", timeout=2)), "AH: our log names AH",
          log_line(lab, "a", "ah", r"\bAH\b", timeout=0)[-220:])
    expect(lab, "a", "ah-proposed", {"theirs": lambda v: isinstance(v, str) and v != "", "side": "we"},
           "an AH peer", conn=CONN)
    stop(lab, "charon-b", "iked-a-ah")

    # 2. IKEv1: charon initiates Main Mode.
    our_responder(lab, "v1")
    conf = swan_conf(lab).replace("version = 2", "version = 1").replace(f"proposals = {IKE}", "proposals = aes128-sha256-modp2048")
    clog = charon(lab, conf)
    ln = clog.wait(r"initiating Main Mode")
    check(bool(ln), "IKEv1: charon initiates Main Mode to us", ln[-160:])
    ln = log_line(lab, "a", "v1", r"IKEv1", timeout=5)
    check(bool(ln), "IKEv1: our iked drops charon's IKEv1 message and says so", ln[-200:])
    expect(lab, "a", "ikev1-peer", {"datagrams": gt0, "peer": Opt(contains(PEER_B))}, "an IKEv1 peer")
    stop(lab, "charon-b", "iked-a-v1")

    # 3. PFS: charon wants a key exchange on its Child SA rekeys (3 s), we offer none.
    our_responder(lab, "pfs", esp_proposals="aes128gcm16")
    clog = charon(lab, swan_conf(lab, esp="aes128gcm16-x25519", rekey_time="0", child_rekey_time="3s",
                                 child_life_time="30s", child_rand_time="0"))
    s = lab.wait_stats("a", lambda s: s["sa_count"] == 2, timeout=10)
    check(s["sa_count"] == 2, "PFS mismatch: the tunnel comes up (no KE in IKE_AUTH)", f"{s['sa_count']} SAs")
    ln = clog.wait(r"received (NO_PROPOSAL_CHOSEN|INVALID_KE_PAYLOAD) notify|CHILD_SA rekeying failed", timeout=10)
    check(bool(ln), "PFS mismatch: charon's Child SA rekey with x25519 is refused", ln[-200:])
    expect(lab, "a", "pfs-mismatch", {"side": "we", "wants_pfs": "peer", "ours": contains("no key exchange"),
                                      "theirs": Opt(lambda v: isinstance(v, str) and re.search("x25519|curve", v, re.I))},
           "PFS mismatch", conn=CONN)
    stop(lab, "charon-b", "iked-a-pfs")

    # 4. Lifetimes: charon's Child SA lives 4 s and is not rekeyed; ours rekeys after 1 h.
    our_responder(lab, "life", child_rekey_time="1h")
    clog = charon(lab, swan_conf(lab, rekey_time="0", child_rekey_time="0", child_life_time="4s"))
    s = lab.wait_stats("a", lambda s: s["sa_count"] == 2, timeout=10)
    check(s["sa_count"] == 2, "lifetime mismatch: the tunnel comes up", f"{s['sa_count']} SAs")
    t0 = time.time()
    ln = clog.wait(r"closing expired CHILD_SA|deleting CHILD_SA|CHILD_SA .* expired", timeout=10)
    check(bool(ln), "lifetime mismatch: charon deletes the Child SA at its 4 s life_time", ln[-200:])
    ln = log_line(lab, "a", "life", r"peer deleted the Child SA after", timeout=5)
    check(bool(ln), "lifetime mismatch: our iked saw the peer delete the Child SA instead of rekeying it",
          f"{time.time() - t0:.1f} s after the tunnel came up: " + ln[-200:])
    expect(lab, "a", "lifetime-mismatch", {"our_rekey_s": 3600, "peer_interval_s": lambda v: is_num(v) and 3 <= v <= 8,
                                           "child": "net"}, "lifetime mismatch", conn=CONN)
    stop(lab, "charon-b", "iked-a-life")

    # 5. Clocks: charon's certificate is not valid before 2040 (charon initiates).
    pki = Pki(lab.workdir / "pki", {"a": PEER_A, "b": PEER_B})
    ours, theirs = pki.ee("a", "p256"), pki.ee("b", "notyet")
    pki.install(lab.iked_dir("a"), [ours], ["root", "im"])
    pki.install(lab.swan_dir("b"), [theirs], ["root", "im"])
    our_auth = Auth.pubkey(ours, theirs.dn, cacerts=["rootCert.pem"])
    our_responder(lab, "cert", auth=our_auth)
    clog = charon(lab, swan_conf(lab, auth=Auth.pubkey(theirs, ours.dn, cacerts=["rootCert.pem"])))
    ln = log_line(lab, "a", "cert", r"not (yet )?valid|notBefore|check the clocks", timeout=10)
    check(bool(ln), "certificate not yet valid: our iked refuses charon's certificate (valid from 2040)", ln[-220:])
    expect(lab, "a", "cert-not-yet-valid", {"whose": "peer", "subject": contains("OU=notyet"),
                                            "not_before": "2040-01-01 00:00:00 UTC", "skew_s": gt0},
           "a not-yet-valid certificate (the peer's)", conn=CONN)
    stop(lab, "charon-b", "iked-a-cert")

    # ... and our own certificate not yet valid: the certificate probe.
    mine = pki.ee("a", "notyet")
    pki.install(lab.iked_dir("a"), [mine], ["root", "im"])
    p, _ = lab.start_iked("a", "owncert", fast(vpnlab.iked_conf(lab.case, "a", psk=PSK, ike=IKE, start_action="none",
                                                               auth=Auth.pubkey(mine, theirs.dn, cacerts=["rootCert.pem"]))),
                          conf_dir=lab.iked_dir("a"))
    wait_for(lambda: lab.vpnctl_iked("a", "list").returncode == 0 or p.poll() is not None, 10)
    # Either way the probe must find it (iked may refuse such a certificate at start or not).
    print("  our own not-yet-valid certificate: iked "
          + ("runs" if p.poll() is None else f"exited {p.returncode}: {iked_log(lab, 'a', 'owncert').strip()[-200:]}"),
          flush=True)
    expect(lab, "a", "cert-not-yet-valid", {"whose": "ours", "subject": contains("OU=notyet"),
                                            "not_before": "2040-01-01 00:00:00 UTC", "skew_s": gt0,
                                            "file": contains(mine.cert.name)},
           "a not-yet-valid certificate (ours)", extra=("--config", str(lab.iked_dir("a") / "iked-a-owncert.toml")))
    stop(lab, "iked-a-owncert")


SCENARIOS = {
    "diag-healthy": (Case(), healthy),
    "diag-negotiation": (Case(), negotiation),
    "diag-local": (Case(), local),
    "diag-strongswan": (Case(nat_t=True), strongswan),
}


def report_misses() -> None:
    """What diagnose got wrong, in a form to paste into DIAG_E2E_FINDINGS.md."""
    if not FINDINGS_LOG:
        return
    print("--- diagnose misses (input: the provocation; output: what diagnose printed) ---")
    for what, side, fid, want, d in FINDINGS_LOG:
        keys = {k: ("<optional>" if isinstance(v, Opt) else "<pred>" if callable(v) else v) for k, v in want.items()}
        print(f"* {what}, gw-{side}: wanted {fid} with {keys}")
        print(f"  got {d.brief()}")
        for f in d.findings:
            print(f"    {f.get('id')} [{f.get('severity')}] conn={f.get('conn')} evidence="
                  f"{json.dumps(f.get('evidence'), sort_keys=True)[:500]}")


def run(case_name: str, dataplane: str, vpnctl: str) -> int:
    case, fn = SCENARIOS[case_name]
    e2e.VPNCTL = vpnctl
    e2e_faults.check = check
    lab = Lab(name=vpnlab.unique_name("dg" + case_name.split("-")[-1][:4]), case=case, dataplane=dataplane,
              vpnctl=vpnctl)
    t0 = time.time()
    try:
        lab.up()
        fn(lab)
    except Exception as e:  # noqa: BLE001
        check(False, f"{case_name} ran to the end", repr(e))
    finally:
        report_misses()
        if e2e.failures:
            for log in sorted(lab.workdir.glob("strongswan-*/charon.log")):
                print(f"--- {log.parent.name}/{log.name} ---\n{log.read_text()[-3000:]}")
        print(f"  {case_name}: {time.time() - t0:.0f} s", flush=True)
    return e2e.teardown(lab, case_name)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("--vpnctl", default="", help="vpnctl binary (default: next to the dataplane)")
    ap.add_argument("case", choices=sorted(SCENARIOS))
    a = ap.parse_args()
    vpnctl = a.vpnctl or str(pathlib.Path(a.dataplane).with_name("vpnctl"))
    return run(a.case, a.dataplane, vpnctl)


if __name__ == "__main__":
    sys.exit(main())
