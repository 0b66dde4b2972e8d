"""How a kit runs its checks: a fresh device for each, a deadline, and every outcome recorded.

Each check opens the device anew through the caller's factory and closes it
after, so one failing check cannot leave the next one a half-configured device;
every check puts back what it changed, so a real bench ends as it started.
Waits go through the batch clock: on the twin's virtual clock a settle time
costs nothing, on a real bench it is real time. A kit knows the device only
through its equipment interface, never whether it is simulated.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from twin.clock import Clock
from twin.conformance.report import Check, ConformanceReport, Verdict
from twin.errors import CommunicationError, EquipmentError, InterlockTripped

__all__ = [
    "IDENTITY",
    "CheckFn",
    "Deviation",
    "DeviceFactory",
    "Kit",
    "NotApplicable",
    "check_identity",
    "expect_refused",
    "finite",
    "inside",
    "kinds",
    "putting_back",
    "raw_exchange",
    "serial_line_of",
    "settle",
]

T = TypeVar("T")

DeviceFactory = Callable[[], AbstractAsyncContextManager[T]]
"""Opens one device (connected, ready) and closes it on exit: ``async with make() as device``."""

CheckFn = Callable[[T, Clock], Awaitable[str]]
"""One check: does something to the device, returns what it saw (raises Deviation if wrong)."""

IDENTITY = "identity"


class Deviation(Exception):
    """The device did something its interface does not allow; the message says what."""


class NotApplicable(Exception):
    """The check does not apply to this device (the message says why): reported as skipped."""


async def expect_refused(attempt: Callable[[], Awaitable[object]], what: str) -> str:
    """Run ``attempt``; it must be refused with an answer (the name of the error is returned).

    A refusal is the driver's own check (``EquipmentError``, or ``ValueError`` for
    a value that is not a number, stopped before the wire), the device's error
    reply (``DeviceRefused``) or an interlock (``InterlockTripped``). A device that
    goes silent is not refusing: a timeout says nothing about what it did.
    """
    try:
        await attempt()
    except CommunicationError as exc:
        raise Deviation(f"no answer to {what} ({exc}): a refusal must be an answer") from exc
    except (EquipmentError, InterlockTripped, ValueError) as exc:
        return type(exc).__name__
    raise Deviation(f"accepted {what}")


@asynccontextmanager
async def putting_back(restore: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """Run the body, then ``restore`` what it changed. If the body failed, that failure is
    the finding: a restore that fails too (a device gone silent) does not hide it."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            await restore()
        raise
    await restore()


def kinds(answers: list[str]) -> str:
    """The distinct refusals seen, for a report line: ``DeviceRefused, ValueError``."""
    return ", ".join(sorted(set(answers)))


async def settle(
    clock: Clock,
    probe: Callable[[], Awaitable[float]],
    target: float,
    tolerance: float,
    within_s: float,
    poll_s: float = 1.0,
) -> float:
    """Poll until the value is within ``tolerance`` of ``target`` or ``within_s`` has passed.

    Returns the last value read: a rocker or a pump takes a moment to follow its
    setpoint, and a check must give it that moment and no more.
    """
    deadline = clock.now() + within_s
    while True:
        value = await probe()
        if abs(value - target) <= tolerance or clock.now() >= deadline:
            return value
        await clock.sleep(poll_s)


def inside(limits: tuple[float, float], avoid: float) -> float:
    """A value well inside ``limits`` and clearly away from ``avoid`` (the value in force),
    so a read-back proves the write took effect rather than finding the old value."""
    lo, hi = limits
    span = hi - lo
    for fraction in (0.25, 0.75, 0.5):
        value = round(lo + fraction * span, 1)
        if abs(value - avoid) > 0.1 * span:
            return value
    return round(lo + 0.25 * span, 1)


def finite(name: str, value: Any, low: float, high: float) -> None:
    """A process value must be a finite number inside what the instrument can show."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Deviation(f"{name} is {value!r}, not a number")
    if not math.isfinite(value) or not low <= value <= high:
        raise Deviation(f"{name} = {value!r} is outside the plausible {low:g}..{high:g}")


class Kit(Generic[T]):
    """Runs a list of named checks against one kind of device and reports each."""

    def __init__(
        self,
        interface: str,
        make_device: DeviceFactory[T],
        *,
        device: str,
        check_timeout_s: float = 600.0,
    ) -> None:
        self.interface = interface
        self.make_device = make_device
        self.device = device
        self.check_timeout_s = check_timeout_s

    async def run(self, checks: Sequence[tuple[str, CheckFn[T]]]) -> ConformanceReport:
        """Every check in order; a failing check does not stop the next. A device that cannot
        be opened at all fails its first check with the reason, and the rest as not run."""
        report = ConformanceReport(device=self.device, interface=self.interface)
        unreachable = ""
        for name, check in checks:
            if unreachable:
                report.checks.append(Check(name, Verdict.FAILED, unreachable))
                continue
            result, opened = await self._one(report, name, check)
            report.checks.append(result)
            if not opened:
                unreachable = f"not run: the device could not be opened ({name})"
            if name == IDENTITY and result.verdict is Verdict.PASSED:
                report.identity = result.detail
        return report

    async def _one(
        self, report: ConformanceReport, name: str, check: CheckFn[T]
    ) -> tuple[Check, bool]:
        """One check on a freshly opened device; also says whether the device opened."""
        clock = Clock()
        opened = False
        try:
            async with clock.timeout(self.check_timeout_s), self.make_device() as device:
                opened = True
                report.device = str(getattr(device, "name", report.device))
                detail = await check(device, clock)
        except NotApplicable as exc:
            return Check(name, Verdict.SKIPPED, str(exc)), opened
        except Deviation as exc:
            return Check(name, Verdict.FAILED, str(exc)), opened
        except TimeoutError:
            detail = f"not finished within {self.check_timeout_s:g} s"
            return Check(name, Verdict.FAILED, detail), opened
        except Exception as exc:  # a kit reports, it does not crash: the error is the finding
            return Check(name, Verdict.FAILED, f"{type(exc).__name__}: {exc}"), opened
        return Check(name, Verdict.PASSED, detail), opened


async def check_identity(device: Any, clock: Clock) -> str:
    """Every interface: the device names itself, completely and the same way twice."""
    first = await device.identify()
    fields = {
        "vendor": first.vendor,
        "model": first.model,
        "serial": first.serial,
        "firmware": first.firmware,
    }
    blank = [k for k, v in fields.items() if not isinstance(v, str) or not v.strip()]
    if blank:
        raise Deviation(f"identity has no {', '.join(blank)}: {first}")
    again = await device.identify()
    if again != first:
        raise Deviation(f"identity changed between two asks: {first} then {again}")
    return f"{first.vendor} {first.model} s/n {first.serial} fw {first.firmware}"


def serial_line_of(device: Any) -> Any:
    """The serial line a device's driver talks through (``serial_line``), for checks that send
    raw bytes; NotApplicable for a device that has none (Modbus, or not yet connected)."""
    line = getattr(device, "serial_line", None)
    if line is None or not hasattr(line, "transact"):
        raise NotApplicable("the device does not talk ASCII over a serial line")
    return line


@dataclass
class _Tally:
    """What one raw exchange met (the fields a serial line counts)."""

    transactions: int = 0
    retries: int = 0
    timeouts: int = 0
    crc_errors: int = 0
    failures: int = 0


async def raw_exchange(
    device: Any, data: bytes, *, terminator: bytes, frames: int = 1, wait_s: float = 1.0
) -> bytes | None:
    """Write ``data`` as it is on the device's line and return its reply, or None if none came
    within ``wait_s`` plus the time the bytes take on the wire. Never retried."""
    line = serial_line_of(device)
    wire_s = (len(data) + 200 * frames) * 11 / line.baud
    tally = _Tally()
    try:
        return bytes(
            await line.transact(
                data,
                device=str(getattr(device, "name", "device")),
                terminator=terminator,
                frames=frames,
                timeout=wait_s + wire_s,
                retries=0,
                counters=tally,
            )
        )
    except CommunicationError:
        if tally.timeouts:
            return None
        raise
