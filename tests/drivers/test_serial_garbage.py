"""The serial drivers survive a device that sends garbage: an endless reply, a garbled one, or
noise and a previous host's unterminated line on the device's side. Each time: a short, clear
error (or a silent retry), then the next exchange works. Over real ptys."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest_serial import (
    MakeEp,
    MakeGas,
    alicat_server,
    ep_server,
    make_ep,
    make_gas,
    serial_plant,
)

from drivers.ascii_electroporator import AsciiElectroporator, AsciiElectroporatorConfig
from drivers.serial_line import MAX_REPLY, SerialLine, open_line
from twin.clock import Clock
from twin.equipment import PulseProgram
from twin.errors import CommunicationError
from twin.serve.alicat import AlicatServer
from twin.serve.electroporator_ascii import ElectroporatorServer
from twin.serve.pty import PtyEndpoint

__all__ = ["alicat_server", "ep_server", "make_ep", "make_gas", "serial_plant"]  # fixtures

IDN = b"OK poc-twin,EP-1,SN-1,1.0\r\n"


class Babbler:
    """A device that answers ``babble`` with ``flood`` bytes (and no terminator), ``garble``
    with ``garbled`` (terminated), and anything else as a sane electroporator would."""

    def __init__(self) -> None:
        self.endpoint: PtyEndpoint | None = None
        self.flood = b""
        self.garbled = b""
        self.received: list[bytes] = []

    def __call__(self, line: bytes) -> bytes | None:
        self.received.append(line)
        assert self.endpoint is not None
        if line == b"babble":
            self.endpoint._write(self.flood)  # straight onto the wire: no wire time, no end
            return None
        if line == b"garble" or (line == b"*IDN?" and self.garbled):
            return self.garbled
        return IDN if line == b"*IDN?" else b"OK DISARMED\r\n"


@pytest.fixture
async def babbler() -> AsyncIterator[tuple[Babbler, PtyEndpoint]]:
    device = Babbler()
    endpoint = PtyEndpoint(device, baud=9600, name="babbler")
    device.endpoint = endpoint
    await endpoint.start()
    yield device, endpoint
    await endpoint.close()


@pytest.fixture
async def line(babbler: tuple[Babbler, PtyEndpoint]) -> AsyncIterator[SerialLine]:
    ln = open_line(babbler[1].path, baud=9600, clock=Clock())
    yield ln
    ln.release()


async def test_an_endless_reply_fails_at_once_and_the_next_exchange_works(
    babbler: tuple[Babbler, PtyEndpoint], line: SerialLine
) -> None:
    """200 kB without a terminator: refused as soon as it outgrows MAX_REPLY, not after the
    timeout, and never held whole; the message quotes 64 bytes of it."""
    device, _ = babbler
    device.flood = b"Z" * 200_000
    clock = Clock()
    t0 = clock.now()
    with pytest.raises(CommunicationError) as err:
        await line.transact(b"babble\r\n", device="EP-9", terminator=b"\r\n", timeout=10.0)
    assert clock.now() - t0 < 1.0
    message = str(err.value)
    assert f"reply longer than {MAX_REPLY} bytes without its terminator" in message
    assert len(message) < 300, message
    assert len(line._buffer) <= MAX_REPLY
    await clock.sleep(0.5)  # the device has finished babbling
    assert len(line._buffer) <= MAX_REPLY
    reply = await line.transact(b"*IDN?\r\n", device="EP-9", terminator=b"\r\n", timeout=1.0)
    assert reply == IDN


async def test_a_garbled_reply_is_a_short_clear_error_and_the_next_exchange_works(
    babbler: tuple[Babbler, PtyEndpoint],
) -> None:
    device, endpoint = babbler
    device.garbled = bytes(range(0x80, 0x100)) * 2 + b"\r\n"  # line noise, 0.27 s on the wire
    config = AsciiElectroporatorConfig(port=endpoint.path, retries=1)
    ep = AsciiElectroporator("EP-9", config, Clock())
    await ep.connect()
    try:
        with pytest.raises(CommunicationError) as err:
            await ep.identify()
        message = str(err.value)
        assert "garbled reply b'\\x80\\x81" in message and "(258 bytes)" in message
        assert len(message) < 400, message
        device.garbled = b""
        assert (await ep.identify()).serial == "SN-1"
    finally:
        await ep.close()


async def test_a_partial_line_left_on_the_device_does_not_stop_connect(
    ep_server: ElectroporatorServer, make_ep: MakeEp
) -> None:
    """A previous host wrote ``*ID`` and died: the device joins it with our DISARM and answers
    ERR 10. That ERR was about noise, not about DISARM: the driver asks again."""
    fd = os.open(ep_server.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    os.write(fd, b"*ID")
    os.close(fd)
    ep = await make_ep()  # connect sends DISARM
    status = await ep.status()
    assert not status.armed
    assert status.fault == "E10 unknown command *IDDISARM"  # what the device saw


async def test_noise_joined_to_a_command_on_the_device_side_is_retried(
    ep_server: ElectroporatorServer, make_ep: MakeEp, serial_plant: Any
) -> None:
    ep = await make_ep()
    fd = os.open(ep_server.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        os.write(fd, b"\x00")  # a glitch on the line, just before the PROG
        await ep.program(PulseProgram(500.0, 20.0, 1, 2.0))
    finally:
        os.close(fd)
    assert (await ep.status()).fault.startswith("E11 character 0x00 at column 1")


async def test_alicat_driver_survives_a_babbling_unit(
    alicat_server: AlicatServer, make_gas: MakeGas
) -> None:
    gas = await make_gas(timeout_s=0.5, retries=2)
    endpoint = alicat_server._endpoint
    answer = endpoint._handler
    babbling = [True]

    def babble(line: bytes) -> bytes | Any:
        if babbling[0]:
            endpoint._write(b"A +014.70" * 20_000)  # 180 kB, never a CR
            return None
        return answer(line)

    endpoint._handler = babble
    clock = Clock()
    t0 = clock.now()
    with pytest.raises(CommunicationError) as err:
        await gas.read()
    assert clock.now() - t0 < 1.5  # three attempts, none waits for its timeout
    message = str(err.value)
    assert f"reply longer than {MAX_REPLY} bytes" in message and len(message) < 300, message
    babbling[0] = False
    await clock.sleep(0.5)
    assert set((await gas.read()).mass_flow_sccm) == set(gas.unit_ids)
