/* SPDX-License-Identifier: MIT */
/*
 * Map keys, values and counter indices shared by the XDP program
 * (bpf/aioxdp.bpf.c) and userspace (aioxdp/_xsk/build.py mirrors them in its
 * cdef). Plain fixed-width types only, so that both sides agree on the layout.
 */
#ifndef AIOXDP_COMMON_H
#define AIOXDP_COMMON_H

#include <linux/types.h>

#define AIOXDP_FAMILY_IPV4 4
#define AIOXDP_FAMILY_IPV6 6

/* Key of the `listeners` hash (port set) and of `local_addrs` (port 0).
 * An IPv4 address fills addr[0..3] and leaves the rest zero. A listener whose
 * address is all zeros is a wildcard: it matches any address in local_addrs. */
struct aioxdp_endpoint {
	__u8 addr[16];
	__u16 port; /* network byte order */
	__u8 family; /* AIOXDP_FAMILY_IPV4 or AIOXDP_FAMILY_IPV6 */
	__u8 pad; /* must be zero: part of the hash key */
};

/* Single entry of the `port_range` array: local ports (host byte order)
 * reserved for the stack's outgoing connections. hi == 0 disables it. */
struct aioxdp_port_range {
	__u16 lo;
	__u16 hi;
};

/* One per-CPU counter per verdict, indices into the `counters` map. The
 * protection stage (rate limits, SYN cookies, allow/deny lists) adds its own
 * verdicts before AIOXDP_CNT_MAX; userspace reads names from the Python list
 * in aioxdp/_xsk/__init__.py, which must follow this order. */
enum aioxdp_counter {
	AIOXDP_CNT_PASS_NOT_IP = 0, /* ARP, LLDP, anything but IPv4/IPv6 */
	AIOXDP_CNT_PASS_NOT_TCP, /* ICMP, UDP, ND, IPv6 extension headers */
	AIOXDP_CNT_PASS_FRAGMENT, /* IPv4 fragments: left to the kernel */
	AIOXDP_CNT_PASS_NOT_OURS, /* TCP for the kernel's own sockets */
	AIOXDP_CNT_REDIRECTED, /* handed to the AF_XDP socket */
	AIOXDP_CNT_REDIRECT_NO_SOCKET, /* ours, but no socket on this queue: passed */
	AIOXDP_CNT_DROP_MALFORMED, /* truncated headers aimed at one of our flows */
	AIOXDP_CNT_MAX,
};

#define AIOXDP_MAX_QUEUES 64
#define AIOXDP_MAX_LISTENERS 4096
#define AIOXDP_MAX_LOCAL_ADDRS 256

#endif
