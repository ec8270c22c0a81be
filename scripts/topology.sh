#!/usr/bin/env bash
# A four-namespace test topology for the dataplane tests and the demo.
#
#   scripts/topology.sh up NAME [--queues N] [--v6] [--nat]  # (re)create it; N = veth queues (default 2)
#   scripts/topology.sh down NAME                      # remove it (no error if absent)
#   scripts/topology.sh status NAME [--nat]            # show it; exit 1 unless all exist
#
#   NAME-client-a --- NAME-gw-a ====== NAME-gw-b --- NAME-client-b
#      ca0    ga-in       ga-out  WAN  gb-out    gb-in     cb0
#
#   inside A  10.1.0.0/24   2001:db8:a::/64    client-a .10 / ::10   gw-a .1 / ::1
#   WAN       192.0.2.0/24  2001:db8:ff::/64   gw-a     .1  / ::1    gw-b .2 / ::2
#   inside B  10.2.0.0/24   2001:db8:b::/64    gw-b     .1  / ::1    client-b .20 / ::20
#
# With --nat a fifth namespace, NAME-nat, sits on the WAN between gw-a and gw-b and is a real
# port-translating NAT for gw-a's side (nftables `masquerade random`, IPv4 and IPv6):
#
#   NAME-gw-a ------------ NAME-nat ============ NAME-gw-b
#      ga-out   private   na-in   na-wan   WAN   gb-out
#
#   private   172.16.0.0/24  fd00:16::/64      gw-a .1 / ::1   nat .254 / ::fe
#   WAN       192.0.2.0/24   2001:db8:ff::/64  nat  .1 / ::1 (gw-a's public address)   gw-b .2 / ::2
#
# gw-b sees everything from gw-a as coming from 192.0.2.1 / 2001:db8:ff::1 with a random
# source port; `ip netns exec NAME-nat conntrack -F` forgets the bindings (the next datagram
# gets a new port). The NAT routes A's inside networks to gw-a, so plain routing still works
# both ways. Without --nat the topology is exactly the four namespaces above.
#
# Both address families are always configured (--v6 is accepted and ignored). The gateways
# forward and route the far inside network via each other, so plain routing works end to end
# (the baseline before IPsec); the clients' default routes point at their gateway. Every veth
# has N tx and N rx queues. IPv6 DAD is off, and `up` returns only when every address is
# usable and every link is up. Client-side veths get `ethtool -K <if> tx off` (veth senders
# otherwise leave partial checksums, which an XDP/AF_XDP dataplane sees as bad checksums).
#
# Everything happens inside the four namespaces: the veths are created directly in them, so
# the host's interfaces, addresses and routes are never touched. Use a NAME of your own per
# test so parallel runs do not collide. `up` on an existing NAME tears it down first; `down`
# also stops any process still running inside the namespaces (a test's leftovers).
set -euo pipefail

PROG="topology.sh"
die() { printf '%s: %s\n' "$PROG" "$*" >&2; exit 1; }
say() { printf '[topology %s] %s\n' "$NAME" "$*"; }

usage() {
    sed -n '3,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,3\}//' >&2
    exit 2
}

NAMESPACES=(client-a gw-a gw-b client-b)
# `down` (and `up`'s cleanup) also look for the NAT namespace, absent unless `up --nat`.
ALL_NAMESPACES=(client-a gw-a nat gw-b client-b)

ns() { printf '%s-%s' "$NAME" "$1"; }
ns_exists() { [[ -e "/run/netns/$1" ]]; }
in_ns() { local n="$1"; shift; ip netns exec "$n" "$@"; }
# sysctl inside a namespace without needing procps: /proc/sys/net follows the caller's netns.
ns_sysctl() { in_ns "$1" sh -c "echo $3 > /proc/sys/${2//.//}"; }

# ---------------------------------------------------------------------------------------
# down

do_down() {
    local quiet="${1:-}" n removed=() pids
    for short in "${ALL_NAMESPACES[@]}"; do
        n="$(ns "$short")"
        ns_exists "$n" || continue
        # Processes left in the namespace would keep it (and its veths) alive after the
        # name is gone: stop them. They can only be ours, the NAME is unique to one test.
        pids="$(ip netns pids "$n" 2>/dev/null || true)"
        if [[ -n "$pids" ]]; then
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null || true
            for _ in $(seq 40); do
                pids="$(ip netns pids "$n" 2>/dev/null || true)"
                [[ -z "$pids" ]] && break
                sleep 0.05
            done
            if [[ -n "$pids" ]]; then
                # shellcheck disable=SC2086
                kill -KILL $pids 2>/dev/null || true
            fi
        fi
        ip netns del "$n" 2>/dev/null || ! ns_exists "$n" || die "cannot delete namespace $n"
        removed+=("$n")
    done
    if [[ -z "$quiet" ]]; then
        if ((${#removed[@]})); then
            say "down: removed ${removed[*]}"
        else
            say "down: nothing to remove"
        fi
    fi
}

# ---------------------------------------------------------------------------------------
# up

# veth_pair NS_A IF_A NS_B IF_B: a veth with QUEUES queues each way, created directly inside
# the two namespaces (never in the host's).
veth_pair() {
    ip -n "$1" link add "$2" numtxqueues "$QUEUES" numrxqueues "$QUEUES" type veth \
        peer name "$4" numtxqueues "$QUEUES" numrxqueues "$QUEUES" netns "$3"
}

# iface_conf NS IF ADDR4/LEN ADDR6/LEN
iface_conf() {
    ns_sysctl "$1" "net.ipv6.conf.$2.accept_dad" 0
    ip -n "$1" addr add "$3" dev "$2"
    ip -n "$1" -6 addr add "$4" dev "$2" nodad
    ip -n "$1" link set "$2" up
}

wait_ready() {
    local deadline=$((SECONDS + 10)) pending n ifc state
    while :; do
        pending=""
        for short in "${NAMESPACES[@]}"; do
            n="$(ns "$short")"
            if [[ -n "$(ip -n "$n" -6 addr show dadfailed)" ]]; then
                die "IPv6 duplicate address detection failed in $n"
            fi
            [[ -z "$(ip -n "$n" -6 addr show tentative)" ]] || pending+=" $n:tentative"
            for ifc in $(ip -n "$n" -o link show type veth | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'); do
                state="$(ip -n "$n" -br link show dev "$ifc" | awk '{ print $2 }')"
                [[ "$state" == UP ]] || pending+=" $n:$ifc:$state"
            done
        done
        [[ -z "$pending" ]] && return 0
        ((SECONDS < deadline)) || die "not ready after 10 s:$pending"
        sleep 0.02
    done
}

# The NAT namespace: forwards, routes A's inside networks to gw-a, and masquerades what
# leaves on its WAN side with random source ports (the port-translating NAT of RFC 7296
# §2.23). One `inet` table covers IPv4 and IPv6 (NAT66).
nat_conf() {
    ns_sysctl "$NT" net.ipv4.ip_forward 1
    ns_sysctl "$NT" net.ipv6.conf.all.forwarding 1
    ip -n "$NT" route add 10.1.0.0/24 via 172.16.0.1 dev na-in
    ip -n "$NT" -6 route add 2001:db8:a::/64 via fd00:16::1 dev na-in
    # Its upstream is gw-b's WAN (B's inside networks are routed there, as without the NAT).
    ip -n "$NT" route add default via 192.0.2.2 dev na-wan
    ip -n "$NT" -6 route add default via 2001:db8:ff::2 dev na-wan
    in_ns "$NT" nft -f - <<'NFT'
table inet nat {
    chain post {
        type nat hook postrouting priority 100;
        oifname "na-wan" masquerade random
    }
}
NFT
}

do_up() {
    command -v ip >/dev/null 2>&1 || die "'ip' (iproute2) not found: apt-get install iproute2"
    command -v ethtool >/dev/null 2>&1 ||
        die "ethtool not found: it is needed to turn tx checksum offload off on the client veths (veth leaves partial checksums otherwise). Install it: apt-get install ethtool"
    [[ "$(id -u)" == 0 ]] || die "needs root (network namespaces)"
    if [[ -n "$NAT" ]]; then
        command -v nft >/dev/null 2>&1 || die "nft not found: apt-get install nftables (scripts/install-deps.sh)"
    fi

    local existed=""
    for short in "${ALL_NAMESPACES[@]}"; do
        if ns_exists "$(ns "$short")"; then existed=1; fi
    done
    if [[ -n "$existed" ]]; then
        do_down quiet
        say "up: removed the previous $NAME-* namespaces"
    fi

    # From here on a failure (a failing command or die) leaves nothing half-built behind.
    UP_DONE=""
    trap 'rc=$?; if [[ -z "$UP_DONE" ]]; then do_down quiet; say "up FAILED (rc $rc), removed $NAME-*"; fi' EXIT

    local CA GA GB CB NT n
    CA="$(ns client-a)" GA="$(ns gw-a)" GB="$(ns gw-b)" CB="$(ns client-b)" NT="$(ns nat)"
    for short in "${NAMESPACES[@]}"; do
        n="$(ns "$short")"
        ip netns add "$n"
        ip -n "$n" link set lo up
        # New interfaces copy `default`; the peer half of a veth is created in its namespace.
        ns_sysctl "$n" net.ipv6.conf.all.accept_dad 0
        ns_sysctl "$n" net.ipv6.conf.default.accept_dad 0
    done

    veth_pair "$CA" ca0 "$GA" ga-in
    if [[ -n "$NAT" ]]; then
        veth_pair "$GA" ga-out "$NT" na-in
        veth_pair "$NT" na-wan "$GB" gb-out
    else
        veth_pair "$GA" ga-out "$GB" gb-out
    fi
    veth_pair "$GB" gb-in "$CB" cb0

    iface_conf "$CA" ca0 10.1.0.10/24 2001:db8:a::10/64
    iface_conf "$GA" ga-in 10.1.0.1/24 2001:db8:a::1/64
    if [[ -n "$NAT" ]]; then
        iface_conf "$GA" ga-out 172.16.0.1/24 fd00:16::1/64
        iface_conf "$NT" na-in 172.16.0.254/24 fd00:16::fe/64
        iface_conf "$NT" na-wan 192.0.2.1/24 2001:db8:ff::1/64
    else
        iface_conf "$GA" ga-out 192.0.2.1/24 2001:db8:ff::1/64
    fi
    iface_conf "$GB" gb-out 192.0.2.2/24 2001:db8:ff::2/64
    iface_conf "$GB" gb-in 10.2.0.1/24 2001:db8:b::1/64
    iface_conf "$CB" cb0 10.2.0.20/24 2001:db8:b::20/64

    # veth senders leave partial checksums (tx offload); turn it off where traffic starts.
    in_ns "$CA" ethtool -K ca0 tx off >/dev/null
    in_ns "$CB" ethtool -K cb0 tx off >/dev/null

    for n in "$GA" "$GB"; do
        ns_sysctl "$n" net.ipv4.ip_forward 1
        ns_sysctl "$n" net.ipv6.conf.all.forwarding 1
    done
    if [[ -n "$NAT" ]]; then
        nat_conf
        # gw-a reaches everything beyond its private link through the NAT.
        ip -n "$GA" route add default via 172.16.0.254 dev ga-out
        ip -n "$GA" -6 route add default via fd00:16::fe dev ga-out
    else
        ip -n "$GA" route add 10.2.0.0/24 via 192.0.2.2 dev ga-out
        ip -n "$GA" -6 route add 2001:db8:b::/64 via 2001:db8:ff::2 dev ga-out
    fi
    ip -n "$GB" route add 10.1.0.0/24 via 192.0.2.1 dev gb-out
    ip -n "$GB" -6 route add 2001:db8:a::/64 via 2001:db8:ff::1 dev gb-out
    ip -n "$CA" route add default via 10.1.0.1 dev ca0
    ip -n "$CA" -6 route add default via 2001:db8:a::1 dev ca0
    ip -n "$CB" route add default via 10.2.0.1 dev cb0
    ip -n "$CB" -6 route add default via 2001:db8:b::1 dev cb0

    wait_ready
    UP_DONE=1

    say "up ($QUEUES queues per veth, tx csum offload off on ca0/cb0):"
    say "  $CA ca0 10.1.0.10 2001:db8:a::10 --- ga-in 10.1.0.1 2001:db8:a::1 $GA"
    if [[ -n "$NAT" ]]; then
        say "  $GA ga-out 172.16.0.1 fd00:16::1 --- na-in 172.16.0.254 fd00:16::fe $NT (masquerade random)"
        say "  $NT na-wan 192.0.2.1 2001:db8:ff::1 === gb-out 192.0.2.2 2001:db8:ff::2 $GB"
    else
        say "  $GA ga-out 192.0.2.1 2001:db8:ff::1 === gb-out 192.0.2.2 2001:db8:ff::2 $GB"
    fi
    say "  $GB gb-in 10.2.0.1 2001:db8:b::1 --- cb0 10.2.0.20 2001:db8:b::20 $CB"
}

# ---------------------------------------------------------------------------------------
# status

do_status() {
    local n missing=0
    for short in "${NAMESPACES[@]}"; do
        n="$(ns "$short")"
        if ! ns_exists "$n"; then
            say "$n: absent"
            missing=1
            continue
        fi
        say "$n:"
        ip -n "$n" -br addr show | awk '$1 != "lo" { print "    " $0 }'
        ip -n "$n" route show | sed 's/^/    v4 /'
        ip -n "$n" -6 route show | grep -v '^fe80' | sed 's/^/    v6 /' || true
    done
    return "$missing"
}

# ---------------------------------------------------------------------------------------

(($# >= 2)) || usage
CMD="$1" NAME="$2"
shift 2
# NAME-client-a must be a valid namespace (file) name; keep NAME short and plain.
[[ "$NAME" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$ ]] ||
    die "bad NAME '$NAME' (letters, digits, '_', '.', '-'; at most 32 characters)"

QUEUES=2
NAT=""
while (($#)); do
    case "$1" in
        --queues)
            (($# >= 2)) || die "--queues needs a number"
            QUEUES="$2"
            shift 2
            ;;
        --queues=*) QUEUES="${1#--queues=}"; shift ;;
        --v6) shift ;; # both families are always configured
        --nat) NAT=1; shift ;;
        *) die "unknown option '$1'" ;;
    esac
done
[[ "$QUEUES" =~ ^[0-9]+$ ]] && ((QUEUES >= 1 && QUEUES <= 64)) || die "--queues must be 1..64"
[[ -z "$NAT" ]] || NAMESPACES=(client-a gw-a nat gw-b client-b)

case "$CMD" in
    up) do_up ;;
    down) do_down ;;
    status) do_status ;;
    *) usage ;;
esac
