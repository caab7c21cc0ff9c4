// SPDX-License-Identifier: MIT
/*
 * aioxdp's XDP program: hand the userspace TCP stack exactly its own flows and
 * leave everything else to Linux.
 *
 * A TCP segment (IPv4 or IPv6, Ethernet with at most one VLAN tag) is "ours"
 * when its destination (address, port) is in `listeners`, when its destination
 * address is in `local_addrs` and a wildcard listener (all-zero address) holds
 * its port, or when its destination address is in `local_addrs` and its port
 * lies in `port_range` (the local ports of the stack's outgoing connections).
 * Ours goes to the AF_XDP socket of the receive queue through `xsks_map`;
 * everything else (ARP, ICMP, ND, other ports) is XDP_PASSed to the kernel,
 * which keeps owning addresses, neighbours and routes.
 *
 * The stages are parse -> classify -> (protection, added later: rate limits,
 * SYN cookies, allow/deny lists, each with its own counter in
 * aioxdp_counter) -> redirect. Every bounds check fails closed: a header that
 * does not fit the frame is never read.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "aioxdp_common.h"

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, AIOXDP_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AIOXDP_MAX_LISTENERS);
	__type(key, struct aioxdp_endpoint);
	__type(value, __u8);
} listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AIOXDP_MAX_LOCAL_ADDRS);
	__type(key, struct aioxdp_endpoint);
	__type(value, __u8);
} local_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct aioxdp_port_range);
} port_range SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AIOXDP_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Where the parser is in the frame. */
struct cursor {
	void *pos;
	void *end;
};

static __always_inline int verdict(enum aioxdp_counter which, int action)
{
	__u32 key = which;
	__u64 *value = bpf_map_lookup_elem(&counters, &key);

	if (value)
		*value += 1;
	return action;
}

/* Returns a pointer to `len` bytes at the cursor and advances past them, or
 * NULL when they do not fit in the frame. */
static __always_inline void *take(struct cursor *c, __u32 len)
{
	void *start = c->pos;

	if (start + len > c->end)
		return NULL;
	c->pos = start + len;
	return start;
}

/* Ethernet with at most one 802.1Q/802.1ad tag. Returns the EtherType in
 * network byte order, or 0 when the header is truncated. */
static __always_inline __u16 parse_ethernet(struct cursor *c)
{
	struct ethhdr *eth = take(c, sizeof(*eth));
	__u16 proto;

	if (!eth)
		return 0;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		/* tag control information, then the inner EtherType */
		__u16 *tag = take(c, 2 * sizeof(__u16));

		if (!tag)
			return 0;
		proto = tag[1];
	}
	return proto;
}

/* Fills dst with the destination address; returns the L4 protocol, or -1 for
 * a truncated or invalid header, or -2 for a fragment. */
static __always_inline int parse_ipv4(struct cursor *c, struct aioxdp_endpoint *dst)
{
	struct iphdr *ip = take(c, sizeof(*ip));

	if (!ip || ip->version != 4 || ip->ihl < 5)
		return -1;
	/* options: skip to the end of the header, if it fits */
	if (ip->ihl > 5 && !take(c, (ip->ihl - 5) * 4))
		return -1;
	__builtin_memcpy(dst->addr, &ip->daddr, 4);
	dst->family = AIOXDP_FAMILY_IPV4;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return -2;
	return ip->protocol;
}

/* IPv6: only a TCP header right after the fixed header counts; extension
 * headers go to the kernel (the stack never sends them). */
static __always_inline int parse_ipv6(struct cursor *c, struct aioxdp_endpoint *dst)
{
	struct ipv6hdr *ip6 = take(c, sizeof(*ip6));

	if (!ip6 || ip6->version != 6)
		return -1;
	__builtin_memcpy(dst->addr, &ip6->daddr, 16);
	dst->family = AIOXDP_FAMILY_IPV6;
	return ip6->nexthdr;
}

static __always_inline int is_local(struct aioxdp_endpoint *dst)
{
	struct aioxdp_endpoint key = *dst;

	key.port = 0;
	return bpf_map_lookup_elem(&local_addrs, &key) != NULL;
}

static __always_inline int in_port_range(__u16 port_be)
{
	__u32 zero = 0;
	struct aioxdp_port_range *range = bpf_map_lookup_elem(&port_range, &zero);
	__u16 port = bpf_ntohs(port_be);

	return range && range->hi && port >= range->lo && port <= range->hi;
}

/* dst carries the destination address and port of a TCP segment. */
static __always_inline int is_ours(struct aioxdp_endpoint *dst)
{
	struct aioxdp_endpoint wildcard = {};

	if (bpf_map_lookup_elem(&listeners, dst))
		return 1;
	if (!is_local(dst))
		return 0;
	wildcard.port = dst->port;
	wildcard.family = dst->family;
	return bpf_map_lookup_elem(&listeners, &wildcard) || in_port_range(dst->port);
}

SEC("xdp")
int aioxdp_redirect(struct xdp_md *ctx)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	struct aioxdp_endpoint dst = {};
	struct tcphdr *tcp;
	__u16 proto;
	int l4;

	proto = parse_ethernet(&c);
	if (proto == bpf_htons(ETH_P_IP))
		l4 = parse_ipv4(&c, &dst);
	else if (proto == bpf_htons(ETH_P_IPV6))
		l4 = parse_ipv6(&c, &dst);
	else
		return verdict(AIOXDP_CNT_PASS_NOT_IP, XDP_PASS);

	/* the kernel drops a truncated IP header as well (ip_rcv_core) */
	if (l4 == -1)
		return verdict(AIOXDP_CNT_DROP_MALFORMED, XDP_DROP);
	if (l4 == -2)
		return verdict(AIOXDP_CNT_PASS_FRAGMENT, XDP_PASS);
	if (l4 != IPPROTO_TCP)
		return verdict(AIOXDP_CNT_PASS_NOT_TCP, XDP_PASS);

	/* RFC 9293 §3.1: data offset counts 32-bit words, at least 5 */
	tcp = take(&c, sizeof(*tcp));
	if (!tcp || tcp->doff < 5 || !take(&c, (tcp->doff - 5) * 4)) {
		if (is_local(&dst))
			return verdict(AIOXDP_CNT_DROP_MALFORMED, XDP_DROP);
		return verdict(AIOXDP_CNT_PASS_NOT_OURS, XDP_PASS);
	}
	dst.port = tcp->dest;
	if (!is_ours(&dst))
		return verdict(AIOXDP_CNT_PASS_NOT_OURS, XDP_PASS);

	/* protection stage goes here */

	if (bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS) == XDP_REDIRECT)
		return verdict(AIOXDP_CNT_REDIRECTED, XDP_REDIRECT);
	return verdict(AIOXDP_CNT_REDIRECT_NO_SOCKET, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
