// SPDX-License-Identifier: MIT
/*
 * aioxdp's XDP program: hand the userspace TCP stack exactly its own flows and
 * leave everything else to Linux.
 *
 * A TCP segment (IPv4 or IPv6, Ethernet with at most one VLAN tag) is "ours"
 * when its destination (address, port) is in `listeners`, when its destination
 * address is in `local_addrs` and a wildcard listener (all-zero address) holds
 * its port, when its destination address is in `local_addrs` and its port
 * lies in `port_range` (the local ports of the stack's outgoing connections),
 * or when its destination address is in `local_addrs` and its 4-tuple is in
 * `flows` (a connection that outlived its listener).
 * Ours goes to the AF_XDP socket of the receive queue through `xsks_map`;
 * everything else (ARP, ICMP, ND, other ports) is XDP_PASSed to the kernel,
 * which keeps owning addresses, neighbours and routes.
 *
 * Except the ICMP errors about our own segments (TCP-CHECKLIST 21): ICMPv4
 * destination unreachable (fragmentation needed among them) and time
 * exceeded, ICMPv6 destination unreachable, packet too big and time exceeded,
 * whose quoted packet is TCP sent from the frame's destination address, from
 * an (address, port) we own as above. They go to the AF_XDP socket too (the
 * kernel has no socket for those flows), so that path MTU discovery works
 * (RFC 1191, RFC 8201); the stack acts on one only if the sequence number it
 * quotes is in flight (RFC 5927 §4.1). Echo, neighbour discovery and every
 * other ICMP message stay with the kernel. Errors pass the source stages (2,
 * 3) below like segments do.
 *
 * The stages are parse -> classify -> protect -> redirect. Protection applies
 * only to traffic aimed at our flows (everything else is passed untouched) and
 * counts every decision in aioxdp_counter:
 *   1. malformed: truncated headers, IP length vs frame, TCP data offset,
 *      impossible flag combinations, first fragments (IPv4 or IPv6); then,
 *      only when the drop_no_ack setting is on, segments with none of SYN,
 *      ACK and RST (by default they go on: a closed port answers them);
 *   2. deny list, then allow list when allow-only mode is on (LPM tries);
 *   3. a token bucket per source address (LRU hash);
 *   4. SYN flood defence (RFC 4987 §3.6, SYN cookies): above a SYN rate (or
 *      always) SYNs to listeners are answered here with SYN cookies by
 *      XDP_TX, in aioxdp/tcp/cookies.py's exact format and keys, so the
 *      userspace table accepts the ACK that completes the handshake; below it
 *      SYNs go to userspace, which then keeps every option;
 *   5. established flows, the state a stateful firewall keeps (RFC 4987
 *      §3.8): every other segment to one of our ports must belong to a
 *      connection the stack holds, which it keeps in `flows`, or, to a
 *      listener, be an ACK carrying a valid cookie (a handshake completing:
 *      no entry yet).
 *      The rest, "unknown flows" (floods of spoofed ACKs, strays of closed
 *      connections), reach the stack only within a global budget, a token
 *      bucket per CPU (1000/s by default, aioxdp/protect.py): enough for the
 *      stack to answer strays with RST, which is rate-limited the way
 *      kernels limit such answers (FreeBSD's net.inet.icmp.icmplim covers
 *      RSTs to closed ports; Linux's net.ipv4.tcp_invalid_ratelimit, its
 *      icmp_msgs_per_sec/icmp_msgs_burst), and the flood costs the stack at
 *      most the budget. The same holds for the port range, where the
 *      stack's own outgoing connections live (their entries go in before
 *      their SYNs leave; no cookies there), but for the tuples a kernel
 *      socket bound there explicitly has: those are passed to Linux.
 * Every bounds check fails closed: a header that does not fit the frame is
 * never read.
 *
 * Clock: bpf_ktime_get_ns() is CLOCK_MONOTONIC, the clock of Python's
 * time.monotonic() and so of asyncio's loop.time(), the `now` the userspace
 * table uses: cookie counters (now >> 6 s) and TSvals (ms) agree.
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
#define IP_DF 0x4000
#define IP_OFFSET 0x1fff
#define IPV6_FRAG_OFFSET 0xfff8 /* RFC 8200 §4.5: the offset bits of offset/res/M */
#define NEXTHDR_FRAGMENT 44
#define ICMP_DEST_UNREACH 3 /* RFC 792 */
#define ICMP_TIME_EXCEEDED 11
#define ICMPV6_DEST_UNREACH 1 /* RFC 4443 §3 */
#define ICMPV6_TIME_EXCEEDED 3 /* 2 between them: packet too big */
#define TTL 64

#define TCP_FLAGS_FIN 0x01
#define TCP_FLAGS_SYN 0x02
#define TCP_FLAGS_RST 0x04
#define TCP_FLAGS_ACK 0x10

/* aioxdp/tcp/cookies.py */
#define COOKIE_BITS 24
#define COOKIE_MASK ((1U << COOKIE_BITS) - 1)
#define COOKIE_COUNTER_SHIFT 6
#define MAX_COOKIE_AGE 2
#define TS_BITS 6
#define TS_OPT_WSCALE_MASK 0x0f
#define TS_OPT_SACK 0x10
#define MAX_WSCALE 14
#define NSEC_PER_SEC 1000000000ULL
#define NSEC_PER_MSEC 1000000ULL

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

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct aioxdp_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct aioxdp_cookie_keys);
} cookie_keys SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct aioxdp_syn_state);
} syn_state SEC(".maps");

/* value: packets the prefix matched (a rule's hit count) */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, AIOXDP_MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct aioxdp_lpm_key);
	__type(value, __u64);
} deny_list SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, AIOXDP_MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct aioxdp_lpm_key);
	__type(value, __u64);
} allow_list SEC(".maps");

/* Stage 5: the stack's connections (struct aioxdp_flow). Written by
 * userspace only; no preallocation, so memory follows the connections. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AIOXDP_MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct aioxdp_flow);
	__type(value, __u8);
} flows SEC(".maps");

/* The unknown-flow budget's GCRA theoretical arrival time, one per CPU: no
 * atomics on the packet path, and a host receiving on N CPUs lets up to N
 * times the configured rate through. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} unknown_budget SEC(".maps");

/* source address (::ffff:a.b.c.d for IPv4) -> GCRA theoretical arrival time */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AIOXDP_MAX_SOURCES);
	__type(key, struct aioxdp_lpm_key);
	__type(value, __u64);
} rate_buckets SEC(".maps");

/* Where the parser is in the frame. */
struct cursor {
	void *pos;
	void *end;
};

enum fragment { FRAG_NONE, FRAG_FIRST, FRAG_LATER };
/* OURS_FLOW: a connection the stack holds (in `flows`) on a local port no listener
 * holds: one of its own outgoing connections (port range), or one accepted by a
 * listener since closed */
enum owner { NOT_OURS, OURS_LISTENER, OURS_PORT_RANGE, OURS_FLOW };

/* What the parser learnt about a segment. */
struct packet {
	struct aioxdp_endpoint src;
	struct aioxdp_endpoint dst;
	void *l3; /* the IP header */
	struct tcphdr *tcp;
	__u32 l3_len; /* bytes the IP header claims, its own included */
	__u8 fragment; /* enum fragment */
	__u8 vlan; /* one 802.1Q/802.1ad tag before the IP header */
};

/* The 40-byte SipHash input of aioxdp/tcp/cookies.py (flow_hash_input): the
 * `flows` key, then one word. */
struct flow_input {
	struct aioxdp_flow f;
	__be32 word;
} __attribute__((aligned(8)));

_Static_assert(sizeof(struct flow_input) == 40, "cookies.py hashes 40 bytes");

/* The options of a SYN that a cookie keeps. */
struct syn_options {
	__u32 tsval; /* host order */
	__u16 mss; /* 0: none */
	__u8 wscale;
	__u8 has_wscale;
	__u8 sack;
	__u8 has_ts;
};

static __always_inline void count(enum aioxdp_counter which)
{
	__u32 key = which;
	__u64 *value = bpf_map_lookup_elem(&counters, &key);

	if (value)
		*value += 1;
}

static __always_inline int verdict(enum aioxdp_counter which, int action)
{
	count(which);
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
static __always_inline __u16 parse_ethernet(struct cursor *c, struct packet *pk)
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
		pk->vlan = 1;
	}
	return proto;
}

/* Returns the L4 protocol, or -1 for a truncated or invalid header. */
static __always_inline int parse_ipv4(struct cursor *c, struct packet *pk)
{
	struct iphdr *ip = take(c, sizeof(*ip));

	if (!ip || ip->version != 4 || ip->ihl < 5)
		return -1;
	/* options: skip to the end of the header, if it fits */
	if (ip->ihl > 5 && !take(c, (ip->ihl - 5) * 4))
		return -1;
	pk->l3 = ip;
	pk->l3_len = bpf_ntohs(ip->tot_len);
	__builtin_memcpy(pk->src.addr, &ip->saddr, 4);
	__builtin_memcpy(pk->dst.addr, &ip->daddr, 4);
	pk->src.family = pk->dst.family = AIOXDP_FAMILY_IPV4;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		pk->fragment = FRAG_LATER;
	else if (ip->frag_off & bpf_htons(IP_MF))
		pk->fragment = FRAG_FIRST;
	return ip->protocol;
}

/* IPv6: TCP right after the fixed header, or after a fragment header (which
 * the stack never sends; RFC 8200 §4.5); any other extension header goes to
 * the kernel. */
static __always_inline int parse_ipv6(struct cursor *c, struct packet *pk)
{
	struct ipv6hdr *ip6 = take(c, sizeof(*ip6));
	struct {
		__u8 nexthdr;
		__u8 reserved;
		__be16 frag_off;
		__be32 identification;
	} *frag;

	if (!ip6 || ip6->version != 6)
		return -1;
	pk->l3 = ip6;
	pk->l3_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	__builtin_memcpy(pk->src.addr, &ip6->saddr, 16);
	__builtin_memcpy(pk->dst.addr, &ip6->daddr, 16);
	pk->src.family = pk->dst.family = AIOXDP_FAMILY_IPV6;
	if (ip6->nexthdr != NEXTHDR_FRAGMENT)
		return ip6->nexthdr;
	frag = take(c, sizeof(*frag));
	if (!frag)
		return -1;
	pk->fragment = frag->frag_off & bpf_htons(IPV6_FRAG_OFFSET) ? FRAG_LATER : FRAG_FIRST;
	return frag->nexthdr;
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

/* Is (local, remote) a connection in `flows`? */
static __always_inline int in_flows(struct aioxdp_endpoint *local, struct aioxdp_endpoint *remote)
{
	struct aioxdp_flow f;

	__builtin_memcpy(f.local_addr, local->addr, 16);
	__builtin_memcpy(f.remote_addr, remote->addr, 16);
	f.local_port = local->port;
	f.remote_port = remote->port;
	return bpf_map_lookup_elem(&flows, &f) != NULL;
}

/* Has the kernel a TCP socket for this tuple (listening, connected, TIME-WAIT):
 * what tcp_v4_rcv/tcp_v6_rcv would find? */
static __always_inline int kernel_socket(struct xdp_md *ctx, struct aioxdp_endpoint *local,
					 struct aioxdp_endpoint *remote)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;

	if (local->family == AIOXDP_FAMILY_IPV4) {
		__builtin_memcpy(&t.ipv4.saddr, remote->addr, 4);
		__builtin_memcpy(&t.ipv4.daddr, local->addr, 4);
		t.ipv4.sport = remote->port;
		t.ipv4.dport = local->port;
		sk = bpf_skc_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	} else {
		__builtin_memcpy(t.ipv6.saddr, remote->addr, 16);
		__builtin_memcpy(t.ipv6.daddr, local->addr, 16);
		t.ipv6.sport = remote->port;
		t.ipv6.dport = local->port;
		sk = bpf_skc_lookup_tcp(ctx, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* local: the address and port of ours a TCP segment is sent to (or, quoted in an
 * ICMP error, was sent from); remote: the other end. A connection outlives its
 * listener (asyncio's Server.close() leaves accepted connections open, as closing
 * a listening socket does), so a local port no listener and no port range claims
 * is still ours for the tuples in `flows`: without that, Linux would answer them
 * with RST. In the port range (which the kernel never picks itself, reserved), a
 * tuple of none of the stack's connections that a kernel socket has -- one a
 * program bound there explicitly -- is the kernel's: otherwise that socket would
 * never hear from its peers. OURS_FLOW: the tuple is in `flows`. */
static __always_inline enum owner is_ours(struct xdp_md *ctx, struct aioxdp_endpoint *local,
					  struct aioxdp_endpoint *remote)
{
	struct aioxdp_endpoint wildcard = {};

	if (bpf_map_lookup_elem(&listeners, local))
		return OURS_LISTENER;
	if (!is_local(local))
		return NOT_OURS;
	wildcard.port = local->port;
	wildcard.family = local->family;
	if (bpf_map_lookup_elem(&listeners, &wildcard))
		return OURS_LISTENER;
	if (in_flows(local, remote))
		return OURS_FLOW;
	if (in_port_range(local->port))
		return kernel_socket(ctx, local, remote) ? NOT_OURS : OURS_PORT_RANGE;
	return NOT_OURS;
}

/* ---- 1. malformed ---------------------------------------------------------- */

/* The IP length must cover the headers parsed and fit in the frame (Ethernet
 * padding may follow it). */
static __always_inline int bad_length(struct xdp_md *ctx, struct packet *pk, void *tcp_end)
{
	__u32 l3_offset = pk->l3 - (void *)(long)ctx->data;
	__u32 headers = tcp_end - pk->l3;
	__u32 frame = bpf_xdp_get_buff_len(ctx);

	return pk->l3_len < headers || l3_offset + pk->l3_len > frame;
}

/* RFC 9293 §3.10.7: combinations no correct peer sends (TCP-CHECKLIST 19).
 * A segment with none of SYN, ACK, RST (data or FIN alone, no flags) is not
 * among them: to a port of no connection it must be answered with
 * <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> (RFC 9293 §3.10.7.1, as Linux
 * does), which the stack's table does (no_ack below). */
static __always_inline int bad_flags(__u8 flags)
{
	if ((flags & TCP_FLAGS_SYN) && (flags & (TCP_FLAGS_FIN | TCP_FLAGS_RST)))
		return 1;
	return (flags & TCP_FLAGS_FIN) && (flags & TCP_FLAGS_RST) && !(flags & TCP_FLAGS_ACK);
}

/* None of SYN, ACK, RST: no connection's data (RFC 9293 §3.10.7.4, fifth:
 * "if the ACK bit is off, drop"), a listener ignores it (§3.10.7.2), only a
 * closed port answers it (RST,ACK). Such segments reach the stack as unknown
 * flows (stage 5, within the budget), or, with drop_no_ack set, none does. */
static __always_inline int no_ack(__u8 flags)
{
	return !(flags & (TCP_FLAGS_SYN | TCP_FLAGS_ACK | TCP_FLAGS_RST));
}

/* Two aioxdp_endpoint addresses (IPv4 zero-padded) alike? */
static __always_inline int same_address(const __u8 *a, const __u8 *b)
{
	__u64 a0, a1, b0, b1;

	__builtin_memcpy(&a0, a, 8);
	__builtin_memcpy(&a1, a + 8, 8);
	__builtin_memcpy(&b0, b, 8);
	__builtin_memcpy(&b1, b + 8, 8);
	return a0 == b0 && a1 == b1;
}

/* Is this ICMP message (the cursor at its header) an error about one of our
 * segments? RFC 792 and RFC 4443 §2.4 promise the quoted IP header and the
 * first 8 bytes after it: TCP's ports and sequence number. The quote must be
 * IP + TCP (no extension headers: the stack sends none; no later fragment),
 * sent from the frame's destination address and from one of our (address,
 * port) pairs, and lie within the outer IP length. */
static __always_inline int icmp_error_ours(struct xdp_md *ctx, struct cursor *c,
					   struct packet *pk, int l4)
{
	struct aioxdp_endpoint from = {}, to = {};
	__u8 *icmp = take(c, 8);
	__be16 *ports;

	if (!icmp)
		return 0;
	if (pk->dst.family == AIOXDP_FAMILY_IPV4) {
		struct iphdr *ip;

		if (l4 != IPPROTO_ICMP ||
		    (icmp[0] != ICMP_DEST_UNREACH && icmp[0] != ICMP_TIME_EXCEEDED))
			return 0;
		ip = take(c, sizeof(*ip));
		if (!ip || ip->version != 4 || ip->ihl < 5 || ip->protocol != IPPROTO_TCP ||
		    (ip->frag_off & bpf_htons(IP_OFFSET)))
			return 0;
		if (ip->ihl > 5 && !take(c, (ip->ihl - 5) * 4))
			return 0;
		__builtin_memcpy(from.addr, &ip->saddr, 4);
		__builtin_memcpy(to.addr, &ip->daddr, 4);
	} else {
		struct ipv6hdr *ip6;

		if (l4 != IPPROTO_ICMPV6 || icmp[0] < ICMPV6_DEST_UNREACH ||
		    icmp[0] > ICMPV6_TIME_EXCEEDED)
			return 0;
		ip6 = take(c, sizeof(*ip6));
		if (!ip6 || ip6->version != 6 || ip6->nexthdr != IPPROTO_TCP)
			return 0;
		__builtin_memcpy(from.addr, &ip6->saddr, 16);
		__builtin_memcpy(to.addr, &ip6->daddr, 16);
	}
	ports = take(c, 8);
	if (!ports || bad_length(ctx, pk, c->pos) || !same_address(from.addr, pk->dst.addr))
		return 0;
	from.family = to.family = pk->dst.family;
	from.port = ports[0];
	to.port = ports[1];
	return is_ours(ctx, &from, &to) != NOT_OURS;
}

/* ---- 2. and 3. sources -------------------------------------------------------- */

/* The source as an LPM/bucket key: IPv4 mapped into IPv6 (RFC 4291 §2.5.5.2). */
static __always_inline void source_key(struct packet *pk, struct aioxdp_lpm_key *key)
{
	key->prefixlen = 128;
	if (pk->src.family == AIOXDP_FAMILY_IPV4) {
		__builtin_memset(key->addr, 0, 10);
		key->addr[10] = key->addr[11] = 0xff;
		__builtin_memcpy(key->addr + 12, pk->src.addr, 4);
	} else {
		__builtin_memcpy(key->addr, pk->src.addr, 16);
	}
}

static __always_inline int listed(void *list, struct aioxdp_lpm_key *key)
{
	__u64 *hits = bpf_map_lookup_elem(list, key);

	if (hits)
		__sync_fetch_and_add(hits, 1);
	return hits != NULL;
}

/* GCRA, a token bucket as one timestamp: a packet is allowed when the
 * theoretical arrival time *tat is at most `burst` ns ahead of now, and
 * moves it on by `interval`. Returns 1 when allowed. */
static __always_inline int gcra_take(__u64 *tat, __u64 now, __u64 interval, __u64 burst)
{
	__u64 t = *tat;

	if (t < now)
		t = now;
	if (t - now > burst)
		return 0;
	*tat = t + interval;
	return 1;
}

/* The token bucket per source (rate_interval_ns, rate_burst_ns). Two CPUs
 * racing on one source may both pass: exact to within one packet per
 * concurrent CPU. */
static __always_inline int rate_limited(struct aioxdp_config *cfg, struct aioxdp_lpm_key *key,
					__u64 now)
{
	__u64 interval = cfg->rate_interval_ns;
	__u64 *slot, tat;

	if (!interval)
		return 0;
	slot = bpf_map_lookup_elem(&rate_buckets, key);
	if (!slot) {
		tat = now + interval;
		bpf_map_update_elem(&rate_buckets, key, &tat, BPF_ANY);
		return 0;
	}
	return !gcra_take(slot, now, interval, cfg->rate_burst_ns);
}

/* Stages 2 and 3: returns XDP_DROP (counted) for a source denied, not
 * allowed or above its rate, else -1. */
static __always_inline int screen_source(struct packet *pk, struct aioxdp_config *cfg, __u64 now)
{
	struct aioxdp_lpm_key source;

	source_key(pk, &source);
	if (listed(&deny_list, &source))
		return verdict(AIOXDP_CNT_DROP_DENIED, XDP_DROP);
	if (cfg->allow_only && !listed(&allow_list, &source))
		return verdict(AIOXDP_CNT_DROP_NOT_ALLOWED, XDP_DROP);
	if (rate_limited(cfg, &source, now))
		return verdict(AIOXDP_CNT_DROP_RATE_LIMITED, XDP_DROP);
	return -1;
}

/* ---- 4. SYN cookies --------------------------------------------------------- */

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
	do {                                                                   \
		v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);      \
		v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                         \
		v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                         \
		v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);      \
	} while (0)
#define SIPCOMPRESS(m)                                                         \
	do {                                                                   \
		v3 ^= (m); SIPROUND; SIPROUND; v0 ^= (m);                      \
	} while (0)

/* The low 32 bits of SipHash-2-4 (Aumasson & Bernstein 2012) of the 40-byte
 * flow input under a 16-byte key, as cookies.flow_hash32: five message words
 * and the length word, every round unrolled. Global functions (this one and
 * the two below) are verified once, whatever their callers' states. */
__noinline __u32 aioxdp_flow_hash32(const struct aioxdp_sipkey *key, const struct flow_input *in)
{
	const __u64 *m;
	__u64 v0, v1, v2, v3;

	if (!key || !in)
		return 0;
	m = (const __u64 *)in;
	v0 = key->k[0] ^ 0x736f6d6570736575ULL;
	v1 = key->k[1] ^ 0x646f72616e646f6dULL;
	v2 = key->k[0] ^ 0x6c7967656e657261ULL;
	v3 = key->k[1] ^ 0x7465646279746573ULL;
	SIPCOMPRESS(m[0]);
	SIPCOMPRESS(m[1]);
	SIPCOMPRESS(m[2]);
	SIPCOMPRESS(m[3]);
	SIPCOMPRESS(m[4]);
	SIPCOMPRESS((__u64)sizeof(*in) << 56);
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return (__u32)(v0 ^ v1 ^ v2 ^ v3);
}

/* cookies.py's 64-second counter, int(now) >> 6 */
static __always_inline __u32 cookie_counter(__u64 now)
{
	return (__u32)((now / NSEC_PER_SEC) >> COOKIE_COUNTER_SHIFT);
}

/* Index into cookies.py's MSS_TABLE_V4/V6 (Linux's msstab): the largest
 * entry not above the SYN's MSS, 0 when it has none. */
static __always_inline __u32 mss_index(__u16 mss, int v6)
{
	if (mss >= 1460)
		return 3;
	if (mss >= 1440)
		return 2;
	return mss >= (v6 ? 1280 : 1300) ? 1 : 0;
}

/* cookies._check: is `cookie` one made with these keys for this flow, the
 * client's ISN and the current or the previous counter? */
static __always_inline int check_keys(const struct aioxdp_sipkey *key_a,
				      const struct aioxdp_sipkey *key_b, struct flow_input *in,
				      __u32 cookie, __u32 isn, __u32 counter)
{
	__u32 rest, age;

	in->word = 0;
	rest = cookie - aioxdp_flow_hash32(key_a, in) - isn;
	age = (counter - (rest >> COOKIE_BITS)) & (0xffffffffU >> COOKIE_BITS);
	if (age >= MAX_COOKIE_AGE)
		return 0;
	in->word = bpf_htonl(counter - age);
	return ((rest - aioxdp_flow_hash32(key_b, in)) & COOKIE_MASK) < 4; /* MSS table size */
}

/* cookies.check_cookie on an ACK (cookie = SEG.ACK - 1, isn = SEG.SEQ - 1),
 * under the current keys, then the previous ones. */
__noinline int aioxdp_cookie_valid(struct flow_input *in, __u32 cookie, __u32 isn, __u64 now)
{
	__u32 zero = 0, counter = cookie_counter(now);
	struct aioxdp_cookie_keys *keys = bpf_map_lookup_elem(&cookie_keys, &zero);

	if (!in || !keys)
		return 0;
	if (check_keys(&keys->a[0], &keys->b[0], in, cookie, isn, counter))
		return 1;
	return keys->has_previous &&
	       check_keys(&keys->a[1], &keys->b[1], in, cookie, isn, counter);
}

/* Is cookie mode on? Counts this SYN into the global 100 ms window; above
 * the threshold, cookie mode holds for AIOXDP_COOKIE_HOLD_NS after the last
 * window that crossed it. Races between CPUs only blur the count. */
static __always_inline int cookie_mode(struct aioxdp_config *cfg, struct aioxdp_syn_state *st,
				       __u64 now)
{
	if (cfg->syn_cookies != AIOXDP_SYNCOOKIES_ON)
		return 0;
	if (now - st->window_start_ns >= AIOXDP_SYN_WINDOW_NS) {
		st->window_start_ns = now;
		st->syns = 0;
	}
	__sync_fetch_and_add(&st->syns, 1);
	if (st->syns > cfg->syn_threshold)
		st->cookies_until_ns = now + AIOXDP_COOKIE_HOLD_NS;
	return now < st->cookies_until_ns;
}

/* What a cookie SYN-ACK needs from its SYN, copied out of the packet so that
 * one global function, verified once, builds the reply. */
struct syn_info {
	struct flow_input flow; /* word 0 */
	__u64 now;
	__u32 seq; /* host order */
	__u32 options_offset; /* from the frame's start */
	__u32 options_len;
	__u8 v6;
	__u8 vlan;
};

/* The SYN's MSS, window scale, SACK-permitted and TSval (RFC 9293 §3.2,
 * RFC 7323, RFC 2018), from the option bytes copied to `opt` (64 bytes, zero
 * past `len`), with the tolerance of aioxdp/tcp/wire.py's _parse_options:
 * unknown kinds skipped by their length, a wrong length ignores the option,
 * a length below 2 or past the end stops the walk. Unrolled over every position, reading only at constant
 * offsets: `next` (where the next option starts) is only compared, so the
 * verifier's states stay few. */
static __always_inline void parse_syn_options(const __u8 *opt, __u32 len, struct syn_options *o)
{
	__u32 next = 0;

#pragma unroll
	for (__u32 pos = 0; pos < 40; pos++) {
		__u8 kind = opt[pos], size = opt[pos + 1];

		if (pos != next || pos >= len)
			continue;
		if (kind == 0) { /* end of option list */
			next = 64;
			continue;
		}
		if (kind == 1) { /* no-operation */
			next = pos + 1;
			continue;
		}
		if (size < 2 || pos + size > len) {
			next = 64;
			continue;
		}
		if (kind == 2 && size == 4) {
			o->mss = (__u16)opt[pos + 2] << 8 | opt[pos + 3];
		} else if (kind == 3 && size == 3) {
			o->wscale = opt[pos + 2];
			o->has_wscale = 1;
		} else if (kind == 4 && size == 2) {
			o->sack = 1;
		} else if (kind == 8 && size == 10) {
			o->tsval = (__u32)opt[pos + 2] << 24 | (__u32)opt[pos + 3] << 16 |
				   (__u32)opt[pos + 4] << 8 | opt[pos + 5];
			o->has_ts = 1;
		}
		next = pos + size;
	}
}

static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

static __always_inline void put32(__u8 *p, __u32 value)
{
	__be32 be = bpf_htonl(value);

	__builtin_memcpy(p, &be, 4);
}

/* The SYN-ACK's TCP options after MSS, with timestamps: SACK-permitted (or
 * two NOPs), TS, then window scale (or four NOPs): 16 bytes, Linux's order. */
static __always_inline void put_ts_options(__u8 *op, int sack, __u32 tsval, __u32 tsecr,
					   int wscale)
{
	op[0] = sack ? 4 : 1;
	op[1] = sack ? 2 : 1;
	op[2] = 8;
	op[3] = 10;
	put32(op + 4, tsval);
	put32(op + 8, tsecr);
	op[12] = 1;
	op[13] = wscale >= 0 ? 3 : 1;
	op[14] = wscale >= 0 ? 3 : 1;
	op[15] = wscale >= 0 ? (__u8)wscale : 1;
}

/* Turns a SYN into its cookie SYN-ACK in place and returns XDP_TX, or
 * XDP_DROP when the frame cannot be reshaped: the segment userspace's
 * ConnectionTable._send_cookie would send, with cookies.make_cookie's ISN and
 * TSval. */
__noinline int aioxdp_syn_cookie_reply(struct xdp_md *ctx, struct syn_info *si)
{
	__u32 zero = 0;
	struct aioxdp_config *cfg = bpf_map_lookup_elem(&config, &zero);
	struct aioxdp_cookie_keys *keys = bpf_map_lookup_elem(&cookie_keys, &zero);
	struct flow_input in;
	struct syn_options o = {};
	__u8 opt[64] = {};
	__u32 counter, cookie, isn, tsval = 0, ip_len, tcp_len, l3_offset, len, mss;
	int v6, ts, wscale = -1, sack = 0;
	void *data, *end;
	struct ethhdr *eth;
	struct tcphdr *t;
	__u8 mac[ETH_ALEN];
	__u64 sum;

	if (!si || !cfg || !keys)
		return XDP_DROP;
	len = si->options_len;
	if (len > 40)
		return XDP_DROP;
	if (len && bpf_xdp_load_bytes(ctx, si->options_offset & 0xff, opt, len))
		return XDP_DROP;
	parse_syn_options(opt, len, &o);
	in = si->flow;
	v6 = si->v6;
	isn = si->seq;
	counter = cookie_counter(si->now);
	in.word = 0;
	cookie = aioxdp_flow_hash32(&keys->a[0], &in) + isn + (counter << COOKIE_BITS);
	in.word = bpf_htonl(counter);
	cookie += (aioxdp_flow_hash32(&keys->b[0], &in) + mss_index(o.mss, v6)) & COOKIE_MASK;

	/* Without timestamps nothing but the MSS survives a cookie */
	ts = o.has_ts && (cfg->synack_options & AIOXDP_SYNACK_TIMESTAMPS);
	if (ts) {
		/* Linux's cookie_init_timestamp: our ms clock with its low bits
		 * replaced by the SYN's options, never ahead of the clock */
		__u32 ts_now = (__u32)(si->now / NSEC_PER_MSEC);
		__u32 bits = o.has_wscale ? (o.wscale < MAX_WSCALE ? o.wscale : MAX_WSCALE)
					  : TS_OPT_WSCALE_MASK;

		if (o.sack)
			bits |= TS_OPT_SACK;
		tsval = (ts_now >> TS_BITS) << TS_BITS | bits;
		if (tsval > ts_now)
			tsval -= 1U << TS_BITS;
		if (o.has_wscale && (cfg->synack_options & AIOXDP_SYNACK_WSCALE))
			wscale = cfg->synack_wscale;
		sack = o.sack && (cfg->synack_options & AIOXDP_SYNACK_SACK);
	}

	l3_offset = sizeof(struct ethhdr) + (si->vlan ? 4 : 0);
	ip_len = v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	tcp_len = sizeof(struct tcphdr) + (ts ? 20 : 4);
	if (bpf_xdp_adjust_tail(ctx, (int)(l3_offset + ip_len + tcp_len) -
					  (int)bpf_xdp_get_buff_len(ctx)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;

	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);

	if (v6) {
		struct ipv6hdr *ip6 = data + l3_offset;
		struct {
			__u8 saddr[16];
			__u8 daddr[16];
			__be32 len;
			__be32 nexthdr;
		} pseudo; /* RFC 8200 §8.1 */

		if ((void *)(ip6 + 1) > end)
			return XDP_DROP;
		*(__be32 *)ip6 = bpf_htonl(0x60000000);
		ip6->payload_len = bpf_htons(tcp_len);
		ip6->nexthdr = IPPROTO_TCP;
		ip6->hop_limit = TTL;
		__builtin_memcpy(&ip6->saddr, in.f.local_addr, 16);
		__builtin_memcpy(&ip6->daddr, in.f.remote_addr, 16);
		__builtin_memcpy(pseudo.saddr, in.f.local_addr, 16);
		__builtin_memcpy(pseudo.daddr, in.f.remote_addr, 16);
		pseudo.len = bpf_htonl(tcp_len);
		pseudo.nexthdr = bpf_htonl(IPPROTO_TCP);
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&pseudo, sizeof(pseudo), 0);
		t = (struct tcphdr *)(ip6 + 1);
	} else {
		struct iphdr *ip = data + l3_offset;
		struct {
			__u8 saddr[4];
			__u8 daddr[4];
			__be32 proto_len;
		} pseudo; /* RFC 9293 §3.1 */

		if ((void *)(ip + 1) > end)
			return XDP_DROP;
		*(__u8 *)ip = 0x45; /* version 4, 5 words */
		ip->tos = 0;
		ip->tot_len = bpf_htons(ip_len + tcp_len);
		ip->id = 0;
		ip->frag_off = bpf_htons(IP_DF);
		ip->ttl = TTL;
		ip->protocol = IPPROTO_TCP;
		ip->check = 0;
		__builtin_memcpy(&ip->saddr, in.f.local_addr, 4);
		__builtin_memcpy(&ip->daddr, in.f.remote_addr, 4);
		ip->check = csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)ip, sizeof(*ip), 0));
		__builtin_memcpy(pseudo.saddr, in.f.local_addr, 4);
		__builtin_memcpy(pseudo.daddr, in.f.remote_addr, 4);
		pseudo.proto_len = bpf_htonl(IPPROTO_TCP << 16 | tcp_len);
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&pseudo, sizeof(pseudo), 0);
		t = (struct tcphdr *)(ip + 1);
	}

	if ((void *)t + sizeof(*t) + 4 > end)
		return XDP_DROP;
	t->source = in.f.local_port;
	t->dest = in.f.remote_port;
	t->seq = bpf_htonl(cookie);
	t->ack_seq = bpf_htonl(isn + 1);
	((__u8 *)t)[12] = (__u8)(tcp_len / 4) << 4;
	((__u8 *)t)[13] = TCP_FLAGS_SYN | TCP_FLAGS_ACK;
	t->window = bpf_htons(cfg->synack_window);
	t->check = 0;
	t->urg_ptr = 0;
	((__u8 *)(t + 1))[0] = 2; /* MSS */
	((__u8 *)(t + 1))[1] = 4;
	/* synack_mss is the IPv4 MSS (MTU - 40); IPv6's header is 20 bytes longer
	 * (RFC 8200 §5: MTU - 60), as the table's own SYN-ACKs (options.local_mss) */
	mss = cfg->synack_mss - (v6 ? 20 : 0);
	((__u8 *)(t + 1))[2] = mss >> 8;
	((__u8 *)(t + 1))[3] = mss & 0xff;
	if (ts) {
		if ((void *)t + sizeof(*t) + 20 > end)
			return XDP_DROP;
		put_ts_options((__u8 *)(t + 1) + 4, sack, tsval, o.tsval, wscale);
		sum = bpf_csum_diff(NULL, 0, (__be32 *)t, sizeof(*t) + 20, sum);
	} else {
		sum = bpf_csum_diff(NULL, 0, (__be32 *)t, sizeof(*t) + 4, sum);
	}
	t->check = csum_fold(sum);
	return XDP_TX;
}

static __always_inline void flow_of(struct packet *pk, struct flow_input *in)
{
	__builtin_memcpy(in->f.local_addr, pk->dst.addr, 16);
	__builtin_memcpy(in->f.remote_addr, pk->src.addr, 16);
	in->f.local_port = pk->dst.port;
	in->f.remote_port = pk->src.port;
	in->word = 0;
}

/* ---- 5. established flows --------------------------------------------------- */

static __always_inline int known_flow(struct flow_input *in)
{
	return bpf_map_lookup_elem(&flows, &in->f) != NULL;
}

/* May one more unknown-flow segment through? */
static __always_inline int unknown_flow_allowed(struct aioxdp_config *cfg, __u64 now)
{
	__u32 zero = 0;
	__u64 *tat;

	if (cfg->unknown_flows == AIOXDP_UNKNOWN_PASS)
		return 1;
	if (cfg->unknown_flows != AIOXDP_UNKNOWN_BUDGET)
		return 0;
	tat = bpf_map_lookup_elem(&unknown_budget, &zero);
	return tat && gcra_take(tat, now, cfg->unknown_interval_ns, cfg->unknown_burst_ns);
}

/* Stage 5 for a segment to one of our ports other than a SYN: returns
 * XDP_DROP (counted) or -1 to redirect. The map lookup comes first, so an
 * established connection's segments never pay for a cookie check. An ACK of
 * no known flow to a listener is checked for a cookie whoever made it: XDP in
 * cookie mode, or the table when its SYN backlog was full; the port range has
 * no cookies to check. */
static __always_inline int screen_flow(struct aioxdp_config *cfg, struct flow_input *in,
				       struct tcphdr *tcp, __u8 flags, __u64 now, int listener,
				       int known)
{
	/* no budget: nothing below could drop, so nothing is worth a lookup */
	if (cfg->unknown_flows == AIOXDP_UNKNOWN_PASS)
		return -1;
	if (known || known_flow(in)) { /* known: is_ours found it in `flows` already */
		count(AIOXDP_CNT_FLOW_HIT);
		return -1;
	}
	if (listener && (flags & (TCP_FLAGS_ACK | TCP_FLAGS_SYN | TCP_FLAGS_RST)) == TCP_FLAGS_ACK) {
		if (aioxdp_cookie_valid(in, bpf_ntohl(tcp->ack_seq) - 1, bpf_ntohl(tcp->seq) - 1,
					now)) {
			count(AIOXDP_CNT_COOKIE_ACK_VALID);
			return -1;
		}
		count(AIOXDP_CNT_COOKIE_ACK_INVALID);
	}
	if (unknown_flow_allowed(cfg, now)) {
		count(AIOXDP_CNT_UNKNOWN_FLOW_PASSED);
		return -1;
	}
	return verdict(AIOXDP_CNT_DROP_UNKNOWN_FLOW, XDP_DROP);
}

/* Stages 2-5 for a well-formed segment aimed at one of our flows: returns
 * an XDP action once it has decided (and counted), or -1 to redirect. */
static __always_inline int protect(struct xdp_md *ctx, struct packet *pk, enum owner owner,
				   __u8 flags)
{
	__u32 zero = 0;
	struct aioxdp_config *cfg = bpf_map_lookup_elem(&config, &zero);
	struct aioxdp_syn_state *st = bpf_map_lookup_elem(&syn_state, &zero);
	struct syn_info si = {};
	__u64 now = bpf_ktime_get_ns();
	int action;

	if (!cfg || !st)
		return -1;
	if (no_ack(flags) && cfg->drop_no_ack)
		return verdict(AIOXDP_CNT_DROP_NO_ACK, XDP_DROP);
	action = screen_source(pk, cfg, now);
	if (action >= 0)
		return action;

	flow_of(pk, &si.flow);
	if ((flags & (TCP_FLAGS_SYN | TCP_FLAGS_ACK)) == TCP_FLAGS_SYN) {
		if (!cookie_mode(cfg, st, now)) {
			if (owner == OURS_LISTENER)
				count(AIOXDP_CNT_SYN_PASSED);
			return -1;
		}
		if (owner == OURS_FLOW) { /* a SYN of a connection the stack has */
			count(AIOXDP_CNT_FLOW_HIT);
			return -1;
		}
		if (owner != OURS_LISTENER) /* no listener to answer for */
			return verdict(AIOXDP_CNT_SYN_DROPPED, XDP_DROP);
		/* a SYN of a connection the stack has (a retransmitted SYN
		 * whose SYN-ACK was lost, a TIME-WAIT tuple reused) is the
		 * stack's to answer: a cookie would not match its ISN */
		if (known_flow(&si.flow)) {
			count(AIOXDP_CNT_FLOW_HIT);
			return -1;
		}
		si.now = now;
		si.seq = bpf_ntohl(pk->tcp->seq);
		si.options_offset = (void *)(pk->tcp + 1) - (void *)(long)ctx->data;
		si.options_len = pk->tcp->doff * 4 - sizeof(struct tcphdr);
		si.v6 = pk->dst.family == AIOXDP_FAMILY_IPV6;
		si.vlan = pk->vlan;
		action = aioxdp_syn_cookie_reply(ctx, &si);
		return verdict(action == XDP_TX ? AIOXDP_CNT_SYN_COOKIE_SENT
						: AIOXDP_CNT_SYN_DROPPED, action);
	}
	return screen_flow(cfg, &si.flow, pk->tcp, flags, now, owner == OURS_LISTENER,
			   owner == OURS_FLOW);
}

/* Stages 2 and 3 for an ICMP error about our flows (its source is a router,
 * or the peer): an XDP action once decided, or -1 to redirect. */
static __always_inline int protect_icmp(struct packet *pk)
{
	__u32 zero = 0;
	struct aioxdp_config *cfg = bpf_map_lookup_elem(&config, &zero);

	return cfg ? screen_source(pk, cfg, bpf_ktime_get_ns()) : -1;
}

/* To the AF_XDP socket of this queue, counted in `which`; passed (and
 * counted) when the queue has none. */
static __always_inline int redirect(struct xdp_md *ctx, enum aioxdp_counter which)
{
	if (bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS) == XDP_REDIRECT)
		return verdict(which, XDP_REDIRECT);
	return verdict(AIOXDP_CNT_REDIRECT_NO_SOCKET, XDP_PASS);
}

/* "xdp.frags": the program handles frames of several buffers (jumbo frames,
 * AF_XDP multi-buffer): everything it reads lies in the headers, which the
 * first buffer holds, and lengths come from bpf_xdp_get_buff_len. Without it
 * a veth refuses a peer MTU above a page with the program attached natively,
 * and frames longer than a page cannot reach a socket bound with XDP_USE_SG. */
SEC("xdp.frags")
int aioxdp_redirect(struct xdp_md *ctx)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	struct packet pk = {};
	struct tcphdr *tcp;
	enum owner owner;
	__u16 proto;
	__u8 flags;
	int l4, action;

	proto = parse_ethernet(&c, &pk);
	if (proto == bpf_htons(ETH_P_IP))
		l4 = parse_ipv4(&c, &pk);
	else if (proto == bpf_htons(ETH_P_IPV6))
		l4 = parse_ipv6(&c, &pk);
	else
		return verdict(AIOXDP_CNT_PASS_NOT_IP, XDP_PASS);

	/* the kernel drops a truncated IP header as well (ip_rcv_core) */
	if (l4 == -1)
		return verdict(AIOXDP_CNT_DROP_MALFORMED, XDP_DROP);
	/* a later fragment carries no ports to judge it by: the kernel's */
	if (pk.fragment == FRAG_LATER)
		return verdict(AIOXDP_CNT_PASS_FRAGMENT, XDP_PASS);
	if (l4 != IPPROTO_TCP) {
		if ((l4 == IPPROTO_ICMP || l4 == IPPROTO_ICMPV6) && !pk.fragment &&
		    icmp_error_ours(ctx, &c, &pk, l4)) {
			action = protect_icmp(&pk);
			return action >= 0 ? action : redirect(ctx, AIOXDP_CNT_REDIRECTED_ICMP);
		}
		return verdict(AIOXDP_CNT_PASS_NOT_TCP, XDP_PASS);
	}

	/* RFC 9293 §3.1: data offset counts 32-bit words, at least 5 */
	tcp = take(&c, sizeof(*tcp));
	if (!tcp || tcp->doff < 5 || !take(&c, (tcp->doff - 5) * 4)) {
		if (is_local(&pk.dst))
			return verdict(AIOXDP_CNT_DROP_MALFORMED, XDP_DROP);
		return verdict(AIOXDP_CNT_PASS_NOT_OURS, XDP_PASS);
	}
	pk.tcp = tcp;
	pk.dst.port = tcp->dest;
	pk.src.port = tcp->source;
	owner = is_ours(ctx, &pk.dst, &pk.src);
	if (owner == NOT_OURS)
		return verdict(pk.fragment ? AIOXDP_CNT_PASS_FRAGMENT : AIOXDP_CNT_PASS_NOT_OURS,
			       XDP_PASS);

	/* TCP-CHECKLIST 20: no reassembly here, and the stack never fragments */
	if (pk.fragment)
		return verdict(AIOXDP_CNT_DROP_FRAGMENT, XDP_DROP);
	if (bad_length(ctx, &pk, c.pos))
		return verdict(AIOXDP_CNT_DROP_BAD_LENGTH, XDP_DROP);
	flags = ((__u8 *)tcp)[13];
	if (bad_flags(flags))
		return verdict(AIOXDP_CNT_DROP_BAD_FLAGS, XDP_DROP);
	action = protect(ctx, &pk, owner, flags);
	if (action >= 0)
		return action;

	return redirect(ctx, AIOXDP_CNT_REDIRECTED);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
