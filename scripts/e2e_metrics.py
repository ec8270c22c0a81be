#!/usr/bin/env python3
"""The Prometheus endpoint end to end (issue 14).

    e2e_metrics.py --dataplane PATH [--vpnctl PATH] metrics

ours <-> ours: iked on both gateways keying our dataplanes; gw-a's iked serves
`--metrics 127.0.0.1:PORT` on the loopback of gw-a's namespace only. While a 0.01 s ping and
a short iperf3 run through the tunnel, the endpoint is scraped several times from inside that
namespace (urllib under `ip netns exec`) and each scrape is parsed by a real Prometheus text
parser (prometheus_client's). Asserted: the HTTP answer (200, Content-Type text/plain;
version=0.0.4, 404 elsewhere); every family has its HELP and TYPE, no sample is negative;
every counter is monotonic between scrapes and the per-SA counters moved with the traffic;
xdpipsec_ike_sas shows one established IKE SA; both daemons are up. After the traffic stops,
the per-SA packet and byte counters of a scrape equal those of `vpnctl stats --json` for the
same snapshot of the dataplane's counters (same xdpipsec_dataplane_counters_timestamp_seconds
as its updated_unix_ns). Last, `vpnctl metrics` prints the same families.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import e2e
import e2e_faults
import vpnlab
from e2e import check
from vpnlab import Case, Lab

PORT = 9469
SCRAPES = 4

# Runs inside gw-a's namespace: GET a path, print the status, the Content-Type and the body
# as one JSON line.
FETCH = r"""
import json, sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=5)
    out = {"status": r.status, "type": r.headers.get("Content-Type"), "body": r.read().decode()}
except urllib.error.HTTPError as e:
    out = {"status": e.code, "type": e.headers.get("Content-Type"), "body": e.read().decode()}
print(json.dumps(out))
"""


def run_cmd(*args: str) -> subprocess.CompletedProcess:
    """stdout and stderr apart (vpnlab.sh merges them)."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


def fetch(lab: Lab, path: str) -> dict:
    r = run_cmd("ip", "netns", "exec", lab.ns("gw-a"), sys.executable, "-c", FETCH, f"http://127.0.0.1:{PORT}{path}")
    if r.returncode != 0:
        raise RuntimeError(f"GET {path} in gw-a: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout)


class Scrape:
    """One parsed scrape: samples by (name, labels), and the families' declared types."""

    def __init__(self, text: str):
        from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

        self.text = text
        self.samples: dict[tuple, float] = {}
        self.types: dict[str, str] = {}
        self.documented: set[str] = set()
        for fam in text_string_to_metric_families(text):
            self.types[fam.name] = fam.type
            if fam.documentation:
                self.documented.add(fam.name)
            for s in fam.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        self.ts = self.get("xdpipsec_dataplane_counters_timestamp_seconds")

    def get(self, name: str, **labels) -> float | None:
        for (n, ls), v in self.samples.items():
            if n == name and all(dict(ls).get(k) == w for k, w in labels.items()):
                return v
        return None

    def series(self, name: str) -> dict[tuple, float]:
        return {ls: v for (n, ls), v in self.samples.items() if n == name}

    def counters(self) -> dict[tuple, float]:
        """The samples of counter families (`_total`)."""
        return {k: v for k, v in self.samples.items()
                if self.types.get(k[0].removesuffix("_total")) == "counter"}

    def sa(self, name: str) -> dict[tuple[str, str], float]:
        """A per-SA family by (direction, SPI as a number)."""
        return {(d["direction"], int(d["spi"], 16)): v for d, v in ((dict(ls), v) for ls, v in self.series(name).items())}


def scrape(lab: Lab) -> Scrape:
    r = fetch(lab, "/metrics")
    if r["status"] != 200:
        raise RuntimeError(f"GET /metrics: {r['status']} {r['body'][:200]}")
    return Scrape(r["body"])


def vpnctl_stats(lab: Lab) -> dict:
    r = run_cmd(lab.vpnctl, "stats", "--json", "--ring", lab.ring("a"))
    if r.returncode != 0:
        raise RuntimeError(f"vpnctl stats --json: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return json.loads(r.stdout)


def wait_metrics(lab: Lab, p: subprocess.Popen, timeout: float = 10) -> None:
    """Readiness: the endpoint answers (iked binds it before it starts its loop)."""
    deadline = time.time() + timeout
    while True:
        try:
            fetch(lab, "/metrics")
            return
        except (RuntimeError, json.JSONDecodeError):
            if p.poll() is not None or time.time() > deadline:
                raise RuntimeError("iked's metrics endpoint does not answer:\n" + e2e_faults.iked_logs(lab)) from None
            time.sleep(0.05)


def metrics_case(lab: Lab) -> None:
    lab.start_dataplane("a", ring=True)
    lab.start_dataplane("b", ring=True)
    pb, _ = lab.start_iked("b", "1", vpnlab.iked_conf(lab.case, "b"))
    e2e_faults.wait_control(lab, "b", pb)
    pa, ready = lab.start_iked("a", "1", vpnlab.iked_conf(lab.case, "a"), extra=["--metrics", f"127.0.0.1:{PORT}"])
    e2e_faults.wait_ready(lab, pa, ready)
    for side in "ab":
        s = lab.wait_stats(side, lambda s: s["sa_count"] == 2, timeout=10)
        check(s["sa_count"] == 2, f"gw-{side}: the tunnel is up (2 SAs installed by iked)", f"{s['sa_count']} SAs")
    lab.wait_next_hop("a")
    lab.wait_next_hop("b")
    lab.warm_up()
    wait_metrics(lab, pa)

    r = fetch(lab, "/metrics")
    check(r["status"] == 200 and (r["type"] or "").startswith("text/plain; version=0.0.4"),
          "GET /metrics answers 200 in the text exposition format", f"{r['status']} {r['type']}")
    r404 = fetch(lab, "/other")
    check(r404["status"] == 404, "another path answers 404", str(r404["status"]))
    host = run_cmd(sys.executable, "-c", FETCH, f"http://127.0.0.1:{PORT}/metrics")
    check(host.returncode != 0 or '"status": 200' not in host.stdout,
          "the endpoint is on gw-a's loopback only (the host's 127.0.0.1 does not answer)")

    # Traffic: a 0.01 s ping in the background, a paced iperf3 between scrapes.
    ping = e2e.background_ping(lab, count=350, interval=0.01)
    scrapes: list[Scrape] = []
    try:
        for i in range(SCRAPES):
            scrapes.append(scrape(lab))
            if i == 1:
                j = lab.iperf(seconds=1, bitrate="50M")
                check("error" not in j, "iperf3 through the tunnel", j.get("error", ""))
            else:
                time.sleep(0.7)
    finally:
        ping.wait(timeout=30)
    first, last = scrapes[0], scrapes[-1]
    for n, s in enumerate(scrapes):
        undocumented = set(s.types) - s.documented
        negative = [k for k, v in s.samples.items() if v < 0]
        check(not undocumented and not negative and s.ts is not None,
              f"scrape {n + 1}: parsed by prometheus_client, {len(s.types)} families with HELP and TYPE, no negative sample",
              f"undocumented {sorted(undocumented)}, negative {negative[:3]}")
    backwards = []
    for a, b in zip(scrapes, scrapes[1:]):
        ca, cb = a.counters(), b.counters()
        backwards += [(k, ca[k], cb[k]) for k in ca.keys() & cb.keys() if cb[k] < ca[k]]
    compared = len(first.counters().keys() & last.counters().keys())
    check(not backwards and compared > 10, f"every counter is monotonic across {SCRAPES} scrapes",
          f"{compared} counter series compared; went back: {backwards[:3]}")
    moved = {k: (first.sa("xdpipsec_sa_packets_total").get(k, 0), v)
             for k, v in last.sa("xdpipsec_sa_packets_total").items()}
    check(len(moved) == 2 and all(b > a for a, b in moved.values()),
          "both SAs' packet counters moved with the traffic", str({f"{d} {spi:#x}": v for (d, spi), v in moved.items()}))
    ts = [s.ts for s in scrapes]
    check(ts == sorted(ts) and ts[-1] > ts[0], "the counters' timestamp advances between scrapes", str(ts))
    check(last.get("xdpipsec_ike_sas", state="established") == 1,
          "xdpipsec_ike_sas shows one established IKE SA", str(last.series("xdpipsec_ike_sas")))
    check(last.get("xdpipsec_up", daemon="iked") == 1 and last.get("xdpipsec_up", daemon="dataplane") == 1,
          "xdpipsec_up: iked and the dataplane are up", str(last.series("xdpipsec_up")))
    named = [dict(ls) for ls in last.series("xdpipsec_sa_packets_total")]
    check(named and all(d.get("conn") == "gw-b" and d.get("child") for d in named),
          "each SA carries its connection and child", str(named))
    enc = sum(last.series("xdpipsec_worker_encapsulated_packets_total").values())
    check(enc >= 300, "the workers' encapsulated counter counted the traffic", f"{enc:.0f}")

    # Traffic stopped: wait until two writes of the counters agree, then match a scrape and
    # `vpnctl stats --json` taken from the same write.
    same = None
    for _ in range(40):
        a = scrape(lab)
        st = vpnctl_stats(lab)
        b = scrape(lab)
        for s in (a, b):
            if s.ts is not None and abs(s.ts * 1e9 - st["updated_unix_ns"]) < 1e3:
                same = (s, st)
        if same and a.sa("xdpipsec_sa_packets_total") == b.sa("xdpipsec_sa_packets_total") and a.ts != b.ts:
            break
        same = None
        time.sleep(0.2)
    check(same is not None, "a scrape and vpnctl stats --json from the same counters snapshot (same timestamp)")
    if same:
        s, st = same
        want = {(x["direction"], int(x["spi"], 16)): (x["packets"], x["bytes"]) for x in st["sas"]}
        got = {k: (v, s.sa("xdpipsec_sa_bytes_total").get(k)) for k, v in s.sa("xdpipsec_sa_packets_total").items()}
        check(len(want) == 2 and got == want, "per-SA packets and bytes equal vpnctl stats --json",
              f"metrics {got}, vpnctl stats {want}")
        wenc = sum(w["encrypted"] for w in st["workers"])
        check(sum(s.series("xdpipsec_worker_encapsulated_packets_total").values()) == wenc,
              "the workers' encapsulated packets equal vpnctl stats --json", str(wenc))

    r = run_cmd(lab.vpnctl, "metrics", "--socket", str(lab.workdir / "iked-a.sock"), "--ring", lab.ring("a"))
    m = Scrape(r.stdout) if r.returncode == 0 else None
    diff = sorted(set(m.types) ^ set(last.types)) if m else []
    check(m is not None and not diff and m.get("xdpipsec_ike_sas", state="established") == 1,
          "vpnctl metrics prints the same families",
          f"exit {r.returncode} {r.stderr.strip()[-200:]}; differ: {diff}; "
          f"ike_sas {m.series('xdpipsec_ike_sas') if m else None}")


def run(dataplane: str, vpnctl: str) -> int:
    e2e.VPNCTL = vpnctl
    e2e_faults.check = check
    lab = Lab(name=vpnlab.unique_name("metrics"), case=Case(), dataplane=dataplane, vpnctl=vpnctl)
    t0 = time.time()
    try:
        lab.up()
        metrics_case(lab)
    except Exception as e:  # noqa: BLE001
        check(False, "metrics ran to the end", repr(e)[-1500:])
    finally:
        print(f"  metrics: {time.time() - t0:.0f} s", flush=True)
    return e2e.teardown(lab, "metrics")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("--vpnctl", default="", help="vpnctl binary (default: next to the dataplane)")
    ap.add_argument("case", choices=["metrics"])
    a = ap.parse_args()
    return run(a.dataplane, a.vpnctl or str(pathlib.Path(a.dataplane).with_name("vpnctl")))


if __name__ == "__main__":
    sys.exit(main())
