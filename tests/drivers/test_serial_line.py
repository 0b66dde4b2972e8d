"""SerialLine: one lock per port, timeouts on the clock, bounded retries, stale input dropped."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from drivers.serial_line import SerialLine, open_line
from twin.clock import Clock
from twin.errors import CommunicationError
from twin.serve.pty import PtyEndpoint


class Scripted:
    """A device that answers each line with a script: the reply, nothing, or two replies."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.replies: dict[bytes, bytes | None] = {}

    async def __call__(self, line: bytes) -> bytes | None:
        self.received.append(line)
        return self.replies.get(line, b"ECHO " + line + b"\r")


@pytest.fixture
async def device() -> AsyncIterator[tuple[Scripted, PtyEndpoint]]:
    script = Scripted()
    endpoint = PtyEndpoint(script, baud=19200, name="scripted")
    await endpoint.start()
    yield script, endpoint
    await endpoint.close()


@pytest.fixture
async def line(device: tuple[Scripted, PtyEndpoint]) -> AsyncIterator[SerialLine]:
    ln = open_line(device[1].path, baud=19200, clock=Clock())
    yield ln
    ln.release()


async def test_request_and_reply(line: SerialLine) -> None:
    assert await line.transact(b"hello\r", device="dev", timeout=0.5) == b"ECHO hello\r"


async def test_silence_times_out_after_every_retry(
    device: tuple[Scripted, PtyEndpoint], line: SerialLine
) -> None:
    script, endpoint = device
    script.replies[b"mute"] = None
    clock = Clock()
    t0 = clock.now()
    with pytest.raises(CommunicationError) as err:
        await line.transact(b"mute\r", device="MFC-9", timeout=0.5, retries=2)
    assert clock.now() - t0 == pytest.approx(1.5)  # 3 attempts x 0.5 s of batch time
    assert script.received == [b"mute"] * 3
    assert err.value.device == "MFC-9"
    assert endpoint.path in str(err.value) and "3 attempt(s)" in str(err.value)


async def test_late_reply_never_answers_the_next_request(
    device: tuple[Scripted, PtyEndpoint], line: SerialLine
) -> None:
    script, _ = device
    script.replies[b"slow"] = b"LATE\rLATE2\r"  # two frames; the caller reads one
    assert await line.transact(b"slow\r", device="dev", timeout=0.5) == b"LATE\r"
    assert await line.transact(b"next\r", device="dev", timeout=0.5) == b"ECHO next\r"


async def test_multi_frame_reply(device: tuple[Scripted, PtyEndpoint], line: SerialLine) -> None:
    device[0].replies[b"id"] = b"L1\rL2\rL3\r"
    assert await line.transact(b"id\r", device="dev", timeout=0.5, frames=3) == b"L1\rL2\rL3\r"


async def test_concurrent_exchanges_never_interleave(
    device: tuple[Scripted, PtyEndpoint], line: SerialLine
) -> None:
    requests = [f"req{i}".encode() for i in range(40)]
    replies = await asyncio.gather(
        *(line.transact(r + b"\r", device="dev", timeout=0.5) for r in requests)
    )
    assert replies == [b"ECHO " + r + b"\r" for r in requests]


async def test_devices_on_one_port_share_one_line(device: tuple[Scripted, PtyEndpoint]) -> None:
    clock = Clock()
    a = open_line(device[1].path, baud=19200, clock=clock)
    b = open_line(device[1].path, baud=19200, clock=clock)
    try:
        assert a is b
        with pytest.raises(CommunicationError, match="already open at 19200"):
            open_line(device[1].path, baud=9600, clock=clock)
    finally:
        a.release()
    assert b.is_open  # one user left
    b.release()
    assert not b.is_open


async def test_missing_port_is_a_communication_error() -> None:
    with pytest.raises(CommunicationError, match="/dev/does-not-exist"):
        open_line("/dev/does-not-exist", baud=19200, clock=Clock())


async def test_closed_line_refuses(device: tuple[Scripted, PtyEndpoint]) -> None:
    ln = open_line(device[1].path, baud=19200, clock=Clock())
    ln.release()
    with pytest.raises(CommunicationError, match="not open"):
        await ln.transact(b"x\r", device="dev", timeout=0.5)


async def test_no_fds_left_behind() -> None:
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(3):
        endpoint = PtyEndpoint(Scripted(), name="fd-check")
        await endpoint.start()
        ln = open_line(endpoint.path, baud=9600, clock=Clock())
        await ln.transact(b"x\r", device="dev", timeout=0.5)
        ln.release()
        await endpoint.close()
    assert set(os.listdir("/proc/self/fd")) == before


async def test_reply_in_pieces_is_one_reply(
    device: tuple[Scripted, PtyEndpoint], line: SerialLine
) -> None:
    """The reader completes an exchange only when its whole reply is in."""
    script, endpoint = device
    script.replies[b"two"] = b"first part"  # no terminator: the reply is not complete yet
    clock = Clock()

    async def finish() -> None:
        await clock.sleep(0.05)
        endpoint._write(b" and the rest\r")  # the device sends the end of its frame

    finisher = asyncio.create_task(finish())
    reply = await line.transact(b"two\r", device="dev", timeout=0.5)
    await finisher
    assert reply == b"first part and the rest\r"


async def test_port_closed_while_waiting_is_a_communication_error(
    device: tuple[Scripted, PtyEndpoint], line: SerialLine
) -> None:
    script, _ = device
    script.replies[b"mute"] = None
    clock = Clock()

    async def pull_the_plug() -> None:
        await clock.sleep(0.1)
        line.close()

    plug = asyncio.create_task(pull_the_plug())
    with pytest.raises(CommunicationError, match="closed"):
        await line.transact(b"mute\r", device="dev", timeout=0.5)
    await plug


async def test_bytes_waiting_in_the_port_after_a_timeout_never_answer_the_next_request(
    device: tuple[Scripted, PtyEndpoint], line: SerialLine
) -> None:
    """A reply that came too late sits in the port's input queue, not yet read, when the
    next request goes out: it is flushed, and the next request gets its own reply. (After a
    clean exchange the port is not flushed: nothing can be waiting there.)"""
    script, endpoint = device
    script.replies[b"mute"] = None
    with pytest.raises(CommunicationError):
        await line.transact(b"mute\r", device="dev", timeout=0.5)
    endpoint._write(b"LATE mute\r")  # the late reply, not yet seen by the loop
    assert await line.transact(b"next\r", device="dev", timeout=0.5) == b"ECHO next\r"
