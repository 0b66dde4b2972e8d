"""A batch's state folded from its journal events: what the retained ``state`` topic carries.

The same fold as the live display (state, phase, day, key process values,
alarms, hold reason), kept separate so the control room sees what the operator
at the bench sees without replaying the events itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twin.journal import Event

__all__ = ["KEY_PVS", "BatchState"]

DAY = 86400.0
#: The process values a control room watches, with the reading field they come from.
KEY_PVS = ("temperature_c", "do_pct", "ph", "viable_cells_per_ml", "volume_ml")
_MAX_ALARMS = 20


@dataclass
class BatchState:
    """Everything the dashboard shows for one batch, updated event by event."""

    batch_id: str
    state: str = "Idle"
    phase: str = "-"
    seq: int = 0
    batch_time: float = 0.0
    pv: dict[str, float] = field(default_factory=dict)
    alarms: list[dict[str, Any]] = field(default_factory=list)
    hold_reason: str = ""
    recipe: str = ""
    ended: bool = False

    def apply(self, event: Event) -> bool:
        """Fold one event in; True when something a supervisor cares about changed."""
        self.seq = event.seq
        self.batch_time = event.batch_time
        data = event.data
        if event.kind == "batch_started":
            self.batch_id = data.get("batch_id", self.batch_id)
            recipe = data.get("recipe") or {}
            self.recipe = f"{recipe.get('id', '?')} v{recipe.get('version', '?')}"
            return True
        if event.kind == "transition":
            if event.source.startswith("procedure:"):
                self.state = data.get("to", self.state)
                if self.state == "Holding":
                    self.hold_reason = data.get("why", "")
                elif self.state == "Running":
                    self.hold_reason = ""
                return True
            if event.source.startswith("phase:") and data.get("to") == "Running":
                self.phase = event.source.removeprefix("phase:")
                return True
        elif event.kind == "reading" and data.get("what", "pv") == "pv":
            values = data.get("values", {})
            if "do_pct" in values:
                self.pv = {k: values[k] for k in KEY_PVS if isinstance(values.get(k), int | float)}
        elif event.kind == "alarm":
            text = data.get("message") or ", ".join(f"{k} {v}" for k, v in data.items())
            alarm = {"seq": event.seq, "source": event.source, "message": str(text)}
            self.alarms = [*self.alarms, alarm][-_MAX_ALARMS:]
            return True
        elif event.kind == "batch_ended":
            self.state = data.get("state", self.state)
            self.ended = True
            return True
        return False

    def as_payload(self) -> dict[str, Any]:
        """The ``state`` message body (schema v1, see docs/telemetry.md)."""
        return {
            "batch": self.batch_id,
            "state": self.state,
            "phase": self.phase,
            "seq": self.seq,
            "batch_time": self.batch_time,
            "day": round(self.batch_time / DAY, 3),
            "pv": self.pv,
            "alarms": self.alarms,
            "hold_reason": self.hold_reason,
            "recipe": self.recipe,
            "ended": self.ended,
        }
