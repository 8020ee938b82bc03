"""An independent Modbus TCP device for mcpgw's interop tests (Debian's
python3-pymodbus 3.0): units given on the command line answer on one
TCP port. Holding register i of unit u holds (u * 100 + i * 11) % 65536.

    /usr/bin/python3 pymodbus_tcp_server.py HOST PORT UNIT [UNIT...]
"""
import logging
import sys

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server import StartTcpServer

logging.basicConfig(level=logging.ERROR)
host, port = sys.argv[1], int(sys.argv[2])
units = [int(u) for u in sys.argv[3:]]
slaves = {
    u: ModbusSlaveContext(
        hr=ModbusSequentialDataBlock(0, [(u * 100 + i * 11) % 65536 for i in range(2000)]),
        zero_mode=True)
    for u in units
}
print("ready", flush=True)
StartTcpServer(context=ModbusServerContext(slaves=slaves, single=False), address=(host, port))
