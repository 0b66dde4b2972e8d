"""A serial null modem inside one process: a port named ``memory://NAME`` with no kernel.

pymodbus connects a Modbus client to a server in the same process through its
``NullModem`` transport (host ``NULLMODEM_HOST``); this is the same for the
serial ASCII drivers. A device end *listens* on a name, a host end (a driver's
:class:`drivers.serial_line.SerialLine`) *connects* to it, and bytes written at
one end are handed to the other end's receiver within the write call: no file
descriptor, no system call, no poll. What crosses is the same bytes a UART
would carry, so framing, terminators, garbled replies and silence behave as on
a pseudo-terminal; the device end still charges wire time on its clock.

The host end also carries how long its driver waits for the reply to what it wrote
(``HostEnd.deadline``, loop time): the driver arms its timeout timer only if the reply
is not in by the end of the write, so a device end that hands a reply over within the
write must not do so later than that deadline (twin/serve/memory_line.py), exactly as
the timer would have fired first; and one that sets a timer of its own first has the
driver arm its deadline (:meth:`DeviceEnd.before_timer`), so the two stand on the clock
in the order they did when the driver armed its timer before writing (a reply due with
the deadline still loses to it).

Why: an ensemble of thousands of twin batches (``poc-twin whatif``) runs the
real engine and drivers in-process, where a pty's two system calls and a poll
per exchange would cost more than the rest of the batch. The port is chosen by
its name, as pyserial chooses ``loop://`` or ``socket://`` handlers: the driver
does not know what is at the other end.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable

__all__ = ["SCHEME", "HostEnd", "NullModemError", "connect", "is_memory_port", "listen"]

SCHEME = "memory://"

Receiver = Callable[[bytes], None]

_ports: dict[tuple[int, str], _Port] = {}  # (loop id, name) -> the listening device end
_serial = itertools.count(1)


class NullModemError(OSError):
    """No device listens on the name, or the name is taken."""


def is_memory_port(port: str) -> bool:
    """Whether ``port`` names a null-modem port rather than a device file."""
    return port.startswith(SCHEME)


class _Port:
    """One named port: the device end's receiver and the connected host end, if any."""

    def __init__(self, name: str, device_receive: Receiver) -> None:
        self.name = name
        self.device_receive = device_receive
        self.host: HostEnd | None = None


class HostEnd:
    """What a driver holds: write requests, receive replies through its receiver."""

    def __init__(
        self, port: _Port, receive: Receiver, arm_deadline: Callable[[], None] | None = None
    ) -> None:
        self._port: _Port | None = port
        self.receive = receive
        #: Loop time until which the driver waits for a reply (inf: it waits for none).
        self.deadline = math.inf
        #: Puts the driver's deadline timer on the clock now, if it waits and has none yet.
        self.arm_deadline = arm_deadline if arm_deadline is not None else _nothing

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def write(self, data: bytes) -> None:
        """Hand ``data`` to the device end now; on a closed or abandoned port it is lost,
        as bytes sent down a cable nobody listens to."""
        port = self._port
        if port is not None:
            port.device_receive(data)

    def close(self) -> None:
        port, self._port = self._port, None
        if port is not None and port.host is self:
            port.host = None


class DeviceEnd:
    """What the device holds: its name, and a write that reaches the connected driver."""

    def __init__(self, port: _Port, key: tuple[int, str]) -> None:
        self._port = port
        self._key = key

    @property
    def path(self) -> str:
        """What a bench gives the driver as its serial port."""
        return SCHEME + self._port.name

    @property
    def reader_deadline(self) -> float:
        """Until when (loop time) the connected driver waits for a reply; inf if it waits
        for none (or none is connected)."""
        host = self._port.host
        return host.deadline if host is not None else math.inf

    def before_timer(self) -> None:
        """The device is about to set a timer (a reply after its wire time): the connected
        driver's deadline timer, if it waits, goes on the clock first."""
        host = self._port.host
        if host is not None:
            host.arm_deadline()

    def write(self, data: bytes) -> None:
        """Hand ``data`` to the connected driver; with none connected it is lost."""
        host = self._port.host
        if host is not None:
            host.receive(data)

    def close(self) -> None:
        """Stop listening: the name is free, a connected driver hears nothing more."""
        if _ports.get(self._key) is self._port:
            del _ports[self._key]
        host, self._port.host = self._port.host, None
        if host is not None:
            host._port = None


def listen(stem: str, receive: Receiver) -> DeviceEnd:
    """A new port ``memory://STEM-N`` on this loop whose written bytes go to ``receive``."""
    name = f"{stem}-{next(_serial)}"
    key = (id(asyncio.get_running_loop()), name)
    port = _ports[key] = _Port(name, receive)
    return DeviceEnd(port, key)


def _nothing() -> None:
    pass


def connect(
    path: str, receive: Receiver, arm_deadline: Callable[[], None] | None = None
) -> HostEnd:
    """Connect to the device listening on ``path`` (``memory://NAME``) on this loop; one
    driver end per port at a time, as a serial port opened exclusively. ``arm_deadline``:
    see :meth:`DeviceEnd.before_timer`."""
    if not is_memory_port(path):
        raise NullModemError(f"{path!r} is not a {SCHEME} port")
    key = (id(asyncio.get_running_loop()), path[len(SCHEME) :])
    port = _ports.get(key)
    if port is None:
        raise NullModemError(f"no device listens on {path}")
    if port.host is not None and port.host.is_open:
        raise NullModemError(f"{path} is already open")
    host = port.host = HostEnd(port, receive, arm_deadline)
    return host
