/* COUNT bulk transfers, one after another, each on its own TCP connection,
 * against bench/servers.py's `bulk` server (an asyncio.Protocol), each timed
 * from before connect() to its end:
 *
 *     bulk_client HOST PORT get|put SIZE COUNT TIMEOUT
 *
 * get: sends "get SIZE\n", then reads until the server closes; the transfer
 *      counts only if exactly SIZE bytes came.
 * put: sends "put SIZE\n" and SIZE bytes, then reads the server's "ok SIZE\n"
 *      (sent once it has received them all), so the time covers the bytes'
 *      arrival at the application, not only their copy into the local socket.
 *
 * C, blocking sockets, 1 MiB reads and writes: the client's cost per byte is a
 * copy in the kernel, so it is not the limit of a Python server (the harness
 * reports its CPU share). TIMEOUT (seconds) bounds the whole run (alarm): it
 * stops by itself. Prints one line of key=value pairs per transfer: bytes
 * moved, seconds, and error counts (connect, read, write, timeout, short: a
 * transfer that ended with the wrong byte count). Stops after the first failed
 * transfer.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1 << 20)

static char buffer[CHUNK];
static volatile sig_atomic_t expired;

static void on_alarm(int sig)
{
	(void)sig;
	expired = 1;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Writes all of buf; 0 on success, -1 on error (errno set; EINTR after the alarm). */
static int send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n < 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One transfer on a new connection; prints its line, returns 0 if it succeeded. */
static int transfer(const struct sockaddr_in *addr, int put, long long size)
{
	unsigned long long errors[5] = {0}; /* connect, read, write, timeout, short */
	long long moved = 0;
	double t0 = now_s();
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0) {
		errors[expired ? 3 : 0]++;
		goto done;
	}
	char command[64];
	int clen = snprintf(command, sizeof command, "%s %lld\n", put ? "put" : "get", size);
	if (send_all(fd, command, (size_t)clen) < 0) {
		errors[expired ? 3 : 2]++;
		goto done;
	}
	if (put) {
		while (moved < size) {
			size_t len = size - moved < CHUNK ? (size_t)(size - moved) : CHUNK;
			if (send_all(fd, buffer, len) < 0) {
				errors[expired ? 3 : 2]++;
				goto done;
			}
			moved += (long long)len;
		}
	}
	/* get: the payload until EOF; put: the server's reply until EOF */
	long long got = 0;
	char reply[64] = {0};
	for (;;) {
		ssize_t n = recv(fd, buffer, CHUNK, 0);
		if (n < 0) {
			errors[expired ? 3 : 1]++;
			goto done;
		}
		if (n == 0)
			break;
		if (put && got + n < (long long)sizeof reply)
			memcpy(reply + got, buffer, (size_t)n);
		got += n;
	}
	if (put) {
		char expect[64];
		snprintf(expect, sizeof expect, "ok %lld\n", size);
		if (strcmp(reply, expect) != 0)
			errors[4]++;
	} else {
		moved = got;
		if (got != size)
			errors[4]++;
	}
done:;
	double seconds = now_s() - t0;
	if (fd >= 0)
		close(fd);
	printf("bytes=%lld seconds=%.6f connect=%llu read=%llu write=%llu timeout=%llu short=%llu\n",
	       moved, seconds, errors[0], errors[1], errors[2], errors[3], errors[4]);
	fflush(stdout);
	return errors[0] + errors[1] + errors[2] + errors[3] + errors[4] ? -1 : 0;
}

int main(int argc, char **argv)
{
	if (argc != 7 || (strcmp(argv[3], "get") != 0 && strcmp(argv[3], "put") != 0)) {
		fprintf(stderr, "usage: %s HOST PORT get|put SIZE COUNT TIMEOUT\n", argv[0]);
		return 2;
	}
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
	if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
		fprintf(stderr, "bad IPv4 address %s\n", argv[1]);
		return 2;
	}
	int put = strcmp(argv[3], "put") == 0;
	long long size = atoll(argv[4]);
	int count = atoi(argv[5]);
	int timeout = atoi(argv[6]);
	if (size < 1 || size > (1LL << 34) || count < 1 || count > 100000 || timeout < 1 ||
	    timeout > 600) {
		fprintf(stderr, "need 1 <= SIZE <= 16 GiB, 1 <= COUNT <= 100000, 1 <= TIMEOUT <= 600\n");
		return 2;
	}
	struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART: blocked calls fail */
	sigaction(SIGALRM, &sa, NULL);
	alarm((unsigned)timeout);
	for (int i = 0; i < count; i++)
		if (transfer(&addr, put, size) < 0)
			return 1;
	return 0;
}
