#!/usr/bin/env python3
"""The namespace side of `vpnbench afxdp` (needs root). Not meant to be run by hand.

vpnbench starts this driver and speaks JSON lines with it on stdin/stdout; the measuring
logic (sweep, fractions, goals) stays in Rust (bench/src/vpnbench/afxdp.rs):

    {"cmd": "setup", "config": "plain" | "ours", "workers": N}   -> {"ok": true}
        a fresh topology (scripts/vpnlab.py); "ours" runs our dataplane on both gateways
        with static SAs (as scripts/bench-tunnel.py does), the gateways pinned apart;
    {"cmd": "point", "size": B, "rate": PPS, "seconds": S, "count": N|null}
        -> {"ok": true, "gen": {...}, "sink": {...}}
        `vpnbench xsk sink` in client-b (waits for its "ready"), `vpnbench xsk gen` in
        client-a towards it, then the sink is told to stop and drains;
    {"cmd": "quit"}                                               -> {"ok": true}

Any failure answers {"ok": false, "error": "..."}. The lab is always torn down on exit.
Logs go to stderr; stdout carries only the protocol.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import vpnlab
from vpnlab import Case, Lab


def log(*a) -> None:
    print("[vpnbench_afxdp]", *a, file=sys.stderr, flush=True)


def mac(ns: str, ifname: str) -> str:
    r = vpnlab.sh("ip", "-n", ns, "-j", "link", "show", ifname)
    return json.loads(r.stdout)[0]["address"]


class Driver:
    def __init__(self, dataplane: str, vpnbench: str):
        self.dataplane = dataplane
        self.vpnbench = vpnbench
        self.lab: Lab | None = None

    def teardown(self) -> None:
        if self.lab is not None:
            self.lab.down()
            self.lab = None

    def setup(self, config: str, workers: int) -> dict:
        self.teardown()
        case = Case(workers=max(workers, 1))
        lab = Lab(name=vpnlab.unique_name(f"x{config[0]}{workers}"), case=case, dataplane=self.dataplane)
        self.lab = lab
        lab.up()
        if config == "ours":
            # Pin the gateways apart: worker i of gw-a on core i, of gw-b on the next one.
            ncpu = max(1, len(os.sched_getaffinity(0)))
            for side, first in (("a", 0), ("b", 1)):
                cores = ",".join(str((first + i) % ncpu) for i in range(case.workers))
                lab.start_dataplane(side, extra=["--cores", cores])
        elif config != "plain":
            raise ValueError(f"unknown config {config}")
        lab.warm_up()
        self.src_mac = mac(lab.ns("client-a"), "ca0")
        self.dst_mac = mac(lab.ns("gw-a"), "ga-in")
        return {"ok": True}

    def point(self, size: int, rate: float, seconds: float, count: int | None) -> dict:
        if self.lab is None:
            raise RuntimeError("point before setup")
        return {"ok": True, **xsk_point(self.lab, self.vpnbench, self.src_mac, self.dst_mac, size, rate,
                                        seconds, count)}


def xsk_point(lab: Lab, vpnbench: str, src_mac: str, dst_mac: str, size: int, rate: float,
              seconds: float, count: int | None = None) -> dict:
    """One run of `vpnbench xsk sink` in client-b and `vpnbench xsk gen` in client-a (frames
    to `dst_mac`, gw-a's inside MAC): {"gen": ..., "sink": ...} as they report it. `rate` 0:
    as fast as the generator can. Also used by vpnbench_e2e.py for its small packets."""
    sink = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("client-b"), vpnbench, "xsk", "sink",
         "--ifname", "cb0", "--ip", lab.case.client("b"), "--queues", str(lab.case.queues),
         "--xdp-mode", "driver"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        while True:  # readiness: the sink's "ready" line (anything before it is logged)
            line = sink.stderr.readline()
            if line.strip() == "ready":
                break
            seen.append(line)
            if not line:
                sink.kill()
                sink.wait()
                raise RuntimeError("sink did not start: " + "".join(seen))
        args = [vpnbench, "xsk", "gen", "--ifname", "ca0", "--src-mac", src_mac,
                "--dst-mac", dst_mac, "--src-ip", lab.case.client("a"),
                "--dst-ip", lab.case.client("b"), "--size", str(size), "--rate", str(rate),
                "--seconds", str(seconds)]
        if count is not None:
            args += ["--count", str(count)]
        g = subprocess.run(["ip", "netns", "exec", lab.ns("client-a"), *args], text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=seconds + 60)
        if g.returncode != 0:
            raise RuntimeError(f"generator failed: {g.stderr}")
        gen = json.loads(g.stdout.strip().splitlines()[-1])
        out, err = sink.communicate(input="stop\n", timeout=30)
        if sink.returncode != 0:
            raise RuntimeError(f"sink failed: {err}")
        return {"gen": gen, "sink": json.loads(out.strip().splitlines()[-1])}
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("--vpnbench", required=True)
    a = ap.parse_args()
    d = Driver(a.dataplane, a.vpnbench)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                cmd = req.get("cmd")
                t0 = time.time()
                if cmd == "setup":
                    resp = d.setup(req["config"], int(req.get("workers", 1)))
                elif cmd == "point":
                    resp = d.point(int(req["size"]), float(req["rate"]), float(req["seconds"]), req.get("count"))
                elif cmd == "quit":
                    print(json.dumps({"ok": True}), flush=True)
                    break
                else:
                    raise ValueError(f"unknown command {cmd!r}")
                log(f"{cmd} done in {time.time() - t0:.1f} s")
            except Exception as e:  # noqa: BLE001 - every failure is answered, none is silent
                resp = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                if d.lab is not None:
                    resp["error"] += "\n" + d.lab.log("a")[-2000:] + d.lab.log("b")[-2000:]
            print(json.dumps(resp), flush=True)
    finally:
        d.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
