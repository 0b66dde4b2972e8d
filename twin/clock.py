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
import heapq
import math
import selectors
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_PACE",
    "Clock",
    "VirtualTimeLoop",
    "run_batch_loop",
    "wall_monotonic",
    "wall_now",
    "wall_seconds",
    "wall_sleep",
    "wall_stamp",
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


class _WallStamp:
    """``wall_now().isoformat(timespec="microseconds")`` for every journal event (~30,000
    a batch), with the date and time up to the second written once per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second, self._prefix = -1, ""

    def __call__(self, ns: int | None = None) -> str:
        """The wall time now (or ``ns`` nanoseconds since the epoch), ISO 8601 in UTC."""
        second, micro = divmod((time.time_ns() if ns is None else ns) // 1000, 1_000_000)
        if second != self._second:
            moment = datetime.fromtimestamp(second, UTC)
            self._second, self._prefix = second, moment.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{micro:06d}+00:00"


#: The stamp a journal event carries: the real UTC wall time, to the microsecond.
wall_stamp = _WallStamp()


#: Below this loop time (2**23 s) one float64 step is at most 2**-30 s, under asyncio's 1e-9.
_ULP_BELOW_1NS = 2.0**23

#: The longest jump asyncio makes at once (its ``MAXIMUM_SELECT_TIMEOUT``): one day.
_MAX_JUMP_S = 24 * 3600.0

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
        ahead = self._loop._ahead_of_wall(timeout)
        if ahead > 0.0:
            # Waiting on a person: batch time may not run ahead of the (paced) wall clock.
            # Wait for the wall to catch up (or for a person's command to arrive).
            events = self._real.select(min(ahead, _LONGEST_WALL_WAIT_S))
            self._loop._catch_up(timeout)
            return events
        self._loop._jump(timeout)
        return []


#: Longest real wait in one select while time follows the wall: at a slow pace a timer
#: can be more wall time away than poll() takes (2^31 ms); the loop simply waits again.
_LONGEST_WALL_WAIT_S = 3600.0


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose time jumps to the next timer when every task waits."""

    def __init__(self, start: float = 0.0, *, pace: float | None = None) -> None:
        self._virtual_now = start
        self._live_from: float | None = None
        #: Batch seconds per wall second while a batch waits on a person (None: no limit).
        self.pace = pace
        #: (loop time, wall monotonic) when following the wall began; None while free.
        self._wall_anchor: tuple[float, float] | None = None
        self.jumps = 0
        super().__init__(_JumpingSelector(selectors.PollSelector(), self))
        if pace is not None and not (math.isfinite(pace) and pace > 0):
            self.close()
            raise ValueError(f"pace must be a positive number of batch seconds per second: {pace}")

    # asyncio's _run_once takes a timer as due when ``when < time() + _clock_resolution``
    # (1e-9). From 2**24 s on, float64 spacing exceeds 2e-9, so ``now + 1e-9 == now``, and
    # a timer this loop landed on exactly was never run: time froze and the loop spun
    # (CPython gh-116342, fixed upstream the same way). One float step is never lost.
    @property
    def _clock_resolution(self) -> float:
        # Read once per loop iteration: below 2**23 s one float step is under 1e-9 anyway.
        if self._virtual_now < _ULP_BELOW_1NS and self._live_from is None:
            return 1e-9
        return max(1e-9, math.ulp(self.time()))

    @_clock_resolution.setter
    def _clock_resolution(self, value: float) -> None:
        """BaseEventLoop.__init__ sets the platform's; the property above decides."""

    @property
    def following_wall(self) -> bool:
        """Whether time is now held to the (paced) wall clock."""
        return self._wall_anchor is not None

    def follow_wall(self, on: bool) -> None:
        """While a batch can move on only by a person's act, time follows the wall clock
        (``pace`` batch seconds per wall second) instead of jumping; off, it jumps again.

        Time still lands exactly on timers (readings keep their grid): only a jump that
        would run ahead of the paced wall clock waits for it, listening for I/O meanwhile.
        """
        if not on or self.pace is None:
            self._wall_anchor = None
        elif self._wall_anchor is None:
            self._wall_anchor = (self.time(), time.monotonic())

    def _paced_now(self) -> float:
        """Where the paced wall clock says loop time may be by now."""
        assert self._wall_anchor is not None and self.pace is not None
        since, wall = self._wall_anchor
        return since + (time.monotonic() - wall) * self.pace

    def _ahead_of_wall(self, seconds: float) -> float:
        """Wall seconds to wait before a jump of ``seconds`` keeps pace (0: jump now)."""
        if self._wall_anchor is None or self._live_from is not None:
            return 0.0
        target = self._jump_target(seconds)
        assert self.pace is not None
        return max(0.0, (target - self._paced_now()) / self.pace)

    def _catch_up(self, seconds: float) -> None:
        """After waiting on the wall: move time to where the wall is, never past the timer."""
        if self._wall_anchor is None:
            return
        target = self._jump_target(seconds)
        paced = self._paced_now()
        if paced >= target:
            self._jump(seconds)
        elif paced > self._virtual_now:
            self._virtual_now = paced

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

    async def settle(self, limit: int = 10_000) -> None:
        """Let every task run until it waits on a timer, I/O or a future, time standing still.

        Where the batch clock is moved by hand (the gap of an interruption), how far the
        engine had got before the move decides what the gap counts as (culture time, or
        not); settling first makes that the same in a resume and in its replay.
        """
        for _ in range(limit):
            await asyncio.sleep(0)
            if not self._ready:  # type: ignore[attr-defined]
                return

    def go_live(self) -> None:
        """From now on run in real time, continuing from the current virtual time.

        Resume replays a journal at virtual speed, then a real bench runs on in wall time.
        """
        if self._live_from is None:
            self._virtual_now = self.time()
            self._live_from = time.monotonic()

    def run_ahead(self, when: float, limit: float = math.inf) -> bool:
        """Move time to loop time ``when`` now, if the loop's next act would be to jump there.

        True when nothing else could happen first: no callback is ready, no live timer falls
        due before ``when`` (or with it, within the clock's resolution), nor does ``limit``
        (a deadline whose timer its owner arms only if still waiting: a driver on a null
        modem, drivers/null_modem.py), no I/O is waiting, and time is neither paced nor
        live. The caller then does at once, at ``when``, what a timer at ``when`` would have
        done alone in its own iteration (an in-process device's reply,
        twin/serve/memory_line.py): the same batch times, two loop iterations fewer.
        False: nothing changed, set the timer.
        """
        busy = self._ready or self._stopping  # type: ignore[attr-defined]
        if busy or self._wall_anchor is not None or self._live_from is not None:
            return False
        if not 0.0 <= when - self._virtual_now <= _MAX_JUMP_S:
            return False
        scheduled = self._scheduled  # type: ignore[attr-defined]
        while scheduled and scheduled[0]._cancelled:  # dropped as _run_once drops them
            self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
            heapq.heappop(scheduled)._scheduled = False
        horizon = when + self._clock_resolution
        if limit < horizon or (scheduled and scheduled[0]._when < horizon):
            return False
        selector = self._selector  # type: ignore[attr-defined]
        if len(selector.get_map()) > 1 and selector._real.select(0):  # more than the self-pipe
            return False
        self._virtual_now = when
        self.jumps += 1
        return True

    def _jump_target(self, seconds: float) -> float:
        target = self._virtual_now + seconds
        scheduled = self._scheduled  # type: ignore[attr-defined]
        if scheduled:
            # Land exactly on the next timer so float rounding cannot leave it unfired.
            target = max(target, scheduled[0]._when)
        return target

    def _jump(self, seconds: float) -> None:
        self._virtual_now = self._jump_target(seconds)
        self.jumps += 1


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Clock:
    """Batch time in seconds since the clock was started, and every wait the batch makes."""

    def __init__(self, started_at: datetime | None = None, zone: tzinfo = UTC) -> None:
        # The loop is kept: asyncio.get_running_loop() costs a getpid() system call on
        # Python 3.11, and batch time is read about 12 times a simulated minute (plus a
        # timer per serial exchange).
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        #: The wall date and time of batch time 0 (a replay takes the record's).
        self._wall0 = started_at if started_at is not None else wall_now()
        #: The site's time zone: what day it is there (a lot expires at the end of its day).
        self.zone = zone

    @property
    def started_at(self) -> datetime:
        """The wall date and time of batch time 0 (dates such as a lot's expiry count from it)."""
        return self._wall0

    @property
    def origin(self) -> float:
        """The loop time at which batch time 0 was."""
        return self._t0

    def now(self) -> float:
        """Seconds of batch time since start: the timestamp of every event and model step."""
        return self._loop.time() - self._t0

    def batch_datetime(self) -> datetime:
        """The batch-clock reading as a calendar date, for displays and reports."""
        return self._wall0 + timedelta(seconds=self.now())

    def batch_date(self) -> date:
        """The site's date at the batch-clock reading (its own time zone, not UTC's)."""
        return self.batch_datetime().astimezone(self.zone).date()

    async def sleep(self, seconds: float) -> None:
        """Wait on the batch clock (jumps ahead on the twin, really waits on hardware)."""
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, t: float) -> None:
        """Wait until batch time ``t``: periodic loops use this so they never drift.

        The timer is set at ``t`` itself, not at now + (t - now), so on the virtual clock
        the batch time on waking is exactly ``t`` (replay lands on recorded times).
        """
        loop = self._loop
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
        return self._loop.call_later(max(0.0, seconds), callback, *args)

    def awaiting_person(self, waiting: bool) -> None:
        """The batch can (or can no longer) move on only by a person's act.

        A person acts in wall time, so on the twin the batch clock then follows the wall
        clock at the loop's pace instead of jumping days ahead; on a wall-clock bench time
        is the wall's anyway, and a replay (no pace) re-runs the record at full speed.
        """
        loop = asyncio.get_running_loop()
        if isinstance(loop, VirtualTimeLoop):
            loop.follow_wall(waiting)

    def timeout(self, seconds: float) -> asyncio.Timeout:
        """A deadline on the batch clock for one exchange or one wait."""
        # What asyncio.timeout(seconds) makes, from the kept loop (one getpid() less).
        return asyncio.Timeout(None if seconds is None else self._loop.time() + seconds)

    def within(self, seconds: float, awaitable: Awaitable[T]) -> Awaitable[T]:
        """``awaitable`` under a deadline ``seconds`` of batch time from now, as
        ``async with timeout(seconds)`` bounds it (TimeoutError when it passes), with
        the deadline's timer armed only if ``awaitable`` has to wait: an exchange that is
        answered within the call (a device in this process) costs no timer."""
        return _Within(awaitable, self._loop, self._loop.time() + seconds)


class _Within:
    """What :meth:`Clock.within` returns: steps the awaitable itself, so it can tell
    whether the first step finished it, and arms the deadline's timer if not; expiry
    cancels the task and becomes TimeoutError, as ``asyncio.Timeout`` does it."""

    __slots__ = ("_awaitable", "_loop", "_when")

    def __init__(self, awaitable: Awaitable[Any], loop: asyncio.AbstractEventLoop, when: float):
        self._awaitable, self._loop, self._when = awaitable, loop, when

    def __await__(self) -> Any:
        steps = self._awaitable.__await__()
        try:
            waited = steps.send(None)
        except StopIteration as done:
            return done.value  # answered within the call: no timer was needed
        loop = self._loop
        task = asyncio.current_task(loop)
        if task is None:
            steps.close()
            raise RuntimeError("Clock.within must be awaited inside a task")
        cancelling = task.cancelling()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        # A deadline already past fires in the next iteration (call_soon, as asyncio.Timeout
        # arms one). Unlike Timeout's, this timer is armed after the first step: callbacks
        # that step scheduled run before it, which only matters for a deadline of 0.
        timer: asyncio.Handle
        if self._when <= loop.time():
            timer = loop.call_soon(expire)
        else:
            timer = loop.call_at(self._when, expire)
        try:
            while True:  # what ``yield from steps`` does, with the step's outcome kept
                thrown: BaseException | None = None
                try:
                    sent = yield waited
                except GeneratorExit:
                    steps.close()
                    raise
                except BaseException as exc:  # thrown into the task: to the awaitable
                    thrown = exc
                try:  # outside the handler, so the thrown error is no context of the next
                    if thrown is None:
                        waited = steps.send(sent)
                    else:
                        waited, thrown = steps.throw(thrown), None
                except StopIteration as done:
                    return done.value
        except asyncio.CancelledError as exc:
            if expired:
                expired = False
                if task.uncancel() <= cancelling:
                    raise TimeoutError from exc
            raise
        except BaseException as exc:  # the awaitable made its own error of the expiry
            if expired:
                expired = False
                if task.uncancel() <= cancelling and _TIMEOUT_IN_CHAIN:
                    _insert_timeout_error(exc)
            raise
        finally:
            thrown = None  # no cycle through this frame's traceback
            timer.cancel()
            if expired:  # expired, yet the awaitable finished: the cancel is taken back
                task.uncancel()


#: Whether asyncio.Timeout puts a TimeoutError into the chain of an error the body made of
#: its expiry (Python 3.13 on); Clock.within does as the running Python's Timeout does.
_TIMEOUT_IN_CHAIN = sys.version_info >= (3, 13)


def _insert_timeout_error(exc: BaseException) -> None:
    """Put a TimeoutError between ``exc`` (or an error of its group) and the expiry's
    CancelledError in its context chain, as Python 3.13's asyncio.Timeout does."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            _insert_timeout_error(inner)
    while exc.__context__ is not None:
        if isinstance(exc.__context__, asyncio.CancelledError):
            timeout = TimeoutError()
            timeout.__context__ = timeout.__cause__ = exc.__context__
            exc.__context__ = timeout
            return
        exc = exc.__context__


#: Batch seconds per wall second while a batch on the twin waits on a person: real time.
DEFAULT_PACE = 1.0


def run_batch_loop(
    main: Callable[[], Coroutine[Any, Any, T]] | Awaitable[T],
    *,
    virtual: bool,
    pace: float | None = DEFAULT_PACE,
) -> T:
    """Run ``main`` on a virtual-time loop (the twin) or a real one (a hardware bench).

    On the virtual loop, ``pace`` is how fast batch time moves while the batch waits on a
    person (1.0: as the wall clock; more for demos; None: no limit, only for scripted runs).
    """
    factory: Callable[[], asyncio.AbstractEventLoop] = (
        (lambda: VirtualTimeLoop(pace=pace)) if virtual else asyncio.new_event_loop
    )
    coro = main() if callable(main) else main
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)  # type: ignore[arg-type]
