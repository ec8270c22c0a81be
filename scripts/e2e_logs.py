#!/usr/bin/env python3
"""iked's log lines end to end (issue 14: one line per event, JSON format, IKE message trace,
rate limits with summary lines, AH refused in plain words).

    e2e_logs.py --dataplane PATH [--vpnctl PATH] CASE

  log-lines      ours <-> ours: gw-b's iked logs JSON at debug, gw-a's text at debug. A burst
                 of IKEv1 datagrams at gw-b is logged 5 times, then summed up in one line; the
                 tunnel comes up with charon-style trace lines (`generating IKE_SA_INIT request
                 0 [ SA KE No N(NATD_S_IP) N(NATD_D_IP) ... ]`); then gw-a restarts with the
                 wrong pre-shared key: each side logs its failure once per IKE SA. Every JSON
                 line parses and events carry conn/peer/ike_spi; no pre-shared key in any log.
  ah-strongswan  strongSwan's charon on gw-b proposes AH (ah_proposals) to our iked: the
                 refusal says ESP only and cites RFC 8221, once per attempt, and `vpnctl list`
                 shows it as the connection's last failure.

Each case builds its own topology (unique namespace names), prints PASS/FAIL lines (e2e.py's
check()) and always tears everything down. Exit status 0 only if every check passed.
"""
from __future__ import annotations

import argparse
import collections
import json
import pathlib
import re
import sys
import time

import e2e
import e2e_faults
import vpnlab
from e2e import check
from e2e_certs import stop_charon
from e2e_faults import plain, wait_control
from vpnlab import Case, Lab, ns_exec

PSK = "the right e2e logs pre-shared key"
WRONG_PSK = "a wrong e2e logs pre-shared key"
SPI = re.compile(r'ike_spi="?([0-9a-f]{16})')

# An IKEv1 header (RFC 2409 / ISAKMP): version 0x10 = major 1, Main Mode, 28 bytes.
IKEV1_SENDER = r"""
import socket, struct, sys
dst, n = sys.argv[1], int(sys.argv[2])
hdr = struct.pack("!8s8sBBBBII", b"\x11" * 8, b"\0" * 8, 1, 0x10, 2, 0, 0, 28)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(n):
    s.sendto(hdr, (dst, 500))
"""


def log_text(lab: Lab, side: str, tag: str) -> str:
    p = lab.workdir / f"iked-{side}-{tag}.log"
    return plain(p.read_text()) if p.exists() else ""


def wait_for(pred, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def once_per_sa(lines: list[str]) -> tuple[bool, str]:
    """Each failure line names its IKE SA; no SA's failure appears twice."""
    spis = collections.Counter(m.group(1) for ln in lines if (m := SPI.search(ln)))
    dup = [s for s, n in spis.items() if n > 1]
    ok = bool(lines) and len(spis) == len(lines) and not dup
    return ok, f"{len(lines)} lines, {len(spis)} IKE SAs" + (f", repeated for {dup}" if dup else "")


def log_lines(lab: Lab) -> None:
    lab.start_dataplane("a", ring=True)
    lab.start_dataplane("b", ring=True)
    pb, _ = lab.start_iked("b", "json", vpnlab.iked_conf(lab.case, "b", psk=PSK),
                           extra=["--log-format", "json", "--log-level", "debug"])
    wait_control(lab, "b", pb)
    # IKEv1 at gw-b: 40 datagrams, of which 5 are logged and the rest summed up later.
    ns_exec(lab.ns("gw-a"), sys.executable, "-c", IKEV1_SENDER, lab.case.public("b"), "40", check=True)
    t_v1 = time.time()
    pa, ready = lab.start_iked("a", "1", vpnlab.iked_conf(lab.case, "a", psk=PSK), extra=["--log-level", "debug"])
    up = wait_for(ready.exists, 15)
    check(up, "the tunnel comes up with both iked at debug")
    a1 = log_text(lab, "a", "1")
    gen = next((ln for ln in a1.splitlines() if "generating IKE_SA_INIT request 0 [ SA KE No N(NATD_S_IP) N(NATD_D_IP)" in ln), "")
    check(bool(gen), "trace: gw-a generates IKE_SA_INIT request 0 [ SA KE No N(NATD_S_IP) N(NATD_D_IP) ... ]", gen[-140:])
    for want in ("parsed IKE_SA_INIT response 0 [ SA KE No", "generating IKE_AUTH request 1 [ IDi", "parsed IKE_AUTH response 1 [ IDr AUTH SA TSi TSr",
                 "sending packet: from", "received packet: from"):
        line = next((ln for ln in a1.splitlines() if want in ln), "")
        check(bool(line) and " DEBUG " in line and 'conn="gw-b"' in line, f"trace at debug with the connection: {want} ...", line[-160:])
    established = [ln for ln in a1.splitlines() if "IKE SA established" in ln]
    check(len(established) == 1, "gw-a logs \"IKE SA established\" once", f"{len(established)} lines")

    # The wrong PSK: gw-b refuses gw-a's AUTH, gw-a hears AUTHENTICATION_FAILED.
    pa.terminate()
    pa.wait(timeout=10)
    pa2, _ = lab.start_iked("a", "2", vpnlab.iked_conf(lab.case, "a", psk=WRONG_PSK), extra=["--log-level", "debug"])
    wait_for(lambda: "rejected our authentication" in log_text(lab, "a", "2"), 10)
    time.sleep(0.5)  # let gw-b's line land too (it is written before its answer leaves)
    a2 = log_text(lab, "a", "2").splitlines()
    rejected = [ln for ln in a2 if "rejected our authentication" in ln]
    ok, detail = once_per_sa(rejected)
    check(ok and "WARN" in rejected[0], "gw-a: the AUTHENTICATION_FAILED failure is one line per IKE SA", detail)
    check(not [ln for ln in a2 if "rejected our authentication" in ln and "DEBUG" in ln],
          "gw-a: the failure is not repeated at debug")

    # gw-b's JSON log: every line parses; its events carry conn, peer and ike_spi.
    raw = (lab.workdir / "iked-b-json.log").read_text().splitlines()
    parsed, bad = [], []
    for ln in raw:
        try:
            parsed.append(json.loads(ln))
        except ValueError:
            bad.append(ln)
    check(bool(parsed) and not bad, "gw-b's --log-format json: every line is a JSON object", f"{len(parsed)} lines, {len(bad)} not JSON: {bad[:1]}")
    invalid = [j for j in parsed if "did not verify" in j.get("message", "")]
    ok, detail = once_per_sa([f'ike_spi="{j.get("ike_spi", "")}"' for j in invalid])
    check(ok and all(j.get("conn") == "gw-a" and j.get("peer", "").startswith(lab.case.outer("a")) for j in invalid),
          "gw-b: the PSK mismatch is one JSON line per IKE SA, with conn and peer", detail)
    traces = [j for j in parsed if j.get("kind") == "trace"]
    init = next((j for j in traces if j.get("message", "").startswith("parsed IKE_SA_INIT request 0 [ SA KE No N(NATD_S_IP) N(NATD_D_IP)")), None)
    check(init is not None and init.get("level") == "DEBUG" and init.get("conn") == "gw-a" and init.get("ike_spi"),
          "gw-b: trace lines are JSON at DEBUG with kind, conn and ike_spi", json.dumps(init)[:200] if init else f"{len(traces)} traces")
    for side, text in (("a", log_text(lab, "a", "1") + log_text(lab, "a", "2")), ("b", "\n".join(raw))):
        check(PSK not in text and WRONG_PSK not in text, f"gw-{side}: no pre-shared key in the log")

    # IKEv1: 5 lines naming the peer, then one summary line for the rest.
    summary = re.compile(r"ikev1: (\d+) similar lines suppressed in the last (\d+) s")
    got = wait_for(lambda: summary.search((lab.workdir / "iked-b-json.log").read_text()) is not None,
                   max(1.0, t_v1 + 13 - time.time()))
    text = (lab.workdir / "iked-b-json.log").read_text()
    v1 = [json.loads(ln) for ln in text.splitlines() if "IKEv1 peer" in ln]
    m = summary.search(text)
    check(len(v1) == 5 and all(j.get("peer", "").startswith(lab.case.outer("a")) for j in v1),
          "IKEv1 datagrams: a burst of 5 lines naming the peer", f"{len(v1)} lines")
    check(got and m is not None and int(m.group(1)) == 35, "then one summary line for the 35 suppressed",
          m.group(0) if m else "no summary line")
    pa2.terminate()
    pb.terminate()


def ah_strongswan(lab: Lab) -> None:
    lab.start_dataplane("a", ring=True)
    case = vpnlab.Case(nat_t=True)
    ike = "aes128gcm16-prfsha256-x25519"
    conf = vpnlab.iked_conf(case, "a", psk=PSK, ike=ike).replace('start_action = "start"', 'start_action = "none"')
    p, _ = lab.start_iked("a", "ah", conf)
    wait_control(lab, "a", p)
    swan = vpnlab.swanctl_conf(case, "b", PSK, ike, "aes128gcm16", start=True)
    swan = swan.replace("esp_proposals = aes128gcm16", "ah_proposals = sha256")
    clog = lab.start_charon("b", swan, retransmit_timeout=1, retransmit_tries=2)
    got = wait_for(lambda: "proposes AH" in log_text(lab, "a", "ah"), 15)
    lines = [ln for ln in log_text(lab, "a", "ah").splitlines() if "proposes AH" in ln]
    line = lines[0] if lines else ""
    check(got and "RFC 8221" in line and "ESP only" in line and "AH:sha256" in line,
          "charon proposes AH: our log refuses it saying ESP only, naming RFC 8221", line[-220:])
    ok, detail = once_per_sa(lines)
    check(ok, "the AH refusal is one line per IKE SA", detail)
    check(not any("no ESP proposal in common" in ln for ln in log_text(lab, "a", "ah").splitlines()),
          "not \"no proposal in common\"")
    r = lab.vpnctl_iked("a", "list")
    check(r.returncode == 0 and "RFC 8221" in r.stdout, "vpnctl list shows the AH refusal as the last failure",
          r.stdout.strip().replace("\n", " | ")[-220:])
    wait_for(lambda: "NO_PROPOSAL_CHOSEN" in clog.read_text(), 5)
    check("NO_PROPOSAL_CHOSEN" in clog.read_text(), "charon received NO_PROPOSAL_CHOSEN for its AH proposal")
    stop_charon(lab, "b")
    p.terminate()


SCENARIOS = {
    "log-lines": (Case(), log_lines),
    "ah-strongswan": (Case(nat_t=True), ah_strongswan),
}


def run(case_name: str, dataplane: str, vpnctl: str) -> int:
    case, fn = SCENARIOS[case_name]
    e2e.VPNCTL = vpnctl
    e2e_faults.check = check
    lab = Lab(name=vpnlab.unique_name("lg" + case_name.split("-")[0][:4]), case=case, dataplane=dataplane,
              vpnctl=vpnctl)
    t0 = time.time()
    try:
        lab.up()
        fn(lab)
    except Exception as e:  # noqa: BLE001
        check(False, f"{case_name} ran to the end", repr(e))
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
