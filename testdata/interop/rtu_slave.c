/*
 * An independent Modbus RTU slave for mcpgw's interop tests, built on
 * libmodbus (Debian's libmodbus-dev):
 *
 *   cc -o rtu_slave rtu_slave.c $(pkg-config --cflags --libs libmodbus)
 *   ./rtu_slave DEVICE BAUD PARITY UNIT
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

#define N 10000

int main(int argc, char **argv) {
	if (argc != 5) {
		fprintf(stderr, "usage: %s DEVICE BAUD PARITY(N|E|O) UNIT\n", argv[0]);
		return 2;
	}
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
	for (;;) {
		int rc = modbus_receive(ctx, query);
		if (rc > 0) {
			modbus_reply(ctx, query, rc, m);
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
