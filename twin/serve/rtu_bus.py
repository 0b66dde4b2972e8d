"""An RS-485 bus on pseudo-terminals: the driver's port, the twin's port, and the cable between.

pymodbus's ``ModbusSerialServer`` opens a serial port *path*; a driver opens
another. Two pty pairs joined by this cable give both ends a real tty, exactly
as a USB-RS485 adapter on each side of a twisted pair would. The cable lives on
the event loop (reader callbacks, timers on the batch clock, no thread), so the
virtual clock sees every byte, and it is the one place where the line itself
misbehaves: it consults ``link`` (twin.serve.faults.LinkFaults) for every reply
and charges each frame its wire time at the configured baud (twin/serve/wire.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable

from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from twin.clock import Clock
from twin.serve.faults import LinkFaults, bad_crc
from twin.serve.wire import bits_per_char, frame_time_s

__all__ = ["RtuBus", "RtuCable", "silent_other_units"]


async def _nobody(*_: object) -> None:
    raise NoSuchIdException("no device owns this unit id")


def silent_other_units() -> SimDevice:
    """Catch-all device (id 0): a unit id nobody owns gets silence, as on a real bus.

    pymodbus 3.16's SimCore raises KeyError (answered 0x04) for an unknown id
    instead of NoSuchIdException, so ``ignore_missing_devices`` alone does not work.
    """
    return SimDevice(
        id=0, simdata=[SimData(0, count=65536, datatype=DataType.REGISTERS)], action=_nobody
    )


def _wire_time(baud: int, parity: str, stopbits: int) -> Callable[[int], float]:
    """Seconds one RTU frame of n bytes holds the line, 3.5-character gap included."""
    bits = bits_per_char(f"8{parity}{stopbits}")
    return lambda n: frame_time_s(n, baud, bits, rtu=True)


class _Pty:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        for fd in (self.master, self.slave):
            tty.setraw(fd)
            os.set_blocking(fd, False)
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class RtuCable:
    """Joins ``driver_path`` and ``device_path``; replies pass through the link faults."""

    def __init__(
        self,
        clock: Clock,
        link: LinkFaults,
        *,
        baud: int = 19200,
        parity: str = "N",
        stopbits: int = 1,
        charge_wire_time: bool = True,
    ) -> None:
        self._clock = clock
        self.link = link
        self._wire = _wire_time(baud, parity, stopbits)
        self._charge = charge_wire_time
        self._driver: _Pty | None = None
        self._device: _Pty | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.TimerHandle] = set()
        self._busy_until = {"down": 0.0, "up": 0.0}

    @property
    def driver_path(self) -> str:
        """The port a driver opens (like /dev/ttyUSB0)."""
        assert self._driver is not None, "cable not started"
        return self._driver.path

    @property
    def device_path(self) -> str:
        """The port the twin's Modbus server opens."""
        assert self._device is not None, "cable not started"
        return self._device.path

    def start(self) -> None:
        """Open both pty pairs and start carrying bytes."""
        self._loop = asyncio.get_running_loop()
        self._driver, self._device = _Pty(), _Pty()
        self._loop.add_reader(self._driver.master, self._carry, "down")
        self._loop.add_reader(self._device.master, self._carry, "up")

    def close(self) -> None:
        """Cut the cable: nothing more is carried, both ports disappear."""
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        for end in (self._driver, self._device):
            if end is not None and self._loop is not None:
                self._loop.remove_reader(end.master)
                end.close()
        self._driver = self._device = None

    def _carry(self, direction: str) -> None:
        src, dst = (
            (self._driver, self._device) if direction == "down" else (self._device, self._driver)
        )
        assert src is not None and dst is not None
        try:
            data = os.read(src.master, 4096)
        except (BlockingIOError, OSError):
            return
        if not data:
            return
        delay = 0.0
        if direction == "up":  # a reply from the device: the line's faults act here
            if self.link.silent:
                return
            if self.link.corrupt_next():
                data = bad_crc(data)
            delay = self.link.delay_s
        if self._charge:
            # Frames on one direction queue behind each other, as on the wire.
            now = self._clock.now()
            start = max(now, self._busy_until[direction])
            self._busy_until[direction] = start + self._wire(len(data))
            delay += self._busy_until[direction] - now
        if delay <= 0.0:
            self._write(dst, data)
            return
        assert self._loop is not None
        handle: asyncio.TimerHandle | None = None

        def deliver() -> None:
            self._pending.discard(handle)  # type: ignore[arg-type]
            if self._driver is not None:
                self._write(dst, data)

        handle = self._loop.call_later(delay, deliver)
        self._pending.add(handle)

    @staticmethod
    def _write(dst: _Pty, data: bytes) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(dst.master, data)


class RtuBus:
    """One simulated RS-485 bus: an :class:`RtuCable` with pymodbus's RTU server behind it.

    Every twin device that speaks Modbus RTU (a bioreactor controller, a string of MFCs)
    serves its unit ids through one of these; ids nobody owns get silence.
    """

    def __init__(
        self, clock: Clock, link: LinkFaults, *, baud: int, parity: str, stopbits: int
    ) -> None:
        self.clock, self.link = clock, link
        self.baud, self.parity, self.stopbits = baud, parity, stopbits
        self._cable: RtuCable | None = None
        self._server: ModbusSerialServer | None = None

    @property
    def driver_path(self) -> str | None:
        """The port a driver opens; None until started."""
        return self._cable.driver_path if self._cable is not None else None

    async def start(self, devices: list[SimDevice]) -> None:
        """Open the cable and answer for ``devices`` (and silence for any other id)."""
        cable = RtuCable(
            self.clock, self.link, baud=self.baud, parity=self.parity, stopbits=self.stopbits
        )
        cable.start()
        server = ModbusSerialServer(
            [*devices, silent_other_units()],
            port=cable.device_path,
            baudrate=self.baud,
            parity=self.parity,
            stopbits=self.stopbits,
            ignore_missing_devices=True,
            reconnect_delay=0,
        )
        try:
            await server.serve_forever(background=True)
        except BaseException:
            cable.close()
            raise
        self._cable, self._server = cable, server

    async def stop(self) -> None:
        """Stop answering and remove the port (safe to call twice)."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()
        cable, self._cable = self._cable, None
        if cable is not None:
            cable.close()
