"""Protocol checks for a Modbus device: the refusals and framing the Modbus specs assign.

A driver that reaches its device over Modbus may offer :class:`ModbusProbe`; then
the kit checks, with requests no typed call sends, that the device refuses a bad
quantity with 0x03 before it looks at the address (Modbus Application Protocol
v1.1b3, the state diagram of each function), a function it does not list with
0x01, and (Modbus TCP) that a malformed MBAP header closes the connection while
the device goes on serving (Messaging on TCP/IP Implementation Guide v1.0b).
Every probe reads, or writes to an address the map leaves empty, so a device
that gets them wrong still changes nothing.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol, runtime_checkable

from twin.clock import Clock
from twin.conformance.kit import Deviation, NotApplicable

__all__ = [
    "BAD_QUANTITY",
    "MALFORMED_HEADERS",
    "UNLISTED_FUNCTIONS",
    "ModbusProbe",
    "bad_quantity_refused",
    "malformed_header_closes",
    "unlisted_function_refused",
]


@runtime_checkable
class ModbusProbe(Protocol):
    """What a Modbus driver offers a kit besides its equipment interface."""

    async def probe_request(self, pdu: bytes) -> int:
        """The exception code the device answers to one raw request PDU (0: a normal reply)."""
        ...

    async def probe_frame(self, frame: bytes) -> tuple[bytes, bool] | None:
        """Raw bytes on a TCP connection of their own: (reply, closed); None if not TCP."""
        ...


def _read(fc: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", fc, address, count)


#: Requests whose quantity (or byte count) is out of range: (what, PDU). Writes go to
#: holding register 50, which the bioreactor map leaves empty, and input register 30 is
#: empty too: a device that checks the address first answers 0x02, not 0x03.
BAD_QUANTITY: tuple[tuple[str, bytes], ...] = (
    ("FC4 count 0", _read(4, 0, 0)),
    ("FC4 count 126", _read(4, 0, 126)),
    ("FC4 count 65535", _read(4, 0, 0xFFFF)),
    ("FC4 count 126 at unmapped 30", _read(4, 30, 126)),
    ("FC3 count 0", _read(3, 0, 0)),
    ("FC3 count 126", _read(3, 0, 126)),
    ("FC2 count 2001", _read(2, 0, 2001)),
    ("FC16 count 0", struct.pack(">BHHB", 16, 50, 0, 0)),
    ("FC16 count 124", struct.pack(">BHHB", 16, 50, 124, 248) + bytes(4)),
    ("FC16 byte count 3 for 2 registers", struct.pack(">BHHB", 16, 50, 2, 3) + bytes(3)),
)

#: Functions the bioreactor map does not list, each harmless where it is implemented.
UNLISTED_FUNCTIONS: tuple[tuple[str, bytes], ...] = (
    ("FC1 read coils", _read(1, 0, 1)),
    ("FC8 diagnostics (return query data)", bytes([8, 0, 0, 0x12, 0x34])),
    ("FC17 report server id", bytes([17])),
    ("FC43 read device identification", bytes([0x2B, 0x0E, 1, 0])),
)

#: MBAP headers no Modbus TCP server can frame: (what, bytes).
MALFORMED_HEADERS: tuple[tuple[str, bytes], ...] = (
    ("protocol id 1", struct.pack(">HHHB", 1, 1, 6, 1) + _read(4, 0, 2)),
    ("length 0", struct.pack(">HHHB", 2, 0, 0, 1)),
    ("length 1", struct.pack(">HHHB", 3, 0, 1, 1) + _read(4, 0, 2)),
    ("length 300", struct.pack(">HHHB", 4, 0, 300, 1) + _read(4, 0, 2)),
    ("16 bytes 0xFF", b"\xff" * 16),
)


def _probe(device: Any) -> ModbusProbe:
    if not isinstance(device, ModbusProbe):
        raise NotApplicable("the driver offers no Modbus probes (not a Modbus device)")
    return device


async def _refusals(device: Any, cases: tuple[tuple[str, bytes], ...], code: int) -> str:
    probe = _probe(device)
    wrong = []
    for what, pdu in cases:
        got = await probe.probe_request(pdu)
        if got != code:
            wrong.append(f"{what}: {f'exception {got:#04x}' if got else 'answered'}")
    if wrong:
        raise Deviation(f"expected exception {code:#04x}, got " + "; ".join(wrong))
    return f"{len(cases)} requests refused with {code:#04x}: " + ", ".join(w for w, _ in cases)


async def bad_quantity_refused(device: Any, clock: Clock) -> str:
    """A quantity out of range is ILLEGAL DATA VALUE, checked before the address."""
    return await _refusals(device, BAD_QUANTITY, 0x03)


async def unlisted_function_refused(device: Any, clock: Clock) -> str:
    """A function the device does not list is ILLEGAL FUNCTION, whatever pymodbus knows."""
    return await _refusals(device, UNLISTED_FUNCTIONS, 0x01)


async def malformed_header_closes(device: Any, clock: Clock) -> str:
    """A connection after a bad MBAP header cannot be framed again: the device must close it
    (not leave later requests on it to time out) and go on serving other connections."""
    probe = _probe(device)
    wrong = []
    for what, frame in MALFORMED_HEADERS:
        result = await probe.probe_frame(frame)
        if result is None:
            raise NotApplicable("a serial line has no MBAP header")
        reply, closed = result
        if reply:
            wrong.append(f"{what}: answered {reply.hex(' ')}")
        elif not closed:
            wrong.append(f"{what}: neither answered nor closed")
    if wrong:
        raise Deviation("; ".join(wrong))
    await device.read()  # and the device still serves
    return f"closed after {', '.join(w for w, _ in MALFORMED_HEADERS)}; still serving"
