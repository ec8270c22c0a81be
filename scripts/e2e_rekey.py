#!/usr/bin/env python3
"""Rekeying end to end (issue 12): SA lifetimes, CREATE_CHILD_SA rekeys with zero loss, PFS.

    e2e_rekey.py --dataplane PATH [--vpnctl PATH] [--rand 1s] CASE

CASE is one of the keys of SCENARIOS below. Each builds its own topology (unique namespace
names), runs a 0.01 s ping from client-a to client-b (and iperf3 where said) while the SAs are
rekeyed, checks what the issue asks for, prints PASS/FAIL lines (the same check() as e2e.py),
and always tears everything down. Exit status 0 only if every check passed.

Every case also asserts: no clear-text packet between the protected networks on either WAN
interface (with a control packet the capture must see), every process it started alive at the
end, and the namespaces deleted; the rekey cases also that no ESP packet failed its integrity
check (icv_failed) in our dataplanes.

Collisions: equal rekey times alone never make both sides rekey at once on a real network (the
rekey's responder installs the new SA, and starts its timer, half a round trip before the
initiator, so it always fires first): rekey-collide freezes both ikeds (SIGSTOP) past their
rekey time and thaws them together, and counts collisions as CREATE_CHILD_SA requests from both
gateways within 0.1 s on the wire.

How rekeys are counted without trusting our own logs:
  - Child SA rekeys: a thread samples each dataplane's stats file (written every 200 ms) and
    counts the switches of its outbound SA (a new SPI carrying the policy); it also records
    every sample in which the dataplane had no outbound SA at all while the tunnel was up.
  - IKE SA rekeys (ours <-> ours): distinct IKE SPI pairs in the IKE headers captured on the
    WAN (headers are clear text; CREATE_CHILD_SA and INFORMATIONAL of each IKE SA name its SPIs).
  - strongSwan: charon's own log. charon 5.9.8 logs a completed Child SA rekey, in both roles,
    as "outbound CHILD_SA net{N} established with SPIs ..." (the initial Child SA is logged
    without the "outbound " prefix; a responder logs "inbound CHILD_SA ..." first and
    "outbound ..." once the old SA's Delete arrived), the old one as "closing CHILD_SA
    net{M}", and a completed IKE SA rekey as "IKE_SA gw-a[N] rekeyed between ...".
Our iked's own "rekey" lines and `vpnctl list` are printed alongside, not asserted on.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import e2e
import e2e_faults
import vpnlab
from e2e import check
from e2e_faults import clean_wan, control_ping, iked_log, plain, wait_control
from vpnlab import Case, Lab

PING_INTERVAL = 0.01
PSK = "a rekey test pre-shared key"
IKE = "aes128gcm16-prfsha256-x25519"
PFS_ESP = "aes128gcm16-x25519"
# rand_time for the ours <-> ours cases (both sides, IKE and Child SAs): small but nonzero,
# so both sides' rekeys start close together and sometimes collide (RFC 7296 §2.8.1).
# Overridden by --rand ("0" makes every rekey a collision).
RAND = "1s"


# --- measuring ---------------------------------------------------------------------------------

class Pinger:
    """`ping -i INTERVAL` client-a -> client-b in the background until stopped; each reply's
    icmp_seq and arrival time kept, so a loss can be placed in time next to the rekeys. (On this
    loaded 2-core machine ping sends ~70 a second, not 100: the case runs for a wall-clock
    time and reports what was sent.)"""

    def __init__(self, lab: Lab, interval: float = PING_INTERVAL):
        self.lab = lab
        self.interval = interval
        self.t0 = time.time()
        self.p = subprocess.Popen(["ip", "netns", "exec", lab.ns("client-a"), "ping", "-n",
                                   "-i", str(interval), "-W", "2", lab.case.client("b")],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lab.procs["ping-rekey"] = self.p
        self.replies: dict[int, float] = {}
        self.lines: list[str] = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line)
            m = re.search(r"icmp_seq=(\d+) ttl=", line)
            if m:
                self.replies[int(m.group(1))] = time.time()

    def flowing(self, timeout: float = 10) -> bool:
        """Readiness: 20 replies arrived."""
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.replies) < 20:
            time.sleep(0.02)
        return len(self.replies) >= 20

    def hold(self, seconds: float) -> None:
        """Let it run until `seconds` after its start, or until a process of the lab died."""
        while time.time() < self.t0 + seconds:
            if any(p.poll() is not None for k, p in self.lab.procs.items()
                   if k in ("a", "b") or k.startswith(("iked-", "charon-"))):
                return
            time.sleep(0.2)

    def finish(self) -> tuple[int, int, list[int]]:
        """Stop it: (transmitted, received, lost icmp_seqs). The last 10 requests (sent within
        ~0.15 s of the stop, their replies maybe still on the way) are counted neither way."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
        self.p.wait(timeout=10)
        self.t.join(timeout=5)
        m = re.search(r"(\d+) packets transmitted", "".join(self.lines))
        counted = max(0, (int(m.group(1)) if m else max(self.replies, default=0)) - 10)
        lost = [s for s in range(1, counted + 1) if s not in self.replies]
        return counted, counted - len(lost), lost

    def sent_at(self, seq: int) -> float:
        """About when request `seq` was sent: the last reply before it, plus ping's actual
        interval for each request in between."""
        before = [q for q in self.replies if q < seq]
        if not before:
            return self.t0
        q = max(before)
        step = (max(self.replies.values()) - self.t0) / max(max(self.replies), 1)
        return self.replies[q] + (seq - q) * step

    def describe(self, lost: list[int]) -> str:
        """Lost requests as runs of icmp_seq with about when they were sent (UTC, to set
        beside the iked, dataplane and charon logs)."""
        runs: list[list[int]] = []
        for s in lost:
            if runs and s == runs[-1][-1] + 1:
                runs[-1].append(s)
            else:
                runs.append([s])

        def at(seq: int) -> str:
            t = self.sent_at(seq)
            return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"
        return ", ".join(f"seq {r[0]}" + (f"-{r[-1]}" if len(r) > 1 else "") + f" (~{at(r[0])}, "
                         f"{self.sent_at(r[0]) - self.t0:.1f} s in)" for r in runs[:12]) + (" ..." if len(runs) > 12 else "")


class SaWatcher:
    """Samples the stats files of the given dataplanes every 0.1 s: the outbound SPI (a change
    is a Child SA rekey seen by the dataplane), every inbound SPI seen, the most SAs held at once,
    and the samples in which there was no outbound SA while the tunnel was up."""

    def __init__(self, lab: Lab, sides: str):
        self.lab = lab
        self.sides = sides
        self.out: dict[str, list[tuple[float, str]]] = {s: [] for s in sides}
        self.outbound: dict[str, set[str]] = {s: set() for s in sides}
        self.inbound: dict[str, set[str]] = {s: set() for s in sides}
        self.max_sas: dict[str, int] = {s: 0 for s in sides}
        self.no_out: dict[str, list[float]] = {s: [] for s in sides}
        self.samples = 0
        self.t0 = time.time()
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while not self.stop_ev.is_set():
            for s in self.sides:
                try:
                    st = self.lab.stats(s)
                except RuntimeError:
                    continue
                now = time.time()
                outs = sorted(x["spi"] for x in st["sas"] if x["direction"] == "out")
                for x in st["sas"]:
                    (self.inbound if x["direction"] == "in" else self.outbound)[s].add(x["spi"])
                self.max_sas[s] = max(self.max_sas[s], st["sa_count"])
                if not outs:
                    self.no_out[s].append(now)
                    continue
                key = ",".join(outs)
                if not self.out[s] or self.out[s][-1][1] != key:
                    self.out[s].append((now, key))
            self.samples += 1
            self.stop_ev.wait(0.1)

    def switches(self, side: str) -> int:
        """How many outbound SAs replaced the first one seen (distinct SPIs: a sample taken while
        two were listed must not count twice)."""
        return max(0, len(self.outbound[side]) - 1)

    def stop(self) -> None:
        self.stop_ev.set()
        self.t.join(timeout=5)


def ike_messages(cap) -> list[dict]:
    """IKE messages after IKE_SA_INIT (IKE_AUTH 35, CREATE_CHILD_SA 36, INFORMATIONAL 37)
    captured on either WAN interface, on UDP 500 or 4500 (behind the non-ESP marker), each once
    (a datagram is seen leaving one gateway and reaching the other), in time order.
    RFC 7296 §3.1: SPIi(8) SPIr(8) next payload, version, exchange type, flags, message ID."""
    from scapy.all import IP, UDP, IPv6  # noqa: PLC0415

    seen: dict[tuple, dict] = {}
    for side in ("a", "b"):
        for p in cap.packets(side, "udp port 500 or udp port 4500"):
            udp = p.getlayer(UDP)
            ip = p.getlayer(IP) or p.getlayer(IPv6)
            if udp is None or ip is None or not {500, 4500} & {udp.sport, udp.dport}:
                continue
            raw = bytes(udp.payload)
            if 4500 in (udp.sport, udp.dport):
                if len(raw) < 4 or raw[:4] != b"\0\0\0\0":
                    continue  # ESP in UDP or a keepalive
                raw = raw[4:]
            if len(raw) < 28 or raw[17] != 0x20 or raw[18] not in (35, 36, 37):
                continue
            m = {"t": float(p.time), "src": ip.src, "spis": (raw[0:8].hex(), raw[8:16].hex()), "exchange": raw[18],
                 "response": bool(raw[19] & 0x20), "msgid": int.from_bytes(raw[20:24], "big")}
            key = (m["src"], m["spis"], m["exchange"], m["response"], m["msgid"], len(raw))
            if key not in seen or m["t"] < seen[key]["t"]:
                seen[key] = m
    return sorted(seen.values(), key=lambda m: m["t"])


def ike_spi_pairs(cap) -> set[tuple[str, str]]:
    """Distinct (SPIi, SPIr) of the IKE SAs that exchanged anything during the capture: each IKE
    SA's CREATE_CHILD_SA and INFORMATIONAL name its SPIs in the clear header."""
    return {m["spis"] for m in ike_messages(cap)}


def simultaneous_requests(cap, window: float = 0.1) -> int:
    """CREATE_CHILD_SA requests sent by each gateway within `window` s of one from the other:
    rekeys both sides started within a round trip (RFC 7296 §2.8.1 collisions), counted once per
    pair, seen on the wire whatever either side logs."""
    reqs = [m for m in ike_messages(cap) if m["exchange"] == 36 and not m["response"]]
    n, used = 0, set()
    for i, a in enumerate(reqs):
        for j in range(i + 1, len(reqs)):
            b = reqs[j]
            if b["t"] - a["t"] > window:
                break
            if b["src"] != a["src"] and i not in used and j not in used:
                used |= {i, j}
                n += 1
    return n


def warnings(lab: Lab, side: str, tag: str) -> list[str]:
    return [ln.strip()[-220:] for ln in iked_log(lab, side, tag).splitlines() if re.search(r"\b(WARN|ERROR)\b", ln)]


def rekey_lines(lab: Lab, side: str, tag: str) -> list[str]:
    return [ln.strip()[-200:] for ln in iked_log(lab, side, tag).splitlines() if re.search(r"rekey", ln, re.I)]


def collision_lines(lab: Lab, side: str, tag: str) -> list[str]:
    return [ln for ln in iked_log(lab, side, tag).splitlines()
            if re.search(r"collision(?!=false)|simultaneous", ln, re.I)]


def vpnctl_rekeys(listing: str) -> list[int]:
    """Rekey counts `vpnctl list` shows (the issue asks for "how many rekeys it has been
    through"), whatever the wording: numbers next to the word rekey(s/ed)."""
    return [int(n) for t in re.findall(r"(\d+)\s+rekeys?\b|rekey(?:s|ed)?[:= ]+(\d+)", listing) for n in t if n]


def dp_sas(lab: Lab, side: str) -> tuple[list[str], list[str], dict]:
    st = lab.stats(side)
    return ([x["spi"] for x in st["sas"] if x["direction"] == "in"],
            [x["spi"] for x in st["sas"] if x["direction"] == "out"], st)


def settled_ours(lab: Lab, timeout: float = 25) -> tuple[bool, str]:
    """Readiness for the end-state check: each dataplane holds exactly one inbound and one
    outbound SA, each side's outbound SPI is the other's inbound, and each iked lists one IKE SA
    with one Child SA, in two samples 0.5 s apart. Rekeys keep happening, and an old SA stays
    for a grace period after its Delete: wait for a quiet moment."""
    deadline = time.time() + timeout
    last, detail, streak = None, "", 0
    while time.time() < deadline:
        (ia, oa, sa), (ib, ob, sb) = dp_sas(lab, "a"), dp_sas(lab, "b")
        la, lb = (plain(lab.vpnctl_iked(s, "list").stdout) for s in "ab")
        now = (tuple(ia), tuple(oa), tuple(ib), tuple(ob))
        detail = (f"gw-a in {ia} out {oa} ({sa['sa_count']} SAs), gw-b in {ib} out {ob} ({sb['sa_count']} SAs); "
                  f"vpnctl list gw-a: {la.strip().replace(chr(10), ' | ')[:300]}")
        ok = (len(ia) == len(oa) == len(ib) == len(ob) == 1 and oa == ib and ob == ia
              and sa["sa_count"] == 2 and sb["sa_count"] == 2
              and all("(1 IKE SA)" in lst and e2e_faults.children_up(lst) == 1 for lst in (la, lb)))
        streak = streak + 1 if ok and now == last else (1 if ok else 0)
        last = now
        if streak >= 2:
            return True, detail
        time.sleep(0.5)
    return False, detail


def control_ping_swan(lab: Lab) -> None:
    """Control for the WAN check against charon: two pings from client-a to gw-b's WAN address,
    outside every policy, routed in clear by gw-a. charon's kernel-libipsec routes the answers to
    client-a's network into its TUN device, where no policy takes them: no reply is expected,
    only the requests in the capture (clean_wan asserts it saw them)."""
    lab.ping("client-a", lab.case.public("b"), count=2, interval=0.1)


def alive(lab: Lab) -> None:
    """Every long-running process the case started is still running."""
    want = {k: p for k, p in lab.procs.items() if k in ("a", "b") or k.startswith(("iked-", "charon-"))}
    dead = {k: p.returncode for k, p in want.items() if p.poll() is not None}
    check(bool(want) and not dead, "the dataplanes, ikeds and charon are alive at the end",
          f"{sorted(want)}" + (f"; exited: {dead}" if dead else ""))


def esp_drops(lab: Lab, side: str) -> dict[str, int]:
    """The dataplane's ESP drop counters, summed over its workers (since it started)."""
    out: dict[str, int] = {}
    for w in lab.stats(side)["workers"]:
        for k, v in w.get("esp_drops", {}).items():
            out[k] = out.get(k, 0) + v
    return out


def icv_check(lab: Lab, sides: str) -> None:
    """No ESP packet failed authentication: between two honest peers an ICV failure means a
    packet was sent on an SA whose key the receiver does not have under that SPI (a rekey that
    went wrong), whether or not a ping happened to be that packet. Other drops are printed."""
    drops = {s: esp_drops(lab, s) for s in sides}
    print("  ESP drops: " + "; ".join(f"gw-{s} {d or 'none'}" for s, d in drops.items()), flush=True)
    bad = {s: d.get("icv_failed", 0) for s, d in drops.items() if d.get("icv_failed", 0)}
    check(not bad, "no ESP packet failed its integrity check (icv_failed) on " + " or ".join(f"gw-{s}" for s in sides),
          ", ".join(f"gw-{s}: {n}" for s, n in bad.items()) or "0")


def loss_check(ping: Pinger, tx: int, rx: int, lost: list[int], what: str) -> None:
    rate = tx / max(time.time() - ping.t0, 1e-3)
    print(f"  {what}: {tx - rx} of {tx} echo requests lost (ping -i {ping.interval}: {rate:.0f} sent a second)"
          + (f": {ping.describe(lost)}" if lost else ""), flush=True)
    check(tx >= 100 and rx == tx and not lost, f"{what}: 0 pings lost", f"{rx} of {tx} answered")


def no_gap(w: SaWatcher, side: str) -> None:
    """The dataplane never had the tunnel's policy without an outbound SA (make-before-break)."""
    n = len(w.no_out[side])
    check(n == 0, f"gw-{side}'s dataplane always had an outbound SA (sampled every 0.1 s, {w.samples} samples)",
          f"{n} samples without one" + (f", the first {w.no_out[side][0] - w.t0:.1f} s in" if n else ""))


def iperf_thread(lab: Lab, seconds: float, bitrate: str | None = None) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run() -> None:
        try:
            box["json"] = lab.iperf(seconds=seconds, bitrate=bitrate)
        except Exception as e:  # noqa: BLE001
            box["error"] = repr(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def iperf_report(box: dict, what: str) -> None:
    j = box.get("json", {})
    sent = j.get("end", {}).get("sum_sent", {})
    bps = vpnlab.summary_bps(j)
    retr = sent.get("retransmits")
    print(f"  iperf3 {what}: {bps / 1e6:.0f} Mbit/s, {retr} retransmissions", flush=True)
    check(bps > 1e6, f"the iperf3 TCP stream ran across the rekeys ({what})",
          f"{bps / 1e6:.0f} Mbit/s, {retr} retransmissions" + (f"; {box['error']}" if "error" in box else ""))


# --- ours <-> ours ------------------------------------------------------------------------------

OURS_SECONDS = 50
OURS_CHILD_REKEY, OURS_IKE_REKEY = "5s", "15s"
OURS_MIN_CHILD_REKEYS, OURS_MIN_IKE_REKEYS = 7, 2
# rekey-collide: both ikeds are frozen (SIGSTOP) past their rekey times and thawed together,
# so both start the same rekeys at the same instant. (Equal rekey times alone never collide on a
# real network: the rekey's responder installs the new SA, and starts its timer, half a round
# trip before the initiator, so it always fires first and the other side answers it — measured.)
# A round whose thaw also finds the IKE SA rekey due switches no Child SA: each side has its Child
# SA rekey in flight and its IKE SA rekey queued, and answers the other's Child SA rekey with
# TEMPORARY_FAILURE (RFC 7296 §2.25.2); both retry 2-5 s later (seen in CI: 5 rounds, 6
# collisions, 2 switches, with the IKE SA rekeying every 10 s). With the IKE SA rekeying every
# 15 s, one or two of the six rounds meet it; the other four or five switch.
COLLIDE_ROUNDS = 6
COLLIDE_FREEZE = 3.5  # s: longer than the child rekey_time, so both timers are overdue at the thaw
COLLIDE_CHILD_REKEY, COLLIDE_IKE_REKEY = "3s", "15s"
COLLIDE_MIN_CHILD_REKEYS, COLLIDE_MIN_IKE_REKEYS, COLLIDE_MIN_COLLISIONS = 3, 1, 3


# The TCP stream under which rekeys must lose nothing is paced well below what the tunnel
# carries here (~1.6 Gbit/s with the test profile's binaries): an unpaced stream fills the
# queues until TCP's own losses, and the ping sharing them loses a few packets at any time,
# rekey or not (measured: 33 of 8188, the first 0.7 s in, long before the first rekey).
PACED = "400M"


def ours_conf(lab: Lab, side: str, **lifetimes) -> str:
    return vpnlab.iked_conf(lab.case, side, **lifetimes)


def ours_rekeys(lab: Lab, seconds: float, child: str, ike: str, rand: str, iperf: bool, min_child: int,
                min_ike: int, min_collisions: int = 0, extra: dict | None = None, drive=None) -> None:
    """ours <-> ours with the same lifetimes on both sides, a 0.01 s ping (and iperf3) for
    `seconds` (after `drive(lab, procs)`, if given, has run): 0 pings lost; at least `min_child`
    Child SA and `min_ike` IKE SA rekeys (and `min_collisions` simultaneous rekeys); afterwards
    each dataplane holds exactly the current pair of SAs and the SPIs match across the sides."""
    what = f"ours <-> ours, child rekey_time {child}, IKE rekey_time {ike}, rand_time {rand}"
    lt = dict(rekey_time=ike, rand_time=rand, child_rekey_time=child, child_rand_time=rand, **(extra or {}))
    procs = e2e_faults.start_pair(lab, conf_a=ours_conf(lab, "a", **lt), conf_b=ours_conf(lab, "b", **lt))
    with lab.wan_capture("rekey-ours") as cap:
        control_ping(lab)
        watch = SaWatcher(lab, "ab")
        ping = Pinger(lab)
        check(ping.flowing(), "the 0.01 s ping flows through the tunnel", f"{len(ping.replies)} replies")
        it, box = iperf_thread(lab, seconds - 1, bitrate=PACED) if iperf else (None, {})
        if drive:
            drive(lab, procs)
        ping.hold(seconds)
        tx, rx, lost = ping.finish()
        if it:
            it.join(timeout=60)
        took = time.time() - ping.t0
        watch.stop()
    print(f"  ran {took:.0f} s", flush=True)
    loss_check(ping, tx, rx, lost, what)
    if iperf:
        iperf_report(box, "ours <-> ours")
    icv_check(lab, "ab")
    sw = {s: watch.switches(s) for s in "ab"}
    check(min(sw.values()) >= min_child,
          f"at least {min_child} Child SA rekeys: each dataplane's outbound SA switched",
          f"gw-a {sw['a']}, gw-b {sw['b']} switches; inbound SPIs seen gw-a {len(watch.inbound['a'])}, "
          f"gw-b {len(watch.inbound['b'])}; most SAs at once gw-a {watch.max_sas['a']}, gw-b {watch.max_sas['b']}")
    for s in "ab":
        no_gap(watch, s)
    pairs = ike_spi_pairs(cap)
    check(len(pairs) - 1 >= min_ike, f"at least {min_ike} IKE SA rekeys: distinct IKE SPI pairs on the WAN",
          f"{len(pairs)} IKE SAs seen (the first + {len(pairs) - 1} rekeys)")
    both = simultaneous_requests(cap)
    print(f"  {both} times both gateways sent a CREATE_CHILD_SA request within 0.1 s of each other "
          "(rekey collisions, RFC 7296 §2.8.1)", flush=True)
    if min_collisions:
        check(both >= min_collisions, f"at least {min_collisions} rekey collisions (both sides' CREATE_CHILD_SA "
              "requests within 0.1 s on the WAN)", f"{both}")
    ok, detail = settled_ours(lab)
    check(ok, "afterwards each dataplane holds only the current SAs: one inbound and one outbound, the SPIs "
          "matching across the sides; each iked has one IKE SA with one Child SA", detail)
    for s in "ab":
        lines = rekey_lines(lab, s, "1")
        lst = plain(lab.vpnctl_iked(s, "list").stdout)
        warn = warnings(lab, s, "1")
        print(f"  gw-{s} iked: {len(lines)} log lines about rekeys, {len(collision_lines(lab, s, '1'))} about "
              f"collisions, {len(warn)} WARN/ERROR; vpnctl list rekey counts {vpnctl_rekeys(lst)}", flush=True)
        for ln in lines[-3:] + warn[:3]:
            print(f"    {ln}")
    alive(lab)
    clean_wan(cap, "across the rekeys")


def rekey_ours(lab: Lab) -> None:
    """ours <-> ours, 2 workers per dataplane: child rekey_time 5 s and IKE rekey_time 15 s on
    both sides (rand_time small: the two sides' rekeys start close together), a 0.01 s ping and
    an iperf3 TCP stream for 50 s: 0 pings lost; iperf3's retransmissions reported; at least 7
    Child SA and 2 IKE SA rekeys; afterwards each dataplane holds exactly the current pair of
    SAs and the SPIs match across the sides."""
    ours_rekeys(lab, OURS_SECONDS, OURS_CHILD_REKEY, OURS_IKE_REKEY, RAND, iperf=True,
                min_child=OURS_MIN_CHILD_REKEYS, min_ike=OURS_MIN_IKE_REKEYS)


def quiet(lab: Lab, timeout: float = 10) -> bool:
    """Readiness for a freeze: no exchange in flight on either side (one IKE SA, one Child SA
    whose outbound is installed)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        lists = [plain(lab.vpnctl_iked(s, "list").stdout) for s in "ab"]
        if all("(1 IKE SA)" in x and e2e_faults.children_up(x) == 1 and "outbound not yet" not in x for x in lists):
            return True
        time.sleep(0.05)
    return False


def freeze_and_thaw(lab: Lab, procs: dict) -> None:
    """COLLIDE_ROUNDS times: once no exchange is in flight, SIGSTOP both ikeds for longer than
    the child rekey_time, then SIGCONT both at once: each wakes with its rekey overdue and sends
    its CREATE_CHILD_SA before it reads the other's (and, when the IKE SA's time came during a
    freeze, both rekey the IKE SA too). The dataplanes forward meanwhile on the SAs they hold."""
    import os  # noqa: PLC0415

    pids = {s: vpnlab.own_pid(procs[s], "iked") for s in "ab"}
    for n in range(COLLIDE_ROUNDS):
        if not quiet(lab):
            print(f"  round {n + 1}: an exchange was still in flight after 10 s", flush=True)
        try:
            for s in "ab":
                os.kill(pids[s], signal.SIGSTOP)
            time.sleep(COLLIDE_FREEZE)
        finally:
            for s in "ab":
                os.kill(pids[s], signal.SIGCONT)
        time.sleep(0.3)


def rekey_collide(lab: Lab) -> None:
    """ours <-> ours, both sides child rekey_time 3 s and IKE rekey_time 15 s with rand_time 0
    (life_time and over_time 60 s): six times both ikeds are frozen past their rekey time and
    thawed together, so both start the same Child SA rekey (and sometimes IKE SA rekey) at once:
    RFC 7296 §2.8.1 collisions (the lowest nonce's SA is redundant, its initiator deletes it).
    0 pings lost (0.01 s), at least 3 collisions seen on the wire, and afterwards exactly one
    pair of SAs on each side, matching."""
    ours_rekeys(lab, 0, COLLIDE_CHILD_REKEY, COLLIDE_IKE_REKEY, "0", iperf=False,
                min_child=COLLIDE_MIN_CHILD_REKEYS, min_ike=COLLIDE_MIN_IKE_REKEYS,
                min_collisions=COLLIDE_MIN_COLLISIONS, extra=dict(over_time="60s", child_life_time="60s"),
                drive=freeze_and_thaw)


# --- packet-count lifetime ----------------------------------------------------------------------

PACKETS_SECONDS = 30
# iperf3 through the tunnel carries ~7 500-14 000 packets/s with debug binaries and ~85 000-
# 130 000 with the test profile's (what `cargo test` runs): 100 000 is crossed two or three times
# in 30 s with the first and about every second with the second. The hard limit (5x) is far
# enough above that a rekey taking two seconds still completes before the SA stops being used
# (measured: without a rekey the SA stops at exactly life_packets and the tunnel goes dark).
REKEY_PACKETS = 100_000


def rekey_packets(lab: Lab) -> None:
    """Child rekey_packets 100 000 (life_packets 5x, rand_packets 10 %) on both sides, no
    time limit in reach: an iperf3 TCP stream crosses it several times in 30 s while a 0.01 s
    ping runs. The dataplane's soft event makes iked rekey: at least one rekey, 0 pings lost."""
    lt = dict(child_rekey_packets=REKEY_PACKETS, child_life_packets=5 * REKEY_PACKETS,
              child_rand_packets=REKEY_PACKETS // 10)
    e2e_faults.start_pair(lab, conf_a=ours_conf(lab, "a", **lt), conf_b=ours_conf(lab, "b", **lt))
    with lab.wan_capture("rekey-packets") as cap:
        control_ping(lab)
        watch = SaWatcher(lab, "ab")
        ping = Pinger(lab)
        check(ping.flowing(), "the 0.01 s ping flows through the tunnel", f"{len(ping.replies)} replies")
        it, box = iperf_thread(lab, PACKETS_SECONDS - 1, bitrate=PACED)
        ping.hold(PACKETS_SECONDS)
        tx, rx, lost = ping.finish()
        it.join(timeout=60)
        watch.stop()
    loss_check(ping, tx, rx, lost, f"rekey_packets {REKEY_PACKETS}, {PACKETS_SECONDS} s of iperf3")
    iperf_report(box, "rekey_packets")
    icv_check(lab, "ab")
    sent = box.get("json", {}).get("end", {}).get("sum_sent", {}).get("bytes", 0)
    sw = {s: watch.switches(s) for s in "ab"}
    check(max(sw.values()) >= 1, "the packet limit triggered rekeys (the outbound SA switched)",
          f"gw-a {sw['a']}, gw-b {sw['b']} switches; iperf3 sent {sent / 1e6:.0f} MB (~{sent // 1400} packets)")
    for s in "ab":
        no_gap(watch, s)
    ok, detail = settled_ours(lab)
    check(ok, "afterwards each dataplane holds only the current pair of SAs, matching across the sides", detail)
    for s in "ab":
        print(f"  gw-{s} iked: {len(rekey_lines(lab, s, '1'))} log lines about rekeys, "
              f"{len(warnings(lab, s, '1'))} WARN/ERROR", flush=True)
    alive(lab)
    clean_wan(cap, "across the packet-limit rekeys")


# --- against strongSwan 5.9.8 -------------------------------------------------------------------

SWAN_CHILD_REKEY, SWAN_IKE_REKEY = "10s", "20s"
# When we rekey: ours shorter than charon's 10 s / 20 s (so ours always fire first: a Child SA's
# rekey restarts both sides' timers).
OUR_CHILD_REKEY, OUR_IKE_REKEY = "6s", "14s"
SWAN_MIN_CHILD, SWAN_MIN_IKE = 4, 2
SWAN_CAP_SECONDS = 90  # the case stops once charon logged the rekeys it needs (+3 s), at most this


def charon_counts(log: str) -> dict:
    """What charon 5.9.8 logged (strings found by running it, see the module's doc)."""
    return {
        "child": len(re.findall(r"\boutbound CHILD_SA net\{\d+\} established", log)),
        "closed": len(re.findall(r"\bclosing CHILD_SA net\{\d+\}", log)),
        "ike": len(re.findall(r"IKE_SA gw-a\[\d+\] rekeyed between", log)),
        "rekey_requests": [m for m in re.findall(r"(?:generating|parsed) CREATE_CHILD_SA (?:request|response) \d+ \[([^\]]*)\]", log)],
        "gave_up": len(re.findall(r"giving up after \d+ retransmits", log)),
        "failed": re.findall(r"(?:CHILD_SA|IKE_SA) rekeying failed.*", log),
        "retransmits": len(re.findall(r"retransmit \d+ of (?:request|response)", log)),
        "notifies": sorted(set(re.findall(r"received ([A-Z_]+) notify", log))),
        "esp_selected": re.findall(r"selected proposal: (ESP:[A-Z0-9_/]+)", log),
    }


def charon_sas(lab: Lab) -> tuple[int, list[str], list[str]]:
    """charon's IKE SAs (ESTABLISHED) and its installed Child SAs' inbound and outbound SPIs."""
    vici = lab.workdir / "strongswan-b" / "charon.vici"
    out = vpnlab.sh("swanctl", "--list-sas", "--uri", f"unix://{vici}", check=False).stdout
    ike = len(re.findall(r"ESTABLISHED", out))
    ins = [f"0x{s}" for s in re.findall(r"^\s+in\s+([0-9a-f]{8})", out, re.M)]
    outs = [f"0x{s}" for s in re.findall(r"^\s+out\s+([0-9a-f]{8})", out, re.M)]
    return ike, ins, outs


def rekey_strongswan(lab: Lab, charon_rekeys: bool, pfs: bool) -> None:
    """Our iked + dataplane on gw-a against strongSwan 5.9.8 (charon, kernel-libipsec) on gw-b.
    charon_rekeys: charon initiates the tunnel and every rekey (its child rekey_time 10 s, IKE
    20 s; ours the defaults, 1 h / 4 h). Otherwise we initiate the tunnel and every rekey (ours
    6 s / 14 s, charon's 10 s / 20 s never reached). With pfs, both sides' esp_proposals are
    aes128gcm16-x25519: every Child SA rekey carries a KE payload. 0 pings lost (0.01 s) over at
    least 4 Child SA and 2 IKE SA rekeys, each completed in charon's log."""
    esp = PFS_ESP if pfs else "aes128gcm16"
    who = "charon" if charon_rekeys else "we"
    lab.start_dataplane("a", ring=True)
    if charon_rekeys:
        ours = vpnlab.iked_conf(lab.case, "a", psk=PSK, ike=IKE, esp_proposals=esp, start_action="none")
    else:
        ours = vpnlab.iked_conf(lab.case, "a", psk=PSK, ike=IKE, esp_proposals=esp, rekey_time=OUR_IKE_REKEY,
                                rand_time="1s", child_rekey_time=OUR_CHILD_REKEY, child_rand_time="1s")
    pa, _ = lab.start_iked("a", "1", ours)
    wait_control(lab, "a", pa)
    swan = vpnlab.swanctl_conf(lab.case, "b", PSK, IKE, esp, start=charon_rekeys, rekey_time=SWAN_IKE_REKEY,
                               child_rekey_time=SWAN_CHILD_REKEY)
    clog = lab.start_charon("b", swan, retransmit_timeout=2, retransmit_tries=3)
    check(True, "strongSwan loaded the swanctl.conf with the lifetimes (swanctl --load-all)",
          f"child rekey_time {SWAN_CHILD_REKEY}, IKE rekey_time {SWAN_IKE_REKEY}, esp_proposals {esp}")
    s = lab.wait_stats("a", lambda s: s["sa_count"] == 2, timeout=20)
    check(s["sa_count"] == 2, f"the tunnel to strongSwan comes up ({'charon' if charon_rekeys else 'we'} initiate)",
          f"{s['sa_count']} SAs")
    lab.wait_next_hop("a")
    lab.warm_up()
    with lab.wan_capture("rekey-swan") as cap:
        control_ping_swan(lab)
        watch = SaWatcher(lab, "a")
        ping = Pinger(lab)
        check(ping.flowing(), "the 0.01 s ping flows through the tunnel", f"{len(ping.replies)} replies")
        deadline = time.time() + SWAN_CAP_SECONDS
        done_at = None
        while time.time() < deadline:
            c = charon_counts(clog.read_text())
            if done_at is None and c["child"] >= SWAN_MIN_CHILD and c["ike"] >= SWAN_MIN_IKE:
                done_at = time.time()
            if done_at and time.time() > done_at + 3:
                break
            if pa.poll() is not None or lab.procs["charon-b"].poll() is not None:
                break
            time.sleep(0.2)
        tx, rx, lost = ping.finish()
        took = time.time() - ping.t0
        watch.stop()
    log = clog.read_text()
    c = charon_counts(log)
    print(f"  ran {took:.0f} s; charon: {c['child']} Child SA rekeys completed, {c['closed']} old Child SAs closed, "
          f"{c['ike']} IKE SA rekeys; {c['retransmits']} retransmits, notifies received {c['notifies']}", flush=True)
    loss_check(ping, tx, rx, lost, f"strongSwan, {who} rekey, "
               f"{'with' if pfs else 'without'} PFS")
    icv_check(lab, "a")
    check(c["child"] >= SWAN_MIN_CHILD and c["closed"] >= c["child"] - 1,
          f"charon's log shows at least {SWAN_MIN_CHILD} Child SA rekeys completing (\"outbound CHILD_SA ... "
          "established\", the old one closed)", f"{c['child']} completed, {c['closed']} closed")
    check(c["ike"] >= SWAN_MIN_IKE, f"charon's log shows at least {SWAN_MIN_IKE} IKE SA rekeys completing "
          "(\"IKE_SA ... rekeyed between\")", f"{c['ike']}")
    check(c["gave_up"] == 0 and not c["failed"], "charon never gave up on an exchange and no rekey failed",
          f"{c['gave_up']} gave up, {c['retransmits']} retransmits; {len(c['failed'])} failed"
          + (f": {c['failed'][0]}" if c["failed"] else ""))
    child_rekeys = [r for r in c["rekey_requests"] if "N(REKEY_SA)" in r]
    with_ke = [r for r in child_rekeys if re.search(r"\bKE\b", r)]
    check(bool(child_rekeys) and (len(with_ke) == len(child_rekeys) if pfs else not with_ke),
          f"Child SA rekeys {'carry a KE payload (PFS)' if pfs else 'carry no KE payload (no PFS)'} in charon's log",
          f"{len(with_ke)} of {len(child_rekeys)} CREATE_CHILD_SA requests with REKEY_SA have KE; "
          f"{(child_rekeys or [''])[0]}")
    # charon logs each ESP proposal it selects: IKE_AUTH's first (no KE there, RFC 7296 §1.2),
    # then one per Child SA rekey.
    rekeyed = c["esp_selected"][1:]
    check(bool(rekeyed) and all(("CURVE_25519" in e) == pfs for e in rekeyed),
          f"charon selected {'x25519 (PFS)' if pfs else 'no key exchange group'} for every rekeyed Child SA",
          f"{len(rekeyed)} selections after IKE_AUTH's: " + ", ".join(sorted(set(rekeyed))))
    sw = watch.switches("a")
    check(sw >= SWAN_MIN_CHILD, "our dataplane's outbound SA switched at each Child SA rekey", f"{sw} switches")
    no_gap(watch, "a")
    # End state: our dataplane holds exactly the pair charon holds.
    ok, detail = False, ""
    end = time.time() + 20
    while time.time() < end and not ok:
        ins, outs, st = dp_sas(lab, "a")
        nike, cin, cout = charon_sas(lab)
        lst = plain(lab.vpnctl_iked("a", "list").stdout)
        ok = (len(ins) == len(outs) == 1 and st["sa_count"] == 2 and cin == outs and cout == ins and nike == 1
              and "(1 IKE SA)" in lst and e2e_faults.children_up(lst) == 1)
        detail = (f"ours in {ins} out {outs} ({st['sa_count']} SAs); charon {nike} IKE SA, in {cin} out {cout}; "
                  f"vpnctl list: {lst.strip().replace(chr(10), ' | ')[:240]}")
        if not ok:
            time.sleep(0.5)
    check(ok, "afterwards our dataplane holds only the current pair, the one charon holds; one IKE SA each side", detail)
    print(f"  our iked: {len(rekey_lines(lab, 'a', '1'))} log lines about rekeys, {len(warnings(lab, 'a', '1'))} "
          "WARN/ERROR; vpnctl list rekey counts "
          f"{vpnctl_rekeys(plain(lab.vpnctl_iked('a', 'list').stdout))}", flush=True)
    alive(lab)
    clean_wan(cap, "across the rekeys with strongSwan")


# --- PFS mismatch -------------------------------------------------------------------------------

MISMATCH_CHILD_REKEY = "6s"


def pfs_line(log: str) -> str:
    """Our plain-words line about a PFS mismatch: names esp_proposals, says PFS or key
    exchange, and the group (x25519, as strongSwan's syntax or IANA's name)."""
    for ln in log.splitlines():
        low = ln.lower()
        if ("esp_proposals" in ln and ("pfs" in low or "key exchange" in low)
                and ("x25519" in low or "curve25519" in low or "curve_25519" in low)):
            return ln
    return ""


def pfs_mismatch(lab: Lab) -> None:
    """A PFS mismatch in both directions against strongSwan. 1: charon requires PFS on rekeys
    (esp_proposals aes128gcm16-x25519), we offer aes128gcm16 without a group. 2: we require it,
    charon offers none. The tunnel comes up (IKE_AUTH's Child SA carries no KE, RFC 7296 §1.2);
    charon's first Child SA rekey (after 6 s) fails, and our log says in plain words which side
    wanted a key exchange group, what our esp_proposals offer, and what to change."""
    lab.start_dataplane("a", ring=True)
    for n, (ours_esp, swan_esp, what) in enumerate((
            ("aes128gcm16", PFS_ESP, "strongSwan requires PFS, we offer none"),
            (PFS_ESP, "aes128gcm16", "we require PFS, strongSwan offers none"))):
        tag = f"pfs{n}"
        conf = vpnlab.iked_conf(lab.case, "a", psk=PSK, ike=IKE, esp_proposals=ours_esp, start_action="none")
        pa, _ = lab.start_iked("a", tag, conf)
        try:
            wait_control(lab, "a", pa)
        except RuntimeError:
            check(False, f"{what}: our iked starts with esp_proposals {ours_esp}", iked_log(lab, "a", tag)[-600:])
            continue
        clog = lab.start_charon("b", vpnlab.swanctl_conf(lab.case, "b", PSK, IKE, swan_esp, start=True, rekey_time="0",
                                                         child_rekey_time=MISMATCH_CHILD_REKEY, child_life_time="30s",
                                                         child_rand_time="1s"),
                                retransmit_timeout=2, retransmit_tries=3)
        s = lab.wait_stats("a", lambda s: s["sa_count"] == 2, timeout=20)
        check(s["sa_count"] == 2, f"{what}: the tunnel comes up (no KE in IKE_AUTH)", f"{s['sa_count']} SAs")
        lab.wait_next_hop("a")
        with lab.wan_capture(f"pfs-mismatch-{n}") as cap:
            control_ping_swan(lab)
            bg = subprocess.Popen(["ip", "netns", "exec", lab.ns("client-a"), "ping", "-n", "-i", "0.05", "-W", "1",
                                   lab.case.client("b")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            lab.procs[f"ping-{tag}"] = bg
            deadline = time.time() + 20
            line = ""
            while time.time() < deadline and not line:
                line = pfs_line(iked_log(lab, "a", tag))
                time.sleep(0.2)
            time.sleep(0.5)
            bg.send_signal(signal.SIGINT)
            bg.wait(timeout=10)
        check(bool(line), f"{what}: our log has a plain-words line naming esp_proposals, PFS / key exchange and "
              "x25519", line.strip()[-300:] or "no such line; lines about rekeys: "
              + " | ".join(rekey_lines(lab, "a", tag)[-3:]))
        clog_text = clog.read_text()
        print(f"  charon: {len(re.findall('CREATE_CHILD_SA', clog_text))} CREATE_CHILD_SA lines, notifies received "
              f"{charon_counts(clog_text)['notifies']}", flush=True)
        check(pa.poll() is None and lab.procs["charon-b"].poll() is None, f"{what}: iked and charon still run")
        clean_wan(cap, what)
        pa.terminate()
        pa.wait(timeout=10)
        lab.procs["charon-b"].kill()
        lab.procs["charon-b"].wait()
        lab.wait_stats("a", lambda s: s["sa_count"] == 0, timeout=5)
    check(lab.procs["a"].poll() is None, "our dataplane is alive at the end")


SCENARIOS = {
    "rekey-ours": (Case(workers=2), rekey_ours),
    "rekey-collide": (Case(), rekey_collide),
    "rekey-packets": (Case(workers=2), rekey_packets),
    "rekey-strongswan-init": (Case(nat_t=True), lambda lab: rekey_strongswan(lab, charon_rekeys=True, pfs=False)),
    "rekey-strongswan-init-pfs": (Case(nat_t=True), lambda lab: rekey_strongswan(lab, charon_rekeys=True, pfs=True)),
    "rekey-strongswan-resp": (Case(nat_t=True), lambda lab: rekey_strongswan(lab, charon_rekeys=False, pfs=False)),
    "rekey-strongswan-resp-pfs": (Case(nat_t=True), lambda lab: rekey_strongswan(lab, charon_rekeys=False, pfs=True)),
    "pfs-mismatch": (Case(nat_t=True), pfs_mismatch),
}


def run(case_name: str, dataplane: str, vpnctl: str) -> int:
    case, fn = SCENARIOS[case_name]
    e2e.VPNCTL = vpnctl
    # e2e_faults' helpers (start_pair, clean_wan, ...) report through the same check().
    e2e_faults.check = check
    lab = Lab(name=vpnlab.unique_name("rk" + case_name.split("-")[-1][:3]), case=case, dataplane=dataplane,
              vpnctl=vpnctl)
    t0 = time.time()
    try:
        lab.up()
        fn(lab)
    except Exception as e:  # noqa: BLE001
        check(False, f"{case_name} ran to the end", repr(e))
    finally:
        if e2e.failures:
            for log in sorted(lab.workdir.glob("strongswan-*/charon.log")):
                print(f"--- {log.parent.name}/{log.name} (rekey lines) ---")
                print("\n".join(ln for ln in log.read_text().splitlines()
                                if re.search(r"rekey|CREATE_CHILD_SA|established|closing|giving up|notify", ln))[-4000:])
        print(f"  {case_name}: {time.time() - t0:.0f} s", flush=True)
    return e2e.teardown(lab, case_name)


def main() -> int:
    global RAND
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("--vpnctl", default="", help="vpnctl binary (default: next to the dataplane)")
    ap.add_argument("--rand", default=RAND, help="rand_time of the ours <-> ours cases (swanctl duration)")
    ap.add_argument("case", choices=sorted(SCENARIOS))
    a = ap.parse_args()
    RAND = a.rand
    vpnctl = a.vpnctl or str(pathlib.Path(a.dataplane).with_name("vpnctl"))
    return run(a.case, a.dataplane, vpnctl)


if __name__ == "__main__":
    sys.exit(main())
