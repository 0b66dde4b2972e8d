"""What a running phase may touch: equipment through a journaling facade, the clock, safe points.

Every setpoint a phase writes is journalled (and committed) before it goes to the
device and confirmed after the device took it; every reading is journalled after
it comes back. The engine acts on values exactly as the journal keeps them (floats
to six decimals), so its decisions are a function of the journal alone: replay
feeds the recorded values back and must see the same decisions. The latest
setpoints are remembered so a restart after a hold can re-establish them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twin.clock import Clock
from twin.engine.alarms import Alarms
from twin.engine.interlocks import check_write
from twin.equipment import Bioreactor, Electroporator, GasDispenser
from twin.errors import PocTwinError
from twin.journal import Journal

__all__ = ["CONFIRMED", "BatchContext", "PhaseInterrupted", "as_record", "as_recorded"]

T = TypeVar("T")


class PhaseInterrupted(PocTwinError):
    """Raised inside a phase at a safe point when the batch must leave Running."""


def as_record(value: Any) -> Any:
    """A reading as plain JSON-able data for the journal."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_record(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {
            (k.name.lower() if hasattr(k, "name") else str(k)): as_record(v)
            for k, v in value.items()
        }
    if isinstance(value, float):
        return round(value, 6)
    return value


def as_recorded(value: T) -> T:
    """The value as the journal will hold it (floats rounded as :func:`as_record` rounds them)."""
    if isinstance(value, float):
        return round(value, 6)  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: as_recorded(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if isinstance(getattr(value, f.name), float | dict)
        }
        return dataclasses.replace(value, **changes) if changes else value  # type: ignore[type-var]
    if isinstance(value, dict):
        return {k: as_recorded(v) for k, v in value.items()}  # type: ignore[return-value]
    return value


#: Kind of the event that says a device took a setpoint (with what it answered).
CONFIRMED = "confirmed"

Restorer = tuple[Any, str, Callable[[], Awaitable[Any]]]


class BatchContext:
    """The engine's side of a running batch, as phases see it."""

    def __init__(
        self,
        clock: Clock,
        journal: Journal,
        equipment: dict[str, Any],
        *,
        safe_point: Callable[[], Awaitable[None]],
        alarms: Alarms,
    ) -> None:
        self.clock = clock
        self.journal = journal
        self.equipment = equipment
        self._safe_point = safe_point
        self.alarms = alarms
        #: The batch's ordered identity (patient id, bag id), from the batch record.
        self.ordered_identity: tuple[str, str] | None = None
        #: Set once an operator's scan matched the ordered identity: unlocks electroporation.
        self.identity: tuple[str, str] | None = None
        self._scans: asyncio.Queue[tuple[str, str, str, str]] = asyncio.Queue()
        self._restore: dict[tuple[str, str], Restorer] = {}
        self.latest: dict[str, Any] = {}

    def bioreactor(self, name: str) -> Bioreactor:
        return self.equipment[name]  # type: ignore[no-any-return]

    def gas_dispenser(self, name: str) -> GasDispenser:
        return self.equipment[name]  # type: ignore[no-any-return]

    def electroporator(self, name: str) -> Electroporator:
        return self.equipment[name]  # type: ignore[no-any-return]

    async def safe_point(self) -> None:
        """Where a phase may be paused or interrupted without harm."""
        await self._safe_point()

    async def write(
        self,
        equipment: str,
        parameter: str,
        value: Any,
        action: Callable[[], Awaitable[T]],
        *,
        unit: str = "",
        restorable: bool = True,
    ) -> T:
        """Check interlocks, journal the setpoint (committed), write it, journal the device's
        confirmation (with its answer); remember the setpoint for a restart."""
        check_write(
            equipment,
            self.equipment[equipment],
            parameter,
            value,
            identity_confirmed=self.identity is not None,
        )
        self.journal.append(
            "setpoint",
            equipment,
            {"parameter": parameter, "value": as_record(value), "unit": unit},
        )
        result = await self._confirmed(equipment, parameter, action)
        if restorable:
            self._restore[(equipment, parameter)] = (value, unit, action)
        return result

    async def _confirmed(
        self, equipment: str, parameter: str, action: Callable[[], Awaitable[T]]
    ) -> T:
        result = as_recorded(await action())
        self.journal.append(
            CONFIRMED,
            equipment,
            {"parameter": parameter, "result": as_record(result)},
            durable=False,
        )
        return result

    async def read(self, equipment: str, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """Take a reading and journal it (made durable with the next setpoint or transition)."""
        value = as_recorded(await action())
        record = as_record(value)
        self.latest[f"{equipment}.{what}"] = value
        self.journal.append("reading", equipment, {"what": what, "values": record}, durable=False)
        if isinstance(record, dict):
            self.alarms.evaluate(equipment, record, self.clock.now())
        return value

    def present_identity(self, patient_id: str, bag_id: str, operator: str, reason: str) -> None:
        """An operator's scan of the patient wristband and bag label (from another terminal)."""
        self._scans.put_nowait((patient_id, bag_id, operator, reason))

    async def next_scan(self) -> tuple[str, str, str, str]:
        """Wait for the next identity scan."""
        return await self._scans.get()

    def forget(self, equipment: str, parameter: str) -> None:
        """A setpoint no longer to be restored (e.g. perfusion after harvest)."""
        self._restore.pop((equipment, parameter), None)

    async def restore_setpoints(self) -> None:
        """Re-establish every remembered setpoint, in the order they were first written."""
        for (equipment, parameter), (value, unit, action) in list(self._restore.items()):
            self.journal.append(
                "setpoint",
                equipment,
                {"parameter": parameter, "value": as_record(value), "unit": unit, "restored": True},
            )
            await self._confirmed(equipment, parameter, action)
