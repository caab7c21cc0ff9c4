/* SPDX-License-Identifier: MIT */
/*
 * Internet checksums for whole frames: the per-packet byte work of the data
 * path, kept in C. Shared by the cffi extension (xsk.c) and the C baseline
 * benchmark (bench/c/xsk_bench.c), so both do exactly the same work.
 *
 * A frame is Ethernet (optionally one VLAN tag), then IPv4 or IPv6, then TCP,
 * UDP or ICMP (ICMPv4 over IPv4, ICMPv6 over IPv6: the errors about our own
 * segments that the XDP program hands over). Anything else is "not
 * checksummed here" and is left alone.
 */
#ifndef AIOXDP_CSUM_H
#define AIOXDP_CSUM_H

#include <stdint.h>
#include <string.h>

#define AXC_ETH_HLEN 14
#define AXC_ETH_P_IP 0x0800
#define AXC_ETH_P_IPV6 0x86DD
#define AXC_ETH_P_8021Q 0x8100
#define AXC_ETH_P_8021AD 0x88A8
#define AXC_PROTO_TCP 6
#define AXC_PROTO_UDP 17
#define AXC_PROTO_ICMP 1
#define AXC_PROTO_ICMPV6 58

/* Result of axc_verify(). */
enum axc_verdict {
	AXC_OK = 0, /* checksums verified, or nothing we checksum */
	AXC_BAD_CHECKSUM = 1,
	AXC_MALFORMED = 2, /* headers claim more bytes than the frame holds */
};

static inline uint16_t axc_load16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline void axc_store16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* RFC 1071 one's-complement sum of `len` bytes, added to `sum`; not folded.
 * Adds native-order 32-bit words into a 64-bit accumulator: the sum is
 * byte-order independent (RFC 1071 §2(B)), so folding it and storing the
 * 16-bit result back to memory yields the wire bytes (axc_fold). */
static inline uint64_t axc_sum(const uint8_t *p, size_t len, uint64_t sum)
{
	uint32_t w;
	uint16_t h;

	while (len >= 32) {
		uint64_t a, b, c, d;

		memcpy(&a, p, 8);
		memcpy(&b, p + 8, 8);
		memcpy(&c, p + 16, 8);
		memcpy(&d, p + 24, 8);
		/* add each 64-bit word as two 32-bit halves: no carry is lost */
		sum += (a & 0xffffffffu) + (a >> 32) + (b & 0xffffffffu) + (b >> 32);
		sum += (c & 0xffffffffu) + (c >> 32) + (d & 0xffffffffu) + (d >> 32);
		p += 32;
		len -= 32;
	}
	while (len >= 4) {
		memcpy(&w, p, 4);
		sum += w;
		p += 4;
		len -= 4;
	}
	if (len >= 2) {
		memcpy(&h, p, 2);
		sum += h;
		p += 2;
		len -= 2;
	}
	if (len) {
		/* RFC 1071 §4.1: an odd byte is padded with a zero byte */
		uint8_t last[2] = {p[0], 0};

		memcpy(&h, last, 2);
		sum += h;
	}
	return sum;
}

/* Folds a native-order accumulator to 16 bits and returns the checksum
 * (complement) in network byte order as an integer. */
static inline uint16_t axc_fold(uint64_t sum)
{
	uint8_t b[2];
	uint16_t h;

	sum = (sum & 0xffffffffu) + (sum >> 32);
	sum = (sum & 0xffffffffu) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	h = (uint16_t)~sum;
	memcpy(b, &h, 2);
	return axc_load16(b);
}

/* Adds a 16-bit value given in host order as if it were two bytes on the wire. */
static inline uint64_t axc_sum16(uint64_t sum, uint16_t v)
{
	uint8_t b[2];
	uint16_t h;

	axc_store16(b, v);
	memcpy(&h, b, 2);
	return sum + h;
}

/* Where the headers of a frame are. */
struct axc_layout {
	const uint8_t *l3; /* NULL when the frame is neither IPv4 nor IPv6 */
	const uint8_t *l4;
	uint32_t l4_len; /* TCP/UDP/ICMP header and payload, from the IP length field */
	uint8_t proto; /* 0 when there is no L4 checksum to handle */
	uint8_t ipv6;
};

/* Finds the headers. Returns AXC_MALFORMED when the IP header or the length
 * it claims does not fit in the frame (Ethernet padding after it is fine). */
static inline int axc_parse(const uint8_t *f, uint32_t len, struct axc_layout *l)
{
	uint32_t off = AXC_ETH_HLEN;
	uint16_t type;

	l->l3 = NULL;
	l->proto = 0;
	if (len < AXC_ETH_HLEN)
		return AXC_OK;
	type = axc_load16(f + 12);
	if (type == AXC_ETH_P_8021Q || type == AXC_ETH_P_8021AD) {
		if (len < AXC_ETH_HLEN + 4)
			return AXC_OK;
		type = axc_load16(f + 16);
		off += 4;
	}
	if (type == AXC_ETH_P_IP) {
		uint32_t ihl, tot;

		if (len < off + 20 || f[off] >> 4 != 4)
			return AXC_MALFORMED;
		ihl = (uint32_t)(f[off] & 0x0f) * 4;
		tot = axc_load16(f + off + 2);
		/* RFC 791 §3.1: IHL >= 5 words, total length covers the header */
		if (ihl < 20 || tot < ihl || len < off + tot)
			return AXC_MALFORMED;
		l->l3 = f + off;
		l->ipv6 = 0;
		l->l4 = l->l3 + ihl;
		l->l4_len = tot - ihl;
		/* a fragment has no whole L4 segment to checksum */
		if (axc_load16(f + off + 6) & 0x3fff)
			return AXC_OK;
		l->proto = f[off + 9];
	} else if (type == AXC_ETH_P_IPV6) {
		uint32_t plen;

		if (len < off + 40 || f[off] >> 4 != 6)
			return AXC_MALFORMED;
		plen = axc_load16(f + off + 4);
		if (len < off + 40 + plen)
			return AXC_MALFORMED;
		l->l3 = f + off;
		l->ipv6 = 1;
		l->l4 = l->l3 + 40;
		l->l4_len = plen;
		l->proto = f[off + 6];
	} else {
		return AXC_OK;
	}
	if (l->proto == (l->ipv6 ? AXC_PROTO_ICMPV6 : AXC_PROTO_ICMP))
		return l->l4_len < 8 ? AXC_MALFORMED : AXC_OK; /* the ICMP header */
	if (l->proto != AXC_PROTO_TCP && l->proto != AXC_PROTO_UDP)
		l->proto = 0;
	else if (l->l4_len < (l->proto == AXC_PROTO_TCP ? 20u : 8u))
		return AXC_MALFORMED;
	return AXC_OK;
}

/* Sum of the IPv4 (RFC 9293 §3.1) or IPv6 (RFC 8200 §8.1) pseudo-header. */
static inline uint64_t axc_pseudo(const struct axc_layout *l)
{
	uint64_t sum;

	if (l->ipv6)
		sum = axc_sum(l->l3 + 8, 32, 0);
	else
		sum = axc_sum(l->l3 + 12, 8, 0);
	sum = axc_sum16(sum, l->proto);
	if (l->ipv6)
		sum = axc_sum16(axc_sum16(sum, (uint16_t)(l->l4_len >> 16)), (uint16_t)l->l4_len);
	else
		sum = axc_sum16(sum, (uint16_t)l->l4_len);
	return sum;
}

/* Where the L4 checksum field is: RFC 9293 §3.1, RFC 768, RFC 792/4443. */
static inline uint32_t axc_csum_offset(uint8_t proto)
{
	return proto == AXC_PROTO_TCP ? 16 : proto == AXC_PROTO_UDP ? 6 : 2;
}

/* The sum an L4 checksum starts from: the pseudo-header, except for ICMPv4,
 * whose checksum covers the ICMP message alone (RFC 792). */
static inline uint64_t axc_l4_start(const struct axc_layout *l)
{
	return l->proto == AXC_PROTO_ICMP ? 0 : axc_pseudo(l);
}

/* RFC 9293 MUST-2/3 and RFC 791: verify the IPv4 header checksum and the
 * TCP/UDP/ICMP checksum of a received frame. */
static inline int axc_verify(const uint8_t *f, uint32_t len)
{
	struct axc_layout l;
	int r = axc_parse(f, len, &l);

	if (r != AXC_OK)
		return r;
	if (l.l3 && !l.ipv6 && axc_fold(axc_sum(l.l3, (size_t)(l.l4 - l.l3), 0)) != 0)
		return AXC_BAD_CHECKSUM;
	if (!l.proto)
		return AXC_OK;
	/* RFC 768: a zero UDP checksum over IPv4 means "none sent" */
	if (l.proto == AXC_PROTO_UDP && !l.ipv6 && axc_load16(l.l4 + 6) == 0)
		return AXC_OK;
	if (axc_fold(axc_sum(l.l4, l.l4_len, axc_l4_start(&l))) != 0)
		return AXC_BAD_CHECKSUM;
	return AXC_OK;
}

/* Fills in the IPv4 header checksum and the TCP/UDP/ICMP checksum of a frame
 * about to be sent; whatever the checksum fields held is ignored. */
static inline void axc_fill(uint8_t *f, uint32_t len)
{
	struct axc_layout l;
	uint8_t *field;
	uint16_t c;

	if (axc_parse(f, len, &l) != AXC_OK)
		return;
	if (l.l3 && !l.ipv6) {
		uint8_t *ip = (uint8_t *)l.l3;

		axc_store16(ip + 10, 0);
		axc_store16(ip + 10, axc_fold(axc_sum(ip, (size_t)(l.l4 - l.l3), 0)));
	}
	if (!l.proto)
		return;
	field = (uint8_t *)l.l4 + axc_csum_offset(l.proto);
	axc_store16(field, 0);
	c = axc_fold(axc_sum(l.l4, l.l4_len, axc_l4_start(&l)));
	/* RFC 768: a computed zero is sent as all ones */
	if (c == 0 && l.proto == AXC_PROTO_UDP)
		c = 0xffff;
	axc_store16(field, c);
}

#endif
