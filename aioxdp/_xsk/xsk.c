/* SPDX-License-Identifier: MIT */
/*
 * C half of aioxdp._xsk: everything that touches the AF_XDP rings, plus
 * loading and attaching the XDP program.
 *
 * The libxdp ring helpers are inline header code with memory barriers, so
 * only compiled code may call them; and every call from Python moves a whole
 * batch (recv: up to the RX ring's size, send: as many frames as it gets),
 * because a Python->C call costs about as much as handling one frame in C.
 *
 * Frame ownership. Every UMEM frame is in exactly one place: the free list
 * (owned here), the fill ring or the kernel's receive path, the RX ring, the
 * `held` list (handed to Python by the last recv), the TX ring or the
 * completion ring. Frames come back to the free list from `held` (next recv
 * or release), from the completion ring (reclaim), and from frames dropped
 * here for a bad checksum; the free list tops up the fill ring and feeds TX.
 * Not thread-safe: one thread owns a socket.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>

#include "aioxdp_common.h"
#include "csum.h"
#include "offload.c"

#ifndef SOL_XDP
#define SOL_XDP 283
#endif
/* AF_XDP multi-buffer (Linux 6.6): a frame longer than a UMEM frame travels
 * as several descriptors, all but the last flagged XDP_PKT_CONTD, on a socket
 * bound with XDP_USE_SG. Debian 12's linux/if_xdp.h (the 6.1 uapi) has
 * neither; the values are the kernel's ABI. */
#ifndef XDP_USE_SG
#define XDP_USE_SG (1 << 4)
#endif
#ifndef XDP_PKT_CONTD
#define XDP_PKT_CONTD (1 << 0)
#endif
/* Descriptors of one frame at most: copy mode builds an skb of at most
 * MAX_SKB_FRAGS (17) pieces from them. */
#define AXSK_MAX_DESCS 16
/* Frames of several descriptors that one receive copies whole (rx_take):
 * a batch with more ends early, the rest waits in the RX ring. */
#define AXSK_LINEAR_SLOTS 64

/* ---- XDP program ------------------------------------------------------ */

struct axp_prog {
	struct bpf_object *obj; /* owned only in link mode */
	struct xdp_program *xprog; /* dispatcher mode */
	int link_fd; /* link mode: the attachment lives as long as this fd */
	int ifindex;
	int native;
	int owns_map_fds; /* opened by id (axp_open_attached), not by an object */
	int xsks_map_fd;
	int listeners_fd;
	int local_addrs_fd;
	int port_range_fd;
	int counters_fd;
	int config_fd;
	int cookie_keys_fd;
	int syn_state_fd;
	int deny_list_fd;
	int allow_list_fd;
	int rate_buckets_fd;
	int flows_fd;
};

/* Every map of bpf/aioxdp.bpf.c, by name, and where its fd goes. */
static const struct {
	const char *name;
	size_t offset;
} axp_maps[] = {
	{"xsks_map", offsetof(struct axp_prog, xsks_map_fd)},
	{"listeners", offsetof(struct axp_prog, listeners_fd)},
	{"local_addrs", offsetof(struct axp_prog, local_addrs_fd)},
	{"port_range", offsetof(struct axp_prog, port_range_fd)},
	{"counters", offsetof(struct axp_prog, counters_fd)},
	{"config", offsetof(struct axp_prog, config_fd)},
	{"cookie_keys", offsetof(struct axp_prog, cookie_keys_fd)},
	{"syn_state", offsetof(struct axp_prog, syn_state_fd)},
	{"deny_list", offsetof(struct axp_prog, deny_list_fd)},
	{"allow_list", offsetof(struct axp_prog, allow_list_fd)},
	{"rate_buckets", offsetof(struct axp_prog, rate_buckets_fd)},
	{"flows", offsetof(struct axp_prog, flows_fd)},
};
#define AXP_NMAPS (sizeof(axp_maps) / sizeof(axp_maps[0]))

static int *axp_map_slot(struct axp_prog *p, size_t i)
{
	return (int *)((char *)p + axp_maps[i].offset);
}

static void axp_reset_fds(struct axp_prog *p)
{
	for (size_t i = 0; i < AXP_NMAPS; i++)
		*axp_map_slot(p, i) = -1;
}

static int axp_find_maps(struct axp_prog *p, struct bpf_object *obj)
{
	for (size_t i = 0; i < AXP_NMAPS; i++) {
		int fd = bpf_object__find_map_fd_by_name(obj, axp_maps[i].name);

		if (fd < 0)
			return -ENOENT;
		*axp_map_slot(p, i) = fd;
	}
	return 0;
}

/* `flows` holds one entry per connection of every stack sharing the
 * program, and in cookie mode every SYN looks one up. A hash map's bucket
 * array is sized from max_entries (the next power of two) when the object is
 * loaded, and a lookup that misses touches one random bucket: sized for the
 * connections the stacks can hold (max_flows > 0) rather than a fixed worst
 * case, the array stays in cache (measured under a SYN flood: 4 MB of buckets
 * cost a SYN 150 ns, 1 MB 30 ns). */
static int axp_size_flows(struct bpf_object *obj, uint32_t max_flows)
{
	struct bpf_map *map;

	if (!max_flows)
		return 0;
	map = bpf_object__find_map_by_name(obj, "flows");
	return map ? bpf_map__set_max_entries(map, max_flows) : -ENOENT;
}

/* A bpf_link (not netlink attach): the kernel detaches the program when the
 * last fd of the link closes, so a crashed or killed process leaves nothing
 * behind. bpf_link_create rather than bpf_program__attach_xdp because only
 * the former lets us choose SKB or driver mode. */
static int axp_attach_link(struct axp_prog *p, const char *path, uint32_t max_flows)
{
	LIBBPF_OPTS(bpf_link_create_opts, opts,
		    .flags = p->native ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE);
	struct bpf_program *prog;
	int err;

	p->obj = bpf_object__open_file(path, NULL);
	err = (int)libbpf_get_error(p->obj);
	if (err) {
		p->obj = NULL;
		return err;
	}
	err = axp_size_flows(p->obj, max_flows);
	if (err)
		return err;
	err = bpf_object__load(p->obj);
	if (err)
		return err;
	prog = bpf_object__find_program_by_name(p->obj, "aioxdp_redirect");
	if (!prog)
		return -ENOENT;
	err = axp_find_maps(p, p->obj);
	if (err)
		return err;
	p->link_fd = bpf_link_create(bpf_program__fd(prog), p->ifindex, BPF_XDP, &opts);
	return p->link_fd < 0 ? p->link_fd : 0;
}

/* libxdp's dispatcher: several XDP programs can share the interface, and
 * the attachment is pinned in bpffs, so it outlives this process. */
static int axp_attach_dispatcher(struct axp_prog *p, const char *path, uint32_t max_flows)
{
	int err;

	p->xprog = xdp_program__open_file(path, "xdp.frags", NULL);
	err = (int)libxdp_get_error(p->xprog);
	if (err) {
		p->xprog = NULL;
		return err;
	}
	err = axp_size_flows(xdp_program__bpf_obj(p->xprog), max_flows);
	if (!err)
		err = xdp_program__attach(p->xprog, p->ifindex,
					  p->native ? XDP_MODE_NATIVE : XDP_MODE_SKB, 0);
	if (err) {
		xdp_program__close(p->xprog);
		p->xprog = NULL;
		return err;
	}
	return axp_find_maps(p, xdp_program__bpf_obj(p->xprog));
}

void axp_close(struct axp_prog *p)
{
	if (p->link_fd >= 0)
		close(p->link_fd);
	p->link_fd = -1;
	if (p->xprog) {
		xdp_program__detach(p->xprog, p->ifindex,
				    p->native ? XDP_MODE_NATIVE : XDP_MODE_SKB, 0);
		xdp_program__close(p->xprog);
		p->xprog = NULL;
	}
	if (p->obj)
		bpf_object__close(p->obj);
	p->obj = NULL;
	if (p->owns_map_fds) {
		for (size_t i = 0; i < AXP_NMAPS; i++)
			if (*axp_map_slot(p, i) >= 0)
				close(*axp_map_slot(p, i));
		p->owns_map_fds = 0;
	}
	axp_reset_fds(p);
}

/* Returns 0 or a negative errno; on failure nothing stays attached. */
int axp_load(struct axp_prog *p, const char *path, int ifindex, int native, int dispatcher,
	     uint32_t max_flows)
{
	int err;

	memset(p, 0, sizeof(*p));
	p->link_fd = -1;
	p->ifindex = ifindex;
	p->native = native;
	axp_reset_fds(p);
	err = dispatcher ? axp_attach_dispatcher(p, path, max_flows)
			 : axp_attach_link(p, path, max_flows);
	if (err)
		axp_close(p);
	return err;
}

/* The id of the aioxdp program on ifindex, attached alone (link or netlink
 * attach) or as one of the programs of libxdp's dispatcher (those are found
 * through the dispatcher's bpffs state: only where that bpffs is visible);
 * 0 when there is none. */
static uint32_t axp_attached_id(int ifindex, int *native)
{
	struct xdp_multiprog *mp = xdp_multiprog__get_from_ifindex(ifindex);
	struct xdp_program *prog = NULL;
	uint32_t id = 0;

	if (libxdp_get_error(mp))
		return 0;
	*native = xdp_multiprog__attach_mode(mp) == XDP_MODE_NATIVE;
	if (xdp_multiprog__is_legacy(mp))
		prog = xdp_multiprog__main_prog(mp);
	else
		while ((prog = xdp_multiprog__next_prog(prog, mp)) &&
		       strcmp(xdp_program__name(prog), "aioxdp_redirect") != 0)
			;
	if (prog && strcmp(xdp_program__name(prog), "aioxdp_redirect") == 0)
		id = xdp_program__id(prog);
	xdp_multiprog__close(mp);
	return id;
}

/* The maps of the aioxdp program another process attached to ifindex, found
 * by id: program and map ids are global, so this works across network
 * namespaces and, for a program attached alone, without bpffs. Nothing is
 * attached or detached; axp_close only closes the map fds.
 * Returns 0, -ENOENT (no aioxdp program there) or another negative errno. */
int axp_open_attached(struct axp_prog *p, int ifindex)
{
	struct bpf_prog_info info;
	uint32_t len = sizeof(info), ids[32], prog_id;
	int prog_fd, err;

	memset(p, 0, sizeof(*p));
	p->link_fd = -1;
	p->ifindex = ifindex;
	axp_reset_fds(p);
	p->owns_map_fds = 1;
	prog_id = axp_attached_id(ifindex, &p->native);
	if (!prog_id)
		return -ENOENT;
	prog_fd = bpf_prog_get_fd_by_id(prog_id);
	if (prog_fd < 0)
		return -errno;
	memset(&info, 0, sizeof(info));
	info.nr_map_ids = sizeof(ids) / sizeof(ids[0]);
	info.map_ids = (uint64_t)(uintptr_t)ids;
	err = bpf_obj_get_info_by_fd(prog_fd, &info, &len);
	close(prog_fd);
	if (err)
		return -errno;
	/* BPF object names keep 15 characters: "aioxdp_redirect" fits */
	if (strcmp(info.name, "aioxdp_redirect") != 0)
		return -ENOENT;
	for (uint32_t i = 0; i < info.nr_map_ids && i < sizeof(ids) / sizeof(ids[0]); i++) {
		struct bpf_map_info map;
		uint32_t map_len = sizeof(map);
		int fd = bpf_map_get_fd_by_id(ids[i]);
		size_t j;

		if (fd < 0)
			continue;
		memset(&map, 0, sizeof(map));
		j = AXP_NMAPS;
		if (!bpf_obj_get_info_by_fd(fd, &map, &map_len))
			for (j = 0; j < AXP_NMAPS; j++)
				if (strcmp(map.name, axp_maps[j].name) == 0 && *axp_map_slot(p, j) < 0)
					break;
		if (j < AXP_NMAPS)
			*axp_map_slot(p, j) = fd;
		else
			close(fd);
	}
	for (size_t i = 0; i < AXP_NMAPS; i++)
		if (*axp_map_slot(p, i) < 0) {
			axp_close(p);
			return -ENOENT;
		}
	return 0;
}

/* Sums the per-CPU counters into out[AIOXDP_CNT_MAX]. */
int axp_counters(const struct axp_prog *p, uint64_t *out)
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t *percpu;
	uint32_t key;
	int err = 0;

	if (ncpu <= 0)
		return ncpu ? ncpu : -EINVAL;
	percpu = calloc((size_t)ncpu, sizeof(*percpu));
	if (!percpu)
		return -ENOMEM;
	for (key = 0; key < AIOXDP_CNT_MAX; key++) {
		err = bpf_map_lookup_elem(p->counters_fd, &key, percpu);
		if (err)
			break;
		out[key] = 0;
		for (int cpu = 0; cpu < ncpu; cpu++)
			out[key] += percpu[cpu];
	}
	free(percpu);
	return err;
}

/* Adds (add != 0) or deletes the n keys of `flows` at `keys`: one call from
 * Python per batch of connections, one syscall per key. Deleting a key that
 * is not there is no failure. Returns how many failed (an add: the map is
 * full: its max_entries, axp_size_flows). */
int axp_set_flows(const struct axp_prog *p, const struct aioxdp_flow *keys, uint32_t n, int add)
{
	const uint8_t present = 1;
	int failed = 0;

	for (uint32_t i = 0; i < n; i++) {
		int err = add ? bpf_map_update_elem(p->flows_fd, &keys[i], &present, BPF_ANY)
			      : bpf_map_delete_elem(p->flows_fd, &keys[i]);

		if (err && (add || err != -ENOENT))
			failed++;
	}
	return failed;
}

/* ---- AF_XDP socket ------------------------------------------------------ */

struct axsk_config {
	uint32_t num_frames;
	uint32_t frame_size; /* power of two, 2048 .. page size */
	uint32_t rx_size;
	uint32_t tx_size;
	uint32_t fill_size;
	uint32_t comp_size;
	/* the longest frame received and sent; above frame_size (at most
	 * AXSK_MAX_DESCS of them) the socket is bound with XDP_USE_SG; 0: frame_size */
	uint32_t max_frame;
	uint16_t bind_flags; /* XDP_COPY / XDP_ZEROCOPY / XDP_USE_NEED_WAKEUP */
};

struct axsk_stats {
	uint64_t rx;
	uint64_t tx;
	uint64_t rx_dropped_checksum;
	uint64_t rx_dropped_malformed;
	uint64_t rx_kicks;
	uint64_t tx_kicks;
	uint64_t rx_record_frames; /* frames recv_records took in */
	uint64_t rx_records; /* records it gave out (coalescing: fewer) */
	uint64_t rx_raw_records; /* frames it left to Python */
	uint64_t tx_gso_frames; /* super-frames cut into several frames */
	uint64_t tx_gso_pieces; /* the frames they were cut into */
	uint64_t tx_refused; /* frames the device dropped (kick_tx: EBUSY) */
	uint64_t tx_kick_errors; /* kicks that failed otherwise (kick_tx) */
	uint64_t rx_multi; /* frames received as several descriptors (XDP_USE_SG) */
	uint64_t tx_multi; /* frames sent as several descriptors */
	uint32_t free_frames;
	uint32_t held_frames;
	uint32_t tx_outstanding; /* in the TX or completion ring */
	uint32_t fill_ring; /* entries the kernel has not taken yet */
	uint32_t rx_ring;
	uint32_t tx_ring;
	uint32_t comp_ring;
	/* getsockopt(XDP_STATISTICS) */
	uint64_t rx_dropped;
	uint64_t rx_invalid_descs;
	uint64_t rx_ring_full;
	uint64_t rx_fill_ring_empty_descs;
	uint64_t tx_invalid_descs;
	uint64_t tx_ring_empty_descs;
};

struct axsk {
	struct xsk_ring_prod fill;
	struct xsk_ring_cons comp;
	struct xsk_ring_cons rx;
	struct xsk_ring_prod tx;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	uint8_t *area;
	uint64_t umem_len; /* the UMEM: area[0, umem_len); the linear slots follow */
	uint64_t frame_mask; /* clears the offset inside a frame */
	uint32_t frame_size;
	uint32_t max_frame; /* longest frame: frame_size, or more with XDP_USE_SG */
	uint32_t linear_slot; /* bytes per slot of the linear area (rx_take) */
	uint32_t linear_used; /* slots the frames held now take */
	uint8_t *scratch; /* send: a piece longer than a UMEM frame, before it is spread */
	uint32_t fill_size;
	uint32_t fill_target; /* frames kept in the fill ring */
	uint32_t comp_size;
	uint32_t held_cap;
	uint64_t *free; /* stack of frame addresses */
	uint32_t nfree;
	uint64_t *held;
	uint32_t nheld;
	uint64_t *spans; /* recv_records: the batch's frames, checksums verified */
	struct axo_piece *pieces; /* recv_records: axo_records' bookkeeping */
	struct axsk_rx_options rx_opts;
	uint32_t tx_cap; /* frames one send can ever get at once */
	uint32_t tx_outstanding;
	int fd;
	int need_wakeup;
	struct axsk_stats cnt; /* only the counters are kept up to date */
};

static uint32_t ring_level(const uint32_t *producer, const uint32_t *consumer)
{
	return __atomic_load_n(producer, __ATOMIC_ACQUIRE) -
	       __atomic_load_n(consumer, __ATOMIC_ACQUIRE);
}

static void refill(struct axsk *s)
{
	uint32_t queued = s->fill_size - xsk_prod_nb_free(&s->fill, s->fill_size);
	uint32_t n, idx;

	if (queued >= s->fill_target)
		return;
	n = s->fill_target - queued;
	if (n > s->nfree)
		n = s->nfree;
	if (!n || xsk_ring_prod__reserve(&s->fill, n, &idx) != n)
		return;
	for (uint32_t i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&s->fill, idx + i) = s->free[--s->nfree];
	xsk_ring_prod__submit(&s->fill, n);
}

static void reclaim(struct axsk *s)
{
	uint32_t idx, n = xsk_ring_cons__peek(&s->comp, s->comp_size, &idx);

	for (uint32_t i = 0; i < n; i++)
		s->free[s->nfree++] = *xsk_ring_cons__comp_addr(&s->comp, idx + i) & s->frame_mask;
	if (n)
		xsk_ring_cons__release(&s->comp, n);
	s->tx_outstanding -= n;
}

/* Copy mode transmits inside sendto(), at most a small batch per call, so
 * kick until the TX ring is drained (bounded), handling every outcome so
 * that no frame can hold up the ones behind it:
 * - success, or EAGAIN (more left; the completion ring or the device queue
 *   full for now): kick again;
 * - EBUSY: the device refused one frame (the kernel's NET_XMIT_DROP: veth
 *   drops a frame larger than the MTU, for one) and stopped after it; the
 *   frame is consumed and completes like a sent one. Counted in tx_refused,
 *   and the kicks go on with the frames behind it: TCP resends what it
 *   carried;
 * - anything else (ENETDOWN, ENXIO: the link went away; ENOBUFS: no memory)
 *   moves nothing until that changes: the frames stay queued for the next
 *   send() or flush(), counted in tx_kick_errors. */
static void kick_tx(struct axsk *s)
{
	uint32_t bound = s->tx.size / 16 + 2;

	while (bound-- && ring_level(s->tx.producer, s->tx.consumer)) {
		if (s->need_wakeup && !xsk_ring_prod__needs_wakeup(&s->tx))
			break;
		s->cnt.tx_kicks++;
		if (sendto(s->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 && errno != EAGAIN) {
			if (errno != EBUSY) {
				s->cnt.tx_kick_errors++;
				break;
			}
			s->cnt.tx_refused++;
		}
		reclaim(s);
	}
	reclaim(s);
}

void axsk_delete(struct axsk *s)
{
	if (!s)
		return;
	if (s->xsk)
		xsk_socket__delete(s->xsk);
	if (s->umem)
		xsk_umem__delete(s->umem);
	free(s->free);
	free(s->held);
	free(s->spans);
	free(s->pieces);
	free(s->scratch);
	free(s);
}

/* A frame of several descriptors is copied whole into a slot of the linear
 * area, which follows the UMEM in `area`: slots of max_frame rounded up to
 * frames, none for a socket without XDP_USE_SG. */
static uint32_t linear_slot(const struct axsk_config *cfg)
{
	if (cfg->max_frame <= cfg->frame_size)
		return 0;
	return (cfg->max_frame + cfg->frame_size - 1) / cfg->frame_size * cfg->frame_size;
}

/* The bytes of `area` axsk_create needs for cfg: the UMEM and the linear area. */
uint64_t axsk_area_len(const struct axsk_config *cfg)
{
	return (uint64_t)cfg->num_frames * cfg->frame_size +
	       (uint64_t)AXSK_LINEAR_SLOTS * linear_slot(cfg);
}

/* `area` is page-aligned memory of axsk_area_len(cfg) bytes that the caller
 * keeps alive longer than the socket. Returns 0 or a negative errno (-EINVAL:
 * a max_frame of more than AXSK_MAX_DESCS frames); on failure nothing is
 * left open. */
int axsk_create(struct axsk **out, const char *ifname, uint32_t queue_id, void *area,
		const struct axsk_config *cfg)
{
	struct xsk_umem_config ucfg = {
		.fill_size = cfg->fill_size,
		.comp_size = cfg->comp_size,
		.frame_size = cfg->frame_size,
		.frame_headroom = 0,
		.flags = 0,
	};
	struct xsk_socket_config scfg = {
		.rx_size = cfg->rx_size,
		.tx_size = cfg->tx_size,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.xdp_flags = 0,
		.bind_flags = cfg->bind_flags,
	};
	struct axsk *s;
	int err;

	*out = NULL;
	if (cfg->max_frame > AXSK_MAX_DESCS * cfg->frame_size)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->area = area;
	s->umem_len = (uint64_t)cfg->num_frames * cfg->frame_size;
	s->frame_size = cfg->frame_size;
	s->linear_slot = linear_slot(cfg);
	s->max_frame = s->linear_slot ? cfg->max_frame : cfg->frame_size;
	if (s->linear_slot) {
		scfg.bind_flags |= XDP_USE_SG;
		s->scratch = malloc(s->max_frame);
	}
	s->frame_mask = ~(uint64_t)(cfg->frame_size - 1);
	s->fill_size = cfg->fill_size;
	s->comp_size = cfg->comp_size;
	s->fill_target = cfg->fill_size < cfg->num_frames / 2 ? cfg->fill_size : cfg->num_frames / 2;
	s->held_cap = cfg->rx_size;
	s->need_wakeup = !!(cfg->bind_flags & XDP_USE_NEED_WAKEUP);
	s->free = calloc(cfg->num_frames, sizeof(*s->free));
	s->held = calloc(cfg->rx_size, sizeof(*s->held));
	s->spans = calloc(2 * (size_t)cfg->rx_size, sizeof(*s->spans));
	s->pieces = calloc(cfg->rx_size, sizeof(*s->pieces));
	s->rx_opts.coalesce = 1;
	/* no more frames than the TX ring holds, or than the fill ring leaves,
	 * are ever free for one send at once */
	s->tx_cap = cfg->num_frames - s->fill_target;
	if (s->tx_cap > cfg->tx_size)
		s->tx_cap = cfg->tx_size;
	if (!s->free || !s->held || !s->spans || !s->pieces || (s->linear_slot && !s->scratch)) {
		axsk_delete(s);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < cfg->num_frames; i++)
		s->free[s->nfree++] = (uint64_t)(cfg->num_frames - 1 - i) * cfg->frame_size;

	err = xsk_umem__create(&s->umem, area, (uint64_t)cfg->num_frames * cfg->frame_size,
			       &s->fill, &s->comp, &ucfg);
	if (!err)
		err = xsk_socket__create(&s->xsk, ifname, queue_id, s->umem, &s->rx, &s->tx, &scfg);
	if (err) {
		axsk_delete(s);
		return err < 0 ? err : -err;
	}
	s->fd = xsk_socket__fd(s->xsk);
	refill(s);
	*out = s;
	return 0;
}

int axsk_fd(const struct axsk *s)
{
	return s->fd;
}

/* The most frames of any length up to max_frame one send can ever queue at
 * once: a super-frame of more pieces may be refused (send_plan counts the
 * UMEM frames they take). */
uint32_t axsk_tx_capacity(const struct axsk *s)
{
	return s->tx_cap / ((s->max_frame + s->frame_size - 1) / s->frame_size);
}

/* 1 when the kernel bound the socket in zero-copy mode, 0 for copy mode. */
int axsk_zerocopy(const struct axsk *s)
{
	struct xdp_options opts = {0};
	socklen_t len = sizeof(opts);

	if (getsockopt(s->fd, SOL_XDP, XDP_OPTIONS, &opts, &len) < 0)
		return -errno;
	return !!(opts.flags & XDP_OPTIONS_ZEROCOPY);
}

/* Gives the frames of the last recv back to the fill ring. */
void axsk_release(struct axsk *s)
{
	memcpy(s->free + s->nfree, s->held, s->nheld * sizeof(*s->held));
	s->nfree += s->nheld;
	s->nheld = 0;
	s->linear_used = 0;
	refill(s);
}

/* Whether the frame at area offset `off` passes axc_verify; a failure is
 * counted. */
static int rx_verified(struct axsk *s, uint64_t off, uint32_t len)
{
	switch (axc_verify(s->area + off, len)) {
	case AXC_OK:
		return 1;
	case AXC_BAD_CHECKSUM:
		s->cnt.rx_dropped_checksum++;
		return 0;
	default:
		s->cnt.rx_dropped_malformed++;
		return 0;
	}
}

/* The frame of descriptors [first, last] (XDP_USE_SG) copied end to end into
 * the next linear slot, so that the checksum check and the parser see one
 * frame; its UMEM frames go back to the free list. Returns its length, 0 for
 * one longer than a slot (counted as malformed: the kernel only writes what
 * the MTU lets through). */
static uint32_t rx_linearize(struct axsk *s, uint32_t first, uint32_t last, uint64_t *off)
{
	uint8_t *slot = s->area + s->umem_len + (uint64_t)s->linear_used * s->linear_slot;
	uint32_t len = 0, fits = 1;

	for (uint32_t i = first; i <= last; i++) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&s->rx, i);

		if (d->len > s->linear_slot - len)
			fits = 0;
		if (fits) {
			memcpy(slot + len, s->area + d->addr, d->len);
			len += d->len;
		}
		s->free[s->nfree++] = d->addr & s->frame_mask;
	}
	if (!fits) {
		s->cnt.rx_dropped_malformed++;
		return 0;
	}
	*off = (uint64_t)(slot - s->area);
	s->linear_used++;
	s->cnt.rx_multi++;
	return len;
}

/* Takes up to `max` frames from the RX ring. Frames with a bad IPv4 header,
 * TCP, UDP or ICMP checksum, or with headers longer than the frame, are
 * dropped and counted; the others are described by [spans[2i], spans[2i+1])
 * offsets into the area: a UMEM frame (below umem_len), the caller's to hold
 * or free, or a frame that came as several descriptors (rx_linearize), in
 * the linear area until the next release. A frame whose last descriptor is
 * not in the ring yet, or that finds the linear slots taken, waits for the
 * next call. */
static uint32_t rx_take(struct axsk *s, uint32_t max, uint64_t *spans)
{
	uint32_t idx, n, i = 0, got = 0;

	if (max > s->held_cap)
		max = s->held_cap;
	/* descriptors: room for a last frame of several beyond `max` */
	n = xsk_ring_cons__peek(&s->rx, max + AXSK_MAX_DESCS < s->held_cap ?
				max + AXSK_MAX_DESCS : s->held_cap, &idx);
	while (i < n && got < max) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&s->rx, idx + i);
		uint64_t off = d->addr;
		uint32_t len = d->len, last = i;

		if (d->options & XDP_PKT_CONTD) {
			while (last < n && xsk_ring_cons__rx_desc(&s->rx, idx + last)->options &
						   XDP_PKT_CONTD)
				last++;
			if (last == n || s->linear_used == AXSK_LINEAR_SLOTS)
				break;
			len = rx_linearize(s, idx + i, idx + last, &off);
			i = last + 1;
			if (len && rx_verified(s, off, len)) {
				spans[2 * got] = off;
				spans[2 * got + 1] = off + len;
				got++;
			}
			continue;
		}
		i++;
		if (rx_verified(s, off, len)) {
			spans[2 * got] = off;
			spans[2 * got + 1] = off + len;
			got++;
		} else {
			s->free[s->nfree++] = off & s->frame_mask;
		}
	}
	if (i)
		xsk_ring_cons__release(&s->rx, i);
	if (n > i)
		xsk_ring_cons__cancel(&s->rx, n - i);
	s->cnt.rx += got;
	return got;
}

/* After a receive: frames back to the fill ring, and the driver told so if
 * it found the ring empty and waits (zero-copy drivers; copy mode never asks). */
static void rx_done(struct axsk *s)
{
	refill(s);
	if (s->need_wakeup && xsk_ring_prod__needs_wakeup(&s->fill)) {
		s->cnt.rx_kicks++;
		recvfrom(s->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
	}
}

/* Releases the previous batch, then takes up to `max` frames (rx_take),
 * which stay held until the next recv or release. Returns the number of
 * frames delivered. */
uint32_t axsk_recv(struct axsk *s, uint32_t max, uint64_t *spans)
{
	uint32_t got;

	axsk_release(s);
	got = rx_take(s, max, spans);
	for (uint32_t i = 0; i < got; i++)
		if (spans[2 * i] < s->umem_len) /* not a linear slot */
			s->held[s->nheld++] = spans[2 * i] & s->frame_mask;
	rx_done(s);
	return got;
}

/* Which frames recv_records leaves raw, and whether it coalesces. */
void axsk_set_rx_options(struct axsk *s, const struct axsk_rx_options *o)
{
	s->rx_opts = *o;
}

/* Releases the previous batch, takes up to `max` frames (rx_take) and turns
 * them into records (offload.c: parsed and coalesced, payloads copied into
 * the arena of arena_len bytes; recs has room for `max`). Frames of parsed
 * records go straight back to the kernel; those of raw records stay held,
 * at the UMEM offsets their records give, until the next recv or release.
 * Returns the number of records. */
uint32_t axsk_recv_records(struct axsk *s, uint32_t max, struct axsk_record *recs,
			   uint8_t *arena, uint64_t arena_len)
{
	uint32_t got, out;

	axsk_release(s);
	got = rx_take(s, max, s->spans);
	out = axo_records(s->area, s->spans, got, s->pieces, recs, arena, arena_len, &s->rx_opts);
	for (uint32_t i = 0; i < got; i++) {
		uint64_t base = s->spans[2 * i] & s->frame_mask;

		if (s->spans[2 * i] >= s->umem_len) /* a linear slot: nothing to give back */
			continue;
		if (s->pieces[i].raw)
			s->held[s->nheld++] = base;
		else
			s->free[s->nfree++] = base;
	}
	rx_done(s);
	s->cnt.rx_record_frames += got;
	s->cnt.rx_records += out;
	for (uint32_t i = 0; i < got; i++) /* the previous batch was released above */
		s->cnt.rx_raw_records += s->pieces[i].raw;
	return out;
}

static uint32_t length_at(const void *lens, int width, uint32_t i)
{
	return width == 2 ? ((const uint16_t *)lens)[i] : ((const uint32_t *)lens)[i];
}

/* UMEM frames (descriptors) a frame of len bytes takes. */
static uint32_t descs_of(const struct axsk *s, uint32_t len)
{
	return (len + s->frame_size - 1) / s->frame_size;
}

/* Checks frame i of a send (axo_cut_plan) and returns the descriptors its
 * pieces take (one per UMEM frame: a piece longer than one, on a socket
 * with XDP_USE_SG, takes several), or a negative errno: -EINVAL for a
 * length of 0 or above max_frame of a frame sent whole, axo_cut_plan's
 * errors, -E2BIG for more than one send can ever queue (it would wait
 * forever). */
static int64_t send_plan(const struct axsk *s, const uint8_t *f, uint32_t len, uint32_t gso,
			 struct axo_cut *c)
{
	uint64_t descs;
	int err;

	if (!gso && (len == 0 || len > s->max_frame))
		return -EINVAL;
	err = axo_cut_plan(f, len, gso, s->max_frame, c);
	if (err)
		return err;
	descs = descs_of(s, axo_piece_len(c, len, c->pieces - 1));
	if (c->pieces > 1)
		descs += (uint64_t)(c->pieces - 1) * descs_of(s, axo_piece_len(c, len, 0));
	return descs > s->tx_cap ? -E2BIG : (int64_t)descs;
}

/* Queues a frame over UMEM frames from `addr` on, with TX descriptors from
 * `slot` on, every one but its last flagged XDP_PKT_CONTD: the first `head`
 * bytes are in frame `addr` already, the len bytes of `body` follow them.
 * Returns the next slot. */
static uint32_t send_spread(struct axsk *s, uint32_t idx, uint32_t slot, uint64_t addr,
			    uint32_t head, const uint8_t *body, uint32_t len)
{
	uint32_t used = head, off = 0;

	s->cnt.tx_multi++;
	for (;;) {
		struct xdp_desc *d = xsk_ring_prod__tx_desc(&s->tx, idx + slot++);
		uint32_t chunk = len - off < s->frame_size - used ? len - off : s->frame_size - used;

		memcpy(s->area + addr + used, body + off, chunk);
		off += chunk;
		d->addr = addr;
		d->len = used + chunk;
		d->options = off < len ? XDP_PKT_CONTD : 0;
		if (off == len)
			return slot;
		addr = s->free[--s->nfree];
		used = 0;
	}
}

/* Writes piece p of the planned cut of f into UMEM frames and their TX
 * descriptors from `slot` on; returns the next slot. A piece longer than a
 * UMEM frame (XDP_USE_SG) is spread over several: a cut piece's headers are
 * written in the first and its payload copied once, from the super-frame,
 * after them; a frame sent whole is built in the scratch buffer first. */
static uint32_t send_piece(struct axsk *s, uint32_t idx, uint32_t slot, const uint8_t *f,
			   uint32_t len, const struct axo_cut *c, uint32_t p)
{
	uint32_t plen = axo_piece_len(c, len, p);
	uint64_t addr = s->free[--s->nfree];
	const uint8_t *payload;
	struct xdp_desc *d;

	if (plen <= s->frame_size) {
		d = xsk_ring_prod__tx_desc(&s->tx, idx + slot);
		d->addr = addr;
		d->len = axo_cut_piece(s->area + addr, f, len, c, p);
		d->options = 0;
		return slot + 1;
	}
	if (c->pieces == 1) {
		axo_cut_piece(s->scratch, f, len, c, p);
		return send_spread(s, idx, slot, addr, 0, s->scratch, plen);
	}
	axo_piece_headers(s->area + addr, f, c, p);
	payload = f + c->hlen + p * c->gso;
	axo_piece_checksums(s->area + addr, payload, c, plen);
	return send_spread(s, idx, slot, addr, c->hlen, payload, plen - c->hlen);
}

/* Queues frames laid end to end in `buf` (lengths in `lens`, 16- or 32-bit
 * per `width`), filling in their IPv4 header and TCP/UDP checksums. A frame
 * with gso[i] != 0 (gso may be NULL: none) is a super-frame: one TCP segment
 * cut into pieces of gso[i] payload bytes (offload.c), queued whole or not
 * at all, so the count returned stays "frames of the caller's, from the
 * front". Takes as many as there are free frames and TX slots, kicks the
 * kernel, and returns how many were queued, or a negative errno (nothing
 * queued, send_plan) when a frame is bad or the lengths overrun the buffer. */
int64_t axsk_send(struct axsk *s, const uint8_t *buf, uint64_t buflen, const void *lens,
		  int width, const uint16_t *gso, uint32_t n)
{
	uint64_t off = 0, need = 0;
	uint32_t idx, k, room, take = 0;
	struct axo_cut c;

	for (uint32_t i = 0; i < n; i++) {
		uint32_t len = length_at(lens, width, i);
		int64_t descs;

		if (len > buflen - off)
			return -EINVAL;
		descs = send_plan(s, buf + off, len, gso ? gso[i] : 0, &c);
		if (descs < 0)
			return descs;
		off += len;
		need += (uint64_t)descs;
	}
	reclaim(s);
	room = need < s->nfree ? (uint32_t)need : s->nfree;
	k = xsk_prod_nb_free(&s->tx, room);
	if (k < room)
		room = k;
	/* the whole frames that fit, from the front (plans checked above) */
	off = 0;
	for (k = 0; k < n; k++) {
		uint32_t len = length_at(lens, width, k);
		int64_t descs = send_plan(s, buf + off, len, gso ? gso[k] : 0, &c);

		if (take + descs > room)
			break;
		take += (uint32_t)descs;
		off += len;
	}
	if (take && xsk_ring_prod__reserve(&s->tx, take, &idx) == take) {
		off = 0;
		for (uint32_t i = 0, slot = 0; i < k; i++) {
			uint32_t len = length_at(lens, width, i);

			send_plan(s, buf + off, len, gso ? gso[i] : 0, &c);
			for (uint32_t p = 0; p < c.pieces; p++)
				slot = send_piece(s, idx, slot, buf + off, len, &c, p);
			if (c.pieces > 1) {
				s->cnt.tx_gso_frames++;
				s->cnt.tx_gso_pieces += c.pieces;
			}
			s->cnt.tx += c.pieces;
			off += len;
		}
		xsk_ring_prod__submit(&s->tx, take);
		s->tx_outstanding += take;
	} else {
		k = 0;
	}
	kick_tx(s);
	return k;
}

/* Kicks anything left in the TX ring and reclaims completions; returns the
 * number of frames still in flight. */
uint32_t axsk_flush(struct axsk *s)
{
	kick_tx(s);
	return s->tx_outstanding;
}

void axsk_stats(const struct axsk *s, struct axsk_stats *out)
{
	struct xdp_statistics xs = {0};
	socklen_t len = sizeof(xs);

	*out = s->cnt;
	out->free_frames = s->nfree;
	out->held_frames = s->nheld;
	out->tx_outstanding = s->tx_outstanding;
	out->fill_ring = ring_level(s->fill.producer, s->fill.consumer);
	out->rx_ring = ring_level(s->rx.producer, s->rx.consumer);
	out->tx_ring = ring_level(s->tx.producer, s->tx.consumer);
	out->comp_ring = ring_level(s->comp.producer, s->comp.consumer);
	if (getsockopt(s->fd, SOL_XDP, XDP_STATISTICS, &xs, &len) == 0) {
		out->rx_dropped = xs.rx_dropped;
		out->rx_invalid_descs = xs.rx_invalid_descs;
		out->rx_ring_full = xs.rx_ring_full;
		out->rx_fill_ring_empty_descs = xs.rx_fill_ring_empty_descs;
		out->tx_invalid_descs = xs.tx_invalid_descs;
		out->tx_ring_empty_descs = xs.tx_ring_empty_descs;
	}
}

/* RFC 1071 checksum of a buffer, for Python callers. */
uint16_t axc_checksum(const uint8_t *p, uint64_t len)
{
	return axc_fold(axc_sum(p, len, 0));
}
