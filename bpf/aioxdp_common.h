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

/* One per-CPU counter per verdict, indices into the `counters` map;
 * userspace reads names from COUNTER_NAMES in aioxdp/_xsk/__init__.py, which
 * must follow this order. */
enum aioxdp_counter {
	AIOXDP_CNT_PASS_NOT_IP = 0, /* ARP, LLDP, anything but IPv4/IPv6 */
	AIOXDP_CNT_PASS_NOT_TCP, /* UDP, ND, ICMP but our errors, IPv6 extension headers */
	AIOXDP_CNT_PASS_FRAGMENT, /* fragments not aimed at us: left to the kernel */
	AIOXDP_CNT_PASS_NOT_OURS, /* TCP for the kernel's own sockets */
	AIOXDP_CNT_REDIRECTED, /* handed to the AF_XDP socket */
	AIOXDP_CNT_REDIRECT_NO_SOCKET, /* ours, but no socket on this queue: passed */
	AIOXDP_CNT_DROP_MALFORMED, /* truncated headers aimed at one of our flows */
	/* protection stage: only traffic to our own flows gets this far */
	AIOXDP_CNT_DROP_BAD_LENGTH, /* IP length beyond the frame or short of the TCP header */
	AIOXDP_CNT_DROP_BAD_FLAGS, /* SYN+FIN, SYN+RST, RST+FIN without ACK */
	AIOXDP_CNT_DROP_FRAGMENT, /* first fragment (IPv4 or IPv6) aimed at our ports */
	AIOXDP_CNT_DROP_DENIED, /* source in the deny list */
	AIOXDP_CNT_DROP_NOT_ALLOWED, /* allow-only mode, source not in the allow list */
	AIOXDP_CNT_DROP_RATE_LIMITED, /* source above its token bucket */
	AIOXDP_CNT_SYN_PASSED, /* SYN to a listener handed to userspace (no cookie mode) */
	/* SYN answered by a cookie SYN-ACK: XDP_TX verdicts (a driver that then
	 * fails to send counts it in its own xdp_tx_errors) */
	AIOXDP_CNT_SYN_COOKIE_SENT,
	AIOXDP_CNT_SYN_DROPPED, /* SYN in cookie mode that could not be answered */
	/* stage 5, segments to a listener but SYNs (the redirected ones are
	 * counted again in AIOXDP_CNT_REDIRECTED) */
	AIOXDP_CNT_FLOW_HIT, /* of a connection in `flows` (SYNs too in cookie mode) */
	/* ACKs of no flow in `flows`, checked for a SYN cookie */
	AIOXDP_CNT_COOKIE_ACK_VALID, /* a cookie: completes a handshake, redirected */
	AIOXDP_CNT_COOKIE_ACK_INVALID, /* no cookie: an unknown flow */
	AIOXDP_CNT_UNKNOWN_FLOW_PASSED, /* unknown flow within the budget: redirected */
	AIOXDP_CNT_DROP_UNKNOWN_FLOW, /* unknown flow beyond the budget */
	/* an ICMP error quoting one of our segments, handed to the AF_XDP socket
	 * (not counted in AIOXDP_CNT_REDIRECTED) */
	AIOXDP_CNT_REDIRECTED_ICMP,
	/* a segment with none of SYN, ACK, RST (data or FIN alone, no flags)
	 * dropped because drop_no_ack is set */
	AIOXDP_CNT_DROP_NO_ACK,
	AIOXDP_CNT_MAX,
};

/* The `config` array's single entry, written by userspace (aioxdp/protect.py)
 * with a read-modify-write; zero everywhere means no protection. */
struct aioxdp_config {
	/* token bucket per source, as GCRA: a packet costs rate_interval_ns of
	 * credit, a source may run rate_burst_ns ahead. interval 0 = no limit */
	__u64 rate_interval_ns;
	__u64 rate_burst_ns;
	/* SYN cookies: AIOXDP_SYNCOOKIES_OFF, or ON when more than syn_threshold
	 * SYNs reach our listeners within one AIOXDP_SYN_WINDOW_NS (0: always) */
	__u32 syn_threshold;
	__u8 syn_cookies;
	__u8 allow_only; /* 1: only sources in `allow_list` reach the stack */
	/* the cookie SYN-ACK's own options, as the userspace table would send
	 * them (aioxdp/tcp/table.py _send_cookie) */
	__u16 synack_mss; /* IPv4's (MTU - 40); IPv6 SYN-ACKs announce 20 bytes less */
	__u16 synack_window; /* unscaled, as in every SYN-ACK */
	__u8 synack_wscale; /* our shift when the SYN offered window scaling */
	__u8 synack_options; /* AIOXDP_SYNACK_* */
	/* segments to a listener of no connection in `flows` and with no
	 * cookie: AIOXDP_UNKNOWN_PASS (all redirected), _BUDGET (a token bucket
	 * per CPU as GCRA, like rate_*) or _DROP (none redirected) */
	__u8 unknown_flows;
	/* segments with none of SYN, ACK, RST: 0 (default) lets them on like any
	 * other segment (a port of no connection answers RST,ACK, RFC 9293
	 * §3.10.7.1), 1 drops them all silently (AIOXDP_CNT_DROP_NO_ACK) */
	__u8 drop_no_ack;
	__u8 pad[2];
	__u64 unknown_interval_ns;
	__u64 unknown_burst_ns;
};

#define AIOXDP_SYNCOOKIES_OFF 0
#define AIOXDP_SYNCOOKIES_ON 1
#define AIOXDP_SYNACK_TIMESTAMPS 1
#define AIOXDP_SYNACK_WSCALE 2
#define AIOXDP_SYNACK_SACK 4
#define AIOXDP_SYN_WINDOW_NS 100000000ULL /* SYN rate measured per 100 ms */
#define AIOXDP_COOKIE_HOLD_NS 1000000000ULL /* cookie mode lasts 1 s past the flood */
#define AIOXDP_UNKNOWN_PASS 0
#define AIOXDP_UNKNOWN_BUDGET 1
#define AIOXDP_UNKNOWN_DROP 2

/* A SipHash key as aioxdp/tcp/cookies.py reads it: 16 bytes, two
 * little-endian u64. */
struct aioxdp_sipkey {
	__u64 k[2];
};

/* The cookie keys of aioxdp/tcp/cookies.py's CookieSecrets: [0] current,
 * [1] previous (valid when has_previous). */
struct aioxdp_cookie_keys {
	struct aioxdp_sipkey a[2];
	struct aioxdp_sipkey b[2];
	__u32 has_previous;
	__u32 pad;
};

/* The `syn_state` array's single entry: the global SYN rate measure. */
struct aioxdp_syn_state {
	__u64 window_start_ns;
	__u64 syns; /* SYNs to listeners since window_start_ns */
	__u64 cookies_until_ns; /* cookie mode stays on until then */
};

/* Key of `flows`: one connection the stack accepted from a listener, which
 * userspace adds before the segment answering its SYN (or its cookie ACK)
 * leaves and removes when the connection is gone (aioxdp/stack.py). The
 * addresses are aioxdp_endpoint's 16 bytes (IPv4 in [0..3], the rest zero);
 * with no family field an IPv6 tuple could in theory alias an IPv4 one, which
 * would only let its segments reach the stack, as they all did before the map.
 * It is also the start of the SYN cookie's SipHash input (aioxdp.bpf.c
 * struct flow_input, aioxdp/tcp/cookies.py). */
struct aioxdp_flow {
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u16 local_port; /* network byte order */
	__u16 remote_port; /* network byte order */
};

/* Key of `deny_list` and `allow_list` (LPM tries): IPv6, or IPv4 as
 * ::ffff:a.b.c.d (RFC 4291 §2.5.5.2) with prefixlen 96 + the IPv4 length. */
struct aioxdp_lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

#define AIOXDP_MAX_QUEUES 64
#define AIOXDP_MAX_LISTENERS 4096
#define AIOXDP_MAX_LOCAL_ADDRS 256
#define AIOXDP_MAX_PREFIXES 65536
#define AIOXDP_MAX_SOURCES 65536 /* rate-limit buckets (LRU) */
/* connections of all the stacks (workers) sharing one program, when
 * the loader does not size `flows` itself (XdpProgram.load's max_flows: a
 * stack's TcpConfig.max_connections, times the workers); entries take memory
 * only when used (BPF_F_NO_PREALLOC), about 100 bytes each, but the bucket
 * array (16 bytes per entry, rounded up to a power of two) is allocated whole */
#define AIOXDP_MAX_FLOWS 65536

#endif
