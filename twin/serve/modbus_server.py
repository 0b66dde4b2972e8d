"""A real pymodbus server whose register map is a twin device's own callbacks.

pymodbus' SimDevice path validates every register of every request in Python
(``simruntime.__check_block``) and then calls an action that has to render the
whole block; for a twin that computes registers from the plant on demand that
is work done twice. Here pymodbus still does the listener, PDU decoding and
encoding and the data-access logic, but its datastore context is a thin adapter
that hands each request to the device's ``read`` and ``write``, and the
connection handler is ours:

- It frames requests itself, as the Modbus Messaging on TCP/IP Implementation
  Guide v1.0b asks: a malformed MBAP header (protocol id not 0, a length field
  below 2 or above 254, bytes that cannot be a header) closes the connection,
  instead of leaving it stuck on bytes pymodbus can neither use nor skip.
- Before pymodbus decodes a request, :func:`check_request` applies the Modbus
  Application Protocol v1.1b3 state diagrams: a function the device does not
  list -> 0x01; a quantity out of range or a length that disagrees with the
  byte count -> 0x03 (before any address is looked at). So pymodbus' decoder
  never meets a request it would log and answer with 0x01 under function 0x80.
- A request is answered as soon as its frame is decoded, and every reply passes
  the device's :class:`LinkFaults` on its way out.

Why answer inside the data callback: pymodbus schedules ``handle_later`` with
``call_soon``, which then starts a task (three loop iterations, a task and its
futures per request, ~15,000 requests a batch). The data-access PDUs (FC 1-6,
15, 16, 22, 23) only await the datastore context, and ours never suspends, so
their ``datastore_update`` coroutine runs to its end in one ``send(None)``: the
reply is built by pymodbus' own code and sent before the callback returns. A
reply that must wait (``link.delay_s``) goes through a task.

:func:`check_request` also guards the RTU server (twin.serve.rtu_bus).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
from collections.abc import Collection
from typing import Any, Protocol

from pymodbus.constants import ExcCodes
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.transport import NULLMODEM_HOST

from drivers import modbus_null_modem
from twin.clock import Clock
from twin.serve.faults import LinkFaults, corrupt_tcp

__all__ = [
    "COILS",
    "DATA_FUNCTIONS",
    "DISCRETE",
    "HOLDING",
    "INPUT",
    "PduEnd",
    "RegisterDevice",
    "TwinModbusTcpServer",
    "check_request",
]

_log = logging.getLogger(__name__)

COILS, DISCRETE, HOLDING, INPUT = "coils", "discrete", "holding", "input"
TABLE_OF_FUNCTION = {1: COILS, 5: COILS, 15: COILS, 2: DISCRETE, 4: INPUT}
TABLE_OF_FUNCTION.update({fc: HOLDING for fc in (3, 6, 16, 22, 23)})
DATA_FUNCTIONS = frozenset(TABLE_OF_FUNCTION)
"""The data-access function codes: the only ones a twin device may list (see above)."""

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
_MBAP_SIZE = 7
_MAX_LENGTH = 254  # unit id + a PDU of at most 253 bytes
LISTEN_BACKLOG = 1024  # connections the kernel queues before the server accepts them
_MAX_READ = {1: 2000, 2: 2000, 3: 125, 4: 125}  # FC -> largest quantity of one read


def check_request(pdu: bytes, functions: Collection[int]) -> ExcCodes | None:
    """The exception the Modbus application protocol assigns to a request that fails
    before any address is looked at, or None for a request pymodbus may decode.

    Function code not in ``functions`` -> 0x01; a quantity out of its range, a byte
    count that disagrees with the quantity, or a PDU whose length disagrees with
    either (the spec: "the implied length is incorrect") -> 0x03.
    """
    fc = pdu[0]
    if fc not in functions:
        return ExcCodes.ILLEGAL_FUNCTION
    n = len(pdu)
    if fc <= 6:  # FC 1-6: address, quantity or value; nothing else
        if n != 5:
            return ExcCodes.ILLEGAL_VALUE
        if fc <= 4:
            quantity = pdu[3] << 8 | pdu[4]
            return None if 1 <= quantity <= _MAX_READ[fc] else ExcCodes.ILLEGAL_VALUE
        if fc == 5 and pdu[3:5] not in (b"\x00\x00", b"\xff\x00"):
            return ExcCodes.ILLEGAL_VALUE
        return None
    if fc in (15, 16):  # address, quantity, byte count, data
        if n < 6:
            return ExcCodes.ILLEGAL_VALUE
        quantity, byte_count = pdu[3] << 8 | pdu[4], pdu[5]
        if fc == 15:
            fits = 1 <= quantity <= 1968 and byte_count == (quantity + 7) // 8
        else:
            fits = 1 <= quantity <= 123 and byte_count == 2 * quantity
        return None if fits and n == 6 + byte_count else ExcCodes.ILLEGAL_VALUE
    if fc == 22:  # address, AND mask, OR mask
        return None if n == 7 else ExcCodes.ILLEGAL_VALUE
    # FC 23: read address and quantity, write address, quantity, byte count, data
    if n < 10:
        return ExcCodes.ILLEGAL_VALUE
    read, write, byte_count = pdu[3] << 8 | pdu[4], pdu[7] << 8 | pdu[8], pdu[9]
    fits = 1 <= read <= 125 and 1 <= write <= 121 and byte_count == 2 * write
    return None if fits and n == 10 + byte_count else ExcCodes.ILLEGAL_VALUE


def _refusal(device: RegisterDevice, unit: int, pdu: bytes) -> ExcCodes | None:
    """What ``device`` answers a request PDU for ``unit`` before its data is looked at:
    0x0B for another unit id (the gateway's "no response"), else :func:`check_request`."""
    if unit != device.unit:
        return ExcCodes.GATEWAY_NO_RESPONSE
    return check_request(pdu, device.functions)


class RegisterDevice(Protocol):
    """What a twin device offers the server: its unit id, functions, faults, clock and map."""

    unit: int
    functions: frozenset[int]  # the function codes it lists (a subset of DATA_FUNCTIONS)
    link: LinkFaults
    clock: Clock

    def read(self, table: str, address: int, count: int) -> list[int] | list[bool] | ExcCodes:
        """Registers (or bits) of ``table`` from ``address``, or the exception to answer."""
        ...

    def write(self, table: str, address: int, values: list[int]) -> ExcCodes | None:
        """Apply a write, or return the exception that refuses it (nothing applied)."""
        ...


class _Context:
    """pymodbus' datastore interface, answered by the device; other unit ids get 0x0B."""

    def __init__(self, device: RegisterDevice) -> None:
        self.device = device

    def device_ids(self) -> list[int]:
        return [self.device.unit]

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        if device_id != self.device.unit:
            return ExcCodes.GATEWAY_NO_RESPONSE
        table = TABLE_OF_FUNCTION.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        return self.device.read(table, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Any
    ) -> ExcCodes | None:
        if device_id != self.device.unit:
            return ExcCodes.GATEWAY_NO_RESPONSE
        table = TABLE_OF_FUNCTION.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        values = values if isinstance(values, list) else [values]
        return self.device.write(table, address, [int(v) for v in values])


def _update_now(context: _Context, pdu: ModbusPDU) -> ModbusPDU:
    """Run the PDU's own ``datastore_update`` to its end without the loop."""
    update = pdu.datastore_update(context, pdu.dev_id)  # type: ignore[arg-type]
    try:
        update.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except Exception:  # a twin bug must not kill the connection: answer 0x04, log it
        _log.exception("request %s failed", pdu)
        return ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
    update.close()
    _log.error("request %s waited on something other than the device", pdu)
    return ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)


_SERVER_DECODER = DecodePDU(True)
#: The request class pymodbus decodes each data-access function code into.
_REQUEST_CLASS = {
    fc: pair[_SERVER_DECODER.pdu_inx]
    for fc, pair in _SERVER_DECODER.pdu_table.items()
    if fc in DATA_FUNCTIONS
}


class PduEnd:
    """The device's end of the in-process PDU null modem (:mod:`drivers.modbus_null_modem`).

    Answers a request PDU as :class:`_Handler` answers its frame, minus the framing: the
    unit id and :func:`check_request` on the request's own bytes, then pymodbus' data
    access. A request of a class pymodbus would not decode it into (a conformance kit's raw
    PDU) is decoded from its bytes first. Faulty links are the byte path's (``sound``).
    """

    def __init__(self, device: RegisterDevice, context: _Context) -> None:
        self._device = device
        self._context = context

    def sound(self) -> bool:
        return self._device.link.healthy

    def answer(self, request: ModbusPDU) -> ModbusPDU:
        device = self._device
        unit, fc = request.dev_id, request.function_code
        pdu = bytes((fc,)) + request.encode()
        refusal = _refusal(device, unit, pdu)
        if refusal is not None:
            response: ModbusPDU = ExceptionResponse(fc, refusal)
        else:
            response = self._data_access(request, pdu, unit)
        response.transaction_id, response.dev_id = request.transaction_id, unit
        # Every reply is counted, as the byte path counts it: a corruption fault set later
        # (every Nth reply) then hits the same replies as on the wire. Sound: never corrupt.
        device.link.corrupt_next()
        return response

    def _data_access(self, request: ModbusPDU, pdu: bytes, unit: int) -> ModbusPDU:
        """pymodbus' data access for a checked request (decoded from its bytes first when
        it is not of the class pymodbus decodes such a request into)."""
        fc = pdu[0]
        if type(request) is not _REQUEST_CLASS.get(fc):
            decoded = _SERVER_DECODER.decode(pdu)
            if decoded is None:  # check_request lets through only what pymodbus decodes
                return ExceptionResponse(fc, ExcCodes.DEVICE_FAILURE)
            decoded.dev_id = unit
            request = decoded
        response = _update_now(self._context, request)
        bits = getattr(response, "bits", None)
        if fc in (1, 2) and bits is not None and len(bits) % 8:
            # A client decodes whole bytes of bits: pad as the wire's decode does.
            response.bits = [*bits, *[False] * (-len(bits) % 8)]
        return response


class _Handler(ServerRequestHandler):
    """One client connection: our MBAP framing and request checks, pymodbus' data access,
    the device's link faults on each reply."""

    def __init__(self, owner: Any, *args: Any) -> None:
        super().__init__(owner, *args)
        self._tasks: set[asyncio.Task[None]] = set()
        self._device: RegisterDevice = owner.twin_device
        self._decode = self.framer.decoder.decode

    def data_received(self, data: bytes) -> None:
        """Frame what has arrived; keep an incomplete request for the next segment.

        Bypasses pymodbus' buffer handling: its ``send`` empties the receive buffer, which
        would drop a request that arrived behind the one being answered."""
        buffer = self.recv_buffer + data if self.recv_buffer else data
        used = self.callback_data(buffer)
        self.recv_buffer = buffer[used:] if self.transport is not None else b""

    def callback_data(self, data: bytes, addr: tuple[Any, ...] | None = None) -> int:
        """Answer every complete request in ``data``; returns the bytes used."""
        used, size = 0, len(data)
        while size - used >= _MBAP_SIZE:
            tid, protocol, length, unit = _MBAP.unpack_from(data, used)
            if protocol or not 2 <= length <= _MAX_LENGTH:
                self._drop_connection()
                return size
            end = used + 6 + length
            if end > size:
                break  # the rest of this request is on its way
            self._request(tid, unit, data[used + _MBAP_SIZE : end], addr)
            used = end
        return used

    def _drop_connection(self) -> None:
        """A malformed MBAP header: nothing after it can be framed, so close (the guide's rule)."""
        for task in self._tasks:
            task.cancel()
        self.close()

    def _request(self, tid: int, unit: int, pdu: bytes, addr: Any) -> None:
        """Check, decode and answer one request PDU."""
        device = self._device
        if device.link.silent:
            return
        refusal = _refusal(device, unit, pdu)
        if refusal is not None:
            self._answer(tid, unit, ExceptionResponse(pdu[0], refusal), addr)
            return
        request = self._decode(pdu)
        if request is None:  # check_request lets through only what pymodbus decodes
            _log.error("pymodbus could not decode a checked request %s", pdu.hex(" "))
            self._answer(tid, unit, ExceptionResponse(pdu[0], ExcCodes.DEVICE_FAILURE), addr)
            return
        request.dev_id, request.transaction_id = unit, tid
        if device.link.delay_s > 0.0:
            self._later(self._serve(request, addr))
        else:
            self._reply(request, self._update_now(request), addr)

    def _answer(self, tid: int, unit: int, response: ModbusPDU, addr: Any) -> None:
        """Send a reply built without the datastore (a refusal), late if the link is."""
        if self._device.link.delay_s > 0.0:
            self._later(self._send_late(tid, unit, response, addr))
        else:
            self._send(tid, unit, response, addr)

    def _update_now(self, pdu: ModbusPDU) -> ModbusPDU:
        return _update_now(self.server.context, pdu)

    def _later(self, reply: Any) -> None:
        task = self.loop.create_task(reply)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def callback_disconnected(self, exc: Exception | None) -> None:
        for task in self._tasks:  # a late reply to a closed connection is never sent
            task.cancel()
        super().callback_disconnected(exc)

    async def _serve(self, pdu: ModbusPDU, addr: Any) -> None:
        response = self._update_now(pdu)  # values as of the request, sent late
        await self._device.clock.sleep(self._device.link.delay_s)
        self._reply(pdu, response, addr)

    async def _send_late(self, tid: int, unit: int, response: ModbusPDU, addr: Any) -> None:
        await self._device.clock.sleep(self._device.link.delay_s)
        self._send(tid, unit, response, addr)

    def _reply(self, pdu: ModbusPDU, response: ModbusPDU, addr: Any) -> None:
        """Send the response to ``pdu``, through the device's link faults."""
        self._send(pdu.transaction_id, pdu.dev_id, response, addr)

    def _send(self, tid: int, unit: int, response: ModbusPDU, addr: Any) -> None:
        response.transaction_id, response.dev_id = tid, unit
        packet = self.framer.buildFrame(response)
        link = self._device.link
        if link.corrupt_next():
            packet = corrupt_tcp(packet, link.corrupt_mode)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(packet)  # type: ignore[attr-defined]


class TwinModbusTcpServer(ModbusTcpServer):
    """pymodbus' TCP server with the device's register callbacks as its datastore."""

    def __init__(self, device: RegisterDevice, *, address: tuple[str, int]) -> None:
        unknown = set(device.functions) - DATA_FUNCTIONS
        if unknown:
            raise ValueError(
                f"function codes {sorted(unknown)} are not data access (1-6, 15, 16, 22, 23)"
            )
        # pymodbus wants a SimDevice to build; the placeholder is replaced at once.
        placeholder = SimDevice(id=device.unit, simdata=[SimData(0, datatype=DataType.REGISTERS)])
        super().__init__(placeholder, address=address)
        # asyncio listens with a backlog of 100: in a burst of more connections (a SCADA
        # restart, the 500-connection test) the rest wait out a SYN retransmit (1 s).
        # pymodbus' null modem (an in-process bench) has no backlog: nothing queues there.
        if address[0] != NULLMODEM_HOST:
            self.call_create = functools.partial(self.call_create, backlog=LISTEN_BACKLOG)
        self.twin_device = device
        self.context = _Context(device)  # type: ignore[assignment]
        # In process, a driver's client hands PDUs over while the link is sound.
        self._pdu_end = (
            modbus_null_modem.listen(address[1], PduEnd(device, self.context))
            if address[0] == NULLMODEM_HOST
            else None
        )

    def forget_pdu_end(self) -> None:
        """Take the PDU end off the null modem (at shutdown, or a start that failed)."""
        if self._pdu_end is not None:
            self._pdu_end.close()
            self._pdu_end = None

    async def shutdown(self) -> None:
        """Stop listening (the PDU end too), then close every connection."""
        self.forget_pdu_end()
        await super().shutdown()

    def callback_new_connection(self) -> _Handler:
        return _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)
