#!/usr/bin/env python3
"""Latency under load through the tunnel, in network namespaces (needs root).

One process, one run, interleaved rounds: plain kernel forwarding (the reference) and our
dataplane with static SAs (1 worker per gateway, like bench-tunnel.py). In each round:
  - idle: ping client-a -> client-b at a short interval (RTT p50/p99);
  - loaded: the same ping during one iperf3 TCP stream client-a -> client-b (RTT p50/p99,
    TCP Gbit/s, retransmits).
Prints a table and writes bench/results/latency.json. The machine is shared and noisy:
compare against the plain-forwarding rows of the same run.

    bench-latency.py --dataplane target/release/dataplane [--seconds 4] [--rounds 2]
                     [--pin apart|same|default] [--dp-arg=--batch=32 ...]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import vpnlab
from vpnlab import Case, Lab

RTT = re.compile(r"time=([0-9.]+) ms")


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def ping(lab: Lab, seconds: float, interval: float) -> subprocess.Popen:
    count = max(1, int(seconds / interval))
    return subprocess.Popen(["ip", "netns", "exec", lab.ns("client-a"), "ping", "-n", "-i", str(interval),
                             "-c", str(count), "-W", "1", "-s", "56", lab.case.client("b")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def rtts(p: subprocess.Popen, sent: int) -> dict:
    out, _ = p.communicate(timeout=120)
    xs = [float(m.group(1)) for m in RTT.finditer(out)]
    return {"p50_ms": round(pct(xs, 50), 3), "p99_ms": round(pct(xs, 99), 3),
            "max_ms": round(max(xs), 3) if xs else None, "replies": len(xs), "sent": sent}


def run_delay(pids: list[int]) -> tuple[float, float]:
    """(seconds on a CPU, seconds waiting on a run queue) summed over every thread of `pids`,
    from /proc/<pid>/task/<tid>/schedstat: the reason a busy-polling worker's packets wait when
    more threads want a CPU than there are CPUs."""
    on_cpu = waiting = 0
    for pid in pids:
        try:
            tids = [t.name for t in Path(f"/proc/{pid}/task").iterdir()]
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                run, wait, _ = open(f"/proc/{pid}/task/{tid}/schedstat").read().split()
            except (FileNotFoundError, ValueError):
                continue
            on_cpu += int(run)
            waiting += int(wait)
    return on_cpu / 1e9, waiting / 1e9


def measure(lab: Lab, seconds: float, interval: float) -> dict:
    sent = max(1, int(seconds / interval))
    pids = [p.pid for p in lab.procs.values() if p.poll() is None]
    idle = rtts(ping(lab, seconds, interval), sent)
    # Loaded: start the TCP stream, let it ramp up, ping through the rest of it.
    port = 5401
    srv = subprocess.Popen(["ip", "netns", "exec", lab.ns("client-b"), "iperf3", "-s", "-1", "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            ss = vpnlab.ns_exec(lab.ns("client-b"), "ss", "-Hltn", f"sport = :{port}", check=False).stdout
            if str(port) in ss:
                break
            time.sleep(0.02)
        cli = subprocess.Popen(["ip", "netns", "exec", lab.ns("client-a"), "iperf3", "-c", lab.case.client("b"),
                                "-p", str(port), "-t", str(seconds + 1.5), "-J"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(1.0)
        cpu0, wait0, t0 = *run_delay(pids), time.monotonic()
        loaded = rtts(ping(lab, seconds, interval), sent)
        cpu1, wait1, t1 = *run_delay(pids), time.monotonic()
        out, _ = cli.communicate(timeout=seconds + 60)
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()
    j = json.loads(out)
    s = j["end"]["sum_sent"]
    sched = None
    if pids:
        # Per gateway process and second of the loaded phase.
        n, dt = len(pids), t1 - t0
        sched = {"on_cpu_ms_per_s": round((cpu1 - cpu0) / dt / n * 1e3, 1),
                 "runqueue_wait_ms_per_s": round((wait1 - wait0) / dt / n * 1e3, 1)}
    return {"idle": idle, "loaded": loaded, "tcp_gbps": round(vpnlab.summary_bps(j) / 1e9, 3),
            "retransmits": s.get("retransmits"), "dataplane_sched": sched}


def pin_args(pin: str, side: str) -> list[str]:
    if pin == "apart":
        return ["--cores", "0" if side == "a" else "1"]
    if pin == "same":
        return ["--cores", "0"]
    return []


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--interval", type=float, default=0.005, help="ping interval (s)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pin", choices=["apart", "same", "default"], default="default",
                    help="cores of the two gateways' workers: apart (0 and 1), same (both 0), "
                         "default (what start_dataplane does)")
    ap.add_argument("--dp-arg", action="append", default=[], help="extra dataplane argument")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=ARG,ARG",
                    help="another dataplane configuration in the same rounds (e.g. aqm-off=--aqm-limit=0)")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain-forwarding reference")
    ap.add_argument("--out", default="latency.json")
    a = ap.parse_args()
    configs = ([] if a.no_plain else [("plain kernel forwarding", False, [])]) + [(f"dataplane ({a.pin})", True, [])]
    for v in a.variant:
        label, _, args = v.partition("=")
        configs.append((f"dataplane ({a.pin}, {label})", True, [x for x in args.split(",") if x]))
    rows: dict[str, list[dict]] = {label: [] for label, _, _ in configs}
    for r in range(a.rounds):
        for label, ours, var_args in configs:
            lab = Lab(name=vpnlab.unique_name("lat"), case=Case(workers=1), dataplane=a.dataplane)
            try:
                lab.up()
                if ours:
                    for side in ("a", "b"):
                        lab.start_dataplane(side, extra=pin_args(a.pin, side) + a.dp_arg + var_args)
                lab.warm_up()
                m = measure(lab, a.seconds, a.interval)
                if ours:
                    m["gw_a"] = {k: v for k, v in lab.stats("a").items() if k in ("workers", "xdp")}
                rows[label].append(m)
                print(f"round {r} {label:<28} idle p50 {m['idle']['p50_ms']:.3f} p99 {m['idle']['p99_ms']:.3f} | "
                      f"loaded p50 {m['loaded']['p50_ms']:.3f} p99 {m['loaded']['p99_ms']:.3f} "
                      f"max {m['loaded']['max_ms']} ({m['loaded']['replies']}/{m['loaded']['sent']}) | "
                      f"TCP {m['tcp_gbps']:.2f} Gbit/s retr {m['retransmits']}"
                      + (f" | gateway on CPU {m['dataplane_sched']['on_cpu_ms_per_s']} ms/s, waiting for a CPU "
                         f"{m['dataplane_sched']['runqueue_wait_ms_per_s']} ms/s" if m["dataplane_sched"] else ""),
                      flush=True)
            finally:
                lab.down()
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print(f"\n{'configuration':<28} {'idle p50':>9} {'idle p99':>9} {'load p50':>9} {'load p99':>9} {'TCP Gb/s':>9} (medians of {a.rounds})")
    summary = {}
    for label, ms in rows.items():
        s = {"idle_p50_ms": med([m["idle"]["p50_ms"] for m in ms]), "idle_p99_ms": med([m["idle"]["p99_ms"] for m in ms]),
             "loaded_p50_ms": med([m["loaded"]["p50_ms"] for m in ms]),
             "loaded_p99_ms": med([m["loaded"]["p99_ms"] for m in ms]), "tcp_gbps": med([m["tcp_gbps"] for m in ms])}
        summary[label] = s
        print(f"{label:<28} {s['idle_p50_ms']:>9.3f} {s['idle_p99_ms']:>9.3f} {s['loaded_p50_ms']:>9.3f} "
              f"{s['loaded_p99_ms']:>9.3f} {s['tcp_gbps']:>9.2f}")
    out = vpnlab.ROOT / "bench" / "results" / a.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seconds": a.seconds, "interval": a.interval, "pin": a.pin, "dp_args": a.dp_arg,
                               "summary": summary, "rounds": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(vpnlab.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
