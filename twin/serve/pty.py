"""A pseudo-terminal the twin serves a serial device on: drivers open ``.path`` like /dev/ttyUSB0.

The twin holds the master side; the driver opens the slave path with pyserial,
exactly as it would open a USB-RS485 adapter. The endpoint keeps its own slave
fd open for its whole life, so a driver closing (or not yet having opened) the
port never makes the master read EIO. Everything runs on the event loop's
reader/writer callbacks: no threads, so the virtual clock sees every byte.

A pty moves bytes instantly whatever its baud, so the endpoint charges every
exchange its real time on the line (twin/serve/wire.py): a reply becomes
readable only after the request and the reply have each taken their character
time at the configured baud and framing (plus any ``link.delay_s``). The device
answers with its values as of the moment the request arrived. The endpoint
also applies its :class:`LinkFaults` (``link``): a silent device reads and
ignores requests, a corrupting one garbles every Nth reply.

Bad input never grows memory: a line longer than ``max_line`` is cut there and
the rest of it, however long, is counted and dropped up to its CR; the handler
then gets the first ``max_line + 1`` bytes, so it knows the line was too long
and answers as its device doc says. While ``MAX_QUEUED`` lines wait or
``MAX_OUTPUT`` reply bytes are unread, the endpoint stops reading: the kernel's
pty buffer fills and the writer waits, as behind RTS/CTS, instead of the queue
growing with a flood.

Why no worker task: an exchange is the unit of work of the whole twin (about
87,000 of them in a 10-day batch), so it takes as few loop iterations as it can.
A handler that answers at once (a plain function) is called from the reader
callback, and the reply is written by one timer at the end of its wire time;
a queue and a task sleeping per exchange cost two extra loop iterations and a
future each. A handler that must wait (a coroutine, e.g. a scripted test device)
still works: it runs as a task, and the line stays busy until it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import termios
import tty
from collections import deque
from collections.abc import Awaitable, Callable

from twin.clock import Clock
from twin.serve.faults import LinkFaults, garble_ascii
from twin.serve.wire import bits_per_char, char_time_s

__all__ = ["MAX_LINE", "MAX_OUTPUT", "MAX_QUEUED", "LineHandler", "PtyEndpoint"]

LineHandler = Callable[[bytes], bytes | Awaitable[bytes | None] | None]
"""Gets one received line (terminator stripped); returns the reply bytes, or None to stay silent.

A plain function answers within the reader callback (the fast path); a coroutine
function is awaited in a task (for devices that must wait before they answer)."""

_log = logging.getLogger(__name__)

MAX_LINE = 1024
"""Default longest line (bytes, terminator excluded); each device doc sets its own."""

MAX_QUEUED = 64
"""Lines waiting for their turn before the endpoint stops reading (a burst is answered in
order; a flood waits in the kernel's buffer)."""

MAX_OUTPUT = 64 * 1024
"""Reply bytes the driver has not read before the endpoint stops reading requests."""

_BAUDS = {
    9600: termios.B9600,
    19200: termios.B19200,
    38400: termios.B38400,
    57600: termios.B57600,
    115200: termios.B115200,
}


class PtyEndpoint:
    """One pty pair: splits what the driver writes into CR-terminated lines, writes the replies.

    A LF next to the CR (CR LF, LF CR) is dropped; an empty line is not handed on.
    """

    def __init__(
        self,
        handler: LineHandler,
        *,
        baud: int = 9600,
        name: str = "pty",
        framing: str = "8N1",
        link: LinkFaults | None = None,
        clock: Clock | None = None,
        max_line: int = MAX_LINE,
    ) -> None:
        if max_line < 1:
            raise ValueError(f"max_line must be at least 1, got {max_line}")
        self._handler = handler
        self.max_line = max_line
        self._baud = baud
        self.name = name
        self.framing = framing
        self.char_s = char_time_s(baud, bits_per_char(framing))
        self.link = link if link is not None else LinkFaults()
        self._clock = clock
        self.wire_s_total = 0.0  # batch seconds this line has been busy (for benchmarks)
        self._master: int | None = None
        self._slave: int | None = None
        self._path = ""
        self._inbuf = bytearray()  # the line coming in (at most max_line + 1 bytes of it)
        self._skipped = 0  # inside an overlong line: its bytes so far; 0 otherwise
        self._lead = 0  # LFs before the line coming in (wire bytes it is charged for)
        self._reading = False
        self._outbuf = bytearray()
        self._lines: deque[tuple[bytes, int]] = deque()
        # The exchange on the line: a reply on its wire time (a timer) or a handler still
        # working (a task). While either is set, arriving lines wait their turn.
        self._timer: asyncio.TimerHandle | None = None
        self._pending: asyncio.Task[bytes | None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = False

    @property
    def path(self) -> str:
        """The slave device path a driver opens (valid between start and close)."""
        if not self._path:
            raise RuntimeError(f"{self.name}: pty endpoint not started")
        return self._path

    async def start(self) -> None:
        """Open the pty pair in raw mode and start answering lines."""
        if self._master is not None:
            return
        master, slave = os.openpty()
        try:
            for fd in (master, slave):
                tty.setraw(fd)
                os.set_blocking(fd, False)
            attrs = termios.tcgetattr(slave)
            speed = _BAUDS.get(self._baud)
            if speed is not None:  # cosmetic on a pty, but `stty -F path` shows the right baud
                attrs[4] = attrs[5] = speed
                termios.tcsetattr(slave, termios.TCSANOW, attrs)
            path = os.ttyname(slave)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave, self._path = master, slave, path
        self._loop = asyncio.get_running_loop()
        self._resume_reading()

    async def close(self) -> None:
        """Stop answering, close both fds; the path disappears."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # or its own failure
                await pending
        self._lines.clear()
        self._inbuf.clear()
        self._skipped = self._lead = 0
        if self._master is not None and self._loop is not None:
            self._pause_reading()
            if self._writing:
                self._loop.remove_writer(self._master)
                self._writing = False
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        self._path = ""

    def _pause_reading(self) -> None:
        if self._reading and self._master is not None and self._loop is not None:
            self._loop.remove_reader(self._master)
        self._reading = False

    def _resume_reading(self) -> None:
        if not self._reading and self._master is not None and self._loop is not None:
            self._loop.add_reader(self._master, self._on_readable)
            self._reading = True

    def _backlogged(self) -> bool:
        return len(self._lines) >= MAX_QUEUED or len(self._outbuf) >= MAX_OUTPUT

    def _on_readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO cannot happen while we hold the slave, but be safe
            if exc.errno != errno.EIO:
                raise
            return
        self._take(data)
        if self._backlogged():
            self._pause_reading()  # resumed once the queue has drained
        self._answer_next()

    def _take(self, data: bytes) -> None:
        """Split bytes into lines at CR; keep at most ``max_line + 1`` bytes of any line."""
        limit = self.max_line + 1
        inbuf = self._inbuf
        *complete, rest = data.split(b"\r")
        for raw in complete:
            if self._skipped:  # the CR that ends an overlong line: hand on its head
                line, n_in = bytes(inbuf), self._lead + self._skipped + len(raw) + 1
                self._skipped = 0
            else:  # wire bytes: the line, its CR and the LF before it (of the last CR LF)
                n_in = self._lead + len(inbuf) + len(raw) + 1
                line = (bytes(inbuf) + raw if inbuf else raw).strip(b"\n")[:limit]
            self._lead = 0
            inbuf.clear()
            if line:
                self._lines.append((line, n_in))
        if self._skipped:
            self._skipped += len(rest)
            return
        if not inbuf:  # the LF of a CR LF: not part of the line, but on the wire all the same
            stripped = rest.lstrip(b"\n")
            self._lead += len(rest) - len(stripped)
            rest = stripped
        inbuf += rest
        if len(inbuf) > limit:  # a trailing LF may still come: one byte of slack
            self._skipped = len(inbuf)
            del inbuf[limit:]

    def _answer_next(self) -> None:
        """Answer waiting lines strictly in arrival order, one exchange on the line at a time.

        The wire time is charged once per exchange (request + reply), not twice: the
        device samples its values as the request starts to arrive, ms early.
        """
        while (
            self._lines
            and self._timer is None
            and self._pending is None
            and len(self._outbuf) < MAX_OUTPUT  # the driver is not reading: as if CTS dropped
        ):
            line, n_in = self._lines.popleft()
            if not self._reading and not self._backlogged():
                self._resume_reading()
            if self.link.silent:  # dead device or cut cable: the request goes nowhere
                self.wire_s_total += n_in * self.char_s
                continue
            try:
                reply = self._handler(line)
            except Exception:  # a model bug must not kill the port: log it, stay silent
                _log.exception("%s: handler failed on %r", self.name, line)
                continue
            if reply is not None and not isinstance(reply, (bytes, bytearray)):  # awaitable
                assert self._loop is not None
                task = self._loop.create_task(_awaited(reply), name=f"{self.name}-pty")
                self._pending = task
                task.add_done_callback(lambda t, n=n_in, ln=line: self._answered(t, n, ln))
                return
            self._send_after_wire(reply, n_in)

    def _answered(self, task: asyncio.Task[bytes | None], n_in: int, line: bytes) -> None:
        """A waiting handler finished: send its reply (or stay silent), then go on."""
        if self._pending is not task:
            return  # closed meanwhile
        self._pending = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            _log.error("%s: handler failed on %r", self.name, line, exc_info=exc)
        else:
            self._send_after_wire(task.result(), n_in)
        self._answer_next()

    def _send_after_wire(self, reply: bytes | None, n_in: int) -> None:
        """Hold the reply for the exchange's wire time (plus any delay), then write it."""
        if not reply:
            return
        link = self.link
        if link.corrupt_next():
            reply = garble_ascii(reply)
        wire = (n_in + len(reply)) * self.char_s
        self.wire_s_total += wire
        # The loop's own timer at the very time Clock.call_later would set (loop time plus
        # delay): one call instead of four on the path every exchange takes.
        loop = self._loop
        assert loop is not None
        delay = wire + max(0.0, link.delay_s)
        self._deliver_at(loop.time() + delay, reply)

    def _deliver_at(self, when: float, reply: bytes) -> None:
        """Write ``reply`` at loop time ``when`` (a timer); the next line waits until then."""
        assert self._loop is not None
        self._timer = self._loop.call_at(when, self._deliver, reply)

    def _deliver(self, reply: bytes) -> None:
        self._timer = None
        if self._master is not None:
            self._write(reply)
            self._answer_next()

    def _write(self, data: bytes) -> None:
        """Write now if nothing is queued (one system call), else queue behind what is."""
        assert self._master is not None and self._loop is not None
        if self._outbuf:
            self._outbuf += data
            return
        try:
            n = os.write(self._master, data)
        except BlockingIOError:
            n = 0
        if n < len(data):  # the kernel took part of it: the writer callback sends the rest
            self._outbuf += data[n:]
            self._loop.add_writer(self._master, self._flush_out)
            self._writing = True

    def _flush_out(self) -> None:
        assert self._master is not None and self._loop is not None
        try:
            n = os.write(self._master, self._outbuf)
        except BlockingIOError:
            n = 0
        del self._outbuf[:n]
        if self._outbuf and not self._writing:
            self._loop.add_writer(self._master, self._flush_out)
            self._writing = True
        elif not self._outbuf and self._writing:
            self._loop.remove_writer(self._master)
            self._writing = False
        if len(self._outbuf) < MAX_OUTPUT:  # room again: answer what waits, read on
            if not self._backlogged():
                self._resume_reading()
            self._answer_next()


async def _awaited(reply: Awaitable[bytes | None]) -> bytes | None:
    return await reply
