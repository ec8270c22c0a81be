"""Fault scenarios for iked + dataplane in network namespaces (issue 11), run by e2e.py:

    e2e.py --dataplane PATH iked-kill | iked-dataplane-kill | iked-down | iked-dpd | iked-flood | iked-nat

Each one brings a tunnel up with our iked on both gateways (keying our dataplanes over their
rings), runs a ping every 0.02 s from client-a to client-b with a capture on both WAN
interfaces, injects its fault, and checks what docs/ARCHITECTURE.md ("Faults and restarts")
says must happen. Every scenario asserts that no clear-text packet between the protected
networks crossed the WAN, and prints the loss (echo requests lost, longest time without a
reply) against a bound stated in the check's text.
"""
from __future__ import annotations

import re
import struct
import subprocess
import sys
import threading
import time
from typing import Callable

import vpnlab
from vpnlab import Lab

# e2e.py's check(ok, what, detail): set by run().
check: Callable[..., None] = lambda ok, what, detail="": None  # noqa: E731

PING_INTERVAL = 0.02
CONN = "gw-b"  # gw-a's connection name (iked_conf names it after the peer)


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class PingMonitor:
    """`ping -i 0.02` client-a -> client-b in the background, each reply's arrival time kept."""

    def __init__(self, lab: Lab):
        self.t0 = time.time()
        self.p = subprocess.Popen(["ip", "netns", "exec", lab.ns("client-a"), "ping", "-n", "-i", str(PING_INTERVAL),
                                   "-W", "1", lab.case.client("b")],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lab.procs["ping-monitor"] = self.p
        self.replies: list[float] = []
        self.lines: list[str] = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line)
            if re.search(r"icmp_seq=\d+ ttl=", line):
                self.replies.append(time.time())

    def last_reply(self) -> float:
        return self.replies[-1] if self.replies else 0.0

    def wait(self, pred, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return True
            time.sleep(0.01)
        return pred()

    def replies_after(self, t: float) -> int:
        return sum(1 for r in self.replies if r > t)

    def flowing(self, timeout: float = 10) -> bool:
        """Readiness: 10 replies in a row arrived after now."""
        t = time.time()
        return self.wait(lambda: self.replies_after(t) >= 10, timeout)

    def gap(self, since: float, until: float | None = None) -> float:
        """The longest time without a reply between `since` and `until` (default: now)."""
        until = until or time.time()
        times = [since] + [r for r in self.replies if since < r < until] + [until]
        return max(b - a for a, b in zip(times, times[1:]))

    def stop(self) -> tuple[int, int]:
        """(transmitted, received) from ping's own summary."""
        self.p.send_signal(2)
        self.p.wait(timeout=10)
        self.t.join(timeout=5)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", "".join(self.lines))
        return (int(m.group(1)), int(m.group(2))) if m else (0, len(self.replies))


def wait_control(lab: Lab, side: str, p: subprocess.Popen, timeout: float = 10) -> None:
    """Readiness of an iked: its control socket answers `vpnctl list` (a stale socket file
    left by a killed one refuses connections)."""
    deadline = time.time() + timeout
    while lab.vpnctl_iked(side, "list").returncode != 0:
        if p.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"iked on gw-{side} does not answer on its control socket:\n" + iked_logs(lab))
        time.sleep(0.05)


def iked_logs(lab: Lab) -> str:
    return "\n".join(f"--- {log.name}\n{plain(log.read_text())[-2500:]}" for log in sorted(lab.workdir.glob("iked-*.log")))


def iked_log(lab: Lab, side: str, tag: str) -> str:
    p = lab.workdir / f"iked-{side}-{tag}.log"
    return plain(p.read_text()) if p.exists() else ""


def wait_ready(lab: Lab, p: subprocess.Popen, ready, timeout: float = 20) -> float:
    """Readiness: iked writes its ready file once every `start` child is installed. Returns
    the seconds it took."""
    t0 = time.time()
    while not ready.exists():
        if p.poll() is not None or time.time() - t0 > timeout:
            raise RuntimeError("iked did not bring the tunnel up:\n" + iked_logs(lab))
        time.sleep(0.02)
    return time.time() - t0


def start_pair(lab: Lab, conf_a: str | None = None, conf_b: str | None = None) -> dict:
    """Dataplanes on both gateways, iked on gw-b (responder) then gw-a (initiator); returns
    the iked Popens by side once the tunnel carries ping."""
    lab.start_dataplane("a", ring=True)
    lab.start_dataplane("b", ring=True)
    pb, _ = lab.start_iked("b", "1", conf_b or vpnlab.iked_conf(lab.case, "b"))
    wait_control(lab, "b", pb)
    pa, ready = lab.start_iked("a", "1", conf_a or vpnlab.iked_conf(lab.case, "a"))
    took = wait_ready(lab, pa, ready)
    for side in "ab":
        s = lab.wait_stats(side, lambda s: s["sa_count"] == 2, timeout=10)
        check(s["sa_count"] == 2, f"gw-{side}: the tunnel is up (2 SAs installed by iked)",
              f"{s['sa_count']} SAs, {s['policy_count']} policies; {took:.2f} s from gw-a's iked start")
    lab.wait_next_hop("a")
    lab.wait_next_hop("b")
    lab.warm_up()
    return {"a": pa, "b": pb}


def control_ping(lab: Lab) -> None:
    """Control for the WAN check: a ping from client-a to gw-b's WAN address is outside every
    policy and routed in clear; the capture must see it (else "no clear text" proves nothing)."""
    r = lab.ping("client-a", lab.case.public("b"), count=2, interval=0.1)
    check(r.returncode == 0, "control: a ping to gw-b's WAN address is routed in clear")


def clean_wan(cap, what: str = "") -> None:
    from scapy.all import ICMP, IP  # noqa: PLC0415

    dst = cap.lab.case.public("b")
    seen = cap.count(lambda p: IP in p and ICMP in p and p[IP].dst == dst and p[ICMP].type == 8,
                     f"icmp and dst host {dst}")
    check(seen >= 2, "control: the WAN capture saw the clear ping to gw-b's WAN address", f"{seen} packets")
    leaks = cap.clear_text()
    check(not leaks, "no clear-text packet between the protected networks crossed the WAN" + (f" ({what})" if what else ""),
          f"{len(leaks)} leaked" + (f", first: {leaks[0]}" if leaks else ""))


def loss_line(mon: PingMonitor, sent: int, got: int, what: str, gaps: dict[str, float]) -> int:
    lost = sent - got
    g = ", ".join(f"{k}: {v:.2f} s without a reply" for k, v in gaps.items())
    print(f"  {what}: {lost} of {sent} echo requests lost at {PING_INTERVAL} s; {g}", flush=True)
    return lost


def sa_spis(lab: Lab, side: str) -> set[str]:
    return {x["spi"] for x in lab.stats(side)["sas"]}


def children_up(listing: str) -> int:
    return len(re.findall(r"child net: in spi", listing))


# --- 1. iked-kill ----------------------------------------------------------------------------

KILL_LOSS_BOUND = 25  # echo requests (0.5 s at 0.02 s) per iked restart: the old SAs forward
STALE_GRACE = 5.0     # inherited SAs go 5 s after their replacement is up (ARCHITECTURE.md)


def iked_kill(lab: Lab) -> None:
    """kill -9 iked on the initiator, then on the responder; each restarts with the same
    configuration. The dataplanes keep forwarding on the SAs they hold; the new iked inherits
    them, negotiates again with INITIAL_CONTACT (the peer drops its old IKE SA), and removes
    the inherited SAs once the new ones are up."""
    procs = start_pair(lab)
    with lab.wan_capture("iked-kill") as cap:
        control_ping(lab)
        mon = PingMonitor(lab)
        check(mon.flowing(), "the 0.02 s ping flows through the tunnel", f"{len(mon.replies)} replies")
        for n, side in enumerate(("a", "b")):
            role = "initiator" if side == "a" else "responder"
            peer = "b" if side == "a" else "a"
            tag = str(n + 2)
            old = {s: sa_spis(lab, s) for s in "ab"}
            ic_line = "the peer sent INITIAL_CONTACT: dropping the IKE SA it forgot"
            ic0 = sum(iked_log(lab, peer, t).count(ic_line) for t in ("1", "2", "3"))
            t_kill = time.time()
            pid = vpnlab.kill9(procs[side], "iked")
            check(lab.stats(side)["sa_count"] == 2, f"{role} iked killed (pid {pid}): gw-{side}'s dataplane keeps its SAs")
            time.sleep(0.5)  # a window in which no iked runs on gw-{side}: the old SAs forward
            got_down = mon.replies_after(t_kill)
            check(got_down >= 15, f"while gw-{side} has no iked the old SAs keep forwarding",
                  f"{got_down} replies in the {time.time() - t_kill:.2f} s after the kill")
            t_start = time.time()
            p, ready = lab.start_iked(side, tag, vpnlab.iked_conf(lab.case, side))
            procs[side] = p
            wait_control(lab, side, p)
            # Readiness: the new Child SA is up on both sides and the inherited SAs are gone.
            def settled() -> bool:
                now = {s: sa_spis(lab, s) for s in "ab"}
                return all(len(now[s]) == 2 and not (now[s] & old[s]) for s in "ab")
            ok = mon.wait(settled, 20 + STALE_GRACE)
            t_settled = time.time()
            now = {s: sa_spis(lab, s) for s in "ab"}
            bound = STALE_GRACE + 5
            check(ok and t_settled - t_start < bound,
                  f"after the {role} restart each dataplane holds only the 2 new SAs within {bound:.0f} s "
                  f"(stale-SA grace {STALE_GRACE:.0f} s + 5 s)",
                  f"{t_settled - t_start:.2f} s; gw-a {sorted(now['a'])}, gw-b {sorted(now['b'])}")
            log = iked_log(lab, side, tag)
            check("the dataplane holds SAs of a previous iked" in log and "removing SAs inherited" in log,
                  f"the restarted {role} iked adopted the dataplane's SAs, then removed them once replaced",
                  next((ln[-140:] for ln in log.splitlines() if "previous iked" in ln), "no such log line"))
            ic1 = sum(iked_log(lab, peer, t).count(ic_line) for t in ("1", "2", "3"))
            check(ic1 == ic0 + 1, f"gw-{peer} honoured INITIAL_CONTACT from the restarted {role} (dropped the old "
                  "IKE SA, logged once)", f"{ic1 - ic0} new log line(s): {ic_line!r}")
            for s in "ab":
                lst = lab.vpnctl_iked(s, "list").stdout
                check("(1 IKE SA)" in lst and children_up(lst) == 1 and "inherited" not in lst,
                      f"after the {role} restart `vpnctl list` on gw-{s}: one established IKE SA with one Child SA, "
                      "nothing inherited", plain(lst).strip().replace("\n", " | ")[:300])
            time.sleep(0.3)
            gap = mon.gap(t_kill)
            print(f"  {role} restart: longest time without a reply {gap:.2f} s from the kill to "
                  f"{time.time() - t_kill:.2f} s after it; new SAs only after {t_settled - t_kill:.2f} s", flush=True)
            check(gap < KILL_LOSS_BOUND * PING_INTERVAL,
                  f"the {role} restart costs less than {KILL_LOSS_BOUND * PING_INTERVAL:.1f} s of replies "
                  f"({KILL_LOSS_BOUND} echo requests)", f"longest gap {gap:.2f} s")
        sent, got = mon.stop()
    lost = loss_line(mon, sent, got, "iked-kill (both restarts)", {"longest": mon.gap(mon.t0, mon.last_reply())})
    check(lost <= 2 * KILL_LOSS_BOUND, f"loss over both restarts within {2 * KILL_LOSS_BOUND} echo requests",
          f"{lost} lost of {sent}")
    clean_wan(cap, "across both iked restarts")


# --- 2. iked-dataplane-kill -------------------------------------------------------------------

SEQ_LEASE = 4 * 2**20   # the first sequence lease of an outbound SA (as the ring case checks)
DP_KILL_GAP_BOUND = 5.0  # s without replies: 1 s down by design + dataplane start + replay


def iked_dataplane_kill(lab: Lab) -> None:
    """kill -9 gw-a's dataplane under iked and restart it: its Hello makes iked replay every
    policy and Child SA; outbound sequence numbers continue above what was used."""
    start_pair(lab)
    with lab.wan_capture("dp-kill") as cap:
        control_ping(lab)
        mon = PingMonitor(lab)
        check(mon.flowing(), "the 0.02 s ping flows through the tunnel", f"{len(mon.replies)} replies")
        before = lab.wait_stats("a", lambda s: True)
        out0 = [x for x in before["sas"] if x["direction"] == "out"]
        seq0 = out0[0]["last_seq"] if out0 else 0
        pkts0 = out0[0]["packets"] if out0 else 0
        t_kill = time.time()
        lab.procs["a"].kill()
        lab.procs["a"].wait()
        # Stats are written every 200 ms: what the dead dataplane used may be a little more
        # than its last file said. The sequence number must pass the lease, not just that.
        lost = mon.wait(lambda: time.time() - mon.last_reply() > 0.3, 5)
        check(lost, "pings are lost while gw-a's dataplane is down",
              f"last reply {mon.last_reply() - t_kill:+.2f} s after the kill")
        time.sleep(1.0)
        t_restart = time.time()
        lab.start_dataplane("a", ring=True)
        s = lab.wait_stats("a", lambda s: s["sa_count"] == 2 and s["policy_count"] >= 2, timeout=10)
        t_sas = time.time()
        check(s["sa_count"] == 2, "iked replayed the Child SA into the restarted dataplane",
              f"{s['sa_count']} SAs, {s['policy_count']} policies, {t_sas - t_restart:.2f} s after the restart began")
        log = iked_log(lab, "a", "1")
        check("the dataplane (re)started: replaying every policy and Child SA" in log,
              "iked logged the dataplane's Hello and the replay")
        back = mon.wait(lambda: mon.last_reply() > t_restart, 20)
        t_back = mon.last_reply()
        check(back, "pings pass again after the replay", f"{t_back - t_restart:.2f} s after the restart began")
        s = lab.wait_stats("a", lambda s: any(x["direction"] == "out" and x["packets"] > 10 for x in s["sas"]))
        out1 = [x for x in s["sas"] if x["direction"] == "out"]
        seq1 = out1[0]["last_seq"] if out1 else 0
        check(bool(out1) and out1[0]["spi"] == out0[0]["spi"] and seq1 > seq0 + out1[0]["packets"] and seq1 > SEQ_LEASE,
              "the replayed outbound SA (same SPI) resumed above the sequence numbers used before the kill and "
              f"above the first persisted lease ({SEQ_LEASE}: no nonce reuse)",
              f"spi {out1[0]['spi'] if out1 else '?'}: last_seq {seq0} ({pkts0} packets) before the kill, "
              f"{seq1} after {out1[0]['packets'] if out1 else 0} more packets")
        r = lab.vpnctl_iked("a", "list").stdout
        check("established" in r and children_up(r) == 1, "vpnctl list: still one established Child SA",
              plain(r).strip().replace("\n", " | ")[:200])
        time.sleep(0.3)
        sent, got = mon.stop()
    gap = mon.gap(t_kill - 0.1, t_back + 0.01) if back else float("nan")
    loss_line(mon, sent, got, "dataplane kill", {"outage": gap})
    check(back and gap < DP_KILL_GAP_BOUND,
          f"no reply for less than {DP_KILL_GAP_BOUND:.0f} s (1 s down by design, then start and replay)",
          f"{gap:.2f} s, {sent - got} lost of {sent}")
    clean_wan(cap, "across the dataplane restart")


# --- 3. iked-down -----------------------------------------------------------------------------

UP_RECOVERY_BOUND = 3.0  # s from `vpnctl up` to the first reply


def iked_down(lab: Lab) -> None:
    """`vpnctl down` on gw-a: the Child SAs go, the base policies stay (fail-closed), pings
    fail; `vpnctl up` right after brings it back."""
    start_pair(lab)
    with lab.wan_capture("down") as cap:
        control_ping(lab)
        mon = PingMonitor(lab)
        check(mon.flowing(), "the 0.02 s ping flows through the tunnel", f"{len(mon.replies)} replies")
        t_down = time.time()
        r = lab.vpnctl_iked("a", "down", CONN)
        check(r.returncode == 0, "vpnctl down gw-b", r.stdout.strip())
        lost = mon.wait(lambda: time.time() - mon.last_reply() > 0.3, 5)
        check(lost, "pings fail after vpnctl down", f"last reply {mon.last_reply() - t_down:+.2f} s after it")
        for side in "ab":
            s = lab.wait_stats(side, lambda s: s["sa_count"] == 0)
            check(s["sa_count"] == 0 and s["policy_count"] >= 1,
                  f"gw-{side}'s dataplane: no SA, the base (fail-closed) policy stays",
                  f"{s['sa_count']} SAs, {s['policy_count']} policies")
        lst = lab.vpnctl_iked("a", "list").stdout
        check(re.search(r", down\b", lst) is not None and "traffic for it is dropped (fail-closed)" in lst,
              "vpnctl list says the connection is down and its traffic dropped", plain(lst).strip().replace("\n", " | "))
        time.sleep(1.0)  # ~50 echo requests into the fail-closed policy
        nosa = sum(w["worker_drops"].get("no_sa", 0) for w in lab.stats("a")["workers"])
        check(nosa >= 20, "gw-a's dataplane dropped and counted them (no_sa)", f"no_sa {nosa}")
        t_up = time.time()
        r = lab.vpnctl_iked("a", "up", CONN)
        check(r.returncode == 0 and "initiating" in r.stdout, "vpnctl up right after down is accepted", r.stdout.strip())
        back = mon.wait(lambda: mon.last_reply() > t_up, 10)
        t_back = mon.last_reply()
        check(back and t_back - t_up < UP_RECOVERY_BOUND,
              f"traffic is back within {UP_RECOVERY_BOUND:.0f} s of vpnctl up",
              f"{t_back - t_up:.2f} s" if back else "no reply")
        lst = lab.vpnctl_iked("a", "list").stdout
        check("established" in lst and children_up(lst) == 1, "vpnctl list: established again, one Child SA",
              plain(lst).strip().replace("\n", " | ")[:200])
        time.sleep(0.3)
        sent, got = mon.stop()
    loss_line(mon, sent, got, "down/up", {"outage": (t_back - t_down) if back else float("nan"),
                                          "up to first reply": (t_back - t_up) if back else float("nan")})
    clean_wan(cap, "while the connection was down")


# --- 4. iked-dpd ------------------------------------------------------------------------------

DPD_DELAY, DPD_TIMEOUT, DPD_SLACK = 2.0, 4.0, 2.0


def iked_dpd(lab: Lab) -> None:
    """gw-b's iked and dataplane die (kill -9); gw-a's DPD (dpd_delay 2 s, dpd_timeout 4 s)
    declares the peer dead, removes the SAs (traffic dropped) and says so."""
    conf = vpnlab.iked_conf(lab.case, "a", dpd_delay=f"{DPD_DELAY:.0f}s", dpd_timeout=f"{DPD_TIMEOUT:.0f}s",
                            dpd_action="clear")
    procs = start_pair(lab, conf_a=conf)
    with lab.wan_capture("dpd") as cap:
        control_ping(lab)
        mon = PingMonitor(lab)
        check(mon.flowing(), "the 0.02 s ping flows through the tunnel", f"{len(mon.replies)} replies")
        # Idle DPD: with ESP arriving, gw-a never probes.
        time.sleep(DPD_DELAY + 1)
        log0 = iked_log(lab, "a", "1")
        check("dead" not in log0, "while ESP flows gw-a's DPD declares nothing")
        t_kill = time.time()
        vpnlab.kill9(procs["b"], "iked")
        lab.procs["b"].kill()
        lab.procs["b"].wait()
        bound = DPD_DELAY + DPD_TIMEOUT + DPD_SLACK
        dead = mon.wait(lambda: "is dead" in iked_log(lab, "a", "1"), bound + 5)
        t_dead = time.time()
        line = next((ln for ln in iked_log(lab, "a", "1").splitlines() if "is dead" in ln), "")
        check(dead and t_dead - t_kill <= bound,
              f"gw-a's DPD declares gw-b dead within dpd_delay + dpd_timeout + {DPD_SLACK:.0f} s = {bound:.0f} s",
              f"{t_dead - t_kill:.2f} s after the kill: {line[-220:]}")
        lst = lab.vpnctl_iked("a", "list").stdout
        check("established" not in lst and "dead" in lst and "traffic for it is dropped (fail-closed)" in lst,
              "vpnctl list on gw-a says the peer is dead and the traffic dropped", plain(lst).strip().replace("\n", " | "))
        s = lab.wait_stats("a", lambda s: s["sa_count"] == 0)
        check(s["sa_count"] == 0 and s["policy_count"] >= 1, "gw-a's dataplane holds 0 SAs, the base policy stays",
              f"{s['sa_count']} SAs, {s['policy_count']} policies")
        n0 = sum(w["worker_drops"].get("no_sa", 0) for w in s["workers"])
        s = lab.wait_stats("a", lambda s: sum(w["worker_drops"].get("no_sa", 0) for w in s["workers"]) >= n0 + 20, 3)
        n1 = sum(w["worker_drops"].get("no_sa", 0) for w in s["workers"])
        check(n1 >= n0 + 20, "and still drops the pings (no_sa counted)", f"no_sa {n0} -> {n1}")
        sent, got = mon.stop()
    loss_line(mon, sent, got, "dead peer (every request after the kill is lost by design)",
              {"after the kill": time.time() - max(t_kill, mon.last_reply())})
    check(mon.replies_after(t_kill + 1.5) == 0, "no reply after the peer died (nothing answers it)")
    print(f"  DPD: peer declared dead {t_dead - t_kill:.2f} s after the kill "
          f"(dpd_delay {DPD_DELAY:.0f} s, dpd_timeout {DPD_TIMEOUT:.0f} s)", flush=True)
    clean_wan(cap, "after the peer died")


# --- 5. iked-flood ----------------------------------------------------------------------------

FLOOD_COUNT = 20_000
FLOOD_RATE = 4_000         # datagrams per second: the flood lasts 5 s, gw-a's iked starts 1 s in
# iked's VmRSS includes the shared-memory ring and counters file it maps (RssShmem, ~26 MB
# here, the same before and after): the bound is on VmRSS as a whole, and on the growth of its
# private memory (RssAnon: the SA maps, half-open state, buffers).
FLOOD_RSS_BOUND_KB = 40 * 1024
FLOOD_ANON_GROWTH_BOUND_KB = 8 * 1024
FLOOD_LOG_BOUND = 100      # lines in gw-b's iked log for the whole scenario

# Spoofed IKE_SA_INIT requests from gw-a's address (random source ports: a pool of sockets
# bound to port 0), each with a fresh random SPIi, KE and nonce. Prints the count sent.
FLOOD = r"""
import os, socket, struct, sys, time
src, dst, count, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

def payload(nxt, body):
    return struct.pack("!BBH", nxt, 0, 4 + len(body)) + body

def transform(last, ttype, tid, attrs=b""):
    return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), ttype, 0, tid) + attrs

def message():
    # RFC 7296 §3.3: one proposal, ENCR_AES_GCM_16 (20) with a 128-bit key, PRF_HMAC_SHA2_256
    # (5), DH group 31 (x25519).
    ts = transform(False, 1, 20, struct.pack("!HH", 0x800E, 128)) + transform(False, 2, 5) + transform(True, 4, 31)
    prop = struct.pack("!BBHBBBB", 0, 0, 8 + len(ts), 1, 1, 0, 3) + ts
    body = payload(34, prop) + payload(40, struct.pack("!HH", 31, 0) + os.urandom(32)) + payload(0, os.urandom(32))
    # §3.1: SPIi random, SPIr 0, next payload SA (33), version 2.0, IKE_SA_INIT (34), Initiator.
    hdr = os.urandom(8) + bytes(8) + struct.pack("!BBBBII", 33, 0x20, 34, 0x08, 0, 28 + len(body))
    return hdr + body

socks = []
for _ in range(64):
    s = socket.socket(socket.AF_INET6 if ":" in src else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.setblocking(False)
    socks.append(s)
print("ready", flush=True)
t0 = time.time()
sent = 0
for i in range(count):
    try:
        socks[i % len(socks)].sendto(message(), (dst, 500))
        sent += 1
    except BlockingIOError:
        pass
    ahead = t0 + (i + 1) / rate - time.time()
    if ahead > 0:
        time.sleep(ahead)
    if i % 256 == 0:
        for s in socks:  # drain the cookie answers
            try:
                while s.recv(2048):
                    pass
            except BlockingIOError:
                pass
print(sent, f"{time.time() - t0:.2f}", flush=True)
"""


def iked_flood(lab: Lab) -> None:
    """20 000 spoofed IKE_SA_INIT at gw-b from gw-a's address while gw-a's real iked starts:
    gw-b answers with COOKIEs (RFC 7296 §2.6), its memory and log stay bounded, and the real
    peer (which answers the cookie) connects during the flood."""
    lab.start_dataplane("a", ring=True)
    lab.start_dataplane("b", ring=True)
    pb, _ = lab.start_iked("b", "1", vpnlab.iked_conf(lab.case, "b"))
    wait_control(lab, "b", pb)
    pid = vpnlab.own_pid(pb, "iked")
    rss0 = vpnlab.vm_rss_kb(pid)
    anon0 = vpnlab.vm_rss_kb(pid, "RssAnon")
    shm0 = vpnlab.vm_rss_kb(pid, "RssShmem")
    with lab.wan_capture("flood") as cap:
        flood = subprocess.Popen(["ip", "netns", "exec", lab.ns("gw-a"), sys.executable, "-c", FLOOD, lab.case.outer("a"),
                                  lab.case.public("b"), str(FLOOD_COUNT), str(FLOOD_RATE)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lab.procs["flood"] = flood
        first = flood.stdout.readline().strip() if flood.stdout else ""
        check(first == "ready", "flood sender ready in gw-a's namespace", first)
        control_ping(lab)
        t_flood = time.time()
        peak = [rss0, anon0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], vpnlab.vm_rss_kb(pid))
                peak[1] = max(peak[1], vpnlab.vm_rss_kb(pid, "RssAnon"))
                time.sleep(0.05)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        time.sleep(1.0)
        pa, ready = lab.start_iked("a", "1", vpnlab.iked_conf(lab.case, "a"))
        t_start = time.time()
        up = True
        try:
            wait_ready(lab, pa, ready, 20)
        except RuntimeError as e:
            up = False
            print(str(e)[-3000:])
        t_up = time.time()
        flooding = flood.poll() is None
        check(up, "gw-a's real iked connects during the flood",
              f"{t_up - t_start:.2f} s after its start, {t_up - t_flood:.2f} s into the flood; flood "
              f"{'still running' if flooding else 'over'}")
        out, _ = flood.communicate(timeout=60)
        t_end = time.time()
        sent = int(out.split()[0]) if out.split() else 0
        check(sent >= FLOOD_COUNT * 0.99, f"{FLOOD_COUNT} spoofed IKE_SA_INIT sent to gw-b:500 from gw-a's address",
              f"{sent} sent in {out.split()[1] if len(out.split()) > 1 else '?'} s")
        if up:
            lab.wait_next_hop("a")
            lab.wait_next_hop("b")
            lab.warm_up()
            mon = PingMonitor(lab)
            check(mon.flowing(), "the tunnel carries the 0.02 s ping", f"{len(mon.replies)} replies")
            time.sleep(2.0)
            sent_p, got_p = mon.stop()
            lost = loss_line(mon, sent_p, got_p, "after the flood", {"longest": mon.gap(mon.t0 + 0.5, mon.last_reply())})
            check(lost <= 2, "ping through the tunnel after the flood loses at most 2", f"{lost} lost of {sent_p}")
        # Half-open SAs expire after 30 s; memory is measured at the peak and after.
        time.sleep(1.0)
        stop.set()
        sampler.join()
    rss1 = vpnlab.vm_rss_kb(pid)
    anon1 = vpnlab.vm_rss_kb(pid, "RssAnon")
    print(f"  gw-b iked VmRSS: {rss0} kB before (RssShmem {shm0} kB: the ring), peak {peak[0]} kB during, {rss1} kB "
          f"{time.time() - t_end:.1f} s after; RssAnon {anon0} kB before, peak {peak[1]} kB, {anon1} kB after", flush=True)
    check(peak[0] < FLOOD_RSS_BOUND_KB, f"gw-b's iked VmRSS stays under {FLOOD_RSS_BOUND_KB // 1024} MB during the flood",
          f"{rss0} kB -> peak {peak[0]} kB, {rss1} kB after")
    check(peak[1] - anon0 < FLOOD_ANON_GROWTH_BOUND_KB,
          f"its private memory (RssAnon) grows by less than {FLOOD_ANON_GROWTH_BOUND_KB // 1024} MB",
          f"{anon0} kB -> peak {peak[1]} kB (+{peak[1] - anon0} kB), {anon1} kB after")
    log = iked_log(lab, "b", "1")
    lines = log.count("\n")
    check(lines <= FLOOD_LOG_BOUND, f"gw-b's iked log stays small (at most {FLOOD_LOG_BOUND} lines for {FLOOD_COUNT} "
          "spoofed requests: rate-limited summaries)", f"{lines} lines, {len(log.encode())} bytes")
    lst = lab.vpnctl_iked("b", "list").stdout
    check("established" in lst and children_up(lst) == 1, "vpnctl list on gw-b: the real peer's SA established",
          plain(lst).strip().replace("\n", " | ")[:200])
    ck = sum(1 for p in cap.packets("b", "udp src port 500") if _is_cookie_answer(p))
    check(ck > 0, "gw-b answered the flood with COOKIE challenges", f"{ck} COOKIE answers captured on gb-out")
    clean_wan(cap, "during the flood")


def _is_cookie_answer(p) -> bool:
    from scapy.all import UDP  # noqa: PLC0415

    udp = p.getlayer(UDP)
    if udp is None or udp.sport != 500:
        return False
    raw = bytes(udp.payload)
    # IKE_SA_INIT response whose first payload is Notify (41) of type COOKIE (16390).
    return (len(raw) >= 36 and raw[18] == 34 and raw[16] == 41 and raw[19] & 0x20
            and struct.unpack("!H", raw[34:36])[0] == 16390)


# --- 6. iked-nat ------------------------------------------------------------------------------

NAT_DPD_DELAY = 2.0
NAT_RECOVERY_BOUND = NAT_DPD_DELAY + 3.0  # s of no replies after the NAT forgets its binding


def iked_nat(lab: Lab) -> None:
    """iked through a real masquerading NAT in front of gw-a: NAT-T detected, ESP in UDP; the
    NAT forgets its binding mid-tunnel (conntrack -F) and the tunnel follows the new port."""
    conf = vpnlab.iked_conf(lab.case, "a", dpd_delay=f"{NAT_DPD_DELAY:.0f}s", dpd_timeout="10s")
    start_pair(lab, conf_a=conf)
    lst = lab.vpnctl_iked("a", "list").stdout
    check("NAT-T" in lst, "NAT-T detected (vpnctl list on gw-a)", plain(lst).splitlines()[0] if lst else "")
    lstb = lab.vpnctl_iked("b", "list").stdout
    check("NAT-T" in lstb and lab.case.public("a") in lstb, "gw-b sees gw-a at the NAT's public address, NAT-T",
          plain(lstb).splitlines()[0] if lstb else "")
    with lab.wan_capture("nat") as cap:
        control_ping(lab)
        mon = PingMonitor(lab)
        check(mon.flowing(), "the 0.02 s ping flows through the NAT", f"{len(mon.replies)} replies")
        ports0 = {ln.split("dport=")[2].split()[0] for ln in lab.nat_bindings().splitlines()
                  if "sport=4500" in ln and ln.count("dport=") >= 2}
        t_flush = time.time()
        lab.nat_flush()
        back = mon.wait(lambda: mon.replies_after(t_flush + 0.05) >= 10 and mon.gap(t_flush) > 0.1
                        and time.time() - mon.last_reply() < 0.1, NAT_RECOVERY_BOUND + 10)
        t_back = time.time()
        gap = mon.gap(t_flush)
        ports1 = {ln.split("dport=")[2].split()[0] for ln in lab.nat_bindings().splitlines()
                  if "sport=4500" in ln and ln.count("dport=") >= 2}
        check(bool(ports1) and not (ports1 & ports0), "the NAT binding changed (new public port for gw-a:4500)",
              f"{sorted(ports0)} -> {sorted(ports1)}")
        check(back and gap < NAT_RECOVERY_BOUND,
              f"traffic recovers within dpd_delay + 3 s = {NAT_RECOVERY_BOUND:.0f} s of the flush",
              f"longest time without a reply {gap:.2f} s" + ("" if back else ", not recovered"))
        logb = iked_log(lab, "b", "1")
        check("the peer's NAT mapping changed" in logb, "gw-b followed the authenticated new port (RFC 7296 §2.23)",
              next((ln[-160:] for ln in logb.splitlines() if "NAT mapping changed" in ln), ""))
        time.sleep(0.5)
        sent, got = mon.stop()
    loss_line(mon, sent, got, "NAT rebinding", {"outage after the flush": gap})
    # AF_XDP traffic is invisible to tcpdump: the XDP programs' verdict counters say how ESP
    # arrived (ESP in UDP/4500 vs. bare ESP).
    for side in "ab":
        x = lab.stats(side)["xdp"]["outside"]
        udp, bare = x.get("esp_in_udp_to_socket", 0), x.get("esp_to_socket", 0)
        check(udp >= 20 and bare == 0, f"gw-{side} receives the tunnel as ESP in UDP/4500 (RFC 3948)",
              f"esp_in_udp_to_socket {udp}, esp_to_socket {bare}")
    clean_wan(cap, "across the NAT rebinding")
    del t_back


SCENARIOS = {
    "iked-kill": iked_kill,
    "iked-dataplane-kill": iked_dataplane_kill,
    "iked-down": iked_down,
    "iked-dpd": iked_dpd,
    "iked-flood": iked_flood,
    "iked-nat": iked_nat,
}


def run(lab: Lab, case_name: str, check_fn: Callable[..., None]) -> None:
    """Run the scenario `case_name` on a lab that is up; e2e.py tears it down."""
    global check
    check = check_fn
    SCENARIOS[case_name](lab)
