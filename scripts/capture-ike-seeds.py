#!/usr/bin/env python3
"""Capture strongSwan's IKE messages as fuzz seeds (run as root, after a build):

    python3 scripts/capture-ike-seeds.py [--dataplane target/debug/dataplane]

Runs the strongSwan interop scenario of scripts/e2e.py (our iked and dataplane on gw-a,
charon with kernel-libipsec on gw-b: every proposal of the matrix in both roles, then a PSK
mismatch and disjoint proposals) with tcpdump on gw-b's WAN interface, and writes what
charon sent, so the fuzzers start from a real peer's messages, not only our own:

  fuzz/seeds/ike_codec/strongswan-*     every IKE message charon sent (the non-ESP marker
                                        stripped on 4500), each distinct one once;
  fuzz/seeds/ike_exchange/strongswan-*  each of charon's IKE_SA_INIT requests as a raw
                                        datagram to our responder (stage 0; the harness's
                                        input format is in fuzz/harness/src/exchange.rs).

Charon's encrypted messages are under keys only that run knew, so for ike_exchange they
would only reach the unknown-SPI path; ike_codec takes them all. Deterministic up to the
random parts of each message (SPIs, nonces, key shares): rerunning replaces the files.
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import signal
import struct
import subprocess
import sys

import e2e
import vpnlab
from vpnlab import Lab

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"
IKE_SA_INIT = 34
EXCHANGES = {34: "init", 35: "auth", 36: "child", 37: "info", 43: "intermediate"}


def ike_messages(pcap: pathlib.Path, charon_addr: str) -> list[bytes]:
    """IKE messages charon sent, in capture order (ESP-in-UDP and keepalives left out)."""
    from scapy.all import IP, UDP, rdpcap  # noqa: PLC0415

    out = []
    for p in rdpcap(str(pcap)):
        if IP not in p or UDP not in p or p[IP].src != charon_addr:
            continue
        u = p[UDP]
        data = bytes(u.payload)
        if u.sport == 4500 or u.dport == 4500:
            if data[:4] != b"\0\0\0\0":
                continue  # ESP (RFC 3948 §2.2) or a NAT keepalive
            data = data[4:]
        if len(data) >= 28 and data[17] == 0x20:  # RFC 7296 §3.1: version 2.0
            out.append(data)
    return out


def name(msg: bytes) -> str:
    kind = EXCHANGES.get(msg[18], f"x{msg[18]}")
    role = "resp" if msg[19] & 0x20 else "req"
    return f"strongswan-{kind}-{role}-{hashlib.sha256(msg).hexdigest()[:10]}"


def exchange_seed(msg: bytes) -> bytes:
    """ike_exchange input: setup 0 (nothing delivered yet), one raw record to b:500 from a:500
    ([op][ctl][first][len:2][bytes], fuzz/harness/src/exchange.rs)."""
    return bytes([0, 0, 0, 0]) + struct.pack(">H", len(msg)) + msg


def write(target: str, files: dict[str, bytes]) -> None:
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("strongswan-*"):
        old.unlink()
    for n, data in sorted(files.items()):
        (d / n).write_bytes(data)
    print(f"{target}: {len(files)} seeds from strongSwan in {d.relative_to(ROOT)}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataplane", default=str(ROOT / "target" / "debug" / "dataplane"))
    a = ap.parse_args()
    e2e.VPNCTL = str(pathlib.Path(a.dataplane).with_name("vpnctl"))
    case = e2e.CASES["strongswan"]
    lab = Lab(name=vpnlab.unique_name("cap"), case=case, dataplane=a.dataplane, vpnctl=e2e.VPNCTL)
    pcap = None
    try:
        lab.up()
        pcap = lab.workdir / "ike.pcap"
        tcpdump = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns("gw-b"), "tcpdump", "-i", "gb-out", "-U", "--immediate-mode",
             "-w", str(pcap), "udp port 500 or udp port 4500"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = tcpdump.stderr.readline()  # readiness: tcpdump says it is listening
        if "listening" not in line:
            raise RuntimeError(f"tcpdump did not start: {line.strip()}")
        e2e.strongswan_checks(lab)
        tcpdump.send_signal(signal.SIGINT)
        tcpdump.wait(timeout=10)
        msgs = ike_messages(pcap, case.outer("b"))
    finally:
        lab.down()
    if e2e.failures:
        print(f"the interop scenario failed ({len(e2e.failures)}): no seeds written", file=sys.stderr)
        return 1
    if not msgs:
        print("no IKE message from charon captured", file=sys.stderr)
        return 1
    write("ike_codec", {name(m): m for m in msgs})
    write("ike_exchange", {name(m): exchange_seed(m) for m in msgs
                           if m[18] == IKE_SA_INIT and not m[19] & 0x20})
    return 0


if __name__ == "__main__":
    sys.exit(main())
