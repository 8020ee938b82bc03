"""An independent Modbus RTU server for mcpgw's interop tests (Debian's
python3-pymodbus 3.0): units given on the command line answer on one
serial line. Holding register i of unit u holds (u * 100 + i * 11) % 65536.

    /usr/bin/python3 pymodbus_server.py DEVICE BAUD PARITY UNIT [UNIT...]

With FRAMER=ascii in the environment it speaks Modbus ASCII instead
(still 8 data bits: pyserial cannot put a pseudo-terminal in 7 bits).
"""
import logging
import sys

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server import StartSerialServer
import os

from pymodbus.transaction import ModbusAsciiFramer, ModbusRtuFramer

logging.basicConfig(level=logging.ERROR)
port, baud, parity = sys.argv[1], int(sys.argv[2]), sys.argv[3]
units = [int(u) for u in sys.argv[4:]]
slaves = {
    u: ModbusSlaveContext(
        hr=ModbusSequentialDataBlock(0, [(u * 100 + i * 11) % 65536 for i in range(2000)]),
        ir=ModbusSequentialDataBlock(0, [(u * 100 + i * 13) % 65536 for i in range(2000)]),
        co=ModbusSequentialDataBlock(0, [i % 2 == 0 for i in range(2000)]),
        di=ModbusSequentialDataBlock(0, [i % 3 == 0 for i in range(2000)]),
        zero_mode=True)
    for u in units
}
print("ready", flush=True)
StartSerialServer(context=ModbusServerContext(slaves=slaves, single=False),
                  framer=ModbusAsciiFramer if os.environ.get("FRAMER") == "ascii" else ModbusRtuFramer, port=port, baudrate=baud,
                  parity=parity, stopbits=2 if parity == "N" else 1, bytesize=8)
