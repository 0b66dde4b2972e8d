"""One batch's page folded from the events the control site stored, as the station folds a journal.

The station's :class:`~twin.station.board.BatchBoard` already turns a batch's events
into what a person reads (alarms with their acknowledgements, holds, trends,
setpoints and alarm limits); the control site feeds it the stored copy of the same
events, so the supervisor and the operator see one story. Events are folded in
sequence order only: a gap (an event still to be resent) stops the fold there until
it is filled, so the page never shows a journal out of order.

Boards are kept per batch and only the events stored since the last look are read,
so a ten-day batch costs its full read once, then a few rows per refresh.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from twin.control_site.store import Store
from twin.journal import Event
from twin.recipe.monitors import Monitor
from twin.station.board import PHASE_SETPOINTS, TREND_STEP_S, BatchBoard

__all__ = ["Boards", "StoredBoard"]

#: Boards kept in memory (the batches people have open, and a few more).
_CACHED = 64
#: Events read per query while catching up (bounded memory per read).
_CHUNK = 20_000


class StoredBoard(BatchBoard):
    """A BatchBoard that also keeps each setpoint's history and the recipe's alarm limits,
    so a trend draws its process value against its setpoint and between its limits; a
    phase's own monitors over the batch time that phase ran."""

    def __init__(self, batch: str) -> None:
        super().__init__(Path(f"{batch}.sqlite"))  # the name only: no file is read
        self.sp_history: dict[str, list[tuple[float, float | None]]] = {}
        self.limit_lines: dict[str, list[tuple[str, float]]] = {}
        #: A phase's monitors' limits by process value: (label, value, start, end or None).
        self.phase_lines: dict[str, list[tuple[str, float, float, float | None]]] = {}
        self._phase_open: dict[str, list[tuple[str, int]]] = {}

    def apply(self, event: Event) -> None:
        super().apply(event)
        if event.kind == "reading":
            self._volume(event)
        elif event.kind == "batch_started":
            self._recipe_limits()
        elif event.kind == "setpoint" and event.source == "bioreactor":
            value = event.data.get("value")
            if event.data.get("parameter") == "temperature_sp" and isinstance(value, int | float):
                self.sp_history.setdefault("temperature_c", []).append(
                    (event.batch_time, float(value))
                )
        elif event.kind == "transition" and event.source.startswith("phase:"):
            self._phase_setpoints(event)
            self._phase_monitors(event)

    def _volume(self, event: Event) -> None:
        """The bag's volume as a trend too (feeds, perfusion, harvest), one point per step."""
        values = event.data.get("values") or {}
        value = values.get("volume_ml") if isinstance(values, dict) and "do_pct" in values else None
        if not isinstance(value, int | float) or not math.isfinite(value):
            return
        points = self.trends.setdefault("volume_ml", [])
        if not points or event.batch_time - points[-1][0] >= TREND_STEP_S:
            points.append((event.batch_time, float(value)))

    def _recipe_limits(self) -> None:
        """The recipe-wide monitors' limits (the board read them from the recorded recipe)."""
        for monitor in self._limits:
            for pv, label, value in _sides(monitor):
                self.limit_lines.setdefault(pv, []).append((label, value))

    def _phase_monitors(self, event: Event) -> None:
        """A phase's monitors watch from its start to its end (as the engine activates and
        drops them): a span opens when the phase first runs and closes when it ends."""
        path = event.source.removeprefix("phase:")
        to = event.data.get("to")
        if to == "Running" and path not in self._phase_open:
            self._phase_open[path] = []
            for monitor in self._phase_limits.get(path, []):
                for pv, label, value in _sides(monitor):
                    lines = self.phase_lines.setdefault(pv, [])
                    self._phase_open[path].append((pv, len(lines)))
                    lines.append((label, value, event.batch_time, None))
        elif to in ("Complete", "Stopped", "Aborted"):
            for pv, index in self._phase_open.get(path, []):
                label, value, start, _ = self.phase_lines[pv][index]
                self.phase_lines[pv][index] = (label, value, start, event.batch_time)

    def _phase_setpoints(self, event: Event) -> None:
        """A control loop's setpoint is the running phase's parameter: on while it runs."""
        path = event.source.removeprefix("phase:")
        phase = self._phase_params.get(path)
        to = event.data.get("to")
        for pv, param in PHASE_SETPOINTS.items():
            value = getattr(phase, param, None)
            if not isinstance(value, int | float):
                continue
            if to == "Running":
                self.sp_history.setdefault(pv, []).append((event.batch_time, float(value)))
            elif to in ("Complete", "Stopped", "Aborted"):
                self.sp_history.setdefault(pv, []).append((event.batch_time, None))


def _sides(monitor: Monitor) -> list[tuple[str, str, float]]:
    """A bioreactor monitor's limits as (pv, label naming its side, value)."""
    if monitor.equipment != "bioreactor":
        return []
    name = monitor.name or monitor.pv
    return [
        (monitor.pv, name if name.endswith(side) else f"{name} {side}", float(value))
        for side, value in (("low", monitor.low), ("high", monitor.high))
        if value is not None
    ]


class Boards:
    """The boards of the batches people look at, caught up with the store on each look."""

    def __init__(self) -> None:
        self._boards: OrderedDict[tuple[str, str], StoredBoard] = OrderedDict()
        self._lock = threading.Lock()

    def board(self, store: Store, site: str, batch: str) -> StoredBoard:
        """The batch's board with every stored event up to the first gap folded in."""
        with self._lock:  # one fold at a time: page views run in threads
            key = (site, batch)
            board = self._boards.get(key)
            if board is None:
                board = self._boards[key] = StoredBoard(batch)
            self._boards.move_to_end(key)
            while len(self._boards) > _CACHED:
                self._boards.popitem(last=False)
            while _catch_up(store, site, batch, board) == _CHUNK:
                pass
            return board


def _catch_up(store: Store, site: str, batch: str, board: StoredBoard) -> int:
    rows = store.query(
        "SELECT seq, batch_time, wall_time, kind, source, data, prev_hash, hash FROM events "
        "WHERE site=? AND batch=? AND seq>? ORDER BY seq LIMIT ?",
        (site, batch, board.last_seq, _CHUNK),
    )
    for seq, bt, wt, kind, source, data, prev, digest in rows:
        if int(seq) != board.last_seq + 1:
            return 0  # a gap: wait for the site to resend it
        body: Any = json.loads(data)
        board.apply(Event(int(seq), float(bt), wt, kind, source, body, prev, digest))
    return len(rows)
