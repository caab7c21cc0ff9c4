/* Echo (or HTTP GET) load generator: CONNS TCP connections for SECONDS, each
 * round trip SIZE bytes out and the same SIZE bytes back (or, with --http, a
 * keep-alive "GET /" and its whole response), closed-loop or paced.
 *
 *     echo_client HOST PORT CONNS SECONDS SIZE [--rate R] [--http]
 *
 * Closed loop (default): every connection starts its next round trip as soon
 * as the last one is back, so the rate is what the server (or this client)
 * can do: the saturation point.
 *
 * --rate R: open loop, paced. Round trip i is due at start + i/R s (R per
 * second in total, evenly spaced, whatever the answers do) and goes out on the
 * connection that has been idle longest (round robin); when none is idle it
 * waits, and its latency still counts from the moment it was due (no
 * coordinated omission: a server that falls behind shows its queue in the
 * latency, as wrk2 measures it). A connection never has more than one round
 * trip outstanding (no pipelining), so CONNS bounds what can be in flight;
 * "queued_max" says how many due round trips ever had to wait for one, and
 * "offered" how many were due inside the window. Waits use epoll_pwait2's
 * nanosecond timeout, so pacing is not rounded to milliseconds.
 *
 * --http: each round trip is "GET / HTTP/1.1" with Host, answered by a
 * response whose end is found from its Content-Length (no chunked bodies;
 * a response without one counts as a read error). Non-2xx status lines are
 * counted ("non2xx"). SIZE is ignored.
 *
 * One thread, epoll, level-triggered: cheap enough per round trip that one
 * core drives a Python server to its limit (the harness checks the client's
 * own CPU share and reports it). Prints one line of key=value pairs: round
 * trips completed inside the window, the window's length, latency mean,
 * median and 99th percentile (microsecond histogram), wrk-style error counts,
 * and the pacing figures. Connections still waiting for an answer sent over
 * 1 s before the end count as timeouts, so a stalled server shows up as such.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 65536
#define HEAD_MAX 8192 /* an HTTP response head must fit in this */
#define HIST_US 1000000 /* 1 us buckets up to 1 s; slower answers share the last one */
#define TIMEOUT_NS 1000000000LL

enum state { CONNECTING, IDLE, SENDING, RECEIVING, DEAD };

struct conn {
	int fd;
	enum state state;
	size_t done; /* bytes sent (SENDING) or received (RECEIVING) of this round trip */
	size_t need; /* bytes of the answer (--http: known once the head is in, else 0) */
	int64_t started; /* when the round trip was due (paced) or went out (closed loop) */
	int64_t sent_at; /* when it went out (for the timeout check) */
	char *head; /* --http: the response head as it arrives */
};

static uint32_t hist[HIST_US + 1];
static char payload[MAX_SIZE], sink[MAX_SIZE];
static size_t request_size, answer_size;
static int http;
static uint64_t connect_errors, read_errors, write_errors, timeouts, non2xx;

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void watch(int ep, struct conn *c, uint32_t events, int op)
{
	struct epoll_event ev = {.events = events, .data.ptr = c};
	epoll_ctl(ep, op, c->fd, &ev);
}

static void kill_conn(int ep, struct conn *c, uint64_t *counter)
{
	(*counter)++;
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->state = DEAD;
}

/* Start (or continue) sending; switches to RECEIVING once the request is out. */
static void send_some(int ep, struct conn *c)
{
	while (c->done < request_size) {
		ssize_t n = send(c->fd, payload + c->done, request_size - c->done, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN) {
				watch(ep, c, EPOLLOUT, EPOLL_CTL_MOD);
				return;
			}
			kill_conn(ep, c, &write_errors);
			return;
		}
		c->done += (size_t)n;
	}
	c->state = RECEIVING;
	c->done = 0;
	c->need = http ? 0 : answer_size;
	watch(ep, c, EPOLLIN, EPOLL_CTL_MOD);
}

/* The smallest latency (us) that at least pct % of the n round trips did not exceed. */
static long percentile(uint64_t n, unsigned pct)
{
	uint64_t rank = (n * pct + 99) / 100, seen = 0;
	for (long us = 0; us <= HIST_US && n; us++) {
		seen += hist[us];
		if (seen >= rank)
			return us;
	}
	return 0;
}

static void begin_round(int ep, struct conn *c, int64_t due, int64_t t)
{
	c->state = SENDING;
	c->done = 0;
	c->started = due;
	c->sent_at = t;
	send_some(ep, c);
}

/* --http: the answer's full length once its head is in (0: not yet; -1: unusable). */
static long http_length(struct conn *c)
{
	char *end = memmem(c->head, c->done, "\r\n\r\n", 4);
	if (!end)
		return c->done >= HEAD_MAX ? -1 : 0;
	size_t head_len = (size_t)(end - c->head) + 4;
	if (c->done < 12 || memcmp(c->head, "HTTP/1.", 7) != 0)
		return -1;
	if (c->head[9] != '2')
		non2xx++;
	for (char *line = memchr(c->head, '\n', head_len); line && line < end;
	     line = memchr(line + 1, '\n', (size_t)(end - line))) {
		if (strncasecmp(line + 1, "content-length:", 15) == 0)
			return (long)(head_len + strtoul(line + 16, NULL, 10));
	}
	return -1;
}

/* Read what has come; 1 when the round trip's answer is complete. */
static int receive(int ep, struct conn *c)
{
	ssize_t got;
	if (http && c->need == 0)
		got = recv(c->fd, c->head + c->done, HEAD_MAX - c->done, 0);
	else
		got = recv(c->fd, sink, c->need - c->done < MAX_SIZE ? c->need - c->done : MAX_SIZE, 0);
	if (got <= 0) {
		if (got < 0 && errno == EAGAIN)
			return 0;
		kill_conn(ep, c, &read_errors); /* EOF or reset mid-run */
		return 0;
	}
	c->done += (size_t)got;
	if (http && c->need == 0) {
		long length = http_length(c);
		if (length < 0 || (length > 0 && (size_t)length < c->done)) {
			kill_conn(ep, c, &read_errors); /* no length, or more than one answer */
			return 0;
		}
		c->need = (size_t)length;
	}
	return c->need && c->done >= c->need;
}

static void usage(const char *name)
{
	fprintf(stderr, "usage: %s HOST PORT CONNS SECONDS SIZE [--rate R] [--http]\n", name);
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 6)
		usage(argv[0]);
	double rate = 0;
	for (int i = 6; i < argc; i++) {
		if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc)
			rate = atof(argv[++i]);
		else if (strcmp(argv[i], "--http") == 0)
			http = 1;
		else
			usage(argv[0]);
	}
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
	if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
		fprintf(stderr, "bad IPv4 address %s\n", argv[1]);
		return 2;
	}
	int nconns = atoi(argv[3]);
	double seconds = atof(argv[4]);
	size_t size = (size_t)atol(argv[5]);
	if (nconns < 1 || seconds <= 0 || seconds > 600 || size < 1 || size > MAX_SIZE ||
	    rate < 0 || rate > 10e6) {
		fprintf(stderr, "need CONNS >= 1, 0 < SECONDS <= 600, 1 <= SIZE <= %d, "
			"0 <= R <= 1e7\n", MAX_SIZE);
		return 2;
	}
	if (http) {
		int n = snprintf(payload, sizeof payload, "GET / HTTP/1.1\r\nHost: %s:%s\r\n\r\n",
				 argv[1], argv[2]);
		request_size = (size_t)n;
	} else {
		memset(payload, 'x', size);
		request_size = answer_size = size;
	}
	struct conn *conns = calloc((size_t)nconns, sizeof *conns);
	struct conn **idle = calloc((size_t)nconns, sizeof *idle); /* FIFO ring, paced mode */
	struct epoll_event *events = calloc((size_t)nconns, sizeof *events);
	int ep = epoll_create1(0);
	if (!conns || !idle || !events || ep < 0) {
		perror("setup");
		return 1;
	}
	size_t idle_head = 0, idle_count = 0;

	int64_t start = now_ns();
	int64_t deadline = start + (int64_t)(seconds * 1e9);
	for (int i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];
		int one = 1;
		if (http && !(c->head = malloc(HEAD_MAX))) {
			perror("malloc");
			return 1;
		}
		c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (c->fd < 0) {
			perror("socket");
			return 1;
		}
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		c->state = CONNECTING;
		if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
			close(c->fd);
			c->state = DEAD;
			connect_errors++;
			continue;
		}
		watch(ep, c, EPOLLOUT, EPOLL_CTL_ADD);
	}

	/* paced: round trip i is due at start + i * interval; issued = those sent so far */
	double interval = rate > 0 ? 1e9 / rate : 0;
	uint64_t issued = 0, queued_max = 0;
	uint64_t completed = 0;
	double sum_us = 0;
	for (int64_t t = now_ns(); t < deadline; t = now_ns()) {
		int64_t wait_ns = deadline - t;
		if (rate > 0) {
			uint64_t due = (uint64_t)((double)(t - start) / interval) + 1;
			while (issued < due && idle_count) {
				struct conn *c = idle[idle_head];
				idle_head = (idle_head + 1) % (size_t)nconns;
				idle_count--;
				if (c->state != IDLE)
					continue; /* died while idle */
				begin_round(ep, c, start + (int64_t)((double)issued * interval), t);
				issued++;
			}
			if (due - issued > queued_max)
				queued_max = due - issued;
			if (issued >= due) { /* sleep until the next one is due */
				int64_t next = start + (int64_t)((double)issued * interval) - t;
				wait_ns = next < wait_ns ? next : wait_ns;
			}
		}
		if (wait_ns > 100000000LL)
			wait_ns = 100000000LL;
		if (wait_ns < 0)
			wait_ns = 0;
		struct timespec timeout = {.tv_sec = 0, .tv_nsec = wait_ns};
		int n = epoll_pwait2(ep, events, nconns, &timeout, NULL);
		t = now_ns();
		for (int i = 0; i < n; i++) {
			struct conn *c = events[i].data.ptr;
			if (c->state == DEAD)
				continue;
			if (c->state == CONNECTING) {
				int err = 0;
				socklen_t len = sizeof err;
				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
				if (err || (events[i].events & (EPOLLERR | EPOLLHUP))) {
					kill_conn(ep, c, &connect_errors);
				} else if (rate > 0) {
					c->state = IDLE;
					watch(ep, c, EPOLLIN, EPOLL_CTL_MOD); /* a close shows as EOF */
					idle[(idle_head + idle_count++) % (size_t)nconns] = c;
				} else {
					begin_round(ep, c, t, t);
				}
			} else if (c->state == SENDING) {
				send_some(ep, c);
			} else if (c->state == IDLE) {
				ssize_t got = recv(c->fd, sink, sizeof sink, 0);
				if (got == 0 || (got < 0 && errno != EAGAIN))
					kill_conn(ep, c, &read_errors);
				else if (got > 0)
					kill_conn(ep, c, &read_errors); /* an answer nobody asked for */
			} else if (receive(ep, c)) {
				if (t >= deadline)
					continue;
				int64_t us = (t - c->started) / 1000;
				hist[us < HIST_US ? us : HIST_US]++;
				sum_us += (double)us;
				completed++;
				if (rate > 0) {
					c->state = IDLE;
					idle[(idle_head + idle_count++) % (size_t)nconns] = c;
				} else {
					begin_round(ep, c, t, t);
				}
			}
		}
	}
	double elapsed = (double)(now_ns() - start) / 1e9;
	int64_t end = now_ns();
	for (int i = 0; i < nconns; i++) {
		if (conns[i].state == DEAD)
			continue;
		if ((conns[i].state == SENDING || conns[i].state == RECEIVING) &&
		    end - conns[i].sent_at > TIMEOUT_NS)
			timeouts++;
		close(conns[i].fd);
	}

	long p50 = percentile(completed, 50), p99 = percentile(completed, 99);
	uint64_t offered = rate > 0 ? (uint64_t)(seconds * rate) : completed;
	printf("requests=%llu seconds=%.3f avg_us=%.1f p50_us=%ld p99_us=%ld connect=%llu read=%llu "
	       "write=%llu timeout=%llu non2xx=%llu rate=%.1f offered=%llu issued=%llu "
	       "queued_max=%llu\n",
	       (unsigned long long)completed, elapsed, completed ? sum_us / (double)completed : 0.0,
	       p50, p99, (unsigned long long)connect_errors, (unsigned long long)read_errors,
	       (unsigned long long)write_errors, (unsigned long long)timeouts,
	       (unsigned long long)non2xx, rate, (unsigned long long)offered,
	       (unsigned long long)(rate > 0 ? issued : completed), (unsigned long long)queued_max);
	return 0;
}
