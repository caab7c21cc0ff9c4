"""cffi API-mode build of ``aioxdp._xsk._xsk``: every ``cdef`` in one place.

The C side (xsk.c, offload.c, csum.h) is compiled into the extension and
linked with libxdp and libbpf. Structs and enums shared with the XDP program
come from bpf/aioxdp_common.h and are mirrored here; the ``...;`` forms let
cffi take the real layout and values from the compiled headers, so a
mismatch fails at build time rather than corrupting a map. The receive
records' layout (records.h) is not mirrored but read: the block between its
cdef markers is handed to cffi as it stands, so it is written down once.
"""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
BPF_DIR = HERE.parent.parent / "bpf"


def _header_cdef(path: Path) -> str:
    """The declarations between ``/* cdef-begin */`` and ``/* cdef-end */`` of a header."""
    text = path.read_text()
    return text[text.index("/* cdef-begin */"):text.index("/* cdef-end */")]


CDEF = """
/* bpf/aioxdp_common.h */
#define AIOXDP_FAMILY_IPV4 ...
#define AIOXDP_FAMILY_IPV6 ...
#define AIOXDP_MAX_QUEUES ...
enum aioxdp_counter {
    AIOXDP_CNT_PASS_NOT_IP,
    AIOXDP_CNT_PASS_NOT_TCP,
    AIOXDP_CNT_PASS_FRAGMENT,
    AIOXDP_CNT_PASS_NOT_OURS,
    AIOXDP_CNT_REDIRECTED,
    AIOXDP_CNT_REDIRECT_NO_SOCKET,
    AIOXDP_CNT_DROP_MALFORMED,
    AIOXDP_CNT_DROP_BAD_LENGTH,
    AIOXDP_CNT_DROP_BAD_FLAGS,
    AIOXDP_CNT_DROP_FRAGMENT,
    AIOXDP_CNT_DROP_DENIED,
    AIOXDP_CNT_DROP_NOT_ALLOWED,
    AIOXDP_CNT_DROP_RATE_LIMITED,
    AIOXDP_CNT_SYN_PASSED,
    AIOXDP_CNT_SYN_COOKIE_SENT,
    AIOXDP_CNT_SYN_DROPPED,
    AIOXDP_CNT_FLOW_HIT,
    AIOXDP_CNT_COOKIE_ACK_VALID,
    AIOXDP_CNT_COOKIE_ACK_INVALID,
    AIOXDP_CNT_UNKNOWN_FLOW_PASSED,
    AIOXDP_CNT_DROP_UNKNOWN_FLOW,
    AIOXDP_CNT_REDIRECTED_ICMP,
    AIOXDP_CNT_MAX,
};
struct aioxdp_endpoint {
    uint8_t addr[16];
    uint16_t port;
    uint8_t family;
    uint8_t pad;
};
struct aioxdp_port_range {
    uint16_t lo;
    uint16_t hi;
};
struct aioxdp_config {
    uint64_t rate_interval_ns;
    uint64_t rate_burst_ns;
    uint32_t syn_threshold;
    uint8_t syn_cookies;
    uint8_t allow_only;
    uint16_t synack_mss;
    uint16_t synack_window;
    uint8_t synack_wscale;
    uint8_t synack_options;
    uint8_t unknown_flows;
    uint8_t drop_no_ack;
    uint64_t unknown_interval_ns;
    uint64_t unknown_burst_ns;
    ...;
};
#define AIOXDP_SYNCOOKIES_OFF ...
#define AIOXDP_SYNCOOKIES_ON ...
#define AIOXDP_SYNACK_TIMESTAMPS ...
#define AIOXDP_SYNACK_WSCALE ...
#define AIOXDP_SYNACK_SACK ...
#define AIOXDP_SYN_WINDOW_NS ...
#define AIOXDP_UNKNOWN_PASS ...
#define AIOXDP_UNKNOWN_BUDGET ...
#define AIOXDP_UNKNOWN_DROP ...
#define AIOXDP_MAX_FLOWS ...
struct aioxdp_sipkey {
    uint64_t k[2];
};
struct aioxdp_cookie_keys {
    struct aioxdp_sipkey a[2];
    struct aioxdp_sipkey b[2];
    uint32_t has_previous;
    ...;
};
struct aioxdp_syn_state {
    uint64_t window_start_ns;
    uint64_t syns;
    uint64_t cookies_until_ns;
};
struct aioxdp_lpm_key {
    uint32_t prefixlen;
    uint8_t addr[16];
};
struct aioxdp_flow {
    uint8_t local_addr[16];
    uint8_t remote_addr[16];
    uint16_t local_port;
    uint16_t remote_port;
};

/* linux/if_xdp.h bind flags */
#define XDP_COPY ...
#define XDP_ZEROCOPY ...
#define XDP_USE_NEED_WAKEUP ...

/* libbpf map access (bpf/bpf.h) */
int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);
int libbpf_num_possible_cpus(void);

/* xsk.c: XDP program */
struct axp_prog {
    int link_fd;
    int native;
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
    ...;
};
int axp_load(struct axp_prog *p, const char *path, int ifindex, int native, int dispatcher,
             uint32_t max_flows);
int axp_open_attached(struct axp_prog *p, int ifindex);
void axp_close(struct axp_prog *p);
int axp_counters(const struct axp_prog *p, uint64_t *out);
int axp_set_flows(const struct axp_prog *p, const struct aioxdp_flow *keys, uint32_t n, int add);

/* xsk.c: AF_XDP socket */
struct axsk_config {
    uint32_t num_frames;
    uint32_t frame_size;
    uint32_t rx_size;
    uint32_t tx_size;
    uint32_t fill_size;
    uint32_t comp_size;
    uint32_t max_frame;
    uint16_t bind_flags;
};
struct axsk_stats {
    uint64_t rx;
    uint64_t tx;
    uint64_t rx_dropped_checksum;
    uint64_t rx_dropped_malformed;
    uint64_t rx_kicks;
    uint64_t tx_kicks;
    uint64_t rx_record_frames;
    uint64_t rx_records;
    uint64_t rx_raw_records;
    uint64_t tx_gso_frames;
    uint64_t tx_gso_pieces;
    uint64_t tx_refused;
    uint64_t tx_kick_errors;
    uint64_t rx_multi;
    uint64_t tx_multi;
    uint32_t free_frames;
    uint32_t held_frames;
    uint32_t tx_outstanding;
    uint32_t fill_ring;
    uint32_t rx_ring;
    uint32_t tx_ring;
    uint32_t comp_ring;
    uint64_t rx_dropped;
    uint64_t rx_invalid_descs;
    uint64_t rx_ring_full;
    uint64_t rx_fill_ring_empty_descs;
    uint64_t tx_invalid_descs;
    uint64_t tx_ring_empty_descs;
};
struct axsk;
#define AXSK_MAX_DESCS ...
int axsk_create(struct axsk **out, const char *ifname, uint32_t queue_id, void *area,
                const struct axsk_config *cfg);
void axsk_delete(struct axsk *s);
uint64_t axsk_area_len(const struct axsk_config *cfg);
int axsk_fd(const struct axsk *s);
int axsk_zerocopy(const struct axsk *s);
uint32_t axsk_tx_capacity(const struct axsk *s);
void axsk_release(struct axsk *s);
uint32_t axsk_recv(struct axsk *s, uint32_t max, uint64_t *spans);
void axsk_set_rx_options(struct axsk *s, const struct axsk_rx_options *o);
uint32_t axsk_recv_records(struct axsk *s, uint32_t max, struct axsk_record *recs,
                           uint8_t *arena, uint64_t arena_len);
int64_t axsk_send(struct axsk *s, const uint8_t *buf, uint64_t buflen, const void *lens,
                  int width, const uint16_t *gso, uint32_t n);
uint32_t axsk_flush(struct axsk *s);
void axsk_stats(const struct axsk *s, struct axsk_stats *out);

/* offload.c: the same parsing and cutting over caller buffers */
int64_t axsk_parse_frames(const uint8_t *base, const uint64_t *spans, uint32_t n,
                          struct axsk_record *recs, uint8_t *arena, uint64_t arena_len,
                          const struct axsk_rx_options *o);
int64_t axsk_cut_frame(const uint8_t *f, uint32_t len, uint32_t gso, uint32_t max_len,
                       uint8_t *out, uint64_t out_len, uint32_t *lens, uint32_t max_pieces);

/* csum.h */
enum axc_verdict { AXC_OK, AXC_BAD_CHECKSUM, AXC_MALFORMED };
uint16_t axc_checksum(const uint8_t *p, uint64_t len);
int axc_verify(const uint8_t *f, uint32_t len);
void axc_fill(uint8_t *f, uint32_t len);
"""

ffibuilder = FFI()
ffibuilder.cdef(_header_cdef(HERE / "records.h") + CDEF)
ffibuilder.set_source(
    "aioxdp._xsk._xsk",
    '#include "xsk.c"',
    include_dirs=[str(HERE), str(BPF_DIR)],
    libraries=["xdp", "bpf"],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
    depends=[str(HERE / name) for name in ("xsk.c", "offload.c", "csum.h", "records.h")]
    + [str(BPF_DIR / "aioxdp_common.h")],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
