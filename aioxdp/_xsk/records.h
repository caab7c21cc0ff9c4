/* SPDX-License-Identifier: MIT */
/*
 * The receive records of the C frame path (offload.c): one fixed-size record
 * per TCP segment the C code parsed (possibly several wire segments
 * coalesced), or per frame it left to Python ("raw").
 *
 * This layout is defined here once. build.py hands the block between the
 * cdef markers to cffi as it stands, and aioxdp/tcp/records.py mirrors it
 * with struct formats (tests/test_records.py checks both against
 * ffi.offsetof). Fields are in host byte order, addresses as on the wire,
 * and ordered by size so that no compiler inserts padding.
 */
#ifndef AIOXDP_RECORDS_H
#define AIOXDP_RECORDS_H

#include <stdint.h>

/* cdef-begin */
#define AXSK_REC_TCP 0 /* parsed: the fields below are the segment */
#define AXSK_REC_RAW 1 /* not parsed here: frame/frame_len locate it in the UMEM */

/* bits of axsk_record.options: which TCP options the segment carried */
#define AXSK_OPT_MSS 1
#define AXSK_OPT_WSCALE 2
#define AXSK_OPT_SACK_PERM 4
#define AXSK_OPT_TS 8

#define AXSK_MAX_SACK 4 /* 40 octets of option space hold at most 4 blocks */

struct axsk_record {
	uint64_t frame; /* offset of the (first) frame in the UMEM */
	uint8_t src[16]; /* IPv4: the first 4 bytes */
	uint8_t dst[16];
	uint32_t seq;
	uint32_t ack;
	uint32_t tsval;
	uint32_t tsecr;
	uint32_t payload; /* offset of the payload in the payload arena */
	uint32_t payload_len; /* all coalesced wire segments' payload */
	uint32_t frame_len;
	uint32_t sack[8]; /* left, right edges of nsack blocks */
	uint16_t sport;
	uint16_t dport;
	uint16_t window; /* the raw 16-bit field */
	uint16_t urgent;
	uint16_t mss;
	uint16_t gso_size; /* payload of each coalesced wire segment; 0: one segment */
	uint16_t segs; /* wire segments in this record */
	uint8_t kind; /* AXSK_REC_* */
	uint8_t addr_len; /* 4 or 16; 0 for a raw record */
	uint8_t flags;
	uint8_t options; /* AXSK_OPT_* */
	uint8_t wscale;
	uint8_t nsack;
	uint8_t src_mac[6]; /* the hop the frame came from (NextHopMacs) */
	uint8_t pad[2];
};

/* Which frames recv_records leaves raw besides the ones it cannot parse:
 * destination ports in [raw_lo, raw_hi] outside [keep_lo, keep_hi] (another
 * worker's outgoing connections: Python relays the frame itself). raw_hi 0:
 * none. coalesce 0 turns coalescing off. */
struct axsk_rx_options {
	uint16_t raw_lo;
	uint16_t raw_hi;
	uint16_t keep_lo;
	uint16_t keep_hi;
	uint8_t coalesce;
};
/* cdef-end */

#endif
