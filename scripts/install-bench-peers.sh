#!/usr/bin/env bash
# Install the tunnels `vpnbench e2e` compares ours with, idempotently. Safe to rerun.
#
#   scripts/install-bench-peers.sh          # (run by `vpnbench e2e --install`)
#
# - Debian `wireguard-go` and `wireguard-tools` (wg, to configure wireguard-go's and
#   boringtun's TUN devices);
# - boringtun-cli from crates.io into <repo>/target/peers (`cargo install --root`, ~2 min the
#   first time; its binary is target/peers/bin/boringtun-cli);
# - strongSwan (charon with kernel-libipsec) comes from scripts/install-deps.sh.
# Not part of CI's default install: building boringtun takes minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="${VPNBENCH_PEERS_DIR:-$ROOT/target/peers}"

log() { printf '[install-bench-peers] %s\n' "$*" >&2; }

need_apt=()
want() { [[ -e "$2" ]] || need_apt+=("$1"); }
want wireguard-go /usr/bin/wireguard-go
want wireguard-tools /usr/bin/wg
want iperf3 /usr/bin/iperf3
if ((${#need_apt[@]})); then
    [[ "$(id -u)" == 0 ]] || { log "needs root for apt-get install ${need_apt[*]}"; exit 1; }
    log "apt-get install ${need_apt[*]}"
    apt-get update -qq
    echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [[ ! -x "$PEERS/bin/boringtun-cli" ]]; then
    log "cargo install --root $PEERS boringtun-cli (takes ~2 minutes)"
    mkdir -p "$PEERS"
    cargo install --quiet --locked --root "$PEERS" boringtun-cli
fi

[[ -x /usr/lib/ipsec/charon ]] || log "strongSwan's charon is missing: run scripts/install-deps.sh (e2e skips strongswan-libipsec without it)"
log "peers: wireguard-go $(command -v wireguard-go), wg $(command -v wg), boringtun $PEERS/bin/boringtun-cli"
