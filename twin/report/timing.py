"""How long a recipe plans its batch to take, and the timing anomalies a reviewer must see.

The plan is read from the recipe the batch recorded at its start (no second estimate:
the control site's dashboard flags a late batch from the same :func:`planned_hours`).
It is the longest the recipe allows: each culture's ``duration_h`` (its maximum when a
target may end it early), each wait's duration or timeout, each temperature step's
timeout and each media exchange at its rate; the other phases are steps of minutes.
Phases that wait for a person (an identity scan, a container scan) have no bound: time
spent there counts as late, and a wait on a person longer than :data:`LONG_WAIT_H` is an
anomaly of its own, as is a hold or pause that long at any level.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LONG_WAIT_H",
    "OVERRUN_SHARE",
    "anomalies",
    "overrun",
    "person_wait",
    "phase_plan_h",
    "planned_hours",
]

HOUR = 3600.0
#: A wait on a person (hold, pause, a scan nobody makes) longer than this is an anomaly;
#: so is a ``wait`` phase this long, planned or not (the batch idles for days).
LONG_WAIT_H = 24.0
#: A phase or the batch may overrun its plan by this share (and an hour) before it is one.
OVERRUN_SHARE = 0.10


def person_wait(ph: Any) -> str | None:
    """What a phase waits for a person to do (None: it does not wait on a person)."""
    if ph.phase == "confirm_identity":
        return "the identity scan"
    if ph.phase == "add" and getattr(ph, "scan_lot", False):
        return f"the scan of the {ph.material} container"
    return None


def phase_plan_h(ph: Any) -> float | None:
    """The longest a phase plans to take, in hours: 0 for a step of minutes, None for a
    phase that waits on a person (no bound a recipe can give)."""
    kind = ph.phase
    if person_wait(ph) is not None:
        return None
    if kind == "culture":
        return float(ph.duration_h)
    if kind == "wait":
        return float(ph.duration_h if ph.duration_h is not None else ph.timeout_h)
    if kind == "set_temperature":
        return float(ph.timeout_min) / 60.0
    if kind == "media_exchange":
        return float(ph.volume_ml) / float(ph.rate_ml_per_h)
    return 0.0


def planned_hours(model: Any) -> float | None:
    """The longest batch time the recipe's bounded phases add up to, in hours."""
    total = 0.0
    for unit in model.procedure:
        for op in unit.operations:
            for ph in op.phases:
                total += phase_plan_h(ph) or 0.0
    return total or None


def overrun(batch_time_s: float, planned_h: float | None) -> bool:
    """Whether a batch time runs past the plan by more than the share and the hour allowed
    (the same allowance a phase gets)."""
    if planned_h is None:
        return False
    return batch_time_s / HOUR > planned_h * (1.0 + OVERRUN_SHARE) + 1.0


def anomalies(
    holds: list[tuple[float, float | None]],
    pauses: list[tuple[float, float | None]],
    elements: list[dict[str, Any]],
    phases: dict[str, Any],
    end_time: float,
    planned_h: float | None,
) -> list[str]:
    """Every timing anomaly a reviewer must judge.

    ``holds``/``pauses``: the procedure's; ``elements``: the record's units, operations and
    phases (``kind``, ``path``, ``start``, ``end`` and their own ``holds``); ``phases``: the
    recipe's phase parameters by path; ``planned_h``: the recipe's planned length."""
    found: list[str] = []
    for what, spans in (("hold", holds), ("pause", pauses)):
        found += _long_waits(f"a {what}", spans, end_time)
    for element in elements:
        label = f"a hold of {element['kind']} {_label(element)}"
        found += _long_waits(label, element.get("holds", ()), end_time)
        if element["kind"] == "phase":
            sentence = _phase_anomaly(element, phases.get(str(element["path"])), end_time)
            if sentence:
                found.append(sentence)
    if planned_h is not None and overrun(end_time, planned_h):
        found.append(
            f"the batch ran {_duration(end_time / HOUR)}, past the {_duration(planned_h)} "
            "the recipe plans at most"
        )
    return found


def _long_waits(what: str, spans: Any, end_time: float) -> list[str]:
    found = []
    for start, end in spans:
        length_h = ((end if end is not None else end_time) - start) / HOUR
        if length_h > LONG_WAIT_H:
            found.append(
                f"{what} of {_duration(length_h)} from batch time {start / HOUR:.1f} h "
                f"(longer than {LONG_WAIT_H:g} h)"
            )
    return found


def _phase_anomaly(element: dict[str, Any], ph: Any, end_time: float) -> str | None:
    """A phase that waited on a person too long, ran far past its plan (holds included: a
    culture held a week is no culture of a day), or idled in a wait longer than a day."""
    start, end = element.get("start"), element.get("end")
    if ph is None or start is None:
        return None
    took_h = ((end if end is not None else end_time) - start) / HOUR
    label = _label(element)
    waits_for = person_wait(ph)
    if waits_for is not None:
        if took_h <= LONG_WAIT_H:
            return None
        return (
            f"phase {label} waited {_duration(took_h)} for a person ({waits_for}) from batch "
            f"time {start / HOUR:.1f} h (longer than {LONG_WAIT_H:g} h)"
        )
    planned = phase_plan_h(ph) or 0.0
    if took_h > planned * (1.0 + OVERRUN_SHARE) + 1.0:
        if planned:
            return f"phase {label} took {_duration(took_h)} of {_duration(planned)} planned"
        return f"phase {label} took {_duration(took_h)}, a step the recipe plans in minutes"
    if ph.phase == "wait" and took_h > LONG_WAIT_H:
        return (
            f"phase {label} idled the batch {_duration(took_h)} in a wait (planned, but "
            f"longer than {LONG_WAIT_H:g} h)"
        )
    return None


def _label(element: dict[str, Any]) -> str:
    return str(element.get("path", "")).split("/")[-1].split(":")[-1]


def _duration(hours: float) -> str:
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"
