"""The virtual clock: jumps when every task waits, yet never overtakes real I/O."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import tty
from typing import Any

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


async def _answer_at_once() -> str:
    return "at once"


async def _answer_after_1s() -> str:
    await asyncio.sleep(1.0)
    return "after 1 s"


async def _never_answer() -> str:
    await asyncio.Event().wait()
    return "never"


async def _fail_after_1s() -> str:
    await asyncio.sleep(1.0)
    raise ValueError("refused")


async def _answer_despite_the_cancel() -> str:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        return "late"
    return "never"


async def _fail_inside_the_cancel() -> str:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        raise ValueError("refused") from None  # its context stays: the expiry
    return "never"


async def _fail_afresh_after_the_cancel() -> str:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    raise ValueError("refused")  # outside the handler: a fresh error, no context


@pytest.mark.parametrize(
    "make",
    [
        _answer_at_once,
        _answer_after_1s,
        _never_answer,
        _fail_after_1s,
        _answer_despite_the_cancel,
        _fail_inside_the_cancel,
        _fail_afresh_after_the_cancel,
    ],
)
@pytest.mark.parametrize("seconds", [0.0, 2.5])
async def test_within_bounds_an_exchange_as_timeout_does(make: Any, seconds: float) -> None:
    """Clock.within and ``async with clock.timeout`` end the same way at the same batch
    time, with the same exception context chain, and leave the task as uncancelled (a link's
    exchanges use within)."""
    clock = Clock()

    async def outcome(bounded: Any) -> tuple[str, float, int]:
        start = clock.now()
        try:
            what = await bounded()
        except (TimeoutError, ValueError) as exc:
            what, context = type(exc).__name__, exc.__context__
            while context is not None:  # the whole chain (3.13's Timeout adds to it)
                what += f" <- {type(context).__name__}"
                context = context.__context__
        task = asyncio.current_task()
        assert task is not None
        return what, clock.now() - start, task.cancelling()

    async def with_timeout() -> str:
        async with clock.timeout(seconds):
            return await make()

    expected = await outcome(with_timeout)
    assert await outcome(lambda: clock.within(seconds, make())) == expected
    await clock.sleep(10.0)  # no late cancel left behind by either


async def test_within_arms_no_timer_for_an_answer_within_the_call() -> None:
    loop = asyncio.get_running_loop()
    clock = Clock()
    armed = len(loop._scheduled)  # type: ignore[attr-defined]
    assert await clock.within(1.0, _answer_at_once()) == "at once"
    assert len(loop._scheduled) == armed  # type: ignore[attr-defined]


async def test_within_cancelled_from_outside_stays_a_cancel() -> None:
    clock = Clock()
    seen: list[str] = []

    async def exchange() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append(f"cancelled at {clock.now():g}")
            raise

    async def bounded() -> None:
        await clock.within(10.0, exchange())

    task = asyncio.create_task(bounded())
    await clock.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled at 1"]


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


@pytest.mark.parametrize("start", [2.0**24 - 0.5, 2.0**24, 400 * 86400.0, 2.0**40])
def test_timers_fire_past_two_to_the_24_seconds_and_past_a_year(start: float) -> None:
    """asyncio takes a timer as due only before ``time() + 1e-9``; past 2**24 s that sum
    rounds back to ``time()``, and a loop that lands exactly on its timers froze there
    (day 194.25) and spun. Every wake still lands on its grid time past a year."""
    loop = VirtualTimeLoop(start=start)

    async def minute_polls() -> list[float]:
        clock = Clock()
        woke = []
        for i in range(1, 4 * 24 * 60):  # 4 days of minute polls, each with a short exchange
            await clock.sleep_until(i * 60.0)
            woke.append(clock.now())
            await clock.sleep(0.027)
        return woke

    # A frozen loop would spin for ever: a wall-clock watchdog stops it (the test then fails).
    watchdog = threading.Timer(30.0, loop.call_soon_threadsafe, (loop.stop,))
    watchdog.start()
    try:
        woke = loop.run_until_complete(minute_polls())
    finally:
        watchdog.cancel()
        loop.close()
    assert woke == [pytest.approx(i * 60.0, abs=1e-6) for i in range(1, 4 * 24 * 60)]


def test_a_batch_clock_past_one_year_keeps_full_precision() -> None:
    loop = VirtualTimeLoop()

    async def year() -> float:
        clock = Clock()
        await clock.sleep_until(400 * 86400.0)
        await clock.sleep(0.001)
        return clock.now()

    try:
        assert loop.run_until_complete(year()) == pytest.approx(400 * 86400.0 + 0.001, abs=1e-7)
    finally:
        loop.close()


def wall_seconds_of(loop: VirtualTimeLoop, main: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = loop.run_until_complete(main)
    return result, time.monotonic() - started


def test_waiting_on_a_person_batch_time_follows_the_wall_at_its_pace() -> None:
    """While a batch waits on a person, time moves no faster than ``pace`` x the wall clock,
    and still lands exactly on its timers; once the batch runs again it jumps."""
    loop = VirtualTimeLoop(pace=3600.0)  # an hour a second

    async def held_then_running() -> tuple[list[float], float]:
        clock = Clock()
        clock.awaiting_person(True)
        ticks = []
        for i in range(1, 31):  # half an hour of minute polls: half a wall second
            await clock.sleep_until(i * 60.0)
            ticks.append(clock.now())
        clock.awaiting_person(False)
        await clock.sleep(10 * 86400)  # running again: ten days in no time
        return ticks, clock.now()

    try:
        (ticks, end), wall = wall_seconds_of(loop, held_then_running())
    finally:
        loop.close()
    assert ticks == [i * 60.0 for i in range(1, 31)]
    assert end == 1800.0 + 10 * 86400
    assert 0.45 <= wall <= 1.5, wall


def test_a_person_acting_while_time_follows_the_wall_is_seen_at_once() -> None:
    """A command arriving over a socket while the batch waits is taken when it arrives,
    stamped with the batch time the wall clock has reached, not at the next timer."""
    loop = VirtualTimeLoop(pace=60.0)
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def waiting() -> tuple[float, float]:
        clock = Clock()
        clock.awaiting_person(True)
        arrived = loop.create_future()
        loop.add_reader(a.fileno(), lambda: arrived.done() or arrived.set_result(clock.now()))
        ticker = asyncio.ensure_future(clock.sleep_until(3600.0))  # the next poll: an hour off
        loop.call_soon(threading.Timer(0.3, lambda: b.send(b"restart")).start)
        at = await arrived
        loop.remove_reader(a.fileno())
        ticker.cancel()
        return at, clock.now()

    try:
        (at, _), wall = wall_seconds_of(loop, waiting())
    finally:
        loop.close()
        a.close()
        b.close()
    assert wall < 1.0
    assert 0.25 * 60 <= at <= 1.0 * 60  # about 0.3 s of wall at 60x: ~18 batch seconds


def test_pace_none_keeps_jumping_and_a_bad_pace_is_refused() -> None:
    loop = VirtualTimeLoop()  # scripted runs and replay: no pace

    async def held() -> float:
        clock = Clock()
        clock.awaiting_person(True)
        await clock.sleep(86400.0)
        return clock.now()

    try:
        (end, wall) = wall_seconds_of(loop, held())
    finally:
        loop.close()
    assert end == 86400.0 and wall < 0.5
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="pace"):
            VirtualTimeLoop(pace=bad)


async def test_run_ahead_moves_time_only_when_the_loop_would_jump_there_next() -> None:
    """run_ahead(when) is a jump the loop would make next: refused while a callback is ready
    or a live timer falls due first; a cancelled timer does not count."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    t0 = loop.time()
    before = loop.call_at(t0 + 1.0, lambda: None)
    assert not loop.run_ahead(t0 + 2.0)  # the timer at +1 s would run first
    assert not loop.run_ahead(t0 + 1.0)  # ... or with it: not alone in its iteration
    assert loop.time() == t0
    before.cancel()
    loop.call_soon(lambda: None)
    assert not loop.run_ahead(t0 + 2.0)  # a ready callback runs before time moves
    await asyncio.sleep(0)
    later = loop.call_at(t0 + 5.0, lambda: None)
    assert not loop.run_ahead(t0 + 2.0, limit=t0 + 1.5)  # a deadline without a timer: too
    assert not loop.run_ahead(t0 + 2.0, limit=t0 + 2.0)  # ... or with it
    assert loop.time() == t0
    assert loop.run_ahead(t0 + 2.0, limit=t0 + 2.5)
    assert loop.time() == t0 + 2.0
    later.cancel()


async def test_run_ahead_is_refused_while_time_follows_the_wall() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    loop.pace = 1.0
    loop.follow_wall(True)
    try:
        assert not loop.run_ahead(loop.time() + 1.0)
    finally:
        loop.follow_wall(False)
        loop.pace = None


async def test_a_slow_pace_waits_for_a_person_without_overflowing_the_wait() -> None:
    """At --pace 1e-5 the next scan (60 s of batch time) is 69 days of wall time away,
    beyond what poll() takes: the loop waits in bounded steps, and a person's command
    (I/O) still wakes it at once. Before, the wait raised OverflowError."""
    import socket
    import threading

    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    heard = loop.create_future()
    loop.add_reader(ours.fileno(), lambda: heard.done() or heard.set_result(ours.recv(16)))
    loop.pace = 1e-5
    loop.follow_wall(True)
    try:
        scan = asyncio.ensure_future(asyncio.sleep(60.0))
        # The person, from another process: their command comes while the loop waits.
        person = threading.Timer(0.02, theirs.send, (b"hold",))
        person.start()
        assert await heard == b"hold"
        person.join()
        assert not scan.done()  # batch time moved by the wall only: micro-seconds
        scan.cancel()
    finally:
        loop.follow_wall(False)
        loop.pace = None
        loop.remove_reader(ours.fileno())
        ours.close()
        theirs.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_the_journal_wall_stamp_is_the_iso_utc_time_to_the_microsecond(seed: int) -> None:
    """Each event's wall time, written from a per-second prefix: across seconds, days,
    years and the epoch, the same text datetime writes."""
    import random
    from datetime import UTC, datetime, timedelta

    from twin.clock import wall_now, wall_stamp

    rng = random.Random(seed)
    moments = [0, 999_999_999, 1_000_000_000, 1_796_571_151_999_999_999]
    moments += sorted(rng.randrange(0, 4 * 10**18) for _ in range(5000))
    moments += [1_796_571_151_000_000_000 + rng.randrange(0, 3 * 10**9) for _ in range(500)]
    for ns in moments:
        us = ns // 1000
        then = datetime.fromtimestamp(us // 10**6, UTC).replace(microsecond=us % 10**6)
        assert wall_stamp(ns) == then.isoformat(timespec="microseconds")
    before = wall_now()
    stamp = datetime.fromisoformat(wall_stamp())
    tick = timedelta(microseconds=1)  # datetime rounds to the microsecond, the stamp cuts
    assert before - tick <= stamp <= wall_now() + tick
