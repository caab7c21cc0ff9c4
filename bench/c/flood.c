/* Attack traffic for the DDoS benchmark: raw Ethernet frames through AF_PACKET
 * and sendmmsg, as fast as one core can build and send them, bounded in time
 * and in count.
 *
 *     flood --kind syn|junk|ack --dev IF --src-mac MAC --dst-mac MAC
 *           --dst-ip A.B.C.D --dst-port N --duration S
 *           [--rate PPS] [--count N] [--src-prefix 198.18.128.0/17] [--seed N]
 *
 * Kinds:
 *   syn   SYNs as Linux sends them (MSS, SACK-permitted, timestamps, window
 *         scale), from random sources, ports and initial sequence numbers;
 *   ack   established-looking ACKs (timestamps, random sequence and ACK
 *         numbers) to the same port, as an ACK flood or a cookie-guessing
 *         attack would send them;
 *   junk  malformed TCP: random flags, data offsets that are too short or run
 *         past the segment, garbage options and payload, truncated headers.
 * Every frame carries a correct IPv4 header checksum and TCP checksum, so a
 * receiver has to parse it rather than drop it on a checksum failure.
 *
 * Safety (the project's network rule): spoofed sources are drawn only from
 * --src-prefix, which must lie inside 198.18.0.0/15 (RFC 2544's benchmarking
 * range), and the destination must too; anything else is refused before a
 * socket is opened. --duration is required and at most MAX_SECONDS; --count
 * bounds the number of frames. SIGINT/SIGTERM stop it early.
 *
 * Output, one line of key=value pairs on stdout: frames sent, seconds spent,
 * the achieved rate and the number of failed sendmmsg calls.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SECONDS 60.0
#define BATCH 64
#define FRAME_MAX 256
#define ETH_LEN 14
#define IP_LEN 20
#define MIN_FRAME 60 /* Ethernet's minimum without FCS: shorter frames are padded */
#define BENCH_NET 0xC6120000u /* 198.18.0.0/15 */
#define BENCH_MASK 0xFFFE0000u

enum kind { SYN, ACK, JUNK };

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* xoshiro256** (Blackman & Vigna): fast, and good enough for header fields */
static uint64_t rng[4];

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t next_random(void)
{
	uint64_t result = rotl(rng[1] * 5, 7) * 9, t = rng[1] << 17;
	rng[2] ^= rng[0];
	rng[3] ^= rng[1];
	rng[1] ^= rng[2];
	rng[0] ^= rng[3];
	rng[2] ^= t;
	rng[3] = rotl(rng[3], 45);
	return result;
}

static void seed_random(uint64_t seed)
{
	for (int i = 0; i < 4; i++) { /* splitmix64 spreads one seed over the state */
		uint64_t z = (seed += 0x9E3779B97F4A7C15ull);
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
		rng[i] = z ^ (z >> 31);
	}
}

/* RFC 1071 Internet checksum: one's-complement sum, folded */
static uint32_t sum16(const uint8_t *p, size_t len, uint32_t sum)
{
	for (; len > 1; p += 2, len -= 2)
		sum += (uint32_t)p[0] << 8 | p[1];
	if (len)
		sum += (uint32_t)p[0] << 8;
	return sum;
}

static uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xFFFF) + (sum >> 16);
	return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xFF;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v & 0xFFFF);
}

struct target {
	uint8_t src_mac[6], dst_mac[6];
	uint32_t dst_ip, src_net, src_hostmask;
	uint16_t dst_port;
};

/* TCP options as Linux orders them in a SYN: MSS, SACK-permitted, TS, NOP, WS (RFC 7323, 2018) */
static size_t syn_options(uint8_t *o)
{
	static const uint16_t mss[] = {536, 1220, 1360, 1440, 1460};
	uint64_t r = next_random();
	o[0] = 2, o[1] = 4;
	put16(o + 2, mss[r % 5]);
	o[4] = 4, o[5] = 2;
	o[6] = 8, o[7] = 10;
	put32(o + 8, (uint32_t)(r >> 16));
	put32(o + 12, 0);
	o[16] = 1;
	o[17] = 3, o[18] = 3, o[19] = (r >> 8) % 15;
	return 20;
}

static size_t ack_options(uint8_t *o)
{
	uint64_t r = next_random();
	o[0] = 1, o[1] = 1, o[2] = 8, o[3] = 10;
	put32(o + 4, (uint32_t)r);
	put32(o + 8, (uint32_t)(r >> 32));
	return 12;
}

static void random_bytes(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t r = next_random();
		memcpy(p + i, &r, len - i < 8 ? len - i : 8);
	}
}

/* A malformed segment into tcp[]: returns its length (headers may be cut or lie). */
static size_t junk_segment(uint8_t *tcp, const struct target *t)
{
	uint64_t r = next_random();
	size_t len;
	if (r % 8 == 0) { /* cut short of a TCP header, but long enough to hold the checksum */
		len = 18 + (r >> 8) % 2;
		random_bytes(tcp, len);
		put16(tcp + 2, t->dst_port);
		return len;
	}
	len = 20 + (r >> 8) % 100;
	random_bytes(tcp, len);
	put16(tcp + 2, t->dst_port);
	tcp[12] = (uint8_t)((r >> 16) & 0xF0); /* any data offset, 0..15 words, reserved bits 0 */
	return len;
}

/* One frame into buf for kind k: returns its length. */
static size_t build(uint8_t *buf, enum kind k, const struct target *t)
{
	uint8_t *ip = buf + ETH_LEN, *tcp = ip + IP_LEN;
	uint64_t r = next_random();
	uint32_t src = t->src_net | ((uint32_t)r & t->src_hostmask);
	size_t tcp_len;

	memcpy(buf, t->dst_mac, 6);
	memcpy(buf + 6, t->src_mac, 6);
	put16(buf + 12, ETHERTYPE_IP);

	if (k == JUNK) {
		tcp_len = junk_segment(tcp, t);
	} else {
		uint64_t s = next_random();
		put16(tcp, 1024 + (uint16_t)(r >> 32) % (65536 - 1024));
		put16(tcp + 2, t->dst_port);
		put32(tcp + 4, (uint32_t)s);
		put32(tcp + 8, k == SYN ? 0 : (uint32_t)(s >> 32));
		size_t opt = k == SYN ? syn_options(tcp + 20) : ack_options(tcp + 20);
		tcp_len = 20 + opt;
		tcp[12] = (uint8_t)(tcp_len / 4) << 4;
		tcp[13] = k == SYN ? 0x02 : 0x10;
		put16(tcp + 14, k == SYN ? 64240 : 502);
		put16(tcp + 18, 0); /* urgent pointer */
	}

	/* RFC 791 header: no options, DF, TTL 64 */
	size_t total = IP_LEN + tcp_len;
	ip[0] = 0x45, ip[1] = 0;
	put16(ip + 2, (uint16_t)total);
	put16(ip + 4, (uint16_t)(r >> 48));
	put16(ip + 6, 0x4000);
	ip[8] = 64, ip[9] = IPPROTO_TCP;
	put16(ip + 10, 0);
	put32(ip + 12, src);
	put32(ip + 16, t->dst_ip);
	put16(ip + 10, fold(sum16(ip, IP_LEN, 0)));

	/* RFC 9293 §3.1: checksum over the pseudo-header and the whole segment */
	put16(tcp + 16, 0);
	uint32_t pseudo = sum16(ip + 12, 8, 0) + IPPROTO_TCP + (uint32_t)tcp_len;
	put16(tcp + 16, fold(sum16(tcp, tcp_len, pseudo)));

	size_t len = ETH_LEN + total;
	if (len < MIN_FRAME) {
		memset(buf + len, 0, MIN_FRAME - len);
		len = MIN_FRAME;
	}
	return len;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_for(double seconds)
{
	struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
	nanosleep(&ts, NULL);
}

static int parse_mac(const char *text, uint8_t mac[6])
{
	return sscanf(text, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3],
		      &mac[4], &mac[5]) == 6 ? 0 : -1;
}

static int in_bench_net(uint32_t addr)
{
	return (addr & BENCH_MASK) == BENCH_NET;
}

/* "A.B.C.D/N" inside 198.18.0.0/15 -> network and host mask; -1 for anything else */
static int parse_prefix(const char *text, uint32_t *net, uint32_t *hostmask)
{
	char addr[INET_ADDRSTRLEN];
	const char *slash = strchr(text, '/');
	struct in_addr in;
	char *end;
	if (!slash || (size_t)(slash - text) >= sizeof addr)
		return -1;
	memcpy(addr, text, slash - text);
	addr[slash - text] = 0;
	long len = strtol(slash + 1, &end, 10);
	if (*end || slash[1] == 0 || len < 15 || len > 32 || inet_pton(AF_INET, addr, &in) != 1)
		return -1;
	uint32_t mask = len == 32 ? 0xFFFFFFFFu : ~(0xFFFFFFFFu >> len);
	*net = ntohl(in.s_addr) & mask;
	*hostmask = ~mask;
	return in_bench_net(*net) ? 0 : -1;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s --kind syn|junk|ack --dev IF --src-mac MAC --dst-mac MAC --dst-ip ADDR\n"
		"       --dst-port N --duration S [--rate PPS] [--count N]\n"
		"       [--src-prefix PREFIX (inside 198.18.0.0/15)] [--seed N]\n", argv0);
	exit(2);
}

static void refuse(const char *what)
{
	fprintf(stderr, "flood: refused: %s\n", what);
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{"kind", required_argument, 0, 'k'},     {"dev", required_argument, 0, 'i'},
		{"src-mac", required_argument, 0, 's'},  {"dst-mac", required_argument, 0, 'd'},
		{"dst-ip", required_argument, 0, 'a'},   {"dst-port", required_argument, 0, 'p'},
		{"duration", required_argument, 0, 't'}, {"rate", required_argument, 0, 'r'},
		{"count", required_argument, 0, 'n'},    {"src-prefix", required_argument, 0, 'P'},
		{"seed", required_argument, 0, 'S'},     {0, 0, 0, 0},
	};
	struct target t = {0};
	const char *dev = NULL, *kind_name = NULL, *prefix = "198.18.128.0/17";
	int have_src = 0, have_dst = 0, have_ip = 0, have_port = 0;
	double duration = 0, rate = 0;
	unsigned long long count = 0, seed = 0;
	int have_seed = 0, opt;
	enum kind kind = SYN;
	struct in_addr in;

	signal(SIGINT, on_signal); /* first: a stop before the socket exists sends nothing */
	signal(SIGTERM, on_signal);
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'k': kind_name = optarg; break;
		case 'i': dev = optarg; break;
		case 's': if (parse_mac(optarg, t.src_mac)) refuse("bad --src-mac"); have_src = 1; break;
		case 'd': if (parse_mac(optarg, t.dst_mac)) refuse("bad --dst-mac"); have_dst = 1; break;
		case 'a':
			if (inet_pton(AF_INET, optarg, &in) != 1)
				refuse("bad --dst-ip");
			t.dst_ip = ntohl(in.s_addr);
			have_ip = 1;
			break;
		case 'p': t.dst_port = (uint16_t)strtoul(optarg, NULL, 10); have_port = 1; break;
		case 't': duration = strtod(optarg, NULL); break;
		case 'r': rate = strtod(optarg, NULL); break;
		case 'n': count = strtoull(optarg, NULL, 10); break;
		case 'P': prefix = optarg; break;
		case 'S': seed = strtoull(optarg, NULL, 10); have_seed = 1; break;
		default: usage(argv[0]);
		}
	}
	if (!kind_name || !dev || !have_src || !have_dst || !have_ip || !have_port || optind != argc)
		usage(argv[0]);
	if (!strcmp(kind_name, "syn"))
		kind = SYN;
	else if (!strcmp(kind_name, "ack"))
		kind = ACK;
	else if (!strcmp(kind_name, "junk"))
		kind = JUNK;
	else
		refuse("--kind must be syn, ack or junk");
	if (parse_prefix(prefix, &t.src_net, &t.src_hostmask))
		refuse("--src-prefix must be a prefix inside 198.18.0.0/15");
	if (!in_bench_net(t.dst_ip))
		refuse("--dst-ip must lie inside 198.18.0.0/15");
	if (!(duration > 0 && duration <= MAX_SECONDS))
		refuse("--duration must be > 0 and <= 60 seconds");
	if (rate < 0)
		refuse("--rate must be >= 0 (0: as fast as possible)");
	if (!have_seed && getrandom(&seed, sizeof seed, 0) != sizeof seed)
		seed = (unsigned long long)time(NULL) ^ (unsigned long long)getpid() << 32;
	seed_random(seed);

	int fd = socket(AF_PACKET, SOCK_RAW, 0); /* protocol 0: send only, receive nothing */
	if (fd < 0) {
		perror("flood: socket(AF_PACKET)");
		return 1;
	}
	struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_ifindex = (int)if_nametoindex(dev)};
	if (!ll.sll_ifindex) {
		fprintf(stderr, "flood: no device %s\n", dev);
		return 1;
	}
	if (bind(fd, (struct sockaddr *)&ll, sizeof ll) < 0) {
		perror("flood: bind");
		return 1;
	}
	int one = 1; /* straight to the driver, as pktgen does: the qdisc is not what we measure */
	setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);

	static uint8_t frames[BATCH][FRAME_MAX];
	struct iovec iov[BATCH];
	struct mmsghdr msgs[BATCH];
	memset(msgs, 0, sizeof msgs);
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = frames[i];
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}

	unsigned long long sent = 0, failed_calls = 0;
	double start = now(), end = start + duration, t_now;
	while (!stop && (t_now = now()) < end && (!count || sent < count)) {
		unsigned long long want = BATCH;
		if (count && count - sent < want)
			want = count - sent;
		if (rate > 0) { /* pace: never ahead of rate * elapsed */
			double allowed = rate * (t_now - start) - (double)sent;
			if (allowed < 1) {
				double wait = (1 - allowed) / rate;
				sleep_for(wait < end - t_now ? wait : end - t_now);
				continue;
			}
			if (allowed < (double)want)
				want = (unsigned long long)allowed;
		}
		for (unsigned i = 0; i < want; i++)
			iov[i].iov_len = build(frames[i], kind, &t);
		int done = sendmmsg(fd, msgs, (unsigned)want, 0);
		if (done < 0) {
			failed_calls++;
			if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR) {
				perror("flood: sendmmsg");
				break;
			}
			continue;
		}
		sent += (unsigned)done;
	}
	double seconds = now() - start;
	printf("kind=%s sent=%llu seconds=%.6f rate=%.0f failed_calls=%llu seed=%llu\n", kind_name,
	       sent, seconds, seconds > 0 ? sent / seconds : 0.0, failed_calls, seed);
	close(fd);
	return 0;
}
