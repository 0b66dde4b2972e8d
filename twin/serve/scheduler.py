"""Runs a fault scenario on the batch clock against a running twin (its plant and servers).

Each fault is applied at its batch time and cleared at its ``until``; plant
faults first bring the plant to that time, so a fault strikes exactly when the
scenario says, not at the next poll. What happened is kept in ``log`` (batch
time, device, fault, "start" or "end") for tests and for ``twin serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twin.clock import Clock
from twin.serve.faults import LinkFaults
from twin.serve.scenario import FaultEntry, Scenario
from twin.sim.faults import SensorFault

__all__ = ["FaultScheduler", "ScheduledEvent", "apply_fault", "clear_fault"]


@dataclass(frozen=True)
class ScheduledEvent:
    """One fault starting or ending."""

    t: float
    device: str
    fault: str
    edge: str  # "start" | "end"


def _link(server: Any, entry: FaultEntry | None = None) -> LinkFaults:
    unit = getattr(entry, "unit", None)
    if unit is not None and entry is not None and entry.fault in ("silent", "corrupt"):
        if not hasattr(server, "unit_link"):
            raise TypeError(f"{type(server).__name__} has no units on a shared line")
        return server.unit_link(unit)  # type: ignore[no-any-return]
    link = getattr(server, "link", None)
    if not isinstance(link, LinkFaults):
        raise TypeError(f"{type(server).__name__} has no LinkFaults to inject into")
    return link


def apply_fault(entry: FaultEntry, plant: Any, server: Any, now: float) -> None:
    """Make one fault true now: on the server's link, or inside the plant."""
    plant.advance_to(now)
    bag = plant.bioreactor
    match entry.fault:
        case "silent":
            _link(server, entry).silent = True
        case "late":
            _link(server).delay_s = entry.delay_s  # type: ignore[union-attr]
        case "corrupt":
            link = _link(server, entry)
            link.corrupt_every, link.corrupt_mode = entry.every, entry.mode  # type: ignore[union-attr]
        case "sensor_stuck":
            fault = SensorFault("stuck", t0=bag.t, value=entry.value)  # type: ignore[union-attr]
            bag.set_sensor_fault(entry.sensor, fault)  # type: ignore[union-attr]
        case "sensor_drift":
            fault = SensorFault("drift", t0=bag.t, rate_per_h=entry.rate_per_h)  # type: ignore[union-attr]
            bag.set_sensor_fault(entry.sensor, fault)  # type: ignore[union-attr]
        case "sensor_failed":
            bag.set_sensor_fault(entry.sensor, SensorFault("failed", t0=bag.t))  # type: ignore[union-attr]
        case "heater_failure":
            bag.heater_failed = True
        case "supply_out":
            plant.gas.mfcs[entry.unit].supply_available = False  # type: ignore[union-attr]
        case "contamination":
            bag.contaminate(entry.cells_per_ml)  # type: ignore[union-attr]
        case "power_loss":
            if hasattr(server, "lose_power"):  # a bioreactor controller
                server.lose_power(now)
            else:  # a gas dispenser: its valves close, its controllers answer nothing
                for mfc in plant.gas.mfcs.values():
                    mfc.setpoint_sccm = 0.0
                _link(server).silent = True


def clear_fault(entry: FaultEntry, plant: Any, server: Any, now: float) -> None:
    """The fault is over (the cable is plugged back, the cylinder replaced...)."""
    plant.advance_to(now)
    bag = plant.bioreactor
    match entry.fault:
        case "silent":
            _link(server, entry).silent = False
        case "late":
            _link(server).delay_s = 0.0
        case "corrupt":
            _link(server, entry).corrupt_every = 0
        case "sensor_stuck" | "sensor_drift" | "sensor_failed":
            bag.set_sensor_fault(entry.sensor, None)  # type: ignore[union-attr]
        case "heater_failure":
            bag.heater_failed = False
        case "supply_out":
            plant.gas.mfcs[entry.unit].supply_available = True  # type: ignore[union-attr]
        case "power_loss":
            if hasattr(server, "power_up"):  # back at its power-up setpoints
                server.power_up(entry.power_up_temperature_c)  # type: ignore[union-attr]
            else:  # the controllers start closed (setpoint 0), as they stopped
                _link(server).silent = False


class FaultScheduler:
    """Applies a scenario's faults on the clock; ``start`` it beside the batch, ``stop`` after."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        plant: Any,
        servers: dict[str, Any],
        clock: Clock,
        on_event: Callable[[ScheduledEvent], None] | None = None,
    ) -> None:
        self.scenario, self.plant, self.servers, self.clock = scenario, plant, servers, clock
        self.on_event = on_event
        self.log: list[ScheduledEvent] = []
        self._task: asyncio.Task[None] | None = None
        missing = {e.device for e in scenario.faults} - set(servers)
        if missing:
            raise ValueError(f"scenario names devices the twin does not serve: {sorted(missing)}")

    def _timeline(self) -> list[tuple[float, int, int, FaultEntry]]:
        # ends before starts at the same instant, then file order: deterministic
        events = []
        for i, entry in enumerate(self.scenario.faults):
            events.append((entry.at, 1, i, entry))
            if entry.until is not None:
                events.append((entry.until, 0, i, entry))
        return sorted(events, key=lambda e: (e[0], e[1], e[2]))

    async def run(self) -> None:
        """Apply every fault at its time; returns after the last one."""
        for t, starts, _, entry in self._timeline():
            await self.clock.sleep_until(t)  # batch time: a fault already due strikes at once
            now = self.clock.now()
            server = self.servers[entry.device]
            (apply_fault if starts else clear_fault)(entry, self.plant, server, now)
            event = ScheduledEvent(now, entry.device, entry.fault, "start" if starts else "end")
            self.log.append(event)
            if self.on_event is not None:
                self.on_event(event)

    def start(self) -> None:
        """Run in the background on the current loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="fault-scenario")

    async def stop(self) -> None:
        """Cancel what has not struck yet."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
