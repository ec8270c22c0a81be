#!/usr/bin/env python3
"""Post-quantum hybrid key exchange end to end (issue 13: RFC 9370 over IKE_INTERMEDIATE,
RFC 9242, ML-KEM).

    e2e_pq.py --dataplane PATH [--vpnctl PATH] CASE

CASE is one of the keys of SCENARIOS below. Each builds its own topology (unique namespace
names), prints PASS/FAIL lines (e2e.py's check()) and always tears everything down. Exit status
0 only if every check passed.

  pq-mlkem768      ours <-> ours, aes256gcm16-prfsha384-x25519-ke1_mlkem768, esp_proposals
                   aes256gcm16-x25519-ke1_mlkem768: one IKE_INTERMEDIATE before IKE_AUTH; the
                   Child SA (every 6 s) and the IKE SA (every 14 s) rekey with the additional key
                   exchange in IKE_FOLLOWUP_KE; a 0.01 s ping loses nothing.
  pq-mlkem1024     the same with ecp384 + ML-KEM-1024: its 1568-byte key shares do not fit a
                   1280-byte datagram, so IKE_INTERMEDIATE travels in fragments (RFC 7383).
  pq-strongswan    ours with ...-x25519-ke1_mlkem768-ke1_none (the additional exchange optional)
                   against strongSwan 5.9.8, which has none: a classical x25519 tunnel, in both
                   roles, with a Child SA rekey (PFS, x25519) each time.

What is asserted comes from the wire (IKE headers are clear text: exchange types 43
IKE_INTERMEDIATE and 44 IKE_FOLLOWUP_KE, SKF fragments), the dataplanes' stats (outbound SA
switches) and charon's log; our iked's own lines are printed alongside.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys
import time

import e2e
import e2e_faults
import e2e_rekey
import vpnlab
from e2e import check
from e2e_certs import Tail, charon_log, ike_datagrams, ping_through, show, stop_charon, stop_iked
from e2e_faults import control_ping, iked_log, wait_control
from e2e_rekey import Pinger, SaWatcher, icv_check, loss_check, no_gap, settled_ours
from vpnlab import Case, Lab

IKE_INTERMEDIATE, IKE_FOLLOWUP_KE, CREATE_CHILD_SA, IKE_AUTH = 43, 44, 36, 35
PSK = "a post-quantum test pre-shared key"
PQ = {
    "pq-mlkem768": ("aes256gcm16-prfsha384-x25519-ke1_mlkem768", "aes256gcm16-x25519-ke1_mlkem768"),
    "pq-mlkem1024": ("aes256gcm16-prfsha384-ecp384-ke1_mlkem1024", "aes256gcm16-ecp384-ke1_mlkem1024"),
}
CHILD_REKEY, IKE_REKEY, RAND = "6s", "14s", "1s"
SECONDS = 24
MIN_CHILD_REKEYS, MIN_IKE_REKEYS = 2, 1


def messages(dgrams: list[dict]) -> list[dict]:
    """IKE messages (the fragments of one counted once), in time order."""
    seen: dict[tuple, dict] = {}
    for d in dgrams:
        key = (d["src"], d["spis"][0], d["exchange"], d["response"], d["msgid"])
        if key not in seen:
            seen[key] = dict(d, frags=0)
        if d["frag"]:
            seen[key]["frags"] += 1
    return sorted(seen.values(), key=lambda m: m["t"])


def summary(msgs: list[dict]) -> str:
    names = {34: "IKE_SA_INIT", 35: "IKE_AUTH", 36: "CREATE_CHILD_SA", 37: "INFORMATIONAL", 43: "IKE_INTERMEDIATE",
             44: "IKE_FOLLOWUP_KE"}
    return ", ".join(f"{names.get(m['exchange'], m['exchange'])} {'r' if m['response'] else 'q'}{m['msgid']}"
                     + (f" ({m['frags']} fragments)" if m["frags"] else "") for m in msgs[:10])


# --- ours <-> ours ------------------------------------------------------------------------------

def pq_ours(lab: Lab, case_name: str) -> None:
    """ours <-> ours with an ML-KEM additional key exchange (ke1), in IKE and ESP proposals,
    child rekey_time 6 s, IKE rekey_time 14 s, for 24 s under a 0.01 s ping: the IKE SA was set
    up with one IKE_INTERMEDIATE (IKE_AUTH has the next message ID); each rekey (CREATE_CHILD_SA)
    is followed by an IKE_FOLLOWUP_KE; at least 2 Child SA and 1 IKE SA rekeys; 0 pings lost;
    afterwards one pair of SAs each side, matching."""
    ike, esp = PQ[case_name]
    lt = dict(rekey_time=IKE_REKEY, rand_time=RAND, child_rekey_time=CHILD_REKEY, child_rand_time=RAND)
    confs = {s: vpnlab.iked_conf(lab.case, s, psk=PSK, ike=ike, esp_proposals=esp, **lt) for s in "ab"}
    with lab.wan_capture("pq") as cap:
        try:
            e2e_faults.start_pair(lab, conf_a=confs["a"], conf_b=confs["b"])
        except RuntimeError as e:
            check(False, f"{ike}: the tunnel comes up", str(e)[-3000:])
            return
        control_ping(lab)
        watch = SaWatcher(lab, "ab")
        ping = Pinger(lab)
        check(ping.flowing(), "the 0.01 s ping flows through the tunnel", f"{len(ping.replies)} replies")
        ping.hold(SECONDS)
        tx, rx, lost = ping.finish()
        watch.stop()
    loss_check(ping, tx, rx, lost, f"{ike} / {esp}, rekeys every {CHILD_REKEY} / {IKE_REKEY}")
    icv_check(lab, "ab")
    msgs = messages(ike_datagrams(cap))
    first = msgs[0]["spis"][0] if msgs else ""
    setup = [m for m in msgs if m["spis"][0] == first and m["exchange"] in (34, IKE_INTERMEDIATE, IKE_AUTH)]
    inter = [m for m in setup if m["exchange"] == IKE_INTERMEDIATE]
    auth = [m for m in setup if m["exchange"] == IKE_AUTH and not m["response"]]
    check(len(inter) == 2 and {m["response"] for m in inter} == {False, True} and all(m["msgid"] == 1 for m in inter),
          "the IKE SA was set up with one IKE_INTERMEDIATE exchange (message ID 1; RFC 9370 §2.2.1)", summary(setup))
    check(len(auth) == 1 and auth[0]["msgid"] == 2, "IKE_AUTH follows with the next message ID (2)", summary(setup))
    if case_name == "pq-mlkem1024":
        frags = {m["response"]: m["frags"] for m in inter}
        check(frags.get(False, 0) >= 2 and frags.get(True, 0) >= 2,
              "ML-KEM-1024's key shares (1568 bytes) cross IKE_INTERMEDIATE in fragments, both ways (RFC 7383)",
              f"request {frags.get(False, 0)} fragments, response {frags.get(True, 0)}")
    reqs = [m for m in msgs if not m["response"]]
    ccsa = [m for m in reqs if m["exchange"] == CREATE_CHILD_SA]
    fke = [m for m in reqs if m["exchange"] == IKE_FOLLOWUP_KE]
    # Each CREATE_CHILD_SA request (a rekey with ke1) is followed by an IKE_FOLLOWUP_KE request
    # from the same side on the same IKE SA (RFC 9370 §2.2.4).
    followed = sum(1 for c in ccsa if any(f["src"] == c["src"] and f["spis"] == c["spis"] and f["t"] > c["t"]
                                          and f["msgid"] == c["msgid"] + 1 for f in fke))
    check(len(ccsa) >= MIN_CHILD_REKEYS + MIN_IKE_REKEYS and followed >= len(ccsa) - 1,
          "each rekey's CREATE_CHILD_SA is followed by an IKE_FOLLOWUP_KE carrying the ML-KEM exchange",
          f"{len(ccsa)} CREATE_CHILD_SA requests, {followed} followed by IKE_FOLLOWUP_KE ({len(fke)} in all)")
    sw = {s: watch.switches(s) for s in "ab"}
    check(min(sw.values()) >= MIN_CHILD_REKEYS, f"at least {MIN_CHILD_REKEYS} Child SA rekeys (outbound SA switched)",
          f"gw-a {sw['a']}, gw-b {sw['b']}")
    for s in "ab":
        no_gap(watch, s)
    pairs = {m["spis"] for m in msgs if m["exchange"] in (CREATE_CHILD_SA, 37, IKE_FOLLOWUP_KE)}
    inits = [m for m in reqs if m["exchange"] == 34]
    # New IKE SPIs from a rekey, not from a new IKE_SA_INIT after the old SA expired.
    check(len({p[0] for p in pairs}) - 1 >= MIN_IKE_REKEYS and len(inits) == 1,
          f"at least {MIN_IKE_REKEYS} IKE SA rekey (new IKE SPIs on the wire, one IKE_SA_INIT in all)",
          f"{len({p[0] for p in pairs})} IKE SAs seen, {len(inits)} IKE_SA_INIT requests")
    ok, detail = settled_ours(lab)
    check(ok, "afterwards each dataplane holds only the current pair of SAs, matching across the sides", detail)
    for s in "ab":
        show(f"gw-{s} iked: lines about IKE_INTERMEDIATE / IKE_FOLLOWUP_KE / ML-KEM",
             [ln.strip()[-220:] for ln in iked_log(lab, s, "1").splitlines()
              if re.search(r"intermediate|followup|follow-up|mlkem|ml-kem|ke1", ln, re.I)], 4)
    e2e_rekey.alive(lab)
    e2e_faults.clean_wan(cap, "across the hybrid rekeys")


# --- ke1_none against strongSwan 5.9.8 -----------------------------------------------------------

# The IKE proposal makes ML-KEM-768 optional; the Child SA's PFS is classical x25519 (ke1 in
# esp_proposals needs IKE_FOLLOWUP_KE, covered ours <-> ours by pq-mlkem768/1024).
OURS_OPT = ("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none", "aes256gcm16-x25519")
SWAN = ("aes256gcm16-prfsha384-x25519", "aes256gcm16-x25519")
SWAN_SELECTED = "IKE:AES_GCM_16_256/PRF_HMAC_SHA2_384/CURVE_25519"
SWAN_CHILD_REKEY = "5s"


def pq_strongswan(lab: Lab) -> None:
    """Our proposals with an optional ML-KEM-768 (…-ke1_mlkem768-ke1_none) against strongSwan
    5.9.8 (no RFC 9370): a classical x25519 IKE SA (charon selected it; no IKE_INTERMEDIATE on
    the wire), ping crosses, and a Child SA rekey with x25519 PFS completes, with us as
    initiator (we rekey) and as responder (charon rekeys)."""
    lab.start_dataplane("a", ring=True)
    for n, we_init in enumerate((True, False)):
        role = "we initiate and rekey" if we_init else "charon initiates and rekeys"
        tag = f"s{n}"
        if we_init:
            conf = vpnlab.iked_conf(lab.case, "a", psk=PSK, ike=OURS_OPT[0], esp_proposals=OURS_OPT[1],
                                    child_rekey_time=SWAN_CHILD_REKEY, child_rand_time="0")
            swan = vpnlab.swanctl_conf(lab.case, "b", PSK, SWAN[0], SWAN[1], start=False)
        else:
            conf = vpnlab.iked_conf(lab.case, "a", psk=PSK, ike=OURS_OPT[0], esp_proposals=OURS_OPT[1],
                                    start_action="none")
            # life_time well above rekey_time (swanctl's default, 110 %, lets the SA expire
            # before a 5 s rekey gets its turn).
            swan = vpnlab.swanctl_conf(lab.case, "b", PSK, SWAN[0], SWAN[1], start=True,
                                       child_rekey_time=SWAN_CHILD_REKEY, child_life_time="30s",
                                       child_rand_time="1s")
        clog = Tail(charon_log(lab, "b"))
        p = None
        try:
            with lab.wan_capture(f"pq-swan{n}") as cap:
                if we_init:
                    lab.start_charon("b", swan, retransmit_timeout=2, retransmit_tries=3)
                    p, _ = lab.start_iked("a", tag, conf)
                    wait_control(lab, "a", p)
                else:
                    p, _ = lab.start_iked("a", tag, conf)
                    wait_control(lab, "a", p)
                    lab.start_charon("b", swan, retransmit_timeout=2, retransmit_tries=3)
                s = lab.wait_stats("a", lambda s: s["sa_count"] == 2, timeout=15)
                ok = s["sa_count"] == 2
                check(ok, f"ke1_none vs strongSwan 5.9.8, {role}: the tunnel comes up", f"{s['sa_count']} SAs")
                if ok:
                    lab.wait_next_hop("a")
                    ping_through(lab, f"ke1_none vs strongSwan, {role}")
                    rekeyed = clog.wait(r"\boutbound CHILD_SA net\{\d+\} established", timeout=15,
                                        procs=(p, lab.procs["charon-b"]))
                    check(bool(rekeyed), f"{role}: a Child SA rekey completes (charon's log)", rekeyed or "no such line")
                    ping_through(lab, f"ke1_none vs strongSwan, after the rekey, {role}")
            log = clog.text()
            sel = re.findall(r"selected proposal: (IKE:\S+)", log)
            check(bool(sel) and sel[0] == SWAN_SELECTED, f"{role}: charon selected the classical proposal",
                  ", ".join(sel) or "no \"selected proposal\" line")
            esp = re.findall(r"selected proposal: (ESP:\S+)", log)
            check(len(esp) >= 2 and "CURVE_25519" in esp[-1], f"{role}: the rekeyed Child SA used x25519 (PFS)",
                  ", ".join(esp))
            msgs = messages(ike_datagrams(cap))
            check(not any(m["exchange"] in (IKE_INTERMEDIATE, IKE_FOLLOWUP_KE) for m in msgs),
                  f"{role}: no IKE_INTERMEDIATE or IKE_FOLLOWUP_KE on the wire", summary(msgs))
            recv = [ln.strip()[-260:] for ln in log.splitlines() if "received proposals" in ln or "configured proposals" in ln]
            show("charon's proposal lines", recv, 3)
            if not ok:
                print(f"--- iked-a-{tag}.log (end) ---\n{iked_log(lab, 'a', tag)[-2500:]}")
                print(f"--- charon.log (end) ---\n{log[-3000:]}")
        except Exception as e:  # noqa: BLE001
            check(False, f"ke1_none vs strongSwan, {role}: ran to the end", repr(e)[-600:])
        finally:
            stop_iked(p, lab)
            stop_charon(lab, "b")
            lab.wait_stats("a", lambda s: s["sa_count"] == 0, timeout=5)


SCENARIOS = {
    "pq-mlkem768": (Case(workers=1), lambda lab: pq_ours(lab, "pq-mlkem768")),
    "pq-mlkem1024": (Case(workers=1), lambda lab: pq_ours(lab, "pq-mlkem1024")),
    "pq-strongswan": (Case(nat_t=True), pq_strongswan),
}


def run(case_name: str, dataplane: str, vpnctl: str) -> int:
    case, fn = SCENARIOS[case_name]
    e2e.VPNCTL = vpnctl
    e2e_faults.check = check
    lab = Lab(name=vpnlab.unique_name("pq" + case_name.split("-")[-1][:5]), case=case, dataplane=dataplane,
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
