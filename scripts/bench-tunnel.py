#!/usr/bin/env python3
"""End-to-end tunnel benchmark in network namespaces (needs root).

Runs, on one fresh topology per configuration and in one process:
  - plain kernel forwarding (no dataplane): the baseline;
  - our dataplane with 1 worker, and with 2 workers (two-queue veths);
each with a TCP stream (iperf3, 1 and 4 streams) and a small-packet UDP blaster (iperf3, 64-byte
payloads, unlimited rate; received packets per second). Prints a table and writes
bench/results/tunnel.json. These machines are shared and noisy: compare the ratios.

    bench-tunnel.py --dataplane target/release/dataplane [--seconds 3]
"""
from __future__ import annotations

import argparse
import json
import sys

import vpnlab
from vpnlab import Case, Lab


def udp_pps(j: dict) -> tuple[float, float]:
    s = j["end"]["sum"]
    secs = float(s.get("seconds") or 1)
    got = float(s.get("packets", 0)) - float(s.get("lost_packets", 0))
    return got / secs, float(s.get("lost_percent", 0.0))


def measure(lab: Lab, seconds: float) -> dict:
    tcp1 = vpnlab.summary_bps(lab.iperf(seconds=seconds, parallel=1, port=5301))
    tcp4 = vpnlab.summary_bps(lab.iperf(seconds=seconds, parallel=4, port=5302))
    pps, loss = udp_pps(lab.iperf(seconds=seconds, udp_rate="0", length=64, parallel=2, port=5303))
    return {"tcp_1_stream_gbps": round(tcp1 / 1e9, 3), "tcp_4_streams_gbps": round(tcp4 / 1e9, 3),
            "udp64_rx_kpps": round(pps / 1e3, 1), "udp64_loss_percent": round(loss, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("--seconds", type=float, default=3)
    a = ap.parse_args()
    rows = {}
    for label, workers in (("plain kernel forwarding", 0), ("dataplane, 1 worker", 1), ("dataplane, 2 workers", 2)):
        lab = Lab(name=vpnlab.unique_name(f"b{workers}"), case=Case(workers=max(workers, 1)), dataplane=a.dataplane)
        try:
            lab.up()
            if workers:
                lab.start_dataplane("a")
                lab.start_dataplane("b")
                lab.warm_up()
            rows[label] = measure(lab, a.seconds)
            print(f"{label:<26} {rows[label]}", flush=True)
        finally:
            lab.down()
    base = rows["plain kernel forwarding"]
    print(f"\n{'configuration':<26} {'TCP 1 (Gbit/s)':>15} {'TCP 4 (Gbit/s)':>15} {'UDP 64B (kpps)':>15} {'vs plain TCP4':>14}")
    for label, r in rows.items():
        ratio = r["tcp_4_streams_gbps"] / base["tcp_4_streams_gbps"] if base["tcp_4_streams_gbps"] else 0
        print(f"{label:<26} {r['tcp_1_stream_gbps']:>15.2f} {r['tcp_4_streams_gbps']:>15.2f} {r['udp64_rx_kpps']:>15.1f} {ratio:>14.2f}")
    out = vpnlab.ROOT / "bench" / "results" / "tunnel.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seconds": a.seconds, "results": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(vpnlab.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
