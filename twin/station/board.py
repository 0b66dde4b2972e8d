"""What the operator station shows of one batch, folded from its journal as it grows.

The station reads the journal a batch writes (read-only, from the last event it
has seen), never the batch's memory: what an operator sees is what the record
will hold. Trends keep one point per ``TREND_STEP_S`` of batch time, so a
ten-day batch costs a few thousand points per process value, not 14,400.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from twin.engine.alarms import is_critical
from twin.ensemble.forecast import read_saved
from twin.journal import Event, read_events
from twin.recipe.monitors import Monitor
from twin.report.record import (
    HOLD_STATES,
    SETPOINT_OF,
    recipe_phases,
    recorded_recipe,
    unit_of,
)
from twin.status import status_words
from twin.telemetry.state import KEY_PVS, BatchState

__all__ = ["TREND_STEP_S", "Alarm", "BatchBoard", "Limit"]

#: One trend point per this much batch time (and every point while the batch waits).
TREND_STEP_S = 600.0
#: Process values with a trend on the batch page.
TREND_PVS = ("temperature_c", "do_pct", "ph", "viable_cells_per_ml")
#: Phase parameters that are a control loop's setpoint, by the process value they set.
PHASE_SETPOINTS = {"do_pct": "do_setpoint_pct", "ph": "ph_setpoint"}
#: Lower elements' states shown beside a Running procedure.
WAITING_BELOW = frozenset({"Holding", "Held", "Restarting", "Pausing", "Paused"})


@dataclass
class Alarm:
    """An alarm as the alarm list shows it, with its acknowledgement once given."""

    seq: int
    batch_time: float
    source: str
    name: str
    message: str
    critical: bool
    cleared: bool = False
    acknowledged_by: str = ""
    comment: str = ""
    #: Wall time (ISO 8601, UTC) the acknowledgement was journalled.
    acknowledged_at: str = ""


@dataclass
class Limit:
    """A monitor's alarm limits on a process value (recipe-wide or the running phase's)."""

    label: str
    low: float | None
    high: float | None


@dataclass
class BatchBoard:
    """One batch's live view: state, phase, day, process values, trends, alarms, signatures."""

    path: Path
    view: BatchState = field(init=False)
    last_seq: int = 0
    last_wall: datetime | None = None
    started: dict[str, Any] = field(default_factory=dict)
    setpoints: dict[str, float] = field(default_factory=dict)
    trends: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    alarms: dict[int, Alarm] = field(default_factory=dict)
    below: dict[str, str] = field(default_factory=dict)
    scan_wanted: bool = False
    #: The material whose container an addition waits to see scanned ("" for none).
    lot_wanted: str = ""
    #: Every lot scan, accepted or refused (material, lot, expiry, operator, why refused).
    lot_scans: list[dict[str, Any]] = field(default_factory=list)
    signatures: list[dict[str, Any]] = field(default_factory=list)
    qc: list[dict[str, Any]] = field(default_factory=list)
    holds: list[tuple[float, float | None]] = field(default_factory=list)
    #: The batch's latest forecast (``poc-twin forecast``), None until one is made.
    forecast: dict[str, Any] | None = None
    #: Samples the batch has journalled (a forecast is due after each).
    samples: int = 0
    _limits: list[Monitor] = field(default_factory=list)
    _phase_limits: dict[str, list[Monitor]] = field(default_factory=dict)
    _phase_params: dict[str, Any] = field(default_factory=dict)
    _last_point: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.view = BatchState(self.path.stem)

    @property
    def name(self) -> str:
        return self.path.stem

    def refresh(self) -> int:
        """Fold in what the journal gained since the last refresh; how many events."""
        count = 0
        for event in read_events(self.path, after=self.last_seq):
            self.apply(event)
            count += 1
        self.forecast = read_saved(self.path)
        return count

    def apply(self, event: Event) -> None:
        """Fold one event in."""
        self.view.apply(event)
        self.last_seq = event.seq
        self.last_wall = _wall(event.wall_time) or self.last_wall
        handler = _HANDLERS.get(event.kind)
        if handler is not None:
            handler(self, event)

    # -- what the page asks -------------------------------------------------------------

    @property
    def state(self) -> str:
        return self.view.state

    @property
    def shown_state(self) -> str:
        """The procedure's state, with a lower element's hold or pause or a scan awaited."""
        return status_words(  # as the batch words it
            self.view.state,
            self.below.items(),
            identity_wanted=self.scan_wanted,
            lot_wanted=self.lot_wanted,
        )

    @property
    def day(self) -> float:
        return self.view.batch_time / 86400.0

    @property
    def ended(self) -> bool:
        return self.view.ended

    @property
    def unacknowledged(self) -> list[Alarm]:
        return [a for a in self.alarms.values() if not a.acknowledged_by]

    def setpoint(self, pv: str) -> float | None:
        """The setpoint in force for a bioreactor process value, if it has one."""
        param = PHASE_SETPOINTS.get(pv)
        if param is not None:
            phase = self._phase_params.get(self.view.phase)
            value = getattr(phase, param, None)
            return float(value) if isinstance(value, int | float) else None
        name = SETPOINT_OF.get(pv)
        return self.setpoints.get(f"bioreactor.{name}") if name else None

    def limits(self, pv: str) -> Limit | None:
        """The tightest alarm limits on ``pv`` now: recipe-wide and the running phase's."""
        monitors = [*self._limits, *self._phase_limits.get(self.view.phase, [])]
        lows = [m.low for m in monitors if m.pv == pv and m.low is not None]
        highs = [m.high for m in monitors if m.pv == pv and m.high is not None]
        if not lows and not highs:
            return None
        labels = ", ".join(sorted({m.label for m in monitors if m.pv == pv}))
        return Limit(labels, max(lows) if lows else None, min(highs) if highs else None)

    def process_values(self) -> list[tuple[str, float | None, str, float | None, Limit | None]]:
        """(pv, value, unit, setpoint, limits) for the table of process values."""
        return [
            (
                pv,
                self.view.pv.get(pv),
                unit_of(f"bioreactor.{pv}"),
                self.setpoint(pv),
                self.limits(pv),
            )
            for pv in KEY_PVS
        ]

    # -- folding ------------------------------------------------------------------------

    def _started(self, event: Event) -> None:
        self.started = event.data
        model = recorded_recipe(event.data)
        if model is None:
            return
        self._limits = list(model.monitors)
        phases = recipe_phases(model)
        self._phase_params = phases
        self._phase_limits = {
            path: list(getattr(phase, "monitors", None) or []) for path, phase in phases.items()
        }

    def _transition(self, event: Event) -> None:
        to = str(event.data.get("to", ""))
        if event.source.startswith("procedure:"):
            if to in HOLD_STATES and (not self.holds or self.holds[-1][1] is not None):
                self.holds.append((event.batch_time, None))
            elif to not in HOLD_STATES and self.holds and self.holds[-1][1] is None:
                self.holds[-1] = (self.holds[-1][0], event.batch_time)
            return
        if to in WAITING_BELOW:
            self.below[event.source] = to
        else:
            self.below.pop(event.source, None)
        if event.source.startswith("phase:") and to != "Running":
            # A scan asked for lapses with its phase's run; the phase asks again if it runs.
            self.scan_wanted, self.lot_wanted = False, ""

    def _reading(self, event: Event) -> None:
        if event.data.get("what", "pv") != "pv":
            return
        values = event.data.get("values") or {}
        if "do_pct" not in values:
            return
        waiting = (
            self.view.state != "Running"
            or bool(self.below)
            or self.scan_wanted
            or bool(self.lot_wanted)
        )
        for pv in TREND_PVS:
            value = values.get(pv)
            if not isinstance(value, int | float) or not math.isfinite(value):
                continue
            last = self._last_point.get(pv, -math.inf)
            if waiting or event.batch_time - last >= TREND_STEP_S:
                self.trends.setdefault(pv, []).append((event.batch_time, float(value)))
                self._last_point[pv] = event.batch_time

    def _setpoint(self, event: Event) -> None:
        value = event.data.get("value")
        if isinstance(value, int | float):
            self.setpoints[f"{event.source}.{event.data.get('parameter')}"] = float(value)

    def _alarm(self, event: Event) -> None:
        data = event.data
        text = data.get("message") or ", ".join(f"{k} {v}" for k, v in data.items())
        self.alarms[event.seq] = Alarm(
            event.seq,
            event.batch_time,
            event.source,
            str(data.get("alarm", "")),
            str(text),
            is_critical(event),
        )

    def _alarm_cleared(self, event: Event) -> None:
        name = event.data.get("alarm")
        for alarm in self.alarms.values():
            if alarm.source == event.source and alarm.name == name:
                alarm.cleared = True

    def _alarm_ack(self, event: Event) -> None:
        alarm = self.alarms.get(event.data.get("alarm_seq", -1))
        if alarm is not None:
            alarm.acknowledged_by = str(event.data.get("user", ""))
            alarm.comment = str(event.data.get("comment", ""))
            alarm.acknowledged_at = event.wall_time

    def _identity(self, event: Event) -> None:
        self.scan_wanted = event.kind == "identity_requested"

    def _lot(self, event: Event) -> None:
        if event.kind == "lot_requested":
            self.lot_wanted = str(event.data.get("material", ""))
            return
        self.lot_scans.append(event.data)
        if event.data.get("accepted"):
            self.lot_wanted = ""

    def _record_signature(self, event: Event) -> None:
        self.signatures.append(event.data)

    def _sample(self, event: Event) -> None:
        self.samples += 1

    def _qc(self, event: Event) -> None:
        self.qc.append(event.data)


_HANDLERS = {
    "batch_started": BatchBoard._started,
    "sample": BatchBoard._sample,
    "transition": BatchBoard._transition,
    "reading": BatchBoard._reading,
    "setpoint": BatchBoard._setpoint,
    "alarm": BatchBoard._alarm,
    "alarm_cleared": BatchBoard._alarm_cleared,
    "alarm_ack": BatchBoard._alarm_ack,
    "identity_requested": BatchBoard._identity,
    "identity_confirmation": BatchBoard._identity,
    "lot_requested": BatchBoard._lot,
    "lot_scan": BatchBoard._lot,
    "record_signature": BatchBoard._record_signature,
    "qc_result": BatchBoard._qc,
}


def _wall(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
