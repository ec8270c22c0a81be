#!/usr/bin/env python3
"""Certificates end to end (issue 13): IKEv2 with X.509 certificates against strongSwan 5.9.8.

    e2e_certs.py --dataplane PATH [--vpnctl PATH] CASE

CASE is one of the keys of SCENARIOS below. Each builds its own topology (unique namespace
names) and its own PKI with strongSwan's `pki` (vpnlab.Pki: root ECDSA P-384 -> intermediate
RSA-3072 -> gateway certificates; an RSA-4096 chain for fragmentation; expired, not-yet-valid
and revoked certificates and the intermediate's CRL), runs its phases, prints PASS/FAIL lines
(e2e.py's check()) and always tears everything down. Exit status 0 only if every check passed.

Our iked + dataplane run on gw-a, with the swanctl-style directories (x509/, x509ca/, private/,
x509crl/) beside its config file in workdir/iked-a/; charon (kernel-libipsec) runs on gw-b with
the same layout beside its swanctl.conf in workdir/strongswan-b/. Each phase installs the
certificates it needs into both, restarts both, and checks its own part of charon's log (the
log is appended to across restarts).

  certs-pki        charon <-> charon with the generated PKI (no iked): the generator and the
                   layout are right, and the strongSwan log lines the other cases assert on are
                   the ones 5.9.8 writes (revoked, expired, an id its certificate lacks,
                   fragments).
  certs-strongswan each key type (RSA-3072 with PSS, ECDSA P-256, P-384, Ed25519) in both roles,
                   ids as DN, FQDN and IP address; CERTREQ honoured: charon receives our
                   request, sends its certificate and intermediate, receives ours; ping crosses.
  certs-classic    charon with signature_authentication = no: the classic AUTH methods (RSA 1,
                   ECDSA 9 and 10), the roles alternating.
  certs-refused    revoked, expired and not-yet-valid certificates, on each side: ours refuses
                   charon's (the serial, "check the clocks"), charon refuses ours ("certificate
                   was revoked on", "certificate invalid (valid from").
  certs-id         charon authenticates as an id its certificate does not hold: we refuse it,
                   in both roles; charon signs where we expect a pre-shared key: our refusal
                   says so.
  certs-frag       an RSA-4096 chain with fragment_size 576 on both sides: IKE_AUTH is split
                   (RFC 7383), both ways, in both roles; charon's split/reassembled lines, the
                   SKF payloads and their sizes on the wire, our log.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys
import time

import e2e
import e2e_faults
import vpnlab
from e2e import check
from e2e_faults import iked_log, plain
from vpnlab import Auth, Case, Cert, Lab, Pki

IKE = "aes256gcm16-prfsha384-x25519"
ESP = "aes256gcm16"
PSK = "not used by the certificate phases"
ROOT_DN = "C=CH, O=example, CN=Root CA"
IM_DN = "C=CH, O=example, CN=Intermediate CA"
KEY_TYPES = ("rsa", "p256", "p384", "ed25519")
# How each key type's phase names the gateways (all three ID kinds are covered).
ID_STYLE = {"rsa": "dn", "p256": "fqdn", "p384": "ip", "ed25519": "dn"}
# charon 5.9.8's name of the signature scheme it verified ("authentication of '...' with X
# successful"; RFC 7427 method 14): RSA-PSS because charon runs with rsa_pss = yes.
# (regexes: the PSS hash and salt are the signer's choice, e.g. RSA_EMSA_PSS_SHA2_256_SALT_32).
SCHEME = {"rsa": r"RSA_EMSA_PSS_SHA2_(?:256|384|512)_SALT_\d+", "p256": "ECDSA_WITH_SHA256_DER",
          "p384": "ECDSA_WITH_SHA384_DER", "ed25519": "ED25519"}
# charon's names of the classic AUTH methods (RFC 7296 §3.8 method 1, RFC 4754 methods 9/10),
# used when the peer sent no SIGNATURE_HASH_ALGORITHMS (charon's signature_authentication = no).
CLASSIC = {"rsa": "RSA signature", "p256": "ECDSA-256 signature", "p384": "ECDSA-384 signature"}
# strongswan.conf for charon in every phase: RSA signatures with PSS (RFC 7427 method 14; the
# default would be PKCS#1 v1.5).
SWAN_OPTS = {"rsa_pss": True}
FRAG_SIZE = 576


# --- helpers ------------------------------------------------------------------------------------

class Tail:
    """What a log file gained since `mark()` (charon appends to its log across restarts)."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.off = 0
        self.mark()

    def mark(self) -> None:
        self.off = self.path.stat().st_size if self.path.exists() else 0

    def text(self) -> str:
        if not self.path.exists():
            return ""
        with open(self.path, "rb") as f:
            f.seek(self.off)
            return plain(f.read().decode(errors="replace"))

    def line(self, pattern: str) -> str:
        """The first new line matching `pattern` (a regex), or ""."""
        return next((ln.strip() for ln in self.text().splitlines() if re.search(pattern, ln)), "")

    def wait(self, pattern: str, timeout: float = 10, procs: tuple = ()) -> str:
        """Readiness: the first new line matching `pattern`; "" after `timeout` s or once one
        of `procs` exited."""
        deadline = time.time() + timeout
        while True:
            ln = self.line(pattern)
            if ln or time.time() > deadline or any(p.poll() is not None for p in procs):
                return ln
            time.sleep(0.1)


def ident(c: Cert, style: str) -> str:
    """The id gateway certificate `c` proves: its DN, or a name or address in its SAN."""
    return {"dn": c.dn, "fqdn": c.fqdn, "ip": c.ip}[style]


def wait_iked(lab: Lab, tag: str, p: subprocess.Popen, timeout: float = 10) -> None:
    """Readiness of gw-a's iked: its control socket answers `vpnctl list`; if it exits or does
    not answer, the error carries this iked's log (a refused configuration says why)."""
    deadline = time.time() + timeout
    while lab.vpnctl_iked("a", "list").returncode != 0:
        if p.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"iked-a-{tag} does not answer on its control socket: "
                               + iked_log(lab, "a", tag)[-1500:].strip())
        time.sleep(0.05)


def charon_log(lab: Lab, side: str) -> pathlib.Path:
    return lab.swan_dir(side) / "charon.log"


def stop_charon(lab: Lab, side: str) -> None:
    p = lab.procs.get(f"charon-{side}")
    if p is not None and p.poll() is None:
        p.kill()
        p.wait(timeout=10)


def stop_iked(p: subprocess.Popen | None, lab: Lab | None = None) -> None:
    """Stop an iked of gw-a. With `lab`: `vpnctl down` first, so its SAs leave the dataplane
    (an iked stopped with SIGTERM leaves them forwarding, and the next iked on that dataplane
    takes them over and initiates to renegotiate them, whatever its start_action); then wait
    until the dataplane holds no SA."""
    if p is not None and p.poll() is None and lab is not None:
        lab.vpnctl_iked("a", "down", e2e_faults.CONN)
        lab.wait_stats("a", lambda s: s["sa_count"] == 0, timeout=5)
    if p is not None and p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def list_certs(lab: Lab, side: str) -> str:
    vici = lab.swan_dir(side) / "charon.vici"
    return vpnlab.sh("swanctl", "--list-certs", "--uri", f"unix://{vici}", check=False).stdout


def ping_through(lab: Lab, what: str) -> None:
    r = None
    for _ in range(10):
        r = lab.ping("client-a", lab.case.client("b"), count=3, interval=0.1)
        if "3 received" in r.stdout:
            break
    check(r is not None and "3 received" in r.stdout, f"{what}: ping crosses the tunnel",
          r.stdout.strip().splitlines()[-2] if r and r.stdout.strip() else "")


def our_lines(lab: Lab, tag: str, pattern: str, side: str = "a") -> list[str]:
    return [ln.strip()[-300:] for ln in iked_log(lab, side, tag).splitlines() if re.search(pattern, ln, re.I)]


def show(title: str, lines: list[str], n: int = 6) -> None:
    if lines:
        print(f"  {title}:")
        for ln in lines[:n]:
            print(f"    {ln[-260:]}")


class SwanPhase:
    """One tunnel attempt between our iked (gw-a, certificate `ours`) and charon (gw-b,
    certificate `theirs`): installs the certificates (CAs `cas`, the CRL if `crl`), writes both
    configurations, starts the responder first, then the initiator. `our_auth` / `swan_auth`
    replace the default Auth.pubkey (DN ids unless `style`)."""

    def __init__(self, lab: Lab, pki: Pki, tag: str, ours: Cert, theirs: Cert, we_init: bool,
                 style: str = "dn", cas: tuple[str, ...] = ("root", "im"), crl: bool = True,
                 our_auth: Auth | None = None, swan_auth: Auth | None = None, swan_opts: dict | None = None):
        self.lab, self.tag, self.we_init = lab, tag, we_init
        self.ours, self.theirs = ours, theirs
        anchor = f"{cas[0]}Cert.pem"
        pki.install(lab.iked_dir("a"), [ours], list(cas), crl=crl)
        pki.install(lab.swan_dir("b"), [theirs], list(cas), crl=crl)
        self.our_auth = our_auth or Auth.pubkey(ours, ident(theirs, style), local_id=ident(ours, style),
                                                cacerts=[anchor])
        self.swan_auth = swan_auth or Auth.pubkey(theirs, ident(ours, style), local_id=ident(theirs, style),
                                                  cacerts=[anchor])
        self.swan_opts = dict(SWAN_OPTS, **(swan_opts or {}))
        self.clog = Tail(charon_log(lab, "b"))
        self.iked: subprocess.Popen | None = None
        self.role = "we initiate" if we_init else "charon initiates"

    def start(self) -> None:
        lab = self.lab
        conf = vpnlab.iked_conf(lab.case, "a", psk=PSK, ike=IKE, esp_proposals=ESP,
                                start_action="start" if self.we_init else "none", auth=self.our_auth)
        swan = vpnlab.swanctl_conf(lab.case, "b", PSK, IKE, ESP, start=not self.we_init, auth=self.swan_auth)
        if self.we_init:
            lab.start_charon("b", swan, retransmit_timeout=2, retransmit_tries=3, options=self.swan_opts)
            self.iked, _ = lab.start_iked("a", self.tag, conf, conf_dir=lab.iked_dir("a"))
            wait_iked(lab, self.tag, self.iked)
        else:
            self.iked, _ = lab.start_iked("a", self.tag, conf, conf_dir=lab.iked_dir("a"))
            wait_iked(lab, self.tag, self.iked)
            lab.start_charon("b", swan, retransmit_timeout=2, retransmit_tries=3, options=self.swan_opts)

    def up(self, timeout: float = 15) -> bool:
        s = self.lab.wait_stats("a", lambda s: s["sa_count"] == 2, timeout=timeout)
        return s["sa_count"] == 2

    def procs(self) -> tuple:
        return tuple(p for p in (self.iked, self.lab.procs.get("charon-b")) if p is not None)

    def stop(self) -> None:
        stop_iked(self.iked, self.lab)
        stop_charon(self.lab, "b")
        s = self.lab.wait_stats("a", lambda s: s["sa_count"] == 0, timeout=5)
        if s["sa_count"]:
            print(f"  after {self.tag}: our dataplane still holds {s['sa_count']} SAs", flush=True)

    def ours_log(self) -> str:
        return iked_log(self.lab, "a", self.tag)

    def dump(self) -> None:
        """On a failure: the ends of both logs."""
        print(f"--- iked-a-{self.tag}.log (end) ---\n{self.ours_log()[-2500:]}")
        print(f"--- charon.log, this phase (end) ---\n{self.clog.text()[-3500:]}")


def phase(lab: Lab, what: str, fn) -> None:
    """Run one phase; an exception fails it (with the reason) and the case goes on."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        check(False, f"{what}: ran to the end", repr(e)[-600:])


# --- certs-strongswan ---------------------------------------------------------------------------

def establish(lab: Lab, ph: SwanPhase, what: str, scheme: str, first: bool = False) -> None:
    """A phase that must succeed: the tunnel comes up and carries ping; CERTREQ honoured both
    ways (charon's log: it received our cert request for the root CA, sent its end-entity and
    intermediate certificates, received ours and our intermediate) and charon verified our AUTH
    with `scheme` (a regex of its name for the signature scheme or classic method)."""
    try:
        ph.start()
        if first:
            listing = list_certs(lab, "b")
            check(ph.theirs.dn in listing and ROOT_DN in listing and IM_DN in listing,
                  "charon loaded its certificate, the root and the intermediate (swanctl --list-certs)",
                  f"{listing.count('subject:')} certificates")
        ok = ph.up()
        check(ok, f"{what}: the tunnel comes up", "" if ok else "no SAs installed")
        if not ok:
            ph.dump()
            return
        lab.wait_next_hop("a")
        ping_through(lab, what)
        log = ph.clog.text()
        want = {
            f'received cert request for "{ROOT_DN}"': "charon received our CERTREQ for the root CA",
            f'sending end entity cert "{ph.theirs.dn}"': "charon sent its certificate (asked for it)",
            f'sending issuer cert "{IM_DN}"': "charon sent its intermediate",
            f'received end entity cert "{ph.ours.dn}"': "charon received our certificate",
            f'received issuer cert "{IM_DN}"': "charon received our intermediate",
        }
        for line, why in want.items():
            check(line in log, f"{what}: {why}", line)
        auth = re.search(rf"authentication of '{re.escape(ph.our_auth.local_id or '')}' with (.+) successful", log)
        check(auth is not None and re.fullmatch(scheme, auth.group(1)) is not None,
              f"{what}: charon verified our AUTH with {scheme}", auth.group(0) if auth else "no such line")
        show("our log about certificates", our_lines(lab, ph.tag, r"cert|auth"), 4)
    finally:
        ph.stop()


def key_types(lab: Lab, pki: Pki) -> None:
    """Each key type in both roles against strongSwan (RFC 7427 signatures: charon runs with
    rsa_pss = yes and signature_authentication on, its default): see `establish`."""
    lab.start_dataplane("a", ring=True)
    n = 0
    for kt in KEY_TYPES:
        for we_init in (True, False):
            n += 1
            ours, theirs = pki.ee("a", kt), pki.ee("b", kt)
            style = ID_STYLE[kt]
            ph = SwanPhase(lab, pki, f"k{n}", ours, theirs, we_init, style=style)
            what = f"{kt} ({style} ids), {ph.role}"
            phase(lab, what, lambda ph=ph, what=what, kt=kt, n=n: establish(lab, ph, what, SCHEME[kt], first=n == 1))


def classic(lab: Lab, pki: Pki) -> None:
    """charon with signature_authentication = no sends no SIGNATURE_HASH_ALGORITHMS: both sides
    use the classic AUTH methods, RSA (1, PKCS#1 v1.5 with SHA-1), ECDSA P-256 (9) and P-384
    (10), the roles alternating: see `establish` (charon names the method it verified)."""
    lab.start_dataplane("a", ring=True)
    for n, (kt, we_init) in enumerate((("rsa", True), ("p256", False), ("p384", True))):
        ours, theirs = pki.ee("a", kt), pki.ee("b", kt)
        ph = SwanPhase(lab, pki, f"c{n}", ours, theirs, we_init, swan_opts={"signature_authentication": False})
        what = f"{kt}, classic AUTH method, {ph.role}"
        phase(lab, what, lambda ph=ph, what=what, kt=kt: establish(lab, ph, what, re.escape(CLASSIC[kt])))


# --- certs-refused ------------------------------------------------------------------------------

def norm_serial(text: str) -> str:
    return re.sub(r"[:\s]", "", text.lower())


def refused(lab: Lab, pki: Pki) -> None:
    """Revoked, expired and not-yet-valid certificates on each side, the roles mixed so both
    the initiator's and the responder's checks run: our refusal names the serial (revoked) or
    says "check the clocks"; charon's says "certificate was revoked on" / "certificate invalid
    (valid from"; nothing is installed."""
    lab.start_dataplane("a", ring=True)
    # (variant, whose certificate is bad, we initiate?)
    plan = [("revoked", "theirs", True), ("revoked", "ours", True),
            ("expired", "theirs", False), ("expired", "ours", False),
            ("notyet", "theirs", True), ("notyet", "ours", False)]
    for n, (variant, bad, we_init) in enumerate(plan):
        ours = pki.ee("a", variant if bad == "ours" else "p256")
        theirs = pki.ee("b", variant if bad == "theirs" else "p256")
        # FQDN ids: the bad certificates hold the same names as the good ones.
        ph = SwanPhase(lab, pki, f"r{n}", ours, theirs, we_init, style="fqdn")
        who = "charon's" if bad == "theirs" else "our"
        what = f"{variant} certificate ({who}), {ph.role}"

        def body(ph=ph, what=what, variant=variant, bad=bad, theirs=theirs, ours=ours) -> None:
            try:
                ph.start()
                if bad == "theirs":
                    if variant == "revoked":
                        # Not "received end entity cert ... OU=revoked": the refusal.
                        pat = r"was revoked|revoked on|refused.*revoked"
                    else:
                        pat = r"check the clocks"
                    line = ""
                    deadline = time.time() + 12
                    while time.time() < deadline and not line and all(p.poll() is None for p in ph.procs()):
                        line = next((ln for ln in our_lines(lab, ph.tag, pat)), "")
                        time.sleep(0.1)
                    if variant == "revoked":
                        check(bool(line) and norm_serial(theirs.serial or "") in norm_serial(line),
                              f"{what}: we refuse it and our log names the serial {theirs.serial}", line or "no such line")
                    else:
                        check(bool(line), f"{what}: we refuse it and our log says when it is valid and to check the "
                              "clocks", line or "no such line")
                        check(bool(line) and ("2020" in line or "2021" in line or "2040" in line or "2041" in line),
                              f"{what}: our line gives the certificate's validity", line)
                    if not line:
                        show("our log", our_lines(lab, ph.tag, r"WARN|ERROR|cert|auth"), 8)
                    if not we_init:
                        got = ph.clog.wait(r"received AUTHENTICATION_FAILED notify", timeout=5)
                        check(bool(got), f"{what}: charon is told AUTHENTICATION_FAILED", got or "no such line")
                else:
                    if variant == "revoked":
                        pat = r"certificate was revoked on"
                    else:
                        pat = r"certificate invalid \(valid from"
                    line = ph.clog.wait(pat, timeout=12, procs=ph.procs())
                    check(bool(line), f"{what}: charon refuses it (\"{pat.replace(chr(92), '')}\")",
                          line or "no such line")
                    # The certificate charon refused is ours (it names what it received).
                    got = ph.clog.line(rf'received end entity cert "{re.escape(ours.dn)}"')
                    check(bool(got), f"{what}: charon received our {variant} certificate", got or "no such line")
                    ln = ""
                    deadline = time.time() + 5
                    while time.time() < deadline and not ln:
                        ln = next(iter(our_lines(lab, ph.tag, r"AUTHENTICATION_FAILED")), "")
                        time.sleep(0.1)
                    check(bool(ln), f"{what}: our log has charon's AUTHENTICATION_FAILED", ln or "no such line")
                if not line:
                    ph.dump()
                if bad == "ours" and not we_init:
                    # We answered charon's IKE_AUTH, so our SAs were up (RFC 7296 §2.21.2) until
                    # its AUTHENTICATION_FAILED notify arrived: they must be gone.
                    s = lab.wait_stats("a", lambda s: s["sa_count"] == 0, timeout=5)
                    check(s["sa_count"] == 0, f"{what}: charon's AUTHENTICATION_FAILED removed the SAs we had "
                          "installed as responder", f"{s['sa_count']} SAs")
                else:
                    s = lab.wait_stats("a", lambda s: s["sa_count"] > 0, timeout=1)
                    check(s["sa_count"] == 0, f"{what}: nothing installed", f"{s['sa_count']} SAs")
            finally:
                ph.stop()
        phase(lab, what, body)


# --- certs-id -----------------------------------------------------------------------------------

def id_not_in_cert(lab: Lab, pki: Pki) -> None:
    """charon authenticates as "elsewhere.example", a name its certificate (SAN gw-b.example,
    192.0.2.2) does not hold (strongSwan 5.9.8 signs with the configured certificate whatever
    the id; certs-pki shows its own peer refusing it), and our remote.id asks for that name: we
    refuse, with a line naming the id, in both roles; nothing is installed. Then charon signs
    where our connection expects a pre-shared key: our refusal says so (not "the PSK
    differs") and charon is told AUTHENTICATION_FAILED."""
    lab.start_dataplane("a", ring=True)
    other = "elsewhere.example"
    ours, theirs = pki.ee("a", "p256"), pki.ee("b", "p256")
    for n, we_init in enumerate((True, False)):
        our_auth = Auth.pubkey(ours, other, local_id=ours.fqdn, cacerts=["rootCert.pem"])
        swan_auth = Auth.pubkey(theirs, ours.fqdn, local_id=other, cacerts=["rootCert.pem"])
        ph = SwanPhase(lab, pki, f"i{n}", ours, theirs, we_init, our_auth=our_auth, swan_auth=swan_auth)
        what = f"charon's id {other} is not in its certificate, {ph.role}"

        def body(ph=ph, what=what) -> None:
            try:
                ph.start()
                line = ""
                deadline = time.time() + 12
                while time.time() < deadline and not line and all(p.poll() is None for p in ph.procs()):
                    line = next(iter(our_lines(lab, ph.tag, re.escape(other) + r".*cert|cert.*" + re.escape(other))), "")
                    time.sleep(0.1)
                check(bool(line), f"{what}: we refuse it, naming the id and the certificate", line or "no such line")
                if not line:
                    ph.dump()
                s = lab.wait_stats("a", lambda s: s["sa_count"] > 0, timeout=1)
                check(s["sa_count"] == 0, f"{what}: nothing installed", f"{s['sa_count']} SAs")
            finally:
                ph.stop()
        phase(lab, what, body)

    # charon signs (pubkey), our connection expects a pre-shared key from it: the refusal says
    # so, rather than "the PSK differs".
    swan_auth = Auth(local_auth="pubkey", remote_auth="psk", local_id=theirs.fqdn, remote_id=ours.fqdn,
                     certs=[theirs.cert.name])
    our_auth = Auth(local_id=ours.fqdn, remote_id=theirs.fqdn)
    ph = SwanPhase(lab, pki, "i-psk", ours, theirs, False, our_auth=our_auth, swan_auth=swan_auth)
    what = "charon signs with its certificate, our connection expects a pre-shared key, charon initiates"

    def mismatch() -> None:
        try:
            ph.start()
            line = ""
            deadline = time.time() + 12
            while time.time() < deadline and not line and all(p.poll() is None for p in ph.procs()):
                line = next(iter(our_lines(lab, ph.tag, r"pre-shared key.*signature|signature.*pre-shared key")), "")
                time.sleep(0.1)
            check(bool(line), f"{what}: our refusal says the peer signed and we expect a pre-shared key",
                  line or "no such line")
            got = ph.clog.wait(r"received AUTHENTICATION_FAILED notify", timeout=5)
            check(bool(got), f"{what}: charon is told AUTHENTICATION_FAILED", got or "no such line")
            if not line:
                ph.dump()
        finally:
            ph.stop()
    phase(lab, what, mismatch)


# --- certs-frag ---------------------------------------------------------------------------------

def ike_datagrams(cap) -> list[dict]:
    """IKE datagrams on either WAN interface (UDP 500, or 4500 behind the non-ESP marker), each
    once (seen leaving one gateway and reaching the other), in time order: time, sender, IKE SPIs,
    IP length, exchange type, response flag, message ID, first payload type (53: SKF, RFC 7383
    §2.5), fragment number and total (of an SKF)."""
    from scapy.all import IP, UDP, IPv6  # noqa: PLC0415

    seen: dict[tuple, dict] = {}
    for side in ("a", "b"):
        for p in cap.packets(side, "udp port 500 or udp port 4500"):
            udp = p.getlayer(UDP)
            ip = p.getlayer(IP) or p.getlayer(IPv6)
            if udp is None or ip is None or not {500, 4500} & {udp.sport, udp.dport}:
                continue
            raw = bytes(udp.payload)
            if 4500 in (udp.sport, udp.dport):
                if len(raw) < 4 or raw[:4] != b"\0\0\0\0":
                    continue
                raw = raw[4:]
            if len(raw) < 28 or raw[17] != 0x20:
                continue
            iplen = ip.len if ip.version == 4 else ip.plen + 40
            d = {"t": float(p.time), "src": ip.src, "spis": (raw[0:8].hex(), raw[8:16].hex()), "iplen": int(iplen),
                 "exchange": raw[18], "response": bool(raw[19] & 0x20),
                 "msgid": int.from_bytes(raw[20:24], "big"), "first": raw[16], "frag": None}
            if raw[16] == 53 and len(raw) >= 36:
                # RFC 7383 §2.5: generic payload header (4), Fragment Number (2), Total (2).
                d["frag"] = (int.from_bytes(raw[32:34], "big"), int.from_bytes(raw[34:36], "big"))
            key = (d["src"], raw[:24], raw[-16:])
            if key not in seen or d["t"] < seen[key]["t"]:
                seen[key] = d
    return sorted(seen.values(), key=lambda d: d["t"])


def frag(lab: Lab, pki: Pki) -> None:
    """RSA-4096 root, intermediate and gateway certificates (IKE_AUTH ~4 KB with both
    certificates) with fragment_size 576 on both sides, in both roles: the tunnel comes up and
    carries ping; charon split its IKE_AUTH and reassembled ours; on the wire each side sent SKF
    fragments and no IKE datagram above 576 bytes; our log tells about fragments."""
    lab.start_dataplane("a", ring=True)
    for n, we_init in enumerate((True, False)):
        ours, theirs = pki.ee("a", "rsa4096"), pki.ee("b", "rsa4096")
        common = dict(fragmentation="yes", fragment_size=FRAG_SIZE)
        our_auth = Auth.pubkey(ours, theirs.dn, cacerts=["root4096Cert.pem"], **common)
        swan_auth = Auth.pubkey(theirs, ours.dn, cacerts=["root4096Cert.pem"], fragmentation="yes")
        ph = SwanPhase(lab, pki, f"f{n}", ours, theirs, we_init, cas=("root4096", "im4096"), crl=False,
                       our_auth=our_auth, swan_auth=swan_auth, swan_opts={"fragment_size": FRAG_SIZE})
        what = f"RSA-4096 chain, fragment_size {FRAG_SIZE}, {ph.role}"

        def body(ph=ph, what=what, n=n) -> None:
            try:
                with lab.wan_capture(f"frag{n}") as cap:
                    ph.start()
                    ok = ph.up(timeout=20)
                    check(ok, f"{what}: the tunnel comes up", "" if ok else "no SAs installed")
                    if ok:
                        lab.wait_next_hop("a")
                        ping_through(lab, what)
                log = ph.clog.text()
                split = re.findall(r"splitting IKE message \((\d+) bytes\) into (\d+) fragments", log)
                check(bool(split) and all(int(m) >= 2 for _, m in split), f"{what}: charon split its IKE_AUTH",
                      "; ".join(f"{b} bytes into {m}" for b, m in split) or "no \"splitting IKE message\" line")
                got = re.findall(r"received fragment #(\d+) of (\d+), reassembled fragmented IKE message \((\d+) bytes\)",
                                 log)
                check(bool(got), f"{what}: charon reassembled our fragmented IKE_AUTH",
                      "; ".join(f"{t} fragments, {b} bytes" for _, t, b in got) or "no \"reassembled\" line")
                dgrams = ike_datagrams(cap)
                for side in "ab":
                    src = lab.case.public(side)
                    mine = [d for d in dgrams if d["src"] == src]
                    frags = [d for d in mine if d["frag"]]
                    big = max((d["iplen"] for d in mine), default=0)
                    who = "us" if side == "a" else "charon"
                    check(len(frags) >= 2 and all(d["exchange"] == 35 for d in frags),
                          f"{what}: {'we' if side == 'a' else 'charon'} sent IKE_AUTH as SKF fragments on the wire",
                          f"{len(frags)} fragments " + ", ".join(sorted({"#%d/%d" % d["frag"] for d in frags})))
                    check(0 < big <= FRAG_SIZE, f"{what}: no IKE datagram from {who} above {FRAG_SIZE} bytes",
                          f"largest {big} bytes of {len(mine)}")
                lines = our_lines(lab, ph.tag, r"fragment")
                ours_split = next((ln for ln in lines if re.search(r"splitting IKE message .* into \d+ fragments", ln)), "")
                ours_got = next((ln for ln in lines if re.search(r"reassembled fragmented IKE message", ln)), "")
                check(bool(ours_split) and bool(ours_got), f"{what}: our log says we split ours and reassembled "
                      "charon's", f"{ours_split[-150:]} / {ours_got[-150:]}" if ours_split or ours_got else "no such lines")
                show("our log about fragments", lines, 4)
                if not ok:
                    ph.dump()
            finally:
                ph.stop()
        phase(lab, what, body)


# --- certs-pki (charon <-> charon) ---------------------------------------------------------------

def pki_selfcheck(lab: Lab, pki: Pki) -> None:
    """No iked: charon on both gateways with the generated PKI. Checks the generator and the
    directory layout (swanctl --load-all and --list-certs), and that strongSwan 5.9.8 writes
    the lines the other cases assert on: CERTREQ and certificates sent when asked, RSA-PSS and
    Ed25519 signatures, "certificate was revoked on", "certificate invalid (valid from", a
    peer id its certificate lacks refused ("no trusted ... public key found"), and fragments."""

    def pair(tag: str, ca: Cert, cb: Cert, cas=("root", "im"), crl=True, auth_a: Auth | None = None,
             auth_b: Auth | None = None, opts: dict | None = None) -> tuple[Tail, Tail]:
        for side, c in (("a", ca), ("b", cb)):
            pki.install(lab.swan_dir(side), [c], list(cas), crl=crl)
        tails = (Tail(charon_log(lab, "a")), Tail(charon_log(lab, "b")))
        anchor = f"{cas[0]}Cert.pem"
        auth_b = auth_b or Auth.pubkey(cb, ca.dn, cacerts=[anchor])
        auth_a = auth_a or Auth.pubkey(ca, cb.dn, cacerts=[anchor])
        lab.start_charon("b", vpnlab.swanctl_conf(lab.case, "b", PSK, IKE, ESP, start=False, auth=auth_b),
                         options=dict(SWAN_OPTS, **(opts or {})))
        lab.start_charon("a", vpnlab.swanctl_conf(lab.case, "a", PSK, IKE, ESP, start=True, auth=auth_a),
                         retransmit_timeout=1, retransmit_tries=2, options=dict(SWAN_OPTS, **(opts or {})))
        return tails

    def stop() -> None:
        stop_charon(lab, "a")
        stop_charon(lab, "b")

    established = r"IKE_SA gw-b\[\d+\] established between"

    def good(kt: str, style: str = "dn") -> None:
        ca, cb = pki.ee("a", kt), pki.ee("b", kt)
        try:
            ta, tb = pair(kt, ca, cb,
                          auth_a=Auth.pubkey(ca, ident(cb, style), local_id=ident(ca, style), cacerts=["rootCert.pem"]),
                          auth_b=Auth.pubkey(cb, ident(ca, style), local_id=ident(cb, style), cacerts=["rootCert.pem"]))
            listing = list_certs(lab, "b")
            check(all(x in listing for x in (cb.dn, ROOT_DN, IM_DN)) and "has private key" in listing,
                  f"charon-b loaded {cb.name}, its key, the root and the intermediate", f"{listing.count('subject:')} certs")
            line = ta.wait(established, timeout=10)
            check(bool(line), f"{kt} ({style} ids): charon <-> charon with the generated certificates", line or ta.text()[-1500:])
            b = tb.text()
            for want in (f'received cert request for "{ROOT_DN}"', f'sending end entity cert "{cb.dn}"',
                         f'sending issuer cert "{IM_DN}"', f'received end entity cert "{ca.dn}"',
                         f"authentication of '{re.escape(ident(ca, style))}' with {SCHEME[kt]} successful"):
                check(re.search(want if "authentication" in want else re.escape(want), b) is not None,
                      f"{kt} ({style} ids): charon-b logs {want!r}")
        finally:
            stop()

    def bad(variant: str, pattern: str) -> None:
        ca, cb = pki.ee("a", variant), pki.ee("b", "p256")
        try:
            _, tb = pair(variant, ca, cb)
            line = tb.wait(pattern, timeout=10)
            check(bool(line), f"charon refuses a {variant} certificate with {pattern!r}", line or tb.text()[-1500:])
        finally:
            stop()

    def wrong_id() -> None:
        ca, cb = pki.ee("a", "p256"), pki.ee("b", "p256")
        other = "elsewhere.example"
        try:
            ta, tb = pair("id", ca, cb, auth_a=Auth.pubkey(ca, other, cacerts=["rootCert.pem"]),
                          auth_b=Auth.pubkey(cb, ca.dn, local_id=other, cacerts=["rootCert.pem"]))
            line = ta.wait(rf"no trusted \S+ public key found for '{other}'", timeout=10)
            sent = tb.line(rf"authentication of '{other}' \(myself\)")
            check(bool(line) and bool(sent), f"charon signs as {other} with a certificate that lacks it, and its "
                  "peer refuses that", f"{sent} / {line}" if line else ta.text()[-1500:])
        finally:
            stop()

    def fragments() -> None:
        ca, cb = pki.ee("a", "rsa4096"), pki.ee("b", "rsa4096")
        try:
            ta, tb = pair("frag", ca, cb, cas=("root4096", "im4096"), crl=False, opts={"fragment_size": FRAG_SIZE})
            line = ta.wait(established, timeout=15)
            check(bool(line), "RSA-4096 chain, fragment_size 576: charon <-> charon", line or ta.text()[-1500:])
            for t, side in ((ta, "a"), (tb, "b")):
                s = t.line(r"splitting IKE message \(\d+ bytes\) into \d+ fragments")
                r = t.line(r"received fragment #\d+ of \d+, reassembled fragmented IKE message")
                check(bool(s) and bool(r), f"charon-{side} splits and reassembles IKE_AUTH", f"{s} / {r}")
        finally:
            stop()

    def classic(kt: str) -> None:
        ca, cb = pki.ee("a", kt), pki.ee("b", kt)
        try:
            ta, tb = pair(kt, ca, cb, opts={"signature_authentication": False})
            line = ta.wait(established, timeout=10)
            check(bool(line), f"{kt}, signature_authentication = no: charon <-> charon", line or ta.text()[-1500:])
            want = rf"authentication of '{re.escape(ca.dn)}' with {CLASSIC[kt]} successful"
            got = tb.line(want)
            check(bool(got), f"{kt}: charon-b verified the classic AUTH method", got or want)
        finally:
            stop()

    phase(lab, "classic", lambda: classic("p256"))
    phase(lab, "rsa", lambda: good("rsa"))
    phase(lab, "ed25519", lambda: good("ed25519"))
    phase(lab, "p256 fqdn", lambda: good("p256", "fqdn"))
    phase(lab, "p384 ip", lambda: good("p384", "ip"))
    phase(lab, "revoked", lambda: bad("revoked", r"certificate was revoked on"))
    phase(lab, "expired", lambda: bad("expired", r"certificate invalid \(valid from"))
    phase(lab, "notyet", lambda: bad("notyet", r"certificate invalid \(valid from"))
    phase(lab, "id", wrong_id)
    phase(lab, "frag", fragments)


SCENARIOS = {
    "certs-pki": (Case(nat_t=True), pki_selfcheck),
    "certs-strongswan": (Case(nat_t=True), key_types),
    "certs-classic": (Case(nat_t=True), classic),
    "certs-refused": (Case(nat_t=True), refused),
    "certs-id": (Case(nat_t=True), id_not_in_cert),
    "certs-frag": (Case(nat_t=True), frag),
}


def run(case_name: str, dataplane: str, vpnctl: str) -> int:
    case, fn = SCENARIOS[case_name]
    e2e.VPNCTL = vpnctl
    e2e_faults.check = check
    lab = Lab(name=vpnlab.unique_name("ct" + case_name.split("-")[-1][:4]), case=case, dataplane=dataplane,
              vpnctl=vpnctl)
    t0 = time.time()
    try:
        lab.up()
        pki = Pki(lab.workdir / "pki", {s: case.public(s) for s in "ab"})
        fn(lab, pki)
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
