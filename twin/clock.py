"""One clock for every wait: wall time on a real bench, virtual time on the twin.

The engine, the drivers and the twin's models read time only through
:class:`Clock`, which reads the running event loop's ``time()``. Which world a
batch runs in is chosen once, when the loop is made: :class:`VirtualTimeLoop`
keeps its own time and jumps straight to the next timer whenever no callback is
ready and no I/O is waiting, so a 10-day expansion is bounded by CPU, not by
the calendar. Real I/O (Modbus over loopback TCP, ASCII over a
pseudo-terminal) still flows: before each jump the loop polls every socket and
pty once. Loopback TCP delivers within the sending call. A pty hands
bytes to the other side through a kernel work queue; ``poll()`` on a tty flushes
that queue before it answers (n_tty_poll), while ``epoll`` does not, so this loop
polls with ``poll()``: bytes written to a pty are seen by the very next poll, and
a reply is never overtaken by a timeout. While callbacks are ready the loop does
not poll (time cannot move until they have run, and a poll per iteration is a
system call per iteration): it polls when they are done, before it would wait or
jump, and at least every 16 iterations. Threads are not seen by the loop:
nothing that runs under it may hand work to a thread and wait for it.

Why our own and not ``looptime``: looptime is a pytest plugin that patches
loops in tests; the CLI needs the same loop in production (``poc-twin run``
on the sim bench), and the jump rule must be exactly the one above.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

__all__ = [
    "Clock",
    "VirtualTimeLoop",
    "run_batch_loop",
    "wall_monotonic",
    "wall_now",
    "wall_seconds",
    "wall_sleep",
]

T = TypeVar("T")


def wall_seconds() -> float:
    """Real UTC seconds since the epoch, for services outside any batch (the control site's
    receipt stamps); a batch never reads it."""
    return time.time()


def wall_monotonic() -> float:
    """Real monotonic seconds, for a real-time process's own deadlines and back-off
    (telemetry, starting a broker); a batch never reads it."""
    return time.monotonic()


def wall_sleep(seconds: float) -> None:
    """Block in real time: only for a real-time process waiting on another process."""
    time.sleep(seconds)


def wall_now() -> datetime:
    """The real UTC wall time: for journal stamps a validator compares with the world."""
    return datetime.now(UTC)


_MAX_POLL_SKIPS = 16
"""Iterations with ready callbacks in a row that may skip polling: a task that spins on
``sleep(0)`` waiting for I/O still sees it (the loop polls at least this often)."""


class _JumpingSelector(selectors.BaseSelector):
    """Wraps the real selector: never blocks while a timer is pending; jumps instead."""

    def __init__(self, real: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._real = real
        self._loop = loop
        self._skipped = 0  # iterations in a row that ran ready callbacks without polling

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if self._loop._live_from is not None:
            return self._real.select(timeout)
        if timeout == 0 and self._skipped < _MAX_POLL_SKIPS:
            # Callbacks are ready and time cannot move until they have run, so polling now
            # only costs a system call: I/O is taken when the loop would otherwise wait.
            self._skipped += 1
            return []
        self._skipped = 0
        events = self._real.select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            # Nothing scheduled at all: only the outside world can wake us.
            return self._real.select(None)
        self._loop._jump(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose time jumps to the next timer when every task waits."""

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = start
        self._live_from: float | None = None
        self.jumps = 0
        super().__init__(_JumpingSelector(selectors.PollSelector(), self))

    def time(self) -> float:
        if self._live_from is not None:
            return self._virtual_now + (time.monotonic() - self._live_from)
        return self._virtual_now

    def advance_to(self, when: float) -> None:
        """Set loop time to ``when`` at once (resume: the batch clock counts the time the
        process was down); timers due in between fire at the next iteration."""
        self._virtual_now = max(self.time(), when)
        if self._live_from is not None:
            self._live_from = time.monotonic()

    def go_live(self) -> None:
        """From now on run in real time, continuing from the current virtual time.

        Resume replays a journal at virtual speed, then a real bench runs on in wall time.
        """
        if self._live_from is None:
            self._virtual_now = self.time()
            self._live_from = time.monotonic()

    def _jump(self, seconds: float) -> None:
        target = self._virtual_now + seconds
        scheduled = self._scheduled  # type: ignore[attr-defined]
        if scheduled:
            # Land exactly on the next timer so float rounding cannot leave it unfired.
            target = max(target, scheduled[0]._when)
        self._virtual_now = target
        self.jumps += 1


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Clock:
    """Batch time in seconds since the clock was started, and every wait the batch makes."""

    def __init__(self) -> None:
        self._t0 = asyncio.get_running_loop().time()
        self._wall0 = wall_now()

    @property
    def origin(self) -> float:
        """The loop time at which batch time 0 was."""
        return self._t0

    def now(self) -> float:
        """Seconds of batch time since start: the timestamp of every event and model step."""
        return asyncio.get_running_loop().time() - self._t0

    def batch_datetime(self) -> datetime:
        """The batch-clock reading as a calendar date, for displays and reports."""
        return self._wall0 + timedelta(seconds=self.now())

    async def sleep(self, seconds: float) -> None:
        """Wait on the batch clock (jumps ahead on the twin, really waits on hardware)."""
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, t: float) -> None:
        """Wait until batch time ``t``: periodic loops use this so they never drift.

        The timer is set at ``t`` itself, not at now + (t - now), so on the virtual clock
        the batch time on waking is exactly ``t`` (replay lands on recorded times).
        """
        loop = asyncio.get_running_loop()
        when = self._t0 + t
        if when <= loop.time():
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = loop.create_future()
        timer = loop.call_at(when, _wake, woken)
        try:
            await woken
        finally:
            timer.cancel()

    def call_later(
        self, seconds: float, callback: Callable[..., object], *args: Any
    ) -> asyncio.TimerHandle:
        """Run ``callback(*args)`` after ``seconds`` of batch time, as :meth:`sleep` would wake.

        For a device's reply on the wire: one timer instead of a task sleeping per exchange
        (cancel the handle to take the reply back).
        """
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, seconds), callback, *args)

    def timeout(self, seconds: float) -> asyncio.Timeout:
        """A deadline on the batch clock for one exchange or one wait."""
        return asyncio.timeout(seconds)


def run_batch_loop(
    main: Callable[[], Coroutine[Any, Any, T]] | Awaitable[T], *, virtual: bool
) -> T:
    """Run ``main`` on a virtual-time loop (the twin) or a real one (a hardware bench)."""
    factory: Callable[[], asyncio.AbstractEventLoop] = (
        VirtualTimeLoop if virtual else asyncio.new_event_loop
    )
    coro = main() if callable(main) else main
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)  # type: ignore[arg-type]
