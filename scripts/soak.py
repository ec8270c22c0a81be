#!/usr/bin/env python3
"""Chaos soak (issue 16): two gateways with iked and the dataplane, short lifetimes so Child SA
and IKE SA rekeys keep happening, traffic running the whole time, and faults at random moments.

    soak.py --dataplane PATH [--vpnctl PATH] [--minutes M] [--seed N] [--out FILE]

The lab is vpnlab's NAT topology (a port-translating NAT in front of gw-a, so NAT-T is on and a
NAT binding change is a fault we can inject). Traffic: our own 50 Hz pinger client-a -> client-b
(raw ICMP; every request carries a marker and its sequence number, so each loss is placed in
time exactly) and a paced iperf3 TCP stream. Faults, one at a time, in a seeded random order
(every kind once per round) at seeded random moments:

  kill9-dataplane-{a,b}  SIGKILL the dataplane; the supervisor (this script) restarts it 1 s
                         later; it says Hello on the ring and iked replays every SA
  kill9-iked-{a,b}       SIGKILL iked; restarted 0.5 s later with the same configuration: it
                         inherits the dataplane's SAs and renegotiates with INITIAL_CONTACT
  reload-{a,b}           `vpnctl reload`, half the time with a changed child rekey_time
                         (a changed connection is renegotiated)
  downup-{a,b}           `vpnctl down CONN`, 1-2 s later `vpnctl up CONN`
  nat-rebind             the NAT forgets its bindings (conntrack -F): gw-a's port changes
  garbage-{a,b}          2 s of garbage UDP to ports 500 and 4500 (random bytes, truncated and
                         malformed IKE headers, keepalives, ESP with the victim's live inbound
                         SPIs and random sequence numbers), spoofing the peer's address
  spoof-init-{a,b}       2 s of spoofed IKE_SA_INIT requests from the peer's address

Between faults the driver waits until traffic flows again (0.5 s of answered requests in a
row after the fault's action ended; at most RECOVERY_BOUND s), then a random pause.

A process the driver did not kill that exits is a finding: it is counted and restarted.

Assertions at the end (exit 1 if one fails):
  - no clear text of the clients' traffic on the WAN: captures on gw-a's and gw-b's WAN
    interfaces and on both sides of the NAT (which forwards every WAN packet in its kernel, so
    it sees what AF_XDP sends): no packet between the protected networks that is not ESP, and
    the pinger's marker in no captured byte; a clear ping to gw-b's WAN address is the control
  - every process alive, and none exited without being killed
  - peak VmRSS of each iked and dataplane incarnation under a stated bound, and iked's private
    memory (RssAnon) under its own bound
  - the dataplanes hold only current SAs: at a quiet moment each dataplane's SPIs are exactly
    the Child SA iked lists, and one side's outbound SPI is the other's inbound
  - traffic recovered after every fault within RECOVERY_BOUND s, and both ikeds settled
    (one IKE SA each, every child up, no SA inherited from a killed iked left) within
    SETTLE_BETWEEN s; the next fault waits for that, so a late consequence counts against
    the fault that caused it
The report prints per-fault lines (start, how long the fault was active, time until traffic
recovered, pings lost, time until settled), the totals, and writes them as JSON (--out).
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import mmap
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import e2e_faults
import vpnlab
from vpnlab import Case, Lab

ROOT = pathlib.Path(__file__).resolve().parent.parent

PING_INTERVAL = 0.02
MARKER = b"SOAKMRK!"             # in every echo request's payload: must never be on the WAN
IPERF_RATE = "8M"               # paced TCP, client-a -> client-b
RECOVERY_BOUND = 30.0           # s from a fault's end until traffic flows again
RECOVERED_RUN = 25              # answered requests in a row (0.5 s) = traffic flows again
QUIET_TAIL = 12.0               # s without faults at the end, before the end-state checks
SETTLE_TIMEOUT = 45.0           # s to find the quiet moment for the SA comparison
SETTLE_BETWEEN = 30.0           # s for both ikeds to settle after a fault, before the next
# Lifetimes (swanctl names). Seconds-scale so rekeys keep happening; life_time and over_time
# leave room for a rekey delayed by a fault (swanctl's defaults, +10 %, would not).
LIFETIMES = dict(rekey_time="20s", over_time="10s", rand_time="4s",
                 child_rekey_time="8s", child_life_time="20s", child_rand_time="2s")
DPD = dict(dpd_delay="2s", dpd_timeout="10s", dpd_action="restart")
# Memory bounds (kB), measured: see the report's "memory" lines. iked's VmRSS includes the
# ring and counters mapping (RssShmem ~26 MB); the dataplane's its UMEM.
# Measured here (debug build, 1 worker): iked VmRSS ~42 MB of which RssAnon ~1.2 MB; the
# dataplane VmRSS ~63 MB of which RssAnon ~49.5 MB (UMEM and rings), flat over a soak.
RSS_BOUND_KB = {"iked": 64 * 1024, "dataplane": 96 * 1024}
ANON_BOUND_KB = {"iked": 16 * 1024, "dataplane": 64 * 1024}

FAULT_KINDS = ["kill9-dataplane-a", "kill9-dataplane-b", "kill9-iked-a", "kill9-iked-b", "reload-a", "reload-b",
               "downup-a", "downup-b", "nat-rebind", "garbage-a", "garbage-b", "spoof-init-a", "spoof-init-b"]

failures: list[str] = []


def check(ok: bool, what: str, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'}: {what}" + (f" ({detail})" if detail else ""), flush=True)
    if not ok:
        failures.append(what)


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- traffic -----------------------------------------------------------------------------------

# Runs in client-a's namespace: an echo request every INTERVAL s (never a burst to catch up
# after a stall), each with MARKER, a 32-bit sequence number and padding. Prints "S n t" per
# request sent, "R n t" per reply, "E n t errno" per failed send.
PINGER = r"""
import os, select, socket, struct, sys, time
dst, interval, marker = sys.argv[1], float(sys.argv[2]), sys.argv[3].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident = os.getpid() & 0xFFFF

def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xFFFF)
    t += t >> 16
    return ~t & 0xFFFF

n, nxt = 0, time.time()
out = sys.stdout
while True:
    now = time.time()
    if now >= nxt:
        n += 1
        body = marker + struct.pack("!I", n) + marker * 4
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, n & 0xFFFF)
        pkt = struct.pack("!BBHHH", 8, 0, csum(hdr + body), ident, n & 0xFFFF) + body
        try:
            s.sendto(pkt, (dst, 0))
            out.write(f"S {n} {now:.4f}\n")
        except OSError as e:
            out.write(f"E {n} {now:.4f} {e.errno}\n")
        out.flush()
        nxt += interval
        if nxt < now:
            nxt = now + interval
    r, _, _ = select.select([s], [], [], max(0.0, nxt - time.time()))
    if r:
        data = s.recv(4096)
        icmp = data[(data[0] & 15) * 4:]
        if len(icmp) >= 20 and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident \
                and icmp[8:8 + len(marker)] == marker:
            k = struct.unpack("!I", icmp[8 + len(marker):12 + len(marker)])[0]
            out.write(f"R {k} {time.time():.4f}\n")
            out.flush()
"""


class Pinger:
    def __init__(self, lab: Lab):
        self.p = subprocess.Popen(["ip", "netns", "exec", lab.ns("client-a"), sys.executable, "-c", PINGER,
                                   lab.case.client("b"), str(PING_INTERVAL), MARKER.decode()],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lab.procs["pinger"] = self.p
        self.sent: dict[int, float] = {}
        self.reply: dict[int, float] = {}
        # Requests in the order sent, and their send times (increasing): bisect finds "since t".
        self.order: list[int] = []
        self.times: list[float] = []
        self.errors = 0
        self.last_seq = 0
        self.other: list[str] = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            f = line.split()
            if len(f) >= 3 and f[0] in "SRE":
                n, t = int(f[1]), float(f[2])
                if f[0] == "R":
                    self.reply.setdefault(n, t)
                else:
                    self.sent[n] = t
                    self.order.append(n)
                    self.times.append(t)
                    self.last_seq = n
                    self.errors += f[0] == "E"
            else:
                self.other.append(line)

    def flowing_since(self, t: float, run: int = RECOVERED_RUN) -> float | None:
        """The send time of the first request of the first `run` requests in a row, all sent
        after `t` and all answered, or None."""
        i0 = bisect.bisect_left(self.times, t)
        seqs = self.order[i0:]
        streak = 0
        for i, n in enumerate(seqs):
            streak = streak + 1 if n in self.reply else 0
            if streak >= run:
                return self.sent[seqs[i - run + 1]]
        return None

    def wait_flowing(self, t: float, timeout: float) -> float | None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.flowing_since(t)
            if got is not None:
                return got
            time.sleep(0.05)
        return self.flowing_since(t)

    def lost_between(self, a: float, b: float, settle_until: float) -> list[int]:
        """Requests sent in [a, b) with no reply; those sent in the last second before
        `settle_until` (their replies may be on the way) do not count."""
        return sorted(n for n, s in self.sent.items() if a <= s < b and s < settle_until - 1.0 and n not in self.reply)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.p.wait(timeout=5)
        self.t.join(timeout=5)


class Iperf:
    """iperf3 TCP client-a -> client-b paced to IPERF_RATE for the whole soak (JSON at the end)."""

    def __init__(self, lab: Lab, seconds: float):
        self.lab = lab
        self.srv = subprocess.Popen(["ip", "netns", "exec", lab.ns("client-b"), "iperf3", "-s", "-1", "-p", "5201"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lab.procs["iperf-server"] = self.srv
        for _ in range(200):
            ss = vpnlab.ns_exec(lab.ns("client-b"), "ss", "-Hltn", "sport = :5201", check=False).stdout
            if "5201" in ss:
                break
            time.sleep(0.02)
        self.out = lab.workdir / "iperf.json"
        self.cli = subprocess.Popen(["ip", "netns", "exec", lab.ns("client-a"), "iperf3", "-c", lab.case.client("b"),
                                     "-p", "5201", "-t", str(int(seconds)), "-b", IPERF_RATE, "-J"],
                                    stdout=open(self.out, "w"), stderr=subprocess.STDOUT)
        lab.procs["iperf-client"] = self.cli

    def finish(self) -> dict:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.cli.wait(timeout=20)
        if self.cli.poll() is None:
            # Stuck (its stream stalled): SIGINT makes iperf3 print what it has.
            self.cli.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.cli.wait(timeout=10)
        if self.cli.poll() is None:
            self.cli.kill()
            self.cli.wait()
        if self.srv.poll() is None:
            self.srv.kill()
        self.srv.wait()
        try:
            j = json.loads(self.out.read_text())
        except (OSError, json.JSONDecodeError):
            return {"error": (self.out.read_text() if self.out.exists() else "no output")[-300:]}
        end = j.get("end", {})
        ivals = [iv["sum"] for iv in j.get("intervals", [])]
        stalled = sum(1 for iv in ivals if iv.get("bytes", 0) == 0)
        return {"error": j.get("error"),
                "mbit_s": round(end.get("sum_received", {}).get("bits_per_second", 0) / 1e6, 2),
                "bytes_received": end.get("sum_received", {}).get("bytes", 0),
                "retransmits": end.get("sum_sent", {}).get("retransmits"),
                "seconds": round(end.get("sum_received", {}).get("seconds", 0), 1),
                "intervals_without_bytes": stalled}


# --- capture -------------------------------------------------------------------------------------

class Capture:
    """tcpdump (headers and the start of the payload: enough for the inner addresses and the
    marker) on gw-a's and gw-b's WAN interfaces and on both of the NAT's interfaces."""

    POINTS = [("gw-a", "ga-out"), ("nat", "na-in"), ("nat", "na-wan"), ("gw-b", "gb-out")]
    SNAPLEN = "128"

    def __init__(self, lab: Lab):
        self.lab = lab
        self.files = {f"{h}/{i}": lab.workdir / f"wan-{h}-{i}.pcap" for h, i in self.POINTS}
        self.procs: list[subprocess.Popen] = []
        for (host, ifname), path in zip(self.POINTS, self.files.values()):
            p = subprocess.Popen(["ip", "netns", "exec", lab.ns(host), "tcpdump", "-n", "-i", ifname, "-s", self.SNAPLEN,
                                  "-U", "--immediate-mode", "-w", str(path)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            lab.procs[f"tcpdump-{host}-{ifname}"] = p
            line = p.stderr.readline() if p.stderr else ""
            if "listening" not in line:
                raise RuntimeError(f"tcpdump on {host}/{ifname} did not start: {line.strip()}")
            self.procs.append(p)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def count(self, path: pathlib.Path, bpf: str) -> tuple[int, list[str]]:
        r = subprocess.run(["tcpdump", "-n", "-r", str(path), bpf], capture_output=True, text=True, timeout=600)
        lines = r.stdout.splitlines()
        return len(lines), lines[:3]

    def marker_hits(self, path: pathlib.Path) -> int:
        if path.stat().st_size == 0:
            return 0
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            n, pos = 0, m.find(MARKER)
            while pos >= 0:
                n += 1
                pos = m.find(MARKER, pos + 1)
            return n

    def clear_text(self) -> dict:
        c = self.lab.case
        na, nb = c.inside_net("a"), c.inside_net("b")
        between = (f"((src net {na} and dst net {nb}) or (src net {nb} and dst net {na})) "
                   "and not (ip proto 50 or udp port 4500)")
        control = f"icmp and icmp[icmptype] = 8 and dst host {c.public('b')}"
        out = {}
        for key, path in self.files.items():
            n, first = self.count(path, between)
            ctl, _ = self.count(path, control)
            total, _ = self.count(path, "")
            out[key] = {"packets": total, "clear_between_protected": n, "first": first, "control_pings": ctl,
                        "marker_hits": self.marker_hits(path), "bytes": path.stat().st_size}
        return out


# --- the soak ------------------------------------------------------------------------------------

# Sends bursts in a namespace from a raw socket (IP_HDRINCL, so the source address can be the
# victim's peer): garbage of every kind to ports 500 and 4500, or spoofed IKE_SA_INIT requests
# (RFC 7296 §3: SA with AES-GCM-16/128, PRF-HMAC-SHA2-256, x25519; KE; Ni; random SPIi).
SPRAY = r"""
import os, random, socket, struct, sys, time
mode, src, dst, seconds, rate, seed = sys.argv[1:7]
seconds, rate, rng = float(seconds), float(rate), random.Random(int(seed))
spis = [int(x, 16) for x in (sys.argv[7].split(",") if len(sys.argv) > 7 else []) if x]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

def rb(n):
    return rng.randbytes(n)

def pl(nxt, body):
    return struct.pack("!BBH", nxt, 0, 4 + len(body)) + body

def tr(last, ttype, tid, attrs=b""):
    return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), ttype, 0, tid) + attrs

def sa_init():
    ts = tr(False, 1, 20, struct.pack("!HH", 0x800E, 128)) + tr(False, 2, 5) + tr(True, 4, 31)
    prop = struct.pack("!BBHBBBB", 0, 0, 8 + len(ts), 1, 1, 0, 3) + ts
    body = pl(34, prop) + pl(40, struct.pack("!HH", 31, 0) + rb(32)) + pl(0, rb(32))
    return rb(8) + bytes(8) + struct.pack("!BBBBII", 33, 0x20, 34, 0x08, 0, 28 + len(body)) + body

def ike_ish():
    body = rb(rng.randrange(0, 300))
    length = 28 + len(body) + rng.choice([0, 0, 0, 1, -1, 4000, -28])
    hdr = rb(8) + (bytes(8) if rng.random() < 0.5 else rb(8)) + struct.pack(
        "!BBBBII", rng.choice([0, 33, 46, 41, 40, 53, rng.randrange(256)]),
        rng.choice([0x20, 0x10, 0x21, rng.randrange(256)]), rng.choice([34, 35, 36, 37, rng.randrange(256)]),
        rng.choice([0x08, 0x20, 0x28, 0, rng.randrange(256)]), rng.choice([0, 1, 2, 2**31, rng.randrange(2**32)]),
        length & 0xFFFFFFFF)
    return hdr + body

def garbage():
    k = rng.randrange(8)
    if k == 0:
        return 500, rb(rng.randrange(0, 1400))
    if k == 1:
        return 4500, rb(rng.randrange(8, 1400))
    if k == 2:
        return 4500, bytes(4) + ike_ish()
    if k == 3:
        return 500, ike_ish()
    if k == 4:
        return 4500, b"\xff"
    if k == 5 and spis:
        return 4500, struct.pack("!II", rng.choice(spis), rng.randrange(1, 2**32)) + rb(rng.randrange(16, 1400))
    if k == 6:
        return rng.choice([500, 4500]), rb(rng.randrange(1, 8))
    return 500, sa_init()[:rng.randrange(28, 120)]

def ip_udp(sport, dport, data):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), rng.randrange(65536), 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + udp

sent, t0 = 0, time.time()
while time.time() - t0 < seconds:
    if mode == "init":
        dport, data = 500, sa_init()
    else:
        dport, data = garbage()
    try:
        s.sendto(ip_udp(rng.randrange(1024, 65536), dport, data), (dst, 0))
        sent += 1
    except OSError:
        pass
    ahead = t0 + sent / rate - time.time()
    if ahead > 0:
        time.sleep(ahead)
print(sent, flush=True)
"""


class Soak:
    def __init__(self, lab: Lab, seed: int, minutes: float):
        self.lab = lab
        self.rng = random.Random(seed)
        self.seed = seed
        self.minutes = minutes
        self.lock = threading.RLock()
        self.iked: dict[str, subprocess.Popen] = {}
        self.iked_tag = {"a": 0, "b": 0}
        self.conf: dict[str, str] = {}
        self.conf_path: dict[str, pathlib.Path] = {}
        self.child_rekey = {"a": LIFETIMES["child_rekey_time"], "b": LIFETIMES["child_rekey_time"]}
        # Incarnations: key "iked-a#2" -> {"pid", "started", "peak_rss", "peak_anon", "last_rss", ...}
        self.incarnations: dict[str, dict] = {}
        self.expected_dead: set[int] = set()
        self.unexpected: list[dict] = []
        self.max_sas = {"a": 0, "b": 0}
        self.outbound_spis = {"a": set(), "b": set()}
        self.ike_pairs = {"a": set(), "b": set()}
        self.stop_ev = threading.Event()
        self.t0 = time.time()
        self.faults: list[dict] = []

    # --- processes -------------------------------------------------------------------------

    def conf_for(self, side: str) -> str:
        lt = dict(LIFETIMES, child_rekey_time=self.child_rekey[side])
        conf = vpnlab.iked_conf(self.lab.case, side, **DPD, **lt)
        if side == "a":
            # gw-a is behind the NAT: only it can initiate (gw-b's IKE_SA_INIT to the NAT's
            # address reaches nobody). When gw-b deletes the Child SA (its `vpnctl down`), the
            # next packet renegotiates, as an operator behind a NAT would configure it.
            conf = conf.replace('start_action = "start"\n', 'start_action = "start"\nclose_action = "trap"\n', 1)
            assert 'close_action = "trap"' in conf
        return conf

    def _track(self, kind: str, side: str, p: subprocess.Popen, name: str) -> None:
        pid = vpnlab.own_pid(p, name)
        n = sum(1 for k in self.incarnations if k.startswith(f"{kind}-{side}#")) + 1
        self.incarnations[f"{kind}-{side}#{n}"] = {"kind": kind, "side": side, "pid": pid, "proc": p,
                                                   "started": round(time.time() - self.t0, 2),
                                                   "peak_rss_kb": 0, "peak_anon_kb": 0, "first_rss_kb": 0,
                                                   "last_rss_kb": 0, "last_anon_kb": 0, "first_anon_kb": 0}

    def start_dataplane(self, side: str) -> None:
        self.lab.start_dataplane(side, ring=True)
        self._track("dataplane", side, self.lab.procs[side], "dataplane")

    def start_iked(self, side: str, wait_ready: bool = True) -> subprocess.Popen:
        self.iked_tag[side] += 1
        tag = str(self.iked_tag[side])
        conf = self.conf_for(side)
        p, ready = self.lab.start_iked(side, tag, conf)
        self.iked[side] = p
        self.conf_path[side] = self.lab.workdir / f"iked-{side}-{tag}.toml"
        e2e_faults.wait_control(self.lab, side, p, timeout=20)
        self._track("iked", side, p, "iked")
        return p

    def current(self, kind: str, side: str) -> dict:
        return [v for k, v in self.incarnations.items() if v["kind"] == kind and v["side"] == side][-1]

    def kill9(self, kind: str, side: str) -> None:
        inc = self.current(kind, side)
        self.expected_dead.add(inc["pid"])
        os.kill(inc["pid"], signal.SIGKILL)
        inc["proc"].wait(timeout=10)
        inc["ended"] = round(time.time() - self.t0, 2)
        inc["end"] = "SIGKILL (fault)"

    # --- background: supervisor and samplers --------------------------------------------------

    def supervise(self) -> None:
        """Restart a process that exited without being killed by a fault (and record it)."""
        while not self.stop_ev.wait(0.2):
            with self.lock:
                for kind in ("dataplane", "iked"):
                    for side in "ab":
                        inc = self.current(kind, side)
                        rc = inc["proc"].poll()
                        if rc is None or inc["pid"] in self.expected_dead:
                            continue
                        self.expected_dead.add(inc["pid"])
                        at = round(time.time() - self.t0, 2)
                        inc["ended"], inc["end"] = at, f"exited by itself, status {rc}"
                        self.unexpected.append({"process": f"{kind}-{side}", "pid": inc["pid"], "status": rc, "at_s": at})
                        log(f"FINDING: {kind} on gw-{side} (pid {inc['pid']}) exited by itself with status {rc}; "
                            "restarting it")
                        try:
                            if kind == "dataplane":
                                self.start_dataplane(side)
                            else:
                                self.start_iked(side)
                        except Exception as e:  # noqa: BLE001
                            log(f"restart of {kind}-{side} failed: {e!r}")

    def sample(self) -> None:
        """Every 0.5 s: memory of every live incarnation, SAs in each dataplane, IKE SAs."""
        n = 0
        while not self.stop_ev.wait(0.5):
            n += 1
            try:
                incs = list(self.incarnations.values())
            except RuntimeError:  # changed by a restart meanwhile: next turn
                continue
            for inc in incs:
                if "ended" in inc or inc["proc"].poll() is not None:
                    continue
                rss = vpnlab.vm_rss_kb(inc["pid"])
                anon = vpnlab.vm_rss_kb(inc["pid"], "RssAnon")
                if not rss:
                    continue
                if not inc["first_rss_kb"]:
                    inc["first_rss_kb"], inc["first_anon_kb"] = rss, anon
                inc["peak_rss_kb"] = max(inc["peak_rss_kb"], rss)
                inc["peak_anon_kb"] = max(inc["peak_anon_kb"], anon)
                inc["last_rss_kb"], inc["last_anon_kb"] = rss, anon
            for side in "ab":
                with contextlib.suppress(Exception):
                    st = json.loads((self.lab.workdir / f"{side}.json").read_text())
                    self.max_sas[side] = max(self.max_sas[side], st.get("sa_count", 0))
                    self.outbound_spis[side] |= {spi_int(x["spi"]) for x in st["sas"] if x["direction"] == "out"}
                if n % 4 == 0:
                    with contextlib.suppress(Exception):
                        doc = iked_list(self.lab, side)
                        for c in doc["connections"]:
                            self.ike_pairs[side] |= {(s["spi_i"], s["spi_r"]) for s in c["ike_sas"]
                                                     if s["state"] == "established"}

    # --- faults ----------------------------------------------------------------------------

    def inject(self, kind: str) -> dict:
        """Inject `kind`; returns when its action is over (a killed process restarted and
        ready, the connection up again, the burst sent) with what happened."""
        lab = self.lab
        side = kind[-1] if kind[-2] == "-" else ""
        other = {"a": "b", "b": "a"}.get(side, "")
        info: dict = {}
        if kind.startswith("kill9-dataplane"):
            self.kill9("dataplane", side)
            time.sleep(1.0)  # the supervisor's restart delay
            self.start_dataplane(side)
        elif kind.startswith("kill9-iked"):
            self.kill9("iked", side)
            time.sleep(0.5)
            self.start_iked(side)
        elif kind.startswith("reload"):
            change = self.rng.random() < 0.5
            if change:
                self.child_rekey[side] = "9s" if self.child_rekey[side] == "8s" else "8s"
            self.conf_path[side].write_text(self.conf_for(side))
            r = lab.vpnctl_iked(side, "reload")
            info = {"changed": change, "child_rekey_time": self.child_rekey[side], "status": r.returncode,
                    "reply": r.stdout.strip()[-200:]}
            if r.returncode != 0:
                check(False, f"vpnctl reload on gw-{side} accepted", r.stdout.strip()[-300:])
        elif kind.startswith("downup"):
            conn = f"gw-{other}"
            r1 = lab.vpnctl_iked(side, "down", conn)
            hold = self.rng.uniform(1.0, 2.0)
            time.sleep(hold)
            r2 = lab.vpnctl_iked(side, "up", conn)
            info = {"held_down_s": round(hold, 2), "down": r1.stdout.strip()[-120:], "up": r2.stdout.strip()[-120:]}
            if r1.returncode != 0 or r2.returncode != 0:
                check(False, f"vpnctl down/up {conn} on gw-{side} accepted", f"{r1.stdout.strip()} / {r2.stdout.strip()}")
        elif kind == "nat-rebind":
            before = lab.nat_bindings().count("\n") + 1
            lab.nat_flush()
            info = {"bindings_flushed": before}
        elif kind.startswith(("garbage", "spoof-init")):
            mode = "init" if kind.startswith("spoof") else "garbage"
            # The victim's peer's address as the victim sees it; sent from the NAT namespace
            # (gw-b's side: from the NAT's public address; gw-a's: raw, as gw-b's address).
            c = lab.case
            dst = c.public("b") if side == "b" else c.outer("a")
            src = c.public("a") if side == "b" else c.public("b")
            spis = ""
            with contextlib.suppress(Exception):
                spis = ",".join(f"{spi_int(x['spi']):08x}" for x in lab.stats(side)["sas"] if x["direction"] == "in")
            rate = 2000 if mode == "init" else 3000
            r = vpnlab.ns_exec(lab.ns("nat"), sys.executable, "-c", SPRAY, mode, src, dst, "2", str(rate),
                               str(self.rng.randrange(2**31)), spis, check=False, timeout=60)
            info = {"from": src, "to": dst, "sent": int(r.stdout.split()[0]) if r.stdout.split() else 0,
                    "live_spis_spoofed": spis.count(",") + 1 if spis else 0}
        return info

    def run(self) -> dict:
        lab = self.lab
        total = self.minutes * 60
        log(f"seed {self.seed}; {self.minutes:g} min of traffic; child rekey_time {LIFETIMES['child_rekey_time']}, "
            f"IKE rekey_time {LIFETIMES['rekey_time']}")
        self.start_dataplane("a")
        self.start_dataplane("b")
        self.start_iked("b")
        self.start_iked("a")
        for side in "ab":
            s = lab.wait_stats(side, lambda s: s["sa_count"] == 2, timeout=20)
            if s["sa_count"] != 2:
                raise RuntimeError(f"tunnel not up on gw-{side}: {s['sa_count']} SAs\n" + e2e_faults.iked_logs(lab))
        lab.wait_next_hop("a")
        lab.wait_next_hop("b")
        lab.warm_up()
        sup = threading.Thread(target=self.supervise, daemon=True)
        smp = threading.Thread(target=self.sample, daemon=True)
        cap = Capture(lab)
        control = [lab.ping("client-a", lab.case.public("b"), count=2, interval=0.1).returncode]
        self.t0 = time.time()
        for inc in self.incarnations.values():
            inc["started"] = 0.0
        sup.start()
        smp.start()
        ping = Pinger(lab)
        iperf = Iperf(lab, total)
        if ping.wait_flowing(self.t0, 10) is None:
            raise RuntimeError("the pinger's traffic does not flow through the tunnel")
        t_faults_end = self.t0 + total - QUIET_TAIL
        deck: list[str] = []
        time.sleep(self.rng.uniform(3.0, 6.0))  # a baseline: rekeys only
        while time.time() < t_faults_end - 3:
            if not deck:
                deck = list(FAULT_KINDS)
                self.rng.shuffle(deck)
            kind = deck.pop()
            t_start = time.time()
            log(f"fault {len(self.faults) + 1}: {kind}")
            with self.lock:
                try:
                    info = self.inject(kind)
                    err = None
                except Exception as e:  # noqa: BLE001
                    info, err = {}, repr(e)
                    check(False, f"fault {kind} could be injected", err[-400:])
            t_end = time.time()
            back = ping.wait_flowing(t_end, RECOVERY_BOUND)
            f = {"fault": kind, "start_s": round(t_start - self.t0, 2), "active_s": round(t_end - t_start, 2),
                 "_t_start": t_start, "_t_end": t_end, "_back": back, "info": info, "error": err}
            self.faults.append(f)
            if back is None:
                check(False, f"traffic recovers within {RECOVERY_BOUND:.0f} s of fault {kind} (at "
                      f"{t_start - self.t0:.1f} s)", e2e_faults.plain(lab.vpnctl_iked("a", "list").stdout)[-600:])
            # The next fault waits until this one's consequences are over, so an outage it
            # causes later (an inherited SA that is never renegotiated, say) counts against it.
            waited = self.settle_between(SETTLE_BETWEEN)
            f["info"]["settled_after_s"] = None if waited is None else round(time.time() - t_end, 2)
            check(waited is not None, f"both ikeds settle within {SETTLE_BETWEEN:.0f} s of fault {kind} (at "
                  f"{t_start - self.t0:.1f} s): one IKE SA each, every child up, nothing inherited left",
                  "" if waited is not None else json.dumps(self.quiet_state(), default=str)[-600:])
            time.sleep(self.rng.uniform(1.0, 4.0))
        log(f"{len(self.faults)} faults injected; quiet tail until {total:.0f} s")
        while time.time() < self.t0 + total:
            time.sleep(0.2)
        t_traffic_end = time.time()
        control.append(lab.ping("client-a", lab.case.public("b"), count=2, interval=0.1).returncode)
        time.sleep(1.2)  # the last requests' replies
        ping.stop()
        ip = iperf.finish()
        settled = self.settled()
        self.stop_ev.set()
        sup.join(timeout=5)
        smp.join(timeout=5)
        cap.stop()
        return self.report(ping, ip, cap, control, settled, t_traffic_end)

    def quiet_state(self) -> dict:
        """Per side: IKE SAs, children without an SA, SAs inherited from a previous iked."""
        out = {}
        for side in "ab":
            try:
                doc = iked_list(self.lab, side)
            except Exception as e:  # noqa: BLE001 (an iked being restarted has no socket yet)
                out[side] = {"error": repr(e)}
                continue
            kids = [c for conn in doc["connections"] for c in conn["children"]]
            out[side] = {"ike_sas": sum(len(conn["ike_sas"]) for conn in doc["connections"]),
                         "children_down": sum(1 for c in kids if not c["sas"]),
                         "stale": sum(c.get("stale", 0) for c in kids)}
        return out

    def settle_between(self, timeout: float) -> float | None:
        """Wait until both ikeds hold one IKE SA, every child has an SA and no SA inherited
        from a previous iked is left. Seconds waited, or None."""
        t = time.time()
        while time.time() < t + timeout:
            st = self.quiet_state()
            if all("error" not in v and v["ike_sas"] == 1 and v["children_down"] == 0 and v["stale"] == 0
                   for v in st.values()):
                return time.time() - t
            time.sleep(0.25)
        return None

    # --- end state ---------------------------------------------------------------------------

    def settled(self) -> dict:
        """Wait for a quiet moment (two samples 0.5 s apart, equal) in which each dataplane holds
        exactly the Child SA its iked lists, and the sides' SPIs cross-match."""
        deadline = time.time() + SETTLE_TIMEOUT
        last, streak, snap = None, 0, {}
        while time.time() < deadline:
            snap = {}
            for side in "ab":
                try:
                    st = self.lab.stats(side)
                    doc = iked_list(self.lab, side)
                except Exception as e:  # noqa: BLE001
                    snap[side] = {"error": repr(e)}
                    continue
                dp_in = sorted(spi_int(x["spi"]) for x in st["sas"] if x["direction"] == "in")
                dp_out = sorted(spi_int(x["spi"]) for x in st["sas"] if x["direction"] == "out")
                kids = [c for conn in doc["connections"] for c in conn["children"]]
                sas = [sa for c in kids for sa in c["sas"]]
                snap[side] = {"dataplane_in": dp_in, "dataplane_out": dp_out,
                              "iked_in": sorted(spi_int(sa["in_spi"]) for sa in sas),
                              "iked_out": sorted(spi_int(sa["out_spi"]) for sa in sas),
                              "ike_sas": sum(len(conn["ike_sas"]) for conn in doc["connections"]),
                              "retiring": sum(c.get("retiring", 0) for c in kids),
                              "stale": sum(c.get("stale", 0) for c in kids)}
            a, b = snap.get("a", {}), snap.get("b", {})
            ok = ("error" not in a and "error" not in b
                  and all(len(s["dataplane_in"]) == len(s["dataplane_out"]) == 1 and s["dataplane_in"] == s["iked_in"]
                          and s["dataplane_out"] == s["iked_out"] and s["ike_sas"] == 1 for s in (a, b))
                  and a["dataplane_out"] == b["dataplane_in"] and b["dataplane_out"] == a["dataplane_in"])
            key = json.dumps(snap, sort_keys=True)
            streak = streak + 1 if ok and key == last else (1 if ok else 0)
            last = key
            if streak >= 2:
                return {"ok": True, "waited_s": round(SETTLE_TIMEOUT - (deadline - time.time()), 1), "snapshot": snap}
            time.sleep(0.5)
        return {"ok": False, "waited_s": SETTLE_TIMEOUT, "snapshot": snap}

    def report(self, ping: Pinger, ip: dict, cap: Capture, control: list[int], settled: dict,
               t_end: float) -> dict:
        lab = self.lab
        sent_total = len([n for n, s in ping.sent.items() if s < t_end - 1.0])
        lost_total = ping.lost_between(self.t0, t_end, t_end)
        rows = []
        first_fault = self.faults[0]["_t_start"] if self.faults else t_end
        base_lost = ping.lost_between(self.t0, first_fault, t_end)
        for i, f in enumerate(self.faults):
            w_end = self.faults[i + 1]["_t_start"] if i + 1 < len(self.faults) else t_end
            lost = ping.lost_between(f["_t_start"], w_end, t_end)
            if lost:
                # Recovered: the first answered request after the last lost one of the window.
                after = [n for n in range(lost[-1] + 1, ping.last_seq + 1) if n in ping.reply]
                rec = (ping.sent[after[0]] - f["_t_start"]) if after else None
                outage = (ping.sent[after[0]] - ping.sent[lost[0]]) if after else None
            else:
                rec, outage = 0.0, 0.0
            rows.append({"fault": f["fault"], "start_s": f["start_s"], "active_s": f["active_s"],
                         "recovered_after_s": None if rec is None else round(rec, 2),
                         "outage_s": None if outage is None else round(outage, 2),
                         "pings_lost": len(lost), "info": f["info"], "error": f["error"],
                         "flowing_again": f["_back"] is not None})
        print("\n== per fault (pings every 0.02 s; 'recovered' counts from the fault's start to the first answered "
              "request after the last lost one; 'outage' from the first lost to it)", flush=True)
        print(f"  {'#':>3} {'fault':<18} {'start s':>8} {'active s':>9} {'recovered s':>12} {'outage s':>9} {'lost':>6} "
              f"{'settled s':>10}")
        print(f"  {'-':>3} {'(baseline: rekeys only)':<18} {0.0:>8.1f} {'':>9} {'':>12} {'':>9} {len(base_lost):>6}")
        for i, r in enumerate(rows, 1):
            rec = "never" if r["recovered_after_s"] is None else f"{r['recovered_after_s']:.2f}"
            out = "-" if r["outage_s"] is None else f"{r['outage_s']:.2f}"
            st = (r["info"] or {}).get("settled_after_s")
            st = "never" if st is None else f"{st:.2f}"
            print(f"  {i:>3} {r['fault']:<18} {r['start_s']:>8.1f} {r['active_s']:>9.2f} {rec:>12} {out:>9} "
                  f"{r['pings_lost']:>6} {st:>10}")
        by_kind: dict[str, dict] = {}
        for r in rows:
            k = re.sub(r"-[ab]$", "", r["fault"])
            d = by_kind.setdefault(k, {"count": 0, "pings_lost": 0, "max_recovered_s": 0.0, "active_s": 0.0})
            d["count"] += 1
            d["pings_lost"] += r["pings_lost"]
            d["active_s"] = round(d["active_s"] + r["active_s"], 2)
            d["max_recovered_s"] = max(d["max_recovered_s"], r["recovered_after_s"] or 0.0)
        print("\n== by kind")
        for k, d in sorted(by_kind.items()):
            print(f"  {k:<16} {d['count']:>3} x  active {d['active_s']:>6.2f} s in all  lost {d['pings_lost']:>5}  "
                  f"worst recovery {d['max_recovered_s']:.2f} s")
        lost_pct = 100.0 * len(lost_total) / max(sent_total, 1)
        # The pinger shares 2 cores with everything else: its longest pause between two
        # requests says how finely the losses above are resolved.
        gaps = [b - a for a, b in zip(ping.times, ping.times[1:])]
        send_gap = max(gaps, default=0.0)
        print(f"\n== traffic: {len(lost_total)} of {sent_total} echo requests lost ({lost_pct:.2f} %) over "
              f"{t_end - self.t0:.0f} s; {len(base_lost)} of them before the first fault; send errors {ping.errors}; "
              f"the pinger's longest pause between requests {send_gap:.2f} s")
        print(f"   iperf3 TCP paced {IPERF_RATE}: {ip}")

        # Captures.
        wan = cap.clear_text()
        print("\n== WAN captures")
        for k, v in wan.items():
            print(f"  {k:<12} {v['packets']:>8} packets ({v['bytes'] // 1024} KiB): {v['clear_between_protected']} clear "
                  f"between the protected networks, marker seen {v['marker_hits']} times, control pings {v['control_pings']}")
        check(all(v["control_pings"] >= 2 for v in wan.values()) and all(rc == 0 for rc in control),
              "control: a clear ping to gw-b's WAN address was routed and captured on every capture point",
              ", ".join(f"{k} {v['control_pings']}" for k, v in wan.items()))
        leaks = {k: v for k, v in wan.items() if v["clear_between_protected"] or v["marker_hits"]}
        check(not leaks, "no clear text of the clients' traffic on the WAN (no packet between the protected networks "
              "outside ESP, the pinger's marker in no captured byte)",
              "; ".join(f"{k}: {v['clear_between_protected']} packets, marker {v['marker_hits']}, first {v['first']}"
                        for k, v in leaks.items()) or "none")
        nat_pkts = wan.get("nat/na-wan", {}).get("packets", 0)
        check(nat_pkts > sent_total, "the NAT's WAN capture saw the tunnel's traffic (so the check covers it)",
              f"{nat_pkts} packets")

        # Processes.
        alive = {f"{kind}-{side}": self.current(kind, side)["proc"].poll() is None
                 for kind in ("dataplane", "iked") for side in "ab"}
        check(all(alive.values()), "every dataplane and iked is alive at the end", json.dumps(alive))
        check(not self.unexpected, "no process exited without being killed by a fault",
              json.dumps(self.unexpected) if self.unexpected else "none")

        # Memory.
        print("\n== memory (kB; VmRSS includes iked's ring/counters mapping and the dataplane's UMEM)")
        mem = {}
        for key, inc in self.incarnations.items():
            life = (inc.get("ended", round(t_end - self.t0, 2)) - inc["started"])
            print(f"  {key:<14} pid {inc['pid']:>7} lived {life:>6.1f} s: VmRSS first {inc['first_rss_kb']:>7} peak "
                  f"{inc['peak_rss_kb']:>7} last {inc['last_rss_kb']:>7}; RssAnon first {inc['first_anon_kb']:>6} "
                  f"peak {inc['peak_anon_kb']:>6} last {inc['last_anon_kb']:>6}" + (f"  [{inc['end']}]" if "end" in inc else ""))
            mem[key] = {k: v for k, v in inc.items() if k != "proc"}
        for kind in ("iked", "dataplane"):
            incs = [v for v in self.incarnations.values() if v["kind"] == kind]
            peak = max(v["peak_rss_kb"] for v in incs)
            anon = max(v["peak_anon_kb"] for v in incs)
            check(peak < RSS_BOUND_KB[kind], f"every {kind}'s peak VmRSS under {RSS_BOUND_KB[kind] // 1024} MiB",
                  f"highest {peak} kB")
            check(anon < ANON_BOUND_KB[kind], f"every {kind}'s peak RssAnon (private memory) under "
                  f"{ANON_BOUND_KB[kind] // 1024} MiB", f"highest {anon} kB")

        # SAs.
        snap = settled["snapshot"]
        check(settled["ok"], "the dataplanes hold only current SAs: at a quiet moment each dataplane's SPIs are exactly "
              "the one Child SA its iked lists (one IKE SA), and gw-a's outbound SPI is gw-b's inbound and back",
              f"after {settled['waited_s']} s: " + json.dumps({s: {k: ([f"{x:08x}" for x in v] if isinstance(v, list) else v)
                                                                  for k, v in d.items()} for s, d in snap.items()}))
        child_sas = {s: len(self.outbound_spis[s]) for s in "ab"}
        ike = {s: len(self.ike_pairs[s]) for s in "ab"}
        print(f"\n== rekeys: outbound SAs seen by the dataplanes gw-a {child_sas['a']}, gw-b {child_sas['b']}; established "
              f"IKE SAs seen by iked gw-a {ike['a']}, gw-b {ike['b']}; most SAs held at once gw-a {self.max_sas['a']}, "
              f"gw-b {self.max_sas['b']}")
        minutes = (t_end - self.t0) / 60
        check(min(child_sas.values()) >= 4 * minutes and min(ike.values()) >= 1.5 * minutes,
              "rekeys kept happening (at least 4 Child SAs and 1.5 IKE SAs a minute on each side)",
              f"Child {child_sas}, IKE {ike} over {minutes:.1f} min")
        return {
            "seed": self.seed, "minutes": self.minutes, "duration_s": round(t_end - self.t0, 1),
            "lifetimes": LIFETIMES, "dpd": DPD, "ping_interval_s": PING_INTERVAL,
            "pings_sent": sent_total, "pings_lost": len(lost_total), "pinger_longest_pause_s": round(send_gap, 3), "pings_lost_before_first_fault": len(base_lost),
            "faults": rows, "by_kind": by_kind, "iperf": ip, "wan": wan, "alive": alive,
            "unexpected_exits": self.unexpected, "memory": mem,
            "rss_bound_kb": RSS_BOUND_KB, "anon_bound_kb": ANON_BOUND_KB, "settled": settled,
            "child_sas_seen": child_sas, "ike_sas_seen": ike, "max_sas": self.max_sas,
        }


def spi_int(v) -> int:
    return int(v, 16) if isinstance(v, str) else int(v)


def iked_list(lab: Lab, side: str) -> dict:
    vpnctl = lab.vpnctl or str(pathlib.Path(lab.dataplane).with_name("vpnctl"))
    r = vpnlab.sh(vpnctl, "--json", "list", "--socket", str(lab.workdir / f"iked-{side}.sock"), check=False, timeout=10)
    return json.loads(r.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("--vpnctl", default="")
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=None, help="the fault schedule's seed (default: random, printed)")
    ap.add_argument("--out", default=str(ROOT / "target" / "soak" / "soak.json"))
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, captures) even on success")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**32)
    if os.geteuid() != 0:
        print("soak: needs root (network namespaces, XDP, AF_XDP)", file=sys.stderr)
        return 1

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    vpnctl = a.vpnctl or str(pathlib.Path(a.dataplane).with_name("vpnctl"))
    lab = Lab(name=vpnlab.unique_name("soak"), case=Case(nat=True), dataplane=a.dataplane, vpnctl=vpnctl)
    print(f"soak: seed {seed} (reproduce: scripts/soak.sh {a.minutes:g} --seed {seed}); lab {lab.name}, "
          f"work dir {lab.workdir}", flush=True)
    result: dict = {"seed": seed, "minutes": a.minutes}
    t0 = time.time()
    soak = None
    try:
        lab.up()
        soak = Soak(lab, seed, a.minutes)
        result = soak.run()
    except KeyboardInterrupt as e:
        check(False, "the soak ran to the end", f"interrupted: {e}")
    except Exception as e:  # noqa: BLE001
        import traceback  # noqa: PLC0415
        traceback.print_exc()
        check(False, "the soak ran to the end", repr(e))
    finally:
        # Teardown must not be interrupted by a second signal.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if soak is not None:
            soak.stop_ev.set()
        if failures:
            for p in sorted(lab.workdir.glob("iked-*.log")) + sorted(lab.workdir.glob("[ab].log")):
                print(f"--- {p.name} (last lines) ---\n{e2e_faults.plain(p.read_text())[-1500:]}")
        lab.down(keep=bool(failures or a.keep))
        leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        check(lab.name not in leftover, "namespaces removed")
    result["failures"] = failures
    result["passed"] = not failures
    result["wall_s"] = round(time.time() - t0, 1)
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    if failures or a.keep:
        for p in lab.workdir.glob("*.pcap"):
            if p.stat().st_size > 200 * 2**20:
                p.unlink()
        print(f"soak: work dir kept: {lab.workdir}")
    else:
        shutil.rmtree(lab.workdir, ignore_errors=True)
    print(f"\nsoak: {'PASSED' if not failures else 'FAILED: ' + '; '.join(failures)} (seed {seed}, "
          f"{result['wall_s']:.0f} s); report {out}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
