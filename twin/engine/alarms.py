"""Alarm evaluation: limits with deadband and delay, raised and cleared as journal events.

An alarm is raised when its process value has stayed beyond a limit for the
monitor's delay (a spike shorter than the delay raises nothing), and cleared only
when the value is back inside the limit by the deadband (no chattering). Each
raise hands the monitor's reaction to the batch, which applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twin.journal import Event, Journal
from twin.recipe.monitors import Monitor

__all__ = ["CRITICAL_KINDS", "AlarmState", "Alarms", "is_critical"]

#: Alarms that are critical whatever their reaction: equipment safety or the batch's record.
CRITICAL_KINDS = frozenset(
    {
        "communication",
        "interlock",
        "device",
        "safe_state_failed",
        "control_modules",
        "setpoint_lost",
    }
)


def is_critical(alarm: Event) -> bool:
    """A critical alarm (only a supervisor acknowledges it): it held the whole procedure or
    aborted it, or it is about the equipment or the record rather than a process value."""
    d = alarm.data
    return d.get("reaction") in ("hold", "abort") or d.get("alarm") in CRITICAL_KINDS


ReactionHandler = Callable[[Monitor, str], None]


@dataclass
class AlarmState:
    """Where one monitor is: beyond its limit since when, and whether it is raised."""

    monitor: Monitor
    beyond_since: float | None = None
    raised: bool = False


class Alarms:
    """The active monitors of a batch (recipe-wide plus the current phase's)."""

    def __init__(self, journal: Journal, react: ReactionHandler) -> None:
        self._journal = journal
        self._react = react
        self._states: dict[tuple[str, Monitor], AlarmState] = {}

    def activate(self, scope: str, monitors: Iterable[Monitor]) -> None:
        """Start watching ``monitors`` on behalf of ``scope`` (the recipe, or one phase)."""
        for monitor in monitors:
            self._states.setdefault((scope, monitor), AlarmState(monitor))

    def deactivate(self, scope: str) -> None:
        """Stop watching a scope's monitors; a raised alarm is cleared with the scope's end."""
        for key in [k for k in self._states if k[0] == scope]:
            state = self._states.pop(key)
            if state.raised:
                self._journal.append(
                    "alarm_cleared",
                    state.monitor.equipment,
                    {"alarm": state.monitor.label, "why": f"{scope} ended"},
                )

    @property
    def raised(self) -> list[str]:
        return [s.monitor.label for s in self._states.values() if s.raised]

    def is_raised(self, monitor: Monitor) -> bool:
        """Whether ``monitor`` is watched and its alarm raised now."""
        return any(s.raised for (_, m), s in self._states.items() if m == monitor)

    def evaluate(self, equipment: str, values: dict[str, Any], now: float) -> None:
        """Check every monitor of ``equipment`` against a fresh set of process values."""
        for state in self._states.values():
            monitor = state.monitor
            if monitor.equipment != equipment or monitor.pv not in values:
                continue
            value = float(values[monitor.pv])
            beyond, limit = self._beyond(monitor, value, state.raised)
            if beyond:
                if state.beyond_since is None:
                    state.beyond_since = now
                if not state.raised and now - state.beyond_since >= monitor.delay_min * 60:
                    state.raised = True
                    message = (
                        f"{monitor.label} {value:.4g} beyond {limit} for "
                        f"{(now - state.beyond_since) / 60:.0f} min"
                    )
                    self._journal.append(
                        "alarm",
                        equipment,
                        {
                            "alarm": monitor.label,
                            "kind": "limit",
                            "pv": monitor.pv,
                            "value": round(value, 6),
                            "limit": limit,
                            "reaction": monitor.reaction,
                            "message": message,
                        },
                    )
                    self._react(monitor, message)
            else:
                state.beyond_since = None
                if state.raised:
                    state.raised = False
                    self._journal.append(
                        "alarm_cleared",
                        equipment,
                        {"alarm": monitor.label, "pv": monitor.pv, "value": round(value, 6)},
                    )

    @staticmethod
    def _beyond(monitor: Monitor, value: float, raised: bool) -> tuple[bool, str]:
        """Beyond a limit? Once raised, the value must come back inside by the deadband."""
        band = monitor.deadband if raised else 0.0
        if monitor.high is not None and value > monitor.high - band:
            return True, f"high {monitor.high:g}"
        if monitor.low is not None and value < monitor.low + band:
            return True, f"low {monitor.low:g}"
        return False, ""
