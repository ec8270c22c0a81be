#!/usr/bin/env python3
"""RFC 9611 end to end: one tunnel across many dataplane workers (per-resource Child SAs).

    e2e_rfc9611.py --dataplane PATH [--vpnctl PATH] CASE

rfc9611-ours: our iked + dataplane on both gateways, 2 workers each (two-queue veths), iked with
`per_resource_sas = "auto"` on both. gw-a's `vpnctl list --json` must show the child with three
Child SAs of the same selectors: the fallback (worker null) and one bound to worker 0 and one to
worker 1; both dataplanes hold all of them; 8 TCP flows (iperf3 -P 8) from client-a to client-b
arrive, and BOTH per-worker outbound SAs of gw-a carried packets (iked's per-SA counters, and the
dataplane's own stats file by SPI). Prints PASS/FAIL lines (e2e.py's check()) and always tears
everything down. Exit status 0 only if every check passed.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
import time

import e2e
import e2e_faults
import vpnlab
from e2e import check
from vpnlab import Case, Lab

CASES = {
    "rfc9611-ours": Case(workers=2),
}


def per_resource(conf: str, value: str = "auto") -> str:
    """`conf` (vpnlab.iked_conf) with `per_resource_sas = value` in its child."""
    return re.sub(r"(\[connections\.gw-[ab]\.children\.net\]\n)", rf'\1per_resource_sas = "{value}"\n', conf)


def listing(lab: Lab, side: str) -> dict:
    r = lab.vpnctl_iked(side, "list", "--json")
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        return {"connections": [], "error": r.stdout[-300:]}


def child_sas(doc: dict) -> list[tuple[dict, dict]]:
    """(child, Child SA) of every Child SA in a `vpnctl list --json` document."""
    return [(ch, sa) for c in doc.get("connections", []) for ch in c.get("children", []) for sa in ch.get("sas", [])]


def wait_list(lab: Lab, side: str, pred, timeout: float = 15.0) -> dict:
    """Poll `vpnctl list --json` on gw-`side` until `pred(doc)` (readiness, not a sleep)."""
    deadline = time.time() + timeout
    while True:
        doc = listing(lab, side)
        if pred(doc) or time.time() > deadline:
            return doc
        time.sleep(0.1)


def spi(s: str) -> int:
    return int(s, 16)


def shape(doc: dict) -> list:
    """The workers of the Child SAs, fallback (None) first."""
    return sorted((sa.get("worker") for _, sa in child_sas(doc)), key=lambda w: -1 if w is None else w)


def ours_checks(lab: Lab) -> None:
    lab.start_dataplane("a", ring=True)
    lab.start_dataplane("b", ring=True)
    t0 = time.time()
    pb, _ = lab.start_iked("b", "1", per_resource(vpnlab.iked_conf(lab.case, "b")))
    e2e_faults.wait_control(lab, "b", pb)
    pa, ready = lab.start_iked("a", "1", per_resource(vpnlab.iked_conf(lab.case, "a")))
    e2e_faults.wait_ready(lab, pa, ready)
    # RFC 9611 §4: the fallback Child SA (IKE_AUTH) and one per resource (CREATE_CHILD_SA).
    want = [None, 0, 1]
    docs = {side: wait_list(lab, side, lambda d: shape(d) == want and all(
        sa.get("out_in_dataplane") and sa.get("in_in_dataplane") for _, sa in child_sas(d))) for side in "ab"}
    for side in "ab":
        d = docs[side]
        sels = {(tuple(ch["local_ts"]), tuple(ch["remote_ts"]), ch["reqid"]) for ch, _ in child_sas(d)}
        check(shape(d) == want, f"gw-{side}: vpnctl list --json shows the fallback Child SA and one bound to each worker",
              f"workers {shape(d)}, {time.time() - t0:.2f} s from iked start")
        check(len(sels) == 1, f"gw-{side}: the three Child SAs have the same selectors (one child, one reqid)", str(sels))
        check(all(sa.get("out_in_dataplane") and sa.get("in_in_dataplane") for _, sa in child_sas(d)),
              f"gw-{side}: iked sees every one of them in its dataplane")
        s = lab.wait_stats(side, lambda s: s["sa_count"] == 6, timeout=5)
        have = {(x["direction"], spi(x["spi"])) for x in s["sas"]}
        need = {("out", spi(sa["out_spi"])) for _, sa in child_sas(d)} | {("in", spi(sa["in_spi"])) for _, sa in child_sas(d)}
        check(s["sa_count"] == 6 and need <= have, f"gw-{side}'s dataplane holds the 3 outbound and 3 inbound SAs",
              f"{s['sa_count']} SAs, missing {sorted(need - have)}")
    no_fail = [c.get("failures") for c in docs["a"]["connections"] + docs["b"]["connections"] if c.get("failures")]
    check(not no_fail, "no failure recorded on either side", str(no_fail)[:200])
    for side in "ab":
        log = e2e_faults.plain((lab.workdir / f"iked-{side}-1.log").read_text())
        check("bound to worker 0" in log and "bound to worker 1" in log, f"gw-{side}'s iked logs both bindings")
    lab.wait_next_hop("a")
    lab.wait_next_hop("b")
    lab.warm_up()
    # Traffic: 8 TCP flows. The veths' RSS spreads them over both queues, hence both workers.
    j = lab.iperf(seconds=2, parallel=8)
    bps = vpnlab.summary_bps(j)
    recv = j.get("end", {}).get("sum_received", {}).get("bytes", 0)
    check(bps > 1e6 and recv > 0, "8 TCP flows client-a -> client-b through the tunnel arrive",
          f"{bps / 1e6:.0f} Mbit/s, {recv} bytes received")
    s = lab.wait_stats("a", lambda s: all(w["rx_packets"]["inside"] > 0 for w in s["workers"]))
    per = [w["rx_packets"]["inside"] for w in s["workers"]]
    check(len(per) == 2 and all(n > 0 for n in per), "both workers of gw-a took flows from the inside", f"rx per worker {per}")
    # Each worker encrypts with its own bound SA: both carried packets (iked's counters, which
    # it reads from the dataplane's counters region, and the dataplane's stats file by SPI).
    bound = {sa["worker"]: spi(sa["out_spi"]) for _, sa in child_sas(docs["a"]) if sa.get("worker") is not None}

    def carried(d: dict) -> dict:
        return {sa.get("worker"): sa.get("out_packets", 0) for _, sa in child_sas(d)}

    d = wait_list(lab, "a", lambda d: carried(d).get(0, 0) > 0 and carried(d).get(1, 0) > 0, timeout=10)
    check(carried(d).get(0, 0) > 0 and carried(d).get(1, 0) > 0,
          "vpnctl list: both per-worker outbound SAs of gw-a carried packets", f"out_packets by worker {carried(d)}")
    check(carried(d).get(None) == 0, "gw-a's fallback Child SA carried nothing: every worker sent on its own SA",
          f"{carried(d).get(None)} packets")
    s = lab.stats("a")
    out = {spi(x["spi"]): x["packets"] for x in s["sas"] if x["direction"] == "out"}
    per_sa = {w: out.get(v, 0) for w, v in bound.items()}
    check(len(per_sa) == 2 and all(n > 0 for n in per_sa.values()),
          "gw-a's dataplane: both per-worker outbound SAs carried packets", f"packets by worker {per_sa}")
    for side, p in (("a", pa), ("b", pb)):
        check(p.poll() is None, f"gw-{side}'s iked still runs")
    print(f"  rfc9611-ours checks: {time.time() - t0:.1f} s", flush=True)


def run(case_name: str, dataplane: str, vpnctl: str) -> int:
    e2e.VPNCTL = vpnctl
    e2e_faults.check = check
    lab = Lab(name=vpnlab.unique_name("r96"), case=CASES[case_name], dataplane=dataplane, vpnctl=vpnctl)
    try:
        lab.up()
        ours_checks(lab)
    except Exception as e:  # noqa: BLE001
        check(False, f"{case_name} ran to the end", repr(e))
    return e2e.teardown(lab, case_name)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("--vpnctl", default="", help="vpnctl binary (default: next to the dataplane)")
    ap.add_argument("case", choices=sorted(CASES))
    a = ap.parse_args()
    vpnctl = a.vpnctl or str(pathlib.Path(a.dataplane).with_name("vpnctl"))
    return run(a.case, a.dataplane, vpnctl)


if __name__ == "__main__":
    sys.exit(main())
