"""What a running phase may touch: equipment through a journaling facade, the clock, safe points.

Every setpoint a phase writes is journalled (and committed) before it goes to the
device, every reading after it comes back; the latest setpoints are remembered
so a restart after a hold can re-establish them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twin.clock import Clock
from twin.equipment import Bioreactor, Electroporator, GasDispenser
from twin.errors import PocTwinError
from twin.journal import Journal

__all__ = ["BatchContext", "PhaseInterrupted"]

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
    ) -> None:
        self.clock = clock
        self.journal = journal
        self.equipment = equipment
        self._safe_point = safe_point
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
        """Journal a setpoint (committed), then write it; remember it for a restart."""
        self.journal.append(
            "setpoint",
            equipment,
            {"parameter": parameter, "value": as_record(value), "unit": unit},
        )
        result = await action()
        if restorable:
            self._restore[(equipment, parameter)] = (value, unit, action)
        return result

    async def read(self, equipment: str, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """Take a reading and journal it (made durable with the next setpoint or transition)."""
        value = await action()
        record = as_record(value)
        self.latest[f"{equipment}.{what}"] = value
        self.journal.append("reading", equipment, {"what": what, "values": record}, durable=False)
        return value

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
            await action()
