"""Devices for the kit tests: the shipped twin benches opened one item at a time, and wrappers
that make a conforming device misbehave in one chosen way (a kit that cannot fail is a defect)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from twin.bench import LoadedBench, load_bench
from twin.conformance import DeviceFactory, device_factory
from twin.equipment import Gas
from twin.errors import CommunicationError

ROOT = Path(__file__).resolve().parents[2]


def bench(file: str) -> LoadedBench:
    """A shipped bench file."""
    return load_bench(ROOT / "benches" / file)


def twin_bench(tmp_path: Path, *equipment: str) -> LoadedBench:
    """A development bench on the twin holding the given equipment items (one YAML line each),
    for limits the shipped benches do not have."""
    lines = "\n".join(f"  {item}" for item in equipment)
    path = tmp_path / "bench.yaml"
    path.write_text(
        f"bench: kit-test\nclock: virtual\ndevelopment: true\ntwin: {{seed: 7}}\n"
        f"equipment:\n{lines}\n",
        encoding="utf-8",
    )
    return load_bench(path)


def wrapped(file: str, name: str, wrap: Callable[[Any], Any]) -> DeviceFactory[Any]:
    """Opens equipment ``name`` of a shipped bench and hands the kit ``wrap(device)`` instead."""
    inner = device_factory(bench(file), name)

    @asynccontextmanager
    async def open_wrapped() -> AsyncIterator[Any]:
        async with inner() as device:
            yield wrap(device)

    return open_wrapped


class Forwarding:
    """A device that passes everything on to a real one; subclasses change one behaviour."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = inner.name
        self.limits = inner.limits

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


class StaleReadBack(Forwarding):
    """A bioreactor whose reading shows the temperature setpoint it had when opened, whatever
    was written since (a controller that echoes a cached register)."""

    async def read(self) -> Any:
        pv = await self._inner.read()
        if not hasattr(self, "_first_sp"):
            self._first_sp = pv.temperature_sp_c
        return dataclasses.replace(pv, temperature_sp_c=self._first_sp)


class SilentOnBadValues(Forwarding):
    """A bioreactor that stops answering altogether once sent a temperature outside its limits,
    instead of refusing it (a controller whose firmware hangs on a bad value)."""

    hung = False

    def _answer(self) -> None:
        if self.hung:
            raise CommunicationError(self.name, "no valid answer within 1 s")

    async def set_temperature(self, celsius: float) -> None:
        self._answer()
        lo, hi = self.limits.temperature_c
        if not lo <= celsius <= hi:
            self.hung = True
            self._answer()
        await self._inner.set_temperature(celsius)

    async def read(self) -> Any:
        self._answer()
        return await self._inner.read()


class ClampingGas(Forwarding):
    """A gas dispenser that quietly clamps a setpoint into 0..full scale (and O2 to its cap)
    instead of refusing it: the recipe asked for one flow and gets another."""

    async def set_flow(self, gas: Gas, sccm: float) -> None:
        top = self.limits.full_scale_sccm[gas]
        if gas is Gas.O2:
            top = min(top, self.limits.o2_cap_sccm)
        value = 0.0 if math.isnan(sccm) else min(max(sccm, 0.0), top)
        await self._inner.set_flow(gas, value)


class ClampingChamber(Forwarding):
    """An electroporator that loads whatever fits the chamber instead of refusing a volume
    outside its range."""

    async def load(self, volume_ul: float) -> None:
        lo, hi = self.limits.chamber_ul
        await self._inner.load(min(max(volume_ul, lo), hi))


class LaxModbus(Forwarding):
    """A Modbus bioreactor with pymodbus 3.16's defaults: a bad read quantity answered with
    0x01, an address checked before the quantity, diagnostics (FC 8) and device
    identification (FC 43) served, a connection left open after a malformed MBAP header."""

    async def probe_request(self, pdu: bytes) -> int:
        fc = pdu[0]
        if fc in (8, 0x2B):
            return 0
        if fc in (3, 4) and len(pdu) == 5:
            address, count = int.from_bytes(pdu[1:3], "big"), int.from_bytes(pdu[3:5], "big")
            if address == 30:
                return 0x02
            if not 1 <= count <= 125:
                return 0x01
        return int(await self._inner.probe_request(pdu))

    async def probe_frame(self, frame: bytes) -> tuple[bytes, bool]:
        return b"", False


class Hung(Forwarding):
    """A bioreactor whose poll never returns (a driver with no timeout on a dead link)."""

    async def read(self) -> Any:
        await asyncio.Event().wait()


def unreachable(name: str) -> DeviceFactory[Any]:
    """A device that cannot be opened: its endpoint does not answer."""

    @asynccontextmanager
    async def open_nothing() -> AsyncIterator[Any]:
        raise CommunicationError(name, "no answer from 192.0.2.1:502")
        yield  # pragma: no cover - never reached: makes this an async generator

    return open_nothing
