#!/usr/bin/env python3
"""The demo: a real IPsec tunnel between two network namespaces, carried by our dataplane.

client-a — gw-a ==ESP== gw-b — client-b. Both gateways run the AF_XDP dataplane; iked
negotiates the tunnel (IKEv2) and installs its SAs through the shared-memory ring. We ping
through the tunnel, run a TCP stream with iperf3, compare with plain kernel forwarding on the
same topology, then watch the Child SA being rekeyed every few seconds under a TCP stream and
a 100-per-second ping with nothing lost, and print packets, Gbit/s and drops by reason.
Everything is torn down at the end, on Ctrl-C and on failure.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import textwrap
import time
import signal
import sys

import vpnlab
from vpnlab import Case, Lab


def fmt_drops(stats: dict) -> list[str]:
    out = []
    for i, w in enumerate(stats["workers"]):
        for k, v in sorted({**w["esp_drops"], **w["worker_drops"]}.items()):
            out.append(f"worker {i}: {k} = {v}")
    return out or ["none"]


def child_line(lab: Lab) -> str:
    """gw-a's Child SA as `vpnctl list` shows it: SPIs, traffic, timers, rekeys."""
    lines = lab.vpnctl_iked("a", "list").stdout.splitlines()
    child = [ln.strip() for ln in lines if ln.strip().startswith(("child net: in spi", "in "))]
    return " | ".join(child[-2:]) if child else "(no Child SA listed)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rekey-seconds", type=float, default=12,
                    help="how long to watch rekeys under traffic (child rekey_time 4 s)")
    a = ap.parse_args()

    # SIGTERM tears down like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    case = Case(workers=a.workers)
    lab = Lab(name=vpnlab.unique_name("demo"), case=case, dataplane=a.dataplane)
    try:
        print("== topology: client-a (10.1.0.10) — gw-a ==WAN 192.0.2.0/24== gw-b — client-b (10.2.0.20)")
        lab.up()

        print(f"\n== baseline: plain kernel forwarding, {a.seconds:.0f} s TCP")
        base = vpnlab.summary_bps(lab.iperf(seconds=a.seconds))
        print(f"   {base / 1e9:.2f} Gbit/s")

        print("\n== starting our dataplane on gw-a and gw-b, each with a shared-memory ring to its controller")
        lab.start_dataplane("a", ring=True)
        lab.start_dataplane("b", ring=True)
        for side in "ab":
            line = next((ln for ln in lab.log(side).splitlines() if "sockets bound" in ln), "")
            print(f"   gw-{side}: " + re.sub(r"\x1b\[[0-9;]*m", "", line).split("dataplane:")[-1].strip())
        print("\n== iked on both gateways negotiates the tunnel (IKEv2, PSK, aes128gcm16-prfsha256-x25519)")
        print("   and installs the SAs into each dataplane through its ring")
        t0 = time.time()
        # A short Child SA lifetime on gw-a, so the demo shows rekeys (the default is 1 h).
        rekey = dict(child_rekey_time="4s", child_rand_time="1s")
        lab.start_iked("b", "demo", vpnlab.iked_conf(case, "b"))
        while not (lab.workdir / "iked-b.sock").exists() and time.time() - t0 < 10:
            time.sleep(0.02)
        pa, ready = lab.start_iked("a", "demo", vpnlab.iked_conf(case, "a", **rekey))
        while not ready.exists():
            if pa.poll() is not None or time.time() - t0 > 20:
                raise RuntimeError("iked did not bring the tunnel up: " + (lab.workdir / "iked-a-demo.log").read_text()[-2000:])
            time.sleep(0.05)
        print(f"   tunnel up {time.time() - t0:.2f} s after iked started")
        for ln in (lab.workdir / "iked-a-demo.log").read_text().splitlines():
            ln = re.sub(r"\x1b\[[0-9;]*m", "", ln)
            if "IKE SA established" in ln or re.search(r"Child SA \S+ installed", ln):
                print("   gw-a iked: " + ln.split(": ", 1)[-1][:150])
        lab.wait_next_hop("a")
        lab.wait_next_hop("b")
        lab.warm_up()

        print("\n== ping client-a -> client-b through the tunnel")
        r = lab.ping("client-a", "10.2.0.20", count=5, interval=0.2)
        for ln in r.stdout.strip().splitlines()[-2:]:
            print("   " + ln)

        print(f"\n== TCP stream client-a -> client-b through the tunnel, {a.seconds:.0f} s (iperf3)")
        tun = vpnlab.summary_bps(lab.iperf(seconds=a.seconds))
        print(f"   {tun / 1e9:.2f} Gbit/s  ({100 * tun / base:.0f}% of plain forwarding on this machine)")

        # TCP paced to half of what the tunnel just carried: an unpaced stream fills the queues
        # until TCP's own losses, and the ping sharing them then loses a few packets whether or
        # not a rekey happens (scripts/e2e_rekey.py measured it); the demo is about the rekeys.
        pace = f"{max(100, int(tun * 0.5 / 1e6))}M"
        print(f"\n== rekeying under traffic: gw-a's child rekey_time is 4 s; {a.rekey_seconds:.0f} s of TCP"
              f" (paced to {pace}bit/s) plus a ping every 10 ms")
        before = child_line(lab)
        print("   before: " + before)
        ping = subprocess.Popen(["ip", "netns", "exec", lab.ns("client-a"), "ping", "-q", "-i", "0.01", "-c",
                                 str(int(a.rekey_seconds * 100)), "10.2.0.20"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tcp = vpnlab.summary_bps(lab.iperf(seconds=a.rekey_seconds - 1, bitrate=pace))
        out, _ = ping.communicate(timeout=a.rekey_seconds + 30)
        after = child_line(lab)
        print("   after:  " + after)
        stats = next((ln for ln in out.splitlines() if "packets transmitted" in ln), out.strip())
        print(f"   ping: {stats}")
        print(f"   TCP meanwhile: {tcp / 1e9:.2f} Gbit/s")
        rekeyed = [ln.split(": ", 1)[-1][:120] for ln in
                   (re.sub(r"\x1b\[[0-9;]*m", "", x) for x in (lab.workdir / "iked-a-demo.log").read_text().splitlines())
                   if re.search(r"Child SA \S+ rekeyed", ln)]
        print(f"   gw-a iked logged {len(rekeyed)} rekeys; the last: {rekeyed[-1] if rekeyed else '-'}")
        if " 0% packet loss" not in stats:
            raise RuntimeError(f"pings were lost across the rekeys: {stats}")

        sa = lab.wait_stats("a", lambda s: True)
        sb = lab.wait_stats("b", lambda s: True)
        print("\n== what the dataplanes counted")
        for name, s in (("gw-a", sa), ("gw-b", sb)):
            enc = sum(w["encapsulated"] for w in s["workers"])
            dec = sum(w["decapsulated"] for w in s["workers"])
            print(f"   {name}: {enc} packets encrypted, {dec} decrypted; XDP {s['xdp']}")
            for x in s["sas"]:
                name = x["name"] or f"reqid {x['reqid']}"
                print(f"      SA {name:<7} {x['direction']:<3} spi {x['spi']}: {x['packets']} packets, {x['bytes']} bytes")
            for d in fmt_drops(s):
                print(f"      drops: {d}")
        print("\n   (a few no_next_hop drops are the first packets to a new neighbour, while the kernel resolves it)")
        # The operator's view of gw-a, the way they would look at it: daemons, SAs, diagnosis.
        for cmd in (["status"], ["list"], ["diagnose"]):
            print(f"\n== vpnctl {' '.join(cmd)}   (gw-a)")
            r = lab.vpnctl_iked("a", *cmd)
            print(textwrap.indent((r.stdout.strip() or r.stderr.strip()), "   "))
            if cmd == ["diagnose"] and r.returncode == 4:
                raise RuntimeError("vpnctl diagnose found an error on a working tunnel")
        print("\nDemo done.")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; tearing down")
        return 130
    except Exception as e:  # noqa: BLE001
        print(f"\ndemo failed: {e}")
        for side in "ab":
            print(f"--- dataplane {side} log ---\n{lab.log(side)[-2000:]}")
            iked = lab.workdir / f"iked-{side}-demo.log"
            if iked.exists():
                print(f"--- iked {side} log ---\n{iked.read_text()[-6000:]}")
        return 1
    finally:
        lab.down()
        print(f"== topology {lab.name} removed")


if __name__ == "__main__":
    sys.exit(main())
