#!/usr/bin/env python3
"""End-to-end tests of the dataplane in network namespaces (needs root).

    e2e.py --dataplane PATH CASE

CASE is one of the keys of CASES below. Each builds its own
topology (unique names), checks what the issue asks for, prints PASS/FAIL lines, and always
tears everything down. Exit status 0 only if every check passed.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import json
import select
import signal
import subprocess
import sys
import threading
import time

import e2e_faults
import vpnlab
from vpnlab import Case, Lab, ns_exec

CASES = {
    "tunnel-v4": Case(),
    "outer-v6": Case(outer_v6=True),
    "inner-v6": Case(inner_v6=True),
    "nat-t": Case(nat_t=True),
    "mtu": Case(),
    "two-workers": Case(workers=2),
    "ring": Case(),
    "iked": Case(),
    "iked-nat-t": Case(nat_t=True),
    "strongswan": Case(nat_t=True),
    "iked-trap": Case(),
    "iked-v6": Case(outer_v6=True),
    "dataplane-kill-failclosed": Case(),
    "ipv6-destopts": Case(outer_v6=True),
    "nat-topology": Case(nat=True),
    "strongswan-dpd": Case(nat_t=True),
    # Fault scenarios (scripts/e2e_faults.py).
    "iked-kill": Case(),
    "iked-dataplane-kill": Case(),
    "iked-down": Case(),
    "iked-dpd": Case(),
    "iked-flood": Case(),
    "iked-nat": Case(nat=True),
}

# Interop matrix: (IKE proposal, ESP proposal, we initiate?): each key exchange group the
# issue names with each ESP cipher it names, in both roles (24 tunnels).
STRONGSWAN_MATRIX = [
    (ike, esp, we_init)
    for ike in ("aes128gcm16-prfsha256-x25519", "aes256gcm16-prfsha384-ecp256", "aes256-sha256-modp2048")
    for esp in ("aes128gcm16", "aes256gcm16", "aes256-sha256", "chacha20poly1305")
    for we_init in (True, False)
]

VPNCTL = ""

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


def start_vpnctl(lab: Lab, side: str, tag: str, *args: str):
    return lab.start_vpnctl(side, tag, *args)


def serve(lab: Lab, side: str, tag: str) -> str:
    return lab.serve(side, tag)


def background_ping(lab: Lab, count: int, interval: float) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", lab.ns("client-a"), "ping", "-c", str(count), "-i", str(interval),
                             "-W", "1", lab.case.client("b")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def encapsulated(lab: Lab, side: str) -> int:
    return sum(w["encapsulated"] for w in lab.stats(side)["workers"])


def ring_checks(lab: Lab) -> None:
    """SAs through the shared-memory ring: installed while the dataplanes run, kept when the
    controller dies (even mid-write), reconciled by a new controller, and replayed into a
    restarted dataplane."""
    lab.start_dataplane("a", ring=True)
    lab.start_dataplane("b", ring=True)
    s = lab.stats("a")
    check(s["sa_count"] == 0 and s["policy_count"] == 0, "the dataplanes start with no SAs", f"{s['sa_count']} SAs")
    # Traffic flows (in clear, by the kernel) before any SA exists; SAs arrive meanwhile.
    bg = background_ping(lab, 100, 0.05)
    line = serve(lab, "a", "1")
    check(line == "3 0 0", "vpnctl installs 2 SAs and 1 policy through the ring", line)
    check(serve(lab, "b", "1") == "3 0 0", "and on the other gateway")
    lab.wait_next_hop("a")
    lab.wait_next_hop("b")
    lab.warm_up()
    before = encapsulated(lab, "a")
    r = lab.ping("client-a", lab.case.client("b"), count=5, interval=0.1)
    check("5 received" in r.stdout, "ping through the tunnel keyed over the ring", r.stdout.strip().splitlines()[-2] if r.stdout.strip() else "")
    check(encapsulated(lab, "a") >= before + 5, "the pings were encrypted by the dataplane", f"{before} -> {encapsulated(lab, 'a')}")
    bg.wait(timeout=30)

    # The controller is SIGKILLed in the middle of writing records (one controller per
    # ring at a time: the first one goes before the fault injector attaches).
    lab.procs["vpnctl-a-1"].kill()
    lab.procs["vpnctl-a-1"].wait()
    churn, clog = start_vpnctl(lab, "a", "churn", "churn")
    lab.wait_stats("a", lambda s: s["sa_count"] > 3, timeout=10)
    time.sleep(0.3)  # let it write for a while: the kill must land mid-stream
    churn.kill()
    churn.wait()
    s = lab.stats("a")
    check(s["sa_count"] >= 3, "after the controllers died the dataplane still holds its SAs", f"{s['sa_count']} SAs")
    r = lab.ping("client-a", lab.case.client("b"), count=5, interval=0.1)
    check("5 received" in r.stdout, "the dataplane keeps forwarding with no controller")
    check("refused a control record" not in lab.log("a"), "the dataplane saw only whole records",
          next((l for l in lab.log("a").splitlines() if "refused a control record" in l), ""))
    # A new controller attaches to the same ring and reconciles.
    line = serve(lab, "a", "2")
    added, removed, kept = (int(x) for x in line.split())
    check(added == 0 and kept == 3, "a new controller resyncs: the SAs are kept, nothing re-added", line)
    s = lab.wait_stats("a", lambda s: s["sa_count"] == 2)
    check(s["sa_count"] == 2 and s["policy_count"] == 1, "the churned throwaway SAs were removed by the reconcile",
          f"{s['sa_count']} SAs, {s['policy_count']} policies, removed {removed}")

    # The dataplane restarts with its controller alive: it gets its SAs back.
    bg = background_ping(lab, 200, 0.05)
    t0 = time.time()
    rc = lab.stop_dataplane("b", signal.SIGTERM)
    check(rc == 0, "dataplane b stops cleanly", f"exit {rc}")
    t1 = time.time()
    lab.start_dataplane("b", ring=True)
    t2 = time.time()
    s = lab.wait_stats("b", lambda s: s["sa_count"] == 2 and s["policy_count"] == 1, timeout=10)
    t3 = time.time()
    check(s["sa_count"] == 2 and s["policy_count"] == 1, "the restarted dataplane got its SAs back from the controller",
          f"{s['sa_count']} SAs; stop {t1 - t0:.2f} s, start {t2 - t1:.2f} s, SAs back {t3 - t2:.2f} s later")
    lab.wait_next_hop("b")
    seq = [x.get("last_seq", 0) for x in lab.wait_stats("b", lambda s: any(x.get("last_seq", 0) > 0 for x in s["sas"]))["sas"]
           if x["direction"] == "out"]
    # last_seq is the last number used: at the lease itself the next packet gets lease + 1.
    check(bool(seq) and seq[0] >= 4 * 2**20, "the restarted dataplane resumed its outbound SA above the persisted "
          "sequence lease (no nonce reuse)", f"last_seq {seq}")
    out, _ = bg.communicate(timeout=40)
    got = re.search(r"(\d+) received", out)
    check(got is not None and int(got.group(1)) > 100, "ping kept flowing across the restart (a short gap allowed)", got.group(0) if got else out[-200:])
    lab.warm_up()
    r = lab.ping("client-a", lab.case.client("b"), count=5, interval=0.1)
    check("5 received" in r.stdout, "ping through the tunnel after the dataplane restart")


class PingMonitor:
    """`ping -i INTERVAL` from client-a to client-b in the background, with the time of
    each reply, so a test can wait for "pings are lost" and "pings pass again"."""

    def __init__(self, lab: Lab, interval: float):
        self.p = subprocess.Popen(["ip", "netns", "exec", lab.ns("client-a"), "ping", "-n", "-i", str(interval),
                                   "-W", "1", lab.case.client("b")],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.replies: list[tuple[float, int]] = []  # (arrival time, icmp_seq)
        self.lines: list[str] = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line)
            m = re.search(r"icmp_seq=(\d+) ttl=", line)
            if m:
                self.replies.append((time.time(), int(m.group(1))))

    def last_reply(self) -> float:
        return self.replies[-1][0] if self.replies else 0.0

    def wait(self, pred, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return True
            time.sleep(0.01)
        return pred()

    def stop(self) -> tuple[int, int]:
        """(transmitted, received) from ping's own summary."""
        self.p.send_signal(signal.SIGINT)
        self.p.wait(timeout=10)
        self.t.join(timeout=5)
        text = "".join(self.lines)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
        return (int(m.group(1)), int(m.group(2))) if m else (0, len(self.replies))


def xdp_count(s: dict, side: str, verdict: str) -> int:
    return s["xdp"][side].get(verdict, 0)


def kill_failclosed_checks(lab: Lab) -> None:
    """dataplane-kill-failclosed: the tunnel under a 0.02 s ping; gw-a's dataplane is
    SIGKILLed and restarted. The pinned XDP program must drop (and count) what it cannot
    protect, so no packet between the protected networks crosses the WAN in clear."""
    from scapy.all import IP  # noqa: PLC0415

    c = lab.case
    lab.start_dataplane("a", ring=True)
    lab.start_dataplane("b", ring=True)
    check(serve(lab, "a", "1") == "3 0 0", "gw-a keyed through its ring (vpnctl ring serve)")
    check(serve(lab, "b", "1") == "3 0 0", "gw-b keyed through its ring (vpnctl ring serve)")
    lab.wait_next_hop("a")
    lab.wait_next_hop("b")
    lab.warm_up()
    with lab.wan_capture("kill") as cap:
        # Control: traffic outside the policy is forwarded by the kernel, and the capture
        # must see it (else "no clear text" would prove nothing).
        plain = lab.ping("client-a", c.outer("b"), count=2, interval=0.1)
        check(plain.returncode == 0, "control: a ping to gw-b's WAN address is routed in clear")
        mon = PingMonitor(lab, 0.02)
        check(mon.wait(lambda: len(mon.replies) >= 20, 5), "the 0.02 s ping flows through the tunnel",
              f"{len(mon.replies)} replies")
        t_kill = time.time()
        lab.procs["a"].kill()
        lab.procs["a"].wait()
        check(lab.xdp_attached("a", "in") and lab.xdp_attached("a", "out"),
              "after SIGKILL gw-a's XDP programs stay attached (pinned links)")
        lost = mon.wait(lambda: time.time() - mon.last_reply() > 0.3, 5)
        check(lost, "pings are lost while gw-a's dataplane is down",
              f"last reply {mon.last_reply() - t_kill:+.2f} s after the kill")
        time.sleep(1.0)  # an outage long enough to count: ~50 echo requests
        t_restart = time.time()
        lab.start_dataplane("a", ring=True)
        back = mon.wait(lambda: mon.last_reply() > t_restart, 20)
        t_back = mon.last_reply()
        check(back, "pings pass again once gw-a's dataplane is back",
              f"{t_back - t_restart:.2f} s after the restart began" if back else "no reply")
        time.sleep(0.5)
        sent, got = mon.stop()
    lost_n = sent - got
    gap = (t_back - max(r for r, _ in mon.replies if r <= t_restart)) if back else float("nan")
    print(f"  loss: {lost_n} of {sent} echo requests at 0.02 s; no reply for {gap:.2f} s "
          f"(down {t_restart - t_kill:.2f} s by design, then restart and SA replay)", flush=True)
    check(0 < lost_n < sent, "loss is bounded to the outage", f"{lost_n} lost of {sent}")
    leaks = cap.clear_text()
    check(not leaks, "no clear-text packet between the protected networks crossed the WAN",
          f"{len(leaks)} leaked" + (f", first: {leaks[0]}" if leaks else ""))
    seen = cap.count(lambda p: IP in p and p[IP].dst == c.outer("b") and p[IP].proto == 1,
                     f"icmp and dst host {c.outer('b')}")
    check(seen >= 2, "control: the WAN capture saw the clear ping to gw-b's WAN address", f"{seen} packets")
    # The pinned counters survived the restart and counted the drops.
    s = lab.wait_stats("a", lambda s: xdp_count(s, "inside", "no_socket_dropped") > 0)
    dropped = xdp_count(s, "inside", "no_socket_dropped")
    esp_in = xdp_count(s, "outside", "no_socket_to_kernel")
    check(dropped >= 20 and dropped <= lost_n + 5,
          "gw-a's inside XDP program dropped and counted the protected packets while no socket took them",
          f"no_socket_dropped {dropped}, pings lost {lost_n}; outside ESP with no socket {esp_in}")
    check("XDP program swapped into the pinned link" in lab.log("a"),
          "the restarted dataplane swapped its program into the pinned links (no gap)")

    # Control for the checker and the switch: the same crash with --fail-open forwards the
    # protected traffic in clear, and the capture must say so.
    check(lab.stop_dataplane("a", signal.SIGTERM) == 0, "gw-a stops cleanly (pins kept)")
    lab.start_dataplane("a", ring=True, extra=["--fail-open"])
    check("FAIL-OPEN" in lab.log("a"), "--fail-open is logged loudly at start")
    lab.wait_next_hop("a")
    lab.warm_up()
    with lab.wan_capture("failopen") as cap2:
        lab.procs["a"].kill()
        lab.procs["a"].wait()
        lab.ping("client-a", c.client("b"), count=5, interval=0.05)
    leaks = cap2.clear_text()
    check(len(leaks) >= 5, "control: with --fail-open the crash forwards the protected pings in clear, and the "
          "WAN check sees them", f"{len(leaks)} clear packets")
    lab.start_dataplane("a", ring=True)  # fail-closed again: the config map follows the flag
    s = lab.wait_stats("a", lambda s: xdp_count(s, "inside", "no_socket_to_kernel") >= 5)
    starts = [ln for ln in re.sub(r"\x1b\[[0-9;]*m", "", lab.log("a")).splitlines() if "XDP maps pinned" in ln]
    check(xdp_count(s, "inside", "no_socket_to_kernel") >= 5 and "fail_open=false" in starts[-1],
          "the fail-open passes were counted (no_socket_to_kernel); the next start is fail-closed",
          f"no_socket_to_kernel {xdp_count(s, 'inside', 'no_socket_to_kernel')}")
    lab.warm_up()


SEND_ESP_V6 = r"""
import json, sys
from scapy.all import (ESP, ICMP, IP, Ether, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop,
                       IPv6ExtHdrRouting, Raw, SecurityAssociation, sendp)
a = json.loads(sys.argv[1])
sa = SecurityAssociation(ESP, spi=a["spi"], crypt_algo="AES-GCM", crypt_key=bytes.fromhex(a["key"]),
                         tunnel_header=IPv6(src=a["src"], dst=a["dst"]))
EXT = {"hbh": (0, IPv6ExtHdrHopByHop), "rt": (43, lambda **k: IPv6ExtHdrRouting(segleft=0, **k)),
       "dest": (60, IPv6ExtHdrDestOpt)}
frames = []
for i, chain in enumerate(a["chains"]):
    inner = IP(src=a["inner_src"], dst=a["inner_dst"], ttl=64) / ICMP(type=8, id=a["icmp_id"], seq=a["seq0"] + i) / Raw(b"esp behind IPv6 extension headers")
    esp = sa.encrypt(inner, seq_num=a["seq0"] + i)[ESP]
    # RFC 8200 §4: each header names the next; the last names ESP (50).
    nhs = [EXT[h][0] for h in chain] + [50]
    pkt = IPv6(src=a["src"], dst=a["dst"], nh=nhs[0], hlim=64)
    for k, h in enumerate(chain):
        pkt = pkt / EXT[h][1](nh=nhs[k + 1])
    frames.append(Ether(src=a["src_mac"], dst=a["dst_mac"]) / pkt / esp)
sendp(frames, iface=a["iface"], verbose=False, inter=0.005)
"""


def destopts_checks(lab: Lab) -> None:
    """ipv6-destopts: ESP over IPv6 behind extension headers (destination options, and
    hop-by-hop + routing + destination options), crafted with scapy on gw-b with the static
    SA's key, is steered by gw-a's XDP program, decapsulated and delivered to client-a; a
    chain longer than the program walks goes to the kernel, counted."""
    from scapy.all import ICMP, rdpcap  # noqa: PLC0415

    c = lab.case
    lab.start_dataplane("a")  # gw-b runs no dataplane: scapy speaks for it
    # gw-a's kernel learns client-a's MAC, so the dataplane's inside next hop resolves.
    lab.ping("client-a", "10.1.0.1", count=1)
    mac = {s: ns_exec(lab.ns(f"gw-{s}"), "cat", f"/sys/class/net/g{s}-out/address").stdout.strip() for s in "ab"}
    seq = [1]
    icmp_id = 0x6e7

    def send(chains: list[list[str]]) -> None:
        args = {"spi": vpnlab.SPI_BA, "key": vpnlab.KEY_BA.hex(), "src": c.outer("b"), "dst": c.outer("a"),
                "inner_src": c.client("b"), "inner_dst": c.client("a"), "icmp_id": icmp_id, "seq0": seq[0],
                "chains": chains, "src_mac": mac["b"], "dst_mac": mac["a"], "iface": "gb-out"}
        r = ns_exec(lab.ns("gw-b"), sys.executable, "-c", SEND_ESP_V6, json.dumps(args), check=False)
        if r.returncode != 0:
            raise RuntimeError(f"scapy sender: {r.stdout[-1500:]}")
        seq[0] += len(chains)

    # Warm up until the inside next hop (client-a) is resolved.
    want = f"inside {c.client('a')} via"
    for _ in range(20):
        send([["dest"]])
        if any(h.startswith(want) for h in lab.wait_stats("a", lambda s: any(h.startswith(want) for h in s["next_hops"]), 0.5)["next_hops"]):
            break
    before = lab.stats("a")
    dec0 = sum(w["decapsulated"] for w in before["workers"])
    esp0 = xdp_count(before, "outside", "esp_to_socket")
    lim0 = xdp_count(before, "outside", "ipv6_ext_headers_beyond_limit_to_kernel")
    pcap = lab.workdir / "client-a.pcap"
    td = subprocess.Popen(["ip", "netns", "exec", lab.ns("client-a"), "tcpdump", "-n", "-i", "ca0", "-U", "--immediate-mode",
                           "-w", str(pcap), "icmp and src host " + c.client("b")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = td.stderr.readline() if td.stderr else ""
    check("listening" in line, "tcpdump on client-a ready", line.strip())
    first = seq[0]
    chains = [["dest"]] * 4 + [["hbh", "dest"]] * 3 + [["hbh", "rt", "dest"]] * 3
    send(chains)
    # Seven destination-options headers: beyond the program's bound of six.
    send([["dest"] * 7])
    s = lab.wait_stats("a", lambda s: sum(w["decapsulated"] for w in s["workers"]) >= dec0 + len(chains)
                       and xdp_count(s, "outside", "ipv6_ext_headers_beyond_limit_to_kernel") > lim0)
    time.sleep(0.3)  # the last deliveries reach the capture
    td.send_signal(signal.SIGINT)
    td.wait(timeout=10)
    got = sorted(p[ICMP].seq for p in rdpcap(str(pcap))
                 if ICMP in p and p[ICMP].type == 8 and p[ICMP].id == icmp_id) if pcap.exists() else []
    want_seqs = list(range(first, first + len(chains)))
    check(got == want_seqs, "ESP behind IPv6 destination options (and hop-by-hop + routing) is delivered to client-a",
          f"echo requests {got}, sent {want_seqs}")
    dec = sum(w["decapsulated"] for w in s["workers"]) - dec0
    esp = xdp_count(s, "outside", "esp_to_socket") - esp0
    lim = xdp_count(s, "outside", "ipv6_ext_headers_beyond_limit_to_kernel") - lim0
    check(dec == len(chains) and esp == len(chains),
          "gw-a's XDP program steered them to the dataplane, which decapsulated each",
          f"esp_to_socket +{esp}, decapsulated +{dec} of {len(chains)}")
    check(lim == 1, "a chain of seven extension headers goes to the kernel, counted", f"+{lim}")
    drops = {k: v for w in s["workers"] for k, v in w["esp_drops"].items()}
    check(not drops, "no ESP drops on gw-a", str(drops))


def trap_checks(lab: Lab) -> None:
    """start_action = "trap": the policy is in place, no SA; the first packet makes the
    dataplane report an acquire, iked negotiates, and traffic flows."""
    lab.start_dataplane("a", ring=True)
    lab.start_dataplane("b", ring=True)
    pb, _ = lab.start_iked("b", "1", vpnlab.iked_conf(lab.case, "b"))
    deadline = time.time() + 10
    while not (lab.workdir / "iked-b.sock").exists() and time.time() < deadline and pb.poll() is None:
        time.sleep(0.02)
    lab.start_iked("a", "1", vpnlab.iked_conf(lab.case, "a").replace('start_action = "start"', 'start_action = "trap"'))
    s = lab.wait_stats("a", lambda s: s["policy_count"] == 1)
    check(s["policy_count"] == 1 and s["sa_count"] == 0, "trap: the policy is installed, no SA yet",
          f"{s['policy_count']} policies, {s['sa_count']} SAs")
    got = False
    t0 = time.time()
    for _ in range(20):
        r = lab.ping("client-a", lab.case.client("b"), count=1)
        if r.returncode == 0:
            got = True
            break
    check(got, "trap: the first packets bring the tunnel up and traffic flows", f"{time.time() - t0:.2f} s")
    log = (lab.workdir / "iked-a-1.log").read_text()
    check("acquire: traffic for a trapped connection" in log, "trap: iked initiated on the dataplane's acquire")
    s = lab.stats("a")
    nosa = sum(w["worker_drops"].get("no_sa", 0) for w in s["workers"])
    check(s["sa_count"] == 2 and nosa >= 1, "trap: the SAs are in; the packets before them were counted as no_sa",
          f"{s['sa_count']} SAs, no_sa {nosa}")


def iked_checks(lab: Lab) -> None:
    """Our iked on both gateways, keying our dataplanes over their rings: the tunnel comes up
    and carries ping and TCP (raw ESP, or ESP in UDP/4500 when NAT-T is forced)."""
    lab.start_dataplane("a", ring=True)
    lab.start_dataplane("b", ring=True)
    pb, _ = lab.start_iked("b", "1", vpnlab.iked_conf(lab.case, "b"))
    # Readiness: the responder's control socket exists once its IKE sockets are bound.
    deadline = time.time() + 10
    while not (lab.workdir / "iked-b.sock").exists() and time.time() < deadline and pb.poll() is None:
        time.sleep(0.02)
    pa, ready = lab.start_iked("a", "1", vpnlab.iked_conf(lab.case, "a"))
    t0 = time.time()
    while not ready.exists():
        if pa.poll() is not None or pb.poll() is not None or time.time() - t0 > 20:
            raise RuntimeError("iked did not bring the tunnel up:\n" + "\n".join(
                f"--- {log.name}\n{log.read_text()[-2500:]}" for log in sorted(lab.workdir.glob("iked-*.log"))))
        time.sleep(0.05)
    check(True, "iked brought the tunnel up", f"{time.time() - t0:.2f} s from start to Child SA installed")
    # Each side: its fail-closed base policy (from start) and the narrowed policy of the
    # Child SA.
    for side in "ab":
        s = lab.wait_stats(side, lambda s: s["sa_count"] == 2 and s["policy_count"] == 2)
        check(s["sa_count"] == 2 and s["policy_count"] == 2, f"gw-{side}'s dataplane holds the negotiated SAs and policies",
              f"{s['sa_count']} SAs, {s['policy_count']} policies")
    lab.wait_next_hop("a")
    lab.wait_next_hop("b")
    t1 = time.time()
    lab.warm_up()
    check(True, "first packet through the tunnel", f"{time.time() - t0:.2f} s after iked started")
    traffic(lab)
    encap = [x for x in lab.stats("a")["sas"] if x["direction"] == "out"]
    check(bool(encap) and encap[0]["packets"] > 0, "the negotiated outbound SA carried the traffic",
          f"{encap[0]['packets'] if encap else 0} packets")
    del t1
    # The operator's view and controls (vpnctl over iked's unix socket).
    if lab.case.nat_t:
        # RFC 3948 §2.3 keepalives (every second here): gw-b's XDP passes them to the kernel.
        before = lab.stats("b")["xdp"]["outside"].get("ike_to_kernel", 0)
        s = lab.wait_stats("b", lambda s: s["xdp"]["outside"].get("ike_to_kernel", 0) >= before + 2, timeout=5)
        after = s["xdp"]["outside"].get("ike_to_kernel", 0)
        check(after >= before + 2, "NAT keepalives reach the peer while the tunnel idles", f"{before} -> {after}")
    r = lab.vpnctl_iked("a", "list")
    want = f"gw-b: {lab.case.outer('a')} === {lab.case.outer('b')}"
    check(r.returncode == 0 and want in r.stdout and "established" in r.stdout
          and "child net: in spi" in r.stdout, "vpnctl list shows the connection, its IKE SA and Child SA",
          r.stdout.strip().splitlines()[0] if r.stdout.strip() else r.stdout)
    r = lab.vpnctl_iked("a", "down", "gw-b")
    s = lab.wait_stats("a", lambda s: s["sa_count"] == 0)
    sb = lab.wait_stats("b", lambda s: s["sa_count"] == 0)
    check(r.returncode == 0 and s["sa_count"] == 0 and sb["sa_count"] == 0,
          "vpnctl down deletes the IKE SA; both dataplanes drop the SAs", r.stdout.strip())
    check(s["policy_count"] == 1 and sb["policy_count"] == 1,
          "after down the fail-closed base policies stay on both sides (traffic dropped, not sent in clear)",
          f"{s['policy_count']} and {sb['policy_count']} policies")
    r = lab.vpnctl_iked("a", "list")
    check("down" in r.stdout and "dropped (fail-closed)" in r.stdout, "vpnctl list says the child is down and its traffic dropped",
          r.stdout.strip().replace("\n", " | ")[:200])
    r = lab.vpnctl_iked("a", "up", "gw-b")
    s = lab.wait_stats("a", lambda s: s["sa_count"] == 2, timeout=10)
    check(r.returncode == 0 and s["sa_count"] == 2, "vpnctl up negotiates it again", r.stdout.strip())
    lab.warm_up()
    conf = next(lab.workdir.glob("iked-a-1.toml"))
    good = conf.read_text()
    conf.write_text(good.replace('proposals = ["', 'proposals = ["3des-md5-modp1024", "'))
    r = lab.vpnctl_iked("a", "reload")
    check(r.returncode != 0 and "RFC 8247" in r.stdout and "keeping the running configuration" in r.stdout,
          "a bad reload is refused with file, line and field; the running configuration stays", r.stdout.strip()[-160:])
    conf.write_text(good)
    r = lab.vpnctl_iked("a", "list")
    check("established" in r.stdout, "after the refused reload the tunnel is still up")


def strongswan_checks(lab: Lab) -> None:
    """Our iked + dataplane on gw-a against strongSwan charon (kernel-libipsec) on gw-b:
    each proposal of the matrix, us as initiator and as responder; then a PSK mismatch and
    disjoint proposals, which must fail with the right notify and say why in our log."""
    lab.start_dataplane("a", ring=True)
    psk = "an interop pre-shared key"
    for n, (ike, esp, we_init) in enumerate(STRONGSWAN_MATRIX):
        case = vpnlab.Case(nat_t=True, proposal=esp)
        clog = lab.start_charon("b", vpnlab.swanctl_conf(case, "b", psk, ike, esp, start=not we_init))
        conf = vpnlab.iked_conf(case, "a", psk=psk, ike=ike)
        if not we_init:
            conf = conf.replace('start_action = "start"', 'start_action = "none"')
        # RFC 9611 on our side: charon 5.9.8 ignores SA_RESOURCE_INFO, so one ordinary Child SA.
        conf = conf.replace("[connections.gw-b.children.net]\n", "[connections.gw-b.children.net]\nper_resource_sas = 2\n")
        assert "per_resource_sas" in conf
        p, _ = lab.start_iked("a", str(n), conf)
        deadline = time.time() + 20
        while lab.stats("a")["sa_count"] < 2 and time.time() < deadline:
            time.sleep(0.1)
        s = lab.stats("a")
        role = "initiator" if we_init else "responder"
        ok = s["sa_count"] == 2
        check(ok, f"{ike} / {esp}, we are {role}: the tunnel comes up", f"{s['sa_count']} SAs installed")
        if ok:
            lab.wait_next_hop("a")
            r = None
            for _ in range(10):
                r = lab.ping("client-a", lab.case.client("b"), count=3, interval=0.1)
                if "3 received" in r.stdout:
                    break
            check(r is not None and "3 received" in r.stdout, f"{ike} / {esp}: ping through the tunnel",
                  r.stdout.strip().splitlines()[-2] if r and r.stdout.strip() else "")
            j = lab.iperf(seconds=1)
            check(vpnlab.summary_bps(j) > 1e6, f"{ike} / {esp}: a TCP stream passes", f"{vpnlab.summary_bps(j) / 1e6:.0f} Mbit/s")
            # After the traffic: nothing more was negotiated meanwhile.
            doc = json.loads(lab.vpnctl_iked("a", "list", "--json").stdout or "{}")
            sas = [sa for c in doc.get("connections", []) for ch in c["children"] for sa in ch["sas"]]
            fails = [f for c in doc.get("connections", []) for f in c["failures"]]
            check(len(sas) == 1 and sas[0]["worker"] is None and not fails,
                  f"{ike} / {esp}: per_resource_sas = 2 against strongSwan: exactly one ordinary Child SA, no failure",
                  f"{len(sas)} Child SAs, workers {[sa['worker'] for sa in sas]}, failures {fails}")
        else:
            print((lab.workdir / f"iked-a-{n}.log").read_text()[-2000:])
            print(clog.read_text()[-3000:])
        p.terminate()
        p.wait(timeout=10)
        lab.procs[f"charon-b"].kill()
        lab.procs[f"charon-b"].wait()
        lab.wait_stats("a", lambda s: s["sa_count"] == 0, timeout=5)

    # Failures: say which side wanted what, with the right notify.
    case = vpnlab.Case(nat_t=True)
    ike = "aes128gcm16-prfsha256-x25519"
    lab.start_charon("b", vpnlab.swanctl_conf(case, "b", "the peer's different key", ike, "aes128gcm16", start=False))
    p, _ = lab.start_iked("a", "psk", vpnlab.iked_conf(case, "a", psk=psk, ike=ike))
    log = lab.workdir / "iked-a-psk.log"
    deadline = time.time() + 15
    while "AUTHENTICATION_FAILED" not in log.read_text() and time.time() < deadline:
        time.sleep(0.1)
    line = next((ln for ln in log.read_text().splitlines() if "AUTHENTICATION_FAILED" in ln), "")
    check("pre-shared key" in line, "PSK mismatch: strongSwan answers AUTHENTICATION_FAILED and our log says to check the key",
          re.sub(r"\x1b\[[0-9;]*m", "", line)[-160:])
    check(lab.stats("a")["sa_count"] == 0, "PSK mismatch: nothing installed")
    p.terminate()
    p.wait(timeout=10)
    lab.procs["charon-b"].kill()
    lab.procs["charon-b"].wait()

    # strongSwan initiates with a proposal we do not accept.
    clog = lab.start_charon("b", vpnlab.swanctl_conf(case, "b", psk, "aes256-sha512-ecp384", "aes128gcm16", start=True))
    conf = vpnlab.iked_conf(case, "a", psk=psk, ike=ike).replace('start_action = "start"', 'start_action = "none"')
    p, _ = lab.start_iked("a", "prop", conf)
    log = lab.workdir / "iked-a-prop.log"
    deadline = time.time() + 15
    while "no IKE proposal in common" not in log.read_text() and time.time() < deadline:
        time.sleep(0.1)
    line = next((ln for ln in log.read_text().splitlines() if "no IKE proposal in common" in ln), "")
    check("initiator offered aes256-sha512-prfsha512-ecp384" in line and "we accept aes128gcm16-prfsha256-x25519" in line,
          "disjoint proposals: NO_PROPOSAL_CHOSEN, and our log names what each side wanted",
          re.sub(r"\x1b\[[0-9;]*m", "", line)[-200:])
    deadline = time.time() + 10
    while "NO_PROPOSAL_CHOSEN" not in clog.read_text() and time.time() < deadline:
        time.sleep(0.1)
    check("NO_PROPOSAL_CHOSEN" in clog.read_text(), "strongSwan received NO_PROPOSAL_CHOSEN")
    p.terminate()
    p.wait(timeout=10)


def strongswan_dpd_checks(lab: Lab) -> None:
    """Our iked against strongSwan charon with DPD, both ways: our liveness checks answered
    by charon; charon restarted (kill -9) and initiating again, its INITIAL_CONTACT making us
    drop the IKE SA it forgot; charon's DPD answered by us; charon killed for good, our DPD
    declaring it dead within dpd_delay + dpd_timeout while traffic stays dropped."""
    lab.start_dataplane("a", ring=True)
    psk = "an interop pre-shared key"
    ike = "aes128gcm16-prfsha256-x25519"
    case = vpnlab.Case(nat_t=True)
    conf = vpnlab.iked_conf(case, "a", psk=psk, ike=ike).replace('start_action = "start"', 'start_action = "none"')
    conf = conf.replace("retransmit_ms = 500\n", 'retransmit_ms = 500\ndpd_delay = "2s"\ndpd_timeout = "5s"\n', 1)
    assert 'dpd_delay = "2s"' in conf
    p, _ = lab.start_iked("a", "dpd", conf)
    sock = lab.workdir / "iked-a.sock"
    deadline = time.time() + 10
    while not sock.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    log = lab.workdir / "iked-a-dpd.log"

    # Phase 1: charon (DPD every 30 s: ours fires first) initiates; the tunnel idles.
    clog = lab.start_charon("b", vpnlab.swanctl_conf(case, "b", psk, ike, "aes128gcm16", start=True, dpd_delay="30s"))
    s = lab.wait_stats("a", lambda s: s["sa_count"] == 2, timeout=20)
    check(s["sa_count"] == 2, "charon initiates: the tunnel comes up", f"{s['sa_count']} SAs")
    first_spis = {x["spi"] for x in s["sas"]}
    time.sleep(7)  # the behaviour under test is what happens over idle time
    empty = [ln for ln in clog.read_text().splitlines() if "parsed INFORMATIONAL request" in ln and "[ ]" in ln]
    check(len(empty) >= 2, "our DPD: empty INFORMATIONAL requests every dpd_delay while idle, answered by charon",
          f"{len(empty)} liveness checks parsed by charon in 7 s")
    check(lab.stats("a")["sa_count"] == 2 and "is dead" not in log.read_text(), "answered liveness checks keep the tunnel up")

    # Phase 2: charon is killed and restarted (its SAs are gone); it initiates again with
    # INITIAL_CONTACT; we drop the IKE SA and Child SA it forgot. Its DPD now runs every 1 s
    # (before ours), so we answer its checks.
    lab.procs["charon-b"].kill()
    lab.procs["charon-b"].wait()
    t0 = time.time()
    clog = lab.start_charon("b", vpnlab.swanctl_conf(case, "b", psk, ike, "aes128gcm16", start=True, dpd_delay="1s"))
    s = lab.wait_stats("a", lambda s: s["sa_count"] == 2 and {x["spi"] for x in s["sas"]}.isdisjoint(first_spis), timeout=20)
    fresh = {x["spi"] for x in s["sas"]}.isdisjoint(first_spis)
    check(s["sa_count"] == 2 and fresh, "charon restarted: only its new Child SA is in our dataplane",
          f"{s['sa_count']} SAs, {time.time() - t0:.1f} s after the restart")
    check("INITIAL_CONTACT" in log.read_text(), "charon's INITIAL_CONTACT made us drop the IKE SA it forgot")
    r = lab.vpnctl_iked("a", "list")
    check(r.stdout.count("child net: in spi") == 1 and "established" in r.stdout,
          "vpnctl list shows one established IKE SA with one Child SA", r.stdout.strip().replace("\n", " | ")[:240])
    lab.wait_next_hop("a")
    got = any("1 received" in lab.ping("client-a", lab.case.client("b"), count=1).stdout for _ in range(10))
    check(got, "traffic flows through the new Child SA")
    time.sleep(4)
    out = clog.read_text()
    check("sending DPD request" in out and "parsed INFORMATIONAL response" in out,
          "charon's DPD requests are answered by us", f"{out.count('sending DPD request')} DPD requests sent by charon")
    check(lab.stats("a")["sa_count"] == 2, "the tunnel stays up under charon's DPD")

    # Phase 3: charon dies for good. Our DPD notices within dpd_delay + dpd_timeout (+1 s).
    lab.procs["charon-b"].kill()
    lab.procs["charon-b"].wait()
    t0 = time.time()
    s = lab.wait_stats("a", lambda s: s["sa_count"] == 0, timeout=15)
    took = time.time() - t0
    check(s["sa_count"] == 0 and took <= 2 + 5 + 1.5, "charon killed: our DPD declares it dead and removes the SAs",
          f"{took:.1f} s (dpd_delay 2 s + dpd_timeout 5 s)")
    check(s["policy_count"] >= 1, "the fail-closed policy stays: traffic to the dead peer is dropped, not sent in clear",
          f"{s['policy_count']} policies")
    line = next((ln for ln in log.read_text().splitlines() if "is dead" in ln), "")
    check("DPD" in line and "dpd_action" in line, "our log says which peer, how many probes over how long, and what we do",
          line.split("WARN")[-1].strip()[:200])
    r = lab.vpnctl_iked("a", "list")
    check("dead" in r.stdout and "down" in r.stdout, "vpnctl list says the peer is dead and the child down",
          r.stdout.strip().replace("\n", " | ")[:240])
    p.terminate()
    p.wait(timeout=10)


# A UDP echo server for nat_topology_checks: prints "ready", then for each datagram the
# source it arrived from, and answers it.
UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, src = s.recvfrom(2048)
    print(src[0], src[1], flush=True)
    s.sendto(b"echo " + data, src)
"""

# One datagram from (addr, port) to (dst, port); prints the answer's source and text.
UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(3)
s.sendto(b"probe", (sys.argv[3], int(sys.argv[4])))
data, src = s.recvfrom(2048)
print(src[0], src[1], data.decode(), flush=True)
"""


class LineReader:
    """Lines from a child's stdout with a deadline (a lost datagram must fail the check,
    not hang the test)."""

    def __init__(self, proc: subprocess.Popen):
        self.fd = proc.stdout.fileno()
        self.buf = b""

    def line(self, timeout: float = 5.0) -> str:
        deadline = time.time() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.time()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return ""
            chunk = os.read(self.fd, 4096)
            if not chunk:
                return ""
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode().strip()


def nat_topology_checks(lab: Lab) -> None:
    """The NAT topology alone (no dataplane, no iked): a UDP datagram from gw-a:4500 reaches
    gw-b from the NAT's public address with another, random source port; the answer finds its
    way back; the binding is stable until `conntrack -F`, after which a new port is used.
    IPv4 and IPv6 (NAT66)."""
    port = 4500
    for v6 in (False, True):
        fam = "IPv6" if v6 else "IPv4"
        c = Case(nat=True, outer_v6=v6)
        src, public, dst = c.outer("a"), c.public("a"), c.outer("b")
        check(src != public, f"{fam}: gw-a's own address is private", f"{src} behind {public}")
        srv = subprocess.Popen(["ip", "netns", "exec", lab.ns("gw-b"), sys.executable, "-c", UDP_ECHO, dst, str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lab.procs[f"udp-echo-{fam}"] = srv
        out = LineReader(srv)
        try:
            line = out.line()
            check(line == "ready", f"{fam}: UDP echo server listening on gw-b {dst}:{port}", line)

            def probe() -> tuple[str, int, str]:
                """Send one datagram from gw-a:4500; return what gw-b saw and gw-a's answer."""
                r = ns_exec(lab.ns("gw-a"), sys.executable, "-c", UDP_SEND, src, str(port), dst, str(port),
                            check=False, timeout=10)
                seen = out.line().split()
                if len(seen) != 2:
                    raise RuntimeError(f"gw-b saw {seen!r}; sender said {r.stdout!r}")
                return seen[0], int(seen[1]), r.stdout.strip()

            addr1, port1, reply = probe()
            check(addr1 == public and port1 != port, f"{fam}: gw-b sees gw-a:{port} as the NAT's address with "
                  "another source port", f"{addr1} port {port1}")
            check(reply == f"{dst} {port} echo probe", f"{fam}: the answer to the mapped port reaches gw-a:{port}", reply)
            addr2, port2, _ = probe()
            check((addr2, port2) == (addr1, port1), f"{fam}: the binding is stable while conntrack holds it",
                  f"port {port1} then {port2}")
            table = lab.nat_bindings()
            mapped = [l for l in table.splitlines() if f"sport={port}" in l and f"dport={port1}" in l]
            check(len(mapped) == 1, f"{fam}: the NAT's conntrack shows the binding {src}:{port} -> {public}:{port1}",
                  mapped[0] if mapped else table)
            lab.nat_flush()
            check(f"dport={port1}" not in lab.nat_bindings(), f"{fam}: conntrack -F forgot the binding")
            addr3, port3, reply = probe()
            check(addr3 == public and port3 not in (port, port1) and reply.endswith("echo probe"),
                  f"{fam}: after the flush the next datagram gets a new NAT port and its answer still arrives",
                  f"port {port1} -> {port3}")
        finally:
            srv.kill()
            srv.wait()


def run(case_name: str, dataplane: str) -> int:
    case = CASES[case_name]
    lab = Lab(name=vpnlab.unique_name(case_name[:3]), case=case, dataplane=dataplane, vpnctl=VPNCTL)
    try:
        lab.up()
        if case_name == "nat-topology":
            nat_topology_checks(lab)
            return teardown(lab, case_name)
        if case_name == "ring":
            ring_checks(lab)
            return finish(lab, case_name)
        if case_name == "dataplane-kill-failclosed":
            kill_failclosed_checks(lab)
            return finish(lab, case_name)
        if case_name == "ipv6-destopts":
            destopts_checks(lab)
            return finish(lab, case_name, dataplanes="a")
        if case_name == "strongswan":
            strongswan_checks(lab)
            return finish(lab, case_name, dataplanes="a")
        if case_name == "strongswan-dpd":
            strongswan_dpd_checks(lab)
            return finish(lab, case_name, dataplanes="a")
        if case_name in e2e_faults.SCENARIOS:
            e2e_faults.run(lab, case_name, check)
            return teardown(lab, case_name)
        if case_name == "iked-trap":
            trap_checks(lab)
            return finish(lab, case_name)
        if case_name.startswith("iked"):
            iked_checks(lab)
            return finish(lab, case_name)
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
        return finish(lab, case_name)
    except Exception as e:  # noqa: BLE001
        check(False, f"{case_name} ran to the end", repr(e))
        return teardown(lab, case_name)


def finish(lab: Lab, case_name: str, dataplanes: str = "ab") -> int:
    try:
        # SIGKILL: the XDP programs stay (pinned links: fail-closed while no dataplane
        # runs); `dataplane --detach` removes them on purpose.
        check(lab.xdp_attached("a"), "XDP attached while the dataplane runs")
        lab.stop_dataplane("a", signal.SIGKILL)
        check(lab.xdp_attached("a") and lab.xdp_attached("a", "in"),
              "after SIGKILL the XDP programs stay attached (pinned)")
        r = lab.detach("a")
        gone = False
        for _ in range(50):
            if not lab.xdp_attached("a") and not lab.xdp_attached("a", "in"):
                gone = True
                break
            time.sleep(0.05)
        check(r is not None and r.returncode == 0 and gone and not lab.pin_dir("a").exists(),
              "dataplane --detach removes the pins and the XDP programs go",
              (r.stdout.strip().splitlines() or [""])[-1][-160:] if r else "no pins")
        # A clean stop exits 0 and prints counters.
        if "b" in dataplanes:
            rc = lab.stop_dataplane("b", signal.SIGTERM)
            check(rc == 0 and "dataplane counters" in lab.log("b"), "SIGTERM stops the dataplane cleanly", f"exit {rc}")
    except Exception as e:  # noqa: BLE001
        check(False, f"{case_name} ran to the end", repr(e))
    return teardown(lab, case_name)


def teardown(lab: Lab, case_name: str) -> int:
    try:
        if failures:
            for side in ("a", "b"):
                print(f"--- dataplane {side} log ---\n{lab.log(side)[-3000:]}")
            for log in sorted(list(lab.workdir.glob("vpnctl-*.log")) + list(lab.workdir.glob("iked-*.log"))):
                print(f"--- {log.name} ---\n{log.read_text()[-2000:]}")
    finally:
        lab.down(keep=bool(failures))
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    check(lab.name not in leftover, "namespaces removed")
    print(f"{case_name}: {'FAILED' if failures else 'ok'}")
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("--vpnctl", default="", help="vpnctl binary (the ring case)")
    ap.add_argument("case", choices=sorted(CASES))
    a = ap.parse_args()
    global VPNCTL
    VPNCTL = a.vpnctl or str(pathlib.Path(a.dataplane).with_name("vpnctl"))
    return run(a.case, a.dataplane)


if __name__ == "__main__":
    sys.exit(main())
