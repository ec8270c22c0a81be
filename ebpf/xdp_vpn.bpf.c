// SPDX-License-Identifier: MIT OR Apache-2.0 OR GPL-2.0
//
// The XDP program of the VPN concentrator: steers the packets the dataplane must handle to
// its AF_XDP sockets and passes everything else to the kernel.
//
// xdp_outside (WAN): ESP (IP protocol 50) and ESP-in-UDP (UDP/4500 whose first four payload
//   bytes are not zero, RFC 3948 §2.2) go to the AF_XDP socket of the packet's rx queue. IKE
//   (UDP/500, and UDP/4500 with the non-ESP marker), NAT keepalives, ARP/ND and all else pass.
// xdp_inside (LAN): packets whose destination falls in a protected prefix (LPM tries filled
//   by the dataplane from its policies) go to the socket; all else passes, including traffic
//   for the gateway itself and ARP/ND.
//
// Per-queue, per-verdict counters live in a per-CPU array: index = queue * N_VERDICTS + verdict.

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

enum verdict {
    V_ESP = 0,          /* outside: ESP to the socket */
    V_ESP_UDP = 1,      /* outside: ESP-in-UDP to the socket */
    V_IKE = 2,          /* outside: IKE / keepalive, to the kernel */
    V_PASS = 3,         /* not ours, to the kernel */
    V_PROTECTED = 4,    /* inside: protected destination, to the socket */
    V_NO_SOCKET = 5,    /* would go to a socket but the queue has none: to the kernel */
    V_MALFORMED = 6,    /* truncated headers: to the kernel, which will drop them */
    N_VERDICTS = 7,
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
    __uint(max_entries, MAX_QUEUES * N_VERDICTS * 2);
    __type(key, __u32);
    __type(value, __u64);
} stats SEC(".maps");

/* side: 0 outside, 1 inside */
static __always_inline void count(__u32 side, __u32 queue, enum verdict v)
{
    __u32 key = (side * MAX_QUEUES + (queue % MAX_QUEUES)) * N_VERDICTS + v;
    __u64 *c = bpf_map_lookup_elem(&stats, &key);
    if (c)
        *c += 1;
}

static __always_inline int to_socket(void *xsks, __u32 side, __u32 queue, enum verdict v)
{
    if (!bpf_map_lookup_elem(xsks, &queue)) {
        count(side, queue, V_NO_SOCKET);
        return XDP_PASS;
    }
    count(side, queue, v);
    return bpf_redirect_map(xsks, queue, XDP_PASS);
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
    } else {
        count(0, q, V_PASS); /* ARP and the rest */
        return XDP_PASS;
    }

    if (proto == IPPROTO_ESP)
        return to_socket(&xsks_outside, 0, q, V_ESP);
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
            return to_socket(&xsks_outside, 0, q, V_ESP_UDP);
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
            return to_socket(&xsks_inside, 1, q, V_PROTECTED);
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        struct lpm_v6 key = { .prefixlen = 128 };
        if ((void *)(ip6 + 1) > end) {
            count(1, q, V_MALFORMED);
            return XDP_PASS;
        }
        __builtin_memcpy(key.addr, &ip6->daddr, 16);
        if (bpf_map_lookup_elem(&protected_v6, &key))
            return to_socket(&xsks_inside, 1, q, V_PROTECTED);
    }
    count(1, q, V_PASS);
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
