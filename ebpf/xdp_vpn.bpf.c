// SPDX-License-Identifier: MIT OR Apache-2.0 OR GPL-2.0
//
// The XDP program of the VPN concentrator: steers the packets the dataplane must handle to
// its AF_XDP sockets and passes everything else to the kernel.
//
// xdp_outside (WAN): ESP (IP protocol 50) and ESP-in-UDP (UDP/4500 whose first four payload
//   bytes are not zero, RFC 3948 §2.2) go to the AF_XDP socket of the packet's rx queue. IKE
//   (UDP/500, and UDP/4500 with the non-ESP marker), NAT keepalives, ARP/ND and all else pass.
//   Over IPv6, ESP and UDP are looked for behind up to MAX_EXT_HDRS extension headers
//   (hop-by-hop, routing, destination options, fragment; RFC 8200 §4).
// xdp_inside (LAN): packets whose destination falls in a protected prefix (LPM tries filled
//   by the dataplane from its policies) go to the socket; all else passes, including traffic
//   for the gateway itself and ARP/ND. When the socket is missing (the dataplane is down or
//   restarting) a protected packet is DROPPED and counted: fail-closed, the kernel must never
//   forward it in clear. Only `config[CFG_FAIL_OPEN] != 0` (dataplane --fail-open) passes it.
//
// The dataplane pins the links and the maps below (all but the XSKMAPs) in bpffs, so this
// program, the protected prefixes and the counters outlive the process (see
// dataplane/src/xdp.rs for the layout). The pinned maps' layouts are an ABI: change a key,
// value or size and the dataplane refuses the old pins (or recreates the counters).
//
// Per-queue, per-verdict counters live in a per-CPU array:
// index = (side * MAX_QUEUES + queue) * VERDICT_SLOTS + verdict.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_QUEUES 64
#define NAT_T_PORT 4500
/* Counter slots per (side, queue): room for new verdicts without changing the layout of
 * the pinned stats map. */
#define VERDICT_SLOTS 16
/* IPv6 extension headers walked before giving up (RFC 8200 §4.1 recommends an order with
 * at most one of each, destination options twice: six covers every conforming chain). */
#define MAX_EXT_HDRS 6

enum verdict {
    V_ESP = 0,          /* outside: ESP to the socket */
    V_ESP_UDP = 1,      /* outside: ESP-in-UDP to the socket */
    V_IKE = 2,          /* outside: IKE / keepalive, to the kernel */
    V_PASS = 3,         /* not ours, to the kernel */
    V_PROTECTED = 4,    /* inside: protected destination, to the socket */
    V_NO_SOCKET = 5,    /* would go to a socket but the queue has none: to the kernel
                         * (outside: the kernel has no ESP and drops it; inside: only with
                         * fail-open) */
    V_MALFORMED = 6,    /* truncated headers: to the kernel, which will drop them */
    V_NO_SOCKET_DROP = 7, /* inside: protected destination, no socket: dropped (fail-closed) */
    V_EXT_LIMIT = 8,    /* outside: more than MAX_EXT_HDRS IPv6 extension headers: to the kernel */
    N_VERDICTS = 9,
};

_Static_assert(N_VERDICTS <= VERDICT_SLOTS, "verdicts must fit the counter slots");

/* config map indexes. Only CFG_FAIL_OPEN is read here; the others record who owns the
 * pins (written and checked by the dataplane). */
enum config_index {
    CFG_FAIL_OPEN = 0,
    CFG_NETNS = 1,
    CFG_IFINDEX_OUTSIDE = 2,
    CFG_IFINDEX_INSIDE = 3,
    CFG_MODE = 4,
    N_CONFIG = 8,
};

/* RFC 8200 §4.5 */
struct ipv6_frag {
    __u8 nexthdr;
    __u8 reserved;
    __be16 frag_off; /* offset (13 bits) << 3 | res (2) | M (1) */
    __be32 id;
};

struct lpm_v4 {
    __u32 prefixlen;
    __u8 addr[4];
};

struct lpm_v6 {
    __u32 prefixlen;
    __u8 addr[16];
};

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, MAX_QUEUES);
    __type(key, __u32);
    __type(value, __u32);
} xsks_outside SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, MAX_QUEUES);
    __type(key, __u32);
    __type(value, __u32);
} xsks_inside SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 1 << 18);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct lpm_v4);
    __type(value, __u32);
} protected_v4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 1 << 18);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct lpm_v6);
    __type(value, __u32);
} protected_v6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, MAX_QUEUES * VERDICT_SLOTS * 2);
    __type(key, __u32);
    __type(value, __u64);
} stats SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, N_CONFIG);
    __type(key, __u32);
    __type(value, __u64);
} config SEC(".maps");

/* side: 0 outside, 1 inside */
static __always_inline void count(__u32 side, __u32 queue, enum verdict v)
{
    __u32 key = (side * MAX_QUEUES + (queue % MAX_QUEUES)) * VERDICT_SLOTS + v;
    __u64 *c = bpf_map_lookup_elem(&stats, &key);
    if (c)
        *c += 1;
}

static __always_inline int fail_open(void)
{
    __u32 k = CFG_FAIL_OPEN;
    __u64 *v = bpf_map_lookup_elem(&config, &k);
    return v && *v;
}

/* Outside: ESP for a queue without a socket goes to the kernel, which has no ESP and
 * drops it (counted here as V_NO_SOCKET). */
static __always_inline int outside_to_socket(__u32 queue, enum verdict v)
{
    if (!bpf_map_lookup_elem(&xsks_outside, &queue)) {
        count(0, queue, V_NO_SOCKET);
        return XDP_PASS;
    }
    count(0, queue, v);
    return bpf_redirect_map(&xsks_outside, queue, XDP_PASS);
}

/* Inside: a protected packet with no socket to take it is dropped (fail-closed) unless the
 * operator chose fail-open. The same holds if the socket goes between the lookup and the
 * redirect (the redirect's fallback action). */
static __always_inline int inside_to_socket(__u32 queue)
{
    int fallback = fail_open() ? XDP_PASS : XDP_DROP;

    if (!bpf_map_lookup_elem(&xsks_inside, &queue)) {
        count(1, queue, fallback == XDP_PASS ? V_NO_SOCKET : V_NO_SOCKET_DROP);
        return fallback;
    }
    count(1, queue, V_PROTECTED);
    return bpf_redirect_map(&xsks_inside, queue, fallback);
}

enum ext_walk {
    EXT_OK,             /* *proto / *l4: the upper-layer header */
    EXT_NON_FIRST_FRAG, /* a non-first fragment: no ESP or UDP header in it */
    EXT_TRUNCATED,
    EXT_TOO_LONG,
};

static __always_inline int is_ext_hdr(__u8 nh)
{
    return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
           nh == IPPROTO_FRAGMENT;
}

/* RFC 8200 §4: skip hop-by-hop, routing, destination options and fragment headers to the
 * upper-layer header. A first fragment (offset 0) is walked through: its ESP header is
 * there (the dataplane counts and drops fragments, we do not reassemble). Bounded and
 * unrolled for the verifier. */
static __always_inline enum ext_walk ipv6_skip_ext(void **l4, __u8 *proto, void *end)
{
    void *p = *l4;
    __u8 nh = *proto;

#pragma unroll
    for (int i = 0; i < MAX_EXT_HDRS; i++) {
        if (nh == IPPROTO_FRAGMENT) {
            struct ipv6_frag *f = p;
            if ((void *)(f + 1) > end)
                return EXT_TRUNCATED;
            nh = f->nexthdr;
            if (f->frag_off & bpf_htons(0xfff8))
                return EXT_NON_FIRST_FRAG;
            p = f + 1;
        } else if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS) {
            struct ipv6_opt_hdr *h = p;
            if ((void *)(h + 1) > end)
                return EXT_TRUNCATED;
            nh = h->nexthdr;
            /* RFC 8200 §4.3: Hdr Ext Len in 8-octet units, not counting the first 8. */
            p += ((__u32)h->hdrlen + 1) * 8;
        } else {
            break;
        }
    }
    if (is_ext_hdr(nh))
        return EXT_TOO_LONG;
    *l4 = p;
    *proto = nh;
    return EXT_OK;
}

SEC("xdp")
int xdp_outside(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    __u32 q = ctx->rx_queue_index;
    struct ethhdr *eth = data;
    __u8 proto;
    void *l4;

    if ((void *)(eth + 1) > end) {
        count(0, q, V_MALFORMED);
        return XDP_PASS;
    }
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end || ip->ihl < 5) {
            count(0, q, V_MALFORMED);
            return XDP_PASS;
        }
        /* Non-first fragments carry no UDP header; ESP fragments go to the socket, which
         * counts and drops them (we do not reassemble). */
        proto = ip->protocol;
        l4 = (void *)ip + ip->ihl * 4;
        if (proto == IPPROTO_UDP && (ip->frag_off & bpf_htons(0x1fff))) {
            count(0, q, V_PASS);
            return XDP_PASS;
        }
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end) {
            count(0, q, V_MALFORMED);
            return XDP_PASS;
        }
        proto = ip6->nexthdr;
        l4 = ip6 + 1;
        switch (ipv6_skip_ext(&l4, &proto, end)) {
        case EXT_OK:
            break;
        case EXT_NON_FIRST_FRAG:
            count(0, q, V_PASS);
            return XDP_PASS;
        case EXT_TRUNCATED:
            count(0, q, V_MALFORMED);
            return XDP_PASS;
        default:
            count(0, q, V_EXT_LIMIT);
            return XDP_PASS;
        }
    } else {
        count(0, q, V_PASS); /* ARP and the rest */
        return XDP_PASS;
    }

    if (proto == IPPROTO_ESP)
        return outside_to_socket(q, V_ESP);
    if (proto == IPPROTO_UDP) {
        struct udphdr *udp = l4;
        if ((void *)(udp + 1) > end) {
            count(0, q, V_MALFORMED);
            return XDP_PASS;
        }
        if (udp->dest == bpf_htons(NAT_T_PORT)) {
            __u32 *marker = (void *)(udp + 1);
            /* RFC 3948 §2.2: four zero bytes mean IKE; one 0xff byte is a keepalive. The UDP
             * length decides, not the frame: Ethernet pads a keepalive to 60 bytes, and the
             * padding must not read as an SPI. Less than an ESP header is not ESP. */
            if (bpf_ntohs(udp->len) < sizeof(*udp) + 8 || (void *)(marker + 1) > end ||
                *marker == 0) {
                count(0, q, V_IKE);
                return XDP_PASS;
            }
            return outside_to_socket(q, V_ESP_UDP);
        }
        if (udp->dest == bpf_htons(500)) {
            count(0, q, V_IKE);
            return XDP_PASS;
        }
    }
    count(0, q, V_PASS);
    return XDP_PASS;
}

SEC("xdp")
int xdp_inside(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    __u32 q = ctx->rx_queue_index;
    struct ethhdr *eth = data;

    if ((void *)(eth + 1) > end) {
        count(1, q, V_MALFORMED);
        return XDP_PASS;
    }
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        struct lpm_v4 key = { .prefixlen = 32 };
        if ((void *)(ip + 1) > end) {
            count(1, q, V_MALFORMED);
            return XDP_PASS;
        }
        __builtin_memcpy(key.addr, &ip->daddr, 4);
        if (bpf_map_lookup_elem(&protected_v4, &key))
            return inside_to_socket(q);
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        struct lpm_v6 key = { .prefixlen = 128 };
        if ((void *)(ip6 + 1) > end) {
            count(1, q, V_MALFORMED);
            return XDP_PASS;
        }
        __builtin_memcpy(key.addr, &ip6->daddr, 16);
        if (bpf_map_lookup_elem(&protected_v6, &key))
            return inside_to_socket(q);
    }
    count(1, q, V_PASS);
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
