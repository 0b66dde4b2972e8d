"""Modbus in one process: request and response PDUs handed over, not bytes, while the link is sound.

pymodbus connects a client to a server in the same process through its ``NullModem``
(host ``NULLMODEM_HOST``), but what crosses it are bytes: the client frames each request
(MBAP), its transaction manager matches the reply, the server decodes the frame and frames
its answer, and the client decodes that again. In an ensemble batch (``poc-twin whatif``)
that framing was 11 % of the instructions (callgrind, issue 17), and it tells nothing new:
Modbus framing is exercised over loopback TCP by every other bench and test.

So a device served on the null modem may also register an *end* here under its port. A
driver's client for that port (:class:`NullModemClient`) hands the request PDU that
pymodbus built to the device end, which answers it within the call through pymodbus' own
data access (the PDU's ``datastore_update``), and gets the response PDU back: the same
registers, the same exception replies, the same batch time. Whenever the device's link is
not sound (silent, late, garbling: the twin's :class:`~twin.serve.faults.LinkFaults`), or
no end is registered, the request goes as bytes through pymodbus' client on the same null
modem, so faults behave exactly as they do on a wire (a reply pymodbus cannot frame
included: it closes the connection and the attempt times out, as on a socket).

The client is chosen by the endpoint's address, as pymodbus chooses its null modem by
host: the driver does not know what is at the other end.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ModbusPDU
from pymodbus.transport import NULLMODEM_HOST

__all__ = ["NULLMODEM_HOST", "DeviceEnd", "NullModemClient", "listen"]


class DeviceEnd(Protocol):
    """What a device offers on the null modem: whether its link is sound, and its answers."""

    def sound(self) -> bool:
        """True when a request may be answered within the call (no link fault is set)."""
        ...

    def answer(self, request: ModbusPDU) -> ModbusPDU:
        """The response PDU to ``request`` (an exception response included), now."""
        ...


_ends: dict[tuple[int, int], DeviceEnd] = {}  # (loop id, null-modem port) -> device end


class Listening:
    """A registered device end; :meth:`close` takes it off the null modem."""

    def __init__(self, key: tuple[int, int], end: DeviceEnd) -> None:
        self._key, self._end = key, end

    def close(self) -> None:
        if _ends.get(self._key) is self._end:
            del _ends[self._key]


def listen(port: int, end: DeviceEnd) -> Listening:
    """Register ``end`` as the device on null-modem ``port`` of the running loop."""
    key = (id(asyncio.get_running_loop()), port)
    if key in _ends:
        raise ValueError(f"null-modem port {port} already has a device end")
    _ends[key] = end
    return Listening(key, end)


class NullModemClient(ModbusClientMixin[Any]):
    """A Modbus client on null-modem ``port``: PDUs to a registered, sound device end, else
    bytes through pymodbus' own client (which is always connected, for that)."""

    def __init__(self, port: int, **settings: Any) -> None:
        """``settings``: as for pymodbus' ``AsyncModbusTcpClient`` (timeout, retries, ...)."""
        ModbusClientMixin.__init__(self)
        self._port = port
        self._bytes = AsyncModbusTcpClient(NULLMODEM_HOST, port=port, **settings)
        self._end: DeviceEnd | None = None

    @property
    def connected(self) -> bool:
        return self._bytes.connected

    async def connect(self) -> bool:
        """Connect the byte client; find the device end, if the device registered one."""
        ok = await self._bytes.connect()
        self._end = _ends.get((id(asyncio.get_running_loop()), self._port)) if ok else None
        return ok

    def close(self) -> None:
        self._end = None
        self._bytes.close()

    async def execute(self, no_response_expected: bool, request: ModbusPDU) -> Any:
        """The response to ``request``: handed over by a sound device end, else over bytes."""
        end = self._end
        if end is None or no_response_expected or not end.sound():
            try:
                return await self._bytes.execute(no_response_expected, request)
            except ModbusIOException:
                # A reply pymodbus cannot frame: on a socket, asyncio closes the connection
                # ("protocol.data_received() call failed") and the reply never comes, so the
                # attempt times out. On the null modem the error would reach the caller
                # within the call; make it what the wire makes it.
                self._bytes.close()
                return await asyncio.get_running_loop().create_future()  # never completes
        return end.answer(request)
