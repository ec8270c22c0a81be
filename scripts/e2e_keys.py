#!/usr/bin/env python3
"""`vpnctl keys --wireshark` end to end (issue 14): tshark decrypts a capture of IKE and ESP
with only the exported key files.

    e2e_keys.py --dataplane PATH [--vpnctl PATH] CASE

  wireshark-keys   ours <-> ours through the NAT topology (Case(nat=True)): tcpdump runs in the
                   NAT namespace (on its gw-a side, na-in) from before iked starts, so IKE_AUTH
                   is captured — the gateways' own WAN interfaces do not show ESP (our XDP
                   programs steer it past the kernel's taps), the NAT in between does. Pings
                   cross the tunnel; `vpnctl keys --wireshark DIR` on gw-a writes esp_sa and
                   ikev2_decryption_table (mode 0600, a warning on stderr); tshark, with a
                   configuration directory holding only those two files, shows the decrypted
                   IKE_AUTH payloads (IDi, IDr, AUTH) and the ICMP inside the ESP-in-UDP
                   packets, which it cannot show without them. iked's log holds none of the
                   keys. Two rounds: IKE AES-GCM-128 with ESP AES-CBC-128 + HMAC-SHA-256, then
                   IKE AES-CBC-128 + HMAC-SHA-256 with ESP AES-GCM-128 (Wireshark 4.0 has no
                   ChaCha20-Poly1305 for either).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import e2e
import e2e_faults
import vpnlab
from e2e import check
from e2e_certs import ping_through, show
from e2e_faults import iked_log, wait_control, wait_ready
from vpnlab import Case, Lab

ROUNDS = [
    # (tag, IKE proposal, ESP proposal)
    ("gcm-ike", "aes128gcm16-prfsha256-x25519", "aes128-sha256"),
    ("gcm-esp", "aes128-sha256-x25519", "aes128gcm16"),
]
GW_A_ID, GW_B_ID = "gw-a.example", "gw-b.example"


class NatCapture:
    """tcpdump on the NAT's inside interface (na-in): the packets of gw-a as gw-a sent and
    received them (its private address), which is what gw-a's exported SAs name."""

    def __init__(self, lab: Lab, tag: str):
        self.path = lab.workdir / f"{tag}.pcap"
        self.p = subprocess.Popen(["ip", "netns", "exec", lab.nat_ns, "tcpdump", "-n", "-i", "na-in", "-U",
                                   "--immediate-mode", "-w", str(self.path), "udp port 500 or udp port 4500 or esp"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.p.stderr.readline() if self.p.stderr else ""
        if "listening" not in line:
            raise RuntimeError(f"tcpdump on na-in did not start: {line.strip()}")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def tshark(pcap: pathlib.Path, keys: pathlib.Path | None, filt: str, fields: list[str]) -> list[list[str]]:
    """tshark over `pcap` with a configuration directory holding only the files in `keys`
    (none: an empty one), ESP decryption on; rows of `fields` for the frames matching `filt`."""
    with tempfile.TemporaryDirectory(prefix="ws-") as conf:
        prof = pathlib.Path(conf) / "wireshark"
        prof.mkdir(mode=0o700)
        if keys is not None:
            for name in ("esp_sa", "ikev2_decryption_table"):
                shutil.copy(keys / name, prof / name)
        env = dict(os.environ, XDG_CONFIG_HOME=conf, HOME=conf)
        args = ["tshark", "-n", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE", "-Y", filt, "-T", "fields"]
        for f in fields:
            args += ["-e", f]
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
        errs = [ln for ln in r.stderr.splitlines() if "Running as user" not in ln and ln.strip()]
        if r.returncode != 0 or errs:
            raise RuntimeError(f"tshark {filt!r}: exit {r.returncode}: {' | '.join(errs)[-600:]}")
        return [ln.split("\t") for ln in r.stdout.splitlines() if ln.strip()]


def start_ikeds(lab: Lab, tag: str, ike: str, esp: str) -> dict:
    """iked on gw-b (responder) then gw-a (initiator) with these proposals; waits for the
    tunnel (2 SAs in each dataplane)."""
    confs = {s: vpnlab.iked_conf(lab.case, s, ike=ike, esp_proposals=esp) for s in "ab"}
    pb, _ = lab.start_iked("b", tag, confs["b"])
    wait_control(lab, "b", pb)
    pa, ready = lab.start_iked("a", tag, confs["a"])
    wait_ready(lab, pa, ready)
    for side in "ab":
        s = lab.wait_stats(side, lambda s: s["sa_count"] == 2, timeout=10)
        check(s["sa_count"] == 2, f"{ike} / {esp}: gw-{side} has the tunnel's 2 SAs", f"{s['sa_count']} SAs")
    return {"a": pa, "b": pb}


def stop_ikeds(lab: Lab, procs: dict) -> None:
    lab.vpnctl_iked("a", "down", e2e_faults.CONN)
    for side in "ab":
        lab.wait_stats(side, lambda s: s["sa_count"] == 0, timeout=5)
    for p in procs.values():
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def export(lab: Lab, tag: str) -> tuple[pathlib.Path, dict]:
    """`vpnctl keys --wireshark DIR --json` on gw-a: the files, their mode, the warning."""
    out = lab.workdir / f"keys-{tag}"
    # Not lab.vpnctl_iked: the warning (stderr) and the document (stdout) are read apart.
    vpnctl = lab.vpnctl or str(pathlib.Path(lab.dataplane).with_name("vpnctl"))
    r = subprocess.run([vpnctl, "keys", "--wireshark", str(out), "--json", "--socket",
                        str(lab.workdir / "iked-a.sock")], capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, f"{tag}: vpnctl keys --wireshark exits 0",
          "" if r.returncode == 0 else r.stderr.strip()[-400:])
    warned = "WARNING" in r.stderr and "delete" in r.stderr and str(out / "esp_sa") in r.stderr
    check(warned, f"{tag}: vpnctl keys warns on stderr what the files allow and to delete them",
          r.stderr.strip().splitlines()[0][:200] if r.stderr.strip() else "nothing on stderr")
    doc = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
    check(doc.get("schema_version") == 1 and doc.get("kind") == "keys",
          f"{tag}: --json prints the keys document (schema_version 1, kind keys)",
          "" if doc else r.stdout[:200])
    for name in ("esp_sa", "ikev2_decryption_table"):
        p = out / name
        mode = stat.S_IMODE(p.stat().st_mode) if p.exists() else None
        check(mode == 0o600, f"{tag}: {name} is written mode 0600", oct(mode) if mode is not None else "missing")
    return out, doc


def key_hexes(doc: dict) -> list[str]:
    hexes = [i[k] for i in doc.get("ike_sas", []) for k in ("sk_ei", "sk_er", "sk_ai", "sk_ar")]
    hexes += [c[k] for c in doc.get("child_sas", []) for k in ("encr_key", "integ_key")]
    return [h for h in hexes if h]


def one_round(lab: Lab, tag: str, ike: str, esp: str) -> None:
    cap = NatCapture(lab, tag)
    procs = {}
    try:
        procs = start_ikeds(lab, tag, ike, esp)
        lab.wait_next_hop("a")
        lab.wait_next_hop("b")
        lab.warm_up()
        ping_through(lab, f"{ike} / {esp}")
        keys, doc = export(lab, tag)
    finally:
        cap.stop()
    check(len(doc.get("ike_sas", [])) == 1 and len(doc.get("child_sas", [])) == 2,
          f"{tag}: the report holds the IKE SA and both SAs of the Child SA",
          f"{len(doc.get('ike_sas', []))} IKE, {len(doc.get('child_sas', []))} child")
    check(all(c.get("nat_t") for c in doc.get("child_sas", [])), f"{tag}: the Child SAs are ESP in UDP (behind the NAT)")
    show(f"{tag}: esp_sa", [ln for ln in (keys / "esp_sa").read_text().splitlines() if not ln.startswith("#")][:2], 2)

    # IKE_AUTH (exchange 35): its payloads only with the keys.
    auth_fields = ["frame.number", "isakmp.id.data.fqdn", "isakmp.auth.method"]
    plain = tshark(cap.path, None, "isakmp.exchangetype == 35", auth_fields)
    check(len(plain) >= 2, f"{tag}: the capture holds the IKE_AUTH exchange", f"{len(plain)} messages")
    check(not any(r[1] or r[2] for r in plain), f"{tag}: without the key files tshark cannot read IKE_AUTH's payloads")
    dec = tshark(cap.path, keys, "isakmp.exchangetype == 35", auth_fields)
    ids = {i for r in dec for i in r[1].split(",") if i}
    auths = [r for r in dec if r[2]]
    check({GW_A_ID, GW_B_ID} <= ids and len(auths) >= 2,
          f"{tag}: with only the exported files tshark decrypts IKE_AUTH: IDi, IDr and both AUTH payloads",
          f"ids {sorted(ids)}, {len(auths)} messages with AUTH")

    # ESP (in UDP 4500): the inner ICMP only with the keys.
    icmp_fields = ["esp.spi", "ip.src", "ip.dst", "icmp.type"]
    before = tshark(cap.path, None, "esp && icmp", icmp_fields)
    esp_frames = tshark(cap.path, None, "esp", ["esp.spi"])
    check(len(esp_frames) >= 6 and not before, f"{tag}: ESP was captured, and without the keys no ICMP is seen in it",
          f"{len(esp_frames)} ESP packets, {len(before)} readable")
    inner = tshark(cap.path, keys, "esp && icmp", icmp_fields)
    pairs = {(r[1].split(",")[-1], r[2].split(",")[-1], r[3]) for r in inner}
    ca, cb = lab.case.client("a"), lab.case.client("b")
    check((ca, cb, "8") in pairs and (cb, ca, "0") in pairs,
          f"{tag}: with only the exported files tshark shows the echo requests and replies inside ESP",
          f"{len(inner)} decrypted: {sorted(pairs)[:4]}")

    # Keys never reach a log.
    hexes = key_hexes(doc)
    logs = {s: iked_log(lab, s, tag).lower() for s in "ab"}
    leaked = [h[:12] for h in hexes if any(h in text for text in logs.values())]
    check(len(hexes) >= 4 and not leaked, f"{tag}: no exported key appears in either iked's log",
          f"{len(hexes)} keys checked" + (f", leaked: {leaked}" if leaked else ""))
    exported = [ln for ln in logs["a"].splitlines() if "vpnctl keys" in ln]
    check(bool(exported), f"{tag}: gw-a's iked logs that keys were handed out (not the keys)",
          exported[0][-160:] if exported else "no line")
    stop_ikeds(lab, procs)
    shutil.rmtree(keys, ignore_errors=True)


def wireshark_keys(lab: Lab) -> None:
    lab.start_dataplane("a", ring=True)
    lab.start_dataplane("b", ring=True)
    for tag, ike, esp in ROUNDS:
        one_round(lab, tag, ike, esp)


SCENARIOS = {
    "wireshark-keys": (Case(nat=True), wireshark_keys),
}


def run(case_name: str, dataplane: str, vpnctl: str) -> int:
    case, fn = SCENARIOS[case_name]
    e2e.VPNCTL = vpnctl
    e2e_faults.check = check
    lab = Lab(name=vpnlab.unique_name("keys"), case=case, dataplane=dataplane, vpnctl=vpnctl)
    t0 = time.time()
    try:
        if shutil.which("tshark") is None:
            raise RuntimeError("tshark not found: scripts/install-deps.sh installs it")
        lab.up()
        fn(lab)
    except Exception as e:  # noqa: BLE001
        check(False, f"{case_name} ran to the end", repr(e)[-1500:])
    finally:
        print(f"  {case_name}: {time.time() - t0:.0f} s", flush=True)
    return e2e.teardown(lab, case_name)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("--vpnctl", default="", help="vpnctl binary (default: next to the dataplane)")
    ap.add_argument("case", choices=sorted(SCENARIOS))
    a = ap.parse_args()
    vpnctl = a.vpnctl or str(pathlib.Path(a.dataplane).with_name("vpnctl"))
    return run(a.case, a.dataplane, vpnctl)


if __name__ == "__main__":
    sys.exit(main())
