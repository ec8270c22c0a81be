"""Shared helpers for the namespace tunnel scripts (e2e tests, demo, benchmarks).

Builds the four-namespace topology (scripts/topology.sh; five with Case(nat=True): a real
port-translating NAT in front of gw-a, see Lab.nat_ns / nat_flush), writes manually keyed SA files
for both gateways, runs our dataplane on each gateway, and measures with ping and iperf3.
Only addresses inside our own namespaces are used.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "scripts" / "topology.sh"

# Key material for the demo and tests only (AES-128-GCM: 16-byte key + 4-byte salt).
KEY_AB = bytes(range(0x00, 0x14))
KEY_BA = bytes(range(0x40, 0x54))
SPI_AB = 0x00001001
SPI_BA = 0x00002001


@dataclass
class Case:
    """One tunnel setup."""
    outer_v6: bool = False
    inner_v6: bool = False
    nat_t: bool = False
    workers: int = 1
    queues: int = 2
    xdp_mode: str = "driver"
    proposal: str = "aes128gcm16"
    # A real NAT between gw-a and gw-b (topology.sh --nat): gw-a has a private outside
    # address and reaches the WAN through NAME-nat, which masquerades with random ports.
    nat: bool = False

    def outer(self, side: str) -> str:
        """The address gw-`side` has on its outside interface (its local address)."""
        if self.nat and side == "a":
            return "fd00:16::1" if self.outer_v6 else "172.16.0.1"
        return self.public(side)

    def public(self, side: str) -> str:
        """The address the other gateway sees for gw-`side` (the NAT's, behind the NAT)."""
        if self.outer_v6:
            return {"a": "2001:db8:ff::1", "b": "2001:db8:ff::2"}[side]
        return {"a": "192.0.2.1", "b": "192.0.2.2"}[side]

    def inside_net(self, side: str) -> str:
        if self.inner_v6:
            return {"a": "2001:db8:a::/64", "b": "2001:db8:b::/64"}[side]
        return {"a": "10.1.0.0/24", "b": "10.2.0.0/24"}[side]

    def client(self, side: str) -> str:
        if self.inner_v6:
            return {"a": "2001:db8:a::10", "b": "2001:db8:b::20"}[side]
        return {"a": "10.1.0.10", "b": "10.2.0.20"}[side]


def sh(*args: str, check: bool = True, capture: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, text=True, timeout=timeout,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.STDOUT if capture else None)


def ns_exec(ns: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *args, **kw)


def gateway_cores(side: str, workers: int, cpus: list[int] | None = None) -> list[int]:
    """The cores gw-`side`'s workers are pinned to: gw-a from the first allowed CPU up, gw-b
    from the middle, so the two gateways' workers (both on one machine here) do not stack on
    one core (with 1 worker each on 2 cores: a on the first, b on the second)."""
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else cpus
    start = 0 if side == "a" else len(cpus) // 2
    return [cpus[(start + i) % len(cpus)] for i in range(max(workers, 1))]


def sa_file(case: Case, side: str) -> str:
    """The SA/policy TOML for gateway `side` ('a' or 'b')."""
    other = "b" if side == "a" else "a"
    out_name, in_name = (f"{side}-to-{other}", f"{other}-to-{side}")
    out_spi, in_spi = (SPI_AB, SPI_BA) if side == "a" else (SPI_BA, SPI_AB)
    out_key, in_key = (KEY_AB, KEY_BA) if side == "a" else (KEY_BA, KEY_AB)
    local, remote = case.outer(side), case.public(other)
    lts, rts = case.inside_net(side), case.inside_net(other)
    common = f'''mode = "tunnel"
local = "{local}"
remote = "{remote}"
nat_t = {"true" if case.nat_t else "false"}
local_ts = ["{lts}"]
remote_ts = ["{rts}"]
'''
    return f'''# Manually keyed SAs for gateway {side} (test/demo keys only)
[[sa]]
name = "{out_name}"
direction = "out"
spi = {out_spi:#x}
proposal = "{case.proposal}"
enc_key = "{out_key.hex()}"
{common}
[[sa]]
name = "{in_name}"
direction = "in"
spi = {in_spi:#x}
proposal = "{case.proposal}"
enc_key = "{in_key.hex()}"
{common}
[[policy]]
src = "{lts}"
dst = "{rts}"
action = "protect"
sa = "{out_name}"
'''


# Lifetime settings with swanctl's names (swanctl.conf(5)): the IKE SA's, and the Child SA's
# (given to iked_conf/swanctl_conf as child_<name>).
IKE_LIFETIME_KEYS = ("rekey_time", "reauth_time", "over_time", "rand_time")
CHILD_LIFETIME_KEYS = ("rekey_time", "life_time", "rand_time", "rekey_bytes", "life_bytes", "rand_bytes",
                       "rekey_packets", "life_packets", "rand_packets")


def _toml_value(v) -> str:
    """An iked TOML value: integers as they are (seconds, bytes, packets), anything else a
    swanctl string ("10s", "2m", "1h", "20k")."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else f'"{v}"'


def _lifetimes(keys: tuple[str, ...], given: dict, fmt) -> str:
    """One line per setting that was given (None: not written, the daemon's default)."""
    return "".join(fmt(k, given[k]) + "\n" for k in keys if given.get(k) is not None)


def _esp_list(esp: str | list[str]) -> list[str]:
    return [esp] if isinstance(esp, str) else list(esp)


@dataclass
class Auth:
    """How the two ends of a connection authenticate, for `iked_conf` and `swanctl_conf`
    (the same field names in both: swanctl's). The default is the PSK of earlier issues with
    the ids gw-<side>.example. With certificates: `Auth.pubkey(own, peer_id)`.

    `certs` are file names in the config's x509/ directory, `cacerts` in x509ca/ (None: every
    trust anchor there), `key_files` (iked only) in private/ (None: every key there is loaded
    and the one matching the certificate used). `revocation` is swanctl's remote.revocation
    (strongSwan only; its default is "relaxed": a CRL that is there is checked)."""
    local_auth: str = "psk"
    remote_auth: str = "psk"
    local_id: str | None = None
    remote_id: str | None = None
    certs: list[str] | None = None
    cacerts: list[str] | None = None
    send_cert: str | None = None
    send_certreq: bool | None = None
    clock_skew: str | None = None
    fragmentation: str | None = None
    fragment_size: int | None = None
    key_files: list[str] | None = None
    revocation: str | None = None

    @classmethod
    def pubkey(cls, own: "Cert", peer_id: str, local_id: str | None = None, **kw) -> "Auth":
        """Certificates both ways: ours is `own` (its DN as our id unless `local_id`), the
        peer must prove `peer_id` with a certificate under our anchors."""
        kw.setdefault("cacerts", None)
        return cls(local_auth="pubkey", remote_auth="pubkey", local_id=local_id or own.dn, remote_id=peer_id,
                   certs=[own.cert.name], **kw)


def iked_conf(case: Case, side: str, psk: str = "an e2e test pre-shared key",
              ike: str | list[str] = "aes128gcm16-prfsha256-x25519", dpd_delay: str | None = None,
              dpd_timeout: str | None = None, dpd_action: str | None = None,
              esp_proposals: str | list[str] | None = None, start_action: str | None = None,
              auth: Auth | None = None, **lifetimes) -> str:
    """iked's configuration for gateway `side`: a initiates, b responds. `dpd_delay` and
    `dpd_timeout` (connection) and `dpd_action` (child) are written only when given, in
    swanctl's syntax ("2s", "clear").

    Lifetimes, also written only when given (ints as numbers, else swanctl strings): the IKE
    SA's `rekey_time`, `reauth_time`, `over_time`, `rand_time`; the Child SA's as
    `child_rekey_time`, `child_life_time`, `child_rand_time`, `child_rekey_bytes`,
    `child_life_bytes`, `child_rand_bytes`, `child_rekey_packets`, `child_life_packets`,
    `child_rand_packets`. `esp_proposals` (one string or a list, strongSwan syntax such as
    "aes128gcm16-x25519") replaces the case's proposal; `start_action` replaces the default
    (gw-a "start", gw-b "none"). `ike` may be a list of IKE proposals.

    `auth` (an `Auth`): identities, certificates, fragmentation (INTERFACES13.md's syntax);
    without it, both ends use the PSK with the ids gw-a.example / gw-b.example. The files it
    names are in the swanctl directories beside the config file (`Pki.install`, and
    `Lab.start_iked(..., conf_dir=...)`)."""
    ike_lt = {k: lifetimes.pop(k) for k in IKE_LIFETIME_KEYS if k in lifetimes}
    child_lt = {k: lifetimes.pop(f"child_{k}") for k in CHILD_LIFETIME_KEYS if f"child_{k}" in lifetimes}
    if lifetimes:
        raise TypeError(f"iked_conf: unknown settings {sorted(lifetimes)}")
    other = "b" if side == "a" else "a"
    start = start_action or ("start" if side == "a" else "none")
    dpd = "".join(f'{k} = "{v}"\n' for k, v in (("dpd_delay", dpd_delay), ("dpd_timeout", dpd_timeout)) if v)
    dpd += _lifetimes(IKE_LIFETIME_KEYS, ike_lt, lambda k, v: f"{k} = {_toml_value(v)}")
    child_dpd = f'dpd_action = "{dpd_action}"\n' if dpd_action else ""
    child_dpd += _lifetimes(CHILD_LIFETIME_KEYS, child_lt, lambda k, v: f"{k} = {_toml_value(v)}")
    esp = ", ".join(f'"{e}"' for e in _esp_list(esp_proposals or case.proposal))
    ikes = ", ".join(f'"{e}"' for e in _esp_list(ike))
    a = auth or Auth()
    conn = "".join(f"{k} = {_toml_any(v)}\n" for k, v in (
        ("send_cert", a.send_cert), ("send_certreq", a.send_certreq), ("clock_skew", a.clock_skew),
        ("fragmentation", a.fragmentation), ("fragment_size", a.fragment_size)) if v is not None)
    local_id = a.local_id or f"gw-{side}.example"
    remote_id = a.remote_id or f"gw-{other}.example"
    local = _end_toml(local_id, a.local_auth, certs=a.certs)
    remote = _end_toml(remote_id, a.remote_auth, cacerts=a.cacerts)
    secrets = ""
    if "psk" in (a.local_auth, a.remote_auth):
        secrets = f'''[secrets.psk]
id = [{", ".join(_toml_any(i) for i in sorted((local_id, remote_id)))}]
secret = "{psk}"
'''
    for n, f in enumerate(a.key_files or []):
        secrets += f'\n[secrets.private-{n}]\nfile = {_toml_any(f)}\n'
    return f'''[connections.gw-{other}]
local_addrs = ["{case.outer(side)}"]
remote_addrs = ["{case.public(other)}"]
proposals = [{ikes}]
encap = {"true" if case.nat_t else "false"}
retransmit_ms = 500
{conn}{dpd}
[connections.gw-{other}.local]
{local}
[connections.gw-{other}.remote]
{remote}
[connections.gw-{other}.children.net]
local_ts = ["{case.inside_net(side)}"]
remote_ts = ["{case.inside_net(other)}"]
esp_proposals = [{esp}]
start_action = "{start}"
{child_dpd}
{secrets}'''


def _toml_any(v) -> str:
    """A TOML value: booleans and integers as they are, strings quoted (json's escaping is
    TOML's for the strings used here)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))


def _end_toml(ident: str, auth: str, certs: list[str] | None = None, cacerts: list[str] | None = None) -> str:
    """One end (local or remote) of an iked connection. `auth` "psk" is the default and not
    written (the configuration of earlier issues, unchanged)."""
    out = f"id = {_toml_any(ident)}\n"
    if auth != "psk":
        out += f"auth = {_toml_any(auth)}\n"
    for k, v in (("certs", certs), ("cacerts", cacerts)):
        if v:
            out += f"{k} = [{', '.join(_toml_any(x) for x in v)}]\n"
    return out


def swanctl_conf(case: Case, side: str, psk: str, ike: str, esp: str | list[str], start: bool,
                 dpd_delay: str = "", rekey_time: str | int = 0, child_rekey_time: str | int = 0,
                 auth: Auth | None = None, **lifetimes) -> str:
    """strongSwan's swanctl.conf for gateway `side` (the peer of our gateway). `esp` is its
    esp_proposals (one or a list, e.g. "aes128gcm16-x25519" to require PFS on rekeys).
    Rekeying is off unless `rekey_time` (IKE SA) / `child_rekey_time` are given; the other
    lifetimes (`reauth_time`, `over_time`, `rand_time`; `child_life_time`, `child_rand_time`,
    `child_rekey_bytes`, ... `child_rand_packets`) are written only when given, in swanctl's
    syntax ("15s", "2m"). `auth` (an `Auth`): identities, certificates, fragmentation;
    strongSwan 5.9.8's default local id is its IP address, so the id is always written."""
    ike_lt = {k: lifetimes.pop(k) for k in IKE_LIFETIME_KEYS if k in lifetimes}
    child_lt = {k: lifetimes.pop(f"child_{k}") for k in CHILD_LIFETIME_KEYS if f"child_{k}" in lifetimes}
    if lifetimes:
        raise TypeError(f"swanctl_conf: unknown settings {sorted(lifetimes)}")
    a = auth or Auth()
    ike_lt["rekey_time"] = rekey_time
    child_lt["rekey_time"] = child_rekey_time
    other = "b" if side == "a" else "a"
    dpd = f"\n    dpd_delay = {dpd_delay}" if dpd_delay else ""
    # swanctl.conf wants one setting per line.
    conn_lt = _lifetimes(IKE_LIFETIME_KEYS, ike_lt, lambda k, v: f"    {k} = {v}").rstrip("\n")
    child_lt_s = _lifetimes(CHILD_LIFETIME_KEYS, child_lt, lambda k, v: f"        {k} = {v}").rstrip("\n")
    esp = ",".join(_esp_list(esp))
    local_id = a.local_id or f"gw-{side}.example"
    remote_id = a.remote_id or f"gw-{other}.example"
    conn = "".join(f"\n    {k} = {_swan_value(v)}" for k, v in (
        ("send_cert", a.send_cert), ("send_certreq", a.send_certreq), ("fragmentation", a.fragmentation))
        if v is not None)
    local = "".join(f"\n      {k} = {v}" for k, v in (
        ("certs", ",".join(a.certs or [])),) if v)
    remote = "".join(f"\n      {k} = {v}" for k, v in (
        ("cacerts", ",".join(a.cacerts or [])), ("revocation", a.revocation or "")) if v)
    secrets = ""
    if "psk" in (a.local_auth, a.remote_auth):
        ids = sorted((local_id, remote_id))
        secrets = f"""
  ike-1 {{
    id-1 = {_swan_value(ids[0])}
    id-2 = {_swan_value(ids[1])}
    secret = "{psk}"
  }}"""
    return f"""connections {{
  gw-{other} {{
    version = 2
    local_addrs = {case.outer(side)}
    remote_addrs = {case.public(other)}
    proposals = {ike}
    encap = yes{conn}
{conn_lt}{dpd}
    local {{
      auth = {a.local_auth}
      id = {_swan_value(local_id)}{local}
    }}
    remote {{
      auth = {a.remote_auth}
      id = {_swan_value(remote_id)}{remote}
    }}
    children {{
      net {{
        local_ts = {case.inside_net(side)}
        remote_ts = {case.inside_net(other)}
        esp_proposals = {esp}
{child_lt_s}
        start_action = {"start" if start else "none"}
      }}
    }}
  }}
}}
secrets {{{secrets}
}}
"""


def _swan_value(v) -> str:
    """A swanctl.conf value: yes/no for booleans; a string with a comma or space (a DN) in
    double quotes."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    v = str(v)
    return f'"{v}"' if re.search(r"[\s,=]", v) else v


# revocation: CRLs from x509crl/ are checked (certificate tests); constraints: name and path
# length constraints of CA certificates.
STRONGSWAN_LOAD = ("random nonce openssl aes sha1 sha2 hmac gcm chapoly curve25519 gmp kdf pem pkcs1 x509 "
                   "revocation constraints pubkey kernel-libipsec kernel-netlink socket-default vici")


@dataclass
class Lab:
    """A running topology with (optionally) our dataplane on both gateways."""
    name: str
    case: Case
    dataplane: str
    vpnctl: str = ""
    workdir: pathlib.Path = field(default_factory=lambda: pathlib.Path(tempfile.mkdtemp(prefix="vpnlab-")))
    procs: dict = field(default_factory=dict)

    def ns(self, host: str) -> str:
        return f"{self.name}-{host}"

    def up(self) -> None:
        sh(str(TOPOLOGY), "up", self.name, "--queues", str(self.case.queues),
           *(["--nat"] if self.case.nat else []))

    @property
    def nat_ns(self) -> str:
        """The NAT namespace (only with Case(nat=True))."""
        if not self.case.nat:
            raise RuntimeError("this lab has no NAT: build it with Case(nat=True)")
        return self.ns("nat")

    def nat_bindings(self) -> str:
        """The NAT's conntrack table (`conntrack -L`), one binding per line."""
        r = ns_exec(self.nat_ns, "conntrack", "-L", check=False)
        return "\n".join(l for l in r.stdout.splitlines() if "flow entries" not in l and "conntrack v" not in l)

    def nat_flush(self) -> None:
        """Force new NAT bindings: forget every mapping (`conntrack -F` in the NAT); the next
        datagram from gw-a leaves with a new random source port (RFC 7296 §2.23's case of a
        NAT mapping that changes mid-tunnel)."""
        ns_exec(self.nat_ns, "conntrack", "-F", check=True)

    def down(self, keep: bool = False) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        # The XDP links and maps are pinned (fail-closed across restarts): remove them on
        # purpose, then the lab's bpffs, which releases whatever is left.
        for side in ("a", "b"):
            self.detach(side)
        self.unmount_bpffs()
        sh(str(TOPOLOGY), "down", self.name, check=False)
        self.remove_rings()
        # The work directory (configs, logs, captures) is kept only when the lab goes down
        # on an exception (the failure's evidence; its path is printed), when the caller
        # says so (`keep`: a failure it counted) or on request (VPN_KEEP_LABS=1): a passing
        # run leaves nothing behind in /tmp.
        if keep or sys.exc_info()[0] is not None or os.environ.get("VPN_KEEP_LABS") == "1":
            print(f"lab {self.name}: logs kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def bpffs(self) -> pathlib.Path:
        """The lab's own bpffs, mounted in the host's mount namespace: `ip netns exec`
        remounts /sys, so pins under its /sys/fs/bpf would die with each process."""
        return self.workdir / "bpffs"

    def pin_dir(self, side: str) -> pathlib.Path:
        return self.bpffs / f"gw-{side}"

    def mount_bpffs(self) -> None:
        if not os.path.ismount(self.bpffs):
            self.bpffs.mkdir(parents=True, exist_ok=True)
            sh("mount", "-t", "bpf", "bpf", str(self.bpffs))

    def unmount_bpffs(self) -> None:
        if os.path.ismount(self.bpffs):
            sh("umount", "-l", str(self.bpffs), check=False)
        with contextlib.suppress(OSError):
            self.bpffs.rmdir()

    def detach(self, side: str) -> subprocess.CompletedProcess | None:
        """`dataplane --detach`: remove gw-`side`'s pinned XDP links and maps (the programs
        leave its interfaces). None if it has no pins."""
        if not self.pin_dir(side).exists():
            return None
        gw = "ga" if side == "a" else "gb"
        return ns_exec(self.ns(f"gw-{side}"), self.dataplane, "--detach", "--outside", f"{gw}-out",
                       "--inside", f"{gw}-in", "--pin-dir", str(self.pin_dir(side)), check=False)

    def sa_conf(self, side: str) -> pathlib.Path:
        conf = self.workdir / f"{side}.toml"
        conf.write_text(sa_file(self.case, side))
        return conf

    def ring(self, side: str) -> str:
        """The shared-memory ring name of gateway `side` (unique per lab)."""
        return f"{self.name}-ring-{side}"

    def start_dataplane(self, side: str, extra: list[str] | None = None, ring: bool = False) -> None:
        """Start our dataplane on gw-`side`: SAs from the static file, or (ring=True) from
        whatever controller talks to its shared-memory ring."""
        keys = ["--ring", self.ring(side)] if ring else ["--sa-file", str(self.sa_conf(side))]
        stats = self.workdir / f"{side}.json"
        if stats.exists():
            stats.unlink()
        gw = "ga" if side == "a" else "gb"
        self.mount_bpffs()
        extra = list(extra or [])
        if not any(x == "--cores" or x.startswith("--cores=") for x in extra):
            extra += ["--cores", ",".join(map(str, gateway_cores(side, self.case.workers)))]
        log = open(self.workdir / f"{side}.log", "a")
        cmd = ["ip", "netns", "exec", self.ns(f"gw-{side}"), self.dataplane,
               "--outside", f"{gw}-out", "--inside", f"{gw}-in", *keys, "--pin-dir", str(self.pin_dir(side)),
               "--workers", str(self.case.workers), "--xdp-mode", self.case.xdp_mode,
               "--stats-file", str(stats), "--stats-interval-ms", "200"] + (extra or [])
        self.procs[side] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        # Readiness: the dataplane writes its stats file once it is forwarding.
        deadline = time.time() + 20
        while not stats.exists():
            if self.procs[side].poll() is not None:
                raise RuntimeError(f"dataplane {side} exited: {self.log(side)}")
            if time.time() > deadline:
                raise RuntimeError(f"dataplane {side} not ready: {self.log(side)}")
            time.sleep(0.05)
        if not ring:
            self.wait_next_hop(side)

    def remove_rings(self) -> None:
        for side in ("a", "b"):
            # The ring file and the claim files of its two ends.
            for p in pathlib.Path("/dev/shm").glob(self.ring(side) + "*"):
                p.unlink(missing_ok=True)

    def start_vpnctl(self, side: str, tag: str, *args: str) -> tuple[subprocess.Popen, pathlib.Path]:
        """`vpnctl ring ARGS --ring <gw-side's ring>`, logged to the lab's work dir."""
        log = self.workdir / f"vpnctl-{side}-{tag}.log"
        vpnctl = self.vpnctl or str(pathlib.Path(self.dataplane).with_name("vpnctl"))
        p = subprocess.Popen([vpnctl, "ring", *args, "--ring", self.ring(side)],
                             stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.procs[f"vpnctl-{side}-{tag}"] = p
        return p, log

    def serve(self, side: str, tag: str) -> str:
        """Start a `vpnctl ring serve` controller for gw-`side` keeping its dataplane in step
        with the static file; wait until it reports the dataplane in step; returns its ready
        line (added removed kept)."""
        ready = self.workdir / f"ready-{side}-{tag}"
        p, log = self.start_vpnctl(side, tag, "serve", "--sa-file", str(self.sa_conf(side)),
                                   "--ready-file", str(ready))
        deadline = time.time() + 20
        while not ready.exists():
            if p.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"vpnctl serve {side} not ready: {log.read_text()}")
            time.sleep(0.05)
        return ready.read_text().strip()

    def iked_dir(self, side: str) -> pathlib.Path:
        """A directory for gw-`side`'s iked config with its own swanctl-style x509/, x509ca/,
        private/, x509crl/ beside it (`Pki.install`; `start_iked(..., conf_dir=...)`)."""
        d = self.workdir / f"iked-{side}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def swan_dir(self, side: str) -> pathlib.Path:
        """charon's directory on gw-`side`: its swanctl.conf, strongswan.conf and log, and the
        x509/, x509ca/, private/, x509crl/ that `swanctl --load-all` loads."""
        d = self.workdir / f"strongswan-{side}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def start_iked(self, side: str, tag: str, conf: str, conf_dir: pathlib.Path | None = None,
                   extra: list[str] | None = None) -> tuple[subprocess.Popen, pathlib.Path]:
        """iked on gw-`side`, talking to that gateway's dataplane ring. The config file goes
        into `conf_dir` (default: the work dir), whose x509/ etc. it uses; the log stays
        workdir/iked-SIDE-TAG.log. `extra`: more iked arguments (e.g. --metrics)."""
        path = (conf_dir or self.workdir) / f"iked-{side}-{tag}.toml"
        path.write_text(conf)
        log = self.workdir / f"iked-{side}-{tag}.log"
        iked = str(pathlib.Path(self.dataplane).with_name("iked"))
        ready = self.workdir / f"iked-ready-{side}-{tag}"
        sock = self.workdir / f"iked-{side}.sock"
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(f"gw-{side}"), iked, "--config", str(path),
                              "--ring", self.ring(side), "--ready-file", str(ready), "--control", str(sock),
                              "--nat-keepalive-s", "1", *(extra or [])],
                             stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.procs[f"iked-{side}-{tag}"] = p
        return p, ready

    def vpnctl_iked(self, side: str, *args: str) -> subprocess.CompletedProcess:
        """`vpnctl ARGS` against gw-`side`'s iked control socket."""
        vpnctl = self.vpnctl or str(pathlib.Path(self.dataplane).with_name("vpnctl"))
        return sh(vpnctl, *args, "--socket", str(self.workdir / f"iked-{side}.sock"), check=False)

    def start_charon(self, side: str, swanctl: str, retransmit_timeout: float | None = None,
                     retransmit_tries: int | None = None, options: dict | None = None) -> pathlib.Path:
        """strongSwan's charon (kernel-libipsec) in gw-`side`, configured with `swanctl`;
        returns its log (appended to across restarts). Waits until the connections and the
        credentials in the swanctl directories beside it (`swan_dir`, `Pki.install`) are loaded.
        `retransmit_timeout` (s) and `retransmit_tries` go into its strongswan.conf when given
        (2 and 3: it gives up on an unanswered exchange after ~24 s instead of ~165 s), and so
        does each of `options`, strongswan.conf's charon settings such as `rsa_pss` (True: RSA
        signatures with PSS), `fragment_size` (bytes of an IP datagram) and
        `signature_authentication` (False: the classic AUTH methods 1/9/10/11)."""
        d = self.swan_dir(side)
        settings = [("retransmit_timeout", retransmit_timeout), ("retransmit_tries", retransmit_tries)]
        settings += list((options or {}).items())
        retransmit = "".join(f"  {k} = {_swan_value(v)}\n" for k, v in settings if v is not None)
        run = d / "run"
        run.mkdir(parents=True, exist_ok=True)
        vici = d / "charon.vici"
        log = d / "charon.log"
        (d / "strongswan.conf").write_text(f"""charon {{
  load = {STRONGSWAN_LOAD}
  install_routes = yes
{retransmit}  plugins {{
    vici {{
      socket = unix://{vici}
    }}
  }}
  filelog {{
    log {{
      path = {log}
      flush_line = yes
      time_format = %H:%M:%S
      time_add_ms = yes
      default = 1
      ike = 2
      cfg = 2
    }}
  }}
}}
""")
        (d / "swanctl.conf").write_text(swanctl)
        env = dict(os.environ, STRONGSWAN_CONF=str(d / "strongswan.conf"))
        # charon's pid file path is compiled in (/run): give this one a private /run.
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(f"gw-{side}"), "unshare", "-m", "sh", "-c",
                              f"mount --bind {run} /run && exec /usr/lib/ipsec/charon"],
                             env=env, stdout=open(d / "stdout.log", "w"), stderr=subprocess.STDOUT)
        self.procs[f"charon-{side}"] = p
        uri = f"unix://{vici}"
        deadline = time.time() + 20
        while True:
            r = sh("swanctl", "--stats", "--uri", uri, check=False)
            if r.returncode == 0:
                break
            if p.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"charon did not start: {(d / 'stdout.log').read_text()} {log.read_text() if log.exists() else ''}")
            time.sleep(0.05)
        r = sh("swanctl", "--load-all", "--file", str(d / "swanctl.conf"), "--uri", uri, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"swanctl --load-all: {r.stdout}")
        return log

    def wait_next_hop(self, side: str, timeout: float = 10.0) -> None:
        """Readiness for traffic: the dataplane has resolved the peer gateway's MAC."""
        other = "b" if side == "a" else "a"
        want = f"outside {self.case.public(other)} via"
        s = self.wait_stats(side, lambda s: any(h.startswith(want) for h in s.get("next_hops", [])), timeout)
        if not any(h.startswith(want) for h in s.get("next_hops", [])):
            raise RuntimeError(f"dataplane {side} did not resolve {self.case.public(other)}: {s.get('next_hops')}")

    def log(self, side: str) -> str:
        p = self.workdir / f"{side}.log"
        return p.read_text() if p.exists() else ""

    def stats(self, side: str) -> dict:
        for _ in range(50):
            try:
                return json.loads((self.workdir / f"{side}.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.05)
        raise RuntimeError(f"no stats from dataplane {side}")

    def wait_stats(self, side: str, pred, timeout: float = 5.0) -> dict:
        deadline = time.time() + timeout
        while True:
            s = self.stats(side)
            if pred(s) or time.time() > deadline:
                return s
            time.sleep(0.1)

    def stop_dataplane(self, side: str, sig=signal.SIGINT) -> int:
        p = self.procs[side]
        p.send_signal(sig)
        return p.wait(timeout=10)

    def ping(self, src: str, dst: str, count: int = 5, size: int = 56, df: bool = False,
             interval: float = 0.2) -> subprocess.CompletedProcess:
        args = ["ping", "-c", str(count), "-i", str(interval), "-W", "1", "-s", str(size)]
        if df:
            args += ["-M", "do"]
        return ns_exec(self.ns(src), *args, dst, check=False)

    def warm_up(self) -> None:
        """The first packets of a flow resolve neighbours; retry until the path answers."""
        for _ in range(20):
            r = self.ping("client-a", self.case.client("b"), count=1)
            if r.returncode == 0:
                return
        raise RuntimeError("no path client-a -> client-b:\n" + self.log("a") + self.log("b"))

    def iperf(self, seconds: float = 2, udp_rate: str | None = None, parallel: int = 1,
              length: int | None = None, port: int = 5201, bitrate: str | None = None) -> dict:
        """iperf3 client-a -> client-b: TCP (paced to `bitrate` if given, e.g. "200M"), or UDP
        at `udp_rate`; returns iperf3's JSON."""
        srv = subprocess.Popen(["ip", "netns", "exec", self.ns("client-b"), "iperf3", "-s", "-1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # Readiness: the server's port is listening.
            for _ in range(100):
                ss = ns_exec(self.ns("client-b"), "ss", "-Hltn", f"sport = :{port}", check=False).stdout
                if str(port) in ss:
                    break
                time.sleep(0.02)
            args = ["iperf3", "-c", self.case.client("b"), "-p", str(port), "-t", str(seconds), "-J",
                    "-P", str(parallel)]
            if udp_rate:
                args += ["-u", "-b", udp_rate]
            elif bitrate:
                args += ["-b", bitrate]
            if length:
                args += ["-l", str(length)]
            r = ns_exec(self.ns("client-a"), *args, check=False, timeout=seconds + 30)
            return json.loads(r.stdout)
        finally:
            if srv.poll() is None:
                srv.kill()
            srv.wait()

    def xdp_attached(self, side: str, which: str = "out") -> bool:
        gw = "ga" if side == "a" else "gb"
        out = ns_exec(self.ns(f"gw-{side}"), "ip", "-d", "link", "show", f"{gw}-{which}").stdout
        return bool(re.search(r"\bprog/xdp\b|\bxdp\b", out))

    @contextlib.contextmanager
    def wan_capture(self, tag: str = "wan"):
        """Capture both gateways' WAN interfaces for the duration of the block; yields a
        `WanCapture` whose `clear_text()` (after the block) lists every packet between the
        two protected networks that crossed the WAN in clear.

            with lab.wan_capture() as cap:
                ...  # kill things, ping
            leaks = cap.clear_text()
        """
        cap = WanCapture(self, tag)
        cap.start()
        try:
            yield cap
        finally:
            cap.stop()


class WanCapture:
    """tcpdump on ga-out (gw-a's namespace) and gb-out (gw-b's). What the kernel forwards
    or receives on either WAN interface is seen there; ESP that our XDP programs steer to
    AF_XDP sockets, or that AF_XDP sends, may not be (tcpdump hooks the kernel's path), which
    is fine for this check: a clear-text leak is always the kernel's doing."""

    def __init__(self, lab: Lab, tag: str):
        self.lab = lab
        self.files = {side: lab.workdir / f"{tag}-gw-{side}.pcap" for side in ("a", "b")}
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        for side, path in self.files.items():
            gw = "ga" if side == "a" else "gb"
            p = subprocess.Popen(["ip", "netns", "exec", self.lab.ns(f"gw-{side}"), "tcpdump", "-n", "-i", f"{gw}-out",
                                  "-U", "--immediate-mode", "-w", str(path)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            self.procs[side] = p
            # Readiness: tcpdump says it is listening.
            line = p.stderr.readline() if p.stderr else ""
            if "listening" not in line:
                raise RuntimeError(f"tcpdump on {gw}-out did not start: {line.strip()}")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def packets(self, side: str, bpf: str = "") -> list:
        """The packets captured on `side`'s WAN, parsed by scapy; with `bpf`, only those the
        filter selects (tcpdump filters first: scapy parses a few thousand packets a second,
        and a flood's capture holds tens of thousands)."""
        from scapy.all import rdpcap  # noqa: PLC0415

        path = self.files[side]
        if not path.exists() or path.stat().st_size <= 24:
            return []
        if not bpf:
            return list(rdpcap(str(path)))
        selected = path.with_name(f"{path.stem}-selected.pcap")
        r = subprocess.run(["tcpdump", "-n", "-r", str(path), "-w", str(selected), bpf],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"tcpdump -r {path.name} '{bpf}': {r.stderr.strip()}")
        try:
            return list(rdpcap(str(selected))) if selected.stat().st_size > 24 else []
        finally:
            selected.unlink(missing_ok=True)

    def clear_text(self) -> list[str]:
        """Every IP packet whose source is in one protected network and destination in the
        other, and that is not ESP (IP protocol 50) or ESP-in-UDP (port 4500): one line each,
        with the interface it was seen on."""
        from scapy.all import IP, UDP, IPv6  # noqa: PLC0415

        c = self.lab.case
        nets = [ipaddress.ip_network(c.inside_net(s)) for s in ("a", "b")]
        # tcpdump selects the packets between the two networks (its `net` reads the first
        # IPv4 or IPv6 header, as getlayer below does); scapy then judges each one.
        na, nb = nets
        between = f"(src net {na} and dst net {nb}) or (src net {nb} and dst net {na})"

        def inside(addr: str, net) -> bool:
            try:
                return ipaddress.ip_address(addr) in net
            except ValueError:
                return False

        leaks = []
        for side in ("a", "b"):
            for p in self.packets(side, between):
                ip = p.getlayer(IP) or p.getlayer(IPv6)
                if ip is None:
                    continue
                crosses = any(inside(ip.src, n1) and inside(ip.dst, n2) for n1, n2 in (nets, nets[::-1]))
                if not crosses:
                    continue
                proto = ip.proto if ip.version == 4 else ip.nh
                udp = p.getlayer(UDP)
                if proto == 50 or (udp is not None and 4500 in (udp.sport, udp.dport)):
                    continue
                leaks.append(f"gw-{side} WAN: {p.summary()}")
        return leaks

    def count(self, pred, bpf: str = "") -> int:
        """How many captured packets (both interfaces) satisfy `pred(packet)`; `bpf` selects
        the candidates first (see `packets`)."""
        return sum(1 for side in ("a", "b") for p in self.packets(side, bpf) if pred(p))


def own_pid(p: subprocess.Popen, name: str, timeout: float = 5.0) -> int:
    """The pid of the program `name` started by `p` (`ip netns exec NS name ...`): `p.pid`
    itself when `ip` exec'd it, else its child of that name (an `ip` that forks)."""
    deadline = time.time() + timeout
    while True:
        with contextlib.suppress(OSError):
            if pathlib.Path(f"/proc/{p.pid}/comm").read_text().strip() == name[:15]:
                return p.pid
        for task in pathlib.Path(f"/proc/{p.pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                for child in task.read_text().split():
                    with contextlib.suppress(OSError):
                        if pathlib.Path(f"/proc/{child}/comm").read_text().strip() == name[:15]:
                            return int(child)
        if p.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"no process {name} under pid {p.pid}")
        time.sleep(0.02)


def kill9(p: subprocess.Popen, name: str) -> int:
    """SIGKILL the program `name` started by `p` (its own pid, see `own_pid`); reap `p`.
    Returns the pid killed."""
    pid = own_pid(p, name)
    os.kill(pid, signal.SIGKILL)
    p.wait(timeout=10)
    return pid


def vm_rss_kb(pid: int, field: str = "VmRSS") -> int:
    """VmRSS (or another kB field of /proc/PID/status: RssAnon, RssShmem) of `pid` in kB (0
    once it is gone)."""
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def summary_bps(j: dict) -> float:
    end = j.get("end", {})
    s = end.get("sum_received") or end.get("sum") or {}
    return float(s.get("bits_per_second", 0.0))


def unique_name(tag: str) -> str:
    return f"v{os.getpid() % 100000}{tag}"[:12]


# --- certificates made at run time with strongSwan's pki ----------------------------------------

# pki's stderr on a machine without a TPM, on every run: not an error.
PKI_NOISE = ("TPM 2.0", "plugin 'tpm'")

# Key kinds: pki --gen --type / --size.
KEY_KINDS = {
    "rsa3072": ("rsa", "3072"),
    "rsa4096": ("rsa", "4096"),
    "p256": ("ecdsa", "256"),
    "p384": ("ecdsa", "384"),
    "ed25519": ("ed25519", None),
}

# End-entity variants: the key kind, the CA that issues it, and anything special.
#   rsa      RSA-3072, signed by the (RSA-3072) intermediate with RSA-PSS
#   p256 / p384 / ed25519   signed by the intermediate (PKCS#1 v1.5)
#   rsa4096  RSA-4096 under the RSA-4096 root and intermediate (big CERT payloads: fragmentation)
#   expired (2020-2021), notyet (2040-2041), revoked (in the intermediate's CRL): ECDSA P-256
EE_VARIANTS = {
    "rsa": ("rsa3072", "im"),
    "p256": ("p256", "im"),
    "p384": ("p384", "im"),
    "ed25519": ("ed25519", "im"),
    "rsa4096": ("rsa4096", "im4096"),
    "expired": ("p256", "im"),
    "notyet": ("p256", "im"),
    "revoked": ("p256", "im"),
}
# Fixed serials for the revoked certificates, so a refusal naming the serial can be checked.
REVOKED_SERIALS = {"a": "7e5701", "b": "7e5702"}


@dataclass
class Cert:
    """An end-entity certificate of gateway `side` and its key (files in the Pki's directory)."""
    name: str
    side: str
    dn: str
    fqdn: str
    ip: str
    cert: pathlib.Path
    key: pathlib.Path
    serial: str | None = None


class Pki:
    """A test PKI made at run time with strongSwan's `pki` in `directory` (each case its own:
    RSA-4096 keys take seconds, so only what a case asks for is made, once):

        Root CA (ECDSA P-384) -> Intermediate CA (RSA-3072, pathlen 0) -> gw-a / gw-b EE certs
        Root CA 4096 (RSA-4096) -> Intermediate CA 4096 (RSA-4096) -> gw-a / gw-b RSA-4096 EEs

    `ee(side, variant)` (EE_VARIANTS) gives gw-`side`'s certificate: DN
    "C=CH, O=example, OU=<variant>, CN=gw-<side>", SANs gw-<side>.example and the gateway's
    address. `crl()` is the intermediate's CRL revoking both gateways' "revoked" certs.
    `install(dir, own, cas, crl)` lays them out the way swanctl (and iked) read them."""

    CAS = {
        # name: (key kind, DN, issuer or None for self-signed)
        "root": ("p384", "C=CH, O=example, CN=Root CA", None),
        "im": ("rsa3072", "C=CH, O=example, CN=Intermediate CA", "root"),
        "root4096": ("rsa4096", "C=CH, O=example, CN=Root CA 4096", None),
        "im4096": ("rsa4096", "C=CH, O=example, CN=Intermediate CA 4096", "root4096"),
    }

    def __init__(self, directory: pathlib.Path, addrs: dict[str, str]):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.addrs = addrs
        self.certs: dict[str, Cert] = {}

    @staticmethod
    def run(*args: str, stdin: bytes | None = None) -> bytes:
        """`pki ARGS`: its stdout; an error names the command and pki's own message."""
        r = subprocess.run(["pki", *args], input=stdin, capture_output=True, timeout=120)
        err = "\n".join(ln for ln in r.stderr.decode(errors="replace").splitlines()
                        if not any(n in ln for n in PKI_NOISE))
        if r.returncode != 0 or not r.stdout:
            raise RuntimeError(f"pki {' '.join(args[:2])}: exit {r.returncode}: {err.strip()}")
        return r.stdout

    def path(self, name: str, what: str) -> pathlib.Path:
        return self.dir / f"{name}{what}.pem"

    @staticmethod
    def _write(path: pathlib.Path, data: bytes, mode: int = 0o644) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, mode)

    def keys(self, wanted: list[tuple[str, str]]) -> None:
        """Make the keys (name, kind) that do not exist yet, in parallel (RSA-4096 ~2-5 s each)."""
        procs = []
        for name, kind in wanted:
            path = self.path(name, "Key")
            if path.exists():
                continue
            t, size = KEY_KINDS[kind]
            args = ["pki", "--gen", "--type", t] + (["--size", size] if size else []) + ["--outform", "pem"]
            procs.append((path, args, subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
        for path, args, p in procs:
            out, err = p.communicate(timeout=120)
            if p.returncode != 0 or not out:
                msg = "\n".join(ln for ln in err.decode(errors="replace").splitlines()
                                if not any(n in ln for n in PKI_NOISE))
                raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}: {msg.strip()}")
            self._write(path, out, 0o600)

    def ca(self, name: str) -> pathlib.Path:
        """The CA certificate `name` (CAS), made with its issuers if needed."""
        cert = self.path(name, "Cert")
        if cert.exists():
            return cert
        kind, dn, issuer = self.CAS[name]
        chain = [name] + ([issuer] if issuer else [])
        self.keys([(n, self.CAS[n][0]) for n in chain if not self.path(n, "Cert").exists()])
        key = self.path(name, "Key")
        if issuer is None:
            out = self.run("--self", "--ca", "--lifetime", "3650", "--in", str(key), "--dn", dn, "--outform", "pem")
        else:
            icert = self.ca(issuer)
            pub = self.run("--pub", "--in", str(key))
            out = self.run("--issue", "--cacert", str(icert), "--cakey", str(self.path(issuer, "Key")), "--ca",
                           "--pathlen", "0", "--lifetime", "3000", "--dn", dn, "--outform", "pem", stdin=pub)
        self._write(cert, out)
        return cert

    def ee(self, side: str, variant: str) -> Cert:
        """gw-`side`'s certificate of `variant` (EE_VARIANTS), made if needed."""
        name = f"gw-{side}-{variant}"
        if name in self.certs:
            return self.certs[name]
        kind, issuer = EE_VARIANTS[variant]
        fqdn, ip = f"gw-{side}.example", self.addrs[side]
        dn = f"C=CH, O=example, OU={variant}, CN=gw-{side}"
        c = Cert(name=name, side=side, dn=dn, fqdn=fqdn, ip=ip, cert=self.path(name, "Cert"), key=self.path(name, "Key"),
                 serial=REVOKED_SERIALS[side] if variant == "revoked" else None)
        if not c.cert.exists():
            icert = self.ca(issuer)
            self.keys([(name, kind)])
            pub = self.run("--pub", "--in", str(c.key))
            args = ["--issue", "--cacert", str(icert), "--cakey", str(self.path(issuer, "Key")), "--dn", dn,
                    "--san", fqdn, "--san", ip, "--flag", "serverAuth", "--flag", "clientAuth", "--outform", "pem"]
            if variant == "rsa":
                args += ["--rsa-padding", "pss"]
            if variant == "expired":
                args += ["--not-before", "01.01.20 00:00:00", "--not-after", "01.01.21 00:00:00"]
            elif variant == "notyet":
                args += ["--not-before", "01.01.40 00:00:00", "--not-after", "01.01.41 00:00:00"]
            else:
                args += ["--lifetime", "1000"]
            if c.serial:
                args += ["--serial", c.serial]
            self._write(c.cert, self.run(*args, stdin=pub))
        self.certs[name] = c
        return c

    def crl(self) -> pathlib.Path:
        """The intermediate's CRL, revoking gw-a's and gw-b's "revoked" certificates."""
        path = self.dir / "im.crl.pem"
        if path.exists():
            return path
        revoked = [self.ee(s, "revoked") for s in "ab"]
        args = ["--signcrl", "--cacert", str(self.ca("im")), "--cakey", str(self.path("im", "Key")),
                "--lifetime", "30", "--outform", "pem"]
        for c in revoked:
            # A reason applies to the --cert after it.
            args += ["--reason", "key-compromise", "--cert", str(c.cert)]
        self._write(path, self.run(*args))
        return path

    def install(self, directory: pathlib.Path, own: list[Cert], cas: list[str], crl: bool = False) -> None:
        """Lay out swanctl's directories in `directory` (replacing what was there): x509/ our
        certificates, private/ their keys (0600), x509ca/ the CA certificates `cas` (names of
        CAS: self-signed ones are trust anchors, the others intermediates we send and accept),
        x509crl/ the intermediate's CRL when `crl`."""
        for sub in ("x509", "x509ca", "private", "x509crl"):
            shutil.rmtree(directory / sub, ignore_errors=True)
            (directory / sub).mkdir(parents=True)
        for c in own:
            shutil.copyfile(c.cert, directory / "x509" / c.cert.name)
            self._write(directory / "private" / c.key.name, c.key.read_bytes(), 0o600)
        for name in cas:
            shutil.copyfile(self.ca(name), directory / "x509ca" / f"{name}Cert.pem")
        if crl:
            shutil.copyfile(self.crl(), directory / "x509crl" / "im.crl.pem")
