// SPDX-License-Identifier: MIT
/* The far side of the "wire" for the SYN-flood benchmark, attached in native
 * mode to the *client* end of its veth pair (bench/common.py: client_sink).
 *
 * - Frames to the flood's spoofed sources (198.18.128.0/17, bench/flood.py's
 *   DEFAULT_PREFIX) are dropped here. Behind a NIC the server's SYN-ACKs to
 *   them leave on the wire and cost nobody on this machine anything more; on
 *   veth they would otherwise be received by the client's kernel, on the core
 *   the legitimate client (wrk) and the attacker share.
 * - Everything else passes to the client namespace's kernel.
 * - Being a native XDP program, it gives the client veth NAPI, which a veth
 *   needs before its peer's native XDP_TX (the server's cookie SYN-ACKs) can
 *   reach it: without it every such frame is counted as xdp_tx_errors and
 *   dropped, which would flatter protection. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define SPOOFED_NET 0xC6128000U  /* 198.18.128.0 */
#define SPOOFED_MASK 0xFFFF8000U /* /17 */

SEC("xdp")
int xdp_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	if ((bpf_ntohl(ip->daddr) & SPOOFED_MASK) == SPOOFED_NET)
		return XDP_DROP;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
