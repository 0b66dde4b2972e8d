"""The twin's Modbus RTU server keeps to the Modbus specs, seen from the bare serial port.

Modbus over Serial Line v1.02: a frame is what arrives between 3.5-character silences and
a frame with a bad CRC gets no reply; the application protocol's exception codes as on TCP
(tests/serve/test_modbus_conformance.py). Raw bytes on the pty a driver would open; every
wait is on the virtual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import tty
from collections.abc import AsyncIterator

import pytest
from pymodbus.framer import FramerRTU

from twin.clock import Clock
from twin.serve.bioreactor_rtu import BioreactorRtuServer
from twin.sim import Plant

pytestmark = pytest.mark.usefixtures("no_task_leaks")

WAIT_S = 0.1  # request, reply and gaps at 19200 baud take ~15 ms; no reply by then is none
SILENCE_S = 0.01  # longer than 3.5 characters (2 ms at 19200 8N1)


def rtu(frame: bytes) -> bytes:
    return frame + FramerRTU.compute_CRC(frame).to_bytes(2, "big")


def read_pdu(fc: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", fc, address, count)


GOOD = rtu(b"\x01" + read_pdu(4, 0, 2))


class Port:
    """The driver's end of the cable, read by the loop (so the virtual clock sees it)."""

    def __init__(self, path: str, clock: Clock) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.clock = clock
        self.received = b""
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.fd, self._read)

    def _read(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self.received += os.read(self.fd, 4096)

    async def send(self, data: bytes, wait_s: float = WAIT_S) -> bytes:
        """Write ``data`` and return everything that came back within ``wait_s``."""
        self.received = b""
        os.write(self.fd, data)
        await self.clock.sleep(wait_s)
        return self.received

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        os.close(self.fd)


@pytest.fixture
async def port(plant: Plant, clock: Clock) -> AsyncIterator[Port]:
    srv = BioreactorRtuServer(plant, clock)
    await srv.start()
    p = Port(srv.path, clock)
    yield p
    p.close()
    await srv.stop()


def exception_reply(fc: int, code: int) -> bytes:
    return rtu(bytes([1, fc | 0x80, code]))


def answers_good(reply: bytes) -> None:
    assert reply[:3] == b"\x01\x04\x04" and len(reply) == 9, reply.hex()
    assert rtu(reply[:-2]) == reply


async def test_bad_crc_gets_no_reply_and_the_next_frame_is_answered(port: Port) -> None:
    assert await port.send(GOOD[:-2] + bytes([GOOD[-2] ^ 0xFF, GOOD[-1]])) == b""
    answers_good(await port.send(GOOD))


async def test_garbage_then_a_good_frame_after_the_silence_is_answered(port: Port) -> None:
    """pymodbus' hunting framer read "37 01 04 ..." in the garbage as the start of a frame
    and dropped the good one with it; the silence ends the garbage, as on a real line."""
    assert await port.send(b"\xff\x13\x37", wait_s=SILENCE_S) == b""
    answers_good(await port.send(GOOD))
    assert await port.send(b"\x01\x04\x00", wait_s=SILENCE_S) == b""  # a frame cut short
    answers_good(await port.send(GOOD))


async def test_garbage_and_a_frame_without_silence_between_are_one_bad_frame(port: Port) -> None:
    assert await port.send(b"\xff\x13\x37" + GOOD) == b""
    answers_good(await port.send(GOOD))


BAD_QUANTITY = {
    "FC4 count 0": read_pdu(4, 0, 0),
    "FC4 count 126": read_pdu(4, 0, 126),
    "FC3 count 0": read_pdu(3, 0, 0),
    "FC2 count 2001": read_pdu(2, 0, 2001),
    "FC16 count 124, 4 data bytes": struct.pack(">BHHB", 16, 50, 124, 248) + bytes(4),
}


@pytest.mark.parametrize("pdu", BAD_QUANTITY.values(), ids=BAD_QUANTITY.keys())
async def test_bad_quantity_is_illegal_data_value(port: Port, pdu: bytes) -> None:
    assert await port.send(rtu(b"\x01" + pdu)) == exception_reply(pdu[0], 0x03)
    answers_good(await port.send(GOOD))


UNLISTED = {
    "FC7 read exception status": bytes([7]),
    "FC8 diagnostics": bytes([8, 0, 0, 0x12, 0x34]),
    "FC17 report server id": bytes([17]),
    "FC22 mask write register": struct.pack(">BHHH", 22, 0, 0xFFFF, 0),
    "FC43 read device identification": bytes([0x2B, 0x0E, 1, 0]),
    "FC99 unknown": bytes([99, 1, 2]),
}


@pytest.mark.parametrize("pdu", UNLISTED.values(), ids=UNLISTED.keys())
async def test_unlisted_function_is_illegal_function(port: Port, pdu: bytes) -> None:
    assert await port.send(rtu(b"\x01" + pdu)) == exception_reply(pdu[0], 0x01)
    answers_good(await port.send(GOOD))


async def test_other_units_and_broadcast_get_silence(port: Port) -> None:
    for unit in (0, 2, 247):
        assert await port.send(rtu(bytes([unit]) + bytes([8, 0, 0, 0, 0]))) == b""
    answers_good(await port.send(GOOD))


async def test_bad_frames_log_nothing(port: Port, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pymodbus")
    caplog.set_level(logging.WARNING)
    for pdu in [*BAD_QUANTITY.values(), *UNLISTED.values()]:
        assert (await port.send(rtu(b"\x01" + pdu)))[1] & 0x80
    assert await port.send(b"\xff\x13\x37" + GOOD) == b""
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage()[:200] for r in loud]
