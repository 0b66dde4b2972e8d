"""One serial port shared by every device on it: request/reply exchanges that never interleave.

On a multi-drop RS-485 bus (several Alicat units, or any mix of ASCII devices)
a second request sent before the first reply is read corrupts both. So every
device on a port goes through one :class:`SerialLine`, which holds one lock
for the whole exchange: flush stale input, write, read the reply, retry.

Why not serial_asyncio_fast's transport: it opens and closes the port in the
default executor (a thread). The virtual clock cannot see threads (see
twin/clock.py), so a close in the middle of a batch would let batch time race
ahead. pyserial opens and configures the port (termios, baud, 8N1) in place;
the loop's reader callback does the reading, exactly as the transport would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
from collections.abc import Callable

import serial

from drivers.modbus_link import LinkCounters
from twin.clock import Clock
from twin.errors import CommunicationError

__all__ = ["SerialLine", "open_line"]

_LINES: dict[tuple[int, str], SerialLine] = {}


class SerialLine:
    """A port, its input buffer and the lock that serialises every exchange on it."""

    def __init__(
        self, port: str, *, baud: int, clock: Clock, parity: str = "N", stopbits: int = 1
    ) -> None:
        self.port = port
        self.baud = baud
        self.parity = parity
        self.stopbits = stopbits
        self._clock = clock
        self._serial: serial.Serial | None = None
        self._buffer = bytearray()
        self._data = asyncio.Event()
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._users = 0

    @property
    def is_open(self) -> bool:
        """Whether the port is open."""
        return self._serial is not None

    def open(self) -> None:
        """Open the port (8 data bits, the configured baud, parity and stop bits); no thread:
        the clock must see everything."""
        if self._serial is not None:
            return
        try:
            port = serial.Serial(
                self.port,
                baudrate=self.baud,
                bytesize=serial.EIGHTBITS,
                parity=self.parity,
                stopbits=self.stopbits,
                timeout=0,
                exclusive=True,  # flock: a second process on the port fails loudly
            )
        except (serial.SerialException, OSError) as exc:
            raise CommunicationError(self.port, f"cannot open serial port: {exc}") from exc
        self._serial = port
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(port.fileno(), self._on_readable)

    def close(self) -> None:
        """Close the port; pending exchanges fail with CommunicationError."""
        port, self._serial = self._serial, None
        if port is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(port.fileno())
        port.close()
        self._buffer.clear()
        self._data.set()  # wake a waiting reader so it sees the port is gone

    def _on_readable(self) -> None:
        assert self._serial is not None
        try:
            data = os.read(self._serial.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # hang-up (the device end went away): stop watching, keep the port object
            if self._loop is not None:
                self._loop.remove_reader(self._serial.fileno())
            return
        self._buffer += data
        self._data.set()

    def _flush_input(self) -> None:
        """Drop stale bytes (a late reply to a timed-out request must not answer this one)."""
        self._buffer.clear()
        self._data.clear()
        if self._serial is not None:
            with contextlib.suppress(serial.SerialException, OSError, termios.error):
                self._serial.reset_input_buffer()

    async def _read_frames(self, terminator: bytes, frames: int) -> bytes:
        end = 0
        for _ in range(frames):
            while True:
                i = self._buffer.find(terminator, end)
                if i >= 0:
                    end = i + len(terminator)
                    break
                if self._serial is None:
                    raise ConnectionError("port closed")
                self._data.clear()
                await self._data.wait()
        reply = bytes(self._buffer[:end])
        del self._buffer[:end]
        return reply

    async def transact(
        self,
        request: bytes,
        *,
        device: str,
        terminator: bytes = b"\r",
        timeout: float,
        retries: int = 0,
        frames: int = 1,
        accept: Callable[[bytes], bool] | None = None,
        counters: LinkCounters | None = None,
    ) -> bytes:
        """Send one request, return its reply (``frames`` terminated frames, terminators kept).

        ``retries`` extra attempts follow a timeout or a reply ``accept`` rejects (garbled);
        pass 0 for anything that must not happen twice (a FIRE). Raises CommunicationError
        naming device and port.
        """
        c = counters if counters is not None else LinkCounters()
        async with self._lock:
            last = "no reply"
            for attempt in range(retries + 1):
                if attempt:
                    c.retries += 1
                if self._serial is None:
                    raise CommunicationError(device, f"serial port {self.port} is not open")
                self._flush_input()
                try:
                    self._serial.write(request)
                except (serial.SerialException, OSError) as exc:
                    raise CommunicationError(device, f"write to {self.port} failed: {exc}") from exc
                try:
                    async with self._clock.timeout(timeout):
                        reply = await self._read_frames(terminator, frames)
                except TimeoutError:
                    c.timeouts += 1
                    partial = bytes(self._buffer)
                    last = f"no reply within {timeout:g} s" + (
                        f" (partial {partial!r})" if partial else ""
                    )
                except ConnectionError:
                    c.failures += 1
                    raise CommunicationError(device, f"serial port {self.port} closed") from None
                else:
                    if accept is None or accept(reply):
                        c.transactions += 1
                        return reply
                    c.crc_errors += 1
                    last = f"garbled reply {reply!r}"
            c.failures += 1
            raise CommunicationError(
                device,
                f"{last} on {self.port} to {request!r} after {retries + 1} attempt(s)",
            )

    def release(self) -> None:
        """One user is done with the shared line; the last one closes the port."""
        self._users -= 1
        if self._users <= 0:
            self.close()
            key = (id(self._loop), self.port)
            if _LINES.get(key) is self:
                del _LINES[key]


def open_line(
    port: str, *, baud: int, clock: Clock, parity: str = "N", stopbits: int = 1
) -> SerialLine:
    """The one shared line of ``port`` on this loop (opened on first use); call ``release()``."""
    key = (id(asyncio.get_running_loop()), port)
    line = _LINES.get(key)
    if line is None or not line.is_open:
        line = SerialLine(port, baud=baud, clock=clock, parity=parity, stopbits=stopbits)
        line.open()
        _LINES[key] = line
    elif (line.baud, line.parity, line.stopbits) != (baud, parity, stopbits):
        have = f"{line.baud} 8{line.parity}{line.stopbits}"
        raise CommunicationError(
            port, f"already open at {have}, asked for {baud} 8{parity}{stopbits}"
        )
    line._users += 1
    return line
