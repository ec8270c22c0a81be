#!/usr/bin/env python3
"""Print ns/packet for the ESP criterion benchmarks and write bench/results/esp.json.

Run after `cargo bench -p bench --bench esp`. Each criterion iteration is a batch of 32
packets, so the per-packet figure is the mean iteration time divided by 32.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRIT = ROOT / "target" / "criterion"
BATCH = 32


def main() -> int:
    rows = []
    for est in sorted(CRIT.glob("esp_*/*/new/estimates.json")):
        bench = est.parent.parent.name  # e.g. encap_1420
        group = est.parent.parent.parent.name  # e.g. esp_aes128gcm16
        op, size = bench.rsplit("_", 1)
        mean = json.loads(est.read_text())["mean"]["point_estimate"]
        ns = mean / BATCH
        rows.append({"cipher": group.removeprefix("esp_"), "op": op, "inner_bytes": int(size),
                     "ns_per_packet": round(ns, 1),
                     "gbit_per_s": round(int(size) * 8 / ns, 2)})
    if not rows:
        print("no criterion results under target/criterion; run cargo bench -p bench --bench esp",
              file=sys.stderr)
        return 1
    raw = {r["inner_bytes"]: r["ns_per_packet"] for r in rows if r["cipher"] == "raw-aead-aes128gcm16"}
    print(f"{'cipher':<22} {'op':<6} {'bytes':>6} {'ns/pkt':>9} {'Gbit/s':>7} {'vs raw AEAD':>12}")
    for r in rows:
        ratio = ""
        if r["cipher"] == "aes128gcm16" and r["inner_bytes"] in raw:
            ratio = f"{r['ns_per_packet'] / raw[r['inner_bytes']]:.2f}x"
            r["ratio_vs_raw_aead"] = round(r["ns_per_packet"] / raw[r["inner_bytes"]], 3)
        print(f"{r['cipher']:<22} {r['op']:<6} {r['inner_bytes']:>6} {r['ns_per_packet']:>9.1f} "
              f"{r['gbit_per_s']:>7.2f} {ratio:>12}")
    out = ROOT / "bench" / "results" / "esp.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
