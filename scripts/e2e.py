#!/usr/bin/env python3
"""End-to-end tests of the dataplane in network namespaces (needs root).

    e2e.py --dataplane PATH CASE

CASE is one of: tunnel-v4, outer-v6, inner-v6, nat-t, mtu, two-workers. Each builds its own
topology (unique names), checks what the issue asks for, prints PASS/FAIL lines, and always
tears everything down. Exit status 0 only if every check passed.
"""
from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time

import vpnlab
from vpnlab import Case, Lab, ns_exec

CASES = {
    "tunnel-v4": Case(),
    "outer-v6": Case(outer_v6=True),
    "inner-v6": Case(inner_v6=True),
    "nat-t": Case(nat_t=True),
    "mtu": Case(),
    "two-workers": Case(workers=2),
}

failures: list[str] = []


def check(ok: bool, what: str, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'}: {what}" + (f" ({detail})" if detail else ""), flush=True)
    if not ok:
        failures.append(what)


def capture_and_decrypt(lab: Lab) -> None:
    """Only gw-a runs our dataplane: ESP from gw-a reaches gw-b's kernel, where tcpdump
    sees it (packets our XDP program steers to AF_XDP are invisible to tcpdump)."""
    from scapy.all import ESP, IP, UDP, IPv6, SecurityAssociation, rdpcap  # noqa: PLC0415

    c = lab.case
    pcap = lab.workdir / "wan.pcap"
    tcpdump = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("gw-b"), "tcpdump", "-i", "gb-out", "-U", "--immediate-mode",
         "-w", str(pcap), "esp or udp port 4500 or icmp or icmp6"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Readiness: tcpdump says it is listening.
    line = tcpdump.stderr.readline()
    check("listening" in line, "tcpdump ready", line.strip())
    # Through the tunnel (no answer yet: gw-b has no dataplane) ...
    lab.ping("client-a", c.client("b"), count=6, interval=0.1)
    # ... and outside the policy: gw-b's own WAN address is routed in clear.
    plain = lab.ping("client-a", "192.0.2.2", count=2)
    check(plain.returncode == 0, "traffic outside the policy is forwarded in clear by the kernel")
    time.sleep(0.2)  # let the last packets reach the capture (it is flushed per packet)
    tcpdump.send_signal(signal.SIGINT)
    tcpdump.wait(timeout=10)

    pkts = rdpcap(str(pcap))
    hdr = (IPv6(src=c.outer("a"), dst=c.outer("b")) if c.outer_v6 else IP(src=c.outer("a"), dst=c.outer("b")))
    sa = SecurityAssociation(ESP, spi=vpnlab.SPI_AB, crypt_algo="AES-GCM", crypt_key=vpnlab.KEY_AB,
                             tunnel_header=hdr,
                             nat_t_header=UDP(sport=4500, dport=4500) if c.nat_t else None)
    esp, decrypted, plain_seen = 0, [], 0
    for p in pkts:
        ip = p.getlayer(IPv6) if c.outer_v6 else p.getlayer(IP)
        if ip is None:
            continue
        # Top-level ESP only: gw-b's kernel (no dataplane yet) answers with ICMP errors
        # that quote the ESP packet, and those must not count.
        pl = ip.payload
        proto_esp = (isinstance(pl, UDP) and pl.dport == 4500) if c.nat_t else isinstance(pl, ESP)
        if proto_esp:
            esp += 1
            spi = pl.payload.spi if c.nat_t and isinstance(pl.payload, ESP) else getattr(pl, "spi", None)
            if spi is not None and spi != vpnlab.SPI_AB:
                continue
            inner = sa.decrypt(ip.copy())
            decrypted.append(inner)
        elif not c.outer_v6 and IP in p and p[IP].dst == "192.0.2.2" and p[IP].proto == 1:
            plain_seen += 1
    want_dst = c.client("b")
    inner_ok = [q for q in decrypted if getattr(q, "dst", None) == want_dst]
    check(esp >= 5, "packets on the WAN are ESP" + (" in UDP/4500" if c.nat_t else ""), f"{esp} captured")
    check(len(inner_ok) == len(decrypted) and len(decrypted) >= 5,
          "scapy decrypts them with the static key to client-a -> client-b traffic",
          f"{len(inner_ok)}/{len(decrypted)}")
    if not c.outer_v6:
        check(plain_seen >= 1, "traffic outside the policy is not tunnelled", f"{plain_seen} clear ICMP to 192.0.2.2")


def traffic(lab: Lab) -> dict:
    c = lab.case
    lab.warm_up()
    r = lab.ping("client-a", c.client("b"), count=5, interval=0.1)
    got = re.search(r"(\d+) received", r.stdout)
    check(got is not None and got.group(1) == "5", "ping client-a -> client-b through the tunnel", (got.group(0) if got else r.stdout[-200:]))
    ttl = re.search(r"ttl=(\d+)", r.stdout)
    check(ttl is not None and ttl.group(1) == "62", "each gateway decrements the TTL once",
          ttl.group(0) if ttl else "")
    j = lab.iperf(seconds=2, parallel=8 if c.workers > 1 else 1)
    bps = vpnlab.summary_bps(j)
    check(bps > 1e6, "TCP stream through the tunnel", f"{bps / 1e6:.0f} Mbit/s")
    return j


def mtu_checks(lab: Lab) -> None:
    c = lab.case
    r = lab.ping("client-a", c.client("b"), count=2, size=1472, df=True)
    m = re.search(r"mtu ?= ?(\d+)", r.stdout)
    check(m is not None, "a DF packet too big for the tunnel gets ICMP fragmentation-needed", r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "")
    if m:
        mtu = int(m.group(1))
        ok = lab.ping("client-a", c.client("b"), count=2, size=mtu - 28, df=True)
        check(ok.returncode == 0 and 1400 < mtu < 1500, "a packet of the advertised MTU passes", f"mtu {mtu}")
    s = lab.stats("a")
    sent = sum(w["worker_drops"].get("too_big_icmp_sent", 0) for w in s["workers"])
    check(sent >= 1, "the dataplane counted the ICMP errors it sent", str(sent))


def run(case_name: str, dataplane: str) -> int:
    case = CASES[case_name]
    lab = Lab(name=vpnlab.unique_name(case_name[:3]), case=case, dataplane=dataplane)
    try:
        lab.up()
        lab.start_dataplane("a")
        if case_name != "mtu":
            capture_and_decrypt(lab)
        lab.start_dataplane("b")
        traffic(lab)
        if case_name == "mtu":
            mtu_checks(lab)
        if case.workers > 1:
            for side, key in (("a", "inside"), ("b", "outside")):
                s = lab.wait_stats(side, lambda s: all(w["rx_packets"][key] > 0 for w in s["workers"]))
                per = [w["rx_packets"][key] for w in s["workers"]]
                check(len(per) == 2 and all(n > 0 for n in per), f"both workers of gw-{side} carry traffic", f"{key} rx per worker {per}")
        # SIGKILL: the XDP program must go with the process (bpf_link).
        check(lab.xdp_attached("a"), "XDP attached while the dataplane runs")
        lab.stop_dataplane("a", signal.SIGKILL)
        gone = False
        for _ in range(50):
            if not lab.xdp_attached("a"):
                gone = True
                break
            time.sleep(0.05)
        check(gone, "after SIGKILL the XDP program is gone")
        # A clean stop exits 0 and prints counters.
        rc = lab.stop_dataplane("b", signal.SIGTERM)
        check(rc == 0 and "dataplane counters" in lab.log("b"), "SIGTERM stops the dataplane cleanly", f"exit {rc}")
    except Exception as e:  # noqa: BLE001
        check(False, f"{case_name} ran to the end", repr(e))
    finally:
        if failures:
            for side in ("a", "b"):
                print(f"--- dataplane {side} log ---\n{lab.log(side)[-3000:]}")
        lab.down()
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    check(lab.name not in leftover, "namespaces removed")
    print(f"{case_name}: {'FAILED' if failures else 'ok'}")
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("case", choices=sorted(CASES))
    a = ap.parse_args()
    return run(a.case, a.dataplane)


if __name__ == "__main__":
    sys.exit(main())
