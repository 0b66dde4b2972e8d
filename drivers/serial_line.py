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

Why a future and a timer of our own per exchange, and ``os.write`` on the port's
fd: an exchange is the twin's unit of work (about 87,000 in a 10-day batch), so
it costs one future, one timer and one write system call. The reader callback
completes the future only when the whole reply is in (not on every chunk), and
pyserial's ``write`` would add a ``select()`` per write to wait for a drain that
a non-blocking port does not need (it is still used when the kernel takes only
part of a request). The timer is armed after the write, at the deadline taken
before it, and only if the reply is not already in: a null modem's device may
answer within the write, and it is told the deadline (``HostEnd.deadline``) so it
never answers later than the timer would have fired; a device that sets a timer
for its reply has the line arm its deadline first (``HostEnd.arm_deadline``).

Why a cap on a reply (``max_reply``): a device gone mad, or a cable picking up
noise, can send without end and never a terminator. The buffer never holds more
than ``max_reply`` bytes: the exchange fails at once with a clear error (and is
retried like a garbled reply), and every message shows at most the first
``SHOWN`` bytes of what came.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import os
import termios
from collections.abc import Callable

import serial

from drivers import null_modem
from drivers.modbus_link import LinkCounters
from drivers.null_modem import is_memory_port
from twin.clock import Clock
from twin.errors import CommunicationError

__all__ = ["MAX_REPLY", "SerialLine", "open_line", "shown"]

MAX_REPLY = 4096
"""Bytes one reply may take (all its frames); far above any reply our devices send."""

SHOWN = 64
"""Bytes of a garbled or partial reply quoted in an error message."""


class _Overlong(Exception):
    """The reply outgrew ``max_reply`` before its terminator came."""


class _WriteFailed(Exception):
    """The request could not be written (the port's error is its cause)."""


def shown(data: bytes) -> str:
    """``data`` for an error message: its repr, cut to SHOWN bytes with the full length."""
    if len(data) <= SHOWN:
        return repr(data)
    return f"{data[:SHOWN]!r}... ({len(data)} bytes)"


_LINES: dict[tuple[int, str], SerialLine] = {}


class SerialLine:
    """A port, its input buffer and the lock that serialises every exchange on it."""

    def __init__(
        self,
        port: str,
        *,
        baud: int,
        clock: Clock,
        parity: str = "N",
        stopbits: int = 1,
        max_reply: int = MAX_REPLY,
    ) -> None:
        self.port = port
        self.max_reply = max_reply
        self.baud = baud
        self.parity = parity
        self.stopbits = stopbits
        self._clock = clock
        self._serial: serial.Serial | None = None
        self._memory: null_modem.HostEnd | None = None  # a memory:// port instead of a device
        self._fd = -1
        self._buffer = bytearray()
        # The exchange waiting for its reply: its future, terminator and frame count.
        self._waiter: asyncio.Future[int] | None = None
        self._deadline = 0.0  # its deadline (loop time) and, once armed, the deadline's timer
        self._timer: asyncio.TimerHandle | None = None
        self._terminator = b"\r"
        self._frames = 1
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._users = 0
        #: The context every exchange's timer runs in (one line, one loop): not a copy each.
        self._timer_context = contextvars.Context()

    @property
    def is_open(self) -> bool:
        """Whether the port is open."""
        return self._serial is not None or (self._memory is not None and self._memory.is_open)

    def open(self) -> None:
        """Open the port (8 data bits, the configured baud, parity and stop bits); no thread:
        the clock must see everything. A ``memory://`` port is a device in this process
        (:mod:`drivers.null_modem`): the same exchanges, no file descriptor."""
        if self._serial is not None or self._memory is not None:
            return
        if is_memory_port(self.port):
            try:
                self._memory = null_modem.connect(self.port, self._receive, self._arm_deadline)
            except null_modem.NullModemError as exc:
                raise CommunicationError(self.port, f"cannot open serial port: {exc}") from exc
            self._loop = asyncio.get_running_loop()
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
        self._fd = port.fileno()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        """Close the port; pending exchanges fail with CommunicationError."""
        memory, self._memory = self._memory, None
        if memory is not None:
            memory.close()
        port, self._serial = self._serial, None
        if port is None and memory is None:
            return
        if port is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._fd)
            port.close()
        self._fd = -1
        self._buffer.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():  # the port is gone: tell the exchange
            waiter.set_exception(ConnectionError("port closed"))

    def _on_readable(self) -> None:
        assert self._serial is not None
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # hang-up (the device end went away): stop watching, keep the port object
            if self._loop is not None:
                self._loop.remove_reader(self._fd)
            return
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        """Bytes from the device: complete the waiting exchange once its reply is all in."""
        self._buffer += data
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            end = self._reply_end()
            if end:
                waiter.set_result(end)
            elif len(self._buffer) > self.max_reply:
                waiter.set_exception(_Overlong())
                self._buffer.clear()
        elif len(self._buffer) > self.max_reply:  # nobody waits: stale bytes, dropped anyway
            self._buffer.clear()

    def _reply_end(self) -> int:
        """Where the awaited reply ends in the buffer (its last terminator), 0 if incomplete."""
        buffer, terminator = self._buffer, self._terminator
        if self._frames == 1:  # nearly every reply: one frame
            i = buffer.find(terminator)
            return i + len(terminator) if i >= 0 else 0
        end = 0
        for _ in range(self._frames):
            i = buffer.find(terminator, end)
            if i < 0:
                return 0
            end = i + len(terminator)
        return end

    def _flush_input(self) -> None:
        """Drop stale bytes (a late reply to a timed-out request must not answer this one).

        ``tcflush`` on the port's fd is what pyserial's ``reset_input_buffer`` does, without
        its two extra calls on a path every exchange takes.
        """
        self._buffer.clear()
        if self._serial is not None:  # a null modem keeps nothing beyond our buffer
            with contextlib.suppress(OSError, termios.error):
                termios.tcflush(self._fd, termios.TCIFLUSH)

    def _send(self, request: bytes) -> None:
        """Put the request on the wire: one write system call (pyserial finishes a short one)."""
        if self._memory is not None:
            self._memory.write(request)
            return
        assert self._serial is not None
        try:
            n = os.write(self._fd, request)
        except BlockingIOError:  # the port's output buffer is full: pyserial waits for room
            n = 0
        if n < len(request):
            self._serial.write(request[n:])

    async def _exchange(
        self, request: bytes, terminator: bytes, frames: int, timeout: float
    ) -> bytes:
        """Write ``request``, return the next ``frames`` terminated frames; TimeoutError after
        ``timeout`` batch seconds.

        The wait for the reply (its future and its deadline) is set up before the request
        is written: a device that answers within the write call (a null modem,
        twin/serve/memory_line.py) completes it, and knows the deadline
        (``HostEnd.deadline``), so a reply slower than the timeout is never taken. The
        deadline's timer is armed after the write, only if the reply is not in by then
        (most exchanges on a null modem need none), or earlier if the device sets a timer
        of its own within the write (:meth:`_arm_deadline`): it stands on the clock as
        if armed before the write.
        """
        assert self._loop is not None
        self._terminator, self._frames = terminator, frames
        loop = self._loop
        waiter: asyncio.Future[int] = loop.create_future()
        self._waiter = waiter
        # What Clock.call_later sets (loop time plus the timeout), from the loop itself.
        self._deadline = deadline = loop.time() + max(0.0, timeout)
        memory = self._memory
        if memory is not None:
            memory.deadline = deadline
        try:
            try:
                self._send(request)
            except (serial.SerialException, OSError) as exc:
                raise _WriteFailed from exc
            if not waiter.done():
                self._arm_deadline()
            end = await waiter
        finally:
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            if memory is not None:
                memory.deadline = math.inf
            self._waiter = None
        buffer = self._buffer
        if end == len(buffer):  # the reply and nothing after it (a copy less)
            reply = bytes(buffer)
            buffer.clear()
            return reply
        reply = bytes(buffer[:end])
        del buffer[:end]
        return reply

    def _arm_deadline(self) -> None:
        """Put the waiting exchange's deadline timer on the clock, if not there yet."""
        waiter, loop = self._waiter, self._loop
        if self._timer is None and waiter is not None and not waiter.done() and loop:
            # In the line's own context (_expire reads no context variable).
            self._timer = loop.call_at(self._deadline, _expire, waiter, context=self._timer_context)

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
        lock = self._lock
        await lock.acquire()  # what ``async with`` does, two coroutines fewer per exchange
        try:
            last = "no reply"
            for attempt in range(retries + 1):
                if attempt:
                    c.retries += 1
                if not self.is_open:
                    raise CommunicationError(device, f"serial port {self.port} is not open")
                self._flush_input()
                try:
                    reply = await self._exchange(request, terminator, frames, timeout)
                except _WriteFailed as failed:
                    exc = failed.__cause__
                    raise CommunicationError(device, f"write to {self.port} failed: {exc}") from exc
                except TimeoutError:
                    c.timeouts += 1
                    partial = bytes(self._buffer)
                    last = f"no reply within {timeout:g} s" + (
                        f" (partial {shown(partial)})" if partial else ""
                    )
                except _Overlong:
                    c.crc_errors += 1
                    last = (
                        f"reply longer than {self.max_reply} bytes without its "
                        f"terminator {terminator!r}"
                    )
                except ConnectionError:
                    c.failures += 1
                    raise CommunicationError(device, f"serial port {self.port} closed") from None
                else:
                    if accept is None or accept(reply):
                        c.transactions += 1
                        return reply
                    c.crc_errors += 1
                    last = f"garbled reply {shown(reply)}"
            c.failures += 1
            raise CommunicationError(
                device,
                f"{last} on {self.port} to {shown(request)} after {retries + 1} attempt(s)",
            )
        finally:
            lock.release()

    def release(self) -> None:
        """One user is done with the shared line; the last one closes the port."""
        self._users -= 1
        if self._users <= 0:
            self.close()
            key = (id(self._loop), self.port)
            if _LINES.get(key) is self:
                del _LINES[key]


def _expire(waiter: asyncio.Future[int]) -> None:
    """An exchange's timer ran out before its reply was complete."""
    if not waiter.done():
        waiter.set_exception(TimeoutError())


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
