"""An RS-485 bus on pseudo-terminals: the driver's port, the twin's port, and the cable between.

pymodbus's ``ModbusSerialServer`` opens a serial port *path*; a driver opens
another. Two pty pairs joined by this cable give both ends a real tty, exactly
as a USB-RS485 adapter on each side of a twisted pair would. The cable lives on
the event loop (reader callbacks, timers on the batch clock, no thread), so the
virtual clock sees every byte, and it is the one place where the line itself
misbehaves: it consults ``link`` (twin.serve.faults.LinkFaults) for every reply
and charges each frame its wire time at the configured baud (twin/serve/wire.py).

The server behind it frames requests as the Modbus over Serial Line spec v1.02
does, not as pymodbus' hunting framer: a silence longer than 3.5 characters
ends whatever came before (so garbage on the line never swallows the next good
frame); a frame with a bad CRC gets no reply; a request to a unit nobody owns
gets no reply; then the same checks as the TCP server
(twin.serve.modbus_server.check_request): an unlisted function -> 0x01, a
quantity out of range -> 0x03, before pymodbus decodes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tty
from collections.abc import Callable, Collection
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusSerialServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from twin.clock import Clock
from twin.serve.faults import LinkFaults, bad_crc
from twin.serve.modbus_server import DATA_FUNCTIONS, check_request
from twin.serve.wire import bits_per_char, frame_time_s

__all__ = ["RtuBus", "RtuCable", "silent_other_units"]

_MAX_FRAME = 256  # unit id + PDU of at most 253 bytes + CRC
_FIXED_SIZE = {1: 8, 2: 8, 3: 8, 4: 8, 5: 8, 6: 8, 7: 4, 11: 4, 12: 4, 17: 4, 22: 10}
"""Request frame sizes fixed by the function code (unit id and CRC included)."""


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


def silence_s(baud: int, parity: str, stopbits: int) -> float:
    """The 3.5-character silence that ends an RTU frame (fixed 1.75 ms above 19200 baud)."""
    if baud > 19200:
        return 0.00175
    return 3.5 * bits_per_char(f"8{parity}{stopbits}") / baud


def _request_size(frame: bytes) -> int | None:
    """Bytes of the request ``frame`` starts (0: not known yet; None: not fixed by the
    function code, so the frame is whatever arrives before the silence)."""
    fc = frame[1]
    if fc in _FIXED_SIZE:
        return _FIXED_SIZE[fc]
    if fc in (15, 16):
        return 9 + frame[6] if len(frame) > 6 else 0
    if fc == 23:
        return 13 + frame[10] if len(frame) > 10 else 0
    return None


def _crc_ok(frame: bytes) -> bool:
    return FramerRTU.compute_CRC(frame[:-2]) == int.from_bytes(frame[-2:], "big")


class _RtuHandler(ServerRequestHandler):
    """The serial port's handler: RTU framing by silence and CRC, then the request checks.

    A request whose length its function code fixes is answered as soon as it is complete;
    any other (an unknown function, a byte count that disagrees with the bytes sent) is
    whatever arrived before the 3.5-character silence, as a device on the line sees it.
    """

    def __init__(self, owner: Any, *args: Any) -> None:
        super().__init__(owner, *args)
        self._bus: TwinModbusSerialServer = owner
        self._last_rx = -math.inf
        self._silence: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        """Bytes after a silence start a new frame: what came before is dropped unanswered."""
        now = self._bus.clock.now()
        if now - self._last_rx > self._bus.silence_s:
            self.recv_buffer = b""
        self._last_rx = now
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        buffer = self.recv_buffer + data
        used = self.callback_data(buffer)
        self.recv_buffer = buffer[used:] if self.transport is not None else b""
        if self.recv_buffer:
            self._silence = self.loop.call_later(self._bus.silence_s, self._end_of_frame)

    def _end_of_frame(self) -> None:
        """The line fell silent: what is buffered is one whole frame, or garbage."""
        self._silence = None
        frame, self.recv_buffer = self.recv_buffer, b""
        if len(frame) >= FramerRTU.MIN_SIZE and _crc_ok(frame):
            self._answer(frame, len(frame))

    def callback_disconnected(self, exc: Exception | None) -> None:
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        super().callback_disconnected(exc)

    def callback_data(self, data: bytes, addr: tuple[Any, ...] | None = None) -> int:
        """Answer the request at the start of ``data`` once it is complete; returns bytes used
        (0: wait for more, or for the silence that ends the frame)."""
        n = len(data)
        if n < FramerRTU.MIN_SIZE:
            return 0
        size = _request_size(data)
        if not size or n < size or size > _MAX_FRAME:
            return 0
        if not _crc_ok(data[:size]):
            return n  # a damaged frame: no reply, and nothing before the silence is a frame
        return self._answer(data, size)

    def _answer(self, frame: bytes, size: int) -> int:
        """Refuse or hand to pymodbus the request ``frame[:size]`` (CRC checked)."""
        unit, pdu = frame[0], frame[1 : size - 2]
        if unit not in self._bus.units:
            return size  # another unit's, or a broadcast: not ours to answer
        refusal = check_request(pdu, self._bus.functions)
        if refusal is None:
            request = self.framer.decoder.decode(pdu)
            if request is not None:  # check_request lets through only what pymodbus decodes
                request.dev_id, request.transaction_id = unit, 0
                self.last_pdu, self.last_addr = request, None
                self.loop.call_soon(self.handle_later)
                return size
            refusal = ExcCodes.DEVICE_FAILURE
        self.server_send(ExceptionResponse(pdu[0], refusal, device_id=unit), None)
        return size


class TwinModbusSerialServer(ModbusSerialServer):
    """pymodbus' serial server with spec framing and request checks in front (see above)."""

    def __init__(
        self,
        devices: list[SimDevice],
        *,
        clock: Clock,
        functions: Collection[int],
        port: str,
        baudrate: int,
        parity: str,
        stopbits: int,
    ) -> None:
        super().__init__(
            [*devices, silent_other_units()],
            port=port,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            ignore_missing_devices=True,
            reconnect_delay=0,
        )
        self.clock = clock
        self.units = frozenset(d.id for d in devices)
        self.functions = frozenset(functions)
        self.silence_s = silence_s(baudrate, parity, stopbits)

    def callback_new_connection(self) -> _RtuHandler:
        return _RtuHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


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
    serves its unit ids through one of these; ids nobody owns get silence. ``functions``:
    the function codes the devices list (any other is refused with 0x01).
    """

    def __init__(
        self,
        clock: Clock,
        link: LinkFaults,
        *,
        baud: int,
        parity: str,
        stopbits: int,
        functions: Collection[int] = DATA_FUNCTIONS,
    ) -> None:
        self.clock, self.link = clock, link
        self.baud, self.parity, self.stopbits = baud, parity, stopbits
        self.functions = frozenset(functions)
        self._cable: RtuCable | None = None
        self._server: TwinModbusSerialServer | None = None

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
        server = TwinModbusSerialServer(
            devices,
            clock=self.clock,
            functions=self.functions,
            port=cable.device_path,
            baudrate=self.baud,
            parity=self.parity,
            stopbits=self.stopbits,
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
