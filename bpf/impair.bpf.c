// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * Link impairment for tests: a tc (clsact) program that drops and duplicates
 * packets at random, because this kernel has no sch_netem.
 *
 * Attached with `tc filter add dev X {egress|ingress} bpf direct-action`.
 * Userspace (aioxdp/impair.py) finds the two maps below by the program's id
 * and writes the rates into impair_config after attaching; until then
 * packets pass untouched and uncounted.
 *
 * Rates are fractions of 2^32: a packet is dropped when a fresh
 * bpf_get_prandom_u32() is below `loss`, so loss = 2^32 drops everything and
 * 0 drops nothing. The fields are 64-bit so that 2^32 fits.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* skb->mark of our own duplicates, so that a clone coming through this hook
 * again is passed as is instead of being duplicated or dropped once more */
#define IMPAIR_CLONE_MARK 0x1a3b5c7d

struct impair_config {
	__u64 loss;      /* drop probability * 2^32 */
	__u64 duplicate; /* duplicate probability * 2^32 (of packets not dropped) */
	__u32 protocol;  /* non-zero: only this IP protocol (IPPROTO_TCP, ...) */
	__u32 flags;     /* IMPAIR_F_* */
};

/* set with every write from userspace: until the first one, the program
 * neither impairs nor counts */
#define IMPAIR_F_ACTIVE  (1U << 0)
/* attached at ingress: duplicates go in again, not out */
#define IMPAIR_F_INGRESS (1U << 1)

enum impair_counter {
	IMPAIR_SEEN,       /* packets the rates applied to */
	IMPAIR_DROPPED,
	IMPAIR_DUPLICATED,
	IMPAIR_NR_COUNTERS,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct impair_config);
} impair_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, IMPAIR_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} impair_counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *value = bpf_map_lookup_elem(&impair_counters, &which);

	if (value)
		__sync_fetch_and_add(value, 1);
}

/* the IPv4 protocol or the IPv6 next header (extension headers are not
 * walked); 0 for anything else and for a packet too short to tell */
static __always_inline __u8 ip_protocol(struct __sk_buff *skb)
{
	__u8 proto = 0;
	__u32 offset;

	if (skb->protocol == bpf_htons(ETH_P_IP))
		offset = ETH_HLEN + __builtin_offsetof(struct iphdr, protocol);
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		offset = ETH_HLEN + __builtin_offsetof(struct ipv6hdr, nexthdr);
	else
		return 0;
	if (bpf_skb_load_bytes(skb, offset, &proto, sizeof(proto)) < 0)
		return 0;
	return proto;
}

/* a uniform draw in [0, 2^32) against a threshold in [0, 2^32] */
static __always_inline int chance(__u64 threshold)
{
	return (__u64)bpf_get_prandom_u32() < threshold;
}

SEC("tc")
int impair(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct impair_config *cfg = bpf_map_lookup_elem(&impair_config, &zero);
	__u32 mark;

	if (!cfg || !(cfg->flags & IMPAIR_F_ACTIVE) || skb->mark == IMPAIR_CLONE_MARK)
		return TC_ACT_OK;
	if (cfg->protocol && ip_protocol(skb) != cfg->protocol)
		return TC_ACT_OK;
	count(IMPAIR_SEEN);
	if (chance(cfg->loss)) {
		/* STOLEN, not SHOT: at egress SHOT returns NET_XMIT_DROP to a
		 * local sender, which then sends the packet again (ping
		 * retries, TCP keeps the segment queued) — a full queue, not a
		 * loss. STOLEN reports success and the packet vanishes, as it
		 * would on a wire. */
		count(IMPAIR_DROPPED);
		return TC_ACT_STOLEN;
	}
	if (chance(cfg->duplicate)) {
		/* the clone leaves first, through the same hook of the same
		 * device: out again at egress, in again at ingress */
		mark = skb->mark;
		skb->mark = IMPAIR_CLONE_MARK;
		if (bpf_clone_redirect(skb, skb->ifindex,
				       cfg->flags & IMPAIR_F_INGRESS ? BPF_F_INGRESS : 0) == 0)
			count(IMPAIR_DUPLICATED);
		skb->mark = mark;
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
