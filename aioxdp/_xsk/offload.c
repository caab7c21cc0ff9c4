/* SPDX-License-Identifier: MIT */
/*
 * The per-frame byte work around the TCP core, in batches (DESIGN.md, "the
 * hot path"): parse received frames into records (records.h), coalesce
 * in-order segments of one flow into one record the way Linux's
 * tcp_gro_receive does, and cut one large outgoing segment into wire-sized
 * frames the way tcp_gso_segment does. Nothing here decides TCP: which
 * segments are acceptable, what to ACK, is the core's.
 *
 * Independent of the rings: xsk.c includes this file and feeds it UMEM
 * frames; axsk_parse_frames and axsk_cut_frame run the same code over
 * caller buffers, for tests and benchmarks.
 *
 * Parsing accepts only what aioxdp/tcp/wire.py's parse_frame would turn
 * into a Segment, and decodes it to the same fields; every frame it is not
 * sure of (IPv4 options, IPv6 extension headers, 802.1ad, ICMP, anything
 * malformed) becomes a raw record, and Python parses it with wire.py as
 * before, counting what it drops. So the C code may be narrower than
 * wire.py, never different.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "csum.h"
#include "records.h"

#define AXO_FIN 0x01
#define AXO_SYN 0x02
#define AXO_PSH 0x08
#define AXO_ACK 0x10
#define AXO_CWR 0x80
#define AXO_TCP_HLEN 20
#define AXO_IPV4_HLEN 20
#define AXO_IPV6_HLEN 40
/* Payload of one coalesced record: Linux's GRO stops at 64 KB too, and the
 * core gets a bounded chunk per record. */
#define AXO_GRO_MAX 65535
/* Flows whose last record may still grow, at once, within a batch: Linux's
 * GRO keeps up to 8 per hash bucket; a batch rarely carries more bulk flows. */
#define AXO_OPEN 8

/* Per frame bookkeeping of axo_records, beside the record: where the
 * payload and the options are in the frame, and the chain of frames that
 * make up one record. */
struct axo_piece {
	const uint8_t *payload;
	const uint8_t *opts;
	uint32_t len; /* payload bytes */
	uint32_t opt_len;
	int32_t next; /* next frame of the same record, -1 */
	int32_t tail; /* a record's first frame: its last frame */
	uint8_t raw;
	uint8_t merged; /* joined an earlier record */
};

static inline uint32_t axo_load32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void axo_store32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* TCP options o[0:end] into r, with wire.py's _parse_options tolerance
 * (Linux's tcp_parse_options): a "silly" or partial option ends parsing,
 * a known kind of the wrong length is skipped, unknown kinds are skipped by
 * their length; later options of a kind replace earlier ones. end <= 40. */
static void axo_options(const uint8_t *o, uint32_t end, struct axsk_record *r)
{
	uint32_t i = 0;

	while (i < end) {
		uint32_t kind = o[i], size;

		if (kind == 0) /* EOL */
			break;
		if (kind == 1) { /* NOP */
			i++;
			continue;
		}
		if (end - i < 2)
			break;
		size = o[i + 1];
		if (size < 2 || size > end - i) /* RFC 9293 MUST-6 */
			break;
		switch (kind) {
		case 2: /* MSS */
			if (size == 4) {
				r->mss = axc_load16(o + i + 2);
				r->options |= AXSK_OPT_MSS;
			}
			break;
		case 3: /* window scale */
			if (size == 3) {
				r->wscale = o[i + 2];
				r->options |= AXSK_OPT_WSCALE;
			}
			break;
		case 4: /* SACK permitted */
			if (size == 2)
				r->options |= AXSK_OPT_SACK_PERM;
			break;
		case 5: /* SACK, RFC 2018 §3: 2 + 8n octets; size <= end <= 40 gives n <= 4 */
			if (size >= 10 && ((size - 2) & 7) == 0) {
				r->nsack = (uint8_t)((size - 2) / 8);
				for (uint32_t b = 0; b < 2u * r->nsack; b++)
					r->sack[b] = axo_load32(o + i + 2 + 4 * b);
			}
			break;
		case 8: /* timestamps */
			if (size == 10) {
				r->tsval = axo_load32(o + i + 2);
				r->tsecr = axo_load32(o + i + 6);
				r->options |= AXSK_OPT_TS;
			}
			break;
		}
		i += size; /* MUST-5 */
	}
}

/* Parses one frame into r (zeroed by the caller) and p. Returns 1 for a
 * segment wire.parse_frame would decode the same way, 0 for a frame left
 * to Python. Every length is checked before the bytes it covers are read. */
static int axo_parse(const uint8_t *f, uint32_t len, struct axsk_record *r, struct axo_piece *p)
{
	uint32_t off = AXC_ETH_HLEN, t, end, doff;
	uint16_t type;
	const uint8_t *ip;

	if (len < AXC_ETH_HLEN)
		return 0;
	type = axc_load16(f + 12);
	if (type == AXC_ETH_P_8021Q) { /* one tag, as wire.py (not 802.1ad) */
		if (len < AXC_ETH_HLEN + 4)
			return 0;
		type = axc_load16(f + 16);
		off += 4;
	}
	ip = f + off;
	if (type == AXC_ETH_P_IP) {
		uint32_t total;

		/* no IPv4 options (wire.py steps over them), TCP, not a fragment */
		if (len - off < AXO_IPV4_HLEN || ip[0] != 0x45 || ip[9] != AXC_PROTO_TCP ||
		    (axc_load16(ip + 6) & 0x3fff))
			return 0;
		total = axc_load16(ip + 2);
		if (total < AXO_IPV4_HLEN || total > len - off)
			return 0;
		memcpy(r->src, ip + 12, 4);
		memcpy(r->dst, ip + 16, 4);
		r->addr_len = 4;
		t = off + AXO_IPV4_HLEN;
		end = off + total; /* Ethernet padding after it is ignored */
	} else if (type == AXC_ETH_P_IPV6) {
		/* TCP straight after the fixed header: wire.py walks extension headers */
		if (len - off < AXO_IPV6_HLEN || ip[0] >> 4 != 6 || ip[6] != AXC_PROTO_TCP ||
		    axc_load16(ip + 4) > len - off - AXO_IPV6_HLEN)
			return 0;
		memcpy(r->src, ip + 8, 16);
		memcpy(r->dst, ip + 24, 16);
		r->addr_len = 16;
		t = off + AXO_IPV6_HLEN;
		end = t + axc_load16(ip + 4);
	} else {
		return 0;
	}
	if (end - t < AXO_TCP_HLEN)
		return 0;
	doff = (uint32_t)(f[t + 12] >> 4) * 4;
	if (doff < AXO_TCP_HLEN || doff > end - t) /* MUST-7: wire.py drops it, counted */
		return 0;
	r->sport = axc_load16(f + t);
	r->dport = axc_load16(f + t + 2);
	r->seq = axo_load32(f + t + 4);
	r->ack = axo_load32(f + t + 8);
	r->flags = f[t + 13];
	r->window = axc_load16(f + t + 14);
	r->urgent = axc_load16(f + t + 18);
	axo_options(f + t + AXO_TCP_HLEN, doff - AXO_TCP_HLEN, r);
	memcpy(r->src_mac, f + 6, 6);
	p->opts = f + t + AXO_TCP_HLEN;
	p->opt_len = doff - AXO_TCP_HLEN;
	p->payload = f + t + doff;
	p->len = end - t - doff;
	r->payload_len = p->len;
	return 1;
}

static int axo_same_flow(const struct axsk_record *a, const struct axsk_record *b)
{
	return a->sport == b->sport && a->dport == b->dport && a->addr_len == b->addr_len &&
	       memcmp(a->src, b->src, a->addr_len) == 0 && memcmp(a->dst, b->dst, a->addr_len) == 0;
}

/* A segment that may join a run or start one: data with exactly ACK (PSH
 * allowed: it ends the run), no SACK blocks. Linux merges FIN too; we keep
 * FIN, SYN, RST, URG, ECE, CWR and pure ACKs alone, for the core to see. */
static int axo_mergeable(const struct axsk_record *r, const struct axo_piece *p)
{
	return (r->flags & ~AXO_PSH) == AXO_ACK && p->len > 0 && r->nsack == 0;
}

/* tcp_gro_receive's rules for appending segment (r, p) to the run headed by
 * (h, hp): contiguous, same ACK, window and option bytes, and no bigger than
 * the run's first segment (whose size every piece but the last has: a
 * shorter one ends the run, axo_records). */
static int axo_can_join(const struct axsk_record *h, const struct axo_piece *hp,
			const struct axsk_record *r, const struct axo_piece *p)
{
	return p->len <= hp->len && h->payload_len + p->len <= AXO_GRO_MAX &&
	       h->segs < UINT16_MAX && r->seq == h->seq + h->payload_len && r->ack == h->ack &&
	       r->window == h->window && p->opt_len == hp->opt_len &&
	       memcmp(p->opts, hp->opts, p->opt_len) == 0;
}

static int axo_raw_port(const struct axsk_rx_options *o, uint16_t port)
{
	return o->raw_hi && port >= o->raw_lo && port <= o->raw_hi &&
	       !(port >= o->keep_lo && port <= o->keep_hi);
}

/* Turns n frames at base + [spans[2i], spans[2i+1]) into records in recs[]
 * (room for n) with their payloads in arena, in arrival order (a coalesced
 * record where its first frame was). pieces[] has room for n. A frame
 * whose payload no longer fits in the arena is left raw, so nothing is
 * ever written past it. Returns the number of records; pieces[i].raw says
 * which frames a raw record still points at. */
static uint32_t axo_records(const uint8_t *base, const uint64_t *spans, uint32_t n,
			    struct axo_piece *pieces, struct axsk_record *recs, uint8_t *arena,
			    uint64_t arena_len, const struct axsk_rx_options *o)
{
	int32_t open[AXO_OPEN];
	uint32_t nopen = 0, out = 0;
	uint64_t used = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct axsk_record *r = &recs[i];
		struct axo_piece *p = &pieces[i];
		uint32_t len = (uint32_t)(spans[2 * i + 1] - spans[2 * i]);

		memset(r, 0, sizeof(*r));
		memset(p, 0, sizeof(*p));
		r->frame = spans[2 * i];
		r->frame_len = len;
		r->segs = 1;
		p->next = -1;
		p->tail = (int32_t)i;
		if (!axo_parse(base + spans[2 * i], len, r, p) || axo_raw_port(o, r->dport) ||
		    used + p->len > arena_len) {
			struct axsk_record keep = *r;

			memset(r, 0, sizeof(*r));
			r->kind = AXSK_REC_RAW;
			r->frame = keep.frame;
			r->frame_len = keep.frame_len;
			r->segs = 1;
			p->raw = 1;
			nopen = 0; /* its flow is unknown: no later frame may pass it */
			continue;
		}
		used += p->len;
		if (!o->coalesce)
			continue;
		/* the open run of this flow, if any: joined, or closed by this segment */
		for (uint32_t j = 0; j < nopen; j++) {
			int32_t h = open[j];

			if (!axo_same_flow(&recs[h], r))
				continue;
			if (axo_mergeable(r, p) && axo_can_join(&recs[h], &pieces[h], r, p)) {
				pieces[pieces[h].tail].next = (int32_t)i;
				pieces[h].tail = (int32_t)i;
				p->merged = 1;
				recs[h].payload_len += p->len;
				recs[h].segs++;
				recs[h].gso_size = (uint16_t)pieces[h].len;
				recs[h].flags |= r->flags & AXO_PSH;
				if (!(r->flags & AXO_PSH) && p->len == pieces[h].len)
					break; /* still open */
			}
			open[j] = open[--nopen];
			break;
		}
		if (p->merged || !axo_mergeable(r, p) || (r->flags & AXO_PSH) || p->len > UINT16_MAX)
			continue;
		if (nopen == AXO_OPEN) /* the oldest run stops growing */
			memmove(open, open + 1, (AXO_OPEN - 1) * sizeof(open[0]));
		open[nopen < AXO_OPEN ? nopen++ : AXO_OPEN - 1] = (int32_t)i;
	}
	/* compact the records in place (out <= i) and gather each one's payload */
	used = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct axsk_record *r;

		if (pieces[i].merged)
			continue;
		if (out != i)
			recs[out] = recs[i];
		r = &recs[out++];
		if (r->kind != AXSK_REC_TCP)
			continue;
		r->payload = (uint32_t)used;
		for (int32_t k = (int32_t)i; k >= 0; k = pieces[k].next) {
			memcpy(arena + used, pieces[k].payload, pieces[k].len);
			used += pieces[k].len;
		}
	}
	return out;
}

/* axo_records over frames laid out in a caller buffer, for tests and
 * benchmarks; the frame offsets of raw records are offsets into base.
 * Returns the number of records, or -ENOMEM. */
int64_t axsk_parse_frames(const uint8_t *base, const uint64_t *spans, uint32_t n,
			  struct axsk_record *recs, uint8_t *arena, uint64_t arena_len,
			  const struct axsk_rx_options *o)
{
	struct axo_piece *pieces = calloc(n ? n : 1, sizeof(*pieces));
	uint32_t out;

	if (!pieces)
		return -ENOMEM;
	out = axo_records(base, spans, n, pieces, recs, arena, arena_len, o);
	free(pieces);
	return out;
}

/* ---- transmit: one super-frame, cut into wire frames ------------------- */

/* Where the headers of a super-frame are, and how it is cut. */
struct axo_cut {
	uint32_t l3; /* offset of the IP header */
	uint32_t l4; /* offset of the TCP header */
	uint32_t hlen; /* Ethernet to the end of the TCP options */
	uint32_t payload; /* bytes after hlen */
	uint32_t gso;
	uint32_t pieces;
	uint8_t ipv6;
};

/* Checks a frame to be cut into pieces of gso payload bytes and plans the
 * cut. The frame must be one IPv4/IPv6 TCP segment whose IP length fields
 * cover exactly the rest of the frame (as wire.write_frame writes them),
 * and no piece may be longer than max_len (a UMEM frame, or the longest
 * frame a multi-buffer socket sends). gso 0: one piece.
 * Returns 0, -EINVAL (not such a frame) or -EMSGSIZE (a piece too big). */
static int axo_cut_plan(const uint8_t *f, uint32_t len, uint32_t gso, uint32_t max_len,
			struct axo_cut *c)
{
	struct axc_layout l;
	uint32_t doff, first;

	if (!gso) {
		c->pieces = 1;
		c->payload = c->gso = c->hlen = 0;
		return len && len <= max_len ? 0 : -EMSGSIZE;
	}
	if (axc_parse(f, len, &l) != AXC_OK || !l.l3 || l.proto != AXC_PROTO_TCP)
		return -EINVAL;
	c->l3 = (uint32_t)(l.l3 - f);
	c->l4 = (uint32_t)(l.l4 - f);
	c->ipv6 = l.ipv6;
	if (c->l4 + l.l4_len != len) /* no trailing bytes: they would be lost */
		return -EINVAL;
	doff = (uint32_t)(l.l4[12] >> 4) * 4;
	if (doff < AXO_TCP_HLEN || doff > l.l4_len)
		return -EINVAL;
	c->hlen = c->l4 + doff;
	c->payload = l.l4_len - doff;
	c->gso = gso;
	c->pieces = c->payload <= gso ? 1 : (c->payload + gso - 1) / gso;
	first = c->hlen + (c->payload < gso ? c->payload : gso);
	return first <= max_len ? 0 : -EMSGSIZE;
}

/* The length of piece i of the planned cut of a frame of len bytes. */
static uint32_t axo_piece_len(const struct axo_cut *c, uint32_t len, uint32_t i)
{
	uint32_t off = i * c->gso;

	if (c->pieces == 1)
		return len;
	return c->hlen + (c->payload - off < c->gso ? c->payload - off : c->gso);
}

/* Writes the headers of piece i of the planned cut of f (of more than one
 * piece) to dst, c->hlen bytes, as tcp_gso_segment: copied from the
 * super-frame, IP length per piece, the sequence number advanced by the
 * payload offset, FIN and PSH only on the last piece, CWR only on the first
 * (RFC 3168 §6.1.2: one reduction per window); the IPv4 ID advanced per piece
 * unless DF is set (RFC 6864: atomic datagrams). Checksums are left to
 * axo_piece_checksums. Returns the piece's length; its payload is the
 * super-frame's at c->hlen + i * c->gso. */
static uint32_t axo_piece_headers(uint8_t *dst, const uint8_t *f, const struct axo_cut *c,
				  uint32_t i)
{
	uint32_t off = i * c->gso;
	uint32_t plen = c->hlen + (c->payload - off < c->gso ? c->payload - off : c->gso);
	uint8_t *ip = dst + c->l3, *th = dst + c->l4;

	memcpy(dst, f, c->hlen);
	if (c->ipv6) {
		axc_store16(ip + 4, (uint16_t)(plen - c->l3 - AXO_IPV6_HLEN));
	} else {
		axc_store16(ip + 2, (uint16_t)(plen - c->l3));
		if (!(axc_load16(ip + 6) & 0x4000))
			axc_store16(ip + 4, (uint16_t)(axc_load16(ip + 4) + i));
	}
	axo_store32(th + 4, axo_load32(th + 4) + off);
	if (i + 1 < c->pieces)
		th[13] &= (uint8_t)~(AXO_FIN | AXO_PSH);
	if (i)
		th[13] &= (uint8_t)~AXO_CWR;
	return plen;
}

/* Fills in the IPv4 header and TCP checksums of a piece of plen bytes whose
 * headers (axo_piece_headers) are at dst and whose payload is at payload:
 * the two need not be contiguous (a jumbo piece goes out spread over UMEM
 * frames, its payload summed where the super-frame holds it). The TCP header
 * is a whole number of 32-bit words, so summing it and the payload apart is
 * summing them end to end. */
static void axo_piece_checksums(uint8_t *dst, const uint8_t *payload, const struct axo_cut *c,
				uint32_t plen)
{
	struct axc_layout l = {
		.l3 = dst + c->l3,
		.l4 = dst + c->l4,
		.l4_len = plen - c->l4,
		.proto = AXC_PROTO_TCP,
		.ipv6 = c->ipv6,
	};
	uint8_t *ip = dst + c->l3, *th = dst + c->l4;
	uint64_t sum;

	if (!c->ipv6) {
		axc_store16(ip + 10, 0);
		axc_store16(ip + 10, axc_fold(axc_sum(ip, c->l4 - c->l3, 0)));
	}
	axc_store16(th + 16, 0);
	sum = axc_sum(th, c->hlen - c->l4, axc_pseudo(&l));
	axc_store16(th + 16, axc_fold(axc_sum(payload, plen - c->hlen, sum)));
}

/* Writes piece i of the planned cut of f to dst (room for axo_piece_len),
 * checksums filled in; returns its length. */
static uint32_t axo_cut_piece(uint8_t *dst, const uint8_t *f, uint32_t len,
			      const struct axo_cut *c, uint32_t i)
{
	uint32_t plen;

	if (c->pieces == 1) {
		memcpy(dst, f, len);
		axc_fill(dst, len);
		return len;
	}
	plen = axo_piece_headers(dst, f, c, i);
	memcpy(dst + c->hlen, f + c->hlen + i * c->gso, plen - c->hlen);
	axo_piece_checksums(dst, dst + c->hlen, c, plen);
	return plen;
}

/* Cuts one frame into pieces of at most max_len bytes written end to end to
 * out (room for out_len bytes), their lengths in lens (room for max_pieces),
 * as the transmit path would queue them; for tests. Returns the number of
 * pieces or a negative errno (axo_cut_plan's, or -ENOSPC). */
int64_t axsk_cut_frame(const uint8_t *f, uint32_t len, uint32_t gso, uint32_t max_len,
		       uint8_t *out, uint64_t out_len, uint32_t *lens, uint32_t max_pieces)
{
	struct axo_cut c;
	uint64_t pos = 0;
	int err = axo_cut_plan(f, len, gso, max_len, &c);

	if (err)
		return err;
	if (c.pieces > max_pieces || out_len < (uint64_t)c.pieces * max_len)
		return -ENOSPC;
	for (uint32_t i = 0; i < c.pieces; i++) {
		lens[i] = axo_cut_piece(out + pos, f, len, &c, i);
		pos += lens[i];
	}
	return c.pieces;
}
