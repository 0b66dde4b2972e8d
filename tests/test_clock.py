"""The virtual clock: jumps when every task waits, yet never overtakes real I/O."""

from __future__ import annotations

import asyncio
import os
import tty

import pytest

from twin.clock import Clock, VirtualTimeLoop, run_batch_loop


async def test_ten_days_of_waits_take_no_wall_time() -> None:
    clock = Clock()
    for _ in range(24 * 10):
        await clock.sleep(3600)
    assert clock.now() == pytest.approx(10 * 86400)


async def test_concurrent_sleepers_wake_in_batch_time_order() -> None:
    clock = Clock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    await asyncio.gather(sleeper("c", 30), sleeper("a", 10), sleeper("b", 20))
    assert woke == [("a", 10.0), ("b", 20.0), ("c", 30.0)]


async def test_sleep_until_does_not_drift() -> None:
    clock = Clock()
    ticks = []
    for i in range(1, 6):
        await clock.sleep_until(i * 60.0)
        ticks.append(clock.now())
    assert ticks == [60.0, 120.0, 180.0, 240.0, 300.0]


async def test_timeout_fires_in_batch_time() -> None:
    clock = Clock()
    with pytest.raises(TimeoutError):
        async with clock.timeout(2.5):
            await asyncio.Event().wait()
    assert clock.now() == pytest.approx(2.5)


async def test_pty_replies_are_never_overtaken_by_a_timeout() -> None:
    """2000 request/reply exchanges over a real pty while a far timer is pending.

    A pty hands bytes over through a kernel work queue; with an epoll loop most
    of these exchanges time out (the loop jumps to the deadline first).
    """
    loop = asyncio.get_running_loop()
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    clock = Clock()

    def echo() -> None:
        data = os.read(master, 64)
        os.write(master, data.upper())

    loop.add_reader(master, echo)
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(slave, "rb", buffering=0)
    )
    background = asyncio.create_task(clock.sleep(86400))  # a far timer the loop could jump to
    try:
        for _ in range(2000):
            os.write(slave, b"ping\r")
            async with clock.timeout(1.0):
                assert await reader.readuntil(b"\r") == b"PING\r"
        assert clock.now() < 1.0  # no exchange ever waited out a timeout
    finally:
        background.cancel()
        loop.remove_reader(master)
        transport.close()
        os.close(master)


async def test_io_is_seen_while_callbacks_keep_the_loop_busy() -> None:
    """The loop skips its poll while callbacks are ready, but never for long: a task that
    spins on sleep(0) (never letting the loop idle) still sees pty bytes arrive."""
    loop = asyncio.get_running_loop()
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    seen = asyncio.Event()
    loop.add_reader(master, lambda: (os.read(master, 64), seen.set()))
    clock = Clock()
    try:
        os.write(slave, b"x")
        spins = 0
        while not seen.is_set():
            await asyncio.sleep(0)
            spins += 1
            assert spins < 1000, "the spinning task starved the loop's I/O"
        assert clock.now() == 0.0  # and no time passed: time moves only when the loop idles
    finally:
        loop.remove_reader(master)
        os.close(master)
        os.close(slave)


async def test_clock_call_later_fires_in_batch_time() -> None:
    clock = Clock()
    fired: list[float] = []
    clock.call_later(0.25, lambda: fired.append(clock.now()))
    cancelled = clock.call_later(0.1, lambda: fired.append(-1.0))
    cancelled.cancel()
    await clock.sleep(1.0)
    assert fired == [0.25]


async def test_silent_peer_times_out_at_the_right_batch_time() -> None:
    loop = asyncio.get_running_loop()
    rsock, wsock = __import__("socket").socketpair()
    reader, writer = await asyncio.open_connection(sock=rsock)
    clock = Clock()
    with pytest.raises(TimeoutError):
        async with clock.timeout(0.75):
            await reader.read(1)
    assert clock.now() == pytest.approx(0.75)
    writer.close()
    wsock.close()
    assert loop.time() >= 0.75


def test_run_batch_loop_chooses_the_world() -> None:
    async def main() -> tuple[type, float]:
        clock = Clock()
        await clock.sleep(3600)
        return type(asyncio.get_running_loop()), clock.now()

    kind, elapsed = run_batch_loop(main, virtual=True)
    assert kind is VirtualTimeLoop
    assert elapsed == pytest.approx(3600)

    async def short() -> type:
        await Clock().sleep(0.001)
        return type(asyncio.get_running_loop())

    assert run_batch_loop(short, virtual=False) is not VirtualTimeLoop
