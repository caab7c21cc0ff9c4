/* Closed-loop echo load generator: CONNS TCP connections, each sending SIZE
 * bytes and waiting for them to come back before sending again, for SECONDS.
 *
 *     echo_client HOST PORT CONNS SECONDS SIZE
 *
 * One thread, epoll, level-triggered: cheap enough per round trip that one
 * core drives a Python server to its limit (bench/http_bench.py checks the
 * client's own CPU share and reports it). Prints one line of key=value
 * pairs: round trips completed inside the window, the window's length,
 * latency mean, median and 99th percentile (microsecond histogram), and wrk-style
 * error counts. Connections still waiting for an answer older than 1 s at
 * the end count as timeouts, so a stalled server shows up as such.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 65536
#define HIST_US 1000000 /* 1 us buckets up to 1 s; slower answers share the last one */
#define TIMEOUT_NS 1000000000LL

enum state { CONNECTING, SENDING, RECEIVING, DEAD };

struct conn {
	int fd;
	enum state state;
	size_t done; /* bytes sent (SENDING) or received (RECEIVING) of this round trip */
	int64_t started;
};

static uint32_t hist[HIST_US + 1];
static char payload[MAX_SIZE], sink[MAX_SIZE];
static uint64_t connect_errors, read_errors, write_errors, timeouts;

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

/* Start (or continue) sending; switches to RECEIVING once the payload is out. */
static void send_some(int ep, struct conn *c, size_t size)
{
	while (c->done < size) {
		ssize_t n = send(c->fd, payload + c->done, size - c->done, MSG_NOSIGNAL);
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

static void begin_round(int ep, struct conn *c, size_t size, int64_t t)
{
	c->state = SENDING;
	c->done = 0;
	c->started = t;
	send_some(ep, c, size);
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: %s HOST PORT CONNS SECONDS SIZE\n", argv[0]);
		return 2;
	}
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
	if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
		fprintf(stderr, "bad IPv4 address %s\n", argv[1]);
		return 2;
	}
	int nconns = atoi(argv[3]);
	double seconds = atof(argv[4]);
	size_t size = (size_t)atol(argv[5]);
	if (nconns < 1 || seconds <= 0 || seconds > 600 || size < 1 || size > MAX_SIZE) {
		fprintf(stderr, "need CONNS >= 1, 0 < SECONDS <= 600, 1 <= SIZE <= %d\n", MAX_SIZE);
		return 2;
	}
	memset(payload, 'x', size);
	struct conn *conns = calloc((size_t)nconns, sizeof *conns);
	struct epoll_event *events = calloc((size_t)nconns, sizeof *events);
	int ep = epoll_create1(0);
	if (!conns || !events || ep < 0) {
		perror("setup");
		return 1;
	}

	int64_t start = now_ns();
	int64_t deadline = start + (int64_t)(seconds * 1e9);
	for (int i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];
		int one = 1;
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

	uint64_t completed = 0;
	double sum_us = 0;
	for (int64_t t = now_ns(); t < deadline; t = now_ns()) {
		int timeout_ms = (int)((deadline - t) / 1000000) + 1;
		int n = epoll_wait(ep, events, nconns, timeout_ms < 100 ? timeout_ms : 100);
		t = now_ns();
		for (int i = 0; i < n; i++) {
			struct conn *c = events[i].data.ptr;
			if (c->state == DEAD)
				continue;
			if (c->state == CONNECTING) {
				int err = 0;
				socklen_t len = sizeof err;
				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
				if (err || (events[i].events & (EPOLLERR | EPOLLHUP)))
					kill_conn(ep, c, &connect_errors);
				else
					begin_round(ep, c, size, t);
			} else if (c->state == SENDING) {
				send_some(ep, c, size);
			} else {
				ssize_t got = recv(c->fd, sink, size - c->done, 0);
				if (got <= 0) {
					if (got < 0 && errno == EAGAIN)
						continue;
					kill_conn(ep, c, &read_errors); /* EOF or reset mid-run */
					continue;
				}
				c->done += (size_t)got;
				if (c->done < size || t >= deadline)
					continue;
				int64_t us = (t - c->started) / 1000;
				hist[us < HIST_US ? us : HIST_US]++;
				sum_us += (double)us;
				completed++;
				begin_round(ep, c, size, t);
			}
		}
	}
	double elapsed = (double)(now_ns() - start) / 1e9;
	int64_t end = now_ns();
	for (int i = 0; i < nconns; i++) {
		if (conns[i].state == DEAD)
			continue;
		if (conns[i].state != CONNECTING && end - conns[i].started > TIMEOUT_NS)
			timeouts++;
		close(conns[i].fd);
	}

	long p50 = percentile(completed, 50), p99 = percentile(completed, 99);
	printf("requests=%llu seconds=%.3f avg_us=%.1f p50_us=%ld p99_us=%ld connect=%llu read=%llu "
	       "write=%llu timeout=%llu\n",
	       (unsigned long long)completed, elapsed, completed ? sum_us / (double)completed : 0.0,
	       p50, p99, (unsigned long long)connect_errors, (unsigned long long)read_errors,
	       (unsigned long long)write_errors, (unsigned long long)timeouts);
	return 0;
}
