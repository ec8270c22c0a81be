#!/usr/bin/env python3
"""The namespace driver of `vpnbench e2e` (needs root): one topology, interleaved rounds.

    vpnbench_e2e.py --dataplane target/release/dataplane --out rows.json \
        [--rounds 3] [--seconds 5] [--only plain,ours-1w] [--boringtun target/peers/bin/boringtun-cli]

Builds one vpnlab topology (two clients, two gateways) and, in each round, runs every
configuration once, in an order that changes from round to round (rotated, every other round
reversed), so slow drifts of this shared machine spread over all of them:

  plain                 kernel forwarding, tunnel-topology offloads (tx off on the client veths)
  plain-offloads        kernel forwarding with the veths' default offloads
  ours-1w, ours-2w      our dataplane on both gateways, static SAs (AES-128-GCM), 1 or 2 workers
  strongswan-libipsec   charon on both gateways, kernel-libipsec, AES-128-GCM, PSK (ESP in UDP)
  boringtun             boringtun-cli on both gateways (WireGuard), configured with `wg`
  wireguard-go          wireguard-go on both gateways (WireGuard), configured with `wg`

Each configuration measures iperf3 TCP with 1 and 4 streams (Gbit/s, retransmits), the RTT
(ping every 2 ms) idle and during one saturating TCP stream, and small packets: with --vpnbench
(as `vpnbench e2e` runs it) our AF_XDP generator in client-a as fast as it goes, 64-byte frames,
into the AF_XDP sink in client-b (received packets per second and loss); without it, iperf3 UDP
with 64-byte payloads at unlimited rate, 2 streams (iperf3 tops out near 100 kpps). A configuration whose tool is
missing is skipped and said so in "notes". The JSON written to --out holds the raw RTT samples;
`vpnbench e2e` turns them into percentiles, medians, ratios and goals. The namespaces are
deleted at the end, on failure and on SIGINT/SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback

import vpnbench_afxdp
import vpnlab
from vpnlab import Case, Lab

CONFIGS = ["plain", "plain-offloads", "ours-1w", "ours-2w", "strongswan-libipsec", "boringtun", "wireguard-go"]
PSK = "a vpnbench pre-shared key"
SWAN_IKE = "aes128gcm16-prfsha256-x25519"
SWAN_ESP = "aes128gcm16"
WG_PORT = 51820
PING_INTERVAL = 0.002
SMALL_METHOD = "iperf3-udp64"
# The `vpnbench` binary for the AF_XDP generator and sink (--vpnbench); None: iperf3.
VPNBENCH: str | None = None


class Skip(Exception):
    """A configuration that cannot run here (a tool is missing)."""


def log(msg: str) -> None:
    print(f"[vpnbench e2e] {msg}", file=sys.stderr, flush=True)


def order(configs: list[str], rnd: int) -> list[str]:
    """Round `rnd`'s order: rotated by the round number, every other round reversed."""
    n = len(configs)
    rot = [configs[(i + rnd) % n] for i in range(n)] if n else []
    return rot[::-1] if rnd % 2 else rot


# --- measurements -------------------------------------------------------------------------------

TIME_RE = re.compile(r"icmp_seq=\d+ .*time=([0-9.]+) ms")
SENT_RE = re.compile(r"(\d+) packets transmitted")


def ping_samples(lab: Lab, count: int, deadline: float) -> tuple[list[float], int]:
    """Ping client-a -> client-b every 2 ms: (RTTs in µs, probes lost)."""
    r = vpnlab.ns_exec(lab.ns("client-a"), "ping", "-n", "-c", str(count), "-i", str(PING_INTERVAL), "-W", "1",
                       "-w", str(int(deadline) + 1), lab.case.client("b"), check=False, timeout=deadline + 30)
    samples = [float(m.group(1)) * 1000.0 for m in TIME_RE.finditer(r.stdout)]
    # Lost: probes sent without a reply (the -w deadline may end the run before `count`).
    m = SENT_RE.search(r.stdout)
    sent = int(m.group(1)) if m else count
    return samples, max(sent - len(samples), 0)


def tcp(lab: Lab, seconds: float, parallel: int, port: int) -> tuple[float, int]:
    """iperf3 TCP client-a -> client-b: (Gbit/s received, retransmits)."""
    j = lab.iperf(seconds=seconds, parallel=parallel, port=port)
    if "error" in j:
        raise RuntimeError(f"iperf3 TCP -P {parallel}: {j['error']}")
    retr = int(j.get("end", {}).get("sum_sent", {}).get("retransmits", 0))
    return vpnlab.summary_bps(j) / 1e9, retr


def small(lab: Lab, seconds: float, port: int) -> tuple[float, float]:
    """Small packets through the tunnel: (received pps, loss ratio). With `--vpnbench`, our
    AF_XDP generator in client-a as fast as it goes (64-byte frames) and the AF_XDP sink in
    client-b; without, iperf3 UDP with 64-byte payloads, unlimited rate, 2 streams."""
    if VPNBENCH:
        m = vpnbench_afxdp.xsk_point(lab, VPNBENCH, vpnbench_afxdp.mac(lab.ns("client-a"), "ca0"),
                                     vpnbench_afxdp.mac(lab.ns("gw-a"), "ga-in"), 64, 0, seconds)
        gen, sink = m["gen"], m["sink"]
        span = (sink.get("last_ns", 0) - sink.get("first_ns", 0)) / 1e9
        secs = max(float(gen.get("seconds") or 0), span) or 1.0
        sent, got = int(gen.get("sent", 0)), int(sink.get("received", 0))
        return got / secs, (max(sent - got, 0) / sent if sent else 0.0)
    j = lab.iperf(seconds=seconds, udp_rate="0", length=64, parallel=2, port=port)
    if "error" in j:
        raise RuntimeError(f"iperf3 UDP: {j['error']}")
    s = j["end"]["sum"]
    secs = float(s.get("seconds") or 1)
    pkts, lost = float(s.get("packets", 0)), float(s.get("lost_packets", 0))
    return (pkts - lost) / secs, (lost / pkts if pkts else 0.0)


def cpu_pressure_us() -> int | None:
    """Microseconds (since boot) during which some runnable task waited for a CPU (Linux PSI)."""
    try:
        for line in open("/proc/pressure/cpu"):
            if line.startswith("some "):
                return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def loaded_rtt(lab: Lab, seconds: float, port: int) -> dict:
    """RTT samples while one TCP stream saturates the path, and that stream's throughput."""
    srv = subprocess.Popen(["ip", "netns", "exec", lab.ns("client-b"), "iperf3", "-s", "-1", "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cli = None
    try:
        wait_until(lambda: str(port) in vpnlab.ns_exec(lab.ns("client-b"), "ss", "-Hltn", f"sport = :{port}",
                                                         check=False).stdout, 5, "iperf3 server listening")
        cli = subprocess.Popen(["ip", "netns", "exec", lab.ns("client-a"), "iperf3", "-c", lab.case.client("b"),
                                "-p", str(port), "-t", str(seconds + 2), "-J"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        # Readiness: the data connection is established (iperf3 opens a control connection
        # first, then the stream): two established connections to the port.
        wait_until(lambda: vpnlab.ns_exec(lab.ns("client-a"), "ss", "-Htn", "state", "established",
                                          f"dport = :{port}", check=False).stdout.count("\n") >= 2,
                   5, "iperf3 stream established")
        # Let slow start reach the bottleneck before sampling (one TCP ramp, not a readiness wait).
        time.sleep(0.5)
        count = max(int(seconds / PING_INTERVAL), 10)
        psi0, t0 = cpu_pressure_us(), time.monotonic()
        samples, lost = ping_samples(lab, count, seconds + 1)
        psi1, t1 = cpu_pressure_us(), time.monotonic()
        out, _ = cli.communicate(timeout=seconds + 30)
        j = json.loads(out) if out.strip() else {}
        gbps = vpnlab.summary_bps(j) / 1e9
        wait = (psi1 - psi0) / 1e6 / (t1 - t0) if psi0 is not None and psi1 is not None else 0.0
        return {"samples": samples, "lost": lost, "gbps": gbps, "cpu_wait": round(wait, 4)}
    finally:
        for p in (cli, srv):
            if p is not None and p.poll() is None:
                p.kill()
            if p is not None:
                p.wait()


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def measure(lab: Lab, seconds: float) -> dict:
    # Idle RTT first (nothing else running), then the load tests.
    idle, idle_lost = ping_samples(lab, max(int(seconds * 100), 50), seconds + 2)
    tcp1, retr1 = tcp(lab, seconds, 1, 5311)
    tcp4, retr4 = tcp(lab, seconds, 4, 5312)
    pps, loss = small(lab, seconds, 5313)
    loaded = loaded_rtt(lab, seconds, 5314)
    return {"tcp_1_stream_gbps": tcp1, "tcp_1_retransmits": retr1, "tcp_4_streams_gbps": tcp4,
            "tcp_retransmits": retr4, "small_rx_pps": pps, "small_loss_ratio": loss,
            "small_method": SMALL_METHOD, "rtt_idle_us": idle, "rtt_idle_lost": idle_lost,
            "rtt_loaded_us": loaded["samples"], "rtt_loaded_lost": loaded["lost"],
            "rtt_loaded_gbps": loaded["gbps"], "rtt_loaded_cpu_wait": loaded["cpu_wait"]}


# --- configurations -----------------------------------------------------------------------------

def gw_if(side: str, which: str) -> str:
    return f"{'ga' if side == 'a' else 'gb'}-{which}"


class Plain:
    def __init__(self, offloads: bool):
        self.offloads = offloads

    def up(self, lab: Lab) -> None:
        if self.offloads:
            vpnlab.ns_exec(lab.ns("client-a"), "ethtool", "-K", "ca0", "tx", "on")
            vpnlab.ns_exec(lab.ns("client-b"), "ethtool", "-K", "cb0", "tx", "on")
        lab.warm_up()

    def down(self, lab: Lab) -> None:
        # Back to the tunnel topology's offloads (topology.sh: tx off on the client veths).
        vpnlab.ns_exec(lab.ns("client-a"), "ethtool", "-K", "ca0", "tx", "off", check=False)
        vpnlab.ns_exec(lab.ns("client-b"), "ethtool", "-K", "cb0", "tx", "off", check=False)


class Ours:
    def __init__(self, workers: int):
        self.workers = workers

    def up(self, lab: Lab) -> None:
        lab.case.workers = self.workers
        lab.start_dataplane("a")
        lab.start_dataplane("b")
        lab.warm_up()

    def down(self, lab: Lab) -> None:
        for side in ("a", "b"):
            p = lab.procs.pop(side, None)
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            lab.detach(side)


class StrongSwan:
    def up(self, lab: Lab) -> None:
        if not os.path.exists("/usr/lib/ipsec/charon") or not shutil.which("swanctl"):
            raise Skip("strongSwan's charon/swanctl not installed (scripts/install-deps.sh)")
        lab.start_charon("b", vpnlab.swanctl_conf(lab.case, "b", PSK, SWAN_IKE, SWAN_ESP, start=False))
        lab.start_charon("a", vpnlab.swanctl_conf(lab.case, "a", PSK, SWAN_IKE, SWAN_ESP, start=True))
        uri = f"unix://{lab.swan_dir('a') / 'charon.vici'}"
        wait_until(lambda: "INSTALLED" in vpnlab.sh("swanctl", "--list-sas", "--uri", uri, check=False).stdout,
                   30, "strongSwan's Child SA installed")
        lab.warm_up()

    def down(self, lab: Lab) -> None:
        for side in ("a", "b"):
            p = lab.procs.pop(f"charon-{side}", None)
            if p is None:
                continue
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


class WireGuard:
    """boringtun-cli or wireguard-go on both gateways; `wg` sets keys and peers over the
    userspace API socket (/var/run/wireguard/IF.sock: interface names unique per run)."""

    def __init__(self, kind: str, boringtun: str):
        self.kind = kind
        self.boringtun = boringtun
        self.ifs: dict[str, str] = {}

    def cmd(self, ifname: str) -> list[str]:
        if self.kind == "wireguard-go":
            return ["wireguard-go", "-f", ifname]
        return [self.boringtun, ifname, "--foreground", "--disable-drop-privileges"]

    def check(self) -> None:
        if not shutil.which("wg"):
            raise Skip("wg (wireguard-tools) not installed: vpnbench e2e --install")
        if self.kind == "wireguard-go" and not shutil.which("wireguard-go"):
            raise Skip("wireguard-go not installed: vpnbench e2e --install")
        if self.kind == "boringtun" and not (self.boringtun and os.access(self.boringtun, os.X_OK)):
            raise Skip(f"boringtun-cli not found at {self.boringtun!r}: vpnbench e2e --install")

    def up(self, lab: Lab) -> None:
        self.check()
        keys = {}
        for side in ("a", "b"):
            priv = vpnlab.sh("wg", "genkey").stdout.strip()
            pub = subprocess.run(["wg", "pubkey"], input=priv + "\n", text=True, capture_output=True,
                                 check=True).stdout.strip()
            path = lab.workdir / f"wg-{side}.key"
            path.write_text(priv + "\n")
            os.chmod(path, 0o600)
            keys[side] = (path, pub)
        env = dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1", WG_SUDO="1")
        tag = "bt" if self.kind == "boringtun" else "wg"
        for side in ("a", "b"):
            other = "b" if side == "a" else "a"
            ifname = f"{tag}{os.getpid() % 100000}{side}"
            self.ifs[side] = ifname
            ns = lab.ns(f"gw-{side}")
            logf = open(lab.workdir / f"{self.kind}-{side}.log", "a")
            lab.procs[f"{self.kind}-{side}"] = subprocess.Popen(["ip", "netns", "exec", ns, *self.cmd(ifname)], env=env,
                                                                 stdout=logf, stderr=subprocess.STDOUT)
            sock = pathlib.Path(f"/var/run/wireguard/{ifname}.sock")

            def ready() -> bool:
                p = lab.procs[f"{self.kind}-{side}"]
                if p.poll() is not None:
                    raise RuntimeError(f"{self.kind} on gw-{side} exited: "
                                       f"{(lab.workdir / f'{self.kind}-{side}.log').read_text()}")
                return sock.exists() and vpnlab.ns_exec(ns, "ip", "link", "show", ifname, check=False).returncode == 0
            wait_until(ready, 10, f"{self.kind} interface {ifname}")
            vpnlab.ns_exec(ns, "wg", "set", ifname, "private-key", str(keys[side][0]), "listen-port", str(WG_PORT),
                           "peer", keys[other][1], "allowed-ips", lab.case.inside_net(other),
                           "endpoint", f"{lab.case.public(other)}:{WG_PORT}")
            vpnlab.ns_exec(ns, "ip", "link", "set", ifname, "up")
            vpnlab.ns_exec(ns, "ip", "route", "replace", lab.case.inside_net(other), "dev", ifname)
        lab.warm_up()

    def down(self, lab: Lab) -> None:
        for side in ("a", "b"):
            other = "b" if side == "a" else "a"
            # The topology's own route to the far inside network, as topology.sh set it.
            vpnlab.ns_exec(lab.ns(f"gw-{side}"), "ip", "route", "replace", lab.case.inside_net(other),
                           "via", lab.case.public(other), "dev", gw_if(side, "out"), check=False)
            p = lab.procs.pop(f"{self.kind}-{side}", None)
            if p is not None:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            ifname = self.ifs.get(side)
            if ifname:
                vpnlab.ns_exec(lab.ns(f"gw-{side}"), "ip", "link", "del", ifname, check=False)
                pathlib.Path(f"/var/run/wireguard/{ifname}.sock").unlink(missing_ok=True)


def make(config: str, boringtun: str):
    return {
        "plain": lambda: Plain(offloads=False),
        "plain-offloads": lambda: Plain(offloads=True),
        "ours-1w": lambda: Ours(1),
        "ours-2w": lambda: Ours(2),
        "strongswan-libipsec": StrongSwan,
        "boringtun": lambda: WireGuard("boringtun", boringtun),
        "wireguard-go": lambda: WireGuard("wireguard-go", boringtun),
    }[config]()


# --- main ----------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("--out", required=True, help="where the rows go (JSON)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--only", default="", help="comma-separated configurations (default: all)")
    ap.add_argument("--boringtun", default=str(vpnlab.ROOT / "target" / "peers" / "bin" / "boringtun-cli"))
    ap.add_argument("--vpnbench", help="the vpnbench binary: small packets from its AF_XDP generator "
                                       "(default: iperf3 UDP, which tops out near 100 kpps)")
    a = ap.parse_args()
    global VPNBENCH, SMALL_METHOD
    if a.vpnbench:
        VPNBENCH, SMALL_METHOD = a.vpnbench, "xsk"
    configs = [c for c in a.only.split(",") if c] or list(CONFIGS)
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        print(f"unknown configurations {unknown}; known: {','.join(CONFIGS)}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("vpnbench e2e needs root (network namespaces)", file=sys.stderr)
        return 2

    # SIGTERM (and SIGHUP) unwind like Ctrl-C, so the finally below deletes the namespaces.
    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    doc = {"configs": configs, "rounds": a.rounds, "seconds": a.seconds, "small_method": SMALL_METHOD,
           "rows": [], "notes": [], "skipped": {}}
    out = pathlib.Path(a.out)

    def save() -> None:
        out.write_text(json.dumps(doc) + "\n")

    lab = Lab(name=vpnlab.unique_name("e2b"), case=Case(workers=1, queues=2), dataplane=a.dataplane)
    rc = 0
    try:
        lab.up()
        for rnd in range(a.rounds):
            for config in order(configs, rnd):
                if config in doc["skipped"]:
                    continue
                t = make(config, a.boringtun)
                log(f"round {rnd + 1}/{a.rounds}: {config}")
                try:
                    t.up(lab)
                    row = measure(lab, a.seconds)
                    row.update(config=config, round=rnd + 1,
                               offloads="default" if config == "plain-offloads" else "off")
                    doc["rows"].append(row)
                    log(f"  {config}: TCP1 {row['tcp_1_stream_gbps']:.3f} TCP4 {row['tcp_4_streams_gbps']:.3f} Gbit/s, "
                        f"small {row['small_rx_pps'] / 1e3:.1f} kpps")
                except Skip as e:
                    doc["skipped"][config] = str(e)
                    doc["notes"].append(f"{config} skipped: {e}")
                    log(f"  {config} skipped: {e}")
                except (RuntimeError, subprocess.SubprocessError, json.JSONDecodeError, KeyError, OSError) as e:
                    doc["notes"].append(f"{config} round {rnd + 1} failed: {e}")
                    log(f"  {config} round {rnd + 1} FAILED: {e}\n{traceback.format_exc()}")
                    rc = 1
                finally:
                    try:
                        t.down(lab)
                    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                        # The namespaces are deleted at the end whatever is left; say what was.
                        doc["notes"].append(f"{config} round {rnd + 1}: tearing down failed: {e}")
                        log(f"  {config} teardown FAILED: {e}")
                save()
    except KeyboardInterrupt as e:
        doc["notes"].append(f"interrupted ({e or 'SIGINT'}): rows so far only")
        rc = 130
    finally:
        lab.down()
        save()
    return rc


if __name__ == "__main__":
    sys.exit(main())
