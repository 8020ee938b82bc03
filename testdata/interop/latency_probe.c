/*
 * Latency through a gateway as an independent implementation sees it,
 * for mcpgw bench: libmodbus polls the same registers in turn as an RTU
 * master straight on a line and as a Modbus TCP client through the
 * gateway, pausing between polls, and checks every value against the
 * simulated devices' pattern (holding register a of unit u holds
 * u*1000+a, see pkg/registers).
 *
 *   cc -O2 -o latency_probe latency_probe.c $(pkg-config --cflags --libs libmodbus)
 *   ./latency_probe DEVICE BAUD HOST PORT POLLS PAUSE_US UNIT...
 *
 * It prints one line per side, fields in microseconds:
 *   direct polls=N ok=N wrong=N failed=N p50=.. p90=.. p99=.. max=..
 *   gateway ...
 * and exits 1 if it could not open either side.
 */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct side {
	const char *name;
	modbus_t *ctx;
	double *lat;
	int ok, wrong, failed;
};

static double now_us(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void pause_us(long us) {
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
	nanosleep(&ts, NULL);
}

static void poll_once(struct side *s, int unit, int addr, int qty) {
	uint16_t regs[125];
	modbus_set_slave(s->ctx, unit);
	double t0 = now_us();
	int rc = modbus_read_registers(s->ctx, addr, qty, regs);
	double t = now_us() - t0;
	if (rc != qty) {
		s->failed++;
		return;
	}
	for (int i = 0; i < qty; i++) {
		if (regs[i] != (uint16_t)(unit * 1000 + addr + i)) {
			s->wrong++;
			return;
		}
	}
	s->lat[s->ok++] = t;
}

static int cmp(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double pct(const double *v, int n, double p) {
	return n == 0 ? 0 : v[(int)(p / 100 * (n - 1))];
}

static void report(struct side *s, int polls) {
	qsort(s->lat, s->ok, sizeof s->lat[0], cmp);
	printf("%s polls=%d ok=%d wrong=%d failed=%d p50=%.0f p90=%.0f p99=%.0f max=%.0f\n", s->name, polls,
	       s->ok, s->wrong, s->failed, pct(s->lat, s->ok, 50), pct(s->lat, s->ok, 90),
	       pct(s->lat, s->ok, 99), pct(s->lat, s->ok, 100));
}

int main(int argc, char **argv) {
	if (argc < 8) {
		fprintf(stderr, "usage: %s DEVICE BAUD HOST PORT POLLS PAUSE_US UNIT...\n", argv[0]);
		return 2;
	}
	int polls = atoi(argv[5]), units = argc - 7;
	long pause = atol(argv[6]);
	struct side direct = {"direct", modbus_new_rtu(argv[1], atoi(argv[2]), 'N', 8, 2)};
	struct side gateway = {"gateway", modbus_new_tcp(argv[3], atoi(argv[4]))};
	if (direct.ctx == NULL || modbus_connect(direct.ctx) != 0) {
		fprintf(stderr, "latency_probe: %s: %s\n", argv[1], modbus_strerror(errno));
		return 1;
	}
	if (gateway.ctx == NULL || modbus_connect(gateway.ctx) != 0) {
		fprintf(stderr, "latency_probe: %s:%s: %s\n", argv[3], argv[4], modbus_strerror(errno));
		return 1;
	}
	modbus_set_response_timeout(direct.ctx, 1, 0);
	modbus_set_response_timeout(gateway.ctx, 1, 0);
	direct.lat = calloc(polls, sizeof(double));
	gateway.lat = calloc(polls, sizeof(double));
	srand(1);
	for (int i = 0; i < polls; i++) {
		int unit = atoi(argv[7 + rand() % units]), addr = rand() % 8990;
		poll_once(&direct, unit, addr, 10);
		pause_us(pause);
		poll_once(&gateway, unit, addr, 10);
		pause_us(pause);
	}
	report(&direct, polls);
	report(&gateway, polls);
	modbus_close(direct.ctx);
	modbus_close(gateway.ctx);
	modbus_free(direct.ctx);
	modbus_free(gateway.ctx);
	return 0;
}
