/*
 * An independent Modbus RTU slave for mcpgw's interop tests, built on
 * libmodbus (Debian's libmodbus-dev):
 *
 *   cc -o rtu_slave rtu_slave.c $(pkg-config --cflags --libs libmodbus)
 *   ./rtu_slave DEVICE BAUD PARITY UNIT [DROP CORRUPT LATE LATE_MS SEED]
 *
 * With the fault arguments it misbehaves as the bench's faulty rig does: it drops
 * 1 answer in DROP, corrupts the CRC of 1 read of holding registers in
 * CORRUPT, and answers 1 request in LATE after LATE_MS milliseconds (0:
 * never), drawing from rand() seeded with SEED.
 *
 * The environment variable RTU_SLAVE_QUIRKS gives it quirks real devices
 * have, comma-separated: max_registers=N (a read of more than N registers
 * gets exception 03), max_bits=N (the same for coils and inputs), no_fc6
 * and no_fc5 (exception 01 to those function codes), gap_ms=N (a request
 * that arrives sooner than N ms after its last answer is not heard).
 *
 * It serves 10000 of each object kind. Holding register i holds
 * (i * 7 + unit) & 0xFFFF, input register i holds (i * 3 + unit) & 0xFFFF,
 * coil i is on when i % 4 == 0, discrete input i when i % 6 == 1: a
 * pattern of its own, unlike mcpgw sim's, so that a test cannot pass by
 * reading the simulator's values. It prints "ready" once listening.
 */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int max_registers, max_bits, no_fc6, no_fc5, gap_ms;

/* quirks reads RTU_SLAVE_QUIRKS. */
static void quirks(void) {
	const char *q = getenv("RTU_SLAVE_QUIRKS");
	if (q == NULL) {
		return;
	}
	char *s = strdup(q);
	for (char *tok = strtok(s, ","); tok != NULL; tok = strtok(NULL, ",")) {
		if (sscanf(tok, "max_registers=%d", &max_registers) == 1 || sscanf(tok, "max_bits=%d", &max_bits) == 1 ||
			sscanf(tok, "gap_ms=%d", &gap_ms) == 1) {
			continue;
		}
		if (strcmp(tok, "no_fc6") == 0) {
			no_fc6 = 1;
		} else if (strcmp(tok, "no_fc5") == 0) {
			no_fc5 = 1;
		} else {
			fprintf(stderr, "rtu_slave: unknown quirk %s\n", tok);
			exit(2);
		}
	}
	free(s);
}

static double now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int one_in(int n) { return n > 0 && rand() % n == 0; }

static uint16_t crc16(const uint8_t *p, int n) {
	uint16_t crc = 0xFFFF;
	for (int i = 0; i < n; i++) {
		crc ^= p[i];
		for (int b = 0; b < 8; b++) {
			crc = (crc & 1) ? (crc >> 1) ^ 0xA001 : crc >> 1;
		}
	}
	return crc;
}

/* corrupt_read answers a read of holding registers itself, with the CRC's
 * bytes swapped and inverted so that it cannot pass. */
static void corrupt_read(modbus_t *ctx, const uint8_t *q, modbus_mapping_t *m) {
	int addr = q[2] << 8 | q[3], qty = q[4] << 8 | q[5];
	uint8_t out[MODBUS_RTU_MAX_ADU_LENGTH];
	int n = 0;
	out[n++] = q[0];
	out[n++] = 3;
	out[n++] = (uint8_t)(2 * qty);
	for (int i = 0; i < qty; i++) {
		uint16_t v = m->tab_registers[addr + i];
		out[n++] = v >> 8;
		out[n++] = v & 0xFF;
	}
	uint16_t crc = crc16(out, n) ^ 0xFFFF;
	out[n++] = crc & 0xFF;
	out[n++] = crc >> 8;
	if (write(modbus_get_socket(ctx), out, n) != n) {
		perror("rtu_slave: write");
	}
}

#define N 10000

int main(int argc, char **argv) {
	if (argc != 5 && argc != 10) {
		fprintf(stderr, "usage: %s DEVICE BAUD PARITY(N|E|O) UNIT [DROP CORRUPT LATE LATE_MS SEED]\n", argv[0]);
		return 2;
	}
	int drop = 0, corrupt = 0, late = 0, late_ms = 0;
	if (argc == 10) {
		drop = atoi(argv[5]), corrupt = atoi(argv[6]), late = atoi(argv[7]), late_ms = atoi(argv[8]);
		srand((unsigned)atoi(argv[9]));
	}
	quirks();
	int baud = atoi(argv[2]), unit = atoi(argv[4]);
	char parity = argv[3][0];
	modbus_t *ctx = modbus_new_rtu(argv[1], baud, parity, 8, parity == 'N' ? 2 : 1);
	if (ctx == NULL || modbus_set_slave(ctx, unit) != 0) {
		fprintf(stderr, "rtu_slave: %s\n", modbus_strerror(errno));
		return 1;
	}
	modbus_mapping_t *m = modbus_mapping_new(N, N, N, N);
	for (int i = 0; i < N; i++) {
		m->tab_registers[i] = (uint16_t)(i * 7 + unit);
		m->tab_input_registers[i] = (uint16_t)(i * 3 + unit);
		m->tab_bits[i] = i % 4 == 0;
		m->tab_input_bits[i] = i % 6 == 1;
	}
	if (modbus_connect(ctx) != 0) {
		fprintf(stderr, "rtu_slave: connect %s: %s\n", argv[1], modbus_strerror(errno));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	uint8_t query[MODBUS_RTU_MAX_ADU_LENGTH];
	double answered = 0; /* when the last answer went out */
	for (;;) {
		int rc = modbus_receive(ctx, query);
		if (rc > 0) {
			if (gap_ms > 0 && now_ms() - answered < gap_ms) {
				continue; /* too soon after its answer: not heard */
			}
			if (one_in(drop)) {
				continue;
			}
			int fc = query[1], qty = query[4] << 8 | query[5];
			if (((fc == 3 || fc == 4) && max_registers > 0 && qty > max_registers) ||
				((fc == 1 || fc == 2) && max_bits > 0 && qty > max_bits)) {
				modbus_reply_exception(ctx, query, MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE);
				answered = now_ms();
				continue;
			}
			if ((fc == 6 && no_fc6) || (fc == 5 && no_fc5)) {
				modbus_reply_exception(ctx, query, MODBUS_EXCEPTION_ILLEGAL_FUNCTION);
				answered = now_ms();
				continue;
			}
			if (one_in(late)) {
				usleep(late_ms * 1000);
			}
			int addr = query[2] << 8 | query[3];
			if (query[1] == 3 && qty >= 1 && qty <= 125 && addr + qty <= N && one_in(corrupt)) {
				corrupt_read(ctx, query, m);
				answered = now_ms();
				continue;
			}
			modbus_reply(ctx, query, rc, m);
			answered = now_ms();
		} else if (rc == -1 && errno != EMBBADCRC && errno != EMBBADDATA && errno != ETIMEDOUT) {
			if (errno == EBADF || errno == EIO) {
				break;
			}
		}
	}
	modbus_mapping_free(m);
	modbus_free(ctx);
	return 0;
}
