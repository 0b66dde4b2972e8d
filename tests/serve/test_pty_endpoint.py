"""The pty endpoint: one exchange on the line at a time, each charged its wire time.

A plain-function handler is answered from the reader callback and its reply is
written by one timer; a coroutine handler runs in a task. Both keep the line's
order and timing.
"""

from __future__ import annotations

import os

import pytest
from serial_terminal import Terminal

from twin.clock import Clock
from twin.serve.pty import PtyEndpoint

pytestmark = pytest.mark.usefixtures("no_task_leaks")

CHAR_S = 10 / 19200  # 8N1 at 19200 baud


class Device:
    """Answers ``X`` with ``X ok`` and notes the batch time it saw each request."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.seen: list[tuple[bytes, float]] = []

    def __call__(self, line: bytes) -> bytes | None:
        self.seen.append((line, self.clock.now()))
        return None if line == b"mute" else line + b" ok\r"


class SlowDevice(Device):
    """The same answers, but it takes 0.1 s of batch time to think (a coroutine handler)."""

    async def __call__(self, line: bytes) -> bytes | None:  # type: ignore[override]
        await self.clock.sleep(0.1)
        return super().__call__(line)


@pytest.mark.parametrize("kind", [Device, SlowDevice])
async def test_lines_sent_together_are_answered_in_order_one_at_a_time(
    kind: type[Device],
) -> None:
    clock = Clock()
    device = kind(clock)
    endpoint = PtyEndpoint(device, baud=19200, name="test", clock=clock)
    await endpoint.start()
    term = Terminal(endpoint.path, 19200)
    try:
        t0 = clock.now()
        replies = await term.ask(b"A\rmute\rBB\r", until=b"\r", lines=2)
        elapsed = clock.now() - t0
    finally:
        term.close()
        await endpoint.close()
    assert replies == b"A ok\rBB ok\r"
    think = 0.1 if kind is SlowDevice else 0.0  # a slow device notes a request after thinking
    first = think + (2 + 5) * CHAR_S  # "A\r" in, "A ok\r" out
    assert [line for line, _ in device.seen] == [b"A", b"mute", b"BB"]
    # The next request is taken only once the reply before it is on the wire; the mute one
    # gets no reply and costs no wire time.
    assert device.seen[2][1] - t0 == pytest.approx(first + 2 * think, abs=1e-9)
    assert elapsed == pytest.approx(first + 2 * think + (3 + 6) * CHAR_S, abs=1e-9)


async def test_closing_takes_back_a_reply_still_on_the_wire() -> None:
    clock = Clock()
    device = Device(clock)
    endpoint = PtyEndpoint(device, baud=9600, name="test", clock=clock)
    await endpoint.start()
    driver_fd = os.open(endpoint.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        os.write(driver_fd, b"A\r")
        await clock.sleep(0.0001)  # the endpoint takes the request; its reply is ~7 ms away
        assert device.seen
    finally:
        await endpoint.close()  # the reply's timer must not fire on a closed fd
        os.close(driver_fd)
    await clock.sleep(1.0)
