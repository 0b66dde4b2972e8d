"""Equipment that answers from the journal: what each device said, when it said it.

Replay gives the engine these instead of drivers. A read returns the recorded
reading at the batch time it was recorded; a write returns when the device
confirmed it, with what it answered; a failure raises the error the engine
recorded, with the same message. An answer is consumed only when it is
delivered, so a call the original batch abandoned (a hold cancelled it) leaves
the answer for the call that really got it.

When the engine asks a device for something the record does not hold, either
the record has ended (a batch interrupted by a crash: resume takes over there)
or the engine has diverged; :class:`Feed` tells its owner which.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from twin.clock import Clock
from twin.engine.context import CONFIRMED, PhaseInterrupted
from twin.equipment import (
    BioreactorPV,
    CellSample,
    DeviceIdentity,
    ElectroporatorStatus,
    Gas,
    GasDispenserPV,
    Material,
    PulseProgram,
    PulseResult,
)
from twin.errors import CommunicationError, DeviceRefused, EquipmentError
from twin.journal import Event

__all__ = [
    "NO_ANSWER",
    "Boundary",
    "Feed",
    "is_interruption",
    "replay_equipment",
]

#: What kind of recorded event answers each kind of call.
ANSWERS = {"read": "reading", "sample": "sample", "write": CONFIRMED, "safe_state": "safe_state"}
#: Alarms that stand for a device's failure to answer a call (not a monitor's alarm).
FAILURES = {"communication", "device", "safe_state_failed"}


#: A read that failed again while its device's communication alarm stood (not a new alarm).
NO_ANSWER = "no_answer"


def _is_failure(event: Event) -> bool:
    return event.kind == NO_ANSWER or event.kind == "alarm"


def _is_answer(event: Event, equipment: set[str]) -> bool:
    if event.source not in equipment:
        return False
    if event.kind == "alarm":
        return event.data.get("alarm") in FAILURES
    return event.kind == NO_ANSWER or event.kind in ANSWERS.values()


def _recorded_error(event: Event) -> EquipmentError:
    """The error the original call raised, with its message exactly as recorded."""
    communication = event.data.get("alarm") == "communication" or event.kind == NO_ANSWER
    kind = CommunicationError if communication else EquipmentError
    if event.data.get("refused") is True:  # the device answered with an error
        kind = DeviceRefused
    error = kind(event.source, "")
    error.args = (event.data.get("message", ""),)
    return error


def is_interruption(event: Event) -> bool:
    """The deviation a resume writes where a batch's process died and came back."""
    return event.kind == "deviation" and event.data.get("deviation") == "interruption"


@dataclass
class Boundary:
    """A point of the record no device answer crosses: an interruption, or the record's end.

    A call the engine made before it gets no answer from beyond it (the original
    call died with the process); it waits until the boundary is passed.
    """

    index: int
    passed: asyncio.Event = field(default_factory=asyncio.Event)


class Feed:
    """The recorded answers of every device, in order, and the clock they are given on."""

    def __init__(
        self,
        events: list[Event],
        equipment: set[str],
        clock: Clock,
        *,
        cursor: Callable[[], int],
        ends_at_interruption: Callable[[asyncio.Task[Any] | None], bool],
        inputs: Callable[[Event], bool] = lambda event: False,
        reached: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.clock = clock
        self.cursor = cursor
        self.reached = reached
        #: Where the record has a person's input (a command, a scan), in order.
        self.inputs = [i for i, e in enumerate(events) if inputs(e)] if reached else []
        self.ends_at_interruption = ends_at_interruption
        self.queues: dict[str, deque[tuple[int, Event]]] = {name: deque() for name in equipment}
        for index, event in enumerate(events):
            if _is_answer(event, equipment):
                self.queues[event.source].append((index, event))
        self.boundaries = [Boundary(i) for i, e in enumerate(events) if is_interruption(e)]
        self.boundaries.append(Boundary(len(events)))
        #: The task enacting an interruption, and its boundary (see :meth:`gate`).
        self.enacting: tuple[asyncio.Task[Any], Boundary] | None = None

    def boundary(self, index: int) -> Boundary:
        return next(b for b in self.boundaries if b.index == index)

    def next_boundary(self, index: int) -> Boundary:
        """The first boundary after the one at ``index`` (the record's end at last)."""
        return next(b for b in self.boundaries if b.index > index)

    def pass_boundary(self, boundary: Boundary) -> None:
        """Let calls waiting at this boundary, or at an earlier one a resume never finished
        passing (its process died in the hand-over), go on."""
        for b in self.boundaries:
            if b.index <= boundary.index:
                b.passed.set()

    async def gate(self) -> None:
        """While an interruption is enacted, only the enactment talks to equipment: other
        calls wait, and the phase's own end as interrupted (the hold is on its way)."""
        while self.enacting is not None:
            task, boundary = self.enacting
            if asyncio.current_task() is task:
                return
            await boundary.passed.wait()
            self._end_if_interrupted()

    def _input_before(self, index: int | None) -> int | None:
        """The first recorded input not yet reproduced that the record has before ``index``."""
        if index is None or not self.inputs:
            return None
        i = bisect.bisect_left(self.inputs, self.cursor())
        if i < len(self.inputs) and self.inputs[i] < index:
            return self.inputs[i]
        return None

    def _end_if_interrupted(self) -> None:
        if self.ends_at_interruption(asyncio.current_task()):
            raise PhaseInterrupted("held: the batch's process was interrupted here")

    async def answer(self, device: str, call: str, what: str = "") -> Event | None:
        """The recorded answer to this call at its recorded time; None once the boundary
        it waited at is passed (the caller then goes live, or asks again).

        The unit's control modules and a phase may both have a call in flight to one
        device; their answers are recorded in the order the device gave them. So a call
        takes the first recorded answer of its own kind (a failure answers any call), not
        only the very next one: each call's answer is still the same, and the journal's
        comparison of every event still catches a divergence.
        """
        queue = self.queues[device]
        while True:
            cursor = self.cursor()
            ahead = next(b for b in self.boundaries if b.index >= cursor and not b.passed.is_set())
            found = _first_answer(queue, ahead.index, call, what)
            if found is None:
                # Nothing of this kind before the boundary: the call was in flight when the
                # process died (or the engine diverged: then the journal's comparison and the
                # watchdog name the first event it does not reproduce).
                await ahead.passed.wait()
                self._end_if_interrupted()
                return None
            at, event = found
            await self.clock.sleep_until(event.batch_time)
            pending = self._input_before(at)
            if pending is not None and self.reached is not None:
                # A person's input the record has before this answer (a command given while
                # the call was on the wire, at the same batch time) is handed over first.
                await self.reached(pending + 1)
                continue
            if self.reached is not None and self.cursor() < at:
                # What the record has before this answer at the same batch time (another
                # call's answer due at that instant: a scan's reading as a dose's pump
                # ends) comes first: two timers due at one instant fire in either order.
                await self.reached(at)
                continue
            if _take(queue, event):
                break  # still ours: no other call took it while we waited
        if _is_failure(event):
            raise _recorded_error(event)
        return event


def _first_answer(
    queue: deque[tuple[int, Event]], before: int, call: str, what: str
) -> tuple[int, Event] | None:
    """The first queued answer (up to index ``before``) that can answer this call, with its
    index in the record."""
    kind = ANSWERS[call]
    for index, event in queue:
        if index > before:
            return None
        if _is_failure(event) or (
            event.kind == kind and (not what or event.data.get("what") == what)
        ):
            return index, event
    return None


def _take(queue: deque[tuple[int, Event]], event: Event) -> bool:
    """Take ``event`` out of the queue; False if another call took it meanwhile."""
    for i, (_, queued) in enumerate(queue):
        if queued is event:
            del queue[i]
            return True
    return False


class _ReplayDevice:
    """What every replayed device shares: its name, its limits and the feed."""

    def __init__(self, name: str, limits: Any, feed: Feed) -> None:
        self.name = name
        self.limits = limits
        self.feed = feed
        #: The live device to forward to after a resume's hand-over.
        self.live: Any = None

    async def _call(self, call: str, live: Callable[[Any], Awaitable[Any]], what: str = "") -> Any:
        await self.feed.gate()
        while self.live is None:
            event = await self.feed.answer(self.name, call, what)
            if event is not None:
                return event
        return await live(self.live)

    async def _write(self, live: Callable[[Any], Awaitable[Any]]) -> Any:
        event = await self._call("write", live)
        return event.data.get("result") if isinstance(event, Event) else event

    async def identify(self) -> DeviceIdentity:
        if self.live is not None:
            return await self.live.identify()  # type: ignore[no-any-return]
        return DeviceIdentity("replay", "recorded answers", self.name, "journal")

    async def safe_state(self) -> None:
        await self._call("safe_state", lambda d: d.safe_state())


class ReplayBioreactor(_ReplayDevice):
    async def read(self) -> BioreactorPV:
        answer = await self._call("read", lambda d: d.read(), "pv")
        if isinstance(answer, Event):
            return BioreactorPV(**answer.data["values"])
        return answer  # type: ignore[no-any-return]

    async def set_temperature(self, celsius: float) -> None:
        await self._write(lambda d: d.set_temperature(celsius))

    async def set_rocking(self, rpm: float) -> None:
        await self._write(lambda d: d.set_rocking(rpm))

    async def set_perfusion(self, ml_per_day: float) -> None:
        await self._write(lambda d: d.set_perfusion(ml_per_day))

    async def add(self, material: Material, volume_ml: float) -> None:
        await self._write(lambda d: d.add(material, volume_ml))

    async def sample(self) -> CellSample:
        answer = await self._call("sample", lambda d: d.sample())
        if isinstance(answer, Event):  # the sample event also names the sample and its QC tests
            counted = {f.name for f in dataclasses.fields(CellSample)}
            return CellSample(**{k: v for k, v in answer.data.items() if k in counted})
        return answer  # type: ignore[no-any-return]

    async def harvest(self) -> float:
        answer = await self._write(lambda d: d.harvest())
        return float(answer)

    async def added_ml(self) -> float:
        return await self._total("added", lambda d: d.added_ml())

    async def harvested_ml(self) -> float:
        return await self._total("harvested", lambda d: d.harvested_ml())

    async def _total(self, what: str, live: Callable[[Any], Awaitable[Any]]) -> float:
        """A pump's total, read after a hold cut its transfer short (a reading ``what``)."""
        answer = await self._call("read", live, what)
        if isinstance(answer, Event):
            return float(answer.data["values"])
        return answer  # type: ignore[no-any-return]


class ReplayGasDispenser(_ReplayDevice):
    async def read(self) -> GasDispenserPV:
        answer = await self._call("read", lambda d: d.read(), "pv")
        if isinstance(answer, Event):
            values = answer.data["values"]
            return GasDispenserPV(
                mass_flow_sccm={Gas[k.upper()]: v for k, v in values["mass_flow_sccm"].items()},
                setpoint_sccm={Gas[k.upper()]: v for k, v in values["setpoint_sccm"].items()},
            )
        return answer  # type: ignore[no-any-return]

    async def set_flow(self, gas: Gas, sccm: float) -> None:
        await self._write(lambda d: d.set_flow(gas, sccm))


class ReplayElectroporator(_ReplayDevice):
    async def status(self) -> ElectroporatorStatus:
        answer = await self._call("read", lambda d: d.status(), "status")
        if isinstance(answer, Event):
            return ElectroporatorStatus(**answer.data["values"])
        return answer  # type: ignore[no-any-return]

    async def load(self, volume_ul: float) -> None:
        await self._write(lambda d: d.load(volume_ul))

    async def program(self, program: PulseProgram) -> None:
        await self._write(lambda d: d.program(program))

    async def pulse(self) -> PulseResult:
        answer = await self._write(lambda d: d.pulse())
        return PulseResult(**answer) if isinstance(answer, dict) else answer  # type: ignore[no-any-return]

    async def unload(self) -> None:
        await self._write(lambda d: d.unload())

    async def recover(self) -> float:
        return float(await self._write(lambda d: d.recover()))


KINDS: dict[str, type[_ReplayDevice]] = {
    "bioreactor": ReplayBioreactor,
    "gas_dispenser": ReplayGasDispenser,
    "electroporator": ReplayElectroporator,
}


def replay_equipment(bench: Any, feed: Feed) -> dict[str, Any]:
    """One replayed device per equipment item of the recorded bench, with that item's limits.

    The limits come from the bench's own driver settings (the driver object is built, never
    connected), so interlocks trip on replay exactly where they tripped on the bench.
    """
    items: dict[str, Any] = {}
    for name, config in bench.configs.items():
        spec = bench.spec(name)
        driver = spec.driver(name, config, feed.clock)
        items[name] = KINDS[spec.equipment_type](name, driver.limits, feed)
    return items
