"""A real pymodbus server whose register map is a twin device's own callbacks.

pymodbus' SimDevice path validates every register of every request in Python
(``simruntime.__check_block``) and then calls an action that has to render the
whole block; for a twin that computes registers from the plant on demand that
is work done twice. Here pymodbus still does everything on the wire (listener,
MBAP framing, PDU decoding and encoding, exception replies), but its datastore
context is a thin adapter that hands each request to the device's ``read`` and
``write``. The request handler is pymodbus' own, with two changes: a request is
answered as soon as its frame is decoded, and every reply passes the device's
:class:`LinkFaults` on its way out.

Why answer inside the data callback: pymodbus schedules ``handle_later`` with
``call_soon``, which then starts a task (three loop iterations, a task and its
futures per request, ~15,000 requests a batch). The data-access PDUs (FC 1-6,
15, 16, 22, 23) only await the datastore context, and ours never suspends, so
their ``datastore_update`` coroutine runs to its end in one ``send(None)``: the
reply is built by pymodbus' own code and sent before the callback returns. A
reply that must wait (``link.delay_s``) or any other function code still goes
through a task.

The same adapter serves Modbus RTU: pass ``server_class`` and its arguments
(the RTU framer then puts the CRC on; use ``faults.bad_crc`` for corruption).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.transaction import TransactionManager

from twin.clock import Clock
from twin.serve.faults import LinkFaults, corrupt_tcp

__all__ = ["COILS", "DISCRETE", "HOLDING", "INPUT", "RegisterDevice", "TwinModbusTcpServer"]

_log = logging.getLogger(__name__)

COILS, DISCRETE, HOLDING, INPUT = "coils", "discrete", "holding", "input"
TABLE_OF_FUNCTION = {1: COILS, 5: COILS, 15: COILS, 2: DISCRETE, 4: INPUT}
TABLE_OF_FUNCTION.update({fc: HOLDING for fc in (3, 6, 16, 22, 23)})
_ANSWERED_AT_ONCE = frozenset(TABLE_OF_FUNCTION)
"""Function codes whose ``datastore_update`` awaits nothing but the context (see above)."""


class RegisterDevice(Protocol):
    """What a twin device offers the server: its unit id, faults, clock and register map."""

    unit: int
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


class _Handler(ServerRequestHandler):
    """One client connection: pymodbus' handler, with the device's link faults on each reply."""

    def __init__(self, owner: Any, *args: Any) -> None:
        super().__init__(owner, *args)
        self._tasks: set[asyncio.Task[None]] = set()

    def callback_data(self, data: bytes, addr: tuple[Any, ...] | None = None) -> int:
        """Decode one frame (pymodbus' framer) and answer it now: see the module docstring."""
        try:
            used_len = TransactionManager.callback_data(self, data, addr)
        except ModbusIOException as exc:  # as pymodbus' handler answers an undecodable frame
            function_code = 0x00 if exc.fcode is None else exc.fcode
            response = ExceptionResponse(
                function_code,
                exception_code=ExcCodes.ILLEGAL_FUNCTION,
                device_id=exc.dev_id,
                transaction=exc.transaction_id,
            )
            self.server_send(response, addr)
            return len(data)
        pdu = self.last_pdu
        if pdu is not None:
            device: RegisterDevice = self.server.twin_device
            if device.link.silent:
                pass
            elif device.link.delay_s > 0.0 or pdu.function_code not in _ANSWERED_AT_ONCE:
                self._serve_later(pdu, addr)
            else:
                self._reply(pdu, self._update_now(pdu), addr)
        return used_len

    def _update_now(self, pdu: ModbusPDU) -> ModbusPDU:
        """Run the PDU's own ``datastore_update`` to its end without the loop."""
        update = pdu.datastore_update(self.server.context, pdu.dev_id)
        try:
            update.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except Exception:  # a twin bug must not kill the connection: answer 0x04
            _log.exception("request %r failed", pdu)
            return ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        update.close()
        _log.error("request %r waited on something other than the device", pdu)
        return ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)

    def _serve_later(self, pdu: ModbusPDU, addr: Any) -> None:
        task = self.loop.create_task(self._serve(pdu, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def callback_disconnected(self, exc: Exception | None) -> None:
        for task in self._tasks:  # a late reply to a closed connection is never sent
            task.cancel()
        super().callback_disconnected(exc)

    async def _serve(self, pdu: ModbusPDU, addr: Any) -> None:
        device: RegisterDevice = self.server.twin_device
        link = device.link
        if link.silent:
            return
        try:
            response = await pdu.datastore_update(self.server.context, pdu.dev_id)
        except Exception:  # a twin bug must not kill the connection: answer 0x04
            _log.exception("request %r failed", pdu)
            response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        if link.delay_s > 0.0:
            await device.clock.sleep(link.delay_s)
        self._reply(pdu, response, addr)

    def _reply(self, pdu: ModbusPDU, response: ModbusPDU, addr: Any) -> None:
        """Send the response to ``pdu``, through the device's link faults."""
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        packet = self.framer.buildFrame(response)
        if self.server.twin_device.link.corrupt_next():
            packet = corrupt_tcp(packet, self.server.twin_device.link.corrupt_mode)
        if self.transport is not None:
            self.send(packet, addr=addr)


class TwinModbusTcpServer(ModbusTcpServer):
    """pymodbus' TCP server with the device's register callbacks as its datastore."""

    def __init__(self, device: RegisterDevice, *, address: tuple[str, int]) -> None:
        # pymodbus wants a SimDevice to build; the placeholder is replaced at once.
        placeholder = SimDevice(id=device.unit, simdata=[SimData(0, datatype=DataType.REGISTERS)])
        super().__init__(placeholder, address=address)
        self.twin_device = device
        self.context = _Context(device)  # type: ignore[assignment]

    def callback_new_connection(self) -> _Handler:
        return _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)
