"""Helpers for the serial device tests: a plain-pyserial terminal and the plant they serve.

Imported explicitly by tests/serve/test_*_server.py (not a conftest: the
Modbus tests own tests/serve/conftest.py).
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

import serial

try:
    from twin.sim import Plant  # type: ignore[attr-defined]
except ImportError:  # twin.sim not in the tree yet: a stand-in with the same contract
    Plant = None


def use_poll_selector() -> None:
    """Make pty bytes visible to the virtual loop before it jumps (see the note below).

    With epoll, bytes written to a pty reach the other side through a kernel work
    queue, so an epoll_wait(0) right after the write usually reports nothing and
    VirtualTimeLoop jumps straight to the pending timeout. poll()/select() flush
    that work queue (n_tty_poll), so they see the bytes at once. Remove once
    twin/clock.py builds VirtualTimeLoop on selectors.PollSelector.
    """
    loop = asyncio.get_running_loop()
    jumping = getattr(loop, "_selector", None)
    real = getattr(jumping, "_real", None)
    if not isinstance(real, selectors.EpollSelector):
        return
    poll = selectors.PollSelector()
    for key in list(real.get_map().values()):
        poll.register(key.fileobj, key.events, key.data)
    jumping._real = poll  # type: ignore[union-attr]
    real.close()


class Terminal:
    """What a person at a serial terminal does: open the port 8N1, type a line, read the answer."""

    def __init__(self, path: str, baud: int) -> None:
        self.serial = serial.Serial(path, baudrate=baud, timeout=0)
        self._buf = bytearray()

    def close(self) -> None:
        self.serial.close()

    async def ask(
        self, request: bytes, *, until: bytes, lines: int = 1, timeout: float = 1.0
    ) -> bytes:
        """Write ``request``; return everything up to the ``lines``-th ``until``."""
        self._buf.clear()
        self.serial.reset_input_buffer()
        self.serial.write(request)
        return await self.read(until=until, lines=lines, timeout=timeout)

    async def read(self, *, until: bytes, lines: int = 1, timeout: float = 1.0) -> bytes:
        loop = asyncio.get_running_loop()
        fd = self.serial.fileno()
        async with asyncio.timeout(timeout):
            while self._buf.count(until) < lines:
                ready = loop.create_future()
                loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
                try:
                    await ready
                finally:
                    loop.remove_reader(fd)
                self._buf += self.serial.read(4096)
        end = 0
        for _ in range(lines):
            end = self._buf.index(until, end) + len(until)
        out = bytes(self._buf[:end])
        del self._buf[:end]
        return out


# ---- stand-in plant (only until twin.sim.Plant exists) ----------------------------------


class _Reading:
    def __init__(self, **kw: float) -> None:
        self.__dict__.update(kw)


class _Mfc:
    def __init__(self, unit_id: str, gas: Any, fs: float) -> None:
        self.unit_id, self.gas, self.full_scale_sccm, self.setpoint_sccm = unit_id, gas, fs, 0.0

    def observe(self) -> Any:
        f = self.setpoint_sccm
        return _Reading(
            pressure_psia=14.7, temperature_c=22.0, volumetric_flow=f, mass_flow=f, setpoint=f
        )


class _Electroporator:
    def __init__(self, plant: _StandInPlant) -> None:
        self._plant = plant
        self.loaded_ul = 0.0
        self.armed = False
        self._prog: tuple[float, float, int, float] | None = None

    def load(self, volume_ul: float) -> None:
        self.loaded_ul = volume_ul
        self._plant.bag_ul -= volume_ul

    def program(
        self, voltage_v: float, pulse_width_us: float, pulse_count: int, gap_mm: float
    ) -> None:
        self._prog = (voltage_v, pulse_width_us, pulse_count, gap_mm)

    def pulse(self) -> Any:
        assert self._prog is not None
        v, _, n, gap = self._prog
        self._plant.pulsed += 1
        return _Reading(
            field_v_per_cm=v / (gap / 10.0), peak_current_a=v / 20.0, pulses_delivered=n
        )

    def unload(self) -> None:
        self._plant.bag_ul += self.loaded_ul
        self.loaded_ul = 0.0


class _Gas:
    def __init__(self) -> None:
        from twin.equipment import Gas

        self.mfcs = {
            "A": _Mfc("A", Gas.AIR, 500.0),
            "B": _Mfc("B", Gas.O2, 200.0),
            "C": _Mfc("C", Gas.N2, 500.0),
            "D": _Mfc("D", Gas.CO2, 50.0),
        }


class _StandInPlant:
    def __init__(self) -> None:
        self.t = 0.0
        self.bag_ul = 100_000.0
        self.pulsed = 0
        self.gas = _Gas()
        self.electroporator = _Electroporator(self)

    def advance_to(self, t: float) -> None:
        self.t = max(self.t, t)


def make_plant(seed: int = 0) -> Any:
    """The real plant when twin.sim has one, else the stand-in."""
    return Plant(seed=seed) if Plant is not None else _StandInPlant()
