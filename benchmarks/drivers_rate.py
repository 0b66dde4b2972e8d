"""Transactions per second of each driver against the twin on loopback, vs a bare client.

    .venv/bin/python benchmarks/drivers_rate.py [--n 2000]

For each protocol, in the same run and against the same twin server, the same reads are
made by a bare client (pymodbus client for Modbus, a raw pyserial write/read for ASCII)
and by our driver layer (shared link, lock, retry policy, reply checks, counters). The
ratio ours/bare is the cost of the layer (target >= 80 %). Everything runs on the
virtual-time loop, so the RTU wire time the twin charges costs no wall time: the rates
are CPU rates. For RTU the wire-time limit at 19200 baud 8N1 is printed as well: the
real polling budget of a site.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from statistics import median

import serial
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from drivers.alicat_gas import AlicatGasConfig, AlicatGasDispenser
from drivers.bronkhorst_gas import HR_MEASURE, BronkhorstGasConfig, BronkhorstGasDispenser
from drivers.modbus_bioreactor import (
    ModbusBioreactor,
    ModbusBioreactorConfig,
    ModbusRtuBioreactorConfig,
)
from twin.clock import Clock, VirtualTimeLoop
from twin.equipment import Gas
from twin.serve.alicat import AlicatServer
from twin.serve.bioreactor_modbus import BioreactorModbusServer
from twin.serve.bioreactor_rtu import BioreactorRtuServer
from twin.serve.bronkhorst_mfc import BronkhorstServer
from twin.serve.wire import frame_time_s
from twin.sim import Plant

PV_REGS = 19  # the bioreactor's one poll: 19 input registers


async def rate(n: int, op: Callable[[], Awaitable[object]]) -> float:
    for _ in range(20):  # warm up
        await op()
    t0 = time.perf_counter()
    for _ in range(n):
        await op()
    return n / (time.perf_counter() - t0)


async def bare_ascii(path: str) -> tuple[Callable[[], Awaitable[bytes]], Callable[[], None]]:
    """A raw pyserial exchange: write a poll, read until CR (loop reader, no thread)."""
    port = serial.Serial(path, 19200, timeout=0)
    loop = asyncio.get_running_loop()
    buf = bytearray()
    ready = asyncio.Event()

    def readable() -> None:
        buf.extend(os.read(port.fileno(), 4096))
        ready.set()

    loop.add_reader(port.fileno(), readable)

    async def poll() -> bytes:
        buf.clear()
        port.write(b"A\r")
        while b"\r" not in buf:
            ready.clear()
            await ready.wait()
        return bytes(buf)

    def close() -> None:
        loop.remove_reader(port.fileno())
        port.close()

    return poll, close


async def main(n: int) -> list[tuple[str, float, float, str]]:
    clock, plant = Clock(), Plant(seed=1)
    rows: list[tuple[str, float, float, str]] = []

    tcp = BioreactorModbusServer(plant, clock)
    await tcp.start()
    bare = AsyncModbusTcpClient(tcp.host, port=tcp.port, reconnect_delay=0)
    await bare.connect()
    b = await rate(n, lambda: bare.read_input_registers(0, count=PV_REGS, device_id=1))
    bare.close()
    drv = ModbusBioreactor("BR", ModbusBioreactorConfig(host=tcp.host, port=tcp.port), clock)
    await drv.connect()
    o = await rate(n, lambda: drv.read_registers("input", 0, PV_REGS))
    await drv.close()
    await tcp.stop()
    rows.append(("bioreactor Modbus TCP (19 regs)", b, o, ""))

    rtu = BioreactorRtuServer(plant, clock)
    await rtu.start()
    bare_s = AsyncModbusSerialClient(rtu.path, baudrate=19200, reconnect_delay=0, retries=0)
    await bare_s.connect()
    b = await rate(n, lambda: bare_s.read_input_registers(0, count=PV_REGS, device_id=1))
    bare_s.close()
    drv = ModbusBioreactor("BR", ModbusRtuBioreactorConfig(port=rtu.path), clock)
    await drv.connect()
    o = await rate(n, lambda: drv.read_registers("input", 0, PV_REGS))
    await drv.close()
    await rtu.stop()
    wire = 1 / (
        frame_time_s(8, 19200, 10, rtu=True) + frame_time_s(5 + 2 * PV_REGS, 19200, 10, rtu=True)
    )
    rows.append(("bioreactor Modbus RTU (19 regs)", b, o, f"{wire:.1f}/s"))

    bh = BronkhorstServer(plant, clock)
    await bh.start()
    bare_s = AsyncModbusSerialClient(bh.path, baudrate=19200, reconnect_delay=0, retries=0)
    await bare_s.connect()
    b = await rate(n, lambda: bare_s.read_holding_registers(HR_MEASURE, count=2, device_id=1))
    bare_s.close()
    gas = BronkhorstGasDispenser("GAS", BronkhorstGasConfig(port=bh.path), clock)
    await gas.connect()
    o = await rate(n, lambda: gas._read(Gas.AIR, HR_MEASURE, 2))
    await gas.close()
    await bh.stop()
    wire = 1 / (frame_time_s(8, 19200, 10, rtu=True) + frame_time_s(9, 19200, 10, rtu=True))
    rows.append(("Bronkhorst MFC RTU (measure+SP)", b, o, f"{wire:.1f}/s"))

    al = AlicatServer(plant, clock)
    await al.start()
    poll, close = await bare_ascii(al.path)
    b = await rate(n, poll)
    close()
    ali = AlicatGasDispenser("GAS", AlicatGasConfig(port=al.path), clock)
    await ali.connect()
    o = await rate(n, lambda: ali.poll(Gas.AIR))
    await ali.close()
    await al.stop()
    rows.append(("Alicat ASCII poll (pyserial bare)", b, o, ""))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="whole runs; medians reported")
    args = parser.parse_args()
    runs = []
    for _ in range(args.rounds):  # a busy machine makes one run noisy: report medians
        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            runs.append(runner.run(main(args.n)))
    rows = [
        (name, median(r[i][1] for r in runs), median(r[i][2] for r in runs), wire)
        for i, (name, _, _, wire) in enumerate(runs[0])
    ]
    ratios = [median(r[i][2] / r[i][1] for r in runs) for i in range(len(rows))]
    print("| driver | bare tx/s | ours tx/s | ours/bare (median) | wire limit 19200 8N1 |")
    print("|---|---|---|---|---|")
    for (name, b, o, wire), ratio in zip(rows, ratios, strict=True):
        print(f"| {name} | {b:,.0f} | {o:,.0f} | {ratio:.0%} | {wire or 'n/a'} |")
