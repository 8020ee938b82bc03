/*
 * An independent Modbus RTU master for recording captures (see
 * testdata/captures/make.sh), built on libmodbus: it sends what mbpoll
 * cannot. Each request is tried once; failures are printed, not fatal.
 *
 *   cc -o rtu_master rtu_master.c $(pkg-config --cflags --libs libmodbus)
 *   ./rtu_master DEVICE
 */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>

static void report(const char *what, int rc) {
	printf("%-28s %s\n", what, rc >= 0 ? "ok" : modbus_strerror(errno));
}

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: %s DEVICE\n", argv[0]);
		return 2;
	}
	modbus_t *ctx = modbus_new_rtu(argv[1], 19200, 'N', 8, 2);
	if (ctx == NULL || modbus_connect(ctx) != 0) {
		fprintf(stderr, "rtu_master: %s\n", modbus_strerror(errno));
		return 1;
	}
	modbus_set_response_timeout(ctx, 0, 300000);
	modbus_set_slave(ctx, 1);

	uint8_t bits[2000], id[MODBUS_MAX_PDU_LENGTH];
	uint16_t regs[125], w[121];
	for (int i = 0; i < 121; i++) w[i] = (uint16_t)(i * 3);
	report("01 read 2000 coils", modbus_read_bits(ctx, 0, 2000, bits));
	report("02 read 2000 inputs", modbus_read_input_bits(ctx, 0, 2000, bits));
	report("17 report server id", modbus_report_slave_id(ctx, sizeof id, id));
	report("22 mask write", modbus_mask_write_register(ctx, 4, 0x00F2, 0x0025));
	report("23 write 121, read 125", modbus_write_and_read_registers(ctx, 300, 121, w, 0, 125, regs));

	uint8_t devid[] = {1, 0x2B, 0x0E, 0x01, 0x00};
	uint8_t rsp[MODBUS_RTU_MAX_ADU_LENGTH];
	int rc = modbus_send_raw_request(ctx, devid, sizeof devid);
	if (rc >= 0) rc = modbus_receive_confirmation(ctx, rsp);
	report("43/14 device identification", rc);

	modbus_set_slave(ctx, MODBUS_BROADCAST_ADDRESS);
	report("06 broadcast", modbus_write_register(ctx, 50, 4242));
	modbus_close(ctx);
	modbus_free(ctx);
	return 0;
}
