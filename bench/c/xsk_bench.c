// SPDX-License-Identifier: MIT
/*
 * The C baseline for bench/xsk_rate.py, and its traffic source.
 *
 *   xsk_bench rx IFNAME XSKS_MAP_FD SECONDS BATCH
 *       AF_XDP receive loop on queue 0: puts its socket into the (inherited)
 *       XSKMAP fd, then for SECONDS takes batches from the RX ring, verifies
 *       checksums (csum.h, the same code as aioxdp's recv) and recycles the
 *       frames through the fill ring. poll()s when the ring is empty.
 *   xsk_bench drain IFNAME XSKS_MAP_FD RING BATCH
 *       The same loop with RX and fill rings of RING entries, started when a
 *       line arrives on stdin (once the caller has filled the RX ring) and
 *       stopped when the ring is empty: userspace receive cost alone.
 *   xsk_bench tx IFNAME SECONDS BATCH DST_MAC SRC_MAC SRC_IP DST_IP SPORT DPORT
 *       AF_XDP transmit loop on queue 0 (no XDP program needed): 64-byte
 *       TCP frames, each copied into a UMEM frame and checksummed (the work
 *       aioxdp's send does), kicked with sendto, completions reclaimed.
 *
 * Prints one JSON line: frames, first/last frame times and CPU times. Built
 * at run time by the bench script (cc ... -lxdp -lbpf); never committed as a
 * binary. Every loop is bounded by SECONDS.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <xdp/xsk.h>

#include "csum.h"

#define FRAME_SIZE 2048
#define RING_SIZE 2048
#define FRAME_LEN 64

struct bench {
	struct xsk_ring_prod fill, tx;
	struct xsk_ring_cons comp, rx;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	uint8_t *area;
	uint64_t *free;
	uint32_t nfree;
	uint32_t ring; /* size of every ring; twice as many frames */
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "xsk_bench: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static void setup(struct bench *b, const char *ifname, uint32_t ring)
{
	struct xsk_socket_config cfg = {
		.rx_size = ring,
		.tx_size = ring,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.bind_flags = XDP_COPY | XDP_USE_NEED_WAKEUP,
	};
	struct xsk_umem_config ucfg = {
		.fill_size = ring,
		.comp_size = ring,
		.frame_size = FRAME_SIZE,
	};
	uint32_t frames = 2 * ring;
	int err;

	b->ring = ring;
	b->free = calloc(frames, sizeof(*b->free));
	b->area = mmap(NULL, (size_t)frames * FRAME_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!b->free || b->area == MAP_FAILED)
		die("allocating the UMEM", errno);
	err = xsk_umem__create(&b->umem, b->area, (uint64_t)frames * FRAME_SIZE, &b->fill,
			       &b->comp, &ucfg);
	if (err)
		die("xsk_umem__create", err);
	/* a socket closed just before on this queue is released asynchronously */
	for (int tries = 0; tries < 40; tries++) {
		err = xsk_socket__create(&b->xsk, ifname, 0, b->umem, &b->rx, &b->tx, &cfg);
		if (err != -EBUSY)
			break;
		usleep(25000);
	}
	if (err)
		die("xsk_socket__create", err);
	for (uint32_t i = 0; i < frames; i++)
		b->free[b->nfree++] = (uint64_t)i * FRAME_SIZE;
}

static void report(const char *dir, uint64_t frames, double first, double last)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	printf("{\"dir\": \"%s\", \"frames\": %llu, \"first\": %.6f, \"last\": %.6f, "
	       "\"utime\": %.6f, \"stime\": %.6f}\n",
	       dir, (unsigned long long)frames, first, last,
	       ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
}

static void fill_all(struct bench *b, uint32_t n)
{
	uint32_t idx;

	if (xsk_ring_prod__reserve(&b->fill, n, &idx) != n)
		die("fill ring", ENOSPC);
	for (uint32_t i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&b->fill, idx + i) = b->free[--b->nfree];
	xsk_ring_prod__submit(&b->fill, n);
}

/* Receives batches until `end` (CLOCK_MONOTONIC), or, with drain set,
 * until the RX ring is empty. */
static int run_rx(const char *ifname, int map_fd, uint32_t ring, uint32_t batch, double seconds,
		  int drain)
{
	static struct bench b;
	uint64_t frames = 0, bad = 0;
	double first = 0, last = 0, end;
	struct pollfd pfd;
	uint32_t key = 0;
	char go[8];
	int fd, err;

	setup(&b, ifname, ring);
	fd = xsk_socket__fd(b.xsk);
	err = bpf_map_update_elem(map_fd, &key, &fd, 0);
	if (err)
		die("xsks_map update", err);
	fill_all(&b, ring);
	pfd.fd = fd;
	pfd.events = POLLIN;
	printf("ready\n");
	fflush(stdout);
	if (drain && !fgets(go, sizeof(go), stdin))
		die("waiting for the go line", EIO);
	end = now() + seconds;
	if (drain)
		first = now();
	while (now() < end) {
		uint32_t idx, fidx, n = xsk_ring_cons__peek(&b.rx, batch, &idx);

		if (!n) {
			if (drain)
				break;
			poll(&pfd, 1, 10);
			continue;
		}
		/* the received frames go straight back to the fill ring, which
		 * always has room for them: only `ring` frames circulate */
		if (xsk_ring_prod__reserve(&b.fill, n, &fidx) != n)
			die("fill ring", ENOSPC);
		for (uint32_t i = 0; i < n; i++) {
			const struct xdp_desc *d = xsk_ring_cons__rx_desc(&b.rx, idx + i);

			if (axc_verify(b.area + d->addr, d->len) != AXC_OK)
				bad++;
			*xsk_ring_prod__fill_addr(&b.fill, fidx + i) = d->addr & ~(uint64_t)(FRAME_SIZE - 1);
		}
		xsk_ring_cons__release(&b.rx, n);
		xsk_ring_prod__submit(&b.fill, n);
		last = now();
		if (!frames && !drain)
			first = last;
		frames += n;
	}
	if (bad)
		fprintf(stderr, "xsk_bench: %llu frames failed verification\n", (unsigned long long)bad);
	report("rx", frames - bad, first, last);
	return 0;
}

static void parse_mac(const char *s, uint8_t *mac)
{
	if (sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3],
		   &mac[4], &mac[5]) != 6)
		die("bad MAC address", EINVAL);
}

/* Ethernet/IPv4/TCP (ACK, 10 bytes of data), checksum fields left zero. */
static void build_frame(uint8_t *f, char **argv)
{
	uint8_t *ip = f + 14, *tcp = ip + 20;

	memset(f, 0, FRAME_LEN);
	parse_mac(argv[0], f);
	parse_mac(argv[1], f + 6);
	axc_store16(f + 12, AXC_ETH_P_IP);
	ip[0] = 0x45;
	axc_store16(ip + 2, FRAME_LEN - 14);
	axc_store16(ip + 6, 0x4000);
	ip[8] = 64;
	ip[9] = AXC_PROTO_TCP;
	if (inet_pton(AF_INET, argv[2], ip + 12) != 1 || inet_pton(AF_INET, argv[3], ip + 16) != 1)
		die("bad IPv4 address", EINVAL);
	axc_store16(tcp, (uint16_t)atoi(argv[4]));
	axc_store16(tcp + 2, (uint16_t)atoi(argv[5]));
	tcp[12] = 5 << 4;
	tcp[13] = 0x10;
	axc_store16(tcp + 14, 65535);
}

static void reclaim(struct bench *b, uint64_t *done)
{
	uint32_t idx, n = xsk_ring_cons__peek(&b->comp, b->ring, &idx);

	for (uint32_t i = 0; i < n; i++)
		b->free[b->nfree++] = *xsk_ring_cons__comp_addr(&b->comp, idx + i);
	xsk_ring_cons__release(&b->comp, n);
	*done += n;
}

static int run_tx(const char *ifname, double seconds, uint32_t batch, char **frame_args)
{
	static struct bench b;
	uint8_t frame[FRAME_LEN];
	uint64_t done = 0;
	double first, end;

	setup(&b, ifname, RING_SIZE);
	build_frame(frame, frame_args);
	first = now();
	end = first + seconds;
	while (now() < end) {
		uint32_t idx, n = batch < b.nfree ? batch : b.nfree;

		if (n && xsk_ring_prod__reserve(&b.tx, n, &idx) == n) {
			for (uint32_t i = 0; i < n; i++) {
				struct xdp_desc *d = xsk_ring_prod__tx_desc(&b.tx, idx + i);
				uint64_t addr = b.free[--b.nfree];

				memcpy(b.area + addr, frame, FRAME_LEN);
				axc_fill(b.area + addr, FRAME_LEN);
				d->addr = addr;
				d->len = FRAME_LEN;
				d->options = 0;
			}
			xsk_ring_prod__submit(&b.tx, n);
		}
		if (xsk_ring_prod__needs_wakeup(&b.tx))
			sendto(xsk_socket__fd(b.xsk), NULL, 0, MSG_DONTWAIT, NULL, 0);
		reclaim(&b, &done);
	}
	report("tx", done, first, now());
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 6 && !strcmp(argv[1], "rx"))
		return run_rx(argv[2], atoi(argv[3]), RING_SIZE, (uint32_t)atoi(argv[5]),
			      atof(argv[4]), 0);
	if (argc == 6 && !strcmp(argv[1], "drain"))
		return run_rx(argv[2], atoi(argv[3]), (uint32_t)atoi(argv[4]),
			      (uint32_t)atoi(argv[5]), 60, 1);
	if (argc == 11 && !strcmp(argv[1], "tx"))
		return run_tx(argv[2], atof(argv[3]), (uint32_t)atoi(argv[4]), argv + 5);
	fprintf(stderr, "usage: xsk_bench rx IFNAME XSKS_MAP_FD SECONDS BATCH\n"
			"       xsk_bench drain IFNAME XSKS_MAP_FD RING BATCH\n"
			"       xsk_bench tx IFNAME SECONDS BATCH DST_MAC SRC_MAC SRC_IP DST_IP SPORT DPORT\n");
	return 2;
}
