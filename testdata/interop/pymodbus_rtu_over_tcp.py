"""An independent RTU-over-TCP client for mcpgw's interop tests: Debian's
python3-pymodbus 3.0, its TCP client with the RTU framer (RTU frames,
CRC and all, on a TCP connection). It runs the steps given as arguments
and prints one JSON line per step:

    read:UNIT:ADDR:COUNT     {"step": ..., "registers": [...]} or {"step": ..., "exception": code}
    write:UNIT:ADDR:VALUE    {"step": ..., "ok": true} or {"step": ..., "exception": code}

    /usr/bin/python3 pymodbus_rtu_over_tcp.py HOST PORT STEP [STEP...]
"""
import json
import logging
import sys

from pymodbus.client import ModbusTcpClient
from pymodbus.transaction import ModbusRtuFramer

logging.basicConfig(level=logging.ERROR)
host, port = sys.argv[1], int(sys.argv[2])
client = ModbusTcpClient(host, port=port, framer=ModbusRtuFramer, timeout=3, retries=0)
if not client.connect():
    sys.exit("cannot connect to %s:%d" % (host, port))
for step in sys.argv[3:]:
    kind, unit, addr, arg = step.split(":")
    unit, addr, arg = int(unit), int(addr), int(arg)
    if kind == "read":
        r = client.read_holding_registers(addr, arg, slave=unit)
    else:
        r = client.write_register(addr, arg, slave=unit)
    out = {"step": step}
    if r.isError():
        out["exception"] = getattr(r, "exception_code", None)
    elif kind == "read":
        out["registers"] = r.registers
    else:
        out["ok"] = True
    print(json.dumps(out), flush=True)
client.close()
