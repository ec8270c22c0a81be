#!/usr/bin/env python3
"""Encrypt or decrypt ESP packets with scapy, for cross-checking the Rust ESP engine.

Usage: scapy_esp.py CASES.json RESULTS.json

CASES.json is a JSON array of cases:

    {"id": ..., "op": "encrypt" | "decrypt",
     "crypt_algo": "AES-GCM" | "CHACHA20-POLY1305" | "AES-CBC" | ...,   (scapy names)
     "crypt_key": hex (AEAD: key || 4-byte salt),
     "auth_algo": "SHA2-256-128" | ... | null, "auth_key": hex or "",
     "spi": int, "seq": 64-bit int, "esn": bool,
     "mode": "tunnel" | "transport", "tunnel_src": str, "tunnel_dst": str,
     "nat_t": bool, "iv": hex or null, "packet": hex}

"encrypt": `packet` is the plain IP packet; the result is the whole ESP packet (tunnel mode:
outer IP()/IPv6() header with ttl/hlim 64; NAT-T: UDP 4500 -> 4500, checksum 0 as scapy
always leaves it). `iv` null lets scapy pick a random IV.
"decrypt": `packet` is an ESP packet; the result is the inner packet (tunnel mode) or the
restored packet (transport mode).

RESULTS.json is a JSON array, in case order, of {"id", "packet": hex} or {"id", "error"}.
A failing case never stops the batch.

scapy pitfalls handled here (see scapy/layers/ipsec.py):
- `encrypt(seq_num=0)` and `esn=0` fall back to the SA's values (`x or self.x`), so the
  sequence number and ESN high half are given to the SecurityAssociation constructor, and
  encrypt() is called without them (each case uses a fresh SA).
- decrypt() mutates its argument; we dissect a fresh packet per case and never reuse it.
"""

import json
import sys
import traceback

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation


def parse_ip(raw_bytes):
    if not raw_bytes:
        raise ValueError("empty packet")
    version = raw_bytes[0] >> 4
    if version == 4:
        return IP(raw_bytes)
    if version == 6:
        return IPv6(raw_bytes)
    raise ValueError("not an IP packet (version %d)" % version)


def make_sa(case):
    seq = int(case["seq"])
    if not 0 <= seq < 1 << 64:
        raise ValueError("seq out of range: %r" % seq)
    esn = bool(case.get("esn"))
    seq_lo = seq & 0xFFFFFFFF
    seq_hi = seq >> 32
    if not esn and seq_hi:
        raise ValueError("seq %#x needs ESN" % seq)

    tunnel_header = None
    if case["mode"] == "tunnel":
        src, dst = case["tunnel_src"], case["tunnel_dst"]
        if ":" in src:
            tunnel_header = IPv6(src=src, dst=dst, hlim=64)
        else:
            tunnel_header = IP(src=src, dst=dst, ttl=64)
    elif case["mode"] != "transport":
        raise ValueError("unknown mode %r" % case["mode"])

    nat_t_header = UDP(sport=4500, dport=4500) if case.get("nat_t") else None
    auth_algo = case.get("auth_algo") or None
    auth_key = bytes.fromhex(case["auth_key"]) if case.get("auth_key") else None

    return SecurityAssociation(
        ESP,
        spi=int(case["spi"]),
        seq_num=seq_lo,
        crypt_algo=case["crypt_algo"],
        crypt_key=bytes.fromhex(case["crypt_key"]),
        auth_algo=auth_algo,
        auth_key=auth_key,
        tunnel_header=tunnel_header,
        nat_t_header=nat_t_header,
        esn_en=esn,
        esn=seq_hi if esn else 0,
    )


def run_case(case):
    sa = make_sa(case)
    pkt = parse_ip(bytes.fromhex(case["packet"]))
    op = case["op"]
    if op == "encrypt":
        iv = bytes.fromhex(case["iv"]) if case.get("iv") else None
        # No seq_num here: the SA holds it (see the module docstring).
        out = sa.encrypt(pkt, iv=iv)
    elif op == "decrypt":
        out = sa.decrypt(pkt)
    else:
        raise ValueError("unknown op %r" % op)
    return bytes(out)


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: %s CASES.json RESULTS.json\n" % argv[0])
        return 2
    with open(argv[1], "r", encoding="utf-8") as f:
        cases = json.load(f)
    results = []
    for case in cases:
        cid = case.get("id") if isinstance(case, dict) else None
        try:
            results.append({"id": cid, "packet": run_case(case).hex()})
        except Exception as e:  # one bad case must not stop the batch
            msg = "%s: %s" % (type(e).__name__, e)
            frames = traceback.extract_tb(e.__traceback__)
            if frames:
                last = frames[-1]
                msg += " (at %s:%d in %s)" % (last.filename, last.lineno, last.name)
            results.append({"id": cid, "error": msg})
    with open(argv[2], "w", encoding="utf-8") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
