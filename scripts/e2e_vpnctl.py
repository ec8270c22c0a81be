#!/usr/bin/env python3
"""`vpnctl` end to end (issue 14): every command's --json output against docs/schema/, and the
exit codes scripts rely on.

    e2e_vpnctl.py --dataplane PATH [--vpnctl PATH] CASE

  vpnctl-json   ours <-> ours (iked keying both dataplanes over their rings), a ping through the
                tunnel, then on gw-a: `status`, `list`, `stats`, `log -n`, `trace` (across a
                `down` and `up`), `reload`, `up`/`down` with --json, each document validated with jsonschema against
                docs/schema/KIND.json; the SPIs `list` shows are those the dataplane holds
                (`stats`); `status` says XDP is attached, in which mode, with which workers;
                `log -n` returns events; exit codes: 3 for a missing control socket, 1 for
                `up nosuch` and `list nosuch`, 2 for bad usage.

Builds its own topology (unique namespace names), prints PASS/FAIL lines (e2e.py's check()) and
always tears everything down. Exit status 0 only if every check passed.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import jsonschema

import e2e
import e2e_faults
import vpnlab
from e2e import check
from e2e_faults import wait_control, wait_ready
from vpnlab import Case, Lab

SCHEMA_DIR = vpnlab.ROOT / "docs" / "schema"


def schema(kind: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{kind}.json").read_text())


def vpnctl(lab: Lab, *args: str, socket: str | None = None) -> subprocess.CompletedProcess:
    """`vpnctl ARGS` against gw-a's iked (or `socket`)."""
    sock = socket or str(lab.workdir / "iked-a.sock")
    # stdout and stderr apart: the JSON document goes to stdout, diagnostics to stderr.
    return subprocess.run([lab.vpnctl, *args, "--socket", sock], capture_output=True, text=True, timeout=30,
                          check=False)


def document(lab: Lab, kind: str, *args: str, want_exit: int = 0, socket: str | None = None) -> dict | None:
    """Run `vpnctl --json ARGS`; check its exit code, that it printed one JSON document of
    `kind` and that the document validates against docs/schema/KIND.json. Returns it."""
    r = vpnctl(lab, "--json", *args, socket=socket)
    what = f"vpnctl {' '.join(args)} --json"
    check(r.returncode == want_exit, f"{what}: exit code {want_exit}", f"{r.returncode}; stderr {r.stderr.strip()[:200]}")
    try:
        doc = json.loads(r.stdout)
    except json.JSONDecodeError as e:
        check(False, f"{what}: prints one JSON document", f"{e}: {r.stdout[:300]!r}")
        return None
    try:
        jsonschema.validate(doc, schema(kind))
        ok, detail = True, f"kind {doc.get('kind')}, schema_version {doc.get('schema_version')}"
    except jsonschema.ValidationError as e:
        ok, detail = False, f"{e.message} at {list(e.absolute_path)}"
    check(ok and doc.get("kind") == kind, f"{what}: validates against docs/schema/{kind}.json", detail)
    return doc


def json_checks(lab: Lab) -> None:
    # The tunnel: our iked on both gateways keying our dataplanes.
    lab.start_dataplane("a", ring=True)
    lab.start_dataplane("b", ring=True)
    pb, _ = lab.start_iked("b", "1", vpnlab.iked_conf(lab.case, "b"))
    wait_control(lab, "b", pb)
    pa, ready = lab.start_iked("a", "1", vpnlab.iked_conf(lab.case, "a"))
    took = wait_ready(lab, pa, ready)
    check(True, "iked brought the tunnel up", f"{took:.2f} s")
    lab.wait_next_hop("a")
    lab.wait_next_hop("b")
    lab.warm_up()
    r = lab.ping("client-a", lab.case.client("b"), count=10, interval=0.05)
    check(r.returncode == 0, "ping through the tunnel", r.stdout.strip().splitlines()[-1] if r.stdout else r.stderr)
    # iked reads the counters once a second: wait until its list shows the traffic.
    deadline = time.time() + 5
    while time.time() < deadline:
        lst = json.loads(vpnctl(lab, "--json", "list").stdout or "{}")
        sas = [s for c in lst.get("connections", []) for k in c["children"] for s in k["sas"]]
        if sas and sas[0]["in_packets_60s"] > 0:
            break
        time.sleep(0.2)

    # status: both daemons, XDP mode, workers.
    st = document(lab, "status", "status")
    if st:
        dp = st["dataplane"]
        check(st["iked"] is not None and st["iked"]["pid"] > 0 and st["iked"]["ring"] == lab.ring("a"),
              "status: iked answers, with its pid and ring", f"pid {st['iked'] and st['iked']['pid']}")
        check(st["iked"]["ike_sas"].get("established") == 1 and st["iked"]["negotiations"].get("established", 0) >= 1,
              "status: one established IKE SA, negotiations counted", json.dumps(st["iked"]["ike_sas"]))
        check(dp["running"] and dp["xdp_mode"] == "native" and dp["bind_mode"] in ("zerocopy", "copy"),
              "status: the dataplane runs, XDP attached in native mode, its bind mode named",
              f"running {dp['running']}, xdp {dp['xdp_mode']}, bind {dp['bind_mode']}, notes {dp['notes']}")
        check(len(dp["workers"]) == lab.case.workers and all(w["outside_queues"] and w["inside_queues"] for w in dp["workers"])
              and dp["outside"] == "ga-out" and dp["inside"] == "ga-in",
              "status: its workers with their queues, and its interfaces", json.dumps(dp["workers"]))
        check(dp["counters_age_s"] is not None and dp["counters_age_s"] < 5 and dp["totals"]["encrypted_packets"] > 0,
              "status: fresh counters with the tunnel's traffic in the totals", json.dumps(dp["totals"]))
    text = vpnctl(lab, "status")
    check(text.returncode == 0 and "XDP attached to ga-out (outside) and ga-in (inside) in native mode" in text.stdout,
          "status (text): says where XDP is attached and how", text.stdout.strip().replace("\n", " | ")[:400])

    # list and stats: the same SPIs.
    lst = document(lab, "list", "list")
    stats = document(lab, "stats", "stats")
    if lst and stats:
        c = next((c for c in lst["connections"] if c["name"] == "gw-b"), None)
        check(c is not None and c["state"] == "established" and len(c["ike_sas"]) == 1,
              "list: gw-b established with one IKE SA", json.dumps(c)[:300] if c else "no gw-b")
        sas = [s for k in (c or {}).get("children", []) for s in k["sas"]]
        list_spis = {("in", s["in_spi"]) for s in sas} | {("out", s["out_spi"]) for s in sas}
        dp_spis = {(s["direction"], s["spi"]) for s in stats["sas"]}
        check(bool(sas) and list_spis == dp_spis, "list's SPIs are those the dataplane holds (stats)",
              f"list {sorted(list_spis)}, dataplane {sorted(dp_spis)}")
        check(all(s["in_in_dataplane"] and s["out_in_dataplane"] for s in sas), "list: each SPI marked as in the dataplane")
        check(any(s["in_packets"] > 0 and s["out_packets"] > 0 and s["in_packets_60s"] > 0 for s in sas),
              "list: the Child SA's packets, also in the last 60 s", json.dumps(sas)[:300])
        check(all(d["meaning"] for d in stats["drop_reasons"]) and len(stats["drop_reasons"]) > 20,
              "stats: every drop reason with its meaning", f"{len(stats['drop_reasons'])} reasons")
    text = vpnctl(lab, "list").stdout
    check("child net: in spi" in text and "(1 IKE SA)" in text, "list (text): as scripts read it",
          text.strip().replace("\n", " | ")[:300])

    # reload, up, down: reply documents; a reload is an event for `log`.
    document(lab, "reply", "reload")
    document(lab, "reply", "up", "gw-b")
    nosuch = document(lab, "reply", "up", "nosuch", want_exit=1)
    check(nosuch is not None and not nosuch["ok"], "up nosuch: refused", nosuch and nosuch["text"])
    r = vpnctl(lab, "list", "nosuch")
    check(r.returncode == 1, "list nosuch: exit code 1", r.stderr.strip())

    # log and trace.
    log = document(lab, "events", "log", "-n", "5")
    check(log is not None and 0 < len(log["events"]) <= 5 and any("reloaded" in e["message"] for e in log["events"]),
          "log -n 5: the last events, the reload among them",
          " | ".join(e["message"][:60] for e in (log or {}).get("events", [])))
    # trace: started, then a renegotiation (down, up): its IKE messages, of gw-b.
    tr = subprocess.Popen([lab.vpnctl, "--json", "trace", "gw-b", "--count", "4", "--timeout-s", "15",
                           "--socket", str(lab.workdir / "iked-a.sock")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = tr.stderr.readline()  # readiness: printed once it follows the event log
    check("tracing IKE messages of gw-b" in started, "trace: follows iked's events", started.strip())
    vpnctl(lab, "down", "gw-b")
    vpnctl(lab, "up", "gw-b")
    try:
        out, err = tr.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        tr.kill()
        out, err = tr.communicate()
    try:
        doc = json.loads(out)
        jsonschema.validate(doc, schema("events"))
        ok, detail = True, ""
    except (json.JSONDecodeError, jsonschema.ValidationError) as e:
        doc, ok, detail = {}, False, str(e)[:200]
    check(ok, "vpnctl trace --json: validates against docs/schema/events.json", detail)
    evs = doc.get("events", [])
    check(tr.returncode == 0 and len(evs) == 4 and all(e["kind"] == "trace" and e["conn"] == "gw-b" for e in evs),
          "trace gw-b --count 4: the renegotiation's IKE messages, summarised",
          f"exit {tr.returncode}; " + " | ".join(e["message"][:70] for e in evs) + f"; {err.strip()[:200]}")
    ready_again = time.time() + 10
    while time.time() < ready_again:
        lst = json.loads(vpnctl(lab, "--json", "list").stdout or "{}")
        if any(k["state"] == "installed" for c in lst.get("connections", []) for k in c["children"]):
            break
        time.sleep(0.1)

    # Exit codes without iked.
    missing = str(lab.workdir / "no-such.sock")
    r = vpnctl(lab, "list", socket=missing)
    check(r.returncode == 3 and "is iked running" in r.stderr, "a missing control socket: exit code 3", r.stderr.strip())
    st = document(lab, "status", "status", "--ring", lab.ring("a"), want_exit=3, socket=missing)
    check(st is not None and st["iked"] is None and st["iked_error"] and st["dataplane"]["running"],
          "status without iked: iked unreachable, the dataplane still shown", st and st["iked_error"])
    r = vpnctl(lab, "frobnicate")
    check(r.returncode == 2, "bad usage: exit code 2", r.stderr.strip()[:100])

    # Down last: the dataplane drops the SAs.
    document(lab, "reply", "down", "gw-b")


SCENARIOS = {
    "vpnctl-json": (Case(), json_checks),
}


def run(case_name: str, dataplane: str, vpnctl_bin: str) -> int:
    case, fn = SCENARIOS[case_name]
    e2e.VPNCTL = vpnctl_bin
    e2e_faults.check = check
    lab = Lab(name=vpnlab.unique_name("vc"), case=case, dataplane=dataplane, vpnctl=vpnctl_bin)
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
    vpnctl_bin = a.vpnctl or str(pathlib.Path(a.dataplane).with_name("vpnctl"))
    return run(a.case, a.dataplane, vpnctl_bin)


if __name__ == "__main__":
    sys.exit(main())
