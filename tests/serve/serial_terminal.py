"""Helpers for the serial device tests: a plain-pyserial terminal and the plant they serve.

Imported explicitly by tests/serve/test_*_server.py (not a conftest: the
Modbus tests own tests/serve/conftest.py).
"""

from __future__ import annotations

import asyncio

import serial

from twin.sim.plant import Plant


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


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
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_reader(fd, _wake, ready)
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


def make_plant(seed: int = 0) -> Plant:
    """A fresh plant of the twin, deterministic per seed."""
    return Plant(seed=seed)
