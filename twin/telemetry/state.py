"""A batch's state folded from its journal events: what the retained ``state`` topic carries.

The same fold as the live display (state, phase, day, key process values,
alarms, hold reason), kept separate so the control room sees what the operator
at the bench sees without replaying the events itself. ``status`` is the
procedure's state as the batch itself names it (``Batch.status``): a hold or
pause below the procedure, or a scan a phase waits for, made visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twin.journal import Event
from twin.status import status_words

__all__ = ["KEY_PVS", "BatchState"]

DAY = 86400.0
#: The process values a control room watches, with the reading field they come from.
KEY_PVS = ("temperature_c", "do_pct", "ph", "viable_cells_per_ml", "volume_ml")
#: Alarms listed in the message (the latest ones); the counts cover every alarm.
_MAX_ALARMS = 20
#: States of an element below the procedure that a Running procedure shows beside its own.
_SHOWN_BELOW = frozenset(
    {"Holding", "Held", "Restarting", "Pausing", "Paused", "Stopping", "Aborting"}
)
#: Elements below the procedure, from the top: the first one not running is named.
_LEVEL_ORDER = ("unit:", "operation:", "phase:")


def _level(element: str) -> int:
    for index, prefix in enumerate(_LEVEL_ORDER):
        if element.startswith(prefix):
            return index
    return len(_LEVEL_ORDER)


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
    #: Who held the procedure (a user id, ``engine``, ``alarm:...``); shown at the station.
    held_by: str = ""
    #: Why the procedure holds, pauses, stops or aborts (its "-ing" transition's why).
    procedure_why: str = ""
    recipe: str = ""
    ended: bool = False
    #: Elements below the procedure not running as planned: element -> (state, why).
    below: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: A phase waits for the identity scan.
    identity_wanted: bool = False
    #: The material whose container an addition waits to see scanned ("" for none).
    lot_wanted: str = ""
    #: Every alarm the batch raised, and those nobody acknowledged yet (by event seq).
    alarms_raised: int = 0
    unacknowledged: set[int] = field(default_factory=set)

    def below_in_order(self) -> list[tuple[str, tuple[str, str]]]:
        """The elements below the procedure not running as planned, from the top (unit,
        operation, phase): element -> (state, why)."""
        return sorted(self.below.items(), key=lambda item: _level(item[0]))

    @property
    def status(self) -> str:
        """The procedure's state as ``Batch.status`` words it: "Running (unit:x Held)",
        "Paused (phase:... Held)", "Running (waiting for the identity scan)"."""
        if self.ended:
            return self.state
        return status_words(
            self.state,
            ((element, state) for element, (state, _) in self.below_in_order()),
            identity_wanted=self.identity_wanted,
            lot_wanted=self.lot_wanted,
        )

    @property
    def status_reason(self) -> str:
        """Why the batch is not running as planned: why its procedure holds, pauses, stops
        or aborts, else the reason of the hold (or ending) below it that its status names."""
        if self.state != "Running":
            return self.procedure_why
        for element, (_, why) in self.below_in_order():
            if why:
                return f"{element}: {why}"
        return ""

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
            to = str(data.get("to", ""))
            if event.source.startswith("procedure:"):
                self.state = to or self.state
                if self.state == "Holding":
                    self.hold_reason = data.get("why", "")
                    self.held_by = str(data.get("who", ""))
                elif self.state == "Running":
                    self.hold_reason = self.held_by = ""
                if self.state in ("Holding", "Pausing", "Stopping", "Aborting"):
                    self.procedure_why = str(data.get("why", ""))
                elif self.state in ("Running", "Restarting"):
                    self.procedure_why = ""
                return True
            if to in _SHOWN_BELOW:
                kept = self.below.get(event.source, ("", ""))[1]
                why = str(data.get("why", "")) if to in ("Holding", "Stopping", "Aborting") else ""
                self.below[event.source] = (to, why or kept)
            else:
                self.below.pop(event.source, None)
            if event.source.startswith("phase:"):
                if to == "Running":
                    self.phase = event.source.removeprefix("phase:")
                else:  # a scan asked for lapses with its phase's run; asked again if it runs
                    self.identity_wanted, self.lot_wanted = False, ""
            return True
        elif event.kind == "identity_requested":
            self.identity_wanted = True
            return True
        elif event.kind == "identity_confirmation":
            self.identity_wanted = False
            return True
        elif event.kind == "lot_requested":
            self.lot_wanted = str(data.get("material", ""))
            return True
        elif event.kind == "lot_scan":
            if data.get("accepted"):
                self.lot_wanted = ""
                return True
        elif event.kind == "reading" and data.get("what", "pv") == "pv":
            values = data.get("values", {})
            if "do_pct" in values:
                self.pv = {k: values[k] for k in KEY_PVS if isinstance(values.get(k), int | float)}
        elif event.kind == "alarm":
            text = data.get("message") or ", ".join(f"{k} {v}" for k, v in data.items())
            alarm = {"seq": event.seq, "source": event.source, "message": str(text)}
            self.alarms = [*self.alarms, alarm][-_MAX_ALARMS:]
            self.alarms_raised += 1
            self.unacknowledged.add(event.seq)
            return True
        elif event.kind == "alarm_ack":
            seq = data.get("alarm_seq")
            if seq in self.unacknowledged:
                self.unacknowledged.discard(seq)
                return True
        elif event.kind == "batch_ended":
            self.state = data.get("state", self.state)
            self.ended = True
            self.below.clear()
            self.identity_wanted, self.lot_wanted = False, ""
            return True
        return False

    def as_payload(self) -> dict[str, Any]:
        """The ``state`` message body (schema v1, see docs/telemetry.md)."""
        return {
            "batch": self.batch_id,
            "state": self.state,
            "status": self.status,
            "phase": self.phase,
            "seq": self.seq,
            "batch_time": self.batch_time,
            "day": round(self.batch_time / DAY, 3),
            "pv": self.pv,
            "alarms": self.alarms,
            "alarms_raised": self.alarms_raised,
            "alarms_unacknowledged": len(self.unacknowledged),
            "hold_reason": self.hold_reason,
            "status_reason": self.status_reason,
            "recipe": self.recipe,
            "ended": self.ended,
        }
