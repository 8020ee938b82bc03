/*
 * floor_relay: the least a Modbus TCP to RTU relay can do on a paced line,
 * for mcpgw bench to measure what a transaction's wakeups cost the machine
 * (the floor beside the gateway's CPU per transaction, in the same run).
 *
 * One thread, no checks beyond the answer's CRC, no logging, no queue
 * beyond poll's order. Per transaction it wakes three times: for the
 * client's request, after t3.5 of silence, and when the answer's last byte
 * is due (learned from the answers before). It does not hand a device's
 * exception on at its fifth byte, as mcpgw does, which costs mcpgw a fourth
 * wakeup: this is a floor, not a gateway.
 *
 * Usage: floor_relay PTY BAUD. It listens on a free loopback port, prints
 * "listening PORT" and serves until killed. Answers of function codes 1 to
 * 6, 15 and 16 and exceptions; anything else is not answered.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAXCLIENTS 300

static int64_t now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void sleep_until(int64_t t)
{
	struct timespec ts = { t / 1000000000LL, t % 1000000000LL };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
		;
}

static uint16_t crc16(const uint8_t *p, int n)
{
	uint16_t c = 0xFFFF;
	for (int i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0xA001 : c >> 1;
	}
	return c;
}

/* answer_len is the RTU answer's length for request pdu (unit first),
 * given its second byte (the answer's function code); 0: unknown. */
static int answer_len(const uint8_t *req, uint8_t fc)
{
	int q = req[4] << 8 | req[5];
	if (fc & 0x80)
		return 5;
	switch (fc) {
	case 1: case 2: return 5 + (q + 7) / 8;
	case 3: case 4: return 5 + 2 * q;
	case 5: case 6: case 15: case 16: return 8;
	}
	return 0;
}

static speed_t speed(int baud)
{
	switch (baud) {
	case 9600: return B9600;
	case 38400: return B38400;
	case 57600: return B57600;
	case 115200: return B115200;
	}
	return B19200;
}

/* read_full reads n bytes from a blocking-on-poll socket; 0 on success. */
static int read_full(int fd, uint8_t *b, int n)
{
	for (int got = 0; got < n;) {
		int k = read(fd, b + got, n - got);
		if (k > 0) {
			got += k;
			continue;
		}
		if (k == 0)
			return -1;
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 5000) <= 0)
			return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: floor_relay PTY BAUD\n");
		return 2;
	}
	int baud = atoi(argv[2]);
	int64_t ch = 11LL * 1000000000LL / baud;
	int64_t gap = baud > 19200 ? 1750000 : ch * 7 / 2;
	int tty = open(argv[1], O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (tty < 0) {
		perror(argv[1]);
		return 1;
	}
	struct termios tio;
	tcgetattr(tty, &tio);
	cfmakeraw(&tio);
	tio.c_cflag |= CSTOPB | CLOCAL | CREAD;
	cfsetspeed(&tio, speed(baud));
	tcsetattr(tty, TCSANOW, &tio);

	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t alen = sizeof a;
	if (bind(ls, (void *)&a, sizeof a) || listen(ls, 128) || getsockname(ls, (void *)&a, &alen)) {
		perror("listen");
		return 1;
	}
	printf("listening %d\n", ntohs(a.sin_port));
	fflush(stdout);

	static struct pollfd pf[MAXCLIENTS + 1];
	int n = 1;
	pf[0].fd = ls;
	pf[0].events = POLLIN;
	int64_t last = now(); /* the line's last byte */
	int64_t turn = -1;    /* the device's turnaround, learned */
	for (;;) {
		if (poll(pf, n, -1) < 0)
			continue;
		if ((pf[0].revents & POLLIN) && n <= MAXCLIENTS) {
			int c = accept(ls, NULL, NULL);
			if (c >= 0) {
				setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
				fcntl(c, F_SETFL, O_NONBLOCK);
				pf[n].fd = c;
				pf[n].events = POLLIN;
				pf[n].revents = 0;
				n++;
			}
		}
		for (int i = 1; i < n; i++) {
			if (!pf[i].revents)
				continue;
			uint8_t mbap[7 + 260], rq[262], ans[262];
			int len;
			if (read_full(pf[i].fd, mbap, 7) ||
			    (len = mbap[4] << 8 | mbap[5]) < 2 || len > 254 ||
			    read_full(pf[i].fd, mbap + 7, len - 1)) {
				close(pf[i].fd);
				pf[i] = pf[--n];
				i--;
				continue;
			}
			memcpy(rq, mbap + 6, len);
			uint16_t c = crc16(rq, len);
			rq[len] = c & 0xFF;
			rq[len + 1] = c >> 8;
			if (now() < last + gap)
				sleep_until(last + gap);
			tcflush(tty, TCIFLUSH);
			int64_t sent = now();
			if (write(tty, rq, len + 2) != len + 2)
				continue;
			int want = answer_len(rq, rq[1]), got = 0, looked = 0;
			int64_t late = -1; /* how late the answer was for the first look */
			if (turn >= 0 && want > 0)
				sleep_until(sent + (len + 2 + want) * ch + turn);
			int64_t deadline = sent + 1000000000LL;
			for (;;) {
				int k = read(tty, ans + got, sizeof ans - got);
				if (k > 0)
					got += k;
				if (got >= 2)
					want = answer_len(rq, ans[1]);
				if (want > 0 && got >= want)
					break;
				if (!looked++ && want > 0)
					late = now() + (want - got) * ch - sent - (len + 2 + want) * ch;
				int64_t left = deadline - now();
				if (left <= 0)
					break;
				if (got > 0 && want > 0) {
					/* The rest comes a byte a character time. */
					sleep_until(now() + (want - got) * ch);
					continue;
				}
				struct pollfd p = { tty, POLLIN, 0 };
				if (poll(&p, 1, left / 1000000 + 1) <= 0)
					break;
			}
			last = now();
			if (want == 0 || got != want || crc16(ans, got) != 0)
				continue; /* no answer: the client times out */
			/* The turnaround: when the first look found the answer
			 * short, the next comes later by what was missing, at
			 * most a character (a pty hands bytes on in lumps, so
			 * what is missing can overstate it); when it was all
			 * there, a little sooner. */
			if (turn < 0)
				turn = last - sent - (len + 2 + want) * ch;
			else if (late >= 0)
				turn = late < turn + ch ? late : turn + ch;
			else
				turn -= ch / 8;
			uint8_t out[7 + 260];
			memcpy(out, mbap, 4);
			out[4] = 0;
			out[5] = got - 2;
			memcpy(out + 6, ans, got - 2);
			if (write(pf[i].fd, out, 6 + got - 2) < 0) {
				close(pf[i].fd);
				pf[i] = pf[--n];
				i--;
			}
		}
	}
}
