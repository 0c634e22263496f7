#!/usr/bin/python3
"""A pymodbus 3.0 slave for fieldgate's interop tests.

Usage: pymodbus_server.py CONFIG.json
       pymodbus_server.py read HOST:PORT UNIT TABLE ADDRESS COUNT

CONFIG: {"mode": "rtu"|"tcp", "port": "/dev/pts/N" (rtu) or 0 (tcp: 0 = any free port),
         "baud": 19200,
         "units": {"1": {"co": {"0": 1, ...}, "di": {...}, "hr": {"100": 17, ...}, "ir": {...}}}}

Each table of a unit is a sparse block: only the listed addresses exist, so a
read that touches any other address gets exception 2 (illegal data address).
Addresses are 0-based protocol addresses (zero_mode).

Prints "READY rtu" or "READY tcp PORT" on stdout once it serves requests,
then "WRITE FC ADDRESS VALUE..." for every write request it carries out
(function code, 0-based address, the values written), so a test can tell
whether anything was written at all.

The "read" form is a pymodbus TCP client, independent of fieldgate's: it
reads COUNT values of TABLE (co, di, hr, ir) from ADDRESS and prints them
as a JSON list (bits as 0/1), or "ERROR ..." on failure.
"""

import asyncio
import json
import logging
import sys

from pymodbus.datastore import (
    ModbusServerContext,
    ModbusSlaveContext,
    ModbusSparseDataBlock,
)
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer
from pymodbus.transaction import ModbusRtuFramer, ModbusSocketFramer


def block(values):
    # An empty sparse block would accept nothing; keep it empty on purpose.
    return ModbusSparseDataBlock({int(k): int(v) for k, v in (values or {}).items()} or {65535: 0})


class LoggingSlaveContext(ModbusSlaveContext):
    """A slave context that reports every write request on stdout."""

    def setValues(self, fc_as_hex, address, values):  # noqa: N802 (pymodbus API)
        print("WRITE %d %d %s" % (fc_as_hex, address, " ".join(str(int(v)) for v in values)), flush=True)
        super().setValues(fc_as_hex, address, values)


def context(units):
    slaves = {}
    for unit, tables in units.items():
        slaves[int(unit)] = LoggingSlaveContext(
            co=block(tables.get("co")),
            di=block(tables.get("di")),
            hr=block(tables.get("hr")),
            ir=block(tables.get("ir")),
            zero_mode=True,
        )
    return ModbusServerContext(slaves=slaves, single=False)


async def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        cfg = json.load(f)
    ctx = context(cfg["units"])
    if cfg["mode"] == "rtu":
        server = await StartAsyncSerialServer(
            context=ctx,
            framer=ModbusRtuFramer,
            port=cfg["port"],
            baudrate=cfg.get("baud", 19200),
            bytesize=8,
            parity="N",
            stopbits=1,
            defer_start=True,
        )
        await server.start()
        if server.transport is None:
            print("ERROR cannot open serial port " + cfg["port"], flush=True)
            sys.exit(1)
        print("READY rtu", flush=True)
        await server.serve_forever()
    else:
        server = await StartAsyncTcpServer(
            context=ctx,
            framer=ModbusSocketFramer,
            address=("127.0.0.1", int(cfg.get("port", 0))),
            allow_reuse_address=True,
            defer_start=True,
        )
        task = asyncio.create_task(server.serve_forever())
        await server.serving
        port = server.server.sockets[0].getsockname()[1]
        print("READY tcp %d" % port, flush=True)
        await task


def read(addr, unit, table, address, count):
    from pymodbus.client import ModbusTcpClient

    host, port = addr.rsplit(":", 1)
    client = ModbusTcpClient(host, port=int(port), timeout=5)
    if not client.connect():
        print("ERROR cannot connect to " + addr, flush=True)
        sys.exit(1)
    call = {
        "co": client.read_coils,
        "di": client.read_discrete_inputs,
        "hr": client.read_holding_registers,
        "ir": client.read_input_registers,
    }[table]
    rr = call(int(address), int(count), slave=int(unit))
    client.close()
    if rr.isError():
        print("ERROR " + str(rr), flush=True)
        sys.exit(1)
    values = rr.bits[: int(count)] if table in ("co", "di") else rr.registers
    print(json.dumps([int(v) for v in values]), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if len(sys.argv) == 7 and sys.argv[1] == "read":
        read(*sys.argv[2:])
    else:
        asyncio.run(main())
